/* testutil.c - running real programs from tests (gpg, openssl, the built mimegate) and the temporary GnuPG home and CA
 * they work in. Temporary directories are 0700 under /tmp with short names (gpg-agent socket paths are limited to
 * about 100 bytes), and are removed with everything in them; each GnuPG home's agent is stopped with
 * `gpgconf --kill all`, so that agents do not pile up across runs. */
#include "config.h"

#include "testutil.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gio/gio.h>
#include <glib/gstdio.h>

void
mg_run_clear (MgRun *run)
{
  g_clear_pointer (&run->out, g_free);
  g_clear_pointer (&run->err, g_free);
  run->out_len = 0;
  run->status = -1;
}

/**
 * mg_test_run - runs @argv with @input on stdin; collects stdout (binary-safe) and stderr.
 * @envp: (nullable): the whole environment, or %NULL to inherit
 */
gboolean
mg_test_run (MgRun *run, const char *const *argv, const char *const *envp, const char *input, gsize input_len)
{
  g_autoptr (GSubprocessLauncher) launcher =
    g_subprocess_launcher_new (G_SUBPROCESS_FLAGS_STDOUT_PIPE | G_SUBPROCESS_FLAGS_STDERR_PIPE);
  g_autoptr (GSubprocess) proc = NULL;
  g_autoptr (GError) error = NULL;
  g_autoptr (GBytes) out = NULL, err = NULL;
  g_autofree char *in_path = NULL;
  int fd;

  memset (run, 0, sizeof *run);
  run->status = -1;
  /* stdin from a file, not a pipe: a program that exits without reading it must not SIGPIPE the test */
  fd = g_file_open_tmp ("mg-in-XXXXXX", &in_path, &error);
  g_assert_no_error (error);
  g_assert_true (input_len == 0 || write (fd, input, input_len) == (gssize) input_len);
  close (fd);
  g_subprocess_launcher_set_stdin_file_path (launcher, in_path);
  if (envp != NULL)
    g_subprocess_launcher_set_environ (launcher, (char **) envp);
  proc = g_subprocess_launcher_spawnv (launcher, argv, &error);
  g_unlink (in_path);
  if (proc == NULL) {
    g_test_message ("cannot run %s: %s", argv[0], error->message);
    return FALSE;
  }
  if (!g_subprocess_communicate (proc, NULL, NULL, &out, &err, &error)) {
    g_test_message ("cannot talk to %s: %s", argv[0], error->message);
    return FALSE;
  }
  if (g_subprocess_get_if_exited (proc))
    run->status = g_subprocess_get_exit_status (proc);
  else
    run->status = 128 + g_subprocess_get_term_sig (proc);
  /* binary-safe: copied whole, with a NUL after it for text checks */
  run->out_len = g_bytes_get_size (out);
  run->out = g_malloc (run->out_len + 1);
  if (run->out_len > 0)
    memcpy (run->out, g_bytes_get_data (out, NULL), run->out_len);
  run->out[run->out_len] = '\0';
  run->err = g_bytes_get_size (err) ? g_strndup (g_bytes_get_data (err, NULL), g_bytes_get_size (err)) : g_strdup ("");
  return TRUE;
}

/* append_args - the NULL-terminated list from @first on, into @argv */
static void
append_args (GPtrArray *argv, const char *first, va_list ap)
{
  for (const char *a = first; a != NULL; a = va_arg (ap, const char *))
    g_ptr_array_add (argv, (gpointer) a);
}

/* mg_test_runf - mg_test_run() with the arguments as a NULL-terminated list and the inherited environment */
gboolean
mg_test_runf (MgRun *run, const char *input, const char *first, ...)
{
  g_autoptr (GPtrArray) argv = g_ptr_array_new ();
  va_list ap;

  va_start (ap, first);
  append_args (argv, first, ap);
  va_end (ap);
  g_ptr_array_add (argv, NULL);
  return mg_test_run (run, (const char *const *) argv->pdata, NULL, input, input ? strlen (input) : 0);
}

/* mg_test_env - the current environment with NAME=VALUE pairs set (value NULL: unset) */
char **
mg_test_env (const char *first_var, ...)
{
  char **env = g_get_environ ();
  va_list ap;

  va_start (ap, first_var);
  for (const char *var = first_var; var != NULL; var = va_arg (ap, const char *)) {
    const char *value = va_arg (ap, const char *);
    env = value ? g_environ_setenv (env, var, value, TRUE) : g_environ_unsetenv (env, var);
  }
  va_end (ap);
  return env;
}

/* Temporary directories (GnuPG homes among them) that must go, with their agents, even when an assertion aborts the
 * test before its teardown. */
#define MAX_HOMES 64
static char *live_homes[MAX_HOMES];

/* run_now - fork and exec @argv, wait for it: async-signal-safe, for the abort handler */
static void
run_now (char *const argv[])
{
  pid_t pid = fork ();

  if (pid == 0) {
    execvp (argv[0], argv);
    _exit (127);
  }
  if (pid > 0)
    waitpid (pid, NULL, 0);
}

static void
abort_cb (int sig)
{
  for (int i = 0; i < MAX_HOMES; i++)
    if (live_homes[i] != NULL) {
      char *kill_argv[] = { (char *) "gpgconf", (char *) "--homedir", live_homes[i],
                            (char *) "--kill",  (char *) "all",       NULL };
      char *rm_argv[] = { (char *) "rm", (char *) "-rf", live_homes[i], NULL };
      run_now (kill_argv);
      run_now (rm_argv);
    }
  signal (sig, SIG_DFL);
  raise (sig);
}

static void
track_home (const char *home, gboolean live)
{
  static gboolean installed = FALSE;

  if (!installed) {
    signal (SIGABRT, abort_cb);
    signal (SIGTRAP, abort_cb);
    installed = TRUE;
  }
  for (int i = 0; i < MAX_HOMES; i++) {
    if (live && live_homes[i] == NULL) {
      live_homes[i] = g_strdup (home);
      return;
    }
    if (!live && g_strcmp0 (live_homes[i], home) == 0) {
      g_clear_pointer (&live_homes[i], g_free);
      return;
    }
  }
}

/* mg_test_tmpdir - a new 0700 directory with a short path */
char *
mg_test_tmpdir (void)
{
  g_autoptr (GError) error = NULL;
  char *dir = g_dir_make_tmp ("mg-XXXXXX", &error);

  g_assert_no_error (error);
  g_assert_cmpint (g_chmod (dir, 0700), ==, 0);
  track_home (dir, TRUE);
  return dir;
}

/* mg_test_rmtree - removes @path and everything under it (restoring permissions a test took away) */
void
mg_test_rmtree (const char *path)
{
  GStatBuf st;

  if (path == NULL || g_lstat (path, &st) != 0)
    return;
  if (S_ISDIR (st.st_mode)) {
    GDir *d;
    const char *name;
    g_chmod (path, 0700);
    d = g_dir_open (path, 0, NULL);
    while (d && (name = g_dir_read_name (d)) != NULL) {
      g_autofree char *child = g_build_filename (path, name, NULL);
      mg_test_rmtree (child);
    }
    if (d)
      g_dir_close (d);
    g_rmdir (path);
    track_home (path, FALSE);
  } else
    g_unlink (path);
}

/* mg_test_corpus - ../shared/corpus, or NULL when it is not beside the checkout */
const char *
mg_test_corpus (void)
{
  const char *dir = g_getenv ("MIMEGATE_CORPUS");

  return dir && g_file_test (dir, G_FILE_TEST_IS_DIR) ? dir : NULL;
}

/* mg_test_mimegate - the built program */
const char *
mg_test_mimegate (void)
{
  const char *path = g_getenv ("MIMEGATE_BIN");

  g_assert_nonnull (path);
  return path;
}

gboolean
mg_test_have_program (const char *program)
{
  g_autofree char *path = g_find_program_in_path (program);

  return path != NULL;
}

/* mg_test_write - writes @data to DIR/NAME (0600); returns the path */
char *
mg_test_write (const char *dir, const char *name, const char *data, gssize len)
{
  char *path = g_build_filename (dir, name, NULL);
  g_autoptr (GError) error = NULL;

  g_file_set_contents_full (path, data, len, G_FILE_SET_CONTENTS_CONSISTENT, 0600,
                            &error); /* replaces, never overwrites in place */
  g_assert_no_error (error);
  return path;
}

char *
mg_test_read (const char *path, gsize *len)
{
  g_autoptr (GError) error = NULL;
  char *data = NULL;

  g_file_get_contents (path, &data, len, &error);
  g_assert_no_error (error);
  return data;
}

/* ---- GnuPG ---- */

MgGpg *
mg_gpg_new (void)
{
  MgGpg *gpg = g_new0 (MgGpg, 1);
  g_autofree char *agent = NULL, *conf = NULL;

  gpg->home = mg_test_tmpdir ();
  agent = mg_test_write (gpg->home, "gpg-agent.conf", "allow-loopback-pinentry\n", -1);
  conf = mg_test_write (gpg->home, "gpg.conf", "no-auto-key-locate\nno-auto-key-retrieve\n", -1);
  return gpg;
}

/* mg_gpg - runs gpg --batch in the home; returns stdout (binary-safe, NUL-terminated) or NULL on failure */
char *
mg_gpg (MgGpg *gpg, const char *input, gsize input_len, const char *first_arg, ...)
{
  g_autoptr (GPtrArray) argv = g_ptr_array_new ();
  g_auto (GStrv) env = mg_test_env ("GNUPGHOME", gpg->home, "LC_ALL", "C", NULL);
  MgRun run;
  va_list ap;

  g_ptr_array_add (argv, (gpointer) "gpg");
  g_ptr_array_add (argv, (gpointer) "--batch");
  g_ptr_array_add (argv, (gpointer) "--yes");
  g_ptr_array_add (argv, (gpointer) "--pinentry-mode");
  g_ptr_array_add (argv, (gpointer) "loopback");
  g_ptr_array_add (argv, (gpointer) "--passphrase");
  g_ptr_array_add (argv, (gpointer) "");
  g_ptr_array_add (argv, (gpointer) "--trust-model");
  g_ptr_array_add (argv, (gpointer) "always");
  va_start (ap, first_arg);
  append_args (argv, first_arg, ap);
  va_end (ap);
  g_ptr_array_add (argv, NULL);
  if (!mg_test_run (&run, (const char *const *) argv->pdata, (const char *const *) env, input, input_len))
    return NULL;
  if (run.status != 0) {
    g_test_message ("gpg failed (%d): %s", run.status, run.err);
    mg_run_clear (&run);
    return NULL;
  }
  g_free (run.err);
  return run.out;
}

/* mg_gpg_add_key - a new key for <@address>: @algo "ed25519" (with a cv25519 encryption subkey) or "rsa2048" */
gboolean
mg_gpg_add_key (MgGpg *gpg, const char *address, const char *algo)
{
  g_autofree char *uid = g_strdup_printf ("Test <%s>", address);
  g_autofree char *out = NULL, *sub = NULL, *fpr = NULL;
  gboolean ed = g_strcmp0 (algo, "ed25519") == 0;

  out = mg_gpg (gpg, NULL, 0, "--quick-gen-key", uid, ed ? "ed25519" : algo, "sign", "never", NULL);
  if (out == NULL)
    return FALSE;
  fpr = mg_gpg_fingerprint (gpg, address);
  if (fpr == NULL)
    return FALSE;
  sub = mg_gpg (gpg, NULL, 0, "--quick-add-key", fpr, ed ? "cv25519" : algo, "encr", "never", NULL);
  return sub != NULL;
}

/* mg_test_colon_field - field @n of the first "@record:" line of gpg --with-colons output, or NULL */
char *
mg_test_colon_field (const char *listing, const char *record, guint n)
{
  g_auto (GStrv) lines = g_strsplit (listing, "\n", -1);

  for (guint i = 0; lines[i] != NULL; i++) {
    g_auto (GStrv) f = g_strsplit (lines[i], ":", -1);
    if (g_strcmp0 (f[0], record) == 0 && g_strv_length (f) > n)
      return g_strdup (f[n]);
  }
  return NULL;
}

/* mg_gpg_fingerprint - the primary key's fingerprint for @address, as gpg itself lists it */
char *
mg_gpg_fingerprint (MgGpg *gpg, const char *address)
{
  g_autofree char *spec = g_strdup_printf ("<%s>", address);
  g_autofree char *out = mg_gpg (gpg, NULL, 0, "--with-colons", "--list-keys", spec, NULL);

  return out ? mg_test_colon_field (out, "fpr", 9) : NULL;
}

/* mg_gpg_encryption_keyid - the long key id of the encryption subkey for @address, as gpg lists it */
char *
mg_gpg_encryption_keyid (MgGpg *gpg, const char *address)
{
  g_autofree char *spec = g_strdup_printf ("<%s>", address);
  g_autofree char *out = mg_gpg (gpg, NULL, 0, "--with-colons", "--list-keys", spec, NULL);

  return out ? mg_test_colon_field (out, "sub", 4) : NULL;
}

void
mg_gpg_free (MgGpg *gpg)
{
  g_auto (GStrv) env = NULL;
  const char *argv[] = { "gpgconf", "--kill", "all", NULL };
  MgRun run;

  if (gpg == NULL)
    return;
  env = mg_test_env ("GNUPGHOME", gpg->home, NULL);
  if (mg_test_run (&run, argv, (const char *const *) env, NULL, 0))
    mg_run_clear (&run);
  mg_test_rmtree (gpg->home);
  g_free (gpg->home);
  g_free (gpg);
}

/* ---- OpenSSL CA ---- */

/* mg_ca_openssl - runs openssl in the CA directory; returns stdout (binary-safe) or NULL */
char *
mg_ca_openssl (MgCa *ca, const char *input, gsize input_len, gsize *out_len, const char *first_arg, ...)
{
  g_autoptr (GPtrArray) argv = g_ptr_array_new ();
  MgRun run;
  va_list ap;
  char *out;

  g_ptr_array_add (argv, (gpointer) "openssl");
  va_start (ap, first_arg);
  append_args (argv, first_arg, ap);
  va_end (ap);
  g_ptr_array_add (argv, NULL);
  if (!mg_test_run (&run, (const char *const *) argv->pdata, NULL, input, input_len))
    return NULL;
  if (run.status != 0) {
    g_test_message ("openssl %s failed (%d): %s", first_arg, run.status, run.err);
    mg_run_clear (&run);
    return NULL;
  }
  if (out_len)
    *out_len = run.out_len;
  out = g_steal_pointer (&run.out);
  mg_run_clear (&run);
  return out;
}

/**
 * mg_ca_store - an X.509 store directory DIR/x509 as the gateway reads it: ca/root.pem, certs/NAME.pem for each of
 * @certs, private/NAME.key (0600) for each of @held.
 * @certs: (array zero-terminated=1)
 * @held: (array zero-terminated=1)
 *
 * Returns: (transfer full): the store's path
 */
char *
mg_ca_store (MgCa *ca, const char *dir, const char *const *certs, const char *const *held)
{
  char *store = g_build_filename (dir, "x509", NULL);
  const char *subs[] = { "", "ca", "certs", "private" };

  for (gsize i = 0; i < G_N_ELEMENTS (subs); i++) {
    g_autofree char *p = g_build_filename (store, subs[i], NULL);
    g_mkdir (p, 0700);
  }
  for (guint pass = 0; pass < 3; pass++) {
    const char *const *names = pass == 0 ? (const char *const[]){ "root", NULL } : pass == 1 ? certs : held;
    for (guint i = 0; names != NULL && names[i] != NULL; i++) {
      g_autofree char *src = mg_ca_path (ca, names[i], pass == 2 ? ".key" : ".pem");
      g_autofree char *dst = g_build_filename (store, pass == 0 ? "ca" : pass == 1 ? "certs" : "private", NULL);
      g_autofree char *fname = g_strconcat (names[i], pass == 2 ? ".key" : ".pem", NULL);
      gsize len;
      g_autofree char *data = mg_test_read (src, &len);
      g_free (mg_test_write (dst, fname, data, (gssize) len));
    }
  }
  return store;
}

char *
mg_ca_path (MgCa *ca, const char *name, const char *suffix)
{
  g_autofree char *file = g_strconcat (name, suffix, NULL);

  return g_build_filename (ca->dir, file, NULL);
}

/* mg_ca_new - a self-signed RSA root "Test Root" in a new directory */
MgCa *
mg_ca_new (void)
{
  MgCa *ca = g_new0 (MgCa, 1);
  g_autofree char *key = NULL, *crt = NULL, *out = NULL;

  ca->dir = mg_test_tmpdir ();
  key = mg_ca_path (ca, "root", ".key");
  crt = mg_ca_path (ca, "root", ".pem");
  out = mg_ca_openssl (ca, NULL, 0, NULL, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", crt,
                       "-days", "30", "-subj", "/CN=Test Root/O=mimegate tests", "-addext",
                       "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign", NULL);
  g_assert_nonnull (out);
  return ca;
}

/* mg_ca_add_leaf - NAME.key and NAME.pem: an S/MIME certificate for @address signed by the root */
gboolean
mg_ca_add_leaf (MgCa *ca, const char *name, const char *address)
{
  return mg_ca_add_leaf_by (ca, "root", name, address);
}

/* mg_ca_serial - NAME.pem's serial number as "0x…" in upper-case hex, as `openssl x509 -serial` prints it */
char *
mg_ca_serial (MgCa *ca, const char *name)
{
  g_autofree char *crt = mg_ca_path (ca, name, ".pem");
  g_autofree char *out = mg_ca_openssl (ca, NULL, 0, NULL, "x509", "-in", crt, "-noout", "-serial", NULL);
  const char *eq;

  if (out == NULL || (eq = strchr (out, '=')) == NULL)
    return NULL;
  return g_strdup_printf ("0x%s", g_strstrip ((char *) eq + 1));
}

void
mg_ca_free (MgCa *ca)
{
  if (ca == NULL)
    return;
  mg_test_rmtree (ca->dir);
  g_free (ca->dir);
  g_free (ca);
}

/* mg_test_pgp_block - the first BEGIN PGP MESSAGE … END PGP MESSAGE block inside @msg (asserts there is one) */
char *
mg_test_pgp_block (const char *msg)
{
  const char *b = strstr (msg, "-----BEGIN PGP MESSAGE-----");
  const char *e = b ? strstr (b, "-----END PGP MESSAGE-----") : NULL;

  g_assert_nonnull (e);
  return g_strndup (b, (gsize) (e - b) + 25);
}

/* ca_issue - NAME.key and NAME.pem for @subj with the extensions @ext_text, signed by ISSUER.pem/ISSUER.key */
static gboolean
ca_issue (MgCa *ca, const char *issuer, const char *name, const char *subj, const char *ext_text)
{
  g_autofree char *key = mg_ca_path (ca, name, ".key");
  g_autofree char *csr = mg_ca_path (ca, name, ".csr");
  g_autofree char *crt = mg_ca_path (ca, name, ".pem");
  g_autofree char *ext_name = g_strconcat (name, ".ext", NULL);
  g_autofree char *issuer_key = mg_ca_path (ca, issuer, ".key");
  g_autofree char *issuer_crt = mg_ca_path (ca, issuer, ".pem");
  g_autofree char *ext_file = mg_test_write (ca->dir, ext_name, ext_text, -1);
  g_autofree char *a = NULL, *b = NULL;

  a = mg_ca_openssl (ca, NULL, 0, NULL, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj",
                     subj, NULL);
  if (a == NULL)
    return FALSE;
  b = mg_ca_openssl (ca, NULL, 0, NULL, "x509", "-req", "-in", csr, "-CA", issuer_crt, "-CAkey", issuer_key,
                     "-CAcreateserial", "-days", "30", "-extfile", ext_file, "-out", crt, NULL);
  return b != NULL;
}

/* mg_ca_add_intermediate - NAME.key and NAME.pem: a CA "Test Intermediate NAME" signed by the root, for
 * mg_ca_add_leaf_by (root → intermediate → leaf, as public S/MIME CAs issue) */
gboolean
mg_ca_add_intermediate (MgCa *ca, const char *name)
{
  g_autofree char *subj = g_strdup_printf ("/CN=Test Intermediate %s/O=mimegate tests", name);

  return ca_issue (ca, "root", name, subj,
                   "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n");
}

/* mg_ca_add_leaf_by - NAME.key and NAME.pem: an S/MIME certificate for @address as mg_ca_add_leaf makes it, signed
 * by @issuer (an intermediate of mg_ca_add_intermediate, or "root") */
gboolean
mg_ca_add_leaf_by (MgCa *ca, const char *issuer, const char *name, const char *address)
{
  g_autofree char *subj = g_strdup_printf ("/CN=%s", address);
  g_autofree char *ext_text =
    g_strdup_printf ("subjectAltName=email:%s\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
                     "extendedKeyUsage=emailProtection\n",
                     address);

  return ca_issue (ca, issuer, name, subj, ext_text);
}

/**
 * mg_ca_add_leaf_dated - NAME.key and NAME.pem: a certificate for @address signed by @issuer (a name of
 * mg_ca_add_intermediate, or "root") with `keyUsage = critical, @usage` and emailProtection, valid from @start to
 * @end (ASN.1 "YYYYMMDDHHMMSSZ"; either may be in the past), or for @days from now when @start is %NULL. Made with
 * `openssl ca`, the one openssl command that takes both dates.
 */
gboolean
mg_ca_add_leaf_dated (MgCa *ca, const char *issuer, const char *name, const char *address, const char *usage,
                      const char *start, const char *end, int days)
{
  g_autofree char *key = mg_ca_path (ca, name, ".key");
  g_autofree char *csr = mg_ca_path (ca, name, ".csr");
  g_autofree char *crt = mg_ca_path (ca, name, ".pem");
  g_autofree char *issuer_key = mg_ca_path (ca, issuer, ".key");
  g_autofree char *issuer_crt = mg_ca_path (ca, issuer, ".pem");
  g_autofree char *subj = g_strdup_printf ("/CN=%s", address);
  g_autofree char *ext_name = g_strconcat (name, ".ext", NULL);
  g_autofree char *ext_text = g_strdup_printf (
    "subjectAltName=email:%s\nkeyUsage=critical,%s\nextendedKeyUsage=emailProtection\n", address, usage);
  g_autofree char *ext_file = mg_test_write (ca->dir, ext_name, ext_text, -1);
  g_autofree char *db = g_build_filename (ca->dir, "ca-index.txt", NULL);
  g_autofree char *conf_text = g_strdup_printf ("[ca]\ndefault_ca = c\n[c]\ndatabase = %s\nnew_certs_dir = %s\n"
                                                "serial = %s/ca-serial\ndefault_md = sha256\npolicy = p\n"
                                                "unique_subject = no\n[p]\ncommonName = supplied\n",
                                                db, ca->dir, ca->dir);
  g_autofree char *conf = mg_test_write (ca->dir, "ca.cnf", conf_text, -1);
  g_autofree char *serial = g_build_filename (ca->dir, "ca-serial", NULL);
  g_autofree char *days_text = g_strdup_printf ("%d", days);
  g_autofree char *a = NULL, *b = NULL;

  if (!g_file_test (db, G_FILE_TEST_EXISTS))
    g_free (mg_test_write (ca->dir, "ca-index.txt", "", 0));
  if (!g_file_test (serial, G_FILE_TEST_EXISTS)) {
    g_autofree char *first = g_strdup_printf ("%08X%08X\n", g_random_int (), g_random_int ());
    g_free (mg_test_write (ca->dir, "ca-serial", first, -1));
  }
  a = mg_ca_openssl (ca, NULL, 0, NULL, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj",
                     subj, NULL);
  if (a == NULL)
    return FALSE;
  if (start != NULL)
    b = mg_ca_openssl (ca, NULL, 0, NULL, "ca", "-batch", "-notext", "-config", conf, "-cert", issuer_crt, "-keyfile",
                       issuer_key, "-in", csr, "-out", crt, "-extfile", ext_file, "-startdate", start, "-enddate", end,
                       NULL);
  else
    b = mg_ca_openssl (ca, NULL, 0, NULL, "ca", "-batch", "-notext", "-config", conf, "-cert", issuer_crt, "-keyfile",
                       issuer_key, "-in", csr, "-out", crt, "-extfile", ext_file, "-days", days_text, NULL);
  return b != NULL;
}

/* mg_test_dir_entries - how many names @dir holds (spool-dir must stay empty) */
guint
mg_test_dir_entries (const char *dir)
{
  g_autoptr (GDir) d = g_dir_open (dir, 0, NULL);
  guint n = 0;

  g_assert_nonnull (d);
  while (g_dir_read_name (d) != NULL)
    n++;
  return n;
}

/* mg_test_random_base64 - @bytes (rounded up to 57) random octets from @rand as base64 lines of 76, written to @a and
 * (if not %NULL) @b; @sum (nullable) takes the octets */
void
mg_test_random_base64 (GRand *rand, gsize bytes, GChecksum *sum, FILE *a, FILE *b)
{
  guint8 raw[57];

  for (gsize done = 0; done < bytes; done += sizeof raw) {
    char line[80];
    gint state = 0, save = 0;
    gsize n;
    for (gsize i = 0; i < sizeof raw; i++)
      raw[i] = (guint8) g_rand_int_range (rand, 0, 256);
    if (sum != NULL)
      g_checksum_update (sum, raw, sizeof raw);
    n = g_base64_encode_step (raw, sizeof raw, FALSE, line, &state, &save);
    n += g_base64_encode_close (FALSE, line + n, &state, &save);
    line[n++] = '\n';
    g_assert_cmpuint (fwrite (line, 1, n, a), ==, n);
    if (b != NULL)
      g_assert_cmpuint (fwrite (line, 1, n, b), ==, n);
  }
}

/* mg_test_gpg_decrypt - the first armored block of @text, decrypted by gpg in @gpg's home (asserted to work) */
char *
mg_test_gpg_decrypt (MgGpg *gpg, const char *text)
{
  g_autofree char *block = mg_test_pgp_block (text);
  char *out;

  g_assert_nonnull (block);
  out = mg_gpg (gpg, block, strlen (block), "-d", NULL);
  g_assert_nonnull (out);
  return out;
}

/* mg_test_cms_decrypt - @msg (an S/MIME message) decrypted by `openssl cms` with @ca's key and certificate NAME
 * @who (asserted to work); @len (nullable) receives the length */
char *
mg_test_cms_decrypt (MgCa *ca, const char *who, const char *msg, gsize msg_len, gsize *len)
{
  g_autofree char *key = mg_ca_path (ca, who, ".key");
  g_autofree char *crt = mg_ca_path (ca, who, ".pem");
  char *out = mg_ca_openssl (ca, msg, msg_len, len, "cms", "-decrypt", "-inkey", key, "-recip", crt, NULL);

  g_assert_nonnull (out);
  return out;
}

/* mg_test_autocrypt_x509 - an X.509 store DIR/NAME holding the corpus's autocrypt-protected-headers S/MIME material:
 * bob.p12 (passphrase "bob") in private/, sample-ca.pem in ca/. Returns: (transfer full): the store's path */
char *
mg_test_autocrypt_x509 (const char *corpus, const char *dir, const char *name)
{
  static const char *const files[][2] = { { "private", "bob.p12" }, { "ca", "sample-ca.pem" } };
  char *store = g_build_filename (dir, name, NULL);

  for (gsize i = 0; i < G_N_ELEMENTS (files); i++) {
    g_autofree char *sub = g_build_filename (store, files[i][0], NULL);
    g_autofree char *src = g_build_filename (corpus, "autocrypt-protected-headers", files[i][1], NULL);
    gsize len = 0;
    g_autofree char *data = mg_test_read (src, &len);
    g_mkdir_with_parents (sub, 0700);
    g_free (mg_test_write (sub, files[i][1], data, (gssize) len));
  }
  return store;
}
