/* dl.h - a library loaded only when first needed (dlopen), as librnp and libldap are: linked, each would cost every
 * process its loading time, whether the run needs it or not. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* MgDlOnce: a loader's state, zero-initialised, one per library and process */
typedef struct {
  gsize once;
  char *failed;
} MgDlOnce;

const char *mg_dl_load (MgDlOnce *state, const char *soname, const char *const *names, void **slots);

G_END_DECLS
