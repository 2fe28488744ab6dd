/* test-filter.c - `mimegate filter` as pipe(8) runs it, with real keys (temporary GnuPG home and CA) and a reinject
 * command that keeps what it is given (tests/reinject-capture.sh): policy per recipient, groups, blind copies,
 * refusals and the delivery status notification, configuration errors, stores that cannot be read, reinjection
 * that fails or hangs, --stdout, the log. What arrives is opened by gpg and openssl, not by us. The real Postfix
 * runs in tests/postfix/. */
#include "config.h"

#include <signal.h>
#include <string.h>

#include <gio/gio.h>
#include <glib/gstdio.h>

#include "testutil.h"

#define MARKER "FILTER-MARKER-51c2"

typedef struct {
  MgGpg *gpg;   /* the gateway's home: alice, bob, inline (secret keys), pgp@partner.example */
  MgGpg *other; /* a stranger's home */
  MgCa *ca;     /* carol (held), dave, smime@partner.example */
  char *dir;
  char *store;
  char *out; /* where the reinject command writes */
  char *conf;
  char *log;
  char *plain; /* a clear message To: alice */
  char *spool; /* TMPDIR and spool-dir of every run: must stay empty */
} Fixture;

static Fixture fx;

static const char plain_template[] = "From: Sender <sender@example.net>\n"
                                     "To: Alice <alice@example.org>, pgp@partner.example, nokey@partner.example\n"
                                     "Subject: filter\n"
                                     "Message-ID: <filter-test@example.net>\n"
                                     "MIME-Version: 1.0\n"
                                     "Content-Type: text/plain; charset=utf-8\n"
                                     "\n"
                                     "Hello " MARKER "\n";

static char *
write_conf (const char *name, const char *extra)
{
  g_autofree char *script = g_test_build_filename (G_TEST_DIST, "reinject-capture.sh", NULL);
  g_autofree char *text =
    g_strdup_printf ("[gateway]\ngnupg-home = %s\nx509-store = %s\ntrust-model = always\n"
                     "authserv-id = gw.example\nlog = json:%s\nreinject = %s %s\ntimeout = 20\nspool-dir = %s\n"
                     "%s"
                     "[domain partner.example]\nencrypt = required\n"
                     "[address inline@example.org]\ninline-only = true\n"
                     "[domain nodecrypt.example]\ndecrypt = false\n",
                     fx.gpg->home, fx.store, fx.log, script, fx.out, fx.spool, extra);
  return mg_test_write (fx.dir, name, text, -1);
}

/* reset - an empty capture directory and log */
static void
reset (void)
{
  mg_test_rmtree (fx.out);
  g_mkdir (fx.out, 0700);
  g_unlink (fx.log);
}

/* filter_va - [WRAPPER...] mimegate filter -c CONF -f sender@example.net [OPTIONS...] -- RCPT... with @input on stdin
 * and TMPDIR in the spool directory the fault tests watch; arguments before "--" are options, after it recipients */
static void
filter_va (MgRun *r, const char *const *wrapper, const char *conf, const char *input, gsize len, const char *first,
           va_list ap)
{
  g_autoptr (GPtrArray) argv = g_ptr_array_new ();
  g_auto (GStrv) env = mg_test_env ("LANGUAGE", NULL, "LC_ALL", "C.UTF-8", "TMPDIR", fx.spool, NULL);
  gboolean rcpts = FALSE;

  for (guint i = 0; wrapper != NULL && wrapper[i] != NULL; i++)
    g_ptr_array_add (argv, (gpointer) wrapper[i]);
  g_ptr_array_add (argv, (gpointer) mg_test_mimegate ());
  g_ptr_array_add (argv, (gpointer) "filter");
  g_ptr_array_add (argv, (gpointer) "-c");
  g_ptr_array_add (argv, (gpointer) (conf ? conf : fx.conf));
  g_ptr_array_add (argv, (gpointer) "-f");
  g_ptr_array_add (argv, (gpointer) "sender@example.net");
  for (const char *a = first; a; a = va_arg (ap, const char *)) {
    if (g_str_equal (a, "--"))
      rcpts = TRUE;
    g_ptr_array_add (argv, (gpointer) a);
  }
  g_assert_true (rcpts);
  g_ptr_array_add (argv, NULL);
  g_assert_true (mg_test_run (r, (const char *const *) argv->pdata, (const char *const *) env, input, len));
}

static void filter (MgRun *r, const char *conf, const char *input, const char *first, ...) G_GNUC_NULL_TERMINATED;
static void filter_wrapped (MgRun *r, const char *const *wrapper, const char *conf, const char *input, gsize len,
                            const char *first, ...) G_GNUC_NULL_TERMINATED;

static void
filter (MgRun *r, const char *conf, const char *input, const char *first, ...)
{
  va_list ap;

  va_start (ap, first);
  filter_va (r, NULL, conf, input, strlen (input), first, ap);
  va_end (ap);
}

static void
filter_wrapped (MgRun *r, const char *const *wrapper, const char *conf, const char *input, gsize len, const char *first,
                ...)
{
  va_list ap;

  va_start (ap, first);
  filter_va (r, wrapper, conf, input, len, first, ap);
  va_end (ap);
}

/* captured - reinjection N's message, or NULL when there was none */
static char *
captured (guint n, const char *suffix)
{
  g_autofree char *name = g_strdup_printf ("%u.%s", n, suffix);
  g_autofree char *path = g_build_filename (fx.out, name, NULL);
  gsize len;

  return g_file_test (path, G_FILE_TEST_EXISTS) ? mg_test_read (path, &len) : NULL;
}

/* captured_exists - whether reinjection N happened */
static gboolean
captured_exists (guint n)
{
  g_autofree char *name = g_strdup_printf ("%u.args", n);
  g_autofree char *path = g_build_filename (fx.out, name, NULL);

  return g_file_test (path, G_FILE_TEST_EXISTS);
}

/* gpg_open - the armored block of @msg decrypted by gpg in the gateway's home */
static char *
gpg_open (const char *msg)
{
  g_autofree char *block = mg_test_pgp_block (msg);

  return mg_gpg (fx.gpg, block, strlen (block), "-d", NULL);
}

/* recipients_of - the key ids an armored block in @msg is encrypted to, per gpg --list-packets */
static char *
recipients_of (const char *msg)
{
  g_autofree char *block = mg_test_pgp_block (msg);

  return mg_gpg (fx.gpg, block, strlen (block), "--list-packets", NULL);
}

static void
setup (void)
{
  fx.gpg = mg_gpg_new ();
  g_assert_true (mg_gpg_add_key (fx.gpg, "alice@example.org", "ed25519"));
  g_assert_true (mg_gpg_add_key (fx.gpg, "bob@example.org", "ed25519"));
  g_assert_true (mg_gpg_add_key (fx.gpg, "inline@example.org", "ed25519"));
  g_assert_true (mg_gpg_add_key (fx.gpg, "pgp@partner.example", "ed25519"));
  fx.other = mg_gpg_new ();
  g_assert_true (mg_gpg_add_key (fx.other, "stranger@example.org", "ed25519"));
  fx.ca = mg_ca_new ();
  g_assert_true (mg_ca_add_leaf (fx.ca, "carol", "carol@example.net"));
  g_assert_true (mg_ca_add_leaf (fx.ca, "dave", "dave@example.net"));
  g_assert_true (mg_ca_add_leaf (fx.ca, "partner", "smime@partner.example"));
  fx.dir = mg_test_tmpdir ();
  fx.store = mg_ca_store (fx.ca, fx.dir, (const char *const[]){ "carol", "dave", "partner", NULL },
                          (const char *const[]){ "carol", NULL });
  fx.out = g_build_filename (fx.dir, "out", NULL);
  fx.log = g_build_filename (fx.dir, "log.json", NULL);
  fx.spool = g_build_filename (fx.dir, "spool", NULL);
  g_mkdir (fx.spool, 0700);
  fx.conf = write_conf ("mimegate.conf", "");
  fx.plain = g_strdup (plain_template);
}

/* each recipient its form: OpenPGP key → PGP/MIME, certificate → S/MIME, no key → as it came; a blind copy alone */
static void
test_forms (void)
{
  g_autofree char *m1 = NULL, *m2 = NULL, *m3 = NULL, *a1 = NULL, *a2 = NULL, *a3 = NULL, *clear = NULL;
  g_autofree char *dave_key = mg_ca_path (fx.ca, "dave", ".key"), *dave_crt = mg_ca_path (fx.ca, "dave", ".pem");
  gsize n;
  MgRun r;

  reset ();
  filter (&r, NULL, fx.plain, "--", "alice@example.org", "dave@example.net", "nobody@example.com", NULL);
  g_assert_cmpint (r.status, ==, 0);
  g_assert_cmpstr (r.err, ==, "");
  mg_run_clear (&r);
  m1 = captured (1, "eml"), m2 = captured (2, "eml"), m3 = captured (3, "eml");
  a1 = captured (1, "args"), a2 = captured (2, "args"), a3 = captured (3, "args");
  g_assert_null (captured (4, "args"));
  g_assert_cmpstr (a1, ==, "-f\nsender@example.net\n--\nalice@example.org\n");
  g_assert_cmpstr (a2, ==, "-f\nsender@example.net\n--\ndave@example.net\n");
  g_assert_cmpstr (a3, ==, "-f\nsender@example.net\n--\nnobody@example.com\n");
  /* alice: PGP/MIME, opened by gpg */
  g_assert_nonnull (strstr (m1, "Content-Type: multipart/encrypted"));
  g_assert_null (strstr (m1, MARKER));
  clear = gpg_open (m1);
  g_assert_nonnull (strstr (clear, MARKER));
  /* dave: S/MIME, opened by openssl as dave */
  g_assert_null (strstr (m2, MARKER));
  g_clear_pointer (&clear, g_free);
  clear = mg_ca_openssl (fx.ca, m2, strlen (m2), &n, "cms", "-decrypt", "-inkey", dave_key, "-recip", dave_crt, NULL);
  g_assert_nonnull (clear);
  g_assert_nonnull (strstr (clear, MARKER));
  /* nobody: byte for byte */
  g_assert_cmpstr (m3, ==, fx.plain);
}

/* a blind copy never shares a ciphertext: the To recipient's message names only her key, the Bcc's only his */
static void
test_blind_copy (void)
{
  g_autofree char *alice = mg_gpg_encryption_keyid (fx.gpg, "alice@example.org");
  g_autofree char *bob = mg_gpg_encryption_keyid (fx.gpg, "bob@example.org");
  g_autofree char *m1 = NULL, *m2 = NULL, *p1 = NULL, *p2 = NULL;
  MgRun r;

  reset ();
  filter (&r, NULL, fx.plain, "--", "alice@example.org", "bob@example.org", NULL);
  g_assert_cmpint (r.status, ==, 0);
  mg_run_clear (&r);
  m1 = captured (1, "eml");
  m2 = captured (2, "eml");
  g_assert_nonnull (m2);
  p1 = recipients_of (m1);
  p2 = recipients_of (m2);
  g_assert_nonnull (strstr (p1, alice));
  g_assert_null (strstr (p1, bob));
  g_assert_nonnull (strstr (p2, bob));
  g_assert_null (strstr (p2, alice));
}

/* PGP/MIME in, for a recipient whose rule says inline-only (Microsoft 365): PGP/Inline out; S/MIME in, for an
 * OpenPGP-only recipient: PGP/MIME out */
static void
test_conversions (void)
{
  const char *entity = "Content-Type: text/plain; charset=utf-8\r\n\r\nHello " MARKER "\r\n";
  g_autofree char *armored = mg_gpg (fx.gpg, entity, strlen (entity), "-a", "-e", "-r", "alice@example.org", NULL);
  g_autofree char *pgp_mime = g_strdup_printf (
    "From: s@example.net\nTo: inline@example.org\nSubject: x\nMIME-Version: 1.0\nContent-Type: multipart/encrypted; "
    "protocol=\"application/pgp-encrypted\"; boundary=b\n\n--b\nContent-Type: application/pgp-encrypted\n\n"
    "Version: 1\n--b\nContent-Type: application/octet-stream\n\n%s\n--b--\n",
    armored);
  g_autofree char *carol = mg_ca_path (fx.ca, "carol", ".pem");
  gsize n;
  g_autofree char *enveloped =
    mg_ca_openssl (fx.ca, entity, strlen (entity), &n, "cms", "-encrypt", "-aes256", carol, NULL);
  g_autofree char *smime = g_strdup_printf ("From: s@example.net\nTo: bob@example.org\nSubject: y\n%s", enveloped);
  g_autofree char *m1 = NULL, *clear = NULL, *packets = NULL;
  g_autofree char *inline_id = mg_gpg_encryption_keyid (fx.gpg, "inline@example.org");
  g_autofree char *bob_id = mg_gpg_encryption_keyid (fx.gpg, "bob@example.org");
  MgRun r;

  reset ();
  filter (&r, NULL, pgp_mime, "--", "inline@example.org", NULL);
  g_assert_cmpint (r.status, ==, 0);
  mg_run_clear (&r);
  m1 = captured (1, "eml");
  g_assert_null (strstr (m1, "multipart/encrypted"));
  g_assert_nonnull (strstr (m1, "Content-Type: text/plain; charset=utf-8"));
  packets = recipients_of (m1);
  g_assert_nonnull (strstr (packets, inline_id));
  clear = gpg_open (m1);
  g_assert_nonnull (strstr (clear, "Hello " MARKER));
  g_clear_pointer (&m1, g_free);
  g_clear_pointer (&clear, g_free);
  g_clear_pointer (&packets, g_free);

  reset ();
  filter (&r, NULL, smime, "--", "bob@example.org", NULL);
  g_assert_cmpint (r.status, ==, 0);
  mg_run_clear (&r);
  m1 = captured (1, "eml");
  g_assert_nonnull (strstr (m1, "Content-Type: multipart/encrypted"));
  packets = recipients_of (m1);
  g_assert_nonnull (strstr (packets, bob_id));
  clear = gpg_open (m1);
  g_assert_nonnull (strstr (clear, MARKER));
}

/* encrypt = required: with a key encrypted; without one refused, never in clear. All refused: 69 and a 5.7.1 first
 * line for Postfix's bounce; some refused: the others delivered, a DSN to the sender, exit 0 */
static void
test_required (void)
{
  g_autofree char *m1 = NULL, *m2 = NULL, *a2 = NULL, *log = NULL;
  gsize n;
  MgRun r;

  reset ();
  filter (&r, NULL, fx.plain, "--", "nokey@partner.example", NULL);
  g_assert_cmpint (r.status, ==, 69);
  g_assert_cmpstr (r.err, ==,
                   "5.7.1 <nokey@partner.example>: encryption is required for this recipient and no usable key is "
                   "known\n");
  g_assert_null (captured (1, "args"));
  mg_run_clear (&r);

  reset ();
  filter (&r, NULL, fx.plain, "--", "pgp@partner.example", "nokey@partner.example", "smime@partner.example", NULL);
  g_assert_cmpint (r.status, ==, 0);
  mg_run_clear (&r);
  m1 = captured (1, "eml");
  g_assert_null (strstr (m1, MARKER));
  g_assert_nonnull (strstr (m1, "multipart/encrypted"));
  g_free (m1);
  m1 = captured (2, "eml");
  g_assert_null (strstr (m1, MARKER));
  g_assert_nonnull (strstr (m1, "application/pkcs7-mime"));
  /* the third reinjection is the DSN, from the null sender to the sender */
  a2 = captured (3, "args");
  g_assert_cmpstr (a2, ==, "-f\n\n--\nsender@example.net\n");
  m2 = captured (3, "eml");
  g_assert_nonnull (strstr (m2, "Content-Type: multipart/report; report-type=delivery-status"));
  g_assert_nonnull (strstr (m2, "Final-Recipient: rfc822; nokey@partner.example\nAction: failed\nStatus: 5.7.1\n"));
  g_assert_null (strstr (m2, "Final-Recipient: rfc822; pgp@partner.example"));
  g_assert_nonnull (strstr (m2, "Message-ID: <filter-test@example.net>")); /* the headers */
  g_assert_null (strstr (m2, MARKER));                                     /* never the body */
  g_assert_null (captured (4, "args"));
  log = mg_test_read (fx.log, &n);
  g_assert_nonnull (
    strstr (log, "\"recipients\":[\"nokey@partner.example\"],\"kind\":\"plain\",\"action\":\"refused\""));
  g_assert_nonnull (strstr (log, "\"outcome\":\"partly-refused\""));
}

/* sign = pgp in policy: what the recipient gets is signed as the sign-as identity (gpg --verify on the inner
 * multipart/signed after gpg decrypts it) */
static void
test_policy_signing (void)
{
  g_autofree char *conf =
    write_conf ("sign.conf", "[address bob@example.org]\nsign = pgp\nsign-as = alice@example.org\n");
  g_autofree char *alice = mg_gpg_fingerprint (fx.gpg, "alice@example.org");
  g_autofree char *m = NULL, *clear = NULL, *status = NULL, *sig = NULL, *content = NULL;
  const char *b, *boundary_end;
  MgRun r;

  reset ();
  filter (&r, conf, fx.plain, "--", "bob@example.org", NULL);
  g_assert_cmpint (r.status, ==, 0);
  mg_run_clear (&r);
  m = captured (1, "eml");
  clear = gpg_open (m);
  g_assert_nonnull (strstr (clear, "multipart/signed"));
  g_assert_nonnull (strstr (clear, "protocol=\"application/pgp-signature\""));
  /* split by hand (RFC 1847): the first part between the first two boundary lines, CRLF as signed */
  b = strstr (clear, "boundary=\"");
  g_assert_nonnull (b);
  {
    g_autofree char *boundary = g_strndup (b + 10, strcspn (b + 10, "\""));
    g_autofree char *delim = g_strconcat ("\r\n--", boundary, NULL);
    const char *first = strstr (clear, delim + 2);
    const char *start = strstr (first, "\r\n") + 2;
    const char *end = strstr (start, delim);
    const char *sig_begin = strstr (end, "-----BEGIN PGP SIGNATURE-----");
    const char *sig_end = strstr (sig_begin, "-----END PGP SIGNATURE-----") + 27;
    g_assert_true (first && end && sig_begin);
    boundary_end = end;
    content = mg_test_write (fx.dir, "signed-content", start, (gssize) (boundary_end - start));
    sig = mg_test_write (fx.dir, "signed-content.asc", sig_begin, (gssize) (sig_end - sig_begin));
  }
  status = mg_gpg (fx.gpg, NULL, 0, "--status-fd", "1", "--verify", sig, content, NULL);
  g_assert_nonnull (status);
  g_assert_nonnull (strstr (status, "[GNUPG:] VALIDSIG "));
  g_assert_nonnull (strstr (status, alice));
}

/* the address index (HOME/mimegate-addresses) never hides a key added later: the keyring changed, so it is rebuilt */
static void
test_address_index (void)
{
  g_autofree char *index = g_build_filename (fx.gpg->home, "mimegate-addresses", NULL);
  g_autofree char *m = NULL;
  GStatBuf st;
  MgRun r;

  reset ();
  filter (&r, NULL, fx.plain, "--", "late@example.org", NULL);
  g_assert_cmpint (r.status, ==, 0);
  mg_run_clear (&r);
  m = captured (1, "eml");
  g_assert_cmpstr (m, ==, fx.plain); /* no key yet: as it came */
  g_assert_cmpint (g_stat (index, &st), ==, 0);
  g_assert_cmpint (st.st_mode & 0777, ==, 0600);
  g_assert_true (mg_gpg_add_key (fx.gpg, "late@example.org", "ed25519"));
  reset ();
  filter (&r, NULL, fx.plain, "--", "late@example.org", NULL);
  g_assert_cmpint (r.status, ==, 0);
  mg_run_clear (&r);
  g_free (m);
  m = captured (1, "eml");
  g_assert_nonnull (strstr (m, "multipart/encrypted"));
  {
    g_autofree char *packets = recipients_of (m);
    g_autofree char *late = mg_gpg_encryption_keyid (fx.gpg, "late@example.org");
    g_assert_nonnull (strstr (packets, late));
  }
  {
    gsize n;
    g_autofree char *text = mg_test_read (index, &n);
    g_autofree char *fpr = mg_gpg_fingerprint (fx.gpg, "late@example.org");
    g_autofree char *line = g_strdup_printf ("\nlate@example.org\t%s\t", fpr);
    g_assert_true (g_str_has_prefix (text, "mimegate-index v3 "));
    g_assert_nonnull (strstr (text, line)); /* the key the lookup chose, and its encryption subkey */
  }
}

/* a bad configuration defers (75) with a 4.3.5 line naming file, line and key */
static void
test_config_errors (void)
{
  const struct {
    const char *extra;
    const char *want;
  } cases[] = {
    { "[domain typo.example]\nencrpyt = required\n", ":11: [domain typo.example] unknown key \"encrpyt\"" },
    { "[default]\nencrypt = always\n",
      ":11: [default] encrypt = \"always\" is not one of: never, opportunistic, required" },
    { "[domian x.example]\nencrypt = required\n", ":10: unknown group [domian x.example]" },
    { "[address nobody]\nform = keep\n", ":10: [address nobody] is not a mail address" },
  };

  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++) {
    g_autofree char *conf = write_conf ("bad.conf", cases[i].extra);
    g_autofree char *want = g_strdup_printf ("4.3.5 mimegate filter: %s%s", conf, cases[i].want);
    MgRun r;
    reset ();
    filter (&r, conf, fx.plain, "--", "alice@example.org", NULL);
    g_assert_cmpint (r.status, ==, 75);
    g_assert_true (g_str_has_prefix (r.err, want));
    g_assert_null (captured (1, "args"));
    mg_run_clear (&r);
  }
}

/* a store that cannot be read defers: nothing is delivered, in clear or otherwise */
static void
test_store_unreadable (void)
{
  g_autofree char *missing = g_build_filename (fx.dir, "no-such-home", NULL);
  g_autofree char *text = NULL, *conf = NULL, *want = NULL;
  MgRun r;

  text = g_strdup_printf ("[gateway]\ngnupg-home = %s\nx509-store = none\nreinject = /bin/false\n", missing);
  conf = mg_test_write (fx.dir, "missing.conf", text, -1);
  reset ();
  filter (&r, conf, fx.plain, "--", "alice@example.org", NULL);
  g_assert_cmpint (r.status, ==, 75);
  want = g_strdup_printf ("4.7.0 mimegate filter: GnuPG home %s does not exist; the message is deferred\n", missing);
  g_assert_cmpstr (r.err, ==, want);
  mg_run_clear (&r);

  /* on-error = pass: delivered as it came, unless a recipient requires encryption of this clear message */
  {
    g_autofree char *script = g_test_build_filename (G_TEST_DIST, "reinject-capture.sh", NULL);
    g_autofree char *text2 = g_strdup_printf ("[gateway]\ngnupg-home = %s\nx509-store = none\nreinject = %s %s\n"
                                              "[default]\non-error = pass\n[domain partner.example]\n"
                                              "encrypt = required\n",
                                              missing, script, fx.out);
    g_autofree char *conf2 = mg_test_write (fx.dir, "pass.conf", text2, -1);
    g_autofree char *m = NULL;
    reset ();
    filter (&r, conf2, fx.plain, "--", "alice@example.org", "nobody@example.com", NULL);
    g_assert_cmpint (r.status, ==, 0);
    mg_run_clear (&r);
    m = captured (1, "eml");
    g_assert_cmpstr (m, ==, fx.plain);
    g_assert_null (captured (2, "args")); /* one group: both get the same bytes */
    reset ();
    filter (&r, conf2, fx.plain, "--", "alice@example.org", "pgp@partner.example", NULL);
    g_assert_cmpint (r.status, ==, 75);
    g_assert_true (g_str_has_prefix (r.err, "4.7.0 mimegate filter: GnuPG home "));
    g_assert_null (captured (1, "args"));
    mg_run_clear (&r);
  }
}

/* reinjection that fails defers; a later group failing after an earlier one was delivered defers all (duplicates
 * rather than loss); a hanging one is killed at the timeout and defers, leaving no child behind */
static void
test_reinject_failures (void)
{
  g_autofree char *log = NULL;
  gsize n;
  MgRun r;

  reset ();
  g_free (mg_test_write (fx.out, "fail-1", "", 0));
  filter (&r, NULL, fx.plain, "--", "alice@example.org", NULL);
  g_assert_cmpint (r.status, ==, 75);
  g_assert_true (g_str_has_prefix (r.err, "4.3.0 mimegate filter: reinjection failed: "));
  g_assert_nonnull (strstr (r.err, "exited with status 1: postdrop: warning: unable to look up public/pickup"));
  mg_run_clear (&r);

  reset ();
  g_free (mg_test_write (fx.out, "fail-2", "", 0));
  filter (&r, NULL, fx.plain, "--", "alice@example.org", "nobody@example.com", NULL);
  g_assert_cmpint (r.status, ==, 75);
  g_assert_nonnull (strstr (r.err, "(earlier groups were delivered; deferring all: duplicates rather than loss)"));
  mg_run_clear (&r);
  log = mg_test_read (fx.log, &n);
  g_assert_nonnull (strstr (log, "\"recipients\":[\"alice@example.org\"]"));
  g_assert_nonnull (strstr (log, "\"outcome\":\"delivered\""));
  g_assert_nonnull (strstr (log, "\"record\":\"message\""));
  g_assert_nonnull (strstr (log, "\"outcome\":\"deferred\",\"status\":{\"exit\":75"));

  {
    g_autofree char *conf = NULL, *text = NULL, *pid_text = NULL;
    g_autofree char *script = g_test_build_filename (G_TEST_DIST, "reinject-capture.sh", NULL);
    gint64 start;
    text = g_strdup_printf ("[gateway]\ngnupg-home = %s\nx509-store = none\ntrust-model = always\ntimeout = 2\n"
                            "reinject = %s %s\n",
                            fx.gpg->home, script, fx.out);
    conf = mg_test_write (fx.dir, "hang.conf", text, -1);
    reset ();
    g_free (mg_test_write (fx.out, "hang", "", 0));
    start = g_get_monotonic_time ();
    filter (&r, conf, fx.plain, "--", "nobody@example.com", NULL);
    g_assert_cmpint (r.status, ==, 75);
    g_assert_true (g_str_has_prefix (r.err, "4.4.7 mimegate filter: stopped (timeout or SIGTERM)"));
    g_assert_cmpint (g_get_monotonic_time () - start, <, 30 * G_USEC_PER_SEC); /* not the 60 s sleep */
    mg_run_clear (&r);
    pid_text = captured (0, "pid"); /* not there: the pid file has its own name */
    g_assert_null (pid_text);
    {
      g_autofree char *pid_path = g_build_filename (fx.out, "hung.pid", NULL);
      gsize len;
      g_autofree char *pid = mg_test_read (pid_path, &len);
      /* the shell that ran the reinject command was killed (gone, or a zombie nobody reaped yet), so it cannot
       * commit anything later */
      g_autofree char *stat_path = g_strdup_printf ("/proc/%s/stat", g_strstrip (pid));
      g_autofree char *stat = NULL;
      /* SIGKILL is delivered asynchronously: give the dying process up to 5 s to be gone or a zombie */
      for (guint i = 0; i < 250; i++) {
        g_clear_pointer (&stat, g_free);
        if (!g_file_get_contents (stat_path, &stat, NULL, NULL) || strstr (stat, ") Z ") != NULL)
          break;
        g_usleep (20 * 1000);
      }
      if (stat != NULL)
        g_assert_nonnull (strstr (stat, ") Z "));
      /* nor anything it started (the sleep standing in for postdrop): the whole process group was killed */
      {
        g_autofree char *alive = NULL;
        for (guint i = 0; i < 250; i++) { /* again up to 5 s for SIGKILL to land */
          g_autoptr (GDir) proc = g_dir_open ("/proc", 0, NULL);
          const char *name;
          g_clear_pointer (&alive, g_free);
          while (proc != NULL && (name = g_dir_read_name (proc)) != NULL && alive == NULL) {
            g_autofree char *p = g_strdup_printf ("/proc/%s/stat", name);
            g_autofree char *st = NULL;
            g_auto (GStrv) f = NULL;
            const char *close_paren;
            if (!g_ascii_isdigit (name[0]) || !g_file_get_contents (p, &st, NULL, NULL) ||
                (close_paren = strrchr (st, ')')) == NULL)
              continue;
            f = g_strsplit (close_paren + 2, " ", 4); /* state, ppid, pgrp */
            if (g_strv_length (f) >= 3 && g_str_equal (f[2], pid) && !g_str_equal (f[0], "Z"))
              alive = g_strdup (name);
          }
          if (alive == NULL)
            break;
          g_usleep (20 * 1000);
        }
        if (alive != NULL)
          g_error ("process %s of the killed reinjection is still running", alive);
      }
    }
  }
}

/* --stdout: the single result on stdout; recipients that need different results are refused with 4.3.5 */
static void
test_stdout (void)
{
  g_autofree char *clear = NULL;
  MgRun r;

  reset ();
  filter (&r, NULL, fx.plain, "--stdout", "--", "alice@example.org", NULL);
  g_assert_cmpint (r.status, ==, 0);
  clear = gpg_open (r.out);
  g_assert_nonnull (strstr (clear, MARKER));
  g_assert_null (captured (1, "args"));
  mg_run_clear (&r);
  filter (&r, NULL, fx.plain, "--stdout", "--", "alice@example.org", "nobody@example.com", NULL);
  g_assert_cmpint (r.status, ==, 75);
  g_assert_true (g_str_has_prefix (r.err, "4.3.5 mimegate filter: --stdout needs every recipient to get the same"));
  g_assert_cmpuint (r.out_len, ==, 0);
  mg_run_clear (&r);
}

/* what is delivered unchanged: encrypted to a key the gateway does not hold; decrypt = false; not MIME at all */
static void
test_unchanged (void)
{
  const char *entity = "Content-Type: text/plain\r\n\r\nHello " MARKER "\r\n";
  g_autofree char *armored = mg_gpg (fx.other, entity, strlen (entity), "-a", "-e", "-r", "stranger@example.org", NULL);
  g_autofree char *foreign = g_strdup_printf (
    "From: s@example.net\nTo: a@nodecrypt.example\nSubject: x\nMIME-Version: 1.0\nContent-Type: multipart/encrypted; "
    "protocol=\"application/pgp-encrypted\"; boundary=b\n\n--b\nContent-Type: application/pgp-encrypted\n\n"
    "Version: 1\n--b\nContent-Type: application/octet-stream\n\n%s\n--b--\n",
    armored);
  g_autofree char *held_armored = mg_gpg (fx.gpg, entity, strlen (entity), "-a", "-e", "-r", "alice@example.org", NULL);
  g_autofree char *held = g_strdup_printf (
    "From: s@example.net\nTo: a@nodecrypt.example\nSubject: x\nMIME-Version: 1.0\nContent-Type: multipart/encrypted; "
    "protocol=\"application/pgp-encrypted\"; boundary=b\n\n--b\nContent-Type: application/pgp-encrypted\n\n"
    "Version: 1\n--b\nContent-Type: application/octet-stream\n\n%s\n--b--\n",
    held_armored);
  const char *garbage = "this is not a mail message at all \x01\x02\n";
  MgRun r;

  struct {
    const char *input;
    const char *rcpt;
  } cases[] = {
    { foreign, "nobody@example.com" }, /* not held: as it came */
    { held, "a@nodecrypt.example" },   /* held, but decrypt = false for this domain */
    { garbage, "nobody@example.com" },
  };
  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++) {
    g_autofree char *m = NULL;
    reset ();
    filter (&r, NULL, cases[i].input, "--", cases[i].rcpt, NULL);
    g_assert_cmpint (r.status, ==, 0);
    mg_run_clear (&r);
    m = captured (1, "eml");
    g_assert_cmpstr (m, ==, cases[i].input);
  }
  /* held and allowed: decrypted for delivery and scanning */
  {
    g_autofree char *m = NULL;
    reset ();
    filter (&r, NULL, held, "--", "nobody@example.com", NULL);
    g_assert_cmpint (r.status, ==, 0);
    mg_run_clear (&r);
    m = captured (1, "eml");
    g_assert_nonnull (strstr (m, "Hello " MARKER));
    g_assert_null (strstr (m, "BEGIN PGP MESSAGE"));
  }
}

/* the log: one record per group and one per message, stable fields, never the body; stamps on the keep path */
static void
test_log_and_stamps (void)
{
  g_autofree char *log = NULL, *m = NULL;
  g_autofree char *msg = g_strdup_printf ("Authentication-Results: gw.example; smime=pass\n%s", fx.plain);
  gsize n;
  MgRun r;

  reset ();
  filter (&r, NULL, msg, "--queue-id", "4XyZ1k0abc", "--", "alice@example.org", "nobody@example.com", NULL);
  g_assert_cmpint (r.status, ==, 0);
  mg_run_clear (&r);
  m = captured (2, "eml");
  g_assert_cmpstr (m, ==, fx.plain); /* the forged stamp is gone, nothing else changed */
  log = mg_test_read (fx.log, &n);
  {
    g_auto (GStrv) lines = g_strsplit (g_strstrip (log), "\n", -1);
    const char *fields[] = { "\"record\":",
                             "\"message_id\":\"filter-test@example.net\"",
                             "\"queue_id\":\"4XyZ1k0abc\"",
                             "\"sender\":\"sender@example.net\"",
                             "\"recipients\":[",
                             "\"kind\":\"plain\"",
                             "\"action\":",
                             "\"form\":",
                             "\"keys\":[",
                             "\"signature\":",
                             "\"outcome\":",
                             "\"status\":{\"exit\":0",
                             "\"duration_ms\":",
                             "\"text\":" };
    g_assert_cmpuint (g_strv_length (lines), ==, 3); /* two groups, one message */
    for (guint i = 0; lines[i] != NULL; i++)
      for (gsize f = 0; f < G_N_ELEMENTS (fields); f++)
        if (strstr (lines[i], fields[f]) == NULL)
          g_error ("log line %u lacks %s: %s", i, fields[f], lines[i]);
    g_assert_nonnull (strstr (lines[0], "\"form\":\"pgp-mime\""));
    g_assert_nonnull (strstr (lines[1], "\"form\":\"keep\""));
  }
  g_assert_null (strstr (log, MARKER));
  g_assert_null (strstr (log, "PRIVATE KEY"));
}

/* ---- faults: for each, the exit code, the first output line, and that the message is neither lost nor delivered
 * in clear to a required recipient ---- */

/* spool_empty - nothing of any run is left in TMPDIR / spool-dir (clear text is never written to disk) */
static void
spool_empty (void)
{
  g_autoptr (GDir) d = g_dir_open (fx.spool, 0, NULL);
  const char *name = d ? g_dir_read_name (d) : NULL;

  if (name != NULL)
    g_error ("the spool directory holds %s after a run", name);
}

/* pgp_mime_to_alice - a PGP/MIME message the gateway can decrypt (alice's key), To: inline@example.org */
static char *
pgp_mime_to_alice (const char *text)
{
  g_autofree char *entity = g_strdup_printf ("Content-Type: text/plain; charset=utf-8\r\n\r\n%s\r\n", text);
  g_autofree char *armored = mg_gpg (fx.gpg, entity, strlen (entity), "-a", "-e", "-r", "alice@example.org", NULL);

  return g_strdup_printf ("From: s@example.net\nTo: inline@example.org\nSubject: x\nMIME-Version: 1.0\n"
                          "Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=b\n\n"
                          "--b\nContent-Type: application/pgp-encrypted\n\nVersion: 1\n--b\n"
                          "Content-Type: application/octet-stream\n\n%s\n--b--\n",
                          armored);
}

/* the agent cannot be started (gpg.conf: agent-program /bin/false): gpg answers "no secret key" for a key the home
 * holds; that is a transient fault, deferred, never passed on as if the key were not held */
static void
test_fault_agent_down (void)
{
  g_autofree char *home = g_build_filename (fx.dir, "agentless", NULL);
  g_autofree char *cmd = g_strdup_printf ("cp -r '%s' '%s' && rm -f '%s'/S.* && echo 'agent-program /bin/false' >> "
                                          "'%s/gpg.conf'",
                                          fx.gpg->home, home, home, home);
  const char *sh[] = { "/bin/sh", "-c", cmd, NULL };
  g_autofree char *msg = pgp_mime_to_alice ("Hello " MARKER);
  g_autofree char *text = NULL, *conf = NULL;
  MgRun r;

  g_assert_true (mg_test_run (&r, sh, NULL, NULL, 0));
  g_assert_cmpint (r.status, ==, 0);
  mg_run_clear (&r);
  text = g_strdup_printf ("[gateway]\ngnupg-home = %s\nx509-store = none\ntrust-model = always\nreinject = %s\n", home,
                          "/bin/false");
  conf = mg_test_write (fx.dir, "agentless.conf", text, -1);
  reset ();
  filter (&r, conf, msg, "--", "inline@example.org", NULL);
  g_assert_cmpint (r.status, ==, 75);
  g_assert_true (g_str_has_prefix (r.err, "4.7.0 mimegate filter: GnuPG holds a secret key for 0x"));
  g_assert_nonnull (strstr (r.err, "but cannot use it now (is gpg-agent running?)"));
  mg_run_clear (&r);
  {
    const char *kill_argv[] = { "gpgconf", "--homedir", home, "--kill", "all", NULL };
    g_assert_true (mg_test_run (&r, kill_argv, NULL, NULL, 0));
    mg_run_clear (&r);
  }
  /* the agent killed between runs: gpg starts it again and the message converts */
  {
    const char *kill_argv[] = { "gpgconf", "--homedir", fx.gpg->home, "--kill", "gpg-agent", NULL };
    g_autofree char *m = NULL, *clear = NULL;
    g_assert_true (mg_test_run (&r, kill_argv, NULL, NULL, 0));
    mg_run_clear (&r);
    reset ();
    filter (&r, NULL, msg, "--", "inline@example.org", NULL);
    g_assert_cmpint (r.status, ==, 0);
    mg_run_clear (&r);
    m = captured (1, "eml");
    g_assert_null (strstr (m, MARKER));
    clear = gpg_open (m);
    g_assert_nonnull (strstr (clear, MARKER));
  }
  spool_empty ();
}

/* the X.509 store unusable: not a directory, a private key readable by others, the wrong passphrase */
static void
test_fault_x509 (void)
{
  g_autofree char *file = mg_test_write (fx.dir, "not-a-store", "x", 1);
  g_autofree char *store2 = g_build_filename (fx.dir, "x509-2", NULL);
  g_autofree char *carol_key = mg_ca_path (fx.ca, "carol", ".key");
  g_autofree char *cmd = g_strdup_printf ("cp -r '%s' '%s' && openssl pkey -in '%s' -aes256 -passout pass:right "
                                          "-out '%s/private/carol.key' && chmod 600 '%s/private/carol.key' && "
                                          "printf wrong > '%s/pass' && chmod 600 '%s/pass'",
                                          fx.store, store2, carol_key, store2, store2, fx.dir, fx.dir);
  const char *sh[] = { "/bin/sh", "-c", cmd, NULL };
  struct {
    const char *store;
    const char *extra;
    const char *want;
  } cases[] = {
    { file, "", "4.7.0 mimegate filter: X.509 store " },
    { store2, "x509-passphrase-file = ", "4.7.0 mimegate filter: " },
  };
  MgRun r;

  g_assert_true (mg_test_run (&r, sh, NULL, NULL, 0));
  g_assert_cmpint (r.status, ==, 0);
  mg_run_clear (&r);
  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++) {
    g_autofree char *extra = cases[i].extra[0] ? g_strconcat (cases[i].extra, fx.dir, "/pass\n", NULL) : g_strdup ("");
    g_autofree char *text = g_strdup_printf ("[gateway]\ngnupg-home = %s\nx509-store = %s\ntrust-model = always\n"
                                             "reinject = /bin/false\n%s",
                                             fx.gpg->home, cases[i].store, extra);
    g_autofree char *conf = mg_test_write (fx.dir, "x509-fault.conf", text, -1);
    filter (&r, conf, fx.plain, "--", "dave@example.net", NULL);
    g_test_message ("%s", r.err);
    g_assert_cmpint (r.status, ==, 75);
    g_assert_true (g_str_has_prefix (r.err, cases[i].want));
    g_assert_nonnull (strstr (r.err, "the message is deferred"));
    mg_run_clear (&r);
  }
  /* the passphrase right: the same store serves */
  {
    g_autofree char *pass = g_build_filename (fx.dir, "pass", NULL);
    g_autofree char *text = NULL, *conf = NULL;
    g_file_set_contents_full (pass, "right", 5, G_FILE_SET_CONTENTS_CONSISTENT, 0600, NULL);
    text = g_strdup_printf ("[gateway]\ngnupg-home = %s\nx509-store = %s\ntrust-model = always\n"
                            "x509-passphrase-file = %s\n",
                            fx.gpg->home, store2, pass);
    conf = mg_test_write (fx.dir, "x509-ok.conf", text, -1);
    filter (&r, conf, fx.plain, "--stdout", "--", "dave@example.net", NULL);
    g_assert_cmpint (r.status, ==, 0);
    g_assert_nonnull (strstr (r.out, "application/pkcs7-mime"));
    mg_run_clear (&r);
  }
  spool_empty ();
}

/* the reinject command missing; a file size limit (a full spool): deferred, nothing half-written is kept */
static void
test_fault_reinject_and_disk (void)
{
  g_autofree char *text = g_strdup_printf ("[gateway]\ngnupg-home = %s\nx509-store = none\ntrust-model = always\n"
                                           "reinject = /nonexistent/sendmail -i\n",
                                           fx.gpg->home);
  g_autofree char *conf = mg_test_write (fx.dir, "missing-reinject.conf", text, -1);
  const char *limited[] = { "/bin/sh", "-c", "ulimit -f 1; exec \"$@\"", "sh", NULL };
  GString *big = g_string_new (fx.plain);
  MgRun r;

  filter (&r, conf, fx.plain, "--", "alice@example.org", NULL);
  g_assert_cmpint (r.status, ==, 75);
  g_assert_true (g_str_has_prefix (r.err, "4.3.0 mimegate filter: reinjection failed: "));
  g_assert_nonnull (strstr (r.err, "/nonexistent/sendmail"));
  mg_run_clear (&r);

  /* ulimit -f 1 (512 bytes): the reinjection cannot write a 4 KB message; the log line cannot be written either */
  while (big->len < 4096)
    g_string_append (big, "padding line\n");
  reset ();
  filter_wrapped (&r, limited, NULL, big->str, big->len, "--", "nobody@example.com", NULL);
  g_assert_cmpint (r.status, ==, 75);
  g_assert_true (g_str_has_prefix (r.err, "4.3.0 mimegate filter: reinjection failed: "));
  mg_run_clear (&r);
  g_string_free (big, TRUE);
  spool_empty ();
}

/* stdin closed early: the truncated message is what the filter has; for a required recipient it is encrypted or
 * refused, never in clear */
static void
test_fault_truncated (void)
{
  g_autofree char *half = g_strndup (fx.plain, strlen (fx.plain) - 12);
  g_autofree char *half_pgp = NULL, *m = NULL;
  MgRun r;

  reset ();
  filter (&r, NULL, half, "--", "pgp@partner.example", NULL);
  g_assert_cmpint (r.status, ==, 0);
  mg_run_clear (&r);
  m = captured (1, "eml");
  g_assert_null (strstr (m, "Hello "));
  g_assert_nonnull (strstr (m, "multipart/encrypted"));
  g_clear_pointer (&m, g_free);
  /* a PGP/MIME message cut in its armor: cannot be decrypted, delivered as it came (still encrypted) */
  {
    g_autofree char *whole = pgp_mime_to_alice ("Hello " MARKER);
    half_pgp = g_strndup (whole, strlen (whole) / 2);
  }
  reset ();
  filter (&r, NULL, half_pgp, "--", "pgp@partner.example", NULL);
  g_assert_cmpint (r.status, ==, 0);
  mg_run_clear (&r);
  m = captured (1, "eml");
  g_assert_cmpstr (m, ==, half_pgp);
  spool_empty ();
}

/* SIGTERM while reinjecting: 75 with 4.4.7, the reinjection's process group killed, nothing left on disk */
static void
test_fault_sigterm (void)
{
  g_autofree char *script = g_test_build_filename (G_TEST_DIST, "reinject-capture.sh", NULL);
  g_autofree char *text = g_strdup_printf ("[gateway]\ngnupg-home = %s\nx509-store = none\ntrust-model = always\n"
                                           "reinject = %s %s\n",
                                           fx.gpg->home, script, fx.out);
  g_autofree char *conf = mg_test_write (fx.dir, "term.conf", text, -1);
  g_autofree char *in = mg_test_write (fx.dir, "term.eml", fx.plain, -1);
  g_autofree char *pid_path = g_build_filename (fx.out, "hung.pid", NULL);
  g_auto (GStrv) env = mg_test_env ("TMPDIR", fx.spool, NULL);
  const char *argv[] = { mg_test_mimegate (), "filter", "-c", conf, "-f", "s@example.net", "--",
                         "alice@example.org", NULL };
  g_autoptr (GSubprocessLauncher) l = g_subprocess_launcher_new (G_SUBPROCESS_FLAGS_STDERR_PIPE);
  g_autoptr (GSubprocess) p = NULL;
  g_autoptr (GBytes) err = NULL;
  gint64 deadline = g_get_monotonic_time () + 20 * G_USEC_PER_SEC;

  reset ();
  g_free (mg_test_write (fx.out, "hang", "", 0));
  g_subprocess_launcher_set_environ (l, env);
  g_subprocess_launcher_set_stdin_file_path (l, in);
  p = g_subprocess_launcher_spawnv (l, argv, NULL);
  g_assert_nonnull (p);
  while (!g_file_test (pid_path, G_FILE_TEST_EXISTS) && g_get_monotonic_time () < deadline)
    g_usleep (20 * 1000);
  g_assert_true (g_file_test (pid_path, G_FILE_TEST_EXISTS));
  g_subprocess_send_signal (p, SIGTERM);
  g_assert_true (g_subprocess_communicate (p, NULL, NULL, NULL, &err, NULL));
  g_assert_true (g_subprocess_get_if_exited (p));
  g_assert_cmpint (g_subprocess_get_exit_status (p), ==, 75);
  g_assert_true (g_str_has_prefix (g_bytes_get_data (err, NULL), "4.4.7 mimegate filter: stopped"));
  spool_empty ();
}

/* size and shape: over max-size, a 60 MB attachment, 10,000 parts, 10,000 levels, 5 MB of headers */
static void
test_fault_sizes (void)
{
  const char *rss[] = {
    "python3", "-c",
    "import resource,subprocess,sys\n"
    "p = subprocess.run(sys.argv[1:])\n"
    "print('peak-rss-kb', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(p.returncode)",
    NULL
  };
  MgRun r;

  /* 100 MB with the default max-size (90M): kept as it came for an opportunistic recipient, refused (never clear)
   * for a required one */
  {
    GString *m = g_string_new ("From: s@example.net\nTo: alice@example.org\nSubject: huge\nMIME-Version: 1.0\n"
                               "Content-Type: text/plain\n\n");
    g_autofree char *got = NULL;
    while (m->len < 100 * 1024 * 1024)
      g_string_append (m, "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz01234567\n");
    reset ();
    filter_wrapped (&r, rss, NULL, m->str, m->len, "--", "alice@example.org", NULL);
    g_test_message ("100 MB: %s", strstr (r.err, "peak-rss-kb"));
    g_assert_cmpint (r.status, ==, 0);
    mg_run_clear (&r);
    got = captured (1, "eml");
    g_assert_cmpuint (strlen (got), ==, m->len);
    reset ();
    filter_wrapped (&r, NULL, NULL, m->str, m->len, "--", "pgp@partner.example", NULL);
    g_assert_cmpint (r.status, ==, 69);
    g_assert_true (g_str_has_prefix (r.err, "5.7.1 <pgp@partner.example>: the message cannot be encrypted: "));
    g_assert_null (captured (1, "args"));
    mg_run_clear (&r);
    g_string_free (m, TRUE);
  }
  /* a 60 MB attachment passes (encrypted for alice; gpg opens it) */
  {
    gsize n = 60 * 1024 * 1024;
    guint8 *bytes = g_malloc (n);
    g_autofree char *b64 = NULL, *got = NULL, *clear = NULL;
    GString *m;
    for (gsize i = 0; i < n; i++)
      bytes[i] = (guint8) ((i * 2654435761u) >> 13);
    b64 = g_base64_encode (bytes, n);
    g_free (bytes);
    m = g_string_new ("From: s@example.net\nTo: alice@example.org\nSubject: big\nMIME-Version: 1.0\n"
                      "Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\nbig one\n--b\n"
                      "Content-Type: application/octet-stream\nContent-Disposition: attachment; filename=big.bin\n"
                      "Content-Transfer-Encoding: base64\n\n");
    for (gsize i = 0, len = strlen (b64); i < len; i += 76) {
      g_string_append_len (m, b64 + i, (gssize) MIN (76, len - i));
      g_string_append_c (m, '\n');
    }
    g_string_append (m, "--b--\n");
    reset ();
    filter_wrapped (&r, rss, NULL, m->str, m->len, "--", "alice@example.org", NULL);
    g_test_message ("60 MB attachment (message %zu bytes): %s", m->len, strstr (r.err, "peak-rss-kb"));
    g_assert_cmpint (r.status, ==, 0);
    mg_run_clear (&r);
    got = captured (1, "eml");
    g_assert_nonnull (strstr (got, "multipart/encrypted"));
    clear = gpg_open (got);
    g_assert_nonnull (strstr (clear, "filename=big.bin"));
    g_string_free (m, TRUE);
  }
  /* 10,000 parts, 10,000 levels, 5 MB of headers: a clear outcome each, never clear text for a required recipient */
  for (guint shape = 0; shape < 3; shape++) {
    GString *m = g_string_new ("From: s@example.net\nTo: alice@example.org\nSubject: shape\nMIME-Version: 1.0\n");
    gint64 start = g_get_monotonic_time ();
    if (shape == 0) {
      g_string_append (m, "Content-Type: multipart/mixed; boundary=p\n\n");
      for (guint i = 0; i < 10000; i++)
        g_string_append_printf (m, "--p\nContent-Type: text/plain\n\npart %u\n", i);
      g_string_append (m, "--p--\n");
    } else if (shape == 1) {
      for (guint i = 0; i < 10000; i++)
        g_string_append_printf (m, "Content-Type: multipart/mixed; boundary=l%u\n\n--l%u\n", i, i);
      g_string_append (m, "Content-Type: text/plain\n\ndeep\n");
    } else {
      while (m->len < 5 * 1024 * 1024)
        g_string_append (m, "X-Filler: a header line to make the header block large, repeated many times\n");
      g_string_append (m, "Content-Type: text/plain\n\nbody after 5 MB of headers\n");
    }
    reset ();
    filter_wrapped (&r, NULL, NULL, m->str, m->len, "--", "alice@example.org", NULL);
    g_test_message ("shape %u (%zu bytes): exit %d in %" G_GINT64_FORMAT " ms", shape, m->len, r.status,
                    (g_get_monotonic_time () - start) / 1000);
    g_assert_cmpint (r.status, ==, 0);
    g_assert_true (captured_exists (1));
    mg_run_clear (&r);
    reset ();
    filter_wrapped (&r, NULL, NULL, m->str, m->len, "--", "pgp@partner.example", NULL);
    if (r.status == 0) {
      g_autofree char *got = captured (1, "eml");
      g_assert_nonnull (strstr (got, "multipart/encrypted"));
    } else {
      g_assert_cmpint (r.status, ==, 69);
      g_assert_true (g_str_has_prefix (r.err, "5.7.1 <pgp@partner.example>: the message cannot be encrypted"));
    }
    mg_run_clear (&r);
    g_string_free (m, TRUE);
  }
  spool_empty ();
}

/* security: smime-cipher = aes-gcm never yields CBC; envelope addresses with CR/LF never reach a header or a
 * command line */
static void
test_security (void)
{
  g_autofree char *conf = write_conf ("gcm.conf", "[address dave@example.net]\nsmime-cipher = aes-gcm\n");
  g_autofree char *m = NULL, *asn1 = NULL;
  MgRun r;

  reset ();
  filter (&r, conf, fx.plain, "--", "dave@example.net", NULL);
  g_assert_cmpint (r.status, ==, 0);
  mg_run_clear (&r);
  m = captured (1, "eml");
  g_assert_nonnull (strstr (m, "smime-type=authEnveloped-data"));
  {
    const char *b = strstr (m, "\n\n");
    const char *body = strstr (b + 2, "\n\n") ? b + 2 : b;
    g_autofree char *der_b64 =
      g_strdup (strstr (body, "Content-Transfer-Encoding: base64") ? strstr (body, "\n\n") + 2 : body);
    gsize n;
    g_autofree guchar *der = g_base64_decode (der_b64, &n);
    asn1 = mg_ca_openssl (fx.ca, (const char *) der, n, NULL, "asn1parse", "-inform", "DER", NULL);
  }
  g_assert_nonnull (strstr (asn1, "aes-256-gcm"));
  g_assert_null (strstr (asn1, "-cbc"));

  reset ();
  filter (&r, NULL, fx.plain, "--", "alice@example.org", "eve@example.org\r\nBcc: mallory@example.org", NULL);
  g_assert_cmpint (r.status, ==, 0);
  mg_run_clear (&r);
  g_free (m);
  m = captured (1, "args");
  g_assert_cmpstr (m, ==, "-f\nsender@example.net\n--\nalice@example.org\n");
  g_free (m);
  m = captured (2, "args");
  g_assert_cmpstr (m, ==, "-f\n\n--\nsender@example.net\n");
  g_free (m);
  m = captured (2, "eml"); /* the DSN: the bad address shown, but it adds no line of its own anywhere */
  g_assert_nonnull (strstr (m, "Final-Recipient: rfc822; eve@example.org??Bcc??mallory@example.org\nAction: failed"));
  g_assert_nonnull (strstr (m, "5.1.3 <eve@example.org??Bcc??mallory@example.org>: not a valid recipient address"));
  g_assert_null (strstr (m, "\nBcc:"));
  g_assert_null (strstr (m, "\r"));
  g_assert_null (captured (3, "args"));
  spool_empty ();
}

int
main (int argc, char **argv)
{
  int status;

  g_test_init (&argc, &argv, NULL);
  if (!mg_test_have_program ("gpg") || !mg_test_have_program ("openssl"))
    return 77;
  setup ();
  g_test_add_func ("/filter/forms", test_forms);
  g_test_add_func ("/filter/blind-copy", test_blind_copy);
  g_test_add_func ("/filter/conversions", test_conversions);
  g_test_add_func ("/filter/required", test_required);
  g_test_add_func ("/filter/policy-signing", test_policy_signing);
  g_test_add_func ("/filter/address-index", test_address_index);
  g_test_add_func ("/filter/config-errors", test_config_errors);
  g_test_add_func ("/filter/store-unreadable", test_store_unreadable);
  g_test_add_func ("/filter/reinject-failures", test_reinject_failures);
  g_test_add_func ("/filter/stdout", test_stdout);
  g_test_add_func ("/filter/unchanged", test_unchanged);
  g_test_add_func ("/filter/log-and-stamps", test_log_and_stamps);
  g_test_add_func ("/faults/agent-down", test_fault_agent_down);
  g_test_add_func ("/faults/x509", test_fault_x509);
  g_test_add_func ("/faults/reinject-and-disk", test_fault_reinject_and_disk);
  g_test_add_func ("/faults/truncated", test_fault_truncated);
  g_test_add_func ("/faults/sigterm", test_fault_sigterm);
  g_test_add_func ("/faults/sizes", test_fault_sizes);
  g_test_add_func ("/security/cipher-and-injection", test_security);
  status = g_test_run ();
  mg_gpg_free (fx.gpg);
  mg_gpg_free (fx.other);
  mg_ca_free (fx.ca);
  mg_test_rmtree (fx.dir);
  g_free (fx.dir);
  g_free (fx.store);
  g_free (fx.out);
  g_free (fx.conf);
  g_free (fx.log);
  g_free (fx.plain);
  g_free (fx.spool);
  return status;
}
