/* stubs.c - the command later work fills in (filter): its options are parsed and checked now, so that --help,
 * --version and usage errors already behave as DESIGN.md's interface contract says.
 *
 * filter is not yet available either; it exits 75 (defer) instead of 69, because Postfix bounces every status but 75
 * and 71, and a gateway that is not ready must never bounce mail. */
#include "config.h"

#include <stdio.h>

#include <glib/gi18n.h>

#include "cli.h"

int
mg_cmd_filter (int argc, char **argv)
{
  g_autofree char *conf = NULL, *sender = NULL;
  gboolean to_stdout = FALSE;
  GOptionEntry entries[] = {
    { "config", 'c', 0, G_OPTION_ARG_FILENAME, &conf, N_ ("Configuration file"), N_ ("CONF") },
    { "stdout", 0, 0, G_OPTION_ARG_NONE, &to_stdout, N_ ("Write the result to stdout instead of reinjecting it"),
      NULL },
    { "from", 'f', 0, G_OPTION_ARG_STRING, &sender, N_ ("Envelope sender"), N_ ("SENDER") },
    { NULL },
  };
  g_autoptr (GOptionContext) ctx = mg_cli_context ("filter", entries);
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
  fprintf (stderr, "4.3.0 mimegate filter: %s\n", _ ("not yet available; the message is deferred"));
  return MG_EXIT_TEMPFAIL;
}
