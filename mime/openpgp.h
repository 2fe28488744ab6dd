/* openpgp.h - a key-less reader of OpenPGP packet streams (RFC 4880, RFC 9580).
 *
 * It reads only the packet headers and the unencrypted packets that name keys: who a message is encrypted to, whether
 * it has integrity protection, who signed, which keys a key block carries. It never decrypts. */
#pragma once

#include <glib.h>

#include "info.h"

G_BEGIN_DECLS

/**
 * MgOpenpgpType: what a packet stream is, by its first meaningful packet.
 */
typedef enum {
  MG_OPENPGP_UNKNOWN,   /* not OpenPGP */
  MG_OPENPGP_ENCRYPTED, /* session key packets and/or encrypted data */
  MG_OPENPGP_SIGNED,    /* one-pass signature, compressed or literal data: a signed (or plain) message */
  MG_OPENPGP_SIGNATURE, /* detached signature(s) */
  MG_OPENPGP_KEY,       /* public or secret key block */
} MgOpenpgpType;

MgOpenpgpType mg_openpgp_inspect (const guint8 *data, gsize len, MgCryptoInfo *info);
gboolean mg_openpgp_sniff (const guint8 *data, gsize len);
const char *mg_openpgp_pubkey_algo_name (guint algo);
const char *mg_openpgp_hash_algo_name (guint algo);

G_END_DECLS
