/* inspect.c - `mimegate inspect [--json] FILE...`: the detection tree of each message, for an admin debugging one.
 *
 * Text: an indented tree per message. JSON: one object per message and line (an mbox yields one per message, with
 * "index"). An unreadable file is a one-line error naming it; the others are still reported, and the exit status is
 * then 66 (EX_NOINPUT). */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include <glib/gi18n.h>

#include "cli.h"
#include "report.h"
#include "settings.h"
#include "sources.h"

typedef struct {
  gboolean json;
  const MgLimits *limits;
  guint messages;
} Inspect;

static void
message_cb (const char *path, guint index, gboolean in_mbox, const guint8 *data, gsize len, guint64 done,
            gpointer user_data)
{
  Inspect *in = user_data;
  g_autoptr (MgReport) report = mg_detect_data (data, len, in->limits);
  const char *name = strcmp (path, "-") == 0 ? _ ("(standard input)") : path;

  if (len == 0 && report->error == NULL)
    report->error = g_strdup ("the file is empty");
  if (in->json) {
    g_autoptr (JsonBuilder) b = json_builder_new ();
    g_autofree char *line = NULL;
    mg_report_json (b, path, in_mbox ? index : 0, report);
    line = mg_report_json_text (b);
    printf ("%s\n", line);
  } else {
    g_autofree char *label = in_mbox ? g_strdup_printf (_ ("%s (message %u)"), name, index) : g_strdup (name);
    if (in->messages > 0)
      fputc ('\n', stdout);
    mg_report_print (stdout, label, report);
  }
  in->messages++;
}

static void
error_cb (const char *path, const char *message, gpointer user_data)
{
  gboolean *failed = user_data;

  fprintf (stderr, "mimegate inspect: %s: %s\n", path, message);
  *failed = TRUE;
}

int
mg_cmd_inspect (int argc, char **argv)
{
  gboolean json = FALSE, failed = FALSE;
  g_autofree char *conf = NULL;
  g_autofree char *conf_help = mg_cli_config_help (TRUE);
  GOptionEntry entries[] = {
    { "json", 0, 0, G_OPTION_ARG_NONE, &json, N_ ("Write one JSON object per message"), NULL },
    { "config", 'c', 0, G_OPTION_ARG_FILENAME, &conf, conf_help, N_ ("CONF") },
    { NULL },
  };
  g_autoptr (GOptionContext) ctx = mg_cli_context ("inspect", entries);
  g_autoptr (MgConfig) config = NULL;
  g_autoptr (GPtrArray) files = NULL;
  Inspect in = { 0 };
  int code;

  if (!mg_cli_parse ("inspect", ctx, &argc, &argv, MG_EXIT_USAGE, &code))
    return code;
  if (argc < 2) {
    mg_cli_usage_error ("inspect", MG_EXIT_USAGE, "%s", _ ("at least one FILE is required"));
    return MG_EXIT_USAGE;
  }
  config = mg_cli_config ("inspect", conf, &code);
  if (config == NULL)
    return code;
  in.json = json;
  in.limits = &config->limits;
  files = mg_sources_collect (argv + 1, error_cb, &failed);
  for (guint i = 0; i < files->len; i++) {
    const MgSourceFile *f = g_ptr_array_index (files, i);
    g_autoptr (GError) read_error = NULL;
    if (!mg_source_read (f->path, message_cb, &in, &read_error))
      error_cb (f->path, read_error->message, &failed);
  }
  return failed ? MG_EXIT_NOINPUT : MG_EXIT_OK;
}
