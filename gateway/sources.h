/* sources.h - where messages come from: files, directories, mbox files, Maildirs, stdin. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

typedef struct {
  char *path;
  guint64 size;
} MgSourceFile;

typedef void (*MgSourceErrorFunc) (const char *path, const char *message, gpointer user_data);

/* one message: @index counts from 1 within its file; @done is how many bytes of the file are behind it */
typedef void (*MgMessageFunc) (const char *path, guint index, gboolean in_mbox, const guint8 *data, gsize len,
                               guint64 done, gpointer user_data);

GPtrArray *mg_sources_collect (char **paths, MgSourceErrorFunc on_error, gpointer user_data);
gboolean mg_source_read (const char *path, MgMessageFunc fn, gpointer user_data, GError **error);

G_END_DECLS
