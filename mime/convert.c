/* convert.c - one message into one form (RFC 3156 PGP/MIME, RFC 8551 S/MIME, plain) for a set of recipients.
 *
 * The steps: detect what the message is; if its outermost layer is encryption (PGP/MIME, Exchange-mangled PGP/MIME,
 * S/MIME enveloped), decrypt it with a key the gateway holds, which yields the inner MIME entity; then emit that
 * entity in the asked form, encrypted to every recipient's chosen key. A message already in the asked form and
 * readable by every recipient is kept as it is (never re-encrypted for nothing). Nothing is emitted before all of it
 * is done, and clear text exists only in memory or, for a message over spool-threshold, in spool files that have no
 * name (mode 0600, spool.h): never in a named file, never in a log.
 *
 * The streaming path (a message over spool-threshold, large()): the canonical entity, the decrypted clear text and
 * the ciphertext each go into a spool as they are made and are read back through GMime streams (pread on the spool's
 * file, so what is read does not become this process's memory); ciphertext parts are decoded as they are read; the
 * keys/ stream functions encrypt and decrypt from stream to stream. Smaller messages use the GBytes functions.
 *
 * PGP/Inline (the form Microsoft 365 reads): going out, the body text becomes one armored block of UTF-8 text in
 * text/plain, each attachment is encrypted on its own as NAME.pgp, an HTML-only body travels as body.html.pgp beside a
 * short note, and of text/HTML alternatives the text is kept. Coming in, armor in text parts and encrypted
 * attachments are decrypted part by part; decrypted text always becomes its own part, never merged with the clear
 * text around it (EFAIL). PGP/MIME as Exchange mangles it is repaired without decrypting when every recipient can
 * read it already.
 *
 * Signatures: the clear entity's own signature layer (PGP/MIME, S/MIME detached or opaque) is verified against the
 * GnuPG home and the X.509 trusted collection, and so is a cleartext signature (PGP/Inline) in the body text; the
 * verdict is stamped as Authentication-Results (RFC 8601; smime per RFC 7281, x-openpgp for OpenPGP) after every
 * incoming stamp with our authserv-id is removed — on the keep path too, where only the header block is edited. Only
 * a good signature by a trusted signer over the whole text is a pass.
 *
 * Signing, when asked: PGP/MIME or S/MIME multipart/signed around the entity (then encrypted when the form
 * encrypts), PGP/Inline pieces signed and encrypted in one OpenPGP message, or cleartext-signed text with NAME.asc
 * beside each attachment. The signing key is chosen before anything is decrypted, like the recipients' keys.
 * S/MIME compressed-data is inflated (bounded by max-decompressed) like a layer of encryption. */
#include "config.h"

#include "convert.h"

#include <string.h>

#include <glib/gi18n.h>

#include "armor.h"
#include "cms.h"
#include "hpread.h"
#include "smime.h"
#include "mg-gmime.h"

GQuark
mg_convert_error_quark (void)
{
  return g_quark_from_static_string ("mg-convert-error-quark");
}

static const char *const form_names[MG_FORM_COUNT] = { "keep", "plain", "pgp-mime", "pgp-inline", "smime" };

const char *
mg_form_name (MgForm form)
{
  g_return_val_if_fail (form < MG_FORM_COUNT, "keep");
  return form_names[form];
}

gboolean
mg_form_from_name (const char *name, MgForm *form)
{
  for (guint i = 0; i < MG_FORM_COUNT; i++)
    if (g_strcmp0 (name, form_names[i]) == 0) {
      *form = i;
      return TRUE;
    }
  return FALSE;
}

static const char *const sign_names[] = { "none", "auto", "pgp", "pgp-inline", "smime" };

gboolean
mg_sign_method_from_name (const char *name, MgSignMethod *method)
{
  for (guint i = 0; i < G_N_ELEMENTS (sign_names); i++)
    if (g_strcmp0 (name, sign_names[i]) == 0) {
      *method = i;
      return TRUE;
    }
  return FALSE;
}

void
mg_convert_result_init (MgConvertResult *result)
{
  memset (result, 0, sizeof *result);
  result->action = "kept";
  result->keys = g_ptr_array_new_with_free_func (g_free);
  result->notes = g_ptr_array_new_with_free_func (g_free);
}

void
mg_convert_result_clear (MgConvertResult *result)
{
  g_clear_pointer (&result->keys, g_ptr_array_unref);
  g_clear_pointer (&result->notes, g_ptr_array_unref);
  g_clear_pointer (&result->signature, mg_signature_free);
  g_clear_pointer (&result->signed_with, g_free);
  g_clear_pointer (&result->hp_stamp, g_free);
}

/* mg_authserv_id_valid - an authserv-id we can put in a header as it is: a host-name-like token (RFC 8601 2.5) */
gboolean
mg_authserv_id_valid (const char *id)
{
  if (id == NULL || id[0] == '\0' || strlen (id) > 255)
    return FALSE;
  for (const char *c = id; *c; c++)
    if (!g_ascii_isalnum (*c) && *c != '.' && *c != '-' && *c != '_')
      return FALSE;
  return TRUE;
}

/* part_bytes - a leaf's content without its transfer encoding */
static GBytes *
part_bytes (GMimeObject *obj)
{
  GMimeDataWrapper *content = GMIME_IS_PART (obj) ? g_mime_part_get_content (GMIME_PART (obj)) : NULL;
  g_autoptr (GMimeStream) mem = NULL;
  GByteArray *ba;

  if (content == NULL)
    return NULL;
  mem = g_mime_stream_mem_new ();
  if (g_mime_data_wrapper_write_to_stream (content, mem) < 0)
    return NULL;
  ba = g_mime_stream_mem_get_byte_array (GMIME_STREAM_MEM (mem));
  return g_bytes_new (ba->data, ba->len);
}

/* parse_entity - a MIME entity (headers and body) from decrypted bytes */
static GMimeObject *
parse_entity (GBytes *bytes, GError **error)
{
  /* in place: the parts are substreams holding @bytes; a spool file is read with pread, never mapped in */
  g_autoptr (GMimeStream) s = mg_spool_file_stream (bytes);
  g_autoptr (GMimeParser) parser = NULL;
  GMimeObject *obj;

  parser = g_mime_parser_new_with_stream (s);
  obj = g_mime_parser_construct_part (parser, NULL);
  if (obj == NULL)
    g_set_error_literal (error, MG_CONVERT_ERROR, MG_CONVERT_ERROR_MALFORMED,
                         _ ("the decrypted content is not a MIME entity"));
  return obj;
}

/* entity_bytes - @obj with CRLF line ends, as RFC 3156 and RFC 8551 want it before encryption */
static GBytes *
entity_bytes (GMimeObject *obj)
{
  g_autoptr (GMimeStream) mem = g_mime_stream_mem_new ();
  GMimeFormatOptions *fo = g_mime_format_options_new ();
  GByteArray *ba;

  g_mime_format_options_set_newline_format (fo, GMIME_NEWLINE_FORMAT_DOS);
  g_mime_object_write_to_stream (obj, fo, mem);
  g_mime_format_options_free (fo);
  ba = g_mime_stream_mem_get_byte_array (GMIME_STREAM_MEM (mem));
  return g_bytes_new (ba->data, ba->len);
}

/* piece_bytes - what one piece of a PGP/Inline message carries: a leaf's content (empty when the part has none), or
 * a forwarded message or another structure as the whole entity. NULL with @error only when GMime cannot write it. */
static GBytes *
piece_bytes (GMimeObject *obj, GError **error)
{
  GBytes *b;

  if (!GMIME_IS_PART (obj))
    return entity_bytes (obj);
  if (g_mime_part_get_content (GMIME_PART (obj)) == NULL)
    return g_bytes_new (NULL, 0);
  b = part_bytes (obj);
  if (b == NULL)
    g_set_error_literal (error, MG_CONVERT_ERROR, MG_CONVERT_ERROR_MALFORMED, _ ("a part's content cannot be read"));
  return b;
}

/* crlf_bytes - @len bytes at @data with every bare LF made CRLF (RFC 3156 and RFC 8551 canonical line ends) */
static GBytes *
crlf_bytes (const char *data, gsize len)
{
  GString *out = g_string_sized_new (len + len / 32 + 2);

  for (gsize i = 0; i < len; i++) {
    if (data[i] == '\n' && (i == 0 || data[i - 1] != '\r'))
      g_string_append_c (out, '\r');
    g_string_append_c (out, data[i]);
  }
  return g_string_free_to_bytes (out);
}

/* large - whether a message of @size octets takes the streaming path: over the spool threshold its entity, clear text
 * and ciphertext go through spool files (unnamed, 0600) and GMime streams, never whole in memory. Smaller ones keep
 * the GBytes functions: no GPGME data callbacks to start, no file. */
static gboolean
large (const MgConvertKeys *keys, gsize size)
{
  return size > (keys->limits ? keys->limits->spool_threshold : MG_SPOOL_DEFAULT_THRESHOLD);
}

/* spool_for - an empty spool where @keys' limits say */
static MgSpool *
spool_for (const MgConvertKeys *keys)
{
  const MgLimits *l = keys->limits;

  return mg_spool_new (l ? l->spool_dir : NULL, l ? l->spool_threshold : MG_SPOOL_DEFAULT_THRESHOLD);
}

/* spool_end - @spool's content once GMime has written @written octets into it (negative: a read or a write failed),
 * %NULL with @error otherwise; a failed spool is dropped by its owner with whatever it held */
static GBytes *
spool_end (MgSpool *spool, gint64 written, GError **error)
{
  GError *local = NULL;
  g_autoptr (GBytes) out = mg_spool_finish (spool, &local);

  if (out == NULL) {
    g_propagate_error (error, local);
    return NULL;
  }
  if (written < 0) {
    g_set_error_literal (error, MG_CONVERT_ERROR, MG_CONVERT_ERROR_INTERNAL, _ ("a part's content cannot be read"));
    return NULL;
  }
  return g_steal_pointer (&out);
}

/* part_stream - a leaf's content as it is read, its transfer encoding undone as it goes (g_mime_filter_basic_new over
 * a substream of the part's own stream: nothing copied); NULL when the part has none */
static GMimeStream *
part_stream (GMimeObject *obj)
{
  GMimeDataWrapper *content = GMIME_IS_PART (obj) ? g_mime_part_get_content (GMIME_PART (obj)) : NULL;
  GMimeStream *src = content ? g_mime_data_wrapper_get_stream (content) : NULL;
  GMimeContentEncoding enc = content ? g_mime_data_wrapper_get_encoding (content) : GMIME_CONTENT_ENCODING_DEFAULT;
  g_autoptr (GMimeStream) sub = NULL;
  GMimeStream *filtered;

  if (src == NULL)
    return NULL;
  sub = g_mime_stream_substream (src, src->bound_start, src->bound_end);
  filtered = g_mime_stream_filter_new (sub);
  if (enc == GMIME_CONTENT_ENCODING_BASE64 || enc == GMIME_CONTENT_ENCODING_QUOTEDPRINTABLE ||
      enc == GMIME_CONTENT_ENCODING_UUENCODE) {
    g_autoptr (GMimeFilter) f = g_mime_filter_basic_new (enc, FALSE);
    g_mime_stream_filter_add (GMIME_STREAM_FILTER (filtered), f);
  }
  return filtered;
}

/* entity_spool - entity_bytes() written into a spool as GMime makes it (a spool file past the threshold, read back
 * by pread); NULL with @error when the spool cannot take it */
static GBytes *
entity_spool (GMimeObject *obj, const MgConvertKeys *keys, GError **error)
{
  g_autoptr (MgSpool) spool = spool_for (keys);
  g_autoptr (GMimeStream) sink = mg_spool_stream (spool);
  GMimeFormatOptions *fo = g_mime_format_options_new ();
  gint64 written;

  g_mime_format_options_set_newline_format (fo, GMIME_NEWLINE_FORMAT_DOS);
  written = g_mime_object_write_to_stream (obj, fo, sink);
  g_mime_format_options_free (fo);
  return spool_end (spool, written, error);
}

/* crlf_stream - crlf_bytes() of @raw as it is read (g_mime_filter_unix2dos over @raw in place: no copy) */
static GMimeStream *
crlf_stream (GBytes *raw)
{
  g_autoptr (GMimeStream) src = mg_spool_file_stream (raw);
  g_autoptr (GMimeFilter) f = g_mime_filter_unix2dos_new (FALSE);
  GMimeStream *crlf = g_mime_stream_filter_new (src);

  g_mime_stream_filter_add (GMIME_STREAM_FILTER (crlf), f);
  return crlf;
}

/* Recipients - the keys an encrypting form uses, chosen before anything is decrypted */
typedef struct {
  GPtrArray *pgp;     /* (element-type MgPgpKey) */
  GPtrArray *certs;   /* (element-type X509) borrowed from the store */
  GPtrArray *ids;     /* subkey ids or "serial=…": what the input's recipients are compared with */
  const char *signer; /* (nullable): PGP/Inline: the fingerprint that signs each encrypted piece */
} Recipients;

static void
recipients_clear (Recipients *r)
{
  g_clear_pointer (&r->pgp, g_ptr_array_unref);
  g_clear_pointer (&r->certs, g_ptr_array_unref);
  g_clear_pointer (&r->ids, g_ptr_array_unref);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (Recipients, recipients_clear)

/* resolve - every recipient's key for @form; NO_KEY names the first address without one (never clear text) */
static gboolean
resolve (MgForm form, const char *const *recipients, const MgConvertKeys *keys, Recipients *r, MgConvertResult *result,
         GError **error)
{
  r->pgp = g_ptr_array_new_with_free_func ((GDestroyNotify) mg_pgp_key_free);
  r->certs = g_ptr_array_new ();
  r->ids = g_ptr_array_new_with_free_func (g_free);
  for (guint i = 0; recipients[i] != NULL; i++) {
    g_autoptr (GPtrArray) refused = g_ptr_array_new_with_free_func ((GDestroyNotify) mg_keys_refusal_free);
    if (form == MG_FORM_PGP_MIME || form == MG_FORM_PGP_INLINE) {
      GError *local = NULL;
      MgPgpKey *k = keys->gnupg ? mg_gnupg_lookup (keys->gnupg, recipients[i], refused, &local) : NULL;
      if (local != NULL) {
        g_propagate_error (error, local);
        return FALSE;
      }
      if (k == NULL) {
        g_set_error (error, MG_CONVERT_ERROR, MG_CONVERT_ERROR_NO_KEY, _ ("no usable OpenPGP key for %s"),
                     recipients[i]);
        return FALSE;
      }
      g_ptr_array_add (r->ids, g_strdup (k->subkey_id));
      g_ptr_array_add (result->keys, g_strdup (k->fingerprint));
      g_ptr_array_add (r->pgp, k);
    } else {
      GError *local = NULL;
      const MgX509Cert *c =
        keys->x509 ? mg_x509_store_lookup_checked (keys->x509, recipients[i], refused, &local) : NULL;
      if (local != NULL) {
        g_propagate_error (error, local);
        return FALSE;
      }
      if (c == NULL) {
        g_set_error (error, MG_CONVERT_ERROR, MG_CONVERT_ERROR_NO_KEY, _ ("no usable X.509 certificate for %s"),
                     recipients[i]);
        return FALSE;
      }
      g_ptr_array_add (r->ids, g_strdup_printf ("serial=%s", c->serial));
      g_ptr_array_add (result->keys, g_strdup (c->fingerprint));
      g_ptr_array_add (r->certs, c->cert);
    }
  }
  return TRUE;
}

static GMimePart *
leaf_new (const char *type, const char *subtype, GBytes *content, GMimeContentEncoding encoding)
{
  /* the class GMime's parser would make for this type (a GMimeTextPart for text), so that text is text everywhere */
  GMimePart *part = GMIME_PART (g_mime_object_new_type (NULL, type, subtype));
  g_autoptr (GMimeContentType) ct = g_mime_content_type_new (type, subtype);
  /* in place: the part holds @content, no copy; a spool file is read by pread as the message is written out */
  g_autoptr (GMimeStream) s = mg_spool_file_stream (content);
  g_autoptr (GMimeDataWrapper) w = g_mime_data_wrapper_new_with_stream (s, GMIME_CONTENT_ENCODING_DEFAULT);

  g_mime_object_set_content_type (GMIME_OBJECT (part), ct); /* new_type leaves the header to the parser */
  g_mime_part_set_content (part, w);
  g_mime_part_set_content_encoding (part, encoding);
  return part;
}

/* text_leaf - text/plain in UTF-8 when @text is valid UTF-8, else in @charset (its original one) */
static GMimeObject *
text_leaf (GBytes *text, const char *charset)
{
  gboolean utf8 = g_utf8_validate (g_bytes_get_data (text, NULL), (gssize) g_bytes_get_size (text), NULL);
  GMimePart *p = leaf_new ("text", "plain", text, GMIME_CONTENT_ENCODING_QUOTEDPRINTABLE);

  g_mime_object_set_content_type_parameter (GMIME_OBJECT (p), "charset",
                                            utf8 ? "utf-8" : (charset ? charset : "iso-8859-1"));
  return GMIME_OBJECT (p);
}

static GMimeObject *
mixed_new (void)
{
  GMimeMultipart *mp = g_mime_multipart_new_with_subtype ("mixed");

  g_mime_multipart_set_boundary (mp, NULL);
  return GMIME_OBJECT (mp);
}

static void
mixed_add (GMimeObject *mixed, GMimeObject *part)
{
  g_mime_multipart_add (GMIME_MULTIPART (mixed), part);
  g_object_unref (part);
}

/* strip_suffix - "report.pdf" for "report.pdf.pgp" (also .gpg, .asc) */
static char *
strip_suffix (const char *name)
{
  const char *dot = name ? strrchr (name, '.') : NULL;

  if (dot != NULL && dot != name &&
      (g_ascii_strcasecmp (dot, ".pgp") == 0 || g_ascii_strcasecmp (dot, ".gpg") == 0 ||
       g_ascii_strcasecmp (dot, ".asc") == 0))
    return g_strndup (name, (gsize) (dot - name));
  return g_strdup (name ? name : "attachment");
}

/* Decrypt - state of the part-by-part decryption of a message, and of the signatures found inside its OpenPGP
 * encryption (signed and encrypted in one message: RFC 3156 section 6.2, and PGP/Inline pieces) */
typedef struct {
  const MgConvertKeys *keys;
  GHashTable *parts; /* path → MgPart of the detection report */
  MgConvertResult *result;
  gboolean changed;
  MgSignature *sig;        /* (nullable) (owned): the least trusting verdict of the signed pieces */
  guint signed_pieces;     /* decrypted pieces that carried a signature */
  guint unsigned_pieces;   /* and those that did not */
  gboolean clear_text;     /* non-blank clear text beside encrypted armor in the same text part */
  gboolean signers_differ; /* the signed pieces name more than one key */
  gboolean large;          /* the streaming path (large()): ciphertext read through streams, clear text spooled */
} Decrypt;

/* trust_rank - how little a verdict lets one trust the message: pass first, fail last */
static int
trust_rank (MgSigResult result)
{
  switch (result) {
  case MG_SIG_PASS:
    return 0;
  case MG_SIG_NEUTRAL:
    return 1;
  case MG_SIG_TEMPERROR:
    return 2;
  case MG_SIG_PERMERROR:
    return 3;
  case MG_SIG_FAIL:
    break;
  }
  return 4;
}

/* worse - of two verdicts (either may be NULL) on one message, the one that trusts it less, @a when they are alike;
 * the other is freed */
static MgSignature *
worse (MgSignature *a, MgSignature *b)
{
  if (a == NULL || b == NULL)
    return a ? a : b;
  if (trust_rank (b->result) > trust_rank (a->result)) {
    mg_signature_free (a);
    return b;
  }
  mg_signature_free (b);
  return a;
}

/* decrypt_pgp - @cipher (bytes) or @stream (read to its end; the streaming path: the clear text goes into a spool)
 * decrypted with a key of the GnuPG home; the key used and the signature inside are tallied in @d */
static GBytes *
decrypt_pgp (Decrypt *d, GBytes *cipher, GMimeStream *stream, GError **error)
{
  g_autofree char *used = NULL;
  MgSignature *sig = NULL;
  GBytes *clear;

  if (d->keys->gnupg == NULL) {
    g_set_error_literal (error, MG_KEYS_ERROR, MG_KEYS_ERROR_NOT_HELD,
                         _ ("encrypted to OpenPGP keys, and no GnuPG home is configured"));
    return NULL;
  }
  if (stream != NULL) {
    g_autoptr (MgSpool) spool = spool_for (d->keys);
    g_autoptr (GMimeStream) sink = mg_spool_stream (spool);
    /* on failure the spool, with whatever clear text it holds, is dropped here: never passed on */
    clear = mg_gnupg_decrypt_stream (d->keys->gnupg, stream, sink, &used, &sig, error) ? mg_spool_finish (spool, error)
                                                                                       : NULL;
    if (clear == NULL)
      g_clear_pointer (&sig, mg_signature_free);
  } else
    clear = mg_gnupg_decrypt (d->keys->gnupg, cipher, &used, &sig, error);
  if (clear != NULL && used != NULL)
    g_ptr_array_add (d->result->keys, g_steal_pointer (&used));
  if (clear == NULL)
    return NULL;
  if (sig == NULL) {
    d->unsigned_pieces++;
    return clear;
  }
  d->signed_pieces++;
  if (d->sig != NULL && g_strcmp0 (d->sig->id, sig->id) != 0)
    d->signers_differ = TRUE;
  d->sig = worse (d->sig, sig);
  return clear;
}

/* decrypt_verdict - the verdict on the signatures found while decrypting (NULL: none was signed), taken from @d. A
 * good signature over only part of what was decrypted (or beside clear text) is neutral, never a pass. */
static MgSignature *
decrypt_verdict (Decrypt *d)
{
  MgSignature *sig = g_steal_pointer (&d->sig);
  const char *why = NULL;

  if (sig == NULL)
    return NULL;
  if (d->unsigned_pieces > 0)
    why = "only part of the message is signed";
  else if (d->clear_text)
    why = "only part of the text is signed";
  else if (d->signers_differ)
    why = "parts of the message are signed by different keys";
  if (why != NULL && sig->result == MG_SIG_PASS) {
    sig->result = MG_SIG_NEUTRAL;
    g_free (sig->reason);
    sig->reason = g_strdup (why);
  }
  return sig;
}

/* inline_text - a text part holding encrypted armor: each block decrypted into its own part, the clear text around
 * it (or the whole HTML part) kept as its own part too. Returns the replacement, or NULL with @error. */
static GMimeObject *
inline_text (Decrypt *d, GMimeObject *obj, GError **error)
{
  g_autoptr (GBytes) raw = part_bytes (obj);
  const char *charset = g_mime_object_get_content_type_parameter (obj, "charset");
  gboolean html = g_mime_content_type_is_type (g_mime_object_get_content_type (obj), "text", "html");
  g_autofree char *text = NULL;
  gsize len = 0, pos = 0;
  g_autoptr (GArray) blocks = NULL;
  g_autoptr (GPtrArray) pieces = g_ptr_array_new_with_free_func (g_object_unref);

  if (raw == NULL)
    return g_object_ref (obj);
  if (html)
    text = mg_armor_html_to_text (g_bytes_get_data (raw, NULL), g_bytes_get_size (raw), &len);
  else {
    len = g_bytes_get_size (raw);
    text = g_strndup (g_bytes_get_data (raw, NULL), len);
  }
  blocks = mg_armor_find (text, len);
  if (html)
    g_ptr_array_add (pieces, g_object_ref (obj)); /* never re-inserted into HTML: the HTML stays as it came */
  for (guint i = 0; i < blocks->len; i++) {
    const MgArmorBlock *b = &g_array_index (blocks, MgArmorBlock, i);
    g_autoptr (GBytes) cipher = NULL, clear = NULL;
    if (b->type != MG_ARMOR_MESSAGE)
      continue;
    if (b->begin > pos) {
      g_autoptr (GBytes) before = g_bytes_new (text + pos, b->begin - pos);
      g_autofree char *trimmed = g_strstrip (g_strndup (text + pos, b->begin - pos));
      d->clear_text |= trimmed[0] != '\0';
      if (!html && trimmed[0] != '\0')
        g_ptr_array_add (pieces, text_leaf (before, charset));
    }
    cipher = g_bytes_new (text + b->begin, b->end - b->begin);
    clear = decrypt_pgp (d, cipher, NULL, error);
    if (clear == NULL)
      return NULL;
    g_ptr_array_add (pieces, text_leaf (clear, charset));
    pos = b->end;
  }
  if (pos < len) {
    g_autofree char *trimmed = g_strstrip (g_strndup (text + pos, len - pos));
    d->clear_text |= trimmed[0] != '\0';
    if (!html && trimmed[0] != '\0') {
      g_autoptr (GBytes) after = g_bytes_new (text + pos, len - pos);
      g_ptr_array_add (pieces, text_leaf (after, charset));
    }
  }
  if (text != NULL)
    memset (text, 0, len);
  if (pieces->len == 1)
    return g_object_ref (g_ptr_array_index (pieces, 0));
  {
    GMimeObject *mixed = mixed_new ();
    for (guint i = 0; i < pieces->len; i++)
      g_mime_multipart_add (GMIME_MULTIPART (mixed), g_ptr_array_index (pieces, i));
    return mixed;
  }
}

/* inline_attachment - NAME.pgp decrypted into NAME, its type guessed from the name */
static GMimeObject *
inline_attachment (Decrypt *d, GMimeObject *obj, GError **error)
{
  g_autoptr (GMimeStream) stream = d->large ? part_stream (obj) : NULL;
  g_autoptr (GBytes) cipher = stream ? NULL : part_bytes (obj);
  g_autoptr (GBytes) clear = NULL;
  g_autofree char *name = strip_suffix (g_mime_part_get_filename (GMIME_PART (obj)));
  g_autofree char *guess = g_content_type_guess (name, NULL, 0, NULL);
  g_autofree char *mime = guess ? g_content_type_get_mime_type (guess) : NULL;
  g_auto (GStrv) type = g_strsplit (mime && strchr (mime, '/') ? mime : "application/octet-stream", "/", 2);
  GMimePart *part;

  if (cipher == NULL && stream == NULL) {
    g_set_error (error, MG_KEYS_ERROR, MG_KEYS_ERROR_CRYPTO, _ ("the encrypted attachment %s is empty"), name);
    return NULL;
  }
  if ((clear = decrypt_pgp (d, cipher, stream, error)) == NULL)
    return NULL;
  part = leaf_new (type[0], type[1], clear, GMIME_CONTENT_ENCODING_BASE64);
  g_mime_part_set_filename (part, name);
  g_mime_object_set_disposition (GMIME_OBJECT (part), "attachment");
  return GMIME_OBJECT (part);
}

/* decrypt_tree - replaces, below @obj, every PGP/Inline text and encrypted attachment by its clear form. Forwarded
 * messages and signed content are left as they are: their protection is theirs. Returns the new @obj. */
static GMimeObject *
decrypt_tree (Decrypt *d, GMimeObject *obj, const char *path, GError **error)
{
  const MgPart *p = g_hash_table_lookup (d->parts, path);

  if (GMIME_IS_MULTIPART (obj)) {
    GMimeMultipart *mp = GMIME_MULTIPART (obj);
    if (p != NULL && (p->kind == MG_KIND_PGP_MIME_SIGNED || p->kind == MG_KIND_SMIME_SIGNED_DETACHED))
      return g_object_ref (obj);
    for (int i = 0; i < g_mime_multipart_get_count (mp); i++) {
      g_autofree char *cp = g_strdup_printf ("%s.%d", path, i + 1);
      GMimeObject *child = g_mime_multipart_get_part (mp, i);
      g_autoptr (GMimeObject) repl = decrypt_tree (d, child, cp, error);
      if (repl == NULL)
        return NULL;
      if (repl != child) {
        GMimeObject *old = g_mime_multipart_replace (mp, i, repl);
        g_object_unref (old);
      }
    }
    return g_object_ref (obj);
  }
  if (p == NULL || !GMIME_IS_PART (obj))
    return g_object_ref (obj);
  if (p->kind == MG_KIND_PGP_INLINE_ENCRYPTED) {
    d->changed = TRUE;
    return inline_text (d, obj, error);
  }
  if (p->kind == MG_KIND_PGP_ATTACHMENT_ENCRYPTED) {
    d->changed = TRUE;
    return inline_attachment (d, obj, error);
  }
  return g_object_ref (obj);
}

/* decrypt_body - the clear entity of the message body: top-level PGP/MIME (also mangled) or S/MIME decrypted as a
 * whole, PGP/Inline and encrypted attachments part by part; a new reference to @body when nothing is encrypted.
 * @raw: (out) (transfer full): the clear bytes the entity was parsed from when the body was decrypted (or inflated)
 *   as a whole, else left %NULL (the entity is then the message's own body)
 * @sealed: (out) (transfer full): the verdict on the signatures inside the OpenPGP encryption, %NULL when none */
static GMimeObject *
decrypt_body (GMimeObject *body, const MgReport *report, const MgConvertKeys *keys, gboolean big,
              MgConvertResult *result, GBytes **raw, MgSignature **sealed, GError **error)
{
  const MgPart *top = g_ptr_array_index (report->parts, 0);
  g_autoptr (GBytes) cipher = NULL;
  g_autoptr (GMimeStream) stream = NULL; /* the streaming path's ciphertext, its transfer encoding undone as read */
  g_autoptr (GBytes) clear = NULL;
  g_autofree char *used = NULL;

  switch (top->kind) {
  case MG_KIND_PGP_MIME_ENCRYPTED:
  case MG_KIND_PGP_MIME_MANGLED: {
    int index = top->kind == MG_KIND_PGP_MIME_ENCRYPTED ? 1 : 2;
    Decrypt d = { keys, NULL, result, FALSE };
    GMimeObject *part = GMIME_IS_MULTIPART (body) && g_mime_multipart_get_count (GMIME_MULTIPART (body)) > index
                          ? g_mime_multipart_get_part (GMIME_MULTIPART (body), index)
                          : NULL;
    d.large = big;
    if (part == NULL || (big ? (stream = part_stream (part)) == NULL : (cipher = part_bytes (part)) == NULL)) {
      g_set_error_literal (error, MG_CONVERT_ERROR, MG_CONVERT_ERROR_MALFORMED, _ ("the PGP/MIME structure is broken"));
      return NULL;
    }
    clear = decrypt_pgp (&d, cipher, stream, error);
    *sealed = decrypt_verdict (&d);
    break;
  }
  case MG_KIND_SMIME_ENVELOPED:
    if (big ? (stream = part_stream (body)) == NULL : (cipher = part_bytes (body)) == NULL) {
      g_set_error_literal (error, MG_CONVERT_ERROR, MG_CONVERT_ERROR_MALFORMED, _ ("the S/MIME part cannot be read"));
      return NULL;
    }
    if (big) {
      g_autoptr (MgSpool) spool = spool_for (keys);
      g_autoptr (GMimeStream) sink = mg_spool_stream (spool);
      /* the clear text bounded as mg_smime_decrypt() bounds it; a failed spool is dropped here, never passed on */
      gsize max = keys->limits ? keys->limits->max_decompressed : MG_LIMIT_DEFAULT_MAX_DECOMPRESSED;
      if (mg_smime_decrypt_stream (stream, sink, keys->x509 ? mg_x509_store_private_keys (keys->x509) : NULL, max,
                                   &used, error))
        clear = mg_spool_finish (spool, error);
    } else
      clear = mg_smime_decrypt (g_bytes_get_data (cipher, NULL), g_bytes_get_size (cipher),
                                keys->x509 ? mg_x509_store_private_keys (keys->x509) : NULL, &used, error);
    if (clear != NULL && used != NULL)
      g_ptr_array_add (result->keys, g_steal_pointer (&used));
    break;
  case MG_KIND_SMIME_COMPRESSED:
    cipher = part_bytes (body);
    if (cipher == NULL) {
      g_set_error_literal (error, MG_CONVERT_ERROR, MG_CONVERT_ERROR_MALFORMED, _ ("the S/MIME part cannot be read"));
      return NULL;
    }
    clear =
      mg_cms_uncompress (g_bytes_get_data (cipher, NULL), g_bytes_get_size (cipher),
                         keys->limits ? keys->limits->max_decompressed : MG_LIMIT_DEFAULT_MAX_DECOMPRESSED, error);
    if (clear == NULL)
      return NULL;
    result->action = "decompressed";
    *raw = g_bytes_ref (clear);
    return parse_entity (clear, error);
  default: {
    g_autoptr (GHashTable) parts = g_hash_table_new (g_str_hash, g_str_equal);
    Decrypt d = { keys, parts, result, FALSE };
    GMimeObject *out;
    d.large = big;
    for (guint i = 0; i < report->parts->len; i++) {
      const MgPart *p = g_ptr_array_index (report->parts, i);
      g_hash_table_insert (parts, p->path, (gpointer) p);
    }
    out = decrypt_tree (&d, body, "1", error);
    if (out != NULL && d.changed)
      result->action = "decrypted";
    *sealed = decrypt_verdict (&d);
    return out;
  }
  }
  if (clear == NULL)
    return NULL;
  result->action = "decrypted";
  *raw = g_bytes_ref (clear);
  return parse_entity (clear, error);
}

/* Inline - what goes into a PGP/Inline message: the body text (or HTML), and every other leaf as an attachment */
typedef struct {
  GMimeObject *text;
  GMimeObject *html;
  GPtrArray *attachments;
} Inline;

static gboolean
is_attachment (GMimeObject *obj)
{
  return GMIME_IS_PART (obj) &&
         (g_mime_part_is_attachment (GMIME_PART (obj)) || g_mime_part_get_filename (GMIME_PART (obj)) != NULL);
}

/* collect - sorts the leaves of @obj: of alternatives the text is kept, the other representations dropped */
static void
collect (Inline *in, GMimeObject *obj)
{
  GMimeContentType *ct = g_mime_object_get_content_type (obj);

  if (GMIME_IS_MULTIPART (obj)) {
    GMimeMultipart *mp = GMIME_MULTIPART (obj);
    int n = g_mime_multipart_get_count (mp);
    if (g_mime_content_type_is_type (ct, "multipart", "alternative") && n > 0) {
      for (int i = 0; i < n; i++) {
        GMimeObject *alt = g_mime_multipart_get_part (mp, i);
        if (GMIME_IS_PART (alt) &&
            g_mime_content_type_is_type (g_mime_object_get_content_type (alt), "text", "plain")) {
          collect (in, alt);
          return;
        }
      }
      collect (in, g_mime_multipart_get_part (mp, n - 1)); /* no text: the richest representation */
      return;
    }
    for (int i = 0; i < n; i++)
      collect (in, g_mime_multipart_get_part (mp, i));
    return;
  }
  if (GMIME_IS_PART (obj) && !is_attachment (obj) && in->text == NULL && in->html == NULL) {
    if (g_mime_content_type_is_type (ct, "text", "plain")) {
      in->text = obj;
      return;
    }
    if (g_mime_content_type_is_type (ct, "text", "html")) {
      in->html = obj;
      return;
    }
  }
  g_ptr_array_add (in->attachments, obj);
}

/* piece_name - the file name an attachment travels under in PGP/Inline: its own, else part-N with an extension for
 * its type (.txt, .html, .bin; .eml for a forwarded message or another structure) */
static char *
piece_name (GMimeObject *a, guint i)
{
  GMimeContentType *ct = g_mime_object_get_content_type (a);
  const char *fn = GMIME_IS_PART (a) ? g_mime_part_get_filename (GMIME_PART (a)) : NULL;
  const char *ext = !GMIME_IS_PART (a)                                  ? ".eml"
                    : g_mime_content_type_is_type (ct, "text", "plain") ? ".txt"
                    : g_mime_content_type_is_type (ct, "text", "html")  ? ".html"
                                                                        : ".bin";

  return fn ? g_strdup (fn) : g_strdup_printf ("part-%u%s", i + 1, ext);
}

/* encrypt_spool - @plain (read to its end) encrypted into a spool: OpenPGP (@form PGP/MIME or PGP/Inline, armored or
 * binary) or S/MIME (binary BER, GMime base64s it); NULL with @error, the spool and what it held dropped */
static GBytes *
encrypt_spool (GMimeStream *plain, MgForm form, gboolean armor, const MgConvertKeys *keys, const Recipients *r,
               GError **error)
{
  g_autoptr (MgSpool) spool = spool_for (keys);
  g_autoptr (GMimeStream) sink = mg_spool_stream (spool);
  gboolean ok = form == MG_FORM_SMIME
                  ? mg_smime_encrypt_stream (plain, sink, r->certs, keys->gcm, error)
                  : mg_gnupg_encrypt_stream (keys->gnupg, plain, sink, r->pgp,
                                             form == MG_FORM_PGP_INLINE ? r->signer : NULL, armor, error);

  return ok ? mg_spool_finish (spool, error) : NULL;
}

/* encrypted_file - @content (or, on the streaming path, @stream read to its end) encrypted (binary) as
 * application/octet-stream NAME.pgp */
static GMimeObject *
encrypted_file (const MgConvertKeys *keys, const Recipients *r, GBytes *content, GMimeStream *stream, const char *name,
                GError **error)
{
  g_autoptr (GBytes) cipher = stream ? encrypt_spool (stream, MG_FORM_PGP_INLINE, FALSE, keys, r, error)
                                     : mg_gnupg_encrypt (keys->gnupg, content, r->pgp, r->signer, FALSE, error);
  g_autofree char *file = g_strdup_printf ("%s.pgp", name);
  GMimePart *part;

  if (cipher == NULL)
    return NULL;
  part = leaf_new ("application", "octet-stream", cipher, GMIME_CONTENT_ENCODING_BASE64);
  g_mime_part_set_filename (part, file);
  g_mime_object_set_disposition (GMIME_OBJECT (part), "attachment");
  return GMIME_OBJECT (part);
}

/* utf8_text - a text part's characters in UTF-8 with CRLF line ends (GMime converts from the declared charset) */
static GBytes *
utf8_text (GMimeObject *obj)
{
  g_autofree char *text = g_mime_text_part_get_text (GMIME_TEXT_PART (obj));
  g_autoptr (GString) s = g_string_new (NULL);

  for (const char *c = text ? text : ""; *c; c++) {
    if (*c == '\n' && (s->len == 0 || s->str[s->len - 1] != '\r'))
      g_string_append_c (s, '\r');
    g_string_append_c (s, *c);
  }
  return g_bytes_new (s->str, s->len);
}

/* build_inline - the PGP/Inline form of @inner for the recipients' keys */
static GMimeObject *
build_inline (GMimeObject *inner, const MgConvertKeys *keys, const Recipients *r, gboolean big, GError **error)
{
  g_autoptr (GPtrArray) attachments = g_ptr_array_new ();
  Inline in = { NULL, NULL, attachments };
  g_autoptr (GMimeObject) body = NULL;
  GMimeObject *mixed;

  collect (&in, inner);
  if (in.text != NULL && GMIME_IS_TEXT_PART (in.text)) {
    g_autoptr (GBytes) text = utf8_text (in.text);
    g_autoptr (GBytes) armored = mg_gnupg_encrypt (keys->gnupg, text, r->pgp, r->signer, TRUE, error);
    if (armored == NULL)
      return NULL;
    body = text_leaf (armored, "utf-8");
    g_mime_part_set_content_encoding (GMIME_PART (body), GMIME_CONTENT_ENCODING_7BIT);
  } else if (in.html != NULL) {
    g_autoptr (GBytes) html = piece_bytes (in.html, error);
    g_autoptr (GBytes) note =
      g_bytes_new_static ("This message is encrypted with OpenPGP. Its body is the attached body.html.pgp.\r\n", 79);
    GMimeObject *file = html ? encrypted_file (keys, r, html, NULL, "body.html", error) : NULL;
    if (file == NULL)
      return NULL;
    body = text_leaf (note, "us-ascii");
    g_mime_part_set_content_encoding (GMIME_PART (body), GMIME_CONTENT_ENCODING_7BIT);
    g_ptr_array_insert (attachments, 0, NULL); /* keeps the order: the encrypted HTML first */
    g_ptr_array_index (attachments, 0) = file;
  }
  if (body != NULL && attachments->len == 0)
    return g_steal_pointer (&body);
  if (body == NULL && attachments->len == 0) {
    /* never an empty message for content we did not place */
    g_set_error_literal (error, MG_CONVERT_ERROR, MG_CONVERT_ERROR_MALFORMED,
                         _ ("the message has no part that PGP/Inline can carry"));
    return NULL;
  }
  mixed = mixed_new ();
  if (body != NULL)
    mixed_add (mixed, g_steal_pointer (&body));
  for (guint i = 0; i < attachments->len; i++) {
    GMimeObject *a = g_ptr_array_index (attachments, i);
    GMimeObject *enc;
    if (i == 0 && in.html != NULL && in.text == NULL) {
      mixed_add (mixed, a); /* already the encrypted HTML */
      continue;
    }
    if (big && (!GMIME_IS_PART (a) || g_mime_part_get_content (GMIME_PART (a)) != NULL)) {
      /* the streaming path: the piece_bytes() content, read as it is encrypted (an entity through a spool) */
      g_autoptr (GBytes) entity = GMIME_IS_PART (a) ? NULL : entity_spool (a, keys, error);
      g_autoptr (GMimeStream) content = entity              ? mg_spool_file_stream (entity)
                                        : GMIME_IS_PART (a) ? part_stream (a)
                                                            : NULL;
      g_autofree char *name = piece_name (a, i);
      if (content == NULL && error != NULL && *error == NULL)
        g_set_error_literal (error, MG_CONVERT_ERROR, MG_CONVERT_ERROR_MALFORMED,
                             _ ("a part's content cannot be read"));
      enc = content ? encrypted_file (keys, r, NULL, content, name, error) : NULL;
    } else {
      g_autoptr (GBytes) content = piece_bytes (a, error);
      g_autofree char *name = piece_name (a, i);
      enc = content ? encrypted_file (keys, r, content, NULL, name, error) : NULL;
    }
    if (enc == NULL) {
      g_object_unref (mixed);
      return NULL;
    }
    mixed_add (mixed, enc);
  }
  return mixed;
}

/* readable_by_all - whether the encrypted input already names every chosen recipient key */
static gboolean
readable_by_all (const MgPart *ciphertext, GPtrArray *ids)
{
  if (ids == NULL)
    return FALSE;
  for (guint i = 0; i < ids->len; i++) {
    const char *want = g_ptr_array_index (ids, i);
    gboolean found = FALSE;
    for (guint k = 0; k < ciphertext->info.recipients->len && !found; k++) {
      const char *have = ((MgCryptoId *) g_ptr_array_index (ciphertext->info.recipients, k))->id;
      gsize hl = strlen (have), wl = strlen (want);
      found = hl >= wl && g_ascii_strcasecmp (have + hl - wl, want) == 0;
    }
    if (!found)
      return FALSE;
  }
  return ids->len > 0;
}

/* pgp_mime - RFC 3156 section 4: multipart/encrypted of the control part and the armored ciphertext */
static GMimeObject *
pgp_mime (GBytes *armored)
{
  GMimeMultipart *mp = GMIME_MULTIPART (g_mime_multipart_encrypted_new ());
  GMimePart *ctl = g_mime_part_new_with_type ("application", "pgp-encrypted");
  GMimePart *enc = g_mime_part_new_with_type ("application", "octet-stream");
  g_autoptr (GMimeStream) s1 = g_mime_stream_mem_new_with_buffer ("Version: 1\n", 11);
  g_autoptr (GMimeStream) s2 = mg_spool_file_stream (armored); /* in place: the part holds the GBytes, no copy */
  g_autoptr (GMimeDataWrapper) w1 = g_mime_data_wrapper_new_with_stream (s1, GMIME_CONTENT_ENCODING_DEFAULT);
  g_autoptr (GMimeDataWrapper) w2 = g_mime_data_wrapper_new_with_stream (s2, GMIME_CONTENT_ENCODING_DEFAULT);

  g_mime_object_set_content_type_parameter (GMIME_OBJECT (mp), "protocol", "application/pgp-encrypted");
  g_mime_multipart_set_boundary (mp, NULL); /* a fresh random boundary */
  g_mime_part_set_content_description (ctl, "PGP/MIME version identification");
  g_mime_part_set_content (ctl, w1);
  g_mime_part_set_content (enc, w2);
  g_mime_part_set_filename (enc, "encrypted.asc");
  g_mime_object_set_disposition (GMIME_OBJECT (enc), "inline");
  g_mime_part_set_content_encoding (enc, GMIME_CONTENT_ENCODING_7BIT);
  g_mime_multipart_add (mp, GMIME_OBJECT (ctl));
  g_mime_multipart_add (mp, GMIME_OBJECT (enc));
  g_object_unref (ctl);
  g_object_unref (enc);
  return GMIME_OBJECT (mp);
}

/* smime - RFC 8551 section 3.3: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m */
static GMimeObject *
smime (GBytes *der, gboolean gcm)
{
  GMimePart *part = g_mime_part_new_with_type ("application", "pkcs7-mime");
  g_autoptr (GMimeStream) s = mg_spool_file_stream (der); /* in place: the part holds the GBytes, no copy */
  g_autoptr (GMimeDataWrapper) w = g_mime_data_wrapper_new_with_stream (s, GMIME_CONTENT_ENCODING_DEFAULT);

  g_mime_object_set_content_type_parameter (GMIME_OBJECT (part), "smime-type",
                                            gcm ? "authEnveloped-data" : "enveloped-data");
  g_mime_object_set_content_type_parameter (GMIME_OBJECT (part), "name", "smime.p7m");
  g_mime_part_set_content (part, w);
  g_mime_part_set_filename (part, "smime.p7m");
  g_mime_part_set_content_encoding (part, GMIME_CONTENT_ENCODING_BASE64);
  return GMIME_OBJECT (part);
}

/* message_bytes - @m written out: in memory up to the spool threshold, beyond it into an unnamed spool file (the
 * faces send it from there); %NULL with @error when the spool cannot be written */
static GBytes *
message_bytes (GMimeMessage *m, const MgLimits *limits, GError **error)
{
  g_autoptr (MgSpool) spool =
    mg_spool_new (limits ? limits->spool_dir : NULL, limits ? limits->spool_threshold : MG_SPOOL_DEFAULT_THRESHOLD);
  g_autoptr (GMimeStream) sink = mg_spool_stream (spool);

  g_mime_object_write_to_stream (GMIME_OBJECT (m), NULL, sink);
  return mg_spool_finish (spool, error);
}

/* cipher_part - the part of the report that holds the message's own ciphertext, or NULL */
static const MgPart *
cipher_part (const MgReport *report)
{
  const MgPart *top = g_ptr_array_index (report->parts, 0);

  if (top->kind == MG_KIND_SMIME_ENVELOPED)
    return top;
  for (guint i = 1; i < report->parts->len && i < 4; i++) {
    const MgPart *p = g_ptr_array_index (report->parts, i);
    if (g_strcmp0 (p->role, "ciphertext") == 0)
      return p;
  }
  return NULL;
}

/* repair - Exchange's multipart/mixed rebuilt as RFC 3156 multipart/encrypted around the same ciphertext */
static GMimeObject *
repair (GMimeObject *body, const MgConvertKeys *keys, gboolean big, GError **error)
{
  g_autoptr (GBytes) armored = NULL;
  GMimeObject *part = GMIME_IS_MULTIPART (body) && g_mime_multipart_get_count (GMIME_MULTIPART (body)) == 3
                        ? g_mime_multipart_get_part (GMIME_MULTIPART (body), 2)
                        : NULL;

  if (part != NULL && big) { /* the streaming path: the armor decoded into a spool, not into memory */
    g_autoptr (GMimeStream) src = part_stream (part);
    g_autoptr (MgSpool) spool = spool_for (keys);
    g_autoptr (GMimeStream) sink = mg_spool_stream (spool);
    if (src != NULL && (armored = spool_end (spool, g_mime_stream_write_to_stream (src, sink), error)) == NULL)
      return NULL;
  } else if (part != NULL)
    armored = part_bytes (part);
  if (armored == NULL) {
    g_set_error_literal (error, MG_CONVERT_ERROR, MG_CONVERT_ERROR_MALFORMED, _ ("the PGP/MIME structure is broken"));
    return NULL;
  }
  return pgp_mime (armored);
}

/* encrypt_entity - @inner in an encrypting form. @raw (nullable): the decrypted bytes @inner was parsed from, when it
 * is still exactly that entity; then those bytes are encrypted again (CRLF-canonical) rather than GMime's rewrite,
 * so that a signed part inside still verifies for the recipient. */
static GMimeObject *
encrypt_entity (GMimeObject *inner, GBytes *raw, MgForm form, const MgConvertKeys *keys, const Recipients *r,
                gboolean big, GError **error)
{
  g_autoptr (GBytes) clear = NULL;
  g_autoptr (GBytes) cipher = NULL;

  if (form == MG_FORM_PGP_INLINE)
    return build_inline (inner, keys, r, big, error);
  if (big) {
    /* the streaming path: decrypted bytes made canonical as they are read, or the entity written into a spool;
     * encrypted from there into a second one */
    g_autoptr (GMimeStream) plain = NULL;
    if (raw != NULL && g_bytes_get_size (raw) > 0)
      plain = crlf_stream (raw);
    else if ((clear = entity_spool (inner, keys, error)) == NULL)
      return NULL;
    else
      plain = mg_spool_file_stream (clear);
    cipher = encrypt_spool (plain, form, TRUE, keys, r, error);
    g_clear_object (&plain);
    g_clear_pointer (&clear, g_bytes_unref); /* the clear text's spool file is closed: gone */
    if (cipher == NULL)
      return NULL;
    return form == MG_FORM_PGP_MIME ? pgp_mime (cipher) : smime (cipher, keys->gcm);
  }
  if (raw != NULL && g_bytes_get_size (raw) > 0)
    clear = crlf_bytes (g_bytes_get_data (raw, NULL), g_bytes_get_size (raw));
  else
    clear = entity_bytes (inner);
  if (form == MG_FORM_PGP_MIME) {
    cipher = mg_gnupg_encrypt (keys->gnupg, clear, r->pgp, NULL, TRUE, error);
    g_clear_pointer (&clear, g_bytes_unref); /* before the message is written out */
    return cipher ? pgp_mime (cipher) : NULL;
  }
  cipher = mg_smime_encrypt (clear, r->certs, keys->gcm, error);
  g_clear_pointer (&clear, g_bytes_unref);
  return cipher ? smime (cipher, keys->gcm) : NULL;
}

/* Signer - the key the gateway signs with, chosen before anything is decrypted */
typedef struct {
  MgSignMethod method; /* never AUTO once chosen */
  char *pgp;           /* fingerprint of the OpenPGP secret key */
  const MgX509Private *x509;
} Signer;

static void
signer_clear (Signer *s)
{
  g_clear_pointer (&s->pgp, g_free);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (Signer, signer_clear)

/* choose_signer - the method and key for @form; NO_SIGNER when the identity has no usable key (never unsigned) */
static gboolean
choose_signer (MgForm form, const MgConvertKeys *keys, Signer *s, MgConvertResult *result, GError **error)
{
  GError *local = NULL;

  s->method = keys->sign;
  if (s->method == MG_SIGN_AUTO) {
    if (form == MG_FORM_SMIME)
      s->method = MG_SIGN_SMIME;
    else if (form != MG_FORM_PLAIN)
      s->method = MG_SIGN_PGP;
    else {
      s->pgp = keys->gnupg ? mg_gnupg_signer (keys->gnupg, keys->sign_as, &local) : NULL;
      if (local != NULL) {
        g_propagate_error (error, local);
        return FALSE;
      }
      s->method = s->pgp != NULL ? MG_SIGN_PGP : MG_SIGN_SMIME;
    }
  }
  if ((s->method == MG_SIGN_PGP_INLINE && form != MG_FORM_PLAIN && form != MG_FORM_PGP_INLINE) ||
      (s->method == MG_SIGN_SMIME && form == MG_FORM_PGP_INLINE)) {
    g_set_error (error, MG_CONVERT_ERROR, MG_CONVERT_ERROR_UNSUPPORTED, _ ("%s signatures cannot be made in form %s"),
                 sign_names[s->method], mg_form_name (form));
    return FALSE;
  }
  if (s->method == MG_SIGN_SMIME) {
    s->x509 = keys->x509 && keys->sign_as ? mg_x509_store_signer (keys->x509, keys->sign_as) : NULL;
    if (s->x509 == NULL) {
      g_set_error (error, MG_CONVERT_ERROR, MG_CONVERT_ERROR_NO_SIGNER, _ ("no usable X.509 private key to sign as %s"),
                   keys->sign_as ? keys->sign_as : "?");
      return FALSE;
    }
    result->signed_with = g_strdup (s->x509->cert->serial);
    return TRUE;
  }
  if (s->pgp == NULL && keys->gnupg != NULL && keys->sign_as != NULL)
    s->pgp = mg_gnupg_signer (keys->gnupg, keys->sign_as, &local);
  if (local != NULL) {
    g_propagate_error (error, local);
    return FALSE;
  }
  if (s->pgp == NULL) {
    g_set_error (error, MG_CONVERT_ERROR, MG_CONVERT_ERROR_NO_SIGNER, _ ("no usable OpenPGP secret key to sign as %s"),
                 keys->sign_as ? keys->sign_as : "?");
    return FALSE;
  }
  result->signed_with = g_strdup (s->pgp);
  return TRUE;
}

/* signature_leaf - the second part of multipart/signed, or a NAME.asc beside an attachment */
static GMimeObject *
signature_leaf (GBytes *sig, gboolean smime_sig, const char *filename)
{
  GMimePart *p = smime_sig ? leaf_new ("application", "pkcs7-signature", sig, GMIME_CONTENT_ENCODING_BASE64)
                           : leaf_new ("application", "pgp-signature", sig, GMIME_CONTENT_ENCODING_7BIT);

  if (smime_sig)
    g_mime_object_set_content_type_parameter (GMIME_OBJECT (p), "name", "smime.p7s");
  g_mime_part_set_filename (p, filename);
  g_mime_object_set_disposition (GMIME_OBJECT (p), "attachment");
  return GMIME_OBJECT (p);
}

/* sign_entity - @inner as multipart/signed (RFC 3156 section 5, RFC 8551 section 3.5). The content is first limited
 * to 7 bit and then re-read from exactly the bytes that were signed, so that what travels is what was signed. */
static GMimeObject *
sign_entity (GMimeObject *inner, const Signer *s, const MgConvertKeys *keys, gboolean big, GError **error)
{
  g_autoptr (GBytes) canonical = NULL, sig = NULL;
  g_autoptr (GMimeObject) content = NULL;
  g_autofree char *micalg = NULL;
  GMimeObject *mp;

  g_mime_object_encode (inner, GMIME_ENCODING_CONSTRAINT_7BIT);
  /* the streaming path: the canonical entity in a spool file, which both the parse and the signer read in place */
  canonical = big ? entity_spool (inner, keys, error) : entity_bytes (inner);
  if (canonical == NULL)
    return NULL;
  if ((content = parse_entity (canonical, error)) == NULL)
    return NULL;
  if (s->method == MG_SIGN_SMIME) {
    sig = mg_smime_sign (canonical, s->x509, error);
    micalg = g_strdup ("sha-256");
  } else
    sig = mg_gnupg_sign (keys->gnupg, canonical, s->pgp, FALSE, &micalg, error);
  if (sig == NULL)
    return NULL;
  mp = GMIME_OBJECT (g_mime_multipart_signed_new ());
  g_mime_object_set_content_type_parameter (
    mp, "protocol", s->method == MG_SIGN_SMIME ? "application/pkcs7-signature" : "application/pgp-signature");
  g_mime_object_set_content_type_parameter (mp, "micalg", micalg);
  g_mime_multipart_set_boundary (GMIME_MULTIPART (mp), NULL);
  g_mime_multipart_add (GMIME_MULTIPART (mp), content);
  mixed_add (
    mp, signature_leaf (sig, s->method == MG_SIGN_SMIME, s->method == MG_SIGN_SMIME ? "smime.p7s" : "signature.asc"));
  return mp;
}

/* clearsign_inline - PGP/Inline signing without encryption: the body text cleartext-signed (UTF-8), each attachment
 * followed by its detached signature NAME.asc; of alternatives the text is kept, as in PGP/Inline encryption */
static GMimeObject *
clearsign_inline (GMimeObject *inner, const Signer *s, const MgConvertKeys *keys, GError **error)
{
  g_autoptr (GPtrArray) attachments = g_ptr_array_new ();
  Inline in = { NULL, NULL, attachments };
  g_autoptr (GBytes) text = NULL, signed_text = NULL;
  GMimeObject *mixed, *body;

  collect (&in, inner);
  if (in.text == NULL || !GMIME_IS_TEXT_PART (in.text)) {
    g_set_error_literal (error, MG_CONVERT_ERROR, MG_CONVERT_ERROR_UNSUPPORTED,
                         _ ("the message has no text body to cleartext-sign; sign it as PGP/MIME instead"));
    return NULL;
  }
  text = utf8_text (in.text);
  if ((signed_text = mg_gnupg_sign (keys->gnupg, text, s->pgp, TRUE, NULL, error)) == NULL)
    return NULL;
  body = text_leaf (signed_text, "utf-8");
  g_mime_part_set_content_encoding (
    GMIME_PART (body), g_mime_part_get_best_content_encoding (GMIME_PART (body), GMIME_ENCODING_CONSTRAINT_7BIT));
  if (attachments->len == 0)
    return body;
  mixed = mixed_new ();
  mixed_add (mixed, body);
  for (guint i = 0; i < attachments->len; i++) {
    GMimeObject *a = g_ptr_array_index (attachments, i);
    g_autoptr (GBytes) content = piece_bytes (a, error);
    g_autoptr (GBytes) sig = NULL;
    g_autofree char *name = piece_name (a, i);
    g_autofree char *sig_name = g_strconcat (name, ".asc", NULL);
    if (content == NULL || (sig = mg_gnupg_sign (keys->gnupg, content, s->pgp, FALSE, NULL, error)) == NULL) {
      g_object_unref (mixed);
      return NULL;
    }
    if (GMIME_IS_PART (a)) {
      GMimePart *copy = leaf_new ("application", "octet-stream", content, GMIME_CONTENT_ENCODING_BASE64);
      g_mime_object_set_content_type (GMIME_OBJECT (copy), g_mime_object_get_content_type (a));
      g_mime_part_set_filename (copy, name);
      g_mime_object_set_disposition (GMIME_OBJECT (copy), "attachment");
      mixed_add (mixed, GMIME_OBJECT (copy));
    } else
      g_mime_multipart_add (GMIME_MULTIPART (mixed), a);
    mixed_add (mixed, signature_leaf (sig, FALSE, sig_name));
  }
  return mixed;
}

/* cleartext_signed - the first text part of @entity that holds a cleartext signature (PGP/Inline), its text; with
 * *@partial set when there is other non-blank text beside the signed block */
static GBytes *
cleartext_signed (GMimeObject *entity, gboolean *partial)
{
  g_autoptr (GPtrArray) attachments = g_ptr_array_new ();
  Inline in = { NULL, NULL, attachments };
  g_autoptr (GBytes) raw = NULL;
  g_autoptr (GArray) blocks = NULL;
  const char *data;
  gsize len;

  collect (&in, entity);
  if (in.text == NULL || (raw = part_bytes (in.text)) == NULL)
    return NULL;
  data = g_bytes_get_data (raw, &len);
  blocks = mg_armor_find (data, len);
  for (guint i = 0; i < blocks->len; i++) {
    const MgArmorBlock *b = &g_array_index (blocks, MgArmorBlock, i);
    if (b->type == MG_ARMOR_SIGNED_MESSAGE) {
      g_autofree char *before = g_strstrip (g_strndup (data, b->begin));
      g_autofree char *after = g_strstrip (g_strndup (data + b->end, len - b->end));
      *partial = before[0] != '\0' || after[0] != '\0' || blocks->len > 1;
      return g_bytes_new (data + b->begin, b->end - b->begin);
    }
  }
  return NULL;
}

/* delimiter_kind - whether the line @line (@len bytes, without its LF) is a boundary delimiter of @boundary (1), its
 * close-delimiter (2) or neither (0): "--" boundary, "--" more for the close-delimiter, then only white space
 * (RFC 2046 section 5.1.1; GMime's parser reads delimiter lines by the same rule) */
static int
delimiter_kind (const char *line, gsize len, const char *boundary, gsize blen)
{
  gsize i = blen + 2;
  int kind = 1;

  if (len < i || line[0] != '-' || line[1] != '-' || memcmp (line + 2, boundary, blen) != 0)
    return 0;
  if (len - i >= 2 && line[i] == '-' && line[i + 1] == '-') {
    gsize k = i + 2;
    while (k < len && (line[k] == ' ' || line[k] == '\t' || line[k] == '\r'))
      k++;
    if (k == len)
      return 2;
  }
  for (; i < len; i++)
    if (line[i] != ' ' && line[i] != '\t' && line[i] != '\r')
      kind = 0;
  return kind;
}

/* signed_slice - the first body part of the multipart/signed entity @raw (its headers, then its body) exactly as it
 * arrived: the octets after the first delimiter line up to the line break before the second delimiter (that line
 * break belongs to the delimiter: RFC 2046 section 5.1.1, RFC 1847 section 2.1), with every line end made CRLF as
 * RFC 3156 section 5 and RFC 8551 section 3.1.1 verify it. NULL unless the body holds exactly two parts of @boundary,
 * the count GMime found, so that what is verified is the part the rest of the engine works on. */
static GBytes *
signed_slice (GBytes *raw, const char *boundary)
{
  gsize len = 0, pos = 0, blen = boundary ? strlen (boundary) : 0, start = 0, end = 0;
  const char *data = raw ? g_bytes_get_data (raw, &len) : NULL;
  guint opens = 0;
  gboolean body = FALSE, closed = FALSE;

  if (data == NULL || blen == 0)
    return NULL;
  while (pos < len && !closed) {
    const char *nl = memchr (data + pos, '\n', len - pos);
    gsize next = nl ? (gsize) (nl - data) + 1 : len;
    gsize line = (nl ? (gsize) (nl - data) : len) - pos;
    int kind;
    if (!body) { /* the header block ends at the first empty line */
      body = line == 0 || (line == 1 && data[pos] == '\r');
      pos = next;
      continue;
    }
    kind = delimiter_kind (data + pos, line, boundary, blen);
    if (kind != 0 && opens == 1) {
      end = pos;
      if (end > start && data[end - 1] == '\n')
        end--;
      if (end > start && data[end - 1] == '\r')
        end--;
    }
    if (kind == 2)
      closed = TRUE;
    else if (kind == 1 && ++opens == 1)
      start = next;
    pos = next;
  }
  if (opens != 2)
    return NULL;
  return crlf_bytes (data + start, end - start);
}

/* verify_entity - the verdict on @entity's own signature layer (PGP/MIME, S/MIME detached or opaque), NULL when it
 * is not signed; for opaque S/MIME, *@unwrapped receives the signed entity. @raw holds the bytes @entity was parsed
 * from (headers first): a detached signature is checked over the first part as it is there, not as GMime would
 * write it again; only when the parts cannot be found in @raw is the rebuilt copy checked. */
static MgSignature *
verify_entity (GMimeObject *entity, GBytes *raw, const MgConvertKeys *keys, GMimeObject **unwrapped)
{
  GMimeContentType *ct = g_mime_object_get_content_type (entity);

  *unwrapped = NULL;
  if (GMIME_IS_MULTIPART (entity) && g_mime_content_type_is_type (ct, "multipart", "signed") &&
      g_mime_multipart_get_count (GMIME_MULTIPART (entity)) == 2) {
    const char *protocol = g_mime_object_get_content_type_parameter (entity, "protocol");
    GMimeObject *content = g_mime_multipart_get_part (GMIME_MULTIPART (entity), 0);
    g_autoptr (GBytes) signature = part_bytes (g_mime_multipart_get_part (GMIME_MULTIPART (entity), 1));
    g_autoptr (GBytes) canonical = signed_slice (raw, g_mime_multipart_get_boundary (GMIME_MULTIPART (entity)));
    if (canonical == NULL)
      canonical = entity_bytes (content);
    if (signature == NULL || protocol == NULL)
      return mg_signature_new (MG_SIG_PERMERROR, "the signature part cannot be read");
    if (g_ascii_strcasecmp (protocol, "application/pgp-signature") == 0) {
      MgSignature *sig = keys->gnupg ? mg_gnupg_verify (keys->gnupg, canonical, signature)
                                     : mg_signature_new (MG_SIG_NEUTRAL, "no GnuPG home to check the signer against");
      return sig;
    }
    if (g_ascii_strcasecmp (protocol, "application/pkcs7-signature") == 0 ||
        g_ascii_strcasecmp (protocol, "application/x-pkcs7-signature") == 0)
      return mg_smime_verify (g_bytes_get_data (signature, NULL), g_bytes_get_size (signature), canonical, keys->x509,
                              NULL);
    return NULL;
  }
  if (GMIME_IS_PART (entity) && (g_mime_content_type_is_type (ct, "application", "pkcs7-mime") ||
                                 g_mime_content_type_is_type (ct, "application", "x-pkcs7-mime"))) {
    g_autoptr (GBytes) data = part_bytes (entity);
    g_autoptr (GBytes) content = NULL;
    MgSignature *sig;
    if (data == NULL || !mg_cms_sniff (g_bytes_get_data (data, NULL), g_bytes_get_size (data)))
      return NULL;
    sig = mg_smime_verify (g_bytes_get_data (data, NULL), g_bytes_get_size (data), NULL, keys->x509, &content);
    if (sig->result == MG_SIG_PERMERROR && g_strcmp0 (sig->reason, "not an S/MIME signature") == 0) {
      mg_signature_free (sig);
      return NULL; /* enveloped, not signed */
    }
    if (content != NULL)
      *unwrapped = parse_entity (content, NULL);
    return sig;
  }
  return NULL;
}

/* verify_all - verify_entity(), else the verdict on a cleartext signature (PGP/Inline) in the body text; a good
 * signature over only part of the text is neutral, never a pass */
static MgSignature *
verify_all (GMimeObject *entity, GBytes *raw, const MgConvertKeys *keys, GMimeObject **unwrapped)
{
  MgSignature *sig = verify_entity (entity, raw, keys, unwrapped);
  gboolean partial = FALSE;
  g_autoptr (GBytes) cleartext = NULL;

  if (sig != NULL || (cleartext = cleartext_signed (*unwrapped ? *unwrapped : entity, &partial)) == NULL)
    return sig;
  sig = keys->gnupg ? mg_gnupg_verify (keys->gnupg, NULL, cleartext)
                    : mg_signature_new (MG_SIG_NEUTRAL, "no GnuPG home to check the signer against");
  if (partial && sig->result == MG_SIG_PASS) {
    sig->result = MG_SIG_NEUTRAL;
    sig->reason = g_strdup ("only part of the text is signed");
  }
  return sig;
}

/* authserv_of - the authserv-id an Authentication-Results value starts with (before ';', without a version) */
static char *
authserv_of (const char *value)
{
  g_autofree char *head = NULL;
  char *space;

  for (int depth = 0; *value != '\0'; value++) { /* leading folding white space and comments (RFC 5322 CFWS) */
    if (*value == '(')
      depth++;
    else if (*value == ')' && depth > 0)
      depth--;
    else if (depth == 0 && !g_ascii_isspace (*value))
      break;
  }
  head = g_strndup (value, strcspn (value, ";"));
  g_strstrip (head);
  space = strpbrk (head, " \t(");
  if (space != NULL)
    *space = '\0';
  return g_steal_pointer (&head);
}

/* stamp - removes every Authentication-Results that claims our authserv-id (it cannot be ours: we have not stamped
 * this message yet), then adds our verdict on @sig, if any (RFC 8601; method smime per RFC 7281), and @hp (nullable),
 * our resinfo on restored protected header fields */
static char *stamp_value (const char *authserv_id, const MgSignature *sig, const char *hp);

static void
stamp (GMimeMessage *message, const char *authserv_id, const MgSignature *sig, const char *hp)
{
  GMimeHeaderList *headers = g_mime_object_get_header_list (GMIME_OBJECT (message));
  g_autofree char *value = NULL;

  if (authserv_id == NULL)
    return;
  for (int i = g_mime_header_list_get_count (headers) - 1; i >= 0; i--) {
    GMimeHeader *h = g_mime_header_list_get_header_at (headers, i);
    if (g_ascii_strcasecmp (g_mime_header_get_name (h), "Authentication-Results") == 0) {
      g_autofree char *id = authserv_of (g_mime_header_get_value (h) ? g_mime_header_get_value (h) : "");
      if (g_ascii_strcasecmp (id, authserv_id) == 0)
        g_mime_header_list_remove_at (headers, i);
    }
  }
  if (sig == NULL && hp == NULL)
    return;
  value = stamp_value (authserv_id, sig, hp);
  g_mime_object_prepend_header (GMIME_OBJECT (message), "Authentication-Results", value, NULL);
}

/* token_ok - whether @s (from a certificate or a key's user ID: the sender's to choose) can go into our header as it
 * is: printable ASCII without white space, quotes, comments or separators, so it can neither fold, end the header
 * nor add a property (no header injection) */
static gboolean
token_ok (const char *s)
{
  if (s == NULL || s[0] == '\0' || strlen (s) > 254)
    return FALSE;
  for (const char *c = s; *c; c++)
    if ((guchar) *c <= 0x20 || (guchar) *c >= 0x7f || strchr ("\"();,\\<>[]:", *c) != NULL)
      return FALSE;
  return TRUE;
}

/* stamp_value - our Authentication-Results value for @sig (RFC 8601; smime per RFC 7281, x-openpgp for OpenPGP);
 * an identifier that is not a plain token is left out rather than copied. @hp (nullable): one more resinfo, ours on
 * the protected header fields (mg_hp_resinfo) */
static char *
stamp_value (const char *authserv_id, const MgSignature *sig, const char *hp)
{
  GString *value = g_string_new (authserv_id);
  const char *signer = sig && token_ok (sig->signer) ? sig->signer : NULL;
  const char *id = sig && token_ok (sig->id) ? sig->id : NULL;

  if (sig == NULL) {
    g_string_append_printf (value, "; %s", hp);
    return g_string_free (value, FALSE);
  }
  if (sig->id != NULL && g_str_has_prefix (sig->id, "0x"))
    g_string_append_printf (value, "; smime=%s", mg_sig_result_name (sig->result));
  else
    g_string_append_printf (value, "; x-openpgp=%s", mg_sig_result_name (sig->result));
  if (sig->reason != NULL)
    g_string_append_printf (value, " reason=\"%s\"", sig->reason);
  if (sig->id != NULL && g_str_has_prefix (sig->id, "0x")) {
    if (signer != NULL)
      g_string_append_printf (value, " body.smime-identifier=%s", signer);
    if (id != NULL)
      g_string_append_printf (value, " body.smime-serial=%s", id + 2);
  } else {
    if (signer != NULL)
      g_string_append_printf (value, " body.openpgp-identifier=%s", signer);
    if (id != NULL)
      g_string_append_printf (value, " body.openpgp-fingerprint=%s", id);
  }
  if (hp != NULL)
    g_string_append_printf (value, "; %s", hp);
  return g_string_free (value, FALSE);
}

/* stamp_raw - stamp() for a message that is delivered as it came: only its header block is edited, as text (forged
 * stamps with our authserv-id dropped, ours put first); the body stays byte for byte */
static GBytes *
stamp_raw (GBytes *input, const MgLimits *limits, const char *authserv_id, const MgSignature *sig, const char *hp,
           GError **error)
{
  gsize len;
  const char *data = g_bytes_get_data (input, &len);
  const char *nl = len > 0 ? memchr (data, '\n', len) : NULL; /* an empty GBytes may have no data at all */
  const char *eol = nl != NULL && nl > data && nl[-1] == '\r' ? "\r\n" : "\n";
  g_autoptr (GString) out = g_string_sized_new (4096); /* the header block: the body is copied into the spool */
  g_autoptr (MgSpool) spool = NULL;
  gsize pos = 0;
  gboolean removed = FALSE;

  if (authserv_id == NULL || (len == 0 && sig == NULL && hp == NULL))
    return g_bytes_ref (input);
  if (sig != NULL || hp != NULL) {
    g_autofree char *value = stamp_value (authserv_id, sig, hp);
    g_string_append_printf (out, "Authentication-Results: %s%s", value, eol);
  }
  while (pos < len && data[pos] != '\n' && !(data[pos] == '\r' && pos + 1 < len && data[pos + 1] == '\n')) {
    /* one field: its first line and every continuation line (starting with a space or tab) */
    gsize end = pos;
    do {
      const char *next = memchr (data + end, '\n', len - end);
      end = next ? (gsize) (next - data) + 1 : len;
    } while (end < len && (data[end] == ' ' || data[end] == '\t'));
    {
      const char *colon = memchr (data + pos, ':', end - pos);
      gboolean ours = FALSE;
      if (colon != NULL && (gsize) (colon - (data + pos)) == 22 &&
          g_ascii_strncasecmp (data + pos, "Authentication-Results", 22) == 0) {
        g_autofree char *value = g_strndup (colon + 1, (gsize) (data + end - colon - 1));
        g_autofree char *id = NULL;
        g_strdelimit (value, "\r\n", ' ');
        id = authserv_of (value);
        ours = g_ascii_strcasecmp (id, authserv_id) == 0;
      }
      if (!ours)
        g_string_append_len (out, data + pos, (gssize) (end - pos));
      removed |= ours;
    }
    pos = end;
  }
  if (sig == NULL && hp == NULL && !removed)
    return g_bytes_ref (input);
  spool =
    mg_spool_new (limits ? limits->spool_dir : NULL, limits ? limits->spool_threshold : MG_SPOOL_DEFAULT_THRESHOLD);
  if (!mg_spool_write (spool, out->str, out->len, error) || !mg_spool_write (spool, data + pos, len - pos, error))
    return NULL;
  return mg_spool_finish (spool, error);
}

/* finish - the verdict on the clear entity's signature, stamped; the message with @body */
static GBytes *
finish (GMimeMessage *message, GMimeObject *body, const MgConvertKeys *keys, MgConvertResult *result, GError **error)
{
  g_mime_message_set_mime_part (message, body);
  stamp (message, keys->authserv_id, result->signature, result->hp_stamp);
  return message_bytes (message, keys->limits, error);
}

/* keep - @input as it came, but for the header block: its own signature verified and stamped, forged stamps removed.
 * A message that cannot be parsed is kept all the same (DESIGN.md: delivered unchanged). */
static GBytes *
keep (GBytes *input, const MgReport *report, const MgConvertKeys *keys, MgConvertResult *result, GError **error)
{
  if (keys->authserv_id == NULL)
    return g_bytes_ref (input);
  if (!report->limited && report->parts->len > 0) {
    g_autoptr (GMimeStream) stream = mg_stream_for_bytes (input);
    g_autoptr (GMimeParser) parser = g_mime_parser_new_with_stream (stream);
    g_autoptr (GMimeMessage) message = g_mime_parser_construct_message (parser, NULL);
    GMimeObject *body = message ? g_mime_message_get_mime_part (message) : NULL;
    g_autoptr (GMimeObject) unwrapped = NULL;
    if (body != NULL)
      result->signature = verify_all (body, input, keys, &unwrapped);
  }
  return stamp_raw (input, keys->limits, keys->authserv_id, result->signature, NULL, error);
}

/**
 * mg_convert - @input in @form for @recipients.
 * @recipients: (array zero-terminated=1): addresses; each needs a usable key for an encrypting form
 * @result: (out caller-allocates): initialised with mg_convert_result_init(); what was done and with which keys
 *
 * Recipients' keys are chosen before anything is decrypted, so that a recipient without a key fails fast and
 * nothing is ever emitted in clear for an encrypting form.
 *
 * Returns: (transfer full): the complete message, or %NULL with @error set (MG_CONVERT_ERROR or MG_KEYS_ERROR).
 */
static GBytes *convert (GBytes *input, MgForm form, const char *const *recipients, const MgConvertKeys *keys,
                        MgConvertResult *result, GError **error);

GBytes *
mg_convert (GBytes *input, MgForm form, const char *const *recipients, const MgConvertKeys *keys,
            MgConvertResult *result, GError **error)
{
  GError *local = NULL;
  GBytes *out = convert (input, form, recipients, keys, result, &local);
  g_autoptr (GPtrArray) notes = keys->gnupg ? mg_gnupg_take_notes (keys->gnupg) : NULL;

  for (guint i = 0; notes != NULL && i < notes->len; i++)
    g_ptr_array_add (result->notes, g_strdup (g_ptr_array_index (notes, i)));

  /* the contract every face relies on: a result, or an error that says why; never neither, never both */
  if (out == NULL && local == NULL) {
    g_critical ("mg_convert: no result and no error for form %s (a bug)", mg_form_name (form));
    g_set_error_literal (&local, MG_CONVERT_ERROR, MG_CONVERT_ERROR_INTERNAL,
                         _ ("internal error: the conversion gave no result"));
  } else if (out != NULL && local != NULL) {
    g_critical ("mg_convert: a result and an error (%s) for form %s (a bug)", local->message, mg_form_name (form));
    g_clear_error (&local);
  }
  if (local != NULL)
    g_propagate_error (error, local);
  return out;
}

/* Hole - a large leaf's content in an entity's bytes: [start, end) */
typedef struct {
  gint64 start, end;
} Hole;

/* holes_of - the contents over 64 KiB of the non-text leaves below @obj (parsed from an entity's own stream, so
 * that their substreams' bounds are offsets in it), in the order they come */
static void
holes_of (GMimeObject *obj, GArray *holes)
{
  GMimeDataWrapper *content = GMIME_IS_PART (obj) ? g_mime_part_get_content (GMIME_PART (obj)) : NULL;
  GMimeStream *s = content ? g_mime_data_wrapper_get_stream (content) : NULL;

  if (GMIME_IS_MULTIPART (obj)) {
    for (int i = 0; i < g_mime_multipart_get_count (GMIME_MULTIPART (obj)); i++)
      holes_of (g_mime_multipart_get_part (GMIME_MULTIPART (obj), i), holes);
    return;
  }
  if (s == NULL || g_mime_content_type_is_type (g_mime_object_get_content_type (obj), "text", "*"))
    return;
  if (s->bound_end > s->bound_start + 65536) {
    Hole h = { s->bound_start, s->bound_end };
    g_array_append_val (holes, h);
  }
}

/* hpwrap_large - mg_hpwrap_entity() for an entity in a spool file, without a whole copy of it in memory: header
 * protection edits the entity as text, so it is given the entity with the content of every large non-text leaf
 * (which it copies as it is) replaced by a random token, and its result is spooled with each token replaced by that
 * content again, read from the file. *@wrapped: as mg_hpwrap_entity() returns (NULL: left as it is). */
static gboolean
hpwrap_large (GMimeMessage *message, GBytes *entity, gboolean encrypting, const MgConvertKeys *keys, GPtrArray *notes,
              GBytes **wrapped, GError **error)
{
  g_autoptr (GMimeStream) file = mg_spool_file_stream (entity);
  g_autoptr (GMimeParser) parser = g_mime_parser_new_with_stream (file);
  g_autoptr (GMimeObject) tree = g_mime_parser_construct_part (parser, NULL);
  g_autoptr (GArray) holes = g_array_new (FALSE, FALSE, sizeof (Hole));
  g_autofree char *uuid = g_uuid_string_random ();
  g_autoptr (GString) skeleton = g_string_new (NULL);
  g_autoptr (GBytes) small = NULL, w = NULL;
  g_autoptr (MgSpool) spool = NULL;
  g_autoptr (GMimeStream) sink = NULL;
  gsize len = 0, wlen = 0, wpos = 0;
  const char *data = g_bytes_get_data (entity, &len), *wd;
  gint64 pos = 0, written = 0;

  *wrapped = NULL;
  if (tree != NULL)
    holes_of (tree, holes);
  g_strdelimit (uuid, "-", 'x');
  for (guint i = 0; i < holes->len; i++) {
    const Hole *h = &g_array_index (holes, Hole, i);
    if (h->start < pos || h->end > (gint64) len) { /* not what a parse of these bytes gives: no holes at all */
      g_array_set_size (holes, 0);
      g_string_truncate (skeleton, 0);
      pos = 0;
      break;
    }
    g_string_append_len (skeleton, data + pos, (gssize) (h->start - pos));
    g_string_append_printf (skeleton, "MGHOLE%s%uZ", uuid, i);
    pos = h->end;
  }
  if (holes->len == 0) {
    *wrapped = mg_hpwrap_entity (message, entity, keys->header_protection, encrypting, notes);
    return TRUE;
  }
  g_string_append_len (skeleton, data + pos, (gssize) (len - (gsize) pos));
  mg_spool_release (entity, 0, len); /* the pages the skeleton was read from */
  small = g_bytes_new (skeleton->str, skeleton->len);
  g_string_truncate (skeleton, 0);
  if ((w = mg_hpwrap_entity (message, small, keys->header_protection, encrypting, notes)) == NULL)
    return TRUE;
  wd = g_bytes_get_data (w, &wlen);
  spool = spool_for (keys);
  sink = mg_spool_stream (spool);
  for (guint i = 0; i < holes->len && written >= 0; i++) {
    const Hole *h = &g_array_index (holes, Hole, i);
    g_autofree char *token = g_strdup_printf ("MGHOLE%s%uZ", uuid, i);
    const char *at = memmem (wd + wpos, wlen - wpos, token, strlen (token));
    g_autoptr (GMimeStream) part = NULL;
    if (at == NULL) { /* header protection lost a part's content: never send what is left */
      g_set_error_literal (error, MG_CONVERT_ERROR, MG_CONVERT_ERROR_INTERNAL,
                           _ ("internal error: header protection lost a part of the message"));
      return FALSE;
    }
    part = g_mime_stream_substream (file, h->start, h->end);
    if (g_mime_stream_write (sink, wd + wpos, (gsize) (at - (wd + wpos))) < 0 ||
        g_mime_stream_write_to_stream (part, sink) < 0)
      written = -1;
    wpos = (gsize) (at - wd) + strlen (token);
  }
  if (written >= 0 && g_mime_stream_write (sink, wd + wpos, wlen - wpos) < 0)
    written = -1;
  *wrapped = spool_end (spool, written, error);
  return *wrapped != NULL;
}

/* protect - RFC 9788 header protection (mime/hpwrap.c) of @inner before it is signed (MIME) or encrypted: the
 * message's header fields go into it, and @message's own header follows the policy; *@raw becomes the new bytes */
static gboolean
protect (GMimeMessage *message, GMimeObject **inner, GBytes **raw, MgForm form, MgSignMethod method,
         const MgConvertKeys *keys, gboolean big, MgConvertResult *result, GError **error)
{
  gboolean encrypting = form == MG_FORM_PGP_MIME || form == MG_FORM_SMIME;
  g_autoptr (GBytes) entity = NULL, wrapped = NULL;
  GMimeObject *parsed;

  if (form == MG_FORM_PGP_INLINE) {
    if (result->hp_stamp == NULL) /* else the sender's protected fields were restored outside, and noted */
      mg_hpwrap_inline (message, keys->header_protection, result->notes);
    return TRUE;
  }
  if (keys->header_protection == MG_HP_OFF || (!encrypting && method != MG_SIGN_PGP && method != MG_SIGN_SMIME))
    return TRUE;
  entity = *raw != NULL && g_bytes_get_size (*raw) > 0 ? g_bytes_ref (*raw)
           : !big                                      ? entity_bytes (*inner)
                                                       : entity_spool (*inner, keys, error);
  if (entity == NULL)
    return FALSE;
  if (big) { /* the streaming path: the entity is in a spool file, and stays there */
    if (!hpwrap_large (message, entity, encrypting, keys, result->notes, &wrapped, error))
      return FALSE;
  } else
    wrapped = mg_hpwrap_entity (message, entity, keys->header_protection, encrypting, result->notes);
  if (wrapped == NULL)
    return TRUE;
  /* encrypt_entity() takes *raw as it is; only sign_entity() needs the entity parsed again (a second parse of a
   * large message costs time and memory) */
  if (method == MG_SIGN_PGP || method == MG_SIGN_SMIME) {
    if ((parsed = parse_entity (wrapped, error)) == NULL)
      return FALSE;
    g_object_unref (*inner);
    *inner = parsed;
  }
  g_clear_pointer (raw, g_bytes_unref);
  *raw = g_steal_pointer (&wrapped);
  return TRUE;
}

/* convert - mg_convert() without its contract check */
static GBytes *
convert (GBytes *input, MgForm form, const char *const *recipients, const MgConvertKeys *keys, MgConvertResult *result,
         GError **error)
{
  g_autoptr (MgReport) report = mg_detect_data (g_bytes_get_data (input, NULL), g_bytes_get_size (input), keys->limits);
  g_autoptr (GMimeStream) stream = NULL;
  g_autoptr (GMimeParser) parser = NULL;
  g_autoptr (GMimeMessage) message = NULL;
  g_autoptr (GMimeObject) inner = NULL;
  g_autoptr (GBytes) raw = NULL; /* (nullable): the decrypted bytes @inner was parsed from, while it is that entity */
  g_autoptr (GMimeObject) outer = NULL;
  g_auto (Recipients) r = { 0 };
  g_auto (Signer) signer = { MG_SIGN_NONE, NULL, NULL };
  g_autoptr (MgHp) hp = NULL; /* (nullable): plain: the payload's protected header fields (RFC 9788) */
  const MgPart *cipher = NULL;
  gboolean encrypting = form == MG_FORM_PGP_MIME || form == MG_FORM_PGP_INLINE || form == MG_FORM_SMIME;
  gboolean big = large (keys, g_bytes_get_size (input)); /* the streaming path */

  result->kind = report->kind;
  if (form == MG_FORM_KEEP)
    return keep (input, report, keys, result, error);
  if (report->limited || report->parts->len == 0) {
    g_set_error (error, MG_CONVERT_ERROR, MG_CONVERT_ERROR_MALFORMED, _ ("the message cannot be converted: %s"),
                 report->error ? report->error : _ ("it is not MIME"));
    return NULL;
  }
  /* the streaming path: the pages detection read are dropped, and GMime reads the spool file with pread, so that
   * nothing of the input stays in this process's memory while the rest is made */
  if (big)
    mg_spool_release (input, 0, g_bytes_get_size (input));
  stream = big ? mg_spool_file_stream (input) : mg_stream_for_bytes (input);
  parser = g_mime_parser_new_with_stream (stream);
  message = g_mime_parser_construct_message (parser, NULL);
  if (message == NULL || g_mime_message_get_mime_part (message) == NULL) {
    g_set_error_literal (error, MG_CONVERT_ERROR, MG_CONVERT_ERROR_MALFORMED, _ ("the message is not MIME"));
    return NULL;
  }
  if (encrypting && !resolve (form, recipients, keys, &r, result, error))
    return NULL;
  if (keys->sign != MG_SIGN_NONE && !choose_signer (form, keys, &signer, result, error))
    return NULL;
  r.signer = form == MG_FORM_PGP_INLINE ? signer.pgp : NULL;

  /* DESIGN.md rule 2: already in this form and readable by every recipient → as it came (mangled: repaired) */
  cipher = cipher_part (report);
  if (signer.method == MG_SIGN_NONE && cipher != NULL && readable_by_all (cipher, r.ids ? r.ids : NULL)) {
    if ((form == MG_FORM_PGP_MIME && report->kind == MG_KIND_PGP_MIME_ENCRYPTED) ||
        (form == MG_FORM_SMIME && report->kind == MG_KIND_SMIME_ENVELOPED)) {
      result->action = "kept";
      return stamp_raw (input, keys->limits, keys->authserv_id, NULL, NULL, error);
    }
    if (form == MG_FORM_PGP_MIME && report->kind == MG_KIND_PGP_MIME_MANGLED) {
      outer = repair (g_mime_message_get_mime_part (message), keys, big, error);
      if (outer == NULL)
        return NULL;
      result->action = "repaired";
      g_mime_message_set_mime_part (message, outer);
      return message_bytes (message, keys->limits, error);
    }
  }

  g_ptr_array_set_size (result->keys, 0);
  {
    g_autoptr (GMimeObject) unwrapped = NULL;
    MgSignature *sealed = NULL;
    inner = decrypt_body (g_mime_message_get_mime_part (message), report, keys, big, result, &raw, &sealed, error);
    if (inner == NULL) {
      g_clear_pointer (&sealed, mg_signature_free);
      return NULL;
    }
    gboolean sealed_sig = sealed != NULL;
    /* a signature inside the OpenPGP encryption and the clear entity's own: the stamp gives the less trusting */
    result->signature = worse (verify_all (inner, raw ? raw : input, keys, &unwrapped), sealed);
    /* plain delivers the protected header fields, where encryption or a good signature protected them; so does
     * pgp-inline, whose armor has no MIME to carry them (README "Header protection": as when we encrypt) */
    if (form == MG_FORM_PLAIN || form == MG_FORM_PGP_INLINE)
      hp = mg_hp_find (inner, unwrapped, raw != NULL && g_strcmp0 (result->action, "decrypted") == 0, sealed_sig,
                       result->signature, result->notes);
    /* plain is for delivery and scanning: opaque signed-data is opened (its verdict stamped) */
    if (form == MG_FORM_PLAIN && unwrapped != NULL) {
      g_object_unref (inner);
      inner = g_steal_pointer (&unwrapped);
      g_clear_pointer (&raw, g_bytes_unref);
    }
  }
  /* plain: a decrypted or unwrapped entity's own fields are not the message's (only protected ones come back) */
  if (form == MG_FORM_PLAIN && inner != g_mime_message_get_mime_part (message))
    mg_hp_drop_fields (inner);
  if (hp != NULL) {
    result->hp_stamp = mg_hp_resinfo (hp);
    if (form == MG_FORM_PGP_INLINE || signer.method != MG_SIGN_NONE || g_strcmp0 (result->action, "kept") != 0 ||
        inner != g_mime_message_get_mime_part (message))
      mg_hp_restore (hp, message, inner, result->notes); /* else: the header block edited as text, below */
    if (form == MG_FORM_PGP_INLINE)
      g_ptr_array_add (result->notes, g_strdup (_ ("header protection: PGP/Inline cannot carry the sender's protected "
                                                   "header fields; they are restored outside, the Subject in clear")));
  }
  if (!protect (message, &inner, &raw, form, signer.method, keys, big, result, error))
    return NULL;
  if (signer.method == MG_SIGN_PGP_INLINE && form == MG_FORM_PLAIN) {
    GMimeObject *signed_inline = clearsign_inline (inner, &signer, keys, error);
    if (signed_inline == NULL)
      return NULL;
    g_object_unref (inner);
    inner = signed_inline;
    g_clear_pointer (&raw, g_bytes_unref);
  } else if (signer.method != MG_SIGN_NONE && form != MG_FORM_PGP_INLINE) {
    GMimeObject *signed_entity = sign_entity (inner, &signer, keys, big, error);
    if (signed_entity == NULL)
      return NULL;
    g_object_unref (inner);
    inner = signed_entity;
    g_clear_pointer (&raw, g_bytes_unref);
  }
  if (form == MG_FORM_PLAIN) {
    /* nothing was opened: the bytes as they came (only the header block stamped), so that a signed part still
     * verifies after us as it did before; GMime does not write every layout back as it read it */
    if (signer.method == MG_SIGN_NONE && g_strcmp0 (result->action, "kept") == 0 &&
        inner == g_mime_message_get_mime_part (message)) {
      g_autoptr (GBytes) restored = hp ? mg_hp_restore_raw (hp, input, result->notes) : g_bytes_ref (input);
      return stamp_raw (restored, keys->limits, keys->authserv_id, result->signature, result->hp_stamp, error);
    }
    if (signer.method != MG_SIGN_NONE && g_strcmp0 (result->action, "kept") == 0)
      result->action = "signed";
    return finish (message, inner, keys, result, error);
  }
  for (guint i = 0; i < r.pgp->len; i++)
    g_ptr_array_add (result->keys, g_strdup (((MgPgpKey *) g_ptr_array_index (r.pgp, i))->fingerprint));
  for (guint i = 0; i < r.certs->len; i++)
    g_ptr_array_add (result->keys, g_strdup (((char *) g_ptr_array_index (r.ids, i))));
  outer = encrypt_entity (inner, raw, form, keys, &r, big, error);
  if (outer == NULL)
    return NULL;
  result->action = g_strcmp0 (result->action, "decrypted") == 0 ? "re-encrypted" : "encrypted";
  return finish (message, outer, keys, result, error);
}
