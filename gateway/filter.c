/* filter.c - `mimegate filter [-c CONF] [--stdout] [--queue-id ID] -f SENDER [--] RCPT...`: the Postfix pipe(8)
 * face of the engine (engine.h; DESIGN.md "Users", "Outcomes").
 *
 * One run: read the whole message from stdin; the engine decides, groups and converts; only then each group is
 * reinjected with the reinject command plus `-f SENDER -- RCPT...`. Nothing is emitted before all work is done.
 *
 * Exit codes for pipe(8), which bounces on everything but 75 and 71: 0 delivered; 75 with a 4.x.x first line for
 * everything transient or internal (a store or the agent unavailable, reinjection failed or timed out, a bad
 * configuration, a usage mistake in master.cf, SIGTERM); 69 with a 5.7.1 first line when every recipient is refused
 * by policy (encrypt = required and no usable key). When only some are refused, the others are delivered, the
 * sender gets a delivery status notification for the refused ones (RFC 3464) and the run exits 0: pipe(8) has one
 * status per run, so this is the only way to report one recipient without bouncing or deferring the others. With
 * `mimegate_destination_recipient_limit = 1` every run has one recipient and Postfix reports it itself. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <gio/gio.h>
#include <glib/gi18n.h>

#include "cli.h"
#include "engine.h"
#include "log.h"
#include "spool.h"

/* the child being waited for, and what to say when the run is stopped: for the signal handler */
static volatile pid_t child_pid = 0;
static char stop_line[256];

/* on_stop - SIGALRM (the run's timeout) or SIGTERM: the reinjection's whole process group killed, the stop line, 75.
 * The reinjection's input is complete before it starts (reinject_input), so it could only commit the whole message;
 * it is killed because the run is deferred and Postfix will deliver it again, and nothing it started may outlive us. */
static void
on_stop (int sig)
{
  pid_t child = child_pid;

  if (child > 0)
    kill (-child, SIGKILL);
  if (write (STDERR_FILENO, stop_line, strlen (stop_line)) < 0) {
    /* nothing left to tell anyone */
  }
  _exit (sig == SIGALRM || sig == SIGTERM ? 75 : 71);
}

static void
arm_stop_handlers (guint timeout)
{
  struct sigaction sa;

  g_snprintf (stop_line, sizeof stop_line, "4.4.7 mimegate filter: %s\n",
              _ ("stopped (timeout or SIGTERM) before the message was delivered; it is deferred"));
  memset (&sa, 0, sizeof sa);
  sa.sa_handler = on_stop;
  sigemptyset (&sa.sa_mask);
  sigaction (SIGALRM, &sa, NULL);
  sigaction (SIGTERM, &sa, NULL);
  signal (SIGPIPE, SIG_IGN);
  signal (SIGXFSZ, SIG_IGN); /* a full disk or a file size limit is an error to report (EFBIG), not a kill */
  alarm (timeout);
}

/* Reinjection: the command (sendmail) commits whatever it has read when its input ends, and the filter can be killed
 * by SIGKILL at any instant (Postfix's time limit, the OOM killer, an admin), which nothing can catch. So the child's
 * stdin is never a pipe the filter still writes into: the whole result is written into a file first, rewound, and only
 * then is the child spawned with that file as its stdin. A kill before the spawn leaves nothing (the file has no name
 * and dies with its last descriptor); a kill after it leaves a child whose input is complete, so that whatever it
 * commits is the whole message. The child is also tied to the filter's life (PR_SET_PDEATHSIG), so that it usually
 * dies before committing anything; when it has committed already, or a grandchild of it goes on (postdrop, a forking
 * sendmail), Postfix's retry makes a duplicate: acceptable, a truncated copy never is. A timeout or SIGTERM still
 * kills the child's whole process group (on_stop). */

/* results up to this size go into a sealed memfd; larger ones into an unlinked file in spool-dir, because a memfd is
 * memory that only swap can take away, and the filter holds the message and every result in memory already */
#define REINJECT_MEMFD_MAX ((gsize) 1024 * 1024)

/* reinject_input - a descriptor of a file that holds all of @data, at offset 0: for a result that is a spool's
 * file already (spool.h: larger than spool-threshold), that file itself, opened anew read-only with its own offset
 * (it is complete: the conversion finished it); else a memfd sealed against any change for a small result (or where
 * memfds are unavailable, as for a large one) an unlinked file in @spool_dir. -1 with @error set when it cannot be
 * written (a full spool is transient). */
static int
reinject_input (GBytes *data, const char *spool_dir, GError **error)
{
  gsize len;
  const guint8 *bytes = g_bytes_get_data (data, &len);
  const char *where = "memfd";
  gboolean sealed = FALSE;
  int fd = -1, saved, spooled = mg_spool_fd_of (data);

  if (spooled >= 0) {
    g_autofree char *self = g_strdup_printf ("/proc/self/fd/%d", spooled);
    fd = open (self, O_RDONLY | O_CLOEXEC);
    if (fd < 0) /* no /proc: the same open file, rewound (one child at a time reads it) */
      fd = fcntl (spooled, F_DUPFD_CLOEXEC, 0);
    if (fd >= 0 && lseek (fd, 0, SEEK_SET) == 0)
      return fd;
    saved = errno;
    if (fd >= 0)
      close (fd);
    g_set_error (error, G_IO_ERROR, g_io_error_from_errno (saved),
                 _ ("cannot hold the message for reinjection in %s: %s"), spool_dir, g_strerror (saved));
    return -1;
  }
  if (len <= REINJECT_MEMFD_MAX) {
    fd = memfd_create ("mimegate-reinject", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    sealed = fd >= 0;
  }
  if (fd < 0) {
    where = spool_dir;
    fd = mg_spool_file (spool_dir);
  }
  if (fd >= 0 && mg_spool_write_all (fd, bytes, len) &&
      (!sealed || fcntl (fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) == 0) &&
      lseek (fd, 0, SEEK_SET) == 0)
    return fd;
  saved = errno;
  if (fd >= 0)
    close (fd);
  g_set_error (error, G_IO_ERROR, g_io_error_from_errno (saved),
               _ ("cannot hold the message for reinjection in %s: %s"), where, g_strerror (saved));
  return -1;
}

/* own_group - in the reinject child (@data: the filter's pid): its own process group, so that a timeout kills it and
 * whatever it started; and killed when the filter dies. PR_SET_PDEATHSIG is cleared by the exec of a set-uid or
 * set-gid program and does not reach grandchildren: the complete stdin is what makes those safe. */
static void
own_group (gpointer data)
{
  sigset_t stop;

  setpgid (0, 0);
  prctl (PR_SET_PDEATHSIG, SIGKILL);
  if (getppid () != (pid_t) GPOINTER_TO_INT (data))
    _exit (127); /* the filter died before the line above: no signal will come, and nobody waits for us */
  sigemptyset (&stop);
  sigaddset (&stop, SIGALRM);
  sigaddset (&stop, SIGTERM);
  sigprocmask (SIG_UNBLOCK, &stop, NULL); /* blocked in the parent only while it learns this child's pid */
}

/* exit_text - how the reinject child ended, with what it said on stderr (at most 300 bytes, on one line) if anything */
static char *
exit_text (GSubprocess *proc, const char *program, GBytes *err_bytes)
{
  gsize n = 0;
  const char *err = err_bytes ? g_bytes_get_data (err_bytes, &n) : NULL;
  g_autofree char *said = g_strstrip (g_strdelimit (g_strndup (err ? err : "", MIN (n, 300)), "\r\n", ' '));
  g_autofree char *how =
    g_subprocess_get_if_exited (proc)
      ? g_strdup_printf (_ ("%s exited with status %d"), program, g_subprocess_get_exit_status (proc))
      : g_strdup_printf (_ ("%s was killed by signal %d"), program, g_subprocess_get_term_sig (proc));

  return said[0] ? g_strdup_printf ("%s: %s", how, said) : g_steal_pointer (&how);
}

/* reinject_cb - MgReinjectFunc: the reinject command with -f SENDER -- RCPT..., @message complete on its stdin
 * before it starts; killed at the run's timeout. @user_data is the configuration. */
static gboolean
reinject_cb (const char *sender, const char *const *recipients, GBytes *message, gpointer user_data, const char **code,
             GError **error)
{
  const MgConfig *config = user_data; /* every failure here is 4.3.0: @code stays as it is */
  g_autoptr (GPtrArray) argv = g_ptr_array_new ();
  g_autoptr (GSubprocessLauncher) launcher = NULL;
  g_autoptr (GSubprocess) proc = NULL;
  g_autoptr (GBytes) err_bytes = NULL;
  const char *id;
  sigset_t stop, saved;
  int input;

  for (guint i = 0; config->reinject[i] != NULL; i++)
    g_ptr_array_add (argv, config->reinject[i]);
  g_ptr_array_add (argv, (gpointer) "-f");
  g_ptr_array_add (argv, (gpointer) sender);
  g_ptr_array_add (argv, (gpointer) "--");
  for (guint i = 0; recipients[i] != NULL; i++)
    g_ptr_array_add (argv, (gpointer) recipients[i]);
  g_ptr_array_add (argv, NULL);
  input = reinject_input (message, config->spool_dir, error);
  if (input < 0)
    return FALSE;
  launcher = g_subprocess_launcher_new (G_SUBPROCESS_FLAGS_STDOUT_SILENCE | G_SUBPROCESS_FLAGS_STDERR_PIPE);
  g_subprocess_launcher_take_stdin_fd (launcher, input);
  g_subprocess_launcher_set_child_setup (launcher, own_group, GINT_TO_POINTER (getpid ()), NULL);
  /* a timeout or SIGTERM between the spawn and knowing the pid would leave the child alive to commit a message the
   * run then defers: the stop signals wait until the handler can kill it */
  sigemptyset (&stop);
  sigaddset (&stop, SIGALRM);
  sigaddset (&stop, SIGTERM);
  sigprocmask (SIG_BLOCK, &stop, &saved);
  proc = g_subprocess_launcher_spawnv (launcher, (const char *const *) argv->pdata, error);
  id = proc ? g_subprocess_get_identifier (proc) : NULL;
  child_pid = id ? (pid_t) g_ascii_strtoll (id, NULL, 10) : 0;
  sigprocmask (SIG_SETMASK, &saved, NULL);
  g_clear_object (&launcher); /* closes the filter's descriptor of the input: the child holds its own */
  if (proc == NULL)
    return FALSE;
  if (!g_subprocess_communicate (proc, NULL, NULL, NULL, &err_bytes, error)) {
    if (child_pid > 0)
      kill (-child_pid, SIGKILL); /* the run defers: whatever it would still commit is a duplicate at best */
    child_pid = 0;
    g_subprocess_wait (proc, NULL, NULL);
    return FALSE;
  }
  child_pid = 0;
  if (!g_subprocess_get_if_exited (proc) || g_subprocess_get_exit_status (proc) != 0) {
    g_autofree char *text = exit_text (proc, argv->pdata[0], err_bytes);
    g_set_error_literal (error, G_SPAWN_ERROR, G_SPAWN_ERROR_FAILED, text);
    return FALSE;
  }
  return TRUE;
}

/* read_input - all of stdin: in memory up to spool-threshold, beyond it in an unnamed 0600 file in spool-dir that
 * the engine reads through a mapping (spool.h) */
static GBytes *
read_input (const MgConfig *config, GError **error)
{
  g_autoptr (MgSpool) spool = mg_spool_new (config->spool_dir, config->limits.spool_threshold);

  if (!mg_spool_read_fd (spool, STDIN_FILENO, error))
    return NULL;
  return mg_spool_finish (spool, error);
}

/* finish - the message record, the status line (stderr: pipe(8) reads it) and the exit code */
static int
finish (MgJob *job, const char *outcome, int exit_code, const char *status)
{
  if (job != NULL)
    mg_job_finish (job, outcome, exit_code, status);
  if (status != NULL && exit_code != 0)
    fprintf (stderr, "%s\n", status);
  mg_log_flush_warnings ();
  return exit_code;
}

/* write_stdout - --stdout: the single group's bytes on stdout; a spooled result from its file in chunks, so that
 * its pages are never mapped into the filter */
static gboolean
write_stdout (GBytes *output)
{
  gsize len = g_bytes_get_size (output);
  int fd = mg_spool_fd_of (output);
  g_autofree guint8 *chunk = NULL;
  gsize off = 0;

  if (fd < 0)
    return (len == 0 || fwrite (g_bytes_get_data (output, NULL), 1, len, stdout) == len) && fflush (stdout) == 0;
  if (fflush (stdout) != 0)
    return FALSE;
  chunk = g_malloc (65536);
  while (off < len) {
    ssize_t n = pread (fd, chunk, MIN (len - off, 65536), (off_t) off);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0 || !mg_spool_write_all (STDOUT_FILENO, chunk, (gsize) n))
      return FALSE;
    off += (gsize) n;
  }
  return TRUE;
}

int
mg_cmd_filter (int argc, char **argv)
{
  g_autofree char *conf = NULL, *sender = NULL, *queue_id = NULL;
  gboolean to_stdout = FALSE;
  g_autofree char *conf_help = mg_cli_config_help (FALSE);
  GOptionEntry entries[] = {
    { "config", 'c', 0, G_OPTION_ARG_FILENAME, &conf, conf_help, N_ ("CONF") },
    { "stdout", 0, 0, G_OPTION_ARG_NONE, &to_stdout, N_ ("Write the result to stdout instead of reinjecting it"),
      NULL },
    { "from", 'f', 0, G_OPTION_ARG_STRING, &sender, N_ ("Envelope sender"), N_ ("SENDER") },
    { "queue-id", 0, 0, G_OPTION_ARG_STRING, &queue_id, N_ ("Postfix queue id, for the log"), N_ ("ID") },
    { NULL },
  };
  g_autoptr (GOptionContext) ctx = mg_cli_context ("filter", entries);
  g_autoptr (MgGeneration) gen = NULL;
  g_autoptr (MgJob) job = NULL;
  g_autoptr (GBytes) input = NULL;
  g_autoptr (GError) error = NULL;
  g_autofree char *status = NULL;
  const MgConfig *config;
  guint refused = 0, delivered = 0, n;
  int code;

  if (!mg_cli_parse ("filter", ctx, &argc, &argv, MG_EXIT_TEMPFAIL, &code))
    return code;
  if (sender == NULL) {
    mg_cli_usage_error ("filter", MG_EXIT_TEMPFAIL, "%s", _ ("-f SENDER is required"));
    return MG_EXIT_TEMPFAIL;
  }
  if (argc < 2) {
    mg_cli_usage_error ("filter", MG_EXIT_TEMPFAIL, "%s", _ ("at least one RECIPIENT is required"));
    return MG_EXIT_TEMPFAIL;
  }
  gen = mg_generation_load (conf, FALSE, &error);
  if (gen == NULL) {
    fprintf (stderr, "4.3.5 mimegate filter: %s\n", error->message);
    return MG_EXIT_TEMPFAIL;
  }
  config = mg_generation_config (gen);
  arm_stop_handlers (config->timeout);
  job = mg_job_new (gen, "filter", sender, queue_id);
  for (int i = 1; i < argc; i++)
    mg_job_add_recipient (job, argv[i]);
  input = read_input (config, &error);
  if (input == NULL) {
    status = g_strdup_printf ("4.3.0 mimegate filter: %s", error->message);
    return finish (job, "deferred", MG_EXIT_TEMPFAIL, status);
  }
  if (!mg_job_prepare (job, input)) {
    const MgRcptOutcome *first = mg_job_recipient (job, 0);
    return first->state == MG_RCPT_REFUSED ? finish (job, "refused", MG_EXIT_UNAVAILABLE, mg_job_status (job))
                                           : finish (job, "deferred", MG_EXIT_TEMPFAIL, mg_job_status (job));
  }
  n = mg_job_n_groups (job);
  if (to_stdout) {
    if (n > 1) {
      status =
        g_strdup_printf ("4.3.5 mimegate filter: %s (%u)",
                         _ ("--stdout needs every recipient to get the same result; these need different ones"), n);
      return finish (job, "deferred", MG_EXIT_TEMPFAIL, status);
    }
    if (n == 1) {
      if (!write_stdout (mg_job_group_output (job, 0))) {
        status = g_strdup_printf ("4.3.0 mimegate filter: %s", _ ("cannot write the output"));
        return finish (job, "deferred", MG_EXIT_TEMPFAIL, status);
      }
      mg_job_log_group (job, 0, "written", 0, NULL);
    }
  } else if (!mg_job_deliver (job, reinject_cb, (gpointer) config, TRUE))
    return finish (job, "deferred", MG_EXIT_TEMPFAIL, mg_job_status (job));
  delivered = n;

  for (guint i = 0; i < mg_job_n_recipients (job); i++)
    if (mg_job_recipient (job, i)->state == MG_RCPT_REFUSED)
      refused++;
  if (refused > 0 && delivered == 0) {
    GString *s = g_string_new (NULL);
    for (guint i = 0; i < mg_job_n_recipients (job); i++) {
      const MgRcptOutcome *o = mg_job_recipient (job, i);
      if (o->state == MG_RCPT_REFUSED)
        g_string_append_printf (s, "%s%s", s->len ? "; " : "", o->status);
    }
    status = g_string_free (s, FALSE);
    return finish (job, "refused", MG_EXIT_UNAVAILABLE, status);
  }
  if (to_stdout) {
    for (guint i = 0; i < mg_job_n_recipients (job); i++)
      if (mg_job_recipient (job, i)->state == MG_RCPT_REFUSED)
        fprintf (stderr, "%s\n", mg_job_recipient (job, i)->status);
  } else if (refused > 0) {
    /* some refused, others delivered: the sender hears about the refused ones from us (pipe(8) has one status) */
    g_autoptr (GBytes) report = mg_job_refusal_report (job);
    const char *to[] = { sender, NULL };
    const char *dsn_code = "4.3.0";
    if (report != NULL && !reinject_cb ("", to, report, (gpointer) config, &dsn_code, &error))
      g_printerr ("mimegate filter: %s: %s\n", _ ("the delivery status notification could not be sent"),
                  error->message);
  }
  return finish (job, refused > 0 ? "partly-refused" : "delivered", MG_EXIT_OK,
                 refused > 0 ? _ ("2.0.0 delivered; some recipients were refused by policy") : "2.0.0 delivered");
}
