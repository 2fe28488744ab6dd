/* fuzz-config.c - harness 3: the configuration parser (GKeyFile, [gateway] and every policy group), then the policy
 * of a few recipients. The input is written to a private temporary file, as mg_config_load reads a path. */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <glib.h>
#include <glib/gstdio.h>

#include "fuzz.h"
#include "policy.h"
#include "settings.h"

static char *path;

static void
remove_file (void)
{
  g_unlink (path);
}

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  mg_fuzz_strict ();
  int fd = g_file_open_tmp ("mg-fuzz-conf-XXXXXX", &path, NULL);

  g_assert_cmpint (fd, >=, 0);
  close (fd);
  atexit (remove_file);
  return 0;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  static const char *const who[] = { "a@example.org", "b@sub.example.org", "c@partner.example", "", "x@" };
  g_autoptr (GError) error = NULL;
  g_autoptr (MgConfig) config = NULL;

  if (!g_file_set_contents_full (path, (const char *) data, (gssize) size, G_FILE_SET_CONTENTS_NONE, 0600, NULL))
    return 0;
  if (truncate (path, (off_t) size) != 0)
    return 0;
  config = mg_config_load (path, &error);
  g_assert_true ((config == NULL) == (error != NULL));
  if (config == NULL)
    return 0;
  for (gsize i = 0; i < G_N_ELEMENTS (who); i++) {
    g_autoptr (MgPolicy) p = mg_policy_for (config, who[i]);
    g_assert_nonnull (p->rule);
    g_autofree char *where = mg_config_where (config, "default", "encrypt");
    g_assert_nonnull (where);
  }
  return 0;
}
