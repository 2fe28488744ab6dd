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
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <gio/gio.h>
#include <glib/gi18n.h>

#include "cli.h"
#include "engine.h"
#include "log.h"

/* the child being waited for, and what to say when the run is stopped: for the signal handler */
static volatile pid_t child_pid = 0;
static char stop_line[256];

static void
on_stop (int sig)
{
  pid_t child = child_pid;

  if (child > 0)
    kill (-child, SIGKILL); /* its whole process group: a reinjection cut short must never commit a truncated message */
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

/* own_group - in the reinject child: its own process group, so that a timeout kills it and whatever it started */
static void
own_group (gpointer data)
{
  sigset_t stop;

  setpgid (0, 0);
  sigemptyset (&stop);
  sigaddset (&stop, SIGALRM);
  sigaddset (&stop, SIGTERM);
  sigprocmask (SIG_UNBLOCK, &stop, NULL); /* blocked in the parent only while it learns this child's pid */
}

/* reinject_cb - MgReinjectFunc: the reinject command with -f SENDER -- RCPT..., @message on its stdin; killed at the
 * run's timeout. @user_data is the configuration. */
static gboolean
reinject_cb (const char *sender, const char *const *recipients, GBytes *message, gpointer user_data,
             const char **code, GError **error)
{
  const MgConfig *config = user_data; /* every failure here is 4.3.0: @code stays as it is */
  g_autoptr (GPtrArray) argv = g_ptr_array_new ();
  g_autoptr (GSubprocessLauncher) launcher = NULL;
  g_autoptr (GSubprocess) proc = NULL;
  g_autoptr (GBytes) err_bytes = NULL;
  const char *id;
  sigset_t stop, saved;

  for (guint i = 0; config->reinject[i] != NULL; i++)
    g_ptr_array_add (argv, config->reinject[i]);
  g_ptr_array_add (argv, (gpointer) "-f");
  g_ptr_array_add (argv, (gpointer) sender);
  g_ptr_array_add (argv, (gpointer) "--");
  for (guint i = 0; recipients[i] != NULL; i++)
    g_ptr_array_add (argv, (gpointer) recipients[i]);
  g_ptr_array_add (argv, NULL);
  launcher = g_subprocess_launcher_new (G_SUBPROCESS_FLAGS_STDIN_PIPE | G_SUBPROCESS_FLAGS_STDOUT_SILENCE |
                                        G_SUBPROCESS_FLAGS_STDERR_PIPE);
  g_subprocess_launcher_set_child_setup (launcher, own_group, NULL, NULL);
  /* a timeout or SIGTERM between the spawn and knowing the pid would leave the child alive to see EOF and commit
   * whatever it had: the stop signals wait until the handler can kill it */
  sigemptyset (&stop);
  sigaddset (&stop, SIGALRM);
  sigaddset (&stop, SIGTERM);
  sigprocmask (SIG_BLOCK, &stop, &saved);
  proc = g_subprocess_launcher_spawnv (launcher, (const char *const *) argv->pdata, error);
  id = proc ? g_subprocess_get_identifier (proc) : NULL;
  child_pid = id ? (pid_t) g_ascii_strtoll (id, NULL, 10) : 0;
  sigprocmask (SIG_SETMASK, &saved, NULL);
  if (proc == NULL)
    return FALSE;
  if (!g_subprocess_communicate (proc, message, NULL, NULL, &err_bytes, error)) {
    if (child_pid > 0)
      kill (-child_pid, SIGKILL); /* never let a half-fed reinjection commit */
    child_pid = 0;
    g_subprocess_wait (proc, NULL, NULL);
    return FALSE;
  }
  child_pid = 0;
  if (!g_subprocess_get_if_exited (proc) || g_subprocess_get_exit_status (proc) != 0) {
    g_autofree char *msg = g_strndup (err_bytes ? g_bytes_get_data (err_bytes, NULL) : "",
                                      err_bytes ? MIN (g_bytes_get_size (err_bytes), 300) : 0);
    g_strdelimit (msg, "\r\n", ' ');
    g_set_error (error, G_SPAWN_ERROR, G_SPAWN_ERROR_FAILED, _ ("%s exited with status %d: %s"),
                 (char *) argv->pdata[0], g_subprocess_get_if_exited (proc) ? g_subprocess_get_exit_status (proc) : -1,
                 g_strstrip (msg));
    return FALSE;
  }
  return TRUE;
}

/* read_input - all of stdin */
static GBytes *
read_input (GError **error)
{
  GByteArray *buf = g_byte_array_new ();
  guint8 chunk[65536];
  size_t n;

  while ((n = fread (chunk, 1, sizeof chunk, stdin)) > 0)
    g_byte_array_append (buf, chunk, (guint) n);
  if (ferror (stdin)) {
    g_set_error (error, G_IO_ERROR, g_io_error_from_errno (errno), _ ("cannot read the message: %s"),
                 g_strerror (errno));
    g_byte_array_unref (buf);
    return NULL;
  }
  return g_byte_array_free_to_bytes (buf);
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

/* write_stdout - --stdout: the single group's bytes on stdout */
static gboolean
write_stdout (GBytes *output)
{
  gsize len = g_bytes_get_size (output);

  return (len == 0 || fwrite (g_bytes_get_data (output, NULL), 1, len, stdout) == len) && fflush (stdout) == 0;
}

int
mg_cmd_filter (int argc, char **argv)
{
  g_autofree char *conf = NULL, *sender = NULL, *queue_id = NULL;
  gboolean to_stdout = FALSE;
  GOptionEntry entries[] = {
    { "config", 'c', 0, G_OPTION_ARG_FILENAME, &conf, N_ ("Configuration file"), N_ ("CONF") },
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
  gen = mg_generation_load (conf, &error);
  if (gen == NULL) {
    fprintf (stderr, "4.3.5 mimegate filter: %s\n", error->message);
    return MG_EXIT_TEMPFAIL;
  }
  config = mg_generation_config (gen);
  arm_stop_handlers (config->timeout);
  job = mg_job_new (gen, "filter", sender, queue_id);
  for (int i = 1; i < argc; i++)
    mg_job_add_recipient (job, argv[i]);
  input = read_input (&error);
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
