/* test-cli.c - the mimegate program as admins and Postfix run it: help, versions, usage errors and their exit codes,
 * translated output, inspect's text and JSON, scan over directories, mbox files and Maildirs with its summary and
 * progress bar. JSON is checked with python3's parser, not ours. */
#include "config.h"

#include <string.h>

#include <glib/gstdio.h>

#include "testutil.h"

static const char *commands[] = { "filter", "inspect", "convert", "keys", "scan" };

static const char pgp_mime[] =
  "From: a@example.org\nTo: b@example.org\nSubject: x\nMIME-Version: 1.0\n"
  "Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=b\n\n"
  "--b\nContent-Type: application/pgp-encrypted\n\nVersion: 1\n--b\nContent-Type: application/octet-stream\n\n"
  "-----BEGIN PGP MESSAGE-----\n\nwcBMA0xKLOwK1LQ2AQf/ZZZZ\n-----END PGP MESSAGE-----\n--b--\n";
static const char smime[] = "From: a@example.org\nSubject: y\nMIME-Version: 1.0\n"
                            "Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\n"
                            "Content-Transfer-Encoding: base64\n\nMIAGCSqGSIb3DQEHA6CAMIACAQA=\n";
static const char plain[] = "From: a@example.org\nSubject: z\n\nhello\n";

/* run - mimegate with @args (NULL-terminated), English unless @language, optional stdin */
static void
run (MgRun *r, const char *language, const char *input, const char *const *args)
{
  g_autoptr (GPtrArray) argv = g_ptr_array_new ();
  g_auto (GStrv) env = mg_test_env ("LANGUAGE", language, "LC_ALL", "C.UTF-8", "LANG", NULL, NULL);

  g_ptr_array_add (argv, (gpointer) mg_test_mimegate ());
  for (guint i = 0; args[i]; i++)
    g_ptr_array_add (argv, (gpointer) args[i]);
  g_ptr_array_add (argv, NULL);
  g_assert_true (
    mg_test_run (r, (const char *const *) argv->pdata, (const char *const *) env, input, input ? strlen (input) : 0));
}

#define RUN(r, ...) run ((r), NULL, NULL, (const char *const[]){ __VA_ARGS__, NULL })

static guint
lines (const char *s)
{
  guint n = 0;

  for (; *s; s++)
    n += *s == '\n';
  return n;
}

static void
test_help_and_version (void)
{
  MgRun r;

  RUN (&r, "--help");
  g_assert_cmpint (r.status, ==, 0);
  for (gsize i = 0; i < G_N_ELEMENTS (commands); i++)
    g_assert_nonnull (strstr (r.out, commands[i]));
  mg_run_clear (&r);
  RUN (&r, "--version");
  g_assert_cmpint (r.status, ==, 0);
  g_assert_true (g_str_has_prefix (r.out, "mimegate " PACKAGE_VERSION " (GMime 3."));
  mg_run_clear (&r);
  for (gsize i = 0; i < G_N_ELEMENTS (commands); i++) {
    g_autofree char *usage = g_strdup_printf ("mimegate %s", commands[i]);
    RUN (&r, commands[i], "--help");
    g_assert_cmpint (r.status, ==, 0);
    g_assert_nonnull (strstr (r.out, usage));
    g_assert_nonnull (strstr (r.out, "--version"));
    mg_run_clear (&r);
    RUN (&r, commands[i], "--version");
    g_assert_cmpint (r.status, ==, 0);
    g_assert_true (g_str_has_prefix (r.out, "mimegate " PACKAGE_VERSION));
    mg_run_clear (&r);
  }
}

/* usage mistakes: one line; 64, except filter, which defers (75) with an RFC 3463 code so Postfix retries */
static void
test_usage_errors (void)
{
  struct {
    const char *args[8];
    int status;
    const char *prefix;
  } cases[] = {
    { { "inspect", "--bogus" }, 64, "mimegate inspect: " },
    { { "inspect" }, 64, "mimegate inspect: " },
    { { "scan", "--bogus" }, 64, "mimegate scan: " },
    { { "scan" }, 64, "mimegate scan: " },
    { { "keys" }, 64, "mimegate keys: " },
    { { "keys", "--nope", "a@example.org" }, 64, "mimegate keys: " },
    { { "keys", "Bob <b@example.org>" }, 64, "mimegate keys: " },
    { { "convert", "-r", "a@example.org", "x.eml" }, 64, "mimegate convert: " },
    { { "convert", "--to", "rot13", "-r", "a@example.org", "x.eml" }, 64, "mimegate convert: unknown form" },
    { { "convert", "--to", "smime", "x.eml" }, 64, "mimegate convert: " },
    { { "filter", "--bogus", "-f", "a@example.org", "b@example.org" }, 75, "4.3.5 mimegate filter: " },
    { { "filter", "b@example.org" }, 75, "4.3.5 mimegate filter: " },
    { { "filter", "-f", "a@example.org" }, 75, "4.3.5 mimegate filter: " },
    { { "frobnicate" }, 64, "mimegate: unknown command" },
  };

  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++) {
    g_autoptr (GPtrArray) argv = g_ptr_array_new ();
    MgRun r;
    for (guint k = 0; cases[i].args[k]; k++)
      g_ptr_array_add (argv, (gpointer) cases[i].args[k]);
    g_ptr_array_add (argv, NULL);
    run (&r, NULL, NULL, (const char *const *) argv->pdata);
    g_test_message ("%s %s -> %d: %s", cases[i].args[0], cases[i].args[1] ? cases[i].args[1] : "", r.status, r.err);
    g_assert_cmpint (r.status, ==, cases[i].status);
    g_assert_true (g_str_has_prefix (r.err, cases[i].prefix));
    g_assert_cmpuint (lines (r.err), ==, 1);
    g_assert_cmpstr (r.out, ==, "");
    mg_run_clear (&r);
  }
  {
    MgRun r;
    run (&r, NULL, NULL, (const char *const[]){ NULL });
    g_assert_cmpint (r.status, ==, 64);
    g_assert_cmpuint (lines (r.err), ==, 1);
    mg_run_clear (&r);
  }
}

/* filter with the built-in defaults and no sendmail to reinject with: deferred (4.3.0, 75), never bounced */
static void
test_filter_without_sendmail (void)
{
  MgRun r;

  if (g_file_test ("/usr/sbin/sendmail", G_FILE_TEST_EXISTS)) {
    g_test_skip ("/usr/sbin/sendmail exists here; tests/test-filter.c covers a failing reinjection");
    return;
  }
  run (&r, NULL, plain, (const char *const[]){ "filter", "-f", "a@example.org", "--", "-b@example.org", NULL });
  g_assert_cmpint (r.status, ==, 75);
  g_assert_true (g_str_has_prefix (r.err, "4.3.0 mimegate filter: reinjection failed: "));
  mg_run_clear (&r);
}

static void
test_translations (void)
{
  MgRun r;

  run (&r, "nl", NULL, (const char *const[]){ "--help", NULL });
  g_assert_cmpint (r.status, ==, 0);
  g_assert_nonnull (strstr (r.out, "Opdrachten:"));
  g_assert_nonnull (strstr (r.out, "Toon per onderdeel hoe elk bericht beveiligd is"));
  mg_run_clear (&r);
  run (&r, "da", NULL, (const char *const[]){ "--help", NULL });
  g_assert_nonnull (strstr (r.out, "Kommandoer:"));
  mg_run_clear (&r);
  run (&r, "da", NULL, (const char *const[]){ "inspect", NULL });
  g_assert_cmpint (r.status, ==, 64);
  g_assert_cmpstr (r.err, ==, "mimegate inspect: mindst én FIL er påkrævet\n");
  mg_run_clear (&r);
  run (&r, "nl", NULL, (const char *const[]){ "filter", "-f", "a@example.org", NULL });
  /* protocol text stays English-coded: the RFC 3463 code leads, the words are for people */
  g_assert_cmpstr (r.err, ==, "4.3.5 mimegate filter: minstens één ONTVANGER is vereist\n");
  mg_run_clear (&r);
}

/* python3 - runs a check script over @input; returns its stdout (the script prints what the test asserts on) */
static char *
python3 (const char *script, const char *input)
{
  const char *argv[] = { "python3", "-c", script, NULL };
  MgRun r;
  char *out;

  g_assert_true (mg_test_run (&r, argv, NULL, input, strlen (input)));
  if (r.status != 0)
    g_error ("python3 check failed: %s", r.err);
  out = g_steal_pointer (&r.out);
  mg_run_clear (&r);
  return out;
}

static void
test_inspect (void)
{
  g_autofree char *dir = mg_test_tmpdir ();
  g_autofree char *a = mg_test_write (dir, "a.eml", pgp_mime, -1);
  g_autofree char *b = mg_test_write (dir, "b.eml", smime, -1);
  g_autofree char *missing = g_build_filename (dir, "missing.eml", NULL);
  g_autofree char *summary = NULL;
  MgRun r;

  RUN (&r, "inspect", a, b);
  g_assert_cmpint (r.status, ==, 0);
  g_assert_nonnull (strstr (r.out, "kind: pgp-mime-encrypted"));
  g_assert_nonnull (strstr (r.out, "1.2  application/octet-stream  pgp-mime-encrypted  [ciphertext]"));
  g_assert_nonnull (strstr (r.out, "encrypted to 0x4C4A2CEC0AD4B436 (RSA)"));
  g_assert_nonnull (strstr (r.out, "kind: smime-enveloped"));
  mg_run_clear (&r);

  RUN (&r, "inspect", "--json", a, missing, b);
  g_assert_cmpint (r.status, ==, 66);
  g_assert_cmpuint (lines (r.err), ==, 1);
  g_assert_nonnull (strstr (r.err, "missing.eml"));
  summary = python3 ("import json,sys\n"
                     "for line in sys.stdin:\n"
                     "  o=json.loads(line)\n"
                     "  assert all('kind' in p for p in o['parts'])\n"
                     "  print(o['file'].rsplit('/',1)[1], o['kind'], ','.join(o['kinds']), len(o['parts']),\n"
                     "        o['parts'][-1]['recipients'][0]['id'] if o['parts'][-1]['recipients'] else '-')\n",
                     r.out);
  g_assert_cmpstr (summary, ==,
                   "a.eml pgp-mime-encrypted pgp-mime-encrypted 3 0x4C4A2CEC0AD4B436\n"
                   "b.eml smime-enveloped smime-enveloped 1 -\n");
  mg_run_clear (&r);

  run (&r, NULL, smime, (const char *const[]){ "inspect", "--json", "-", NULL });
  g_assert_cmpint (r.status, ==, 0);
  g_assert_nonnull (strstr (r.out, "\"kind\":\"smime-enveloped\""));
  mg_run_clear (&r);
  mg_test_rmtree (dir);
}

/* a corpus: two files, an mbox of three, a Maildir whose tmp/ must be skipped; one unreadable file */
static char *
make_tree (void)
{
  char *dir = mg_test_tmpdir ();
  g_autofree char *mbox = g_strdup_printf ("From a@example.org Mon Nov 23 00:00:00 2026\n%s\n"
                                           "From a@example.org Mon Nov 23 00:00:01 2026\n%s\n"
                                           "From a@example.org Mon Nov 23 00:00:02 2026\n%s",
                                           pgp_mime, plain, smime);
  const char *subdirs[] = { "md", "md/cur", "md/new", "md/tmp", "files" };

  for (gsize i = 0; i < G_N_ELEMENTS (subdirs); i++) {
    g_autofree char *p = g_build_filename (dir, subdirs[i], NULL);
    g_assert_cmpint (g_mkdir (p, 0700), ==, 0);
  }
  g_free (mg_test_write (dir, "files/one.eml", pgp_mime, -1));
  g_free (mg_test_write (dir, "files/two.eml", smime, -1));
  g_free (mg_test_write (dir, "box.mbox", mbox, -1));
  g_free (mg_test_write (dir, "md/cur/1.host:2,S", plain, -1));
  g_free (mg_test_write (dir, "md/new/2.host", pgp_mime, -1));
  g_free (mg_test_write (dir, "md/tmp/3.host", smime, -1));
  return dir;
}

static void
test_scan (void)
{
  g_autofree char *dir = make_tree ();
  g_autofree char *summary = NULL;
  MgRun r;

  RUN (&r, "scan", "--json", dir);
  g_assert_cmpint (r.status, ==, 0);
  g_assert_cmpstr (r.err, ==, ""); /* not a terminal: no progress bar */
  summary = python3 ("import json,sys\n"
                     "o=json.load(sys.stdin)\n"
                     "k=o['kinds']\n"
                     "print(o['files'], o['messages'], o['unreadable'], k['pgp-mime-encrypted']['outermost'],\n"
                     "      k['smime-enveloped']['outermost'], k['plain']['outermost'], k['plain']['present'])\n",
                     r.out);
  g_assert_cmpstr (summary, ==, "5 7 0 3 2 2 2\n");
  mg_run_clear (&r);

  RUN (&r, "scan", dir);
  g_assert_cmpint (r.status, ==, 0);
  g_assert_true (g_str_has_prefix (r.out, "Scanned 7 messages in 5 files"));
  g_assert_nonnull (strstr (r.out, "pgp-mime-encrypted                    3"));
  mg_run_clear (&r);

  {
    g_autofree char *nowhere = g_build_filename (dir, "nowhere", NULL);
    RUN (&r, "scan", dir, nowhere);
    g_assert_cmpint (r.status, ==, 66);
    g_assert_cmpuint (lines (r.err), ==, 1);
    g_assert_nonnull (strstr (r.err, "nowhere"));
    mg_run_clear (&r);
  }
  mg_test_rmtree (dir);
}

/* on a terminal (script(1) gives one), scan draws its progress bar on stderr */
static void
test_scan_progress (void)
{
  g_autofree char *dir = NULL, *cmd = NULL;
  MgRun r;

  if (!mg_test_have_program ("script")) {
    g_test_skip ("script(1) is not installed");
    return;
  }
  dir = make_tree ();
  cmd = g_strdup_printf ("'%s' scan '%s' >/dev/null", mg_test_mimegate (), dir);
  {
    const char *argv[] = { "script", "-qec", cmd, "/dev/null", NULL };
    g_auto (GStrv) env = mg_test_env ("TERM", "xterm", "LANGUAGE", NULL, NULL);
    g_assert_true (mg_test_run (&r, argv, (const char *const *) env, NULL, 0));
  }
  g_assert_cmpint (r.status, ==, 0);
  g_assert_nonnull (strstr (r.out, "[##############################] 100%"));
  g_assert_nonnull (strstr (r.out, "7 messages"));
  mg_run_clear (&r);
  mg_test_rmtree (dir);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/cli/help-and-version", test_help_and_version);
  g_test_add_func ("/cli/usage-errors", test_usage_errors);
  g_test_add_func ("/cli/filter-without-sendmail", test_filter_without_sendmail);
  g_test_add_func ("/cli/translations", test_translations);
  g_test_add_func ("/cli/inspect", test_inspect);
  g_test_add_func ("/cli/scan", test_scan);
  g_test_add_func ("/cli/scan-progress", test_scan_progress);
  return g_test_run ();
}
