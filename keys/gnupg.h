/* gnupg.h - recipients' OpenPGP keys and the gateway's own secret keys in a GnuPG home, through GPGME; encryption to
 * the chosen keys in-process with librnp (keys/rnp.c) or with gpg. */
#pragma once

#include <glib.h>
#include <gmime/gmime.h>

#include "keys.h"

G_BEGIN_DECLS

/**
 * MgTrustModel: how a key's user ID must be valid to be used.
 * @MG_TRUST_ALWAYS: any key in the home is trusted (a keyring the gateway's admins manage)
 * @MG_TRUST_GNUPG: GnuPG's own validity for the user ID, at least the configured minimum
 */
typedef enum {
  MG_TRUST_ALWAYS,
  MG_TRUST_GNUPG,
} MgTrustModel;

/**
 * MgPgpKey: a usable OpenPGP key for one address: its primary fingerprint, and the encryption subkey to use.
 */
typedef struct {
  char *fingerprint;
  char *subkey_id;
  char *subkey_fpr; /* what encryption names, with '!', so that exactly this subkey is used */
  char *algorithm;  /* of the encryption subkey ("RSA", "ECDH", ...) */
  guint bits;
  gint64 created; /* of the encryption subkey */
  gint64 expires; /* of the encryption subkey; 0: never */
  char *user_id;
  char *address; /* (nullable): the address of the user ID that matched, as written there */
  gboolean has_secret;
  GBytes *block; /* (nullable): the key as a directory gave it (it is not in the home); encryption uses this */
  char *source;  /* (nullable): that directory ("ldap://host/base") */
} MgPgpKey;

/**
 * MgGnupgFetchFunc: a further source of recipients' OpenPGP keys (a directory), asked per lookup.
 * Returns: (transfer full) (element-type GBytes): key blocks (binary or armored), empty when none; %NULL with a
 * transient %MG_KEYS_ERROR_STORE when the source cannot answer now
 */
typedef GPtrArray *(*MgGnupgFetchFunc) (const char *address, gpointer data, GError **error);

typedef struct _MgGnupg MgGnupg;

MgGnupg *mg_gnupg_open (const char *home, MgTrustModel model, int min_validity, GError **error);
const char *mg_gnupg_home (MgGnupg *store);
MgPgpKey *mg_gnupg_lookup (MgGnupg *store, const char *address, GPtrArray *refused, GError **error);
GPtrArray *mg_gnupg_secret_keys (MgGnupg *store, GError **error);
gboolean mg_gnupg_expiries (MgGnupg *store, GPtrArray *out, GError **error);
guint mg_gnupg_processes (MgGnupg *store);
void mg_gnupg_set_max_output (MgGnupg *store, gsize max);
void mg_gnupg_set_address_index (MgGnupg *store, gboolean use);
void mg_gnupg_set_encrypt_with_gpg (MgGnupg *store, gboolean gpg);
void mg_gnupg_set_rnp_above (MgGnupg *store, gsize bytes);
void mg_gnupg_set_source (MgGnupg *store, const char *name, MgGnupgFetchFunc fetch, gpointer data,
                          GDestroyNotify destroy, gboolean full_validity);
GPtrArray *mg_gnupg_take_notes (MgGnupg *store);
GBytes *mg_gnupg_encrypt (MgGnupg *store, GBytes *plain, GPtrArray *keys, const char *signer, gboolean armor,
                          GError **error);
/* mg_gnupg_encrypt_stream - mg_gnupg_encrypt() reading @plain from its position to its end and writing the OpenPGP
 * message to @out as it is made (librnp or gpg, as mg_gnupg_encrypt() routes; no compression over 1 MiB or for an
 * unknown length). Both streams stay the caller's. On failure (%FALSE, @error set) @out may hold part of a message:
 * the caller discards it. */
gboolean mg_gnupg_encrypt_stream (MgGnupg *store, GMimeStream *plain, GMimeStream *out, GPtrArray *keys,
                                  const char *signer, gboolean armor, GError **error);
char *mg_gnupg_signer (MgGnupg *store, const char *address, GError **error);
GBytes *mg_gnupg_sign (MgGnupg *store, GBytes *content, const char *signer, gboolean clear, char **micalg,
                       GError **error);
GBytes *mg_gnupg_decrypt (MgGnupg *store, GBytes *cipher, char **used_key, MgSignature **signature, GError **error);
/* mg_gnupg_decrypt_stream - mg_gnupg_decrypt() reading @cipher from its position to its end and writing the clear
 * text to @out as gpg yields it, at most max_output bytes (else %MG_KEYS_ERROR_LIMIT, as mg_gnupg_decrypt()). Both
 * streams stay the caller's; @used_key and @signature as mg_gnupg_decrypt(), set only on success. On failure @out may
 * hold part of the clear text: the caller discards it (a spool file: dropped, never passed on). */
gboolean mg_gnupg_decrypt_stream (MgGnupg *store, GMimeStream *cipher, GMimeStream *out, char **used_key,
                                  MgSignature **signature, GError **error);
MgSignature *mg_gnupg_verify (MgGnupg *store, GBytes *content, GBytes *signature);
void mg_gnupg_free (MgGnupg *store);
void mg_pgp_key_free (MgPgpKey *key);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (MgGnupg, mg_gnupg_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (MgPgpKey, mg_pgp_key_free)

G_END_DECLS
