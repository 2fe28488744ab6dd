/* settings.h - mimegate's configuration file (GKeyFile; DESIGN.md "Configuration file"). Every key has a default. */
#pragma once

#include <glib.h>

#include "detect.h"

G_BEGIN_DECLS

#define MG_CONFIG_DEFAULT_PATH SYSCONFDIR "/mimegate/mimegate.conf"

typedef struct {
  char *path; /* the file read, or NULL when the built-in defaults are in force */
  MgLimits limits;
} MgConfig;

MgConfig *mg_config_load (const char *path, GError **error);
void mg_config_free (MgConfig *config);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (MgConfig, mg_config_free)

G_END_DECLS
