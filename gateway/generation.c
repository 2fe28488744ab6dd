/* generation.c - one generation of long-lived state (configuration, GnuPG home, X.509 store), reference-counted.
 *
 * A key store that cannot be opened does not make the generation fail: the error is kept, and each message decides
 * from its recipients' policy whether it is deferred (4.7.0) or passed on as it came (on-error = pass). Only a bad
 * configuration file fails the load, and then `serve` keeps the generation it has.
 *
 * The X.509 store is read-only once loaded and shared by every thread. A GnuPG store holds a GPGME context and a
 * per-address cache, which are not for concurrent use: the generation keeps a pool of them, and a thread takes one
 * for a message and gives it back afterwards (opening a GnuPG store costs no process: GPGME starts lazily).
 *
 * Staleness is a stat() of every file and directory the generation read (the configuration, the GnuPG home's
 * keyrings, trust database and private-keys-v1.d, but not the home directory itself, which every gpg run touches;
 * the X.509 store's directories, harvested/ among them): a key added by renaming a file into certs/ or harvested/
 * (as harvesting does) or by gpg --import changes one of them. A certificate rewritten in place keeps its directory's
 * mtime: SIGHUP reloads then.
 *
 * A configured directory ([directory]) is a source of the X.509 store: its answers are cached for their TTLs (in
 * memory for serve, for the generation's life, taken over by the next generation when [directory] is unchanged; in a
 * shared 0600 file for pipe runs), not watched. */
#include "config.h"

#include "generation.h"
#include "directory.h"

#include <sys/stat.h>

#include <glib/gstdio.h>

typedef struct {
  char *path;
  gboolean exists;
  dev_t dev;
  ino_t ino;
  off_t size;
  struct timespec mtime;
  mode_t mode; /* with uid, gid: a home made readable again (chmod, chown) changes neither its mtime nor its size */
  uid_t uid;
  gid_t gid;
} Watched;

struct _MgGeneration {
  MgConfig *config;
  GError *store_error;   /* (nullable) */
  MgX509Store *x509;     /* (nullable) */
  MgLdap *directory;     /* (nullable): [directory], owned by @x509 */
  MgLdap *directory_pgp; /* (nullable): [directory] openpgp-attributes, shared by the GnuPG stores of @pool */
  GMutex lock;           /* guards pool */
  GPtrArray *pool;       /* (element-type MgGnupg): GnuPG stores not in use */
  GArray *watched;       /* (element-type Watched) */
  gboolean long_running; /* serve: loaded once for many messages (what openpgp-encrypt = auto means depends on it) */
};

static void
watched_clear (gpointer p)
{
  g_free (((Watched *) p)->path);
}

/* watch_stat - the stat() facts of @w->path now */
static void
watch_stat (Watched *w)
{
  struct stat st;

  w->exists = g_stat (w->path, &st) == 0;
  w->dev = w->exists ? st.st_dev : 0;
  w->ino = w->exists ? st.st_ino : 0;
  w->size = w->exists ? st.st_size : 0;
  w->mtime = w->exists ? st.st_mtim : (struct timespec){ 0 };
  w->mode = w->exists ? st.st_mode : 0;
  w->uid = w->exists ? st.st_uid : 0;
  w->gid = w->exists ? st.st_gid : 0;
}

static void
watch (MgGeneration *gen, const char *dir, const char *name)
{
  Watched w = { 0 };

  w.path = name ? g_build_filename (dir, name, NULL) : g_strdup (dir);
  watch_stat (&w);
  g_array_append_val (gen->watched, w);
}

static void
generation_clear (MgGeneration *gen)
{
  g_clear_pointer (&gen->pool, g_ptr_array_unref);
  g_clear_pointer (&gen->directory_pgp, mg_ldap_free);
  g_clear_pointer (&gen->x509, mg_x509_store_free);
  g_clear_error (&gen->store_error);
  g_clear_pointer (&gen->config, mg_config_free);
  g_clear_pointer (&gen->watched, g_array_unref);
  g_mutex_clear (&gen->lock);
}

/* RNP_ABOVE - with openpgp-encrypt = auto in a one-shot run, content over this goes to librnp, not gpg */
#define RNP_ABOVE ((gsize) 2 * 1024 * 1024)

/* open_gnupg - a new GnuPG store for this generation's home */
static MgGnupg *
open_gnupg (MgGeneration *gen, GError **error)
{
  const MgConfig *c = gen->config;
  gboolean long_running = gen->long_running;
  MgGnupg *store =
    mg_gnupg_open (c->gnupg_home, c->trust_always ? MG_TRUST_ALWAYS : MG_TRUST_GNUPG, c->min_validity, error);

  if (store == NULL)
    return NULL;
  mg_gnupg_set_max_output (store, c->limits.max_decompressed);
  mg_gnupg_set_address_index (store, TRUE);
  mg_gnupg_set_encrypt_with_gpg (store, c->openpgp_encrypt == MG_OPENPGP_ENCRYPT_GPG ||
                                          (c->openpgp_encrypt == MG_OPENPGP_ENCRYPT_AUTO && !long_running));
  mg_directory_attach_openpgp (gen->directory_pgp, store); /* [directory] openpgp-attributes */
  /* auto in a one-shot run: gpg for small content (loading librnp and importing a key cost ~10 ms), librnp from
   * RNP_ABOVE on, where gpg's armor encoder (~6 ms per MB) costs more than that */
  if (c->openpgp_encrypt == MG_OPENPGP_ENCRYPT_AUTO && !long_running)
    mg_gnupg_set_rnp_above (store, RNP_ABOVE);
  return store;
}

/**
 * mg_generation_load - the configuration at @conf_path (%NULL: the default path, or the built-in defaults when it
 * does not exist) and the key stores it names.
 * @long_running: for a process that handles many messages with it (serve), not one (filter)
 *
 * Returns: (transfer full): the generation, or %NULL with @error when the configuration cannot be used. A key store
 * that cannot be opened is not an error here: see mg_generation_store_error().
 */
MgGeneration *
mg_generation_load (const char *conf_path, gboolean long_running, GError **error)
{
  g_autoptr (MgConfig) config = mg_config_load (conf_path, error);
  MgGeneration *gen;
  MgGnupg *first = NULL;

  if (config == NULL)
    return NULL;
  gen = g_atomic_rc_box_new0 (MgGeneration);
  g_mutex_init (&gen->lock);
  gen->pool = g_ptr_array_new_with_free_func ((GDestroyNotify) mg_gnupg_free);
  gen->watched = g_array_new (FALSE, TRUE, sizeof (Watched));
  g_array_set_clear_func (gen->watched, watched_clear);
  gen->config = g_steal_pointer (&config);
  gen->long_running = long_running;
  if (gen->config->path != NULL)
    watch (gen, gen->config->path, NULL);
  if (gen->config->use_gnupg) {
    gen->directory_pgp = mg_directory_openpgp (gen->config, long_running);
    first = open_gnupg (gen, &gen->store_error);
    if (first != NULL) {
      /* not the home itself: every gpg run changes its mtime (lock files, random_seed), as does our address index */
      static const char *const files[] = { "pubring.kbx", "pubring.gpg", "trustdb.gpg", "private-keys-v1.d" };
      for (guint i = 0; i < G_N_ELEMENTS (files); i++)
        watch (gen, mg_gnupg_home (first), files[i]);
      g_ptr_array_add (gen->pool, first);
    }
  }
  if (gen->store_error == NULL && gen->config->x509_store != NULL) {
    static const char *const dirs[] = { NULL, "certs", "ca", "crl", "private", "harvested" };
    for (guint i = 0; i < G_N_ELEMENTS (dirs); i++)
      watch (gen, gen->config->x509_store, dirs[i]);
    /* through the address index: a run reads ca/, crl/, private/ and one small file, not every certificate */
    gen->x509 = mg_x509_store_open_indexed (gen->config->x509_store, gen->config->passphrase, NULL, &gen->store_error);
    /* [directory]: asked after certs/ at each lookup; serve caches in memory, a pipe run in the shared 0600 file */
    gen->directory = mg_directory_attach (gen->config, gen->x509, long_running);
  }
  if (gen->store_error != NULL) {
    gen->directory = NULL;
    /* a store that cannot be used now: nothing of it is used, and any change on disk makes a new generation */
    g_ptr_array_set_size (gen->pool, 0);
    g_clear_pointer (&gen->x509, mg_x509_store_free);
    if (gen->config->use_gnupg) {
      g_autofree char *home = gen->config->gnupg_home  ? g_strdup (gen->config->gnupg_home)
                              : g_getenv ("GNUPGHOME") ? g_strdup (g_getenv ("GNUPGHOME"))
                                                       : g_build_filename (g_get_home_dir (), ".gnupg", NULL);
      watch (gen, home, NULL);
    }
    if (gen->config->x509_store != NULL)
      watch (gen, gen->config->x509_store, NULL);
  }
  return gen;
}

/**
 * mg_generation_adopt - what @gen can take over from @from, the generation it replaces: the directory's answers in
 * memory (found and not found, with their times) when [directory] is configured alike in both, so that a reload
 * while the directory is away keeps using them up to stale-ttl. Call before @gen is in use.
 */
void
mg_generation_adopt (MgGeneration *gen, MgGeneration *from)
{
  if (gen != NULL && from != NULL && gen->directory != NULL && from->directory != NULL)
    mg_ldap_adopt (gen->directory, from->directory);
  if (gen != NULL && from != NULL && gen->directory_pgp != NULL && from->directory_pgp != NULL)
    mg_ldap_adopt (gen->directory_pgp, from->directory_pgp);
}

/* mg_generation_ref - Returns: (transfer full): @gen */
MgGeneration *
mg_generation_ref (MgGeneration *gen)
{
  return g_atomic_rc_box_acquire (gen);
}

/* mg_generation_unref - drops a reference; the last one frees the stores */
void
mg_generation_unref (MgGeneration *gen)
{
  g_atomic_rc_box_release_full (gen, (GDestroyNotify) generation_clear);
}

/* mg_generation_config - Returns: (transfer none): the configuration, for the generation's lifetime */
const MgConfig *
mg_generation_config (MgGeneration *gen)
{
  return gen->config;
}

/* mg_generation_store_error - Returns: (transfer none) (nullable): why a configured key store cannot be used */
const GError *
mg_generation_store_error (MgGeneration *gen)
{
  return gen->store_error;
}

/* mg_generation_x509 - Returns: (transfer none) (nullable): the X.509 store, shared: only read after loading */
MgX509Store *
mg_generation_x509 (MgGeneration *gen)
{
  return gen->x509;
}

/**
 * mg_generation_take_gnupg - a GnuPG store for one thread's use until mg_generation_give_gnupg().
 *
 * Returns: (transfer full) (nullable): %NULL without @error when OpenPGP keys are switched off (or a store error is
 * kept: mg_generation_store_error()); %NULL with a transient @error when the home cannot be opened now
 */
MgGnupg *
mg_generation_take_gnupg (MgGeneration *gen, GError **error)
{
  MgGnupg *store = NULL;

  if (!gen->config->use_gnupg || gen->store_error != NULL)
    return NULL;
  g_mutex_lock (&gen->lock);
  if (gen->pool->len > 0)
    store = g_ptr_array_steal_index_fast (gen->pool, gen->pool->len - 1);
  g_mutex_unlock (&gen->lock);
  return store ? store : open_gnupg (gen, error);
}

/* mg_generation_give_gnupg - @store (transfer full, nullable) back to the pool */
void
mg_generation_give_gnupg (MgGeneration *gen, MgGnupg *store)
{
  if (store == NULL)
    return;
  g_mutex_lock (&gen->lock);
  g_ptr_array_add (gen->pool, store);
  g_mutex_unlock (&gen->lock);
}

/* mg_generation_stale - whether a file or directory the generation read has changed since (a few stat() calls) */
gboolean
mg_generation_stale (MgGeneration *gen)
{
  for (guint i = 0; i < gen->watched->len; i++) {
    const Watched *w = &g_array_index (gen->watched, Watched, i);
    Watched now = { .path = w->path };
    watch_stat (&now);
    if (now.exists != w->exists || now.dev != w->dev || now.ino != w->ino || now.size != w->size ||
        now.mtime.tv_sec != w->mtime.tv_sec || now.mtime.tv_nsec != w->mtime.tv_nsec || now.mode != w->mode ||
        now.uid != w->uid || now.gid != w->gid)
      return TRUE;
  }
  return FALSE;
}
