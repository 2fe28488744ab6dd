/* spool.h - where a message, or a result, is held while mimegate works on it: in memory up to a threshold, beyond
 * it in a file of mode 0600 that has no name (DESIGN.md rule 6: clear text never reaches disk except a 0600 unlinked
 * spool). A finished spool is a GBytes: memory, or a read-only private mapping of its file (file-backed pages, which
 * the kernel can reclaim and counts once); a face finds the file behind such a GBytes with mg_spool_fd_of() and sends
 * from it without another copy. */
#pragma once

#include <gmime/gmime.h>

G_BEGIN_DECLS

#define MG_SPOOL_DEFAULT_THRESHOLD ((gsize) 1024 * 1024)

typedef struct _MgSpool MgSpool;

int mg_spool_file (const char *dir);
MgSpool *mg_spool_new (const char *dir, gsize threshold);
gboolean mg_spool_write (MgSpool *spool, const void *data, gsize len, GError **error);
gboolean mg_spool_read_fd (MgSpool *spool, int fd, GError **error);
GMimeStream *mg_spool_stream (MgSpool *spool);
gsize mg_spool_size (MgSpool *spool);
GBytes *mg_spool_finish (MgSpool *spool, GError **error);
void mg_spool_free (MgSpool *spool);

int mg_spool_fd_of (GBytes *bytes);
gboolean mg_spool_write_all (int fd, const guint8 *data, gsize len);
void mg_spool_release (GBytes *bytes, gsize offset, gsize len);
GMimeStream *mg_spool_bytes_stream (GBytes *bytes);
GMimeStream *mg_spool_file_stream (GBytes *bytes);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (MgSpool, mg_spool_free)

G_END_DECLS
