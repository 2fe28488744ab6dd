/* test-convert.c - conversions between plain, PGP/MIME and S/MIME with real keys, every result checked with an
 * independent tool: gpg --decrypt and openssl cms -decrypt open what we made, and Python's email package compares
 * the decrypted text and attachment bytes with the originals. Also the refusals: a recipient without a key (5.7.1),
 * a message encrypted to keys the gateway does not hold (5.7.5 naming them), OpenPGP data without MDC. */
#include "config.h"

#include <string.h>

#include <glib/gstdio.h>

#include "detect.h"
#include "testutil.h"

typedef struct {
  MgGpg *gpg;   /* the gateway's home: alice and bob, with secret keys */
  MgGpg *other; /* a stranger's home */
  MgCa *ca;     /* carol (the gateway holds her key) and dave */
  char *store;
  char *conf;
  char *dir;
  char *input; /* path of the plain test message */
  char *input_parts;
} Fixture;

static Fixture fx;

static char *
parts_of (const char *data, gsize len)
{
  g_autofree char *script = g_test_build_filename (G_TEST_DIST, "mimeparts.py", NULL);
  const char *argv[] = { "python3", script, NULL };
  MgRun r;
  char *out;

  g_assert_true (mg_test_run (&r, argv, NULL, data, len));
  if (r.status != 0)
    g_error ("mimeparts.py: %s", r.err);
  out = g_steal_pointer (&r.out);
  mg_run_clear (&r);
  return out;
}

/* leaves - the leaf lines of mimeparts.py's view of @data (an entity and a whole message differ only above them) */
static char *
leaves (const char *data, gsize len)
{
  g_autofree char *parts = parts_of (data, len);
  g_auto (GStrv) lines = g_strsplit (parts, "\n", -1);
  GString *s = g_string_new (NULL);

  for (guint i = 0; lines[i]; i++)
    if (strchr (lines[i], '\t'))
      g_string_append_printf (s, "%s\n", lines[i]);
  return g_string_free (s, FALSE);
}

/* these tests are about the content: every leaf arrives as it came, so convert_va() asks for sign-only (the default,
 * obscure, gives the main text part a legacy display: test-hp-more.c); the round trips ask for obscure */
static const char *const sign_only[] = { "--header-protection", "sign-only", NULL };
static const char *const obscure[] = { "--header-protection", "obscure", NULL };

/* convert_va - mimegate convert -c CONF [EXTRA...] --to FORM -r ADDR... FILE */
static void
convert_va (MgRun *r, const char *const *extra, const char *form, const char *file, va_list ap)
{
  g_autoptr (GPtrArray) argv = g_ptr_array_new ();
  g_auto (GStrv) env = mg_test_env ("LANGUAGE", NULL, "LC_ALL", "C.UTF-8", NULL);

  g_ptr_array_add (argv, (gpointer) mg_test_mimegate ());
  g_ptr_array_add (argv, (gpointer) "convert");
  g_ptr_array_add (argv, (gpointer) "-c");
  g_ptr_array_add (argv, fx.conf);
  for (guint i = 0; sign_only[i] != NULL; i++) /* before @extra: an --header-protection there wins */
    g_ptr_array_add (argv, (gpointer) sign_only[i]);
  for (guint i = 0; extra != NULL && extra[i] != NULL; i++)
    g_ptr_array_add (argv, (gpointer) extra[i]);
  g_ptr_array_add (argv, (gpointer) "--to");
  g_ptr_array_add (argv, (gpointer) form);
  for (const char *a = va_arg (ap, const char *); a; a = va_arg (ap, const char *)) {
    g_ptr_array_add (argv, (gpointer) "-r");
    g_ptr_array_add (argv, (gpointer) a);
  }
  g_ptr_array_add (argv, (gpointer) file);
  g_ptr_array_add (argv, NULL);
  g_assert_true (mg_test_run (r, (const char *const *) argv->pdata, (const char *const *) env, NULL, 0));
}

static void convert (MgRun *r, const char *form, const char *file, ...) G_GNUC_NULL_TERMINATED;
static void convert_with (MgRun *r, const char *const *extra, const char *form, const char *file,
                          ...) G_GNUC_NULL_TERMINATED;

/* convert - mimegate convert -c CONF --to FORM -r ADDR... FILE */
static void
convert (MgRun *r, const char *form, const char *file, ...)
{
  va_list ap;

  va_start (ap, file);
  convert_va (r, NULL, form, file, ap);
  va_end (ap);
}

/* convert_with - the same with more options before --to */
static void
convert_with (MgRun *r, const char *const *extra, const char *form, const char *file, ...)
{
  va_list ap;

  va_start (ap, file);
  convert_va (r, extra, form, file, ap);
  va_end (ap);
}

static char *
save (const char *name, const char *data, gsize len)
{
  return mg_test_write (fx.dir, name, data, (gssize) len);
}

static char *
gpg_decrypt (const char *msg, gsize *len)
{
  g_autofree char *block = mg_test_pgp_block (msg);
  g_auto (GStrv) env = mg_test_env ("GNUPGHOME", fx.gpg->home, NULL);
  const char *argv[] = { "gpg", "--batch", "-q", "-d", NULL };
  MgRun r;
  char *out;

  g_assert_true (mg_test_run (&r, argv, (const char *const *) env, block, strlen (block)));
  g_assert_cmpint (r.status, ==, 0);
  *len = r.out_len;
  out = g_steal_pointer (&r.out);
  mg_run_clear (&r);
  return out;
}

static const char message_template[] = "From: Sender <sender@example.net>\n"
                                       "To: Alice <alice@example.org>\n"
                                       "Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=\n"
                                       "Message-ID: <convert-test@example.net>\n"
                                       "MIME-Version: 1.0\n"
                                       "Content-Type: multipart/mixed; boundary=\"outer\"\n"
                                       "\n"
                                       "--outer\n"
                                       "Content-Type: text/plain; charset=utf-8\n"
                                       "Content-Transfer-Encoding: quoted-printable\n"
                                       "\n"
                                       "Gr=C3=BC=C3=9Fe aus K=C3=B6ln =E2=80=94 see the attachments.\n"
                                       "--outer\n"
                                       "Content-Type: text/plain; charset=iso-8859-1\n"
                                       "Content-Transfer-Encoding: 8bit\n"
                                       "\n"
                                       "Caf\xe9 cr\xe8me\n"
                                       "--outer\n"
                                       "Content-Type: application/octet-stream\n"
                                       "Content-Disposition: attachment; filename*=utf-8''R%%C3%%A9sum%%C3%%A9.bin\n"
                                       "Content-Transfer-Encoding: base64\n"
                                       "\n"
                                       "%s\n"
                                       "--outer--\n";

/* engine_line - the openpgp-encrypt line of the test configurations: @engine, else $MIMEGATE_TEST_OPENPGP_ENCRYPT
 * (meson runs this whole file with it set to rnp, then to gpg), else none (the default, auto: gpg for convert) */
static const char *
engine_line (const char *engine)
{
  static char line[64];
  const char *env = g_getenv ("MIMEGATE_TEST_OPENPGP_ENCRYPT");

  if (engine == NULL)
    engine = env;
  if (engine == NULL || engine[0] == '\0')
    return "";
  g_snprintf (line, sizeof line, "openpgp-encrypt = %s\n", engine);
  return line;
}

static void
setup (void)
{
  g_autofree char *conf = NULL, *attachment = NULL, *msg = NULL;
  guint8 bytes[3000];

  fx.gpg = mg_gpg_new ();
  g_assert_true (mg_gpg_add_key (fx.gpg, "alice@example.org", "ed25519"));
  g_assert_true (mg_gpg_add_key (fx.gpg, "bob@example.org", "rsa2048"));
  fx.other = mg_gpg_new ();
  g_assert_true (mg_gpg_add_key (fx.other, "stranger@example.org", "ed25519"));
  fx.ca = mg_ca_new ();
  g_assert_true (mg_ca_add_leaf (fx.ca, "carol", "carol@example.net"));
  g_assert_true (mg_ca_add_leaf (fx.ca, "dave", "dave@example.net"));
  fx.dir = mg_test_tmpdir ();
  fx.store =
    mg_ca_store (fx.ca, fx.dir, (const char *const[]){ "carol", "dave", NULL }, (const char *const[]){ "carol", NULL });
  conf =
    g_strdup_printf ("[gateway]\ngnupg-home = %s\nx509-store = %s\ntrust-model = always\nauthserv-id = gw.example\n%s",
                     fx.gpg->home, fx.store, engine_line (NULL));
  fx.conf = mg_test_write (fx.dir, "mimegate.conf", conf, -1);
  for (gsize i = 0; i < sizeof bytes; i++)
    bytes[i] = (guint8) ((i * 7919u + 13u) >> 3);
  attachment = g_base64_encode (bytes, sizeof bytes);
  msg = g_strdup_printf (message_template, attachment);
  fx.input = save ("plain.eml", msg, strlen (msg));
  fx.input_parts = leaves (msg, strlen (msg));
  g_assert_nonnull (strstr (fx.input_parts, "application/octet-stream\tRésumé.bin"));
}

static void
test_plain_to_pgp_mime (void)
{
  g_autofree char *alice = mg_gpg_encryption_keyid (fx.gpg, "alice@example.org");
  g_autofree char *bob = mg_gpg_encryption_keyid (fx.gpg, "bob@example.org");
  g_autofree char *clear = NULL, *parts = NULL, *packets = NULL, *block = NULL;
  gsize len;
  MgRun r;

  convert (&r, "pgp-mime", fx.input, "alice@example.org", "bob@example.org", NULL);
  g_assert_cmpint (r.status, ==, 0);
  g_assert_cmpstr (r.err, ==, "");
  g_assert_nonnull (strstr (r.out, "Content-Type: multipart/encrypted"));
  g_assert_nonnull (strstr (r.out, "Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?="));
  /* the clear text is nowhere (these pieces cannot occur in base64 armor by chance: spaces, '=' inside, 8-bit) */
  g_assert_null (strstr (r.out, "Caf\xe9 cr\xe8me"));
  g_assert_null (strstr (r.out, "aus K=C3=B6ln"));
  block = mg_test_pgp_block (r.out);
  packets = mg_gpg (fx.gpg, block, strlen (block), "--list-packets", NULL);
  g_assert_nonnull (strstr (packets, alice));
  g_assert_nonnull (strstr (packets, bob));
  clear = gpg_decrypt (r.out, &len);
  parts = leaves (clear, len);
  g_assert_cmpstr (parts, ==, fx.input_parts);
  mg_run_clear (&r);
}

static void
test_plain_to_smime (void)
{
  g_autofree char *clear = NULL, *clear2 = NULL, *parts = NULL, *parts2 = NULL;
  gsize len, len2;
  MgRun r;

  convert (&r, "smime", fx.input, "carol@example.net", "dave@example.net", NULL);
  g_assert_cmpint (r.status, ==, 0);
  g_assert_nonnull (strstr (r.out, "Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m"));
  clear = mg_test_cms_decrypt (fx.ca, "carol", r.out, r.out_len, &len);
  clear2 = mg_test_cms_decrypt (fx.ca, "dave", r.out, r.out_len, &len2);
  parts = leaves (clear, len);
  parts2 = leaves (clear2, len2);
  g_assert_cmpstr (parts, ==, fx.input_parts);
  g_assert_cmpstr (parts2, ==, fx.input_parts);
  mg_run_clear (&r);
}

static void
test_round_trips (void)
{
  g_autofree char *to_pgp = NULL, *to_smime = NULL;
  g_autofree char *parts = NULL, *clear = NULL, *pgp_parts = NULL, *smime_parts = NULL;
  gsize len;
  MgRun r;

  /* PGP/MIME (alice) → plain: the gateway decrypts with alice's secret key; under the default (obscure) the payload's
   * main text carries the legacy display, which plain removes again: the leaves as they were */
  convert_with (&r, obscure, "pgp-mime", fx.input, "alice@example.org", NULL);
  to_pgp = save ("to-pgp.eml", r.out, r.out_len);
  clear = gpg_decrypt (r.out, &len);
  pgp_parts = leaves (clear, len); /* what a re-encryption must keep */
  g_clear_pointer (&clear, g_free);
  mg_run_clear (&r);
  convert (&r, "plain", to_pgp, "anyone@example.org", NULL);
  g_assert_cmpint (r.status, ==, 0);
  parts = leaves (r.out, r.out_len);
  g_assert_cmpstr (parts, ==, fx.input_parts);
  g_assert_nonnull (strstr (r.out, "Message-ID: <convert-test@example.net>"));
  mg_run_clear (&r);
  g_clear_pointer (&parts, g_free);

  /* S/MIME (carol, whose key the gateway holds) → PGP/MIME (bob), opened by gpg */
  convert_with (&r, obscure, "smime", fx.input, "carol@example.net", NULL);
  to_smime = save ("to-smime.eml", r.out, r.out_len);
  clear = mg_test_cms_decrypt (fx.ca, "carol", r.out, r.out_len, &len);
  smime_parts = leaves (clear, len);
  g_clear_pointer (&clear, g_free);
  mg_run_clear (&r);
  convert (&r, "pgp-mime", to_smime, "bob@example.org", NULL);
  g_assert_cmpint (r.status, ==, 0);
  clear = gpg_decrypt (r.out, &len);
  parts = leaves (clear, len);
  g_assert_cmpstr (parts, ==, smime_parts); /* the payload re-encrypted as it was, its legacy display included */
  mg_run_clear (&r);
  g_clear_pointer (&parts, g_free);
  g_clear_pointer (&clear, g_free);

  /* PGP/MIME (alice) → S/MIME (dave), opened by openssl */
  convert (&r, "smime", to_pgp, "dave@example.net", NULL);
  g_assert_cmpint (r.status, ==, 0);
  clear = mg_test_cms_decrypt (fx.ca, "dave", r.out, r.out_len, &len);
  parts = leaves (clear, len);
  g_assert_cmpstr (parts, ==, pgp_parts);
  mg_run_clear (&r);

  /* already PGP/MIME for alice: kept byte for byte */
  {
    gsize in_len;
    g_autofree char *in = mg_test_read (to_pgp, &in_len);
    convert (&r, "pgp-mime", to_pgp, "alice@example.org", NULL);
    g_assert_cmpint (r.status, ==, 0);
    g_assert_cmpmem (r.out, r.out_len, in, in_len);
    mg_run_clear (&r);
  }
}

static void
test_aes_gcm (void)
{
  g_autofree char *clear = NULL, *parts = NULL;
  gsize len;
  MgRun r;
  const char *args[] = { mg_test_mimegate (), "convert", "-c",    fx.conf,     "--header-protection",
                         "sign-only",         "--to",    "smime", "--aes-gcm", "-r",
                         "dave@example.net",  fx.input,  NULL };

  g_assert_true (mg_test_run (&r, args, NULL, NULL, 0));
  g_assert_cmpint (r.status, ==, 0);
  g_assert_nonnull (strstr (r.out, "smime-type=authEnveloped-data"));
  clear = mg_test_cms_decrypt (fx.ca, "dave", r.out, r.out_len, &len);
  parts = leaves (clear, len);
  g_assert_cmpstr (parts, ==, fx.input_parts);
  mg_run_clear (&r);
}

static void
test_refusals (void)
{
  g_autofree char *stranger_msg = NULL, *stranger_file = NULL, *stranger_sub = NULL;
  g_autofree char *dave_only = NULL, *dave_file = NULL, *dave_serial = NULL, *nomdc = NULL, *nomdc_file = NULL;
  g_autofree char *entity = g_strdup ("Content-Type: text/plain\r\n\r\nsecret\r\n");
  gsize n;
  MgRun r;

  convert (&r, "pgp-mime", fx.input, "alice@example.org", "nobody@example.org", NULL);
  g_assert_cmpint (r.status, ==, 69);
  g_assert_cmpstr (r.err, ==, "5.7.1 mimegate convert: no usable OpenPGP key for nobody@example.org\n");
  g_assert_cmpuint (r.out_len, ==, 0);
  mg_run_clear (&r);
  convert (&r, "smime", fx.input, "alice@example.org", NULL);
  g_assert_cmpint (r.status, ==, 69);
  g_assert_cmpstr (r.err, ==, "5.7.1 mimegate convert: no usable X.509 certificate for alice@example.org\n");
  mg_run_clear (&r);

  /* PGP/MIME to a key the gateway does not hold */
  {
    g_autofree char *armored =
      mg_gpg (fx.other, entity, strlen (entity), "-a", "-e", "-r", "<stranger@example.org>", NULL);
    stranger_msg = g_strdup_printf ("From: x@example.org\nMIME-Version: 1.0\nContent-Type: multipart/encrypted; "
                                    "protocol=\"application/pgp-encrypted\"; boundary=b\n\n--b\nContent-Type: "
                                    "application/pgp-encrypted\n\nVersion: 1\n--b\nContent-Type: "
                                    "application/octet-stream\n\n%s\n--b--\n",
                                    armored);
  }
  stranger_file = save ("stranger.eml", stranger_msg, strlen (stranger_msg));
  stranger_sub = mg_gpg_encryption_keyid (fx.other, "stranger@example.org");
  convert (&r, "plain", stranger_file, "alice@example.org", NULL);
  g_assert_cmpint (r.status, ==, 69);
  g_assert_true (g_str_has_prefix (r.err, "5.7.5 mimegate convert: encrypted to keys the gateway does not hold: 0x"));
  g_assert_nonnull (strstr (r.err, stranger_sub));
  g_assert_cmpuint (r.out_len, ==, 0);
  mg_run_clear (&r);

  /* S/MIME to dave only: the gateway holds carol's key, not dave's */
  {
    g_autofree char *dave = mg_ca_path (fx.ca, "dave", ".pem");
    dave_only = mg_ca_openssl (fx.ca, entity, strlen (entity), &n, "cms", "-encrypt", "-aes256", dave, NULL);
    g_assert_nonnull (dave_only);
  }
  dave_file = save ("dave-only.eml", dave_only, n);
  dave_serial = mg_ca_serial (fx.ca, "dave");
  convert (&r, "plain", dave_file, "carol@example.net", NULL);
  g_assert_cmpint (r.status, ==, 69);
  g_assert_true (g_str_has_prefix (r.err, "5.7.5 mimegate convert: encrypted to keys the gateway does not hold:"));
  g_assert_nonnull (strstr (r.err, dave_serial));
  mg_run_clear (&r);

  /* OpenPGP without integrity protection (gpg --rfc2440 makes a SED packet): refused, never decrypted */
  {
    g_autofree char *armored = mg_gpg (fx.gpg, entity, strlen (entity), "--rfc2440", "--cipher-algo", "CAST5", "-a",
                                       "-e", "-r", "<bob@example.org>", NULL);
    g_assert_nonnull (armored);
    nomdc = g_strdup_printf ("From: x@example.org\nMIME-Version: 1.0\nContent-Type: multipart/encrypted; "
                             "protocol=\"application/pgp-encrypted\"; boundary=b\n\n--b\nContent-Type: "
                             "application/pgp-encrypted\n\nVersion: 1\n--b\nContent-Type: "
                             "application/octet-stream\n\n%s\n--b--\n",
                             armored);
  }
  nomdc_file = save ("nomdc.eml", nomdc, strlen (nomdc));
  convert (&r, "plain", nomdc_file, "alice@example.org", NULL);
  g_assert_cmpint (r.status, ==, 69);
  g_assert_true (g_str_has_prefix (r.err, "5.7.5 mimegate convert: "));
  g_assert_null (strstr (r.out, "secret"));
  g_test_message ("no MDC: %s", r.err);
  mg_run_clear (&r);
}

/* fields - mimeparts lines without the charset column: PGP/Inline carries text as UTF-8 whatever it came in */
static char *
fields (const char *parts)
{
  g_auto (GStrv) lines = g_strsplit (parts, "\n", -1);
  GString *s = g_string_new (NULL);

  for (guint i = 0; lines[i] && lines[i][0]; i++) {
    g_auto (GStrv) f = g_strsplit (lines[i], "\t", -1);
    if (g_strv_length (f) == 4)
      g_string_append_printf (s, "%s\t%s\t%s\n", f[0], f[1], f[3]);
  }
  return g_string_free (s, FALSE);
}

static const char inline_input[] = "From: Sender <sender@example.net>\n"
                                   "To: Alice <alice@example.org>\n"
                                   "Subject: inline\n"
                                   "MIME-Version: 1.0\n"
                                   "Content-Type: multipart/mixed; boundary=\"b\"\n\n"
                                   "--b\n"
                                   "Content-Type: multipart/alternative; boundary=\"a\"\n\n"
                                   "--a\n"
                                   "Content-Type: text/plain; charset=windows-1252\n"
                                   "Content-Transfer-Encoding: quoted-printable\n\n"
                                   "Caf=E9 =80 cr=E8me =96 the report is attached.\n"
                                   "--a\n"
                                   "Content-Type: text/html; charset=utf-8\n\n"
                                   "<p>Caf&eacute;</p>\n"
                                   "--a--\n"
                                   "--b\n"
                                   "Content-Type: application/pdf\n"
                                   "Content-Disposition: attachment; filename=report.pdf\n"
                                   "Content-Transfer-Encoding: base64\n\n"
                                   "JVBERi0xLjQKJcOkw7zDtsOfCnNhbXBsZSBwZGYK\n"
                                   "--b--\n";

/* PGP/Inline, the Microsoft 365 form: body text armored in UTF-8, each attachment its own NAME.pgp */
static void
test_to_pgp_inline (void)
{
  g_autofree char *file = save ("inline-in.eml", inline_input, strlen (inline_input));
  g_autofree char *text = NULL;
  g_autofree char *back = NULL;
  gsize len, att_len;
  MgRun r;

  convert (&r, "pgp-inline", file, "alice@example.org", NULL);
  g_assert_cmpint (r.status, ==, 0);
  g_assert_null (strstr (r.out, "multipart/encrypted"));
  g_assert_null (strstr (r.out, "<p>"));
  g_assert_nonnull (strstr (r.out, "Content-Type: text/plain; charset=utf-8"));
  g_assert_nonnull (strstr (r.out, "filename=report.pdf.pgp"));
  /* the text, opened by gpg: the windows-1252 characters as UTF-8 */
  text = gpg_decrypt (r.out, &len);
  /* no line end: the one before a boundary belongs to the boundary (RFC 2046 section 5.1.1) */
  g_assert_cmpstr (text, ==, "Caf\xc3\xa9 \xe2\x82\xac cr\xc3\xa8me \xe2\x80\x93 the report is attached.");
  /* the attachment, binary OpenPGP, opened by gpg: the original bytes */
  {
    const char *b = strstr (r.out, "filename=report.pdf.pgp");
    const char *start = strstr (b, "\n\n") + 2;
    const char *end = strstr (start, "\n--");
    g_autofree char *b64 = g_strndup (start, (gsize) (end - start));
    g_autofree guchar *bin = g_base64_decode (b64, &att_len);
    g_auto (GStrv) env = mg_test_env ("GNUPGHOME", fx.gpg->home, NULL);
    const char *argv[] = { "gpg", "--batch", "-q", "-d", NULL };
    MgRun g;
    g_assert_true (mg_test_run (&g, argv, (const char *const *) env, (const char *) bin, att_len));
    g_assert_cmpint (g.status, ==, 0);
    g_assert_cmpmem (g.out, g.out_len, "%PDF-1.4\n%\xc3\xa4\xc3\xbc\xc3\xb6\xc3\x9f\nsample pdf\n", 30);
    mg_run_clear (&g);
  }
  /* and back: the same characters and bytes (the HTML alternative was a copy of the text: dropped) */
  back = save ("inline-out.eml", r.out, r.out_len);
  mg_run_clear (&r);
  convert (&r, "plain", back, "anyone@example.org", NULL);
  g_assert_cmpint (r.status, ==, 0);
  {
    g_autofree char *in_parts = parts_of (inline_input, strlen (inline_input));
    g_autofree char *out_parts = parts_of (r.out, r.out_len);
    g_autofree char *in_f = fields (in_parts);
    g_autofree char *out_f = fields (out_parts);
    g_auto (GStrv) in_lines = g_strsplit (in_f, "\n", -1);
    /* text/plain and the PDF must come back; the HTML line of the input has no counterpart */
    g_assert_nonnull (strstr (out_f, in_lines[0]));
    g_assert_nonnull (strstr (out_f, in_lines[2]));
  }
  mg_run_clear (&r);

  /* an ISO-8859-1 body on its own (8bit): armored as UTF-8, declared utf-8 */
  {
    const char latin1[] = "From: s@example.net\nTo: alice@example.org\nSubject: latin1\nMIME-Version: 1.0\n"
                          "Content-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding: 8bit\n\n"
                          "Gr\xfc\xdf"
                          "e aus K\xf6ln, \xa9 2026\n";
    g_autofree char *f = save ("latin1.eml", latin1, strlen (latin1));
    g_autofree char *clear = NULL;
    convert (&r, "pgp-inline", f, "alice@example.org", NULL);
    g_assert_cmpint (r.status, ==, 0);
    g_assert_nonnull (strstr (r.out, "Content-Type: text/plain; charset=utf-8"));
    clear = gpg_decrypt (r.out, &len);
    g_assert_cmpstr (clear, ==,
                     "Gr\xc3\xbc\xc3\x9f"
                     "e aus K\xc3\xb6ln, \xc2\xa9 2026\r\n");
    mg_run_clear (&r);
  }
}

static void
test_html_only_to_inline (void)
{
  static const char html[] = "From: s@example.net\nTo: alice@example.org\nSubject: h\nMIME-Version: 1.0\n"
                             "Content-Type: text/html; charset=utf-8\n\n<html><body><b>bold</b></body></html>\n";
  g_autofree char *file = save ("html.eml", html, strlen (html));
  MgRun r;

  convert (&r, "pgp-inline", file, "alice@example.org", NULL);
  g_assert_cmpint (r.status, ==, 0);
  g_assert_nonnull (strstr (r.out, "filename=body.html.pgp"));
  g_assert_nonnull (strstr (r.out, "Its body is the attached body.html.pgp."));
  g_assert_null (strstr (r.out, "<b>bold</b>"));
  mg_run_clear (&r);
}

/* EFAIL: decrypted text never joins the clear text around it; each is its own part */
static void
test_inline_efail_split (void)
{
  g_autofree char *armored = mg_gpg (fx.gpg, "the secret\n", 11, "-a", "-e", "-r", "<alice@example.org>", NULL);
  g_autofree char *msg = g_strdup_printf ("From: x@example.org\nSubject: s\nContent-Type: text/plain\n\n"
                                          "<img src=\"http://evil.example/?\nBefore the armor.\n%sAfter it.\n",
                                          armored);
  g_autofree char *file = save ("efail.eml", msg, strlen (msg));
  g_autofree char *parts = NULL;
  MgRun r;

  convert (&r, "plain", file, "alice@example.org", NULL);
  g_assert_cmpint (r.status, ==, 0);
  parts = parts_of (r.out, r.out_len);
  g_test_message ("%s", parts);
  g_assert_true (g_str_has_prefix (parts, "multipart/mixed\ntext/plain\t"));
  {
    g_auto (GStrv) lines = g_strsplit (parts, "\n", -1);
    g_assert_cmpuint (g_strv_length (lines), ==, 5); /* mixed, before, decrypted, after, "" */
  }
  /* the decrypted text stands alone in its part */
  g_assert_nonnull (strstr (r.out, "\nthe secret\n"));
  g_assert_null (strstr (r.out, "evil.example/?\nthe secret"));
  mg_run_clear (&r);
}

/* PGP/MIME as Exchange mangles it, for a recipient who can read it: rebuilt around the same ciphertext */
static void
test_mangled_repair (void)
{
  g_autofree char *entity = g_strdup ("Content-Type: text/plain\r\n\r\nrepaired\r\n");
  g_autofree char *armored = mg_gpg (fx.gpg, entity, strlen (entity), "-a", "-e", "-r", "<alice@example.org>", NULL);
  g_autofree char *b64 = g_base64_encode ((const guchar *) armored, strlen (armored));
  g_autofree char *msg = g_strdup_printf (
    "From: x@example.org\nSubject: m\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n"
    "--b\nContent-Type: text/plain; charset=us-ascii\n\n\n--b\nContent-Type: application/pgp-encrypted\n"
    "Content-Transfer-Encoding: base64\n\nVmVyc2lvbjogMQ0K\n--b\nContent-Type: application/octet-stream; "
    "name=encrypted.asc\nContent-Disposition: attachment; filename=encrypted.asc\nContent-Transfer-Encoding: "
    "base64\n\n%s\n--b--\n",
    b64);
  g_autofree char *file = save ("mangled.eml", msg, strlen (msg));
  g_autofree char *block = NULL, *clear = NULL;
  gsize len;
  MgRun r;

  convert (&r, "pgp-mime", file, "alice@example.org", NULL);
  g_assert_cmpint (r.status, ==, 0);
  g_assert_nonnull (strstr (r.out, "Content-Type: multipart/encrypted"));
  block = mg_test_pgp_block (r.out);
  g_assert_nonnull (strstr (armored, block)); /* the very same ciphertext: repaired, not re-encrypted */
  clear = gpg_decrypt (r.out, &len);
  g_assert_cmpstr (clear, ==, entity);
  mg_run_clear (&r);
}

static void
test_output_file_and_stores (void)
{
  g_autofree char *out = g_build_filename (fx.dir, "out.eml", NULL);
  const char *args[] = { mg_test_mimegate (), "convert", "-c", fx.conf,  "--to", "plain", "-r",
                         "a@example.org",     "-o",      out,  fx.input, NULL };
  GStatBuf st;
  MgRun r;

  g_assert_true (mg_test_run (&r, args, NULL, NULL, 0));
  g_assert_cmpint (r.status, ==, 0);
  g_assert_cmpuint (r.out_len, ==, 0);
  g_assert_cmpint (g_stat (out, &st), ==, 0);
  g_assert_cmpint (st.st_mode & 0777, ==, 0600);
  mg_run_clear (&r);
  {
    g_autofree char *bad = g_strdup_printf ("[gateway]\ngnupg-home = %s/missing\nx509-store = none\n", fx.dir);
    g_autofree char *conf = mg_test_write (fx.dir, "bad.conf", bad, -1);
    const char *a2[] = { mg_test_mimegate (), "convert", "-c", conf, "--to", "pgp-mime", "-r",
                         "alice@example.org", fx.input,  NULL };
    g_assert_true (mg_test_run (&r, a2, NULL, NULL, 0));
    g_assert_cmpint (r.status, ==, 75);
    g_assert_nonnull (strstr (r.err, "/missing does not exist"));
    mg_run_clear (&r);
  }
}

/* header - the value of the first @name header of @msg (unfolded), or NULL */
static char *
header (const char *msg, const char *name, guint nth)
{
  g_auto (GStrv) lines = g_strsplit (msg, "\n", -1);
  g_autofree char *prefix = g_strdup_printf ("%s: ", name);
  guint seen = 0;

  for (guint i = 0; lines[i] && lines[i][0]; i++) {
    if (g_ascii_strncasecmp (lines[i], prefix, strlen (prefix)) != 0)
      continue;
    if (seen++ < nth)
      continue;
    {
      GString *v = g_string_new (lines[i] + strlen (prefix));
      for (guint k = i + 1; lines[k] && (lines[k][0] == ' ' || lines[k][0] == '\t'); k++)
        g_string_append_printf (v, " %s", g_strstrip (lines[k]));
      return g_string_free (v, FALSE);
    }
  }
  return NULL;
}

static char *
signed_message (const char *protocol, const char *micalg, const char *content, const char *sig_type,
                const char *sig_encoding, const char *signature, const char *extra_headers)
{
  return g_strdup_printf ("From: Alice <alice@example.org>\nSubject: signed\n%sMIME-Version: 1.0\n"
                          "Content-Type: multipart/signed; protocol=\"%s\"; micalg=%s; boundary=\"sig\"\n\n"
                          "--sig\n%s\n--sig\nContent-Type: %s\n%s\n%s\n--sig--\n",
                          extra_headers, protocol, micalg, content, sig_type, sig_encoding, signature);
}

/* signed_by_stranger - a message with a detached S/MIME signature over @crlf by @name <@address>, whose certificate
 * comes from a CA of its own (never in the trusted collection); the saved file's path */
static char *
signed_by_stranger (const char *name, const char *address, const char *content, const char *crlf)
{
  MgCa *ca = mg_ca_new ();
  g_autofree char *crt = NULL, *key = NULL, *der = NULL, *b64 = NULL, *sm = NULL, *file = NULL;
  gsize n;

  g_assert_true (mg_ca_add_leaf (ca, name, address));
  crt = mg_ca_path (ca, name, ".pem");
  key = mg_ca_path (ca, name, ".key");
  der = mg_ca_openssl (ca, crlf, strlen (crlf), &n, "cms", "-sign", "-binary", "-outform", "DER", "-signer", crt,
                       "-inkey", key, NULL);
  b64 = g_base64_encode ((const guchar *) der, n);
  sm = signed_message ("application/pkcs7-signature", "sha-256", content, "application/pkcs7-signature",
                       "Content-Transfer-Encoding: base64\n", b64, "");
  file = g_strconcat ("signed-by-", name, ".eml", NULL);
  mg_ca_free (ca);
  return save (file, sm, strlen (sm));
}

static void
test_signatures (void)
{
  const char *content = "Content-Type: text/plain; charset=utf-8\n\nSigned by the sender.";
  g_autofree char *crlf = NULL, *pgp_sig = NULL, *fpr = NULL, *msg = NULL, *file = NULL, *ar = NULL, *ar2 = NULL;
  g_autofree char *serial = NULL;
  MgRun r;

  {
    g_autoptr (GString) s = g_string_new (content);
    g_string_replace (s, "\n", "\r\n", 0);
    crlf = g_string_free (g_steal_pointer (&s), FALSE);
  }
  /* PGP/MIME by alice: pass; forged stamps with our authserv-id go, a foreign one stays */
  pgp_sig = mg_gpg (fx.gpg, crlf, strlen (crlf), "-a", "--detach-sign", "-u", "<alice@example.org>", NULL);
  fpr = mg_gpg_fingerprint (fx.gpg, "alice@example.org");
  msg = signed_message ("application/pgp-signature", "pgp-sha512", content, "application/pgp-signature", "", pgp_sig,
                        "Authentication-Results: gw.example; x-openpgp=pass body.openpgp-identifier=ceo@example.org\n"
                        "Authentication-Results: mx.other.example; spf=pass smtp.mailfrom=example.org\n");
  file = save ("pgp-signed.eml", msg, strlen (msg));
  convert (&r, "plain", file, "anyone@example.org", NULL);
  g_assert_cmpint (r.status, ==, 0);
  ar = header (r.out, "Authentication-Results", 0);
  ar2 = header (r.out, "Authentication-Results", 1);
  {
    g_autofree char *want = g_strdup_printf ("gw.example; x-openpgp=pass body.openpgp-identifier=alice@example.org "
                                             "body.openpgp-fingerprint=%s",
                                             fpr);
    g_assert_cmpstr (ar, ==, want);
  }
  g_assert_cmpstr (ar2, ==, "mx.other.example; spf=pass smtp.mailfrom=example.org");
  g_assert_null (header (r.out, "Authentication-Results", 2));
  g_assert_null (strstr (r.out, "ceo@example.org"));
  mg_run_clear (&r);

  /* keep: the same verdict, and the message otherwise byte for byte (only the forged line is gone) */
  convert (&r, "keep", file, "anyone@example.org", NULL);
  g_assert_cmpint (r.status, ==, 0);
  {
    g_autofree char *want = NULL;
    g_autoptr (GString) expect = g_string_new (msg);
    g_assert_cmpuint (g_string_replace (expect,
                                        "Authentication-Results: gw.example; x-openpgp=pass "
                                        "body.openpgp-identifier=ceo@example.org\n",
                                        "", 1),
                      ==, 1);
    want = g_strdup_printf ("Authentication-Results: %s\n%s", ar, expect->str);
    g_assert_cmpstr (r.out, ==, want);
  }
  mg_run_clear (&r);
  g_clear_pointer (&ar, g_free);
  /* a forged stamp folded after a comment is recognised too; nothing else changes */
  {
    const char plain_msg[] = "Authentication-Results: (forged)\n\tGW.EXAMPLE;\n smime=pass\nFrom: x@example.org\n"
                             "Subject: hi\n\nbody\n";
    g_autofree char *f = save ("forged.eml", plain_msg, strlen (plain_msg));
    convert (&r, "keep", f, "anyone@example.org", NULL);
    g_assert_cmpint (r.status, ==, 0);
    g_assert_cmpstr (r.out, ==, "From: x@example.org\nSubject: hi\n\nbody\n");
    mg_run_clear (&r);
  }

  /* the same signature over changed text: fail, never pass */
  {
    g_autofree char *tampered = signed_message ("application/pgp-signature", "pgp-sha512",
                                                "Content-Type: text/plain; charset=utf-8\n\nSigned by the CEO.",
                                                "application/pgp-signature", "", pgp_sig, "");
    g_autofree char *f = save ("pgp-tampered.eml", tampered, strlen (tampered));
    convert (&r, "plain", f, "anyone@example.org", NULL);
    g_assert_cmpint (r.status, ==, 0);
    ar = header (r.out, "Authentication-Results", 0);
    g_assert_true (g_str_has_prefix (ar, "gw.example; x-openpgp=fail reason=\"bad signature\""));
    mg_run_clear (&r);
    g_clear_pointer (&ar, g_free);
  }

  /* S/MIME by carol (chains to our root): pass; re-encrypted to PGP/MIME the stamp says so too */
  {
    g_autofree char *carol = mg_ca_path (fx.ca, "carol", ".pem");
    g_autofree char *carol_key = mg_ca_path (fx.ca, "carol", ".key");
    gsize n;
    g_autofree char *der = mg_ca_openssl (fx.ca, crlf, strlen (crlf), &n, "cms", "-sign", "-binary", "-outform", "DER",
                                          "-signer", carol, "-inkey", carol_key, NULL);
    g_autofree char *b64 = g_base64_encode ((const guchar *) der, n);
    g_autofree char *sm =
      signed_message ("application/pkcs7-signature", "sha-256", content, "application/pkcs7-signature; name=smime.p7s",
                      "Content-Transfer-Encoding: base64\n", b64, "");
    g_autofree char *f = save ("smime-signed.eml", sm, strlen (sm));
    serial = mg_ca_serial (fx.ca, "carol");
    convert (&r, "pgp-mime", f, "bob@example.org", NULL);
    g_assert_cmpint (r.status, ==, 0);
    ar = header (r.out, "Authentication-Results", 0);
    {
      g_autofree char *want = g_strdup_printf ("gw.example; smime=pass body.smime-identifier=carol@example.net "
                                               "body.smime-serial=%s",
                                               serial + 2);
      g_assert_cmpstr (ar, ==, want);
    }
    mg_run_clear (&r);
    g_clear_pointer (&ar, g_free);
  }

  /* S/MIME by a certificate outside the trusted collection: never pass */
  {
    g_autofree char *f = signed_by_stranger ("eve", "eve@example.net", content, crlf);
    convert (&r, "plain", f, "anyone@example.org", NULL);
    g_assert_cmpint (r.status, ==, 0);
    ar = header (r.out, "Authentication-Results", 0);
    g_assert_true (g_str_has_prefix (ar, "gw.example; smime=neutral reason=\"the signer's certificate is not in the "
                                         "trusted collection\" body.smime-identifier=eve@example.net"));
    mg_run_clear (&r);
  }

  /* an OpenPGP user ID with a non-ASCII address: the fingerprint is stamped, the address is not copied */
  {
    g_autofree char *sig = NULL, *sm = NULL, *f = NULL, *ar4 = NULL, *jfpr = NULL;
    g_assert_true (mg_gpg_add_key (fx.gpg, "j\xc3\xb6rg@example.org", "ed25519"));
    jfpr = mg_gpg_fingerprint (fx.gpg, "j\xc3\xb6rg@example.org");
    sig = mg_gpg (fx.gpg, crlf, strlen (crlf), "-a", "--detach-sign", "-u", jfpr, NULL);
    sm = signed_message ("application/pgp-signature", "pgp-sha512", content, "application/pgp-signature", "", sig, "");
    f = save ("pgp-utf8-uid.eml", sm, strlen (sm));
    convert (&r, "plain", f, "anyone@example.org", NULL);
    g_assert_cmpint (r.status, ==, 0);
    ar4 = header (r.out, "Authentication-Results", 0);
    {
      g_autofree char *want = g_strdup_printf ("gw.example; x-openpgp=pass body.openpgp-fingerprint=%s", jfpr);
      g_assert_cmpstr (ar4, ==, want);
    }
    mg_run_clear (&r);
  }

  /* a signer address built to add a property of its own ("x;smime=pass@…") is left out of the stamp, not copied */
  {
    g_autofree char *f = signed_by_stranger ("mallory", "x;smime=pass@example.net", content, crlf);
    g_autofree char *ar3 = NULL;
    convert (&r, "plain", f, "anyone@example.org", NULL);
    g_assert_cmpint (r.status, ==, 0);
    ar3 = header (r.out, "Authentication-Results", 0);
    g_assert_true (g_str_has_prefix (ar3, "gw.example; smime=neutral reason="));
    g_assert_null (strstr (ar3, "x;smime"));
    g_assert_null (strstr (ar3, "body.smime-identifier"));
    mg_run_clear (&r);
  }
}

/* split_signed - signedparts.py's RFC 1847 split of @msg into DIR/content and DIR/signature; returns its
 * "protocol micalg" line */
static char *
split_signed (const char *dir, const char *msg, gsize len)
{
  g_autofree char *script = g_test_build_filename (G_TEST_DIST, "signedparts.py", NULL);
  const char *argv[] = { "python3", script, dir, NULL };
  MgRun r;
  char *out;

  g_assert_true (mg_test_run (&r, argv, NULL, msg, len));
  if (r.status != 0)
    g_error ("signedparts.py: %s", r.err);
  out = g_strstrip (g_steal_pointer (&r.out));
  mg_run_clear (&r);
  return out;
}

/* gpg_validsig - gpg --verify SIG [DATA] in the gateway's home; the fingerprint of a good signature, or NULL */
static char *
gpg_validsig (const char *sig, const char *data)
{
  g_autofree char *status = mg_gpg (fx.gpg, NULL, 0, "--status-fd", "1", "--verify", sig, data, NULL);
  const char *v = status ? strstr (status, "[GNUPG:] VALIDSIG ") : NULL;

  return v ? g_strndup (v + 18, 40) : NULL;
}

/* signing: PGP/MIME, S/MIME detached, both signed-then-encrypted, PGP/Inline signed and encrypted in one, and
 * cleartext PGP/Inline — each checked by gpg or openssl, not by us */
static void
test_signing (void)
{
  g_autofree char *alice_fpr = mg_gpg_fingerprint (fx.gpg, "alice@example.org");
  g_autofree char *dir = mg_test_tmpdir ();
  g_autofree char *content = g_build_filename (dir, "content", NULL);
  g_autofree char *signature = g_build_filename (dir, "signature", NULL);
  g_autofree char *root = mg_ca_path (fx.ca, "root", ".pem");
  const char *as_alice[] = { "--sign", "alice@example.org", NULL };
  const char *as_carol[] = { "--sign", "carol@example.net", NULL };
  const char *inline_alice[] = { "--sign", "alice@example.org", "--sign-method", "pgp-inline", NULL };
  MgRun r;

  /* plain, PGP/MIME signature by alice: gpg verifies the first part exactly as it travels */
  {
    g_autofree char *params = NULL, *fpr = NULL, *parts = NULL, *file = NULL, *ar = NULL;
    convert_with (&r, as_alice, "plain", fx.input, "anyone@example.org", NULL);
    g_assert_cmpint (r.status, ==, 0);
    params = split_signed (dir, r.out, r.out_len);
    {
      /* micalg names the hash the signature packet really uses (RFC 3156 section 5) */
      g_autofree char *packets = mg_gpg (fx.gpg, NULL, 0, "--list-packets", signature, NULL);
      const char *algo = strstr (params, "pgp-sha256") ? "digest algo 8," : "digest algo 10,";
      g_assert_true (g_str_has_prefix (params, "application/pgp-signature pgp-sha"));
      g_assert_nonnull (strstr (packets, algo));
    }
    fpr = gpg_validsig (signature, content);
    g_assert_cmpstr (fpr, ==, alice_fpr);
    {
      gsize n;
      g_autofree char *c = mg_test_read (content, &n);
      parts = leaves (c, n);
      g_assert_cmpstr (parts, ==, fx.input_parts);
    }
    /* and our own verification of what we signed: pass */
    file = save ("signed-by-alice.eml", r.out, r.out_len);
    mg_run_clear (&r);
    convert (&r, "plain", file, "anyone@example.org", NULL);
    g_assert_cmpint (r.status, ==, 0);
    ar = header (r.out, "Authentication-Results", 0);
    g_assert_true (g_str_has_prefix (ar, "gw.example; x-openpgp=pass body.openpgp-identifier=alice@example.org"));
    mg_run_clear (&r);
  }

  /* S/MIME by carol, then encrypted to dave: openssl decrypts as dave and verifies against the root */
  {
    g_autofree char *clear = NULL, *verified = NULL, *serial = mg_ca_serial (fx.ca, "carol");
    g_autofree char *signer_pem = g_build_filename (dir, "signer.pem", NULL);
    g_autofree char *parts = NULL, *signer_serial = NULL;
    gsize len, vlen;
    convert_with (&r, as_carol, "smime", fx.input, "dave@example.net", NULL);
    g_assert_cmpint (r.status, ==, 0);
    clear = mg_test_cms_decrypt (fx.ca, "dave", r.out, r.out_len, &len);
    g_assert_nonnull (strstr (clear, "protocol=\"application/pkcs7-signature\""));
    verified = mg_ca_openssl (fx.ca, clear, len, &vlen, "cms", "-verify", "-CAfile", root, "-signer", signer_pem, NULL);
    g_assert_nonnull (verified);
    parts = leaves (verified, vlen);
    g_assert_cmpstr (parts, ==, fx.input_parts);
    signer_serial = mg_ca_openssl (fx.ca, NULL, 0, NULL, "x509", "-in", signer_pem, "-noout", "-serial", NULL);
    g_assert_cmpstr (g_strstrip (signer_serial) + 7, ==, serial + 2);
    mg_run_clear (&r);
  }

  /* PGP/MIME signed by alice, encrypted to bob: gpg decrypts, then verifies the inner multipart/signed */
  {
    gsize len;
    g_autofree char *clear = NULL, *params = NULL, *fpr = NULL;
    convert_with (&r, as_alice, "pgp-mime", fx.input, "bob@example.org", NULL);
    g_assert_cmpint (r.status, ==, 0);
    clear = gpg_decrypt (r.out, &len);
    params = split_signed (dir, clear, len);
    g_assert_true (g_str_has_prefix (params, "application/pgp-signature pgp-"));
    fpr = gpg_validsig (signature, content);
    g_assert_cmpstr (fpr, ==, alice_fpr);
    mg_run_clear (&r);
  }

  /* PGP/Inline to bob signed by alice: the text and each NAME.pgp are signed and encrypted in one message */
  {
    g_autofree char *block = NULL, *status = NULL;
    convert_with (&r, as_alice, "pgp-inline", fx.input, "bob@example.org", NULL);
    g_assert_cmpint (r.status, ==, 0);
    block = mg_test_pgp_block (r.out);
    status = mg_gpg (fx.gpg, block, strlen (block), "--status-fd", "1", "-d", NULL);
    g_assert_nonnull (status);
    g_assert_nonnull (strstr (status, alice_fpr));
    g_assert_nonnull (strstr (status, "[GNUPG:] GOODSIG"));
    g_assert_nonnull (strstr (status, "Gr\xc3\xbc\xc3\x9f"
                                      "e aus K\xc3\xb6ln"));
    mg_run_clear (&r);
  }

  /* cleartext PGP/Inline: the text body verifies with gpg, each attachment beside its NAME.asc */
  {
    g_autofree char *file = NULL, *ar = NULL, *text_file = NULL, *fpr = NULL, *tfile = NULL;
    g_autoptr (GString) t = NULL;
    convert_with (&r, inline_alice, "plain", fx.input, "anyone@example.org", NULL);
    g_assert_cmpint (r.status, ==, 0);
    g_assert_nonnull (strstr (r.out, "-----BEGIN PGP SIGNED MESSAGE-----"));
    {
      g_autofree char *parts = parts_of (r.out, r.out_len);
      g_assert_nonnull (strstr (parts, "application/pgp-signature\tRésumé.bin.asc"));
      g_assert_nonnull (strstr (parts, "application/octet-stream\tRésumé.bin"));
      g_assert_nonnull (strstr (parts, "text/plain\tpart-1.txt\tiso-8859-1"));
      g_assert_nonnull (strstr (parts, "application/pgp-signature\tpart-1.txt.asc"));
    }
    file = save ("clearsigned.eml", r.out, r.out_len);
    mg_run_clear (&r);
    /* gpg checks the decoded text body */
    {
      const char *argv[] = { "python3", "-c",
                             "import email,sys; m=email.message_from_binary_file(sys.stdin.buffer); "
                             "p=next(p for p in m.walk() if p.get_content_type()=='text/plain'); "
                             "sys.stdout.buffer.write(p.get_payload(decode=True))",
                             NULL };
      gsize n;
      g_autofree char *eml = mg_test_read (file, &n);
      MgRun py;
      g_assert_true (mg_test_run (&py, argv, NULL, eml, n));
      g_assert_cmpint (py.status, ==, 0);
      text_file = mg_test_write (dir, "body.txt", py.out, (gssize) py.out_len);
      mg_run_clear (&py);
    }
    fpr = gpg_validsig (text_file, NULL);
    g_assert_cmpstr (fpr, ==, alice_fpr);
    g_clear_pointer (&fpr, g_free);
    {
      /* and the binary attachment against its Résumé.bin.asc */
      const char *argv[] = { "python3", "-c",
                             "import email,sys,os; m=email.message_from_binary_file(sys.stdin.buffer); "
                             "f={p.get_filename(): p.get_payload(decode=True) for p in m.walk() if p.get_filename()}; "
                             "open(os.path.join(sys.argv[1],'att'),'wb').write(f['R\u00e9sum\u00e9.bin']); "
                             "open(os.path.join(sys.argv[1],'att.asc'),'wb').write(f['R\u00e9sum\u00e9.bin.asc'])",
                             dir, NULL };
      gsize n;
      g_autofree char *eml = mg_test_read (file, &n);
      g_autofree char *att = g_build_filename (dir, "att", NULL), *asc = g_build_filename (dir, "att.asc", NULL);
      MgRun py;
      g_assert_true (mg_test_run (&py, argv, NULL, eml, n));
      g_assert_cmpint (py.status, ==, 0);
      mg_run_clear (&py);
      fpr = gpg_validsig (asc, att);
      g_assert_cmpstr (fpr, ==, alice_fpr);
    }
    /* our verification of a cleartext signature: pass, and fail once the text is changed */
    convert (&r, "plain", file, "anyone@example.org", NULL);
    g_assert_cmpint (r.status, ==, 0);
    ar = header (r.out, "Authentication-Results", 0);
    g_assert_true (g_str_has_prefix (ar, "gw.example; x-openpgp=pass body.openpgp-identifier=alice@example.org"));
    mg_run_clear (&r);
    g_clear_pointer (&ar, g_free);
    {
      gsize n;
      g_autofree char *eml = mg_test_read (file, &n);
      t = g_string_new_len (eml, (gssize) n);
      g_assert_cmpuint (g_string_replace (t, "attachments", "attachmentz", 1), ==, 1);
    }
    tfile = save ("clearsigned-tampered.eml", t->str, t->len);
    convert (&r, "plain", tfile, "anyone@example.org", NULL);
    g_assert_cmpint (r.status, ==, 0);
    ar = header (r.out, "Authentication-Results", 0);
    g_assert_true (g_str_has_prefix (ar, "gw.example; x-openpgp=fail reason=\"bad signature\""));
    mg_run_clear (&r);
  }

  /* an identity the gateway holds no key for: a configuration error (never unsigned), and the usage checks */
  {
    const char *nobody[] = { "--sign", "nobody@example.org", NULL };
    const char *smime_inline[] = { "--sign", "carol@example.net", "--sign-method", "smime", NULL };
    convert_with (&r, nobody, "pgp-mime", fx.input, "bob@example.org", NULL);
    g_assert_cmpint (r.status, ==, 78);
    g_assert_cmpstr (r.err, ==, "4.3.5 mimegate convert: no usable OpenPGP secret key to sign as nobody@example.org\n");
    g_assert_cmpuint (r.out_len, ==, 0);
    mg_run_clear (&r);
    convert_with (&r, nobody, "smime", fx.input, "dave@example.net", NULL);
    g_assert_cmpint (r.status, ==, 78);
    g_assert_cmpstr (r.err, ==, "4.3.5 mimegate convert: no usable X.509 private key to sign as nobody@example.org\n");
    mg_run_clear (&r);
    convert_with (&r, smime_inline, "pgp-inline", fx.input, "bob@example.org", NULL);
    g_assert_cmpint (r.status, ==, 69);
    g_assert_cmpstr (r.err, ==, "5.6.0 mimegate convert: smime signatures cannot be made in form pgp-inline\n");
    mg_run_clear (&r);
  }
  mg_test_rmtree (dir);
}

/* test_large - a 10 MB binary attachment survives PGP/MIME, S/MIME and PGP/Inline byte for byte (checked by gpg and
 * openssl); a small PGP/MIME message whose compressed content inflates past max-decompressed is refused, 5.3.4 */
static void
test_large (void)
{
  const gsize size = 10 * 1024 * 1024;
  g_autofree guint8 *bytes = g_malloc (size);
  g_autofree char *b64 = NULL, *msg = NULL, *file = NULL, *want = NULL;
  g_autoptr (GChecksum) sum = g_checksum_new (G_CHECKSUM_SHA256);
  GRand *rand = g_rand_new_with_seed (4242);
  MgRun r;

  for (gsize i = 0; i < size; i += 4) {
    guint32 v = g_rand_int (rand);
    memcpy (bytes + i, &v, 4);
  }
  g_rand_free (rand);
  g_checksum_update (sum, bytes, size);
  want = g_strdup (g_checksum_get_string (sum));
  b64 = g_base64_encode (bytes, size);
  {
    /* base64 in 76-column lines, as mail carries it */
    GString *wrapped = g_string_sized_new (strlen (b64) * 78 / 76 + 2);
    for (gsize i = 0, n = strlen (b64); i < n; i += 76) {
      g_string_append_len (wrapped, b64 + i, (gssize) MIN (76, n - i));
      g_string_append_c (wrapped, '\n');
    }
    msg =
      g_strdup_printf ("From: a@example.net\nTo: alice@example.org\nSubject: big\nMIME-Version: 1.0\n"
                       "Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\nsee attached\n"
                       "--b\nContent-Type: application/octet-stream\nContent-Disposition: attachment; "
                       "filename=big.bin\nContent-Transfer-Encoding: base64\n\n%s--b--\n",
                       wrapped->str);
    g_string_free (wrapped, TRUE);
  }
  file = save ("big.eml", msg, strlen (msg));

  convert (&r, "pgp-mime", file, "alice@example.org", NULL);
  g_assert_cmpint (r.status, ==, 0);
  {
    gsize len;
    g_autofree char *clear = gpg_decrypt (r.out, &len);
    g_autofree char *parts = leaves (clear, len);
    g_assert_nonnull (strstr (parts, want));
  }
  mg_run_clear (&r);

  convert (&r, "smime", file, "dave@example.net", NULL);
  g_assert_cmpint (r.status, ==, 0);
  {
    gsize len;
    g_autofree char *clear = mg_test_cms_decrypt (fx.ca, "dave", r.out, r.out_len, &len);
    g_autofree char *parts = leaves (clear, len);
    g_assert_nonnull (strstr (parts, want));
  }
  mg_run_clear (&r);

  convert (&r, "pgp-inline", file, "alice@example.org", NULL);
  g_assert_cmpint (r.status, ==, 0);
  {
    /* big.bin.pgp, decrypted by gpg */
    const char *argv[] = { "python3", "-c",
                           "import email,sys; m=email.message_from_binary_file(sys.stdin.buffer); "
                           "sys.stdout.buffer.write(next(p.get_payload(decode=True) for p in m.walk() "
                           "if p.get_filename()=='big.bin.pgp'))",
                           NULL };
    MgRun py;
    g_autoptr (GChecksum) got = g_checksum_new (G_CHECKSUM_SHA256);
    g_assert_true (mg_test_run (&py, argv, NULL, r.out, r.out_len));
    g_assert_cmpint (py.status, ==, 0);
    {
      g_auto (GStrv) env = mg_test_env ("GNUPGHOME", fx.gpg->home, NULL);
      const char *gpg[] = { "gpg", "--batch", "-q", "-d", NULL };
      MgRun d;
      g_assert_true (mg_test_run (&d, gpg, (const char *const *) env, py.out, py.out_len));
      g_assert_cmpint (d.status, ==, 0);
      g_checksum_update (got, (const guchar *) d.out, d.out_len);
      g_assert_cmpstr (g_checksum_get_string (got), ==, want);
      mg_run_clear (&d);
    }
    mg_run_clear (&py);
  }
  mg_run_clear (&r);

  /* a compression bomb in miniature: 8 MB of one repeated line compresses to a few kilobytes */
  {
    GString *body = g_string_new ("Content-Type: text/plain\r\n\r\n");
    g_autofree char *block = NULL, *bomb = NULL, *bomb_file = NULL, *conf = NULL;
    char *saved = fx.conf;
    g_autofree char *conf_text =
      g_strdup_printf ("[gateway]\ngnupg-home = %s\nx509-store = none\ntrust-model = always\n"
                       "max-decompressed = 1M\n",
                       fx.gpg->home);
    while (body->len < 8 * 1024 * 1024)
      g_string_append (body, "All work and no play makes Jack a dull boy.\r\n");
    block = mg_gpg (fx.gpg, body->str, body->len, "-a", "-e", "-r", "alice@example.org", "-z", "9", NULL);
    g_string_free (body, TRUE);
    g_assert_nonnull (block);
    g_assert_cmpuint (strlen (block), <, 200 * 1024);
    bomb = g_strdup_printf ("From: x@example.org\nMIME-Version: 1.0\nContent-Type: multipart/encrypted; "
                            "protocol=\"application/pgp-encrypted\"; boundary=e\n\n--e\nContent-Type: "
                            "application/pgp-encrypted\n\nVersion: 1\n--e\nContent-Type: application/octet-stream\n\n%s"
                            "--e--\n",
                            block);
    bomb_file = save ("bomb.eml", bomb, strlen (bomb));
    fx.conf = conf = mg_test_write (fx.dir, "small.conf", conf_text, -1);
    convert (&r, "plain", bomb_file, "anyone@example.org", NULL);
    fx.conf = saved;
    g_assert_cmpint (r.status, ==, 69);
    g_assert_cmpstr (r.err, ==,
                     "5.3.4 mimegate convert: refused: the decrypted content is larger than max-decompressed "
                     "(1048576 bytes)\n");
    g_assert_cmpuint (r.out_len, ==, 0);
    mg_run_clear (&r);
    /* the same for S/MIME compressed-data (RFC 3274) */
    {
      g_autofree char *script = g_test_build_filename (G_TEST_DIST, "cmscompress.py", NULL);
      const char *argv[] = { "python3", script, NULL };
      g_autofree char *zb64 = NULL, *zmsg = NULL, *zfile = NULL;
      GString *big = g_string_new ("Content-Type: text/plain\r\n\r\n");
      MgRun z;
      while (big->len < 8 * 1024 * 1024)
        g_string_append (big, "All work and no play makes Jack a dull boy.\r\n");
      g_assert_true (mg_test_run (&z, argv, NULL, big->str, big->len));
      g_string_free (big, TRUE);
      g_assert_cmpint (z.status, ==, 0);
      g_assert_cmpuint (z.out_len, <, 200 * 1024);
      zb64 = g_base64_encode ((const guchar *) z.out, z.out_len);
      mg_run_clear (&z);
      zmsg = g_strdup_printf ("From: x@example.org\nMIME-Version: 1.0\nContent-Type: application/pkcs7-mime; "
                              "smime-type=compressed-data; name=smime.p7z\nContent-Transfer-Encoding: base64\n\n%s\n",
                              zb64);
      zfile = save ("zbomb.eml", zmsg, strlen (zmsg));
      fx.conf = conf;
      convert (&r, "plain", zfile, "anyone@example.org", NULL);
      fx.conf = saved;
      g_assert_cmpint (r.status, ==, 69);
      g_assert_cmpstr (r.err, ==,
                       "5.3.4 mimegate convert: refused: the decrypted content is larger than max-decompressed "
                       "(1048576 bytes)\n");
      mg_run_clear (&r);
    }
    /* with the default limit the same message converts */
    convert (&r, "plain", bomb_file, "anyone@example.org", NULL);
    g_assert_cmpint (r.status, ==, 0);
    g_assert_cmpuint (r.out_len, >, 7 * 1024 * 1024); /* LF line ends now */
    mg_run_clear (&r);
  }
}

#define MARKER "MATRIX-MARKER-7f3a"

/* kind_message - a message of @kind made with the fixture's keys (alice's OpenPGP key, carol's certificate: the
 * gateway holds both), its text carrying MARKER */
static char *
kind_message (const char *kind)
{
  const char *head = "From: Sender <sender@example.net>\nTo: Alice <alice@example.org>\nSubject: matrix\n"
                     "MIME-Version: 1.0\n";
  const char *entity = "Content-Type: text/plain; charset=us-ascii\r\n\r\nHello " MARKER "\r\n";
  g_autofree char *carol = mg_ca_path (fx.ca, "carol", ".pem");
  g_autofree char *carol_key = mg_ca_path (fx.ca, "carol", ".key");
  gsize n;

  if (g_str_equal (kind, "plain"))
    return g_strdup_printf ("%sContent-Type: text/plain\n\nHello %s\n", head, MARKER);
  if (g_str_equal (kind, "pgp-mime-encrypted") || g_str_equal (kind, "pgp-mime-mangled")) {
    g_autofree char *armored = mg_gpg (fx.gpg, entity, strlen (entity), "-a", "-e", "-r", "alice@example.org", NULL);
    if (g_str_equal (kind, "pgp-mime-encrypted"))
      return g_strdup_printf ("%sContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; "
                              "boundary=e\n\n--e\nContent-Type: application/pgp-encrypted\n\nVersion: 1\n--e\n"
                              "Content-Type: application/octet-stream\n\n%s\n--e--\n",
                              head, armored);
    return g_strdup_printf ("%sContent-Type: multipart/mixed; boundary=m\n\n--m\nContent-Type: text/plain\n\n\n--m\n"
                            "Content-Type: application/pgp-encrypted\n\nVersion: 1\n--m\nContent-Type: "
                            "application/octet-stream; name=encrypted.asc\nContent-Disposition: attachment; "
                            "filename=encrypted.asc\n\n%s\n--m--\n",
                            head, armored);
  }
  if (g_str_equal (kind, "pgp-mime-signed")) {
    /* the signed content ends before the CRLF that belongs to the boundary (RFC 2046 section 5.1.1) */
    g_autofree char *sig =
      mg_gpg (fx.gpg, entity, strlen (entity) - 2, "-a", "--detach-sign", "-u", "alice@example.org", NULL);
    return g_strdup_printf ("%sContent-Type: multipart/signed; protocol=\"application/pgp-signature\"; "
                            "micalg=pgp-sha256; boundary=s\n\n--s\nContent-Type: text/plain; charset=us-ascii\n\n"
                            "Hello %s\n--s\nContent-Type: application/pgp-signature\n\n%s\n--s--\n",
                            head, MARKER, sig);
  }
  if (g_str_equal (kind, "pgp-inline-encrypted")) {
    g_autofree char *armored =
      mg_gpg (fx.gpg, "Hello " MARKER "\n", strlen (MARKER) + 7, "-a", "-e", "-r", "alice@example.org", NULL);
    return g_strdup_printf ("%sContent-Type: text/plain\n\n%s", head, armored);
  }
  if (g_str_equal (kind, "pgp-inline-signed")) {
    g_autofree char *clear =
      mg_gpg (fx.gpg, "Hello " MARKER "\n", strlen (MARKER) + 7, "--clearsign", "-u", "alice@example.org", NULL);
    return g_strdup_printf ("%sContent-Type: text/plain\n\n%s", head, clear);
  }
  if (g_str_equal (kind, "pgp-inline-key")) {
    g_autofree char *key = mg_gpg (fx.gpg, NULL, 0, "-a", "--export", "alice@example.org", NULL);
    return g_strdup_printf ("%sContent-Type: text/plain\n\nHello %s, my key:\n\n%s", head, MARKER, key);
  }
  if (g_str_equal (kind, "pgp-attachment-encrypted")) {
    g_autofree char *b64 = NULL;
    g_auto (GStrv) env = mg_test_env ("GNUPGHOME", fx.gpg->home, NULL);
    const char *argv[] = { "gpg", "--batch", "-e", "-r", "alice@example.org", "-o", "-", NULL };
    MgRun r;
    g_assert_true (mg_test_run (&r, argv, (const char *const *) env, "Hello " MARKER "\n", strlen (MARKER) + 7));
    g_assert_cmpint (r.status, ==, 0);
    b64 = g_base64_encode ((const guchar *) r.out, r.out_len);
    mg_run_clear (&r);
    return g_strdup_printf ("%sContent-Type: multipart/mixed; boundary=m\n\n--m\nContent-Type: text/plain\n\nsee the "
                            "attachment\n--m\nContent-Type: application/octet-stream\nContent-Disposition: "
                            "attachment; filename=secret.txt.pgp\nContent-Transfer-Encoding: base64\n\n%s\n--m--\n",
                            head, b64);
  }
  if (g_str_equal (kind, "smime-enveloped")) {
    g_autofree char *out =
      mg_ca_openssl (fx.ca, entity, strlen (entity), &n, "cms", "-encrypt", "-aes256", carol, NULL);
    return g_strdup_printf ("From: Sender <sender@example.net>\nTo: Carol <carol@example.net>\nSubject: matrix\n%s",
                            out);
  }
  if (g_str_equal (kind, "smime-signed-opaque") || g_str_equal (kind, "smime-signed-detached")) {
    gboolean opaque = g_str_equal (kind, "smime-signed-opaque");
    g_autofree char *out = mg_ca_openssl (fx.ca, entity, strlen (entity), &n, "cms", "-sign", "-signer", carol,
                                          "-inkey", carol_key, opaque ? "-nodetach" : "-binary", NULL);
    return g_strdup_printf ("From: Carol <carol@example.net>\nTo: Alice <alice@example.org>\nSubject: matrix\n%s", out);
  }
  if (g_str_equal (kind, "smime-compressed")) {
    g_autofree char *script = g_test_build_filename (G_TEST_DIST, "cmscompress.py", NULL);
    const char *argv[] = { "python3", script, NULL };
    g_autofree char *b64 = NULL;
    MgRun r;
    g_assert_true (mg_test_run (&r, argv, NULL, entity, strlen (entity)));
    g_assert_cmpint (r.status, ==, 0);
    b64 = g_base64_encode ((const guchar *) r.out, r.out_len);
    mg_run_clear (&r);
    return g_strdup_printf ("%sContent-Type: application/pkcs7-mime; smime-type=compressed-data; name=smime.p7z\n"
                            "Content-Transfer-Encoding: base64\n\n%s\n",
                            head, b64);
  }
  g_assert_not_reached ();
}

/* open_as_recipient - opener.py's layers and verdict for @msg, with the fixture's OpenPGP home and @who's key */
static char *
open_as_recipient (const char *msg, gsize len, const char *who)
{
  g_autofree char *script = g_test_build_filename (G_TEST_DIST, "opener.py", NULL);
  g_autofree char *key = mg_ca_path (fx.ca, who, ".key");
  g_autofree char *crt = mg_ca_path (fx.ca, who, ".pem");
  g_auto (GStrv) env = mg_test_env ("GNUPGHOME", fx.gpg->home, "CMS_KEY", key, "CMS_CERT", crt, NULL);
  const char *argv[] = { "python3", script, MARKER, NULL };
  MgRun r;
  char *out;

  g_assert_true (mg_test_run (&r, argv, (const char *const *) env, msg, len));
  if (r.status != 0)
    g_error ("opener.py: %s", r.err);
  out = g_strdelimit (g_strstrip (g_steal_pointer (&r.out)), "\n", '|');
  mg_run_clear (&r);
  return out;
}

static void test_matrix (void);

/* test_matrix_gpg - the matrix again with openpgp-encrypt = gpg (meson's first run of this file has it with rnp:
 * librnp in-process) */
static void
test_matrix_gpg (void)
{
  char *saved = fx.conf;
  g_autofree char *text =
    g_strdup_printf ("[gateway]\ngnupg-home = %s\nx509-store = %s\ntrust-model = always\nauthserv-id = gw.example\n%s",
                     fx.gpg->home, fx.store, engine_line ("gpg"));
  g_autofree char *conf = mg_test_write (fx.dir, "gpg.conf", text, -1);

  fx.conf = conf;
  test_matrix ();
  fx.conf = saved;
}

/* test_matrix - every kind detection reports, converted to every form, opened by gpg/openssl as the recipient
 * would: the text arrives, through exactly the layers the form promises */
static void
test_matrix (void)
{
  const char *kinds[MG_KIND_COUNT];
  const struct {
    const char *form, *rcpt, *who;
  } forms[] = { { "keep", "anyone@example.org", "carol" },
                { "plain", "anyone@example.org", "carol" },
                { "pgp-mime", "bob@example.org", "carol" },
                { "pgp-inline", "bob@example.org", "carol" },
                { "smime", "dave@example.net", "dave" } };

  for (gsize k = 0; k < G_N_ELEMENTS (kinds); k++)
    kinds[k] = mg_kind_name ((MgKind) k); /* every kind detection reports */
  for (gsize k = 0; k < G_N_ELEMENTS (kinds); k++) {
    g_autofree char *msg = kind_message (kinds[k]);
    g_autofree char *file = NULL, *name = g_strconcat ("matrix-", kinds[k], ".eml", NULL);
    g_autoptr (GString) row = g_string_new (kinds[k]);
    file = save (name, msg, strlen (msg));
    {
      /* the sample is what it claims to be */
      const char *argv[] = { mg_test_mimegate (), "inspect", "--json", file, NULL };
      MgRun r;
      g_autofree char *want = g_strdup_printf ("\"kind\":\"%s\"", kinds[k]);
      g_assert_true (mg_test_run (&r, argv, NULL, NULL, 0));
      g_assert_nonnull (strstr (r.out, want));
      mg_run_clear (&r);
    }
    for (gsize f = 0; f < G_N_ELEMENTS (forms); f++) {
      g_autofree char *opened = NULL;
      MgRun r;
      convert (&r, forms[f].form, file, forms[f].rcpt, NULL);
      if (r.status != 0)
        g_error ("%s → %s: %d %s", kinds[k], forms[f].form, r.status, r.err);
      opened = open_as_recipient (r.out, r.out_len, forms[f].who);
      g_string_append_printf (row, " | %s: %s", forms[f].form, opened);
      if (!g_str_has_suffix (opened, "found"))
        g_error ("%s (%s)", row->str, r.out);
      if (strstr (kinds[k], "-signed") != NULL) {
        /* the sender's signature, verified and stamped on every path */
        g_autofree char *ar = header (r.out, "Authentication-Results", 0);
        if (g_str_equal (forms[f].form, "keep") || g_str_equal (forms[f].form, "plain"))
          g_assert_true (g_str_has_prefix (ar, g_str_has_prefix (kinds[k], "pgp") ? "gw.example; x-openpgp=pass"
                                                                                  : "gw.example; smime=pass"));
        else
          g_assert_nonnull (strstr (ar, "=pass "));
      }
      if (g_str_equal (forms[f].form, "keep")) {
        /* as it came, but perhaps for our stamp on top */
        const char *body =
          g_str_has_prefix (r.out, "Authentication-Results: gw.example; ") ? strchr (r.out, '\n') + 1 : r.out;
        g_assert_cmpstr (body, ==, msg);
      } else if (g_str_equal (forms[f].form, "plain"))
        g_assert_cmpstr (opened, ==, "found"); /* nothing left to open */
      else if (g_str_equal (forms[f].form, "pgp-mime")) {
        g_assert_true (g_str_has_prefix (opened, "gpg|") || g_str_has_prefix (opened, "gpg "));
        g_assert_nonnull (strstr (r.out, "Content-Type: multipart/encrypted"));
        g_assert_null (strstr (opened, "cms-decrypt"));
      } else if (g_str_equal (forms[f].form, "pgp-inline")) {
        g_assert_true (g_str_has_prefix (opened, "gpg"));
        g_assert_null (strstr (r.out, "multipart/encrypted"));
        g_assert_null (strstr (opened, "cms-decrypt"));
      } else {
        g_assert_true (g_str_has_prefix (opened, "cms-decrypt"));
        g_assert_null (strstr (opened, "gpg"));
      }
      if (!g_str_equal (forms[f].form, "keep") && !g_str_equal (forms[f].form, "plain"))
        g_assert_null (strstr (r.out, MARKER)); /* never in clear where encryption was asked for */
      mg_run_clear (&r);
    }
    g_test_message ("%s", row->str);
  }
}

/* real-world signatures: Thunderbird's S/MIME (SHA-256 detached, tampered, opaque) against its test CA, and the
 * protected-headers draft's PGP/MIME signature by Alice */
static void
test_corpus_signatures (void)
{
  const char *corpus = mg_test_corpus ();
  g_autofree char *dir = NULL, *store = NULL, *conf_text = NULL, *alice = NULL, *imported = NULL;
  char *saved_conf; /* fx.conf, put back at the end */
  MgGpg *home;
  struct {
    const char *file;
    const char *want;
  } cases[] = {
    { "thunderbird/smime/alice.dsig.SHA256.multipart.eml",
      "gw.example; smime=pass body.smime-identifier=Alice@example.com" },
    { "thunderbird/smime/alice.dsig.SHA256.multipart.bad.eml", "gw.example; smime=fail reason=\"bad signature\"" },
    { "thunderbird/smime/alice.sig.SHA256.opaque.eml",
      "gw.example; smime=pass body.smime-identifier=Alice@example.com" },
    { "autocrypt-protected-headers/pgpmime-signed.eml",
      "gw.example; x-openpgp=pass body.openpgp-identifier=alice@openpgp.example body.openpgp-fingerprint=" },
  };

  if (corpus == NULL) {
    g_test_skip ("../shared/corpus is not beside the checkout");
    return;
  }
  home = mg_gpg_new ();
  alice = g_build_filename (corpus, "autocrypt-protected-headers", "alice@openpgp.example.pub.asc", NULL);
  imported = mg_gpg (home, NULL, 0, "--import", alice, NULL);
  g_assert_nonnull (imported);
  dir = mg_test_tmpdir ();
  store = g_build_filename (dir, "ca", NULL);
  g_mkdir (store, 0700);
  {
    g_autofree char *src = g_build_filename (corpus, "thunderbird", "smime", "TestCA.pem", NULL);
    gsize len;
    g_autofree char *data = mg_test_read (src, &len);
    g_free (mg_test_write (store, "TestCA.pem", data, (gssize) len));
  }
  conf_text = g_strdup_printf ("[gateway]\ngnupg-home = %s\nx509-store = %s\ntrust-model = always\n"
                               "authserv-id = gw.example\n",
                               home->home, dir);
  saved_conf = fx.conf;
  fx.conf = mg_test_write (dir, "m.conf", conf_text, -1);
  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++) {
    g_autofree char *path = g_build_filename (corpus, cases[i].file, NULL);
    g_autofree char *ar = NULL;
    MgRun r;
    convert (&r, "plain", path, "anyone@example.org", NULL);
    g_test_message ("%s: %d %s", cases[i].file, r.status, r.err);
    g_assert_cmpint (r.status, ==, 0);
    ar = header (r.out, "Authentication-Results", 0);
    g_test_message ("  %s", ar);
    g_assert_nonnull (ar);
    g_assert_true (g_str_has_prefix (ar, cases[i].want));
    if (strstr (cases[i].file, "opaque"))
      g_assert_null (strstr (r.out, "application/pkcs7-mime")); /* opened for delivery and scanning */
    mg_run_clear (&r);
  }
  g_free (fx.conf);
  fx.conf = saved_conf;
  mg_gpg_free (home);
  mg_test_rmtree (dir);
}

/* corpus samples the gateway holds keys for decrypt to their known content (.inner files) */
static void
test_corpus (void)
{
  const char *corpus = mg_test_corpus ();
  g_autofree char *conf = NULL, *store = NULL, *p12 = NULL, *key = NULL, *imported = NULL;
  char *saved_conf; /* fx.conf, put back at the end */
  MgGpg *bob;
  const char *pgp[] = { "pgpmime-enc+legacy-disp", "pgpmime-layered", "pgpmime-sign+enc" };
  const char *smime[] = { "smime-enc+legacy-disp", "smime-sign+enc" };

  if (corpus == NULL) {
    g_test_skip ("../shared/corpus is not beside the checkout");
    return;
  }
  bob = mg_gpg_new ();
  key = g_build_filename (corpus, "autocrypt-protected-headers", "bob@openpgp.example.sec.asc", NULL);
  imported = mg_gpg (bob, NULL, 0, "--import", key, NULL);
  g_assert_nonnull (imported);
  store = g_build_filename (bob->home, "x509", NULL);
  {
    g_autofree char *priv = g_build_filename (store, "private", NULL);
    g_autofree char *src = g_build_filename (corpus, "autocrypt-protected-headers", "bob.p12", NULL);
    gsize len;
    g_autofree char *data = mg_test_read (src, &len);
    g_mkdir_with_parents (priv, 0700);
    p12 = mg_test_write (priv, "bob.p12", data, (gssize) len);
    g_free (mg_test_write (bob->home, "pass", "bob\n", -1));
  }
  conf = g_strdup_printf ("[gateway]\ngnupg-home = %s\nx509-store = %s\ntrust-model = always\n"
                          "x509-passphrase-file = %s/pass\n",
                          bob->home, store, bob->home);
  saved_conf = fx.conf;
  fx.conf = mg_test_write (bob->home, "m.conf", conf, -1);
  for (gsize i = 0; i < G_N_ELEMENTS (pgp) + G_N_ELEMENTS (smime); i++) {
    const char *name = i < G_N_ELEMENTS (pgp) ? pgp[i] : smime[i - G_N_ELEMENTS (pgp)];
    g_autofree char *eml_name = g_strconcat (name, ".eml", NULL);
    /* plain opens opaque S/MIME signatures too: sign+enc S/MIME ends at the corpus's second layer (.inner.inner) */
    g_autofree char *inner_name =
      g_strconcat (name, g_strcmp0 (name, "smime-sign+enc") == 0 ? ".inner.inner" : ".inner", NULL);
    g_autofree char *eml = g_build_filename (corpus, "autocrypt-protected-headers", eml_name, NULL);
    g_autofree char *inner = g_build_filename (corpus, "autocrypt-protected-headers", inner_name, NULL);
    gsize len;
    g_autofree char *want_data = mg_test_read (inner, &len);
    g_autofree char *want = leaves (want_data, len);
    g_autofree char *got = NULL;
    MgRun r;
    convert (&r, "plain", eml, "bob@openpgp.example", NULL);
    g_test_message ("%s: %d %s", name, r.status, r.err);
    g_assert_cmpint (r.status, ==, 0);
    got = leaves (r.out, r.out_len);
    /* RFC 9788 4.5.3: the delivered header shows the protected Subject, so the legacy display part in front of the
     * body (its first leaf, text/plain without a charset) is gone */
    if (strstr (name, "legacy-disp") != NULL) {
      g_assert_true (g_str_has_prefix (want, "text/plain\t-\t-\t"));
      g_assert_cmpstr (got, ==, strchr (want, '\n') + 1);
    } else
      g_assert_cmpstr (got, ==, want);
    mg_run_clear (&r);
  }
  g_free (fx.conf);
  fx.conf = saved_conf;
  mg_gpg_free (bob);
}

int
main (int argc, char **argv)
{
  int status;

  g_test_init (&argc, &argv, NULL);
  if (!mg_test_have_program ("gpg") || !mg_test_have_program ("openssl") || !mg_test_have_program ("python3"))
    return 77;
  setup ();
  g_test_add_func ("/convert/plain-to-pgp-mime", test_plain_to_pgp_mime);
  g_test_add_func ("/convert/plain-to-smime", test_plain_to_smime);
  g_test_add_func ("/convert/round-trips", test_round_trips);
  g_test_add_func ("/convert/aes-gcm", test_aes_gcm);
  g_test_add_func ("/convert/refusals", test_refusals);
  g_test_add_func ("/convert/to-pgp-inline", test_to_pgp_inline);
  g_test_add_func ("/convert/html-only-to-pgp-inline", test_html_only_to_inline);
  g_test_add_func ("/convert/inline-efail-split", test_inline_efail_split);
  g_test_add_func ("/convert/mangled-repair", test_mangled_repair);
  g_test_add_func ("/convert/output-file-and-stores", test_output_file_and_stores);
  g_test_add_func ("/convert/signatures", test_signatures);
  g_test_add_func ("/convert/signing", test_signing);
  g_test_add_func ("/convert/large", test_large);
  g_test_add_func ("/convert/matrix", test_matrix);
  g_test_add_func ("/convert/matrix-gpg", test_matrix_gpg);
  g_test_add_func ("/convert/corpus-signatures", test_corpus_signatures);
  g_test_add_func ("/convert/corpus", test_corpus);
  status = g_test_run ();
  mg_gpg_free (fx.gpg);
  mg_gpg_free (fx.other);
  mg_ca_free (fx.ca);
  mg_test_rmtree (fx.dir);
  g_free (fx.dir);
  g_free (fx.store);
  g_free (fx.conf);
  g_free (fx.input);
  g_free (fx.input_parts);
  return status;
}
