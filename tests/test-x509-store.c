/* test-x509-store.c - the X.509 store's private/ directory as admins lay it out, and the chain that goes with an
 * S/MIME signature (RFC 8550 section 2.3).
 *
 * A real CA (root → intermediate → leaves, made with openssl) fills one store per case. private/ is judged by what
 * its files hold, not by their names: each layout is proved by `openssl cms -encrypt` to the leaf and
 * `mimegate convert --to plain` giving back the clear text, and `mimegate keys` opening the same store. Signatures
 * made by `mimegate convert --sign` are checked by openssl and by NSS's cmsutil (what Thunderbird uses) with only the
 * root trusted, and the certificates they carry are listed by openssl: the intermediates, never the root. */
#include "config.h"

#include <string.h>

#include <gio/gio.h>
#include <glib/gstdio.h>

#include "testutil.h"
#include "x509.h"

#define PHRASE "layout phrase"
#define SECRET "Secret layout text 4711"

typedef struct {
  MgCa *ca;  /* root → "inter" → bob (RSA), ec (EC P-256); root → carl */
  char *dir; /* one store per case lives here */
  char *input;
} Fixture;

static Fixture fx;

/* ossl - openssl in the CA directory (file names relative to it); asserts success */
static void ossl (const char *first, ...) G_GNUC_NULL_TERMINATED;

static void
ossl (const char *first, ...)
{
  g_autoptr (GSubprocessLauncher) l =
    g_subprocess_launcher_new (G_SUBPROCESS_FLAGS_STDOUT_SILENCE | G_SUBPROCESS_FLAGS_STDERR_PIPE);
  g_autoptr (GPtrArray) argv = g_ptr_array_new ();
  g_autoptr (GSubprocess) p = NULL;
  g_autoptr (GError) error = NULL;
  g_autofree char *err = NULL;
  va_list ap;

  g_ptr_array_add (argv, (gpointer) "openssl");
  va_start (ap, first);
  for (const char *a = first; a != NULL; a = va_arg (ap, const char *))
    g_ptr_array_add (argv, (gpointer) a);
  va_end (ap);
  g_ptr_array_add (argv, NULL);
  g_subprocess_launcher_set_cwd (l, fx.ca->dir);
  p = g_subprocess_launcher_spawnv (l, (const char *const *) argv->pdata, &error);
  g_assert_no_error (error);
  g_subprocess_communicate_utf8 (p, NULL, NULL, NULL, &err, &error);
  g_assert_no_error (error);
  if (!g_subprocess_get_successful (p))
    g_error ("openssl %s failed: %s", first, err);
}

/* ca - path of NAME in the CA directory */
static char *
ca (const char *name)
{
  return g_build_filename (fx.ca->dir, name, NULL);
}

/* setup - the CA, and bob's key and certificate in every form admins meet */
static void
setup (void)
{
  const struct {
    const char *file, *armor; /* how the file begins: the form is the point */
  } forms[] = {
    { "bob.key", "-----BEGIN PRIVATE KEY-----" },
    { "bob.enc.pem", "-----BEGIN ENCRYPTED PRIVATE KEY-----" },
    { "bob.rsa.pem", "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED" },
    { "ec.trad.pem", "-----BEGIN EC PRIVATE KEY-----" },
    { "bob.csr", "-----BEGIN CERTIFICATE REQUEST-----" }, /* left by mg_ca_add_leaf_by: junk in private/ */
  };

  fx.ca = mg_ca_new ();
  fx.dir = mg_test_tmpdir ();
  g_assert_true (mg_ca_add_intermediate (fx.ca, "inter"));
  g_assert_true (mg_ca_add_leaf_by (fx.ca, "inter", "bob", "bob@example.org"));
  g_assert_true (mg_ca_add_leaf_by (fx.ca, "root", "carl", "carl@example.org"));
  g_free (mg_test_write (fx.ca->dir, "ec.ext",
                         "subjectAltName=email:ec@example.org\nkeyUsage=critical,digitalSignature,keyAgreement\n"
                         "extendedKeyUsage=emailProtection\n",
                         -1));
  ossl ("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "ec.key", "-out",
        "ec.csr", "-subj", "/CN=ec@example.org", NULL);
  ossl ("x509", "-req", "-in", "ec.csr", "-CA", "inter.pem", "-CAkey", "inter.key", "-CAcreateserial", "-days", "30",
        "-extfile", "ec.ext", "-out", "ec.pem", NULL);
  ossl ("ec", "-in", "ec.key", "-out", "ec.trad.pem", NULL);
  ossl ("pkey", "-in", "bob.key", "-outform", "DER", "-out", "bob.key.der", NULL);
  ossl ("x509", "-in", "bob.pem", "-outform", "DER", "-out", "bob.pem.der", NULL);
  ossl ("pkey", "-in", "bob.key", "-aes256", "-passout", "pass:" PHRASE, "-out", "bob.enc.pem", NULL);
  ossl ("pkcs8", "-topk8", "-in", "bob.key", "-outform", "DER", "-v2", "aes256", "-passout", "pass:" PHRASE, "-out",
        "bob.enc.der", NULL);
  ossl ("rsa", "-in", "bob.key", "-traditional", "-aes256", "-passout", "pass:" PHRASE, "-out", "bob.rsa.pem", NULL);
  ossl ("pkey", "-in", "bob.key", "-aes256", "-passout", "pass:another phrase", "-out", "bob.wrong.pem", NULL);
  ossl ("pkcs12", "-export", "-inkey", "bob.key", "-in", "bob.pem", "-certfile", "inter.pem", "-passout",
        "pass:" PHRASE, "-out", "bob.p12", NULL);
  /* bob's certificate renewed for the same key: mail encrypted to either must open */
  ossl ("x509", "-req", "-in", "bob.csr", "-CA", "inter.pem", "-CAkey", "inter.key", "-CAcreateserial", "-days", "60",
        "-extfile", "bob.ext", "-out", "bob2.pem", NULL);
  for (gsize i = 0; i < G_N_ELEMENTS (forms); i++) {
    g_autofree char *file = ca (forms[i].file);
    g_autofree char *text = mg_test_read (file, NULL);
    g_assert_true (g_str_has_prefix (text, forms[i].armor));
  }
  fx.input = mg_test_write (fx.dir, "in.eml",
                            "From: Bob <bob@example.org>\nTo: Anyone <anyone@example.org>\nSubject: chain\n"
                            "Message-ID: <x509-store@example.org>\nMIME-Version: 1.0\n"
                            "Content-Type: text/plain; charset=us-ascii\n\nSigned with the whole chain.\n",
                            -1);
}

/* A file to put in a store: @from is a list of CA files, concatenated (or "=TEXT": that text) */
typedef struct {
  const char *path;
  const char *from;
  int mode;
} File;

/* make_store - a new store DIR/NAME/x509 with ca/root.pem (and @ca_too) and @files; returns its configuration file */
static char *
make_store (const char *name, const char *ca_too, const File *files)
{
  g_autofree char *base = g_build_filename (fx.dir, name, NULL);
  g_autofree char *store = g_build_filename (base, "x509", NULL);
  const char *subs[] = { "ca", "certs", "private" };
  g_autofree char *pass = NULL, *conf = NULL;
  File all[12] = { { "ca/root.pem", "root.pem", 0644 } };
  guint n = 1;

  g_assert_cmpint (g_mkdir_with_parents (store, 0700), ==, 0);
  for (gsize i = 0; i < G_N_ELEMENTS (subs); i++) {
    g_autofree char *p = g_build_filename (store, subs[i], NULL);
    g_assert_cmpint (g_mkdir (p, 0700), ==, 0);
  }
  if (ca_too != NULL)
    all[n++] = (File){ "ca/extra.pem", ca_too, 0644 };
  for (guint i = 0; files[i].path != NULL; i++)
    all[n++] = files[i];
  for (guint i = 0; i < n; i++) {
    g_autoptr (GString) data = g_string_new (NULL);
    g_autofree char *path = g_build_filename (store, all[i].path, NULL);
    g_autoptr (GError) error = NULL;
    if (all[i].from[0] == '=')
      g_string_append (data, all[i].from + 1);
    else {
      g_auto (GStrv) names = g_strsplit (all[i].from, " ", -1);
      for (guint k = 0; names[k] != NULL; k++) {
        g_autofree char *src = ca (names[k]);
        gsize len;
        g_autofree char *bytes = mg_test_read (src, &len);
        g_string_append_len (data, bytes, (gssize) len);
      }
    }
    g_file_set_contents_full (path, data->str, (gssize) data->len, G_FILE_SET_CONTENTS_NONE, all[i].mode, &error);
    g_assert_no_error (error);
    g_assert_cmpint (g_chmod (path, all[i].mode), ==, 0);
  }
  pass = mg_test_write (base, "pass", PHRASE "\n", -1);
  conf = g_strdup_printf ("[gateway]\ngnupg-home = none\nx509-store = %s\nx509-passphrase-file = %s\n"
                          "authserv-id = gw.example\nlog = none\n",
                          store, pass);
  return mg_test_write (base, "mimegate.conf", conf, -1);
}

/* store_path - DIR/NAME/x509/REL, as the store names its files */
static char *
store_path (const char *name, const char *rel)
{
  return g_build_filename (fx.dir, name, "x509", rel, NULL);
}

/* mimegate - runs the built program with @args (NULL-terminated), English messages */
static void
mimegate (MgRun *r, const char *const *args)
{
  g_autoptr (GPtrArray) argv = g_ptr_array_new ();
  g_auto (GStrv) env = mg_test_env ("LANGUAGE", NULL, "LC_ALL", "C.UTF-8", NULL);

  g_ptr_array_add (argv, (gpointer) mg_test_mimegate ());
  for (guint i = 0; args[i] != NULL; i++)
    g_ptr_array_add (argv, (gpointer) args[i]);
  g_ptr_array_add (argv, NULL);
  g_assert_true (mg_test_run (r, (const char *const *) argv->pdata, (const char *const *) env, NULL, 0));
}

/* encrypted_to - a message whose body `openssl cms -encrypt` made for NAME.pem; returns its path */
static char *
encrypted_to (const char *case_name, const char *leaf)
{
  g_autofree char *crt = g_strdup_printf ("%s/%s.pem", fx.ca->dir, leaf);
  const char *entity = "Content-Type: text/plain; charset=us-ascii\n\n" SECRET "\n";
  gsize n;
  g_autofree char *out = mg_ca_openssl (fx.ca, entity, strlen (entity), &n, "cms", "-encrypt", "-aes256", crt, NULL);
  g_autofree char *msg = NULL, *name = g_strdup_printf ("%s.eml", case_name), *base = NULL;

  g_assert_nonnull (out);
  msg = g_strdup_printf ("From: Sender <sender@example.net>\nTo: Bob <bob@example.org>\nSubject: layout\n%s", out);
  base = g_build_filename (fx.dir, case_name, NULL);
  return mg_test_write (base, name, msg, -1);
}

typedef struct {
  const char *name;
  File files[6];       /* up to a { NULL } */
  const char *leaf;    /* the message is encrypted to this certificate */
  gboolean listed;     /* its certificate is in certs/: `mimegate keys` finds it */
  const char *refused; /* the store is refused with this reason, naming @named; NULL: it opens */
  const char *named;   /* relative to the store */
  const char *warn[3]; /* "REL: text" for each file skipped with a warning */
} Layout;

static const Layout layouts[] = {
  { "pem-pair",
    { { "private/bob.pem", "bob.pem", 0644 },
      { "private/bob.key", "bob.key", 0600 },
      { "certs/inter.pem", "inter.pem", 0644 } },
    "bob",
    FALSE },
  /* certbot: the intermediate only in chain.pem and fullchain.pem */
  { "certbot",
    { { "private/cert.pem", "bob.pem", 0644 },
      { "private/privkey.pem", "bob.key", 0600 },
      { "private/chain.pem", "inter.pem", 0644 },
      { "private/fullchain.pem", "bob.pem inter.pem", 0644 } },
    "bob",
    FALSE },
  { "cert-in-certs",
    { { "private/bob.key", "bob.key", 0600 },
      { "certs/bob.pem", "bob.pem", 0644 },
      { "certs/inter.pem", "inter.pem", 0644 } },
    "bob",
    TRUE },
  { "der",
    { { "private/bob-cert", "bob.pem.der", 0644 },
      { "private/bob-key", "bob.key.der", 0600 },
      { "certs/inter.pem", "inter.pem", 0644 } },
    "bob",
    FALSE },
  { "combined", { { "private/bob.pem", "bob.key bob.pem inter.pem", 0600 } }, "bob", FALSE },
  { "encrypted-pkcs8",
    { { "private/bob.key", "bob.enc.pem", 0600 }, { "private/bob.crt", "bob.pem", 0644 } },
    "bob",
    FALSE },
  { "encrypted-der",
    { { "private/key.bin", "bob.enc.der", 0600 }, { "private/bob.pem", "bob.pem", 0644 } },
    "bob",
    FALSE },
  { "rsa-legacy",
    { { "private/bob.key", "bob.rsa.pem", 0600 }, { "private/bob.pem", "bob.pem", 0644 } },
    "bob",
    FALSE },
  { "ec", { { "private/ec.key", "ec.trad.pem", 0600 }, { "private/ec.pem", "ec.pem", 0644 } }, "ec", FALSE },
  { "pkcs12-no-extension", { { "private/bob-bundle", "bob.p12", 0600 } }, "bob", FALSE },
  { "junk-beside",
    { { "private/bob.pem", "bob.pem", 0644 },
      { "private/bob.key", "bob.key", 0600 },
      { "private/README", "=keys for the gateway live here\n", 0644 },
      { "private/bob.csr", "bob.csr", 0644 },
      { "private/empty", "=", 0600 } },
    "bob",
    FALSE,
    NULL,
    NULL,
    { "private/README holds neither a private key nor a certificate (found: no PEM armor, and no DER certificate, key "
      "or PKCS #12)",
      "private/bob.csr holds neither a private key nor a certificate (found: -----BEGIN CERTIFICATE REQUEST-----)",
      "private/empty holds neither a private key nor a certificate (found: the file is empty)" } },
  { "renewed-old",
    { { "private/bob.key", "bob.key", 0600 },
      { "private/bob.pem", "bob.pem bob2.pem", 0644 },
      { "certs/inter.pem", "inter.pem", 0644 } },
    "bob",
    FALSE },
  { "renewed-new",
    { { "private/bob.key", "bob.key", 0600 },
      { "private/bob.pem", "bob.pem bob2.pem", 0644 },
      { "certs/inter.pem", "inter.pem", 0644 } },
    "bob2",
    FALSE },
  { "wrong-passphrase",
    { { "private/bob.key", "bob.wrong.pem", 0600 }, { "private/bob.pem", "bob.pem", 0644 } },
    "bob",
    FALSE,
    "holds a private key that cannot be read (wrong or missing passphrase?)",
    "private/bob.key" },
  { "world-readable-key",
    { { "private/bob.key", "bob.key", 0644 }, { "private/bob.pem", "bob.pem", 0644 } },
    "bob",
    FALSE,
    "is readable by group or others (mode 0644); make it 0600",
    "private/bob.key" },
  { "broken-key-armor",
    { { "private/bob.key", "=-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n", 0600 },
      { "private/bob.pem", "bob.pem", 0644 } },
    "bob",
    FALSE,
    "holds a private key that cannot be read",
    "private/bob.key" },
  { "key-without-certificate",
    { { "private/bob.key", "bob.key", 0600 } },
    "bob",
    FALSE,
    "no certificate for this private key",
    "private/bob.key" },
};

/* expect_stderr - @err holds exactly the "skipped" lines @c expects, and nothing else */
static void
expect_stderr (const Layout *c, const char *command, const char *err)
{
  g_autoptr (GString) want = g_string_new (NULL);

  for (guint i = 0; i < G_N_ELEMENTS (c->warn) && c->warn[i] != NULL; i++) {
    g_autofree char *full = store_path (c->name, c->warn[i]);
    g_string_append_printf (want, "mimegate %s: skipped: %s\n", command, full);
  }
  g_assert_cmpstr (err, ==, want->str);
}

/* each layout: convert decrypts what openssl encrypted to the leaf (or the store is refused, naming the file), and
 * `keys` opens the same store */
static void
test_private_layouts (void)
{
  for (gsize i = 0; i < G_N_ELEMENTS (layouts); i++) {
    const Layout *c = &layouts[i];
    g_autofree char *conf = make_store (c->name, NULL, c->files);
    g_autofree char *msg = encrypted_to (c->name, c->leaf);
    g_autofree char *address = g_strdup_printf ("%s@example.org", g_str_has_prefix (c->leaf, "bob") ? "bob" : c->leaf);
    const char *convert_args[] = { "convert", "-c", conf, "--to", "plain", "-r", "bob@example.org", msg, NULL };
    const char *keys_args[] = { "keys", "-c", conf, address, NULL };
    MgRun r;

    g_test_message ("layout %s", c->name);
    mimegate (&r, convert_args);
    if (c->refused != NULL) {
      g_autofree char *named = store_path (c->name, c->named);
      g_autofree char *line = g_strdup_printf ("4.7.0 mimegate convert: %s", named);
      if (r.status != 75 || !g_str_has_prefix (r.err, line))
        g_error ("layout %s: convert exited %d: %s", c->name, r.status, r.err);
      g_assert_nonnull (strstr (r.err, c->refused));
      g_assert_cmpuint (r.out_len, ==, 0);
      mg_run_clear (&r);
      mimegate (&r, keys_args);
      g_assert_cmpint (r.status, ==, 75);
      g_assert_nonnull (strstr (r.err, named));
      g_assert_nonnull (strstr (r.err, c->refused));
      mg_run_clear (&r);
      continue;
    }
    if (r.status != 0)
      g_error ("layout %s: convert exited %d: %s", c->name, r.status, r.err);
    g_assert_nonnull (strstr (r.out, SECRET));
    g_assert_null (strstr (r.out, "application/pkcs7-mime"));
    expect_stderr (c, "convert", r.err);
    mg_run_clear (&r);

    mimegate (&r, keys_args);
    expect_stderr (c, "keys", r.err);
    if (c->listed) {
      g_autofree char *crt = g_strdup_printf ("%s/%s.pem", fx.ca->dir, c->leaf);
      g_autofree char *fpr =
        mg_ca_openssl (fx.ca, NULL, 0, NULL, "x509", "-in", crt, "-noout", "-fingerprint", "-sha256", NULL);
      g_autoptr (GString) hex = g_string_new (NULL);
      for (const char *p = strchr (fpr, '=') + 1; *p && *p != '\n'; p++)
        if (*p != ':')
          g_string_append_c (hex, *p);
      g_assert_cmpint (r.status, ==, 0);
      g_assert_nonnull (strstr (r.out, hex->str));
    } else {
      /* the key is held, but its certificate is no recipient's (certs/ only): nothing to encrypt to */
      g_assert_cmpint (r.status, ==, 1);
      g_assert_nonnull (strstr (r.out, "X.509     none"));
    }
    mg_run_clear (&r);
  }
}

static int
compare_strings (gconstpointer a, gconstpointer b)
{
  return strcmp (*(const char *const *) a, *(const char *const *) b);
}

/* pairing, seen through the store's own interface: each key once per distinct certificate (fullchain.pem repeats
 * cert.pem), the chain found in chain.pem, and of a renewed pair the signer valid longest */
static void
test_pairing (void)
{
  const File certbot[] = { { "private/cert.pem", "bob.pem", 0644 },
                           { "private/privkey.pem", "bob.key", 0600 },
                           { "private/chain.pem", "inter.pem", 0644 },
                           { "private/fullchain.pem", "bob.pem inter.pem", 0644 },
                           { NULL } };
  const File renewed[] = { { "private/bob.key", "bob.key", 0600 },
                           { "private/bob.pem", "bob.pem", 0644 },
                           { "certs/bob2.pem", "bob2.pem", 0644 },
                           { "certs/inter.pem", "inter.pem", 0644 },
                           { NULL } };
  g_autofree char *s1 = g_build_filename (fx.dir, "pairing-certbot", "x509", NULL);
  g_autofree char *s2 = g_build_filename (fx.dir, "pairing-renewed", "x509", NULL);
  g_autofree char *bob = mg_ca_serial (fx.ca, "bob"), *bob2 = mg_ca_serial (fx.ca, "bob2");
  g_autoptr (GError) error = NULL;
  g_autoptr (MgX509Store) one = NULL, two = NULL;
  GPtrArray *keys;
  const MgX509Private *signer;

  g_free (make_store ("pairing-certbot", NULL, certbot));
  g_free (make_store ("pairing-renewed", NULL, renewed));
  one = mg_x509_store_open (s1, NULL, &error);
  g_assert_no_error (error);
  keys = mg_x509_store_private_keys (one);
  g_assert_cmpuint (keys->len, ==, 1);
  signer = g_ptr_array_index (keys, 0);
  g_assert_cmpstr (signer->cert->serial, ==, bob);
  g_assert_true (g_str_has_suffix (signer->path, "/private/privkey.pem"));
  g_assert_cmpint (sk_X509_num (signer->chain), ==, 1);
  g_assert_cmpstr (mg_x509_store_signer (one, "bob@example.org")->cert->serial, ==, bob);
  g_assert_cmpuint (mg_x509_store_warnings (one)->len, ==, 0);

  two = mg_x509_store_open (s2, NULL, &error);
  g_assert_no_error (error);
  keys = mg_x509_store_private_keys (two);
  g_assert_cmpuint (keys->len, ==, 2);
  g_assert_cmpstr (((MgX509Private *) g_ptr_array_index (keys, 0))->cert->serial, ==, bob);
  g_assert_cmpstr (((MgX509Private *) g_ptr_array_index (keys, 1))->cert->serial, ==, bob2);
  g_assert_cmpstr (mg_x509_store_signer (two, "bob@example.org")->cert->serial, ==, bob2);
}

/* subjects - the subjects of the certificates in the DER CMS @sig as `openssl pkcs7 -print_certs` lists them, sorted */
static char *
subjects (const char *sig)
{
  g_autofree char *out =
    mg_ca_openssl (fx.ca, NULL, 0, NULL, "pkcs7", "-inform", "DER", "-in", sig, "-print_certs", "-noout", NULL);
  g_auto (GStrv) lines = NULL;
  g_autoptr (GPtrArray) found = g_ptr_array_new ();
  GString *s = g_string_new (NULL);

  g_assert_nonnull (out);
  lines = g_strsplit (out, "\n", -1);
  for (guint i = 0; lines[i] != NULL; i++)
    if (g_str_has_prefix (lines[i], "subject="))
      g_ptr_array_add (found, lines[i] + 8);
  g_ptr_array_sort (found, compare_strings); /* certificates are a DER SET: their order is not ours */
  for (guint i = 0; i < found->len; i++)
    g_string_append_printf (s, "%s\n", (const char *) g_ptr_array_index (found, i));
  return g_string_free (s, FALSE);
}

/* nss_verify - NSS's cmsutil on a detached signature over @content, in a new database that trusts only the root */
static void
nss_verify (const char *dir, const char *sig, const char *content, gboolean want_ok)
{
  g_autofree char *db = g_build_filename (dir, "nssdb", NULL);
  g_autofree char *sqldb = g_strconcat ("sql:", db, NULL);
  g_autofree char *root = ca ("root.pem");
  const char *init[] = { "certutil", "-N", "-d", sqldb, "--empty-password", NULL };
  const char *add[] = { "certutil", "-A", "-d", sqldb, "-n", "mimegate test root", "-t", "CT,C,C", "-i", root, NULL };
  const char *decode[] = { "cmsutil", "-D", "-i", sig, "-c", content, "-d", sqldb, "-u", "4", NULL };
  g_autofree char *want = NULL;
  gsize want_len;
  MgRun r;

  g_assert_cmpint (g_mkdir (db, 0700), ==, 0);
  g_assert_true (mg_test_run (&r, init, NULL, NULL, 0));
  g_assert_cmpint (r.status, ==, 0);
  mg_run_clear (&r);
  g_assert_true (mg_test_run (&r, add, NULL, NULL, 0));
  g_assert_cmpint (r.status, ==, 0);
  mg_run_clear (&r);
  g_assert_true (mg_test_run (&r, decode, NULL, NULL, 0));
  if (want_ok) {
    want = mg_test_read (content, &want_len);
    if (r.status != 0)
      g_error ("cmsutil -D: %d: %s", r.status, r.err);
    g_assert_cmpuint (r.out_len, ==, want_len);
    g_assert_true (memcmp (r.out, want, want_len) == 0);
  } else {
    g_assert_cmpint (r.status, !=, 0);
    g_assert_nonnull (strstr (r.err, "SEC_ERROR_UNKNOWN_ISSUER"));
  }
  mg_run_clear (&r);
}

typedef struct {
  const char *name;
  const char *ca_too; /* besides the root in ca/ */
  File files[5];      /* up to a { NULL } */
  const char *signer;
  const char *want; /* the subjects of the certificates in the signature, sorted */
} Chain;

static const Chain chains[] = {
  /* key and certificate in one file (a layout the store always read) */
  { "chain-combined",
    NULL,
    { { "private/bob.pem", "bob.key bob.pem", 0600 }, { "certs/inter.pem", "inter.pem", 0644 } },
    "bob@example.org",
    "CN = Test Intermediate inter, O = mimegate tests\nCN = bob@example.org\n" },
  /* the intermediate in certs/, bob's key and certificate in private/ */
  { "chain-certs",
    NULL,
    { { "private/bob.pem", "bob.pem", 0644 },
      { "private/bob.key", "bob.key", 0600 },
      { "certs/inter.pem", "inter.pem", 0644 } },
    "bob@example.org",
    "CN = Test Intermediate inter, O = mimegate tests\nCN = bob@example.org\n" },
  /* certbot: the intermediate only in private/chain.pem and fullchain.pem */
  { "chain-certbot",
    NULL,
    { { "private/cert.pem", "bob.pem", 0644 },
      { "private/privkey.pem", "bob.key", 0600 },
      { "private/chain.pem", "inter.pem", 0644 },
      { "private/fullchain.pem", "bob.pem inter.pem", 0644 } },
    "bob@example.org",
    "CN = Test Intermediate inter, O = mimegate tests\nCN = bob@example.org\n" },
  /* the intermediate trusted in ca/ beside the root: it travels, the root does not */
  { "chain-ca",
    "inter.pem",
    { { "private/bob.pem", "bob.pem", 0644 }, { "private/bob.key", "bob.key", 0600 } },
    "bob@example.org",
    "CN = Test Intermediate inter, O = mimegate tests\nCN = bob@example.org\n" },
  /* issued by the root itself: the signer's certificate alone */
  { "chain-root-only",
    NULL,
    { { "private/carl.pem", "carl.key carl.pem", 0600 } },
    "carl@example.org",
    "CN = carl@example.org\n" },
};

/* signing: the signature carries the chain up to ca/ without the root, so openssl with only the root as CAfile and
 * NSS with only the root trusted both verify it */
static void
test_signing_chain (void)
{
  g_autofree char *root = ca ("root.pem");
  g_autofree char *script = g_test_build_filename (G_TEST_DIST, "signedparts.py", NULL);

  if (!mg_test_have_program ("cmsutil") || !mg_test_have_program ("certutil")) {
    g_test_skip ("NSS cmsutil/certutil (libnss3-tools) not installed");
    return;
  }
  for (gsize i = 0; i < G_N_ELEMENTS (chains); i++) {
    const Chain *c = &chains[i];
    g_autofree char *conf = make_store (c->name, c->ca_too, c->files);
    g_autofree char *dir = g_build_filename (fx.dir, c->name, NULL);
    g_autofree char *sig = g_build_filename (dir, "signature", NULL);
    g_autofree char *content = g_build_filename (dir, "content", NULL);
    g_autofree char *verified = NULL, *got = NULL;
    const char *args[] = {
      "convert", "-c", conf, "--sign", c->signer, "--sign-method", "smime", "--to", "plain", "-r", "anyone@example.org",
      fx.input,  NULL
    };
    const char *split[] = { "python3", script, dir, NULL };
    gsize n;
    MgRun r, s;

    g_test_message ("chain %s", c->name);
    mimegate (&r, args);
    if (r.status != 0)
      g_error ("%s: convert exited %d: %s", c->name, r.status, r.err);
    g_assert_cmpstr (r.err, ==, "");
    /* openssl: only the root is trusted, and nothing but the message is given */
    verified = mg_ca_openssl (fx.ca, r.out, r.out_len, &n, "cms", "-verify", "-CAfile", root, NULL);
    g_assert_nonnull (verified);
    g_assert_nonnull (strstr (verified, "Signed with the whole chain."));
    g_assert_true (mg_test_run (&s, split, NULL, r.out, r.out_len));
    g_assert_cmpint (s.status, ==, 0);
    g_assert_cmpstr (s.out, ==, "application/pkcs7-signature sha-256\n");
    mg_run_clear (&s);
    got = subjects (sig);
    g_assert_cmpstr (got, ==, c->want);
    nss_verify (dir, sig, content, TRUE);
    mg_run_clear (&r);
  }
}

/* the NSS check itself tells a signature without its intermediate from one with it: openssl cms -sign without
 * -certfile is what mimegate made before, and NSS refuses it with only the root trusted */
static void
test_nss_needs_chain (void)
{
  g_autofree char *dir = g_build_filename (fx.dir, "nss-control", NULL);
  g_autofree char *sig = g_build_filename (dir, "signature", NULL);
  g_autofree char *content = NULL, *sig2 = NULL;
  g_autofree char *dir2 = g_build_filename (fx.dir, "nss-control-2", NULL);

  if (!mg_test_have_program ("cmsutil") || !mg_test_have_program ("certutil")) {
    g_test_skip ("NSS cmsutil/certutil (libnss3-tools) not installed");
    return;
  }
  g_assert_cmpint (g_mkdir (dir, 0700), ==, 0);
  g_assert_cmpint (g_mkdir (dir2, 0700), ==, 0);
  content = mg_test_write (dir, "content", "Content-Type: text/plain\r\n\r\nhello\r\n", -1);
  ossl ("cms", "-sign", "-binary", "-outform", "DER", "-signer", "bob.pem", "-inkey", "bob.key", "-in", content, "-out",
        sig, NULL);
  nss_verify (dir, sig, content, FALSE);
  sig2 = g_build_filename (dir2, "signature", NULL);
  ossl ("cms", "-sign", "-binary", "-outform", "DER", "-signer", "bob.pem", "-inkey", "bob.key", "-certfile",
        "inter.pem", "-in", content, "-out", sig2, NULL);
  nss_verify (dir2, sig2, content, TRUE);
}

int
main (int argc, char **argv)
{
  int status;

  g_test_init (&argc, &argv, NULL);
  if (!mg_test_have_program ("openssl") || !mg_test_have_program ("python3"))
    return 77;
  setup ();
  g_test_add_func ("/x509-store/private-layouts", test_private_layouts);
  g_test_add_func ("/x509-store/pairing", test_pairing);
  g_test_add_func ("/x509-store/nss-needs-chain", test_nss_needs_chain);
  g_test_add_func ("/x509-store/signing-chain", test_signing_chain);
  status = g_test_run ();
  mg_ca_free (fx.ca);
  mg_test_rmtree (fx.dir);
  g_free (fx.dir);
  g_free (fx.input);
  return status;
}
