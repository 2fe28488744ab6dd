/* directory.h - the [directory] group: reading it, and hanging the directory onto an X.509 store as a source. */
#pragma once

#include <glib.h>

#include "gnupg.h"
#include "mg-ldap.h"
#include "settings.h"
#include "x509.h"

G_BEGIN_DECLS

gboolean mg_directory_read (MgConfig *config, GError **error);
MgLdap *mg_directory_attach (const MgConfig *config, MgX509Store *store, gboolean long_running);
MgLdap *mg_directory_openpgp (const MgConfig *config, gboolean long_running);
void mg_directory_attach_openpgp (MgLdap *dir, MgGnupg *store);

G_END_DECLS
