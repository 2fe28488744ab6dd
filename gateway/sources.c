/* sources.c - turns the paths an admin gives into messages: a file is one message, or an mbox of many (RFC 4155,
 * split by GMime's parser in mbox mode, mboxrd ">From " quoting undone); a
 * directory is walked in name order (a Maildir's tmp/ is skipped: messages there are still being written); "-" is
 * standard input.
 *
 * Files are mapped, not read, so that a corpus of large messages costs little memory. Symbolic links to directories
 * are not followed (no loops), and the walk depth is bounded. */
#include "config.h"

#include "sources.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <glib/gi18n.h>
#include <glib/gstdio.h>

#include "mg-gmime.h"

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

/* unquote - the message as it was sent: mboxrd quoting undone, one '>' off every line that is ">From ", ">>From ",
 * ... (RFC 4155; for mboxo files, whose writers quoted only "From ", this is the same reading). %NULL when no line
 * is quoted, so that the common case is not copied. */
static GByteArray *
unquote (const guint8 *data, gsize len)
{
  GByteArray *out = NULL;
  gsize copied = 0;

  for (gsize pos = 0; pos < len;) {
    const guint8 *nl = memchr (data + pos, '\n', len - pos);
    gsize next = nl ? (gsize) (nl - data) + 1 : len, q = pos;
    while (q < next && data[q] == '>')
      q++;
    if (q > pos && next - q >= 5 && memcmp (data + q, "From ", 5) == 0) {
      if (out == NULL)
        out = g_byte_array_sized_new ((guint) MIN (len, G_MAXUINT));
      g_byte_array_append (out, data + copied, (guint) (pos - copied));
      copied = pos + 1; /* the first '>' is dropped */
    }
    pos = next;
  }
  if (out != NULL)
    g_byte_array_append (out, data + copied, (guint) (len - copied));
  return out;
}

/* deliver - one message of an mbox, its quoting undone */
static void
deliver (const char *path, guint index, const guint8 *data, gsize len, guint64 done, MgMessageFunc fn,
         gpointer user_data)
{
  g_autoptr (GByteArray) plain = unquote (data, len);

  if (plain != NULL)
    fn (path, index, TRUE, plain->data, plain->len, done, user_data);
  else
    fn (path, index, TRUE, data, len, done, user_data);
}

/* next_from - the offset of the next line after @pos that starts with "From ", or @len */
static gsize
next_from (const guint8 *data, gsize len, gsize pos)
{
  while (pos < len) {
    const guint8 *nl = memchr (data + pos, '\n', len - pos);
    if (nl == NULL)
      return len;
    pos = (gsize) (nl - data) + 1;
    if (len - pos >= 5 && memcmp (data + pos, "From ", 5) == 0)
      return pos;
  }
  return len;
}

/* split - calls @fn for each message of @data (read again from @stream): one, or each of an mbox.
 *
 * GMime's parser in mbox mode finds the messages: every line that starts with "From " begins one, with or without
 * an empty line before it, inside a MIME part too (mboxo and mboxrd writers quote such lines in a body, so an
 * unquoted one is a separator). Each message is handed on as the bytes of the file, its "From " line included, so
 * that detection sees exactly what is there. Where such a line is followed by something GMime cannot read as a
 * header (a "From " sentence a writer failed to quote), GMime's parser stops for good; that piece is then handed on
 * as a message of its own, and a new parser starts at the next "From " line, so that nothing after it is lost. */
static void
split (const char *path, const guint8 *data, gsize len, GMimeStream *stream, MgMessageFunc fn, gpointer user_data)
{
  guint index = 0;
  gsize start = 0, base = 0;

  if (len < 5 || memcmp (data, "From ", 5) != 0) {
    fn (path, 1, FALSE, data, len, len, user_data);
    return;
  }
  while (base < len) {
    g_autoptr (GMimeStream) sub = g_mime_stream_substream (stream, (gint64) base, (gint64) len);
    g_autoptr (GMimeParser) parser = g_mime_parser_new_with_stream (sub);
    gboolean stuck = FALSE;
    g_mime_parser_set_format (parser, GMIME_FORMAT_MBOX);
    while (!stuck && !g_mime_parser_eos (parser)) {
      g_autoptr (GMimeMessage) message = g_mime_parser_construct_message (parser, NULL);
      gint64 offset = g_mime_parser_get_mbox_marker_offset (parser);
      gsize marker = offset >= 0 ? (gsize) offset : start; /* a substream's offsets are those of the whole stream */
      stuck = message == NULL;
      if (marker > start && marker <= len) { /* the message before this one ends where this one begins */
        deliver (path, ++index, data + start, marker - start, marker, fn, user_data);
        start = marker;
      }
    }
    if (!stuck)
      break;
    base = next_from (data, len, MAX (start, base)); /* always forward */
  }
  /* the last message */
  if (start < len || index == 0)
    deliver (path, ++index, data + start, len - start, len, fn, user_data);
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
  g_autoptr (GMimeStream) stream = NULL;
  int fd;

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
    stream = g_mime_stream_mem_new_with_byte_array (buf);
    g_mime_stream_mem_set_owner (GMIME_STREAM_MEM (stream), FALSE);
    split (path, buf->data, buf->len, stream, fn, user_data);
    return TRUE;
  }
  map = g_mapped_file_new (path, FALSE, error);
  if (map == NULL)
    return FALSE;
  fd = g_open (path, O_RDONLY | O_CLOEXEC, 0);
  if (fd < 0) {
    int saved = errno;
    g_set_error (error, G_FILE_ERROR, g_file_error_from_errno (saved), "%s", g_strerror (saved));
    return FALSE;
  }
  stream = g_mime_stream_fs_new (fd); /* owns fd; the parser reads the file, the messages are the mapped bytes */
  split (path, (const guint8 *) g_mapped_file_get_contents (map), g_mapped_file_get_length (map), stream, fn,
         user_data);
  return TRUE;
}
