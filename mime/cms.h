/* cms.h - key-less reading of CMS objects (RFC 5652, RFC 5083, RFC 3274) with OpenSSL: what S/MIME carries; the
 * operations with keys are keys/smime.h. */
#pragma once

#include <glib.h>

#include "info.h"
#include "x509.h"

G_BEGIN_DECLS

typedef enum {
  MG_CMS_UNKNOWN,        /* not CMS */
  MG_CMS_ENVELOPED,      /* enveloped-data */
  MG_CMS_AUTH_ENVELOPED, /* authEnveloped-data (AES-GCM, ChaCha20-Poly1305) */
  MG_CMS_SIGNED,         /* signed-data, with signers */
  MG_CMS_CERTS_ONLY,     /* signed-data without signers: a certificate bundle */
  MG_CMS_COMPRESSED,     /* compressed-data */
  MG_CMS_OTHER,          /* a CMS type S/MIME does not use for mail (data, digested, encrypted) */
} MgCmsType;

MgCmsType mg_cms_inspect (const guint8 *data, gsize len, MgCryptoInfo *info, GError **error);
gboolean mg_cms_sniff (const guint8 *data, gsize len);
GBytes *mg_cms_uncompress (const guint8 *data, gsize len, gsize max, GError **error);
GBytes *mg_cms_head (const guint8 *data, gsize len);

G_END_DECLS
