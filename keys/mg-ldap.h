/* mg-ldap.h - (keys/ldap.c; not "ldap.h", which is OpenLDAP's) a directory (LDAP: OpenLDAP, Active Directory) as a
 * shared source of recipients' X.509 certificates, with its answers cached: in memory for a long-running process, in a
 * 0600 file shared by one-shot runs. This module only fetches; the X.509 store (x509.h) judges what it fetches exactly
 * as it judges certs/. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

#define MG_LDAP_DEFAULT_FILTER "(mail=%s)"
#define MG_LDAP_DEFAULT_ATTRIBUTES "userSMIMECertificate, userCertificate;binary"
#define MG_LDAP_DEFAULT_TIMEOUT 10
#define MG_LDAP_DEFAULT_CACHE_TTL 3600
#define MG_LDAP_DEFAULT_NEGATIVE_TTL 600
#define MG_LDAP_DEFAULT_STALE_TTL 86400

/**
 * MgLdapConfig: the [directory] settings.
 * @uri: one or more (space-separated) ldap://, ldaps:// or ldapi:// URIs
 * @starttls: StartTLS on an ldap:// connection, required to succeed
 * @filter: the search filter with %s where the address goes (escaped per RFC 4515)
 * @bind_dn: (nullable): simple bind as this DN; %NULL: anonymous
 * @bind_password: (nullable): with @bind_dn, read from bind-password-file
 * @ca_file: (nullable): the CA certificates the directory's TLS certificate must chain to (%NULL: libldap's own)
 * @timeout: seconds for connecting and for each operation
 * @cache_ttl, @negative_ttl: seconds a found (not found) answer is used without asking again
 * @stale_ttl: seconds a cached answer is still used while the directory cannot be reached
 * @attributes: the attributes that hold certificates (DER certificates or PKCS #7 certificate bags)
 * @cache_file: (nullable): where one-shot runs share their answers (%NULL: a file in the user's cache directory)
 * @openpgp_attributes: (nullable): the attributes that hold OpenPGP public keys (binary or armored); %NULL: none are
 *   read (the default)
 * @openpgp_full: keys from the directory count as fully valid under trust-model = gnupg (openpgp-validity = full)
 */
typedef struct {
  char *uri;
  gboolean starttls;
  char *base;
  char *filter;
  char *bind_dn;
  char *bind_password;
  char *ca_file;
  guint timeout;
  guint cache_ttl;
  guint negative_ttl;
  guint stale_ttl;
  char **attributes;
  char *cache_file;
  char **openpgp_attributes;
  gboolean openpgp_full;
} MgLdapConfig;

MgLdapConfig *mg_ldap_config_new (void);
void mg_ldap_config_free (MgLdapConfig *config);
gboolean mg_ldap_config_equal (const MgLdapConfig *a, const MgLdapConfig *b);
MgLdapConfig *mg_ldap_config_openpgp (const MgLdapConfig *config);

char *mg_ldap_filter_for (const char *filter, const char *address);

typedef struct _MgLdap MgLdap;

MgLdap *mg_ldap_new (const MgLdapConfig *config, gboolean shared_file);
MgLdap *mg_ldap_ref (MgLdap *dir);
const char *mg_ldap_name (MgLdap *dir);
gboolean mg_ldap_openpgp_full (MgLdap *dir);
const char *mg_ldap_cache_path (MgLdap *dir);
GPtrArray *mg_ldap_lookup (MgLdap *dir, const char *address, GError **error);
guint mg_ldap_adopt (MgLdap *dir, MgLdap *from);
void mg_ldap_free (MgLdap *dir);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (MgLdapConfig, mg_ldap_config_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (MgLdap, mg_ldap_free)

G_END_DECLS
