/* test-hp-out.c - header protection going out (RFC 9788, mime/hpwrap.c), each result opened by an independent tool:
 * gpg --decrypt and openssl cms -decrypt show the protected header fields and hp="cipher" on the payload's root part,
 * the outer Subject "[...]", the HP-Outer fields and the legacy display under obscure; sign-only leaves the outer
 * header as it was; a signed-only result verifies with gpg --verify and openssl cms -verify with hp="clear" and the
 * fields inside the signed bytes; off leaves the payload as before; PGP/Inline keeps the Subject outside and the log
 * says so. */
#include "config.h"

#include <string.h>

#include <glib/gstdio.h>

#include "testutil.h"

typedef struct {
  MgGpg *gpg; /* the gateway's home: alice (signs) and bob */
  MgCa *ca;   /* carol (the gateway holds her key: signs) and dave */
  char *dir;
  char *store;
  char *conf;
  char *log;
  char *input;
} Fixture;

static Fixture fx;

#define SUBJECT "=?UTF-8?Q?Gr=C3=BC=C3=9Fe?= about the Jones contract"

static const char message[] = "Received: from mua.example.net by mx.example.net; Mon, 1 Jan 2024 10:00:00 +0000\n"
                              "From: Sender <sender@example.net>\n"
                              "To: Bob <bob@example.org>, Dave <dave@example.net>\n"
                              "Cc: carol@example.net,\n"
                              " alice@example.org\n"
                              "Bcc: hidden@example.org\n"
                              "Subject: " SUBJECT "\n"
                              "Date: Mon, 1 Jan 2024 10:00:00 +0000\n"
                              "Message-ID: <hp-out@example.net>\n"
                              "Keywords: merger\n"
                              "MIME-Version: 1.0\n"
                              "Content-Type: text/plain; charset=utf-8\n"
                              "Content-Transfer-Encoding: quoted-printable\n"
                              "\n"
                              "Gr=C3=BC=C3=9Fe, the contract is signed.\n";

static void
setup (void)
{
  g_autofree char *conf = NULL;

  fx.gpg = mg_gpg_new ();
  g_assert_true (mg_gpg_add_key (fx.gpg, "alice@example.org", "ed25519"));
  g_assert_true (mg_gpg_add_key (fx.gpg, "bob@example.org", "ed25519"));
  fx.ca = mg_ca_new ();
  g_assert_true (mg_ca_add_leaf (fx.ca, "carol", "carol@example.net"));
  g_assert_true (mg_ca_add_leaf (fx.ca, "dave", "dave@example.net"));
  fx.dir = mg_test_tmpdir ();
  fx.store =
    mg_ca_store (fx.ca, fx.dir, (const char *const[]){ "carol", "dave", NULL }, (const char *const[]){ "carol", NULL });
  fx.log = g_build_filename (fx.dir, "log.json", NULL);
  conf =
    g_strdup_printf ("[gateway]\ngnupg-home = %s\nx509-store = %s\ntrust-model = always\nauthserv-id = gw.example\n"
                     "log = json:%s\n"
                     "[address bob@example.org]\nheader-protection = obscure\n"
                     "[address inline@example.org]\nheader-protection = obscure\nform = pgp-inline\n"
                     "encrypt = required\n",
                     fx.gpg->home, fx.store, fx.log);
  fx.conf = mg_test_write (fx.dir, "mimegate.conf", conf, -1);
  fx.input = mg_test_write (fx.dir, "plain.eml", message, -1);
}

static void
teardown (void)
{
  mg_gpg_free (fx.gpg);
  mg_ca_free (fx.ca);
  mg_test_rmtree (fx.dir);
  g_free (fx.dir);
  g_free (fx.store);
  g_free (fx.conf);
  g_free (fx.log);
  g_free (fx.input);
}

/* convert - mimegate convert -c CONF [EXTRA...] --to FORM -r RCPT FILE */
static void
convert (MgRun *r, const char *const *extra, const char *form, const char *rcpt, const char *file)
{
  g_autoptr (GPtrArray) argv = g_ptr_array_new ();
  g_auto (GStrv) env = mg_test_env ("LANGUAGE", NULL, "LC_ALL", "C.UTF-8", NULL);

  g_ptr_array_add (argv, (gpointer) mg_test_mimegate ());
  g_ptr_array_add (argv, (gpointer) "convert");
  g_ptr_array_add (argv, (gpointer) "-c");
  g_ptr_array_add (argv, fx.conf);
  for (guint i = 0; extra != NULL && extra[i] != NULL; i++)
    g_ptr_array_add (argv, (gpointer) extra[i]);
  g_ptr_array_add (argv, (gpointer) "--to");
  g_ptr_array_add (argv, (gpointer) form);
  g_ptr_array_add (argv, (gpointer) "-r");
  g_ptr_array_add (argv, (gpointer) rcpt);
  g_ptr_array_add (argv, (gpointer) file);
  g_ptr_array_add (argv, NULL);
  g_assert_true (mg_test_run (r, (const char *const *) argv->pdata, (const char *const *) env, NULL, 0));
}

/* head - the header section of @data (up to its first empty line), line ends made LF */
static char *
head (const char *data)
{
  g_autoptr (GString) s = g_string_new (NULL);

  for (const char *c = data; *c; c++) {
    if (*c == '\r')
      continue;
    if (*c == '\n' && s->len > 0 && s->str[s->len - 1] == '\n')
      break;
    g_string_append_c (s, *c);
  }
  return g_string_free (g_steal_pointer (&s), FALSE);
}

/* lf - @data without its CRs */
static char *
lf (const char *data)
{
  GString *s = g_string_new (NULL);

  for (const char *c = data; *c; c++)
    if (*c != '\r')
      g_string_append_c (s, *c);
  return g_string_free (s, FALSE);
}

/* the legacy display obscure puts in front of the text (RFC 9788): the hidden Subject and the removed Keywords,
 * decoded and re-encoded with the part (quoted-printable), a blank line, then the text as it was */
#define LEGACY_TEXT                                                                                                    \
  "\n\nSubject: Gr=C3=BC=C3=9Fe about the Jones contract\nKeywords: merger\n\nGr=C3=BC=C3=9Fe, the contract is "       \
  "signed."

/* assert_protected - @inner's header section: hp="@hp" on the root part and the message's fields as they came, no
 * Bcc, no trace fields; @legacy: the legacy display of what obscure hid leads the text (hp-legacy-display="1") */
static void
assert_protected (const char *inner, const char *hp, gboolean legacy)
{
  g_autofree char *h = head (inner);
  g_autofree char *text = lf (inner);
  g_autofree char *ct = g_strdup_printf ("Content-Type: text/plain; charset=utf-8; hp=\"%s\"%s\n", hp,
                                         legacy ? ";\n hp-legacy-display=\"1\"" : "");

  g_assert_true (g_str_has_prefix (h, ct));
  if (legacy)
    g_assert_nonnull (strstr (text, LEGACY_TEXT));
  else {
    g_assert_null (strstr (text, "hp-legacy-display"));
    g_assert_nonnull (strstr (text, "\n\nGr=C3=BC=C3=9Fe, the contract is signed."));
  }
  g_assert_nonnull (strstr (h, "\nFrom: Sender <sender@example.net>\n"));
  g_assert_nonnull (strstr (h, "\nTo: Bob <bob@example.org>, Dave <dave@example.net>\n"));
  g_assert_nonnull (strstr (h, "\nCc: carol@example.net,\n alice@example.org\n"));
  g_assert_nonnull (strstr (h, "\nSubject: " SUBJECT "\n"));
  g_assert_nonnull (strstr (h, "\nDate: Mon, 1 Jan 2024 10:00:00 +0000\n"));
  g_assert_nonnull (strstr (h, "\nMessage-ID: <hp-out@example.net>\n"));
  g_assert_nonnull (strstr (h, "\nKeywords: merger\n"));
  g_assert_nonnull (strstr (h, "\nContent-Transfer-Encoding: quoted-printable\n"));
  g_assert_null (strstr (h, "Bcc:"));
  g_assert_null (strstr (h, "hidden@example.org"));
  g_assert_null (strstr (h, "Received:"));
  g_assert_null (strstr (h, "MIME-Version:"));
  g_assert_nonnull (strstr (inner, "Gr=C3=BC=C3=9Fe, the contract is signed."));
}

/* assert_obscured - the outer header of @msg under hcp_baseline, and the HP-Outer fields in @inner that say so */
static void
assert_obscured (const char *msg, const char *inner)
{
  g_autofree char *outer = head (msg);
  g_autofree char *h = head (inner);

  g_assert_nonnull (strstr (outer, "\nSubject: [...]\n"));
  g_assert_null (strstr (msg, "Jones contract"));
  g_assert_null (strstr (outer, "Keywords:"));
  g_assert_null (strstr (msg, "merger"));
  g_assert_nonnull (strstr (outer, "\nMessage-ID: <hp-out@example.net>\n"));
  g_assert_nonnull (strstr (outer, "\nFrom: Sender <sender@example.net>\n"));
  g_assert_nonnull (strstr (outer, "\nDate: Mon, 1 Jan 2024 10:00:00 +0000\n"));
  /* RFC 9788 section 2.2: each field left outside, with its outer value; none for the removed Keywords */
  g_assert_nonnull (strstr (h, "\nHP-Outer: From: Sender <sender@example.net>\n"
                               "HP-Outer: To: Bob <bob@example.org>, Dave <dave@example.net>\n"
                               "HP-Outer: Cc: carol@example.net,\n alice@example.org\n"
                               "HP-Outer: Subject: [...]\n"
                               "HP-Outer: Date: Mon, 1 Jan 2024 10:00:00 +0000\n"
                               "HP-Outer: Message-ID: <hp-out@example.net>\n"));
  g_assert_null (strstr (h, "HP-Outer: Keywords"));
  g_assert_null (strstr (h, "HP-Outer: Bcc"));
  g_assert_null (strstr (h, "HP-Outer: Received"));
}

static void
test_pgp_mime_obscure (void)
{
  const char *obscure[] = { "--header-protection", "obscure", NULL };
  g_autofree char *inner = NULL;
  MgRun r;

  convert (&r, obscure, "pgp-mime", "bob@example.org", fx.input);
  g_assert_cmpint (r.status, ==, 0);
  g_assert_nonnull (strstr (r.out, "Content-Type: multipart/encrypted"));
  inner = mg_test_gpg_decrypt (fx.gpg, r.out);
  assert_protected (inner, "cipher", TRUE);
  assert_obscured (r.out, inner);
  mg_run_clear (&r);
}

static void
test_smime_obscure (void)
{
  const char *obscure[] = { "--header-protection", "obscure", NULL };
  g_autofree char *inner = NULL;
  MgRun r;

  convert (&r, obscure, "smime", "dave@example.net", fx.input);
  g_assert_cmpint (r.status, ==, 0);
  g_assert_nonnull (strstr (r.out, "Content-Type: application/pkcs7-mime; smime-type=enveloped-data"));
  inner = mg_test_cms_decrypt (fx.ca, "dave", r.out, r.out_len, NULL);
  assert_protected (inner, "cipher", TRUE);
  assert_obscured (r.out, inner);
  mg_run_clear (&r);
}

/* sign-only: the fields inside, HP-Outer equal to them, the outer header as it came, no legacy display (nothing is
 * hidden); the default is obscure (test-hp-more.c /hp-more/default) */
static void
test_sign_only (void)
{
  const char *sign_only[] = { "--header-protection", "sign-only", NULL };
  g_autofree char *inner = NULL, *h = NULL, *outer = NULL;
  MgRun r;

  convert (&r, sign_only, "pgp-mime", "bob@example.org", fx.input);
  g_assert_cmpint (r.status, ==, 0);
  outer = head (r.out);
  g_assert_nonnull (strstr (outer, "\nSubject: " SUBJECT "\n"));
  g_assert_nonnull (strstr (outer, "\nKeywords: merger\n"));
  inner = mg_test_gpg_decrypt (fx.gpg, r.out);
  assert_protected (inner, "cipher", FALSE);
  h = head (inner);
  g_assert_nonnull (strstr (h, "\nHP-Outer: Subject: " SUBJECT "\n"));
  g_assert_nonnull (strstr (h, "\nHP-Outer: Keywords: merger\n"));
  mg_run_clear (&r);
}

/* off: the payload is the body entity exactly as before header protection existed */
static void
test_off (void)
{
  const char *off[] = { "--header-protection", "off", NULL };
  g_autofree char *inner = NULL, *outer = NULL;
  MgRun r;

  convert (&r, off, "smime", "dave@example.net", fx.input);
  g_assert_cmpint (r.status, ==, 0);
  outer = head (r.out);
  g_assert_nonnull (strstr (outer, "\nSubject: " SUBJECT "\n"));
  inner = mg_test_cms_decrypt (fx.ca, "dave", r.out, r.out_len, NULL);
  g_assert_cmpstr (inner, ==,
                   "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
                   "Gr=C3=BC=C3=9Fe, the contract is signed.\r\n");
  mg_run_clear (&r);
}

/* signed only: hp="clear" inside the signed bytes, no HP-Outer, the outer header unchanged even under obscure */
static void
test_signed_only (void)
{
  g_autofree char *root = mg_ca_path (fx.ca, "root", ".pem");
  const char *pgp[] = { "--header-protection", "obscure", "--sign", "alice@example.org", NULL };
  const char *smime[] = { "--header-protection", "obscure", "--sign", "carol@example.net",
                          "--sign-method",       "smime",   NULL };
  MgRun r;

  /* PGP/MIME: gpg verifies the first part as signedparts.py cuts it out of the message */
  {
    g_autofree char *script = g_test_build_filename (G_TEST_DIST, "signedparts.py", NULL);
    g_autofree char *dir = mg_test_tmpdir ();
    g_autofree char *content = g_build_filename (dir, "content", NULL);
    g_autofree char *signature = g_build_filename (dir, "signature", NULL);
    g_autofree char *status = NULL, *signed_bytes = NULL, *outer = NULL;
    g_autofree char *alice = mg_gpg_fingerprint (fx.gpg, "alice@example.org");
    const char *argv[] = { "python3", script, dir, NULL };
    MgRun split;
    convert (&r, pgp, "plain", "anyone@example.org", fx.input);
    g_assert_cmpint (r.status, ==, 0);
    outer = head (r.out);
    g_assert_nonnull (strstr (outer, "\nSubject: " SUBJECT "\n"));
    g_assert_true (mg_test_run (&split, argv, NULL, r.out, r.out_len));
    g_assert_cmpint (split.status, ==, 0);
    mg_run_clear (&split);
    status = mg_gpg (fx.gpg, NULL, 0, "--status-fd", "1", "--verify", signature, content, NULL);
    g_assert_nonnull (status);
    g_assert_nonnull (strstr (status, "[GNUPG:] GOODSIG"));
    g_assert_nonnull (strstr (status, alice));
    signed_bytes = mg_test_read (content, NULL);
    assert_protected (signed_bytes, "clear", FALSE);
    g_assert_null (strstr (signed_bytes, "HP-Outer"));
    mg_run_clear (&r);
    mg_test_rmtree (dir);
  }
  /* S/MIME detached: openssl cms -verify gives back the signed content */
  {
    g_autofree char *verified = NULL, *outer = NULL;
    convert (&r, smime, "plain", "anyone@example.org", fx.input);
    g_assert_cmpint (r.status, ==, 0);
    outer = head (r.out);
    g_assert_nonnull (strstr (outer, "\nSubject: " SUBJECT "\n"));
    verified = mg_ca_openssl (fx.ca, r.out, r.out_len, NULL, "cms", "-verify", "-CAfile", root, NULL);
    g_assert_nonnull (verified);
    assert_protected (verified, "clear", FALSE);
    g_assert_null (strstr (verified, "HP-Outer"));
    mg_run_clear (&r);
  }
}

/* signed and encrypted: the payload inside the signature carries hp="cipher" (it is encrypted), verified by openssl */
static void
test_signed_encrypted (void)
{
  g_autofree char *root = mg_ca_path (fx.ca, "root", ".pem");
  const char *smime[] = { "--header-protection", "obscure", "--sign", "carol@example.net", NULL };
  g_autofree char *clear = NULL, *verified = NULL;
  gsize len;
  MgRun r;

  convert (&r, smime, "smime", "dave@example.net", fx.input);
  g_assert_cmpint (r.status, ==, 0);
  clear = mg_test_cms_decrypt (fx.ca, "dave", r.out, r.out_len, NULL);
  g_assert_nonnull (strstr (clear, "protocol=\"application/pkcs7-signature\""));
  len = strlen (clear);
  verified = mg_ca_openssl (fx.ca, clear, len, NULL, "cms", "-verify", "-CAfile", root, NULL);
  g_assert_nonnull (verified);
  assert_protected (verified, "cipher", TRUE);
  assert_obscured (r.out, verified);
  mg_run_clear (&r);
}

/* a conversion that re-encrypts: PGP/MIME with protected headers to S/MIME keeps the sender's payload as it is */
static void
test_reencrypt_keeps (void)
{
  const char *obscure[] = { "--header-protection", "obscure", NULL };
  g_autofree char *file = NULL, *inner = NULL, *outer = NULL;
  MgRun r;

  convert (&r, obscure, "pgp-mime", "bob@example.org", fx.input);
  g_assert_cmpint (r.status, ==, 0);
  file = mg_test_write (fx.dir, "protected.eml", r.out, (gssize) r.out_len);
  mg_run_clear (&r);
  convert (&r, obscure, "smime", "dave@example.net", file);
  g_assert_cmpint (r.status, ==, 0);
  inner = mg_test_cms_decrypt (fx.ca, "dave", r.out, r.out_len, NULL);
  assert_protected (inner, "cipher", TRUE);
  assert_obscured (r.out, inner);
  /* one set of protected fields and one legacy display: nothing was added a second time */
  {
    g_autofree char *h = head (inner);
    g_autofree char *text = lf (inner);
    g_assert_null (strstr (strstr (h, "\nSubject: ") + 1, "\nSubject: "));
    g_assert_null (strstr (strstr (text, LEGACY_TEXT) + strlen (LEGACY_TEXT), "\nSubject: "));
    g_assert_null (strstr (strstr (text, "hp-legacy-display") + 1, "hp-legacy-display"));
  }
  outer = head (r.out);
  g_assert_nonnull (strstr (outer, "\nSubject: [...]\n"));
  mg_run_clear (&r);
}

/* filter_stdout - mimegate filter --stdout for @rcpt with @input; the log is read from fx.log */
static void
filter_stdout (MgRun *r, const char *input, const char *rcpt)
{
  const char *argv[] = { mg_test_mimegate (),  "filter", "-c", fx.conf, "--stdout", "-f",
                         "sender@example.net", "--",     rcpt, NULL };
  g_auto (GStrv) env = mg_test_env ("LANGUAGE", NULL, "LC_ALL", "C.UTF-8", NULL);

  g_unlink (fx.log);
  g_assert_true (mg_test_run (r, argv, (const char *const *) env, input, strlen (input)));
}

/* the policy key reaches the conversion: bob's rule says obscure */
static void
test_policy (void)
{
  g_autofree char *inner = NULL, *bad = NULL;
  MgRun r;

  filter_stdout (&r, message, "bob@example.org");
  g_assert_cmpint (r.status, ==, 0);
  inner = mg_test_gpg_decrypt (fx.gpg, r.out);
  assert_protected (inner, "cipher", TRUE);
  assert_obscured (r.out, inner);
  mg_run_clear (&r);

  /* a value that is not one of the three is a configuration error (the filter defers), naming the key */
  bad = mg_test_write (fx.dir, "bad.conf", "[default]\nheader-protection = maybe\n", -1);
  {
    const char *argv[] = { mg_test_mimegate (), "filter", "-c", bad, "--stdout", "-f", "s@example.net", "--",
                           "bob@example.org",   NULL };
    g_auto (GStrv) env = mg_test_env ("LANGUAGE", NULL, "LC_ALL", "C.UTF-8", NULL);
    g_assert_true (mg_test_run (&r, argv, (const char *const *) env, message, strlen (message)));
    g_assert_cmpint (r.status, ==, 75);
    g_assert_nonnull (strstr (r.err, "header-protection = \"maybe\" is not one of: off, sign-only, obscure"));
    mg_run_clear (&r);
  }
}

/* PGP/Inline (Microsoft 365) with obscure and required encryption: delivered, the Subject outside in clear (the
 * form has no MIME inside the armor), and the log record's notes say so */
static void
test_pgp_inline (void)
{
  g_autofree char *log = NULL, *outer = NULL, *block = NULL, *clear = NULL;
  MgRun r;

  g_assert_true (mg_gpg_add_key (fx.gpg, "inline@example.org", "ed25519"));
  filter_stdout (&r, message, "inline@example.org");
  g_assert_cmpint (r.status, ==, 0);
  outer = head (r.out);
  g_assert_nonnull (strstr (outer, "\nSubject: " SUBJECT "\n"));
  g_assert_null (strstr (r.out, "HP-Outer"));
  g_assert_null (strstr (r.out, "hp=\""));
  block = mg_test_pgp_block (r.out);
  clear = mg_gpg (fx.gpg, block, strlen (block), "-d", NULL);
  g_assert_nonnull (clear);
  g_assert_nonnull (strstr (clear, "the contract is signed."));
  log = mg_test_read (fx.log, NULL);
  g_assert_nonnull (log);
  g_assert_nonnull (strstr (log, "header protection: PGP/Inline cannot protect header fields; the Subject travels in "
                                 "clear"));
  mg_run_clear (&r);
}

/* a field that fails the checks (a line beyond 998 octets) is not copied and not obscured, and the log says so */
static void
test_field_checks (void)
{
  g_autoptr (GString) msg = g_string_new (NULL);
  g_autofree char *inner = NULL, *log = NULL, *h = NULL, *outer = NULL;
  MgRun r;

  g_string_append (msg, "X-Long: ");
  for (int i = 0; i < 1000; i++)
    g_string_append_c (msg, 'x');
  g_string_append_c (msg, '\n');
  g_string_append (msg, message);
  filter_stdout (&r, msg->str, "bob@example.org");
  g_assert_cmpint (r.status, ==, 0);
  inner = mg_test_gpg_decrypt (fx.gpg, r.out);
  h = head (inner);
  g_assert_null (strstr (h, "X-Long"));
  outer = head (r.out);
  g_assert_nonnull (strstr (outer, "X-Long: xxxx"));
  assert_protected (inner, "cipher", TRUE);
  log = mg_test_read (fx.log, NULL);
  g_assert_nonnull (strstr (log, "header protection: a header field failed the checks"));
  mg_run_clear (&r);
}

int
main (int argc, char **argv)
{
  int rc;

  g_test_init (&argc, &argv, NULL);
  if (!mg_test_have_program ("gpg") || !mg_test_have_program ("openssl")) {
    g_test_skip ("gpg and openssl are needed");
    return 0;
  }
  setup ();
  g_test_add_func ("/hp-out/pgp-mime-obscure", test_pgp_mime_obscure);
  g_test_add_func ("/hp-out/smime-obscure", test_smime_obscure);
  g_test_add_func ("/hp-out/sign-only", test_sign_only);
  g_test_add_func ("/hp-out/off", test_off);
  g_test_add_func ("/hp-out/signed-only", test_signed_only);
  g_test_add_func ("/hp-out/signed-encrypted", test_signed_encrypted);
  g_test_add_func ("/hp-out/reencrypt-keeps", test_reencrypt_keeps);
  g_test_add_func ("/hp-out/policy", test_policy);
  g_test_add_func ("/hp-out/pgp-inline", test_pgp_inline);
  g_test_add_func ("/hp-out/field-checks", test_field_checks);
  rc = g_test_run ();
  teardown ();
  return rc;
}
