/* settings.h - mimegate's configuration file (GKeyFile; DESIGN.md "Configuration file"). Every key has a default. */
#pragma once

#include <glib.h>

#include "detect.h"

G_BEGIN_DECLS

#define MG_CONFIG_DEFAULT_PATH SYSCONFDIR "/mimegate/mimegate.conf"

#define MG_CONFIG_DEFAULT_X509_STORE SYSCONFDIR "/mimegate/x509"
#define MG_CONFIG_DEFAULT_REINJECT "/usr/sbin/sendmail -G -i"
#define MG_CONFIG_DEFAULT_TIMEOUT 120

typedef enum { MG_LOG_SYSLOG, MG_LOG_JSON, MG_LOG_NONE } MgLogTarget;

/**
 * MgConfig: the [gateway] settings.
 * @gnupg_home: (nullable): %NULL for GnuPG's own default home; "none" in the file disables OpenPGP keys
 * @x509_store: (nullable): %NULL when "none" disables the X.509 store
 * @trust_model: "always" or "gnupg"
 * @min_validity: gpgme_validity_t the gnupg trust model requires (marginal, full, ultimate)
 * @passphrase: (nullable): for private/ keys, read from the file named by x509-passphrase-file
 * @authserv_id: the RFC 8601 authserv-id of our Authentication-Results (default: the host name)
 * @encrypt_with_gpg: `openpgp-encrypt = gpg`: OpenPGP encryption always runs gpg (default auto: librnp in-process
 *   where it can use the recipients' keys)
 */
typedef struct {
  char *path; /* the file read, or NULL when the built-in defaults are in force */
  MgLimits limits;
  gboolean use_gnupg;
  char *gnupg_home;
  char *x509_store;
  gboolean trust_always;
  int min_validity;
  gboolean encrypt_with_gpg;
  char *passphrase;
  char *authserv_id;
  char **reinject; /* argv; the filter appends -f SENDER -- RCPT... */
  MgLogTarget log;
  char *log_path; /* with MG_LOG_JSON */
  char *spool_dir;
  guint timeout;     /* seconds for the whole filter run, reinjection included */
  GKeyFile *keyfile; /* (nullable): the file as read, for the policy groups */
  char *text;        /* (nullable): its text, for line numbers in errors */
} MgConfig;

MgConfig *mg_config_load (const char *path, GError **error);
char *mg_config_where (const MgConfig *config, const char *group, const char *key);
void mg_config_free (MgConfig *config);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (MgConfig, mg_config_free)

G_END_DECLS
