/* test-unit.c - unit tests of the pieces detection is made of: armor finding (LF, CRLF, indented, HTML, text around
 * it, broken), the OpenPGP packet reader on hand-made packets, and the JSON writer's escaping. */
#include "config.h"

#include <string.h>

#include "armor.h"
#include "detect.h"
#include "report.h"
#include "openpgp.h"

/* a real v3 PKESK for key id 0x0123456789ABCDEF (RSA), then a SEIPD v1 packet: base64 of the bytes below */
static const guint8 pkesk_seipd[] = {
  0xc1, 0x0c, 0x03, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x01, 0x00, 0x00, /* tag 1, len 12 */
  0xd2, 0x03, 0x01, 0xaa, 0xbb,                                                       /* tag 18, len 3 */
};

static char *
armored (const guint8 *data, gsize len, const char *eol, const char *lead)
{
  g_autofree char *b64 = g_base64_encode (data, len);

  return g_strdup_printf (
    "%s-----BEGIN PGP MESSAGE-----%s%sVersion: test%s%s%s%s%s=abcd%s%s-----END PGP MESSAGE-----%s", lead, eol, lead,
    eol, eol, lead, b64, eol, eol, lead, eol);
}

static void
check_encrypted_text (const char *text, gsize len)
{
  g_autoptr (GArray) blocks = mg_armor_find (text, len);
  g_autoptr (GBytes) bytes = NULL;
  g_autoptr (GError) error = NULL;
  const MgArmorBlock *b;
  MgCryptoInfo info;

  g_assert_cmpuint (blocks->len, ==, 1);
  b = &g_array_index (blocks, MgArmorBlock, 0);
  g_assert_cmpint (b->type, ==, MG_ARMOR_MESSAGE);
  g_assert_true (b->complete);
  bytes = mg_armor_decode (text, b, &error);
  g_assert_no_error (error);
  g_assert_cmpmem (g_bytes_get_data (bytes, NULL), g_bytes_get_size (bytes), pkesk_seipd, sizeof pkesk_seipd);
  mg_crypto_info_init (&info);
  g_assert_cmpint (mg_openpgp_inspect (g_bytes_get_data (bytes, NULL), g_bytes_get_size (bytes), &info), ==,
                   MG_OPENPGP_ENCRYPTED);
  g_assert_cmpuint (info.recipients->len, ==, 1);
  g_assert_cmpstr (((MgCryptoId *) g_ptr_array_index (info.recipients, 0))->id, ==, "0x0123456789ABCDEF");
  g_assert_cmpstr (((MgCryptoId *) g_ptr_array_index (info.recipients, 0))->algorithm, ==, "RSA");
  g_assert_cmpstr (info.integrity, ==, "mdc");
  mg_crypto_info_clear (&info);
}

static void
test_armor_line_ends (void)
{
  const char *eols[] = { "\n", "\r\n" };
  const char *leads[] = { "", "  ", "\t" };

  for (gsize e = 0; e < G_N_ELEMENTS (eols); e++)
    for (gsize l = 0; l < G_N_ELEMENTS (leads); l++) {
      g_autofree char *block = armored (pkesk_seipd, sizeof pkesk_seipd, eols[e], leads[l]);
      g_autofree char *text =
        g_strdup_printf ("Hello,%sbefore the armor.%s%s%safter it.%s", eols[e], eols[e], block, eols[e], eols[e]);
      check_encrypted_text (text, strlen (text));
    }
}

static void
test_armor_html (void)
{
  g_autofree char *b64 = g_base64_encode (pkesk_seipd, sizeof pkesk_seipd);
  g_autofree char *html =
    g_strdup_printf ("<html><body><p>Hi&nbsp;there</p>\n<div>-----BEGIN PGP MESSAGE-----<br>\n<br>\n%s<br>\n=abcd<br>\n"
                     "-----END&nbsp;PGP MESSAGE-----</div></body></html>",
                     b64);
  g_autofree char *html_nbsp =
    g_strdup_printf ("<pre>-----BEGIN PGP MESSAGE-----\n\n&nbsp;%s\n-----END PGP MESSAGE-----"
                     "\n</pre>",
                     b64);
  gsize tlen;
  g_autofree char *text = mg_armor_html_to_text (html, strlen (html), &tlen);
  g_autofree char *text2 = mg_armor_html_to_text (html_nbsp, strlen (html_nbsp), &tlen);

  g_assert_nonnull (strstr (text, "Hi there"));
  check_encrypted_text (text, strlen (text));
  check_encrypted_text (text2, strlen (text2));
}

static void
test_armor_kinds (void)
{
  const char *text = "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\nsigned text\n"
                     "-----BEGIN PGP SIGNATURE-----\n\nAAAA\n-----END PGP SIGNATURE-----\n"
                     "between\n"
                     "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nAAAA\n-----END PGP PUBLIC KEY BLOCK-----\n"
                     "> -----BEGIN PGP MESSAGE-----\n> quoted armor is a reply, not a payload\n"
                     "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nAAAA\n";
  g_autoptr (GArray) blocks = mg_armor_find (text, strlen (text));

  g_assert_cmpuint (blocks->len, ==, 3);
  g_assert_cmpint (g_array_index (blocks, MgArmorBlock, 0).type, ==, MG_ARMOR_SIGNED_MESSAGE);
  g_assert_true (g_array_index (blocks, MgArmorBlock, 0).complete);
  g_assert_cmpint (g_array_index (blocks, MgArmorBlock, 1).type, ==, MG_ARMOR_PUBLIC_KEY);
  g_assert_cmpint (g_array_index (blocks, MgArmorBlock, 2).type, ==, MG_ARMOR_PRIVATE_KEY);
  g_assert_false (g_array_index (blocks, MgArmorBlock, 2).complete);
}

static void
test_armor_broken (void)
{
  const char *bad = "-----BEGIN PGP MESSAGE-----\n\nthis is: not base64 <at all>\n-----END PGP MESSAGE-----\n";
  const char *empty = "-----BEGIN PGP MESSAGE-----\n-----END PGP MESSAGE-----\n";
  const char *mismatch = "-----BEGIN PGP MESSAGE-----\n\nAAAA\n-----END PGP SIGNATURE-----\n";
  g_autoptr (GArray) b1 = mg_armor_find (bad, strlen (bad));
  g_autoptr (GArray) b2 = mg_armor_find (empty, strlen (empty));
  g_autoptr (GArray) b3 = mg_armor_find (mismatch, strlen (mismatch));
  g_autoptr (GError) e1 = NULL, e2 = NULL;
  g_autoptr (GBytes) d1 = NULL, d2 = NULL;

  g_assert_cmpuint (b1->len, ==, 1);
  d1 = mg_armor_decode (bad, &g_array_index (b1, MgArmorBlock, 0), &e1);
  g_assert_null (d1);
  g_assert_error (e1, MG_DETECT_ERROR, MG_DETECT_ERROR_MALFORMED);
  d2 = mg_armor_decode (empty, &g_array_index (b2, MgArmorBlock, 0), &e2);
  g_assert_null (d2);
  g_assert_error (e2, MG_DETECT_ERROR, MG_DETECT_ERROR_MALFORMED);
  g_assert_false (g_array_index (b3, MgArmorBlock, 0).complete);
}

static void
test_openpgp_packets (void)
{
  /* new-format v4 signature with an issuer fingerprint subpacket (33) and key id (16), RSA, SHA256 */
  guint8 sig[] = {
    0xc2, 0x00, 0x04, 0x00, 0x01, 0x08, 0x00, 0x17, /* v4, binary, RSA, SHA256, hashed len 23 */
    0x16, 0x21, 0x04, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99,
    0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0x00,       /* len 22: type 33, v4, 20 bytes */
    0x00, 0x0a, 0x09, 0x10, 0x99, 0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, /* unhashed: issuer key id */
  };
  /* old-format SED (tag 9) after a SKESK: no integrity protection */
  guint8 sed[] = { 0x8c, 0x04, 0x04, 0x09, 0x03, 0x02, 0xa4, 0x02, 0xde, 0xad };
  guint8 garbage[] = { 0x00, 0x01, 0x02 };
  MgCryptoInfo info;

  sig[1] = sizeof sig - 2;
  mg_crypto_info_init (&info);
  g_assert_true (mg_openpgp_sniff (sig, sizeof sig));
  g_assert_cmpint (mg_openpgp_inspect (sig, sizeof sig, &info), ==, MG_OPENPGP_SIGNATURE);
  g_assert_cmpuint (info.signers->len, ==, 1);
  g_assert_cmpstr (((MgCryptoId *) g_ptr_array_index (info.signers, 0))->id, ==,
                   "0x1122334455667788990011223344556677889900");
  g_assert_cmpstr (((MgCryptoId *) g_ptr_array_index (info.signers, 0))->digest, ==, "SHA256");
  mg_crypto_info_clear (&info);

  mg_crypto_info_init (&info);
  g_assert_cmpint (mg_openpgp_inspect (sed, sizeof sed, &info), ==, MG_OPENPGP_ENCRYPTED);
  g_assert_cmpuint (info.passphrases, ==, 1);
  g_assert_cmpstr (info.integrity, ==, "none");
  mg_crypto_info_clear (&info);

  mg_crypto_info_init (&info);
  g_assert_false (mg_openpgp_sniff (garbage, sizeof garbage));
  g_assert_cmpint (mg_openpgp_inspect (garbage, sizeof garbage, &info), ==, MG_OPENPGP_UNKNOWN);
  /* every truncation of a valid stream is read without reading past its end */
  for (gsize n = 0; n < sizeof pkesk_seipd; n++)
    (void) mg_openpgp_inspect (pkesk_seipd, n, &info);
  mg_crypto_info_clear (&info);
}

static void
test_kind_names (void)
{
  const char *expected[] = {
    "plain",
    "pgp-mime-encrypted",
    "pgp-mime-signed",
    "pgp-mime-mangled",
    "pgp-inline-encrypted",
    "pgp-inline-signed",
    "pgp-inline-key",
    "pgp-attachment-encrypted",
    "smime-enveloped",
    "smime-signed-opaque",
    "smime-signed-detached",
    "smime-compressed",
  };
  MgKind k;

  g_assert_cmpuint (G_N_ELEMENTS (expected), ==, MG_KIND_COUNT);
  for (guint i = 0; i < MG_KIND_COUNT; i++) {
    g_assert_cmpstr (mg_kind_name (i), ==, expected[i]);
    g_assert_true (mg_kind_from_name (expected[i], &k));
    g_assert_cmpuint (k, ==, i);
  }
  g_assert_false (mg_kind_from_name ("pgp", &k));
}

static void
test_json (void)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();
  g_autofree char *out = NULL;

  json_builder_begin_object (b);
  mg_report_json_member (b, "s", "a\"b\\c\nd\t\x01\xc3\xa9");
  mg_report_json_member (b, "bad", "\xff");
  mg_report_json_member (b, "null", NULL);
  json_builder_set_member_name (b, "a");
  json_builder_begin_array (b);
  json_builder_add_int_value (b, 1);
  json_builder_add_boolean_value (b, TRUE);
  json_builder_begin_object (b);
  json_builder_end_object (b);
  json_builder_add_double_value (b, 0.25);
  json_builder_end_array (b);
  json_builder_end_object (b);
  out = mg_report_json_text (b);
  /* json-glib's output, byte for byte what the hand-written writer gave: compact, members in order, escapes */
  g_assert_cmpstr (out, ==,
                   "{\"s\":\"a\\\"b\\\\c\\nd\\t\\u0001\xc3\xa9\",\"bad\":\"\xef\xbf\xbd\",\"null\":null,"
                   "\"a\":[1,true,{},0.25]}");
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/armor/line-ends-and-indent", test_armor_line_ends);
  g_test_add_func ("/armor/html", test_armor_html);
  g_test_add_func ("/armor/kinds", test_armor_kinds);
  g_test_add_func ("/armor/broken", test_armor_broken);
  g_test_add_func ("/openpgp/packets", test_openpgp_packets);
  g_test_add_func ("/detect/kind-names", test_kind_names);
  g_test_add_func ("/json/escaping", test_json);
  return g_test_run ();
}
