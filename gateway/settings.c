/* settings.c - reads the configuration file's [gateway] group: limits (max-size, max-depth, max-parts) and key stores
 * (gnupg-home, x509-store, trust-model, min-validity, x509-passphrase-file); policy groups come with the filter. A file
 * named with -c must exist; the default path may be absent (built-in defaults). Errors name the file and the key, so
 * that an admin can fix them. */
#include "config.h"

#include <errno.h>
#include <string.h>

#include <glib/gstdio.h>
#include <gpgme.h>

#include <glib/gi18n.h>

#include "convert.h"
#include "settings.h"

void
mg_config_free (MgConfig *config)
{
  if (config == NULL)
    return;
  g_free (config->path);
  g_free (config->gnupg_home);
  g_free (config->x509_store);
  g_free (config->authserv_id);
  if (config->passphrase != NULL)
    memset (config->passphrase, 0, strlen (config->passphrase));
  g_free (config->passphrase);
  g_free (config);
}

/* read_choice - @key must be one of @choices (NULL-terminated); returns its index, or -1 with @error set */
static int
read_choice (GKeyFile *kf, const char *path, const char *key, const char *const *choices, int fallback, GError **error)
{
  g_autofree char *text = g_key_file_get_string (kf, "gateway", key, NULL);
  g_autofree char *list = NULL;

  if (text == NULL)
    return fallback;
  g_strstrip (text);
  for (int i = 0; choices[i] != NULL; i++)
    if (g_ascii_strcasecmp (text, choices[i]) == 0)
      return i;
  list = g_strjoinv (", ", (char **) choices);
  g_set_error (error, G_KEY_FILE_ERROR, G_KEY_FILE_ERROR_INVALID_VALUE,
               _ ("%s: [gateway] %s = \"%s\" is not one of: %s"), path, key, text, list);
  return -1;
}

/* read_passphrase - the first line of the file named by x509-passphrase-file, which must be private (0600) */
static gboolean
read_passphrase (GKeyFile *kf, const char *path, MgConfig *config, GError **error)
{
  g_autofree char *file = g_key_file_get_string (kf, "gateway", "x509-passphrase-file", NULL);
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
read_size (GKeyFile *kf, const char *path, const char *key, guint64 max, guint64 *out, GError **error)
{
  g_autofree char *text = g_key_file_get_string (kf, "gateway", key, NULL);
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
    g_set_error (error, G_KEY_FILE_ERROR, G_KEY_FILE_ERROR_INVALID_VALUE,
                 _ ("%s: [gateway] %s = \"%s\" is not a valid number"), path, key, text);
    return FALSE;
  }
  *out = value * mult;
  return TRUE;
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
  g_autoptr (GKeyFile) kf = g_key_file_new ();
  g_autoptr (GError) local = NULL;
  guint64 size, depth, parts, decompressed;

  mg_limits_init_default (&config->limits);
  config->use_gnupg = TRUE;
  config->x509_store = g_strdup (MG_CONFIG_DEFAULT_X509_STORE);
  config->trust_always = FALSE;
  config->min_validity = GPGME_VALIDITY_FULL;
  config->authserv_id = g_strdup (g_get_host_name ());
  if (path == NULL) {
    if (!g_file_test (MG_CONFIG_DEFAULT_PATH, G_FILE_TEST_EXISTS))
      return g_steal_pointer (&config);
    path = MG_CONFIG_DEFAULT_PATH;
  }
  if (!g_key_file_load_from_file (kf, path, G_KEY_FILE_NONE, &local)) {
    g_set_error (error, local->domain, local->code, "%s: %s", path, local->message);
    return NULL;
  }
  config->path = g_strdup (path);
  size = config->limits.max_size;
  depth = config->limits.max_depth;
  parts = config->limits.max_parts;
  decompressed = config->limits.max_decompressed;
  if (!read_size (kf, path, "max-size", G_MAXSIZE, &size, error) ||
      !read_size (kf, path, "max-decompressed", G_MAXSIZE, &decompressed, error) ||
      !read_size (kf, path, "max-depth", 100000, &depth, error) ||
      !read_size (kf, path, "max-parts", 10000000, &parts, error))
    return NULL;
  {
    static const char *const models[] = { "gnupg", "always", NULL };
    static const char *const validities[] = { "marginal", "full", "ultimate", NULL };
    g_autofree char *home = g_key_file_get_string (kf, "gateway", "gnupg-home", NULL);
    g_autofree char *store = g_key_file_get_string (kf, "gateway", "x509-store", NULL);
    int model = read_choice (kf, path, "trust-model", models, 0, error);
    int validity = model < 0 ? -1 : read_choice (kf, path, "min-validity", validities, 1, error);
    if (model < 0 || validity < 0 || !read_passphrase (kf, path, config, error))
      return NULL;
    {
      g_autofree char *id = g_key_file_get_string (kf, "gateway", "authserv-id", NULL);
      if (id != NULL) {
        g_strstrip (id);
        if (!mg_authserv_id_valid (id)) {
          g_set_error (error, G_KEY_FILE_ERROR, G_KEY_FILE_ERROR_INVALID_VALUE,
                       _ ("%s: [gateway] authserv-id = \"%s\" must be a host name"), path, id);
          return NULL;
        }
        g_free (config->authserv_id);
        config->authserv_id = g_steal_pointer (&id);
      }
    }
    config->trust_always = model == 1;
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
  return g_steal_pointer (&config);
}
