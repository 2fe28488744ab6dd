/* test-inputs.c - degenerate input through `mimegate filter` and `mimegate convert` with real keys: an empty message,
 * a header block only, a body only, and the broken-multipart message that once made mg_convert return neither a
 * result nor an error (SIGSEGV in both faces). Each must be delivered as it came, or encrypted, or refused with a
 * clear 5.7.1 where policy requires encryption; never a crash, a sanitizer report or a GLib critical. The sanitizer
 * build runs this file too. */
#include "config.h"

#include <string.h>

#include "testutil.h"

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (MgRun, mg_run_clear)

typedef struct {
  MgGpg *gpg; /* carol@inline.example (Microsoft 365: inline-only), req@partner.example */
  char *dir;
  char *conf;
} Fixture;

static Fixture fx;

/* the message fuzz-convert found (tests/fuzz/regressions/convert/plain-broken-multipart-to-pgp-inline, less its
 * first byte, which picks the form there): a plain multipart/mixed whose parts have broken headers and no content */
static const char poison_b64[] =
  "RnJvbTogQWxpY2UgU2FtcGxlIDxhbGljZVBleGFtcGxlLm9yZz4KVG86IENhcm9sIFNhbXBsZSA8Y2Fyb2xAZXhhbXBsZS5uZXQ+ClN1YmplY3Q6IFBH"
  "UC9NSU1FIGFzIEV4Y2hhbmdlIHJld3JpdGVzIGl0CkRhdGU6IE1vbiwgMjMgTm92IDIwMjYgMTA6MDA6MDAgKzAwMDAKTWVzc2FnZS1JRDogPG1hbmds"
  "ZWRAc2FtcGxlcy5taW1lZ2F0bQAAAAAAAABkPgpNSU1FLVZlcnNpb246IDEuMApDb250ZW50LVR5cGU6IG11bHRpcGFydC9taXhlZDsgYm91bmRhcnk9"
  "Im1peCIKCi0tbWl4CkNvbnRlbnQtVHlwZTogdGV4dC9wbGFpbjsgY2hhcnNldD0idXMtYXNjaWkiCkMwOjAwICswMDAwCk1lc3NhZ2UtSUQ6IDxtYW5n"
  "bGVkQHNhbXBsZXMubWltZWdhdG0AAAAAAAAAZD4KTUlNRS1WZXJzaW9uOiAxLjAKQ29udGWbdC1UeXBlOiBtdWx0aXBhcnQvbWl4ZWQ7IGJvdW5kYXJ5"
  "PSJtaXgiCgotLW1peApDb250ZW50LQoAAAA6IHRleHQvcGxhaW47IGNoYXJzZXQ9InVzLWFzY2lpIgpDb250ZW50LVRyYW5zZmVyLUVuY29kaW5nOiBx"
  "dW90ZWQtcHJpbnRhYmxlCgoKLS1taXgKQ29udGVudC1UeXBlOiBhcHBsaWNhdGlvbi9wZ3AtZW5jcnlwdGVkOyBuYW1PQzlqVTNWaE1XRjNLMjQxYjNk"
  "WmR6WlFkRmh2ZEZWTFZTOXFWMDVzWW5sQ1JITjNDa1J3YjJOUlVYSmFjSFp3UmtKdlFnVUVk//9g0AAIXIBCUjBVdExTMHRMUW89Ci0tbWl4LS0K";

/* the degenerate inputs: what each is, and its bytes */
static const struct {
  const char *name;
  const char *data;
} degenerate[] = {
  { "empty", "" },
  { "one newline", "\n" },
  { "header only, no blank line", "Subject: header only\n" },
  { "header only, CRLF", "Subject: header only\r\nFrom: a@example.org\r\n\r\n" },
  { "body only", "\nthis message has a body and no header\n" },
  { "text without a header", "no colon here, just text\n" },
};

static void
assert_clean_stderr (const MgRun *r)
{
  g_assert_null (strstr (r->err, "CRITICAL"));
  g_assert_null (strstr (r->err, "WARNING"));
  g_assert_null (strstr (r->err, "runtime error"));    /* UBSan */
  g_assert_null (strstr (r->err, "AddressSanitizer")); /* ASan */
  g_assert_null (strstr (r->err, "LeakSanitizer"));
}

/* filter_stdout - mimegate filter --stdout with @input, for one recipient */
static void
filter_stdout (MgRun *r, const char *input, gsize len, const char *rcpt)
{
  const char *argv[] = { mg_test_mimegate (),  "filter", "-c", fx.conf, "--stdout", "-f",
                         "sender@example.org", "--",     rcpt, NULL };
  g_auto (GStrv) env = mg_test_env ("LANGUAGE", NULL, "LC_ALL", "C.UTF-8", NULL);

  g_assert_true (mg_test_run (r, argv, (const char *const *) env, input, len));
  assert_clean_stderr (r);
}

/* gpg_decrypt - the first armored block in @text decrypted by gpg in the gateway's home (which holds carol) */
static char *
gpg_decrypt (const char *text)
{
  g_autofree char *block = mg_test_pgp_block (text);

  g_assert_nonnull (block);
  return mg_gpg (fx.gpg, block, strlen (block), "--decrypt", NULL);
}

static void
test_degenerate_filter (void)
{
  for (guint i = 0; i < G_N_ELEMENTS (degenerate); i++) {
    const char *in = degenerate[i].data;
    gsize len = strlen (in);
    g_test_message ("filter: %s", degenerate[i].name);
    {
      /* opportunistic, no key: delivered byte for byte as it came */
      g_auto (MgRun) r = { 0 };
      filter_stdout (&r, in, len, "nokey@example.com");
      g_assert_cmpint (r.status, ==, 0);
      g_assert_cmpmem (r.out, r.out_len, in, len);
    }
    {
      /* required, no key: refused with 5.7.1 naming the recipient, nothing written */
      g_auto (MgRun) r = { 0 };
      filter_stdout (&r, in, len, "nokey@partner.example");
      g_assert_cmpint (r.status, ==, 69);
      g_assert_true (g_str_has_prefix (r.err, "5.7.1 "));
      g_assert_nonnull (strstr (r.err, "<nokey@partner.example>"));
      g_assert_cmpuint (r.out_len, ==, 0);
    }
    {
      /* required, with a key: a message that is not MIME cannot be encrypted and is refused, never sent in clear */
      g_auto (MgRun) r = { 0 };
      filter_stdout (&r, in, len, "req@partner.example");
      g_assert_true (r.status == 0 || r.status == 69);
      if (r.status == 69) {
        g_assert_true (g_str_has_prefix (r.err, "5.7.1 "));
        g_assert_cmpuint (r.out_len, ==, 0);
      } else
        g_assert_nonnull (strstr (r.out, "-----BEGIN PGP MESSAGE-----"));
    }
  }
}

static void
test_degenerate_convert (void)
{
  static const char *const forms[] = { "keep", "plain", "pgp-mime", "pgp-inline", "smime" };
  g_autofree char *dir = mg_test_tmpdir ();

  for (guint i = 0; i < G_N_ELEMENTS (degenerate); i++) {
    g_autofree char *file = mg_test_write (dir, "in.eml", degenerate[i].data, -1);
    for (guint f = 0; f < G_N_ELEMENTS (forms); f++) {
      g_auto (MgRun) r = { 0 };
      const char *rcpt = g_str_equal (forms[f], "smime") ? "nokey@example.com" : "carol@inline.example";
      g_test_message ("convert --to %s: %s", forms[f], degenerate[i].name);
      g_assert_true (mg_test_runf (&r, NULL, mg_test_mimegate (), "convert", "-c", fx.conf, "--to", forms[f], "-r",
                                   rcpt, file, NULL));
      assert_clean_stderr (&r);
      if (g_str_equal (forms[f], "keep")) {
        g_assert_cmpint (r.status, ==, 0);
        g_assert_cmpmem (r.out, r.out_len, degenerate[i].data, strlen (degenerate[i].data));
      } else if (r.status != 0) {
        /* refused with a reason: not MIME (5.6.0), or no key for the form (5.7.1); never a crash or a deferral */
        g_assert_cmpint (r.status, ==, 69);
        g_assert_true (g_str_has_prefix (r.err, "5.6.0 ") || g_str_has_prefix (r.err, "5.7.1 "));
        g_assert_cmpuint (r.out_len, ==, 0);
      } else if (!g_str_equal (forms[f], "plain"))
        g_assert_nonnull (strstr (r.out, "-----BEGIN PGP MESSAGE-----"));
    }
  }
  mg_test_rmtree (dir);
}

/* the fuzz find: an inline-only recipient with a key used to kill both faces with SIGSEGV */
static void
test_poison_pgp_inline (void)
{
  gsize len;
  g_autofree guchar *msg = g_base64_decode (poison_b64, &len);
  g_autofree char *dir = mg_test_tmpdir ();
  g_autofree char *file = mg_test_write (dir, "poison.eml", (const char *) msg, (gssize) len);

  {
    g_auto (MgRun) r = { 0 };
    g_autofree char *clear = NULL;
    filter_stdout (&r, (const char *) msg, len, "carol@inline.example");
    g_assert_cmpint (r.status, ==, 0);
    /* PGP/Inline as Microsoft 365 reads it: the parts without content travel as encrypted NAME.pgp files */
    g_assert_nonnull (strstr (r.out, "filename=part-1.txt.pgp"));
    g_assert_nonnull (strstr (r.out, "-----BEGIN PGP MESSAGE-----"));
    clear = gpg_decrypt (r.out);
    g_assert_nonnull (clear);
  }
  {
    g_auto (MgRun) r = { 0 };
    g_assert_true (mg_test_runf (&r, NULL, mg_test_mimegate (), "convert", "-c", fx.conf, "--to", "pgp-inline", "-r",
                                 "carol@inline.example", file, NULL));
    assert_clean_stderr (&r);
    g_assert_cmpint (r.status, ==, 0);
    g_assert_nonnull (strstr (r.out, "filename=part-1.txt.pgp"));
  }
  mg_test_rmtree (dir);
}

/* convert's first stderr line carries an RFC 3463 code also when a key store cannot be opened (README) */
static void
test_convert_store_status (void)
{
  g_autofree char *dir = mg_test_tmpdir ();
  g_autofree char *text = g_strdup_printf ("[gateway]\ngnupg-home = %s/missing\n", dir);
  g_autofree char *conf = mg_test_write (dir, "missing-home.conf", text, -1);
  g_autofree char *file = mg_test_write (dir, "in.eml", "From: a@example.org\n\nbody\n", -1);
  g_auto (MgRun) r = { 0 };

  g_assert_true (mg_test_runf (&r, NULL, mg_test_mimegate (), "convert", "-c", conf, "--to", "plain", "-r",
                               "carol@inline.example", file, NULL));
  g_assert_cmpint (r.status, ==, 75);
  g_assert_true (g_str_has_prefix (r.err, "4.7.0 mimegate convert: "));
  g_assert_nonnull (strstr (r.err, "does not exist"));
  g_assert_cmpuint (r.out_len, ==, 0);
  mg_test_rmtree (dir);
}

int
main (int argc, char **argv)
{
  int rc;

  g_test_init (&argc, &argv, NULL);
  fx.gpg = mg_gpg_new ();
  g_assert_true (mg_gpg_add_key (fx.gpg, "carol@inline.example", "ed25519"));
  g_assert_true (mg_gpg_add_key (fx.gpg, "req@partner.example", "ed25519"));
  fx.dir = mg_test_tmpdir ();
  {
    g_autofree char *text = g_strdup_printf ("[gateway]\ngnupg-home = %s\ntrust-model = always\n"
                                             "authserv-id = gw.example\nlog = json:%s/log\nreinject = /bin/false\n"
                                             "[domain inline.example]\ninline-only = true\n"
                                             "[domain partner.example]\nencrypt = required\n",
                                             fx.gpg->home, fx.dir);
    fx.conf = mg_test_write (fx.dir, "mimegate.conf", text, -1);
  }
  g_test_add_func ("/inputs/degenerate-filter", test_degenerate_filter);
  g_test_add_func ("/inputs/degenerate-convert", test_degenerate_convert);
  g_test_add_func ("/inputs/poison-pgp-inline", test_poison_pgp_inline);
  g_test_add_func ("/inputs/convert-store-status", test_convert_store_status);
  rc = g_test_run ();
  mg_gpg_free (fx.gpg);
  mg_test_rmtree (fx.dir);
  g_free (fx.dir);
  g_free (fx.conf);
  return rc;
}
