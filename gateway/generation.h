/* generation.h - the long-lived state one message is handled with: the configuration and the key stores it names,
 * loaded once. `filter` loads one per run; `serve` keeps one, reloads a new one beside it when a file it read changes
 * (or on SIGHUP) and swaps it in; every transaction holds a reference to the generation it started with. */
#pragma once

#include <glib.h>

#include "gnupg.h"
#include "settings.h"
#include "x509.h"

G_BEGIN_DECLS

typedef struct _MgGeneration MgGeneration;

MgGeneration *mg_generation_load (const char *conf_path, gboolean long_running, GError **error);
void mg_generation_adopt (MgGeneration *gen, MgGeneration *from);
MgGeneration *mg_generation_ref (MgGeneration *gen);
void mg_generation_unref (MgGeneration *gen);
const MgConfig *mg_generation_config (MgGeneration *gen);
const GError *mg_generation_store_error (MgGeneration *gen);
MgX509Store *mg_generation_x509 (MgGeneration *gen);
MgGnupg *mg_generation_take_gnupg (MgGeneration *gen, GError **error);
void mg_generation_give_gnupg (MgGeneration *gen, MgGnupg *store);
gboolean mg_generation_stale (MgGeneration *gen);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (MgGeneration, mg_generation_unref)

G_END_DECLS
