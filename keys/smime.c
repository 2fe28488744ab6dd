/* smime.c - every S/MIME operation that needs a key or the trusted collection, in-process with OpenSSL CMS
 * (RFC 5652 CMS, RFC 5083 authEnveloped-data, RFC 8551 S/MIME 4.0, RFC 8550 certificate handling): encrypt to
 * recipients' certificates, decrypt with the keys the gateway holds, sign, verify against ca/. Beside them, the
 * reading of CMS objects that detection (mime/cms.c) shares: parsing, and how CMS names recipients and signers.
 * OpenPGP's operations are in gnupg.c; keys/ holds every operation that needs a key, for both standards. */
#include "config.h"

#include "smime.h"

#include <string.h>

#include <openssl/asn1.h>
#include <openssl/bn.h>
#include <openssl/pem.h> /* before cms.h, which declares PEM_read_bio_CMS only after it */
#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/x509v3.h>

#include <glib/gi18n.h>
#include <gmime/gmime.h>

#include "mg-ssl.h"

/* mg_smime_oid_name - OpenSSL's short name of an OID, or its dotted form; Returns: (transfer full) */
char *
mg_smime_oid_name (const ASN1_OBJECT *obj)
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

/* mg_smime_algorithm_name - the name of @alg's OID; Returns: (transfer full) (nullable) */
char *
mg_smime_algorithm_name (const X509_ALGOR *alg)
{
  const ASN1_OBJECT *obj = NULL;

  if (alg == NULL)
    return NULL;
  X509_ALGOR_get0 (&obj, NULL, NULL, alg);
  return obj ? mg_smime_oid_name (obj) : NULL;
}

/* mg_smime_name_text - an X.509 name in RFC 2253 form, valid UTF-8; Returns: (transfer full) */
char *
mg_smime_name_text (X509_NAME *name)
{
  g_autoptr (BIO) bio = BIO_new (BIO_s_mem ());
  char *data = NULL;
  long n;

  if (bio == NULL || name == NULL || X509_NAME_print_ex (bio, name, 0, XN_FLAG_RFC2253) < 0)
    return g_strdup ("?");
  n = BIO_get_mem_data (bio, &data);
  return g_utf8_make_valid (data, n);
}

/* mg_smime_serial_text - "0x…" in upper-case hex; Returns: (transfer full) */
char *
mg_smime_serial_text (const ASN1_INTEGER *serial)
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

/* mg_smime_id_text - "issuer=…, serial=0x…" or "ski=…": how CMS names a recipient or signer; Returns: (transfer full)
 */
char *
mg_smime_id_text (ASN1_OCTET_STRING *keyid, X509_NAME *issuer, ASN1_INTEGER *serial)
{
  if (issuer != NULL && serial != NULL) {
    g_autofree char *iss = mg_smime_name_text (issuer);
    g_autofree char *ser = mg_smime_serial_text (serial);
    return g_strdup_printf ("issuer=%s, serial=%s", iss, ser);
  }
  if (keyid != NULL)
    return ski_text (keyid);
  return g_strdup ("unknown");
}

/**
 * mg_smime_recipients - calls @fn for every recipient of an enveloped or authEnveloped object, in order, with how
 * the object names it ("issuer=…, serial=…", "ski=…", "kek=…", "unknown") and its key algorithm (nullable); a
 * password recipient (RFC 3211) is reported with a %NULL id.
 */
void
mg_smime_recipients (CMS_ContentInfo *cms, MgSmimeRecipientFunc fn, gpointer user_data)
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
      id = mg_smime_id_text (keyid, issuer, serial);
      algo = mg_smime_algorithm_name (alg);
      fn (id, algo, user_data);
      break;
    }
    case CMS_RECIPINFO_AGREE: {
      STACK_OF (CMS_RecipientEncryptedKey) *reks = CMS_RecipientInfo_kari_get0_reks (ri);
      g_autofree char *algo = NULL;
      if (CMS_RecipientInfo_kari_get0_alg (ri, &alg, NULL) > 0)
        algo = mg_smime_algorithm_name (alg);
      for (int k = 0; reks != NULL && k < sk_CMS_RecipientEncryptedKey_num (reks); k++) {
        g_autofree char *id = NULL;
        keyid = NULL;
        issuer = NULL;
        serial = NULL;
        if (CMS_RecipientEncryptedKey_get0_id (sk_CMS_RecipientEncryptedKey_value (reks, k), &keyid, NULL, NULL,
                                               &issuer, &serial) <= 0)
          continue;
        id = mg_smime_id_text (keyid, issuer, serial);
        fn (id, algo, user_data);
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
      algo = mg_smime_algorithm_name (alg);
      fn (id, algo, user_data);
      break;
    }
    case CMS_RECIPINFO_PASS:
      fn (NULL, NULL, user_data);
      break;
    default:
      fn ("unknown", NULL, user_data);
      break;
    }
  }
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

/**
 * mg_smime_parse - a CMS object from DER/BER, PEM ("BEGIN PKCS7"/"BEGIN CMS") or bare base64 (as mail clients
 * sometimes send it without declaring the transfer encoding).
 *
 * Returns: (transfer full) (nullable): %NULL when OpenSSL cannot read it (its error queue holds why)
 */
CMS_ContentInfo *
mg_smime_parse (const guint8 *data, gsize len)
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
 * mg_smime_encrypt - an enveloped-data object (DER) of @plain for every certificate in @certs.
 * @certs: (element-type X509): the recipients' certificates
 * @gcm: authEnveloped-data with AES-256-GCM (RFC 5083) instead of enveloped-data with AES-256-CBC
 *
 * Returns: (transfer full): the DER, or %NULL with %MG_KEYS_ERROR_CRYPTO set.
 */
GBytes *
mg_smime_encrypt (GBytes *plain, GPtrArray *certs, gboolean gcm, GError **error)
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

/* StreamBio - what a BIO over a GMimeStream (stream_bio()) holds: the stream (a reference), bytes already read
 * from it that reads serve first (@head: what mg_smime_decrypt_stream() looked at to tell DER from PEM), and a bound
 * on what is written (0: none) */
typedef struct {
  GMimeStream *stream;
  GByteArray *head;
  gsize head_at;
  gsize max;
  gsize written;
  gboolean over;
  gboolean failed;
} StreamBio;

static int
sbio_write (BIO *b, const char *data, int len)
{
  StreamBio *sb = BIO_get_data (b);

  if (len <= 0)
    return 0;
  if (sb->max != 0 && (gsize) len > sb->max - MIN (sb->max, sb->written)) {
    sb->over = TRUE;
    return -1;
  }
  if (g_mime_stream_write (sb->stream, data, (gsize) len) != len) {
    sb->failed = TRUE;
    return -1;
  }
  sb->written += (gsize) len;
  return len;
}

static int
sbio_read (BIO *b, char *buf, int len)
{
  StreamBio *sb = BIO_get_data (b);
  gssize n;

  if (len <= 0)
    return 0;
  if (sb->head != NULL && sb->head_at < sb->head->len) {
    gsize k = MIN ((gsize) len, sb->head->len - sb->head_at);
    memcpy (buf, sb->head->data + sb->head_at, k);
    sb->head_at += k;
    return (int) k;
  }
  n = g_mime_stream_read (sb->stream, buf, (gsize) len);
  if (n < 0) {
    sb->failed = TRUE; /* OpenSSL's copy loops take -1 for the end: the caller checks this flag */
    return -1;
  }
  return (int) n;
}

static long
sbio_ctrl (BIO *b, int cmd, long num, void *ptr)
{
  StreamBio *sb = BIO_get_data (b);

  switch (cmd) {
  case BIO_CTRL_FLUSH:
    /* nothing is buffered here; flushing the stream is its owner's (GMime's file stream would fsync, a filter
     * stream would complete its filters) */
    return 1;
  case BIO_CTRL_EOF:
    return (sb->head == NULL || sb->head_at >= sb->head->len) && g_mime_stream_eos (sb->stream);
  case BIO_CTRL_PUSH:
  case BIO_CTRL_POP:
    return 0;
  default:
    return 0;
  }
}

static int
sbio_destroy (BIO *b)
{
  StreamBio *sb = BIO_get_data (b);

  if (sb != NULL) {
    g_object_unref (sb->stream);
    if (sb->head != NULL)
      g_byte_array_unref (sb->head);
    g_free (sb);
    BIO_set_data (b, NULL);
  }
  return 1;
}

/* stream_bio - a source/sink BIO over @stream (a new reference; the BIO owns its StreamBio, readable through
 * BIO_get_data() until BIO_free) */
static BIO *
stream_bio (GMimeStream *stream, gsize max)
{
  static gsize once = 0;
  static BIO_METHOD *method = NULL;
  StreamBio *sb;
  BIO *b;

  if (g_once_init_enter (&once)) {
    method = BIO_meth_new (BIO_get_new_index () | BIO_TYPE_SOURCE_SINK, "mimegate GMimeStream");
    if (method != NULL) {
      BIO_meth_set_write (method, sbio_write);
      BIO_meth_set_read (method, sbio_read);
      BIO_meth_set_ctrl (method, sbio_ctrl);
      BIO_meth_set_destroy (method, sbio_destroy);
    }
    g_once_init_leave (&once, 1);
  }
  if (method == NULL || (b = BIO_new (method)) == NULL)
    return NULL;
  sb = g_new0 (StreamBio, 1);
  sb->stream = g_object_ref (stream);
  sb->max = max;
  BIO_set_data (b, sb);
  BIO_set_init (b, 1);
  return b;
}

/**
 * mg_smime_encrypt_stream - mg_smime_encrypt() from stream to stream, with OpenSSL's CMS streaming: the clear text
 * is read from @plain (from its position to its end) in 4 KiB pieces and the enveloped-data object written to @out as
 * it is encrypted. The object is BER with indefinite lengths around the encrypted content (what `openssl cms -encrypt
 * -stream` writes; every CMS reader, `openssl cms -inform DER` and mg_smime_decrypt() included, reads it), binary:
 * the MIME part's base64 is the caller's (GMime encodes the part's content as it writes it).
 *
 * Returns: %TRUE, or %FALSE with %MG_KEYS_ERROR_CRYPTO (OpenSSL refused) or a transient %MG_KEYS_ERROR_STORE (a
 * stream failed); @out may then hold part of an object, which the caller discards.
 */
gboolean
mg_smime_encrypt_stream (GMimeStream *plain, GMimeStream *out, GPtrArray *certs, gboolean gcm, GError **error)
{
  const unsigned int flags = CMS_BINARY | CMS_STREAM;
  g_autoptr (MgX509Stack) stack = sk_X509_new_null ();
  g_autoptr (BIO) in = NULL, dst = NULL;
  g_autoptr (CMS_ContentInfo) cms = NULL;
  StreamBio *src, *sink;
  gboolean ok;

  g_return_val_if_fail (GMIME_IS_STREAM (plain) && GMIME_IS_STREAM (out), FALSE);
  for (guint i = 0; i < certs->len; i++) {
    X509 *x = g_ptr_array_index (certs, i);
    X509_up_ref (x);
    sk_X509_push (stack, x);
  }
  in = stream_bio (plain, 0);
  dst = stream_bio (out, 0);
  ok = stack != NULL && in != NULL && dst != NULL &&
       (cms = CMS_encrypt (stack, NULL, gcm ? EVP_aes_256_gcm () : EVP_aes_256_cbc (), flags)) != NULL &&
       i2d_CMS_bio_stream (dst, cms, in, (int) flags) == 1;
  src = in ? BIO_get_data (in) : NULL;
  sink = dst ? BIO_get_data (dst) : NULL;
  if ((src != NULL && src->failed) || (sink != NULL && sink->failed)) {
    ERR_clear_error ();
    g_set_error_literal (error, MG_KEYS_ERROR, MG_KEYS_ERROR_STORE,
                         src != NULL && src->failed ? _ ("cannot read the clear text to encrypt")
                                                    : _ ("cannot write the ciphertext"));
    return FALSE;
  }
  if (!ok) {
    mg_keys_set_openssl_error (error, MG_KEYS_ERROR_CRYPTO, "cannot encrypt (CMS)");
    return FALSE;
  }
  return TRUE;
}

/**
 * mg_smime_sign - a detached CMS signature (RFC 8551 section 3.5, application/pkcs7-signature) over @content, which is
 * already canonical (CRLF), by @signer with SHA-256. The signer's certificate and its intermediates up to ca/ (the
 * chain the store built for it, never the root) go with it, so that a verifier who trusts only the root can build the
 * path (RFC 8550 section 2.3).
 *
 * Returns: (transfer full): the DER, or %NULL with %MG_KEYS_ERROR_CRYPTO.
 */
GBytes *
mg_smime_sign (GBytes *content, const MgX509Private *signer, GError **error)
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

/* add_id_cb - MgSmimeRecipientFunc: the ids joined with "; ", for an error message */
static void
add_id_cb (const char *id, const char *algorithm, gpointer user_data)
{
  GString *to = user_data;

  if (id != NULL)
    g_string_append_printf (to, "%s%s", to->len ? "; " : "", id);
}

/**
 * mg_smime_decrypt - decrypts an enveloped or authEnveloped CMS object with one of the keys the gateway holds.
 * @private_keys: (element-type MgX509Private)
 * @used: (out) (optional): the serial of the certificate whose key decrypted it
 *
 * Returns: (transfer full): the clear text, or %NULL with %MG_KEYS_ERROR_NOT_HELD naming the recipients when no held
 * key fits, or %MG_KEYS_ERROR_CRYPTO when the object is broken.
 */
GBytes *
mg_smime_decrypt (const guint8 *data, gsize len, GPtrArray *private_keys, char **used, GError **error)
{
  g_autoptr (CMS_ContentInfo) cms = mg_smime_parse (data, len);
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
  mg_smime_recipients (cms, add_id_cb, to);
  g_set_error (error, MG_KEYS_ERROR, MG_KEYS_ERROR_NOT_HELD, _ ("encrypted to keys the gateway does not hold: %s"),
               to->len ? to->str : "?");
  return NULL;
}

/**
 * mg_smime_decrypt_stream - mg_smime_decrypt() with the clear text written to @out: the CMS object is read from
 * @cipher (from its position to its end: DER/BER, PEM or bare base64, as mg_smime_parse() takes) and held in memory
 * once (OpenSSL parses the whole structure), the content is decrypted into @out in 4 KiB pieces. The key is chosen
 * first (CMS_decrypt_set1_pkey, no output), then the content decrypted once, so a key that does not fit writes
 * nothing.
 * @max_output: at most this many bytes are written (0: no bound); over it, %MG_KEYS_ERROR_LIMIT
 *
 * Returns: %TRUE, or %FALSE with %MG_KEYS_ERROR_NOT_HELD (no held key fits), %MG_KEYS_ERROR_CRYPTO (the object is
 * broken, or its content fails to decrypt or authenticate), %MG_KEYS_ERROR_LIMIT or a transient %MG_KEYS_ERROR_STORE
 * (a stream failed); @out may then hold part of the clear text (an authEnveloped object's before its tag was checked),
 * which the caller discards.
 */
gboolean
mg_smime_decrypt_stream (GMimeStream *cipher, GMimeStream *out, GPtrArray *private_keys, gsize max_output, char **used,
                         GError **error)
{
  g_autoptr (BIO) src = NULL, dst = NULL;
  g_autoptr (CMS_ContentInfo) cms = NULL;
  g_autoptr (GString) to = g_string_new (NULL);
  const MgX509Private *chosen = NULL;
  StreamBio *in, *sink;
  guint8 head[256];
  gssize n = 0, got = 0;

  g_return_val_if_fail (GMIME_IS_STREAM (cipher) && GMIME_IS_STREAM (out), FALSE);
  /* what the object starts with tells DER from PEM or base64; reads serve those bytes again */
  while (n < (gssize) sizeof head && (got = g_mime_stream_read (cipher, (char *) head + n, sizeof head - n)) > 0)
    n += got;
  if ((src = stream_bio (cipher, 0)) == NULL || (dst = stream_bio (out, max_output)) == NULL) {
    mg_keys_set_openssl_error (error, MG_KEYS_ERROR_CRYPTO, "cannot decrypt (CMS)");
    return FALSE;
  }
  in = BIO_get_data (src);
  sink = BIO_get_data (dst);
  in->head = g_byte_array_new ();
  g_byte_array_append (in->head, head, (guint) MAX (n, 0));
  if (got < 0)
    in->failed = TRUE;
  else if (n > 11 && memcmp (head, "-----BEGIN ", 11) == 0) {
    BIO *lines = BIO_new (BIO_f_buffer ()); /* PEM reads lines (BIO_gets) */
    if (lines != NULL) {
      BIO_push (lines, src);
      cms = PEM_read_bio_CMS (lines, NULL, NULL, NULL);
      BIO_pop (lines);
      BIO_free (lines);
    }
  } else if (looks_base64 (head, (gsize) n)) {
    BIO *b64 = BIO_new (BIO_f_base64 ());
    if (b64 != NULL) {
      BIO_push (b64, src);
      cms = d2i_CMS_bio (b64, NULL);
      BIO_pop (b64);
      BIO_free (b64);
    }
  } else
    cms = d2i_CMS_bio (src, NULL);
  if (in->failed) {
    ERR_clear_error ();
    g_set_error_literal (error, MG_KEYS_ERROR, MG_KEYS_ERROR_STORE, _ ("cannot read the ciphertext to decrypt"));
    return FALSE;
  }
  if (cms == NULL) {
    mg_keys_set_openssl_error (error, MG_KEYS_ERROR_CRYPTO, "not a CMS object");
    return FALSE;
  }
  for (guint i = 0; private_keys != NULL && i < private_keys->len && chosen == NULL; i++) {
    const MgX509Private *p = g_ptr_array_index (private_keys, i);
    if (CMS_decrypt_set1_pkey (cms, p->key, p->cert->cert) == 1)
      chosen = p;
    ERR_clear_error ();
  }
  if (chosen == NULL) {
    mg_smime_recipients (cms, add_id_cb, to);
    g_set_error (error, MG_KEYS_ERROR, MG_KEYS_ERROR_NOT_HELD, _ ("encrypted to keys the gateway does not hold: %s"),
                 to->len ? to->str : "?");
    return FALSE;
  }
  if (CMS_decrypt (cms, NULL, NULL, NULL, dst, CMS_BINARY) != 1) {
    if (sink->over) {
      g_autofree char *bound = g_strdup_printf ("%" G_GSIZE_FORMAT, max_output);
      ERR_clear_error ();
      g_set_error (error, MG_KEYS_ERROR, MG_KEYS_ERROR_LIMIT,
                   _ ("refused: the decrypted content is larger than max-decompressed (%s bytes)"), bound);
    } else if (sink->failed) {
      ERR_clear_error ();
      g_set_error_literal (error, MG_KEYS_ERROR, MG_KEYS_ERROR_STORE, _ ("cannot write the decrypted text"));
    } else
      mg_keys_set_openssl_error (error, MG_KEYS_ERROR_CRYPTO, "cannot decrypt (CMS)");
    return FALSE;
  }
  ERR_clear_error ();
  if (used != NULL)
    *used = g_strdup (chosen->cert->serial);
  return TRUE;
}

/* signers_included - whether the message carries every signer's certificate */
static gboolean
signers_included (CMS_ContentInfo *cms)
{
  STACK_OF (CMS_SignerInfo) *sis = CMS_get0_SignerInfos (cms);
  g_autoptr (MgX509Stack) certs = CMS_get1_certs (cms);

  for (int i = 0; sis != NULL && i < sk_CMS_SignerInfo_num (sis); i++) {
    gboolean found = FALSE;
    for (int k = 0; certs != NULL && k < sk_X509_num (certs) && !found; k++)
      found = CMS_SignerInfo_cert_cmp (sk_CMS_SignerInfo_value (sis, i), sk_X509_value (certs, k)) == 0;
    if (!found)
      return FALSE;
  }
  return TRUE;
}

/* signature_certs - (transfer full) (nullable): @certs as DER, the one that matches @si (the signer) first; %NULL when
 * the signer's certificate is not among them */
static GPtrArray *
signature_certs (CMS_SignerInfo *si, STACK_OF (X509) * certs)
{
  g_autoptr (GPtrArray) out = g_ptr_array_new_with_free_func ((GDestroyNotify) g_bytes_unref);

  for (int pass = 0; pass < 2; pass++) {
    for (int i = 0; certs != NULL && i < sk_X509_num (certs); i++) {
      X509 *x = sk_X509_value (certs, i);
      unsigned char *der = NULL;
      int len;
      if ((CMS_SignerInfo_cert_cmp (si, x) == 0) != (pass == 0) || (out->len > 0 && pass == 0) ||
          (len = i2d_X509 (x, &der)) <= 0)
        continue;
      g_ptr_array_add (out, g_bytes_new (der, (gsize) len));
      OPENSSL_free (der);
    }
    if (out->len == 0)
      break; /* the signer's own certificate is not there */
  }
  ERR_clear_error ();
  return out->len > 0 ? g_steal_pointer (&out) : NULL;
}

/**
 * mg_smime_verify - checks an S/MIME signature (RFC 8551 section 3.5) against the store's trusted collection.
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
mg_smime_verify (const guint8 *data, gsize len, GBytes *content, MgX509Store *store, GBytes **signed_content)
{
  g_autoptr (CMS_ContentInfo) cms = mg_smime_parse (data, len);
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
  else if (!signers_included (cms)) {
    /* an indexed store holds only the certificates of certs/ that can issue: a signer whose certificate the message
     * leaves out is looked for among all of them, as the whole read does (mg_x509_store_whole reads them once) */
    MgX509Store *whole = mg_x509_store_whole (store);
    store = whole ? whole : store;
  }
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
        sig->id = mg_smime_serial_text (serial);
      for (int i = 0; certs != NULL && i < sk_X509_num (certs); i++)
        if (CMS_SignerInfo_cert_cmp (si, sk_X509_value (certs, i)) == 0) {
          STACK_OF (OPENSSL_STRING) *emails = X509_get1_email (sk_X509_value (certs, i));
          if (emails != NULL && sk_OPENSSL_STRING_num (emails) > 0)
            sig->signer = mg_keys_address_copy (sk_OPENSSL_STRING_value (emails, 0));
          X509_email_free (emails);
        }
      if (sig->result == MG_SIG_PASS && sk_CMS_SignerInfo_num (sis) == 1)
        sig->certs = signature_certs (si, certs);
    }
  }
  return sig;
}
