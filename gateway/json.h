/* json.h - a small streaming JSON writer (RFC 8259) for mimegate's machine output. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

typedef struct {
  GString *out;
  guint depth;
  guint64 nonempty; /* bit d: the container at depth d already has a member */
  gboolean after_key;
} MgJson;

void mg_json_init (MgJson *j, GString *out);
void mg_json_begin_object (MgJson *j);
void mg_json_end_object (MgJson *j);
void mg_json_begin_array (MgJson *j);
void mg_json_end_array (MgJson *j);
void mg_json_key (MgJson *j, const char *key);
void mg_json_string (MgJson *j, const char *value);
void mg_json_uint (MgJson *j, guint64 value);
void mg_json_double (MgJson *j, double value);
void mg_json_bool (MgJson *j, gboolean value);
void mg_json_null (MgJson *j);
void mg_json_member_string (MgJson *j, const char *key, const char *value);
void mg_json_member_uint (MgJson *j, const char *key, guint64 value);

G_END_DECLS
