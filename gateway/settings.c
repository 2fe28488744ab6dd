/* settings.c - reads the configuration file: [gateway] (limits, key stores, reinjection, logging) and checks every
 * policy group (policy.c reads them per recipient). A file named with -c must exist; the default path may be absent
 * (built-in defaults). Errors name the file, the line and the key, so that an admin can fix them; unknown groups and
 * keys are errors, never ignored. */
#include "config.h"

#include <errno.h>
#include <string.h>

#include <glib/gstdio.h>
#include <gpgme.h>

#include <glib/gi18n.h>

#include "convert.h"
#include "directory.h"
#include "policy.h"
#include "settings.h"

void
mg_config_free (MgConfig *config)
{
  if (config == NULL)
    return;
  g_clear_pointer (&config->keyfile, g_key_file_unref);
  g_free (config->text);
  g_strfreev (config->reinject);
  g_free (config->log_path);
  g_free (config->spool_dir);
  g_free (config->path);
  g_free (config->gnupg_home);
  g_free (config->x509_store);
  g_free (config->authserv_id);
  if (config->passphrase != NULL)
    memset (config->passphrase, 0, strlen (config->passphrase));
  g_free (config->passphrase);
  mg_ldap_config_free (config->directory);
  g_free (config);
}

/**
 * mg_config_where - "FILE:LINE" of @key in [@group] of the file @config was read from (the last such line; "FILE"
 * when it cannot be found), for error messages an admin can act on.
 */
char *
mg_config_where (const MgConfig *config, const char *group, const char *key)
{
  g_auto (GStrv) lines = NULL;
  gboolean in_group = FALSE;
  guint found = 0;

  if (config->text == NULL)
    return g_strdup (config->path ? config->path : "");
  lines = g_strsplit (config->text, "\n", -1);
  for (guint i = 0; lines[i] != NULL; i++) {
    g_autofree char *line = g_strstrip (g_strdup (lines[i]));
    if (line[0] == '[') {
      char *end = strrchr (line, ']');
      in_group =
        end != NULL && (gsize) (end - line - 1) == strlen (group) && strncmp (line + 1, group, strlen (group)) == 0;
      if (in_group && key == NULL)
        found = i + 1;
      continue;
    }
    if (in_group && key != NULL) {
      gsize n = strlen (key);
      if (strncmp (line, key, n) == 0 && (line[n] == '=' || line[n] == ' ' || line[n] == '\t'))
        found = i + 1;
    }
  }
  return found ? g_strdup_printf ("%s:%u", config->path, found) : g_strdup (config->path);
}

/* read_choice - @key must be one of @choices (NULL-terminated); returns its index, or -1 with @error set */
static int
read_choice (const MgConfig *config, const char *key, const char *const *choices, int fallback, GError **error)
{
  g_autofree char *text = g_key_file_get_string (config->keyfile, "gateway", key, NULL);
  g_autofree char *list = NULL, *path = NULL;

  if (text == NULL)
    return fallback;
  g_strstrip (text);
  for (int i = 0; choices[i] != NULL; i++)
    if (g_ascii_strcasecmp (text, choices[i]) == 0)
      return i;
  list = g_strjoinv (", ", (char **) choices);
  path = mg_config_where (config, "gateway", key);
  g_set_error (error, G_KEY_FILE_ERROR, G_KEY_FILE_ERROR_INVALID_VALUE,
               _ ("%s: [gateway] %s = \"%s\" is not one of: %s"), path, key, text, list);
  return -1;
}

/* read_passphrase - the first line of the file named by x509-passphrase-file, which must be private (0600) */
static gboolean
read_passphrase (MgConfig *config, GError **error)
{
  g_autofree char *file = g_key_file_get_string (config->keyfile, "gateway", "x509-passphrase-file", NULL);
  g_autofree char *path = mg_config_where (config, "gateway", "x509-passphrase-file");
  g_autofree char *data = NULL;
  g_autoptr (GError) local = NULL;
  GStatBuf st;
  char *nl;

  if (file == NULL)
    return TRUE;
  g_strstrip (file);
  if (g_stat (file, &st) != 0 || !g_file_get_contents (file, &data, NULL, &local)) {
    g_set_error (error, G_KEY_FILE_ERROR, G_KEY_FILE_ERROR_INVALID_VALUE,
                 _ ("%s: [gateway] x509-passphrase-file: %s cannot be read"), path, file);
    return FALSE;
  }
  if (st.st_mode & 077) {
    g_set_error (error, G_KEY_FILE_ERROR, G_KEY_FILE_ERROR_INVALID_VALUE,
                 _ ("%s: [gateway] x509-passphrase-file: %s is readable by group or others; make it 0600"), path, file);
    return FALSE;
  }
  nl = strpbrk (data, "\r\n");
  if (nl != NULL)
    *nl = '\0';
  config->passphrase = g_steal_pointer (&data);
  return TRUE;
}

/* read_size - a positive integer with an optional K, M or G suffix (powers of 1024) */
static gboolean
read_size (const MgConfig *config, const char *key, guint64 max, guint64 *out, GError **error)
{
  g_autofree char *text = g_key_file_get_string (config->keyfile, "gateway", key, NULL);
  g_autofree char *path = NULL;
  guint64 mult = 1, value;
  char *end = NULL;

  if (text == NULL)
    return TRUE;
  g_strstrip (text);
  errno = 0;
  value = g_ascii_strtoull (text, &end, 10);
  if (end != NULL && *end != '\0') {
    if (g_ascii_strcasecmp (end, "K") == 0)
      mult = 1024;
    else if (g_ascii_strcasecmp (end, "M") == 0)
      mult = 1024 * 1024;
    else if (g_ascii_strcasecmp (end, "G") == 0)
      mult = 1024 * 1024 * 1024;
    else
      mult = 0;
  }
  if (end == text || errno != 0 || mult == 0 || value == 0 || value > max / mult) {
    path = mg_config_where (config, "gateway", key);
    g_set_error (error, G_KEY_FILE_ERROR, G_KEY_FILE_ERROR_INVALID_VALUE,
                 _ ("%s: [gateway] %s = \"%s\" is not a valid number"), path, key, text);
    return FALSE;
  }
  *out = value * mult;
  return TRUE;
}

/* raw_value_ok - a value as written is UTF-8 and uses only GKeyFile's escapes (\s \n \t \r \\) */
static gboolean
raw_value_ok (const char *raw)
{
  if (raw == NULL || !g_utf8_validate (raw, -1, NULL))
    return FALSE;
  for (const char *c = raw; *c; c++)
    if (*c == '\\') {
      if (c[1] == '\0' || strchr ("sntr\\", c[1]) == NULL)
        return FALSE;
      c++;
    }
  return TRUE;
}

static const char *const gateway_keys[] = { "gnupg-home",
                                            "x509-store",
                                            "trust-model",
                                            "min-validity",
                                            "x509-passphrase-file",
                                            "authserv-id",
                                            "reinject",
                                            "log",
                                            "spool-dir",
                                            "max-size",
                                            "max-depth",
                                            "max-parts",
                                            "max-decompressed",
                                            "timeout",
                                            "openpgp-encrypt",
                                            "harvest",
                                            "spool-threshold",
                                            NULL };

/* check_groups - every group is [gateway], [default], [domain NAME] or [address ADDR], and [gateway] has only keys
 * we know: a misspelt key must not silently fall back to a default (encrpyt = required would send in clear) */
static gboolean
check_groups (const MgConfig *config, GError **error)
{
  g_auto (GStrv) groups = g_key_file_get_groups (config->keyfile, NULL);

  for (guint i = 0; groups[i] != NULL; i++) {
    const char *g = groups[i];
    g_auto (GStrv) all = g_key_file_get_keys (config->keyfile, g, NULL, NULL);
    /* every value must read as a string: a bad escape would otherwise look like an absent key, i.e. the default */
    for (guint k = 0; all != NULL && all[k] != NULL; k++) {
      g_autoptr (GError) local = NULL;
      g_autofree char *raw = g_key_file_get_value (config->keyfile, g, all[k], NULL);
      /* escapes checked here first: GLib's own parser warns (and sets a GError twice) on two bad ones */
      g_autofree char *v = raw_value_ok (raw) ? g_key_file_get_string (config->keyfile, g, all[k], &local) : NULL;
      if (v == NULL) {
        g_autofree char *at = mg_config_where (config, g, all[k]);
        g_set_error (error, G_KEY_FILE_ERROR, G_KEY_FILE_ERROR_INVALID_VALUE, _ ("%s: [%s] %s: %s"), at, g, all[k],
                     local ? local->message : _ ("not UTF-8, or a backslash not followed by s, n, t, r or \\"));
        return FALSE;
      }
    }
    if (strcmp (g, "gateway") == 0) {
      g_auto (GStrv) keys = g_key_file_get_keys (config->keyfile, g, NULL, NULL);
      for (guint k = 0; keys != NULL && keys[k] != NULL; k++)
        if (!g_strv_contains (gateway_keys, keys[k])) {
          g_autofree char *at = mg_config_where (config, g, keys[k]);
          g_set_error (error, G_KEY_FILE_ERROR, G_KEY_FILE_ERROR_KEY_NOT_FOUND, _ ("%s: [%s] unknown key \"%s\""), at,
                       g, keys[k]);
          return FALSE;
        }
      continue;
    }
    if (strcmp (g, "serve") == 0)
      continue; /* read and checked by `serve` only: the pipe filter ignores it */
    if (strcmp (g, "directory") == 0)
      continue; /* checked by mg_directory_read */
    if (strcmp (g, "default") == 0 || (g_str_has_prefix (g, "domain ") && g[7] != '\0') ||
        (g_str_has_prefix (g, "address ") && g[8] != '\0'))
      continue;
    {
      g_autofree char *at = mg_config_where (config, g, NULL);
      g_set_error (error, G_KEY_FILE_ERROR, G_KEY_FILE_ERROR_GROUP_NOT_FOUND,
                   _ ("%s: unknown group [%s] (gateway, serve, directory, default, domain NAME, address ADDRESS)"), at,
                   g);
      return FALSE;
    }
  }
  return TRUE;
}

/* read_gateway - the [gateway] keys of the filter: reinject, log, spool-dir */
static gboolean
read_gateway (MgConfig *config, GError **error)
{
  g_autofree char *reinject = g_key_file_get_string (config->keyfile, "gateway", "reinject", NULL);
  g_autofree char *log = g_key_file_get_string (config->keyfile, "gateway", "log", NULL);
  g_autofree char *spool = g_key_file_get_string (config->keyfile, "gateway", "spool-dir", NULL);

  if (reinject != NULL) {
    g_auto (GStrv) argv = NULL;
    g_autoptr (GError) local = NULL;
    if (!g_shell_parse_argv (g_strstrip (reinject), NULL, &argv, &local)) {
      g_autofree char *at = mg_config_where (config, "gateway", "reinject");
      g_set_error (error, G_KEY_FILE_ERROR, G_KEY_FILE_ERROR_INVALID_VALUE,
                   _ ("%s: [gateway] reinject = \"%s\" is not a command: %s"), at, reinject, local->message);
      return FALSE;
    }
    g_strfreev (config->reinject);
    config->reinject = g_steal_pointer (&argv);
  }
  if (log != NULL) {
    g_strstrip (log);
    if (strcmp (log, "syslog") == 0)
      config->log = MG_LOG_SYSLOG;
    else if (strcmp (log, "none") == 0)
      config->log = MG_LOG_NONE;
    else if (g_str_has_prefix (log, "json:") && g_path_is_absolute (log + 5)) {
      config->log = MG_LOG_JSON;
      config->log_path = g_strdup (log + 5);
    } else {
      g_autofree char *at = mg_config_where (config, "gateway", "log");
      g_set_error (error, G_KEY_FILE_ERROR, G_KEY_FILE_ERROR_INVALID_VALUE,
                   _ ("%s: [gateway] log = \"%s\" is not syslog, none or json:/ABSOLUTE/PATH"), at, log);
      return FALSE;
    }
  }
  if (spool != NULL) {
    g_free (config->spool_dir);
    config->spool_dir = g_strdup (g_strstrip (spool));
    config->limits.spool_dir = config->spool_dir;
  }
  return TRUE;
}

/* default_stores - a store left at its default location that does not exist is no store (a fresh install without
 * keys passes mail through); a store the file names must exist, or the commands report it (the filter defers) */
static void
default_stores (MgConfig *config)
{
  gboolean named_home = config->keyfile && g_key_file_has_key (config->keyfile, "gateway", "gnupg-home", NULL);
  gboolean named_store = config->keyfile && g_key_file_has_key (config->keyfile, "gateway", "x509-store", NULL);

  if (!named_home && config->use_gnupg && config->gnupg_home == NULL) {
    const char *env = g_getenv ("GNUPGHOME");
    g_autofree char *home = env && env[0] ? g_strdup (env) : g_build_filename (g_get_home_dir (), ".gnupg", NULL);
    if (!g_file_test (home, G_FILE_TEST_IS_DIR))
      config->use_gnupg = FALSE;
  }
  if (!named_store && config->x509_store != NULL && !g_file_test (config->x509_store, G_FILE_TEST_IS_DIR))
    g_clear_pointer (&config->x509_store, g_free);
}

/**
 * mg_config_load - reads @path, or the default path when @path is %NULL (absent: built-in defaults).
 *
 * Returns: (transfer full): the configuration, or %NULL with @error set (a message naming the file and key).
 */
MgConfig *
mg_config_load (const char *path, GError **error)
{
  g_autoptr (MgConfig) config = g_new0 (MgConfig, 1);
  GKeyFile *kf;
  g_autoptr (GError) local = NULL;
  guint64 timeout = MG_CONFIG_DEFAULT_TIMEOUT;
  guint64 size, depth, parts, decompressed, spool_threshold;

  mg_limits_init_default (&config->limits);
  config->use_gnupg = TRUE;
  config->x509_store = g_strdup (MG_CONFIG_DEFAULT_X509_STORE);
  config->trust_always = FALSE;
  config->min_validity = GPGME_VALIDITY_FULL;
  config->authserv_id = g_strdup (g_get_host_name ());
  config->reinject = g_strsplit (MG_CONFIG_DEFAULT_REINJECT, " ", -1);
  config->log = MG_LOG_SYSLOG;
  config->spool_dir = g_strdup (g_get_tmp_dir ());
  config->limits.spool_dir = config->spool_dir;
  config->timeout = MG_CONFIG_DEFAULT_TIMEOUT;
  if (path == NULL) {
    if (!g_file_test (MG_CONFIG_DEFAULT_PATH, G_FILE_TEST_EXISTS)) {
      default_stores (config);
      return g_steal_pointer (&config);
    }
    path = MG_CONFIG_DEFAULT_PATH;
  }
  config->keyfile = kf = g_key_file_new ();
  if (!g_file_get_contents (path, &config->text, NULL, &local) ||
      !g_key_file_load_from_data (kf, config->text, (gsize) -1, G_KEY_FILE_NONE, &local)) {
    g_set_error (error, local->domain, local->code, "%s: %s", path, local->message);
    return NULL;
  }
  config->path = g_strdup (path);
  if (!check_groups (config, error) || !read_gateway (config, error) || !mg_policy_check (config, error))
    return NULL;
  size = config->limits.max_size;
  depth = config->limits.max_depth;
  parts = config->limits.max_parts;
  decompressed = config->limits.max_decompressed;
  spool_threshold = config->limits.spool_threshold;
  if (!read_size (config, "max-size", G_MAXSIZE, &size, error) ||
      !read_size (config, "spool-threshold", G_MAXSIZE, &spool_threshold, error) ||
      !read_size (config, "max-decompressed", G_MAXSIZE, &decompressed, error) ||
      !read_size (config, "max-depth", 100000, &depth, error) ||
      !read_size (config, "max-parts", 10000000, &parts, error) ||
      !read_size (config, "timeout", 86400, &timeout, error))
    return NULL;
  config->timeout = (guint) timeout;
  {
    static const char *const models[] = { "gnupg", "always", NULL };
    static const char *const validities[] = { "marginal", "full", "ultimate", NULL };
    static const char *const engines[] = { "auto", "gpg", "rnp", NULL };
    g_autofree char *home = g_key_file_get_string (kf, "gateway", "gnupg-home", NULL);
    g_autofree char *store = g_key_file_get_string (kf, "gateway", "x509-store", NULL);
    int model = read_choice (config, "trust-model", models, 0, error);
    int validity = model < 0 ? -1 : read_choice (config, "min-validity", validities, 1, error);
    int engine = validity < 0 ? -1 : read_choice (config, "openpgp-encrypt", engines, 0, error);
    static const char *const harvests[] = { "none", "smime", NULL };
    int harvest = engine < 0 ? -1 : read_choice (config, "harvest", harvests, 0, error);
    if (model < 0 || validity < 0 || engine < 0 || harvest < 0 || !read_passphrase (config, error))
      return NULL;
    config->harvest_smime = harvest == 1;
    {
      g_autofree char *id = g_key_file_get_string (kf, "gateway", "authserv-id", NULL);
      if (id != NULL) {
        g_strstrip (id);
        if (!mg_authserv_id_valid (id)) {
          g_autofree char *at = mg_config_where (config, "gateway", "authserv-id");
          g_set_error (error, G_KEY_FILE_ERROR, G_KEY_FILE_ERROR_INVALID_VALUE,
                       _ ("%s: [gateway] authserv-id = \"%s\" must be a host name"), at, id);
          return NULL;
        }
        g_free (config->authserv_id);
        config->authserv_id = g_steal_pointer (&id);
      }
    }
    config->trust_always = model == 1;
    config->openpgp_encrypt = (MgOpenpgpEncrypt) engine;
    config->min_validity = GPGME_VALIDITY_MARGINAL + validity;
    if (home != NULL) {
      g_strstrip (home);
      config->use_gnupg = g_ascii_strcasecmp (home, "none") != 0;
      config->gnupg_home = config->use_gnupg && home[0] ? g_steal_pointer (&home) : NULL;
    }
    if (store != NULL) {
      g_strstrip (store);
      g_free (config->x509_store);
      config->x509_store = g_ascii_strcasecmp (store, "none") != 0 && store[0] ? g_steal_pointer (&store) : NULL;
    }
  }
  config->limits.max_size = (gsize) size;
  config->limits.max_depth = (guint) depth;
  config->limits.max_parts = (guint) parts;
  config->limits.max_decompressed = (gsize) decompressed;
  config->limits.spool_threshold = (gsize) spool_threshold;
  default_stores (config);
  if (!mg_directory_read (config, error))
    return NULL;
  return g_steal_pointer (&config);
}
