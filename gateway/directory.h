/* directory.h - the [directory] group: reading it, and hanging the directory onto an X.509 store as a source. */
#pragma once

#include <glib.h>

#include "mg-ldap.h"
#include "settings.h"
#include "x509.h"

G_BEGIN_DECLS

gboolean mg_directory_read (MgConfig *config, GError **error);
MgLdap *mg_directory_attach (const MgConfig *config, MgX509Store *store, gboolean long_running);

G_END_DECLS
