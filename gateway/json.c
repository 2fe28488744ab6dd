/* json.c - writes JSON (RFC 8259) into a GString: objects, arrays, escaped strings, numbers.
 *
 * Strings are escaped for JSON and made valid UTF-8 first, so that any header or file name a message carries yields
 * valid output. Nesting beyond 64 levels is a caller bug. */
#include "config.h"

#include "json.h"

/* mg_json_init - writes into @out (not owned) */
void
mg_json_init (MgJson *j, GString *out)
{
  j->out = out;
  j->depth = 0;
  j->nonempty = 0;
  j->after_key = FALSE;
}

/* separate - a comma before every member but the first of its container */
static void
separate (MgJson *j)
{
  if (j->after_key) {
    j->after_key = FALSE;
    return;
  }
  if (j->depth > 0 && (j->nonempty & ((guint64) 1 << j->depth)))
    g_string_append_c (j->out, ',');
  j->nonempty |= (guint64) 1 << j->depth;
}

static void
open_container (MgJson *j, char c)
{
  separate (j);
  g_return_if_fail (j->depth < 63);
  g_string_append_c (j->out, c);
  j->depth++;
  j->nonempty &= ~((guint64) 1 << j->depth);
}

static void
close_container (MgJson *j, char c)
{
  g_return_if_fail (j->depth > 0);
  j->depth--;
  g_string_append_c (j->out, c);
}

void
mg_json_begin_object (MgJson *j)
{
  open_container (j, '{');
}

void
mg_json_end_object (MgJson *j)
{
  close_container (j, '}');
}

void
mg_json_begin_array (MgJson *j)
{
  open_container (j, '[');
}

void
mg_json_end_array (MgJson *j)
{
  close_container (j, ']');
}

/* append_escaped - @s as a JSON string literal */
static void
append_escaped (GString *out, const char *s)
{
  g_autofree char *valid = g_utf8_make_valid (s, -1);

  g_string_append_c (out, '"');
  for (const char *p = valid; *p; p++) {
    unsigned char c = (unsigned char) *p;
    switch (c) {
    case '"':
      g_string_append (out, "\\\"");
      break;
    case '\\':
      g_string_append (out, "\\\\");
      break;
    case '\n':
      g_string_append (out, "\\n");
      break;
    case '\r':
      g_string_append (out, "\\r");
      break;
    case '\t':
      g_string_append (out, "\\t");
      break;
    default:
      if (c < 0x20 || c == 0x7f)
        g_string_append_printf (out, "\\u%04x", c);
      else
        g_string_append_c (out, (char) c);
    }
  }
  g_string_append_c (out, '"');
}

/* mg_json_key - the key of the next member of the current object */
void
mg_json_key (MgJson *j, const char *key)
{
  separate (j);
  append_escaped (j->out, key);
  g_string_append_c (j->out, ':');
  j->after_key = TRUE;
}

/* mg_json_string - a string value, or null for %NULL */
void
mg_json_string (MgJson *j, const char *value)
{
  if (value == NULL) {
    mg_json_null (j);
    return;
  }
  separate (j);
  append_escaped (j->out, value);
}

void
mg_json_uint (MgJson *j, guint64 value)
{
  separate (j);
  g_string_append_printf (j->out, "%" G_GUINT64_FORMAT, value);
}

void
mg_json_double (MgJson *j, double value)
{
  char buf[G_ASCII_DTOSTR_BUF_SIZE];

  separate (j);
  g_string_append (j->out, g_ascii_formatd (buf, sizeof buf, "%.3f", value));
}

void
mg_json_bool (MgJson *j, gboolean value)
{
  separate (j);
  g_string_append (j->out, value ? "true" : "false");
}

void
mg_json_null (MgJson *j)
{
  separate (j);
  g_string_append (j->out, "null");
}

void
mg_json_member_string (MgJson *j, const char *key, const char *value)
{
  mg_json_key (j, key);
  mg_json_string (j, value);
}

void
mg_json_member_uint (MgJson *j, const char *key, guint64 value)
{
  mg_json_key (j, key);
  mg_json_uint (j, value);
}
