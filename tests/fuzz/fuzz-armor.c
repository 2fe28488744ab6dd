/* fuzz-armor.c - harness 4: PGP/Inline armor extraction: find every block in text (and in HTML reduced to text),
 * decode each block's base64 body. */
#include "config.h"

#include <glib.h>

#include "armor.h"
#include "fuzz.h"

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  mg_fuzz_strict ();
  return 0;
}

static void
each_block (const char *text, gsize len)
{
  g_autoptr (GArray) blocks = mg_armor_find (text, len);

  for (guint i = 0; i < blocks->len; i++) {
    const MgArmorBlock *b = &g_array_index (blocks, MgArmorBlock, i);
    g_autoptr (GError) error = NULL;
    g_autoptr (GBytes) bin = NULL;
    g_assert_true (b->begin <= b->end && b->end <= len);
    g_assert_true (b->data_begin <= b->data_end && b->data_end <= len);
    bin = mg_armor_decode (text, b, &error);
    g_assert_true ((bin == NULL) == (error != NULL));
    (void) mg_armor_type_name (b->type);
  }
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  /* the armor reader works on NUL-terminated text, as the engine gives it */
  g_autofree char *text = g_strndup ((const char *) data, size);
  gsize html_len = 0;
  g_autofree char *html = NULL;

  each_block (text, strlen (text));
  html = mg_armor_html_to_text (text, strlen (text), &html_len);
  if (html != NULL)
    each_block (html, html_len);
  return 0;
}
