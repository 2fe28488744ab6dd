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
 * Every certificate in certs/ is judged once, when the store is read, and indexed under the key of each of its
 * addresses (subjectAltName rfc822Name; the subject's emailAddress only when there is none; mg_keys_address_key: the
 * whole address without regard to case). A certificate serves an address
 * when its key can encrypt (keyEncipherment for RSA, keyAgreement for EC/X25519), its extended key usage is absent,
 * emailProtection or anyExtendedKeyUsage, it is within its validity period, it chains to the trusted collection
 * through intermediates from ca/ or certs/, and no CRL in crl/ revokes it (a missing CRL is not an error). Among
 * several, the one valid longest wins; equal dates fall back to the fingerprint. */
#include "config.h"

#include "x509.h"

#include <errno.h>
#include <string.h>
#include <time.h>

#include <glib/gi18n.h>
#include <glib/gstdio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>
#include <openssl/provider.h>
#include <openssl/x509v3.h>

#include "mg-ssl.h"

G_DEFINE_AUTOPTR_CLEANUP_FUNC (X509_STORE_CTX, X509_STORE_CTX_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (PKCS12, PKCS12_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (EVP_PKEY, EVP_PKEY_free)

/* Entry - a certificate from certs/ and the verdict on it; @reason is NULL when it can be used */
typedef struct {
  MgX509Cert *cert;
  char *reason;
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
  g_free (c);
}

static void
entry_free (Entry *e)
{
  cert_free (e->cert);
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

/* revoked_reason - "revoked by CRL …" with the CRL's issuer and the revocation date */
static char *
revoked_reason (MgX509Store *store, X509 *x)
{
  for (int i = 0; i < sk_X509_CRL_num (store->crls); i++) {
    X509_CRL *crl = sk_X509_CRL_value (store->crls, i);
    X509_REVOKED *rev = NULL;
    if (X509_CRL_get0_by_cert (crl, &rev, x) == 1 && rev != NULL) {
      g_autofree char *issuer = name_text (X509_CRL_get_issuer (crl));
      g_autofree char *when = mg_keys_format_time (asn1_unix (X509_REVOKED_get0_revocationDate (rev)));
      return g_strdup_printf (_ ("revoked by CRL of %s on %s"), issuer, when);
    }
  }
  return g_strdup (_ ("revoked by a CRL"));
}

/* chain_reason - NULL when @x chains to the trusted collection and is not revoked, else why */
static char *
chain_reason (MgX509Store *store, X509 *x)
{
  g_autoptr (X509_STORE_CTX) ctx = X509_STORE_CTX_new ();
  unsigned long flags = X509_V_FLAG_PARTIAL_CHAIN;
  int err;

  if (ctx == NULL || !X509_STORE_CTX_init (ctx, store->trusted, x, store->untrusted))
    return g_strdup (_ ("the chain cannot be checked (out of memory)"));
  if (sk_X509_CRL_num (store->crls) > 0)
    flags |= X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL;
  X509_STORE_CTX_set_flags (ctx, flags);
  X509_STORE_CTX_set_verify_cb (ctx, verify_cb);
  if (X509_verify_cert (ctx) == 1)
    return NULL;
  err = X509_STORE_CTX_get_error (ctx);
  ERR_clear_error ();
  switch (err) {
  case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
  case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
  case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
  case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
  case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    return g_strdup (_ ("issuer not in the trusted collection"));
  case X509_V_ERR_CERT_REVOKED:
    return revoked_reason (store, X509_STORE_CTX_get_current_cert (ctx));
  default:
    return g_strdup_printf (_ ("the chain does not verify: %s"), X509_verify_cert_error_string (err));
  }
}

/* judge - NULL when @x can be used to encrypt S/MIME, else why (checked in the order an admin would fix them) */
static char *
judge (MgX509Store *store, const MgX509Cert *c)
{
  X509 *x = c->cert;
  EVP_PKEY *pk = X509_get0_pubkey (x);
  uint32_t flags = X509_get_extension_flags (x);
  int type = pk ? EVP_PKEY_get_base_id (pk) : EVP_PKEY_NONE;
  gboolean rsa = type == EVP_PKEY_RSA;
  gboolean agree = type == EVP_PKEY_EC || type == EVP_PKEY_X25519 || type == EVP_PKEY_X448 || type == EVP_PKEY_DH;
  gint64 now = g_get_real_time () / G_USEC_PER_SEC;

  if (!rsa && !agree)
    return g_strdup_printf (_ ("cannot encrypt: a %s key only signs"), pk ? EVP_PKEY_get0_type_name (pk) : "?");
  if ((flags & EXFLAG_KUSAGE) && !(X509_get_key_usage (x) & (rsa ? KU_KEY_ENCIPHERMENT : KU_KEY_AGREEMENT)))
    return g_strdup (rsa ? _ ("cannot encrypt: key usage lacks keyEncipherment")
                         : _ ("cannot encrypt: key usage lacks keyAgreement"));
  if ((flags & EXFLAG_XKUSAGE) && !(X509_get_extended_key_usage (x) & (XKU_SMIME | XKU_ANYEKU)))
    return g_strdup (_ ("no emailProtection usage"));
  if (c->not_after != 0 && c->not_after < now) {
    g_autofree char *when = mg_keys_format_time (c->not_after);
    return g_strdup_printf (_ ("expired on %s"), when);
  }
  if (c->not_before > now) {
    g_autofree char *when = mg_keys_format_time (c->not_before);
    return g_strdup_printf (_ ("not valid before %s"), when);
  }
  return chain_reason (store, x);
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
certificates_for (MgX509Store *store, GPtrArray *held, EVP_PKEY *key)
{
  GPtrArray *out = g_ptr_array_new ();
  g_autoptr (GPtrArray) all = g_ptr_array_new ();

  for (guint f = 0; f < held->len; f++) {
    const Held *h = g_ptr_array_index (held, f);
    for (int i = 0; i < sk_X509_num (h->certs); i++)
      g_ptr_array_add (all, sk_X509_value (h->certs, i));
  }
  for (guint i = 0; i < store->entries->len; i++)
    g_ptr_array_add (all, ((Entry *) g_ptr_array_index (store->entries, i))->cert->cert);
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

/* load_private - every file of private/: keys paired with their certificates, each key once per certificate */
static gboolean
load_private (MgX509Store *store, const char *passphrase, GError **error)
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
      g_autoptr (GPtrArray) certs = certificates_for (store, held, key);
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
  for (guint i = 0; i < store->private_keys->len; i++) {
    MgX509Private *p = g_ptr_array_index (store->private_keys, i);
    p->chain = signer_chain (store, p->cert->cert);
  }
  ERR_clear_error ();
  return TRUE;
}

/* index_entry - judges one certificate from certs/ and files it under its addresses */
static void
index_entry (MgX509Store *store, X509 *x)
{
  Entry *e = g_new0 (Entry, 1);
  g_autoptr (GPtrArray) addrs = addresses (x);

  e->cert = describe (x);
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

/* read_sub - every certificate (and CRL) of DIR/SUB into @certs; unreadable files become warnings */
static gboolean
read_sub (MgX509Store *store, const char *sub, STACK_OF (X509) * certs, STACK_OF (X509_CRL) * crls, GError **error)
{
  g_autoptr (GPtrArray) files = list_dir (store->dir, sub, error);

  if (files == NULL)
    return FALSE;
  for (guint i = 0; i < files->len; i++) {
    g_autoptr (GError) local = NULL;
    if (!read_objects (g_ptr_array_index (files, i), certs, crls, &local))
      g_ptr_array_add (store->warnings, g_strdup (local->message));
  }
  return TRUE;
}

/**
 * mg_x509_store_open - reads the store directory @dir.
 * @passphrase: (nullable): for encrypted keys and PKCS #12 files in private/
 *
 * Returns: (transfer full): the store, or %NULL with a transient %MG_KEYS_ERROR_STORE naming the path when the store
 * cannot be read at all, or a private/ file is unsafe or cannot be opened.
 */
MgX509Store *
mg_x509_store_open (const char *dir, const char *passphrase, GError **error)
{
  g_autoptr (MgX509Store) store = NULL;
  g_autoptr (MgX509Stack) ca = sk_X509_new_null ();
  g_autoptr (MgX509Stack) certs = sk_X509_new_null ();
  g_autoptr (MgX509Stack) crl_certs = sk_X509_new_null (); /* certificates misfiled in crl/: ignored */

  if (!g_file_test (dir, G_FILE_TEST_IS_DIR)) {
    g_set_error (error, MG_KEYS_ERROR, MG_KEYS_ERROR_STORE, _ ("X.509 store %s does not exist"), dir);
    return NULL;
  }
  if (g_access (dir, R_OK | X_OK) != 0) {
    g_set_error (error, MG_KEYS_ERROR, MG_KEYS_ERROR_STORE, _ ("X.509 store %s cannot be read"), dir);
    return NULL;
  }
  store = g_new0 (MgX509Store, 1);
  store->dir = g_strdup (dir);
  store->trusted = X509_STORE_new ();
  store->untrusted = sk_X509_new_null ();
  store->crls = sk_X509_CRL_new_null ();
  store->entries = g_ptr_array_new_with_free_func ((GDestroyNotify) entry_free);
  store->by_address = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, (GDestroyNotify) g_ptr_array_unref);
  store->private_keys = g_ptr_array_new_with_free_func ((GDestroyNotify) private_free);
  store->warnings = g_ptr_array_new_with_free_func (g_free);

  if (!read_sub (store, "ca", ca, NULL, error) || !read_sub (store, "certs", certs, NULL, error) ||
      !read_sub (store, "crl", crl_certs, store->crls, error))
    return NULL;
  for (int i = 0; i < sk_X509_num (ca); i++) {
    X509_STORE_add_cert (store->trusted, sk_X509_value (ca, i));
    X509_up_ref (sk_X509_value (ca, i));
    sk_X509_push (store->untrusted, sk_X509_value (ca, i));
  }
  for (int i = 0; i < sk_X509_num (certs); i++) {
    X509_up_ref (sk_X509_value (certs, i));
    sk_X509_push (store->untrusted, sk_X509_value (certs, i));
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
  for (int i = 0; i < sk_X509_num (certs); i++)
    index_entry (store, sk_X509_value (certs, i));
  for (guint i = 0; i < store->entries->len; i++) {
    Entry *e = g_ptr_array_index (store->entries, i);
    e->reason = judge (store, e->cert);
  }

  if (!load_private (store, passphrase, error))
    return NULL;
  return g_steal_pointer (&store);
}

const char *
mg_x509_store_dir (MgX509Store *store)
{
  return store->dir;
}

/**
 * mg_x509_store_lookup - the certificate to encrypt to @address.
 * @refused: (element-type MgRefusal): receives every other candidate with its reason
 *
 * Returns: (transfer none) (nullable): the chosen certificate, owned by the store
 */
const MgX509Cert *
mg_x509_store_lookup (MgX509Store *store, const char *address, GPtrArray *refused)
{
  g_autofree char *key = mg_keys_address_key (address);
  GPtrArray *list = key ? g_hash_table_lookup (store->by_address, key) : NULL;
  const Entry *best = NULL;

  for (guint i = 0; list != NULL && i < list->len; i++) {
    const Entry *e = g_ptr_array_index (list, i);
    if (e->reason == NULL &&
        (best == NULL || e->cert->not_after > best->cert->not_after ||
         (e->cert->not_after == best->cert->not_after && strcmp (e->cert->fingerprint, best->cert->fingerprint) > 0)))
      best = e;
  }
  for (guint i = 0; list != NULL && i < list->len; i++) {
    const Entry *e = g_ptr_array_index (list, i);
    if (e == best)
      continue;
    g_ptr_array_add (
      refused, mg_keys_refusal_new (e->cert->fingerprint,
                                    e->reason ? e->reason : _ ("usable, but another certificate is valid longer")));
  }
  return best ? best->cert : NULL;
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

  for (guint i = 0; want != NULL && i < store->private_keys->len; i++) {
    const MgX509Private *p = g_ptr_array_index (store->private_keys, i);
    X509 *x = p->cert->cert;
    uint32_t flags = X509_get_extension_flags (x);
    g_autofree char *named = named_address (x, want);
    g_autofree char *chain = NULL;
    if (named == NULL || (p->cert->not_after != 0 && p->cert->not_after < now) || p->cert->not_before > now ||
        ((flags & EXFLAG_KUSAGE) && !(X509_get_key_usage (x) & KU_DIGITAL_SIGNATURE)) ||
        ((flags & EXFLAG_XKUSAGE) && !(X509_get_extended_key_usage (x) & (XKU_SMIME | XKU_ANYEKU))))
      continue;
    chain = chain_reason (store, x);
    if (chain == NULL && (best == NULL || p->cert->not_after > best->cert->not_after))
      best = p;
  }
  return best;
}

/* mg_x509_store_private_keys - (transfer none) (element-type MgX509Private): the keys the gateway holds */
GPtrArray *
mg_x509_store_private_keys (MgX509Store *store)
{
  return store->private_keys;
}

/* mg_x509_store_warnings - (transfer none) (element-type utf8): files that were skipped, and why */
GPtrArray *
mg_x509_store_warnings (MgX509Store *store)
{
  return store->warnings;
}

void
mg_x509_store_free (MgX509Store *store)
{
  if (store == NULL)
    return;
  g_free (store->dir);
  X509_STORE_free (store->trusted);
  sk_X509_pop_free (store->untrusted, X509_free);
  sk_X509_CRL_pop_free (store->crls, X509_CRL_free);
  g_clear_pointer (&store->by_address, g_hash_table_unref);
  g_clear_pointer (&store->entries, g_ptr_array_unref);
  g_clear_pointer (&store->private_keys, g_ptr_array_unref);
  g_clear_pointer (&store->warnings, g_ptr_array_unref);
  g_free (store);
}

/* mg_x509_store_trusted - (transfer none): the trusted collection, with the store's verification rules set */
X509_STORE *
mg_x509_store_trusted (MgX509Store *store)
{
  return store->trusted;
}

/* mg_x509_store_intermediates - (transfer none): certificates of ca/ and certs/, where chains find intermediates */
STACK_OF (X509) * mg_x509_store_intermediates (MgX509Store *store)
{
  return store->untrusted;
}
