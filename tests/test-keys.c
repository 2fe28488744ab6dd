/* test-keys.c - key choice, exact and explained: OpenPGP keys in a real temporary GnuPG home, X.509 certificates from a
 * real CA made with `openssl ca` (root → intermediate → leaves, a CRL), and the RFC 9216 samples from ../shared.
 *
 * Every assertion names the key or serial it expects, as gpg and openssl themselves list it. */
#include "config.h"

#include <string.h>

#include <gio/gio.h>
#include <glib/gstdio.h>
#include <gpgme.h>

#include "gnupg.h"
#include "testutil.h"
#include "x509.h"

typedef struct {
  MgGpg *gpg;
  MgGpg *other; /* a second home, for a key imported without trust */
  char *dir;    /* the X.509 work directory; the store is DIR/store */
  char *store;
  char *conf; /* a mimegate.conf pointing at both stores */
} Fixture;

static Fixture fx;

/* ---- OpenPGP fixture ---- */

static char *
fpr_of (MgGpg *gpg, const char *address)
{
  char *fpr = mg_gpg_fingerprint (gpg, address);

  g_assert_nonnull (fpr);
  return fpr;
}

/* gen - a key for @uid made at @when ("now" or a gpg --faked-system-time value), expiring after @expire */
static void
gen (MgGpg *gpg, const char *uid, const char *when, const char *expire, gboolean encrypt)
{
  g_autofree char *out = NULL, *sub = NULL, *fpr = NULL;
  g_autofree char *addr = g_strndup (strchr (uid, '<') + 1, strchr (uid, '>') - strchr (uid, '<') - 1);
  g_autofree char *faked = g_strcmp0 (when, "now") ? g_strdup_printf ("%s!", when) : NULL;

  if (faked)
    out = mg_gpg (gpg, NULL, 0, "--faked-system-time", faked, "--quick-gen-key", uid, "ed25519", "sign", expire, NULL);
  else
    out = mg_gpg (gpg, NULL, 0, "--quick-gen-key", uid, "ed25519", "sign", expire, NULL);
  g_assert_nonnull (out);
  if (!encrypt)
    return;
  /* the newest key for @addr: the one just made */
  {
    g_autofree char *spec = g_strdup_printf ("<%s>", addr);
    g_autofree char *list = mg_gpg (gpg, NULL, 0, "--with-colons", "--list-keys", spec, NULL);
    g_auto (GStrv) lines = g_strsplit (list, "\n", -1);
    for (guint i = 0; lines[i]; i++)
      if (g_str_has_prefix (lines[i], "fpr:")) {
        g_auto (GStrv) f = g_strsplit (lines[i], ":", -1);
        g_free (fpr);
        fpr = g_strdup (f[9]);
      }
  }
  if (faked)
    sub = mg_gpg (gpg, NULL, 0, "--faked-system-time", faked, "--quick-add-key", fpr, "cv25519", "encr", expire, NULL);
  else
    sub = mg_gpg (gpg, NULL, 0, "--quick-add-key", fpr, "cv25519", "encr", expire, NULL);
  g_assert_nonnull (sub);
}

/* all_fprs - every primary fingerprint gpg lists for @address, in listing order */
static GStrv
all_fprs (MgGpg *gpg, const char *address)
{
  g_autofree char *spec = g_strdup_printf ("<%s>", address);
  g_autofree char *list = mg_gpg (gpg, NULL, 0, "--with-colons", "--list-keys", spec, NULL);
  g_auto (GStrv) lines = g_strsplit (list ? list : "", "\n", -1);
  g_autoptr (GStrvBuilder) b = g_strv_builder_new ();
  gboolean primary = FALSE;

  for (guint i = 0; lines[i]; i++) {
    if (g_str_has_prefix (lines[i], "pub:"))
      primary = TRUE;
    else if (g_str_has_prefix (lines[i], "sub:"))
      primary = FALSE;
    else if (primary && g_str_has_prefix (lines[i], "fpr:")) {
      g_auto (GStrv) f = g_strsplit (lines[i], ":", -1);
      g_strv_builder_add (b, f[9]);
      primary = FALSE;
    }
  }
  return g_strv_builder_end (b);
}

static void
setup_gnupg (void)
{
  g_autofree char *revoked = NULL, *rev_file = NULL, *rev = NULL, *uidrev = NULL, *exported = NULL, *imp = NULL;
  gsize len;

  fx.gpg = mg_gpg_new ();
  gen (fx.gpg, "Valid <valid@example.org>", "now", "never", TRUE);
  gen (fx.gpg, "Expired <expired@example.org>", "20200101T000000", "1y", TRUE);
  gen (fx.gpg, "Revoked <revoked@example.org>", "now", "never", TRUE);
  gen (fx.gpg, "Sign Only <signonly@example.org>", "now", "never", FALSE);
  gen (fx.gpg, "Old <two@example.org>", "20240101T000000", "never", TRUE);
  gen (fx.gpg, "New <two@example.org>", "now", "never", TRUE);
  gen (fx.gpg, "Case <Case@EXAMPLE.ORG>", "now", "never", TRUE);
  gen (fx.gpg, "Near <xvalid@example.org>", "now", "never", TRUE);
  gen (fx.gpg, "Uid Revoked <uidrev@example.org>", "now", "never", TRUE);

  /* revoke the whole key with the revocation certificate gpg made for it (its ':' guard removed) */
  revoked = fpr_of (fx.gpg, "revoked@example.org");
  rev_file = g_strdup_printf ("%s/openpgp-revocs.d/%s.rev", fx.gpg->home, revoked);
  rev = mg_test_read (rev_file, &len);
  {
    g_autoptr (GString) s = g_string_new (rev);
    g_string_replace (s, "\n:-----BEGIN", "\n-----BEGIN", 1);
    g_autofree char *out = mg_gpg (fx.gpg, s->str, s->len, "--import", NULL);
    g_assert_nonnull (out);
  }
  /* a second user ID, then the first one revoked */
  uidrev = fpr_of (fx.gpg, "uidrev@example.org");
  {
    g_autofree char *a = mg_gpg (fx.gpg, NULL, 0, "--quick-add-uid", uidrev, "Other <other@example.org>", NULL);
    g_autofree char *b =
      mg_gpg (fx.gpg, NULL, 0, "--quick-revoke-uid", uidrev, "Uid Revoked <uidrev@example.org>", NULL);
    g_assert_nonnull (a);
    g_assert_nonnull (b);
  }
  /* a key from elsewhere, imported without any trust */
  fx.other = mg_gpg_new ();
  gen (fx.other, "Stranger <stranger@example.org>", "now", "never", TRUE);
  exported = mg_gpg (fx.other, NULL, 0, "-a", "--export", "<stranger@example.org>", NULL);
  g_assert_nonnull (exported);
  imp = mg_gpg (fx.gpg, exported, strlen (exported), "--import", NULL);
  g_assert_nonnull (imp);
}

static MgGnupg *
open_gnupg (MgTrustModel model)
{
  g_autoptr (GError) error = NULL;
  MgGnupg *g = mg_gnupg_open (fx.gpg->home, model, GPGME_VALIDITY_FULL, &error);

  g_assert_no_error (error);
  return g;
}

/* lookup - the chosen fingerprint (or NULL), the refusals as "FPR: reason" lines */
static char *
pgp_lookup (MgGnupg *g, const char *address, char **refusals)
{
  g_autoptr (GPtrArray) refused = g_ptr_array_new_with_free_func ((GDestroyNotify) mg_keys_refusal_free);
  g_autoptr (GError) error = NULL;
  g_autoptr (MgPgpKey) key = mg_gnupg_lookup (g, address, refused, &error);
  GString *s = g_string_new (NULL);

  g_assert_no_error (error);
  for (guint i = 0; i < refused->len; i++) {
    const MgRefusal *r = g_ptr_array_index (refused, i);
    g_string_append_printf (s, "%s: %s\n", r->id, r->reason);
  }
  *refusals = g_string_free (s, FALSE);
  return key ? g_strdup (key->fingerprint) : NULL;
}

static void
test_pgp_choices (void)
{
  g_autoptr (MgGnupg) g = open_gnupg (MG_TRUST_ALWAYS);
  g_autofree char *valid = fpr_of (fx.gpg, "valid@example.org");
  g_autofree char *expired = fpr_of (fx.gpg, "expired@example.org");
  g_autofree char *revoked = fpr_of (fx.gpg, "revoked@example.org");
  g_autofree char *signonly = fpr_of (fx.gpg, "signonly@example.org");
  g_autofree char *uidrev = fpr_of (fx.gpg, "uidrev@example.org");
  g_autofree char *kase = fpr_of (fx.gpg, "Case@EXAMPLE.ORG");
  struct {
    const char *address;
    const char *want; /* chosen fingerprint, or NULL */
    const char *refused_fpr;
    const char *reason;
  } cases[] = {
    { "valid@example.org", valid, NULL, NULL },
    { "expired@example.org", NULL, expired, "expired on 2020-12-31" }, /* 1y after 2020-01-01, a leap year */
    { "revoked@example.org", NULL, revoked, "revoked" },
    { "signonly@example.org", NULL, signonly, "cannot encrypt" },
    { "uidrev@example.org", NULL, uidrev, "the user ID for this address is revoked" },
    { "other@example.org", uidrev, NULL, NULL },
    { "Case@example.org", kase, NULL, NULL },
    { "alid@example.org", NULL, NULL, NULL },
    { "nobody@example.org", NULL, NULL, NULL },
  };

  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++) {
    g_autofree char *refusals = NULL;
    g_autofree char *got = pgp_lookup (g, cases[i].address, &refusals);
    g_test_message ("%s -> %s; refused: %s", cases[i].address, got ? got : "none", refusals);
    g_assert_cmpstr (got, ==, cases[i].want);
    if (cases[i].refused_fpr) {
      g_autofree char *line = g_strdup_printf ("%s: %s", cases[i].refused_fpr, cases[i].reason);
      g_assert_nonnull (strstr (refusals, line));
    } else if (cases[i].want == NULL)
      g_assert_cmpstr (refusals, ==, "");
  }
  /* "valid@" never picks xvalid@'s key: no substring match */
  {
    g_autofree char *refusals = NULL;
    g_autofree char *got = pgp_lookup (g, "valid@example.org", &refusals);
    g_autofree char *near = fpr_of (fx.gpg, "xvalid@example.org");
    g_assert_cmpstr (got, !=, near);
    g_assert_null (strstr (refusals, near));
  }
}

static void
test_pgp_newest_wins (void)
{
  g_autoptr (MgGnupg) g = open_gnupg (MG_TRUST_ALWAYS);
  g_auto (GStrv) fprs = all_fprs (fx.gpg, "two@example.org");
  g_autofree char *refusals = NULL, *got = NULL;
  const char *old_fpr = NULL, *new_fpr = NULL;

  g_assert_cmpuint (g_strv_length (fprs), ==, 2);
  /* gpg lists in keyring order: the key made with the faked 2024 time came first */
  old_fpr = fprs[0];
  new_fpr = fprs[1];
  for (int round = 0; round < 3; round++) {
    g_free (refusals);
    g_free (got);
    got = pgp_lookup (g, "two@example.org", &refusals);
    g_assert_cmpstr (got, ==, new_fpr);
  }
  g_assert_nonnull (strstr (refusals, old_fpr));
  g_assert_nonnull (strstr (refusals, "another key has a newer encryption subkey"));
}

static void
test_pgp_trust_model (void)
{
  g_autoptr (MgGnupg) strict = open_gnupg (MG_TRUST_GNUPG);
  g_autoptr (MgGnupg) always = open_gnupg (MG_TRUST_ALWAYS);
  g_autofree char *stranger = fpr_of (fx.other, "stranger@example.org");
  g_autofree char *valid = fpr_of (fx.gpg, "valid@example.org");
  g_autofree char *r1 = NULL, *r2 = NULL, *r3 = NULL;
  g_autofree char *g1 = pgp_lookup (strict, "stranger@example.org", &r1);
  g_autofree char *g2 = pgp_lookup (always, "stranger@example.org", &r2);
  g_autofree char *g3 = pgp_lookup (strict, "valid@example.org", &r3);

  g_assert_null (g1);
  g_assert_nonnull (strstr (r1, stranger));
  g_assert_nonnull (strstr (r1, "not valid enough: validity unknown, trust-model gnupg needs full"));
  g_assert_cmpstr (g2, ==, stranger);
  /* our own keys are ultimately trusted, so valid under GnuPG's model too */
  g_assert_cmpstr (g3, ==, valid);
  /* one gpg process per lookup */
  g_assert_cmpuint (mg_gnupg_processes (strict), ==, 2);
}

static void
test_pgp_secret_keys (void)
{
  g_autoptr (MgGnupg) g = open_gnupg (MG_TRUST_ALWAYS);
  g_autoptr (GError) error = NULL;
  g_autoptr (GPtrArray) secret = mg_gnupg_secret_keys (g, &error);
  g_autofree char *valid = fpr_of (fx.gpg, "valid@example.org");
  g_autofree char *stranger = fpr_of (fx.other, "stranger@example.org");
  gboolean has_valid = FALSE, has_stranger = FALSE;

  g_assert_no_error (error);
  for (guint i = 0; i < secret->len; i++) {
    const MgPgpKey *k = g_ptr_array_index (secret, i);
    has_valid |= g_strcmp0 (k->fingerprint, valid) == 0;
    has_stranger |= g_strcmp0 (k->fingerprint, stranger) == 0;
    g_assert_true (k->has_secret);
  }
  g_assert_true (has_valid);
  g_assert_false (has_stranger);
}

static void
test_pgp_missing_home (void)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *nowhere = g_build_filename (fx.gpg->home, "nowhere", NULL);
  MgGnupg *g = mg_gnupg_open (nowhere, MG_TRUST_ALWAYS, GPGME_VALIDITY_FULL, &error);

  g_assert_null (g);
  g_assert_error (error, MG_KEYS_ERROR, MG_KEYS_ERROR_STORE);
  g_assert_true (mg_keys_error_is_transient (error));
  g_assert_nonnull (strstr (error->message, nowhere));
}

/* ---- X.509 fixture ---- */

static char *
path (const char *name)
{
  return g_build_filename (fx.dir, name, NULL);
}

static void ossl (const char *first, ...) G_GNUC_NULL_TERMINATED;

/* ossl - runs openssl in the work directory; the test fails when openssl does */
static void
ossl (const char *first, ...)
{
  g_autoptr (GPtrArray) argv = g_ptr_array_new ();
  g_autoptr (GSubprocessLauncher) l =
    g_subprocess_launcher_new (G_SUBPROCESS_FLAGS_STDOUT_SILENCE | G_SUBPROCESS_FLAGS_STDERR_PIPE);
  g_autoptr (GSubprocess) p = NULL;
  g_autoptr (GError) error = NULL;
  g_autofree char *err = NULL;
  va_list ap;

  g_ptr_array_add (argv, (gpointer) "openssl");
  va_start (ap, first);
  for (const char *a = first; a; a = va_arg (ap, const char *))
    g_ptr_array_add (argv, (gpointer) a);
  va_end (ap);
  g_ptr_array_add (argv, NULL);
  g_subprocess_launcher_set_cwd (l, fx.dir);
  p = g_subprocess_launcher_spawnv (l, (const char *const *) argv->pdata, &error);
  g_assert_no_error (error);
  g_subprocess_communicate_utf8 (p, NULL, NULL, NULL, &err, &error);
  g_assert_no_error (error);
  if (!g_subprocess_get_successful (p))
    g_error ("openssl %s failed: %s", first, err);
}

static const char ca_conf[] = "[ca]\ndefault_ca = d\n[d]\ndir = .\ndatabase = index.txt\nnew_certs_dir = new\n"
                              "serial = serial\ncrlnumber = crlnumber\ndefault_md = sha256\npolicy = any\n"
                              "default_crl_days = 30\nunique_subject = no\n[any]\ncommonName = supplied\n"
                              "emailAddress = optional\n";

/* leaf - NAME.pem for @subj, signed by the intermediate (or @other_root), with @ext and the given dates */
static void
leaf (const char *name, const char *subj, const char *ext, const char *start, const char *end, const char *keytype)
{
  g_autofree char *key = g_strdup_printf ("%s.key", name);
  g_autofree char *csr = g_strdup_printf ("%s.csr", name);
  g_autofree char *crt = g_strdup_printf ("%s.pem", name);
  g_autofree char *ext_name = g_strdup_printf ("%s.ext", name);
  g_autofree char *ext_path = mg_test_write (fx.dir, ext_name, ext, -1);

  if (g_strcmp0 (keytype, "ec") == 0) {
    ossl ("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", csr,
          "-subj", subj, NULL);
  } else
    ossl ("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", subj, NULL);
  if (g_strcmp0 (keytype, "other-root") == 0)
    ossl ("x509", "-req", "-in", csr, "-CA", "root2.pem", "-CAkey", "root2.key", "-CAcreateserial", "-days", "30",
          "-extfile", ext_path, "-out", crt, NULL);
  else
    ossl ("ca", "-batch", "-config", "ca.cnf", "-keyfile", "inter.key", "-cert", "inter.pem", "-in", csr, "-out", crt,
          "-startdate", start, "-enddate", end, "-extfile", ext_path, "-notext", NULL);
}

static const char smime_ext[] = "subjectAltName=email:%s\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
                                "extendedKeyUsage=emailProtection\n";

static char *
ext_for (const char *address)
{
  return g_strdup_printf (smime_ext, address);
}

/* install - copies NAME.pem into the store's SUB directory */
static void
install (const char *name, const char *sub)
{
  g_autofree char *src_name = g_strdup_printf ("%s.pem", name);
  g_autofree char *src = path (src_name);
  g_autofree char *dst_dir = g_build_filename (fx.store, sub, NULL);
  g_autofree char *data = NULL;
  gsize len;

  data = mg_test_read (src, &len);
  g_free (mg_test_write (dst_dir, src_name, data, (gssize) len));
}

static char *
date_from_now (int days)
{
  g_autoptr (GDateTime) now = g_date_time_new_now_utc ();
  g_autoptr (GDateTime) t = g_date_time_add_days (now, days);

  return g_date_time_format (t, "%Y%m%d%H%M%SZ");
}

static void
setup_x509 (void)
{
  const char *subs[] = { "store", "store/ca", "store/certs", "store/crl", "store/private", "new" };
  g_autofree char *now = date_from_now (0), *soon = date_from_now (30), *later = date_from_now (60);
  g_autofree char *future1 = date_from_now (3650), *future2 = date_from_now (3700);
  g_autofree char *e_valid = ext_for ("valid@example.com"), *e_long = ext_for ("longest@example.com");
  g_autofree char *e_exp = ext_for ("expired@example.com"), *e_fut = ext_for ("future@example.com");
  g_autofree char *e_rev = ext_for ("revoked@example.com"), *e_untr = ext_for ("untrusted@example.com");
  g_autofree char *e_upper = ext_for ("upper@EXAMPLE.COM"), *e_bob = ext_for ("bob@example.com");

  fx.dir = mg_test_tmpdir ();
  fx.store = path ("store");
  for (gsize i = 0; i < G_N_ELEMENTS (subs); i++) {
    g_autofree char *p = path (subs[i]);
    g_assert_cmpint (g_mkdir (p, 0700), ==, 0);
  }
  g_free (mg_test_write (fx.dir, "ca.cnf", ca_conf, -1));
  g_free (mg_test_write (fx.dir, "index.txt", "", 0));
  g_free (mg_test_write (fx.dir, "serial", "1000\n", -1));
  g_free (mg_test_write (fx.dir, "crlnumber", "01\n", -1));
  g_free (
    mg_test_write (fx.dir, "ca.ext", "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n", -1));
  ossl ("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "root.key", "-out", "root.pem", "-days", "365",
        "-subj", "/CN=Test Root", "-addext", "basicConstraints=critical,CA:TRUE", "-addext",
        "keyUsage=critical,keyCertSign,cRLSign", NULL);
  ossl ("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "root2.key", "-out", "root2.pem", "-days", "365",
        "-subj", "/CN=Untrusted Root", NULL);
  ossl ("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "inter.key", "-out", "inter.csr", "-subj",
        "/CN=Test Intermediate", NULL);
  ossl ("x509", "-req", "-in", "inter.csr", "-CA", "root.pem", "-CAkey", "root.key", "-CAcreateserial", "-days", "365",
        "-extfile", "ca.ext", "-out", "inter.pem", NULL);

  leaf ("valid", "/CN=Valid", e_valid, now, soon, NULL);
  leaf ("long1", "/CN=Long One", e_long, now, soon, NULL);
  leaf ("long2", "/CN=Long Two", e_long, now, later, NULL);
  leaf ("expired", "/CN=Expired", e_exp, "20200101000000Z", "20210101000000Z", NULL);
  leaf ("future", "/CN=Future", e_fut, future1, future2, NULL);
  leaf ("server", "/CN=Server",
        "subjectAltName=email:server@example.com\nkeyUsage=keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n",
        now, soon, NULL);
  leaf ("signer", "/CN=Signer", "subjectAltName=email:signer@example.com\nkeyUsage=critical,digitalSignature\n", now,
        soon, NULL);
  leaf ("revoked", "/CN=Revoked", e_rev, now, soon, NULL);
  leaf ("subject", "/CN=Subject Only/emailAddress=subject@example.com",
        "keyUsage=keyEncipherment\nextendedKeyUsage=emailProtection\n", now, soon, NULL);
  leaf ("upper", "/CN=Upper", e_upper, now, soon, NULL);
  leaf ("ec", "/CN=EC", "subjectAltName=email:ec@example.com\nkeyUsage=keyAgreement\n", now, soon, "ec");
  leaf ("untrusted", "/CN=Untrusted", e_untr, NULL, NULL, "other-root");
  leaf ("bob", "/CN=Bob", e_bob, now, soon, NULL);
  ossl ("ca", "-config", "ca.cnf", "-keyfile", "inter.key", "-cert", "inter.pem", "-revoke", "revoked.pem", NULL);
  ossl ("ca", "-config", "ca.cnf", "-keyfile", "inter.key", "-cert", "inter.pem", "-gencrl", "-out",
        "store/crl/inter.crl", NULL);

  install ("root", "ca");
  /* the intermediate is only in certs/: chains must find it there */
  const char *leaves[] = { "inter",  "valid",   "long1",   "long2", "expired", "future",   "server",
                           "signer", "revoked", "subject", "upper", "ec",      "untrusted" };
  for (gsize i = 0; i < G_N_ELEMENTS (leaves); i++)
    install (leaves[i], "certs");
  /* Bob's key is held by the gateway: a PKCS #12 with a passphrase, the certificate inside */
  ossl ("pkcs12", "-export", "-inkey", "bob.key", "-in", "bob.pem", "-passout", "pass:s3cret phrase", "-out",
        "store/private/bob.p12", NULL);
  {
    g_autofree char *p12 = path ("store/private/bob.p12");
    g_assert_cmpint (g_chmod (p12, 0600), ==, 0);
  }
  g_free (mg_test_write (fx.dir, "pass", "s3cret phrase\n", -1));
  {
    g_autofree char *conf = g_strdup_printf ("[gateway]\ngnupg-home = %s\nx509-store = %s\ntrust-model = always\n"
                                             "x509-passphrase-file = %s/pass\n",
                                             fx.gpg->home, fx.store, fx.dir);
    fx.conf = mg_test_write (fx.dir, "mimegate.conf", conf, -1);
  }
}

static char *
serial_of (const char *name)
{
  g_autofree char *file = g_strdup_printf ("%s.pem", name);
  g_autofree char *p = path (file);
  g_autofree char *out = mg_ca_openssl (NULL, NULL, 0, NULL, "x509", "-in", p, "-noout", "-serial", NULL);

  g_assert_nonnull (out);
  return g_strdup_printf ("0x%s", g_strstrip (strchr (out, '=') + 1));
}

static char *
fingerprint_of (const char *name)
{
  g_autofree char *file = g_strdup_printf ("%s.pem", name);
  g_autofree char *p = path (file);
  g_autofree char *out =
    mg_ca_openssl (NULL, NULL, 0, NULL, "x509", "-in", p, "-noout", "-fingerprint", "-sha256", NULL);
  g_autoptr (GString) s = NULL;

  g_assert_nonnull (out);
  s = g_string_new (g_strstrip (strchr (out, '=') + 1));
  g_string_replace (s, ":", "", 0);
  return g_string_free (g_steal_pointer (&s), FALSE);
}

static MgX509Store *
open_store (const char *passphrase)
{
  g_autoptr (GError) error = NULL;
  MgX509Store *s = mg_x509_store_open (fx.store, passphrase, &error);

  g_assert_no_error (error);
  return s;
}

static void
test_x509_choices (void)
{
  g_autoptr (MgX509Store) store = open_store ("s3cret phrase");
  struct {
    const char *address;
    const char *want; /* the certificate file chosen, or NULL */
    const char *refused;
    const char *reason;
  } cases[] = {
    { "valid@example.com", "valid", NULL, NULL },
    { "valid@EXAMPLE.com", "valid", NULL, NULL },
    { "upper@example.com", "upper", NULL, NULL },
    { "subject@example.com", "subject", NULL, NULL },
    { "ec@example.com", "ec", NULL, NULL },
    { "longest@example.com", "long2", "long1", "usable, but another certificate is valid longer" },
    { "expired@example.com", NULL, "expired", "expired on 2021-01-01" },
    { "future@example.com", NULL, "future", "not valid before " },
    { "server@example.com", NULL, "server", "no emailProtection usage" },
    { "signer@example.com", NULL, "signer", "cannot encrypt: key usage lacks keyEncipherment" },
    { "revoked@example.com", NULL, "revoked", "revoked by CRL of CN=Test Intermediate on " },
    { "untrusted@example.com", NULL, "untrusted", "issuer not in the trusted collection" },
    { "Valid@example.com", "valid", NULL, NULL }, /* the whole address in any case */
    { "VALID@EXAMPLE.COM", "valid", NULL, NULL },
    { "alid@example.com", NULL, NULL, NULL }, /* never a substring */
    { "valid@example.com.evil", NULL, NULL, NULL },
    { "nobody@example.com", NULL, NULL, NULL },
  };

  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++) {
    g_autoptr (GPtrArray) refused = g_ptr_array_new_with_free_func ((GDestroyNotify) mg_keys_refusal_free);
    const MgX509Cert *c = mg_x509_store_lookup (store, cases[i].address, refused);
    g_autoptr (GString) why = g_string_new (NULL);
    for (guint k = 0; k < refused->len; k++) {
      const MgRefusal *r = g_ptr_array_index (refused, k);
      g_string_append_printf (why, "%s: %s\n", r->id, r->reason);
    }
    g_test_message ("%s -> %s; refused: %s", cases[i].address, c ? c->serial : "none", why->str);
    if (cases[i].want) {
      g_autofree char *serial = serial_of (cases[i].want);
      g_assert_nonnull (c);
      g_assert_cmpstr (c->serial, ==, serial);
    } else
      g_assert_null (c);
    if (cases[i].refused) {
      g_autofree char *fpr = fingerprint_of (cases[i].refused);
      g_autofree char *line = g_strdup_printf ("%s: %s", fpr, cases[i].reason);
      g_assert_nonnull (strstr (why->str, line));
    } else
      g_assert_cmpuint (refused->len, ==, 0);
  }
}

static void
test_x509_private (void)
{
  g_autoptr (MgX509Store) store = open_store ("s3cret phrase");
  GPtrArray *keys = mg_x509_store_private_keys (store);
  g_autofree char *bob = serial_of ("bob");
  g_autoptr (GError) error = NULL;
  g_autofree char *p12 = path ("store/private/bob.p12");
  MgX509Store *wrong;

  g_assert_cmpuint (keys->len, ==, 1);
  g_assert_cmpstr (((MgX509Private *) g_ptr_array_index (keys, 0))->cert->serial, ==, bob);
  wrong = mg_x509_store_open (fx.store, "not the passphrase", &error);
  g_assert_null (wrong);
  g_assert_error (error, MG_KEYS_ERROR, MG_KEYS_ERROR_STORE);
  g_assert_nonnull (strstr (error->message, p12));
  g_clear_error (&error);

  g_assert_cmpint (g_chmod (p12, 0644), ==, 0);
  wrong = mg_x509_store_open (fx.store, "s3cret phrase", &error);
  g_assert_cmpint (g_chmod (p12, 0600), ==, 0);
  g_assert_null (wrong);
  g_assert_nonnull (strstr (error->message, "readable by group or others (mode 0644)"));
  g_assert_nonnull (strstr (error->message, p12));
}

static void
test_x509_missing_store (void)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *nowhere = path ("no-store");
  MgX509Store *s = mg_x509_store_open (nowhere, NULL, &error);

  g_assert_null (s);
  g_assert_true (mg_keys_error_is_transient (error));
  g_assert_nonnull (strstr (error->message, nowhere));
}

/* the RFC 9216 sample certificates: Bob's encryption certificate is chosen, Alice's signing one refused */
static void
test_rfc9216 (void)
{
  const char *corpus = mg_test_corpus ();
  g_autofree char *dir = NULL, *ca = NULL, *certs = NULL;
  const char *files[] = { "alice@smime.example.sig.pem", "alice@smime.example.enc.pem", "bob@smime.example.enc.pem",
                          "dana@smime.example.enc.pem" };
  g_autoptr (MgX509Store) store = NULL;
  g_autoptr (GError) error = NULL;

  if (corpus == NULL) {
    g_test_skip ("../shared/corpus is not beside the checkout");
    return;
  }
  dir = mg_test_tmpdir ();
  ca = g_build_filename (dir, "ca", NULL);
  certs = g_build_filename (dir, "certs", NULL);
  g_mkdir (ca, 0700);
  g_mkdir (certs, 0700);
  {
    g_autofree char *src =
      g_build_filename (corpus, "rfc9216", "Sample_LAMPS_RSA_Certification_Authority.selfsigned.pem", NULL);
    g_autofree char *src2 =
      g_build_filename (corpus, "rfc9216", "Sample_LAMPS_Ed25519_Certification_Authority.selfsigned.pem", NULL);
    gsize len;
    g_autofree char *d1 = mg_test_read (src, &len);
    g_autofree char *d2 = NULL;
    g_free (mg_test_write (ca, "rsa-ca.pem", d1, (gssize) len));
    d2 = mg_test_read (src2, &len);
    g_free (mg_test_write (ca, "ed25519-ca.pem", d2, (gssize) len));
  }
  for (gsize i = 0; i < G_N_ELEMENTS (files); i++) {
    g_autofree char *src = g_build_filename (corpus, "rfc9216", files[i], NULL);
    gsize len;
    g_autofree char *data = mg_test_read (src, &len);
    g_free (mg_test_write (certs, files[i], data, (gssize) len));
  }
  store = mg_x509_store_open (dir, NULL, &error);
  g_assert_no_error (error);
  {
    g_autoptr (GPtrArray) refused = g_ptr_array_new_with_free_func ((GDestroyNotify) mg_keys_refusal_free);
    const MgX509Cert *bob = mg_x509_store_lookup (store, "bob@smime.example", refused);
    const MgX509Cert *alice = NULL;
    const MgX509Cert *dana = NULL;
    g_assert_nonnull (bob);
    g_assert_cmpstr (bob->serial, ==, "0x307C47400F86263A1C62D2EB832F96C0D78694");
    alice = mg_x509_store_lookup (store, "alice@smime.example", refused);
    g_assert_nonnull (alice);
    g_assert_cmpstr (alice->serial, ==, "0x0F2D25BD1139974ACE425487A1EE3D34068AB4");
    g_assert_cmpuint (refused->len, ==, 1);
    g_assert_cmpstr (((MgRefusal *) g_ptr_array_index (refused, 0))->reason, ==,
                     "cannot encrypt: key usage lacks keyEncipherment");
    dana = mg_x509_store_lookup (store, "dana@smime.example", refused);
    g_assert_nonnull (dana); /* X25519, keyAgreement, under the Ed25519 CA */
    g_assert_cmpstr (dana->algorithm, ==, "X25519");
  }
  mg_test_rmtree (dir);
}

/* ---- the command ---- */

static void
run_keys_in (MgRun *r, const char *language, const char *const *args)
{
  g_autoptr (GPtrArray) argv = g_ptr_array_new ();
  g_auto (GStrv) env = mg_test_env ("LANGUAGE", language, "LC_ALL", "C.UTF-8", NULL);

  g_ptr_array_add (argv, (gpointer) mg_test_mimegate ());
  g_ptr_array_add (argv, (gpointer) "keys");
  for (guint i = 0; args[i]; i++)
    g_ptr_array_add (argv, (gpointer) args[i]);
  g_ptr_array_add (argv, NULL);
  g_assert_true (mg_test_run (r, (const char *const *) argv->pdata, (const char *const *) env, NULL, 0));
}

static void
run_keys (MgRun *r, const char *const *args)
{
  run_keys_in (r, NULL, args);
}

static void
test_command (void)
{
  g_autofree char *valid = fpr_of (fx.gpg, "valid@example.org");
  g_autofree char *serial = serial_of ("valid");
  g_autofree char *expired_fp = fingerprint_of ("expired");
  MgRun r;

  run_keys (&r, (const char *const[]){ "-c", fx.conf, "valid@example.org", "valid@example.com", NULL });
  g_assert_cmpint (r.status, ==, 0);
  g_assert_nonnull (strstr (r.out, valid));
  g_assert_nonnull (strstr (r.out, serial));
  mg_run_clear (&r);

  run_keys (&r, (const char *const[]){ "-c", fx.conf, "--json", "valid@example.org", "expired@example.com", NULL });
  g_assert_cmpint (r.status, ==, 1); /* expired@ has no usable key */
  {
    const char *argv[] = { "python3", "-c",
                           "import json,sys\n"
                           "a=json.load(sys.stdin)\n"
                           "print(a[0]['address'], a[0]['openpgp']['fingerprint'], a[0]['x509'])\n"
                           "print(a[1]['address'], a[1]['openpgp'], a[1]['x509'], a[1]['refused'][0]['id'],\n"
                           "      a[1]['refused'][0]['reason'][:16])\n",
                           NULL };
    g_autofree char *want = g_strdup_printf (
      "valid@example.org %s None\nexpired@example.com None None %s expired on 2021-\n", valid, expired_fp);
    MgRun py;
    g_assert_true (mg_test_run (&py, argv, NULL, r.out, r.out_len));
    g_assert_cmpint (py.status, ==, 0);
    g_assert_cmpstr (py.out, ==, want);
    mg_run_clear (&py);
  }
  mg_run_clear (&r);

  /* a store that cannot be read defers (75) and names the path */
  {
    g_autofree char *bad = g_strdup_printf ("[gateway]\ngnupg-home = %s/nowhere\nx509-store = none\n", fx.dir);
    g_autofree char *conf = mg_test_write (fx.dir, "bad.conf", bad, -1);
    run_keys (&r, (const char *const[]){ "-c", conf, "valid@example.org", NULL });
    g_assert_cmpint (r.status, ==, 75);
    g_assert_nonnull (strstr (r.err, "/nowhere does not exist"));
    mg_run_clear (&r);
  }
  /* three fixture addresses as an admin sees them: a chosen key, a choice between two, a refusal by CRL */
  run_keys (&r, (const char *const[]){ "-c", fx.conf, "valid@example.org", "longest@example.com", "revoked@example.com",
                                       NULL });
  g_test_message ("mimegate keys valid@example.org longest@example.com revoked@example.com:\n%s", r.out);
  g_assert_cmpint (r.status, ==, 1);
  g_assert_nonnull (strstr (r.out, "usable, but another certificate is valid longer"));
  g_assert_nonnull (strstr (r.out, "revoked by CRL of CN=Test Intermediate"));
  mg_run_clear (&r);

  /* reasons are for people: translated */
  run_keys_in (&r, "nl", (const char *const[]){ "-c", fx.conf, "expired@example.com", "server@example.com", NULL });
  g_assert_cmpint (r.status, ==, 1);
  g_assert_nonnull (strstr (r.out, "verlopen op 2021-01-01"));
  g_assert_nonnull (strstr (r.out, "geen emailProtection-gebruik"));
  mg_run_clear (&r);
  run_keys_in (&r, "da", (const char *const[]){ "-c", fx.conf, "revoked@example.com", NULL });
  g_assert_nonnull (strstr (r.out, "tilbagekaldt af CRL fra CN=Test Intermediate"));
  mg_run_clear (&r);

  run_keys (&r, (const char *const[]){ "-c", fx.conf, "not an address", NULL });
  g_assert_cmpint (r.status, ==, 64);
  mg_run_clear (&r);
}

int
main (int argc, char **argv)
{
  int status;

  g_test_init (&argc, &argv, NULL);
  if (!mg_test_have_program ("gpg") || !mg_test_have_program ("openssl"))
    return 77;
  setup_gnupg ();
  setup_x509 ();
  g_test_add_func ("/keys/openpgp/choices", test_pgp_choices);
  g_test_add_func ("/keys/openpgp/newest-wins", test_pgp_newest_wins);
  g_test_add_func ("/keys/openpgp/trust-model", test_pgp_trust_model);
  g_test_add_func ("/keys/openpgp/secret-keys", test_pgp_secret_keys);
  g_test_add_func ("/keys/openpgp/missing-home", test_pgp_missing_home);
  g_test_add_func ("/keys/x509/choices", test_x509_choices);
  g_test_add_func ("/keys/x509/private", test_x509_private);
  g_test_add_func ("/keys/x509/missing-store", test_x509_missing_store);
  g_test_add_func ("/keys/x509/rfc9216", test_rfc9216);
  g_test_add_func ("/keys/command", test_command);
  status = g_test_run ();
  mg_gpg_free (fx.gpg);
  mg_gpg_free (fx.other);
  mg_test_rmtree (fx.dir);
  g_free (fx.dir);
  g_free (fx.store);
  g_free (fx.conf);
  return status;
}
