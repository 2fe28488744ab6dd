/* test-stream-keys.c - the streaming forms of the keyed operations (issue 13): mg_gnupg_encrypt_stream (librnp and
 * gpg), mg_rnp_encrypt_stream, mg_gnupg_decrypt_stream, mg_smime_encrypt_stream and mg_smime_decrypt_stream, small
 * and 20 MB, over memory and file streams. What they write is opened by an independent tool (gpg in the recipient's
 * home, sq, openssl cms -decrypt -inform DER) and compared byte for byte; what they read was made by the gpg and
 * openssl commands. The limits give their error; with both streams files, the process's peak RSS grows by much less
 * than the 20 MB that went through (the output is not accumulated in memory) - printed as a figure, the mechanism
 * asserted, never a time. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <string.h>
#include <unistd.h>

#include <glib/gstdio.h>
#include <gmime/gmime.h>
#include <gpgme.h>
#include <openssl/pem.h>

#include "gnupg.h"
#include "mg-gmime.h"
#include "mg-ssl.h"
#include "rnp.h"
#include "smime.h"
#include "testutil.h"
#include "x509.h"

G_DEFINE_AUTOPTR_CLEANUP_FUNC (MgGpg, mg_gpg_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (MgSignature, mg_signature_free)

#define LARGE (20 * 1000 * 1000)

/* AddressSanitizer's realloc always moves and keeps the old block in quarantine: OpenSSL's growing read buffer then
 * costs the sum of its sizes, which says nothing about mimegate's streams */
#if defined(__SANITIZE_ADDRESS__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SANITIZED 1
#endif
#endif
#ifndef SANITIZED
#define SANITIZED 0
#endif

static struct {
  MgGpg *bob; /* the recipient: his secret key, the gateway's public key */
  MgGpg *gw;  /* the gateway's home: its own key pair, bob's public key */
  MgCa *ca;
  char *dir;
  char *small_path, *large_path; /* the clear texts, as files */
  GBytes *small;
  char *x509; /* a store holding bob's certificate and key */
} fx;

/* status_kib - a VmXXX field of /proc/self/status, in KiB */
static gint64
status_kib (const char *field)
{
  g_autofree char *text = NULL;
  const char *at;

  if (!g_file_get_contents ("/proc/self/status", &text, NULL, NULL) || (at = strstr (text, field)) == NULL)
    return -1;
  return g_ascii_strtoll (at + strlen (field) + 1, NULL, 10);
}

/* Peak - the RSS before an operation, the peak reset (clear_refs 5) so that VmHWM afterwards is the operation's */
typedef struct {
  gint64 rss;
  gboolean reset;
} Peak;

static void
peak_begin (Peak *p)
{
  int fd = open ("/proc/self/clear_refs", O_WRONLY | O_CLOEXEC);

  p->reset = fd >= 0 && write (fd, "5", 1) == 1;
  if (fd >= 0)
    close (fd);
  p->rss = status_kib ("VmRSS:");
}

/* peak_growth - KiB the peak RSS rose above the RSS before, or -1 when the peak could not be reset */
static gint64
peak_growth (Peak *p, const char *what)
{
  gint64 hwm = status_kib ("VmHWM:");

  if (!p->reset || hwm < 0 || p->rss < 0) {
    g_test_message ("%s: peak RSS cannot be measured here", what);
    return -1;
  }
  g_test_message ("%s: peak RSS growth %.1f MiB for %.1f MB through (RSS before %.1f MiB)", what,
                  (double) (hwm - p->rss) / 1024, (double) LARGE / 1e6, (double) p->rss / 1024);
  return hwm - p->rss;
}

/* assert_peak - file to file (@file), the peak grew by well under the size that went through: the output was not
 * accumulated; memory to memory, by more than half of it (what shows that the measurement sees accumulation) */
static void
assert_peak (Peak *p, const char *what, gint64 input_kib, gboolean file)
{
  gint64 growth = peak_growth (p, what);

  if (growth >= 0 && file)
    g_assert_cmpint (growth, <, input_kib / 4);
  else if (growth >= 0)
    g_assert_cmpint (growth, >, input_kib / 2);
}

/* MgTestCount - a pass-through GMime filter that counts the pieces written through it: what shows that an operation
 * wrote its output as it went, in pieces, rather than once at the end */
typedef struct {
  GMimeFilter parent;
  guint pieces;
  gsize largest;
  gsize total;
} MgTestCount;

typedef struct {
  GMimeFilterClass parent_class;
} MgTestCountClass;

static GType mg_test_count_get_type (void);
G_DEFINE_TYPE (MgTestCount, mg_test_count, GMIME_TYPE_FILTER)

static void
count_filter (GMimeFilter *filter, char *in, size_t len, size_t prespace, char **out, size_t *outlen,
              size_t *outprespace)
{
  MgTestCount *c = (MgTestCount *) filter;

  if (len > 0) {
    c->pieces++;
    c->largest = MAX (c->largest, len);
    c->total += len;
  }
  *out = in;
  *outlen = len;
  *outprespace = prespace;
}

static void
count_complete (GMimeFilter *filter, char *in, size_t len, size_t prespace, char **out, size_t *outlen,
                size_t *outprespace)
{
  count_filter (filter, in, len, prespace, out, outlen, outprespace);
}

static GMimeFilter *
count_copy (GMimeFilter *filter)
{
  return g_object_new (mg_test_count_get_type (), NULL);
}

static void
count_reset (GMimeFilter *filter)
{
}

static void
mg_test_count_class_init (MgTestCountClass *klass)
{
  GMimeFilterClass *f = GMIME_FILTER_CLASS (klass);

  f->copy = count_copy;
  f->filter = count_filter;
  f->complete = count_complete;
  f->reset = count_reset;
}

static void
mg_test_count_init (MgTestCount *c)
{
}

/* counted - @out behind a counting filter stream; *@count: the filter (owned by the returned stream) */
static GMimeStream *
counted (GMimeStream *out, MgTestCount **count)
{
  GMimeStream *f = g_mime_stream_filter_new (out);
  GMimeFilter *c = g_object_new (mg_test_count_get_type (), NULL);

  g_mime_stream_filter_add (GMIME_STREAM_FILTER (f), c);
  *count = (MgTestCount *) c;
  g_object_unref (c);
  return f;
}

/* assert_pieces - the 20 MB went out in many pieces of at most 64 KiB each, as it was made */
static void
assert_pieces (MgTestCount *count, const char *what)
{
  g_test_message ("%s: %u writes, the largest %" G_GSIZE_FORMAT " bytes, %" G_GSIZE_FORMAT " in all", what,
                  count->pieces, count->largest, count->total);
  g_assert_cmpuint (count->total, >=, LARGE);
  g_assert_cmpuint (count->pieces, >, 300);
  g_assert_cmpuint (count->largest, <=, 64 * 1024);
}

/* in_stream - @path (a file) as a memory stream (@file FALSE) or a file stream */
static GMimeStream *
in_stream (const char *path, gboolean file)
{
  g_autoptr (GError) error = NULL;
  GMimeStream *s;

  if (file) {
    s = g_mime_stream_fs_open (path, O_RDONLY, 0, &error);
    g_assert_no_error (error);
    return s;
  }
  {
    gsize len = 0;
    g_autofree char *data = mg_test_read (path, &len);
    g_assert_nonnull (data);
    return g_mime_stream_mem_new_with_buffer (data, len);
  }
}

/* out_stream - an empty memory stream, or the file @path created 0600 */
static GMimeStream *
out_stream (const char *path, gboolean file)
{
  g_autoptr (GError) error = NULL;
  GMimeStream *s;

  if (!file)
    return g_mime_stream_mem_new ();
  s = g_mime_stream_fs_open (path, O_RDWR | O_CREAT | O_TRUNC, 0600, &error);
  g_assert_no_error (error);
  return s;
}

/* out_path - where what @out holds is as a file: @path itself for a file stream, else written there */
static void
out_to_file (GMimeStream *out, const char *path, gboolean file)
{
  if (!file) {
    GByteArray *a = g_mime_stream_mem_get_byte_array (GMIME_STREAM_MEM (out));
    g_assert_true (g_file_set_contents (path, (const char *) a->data, a->len, NULL));
  } else
    g_assert_cmpint (g_mime_stream_flush (out), ==, 0);
}

/* assert_same_files - @got holds exactly the bytes of @want */
static void
assert_same_files (const char *got, const char *want)
{
  gsize a = 0, b = 0;
  g_autofree char *x = mg_test_read (got, &a);
  g_autofree char *y = mg_test_read (want, &b);

  g_assert_nonnull (x);
  g_assert_nonnull (y);
  g_assert_cmpuint (a, ==, b);
  g_assert_true (memcmp (x, y, a) == 0);
}

static const char *
plain_path (gboolean large)
{
  return large ? fx.large_path : fx.small_path;
}

static gint64
plain_kib (gboolean large)
{
  return large ? LARGE / 1024 : 1;
}

/* gpg_open - @cipher decrypted by gpg in bob's home into @clear; TRUE when it says the MDC is good. *@compressed: a
 * compressed packet was inside */
static gboolean
gpg_open (const char *cipher, const char *clear, gboolean *compressed)
{
  g_autofree char *status = mg_gpg (fx.bob, NULL, 0, "--status-fd", "1", "--output", clear, "--decrypt", cipher, NULL);
  g_autofree char *packets = mg_gpg (fx.bob, NULL, 0, "--list-packets", cipher, NULL);

  g_assert_nonnull (status);
  g_assert_nonnull (packets);
  *compressed = strstr (packets, ":compressed packet:") != NULL;
  return strstr (status, "[GNUPG:] GOODMDC") != NULL && strstr (status, "[GNUPG:] DECRYPTION_OKAY") != NULL;
}

static GPtrArray *
bob_keys (MgGnupg *store)
{
  g_autoptr (GError) error = NULL;
  GPtrArray *keys = g_ptr_array_new_with_free_func ((GDestroyNotify) mg_pgp_key_free);
  MgPgpKey *k = mg_gnupg_lookup (store, "bob@example.net", NULL, &error);

  g_assert_no_error (error);
  g_assert_nonnull (k);
  g_ptr_array_add (keys, k);
  return keys;
}

static MgGnupg *
open_gw (void)
{
  g_autoptr (GError) error = NULL;
  MgGnupg *store = mg_gnupg_open (fx.gw->home, MG_TRUST_ALWAYS, GPGME_VALIDITY_FULL, &error);

  g_assert_no_error (error);
  return store;
}

/* Case - one shape of a streaming test: which engine, which size, which kind of stream */
typedef struct {
  gboolean gpg; /* mg_gnupg_encrypt_stream with openpgp-encrypt = gpg (else librnp) */
  gboolean large;
  gboolean file;
  gboolean gcm; /* S/MIME */
} Case;

static char *
case_name (const char *what, const Case *c)
{
  return g_strdup_printf ("%s %s %s", what, c->large ? "20 MB" : "small", c->file ? "file->file" : "mem->mem");
}

/* test_pgp_encrypt - mg_gnupg_encrypt_stream: gpg in bob's home opens it, the same bytes; compressed when small,
 * not when 20 MB; armored over memory, binary over files */
static void
test_pgp_encrypt (gconstpointer data)
{
  const Case *c = data;
  g_autoptr (MgGnupg) store = open_gw ();
  g_autoptr (GPtrArray) keys = bob_keys (store);
  g_autofree char *cpath = g_build_filename (fx.dir, "pgp-enc.out", NULL);
  g_autofree char *opened = g_build_filename (fx.dir, "pgp-enc.opened", NULL);
  g_autofree char *name = case_name (c->gpg ? "gpg encrypt" : "librnp encrypt", c);
  g_autoptr (GMimeStream) in = in_stream (plain_path (c->large), c->file);
  g_autoptr (GMimeStream) out = out_stream (cpath, c->file);
  MgTestCount *count = NULL;
  g_autoptr (GMimeStream) sink = c->large && c->file ? counted (out, &count) : g_object_ref (out);
  g_autoptr (GError) error = NULL;
  gboolean compressed = TRUE;
  gint64 t0;
  Peak peak;

  mg_gnupg_set_encrypt_with_gpg (store, c->gpg);
  peak_begin (&peak);
  t0 = g_get_monotonic_time ();
  g_assert_true (mg_gnupg_encrypt_stream (store, in, sink, keys, NULL, !c->file, &error));
  g_assert_no_error (error);
  if (count != NULL) {
    g_assert_cmpint (g_mime_stream_flush (sink), ==, 0);
    assert_pieces (count, name);
  }
  if (c->large)
    g_test_message ("%s: %.0f MB/s", name, (double) LARGE / (double) (g_get_monotonic_time () - t0));
  if (c->large)
    assert_peak (&peak, name, plain_kib (TRUE), c->file);
  g_clear_pointer (&keys, g_ptr_array_unref);
  {
    g_autoptr (GPtrArray) notes = mg_gnupg_take_notes (store);
    g_assert_null (notes); /* librnp took the key: no fallback to gpg */
  }
  out_to_file (out, cpath, c->file);
  if (!c->file) {
    g_autofree char *text = mg_test_read (cpath, NULL);
    g_assert_true (g_str_has_prefix (text, "-----BEGIN PGP MESSAGE-----\n"));
    g_assert_null (strchr (text, '\r'));
  }
  g_assert_true (gpg_open (cpath, opened, &compressed));
  g_assert_cmpint (compressed, ==, !c->large);
  assert_same_files (opened, plain_path (c->large));
  g_unlink (opened);
  g_unlink (cpath);
}

/* test_pgp_encrypt_signed - with a signer the stream goes through gpg (GPGME) whatever the setting: bob's gpg opens
 * it and finds the gateway's good signature */
static void
test_pgp_encrypt_signed (void)
{
  g_autoptr (MgGnupg) store = open_gw ();
  g_autoptr (GPtrArray) keys = bob_keys (store);
  g_autoptr (GError) error = NULL;
  g_autofree char *signer = mg_gnupg_signer (store, "gw@example.org", &error);
  g_autoptr (GMimeStream) in = in_stream (fx.small_path, FALSE);
  g_autoptr (GMimeStream) out = out_stream (NULL, FALSE);
  g_autofree char *cpath = g_build_filename (fx.dir, "signed.asc", NULL);
  g_autofree char *opened = g_build_filename (fx.dir, "signed.opened", NULL);
  g_autofree char *status = NULL;

  g_assert_no_error (error);
  g_assert_nonnull (signer);
  g_assert_true (mg_gnupg_encrypt_stream (store, in, out, keys, signer, TRUE, &error));
  g_assert_no_error (error);
  out_to_file (out, cpath, FALSE);
  status = mg_gpg (fx.bob, NULL, 0, "--status-fd", "1", "--output", opened, "--decrypt", cpath, NULL);
  g_assert_nonnull (status);
  g_assert_nonnull (strstr (status, "[GNUPG:] GOODSIG"));
  g_assert_nonnull (strstr (status, "[GNUPG:] GOODMDC"));
  assert_same_files (opened, fx.small_path);
}

/* test_rnp_above - gpg set (as openpgp-encrypt = auto in the pipe) with mg_gnupg_set_rnp_above (1 MiB): the small
 * message runs gpg (one process each time), the 20 MB one librnp (one export of the key, then no process at all),
 * in both the stream and the GBytes form; gpg opens each, the same bytes */
static void
test_rnp_above (void)
{
  g_autoptr (MgGnupg) store = open_gw ();
  g_autoptr (GPtrArray) keys = bob_keys (store);
  g_autofree char *cpath = g_build_filename (fx.dir, "above.out", NULL);
  g_autofree char *opened = g_build_filename (fx.dir, "above.opened", NULL);
  static const struct {
    gboolean large;
    gboolean stream;
    guint processes; /* gpg runs for this encryption */
  } cases[] = {
    { FALSE, TRUE, 1 }, { TRUE, TRUE, 1 }, { TRUE, TRUE, 0 }, { TRUE, FALSE, 0 }, { FALSE, FALSE, 1 },
  };

  mg_gnupg_set_encrypt_with_gpg (store, TRUE);
  mg_gnupg_set_rnp_above (store, 1024 * 1024);
  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++) {
    g_autoptr (GError) error = NULL;
    guint before = mg_gnupg_processes (store);
    gboolean compressed = TRUE;

    if (cases[i].stream) {
      g_autoptr (GMimeStream) in = in_stream (plain_path (cases[i].large), TRUE);
      g_autoptr (GMimeStream) out = out_stream (cpath, TRUE);
      g_assert_true (mg_gnupg_encrypt_stream (store, in, out, keys, NULL, TRUE, &error));
      g_assert_no_error (error);
      g_assert_cmpint (g_mime_stream_flush (out), ==, 0);
    } else {
      gsize len = 0;
      g_autofree char *data = mg_test_read (plain_path (cases[i].large), &len);
      g_autoptr (GBytes) plain = g_bytes_new_take (g_steal_pointer (&data), len);
      g_autoptr (GBytes) cipher = mg_gnupg_encrypt (store, plain, keys, NULL, TRUE, &error);
      g_assert_no_error (error);
      g_assert_true (g_file_set_contents (cpath, g_bytes_get_data (cipher, NULL), g_bytes_get_size (cipher), NULL));
    }
    g_assert_cmpuint (mg_gnupg_processes (store) - before, ==, cases[i].processes);
    g_assert_true (gpg_open (cpath, opened, &compressed));
    g_assert_cmpint (compressed, ==, !cases[i].large);
    assert_same_files (opened, plain_path (cases[i].large));
  }
  {
    g_autoptr (GPtrArray) notes = mg_gnupg_take_notes (store);
    g_assert_null (notes);
  }
  g_unlink (opened);
  g_unlink (cpath);
}

/* export_public - the gateway home's public key block for @address */
static GBytes *
export_public (const char *address)
{
  gsize len = 0;
  g_autofree char *block = NULL;
  MgRun run;
  g_auto (GStrv) env = mg_test_env ("GNUPGHOME", fx.gw->home, NULL);
  const char *argv[] = { "gpg", "--batch", "--export", address, NULL };

  g_assert_true (mg_test_run (&run, argv, (const char *const *) env, NULL, 0));
  g_assert_cmpint (run.status, ==, 0);
  len = run.out_len;
  block = g_steal_pointer (&run.out);
  mg_run_clear (&run);
  return g_bytes_new_take (g_steal_pointer (&block), len);
}

/* test_rnp_encrypt - mg_rnp_encrypt_stream itself: Sequoia's sq opens it with bob's secret key, the same bytes;
 * ZLIB only for the small one */
static void
test_rnp_encrypt (gconstpointer data)
{
  const Case *c = data;
  g_autoptr (GError) error = NULL;
  g_autoptr (MgRnp) rnp = mg_rnp_new (&error);
  g_autoptr (MgGnupg) store = open_gw ();
  g_autoptr (GPtrArray) keys = bob_keys (store);
  const MgPgpKey *k = g_ptr_array_index (keys, 0);
  g_autoptr (GBytes) block = export_public ("bob@example.net");
  const char *fprs[] = { k->fingerprint, NULL }, *subs[] = { k->subkey_fpr, NULL };
  g_autofree char *cpath = g_build_filename (fx.dir, "rnp.out", NULL);
  g_autofree char *opened = g_build_filename (fx.dir, "rnp.opened", NULL);
  g_autofree char *secret = mg_gpg (fx.bob, NULL, 0, "--armor", "--export-secret-keys", "bob@example.net", NULL);
  g_autofree char *keyfile = mg_test_write (fx.dir, "bob-secret.asc", secret, -1);
  g_autofree char *name = case_name ("mg_rnp_encrypt_stream", c);
  g_autoptr (GMimeStream) in = in_stream (plain_path (c->large), c->file);
  g_autoptr (GMimeStream) out = out_stream (cpath, c->file);
  MgTestCount *count = NULL;
  g_autoptr (GMimeStream) sink = c->large && c->file ? counted (out, &count) : g_object_ref (out);
  const char *cipher = NULL;
  gboolean compressed = TRUE;
  MgRun run;
  Peak peak;

  g_assert_no_error (error);
  g_assert_true (mg_rnp_import (rnp, k->fingerprint, k->subkey_fpr, block, &error));
  g_assert_no_error (error);
  peak_begin (&peak);
  g_assert_true (mg_rnp_encrypt_stream (rnp, in, sink, fprs, subs, !c->file, &cipher, &error));
  g_assert_no_error (error);
  if (count != NULL) {
    g_assert_cmpint (g_mime_stream_flush (sink), ==, 0);
    assert_pieces (count, name);
  }
  if (c->large)
    assert_peak (&peak, name, plain_kib (TRUE), c->file);
  g_assert_cmpstr (cipher, ==, "AES256");
  out_to_file (out, cpath, c->file);
  g_assert_true (mg_test_runf (&run, NULL, "sq", "decrypt", "--recipient-key", keyfile, "-o", opened, cpath, NULL));
  if (run.status != 0)
    g_test_message ("sq: %s", run.err);
  g_assert_cmpint (run.status, ==, 0);
  mg_run_clear (&run);
  assert_same_files (opened, plain_path (c->large));
  g_assert_true (gpg_open (cpath, opened, &compressed));
  g_assert_cmpint (compressed, ==, !c->large);
  g_unlink (opened);
  g_unlink (cpath);
}

/* pgp_cipher - @plain encrypted by bob's gpg to the gateway's key (signed by bob when @sign), binary, into a file */
static char *
pgp_cipher (const char *plain, const char *name, gboolean sign, const char *compress_level)
{
  g_autofree char *path = g_build_filename (fx.dir, name, NULL);
  g_autofree char *out = NULL;

  if (sign)
    out = mg_gpg (fx.bob, NULL, 0, "-z", compress_level, "--output", path, "-r", "gw@example.org", "-u",
                  "bob@example.net", "--sign", "--encrypt", plain, NULL);
  else
    out = mg_gpg (fx.bob, NULL, 0, "-z", compress_level, "--output", path, "-r", "gw@example.org", "--encrypt", plain,
                  NULL);
  g_assert_nonnull (out);
  return g_steal_pointer (&path);
}

/* test_pgp_decrypt - mg_gnupg_decrypt_stream of what bob's gpg made (compressed, and signed for the small one): the
 * bytes, the key used, bob's good signature */
static void
test_pgp_decrypt (gconstpointer data)
{
  const Case *c = data;
  g_autoptr (MgGnupg) store = open_gw ();
  g_autofree char *cipher = pgp_cipher (plain_path (c->large), "to-gw.gpg", !c->large, "6");
  g_autofree char *opath = g_build_filename (fx.dir, "pgp-dec.out", NULL);
  g_autofree char *name = case_name ("gpg decrypt", c);
  g_autofree char *gw_sub = mg_gpg_encryption_keyid (fx.gw, "gw@example.org");
  g_autoptr (GMimeStream) in = in_stream (cipher, c->file);
  g_autoptr (GMimeStream) out = out_stream (opath, c->file);
  MgTestCount *count = NULL;
  g_autoptr (GMimeStream) sink = c->large && c->file ? counted (out, &count) : g_object_ref (out);
  g_autoptr (GError) error = NULL;
  g_autoptr (MgSignature) sig = NULL;
  g_autofree char *used = NULL;
  g_autofree char *want_used = NULL;
  gint64 t0;
  Peak peak;

  mg_gnupg_set_max_output (store, 64 * 1024 * 1024);
  peak_begin (&peak);
  t0 = g_get_monotonic_time ();
  g_assert_true (mg_gnupg_decrypt_stream (store, in, sink, &used, &sig, &error));
  g_assert_no_error (error);
  if (count != NULL) {
    g_assert_cmpint (g_mime_stream_flush (sink), ==, 0);
    assert_pieces (count, name);
  }
  if (c->large)
    g_test_message ("%s: %.0f MB/s", name, (double) LARGE / (double) (g_get_monotonic_time () - t0));
  if (c->large)
    assert_peak (&peak, name, plain_kib (TRUE), c->file);
  want_used = g_strdup_printf ("0x%s", gw_sub);
  g_assert_cmpstr (used, ==, want_used);
  if (!c->large) {
    g_assert_nonnull (sig);
    g_assert_cmpint (sig->result, ==, MG_SIG_PASS);
    g_assert_cmpstr (sig->signer, ==, "bob@example.net");
  } else
    g_assert_null (sig);
  out_to_file (out, opath, c->file);
  assert_same_files (opath, plain_path (c->large));
  g_unlink (opath);
  g_unlink (cipher);
}

/* dir_empty - whether @dir holds no file */
static gboolean
dir_empty (const char *dir)
{
  g_autoptr (GDir) d = g_dir_open (dir, 0, NULL);

  return d != NULL && g_dir_read_name (d) == NULL;
}

/* spool_stream - what the engine spools decrypted text into: a file in @dir created 0600 and unlinked at once */
static GMimeStream *
spool_stream (const char *dir)
{
  g_autofree char *path = g_build_filename (dir, "spool-XXXXXX", NULL);
  int fd = g_mkstemp_full (path, O_RDWR, 0600);

  g_assert_cmpint (fd, >=, 0);
  g_assert_cmpint (g_unlink (path), ==, 0);
  return g_mime_stream_fs_new (fd);
}

/* test_pgp_decrypt_limit - over max-decompressed: a compression bomb (50 MB of zeros in a few KB) and the 20 MB
 * random file, each against a 1 MiB bound. The limit error, no more than the bound written, nothing left in the spool
 * directory */
static void
test_pgp_decrypt_limit (void)
{
  g_autoptr (MgGnupg) store = open_gw ();
  g_autofree char *zeros = g_build_filename (fx.dir, "zeros", NULL);
  g_autofree char *spool = g_build_filename (fx.dir, "spool", NULL);
  const gsize bound = 1024 * 1024;

  {
    g_autofree char *z = g_malloc0 (50 * 1000 * 1000);
    g_assert_true (g_file_set_contents (zeros, z, 50 * 1000 * 1000, NULL));
  }
  g_mkdir (spool, 0700);
  mg_gnupg_set_max_output (store, bound);
  for (guint i = 0; i < 2; i++) {
    g_autofree char *cipher = pgp_cipher (i == 0 ? zeros : fx.large_path, "limit.gpg", FALSE, "9");
    g_autoptr (GMimeStream) in = in_stream (cipher, TRUE);
    g_autoptr (GMimeStream) out = spool_stream (spool);
    g_autoptr (GError) error = NULL;
    g_autofree char *used = NULL;

    if (i == 0) {
      GStatBuf st;
      g_assert_cmpint (g_stat (cipher, &st), ==, 0);
      g_test_message ("compression bomb: %" G_GINT64_FORMAT " bytes of ciphertext for 50 MB", (gint64) st.st_size);
    }
    g_assert_false (mg_gnupg_decrypt_stream (store, in, out, &used, NULL, &error));
    g_assert_error (error, MG_KEYS_ERROR, MG_KEYS_ERROR_LIMIT);
    g_assert_nonnull (strstr (error->message, "max-decompressed (1048576 bytes)"));
    g_assert_null (used);
    g_assert_cmpint (g_mime_stream_length (out), <=, (gint64) bound);
    g_assert_true (dir_empty (spool));
    g_unlink (cipher);
  }
  g_unlink (zeros);
}

/* bob_cert - bob's certificate, in an array for the encryption */
static GPtrArray *
bob_certs (void)
{
  g_autofree char *path = mg_ca_path (fx.ca, "bob", ".pem");
  g_autoptr (BIO) bio = BIO_new_file (path, "r");
  GPtrArray *certs = g_ptr_array_new_with_free_func ((GDestroyNotify) X509_free);
  X509 *x = bio ? PEM_read_bio_X509 (bio, NULL, NULL, NULL) : NULL;

  g_assert_nonnull (x);
  g_ptr_array_add (certs, x);
  return certs;
}

/* openssl_open - @cipher (BER/DER) decrypted by the openssl command with bob's key into @clear */
static void
openssl_open (const char *cipher, const char *clear)
{
  g_autofree char *key = mg_ca_path (fx.ca, "bob", ".key");
  g_autofree char *cert = mg_ca_path (fx.ca, "bob", ".pem");
  g_autofree char *out = mg_ca_openssl (fx.ca, NULL, 0, NULL, "cms", "-decrypt", "-binary", "-inform", "DER", "-in",
                                        cipher, "-recip", cert, "-inkey", key, "-out", clear, NULL);

  g_assert_nonnull (out);
}

/* test_smime_encrypt - mg_smime_encrypt_stream (AES-256-CBC enveloped-data, AES-256-GCM authEnveloped-data): openssl
 * cms -decrypt -inform DER opens it, the same bytes */
static void
test_smime_encrypt (gconstpointer data)
{
  const Case *c = data;
  g_autoptr (GPtrArray) certs = bob_certs ();
  g_autofree char *cpath = g_build_filename (fx.dir, "smime.p7m", NULL);
  g_autofree char *opened = g_build_filename (fx.dir, "smime.opened", NULL);
  g_autofree char *what = g_strdup_printf ("S/MIME encrypt (%s)", c->gcm ? "GCM" : "CBC");
  g_autofree char *name = case_name (what, c);
  g_autoptr (GMimeStream) in = in_stream (plain_path (c->large), c->file);
  g_autoptr (GMimeStream) out = out_stream (cpath, c->file);
  MgTestCount *count = NULL;
  g_autoptr (GMimeStream) sink = c->large && c->file ? counted (out, &count) : g_object_ref (out);
  g_autoptr (GError) error = NULL;
  gint64 t0;
  Peak peak;

  peak_begin (&peak);
  t0 = g_get_monotonic_time ();
  g_assert_true (mg_smime_encrypt_stream (in, sink, certs, c->gcm, &error));
  g_assert_no_error (error);
  if (count != NULL) {
    g_assert_cmpint (g_mime_stream_flush (sink), ==, 0);
    assert_pieces (count, name);
  }
  if (c->large)
    g_test_message ("%s: %.0f MB/s", name, (double) LARGE / (double) (g_get_monotonic_time () - t0));
  if (c->large)
    assert_peak (&peak, name, plain_kib (TRUE), c->file);
  out_to_file (out, cpath, c->file);
  openssl_open (cpath, opened);
  assert_same_files (opened, plain_path (c->large));
  g_unlink (opened);
  g_unlink (cpath);
}

static MgX509Store *
open_x509 (void)
{
  g_autoptr (GError) error = NULL;
  MgX509Store *store = mg_x509_store_open (fx.x509, NULL, &error);

  g_assert_no_error (error);
  return store;
}

/* smime_cipher - @plain encrypted by the openssl command to bob (or @to), DER or PEM, into a file */
static char *
smime_cipher (const char *plain, const char *to, gboolean pem)
{
  g_autofree char *cert = mg_ca_path (fx.ca, to, ".pem");
  g_autofree char *path = g_build_filename (fx.dir, pem ? "to-bob.pem" : "to-bob.der", NULL);
  g_autofree char *out = mg_ca_openssl (fx.ca, NULL, 0, NULL, "cms", "-encrypt", "-binary", "-aes256", "-in", plain,
                                        "-outform", pem ? "PEM" : "DER", "-out", path, cert, NULL);

  g_assert_nonnull (out);
  return g_steal_pointer (&path);
}

/* test_smime_decrypt - mg_smime_decrypt_stream of what openssl cms -encrypt made (DER; PEM for the small file case):
 * the bytes and the serial of the key used; the clear text is not accumulated (peak growth printed) */
static void
test_smime_decrypt (gconstpointer data)
{
  const Case *c = data;
  g_autoptr (MgX509Store) store = open_x509 ();
  g_autofree char *cipher = smime_cipher (plain_path (c->large), "bob", !c->large && c->file);
  g_autofree char *opath = g_build_filename (fx.dir, "smime-dec.out", NULL);
  g_autofree char *name = case_name ("S/MIME decrypt", c);
  g_autofree char *serial = mg_ca_serial (fx.ca, "bob");
  g_autoptr (GMimeStream) in = in_stream (cipher, c->file);
  g_autoptr (GMimeStream) out = out_stream (opath, c->file);
  MgTestCount *count = NULL;
  g_autoptr (GMimeStream) sink = c->large && c->file ? counted (out, &count) : g_object_ref (out);
  g_autoptr (GError) error = NULL;
  g_autofree char *used = NULL;
  gint64 t0, growth;
  Peak peak;

  peak_begin (&peak);
  t0 = g_get_monotonic_time ();
  g_assert_true (mg_smime_decrypt_stream (in, sink, mg_x509_store_private_keys (store), 0, &used, &error));
  g_assert_no_error (error);
  if (count != NULL) {
    g_assert_cmpint (g_mime_stream_flush (sink), ==, 0);
    assert_pieces (count, name);
  }
  if (c->large)
    g_test_message ("%s: %.0f MB/s", name, (double) LARGE / (double) (g_get_monotonic_time () - t0));
  if (c->large) {
    /* OpenSSL parses the object whole: its read buffer and the parsed structure (2x the ciphertext at the parse's
     * peak, the buffer freed before decryption starts); file to file never the clear text as well (3x) */
    growth = peak_growth (&peak, name);
    if (growth >= 0 && c->file && !SANITIZED)
      g_assert_cmpint (growth, <, plain_kib (TRUE) * 5 / 2);
  }
  g_assert_cmpstr (used, ==, serial);
  out_to_file (out, opath, c->file);
  assert_same_files (opath, plain_path (c->large));
  g_unlink (opath);
  g_unlink (cipher);
}

/* test_smime_decrypt_refused - a 1 MiB bound on the 20 MB object: the limit error, no more than the bound written,
 * the spool directory empty; an object for another certificate: not held, nothing written */
static void
test_smime_decrypt_refused (void)
{
  g_autoptr (MgX509Store) store = open_x509 ();
  g_autofree char *spool = g_build_filename (fx.dir, "smime-spool", NULL);
  const gsize bound = 1024 * 1024;

  g_mkdir (spool, 0700);
  for (guint i = 0; i < 2; i++) {
    g_autofree char *cipher = smime_cipher (i == 0 ? fx.large_path : fx.small_path, i == 0 ? "bob" : "carol", FALSE);
    g_autoptr (GMimeStream) in = in_stream (cipher, TRUE);
    g_autoptr (GMimeStream) out = spool_stream (spool);
    g_autoptr (GError) error = NULL;
    g_autofree char *used = NULL;

    g_assert_false (mg_smime_decrypt_stream (in, out, mg_x509_store_private_keys (store), bound, &used, &error));
    if (i == 0) {
      g_assert_error (error, MG_KEYS_ERROR, MG_KEYS_ERROR_LIMIT);
      g_assert_nonnull (strstr (error->message, "max-decompressed (1048576 bytes)"));
      g_assert_cmpint (g_mime_stream_length (out), <=, (gint64) bound);
    } else {
      g_assert_error (error, MG_KEYS_ERROR, MG_KEYS_ERROR_NOT_HELD);
      g_assert_cmpint (g_mime_stream_length (out), ==, 0);
    }
    g_assert_null (used);
    g_assert_true (dir_empty (spool));
    g_unlink (cipher);
  }
}

/* test_smime_decrypt_forms - what else arrives: AES-256-GCM authEnveloped-data from openssl, the DER as bare base64
 * with CRLF lines (a part whose transfer encoding was not declared), and mg_smime_encrypt_stream's own BER read back
 * by the GBytes mg_smime_decrypt: the bytes each time */
static void
test_smime_decrypt_forms (void)
{
  g_autoptr (MgX509Store) store = open_x509 ();
  g_autofree char *cert = mg_ca_path (fx.ca, "bob", ".pem");
  g_autofree char *gcm = g_build_filename (fx.dir, "gcm.der", NULL);
  g_autofree char *b64 = NULL;
  gsize der_len = 0;
  g_autofree char *der = NULL;

  g_free (mg_ca_openssl (fx.ca, NULL, 0, NULL, "cms", "-encrypt", "-binary", "-aes-256-gcm", "-in", fx.small_path,
                         "-outform", "DER", "-out", gcm, cert, NULL));
  der = mg_test_read (gcm, &der_len);
  g_assert_nonnull (der);
  {
    g_autofree char *flat = g_base64_encode ((const guchar *) der, der_len);
    GString *lines = g_string_new (NULL);
    for (gsize i = 0, n = strlen (flat); i < n; i += 76)
      g_string_append_printf (lines, "%.76s\r\n", flat + i);
    b64 = g_string_free (lines, FALSE);
  }
  for (guint i = 0; i < 2; i++) {
    g_autoptr (GMimeStream) in =
      i == 0 ? g_mime_stream_mem_new_with_buffer (der, der_len) : g_mime_stream_mem_new_with_buffer (b64, strlen (b64));
    g_autoptr (GMimeStream) out = g_mime_stream_mem_new ();
    g_autoptr (GError) error = NULL;
    g_autofree char *used = NULL;
    GByteArray *got;

    g_assert_true (mg_smime_decrypt_stream (in, out, mg_x509_store_private_keys (store), 0, &used, &error));
    g_assert_no_error (error);
    got = g_mime_stream_mem_get_byte_array (GMIME_STREAM_MEM (out));
    g_assert_cmpmem (got->data, got->len, g_bytes_get_data (fx.small, NULL), g_bytes_get_size (fx.small));
  }
  {
    g_autoptr (GPtrArray) certs = bob_certs ();
    g_autoptr (GMimeStream) in = in_stream (fx.small_path, FALSE);
    g_autoptr (GMimeStream) out = g_mime_stream_mem_new ();
    g_autoptr (GError) error = NULL;
    g_autoptr (GBytes) clear = NULL;
    GByteArray *ber;

    g_assert_true (mg_smime_encrypt_stream (in, out, certs, TRUE, &error));
    g_assert_no_error (error);
    ber = g_mime_stream_mem_get_byte_array (GMIME_STREAM_MEM (out));
    clear = mg_smime_decrypt (ber->data, ber->len, mg_x509_store_private_keys (store), NULL, &error);
    g_assert_no_error (error);
    g_assert_true (g_bytes_equal (clear, fx.small));
  }
  g_unlink (gcm);
}

/* unreadable - a file stream on a write-only descriptor: every read fails */
static GMimeStream *
unreadable (const char *path)
{
  int fd = open (path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

  g_assert_cmpint (fd, >=, 0);
  g_assert_cmpint (write (fd, "x", 1), ==, 1);
  return g_mime_stream_fs_new (fd);
}

/* unwritable - a file stream on a read-only descriptor: every write fails */
static GMimeStream *
unwritable (const char *path)
{
  int fd = open (path, O_RDONLY | O_CLOEXEC);

  g_assert_cmpint (fd, >=, 0);
  return g_mime_stream_fs_new (fd);
}

/* test_stream_failure - a stream that cannot be read or written is a transient error that says which, never a short
 * result: S/MIME and OpenPGP (librnp and gpg) encryption reading, both decryptions writing */
static void
test_stream_failure (void)
{
  g_autoptr (GPtrArray) certs = bob_certs ();
  g_autoptr (MgGnupg) store = open_gw ();
  g_autoptr (GPtrArray) keys = bob_keys (store);
  g_autoptr (MgX509Store) x509 = open_x509 ();
  g_autofree char *bad = g_build_filename (fx.dir, "bad-stream", NULL);
  g_autofree char *pgp = pgp_cipher (fx.small_path, "fail.gpg", FALSE, "6");
  g_autofree char *cms = smime_cipher (fx.small_path, "bob", FALSE);

  for (guint i = 0; i < 5; i++) {
    g_autoptr (GError) error = NULL;
    g_autoptr (GMimeStream) in = i < 3 ? unreadable (bad) : in_stream (i == 3 ? pgp : cms, FALSE);
    g_autoptr (GMimeStream) out = i < 3 ? g_mime_stream_mem_new () : unwritable (fx.small_path);
    gboolean ok;

    mg_gnupg_set_encrypt_with_gpg (store, i == 2);
    if (i == 0)
      ok = mg_smime_encrypt_stream (in, out, certs, FALSE, &error);
    else if (i < 3)
      ok = mg_gnupg_encrypt_stream (store, in, out, keys, NULL, TRUE, &error);
    else if (i == 3)
      ok = mg_gnupg_decrypt_stream (store, in, out, NULL, NULL, &error);
    else
      ok = mg_smime_decrypt_stream (in, out, mg_x509_store_private_keys (x509), 0, NULL, &error);
    g_assert_false (ok);
    g_assert_error (error, MG_KEYS_ERROR, MG_KEYS_ERROR_STORE);
    g_assert_cmpstr (error->message, ==,
                     i < 3 ? "cannot read the clear text to encrypt" : "cannot write the decrypted text");
  }
  g_unlink (bad);
  g_unlink (pgp);
  g_unlink (cms);
}

static void
setup (void)
{
  g_autofree char *block = NULL, *out = NULL;
  GString *text = g_string_new (NULL);
  g_autofree guint8 *large = g_malloc (LARGE);
  g_autoptr (GRand) rand = g_rand_new_with_seed (13);

  fx.dir = mg_test_tmpdir ();
  fx.bob = mg_gpg_new ();
  fx.gw = mg_gpg_new ();
  g_assert_true (mg_gpg_add_key (fx.bob, "bob@example.net", "rsa3072"));
  g_assert_true (mg_gpg_add_key (fx.gw, "gw@example.org", "ed25519"));
  block = mg_gpg (fx.bob, NULL, 0, "--armor", "--export", "bob@example.net", NULL);
  g_assert_nonnull ((out = mg_gpg (fx.gw, block, strlen (block), "--import", NULL)));
  g_free (block);
  g_free (out);
  block = mg_gpg (fx.gw, NULL, 0, "--armor", "--export", "gw@example.org", NULL);
  g_assert_nonnull ((out = mg_gpg (fx.bob, block, strlen (block), "--import", NULL)));
  fx.ca = mg_ca_new ();
  g_assert_true (mg_ca_add_leaf (fx.ca, "bob", "bob@smime.example"));
  g_assert_true (mg_ca_add_leaf (fx.ca, "carol", "carol@smime.example"));
  fx.x509 = mg_ca_store (fx.ca, fx.dir, (const char *const[]){ "bob", NULL }, (const char *const[]){ "bob", NULL });
  for (guint i = 0; i < 40; i++)
    g_string_append_printf (text, "line %u of a small message, with CRLF\r\n", i);
  fx.small = g_string_free_to_bytes (text);
  fx.small_path = mg_test_write (fx.dir, "small.txt", g_bytes_get_data (fx.small, NULL), g_bytes_get_size (fx.small));
  for (gsize i = 0; i < LARGE; i += 4) {
    guint32 r = g_rand_int (rand);
    memcpy (large + i, &r, 4);
  }
  fx.large_path = mg_test_write (fx.dir, "large.bin", (const char *) large, LARGE);
}

int
main (int argc, char **argv)
{
  static const Case sizes[] = {
    { FALSE, FALSE, FALSE, FALSE },
    { FALSE, FALSE, TRUE, FALSE },
    { FALSE, TRUE, FALSE, FALSE },
    { FALSE, TRUE, TRUE, FALSE },
  };
  static const char *const names[] = { "small-mem", "small-file", "large-mem", "large-file" };
  static Case gpg[4], gcm[4];
  int status;

  /* large blocks always mmap()ed and returned when freed: what one test frees does not stay resident and hide the next
   * test's growth (glibc's dynamic threshold would otherwise rise to 20 MB after the first such block) */
  mallopt (M_MMAP_THRESHOLD, 128 * 1024);
  mallopt (M_TRIM_THRESHOLD, 256 * 1024);
  g_test_init (&argc, &argv, NULL);
  g_mime_init ();
  if (!mg_test_have_program ("sq")) {
    g_test_skip ("sq is needed to open librnp's output independently");
    return g_test_run ();
  }
  setup ();
  for (guint i = 0; i < G_N_ELEMENTS (sizes); i++) {
    g_autofree char *rnp = g_strdup_printf ("/stream-keys/pgp-encrypt/rnp/%s", names[i]);
    g_autofree char *gp = g_strdup_printf ("/stream-keys/pgp-encrypt/gpg/%s", names[i]);
    g_autofree char *direct = g_strdup_printf ("/stream-keys/rnp-encrypt/%s", names[i]);
    g_autofree char *dec = g_strdup_printf ("/stream-keys/pgp-decrypt/%s", names[i]);
    g_autofree char *cbc = g_strdup_printf ("/stream-keys/smime-encrypt/cbc/%s", names[i]);
    g_autofree char *gc = g_strdup_printf ("/stream-keys/smime-encrypt/gcm/%s", names[i]);
    g_autofree char *sdec = g_strdup_printf ("/stream-keys/smime-decrypt/%s", names[i]);
    gpg[i] = sizes[i];
    gpg[i].gpg = TRUE;
    gcm[i] = sizes[i];
    gcm[i].gcm = TRUE;
    g_test_add_data_func (rnp, &sizes[i], test_pgp_encrypt);
    g_test_add_data_func (gp, &gpg[i], test_pgp_encrypt);
    g_test_add_data_func (direct, &sizes[i], test_rnp_encrypt);
    g_test_add_data_func (dec, &sizes[i], test_pgp_decrypt);
    g_test_add_data_func (cbc, &sizes[i], test_smime_encrypt);
    g_test_add_data_func (gc, &gcm[i], test_smime_encrypt);
    g_test_add_data_func (sdec, &sizes[i], test_smime_decrypt);
  }
  g_test_add_func ("/stream-keys/pgp-encrypt/signed", test_pgp_encrypt_signed);
  g_test_add_func ("/stream-keys/pgp-encrypt/rnp-above", test_rnp_above);
  g_test_add_func ("/stream-keys/pgp-decrypt/limit", test_pgp_decrypt_limit);
  g_test_add_func ("/stream-keys/smime-decrypt/refused", test_smime_decrypt_refused);
  g_test_add_func ("/stream-keys/smime-decrypt/forms", test_smime_decrypt_forms);
  g_test_add_func ("/stream-keys/stream-failure", test_stream_failure);
  status = g_test_run ();
  mg_gpg_free (fx.bob);
  mg_gpg_free (fx.gw);
  mg_ca_free (fx.ca);
  mg_test_rmtree (fx.dir);
  g_bytes_unref (fx.small);
  g_free (fx.small_path);
  g_free (fx.large_path);
  g_free (fx.x509);
  g_free (fx.dir);
  return status;
}
