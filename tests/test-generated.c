/* test-generated.c - every kind of payload, made in the test with real gpg (a temporary GNUPGHOME) and openssl (a
 * temporary CA), wrapped in messages of each transfer encoding (7bit, quoted-printable, base64), with LF and CRLF line
 * ends, in text/plain and text/html, with legacy types, without smime-type, and nested three deep.
 *
 * The ids detection reports are compared with what gpg and openssl themselves list for the keys and certificates. */
#include "config.h"

#include <string.h>

#include "detect.h"
#include "mg-gmime.h"
#include "testutil.h"

typedef struct {
  MgGpg *gpg;
  MgCa *ca;
  char *alice_sub; /* encryption subkey ids, as gpg lists them */
  char *bob_sub;
  char *alice_fpr;
  char *carol_serial;     /* as openssl lists it */
  GBytes *pgp_armored;    /* encrypted to alice and bob */
  GBytes *pgp_binary;     /* encrypted to alice */
  GBytes *pgp_clearsign;  /* by alice */
  GBytes *pgp_detached;   /* armored detached signature by alice */
  GBytes *pgp_key;        /* alice's armored public key */
  GBytes *cms_enveloped;  /* DER, to carol, AES-256-CBC */
  GBytes *cms_auth;       /* DER, to carol, AES-256-GCM */
  GBytes *cms_signed;     /* DER, opaque, by carol */
  GBytes *cms_detached;   /* DER, detached, by carol */
  GBytes *cms_compressed; /* DER, zlib */
} Fixture;

static Fixture fx;

static const char signed_text[] = "Hello Bob,\nthis is signed.\n";

static GBytes *
take (char *data, gsize len)
{
  g_assert_nonnull (data);
  return g_bytes_new_take (data, len);
}

static gsize
last_len (const char *s)
{
  return strlen (s);
}

/* der_len - DER length octets */
static void
der_len (GByteArray *out, gsize n)
{
  guint8 b[5];

  if (n < 128) {
    b[0] = (guint8) n;
    g_byte_array_append (out, b, 1);
  } else if (n < 256) {
    b[0] = 0x81;
    b[1] = (guint8) n;
    g_byte_array_append (out, b, 2);
  } else {
    b[0] = 0x82;
    b[1] = (guint8) (n >> 8);
    b[2] = (guint8) n;
    g_byte_array_append (out, b, 3);
  }
}

static GByteArray *
der (guint8 tag, const guint8 *content, gsize len)
{
  GByteArray *out = g_byte_array_new ();

  g_byte_array_append (out, &tag, 1);
  der_len (out, len);
  g_byte_array_append (out, content, (guint) len);
  return out;
}

static GByteArray *
der_cat (guint8 tag, GByteArray *a, GByteArray *b, GByteArray *c)
{
  g_autoptr (GByteArray) body = g_byte_array_new ();
  GByteArray *parts[] = { a, b, c };

  for (int i = 0; i < 3; i++)
    if (parts[i]) {
      g_byte_array_append (body, parts[i]->data, parts[i]->len);
      g_byte_array_unref (parts[i]);
    }
  return der (tag, body->data, body->len);
}

/* compressed_data - RFC 3274 CompressedData around zlib-compressed @text, built by hand (OpenSSL here lacks zlib) */
static GBytes *
compressed_data (const char *text)
{
  static const guint8 oid_compressed[] = { 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x10, 0x01, 0x09 };
  static const guint8 oid_zlib[] = { 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x10, 0x03, 0x08 };
  static const guint8 oid_data[] = { 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01 };
  static const guint8 zero = 0;
  g_autoptr (GZlibCompressor) z = g_zlib_compressor_new (G_ZLIB_COMPRESSOR_FORMAT_ZLIB, 9);
  guint8 zbuf[512];
  gsize rd, wr;
  GByteArray *ci;

  g_assert_cmpint (g_converter_convert (G_CONVERTER (z), text, strlen (text), zbuf, sizeof zbuf,
                                        G_CONVERTER_INPUT_AT_END, &rd, &wr, NULL),
                   ==, G_CONVERTER_FINISHED);
  /* ContentInfo { compressedData, [0] { CompressedData { 0, { zlib }, { data, [0] { OCTET STRING } } } } } */
  ci = der_cat (
    0x30, der (0x06, oid_compressed, sizeof oid_compressed),
    der_cat (0xa0,
             der_cat (0x30, der (0x02, &zero, 1), der_cat (0x30, der (0x06, oid_zlib, sizeof oid_zlib), NULL, NULL),
                      der_cat (0x30, der (0x06, oid_data, sizeof oid_data),
                               der_cat (0xa0, der (0x04, zbuf, wr), NULL, NULL), NULL)),
             NULL, NULL),
    NULL);
  return g_byte_array_free_to_bytes (ci);
}

static void
setup_keys (void)
{
  g_autofree char *carol_pem = NULL, *carol_key = NULL;
  gsize n = 0;
  char *out;

  fx.gpg = mg_gpg_new ();
  g_assert_true (mg_gpg_add_key (fx.gpg, "alice@example.org", "ed25519"));
  g_assert_true (mg_gpg_add_key (fx.gpg, "bob@example.org", "rsa2048"));
  {
    g_autofree char *a = mg_gpg_encryption_keyid (fx.gpg, "alice@example.org");
    g_autofree char *b = mg_gpg_encryption_keyid (fx.gpg, "bob@example.org");
    g_autofree char *f = mg_gpg_fingerprint (fx.gpg, "alice@example.org");
    g_assert_nonnull (a);
    g_assert_nonnull (b);
    g_assert_nonnull (f);
    fx.alice_sub = g_strdup_printf ("0x%s", a);
    fx.bob_sub = g_strdup_printf ("0x%s", b);
    fx.alice_fpr = g_strdup_printf ("0x%s", f);
  }

  out = mg_gpg (fx.gpg, signed_text, strlen (signed_text), "-a", "-e", "-r", "<alice@example.org>", "-r",
                "<bob@example.org>", NULL);
  fx.pgp_armored = take (out, last_len (out));
  {
    g_auto (GStrv) env = mg_test_env ("GNUPGHOME", fx.gpg->home, NULL);
    const char *argv[] = { "gpg", "--batch", "--trust-model", "always", "-e", "-r", "<alice@example.org>", NULL };
    MgRun run;
    g_assert_true (mg_test_run (&run, argv, (const char *const *) env, signed_text, strlen (signed_text)));
    g_assert_cmpint (run.status, ==, 0);
    fx.pgp_binary = g_bytes_new (run.out, run.out_len);
    mg_run_clear (&run);
  }
  out = mg_gpg (fx.gpg, signed_text, strlen (signed_text), "--clearsign", "-u", "<alice@example.org>", NULL);
  fx.pgp_clearsign = take (out, last_len (out));
  out = mg_gpg (fx.gpg, signed_text, strlen (signed_text), "-a", "--detach-sign", "-u", "<alice@example.org>", NULL);
  fx.pgp_detached = take (out, last_len (out));
  out = mg_gpg (fx.gpg, NULL, 0, "-a", "--export", "<alice@example.org>", NULL);
  fx.pgp_key = take (out, last_len (out));

  fx.ca = mg_ca_new ();
  g_assert_true (mg_ca_add_leaf (fx.ca, "carol", "carol@example.net"));
  {
    g_autofree char *serial = mg_ca_serial (fx.ca, "carol");
    g_assert_nonnull (serial);
    fx.carol_serial = g_strdup_printf ("serial=%s", serial);
  }
  carol_pem = mg_ca_path (fx.ca, "carol", ".pem");
  carol_key = mg_ca_path (fx.ca, "carol", ".key");
  out = mg_ca_openssl (fx.ca, signed_text, strlen (signed_text), &n, "cms", "-encrypt", "-aes256", "-outform", "DER",
                       carol_pem, NULL);
  fx.cms_enveloped = take (out, n);
  out = mg_ca_openssl (fx.ca, signed_text, strlen (signed_text), &n, "cms", "-encrypt", "-aes-256-gcm", "-outform",
                       "DER", carol_pem, NULL);
  fx.cms_auth = take (out, n);
  out = mg_ca_openssl (fx.ca, signed_text, strlen (signed_text), &n, "cms", "-sign", "-nodetach", "-outform", "DER",
                       "-signer", carol_pem, "-inkey", carol_key, "-md", "sha256", NULL);
  fx.cms_signed = take (out, n);
  out = mg_ca_openssl (fx.ca, signed_text, strlen (signed_text), &n, "cms", "-sign", "-outform", "DER", "-signer",
                       carol_pem, "-inkey", carol_key, "-md", "sha512", NULL);
  fx.cms_detached = take (out, n);
  fx.cms_compressed = compressed_data (signed_text);
}

/* ---- building messages with GMime ---- */

static GMimeObject *
leaf (const char *type, GBytes *content, GMimeContentEncoding enc, const char *filename)
{
  g_autoptr (GMimeContentType) ct = g_mime_content_type_parse (NULL, type);
  GMimePart *part =
    g_mime_part_new_with_type (g_mime_content_type_get_media_type (ct), g_mime_content_type_get_media_subtype (ct));
  g_autoptr (GMimeStream) s = g_mime_stream_mem_new ();
  g_autoptr (GMimeDataWrapper) w = g_mime_data_wrapper_new_with_stream (s, GMIME_CONTENT_ENCODING_DEFAULT);
  const GMimeParamList *params = g_mime_content_type_get_parameters (ct);

  for (int i = 0; i < g_mime_param_list_length ((GMimeParamList *) params); i++) {
    GMimeParam *p = g_mime_param_list_get_parameter_at ((GMimeParamList *) params, i);
    g_mime_object_set_content_type_parameter (GMIME_OBJECT (part), g_mime_param_get_name (p),
                                              g_mime_param_get_value (p));
  }
  if (g_bytes_get_size (content) > 0)
    g_mime_stream_write (s, g_bytes_get_data (content, NULL), g_bytes_get_size (content));
  g_mime_stream_reset (s);
  g_mime_part_set_content (part, w);
  g_mime_part_set_content_encoding (part, enc);
  if (filename)
    g_mime_part_set_filename (part, filename);
  return GMIME_OBJECT (part);
}

static GMimeObject *
text_leaf (const char *type, const char *text, GMimeContentEncoding enc)
{
  g_autoptr (GBytes) b = g_bytes_new (text, strlen (text));

  return leaf (type, b, enc, NULL);
}

static GMimeObject *
multipart (const char *subtype, const char *protocol, GMimeObject *a, GMimeObject *b, GMimeObject *c)
{
  GMimeMultipart *mp = g_mime_multipart_new_with_subtype (subtype);
  GMimeObject *parts[] = { a, b, c };

  if (protocol)
    g_mime_object_set_content_type_parameter (GMIME_OBJECT (mp), "protocol", protocol);
  for (int i = 0; i < 3; i++)
    if (parts[i]) {
      g_mime_multipart_add (mp, parts[i]);
      g_object_unref (parts[i]);
    }
  return GMIME_OBJECT (mp);
}

/* message - @body (taken) as a whole message, LF or CRLF line ends */
static GBytes *
message (GMimeObject *body, gboolean crlf)
{
  g_autoptr (GMimeMessage) m = g_mime_message_new (TRUE);
  g_autoptr (GMimeStream) s = g_mime_stream_mem_new ();
  GMimeFormatOptions *fo = g_mime_format_options_new ();
  GByteArray *ba;

  g_mime_message_add_mailbox (m, GMIME_ADDRESS_TYPE_FROM, "Alice", "alice@example.org");
  g_mime_message_add_mailbox (m, GMIME_ADDRESS_TYPE_TO, "Bob", "bob@example.org");
  g_mime_message_set_subject (m, "generated", NULL);
  g_mime_message_set_mime_part (m, body);
  g_object_unref (body);
  g_mime_format_options_set_newline_format (fo, crlf ? GMIME_NEWLINE_FORMAT_DOS : GMIME_NEWLINE_FORMAT_UNIX);
  g_mime_object_write_to_stream (GMIME_OBJECT (m), fo, s);
  g_mime_format_options_free (fo);
  ba = g_mime_stream_mem_get_byte_array (GMIME_STREAM_MEM (s));
  return g_bytes_new (ba->data, ba->len);
}

static GMimeObject *
forwarded (GMimeObject *inner_body)
{
  g_autoptr (GMimeMessage) inner = g_mime_message_new (TRUE);
  GMimeMessagePart *mp = g_mime_message_part_new_with_message ("rfc822", inner);

  g_mime_message_set_subject (inner, "inner", NULL);
  g_mime_message_set_mime_part (inner, inner_body);
  g_object_unref (inner_body);
  return GMIME_OBJECT (mp);
}

/* ---- checks ---- */

static MgReport *
detect (GBytes *msg)
{
  MgLimits limits;

  mg_limits_init_default (&limits);
  return mg_detect_data (g_bytes_get_data (msg, NULL), g_bytes_get_size (msg), &limits);
}

static gboolean
lists (const MgReport *r, gboolean signers, const char *id)
{
  for (guint i = 0; i < r->parts->len; i++) {
    const MgPart *p = g_ptr_array_index (r->parts, i);
    const GPtrArray *ids = signers ? p->info.signers : p->info.recipients;
    for (guint k = 0; k < ids->len; k++) {
      const char *have = ((MgCryptoId *) g_ptr_array_index (ids, k))->id;
      gsize hl = strlen (have), il = strlen (id);
      if (hl >= il && g_ascii_strcasecmp (have + hl - il, id) == 0)
        return TRUE;
    }
  }
  return FALSE;
}

static void
assert_report (MgReport *r, MgKind kind, guint kinds)
{
  if (r->kind != kind || r->kinds != kinds) {
    for (guint i = 0; i < r->parts->len; i++) {
      const MgPart *p = g_ptr_array_index (r->parts, i);
      g_test_message ("part %s %s %s %s", p->path, p->content_type, mg_kind_name (p->kind), p->error ? p->error : "");
    }
  }
  g_assert_cmpstr (mg_kind_name (r->kind), ==, mg_kind_name (kind));
  g_assert_cmphex (r->kinds, ==, kinds);
  g_assert_null (r->error);
  g_assert_cmpuint (r->warnings->len, ==, 0);
}

#define B(k) MG_KIND_BIT (MG_KIND_##k)

static const GMimeContentEncoding encodings[] = { GMIME_CONTENT_ENCODING_7BIT, GMIME_CONTENT_ENCODING_QUOTEDPRINTABLE,
                                                  GMIME_CONTENT_ENCODING_BASE64 };

static void
test_inline_encrypted (void)
{
  for (gsize e = 0; e < G_N_ELEMENTS (encodings); e++)
    for (int crlf = 0; crlf < 2; crlf++) {
      g_autofree char *text =
        g_strdup_printf ("Some words before.\n\n%.*s\nAnd after.\n", (int) g_bytes_get_size (fx.pgp_armored),
                         (const char *) g_bytes_get_data (fx.pgp_armored, NULL));
      g_autoptr (GBytes) msg = message (text_leaf ("text/plain; charset=utf-8", text, encodings[e]), crlf);
      g_autoptr (MgReport) r = detect (msg);
      g_test_message ("encoding %s, %s", g_mime_content_encoding_to_string (encodings[e]), crlf ? "CRLF" : "LF");
      assert_report (r, MG_KIND_PGP_INLINE_ENCRYPTED, B (PGP_INLINE_ENCRYPTED));
      g_assert_true (lists (r, FALSE, fx.alice_sub));
      g_assert_true (lists (r, FALSE, fx.bob_sub));
      g_assert_cmpstr (((MgPart *) g_ptr_array_index (r->parts, 0))->info.integrity, !=, "none");
    }
}

static void
test_inline_html (void)
{
  g_autoptr (GString) html = g_string_new ("<html><body><p>Encrypted:</p><div>");
  g_auto (GStrv) lines = g_strsplit (g_bytes_get_data (fx.pgp_armored, NULL), "\n", -1);

  for (guint i = 0; lines[i]; i++)
    g_string_append_printf (html, "%s<br>\n", lines[i]);
  g_string_append (html, "</div></body></html>\n");
  for (gsize e = 1; e < G_N_ELEMENTS (encodings); e++) {
    GMimeObject *alt = multipart ("alternative", NULL, text_leaf ("text/plain", "see the HTML part\n", encodings[e]),
                                  text_leaf ("text/html; charset=utf-8", html->str, encodings[e]), NULL);
    g_autoptr (GBytes) msg = message (alt, e == 2);
    g_autoptr (MgReport) r = detect (msg);
    const MgPart *h = g_ptr_array_index (r->parts, 2);
    assert_report (r, MG_KIND_PGP_INLINE_ENCRYPTED, B (PLAIN) | B (PGP_INLINE_ENCRYPTED));
    g_assert_cmpstr (h->content_type, ==, "text/html");
    g_assert_cmpint (h->kind, ==, MG_KIND_PGP_INLINE_ENCRYPTED);
    g_assert_true (lists (r, FALSE, fx.bob_sub));
  }
}

static void
test_inline_signed_and_key (void)
{
  for (gsize e = 0; e < G_N_ELEMENTS (encodings); e++) {
    g_autoptr (GBytes) s = message (leaf ("text/plain", fx.pgp_clearsign, encodings[e], NULL), e == 1);
    g_autoptr (GBytes) k = message (leaf ("text/plain", fx.pgp_key, encodings[e], NULL), e != 1);
    g_autoptr (MgReport) rs = detect (s);
    g_autoptr (MgReport) rk = detect (k);
    const MgPart *kp = g_ptr_array_index (rk->parts, 0);
    assert_report (rs, MG_KIND_PGP_INLINE_SIGNED, B (PGP_INLINE_SIGNED));
    g_assert_true (lists (rs, TRUE, fx.alice_fpr));
    assert_report (rk, MG_KIND_PGP_INLINE_KEY, B (PGP_INLINE_KEY));
    g_assert_cmpuint (kp->info.keys->len, ==, 1);
    g_assert_cmpstr (((MgCryptoId *) g_ptr_array_index (kp->info.keys, 0))->id, ==, fx.alice_fpr);
    g_assert_cmpstr (((MgCryptoId *) g_ptr_array_index (kp->info.keys, 0))->name, ==, "Test <alice@example.org>");
  }
}

static void
test_pgp_mime (void)
{
  g_autoptr (GBytes) version = g_bytes_new_static ("Version: 1\n", 11);
  for (int crlf = 0; crlf < 2; crlf++) {
    GMimeObject *enc =
      multipart ("encrypted", "application/pgp-encrypted",
                 leaf ("application/pgp-encrypted", version, GMIME_CONTENT_ENCODING_7BIT, NULL),
                 leaf ("application/octet-stream", fx.pgp_armored, GMIME_CONTENT_ENCODING_7BIT, "encrypted.asc"), NULL);
    GMimeObject *sig = multipart (
      "signed", "application/pgp-signature", text_leaf ("text/plain", signed_text, GMIME_CONTENT_ENCODING_7BIT),
      leaf ("application/pgp-signature", fx.pgp_detached, GMIME_CONTENT_ENCODING_7BIT, "signature.asc"), NULL);
    GMimeObject *mangled = multipart (
      "mixed", NULL, text_leaf ("text/plain", "", GMIME_CONTENT_ENCODING_QUOTEDPRINTABLE),
      leaf ("application/pgp-encrypted", version, GMIME_CONTENT_ENCODING_BASE64, "PGPMIME version identification"),
      leaf ("application/octet-stream", fx.pgp_armored, GMIME_CONTENT_ENCODING_BASE64, "encrypted.asc"));
    g_autoptr (GBytes) me = message (enc, crlf);
    g_autoptr (GBytes) ms = message (sig, crlf);
    g_autoptr (GBytes) mm = message (mangled, crlf);
    g_autoptr (MgReport) re = detect (me);
    g_autoptr (MgReport) rs = detect (ms);
    g_autoptr (MgReport) rm = detect (mm);

    assert_report (re, MG_KIND_PGP_MIME_ENCRYPTED, B (PGP_MIME_ENCRYPTED));
    g_assert_true (lists (re, FALSE, fx.alice_sub));
    g_assert_cmpstr (((MgPart *) g_ptr_array_index (re->parts, 2))->role, ==, "ciphertext");
    assert_report (rs, MG_KIND_PGP_MIME_SIGNED, B (PLAIN) | B (PGP_MIME_SIGNED));
    g_assert_true (lists (rs, TRUE, fx.alice_fpr));
    assert_report (rm, MG_KIND_PGP_MIME_MANGLED, B (PGP_MIME_MANGLED));
    g_assert_true (lists (rm, FALSE, fx.bob_sub));
    for (guint i = 0; i < rm->parts->len; i++)
      g_assert_null (((MgPart *) g_ptr_array_index (rm->parts, i))->error);
  }
}

static void
test_pgp_attachments (void)
{
  struct {
    const char *type;
    GBytes *data;
    const char *name;
  } cases[] = {
    { "application/octet-stream", fx.pgp_binary, "report.pdf.pgp" },
    { "application/octet-stream", fx.pgp_binary, "report.pdf.gpg" },
    { "application/pgp-encrypted", fx.pgp_binary, "data.bin" },
    { "application/octet-stream", fx.pgp_armored, "notes.txt.asc" },
    { "text/plain", fx.pgp_armored, "notes.txt.asc" },
    { "application/octet-stream", fx.pgp_binary, NULL },
  };

  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++) {
    GMimeObject *mixed =
      multipart ("mixed", NULL, text_leaf ("text/plain", "see attachment\n", GMIME_CONTENT_ENCODING_7BIT),
                 leaf (cases[i].type, cases[i].data, GMIME_CONTENT_ENCODING_BASE64, cases[i].name), NULL);
    g_autoptr (GBytes) msg = message (mixed, i % 2);
    g_autoptr (MgReport) r = detect (msg);
    g_test_message ("%s %s", cases[i].type, cases[i].name ? cases[i].name : "(no name)");
    assert_report (r, MG_KIND_PGP_ATTACHMENT_ENCRYPTED, B (PLAIN) | B (PGP_ATTACHMENT_ENCRYPTED));
    g_assert_true (lists (r, FALSE, fx.alice_sub));
  }
}

static void
test_smime (void)
{
  struct {
    const char *type;
    GBytes *data;
    const char *name;
    MgKind kind;
    const char *cipher;
  } cases[] = {
    { "application/pkcs7-mime; smime-type=enveloped-data", fx.cms_enveloped, "smime.p7m", MG_KIND_SMIME_ENVELOPED,
      "AES-256-CBC" },
    { "application/x-pkcs7-mime; smime-type=enveloped-data", fx.cms_enveloped, "smime.p7m", MG_KIND_SMIME_ENVELOPED,
      "AES-256-CBC" },
    { "application/pkcs7-mime", fx.cms_enveloped, "smime.p7m", MG_KIND_SMIME_ENVELOPED, "AES-256-CBC" },
    { "application/pkcs7-mime", fx.cms_enveloped, NULL, MG_KIND_SMIME_ENVELOPED, "AES-256-CBC" },
    { "application/octet-stream", fx.cms_enveloped, "smime.p7m", MG_KIND_SMIME_ENVELOPED, "AES-256-CBC" },
    { "application/pkcs7-mime; smime-type=authEnveloped-data", fx.cms_auth, "smime.p7m", MG_KIND_SMIME_ENVELOPED,
      "id-aes256-GCM" },
    { "application/pkcs7-mime; smime-type=signed-data", fx.cms_signed, "smime.p7m", MG_KIND_SMIME_SIGNED_OPAQUE, NULL },
    { "application/x-pkcs7-mime", fx.cms_signed, "smime.p7m", MG_KIND_SMIME_SIGNED_OPAQUE, NULL },
    { "application/pkcs7-mime; smime-type=compressed-data", fx.cms_compressed, "smime.p7z", MG_KIND_SMIME_COMPRESSED,
      NULL },
  };

  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++) {
    g_autoptr (GBytes) msg =
      message (leaf (cases[i].type, cases[i].data, GMIME_CONTENT_ENCODING_BASE64, cases[i].name), i % 2);
    g_autoptr (MgReport) r = detect (msg);
    const MgPart *p = g_ptr_array_index (r->parts, 0);
    g_test_message ("%s %s", cases[i].type, cases[i].name ? cases[i].name : "");
    assert_report (r, cases[i].kind, MG_KIND_BIT (cases[i].kind));
    g_assert_null (p->error);
    g_assert_cmpstr (p->info.cipher, ==, cases[i].cipher);
    if (cases[i].kind == MG_KIND_SMIME_ENVELOPED)
      g_assert_true (lists (r, FALSE, fx.carol_serial));
    if (cases[i].kind == MG_KIND_SMIME_SIGNED_OPAQUE) {
      g_assert_true (lists (r, TRUE, fx.carol_serial));
      g_assert_cmpstr (((MgCryptoId *) g_ptr_array_index (p->info.signers, 0))->name, ==, "carol@example.net");
      g_assert_cmpstr (((MgCryptoId *) g_ptr_array_index (p->info.signers, 0))->digest, ==, "SHA256");
    }
    if (cases[i].kind == MG_KIND_SMIME_COMPRESSED)
      g_assert_cmpstr (p->info.compression, ==, "ZLIB");
  }
  g_assert_cmpstr (cases[5].cipher, ==, "id-aes256-GCM");
}

static void
test_smime_detached (void)
{
  const char *protocols[] = { "application/pkcs7-signature", "application/x-pkcs7-signature" };

  for (gsize i = 0; i < G_N_ELEMENTS (protocols); i++) {
    GMimeObject *sig =
      multipart ("signed", protocols[i], text_leaf ("text/plain", signed_text, GMIME_CONTENT_ENCODING_QUOTEDPRINTABLE),
                 leaf (protocols[i], fx.cms_detached, GMIME_CONTENT_ENCODING_BASE64, "smime.p7s"), NULL);
    g_autoptr (GBytes) msg = message (sig, i == 0);
    g_autoptr (MgReport) r = detect (msg);
    const MgPart *sp = g_ptr_array_index (r->parts, 2);
    assert_report (r, MG_KIND_SMIME_SIGNED_DETACHED, B (PLAIN) | B (SMIME_SIGNED_DETACHED));
    g_assert_cmpstr (sp->role, ==, "signature");
    g_assert_cmpstr (sp->info.content, ==, "detached");
    g_assert_cmpstr (((MgCryptoId *) g_ptr_array_index (sp->info.signers, 0))->digest, ==, "SHA512");
    g_assert_true (lists (r, TRUE, fx.carol_serial));
  }
}

/* three deep: a forwarded message, S/MIME-signed, holding PGP/MIME-encrypted content and an S/MIME attachment */
static void
test_nested (void)
{
  g_autoptr (GBytes) version = g_bytes_new_static ("Version: 1\n", 11);
  GMimeObject *enc =
    multipart ("encrypted", "application/pgp-encrypted",
               leaf ("application/pgp-encrypted", version, GMIME_CONTENT_ENCODING_7BIT, NULL),
               leaf ("application/octet-stream", fx.pgp_armored, GMIME_CONTENT_ENCODING_7BIT, NULL), NULL);
  GMimeObject *content = multipart ("mixed", NULL, enc,
                                    leaf ("application/pkcs7-mime; smime-type=enveloped-data", fx.cms_enveloped,
                                          GMIME_CONTENT_ENCODING_BASE64, "smime.p7m"),
                                    NULL);
  GMimeObject *sig =
    multipart ("signed", "application/pkcs7-signature", content,
               leaf ("application/pkcs7-signature", fx.cms_detached, GMIME_CONTENT_ENCODING_BASE64, "smime.p7s"), NULL);
  GMimeObject *outer = multipart (
    "mixed", NULL, text_leaf ("text/plain", "FYI, forwarded:\n", GMIME_CONTENT_ENCODING_7BIT), forwarded (sig), NULL);
  g_autoptr (GBytes) msg = message (outer, TRUE);
  g_autoptr (MgReport) r = detect (msg);
  const MgPart *deep = NULL;

  assert_report (r, MG_KIND_SMIME_SIGNED_DETACHED,
                 B (PLAIN) | B (SMIME_SIGNED_DETACHED) | B (PGP_MIME_ENCRYPTED) | B (SMIME_ENVELOPED));
  for (guint i = 0; i < r->parts->len; i++) {
    const MgPart *p = g_ptr_array_index (r->parts, i);
    if (p->kind == MG_KIND_PGP_MIME_ENCRYPTED && deep == NULL)
      deep = p;
  }
  g_assert_nonnull (deep);
  g_assert_cmpstr (deep->path, ==, "1.2.1.1.1");
  g_assert_cmpuint (deep->depth, ==, 4);
  g_assert_true (lists (r, FALSE, fx.alice_sub));
  g_assert_true (lists (r, FALSE, fx.carol_serial));
}

int
main (int argc, char **argv)
{
  int status;

  g_test_init (&argc, &argv, NULL);
  g_mime_init ();
  if (!mg_test_have_program ("gpg") || !mg_test_have_program ("openssl")) {
    g_printerr ("gpg and openssl are needed\n");
    return 77;
  }
  setup_keys ();
  g_test_add_func ("/generated/pgp-inline-encrypted/encodings", test_inline_encrypted);
  g_test_add_func ("/generated/pgp-inline-encrypted/html", test_inline_html);
  g_test_add_func ("/generated/pgp-inline-signed-and-key", test_inline_signed_and_key);
  g_test_add_func ("/generated/pgp-mime", test_pgp_mime);
  g_test_add_func ("/generated/pgp-attachments", test_pgp_attachments);
  g_test_add_func ("/generated/smime", test_smime);
  g_test_add_func ("/generated/smime-detached", test_smime_detached);
  g_test_add_func ("/generated/nested", test_nested);
  status = g_test_run ();

  mg_gpg_free (fx.gpg);
  mg_ca_free (fx.ca);
  g_free (fx.alice_sub);
  g_free (fx.bob_sub);
  g_free (fx.alice_fpr);
  g_free (fx.carol_serial);
  GBytes *all[] = { fx.pgp_armored,   fx.pgp_binary, fx.pgp_clearsign, fx.pgp_detached, fx.pgp_key,
                    fx.cms_enveloped, fx.cms_auth,   fx.cms_signed,    fx.cms_detached, fx.cms_compressed };
  for (gsize i = 0; i < G_N_ELEMENTS (all); i++)
    g_bytes_unref (all[i]);
  g_mime_shutdown ();
  return status;
}
