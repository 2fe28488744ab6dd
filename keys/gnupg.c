/* gnupg.c - OpenPGP key choice for a recipient address, through GPGME (RFC 9580 key semantics, GnuPG's trust model).
 *
 * One lookup is one `gpg --list-keys '<addr>'` (GnuPG's exact-address search, which folds ASCII case), then our own
 * comparison of whole address keys (mg_keys_address_key: the whole address without regard to case), so that a key is
 * never chosen by a substring of its user ID. An address with non-ASCII characters, which GnuPG would compare
 * byte for byte, is searched by its domain (or, for a non-ASCII domain, among all keys) and then compared the same way.
 * A key serves an address when the user ID for that address is neither revoked nor invalid (and valid enough under the
 * configured trust model), the key is not revoked, expired, disabled or invalid, and it has an encryption-capable
 * subkey that is none of those either. Among several usable keys, the one with the newest such subkey wins; equal times
 * fall back to the fingerprint, so the choice never depends on keyring order. Every refused candidate is kept with its
 * reason, for `mimegate keys`.
 *
 * A further source (mg_gnupg_set_source: a directory) is asked at every lookup after the home. Its keys are listed
 * from the data (gpg --import-options show-only: never imported into the home) and judged like the home's, by the
 * same rule against the home's choice; their user IDs have no GnuPG validity, so under trust-model gnupg they count as
 * unknown (refused) unless the source is declared fully valid. Encryption to such a key takes it from the block the
 * source gave: librnp loads it in memory, gpg reads it with --recipient-file. */
#include "config.h"

#include "gnupg.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include <glib/gi18n.h>
#include <gio/gio.h>
#include <glib/gstdio.h>
#include <gmime/gmime.h>
#include <gpgme.h>

#include "mg-ssl.h"
#include "rnp.h"

struct _MgGnupg {
  gpgme_ctx_t ctx; /* one context for every lookup: each new one would probe `gpg --version` again */
  char *home;
  MgTrustModel model;
  int min_validity;
  guint processes;   /* gpg runs so far, for the cost note in `mimegate keys` */
  gsize max_output;  /* of one decryption; 0: no bound */
  GHashTable *cache; /* address key → Cached: each address is looked up once per process */
  gboolean use_index;
  GHashTable *index;       /* (nullable): address → Indexed, for every address any key names; NULL: not (yet) known */
  GMappedFile *index_map;  /* (nullable): instead of @index, the current index file, whose lines are parsed only
                              for the addresses looked up (a home of 5,000 keys: ~1 MB, ~7 ms to parse whole) */
  char *stamp;             /* (nullable): the keyring stamp the index was read or built for */
  gboolean encrypt_gpg;    /* openpgp-encrypt = gpg: never librnp */
  gsize rnp_above;         /* with encrypt_gpg: content over this many bytes still goes to librnp (0: never) */
  MgRnp *rnp;              /* (nullable): this store's librnp context, made on the first encryption */
  GHashTable *rnp_refused; /* primary fingerprint → why librnp cannot use it (each key is tried once per store) */
  GPtrArray *notes;        /* (element-type utf8): what the next mg_gnupg_take_notes() hands out */
  char *source_name;       /* (nullable): mg_gnupg_set_source() */
  MgGnupgFetchFunc fetch;
  gpointer fetch_data;
  GDestroyNotify fetch_destroy;
  gboolean source_full; /* the source's user IDs count as fully valid */
  GHashTable *parsed;   /* SHA-256 of a source's key block → GPtrArray of gpgme_key_t listed from it */
};

/* Cached - one lookup's outcome */
typedef struct {
  MgPgpKey *key;
  GPtrArray *refused;
} Cached;

static void
cached_free (Cached *c)
{
  mg_pgp_key_free (c->key);
  g_ptr_array_unref (c->refused);
  g_free (c);
}

void
mg_pgp_key_free (MgPgpKey *key)
{
  if (key == NULL)
    return;
  g_free (key->fingerprint);
  g_free (key->subkey_id);
  g_free (key->subkey_fpr);
  g_free (key->algorithm);
  g_free (key->user_id);
  g_free (key->address);
  g_clear_pointer (&key->block, g_bytes_unref);
  g_free (key->source);
  g_free (key);
}

/* default_home - GnuPG's own default home: $GNUPGHOME, else ~/.gnupg (what gpgconf --list-dirs homedir says) */
static char *
default_home (void)
{
  const char *env = g_getenv ("GNUPGHOME");

  if (env != NULL && env[0] != '\0')
    return g_strdup (env);
  return g_build_filename (g_get_home_dir (), ".gnupg", NULL);
}

/* the home GPGME's global engine info names: contexts on it need no engine info of their own (each
 * gpgme_ctx_set_engine_info runs `gpg --version` again) */
static char *global_home;

/* init_gpgme - once per process, without GPGME's engine discovery: by default its first operation runs gpgconf three
 * times, `gpg --version` twice and `gpgsm --version` (about 20 ms per message). gpg is found at GPGME's built-in path
 * instead of through gpgconf, and the engines mimegate never uses (gpgsm: our S/MIME is OpenSSL; gpgconf) are
 * pointed nowhere, so nothing probes them. What remains is one `gpg --version`. Called before the first context. */
static void
init_gpgme (const char *home)
{
  static gsize once = 0;

  if (g_once_init_enter (&once)) {
    gpgme_set_global_flag ("disable-gpgconf", "1");
    gpgme_check_version (NULL);
    /* the first home used is the process's GNUPGHOME: gpg finds it there, and GPGME's engine info stays as it is
     * (gpgme_set_engine_info and gpgme_ctx_set_engine_info each run `gpg --version` once more) */
    g_setenv ("GNUPGHOME", home, TRUE);
    global_home = g_strdup (home);
    gpgme_set_engine_info (GPGME_PROTOCOL_CMS, "/nonexistent/mimegate-uses-openssl-for-smime", NULL);
    gpgme_set_engine_info (GPGME_PROTOCOL_GPGCONF, "/nonexistent/mimegate-needs-no-gpgconf", NULL);
    g_once_init_leave (&once, 1);
  }
}

static gpgme_error_t
use_home (gpgme_ctx_t ctx, const char *home)
{
  if (g_strcmp0 (home, global_home) == 0)
    return 0;
  return gpgme_ctx_set_engine_info (ctx, GPGME_PROTOCOL_OpenPGP, NULL, home);
}

/**
 * mg_gnupg_open - a GnuPG home to look keys up in.
 * @home: (nullable): the home directory; %NULL for GnuPG's default
 * @min_validity: with %MG_TRUST_GNUPG, the lowest gpgme_validity_t accepted (GPGME_VALIDITY_FULL by default)
 *
 * Returns: (transfer full): the store, or %NULL with a transient %MG_KEYS_ERROR_STORE naming the path when the home
 * is missing or cannot be read.
 */
MgGnupg *
mg_gnupg_open (const char *home, MgTrustModel model, int min_validity, GError **error)
{
  g_autofree char *dir = home ? g_strdup (home) : default_home ();
  MgGnupg *store;

  if (!g_file_test (dir, G_FILE_TEST_IS_DIR)) {
    g_set_error (error, MG_KEYS_ERROR, MG_KEYS_ERROR_STORE, _ ("GnuPG home %s does not exist"), dir);
    return NULL;
  }
  if (g_access (dir, R_OK | X_OK) != 0) {
    g_set_error (error, MG_KEYS_ERROR, MG_KEYS_ERROR_STORE, _ ("GnuPG home %s cannot be read"), dir);
    return NULL;
  }
  store = g_new0 (MgGnupg, 1);
  store->cache = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, (GDestroyNotify) cached_free);
  store->rnp_refused = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  store->notes = g_ptr_array_new_with_free_func (g_free);
  store->home = g_steal_pointer (&dir);
  store->model = model;
  store->min_validity = min_validity;
  return store;
}

const char *
mg_gnupg_home (MgGnupg *store)
{
  return store->home;
}

/* mg_gnupg_set_max_output - bounds what one decryption may yield: OpenPGP data is often compressed, and a few
 * kilobytes can inflate to gigabytes. Over the bound, mg_gnupg_decrypt() stops and fails with MG_KEYS_ERROR_LIMIT. */
void
mg_gnupg_set_max_output (MgGnupg *store, gsize max)
{
  store->max_output = max;
}

/* mg_gnupg_processes - how many gpg processes the lookups so far have run */
guint
mg_gnupg_processes (MgGnupg *store)
{
  return store->processes;
}

void
mg_gnupg_free (MgGnupg *store)
{
  if (store == NULL)
    return;
  if (store->ctx != NULL)
    gpgme_release (store->ctx);
  g_clear_pointer (&store->cache, g_hash_table_unref);
  g_clear_pointer (&store->index, g_hash_table_unref);
  g_clear_pointer (&store->index_map, g_mapped_file_unref);
  g_clear_pointer (&store->rnp, mg_rnp_free);
  g_clear_pointer (&store->rnp_refused, g_hash_table_unref);
  g_clear_pointer (&store->notes, g_ptr_array_unref);
  g_clear_pointer (&store->parsed, g_hash_table_unref);
  if (store->fetch_destroy != NULL)
    store->fetch_destroy (store->fetch_data);
  g_free (store->source_name);
  g_free (store->stamp);
  g_free (store->home);
  g_free (store);
}

/* context - the store's GPGME context on its home, local key listing only (never the network); made on first use */
static gpgme_ctx_t
context (MgGnupg *store, GError **error)
{
  gpgme_ctx_t ctx = NULL;
  gpgme_error_t err;

  if (store->ctx != NULL)
    return store->ctx;
  init_gpgme (store->home); /* first use: a message or recipient needs OpenPGP */
  err = gpgme_new (&ctx);
  if (!err)
    err = gpgme_set_protocol (ctx, GPGME_PROTOCOL_OpenPGP);
  if (!err)
    err = use_home (ctx, store->home);
  if (!err)
    err = gpgme_set_keylist_mode (ctx, GPGME_KEYLIST_MODE_LOCAL | GPGME_KEYLIST_MODE_WITH_SECRET);
  if (err) {
    g_set_error (error, MG_KEYS_ERROR, MG_KEYS_ERROR_STORE, _ ("GnuPG home %s: %s"), store->home, gpgme_strerror (err));
    gpgme_release (ctx);
    return NULL;
  }
  store->ctx = ctx;
  return ctx;
}

static const char *
validity_name (gpgme_validity_t v)
{
  switch (v) {
  case GPGME_VALIDITY_NEVER:
    return _ ("never");
  case GPGME_VALIDITY_MARGINAL:
    return _ ("marginal");
  case GPGME_VALIDITY_FULL:
    return _ ("full");
  case GPGME_VALIDITY_ULTIMATE:
    return _ ("ultimate");
  case GPGME_VALIDITY_UNDEFINED:
  case GPGME_VALIDITY_UNKNOWN:
  default:
    return _ ("unknown");
  }
}

/* matching_uid - the user ID whose address is @want (compared by mg_keys_address_key), or NULL */
static gpgme_user_id_t
matching_uid (gpgme_key_t key, const char *want)
{
  gpgme_user_id_t best = NULL;

  for (gpgme_user_id_t uid = key->uids; uid != NULL; uid = uid->next) {
    g_autofree char *have = mg_keys_address_key (uid->email);
    if (have == NULL || strcmp (have, want) != 0)
      continue;
    /* several user IDs with the address: prefer one that is not revoked */
    if (best == NULL || (best->revoked && !uid->revoked))
      best = uid;
  }
  return best;
}

/* best_subkey - the newest subkey that can encrypt and is usable; NULL with *@why set when there is none. @now
 * (not 0): also a subkey whose expiry has passed since it was listed counts as expired */
static gpgme_subkey_t
best_subkey (gpgme_key_t key, gint64 now, char **why)
{
  gpgme_subkey_t best = NULL;
  gboolean any_encrypt = FALSE, any_expired = FALSE, any_revoked = FALSE;
  gint64 last_expiry = 0;

  for (gpgme_subkey_t sk = key->subkeys; sk != NULL; sk = sk->next) {
    if (!sk->can_encrypt)
      continue;
    any_encrypt = TRUE;
    if (sk->revoked) {
      any_revoked = TRUE;
      continue;
    }
    if (sk->expired || (now != 0 && sk->expires != 0 && (gint64) sk->expires <= now)) {
      any_expired = TRUE;
      last_expiry = MAX (last_expiry, (gint64) sk->expires);
      continue;
    }
    if (sk->disabled || sk->invalid)
      continue;
    if (best == NULL || sk->timestamp > best->timestamp ||
        (sk->timestamp == best->timestamp && g_strcmp0 (sk->fpr, best->fpr) > 0))
      best = sk;
  }
  if (best == NULL) {
    if (!any_encrypt)
      *why = g_strdup (_ ("cannot encrypt (no encryption subkey)"));
    else if (any_expired) {
      g_autofree char *when = mg_keys_format_time (last_expiry);
      *why = g_strdup_printf (_ ("encryption subkey expired on %s"), when);
    } else if (any_revoked)
      *why = g_strdup (_ ("encryption subkey revoked"));
    else
      *why = g_strdup (_ ("no usable encryption subkey"));
  }
  return best;
}

/* judge - whether @key serves @want; returns the reason when it does not. @from_source: a key of the source, listed
 * from its data (no GnuPG validity: the source's declared one stands in; listed perhaps a while ago: expiry against
 * the clock) */
static char *
judge (MgGnupg *store, gpgme_key_t key, const char *want, gboolean from_source, gpgme_user_id_t *uid_out,
       gpgme_subkey_t *sub_out)
{
  gpgme_user_id_t uid = matching_uid (key, want);
  gint64 now = from_source ? g_get_real_time () / G_USEC_PER_SEC : 0;
  gpgme_validity_t validity;
  char *why = NULL;

  if (uid == NULL)
    return g_strdup (_ ("no user ID with exactly this address"));
  if (key->revoked)
    return g_strdup (_ ("revoked"));
  if (key->expired ||
      (now != 0 && key->subkeys && key->subkeys->expires != 0 && (gint64) key->subkeys->expires <= now)) {
    g_autofree char *when = mg_keys_format_time (key->subkeys ? (gint64) key->subkeys->expires : 0);
    return g_strdup_printf (_ ("expired on %s"), when);
  }
  if (key->disabled)
    return g_strdup (_ ("disabled"));
  if (key->invalid)
    return g_strdup (_ ("invalid"));
  if (uid->revoked)
    return g_strdup (_ ("the user ID for this address is revoked"));
  if (uid->invalid)
    return g_strdup (_ ("the user ID for this address is invalid"));
  validity = !from_source ? uid->validity : store->source_full ? GPGME_VALIDITY_FULL : GPGME_VALIDITY_UNKNOWN;
  if (store->model == MG_TRUST_GNUPG && (int) validity < store->min_validity)
    return g_strdup_printf (_ ("not valid enough: validity %s, trust-model gnupg needs %s"), validity_name (validity),
                            validity_name (store->min_validity));
  *sub_out = best_subkey (key, now, &why);
  if (*sub_out == NULL)
    return why;
  *uid_out = uid;
  return NULL;
}

/* better - whether candidate (@a) beats the chosen one (@b): newer encryption subkey, then fingerprint order */
static gboolean
better (gpgme_subkey_t a, gpgme_key_t ka, gpgme_subkey_t b, gpgme_key_t kb)
{
  if (a->timestamp != b->timestamp)
    return a->timestamp > b->timestamp;
  return g_strcmp0 (ka->fpr, kb->fpr) > 0;
}

static MgPgpKey *
describe (gpgme_key_t key, gpgme_subkey_t sub, gpgme_user_id_t uid)
{
  MgPgpKey *k = g_new0 (MgPgpKey, 1);
  const char *algo = gpgme_pubkey_algo_name (sub->pubkey_algo);

  k->fingerprint = g_strdup (key->fpr);
  k->subkey_id = g_strdup (sub->keyid);
  k->subkey_fpr = g_strdup (sub->fpr);
  k->algorithm = g_strdup (algo ? algo : "unknown");
  if (sub->curve != NULL && sub->curve[0] != '\0') {
    g_free (k->algorithm);
    k->algorithm = g_strdup_printf ("%s %s", algo ? algo : "unknown", sub->curve);
  }
  k->bits = sub->length;
  k->created = sub->timestamp;
  k->expires = sub->expires;
  k->user_id = g_utf8_make_valid (uid->uid ? uid->uid : "", -1);
  k->address = uid->email ? g_utf8_make_valid (uid->email, -1) : NULL;
  k->has_secret = key->secret;
  return k;
}

/* refusal_from - a refusal of @id for @why, from @source (nullable: the home) */
static MgRefusal *
refusal_from (const char *id, const char *why, const char *source)
{
  MgRefusal *r = mg_keys_refusal_new (id, why);

  r->source = g_strdup (source);
  return r;
}

/* choose - among @keys (candidates for @want), the one to encrypt to: usable (judge), then the newest encryption
 * subkey; every other candidate goes to @refused with its reason. The lookup and the address index share this. */
static MgPgpKey *
choose (MgGnupg *store, const char *want, GPtrArray *keys, gboolean from_source, GPtrArray *refused)
{
  gpgme_key_t chosen = NULL;
  gpgme_subkey_t chosen_sub = NULL;
  gpgme_user_id_t chosen_uid = NULL;

  for (guint i = 0; i < keys->len; i++) {
    gpgme_key_t key = g_ptr_array_index (keys, i);
    gpgme_user_id_t uid = NULL;
    gpgme_subkey_t sub = NULL;
    g_autofree char *why = judge (store, key, want, from_source, &uid, &sub);
    const char *source = from_source ? store->source_name : NULL;

    if (why != NULL) {
      g_ptr_array_add (refused, refusal_from (key->fpr, why, source));
      continue;
    }
    if (chosen != NULL && !better (sub, key, chosen_sub, chosen)) {
      g_ptr_array_add (refused,
                       refusal_from (key->fpr, _ ("usable, but another key has a newer encryption subkey"), source));
      continue;
    }
    if (chosen != NULL)
      g_ptr_array_add (refused,
                       refusal_from (chosen->fpr, _ ("usable, but another key has a newer encryption subkey"), source));
    chosen = key;
    chosen_sub = sub;
    chosen_uid = uid;
  }
  return chosen != NULL ? describe (chosen, chosen_sub, chosen_uid) : NULL;
}

static MgPgpKey *
key_copy (const MgPgpKey *k)
{
  MgPgpKey *c;

  if (k == NULL)
    return NULL;
  c = g_memdup2 (k, sizeof *k);
  c->fingerprint = g_strdup (k->fingerprint);
  c->subkey_id = g_strdup (k->subkey_id);
  c->subkey_fpr = g_strdup (k->subkey_fpr);
  c->algorithm = g_strdup (k->algorithm);
  c->user_id = g_strdup (k->user_id);
  c->address = g_strdup (k->address);
  c->block = k->block ? g_bytes_ref (k->block) : NULL;
  c->source = g_strdup (k->source);
  return c;
}

/* keyring_stamp - what changes whenever keys, user IDs or trust change: the keyring and trust database files' size,
 * time and inode */
static char *
keyring_stamp (const char *home)
{
  /* v3: entries are keyed by whole-address keys (local part folded too) and carry the matched address; an index of
   * another version never matches this stamp, so it is rebuilt rather than read with the wrong keys */
  GString *s = g_string_new ("mimegate-index v3");
  const char *files[] = { "pubring.kbx", "pubring.gpg", "trustdb.gpg" };

  for (gsize i = 0; i < G_N_ELEMENTS (files); i++) {
    g_autofree char *p = g_build_filename (home, files[i], NULL);
    GStatBuf st;
    if (g_stat (p, &st) == 0)
      g_string_append_printf (s, " %s:%" G_GINT64_FORMAT ":%" G_GINT64_FORMAT ".%ld:%" G_GUINT64_FORMAT, files[i],
                              (gint64) st.st_size, (gint64) st.st_mtim.tv_sec, (long) st.st_mtim.tv_nsec,
                              (guint64) st.st_ino);
  }
  return g_string_free (s, FALSE);
}

/* Indexed - the key chosen for one address when the index was built, and until when that choice holds (the earliest
 * expiry of the key and of its encryption subkey; 0: no expiry) */
typedef struct {
  MgPgpKey *key;
  gint64 valid_until;
} Indexed;

static void
indexed_free (Indexed *e)
{
  mg_pgp_key_free (e->key);
  g_free (e);
}
G_DEFINE_AUTOPTR_CLEANUP_FUNC (Indexed, indexed_free)

static void
index_write (const char *path, const char *stamp, GHashTable *index)
{
  GString *out = g_string_new (stamp);
  GHashTableIter it;
  gpointer addr, value;

  g_string_append_c (out, '\n');
  g_hash_table_iter_init (&it, index);
  while (g_hash_table_iter_next (&it, &addr, &value)) {
    const Indexed *e = value;
    if (e->key == NULL) {
      g_string_append_printf (out, "%s\t-\n", (char *) addr);
      continue;
    }
    {
      g_autofree char *uid = g_base64_encode ((const guchar *) e->key->user_id, strlen (e->key->user_id));
      const char *a = e->key->address ? e->key->address : "";
      g_autofree char *matched = g_base64_encode ((const guchar *) a, strlen (a));
      g_string_append_printf (
        out, "%s\t%s\t%s\t%s\t%s\t%u\t%" G_GINT64_FORMAT "\t%" G_GINT64_FORMAT "\t%" G_GINT64_FORMAT "\t%d\t%s\t%s\n",
        (char *) addr, e->key->fingerprint, e->key->subkey_id, e->key->subkey_fpr, e->key->algorithm, e->key->bits,
        e->key->created, e->key->expires, e->valid_until, e->key->has_secret ? 1 : 0, uid, matched);
    }
  }
  /* a home the filter cannot write to still works: the index then lives for this process only */
  g_file_set_contents_full (path, out->str, (gssize) out->len, G_FILE_SET_CONTENTS_CONSISTENT, 0600, NULL);
  g_string_free (out, TRUE);
}

/* index_open - the index file mapped when its first line is @stamp (current), else NULL */
static GMappedFile *
index_open (const char *path, const char *stamp)
{
  GMappedFile *map = g_mapped_file_new (path, FALSE, NULL);
  gsize len = strlen (stamp);

  if (map != NULL &&
      (g_mapped_file_get_length (map) <= len || memcmp (g_mapped_file_get_contents (map), stamp, len) != 0 ||
       g_mapped_file_get_contents (map)[len] != '\n'))
    g_clear_pointer (&map, g_mapped_file_unref);
  return map;
}

/* index_line - the entry of @f (one line's fields) as an Indexed; NULL when the line is damaged */
static Indexed *
index_line (char **f)
{
  guint n = g_strv_length (f);
  Indexed *e;

  if (n == 2 && strcmp (f[1], "-") == 0)
    return g_new0 (Indexed, 1);
  if (n != 12)
    return NULL;
  e = g_new0 (Indexed, 1);
  e->key = g_new0 (MgPgpKey, 1);
  e->key->fingerprint = g_strdup (f[1]);
  e->key->subkey_id = g_strdup (f[2]);
  e->key->subkey_fpr = g_strdup (f[3]);
  e->key->algorithm = g_strdup (f[4]);
  e->key->bits = (guint) g_ascii_strtoull (f[5], NULL, 10);
  e->key->created = g_ascii_strtoll (f[6], NULL, 10);
  e->key->expires = g_ascii_strtoll (f[7], NULL, 10);
  e->valid_until = g_ascii_strtoll (f[8], NULL, 10);
  e->key->has_secret = f[9][0] == '1';
  {
    gsize len = 0;
    g_autofree guchar *uid = g_base64_decode (f[10], &len);
    e->key->user_id = g_strndup ((const char *) uid, len);
  }
  {
    gsize len = 0;
    g_autofree guchar *matched = g_base64_decode (f[11], &len);
    e->key->address = len > 0 ? g_strndup ((const char *) matched, len) : NULL;
  }
  return e;
}

/* index_find - @want's entry in the mapped index @map: 1 with *@out set (NULL: not there), or 0 when its line is
 * damaged (then the index is rebuilt rather than trusted). Only that line is parsed. */
static int
index_find (GMappedFile *map, const char *want, Indexed **out)
{
  const char *text = g_mapped_file_get_contents (map);
  gsize len = g_mapped_file_get_length (map);
  g_autofree char *needle = g_strdup_printf ("\n%s\t", want);
  const char *hit = memmem (text, len, needle, strlen (needle));
  const char *line, *nl;
  g_autofree char *copy = NULL;
  g_auto (GStrv) f = NULL;

  *out = NULL;
  if (hit == NULL)
    return 1;
  line = hit + 1;
  nl = memchr (line, '\n', (gsize) (text + len - line));
  copy = g_strndup (line, nl ? (gsize) (nl - line) : (gsize) (text + len - line));
  f = g_strsplit (copy, "\t", -1);
  *out = index_line (f);
  return *out != NULL;
}

/* clear_exports - removes the public key blocks exported for an earlier keyring (HOME/mimegate-keys/FPR) */
static void
clear_exports (const char *home)
{
  g_autofree char *dir = g_build_filename (home, "mimegate-keys", NULL);
  g_autoptr (GDir) d = g_dir_open (dir, 0, NULL);
  const char *name;

  while (d != NULL && (name = g_dir_read_name (d)) != NULL) {
    g_autofree char *path = g_build_filename (dir, name, NULL);
    g_unlink (path);
  }
}

/* load_index - for every address any key in the home names, the key the lookup would choose (the same choose()):
 * HOME/mimegate-addresses when it is current (and not @rebuild: a line of it was damaged), mapped into
 * @store->index_map (then NULL is returned), else rebuilt with one listing of all keys and written back (0600,
 * replaced atomically). NULL without @store->index_map: not available (then every lookup asks gpg). */
static GHashTable *
load_index (MgGnupg *store, gboolean rebuild)
{
  g_autofree char *stamp = keyring_stamp (store->home);
  g_autofree char *path = g_build_filename (store->home, "mimegate-addresses", NULL);
  g_autoptr (GHashTable) candidates = NULL;
  GHashTable *index = NULL;
  gpgme_ctx_t ctx;
  gpgme_error_t err;
  GHashTableIter it;
  gpointer addr, keys;

  g_free (store->stamp);
  store->stamp = g_strdup (stamp);
  if (!rebuild && (store->index_map = index_open (path, stamp)) != NULL)
    return NULL; /* current: read line by line as addresses are looked up */
  clear_exports (store->home);
  if ((ctx = context (store, NULL)) == NULL)
    return NULL;
  candidates = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, (GDestroyNotify) g_ptr_array_unref);
  store->processes++;
  err = gpgme_op_keylist_start (ctx, NULL, 0);
  while (!err) {
    gpgme_key_t key = NULL;
    err = gpgme_op_keylist_next (ctx, &key);
    if (err)
      break;
    for (gpgme_user_id_t uid = key->uids; uid != NULL; uid = uid->next) {
      char *a = uid->email ? mg_keys_address_key (uid->email) : NULL;
      GPtrArray *list;
      if (a == NULL)
        continue;
      list = g_hash_table_lookup (candidates, a);
      if (list == NULL) {
        list = g_ptr_array_new_with_free_func ((GDestroyNotify) gpgme_key_unref);
        g_hash_table_insert (candidates, g_strdup (a), list);
      }
      if (list->len == 0 || g_ptr_array_index (list, list->len - 1) != key) {
        gpgme_key_ref (key);
        g_ptr_array_add (list, key);
      }
      g_free (a);
    }
    gpgme_key_unref (key);
  }
  gpgme_op_keylist_end (ctx);
  if (gpg_err_code (err) != GPG_ERR_EOF)
    return NULL;
  index = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, (GDestroyNotify) indexed_free);
  g_hash_table_iter_init (&it, candidates);
  while (g_hash_table_iter_next (&it, &addr, &keys)) {
    g_autoptr (GPtrArray) refused = g_ptr_array_new_with_free_func ((GDestroyNotify) mg_keys_refusal_free);
    Indexed *e = g_new0 (Indexed, 1);
    e->key = choose (store, addr, keys, FALSE, refused);
    for (guint i = 0; e->key != NULL && i < ((GPtrArray *) keys)->len; i++) {
      gpgme_key_t k = g_ptr_array_index ((GPtrArray *) keys, i);
      if (strcmp (k->fpr, e->key->fingerprint) == 0 && k->subkeys != NULL && k->subkeys->expires > 0)
        e->valid_until = k->subkeys->expires;
    }
    if (e->key != NULL && e->key->expires > 0 && (e->valid_until == 0 || e->key->expires < e->valid_until))
      e->valid_until = e->key->expires;
    g_hash_table_insert (index, g_strdup (addr), e);
  }
  index_write (path, stamp, index);
  return index;
}

/**
 * mg_gnupg_set_address_index - lets lookups answer from an index instead of asking gpg: one listing of all keys,
 * judged exactly as a lookup judges them, kept in HOME/mimegate-addresses and rebuilt whenever the keyring or the
 * trust database changes; a choice whose key or subkey has expired since is looked up again. A recipient then costs
 * no gpg process for the lookup (with or without a key); refusal lists stay empty (`mimegate keys` does not use the
 * index, so it still explains every candidate).
 */
void
mg_gnupg_set_address_index (MgGnupg *store, gboolean use)
{
  store->use_index = use;
}

static MgPgpKey *lookup_uncached (MgGnupg *store, const char *address, GPtrArray *refused, GError **error);

/* search_pattern - what to ask gpg for the candidates of the address key @want: `<want>` when it is ASCII (GnuPG's
 * exact-address search folds ASCII case, and an ASCII key is matched by ASCII addresses only); else `@domain` (GnuPG's
 * substring search on mail addresses, ASCII case folded) when the domain is ASCII; else NULL (every key). Candidates
 * are only candidates: matching_uid() decides by whole address keys. */
static char *
search_pattern (const char *want)
{
  const char *domain = strrchr (want, '@');

  if (g_str_is_ascii (want))
    return g_strdup_printf ("<%s>", want);
  if (domain != NULL && g_str_is_ascii (domain))
    return g_strdup (domain);
  return NULL;
}

/* source_keys - (transfer none): the keys in one key block of the source, listed from the data without importing
 * it (one gpg run per distinct block and store); %NULL with a transient @error when gpg cannot be run */
static GPtrArray *
source_keys (MgGnupg *store, GBytes *block, GError **error)
{
  g_autofree char *sum = g_compute_checksum_for_bytes (G_CHECKSUM_SHA256, block);
  GPtrArray *keys = store->parsed ? g_hash_table_lookup (store->parsed, sum) : NULL;
  gpgme_ctx_t ctx;
  gpgme_data_t data = NULL;
  gpgme_error_t err;

  if (keys != NULL)
    return keys;
  if ((ctx = context (store, error)) == NULL)
    return NULL;
  if (store->parsed == NULL || g_hash_table_size (store->parsed) > 1024) {
    g_clear_pointer (&store->parsed, g_hash_table_unref);
    store->parsed = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, (GDestroyNotify) g_ptr_array_unref);
  }
  keys = g_ptr_array_new_with_free_func ((GDestroyNotify) gpgme_key_unref);
  store->processes++;
  err = gpgme_data_new_from_mem (&data, g_bytes_get_data (block, NULL), g_bytes_get_size (block), 0);
  if (!err)
    err = gpgme_op_keylist_from_data_start (ctx, data, 0);
  if (err) {
    /* gpg could not be started on it: transient, tried again with the next lookup */
    gpgme_data_release (data);
    g_ptr_array_unref (keys);
    g_set_error (error, MG_KEYS_ERROR, MG_KEYS_ERROR_STORE, _ ("GnuPG cannot list the keys of %s: %s"),
                 store->source_name, gpgme_strerror (err));
    return NULL;
  }
  for (;;) {
    gpgme_key_t key = NULL;
    if (gpgme_op_keylist_next (ctx, &key) != 0)
      break; /* the end, or data gpg cannot read further */
    g_ptr_array_add (keys, key);
  }
  gpgme_op_keylist_end (ctx);
  gpgme_data_release (data);
  /* data that holds no key (or is damaged) is an answer too: no candidate */
  g_hash_table_insert (store->parsed, g_steal_pointer (&sum), keys);
  return keys;
}

/* lookup_source - @home (the home's choice, nullable) against the source's keys for @address, each judged like one of
 * the home by the same rule (usable, then the newest encryption subkey); the others go to @refused with their source.
 * Returns: (transfer full) (nullable): the choice; %NULL with @error when the source cannot answer */
static MgPgpKey *
lookup_source (MgGnupg *store, const char *address, const char *want, const MgPgpKey *home, GPtrArray *refused,
               GError **error)
{
  g_autoptr (GPtrArray) values = store->fetch (address, store->fetch_data, error);
  g_autoptr (GPtrArray) cands = g_ptr_array_new_with_free_func ((GDestroyNotify) gpgme_key_unref);
  g_autoptr (GPtrArray) blocks = g_ptr_array_new ();
  g_autoptr (MgPgpKey) found = NULL;

  if (values == NULL)
    return NULL;
  for (guint i = 0; i < values->len; i++) {
    GBytes *block = g_ptr_array_index (values, i);
    GPtrArray *keys = source_keys (store, block, error);
    if (keys == NULL)
      return NULL;
    if (keys->len > 1) {
      /* encryption names the block: one value, one key (a keyring in one value is not split up) */
      for (guint k = 0; k < keys->len; k++)
        g_ptr_array_add (refused, refusal_from (((gpgme_key_t) g_ptr_array_index (keys, k))->fpr,
                                                _ ("the directory's value holds several keys; one per value is needed"),
                                                store->source_name));
      continue;
    }
    for (guint k = 0; k < keys->len; k++) {
      gpgme_key_t key = g_ptr_array_index (keys, k);
      gboolean seen = home != NULL && g_strcmp0 (home->fingerprint, key->fpr) == 0;
      for (guint j = 0; j < cands->len && !seen; j++)
        seen = g_strcmp0 (((gpgme_key_t) g_ptr_array_index (cands, j))->fpr, key->fpr) == 0;
      if (seen)
        continue; /* in the home too, or twice in the directory: one candidate */
      gpgme_key_ref (key);
      g_ptr_array_add (cands, key);
      g_ptr_array_add (blocks, block);
    }
  }
  found = choose (store, want, cands, TRUE, refused);
  if (found != NULL) {
    for (guint j = 0; j < cands->len; j++)
      if (g_strcmp0 (((gpgme_key_t) g_ptr_array_index (cands, j))->fpr, found->fingerprint) == 0)
        found->block = g_bytes_ref (g_ptr_array_index (blocks, j));
    found->source = g_strdup (store->source_name);
  }
  if (found == NULL || home == NULL)
    return found ? g_steal_pointer (&found) : key_copy (home);
  /* one rule across the home and the source: the newer encryption subkey, then the greater fingerprint */
  if (found->created > home->created ||
      (found->created == home->created && g_strcmp0 (found->fingerprint, home->fingerprint) > 0)) {
    g_ptr_array_add (
      refused, refusal_from (home->fingerprint, _ ("usable, but another key has a newer encryption subkey"), NULL));
    return g_steal_pointer (&found);
  }
  g_ptr_array_add (
    refused,
    refusal_from (found->fingerprint, _ ("usable, but another key has a newer encryption subkey"), store->source_name));
  return key_copy (home);
}

/**
 * mg_gnupg_set_source - a further source of recipients' OpenPGP keys, asked at every lookup after the home (it keeps
 * its own cache). Its keys are never imported into the home.
 * @name: how `mimegate keys` names the source ("ldap://host/base")
 * @data: (transfer full): for @fetch; @destroy frees it with the store
 * @full_validity: under trust-model gnupg its user IDs count as fully valid (else as of unknown validity: refused)
 */
void
mg_gnupg_set_source (MgGnupg *store, const char *name, MgGnupgFetchFunc fetch, gpointer data, GDestroyNotify destroy,
                     gboolean full_validity)
{
  if (store->fetch_destroy != NULL)
    store->fetch_destroy (store->fetch_data);
  g_free (store->source_name);
  store->source_name = g_strdup (name);
  store->fetch = fetch;
  store->fetch_data = data;
  store->fetch_destroy = destroy;
  store->source_full = full_validity;
}

/**
 * mg_gnupg_lookup - the OpenPGP key to encrypt to @address.
 * @refused: (element-type MgRefusal): receives every candidate not chosen, with its reason
 *
 * Returns: (transfer full) (nullable): the chosen key, or %NULL when none is usable (then @error is not set) or the
 * home cannot be read (then @error is a transient %MG_KEYS_ERROR_STORE). Each address is looked up once per process.
 */
MgPgpKey *
mg_gnupg_lookup (MgGnupg *store, const char *address, GPtrArray *refused, GError **error)
{
  g_autofree char *want = mg_keys_address_key (address);
  Cached *c;

  if (want == NULL)
    return NULL;
  c = g_hash_table_lookup (store->cache, want);
  if (c == NULL) {
    GError *local = NULL;
    c = g_new0 (Cached, 1);
    c->refused = g_ptr_array_new_with_free_func ((GDestroyNotify) mg_keys_refusal_free);
    const Indexed *e = NULL;
    g_autoptr (Indexed) mapped = NULL;
    gboolean known;
    if (store->use_index && store->index == NULL && store->index_map == NULL)
      store->index = load_index (store, FALSE);
    if (store->index_map != NULL && !index_find (store->index_map, want, &mapped)) {
      g_clear_pointer (&store->index_map, g_mapped_file_unref); /* damaged: rebuilt rather than trusted */
      store->index = load_index (store, TRUE);
    }
    if (store->index_map != NULL) {
      e = mapped;
      known = TRUE;
    } else {
      e = store->index ? g_hash_table_lookup (store->index, want) : NULL;
      known = store->index != NULL;
    }
    if (known && e == NULL)
      ; /* no key in the home names this address */
    else if (e != NULL &&
             (e->key == NULL || e->valid_until == 0 || g_get_real_time () / G_USEC_PER_SEC < e->valid_until))
      c->key = key_copy (e->key); /* chosen when the index was built, and still valid */
    else
      c->key = lookup_uncached (store, want, c->refused, &local);
    if (local != NULL) {
      cached_free (c);
      g_propagate_error (error, local);
      return NULL;
    }
    g_hash_table_insert (store->cache, g_strdup (want), c);
  }
  if (store->fetch != NULL) {
    /* the source keeps its own cache (with its TTLs): asked every time, like the X.509 store's */
    g_autoptr (GPtrArray) more = g_ptr_array_new_with_free_func ((GDestroyNotify) mg_keys_refusal_free);
    GError *local = NULL;
    MgPgpKey *chosen = lookup_source (store, address, want, c->key, more, &local);
    if (local != NULL) {
      g_propagate_error (error, local);
      return NULL;
    }
    for (guint i = 0; refused != NULL && i < c->refused->len; i++) {
      const MgRefusal *r = g_ptr_array_index (c->refused, i);
      g_ptr_array_add (refused, mg_keys_refusal_new (r->id, r->reason));
    }
    if (refused != NULL)
      g_ptr_array_extend_and_steal (refused, g_steal_pointer (&more));
    return chosen;
  }
  for (guint i = 0; refused != NULL && i < c->refused->len; i++) {
    const MgRefusal *r = g_ptr_array_index (c->refused, i);
    g_ptr_array_add (refused, mg_keys_refusal_new (r->id, r->reason));
  }
  return key_copy (c->key);
}

static MgPgpKey *
lookup_uncached (MgGnupg *store, const char *address, GPtrArray *refused, GError **error)
{
  gpgme_ctx_t ctx = NULL;
  g_autofree char *want = mg_keys_address_key (address);
  g_autofree char *pattern = NULL;
  g_autoptr (GPtrArray) keys = g_ptr_array_new_with_free_func ((GDestroyNotify) gpgme_key_unref);
  gpgme_error_t err;

  if (want == NULL)
    return NULL;
  ctx = context (store, error);
  if (ctx == NULL)
    return NULL;
  pattern = search_pattern (want);
  store->processes++;
  err = gpgme_op_keylist_start (ctx, pattern, 0);
  while (!err) {
    gpgme_key_t key = NULL;
    err = gpgme_op_keylist_next (ctx, &key);
    if (err)
      break;
    /* a domain-wide or full listing brings keys of other addresses: they are not candidates for this one */
    if (pattern != NULL && pattern[0] == '<')
      g_ptr_array_add (keys, key);
    else if (matching_uid (key, want) != NULL)
      g_ptr_array_add (keys, key);
    else
      gpgme_key_unref (key);
  }
  gpgme_op_keylist_end (ctx);
  if (gpg_err_code (err) != GPG_ERR_EOF) {
    g_set_error (error, MG_KEYS_ERROR, MG_KEYS_ERROR_STORE, _ ("GnuPG home %s: cannot list keys: %s"), store->home,
                 gpgme_strerror (err));
    return NULL;
  }
  return choose (store, want, keys, FALSE, refused);
}

/**
 * mg_gnupg_secret_keys - the keys whose secret part is in the home: what the gateway can decrypt with.
 *
 * Returns: (transfer full) (element-type MgPgpKey) (nullable): one entry per secret key (its newest usable encryption
 * subkey; keys without one are left out), or %NULL with a transient error.
 */
GPtrArray *
mg_gnupg_secret_keys (MgGnupg *store, GError **error)
{
  gpgme_ctx_t ctx = context (store, error);
  GPtrArray *out;
  gpgme_error_t err;

  if (ctx == NULL)
    return NULL;
  out = g_ptr_array_new_with_free_func ((GDestroyNotify) mg_pgp_key_free);
  store->processes++;
  err = gpgme_op_keylist_start (ctx, NULL, 1);
  while (!err) {
    gpgme_key_t key = NULL;
    err = gpgme_op_keylist_next (ctx, &key);
    if (err)
      break;
    {
      g_autofree char *why = NULL;
      gpgme_subkey_t sub = best_subkey (key, 0, &why);
      if (sub != NULL && key->uids != NULL)
        g_ptr_array_add (out, describe (key, sub, key->uids));
    }
    gpgme_key_unref (key);
  }
  gpgme_op_keylist_end (ctx);
  if (gpg_err_code (err) != GPG_ERR_EOF) {
    g_set_error (error, MG_KEYS_ERROR, MG_KEYS_ERROR_STORE, _ ("GnuPG home %s: cannot list secret keys: %s"),
                 store->home, gpgme_strerror (err));
    g_ptr_array_unref (out);
    return NULL;
  }
  return out;
}

/* key_end - when @key stops being usable for @secret's work (public: encrypting to it; secret: decrypting or
 * signing with it): the primary key's end, or the last end of its subkeys that can do that work, whichever is
 * sooner; 0 when never. Revoked or disabled subkeys count for nothing. */
static gint64
key_end (gpgme_key_t key, gboolean secret)
{
  gint64 primary = key->subkeys ? key->subkeys->expires : 0;
  gint64 last = -1; /* -1: no subkey for the work; 0: one that never ends */

  for (gpgme_subkey_t sub = key->subkeys; sub != NULL; sub = sub->next) {
    if (sub->revoked || sub->disabled || sub->invalid || !(sub->can_encrypt || (secret && sub->can_sign)))
      continue;
    if (sub->expires == 0)
      last = 0;
    else if (last != 0 && sub->expires > last)
      last = sub->expires;
  }
  if (last <= 0)
    return primary;
  return primary == 0 || last < primary ? last : primary;
}

/* list_expiries - one MgExpiry per key of the home (secret keys with @secret) that ends at all */
static gboolean
list_expiries (MgGnupg *store, gpgme_ctx_t ctx, gboolean secret, GPtrArray *out, GError **error)
{
  gpgme_error_t err;

  store->processes++;
  err = gpgme_op_keylist_start (ctx, NULL, secret ? 1 : 0);
  while (!err) {
    gpgme_key_t key = NULL;
    gint64 end;
    err = gpgme_op_keylist_next (ctx, &key);
    if (err)
      break;
    end = key->revoked || key->subkeys == NULL ? 0 : key_end (key, secret);
    if (end > 0) {
      MgExpiry *e = mg_expiry_new (secret ? "openpgp-secret" : "openpgp", store->home, key->subkeys->fpr, NULL, end);
      for (gpgme_user_id_t uid = key->uids; uid != NULL; uid = uid->next)
        if (!uid->revoked && uid->email != NULL && uid->email[0] != '\0')
          g_ptr_array_add (e->addresses, g_strdup (uid->email));
      g_ptr_array_add (out, e);
    }
    gpgme_key_unref (key);
  }
  gpgme_op_keylist_end (ctx);
  if (gpg_err_code (err) != GPG_ERR_EOF) {
    g_set_error (error, MG_KEYS_ERROR, MG_KEYS_ERROR_STORE,
                 secret ? _ ("GnuPG home %s: cannot list secret keys: %s") : _ ("GnuPG home %s: cannot list keys: %s"),
                 store->home, gpgme_strerror (err));
    return FALSE;
  }
  return TRUE;
}

/**
 * mg_gnupg_expiries - adds to @out (element-type MgExpiry) every public key of the home, and every secret key the
 * gateway holds there, that ends at all (expired ones too): for `mimegate keys --expiring`.
 *
 * Returns: %FALSE with a transient %MG_KEYS_ERROR_STORE when the home cannot be listed
 */
gboolean
mg_gnupg_expiries (MgGnupg *store, GPtrArray *out, GError **error)
{
  gpgme_ctx_t ctx = context (store, error);

  return ctx != NULL && list_expiries (store, ctx, FALSE, out, error) && list_expiries (store, ctx, TRUE, out, error);
}

static gpgme_error_t
no_passphrase_cb (void *hook, const char *uid_hint, const char *info, int prev_was_bad, int fd)
{
  /* the gateway's keys have no passphrase; a key that wants one is not usable here (never hang on a pinentry) */
  return gpg_error (GPG_ERR_CANCELED);
}

/* data_bytes - the contents of a GPGME memory data object */
static GBytes *
data_bytes (gpgme_data_t data)
{
  size_t len = 0;
  char *buf = gpgme_data_release_and_get_mem (data, &len);
  GBytes *out = g_bytes_new (buf ? buf : "", len);

  if (buf != NULL) {
    memset (buf, 0, len); /* may be clear text */
    gpgme_free (buf);
  }
  return out;
}

/* crypto_context - a fresh context for one encryption or decryption (armored output, loopback pinentry) */
static gpgme_ctx_t
crypto_context (MgGnupg *store, GError **error)
{
  gpgme_ctx_t ctx = NULL;
  gpgme_error_t err;

  init_gpgme (store->home);
  err = gpgme_new (&ctx);
  if (!err)
    err = gpgme_set_protocol (ctx, GPGME_PROTOCOL_OpenPGP);
  if (!err)
    err = use_home (ctx, store->home);
  if (!err)
    err = gpgme_set_pinentry_mode (ctx, GPGME_PINENTRY_MODE_LOOPBACK);
  if (err) {
    g_set_error (error, MG_KEYS_ERROR, MG_KEYS_ERROR_STORE, _ ("GnuPG home %s: %s"), store->home, gpgme_strerror (err));
    gpgme_release (ctx);
    return NULL;
  }
  gpgme_set_armor (ctx, 1);
  gpgme_set_passphrase_cb (ctx, no_passphrase_cb, NULL);
  store->processes++;
  return ctx;
}

/* add_signer - @fpr as the context's only signer */
static gboolean
add_signer (MgGnupg *store, gpgme_ctx_t ctx, const char *fpr, GError **error)
{
  gpgme_key_t key = NULL;
  gpgme_error_t err;

  store->processes++;
  err = gpgme_get_key (ctx, fpr, &key, 1);
  if (!err)
    err = gpgme_signers_add (ctx, key);
  gpgme_key_unref (key);
  if (err) {
    g_set_error (error, MG_KEYS_ERROR, MG_KEYS_ERROR_STORE, _ ("GnuPG home %s: the signing key %s cannot be used: %s"),
                 store->home, fpr, gpgme_strerror (err));
    return FALSE;
  }
  return TRUE;
}

/* key_file_remove - a file key_files() wrote is removed, and its name freed */
static void
key_file_remove (gpointer path)
{
  if (path != NULL && ((char *) path)[0] != '\0')
    g_unlink (path);
  g_free (path);
}

/* key_files - for each of @keys, into @files: the path of a private temporary file (0600) holding its directory block,
 * or "" for a key of the home; FALSE with a transient @error when one cannot be written */
static gboolean
key_files (GPtrArray *keys, GPtrArray *files, GError **error)
{
  for (guint i = 0; i < keys->len; i++) {
    const MgPgpKey *k = g_ptr_array_index (keys, i);
    g_autoptr (GError) local = NULL;
    char *path = NULL;
    int fd;
    if (k->block == NULL) {
      g_ptr_array_add (files, g_strdup (""));
      continue;
    }
    fd = g_file_open_tmp ("mimegate-key-XXXXXX", &path, &local); /* mode 0600 */
    if (fd >= 0) {
      gsize len = 0;
      const char *data = g_bytes_get_data (k->block, &len);
      close (fd);
      g_ptr_array_add (files, path);
      if (g_file_set_contents_full (path, data, (gssize) len, G_FILE_SET_CONTENTS_NONE, 0600, &local))
        continue;
    }
    g_set_error (error, MG_KEYS_ERROR, MG_KEYS_ERROR_STORE, _ ("GnuPG cannot encrypt: %s"), local->message);
    return FALSE;
  }
  return TRUE;
}

/* recipient_lines - GPGME's recipient list for @keys (gpgme_op_encrypt_ext): "SUBKEY!" for a key of the home, and
 * for a directory's key "--file PATH" (its block in a 0600 file, kept in @files): never imported. FALSE with a
 * transient @error when such a file cannot be written. */
static gboolean
recipient_lines (GPtrArray *keys, GPtrArray *files, GString *recipients, GError **error)
{
  for (guint i = 0; i < keys->len; i++) {
    const MgPgpKey *k = g_ptr_array_index (keys, i);
    if (k->block != NULL) {
      if (files->len == 0 && !key_files (keys, files, error))
        return FALSE;
      g_string_append_printf (recipients, "--file\n%s\n--no-file\n", (char *) g_ptr_array_index (files, i));
    } else
      g_string_append_printf (recipients, "%s!\n", k->subkey_fpr);
  }
  return TRUE;
}

/* encrypt_direct - `gpg --encrypt` run by us, not through GPGME: the keys are chosen already (the index or a lookup),
 * so nothing but the encryption is asked of gpg, and GPGME's start-up probe (`gpg --version` on its first operation)
 * is not paid on the path most mail takes. Content over 1 MiB is not compressed: mail attachments that big are
 * compressed formats already, and gpg's compression would be the slowest step. */
static GBytes *
encrypt_direct (MgGnupg *store, GBytes *plain, GPtrArray *keys, gboolean armor, GError **error)
{
  g_autoptr (GPtrArray) files = g_ptr_array_new_with_free_func (key_file_remove);
  g_autofree char *gpg = g_find_program_in_path ("gpg");
  g_autoptr (GPtrArray) argv = g_ptr_array_new_with_free_func (g_free);
  g_autoptr (GSubprocess) proc = NULL;
  g_autoptr (GBytes) out = NULL, err = NULL;
  g_autoptr (GError) local = NULL;

  g_ptr_array_add (argv, g_strdup (gpg ? gpg : "/usr/bin/gpg"));
  g_ptr_array_add (argv, g_strdup ("--homedir"));
  g_ptr_array_add (argv, g_strdup (store->home));
  g_ptr_array_add (argv, g_strdup ("--batch"));
  g_ptr_array_add (argv, g_strdup ("--no-tty"));
  g_ptr_array_add (argv, g_strdup ("--quiet"));
  g_ptr_array_add (argv, g_strdup ("--trust-model"));
  g_ptr_array_add (argv, g_strdup ("always")); /* judged by mimegate: see mg_gnupg_lookup() */
  g_ptr_array_add (argv, g_strdup ("--no-encrypt-to"));
  g_ptr_array_add (argv, g_strdup (armor ? "--armor" : "--no-armor")); /* whatever gpg.conf says */
  if (g_bytes_get_size (plain) > 1024 * 1024)
    g_ptr_array_add (argv, g_strdup ("--compress-level=0"));
  for (guint i = 0; i < keys->len; i++) {
    const MgPgpKey *k = g_ptr_array_index (keys, i);
    if (k->block != NULL) {
      /* a directory's key: from its block, never imported (gpg takes the file's key as valid) */
      if (files->len == 0 && !key_files (keys, files, error))
        return NULL;
      g_ptr_array_add (argv, g_strdup ("--recipient-file"));
      g_ptr_array_add (argv, g_strdup (g_ptr_array_index (files, i)));
      continue;
    }
    g_ptr_array_add (argv, g_strdup ("--recipient"));
    g_ptr_array_add (argv, g_strdup_printf ("%s!", k->subkey_fpr)); /* exactly this subkey */
  }
  g_ptr_array_add (argv, g_strdup ("--output"));
  g_ptr_array_add (argv, g_strdup ("-"));
  g_ptr_array_add (argv, g_strdup ("--encrypt"));
  g_ptr_array_add (argv, NULL);
  store->processes++;
  proc = g_subprocess_newv (
    (const char *const *) argv->pdata,
    G_SUBPROCESS_FLAGS_STDIN_PIPE | G_SUBPROCESS_FLAGS_STDOUT_PIPE | G_SUBPROCESS_FLAGS_STDERR_PIPE, &local);
  if (proc == NULL || !g_subprocess_communicate (proc, plain, NULL, &out, &err, &local) ||
      !g_subprocess_get_if_exited (proc) || g_subprocess_get_exit_status (proc) != 0 || out == NULL ||
      g_bytes_get_size (out) == 0) {
    g_autofree char *why =
      local ? g_strdup (local->message)
            : g_strndup (err ? g_bytes_get_data (err, NULL) : "", err ? MIN (g_bytes_get_size (err), 200) : 0);
    g_strdelimit (why, "\r\n", ' ');
    g_set_error (error, MG_KEYS_ERROR, MG_KEYS_ERROR_STORE, _ ("GnuPG cannot encrypt: %s"), g_strstrip (why));
    return NULL;
  }
  return g_steal_pointer (&out);
}

/* export_path - where the public key block of @fpr, exported for the keyring the address index was built from, is
 * kept: HOME/mimegate-keys/FPR (0600 in a 0700 directory), its first line the keyring stamp */
static char *
export_path (MgGnupg *store, const char *fpr)
{
  return g_build_filename (store->home, "mimegate-keys", fpr, NULL);
}

/* export_key - the public key block of the key @fpr (GPGME export-minimal: the key, its user IDs and subkeys with
 * their self-signatures only). With the address index, read from beside it when it was exported for the current
 * keyring, else exported (one gpg process) and written there; so a process that finds the index warm runs no gpg for
 * a key that any process has encrypted to since the keyring last changed. */
static GBytes *
export_key (MgGnupg *store, const char *fpr, GError **error)
{
  g_autofree char *path = store->stamp ? export_path (store, fpr) : NULL;
  g_autofree char *text = NULL;
  gsize len = 0, stamp_len = store->stamp ? strlen (store->stamp) : 0;
  gpgme_ctx_t ctx;
  gpgme_data_t data = NULL;
  gpgme_error_t err;
  GBytes *block;

  if (path != NULL && g_file_get_contents (path, &text, &len, NULL) && len > stamp_len + 1 &&
      memcmp (text, store->stamp, stamp_len) == 0 && text[stamp_len] == '\n')
    return g_bytes_new (text + stamp_len + 1, len - stamp_len - 1);
  if ((ctx = context (store, error)) == NULL)
    return NULL;
  store->processes++;
  err = gpgme_data_new (&data);
  if (!err)
    err = gpgme_op_export (ctx, fpr, GPGME_EXPORT_MODE_MINIMAL, data);
  if (err) {
    gpgme_data_release (data);
    g_set_error (error, MG_KEYS_ERROR, MG_KEYS_ERROR_STORE, _ ("GnuPG home %s: cannot export key %s: %s"), store->home,
                 fpr, gpgme_strerror (err));
    return NULL;
  }
  block = data_bytes (data);
  if (path != NULL && g_bytes_get_size (block) > 0) {
    g_autofree char *dir = g_path_get_dirname (path);
    g_autoptr (GByteArray) file = g_byte_array_new ();
    g_byte_array_append (file, (const guint8 *) store->stamp, (guint) stamp_len);
    g_byte_array_append (file, (const guint8 *) "\n", 1);
    g_byte_array_append (file, g_bytes_get_data (block, NULL), (guint) g_bytes_get_size (block));
    /* a home the filter cannot write to still works: the export then serves this process only */
    if (g_mkdir_with_parents (dir, 0700) == 0)
      g_file_set_contents_full (path, (const char *) file->data, (gssize) file->len, G_FILE_SET_CONTENTS_CONSISTENT,
                                0600, NULL);
  }
  return block;
}

/* rnp_ready - the keys of @keys are in the store's librnp context (each imported once per store); NULL, or why
 * librnp cannot be used for them. A key librnp rejects is remembered with its reason, which becomes a note once. */
static char *
rnp_ready (MgGnupg *store, GPtrArray *keys, gboolean *noted)
{
  g_autoptr (GError) local = NULL;

  *noted = FALSE;
  if (store->rnp == NULL && (store->rnp = mg_rnp_new (&local)) == NULL)
    return g_strdup (local->message);
  for (guint i = 0; i < keys->len; i++) {
    const MgPgpKey *k = g_ptr_array_index (keys, i);
    const char *refused = g_hash_table_lookup (store->rnp_refused, k->fingerprint);
    g_autoptr (GBytes) block = NULL;
    if (refused != NULL) {
      *noted = TRUE;
      return g_strdup_printf (_ ("key %s: %s"), k->fingerprint, refused);
    }
    if (mg_rnp_holds (store->rnp, k->fingerprint))
      continue;
    block = k->block ? g_bytes_ref (k->block) : export_key (store, k->fingerprint, &local);
    if (block == NULL)
      return g_strdup (local->message); /* transient: tried again with the next message */
    if (!mg_rnp_import (store->rnp, k->fingerprint, k->subkey_fpr, block, &local)) {
      g_hash_table_insert (store->rnp_refused, g_strdup (k->fingerprint), g_strdup (local->message));
      g_ptr_array_add (store->notes, g_strdup_printf (_ ("encryption to OpenPGP key %s runs gpg, not librnp: %s"),
                                                      k->fingerprint, local->message));
      *noted = TRUE;
      return g_strdup_printf (_ ("key %s: %s"), k->fingerprint, local->message);
    }
  }
  return NULL;
}

/* key_fingerprints - (element-type utf8) (transfer container): @keys' primary fingerprints (or with @subkeys, the
 * chosen subkeys'), %NULL-terminated, borrowed from the keys: what mg_rnp_encrypt() takes */
static GPtrArray *
key_fingerprints (GPtrArray *keys, gboolean subkeys)
{
  GPtrArray *out = g_ptr_array_sized_new (keys->len + 1);

  for (guint i = 0; i < keys->len; i++) {
    const MgPgpKey *k = g_ptr_array_index (keys, i);
    g_ptr_array_add (out, subkeys ? k->subkey_fpr : k->fingerprint);
  }
  g_ptr_array_add (out, NULL);
  return out;
}

/* encrypt_rnp - @plain encrypted in-process by librnp to the subkeys of @keys; NULL when librnp cannot do it (the
 * caller then runs gpg): a key it rejects is noted once per store, any other failure once per message */
static GBytes *
encrypt_rnp (MgGnupg *store, GBytes *plain, GPtrArray *keys, gboolean armor)
{
  gboolean noted = FALSE;
  g_autofree char *why = rnp_ready (store, keys, &noted);
  g_autoptr (GPtrArray) fprs = NULL, subs = NULL;
  g_autoptr (GError) local = NULL;
  GBytes *out;

  if (why != NULL) {
    if (!noted) /* not a key librnp refused (noted once): noted each time */
      g_ptr_array_add (store->notes, g_strdup_printf (_ ("OpenPGP encryption ran gpg, not librnp: %s"), why));
    return NULL;
  }
  fprs = key_fingerprints (keys, FALSE);
  subs = key_fingerprints (keys, TRUE);
  out = mg_rnp_encrypt (store->rnp, plain, (const char *const *) fprs->pdata, (const char *const *) subs->pdata, armor,
                        NULL, &local);
  if (out == NULL)
    g_ptr_array_add (store->notes, g_strdup_printf (_ ("OpenPGP encryption ran gpg, not librnp: %s"), local->message));
  return out;
}

/**
 * mg_gnupg_set_encrypt_with_gpg - `openpgp-encrypt = gpg`: every encryption runs gpg. By default (auto) encryption
 * without a signature runs in-process in librnp to the same subkeys, and falls back to gpg for a message whose keys
 * librnp cannot use (noted, see mg_gnupg_take_notes()).
 */
void
mg_gnupg_set_encrypt_with_gpg (MgGnupg *store, gboolean gpg)
{
  store->encrypt_gpg = gpg;
}

/**
 * mg_gnupg_set_rnp_above - with mg_gnupg_set_encrypt_with_gpg() on because loading librnp costs a one-shot process
 * more than the gpg run it replaces (openpgp-encrypt = auto in the pipe), content over @bytes still goes to librnp
 * (0, the default: never): for large content gpg's own armor encoder is the dearest step (measured on a 27 MB entity:
 * gpg armored about 320 ms of CPU, librnp about 155 ms; loading librnp and importing a key about 10 ms).
 * openpgp-encrypt = gpg must leave it at 0.
 */
void
mg_gnupg_set_rnp_above (MgGnupg *store, gsize bytes)
{
  store->rnp_above = bytes;
}

/**
 * mg_gnupg_take_notes - what an admin should know about the encryptions since the last call (a key librnp cannot
 * use, once per store; librnp failing, each time), for the message's log record. Never key material.
 *
 * Returns: (transfer full) (element-type utf8) (nullable): the notes, or %NULL when there are none
 */
GPtrArray *
mg_gnupg_take_notes (MgGnupg *store)
{
  GPtrArray *out;

  if (store->notes->len == 0)
    return NULL;
  out = g_steal_pointer (&store->notes);
  store->notes = g_ptr_array_new_with_free_func (g_free);
  return out;
}

/**
 * mg_gnupg_encrypt - encrypts @plain to exactly the encryption subkeys of @keys.
 * @armor: ASCII armor (PGP/MIME, inline text) or binary packets (attachments as NAME.pgp)
 * @keys: (element-type MgPgpKey): keys chosen by mg_gnupg_lookup() (validated there, so gpg is told to trust them)
 * @signer: (nullable): fingerprint of a secret key (mg_gnupg_signer()) that also signs, in the same OpenPGP message
 *
 * Without @signer, and unless mg_gnupg_set_encrypt_with_gpg() says gpg (for content over mg_gnupg_set_rnp_above()
 * even then), librnp encrypts in-process (SEIPD v1 with MDC, AES-256); a message whose keys librnp cannot use goes
 * through gpg, with a note (mg_gnupg_take_notes()).
 *
 * Returns: (transfer full): the armored message, or %NULL with a transient error.
 */
GBytes *
mg_gnupg_encrypt (MgGnupg *store, GBytes *plain, GPtrArray *keys, const char *signer, gboolean armor, GError **error)
{
  g_autoptr (MgGpgmeCtx) ctx = NULL;
  g_autoptr (GString) recipients = g_string_new (NULL);
  g_autoptr (GPtrArray) files = g_ptr_array_new_with_free_func (key_file_remove);
  gpgme_data_t in = NULL, out = NULL;
  gpgme_error_t err;

  if (signer == NULL && keys->len > 0 &&
      (!store->encrypt_gpg || (store->rnp_above != 0 && g_bytes_get_size (plain) > store->rnp_above))) {
    GBytes *done = encrypt_rnp (store, plain, keys, armor);
    if (done != NULL)
      return done;
  }
  if (signer == NULL)
    return encrypt_direct (store, plain, keys, armor, error);
  ctx = crypto_context (store, error);
  if (ctx == NULL || !add_signer (store, ctx, signer, error))
    return NULL;
  gpgme_set_armor (ctx, armor);
  if (!recipient_lines (keys, files, recipients, error))
    return NULL;
  err = gpgme_data_new_from_mem (&in, g_bytes_get_data (plain, NULL), g_bytes_get_size (plain), 0);
  if (!err)
    err = gpgme_data_new (&out);
  if (!err && signer != NULL)
    err = gpgme_op_encrypt_sign_ext (ctx, NULL, recipients->str,
                                     GPGME_ENCRYPT_ALWAYS_TRUST | GPGME_ENCRYPT_NO_ENCRYPT_TO, in, out);
  else if (!err)
    err = gpgme_op_encrypt_ext (ctx, NULL, recipients->str, GPGME_ENCRYPT_ALWAYS_TRUST | GPGME_ENCRYPT_NO_ENCRYPT_TO,
                                in, out);
  gpgme_data_release (in);
  if (err) {
    gpgme_data_release (out);
    g_set_error (error, MG_KEYS_ERROR, MG_KEYS_ERROR_STORE, _ ("GnuPG cannot encrypt: %s"), gpgme_strerror (err));
    return NULL;
  }
  return data_bytes (out);
}

/* Pipe - a GMimeStream that GPGME reads from or writes to (data callbacks); writes bounded by @max (0: none) */
typedef struct {
  GMimeStream *stream;
  gsize max;
  gsize done;
  gboolean over;   /* a write would have gone over @max */
  gboolean failed; /* the stream itself failed */
} Pipe;

static ssize_t
pipe_read_cb (void *handle, void *buffer, size_t size)
{
  Pipe *p = handle;
  gssize n = g_mime_stream_read (p->stream, buffer, size);

  if (n < 0) {
    p->failed = TRUE;
    errno = EIO;
    return -1;
  }
  p->done += (gsize) n;
  return n;
}

static ssize_t
pipe_write_cb (void *handle, const void *buffer, size_t size)
{
  Pipe *p = handle;

  if (p->max != 0 && size > p->max - MIN (p->max, p->done)) {
    p->over = TRUE;
    errno = EFBIG;
    return -1;
  }
  if (g_mime_stream_write (p->stream, buffer, size) != (gssize) size) {
    p->failed = TRUE;
    errno = EIO;
    return -1;
  }
  p->done += size;
  return (ssize_t) size;
}

/* stream_above - whether the rest of @stream is over @bytes, or of unknown length */
static gboolean
stream_above (GMimeStream *stream, gsize bytes)
{
  gint64 len = g_mime_stream_length (stream), at = g_mime_stream_tell (stream);

  if (len >= 0 && at > stream->bound_start)
    len -= at - stream->bound_start;
  return len < 0 || (guint64) len > bytes;
}

/* encrypt_rnp_stream - the stream form of encrypt_rnp(): %TRUE when librnp encrypted @plain into @out; %FALSE with
 * @error unset when librnp could not start on it (nothing read or written: the caller runs gpg), or with @error set
 * when it failed part-way (the streams are spent) */
static gboolean
encrypt_rnp_stream (MgGnupg *store, GMimeStream *plain, GMimeStream *out, GPtrArray *keys, gboolean armor,
                    GError **error)
{
  gboolean noted = FALSE;
  g_autofree char *why = rnp_ready (store, keys, &noted);
  g_autoptr (GPtrArray) fprs = NULL, subs = NULL;
  g_autoptr (GError) local = NULL;

  if (why != NULL) {
    if (!noted)
      g_ptr_array_add (store->notes, g_strdup_printf (_ ("OpenPGP encryption ran gpg, not librnp: %s"), why));
    return FALSE;
  }
  fprs = key_fingerprints (keys, FALSE);
  subs = key_fingerprints (keys, TRUE);
  if (mg_rnp_encrypt_stream (store->rnp, plain, out, (const char *const *) fprs->pdata,
                             (const char *const *) subs->pdata, armor, NULL, &local))
    return TRUE;
  g_ptr_array_add (store->notes, g_strdup_printf (_ ("OpenPGP encryption ran gpg, not librnp: %s"), local->message));
  if (local->code != MG_KEYS_ERROR_CRYPTO)
    g_propagate_error (error, g_steal_pointer (&local));
  return FALSE;
}

/**
 * mg_gnupg_encrypt_stream - mg_gnupg_encrypt() from stream to stream: the clear text is read from @plain (from its
 * position to its end) and the OpenPGP message written to @out as it is made, never whole in memory. The same
 * routing: librnp in-process (its callback I/O) without @signer unless mg_gnupg_set_encrypt_with_gpg() says gpg, and
 * gpg through GPGME's data callbacks otherwise or when librnp cannot use the keys (noted); mg_gnupg_set_rnp_above()
 * counts a stream that cannot tell its length as large. Content whose length @plain cannot tell, or over 1 MiB, is not
 * compressed.
 *
 * Returns: %TRUE, or %FALSE with a transient error (a stream that fails to read or write included); @out may then
 * hold part of a message, which the caller discards.
 */
gboolean
mg_gnupg_encrypt_stream (MgGnupg *store, GMimeStream *plain, GMimeStream *out, GPtrArray *keys, const char *signer,
                         gboolean armor, GError **error)
{
  g_autoptr (MgGpgmeCtx) ctx = NULL;
  g_autoptr (GString) recipients = g_string_new (NULL);
  g_autoptr (GPtrArray) files = g_ptr_array_new_with_free_func (key_file_remove);
  struct gpgme_data_cbs in_cbs = { pipe_read_cb, NULL, NULL, NULL };
  struct gpgme_data_cbs out_cbs = { NULL, pipe_write_cb, NULL, NULL };
  Pipe src = { plain, 0, 0, FALSE, FALSE };
  Pipe sink = { out, 0, 0, FALSE, FALSE };
  gpgme_encrypt_flags_t flags = GPGME_ENCRYPT_ALWAYS_TRUST | GPGME_ENCRYPT_NO_ENCRYPT_TO;
  gpgme_data_t in = NULL, dst = NULL;
  gpgme_error_t err;
  GError *local = NULL;

  g_return_val_if_fail (GMIME_IS_STREAM (plain) && GMIME_IS_STREAM (out), FALSE);
  if (signer == NULL && keys->len > 0 &&
      (!store->encrypt_gpg || (store->rnp_above != 0 && stream_above (plain, store->rnp_above)))) {
    if (encrypt_rnp_stream (store, plain, out, keys, armor, &local))
      return TRUE;
    if (local != NULL) {
      g_propagate_error (error, local);
      return FALSE;
    }
  }
  ctx = crypto_context (store, error);
  if (ctx == NULL || (signer != NULL && !add_signer (store, ctx, signer, error)))
    return FALSE;
  gpgme_set_armor (ctx, armor);
  if (!recipient_lines (keys, files, recipients, error))
    return FALSE;
  if (stream_above (plain, 1024 * 1024)) /* see encrypt_direct() */
    flags |= GPGME_ENCRYPT_NO_COMPRESS;
  err = gpgme_data_new_from_cbs (&in, &in_cbs, &src);
  if (!err)
    err = gpgme_data_new_from_cbs (&dst, &out_cbs, &sink);
  if (!err && signer != NULL)
    err = gpgme_op_encrypt_sign_ext (ctx, NULL, recipients->str, flags, in, dst);
  else if (!err)
    err = gpgme_op_encrypt_ext (ctx, NULL, recipients->str, flags, in, dst);
  gpgme_data_release (in);
  gpgme_data_release (dst);
  if (src.failed || sink.failed) {
    g_set_error_literal (error, MG_KEYS_ERROR, MG_KEYS_ERROR_STORE,
                         src.failed ? _ ("cannot read the clear text to encrypt") : _ ("cannot write the ciphertext"));
    return FALSE;
  }
  if (err || sink.done == 0) {
    g_set_error (error, MG_KEYS_ERROR, MG_KEYS_ERROR_STORE, _ ("GnuPG cannot encrypt: %s"),
                 gpgme_strerror (err ? err : gpg_error (GPG_ERR_NO_DATA)));
    return FALSE;
  }
  return TRUE;
}

/**
 * mg_gnupg_signer - the secret key the gateway signs as @address with: a user ID with exactly that address (not
 * revoked), the key usable, and a signing-capable (sub)key that is neither revoked nor expired.
 *
 * Returns: (transfer full) (nullable): its fingerprint; %NULL when there is none (@error unset) or the home cannot be
 * read (a transient %MG_KEYS_ERROR_STORE).
 */
char *
mg_gnupg_signer (MgGnupg *store, const char *address, GError **error)
{
  gpgme_ctx_t ctx = context (store, error);
  g_autofree char *want = mg_keys_address_key (address);
  g_autofree char *pattern = NULL;
  char *found = NULL;
  gpgme_error_t err;

  if (ctx == NULL || want == NULL)
    return NULL;
  pattern = search_pattern (want);
  store->processes++;
  err = gpgme_op_keylist_start (ctx, pattern, 1);
  while (!err) {
    gpgme_key_t key = NULL;
    gpgme_user_id_t uid;
    err = gpgme_op_keylist_next (ctx, &key);
    if (err)
      break;
    uid = matching_uid (key, want);
    if (found == NULL && uid != NULL && !uid->revoked && !uid->invalid && !key->revoked && !key->expired &&
        !key->disabled && !key->invalid)
      for (gpgme_subkey_t sk = key->subkeys; sk != NULL && found == NULL; sk = sk->next)
        if (sk->can_sign && sk->secret && !sk->revoked && !sk->expired && !sk->disabled && !sk->invalid)
          found = g_strdup (key->fpr);
    gpgme_key_unref (key);
  }
  gpgme_op_keylist_end (ctx);
  if (gpg_err_code (err) != GPG_ERR_EOF) {
    g_free (found);
    g_set_error (error, MG_KEYS_ERROR, MG_KEYS_ERROR_STORE, _ ("GnuPG home %s: cannot list secret keys: %s"),
                 store->home, gpgme_strerror (err));
    return NULL;
  }
  return found;
}

/**
 * mg_gnupg_sign - an OpenPGP signature over @content by @signer (a fingerprint from mg_gnupg_signer()).
 * @clear: a cleartext-signed message (RFC 9580 section 7) instead of a detached armored signature
 * @micalg: (out) (optional): RFC 3156's micalg for the hash used ("pgp-sha256")
 *
 * Returns: (transfer full): the armored signature (or signed text), or %NULL with a transient error.
 */
GBytes *
mg_gnupg_sign (MgGnupg *store, GBytes *content, const char *signer, gboolean clear, char **micalg, GError **error)
{
  g_autoptr (MgGpgmeCtx) ctx = crypto_context (store, error);
  gpgme_data_t in = NULL, out = NULL;
  gpgme_sign_result_t res;
  gpgme_error_t err;

  if (ctx == NULL || !add_signer (store, ctx, signer, error))
    return NULL;
  err = gpgme_data_new_from_mem (&in, g_bytes_get_data (content, NULL), g_bytes_get_size (content), 0);
  if (!err)
    err = gpgme_data_new (&out);
  if (!err)
    err = gpgme_op_sign (ctx, in, out, clear ? GPGME_SIG_MODE_CLEAR : GPGME_SIG_MODE_DETACH);
  gpgme_data_release (in);
  res = err ? NULL : gpgme_op_sign_result (ctx);
  if (err || res == NULL || res->signatures == NULL) {
    gpgme_data_release (out);
    g_set_error (error, MG_KEYS_ERROR, MG_KEYS_ERROR_STORE, _ ("GnuPG cannot sign: %s"),
                 gpgme_strerror (err ? err : gpg_error (GPG_ERR_GENERAL)));
    return NULL;
  }
  if (micalg != NULL) {
    const char *hash = gpgme_hash_algo_name (res->signatures->hash_algo);
    g_autofree char *lower = g_ascii_strdown (hash ? hash : "sha256", -1);
    *micalg = g_strconcat ("pgp-", lower, NULL);
  }
  return data_bytes (out);
}

/* Sink - decrypted output kept in memory up to a bound (GPGME data callbacks), wiped when released */
typedef struct {
  GByteArray *buf;
  gsize max;
  gboolean over;
} Sink;

static ssize_t
sink_write (void *handle, const void *data, size_t size)
{
  Sink *s = handle;

  if (s->max != 0 && size > s->max - MIN (s->max, s->buf->len)) {
    s->over = TRUE;
    errno = EFBIG;
    return -1;
  }
  g_byte_array_append (s->buf, data, (guint) size);
  return (ssize_t) size;
}

static void
sink_wipe (Sink *s)
{
  if (s->buf != NULL) {
    if (s->buf->len > 0)
      memset (s->buf->data, 0, s->buf->len);
    g_byte_array_unref (s->buf);
    s->buf = NULL;
  }
}

/* holds_one - whether the home has the secret part of a key @res names: its keygrip file in private-keys-v1.d,
 * looked at directly, because an agent that is down answers "no secret key" for every key. Cannot tell: TRUE, so
 * that the message is deferred rather than passed on unconverted. */
static gboolean
holds_one (MgGnupg *store, gpgme_decrypt_result_t res)
{
  gpgme_ctx_t ctx = context (store, NULL);

  if (ctx == NULL)
    return TRUE;
  for (gpgme_recipient_t r = res ? res->recipients : NULL; r != NULL; r = r->next) {
    gpgme_key_t key = NULL;
    gpgme_error_t err;
    gboolean held = FALSE;
    store->processes++;
    err = gpgme_get_key (ctx, r->keyid, &key, 0);
    if (err != 0 && gpg_err_code (err) != GPG_ERR_EOF)
      return TRUE;
    for (gpgme_subkey_t sk = key ? key->subkeys : NULL; sk != NULL && !held; sk = sk->next)
      if (sk->keygrip != NULL && g_ascii_strcasecmp (sk->keyid, r->keyid) == 0) {
        g_autofree char *file = g_strconcat (sk->keygrip, ".key", NULL);
        g_autofree char *path = g_build_filename (store->home, "private-keys-v1.d", file, NULL);
        held = g_file_test (path, G_FILE_TEST_EXISTS);
      }
    gpgme_key_unref (key);
    if (held)
      return TRUE;
  }
  return FALSE;
}

/* verdict - the judgement on one checked signature @s (from a verification or a decryption in @ctx): pass for a good
 * signature by a key valid under the trust model, neutral for an unknown, revoked, expired or not valid enough key,
 * fail for a bad one; with the signer's fingerprint and, when the key is known, its first address */
static MgSignature *
verdict (MgGnupg *store, gpgme_ctx_t ctx, gpgme_signature_t s)
{
  MgSignature *out;

  switch (gpg_err_code (s->status)) {
  case GPG_ERR_NO_ERROR:
    if ((s->summary & (GPGME_SIGSUM_KEY_REVOKED | GPGME_SIGSUM_KEY_EXPIRED | GPGME_SIGSUM_SIG_EXPIRED)) != 0)
      out = mg_signature_new (MG_SIG_NEUTRAL, "good signature by a revoked or expired key");
    else if (store->model == MG_TRUST_GNUPG && (int) s->validity < store->min_validity)
      out = mg_signature_new (MG_SIG_NEUTRAL, "good signature by a key that is not valid enough");
    else
      out = mg_signature_new (MG_SIG_PASS, NULL);
    break;
  case GPG_ERR_BAD_SIGNATURE:
    out = mg_signature_new (MG_SIG_FAIL, "bad signature");
    break;
  case GPG_ERR_NO_PUBKEY:
    out = mg_signature_new (MG_SIG_NEUTRAL, "the signer's key is not known");
    break;
  case GPG_ERR_KEY_EXPIRED:
  case GPG_ERR_SIG_EXPIRED:
  case GPG_ERR_CERT_REVOKED:
    out = mg_signature_new (MG_SIG_NEUTRAL, "good signature by a revoked or expired key");
    break;
  default:
    out = mg_signature_new (MG_SIG_PERMERROR, "the signature cannot be checked");
  }
  out->id = g_strdup (s->fpr);
  if (s->fpr != NULL && out->result != MG_SIG_FAIL) {
    gpgme_key_t key = NULL;
    store->processes++;
    if (gpgme_get_key (ctx, s->fpr, &key, 0) == 0 && key != NULL) {
      for (gpgme_user_id_t uid = key->uids; uid != NULL && out->signer == NULL; uid = uid->next)
        if (!uid->revoked && uid->email != NULL && uid->email[0] != '\0')
          out->signer = mg_keys_address_copy (uid->email);
      gpgme_key_unref (key);
    }
  }
  return out;
}

/* decrypt_finish - what a decryption in @ctx that returned @err came to: %TRUE, or %FALSE with the errors
 * mg_gnupg_decrypt() documents (@over: the output went over max_output) */
static gboolean
decrypt_finish (MgGnupg *store, gpgme_ctx_t ctx, gpgme_error_t err, gboolean over, char **used_key,
                MgSignature **signature, GError **error)
{
  g_autoptr (GString) to = g_string_new (NULL);
  gpgme_decrypt_result_t res;

  if (over) {
    g_autofree char *bound = g_strdup_printf ("%" G_GSIZE_FORMAT, store->max_output);
    g_set_error (error, MG_KEYS_ERROR, MG_KEYS_ERROR_LIMIT,
                 _ ("refused: the decrypted content is larger than max-decompressed (%s bytes)"), bound);
    return FALSE;
  }
  res = gpgme_op_decrypt_result (ctx);
  for (gpgme_recipient_t r = res ? res->recipients : NULL; r != NULL; r = r->next)
    g_string_append_printf (to, "%s0x%s", to->len ? ", " : "", r->keyid);
  if (res != NULL && res->legacy_cipher_nomdc) {
    g_set_error (error, MG_KEYS_ERROR, MG_KEYS_ERROR_INTEGRITY,
                 _ ("refused: OpenPGP data without integrity protection (no MDC)"));
    return FALSE;
  }
  if (err) {
    switch (gpg_err_code (err)) {
    case GPG_ERR_NO_SECKEY:
      if (!holds_one (store, res)) {
        g_set_error (error, MG_KEYS_ERROR, MG_KEYS_ERROR_NOT_HELD,
                     _ ("encrypted to keys the gateway does not hold: %s"), to->len ? to->str : "?");
        break;
      }
      /* gpg says "no secret key" also when the agent that holds it cannot be reached: that passes */
      g_set_error (error, MG_KEYS_ERROR, MG_KEYS_ERROR_STORE,
                   _ ("GnuPG holds a secret key for %s but cannot use it now (is gpg-agent running?)"), to->str);
      break;
    case GPG_ERR_BAD_DATA:
    case GPG_ERR_NO_DATA:
    case GPG_ERR_DECRYPT_FAILED:
    case GPG_ERR_INV_PACKET:
      g_set_error (error, MG_KEYS_ERROR, MG_KEYS_ERROR_CRYPTO, _ ("the OpenPGP data cannot be decrypted: %s"),
                   gpgme_strerror (err));
      break;
    default:
      g_set_error (error, MG_KEYS_ERROR, MG_KEYS_ERROR_STORE, _ ("GnuPG cannot decrypt now: %s"), gpgme_strerror (err));
    }
    return FALSE;
  }
  if (used_key != NULL) {
    *used_key = NULL;
    for (gpgme_recipient_t r = res ? res->recipients : NULL; r != NULL; r = r->next)
      if (r->status == 0 && *used_key == NULL)
        *used_key = g_strdup_printf ("0x%s", r->keyid);
  }
  if (signature != NULL) {
    gpgme_verify_result_t vr = gpgme_op_verify_result (ctx);
    *signature = vr != NULL && vr->signatures != NULL ? verdict (store, ctx, vr->signatures) : NULL;
  }
  return TRUE;
}

/**
 * mg_gnupg_decrypt - decrypts @cipher with a secret key of the home; refuses data without integrity protection.
 * @used_key: (out) (optional): the key id that decrypted it
 * @signature: (out) (optional) (transfer full): the verdict on a signature inside the encryption (signed and
 *   encrypted in one OpenPGP message, RFC 3156 section 6.2), judged as mg_gnupg_verify() judges; %NULL when the
 *   clear text is not signed there
 *
 * Returns: (transfer full): the clear text, or %NULL with %MG_KEYS_ERROR_NOT_HELD (naming the key ids it was
 * encrypted to), %MG_KEYS_ERROR_INTEGRITY, %MG_KEYS_ERROR_CRYPTO (broken data) or a transient %MG_KEYS_ERROR_STORE.
 */
GBytes *
mg_gnupg_decrypt (MgGnupg *store, GBytes *cipher, char **used_key, MgSignature **signature, GError **error)
{
  g_autoptr (MgGpgmeCtx) ctx = crypto_context (store, error);
  gpgme_data_t in = NULL, out = NULL;
  gpgme_error_t err;
  struct gpgme_data_cbs cbs = { NULL, sink_write, NULL, NULL };
  Sink sink = { g_byte_array_new (), store->max_output, FALSE };
  GBytes *clear;

  if (signature != NULL)
    *signature = NULL;
  if (ctx == NULL) {
    sink_wipe (&sink);
    return NULL;
  }
  err = gpgme_data_new_from_mem (&in, g_bytes_get_data (cipher, NULL), g_bytes_get_size (cipher), 0);
  if (!err)
    err = gpgme_data_new_from_cbs (&out, &cbs, &sink);
  if (!err)
    err = signature != NULL ? gpgme_op_decrypt_verify (ctx, in, out) : gpgme_op_decrypt (ctx, in, out);
  gpgme_data_release (in);
  gpgme_data_release (out);
  if (!decrypt_finish (store, ctx, err, sink.over, used_key, signature, error)) {
    sink_wipe (&sink);
    return NULL;
  }
  clear = g_bytes_new (sink.buf->data, sink.buf->len);
  sink_wipe (&sink);
  return clear;
}

/**
 * mg_gnupg_decrypt_stream - mg_gnupg_decrypt() from stream to stream: gpg reads the OpenPGP message from @cipher
 * (from its position to its end) and the clear text is written to @out as gpg yields it, never held whole in memory.
 * max_output (mg_gnupg_set_max_output()) bounds what is written: over it the decryption stops with
 * %MG_KEYS_ERROR_LIMIT, as mg_gnupg_decrypt() does. A read or write failure of a stream is a transient
 * %MG_KEYS_ERROR_STORE.
 *
 * Returns: %TRUE, or %FALSE with @error set; @out may then hold part of the clear text (never more than the bound),
 * which the caller discards (a spool file: dropped, never passed on).
 */
gboolean
mg_gnupg_decrypt_stream (MgGnupg *store, GMimeStream *cipher, GMimeStream *out, char **used_key,
                         MgSignature **signature, GError **error)
{
  g_autoptr (MgGpgmeCtx) ctx = NULL;
  gpgme_data_t in = NULL, dst = NULL;
  gpgme_error_t err;
  struct gpgme_data_cbs in_cbs = { pipe_read_cb, NULL, NULL, NULL };
  struct gpgme_data_cbs out_cbs = { NULL, pipe_write_cb, NULL, NULL };
  Pipe src = { cipher, 0, 0, FALSE, FALSE };
  Pipe sink = { out, store->max_output, 0, FALSE, FALSE };
  g_autoptr (GError) local = NULL;

  g_return_val_if_fail (GMIME_IS_STREAM (cipher) && GMIME_IS_STREAM (out), FALSE);
  if (signature != NULL)
    *signature = NULL;
  if ((ctx = crypto_context (store, error)) == NULL)
    return FALSE;
  err = gpgme_data_new_from_cbs (&in, &in_cbs, &src);
  if (!err)
    err = gpgme_data_new_from_cbs (&dst, &out_cbs, &sink);
  if (!err)
    err = signature != NULL ? gpgme_op_decrypt_verify (ctx, in, dst) : gpgme_op_decrypt (ctx, in, dst);
  gpgme_data_release (in);
  gpgme_data_release (dst);
  if (!sink.over && (src.failed || sink.failed)) {
    g_set_error_literal (error, MG_KEYS_ERROR, MG_KEYS_ERROR_STORE,
                         src.failed ? _ ("cannot read the ciphertext to decrypt")
                                    : _ ("cannot write the decrypted text"));
    return FALSE;
  }
  if (!decrypt_finish (store, ctx, err, sink.over, used_key, signature, &local)) {
    if (signature != NULL)
      g_clear_pointer (signature, mg_signature_free);
    g_propagate_error (error, g_steal_pointer (&local));
    return FALSE;
  }
  return TRUE;
}

/**
 * mg_gnupg_verify - checks a detached OpenPGP @signature over @content (already canonical, CRLF) with the home's keys;
 * with @content %NULL, @signature is a cleartext-signed message (PGP/Inline) and is checked as it is.
 *
 * pass: a good signature by a key in the home that is valid under the trust model (not revoked or expired);
 * neutral: the key is unknown or not valid enough; fail: the signature does not match; permerror: no signature.
 *
 * Returns: (transfer full): the verdict, never %NULL.
 */
MgSignature *
mg_gnupg_verify (MgGnupg *store, GBytes *content, GBytes *signature)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (MgGpgmeCtx) ctx = crypto_context (store, &error);
  gpgme_data_t sig = NULL, text = NULL, plain = NULL;
  gpgme_verify_result_t res;
  gpgme_signature_t s;
  gpgme_error_t err;

  if (ctx == NULL)
    return mg_signature_new (MG_SIG_TEMPERROR, "the GnuPG home cannot be used");
  err = gpgme_data_new_from_mem (&sig, g_bytes_get_data (signature, NULL), g_bytes_get_size (signature), 0);
  if (!err && content != NULL)
    err = gpgme_data_new_from_mem (&text, g_bytes_get_data (content, NULL), g_bytes_get_size (content), 0);
  else if (!err)
    err = gpgme_data_new (&plain); /* a cleartext-signed message: the text is inside @signature */
  if (!err)
    err = gpgme_op_verify (ctx, sig, text, plain);
  gpgme_data_release (sig);
  gpgme_data_release (text);
  gpgme_data_release (plain);
  res = err ? NULL : gpgme_op_verify_result (ctx);
  s = res ? res->signatures : NULL;
  if (s == NULL)
    return mg_signature_new (gpg_err_code (err) == GPG_ERR_NO_DATA || !err ? MG_SIG_PERMERROR : MG_SIG_TEMPERROR,
                             "no OpenPGP signature could be read");
  return verdict (store, ctx, s);
}
