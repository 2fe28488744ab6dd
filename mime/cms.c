/* cms.c - what an S/MIME CMS object tells without keys (RFC 5652 CMS, RFC 5083 authEnveloped-data, RFC 3274
 * compressed-data, RFC 8551 S/MIME 4.0).
 *
 * OpenSSL parses the object (BER or DER, also PEM and bare base64 as mail clients sometimes send it); its accessors
 * give the recipients and signers. OpenSSL has no accessor for the content-encryption or compression algorithm, so
 * those are read from the object's DER re-encoding with a small bounded walker. */
#include "config.h"

#include "cms.h"

#include <string.h>

#include <openssl/asn1.h>
#include <openssl/bn.h>
#include <openssl/pem.h> /* before cms.h, which declares PEM_read_bio_CMS only after it */
#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/x509v3.h>

#include "detect.h"
#include "keys.h"
#include "mg-ssl.h"

#include <gio/gio.h>
#include <glib/gi18n.h>

/* oid_name - OpenSSL's short name of an OID, or its dotted form */
static char *
oid_name (const ASN1_OBJECT *obj)
{
  char buf[128];
  int nid = OBJ_obj2nid (obj);

  if (nid != NID_undef)
    return g_strdup (OBJ_nid2sn (nid));
  if (OBJ_obj2txt (buf, sizeof buf, obj, 1) <= 0)
    return g_strdup ("unknown");
  if (strcmp (buf, "1.2.840.113549.1.9.16.3.18") == 0) /* RFC 8103 id-alg-AEADChaCha20Poly1305 */
    return g_strdup ("ChaCha20-Poly1305");
  return g_strdup (buf);
}

static char *
algor_name (const X509_ALGOR *alg)
{
  const ASN1_OBJECT *obj = NULL;

  if (alg == NULL)
    return NULL;
  X509_ALGOR_get0 (&obj, NULL, NULL, alg);
  return obj ? oid_name (obj) : NULL;
}

/* name_text - an X.509 name in RFC 2253 form, with any control character replaced */
static char *
name_text (X509_NAME *name)
{
  g_autoptr (BIO) bio = BIO_new (BIO_s_mem ());
  char *data = NULL;
  long n;

  if (bio == NULL || name == NULL || X509_NAME_print_ex (bio, name, 0, XN_FLAG_RFC2253) < 0)
    return g_strdup ("?");
  n = BIO_get_mem_data (bio, &data);
  return g_utf8_make_valid (data, n);
}

static char *
serial_text (const ASN1_INTEGER *serial)
{
  BIGNUM *bn = ASN1_INTEGER_to_BN (serial, NULL);
  char *hex = bn ? BN_bn2hex (bn) : NULL;
  char *out = g_strdup_printf ("0x%s", hex ? hex : "?");

  OPENSSL_free (hex);
  BN_free (bn);
  return out;
}

static char *
ski_text (const ASN1_OCTET_STRING *ski)
{
  GString *s = g_string_new ("ski=");

  for (int i = 0; i < ASN1_STRING_length (ski); i++)
    g_string_append_printf (s, "%02X", ASN1_STRING_get0_data (ski)[i]);
  return g_string_free (s, FALSE);
}

/* id_text - "issuer=…, serial=0x…" or "ski=…" */
static char *
id_text (ASN1_OCTET_STRING *keyid, X509_NAME *issuer, ASN1_INTEGER *serial)
{
  if (issuer != NULL && serial != NULL) {
    g_autofree char *iss = name_text (issuer);
    g_autofree char *ser = serial_text (serial);
    return g_strdup_printf ("issuer=%s, serial=%s", iss, ser);
  }
  if (keyid != NULL)
    return ski_text (keyid);
  return g_strdup ("unknown");
}

static void
read_recipients (CMS_ContentInfo *cms, MgCryptoInfo *info)
{
  STACK_OF (CMS_RecipientInfo) *ris = CMS_get0_RecipientInfos (cms);

  for (int i = 0; ris != NULL && i < sk_CMS_RecipientInfo_num (ris); i++) {
    CMS_RecipientInfo *ri = sk_CMS_RecipientInfo_value (ris, i);
    ASN1_OCTET_STRING *keyid = NULL;
    X509_NAME *issuer = NULL;
    ASN1_INTEGER *serial = NULL;
    X509_ALGOR *alg = NULL;

    switch (CMS_RecipientInfo_type (ri)) {
    case CMS_RECIPINFO_TRANS: {
      g_autofree char *id = NULL, *algo = NULL;
      if (CMS_RecipientInfo_ktri_get0_signer_id (ri, &keyid, &issuer, &serial) <= 0)
        break;
      CMS_RecipientInfo_ktri_get0_algs (ri, NULL, NULL, &alg);
      id = id_text (keyid, issuer, serial);
      algo = algor_name (alg);
      g_ptr_array_add (info->recipients, mg_crypto_id_new (id, algo));
      break;
    }
    case CMS_RECIPINFO_AGREE: {
      STACK_OF (CMS_RecipientEncryptedKey) *reks = CMS_RecipientInfo_kari_get0_reks (ri);
      g_autofree char *algo = NULL;
      if (CMS_RecipientInfo_kari_get0_alg (ri, &alg, NULL) > 0)
        algo = algor_name (alg);
      for (int k = 0; reks != NULL && k < sk_CMS_RecipientEncryptedKey_num (reks); k++) {
        g_autofree char *id = NULL;
        keyid = NULL;
        issuer = NULL;
        serial = NULL;
        if (CMS_RecipientEncryptedKey_get0_id (sk_CMS_RecipientEncryptedKey_value (reks, k), &keyid, NULL, NULL,
                                               &issuer, &serial) <= 0)
          continue;
        id = id_text (keyid, issuer, serial);
        g_ptr_array_add (info->recipients, mg_crypto_id_new (id, algo));
      }
      break;
    }
    case CMS_RECIPINFO_KEK: {
      g_autofree char *hex = NULL, *id = NULL, *algo = NULL;
      ASN1_OCTET_STRING *kid = NULL;
      if (CMS_RecipientInfo_kekri_get0_id (ri, &alg, &kid, NULL, NULL, NULL) <= 0 || kid == NULL)
        break;
      hex = ski_text (kid);
      id = g_strdup_printf ("kek=%s", hex + 4);
      algo = algor_name (alg);
      g_ptr_array_add (info->recipients, mg_crypto_id_new (id, algo));
      break;
    }
    case CMS_RECIPINFO_PASS:
      info->passphrases++;
      break;
    default:
      g_ptr_array_add (info->recipients, mg_crypto_id_new ("unknown", NULL));
      break;
    }
  }
}

/* signer_name - the signer certificate's first e-mail address, else its subject, when the object carries it */
static char *
signer_name (CMS_SignerInfo *si, STACK_OF (X509) * certs)
{
  for (int i = 0; certs != NULL && i < sk_X509_num (certs); i++) {
    X509 *cert = sk_X509_value (certs, i);
    STACK_OF (OPENSSL_STRING) * emails;
    char *name = NULL;

    if (CMS_SignerInfo_cert_cmp (si, cert) != 0)
      continue;
    emails = X509_get1_email (cert);
    if (emails != NULL && sk_OPENSSL_STRING_num (emails) > 0)
      name = g_utf8_make_valid (sk_OPENSSL_STRING_value (emails, 0), -1);
    X509_email_free (emails);
    return name ? name : name_text (X509_get_subject_name (cert));
  }
  return NULL;
}

static void
read_signers (CMS_ContentInfo *cms, MgCryptoInfo *info)
{
  STACK_OF (CMS_SignerInfo) *sis = CMS_get0_SignerInfos (cms);
  g_autoptr (MgX509Stack) certs = CMS_get1_certs (cms);
  const ASN1_OBJECT *ectype = CMS_get0_eContentType (cms);

  info->content = CMS_is_detached (cms) ? g_strdup ("detached") : (ectype ? oid_name (ectype) : NULL);
  for (int i = 0; sis != NULL && i < sk_CMS_SignerInfo_num (sis); i++) {
    CMS_SignerInfo *si = sk_CMS_SignerInfo_value (sis, i);
    ASN1_OCTET_STRING *keyid = NULL;
    X509_NAME *issuer = NULL;
    ASN1_INTEGER *serial = NULL;
    X509_ALGOR *dig = NULL, *sig = NULL;
    g_autofree char *id = NULL, *algo = NULL;
    MgCryptoId *cid;

    if (CMS_SignerInfo_get0_signer_id (si, &keyid, &issuer, &serial) <= 0)
      continue;
    CMS_SignerInfo_get0_algs (si, NULL, NULL, &dig, &sig);
    id = id_text (keyid, issuer, serial);
    algo = algor_name (sig);
    cid = mg_crypto_id_new (id, algo);
    cid->digest = algor_name (dig);
    cid->name = signer_name (si, certs);
    g_ptr_array_add (info->signers, cid);
  }
}

/* Der - one DER element: its content and where the element started. */
typedef struct {
  const guint8 *tlv;
  const guint8 *content;
  long len;
  int tag;
  int cls;
} Der;

/* der_read - the element at *@p (definite lengths only: the input is OpenSSL's own DER re-encoding) */
static gboolean
der_read (const guint8 **p, const guint8 *end, Der *d)
{
  const unsigned char *q = *p;
  int ret;

  if (*p >= end)
    return FALSE;
  d->tlv = *p;
  ret = ASN1_get_object (&q, &d->len, &d->tag, &d->cls, end - *p);
  if ((ret & 0x80) || (ret & 1) || d->len > end - q)
    return FALSE;
  d->content = q;
  *p = q + d->len;
  return TRUE;
}

/* der_oid - the name of the OID element @d */
static char *
der_oid (const Der *d)
{
  const unsigned char *q = d->tlv;
  g_autoptr (ASN1_OBJECT) obj = NULL;

  if (d->tag != V_ASN1_OBJECT || d->cls != V_ASN1_UNIVERSAL)
    return NULL;
  obj = d2i_ASN1_OBJECT (NULL, &q, (long) (d->content - d->tlv) + d->len);
  return obj ? oid_name (obj) : NULL;
}

/* inner_algorithm - the content-encryption (enveloped) or compression (compressed) algorithm, from DER.
 *
 * ContentInfo ::= SEQUENCE { contentType, [0] EXPLICIT content }. EnvelopedData and AuthEnvelopedData ::= SEQUENCE {
 * version, [0] originatorInfo OPTIONAL, recipientInfos SET, EncryptedContentInfo SEQUENCE { contentType,
 * AlgorithmIdentifier, ... } ...}. CompressedData ::= SEQUENCE { version, AlgorithmIdentifier, ... }. */
static char *
inner_algorithm (CMS_ContentInfo *cms, gboolean compressed)
{
  unsigned char *der = NULL;
  int der_len = i2d_CMS_ContentInfo (cms, &der);
  const guint8 *p, *end;
  Der d;
  char *name = NULL;

  if (der_len <= 0)
    return NULL;
  p = der;
  end = der + der_len;
  /* ContentInfo → [0] → the typed SEQUENCE */
  if (!der_read (&p, end, &d) || d.tag != V_ASN1_SEQUENCE)
    goto out;
  p = d.content;
  end = d.content + d.len;
  if (!der_read (&p, end, &d) || !der_read (&p, end, &d) || d.cls != V_ASN1_CONTEXT_SPECIFIC || d.tag != 0)
    goto out;
  p = d.content;
  end = d.content + d.len;
  if (!der_read (&p, end, &d) || d.tag != V_ASN1_SEQUENCE)
    goto out;
  p = d.content;
  end = d.content + d.len;
  if (!der_read (&p, end, &d) || d.tag != V_ASN1_INTEGER || !der_read (&p, end, &d))
    goto out;
  if (!compressed) {
    if (d.cls == V_ASN1_CONTEXT_SPECIFIC && d.tag == 0 && !der_read (&p, end, &d))
      goto out; /* originatorInfo */
    if (d.tag != V_ASN1_SET || !der_read (&p, end, &d) || d.tag != V_ASN1_SEQUENCE)
      goto out;
    p = d.content;
    end = d.content + d.len;
    if (!der_read (&p, end, &d) || !der_read (&p, end, &d))
      goto out; /* contentType, then AlgorithmIdentifier */
  }
  if (d.tag != V_ASN1_SEQUENCE)
    goto out;
  p = d.content;
  end = d.content + d.len;
  if (der_read (&p, end, &d))
    name = der_oid (&d);
out:
  OPENSSL_free (der);
  return name;
}

/* looks_base64 - text made of base64 lines (a part sent without its transfer encoding declared) */
static gboolean
looks_base64 (const guint8 *data, gsize len)
{
  gsize n = MIN (len, 256);

  if (len < 16)
    return FALSE;
  for (gsize i = 0; i < n; i++)
    if (!g_ascii_isalnum (data[i]) && data[i] != '+' && data[i] != '/' && data[i] != '=' && data[i] != '\r' &&
        data[i] != '\n')
      return FALSE;
  return TRUE;
}

/* load - parses DER/BER, PEM ("BEGIN PKCS7"/"BEGIN CMS") or bare base64 */
static CMS_ContentInfo *
load (const guint8 *data, gsize len)
{
  CMS_ContentInfo *cms = NULL;

  if (len > G_MAXINT)
    return NULL;
  if (len > 11 && memcmp (data, "-----BEGIN ", 11) == 0) {
    g_autoptr (BIO) bio = BIO_new_mem_buf (data, (int) len);
    cms = bio ? PEM_read_bio_CMS (bio, NULL, NULL, NULL) : NULL;
  } else if (looks_base64 (data, len)) {
    g_autofree guchar *der = g_malloc (len / 4 * 3 + 4);
    gint state = 0;
    guint save = 0;
    gsize der_len = g_base64_decode_step ((const char *) data, len, der, &state, &save);
    const unsigned char *p = der;
    cms = d2i_CMS_ContentInfo (NULL, &p, (long) der_len);
  } else {
    const unsigned char *p = data;
    cms = d2i_CMS_ContentInfo (NULL, &p, (long) len);
  }
  return cms;
}

/**
 * mg_cms_inspect - parses a CMS object and adds its recipients, signers and algorithms to @info.
 * @data: DER/BER, PEM or base64 CMS
 * @info: (inout)
 *
 * Returns: the CMS content type, or %MG_CMS_UNKNOWN with @error set when @data is not a CMS object OpenSSL can read.
 */
MgCmsType
mg_cms_inspect (const guint8 *data, gsize len, MgCryptoInfo *info, GError **error)
{
  g_autoptr (CMS_ContentInfo) cms = load (data, len);
  int nid;

  if (cms == NULL) {
    g_autoptr (GError) ssl = NULL;
    mg_keys_set_openssl_error (&ssl, MG_KEYS_ERROR_CRYPTO, "not a CMS object");
    g_set_error_literal (error, MG_DETECT_ERROR, MG_DETECT_ERROR_MALFORMED, ssl->message);
    return MG_CMS_UNKNOWN;
  }
  ERR_clear_error ();
  nid = OBJ_obj2nid (CMS_get0_type (cms));
  switch (nid) {
  case NID_pkcs7_enveloped:
  case NID_id_smime_ct_authEnvelopedData:
    read_recipients (cms, info);
    info->cipher = inner_algorithm (cms, FALSE);
    if (nid == NID_id_smime_ct_authEnvelopedData) {
      info->integrity = g_strdup ("aead");
      return MG_CMS_AUTH_ENVELOPED;
    }
    return MG_CMS_ENVELOPED;
  case NID_pkcs7_signed:
    read_signers (cms, info);
    return info->signers->len > 0 ? MG_CMS_SIGNED : MG_CMS_CERTS_ONLY;
  case NID_id_smime_ct_compressedData:
    info->compression = inner_algorithm (cms, TRUE);
    return MG_CMS_COMPRESSED;
  default:
    info->content = oid_name (CMS_get0_type (cms));
    return MG_CMS_OTHER;
  }
}

/* has_oid_prefix - DER of 1.2.840.113549.1.7 (PKCS #7 types) or 1.2.840.113549.1.9.16.1 (S/MIME content types) */
static gboolean
has_cms_oid (const guint8 *data, gsize len)
{
  static const guint8 pkcs7[] = { 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07 };
  static const guint8 smime[] = { 0x06, 0x0b, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x10, 0x01 };
  gsize n = MIN (len, 16);

  for (gsize i = 0; i + sizeof pkcs7 <= n + sizeof pkcs7 && i + sizeof pkcs7 <= len && i < n; i++)
    if (memcmp (data + i, pkcs7, sizeof pkcs7) == 0 ||
        (i + sizeof smime <= len && memcmp (data + i, smime, sizeof smime) == 0))
      return TRUE;
  return FALSE;
}

/**
 * mg_cms_sniff - whether @data starts like a DER/BER CMS ContentInfo (a SEQUENCE whose first element is a PKCS #7 or
 * S/MIME content-type OID), or PEM-armored CMS.
 */
gboolean
mg_cms_sniff (const guint8 *data, gsize len)
{
  if (len > 16 && (memcmp (data, "-----BEGIN PKCS7-----", MIN (len, 21)) == 0 ||
                   memcmp (data, "-----BEGIN CMS-----", MIN (len, 19)) == 0))
    return TRUE;
  return len > 12 && data[0] == 0x30 && has_cms_oid (data, len);
}

/* bio_bytes - what a memory BIO holds, copied; the BIO's own copy is wiped (it may be clear text) */
static GBytes *
bio_bytes (BIO *bio)
{
  char *data = NULL;
  long n = BIO_get_mem_data (bio, &data);
  GBytes *out = g_bytes_new (data, n > 0 ? (gsize) n : 0);

  if (data != NULL && n > 0)
    OPENSSL_cleanse (data, (size_t) n);
  return out;
}

/**
 * mg_cms_encrypt - an enveloped-data object (DER) of @plain for every certificate in @certs.
 * @certs: (element-type X509): the recipients' certificates
 * @gcm: authEnveloped-data with AES-256-GCM (RFC 5083) instead of enveloped-data with AES-256-CBC
 *
 * Returns: (transfer full): the DER, or %NULL with %MG_KEYS_ERROR_CRYPTO set.
 */
GBytes *
mg_cms_encrypt (GBytes *plain, GPtrArray *certs, gboolean gcm, GError **error)
{
  g_autoptr (MgX509Stack) stack = sk_X509_new_null ();
  g_autoptr (BIO) in = BIO_new_mem_buf (g_bytes_get_data (plain, NULL), (int) g_bytes_get_size (plain));
  g_autoptr (BIO) out = BIO_new (BIO_s_mem ());
  g_autoptr (CMS_ContentInfo) cms = NULL;

  for (guint i = 0; i < certs->len; i++) {
    X509 *x = g_ptr_array_index (certs, i);
    X509_up_ref (x);
    sk_X509_push (stack, x);
  }
  if (g_bytes_get_size (plain) > G_MAXINT || in == NULL || out == NULL ||
      (cms = CMS_encrypt (stack, in, gcm ? EVP_aes_256_gcm () : EVP_aes_256_cbc (), CMS_BINARY)) == NULL ||
      i2d_CMS_bio (out, cms) <= 0) {
    mg_keys_set_openssl_error (error, MG_KEYS_ERROR_CRYPTO, "cannot encrypt (CMS)");
    return NULL;
  }
  return bio_bytes (out);
}

/**
 * mg_cms_sign - a detached CMS signature (RFC 8551 section 3.5, application/pkcs7-signature) over @content, which is
 * already canonical (CRLF), by @signer with SHA-256. The signer's certificate and its intermediates up to ca/ (the
 * chain the store built for it, never the root) go with it, so that a verifier who trusts only the root can build the
 * path (RFC 8550 section 2.3).
 *
 * Returns: (transfer full): the DER, or %NULL with %MG_KEYS_ERROR_CRYPTO.
 */
GBytes *
mg_cms_sign (GBytes *content, const MgX509Private *signer, GError **error)
{
  g_autoptr (BIO) in = BIO_new_mem_buf (g_bytes_get_data (content, NULL), (int) g_bytes_get_size (content));
  g_autoptr (BIO) out = BIO_new (BIO_s_mem ());
  g_autoptr (CMS_ContentInfo) cms = NULL;
  unsigned int flags = CMS_DETACHED | CMS_BINARY | CMS_PARTIAL;
  gboolean ok;

  ok = g_bytes_get_size (content) <= G_MAXINT && in != NULL && out != NULL &&
       (cms = CMS_sign (NULL, NULL, NULL, NULL, flags)) != NULL &&
       CMS_add1_signer (cms, signer->cert->cert, signer->key, EVP_sha256 (), flags) != NULL;
  for (int i = 0; ok && signer->chain != NULL && i < sk_X509_num (signer->chain); i++)
    ok = CMS_add1_cert (cms, sk_X509_value (signer->chain, i)) == 1;
  if (!ok || CMS_final (cms, in, NULL, flags) != 1 || i2d_CMS_bio (out, cms) <= 0) {
    mg_keys_set_openssl_error (error, MG_KEYS_ERROR_CRYPTO, "cannot sign (CMS)");
    return NULL;
  }
  return bio_bytes (out);
}

/**
 * mg_cms_uncompress - the content of a compressed-data object (RFC 3274; ZLIB, the only algorithm it defines),
 * inflated here with zlib through GIO (Debian's OpenSSL has no zlib) and never past @max bytes.
 *
 * Returns: (transfer full): the content, or %NULL with %MG_KEYS_ERROR_LIMIT over @max, %MG_KEYS_ERROR_CRYPTO when
 * the object or its zlib stream is broken.
 */
GBytes *
mg_cms_uncompress (const guint8 *data, gsize len, gsize max, GError **error)
{
  g_autoptr (CMS_ContentInfo) cms = load (data, len);
  ASN1_OCTET_STRING **content = cms ? CMS_get0_content (cms) : NULL;
  g_autoptr (GZlibDecompressor) z = g_zlib_decompressor_new (G_ZLIB_COMPRESSOR_FORMAT_ZLIB);
  g_autoptr (GByteArray) out = g_byte_array_new ();
  const guint8 *in;
  gsize in_len, pos = 0;
  GConverterResult r = G_CONVERTER_CONVERTED;
  guint8 buf[65536];

  if (cms == NULL || OBJ_obj2nid (CMS_get0_type (cms)) != NID_id_smime_ct_compressedData || content == NULL ||
      *content == NULL) {
    ERR_clear_error ();
    g_set_error_literal (error, MG_KEYS_ERROR, MG_KEYS_ERROR_CRYPTO, _ ("not a CMS compressed-data object"));
    return NULL;
  }
  in = ASN1_STRING_get0_data (*content);
  in_len = (gsize) ASN1_STRING_length (*content);
  while (r != G_CONVERTER_FINISHED) {
    gsize read = 0, written = 0;
    g_autoptr (GError) local = NULL;
    r = g_converter_convert (G_CONVERTER (z), in + pos, in_len - pos, buf, sizeof buf, G_CONVERTER_INPUT_AT_END, &read,
                             &written, &local);
    if (r == G_CONVERTER_ERROR) {
      g_set_error (error, MG_KEYS_ERROR, MG_KEYS_ERROR_CRYPTO, _ ("the compressed S/MIME content is broken: %s"),
                   local->message);
      return NULL;
    }
    pos += read;
    if (written > max - MIN (max, out->len)) {
      g_autofree char *bound = g_strdup_printf ("%" G_GSIZE_FORMAT, max);
      g_set_error (error, MG_KEYS_ERROR, MG_KEYS_ERROR_LIMIT,
                   _ ("refused: the decrypted content is larger than max-decompressed (%s bytes)"), bound);
      return NULL;
    }
    g_byte_array_append (out, buf, (guint) written);
    if (read == 0 && written == 0 && r != G_CONVERTER_FINISHED) {
      g_set_error_literal (error, MG_KEYS_ERROR, MG_KEYS_ERROR_CRYPTO,
                           _ ("the compressed S/MIME content is truncated"));
      return NULL;
    }
  }
  return g_bytes_new (out->data, out->len);
}

/**
 * mg_cms_decrypt - decrypts an enveloped or authEnveloped CMS object with one of the keys the gateway holds.
 * @private_keys: (element-type MgX509Private)
 * @used: (out) (optional): the serial of the certificate whose key decrypted it
 *
 * Returns: (transfer full): the clear text, or %NULL with %MG_KEYS_ERROR_NOT_HELD naming the recipients when no held
 * key fits, or %MG_KEYS_ERROR_CRYPTO when the object is broken.
 */
GBytes *
mg_cms_decrypt (const guint8 *data, gsize len, GPtrArray *private_keys, char **used, GError **error)
{
  g_autoptr (CMS_ContentInfo) cms = load (data, len);
  MgCryptoInfo info;
  g_autoptr (GString) to = g_string_new (NULL);

  if (cms == NULL) {
    mg_keys_set_openssl_error (error, MG_KEYS_ERROR_CRYPTO, "not a CMS object");
    return NULL;
  }
  for (guint i = 0; private_keys != NULL && i < private_keys->len; i++) {
    const MgX509Private *p = g_ptr_array_index (private_keys, i);
    g_autoptr (BIO) out = BIO_new (BIO_s_mem ());
    if (out != NULL && CMS_decrypt (cms, p->key, p->cert->cert, NULL, out, CMS_BINARY) == 1) {
      ERR_clear_error ();
      if (used != NULL)
        *used = g_strdup (p->cert->serial);
      return bio_bytes (out);
    }
    ERR_clear_error ();
  }
  mg_crypto_info_init (&info);
  read_recipients (cms, &info);
  for (guint i = 0; i < info.recipients->len; i++)
    g_string_append_printf (to, "%s%s", to->len ? "; " : "",
                            ((MgCryptoId *) g_ptr_array_index (info.recipients, i))->id);
  mg_crypto_info_clear (&info);
  g_set_error (error, MG_KEYS_ERROR, MG_KEYS_ERROR_NOT_HELD, _ ("encrypted to keys the gateway does not hold: %s"),
               to->len ? to->str : "?");
  return NULL;
}

/**
 * mg_cms_verify - checks an S/MIME signature (RFC 8551 section 3.5) against the store's trusted collection.
 * @content: (nullable): the canonical (CRLF) signed entity of a detached signature; %NULL for opaque signed-data
 * @signed_content: (out) (optional) (transfer full): opaque signed-data's content, whatever the verdict
 *
 * pass: the signature matches and its certificate chains to ca/ (and no CRL revokes it); fail: it does not match;
 * neutral: it matches but the certificate is outside the trusted collection (or there is no store); permerror:
 * the object cannot be read.
 *
 * Returns: (transfer full): the verdict, never %NULL.
 */
MgSignature *
mg_cms_verify (const guint8 *data, gsize len, GBytes *content, MgX509Store *store, GBytes **signed_content)
{
  g_autoptr (CMS_ContentInfo) cms = load (data, len);
  g_autoptr (BIO) dcont =
    content ? BIO_new_mem_buf (g_bytes_get_data (content, NULL), (int) g_bytes_get_size (content)) : NULL;
  g_autoptr (BIO) out = BIO_new (BIO_s_mem ());
  MgSignature *sig;
  unsigned long e;
  int flags = CMS_BINARY;

  if (cms == NULL || OBJ_obj2nid (CMS_get0_type (cms)) != NID_pkcs7_signed) {
    ERR_clear_error ();
    return mg_signature_new (MG_SIG_PERMERROR, "not an S/MIME signature");
  }
  if (signed_content != NULL && content == NULL) {
    ASN1_OCTET_STRING **pos = CMS_get0_content (cms);
    *signed_content = pos && *pos ? g_bytes_new (ASN1_STRING_get0_data (*pos), ASN1_STRING_length (*pos)) : NULL;
  }
  if (store == NULL)
    flags |= CMS_NO_SIGNER_CERT_VERIFY;
  if (CMS_verify (cms, store ? mg_x509_store_intermediates (store) : NULL, store ? mg_x509_store_trusted (store) : NULL,
                  dcont, out, flags) == 1) {
    sig = store ? mg_signature_new (MG_SIG_PASS, NULL)
                : mg_signature_new (MG_SIG_NEUTRAL, "no X.509 store to check the signer against");
  } else {
    e = ERR_peek_last_error ();
    if (ERR_GET_REASON (e) == CMS_R_CERTIFICATE_VERIFY_ERROR)
      sig = mg_signature_new (MG_SIG_NEUTRAL, "the signer's certificate is not in the trusted collection");
    else if (ERR_GET_REASON (e) == CMS_R_CONTENT_VERIFY_ERROR || ERR_GET_REASON (e) == CMS_R_VERIFICATION_FAILURE)
      sig = mg_signature_new (MG_SIG_FAIL, "bad signature");
    else if (ERR_GET_REASON (e) == CMS_R_SIGNER_CERTIFICATE_NOT_FOUND || ERR_GET_REASON (e) == CMS_R_NO_SIGNERS)
      sig = mg_signature_new (MG_SIG_NEUTRAL, "the signer's certificate is not included");
    else
      sig = mg_signature_new (MG_SIG_PERMERROR, "the signature cannot be checked");
  }
  ERR_clear_error ();
  {
    STACK_OF (CMS_SignerInfo) *sis = CMS_get0_SignerInfos (cms);
    g_autoptr (MgX509Stack) certs = CMS_get1_certs (cms);
    if (sis != NULL && sk_CMS_SignerInfo_num (sis) > 0) {
      CMS_SignerInfo *si = sk_CMS_SignerInfo_value (sis, 0);
      ASN1_INTEGER *serial = NULL;
      if (CMS_SignerInfo_get0_signer_id (si, NULL, NULL, &serial) > 0 && serial != NULL)
        sig->id = serial_text (serial);
      for (int i = 0; certs != NULL && i < sk_X509_num (certs); i++)
        if (CMS_SignerInfo_cert_cmp (si, sk_X509_value (certs, i)) == 0) {
          STACK_OF (OPENSSL_STRING) *emails = X509_get1_email (sk_X509_value (certs, i));
          if (emails != NULL && sk_OPENSSL_STRING_num (emails) > 0)
            sig->signer = mg_keys_address_copy (sk_OPENSSL_STRING_value (emails, 0));
          X509_email_free (emails);
        }
    }
  }
  return sig;
}
