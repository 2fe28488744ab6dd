/* mg-gmime.h - g_autoptr cleanups for the GMime types mimegate uses (GMime 3.2 declares none). Declared once here. */
#pragma once

#include <gmime/gmime.h>

#include "spool.h"

G_DEFINE_AUTOPTR_CLEANUP_FUNC (GMimeStream, g_object_unref)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (GMimeParser, g_object_unref)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (GMimeMessage, g_object_unref)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (GMimeObject, g_object_unref)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (GMimeDataWrapper, g_object_unref)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (GMimeFilter, g_object_unref)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (GMimeContentType, g_object_unref)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (InternetAddressList, g_object_unref)

/* mg_stream_for_bytes - a read-only GMime stream over @bytes, in place (no copy: spool.h) */
static inline GMimeStream *
mg_stream_for_bytes (GBytes *bytes)
{
  return mg_spool_bytes_stream (bytes);
}
