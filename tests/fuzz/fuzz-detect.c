/* fuzz-detect.c - harness 1: parse and detect one message (everything `inspect` and `scan` do without keys). */
#include "config.h"

#include <gmime/gmime.h>

#include "detect.h"
#include "fuzz.h"

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  mg_fuzz_strict ();
  g_mime_init ();
  return 0;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  MgLimits limits;
  MgReport *report;

  mg_limits_init_default (&limits);
  report = mg_detect_data (data, size, &limits);
  mg_report_free (report);
  return 0;
}
