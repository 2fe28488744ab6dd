/* test-largemail-crypto.c - a large message (the 60 MB attachment, an 85 MB message; MG_LARGEMAIL_MIB=N for
 * another size) through every encrypting and decrypting path of `mimegate filter`: PGP/MIME, S/MIME, PGP/Inline,
 * PGP/MIME to PGP/Inline, S/MIME to PGP/MIME, and PGP/MIME signed by the gateway. A test of the streaming path's
 * mechanism (issue 13), not of timings: the run's peak RSS (wait4: the filter and what it waited for) stays under 2x
 * the message, which it cannot when the canonical entity, the clear text or the ciphertext is held whole in memory;
 * spool-dir stays empty while it runs (watched from here) and after it; and the result, opened with gpg or openssl cms
 * (tests/opener.py), holds the original attachment byte for byte (its SHA-256) and the body text. The inputs to the
 * decrypting paths are made with gpg and openssl cms, not with mimegate. This process stays small: a child's peak RSS
 * counts what it was forked from. */
#include "config.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <glib.h>
#include <glib/gstdio.h>

#include "testutil.h"

#define MARKER "large-crypto-body-marker"

typedef struct {
  char *dir;
  char *spool; /* spool-dir: must stay empty */
  char *conf;
  MgGpg *gpg;     /* gw@ (the gateway's own key), pgp@ and inline@ */
  MgCa *ca;       /* smime@ (a recipient), gw@ (held by the gateway) */
  char *plain;    /* the clear message */
  char *entity;   /* its body entity (what the decrypting paths' inputs encrypt) */
  char *pgp_in;   /* the entity in PGP/MIME to gw@, by gpg */
  char *smime_in; /* the entity in S/MIME to gw@, by openssl cms */
  char *digest;   /* SHA-256 of the attachment's octets */
} Fixture;

static Fixture fx;

static gsize
file_size (const char *path)
{
  struct stat st;

  g_assert_cmpint (stat (path, &st), ==, 0);
  return (gsize) st.st_size;
}

/* sh - /bin/sh -c @script in the test directory with GNUPGHOME set; asserts exit 0 */
static void
sh (const char *script)
{
  MgRun run = { 0 };
  const char *argv[] = { "/bin/sh", "-c", script, NULL };
  g_auto (GStrv) env = mg_test_env ("GNUPGHOME", fx.gpg->home, "LC_ALL", "C", NULL);

  g_assert_true (mg_test_run (&run, argv, (const char *const *) env, NULL, 0));
  if (run.status != 0)
    g_printerr ("%s: %s\n", script, run.err);
  g_assert_cmpint (run.status, ==, 0);
  mg_run_clear (&run);
}

/* make_inputs - the clear message (text and a random attachment, base64), its entity, and the entity encrypted to
 * the gateway by gpg (PGP/MIME) and by openssl cms (S/MIME) */
static void
make_inputs (gsize attachment)
{
  const char *head = "From: Sender <sender@example.net>\nTo: Rcpt <rcpt@example.org>\nSubject: large crypto\n"
                     "Message-ID: <large-crypto@example.net>\nMIME-Version: 1.0\n";
  const char *body = "Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\n" MARKER "\n"
                     "--b\nContent-Type: application/octet-stream\nContent-Disposition: attachment; filename=d.bin\n"
                     "Content-Transfer-Encoding: base64\n\n";
  g_autoptr (GChecksum) sum = g_checksum_new (G_CHECKSUM_SHA256);
  GRand *rand = g_rand_new_with_seed (1313);
  FILE *m, *e;
  g_autofree char *script = NULL;
  g_autofree char *gw_cert = mg_ca_path (fx.ca, "gw", ".pem");

  fx.plain = g_build_filename (fx.dir, "plain.eml", NULL);
  fx.entity = g_build_filename (fx.dir, "entity.eml", NULL);
  m = fopen (fx.plain, "w");
  e = fopen (fx.entity, "w");
  g_assert_nonnull (m);
  g_assert_nonnull (e);
  fprintf (m, "%s%s", head, body);
  fputs (body, e);
  mg_test_random_base64 (rand, attachment, sum, m, e);
  fputs ("--b--\n", m);
  fputs ("--b--\n", e);
  g_assert_cmpint (fclose (m), ==, 0);
  g_assert_cmpint (fclose (e), ==, 0);
  g_rand_free (rand);
  fx.digest = g_strdup (g_checksum_get_string (sum));

  fx.pgp_in = g_build_filename (fx.dir, "pgp-in.eml", NULL);
  fx.smime_in = g_build_filename (fx.dir, "smime-in.eml", NULL);
  script = g_strdup_printf (
    "set -e; cd '%s'; { printf '%sContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; "
    "boundary=e\\n\\n--e\\nContent-Type: application/pgp-encrypted\\n\\nVersion: 1\\n\\n--e\\n"
    "Content-Type: application/octet-stream\\n\\n'; gpg --batch --trust-model always -q -a -e -r gw@example.org "
    "-o - entity.eml; printf '\\n--e--\\n'; } > pgp-in.eml; "
    "openssl cms -encrypt -binary -aes256 -outform DER -in entity.eml -out smime.der '%s'; "
    "{ printf '%sContent-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\\n"
    "Content-Transfer-Encoding: base64\\n\\n'; openssl base64 -in smime.der; } > smime-in.eml; rm smime.der",
    fx.dir, head, gw_cert, head);
  sh (script);
}

typedef struct {
  int status;
  glong maxrss_kib;
  guint spool_max;
} Run;

/* run_filter - `mimegate filter -c CONF --stdout -f sender -- RCPT` with @in on stdin and stdout into @out, spool-dir
 * watched every 2 ms while it runs */
static void
run_filter (const char *in_path, const char *rcpt, const char *out, Run *run)
{
  const char *argv[] = { mg_test_mimegate (),  "filter", "-c", fx.conf, "--stdout", "-f",
                         "sender@example.net", "--",     rcpt, NULL };
  struct rusage usage;
  pid_t pid;
  int in = open (in_path, O_RDONLY), o = open (out, O_WRONLY | O_CREAT | O_TRUNC, 0600);

  g_assert_cmpint (in, >=, 0);
  g_assert_cmpint (o, >=, 0);
  memset (run, 0, sizeof *run);
  pid = fork ();
  g_assert_cmpint (pid, >=, 0);
  if (pid == 0) {
    /* in the sanitizer build: ASan's quarantine keeps every freed buffer resident (256 MB by default, so a buffer
     * grown by doubling counts twice); what is measured is mimegate's memory, not the quarantine's */
    const char *asan = g_getenv ("ASAN_OPTIONS");
    g_autofree char *opts = g_strconcat (asan ? asan : "", asan ? ":" : "", "quarantine_size_mb=0", NULL);
    g_setenv ("ASAN_OPTIONS", opts, TRUE);
    dup2 (in, 0);
    dup2 (o, 1);
    execv (argv[0], (char **) argv);
    _exit (127);
  }
  close (in);
  close (o);
  for (;;) {
    pid_t done = wait4 (pid, &run->status, WNOHANG, &usage);
    g_assert_cmpint (done, >=, 0);
    if (done == pid)
      break;
    run->spool_max = MAX (run->spool_max, mg_test_dir_entries (fx.spool));
    g_usleep (2000);
  }
  run->maxrss_kib = usage.ru_maxrss;
}

/* Path - one path through the filter: its input, its recipient, what opening the result shows */
typedef struct {
  const char *name;
  const char **input;
  const char *rcpt;
  const char *layers;    /* tests/opener.py's first line */
  const char *header;    /* a line the result's header block holds */
  const char *signed_by; /* (nullable): the result's clear entity is multipart/signed by this address's key */
} Path;

/* test_path - the path's run, bounded in memory and in spool-dir, and its result opened by independent tools */
static void
test_path (gconstpointer data)
{
  const Path *p = data;
  g_autofree char *out = g_build_filename (fx.dir, "out.eml", NULL);
  g_autofree char *opener = g_test_build_filename (G_TEST_DIST, "opener.py", NULL);
  g_autofree char *key = mg_ca_path (fx.ca, "smime", ".key");
  g_autofree char *cert = mg_ca_path (fx.ca, "smime", ".pem");
  g_autofree char *want = g_strdup_printf ("\nsha256 d.bin %s\n", fx.digest);
  g_autofree char *head = NULL;
  gsize size = file_size (*p->input);
  MgRun open_run = { 0 };
  const char *open_argv[] = { "/bin/sh", "-c", "exec python3 \"$0\" " MARKER " < \"$1\"", opener, out, NULL };
  g_auto (GStrv) env = mg_test_env ("GNUPGHOME", fx.gpg->home, "CMS_KEY", key, "CMS_CERT", cert, "OPENER_SHA256", "1",
                                    "LC_ALL", "C", NULL);
  Run r;

  run_filter (*p->input, p->rcpt, out, &r);
  g_printerr ("# %s: peak RSS %.1f MiB = %.2f x the input (%.1f MB), result %.1f MB\n", p->name, r.maxrss_kib / 1024.0,
              r.maxrss_kib * 1024.0 / (double) size, size / 1e6, file_size (out) / 1e6);
  g_assert_true (WIFEXITED (r.status));
  g_assert_cmpint (WEXITSTATUS (r.status), ==, 0);
  g_assert_cmpfloat (r.maxrss_kib * 1024.0, <, 2.0 * (double) size);
  g_assert_cmpuint (r.spool_max, ==, 0);
  g_assert_cmpuint (mg_test_dir_entries (fx.spool), ==, 0);

  /* the result's header block, and the result opened as a recipient's client would */
  {
    FILE *f = fopen (out, "r");
    char buf[8192];
    size_t n;
    g_assert_nonnull (f);
    n = fread (buf, 1, sizeof buf - 1, f);
    fclose (f);
    buf[n] = '\0';
    head = g_strndup (buf, strstr (buf, "\n\n") ? (gsize) (strstr (buf, "\n\n") - buf) : n);
  }
  g_assert_nonnull (strstr (head, p->header));
  g_assert_true (mg_test_run (&open_run, open_argv, (const char *const *) env, NULL, 0));
  if (open_run.status != 0)
    g_printerr ("opener: %s\n", open_run.err);
  g_assert_cmpint (open_run.status, ==, 0);
  g_assert_true (g_str_has_prefix (open_run.out, p->layers));
  g_assert_nonnull (strstr (open_run.out, "\nfound\n"));
  g_assert_nonnull (strstr (open_run.out, want)); /* the attachment, byte for byte */
  mg_run_clear (&open_run);
  if (p->signed_by != NULL) { /* the gateway's signature, checked by gpg over the signed part as it travels */
    g_autofree char *check = g_test_build_filename (G_TEST_DIST, "signed-check.py", NULL);
    g_autofree char *fpr = mg_gpg_fingerprint (fx.gpg, p->signed_by);
    g_autofree char *valid = g_strdup_printf ("[GNUPG:] VALIDSIG %s", fpr);
    MgRun check_run = { 0 };
    const char *check_argv[] = { "/bin/sh", "-c", "exec python3 \"$0\" < \"$1\"", check, out, NULL };
    g_assert_true (mg_test_run (&check_run, check_argv, (const char *const *) env, NULL, 0));
    if (check_run.status != 0)
      g_printerr ("signed-check: %s\n", check_run.err);
    g_assert_cmpint (check_run.status, ==, 0);
    g_assert_nonnull (strstr (check_run.out, "[GNUPG:] GOODSIG "));
    g_assert_nonnull (strstr (check_run.out, valid));
    mg_run_clear (&check_run);
  }
  unlink (out);
}

int
main (int argc, char **argv)
{
  const char *mib = g_getenv ("MG_LARGEMAIL_MIB");
  gsize attachment = (gsize) (mib ? g_ascii_strtoull (mib, NULL, 10) : 60) * 1024 * 1024;
  static const Path paths[] = {
    { "pgp-mime", (const char **) &fx.plain, "pgp@example.org", "gpg\n", "multipart/encrypted" },
    { "smime", (const char **) &fx.plain, "smime@example.org", "cms-decrypt\n", "application/pkcs7-mime" },
    { "pgp-inline", (const char **) &fx.plain, "inline@example.org", "gpg", "multipart/mixed" },
    { "pgp-mime-to-pgp-inline", (const char **) &fx.pgp_in, "inline@example.org", "gpg", "multipart/mixed" },
    { "smime-to-pgp-mime", (const char **) &fx.smime_in, "pgp@example.org", "gpg\n", "multipart/encrypted" },
    { "pgp-mime-signed", (const char **) &fx.plain, "signed@example.org", "gpg\n", "multipart/encrypted",
      "gw@example.org" },
  };
  const char *store_certs[] = { "smime", "gw", NULL }, *held[] = { "gw", NULL };
  g_autofree char *store = NULL, *text = NULL;
  int rc;

  g_test_init (&argc, &argv, NULL);
  fx.dir = mg_test_tmpdir ();
  fx.spool = g_build_filename (fx.dir, "spool", NULL);
  g_assert_cmpint (g_mkdir (fx.spool, 0700), ==, 0);
  fx.gpg = mg_gpg_new ();
  g_assert_true (mg_gpg_add_key (fx.gpg, "gw@example.org", "ed25519"));
  g_assert_true (mg_gpg_add_key (fx.gpg, "pgp@example.org", "ed25519"));
  g_assert_true (mg_gpg_add_key (fx.gpg, "inline@example.org", "ed25519"));
  g_assert_true (mg_gpg_add_key (fx.gpg, "signed@example.org", "ed25519"));
  fx.ca = mg_ca_new ();
  g_assert_true (mg_ca_add_leaf (fx.ca, "smime", "smime@example.org"));
  g_assert_true (mg_ca_add_leaf (fx.ca, "gw", "gw@example.org"));
  store = mg_ca_store (fx.ca, fx.dir, store_certs, held);
  text = g_strdup_printf ("[gateway]\ngnupg-home = %s\nx509-store = %s\ntrust-model = always\n"
                          "authserv-id = gw.example\nlog = none\nmax-size = 300M\nspool-dir = %s\n"
                          "[address inline@example.org]\ninline-only = true\n"
                          "[address signed@example.org]\nsign = pgp\nsign-as = gw@example.org\n",
                          fx.gpg->home, store, fx.spool);
  fx.conf = mg_test_write (fx.dir, "crypto.conf", text, -1);
  make_inputs (attachment);
  for (guint i = 0; i < G_N_ELEMENTS (paths); i++) {
    g_autofree char *name = g_strdup_printf ("/largemail-crypto/%s", paths[i].name);
    g_test_add_data_func (name, &paths[i], test_path);
  }
  rc = g_test_run ();
  if (g_getenv ("MG_LARGEMAIL_KEEP") != NULL) /* for a look with other tools: the directory stays */
    g_printerr ("# kept: %s (GNUPGHOME %s)\n", fx.dir, fx.gpg->home);
  else {
    mg_gpg_free (fx.gpg);
    mg_ca_free (fx.ca);
    mg_test_rmtree (fx.dir);
  }
  g_free (fx.dir);
  g_free (fx.spool);
  g_free (fx.conf);
  g_free (fx.plain);
  g_free (fx.entity);
  g_free (fx.pgp_in);
  g_free (fx.smime_in);
  g_free (fx.digest);
  return rc;
}
