/* armor.h - finding and decoding OpenPGP ASCII armor (RFC 9580 section 6) inside text and HTML. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

typedef enum {
  MG_ARMOR_MESSAGE,        /* BEGIN PGP MESSAGE */
  MG_ARMOR_SIGNED_MESSAGE, /* BEGIN PGP SIGNED MESSAGE (cleartext signature framework) */
  MG_ARMOR_PUBLIC_KEY,     /* BEGIN PGP PUBLIC KEY BLOCK */
  MG_ARMOR_PRIVATE_KEY,    /* BEGIN PGP PRIVATE KEY BLOCK */
  MG_ARMOR_SIGNATURE,      /* BEGIN PGP SIGNATURE (detached) */
} MgArmorType;

/**
 * MgArmorBlock: one armored block in a text.
 * @begin: offset of the BEGIN line; @end: offset just after the END line (or the text's end when it is missing)
 * @data_begin, @data_end: the base64 body (for a signed message: the signature's body)
 * @complete: whether the END line was found
 */
typedef struct {
  MgArmorType type;
  gsize begin;
  gsize end;
  gsize data_begin;
  gsize data_end;
  gboolean complete;
} MgArmorBlock;

GArray *mg_armor_find (const char *text, gsize len);
GBytes *mg_armor_decode (const char *text, const MgArmorBlock *block, GError **error);
char *mg_armor_html_to_text (const char *html, gsize len, gsize *out_len);
const char *mg_armor_type_name (MgArmorType type);

G_END_DECLS
