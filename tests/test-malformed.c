/* test-malformed.c - hostile and broken input never crashes detection and still yields a sensible report:
 * truncation at every byte, missing boundaries, invalid base64, broken armor, NUL bytes, a 2 MB header line, nesting
 * thousands deep, too many parts, random bytes. Durations are printed, never asserted (tests/bench/ is for speed). */
#include "config.h"

#include <string.h>

#include "detect.h"
#include "testutil.h"

static const char signed_msg[] =
  "From: a@example.org\r\nTo: b@example.org\r\nSubject: s\r\nMIME-Version: 1.0\r\n"
  "Content-Type: multipart/signed; protocol=\"application/pgp-signature\"; micalg=pgp-sha256; boundary=\"xx\"\r\n\r\n"
  "--xx\r\nContent-Type: multipart/mixed; boundary=\"yy\"\r\n\r\n--yy\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
  "--yy\r\nContent-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\n"
  "Content-Transfer-Encoding: "
  "base64\r\n\r\nMIAGCSqGSIb3DQEHA6CAMIACAQAxggFOMIIBSgIBADAyMCUxFjAUBgNVBAoTDUV4YW1w\r\n--yy--\r\n"
  "--xx\r\nContent-Type: application/pgp-signature\r\n\r\n-----BEGIN PGP SIGNATURE-----\r\n\r\niQEz\r\n"
  "-----END PGP SIGNATURE-----\r\n--xx--\r\n";

static MgReport *
detect (const char *data, gsize len)
{
  MgLimits limits;

  mg_limits_init_default (&limits);
  return mg_detect_data ((const guint8 *) data, len, &limits);
}

static const MgPart *
part (const MgReport *r, guint i)
{
  g_assert_cmpuint (i, <, r->parts->len);
  return g_ptr_array_index (r->parts, i);
}

/* every prefix of a nested message, as if the parser were fed one more byte each time */
static void
test_truncated_everywhere (void)
{
  gsize len = strlen (signed_msg);
  guint flagged = 0;

  for (gsize n = 0; n <= len; n++) {
    g_autoptr (MgReport) r = detect (signed_msg, n);
    g_assert_nonnull (r);
    g_assert_cmpuint (r->kind, <, MG_KIND_COUNT);
    if (r->warnings->len > 0 || r->error != NULL)
      flagged++;
  }
  g_test_message ("%" G_GSIZE_FORMAT " truncations, %u flagged by the parser", len + 1, flagged);
  {
    g_autoptr (MgReport) whole = detect (signed_msg, len);
    g_assert_cmpint (whole->kind, ==, MG_KIND_PGP_MIME_SIGNED);
    g_assert_cmpuint (whole->warnings->len, ==, 0);
  }
  g_assert_cmpuint (flagged, >, 0);
}

static void
test_structure_faults (void)
{
  const char *no_boundary = "Content-Type: multipart/mixed\n\n--b\nContent-Type: text/plain\n\nx\n--b--\n";
  const char *three = "Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=b\n\n"
                      "--b\nContent-Type: application/pgp-encrypted\n\nVersion: 1\n--b\n"
                      "Content-Type: application/octet-stream\n\nnot openpgp\n--b\nContent-Type: text/plain\n\nx\n"
                      "--b--\n";
  const char *unclosed = "Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; boundary=b\n\n"
                         "--b\nContent-Type: text/plain\n\nsigned text, and the message ends here";
  g_autoptr (MgReport) r1 = detect (no_boundary, strlen (no_boundary));
  g_autoptr (MgReport) r2 = detect (three, strlen (three));
  g_autoptr (MgReport) r3 = detect (unclosed, strlen (unclosed));

  g_assert_cmpuint (r1->warnings->len, >, 0);
  g_assert_nonnull (strstr (g_ptr_array_index (r1->warnings, 0), "boundary"));
  g_assert_cmpint (r2->kind, ==, MG_KIND_PGP_MIME_ENCRYPTED);
  g_assert_nonnull (strstr (part (r2, 0)->error, "exactly two parts, has 3"));
  g_assert_nonnull (strstr (part (r2, 0)->error, "holds no OpenPGP message"));
  g_assert_cmpint (r3->kind, ==, MG_KIND_SMIME_SIGNED_DETACHED);
  g_assert_nonnull (strstr (part (r3, 0)->error, "exactly two parts, has 1"));
}

static void
test_bad_encodings (void)
{
  const char *bad_b64 = "Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\n"
                        "Content-Transfer-Encoding: base64\n\n!!!! not base64 at all ####\n";
  const char *bad_armor = "Content-Type: text/plain\n\nHi\n-----BEGIN PGP MESSAGE-----\n\n@@@@ <broken> ::::\n"
                          "-----END PGP MESSAGE-----\n";
  const char *no_end = "Content-Type: text/plain\n\n-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\ntext\n";
  g_autoptr (MgReport) r1 = detect (bad_b64, strlen (bad_b64));
  g_autoptr (MgReport) r2 = detect (bad_armor, strlen (bad_armor));
  g_autoptr (MgReport) r3 = detect (no_end, strlen (no_end));

  g_assert_cmpint (r1->kind, ==, MG_KIND_SMIME_ENVELOPED);
  g_assert_nonnull (strstr (part (r1, 0)->error, "cannot read the CMS object"));
  g_assert_cmpint (r2->kind, ==, MG_KIND_PGP_INLINE_ENCRYPTED);
  g_assert_nonnull (strstr (part (r2, 0)->error, "outside base64"));
  g_assert_cmpint (r3->kind, ==, MG_KIND_PGP_INLINE_SIGNED);
  g_assert_nonnull (part (r3, 0)->error);
}

static void
test_nul_bytes (void)
{
  static const char msg[] = "Subject: a\0b\nContent-Type: text/pl\0ain\n\nbody\0with\0NULs\n-----BEGIN PGP MESSAGE"
                            "-----\n\n\0\0\0\n-----END PGP MESSAGE-----\n";
  g_autoptr (MgReport) r = detect (msg, sizeof msg - 1);

  g_assert_nonnull (r);
  g_assert_cmpuint (r->parts->len, >=, 1);
}

static void
test_huge_header_line (void)
{
  gsize n = 2 * 1024 * 1024;
  g_autoptr (GString) s = g_string_sized_new (n + 200);
  gint64 t0 = g_get_monotonic_time ();
  g_autoptr (MgReport) r = NULL;

  g_string_append (s, "Subject: ");
  for (gsize i = 0; i < n; i++)
    g_string_append_c (s, 'a' + (char) (i % 26));
  g_string_append (s, "\nContent-Type: application/pkcs7-mime; smime-type=signed-data\n\nnot cms\n");
  r = detect (s->str, s->len);
  g_test_message ("2 MB header line: %.1f ms", (g_get_monotonic_time () - t0) / 1000.0);
  g_assert_cmpint (r->kind, ==, MG_KIND_SMIME_SIGNED_OPAQUE);
  g_assert_nonnull (part (r, 0)->error);
}

/* nested - @depth multiparts (or message/rfc822 parts) inside each other around one PGP/MIME part */
static GString *
nested (guint depth, gboolean rfc822)
{
  GString *s = g_string_new ("From: a@example.org\nMIME-Version: 1.0\n");

  for (guint i = 0; i < depth; i++) {
    if (rfc822)
      g_string_append (s, "Content-Type: message/rfc822\n\nSubject: inner\n");
    else
      g_string_append_printf (s, "Content-Type: multipart/mixed; boundary=\"b%u\"\n\n--b%u\n", i, i);
  }
  g_string_append (s, "Content-Type: application/pkcs7-mime; smime-type=enveloped-data\n\nx\n");
  if (!rfc822)
    for (guint i = depth; i-- > 0;)
      g_string_append_printf (s, "--b%u--\n", i);
  return s;
}

static void
test_deep_nesting (void)
{
  guint depths[] = { 10, 63, 64, 65, 3000, 9000 };

  for (gsize i = 0; i < G_N_ELEMENTS (depths); i++)
    for (int rfc822 = 0; rfc822 < 2; rfc822++) {
      g_autoptr (GString) s = nested (depths[i], rfc822);
      gint64 t0 = g_get_monotonic_time ();
      g_autoptr (MgReport) r = detect (s->str, s->len);
      gboolean over = depths[i] > MG_LIMIT_DEFAULT_MAX_DEPTH;

      g_test_message ("depth %u (%s): %.1f ms, %u parts", depths[i], rfc822 ? "message/rfc822" : "multipart",
                      (g_get_monotonic_time () - t0) / 1000.0, r->parts->len);
      g_assert_cmpint (r->limited, ==, over);
      if (over) {
        g_assert_nonnull (strstr (r->error, "max-depth"));
        g_assert_cmpuint (r->parts->len, ==, MG_LIMIT_DEFAULT_MAX_DEPTH + 1);
      } else {
        g_assert_cmpint (r->kind, ==, MG_KIND_SMIME_ENVELOPED);
        g_assert_null (r->error);
      }
    }
}

static void
test_too_many_parts (void)
{
  g_autoptr (GString) flat = g_string_new ("Content-Type: multipart/mixed; boundary=b\n\n");
  g_autoptr (GString) deep = nested (20000, FALSE);
  g_autoptr (MgReport) r1 = NULL, r2 = NULL;

  for (guint i = 0; i < MG_LIMIT_DEFAULT_MAX_PARTS + 10; i++)
    g_string_append (flat, "--b\nContent-Type: text/plain\n\nx\n");
  g_string_append (flat, "--b--\n");
  r1 = detect (flat->str, flat->len);
  g_assert_true (r1->limited);
  g_assert_nonnull (strstr (r1->error, "max-parts"));
  g_assert_cmpuint (r1->parts->len, ==, MG_LIMIT_DEFAULT_MAX_PARTS);

  /* more boundaries than parts allowed: refused before the parser, whose time grows faster than linearly */
  r2 = detect (deep->str, deep->len);
  g_assert_true (r2->limited);
  g_assert_nonnull (strstr (r2->error, "boundaries"));
  g_assert_cmpuint (r2->parts->len, ==, 0);
}

static void
test_size_limit (void)
{
  MgLimits limits;
  g_autoptr (MgReport) r = NULL;

  mg_limits_init_default (&limits);
  limits.max_size = 100;
  r = mg_detect_data ((const guint8 *) signed_msg, strlen (signed_msg), &limits);
  g_assert_true (r->limited);
  g_assert_nonnull (strstr (r->error, "max-size"));
}

static void
test_random_bytes (void)
{
  GRand *rand = g_rand_new_with_seed (20261123);
  const char *pieces[] = { "Content-Type: multipart/signed; boundary=b\n",
                           "--b\n",
                           "--b--\n",
                           "\n",
                           "Content-Type: application/pkcs7-mime\n",
                           "Content-Transfer-Encoding: base64\n",
                           "-----BEGIN PGP MESSAGE-----\n",
                           "-----END PGP MESSAGE-----\n",
                           "MIAGCSqGSIb3DQEHA6CA\n",
                           "Content-Type: message/rfc822\n",
                           "=\n",
                           "\r\n" };

  for (int round = 0; round < 2000; round++) {
    g_autoptr (GString) s = g_string_new (NULL);
    int n = g_rand_int_range (rand, 0, 40);
    for (int k = 0; k < n; k++) {
      if (g_rand_boolean (rand))
        g_string_append (s, pieces[g_rand_int_range (rand, 0, G_N_ELEMENTS (pieces))]);
      else
        g_string_append_c (s, (char) g_rand_int_range (rand, 0, 256));
    }
    {
      g_autoptr (MgReport) r = detect (s->str, s->len);
      g_assert_cmpuint (r->kind, <, MG_KIND_COUNT);
    }
  }
  g_rand_free (rand);
}

int
main (int argc, char **argv)
{
  int status;

  g_test_init (&argc, &argv, NULL);
  g_mime_init ();
  g_test_add_func ("/malformed/truncated-at-every-byte", test_truncated_everywhere);
  g_test_add_func ("/malformed/structure", test_structure_faults);
  g_test_add_func ("/malformed/encodings-and-armor", test_bad_encodings);
  g_test_add_func ("/malformed/nul-bytes", test_nul_bytes);
  g_test_add_func ("/malformed/2mb-header-line", test_huge_header_line);
  g_test_add_func ("/malformed/deep-nesting", test_deep_nesting);
  g_test_add_func ("/malformed/too-many-parts", test_too_many_parts);
  g_test_add_func ("/malformed/size-limit", test_size_limit);
  g_test_add_func ("/malformed/random", test_random_bytes);
  status = g_test_run ();
  g_mime_shutdown ();
  return status;
}
