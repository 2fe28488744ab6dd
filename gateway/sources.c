/* sources.c - turns the paths an admin gives into messages: a file is one message, or an mbox of many (RFC 4155); a
 * directory is walked in name order (a Maildir's tmp/ is skipped: messages there are still being written); "-" is
 * standard input.
 *
 * Files are mapped, not read, so that a corpus of large messages costs little memory. Symbolic links to directories
 * are not followed (no loops), and the walk depth is bounded. */
#include "config.h"

#include "sources.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <glib/gi18n.h>
#include <glib/gstdio.h>

#define MAX_WALK_DEPTH 64

static void
source_file_free (MgSourceFile *f)
{
  g_free (f->path);
  g_free (f);
}

static void
add_file (GPtrArray *files, const char *path, guint64 size)
{
  MgSourceFile *f = g_new0 (MgSourceFile, 1);

  f->path = g_strdup (path);
  f->size = size;
  g_ptr_array_add (files, f);
}

static int
compare_names (gconstpointer a, gconstpointer b)
{
  return strcmp (*(char *const *) a, *(char *const *) b);
}

static gboolean
is_dir (const char *path)
{
  GStatBuf st;

  return g_lstat (path, &st) == 0 && S_ISDIR (st.st_mode);
}

/* is_maildir - a directory with cur/ and new/ */
static gboolean
is_maildir (const char *dir)
{
  g_autofree char *cur = g_build_filename (dir, "cur", NULL);
  g_autofree char *new_ = g_build_filename (dir, "new", NULL);

  return is_dir (cur) && is_dir (new_);
}

static void collect (GPtrArray *files, const char *path, guint depth, gboolean top, MgSourceErrorFunc on_error,
                     gpointer user_data);

static void
collect_dir (GPtrArray *files, const char *dir, guint depth, MgSourceErrorFunc on_error, gpointer user_data)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GDir) d = g_dir_open (dir, 0, &error);
  g_autoptr (GPtrArray) names = g_ptr_array_new_with_free_func (g_free);
  gboolean maildir;
  const char *name;

  if (d == NULL) {
    on_error (dir, error->message, user_data);
    return;
  }
  if (depth >= MAX_WALK_DEPTH) {
    on_error (dir, _ ("directories nested too deep; not walked further"), user_data);
    return;
  }
  maildir = is_maildir (dir);
  while ((name = g_dir_read_name (d)) != NULL)
    if (!(maildir && strcmp (name, "tmp") == 0))
      g_ptr_array_add (names, g_strdup (name));
  g_ptr_array_sort (names, compare_names);
  for (guint i = 0; i < names->len; i++) {
    g_autofree char *child = g_build_filename (dir, (const char *) g_ptr_array_index (names, i), NULL);
    collect (files, child, depth + 1, FALSE, on_error, user_data);
  }
}

static void
collect (GPtrArray *files, const char *path, guint depth, gboolean top, MgSourceErrorFunc on_error, gpointer user_data)
{
  GStatBuf st;

  if (strcmp (path, "-") == 0 && top) {
    add_file (files, path, 0);
    return;
  }
  /* given paths are followed; links met inside a walk are followed only to files */
  if ((top ? g_stat (path, &st) : g_lstat (path, &st)) != 0) {
    on_error (path, g_strerror (errno), user_data);
    return;
  }
  if (!top && S_ISLNK (st.st_mode)) {
    if (g_stat (path, &st) != 0 || S_ISDIR (st.st_mode))
      return;
  }
  if (S_ISDIR (st.st_mode))
    collect_dir (files, path, depth, on_error, user_data);
  else if (S_ISREG (st.st_mode))
    add_file (files, path, (guint64) st.st_size);
  else if (top)
    on_error (path, _ ("not a regular file or directory"), user_data);
}

/**
 * mg_sources_collect - every file under @paths, in the order given (directories in name order).
 * @on_error: called once per path that cannot be read, with a translated reason
 *
 * Returns: (transfer full) (element-type MgSourceFile)
 */
GPtrArray *
mg_sources_collect (char **paths, MgSourceErrorFunc on_error, gpointer user_data)
{
  GPtrArray *files = g_ptr_array_new_with_free_func ((GDestroyNotify) source_file_free);

  for (guint i = 0; paths[i] != NULL; i++)
    collect (files, paths[i], 0, TRUE, on_error, user_data);
  return files;
}

/* is_from_line - an mbox separator: "From " at the start of a line that follows a blank line (or starts the file) */
static gboolean
is_from_line (const guint8 *data, gsize len, gsize pos)
{
  if (len - pos < 5 || memcmp (data + pos, "From ", 5) != 0)
    return FALSE;
  if (pos == 0)
    return TRUE;
  return (pos >= 2 && data[pos - 1] == '\n' && data[pos - 2] == '\n') ||
         (pos >= 3 && data[pos - 1] == '\n' && data[pos - 2] == '\r' && data[pos - 3] == '\n');
}

/* split - calls @fn for each message of @data: one, or each of an mbox */
static void
split (const char *path, const guint8 *data, gsize len, MgMessageFunc fn, gpointer user_data)
{
  guint index = 0;
  gsize start = 0;

  if (!is_from_line (data, len, 0)) {
    fn (path, 1, FALSE, data, len, len, user_data);
    return;
  }
  while (start < len) {
    gsize pos = start + 5, end = len;
    while (pos < len) {
      const guint8 *nl = memchr (data + pos, '\n', len - pos);
      if (nl == NULL)
        break;
      pos = (gsize) (nl - data) + 1;
      if (is_from_line (data, len, pos)) {
        end = pos;
        break;
      }
    }
    fn (path, ++index, TRUE, data + start, end - start, end, user_data);
    start = end;
  }
}

/**
 * mg_source_read - maps @path ("-": reads stdin) and calls @fn for each message in it.
 *
 * Returns: FALSE with @error set when the file cannot be read.
 */
gboolean
mg_source_read (const char *path, MgMessageFunc fn, gpointer user_data, GError **error)
{
  g_autoptr (GMappedFile) map = NULL;

  if (strcmp (path, "-") == 0) {
    g_autoptr (GByteArray) buf = g_byte_array_new ();
    guint8 chunk[65536];
    size_t n;
    while ((n = fread (chunk, 1, sizeof chunk, stdin)) > 0)
      g_byte_array_append (buf, chunk, (guint) n);
    if (ferror (stdin)) {
      g_set_error_literal (error, G_FILE_ERROR, G_FILE_ERROR_IO, _ ("cannot read standard input"));
      return FALSE;
    }
    split (path, buf->data, buf->len, fn, user_data);
    return TRUE;
  }
  map = g_mapped_file_new (path, FALSE, error);
  if (map == NULL)
    return FALSE;
  split (path, (const guint8 *) g_mapped_file_get_contents (map), g_mapped_file_get_length (map), fn, user_data);
  return TRUE;
}
