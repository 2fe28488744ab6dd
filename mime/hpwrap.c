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
 * When obscure hides or removes a field a reader is shown (Subject; Keywords and Comments, which hcp_baseline
 * removes), each main body part of the payload gets RFC 9788's Legacy Display Element (the composer's side of what
 * section 4.5.3 tells a reader to hide, and what hpread.c removes), so that a client that does not implement RFC
 * 9788 still shows the real Subject: a text/plain part starts with "Subject: ..." lines and a blank line, a text/html
 * part with <div class="header-protection-legacy-display"><pre>Subject: ...</pre></div> after its <body>; each such
 * part's Content-Type gets hp-legacy-display="1" and charset=utf-8 (the values are decoded, so the part is
 * re-encoded: base64 and quoted-printable stay, other text becomes 7bit when it is ASCII with short lines, else
 * quoted-printable). The main body parts are the payload itself when it is text, the first part of multipart/mixed
 * and multipart/related, each part of multipart/alternative; nothing else is touched (never a part inside a signature:
 * the walk does not enter multipart/signed, and a payload that is one is left alone as said above), and everything
 * around a rewritten part stays byte for byte.
 *
 * PGP/Inline has no MIME inside the armor: nothing can carry the header fields, so the Subject stays outside in
 * clear; with obscure, a note records that for the log (README "Header protection" explains the choice). */
#include "config.h"

#include "hpwrap.h"
#include "hpread.h"

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

/* user_facing - a field a reader is shown: when the policy hides or removes one, the legacy display repeats it */
static gboolean
user_facing (const char *name)
{
  static const char *const shown[] = { "Subject",  "From",   "To",       "Cc",      "Date",
                                       "Reply-To", "Sender", "Keywords", "Comments" };

  for (gsize i = 0; i < G_N_ELEMENTS (shown); i++)
    if (g_ascii_strcasecmp (name, shown[i]) == 0)
      return TRUE;
  return FALSE;
}

/* display_line - "NAME: VALUE" as a reader sees it: @value (a checked raw value) unfolded and decoded (RFC 2047) to
 * UTF-8, every control character a space, so that it is one line of text whatever an encoded-word held */
static char *
display_line (const char *name, const char *value)
{
  g_autofree char *flat = g_strdup (value);
  g_autofree char *decoded = NULL;
  char *w = flat;

  for (const char *r = value; *r; r++)
    if (*r != '\r' && *r != '\n')
      *w++ = *r;
  *w = '\0';
  decoded = g_mime_utils_header_decode_text (NULL, g_strstrip (flat));
  if (decoded == NULL || !g_utf8_validate (decoded, -1, NULL))
    return NULL;
  for (char *c = decoded; *c; c++)
    if ((guchar) *c < 0x20 || *c == 0x7f)
      *c = ' ';
  return g_strdup_printf ("%s: %s", name, decoded);
}

/* seven_bit - whether @text (LF line ends) can travel as 7bit (RFC 2045 section 2.7): ASCII without NUL or CR, no
 * line over 998 octets */
static gboolean
seven_bit (const char *text)
{
  gsize line = 0;

  for (const char *c = text; *c; c++) {
    if ((guchar) *c >= 0x80 || *c == '\r')
      return FALSE;
    line = *c == '\n' ? 0 : line + 1;
    if (line > MAX_LINE)
      return FALSE;
  }
  return TRUE;
}

/* encode_text - @text (UTF-8, LF line ends) in @encoding (7bit: as it is; quoted-printable or base64), its lines
 * ended by @eol */
static GString *
encode_text (const char *text, GMimeContentEncoding encoding, const char *eol)
{
  GMimeEncoding state;
  gsize len = strlen (text), n;
  g_autofree char *buf = NULL;
  GString *out;

  if (encoding == GMIME_CONTENT_ENCODING_7BIT) {
    buf = g_strdup (text);
    n = len;
  } else {
    g_mime_encoding_init_encode (&state, encoding);
    buf = g_malloc (g_mime_encoding_outlen (&state, len) + 16);
    n = g_mime_encoding_flush (&state, text, len, buf);
  }
  out = g_string_sized_new (n + n / 32 + 8);
  for (gsize i = 0; i < n; i++)
    if (buf[i] == '\n')
      g_string_append (out, eol);
    else if (buf[i] != '\r')
      g_string_append_c (out, buf[i]);
  return out;
}

/* append_html_escaped - @text onto @out with &, <, > and " as HTML character references */
static void
append_html_escaped (GString *out, const char *text)
{
  for (const char *c = text; *c; c++)
    switch (*c) {
    case '&':
      g_string_append (out, "&amp;");
      break;
    case '<':
      g_string_append (out, "&lt;");
      break;
    case '>':
      g_string_append (out, "&gt;");
      break;
    case '"':
      g_string_append (out, "&quot;");
      break;
    default:
      g_string_append_c (out, *c);
    }
}

/* displayed_text - @text (the decoded content of a main body part, UTF-8) with the Legacy Display Element of
 * @shown ("Name: value" lines) in front (text/plain) or after its <body> tag (text/html), LF line ends */
static char *
displayed_text (const char *text, gboolean html, const GPtrArray *shown)
{
  g_autoptr (GString) out = g_string_sized_new (strlen (text) + 256);
  g_autoptr (GString) element = g_string_new (NULL);
  const char *body = NULL, *at = text;

  if (!html) {
    for (guint i = 0; i < shown->len; i++)
      g_string_append_printf (out, "%s\n", (const char *) g_ptr_array_index (shown, i));
    g_string_append_c (out, '\n');
  } else {
    /* after the <body ...> start tag when there is one, else at the very start */
    for (const char *c = strchr (text, '<'); c != NULL; c = strchr (c + 1, '<'))
      if (g_ascii_strncasecmp (c, "<body", 5) == 0 && (c[5] == '>' || g_ascii_isspace (c[5]))) {
        body = strchr (c, '>');
        break;
      }
    if (body != NULL) {
      at = body + 1;
      g_string_append_len (out, text, at - text);
      g_string_append_c (element, '\n');
    }
    g_string_append (element, "<div class=\"header-protection-legacy-display\">\n<pre>");
    for (guint i = 0; i < shown->len; i++) {
      if (i > 0)
        g_string_append_c (element, '\n');
      append_html_escaped (element, g_ptr_array_index (shown, i));
    }
    g_string_append (element, "</pre>\n</div>"); /* hpread.c removes <div> to </div>: the text around stays */
    g_string_append_len (out, element->str, (gssize) element->len);
  }
  for (const char *c = at; *c; c++)
    if (!(c[0] == '\r' && c[1] == '\n'))
      g_string_append_c (out, *c);
  return g_string_free (g_steal_pointer (&out), FALSE);
}

/* ct_displayed - the Content-Type field @f of a part (its text in @data) with charset=utf-8 (in place of its own
 * charset, or added) and hp-legacy-display="1", every other parameter as it was; NULL when its charset is not a
 * plain parameter (RFC 2231 charset*) or it carries hp-legacy-display already */
static GString *
ct_displayed (const char *data, const Field *f, const char *eol)
{
  g_autoptr (GString) out = g_string_new (NULL);
  gboolean charset = FALSE;
  gsize end = f->end, line;
  const char *p, *last;

  while (end > f->start && strchr ("; \t\r\n", data[end - 1]) != NULL)
    end--;
  g_string_append_len (out, data + f->start, (gssize) (end - f->start));
  if (g_strstr_len (out->str, (gssize) out->len, "hp-legacy-display") != NULL)
    return NULL;
  for (p = strchr (out->str, ';'); p != NULL && !charset; p = strchr (p + 1, ';')) {
    const char *name = p + 1 + strspn (p + 1, " \t\r\n"), *v, *value;
    if (g_ascii_strncasecmp (name, "charset", 7) != 0)
      continue;
    v = name + 7 + strspn (name + 7, " \t");
    if (*v == '*')
      return NULL;
    if (*v != '=')
      continue;
    value = v = v + 1 + strspn (v + 1, " \t");
    if (*v == '"') {
      for (v++; *v && *v != '"'; v++)
        if (*v == '\\' && v[1])
          v++;
      if (*v == '"')
        v++;
    } else
      v += strcspn (v, "; \t\r\n");
    {
      gsize at = (gsize) (value - out->str);
      g_string_erase (out, (gssize) at, v - value);
      g_string_insert (out, (gssize) at, "utf-8");
    }
    charset = TRUE;
  }
  if (!charset)
    g_string_append (out, "; charset=utf-8");
  last = strrchr (out->str, '\n');
  line = last ? out->len - (gsize) (last + 1 - out->str) : out->len;
  g_string_append_printf (out, ";%s hp-legacy-display=\"1\"%s", line + 25 > 76 ? eol : "", eol);
  return g_steal_pointer (&out);
}

/* display_leaf - the part @data (a main body part: header section, body) with its Legacy Display Element, or NULL
 * when it is not an inline text/plain or text/html part whose text can be read */
static GString *
display_leaf (const char *data, gsize len, const char *eol, const GPtrArray *shown)
{
  g_autoptr (GBytes) bytes = g_bytes_new_static (data, len);
  g_autoptr (GMimeStream) stream = mg_stream_for_bytes (bytes);
  g_autoptr (GMimeParser) parser = g_mime_parser_new_with_stream (stream);
  g_autoptr (GMimeObject) part = g_mime_parser_construct_part (parser, NULL);
  g_autoptr (GArray) fields = NULL;
  g_autoptr (GString) out = NULL, ct = NULL, body_text = NULL;
  g_autofree char *text = NULL, *shown_text = NULL;
  GMimeContentType *type = part ? g_mime_object_get_content_type (part) : NULL;
  GMimeContentEncoding encoding;
  gboolean html;
  gsize body;

  if (type == NULL || !GMIME_IS_TEXT_PART (part) || g_mime_part_is_attachment (GMIME_PART (part)))
    return NULL;
  html = g_mime_content_type_is_type (type, "text", "html");
  if (!html && !g_mime_content_type_is_type (type, "text", "plain"))
    return NULL;
  text = g_mime_text_part_get_text (GMIME_TEXT_PART (part));
  if (text == NULL || !g_utf8_validate (text, -1, NULL))
    return NULL;
  shown_text = displayed_text (text, html, shown);
  /* base64 and quoted-printable stay; 7bit and 8bit text stays 7bit when it can (ASCII, short lines) */
  encoding = g_mime_part_get_content_encoding (GMIME_PART (part));
  if (encoding != GMIME_CONTENT_ENCODING_BASE64 && encoding != GMIME_CONTENT_ENCODING_QUOTEDPRINTABLE)
    encoding = seven_bit (shown_text) ? GMIME_CONTENT_ENCODING_7BIT : GMIME_CONTENT_ENCODING_QUOTEDPRINTABLE;
  fields = header_fields (data, len, &body);
  out = g_string_sized_new (len + 512);
  for (guint i = 0; i < fields->len; i++) {
    const Field *f = &g_array_index (fields, Field, i);
    if (field_is (data, f, "Content-Transfer-Encoding"))
      continue;
    if (!field_is (data, f, "Content-Type") || ct != NULL) {
      g_string_append_len (out, data + f->start, (gssize) (f->end - f->start));
      continue;
    }
    if ((ct = ct_displayed (data, f, eol)) == NULL)
      return NULL;
    g_string_append_len (out, ct->str, (gssize) ct->len);
    g_string_append_printf (out, "Content-Transfer-Encoding: %s%s", g_mime_content_encoding_to_string (encoding), eol);
  }
  if (ct == NULL)
    return NULL; /* a text part without a Content-Type field is text/plain, but not ours to give one */
  g_string_append (out, eol);
  body_text = encode_text (shown_text, encoding, eol);
  g_string_append_len (out, body_text->str, (gssize) body_text->len);
  return g_steal_pointer (&out);
}

/* Range - one body part of a multipart entity: [start, end), without the line end before the next delimiter */
typedef struct {
  gsize start, end;
} Range;

/* body_parts - the body parts of the multipart entity whose body is @data[@from, @len) (RFC 2046 section 5.1.1);
 * NULL when the close delimiter is missing (a structure we do not rewrite) */
static GArray *
body_parts (const char *data, gsize from, gsize len, const char *boundary)
{
  g_autoptr (GArray) parts = g_array_new (FALSE, FALSE, sizeof (Range));
  gsize blen = strlen (boundary), pos = from;
  gboolean in_part = FALSE;
  Range r = { 0, 0 };

  while (pos < len) {
    const char *nl = memchr (data + pos, '\n', len - pos);
    gsize next = nl ? (gsize) (nl - data) + 1 : len;
    if (next - pos >= blen + 2 && data[pos] == '-' && data[pos + 1] == '-' &&
        memcmp (data + pos + 2, boundary, blen) == 0) {
      const char *rest = data + pos + 2 + blen;
      gboolean close = next - pos >= blen + 4 && rest[0] == '-' && rest[1] == '-';
      gsize end = pos;
      if (!close)
        for (const char *c = rest; c < data + next; c++)
          if (*c != ' ' && *c != '\t' && *c != '\r' && *c != '\n')
            goto not_delimiter;
      if (in_part) {
        if (end > r.start && data[end - 1] == '\n')
          end--;
        if (end > r.start && data[end - 1] == '\r')
          end--;
        r.end = end;
        g_array_append_val (parts, r);
      }
      if (close)
        return g_steal_pointer (&parts);
      in_part = TRUE;
      r.start = next;
    }
  not_delimiter:
    pos = next;
  }
  return NULL;
}

/* display_entity - @data (an entity of the payload) with the Legacy Display Element in each of its main body parts,
 * or NULL when it has none that can take one; @depth bounds the walk as hpread.c's does */
static GString *
display_entity (const char *data, gsize len, const char *eol, const GPtrArray *shown, guint depth)
{
  g_autoptr (GArray) fields = NULL, parts = NULL;
  g_autoptr (GMimeContentType) ct = NULL;
  g_autoptr (GString) out = NULL;
  g_autofree char *ct_value = NULL;
  const char *boundary;
  gboolean all, changed = FALSE;
  gsize body = 0, done;

  if (depth > 8)
    return NULL;
  fields = header_fields (data, len, &body);
  for (guint i = 0; i < fields->len && ct_value == NULL; i++) {
    const Field *f = &g_array_index (fields, Field, i);
    if (field_is (data, f, "Content-Type") && f->colon < f->end) {
      ct_value = g_strndup (data + f->colon + 1, f->end - f->colon - 1);
      g_strdelimit (ct_value, "\r\n", ' ');
    }
  }
  ct = g_mime_content_type_parse (NULL, ct_value ? ct_value : "text/plain");
  if (ct == NULL)
    return NULL;
  if (!g_mime_content_type_is_type (ct, "multipart", "*"))
    return display_leaf (data, len, eol, shown);
  all = g_mime_content_type_is_type (ct, "multipart", "alternative");
  if (!all && !g_mime_content_type_is_type (ct, "multipart", "mixed") &&
      !g_mime_content_type_is_type (ct, "multipart", "related"))
    return NULL;
  boundary = g_mime_content_type_get_parameter (ct, "boundary");
  if (boundary == NULL || *boundary == '\0' || (parts = body_parts (data, body, len, boundary)) == NULL)
    return NULL;
  out = g_string_sized_new (len + 1024);
  done = 0;
  for (guint i = 0; i < parts->len && (all || i == 0); i++) {
    const Range *r = &g_array_index (parts, Range, i);
    g_autoptr (GString) part = display_entity (data + r->start, r->end - r->start, eol, shown, depth + 1);
    if (part == NULL)
      continue;
    g_string_append_len (out, data + done, (gssize) (r->start - done));
    g_string_append_len (out, part->str, (gssize) part->len);
    done = r->end;
    changed = TRUE;
  }
  if (!changed)
    return NULL;
  g_string_append_len (out, data + done, (gssize) (len - done));
  return g_steal_pointer (&out);
}

/**
 * mg_hpwrap_entity - @entity (a MIME entity, its header section first) as RFC 9788's Cryptographic Payload of
 * @message.
 * @message: the message whose header fields are copied in; when @encrypting, its own header is rewritten by the
 *   header confidentiality policy of @hp
 * @encrypting: the payload will be encrypted (hp="cipher", HP-Outer fields) rather than only signed (hp="clear")
 * @notes: (element-type utf8): what an admin should know (a field left outside, a payload left alone) is added here
 *
 * When @hp obscures or removes a field a reader is shown, the payload's main body parts also get the Legacy Display
 * Element of those fields (hp-legacy-display="1"); a payload with no text main body part gets none, and a note.
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
  g_autoptr (GString) outer = NULL;                                      /* the HP-Outer fields */
  g_autoptr (GPtrArray) shown = g_ptr_array_new_with_free_func (g_free); /* the legacy display's lines */
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
    value = mg_hp_name_ok (name) && copied < MAX_FIELDS ? clean_value (g_mime_header_get_raw_value (h), eol) : NULL;
    if (value == NULL) {
      skipped = TRUE; /* stays outside as it came, not obscured: never lost */
      continue;
    }
    g_string_append_printf (out, "%s: %s%s", name, value, eol);
    copied++;
    if (!encrypting)
      continue;
    outside = hcp (hp, name, value);
    if ((outside == NULL || strcmp (outside, value) != 0) && user_facing (name)) {
      char *line = display_line (name, value);
      if (line != NULL)
        g_ptr_array_add (shown, line);
    }
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
  if (shown->len > 0) {
    /* what the policy hid from the outer header, shown to readers that do not know RFC 9788 */
    g_autoptr (GString) displayed = display_entity (out->str, out->len, eol, shown, 0);
    if (displayed != NULL) {
      g_string_free (out, TRUE);
      out = g_steal_pointer (&displayed);
    } else
      g_ptr_array_add (notes, g_strdup (_ ("header protection: no main body part can show the obscured Subject "
                                           "(no legacy display): clients without RFC 9788 show \"[...]\"")));
  }
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
