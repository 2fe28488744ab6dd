/* rnp.h - OpenPGP encryption in-process with librnp, to encryption subkeys that keys/gnupg.c has already chosen.
 *
 * An MgRnp is one librnp context (rnp_ffi_t) with the public keys imported into it; it belongs to one MgGnupg store
 * and is used by one thread at a time, like the store. It never chooses a key: the caller names the subkeys. */
#pragma once

#include <glib.h>
#include <gmime/gmime.h>

#include "keys.h"

G_BEGIN_DECLS

typedef struct _MgRnp MgRnp;

MgRnp *mg_rnp_new (GError **error);
gboolean mg_rnp_holds (MgRnp *rnp, const char *fingerprint);
gboolean mg_rnp_import (MgRnp *rnp, const char *fingerprint, const char *subkey_fpr, GBytes *keyblock, GError **error);
GBytes *mg_rnp_encrypt (MgRnp *rnp, GBytes *plain, const char *const *fingerprints, const char *const *subkey_fprs,
                        gboolean armor, const char **cipher, GError **error);
/* mg_rnp_encrypt_stream - mg_rnp_encrypt() reading @plain from its position to its end and writing the message to @out
 * as it is made (neither whole in memory; ZLIB only for a known length up to 1 MiB). Both streams stay the caller's.
 * On failure (%FALSE, @error set) @out may hold part of a message: the caller discards it; a %MG_KEYS_ERROR_CRYPTO
 * failure (a key, no common cipher) comes before any byte is read or written. */
gboolean mg_rnp_encrypt_stream (MgRnp *rnp, GMimeStream *plain, GMimeStream *out, const char *const *fingerprints,
                                const char *const *subkey_fprs, gboolean armor, const char **cipher, GError **error);
void mg_rnp_free (MgRnp *rnp);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (MgRnp, mg_rnp_free)

G_END_DECLS
