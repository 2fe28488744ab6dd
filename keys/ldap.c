/* ldap.c - a directory as a source of recipients' certificates, through OpenLDAP's libldap (RFC 4511 operations,
 * RFC 4513 simple bind and StartTLS, RFC 4515 filters, RFC 4516 URIs).
 *
 * A lookup searches the subtree of `base` with the configured filter, in which every %s becomes the address with the
 * filter's special characters escaped (RFC 4515 section 3: `*`, `(`, `)`, `\` and NUL, by libldap's
 * ldap_bv2escaped_filter_value), so that an address can never widen or change the search. It returns the values of
 * the configured attributes of every entry found, as DER; what they are worth is for the X.509 store's judge.
 *
 * Answers are cached per address key (mg_keys_address_key): a found one for cache-ttl, a not-found one for
 * negative-ttl. When the directory cannot be asked (unreachable, TLS refused, bind refused, search failed) a cached
 * answer younger than stale-ttl is used; without one the lookup fails with a transient MG_KEYS_ERROR_STORE naming the
 * directory, so that mail is deferred (or passed per on-error), never sent in clear for want of a key.
 *
 * A long-running process keeps the cache in memory and one connection, reopened when it fails. One-shot runs share
 * a cache file instead: mode 0600, owned by the running user in a directory nobody else may write, read whole at the
 * first lookup and, after each answer the directory gave, merged with what other runs wrote meanwhile and replaced
 * atomically (a temporary file, fsync, rename) under an flock on a lock file beside it. A file that is not ours, has
 * another directory's identity (URI, base, filter, bind DN, attributes) or is damaged is not read. */
#include "config.h"

#include "mg-ldap.h"
#include "dl.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib/gi18n.h>
#include <glib/gstdio.h>
#include <lber.h>
#include <ldap.h>

#include "keys.h"

#define CACHE_MAGIC "mimegate-directory-cache v1"
#define LOCK_WAIT_MS 2000
#define MAX_ENTRIES 64 /* entries per search: an address names a person, not a department */

/* libldap is loaded on first use, not linked: with GnuTLS, SASL and p11-kit behind it, linking it costs every mimegate
 * process about 2 ms of CPU before main() (measured: `mimegate --version` 4.1 ms without, 6.1 ms with), and only a
 * site with [directory] uses it. The header gives the prototypes; the table holds what dlsym() found. */
#define MG_LDAP_FUNCS(X)                                                                                               \
  X (ber_free)                                                                                                         \
  X (ber_memfree)                                                                                                      \
  X (ldap_bv2escaped_filter_value)                                                                                     \
  X (ldap_err2string)                                                                                                  \
  X (ldap_first_attribute)                                                                                             \
  X (ldap_first_entry)                                                                                                 \
  X (ldap_get_option)                                                                                                  \
  X (ldap_get_values_len)                                                                                              \
  X (ldap_initialize)                                                                                                  \
  X (ldap_memfree)                                                                                                     \
  X (ldap_msgfree)                                                                                                     \
  X (ldap_next_attribute)                                                                                              \
  X (ldap_next_entry)                                                                                                  \
  X (ldap_sasl_bind_s)                                                                                                 \
  X (ldap_search_ext_s)                                                                                                \
  X (ldap_set_option)                                                                                                  \
  X (ldap_start_tls_s)                                                                                                 \
  X (ldap_unbind_ext_s)                                                                                                \
  X (ldap_value_free_len)

#define MG_LDAP_NAME(f) #f,
static const char *const api_names[] = { MG_LDAP_FUNCS (MG_LDAP_NAME) NULL };
#undef MG_LDAP_NAME

/* api - the functions, named as the library names them; filled through slot by mg_dl_load() */
static union {
  struct {
#define MG_LDAP_POINTER(f) __typeof__ (f) *f;
    MG_LDAP_FUNCS (MG_LDAP_POINTER)
#undef MG_LDAP_POINTER
  };
  void *slot[G_N_ELEMENTS (api_names) - 1];
} api;
G_STATIC_ASSERT (sizeof (api) == sizeof (api.slot)); /* each slot is one function pointer */

/* load - libldap's functions into api, once per process; NULL, or why they cannot be had */
static const char *
load (void)
{
  static MgDlOnce state;

  return mg_dl_load (&state, MG_LDAP_SONAME, api_names, api.slot);
}

/* Cached - one address's answer: the DER values found (empty: not found), and when the directory gave it */
typedef struct {
  gint64 fetched;
  GPtrArray *values; /* (element-type GBytes) */
} Cached;

struct _MgLdap {
  gint refs;
  MgLdapConfig *config; /* a copy */
  char *name;           /* "ldap://host/base": how errors and `keys` name the directory */
  char *identity;       /* what the cache file's answers depend on, hashed */
  gboolean shared_file;
  char *cache_path; /* (nullable): with @shared_file, when there is a safe place */
  gboolean file_read;
  GMutex lock;       /* guards @file_read, @cache, @down_until */
  GHashTable *cache; /* address key → Cached */
  gint64 down_until; /* after a failure, the directory is not asked again for @timeout seconds */
  char *last_error;  /* (nullable): that failure, repeated meanwhile */
  GMutex conn_lock;  /* guards @ld: one search at a time on the one connection; never held with @lock waiting */
  LDAP *ld;          /* (nullable): the open connection */
};

static void
cached_free (Cached *c)
{
  g_ptr_array_unref (c->values);
  g_free (c);
}

static Cached *
cached_new (gint64 fetched)
{
  Cached *c = g_new0 (Cached, 1);

  c->fetched = fetched;
  c->values = g_ptr_array_new_with_free_func ((GDestroyNotify) g_bytes_unref);
  return c;
}

/* mg_ldap_config_new - Returns: (transfer full): [directory] with its defaults and no URI */
MgLdapConfig *
mg_ldap_config_new (void)
{
  MgLdapConfig *c = g_new0 (MgLdapConfig, 1);
  g_auto (GStrv) attrs = g_strsplit (MG_LDAP_DEFAULT_ATTRIBUTES, ",", -1);

  c->base = g_strdup ("");
  c->filter = g_strdup (MG_LDAP_DEFAULT_FILTER);
  c->timeout = MG_LDAP_DEFAULT_TIMEOUT;
  c->cache_ttl = MG_LDAP_DEFAULT_CACHE_TTL;
  c->negative_ttl = MG_LDAP_DEFAULT_NEGATIVE_TTL;
  c->stale_ttl = MG_LDAP_DEFAULT_STALE_TTL;
  for (guint i = 0; attrs[i] != NULL; i++)
    g_strstrip (attrs[i]);
  c->attributes = g_steal_pointer (&attrs);
  return c;
}

void
mg_ldap_config_free (MgLdapConfig *c)
{
  if (c == NULL)
    return;
  g_free (c->uri);
  g_free (c->base);
  g_free (c->filter);
  g_free (c->bind_dn);
  if (c->bind_password != NULL)
    memset (c->bind_password, 0, strlen (c->bind_password));
  g_free (c->bind_password);
  g_free (c->ca_file);
  g_strfreev (c->attributes);
  g_free (c->cache_file);
  g_strfreev (c->openpgp_attributes);
  g_free (c);
}

/* mg_ldap_config_equal - whether @a and @b configure the same directory the same way (every key, the password too) */
gboolean
mg_ldap_config_equal (const MgLdapConfig *a, const MgLdapConfig *b)
{
  guint na = a->attributes ? g_strv_length (a->attributes) : 0, nb = b->attributes ? g_strv_length (b->attributes) : 0;

  if (g_strcmp0 (a->uri, b->uri) != 0 || a->starttls != b->starttls || g_strcmp0 (a->base, b->base) != 0 ||
      g_strcmp0 (a->filter, b->filter) != 0 || g_strcmp0 (a->bind_dn, b->bind_dn) != 0 ||
      g_strcmp0 (a->bind_password, b->bind_password) != 0 || g_strcmp0 (a->ca_file, b->ca_file) != 0 ||
      a->timeout != b->timeout || a->cache_ttl != b->cache_ttl || a->negative_ttl != b->negative_ttl ||
      a->stale_ttl != b->stale_ttl || g_strcmp0 (a->cache_file, b->cache_file) != 0 || na != nb ||
      a->openpgp_full != b->openpgp_full)
    return FALSE;
  for (guint i = 0; i < na; i++)
    if (strcmp (a->attributes[i], b->attributes[i]) != 0)
      return FALSE;
  na = a->openpgp_attributes ? g_strv_length (a->openpgp_attributes) : 0;
  nb = b->openpgp_attributes ? g_strv_length (b->openpgp_attributes) : 0;
  if (na != nb)
    return FALSE;
  for (guint i = 0; i < na; i++)
    if (strcmp (a->openpgp_attributes[i], b->openpgp_attributes[i]) != 0)
      return FALSE;
  return TRUE;
}

static MgLdapConfig *
config_copy (const MgLdapConfig *c)
{
  MgLdapConfig *n = g_new0 (MgLdapConfig, 1);

  *n = *c;
  n->uri = g_strdup (c->uri);
  n->base = g_strdup (c->base);
  n->filter = g_strdup (c->filter);
  n->bind_dn = g_strdup (c->bind_dn);
  n->bind_password = g_strdup (c->bind_password);
  n->ca_file = g_strdup (c->ca_file);
  n->attributes = g_strdupv (c->attributes);
  n->cache_file = g_strdup (c->cache_file);
  n->openpgp_attributes = g_strdupv (c->openpgp_attributes);
  return n;
}

/**
 * mg_ldap_config_openpgp - the directory of @config as a source of OpenPGP keys: the same server, base, filter and
 * bind, asking for openpgp-attributes instead; its answers are cached apart (a cache-file gets ".openpgp" appended).
 *
 * Returns: (transfer full) (nullable): %NULL when @config names no OpenPGP attribute
 */
MgLdapConfig *
mg_ldap_config_openpgp (const MgLdapConfig *config)
{
  MgLdapConfig *n;

  if (config->openpgp_attributes == NULL || config->openpgp_attributes[0] == NULL)
    return NULL;
  n = config_copy (config);
  g_strfreev (n->attributes);
  n->attributes = g_strdupv (config->openpgp_attributes);
  if (config->cache_file != NULL) {
    g_free (n->cache_file);
    n->cache_file = g_strconcat (config->cache_file, ".openpgp", NULL);
  }
  return n;
}

/**
 * mg_ldap_filter_for - @filter with each "%s" replaced by @address escaped per RFC 4515 (and "%%" by "%").
 *
 * Returns: (transfer full) (nullable): %NULL when the address cannot be escaped (libldap cannot be loaded, out of
 * memory)
 */
char *
mg_ldap_filter_for (const char *filter, const char *address)
{
  struct berval in = { strlen (address), (char *) address }, out = { 0, NULL };
  GString *s;

  if (load () != NULL || api.ldap_bv2escaped_filter_value (&in, &out) != 0)
    return NULL;
  s = g_string_new (NULL);
  for (const char *p = filter; *p; p++) {
    if (p[0] == '%' && p[1] == 's') {
      g_string_append_len (s, out.bv_val, (gssize) out.bv_len);
      p++;
    } else if (p[0] == '%' && p[1] == '%') {
      g_string_append_c (s, '%');
      p++;
    } else
      g_string_append_c (s, *p);
  }
  api.ber_memfree (out.bv_val);
  return g_string_free (s, FALSE);
}

/* cache_place - the cache file for @dir: the configured one, or one per directory identity in the user's cache
 * directory; %NULL when its directory is not ours alone */
static char *
cache_place (MgLdap *dir)
{
  g_autofree char *path = NULL, *parent = NULL;
  struct stat st;

  if (dir->config->cache_file != NULL)
    path = g_strdup (dir->config->cache_file);
  else {
    g_autofree char *sum = g_compute_checksum_for_string (G_CHECKSUM_SHA256, dir->identity, -1);
    g_autofree char *name = NULL;
    sum[32] = '\0';
    name = g_strdup_printf ("directory-%s.cache", sum);
    path = g_build_filename (g_get_user_cache_dir (), "mimegate", name, NULL);
  }
  parent = g_path_get_dirname (path);
  if (g_mkdir_with_parents (parent, 0700) != 0 || lstat (parent, &st) != 0 || !S_ISDIR (st.st_mode) ||
      (st.st_uid != geteuid () && st.st_uid != 0) || (st.st_mode & 022) != 0)
    return NULL;
  return g_steal_pointer (&path);
}

/**
 * mg_ldap_new - a directory to look certificates up in; nothing is connected yet.
 * @config: (transfer none): copied
 * @shared_file: keep answers in a cache file shared with other runs (one-shot commands), not only in memory
 *
 * Returns: (transfer full)
 */
MgLdap *
mg_ldap_new (const MgLdapConfig *config, gboolean shared_file)
{
  MgLdap *dir = g_new0 (MgLdap, 1);
  g_autofree char *attrs = g_strjoinv (",", config->attributes);
  const char *uri = config->uri ? config->uri : "";
  gsize n = strlen (uri);

  dir->refs = 1;
  dir->config = config_copy (config);
  while (n > 0 && uri[n - 1] == '/')
    n--;
  dir->name = g_strdup_printf ("%.*s/%s", (int) n, uri, config->base ? config->base : "");
  dir->identity = g_strdup_printf ("%s\n%s\n%s\n%s\n%s", uri, config->base ? config->base : "", config->filter,
                                   config->bind_dn ? config->bind_dn : "", attrs);
  dir->shared_file = shared_file;
  if (shared_file)
    dir->cache_path = cache_place (dir);
  g_mutex_init (&dir->lock);
  g_mutex_init (&dir->conn_lock);
  dir->cache = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, (GDestroyNotify) cached_free);
  return dir;
}

/* mg_ldap_name - Returns: (transfer none): "URI/BASE", how messages name the directory */
const char *
mg_ldap_name (MgLdap *dir)
{
  return dir->name;
}

/* mg_ldap_openpgp_full - whether openpgp-validity = full: the directory's OpenPGP keys count as fully valid */
gboolean
mg_ldap_openpgp_full (MgLdap *dir)
{
  return dir->config->openpgp_full;
}

/* mg_ldap_cache_path - Returns: (transfer none) (nullable): the shared cache file, when one is used */
const char *
mg_ldap_cache_path (MgLdap *dir)
{
  return dir->cache_path;
}

/* mg_ldap_ref - Returns: (transfer full): @dir, shared (by the GnuPG stores of one generation) */
MgLdap *
mg_ldap_ref (MgLdap *dir)
{
  g_atomic_int_inc (&dir->refs);
  return dir;
}

/* mg_ldap_free - drops a reference; the last one closes the connection and frees the cache */
void
mg_ldap_free (MgLdap *dir)
{
  if (dir == NULL || !g_atomic_int_dec_and_test (&dir->refs))
    return;
  if (dir->ld != NULL)
    api.ldap_unbind_ext_s (dir->ld, NULL, NULL);
  g_hash_table_unref (dir->cache);
  g_mutex_clear (&dir->lock);
  g_mutex_clear (&dir->conn_lock);
  mg_ldap_config_free (dir->config);
  g_free (dir->name);
  g_free (dir->identity);
  g_free (dir->cache_path);
  g_free (dir->last_error);
  g_free (dir);
}

/**
 * mg_ldap_adopt - @from's answers in memory (found and not found, each with the time the directory gave it) into
 * @dir's cache, where @dir has none as new, and @from's "not asked again until" after a failure: a reloaded
 * generation of `serve` goes on where the old one was, so that a reload while the directory is away does not turn
 * cached answers into 4.7.0. Only between directories configured alike (mg_ldap_config_equal); @from stays usable.
 *
 * Returns: how many answers were taken over
 */
guint
mg_ldap_adopt (MgLdap *dir, MgLdap *from)
{
  GHashTableIter it;
  gpointer k, v;
  guint n = 0;

  if (dir == from || !mg_ldap_config_equal (dir->config, from->config))
    return 0;
  /* the old generation may be answering lookups meanwhile; the new one is not in use yet. One lock at a time. */
  g_mutex_lock (&from->lock);
  {
    g_autoptr (GHashTable) copy = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, (GDestroyNotify) cached_free);
    gint64 down_until = from->down_until;
    g_autofree char *last_error = g_strdup (from->last_error);
    g_hash_table_iter_init (&it, from->cache);
    while (g_hash_table_iter_next (&it, &k, &v)) {
      const Cached *c = v;
      Cached *copied = cached_new (c->fetched);
      for (guint i = 0; i < c->values->len; i++)
        g_ptr_array_add (copied->values, g_bytes_ref (g_ptr_array_index (c->values, i)));
      g_hash_table_insert (copy, g_strdup (k), copied);
    }
    g_mutex_unlock (&from->lock);
    g_mutex_lock (&dir->lock);
    g_hash_table_iter_init (&it, copy);
    while (g_hash_table_iter_next (&it, &k, &v)) {
      const Cached *have = g_hash_table_lookup (dir->cache, k);
      if (have != NULL && have->fetched >= ((const Cached *) v)->fetched)
        continue;
      g_hash_table_iter_steal (&it);
      g_hash_table_insert (dir->cache, k, v);
      n++;
    }
    if (down_until > dir->down_until && last_error != NULL) {
      dir->down_until = down_until;
      g_free (dir->last_error);
      dir->last_error = g_steal_pointer (&last_error);
    }
    g_mutex_unlock (&dir->lock);
  }
  return n;
}

/* ---- the cache file ----------------------------------------------------------------------------------------------
 *
 *   mimegate-directory-cache v1
 *   id HEX                          SHA-256 of the directory's identity
 *   KEY\tFETCHED\tVALUES            one line per address key (URI-escaped): when the directory answered (seconds
 *                                   since the epoch) and the values found, base64 separated by ',' or "-" for none
 *   end
 */

/* file_parse - the answers of @text into @into, each unless @into has a newer one; FALSE when it is not a cache of
 * this directory, or damaged */
static gboolean
file_parse (MgLdap *dir, const char *text, GHashTable *into)
{
  g_auto (GStrv) lines = g_strsplit (text, "\n", -1);
  g_autofree char *id = g_compute_checksum_for_string (G_CHECKSUM_SHA256, dir->identity, -1);
  g_autofree char *want = g_strdup_printf ("id %s", id);
  guint n = g_strv_length (lines);

  if (n < 4 || strcmp (lines[0], CACHE_MAGIC) != 0 || strcmp (lines[1], want) != 0 || strcmp (lines[n - 2], "end") != 0)
    return FALSE;
  for (guint i = 2; i < n - 2; i++) {
    g_auto (GStrv) f = g_strsplit (lines[i], "\t", -1);
    g_autofree char *key = NULL;
    Cached *c, *have;
    if (g_strv_length (f) != 3 || (key = g_uri_unescape_string (f[0], NULL)) == NULL)
      return FALSE;
    c = cached_new (g_ascii_strtoll (f[1], NULL, 10));
    if (strcmp (f[2], "-") != 0) {
      g_auto (GStrv) vals = g_strsplit (f[2], ",", -1);
      for (guint k = 0; vals[k] != NULL; k++) {
        gsize len = 0;
        guchar *raw = g_base64_decode (vals[k], &len);
        g_ptr_array_add (c->values, g_bytes_new_take (raw, len));
      }
    }
    have = g_hash_table_lookup (into, key);
    if (have != NULL && have->fetched >= c->fetched)
      cached_free (c);
    else
      g_hash_table_insert (into, g_steal_pointer (&key), c);
  }
  return TRUE;
}

/* file_read - the cache file's answers into @into, when it is ours (owner, mode 0600, a regular file) */
static void
file_read (MgLdap *dir, GHashTable *into)
{
  int fd = open (dir->cache_path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  struct stat st;
  g_autofree char *text = NULL;
  gssize got = 0;

  if (fd < 0)
    return;
  if (fstat (fd, &st) == 0 && S_ISREG (st.st_mode) && st.st_uid == geteuid () && (st.st_mode & 077) == 0 &&
      st.st_size < 256 * 1024 * 1024) {
    text = g_malloc ((gsize) st.st_size + 1);
    while (got < st.st_size) {
      gssize r = read (fd, text + got, (gsize) (st.st_size - got));
      if (r <= 0)
        break;
      got += r;
    }
    text[got] = '\0';
    if (got == st.st_size)
      file_parse (dir, text, into);
  }
  close (fd);
}

/* file_write - merges this process's answers with the file's and replaces it (temporary file, fsync, rename), under
 * the lock; answers past stale-ttl are dropped. A failure only costs other runs the sharing. */
static void
file_write (MgLdap *dir, gint64 now)
{
  g_autofree char *lock = g_strconcat (dir->cache_path, ".lock", NULL);
  g_autofree char *tmp = NULL, *id = NULL;
  g_autoptr (GHashTable) all = NULL;
  g_autoptr (GString) out = NULL;
  GHashTableIter it;
  gpointer k, v;
  int lfd, fd;
  gboolean ok;

  lfd = open (lock, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (lfd < 0)
    return;
  for (int waited = 0; flock (lfd, LOCK_EX | LOCK_NB) != 0; waited += 20) {
    if ((errno != EWOULDBLOCK && errno != EINTR) || waited >= LOCK_WAIT_MS) {
      close (lfd);
      return;
    }
    g_usleep (20 * 1000);
  }
  all = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, (GDestroyNotify) cached_free);
  file_read (dir, all);
  g_hash_table_iter_init (&it, dir->cache);
  while (g_hash_table_iter_next (&it, &k, &v)) {
    const Cached *mine = v;
    Cached *have = g_hash_table_lookup (all, k), *c;
    if (have != NULL && have->fetched >= mine->fetched)
      continue;
    c = cached_new (mine->fetched);
    for (guint i = 0; i < mine->values->len; i++)
      g_ptr_array_add (c->values, g_bytes_ref (g_ptr_array_index (mine->values, i)));
    g_hash_table_insert (all, g_strdup (k), c);
  }
  id = g_compute_checksum_for_string (G_CHECKSUM_SHA256, dir->identity, -1);
  out = g_string_new (NULL);
  g_string_append_printf (out, "%s\nid %s\n", CACHE_MAGIC, id);
  g_hash_table_iter_init (&it, all);
  while (g_hash_table_iter_next (&it, &k, &v)) {
    const Cached *c = v;
    g_autofree char *esc = g_uri_escape_string (k, "!$&'()*+,;=:@/~", TRUE);
    if (now - c->fetched > (gint64) dir->config->stale_ttl)
      continue;
    g_string_append_printf (out, "%s\t%" G_GINT64_FORMAT "\t", esc, c->fetched);
    if (c->values->len == 0)
      g_string_append_c (out, '-');
    for (guint i = 0; i < c->values->len; i++) {
      gsize len = 0;
      const guchar *data = g_bytes_get_data (g_ptr_array_index (c->values, i), &len);
      g_autofree char *b64 = g_base64_encode (data, len);
      g_string_append_printf (out, "%s%s", i ? "," : "", b64);
    }
    g_string_append_c (out, '\n');
  }
  g_string_append (out, "end\n");
  tmp = g_strdup_printf ("%s.%d.tmp", dir->cache_path, (int) getpid ());
  g_unlink (tmp);
  fd = open (tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  ok = fd >= 0;
  for (gsize done = 0; ok && done < out->len;) {
    gssize w = write (fd, out->str + done, out->len - done);
    if (w < 0 && errno == EINTR)
      continue;
    ok = w > 0;
    done += ok ? (gsize) w : 0;
  }
  if (fd >= 0) {
    ok = ok && fsync (fd) == 0;
    ok = close (fd) == 0 && ok;
  }
  if (!ok || rename (tmp, dir->cache_path) != 0)
    g_unlink (tmp);
  close (lfd); /* releases the lock */
}

/* ---- the directory -------------------------------------------------------------------------------------------- */

/* dir_failed - a transient error naming the directory, with libldap's reason and the server's diagnostic */
static void
dir_failed (MgLdap *dir, LDAP *ld, int rc, const char *what, GError **error)
{
  char *diag = NULL;
  g_autofree char *detail = NULL;

  if (ld != NULL)
    api.ldap_get_option (ld, LDAP_OPT_DIAGNOSTIC_MESSAGE, &diag);
  detail =
    diag && diag[0] ? g_strdup_printf ("%s (%s)", api.ldap_err2string (rc), diag) : g_strdup (api.ldap_err2string (rc));
  api.ldap_memfree (diag);
  g_set_error (error, MG_KEYS_ERROR, MG_KEYS_ERROR_STORE, _ ("directory %s: %s failed: %s"), dir->name, what, detail);
}

/* dir_connect - a connection to the directory, with TLS as configured, bound; %NULL with @error */
static LDAP *
dir_connect (MgLdap *dir, GError **error)
{
  const MgLdapConfig *c = dir->config;
  LDAP *ld = NULL;
  int version = LDAP_VERSION3, demand = LDAP_OPT_X_TLS_DEMAND, zero = 0, rc;
  struct timeval tv = { (time_t) c->timeout, 0 };

  rc = api.ldap_initialize (&ld, c->uri);
  if (rc != LDAP_SUCCESS) {
    dir_failed (dir, NULL, rc, _ ("connecting"), error);
    return NULL;
  }
  api.ldap_set_option (ld, LDAP_OPT_PROTOCOL_VERSION, &version);
  api.ldap_set_option (ld, LDAP_OPT_REFERRALS, LDAP_OPT_OFF);
  api.ldap_set_option (ld, LDAP_OPT_NETWORK_TIMEOUT, &tv);
  api.ldap_set_option (ld, LDAP_OPT_TIMEOUT, &tv);
  api.ldap_set_option (ld, LDAP_OPT_X_TLS_REQUIRE_CERT, &demand);
  if (c->ca_file != NULL)
    api.ldap_set_option (ld, LDAP_OPT_X_TLS_CACERTFILE, c->ca_file);
  api.ldap_set_option (ld, LDAP_OPT_X_TLS_NEWCTX, &zero); /* the options above for this connection's TLS */
  if (c->starttls && (rc = api.ldap_start_tls_s (ld, NULL, NULL)) != LDAP_SUCCESS) {
    dir_failed (dir, ld, rc, "StartTLS", error);
    api.ldap_unbind_ext_s (ld, NULL, NULL);
    return NULL;
  }
  if (c->bind_dn != NULL) {
    struct berval cred = { c->bind_password ? strlen (c->bind_password) : 0, c->bind_password };
    rc = api.ldap_sasl_bind_s (ld, c->bind_dn, LDAP_SASL_SIMPLE, &cred, NULL, NULL, NULL);
  } else {
    struct berval none = { 0, NULL };
    rc = api.ldap_sasl_bind_s (ld, NULL, LDAP_SASL_SIMPLE, &none, NULL, NULL, NULL); /* anonymous; connects now */
  }
  if (rc != LDAP_SUCCESS) {
    g_autofree char *what = c->bind_dn ? g_strdup_printf (_ ("bind as %s"), c->bind_dn) : g_strdup (_ ("bind"));
    dir_failed (dir, ld, rc, what, error);
    api.ldap_unbind_ext_s (ld, NULL, NULL);
    return NULL;
  }
  return ld;
}

/* attribute_wanted - whether the returned attribute description @name is one of @attrs (compared without regard to
 * case and to options such as ";binary": AD answers "userCertificate" to "userCertificate;binary") */
static gboolean
attribute_wanted (char **attrs, const char *name)
{
  gsize n = strcspn (name, ";");

  for (guint i = 0; attrs[i] != NULL; i++)
    if (strcspn (attrs[i], ";") == n && g_ascii_strncasecmp (attrs[i], name, n) == 0)
      return TRUE;
  return FALSE;
}

/* dir_search - the values of the wanted attributes of every entry @filter finds; %NULL with @error */
static GPtrArray *
dir_search (MgLdap *dir, LDAP *ld, const char *filter, GError **error)
{
  const MgLdapConfig *c = dir->config;
  struct timeval tv = { (time_t) c->timeout, 0 };
  LDAPMessage *res = NULL;
  GPtrArray *values;
  int rc = api.ldap_search_ext_s (ld, c->base, LDAP_SCOPE_SUBTREE, filter, c->attributes, 0, NULL, NULL, &tv,
                                  MAX_ENTRIES, &res);

  if (rc != LDAP_SUCCESS && rc != LDAP_SIZELIMIT_EXCEEDED && rc != LDAP_NO_SUCH_OBJECT) {
    api.ldap_msgfree (res);
    dir_failed (dir, ld, rc, _ ("search"), error);
    return NULL;
  }
  values = g_ptr_array_new_with_free_func ((GDestroyNotify) g_bytes_unref);
  for (LDAPMessage *e = api.ldap_first_entry (ld, res); e != NULL; e = api.ldap_next_entry (ld, e)) {
    BerElement *ber = NULL;
    for (char *a = api.ldap_first_attribute (ld, e, &ber); a != NULL; a = api.ldap_next_attribute (ld, e, ber)) {
      struct berval **vals = attribute_wanted (c->attributes, a) ? api.ldap_get_values_len (ld, e, a) : NULL;
      for (int i = 0; vals != NULL && vals[i] != NULL; i++) {
        GBytes *b = g_bytes_new (vals[i]->bv_val, vals[i]->bv_len);
        gboolean seen = FALSE;
        for (guint k = 0; k < values->len && !seen; k++)
          seen = g_bytes_equal (g_ptr_array_index (values, k), b);
        if (seen)
          g_bytes_unref (b);
        else
          g_ptr_array_add (values, b);
      }
      api.ldap_value_free_len (vals);
      api.ldap_memfree (a);
    }
    api.ber_free (ber, 0);
  }
  api.ldap_msgfree (res);
  return values;
}

/* dir_ask - the directory's answer for @key now, over the kept connection or a new one (a kept one that fails is
 * tried once more fresh: the server may have closed an idle connection) */
static GPtrArray *
dir_ask (MgLdap *dir, const char *key, GError **error)
{
  const char *missing = load ();
  g_autofree char *filter = missing ? NULL : mg_ldap_filter_for (dir->config->filter, key);

  if (missing != NULL) {
    g_set_error (error, MG_KEYS_ERROR, MG_KEYS_ERROR_STORE, "directory %s: %s", dir->name, missing);
    return NULL;
  }
  if (filter == NULL) {
    g_set_error (error, MG_KEYS_ERROR, MG_KEYS_ERROR_STORE, _ ("directory %s: out of memory"), dir->name);
    return NULL;
  }
  for (int attempt = 0; attempt < 2; attempt++) {
    gboolean kept = dir->ld != NULL;
    g_autoptr (GError) local = NULL;
    GPtrArray *values;
    if (dir->ld == NULL && (dir->ld = dir_connect (dir, error)) == NULL)
      return NULL;
    values = dir_search (dir, dir->ld, filter, &local);
    if (values != NULL)
      return values;
    api.ldap_unbind_ext_s (dir->ld, NULL, NULL);
    dir->ld = NULL;
    if (!kept || attempt == 1) {
      g_propagate_error (error, g_steal_pointer (&local));
      return NULL;
    }
  }
  return NULL;
}

static GPtrArray *
values_copy (const GPtrArray *values)
{
  GPtrArray *out = g_ptr_array_new_with_free_func ((GDestroyNotify) g_bytes_unref);

  for (guint i = 0; i < values->len; i++)
    g_ptr_array_add (out, g_bytes_ref (g_ptr_array_index (values, i)));
  return out;
}

/* cached_answer - (transfer full) (nullable): @key's cached values when younger than @ttl_of_kind (the cache-ttl or
 * negative-ttl that fits them) or, with @stale, than stale-ttl; call with @dir->lock held */
static GPtrArray *
cached_answer (MgLdap *dir, const char *key, gint64 now, gboolean stale)
{
  const Cached *c = g_hash_table_lookup (dir->cache, key);
  gint64 ttl;

  if (c == NULL)
    return NULL;
  ttl = stale ? dir->config->stale_ttl : c->values->len > 0 ? dir->config->cache_ttl : dir->config->negative_ttl;
  if (now - c->fetched >= ttl || (!stale && now < c->fetched))
    return NULL;
  return values_copy (c->values);
}

/**
 * mg_ldap_lookup - the certificate values the directory holds for @address: from the cache while fresh, else from
 * the directory; a cached answer younger than stale-ttl when the directory cannot be asked (it is not asked again
 * for `timeout` seconds after a failure, so that a directory that is away does not cost every message a wait).
 * Safe from any thread; a search in progress does not hold up answers from the cache.
 *
 * Returns: (transfer full) (element-type GBytes): the values (DER), empty when the directory has none; %NULL with a
 * transient %MG_KEYS_ERROR_STORE naming the directory when it cannot answer and no cached answer may stand in
 */
GPtrArray *
mg_ldap_lookup (MgLdap *dir, const char *address, GError **error)
{
  g_autofree char *key = mg_keys_address_key (address);
  gint64 now = g_get_real_time () / G_USEC_PER_SEC;
  g_autoptr (GError) local = NULL;
  GPtrArray *values, *out;
  Cached *c;

  if (key == NULL)
    return g_ptr_array_new_with_free_func ((GDestroyNotify) g_bytes_unref);
  g_mutex_lock (&dir->lock);
  if (dir->cache_path != NULL && !dir->file_read) {
    dir->file_read = TRUE;
    file_read (dir, dir->cache);
  }
  out = cached_answer (dir, key, now, FALSE);
  if (out == NULL && now < dir->down_until) {
    out = cached_answer (dir, key, now, TRUE);
    if (out == NULL)
      g_set_error_literal (&local, MG_KEYS_ERROR, MG_KEYS_ERROR_STORE, dir->last_error);
  }
  g_mutex_unlock (&dir->lock);
  if (out != NULL || local != NULL) {
    if (local != NULL)
      g_propagate_error (error, g_steal_pointer (&local));
    return out;
  }

  g_mutex_lock (&dir->conn_lock);
  values = dir_ask (dir, key, &local);
  g_mutex_unlock (&dir->conn_lock);

  g_mutex_lock (&dir->lock);
  if (values == NULL) {
    dir->down_until = now + dir->config->timeout;
    g_free (dir->last_error);
    dir->last_error = g_strdup (local->message);
    out = cached_answer (dir, key, now, TRUE); /* the directory is away: its last answer stands in, up to stale-ttl */
    g_mutex_unlock (&dir->lock);
    if (out == NULL)
      g_propagate_error (error, g_steal_pointer (&local));
    return out;
  }
  dir->down_until = 0;
  c = cached_new (now);
  for (guint i = 0; i < values->len; i++)
    g_ptr_array_add (c->values, g_bytes_ref (g_ptr_array_index (values, i)));
  g_hash_table_insert (dir->cache, g_strdup (key), c);
  if (dir->cache_path != NULL)
    file_write (dir, now);
  g_mutex_unlock (&dir->lock);
  return values;
}
