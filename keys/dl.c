/* dl.c - loading a library on first use and resolving its functions into a caller's table (dl.h). */
#include "config.h"

#include "dl.h"

#include <dlfcn.h>

/**
 * mg_dl_load - @soname loaded and each of @names (%NULL-terminated) resolved into @slots, in order, once per process
 * (@state); later calls only answer.
 *
 * Returns: (nullable): %NULL when every function is there, else why not (owned by @state), e.g. "librnp.so.0 cannot
 * be loaded" or "librnp.so.0 lacks rnp_ffi_create"
 */
const char *
mg_dl_load (MgDlOnce *state, const char *soname, const char *const *names, void **slots)
{
  if (g_once_init_enter (&state->once)) {
    void *lib = dlopen (soname, RTLD_NOW | RTLD_LOCAL);
    if (lib == NULL)
      state->failed = g_strdup_printf ("%s cannot be loaded", soname);
    for (guint i = 0; lib != NULL && state->failed == NULL && names[i] != NULL; i++)
      if ((slots[i] = dlsym (lib, names[i])) == NULL)
        state->failed = g_strdup_printf ("%s lacks %s", soname, names[i]);
    g_once_init_leave (&state->once, 1);
  }
  return state->failed;
}
