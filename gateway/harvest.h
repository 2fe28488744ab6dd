/* harvest.h - certificates kept from verified S/MIME signatures (`harvest = smime`). */
#pragma once

#include <glib.h>

#include "settings.h"
#include "x509.h"

G_BEGIN_DECLS

gboolean mg_harvest_message (const MgConfig *config, MgX509Store *store, GBytes *input, const MgSignature *sig,
                             GPtrArray *notes);

G_END_DECLS
