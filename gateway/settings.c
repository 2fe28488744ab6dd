/* settings.c - reads the configuration file. So far the [gateway] limits (max-size, max-depth, max-parts); policy keys
 * come with the filter. A file named with -c must exist; the default path may be absent (built-in defaults). Errors
 * name the file and the key, so that an admin can fix them. */
#include "config.h"

#include <errno.h>

#include <glib/gi18n.h>

#include "settings.h"

void
mg_config_free (MgConfig *config)
{
  if (config == NULL)
    return;
  g_free (config->path);
  g_free (config);
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
  guint64 size, depth, parts;

  mg_limits_init_default (&config->limits);
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
  if (!read_size (kf, path, "max-size", G_MAXSIZE, &size, error) ||
      !read_size (kf, path, "max-depth", 100000, &depth, error) ||
      !read_size (kf, path, "max-parts", 10000000, &parts, error))
    return NULL;
  config->limits.max_size = (gsize) size;
  config->limits.max_depth = (guint) depth;
  config->limits.max_parts = (guint) parts;
  return g_steal_pointer (&config);
}
