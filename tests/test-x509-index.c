/* test-x509-index.c - the X.509 store's address index: a pipe run reads one small file instead of every certificate
 * of certs/, and decides exactly as the whole read does.
 *
 * A real CA made with `openssl ca` (dates to the second, revocations, a CRL) fills a store with the cases the judge
 * tells apart; `mimegate keys --json` over every address must print the same bytes with and without --index, after
 * each change to the store (a certificate renamed in, one removed, a CRL added), when a decision's time runs out (a
 * certificate that expires two seconds after it is made), and when the index is truncated. The encryption the filter
 * makes from the index is opened by `openssl cms -decrypt`. With `-m perf`, /x509-index/bench times the filter over
 * stores of 5 and 5,000 certificates (MG_BENCH_BEFORE=PATH also times another mimegate binary over the same stores). */
#include "config.h"

#include <string.h>
#include <sys/stat.h>

#include <glib/gstdio.h>

#include "keys.h"
#include "testutil.h"
#include "x509.h"

typedef struct {
  MgCa *ca;
  MgCa *other; /* a root the store does not trust */
  char *dir;
  char *store;
  char *conf;
} Fixture;

static Fixture fx;
static guint serial_next = 0x1000;

/* when - a time @offset seconds from now as openssl ca's -startdate/-enddate take it */
static char *
when (gint64 offset)
{
  g_autoptr (GDateTime) t = g_date_time_new_from_unix_utc (g_get_real_time () / G_USEC_PER_SEC + offset);

  return g_date_time_format (t, "%Y%m%d%H%M%SZ");
}

/* ca_config - the files `openssl ca` keeps in @ca's directory */
static void
ca_config (MgCa *ca)
{
  g_autofree char *cnf = g_strdup_printf ("[ca]\ndefault_ca = d\n[d]\ndir = %s\ndatabase = $dir/index.txt\n"
                                          "new_certs_dir = $dir\nserial = $dir/serial\ncrlnumber = $dir/crlnumber\n"
                                          "certificate = $dir/root.pem\nprivate_key = $dir/root.key\n"
                                          "default_md = sha256\npolicy = p\nunique_subject = no\n"
                                          "default_crl_days = 30\n[p]\ncommonName = supplied\n",
                                          ca->dir);
  g_free (mg_test_write (ca->dir, "ca.cnf", cnf, -1));
  g_free (mg_test_write (ca->dir, "index.txt", "", 0));
  g_free (mg_test_write (ca->dir, "crlnumber", "01\n", -1));
}

/* issue - NAME.pem for @address, valid from @start to @end seconds from now; @usage: keyUsage (NULL: keyAgreement) */
static void
issue (MgCa *ca, const char *name, const char *address, gint64 start, gint64 end, const char *usage)
{
  g_autofree char *key = mg_ca_path (ca, name, ".key"), *csr = mg_ca_path (ca, name, ".csr");
  g_autofree char *crt = mg_ca_path (ca, name, ".pem"), *cnf = mg_ca_path (ca, "ca", ".cnf");
  g_autofree char *extname = g_strconcat (name, ".ext", NULL);
  g_autofree char *ext = g_strdup_printf ("subjectAltName=email:%s\nkeyUsage=critical,%s\n"
                                          "extendedKeyUsage=emailProtection\n",
                                          address, usage ? usage : "keyAgreement");
  g_autofree char *extpath = mg_test_write (ca->dir, extname, ext, -1);
  g_autofree char *serial = g_strdup_printf ("%04X\n", serial_next++);
  g_autofree char *subj = g_strdup_printf ("/CN=%s", name);
  g_autofree char *s = when (start), *e = when (end);
  g_autofree char *a = NULL, *b = NULL;

  g_free (mg_test_write (ca->dir, "serial", serial, -1));
  a = mg_ca_openssl (ca, NULL, 0, NULL, "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                     "-keyout", key, "-out", csr, "-subj", subj, NULL);
  g_assert_nonnull (a);
  b = mg_ca_openssl (ca, NULL, 0, NULL, "ca", "-batch", "-config", cnf, "-in", csr, "-out", crt, "-notext",
                     "-startdate", s, "-enddate", e, "-extfile", extpath, NULL);
  g_assert_nonnull (b);
}

/* put - NAME.pem of @ca into the store's SUB/ as FILE, written beside and renamed in (as admins are told to) */
static void
put (MgCa *ca, const char *name, const char *sub, const char *file)
{
  g_autofree char *src = mg_ca_path (ca, name, ".pem");
  g_autofree char *dir = g_build_filename (fx.store, sub, NULL);
  g_autofree char *tmp = g_build_filename (fx.store, "incoming.tmp", NULL);
  g_autofree char *dst = g_build_filename (dir, file, NULL);
  gsize len = 0;
  g_autofree char *data = mg_test_read (src, &len);

  g_mkdir_with_parents (dir, 0700);
  g_assert_true (g_file_set_contents (tmp, data, (gssize) len, NULL));
  g_assert_cmpint (g_rename (tmp, dst), ==, 0);
}

static const char *const addresses[] = {
  "good@x.example",  "expired@x.example", "future@x.example",    "revoked@x.example",
  "usage@x.example", "two@x.example",     "untrusted@x.example", "mixed@x.example",
  "soon@x.example",  "nobody@x.example",  "added@x.example",     NULL,
};

/* keys_json - `mimegate keys --json` over every address, with or without the index; the exit status prefixes it */
static char *
keys_json (gboolean indexed)
{
  g_autoptr (GPtrArray) argv = g_ptr_array_new ();
  MgRun run;
  char *out;

  g_ptr_array_add (argv, (gpointer) mg_test_mimegate ());
  g_ptr_array_add (argv, (gpointer) "keys");
  g_ptr_array_add (argv, (gpointer) "-c");
  g_ptr_array_add (argv, fx.conf);
  g_ptr_array_add (argv, (gpointer) "--json");
  if (indexed)
    g_ptr_array_add (argv, (gpointer) "--index");
  for (guint i = 0; addresses[i] != NULL; i++)
    g_ptr_array_add (argv, (gpointer) addresses[i]);
  g_ptr_array_add (argv, NULL);
  g_assert_true (mg_test_run (&run, (const char *const *) argv->pdata, NULL, NULL, 0));
  out = g_strdup_printf ("%d %s|%s", run.status, run.out, run.err);
  mg_run_clear (&run);
  return out;
}

/* index_path - the index inside the store */
static char *
index_path (void)
{
  return g_build_filename (fx.store, ".mimegate-index", NULL);
}

/* same_both_ways - the whole read's answer; asserts the index gives the same bytes, twice (built, then read) */
static char *
same_both_ways (void)
{
  g_autofree char *whole = keys_json (FALSE);
  g_autofree char *built = keys_json (TRUE);
  g_autofree char *read = keys_json (TRUE);
  g_autofree char *path = index_path ();
  struct stat st;

  g_assert_cmpstr (built, ==, whole);
  g_assert_cmpstr (read, ==, whole);
  g_assert_cmpint (g_stat (path, &st), ==, 0);
  g_assert_cmpint (st.st_mode & 0777, ==, 0600);
  return g_steal_pointer (&whole);
}

static void
setup (void)
{
  g_autofree char *crl = NULL, *cnf = NULL, *conf = NULL;
  const char *const none[] = { NULL };

  fx.ca = mg_ca_new ();
  fx.other = mg_ca_new ();
  ca_config (fx.ca);
  fx.dir = mg_test_tmpdir ();
  fx.store = mg_ca_store (fx.ca, fx.dir, none, none);
  issue (fx.ca, "good", "good@x.example", -60, 86400 * 300, NULL);
  issue (fx.ca, "expired", "expired@x.example", -86400 * 10, -86400, NULL);
  issue (fx.ca, "future", "future@x.example", 86400 * 10, 86400 * 20, NULL);
  issue (fx.ca, "revoked", "revoked@x.example", -60, 86400 * 300, NULL);
  issue (fx.ca, "usage", "usage@x.example", -60, 86400 * 300, "digitalSignature");
  issue (fx.ca, "two-short", "two@x.example", -60, 86400 * 100, NULL);
  issue (fx.ca, "two-long", "two@x.example", -60, 86400 * 200, NULL);
  issue (fx.ca, "mixed-old", "mixed@x.example", -86400 * 10, -3600, NULL);
  issue (fx.ca, "mixed-new", "mixed@x.example", -60, 86400 * 50, NULL);
  issue (fx.ca, "added", "added@x.example", -60, 86400 * 50, NULL);
  g_assert_true (mg_ca_add_leaf (fx.other, "stranger", "untrusted@x.example"));
  for (guint i = 0; i < 9; i++) {
    const char *names[] = { "good",      "expired",  "future",    "revoked",  "usage",
                            "two-short", "two-long", "mixed-old", "mixed-new" };
    g_autofree char *file = g_strconcat (names[i], ".pem", NULL);
    put (fx.ca, names[i], "certs", file);
  }
  put (fx.other, "stranger", "certs", "stranger.pem");
  cnf = mg_ca_path (fx.ca, "ca", ".cnf");
  crl = mg_ca_path (fx.ca, "revoked", ".pem");
  g_free (mg_ca_openssl (fx.ca, NULL, 0, NULL, "ca", "-config", cnf, "-revoke", crl, NULL));
  conf =
    g_strdup_printf ("[gateway]\nx509-store = %s\ngnupg-home = none\nreinject = /bin/false\nlog = none\n", fx.store);
  fx.conf = mg_test_write (fx.dir, "mimegate.conf", conf, -1);
}

static void
teardown (void)
{
  mg_test_rmtree (fx.dir);
  mg_ca_free (fx.ca);
  mg_ca_free (fx.other);
  g_free (fx.dir);
  g_free (fx.store);
  g_free (fx.conf);
}

/* test_same - every case, and every change to the store, answered alike with and without the index */
static void
test_same (void)
{
  g_autofree char *first = same_both_ways ();
  g_autofree char *cnf = mg_ca_path (fx.ca, "ca", ".cnf");
  g_autofree char *crl_file = mg_ca_path (fx.ca, "root", ".crl");
  g_autofree char *added = NULL, *removed = NULL, *revoked = NULL, *again = NULL, *path = index_path ();
  g_autofree char *gone = g_build_filename (fx.store, "certs", "two-long.pem", NULL);
  g_autofree char *text = NULL;
  gsize len = 0;

  /* the cases themselves: what the judge says, so that "the same" is not "the same nothing" */
  g_assert_nonnull (strstr (first, "\"reason\":\"expired on"));
  g_assert_nonnull (strstr (first, "\"reason\":\"not valid before"));
  g_assert_nonnull (strstr (first, "\"reason\":\"cannot encrypt: key usage lacks keyAgreement\""));
  g_assert_nonnull (strstr (first, "\"reason\":\"issuer not in the trusted collection\""));
  g_assert_nonnull (strstr (first, "\"reason\":\"usable, but another certificate is valid longer\""));
  g_assert_null (strstr (first, "revoked by")); /* no CRL yet */
  text = mg_test_read (path, &len);
  g_assert_true (g_str_has_prefix (text, "mimegate-x509-index v1\n"));
  g_assert_true (g_str_has_suffix (text, "\nend\n"));
  g_assert_null (strstr (text, "added@x.example\t")); /* not in the store yet */
  g_assert_nonnull (strstr (text, "good@x.example\t"));

  put (fx.ca, "added", "certs", "added.pem");
  added = same_both_ways ();
  g_assert_nonnull (strstr (added, "\"address\":\"added@x.example\",\"openpgp\":null,\"x509\":{\"fingerprint\""));

  g_assert_cmpint (g_unlink (gone), ==, 0);
  removed = same_both_ways ();
  g_assert_cmpstr (removed, !=, added);
  g_assert_null (strstr (removed, "usable, but another certificate is valid longer")); /* two@ has one left */

  {
    g_autofree char *made =
      mg_ca_openssl (fx.ca, NULL, 0, NULL, "ca", "-config", cnf, "-gencrl", "-out", crl_file, NULL);
    g_assert_nonnull (made);
  }
  {
    gsize n = 0;
    g_autofree char *data = mg_test_read (crl_file, &n);
    g_autofree char *crl_dir = g_build_filename (fx.store, "crl", NULL);
    g_mkdir (crl_dir, 0700);
    g_free (mg_test_write (crl_dir, "root.crl", data, (gssize) n));
  }
  revoked = same_both_ways ();
  g_assert_nonnull (strstr (revoked, "\"reason\":\"revoked by CRL of"));

  /* a candidate rewritten in place (same name, same inode: the listing does not change) is judged again */
  {
    g_autofree char *src = NULL, *dst = g_build_filename (fx.store, "certs", "expired.pem", NULL);
    g_autofree char *data = NULL, *renewed = NULL;
    gsize n = 0;
    FILE *f;
    issue (fx.ca, "renewed", "expired@x.example", -60, 86400 * 30, NULL);
    src = mg_ca_path (fx.ca, "renewed", ".pem");
    data = mg_test_read (src, &n);
    f = fopen (dst, "w");
    g_assert_nonnull (f);
    g_assert_cmpuint (fwrite (data, 1, n, f), ==, n);
    fclose (f);
    renewed = same_both_ways ();
    g_assert_nonnull (strstr (renewed, "\"address\":\"expired@x.example\",\"openpgp\":null,\"x509\":{\"fingerprint\""));
    g_free (revoked);
    revoked = g_steal_pointer (&renewed);
  }

  /* a half-written index is not read: rebuilt, and the answer stays */
  g_assert_cmpint (truncate (path, (off_t) (strlen (text) / 2)), ==, 0);
  again = keys_json (TRUE);
  g_assert_cmpstr (again, ==, revoked);
  g_free (text);
  text = mg_test_read (path, &len);
  g_assert_true (g_str_has_suffix (text, "\nend\n"));
}

/* test_expiry - a decision whose time runs out is judged again: the certificate that expires in 2 s is chosen, and
 * refused once it has expired, with the index not rewritten by anything else in between */
static void
test_expiry (void)
{
  g_autofree char *before = NULL, *after = NULL, *whole = NULL;

  issue (fx.ca, "soon", "soon@x.example", -60, 2, NULL);
  put (fx.ca, "soon", "certs", "soon.pem");
  before = same_both_ways ();
  g_assert_nonnull (strstr (before, "\"address\":\"soon@x.example\",\"openpgp\":null,\"x509\":{\"fingerprint\""));
  g_usleep (4 * G_USEC_PER_SEC);
  after = keys_json (TRUE);
  whole = keys_json (FALSE);
  g_assert_cmpstr (after, ==, whole);
  g_assert_nonnull (strstr (after, "\"address\":\"soon@x.example\",\"openpgp\":null,\"x509\":null"));
}

/* test_filter - the filter encrypts from the index to the certificate the judge chose; openssl opens it */
static void
test_filter (void)
{
  const char *msg = "From: a@example.org\r\nTo: good@x.example\r\nSubject: t\r\n\r\nIndexed secret 99\r\n";
  g_autofree char *key = mg_ca_path (fx.ca, "good", ".key"), *crt = mg_ca_path (fx.ca, "good", ".pem");
  g_autofree char *conf = NULL, *plain = NULL;
  MgRun run;

  g_free (same_both_ways ()); /* the index built and checked against the full judge first */
  conf = g_strdup_printf ("[gateway]\nx509-store = %s\ngnupg-home = none\nlog = none\n[default]\nencrypt = required\n",
                          fx.store);
  g_free (fx.conf);
  fx.conf = mg_test_write (fx.dir, "filter.conf", conf, -1);
  g_assert_true (mg_test_runf (&run, msg, mg_test_mimegate (), "filter", "-c", fx.conf, "--stdout", "-f",
                               "a@example.org", "--", "good@x.example", NULL));
  g_assert_cmpint (run.status, ==, 0);
  plain = mg_ca_openssl (fx.ca, run.out, run.out_len, NULL, "cms", "-decrypt", "-recip", crt, "-inkey", key, NULL);
  g_assert_nonnull (plain);
  g_assert_nonnull (strstr (plain, "Indexed secret 99"));
  mg_run_clear (&run);
}

/* test_reread_fails - the index and the files disagree (a candidate rewritten under the running process) and the
 * files cannot be read again (a broken key in private/): the lookup is a transient store error, never "no
 * certificate" (that would send an opportunistic recipient's mail in clear) */
static void
test_reread_fails (void)
{
  g_autofree char *first = same_both_ways ();
  g_autofree char *good = g_build_filename (fx.store, "certs", "good.pem", NULL);
  g_autofree char *priv = g_build_filename (fx.store, "private", NULL);
  g_autoptr (GError) error = NULL;
  g_autoptr (GPtrArray) refused = g_ptr_array_new_with_free_func ((GDestroyNotify) mg_keys_refusal_free);
  MgX509Store *store = mg_x509_store_open_indexed (fx.store, NULL, NULL, &error);
  const MgX509Cert *c;
  FILE *f;

  g_assert_no_error (error);
  g_assert_nonnull (store);
  g_assert_nonnull (strstr (first, "\"address\":\"good@x.example\",\"openpgp\":null,\"x509\":{\"fingerprint\""));
  f = fopen (good, "a"); /* the same certificate and a comment: the stamp the index recorded no longer holds */
  g_assert_nonnull (f);
  g_assert_cmpint (fputs ("# touched\n", f), >=, 0);
  fclose (f);
  g_mkdir_with_parents (priv, 0700);
  g_free (mg_test_write (priv, "broken.pem",
                         "-----BEGIN PRIVATE KEY-----\nnot base64 at all\n"
                         "-----END PRIVATE KEY-----\n",
                         -1));
  c = mg_x509_store_lookup_checked (store, "good@x.example", refused, &error);
  g_assert_null (c);
  g_assert_error (error, MG_KEYS_ERROR, MG_KEYS_ERROR_STORE);
  g_assert_nonnull (strstr (error->message, fx.store));
  mg_x509_store_free (store);
  /* the pipe run over the same store defers (75, 4.7.0) rather than send in clear */
  {
    const char *argv[] = { mg_test_mimegate (), "keys", "-c", fx.conf, "--index", "good@x.example", NULL };
    MgRun run;
    g_assert_true (mg_test_run (&run, argv, NULL, NULL, 0));
    g_assert_cmpint (run.status, ==, 75);
    mg_run_clear (&run);
  }
}

/* stamp_kind - the first letter of the index's stamp: L (certs/ counted by its directory's stat) or F (listed) */
static char
stamp_kind (void)
{
  g_autofree char *path = index_path ();
  gsize len = 0;
  g_autofree char *text = mg_test_read (path, &len);
  const char *line = strstr (text, "\nstamp ");

  g_assert_nonnull (line);
  return line[7];
}

/* test_settled - once certs/ has been left alone for a while its listing is not read: a certificate added then is
 * still found (the directory's own stat() changed), and the index is rebuilt from a listing until certs/ settles */
static void
test_settled (void)
{
  g_autofree char *before = NULL, *after = NULL, *later = NULL;
  g_autofree char *broken = g_build_filename (fx.store, "private", "broken.pem", NULL);

  g_unlink (broken);      /* left by /x509-index/reread-fails */
  g_usleep (2500 * 1000); /* SETTLED_S (2 s) and a little */
  before = same_both_ways ();
  g_assert_cmpint (stamp_kind (), ==, 'L');
  g_assert_nonnull (strstr (before, "\"address\":\"nobody@x.example\",\"openpgp\":null,\"x509\":null"));
  issue (fx.ca, "nobody", "nobody@x.example", -60, 86400 * 30, NULL);
  put (fx.ca, "nobody", "certs", "nobody.pem");
  after = same_both_ways (); /* certs/ just changed: listed again (an "F" stamp) until it settles */
  g_assert_nonnull (strstr (after, "\"address\":\"nobody@x.example\",\"openpgp\":null,\"x509\":{\"fingerprint\""));
  g_usleep (2500 * 1000); /* SETTLED_S (2 s) and a little */
  later = same_both_ways ();
  g_assert_cmpint (stamp_kind (), ==, 'L');
  g_assert_cmpstr (later, ==, after);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/x509-index/same", test_same);
  g_test_add_func ("/x509-index/expiry", test_expiry);
  g_test_add_func ("/x509-index/filter", test_filter);
  g_test_add_func ("/x509-index/reread-fails", test_reread_fails);
  g_test_add_func ("/x509-index/settled", test_settled);
  setup ();
  int status = g_test_run ();
  teardown ();
  return status;
}
