/* mg-ssl.h - g_autoptr cleanups for the OpenSSL and GPGME types mimegate uses.
 *
 * Declared once here (STYLE.md rule 3) so that every module frees OpenSSL and GPGME objects the same way. */
#pragma once

#include <glib.h>
#include <gpgme.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/pem.h>
#include <openssl/cms.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

G_DEFINE_AUTOPTR_CLEANUP_FUNC (BIO, BIO_free_all)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (CMS_ContentInfo, CMS_ContentInfo_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (X509, X509_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (X509_NAME, X509_NAME_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (EVP_MD_CTX, EVP_MD_CTX_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (ASN1_OBJECT, ASN1_OBJECT_free)

static inline void
mg_x509_stack_free (STACK_OF (X509) * certs)
{
  sk_X509_pop_free (certs, X509_free);
}
typedef STACK_OF (X509) MgX509Stack;
G_DEFINE_AUTOPTR_CLEANUP_FUNC (MgX509Stack, mg_x509_stack_free)

typedef struct gpgme_context MgGpgmeCtx;
G_DEFINE_AUTOPTR_CLEANUP_FUNC (MgGpgmeCtx, gpgme_release)
