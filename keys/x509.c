/* x509.c - the X.509 store directory (RFC 5280 path validation, RFC 8550 S/MIME certificate handling) with OpenSSL.
 *
 * Layout: certs/ holds recipients' certificates (PEM or DER, one or many per file), ca/ the trusted collection (roots
 * and intermediates: every certificate there is a trust anchor), crl/ revocation lists (PEM or DER), private/ the keys
 * the gateway holds, decrypted with the configured passphrase. A private/ file is judged by what it holds, never by
 * its name: PEM blocks by their labels, anything else as DER (PKCS #12, certificate, key); each key is paired with
 * every certificate for it in private/ or certs/. A file that holds a key must be private to its owner, and every key
 * must be read and have a certificate, or the whole store is refused: a gateway fails closed rather than run with a
 * key the admin gave it silently unused (inbound mail to it would pass undecrypted, unscanned). A file with neither
 * key nor certificate is skipped with a warning that names it and what it holds. Signatures carry the signer's
 * chain to ca/, built once per load (RFC 8550 section 2.3).
 *
 * harvested/ holds certificates kept from verified S/MIME signatures (mg_x509_store_harvest, `harvest = smime`): a
 * source exactly like certs/, judged the same way each time the store is read, never a trust anchor.
 *
 * Every certificate in certs/ is judged once, when the store is read, and indexed under the key of each of its
 * addresses (subjectAltName rfc822Name; the subject's emailAddress only when there is none; mg_keys_address_key: the
 * whole address without regard to case). A certificate serves an address
 * when its key can encrypt (keyEncipherment for RSA, keyAgreement for EC/X25519), its extended key usage is absent,
 * emailProtection or anyExtendedKeyUsage, it is within its validity period, it chains to the trusted collection
 * through intermediates from ca/ or certs/, and no CRL in crl/ revokes it (a missing CRL is not an error). Among
 * several, the one valid longest wins; equal dates fall back to the fingerprint.
 *
 * A pipe run opens the store through its address index (mg_x509_store_open_indexed, described where the index code
 * begins): the judge's decisions for certs/ are kept in one file and only ca/, crl/ and private/ are read per run. */
#include "config.h"

#include "x509.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <glib/gi18n.h>
#include <glib/gstdio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>
#include <openssl/pkcs7.h>
#include <openssl/provider.h>
#include <openssl/x509v3.h>

#include "mg-ssl.h"

G_DEFINE_AUTOPTR_CLEANUP_FUNC (X509_STORE_CTX, X509_STORE_CTX_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (PKCS12, PKCS12_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (EVP_PKEY, EVP_PKEY_free)

/* VerdictCode - what the judge decided about one certificate; with Verdict's @when and @arg it is all the reason's
 * text needs, so that the address index stores decisions without words and each reader words them in its own
 * language (verdict_text) */
typedef enum {
  V_USABLE,
  V_SIGN_ONLY, /* @arg: the key type */
  V_NO_ENCIPHERMENT,
  V_NO_AGREEMENT,
  V_NO_EMAIL,
  V_EXPIRED,   /* @when */
  V_NOT_YET,   /* @when */
  V_CHAIN_OOM, /* out of memory */
  V_UNTRUSTED,
  V_REVOKED_BY, /* @arg: the CRL's issuer; @when: the revocation date */
  V_REVOKED,
  V_CHAIN, /* @arg: OpenSSL's text for the verification error */
  V_LAST,
} VerdictCode;

typedef struct {
  VerdictCode code;
  gint64 when;
  char *arg; /* (nullable) */
} Verdict;

/* Entry - a certificate from certs/ and the verdict on it; @reason is NULL when it can be used */
typedef struct {
  MgX509Cert *cert;
  char *path; /* relative to the store: "certs/NAME" */
  Verdict verdict;
  char *reason; /* (nullable): verdict_text() of @verdict */
} Entry;

struct _MgX509Store {
  char *dir;
  X509_STORE *trusted;
  STACK_OF (X509) * untrusted; /* ca/ and certs/: where chains find their intermediates */
  STACK_OF (X509_CRL) * crls;
  GPtrArray *entries;     /* (element-type Entry) */
  GHashTable *by_address; /* address key → GPtrArray of Entry (borrowed) */
  GPtrArray *private_keys;
  GPtrArray *warnings; /* files skipped, for the admin */

  /* an indexed store (mg_x509_store_open_indexed with a current index): certs/ was not read; entries and by_address
   * are empty, lookups answer from @index and are kept in @answers. @lock guards @answers and @whole, the only state
   * that changes after opening (serve's threads share a store). */
  gboolean indexed;
  GMappedFile *index;
  const char *sorted, *sorted_end; /* the address lines of @index */
  char *passphrase;
  GMutex lock;
  GHashTable *answers;                  /* address key → Answer */
  MgX509Store *whole;                   /* (nullable): certs/ read after all, when the index and the files disagree */
  char *index_path, *lock_path, *stamp; /* (nullable): where @index came from, to write it again */
  gboolean whole_tried;

  /* the trust material (ca/, crl/) and the chains of private/'s certificates: an indexed store lists ca/ and crl/
   * when opened (a directory that cannot be listed is still an error then) but reads and parses them on first use
   * (ensure_trust), so that a run that needs no S/MIME key, chain or signer (pass-through, OpenPGP) parses no
   * certificate. The stamp that made the index current covers every file of ca/, crl/ and private/. */
  gsize trust_ready;         /* g_once: @trusted, @untrusted, @crls and every key's chain are complete */
  GPtrArray *ca_files;       /* (nullable): ca/ as listed at open, until read */
  GPtrArray *crl_files;      /* (nullable): crl/ as listed at open, until read */
  STACK_OF (X509) * issuers; /* (nullable): the index's certificates of certs/ that can issue, until read */
  guint head_warnings;       /* warnings the index carried (of certs/): ca/'s go before them, crl/'s after */

  /* a further source (mg_x509_store_set_source): its certificates are judged at each lookup like those of certs/,
   * never trusted and never intermediates. @fetched (guarded by @lock) keeps every certificate it gave, by
   * fingerprint, for the store's life: lookups hand out borrowed pointers while the source's answers change. */
  char *source_name;
  MgX509FetchFunc fetch;
  gpointer fetch_data;
  GDestroyNotify fetch_destroy;
  GHashTable *fetched; /* fingerprint → MgX509Cert */
};

static void
cert_free (MgX509Cert *c)
{
  if (c == NULL)
    return;
  X509_free (c->cert);
  g_free (c->fingerprint);
  g_free (c->serial);
  g_free (c->issuer);
  g_free (c->subject);
  g_free (c->algorithm);
  g_free (c->path);
  g_free (c);
}

static void
entry_free (Entry *e)
{
  cert_free (e->cert);
  g_free (e->path);
  g_free (e->verdict.arg);
  g_free (e->reason);
  g_free (e);
}

static void
private_free (MgX509Private *p)
{
  g_free (p->path);
  EVP_PKEY_free (p->key);
  cert_free (p->cert);
  sk_X509_pop_free (p->chain, X509_free);
  g_free (p);
}

static char *
name_text (const X509_NAME *name)
{
  g_autoptr (BIO) bio = BIO_new (BIO_s_mem ());
  char *data = NULL;
  long n;

  if (bio == NULL || X509_NAME_print_ex (bio, name, 0, XN_FLAG_RFC2253) < 0)
    return g_strdup ("?");
  n = BIO_get_mem_data (bio, &data);
  return g_utf8_make_valid (data, n);
}

/* asn1_unix - an ASN1_TIME as seconds since the epoch (0 when it cannot be read) */
static gint64
asn1_unix (const ASN1_TIME *t)
{
  struct tm tm;

  if (t == NULL || !ASN1_TIME_to_tm (t, &tm))
    return 0;
  return (gint64) timegm (&tm);
}

/* describe - takes a reference on @x509 */
static MgX509Cert *
describe (X509 *x509)
{
  MgX509Cert *c = g_new0 (MgX509Cert, 1);
  guint8 md[EVP_MAX_MD_SIZE];
  unsigned int md_len = 0;
  GString *fp = g_string_new (NULL);
  BIGNUM *bn = ASN1_INTEGER_to_BN (X509_get0_serialNumber (x509), NULL);
  char *hex = bn ? BN_bn2hex (bn) : NULL;
  EVP_PKEY *pk = X509_get0_pubkey (x509);

  X509_up_ref (x509);
  c->cert = x509;
  X509_digest (x509, EVP_sha256 (), md, &md_len);
  for (unsigned int i = 0; i < md_len; i++)
    g_string_append_printf (fp, "%02X", md[i]);
  c->fingerprint = g_string_free (fp, FALSE);
  c->serial = g_strdup_printf ("0x%s", hex ? hex : "?");
  OPENSSL_free (hex);
  BN_free (bn);
  c->issuer = name_text (X509_get_issuer_name (x509));
  c->subject = name_text (X509_get_subject_name (x509));
  c->not_before = asn1_unix (X509_get0_notBefore (x509));
  c->not_after = asn1_unix (X509_get0_notAfter (x509));
  if (pk != NULL) {
    char group[80] = "";
    size_t glen = 0;
    int type = EVP_PKEY_get_base_id (pk);
    if (type == EVP_PKEY_RSA || type == EVP_PKEY_RSA_PSS || type == EVP_PKEY_DSA)
      c->algorithm = g_strdup_printf ("%s %d", EVP_PKEY_get0_type_name (pk), EVP_PKEY_get_bits (pk));
    else if (EVP_PKEY_get_group_name (pk, group, sizeof group, &glen) && glen > 0)
      c->algorithm = g_strdup_printf ("%s %s", EVP_PKEY_get0_type_name (pk), group);
    else
      c->algorithm = g_strdup (EVP_PKEY_get0_type_name (pk)); /* X25519, Ed25519: the name says it all */
  } else
    c->algorithm = g_strdup ("unknown");
  return c;
}

/* read_objects - certificates and CRLs of one file, PEM (any number) or DER (one) */
static gboolean
read_objects (const char *path, STACK_OF (X509) * certs, STACK_OF (X509_CRL) * crls, GError **error)
{
  g_autofree char *data = NULL;
  gsize len = 0;
  g_autoptr (BIO) bio = NULL;
  int before = sk_X509_num (certs) + (crls ? sk_X509_CRL_num (crls) : 0);

  if (!g_file_get_contents (path, &data, &len, error))
    return FALSE;
  if (len > G_MAXINT) {
    g_set_error (error, MG_KEYS_ERROR, MG_KEYS_ERROR_CRYPTO, _ ("%s is too large"), path);
    return FALSE;
  }
  bio = BIO_new_mem_buf (data, (int) len);
  if (g_strstr_len (data, len, "-----BEGIN ") != NULL) {
    STACK_OF (X509_INFO) *infos = PEM_X509_INFO_read_bio (bio, NULL, NULL, NULL);
    for (int i = 0; infos != NULL && i < sk_X509_INFO_num (infos); i++) {
      X509_INFO *info = sk_X509_INFO_value (infos, i);
      if (info->x509 != NULL) {
        sk_X509_push (certs, info->x509);
        info->x509 = NULL;
      }
      if (info->crl != NULL && crls != NULL) {
        sk_X509_CRL_push (crls, info->crl);
        info->crl = NULL;
      }
    }
    sk_X509_INFO_pop_free (infos, X509_INFO_free);
  } else {
    const unsigned char *p = (const unsigned char *) data;
    X509 *x = d2i_X509 (NULL, &p, (long) len);
    if (x != NULL)
      sk_X509_push (certs, x);
    else if (crls != NULL) {
      X509_CRL *crl;
      p = (const unsigned char *) data;
      crl = d2i_X509_CRL (NULL, &p, (long) len);
      if (crl != NULL)
        sk_X509_CRL_push (crls, crl);
    }
  }
  ERR_clear_error ();
  if (sk_X509_num (certs) + (crls ? sk_X509_CRL_num (crls) : 0) == before) {
    g_set_error (error, MG_KEYS_ERROR, MG_KEYS_ERROR_CRYPTO, _ ("%s holds no certificate or CRL"), path);
    return FALSE;
  }
  return TRUE;
}

static int
compare_paths (gconstpointer a, gconstpointer b)
{
  return strcmp (*(char *const *) a, *(char *const *) b);
}

/* list_dir - the regular files of DIR/SUB in name order; a missing SUB is empty, an unreadable one an error */
static GPtrArray *
list_dir (const char *dir, const char *sub, GError **error)
{
  g_autofree char *path = g_build_filename (dir, sub, NULL);
  g_autoptr (GPtrArray) files = g_ptr_array_new_with_free_func (g_free);
  g_autoptr (GError) local = NULL;
  g_autoptr (GDir) d = NULL;
  const char *name;

  if (!g_file_test (path, G_FILE_TEST_EXISTS))
    return g_steal_pointer (&files);
  d = g_dir_open (path, 0, &local);
  if (d == NULL) {
    g_set_error (error, MG_KEYS_ERROR, MG_KEYS_ERROR_STORE, _ ("X.509 store %s cannot be read: %s"), path,
                 local->message);
    return NULL;
  }
  while ((name = g_dir_read_name (d)) != NULL) {
    g_autofree char *file = g_build_filename (path, name, NULL);
    if (name[0] != '.' && g_file_test (file, G_FILE_TEST_IS_REGULAR))
      g_ptr_array_add (files, g_steal_pointer (&file));
  }
  g_ptr_array_sort (files, compare_paths);
  return g_steal_pointer (&files);
}

/* addresses - the certificate's subjectAltName rfc822Names, or the subject's emailAddress when there are none, as
 * written there; only those that are addresses (mg_keys_address_key accepts them) */
static GPtrArray *
addresses (X509 *x)
{
  GPtrArray *out = g_ptr_array_new_with_free_func (g_free);
  GENERAL_NAMES *names = X509_get_ext_d2i (x, NID_subject_alt_name, NULL, NULL);
  const X509_NAME *subject = X509_get_subject_name (x);

  for (int i = 0; names != NULL && i < sk_GENERAL_NAME_num (names); i++) {
    const GENERAL_NAME *gn = sk_GENERAL_NAME_value (names, i);
    if (gn->type == GEN_EMAIL) {
      g_autofree char *text =
        g_strndup ((const char *) ASN1_STRING_get0_data (gn->d.rfc822Name), ASN1_STRING_length (gn->d.rfc822Name));
      g_autofree char *key = mg_keys_address_key (text);
      if (key != NULL)
        g_ptr_array_add (out, g_steal_pointer (&text));
    }
  }
  GENERAL_NAMES_free (names);
  if (out->len == 0) {
    int pos = -1;
    while ((pos = X509_NAME_get_index_by_NID (subject, NID_pkcs9_emailAddress, pos)) >= 0) {
      const ASN1_STRING *s = X509_NAME_ENTRY_get_data (X509_NAME_get_entry (subject, pos));
      g_autofree char *text = g_strndup ((const char *) ASN1_STRING_get0_data (s), ASN1_STRING_length (s));
      g_autofree char *key = mg_keys_address_key (text);
      if (key != NULL)
        g_ptr_array_add (out, g_steal_pointer (&text));
    }
  }
  return out;
}

/* named_address - (transfer full) (nullable): the address of @x, as written there, whose key is @want */
static char *
named_address (X509 *x, const char *want)
{
  g_autoptr (GPtrArray) addrs = addresses (x);

  for (guint i = 0; want != NULL && i < addrs->len; i++) {
    g_autofree char *key = mg_keys_address_key (g_ptr_array_index (addrs, i));
    if (g_strcmp0 (key, want) == 0)
      return g_strdup (g_ptr_array_index (addrs, i));
  }
  return NULL;
}

static int
verify_cb (int ok, X509_STORE_CTX *ctx)
{
  /* "check CRLs when present": an issuer without a CRL in crl/ is not an error */
  if (!ok && X509_STORE_CTX_get_error (ctx) == X509_V_ERR_UNABLE_TO_GET_CRL)
    return 1;
  return ok;
}

/* verdict_text - (transfer full) (nullable): the reason in words an admin understands; NULL for a usable one */
static char *
verdict_text (VerdictCode code, gint64 when, const char *arg)
{
  g_autofree char *date = mg_keys_format_time (when);

  switch (code) {
  case V_USABLE:
  case V_LAST:
    return NULL;
  case V_SIGN_ONLY:
    return g_strdup_printf (_ ("cannot encrypt: a %s key only signs"), arg ? arg : "?");
  case V_NO_ENCIPHERMENT:
    return g_strdup (_ ("cannot encrypt: key usage lacks keyEncipherment"));
  case V_NO_AGREEMENT:
    return g_strdup (_ ("cannot encrypt: key usage lacks keyAgreement"));
  case V_NO_EMAIL:
    return g_strdup (_ ("no emailProtection usage"));
  case V_EXPIRED:
    return g_strdup_printf (_ ("expired on %s"), date);
  case V_NOT_YET:
    return g_strdup_printf (_ ("not valid before %s"), date);
  case V_CHAIN_OOM:
    return g_strdup (_ ("the chain cannot be checked (out of memory)"));
  case V_UNTRUSTED:
    return g_strdup (_ ("issuer not in the trusted collection"));
  case V_REVOKED_BY:
    return g_strdup_printf (_ ("revoked by CRL of %s on %s"), arg ? arg : "?", date);
  case V_REVOKED:
    return g_strdup (_ ("revoked by a CRL"));
  case V_CHAIN:
    return g_strdup_printf (_ ("the chain does not verify: %s"), arg ? arg : "?");
  }
  return NULL;
}

static void
verdict_set (Verdict *v, VerdictCode code, gint64 when, const char *arg)
{
  v->code = code;
  v->when = when;
  g_free (v->arg);
  v->arg = g_strdup (arg);
}

/* revoked_verdict - "revoked by CRL …" with the CRL's issuer and the revocation date */
static void
revoked_verdict (MgX509Store *store, X509 *x, Verdict *v)
{
  for (int i = 0; i < sk_X509_CRL_num (store->crls); i++) {
    X509_CRL *crl = sk_X509_CRL_value (store->crls, i);
    X509_REVOKED *rev = NULL;
    if (X509_CRL_get0_by_cert (crl, &rev, x) == 1 && rev != NULL) {
      g_autofree char *issuer = name_text (X509_CRL_get_issuer (crl));
      verdict_set (v, V_REVOKED_BY, asn1_unix (X509_REVOKED_get0_revocationDate (rev)), issuer);
      return;
    }
  }
  verdict_set (v, V_REVOKED, 0, NULL);
}

static void ensure_trust (MgX509Store *store);
static void read_listed (GPtrArray *files, const char *sub, STACK_OF (X509) * certs, STACK_OF (X509_CRL) * crls,
                         GPtrArray *paths, GPtrArray *warnings);
static void store_trust (MgX509Store *store, STACK_OF (X509) * ca, STACK_OF (X509) * more);

/* chain_verdict - TRUE when @x chains to the trusted collection and is not revoked, else FALSE and why in @v */
static gboolean
chain_verdict (MgX509Store *store, X509 *x, Verdict *v)
{
  g_autoptr (X509_STORE_CTX) ctx = X509_STORE_CTX_new ();
  unsigned long flags = X509_V_FLAG_PARTIAL_CHAIN;
  int err;

  ensure_trust (store);
  if (ctx == NULL || !X509_STORE_CTX_init (ctx, store->trusted, x, store->untrusted)) {
    verdict_set (v, V_CHAIN_OOM, 0, NULL);
    return FALSE;
  }
  if (sk_X509_CRL_num (store->crls) > 0)
    flags |= X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL;
  X509_STORE_CTX_set_flags (ctx, flags);
  X509_STORE_CTX_set_verify_cb (ctx, verify_cb);
  if (X509_verify_cert (ctx) == 1) {
    verdict_set (v, V_USABLE, 0, NULL);
    return TRUE;
  }
  err = X509_STORE_CTX_get_error (ctx);
  ERR_clear_error ();
  switch (err) {
  case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
  case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
  case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
  case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
  case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    verdict_set (v, V_UNTRUSTED, 0, NULL);
    break;
  case X509_V_ERR_CERT_REVOKED:
    revoked_verdict (store, X509_STORE_CTX_get_current_cert (ctx), v);
    break;
  default:
    verdict_set (v, V_CHAIN, 0, X509_verify_cert_error_string (err));
  }
  return FALSE;
}

/* judge - whether @c can be used to encrypt S/MIME, and if not why, in @v (checked in the order an admin would fix
 * them) */
static void
judge (MgX509Store *store, const MgX509Cert *c, Verdict *v)
{
  X509 *x = c->cert;
  EVP_PKEY *pk = X509_get0_pubkey (x);
  uint32_t flags = X509_get_extension_flags (x);
  int type = pk ? EVP_PKEY_get_base_id (pk) : EVP_PKEY_NONE;
  gboolean rsa = type == EVP_PKEY_RSA;
  gboolean agree = type == EVP_PKEY_EC || type == EVP_PKEY_X25519 || type == EVP_PKEY_X448 || type == EVP_PKEY_DH;
  gint64 now = g_get_real_time () / G_USEC_PER_SEC;

  if (!rsa && !agree)
    verdict_set (v, V_SIGN_ONLY, 0, pk ? EVP_PKEY_get0_type_name (pk) : "?");
  else if ((flags & EXFLAG_KUSAGE) && !(X509_get_key_usage (x) & (rsa ? KU_KEY_ENCIPHERMENT : KU_KEY_AGREEMENT)))
    verdict_set (v, rsa ? V_NO_ENCIPHERMENT : V_NO_AGREEMENT, 0, NULL);
  else if ((flags & EXFLAG_XKUSAGE) && !(X509_get_extended_key_usage (x) & (XKU_SMIME | XKU_ANYEKU)))
    verdict_set (v, V_NO_EMAIL, 0, NULL);
  else if (c->not_after != 0 && c->not_after < now)
    verdict_set (v, V_EXPIRED, c->not_after, NULL);
  else if (c->not_before > now)
    verdict_set (v, V_NOT_YET, c->not_before, NULL);
  else
    chain_verdict (store, x, v);
}

/* private_mode_ok - a private/ file must not be readable by group or others */
static gboolean
private_mode_ok (const char *path, GError **error)
{
  GStatBuf st;

  if (g_stat (path, &st) != 0) {
    g_set_error (error, MG_KEYS_ERROR, MG_KEYS_ERROR_STORE, _ ("%s cannot be read: %s"), path, g_strerror (errno));
    return FALSE;
  }
  if (st.st_mode & 077) {
    g_set_error (error, MG_KEYS_ERROR, MG_KEYS_ERROR_STORE,
                 _ ("%s is readable by group or others (mode %04o); make it 0600"), path,
                 (unsigned) (st.st_mode & 07777));
    return FALSE;
  }
  return TRUE;
}

static int
pass_cb (char *buf, int size, int rwflag, void *u)
{
  const char *pass = u;
  int n = pass ? (int) strlen (pass) : 0;

  if (n >= size)
    return -1;
  memcpy (buf, pass ? pass : "", (size_t) n);
  return n;
}

/* load_legacy_provider - once per process: PKCS #12 files from older tools use RC2/3DES, which only OpenSSL's legacy
 * provider reads. The handle is kept for the process's life (1 keeps the default provider as the fallback). */
static void
load_legacy_provider (void)
{
  static gsize once = 0;
  static OSSL_PROVIDER *legacy = NULL;

  if (g_once_init_enter (&once)) {
    legacy = OSSL_PROVIDER_try_load (NULL, "legacy", 1);
    ERR_clear_error ();
    g_once_init_leave (&once, 1);
  }
  (void) legacy;
}

/* Held - what one private/ file holds, judged by its content (never by its name) */
typedef struct {
  char *path;
  STACK_OF (X509) * certs; /* PEM CERTIFICATE blocks, a DER certificate, the certificates of a PKCS #12 */
  GPtrArray *keys;         /* (element-type EVP_PKEY) */
  GPtrArray *key_pems;     /* (element-type GBytes) PEM private key blocks, decoded once the mode is known safe */
  GPtrArray *p12s;         /* (element-type GBytes) DER PKCS #12, from a DER file or "BEGIN PKCS12" armor */
  GBytes *key_der;         /* a DER private key (PKCS #8, encrypted or not, or RSA/EC) */
  gboolean key_der_encrypted;
  GString *other; /* armor lines of PEM blocks that are neither, for the admin */
} Held;

static void
held_free (Held *h)
{
  g_free (h->path);
  sk_X509_pop_free (h->certs, X509_free);
  g_ptr_array_unref (h->keys);
  g_ptr_array_unref (h->key_pems);
  g_ptr_array_unref (h->p12s);
  g_clear_pointer (&h->key_der, g_bytes_unref);
  g_string_free (h->other, TRUE);
  g_free (h);
}

G_DEFINE_AUTOPTR_CLEANUP_FUNC (Held, held_free)

/* held_has_key - whether the file holds key material, readable or not: such a file must be 0600 */
static gboolean
held_has_key (const Held *h)
{
  return h->key_pems->len > 0 || h->p12s->len > 0 || h->key_der != NULL;
}

/* key_armor_count - how many "-----BEGIN …PRIVATE KEY-----" and "-----BEGIN PKCS12-----" lines @data has */
static guint
key_armor_count (const char *data, gsize len)
{
  const char *end = data + len;
  guint n = 0;

  for (const char *p = data; (p = g_strstr_len (p, end - p, "-----BEGIN ")) != NULL; p += 11) {
    const char *close = g_strstr_len (p + 11, MIN (end - (p + 11), 80), "-----");
    g_autofree char *label = close ? g_strndup (p + 11, (gsize) (close - (p + 11))) : NULL;
    if (label != NULL && (g_str_has_suffix (label, "PRIVATE KEY") || strcmp (label, "PKCS12") == 0))
      n++;
  }
  return n;
}

/* scan_pem - sorts the PEM blocks of @data by label; nothing is decrypted yet */
static void
scan_pem (Held *h, const char *data, gsize len)
{
  g_autoptr (BIO) in = BIO_new_mem_buf (data, (int) len);
  char *name = NULL, *header = NULL;
  unsigned char *der = NULL;
  long der_len = 0;

  while (in != NULL && PEM_read_bio (in, &name, &header, &der, &der_len) == 1) {
    const unsigned char *q = der;
    gsize nlen = strlen (name);
    if (strcmp (name, "CERTIFICATE") == 0 || strcmp (name, "X509 CERTIFICATE") == 0 ||
        strcmp (name, "TRUSTED CERTIFICATE") == 0) {
      X509 *x = name[0] == 'T' ? d2i_X509_AUX (NULL, &q, der_len) : d2i_X509 (NULL, &q, der_len);
      if (x != NULL)
        sk_X509_push (h->certs, x);
      else
        g_string_append_printf (h->other, "%s-----BEGIN %s----- (%s)", h->other->len ? ", " : "", name, _ ("broken"));
    } else if (nlen >= 11 && strcmp (name + nlen - 11, "PRIVATE KEY") == 0) {
      /* PRIVATE KEY, ENCRYPTED PRIVATE KEY, RSA/EC/DSA PRIVATE KEY (legacy encryption in the header), and any other
       * kind of key: written out again whole, so that OpenSSL's own PEM reader decodes it with the passphrase */
      g_autoptr (BIO) out = BIO_new (BIO_s_mem ());
      char *text = NULL;
      long n;
      if (out != NULL && PEM_write_bio (out, name, header, der, der_len) > 0 && (n = BIO_get_mem_data (out, &text)) > 0)
        g_ptr_array_add (h->key_pems, g_bytes_new (text, (gsize) n));
      else
        g_ptr_array_add (h->key_pems, g_bytes_new (NULL, 0));
    } else if (strcmp (name, "PKCS12") == 0)
      g_ptr_array_add (h->p12s, g_bytes_new (der, (gsize) der_len));
    else
      g_string_append_printf (h->other, "%s-----BEGIN %s-----", h->other->len ? ", " : "", name);
    OPENSSL_free (name);
    OPENSSL_free (header);
    OPENSSL_free (der);
  }
  ERR_clear_error ();
  /* a key block whose armor is broken (truncated, bad base64) is still a key the admin meant the gateway to hold:
   * kept as one that cannot be read, so that the file is refused rather than skipped */
  if (key_armor_count (data, len) > h->key_pems->len + h->p12s->len)
    g_ptr_array_add (h->key_pems, g_bytes_new (NULL, 0));
}

/* scan_der - one DER object: PKCS #12, a certificate, an encrypted PKCS #8 key, or a clear key (PKCS #8, RSA, EC);
 * only its structure is read here, nothing is decrypted */
static void
scan_der (Held *h, const char *data, gsize len)
{
  const unsigned char *start = (const unsigned char *) data, *q = start;
  PKCS12 *p12 = d2i_PKCS12 (NULL, &q, (long) len);
  X509 *x;
  X509_SIG *sig;
  EVP_PKEY *key;

  if (p12 != NULL) {
    PKCS12_free (p12);
    g_ptr_array_add (h->p12s, g_bytes_new (data, len));
    return;
  }
  q = start;
  if ((x = d2i_X509 (NULL, &q, (long) len)) != NULL) {
    sk_X509_push (h->certs, x);
    return;
  }
  q = start;
  if ((sig = d2i_X509_SIG (NULL, &q, (long) len)) != NULL) {
    X509_SIG_free (sig);
    h->key_der = g_bytes_new (data, len);
    h->key_der_encrypted = TRUE;
    return;
  }
  q = start;
  if ((key = d2i_AutoPrivateKey (NULL, &q, (long) len)) != NULL) {
    EVP_PKEY_free (key); /* decoded again with the others, once the file's mode is known to be safe */
    h->key_der = g_bytes_new (data, len);
  }
}

/* open_p12 - the key and certificates of one PKCS #12, with the passphrase (or none, or an empty one) */
static gboolean
open_p12 (Held *h, GBytes *der, const char *passphrase, GError **error)
{
  const unsigned char *q = g_bytes_get_data (der, NULL);
  g_autoptr (PKCS12) p12 = NULL;
  g_autoptr (EVP_PKEY) key = NULL;
  g_autoptr (X509) cert = NULL;
  STACK_OF (X509) *extra = NULL;

  load_legacy_provider (); /* only for PKCS #12: older tools' RC2/3DES need it, and loading it costs every process */
  p12 = q ? d2i_PKCS12 (NULL, &q, (long) g_bytes_get_size (der)) : NULL;
  if (p12 == NULL || (!PKCS12_parse (p12, passphrase ? passphrase : "", &key, &cert, &extra) &&
                      !(passphrase == NULL && PKCS12_parse (p12, NULL, &key, &cert, &extra)))) {
    g_autoptr (GError) ssl = NULL;
    mg_keys_set_openssl_error (&ssl, MG_KEYS_ERROR_STORE, "PKCS#12");
    g_set_error (error, MG_KEYS_ERROR, MG_KEYS_ERROR_STORE,
                 _ ("%s cannot be opened (wrong or missing passphrase?): %s"), h->path, ssl->message);
    sk_X509_pop_free (extra, X509_free);
    return FALSE;
  }
  if (cert != NULL)
    sk_X509_push (h->certs, g_steal_pointer (&cert));
  for (X509 *x; extra != NULL && (x = sk_X509_shift (extra)) != NULL;)
    sk_X509_push (h->certs, x);
  sk_X509_free (extra);
  if (key != NULL)
    g_ptr_array_add (h->keys, g_steal_pointer (&key));
  return TRUE;
}

/* key_unreadable - the refusal for a key block or DER key that does not decode */
static gboolean
key_unreadable (const Held *h, GError **error)
{
  g_autoptr (GError) ssl = NULL;

  mg_keys_set_openssl_error (&ssl, MG_KEYS_ERROR_STORE, "private key");
  g_set_error (error, MG_KEYS_ERROR, MG_KEYS_ERROR_STORE,
               _ ("%s holds a private key that cannot be read (wrong or missing passphrase?): %s"), h->path,
               ssl->message);
  return FALSE;
}

/* open_keys - decodes every key @h holds; one that cannot be read refuses the file */
static gboolean
open_keys (Held *h, const char *passphrase, GError **error)
{
  for (guint i = 0; i < h->key_pems->len; i++) {
    GBytes *pem = g_ptr_array_index (h->key_pems, i);
    g_autoptr (BIO) in = BIO_new_mem_buf (g_bytes_get_data (pem, NULL), (int) g_bytes_get_size (pem));
    EVP_PKEY *key = in ? PEM_read_bio_PrivateKey (in, NULL, pass_cb, (void *) passphrase) : NULL;
    if (key == NULL)
      return key_unreadable (h, error);
    g_ptr_array_add (h->keys, key);
  }
  if (h->key_der != NULL) {
    g_autoptr (BIO) in = BIO_new_mem_buf (g_bytes_get_data (h->key_der, NULL), (int) g_bytes_get_size (h->key_der));
    const unsigned char *q = g_bytes_get_data (h->key_der, NULL);
    EVP_PKEY *key = h->key_der_encrypted
                      ? (in ? d2i_PKCS8PrivateKey_bio (in, NULL, pass_cb, (void *) passphrase) : NULL)
                      : d2i_AutoPrivateKey (NULL, &q, (long) g_bytes_get_size (h->key_der));
    if (key == NULL)
      return key_unreadable (h, error);
    g_ptr_array_add (h->keys, key);
  }
  for (guint i = 0; i < h->p12s->len; i++)
    if (!open_p12 (h, g_ptr_array_index (h->p12s, i), passphrase, error))
      return FALSE;
  ERR_clear_error ();
  return TRUE;
}

/**
 * read_held - one file of private/, classified by content: PEM blocks by their labels (CERTIFICATE, PRIVATE KEY,
 * ENCRYPTED PRIVATE KEY, RSA/EC PRIVATE KEY, PKCS12), anything else as DER (PKCS #12, certificate, key).
 *
 * Returns: (transfer full) (nullable): what the file holds. %NULL with @error when the file holds key material and
 * is readable by group or others, or a key in it cannot be read; %NULL without @error, and a line in @warnings, when
 * it holds neither a key nor a certificate.
 */
static Held *
read_held (const char *path, const char *passphrase, GPtrArray *warnings, GError **error)
{
  g_autofree char *data = NULL;
  gsize len = 0;
  g_autoptr (Held) h = g_new0 (Held, 1);

  h->path = g_strdup (path);
  h->certs = sk_X509_new_null ();
  h->keys = g_ptr_array_new_with_free_func ((GDestroyNotify) EVP_PKEY_free);
  h->key_pems = g_ptr_array_new_with_free_func ((GDestroyNotify) g_bytes_unref);
  h->p12s = g_ptr_array_new_with_free_func ((GDestroyNotify) g_bytes_unref);
  h->other = g_string_new (NULL);
  if (!g_file_get_contents (path, &data, &len, error))
    return NULL;
  if (len > G_MAXINT) {
    g_set_error (error, MG_KEYS_ERROR, MG_KEYS_ERROR_STORE, _ ("%s is too large"), path);
    return NULL;
  }
  if (g_strstr_len (data, len, "-----BEGIN ") != NULL)
    scan_pem (h, data, len);
  else if (len > 0)
    scan_der (h, data, len);
  if (held_has_key (h)) {
    if (!private_mode_ok (path, error) || !open_keys (h, passphrase, error))
      return NULL;
  } else if (sk_X509_num (h->certs) == 0) {
    const char *found = len == 0            ? _ ("the file is empty")
                        : h->other->len > 0 ? h->other->str
                        : g_strstr_len (data, len, "-----BEGIN ")
                          ? _ ("PEM armor that cannot be read")
                          : _ ("no PEM armor, and no DER certificate, key or PKCS #12");
    g_ptr_array_add (warnings,
                     g_strdup_printf (_ ("%s holds neither a private key nor a certificate (found: %s)"), path, found));
    return NULL;
  }
  return g_steal_pointer (&h);
}

/* certificates_for - every certificate whose public key is @key's, from any file of private/ or from certs/, each
 * once (a renewed certificate for the same key is a second one: mail encrypted to either must open) */
static GPtrArray *
certificates_for (STACK_OF (X509) * pairable, GPtrArray *held, EVP_PKEY *key)
{
  GPtrArray *out = g_ptr_array_new ();
  g_autoptr (GPtrArray) all = g_ptr_array_new ();

  for (guint f = 0; f < held->len; f++) {
    const Held *h = g_ptr_array_index (held, f);
    for (int i = 0; i < sk_X509_num (h->certs); i++)
      g_ptr_array_add (all, sk_X509_value (h->certs, i));
  }
  for (int i = 0; i < sk_X509_num (pairable); i++)
    g_ptr_array_add (all, sk_X509_value (pairable, i));
  for (guint i = 0; i < all->len; i++) {
    X509 *x = g_ptr_array_index (all, i);
    gboolean seen = FALSE;
    for (guint k = 0; k < out->len && !seen; k++)
      seen = X509_cmp (g_ptr_array_index (out, k), x) == 0;
    if (!seen && EVP_PKEY_eq (X509_get0_pubkey (x), key) == 1)
      g_ptr_array_add (out, x);
  }
  ERR_clear_error ();
  return out;
}

/* signer_chain - the intermediates that go with signatures by @x: its chain to ca/ without @x and without any
 * self-signed root (RFC 8550 section 2.3). The chain's membership depends only on the store's files, so it is
 * built once per load without looking at the time (validity is checked when a signer is chosen); empty when @x does
 * not chain to ca/. */
static STACK_OF (X509) * signer_chain (MgX509Store *store, X509 *x)
{
  STACK_OF (X509) *out = sk_X509_new_null ();
  g_autoptr (X509_STORE_CTX) ctx = X509_STORE_CTX_new ();

  if (ctx != NULL && X509_STORE_CTX_init (ctx, store->trusted, x, store->untrusted)) {
    X509_VERIFY_PARAM *param = X509_STORE_CTX_get0_param (ctx);
    X509_VERIFY_PARAM_clear_flags (param, X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL);
    X509_VERIFY_PARAM_set_flags (param, X509_V_FLAG_PARTIAL_CHAIN | X509_V_FLAG_NO_CHECK_TIME);
    if (X509_verify_cert (ctx) == 1) {
      STACK_OF (X509) *chain = X509_STORE_CTX_get0_chain (ctx);
      for (int i = 1; i < sk_X509_num (chain); i++) {
        X509 *c = sk_X509_value (chain, i);
        if (X509_self_signed (c, 0) != 1) {
          X509_up_ref (c);
          sk_X509_push (out, c);
        }
      }
    }
  }
  ERR_clear_error ();
  return out;
}

/* load_private - every file of private/: keys paired with their certificates (of private/, or of @pairable: those of
 * certs/, in their order), each key once per certificate */
static gboolean
load_private (MgX509Store *store, STACK_OF (X509) * pairable, const char *passphrase, GError **error)
{
  g_autoptr (GPtrArray) files = list_dir (store->dir, "private", error);
  g_autoptr (GPtrArray) held = g_ptr_array_new_with_free_func ((GDestroyNotify) held_free);

  if (files == NULL)
    return FALSE;
  for (guint i = 0; i < files->len; i++) {
    g_autoptr (GError) local = NULL;
    Held *h = read_held (g_ptr_array_index (files, i), passphrase, store->warnings, &local);
    if (local != NULL) {
      g_propagate_error (error, g_steal_pointer (&local));
      return FALSE;
    }
    if (h != NULL)
      g_ptr_array_add (held, h);
  }
  for (guint f = 0; f < held->len; f++) {
    const Held *h = g_ptr_array_index (held, f);
    for (guint k = 0; k < h->keys->len; k++) {
      EVP_PKEY *key = g_ptr_array_index (h->keys, k);
      g_autoptr (GPtrArray) certs = certificates_for (pairable, held, key);
      if (certs->len == 0) {
        g_set_error (error, MG_KEYS_ERROR, MG_KEYS_ERROR_STORE, _ ("%s: no certificate for this private key"), h->path);
        return FALSE;
      }
      for (guint c = 0; c < certs->len; c++) {
        X509 *x = g_ptr_array_index (certs, c);
        gboolean dup = FALSE;
        MgX509Private *p;
        for (guint i = 0; i < store->private_keys->len && !dup; i++) {
          const MgX509Private *q = g_ptr_array_index (store->private_keys, i);
          dup = X509_cmp (q->cert->cert, x) == 0 && EVP_PKEY_eq (q->key, key) == 1;
        }
        if (dup)
          continue;
        p = g_new0 (MgX509Private, 1);
        p->path = g_strdup (h->path);
        EVP_PKEY_up_ref (key);
        p->key = key;
        p->cert = describe (x);
        g_ptr_array_add (store->private_keys, p);
      }
    }
  }
  /* certificates of private/ (certbot's chain.pem and fullchain.pem, a PKCS #12's CA certificates) are intermediates
   * like those of certs/: candidates for chains, never trusted */
  for (guint f = 0; f < held->len; f++) {
    const Held *h = g_ptr_array_index (held, f);
    for (int i = 0; i < sk_X509_num (h->certs); i++) {
      X509_up_ref (sk_X509_value (h->certs, i));
      sk_X509_push (store->untrusted, sk_X509_value (h->certs, i));
    }
  }
  ERR_clear_error ();
  return TRUE;
}

/* build_chains - each private key's chain (signer_chain), once the trust material is complete */
static void
build_chains (MgX509Store *store)
{
  for (guint i = 0; i < store->private_keys->len; i++) {
    MgX509Private *p = g_ptr_array_index (store->private_keys, i);
    if (p->chain == NULL)
      p->chain = signer_chain (store, p->cert->cert);
  }
  ERR_clear_error ();
}

/* ensure_trust - reads what an indexed store left for its first use (ca/, crl/: see @trust_ready) and builds the
 * keys' chains: afterwards @store is as an eager open of the same files makes it (the same order of intermediates
 * and of warnings). Thread-safe; a no-op for a store that is complete. */
static void
ensure_trust (MgX509Store *store)
{
  if (!g_once_init_enter (&store->trust_ready))
    return;
  if (store->ca_files != NULL) {
    g_autoptr (MgX509Stack) ca = sk_X509_new_null ();
    g_autoptr (MgX509Stack) crl_certs = sk_X509_new_null (); /* certificates misfiled in crl/: ignored */
    g_autoptr (GPtrArray) ca_warnings = g_ptr_array_new_with_free_func (g_free);
    g_autoptr (GPtrArray) crl_warnings = g_ptr_array_new_with_free_func (g_free);
    STACK_OF (X509) *rest = store->untrusted; /* private/'s certificates: after ca/ and certs/ */
    guint at;
    read_listed (store->ca_files, "ca", ca, NULL, NULL, ca_warnings);
    read_listed (store->crl_files, "crl", crl_certs, store->crls, NULL, crl_warnings);
    store->untrusted = sk_X509_new_null ();
    store_trust (store, ca, store->issuers);
    for (int i = 0; i < sk_X509_num (rest); i++)
      sk_X509_push (store->untrusted, sk_X509_value (rest, i)); /* the reference moves */
    sk_X509_free (rest);
    for (at = 0; at < ca_warnings->len; at++)
      g_ptr_array_insert (store->warnings, (gint) at, g_strdup (g_ptr_array_index (ca_warnings, at)));
    at += store->head_warnings;
    for (guint i = 0; i < crl_warnings->len; i++)
      g_ptr_array_insert (store->warnings, (gint) (at + i), g_strdup (g_ptr_array_index (crl_warnings, i)));
    g_clear_pointer (&store->ca_files, g_ptr_array_unref);
    g_clear_pointer (&store->crl_files, g_ptr_array_unref);
    sk_X509_pop_free (store->issuers, X509_free);
    store->issuers = NULL;
  }
  build_chains (store);
  g_once_init_leave (&store->trust_ready, 1);
}

/* index_entry - files one certificate of certs/ (from the file @path, relative to the store) under its addresses;
 * it is judged once every certificate is known */
static void
index_entry (MgX509Store *store, X509 *x, const char *path)
{
  Entry *e = g_new0 (Entry, 1);
  g_autoptr (GPtrArray) addrs = addresses (x);

  e->cert = describe (x);
  e->cert->path = g_strdup (path);
  e->path = g_strdup (path);
  g_ptr_array_add (store->entries, e);
  for (guint i = 0; i < addrs->len; i++) {
    g_autofree char *key = mg_keys_address_key (g_ptr_array_index (addrs, i));
    GPtrArray *list = g_hash_table_lookup (store->by_address, key);
    if (list == NULL) {
      list = g_ptr_array_new ();
      g_hash_table_insert (store->by_address, g_strdup (key), list);
    }
    /* a certificate that names the address twice (in two cases) is one candidate */
    if (list->len == 0 || g_ptr_array_index (list, list->len - 1) != e)
      g_ptr_array_add (list, e);
  }
}

/* read_listed - every certificate (and CRL) of the files @files (of the store directory @sub) into @certs;
 * unreadable files become @warnings. @paths: as read_sub's */
static void
read_listed (GPtrArray *files, const char *sub, STACK_OF (X509) * certs, STACK_OF (X509_CRL) * crls, GPtrArray *paths,
             GPtrArray *warnings)
{
  for (guint i = 0; i < files->len; i++) {
    g_autoptr (GError) local = NULL;
    const char *file = g_ptr_array_index (files, i);
    if (!read_objects (file, certs, crls, &local))
      g_ptr_array_add (warnings, g_strdup (local->message));
    while (paths != NULL && paths->len < (guint) sk_X509_num (certs)) {
      g_autofree char *base = g_path_get_basename (file);
      g_ptr_array_add (paths, g_build_filename (sub, base, NULL));
    }
  }
}

/* read_sub - every certificate (and CRL) of DIR/SUB into @certs; unreadable files become warnings. @paths, when
 * given, receives for each certificate the file it came from, relative to the store ("SUB/NAME"). */
static gboolean
read_sub (MgX509Store *store, const char *sub, STACK_OF (X509) * certs, STACK_OF (X509_CRL) * crls, GPtrArray *paths,
          GError **error)
{
  g_autoptr (GPtrArray) files = list_dir (store->dir, sub, error);

  if (files == NULL)
    return FALSE;
  read_listed (files, sub, certs, crls, paths, store->warnings);
  return TRUE;
}

/* store_new - an empty store for @dir */
static MgX509Store *
store_new (const char *dir, const char *passphrase)
{
  MgX509Store *store = g_new0 (MgX509Store, 1);

  store->dir = g_strdup (dir);
  store->passphrase = g_strdup (passphrase);
  store->trusted = X509_STORE_new ();
  store->untrusted = sk_X509_new_null ();
  store->crls = sk_X509_CRL_new_null ();
  store->entries = g_ptr_array_new_with_free_func ((GDestroyNotify) entry_free);
  store->by_address = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, (GDestroyNotify) g_ptr_array_unref);
  store->private_keys = g_ptr_array_new_with_free_func ((GDestroyNotify) private_free);
  store->warnings = g_ptr_array_new_with_free_func (g_free);
  g_mutex_init (&store->lock);
  return store;
}

/* store_trust - ca/ as the trusted collection, ca/ and @more (certificates of certs/) as where chains find their
 * intermediates, and the CRLs already in @store->crls */
static void
store_trust (MgX509Store *store, STACK_OF (X509) * ca, STACK_OF (X509) * more)
{
  for (int i = 0; i < sk_X509_num (ca); i++) {
    X509_STORE_add_cert (store->trusted, sk_X509_value (ca, i));
    X509_up_ref (sk_X509_value (ca, i));
    sk_X509_push (store->untrusted, sk_X509_value (ca, i));
  }
  for (int i = 0; i < sk_X509_num (more); i++) {
    X509_up_ref (sk_X509_value (more, i));
    sk_X509_push (store->untrusted, sk_X509_value (more, i));
  }
  for (int i = 0; i < sk_X509_CRL_num (store->crls); i++)
    X509_STORE_add_crl (store->trusted, sk_X509_CRL_value (store->crls, i));
  /* the same rules for every verification through this store (certificate choice and S/MIME signatures): every
   * certificate in ca/ is an anchor; CRLs are checked when present, a missing one is no error */
  X509_STORE_set_flags (store->trusted,
                        X509_V_FLAG_PARTIAL_CHAIN |
                          (sk_X509_CRL_num (store->crls) > 0 ? X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL : 0));
  X509_STORE_set_verify_cb (store->trusted, verify_cb);
  ERR_clear_error ();
}

/* store_dir_ok - whether @dir is a store directory that can be read */
static gboolean
store_dir_ok (const char *dir, GError **error)
{
  if (!g_file_test (dir, G_FILE_TEST_IS_DIR)) {
    g_set_error (error, MG_KEYS_ERROR, MG_KEYS_ERROR_STORE, _ ("X.509 store %s does not exist"), dir);
    return FALSE;
  }
  if (g_access (dir, R_OK | X_OK) != 0) {
    g_set_error (error, MG_KEYS_ERROR, MG_KEYS_ERROR_STORE, _ ("X.509 store %s cannot be read"), dir);
    return FALSE;
  }
  return TRUE;
}

/* open_whole - the store with every file read and every certificate of certs/ judged */
static MgX509Store *
open_whole (const char *dir, const char *passphrase, guint *certs_warnings_from, guint *certs_warnings_to,
            GError **error)
{
  g_autoptr (MgX509Store) store = NULL;
  g_autoptr (MgX509Stack) ca = sk_X509_new_null ();
  g_autoptr (MgX509Stack) certs = sk_X509_new_null ();
  g_autoptr (MgX509Stack) crl_certs = sk_X509_new_null (); /* certificates misfiled in crl/: ignored */
  g_autoptr (GPtrArray) paths = g_ptr_array_new_with_free_func (g_free);
  guint from;

  if (!store_dir_ok (dir, error))
    return NULL;
  store = store_new (dir, passphrase);
  if (!read_sub (store, "ca", ca, NULL, NULL, error))
    return NULL;
  from = store->warnings->len;
  /* harvested/ (certificates kept from verified signatures) is a source like certs/: judged the same way */
  if (!read_sub (store, "certs", certs, NULL, paths, error) ||
      !read_sub (store, "harvested", certs, NULL, paths, error))
    return NULL;
  if (certs_warnings_from != NULL) {
    *certs_warnings_from = from;
    *certs_warnings_to = store->warnings->len;
  }
  if (!read_sub (store, "crl", crl_certs, store->crls, NULL, error))
    return NULL;
  store_trust (store, ca, certs);
  if (g_once_init_enter (&store->trust_ready)) /* complete from the start: judging below needs the chains' anchors */
    g_once_init_leave (&store->trust_ready, 1);
  for (int i = 0; i < sk_X509_num (certs); i++)
    index_entry (store, sk_X509_value (certs, i), g_ptr_array_index (paths, i));
  for (guint i = 0; i < store->entries->len; i++) {
    Entry *e = g_ptr_array_index (store->entries, i);
    judge (store, e->cert, &e->verdict);
    e->reason = verdict_text (e->verdict.code, e->verdict.when, e->verdict.arg);
  }

  if (!load_private (store, certs, passphrase, error))
    return NULL;
  build_chains (store);
  return g_steal_pointer (&store);
}

/**
 * mg_x509_store_open - reads the store directory @dir, every file of it, and judges every certificate of certs/.
 * @passphrase: (nullable): for encrypted keys and PKCS #12 files in private/
 *
 * Returns: (transfer full): the store, or %NULL with a transient %MG_KEYS_ERROR_STORE naming the path when the store
 * cannot be read at all, or a private/ file is unsafe or cannot be opened.
 */
MgX509Store *
mg_x509_store_open (const char *dir, const char *passphrase, GError **error)
{
  return open_whole (dir, passphrase, NULL, NULL, error);
}

/* choose - of the candidates @list (element-type Entry) of one address, the one to encrypt to: usable, valid longest,
 * then the greater fingerprint */
static const Entry *
choose (GPtrArray *list)
{
  const Entry *best = NULL;

  for (guint i = 0; list != NULL && i < list->len; i++) {
    const Entry *e = g_ptr_array_index (list, i);
    if (e->reason == NULL &&
        (best == NULL || e->cert->not_after > best->cert->not_after ||
         (e->cert->not_after == best->cert->not_after && strcmp (e->cert->fingerprint, best->cert->fingerprint) > 0)))
      best = e;
  }
  return best;
}

/* refusal_text - the reason a candidate that is not chosen is refused */
static char *
refusal_text (VerdictCode code, gint64 when, const char *arg)
{
  char *text = verdict_text (code, when, arg);

  return text ? text : g_strdup (_ ("usable, but another certificate is valid longer"));
}

/* ---- the address index ------------------------------------------------------------------------------------------
 *
 * A pipe run must not pay for every certificate of certs/: the judge's decisions are kept in one file, rebuilt when
 * the store changes, and a run reads only the lines it needs. The file:
 *
 *   mimegate-x509-index v1
 *   stamp HEX        what the five directories' listings were (names, inodes, sizes, mtimes, ctimes, modes)
 *   until T          the first time any decision may change (a not_before or not_after of a certificate of certs/,
 *                    ca/ or private/, a CRL's thisUpdate or nextUpdate); 0: never
 *   I BASE64         certificates of certs/ that can issue (X509_check_ca): intermediates for chains
 *   P BASE64         certificates of certs/ for a key of private/
 *   W BASE64         a file of certs/ that was skipped, and why (as the build's locale wrote it)
 *   --
 *   KEY\tFPR\tPATH\tREFUSED\tFILES    one line per address, sorted by KEY (its address key, URI-escaped), so that a
 *                              lookup is a binary search in the mapped file: FPR and PATH (base64, relative to the
 *                              store) of the chosen certificate or "-"; REFUSED "-" or FPR,CODE,WHEN,ARG;… (ARG
 *                              base64 or "-"), each refused candidate in the judge's order, worded when read;
 *                              FILES PATH:STAT;… each candidate's file and a hash of its stat(), checked when the
 *                              line is used
 *   end
 *
 * Written atomically (a temporary file, fsync, rename) with mode 0600 inside the store when the gateway may write
 * there, else in its cache directory; one run builds it at a time (flock on a lock file next to it), and a run that
 * finds no current index and cannot take the lock within two seconds reads the whole store itself, as without an
 * index. A file that is not ours (owner, mode), has another stamp, has passed its time, or does not end with "end"
 * (truncated) is not read. The stamp covers the five directories' listings (harvested/ is the fifth) and every file
 * of ca/, crl/ and private/; the files of certs/ and harvested/ are checked per address when looked up: a certificate
 * renamed into certs/ or harvested/ (as harvesting does), removed, a candidate rewritten in place, or a CRL added or
 * rewritten, is noticed by the next run. */

#define INDEX_MAGIC "mimegate-x509-index v1"
#define INDEX_NAME ".mimegate-index"
#define INDEX_WAIT_MS 2000

/* mix - folds one 64-bit word into a 128-bit hash (two FNV-style lanes): the stamp is compared, never trusted */
static void
mix (guint64 h[2], guint64 w)
{
  h[0] = (h[0] ^ w) * G_GUINT64_CONSTANT (0x100000001b3);
  h[1] = (h[1] ^ w) * G_GUINT64_CONSTANT (0x9e3779b97f4a7c15);
  h[1] ^= h[1] >> 29;
}

static void
mix_text (guint64 h[2], const char *s)
{
  gsize len = strlen (s);

  for (gsize i = 0; i < len; i += 8) {
    guint64 w = 0;
    memcpy (&w, s + i, MIN (8, len - i));
    mix (h, w);
  }
  mix (h, len);
}

static void
mix_stat (guint64 h[2], const struct stat *st)
{
  mix (h, (guint64) st->st_dev);
  mix (h, (guint64) st->st_ino);
  mix (h, (guint64) st->st_mode);
  mix (h, (guint64) st->st_size);
  mix (h, (guint64) st->st_mtim.tv_sec);
  mix (h, (guint64) st->st_mtim.tv_nsec);
  mix (h, (guint64) st->st_ctim.tv_sec);
  mix (h, (guint64) st->st_ctim.tv_nsec);
}

/* SETTLED_S - how long certs/ and harvested/ must have been left alone (their own mtime and ctime) before the stamp
 * trusts their directory's stat() instead of listing them: any entry added, removed or renamed in a directory sets
 * its ctime to the time of the change, which nothing can set back, so once the ctime is older than any clock tick a
 * change shows in the directory's own stat() */
#define SETTLED_S 2

/* stamp_pass - store_stamp's hash; with @light, certs/ and harvested/ count by their directory's stat() alone (no
 * listing) and *@settled says whether both have been left alone for SETTLED_S */
static char *
stamp_pass (const char *dir, gboolean light, gboolean *settled)
{
  static const char *const subs[] = { "ca", "certs", "crl", "private", "harvested" };
  guint64 h[2] = { G_GUINT64_CONSTANT (0xcbf29ce484222325), G_GUINT64_CONSTANT (0x6a09e667f3bcc909) };
  gint64 now = g_get_real_time (); /* µs: a change 2.9 s ago is as settled as one 2.0 s ago */

  if (settled != NULL)
    *settled = TRUE;
  mix_text (h, INDEX_MAGIC);
  mix_text (h, dir);
  for (gsize i = 0; i < G_N_ELEMENTS (subs); i++) {
    g_autofree char *path = g_build_filename (dir, subs[i], NULL);
    gboolean big = strcmp (subs[i], "certs") == 0 || strcmp (subs[i], "harvested") == 0;
    struct stat st;
    DIR *d;
    struct dirent *ent;
    mix_text (h, subs[i]);
    if (stat (path, &st) != 0) {
      if (errno != ENOENT)
        return NULL;
      mix (h, 0);
      continue;
    }
    mix_stat (h, &st);
    if (big && light) {
      if (access (path, R_OK | X_OK) != 0)
        return NULL;
      gint64 m = (gint64) st.st_mtim.tv_sec * G_USEC_PER_SEC + st.st_mtim.tv_nsec / 1000;
      gint64 c = (gint64) st.st_ctim.tv_sec * G_USEC_PER_SEC + st.st_ctim.tv_nsec / 1000;
      if (settled != NULL && (m >= now - SETTLED_S * G_USEC_PER_SEC || c >= now - SETTLED_S * G_USEC_PER_SEC))
        *settled = FALSE;
      continue;
    }
    if ((d = opendir (path)) == NULL)
      return NULL;
    while ((ent = readdir (d)) != NULL) {
      if (ent->d_name[0] == '.')
        continue;
      mix_text (h, ent->d_name);
      if (big)
        mix (h, (guint64) ent->d_ino); /* the listing only: files there are checked per address (file_stamp) */
      else if (fstatat (dirfd (d), ent->d_name, &st, 0) == 0)
        mix_stat (h, &st);
      else
        mix (h, 1);
    }
    closedir (d);
  }
  return g_strdup_printf ("%016" G_GINT64_MODIFIER "x%016" G_GINT64_MODIFIER "x", h[0], h[1]);
}

/* store_stamp - (nullable): a hash of the listings of ca/, certs/, crl/, private/, harvested/ (names, inodes) with
 * each entry's stat() in the small ones: cheaper than reading the files, and any way of changing one shows (a rename,
 * a rewrite in place, a chmod). certs/ and harvested/ are the ones that grow: a stat() of each of 5,000 files costs a
 * pipe run more than all else, so their files are stat()ed per address when looked up instead (file_stamp of every
 * candidate's file, kept in the address line); and once they have been left alone for SETTLED_S, not even listed
 * (reading 5,000 names cost a pipe run ~0.8 ms): their directories' stat() stands for the listing ("L" stamps; "F":
 * listed). A change makes the next runs list them again until SETTLED_S has passed, so an index is rebuilt at most
 * twice per change. NULL when a directory cannot be listed (the whole read then says why). */
static char *
store_stamp (const char *dir)
{
  gboolean settled = FALSE;
  g_autofree char *light = stamp_pass (dir, TRUE, &settled);
  g_autofree char *full = NULL;

  if (light == NULL)
    return NULL;
  if (settled)
    return g_strconcat ("L", light, NULL);
  full = stamp_pass (dir, FALSE, NULL);
  return full ? g_strconcat ("F", full, NULL) : NULL;
}

/* file_stamp - (nullable): a hash of the stat() of the store file @rel, for its candidates' address lines */
static char *
file_stamp (const char *dir, const char *rel)
{
  g_autofree char *path = g_build_filename (dir, rel, NULL);
  guint64 h[2] = { 1, 2 };
  struct stat st;

  if (stat (path, &st) != 0)
    return NULL;
  mix_stat (h, &st);
  return g_strdup_printf ("%016" G_GINT64_MODIFIER "x", h[0] ^ h[1]);
}

/* dir_is_ours - whether @path is a directory of this user (or root) that nobody else may write to */
static gboolean
dir_is_ours (const char *path)
{
  struct stat st;

  return lstat (path, &st) == 0 && S_ISDIR (st.st_mode) && (st.st_uid == geteuid () || st.st_uid == 0) &&
         (st.st_mode & 022) == 0;
}

/* index_place - where the index of @dir lives: inside the store when the gateway may create files there, else in
 * @cache_dir (NULL: the user's cache directory, $XDG_CACHE_HOME/mimegate) under a name made from the store's path.
 * Returns the lock file's descriptor (not locked yet), or -1 when there is no place (then no index is used). */
static int
index_place (const char *dir, const char *cache_dir, char **index_path, char **lock_path)
{
  g_autofree char *in_store = g_build_filename (dir, INDEX_NAME, NULL);
  g_autofree char *lock = g_strconcat (in_store, ".lock", NULL);
  g_autofree char *cache = NULL, *abs = NULL, *sum = NULL, *name = NULL;
  int fd;

  if (g_access (dir, W_OK) == 0 && (fd = open (lock, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600)) >= 0) {
    *index_path = g_steal_pointer (&in_store);
    *lock_path = g_steal_pointer (&lock);
    return fd;
  }
  cache = cache_dir ? g_strdup (cache_dir) : g_build_filename (g_get_user_cache_dir (), "mimegate", NULL);
  if (g_mkdir_with_parents (cache, 0700) != 0 || !dir_is_ours (cache))
    return -1;
  abs = g_canonicalize_filename (dir, NULL);
  sum = g_compute_checksum_for_string (G_CHECKSUM_SHA256, abs, -1);
  sum[32] = '\0';
  name = g_strdup_printf ("x509-%s.index", sum);
  g_free (lock);
  lock = g_strdup_printf ("%s/%s.lock", cache, name);
  fd = open (lock, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd >= 0) {
    *index_path = g_build_filename (cache, name, NULL);
    *lock_path = g_steal_pointer (&lock);
  }
  return fd;
}

/* index_lock - takes the build lock on @fd, waiting at most INDEX_WAIT_MS for another run's build */
static gboolean
index_lock (int fd)
{
  for (int waited = 0; flock (fd, LOCK_EX | LOCK_NB) != 0; waited += 20) {
    if ((errno != EWOULDBLOCK && errno != EINTR) || waited >= INDEX_WAIT_MS)
      return FALSE;
    g_usleep (20 * 1000);
  }
  return TRUE;
}

/* key_escape - an address key as the index writes it: no tab, newline or '%' left */
static char *
key_escape (const char *key)
{
  return g_uri_escape_string (key, "!$&'()*+,;=:@/~", TRUE);
}

static char *
b64_or_dash (const char *text)
{
  return text && *text ? g_base64_encode ((const guchar *) text, strlen (text)) : g_strdup ("-");
}

static char *
unb64_or_null (const char *text)
{
  gsize len = 0;
  g_autofree guchar *raw = NULL;

  if (strcmp (text, "-") == 0)
    return NULL;
  raw = g_base64_decode (text, &len);
  return g_strndup ((const char *) raw, len);
}

static void
append_der (GString *out, char tag, X509 *x)
{
  unsigned char *der = NULL;
  int len = i2d_X509 (x, &der);
  g_autofree char *b64 = len > 0 ? g_base64_encode (der, (gsize) len) : NULL;

  if (b64 != NULL)
    g_string_append_printf (out, "%c %s\n", tag, b64);
  OPENSSL_free (der);
}

/* boundary - @until moved back to the first second after @now at which a comparison with @t may turn (t itself, or
 * t + 1 for "t < now"); 0: none yet */
static gint64
boundary (gint64 until, gint64 t, gint64 now)
{
  gint64 b;

  if (t <= 0 || t < now)
    return until;
  b = t > now ? t : now + 1;
  return until == 0 || b < until ? b : until;
}

static int
compare_strings (gconstpointer a, gconstpointer b)
{
  return strcmp (*(char *const *) a, *(char *const *) b);
}

/* index_write - the index of the whole store @store (see above), written atomically with mode 0600 */
static void
index_write (MgX509Store *store, const char *path, const char *stamp, gint64 now, guint warn_from, guint warn_to)
{
  g_autoptr (GString) out = g_string_new (INDEX_MAGIC "\n");
  g_autoptr (GPtrArray) lines = g_ptr_array_new_with_free_func (g_free);
  GHashTableIter it;
  gpointer key, value;
  gint64 until = 0;

  for (int i = 0; i < sk_X509_num (store->untrusted); i++) {
    X509 *x = sk_X509_value (store->untrusted, i);
    until = boundary (until, asn1_unix (X509_get0_notBefore (x)), now);
    until = boundary (until, asn1_unix (X509_get0_notAfter (x)), now);
  }
  for (int i = 0; i < sk_X509_CRL_num (store->crls); i++) {
    X509_CRL *crl = sk_X509_CRL_value (store->crls, i);
    until = boundary (until, asn1_unix (X509_CRL_get0_lastUpdate (crl)), now);
    until = boundary (until, asn1_unix (X509_CRL_get0_nextUpdate (crl)), now);
  }
  g_string_append_printf (out, "stamp %s\nuntil %" G_GINT64_FORMAT "\n", stamp, until);
  for (guint i = 0; i < store->entries->len; i++) {
    X509 *x = ((Entry *) g_ptr_array_index (store->entries, i))->cert->cert;
    if (X509_check_ca (x) != 0)
      append_der (out, 'I', x);
  }
  for (guint i = 0; i < store->entries->len; i++) {
    X509 *x = ((Entry *) g_ptr_array_index (store->entries, i))->cert->cert;
    gboolean paired = FALSE;
    for (guint k = 0; k < store->private_keys->len && !paired; k++)
      paired =
        EVP_PKEY_eq (X509_get0_pubkey (x), ((MgX509Private *) g_ptr_array_index (store->private_keys, k))->key) == 1;
    if (paired)
      append_der (out, 'P', x);
  }
  ERR_clear_error ();
  for (guint i = warn_from; i < warn_to; i++) {
    g_autofree char *b64 = b64_or_dash (g_ptr_array_index (store->warnings, i));
    g_string_append_printf (out, "W %s\n", b64);
  }
  g_string_append (out, "--\n");
  g_hash_table_iter_init (&it, store->by_address);
  while (g_hash_table_iter_next (&it, &key, &value)) {
    GPtrArray *list = value;
    const Entry *best = choose (list);
    g_autofree char *esc = key_escape (key);
    g_autofree char *bpath = best ? b64_or_dash (best->path) : g_strdup ("-");
    GString *line = g_string_new (NULL);
    g_string_printf (line, "%s\t%s\t%s\t", esc, best ? best->cert->fingerprint : "-", bpath);
    for (guint i = 0, n = 0; i < list->len; i++) {
      const Entry *e = g_ptr_array_index (list, i);
      g_autofree char *arg = NULL;
      if (e == best)
        continue;
      arg = b64_or_dash (e->verdict.arg);
      g_string_append_printf (line, "%s%s,%d,%" G_GINT64_FORMAT ",%s", n++ ? ";" : "", e->cert->fingerprint,
                              (int) e->verdict.code, e->verdict.when, arg);
    }
    if (line->str[line->len - 1] == '\t')
      g_string_append_c (line, '-');
    g_string_append_c (line, '\t');
    for (guint i = 0; i < list->len; i++) {
      const Entry *e = g_ptr_array_index (list, i);
      g_autofree char *b64 = b64_or_dash (e->path);
      g_autofree char *fst = file_stamp (store->dir, e->path);
      if (i > 0 && strcmp (((Entry *) g_ptr_array_index (list, i - 1))->path, e->path) == 0)
        continue;
      g_string_append_printf (line, "%s%s:%s", i ? ";" : "", b64, fst ? fst : "-");
    }
    g_ptr_array_add (lines, g_string_free (line, FALSE));
  }
  g_ptr_array_sort (lines, compare_strings);
  for (guint i = 0; i < lines->len; i++) {
    g_string_append (out, g_ptr_array_index (lines, i));
    g_string_append_c (out, '\n');
  }
  g_string_append (out, "end\n");
  /* nothing is lost when it cannot be written: the next run reads the whole store again */
  g_file_set_contents_full (path, out->str, (gssize) out->len, G_FILE_SET_CONTENTS_CONSISTENT, 0600, NULL);
}

/* IndexHead - what an index file holds besides its address lines */
typedef struct {
  GMappedFile *map;
  const char *sorted, *sorted_end;
  STACK_OF (X509) * issuers;  /* I */
  STACK_OF (X509) * pairable; /* P */
  GPtrArray *warnings;        /* W */
} IndexHead;

static void
index_head_clear (IndexHead *h)
{
  g_clear_pointer (&h->map, g_mapped_file_unref);
  sk_X509_pop_free (h->issuers, X509_free);
  sk_X509_pop_free (h->pairable, X509_free);
  g_clear_pointer (&h->warnings, g_ptr_array_unref);
  h->issuers = h->pairable = NULL;
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (IndexHead, index_head_clear)

/* index_load - the index at @path into @head when it is ours, whole, of @stamp and not past its time */
static gboolean
index_load (const char *path, const char *stamp, gint64 now, IndexHead *head)
{
  g_autoptr (GError) error = NULL;
  struct stat st;
  const char *p, *end, *nl;
  int fd = open (path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  g_autofree char *want_stamp = g_strdup_printf ("stamp %s", stamp);
  guint n = 0;

  index_head_clear (head);
  if (fd < 0)
    return FALSE;
  if (fstat (fd, &st) != 0 || !S_ISREG (st.st_mode) || st.st_uid != geteuid () || (st.st_mode & 077) != 0 ||
      st.st_size < (off_t) strlen (INDEX_MAGIC "\n--\nend\n")) {
    close (fd);
    return FALSE;
  }
  head->map = g_mapped_file_new_from_fd (fd, FALSE, &error);
  close (fd);
  if (head->map == NULL)
    return FALSE;
  p = g_mapped_file_get_contents (head->map);
  end = p + g_mapped_file_get_length (head->map);
  if ((gsize) (end - p) < 5 || memcmp (end - 5, "\nend\n", 5) != 0)
    goto damaged; /* truncated */
  head->issuers = sk_X509_new_null ();
  head->pairable = sk_X509_new_null ();
  head->warnings = g_ptr_array_new_with_free_func (g_free);
  for (; p < end && (nl = memchr (p, '\n', (gsize) (end - p))) != NULL; p = nl + 1, n++) {
    g_autofree char *line = g_strndup (p, (gsize) (nl - p));
    if (n == 0 && strcmp (line, INDEX_MAGIC) != 0)
      goto damaged;
    else if (n == 1 && strcmp (line, want_stamp) != 0)
      goto damaged;
    else if (n == 2) {
      gint64 until;
      if (!g_str_has_prefix (line, "until "))
        goto damaged;
      until = g_ascii_strtoll (line + 6, NULL, 10);
      if (until != 0 && now >= until)
        goto damaged; /* a decision may have changed since: judged again */
    } else if (n >= 3 && strcmp (line, "--") == 0) {
      head->sorted = nl + 1;
      head->sorted_end = end - 4; /* "end\n" */
      return head->sorted <= head->sorted_end;
    } else if (n >= 3 && (line[0] == 'I' || line[0] == 'P') && line[1] == ' ') {
      gsize len = 0;
      g_autofree guchar *der = g_base64_decode (line + 2, &len);
      const unsigned char *q = der;
      X509 *x = d2i_X509 (NULL, &q, (long) len);
      if (x == NULL)
        goto damaged;
      sk_X509_push (line[0] == 'I' ? head->issuers : head->pairable, x);
    } else if (n >= 3 && line[0] == 'W' && line[1] == ' ')
      g_ptr_array_add (head->warnings, unb64_or_null (line + 2));
    else if (n >= 3)
      goto damaged;
  }
damaged:
  ERR_clear_error ();
  index_head_clear (head);
  return FALSE;
}

/* index_find - (nullable): the address line of @key in [@lo, @hi) (whole lines sorted by key), by binary search */
static const char *
index_find (const char *lo, const char *hi, const char *key, const char **line_end)
{
  gsize klen = strlen (key);

  while (lo < hi) {
    const char *line = lo + (hi - lo) / 2, *nl, *tab;
    int c;
    while (line > lo && line[-1] != '\n')
      line--;
    nl = memchr (line, '\n', (gsize) (hi - line));
    tab = nl ? memchr (line, '\t', (gsize) (nl - line)) : NULL;
    if (tab == NULL)
      return NULL;
    c = memcmp (line, key, MIN ((gsize) (tab - line), klen));
    if (c == 0)
      c = (tab - line) < (gssize) klen ? -1 : (tab - line) > (gssize) klen ? 1 : 0;
    if (c == 0) {
      *line_end = nl;
      return line;
    }
    if (c < 0)
      lo = nl + 1;
    else
      hi = line;
  }
  return NULL;
}

/* Answer - one address's lookup in an indexed store, kept for the store's life */
typedef struct {
  MgX509Cert *own;          /* (nullable): the chosen certificate, read from its file */
  const MgX509Cert *chosen; /* (nullable): @own, or owned by the whole store */
  GPtrArray *refused;       /* (element-type MgRefusal) */
} Answer;

static void
answer_free (Answer *a)
{
  cert_free (a->own);
  g_ptr_array_unref (a->refused);
  g_free (a);
}

/* open_from_index - a store that reads ca/, crl/ and private/ but takes certs/ from the index @head */
static MgX509Store *
open_from_index (const char *dir, const char *passphrase, IndexHead *head, GError **error)
{
  g_autoptr (MgX509Store) store = store_new (dir, passphrase);

  store->indexed = TRUE;
  store->answers = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, (GDestroyNotify) answer_free);
  /* listed now, read on first use (ensure_trust) */
  if ((store->ca_files = list_dir (dir, "ca", error)) == NULL)
    return NULL;
  for (guint i = 0; i < head->warnings->len; i++)
    g_ptr_array_add (store->warnings, g_strdup (g_ptr_array_index (head->warnings, i)));
  store->head_warnings = head->warnings->len;
  if ((store->crl_files = list_dir (dir, "crl", error)) == NULL)
    return NULL;
  store->issuers = g_steal_pointer (&head->issuers);
  if (!load_private (store, head->pairable, passphrase, error))
    return NULL;
  store->index = g_steal_pointer (&head->map);
  store->sorted = head->sorted;
  store->sorted_end = head->sorted_end;
  return g_steal_pointer (&store);
}

/**
 * mg_x509_store_open_indexed - the store as mg_x509_store_open() reads it, but with certs/ judged once into an address
 * index (see above) that later runs read instead of every certificate: what a pipe run needs, so that its cost does
 * not grow with certs/. ca/, crl/ and private/ are read every time. Lookups give the same certificate and the same
 * refusals as the whole read; when the index and the files disagree (a certificate changed under a running process),
 * the whole store is read after all.
 * @cache_dir: (nullable): where the index lives when the store is not writable (%NULL: $XDG_CACHE_HOME/mimegate);
 *   without any writable place every open reads the whole store
 *
 * Returns: (transfer full): as mg_x509_store_open()
 */
MgX509Store *
mg_x509_store_open_indexed (const char *dir, const char *passphrase, const char *cache_dir, GError **error)
{
  g_autofree char *stamp = NULL, *path = NULL, *lock = NULL;
  g_auto (IndexHead) head = { 0 };
  gint64 now = g_get_real_time () / G_USEC_PER_SEC;
  MgX509Store *store;
  guint warn_from = 0, warn_to = 0;
  int fd;

  if (!store_dir_ok (dir, error))
    return NULL;
  stamp = store_stamp (dir);
  fd = stamp ? index_place (dir, cache_dir, &path, &lock) : -1;
  if (fd < 0)
    return open_whole (dir, passphrase, NULL, NULL, error);
  if (index_load (path, stamp, now, &head) ||
      (index_lock (fd) && index_load (path, stamp, now, &head))) { /* built by another run while this one waited */
    close (fd);
    store = open_from_index (dir, passphrase, &head, error);
    if (store != NULL) {
      store->index_path = g_steal_pointer (&path);
      store->lock_path = g_steal_pointer (&lock);
      store->stamp = g_steal_pointer (&stamp);
    }
    return store;
  }
  store = open_whole (dir, passphrase, &warn_from, &warn_to, error);
  if (store != NULL && flock (fd, LOCK_EX | LOCK_NB) == 0) /* ours already, unless the wait ran out */
    index_write (store, path, stamp, now, warn_from, warn_to);
  close (fd); /* releases the lock */
  return store;
}

/**
 * mg_x509_store_whole - the store with every certificate of certs/ read: @store itself, or for a store opened from
 * its index the whole read, once (for a signature whose signer's certificate only certs/ holds).
 *
 * Returns: (transfer none) (nullable): owned by @store; %NULL when the store cannot be read now
 */
MgX509Store *
mg_x509_store_whole (MgX509Store *store)
{
  MgX509Store *whole;

  if (!store->indexed)
    return store;
  g_mutex_lock (&store->lock);
  if (!store->whole_tried) {
    guint from = 0, to = 0;
    int fd;
    store->whole_tried = TRUE;
    store->whole = open_whole (store->dir, store->passphrase, &from, &to, NULL);
    /* the index was out of date for a file of certs/: written again from this read, so that later runs are quick */
    if (store->whole != NULL && store->index_path != NULL &&
        (fd = open (store->lock_path, O_RDWR | O_NOFOLLOW | O_CLOEXEC)) >= 0) {
      if (flock (fd, LOCK_EX | LOCK_NB) == 0)
        index_write (store->whole, store->index_path, store->stamp, g_get_real_time () / G_USEC_PER_SEC, from, to);
      close (fd);
    }
  }
  whole = store->whole;
  g_mutex_unlock (&store->lock);
  return whole;
}

const char *
mg_x509_store_dir (MgX509Store *store)
{
  return store->dir;
}

/* read_chosen - (nullable): the certificate of fingerprint @fpr in the store file @rel */
static MgX509Cert *
read_chosen (MgX509Store *store, const char *rel, const char *fpr)
{
  g_autofree char *file = g_build_filename (store->dir, rel, NULL);
  g_autoptr (MgX509Stack) certs = sk_X509_new_null ();
  MgX509Cert *found = NULL;

  if (strstr (rel, "..") != NULL || !(g_str_has_prefix (rel, "certs/") || g_str_has_prefix (rel, "harvested/")) ||
      !read_objects (file, certs, NULL, NULL))
    return NULL;
  for (int i = 0; i < sk_X509_num (certs) && found == NULL; i++) {
    MgX509Cert *c = describe (sk_X509_value (certs, i));
    if (strcmp (c->fingerprint, fpr) == 0) {
      found = c;
      found->path = g_strdup (rel);
    } else
      cert_free (c);
  }
  return found;
}

/* answer_from_index - @key's answer from its index line; %NULL when the line or the file it names is not as the
 * index says */
static Answer *
answer_from_index (MgX509Store *store, const char *key)
{
  g_autofree char *esc = key_escape (key);
  const char *end = NULL;
  const char *line = index_find (store->sorted, store->sorted_end, esc, &end);
  g_autofree char *text = NULL;
  g_auto (GStrv) f = NULL;
  g_auto (GStrv) items = NULL;
  Answer *a = g_new0 (Answer, 1);

  a->refused = g_ptr_array_new_with_free_func ((GDestroyNotify) mg_keys_refusal_free);
  if (line == NULL)
    return a; /* no certificate names the address */
  text = g_strndup (line, (gsize) (end - line));
  f = g_strsplit (text, "\t", -1);
  if (g_strv_length (f) != 5)
    goto damaged;
  /* each candidate's file as it was when judged (a file of certs/ rewritten in place keeps the listing) */
  items = g_strsplit (f[4], ";", -1);
  for (guint i = 0; items[i] != NULL; i++) {
    char *colon = strchr (items[i], ':');
    g_autofree char *rel = NULL, *now = NULL;
    if (colon == NULL)
      goto damaged;
    *colon = '\0';
    rel = unb64_or_null (items[i]);
    now = rel ? file_stamp (store->dir, rel) : NULL;
    if (now == NULL || strcmp (now, colon + 1) != 0)
      goto damaged;
  }
  g_clear_pointer (&items, g_strfreev);
  if (strcmp (f[1], "-") != 0) {
    g_autofree char *rel = unb64_or_null (f[2]);
    if (rel == NULL || (a->own = read_chosen (store, rel, f[1])) == NULL)
      goto damaged;
    a->chosen = a->own;
  }
  items = strcmp (f[3], "-") == 0 ? g_new0 (char *, 1) : g_strsplit (f[3], ";", -1);
  for (guint i = 0; items[i] != NULL; i++) {
    g_auto (GStrv) r = g_strsplit (items[i], ",", -1);
    g_autofree char *arg = NULL, *reason = NULL;
    gint64 code;
    if (g_strv_length (r) != 4)
      goto damaged;
    code = g_ascii_strtoll (r[1], NULL, 10);
    if (code < V_USABLE || code >= V_LAST)
      goto damaged;
    arg = unb64_or_null (r[3]);
    reason = refusal_text ((VerdictCode) code, g_ascii_strtoll (r[2], NULL, 10), arg);
    g_ptr_array_add (a->refused, mg_keys_refusal_new (r[0], reason));
  }
  return a;
damaged:
  answer_free (a);
  return NULL;
}

/* lookup_whole - the whole read's answer for @address (the store has read certs/) */
static const MgX509Cert *
lookup_whole (MgX509Store *store, const char *address, GPtrArray *refused)
{
  g_autofree char *key = mg_keys_address_key (address);
  GPtrArray *list = key ? g_hash_table_lookup (store->by_address, key) : NULL;
  const Entry *best = choose (list);

  for (guint i = 0; list != NULL && i < list->len; i++) {
    const Entry *e = g_ptr_array_index (list, i);
    g_autofree char *reason = NULL;
    if (e == best)
      continue;
    reason = refusal_text (e->verdict.code, e->verdict.when, e->verdict.arg);
    g_ptr_array_add (refused, mg_keys_refusal_new (e->cert->fingerprint, reason));
  }
  return best ? best->cert : NULL;
}

/* lookup_local - the answer of certs/ alone; %NULL with a transient @error when the index and the files disagree and
 * the files cannot be read now (never "no certificate": that would send an opportunistic recipient clear text) */
static const MgX509Cert *
lookup_local (MgX509Store *store, const char *address, GPtrArray *refused, GError **error)
{
  g_autofree char *key = mg_keys_address_key (address);
  Answer *a;
  const MgX509Cert *chosen;

  if (!store->indexed)
    return lookup_whole (store, address, refused);
  if (key == NULL)
    return NULL;
  g_mutex_lock (&store->lock);
  a = g_hash_table_lookup (store->answers, key);
  if (a == NULL) {
    a = answer_from_index (store, key);
    if (a == NULL) {
      /* the index and the files disagree (changed under this process): the whole store decides */
      MgX509Store *whole;
      g_mutex_unlock (&store->lock);
      whole = mg_x509_store_whole (store);
      if (whole == NULL) {
        g_set_error (error, MG_KEYS_ERROR, MG_KEYS_ERROR_STORE,
                     _ ("X.509 store %s changed while it was in use and cannot be read again"), store->dir);
        return NULL;
      }
      g_mutex_lock (&store->lock);
      a = g_new0 (Answer, 1);
      a->refused = g_ptr_array_new_with_free_func ((GDestroyNotify) mg_keys_refusal_free);
      a->chosen = lookup_whole (whole, address, a->refused);
    }
    if (g_hash_table_lookup (store->answers, key) == NULL)
      g_hash_table_insert (store->answers, g_strdup (key), a);
    else {
      answer_free (a); /* another thread answered meanwhile */
      a = g_hash_table_lookup (store->answers, key);
    }
  }
  for (guint i = 0; refused != NULL && i < a->refused->len; i++) {
    const MgRefusal *r = g_ptr_array_index (a->refused, i);
    g_ptr_array_add (refused, mg_keys_refusal_new (r->id, r->reason));
  }
  chosen = a->chosen;
  g_mutex_unlock (&store->lock);
  return chosen;
}

/* der_certs - the certificates of one value from a source: a DER certificate (userCertificate), or a PKCS #7
 * SignedData that carries them (userSMIMECertificate, RFC 2798) */
static void
der_certs (GBytes *value, STACK_OF (X509) * out)
{
  gsize len = 0;
  const unsigned char *data = g_bytes_get_data (value, &len), *p = data;
  X509 *x = len > 0 && len < G_MAXLONG ? d2i_X509 (NULL, &p, (long) len) : NULL;
  PKCS7 *p7;

  if (x != NULL) {
    sk_X509_push (out, x);
    ERR_clear_error ();
    return;
  }
  p = data;
  p7 = len > 0 && len < G_MAXLONG ? d2i_PKCS7 (NULL, &p, (long) len) : NULL;
  if (p7 != NULL && PKCS7_type_is_signed (p7) && p7->d.sign != NULL)
    for (int i = 0; i < sk_X509_num (p7->d.sign->cert); i++) {
      X509_up_ref (sk_X509_value (p7->d.sign->cert, i));
      sk_X509_push (out, sk_X509_value (p7->d.sign->cert, i));
    }
  PKCS7_free (p7);
  ERR_clear_error ();
}

/* pooled - (transfer none): the store's lasting description of @x (see @fetched) */
static MgX509Cert *
pooled (MgX509Store *store, X509 *x)
{
  MgX509Cert *c = describe (x), *have;

  g_mutex_lock (&store->lock);
  have = g_hash_table_lookup (store->fetched, c->fingerprint);
  if (have == NULL) {
    have = g_steal_pointer (&c);
    g_hash_table_insert (store->fetched, have->fingerprint, have);
  }
  g_mutex_unlock (&store->lock);
  cert_free (c);
  return have;
}

/* candidate_free - a lookup's temporary Entry, whose certificate the store keeps */
static void
candidate_free (Entry *e)
{
  g_free (e->verdict.arg);
  g_free (e->reason);
  g_free (e);
}

/* lookup_source - @local (the choice of certs/) against the source's certificates for @address, each judged as one
 * of certs/ would be, by the same rule (choose); the others go to @refused */
static const MgX509Cert *
lookup_source (MgX509Store *store, const char *address, const MgX509Cert *local, GPtrArray *refused, GError **error)
{
  g_autoptr (GPtrArray) values = store->fetch (address, store->fetch_data, error);
  g_autoptr (GPtrArray) cands = g_ptr_array_new_with_free_func ((GDestroyNotify) candidate_free);
  g_autoptr (MgX509Stack) certs = sk_X509_new_null ();
  g_autofree char *want = mg_keys_address_key (address);
  const Entry *best;

  if (values == NULL)
    return NULL;
  if (local != NULL) {
    Entry *e = g_new0 (Entry, 1);
    e->cert = (MgX509Cert *) local;
    g_ptr_array_add (cands, e);
  }
  for (guint i = 0; i < values->len; i++)
    der_certs (g_ptr_array_index (values, i), certs);
  for (int i = 0; i < sk_X509_num (certs); i++) {
    MgX509Cert *c = pooled (store, sk_X509_value (certs, i));
    g_autofree char *named = named_address (c->cert, want);
    Entry *e;
    gboolean seen = FALSE;
    for (guint k = 0; k < cands->len && !seen; k++)
      seen = strcmp (((Entry *) g_ptr_array_index (cands, k))->cert->fingerprint, c->fingerprint) == 0;
    if (seen)
      continue; /* in certs/ too, or twice in the directory: one candidate */
    e = g_new0 (Entry, 1);
    e->cert = c;
    e->path = store->source_name; /* borrowed: marks it as the source's */
    if (named == NULL)
      e->reason = g_strdup_printf (_ ("the certificate does not name %s"), address);
    else {
      judge (store, c, &e->verdict);
      e->reason = verdict_text (e->verdict.code, e->verdict.when, e->verdict.arg);
    }
    g_ptr_array_add (cands, e);
  }
  best = choose (cands);
  for (guint i = 0; refused != NULL && i < cands->len; i++) {
    const Entry *e = g_ptr_array_index (cands, i);
    g_autofree char *reason = NULL;
    MgRefusal *r;
    if (e == best)
      continue;
    reason = e->reason ? g_strdup (e->reason) : refusal_text (V_USABLE, 0, NULL);
    r = mg_keys_refusal_new (e->cert->fingerprint, reason);
    r->source = g_strdup (e->path);
    g_ptr_array_add (refused, r);
  }
  return best ? best->cert : NULL;
}

/**
 * mg_x509_store_lookup_checked - the certificate to encrypt to @address, from certs/ and the store's source (if
 * any), chosen by one rule: usable, then valid longest, then the greater fingerprint.
 * @refused: (element-type MgRefusal): receives every other candidate with its reason (and its source when that is
 *   not certs/)
 *
 * Returns: (transfer none) (nullable): the chosen certificate, owned by the store; %NULL without @error when there
 * is none, with a transient @error when the source cannot answer now
 */
const MgX509Cert *
mg_x509_store_lookup_checked (MgX509Store *store, const char *address, GPtrArray *refused, GError **error)
{
  g_autoptr (GPtrArray) local_refused = g_ptr_array_new_with_free_func ((GDestroyNotify) mg_keys_refusal_free);
  g_autoptr (GError) local_error = NULL;
  const MgX509Cert *local = lookup_local (store, address, local_refused, &local_error), *chosen;

  if (local_error != NULL) {
    g_propagate_error (error, g_steal_pointer (&local_error));
    return NULL;
  }
  if (store->fetch == NULL) {
    chosen = local;
  } else {
    g_autoptr (GPtrArray) more = g_ptr_array_new_with_free_func ((GDestroyNotify) mg_keys_refusal_free);
    chosen = lookup_source (store, address, local, more, &local_error);
    if (local_error != NULL) {
      g_propagate_error (error, g_steal_pointer (&local_error));
      return NULL;
    }
    g_ptr_array_extend_and_steal (local_refused, g_steal_pointer (&more));
  }
  if (refused != NULL)
    g_ptr_array_extend_and_steal (refused, g_steal_pointer (&local_refused));
  return chosen;
}

/**
 * mg_x509_store_lookup - mg_x509_store_lookup_checked() for callers that cannot defer: when the source cannot
 * answer, the choice of certs/ alone.
 *
 * Returns: (transfer none) (nullable): the chosen certificate, owned by the store
 */
const MgX509Cert *
mg_x509_store_lookup (MgX509Store *store, const char *address, GPtrArray *refused)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GPtrArray) mine = g_ptr_array_new_with_free_func ((GDestroyNotify) mg_keys_refusal_free);
  const MgX509Cert *c = mg_x509_store_lookup_checked (store, address, mine, &error);

  if (error != NULL) {
    g_ptr_array_set_size (mine, 0);
    c = lookup_local (store, address, mine, NULL);
  }
  if (refused != NULL)
    g_ptr_array_extend_and_steal (refused, g_steal_pointer (&mine));
  return c;
}

/**
 * mg_x509_store_set_source - a further source of recipients' certificates, asked at every lookup after certs/ (it
 * keeps its own cache). Its certificates are judged like those of certs/ but never become anchors or intermediates.
 * @name: how `mimegate keys` names the source ("ldap://host/base")
 * @data: (transfer full): for @fetch; @destroy frees it with the store
 */
void
mg_x509_store_set_source (MgX509Store *store, const char *name, MgX509FetchFunc fetch, gpointer data,
                          GDestroyNotify destroy)
{
  if (store->fetch_destroy != NULL)
    store->fetch_destroy (store->fetch_data);
  g_free (store->source_name);
  store->source_name = g_strdup (name);
  store->fetch = fetch;
  store->fetch_data = data;
  store->fetch_destroy = destroy;
  if (store->fetched == NULL)
    store->fetched = g_hash_table_new_full (g_str_hash, g_str_equal, NULL, (GDestroyNotify) cert_free);
}

/**
 * mg_x509_store_cert_source - where @cert, a lookup's answer, came from when that is the store's source
 *
 * Returns: (transfer none) (nullable): the source's name; %NULL for a certificate of certs/
 */
const char *
mg_x509_store_cert_source (MgX509Store *store, const MgX509Cert *cert)
{
  const char *source = NULL;

  if (store->fetched != NULL && cert != NULL) {
    g_mutex_lock (&store->lock);
    if (g_hash_table_lookup (store->fetched, cert->fingerprint) == cert)
      source = store->source_name;
    g_mutex_unlock (&store->lock);
  }
  return source;
}

/**
 * mg_x509_cert_address - which of @cert's addresses @address matched (mg_keys_address_key), as the certificate
 * writes it: for `mimegate keys` to show why a certificate was chosen.
 *
 * Returns: (transfer full) (nullable): %NULL when the certificate does not name @address
 */
char *
mg_x509_cert_address (const MgX509Cert *cert, const char *address)
{
  g_autofree char *want = mg_keys_address_key (address);

  return cert != NULL ? named_address (cert->cert, want) : NULL;
}

/**
 * mg_x509_store_signer - the key the gateway signs S/MIME as @address with: one of private/ whose certificate names
 * that address, is within its validity, may sign (digitalSignature when key usage is given, emailProtection when
 * extended key usage is) and chains to the trusted collection. Of several, the one valid longest.
 *
 * Returns: (transfer none) (nullable): owned by the store
 */
const MgX509Private *
mg_x509_store_signer (MgX509Store *store, const char *address)
{
  g_autofree char *want = mg_keys_address_key (address);
  const MgX509Private *best = NULL;
  gint64 now = g_get_real_time () / G_USEC_PER_SEC;

  ensure_trust (store);
  for (guint i = 0; want != NULL && i < store->private_keys->len; i++) {
    const MgX509Private *p = g_ptr_array_index (store->private_keys, i);
    X509 *x = p->cert->cert;
    uint32_t flags = X509_get_extension_flags (x);
    g_autofree char *named = named_address (x, want);
    Verdict v = { 0 };
    gboolean ok;
    if (named == NULL || (p->cert->not_after != 0 && p->cert->not_after < now) || p->cert->not_before > now ||
        ((flags & EXFLAG_KUSAGE) && !(X509_get_key_usage (x) & KU_DIGITAL_SIGNATURE)) ||
        ((flags & EXFLAG_XKUSAGE) && !(X509_get_extended_key_usage (x) & (XKU_SMIME | XKU_ANYEKU))))
      continue;
    ok = chain_verdict (store, x, &v);
    g_free (v.arg);
    if (ok && (best == NULL || p->cert->not_after > best->cert->not_after))
      best = p;
  }
  return best;
}

/* mg_x509_store_private_keys - (transfer none) (element-type MgX509Private): the keys the gateway holds */
GPtrArray *
mg_x509_store_private_keys (MgX509Store *store)
{
  ensure_trust (store); /* their chains */
  return store->private_keys;
}

/* mg_x509_store_warnings - (transfer none) (element-type utf8): files that were skipped, and why */
GPtrArray *
mg_x509_store_warnings (MgX509Store *store)
{
  ensure_trust (store); /* ca/'s and crl/'s */
  return store->warnings;
}

void
mg_x509_store_free (MgX509Store *store)
{
  if (store == NULL)
    return;
  g_free (store->dir);
  if (store->passphrase != NULL)
    memset (store->passphrase, 0, strlen (store->passphrase));
  g_free (store->passphrase);
  X509_STORE_free (store->trusted);
  sk_X509_pop_free (store->untrusted, X509_free);
  sk_X509_CRL_pop_free (store->crls, X509_CRL_free);
  g_clear_pointer (&store->by_address, g_hash_table_unref);
  g_clear_pointer (&store->entries, g_ptr_array_unref);
  g_clear_pointer (&store->private_keys, g_ptr_array_unref);
  g_clear_pointer (&store->warnings, g_ptr_array_unref);
  g_clear_pointer (&store->ca_files, g_ptr_array_unref);
  g_clear_pointer (&store->crl_files, g_ptr_array_unref);
  sk_X509_pop_free (store->issuers, X509_free);
  g_clear_pointer (&store->answers, g_hash_table_unref);
  g_clear_pointer (&store->index, g_mapped_file_unref);
  g_clear_pointer (&store->whole, mg_x509_store_free);
  g_free (store->index_path);
  g_free (store->lock_path);
  g_free (store->stamp);
  if (store->fetch_destroy != NULL)
    store->fetch_destroy (store->fetch_data);
  g_free (store->source_name);
  g_clear_pointer (&store->fetched, g_hash_table_unref);
  g_mutex_clear (&store->lock);
  g_free (store);
}

/* mg_x509_store_trusted - (transfer none): the trusted collection, with the store's verification rules set */
X509_STORE *
mg_x509_store_trusted (MgX509Store *store)
{
  ensure_trust (store);
  return store->trusted;
}

/* mg_x509_store_intermediates - (transfer none): certificates of ca/ and certs/ (of an indexed store: those of certs/
 * that can issue), and of private/: where chains find intermediates */
STACK_OF (X509) * mg_x509_store_intermediates (MgX509Store *store)
{
  ensure_trust (store);
  return store->untrusted;
}

/**
 * mg_x509_cert_harvested - whether @cert was read from harvested/ (kept from a verified signature), not certs/
 */
gboolean
mg_x509_cert_harvested (const MgX509Cert *cert)
{
  return cert != NULL && cert->path != NULL && g_str_has_prefix (cert->path, "harvested/");
}

/* harvest_write - @x as PEM into @dir/NAME, atomically: a 0600 temporary file in @dir (a dot name, which no reader
 * of the store lists), fsync, rename, then fsync of @dir */
static gboolean
harvest_write (const char *dir, const char *name, X509 *x, GError **error)
{
  g_autoptr (BIO) bio = BIO_new (BIO_s_mem ());
  g_autofree char *tmp = g_build_filename (dir, ".harvest-XXXXXX", NULL);
  g_autofree char *path = g_build_filename (dir, name, NULL);
  char *pem = NULL;
  long len;
  int fd, dfd, saved = 0;
  gsize done = 0;

  if (bio == NULL || PEM_write_bio_X509 (bio, x) != 1 || (len = BIO_get_mem_data (bio, &pem)) <= 0) {
    ERR_clear_error ();
    g_set_error (error, MG_KEYS_ERROR, MG_KEYS_ERROR_CRYPTO, _ ("%s: the certificate cannot be written"), path);
    return FALSE;
  }
  fd = g_mkstemp_full (tmp, O_WRONLY | O_CLOEXEC, 0600);
  if (fd < 0) {
    saved = errno;
    g_set_error (error, MG_KEYS_ERROR, MG_KEYS_ERROR_STORE, _ ("%s cannot be written: %s"), dir, g_strerror (saved));
    return FALSE;
  }
  while (done < (gsize) len) {
    ssize_t n = write (fd, pem + done, (gsize) len - done);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      saved = n < 0 ? errno : EIO;
      break;
    }
    done += (gsize) n;
  }
  if (saved == 0 && fsync (fd) != 0)
    saved = errno;
  if (close (fd) != 0 && saved == 0)
    saved = errno;
  if (saved == 0 && rename (tmp, path) != 0)
    saved = errno;
  if (saved != 0) {
    g_unlink (tmp);
    g_set_error (error, MG_KEYS_ERROR, MG_KEYS_ERROR_STORE, _ ("%s cannot be written: %s"), path, g_strerror (saved));
    return FALSE;
  }
  if ((dfd = open (dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) >= 0) {
    fsync (dfd);
    close (dfd);
  }
  return TRUE;
}

/**
 * mg_x509_store_harvest - keeps in harvested/ each certificate of @certs that names @address and that the judge
 * would encrypt to now (usage, validity, a chain to ca/, no CRL revoking it), so that replies to @address are
 * encrypted. Only for the certificates of a signature that verified as a pass for a message from @address: the
 * caller decides that. A CA certificate is never kept, nor anything but the certificate (DER in, PEM out: no key can
 * travel along). Each file is named by the certificate's SHA-256 fingerprint: one already there, or one that
 * certs/ or harvested/ already gives for @address, is not written again.
 * @certs: (element-type GBytes): DER certificates, the signer's first (MgSignature's @certs)
 * @stored: (element-type utf8) (nullable): receives the fingerprint of each certificate written now
 *
 * Returns: %FALSE with a transient %MG_KEYS_ERROR_STORE naming the path when harvested/ cannot be made or written
 * (what was written before stays), or %MG_KEYS_ERROR_CRYPTO when the first of @certs (the signer's) does not name
 * @address; %TRUE when every certificate was kept or not wanted.
 */
gboolean
mg_x509_store_harvest (MgX509Store *store, GPtrArray *certs, const char *address, GPtrArray *stored, GError **error)
{
  g_autofree char *want = mg_keys_address_key (address);
  g_autofree char *dir = g_build_filename (store->dir, "harvested", NULL);
  const MgX509Cert *known = NULL;

  if (want == NULL || certs == NULL || certs->len == 0)
    return TRUE;
  {
    gsize len;
    const unsigned char *p = g_bytes_get_data (g_ptr_array_index (certs, 0), &len);
    g_autoptr (X509) signer = d2i_X509 (NULL, &p, (long) len);
    g_autofree char *named = signer ? named_address (signer, want) : NULL;
    ERR_clear_error ();
    if (named == NULL) {
      g_set_error (error, MG_KEYS_ERROR, MG_KEYS_ERROR_CRYPTO, _ ("the signer's certificate does not name %s"),
                   address);
      return FALSE;
    }
  }
  known = mg_x509_store_lookup (store, address, NULL);
  for (guint i = 0; want != NULL && certs != NULL && i < certs->len; i++) {
    gsize len;
    const unsigned char *p = g_bytes_get_data (g_ptr_array_index (certs, i), &len);
    g_autoptr (X509) x = d2i_X509 (NULL, &p, (long) len);
    MgX509Cert *c;
    Verdict v = { 0 };
    g_autofree char *named = NULL, *name = NULL, *path = NULL;
    gboolean ok;

    ERR_clear_error ();
    if (x == NULL || X509_check_ca (x) != 0 || (named = named_address (x, want)) == NULL)
      continue;
    c = describe (x);
    judge (store, c, &v);
    name = g_strconcat (c->fingerprint, ".pem", NULL);
    path = g_build_filename (dir, name, NULL);
    ok = v.code == V_USABLE && !(known != NULL && strcmp (known->fingerprint, c->fingerprint) == 0) &&
         !g_file_test (path, G_FILE_TEST_EXISTS);
    g_free (v.arg);
    if (ok && g_mkdir (dir, 0700) != 0 && errno != EEXIST) {
      int saved = errno;
      g_set_error (error, MG_KEYS_ERROR, MG_KEYS_ERROR_STORE, _ ("%s cannot be made: %s"), dir, g_strerror (saved));
      cert_free (c);
      return FALSE;
    }
    if (ok && !harvest_write (dir, name, x, error)) {
      cert_free (c);
      return FALSE;
    }
    if (ok && stored != NULL)
      g_ptr_array_add (stored, g_strdup (c->fingerprint));
    cert_free (c);
  }
  ERR_clear_error ();
  return TRUE;
}

/* expiry_of - (transfer full): @c as an entry of store @kind from the file @path, with its addresses */
static MgExpiry *
expiry_of (const MgX509Cert *c, const char *kind, const char *path)
{
  MgExpiry *e = mg_expiry_new (kind, path, c->fingerprint, c->serial, c->not_after);
  g_autoptr (GPtrArray) addrs = addresses (c->cert);

  for (guint i = 0; i < addrs->len; i++)
    g_ptr_array_add (e->addresses, g_strdup (g_ptr_array_index (addrs, i)));
  return e;
}

/**
 * mg_x509_store_expiries - every certificate of certs/ and harvested/ that names a mail address, and the
 * certificate of every key the gateway holds in private/, each with its end (expired ones too, whatever else the
 * judge says of them): for `mimegate keys --expiring`. Reads the whole store when @store was opened from its index.
 *
 * Returns: (transfer full) (element-type MgExpiry) (nullable): %NULL when the whole store cannot be read now
 */
GPtrArray *
mg_x509_store_expiries (MgX509Store *store)
{
  MgX509Store *whole = mg_x509_store_whole (store);
  GPtrArray *out;

  if (whole == NULL)
    return NULL;
  out = g_ptr_array_new_with_free_func ((GDestroyNotify) mg_expiry_free);
  for (guint i = 0; i < whole->entries->len; i++) {
    const Entry *e = g_ptr_array_index (whole->entries, i);
    g_autoptr (GPtrArray) addrs = addresses (e->cert->cert);
    if (addrs->len > 0 && e->cert->not_after > 0)
      g_ptr_array_add (out, expiry_of (e->cert, mg_x509_cert_harvested (e->cert) ? "harvested" : "certs", e->path));
  }
  for (guint i = 0; i < whole->private_keys->len; i++) {
    const MgX509Private *p = g_ptr_array_index (whole->private_keys, i);
    g_autofree char *base = g_path_get_basename (p->path);
    g_autofree char *rel = g_build_filename ("private", base, NULL);
    if (p->cert->not_after > 0)
      g_ptr_array_add (out, expiry_of (p->cert, "private", rel));
  }
  return out;
}
