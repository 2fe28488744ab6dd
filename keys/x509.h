/* x509.h - an X.509 store directory for S/MIME: recipients' certificates, the trusted collection, CRLs, and the
 * private keys the gateway holds. Read once per process, whole or through its address index; lookups by address are
 * hash lookups (or a binary search in the index) after that. A store is safe to share between threads. */
#pragma once

#include <glib.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "keys.h"

G_BEGIN_DECLS

/**
 * MgX509Cert: one certificate with what `mimegate keys` shows of it. Owns @cert.
 * @fingerprint: SHA-256 of the DER, upper-case hex
 */
typedef struct {
  X509 *cert;
  char *fingerprint;
  char *serial; /* "0x…" */
  char *issuer;
  char *subject;
  char *algorithm; /* "RSA 2048", "EC prime256v1", ... */
  gint64 not_before;
  gint64 not_after;
  char *path; /* (nullable): the store file it came from, relative to the store ("certs/NAME", "harvested/NAME") */
} MgX509Cert;

/**
 * MgX509Private: a key the gateway holds (private/), with one certificate for it (a key with several certificates
 * is one MgX509Private per certificate).
 * @path: the private/ file that holds the key
 * @chain: the intermediates between @cert and ca/ (never a self-signed root), built before the store hands the key
 *   out; they travel with every signature made with @key (RFC 8550 section 2.3)
 */
typedef struct {
  char *path;
  EVP_PKEY *key;
  MgX509Cert *cert;
  STACK_OF (X509) * chain;
} MgX509Private;

typedef struct _MgX509Store MgX509Store;

MgX509Store *mg_x509_store_open (const char *dir, const char *passphrase, GError **error);
MgX509Store *mg_x509_store_open_indexed (const char *dir, const char *passphrase, const char *cache_dir,
                                         GError **error);
MgX509Store *mg_x509_store_whole (MgX509Store *store);
const char *mg_x509_store_dir (MgX509Store *store);
const MgX509Cert *mg_x509_store_lookup (MgX509Store *store, const char *address, GPtrArray *refused);
char *mg_x509_cert_address (const MgX509Cert *cert, const char *address);
GPtrArray *mg_x509_store_private_keys (MgX509Store *store);
const MgX509Private *mg_x509_store_signer (MgX509Store *store, const char *address);
GPtrArray *mg_x509_store_warnings (MgX509Store *store);
gboolean mg_x509_cert_harvested (const MgX509Cert *cert);
GPtrArray *mg_x509_store_expiries (MgX509Store *store);
gboolean mg_x509_store_harvest (MgX509Store *store, GPtrArray *certs, const char *address, GPtrArray *stored,
                                GError **error);
X509_STORE *mg_x509_store_trusted (MgX509Store *store);
STACK_OF (X509) * mg_x509_store_intermediates (MgX509Store *store);
void mg_x509_store_free (MgX509Store *store);

/**
 * MgX509FetchFunc: a further source of recipients' certificates (a directory), asked per lookup.
 *
 * Returns: (transfer full) (element-type GBytes) (nullable): the values it holds for @address (DER certificates or
 * PKCS #7 bags of them), empty for none; %NULL with a transient @error when it cannot answer
 */
typedef GPtrArray *(*MgX509FetchFunc) (const char *address, gpointer data, GError **error);

void mg_x509_store_set_source (MgX509Store *store, const char *name, MgX509FetchFunc fetch, gpointer data,
                               GDestroyNotify destroy);
const MgX509Cert *mg_x509_store_lookup_checked (MgX509Store *store, const char *address, GPtrArray *refused,
                                                GError **error);
const char *mg_x509_store_cert_source (MgX509Store *store, const MgX509Cert *cert);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (MgX509Store, mg_x509_store_free)

G_END_DECLS
