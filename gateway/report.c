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

/* mg_report_json_kinds - an array of kind names, in DESIGN.md's order */
void
mg_report_json_kinds (MgJson *j, guint kinds)
{
  mg_json_begin_array (j);
  for (guint k = 0; k < MG_KIND_COUNT; k++)
    if (kinds & MG_KIND_BIT (k))
      mg_json_string (j, mg_kind_name (k));
  mg_json_end_array (j);
}

static void
json_ids (MgJson *j, const char *key, const GPtrArray *ids)
{
  mg_json_key (j, key);
  mg_json_begin_array (j);
  for (guint i = 0; ids != NULL && i < ids->len; i++) {
    const MgCryptoId *cid = g_ptr_array_index (ids, i);
    mg_json_begin_object (j);
    mg_json_member_string (j, "id", cid->id);
    mg_json_member_string (j, "algorithm", cid->algorithm);
    if (cid->digest)
      mg_json_member_string (j, "digest", cid->digest);
    if (cid->name)
      mg_json_member_string (j, "name", cid->name);
    mg_json_end_object (j);
  }
  mg_json_end_array (j);
}

/* mg_report_json - one message as a JSON object; @index is its place in an mbox file, 0 when it is a whole file */
void
mg_report_json (MgJson *j, const char *file, guint index, const MgReport *r)
{
  mg_json_begin_object (j);
  mg_json_member_string (j, "file", file);
  if (index > 0)
    mg_json_member_uint (j, "index", index);
  mg_json_member_string (j, "message_id", r->message_id);
  mg_json_member_string (j, "kind", mg_kind_name (r->kind));
  mg_json_key (j, "kinds");
  mg_report_json_kinds (j, r->kinds);
  mg_json_member_string (j, "error", r->error);
  mg_json_key (j, "limited");
  mg_json_bool (j, r->limited);
  mg_json_key (j, "warnings");
  mg_json_begin_array (j);
  for (guint i = 0; i < r->warnings->len; i++)
    mg_json_string (j, g_ptr_array_index (r->warnings, i));
  mg_json_end_array (j);
  mg_json_key (j, "parts");
  mg_json_begin_array (j);
  for (guint i = 0; i < r->parts->len; i++) {
    const MgPart *p = g_ptr_array_index (r->parts, i);
    mg_json_begin_object (j);
    mg_json_member_string (j, "path", p->path);
    mg_json_member_uint (j, "depth", p->depth);
    mg_json_member_string (j, "content_type", p->content_type);
    mg_json_member_string (j, "kind", mg_kind_name (p->kind));
    mg_json_key (j, "kinds");
    mg_report_json_kinds (j, p->kinds ? p->kinds : MG_KIND_BIT (p->kind));
    mg_json_member_string (j, "role", p->role);
    mg_json_member_string (j, "filename", p->filename);
    mg_json_member_string (j, "encoding", p->encoding);
    json_ids (j, "recipients", p->info.recipients);
    json_ids (j, "signers", p->info.signers);
    json_ids (j, "keys", p->info.keys);
    mg_json_member_string (j, "cipher", p->info.cipher);
    mg_json_member_string (j, "integrity", p->info.integrity);
    mg_json_member_string (j, "compression", p->info.compression);
    mg_json_member_string (j, "content", p->info.content);
    mg_json_member_uint (j, "passphrases", p->info.passphrases);
    mg_json_member_string (j, "error", p->error);
    mg_json_end_object (j);
  }
  mg_json_end_array (j);
  mg_json_end_object (j);
}
