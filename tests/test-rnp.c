/* test-rnp.c - OpenPGP encryption in-process with librnp (keys/rnp.c through mg_gnupg_encrypt): what the recipients'
 * own tools open (gpg in the recipient's home, Sequoia's sq, rnp), the packets promised (SEIPD v1 with MDC, AES-256,
 * exactly the chosen subkeys), the judge running first, keyring changes, and the fallback to gpg for a key librnp
 * rejects (SHA-1 self-signatures) and for a broken export. */
#include "config.h"

#include <string.h>

#include <glib/gstdio.h>
#include <gpgme.h>

#include "generation.h"
#include "gnupg.h"
#include "rnp.h"
#include "testutil.h"

G_DEFINE_AUTOPTR_CLEANUP_FUNC (MgGpg, mg_gpg_free)

/* the recipients' homes (secret keys) and the gateway's home (their public keys only) */
static struct {
  MgGpg *alice; /* cv25519 */
  MgGpg *bob;   /* RSA-3072 */
  MgGpg *gw;
  char *dir;
} fx;

/* import_public - @from's public key for @address into @to */
static void
import_public (MgGpg *from, MgGpg *to, const char *address)
{
  g_autofree char *block = mg_gpg (from, NULL, 0, "--armor", "--export", address, NULL);
  g_autofree char *out = NULL;

  g_assert_nonnull (block);
  out = mg_gpg (to, block, strlen (block), "--import", NULL);
  g_assert_nonnull (out);
}

static MgGnupg *
open_gw (gboolean gpg)
{
  g_autoptr (GError) error = NULL;
  MgGnupg *store = mg_gnupg_open (fx.gw->home, MG_TRUST_ALWAYS, GPGME_VALIDITY_FULL, &error);

  g_assert_no_error (error);
  mg_gnupg_set_encrypt_with_gpg (store, gpg);
  return store;
}

/* lookup_keys - the judge's choice for each address, all of which must have one */
static GPtrArray *
lookup_keys (MgGnupg *store, const char *const *addresses)
{
  GPtrArray *keys = g_ptr_array_new_with_free_func ((GDestroyNotify) mg_pgp_key_free);

  for (guint i = 0; addresses[i] != NULL; i++) {
    g_autoptr (GError) error = NULL;
    MgPgpKey *k = mg_gnupg_lookup (store, addresses[i], NULL, &error);
    g_assert_no_error (error);
    g_assert_nonnull (k);
    g_ptr_array_add (keys, k);
  }
  return keys;
}

/* open_gpg - @cipher decrypted by gpg in @home; the status lines go to *@status */
static GBytes *
open_gpg (MgGpg *home, GBytes *cipher, char **status)
{
  g_autofree char *in = mg_test_write (fx.dir, "c.pgp", g_bytes_get_data (cipher, NULL), g_bytes_get_size (cipher));
  g_autofree char *outp = g_build_filename (fx.dir, "gpg.out", NULL);
  g_autofree char *st = mg_gpg (home, NULL, 0, "--status-fd", "1", "--output", outp, "--decrypt", in, NULL);
  gsize len = 0;
  char *data;

  if (st == NULL)
    return NULL;
  data = mg_test_read (outp, &len);
  g_unlink (outp);
  if (status != NULL)
    *status = g_steal_pointer (&st);
  return data ? g_bytes_new_take (data, len) : NULL;
}

/* open_sq - @cipher decrypted by Sequoia with @home's secret key for @address */
static GBytes *
open_sq (MgGpg *home, const char *address, GBytes *cipher)
{
  g_autofree char *secret = mg_gpg (home, NULL, 0, "--armor", "--export-secret-keys", address, NULL);
  g_autofree char *keyfile = mg_test_write (fx.dir, "sq-key.asc", secret, -1);
  g_autofree char *in = mg_test_write (fx.dir, "c.pgp", g_bytes_get_data (cipher, NULL), g_bytes_get_size (cipher));
  g_autofree char *outp = g_build_filename (fx.dir, "sq.out", NULL);
  MgRun run;
  gsize len = 0;
  char *data;

  g_assert_true (mg_test_runf (&run, NULL, "sq", "decrypt", "--recipient-key", keyfile, "-o", outp, in, NULL));
  if (run.status != 0)
    g_test_message ("sq: %s", run.err);
  g_assert_cmpint (run.status, ==, 0);
  mg_run_clear (&run);
  data = mg_test_read (outp, &len);
  g_unlink (outp);
  return data ? g_bytes_new_take (data, len) : NULL;
}

/* open_rnp - @cipher decrypted by the rnp command with @home's secret keys imported into its own home */
static GBytes *
open_rnp (MgGpg *home, const char *address, GBytes *cipher)
{
  g_autofree char *secret = mg_gpg (home, NULL, 0, "--armor", "--export-secret-keys", address, NULL);
  g_autofree char *rnphome = g_build_filename (fx.dir, "rnp-home", NULL);
  g_autofree char *keyfile = mg_test_write (fx.dir, "rnp-key.asc", secret, -1);
  g_autofree char *in = mg_test_write (fx.dir, "c.pgp", g_bytes_get_data (cipher, NULL), g_bytes_get_size (cipher));
  g_autofree char *outp = g_build_filename (fx.dir, "rnp.out", NULL);
  MgRun run;
  gsize len = 0;
  char *data;

  mg_test_rmtree (rnphome);
  g_mkdir_with_parents (rnphome, 0700);
  g_assert_true (
    mg_test_runf (&run, NULL, "rnp", "--homedir", rnphome, "--keyfile", keyfile, "--output", outp, "-d", in, NULL));
  if (run.status != 0)
    g_test_message ("rnp: %s", run.err);
  g_assert_cmpint (run.status, ==, 0);
  mg_run_clear (&run);
  data = mg_test_read (outp, &len);
  g_unlink (outp);
  return data ? g_bytes_new_take (data, len) : NULL;
}

/* packets - gpg --list-packets of @cipher in @home (with the secret key: the inner packets too) */
static char *
packets (MgGpg *home, GBytes *cipher)
{
  g_autofree char *in = mg_test_write (fx.dir, "c.pgp", g_bytes_get_data (cipher, NULL), g_bytes_get_size (cipher));
  g_auto (GStrv) env = mg_test_env ("GNUPGHOME", home->home, "LC_ALL", "C", NULL);
  const char *argv[] = { "gpg", "--batch", "--list-packets", in, NULL };
  MgRun run;
  char *out;

  g_assert_true (mg_test_run (&run, argv, (const char *const *) env, NULL, 0));
  out = g_strconcat (run.out, "\n", run.err, NULL);
  mg_run_clear (&run);
  return out;
}

/* pkesk_ids - the key ids of the public-key encrypted session key packets, in order, upper case */
static char *
pkesk_ids (const char *listing)
{
  g_auto (GStrv) lines = g_strsplit (listing, "\n", -1);
  GString *ids = g_string_new (NULL);

  for (guint i = 0; lines[i] != NULL; i++) {
    const char *k = strstr (lines[i], ":pubkey enc packet:") ? strstr (lines[i], "keyid ") : NULL;
    if (k != NULL) {
      g_autofree char *id = g_ascii_strup (k + 6, 16);
      g_string_append_printf (ids, "%s%s", ids->len ? " " : "", id);
    }
  }
  return g_string_free (ids, FALSE);
}

static void
assert_same (GBytes *got, GBytes *want)
{
  g_assert_nonnull (got);
  g_assert_cmpuint (g_bytes_get_size (got), ==, g_bytes_get_size (want));
  g_assert_true (g_bytes_equal (got, want));
}

/* open_all - @cipher opened by gpg (the recipient's home), sq and rnp for @address: the bytes of @plain each time;
 * gpg's status says SEIPD with MDC and the cipher (9: AES-256) */
static void
open_all (MgGpg *home, const char *address, GBytes *cipher, GBytes *plain)
{
  g_autofree char *status = NULL;
  g_autoptr (GBytes) by_gpg = open_gpg (home, cipher, &status);
  g_autoptr (GBytes) by_sq = open_sq (home, address, cipher);
  g_autoptr (GBytes) by_rnp = open_rnp (home, address, cipher);

  assert_same (by_gpg, plain);
  g_assert_nonnull (strstr (status, "[GNUPG:] DECRYPTION_INFO 2 9"));
  g_assert_nonnull (strstr (status, "[GNUPG:] DECRYPTION_OKAY"));
  g_assert_nonnull (strstr (status, "[GNUPG:] GOODMDC"));
  assert_same (by_sq, plain);
  assert_same (by_rnp, plain);
}

/* test_tools_open - cv25519 and RSA-3072 recipients, one each and both in one message, armored: gpg in the
 * recipient's home, sq and rnp all give back the bytes; the packets are SEIPD with MDC (AES-256, ZLIB) to exactly the
 * chosen subkeys; the store ran no gpg for the encryption beyond one export per key */
static void
test_tools_open (void)
{
  g_autoptr (MgGnupg) store = open_gw (FALSE);
  static const char *const both[] = { "alice@example.org", "bob@example.net", NULL };
  g_autoptr (GPtrArray) keys = lookup_keys (store, both);
  g_autoptr (GBytes) plain = g_bytes_new_static ("Subject: hello\r\n\r\nA small message.\r\n", 36);
  g_autofree char *alice_sub = mg_gpg_encryption_keyid (fx.alice, "alice@example.org");
  g_autofree char *bob_sub = mg_gpg_encryption_keyid (fx.bob, "bob@example.net");
  guint before = mg_gnupg_processes (store);

  g_assert_cmpstr (((MgPgpKey *) g_ptr_array_index (keys, 0))->subkey_id, ==, alice_sub);
  g_assert_cmpstr (((MgPgpKey *) g_ptr_array_index (keys, 1))->subkey_id, ==, bob_sub);
  for (int which = 0; which < 3; which++) {
    g_autoptr (GPtrArray) chosen = g_ptr_array_new ();
    g_autoptr (GBytes) cipher = NULL;
    g_autoptr (GError) error = NULL;
    g_autofree char *listing = NULL, *ids = NULL, *want = NULL;
    g_autoptr (GPtrArray) notes = NULL;

    if (which != 1)
      g_ptr_array_add (chosen, g_ptr_array_index (keys, 0));
    if (which != 0)
      g_ptr_array_add (chosen, g_ptr_array_index (keys, 1));
    cipher = mg_gnupg_encrypt (store, plain, chosen, NULL, TRUE, &error);
    g_assert_no_error (error);
    notes = mg_gnupg_take_notes (store);
    g_assert_null (notes);
    g_assert_true (g_str_has_prefix (g_bytes_get_data (cipher, NULL), "-----BEGIN PGP MESSAGE-----\n"));
    g_assert_null (memchr (g_bytes_get_data (cipher, NULL), '\r', g_bytes_get_size (cipher)));
    listing = packets (which == 1 ? fx.bob : fx.alice, cipher);
    ids = pkesk_ids (listing);
    want = which == 0   ? g_strdup (alice_sub)
           : which == 1 ? g_strdup (bob_sub)
                        : g_strdup_printf ("%s %s", alice_sub, bob_sub);
    g_assert_cmpstr (ids, ==, want);
    g_assert_nonnull (strstr (listing, ":encrypted data packet:"));
    g_assert_nonnull (strstr (listing, "mdc_method: 2"));
    g_assert_null (strstr (listing, ":aead encrypted packet:"));
    g_assert_nonnull (strstr (listing, ":compressed packet: algo=2")); /* ZLIB below 1 MiB */
    if (which != 1)
      open_all (fx.alice, "alice@example.org", cipher, plain);
    if (which != 0)
      open_all (fx.bob, "bob@example.net", cipher, plain);
  }
  g_assert_cmpuint (mg_gnupg_processes (store) - before, ==, 2); /* one export per key, never gpg --encrypt */
}

/* test_large - a 10 MB random attachment, binary packets (PGP/Inline's NAME.pgp), to both: byte-exact for every
 * tool, and not compressed (over 1 MiB) */
static void
test_large (void)
{
  g_autoptr (MgGnupg) store = open_gw (FALSE);
  static const char *const both[] = { "alice@example.org", "bob@example.net", NULL };
  g_autoptr (GPtrArray) keys = lookup_keys (store, both);
  gsize n = 10 * 1000 * 1000;
  guint32 *buf = g_malloc (n);
  g_autoptr (GRand) rand = g_rand_new_with_seed (14);
  g_autoptr (GBytes) plain = NULL, cipher = NULL;
  g_autoptr (GError) error = NULL;
  g_autofree char *listing = NULL;

  for (gsize i = 0; i < n / 4; i++)
    buf[i] = g_rand_int (rand);
  plain = g_bytes_new_take (buf, n);
  cipher = mg_gnupg_encrypt (store, plain, keys, NULL, FALSE, &error);
  g_assert_no_error (error);
  g_assert_null (mg_gnupg_take_notes (store));
  g_assert_cmpuint (((const guint8 *) g_bytes_get_data (cipher, NULL))[0] & 0x80, !=, 0); /* binary, not armor */
  g_assert_cmpuint (g_bytes_get_size (cipher), >, n);
  listing = packets (fx.bob, cipher);
  g_assert_null (strstr (listing, ":compressed packet:"));
  g_assert_nonnull (strstr (listing, "mdc_method: 2"));
  open_all (fx.alice, "alice@example.org", cipher, plain);
  open_all (fx.bob, "bob@example.net", cipher, plain);
}

/* test_gpg_mode - openpgp-encrypt = gpg: every encryption runs gpg (one process each), and still opens */
static void
test_gpg_mode (void)
{
  g_autoptr (MgGnupg) store = open_gw (TRUE);
  static const char *const one[] = { "alice@example.org", NULL };
  g_autoptr (GPtrArray) keys = lookup_keys (store, one);
  g_autoptr (GBytes) plain = g_bytes_new_static ("forced through gpg\r\n", 20);

  for (int i = 0; i < 2; i++) {
    guint before = mg_gnupg_processes (store);
    g_autoptr (GError) error = NULL;
    g_autoptr (GBytes) cipher = mg_gnupg_encrypt (store, plain, keys, NULL, TRUE, &error);
    g_autoptr (GBytes) back = NULL;
    g_assert_no_error (error);
    g_assert_cmpuint (mg_gnupg_processes (store) - before, ==, 1);
    back = open_gpg (fx.alice, cipher, NULL);
    assert_same (back, plain);
  }
  g_assert_null (mg_gnupg_take_notes (store));
}

/* test_fallback_sha1 - a key whose self-signatures use SHA-1: GnuPG 2.2 accepts it, librnp 0.16 holds it invalid.
 * The judge chooses it; librnp refuses it at import; gpg encrypts; the note says so once per store */
static void
test_fallback_sha1 (void)
{
  g_autoptr (MgGpg) old = mg_gpg_new ();
  g_autofree char *out = mg_gpg (old, NULL, 0, "--cert-digest-algo", "SHA1", "--quick-gen-key", "Old <old@example.com>",
                                 "rsa2048", "sign", "never", NULL);
  g_autofree char *fpr = mg_gpg_fingerprint (old, "old@example.com");
  g_autofree char *sub = NULL, *sub_id = NULL;
  g_autoptr (MgGnupg) store = NULL;
  g_autoptr (GPtrArray) keys = NULL, notes = NULL, mixed = NULL;
  static const char *const one[] = { "old@example.com", NULL };
  static const char *const two[] = { "old@example.com", "alice@example.org", NULL };
  g_autoptr (GBytes) plain = g_bytes_new_static ("old key\r\n", 9);

  g_assert_nonnull (out);
  sub = mg_gpg (old, NULL, 0, "--cert-digest-algo", "SHA1", "--quick-add-key", fpr, "rsa2048", "encr", "never", NULL);
  g_assert_nonnull (sub);
  sub_id = mg_gpg_encryption_keyid (old, "old@example.com");
  import_public (old, fx.gw, "old@example.com");
  store = open_gw (FALSE);
  keys = lookup_keys (store, one);
  for (int i = 0; i < 2; i++) {
    g_autoptr (GError) error = NULL;
    guint before = mg_gnupg_processes (store);
    g_autoptr (GBytes) cipher = mg_gnupg_encrypt (store, plain, keys, NULL, TRUE, &error);
    g_autoptr (GBytes) back = NULL;
    g_autofree char *listing = NULL, *ids = NULL;
    g_assert_no_error (error);
    back = open_gpg (old, cipher, NULL);
    assert_same (back, plain);
    listing = packets (old, cipher);
    ids = pkesk_ids (listing);
    g_assert_cmpstr (ids, ==, sub_id);
    notes = mg_gnupg_take_notes (store);
    if (i == 0) {
      g_assert_cmpuint (mg_gnupg_processes (store) - before, ==, 2); /* the export, then gpg --encrypt */
      g_assert_nonnull (notes);
      g_assert_cmpuint (notes->len, ==, 1);
      g_assert_nonnull (strstr (g_ptr_array_index (notes, 0), fpr));
      g_assert_nonnull (strstr (g_ptr_array_index (notes, 0), "librnp holds the key invalid"));
    } else {
      g_assert_cmpuint (mg_gnupg_processes (store) - before, ==, 1); /* gpg --encrypt only: not tried again */
      g_assert_null (notes);
    }
    g_clear_pointer (&notes, g_ptr_array_unref);
  }
  /* with a key librnp can use in the same group: one message, by gpg, to both */
  mixed = lookup_keys (store, two);
  {
    g_autoptr (GError) error = NULL;
    g_autoptr (GBytes) cipher = mg_gnupg_encrypt (store, plain, mixed, NULL, TRUE, &error);
    g_autoptr (GBytes) a = NULL, b = NULL;
    g_assert_no_error (error);
    a = open_gpg (old, cipher, NULL);
    b = open_gpg (fx.alice, cipher, NULL);
    assert_same (a, plain);
    assert_same (b, plain);
  }
  g_free (mg_gpg (fx.gw, NULL, 0, "--delete-keys", fpr, NULL));
}

/* subkey_fpr - the fingerprint of the (last) subkey gpg lists for @address in @home */
static char *
subkey_fpr (MgGpg *home, const char *address)
{
  g_autofree char *colons = mg_gpg (home, NULL, 0, "--with-colons", "--list-keys", address, NULL);
  g_auto (GStrv) lines = g_strsplit (colons, "\n", -1);
  char *fpr = NULL;

  for (guint i = 0; lines[i] != NULL; i++)
    if (g_str_has_prefix (lines[i], "sub:") && lines[i + 1] != NULL && g_str_has_prefix (lines[i + 1], "fpr:")) {
      g_auto (GStrv) f = g_strsplit (lines[i + 1], ":", -1);
      g_free (fpr);
      fpr = g_strdup (f[9]);
    }
  return fpr;
}

/* test_broken_export - the module refuses what it cannot use, with a permanent error, and keeps nothing of it: an
 * empty export, a damaged one, a key named with another key's subkey (librnp is never left to pick one); the intact
 * export then imports and encrypts */
static void
test_broken_export (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (MgRnp) rnp = mg_rnp_new (&error);
  g_autofree char *fpr = mg_gpg_fingerprint (fx.alice, "alice@example.org");
  g_autofree char *sub = subkey_fpr (fx.alice, "alice@example.org");
  g_autofree char *bob_sub = subkey_fpr (fx.bob, "bob@example.net");
  g_autofree char *block = mg_gpg (fx.alice, NULL, 0, "--armor", "--export", "alice@example.org", NULL);
  g_autofree char *damaged = g_strdup (block);
  g_autoptr (GBytes) empty = g_bytes_new_static ("", 0), plain = g_bytes_new_static ("x", 1);
  g_autoptr (GBytes) bad = NULL, good = NULL, cipher = NULL;
  const char *const fprs[] = { fpr, NULL };
  const char *const subs[] = { sub, NULL };
  const char *cipher_name = NULL;
  char *body;

  g_assert_no_error (error);
  g_assert_nonnull (sub);
  g_assert_false (mg_rnp_import (rnp, fpr, sub, empty, &error));
  g_assert_error (error, MG_KEYS_ERROR, MG_KEYS_ERROR_CRYPTO);
  g_clear_error (&error);
  body = strstr (damaged, "\n\n");
  g_assert_nonnull (body);
  for (char *c = body + 40; c < body + 240 && *c; c++)
    if (g_ascii_isalnum (*c))
      *c = *c == 'A' ? 'B' : 'A';
  bad = g_bytes_new (damaged, strlen (damaged));
  g_assert_false (mg_rnp_import (rnp, fpr, sub, bad, &error));
  g_assert_error (error, MG_KEYS_ERROR, MG_KEYS_ERROR_CRYPTO);
  g_clear_error (&error);
  g_assert_false (mg_rnp_holds (rnp, fpr));
  g_assert_null (mg_rnp_encrypt (rnp, plain, fprs, subs, TRUE, NULL, &error));
  g_assert_error (error, MG_KEYS_ERROR, MG_KEYS_ERROR_CRYPTO);
  g_clear_error (&error);
  good = g_bytes_new (block, strlen (block));
  g_assert_false (mg_rnp_import (rnp, fpr, bob_sub, good, &error));
  g_assert_error (error, MG_KEYS_ERROR, MG_KEYS_ERROR_CRYPTO);
  g_clear_error (&error);
  g_assert_false (mg_rnp_holds (rnp, fpr));
  g_assert_true (mg_rnp_import (rnp, fpr, sub, good, &error));
  g_assert_no_error (error);
  g_assert_true (mg_rnp_holds (rnp, fpr));
  cipher = mg_rnp_encrypt (rnp, plain, fprs, subs, TRUE, &cipher_name, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (cipher_name, ==, "AES256");
  {
    g_autoptr (GBytes) back = open_gpg (fx.alice, cipher, NULL);
    assert_same (back, plain);
  }
}

/* subkey_fprs - every subkey fingerprint gpg lists for @address in @home, oldest first */
static GPtrArray *
subkey_fprs (MgGpg *home, const char *address)
{
  g_autofree char *colons = mg_gpg (home, NULL, 0, "--with-colons", "--list-keys", address, NULL);
  g_auto (GStrv) lines = g_strsplit (colons, "\n", -1);
  GPtrArray *out = g_ptr_array_new_with_free_func (g_free);

  for (guint i = 0; lines[i] != NULL; i++)
    if (g_str_has_prefix (lines[i], "sub:") && lines[i + 1] != NULL && g_str_has_prefix (lines[i + 1], "fpr:")) {
      g_auto (GStrv) f = g_strsplit (lines[i + 1], ":", -1);
      g_ptr_array_add (out, g_strdup (f[9]));
    }
  return out;
}

/* test_named_subkey - a key with two encryption subkeys: librnp encrypts to the one it is given, also the older one
 * (left to itself it would take the newest), so the judge's choice is what reaches the packet */
static void
test_named_subkey (void)
{
  g_autoptr (MgGpg) two = mg_gpg_new ();
  g_autoptr (GError) error = NULL;
  g_autoptr (MgRnp) rnp = mg_rnp_new (&error);
  g_autofree char *fpr = NULL, *block = NULL, *more = NULL;
  g_autoptr (GPtrArray) subs = NULL;
  g_autoptr (GBytes) keyblock = NULL, plain = g_bytes_new_static ("two subkeys\n", 12);

  g_assert_true (mg_gpg_add_key (two, "two@example.org", "ed25519"));
  fpr = mg_gpg_fingerprint (two, "two@example.org");
  g_usleep (G_USEC_PER_SEC + 100000); /* a later creation time */
  more = mg_gpg (two, NULL, 0, "--quick-add-key", fpr, "cv25519", "encr", "never", NULL);
  g_assert_nonnull (more);
  subs = subkey_fprs (two, "two@example.org");
  g_assert_cmpuint (subs->len, ==, 2);
  block = mg_gpg (two, NULL, 0, "--armor", "--export", "two@example.org", NULL);
  keyblock = g_bytes_new (block, strlen (block));
  for (guint i = 0; i < 2; i++) {
    const char *sub = g_ptr_array_index (subs, i);
    const char *const fprs[] = { fpr, NULL };
    const char *const named[] = { sub, NULL };
    g_autoptr (GBytes) cipher = NULL;
    g_autofree char *listing = NULL, *ids = NULL;
    g_assert_true (mg_rnp_import (rnp, fpr, sub, keyblock, &error));
    g_assert_no_error (error);
    cipher = mg_rnp_encrypt (rnp, plain, fprs, named, TRUE, NULL, &error);
    g_assert_no_error (error);
    listing = packets (two, cipher);
    ids = pkesk_ids (listing);
    g_assert_cmpstr (ids, ==, sub + 24); /* the key id: the last 16 hex digits of the fingerprint */
  }
}

/* test_judge_first - a revoked and an expired key are refused by the judge (no key reaches librnp); a key added to
 * the home is used by the next run, and a key removed is not (the address index and the exports beside it are
 * rebuilt when the keyring changes) */
static void
test_judge_first (void)
{
  g_autoptr (MgGpg) carol = mg_gpg_new ();
  g_autoptr (MgGpg) dave = mg_gpg_new ();
  g_autofree char *carol_fpr = NULL, *out = NULL, *rev = NULL;
  g_autoptr (GPtrArray) refused = g_ptr_array_new_with_free_func ((GDestroyNotify) mg_keys_refusal_free);
  g_autoptr (GError) error = NULL;

  g_assert_true (mg_gpg_add_key (carol, "carol@example.org", "ed25519"));
  carol_fpr = mg_gpg_fingerprint (carol, "carol@example.org");
  import_public (carol, fx.gw, "carol@example.org");
  out = mg_gpg (dave, NULL, 0, "--quick-gen-key", "Dave <dave@example.org>", "ed25519", "sign", "never", NULL);
  g_assert_nonnull (out);
  g_free (out);
  {
    g_autofree char *dfpr = mg_gpg_fingerprint (dave, "dave@example.org");
    out = mg_gpg (dave, NULL, 0, "--quick-add-key", dfpr, "cv25519", "encr", "seconds=1", NULL);
    g_assert_nonnull (out);
  }
  import_public (dave, fx.gw, "dave@example.org");
  g_usleep (2 * G_USEC_PER_SEC);
  /* revoke carol in the gateway's home */
  rev = g_build_filename (carol->home, "openpgp-revocs.d", NULL);
  {
    g_autofree char *file = g_strconcat (rev, "/", carol_fpr, ".rev", NULL);
    gsize len = 0;
    g_autofree char *text = mg_test_read (file, &len);
    char *colon;
    g_assert_nonnull (text);
    colon = strstr (text, ":-----BEGIN");
    g_assert_nonnull (colon);
    g_free (out);
    out = mg_gpg (fx.gw, colon + 1, strlen (colon + 1), "--import", NULL);
    g_assert_nonnull (out);
  }
  {
    g_autoptr (MgGnupg) store = open_gw (FALSE);
    g_autoptr (MgPgpKey) c = mg_gnupg_lookup (store, "carol@example.org", refused, &error);
    g_autoptr (MgPgpKey) d = NULL;
    g_assert_no_error (error);
    g_assert_null (c);
    g_assert_cmpuint (refused->len, ==, 1);
    g_assert_nonnull (strstr (((MgRefusal *) g_ptr_array_index (refused, 0))->reason, "revoked"));
    d = mg_gnupg_lookup (store, "dave@example.org", refused, &error);
    g_assert_no_error (error);
    g_assert_null (d);
    g_assert_cmpuint (refused->len, ==, 2);
    g_assert_nonnull (strstr (((MgRefusal *) g_ptr_array_index (refused, 1))->reason, "expired"));
  }
}

/* filter_run - mimegate filter --stdout for one message to @rcpt with @conf (the address index on); its output */
static char *
filter_run (const char *conf, const char *rcpt)
{
  g_autofree char *msg = g_strdup_printf ("From: s@example.net\nTo: %s\nSubject: t\n\nhello\n", rcpt);
  MgRun run;
  char *out;

  g_assert_true (mg_test_runf (&run, msg, mg_test_mimegate (), "filter", "-c", conf, "--stdout", "-f", "s@example.net",
                               "--", rcpt, NULL));
  if (run.status != 0)
    g_test_message ("filter: %s %s", run.out, run.err);
  g_assert_cmpint (run.status, ==, 0);
  g_assert_cmpstr (run.err, ==, ""); /* nothing on stderr: pipe(8) would put it in a bounce */
  out = g_steal_pointer (&run.out);
  mg_run_clear (&run);
  return out;
}

/* test_keyring_changes - through the filter (address index and exports in the home): a key added is used on the next
 * message, a key removed is not; every log record names no note when librnp did the work */
static void
test_keyring_changes (void)
{
  g_autoptr (MgGpg) erin = mg_gpg_new ();
  g_autofree char *log = g_build_filename (fx.dir, "log.json", NULL);
  g_autofree char *text = g_strdup_printf ("[gateway]\ngnupg-home = %s\nx509-store = none\ntrust-model = always\n"
                                           "log = json:%s\nopenpgp-encrypt = rnp\n",
                                           fx.gw->home, log);
  g_autofree char *conf = mg_test_write (fx.dir, "filter.conf", text, -1);
  g_autofree char *out1 = NULL, *out2 = NULL, *out3 = NULL, *block = NULL, *fpr = NULL, *logged = NULL;
  g_autofree char *export_dir = g_build_filename (fx.gw->home, "mimegate-keys", NULL);
  gsize len = 0;

  g_assert_true (mg_gpg_add_key (erin, "erin@example.org", "ed25519"));
  fpr = mg_gpg_fingerprint (erin, "erin@example.org");
  out1 = filter_run (conf, "erin@example.org");
  g_assert_null (strstr (out1, "multipart/encrypted"));
  import_public (erin, fx.gw, "erin@example.org");
  out2 = filter_run (conf, "erin@example.org");
  g_assert_nonnull (strstr (out2, "multipart/encrypted"));
  block = mg_test_pgp_block (out2);
  {
    g_autoptr (GBytes) cipher = g_bytes_new (block, strlen (block));
    g_autofree char *status = NULL;
    g_autoptr (GBytes) back = open_gpg (erin, cipher, &status);
    g_assert_nonnull (back);
    g_assert_nonnull (strstr (g_bytes_get_data (back, NULL), "hello"));
  }
  {
    g_autofree char *path = g_build_filename (export_dir, fpr, NULL);
    GStatBuf st;
    g_assert_cmpint (g_stat (path, &st), ==, 0);
    g_assert_cmpuint (st.st_mode & 0777, ==, 0600);
  }
  g_free (mg_gpg (fx.gw, NULL, 0, "--delete-keys", fpr, NULL));
  out3 = filter_run (conf, "erin@example.org");
  g_assert_null (strstr (out3, "multipart/encrypted"));
  {
    g_autofree char *path = g_build_filename (export_dir, fpr, NULL);
    g_assert_false (g_file_test (path, G_FILE_TEST_EXISTS)); /* cleared with the index rebuild */
  }
  logged = mg_test_read (log, &len);
  g_assert_nonnull (logged);
  g_assert_nonnull (strstr (logged, "\"notes\":[]"));
}

/* test_filter_note - the note of a fallback reaches the filter's log record; stderr stays empty */
static void
test_filter_note (void)
{
  g_autoptr (MgGpg) old = mg_gpg_new ();
  g_autofree char *log = g_build_filename (fx.dir, "note.json", NULL);
  g_autofree char *text = g_strdup_printf ("[gateway]\ngnupg-home = %s\nx509-store = none\ntrust-model = always\n"
                                           "log = json:%s\nopenpgp-encrypt = rnp\n",
                                           fx.gw->home, log);
  g_autofree char *conf = mg_test_write (fx.dir, "note.conf", text, -1);
  g_autofree char *out = NULL, *fpr = NULL, *logged = NULL, *o2 = NULL;
  gsize len = 0;

  out = mg_gpg (old, NULL, 0, "--cert-digest-algo", "SHA1", "--quick-gen-key", "Old <old2@example.com>", "rsa2048",
                "sign", "never", NULL);
  fpr = mg_gpg_fingerprint (old, "old2@example.com");
  o2 = mg_gpg (old, NULL, 0, "--cert-digest-algo", "SHA1", "--quick-add-key", fpr, "rsa2048", "encr", "never", NULL);
  g_assert_nonnull (o2);
  import_public (old, fx.gw, "old2@example.com");
  g_free (out);
  out = filter_run (conf, "old2@example.com");
  g_assert_nonnull (strstr (out, "multipart/encrypted"));
  logged = mg_test_read (log, &len);
  g_assert_nonnull (logged);
  g_assert_nonnull (strstr (logged, "runs gpg, not librnp"));
  g_free (mg_gpg (fx.gw, NULL, 0, "--delete-keys", fpr, NULL));
}

/* test_config_value - openpgp-encrypt takes auto, gpg or rnp; anything else is a configuration error naming file, line
 * and key, and the filter defers (75) */
static void
test_config_value (void)
{
  g_autofree char *text = g_strdup_printf ("[gateway]\ngnupg-home = %s\nx509-store = none\nlog = none\n"
                                           "openpgp-encrypt = nettle\n",
                                           fx.gw->home);
  g_autofree char *conf = mg_test_write (fx.dir, "bad.conf", text, -1);
  g_autofree char *want = g_strdup_printf (
    "4.3.5 mimegate filter: %s:5: [gateway] openpgp-encrypt = \"nettle\" is not one of: auto, gpg, rnp", conf);
  MgRun run;

  g_assert_true (mg_test_runf (&run, "From: s@example.net\n\nx\n", mg_test_mimegate (), "filter", "-c", conf,
                               "--stdout", "-f", "s@example.net", "--", "alice@example.org", NULL));
  g_assert_cmpint (run.status, ==, 75);
  g_assert_true (g_str_has_prefix (run.err, want));
  mg_run_clear (&run);
}

static void
setup (void)
{
  fx.dir = mg_test_tmpdir ();
  fx.alice = mg_gpg_new ();
  fx.bob = mg_gpg_new ();
  fx.gw = mg_gpg_new ();
  g_assert_true (mg_gpg_add_key (fx.alice, "alice@example.org", "ed25519"));
  g_assert_true (mg_gpg_add_key (fx.bob, "bob@example.net", "rsa3072"));
  import_public (fx.alice, fx.gw, "alice@example.org");
  import_public (fx.bob, fx.gw, "bob@example.net");
}

/* test_auto_per_face - openpgp-encrypt = auto: gpg in a one-shot generation (filter: loading librnp costs more than
 * the gpg process), librnp in a long-running one (serve: no gpg process per message); rnp forces librnp in both */
static void
test_auto_per_face (void)
{
  static const char *const one[] = { "alice@example.org", NULL };
  static const struct {
    const char *engine;
    gboolean long_running;
    guint processes; /* gpg runs for one encryption */
  } cases[] = {
    { "auto", FALSE, 1 }, { "auto", TRUE, 0 }, { "rnp", FALSE, 0 }, { "rnp", TRUE, 0 }, { "gpg", TRUE, 1 },
  };
  g_autoptr (GBytes) plain = g_bytes_new_static ("per face\r\n", 10);

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++) {
    g_autofree char *text =
      g_strdup_printf ("[gateway]\ngnupg-home = %s\nx509-store = none\ntrust-model = always\nlog = none\n"
                       "openpgp-encrypt = %s\n",
                       fx.gw->home, cases[i].engine);
    g_autofree char *conf = mg_test_write (fx.dir, "face.conf", text, -1);
    g_autoptr (GError) error = NULL;
    g_autoptr (MgGeneration) gen = mg_generation_load (conf, cases[i].long_running, &error);
    MgGnupg *store;
    g_autoptr (GPtrArray) keys = NULL;
    g_autoptr (GBytes) cipher = NULL, back = NULL;
    guint before;

    g_test_message ("openpgp-encrypt = %s, %s", cases[i].engine, cases[i].long_running ? "serve" : "filter");
    g_assert_no_error (error);
    store = mg_generation_take_gnupg (gen, &error);
    g_assert_no_error (error);
    keys = lookup_keys (store, one);
    /* the first encryption of a store may export the key for librnp (a gpg run): count the second one */
    g_bytes_unref (mg_gnupg_encrypt (store, plain, keys, NULL, TRUE, &error));
    g_assert_no_error (error);
    before = mg_gnupg_processes (store);
    cipher = mg_gnupg_encrypt (store, plain, keys, NULL, TRUE, &error);
    g_assert_no_error (error);
    g_assert_cmpuint (mg_gnupg_processes (store) - before, ==, cases[i].processes);
    back = open_gpg (fx.alice, cipher, NULL);
    assert_same (back, plain);
    mg_generation_give_gnupg (gen, store);
  }
}

int
main (int argc, char **argv)
{
  int status;

  g_test_init (&argc, &argv, NULL);
  if (!mg_test_have_program ("sq") || !mg_test_have_program ("rnp")) {
    g_test_skip ("sq and rnp are needed to open the results independently");
    return g_test_run ();
  }
  setup ();
  g_test_add_func ("/rnp/tools-open", test_tools_open);
  g_test_add_func ("/rnp/large", test_large);
  g_test_add_func ("/rnp/gpg-mode", test_gpg_mode);
  g_test_add_func ("/rnp/fallback-sha1", test_fallback_sha1);
  g_test_add_func ("/rnp/broken-export", test_broken_export);
  g_test_add_func ("/rnp/named-subkey", test_named_subkey);
  g_test_add_func ("/rnp/judge-first", test_judge_first);
  g_test_add_func ("/rnp/keyring-changes", test_keyring_changes);
  g_test_add_func ("/rnp/filter-note", test_filter_note);
  g_test_add_func ("/rnp/config-value", test_config_value);
  g_test_add_func ("/rnp/auto-per-face", test_auto_per_face);
  status = g_test_run ();
  mg_gpg_free (fx.alice);
  mg_gpg_free (fx.bob);
  mg_gpg_free (fx.gw);
  mg_test_rmtree (fx.dir);
  g_free (fx.dir);
  return status;
}
