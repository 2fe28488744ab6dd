/* cms.c - what an S/MIME CMS object tells without keys (RFC 5652 CMS, RFC 5083 authEnveloped-data, RFC 3274
 * compressed-data, RFC 8551 S/MIME 4.0), and compressed-data inflated (no key needed). The operations that need a
 * key or the trusted collection are in keys/smime.c.
 *
 * OpenSSL parses the object (keys/smime.c: BER or DER, also PEM and bare base64 as mail clients sometimes send it);
 * its accessors give the recipients and signers. OpenSSL has no accessor for the content-encryption or compression
 * algorithm, so those are read from the object's DER re-encoding with a small bounded walker. */
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
#include "smime.h"

#include <gio/gio.h>
#include <glib/gi18n.h>

/* add_recipient_cb - MgSmimeRecipientFunc: one recipient into the report */
static void
add_recipient_cb (const char *id, const char *algorithm, gpointer user_data)
{
  MgCryptoInfo *info = user_data;

  if (id == NULL)
    info->passphrases++;
  else
    g_ptr_array_add (info->recipients, mg_crypto_id_new (id, algorithm));
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
    return name ? name : mg_smime_name_text (X509_get_subject_name (cert));
  }
  return NULL;
}

static void
read_signers (CMS_ContentInfo *cms, MgCryptoInfo *info)
{
  STACK_OF (CMS_SignerInfo) *sis = CMS_get0_SignerInfos (cms);
  g_autoptr (MgX509Stack) certs = CMS_get1_certs (cms);
  const ASN1_OBJECT *ectype = CMS_get0_eContentType (cms);

  info->content = CMS_is_detached (cms) ? g_strdup ("detached") : (ectype ? mg_smime_oid_name (ectype) : NULL);
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
    id = mg_smime_id_text (keyid, issuer, serial);
    algo = mg_smime_algorithm_name (sig);
    cid = mg_crypto_id_new (id, algo);
    cid->digest = mg_smime_algorithm_name (dig);
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
  return obj ? mg_smime_oid_name (obj) : NULL;
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
  g_autoptr (CMS_ContentInfo) cms = mg_smime_parse (data, len);
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
    mg_smime_recipients (cms, add_recipient_cb, info);
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
    info->content = mg_smime_oid_name (CMS_get0_type (cms));
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
  g_autoptr (CMS_ContentInfo) cms = mg_smime_parse (data, len);
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

/* ber_header - the tag (one octet: the low tag numbers CMS's envelope uses) and the length at @d[*pos]; @clen -1 for
 * the indefinite form. FALSE when the header does not fit in @len or uses a form this reader does not take. */
static gboolean
ber_header (const guint8 *d, gsize len, gsize *pos, guint8 *tag, gssize *clen)
{
  gsize p = *pos;

  if (p + 2 > len || (d[p] & 0x1f) == 0x1f)
    return FALSE;
  *tag = d[p++];
  if (d[p] < 0x80)
    *clen = d[p++];
  else if (d[p] == 0x80) {
    if ((*tag & 0x20) == 0)
      return FALSE; /* indefinite is for constructed encodings only */
    *clen = -1;
    p++;
  } else {
    guint n = d[p++] & 0x7f;
    gsize v = 0;
    if (n > 4 || p + n > len)
      return FALSE;
    for (guint i = 0; i < n; i++)
      v = (v << 8) | d[p + i];
    p += n;
    *clen = (gssize) v;
  }
  *pos = p;
  return TRUE;
}

/* ber_skip - the end of the whole TLV at @pos (an indefinite one through its end-of-contents), 0 when it does not
 * end within @len or is nested deeper than @depth */
static gsize
ber_skip (const guint8 *d, gsize len, gsize pos, guint depth)
{
  guint8 tag;
  gssize clen;

  if (depth == 0 || !ber_header (d, len, &pos, &tag, &clen))
    return 0;
  if (clen >= 0)
    return pos + (gsize) clen <= len ? pos + (gsize) clen : 0;
  while (pos + 2 <= len && !(d[pos] == 0 && d[pos + 1] == 0))
    if ((pos = ber_skip (d, len, pos, depth - 1)) == 0)
      return 0;
  return pos + 2 <= len ? pos + 2 : 0;
}

/* ber_open - opens the constructed TLV of @tag at *@pos: *@pos moves to its first child */
static gboolean
ber_open (const guint8 *d, gsize len, gsize *pos, guint8 want)
{
  guint8 tag;
  gssize clen;

  return ber_header (d, len, pos, &tag, &clen) && tag == want;
}

/**
 * mg_cms_head - the start of a large enveloped-data or authEnveloped-data object (BER or DER, as S/MIME carries it)
 * rebuilt as a complete object without its encrypted content (which RFC 5652 makes optional; authEnveloped-data gets
 * an empty MAC): what mg_cms_inspect() reads of the recipients and the algorithm, from the first octets alone,
 * instead of the whole object parsed into memory.
 * @data: the start of the object (its recipients must be complete in it)
 *
 * Returns: (transfer full) (nullable): the rebuilt object, %NULL when @data is not the start of such an object
 */
GBytes *
mg_cms_head (const guint8 *data, gsize len)
{
  static const guint8 enveloped[] = { 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x03 };
  static const guint8 auth[] = { 0x06, 0x0b, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x10, 0x01, 0x17 };
  static const guint8 eoc[] = { 0, 0 };
  g_autoptr (GByteArray) out = g_byte_array_new ();
  gsize pos = 0, end, type_start;
  gboolean is_auth;
  guint8 tag;
  gssize clen;

  /* ContentInfo: SEQUENCE { contentType OID, [0] EXPLICIT content } */
  if (!ber_open (data, len, &pos, 0x30))
    return NULL;
  type_start = pos;
  if ((end = ber_skip (data, len, pos, 2)) == 0)
    return NULL;
  is_auth = end - pos == sizeof auth && memcmp (data + pos, auth, sizeof auth) == 0;
  if (!is_auth && !(end - pos == sizeof enveloped && memcmp (data + pos, enveloped, sizeof enveloped) == 0))
    return NULL;
  g_byte_array_append (out, (const guint8 *) "\x30\x80", 2);
  g_byte_array_append (out, data + type_start, (guint) (end - type_start));
  pos = end;
  if (!ber_open (data, len, &pos, 0xa0) || !ber_open (data, len, &pos, 0x30))
    return NULL;
  g_byte_array_append (out, (const guint8 *) "\xa0\x80\x30\x80", 4);
  /* version, originatorInfo [0] (optional), recipientInfos SET: copied whole */
  for (;;) {
    gsize start = pos;
    gsize p = pos;
    if (!ber_header (data, len, &p, &tag, &clen) || (end = ber_skip (data, len, pos, 32)) == 0)
      return NULL;
    g_byte_array_append (out, data + start, (guint) (end - start));
    pos = end;
    if (tag == 0x31)
      break;
    if (tag != 0x02 && tag != 0xa0)
      return NULL;
  }
  /* (auth)encryptedContentInfo: contentType and contentEncryptionAlgorithm, the content left out */
  if (!ber_open (data, len, &pos, 0x30))
    return NULL;
  g_byte_array_append (out, (const guint8 *) "\x30\x80", 2);
  for (guint i = 0; i < 2; i++) {
    gsize start = pos;
    if ((end = ber_skip (data, len, pos, 32)) == 0)
      return NULL;
    g_byte_array_append (out, data + start, (guint) (end - start));
    pos = end;
  }
  g_byte_array_append (out, eoc, 2);
  if (is_auth)
    g_byte_array_append (out, (const guint8 *) "\x04\x00", 2); /* mac */
  for (guint i = 0; i < 3; i++)
    g_byte_array_append (out, eoc, 2);
  return g_byte_array_free_to_bytes (g_steal_pointer (&out));
}
