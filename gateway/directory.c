/* directory.c - [directory]: an LDAP directory (keys/ldap.c) as a source of recipients' certificates beside certs/.
 *
 * Every key has a default except `uri`; without the group (or with an empty one) nothing of this runs. The bind
 * password comes from a file that must be private (0600), like x509-passphrase-file. A directory needs the X.509 store:
 * its ca/ decides which of the directory's certificates are trusted (none becomes an anchor). `serve` keeps the
 * directory's answers in memory for the generation's life; one-shot commands (filter, keys, convert) share them in a
 * 0600 cache file. With openpgp-attributes the directory is also a source of OpenPGP keys for the GnuPG stores (a
 * second MgLdap asking for those attributes, its answers cached apart). */
#include "config.h"

#include "directory.h"

#include <errno.h>
#include <string.h>

#include <glib/gi18n.h>
#include <glib/gstdio.h>

#include "mg-ldap.h"

static const char *const directory_keys[] = { "uri",
                                              "starttls",
                                              "base",
                                              "filter",
                                              "bind-dn",
                                              "bind-password-file",
                                              "ca-file",
                                              "timeout",
                                              "cache-ttl",
                                              "negative-ttl",
                                              "stale-ttl",
                                              "attributes",
                                              "cache-file",
                                              "openpgp-attributes",
                                              "openpgp-validity",
                                              NULL };

/* invalid - an error naming the file, line and key */
static gboolean
invalid (const MgConfig *config, const char *key, const char *why, GError **error)
{
  g_autofree char *at = mg_config_where (config, "directory", key);

  g_set_error (error, G_KEY_FILE_ERROR, G_KEY_FILE_ERROR_INVALID_VALUE, "%s: [directory] %s: %s", at, key, why);
  return FALSE;
}

/* read_seconds - a number of seconds in [@min, @max] */
static gboolean
read_seconds (const MgConfig *config, const char *key, guint64 min, guint64 max, guint *out, GError **error)
{
  g_autofree char *text = g_key_file_get_string (config->keyfile, "directory", key, NULL);
  g_autofree char *why = NULL;
  guint64 v = 0;

  if (text == NULL)
    return TRUE;
  g_strstrip (text);
  if (!g_ascii_string_to_unsigned (text, 10, min, max, &v, NULL)) {
    why = g_strdup_printf (_ ("\"%s\" is not a number of seconds from %u to %u"), text, (unsigned) min, (unsigned) max);
    return invalid (config, key, why, error);
  }
  *out = (guint) v;
  return TRUE;
}

/* read_string - (transfer full) (nullable): a key's value, stripped; %NULL when absent or empty */
static char *
read_string (const MgConfig *config, const char *key)
{
  g_autofree char *text = g_key_file_get_string (config->keyfile, "directory", key, NULL);

  if (text == NULL || g_strstrip (text)[0] == '\0')
    return NULL;
  return g_steal_pointer (&text);
}

/* read_password - the first line of bind-password-file, which must be private (0600) */
static gboolean
read_password (const MgConfig *config, MgLdapConfig *d, GError **error)
{
  g_autofree char *file = read_string (config, "bind-password-file");
  g_autofree char *data = NULL, *why = NULL;
  GStatBuf st;
  char *nl;

  if (file == NULL)
    return TRUE;
  if (d->bind_dn == NULL)
    return invalid (config, "bind-password-file", _ ("needs bind-dn"), error);
  if (g_stat (file, &st) != 0 || !g_file_get_contents (file, &data, NULL, NULL)) {
    why = g_strdup_printf (_ ("%s cannot be read"), file);
    return invalid (config, "bind-password-file", why, error);
  }
  if (st.st_mode & 077) {
    why = g_strdup_printf (_ ("%s is readable by group or others (mode %04o); make it 0600"), file,
                           (unsigned) (st.st_mode & 07777));
    memset (data, 0, strlen (data));
    return invalid (config, "bind-password-file", why, error);
  }
  nl = strpbrk (data, "\r\n");
  if (nl != NULL)
    *nl = '\0';
  d->bind_password = g_steal_pointer (&data);
  return TRUE;
}

/* read_list - (transfer full) (nullable): the attribute names of @text (separated by commas or blanks); %NULL for
 * none */
static char **
read_list (const char *text)
{
  g_auto (GStrv) list = g_strsplit_set (text, ", \t", -1);
  g_autoptr (GStrvBuilder) b = g_strv_builder_new ();
  guint n = 0;

  for (guint i = 0; list[i] != NULL; i++)
    if (list[i][0] != '\0') {
      g_strv_builder_add (b, list[i]);
      n++;
    }
  return n > 0 ? g_strv_builder_end (b) : NULL;
}

/* uri_ok - every space-separated URI is ldap://, ldaps:// or ldapi:// */
static gboolean
uri_ok (const char *uri, gboolean *has_ldaps)
{
  g_auto (GStrv) uris = g_strsplit_set (uri, " \t", -1);
  guint n = 0;

  for (guint i = 0; uris[i] != NULL; i++) {
    if (uris[i][0] == '\0')
      continue;
    if (!g_str_has_prefix (uris[i], "ldap://") && !g_str_has_prefix (uris[i], "ldaps://") &&
        !g_str_has_prefix (uris[i], "ldapi://"))
      return FALSE;
    *has_ldaps = *has_ldaps || g_str_has_prefix (uris[i], "ldaps://");
    n++;
  }
  return n > 0;
}

/**
 * mg_directory_read - [directory] of @config's file into @config->directory (left %NULL without the group).
 *
 * Returns: FALSE with @error (naming the file, line and key) when a key is unknown or its value unusable
 */
gboolean
mg_directory_read (MgConfig *config, GError **error)
{
  g_autoptr (MgLdapConfig) d = NULL;
  g_auto (GStrv) keys = NULL;
  g_autofree char *starttls = NULL, *attrs = NULL;
  gboolean ldaps = FALSE;

  if (config->keyfile == NULL || !g_key_file_has_group (config->keyfile, "directory"))
    return TRUE;
  keys = g_key_file_get_keys (config->keyfile, "directory", NULL, NULL);
  if (keys == NULL || keys[0] == NULL)
    return TRUE; /* the group as the example file has it, every key commented out: no directory */
  for (guint k = 0; keys != NULL && keys[k] != NULL; k++)
    if (!g_strv_contains (directory_keys, keys[k])) {
      g_autofree char *at = mg_config_where (config, "directory", keys[k]);
      g_set_error (error, G_KEY_FILE_ERROR, G_KEY_FILE_ERROR_KEY_NOT_FOUND, _ ("%s: [%s] unknown key \"%s\""), at,
                   "directory", keys[k]);
      return FALSE;
    }
  d = mg_ldap_config_new ();
  d->uri = read_string (config, "uri");
  if (d->uri == NULL || !uri_ok (d->uri, &ldaps))
    return invalid (config, "uri", _ ("one or more ldap://, ldaps:// or ldapi:// URIs are required"), error);
  starttls = read_string (config, "starttls");
  if (starttls != NULL) {
    if (g_ascii_strcasecmp (starttls, "true") != 0 && g_ascii_strcasecmp (starttls, "false") != 0)
      return invalid (config, "starttls", _ ("must be true or false"), error);
    d->starttls = g_ascii_strcasecmp (starttls, "true") == 0;
    if (d->starttls && ldaps)
      return invalid (config, "starttls", _ ("ldaps:// is TLS already; StartTLS is for ldap://"), error);
  }
  {
    g_autofree char *base = read_string (config, "base");
    g_autofree char *filter = read_string (config, "filter");
    if (base != NULL) {
      g_free (d->base);
      d->base = g_steal_pointer (&base);
    }
    if (filter != NULL) {
      if (filter[0] != '(' || filter[strlen (filter) - 1] != ')' || strstr (filter, "%s") == NULL)
        return invalid (config, "filter", _ ("must be an LDAP filter in parentheses with %s for the address"), error);
      g_free (d->filter);
      d->filter = g_steal_pointer (&filter);
    }
  }
  d->bind_dn = read_string (config, "bind-dn");
  d->ca_file = read_string (config, "ca-file");
  d->cache_file = read_string (config, "cache-file");
  if (d->cache_file != NULL && !g_path_is_absolute (d->cache_file))
    return invalid (config, "cache-file", _ ("must be an absolute path"), error);
  if (d->ca_file != NULL && !g_file_test (d->ca_file, G_FILE_TEST_IS_REGULAR)) {
    g_autofree char *why = g_strdup_printf (_ ("%s cannot be read"), d->ca_file);
    return invalid (config, "ca-file", why, error);
  }
  attrs = read_string (config, "attributes");
  if (attrs != NULL) {
    g_strfreev (d->attributes);
    if ((d->attributes = read_list (attrs)) == NULL)
      return invalid (config, "attributes", _ ("names no attribute"), error);
  }
  {
    g_autofree char *pgp = read_string (config, "openpgp-attributes");
    g_autofree char *validity = read_string (config, "openpgp-validity");
    if (pgp != NULL && (d->openpgp_attributes = read_list (pgp)) == NULL)
      return invalid (config, "openpgp-attributes", _ ("names no attribute"), error);
    if (validity != NULL) {
      if (strcmp (validity, "unknown") != 0 && strcmp (validity, "full") != 0)
        return invalid (config, "openpgp-validity", _ ("must be unknown or full"), error);
      d->openpgp_full = strcmp (validity, "full") == 0;
    }
  }
  if (!read_password (config, d, error) || !read_seconds (config, "timeout", 1, 3600, &d->timeout, error) ||
      !read_seconds (config, "cache-ttl", 0, 30 * 86400, &d->cache_ttl, error) ||
      !read_seconds (config, "negative-ttl", 0, 30 * 86400, &d->negative_ttl, error) ||
      !read_seconds (config, "stale-ttl", 0, 365 * 86400, &d->stale_ttl, error))
    return FALSE;
  if (config->x509_store == NULL) {
    g_autofree char *at = mg_config_where (config, "directory", NULL);
    g_set_error (
      error, G_KEY_FILE_ERROR, G_KEY_FILE_ERROR_INVALID_VALUE,
      _ ("%s: [directory] needs an X.509 store (x509-store): its ca/ decides which certificates are trusted"), at);
    return FALSE;
  }
  config->directory = g_steal_pointer (&d);
  return TRUE;
}

static GPtrArray *
fetch_cb (const char *address, gpointer data, GError **error)
{
  return mg_ldap_lookup (data, address, error);
}

/**
 * mg_directory_openpgp - the configured directory as a source of OpenPGP keys (openpgp-attributes), for
 * mg_directory_attach_openpgp(); one per process or generation, shared by its GnuPG stores.
 * @long_running: `serve`: answers are kept in memory only; otherwise in the shared cache file (CACHE-FILE.openpgp)
 *
 * Returns: (transfer full) (nullable): %NULL without [directory] or without openpgp-attributes
 */
MgLdap *
mg_directory_openpgp (const MgConfig *config, gboolean long_running)
{
  g_autoptr (MgLdapConfig) pgp = config->directory ? mg_ldap_config_openpgp (config->directory) : NULL;

  return pgp != NULL ? mg_ldap_new (pgp, !long_running) : NULL;
}

/* mg_directory_attach_openpgp - @dir (nullable; a reference is taken) as a source of @store's OpenPGP keys */
void
mg_directory_attach_openpgp (MgLdap *dir, MgGnupg *store)
{
  if (dir == NULL || store == NULL)
    return;
  mg_gnupg_set_source (store, mg_ldap_name (dir), fetch_cb, mg_ldap_ref (dir), (GDestroyNotify) mg_ldap_free,
                       mg_ldap_openpgp_full (dir));
}

/**
 * mg_directory_attach - the configured directory (if any) as a source of @store's certificates.
 * @long_running: `serve`: answers are kept in memory only; otherwise in the shared cache file
 *
 * Returns: (transfer none) (nullable): the directory, owned by @store; %NULL without one
 */
MgLdap *
mg_directory_attach (const MgConfig *config, MgX509Store *store, gboolean long_running)
{
  MgLdap *dir;

  if (config->directory == NULL || store == NULL)
    return NULL;
  dir = mg_ldap_new (config->directory, !long_running);
  mg_x509_store_set_source (store, mg_ldap_name (dir), fetch_cb, dir, (GDestroyNotify) mg_ldap_free);
  return dir;
}
