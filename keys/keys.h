/* keys.h - key material for mimegate: errors, and the boundary where OpenSSL and GPGME failures become GError.
 *
 * The OpenPGP (GPGME) and X.509 (OpenSSL) key stores grow here; this header is the module's whole face. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

#define MG_KEYS_ERROR (mg_keys_error_quark ())

/**
 * MgKeysError:
 * @MG_KEYS_ERROR_CRYPTO: a crypto library refused the input (permanent: the data itself is bad)
 * @MG_KEYS_ERROR_STORE: a key store or the agent could not be used (transient: the admin can fix it, mail is deferred)
 * @MG_KEYS_ERROR_NOT_HELD: the data is encrypted to keys the gateway does not hold (permanent for this message)
 * @MG_KEYS_ERROR_INTEGRITY: the data has no or broken integrity protection and is refused (permanent)
 * @MG_KEYS_ERROR_LIMIT: the decrypted data is over a configured bound (max-decompressed) and is refused (permanent)
 *
 * Every code is either transient or permanent; mg_keys_error_is_transient() says which.
 */
typedef enum {
  MG_KEYS_ERROR_CRYPTO,
  MG_KEYS_ERROR_STORE,
  MG_KEYS_ERROR_NOT_HELD,
  MG_KEYS_ERROR_INTEGRITY,
  MG_KEYS_ERROR_LIMIT,
} MgKeysError;

GQuark mg_keys_error_quark (void);
gboolean mg_keys_error_is_transient (const GError *error);

void mg_keys_set_openssl_error (GError **error, MgKeysError code, const char *what);

/**
 * MgRefusal: a key or certificate that was considered for an address and not chosen.
 * @id: OpenPGP fingerprint or X.509 SHA-256 fingerprint
 * @reason: why, in words an admin understands (translated)
 * @source: (nullable): where it came from when that is not the local store (a directory: "ldap://host/base")
 */
typedef struct {
  char *id;
  char *reason;
  char *source;
} MgRefusal;

MgRefusal *mg_keys_refusal_new (const char *id, const char *reason);
void mg_keys_refusal_free (MgRefusal *refusal);

/**
 * MgExpiry: one key or certificate of a local store with an end date, for `mimegate keys --expiring`.
 * @store: "openpgp" (a public key of the GnuPG home), "openpgp-secret" (a key the gateway holds there), "certs",
 *   "harvested" or "private" (of the X.509 store)
 * @source: the GnuPG home, or the store file ("certs/NAME")
 * @id: OpenPGP primary key fingerprint, or the certificate's SHA-256 fingerprint
 * @serial: (nullable): the certificate's serial ("0x…")
 * @addresses: (element-type utf8): the mail addresses of its user IDs or subjectAltName, as written there
 * @expires: when it stops being usable (OpenPGP: the primary key's end, or the last end of the subkeys that can do
 *   the store's work, whichever is sooner)
 */
typedef struct {
  char *store;
  char *source;
  char *id;
  char *serial;
  GPtrArray *addresses;
  gint64 expires;
} MgExpiry;

MgExpiry *mg_expiry_new (const char *store, const char *source, const char *id, const char *serial, gint64 expires);
void mg_expiry_free (MgExpiry *expiry);
char *mg_keys_address_key (const char *address);
char *mg_keys_domain_key (const char *domain);
char *mg_keys_address_copy (const char *address);

/**
 * MgSigResult: the outcome of checking one signature, as RFC 8601 names results. Only %MG_SIG_PASS means a
 * cryptographically good signature by a key or certificate the gateway trusts.
 */
typedef enum {
  MG_SIG_PASS,
  MG_SIG_FAIL,      /* the signature does not match the content */
  MG_SIG_NEUTRAL,   /* good or unknown, but by a signer the gateway does not know or trust */
  MG_SIG_TEMPERROR, /* could not be checked now */
  MG_SIG_PERMERROR, /* cannot be checked: broken */
} MgSigResult;

/**
 * MgSignature: one checked signature.
 * @signer: (nullable): the signer's mail address when known
 * @id: (nullable): OpenPGP fingerprint or X.509 serial
 * @reason: (nullable): why it is not a pass, in English (it goes into a header, never translated)
 * @certs: (nullable) (element-type GBytes): an S/MIME pass only: the certificates the signature carries, DER, the
 *   signer's first (what harvesting may keep, after judging each again)
 */
typedef struct {
  MgSigResult result;
  char *signer;
  char *id;
  char *reason;
  GPtrArray *certs;
} MgSignature;

const char *mg_sig_result_name (MgSigResult result);
MgSignature *mg_signature_new (MgSigResult result, const char *reason);
void mg_signature_free (MgSignature *sig);
char *mg_keys_format_time (gint64 unix_time);

G_END_DECLS
