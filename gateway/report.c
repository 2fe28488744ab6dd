/* report.c - renders a detection report: an indented tree for people (labels translated, kind names not: they are
 * an interface), and JSON for scripts (field names stable: "kind", "kinds", "parts", "path", "content_type", ...). */
#include "config.h"

#include "report.h"

#include <glib/gi18n.h>

/* print_ids - one line per key reference under a heading */
static void
print_ids (FILE *out, int indent, const char *label, const GPtrArray *ids)
{
  for (guint i = 0; ids != NULL && i < ids->len; i++) {
    const MgCryptoId *cid = g_ptr_array_index (ids, i);
    fprintf (out, "%*s%s %s", indent, "", label, cid->id);
    if (cid->algorithm)
      fprintf (out, " (%s%s%s)", cid->algorithm, cid->digest ? ", " : "", cid->digest ? cid->digest : "");
    if (cid->name)
      fprintf (out, " <%s>", cid->name);
    fputc ('\n', out);
  }
}

static void
print_kinds (FILE *out, guint kinds)
{
  gboolean first = TRUE;

  for (guint k = 0; k < MG_KIND_COUNT; k++)
    if (kinds & MG_KIND_BIT (k)) {
      fprintf (out, "%s%s", first ? "" : ", ", mg_kind_name (k));
      first = FALSE;
    }
}

/* mg_report_print - the readable tree of one message */
void
mg_report_print (FILE *out, const char *name, const MgReport *r)
{
  fprintf (out, "%s\n", name);
  fprintf (out, "  %s %s\n", _ ("kind:"), mg_kind_name (r->kind));
  fprintf (out, "  %s ", _ ("kinds found:"));
  print_kinds (out, r->kinds);
  fputc ('\n', out);
  if (r->error)
    fprintf (out, "  %s %s\n", _ ("problem:"), r->error);
  for (guint i = 0; i < r->warnings->len; i++)
    fprintf (out, "  %s %s\n", _ ("parser warning:"), (const char *) g_ptr_array_index (r->warnings, i));
  for (guint i = 0; i < r->parts->len; i++) {
    const MgPart *p = g_ptr_array_index (r->parts, i);
    const MgCryptoInfo *info = &p->info;
    int indent = 2 + 2 * (int) MIN (p->depth, 40u);

    fprintf (out, "%*s%s  %s  %s", indent, "", p->path, p->content_type, mg_kind_name (p->kind));
    if (p->role)
      fprintf (out, "  [%s]", p->role);
    if (p->filename)
      fprintf (out, "  \"%s\"", p->filename);
    if (p->encoding)
      fprintf (out, "  %s", p->encoding);
    fputc ('\n', out);
    indent += 4;
    print_ids (out, indent, _ ("encrypted to"), info->recipients);
    if (info->passphrases)
      fprintf (out, "%*s%s %u\n", indent, "", _ ("passphrase keys:"), info->passphrases);
    if (info->cipher)
      fprintf (out, "%*s%s %s\n", indent, "", _ ("cipher:"), info->cipher);
    if (info->integrity)
      fprintf (out, "%*s%s %s\n", indent, "", _ ("integrity:"), info->integrity);
    print_ids (out, indent, _ ("signed by"), info->signers);
    if (info->content)
      fprintf (out, "%*s%s %s\n", indent, "", _ ("content:"), info->content);
    if (info->compression)
      fprintf (out, "%*s%s %s\n", indent, "", _ ("compression:"), info->compression);
    print_ids (out, indent, _ ("key"), info->keys);
    if (p->kinds & ~MG_KIND_BIT (p->kind)) {
      fprintf (out, "%*s%s ", indent, "", _ ("also:"));
      print_kinds (out, p->kinds & ~MG_KIND_BIT (p->kind));
      fputc ('\n', out);
    }
    if (p->error)
      fprintf (out, "%*s%s %s\n", indent, "", _ ("problem:"), p->error);
  }
}

/**
 * mg_report_json_string - @value as a JSON string (made valid UTF-8 first: any header or file name a message carries
 * must give valid output), or null for %NULL.
 */
void
mg_report_json_string (JsonBuilder *b, const char *value)
{
  g_autofree char *valid = value ? g_utf8_make_valid (value, -1) : NULL;

  if (valid == NULL)
    json_builder_add_null_value (b);
  else
    json_builder_add_string_value (b, valid);
}

/* mg_report_json_member - a member @key of the current object: mg_report_json_string (@value) */
void
mg_report_json_member (JsonBuilder *b, const char *key, const char *value)
{
  json_builder_set_member_name (b, key);
  mg_report_json_string (b, value);
}

/**
 * mg_report_json_text - what @b has built, as one line of compact JSON (no newline).
 *
 * Returns: (transfer full)
 */
char *
mg_report_json_text (JsonBuilder *b)
{
  g_autoptr (JsonNode) root = json_builder_get_root (b);
  g_autoptr (JsonGenerator) gen = json_generator_new ();

  json_generator_set_root (gen, root);
  return json_generator_to_data (gen, NULL);
}

/* mg_report_json_kinds - an array of kind names, in DESIGN.md's order */
void
mg_report_json_kinds (JsonBuilder *b, guint kinds)
{
  json_builder_begin_array (b);
  for (guint k = 0; k < MG_KIND_COUNT; k++)
    if (kinds & MG_KIND_BIT (k))
      mg_report_json_string (b, mg_kind_name (k));
  json_builder_end_array (b);
}

static void
json_ids (JsonBuilder *b, const char *key, const GPtrArray *ids)
{
  json_builder_set_member_name (b, key);
  json_builder_begin_array (b);
  for (guint i = 0; ids != NULL && i < ids->len; i++) {
    const MgCryptoId *cid = g_ptr_array_index (ids, i);
    json_builder_begin_object (b);
    mg_report_json_member (b, "id", cid->id);
    mg_report_json_member (b, "algorithm", cid->algorithm);
    if (cid->digest)
      mg_report_json_member (b, "digest", cid->digest);
    if (cid->name)
      mg_report_json_member (b, "name", cid->name);
    json_builder_end_object (b);
  }
  json_builder_end_array (b);
}

/* mg_report_json - one message as a JSON object; @index is its place in an mbox file, 0 when it is a whole file */
void
mg_report_json (JsonBuilder *b, const char *file, guint index, const MgReport *r)
{
  json_builder_begin_object (b);
  mg_report_json_member (b, "file", file);
  if (index > 0) {
    json_builder_set_member_name (b, "index");
    json_builder_add_int_value (b, index);
  }
  mg_report_json_member (b, "message_id", r->message_id);
  mg_report_json_member (b, "kind", mg_kind_name (r->kind));
  json_builder_set_member_name (b, "kinds");
  mg_report_json_kinds (b, r->kinds);
  mg_report_json_member (b, "error", r->error);
  json_builder_set_member_name (b, "limited");
  json_builder_add_boolean_value (b, r->limited);
  json_builder_set_member_name (b, "warnings");
  json_builder_begin_array (b);
  for (guint i = 0; i < r->warnings->len; i++)
    mg_report_json_string (b, g_ptr_array_index (r->warnings, i));
  json_builder_end_array (b);
  json_builder_set_member_name (b, "parts");
  json_builder_begin_array (b);
  for (guint i = 0; i < r->parts->len; i++) {
    const MgPart *p = g_ptr_array_index (r->parts, i);
    json_builder_begin_object (b);
    mg_report_json_member (b, "path", p->path);
    json_builder_set_member_name (b, "depth");
    json_builder_add_int_value (b, p->depth);
    mg_report_json_member (b, "content_type", p->content_type);
    mg_report_json_member (b, "kind", mg_kind_name (p->kind));
    json_builder_set_member_name (b, "kinds");
    mg_report_json_kinds (b, p->kinds ? p->kinds : MG_KIND_BIT (p->kind));
    mg_report_json_member (b, "role", p->role);
    mg_report_json_member (b, "filename", p->filename);
    mg_report_json_member (b, "encoding", p->encoding);
    json_ids (b, "recipients", p->info.recipients);
    json_ids (b, "signers", p->info.signers);
    json_ids (b, "keys", p->info.keys);
    mg_report_json_member (b, "cipher", p->info.cipher);
    mg_report_json_member (b, "integrity", p->info.integrity);
    mg_report_json_member (b, "compression", p->info.compression);
    mg_report_json_member (b, "content", p->info.content);
    json_builder_set_member_name (b, "passphrases");
    json_builder_add_int_value (b, p->info.passphrases);
    mg_report_json_member (b, "error", p->error);
    json_builder_end_object (b);
  }
  json_builder_end_array (b);
  json_builder_end_object (b);
}
