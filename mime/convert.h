/* convert.h - turning one message into one form for a set of recipients: the engine `convert` and `filter` share. */
#pragma once

#include <glib.h>

#include "detect.h"
#include "gnupg.h"
#include "hpwrap.h"
#include "x509.h"

G_BEGIN_DECLS

#define MG_CONVERT_ERROR (mg_convert_error_quark ())

/**
 * MgConvertError: (key errors come as MG_KEYS_ERROR: NOT_HELD, INTEGRITY, CRYPTO permanent; STORE transient)
 * @MG_CONVERT_ERROR_NO_KEY: a recipient has no usable key for the form (permanent: never fall back to clear text)
 * @MG_CONVERT_ERROR_UNSUPPORTED: this conversion is not available (yet)
 * @MG_CONVERT_ERROR_MALFORMED: the message cannot be parsed or is over a limit
 * @MG_CONVERT_ERROR_NO_SIGNER: signing was asked for and the gateway holds no usable key for that identity (a
 *   configuration problem: never send unsigned instead)
 * @MG_CONVERT_ERROR_INTERNAL: a bug in mimegate (transient: the message is deferred, never bounced)
 */
typedef enum {
  MG_CONVERT_ERROR_NO_KEY,
  MG_CONVERT_ERROR_UNSUPPORTED,
  MG_CONVERT_ERROR_MALFORMED,
  MG_CONVERT_ERROR_NO_SIGNER,
  MG_CONVERT_ERROR_INTERNAL,
} MgConvertError;

GQuark mg_convert_error_quark (void);
gboolean mg_authserv_id_valid (const char *id);

typedef enum { MG_FORM_KEEP, MG_FORM_PLAIN, MG_FORM_PGP_MIME, MG_FORM_PGP_INLINE, MG_FORM_SMIME, MG_FORM_COUNT } MgForm;

const char *mg_form_name (MgForm form);
gboolean mg_form_from_name (const char *name, MgForm *form);

/**
 * MgSignMethod: how the gateway signs what it emits.
 * @MG_SIGN_AUTO: what the form implies: OpenPGP for pgp-mime and pgp-inline, S/MIME for smime; for plain, OpenPGP
 *   when the identity has an OpenPGP secret key, else S/MIME
 * @MG_SIGN_PGP: PGP/MIME multipart/signed (RFC 3156 section 5); in pgp-inline, each piece signed and encrypted at once
 * @MG_SIGN_PGP_INLINE: the body text cleartext-signed, each attachment beside its detached NAME.asc (plain and
 *   pgp-inline only)
 * @MG_SIGN_SMIME: S/MIME detached multipart/signed (RFC 8551 section 3.5); signed, then encrypted when both
 */
typedef enum { MG_SIGN_NONE, MG_SIGN_AUTO, MG_SIGN_PGP, MG_SIGN_PGP_INLINE, MG_SIGN_SMIME } MgSignMethod;

gboolean mg_sign_method_from_name (const char *name, MgSignMethod *method);

/**
 * MgConvertKeys: what the engine may use. Either store may be %NULL (then forms that need it fail with NO_KEY, and
 * messages encrypted for it are not held).
 */
typedef struct {
  MgGnupg *gnupg;
  MgX509Store *x509;
  const MgLimits *limits;
  gboolean gcm;            /* S/MIME output as authEnveloped-data (AES-256-GCM) */
  const char *authserv_id; /* RFC 8601 authserv-id of our Authentication-Results stamps; NULL: no stamping */
  MgSignMethod sign;       /* MG_SIGN_NONE (0): do not sign */
  const char *sign_as;     /* the identity (address) to sign as */
  MgHeaderProtection header_protection; /* RFC 9788 (mime/hpwrap.h); MG_HP_OFF (0): the payload as it is */
} MgConvertKeys;

/**
 * MgConvertResult: what was done, for logs and for `convert`'s stderr.
 * @action: "kept", "decrypted", "encrypted", "re-encrypted" (static)
 * @keys: (element-type utf8): fingerprints and serials used, to decrypt and to encrypt
 * @notes: (element-type utf8): what an admin should know about how it was done (e.g. a key librnp cannot use, so
 *   that gpg encrypted instead); for the log record, never key material
 */
typedef struct {
  MgKind kind;
  const char *action;
  GPtrArray *keys;
  MgSignature *signature; /* (nullable): the verdict on the message's signature, when it has one */
  char *signed_with;      /* (nullable): fingerprint or serial of the key the gateway signed with */
  GPtrArray *notes;
  char *hp_stamp; /* (nullable): our verdict on the protected header fields restored from the payload (RFC 9788),
                   * the resinfo of hpread.h mg_hp_resinfo(), stamped beside the signature's */
} MgConvertResult;

void mg_convert_result_init (MgConvertResult *result);
void mg_convert_result_clear (MgConvertResult *result);
GBytes *mg_convert (GBytes *input, MgForm form, const char *const *recipients, const MgConvertKeys *keys,
                    MgConvertResult *result, GError **error);

G_END_DECLS
