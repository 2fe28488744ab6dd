/* smime.h - S/MIME's operations with keys (OpenSSL CMS, in-process): encrypt, decrypt, sign, verify; and the CMS
 * reading that detection shares. */
#pragma once

#include <glib.h>
#include <gmime/gmime.h>
#include <openssl/pem.h> /* before cms.h, which declares PEM_read_bio_CMS only after it */
#include <openssl/cms.h>

#include "keys.h"
#include "x509.h"

G_BEGIN_DECLS

/* MgSmimeRecipientFunc: one recipient of an enveloped object; @id %NULL for a password recipient (RFC 3211) */
typedef void (*MgSmimeRecipientFunc) (const char *id, const char *algorithm, gpointer user_data);

CMS_ContentInfo *mg_smime_parse (const guint8 *data, gsize len);
void mg_smime_recipients (CMS_ContentInfo *cms, MgSmimeRecipientFunc fn, gpointer user_data);
char *mg_smime_oid_name (const ASN1_OBJECT *obj);
char *mg_smime_algorithm_name (const X509_ALGOR *alg);
char *mg_smime_name_text (X509_NAME *name);
char *mg_smime_serial_text (const ASN1_INTEGER *serial);
char *mg_smime_id_text (ASN1_OCTET_STRING *keyid, X509_NAME *issuer, ASN1_INTEGER *serial);

GBytes *mg_smime_encrypt (GBytes *plain, GPtrArray *certs, gboolean gcm, GError **error);
/* mg_smime_encrypt_stream - mg_smime_encrypt() with CMS streaming: @plain read from its position to its end, the
 * enveloped-data object (binary BER, indefinite lengths; no base64: that is the MIME part's) written to @out as it is
 * made. Both streams stay the caller's (never flushed or closed here). On failure (%FALSE, @error set) @out may hold
 * part of an object: discard it. */
gboolean mg_smime_encrypt_stream (GMimeStream *plain, GMimeStream *out, GPtrArray *certs, gboolean gcm, GError **error);
GBytes *mg_smime_sign (GBytes *content, const MgX509Private *signer, GError **error);
GBytes *mg_smime_decrypt (const guint8 *data, gsize len, GPtrArray *private_keys, char **used, GError **error);
/* mg_smime_decrypt_stream - mg_smime_decrypt() from @cipher (its position to its end; OpenSSL parses the object whole:
 * 2x the ciphertext at the parse's peak, its read buffer and the parsed structure) with the clear text written to @out,
 * at most @max_output bytes (0: no bound; over it %MG_KEYS_ERROR_LIMIT). Both streams stay the caller's; @used set only
 * on success. On failure @out may hold part of the clear text (never from a key that did not fit): the caller discards
 * it. */
gboolean mg_smime_decrypt_stream (GMimeStream *cipher, GMimeStream *out, GPtrArray *private_keys, gsize max_output,
                                  char **used, GError **error);
MgSignature *mg_smime_verify (const guint8 *data, gsize len, GBytes *content, MgX509Store *store,
                              GBytes **signed_content);

G_END_DECLS
