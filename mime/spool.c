/* spool.c - a write sink that holds up to a threshold in memory and moves beyond it to an unnamed 0600 file; its
 * content as a GBytes (a read-only MAP_PRIVATE mapping for a file), and a GMime stream that reads a GBytes without
 * copying it (spool.h).
 *
 * Why a mapping and not a GMime file stream for parsing: detection, signed_slice() and the header edits want the
 * message as bytes, and GMime wants a stream. One mapping serves both: the stream below reads the GBytes in place,
 * and with the parser's persistent streams (g_mime_parser_set_persist_stream, GMime's default) every part's content
 * is a substream of it, so a parse costs no copy of any body. A second mapping or a read() buffer of the same file
 * would count the same pages twice. The pages are the file's: under pressure the kernel drops them and reads them
 * back, instead of swapping anonymous memory.
 *
 * Faults: the file is created without a name (O_TMPFILE) or unlinked the moment it exists, before anything is
 * written, so that no kill at any instant leaves a file behind; it dies with its last descriptor or mapping. */
#include "config.h"

#include "spool.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gio/gio.h>
#include <glib/gi18n.h>

#define SPOOL_CHUNK ((gsize) 64 * 1024) /* what is gathered before one write(), and read() at a time */

struct _MgSpool {
  char *dir;
  gsize threshold;
  GByteArray *mem; /* everything while in memory; the unwritten tail while in the file */
  int fd;          /* -1 while in memory */
  gsize size;      /* every byte written so far */
  GError *error;   /* (nullable): the first failure of a write through mg_spool_stream() */
};

/**
 * mg_spool_file - a new 0600 file in @dir that has no name: O_TMPFILE, or where the file system lacks it a file
 * unlinked the moment it exists, before anything is written into it.
 *
 * Returns: a descriptor (close-on-exec, read and write), or -1 with errno set
 */
int
mg_spool_file (const char *dir)
{
  g_autofree char *path = NULL;
  int fd = open (dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);

  if (fd >= 0 || (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL))
    return fd;
  path = g_build_filename (dir, "mimegate-spool-XXXXXX", NULL);
  fd = g_mkstemp_full (path, O_RDWR | O_CLOEXEC, 0600);
  if (fd >= 0 && unlink (path) != 0) {
    int saved = errno;
    close (fd);
    errno = saved;
    return -1;
  }
  return fd;
}

/**
 * mg_spool_new - an empty spool.
 * @dir: (nullable): where a file goes when the content grows beyond @threshold bytes (%NULL: TMPDIR, else /tmp)
 *
 * Returns: (transfer full)
 */
MgSpool *
mg_spool_new (const char *dir, gsize threshold)
{
  MgSpool *spool = g_new0 (MgSpool, 1);

  spool->dir = g_strdup (dir ? dir : g_get_tmp_dir ());
  spool->threshold = threshold;
  spool->mem = g_byte_array_new ();
  spool->fd = -1;
  return spool;
}

static gboolean
set_errno_error (MgSpool *spool, int saved, GError **error)
{
  g_set_error (error, G_IO_ERROR, g_io_error_from_errno (saved), _ ("cannot spool the message in %s: %s"), spool->dir,
               g_strerror (saved));
  return FALSE;
}

/* mg_spool_write_all - all of @len bytes of @data to @fd (short writes and EINTR retried); FALSE with errno set */
gboolean
mg_spool_write_all (int fd, const guint8 *data, gsize len)
{
  while (len > 0) {
    ssize_t n = write (fd, data, MIN (len, (gsize) 1 << 30));
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      if (n == 0)
        errno = EIO;
      return FALSE;
    }
    data += n;
    len -= (gsize) n;
  }
  return TRUE;
}

/* flush_tail - what is gathered in memory, into the file */
static gboolean
flush_tail (MgSpool *spool, GError **error)
{
  if (spool->mem->len > 0 && !mg_spool_write_all (spool->fd, spool->mem->data, spool->mem->len))
    return set_errno_error (spool, errno, error);
  g_byte_array_set_size (spool->mem, 0);
  return TRUE;
}

/**
 * mg_spool_write - appends @len bytes of @data. Beyond the threshold the content moves to the file.
 *
 * Returns: %FALSE with @error (G_IO_ERROR) when the file cannot be made or written (a full disk: transient)
 */
gboolean
mg_spool_write (MgSpool *spool, const void *data, gsize len, GError **error)
{
  if (spool->error != NULL) {
    g_propagate_error (error, g_error_copy (spool->error));
    return FALSE;
  }
  if (len == 0)
    return TRUE;
  if (spool->fd < 0 && spool->size + len > spool->threshold) {
    spool->fd = mg_spool_file (spool->dir);
    if (spool->fd < 0)
      return set_errno_error (spool, errno, error);
    if (!flush_tail (spool, error))
      return FALSE;
  }
  spool->size += len;
  if (spool->fd >= 0 && len >= SPOOL_CHUNK) {
    if (!flush_tail (spool, error))
      return FALSE;
    if (!mg_spool_write_all (spool->fd, data, len))
      return set_errno_error (spool, errno, error);
    return TRUE;
  }
  g_byte_array_append (spool->mem, data, (guint) len);
  return spool->fd < 0 || spool->mem->len < SPOOL_CHUNK || flush_tail (spool, error);
}

/**
 * mg_spool_read_fd - everything that can be read from @fd (stdin), appended.
 *
 * Returns: %FALSE with @error when reading or spooling fails
 */
gboolean
mg_spool_read_fd (MgSpool *spool, int fd, GError **error)
{
  g_autofree guint8 *chunk = g_malloc (SPOOL_CHUNK);

  for (;;) {
    ssize_t n = read (fd, chunk, SPOOL_CHUNK);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      int saved = errno;
      g_set_error (error, G_IO_ERROR, g_io_error_from_errno (saved), _ ("cannot read the message: %s"),
                   g_strerror (saved));
      return FALSE;
    }
    if (n == 0)
      return TRUE;
    if (!mg_spool_write (spool, chunk, (gsize) n, error))
      return FALSE;
  }
}

/* mg_spool_size - how many bytes were written */
gsize
mg_spool_size (MgSpool *spool)
{
  return spool->size;
}

/* Mapped - a finished spool file, mapped: what mg_spool_fd_of() finds by the mapping's address */
typedef struct {
  int fd;
  void *map;
  gsize len;
} Mapped;

static GMutex mapped_lock;
static GHashTable *mapped_table; /* mapping address → Mapped */

static void
mapped_free (gpointer data)
{
  Mapped *m = data;

  g_mutex_lock (&mapped_lock);
  g_hash_table_remove (mapped_table, m->map);
  g_mutex_unlock (&mapped_lock);
  munmap (m->map, m->len);
  close (m->fd);
  g_free (m);
}

/**
 * mg_spool_finish - the content, complete. The spool is empty afterwards (only mg_spool_free() is left to do).
 *
 * Returns: (transfer full): memory for a content up to the threshold, else a read-only private mapping of the file
 *   (which then lives as long as the GBytes); %NULL with @error when a write failed or the file cannot be mapped
 */
GBytes *
mg_spool_finish (MgSpool *spool, GError **error)
{
  Mapped *m;
  int fd;

  if (spool->error != NULL) {
    g_propagate_error (error, g_steal_pointer (&spool->error));
    return NULL;
  }
  if (spool->fd < 0) {
    GByteArray *mem = g_steal_pointer (&spool->mem);
    spool->mem = g_byte_array_new ();
    spool->size = 0;
    return g_byte_array_free_to_bytes (mem);
  }
  if (!flush_tail (spool, error))
    return NULL;
  fd = spool->fd;
  spool->fd = -1;
  m = g_new0 (Mapped, 1);
  m->fd = fd;
  m->len = spool->size;
  spool->size = 0;
  m->map = mmap (NULL, m->len, PROT_READ, MAP_PRIVATE, fd, 0);
  if (m->map == MAP_FAILED) {
    int saved = errno;
    close (fd);
    g_free (m);
    set_errno_error (spool, saved, error);
    return NULL;
  }
  g_mutex_lock (&mapped_lock);
  if (mapped_table == NULL)
    mapped_table = g_hash_table_new (g_direct_hash, g_direct_equal);
  g_hash_table_insert (mapped_table, m->map, m);
  g_mutex_unlock (&mapped_lock);
  return g_bytes_new_with_free_func (m->map, m->len, mapped_free, m);
}

/* mg_spool_free - also closes the file of a spool that was not finished (it has no name: it is gone) */
void
mg_spool_free (MgSpool *spool)
{
  if (spool == NULL)
    return;
  if (spool->fd >= 0)
    close (spool->fd);
  g_byte_array_unref (spool->mem);
  g_clear_error (&spool->error);
  g_free (spool->dir);
  g_free (spool);
}

/**
 * mg_spool_fd_of - the file behind @bytes when it is a spool's mapping (mg_spool_finish()), complete, at any offset:
 * read it with pread(), or open /proc/self/fd/N for a descriptor with its own offset.
 *
 * Returns: (transfer none): a descriptor valid while @bytes lives, or -1 when @bytes is memory
 */
int
mg_spool_fd_of (GBytes *bytes)
{
  gsize len;
  const void *data = g_bytes_get_data (bytes, &len);
  Mapped *m = NULL;

  if (data == NULL)
    return -1;
  g_mutex_lock (&mapped_lock);
  if (mapped_table != NULL)
    m = g_hash_table_lookup (mapped_table, data);
  g_mutex_unlock (&mapped_lock);
  return m != NULL && m->len == len ? m->fd : -1;
}

/**
 * mg_spool_release - the pages of @bytes in [@offset, @offset + @len) that were read are dropped from this process's
 * memory, when @bytes is a spool's mapping (else nothing): they stay in the file, and reading them again reads it.
 * For a face that has sent that much of a large message and will not need it soon.
 */
void
mg_spool_release (GBytes *bytes, gsize offset, gsize len)
{
  gsize size, page = (gsize) sysconf (_SC_PAGESIZE);
  const guint8 *data = g_bytes_get_data (bytes, &size);
  gsize start, end;

  if (mg_spool_fd_of (bytes) < 0 || offset >= size)
    return;
  start = (offset + page - 1) / page * page; /* whole pages inside the range only (the mapping starts on one) */
  end = MIN (offset + len, size);
  end = end == size ? size : end / page * page;
  if (end > start)
    madvise ((void *) (data + start), end - start, MADV_DONTNEED);
}

/* SpoolStream - a write-only GMime stream into a spool; a failure is kept for mg_spool_finish() */
typedef struct {
  GMimeStream parent;
  MgSpool *spool;
} SpoolStream;

typedef struct {
  GMimeStreamClass parent;
} SpoolStreamClass;

static GType spool_stream_get_type (void);
G_DEFINE_TYPE (SpoolStream, spool_stream, GMIME_TYPE_STREAM)

static ssize_t
spool_stream_write (GMimeStream *stream, const char *buf, size_t len)
{
  SpoolStream *s = (SpoolStream *) stream;

  if (s->spool->error != NULL || !mg_spool_write (s->spool, buf, len, &s->spool->error)) {
    errno = EIO;
    return -1;
  }
  stream->position += (gint64) len;
  return (ssize_t) len;
}

static ssize_t
spool_stream_read (GMimeStream *stream, char *buf, size_t len)
{
  (void) stream, (void) buf, (void) len;
  errno = EBADF;
  return -1;
}

static int
spool_stream_zero (GMimeStream *stream)
{
  (void) stream;
  return 0;
}

static gboolean
spool_stream_eos (GMimeStream *stream)
{
  (void) stream;
  return TRUE;
}

static gint64
spool_stream_seek (GMimeStream *stream, gint64 offset, GMimeSeekWhence whence)
{
  (void) stream, (void) offset, (void) whence;
  errno = ESPIPE;
  return -1;
}

static gint64
spool_stream_tell (GMimeStream *stream)
{
  return stream->position;
}

static gint64
spool_stream_length (GMimeStream *stream)
{
  return stream->position;
}

static GMimeStream *
spool_stream_substream (GMimeStream *stream, gint64 start, gint64 end)
{
  (void) stream, (void) start, (void) end;
  return NULL;
}

static void
spool_stream_class_init (SpoolStreamClass *klass)
{
  GMimeStreamClass *sc = GMIME_STREAM_CLASS (klass);

  sc->read = spool_stream_read;
  sc->write = spool_stream_write;
  sc->flush = spool_stream_zero;
  sc->close = spool_stream_zero;
  sc->eos = spool_stream_eos;
  sc->reset = spool_stream_zero;
  sc->seek = spool_stream_seek;
  sc->tell = spool_stream_tell;
  sc->length = spool_stream_length;
  sc->substream = spool_stream_substream;
}

static void
spool_stream_init (SpoolStream *s)
{
  (void) s;
}

/**
 * mg_spool_stream - a write-only GMime stream that appends to @spool (g_mime_object_write_to_stream into a spool);
 * a write that fails makes the stream's writes fail and mg_spool_finish() report why.
 *
 * Returns: (transfer full): the stream; it borrows @spool, which must outlive it
 */
GMimeStream *
mg_spool_stream (MgSpool *spool)
{
  SpoolStream *s = g_object_new (spool_stream_get_type (), NULL);

  g_mime_stream_construct (GMIME_STREAM (s), 0, -1);
  s->spool = spool;
  return GMIME_STREAM (s);
}

/* BytesStream - a read-only, seekable GMime stream over a GBytes, in place; its substreams share the GBytes */
typedef struct {
  GMimeStream parent;
  GBytes *bytes;
  const char *data;
  gint64 len;
  int fd; /* >= 0: read with pread() from the spool's file (mg_spool_file_stream), not from the mapping */
} BytesStream;

typedef struct {
  GMimeStreamClass parent;
} BytesStreamClass;

static GType bytes_stream_get_type (void);
G_DEFINE_TYPE (BytesStream, bytes_stream, GMIME_TYPE_STREAM)

static gint64
bytes_end (GMimeStream *stream)
{
  return stream->bound_end != -1 ? stream->bound_end : ((BytesStream *) stream)->len;
}

static ssize_t
bytes_stream_read (GMimeStream *stream, char *buf, size_t len)
{
  BytesStream *b = (BytesStream *) stream;
  gint64 n = MIN (bytes_end (stream) - stream->position, (gint64) len);

  if (n <= 0)
    return 0;
  if (b->fd >= 0) {
    ssize_t got;
    do
      got = pread (b->fd, buf, (size_t) n, (off_t) stream->position);
    while (got < 0 && errno == EINTR);
    if (got <= 0)
      return got < 0 ? -1 : 0;
    n = got;
  } else
    memcpy (buf, b->data + stream->position, (size_t) n);
  stream->position += n;
  return (ssize_t) n;
}

static ssize_t
bytes_stream_write (GMimeStream *stream, const char *buf, size_t len)
{
  (void) stream, (void) buf, (void) len;
  errno = EBADF;
  return -1;
}

static int
bytes_stream_zero (GMimeStream *stream)
{
  (void) stream;
  return 0;
}

static gboolean
bytes_stream_eos (GMimeStream *stream)
{
  return stream->position >= bytes_end (stream);
}

static gint64
bytes_stream_seek (GMimeStream *stream, gint64 offset, GMimeSeekWhence whence)
{
  gint64 real = offset;

  if (whence == GMIME_STREAM_SEEK_CUR)
    real = stream->position + offset;
  else if (whence == GMIME_STREAM_SEEK_END)
    real = bytes_end (stream) + offset;
  if (real < stream->bound_start || real > bytes_end (stream)) {
    errno = EINVAL;
    return -1;
  }
  stream->position = real;
  return real;
}

static gint64
bytes_stream_tell (GMimeStream *stream)
{
  return stream->position;
}

static gint64
bytes_stream_length (GMimeStream *stream)
{
  return bytes_end (stream) - stream->bound_start;
}

static GMimeStream *
bytes_stream_substream (GMimeStream *stream, gint64 start, gint64 end)
{
  BytesStream *b = (BytesStream *) stream;
  GMimeStream *sub = b->fd >= 0 ? mg_spool_file_stream (b->bytes) : mg_spool_bytes_stream (b->bytes);

  g_mime_stream_construct (sub, start, end);
  return sub;
}

static void
bytes_stream_finalize (GObject *object)
{
  g_bytes_unref (((BytesStream *) object)->bytes);
  G_OBJECT_CLASS (bytes_stream_parent_class)->finalize (object);
}

static void
bytes_stream_class_init (BytesStreamClass *klass)
{
  GMimeStreamClass *sc = GMIME_STREAM_CLASS (klass);

  G_OBJECT_CLASS (klass)->finalize = bytes_stream_finalize;
  sc->read = bytes_stream_read;
  sc->write = bytes_stream_write;
  sc->flush = bytes_stream_zero;
  sc->close = bytes_stream_zero;
  sc->eos = bytes_stream_eos;
  sc->reset = bytes_stream_zero;
  sc->seek = bytes_stream_seek;
  sc->tell = bytes_stream_tell;
  sc->length = bytes_stream_length;
  sc->substream = bytes_stream_substream;
}

static void
bytes_stream_init (BytesStream *b)
{
  b->fd = -1;
}

/**
 * mg_spool_bytes_stream - a read-only, seekable GMime stream over @bytes, without copying them: what GMime parses a
 * message from (its persistent streams make every part a substream of this one).
 *
 * Returns: (transfer full): the stream, holding a reference to @bytes
 */
GMimeStream *
mg_spool_bytes_stream (GBytes *bytes)
{
  BytesStream *b = g_object_new (bytes_stream_get_type (), NULL);
  gsize len = 0;
  const char *data = g_bytes_get_data (bytes, &len);

  b->bytes = g_bytes_ref (bytes);
  b->data = data ? data : "";
  b->len = (gint64) len;
  g_mime_stream_construct (GMIME_STREAM (b), 0, -1);
  return GMIME_STREAM (b);
}

/**
 * mg_spool_file_stream - mg_spool_bytes_stream(), but a spool's mapping is read with pread() from its file, so that
 * what is read never becomes this process's pages (the page cache holds it, once, for every process): the streaming
 * path's way to read a large entity, clear text or ciphertext through GMime, an engine or a filter. Memory is read
 * in place, as mg_spool_bytes_stream() does. Substreams read the same way.
 *
 * Returns: (transfer full): the stream, holding a reference to @bytes (and so the file open)
 */
GMimeStream *
mg_spool_file_stream (GBytes *bytes)
{
  GMimeStream *s = mg_spool_bytes_stream (bytes);

  ((BytesStream *) s)->fd = mg_spool_fd_of (bytes);
  return s;
}
