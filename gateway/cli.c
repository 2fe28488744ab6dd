/* cli.c - option parsing shared by every command: translated help, one-line usage errors, the usage exit status. */
#include "config.h"

#include "cli.h"

#include <stdio.h>
#include <string.h>

#include <glib/gi18n.h>

#include "directory.h"
#include "settings.h"

/* mg_commands - the subcommand table, in the order --help lists it */
const MgCommand *
mg_commands (guint *n)
{
  static const MgCommand commands[] = {
    { "filter", N_ ("[-c CONF] [--stdout] -f SENDER [--] RECIPIENT..."),
      N_ ("Postfix content filter: convert one message from stdin and reinject it"), mg_cmd_filter },
    { "inspect", N_ ("[--json] FILE..."), N_ ("Show how each message is protected, part by part"), mg_cmd_inspect },
    { "convert", N_ ("[-c CONF] --to FORM -r ADDRESS... FILE"), N_ ("Convert one message into one form"),
      mg_cmd_convert },
    { "keys", N_ ("[-c CONF] [--json] ADDRESS... | --expiring DAYS"),
      N_ ("Show which keys would be used for each address, and why"), mg_cmd_keys },
    { "serve", N_ ("[-c CONF] [--check]"),
      N_ ("Long-running LMTP/SMTP content filter for Postfix: convert and reinject over SMTP"), mg_cmd_serve },
    { "scan", N_ ("[-c CONF] [--json] PATH..."),
      N_ ("Detect protection over files, directories, mbox files and Maildirs"), mg_cmd_scan },
  };
  *n = G_N_ELEMENTS (commands);
  return commands;
}

/* find - the table entry for @command */
static const MgCommand *
find (const char *command)
{
  guint n;
  const MgCommand *commands = mg_commands (&n);

  for (guint i = 0; i < n; i++)
    if (strcmp (commands[i].name, command) == 0)
      return &commands[i];
  return NULL;
}

/**
 * mg_cli_context - an option context for @command with its translated summary and @entries (not copied).
 *
 * Returns: (transfer full)
 */
GOptionContext *
mg_cli_context (const char *command, GOptionEntry *entries)
{
  const MgCommand *cmd = find (command);
  const char *params = cmd ? _ (cmd->parameters) : "";
  g_autofree char *prgname = g_strdup_printf ("mimegate %s", command);
  GOptionContext *ctx;

  g_set_prgname (prgname); /* "Usage: mimegate inspect [OPTION…]" */
  ctx = g_option_context_new (params);

  g_option_context_set_translation_domain (ctx, GETTEXT_PACKAGE);
  if (cmd != NULL)
    g_option_context_set_summary (ctx, _ (cmd->summary));
  if (entries != NULL)
    g_option_context_add_main_entries (ctx, entries, GETTEXT_PACKAGE);
  return ctx;
}

/* mg_cli_usage_error - one line on stderr; filter's line starts with an RFC 3463 code, since Postfix reads it */
void
mg_cli_usage_error (const char *command, int usage_exit, const char *fmt, ...)
{
  va_list ap;
  g_autofree char *msg = NULL;

  va_start (ap, fmt);
  msg = g_strdup_vprintf (fmt, ap);
  va_end (ap);
  g_strdelimit (msg, "\r\n", ' ');
  if (usage_exit == MG_EXIT_TEMPFAIL)
    fprintf (stderr, "4.3.5 mimegate %s: %s\n", command, msg);
  else
    fprintf (stderr, "mimegate %s: %s\n", command, msg);
}

/**
 * mg_cli_parse - parses @argv for @command; handles --help and --version itself.
 * @exit_code: (out): set when the command must stop now (0 after --help/--version, @usage_exit after a mistake)
 *
 * Returns: TRUE when the command should go on with the remaining arguments in @argv.
 */
gboolean
mg_cli_parse (const char *command, GOptionContext *ctx, int *argc, char ***argv, int usage_exit, int *exit_code)
{
  g_autoptr (GError) error = NULL;
  gboolean version = FALSE, help = FALSE;
  GOptionEntry common[] = {
    { "help", 'h', 0, G_OPTION_ARG_NONE, &help, N_ ("Show this help"), NULL },
    { "version", 0, 0, G_OPTION_ARG_NONE, &version, N_ ("Show the version"), NULL },
    { NULL },
  };

  /* GLib's own --help exits inside the parser; ours returns, so that only main() exits */
  g_option_context_set_help_enabled (ctx, FALSE);
  g_option_context_add_main_entries (ctx, common, GETTEXT_PACKAGE);
  if (!g_option_context_parse (ctx, argc, argv, &error)) {
    mg_cli_usage_error (command, usage_exit, "%s", error->message);
    *exit_code = usage_exit;
    return FALSE;
  }
  if (help) {
    g_autofree char *text = g_option_context_get_help (ctx, TRUE, NULL);
    fputs (text, stdout);
    *exit_code = MG_EXIT_OK;
    return FALSE;
  }
  if (version) {
    mg_cli_print_version ();
    *exit_code = MG_EXIT_OK;
    return FALSE;
  }
  /* "--" ends the options; what follows it are arguments, even when they start with '-' */
  if (*argc > 1 && strcmp ((*argv)[1], "--") == 0) {
    memmove (*argv + 1, *argv + 2, (gsize) (*argc - 1) * sizeof (char *));
    (*argc)--;
  }
  return TRUE;
}

/**
 * mg_cli_config - loads the configuration for @command (@path, or the default path when %NULL).
 * @exit_code: (out): 78 (EX_CONFIG) when the file cannot be used; the reason is printed, naming file and key
 *
 * Returns: (transfer full) (nullable)
 */
MgConfig *
mg_cli_config (const char *command, const char *path, int *exit_code)
{
  g_autoptr (GError) error = NULL;
  MgConfig *config = mg_config_load (path, &error);

  if (config == NULL) {
    fprintf (stderr, "mimegate %s: %s\n", command, error->message);
    *exit_code = MG_EXIT_CONFIG;
  }
  return config;
}

/**
 * mg_cli_config_help - the help text of -c, naming the compiled-in default path, so that nobody has to guess which
 * file a command reads without -c (a /usr/local build reads /usr/local/etc/mimegate/mimegate.conf).
 * @limits_only: the command reads the file for its limits only (inspect, scan)
 *
 * Returns: (transfer full): the translated text
 */
char *
mg_cli_config_help (gboolean limits_only)
{
  return g_strdup_printf (limits_only ? _ ("Configuration file, for its limits (default: %s)")
                                      : _ ("Configuration file (default: %s)"),
                          MG_CONFIG_DEFAULT_PATH);
}

/* status_prefix - convert's first stderr line carries an RFC 3463 code, as the filter's does (README) */
static const char *
status_prefix (const char *command)
{
  return strcmp (command, "convert") == 0 ? "4.7.0 " : "";
}

/**
 * mg_cli_open_stores - the key stores @config names (either may be switched off with "none").
 * @exit_code: (out): 75 when a store cannot be read at all; the reason, naming the path, is printed
 *
 * Files the X.509 store skipped are reported on stderr, one line each.
 */
gboolean
mg_cli_open_stores (const char *command, const MgConfig *config, MgGnupg **gnupg, MgX509Store **x509, int *exit_code)
{
  return mg_cli_open_stores_indexed (command, config, FALSE, gnupg, x509, exit_code);
}

/* mg_cli_open_stores_indexed - mg_cli_open_stores(), with the X.509 store read through its address index (as the
 * filter reads it) when @x509_index is set */
gboolean
mg_cli_open_stores_indexed (const char *command, const MgConfig *config, gboolean x509_index, MgGnupg **gnupg,
                            MgX509Store **x509, int *exit_code)
{
  g_autoptr (GError) error = NULL;

  *gnupg = NULL;
  *x509 = NULL;
  if (config->use_gnupg) {
    *gnupg = mg_gnupg_open (config->gnupg_home, config->trust_always ? MG_TRUST_ALWAYS : MG_TRUST_GNUPG,
                            config->min_validity, &error);
    if (*gnupg == NULL) {
      fprintf (stderr, "%smimegate %s: %s\n", status_prefix (command), command, error->message);
      *exit_code = MG_EXIT_TEMPFAIL;
      return FALSE;
    }
    mg_gnupg_set_max_output (*gnupg, config->limits.max_decompressed);
    /* a one-shot command: auto is gpg (see MgOpenpgpEncrypt) */
    mg_gnupg_set_encrypt_with_gpg (*gnupg, config->openpgp_encrypt != MG_OPENPGP_ENCRYPT_RNP);
    {
      g_autoptr (MgLdap) pgp = mg_directory_openpgp (config, FALSE); /* [directory] openpgp-attributes */
      mg_directory_attach_openpgp (pgp, *gnupg);
    }
  }
  if (config->x509_store != NULL) {
    *x509 = x509_index ? mg_x509_store_open_indexed (config->x509_store, config->passphrase, NULL, &error)
                       : mg_x509_store_open (config->x509_store, config->passphrase, &error);
    if (*x509 == NULL) {
      fprintf (stderr, "%smimegate %s: %s\n", status_prefix (command), command, error->message);
      g_clear_pointer (gnupg, mg_gnupg_free);
      *exit_code = MG_EXIT_TEMPFAIL;
      return FALSE;
    }
    mg_directory_attach (config, *x509, FALSE); /* [directory], with the cache file the filter shares */
    for (guint i = 0; i < mg_x509_store_warnings (*x509)->len; i++)
      fprintf (stderr, "mimegate %s: %s: %s\n", command, _ ("skipped"),
               (const char *) g_ptr_array_index (mg_x509_store_warnings (*x509), i));
  }
  return TRUE;
}
