/* cli.h - what every mimegate command shares: exit codes, option parsing, error lines. */
#pragma once

#include <glib.h>

#include "gnupg.h"
#include "settings.h"
#include "x509.h"

G_BEGIN_DECLS

/* sysexits(3) values; Postfix reads them (STYLE.md: only 75 and 71 defer) */
enum {
  MG_EXIT_OK = 0,
  MG_EXIT_USAGE = 64,
  MG_EXIT_DATAERR = 65,
  MG_EXIT_NOINPUT = 66,
  MG_EXIT_UNAVAILABLE = 69,
  MG_EXIT_SOFTWARE = 70,
  MG_EXIT_TEMPFAIL = 75,
  MG_EXIT_CONFIG = 78,
};

/**
 * MgCommand: one subcommand.
 * @usage_exit: the exit status for a usage mistake (64; 75 for filter, so a typo in master.cf defers mail)
 */
typedef struct {
  const char *name;
  const char *parameters; /* e.g. "FILE..." (translated) */
  const char *summary;    /* one line (translated) */
  int (*run) (int argc, char **argv);
} MgCommand;

const MgCommand *mg_commands (guint *n);

gboolean mg_cli_parse (const char *command, GOptionContext *ctx, int *argc, char ***argv, int usage_exit,
                       int *exit_code);
void mg_cli_usage_error (const char *command, int usage_exit, const char *fmt, ...) G_GNUC_PRINTF (3, 4);
GOptionContext *mg_cli_context (const char *command, GOptionEntry *entries);
void mg_cli_print_version (void);
char *mg_cli_config_help (gboolean limits_only);
MgConfig *mg_cli_config (const char *command, const char *path, int *exit_code);
gboolean mg_cli_open_stores (const char *command, const MgConfig *config, MgGnupg **gnupg, MgX509Store **x509,
                             int *exit_code);
gboolean mg_cli_open_stores_indexed (const char *command, const MgConfig *config, gboolean x509_index, MgGnupg **gnupg,
                                     MgX509Store **x509, int *exit_code);

int mg_cmd_inspect (int argc, char **argv);
int mg_cmd_scan (int argc, char **argv);
int mg_cmd_filter (int argc, char **argv);
int mg_cmd_convert (int argc, char **argv);
int mg_cmd_keys (int argc, char **argv);
int mg_cmd_serve (int argc, char **argv);

G_END_DECLS
