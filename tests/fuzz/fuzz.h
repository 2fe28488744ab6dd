/* fuzz.h - the entry point every harness implements (libFuzzer's), and what the standalone driver calls. */
#pragma once

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);
int LLVMFuzzerInitialize (int *argc, char ***argv);

#include <glib.h>

#include <stdlib.h>

static inline void
mg_fuzz_abort_handler (const gchar *domain, GLogLevelFlags level, const gchar *message, gpointer data)
{
  g_log_default_handler (domain, level, message, data);
  if (level & (G_LOG_LEVEL_ERROR | G_LOG_LEVEL_CRITICAL | G_LOG_LEVEL_WARNING))
    abort (); /* SIGABRT: libFuzzer saves the input (a breakpoint trap would not) */
}

/* mg_fuzz_strict - a GLib critical or warning (a failed precondition: a bug of ours) aborts like a crash */
static inline void
mg_fuzz_strict (void)
{
  g_log_set_default_handler (mg_fuzz_abort_handler, NULL);
}
