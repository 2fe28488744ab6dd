/* hpread.c - header protection coming in (RFC 9788; draft-autocrypt-lamps-protected-headers "protected-headers=v1").
 *
 * A sender that protects its header fields puts them on the Cryptographic Payload: the entity directly inside the
 * encryption and/or signature (the first part of multipart/signed, the content of opaque signed-data, the decrypted
 * entity), marked by a Content-Type parameter hp="cipher" (encrypted) or hp="clear" (signed only), or by the older
 * protected-headers="v1". Outside, the encrypted message may carry an obscured Subject ("[...]", "..."); inside,
 * HP-Outer fields record what the sender left outside (RFC 9788 section 2.2).
 *
 * When the gateway delivers such a message decrypted (form plain), the delivered header fields are the protected
 * ones (RFC 9788 section 4: a receiver renders the protected fields, not the outer ones): each protected field
 * replaces the outer fields of its name, outer fields the payload does not name (trace fields, list fields added in
 * transit) stay, HP-Outer is never delivered, and the Legacy Display Element (RFC 9788 section 4.5.3: the leading
 * "Subject: ..." lines of a main body part marked hp-legacy-display="1", or its HTML div; in the older scheme the
 * text/rfc822-headers or protected-headers text/plain part in front of the body) is removed, since the header now
 * shows the same fields. Inside a signature that travels on (multipart/signed) nothing is changed, so that the
 * recipient can still verify it.
 *
 * Protection is honoured only where it is real: fields that came out of decryption (confidential), or fields that a
 * good signature by a trusted signer covers. A payload that is neither (an unencrypted message with hp="clear" and a
 * failed or unknown signature) is delivered as it came. Whether the fields were signed is stamped by the caller
 * (mg_hp_resinfo) and never claimed otherwise. Every field is copied only after the checks a header value needs
 * before it goes into our header block: a field name of RFC 5322 ftext, no bare CR or LF in its raw value (only
 * folding), no control characters once decoded (an encoded-word cannot smuggle a line break), each line within 998
 * octets and the whole value within MG_HP_MAX_VALUE. Log notes say that a Subject differed or a field was refused,
 * never what it said. */
#include "config.h"

#include "hpread.h"

#include <string.h>

#include <glib/gi18n.h>

/* outer fields a payload never replaces and that are never copied from one: they describe the transport or our own
 * verdicts, not what the sender wrote (a payload could otherwise forge them) */
static const char *const never_copied[] = {
  "HP-Outer",      "Received", "Return-Path",           "Authentication-Results",     "DKIM-Signature", "Delivered-To",
  "X-Original-To", "Arc-Seal", "ARC-Message-Signature", "ARC-Authentication-Results", "MIME-Version",
};

void
mg_hp_free (MgHp *hp)
{
  if (hp == NULL)
    return;
  g_clear_object (&hp->payload);
  g_clear_pointer (&hp->names, g_ptr_array_unref);
  g_clear_pointer (&hp->values, g_ptr_array_unref);
  g_clear_pointer (&hp->raws, g_ptr_array_unref);
  g_clear_pointer (&hp->outer, g_ptr_array_unref);
  g_free (hp);
}

/* mg_hp_scheme_name - "cipher", "clear", "v1" (the legacy scheme), "none" */
const char *
mg_hp_scheme_name (MgHpScheme scheme)
{
  switch (scheme) {
  case MG_HP_CIPHER:
    return "cipher";
  case MG_HP_CLEAR:
    return "clear";
  case MG_HP_LEGACY:
    return "v1";
  case MG_HP_NONE:
    break;
  }
  return "none";
}

/* mg_hp_scheme - how @payload's Content-Type declares its header fields protected: RFC 9788 hp= wins over the legacy
 * protected-headers="v1" (senders write both); an unknown hp value declares nothing */
MgHpScheme
mg_hp_scheme (GMimeObject *payload)
{
  const char *hp, *legacy;

  if (payload == NULL || g_mime_object_get_content_type (payload) == NULL)
    return MG_HP_NONE;
  hp = g_mime_object_get_content_type_parameter (payload, "hp");
  if (hp != NULL && g_ascii_strcasecmp (hp, "cipher") == 0)
    return MG_HP_CIPHER;
  if (hp != NULL && g_ascii_strcasecmp (hp, "clear") == 0)
    return MG_HP_CLEAR;
  legacy = g_mime_object_get_content_type_parameter (payload, "protected-headers");
  if (legacy != NULL && g_ascii_strcasecmp (legacy, "v1") == 0)
    return MG_HP_LEGACY;
  return MG_HP_NONE;
}

/* structural - a field that describes the MIME part it is on, not the message (RFC 9788 section 1.1) */
static gboolean
structural (const char *name)
{
  return g_ascii_strncasecmp (name, "Content-", 8) == 0 || g_ascii_strcasecmp (name, "MIME-Version") == 0;
}

static gboolean
is_never_copied (const char *name)
{
  for (gsize i = 0; i < G_N_ELEMENTS (never_copied); i++)
    if (g_ascii_strcasecmp (name, never_copied[i]) == 0)
      return TRUE;
  return g_ascii_strncasecmp (name, "ARC-", 4) == 0;
}

/* mg_hp_name_ok - a header field name we can write as it is: 1 to 76 characters of RFC 5322 ftext (printable ASCII
 * but ':'); both directions of header protection copy only such fields */
gboolean
mg_hp_name_ok (const char *name)
{
  gsize len = name ? strlen (name) : 0;

  if (len == 0 || len > 76)
    return FALSE;
  for (const char *c = name; *c; c++)
    if ((guchar) *c < 33 || (guchar) *c > 126 || *c == ':')
      return FALSE;
  return TRUE;
}

/* raw_checked - @raw (a field's raw value as GMime read it) with LF line ends and a leading space, or NULL when it
 * holds a CR or LF that is not folding (a line break not followed by white space would end the field and start
 * another one: header injection), a NUL, a line over MG_HP_MAX_LINE or more than MG_HP_MAX_VALUE octets */
static char *
raw_checked (const char *raw)
{
  g_autoptr (GString) out = g_string_new (NULL);
  gsize len = raw ? strlen (raw) : 0, line = 0;

  while (len > 0 && (raw[len - 1] == '\n' || raw[len - 1] == '\r'))
    len--; /* the field's own line end */
  if (len == 0 || len > MG_HP_MAX_VALUE)
    return NULL;
  if (raw[0] != ' ' && raw[0] != '\t')
    g_string_append_c (out, ' ');
  for (gsize i = 0; i < len; i++) {
    char c = raw[i];
    if (c == '\r') {
      if (i + 1 >= len || raw[i + 1] != '\n')
        return NULL; /* a bare CR */
      continue;
    }
    if (c == '\n') {
      if (i + 1 >= len || (raw[i + 1] != ' ' && raw[i + 1] != '\t'))
        return NULL; /* a line break that is not folding */
      line = 0;
      g_string_append_c (out, '\n');
      continue;
    }
    if (++line > MG_HP_MAX_LINE)
      return NULL;
    g_string_append_c (out, c);
  }
  return g_string_free (g_steal_pointer (&out), FALSE);
}

/* decoded_ok - whether a field's decoded value is UTF-8 text without control characters (an encoded-word that
 * decodes to CR or LF is refused like a raw one) */
static gboolean
decoded_ok (const char *value)
{
  if (value == NULL || !g_utf8_validate (value, -1, NULL))
    return FALSE;
  for (const char *c = value; *c; c++)
    if (((guchar) *c < 0x20 && *c != '\t') || *c == 0x7f)
      return FALSE;
  return TRUE;
}

/* unfold - @raw (a raw value) as one line, decoded: what a reader sees */
static char *
unfold_decoded (const char *raw)
{
  g_autofree char *flat = g_strdup (raw);
  char *w = flat;

  for (const char *r = raw; *r; r++)
    if (*r != '\r' && *r != '\n')
      *w++ = *r;
  *w = '\0';
  return g_mime_utils_header_decode_text (NULL, g_strstrip (flat));
}

/* read_fields - every protected field of @hp->payload that passes the checks into @hp (HP-Outer into @hp->outer) */
static void
read_fields (MgHp *hp)
{
  GMimeHeaderList *headers = g_mime_object_get_header_list (hp->payload);
  int n = headers ? g_mime_header_list_get_count (headers) : 0;

  for (int i = 0; i < n; i++) {
    GMimeHeader *h = g_mime_header_list_get_header_at (headers, i);
    const char *name = g_mime_header_get_name (h);
    gboolean outer = g_ascii_strcasecmp (name ? name : "", "HP-Outer") == 0;
    g_autofree char *raw = NULL, *value = NULL;
    if (name == NULL || structural (name) || (!outer && is_never_copied (name)))
      continue;
    raw = raw_checked (g_mime_header_get_raw_value (h));
    value = raw ? unfold_decoded (raw) : NULL;
    if (!mg_hp_name_ok (name) || raw == NULL || !decoded_ok (value) || (!outer && hp->names->len >= MG_HP_MAX_FIELDS)) {
      hp->refused++;
      continue;
    }
    if (outer) {
      if (hp->outer->len < MG_HP_MAX_FIELDS && strchr (value, ':') != NULL)
        g_ptr_array_add (hp->outer, g_steal_pointer (&value));
      continue;
    }
    g_ptr_array_add (hp->names, g_strdup (name));
    g_ptr_array_add (hp->values, g_steal_pointer (&value));
    g_ptr_array_add (hp->raws, g_steal_pointer (&raw));
  }
}

/**
 * mg_hp_find - the protected header fields of the message whose clear entity is @entity, when its protection is
 * real; %NULL when it declares none, or declares them where nothing protects them (then a note says so).
 * @entity: the decrypted entity (or the message body when nothing was decrypted)
 * @unwrapped: (nullable): the content of @entity's opaque S/MIME signature, when it had one
 * @encrypted: whether @entity came out of decrypting the whole body
 * @sealed: whether @verdict includes a signature made over the whole decrypted entity (OpenPGP signed and encrypted)
 * @verdict: (nullable): the verdict on the message's signatures (the least trusting of them)
 * @notes: (element-type utf8): where notes for the log go
 *
 * The payload is @unwrapped, else the first part of @entity when it is multipart/signed, else @entity. Its fields are
 * signed when @verdict is a pass from a signature layer around the payload or from @sealed; a cleartext signature
 * inside the body text covers no header field.
 *
 * Returns: (transfer full) (nullable): the fields, holding a reference to the payload
 */
MgHp *
mg_hp_find (GMimeObject *entity, GMimeObject *unwrapped, gboolean encrypted, gboolean sealed,
            const MgSignature *verdict, GPtrArray *notes)
{
  GMimeObject *payload = unwrapped ? unwrapped : entity;
  gboolean layer = unwrapped != NULL;
  MgHpScheme scheme;
  MgHp *hp;

  if (payload == NULL)
    return NULL;
  if (GMIME_IS_MULTIPART (payload) &&
      g_mime_content_type_is_type (g_mime_object_get_content_type (payload), "multipart", "signed") &&
      g_mime_multipart_get_count (GMIME_MULTIPART (payload)) == 2) {
    payload = g_mime_multipart_get_part (GMIME_MULTIPART (payload), 0);
    layer = TRUE;
  }
  if ((scheme = mg_hp_scheme (payload)) == MG_HP_NONE)
    return NULL;
  hp = g_new0 (MgHp, 1);
  hp->scheme = scheme;
  hp->payload = g_object_ref (payload);
  hp->encrypted = encrypted;
  hp->covered = verdict != NULL && verdict->result == MG_SIG_PASS && (layer || sealed);
  hp->names = g_ptr_array_new_with_free_func (g_free);
  hp->values = g_ptr_array_new_with_free_func (g_free);
  hp->raws = g_ptr_array_new_with_free_func (g_free);
  hp->outer = g_ptr_array_new_with_free_func (g_free);
  if (!hp->encrypted && !hp->covered) {
    g_ptr_array_add (notes, g_strdup (_ ("the message declares protected header fields that neither encryption nor "
                                         "a good signature covers: they were not restored")));
    mg_hp_free (hp);
    return NULL;
  }
  read_fields (hp);
  if (hp->refused > 0)
    g_ptr_array_add (notes, g_strdup_printf (_ ("protected header fields that failed the header checks were not "
                                                "copied: %u"),
                                             hp->refused));
  return hp;
}

/* protected_value - the decoded value of @hp's first field named @name, or NULL */
static const char *
protected_value (const MgHp *hp, const char *name)
{
  for (guint i = 0; i < hp->names->len; i++)
    if (g_ascii_strcasecmp (g_ptr_array_index (hp->names, i), name) == 0)
      return g_ptr_array_index (hp->values, i);
  return NULL;
}

/* outer_recorded - what HP-Outer says the sender put outside for @name: NULL when it records nothing for it */
static const char *
outer_recorded (const MgHp *hp, const char *name)
{
  gsize len = strlen (name);

  for (guint i = 0; i < hp->outer->len; i++) {
    const char *rec = g_ptr_array_index (hp->outer, i);
    if (g_ascii_strncasecmp (rec, name, len) == 0 && rec[len] == ':')
      return rec + len + 1 + strspn (rec + len + 1, " \t");
  }
  return NULL;
}

/* subject_notes - the log notes on the outer Subject @outer (decoded; NULL when there is none) against the
 * protected one: that they differ without a signature over the protected one, that the outer one is not what
 * HP-Outer recorded. Never the Subjects themselves. */
static void
subject_notes (const MgHp *hp, const char *outer, GPtrArray *notes)
{
  const char *inner = protected_value (hp, "Subject");
  const char *recorded = outer_recorded (hp, "Subject");

  if (inner == NULL)
    return;
  if (!hp->covered && g_strcmp0 (outer, inner) != 0)
    g_ptr_array_add (notes, g_strdup (_ ("the outer and the protected Subject differ and no good signature covers "
                                         "the protected one")));
  if (recorded != NULL && g_strcmp0 (outer, recorded) != 0)
    g_ptr_array_add (notes, g_strdup (_ ("the outer Subject is not the one the sender recorded in HP-Outer: it was "
                                         "changed in transit")));
}

/* replaced - whether an outer field named @name gives way: HP-Outer, or a name the payload carries */
static gboolean
replaced (const MgHp *hp, const char *name)
{
  if (g_ascii_strcasecmp (name, "HP-Outer") == 0)
    return TRUE;
  for (guint i = 0; i < hp->names->len; i++)
    if (g_ascii_strcasecmp (g_ptr_array_index (hp->names, i), name) == 0)
      return TRUE;
  return FALSE;
}

/* strip_text_display - @part's text without its leading Legacy Display Element (RFC 9788 section 4.5.3.2): the
 * "Name: value" lines up to and with the first blank line; left as it is when those lines are not header-like */
static void
strip_text_display (GMimeTextPart *part)
{
  g_autofree char *text = g_mime_text_part_get_text (part);
  const char *p = text;

  if (text == NULL)
    return;
  for (;;) {
    const char *nl = strchr (p, '\n');
    gsize line = nl ? (gsize) (nl - p) : strlen (p);
    if (line > 0 && p[line - 1] == '\r')
      line--;
    if (nl == NULL)
      return; /* no blank line: not a legacy display */
    if (line == 0) {
      p = nl + 1;
      break;
    }
    if (!(p[0] == ' ' || p[0] == '\t') && (memchr (p, ':', line) == NULL || p[0] == ':'))
      return;
    p = nl + 1;
  }
  if (p == text)
    return;
  g_mime_text_part_set_text (part, p); /* in the charset it picks (iso-8859-1 for "Café"), and says so: not utf-8 */
}

/* strip_html_display - @part's HTML without its <div class="header-protection-legacy-display"> element (RFC 9788
 * section 4.5.3.3; the element holds no other div) */
static void
strip_html_display (GMimeTextPart *part)
{
  g_autofree char *text = g_mime_text_part_get_text (part);
  const char *cls = text ? strstr (text, "header-protection-legacy-display") : NULL;
  const char *open = NULL, *close;
  g_autoptr (GString) out = NULL;

  if (cls == NULL)
    return;
  for (const char *c = cls; c > text; c--)
    if (c[-1] == '<') {
      open = c - 1;
      break;
    }
  if (open == NULL || g_ascii_strncasecmp (open, "<div", 4) != 0 || memchr (open, '>', (gsize) (cls - open)) != NULL)
    return;
  close = strstr (cls, "</div>");
  if (close == NULL)
    close = strstr (cls, "</DIV>");
  if (close == NULL)
    return;
  out = g_string_new_len (text, open - text);
  g_string_append (out, close + 6);
  g_mime_text_part_set_text (part, out->str); /* sets the charset it encoded the text in */
}

/* strip_display - RFC 9788: the Legacy Display Elements of @obj's main body parts (the first part of mixed and
 * related, each alternative), on the parts marked hp-legacy-display="1"; @depth bounds the walk */
static void
strip_display (GMimeObject *obj, guint depth)
{
  GMimeContentType *ct = g_mime_object_get_content_type (obj);
  const char *mark = g_mime_object_get_content_type_parameter (obj, "hp-legacy-display");

  if (depth > 8 || ct == NULL)
    return;
  if (GMIME_IS_MULTIPART (obj)) {
    GMimeMultipart *mp = GMIME_MULTIPART (obj);
    int n = g_mime_multipart_get_count (mp);
    if (g_mime_content_type_is_type (ct, "multipart", "alternative"))
      for (int i = 0; i < n; i++)
        strip_display (g_mime_multipart_get_part (mp, i), depth + 1);
    else if (n > 0 && (g_mime_content_type_is_type (ct, "multipart", "mixed") ||
                       g_mime_content_type_is_type (ct, "multipart", "related")))
      strip_display (g_mime_multipart_get_part (mp, 0), depth + 1);
    return;
  }
  if (!GMIME_IS_TEXT_PART (obj) || mark == NULL || strcmp (mark, "1") != 0)
    return;
  if (g_mime_content_type_is_type (ct, "text", "plain"))
    strip_text_display (GMIME_TEXT_PART (obj));
  else if (g_mime_content_type_is_type (ct, "text", "html"))
    strip_html_display (GMIME_TEXT_PART (obj));
  else
    return;
  if (g_mime_param_list_remove (g_mime_content_type_get_parameters (ct), "hp-legacy-display")) {
    /* setting a parameter is what makes GMime write the Content-Type field again */
    g_autofree char *charset = g_strdup (g_mime_content_type_get_parameter (ct, "charset"));
    g_mime_content_type_set_parameter (ct, "charset", charset ? charset : "utf-8");
  }
}

/* strip_legacy_part - the older scheme's legacy display: the first part of a multipart/mixed payload when it is
 * text/rfc822-headers (Enigmail) or text/plain marked protected-headers="v1" (Autocrypt's samples), and not the
 * only part */
static void
strip_legacy_part (GMimeObject *payload)
{
  GMimeMultipart *mp;
  GMimeObject *first;
  GMimeContentType *ct;
  const char *mark;

  if (!GMIME_IS_MULTIPART (payload) ||
      !g_mime_content_type_is_type (g_mime_object_get_content_type (payload), "multipart", "mixed"))
    return;
  mp = GMIME_MULTIPART (payload);
  if (g_mime_multipart_get_count (mp) < 2)
    return;
  first = g_mime_multipart_get_part (mp, 0);
  ct = g_mime_object_get_content_type (first);
  mark = g_mime_object_get_content_type_parameter (first, "protected-headers");
  if (!GMIME_IS_PART (first) || ct == NULL || g_mime_part_is_attachment (GMIME_PART (first)))
    return;
  if (g_mime_content_type_is_type (ct, "text", "rfc822-headers") ||
      (g_mime_content_type_is_type (ct, "text", "plain") && mark != NULL && g_ascii_strcasecmp (mark, "v1") == 0))
    g_mime_multipart_remove_at (mp, 0);
}

/**
 * mg_hp_drop_fields - removes from @entity (a decrypted or unwrapped entity that becomes a message's body) every
 * header field but its Content-* ones. GMime writes a body's fields into the message's header block; those of a
 * decrypted entity are not the message's (only a payload that declares protection has its fields restored, through
 * mg_hp_restore), so they must not be delivered as if they were.
 */
void
mg_hp_drop_fields (GMimeObject *entity)
{
  GMimeHeaderList *own = g_mime_object_get_header_list (entity);

  for (int i = g_mime_header_list_get_count (own) - 1; i >= 0; i--) {
    const char *name = g_mime_header_get_name (g_mime_header_list_get_header_at (own, i));
    if (name == NULL || g_ascii_strncasecmp (name, "Content-", 8) != 0)
      g_mime_header_list_remove_at (own, i);
  }
}

/**
 * mg_hp_restore - the delivered message @message gets @hp's protected fields: each replaces the outer fields of its
 * name, HP-Outer goes; when @delivered (the entity that becomes the message's body) is the payload itself, the
 * payload loses its own copies of the fields (they would follow the message's in one header block) and its Legacy
 * Display Element. Inside a signature that travels on, nothing changes. Notes on the Subject go to @notes.
 */
void
mg_hp_restore (const MgHp *hp, GMimeMessage *message, GMimeObject *delivered, GPtrArray *notes)
{
  GMimeObject *m = GMIME_OBJECT (message);
  GMimeHeaderList *headers = g_mime_object_get_header_list (m);

  subject_notes (hp, g_mime_message_get_subject (message), notes);
  for (int i = g_mime_header_list_get_count (headers) - 1; i >= 0; i--) {
    const char *name = g_mime_header_get_name (g_mime_header_list_get_header_at (headers, i));
    if (name != NULL && replaced (hp, name)) {
      g_autofree char *copy = g_strdup (name);
      /* the object's own remove, so that GMimeMessage keeps its Subject and address lists in step */
      if (!g_mime_object_remove_header (m, copy))
        g_mime_header_list_remove_at (headers, i);
      i = g_mime_header_list_get_count (headers);
    }
  }
  if (delivered == hp->payload) {
    mg_hp_drop_fields (hp->payload);
    if (hp->scheme == MG_HP_LEGACY)
      strip_legacy_part (hp->payload);
    else
      strip_display (hp->payload, 0);
  }
  for (guint i = 0; i < hp->names->len; i++) {
    const char *name = g_ptr_array_index (hp->names, i);
    g_autofree char *raw = g_strconcat (g_ptr_array_index (hp->raws, i), "\n", NULL);
    GMimeHeader *h;
    g_mime_object_append_header (m, name, g_ptr_array_index (hp->values, i), "utf-8");
    h = g_mime_header_list_get_header_at (headers, g_mime_header_list_get_count (headers) - 1);
    if (h != NULL && g_ascii_strcasecmp (g_mime_header_get_name (h), name) == 0)
      g_mime_header_set_raw_value (h, raw); /* written as it came (checked), not re-encoded */
  }
}

/**
 * mg_hp_restore_raw - mg_hp_restore() for a message delivered as it came: only the header block of @input is edited,
 * as text (the fields @hp replaces dropped, the protected ones added at its end in @input's line ends); the body
 * stays byte for byte, so that its signature still verifies after us.
 *
 * Returns: (transfer full): the edited message
 */
GBytes *
mg_hp_restore_raw (const MgHp *hp, GBytes *input, GPtrArray *notes)
{
  gsize len;
  const char *data = g_bytes_get_data (input, &len);
  const char *nl = len > 0 ? memchr (data, '\n', len) : NULL;
  const char *eol = nl != NULL && nl > data && nl[-1] == '\r' ? "\r\n" : "\n";
  g_autoptr (GString) out = g_string_sized_new (len + 1024);
  g_autofree char *outer_subject = NULL;
  gsize pos = 0;

  while (pos < len && data[pos] != '\n' && !(data[pos] == '\r' && pos + 1 < len && data[pos + 1] == '\n')) {
    gsize end = pos;
    const char *colon;
    do {
      const char *next = memchr (data + end, '\n', len - end);
      end = next ? (gsize) (next - data) + 1 : len;
    } while (end < len && (data[end] == ' ' || data[end] == '\t'));
    colon = memchr (data + pos, ':', end - pos);
    if (colon != NULL) {
      g_autofree char *name = g_strstrip (g_strndup (data + pos, (gsize) (colon - (data + pos))));
      if (g_ascii_strcasecmp (name, "Subject") == 0 && outer_subject == NULL) {
        g_autofree char *raw = g_strndup (colon + 1, (gsize) (data + end - colon - 1));
        outer_subject = unfold_decoded (raw);
      }
      if (replaced (hp, name)) {
        pos = end;
        continue;
      }
    }
    g_string_append_len (out, data + pos, (gssize) (end - pos));
    pos = end;
  }
  subject_notes (hp, outer_subject, notes);
  if (out->len > 0 && out->str[out->len - 1] != '\n')
    g_string_append (out, eol);
  for (guint i = 0; i < hp->names->len; i++) {
    const char *raw = g_ptr_array_index (hp->raws, i);
    g_string_append_printf (out, "%s:", (const char *) g_ptr_array_index (hp->names, i));
    for (const char *c = raw; *c; c++)
      if (*c == '\n')
        g_string_append (out, eol);
      else
        g_string_append_c (out, *c);
    g_string_append (out, eol);
  }
  g_string_append_len (out, data + pos, (gssize) (len - pos));
  return g_bytes_new (out->str, out->len);
}

/**
 * mg_hp_resinfo - our Authentication-Results resinfo (RFC 8601 section 2.2) on @hp: method x-hp, result "signed"
 * when a good signature by a trusted signer covers the restored fields, "unsigned" when they were only encrypted
 * (confidential, but anyone who had the recipient's key could have written them); property policy.hp names the
 * scheme ("cipher", "clear", or "v1" for protected-headers="v1").
 *
 * Returns: (transfer full): e.g. "x-hp=signed policy.hp=cipher"
 */
char *
mg_hp_resinfo (const MgHp *hp)
{
  return g_strdup_printf ("x-hp=%s policy.hp=%s", hp->covered ? "signed" : "unsigned", mg_hp_scheme_name (hp->scheme));
}
