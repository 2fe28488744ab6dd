/* hpwrap.c - header protection going out (RFC 9788 "Header Protection for Cryptographically Protected Email").
 *
 * Before mimegate signs (multipart/signed) or encrypts (PGP/MIME, S/MIME) an entity, that entity becomes the
 * Cryptographic Payload of RFC 9788 section 2: its header section receives a copy of the message's header fields,
 * and its Content-Type the parameter hp="cipher" (the message will be encrypted) or hp="clear" (only signed). When
 * encrypting, the outer header is then rewritten by the header confidentiality policy (section 3.2): obscure is
 * hcp_baseline (Subject "[...]", Comments and Keywords removed, the rest as it was, Message-ID included), sign-only
 * is hcp_no_confidentiality (nothing changes outside); every field left outside is recorded inside as
 * "HP-Outer: NAME: VALUE" (section 2.2), so that a reader can tell what the outer header said.
 *
 * Which fields travel inside: every field of the message but the structural ones (Content-*, MIME-Version), the
 * trace and transport fields that relays add (Received, Return-Path, DKIM and ARC signatures, Authentication-Results
 * and the like: they describe the transport, not the message) and Bcc (a copy for the other recipients must never
 * carry the blind ones). Each field is copied as it came (its raw value, RFC 2047 words and folding kept), and only
 * when it passes the same checks as any value mimegate writes into a header: a field name of printable ASCII, no
 * line end that is not a fold (no header injection), no line beyond RFC 5322's 998 octets, a bounded size and
 * count. A field that fails stays outside as it was and unobscured (never lost), and a note says so.
 *
 * The payload is edited as text, so that its body (and any signed part inside it) stays byte for byte as it was.
 * A payload that already carries header protection (hp= or the legacy protected-headers= parameter: the sender
 * made it) or that is itself a signature or encryption layer (the sender's multipart/signed: its first part cannot
 * change without breaking the signature) is left alone, and so is the outer header then.
 *
 * PGP/Inline has no MIME inside the armor: nothing can carry the header fields, so the Subject stays outside in
 * clear; with obscure, a note records that for the log (README "Header protection" explains the choice). */
#include "config.h"

#include "hpwrap.h"

#include <string.h>

#include <glib/gi18n.h>

#include "mg-gmime.h"

#define MAX_LINE 998          /* RFC 5322 section 2.1.1 */
#define MAX_FIELD (32 * 1024) /* one field's value; References of a long thread stay far below */
#define MAX_FIELDS 256        /* fields copied into one payload */

static const char *const hp_names[MG_HP_COUNT] = { "off", "sign-only", "obscure" };

/* mg_hp_name - the policy key's value for @hp (static) */
const char *
mg_hp_name (MgHeaderProtection hp)
{
  g_return_val_if_fail (hp < MG_HP_COUNT, "off");
  return hp_names[hp];
}

/* mg_hp_from_name - @name ("off", "sign-only", "obscure") as MgHeaderProtection; FALSE for any other */
gboolean
mg_hp_from_name (const char *name, MgHeaderProtection *hp)
{
  for (guint i = 0; i < MG_HP_COUNT; i++)
    if (g_strcmp0 (name, hp_names[i]) == 0) {
      *hp = i;
      return TRUE;
    }
  return FALSE;
}

/* protectable - whether a field named @name travels in the payload (not structural, not trace, not Bcc) */
static gboolean
protectable (const char *name)
{
  static const char *const skip[] = { "MIME-Version",
                                      "Bcc",
                                      "Received",
                                      "Return-Path",
                                      "Delivered-To",
                                      "X-Original-To",
                                      "Envelope-To",
                                      "DKIM-Signature",
                                      "ARC-Seal",
                                      "ARC-Message-Signature",
                                      "ARC-Authentication-Results",
                                      "Authentication-Results",
                                      "Received-SPF",
                                      "HP-Outer" };

  if (g_ascii_strncasecmp (name, "Content-", 8) == 0 || g_ascii_strncasecmp (name, "Resent-", 7) == 0)
    return FALSE;
  for (gsize i = 0; i < G_N_ELEMENTS (skip); i++)
    if (g_ascii_strcasecmp (name, skip[i]) == 0)
      return FALSE;
  return TRUE;
}

/* name_ok - a field name we may write: 1 to 76 printable ASCII characters without ':' (RFC 5322 ftext) */
static gboolean
name_ok (const char *name)
{
  gsize n = name ? strlen (name) : 0;

  if (n == 0 || n > 76)
    return FALSE;
  for (const char *c = name; *c; c++)
    if ((guchar) *c < 33 || (guchar) *c > 126 || *c == ':')
      return FALSE;
  return TRUE;
}

/* clean_value - @raw (a field's raw value as GMime read it) without its leading white space and final line end,
 * every line end made @eol; NULL when a line end is not a fold (CR or LF not followed by white space: injection),
 * a line is longer than RFC 5322 allows, or the value is too long */
static char *
clean_value (const char *raw, const char *eol)
{
  g_autoptr (GString) out = g_string_new (NULL);
  gsize n, line = 0;
  const char *v = raw ? raw : "";

  while (*v == ' ' || *v == '\t' || *v == '\r' || *v == '\n')
    v++;
  n = strlen (v);
  while (n > 0 && (v[n - 1] == '\r' || v[n - 1] == '\n' || v[n - 1] == ' ' || v[n - 1] == '\t'))
    n--;
  if (n > MAX_FIELD)
    return NULL;
  for (gsize i = 0; i < n; i++) {
    if (v[i] == '\r' || v[i] == '\n') {
      if (v[i] == '\r' && i + 1 < n && v[i + 1] == '\n')
        i++;
      else if (v[i] == '\r')
        return NULL; /* a bare CR */
      if (i + 1 >= n || (v[i + 1] != ' ' && v[i + 1] != '\t'))
        return NULL; /* a line end that is not a fold */
      g_string_append (out, eol);
      line = 0;
      continue;
    }
    if (v[i] == '\0' || ++line > MAX_LINE - 80) /* room for the field name and "HP-Outer: " before it */
      return NULL;
    g_string_append_c (out, v[i]);
  }
  return g_string_free (g_steal_pointer (&out), FALSE);
}

/* hcp - the outer value of the field @name with value @value under @hp (RFC 9788 section 3.2): hcp_baseline for
 * obscure, hcp_no_confidentiality for sign-only. Returns: (transfer full) (nullable): NULL removes the field. */
static char *
hcp (MgHeaderProtection hp, const char *name, const char *value)
{
  if (hp == MG_HP_OBSCURE) {
    if (g_ascii_strcasecmp (name, "Subject") == 0)
      return g_strdup ("[...]");
    if (g_ascii_strcasecmp (name, "Comments") == 0 || g_ascii_strcasecmp (name, "Keywords") == 0)
      return NULL;
  }
  return g_strdup (value);
}

/* Field - one field of the payload's own header section, as text: [start, end) including its line end(s) */
typedef struct {
  gsize start, end, colon;
} Field;

/* header_fields - the fields of the header section at the start of @data; *@body: where the empty line (or the end)
 * is. The parse is the one stamp_raw in convert.c uses: a field runs on over lines that start with white space. */
static GArray *
header_fields (const char *data, gsize len, gsize *body)
{
  GArray *fields = g_array_new (FALSE, FALSE, sizeof (Field));
  gsize pos = 0;

  while (pos < len && data[pos] != '\n' && !(data[pos] == '\r' && pos + 1 < len && data[pos + 1] == '\n')) {
    Field f = { pos, pos, 0 };
    const char *colon;
    do {
      const char *nl = memchr (data + f.end, '\n', len - f.end);
      f.end = nl ? (gsize) (nl - data) + 1 : len;
    } while (f.end < len && (data[f.end] == ' ' || data[f.end] == '\t'));
    colon = memchr (data + pos, ':', f.end - pos);
    f.colon = colon ? (gsize) (colon - data) : f.end;
    g_array_append_val (fields, f);
    pos = f.end;
  }
  *body = pos;
  return fields;
}

/* field_is - whether @f is named @name */
static gboolean
field_is (const char *data, const Field *f, const char *name)
{
  gsize n = strlen (name);

  return f->colon - f->start == n && g_ascii_strncasecmp (data + f->start, name, n) == 0;
}

/* payload_refused - why the payload whose Content-Type value is @ct_value must stay as it is, or NULL */
static const char *
payload_refused (const char *ct_value)
{
  g_autoptr (GMimeContentType) ct = g_mime_content_type_parse (NULL, ct_value ? ct_value : "text/plain");

  if (ct == NULL)
    return NULL;
  if (g_mime_content_type_get_parameter (ct, "hp") != NULL ||
      g_mime_content_type_get_parameter (ct, "protected-headers") != NULL)
    return N_ ("header protection: the content carries the sender's own protected headers; they are kept as they are");
  if (g_mime_content_type_is_type (ct, "multipart", "signed") ||
      g_mime_content_type_is_type (ct, "multipart", "encrypted") ||
      g_mime_content_type_is_type (ct, "application", "pkcs7-mime") ||
      g_mime_content_type_is_type (ct, "application", "x-pkcs7-mime"))
    return N_ ("header protection: the content is signed or encrypted by its sender and cannot take the header "
               "fields; the outer header is left as it is");
  return NULL;
}

/**
 * mg_hpwrap_entity - @entity (a MIME entity, its header section first) as RFC 9788's Cryptographic Payload of
 * @message.
 * @message: the message whose header fields are copied in; when @encrypting, its own header is rewritten by the
 *   header confidentiality policy of @hp
 * @encrypting: the payload will be encrypted (hp="cipher", HP-Outer fields) rather than only signed (hp="clear")
 * @notes: (element-type utf8): what an admin should know (a field left outside, a payload left alone) is added here
 *
 * Returns: (transfer full) (nullable): the payload's new bytes, with @entity's line ends; %NULL when @hp is off or
 * the payload is left as it is (then @message is unchanged too, and a note says why).
 */
GBytes *
mg_hpwrap_entity (GMimeMessage *message, GBytes *entity, MgHeaderProtection hp, gboolean encrypting, GPtrArray *notes)
{
  gsize len = 0, body = 0;
  const char *data = entity ? g_bytes_get_data (entity, &len) : NULL;
  const char *nl = data && len > 0 ? memchr (data, '\n', len) : NULL;
  const char *eol = nl != NULL && nl > data && nl[-1] == '\r' ? "\r\n" : "\n";
  g_autoptr (GArray) fields = NULL;
  g_autoptr (GString) out = NULL;
  g_autoptr (GString) outer = NULL; /* the HP-Outer fields */
  g_autofree char *ct_value = NULL;
  GMimeHeaderList *headers;
  const Field *ct = NULL;
  const char *why;
  guint copied = 0;
  gboolean skipped = FALSE;

  g_return_val_if_fail (GMIME_IS_MESSAGE (message), NULL);
  if (hp == MG_HP_OFF || data == NULL)
    return NULL;
  fields = header_fields (data, len, &body);
  for (guint i = 0; i < fields->len; i++) {
    const Field *f = &g_array_index (fields, Field, i);
    if (field_is (data, f, "Content-Type") && ct == NULL && f->colon < f->end) {
      ct = f;
      ct_value = g_strndup (data + f->colon + 1, f->end - f->colon - 1);
      g_strdelimit (ct_value, "\r\n", ' ');
    }
  }
  if ((why = payload_refused (ct_value)) != NULL) {
    g_ptr_array_add (notes, g_strdup (_ (why)));
    return NULL;
  }

  /* the payload's own fields, its Content-Type with the hp parameter (RFC 9788 section 2.1.1) */
  out = g_string_sized_new (len + 2048);
  outer = g_string_new (NULL);
  for (guint i = 0; i < fields->len; i++) {
    const Field *f = &g_array_index (fields, Field, i);
    gsize end = f->end;
    if (f != ct) {
      g_string_append_len (out, data + f->start, (gssize) (f->end - f->start));
      continue;
    }
    while (end > f->start && (data[end - 1] == '\r' || data[end - 1] == '\n'))
      end--;
    g_string_append_len (out, data + f->start, (gssize) (end - f->start));
    g_string_append_printf (out, "; hp=\"%s\"%s", encrypting ? "cipher" : "clear", eol);
  }
  if (ct == NULL)
    g_string_append_printf (out, "Content-Type: text/plain; charset=us-ascii; hp=\"%s\"%s",
                            encrypting ? "cipher" : "clear", eol);

  /* the message's fields, each copied as it came; outside, the policy's value, recorded as HP-Outer (section 2.2) */
  headers = g_mime_object_get_header_list (GMIME_OBJECT (message));
  for (int i = 0; i < g_mime_header_list_get_count (headers); i++) {
    GMimeHeader *h = g_mime_header_list_get_header_at (headers, i);
    const char *name = g_mime_header_get_name (h);
    g_autofree char *value = NULL, *outside = NULL;
    if (name == NULL || !protectable (name))
      continue;
    value = name_ok (name) && copied < MAX_FIELDS ? clean_value (g_mime_header_get_raw_value (h), eol) : NULL;
    if (value == NULL) {
      skipped = TRUE; /* stays outside as it came, not obscured: never lost */
      continue;
    }
    g_string_append_printf (out, "%s: %s%s", name, value, eol);
    copied++;
    if (!encrypting)
      continue;
    outside = hcp (hp, name, value);
    if (outside == NULL) {
      g_mime_header_list_remove_at (headers, i--);
      continue;
    }
    if (strcmp (outside, value) != 0)
      g_mime_header_set_value (h, NULL, outside, NULL);
    g_string_append_printf (outer, "HP-Outer: %s: %s%s", name, outside, eol);
  }
  g_string_append_len (out, outer->str, (gssize) outer->len);
  if (body == len) /* an entity with no empty line after its header: give it one */
    g_string_append (out, eol);
  g_string_append_len (out, data + body, (gssize) (len - body));
  if (skipped)
    g_ptr_array_add (notes, g_strdup (_ ("header protection: a header field failed the checks (line end, length) "
                                         "and stays outside as it came, unprotected")));
  return g_string_free_to_bytes (g_steal_pointer (&out));
}

/**
 * mg_hpwrap_inline - what header protection can do for PGP/Inline (RFC 9788 needs MIME inside the encryption,
 * PGP/Inline has none): nothing. With obscure, a note says that the Subject of @message travels outside in clear,
 * so that the log shows it; the form is not refused (README "Header protection": Microsoft 365 reads only it).
 * @notes: (element-type utf8): the note is added here
 */
void
mg_hpwrap_inline (GMimeMessage *message, MgHeaderProtection hp, GPtrArray *notes)
{
  if (hp != MG_HP_OBSCURE || g_mime_message_get_subject (message) == NULL)
    return;
  g_ptr_array_add (notes, g_strdup (_ ("header protection: PGP/Inline cannot protect header fields; the Subject "
                                       "travels in clear")));
}
