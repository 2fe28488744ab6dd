/* main.c - the mimegate program: locale and library set-up, the subcommand table, and the only place that exits.
 *
 * mimegate COMMAND [OPTIONS] ARGS: filter (Postfix pipe), inspect, convert, keys, scan. Usage mistakes print one line
 * and exit 64, except in filter, which exits 75 so that a mistake in master.cf defers mail rather than bouncing it. */
#include "config.h"

#include <locale.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <glib/gi18n.h>
#include <gmime/gmime.h>
#include <gpgme.h>
#include <openssl/crypto.h>

#include "cli.h"

/* setup_locale - honours LANG/LC_*; LANGUAGE also under the C locale, whose messages gettext would never translate */
static void
setup_locale (void)
{
  const char *messages, *language = g_getenv ("LANGUAGE");
  const char *dir = g_getenv ("MIMEGATE_LOCALEDIR");

  setlocale (LC_ALL, "");
  messages = setlocale (LC_MESSAGES, NULL);
  if (language != NULL && language[0] != '\0' &&
      (messages == NULL || strcmp (messages, "C") == 0 || strcmp (messages, "POSIX") == 0)) {
    setlocale (LC_MESSAGES, "C.UTF-8");
    setlocale (LC_CTYPE, "C.UTF-8");
  }
  bindtextdomain (GETTEXT_PACKAGE, dir && dir[0] ? dir : LOCALEDIR);
  bind_textdomain_codeset (GETTEXT_PACKAGE, "UTF-8");
  textdomain (GETTEXT_PACKAGE);
}

/* mg_cli_print_version - the program's and its libraries' versions */
void
mg_cli_print_version (void)
{
  printf ("mimegate %s (GMime %u.%u.%u, GPGME %s, %s)\n", PACKAGE_VERSION, gmime_major_version, gmime_minor_version,
          gmime_micro_version, gpgme_check_version (NULL), OpenSSL_version (OPENSSL_VERSION));
}

static void
print_help (FILE *out)
{
  guint n;
  const MgCommand *commands = mg_commands (&n);

  fprintf (out, "%s\n  mimegate %s\n\n", _ ("Usage:"), _ ("COMMAND [OPTION...] [ARGUMENT...]"));
  fprintf (out, "%s\n\n",
           _ ("A mail gateway filter that delivers every recipient a form of the message that "
              "recipient can read: PGP/Inline, PGP/MIME, S/MIME or plain."));
  fprintf (out, "%s\n", _ ("Commands:"));
  for (guint i = 0; i < n; i++)
    fprintf (out, "  %-9s %s\n", commands[i].name, _ (commands[i].summary));
  fprintf (out, "\n%s\n", _ ("Run \"mimegate COMMAND --help\" for the options of one command."));
  fprintf (out, "  --help     %s\n  --version  %s\n", _ ("Show this help"), _ ("Show the version"));
}

int
main (int argc, char **argv)
{
  guint n;
  const MgCommand *commands;
  int status;

  /* OpenSSL is initialised when a message or store first needs it, as before; this only tells it not to tear
   * itself down in an atexit handler (~0.15 ms of a pipe run that used it: freeing its providers, name maps and
   * error strings just before the process ends anyway) */
  OPENSSL_init_crypto (OPENSSL_INIT_NO_ATEXIT, NULL);
  setup_locale ();
  if (argc < 2) {
    fprintf (stderr, "mimegate: %s\n", _ ("a command is required (run \"mimegate --help\")"));
    return MG_EXIT_USAGE;
  }
  if (strcmp (argv[1], "--help") == 0 || strcmp (argv[1], "-h") == 0 || strcmp (argv[1], "help") == 0) {
    print_help (stdout);
    return MG_EXIT_OK;
  }
  if (strcmp (argv[1], "--version") == 0 || strcmp (argv[1], "-V") == 0) {
    mg_cli_print_version ();
    return MG_EXIT_OK;
  }
  commands = mg_commands (&n);
  for (guint i = 0; i < n; i++) {
    if (strcmp (argv[1], commands[i].name) != 0)
      continue;
    g_mime_init ();
    status = commands[i].run (argc - 1, argv + 1);
    g_mime_shutdown ();
    fflush (stdout);
    if (ferror (stdout)) {
      fprintf (stderr, "mimegate %s: %s\n", commands[i].name, _ ("cannot write the output"));
      status = strcmp (commands[i].name, "filter") == 0 ? MG_EXIT_TEMPFAIL : MG_EXIT_SOFTWARE;
    }
    return status;
  }
  fprintf (stderr, "mimegate: %s\n", _ ("unknown command (run \"mimegate --help\")"));
  return MG_EXIT_USAGE;
}
