/* stream-keys-bench.c - what one OpenPGP or S/MIME encryption of a large entity costs in keys/, per engine and form
 * (GBytes or streams, armored or binary), wall and CPU time (this process and its gpg children), so that the 20 MB
 * PGP encrypt target (README, Performance) can be traced to its parts. Prints figures, asserts nothing.
 *
 *   ninja -C build tests/stream-keys-bench
 *   build/tests/stream-keys-bench GNUPGHOME ADDRESS FILE [CERT.pem]   # FILE: e.g. a MIME entity with a base64
 *                                                                           # 20 MB attachment
 * GNUPGHOME holds ADDRESS's public key (the gateway's home); nothing is written but temporary files in TMPDIR.
 * MG_BENCH_ONLY=TEXT runs only the rows whose label holds TEXT; MG_BENCH_INDEX=1 looks the key up in the address index
 * as the filter does (then nothing has started GPGME before the first encryption). GPGME starts gpg through a double
 * fork, so its CPU is not in this process's children's rusage: for the gpg (GPGME) rows, run one row under `perf stat
 * -e task-clock`, which follows every descendant. */
#include "config.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <glib/gstdio.h>
#include <gmime/gmime.h>
#include <gpgme.h>
#include <openssl/pem.h>

#include "gnupg.h"
#include "smime.h"

typedef struct {
  gint64 wall;
  double cpu;
} Mark;

static double
cpu_now (void)
{
  struct rusage self, kids;

  getrusage (RUSAGE_SELF, &self);
  getrusage (RUSAGE_CHILDREN, &kids);
  return (double) (self.ru_utime.tv_sec + self.ru_stime.tv_sec + kids.ru_utime.tv_sec + kids.ru_stime.tv_sec) +
         (double) (self.ru_utime.tv_usec + self.ru_stime.tv_usec + kids.ru_utime.tv_usec + kids.ru_stime.tv_usec) / 1e6;
}

static void
mark (Mark *m)
{
  m->wall = g_get_monotonic_time ();
  m->cpu = cpu_now ();
}

/* wanted - whether the row @what runs (MG_BENCH_ONLY) */
static gboolean
wanted (const char *what)
{
  const char *only = g_getenv ("MG_BENCH_ONLY");

  return only == NULL || strstr (what, only) != NULL;
}

static void
report (const char *what, const Mark *m, gsize in, gint64 out)
{
  double wall = (double) (g_get_monotonic_time () - m->wall) / 1e6, cpu = cpu_now () - m->cpu;

  printf ("%-44s %8.0f ms wall %7.0f ms CPU %7.1f MB/s wall %7.1f MB/s CPU  out %.1f MB\n", what, wall * 1e3, cpu * 1e3,
          (double) in / 1e6 / wall, (double) in / 1e6 / cpu, (double) out / 1e6);
}

static GMimeStream *
spool (void)
{
  g_autofree char *path = g_build_filename (g_get_tmp_dir (), "mg-bench-XXXXXX", NULL);
  int fd = g_mkstemp_full (path, O_RDWR, 0600);

  g_unlink (path);
  return g_mime_stream_fs_new (fd);
}

int
main (int argc, char **argv)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (MgGnupg) store = NULL;
  g_autoptr (GPtrArray) keys = g_ptr_array_new_with_free_func ((GDestroyNotify) mg_pgp_key_free);
  g_autofree char *data = NULL;
  gsize len = 0;
  MgPgpKey *key;

  if (argc < 4) {
    fprintf (stderr, "usage: %s GNUPGHOME ADDRESS FILE [CERT.pem]\n", argv[0]);
    return 64;
  }
  g_mime_init ();
  if (!g_file_get_contents (argv[3], &data, &len, &error))
    g_error ("%s", error->message);
  store = mg_gnupg_open (argv[1], MG_TRUST_ALWAYS, GPGME_VALIDITY_FULL, &error);
  if (store != NULL && g_getenv ("MG_BENCH_INDEX") != NULL)
    mg_gnupg_set_address_index (store, TRUE); /* as the filter looks up: no GPGME before the encryption */
  if (store == NULL || (key = mg_gnupg_lookup (store, argv[2], NULL, &error)) == NULL)
    g_error ("no key for %s: %s", argv[2], error ? error->message : "none");
  g_ptr_array_add (keys, key);
  printf ("input %s: %.1f MB\n", argv[3], (double) len / 1e6);
  for (guint engine = 0; engine < 2; engine++) {
    mg_gnupg_set_encrypt_with_gpg (store, engine == 1);
    for (guint armor = 0; armor < 2; armor++) {
      g_autoptr (GBytes) plain = g_bytes_new_static (data, len);
      g_autoptr (GBytes) cipher = NULL;
      g_autofree char *a =
        g_strdup_printf ("%s %s GBytes", engine ? "gpg (direct)" : "librnp", armor ? "armored" : "binary");
      g_autofree char *b =
        g_strdup_printf ("%s %s stream file->file", engine ? "gpg (GPGME)" : "librnp", armor ? "armored" : "binary");
      GMimeStream *in, *out;
      Mark m;

      if (wanted (a)) {
        mark (&m);
        cipher = mg_gnupg_encrypt (store, plain, keys, NULL, armor, &error);
        if (cipher == NULL)
          g_error ("%s", error->message);
        report (a, &m, len, (gint64) g_bytes_get_size (cipher));
      }
      if (!wanted (b))
        continue;
      in = g_mime_stream_fs_open (argv[3], O_RDONLY, 0, &error);
      out = spool ();
      mark (&m);
      if (in == NULL || !mg_gnupg_encrypt_stream (store, in, out, keys, NULL, armor, &error))
        g_error ("%s", error->message);
      report (b, &m, len, g_mime_stream_length (out));
      g_object_unref (in);
      g_object_unref (out);
    }
  }
  if (argc > 4) {
    g_autoptr (GPtrArray) certs = g_ptr_array_new_with_free_func ((GDestroyNotify) X509_free);
    BIO *bio = BIO_new_file (argv[4], "r");
    X509 *x = bio ? PEM_read_bio_X509 (bio, NULL, NULL, NULL) : NULL;
    BIO_free (bio);
    if (x == NULL)
      g_error ("cannot read %s", argv[4]);
    g_ptr_array_add (certs, x);
    for (guint gcm = 0; gcm < 2; gcm++) {
      g_autoptr (GBytes) plain = g_bytes_new_static (data, len);
      g_autoptr (GBytes) cipher = NULL;
      GMimeStream *in, *out;
      Mark m;

      if (wanted (gcm ? "S/MIME GCM GBytes" : "S/MIME CBC GBytes")) {
        mark (&m);
        cipher = mg_smime_encrypt (plain, certs, gcm, &error);
        if (cipher == NULL)
          g_error ("%s", error->message);
        report (gcm ? "S/MIME GCM GBytes" : "S/MIME CBC GBytes", &m, len, (gint64) g_bytes_get_size (cipher));
      }
      if (!wanted (gcm ? "S/MIME GCM stream" : "S/MIME CBC stream"))
        continue;
      in = g_mime_stream_fs_open (argv[3], O_RDONLY, 0, &error);
      out = spool ();
      mark (&m);
      if (in == NULL || !mg_smime_encrypt_stream (in, out, certs, gcm, &error))
        g_error ("%s", error->message);
      report (gcm ? "S/MIME GCM stream file->file" : "S/MIME CBC stream file->file", &m, len,
              g_mime_stream_length (out));
      g_object_unref (in);
      g_object_unref (out);
    }
  }
  return 0;
}
