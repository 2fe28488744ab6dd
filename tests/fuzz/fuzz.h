/* fuzz.h - the entry point every harness implements (libFuzzer's), and what the standalone driver calls. */
#pragma once

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);
int LLVMFuzzerInitialize (int *argc, char ***argv);

#include <glib.h>

/* mg_fuzz_strict - a GLib critical or warning (a failed precondition: a bug of ours) aborts like a crash */
static inline void
mg_fuzz_strict (void)
{
  g_log_set_always_fatal (G_LOG_FATAL_MASK | G_LOG_LEVEL_CRITICAL | G_LOG_LEVEL_WARNING);
}
