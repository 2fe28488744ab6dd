/* test-signatures.c - inbound signatures as the gateway stamps them (RFC 8601 Authentication-Results).
 *
 * Detached signatures (RFC 1847, RFC 3156 section 5, RFC 8551 section 3.5) are checked over the first part exactly
 * as it arrived: the messages here are written by hand as bytes, in the layouts GMime does not write back as they
 * came (a multipart first part whose close-delimiter is followed by an epilogue, by empty lines, or directly by the
 * outer delimiter), signed by gpg and by openssl over those exact bytes (CRLF-canonical); gpg --verify (on
 * signedparts.py's independent split) and openssl cms -verify (on the message itself) accept each one before the
 * gateway is asked. Signatures inside OpenPGP encryption — signed and encrypted in one message (RFC 3156 section 6.2,
 * `gpg -s -e`), multipart/signed inside multipart/encrypted (section 6.1) and PGP/Inline armor that is signed and
 * encrypted — are stamped on the outer header of the result, whatever the form. */
#include "config.h"

#include <string.h>

#include "testutil.h"

typedef struct {
  MgGpg *gpg;   /* the gateway's home: alice and bob, with secret keys */
  MgGpg *other; /* a stranger's home, which knows alice's public key */
  MgCa *ca;     /* carol signs, dave receives S/MIME */
  char *dir;
  char *conf;
  char *alice_fpr;
  char *pgp_pass;   /* the stamp a good signature by alice gets */
  char *smime_pass; /* the stamp a good signature by carol gets */
} Fixture;

static Fixture fx;

/* crlf - @s with every bare LF made CRLF, as a signer canonicalises it */
static char *
crlf (const char *s)
{
  GString *out = g_string_new (NULL);

  for (const char *c = s; *c; c++) {
    if (*c == '\n' && (c == s || c[-1] != '\r'))
      g_string_append_c (out, '\r');
    g_string_append_c (out, *c);
  }
  return g_string_free (out, FALSE);
}

/* eol - @s (written with LF) with @nl line ends */
static char *
eol (const char *s, const char *nl)
{
  g_autoptr (GString) out = g_string_new (s);

  if (strcmp (nl, "\n") != 0)
    g_string_replace (out, "\n", nl, 0);
  return g_strdup (out->str);
}

/* header - the value of the @nth @name field of @msg's header block (unfolded, CR dropped), or NULL */
static char *
header (const char *msg, const char *name, guint nth)
{
  g_autofree char *lf = g_strdup (msg);
  g_auto (GStrv) lines = NULL;
  g_autofree char *prefix = g_strdup_printf ("%s: ", name);
  guint seen = 0;
  char *w = lf;

  for (const char *c = msg; *c; c++)
    if (*c != '\r')
      *w++ = *c;
  *w = '\0';
  lines = g_strsplit (lf, "\n", -1);
  for (guint i = 0; lines[i] && lines[i][0]; i++) {
    GString *v;
    if (g_ascii_strncasecmp (lines[i], prefix, strlen (prefix)) != 0 || seen++ < nth)
      continue;
    v = g_string_new (lines[i] + strlen (prefix));
    for (guint k = i + 1; lines[k] && (lines[k][0] == ' ' || lines[k][0] == '\t'); k++)
      g_string_append_printf (v, " %s", g_strstrip (lines[k]));
    return g_string_free (v, FALSE);
  }
  return NULL;
}

/* convert - mimegate convert -c CONF --to FORM -r RCPT FILE */
static void
convert (MgRun *r, const char *form, const char *file, const char *rcpt)
{
  const char *argv[] = { mg_test_mimegate (), "convert", "-c", fx.conf, "--to", form, "-r", rcpt, file, NULL };
  g_auto (GStrv) env = mg_test_env ("LANGUAGE", NULL, "LC_ALL", "C.UTF-8", NULL);

  g_assert_true (mg_test_run (r, argv, (const char *const *) env, NULL, 0));
}

static void
setup (void)
{
  g_autofree char *store = NULL, *conf = NULL, *alice_pub = NULL, *imported = NULL, *serial = NULL;

  fx.gpg = mg_gpg_new ();
  g_assert_true (mg_gpg_add_key (fx.gpg, "alice@example.org", "ed25519"));
  g_assert_true (mg_gpg_add_key (fx.gpg, "bob@example.org", "rsa2048"));
  fx.other = mg_gpg_new ();
  g_assert_true (mg_gpg_add_key (fx.other, "stranger@example.org", "ed25519"));
  alice_pub = mg_gpg (fx.gpg, NULL, 0, "--export", "-a", "alice@example.org", NULL);
  g_assert_nonnull (alice_pub);
  imported = mg_gpg (fx.other, alice_pub, strlen (alice_pub), "--import", NULL);
  g_assert_nonnull (imported);
  fx.ca = mg_ca_new ();
  g_assert_true (mg_ca_add_leaf (fx.ca, "carol", "carol@example.net"));
  g_assert_true (mg_ca_add_leaf (fx.ca, "dave", "dave@example.net"));
  fx.dir = mg_test_tmpdir ();
  store =
    mg_ca_store (fx.ca, fx.dir, (const char *const[]){ "carol", "dave", NULL }, (const char *const[]){ "carol", NULL });
  conf =
    g_strdup_printf ("[gateway]\ngnupg-home = %s\nx509-store = %s\ntrust-model = always\nauthserv-id = gw.example\n",
                     fx.gpg->home, store);
  fx.conf = mg_test_write (fx.dir, "mimegate.conf", conf, -1);
  fx.alice_fpr = mg_gpg_fingerprint (fx.gpg, "alice@example.org");
  fx.pgp_pass = g_strdup_printf (
    "gw.example; x-openpgp=pass body.openpgp-identifier=alice@example.org body.openpgp-fingerprint=%s", fx.alice_fpr);
  serial = mg_ca_serial (fx.ca, "carol");
  fx.smime_pass =
    g_strdup_printf ("gw.example; smime=pass body.smime-identifier=carol@example.net body.smime-serial=%s", serial + 2);
}

static void
teardown (void)
{
  mg_gpg_free (fx.gpg);
  mg_gpg_free (fx.other);
  mg_ca_free (fx.ca);
  mg_test_rmtree (fx.dir);
  g_free (fx.dir);
  g_free (fx.conf);
  g_free (fx.alice_fpr);
  g_free (fx.pgp_pass);
  g_free (fx.smime_pass);
}

/* ---- item 2: the signed part as it arrived ---- */

/* Layout - how the first part (a multipart/mixed) ends before the outer delimiter line: the text after its
 * close-delimiter, up to the line break that belongs to the outer delimiter */
typedef struct {
  const char *name;
  const char *after_close;
} Layout;

static const Layout layouts[] = {
  { "epilogue", "\nThis is the inner epilogue." },
  { "epilogue-then-empty-line", "\nThis is the inner epilogue.\n" },
  { "one-empty-line", "\n" },
  { "two-empty-lines", "\n\n" },
  { "outer-delimiter-directly", "" },
};

/* first_part - the signed part of @layout, with LF line ends and without the line break before the delimiter */
static char *
first_part (const Layout *layout)
{
  return g_strdup_printf ("Content-Type: multipart/mixed; boundary=\"inner\"\n"
                          "\n"
                          "This is the inner preamble.\n"
                          "--inner\n"
                          "Content-Type: text/plain; charset=us-ascii\n"
                          "\n"
                          "Signed text, laid out as %s.\n"
                          "--inner\n"
                          "Content-Type: text/plain; charset=us-ascii\n"
                          "Content-Disposition: attachment; filename=\"note.txt\"\n"
                          "\n"
                          "A second signed leaf.\n"
                          "--inner--%s",
                          layout->name, layout->after_close);
}

/* pgp_signed - multipart/signed (RFC 3156 section 5) around @part with alice's detached signature over it */
static char *
pgp_signed (const char *part, const char *nl)
{
  g_autofree char *canonical = crlf (part);
  g_autofree char *sig = mg_gpg (fx.gpg, canonical, strlen (canonical), "--armor", "--detach-sign", "--digest-algo",
                                 "SHA256", "-u", fx.alice_fpr, NULL);
  g_autofree char *msg = NULL;

  g_assert_nonnull (sig);
  g_strchomp (sig);
  msg = g_strdup_printf ("From: Alice <alice@example.org>\n"
                         "To: Someone <someone@example.org>\n"
                         "Subject: signed by gpg\n"
                         "Message-ID: <layout-pgp@example.org>\n"
                         "MIME-Version: 1.0\n"
                         "Content-Type: multipart/signed; protocol=\"application/pgp-signature\"; micalg=pgp-sha256;\n"
                         " boundary=\"outer\"\n"
                         "\n"
                         "This is an OpenPGP/MIME signed message (RFC 3156).\n"
                         "--outer\n"
                         "%s\n"
                         "--outer\n"
                         "Content-Type: application/pgp-signature; name=\"signature.asc\"\n"
                         "Content-Description: OpenPGP digital signature\n"
                         "\n"
                         "%s\n"
                         "--outer--\n"
                         "This is the outer epilogue.\n",
                         part, sig);
  return eol (msg, nl);
}

/* smime_signed - multipart/signed (RFC 8551 section 3.5) around @part with carol's detached signature over it */
static char *
smime_signed (const char *part, const char *nl)
{
  g_autofree char *canonical = crlf (part);
  g_autofree char *carol = mg_ca_path (fx.ca, "carol", ".pem");
  g_autofree char *carol_key = mg_ca_path (fx.ca, "carol", ".key");
  gsize n;
  g_autofree char *der = mg_ca_openssl (fx.ca, canonical, strlen (canonical), &n, "cms", "-sign", "-binary", "-outform",
                                        "DER", "-md", "sha256", "-signer", carol, "-inkey", carol_key, NULL);
  g_autofree char *b64 = NULL, *msg = NULL;
  g_autoptr (GString) folded = g_string_new (NULL);

  g_assert_nonnull (der);
  b64 = g_base64_encode ((const guchar *) der, n);
  for (gsize i = 0, len = strlen (b64); i < len; i += 76)
    g_string_append_printf (folded, "%s%.76s", i ? "\n" : "", b64 + i);
  msg = g_strdup_printf ("From: Carol <carol@example.net>\n"
                         "To: Someone <someone@example.org>\n"
                         "Subject: signed by openssl\n"
                         "Message-ID: <layout-smime@example.net>\n"
                         "MIME-Version: 1.0\n"
                         "Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256;\n"
                         "\tboundary=\"outer\"\n"
                         "\n"
                         "This is an S/MIME signed message.\n"
                         "--outer\n"
                         "%s\n"
                         "--outer\n"
                         "Content-Type: application/pkcs7-signature; name=\"smime.p7s\"\n"
                         "Content-Transfer-Encoding: base64\n"
                         "Content-Disposition: attachment; filename=\"smime.p7s\"\n"
                         "\n"
                         "%s\n"
                         "--outer--\n",
                         part, folded->str);
  return eol (msg, nl);
}

/* independent_check - gpg (over signedparts.py's split) or openssl (over the whole message) accepts @msg's
 * signature, and the split's content is exactly @canonical */
static void
independent_check (const char *msg, const char *canonical, gboolean smime)
{
  g_autofree char *dir = mg_test_tmpdir ();

  if (smime) {
    g_autofree char *root = mg_ca_path (fx.ca, "root", ".pem");
    gsize n;
    g_autofree char *out = mg_ca_openssl (fx.ca, msg, strlen (msg), &n, "cms", "-verify", "-CAfile", root, NULL);
    g_assert_nonnull (out);
    g_assert_nonnull (strstr (out, "Signed text, laid out as "));
  } else {
    g_autofree char *script = g_test_build_filename (G_TEST_DIST, "signedparts.py", NULL);
    g_autofree char *content = g_build_filename (dir, "content", NULL);
    g_autofree char *signature = g_build_filename (dir, "signature", NULL);
    g_autofree char *status = NULL, *split = NULL;
    const char *argv[] = { "python3", script, dir, NULL };
    gsize n;
    MgRun r;
    g_assert_true (mg_test_run (&r, argv, NULL, msg, strlen (msg)));
    g_assert_cmpint (r.status, ==, 0);
    mg_run_clear (&r);
    split = mg_test_read (content, &n);
    g_assert_cmpmem (split, n, canonical, strlen (canonical));
    status = mg_gpg (fx.gpg, NULL, 0, "--status-fd", "1", "--verify", signature, content, NULL);
    g_assert_nonnull (status);
    {
      g_autofree char *want = g_strdup_printf ("[GNUPG:] VALIDSIG %s ", fx.alice_fpr);
      g_assert_nonnull (strstr (status, want));
    }
  }
  mg_test_rmtree (dir);
}

/* stamp_of - the gateway's verdict on @msg in @form: its Authentication-Results value. The result must be the message
 * byte for byte below that one new field, for keep and for plain too (nothing to open), so that the recipient's own
 * check of the signature (the independent one above) still holds. */
static char *
stamp_of (const char *msg, const char *form, const char *name)
{
  g_autofree char *file = mg_test_write (fx.dir, name, msg, -1);
  MgRun r;
  char *ar;

  convert (&r, form, file, "someone@example.org");
  g_assert_cmpint (r.status, ==, 0);
  g_assert_cmpstr (r.err, ==, "");
  ar = header (r.out, "Authentication-Results", 0);
  g_assert_nonnull (ar);
  g_assert_null (header (r.out, "Authentication-Results", 1));
  {
    const char *nl = strstr (msg, "\r\n") ? "\r\n" : "\n";
    g_autofree char *want = g_strdup_printf ("Authentication-Results: %s%s%s", ar, nl, msg);
    g_assert_cmpstr (r.out, ==, want);
  }
  mg_run_clear (&r);
  return ar;
}

/* layouts: each layout, LF and CRLF, by gpg and by openssl: pass on keep and plain; one byte changed: fail */
static void
test_layouts (void)
{
  const char *const eols[] = { "\n", "\r\n" };
  const char *const forms[] = { "keep", "plain" };

  for (guint l = 0; l < G_N_ELEMENTS (layouts); l++)
    for (guint e = 0; e < G_N_ELEMENTS (eols); e++)
      for (int smime = 0; smime <= 1; smime++) {
        g_autofree char *part = first_part (&layouts[l]);
        g_autofree char *canonical = crlf (part);
        g_autofree char *msg = smime ? smime_signed (part, eols[e]) : pgp_signed (part, eols[e]);
        g_autoptr (GString) tampered = g_string_new (msg);
        g_autofree char *name =
          g_strdup_printf ("%s-%s-%s.eml", layouts[l].name, e ? "crlf" : "lf", smime ? "smime" : "pgp");
        g_test_message ("layout %s, %s line ends, signed by %s", layouts[l].name, e ? "CRLF" : "LF",
                        smime ? "openssl" : "gpg");
        independent_check (msg, canonical, smime);
        g_assert_cmpuint (g_string_replace (tampered, "A second signed leaf.", "A second signed leaf!", 1), ==, 1);
        for (guint f = 0; f < G_N_ELEMENTS (forms); f++) {
          g_autofree char *ar = stamp_of (msg, forms[f], name);
          g_autofree char *bad = stamp_of (tampered->str, forms[f], name);
          g_assert_cmpstr (ar, ==, smime ? fx.smime_pass : fx.pgp_pass);
          g_assert_true (g_str_has_prefix (bad, smime ? "gw.example; smime=fail reason=\"bad signature\""
                                                      : "gw.example; x-openpgp=fail reason=\"bad signature\""));
        }
      }
}

/* ---- item 3: signatures inside OpenPGP encryption ---- */

static const char sealed_entity[] = "Content-Type: text/plain; charset=utf-8\r\n"
                                    "\r\n"
                                    "Signed and encrypted in one OpenPGP message.\r\n";

/* pgp_mime_message - RFC 3156 section 4 multipart/encrypted around @armor, written as a client would */
static char *
pgp_mime_message (const char *armor, const char *subject)
{
  return g_strdup_printf ("From: Alice <alice@example.org>\n"
                          "To: Alice <alice@example.org>\n"
                          "Subject: %s\n"
                          "Message-ID: <sealed@example.org>\n"
                          "Authentication-Results: gw.example; x-openpgp=pass body.openpgp-identifier=ceo@example.org\n"
                          "MIME-Version: 1.0\n"
                          "Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; "
                          "boundary=\"enc\"\n"
                          "\n"
                          "--enc\n"
                          "Content-Type: application/pgp-encrypted\n"
                          "\n"
                          "Version: 1\n"
                          "\n"
                          "--enc\n"
                          "Content-Type: application/octet-stream; name=\"encrypted.asc\"\n"
                          "\n"
                          "%s\n"
                          "--enc--\n",
                          subject, armor);
}

/* sealed_by - @entity signed by @signer (in @home) and encrypted to alice in one message (gpg -s -e), armored */
static char *
sealed_by (MgGpg *home, const char *signer, const char *entity)
{
  char *armor = mg_gpg (home, entity, strlen (entity), "--armor", "--sign", "--encrypt", "-u", signer, "-r",
                        "alice@example.org", NULL);

  g_assert_nonnull (armor);
  g_strchomp (armor);
  return armor;
}

/* converted - mimegate's result for @msg in @form to @rcpt (exit 0, nothing on stderr) */
static char *
converted (const char *msg, const char *form, const char *rcpt, gsize *len)
{
  g_autofree char *file = mg_test_write (fx.dir, "sealed.eml", msg, -1);
  MgRun r;
  char *out;

  convert (&r, form, file, rcpt);
  g_assert_cmpint (r.status, ==, 0);
  g_assert_cmpstr (r.err, ==, "");
  out = g_steal_pointer (&r.out);
  if (len != NULL)
    *len = r.out_len;
  mg_run_clear (&r);
  return out;
}

/* the one message of `gpg -s -e` by alice, whose key the gateway has: pass, with her fingerprint, in every form; the
 * forged stamp is gone, the stamp is on the outer header, and what is inside is the text (opened by gpg/openssl) */
static void
test_sealed_good (void)
{
  g_autofree char *armor = sealed_by (fx.gpg, "alice@example.org", sealed_entity);
  g_autofree char *msg = pgp_mime_message (armor, "signed and encrypted");

  {
    /* gpg itself says: good signature by alice inside */
    g_autofree char *status = mg_gpg (fx.gpg, armor, strlen (armor), "--status-fd", "1", "-o", "/dev/null", "-d", NULL);
    g_autofree char *want = g_strdup_printf ("[GNUPG:] VALIDSIG %s ", fx.alice_fpr);
    g_assert_nonnull (status);
    g_assert_nonnull (strstr (status, want));
  }
  {
    g_autofree char *out = converted (msg, "plain", "someone@example.org", NULL);
    g_autofree char *ar = header (out, "Authentication-Results", 0);
    g_assert_cmpstr (ar, ==, fx.pgp_pass);
    g_assert_null (header (out, "Authentication-Results", 1));
    g_assert_nonnull (strstr (out, "Signed and encrypted in one OpenPGP message."));
  }
  {
    /* to S/MIME for dave: openssl opens it; the stamp is outside, the entity inside carries none */
    gsize len, clen;
    g_autofree char *out = converted (msg, "smime", "dave@example.net", &len);
    g_autofree char *ar = header (out, "Authentication-Results", 0);
    g_autofree char *key = mg_ca_path (fx.ca, "dave", ".key");
    g_autofree char *crt = mg_ca_path (fx.ca, "dave", ".pem");
    g_autofree char *clear = NULL;
    g_assert_cmpstr (ar, ==, fx.pgp_pass);
    g_assert_nonnull (strstr (out, "Content-Type: application/pkcs7-mime; smime-type=enveloped-data"));
    clear = mg_ca_openssl (fx.ca, out, len, &clen, "cms", "-decrypt", "-inkey", key, "-recip", crt, NULL);
    g_assert_nonnull (clear);
    g_assert_nonnull (strstr (clear, "Signed and encrypted in one OpenPGP message."));
    g_assert_null (strstr (clear, "Authentication-Results"));
  }
  {
    /* to PGP/Inline and to PGP/MIME for bob: gpg opens them; the stamp is on the outer header */
    const char *const forms[] = { "pgp-inline", "pgp-mime" };
    for (guint i = 0; i < G_N_ELEMENTS (forms); i++) {
      g_autofree char *out = converted (msg, forms[i], "bob@example.org", NULL);
      g_autofree char *ar = header (out, "Authentication-Results", 0);
      g_autofree char *block = mg_test_pgp_block (out);
      g_autofree char *clear = mg_gpg (fx.gpg, block, strlen (block), "-d", NULL);
      g_assert_cmpstr (ar, ==, fx.pgp_pass);
      g_assert_null (header (out, "Authentication-Results", 1));
      g_assert_nonnull (clear);
      g_assert_nonnull (strstr (clear, "Signed and encrypted in one OpenPGP message."));
      g_assert_null (strstr (clear, "Authentication-Results"));
    }
  }
}

/* signed by a key the gateway does not have: neutral, never pass; and unsigned encryption: no claim at all */
static void
test_sealed_unknown (void)
{
  g_autofree char *armor = sealed_by (fx.other, "stranger@example.org", sealed_entity);
  g_autofree char *msg = pgp_mime_message (armor, "signed by a stranger");
  g_autofree char *out = converted (msg, "plain", "someone@example.org", NULL);
  g_autofree char *ar = header (out, "Authentication-Results", 0);
  g_autofree char *stranger = mg_gpg_fingerprint (fx.other, "stranger@example.org");
  g_autofree char *want = g_strdup_printf ("gw.example; x-openpgp=neutral reason=\"the signer's key is not known\" "
                                           "body.openpgp-fingerprint=%s",
                                           stranger);

  g_assert_cmpstr (ar, ==, want);
  g_assert_nonnull (strstr (out, "Signed and encrypted in one OpenPGP message."));
  {
    g_autofree char *plain_armor =
      mg_gpg (fx.gpg, sealed_entity, strlen (sealed_entity), "--armor", "--encrypt", "-r", "alice@example.org", NULL);
    g_autofree char *plain_msg = pgp_mime_message (g_strchomp (plain_armor), "encrypted only");
    g_autofree char *plain_out = converted (plain_msg, "plain", "someone@example.org", NULL);
    g_assert_null (header (plain_out, "Authentication-Results", 0)); /* and the forged one is gone */
    g_assert_nonnull (strstr (plain_out, "Signed and encrypted in one OpenPGP message."));
  }
}

/* RFC 3156 section 6.1: multipart/signed (in a layout GMime writes differently) encrypted as a whole; the slice is
 * of the decrypted bytes. Good: pass; the signed part changed by one byte before encryption: fail. */
static void
test_signed_then_encrypted (void)
{
  g_autofree char *part = first_part (&layouts[4]);
  g_autofree char *signed_msg = pgp_signed (part, "\r\n");
  /* the entity is the multipart/signed with its own header only */
  const char *entity = strstr (signed_msg, "Content-Type: multipart/signed");
  g_autoptr (GString) tampered = g_string_new (entity);
  g_autofree char *armor = NULL, *bad_armor = NULL, *msg = NULL, *bad_msg = NULL, *out = NULL, *bad_out = NULL;
  g_autofree char *ar = NULL, *bad_ar = NULL;

  g_assert_nonnull (entity);
  g_assert_cmpuint (g_string_replace (tampered, "Signed text", "Signed texT", 1), ==, 1);
  armor = mg_gpg (fx.gpg, entity, strlen (entity), "--armor", "--encrypt", "-r", "alice@example.org", NULL);
  bad_armor = mg_gpg (fx.gpg, tampered->str, tampered->len, "--armor", "--encrypt", "-r", "alice@example.org", NULL);
  g_assert_nonnull (armor);
  g_assert_nonnull (bad_armor);
  msg = pgp_mime_message (g_strchomp (armor), "signed, then encrypted");
  bad_msg = pgp_mime_message (g_strchomp (bad_armor), "signed, changed, then encrypted");
  out = converted (msg, "plain", "someone@example.org", NULL);
  ar = header (out, "Authentication-Results", 0);
  g_assert_cmpstr (ar, ==, fx.pgp_pass);
  bad_out = converted (bad_msg, "plain", "someone@example.org", NULL);
  bad_ar = header (bad_out, "Authentication-Results", 0);
  g_assert_true (g_str_has_prefix (bad_ar, "gw.example; x-openpgp=fail reason=\"bad signature\""));
  g_assert_null (header (bad_out, "Authentication-Results", 1));
  /* re-encrypted for dave, the verdicts travel on the outer header; inside, the multipart/signed is the one that
   * arrived, so that gpg verifies it after openssl has decrypted it */
  {
    gsize len, clen;
    g_autofree char *s = converted (msg, "smime", "dave@example.net", &len);
    g_autofree char *s_ar = header (s, "Authentication-Results", 0);
    g_autofree char *b = converted (bad_msg, "smime", "dave@example.net", NULL);
    g_autofree char *b_ar = header (b, "Authentication-Results", 0);
    g_autofree char *key = mg_ca_path (fx.ca, "dave", ".key");
    g_autofree char *crt = mg_ca_path (fx.ca, "dave", ".pem");
    g_autofree char *clear =
      mg_ca_openssl (fx.ca, s, len, &clen, "cms", "-decrypt", "-inkey", key, "-recip", crt, NULL);
    g_autofree char *canonical = crlf (part);
    g_assert_cmpstr (s_ar, ==, fx.pgp_pass);
    g_assert_true (g_str_has_prefix (b_ar, "gw.example; x-openpgp=fail reason=\"bad signature\""));
    g_assert_nonnull (clear);
    g_assert_cmpmem (clear, clen, entity, strlen (entity));
    independent_check (clear, canonical, FALSE);
  }
}

/* S/MIME signed (by openssl, the epilogue layout) then enveloped for carol, whose key the gateway holds: the slice
 * is of the decrypted bytes; pass in plain and re-encrypted to PGP/MIME, and fail once one byte is changed */
static void
test_smime_signed_then_enveloped (void)
{
  g_autofree char *part = first_part (&layouts[1]);
  g_autofree char *signed_msg = smime_signed (part, "\r\n");
  const char *entity = strstr (signed_msg, "Content-Type: multipart/signed");
  g_autoptr (GString) tampered = g_string_new (entity);
  g_autofree char *carol = mg_ca_path (fx.ca, "carol", ".pem");
  const char *const forms[][2] = { { "plain", "someone@example.org" }, { "pgp-mime", "bob@example.org" } };

  g_assert_nonnull (entity);
  g_assert_cmpuint (g_string_replace (tampered, "Signed text", "Signed texT", 1), ==, 1);
  for (int bad = 0; bad <= 1; bad++) {
    const char *clear = bad ? tampered->str : entity;
    g_autofree char *env = mg_ca_openssl (fx.ca, clear, strlen (clear), NULL, "cms", "-encrypt", "-binary", "-aes256",
                                          "-from", "carol@example.net", "-to", "someone@example.org", "-subject",
                                          "signed, then enveloped", carol, NULL);
    g_assert_nonnull (env);
    g_assert_nonnull (strstr (env, "smime-type=enveloped-data"));
    for (guint f = 0; f < G_N_ELEMENTS (forms); f++) {
      g_autofree char *out = converted (env, forms[f][0], forms[f][1], NULL);
      g_autofree char *ar = header (out, "Authentication-Results", 0);
      g_assert_nonnull (ar);
      if (bad)
        g_assert_true (g_str_has_prefix (ar, "gw.example; smime=fail reason=\"bad signature\""));
      else
        g_assert_cmpstr (ar, ==, fx.smime_pass);
    }
  }
}

/* inline_message - a PGP/Inline message: @body as its text/plain body, and @attachment (nullable) as data.bin.pgp */
static char *
inline_message (const char *body, const char *attachment)
{
  if (attachment == NULL)
    return g_strdup_printf ("From: Alice <alice@example.org>\nTo: Alice <alice@example.org>\nSubject: inline\n"
                            "MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\n%s\n",
                            body);
  return g_strdup_printf ("From: Alice <alice@example.org>\nTo: Alice <alice@example.org>\nSubject: inline\n"
                          "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"m\"\n\n"
                          "--m\nContent-Type: text/plain; charset=utf-8\n\n%s\n"
                          "--m\nContent-Type: application/octet-stream; name=\"data.bin.pgp\"\n"
                          "Content-Disposition: attachment; filename=\"data.bin.pgp\"\n"
                          "Content-Transfer-Encoding: base64\n\n%s\n--m--\n",
                          body, attachment);
}

/* PGP/Inline armor signed and encrypted in one: pass; clear text beside it, or an encrypted attachment that is not
 * signed: neutral (only part is signed); a stranger's signature: neutral; each piece signed by alice: pass */
static void
test_inline (void)
{
  const char *text = "Inline text, signed and encrypted.\r\n";
  g_autofree char *armor = sealed_by (fx.gpg, "alice@example.org", text);
  g_autofree char *stranger = sealed_by (fx.other, "stranger@example.org", text);
  const char data[] = "binary attachment \x01\x02\x03";
  g_autofree char *signed_b64 = NULL, *plain_b64 = NULL, *beside = NULL;
  struct {
    char *msg;
    const char *want; /* NULL: fx.pgp_pass */
  } cases[5];

  {
    /* NAME.pgp attachments are binary OpenPGP: gpg writes them to files */
    g_autofree char *f = mg_test_write (fx.dir, "att.in", data, sizeof data - 1);
    g_autofree char *s = g_build_filename (fx.dir, "att.sig.pgp", NULL);
    g_autofree char *p = g_build_filename (fx.dir, "att.plain.pgp", NULL);
    g_autofree char *r1 = mg_gpg (fx.gpg, NULL, 0, "-o", s, "--sign", "--encrypt", "-u", "alice@example.org", "-r",
                                  "alice@example.org", f, NULL);
    g_autofree char *r2 = mg_gpg (fx.gpg, NULL, 0, "-o", p, "--encrypt", "-r", "alice@example.org", f, NULL);
    gsize sn, pn;
    g_autofree char *sb = NULL, *pb = NULL;
    g_assert_nonnull (r1);
    g_assert_nonnull (r2);
    sb = mg_test_read (s, &sn);
    pb = mg_test_read (p, &pn);
    signed_b64 = g_base64_encode ((const guchar *) sb, sn);
    plain_b64 = g_base64_encode ((const guchar *) pb, pn);
  }
  beside = g_strdup_printf ("Hello, this line is not signed.\n\n%s", armor);
  cases[0].msg = inline_message (armor, NULL);
  cases[0].want = NULL;
  cases[1].msg = inline_message (beside, NULL);
  cases[1].want = "gw.example; x-openpgp=neutral reason=\"only part of the text is signed\" "
                  "body.openpgp-identifier=alice@example.org body.openpgp-fingerprint=";
  cases[2].msg = inline_message (armor, plain_b64);
  cases[2].want = "gw.example; x-openpgp=neutral reason=\"only part of the message is signed\" "
                  "body.openpgp-identifier=alice@example.org body.openpgp-fingerprint=";
  cases[3].msg = inline_message (stranger, NULL);
  cases[3].want = "gw.example; x-openpgp=neutral reason=\"the signer's key is not known\" body.openpgp-fingerprint=";
  cases[4].msg = inline_message (armor, signed_b64);
  cases[4].want = NULL;
  for (guint i = 0; i < G_N_ELEMENTS (cases); i++) {
    g_autofree char *out = converted (cases[i].msg, "plain", "someone@example.org", NULL);
    g_autofree char *ar = header (out, "Authentication-Results", 0);
    g_test_message ("PGP/Inline case %u", i);
    g_assert_nonnull (strstr (out, "Inline text, signed and encrypted."));
    if (cases[i].want == NULL)
      g_assert_cmpstr (ar, ==, fx.pgp_pass);
    else {
      g_assert_nonnull (ar);
      g_assert_true (g_str_has_prefix (ar, cases[i].want));
    }
    g_free (cases[i].msg);
  }
  {
    /* and PGP/Inline in, PGP/Inline out for bob: the stamp on the outer header */
    g_autofree char *msg = inline_message (armor, signed_b64);
    g_autofree char *out = converted (msg, "pgp-inline", "bob@example.org", NULL);
    g_autofree char *ar = header (out, "Authentication-Results", 0);
    g_autofree char *block = mg_test_pgp_block (out);
    g_autofree char *clear = mg_gpg (fx.gpg, block, strlen (block), "-d", NULL);
    g_assert_cmpstr (ar, ==, fx.pgp_pass);
    g_assert_nonnull (clear);
    g_assert_nonnull (strstr (clear, "Inline text, signed and encrypted."));
  }
}

int
main (int argc, char **argv)
{
  int status;

  g_test_init (&argc, &argv, NULL);
  if (!mg_test_have_program ("gpg") || !mg_test_have_program ("openssl") || !mg_test_have_program ("python3")) {
    g_test_skip ("gpg, openssl and python3 are needed");
    return 0;
  }
  setup ();
  g_test_add_func ("/signatures/layouts", test_layouts);
  g_test_add_func ("/signatures/sealed/good", test_sealed_good);
  g_test_add_func ("/signatures/sealed/unknown-signer", test_sealed_unknown);
  g_test_add_func ("/signatures/signed-then-encrypted", test_signed_then_encrypted);
  g_test_add_func ("/signatures/smime-signed-then-enveloped", test_smime_signed_then_enveloped);
  g_test_add_func ("/signatures/inline", test_inline);
  status = g_test_run ();
  teardown ();
  return status;
}
