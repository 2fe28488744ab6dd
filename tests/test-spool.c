/* test-spool.c - the spool (mime/spool.h): content up to the threshold stays in memory, beyond it in a 0600 file that
 * has no name and leaves nothing in the directory; the finished content is the same bytes either way (a mapping of
 * the file, whose descriptor mg_spool_fd_of() finds); GMime writes into it and parses from a GBytes in place, its
 * parts substreams of that one stream; a failure to spool is an error, never a silent truncation. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gio/gio.h>
#include <gmime/gmime.h>

#include "mg-gmime.h"
#include "spool.h"
#include "testutil.h"

/* pattern - @len bytes that differ at every offset modulo 251, so that a shifted or dropped chunk shows */
static GBytes *
pattern (gsize len)
{
  guint8 *p = g_malloc (len ? len : 1);

  for (gsize i = 0; i < len; i++)
    p[i] = (guint8) (i % 251);
  return g_bytes_new_take (p, len);
}

static void
test_memory (void)
{
  g_autofree char *dir = mg_test_tmpdir ();
  g_autoptr (MgSpool) spool = mg_spool_new (dir, 1000);
  g_autoptr (GBytes) want = pattern (1000);
  g_autoptr (GBytes) got = NULL;
  g_autoptr (GError) error = NULL;

  g_assert_true (mg_spool_write (spool, g_bytes_get_data (want, NULL), 600, &error));
  g_assert_true (mg_spool_write (spool, (const guint8 *) g_bytes_get_data (want, NULL) + 600, 400, &error));
  g_assert_cmpuint (mg_spool_size (spool), ==, 1000);
  g_assert_cmpuint (mg_test_dir_entries (dir), ==, 0);
  got = mg_spool_finish (spool, &error);
  g_assert_no_error (error);
  g_assert_true (g_bytes_equal (got, want));
  g_assert_cmpint (mg_spool_fd_of (got), ==, -1); /* memory: nothing to send from */
  mg_test_rmtree (dir);
}

static void
test_file (void)
{
  g_autofree char *dir = mg_test_tmpdir ();
  g_autoptr (MgSpool) spool = mg_spool_new (dir, 1000);
  g_autoptr (GBytes) want = pattern (300 * 1024 + 17);
  const guint8 *w = g_bytes_get_data (want, NULL);
  g_autoptr (GBytes) got = NULL;
  g_autoptr (GError) error = NULL;
  g_autoptr (GBytes) slice = NULL;
  struct stat st;
  gsize off = 0, step = 1;
  char buf[100];
  int fd;

  /* pieces of every size: 1, 2, 4, ... crossing the threshold and the 64 KiB chunk inside a write */
  while (off < g_bytes_get_size (want)) {
    gsize n = MIN (step, g_bytes_get_size (want) - off);
    g_assert_true (mg_spool_write (spool, w + off, n, &error));
    off += n;
    step *= 2;
  }
  g_assert_no_error (error);
  g_assert_cmpuint (mg_test_dir_entries (dir), ==, 0); /* O_TMPFILE or unlinked at once */
  got = mg_spool_finish (spool, &error);
  g_assert_no_error (error);
  g_assert_true (g_bytes_equal (got, want));
  fd = mg_spool_fd_of (got);
  g_assert_cmpint (fd, >=, 0);
  g_assert_cmpint (fstat (fd, &st), ==, 0);
  g_assert_cmpuint (st.st_mode & 07777, ==, 0600);
  g_assert_cmpuint (st.st_nlink, ==, 0);
  g_assert_cmpint ((gint64) st.st_size, ==, (gint64) g_bytes_get_size (want));
  g_assert_cmpint (pread (fd, buf, sizeof buf, 70000), ==, sizeof buf);
  g_assert_cmpmem (buf, sizeof buf, w + 70000, sizeof buf);
  /* a slice of the mapping is not the spool's content: no descriptor for it */
  slice = g_bytes_new_from_bytes (got, 0, 10);
  g_assert_cmpint (mg_spool_fd_of (slice), ==, -1);
  g_clear_pointer (&slice, g_bytes_unref);
  g_clear_pointer (&got, g_bytes_unref);
  g_assert_cmpint (fcntl (fd, F_GETFD), ==, -1); /* the last reference closed it */
  g_assert_cmpint (errno, ==, EBADF);
  g_assert_cmpuint (mg_test_dir_entries (dir), ==, 0);
  mg_test_rmtree (dir);
}

static void
test_read_fd (void)
{
  g_autofree char *dir = mg_test_tmpdir ();
  g_autoptr (GBytes) want = pattern (200 * 1024);
  g_autofree char *path = mg_test_write (dir, "in", g_bytes_get_data (want, NULL), 200 * 1024);
  g_autoptr (MgSpool) spool = mg_spool_new (dir, 4096);
  g_autoptr (GBytes) got = NULL;
  g_autoptr (GError) error = NULL;
  int fd = open (path, O_RDONLY);

  g_assert_cmpint (fd, >=, 0);
  g_assert_true (mg_spool_read_fd (spool, fd, &error));
  close (fd);
  got = mg_spool_finish (spool, &error);
  g_assert_no_error (error);
  g_assert_true (g_bytes_equal (got, want));
  g_assert_cmpint (mg_spool_fd_of (got), >=, 0);
  g_assert_cmpuint (mg_test_dir_entries (dir), ==, 1); /* only "in" */
  mg_test_rmtree (dir);
}

static void
test_no_dir (void)
{
  g_autofree char *dir = mg_test_tmpdir ();
  g_autofree char *missing = g_build_filename (dir, "missing", NULL);
  g_autoptr (MgSpool) spool = mg_spool_new (missing, 10);
  g_autoptr (GError) error = NULL;

  g_assert_true (mg_spool_write (spool, "0123456789", 10, &error)); /* memory still */
  g_assert_false (mg_spool_write (spool, "x", 1, &error));
  g_assert_error (error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND);
  g_assert_nonnull (strstr (error->message, missing));
  mg_test_rmtree (dir);
}

static const char message[] = "From: a@example.org\nTo: b@example.org\nSubject: spool\nMIME-Version: 1.0\n"
                              "Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\nhello\n"
                              "--b\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n"
                              "AAECAwQFBgcICQ==\n--b--\n";

/* GMime writes a message into a spool stream past the threshold; the result is the same bytes GMime writes to
 * memory; and the GBytes parses back in place, the attachment a substream of the stream over it */
static void
test_gmime (void)
{
  g_autofree char *dir = mg_test_tmpdir ();
  g_autoptr (GBytes) in = g_bytes_new_static (message, strlen (message));
  g_autoptr (GMimeStream) s = mg_stream_for_bytes (in);
  g_autoptr (GMimeParser) parser = g_mime_parser_new_with_stream (s);
  g_autoptr (GMimeMessage) m = g_mime_parser_construct_message (parser, NULL);
  g_autoptr (GMimeStream) mem = g_mime_stream_mem_new ();
  g_autoptr (MgSpool) spool = mg_spool_new (dir, 16);
  g_autoptr (GMimeStream) sink = mg_spool_stream (spool);
  g_autoptr (GBytes) out = NULL;
  g_autoptr (GError) error = NULL;
  GMimeObject *body, *attachment;
  GMimeStream *content;
  GByteArray *ba;
  char buf[32];

  g_assert_nonnull (m);
  body = g_mime_message_get_mime_part (m);
  g_assert_true (GMIME_IS_MULTIPART (body));
  attachment = g_mime_multipart_get_part (GMIME_MULTIPART (body), 1);
  content = g_mime_data_wrapper_get_stream (g_mime_part_get_content (GMIME_PART (attachment)));
  g_assert_cmpstr (G_OBJECT_TYPE_NAME (content), ==, "BytesStream"); /* persistent: in place, not a copy */
  g_mime_stream_reset (content);
  g_assert_cmpint (g_mime_stream_read (content, buf, sizeof buf), ==,
                   16); /* the newline before the boundary is the boundary's */
  g_assert_cmpmem (buf, 16, "AAECAwQFBgcICQ==", 16);
  g_assert_cmpint (g_mime_stream_read (content, buf, sizeof buf), ==, 0);
  g_assert_true (g_mime_stream_eos (content));

  g_assert_cmpint (g_mime_object_write_to_stream (GMIME_OBJECT (m), NULL, mem), >, 0);
  g_assert_cmpint (g_mime_object_write_to_stream (GMIME_OBJECT (m), NULL, sink), >, 0);
  out = mg_spool_finish (spool, &error);
  g_assert_no_error (error);
  ba = g_mime_stream_mem_get_byte_array (GMIME_STREAM_MEM (mem));
  g_assert_cmpmem (g_bytes_get_data (out, NULL), g_bytes_get_size (out), ba->data, ba->len);
  g_assert_cmpint (mg_spool_fd_of (out), >=, 0);
  mg_test_rmtree (dir);
}

/* a write into the stream that fails (no spool directory) fails GMime's write and is reported by finish */
static void
test_stream_error (void)
{
  g_autofree char *dir = mg_test_tmpdir ();
  g_autofree char *missing = g_build_filename (dir, "missing", NULL);
  g_autoptr (MgSpool) spool = mg_spool_new (missing, 4);
  g_autoptr (GMimeStream) sink = mg_spool_stream (spool);
  g_autoptr (GError) error = NULL;
  g_autoptr (GBytes) out = NULL;

  g_assert_cmpint (g_mime_stream_write (sink, "abc", 3), ==, 3);
  g_assert_cmpint (g_mime_stream_write (sink, "defg", 4), ==, -1);
  out = mg_spool_finish (spool, &error);
  g_assert_null (out);
  g_assert_error (error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND);
  mg_test_rmtree (dir);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_mime_init ();
  g_test_add_func ("/spool/memory", test_memory);
  g_test_add_func ("/spool/file", test_file);
  g_test_add_func ("/spool/read-fd", test_read_fd);
  g_test_add_func ("/spool/no-dir", test_no_dir);
  g_test_add_func ("/spool/gmime", test_gmime);
  g_test_add_func ("/spool/stream-error", test_stream_error);
  return g_test_run ();
}
