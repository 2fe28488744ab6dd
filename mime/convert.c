/* convert.c - one message into one form (RFC 3156 PGP/MIME, RFC 8551 S/MIME, plain) for a set of recipients.
 *
 * The steps: detect what the message is; if its outermost layer is encryption (PGP/MIME, Exchange-mangled PGP/MIME,
 * S/MIME enveloped), decrypt it with a key the gateway holds, which yields the inner MIME entity; then emit that
 * entity in the asked form, encrypted to every recipient's chosen key. A message already in the asked form and
 * readable by every recipient is kept as it is (never re-encrypted for nothing). Nothing is emitted before all of it
 * is done, and clear text exists only in memory: never in a file, never in a log.
 *
 * Not yet here: PGP/Inline in either direction, encryption below the top level, signatures (verify, stamp, sign).
 * Those fail with MG_CONVERT_ERROR_UNSUPPORTED, so that a caller never mistakes them for success. */
#include "config.h"

#include "convert.h"

#include <string.h>

#include <glib/gi18n.h>

#include "cms.h"
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

void
mg_convert_result_init (MgConvertResult *result)
{
  memset (result, 0, sizeof *result);
  result->action = "kept";
  result->keys = g_ptr_array_new_with_free_func (g_free);
}

void
mg_convert_result_clear (MgConvertResult *result)
{
  g_clear_pointer (&result->keys, g_ptr_array_unref);
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
  g_autoptr (GMimeStream) s = g_mime_stream_mem_new ();
  g_autoptr (GMimeParser) parser = NULL;
  GMimeObject *obj;

  if (g_bytes_get_size (bytes) > 0)
    g_mime_stream_write (s, g_bytes_get_data (bytes, NULL), g_bytes_get_size (bytes));
  g_mime_stream_reset (s);
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

/* decrypt_body - the inner entity of a top-level encrypted body, or a new reference to the body when it is not */
static GMimeObject *
decrypt_body (GMimeObject *body, const MgReport *report, MgForm form, const MgConvertKeys *keys,
              MgConvertResult *result, GError **error)
{
  const MgPart *top = report->parts->len ? g_ptr_array_index (report->parts, 0) : NULL;
  g_autoptr (GBytes) cipher = NULL;
  g_autoptr (GBytes) clear = NULL;
  g_autofree char *used = NULL;

  if (top == NULL || top->kind == MG_KIND_PLAIN || top->kind == MG_KIND_PGP_MIME_SIGNED ||
      top->kind == MG_KIND_SMIME_SIGNED_DETACHED) {
    /* Not encrypted at the top. Asked for plain while something inside is encrypted, the result would still hold
     * ciphertext under a "plain" label: refuse that until part-by-part decryption exists. Encrypting forms may wrap
     * inner ciphertext as it is. */
    guint inner_encrypted = MG_KIND_BIT (MG_KIND_PGP_INLINE_ENCRYPTED) |
                            MG_KIND_BIT (MG_KIND_PGP_ATTACHMENT_ENCRYPTED) | MG_KIND_BIT (MG_KIND_PGP_MIME_ENCRYPTED) |
                            MG_KIND_BIT (MG_KIND_PGP_MIME_MANGLED) | MG_KIND_BIT (MG_KIND_SMIME_ENVELOPED);
    if (form == MG_FORM_PLAIN && (report->kinds & inner_encrypted)) {
      g_set_error (error, MG_CONVERT_ERROR, MG_CONVERT_ERROR_UNSUPPORTED,
                   _ ("decrypting PGP/Inline and encrypted parts inside a message is not yet available"));
      return NULL;
    }
    return g_object_ref (body);
  }
  switch (top->kind) {
  case MG_KIND_PGP_MIME_ENCRYPTED:
  case MG_KIND_PGP_MIME_MANGLED: {
    int index = top->kind == MG_KIND_PGP_MIME_ENCRYPTED ? 1 : 2;
    if (!GMIME_IS_MULTIPART (body) || g_mime_multipart_get_count (GMIME_MULTIPART (body)) <= index ||
        (cipher = part_bytes (g_mime_multipart_get_part (GMIME_MULTIPART (body), index))) == NULL) {
      g_set_error_literal (error, MG_CONVERT_ERROR, MG_CONVERT_ERROR_MALFORMED, _ ("the PGP/MIME structure is broken"));
      return NULL;
    }
    if (keys->gnupg == NULL) {
      g_set_error (error, MG_KEYS_ERROR, MG_KEYS_ERROR_NOT_HELD, _ ("encrypted to keys the gateway does not hold: %s"),
                   top->info.recipients->len ? ((MgCryptoId *) g_ptr_array_index (top->info.recipients, 0))->id : "?");
      return NULL;
    }
    clear = mg_gnupg_decrypt (keys->gnupg, cipher, &used, error);
    break;
  }
  case MG_KIND_SMIME_ENVELOPED:
    cipher = part_bytes (body);
    if (cipher == NULL) {
      g_set_error_literal (error, MG_CONVERT_ERROR, MG_CONVERT_ERROR_MALFORMED, _ ("the S/MIME part cannot be read"));
      return NULL;
    }
    clear = mg_cms_decrypt (g_bytes_get_data (cipher, NULL), g_bytes_get_size (cipher),
                            keys->x509 ? mg_x509_store_private_keys (keys->x509) : NULL, &used, error);
    break;
  default:
    g_set_error (error, MG_CONVERT_ERROR, MG_CONVERT_ERROR_UNSUPPORTED, _ ("converting %s is not yet available"),
                 mg_kind_name (top->kind));
    return NULL;
  }
  if (clear == NULL)
    return NULL;
  if (used != NULL)
    g_ptr_array_add (result->keys, g_steal_pointer (&used));
  result->action = "decrypted";
  return parse_entity (clear, error);
}

/* readable_by_all - whether the encrypted input already names every chosen recipient key */
static gboolean
readable_by_all (const MgPart *ciphertext, GPtrArray *ids)
{
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
  g_autoptr (GMimeStream) s2 = g_mime_stream_mem_new ();
  g_autoptr (GMimeDataWrapper) w1 = g_mime_data_wrapper_new_with_stream (s1, GMIME_CONTENT_ENCODING_DEFAULT);
  g_autoptr (GMimeDataWrapper) w2 = g_mime_data_wrapper_new_with_stream (s2, GMIME_CONTENT_ENCODING_DEFAULT);

  g_mime_stream_write (s2, g_bytes_get_data (armored, NULL), g_bytes_get_size (armored));
  g_mime_stream_reset (s2);
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
  g_autoptr (GMimeStream) s = g_mime_stream_mem_new ();
  g_autoptr (GMimeDataWrapper) w = g_mime_data_wrapper_new_with_stream (s, GMIME_CONTENT_ENCODING_DEFAULT);

  g_mime_stream_write (s, g_bytes_get_data (der, NULL), g_bytes_get_size (der));
  g_mime_stream_reset (s);
  g_mime_object_set_content_type_parameter (GMIME_OBJECT (part), "smime-type",
                                            gcm ? "authEnveloped-data" : "enveloped-data");
  g_mime_object_set_content_type_parameter (GMIME_OBJECT (part), "name", "smime.p7m");
  g_mime_part_set_content (part, w);
  g_mime_part_set_filename (part, "smime.p7m");
  g_mime_part_set_content_encoding (part, GMIME_CONTENT_ENCODING_BASE64);
  return GMIME_OBJECT (part);
}

/* encrypt_body - the inner entity encrypted to every recipient in @form, or NULL with NO_KEY naming the address */
static GMimeObject *
encrypt_body (GMimeObject *inner, MgForm form, const char *const *recipients, const MgConvertKeys *keys,
              const MgPart *input_cipher, MgKind input_kind, GObject **keep, MgConvertResult *result, GError **error)
{
  g_autoptr (GPtrArray) pgp = g_ptr_array_new_with_free_func ((GDestroyNotify) mg_pgp_key_free);
  g_autoptr (GPtrArray) certs = g_ptr_array_new ();
  g_autoptr (GPtrArray) ids = g_ptr_array_new_with_free_func (g_free);
  g_autoptr (GBytes) clear = NULL;
  g_autoptr (GBytes) cipher = NULL;

  for (guint i = 0; recipients[i] != NULL; i++) {
    g_autoptr (GPtrArray) refused = g_ptr_array_new_with_free_func ((GDestroyNotify) mg_keys_refusal_free);
    if (form == MG_FORM_PGP_MIME) {
      MgPgpKey *k = keys->gnupg ? mg_gnupg_lookup (keys->gnupg, recipients[i], refused, error) : NULL;
      if (error && *error)
        return NULL;
      if (k == NULL) {
        g_set_error (error, MG_CONVERT_ERROR, MG_CONVERT_ERROR_NO_KEY, _ ("no usable OpenPGP key for %s"),
                     recipients[i]);
        return NULL;
      }
      g_ptr_array_add (ids, g_strdup (k->subkey_id));
      g_ptr_array_add (result->keys, g_strdup (k->fingerprint));
      g_ptr_array_add (pgp, k);
    } else {
      const MgX509Cert *c = keys->x509 ? mg_x509_store_lookup (keys->x509, recipients[i], refused) : NULL;
      if (c == NULL) {
        g_set_error (error, MG_CONVERT_ERROR, MG_CONVERT_ERROR_NO_KEY, _ ("no usable X.509 certificate for %s"),
                     recipients[i]);
        return NULL;
      }
      g_ptr_array_add (ids, g_strdup_printf ("serial=%s", c->serial));
      g_ptr_array_add (result->keys, g_strdup (c->fingerprint));
      g_ptr_array_add (certs, c->cert);
    }
  }
  /* rule 2 of DESIGN.md: already in this form and readable by every recipient → keep it as it came */
  if (input_cipher != NULL &&
      ((form == MG_FORM_PGP_MIME && input_kind == MG_KIND_PGP_MIME_ENCRYPTED) ||
       (form == MG_FORM_SMIME && input_kind == MG_KIND_SMIME_ENVELOPED)) &&
      readable_by_all (input_cipher, ids)) {
    *keep = G_OBJECT (inner);
    return NULL;
  }
  clear = entity_bytes (inner);
  if (form == MG_FORM_PGP_MIME) {
    cipher = mg_gnupg_encrypt (keys->gnupg, clear, pgp, error);
    return cipher ? pgp_mime (cipher) : NULL;
  }
  cipher = mg_cms_encrypt (clear, certs, keys->gcm, error);
  return cipher ? smime (cipher, keys->gcm) : NULL;
}

static GBytes *
message_bytes (GMimeMessage *m)
{
  g_autoptr (GMimeStream) mem = g_mime_stream_mem_new ();
  GByteArray *ba;

  g_mime_object_write_to_stream (GMIME_OBJECT (m), NULL, mem);
  ba = g_mime_stream_mem_get_byte_array (GMIME_STREAM_MEM (mem));
  return g_bytes_new (ba->data, ba->len);
}

/**
 * mg_convert - @input in @form for @recipients.
 * @recipients: (array zero-terminated=1): addresses; each needs a usable key for encrypting forms
 * @result: (out caller-allocates): initialised with mg_convert_result_init(); what was done
 *
 * Returns: (transfer full): the complete message, or %NULL with @error set (MG_CONVERT_ERROR or MG_KEYS_ERROR).
 */
GBytes *
mg_convert (GBytes *input, MgForm form, const char *const *recipients, const MgConvertKeys *keys,
            MgConvertResult *result, GError **error)
{
  g_autoptr (MgReport) report = mg_detect_data (g_bytes_get_data (input, NULL), g_bytes_get_size (input), keys->limits);
  g_autoptr (GMimeStream) stream = NULL;
  g_autoptr (GMimeParser) parser = NULL;
  g_autoptr (GMimeMessage) message = NULL;
  g_autoptr (GMimeObject) inner = NULL;
  g_autoptr (GMimeObject) outer = NULL;
  GObject *keep = NULL;
  const MgPart *cipher_part = NULL;

  result->kind = report->kind;
  if (form == MG_FORM_KEEP)
    return g_bytes_ref (input);
  if (report->limited || report->parts->len == 0) {
    g_set_error (error, MG_CONVERT_ERROR, MG_CONVERT_ERROR_MALFORMED, _ ("the message cannot be converted: %s"),
                 report->error ? report->error : _ ("it is not MIME"));
    return NULL;
  }
  if (form == MG_FORM_PGP_INLINE) {
    g_set_error_literal (error, MG_CONVERT_ERROR, MG_CONVERT_ERROR_UNSUPPORTED,
                         _ ("converting to PGP/Inline is not yet available"));
    return NULL;
  }
  stream = g_mime_stream_mem_new_with_buffer (g_bytes_get_data (input, NULL), g_bytes_get_size (input));
  parser = g_mime_parser_new_with_stream (stream);
  message = g_mime_parser_construct_message (parser, NULL);
  if (message == NULL || g_mime_message_get_mime_part (message) == NULL) {
    g_set_error_literal (error, MG_CONVERT_ERROR, MG_CONVERT_ERROR_MALFORMED, _ ("the message is not MIME"));
    return NULL;
  }
  for (guint i = 0; i < report->parts->len && cipher_part == NULL; i++) {
    const MgPart *p = g_ptr_array_index (report->parts, i);
    if (g_strcmp0 (p->role, "ciphertext") == 0 || (i == 0 && p->kind == MG_KIND_SMIME_ENVELOPED))
      cipher_part = p;
  }
  if (form != MG_FORM_PLAIN && cipher_part != NULL &&
      ((form == MG_FORM_PGP_MIME && report->kind == MG_KIND_PGP_MIME_ENCRYPTED) ||
       (form == MG_FORM_SMIME && report->kind == MG_KIND_SMIME_ENVELOPED))) {
    /* maybe readable already: decide before decrypting anything */
    g_autoptr (GMimeObject) body = g_object_ref (g_mime_message_get_mime_part (message));
    outer = encrypt_body (body, form, recipients, keys, cipher_part, report->kind, &keep, result, error);
    if (keep != NULL) {
      result->action = "kept";
      return g_bytes_ref (input);
    }
    g_clear_object (&outer);
    if (error && *error)
      return NULL;
  }
  g_ptr_array_set_size (result->keys, 0);
  inner = decrypt_body (g_mime_message_get_mime_part (message), report, form, keys, result, error);
  if (inner == NULL)
    return NULL;
  if (form == MG_FORM_PLAIN) {
    g_mime_message_set_mime_part (message, inner);
    return message_bytes (message);
  }
  outer = encrypt_body (inner, form, recipients, keys, NULL, report->kind, &keep, result, error);
  if (outer == NULL)
    return NULL;
  result->action = g_strcmp0 (result->action, "decrypted") == 0 ? "re-encrypted" : "encrypted";
  g_mime_message_set_mime_part (message, outer);
  return message_bytes (message);
}
