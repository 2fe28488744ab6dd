/* test-reinject.c - `mimegate filter`'s reinjection when the filter dies in the middle of it, and when the reinject
 * command fails without a word.
 *
 * A filter killed by SIGKILL (Postfix's time limit, the OOM killer, an admin's kill -9: nothing it can catch) must
 * leave either no message or a complete one behind, never a truncated or empty one: Postfix retries a killed filter,
 * so a duplicate is acceptable, a cut copy never. The reinject command is a wrapper script around
 * tests/reinject-slow.py, which notes what its stdin is and commits what it read only at end of input, as sendmail
 * does; the filter is killed while the wrapper sleeps, while its direct child reads, and while a grandchild that
 * escaped the filter's process group and session reads (as Postfix's postdrop or a forking sendmail would). Each is
 * run for a result small enough for a sealed memfd and for a 2 MB one that goes through an unlinked spool file; both
 * are far over a pipe's 64 KiB buffer, which is where copies used to be cut. The expected result is the filter's own
 * --stdout output for the same message and recipient, compared byte for byte. */
#include "config.h"

#include <signal.h>
#include <string.h>

#include <gio/gio.h>
#include <glib/gstdio.h>

#include "testutil.h"

typedef struct {
  char *dir;
  char *spool; /* spool-dir and TMPDIR of every run: must stay empty */
  char *out;   /* where reinject-slow.py writes */
} Fixture;

static Fixture fx;

#define RCPT "nobody@example.com"
#define SEALED "15" /* F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE */

/* message_of - a clear message of about @size bytes whose last line says it is the last */
static char *
message_of (gsize size)
{
  GString *s = g_string_new ("From: Sender <sender@example.net>\nTo: <" RCPT ">\nSubject: reinjection under kill\n"
                             "Message-ID: <reinject-kill@example.net>\nMIME-Version: 1.0\n"
                             "Content-Type: text/plain; charset=us-ascii\n\n");

  for (guint i = 0; s->len < size; i++)
    g_string_append_printf (s, "line %07u of a message that must arrive whole or not at all\n", i);
  g_string_append (s, "LAST-LINE-OF-THE-MESSAGE\n");
  return g_string_free (s, FALSE);
}

/* script - an executable shell script DIR/NAME with @body */
static char *
script (const char *name, const char *body)
{
  g_autofree char *text = g_strdup_printf ("#!/bin/sh\n%s\n", body);
  char *path = mg_test_write (fx.dir, name, text, -1);

  g_assert_cmpint (g_chmod (path, 0700), ==, 0);
  return path;
}

/* conf_for - a configuration without key stores whose reinject command is @reinject */
static char *
conf_for (const char *name, const char *extra, const char *reinject)
{
  g_autofree char *text = g_strdup_printf ("[gateway]\n%slog = none\ntimeout = 60\nspool-dir = %s\nreinject = %s\n",
                                           extra, fx.spool, reinject);

  return mg_test_write (fx.dir, name, text, -1);
}

/* reset - an empty capture directory */
static void
reset (void)
{
  mg_test_rmtree (fx.out);
  g_assert_cmpint (g_mkdir (fx.out, 0700), ==, 0);
}

/* out_path - DIR/NAME in the capture directory */
static char *
out_path (const char *name)
{
  return g_build_filename (fx.out, name, NULL);
}

/* out_read - the capture directory's NAME, or NULL when it is not there */
static char *
out_read (const char *name)
{
  g_autofree char *path = out_path (name);
  gsize len;

  return g_file_test (path, G_FILE_TEST_EXISTS) ? mg_test_read (path, &len) : NULL;
}

/* wait_for - whether the capture directory's NAME appears within @seconds */
static gboolean
wait_for (const char *name, guint seconds)
{
  g_autofree char *path = out_path (name);
  gint64 end = g_get_monotonic_time () + seconds * G_USEC_PER_SEC;

  while (!g_file_test (path, G_FILE_TEST_EXISTS) && g_get_monotonic_time () < end)
    g_usleep (10 * 1000);
  return g_file_test (path, G_FILE_TEST_EXISTS);
}

/* wait_dead - whether process @pid is gone (or a zombie) within 5 s; a SIGKILL lands asynchronously */
static gboolean
wait_dead (const char *pid)
{
  g_autofree char *stat_path = g_strdup_printf ("/proc/%s/stat", pid);

  for (guint i = 0; i < 500; i++) {
    g_autofree char *stat = NULL;
    const char *paren;
    if (!g_file_get_contents (stat_path, &stat, NULL, NULL) || (paren = strrchr (stat, ')')) == NULL ||
        paren[2] == 'Z' || paren[2] == 'X')
      return TRUE;
    g_usleep (10 * 1000);
  }
  return FALSE;
}

/* spool_empty - nothing of any run is left in spool-dir / TMPDIR */
static void
spool_empty (void)
{
  g_autoptr (GDir) d = g_dir_open (fx.spool, 0, NULL);
  const char *name = d ? g_dir_read_name (d) : NULL;

  if (name != NULL)
    g_error ("the spool directory holds %s after a run", name);
}

/* filter_env - the environment of every run: TMPDIR in the watched spool, untranslated */
static char **
filter_env (void)
{
  return mg_test_env ("TMPDIR", fx.spool, "LANGUAGE", NULL, "LC_ALL", "C.UTF-8", NULL);
}

/* expected - what the filter makes of @input for RCPT: its --stdout output */
static char *
expected (const char *input, gsize *len)
{
  g_autofree char *conf = conf_for ("stdout.conf", "gnupg-home = none\nx509-store = none\n", "/bin/false");
  g_auto (GStrv) env = filter_env ();
  const char *argv[] = { mg_test_mimegate (),  "filter", "-c", conf, "--stdout", "-f",
                         "sender@example.net", "--",     RCPT, NULL };
  MgRun r;
  char *out;

  g_assert_true (mg_test_run (&r, argv, (const char *const *) env, input, strlen (input)));
  g_assert_cmpint (r.status, ==, 0);
  g_assert_cmpuint (r.out_len, >, strlen (input) / 2);
  *len = r.out_len;
  out = g_steal_pointer (&r.out);
  mg_run_clear (&r);
  return out;
}

/* start_filter - mimegate filter for RCPT with the file @input on stdin, reinjecting with @conf's command */
static GSubprocess *
start_filter (const char *conf, const char *input)
{
  g_autoptr (GSubprocessLauncher) l = g_subprocess_launcher_new (G_SUBPROCESS_FLAGS_STDERR_PIPE);
  g_auto (GStrv) env = filter_env ();
  const char *argv[] = { mg_test_mimegate (), "filter", "-c", conf, "-f", "sender@example.net", "--", RCPT, NULL };
  g_autoptr (GError) error = NULL;
  GSubprocess *p;

  g_subprocess_launcher_set_environ (l, env);
  g_subprocess_launcher_set_stdin_file_path (l, input);
  p = g_subprocess_launcher_spawnv (l, argv, &error);
  g_assert_no_error (error);
  return p;
}

/* kill_filter - SIGKILL the filter, which must still be running (waiting for its reinjection), and reap it */
static void
kill_filter (GSubprocess *p)
{
  g_subprocess_send_signal (p, SIGKILL);
  g_assert_true (g_subprocess_wait (p, NULL, NULL));
  g_assert_true (g_subprocess_get_if_signaled (p));
  g_assert_cmpint (g_subprocess_get_term_sig (p), ==, SIGKILL);
}

/* check_stdin - the reinjection's stdin was a complete file: a sealed memfd (@memfd) or an unlinked spool file */
static void
check_stdin (gboolean memfd)
{
  g_autofree char *stdin_text = out_read ("stdin");
  g_auto (GStrv) lines = NULL;

  g_assert_nonnull (stdin_text);
  lines = g_strsplit (stdin_text, "\n", -1);
  g_assert_cmpuint (g_strv_length (lines), >=, 2);
  if (memfd) {
    g_assert_true (g_str_has_prefix (lines[0], "/memfd:"));
    g_assert_cmpstr (lines[1], ==, SEALED);
  } else {
    g_autofree char *prefix = g_strconcat (fx.spool, "/", NULL);
    g_assert_true (g_str_has_prefix (lines[0], prefix));
    g_assert_true (g_str_has_suffix (lines[0], " (deleted)"));
    g_assert_cmpstr (lines[1], ==, "-1");
  }
}

/* check_committed - the capture committed exactly @want (@want_len bytes) after seeing end of input */
static void
check_committed (const char *want, gsize want_len)
{
  g_autofree char *path = out_path ("msg");
  g_autofree char *count = out_read ("count");
  g_autofree char *count_want = g_strdup_printf ("%" G_GSIZE_FORMAT " eof\n", want_len);
  g_autofree char *got = NULL;
  gsize got_len;

  g_assert_true (g_file_test (path, G_FILE_TEST_EXISTS));
  got = mg_test_read (path, &got_len);
  g_assert_cmpstr (count, ==, count_want);
  g_assert_cmpmem (got, got_len, want, want_len);
  g_assert_true (g_str_has_suffix (got, "LAST-LINE-OF-THE-MESSAGE\n"));
}

typedef enum { KILL_NONE, KILL_SLEEPING, KILL_READING, KILL_READING_DETACHED } KillAt;

/* run_case - one message of @size through the filter; SIGKILL it at @at; what was committed is nothing or all */
static void
run_case (gsize size, KillAt at)
{
  g_autofree char *input = message_of (size);
  g_autofree char *input_path = mg_test_write (fx.dir, "in.eml", input, -1);
  g_autofree char *slow = g_test_build_filename (G_TEST_DIST, "reinject-slow.py", NULL);
  const char *mode = at == KILL_NONE ? "read" : at == KILL_READING_DETACHED ? "detach" : "wait";
  g_autofree char *body =
    g_strdup_printf ("echo $$ > '%s/wrapper.pid'\n%sexec python3 '%s' '%s' %s \"$@\"", fx.out,
                     at == KILL_SLEEPING ? "echo > \"$0.sleeping\"; sleep 2\n" : "", slow, fx.out, mode);
  g_autofree char *wrapper = script ("wrapper.sh", body);
  g_autofree char *sleeping = g_strconcat (wrapper, ".sleeping", NULL);
  g_autofree char *conf = conf_for ("kill.conf", "gnupg-home = none\nx509-store = none\n", wrapper);
  gsize want_len;
  g_autofree char *want = expected (input, &want_len);
  gboolean memfd = want_len <= 1024 * 1024;
  g_autoptr (GSubprocess) p = NULL;

  g_test_message ("%" G_GSIZE_FORMAT " bytes (%s), killed %s", want_len, memfd ? "memfd" : "spool file",
                  (const char *[]){ "never", "while the wrapper sleeps", "while its child reads",
                                    "while a detached grandchild reads" }[at]);
  reset ();
  g_unlink (sleeping);
  p = start_filter (conf, input_path);
  switch (at) {
  case KILL_NONE: {
    g_autoptr (GBytes) err = NULL;
    g_assert_true (g_subprocess_communicate (p, NULL, NULL, NULL, &err, NULL));
    g_assert_true (g_subprocess_get_if_exited (p));
    g_assert_cmpint (g_subprocess_get_exit_status (p), ==, 0);
    g_assert_cmpuint (g_bytes_get_size (err), ==, 0);
    check_stdin (memfd);
    check_committed (want, want_len);
    break;
  }
  case KILL_SLEEPING: {
    g_autofree char *pid = NULL;
    gint64 end = g_get_monotonic_time () + 20 * G_USEC_PER_SEC;
    while (!g_file_test (sleeping, G_FILE_TEST_EXISTS) && g_get_monotonic_time () < end)
      g_usleep (10 * 1000);
    g_assert_true (g_file_test (sleeping, G_FILE_TEST_EXISTS));
    pid = g_strstrip (out_read ("wrapper.pid"));
    kill_filter (p);
    /* the wrapper dies with the filter (PR_SET_PDEATHSIG), so it never gets to exec the capture */
    g_assert_true (wait_dead (pid));
    g_usleep (2500 * 1000); /* past the wrapper's sleep: nothing comes back to life */
    g_assert_null (out_read ("stdin"));
    g_assert_null (out_read ("msg"));
    break;
  }
  case KILL_READING: {
    g_autofree char *pid = NULL, *done = NULL;
    g_assert_true (wait_for ("reading", 20));
    pid = g_strstrip (out_read ("wrapper.pid")); /* the wrapper exec'd the capture: the same process */
    check_stdin (memfd);
    kill_filter (p);
    /* the capture, the filter's direct child, dies with it before it reads on: nothing is committed */
    g_assert_true (wait_dead (pid));
    done = out_read ("done");
    g_assert_null (done);
    g_assert_null (out_read ("msg"));
    break;
  }
  case KILL_READING_DETACHED: {
    g_autofree char *done = NULL;
    g_assert_true (wait_for ("reading", 20));
    check_stdin (memfd);
    kill_filter (p);
    /* out of reach of the filter, it reads on after the filter's death: its input was complete before it started,
     * so what it commits is the whole message (the duplicate Postfix's retry makes is acceptable) */
    g_assert_true (wait_for ("done", 30));
    done = out_read ("done");
    g_assert_cmpstr (done, ==, "committed\n");
    check_committed (want, want_len);
    break;
  }
  }
  spool_empty ();
}

static void
test_small (gconstpointer data)
{
  run_case (512 * 1024, GPOINTER_TO_INT (data));
}

static void
test_large (gconstpointer data)
{
  run_case (2 * 1024 * 1024, GPOINTER_TO_INT (data));
}

/* a spool-dir that does not exist: the 2 MB message has nowhere to go (it is spooled as it is read, before the
 * result), deferred with a line that says where */
static void
test_spool_missing (void)
{
  g_autofree char *input = message_of (2 * 1024 * 1024);
  g_autofree char *missing = g_build_filename (fx.dir, "no-such-spool", NULL);
  g_autofree char *text = g_strdup_printf ("[gateway]\ngnupg-home = none\nx509-store = none\nlog = none\n"
                                           "spool-dir = %s\nreinject = /bin/true\n",
                                           missing);
  g_autofree char *conf = mg_test_write (fx.dir, "nospool.conf", text, -1);
  g_auto (GStrv) env = filter_env ();
  const char *argv[] = { mg_test_mimegate (), "filter", "-c", conf, "-f", "sender@example.net", "--", RCPT, NULL };
  g_autofree char *want = NULL;
  MgRun r;

  g_assert_true (mg_test_run (&r, argv, (const char *const *) env, input, strlen (input)));
  g_assert_cmpint (r.status, ==, 75);
  want =
    g_strdup_printf ("4.3.0 mimegate filter: cannot spool the message in %s: No such file or directory\n", missing);
  g_assert_cmpstr (r.err, ==, want);
  mg_run_clear (&r);
}

/* a reinject command that fails without a word: the status says how it ended and nothing more, and no GLib
 * warning reaches stderr (pipe(8) copies it into bounces and logs) */
static void
test_silent_failure (void)
{
  MgGpg *gpg = mg_gpg_new ();
  g_autofree char *body = NULL, *prog = NULL, *conf = NULL, *extra = NULL, *want = NULL, *input = NULL;
  g_auto (GStrv) env = filter_env ();
  struct {
    const char *fail; /* the shell command run N runs after reading its input; "" for success */
    guint run;
    const char *tail; /* what follows the program's name in the status line */
  } cases[] = {
    { "exit 75", 2,
      " exited with status 75 (earlier groups were delivered; deferring all: duplicates rather than loss)" },
    { "exit 75", 1, " exited with status 75" },
    { "printf ' \\n\\r\\n ' >&2; exit 75", 1, " exited with status 75" },
    { "kill -9 $$", 1, " was killed by signal 9" },
    { "echo 'postdrop: fatal: no space' >&2; exit 75", 1, " exited with status 75: postdrop: fatal: no space" },
  };

  g_assert_true (mg_gpg_add_key (gpg, "alice@example.org", "ed25519"));
  extra = g_strdup_printf ("gnupg-home = %s\nx509-store = none\ntrust-model = always\n", gpg->home);
  input = message_of (4096);
  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++) {
    const char *argv[] = { mg_test_mimegate (), "filter", "-c", NULL, "-f", "sender@example.net", "--",
                           "alice@example.org", RCPT,     NULL };
    g_autofree char *first = NULL, *second = NULL;
    MgRun r;
    g_clear_pointer (&body, g_free);
    g_clear_pointer (&prog, g_free);
    g_clear_pointer (&conf, g_free);
    g_clear_pointer (&want, g_free);
    /* run N keeps its input as N.eml; run cases[i].run then fails as the case says */
    body = g_strdup_printf ("n=1\nwhile [ -e '%s/'$n.eml ]; do n=$((n + 1)); done\ncat > '%s/'$n.eml\n"
                            "if [ $n = %u ]; then %s; fi\nexit 0",
                            fx.out, fx.out, cases[i].run, cases[i].fail);
    prog = script ("silent.sh", body);
    conf = conf_for ("silent.conf", extra, prog);
    argv[3] = conf;
    reset ();
    g_assert_true (mg_test_run (&r, argv, (const char *const *) env, input, strlen (input)));
    g_assert_cmpint (r.status, ==, 75);
    want = g_strdup_printf ("4.3.0 mimegate filter: reinjection failed: %s%s\n", prog, cases[i].tail);
    g_assert_cmpstr (r.err, ==, want); /* the one line, nothing else: no "(null)", no GLib-CRITICAL */
    g_assert_null (strstr (r.err, "CRITICAL"));
    mg_run_clear (&r);
    /* the groups before the failing one were reinjected: alice's encrypted, then the clear one */
    first = out_read ("1.eml");
    second = out_read ("2.eml");
    g_assert_nonnull (first);
    g_assert_nonnull (strstr (first, "multipart/encrypted"));
    if (cases[i].run == 2)
      g_assert_cmpstr (second, ==, input);
    else
      g_assert_null (second);
  }
  mg_gpg_free (gpg);
}

int
main (int argc, char **argv)
{
  int status;

  g_test_init (&argc, &argv, NULL);
  fx.dir = mg_test_tmpdir ();
  fx.spool = g_build_filename (fx.dir, "spool", NULL);
  fx.out = g_build_filename (fx.dir, "out", NULL);
  g_assert_cmpint (g_mkdir (fx.spool, 0700), ==, 0);
  g_test_add_data_func ("/reinject/memfd/complete", GINT_TO_POINTER (KILL_NONE), test_small);
  g_test_add_data_func ("/reinject/memfd/kill-sleeping", GINT_TO_POINTER (KILL_SLEEPING), test_small);
  g_test_add_data_func ("/reinject/memfd/kill-reading", GINT_TO_POINTER (KILL_READING), test_small);
  g_test_add_data_func ("/reinject/memfd/kill-reading-detached", GINT_TO_POINTER (KILL_READING_DETACHED), test_small);
  g_test_add_data_func ("/reinject/spool/complete", GINT_TO_POINTER (KILL_NONE), test_large);
  g_test_add_data_func ("/reinject/spool/kill-sleeping", GINT_TO_POINTER (KILL_SLEEPING), test_large);
  g_test_add_data_func ("/reinject/spool/kill-reading", GINT_TO_POINTER (KILL_READING), test_large);
  g_test_add_data_func ("/reinject/spool/kill-reading-detached", GINT_TO_POINTER (KILL_READING_DETACHED), test_large);
  g_test_add_func ("/reinject/spool-missing", test_spool_missing);
  g_test_add_func ("/reinject/silent-failure", test_silent_failure);
  status = g_test_run ();
  mg_test_rmtree (fx.dir);
  g_free (fx.dir);
  g_free (fx.spool);
  g_free (fx.out);
  return status;
}
