/* scan.c - `mimegate scan [--json] PATH...`: detection over a corpus (files, directories, mbox files, Maildirs),
 * with a progress bar on a terminal and a summary per kind.
 *
 * The progress bar goes to stderr and only when stderr is a terminal, so that scripts and logs get clean output. It
 * counts bytes, since one mbox file may hold thousands of messages. */
#include "config.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <glib/gi18n.h>

#include "cli.h"
#include "report.h"
#include "settings.h"
#include "sources.h"

typedef struct {
  const MgLimits *limits;
  guint64 total_bytes;
  guint64 done_bytes; /* of the files finished */
  guint64 file_done;  /* of the file being read */
  guint files, messages, unreadable, problems, limited;
  guint outermost[MG_KIND_COUNT];
  guint present[MG_KIND_COUNT];
  gboolean progress;
  gint64 started;
  gint64 last_draw;
} Scan;

static void
draw_progress (Scan *s, gboolean force)
{
  gint64 now = g_get_monotonic_time ();
  guint64 done = s->done_bytes + s->file_done;
  double frac = s->total_bytes ? (double) done / (double) s->total_bytes : 1.0;
  int width = 30, filled;
  char bar[31];

  if (!s->progress || (!force && now - s->last_draw < 100000))
    return;
  s->last_draw = now;
  frac = CLAMP (frac, 0.0, 1.0);
  filled = (int) (frac * width);
  memset (bar, '#', (size_t) filled);
  memset (bar + filled, '.', (size_t) (width - filled));
  bar[width] = '\0';
  /* TRANSLATORS: progress line: bar, percentage, messages so far */
  fprintf (stderr, "\r[%s] %3d%%  %s", bar, (int) (frac * 100), "");
  fprintf (stderr, g_dngettext (GETTEXT_PACKAGE, "%u message", "%u messages", s->messages), s->messages);
  fputs ("   ", stderr);
  fflush (stderr);
}

static gboolean
has_problem (const MgReport *r)
{
  if (r->error != NULL || r->warnings->len > 0)
    return TRUE;
  for (guint i = 0; i < r->parts->len; i++)
    if (((const MgPart *) g_ptr_array_index (r->parts, i))->error != NULL)
      return TRUE;
  return FALSE;
}

static void
message_cb (const char *path, guint index, gboolean in_mbox, const guint8 *data, gsize len, guint64 done,
            gpointer user_data)
{
  Scan *s = user_data;
  g_autoptr (MgReport) r = mg_detect_data (data, len, s->limits);

  s->messages++;
  s->outermost[r->kind]++;
  for (guint k = 0; k < MG_KIND_COUNT; k++)
    if (r->kinds & MG_KIND_BIT (k))
      s->present[k]++;
  if (r->limited)
    s->limited++;
  if (has_problem (r))
    s->problems++;
  s->file_done = done;
  draw_progress (s, FALSE);
}

static void
error_cb (const char *path, const char *message, gpointer user_data)
{
  Scan *s = user_data;

  if (s->progress)
    fputs ("\r\033[K", stderr);
  fprintf (stderr, "mimegate scan: %s: %s\n", path, message);
  s->unreadable++;
}

static void
print_summary (const Scan *s, double seconds)
{
  g_autofree char *size = g_format_size (s->done_bytes);

  printf (_ ("Scanned %u messages in %u files (%s) in %.1f s.\n"), s->messages, s->files, size, seconds);
  printf ("  %-28s %u\n", _ ("unreadable files:"), s->unreadable);
  printf ("  %-28s %u\n", _ ("messages with problems:"), s->problems);
  printf ("  %-28s %u\n\n", _ ("messages over a limit:"), s->limited);
  printf ("%-28s %10s %10s\n", _ ("kind"), _ ("outermost"), _ ("present"));
  for (guint k = 0; k < MG_KIND_COUNT; k++)
    printf ("%-28s %10u %10u\n", mg_kind_name (k), s->outermost[k], s->present[k]);
}

static void
print_json (const Scan *s, double seconds)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();
  g_autofree char *line = NULL;

  json_builder_begin_object (b);
  json_builder_set_member_name (b, "files");
  json_builder_add_int_value (b, s->files);
  json_builder_set_member_name (b, "messages");
  json_builder_add_int_value (b, s->messages);
  json_builder_set_member_name (b, "bytes");
  json_builder_add_int_value (b, s->done_bytes);
  json_builder_set_member_name (b, "seconds");
  json_builder_add_double_value (b, (double) (gint64) (seconds * 1000 + 0.5) / 1000); /* to the millisecond */
  json_builder_set_member_name (b, "unreadable");
  json_builder_add_int_value (b, s->unreadable);
  json_builder_set_member_name (b, "problems");
  json_builder_add_int_value (b, s->problems);
  json_builder_set_member_name (b, "limited");
  json_builder_add_int_value (b, s->limited);
  json_builder_set_member_name (b, "kinds");
  json_builder_begin_object (b);
  for (guint k = 0; k < MG_KIND_COUNT; k++) {
    json_builder_set_member_name (b, mg_kind_name (k));
    json_builder_begin_object (b);
    json_builder_set_member_name (b, "outermost");
    json_builder_add_int_value (b, s->outermost[k]);
    json_builder_set_member_name (b, "present");
    json_builder_add_int_value (b, s->present[k]);
    json_builder_end_object (b);
  }
  json_builder_end_object (b);
  json_builder_end_object (b);
  line = mg_report_json_text (b);
  printf ("%s\n", line);
}

int
mg_cmd_scan (int argc, char **argv)
{
  gboolean json = FALSE, no_progress = FALSE;
  g_autofree char *conf = NULL;
  g_autofree char *conf_help = mg_cli_config_help (TRUE);
  GOptionEntry entries[] = {
    { "config", 'c', 0, G_OPTION_ARG_FILENAME, &conf, conf_help, N_ ("CONF") },
    { "json", 0, 0, G_OPTION_ARG_NONE, &json, N_ ("Write the summary as JSON"), NULL },
    { "no-progress", 0, 0, G_OPTION_ARG_NONE, &no_progress, N_ ("Never draw a progress bar"), NULL },
    { NULL },
  };
  g_autoptr (GOptionContext) ctx = mg_cli_context ("scan", entries);
  g_autoptr (MgConfig) config = NULL;
  g_autoptr (GPtrArray) files = NULL;
  const char *term = g_getenv ("TERM");
  Scan s = { 0 };
  double seconds;
  int code;

  if (!mg_cli_parse ("scan", ctx, &argc, &argv, MG_EXIT_USAGE, &code))
    return code;
  if (argc < 2) {
    mg_cli_usage_error ("scan", MG_EXIT_USAGE, "%s", _ ("at least one PATH is required"));
    return MG_EXIT_USAGE;
  }
  config = mg_cli_config ("scan", conf, &code);
  if (config == NULL)
    return code;
  s.limits = &config->limits;
  s.progress = !no_progress && isatty (STDERR_FILENO) && g_strcmp0 (term, "dumb") != 0;
  s.started = g_get_monotonic_time ();
  files = mg_sources_collect (argv + 1, error_cb, &s);
  for (guint i = 0; i < files->len; i++)
    s.total_bytes += ((const MgSourceFile *) g_ptr_array_index (files, i))->size;
  for (guint i = 0; i < files->len; i++) {
    const MgSourceFile *f = g_ptr_array_index (files, i);
    g_autoptr (GError) read_error = NULL;
    s.file_done = 0;
    if (mg_source_read (f->path, message_cb, &s, &read_error))
      s.files++;
    else
      error_cb (f->path, read_error->message, &s);
    s.done_bytes += s.file_done;
    s.file_done = 0;
    draw_progress (&s, FALSE);
  }
  if (s.progress) {
    draw_progress (&s, TRUE);
    fputs ("\r\033[K", stderr);
  }
  seconds = (double) (g_get_monotonic_time () - s.started) / G_USEC_PER_SEC;
  if (json)
    print_json (&s, seconds);
  else
    print_summary (&s, seconds);
  return s.unreadable > 0 ? MG_EXIT_NOINPUT : MG_EXIT_OK;
}
