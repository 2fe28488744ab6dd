/* stubs.c - the commands later work fills in (convert, filter): their options are parsed and checked now, so
 * that --help, --version and usage errors already behave as DESIGN.md's interface contract says.
 *
 * filter is not yet available either; it exits 75 (defer) instead of 69, because Postfix bounces every status but 75
 * and 71, and a gateway that is not ready must never bounce mail. */
#include "config.h"

#include <stdio.h>

#include <glib/gi18n.h>

#include "cli.h"

static const char *forms[] = { "keep", "plain", "pgp-mime", "pgp-inline", "smime" };

int
mg_cmd_convert (int argc, char **argv)
{
  g_autofree char *conf = NULL, *to = NULL, *output = NULL, *sign = NULL;
  g_auto (GStrv) recipients = NULL;
  GOptionEntry entries[] = {
    { "config", 'c', 0, G_OPTION_ARG_FILENAME, &conf, N_ ("Configuration file"), N_ ("CONF") },
    { "to", 0, 0, G_OPTION_ARG_STRING, &to, N_ ("Form to produce: keep, plain, pgp-mime, pgp-inline or smime"),
      N_ ("FORM") },
    { "recipient", 'r', 0, G_OPTION_ARG_STRING_ARRAY, &recipients, N_ ("Recipient address (repeatable)"),
      N_ ("ADDRESS") },
    { "output", 'o', 0, G_OPTION_ARG_FILENAME, &output, N_ ("Write the result to FILE instead of stdout"),
      N_ ("FILE") },
    { "sign", 0, 0, G_OPTION_ARG_STRING, &sign, N_ ("Sign as this identity"), N_ ("ADDRESS") },
    { NULL },
  };
  g_autoptr (GOptionContext) ctx = mg_cli_context ("convert", entries);
  int code;
  gboolean known = FALSE;

  if (!mg_cli_parse ("convert", ctx, &argc, &argv, MG_EXIT_USAGE, &code))
    return code;
  if (to == NULL) {
    mg_cli_usage_error ("convert", MG_EXIT_USAGE, "%s", _ ("--to FORM is required"));
    return MG_EXIT_USAGE;
  }
  for (gsize i = 0; i < G_N_ELEMENTS (forms); i++)
    known = known || g_strcmp0 (to, forms[i]) == 0;
  if (!known) {
    mg_cli_usage_error ("convert", MG_EXIT_USAGE, _ ("unknown form \"%s\" (keep, plain, pgp-mime, pgp-inline, smime)"),
                        to);
    return MG_EXIT_USAGE;
  }
  if (recipients == NULL || recipients[0] == NULL) {
    mg_cli_usage_error ("convert", MG_EXIT_USAGE, "%s", _ ("at least one -r ADDRESS is required"));
    return MG_EXIT_USAGE;
  }
  if (argc != 2) {
    mg_cli_usage_error ("convert", MG_EXIT_USAGE, "%s", _ ("exactly one FILE is required"));
    return MG_EXIT_USAGE;
  }
  fprintf (stderr, "mimegate convert: %s\n", _ ("not yet available"));
  return MG_EXIT_UNAVAILABLE;
}

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
