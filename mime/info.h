/* info.h - what can be told about a protected payload without keys: recipients, signers, algorithms.
 *
 * Filled by the OpenPGP packet reader (openpgp.c) and the CMS reader (cms.c), reported by detection. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/**
 * MgCryptoId: one key reference found in a payload.
 * @id: OpenPGP key id ("0x" + 16 hex digits) or fingerprint, or a CMS "issuer=…, serial=…" / "ski=…"
 * @algorithm: public-key algorithm name, or %NULL when not stated
 * @digest: hash algorithm (signatures only), or %NULL
 * @name: user ID, signer address or certificate subject when the payload carries it, or %NULL
 */
typedef struct {
  char *id;
  char *algorithm;
  char *digest;
  char *name;
} MgCryptoId;

/**
 * MgCryptoInfo: all facts of one payload; every field may be empty or %NULL. Owns everything it points to.
 */
typedef struct {
  GPtrArray *recipients; /* (element-type MgCryptoId) encrypted to */
  GPtrArray *signers;    /* (element-type MgCryptoId) */
  GPtrArray *keys;       /* (element-type MgCryptoId) keys carried in a key block */
  char *cipher;          /* content-encryption algorithm */
  char *integrity;       /* "mdc", "aead" or "none" */
  char *compression;     /* compression algorithm (CMS compressed-data) */
  char *content;         /* inner content type (CMS eContentType), "detached" */
  guint passphrases;     /* symmetric (passphrase) session keys */
} MgCryptoInfo;

MgCryptoId *mg_crypto_id_new (const char *id, const char *algorithm);
void mg_crypto_id_free (MgCryptoId *cid);
void mg_crypto_info_init (MgCryptoInfo *info);
void mg_crypto_info_clear (MgCryptoInfo *info);
gboolean mg_crypto_info_is_empty (const MgCryptoInfo *info);

G_END_DECLS
