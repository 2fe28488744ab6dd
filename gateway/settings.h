/* settings.h - mimegate's configuration file (GKeyFile; DESIGN.md "Configuration file"). Every key has a default. */
#pragma once

#include <glib.h>

#include "detect.h"
#include "mg-ldap.h"

G_BEGIN_DECLS

#define MG_CONFIG_DEFAULT_PATH SYSCONFDIR "/mimegate/mimegate.conf"

#define MG_CONFIG_DEFAULT_X509_STORE SYSCONFDIR "/mimegate/x509"
#define MG_CONFIG_DEFAULT_REINJECT "/usr/sbin/sendmail -G -i"
#define MG_CONFIG_DEFAULT_TIMEOUT 120

typedef enum { MG_LOG_SYSLOG, MG_LOG_JSON, MG_LOG_NONE } MgLogTarget;

/**
 * MgOpenpgpEncrypt: who encrypts OpenPGP (without signing; signing and decryption are always GnuPG's).
 * @MG_OPENPGP_ENCRYPT_AUTO: librnp in-process in `serve` (loaded once per generation), gpg in one-shot commands, where
 *   loading librnp costs more than the gpg process it saves (measured: 6.3 ms of dlopen and start against 3.3 ms)
 * @MG_OPENPGP_ENCRYPT_GPG: always gpg
 * @MG_OPENPGP_ENCRYPT_RNP: always librnp where it can use the keys (no gpg process on the encryption path)
 */
typedef enum { MG_OPENPGP_ENCRYPT_AUTO, MG_OPENPGP_ENCRYPT_GPG, MG_OPENPGP_ENCRYPT_RNP } MgOpenpgpEncrypt;

/**
 * MgConfig: the [gateway] settings.
 * @gnupg_home: (nullable): %NULL for GnuPG's own default home; "none" in the file disables OpenPGP keys
 * @x509_store: (nullable): %NULL when "none" disables the X.509 store
 * @trust_model: "always" or "gnupg"
 * @min_validity: gpgme_validity_t the gnupg trust model requires (marginal, full, ultimate)
 * @passphrase: (nullable): for private/ keys, read from the file named by x509-passphrase-file
 * @authserv_id: the RFC 8601 authserv-id of our Authentication-Results (default: the host name)
 * @openpgp_encrypt: `openpgp-encrypt`: who encrypts OpenPGP (the faces decide what auto means)
 */
typedef struct {
  char *path; /* the file read, or NULL when the built-in defaults are in force */
  MgLimits limits;
  gboolean use_gnupg;
  char *gnupg_home;
  char *x509_store;
  gboolean trust_always;
  int min_validity;
  MgOpenpgpEncrypt openpgp_encrypt;
  char *passphrase;
  char *authserv_id;
  char **reinject; /* argv; the filter appends -f SENDER -- RCPT... */
  MgLogTarget log;
  char *log_path; /* with MG_LOG_JSON */
  char *spool_dir;
  gboolean harvest_smime;  /* `harvest = smime`: keep certificates of verified S/MIME signatures in harvested/ */
  guint timeout;           /* seconds for the whole filter run, reinjection included */
  GKeyFile *keyfile;       /* (nullable): the file as read, for the policy groups */
  char *text;              /* (nullable): its text, for line numbers in errors */
  MgLdapConfig *directory; /* (nullable): [directory], when the file has that group */
} MgConfig;

MgConfig *mg_config_load (const char *path, GError **error);
char *mg_config_where (const MgConfig *config, const char *group, const char *key);
void mg_config_free (MgConfig *config);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (MgConfig, mg_config_free)

G_END_DECLS
