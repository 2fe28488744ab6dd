/* armor.c - OpenPGP ASCII armor in text: where blocks are, and their decoded bytes (RFC 9580 sections 6-7).
 *
 * Mail clients put armor in text/plain and text/html, in any transfer encoding, with CRLF or LF line ends, indented,
 * and with text before and after it. This reads lines of already transfer-decoded text: a BEGIN line may have leading
 * blanks (never a quote marker: quoted armor is a reply, not a payload), armor headers are skipped up to the blank
 * line, and the body runs to the checksum or END line. HTML is first reduced to text (tags dropped, <br> and block
 * ends become line breaks, entities such as &nbsp; decoded). */
#include "config.h"

#include "armor.h"

#include <string.h>

#include "detect.h"

typedef struct {
  const char *label;
  MgArmorType type;
} Label;

static const Label labels[] = {
  { "MESSAGE", MG_ARMOR_MESSAGE },
  { "SIGNED MESSAGE", MG_ARMOR_SIGNED_MESSAGE },
  { "PUBLIC KEY BLOCK", MG_ARMOR_PUBLIC_KEY },
  { "PRIVATE KEY BLOCK", MG_ARMOR_PRIVATE_KEY },
  { "SECRET KEY BLOCK", MG_ARMOR_PRIVATE_KEY },
  { "SIGNATURE", MG_ARMOR_SIGNATURE },
};

/* mg_armor_type_name - a short English name for logs and reports */
const char *
mg_armor_type_name (MgArmorType type)
{
  switch (type) {
  case MG_ARMOR_MESSAGE:
    return "message";
  case MG_ARMOR_SIGNED_MESSAGE:
    return "signed-message";
  case MG_ARMOR_PUBLIC_KEY:
    return "public-key";
  case MG_ARMOR_PRIVATE_KEY:
    return "private-key";
  case MG_ARMOR_SIGNATURE:
    return "signature";
  }
  return "unknown";
}

/* Line - one line of the text without its line end; @next is where the following line starts. */
typedef struct {
  const char *s;
  gsize len;
  gsize start;
  gsize next;
} Line;

static gboolean
next_line (const char *text, gsize len, gsize pos, Line *line)
{
  const char *nl;

  if (pos >= len)
    return FALSE;
  nl = memchr (text + pos, '\n', len - pos);
  line->s = text + pos;
  line->start = pos;
  line->len = nl ? (gsize) (nl - (text + pos)) : len - pos;
  line->next = nl ? (gsize) (nl - text) + 1 : len;
  while (line->len > 0 &&
         (line->s[line->len - 1] == '\r' || line->s[line->len - 1] == ' ' || line->s[line->len - 1] == '\t'))
    line->len--;
  return TRUE;
}

/* strip_lead - skips leading blanks of @line */
static void
strip_lead (Line *line)
{
  while (line->len > 0 && (line->s[0] == ' ' || line->s[0] == '\t')) {
    line->s++;
    line->len--;
  }
}

/* armor_line - whether @line is "-----BEGIN PGP <label>-----" (or END); sets *@type */
static gboolean
armor_line (const Line *line, const char *what, MgArmorType *type)
{
  gsize wl = strlen (what);
  const char *p;
  gsize rest;

  if (line->len < 10 + wl + 4 || strncmp (line->s, "-----", 5) != 0 || strncmp (line->s + 5, what, wl) != 0 ||
      strncmp (line->s + 5 + wl, " PGP ", 5) != 0)
    return FALSE;
  p = line->s + 10 + wl;
  rest = line->len - 10 - wl;
  for (gsize i = 0; i < G_N_ELEMENTS (labels); i++) {
    gsize ll = strlen (labels[i].label);
    if (rest == ll + 5 && strncmp (p, labels[i].label, ll) == 0 && strncmp (p + ll, "-----", 5) == 0) {
      *type = labels[i].type;
      return TRUE;
    }
  }
  /* "BEGIN PGP MESSAGE, PART 1/2" and the like: a (multi-part) message */
  if (rest > 8 && strncmp (p, "MESSAGE,", 8) == 0 && strncmp (line->s + line->len - 5, "-----", 5) == 0) {
    *type = MG_ARMOR_MESSAGE;
    return TRUE;
  }
  return FALSE;
}

/* is_header - an armor header line "Key: value" */
static gboolean
is_header (const Line *line)
{
  const char *colon = memchr (line->s, ':', line->len);

  if (colon == NULL || colon == line->s || (gsize) (colon - line->s) + 1 >= line->len || colon[1] != ' ')
    return FALSE;
  for (const char *c = line->s; c < colon; c++)
    if (!g_ascii_isalnum (*c) && *c != '-')
      return FALSE;
  return TRUE;
}

/* read_body - from the line after BEGIN: skips armor headers and blank lines, sets the body range and the block's
 * end; returns whether an END line of the same type closed it */
static gboolean
read_body (const char *text, gsize len, gsize pos, MgArmorType type, MgArmorBlock *b)
{
  gboolean in_headers = TRUE;
  Line line;

  b->data_begin = b->data_end = pos;
  while (next_line (text, len, pos, &line)) {
    MgArmorType end_type;
    strip_lead (&line);
    pos = line.next;
    if (armor_line (&line, "END", &end_type)) {
      b->end = line.next;
      b->data_end = MAX (b->data_end, b->data_begin); /* a body of only a checksum line is empty, not negative */
      return end_type == type;
    }
    if (line.len == 0)
      continue;
    if (in_headers) {
      if (is_header (&line))
        continue;
      in_headers = FALSE;
      b->data_begin = line.start;
    }
    if (line.s[0] == '=' && line.len == 5)
      continue; /* the CRC-24 checksum */
    b->data_end = line.next;
  }
  b->end = len;
  b->data_end = MAX (b->data_end, b->data_begin);
  return FALSE;
}

/**
 * mg_armor_find - every armored block in @text, in order.
 * @text: transfer-decoded text; need not be NUL-terminated
 *
 * Returns: (transfer full) (element-type MgArmorBlock): the blocks, possibly none.
 */
GArray *
mg_armor_find (const char *text, gsize len)
{
  GArray *blocks = g_array_new (FALSE, TRUE, sizeof (MgArmorBlock));
  gsize pos = 0;
  Line line;

  while (blocks->len < MG_DETECT_MAX_ARMOR_BLOCKS && next_line (text, len, pos, &line)) {
    MgArmorBlock b = { 0 };
    pos = line.next;
    strip_lead (&line);
    if (!armor_line (&line, "BEGIN", &b.type))
      continue;
    b.begin = line.start;
    if (b.type == MG_ARMOR_SIGNED_MESSAGE) {
      /* The cleartext runs to the signature's BEGIN line; the block ends with the signature's END line. */
      gboolean found = FALSE;
      while (next_line (text, len, pos, &line)) {
        MgArmorType t;
        pos = line.next;
        strip_lead (&line);
        if (armor_line (&line, "BEGIN", &t) && t == MG_ARMOR_SIGNATURE) {
          found = TRUE;
          break;
        }
      }
      if (!found) {
        b.end = b.data_begin = b.data_end = len;
        b.complete = FALSE;
        g_array_append_val (blocks, b);
        break;
      }
      b.complete = read_body (text, len, pos, MG_ARMOR_SIGNATURE, &b);
    } else
      b.complete = read_body (text, len, pos, b.type, &b);
    pos = b.end;
    g_array_append_val (blocks, b);
  }
  return blocks;
}

/**
 * mg_armor_decode - the binary OpenPGP data of one block (for a signed message: its signature).
 *
 * Returns: (transfer full): the decoded bytes, or %NULL with @error set when the body is not base64.
 */
GBytes *
mg_armor_decode (const char *text, const MgArmorBlock *block, GError **error)
{
  gsize n = block->data_end > block->data_begin ? block->data_end - block->data_begin : 0;
  g_autofree guchar *out = g_malloc (n / 4 * 3 + 4);
  gint state = 0;
  guint save = 0;
  gsize olen, valid = 0;

  g_autofree char *clean = g_malloc (n + 1);

  /* Only the base64 alphabet is kept. Blanks, and the non-ASCII bytes that mail clients insert as non-breaking spaces,
   * are layout; any other ASCII character means this is not armor. */
  for (gsize i = block->data_begin; i < block->data_end; i++) {
    char c = text[i];
    if (g_ascii_isalnum (c) || c == '+' || c == '/' || c == '=')
      clean[valid++] = c;
    else if (!g_ascii_isspace (c) && (guchar) c < 0x80) {
      g_set_error (error, MG_DETECT_ERROR, MG_DETECT_ERROR_MALFORMED, "armor body holds a character outside base64");
      return NULL;
    }
  }
  if (valid == 0) {
    g_set_error_literal (error, MG_DETECT_ERROR, MG_DETECT_ERROR_MALFORMED, "armor body is empty");
    return NULL;
  }
  olen = g_base64_decode_step (clean, valid, out, &state, &save);
  return g_bytes_new (out, olen);
}

/* entity - decodes one HTML entity at @s (after '&'); returns its length consumed, 0 if unknown */
static gsize
entity (const char *s, gsize len, GString *out)
{
  static const struct {
    const char *name;
    const char *text;
  } named[] = {
    { "nbsp;", " " }, { "lt;", "<" }, { "gt;", ">" }, { "amp;", "&" }, { "quot;", "\"" }, { "apos;", "'" },
  };

  for (gsize i = 0; i < G_N_ELEMENTS (named); i++) {
    gsize nl = strlen (named[i].name);
    if (len >= nl && g_ascii_strncasecmp (s, named[i].name, nl) == 0) {
      g_string_append (out, named[i].text);
      return nl;
    }
  }
  if (len >= 3 && s[0] == '#') {
    gboolean hex = (s[1] == 'x' || s[1] == 'X');
    gsize p = hex ? 2 : 1;
    gunichar c = 0;
    while (p < len && p < 10 && (hex ? g_ascii_isxdigit (s[p]) : g_ascii_isdigit (s[p]))) {
      c = c * (hex ? 16 : 10) + (hex ? (gunichar) g_ascii_xdigit_value (s[p]) : (gunichar) (s[p] - '0'));
      p++;
    }
    if (p < len && s[p] == ';' && g_unichar_validate (c)) {
      g_string_append_unichar (out, c == 0xa0 ? ' ' : c);
      return p + 1;
    }
  }
  return 0;
}

/**
 * mg_armor_html_to_text - reduces HTML to the text a reader sees, for finding armor in it.
 *
 * Returns: (transfer full): NUL-terminated text; its length in *@out_len.
 */
char *
mg_armor_html_to_text (const char *html, gsize len, gsize *out_len)
{
  static const char *const breaks[] = { "br", "/p", "p", "/div", "div", "/pre", "pre", "/tr", "/li", "/h" };
  GString *out = g_string_sized_new (len);
  gsize i = 0;

  while (i < len) {
    char c = html[i];
    if (c == '<') {
      const char *close = memchr (html + i, '>', len - i);
      gsize tl = close ? (gsize) (close - (html + i)) - 1 : len - i - 1;
      const char *tag = html + i + 1;
      for (gsize k = 0; k < G_N_ELEMENTS (breaks); k++) {
        gsize bl = strlen (breaks[k]);
        if (tl >= bl && g_ascii_strncasecmp (tag, breaks[k], bl) == 0 &&
            (tl == bl || !g_ascii_isalpha (tag[bl]) || breaks[k][0] == '/')) {
          g_string_append_c (out, '\n');
          break;
        }
      }
      i = close ? (gsize) (close - html) + 1 : len;
    } else if (c == '&') {
      gsize used = entity (html + i + 1, len - i - 1, out);
      if (used == 0)
        g_string_append_c (out, c);
      i += 1 + used;
    } else if (c == '\r' || (c == '\n' && out->len > 0 && out->str[out->len - 1] == '\n')) {
      i++; /* a source line break right after <br> is not a second line break */
    } else {
      g_string_append_c (out, c);
      i++;
    }
  }
  *out_len = out->len;
  return g_string_free (out, FALSE);
}
