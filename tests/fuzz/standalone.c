/* standalone.c - runs a harness without libFuzzer: on each FILE given (a directory: every file in it), or on stdin.
 * This is the replay of the seed and regression samples in every test build, and the AFL++ target
 * (afl-clang-fast, `afl-fuzz -i seeds -o out -- fuzz-detect-replay @@`). */
#include "config.h"

#include <stdio.h>

#include <glib.h>

#include "fuzz.h"

static int
one (const char *path, guint *count)
{
  g_autofree char *data = NULL;
  gsize len = 0;
  g_autoptr (GError) error = NULL;

  if (g_getenv ("MG_FUZZ_VERBOSE") != NULL)
    fprintf (stderr, "%s\n", path);
  if (!g_file_get_contents (path, &data, &len, &error)) {
    fprintf (stderr, "%s\n", error->message);
    return 1;
  }
  LLVMFuzzerTestOneInput ((const uint8_t *) data, len);
  (*count)++;
  return 0;
}

/* walk - every regular file below @path (directories in name order is not needed: each input stands alone) */
static int
walk (const char *path, guint *count, guint depth)
{
  int status = 0;

  if (!g_file_test (path, G_FILE_TEST_IS_DIR))
    return g_file_test (path, G_FILE_TEST_IS_REGULAR) ? one (path, count) : 0;
  if (depth < 8) {
    g_autoptr (GDir) d = g_dir_open (path, 0, NULL);
    const char *name;
    while (d != NULL && (name = g_dir_read_name (d)) != NULL) {
      g_autofree char *p = g_build_filename (path, name, NULL);
      status |= walk (p, count, depth + 1);
    }
  }
  return status;
}

int
main (int argc, char **argv)
{
  guint count = 0;
  int status = 0;

  LLVMFuzzerInitialize (&argc, &argv);
  if (argc < 2) {
    GByteArray *in = g_byte_array_new ();
    guint8 buf[65536];
    size_t n;
    while ((n = fread (buf, 1, sizeof buf, stdin)) > 0)
      g_byte_array_append (in, buf, (guint) n);
    LLVMFuzzerTestOneInput (in->data, in->len);
    g_byte_array_unref (in);
    return 0;
  }
  for (int i = 1; i < argc; i++)
    status |= walk (argv[i], &count, 0);
  printf ("%u inputs, no crash\n", count);
  return status;
}
