/* test-corpus.c - every file in ../shared/corpus is classified as its SOURCES.md describes it, and every sample the
 * project ships (tests/samples) as its name says.
 *
 * Table-driven: tests/corpus-table.tsv has one row per message (mbox files: per message). A corpus file without a row
 * fails the suite, so a new sample needs exactly one new row. Facts that SOURCES.md states about particular samples
 * (who they are encrypted to, who signed) are checked against an independent tool: gpg lists the keys' ids, and
 * openssl reads the certificates' serial numbers. When ../shared is not beside the checkout, everything skips. */
#include "config.h"

#include <string.h>

#include "detect.h"
#include "sources.h"
#include "testutil.h"

typedef struct {
  char *path;
  guint index;
  char *kind;
  char *kinds;
  gboolean problem;
} Row;

static GPtrArray *rows; /* (element-type Row) */

static void
row_free (Row *row)
{
  g_free (row->path);
  g_free (row->kind);
  g_free (row->kinds);
  g_free (row);
}

typedef struct {
  guint want;
  MgReport *report;
} Pick;

static void
pick_cb (const char *path, guint index, gboolean in_mbox, const guint8 *data, gsize len, guint64 done, gpointer ud)
{
  Pick *pick = ud;
  MgLimits limits;

  if (pick->report != NULL || (in_mbox ? index : 0) != pick->want)
    return;
  mg_limits_init_default (&limits);
  pick->report = mg_detect_data (data, len, &limits);
}

/* detect_file - the report of message @index of @rel (0: the whole file) */
static MgReport *
detect_file (const char *rel, guint index)
{
  g_autofree char *path = g_build_filename (mg_test_corpus (), rel, NULL);
  g_autoptr (GError) error = NULL;
  Pick pick = { index, NULL };

  g_assert_true (mg_source_read (path, pick_cb, &pick, &error));
  g_assert_no_error (error);
  g_assert_nonnull (pick.report);
  return pick.report;
}

static char *
kinds_text (guint kinds)
{
  GString *s = g_string_new (NULL);

  for (guint k = 0; k < MG_KIND_COUNT; k++)
    if (kinds & MG_KIND_BIT (k))
      g_string_append_printf (s, "%s%s", s->len ? "," : "", mg_kind_name (k));
  return g_string_free (s, FALSE);
}

static gboolean
has_problem (const MgReport *r)
{
  if (r->error || r->warnings->len)
    return TRUE;
  for (guint i = 0; i < r->parts->len; i++)
    if (((MgPart *) g_ptr_array_index (r->parts, i))->error)
      return TRUE;
  return FALSE;
}

static void
test_row (gconstpointer data)
{
  const Row *row = data;
  g_autoptr (MgReport) r = detect_file (row->path, row->index);
  g_autofree char *kinds = kinds_text (r->kinds);

  g_assert_cmpstr (mg_kind_name (r->kind), ==, row->kind);
  g_assert_cmpstr (kinds, ==, row->kinds);
  if (has_problem (r) != row->problem)
    g_error ("%s: expected %s, got %s (%s)", row->path, row->problem ? "a reported problem" : "no problem",
             has_problem (r) ? "one" : "none", r->error ? r->error : "part errors or parser warnings");
}

static void
collect_files (const char *dir, const char *rel, GHashTable *out)
{
  g_autoptr (GDir) d = g_dir_open (dir, 0, NULL);
  const char *name;

  while (d && (name = g_dir_read_name (d)) != NULL) {
    g_autofree char *path = g_build_filename (dir, name, NULL);
    g_autofree char *r = rel ? g_build_filename (rel, name, NULL) : g_strdup (name);
    if (g_file_test (path, G_FILE_TEST_IS_DIR))
      collect_files (path, r, out);
    else
      g_hash_table_add (out, g_steal_pointer (&r));
  }
}

static void
test_every_file_has_a_row (void)
{
  g_autoptr (GHashTable) files = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  g_autoptr (GString) missing = g_string_new (NULL);
  GHashTableIter it;
  gpointer key;

  collect_files (mg_test_corpus (), NULL, files);
  g_assert_cmpuint (g_hash_table_size (files), >, 400);
  for (guint i = 0; i < rows->len; i++)
    g_hash_table_remove (files, ((Row *) g_ptr_array_index (rows, i))->path);
  g_hash_table_iter_init (&it, files);
  while (g_hash_table_iter_next (&it, &key, NULL))
    g_string_append_printf (missing, " %s", (const char *) key);
  if (missing->len)
    g_error ("corpus files without a row in corpus-table.tsv:%s", missing->str);
}

/* find_id - whether any part lists @id (or an id ending in it) among @what ("recipients", "signers", "keys"),
 * case-insensitively */
static gboolean
find_id (const MgReport *r, const char *what, const char *id, const char *name)
{
  for (guint i = 0; i < r->parts->len; i++) {
    const MgPart *p = g_ptr_array_index (r->parts, i);
    const GPtrArray *ids = strcmp (what, "recipients") == 0 ? p->info.recipients
                           : strcmp (what, "signers") == 0  ? p->info.signers
                                                            : p->info.keys;
    for (guint k = 0; k < ids->len; k++) {
      const MgCryptoId *cid = g_ptr_array_index (ids, k);
      gsize il = strlen (id), cl = strlen (cid->id);
      /* exact, or a suffix: a short key id ends its fingerprint; "serial=0x…" ends a CMS id */
      if (cl >= il && g_ascii_strcasecmp (cid->id + cl - il, id) == 0)
        if (name == NULL || g_strcmp0 (cid->name, name) == 0)
          return TRUE;
    }
  }
  return FALSE;
}

/* the encryption subkey of a key file, as gpg lists it */
static char *
gpg_subkey_of (MgGpg *gpg, const char *key_file)
{
  g_autofree char *path = g_build_filename (mg_test_corpus (), key_file, NULL);
  g_autofree char *out =
    mg_gpg (gpg, NULL, 0, "--with-colons", "--import-options", "show-only", "--import", path, NULL);
  g_auto (GStrv) lines = NULL;

  g_assert_nonnull (out);
  lines = g_strsplit (out, "\n", -1);
  for (guint i = 0; lines[i]; i++) {
    g_auto (GStrv) f = g_strsplit (lines[i], ":", -1);
    if (g_strcmp0 (f[0], "sub") == 0 && g_strv_length (f) > 11 && strchr (f[11], 'e'))
      return g_strdup_printf ("0x%s", f[4]);
  }
  return NULL;
}

static void
test_openpgp_recipients (void)
{
  MgGpg *gpg = mg_gpg_new ();
  g_autofree char *alice = gpg_subkey_of (gpg, "deltachat/key/alice-public.asc");
  g_autofree char *bob = gpg_subkey_of (gpg, "deltachat/key/bob-public.asc");
  g_autoptr (MgReport) to_alice = detect_file ("deltachat/message/thunderbird_encrypted_unsigned.eml", 0);
  g_autoptr (MgReport) to_both = detect_file ("deltachat/message/encrypted_with_received_headers.eml", 0);
  g_autoptr (MgReport) notmuch_key = detect_file ("notmuch/keys/openpgp4-secret-key.asc", 0);
  g_autoptr (MgReport) gmime_signed = detect_file ("gmime/pgp/signed-message.txt", 0);
  g_autoptr (MgReport) kde_signed = detect_file ("kde-mimetreeparser/testdata/openpgp-inline-signed.mbox", 0);

  g_assert_nonnull (alice);
  g_assert_nonnull (bob);
  g_test_message ("alice's encryption subkey per gpg: %s, bob's: %s", alice, bob);
  g_assert_true (find_id (to_alice, "recipients", alice, NULL));
  g_assert_false (find_id (to_alice, "recipients", bob, NULL));
  g_assert_true (find_id (to_both, "recipients", alice, NULL));
  /* SOURCES.md: notmuch's key 9A3AFE6C…4645CC60; GMime's signer 5182C200; KDE's test key 8F246DE6 */
  g_assert_true (find_id (notmuch_key, "keys", "0x9A3AFE6C60065A148FD4B58A7E6ABE924645CC60", NULL));
  g_assert_true (find_id (gmime_signed, "signers", "5182C200", NULL));
  g_assert_true (find_id (kde_signed, "signers", "8F246DE6", NULL));
  mg_gpg_free (gpg);
}

/* the serial of a user certificate inside a Thunderbird test PKCS#12 (passphrase "nss"), as openssl reads it */
static char *
p12_serial (MgCa *ca, const char *p12)
{
  g_autofree char *path = g_build_filename (mg_test_corpus (), p12, NULL);
  g_autofree char *pem =
    mg_ca_openssl (ca, NULL, 0, NULL, "pkcs12", "-in", path, "-passin", "pass:nss", "-clcerts", "-nokeys", NULL);
  g_autofree char *out = NULL;
  const char *eq;

  if (pem == NULL)
    pem = mg_ca_openssl (ca, NULL, 0, NULL, "pkcs12", "-legacy", "-in", path, "-passin", "pass:nss", "-clcerts",
                         "-nokeys", NULL);
  g_assert_nonnull (pem);
  out = mg_ca_openssl (ca, pem, strlen (pem), NULL, "x509", "-noout", "-serial", NULL);
  g_assert_nonnull (out);
  eq = strchr (out, '=');
  return g_strdup_printf ("serial=0x%s", g_strstrip ((char *) eq + 1));
}

static void
test_smime_recipients_and_signers (void)
{
  MgCa ca = { NULL };
  g_autofree char *bob = p12_serial (&ca, "thunderbird/smime/Bob.p12");
  g_autofree char *alice = p12_serial (&ca, "thunderbird/smime/Alice.p12");
  g_autoptr (MgReport) env = detect_file ("thunderbird/smime/alice.env.eml", 0);
  g_autoptr (MgReport) dsig = detect_file ("thunderbird/smime/alice.dsig.SHA384.multipart.eml", 0);
  g_autoptr (MgReport) chacha = detect_file ("cms-examples/authEnvelopedForBobChaCha20Poly1305.p7m", 0);
  const MgPart *sig = g_ptr_array_index (dsig->parts, 2);
  const MgPart *raw = g_ptr_array_index (chacha->parts, 0);

  g_test_message ("Bob's certificate per openssl: %s, Alice's: %s", bob, alice);
  /* SOURCES.md: every alice.*env* message decrypts with Bob.p12 */
  g_assert_true (find_id (env, "recipients", bob, NULL));
  g_assert_true (find_id (dsig, "signers", alice, "Alice@example.com"));
  g_assert_cmpstr (sig->role, ==, "signature");
  g_assert_cmpstr (((MgCryptoId *) g_ptr_array_index (sig->info.signers, 0))->digest, ==, "SHA384");
  g_assert_cmpstr (raw->info.integrity, ==, "aead");
  g_assert_cmpstr (raw->info.cipher, ==, "ChaCha20-Poly1305");
}

/* the samples the project ships are each named after the kind they must be detected as ("KIND[+variant].eml") */
static void
test_samples (void)
{
  g_autofree char *dir = g_test_build_filename (G_TEST_DIST, "samples", NULL);
  g_autoptr (GDir) d = g_dir_open (dir, 0, NULL);
  guint seen = 0, kinds = 0;
  const char *name;

  g_assert_nonnull (d);
  while ((name = g_dir_read_name (d)) != NULL) {
    g_autofree char *path = g_build_filename (dir, name, NULL);
    g_autofree char *want = g_strndup (name, strcspn (name, "+."));
    g_autofree char *data = NULL;
    g_autoptr (MgReport) r = NULL;
    MgLimits limits;
    gsize len;

    if (!g_str_has_suffix (name, ".eml"))
      continue;
    data = mg_test_read (path, &len);
    mg_limits_init_default (&limits);
    r = mg_detect_data ((const guint8 *) data, len, &limits);
    g_test_message ("%s: %s", name, mg_kind_name (r->kind));
    g_assert_cmpstr (mg_kind_name (r->kind), ==, want);
    g_assert_false (has_problem (r));
    kinds |= MG_KIND_BIT (r->kind);
    seen++;
  }
  /* one sample at least for every kind */
  g_assert_cmphex (kinds, ==, (1u << MG_KIND_COUNT) - 1);
  g_assert_cmpuint (seen, >=, MG_KIND_COUNT);
}

static void
test_skip (void)
{
  g_test_skip ("../shared/corpus is not beside the checkout (set MIMEGATE_CORPUS)");
}

static void
load_table (void)
{
  g_autofree char *table = NULL;
  g_auto (GStrv) lines = NULL;
  g_autoptr (GError) error = NULL;

  g_autofree char *path = g_test_build_filename (G_TEST_DIST, "corpus-table.tsv", NULL);

  g_file_get_contents (path, &table, NULL, &error);
  g_assert_no_error (error);
  lines = g_strsplit (table, "\n", -1);
  for (guint i = 0; lines[i] != NULL; i++) {
    g_auto (GStrv) f = NULL;
    Row *row;
    if (lines[i][0] == '#' || lines[i][0] == '\0')
      continue;
    f = g_strsplit (lines[i], "\t", -1);
    g_assert_cmpuint (g_strv_length (f), ==, 5);
    row = g_new0 (Row, 1);
    row->path = g_strdup (f[0]);
    row->index = (guint) g_ascii_strtoull (f[1], NULL, 10);
    row->kind = g_strdup (f[2]);
    row->kinds = g_strdup (f[3]);
    row->problem = strcmp (f[4], "yes") == 0;
    g_ptr_array_add (rows, row);
  }
}

int
main (int argc, char **argv)
{
  int status;

  g_test_init (&argc, &argv, NULL);
  g_mime_init ();
  rows = g_ptr_array_new_with_free_func ((GDestroyNotify) row_free);
  g_test_add_func ("/samples/named-kinds", test_samples);
  if (mg_test_corpus () == NULL) {
    g_test_add_func ("/corpus/skipped", test_skip);
    status = g_test_run ();
  } else {
    load_table ();
    g_test_add_func ("/corpus/every-file-has-a-row", test_every_file_has_a_row);
    g_test_add_func ("/corpus/openpgp-ids-match-gpg", test_openpgp_recipients);
    g_test_add_func ("/corpus/smime-ids-match-openssl", test_smime_recipients_and_signers);
    for (guint i = 0; i < rows->len; i++) {
      const Row *row = g_ptr_array_index (rows, i);
      g_autofree char *name = g_strdup_printf ("/corpus/table/%s#%u", row->path, row->index);
      g_test_add_data_func (name, row, test_row);
    }
    status = g_test_run ();
  }
  g_ptr_array_unref (rows);
  g_mime_shutdown ();
  return status;
}
