/* detect.c - finds out how a message is protected, part by part, without keys.
 *
 * Implements recognition of PGP/MIME (RFC 3156: multipart/encrypted and multipart/signed with exactly two parts),
 * S/MIME (RFC 8551: application/(x-)pkcs7-mime with smime-type enveloped-data, authEnveloped-data, signed-data,
 * compressed-data, or none, then decided by the CMS content type; multipart/signed with application/(x-)pkcs7-
 * signature), PGP/Inline armor (RFC 9580 section 6-7) in text/plain and text/html parts in any transfer encoding,
 * OpenPGP attachments (armored or binary), and PGP/MIME as Microsoft Exchange rewrites it (multipart/mixed holding an
 * empty text part, the application/pgp-encrypted control part and encrypted.asc).
 *
 * The walk is a pre-order visit of GMime's tree with explicit depth and part limits (mblaze's rfc2045 walk is the
 * model). Before GMime sees the bytes, a linear pre-scan bounds the number of multipart boundaries: GMime's parse time
 * grows faster than linearly with nesting depth, and a gateway must answer in bounded time. */
#include "config.h"

#include "detect.h"

#include <string.h>

#include "armor.h"
#include "cms.h"
#include "mg-gmime.h"
#include "openpgp.h"

GQuark
mg_detect_error_quark (void)
{
  return g_quark_from_static_string ("mg-detect-error-quark");
}

static const char *const kind_names[MG_KIND_COUNT] = {
  [MG_KIND_PLAIN] = "plain",
  [MG_KIND_PGP_MIME_ENCRYPTED] = "pgp-mime-encrypted",
  [MG_KIND_PGP_MIME_SIGNED] = "pgp-mime-signed",
  [MG_KIND_PGP_MIME_MANGLED] = "pgp-mime-mangled",
  [MG_KIND_PGP_INLINE_ENCRYPTED] = "pgp-inline-encrypted",
  [MG_KIND_PGP_INLINE_SIGNED] = "pgp-inline-signed",
  [MG_KIND_PGP_INLINE_KEY] = "pgp-inline-key",
  [MG_KIND_PGP_ATTACHMENT_ENCRYPTED] = "pgp-attachment-encrypted",
  [MG_KIND_SMIME_ENVELOPED] = "smime-enveloped",
  [MG_KIND_SMIME_SIGNED_OPAQUE] = "smime-signed-opaque",
  [MG_KIND_SMIME_SIGNED_DETACHED] = "smime-signed-detached",
  [MG_KIND_SMIME_COMPRESSED] = "smime-compressed",
};

/* mg_kind_name - the stable name of @kind (DESIGN.md) */
const char *
mg_kind_name (MgKind kind)
{
  g_return_val_if_fail (kind < MG_KIND_COUNT, "plain");
  return kind_names[kind];
}

/* mg_kind_from_name - parses a kind name; FALSE when @name is not one */
gboolean
mg_kind_from_name (const char *name, MgKind *kind)
{
  for (guint k = 0; k < MG_KIND_COUNT; k++)
    if (g_strcmp0 (name, kind_names[k]) == 0) {
      *kind = k;
      return TRUE;
    }
  return FALSE;
}

/* mg_limits_init_default - the built-in limits */
void
mg_limits_init_default (MgLimits *limits)
{
  limits->max_size = MG_LIMIT_DEFAULT_MAX_SIZE;
  limits->max_depth = MG_LIMIT_DEFAULT_MAX_DEPTH;
  limits->max_parts = MG_LIMIT_DEFAULT_MAX_PARTS;
  limits->max_decompressed = MG_LIMIT_DEFAULT_MAX_DECOMPRESSED;
  limits->spool_threshold = MG_LIMIT_DEFAULT_SPOOL_THRESHOLD;
  limits->spool_dir = NULL;
}

static void
part_free (MgPart *part)
{
  g_free (part->path);
  g_free (part->content_type);
  g_free (part->filename);
  g_free (part->encoding);
  g_free (part->error);
  mg_crypto_info_clear (&part->info);
  g_free (part);
}

static MgReport *
report_new (void)
{
  MgReport *r = g_new0 (MgReport, 1);

  r->parts = g_ptr_array_new_with_free_func ((GDestroyNotify) part_free);
  r->warnings = g_ptr_array_new_with_free_func (g_free);
  r->kind = MG_KIND_PLAIN;
  return r;
}

/* mg_report_free - frees @report and all its parts */
void
mg_report_free (MgReport *report)
{
  if (report == NULL)
    return;
  g_ptr_array_unref (report->parts);
  g_ptr_array_unref (report->warnings);
  g_free (report->message_id);
  g_free (report->error);
  g_free (report);
}

typedef struct {
  MgReport *report;
  const MgLimits *limits;
} Walk;

/* set_kind - the part's kind is the most significant one seen in it; all are remembered */
static void
set_kind (MgPart *part, MgKind kind)
{
  static const guint rank[MG_KIND_COUNT] = {
    [MG_KIND_PLAIN] = 0,
    [MG_KIND_PGP_INLINE_KEY] = 1,
    [MG_KIND_PGP_INLINE_SIGNED] = 2,
    [MG_KIND_SMIME_SIGNED_DETACHED] = 2,
    [MG_KIND_SMIME_SIGNED_OPAQUE] = 2,
    [MG_KIND_PGP_MIME_SIGNED] = 2,
    [MG_KIND_SMIME_COMPRESSED] = 2,
    [MG_KIND_PGP_INLINE_ENCRYPTED] = 3,
    [MG_KIND_PGP_ATTACHMENT_ENCRYPTED] = 3,
    [MG_KIND_PGP_MIME_ENCRYPTED] = 3,
    [MG_KIND_PGP_MIME_MANGLED] = 3,
    [MG_KIND_SMIME_ENVELOPED] = 3,
  };

  part->kinds |= MG_KIND_BIT (kind);
  if (part->kinds == MG_KIND_BIT (kind) || rank[kind] > rank[part->kind])
    part->kind = kind;
}

static void part_error (MgPart *part, const char *fmt, ...) G_GNUC_PRINTF (2, 3);

/* part_error - records the first problem of a part; later ones are joined to it */
static void
part_error (MgPart *part, const char *fmt, ...)
{
  va_list ap;
  g_autofree char *msg = NULL;

  va_start (ap, fmt);
  msg = g_strdup_vprintf (fmt, ap);
  va_end (ap);
  if (part->error == NULL)
    part->error = g_steal_pointer (&msg);
  else {
    char *joined = g_strdup_printf ("%s; %s", part->error, msg);
    g_free (part->error);
    part->error = joined;
  }
}

/* mime_type_of - "type/subtype" of @obj in lower case (text/plain when it has none) */
static char *
mime_type_of (GMimeObject *obj)
{
  GMimeContentType *ct = g_mime_object_get_content_type (obj);
  g_autofree char *mt = ct ? g_mime_content_type_get_mime_type (ct) : NULL;

  return g_ascii_strdown (mt ? mt : "text/plain", -1);
}

/* add_part - a new report entry for @obj at @path, or NULL when the part limit is reached */
static MgPart *
add_part (Walk *w, GMimeObject *obj, const char *path, guint depth, const char *role)
{
  MgPart *part;

  if (w->report->parts->len >= w->limits->max_parts) {
    if (!w->report->limited) {
      w->report->limited = TRUE;
      g_free (w->report->error);
      w->report->error =
        g_strdup_printf ("more than %u MIME parts (max-parts); the rest is not inspected", w->limits->max_parts);
    }
    return NULL;
  }
  part = g_new0 (MgPart, 1);
  mg_crypto_info_init (&part->info);
  part->path = g_strdup (path);
  part->depth = depth;
  part->role = role;
  part->kind = MG_KIND_PLAIN;
  part->content_type = obj ? mime_type_of (obj) : g_strdup ("text/plain");
  if (obj != NULL && GMIME_IS_PART (obj)) {
    const char *fn = g_mime_part_get_filename (GMIME_PART (obj));
    GMimeContentEncoding enc = g_mime_part_get_content_encoding (GMIME_PART (obj));
    part->filename = fn ? g_utf8_make_valid (fn, -1) : NULL;
    if (enc != GMIME_CONTENT_ENCODING_DEFAULT)
      part->encoding = g_strdup (g_mime_content_encoding_to_string (enc));
  }
  g_ptr_array_add (w->report->parts, part);
  return part;
}

/* decoded - a leaf's content with its transfer encoding removed */
static GByteArray *
decoded (GMimePart *part)
{
  GMimeDataWrapper *content = g_mime_part_get_content (part);
  g_autoptr (GMimeStream) mem = NULL;
  GByteArray *out;

  if (content == NULL) {
    out = g_byte_array_new ();
    g_byte_array_append (out, (const guint8 *) "", 1); /* a buffer, even for no content */
    g_byte_array_set_size (out, 0);
    return out;
  }
  mem = g_mime_stream_mem_new ();
  g_mime_stream_mem_set_owner (GMIME_STREAM_MEM (mem), FALSE);
  if (g_mime_data_wrapper_write_to_stream (content, mem) < 0) {
    g_byte_array_unref (g_mime_stream_mem_get_byte_array (GMIME_STREAM_MEM (mem)));
    return NULL;
  }
  out = g_mime_stream_mem_get_byte_array (GMIME_STREAM_MEM (mem));
  /* never a NULL buffer (an empty part), and NUL-terminated for the text searches below */
  g_byte_array_append (out, (const guint8 *) "", 1);
  g_byte_array_set_size (out, out->len - 1);
  return out;
}

/* head_has - whether the first 4 KiB of @data hold @needle */
static gboolean
head_has (const GByteArray *data, const char *needle)
{
  return g_strstr_len ((const char *) data->data, MIN (data->len, 4096), needle) != NULL;
}

/* openpgp_bytes - the OpenPGP data of a part: its first armor block decoded, or the part itself when binary */
static GBytes *
openpgp_bytes (const GByteArray *data)
{
  if (head_has (data, "-----BEGIN PGP ")) {
    g_autoptr (GArray) blocks = mg_armor_find ((const char *) data->data, data->len);
    return blocks->len > 0 ? mg_armor_decode ((const char *) data->data, &g_array_index (blocks, MgArmorBlock, 0), NULL)
                           : NULL;
  }
  return mg_openpgp_sniff (data->data, data->len) ? g_bytes_new (data->data, data->len) : NULL;
}

static gboolean
has_suffix_ci (const char *s, const char *suffix)
{
  gsize ls, lx;

  if (s == NULL)
    return FALSE;
  ls = strlen (s);
  lx = strlen (suffix);
  return ls >= lx && g_ascii_strcasecmp (s + ls - lx, suffix) == 0;
}

static gboolean
is_type (const MgPart *part, const char *mime_type)
{
  return g_strcmp0 (part->content_type, mime_type) == 0;
}

/* openpgp_block - classifies one decoded OpenPGP object found in a text (@inline) or as an attachment */
static void
openpgp_block (MgPart *part, const guint8 *data, gsize len, MgArmorType armor, gboolean is_attachment)
{
  MgOpenpgpType t = mg_openpgp_inspect (data, len, &part->info);

  switch (t) {
  case MG_OPENPGP_ENCRYPTED:
    set_kind (part, is_attachment ? MG_KIND_PGP_ATTACHMENT_ENCRYPTED : MG_KIND_PGP_INLINE_ENCRYPTED);
    if (g_strcmp0 (part->info.integrity, "none") == 0)
      part_error (part, "encrypted without integrity protection (no MDC)");
    break;
  case MG_OPENPGP_SIGNED:
    set_kind (part, MG_KIND_PGP_INLINE_SIGNED);
    break;
  case MG_OPENPGP_SIGNATURE:
    if (armor == MG_ARMOR_SIGNED_MESSAGE)
      set_kind (part, MG_KIND_PGP_INLINE_SIGNED);
    else if (part->role == NULL)
      part->role = "detached-signature";
    break;
  case MG_OPENPGP_KEY:
    set_kind (part, MG_KIND_PGP_INLINE_KEY);
    break;
  case MG_OPENPGP_UNKNOWN:
    /* Armor that says what it is but does not decode is still that: report it and its fault. */
    part_error (part, "%s armor does not hold OpenPGP data", mg_armor_type_name (armor));
    if (armor == MG_ARMOR_MESSAGE)
      set_kind (part, is_attachment ? MG_KIND_PGP_ATTACHMENT_ENCRYPTED : MG_KIND_PGP_INLINE_ENCRYPTED);
    else if (armor == MG_ARMOR_SIGNED_MESSAGE)
      set_kind (part, MG_KIND_PGP_INLINE_SIGNED);
    else if (armor == MG_ARMOR_PUBLIC_KEY || armor == MG_ARMOR_PRIVATE_KEY)
      set_kind (part, MG_KIND_PGP_INLINE_KEY);
    break;
  }
}

/* scan_armor - every armored block in @text (already reduced from HTML when needed) */
static void
scan_armor (MgPart *part, const char *text, gsize len, gboolean is_attachment)
{
  g_autoptr (GArray) blocks = mg_armor_find (text, len);

  for (guint i = 0; i < blocks->len; i++) {
    const MgArmorBlock *b = &g_array_index (blocks, MgArmorBlock, i);
    g_autoptr (GError) error = NULL;
    g_autoptr (GBytes) bytes = NULL;

    if (!b->complete)
      part_error (part, "%s armor has no END line", mg_armor_type_name (b->type));
    bytes = mg_armor_decode (text, b, &error);
    if (bytes == NULL) {
      part_error (part, "%s armor: %s", mg_armor_type_name (b->type), error->message);
      openpgp_block (part, (const guint8 *) "", 0, b->type, is_attachment);
      continue;
    }
    openpgp_block (part, g_bytes_get_data (bytes, NULL), g_bytes_get_size (bytes), b->type, is_attachment);
  }
  if (blocks->len >= MG_DETECT_MAX_ARMOR_BLOCKS)
    part_error (part, "more than %d armor blocks; the rest is not inspected", MG_DETECT_MAX_ARMOR_BLOCKS);
}

/* cms_kind - the kind of a CMS object, from its content */
static gboolean
cms_kind (MgCmsType t, MgKind *kind)
{
  switch (t) {
  case MG_CMS_ENVELOPED:
  case MG_CMS_AUTH_ENVELOPED:
    *kind = MG_KIND_SMIME_ENVELOPED;
    return TRUE;
  case MG_CMS_SIGNED:
  case MG_CMS_CERTS_ONLY:
    *kind = MG_KIND_SMIME_SIGNED_OPAQUE;
    return TRUE;
  case MG_CMS_COMPRESSED:
    *kind = MG_KIND_SMIME_COMPRESSED;
    return TRUE;
  case MG_CMS_UNKNOWN:
  case MG_CMS_OTHER:
    break;
  }
  return FALSE;
}

/* smime_type_kind - the kind an smime-type parameter promises */
static gboolean
smime_type_kind (const char *smime_type, MgKind *kind)
{
  if (smime_type == NULL)
    return FALSE;
  if (g_ascii_strcasecmp (smime_type, "enveloped-data") == 0 ||
      g_ascii_strcasecmp (smime_type, "authEnveloped-data") == 0)
    *kind = MG_KIND_SMIME_ENVELOPED;
  else if (g_ascii_strcasecmp (smime_type, "signed-data") == 0 || g_ascii_strcasecmp (smime_type, "certs-only") == 0)
    *kind = MG_KIND_SMIME_SIGNED_OPAQUE;
  else if (g_ascii_strcasecmp (smime_type, "compressed-data") == 0)
    *kind = MG_KIND_SMIME_COMPRESSED;
  else
    return FALSE;
  return TRUE;
}

/* smime_leaf - application/(x-)pkcs7-mime, or a part that holds CMS by its content */
static void
smime_leaf (MgPart *part, GMimeObject *obj, const GByteArray *data)
{
  const char *smime_type = g_mime_object_get_content_type_parameter (obj, "smime-type");
  g_autoptr (GError) error = NULL;
  MgKind by_param = MG_KIND_PLAIN, by_content = MG_KIND_PLAIN;
  gboolean have_param = smime_type_kind (smime_type, &by_param);
  MgCmsType t = mg_cms_inspect (data->data, data->len, &part->info, &error);
  gboolean have_content = cms_kind (t, &by_content);

  if (t == MG_CMS_CERTS_ONLY)
    part->role = "certs-only";
  if (have_content) {
    set_kind (part, by_content);
    if (have_param && by_param != by_content)
      part_error (part, "smime-type=%s but the content is %s", smime_type, mg_kind_name (by_content));
  } else if (have_param) {
    set_kind (part, by_param);
    part_error (part, "cannot read the CMS object: %s", error ? error->message : "not an S/MIME content type");
  } else if (has_suffix_ci (part->filename, ".p7m")) {
    set_kind (part, MG_KIND_SMIME_ENVELOPED); /* RFC 8551: smime.p7m without smime-type is enveloped data */
    part_error (part, "cannot read the CMS object: %s", error ? error->message : "not an S/MIME content type");
  } else
    part_error (part, "cannot read the CMS object: %s", error ? error->message : "not an S/MIME content type");
}

/* signature_leaf - the second part of a multipart/signed: its signer */
static void
signature_leaf (MgPart *part, MgKind kind, const GByteArray *data)
{
  set_kind (part, kind);
  if (kind == MG_KIND_SMIME_SIGNED_DETACHED) {
    g_autoptr (GError) error = NULL;
    if (mg_cms_inspect (data->data, data->len, &part->info, &error) == MG_CMS_UNKNOWN)
      part_error (part, "cannot read the signature: %s", error->message);
  } else {
    g_autoptr (GBytes) bytes = openpgp_bytes (data);
    if (bytes == NULL || mg_openpgp_inspect (g_bytes_get_data (bytes, NULL), g_bytes_get_size (bytes), &part->info) !=
                           MG_OPENPGP_SIGNATURE)
      part_error (part, "the signature part holds no OpenPGP signature");
  }
}

static gboolean
is_pkcs7_mime (const MgPart *part)
{
  return is_type (part, "application/pkcs7-mime") || is_type (part, "application/x-pkcs7-mime");
}

static gboolean
is_pkcs7_signature (const MgPart *part)
{
  return is_type (part, "application/pkcs7-signature") || is_type (part, "application/x-pkcs7-signature");
}

static gboolean
is_openpgp_filename (const char *fn)
{
  return has_suffix_ci (fn, ".pgp") || has_suffix_ci (fn, ".gpg") || has_suffix_ci (fn, ".asc");
}

/* text_is_placeholder - a text part with nothing a reader would miss: white space, or one short line such as
 * ProtonMail's "Empty Message". Repairing a mangled message drops this part, so real text never qualifies. */
static gboolean
text_is_placeholder (GMimeObject *obj)
{
  g_autoptr (GByteArray) data = NULL;
  gsize start = 0, end;

  if (!GMIME_IS_PART (obj))
    return FALSE;
  data = decoded (GMIME_PART (obj));
  if (data == NULL)
    return FALSE;
  end = data->len;
  while (start < end && g_ascii_isspace (data->data[start]))
    start++;
  while (end > start && g_ascii_isspace (data->data[end - 1]))
    end--;
  return end - start <= 64 && memchr (data->data + start, '\n', end - start) == NULL;
}

/* is_control - the PGP/MIME control part: application/pgp-encrypted holding "Version: 1" (RFC 3156 section 4) */
static gboolean
is_control (GMimeObject *obj)
{
  g_autoptr (GByteArray) data = NULL;
  GMimeContentType *ct = g_mime_object_get_content_type (obj);

  if (!GMIME_IS_PART (obj) || ct == NULL || !g_mime_content_type_is_type (ct, "application", "pgp-encrypted"))
    return FALSE;
  data = decoded (GMIME_PART (obj));
  return data != NULL && data->len < 64 && g_strstr_len ((const char *) data->data, data->len, "Version: 1") != NULL;
}

/* binary_or_armor - an attachment that may hold OpenPGP or CMS data, sniffed by content */
static void
binary_or_armor (MgPart *part, GMimeObject *obj, const GByteArray *data)
{
  if (mg_openpgp_sniff (data->data, data->len)) {
    openpgp_block (part, data->data, data->len, MG_ARMOR_MESSAGE, TRUE);
    return;
  }
  if (head_has (data, "-----BEGIN PGP ")) {
    scan_armor (part, (const char *) data->data, data->len, TRUE);
    return;
  }
  if (mg_cms_sniff (data->data, data->len) || has_suffix_ci (part->filename, ".p7m") ||
      has_suffix_ci (part->filename, ".p7s") || has_suffix_ci (part->filename, ".p7z")) {
    smime_leaf (part, obj, data);
    if (is_type (part, "application/octet-stream") && part->kind == MG_KIND_SMIME_SIGNED_OPAQUE &&
        has_suffix_ci (part->filename, ".p7s")) {
      /* a detached S/MIME signature outside its multipart/signed (e.g. after a list manager rewrote it) */
      part->kind = MG_KIND_SMIME_SIGNED_DETACHED;
      part->kinds = MG_KIND_BIT (MG_KIND_SMIME_SIGNED_DETACHED);
      part->role = "detached-signature";
    }
    return;
  }
  if (is_control (obj)) {
    part->role = "control"; /* a PGP/MIME control part whose multipart/encrypted was rewritten */
    return;
  }
  if (is_type (part, "application/pgp-encrypted") || is_openpgp_filename (part->filename)) {
    /* named or typed as OpenPGP, yet it is neither armor nor packets */
    if (!has_suffix_ci (part->filename, ".asc") || is_type (part, "application/pgp-encrypted"))
      part_error (part, "declared as OpenPGP data but holds none");
  }
}

/* a ciphertext over HEAD_FROM octets (as it travels) is told from its first HEAD_BYTES (decoded) */
#define HEAD_FROM ((gint64) 1024 * 1024)
#define HEAD_BYTES ((gsize) 256 * 1024)

/* content_length - a leaf's content length as it travels (encoded), -1 when unknown */
static gint64
content_length (GMimePart *part)
{
  GMimeDataWrapper *content = g_mime_part_get_content (part);
  GMimeStream *raw = content ? g_mime_data_wrapper_get_stream (content) : NULL;

  return raw ? g_mime_stream_length (raw) : -1;
}

/* decoded_head - up to @max bytes of the start of a leaf's content, its transfer encoding removed; %NULL when it
 * cannot be read */
static GByteArray *
decoded_head (GMimePart *part, gsize max)
{
  GMimeDataWrapper *content = g_mime_part_get_content (part);
  GMimeContentEncoding enc = content ? g_mime_data_wrapper_get_encoding (content) : GMIME_CONTENT_ENCODING_DEFAULT;
  GMimeStream *raw = content ? g_mime_data_wrapper_get_stream (content) : NULL;
  g_autoptr (GMimeStream) filtered = NULL;
  GByteArray *out;

  if (raw == NULL || g_mime_stream_reset (raw) != 0)
    return NULL;
  filtered = g_mime_stream_filter_new (raw);
  if (enc == GMIME_CONTENT_ENCODING_BASE64 || enc == GMIME_CONTENT_ENCODING_QUOTEDPRINTABLE ||
      enc == GMIME_CONTENT_ENCODING_UUENCODE) {
    g_autoptr (GMimeFilter) f = g_mime_filter_basic_new (enc, FALSE);
    g_mime_stream_filter_add (GMIME_STREAM_FILTER (filtered), f);
  }
  out = g_byte_array_sized_new ((guint) max + 1);
  while (out->len < max) {
    guint8 buf[4096];
    ssize_t n = g_mime_stream_read (filtered, (char *) buf, MIN (sizeof buf, max - out->len));
    if (n < 0) {
      g_byte_array_unref (out);
      out = NULL;
      break;
    }
    if (n == 0)
      break;
    g_byte_array_append (out, buf, (guint) n);
  }
  g_mime_stream_reset (raw);
  return out;
}

/* may_start_packets - whether @data could begin with an OpenPGP packet that mg_openpgp_sniff() accepts: a packet
 * header of one of its tags (the packet itself may be longer than @data) */
static gboolean
may_start_packets (const GByteArray *data)
{
  guint8 b = data->len > 0 ? data->data[0] : 0;
  guint tag = (b & 0x40) ? (guint) (b & 0x3f) : (guint) ((b >> 2) & 0x0f);

  return (b & 0x80) &&
         (tag == 1 || tag == 2 || tag == 3 || tag == 4 || tag == 5 || tag == 6 || tag == 8 || tag == 10 || tag == 18);
}

/* plain_binary - a leaf that binary_or_armor() would find nothing in, told from the start of its content alone, so
 * that a large attachment is not decoded whole into memory: no type, name or start of OpenPGP or CMS data */
static gboolean
plain_binary (MgPart *part, GMimeObject *obj)
{
  g_autoptr (GByteArray) head = NULL;

  if (g_str_has_prefix (part->content_type, "text/") || g_str_has_prefix (part->content_type, "application/pgp") ||
      is_pkcs7_mime (part) || is_pkcs7_signature (part) || is_openpgp_filename (part->filename) ||
      has_suffix_ci (part->filename, ".p7m") || has_suffix_ci (part->filename, ".p7s") ||
      has_suffix_ci (part->filename, ".p7z"))
    return FALSE;
  head = decoded_head (GMIME_PART (obj), 65536);
  return head != NULL && head->len == 65536 && !may_start_packets (head) && !mg_cms_sniff (head->data, head->len) &&
         !head_has (head, "-----BEGIN PGP ");
}

/* large_enveloped - a large application/pkcs7-mime leaf that holds enveloped or authEnveloped data, told from the
 * start of its content alone (mg_cms_head: the recipients and the algorithm come before the encrypted content), so
 * that the object is not decoded and parsed whole; FALSE (nothing recorded) for anything else, which is then read
 * whole as before */
static gboolean
large_enveloped (MgPart *part, GMimeObject *obj)
{
  g_autoptr (GByteArray) head = NULL;
  g_autoptr (GBytes) rebuilt = NULL;
  g_autoptr (GByteArray) data = NULL;
  MgCryptoInfo info;
  MgCmsType t;

  if (!is_pkcs7_mime (part) || content_length (GMIME_PART (obj)) <= HEAD_FROM ||
      (head = decoded_head (GMIME_PART (obj), HEAD_BYTES)) == NULL ||
      (rebuilt = mg_cms_head (head->data, head->len)) == NULL)
    return FALSE;
  mg_crypto_info_init (&info);
  t = mg_cms_inspect (g_bytes_get_data (rebuilt, NULL), g_bytes_get_size (rebuilt), &info, NULL);
  mg_crypto_info_clear (&info);
  if (t != MG_CMS_ENVELOPED && t != MG_CMS_AUTH_ENVELOPED)
    return FALSE;
  data = g_bytes_unref_to_array (g_steal_pointer (&rebuilt));
  smime_leaf (part, obj, data);
  return TRUE;
}

/* classify_leaf - a single part: S/MIME, armor in text, OpenPGP or CMS attachments */
static void
classify_leaf (MgPart *part, GMimeObject *obj)
{
  g_autoptr (GByteArray) data = NULL;
  gboolean attachment = g_mime_part_is_attachment (GMIME_PART (obj)) || part->filename != NULL;

  if (plain_binary (part, obj) || large_enveloped (part, obj))
    return;
  data = decoded (GMIME_PART (obj));
  if (data == NULL) {
    part_error (part, "the content cannot be decoded");
    return;
  }
  if (is_pkcs7_mime (part)) {
    smime_leaf (part, obj, data);
    return;
  }
  if (is_pkcs7_signature (part)) {
    signature_leaf (part, MG_KIND_SMIME_SIGNED_DETACHED, data);
    part->role = "detached-signature";
    part_error (part, "S/MIME signature outside multipart/signed");
    return;
  }
  if (is_type (part, "application/pgp-signature")) {
    part->role = "detached-signature";
    g_autoptr (GBytes) bytes = openpgp_bytes (data);
    if (bytes != NULL)
      mg_openpgp_inspect (g_bytes_get_data (bytes, NULL), g_bytes_get_size (bytes), &part->info);
    return;
  }
  if (is_type (part, "application/pgp-keys")) {
    if (head_has (data, "-----BEGIN PGP "))
      scan_armor (part, (const char *) data->data, data->len, TRUE);
    else
      openpgp_block (part, data->data, data->len, MG_ARMOR_PUBLIC_KEY, TRUE);
    set_kind (part, MG_KIND_PGP_INLINE_KEY);
    return;
  }
  if (g_str_has_prefix (part->content_type, "text/") || is_type (part, "application/pgp")) {
    gboolean openpgp_file = attachment && is_openpgp_filename (part->filename);
    if (is_type (part, "text/html")) {
      gsize tlen;
      g_autofree char *text = mg_armor_html_to_text ((const char *) data->data, data->len, &tlen);
      scan_armor (part, text, tlen, openpgp_file);
    } else
      scan_armor (part, (const char *) data->data, data->len, openpgp_file);
    return;
  }
  binary_or_armor (part, obj, data);
}

static void walk (Walk *w, GMimeObject *obj, const char *path, guint depth, const char *role);

/* child_path - "@path.@index" (1-based) */
static char *
child_path (const char *path, int index)
{
  return g_strdup_printf ("%s.%d", path, index + 1);
}

/* add_leaf - a child of a protocol container: recorded with its role, classified as the container says */
static MgPart *
add_child_leaf (Walk *w, GMimeObject *obj, const char *path, int index, guint depth, const char *role)
{
  g_autofree char *cp = child_path (path, index);

  return add_part (w, obj, cp, depth + 1, role);
}

/* encrypted_payload - the ciphertext part of PGP/MIME (or its Exchange-mangled form): recipients and integrity */
static void
encrypted_payload (MgPart *container, MgPart *part, GMimeObject *obj, MgKind kind)
{
  g_autoptr (GByteArray) data = NULL;

  /* a large ciphertext: its packet headers (the recipients' PKESKs, the data packet's tag) come first, and its
   * start is all that is read; only when that start is not what it should be is the whole read, for the same errors */
  if (GMIME_IS_PART (obj) && content_length (GMIME_PART (obj)) > HEAD_FROM) {
    g_autoptr (GByteArray) head = decoded_head (GMIME_PART (obj), HEAD_BYTES);
    g_autoptr (GBytes) bytes = head ? openpgp_bytes (head) : NULL;
    MgCryptoInfo info;
    MgOpenpgpType t;
    mg_crypto_info_init (&info);
    t =
      bytes ? mg_openpgp_inspect (g_bytes_get_data (bytes, NULL), g_bytes_get_size (bytes), &info) : MG_OPENPGP_UNKNOWN;
    mg_crypto_info_clear (&info);
    if (t == MG_OPENPGP_ENCRYPTED) {
      set_kind (part, kind);
      mg_openpgp_inspect (g_bytes_get_data (bytes, NULL), g_bytes_get_size (bytes), &part->info);
      if (g_strcmp0 (part->info.integrity, "none") == 0)
        part_error (container, "encrypted without integrity protection (no MDC)");
      return;
    }
  }
  data = GMIME_IS_PART (obj) ? decoded (GMIME_PART (obj)) : NULL;
  set_kind (part, kind);
  if (data == NULL) {
    part_error (container, "the encrypted part cannot be read");
    return;
  }
  {
    g_autoptr (GBytes) bytes = openpgp_bytes (data);
    if (bytes == NULL || mg_openpgp_inspect (g_bytes_get_data (bytes, NULL), g_bytes_get_size (bytes), &part->info) !=
                           MG_OPENPGP_ENCRYPTED)
      part_error (container, "the encrypted part holds no OpenPGP message");
  }
  if (g_strcmp0 (part->info.integrity, "none") == 0)
    part_error (container, "encrypted without integrity protection (no MDC)");
}

/* pgp_mime_encrypted - RFC 3156 section 4: exactly two parts, application/pgp-encrypted then the ciphertext */
static void
pgp_mime_encrypted (Walk *w, MgPart *container, GMimeMultipart *mp, const char *path, guint depth)
{
  int n = g_mime_multipart_get_count (mp);

  set_kind (container, MG_KIND_PGP_MIME_ENCRYPTED);
  if (n != 2)
    part_error (container, "multipart/encrypted must have exactly two parts, has %d", n);
  for (int i = 0; i < n; i++) {
    GMimeObject *child = g_mime_multipart_get_part (mp, i);
    MgPart *cp = add_child_leaf (w, child, path, i, depth, i == 0 ? "control" : "ciphertext");
    if (cp == NULL)
      return;
    if (i == 0) {
      set_kind (cp, MG_KIND_PGP_MIME_ENCRYPTED);
      if (!is_type (cp, "application/pgp-encrypted"))
        part_error (container, "the first part is %s, not application/pgp-encrypted", cp->content_type);
    } else if (i == 1) {
      encrypted_payload (container, cp, child, MG_KIND_PGP_MIME_ENCRYPTED);
      container->info.integrity = g_strdup (cp->info.integrity);
    } else
      part_error (cp, "a part beyond the two of multipart/encrypted");
  }
}

/* signed_kind - the kind of a multipart/signed, from its protocol or, when missing, its signature part's type */
static gboolean
signed_kind (GMimeMultipart *mp, const char *protocol, MgKind *kind)
{
  g_autofree char *proto = protocol ? g_ascii_strdown (protocol, -1) : NULL;

  if (proto == NULL && g_mime_multipart_get_count (mp) == 2)
    proto = mime_type_of (g_mime_multipart_get_part (mp, 1));
  if (proto == NULL)
    return FALSE;
  if (strcmp (proto, "application/pgp-signature") == 0)
    *kind = MG_KIND_PGP_MIME_SIGNED;
  else if (strcmp (proto, "application/pkcs7-signature") == 0 || strcmp (proto, "application/x-pkcs7-signature") == 0)
    *kind = MG_KIND_SMIME_SIGNED_DETACHED;
  else
    return FALSE;
  return TRUE;
}

/* multipart_signed - RFC 1847/3156/8551: the signed content (walked like any part), then the signature */
static void
multipart_signed (Walk *w, MgPart *container, GMimeMultipart *mp, MgKind kind, const char *path, guint depth)
{
  int n = g_mime_multipart_get_count (mp);

  set_kind (container, kind);
  if (n != 2)
    part_error (container, "multipart/signed must have exactly two parts, has %d", n);
  if (g_mime_object_get_content_type_parameter (GMIME_OBJECT (mp), "protocol") == NULL)
    part_error (container, "multipart/signed without a protocol parameter");
  for (int i = 0; i < n; i++) {
    GMimeObject *child = g_mime_multipart_get_part (mp, i);
    if (i == 0) {
      g_autofree char *cp = child_path (path, i);
      walk (w, child, cp, depth + 1, "signed-content");
    } else if (i == 1 && GMIME_IS_PART (child)) {
      MgPart *sp = add_child_leaf (w, child, path, i, depth, "signature");
      g_autoptr (GByteArray) data = decoded (GMIME_PART (child));
      if (sp == NULL)
        return;
      if (data == NULL)
        part_error (sp, "the content cannot be decoded");
      else
        signature_leaf (sp, kind, data);
      if (sp->info.signers->len > 0)
        for (guint s = 0; s < sp->info.signers->len; s++) {
          const MgCryptoId *sig = g_ptr_array_index (sp->info.signers, s);
          MgCryptoId *copy = mg_crypto_id_new (sig->id, sig->algorithm);
          copy->digest = g_strdup (sig->digest);
          copy->name = g_strdup (sig->name);
          g_ptr_array_add (container->info.signers, copy);
        }
    } else {
      g_autofree char *cp = child_path (path, i);
      walk (w, child, cp, depth + 1, NULL);
      if (i == 1)
        part_error (container, "the signature is not a single part");
    }
  }
}

/* is_mangled - Exchange's rewrite of PGP/MIME: multipart/mixed of an empty text, the control part, encrypted.asc */
static gboolean
is_mangled (GMimeMultipart *mp)
{
  int n = g_mime_multipart_get_count (mp);
  GMimeObject *ctl, *enc;
  GMimeContentType *ct;

  if (n != 3)
    return FALSE;
  ctl = g_mime_multipart_get_part (mp, 1);
  enc = g_mime_multipart_get_part (mp, 2);
  ct = g_mime_object_get_content_type (g_mime_multipart_get_part (mp, 0));
  if (!GMIME_IS_PART (enc) || ct == NULL || !g_mime_content_type_is_type (ct, "text", "plain") || !is_control (ctl))
    return FALSE;
  ct = g_mime_object_get_content_type (enc);
  if (ct == NULL || !(g_mime_content_type_is_type (ct, "application", "octet-stream") ||
                      g_mime_content_type_is_type (ct, "application", "pgp-encrypted")))
    return FALSE;
  return is_openpgp_filename (g_mime_part_get_filename (GMIME_PART (enc))) &&
         text_is_placeholder (g_mime_multipart_get_part (mp, 0));
}

static void
pgp_mime_mangled (Walk *w, MgPart *container, GMimeMultipart *mp, const char *path, guint depth)
{
  static const char *const roles[] = { "empty-body", "control", "ciphertext" };

  set_kind (container, MG_KIND_PGP_MIME_MANGLED);
  for (int i = 0; i < 3; i++) {
    GMimeObject *child = g_mime_multipart_get_part (mp, i);
    MgPart *cp = add_child_leaf (w, child, path, i, depth, roles[i]);
    if (cp == NULL)
      return;
    if (i == 1)
      set_kind (cp, MG_KIND_PGP_MIME_MANGLED);
    else if (i == 2) {
      encrypted_payload (container, cp, child, MG_KIND_PGP_MIME_MANGLED);
      container->info.integrity = g_strdup (cp->info.integrity);
    }
  }
}

/* walk - reports @obj and everything under it, in document order */
static void
walk (Walk *w, GMimeObject *obj, const char *path, guint depth, const char *role)
{
  MgPart *part;

  if (depth > w->limits->max_depth) {
    if (!w->report->limited) {
      w->report->limited = TRUE;
      g_free (w->report->error);
      w->report->error = g_strdup_printf ("MIME nesting deeper than %u levels (max-depth); the rest is not inspected",
                                          w->limits->max_depth);
    }
    return;
  }
  part = add_part (w, obj, path, depth, role);
  if (part == NULL)
    return;

  if (GMIME_IS_MULTIPART (obj)) {
    GMimeMultipart *mp = GMIME_MULTIPART (obj);
    const char *protocol = g_mime_object_get_content_type_parameter (obj, "protocol");
    MgKind kind;
    if (is_type (part, "multipart/encrypted") &&
        (protocol == NULL || g_ascii_strcasecmp (protocol, "application/pgp-encrypted") == 0)) {
      pgp_mime_encrypted (w, part, mp, path, depth);
      if (protocol == NULL)
        part_error (part, "multipart/encrypted without a protocol parameter");
      return;
    }
    if (is_type (part, "multipart/signed") && signed_kind (mp, protocol, &kind)) {
      multipart_signed (w, part, mp, kind, path, depth);
      return;
    }
    if (is_type (part, "multipart/mixed") && is_mangled (mp)) {
      pgp_mime_mangled (w, part, mp, path, depth);
      return;
    }
    if (is_type (part, "multipart/signed") || is_type (part, "multipart/encrypted"))
      part_error (part, "unknown protocol %s", protocol ? protocol : "(none)");
    if (g_mime_multipart_get_count (mp) == 0)
      part_error (part, "a multipart without parts");
    for (int i = 0; i < g_mime_multipart_get_count (mp) && !w->report->limited; i++) {
      g_autofree char *cp = child_path (path, i);
      walk (w, g_mime_multipart_get_part (mp, i), cp, depth + 1, NULL);
    }
  } else if (GMIME_IS_MESSAGE_PART (obj)) {
    GMimeMessage *inner = g_mime_message_part_get_message (GMIME_MESSAGE_PART (obj));
    if (part->role == NULL)
      part->role = "forwarded";
    if (inner != NULL && g_mime_message_get_mime_part (inner) != NULL) {
      g_autofree char *cp = child_path (path, 0);
      walk (w, g_mime_message_get_mime_part (inner), cp, depth + 1, NULL);
    } else
      part_error (part, "the forwarded message is empty");
  } else if (GMIME_IS_PART (obj)) {
    classify_leaf (part, obj);
  }
}

/* finish - the report's kind set and outermost kind, from its parts in document order */
static void
finish (MgReport *r)
{
  for (guint i = 0; i < r->parts->len; i++) {
    const MgPart *p = g_ptr_array_index (r->parts, i);
    /* a plain container (multipart/mixed, a forwarded message/rfc822) is structure, not clear text */
    gboolean container =
      p->kinds == 0 && (g_str_has_prefix (p->content_type, "multipart/") ||
                        g_str_has_prefix (p->content_type, "message/") || g_strcmp0 (p->role, "empty-body") == 0);
    if (!container)
      r->kinds |= p->kinds ? p->kinds : MG_KIND_BIT (p->kind);
    if (r->kind == MG_KIND_PLAIN && p->kind != MG_KIND_PLAIN)
      r->kind = p->kind;
  }
  if (r->kinds == 0)
    r->kinds = MG_KIND_BIT (MG_KIND_PLAIN);
}

/**
 * mg_detect_message - the detection report of a parsed message.
 *
 * Returns: (transfer full): the report; never %NULL.
 */
MgReport *
mg_detect_message (GMimeMessage *message, const MgLimits *limits)
{
  MgReport *r = report_new ();
  Walk w = { r, limits };
  GMimeObject *body = g_mime_message_get_mime_part (message);
  const char *mid = g_mime_message_get_message_id (message);

  if (mid != NULL)
    r->message_id = g_utf8_make_valid (mid, -1);
  if (body == NULL) {
    MgPart *p = add_part (&w, NULL, "1", 0, NULL);
    part_error (p, "the message has no body");
  } else
    walk (&w, body, "1", 0, NULL);
  finish (r);
  return r;
}

/* boundaries - how many boundary parameters @data declares (a linear upper bound on its multiparts) */
static gsize
boundaries (const guint8 *data, gsize len)
{
  static const char needle[] = "boundary";
  const guint64 fold = 0x2020202020202020ULL; /* every letter lower case; "boundary" has only letters, so exact */
  guint64 want;
  gsize count = 0;

  /* eight octets compared at once: this runs over every byte of the message (base64 bodies included) */
  memcpy (&want, needle, sizeof want);
  for (gsize i = 0; i + sizeof want <= len; i++) {
    guint64 w;
    memcpy (&w, data + i, sizeof w);
    if ((w | fold) == want) {
      count++;
      i += sizeof want - 1;
    }
  }
  return count;
}

static void
warning_cb (gint64 offset, GMimeParserWarning code, const char *item, gpointer user_data)
{
  GPtrArray *warnings = user_data;
  const char *what;

  switch (code) {
  case GMIME_WARN_MALFORMED_MULTIPART:
    what = "a multipart has no child parts";
    break;
  case GMIME_WARN_TRUNCATED_MESSAGE:
    what = "the message is truncated";
    break;
  case GMIME_WARN_MALFORMED_MESSAGE:
    what = "the message is malformed";
    break;
  case GMIME_CRIT_MULTIPART_WITHOUT_BOUNDARY:
    what = "a multipart has no boundary parameter";
    break;
  case GMIME_CRIT_NESTING_OVERFLOW:
    what = "MIME nesting overflows the parser";
    break;
  case GMIME_CRIT_PART_WITHOUT_HEADERS_OR_CONTENT:
    what = "a part has neither headers nor content";
    break;
  case GMIME_CRIT_INVALID_HEADER_NAME:
    what = "an invalid header name";
    break;
  case GMIME_WARN_INVALID_CONTENT_TYPE:
    what = "an invalid Content-Type";
    break;
  default:
    return;
  }
  if (warnings->len < 32)
    g_ptr_array_add (warnings, g_strdup_printf ("%s (offset %" G_GINT64_FORMAT ")", what, offset));
}

/* raw_object - a file that is a bare CMS object, OpenPGP packets or armor rather than a MIME message */
static MgReport *
raw_object (const guint8 *data, gsize len)
{
  MgReport *r = report_new ();
  MgLimits limits;
  Walk w = { r, &limits };
  MgPart *p;

  mg_limits_init_default (&limits);
  p = add_part (&w, NULL, "1", 0, "raw-file");
  if (mg_cms_sniff (data, len)) {
    g_autoptr (GError) error = NULL;
    MgKind kind;
    MgCmsType t = mg_cms_inspect (data, len, &p->info, &error);
    g_free (p->content_type);
    p->content_type = g_strdup ("application/pkcs7-mime");
    if (cms_kind (t, &kind))
      set_kind (p, kind);
    else
      part_error (p, "not an S/MIME CMS object%s%s", error ? ": " : "", error ? error->message : "");
  } else if (mg_openpgp_sniff (data, len)) {
    g_free (p->content_type);
    p->content_type = g_strdup ("application/octet-stream");
    openpgp_block (p, data, len, MG_ARMOR_MESSAGE, TRUE);
  } else
    scan_armor (p, (const char *) data, len, FALSE);
  finish (r);
  return r;
}

/* starts_with_armor - the data begins (after blank space) with an armor line, not with mail headers */
static gboolean
starts_with_armor (const guint8 *data, gsize len)
{
  gsize i = 0;

  while (i < len && g_ascii_isspace (data[i]))
    i++;
  return len - i > 15 && (memcmp (data + i, "-----BEGIN PGP ", 15) == 0);
}

/**
 * mg_detect_data - parses one message (or a bare CMS/OpenPGP file) and reports what it is.
 * @data: the raw message; an mbox "From " line in front is skipped
 * @limits: size, depth and part limits
 *
 * Returns: (transfer full): the report; never %NULL. Problems are in its error and warnings.
 */
MgReport *
mg_detect_data (const guint8 *data, gsize len, const MgLimits *limits)
{
  g_autoptr (GMimeStream) stream = NULL;
  g_autoptr (GMimeParser) parser = NULL;
  g_autoptr (GMimeMessage) message = NULL;
  GMimeParserOptions *options;
  GPtrArray *warnings;
  MgReport *r;
  gsize nb;

  if (len > limits->max_size) {
    r = report_new ();
    r->limited = TRUE;
    r->error = g_strdup_printf ("the message is %" G_GSIZE_FORMAT " bytes, larger than max-size (%" G_GSIZE_FORMAT ")",
                                len, limits->max_size);
    finish (r);
    return r;
  }
  if (len == 0) {
    r = report_new ();
    r->error = g_strdup ("the message is empty");
    finish (r);
    return r;
  }
  if (len > 5 && memcmp (data, "From ", 5) == 0) {
    const guint8 *nl = memchr (data, '\n', len);
    gsize skip = nl ? (gsize) (nl - data) + 1 : len;
    data += skip;
    len -= skip;
  }
  if (mg_cms_sniff (data, len) || mg_openpgp_sniff (data, len) || starts_with_armor (data, len))
    return raw_object (data, len);
  nb = boundaries (data, len);
  if (nb > limits->max_parts) {
    r = report_new ();
    r->limited = TRUE;
    r->error = g_strdup_printf ("the message declares %" G_GSIZE_FORMAT " multipart boundaries, more than max-parts "
                                "(%u); it is not parsed",
                                nb, limits->max_parts);
    finish (r);
    return r;
  }

  warnings = g_ptr_array_new_with_free_func (g_free);
  options = g_mime_parser_options_new ();
  g_mime_parser_options_set_warning_callback (options, warning_cb, warnings);
  {
    /* in place: the parse copies no body (its parts are substreams); nothing of it outlives this call */
    g_autoptr (GBytes) view = g_bytes_new_static (data, len);
    stream = mg_stream_for_bytes (view);
  }
  parser = g_mime_parser_new_with_stream (stream);
  g_mime_parser_set_format (parser, GMIME_FORMAT_MESSAGE);
  message = g_mime_parser_construct_message (parser, options);
  g_mime_parser_options_free (options);
  if (message == NULL) {
    r = report_new ();
    r->error = g_strdup ("not a MIME message");
    g_ptr_array_extend_and_steal (r->warnings, warnings);
    finish (r);
    return r;
  }
  r = mg_detect_message (message, limits);
  g_ptr_array_extend_and_steal (r->warnings, warnings);
  return r;
}
