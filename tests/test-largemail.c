/* test-largemail.c - a 60 MB attachment (an 85 MB message) through `mimegate filter`, as a test of the spool's
 * mechanism (issue 13 "Streaming end to end"), not of timings: the run's peak RSS (the filter's own, from wait4) stays
 * under 2x the message, which it cannot when the message is held in anonymous memory and copied; spool-dir is
 * empty while it runs (watched from here: the spool files have no name) and after it; and a run killed with SIGKILL
 * half-way leaves no file there. The same through `mimegate serve` (LMTP in, SMTP reinjection into
 * tests/smtp-capture.py), its VmHWM read from /proc. Each run also checks the bytes delivered. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>

#include <gio/gio.h>
#include <glib.h>
#include <glib/gstdio.h>

#include "testutil.h"

#define ATTACHMENT ((gsize) 60 * 1024 * 1024)

typedef struct {
  char *dir;
  char *spool;    /* spool-dir: must stay empty */
  char *message;  /* the 85 MB message */
  char *expected; /* what is delivered: the message without its forged Authentication-Results */
  gsize size;
} Fixture;

static Fixture fx;

/* make_message - the message (with a forged stamp in our authserv-id, which the keep path removes, so that the
 * header block is rewritten and the body goes through stamp_raw's spool) and what is delivered, as files */
static void
make_message (void)
{
  const char *head = "From: Sender <sender@example.net>\nTo: Rcpt <rcpt@example.org>\nSubject: large\n"
                     "Message-ID: <large@example.net>\nMIME-Version: 1.0\n";
  const char *forged = "Authentication-Results: gw.example; dkim=pass header.d=example.net\n";
  const char *body = "Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\nlarge mail\n"
                     "--b\nContent-Type: application/octet-stream\nContent-Disposition: attachment; filename=d.bin\n"
                     "Content-Transfer-Encoding: base64\n\n";
  FILE *m, *e;
  GRand *rand = g_rand_new_with_seed (13);

  fx.message = g_build_filename (fx.dir, "large.eml", NULL);
  fx.expected = g_build_filename (fx.dir, "expected.eml", NULL);
  m = fopen (fx.message, "w");
  e = fopen (fx.expected, "w");
  g_assert_nonnull (m);
  g_assert_nonnull (e);
  fprintf (m, "%s%s%s", head, forged, body);
  fprintf (e, "%s%s", head, body);
  mg_test_random_base64 (rand, ATTACHMENT, NULL, m, e);
  fputs ("--b--\n", m);
  fputs ("--b--\n", e);
  g_assert_cmpint (fclose (m), ==, 0);
  g_assert_cmpint (fclose (e), ==, 0);
  g_rand_free (rand);
  {
    struct stat st;
    g_assert_cmpint (stat (fx.message, &st), ==, 0);
    fx.size = (gsize) st.st_size;
  }
}

/* same_file - whether two files hold the same bytes (read in chunks: this process stays small, because a child's
 * peak RSS counts what it was forked from) */
static gboolean
same_file (const char *a, const char *b)
{
  FILE *fa = fopen (a, "r"), *fb = fopen (b, "r");
  gboolean same = fa != NULL && fb != NULL;
  char ba[65536], bb[65536];

  while (same) {
    size_t na = fread (ba, 1, sizeof ba, fa), nb = fread (bb, 1, sizeof bb, fb);
    same = na == nb && memcmp (ba, bb, na) == 0;
    if (na == 0)
      break;
  }
  if (fa)
    fclose (fa);
  if (fb)
    fclose (fb);
  return same;
}

typedef struct {
  int status;
  glong maxrss_kib; /* the filter's peak RSS (wait4: itself and what it waited for) */
  guint spool_max;  /* the most names spool-dir held while it ran */
} Run;

/* run_filter - `mimegate filter -c CONF ARGS...` with the message on stdin and stdout into @out; spool-dir watched
 * every 2 ms while it runs; with @kill_after_ms > 0 killed with SIGKILL after that long */
static void
run_filter (const char *conf, const char *const *args, const char *out, guint kill_after_ms, Run *run)
{
  g_autoptr (GPtrArray) argv = g_ptr_array_new ();
  struct rusage usage;
  gint64 start = g_get_monotonic_time ();
  pid_t pid;
  int in = open (fx.message, O_RDONLY), o = open (out, O_WRONLY | O_CREAT | O_TRUNC, 0600);

  g_assert_cmpint (in, >=, 0);
  g_assert_cmpint (o, >=, 0);
  g_ptr_array_add (argv, (gpointer) mg_test_mimegate ());
  g_ptr_array_add (argv, (gpointer) "filter");
  g_ptr_array_add (argv, (gpointer) "-c");
  g_ptr_array_add (argv, (gpointer) conf);
  for (guint i = 0; args[i] != NULL; i++)
    g_ptr_array_add (argv, (gpointer) args[i]);
  g_ptr_array_add (argv, NULL);
  memset (run, 0, sizeof *run);
  pid = fork ();
  g_assert_cmpint (pid, >=, 0);
  if (pid == 0) {
    dup2 (in, 0);
    dup2 (o, 1);
    execv (argv->pdata[0], (char **) argv->pdata);
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
    if (kill_after_ms > 0 && g_get_monotonic_time () - start > (gint64) kill_after_ms * 1000) {
      kill (pid, SIGKILL);
      kill_after_ms = 0;
    }
    g_usleep (2000);
  }
  run->maxrss_kib = usage.ru_maxrss;
}

static char *
conf_with (const char *extra)
{
  g_autofree char *text =
    g_strdup_printf ("[gateway]\ngnupg-home = none\nx509-store = none\nlog = none\nauthserv-id = gw.example\n"
                     "max-size = 200M\nspool-dir = %s\n%s",
                     fx.spool, extra);
  return mg_test_write (fx.dir, "large.conf", text, -1);
}

/* pass-through with --stdout: the forged stamp removed, the body the same, bounded memory, no named file */
static void
test_stdout (void)
{
  g_autofree char *conf = conf_with ("");
  g_autofree char *out = g_build_filename (fx.dir, "stdout.eml", NULL);
  const char *args[] = { "--stdout", "-f", "sender@example.net", "--", "rcpt@example.org", NULL };
  Run r;

  run_filter (conf, args, out, 0, &r);
  g_test_message ("filter --stdout, %" G_GSIZE_FORMAT " bytes: peak RSS %ld KiB = %.2f x the message", fx.size,
                  r.maxrss_kib, r.maxrss_kib * 1024.0 / (double) fx.size);
  g_printerr ("# filter --stdout pass-through: peak RSS %.1f MiB = %.2f x the message (%.1f MB)\n",
              r.maxrss_kib / 1024.0, r.maxrss_kib * 1024.0 / (double) fx.size, fx.size / 1e6);
  g_assert_true (WIFEXITED (r.status));
  g_assert_cmpint (WEXITSTATUS (r.status), ==, 0);
  g_assert_true (same_file (out, fx.expected));
  g_assert_cmpfloat (r.maxrss_kib * 1024.0, <, 2.0 * (double) fx.size);
  g_assert_cmpuint (r.spool_max, ==, 0);
  g_assert_cmpuint (mg_test_dir_entries (fx.spool), ==, 0);
  unlink (out);
}

/* pass-through reinjected: the child's stdin is the result's spool file; what it read is the whole result */
static void
test_reinject (void)
{
  g_autofree char *capture = g_build_filename (fx.dir, "capture", NULL);
  g_autofree char *script = g_test_build_filename (G_TEST_DIST, "reinject-capture.sh", NULL);
  g_autofree char *extra = g_strdup_printf ("reinject = /bin/sh %s %s\n", script, capture);
  g_autofree char *conf = conf_with (extra);
  g_autofree char *out = g_build_filename (fx.dir, "stdout.eml", NULL);
  g_autofree char *got = g_build_filename (capture, "1.eml", NULL);
  const char *args[] = { "-f", "sender@example.net", "--", "rcpt@example.org", NULL };
  Run r;

  g_assert_cmpint (g_mkdir (capture, 0700), ==, 0);
  run_filter (conf, args, out, 0, &r);
  g_printerr ("# filter reinjecting pass-through: peak RSS %.1f MiB = %.2f x the message\n", r.maxrss_kib / 1024.0,
              r.maxrss_kib * 1024.0 / (double) fx.size);
  g_assert_true (WIFEXITED (r.status));
  g_assert_cmpint (WEXITSTATUS (r.status), ==, 0);
  g_assert_true (same_file (got, fx.expected));
  g_assert_cmpfloat (r.maxrss_kib * 1024.0, <, 2.0 * (double) fx.size);
  g_assert_cmpuint (r.spool_max, ==, 0);
  g_assert_cmpuint (mg_test_dir_entries (fx.spool), ==, 0);
  mg_test_rmtree (capture);
  unlink (out);
}

/* SIGKILL half-way through (while it reads or converts, and while the reinjection reads): nothing is left in
 * spool-dir, because no spool file ever had a name there */
static void
test_killed (void)
{
  g_autofree char *extra = g_strdup ("reinject = /bin/sh -c \"sleep 0.2; cat >/dev/null\" sh\n");
  g_autofree char *conf = conf_with (extra);
  g_autofree char *out = g_build_filename (fx.dir, "stdout.eml", NULL);
  const char *args[] = { "-f", "sender@example.net", "--", "rcpt@example.org", NULL };
  guint delays[] = { 100, 400, 900 };

  for (guint i = 0; i < G_N_ELEMENTS (delays); i++) {
    Run r;
    run_filter (conf, args, out, delays[i], &r);
    g_test_message ("killed after %u ms: %s", delays[i], WIFSIGNALED (r.status) ? "killed" : "had finished");
    g_assert_cmpuint (r.spool_max, ==, 0);
    g_assert_cmpuint (mg_test_dir_entries (fx.spool), ==, 0);
  }
  unlink (out);
}

/* free_port - a TCP port on 127.0.0.1 that was free a moment ago */
static guint
free_port (void)
{
  struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
  socklen_t len = sizeof a;
  int fd = socket (AF_INET, SOCK_STREAM, 0);

  g_assert_cmpint (bind (fd, (struct sockaddr *) &a, sizeof a), ==, 0);
  g_assert_cmpint (getsockname (fd, (struct sockaddr *) &a, &len), ==, 0);
  close (fd);
  return ntohs (a.sin_port);
}

static int
connect_to (guint port)
{
  struct sockaddr_in a = { .sin_family = AF_INET,
                           .sin_port = htons (port),
                           .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };

  for (int tries = 0; tries < 500; tries++) {
    int fd = socket (AF_INET, SOCK_STREAM, 0);
    if (connect (fd, (struct sockaddr *) &a, sizeof a) == 0)
      return fd;
    close (fd);
    g_usleep (20000);
  }
  g_assert_not_reached ();
}

/* reply - the last line of the next reply on @fd (one byte at a time: replies are short) */
static char *
reply (int fd)
{
  GString *line = g_string_new (NULL);

  for (;;) {
    char c;
    g_assert_cmpint (read (fd, &c, 1), ==, 1);
    if (c != '\n') {
      g_string_append_c (line, c);
      continue;
    }
    if (line->len >= 4 && line->str[3] == '-') {
      g_string_truncate (line, 0);
      continue;
    }
    return g_string_free (line, FALSE);
  }
}

static void
say (int fd, const char *text, const char *want)
{
  g_autofree char *got = NULL;

  if (text != NULL)
    g_assert_cmpint (write (fd, text, strlen (text)), ==, (gssize) strlen (text));
  got = reply (fd);
  if (!g_str_has_prefix (got, want))
    g_error ("sent %s, got %s", text ? text : "(nothing)", got);
}

/* send_data - the message file as DATA: CRLF lines, dot-stuffed, the final dot */
static void
send_data (int fd)
{
  FILE *f = fopen (fx.message, "r");
  GString *out = g_string_sized_new (1 << 20);
  char line[4096];

  g_assert_nonnull (f);
  while (fgets (line, sizeof line, f) != NULL) {
    gsize n = strlen (line);
    if (line[0] == '.')
      g_string_append_c (out, '.');
    if (n > 0 && line[n - 1] == '\n')
      n--;
    g_string_append_len (out, line, (gssize) n);
    g_string_append (out, "\r\n");
    if (out->len > (1 << 20) - 8192) {
      g_assert_cmpint (write (fd, out->str, out->len), ==, (gssize) out->len);
      g_string_truncate (out, 0);
    }
  }
  g_string_append (out, ".\r\n");
  g_assert_cmpint (write (fd, out->str, out->len), ==, (gssize) out->len);
  g_string_free (out, TRUE);
  fclose (f);
}

/* same_as_expected_crlf - whether @path, its CRLF line ends read as LF, is the expected message */
static gboolean
same_as_expected_crlf (const char *path)
{
  g_autofree char *plain = g_build_filename (fx.dir, "lf.eml", NULL);
  FILE *in = fopen (path, "r"), *out = fopen (plain, "w");
  int c, prev = -1;
  gboolean same;

  g_assert_nonnull (in);
  g_assert_nonnull (out);
  while ((c = getc (in)) != EOF) {
    if (prev == '\r' && c != '\n')
      putc ('\r', out);
    if (c != '\r')
      putc (c, out);
    prev = c;
  }
  fclose (in);
  fclose (out);
  same = same_file (plain, fx.expected);
  unlink (plain);
  return same;
}

static glong
vm_hwm_kib (pid_t pid)
{
  g_autofree char *path = g_strdup_printf ("/proc/%d/status", (int) pid);
  g_autofree char *text = NULL;
  const char *at;

  g_assert_true (g_file_get_contents (path, &text, NULL, NULL));
  at = strstr (text, "VmHWM:");
  g_assert_nonnull (at);
  return strtol (at + 6, NULL, 10);
}

/* serve: the message over LMTP, reinjected over SMTP into tests/smtp-capture.py: serve's peak RSS under 2x the
 * message, spool-dir empty throughout, and what was reinjected is the message (its forged stamp removed) */
static void
test_serve (void)
{
  g_autofree char *capture = g_build_filename (fx.dir, "capture", NULL);
  g_autofree char *script = g_test_build_filename (G_TEST_DIST, "smtp-capture.py", NULL);
  g_autofree char *cap_listen = NULL, *extra = NULL, *conf = NULL, *got = NULL;
  g_autoptr (GSubprocess) cap = NULL, srv = NULL;
  g_autoptr (GError) error = NULL;
  guint cap_port = free_port (), port = free_port (), spool_max = 0;
  pid_t pid;
  int fd;
  glong hwm;

  if (!mg_test_have_program ("python3")) {
    g_test_skip ("no python3 for tests/smtp-capture.py");
    return;
  }
  g_assert_cmpint (g_mkdir (capture, 0700), ==, 0);
  cap_listen = g_strdup_printf ("inet:127.0.0.1:%u", cap_port);
  cap = g_subprocess_new (G_SUBPROCESS_FLAGS_STDIN_PIPE | G_SUBPROCESS_FLAGS_STDOUT_SILENCE, &error, "python3", script,
                          "--listen", cap_listen, "--dir", capture, NULL);
  g_assert_no_error (error);
  extra = g_strdup_printf ("[serve]\nlisten = inet:127.0.0.1:%u\nreinject = smtp:127.0.0.1:%u\nprotocol = lmtp\n", port,
                           cap_port);
  conf = conf_with (extra);
  srv = g_subprocess_new (G_SUBPROCESS_FLAGS_STDIN_INHERIT, &error, mg_test_mimegate (), "serve", "-c", conf, NULL);
  g_assert_no_error (error);
  pid = (pid_t) g_ascii_strtoll (g_subprocess_get_identifier (srv), NULL, 10);
  close (connect_to (cap_port)); /* the capture server listens */
  fd = connect_to (port);
  say (fd, NULL, "220");
  say (fd, "LHLO client.example\r\n", "250");
  say (fd, "MAIL FROM:<sender@example.net>\r\n", "250");
  say (fd, "RCPT TO:<rcpt@example.org>\r\n", "250");
  say (fd, "DATA\r\n", "354");
  send_data (fd);
  /* the reply comes once serve has reinjected it; watch spool-dir meanwhile */
  for (;;) {
    struct pollfd p = { fd, POLLIN, 0 };
    spool_max = MAX (spool_max, mg_test_dir_entries (fx.spool));
    if (poll (&p, 1, 2) == 1)
      break;
  }
  say (fd, NULL, "250");
  hwm = vm_hwm_kib (pid);
  say (fd, "QUIT\r\n", "221");
  close (fd);
  g_printerr ("# serve (LMTP in, SMTP out) pass-through: VmHWM %.1f MiB = %.2f x the message\n", hwm / 1024.0,
              hwm * 1024.0 / (double) fx.size);
  g_subprocess_send_signal (srv, SIGTERM);
  g_assert_true (g_subprocess_wait (srv, NULL, NULL));
  g_subprocess_force_exit (cap);
  g_subprocess_wait (cap, NULL, NULL);
  got = g_build_filename (capture, "msg-1.eml", NULL);
  g_assert_true (same_as_expected_crlf (got));
  g_assert_cmpfloat (hwm * 1024.0, <, 2.0 * (double) fx.size);
  g_assert_cmpuint (spool_max, ==, 0);
  g_assert_cmpuint (mg_test_dir_entries (fx.spool), ==, 0);
  mg_test_rmtree (capture);
}

int
main (int argc, char **argv)
{
  int rc;

  g_test_init (&argc, &argv, NULL);
  fx.dir = mg_test_tmpdir ();
  fx.spool = g_build_filename (fx.dir, "spool", NULL);
  g_assert_cmpint (g_mkdir (fx.spool, 0700), ==, 0);
  make_message ();
  g_test_add_func ("/largemail/stdout", test_stdout);
  g_test_add_func ("/largemail/reinject", test_reinject);
  g_test_add_func ("/largemail/killed", test_killed);
  g_test_add_func ("/largemail/serve", test_serve);
  rc = g_test_run ();
  mg_test_rmtree (fx.dir);
  g_free (fx.dir);
  g_free (fx.spool);
  g_free (fx.message);
  g_free (fx.expected);
  return rc;
}
