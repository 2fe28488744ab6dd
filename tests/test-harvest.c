/* test-harvest.c - `harvest = smime`: a partner's certificate kept from a verified S/MIME signature (issue 16), so
 * that the reply is S/MIME that openssl opens with the partner's key; and every case that must keep nothing (a bad
 * signature, a signer outside the trusted collection, a From that the certificate does not name, harvesting off),
 * harvested/ that cannot be written (the mail goes on), the address index and serve's generation seeing the new file.
 * Real openssl CA and `openssl cms -sign`; nothing mocked. */
#include "config.h"

#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib/gstdio.h>
#include <json-glib/json-glib.h>

#include "generation.h"
#include "testutil.h"

#define PARTNER "partner@partner.example"
#define LOCAL "local@ours.example"

static struct {
  MgCa *ca;       /* the trusted collection's root: the partner's certificates */
  MgCa *stranger; /* a CA the gateway does not trust */
  char *dir;
} fx;

/* crlf - @text with CRLF line ends (transfer full) */
static char *
crlf (const char *text)
{
  g_autoptr (GString) s = g_string_new (text);

  g_string_replace (s, "\r\n", "\n", 0);
  g_string_replace (s, "\n", "\r\n", 0);
  return g_string_free (g_steal_pointer (&s), FALSE);
}

/* signed_mail - a message as Thunderbird sends it: multipart/signed, application/pkcs7-signature smime.p7s (base64
 * in 76-column lines), signed by @ca's @signer with the certificates @extra (a PEM file, or NULL) in the set; From
 * @from. @tamper: the body is changed after signing (a signature that fails). */
static char *
signed_mail (MgCa *ca, const char *signer, const char *extra, const char *from, gboolean tamper)
{
  const char *entity = "Content-Type: text/plain; charset=UTF-8; format=flowed\n"
                       "Content-Transfer-Encoding: 7bit\n\nHello from the partner.\n";
  g_autofree char *canon = crlf (entity);
  g_autofree char *crt = mg_ca_path (ca, signer, ".pem"), *key = mg_ca_path (ca, signer, ".key");
  g_autofree char *der = NULL, *b64 = NULL, *body = NULL, *msg = NULL;
  g_autoptr (GString) lines = g_string_new (NULL);
  gsize n = 0;

  if (extra != NULL)
    der = mg_ca_openssl (ca, canon, strlen (canon), &n, "cms", "-sign", "-binary", "-outform", "DER", "-md", "sha256",
                         "-signer", crt, "-inkey", key, "-certfile", extra, NULL);
  else
    der = mg_ca_openssl (ca, canon, strlen (canon), &n, "cms", "-sign", "-binary", "-outform", "DER", "-md", "sha256",
                         "-signer", crt, "-inkey", key, NULL);
  g_assert_nonnull (der);
  b64 = g_base64_encode ((const guchar *) der, n);
  for (gsize i = 0; i < strlen (b64); i += 76)
    g_string_append_printf (lines, "%.76s\n", b64 + i);
  body = g_strdup (entity);
  if (tamper)
    body[strlen (body) - 3] = 'X';
  msg = g_strdup_printf ("From: Partner <%s>\nTo: <" LOCAL ">\nSubject: signed\nMessage-ID: <s1@partner.example>\n"
                         "MIME-Version: 1.0\nUser-Agent: Mozilla Thunderbird\n"
                         "Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256;\n"
                         " boundary=\"------------ms010203040506070809000102\"\n\n"
                         "This is a cryptographically signed message in MIME format.\n\n"
                         "--------------ms010203040506070809000102\n%s\n"
                         "--------------ms010203040506070809000102\n"
                         "Content-Type: application/pkcs7-signature; name=\"smime.p7s\"\n"
                         "Content-Transfer-Encoding: base64\n"
                         "Content-Disposition: attachment; filename=\"smime.p7s\"\n"
                         "Content-Description: S/MIME Cryptographic Signature\n\n%s\n"
                         "--------------ms010203040506070809000102--\n",
                         from, body, lines->str);
  return crlf (msg);
}

/* store_conf - a new X.509 store with ca/root.pem only, and a configuration for it; returns the configuration's
 * path, the store's in @store */
static char *
store_conf (const char *name, gboolean harvest, char **store)
{
  g_autofree char *dir = g_build_filename (fx.dir, name, NULL);
  g_autofree char *text = NULL, *log = NULL;

  g_mkdir (dir, 0700);
  *store = mg_ca_store (fx.ca, dir, (const char *const[]){ NULL }, (const char *const[]){ NULL });
  log = g_build_filename (dir, "log.json", NULL);
  text = g_strdup_printf ("[gateway]\nx509-store = %s\ngnupg-home = none\nlog = json:%s\n%s"
                          "[address " PARTNER "]\nencrypt = required\nform = smime\n",
                          *store, log, harvest ? "harvest = smime\n" : "");
  return mg_test_write (dir, "mimegate.conf", text, -1);
}

/* harvested - the names in STORE/harvested (none when it does not exist) */
static GPtrArray *
harvested (const char *store)
{
  g_autofree char *dir = g_build_filename (store, "harvested", NULL);
  g_autoptr (GDir) d = g_dir_open (dir, 0, NULL);
  GPtrArray *names = g_ptr_array_new_with_free_func (g_free);
  const char *n;

  while (d != NULL && (n = g_dir_read_name (d)) != NULL)
    g_ptr_array_add (names, g_strdup (n));
  return names;
}

/* fingerprint - NAME.pem's SHA-256 fingerprint as openssl prints it, without colons */
static char *
fingerprint (MgCa *ca, const char *name)
{
  g_autofree char *crt = mg_ca_path (ca, name, ".pem");
  g_autofree char *out =
    mg_ca_openssl (ca, NULL, 0, NULL, "x509", "-in", crt, "-noout", "-fingerprint", "-sha256", NULL);
  g_autoptr (GString) s = NULL;

  g_assert_nonnull (out);
  s = g_string_new (strchr (out, '=') + 1);
  g_string_replace (s, ":", "", 0);
  return g_strstrip (g_string_free (g_steal_pointer (&s), FALSE));
}

/* filter - `mimegate filter --stdout` of @msg from @sender to @rcpt */
static void
filter (MgRun *run, const char *conf, const char *msg, const char *sender, const char *rcpt)
{
  g_assert_true (
    mg_test_runf (run, msg, mg_test_mimegate (), "filter", "-c", conf, "--stdout", "-f", sender, "--", rcpt, NULL));
}

/* test_reply - a signed message from the partner through the filter, then the reply to the partner is S/MIME that
 * openssl opens with the partner's key; keys names the certificate harvested; no second file, no temporary file */
static void
test_reply (void)
{
  g_autofree char *store = NULL, *conf = store_conf ("reply", TRUE, &store);
  g_autofree char *msg = signed_mail (fx.ca, "partner", NULL, PARTNER, FALSE);
  g_autofree char *fpr = fingerprint (fx.ca, "partner"), *want = g_strconcat (fpr, ".pem", NULL);
  g_autofree char *key = mg_ca_path (fx.ca, "partner", ".key"), *crt = mg_ca_path (fx.ca, "partner", ".pem");
  g_autofree char *file = NULL, *plain = NULL, *kept = NULL, *orig = NULL, *log = NULL, *logpath = NULL;
  const char *reply = "From: <" LOCAL ">\r\nTo: <" PARTNER ">\r\nSubject: re\r\n\r\nThe reply, secret 4711\r\n";
  g_autoptr (GPtrArray) names = NULL;
  struct stat st;
  MgRun run;

  /* before: the partner has no certificate here, and the policy requires encryption */
  filter (&run, conf, reply, LOCAL, PARTNER);
  g_assert_cmpint (run.status, !=, 0);
  g_assert_true (g_str_has_prefix (run.out, "5.7.1") || strstr (run.err, "5.7.1") != NULL);
  mg_run_clear (&run);
  /* the address index is built now, without the partner: adding harvested/FPR.pem must make it stale */
  g_assert_true (mg_test_runf (&run, NULL, mg_test_mimegate (), "keys", "-c", conf, "--index", PARTNER, NULL));
  g_assert_cmpint (run.status, ==, 1);
  mg_run_clear (&run);

  filter (&run, conf, msg, PARTNER, LOCAL);
  g_assert_cmpint (run.status, ==, 0);
  g_assert_nonnull (strstr (run.out, "smime=pass"));
  g_assert_nonnull (strstr (run.out, "Hello from the partner."));
  mg_run_clear (&run);
  names = harvested (store);
  g_assert_cmpuint (names->len, ==, 1);
  g_assert_cmpstr (g_ptr_array_index (names, 0), ==, want);
  file = g_build_filename (store, "harvested", want, NULL);
  g_assert_cmpint (g_stat (file, &st), ==, 0);
  g_assert_cmpint (st.st_mode & 0777, ==, 0600);
  /* the certificate and nothing else: no key */
  kept = mg_test_read (file, NULL);
  g_assert_null (strstr (kept, "PRIVATE"));
  {
    gsize alen = 0, blen = 0;
    g_autofree char *a = mg_ca_openssl (fx.ca, NULL, 0, &alen, "x509", "-in", file, "-outform", "DER", NULL);
    orig = mg_ca_openssl (fx.ca, NULL, 0, &blen, "x509", "-in", crt, "-outform", "DER", NULL);
    g_assert_cmpmem (a, alen, orig, blen);
  }
  logpath = g_build_filename (store, "..", "log.json", NULL);
  log = mg_test_read (logpath, NULL);
  g_assert_nonnull (strstr (log, "harvested X.509 certificate"));
  g_assert_nonnull (strstr (log, fpr));

  /* the same message again: the same one file */
  filter (&run, conf, msg, PARTNER, LOCAL);
  g_assert_cmpint (run.status, ==, 0);
  mg_run_clear (&run);
  g_ptr_array_unref (names);
  names = harvested (store);
  g_assert_cmpuint (names->len, ==, 1);

  /* the reply: S/MIME to the harvested certificate */
  filter (&run, conf, reply, LOCAL, PARTNER);
  g_assert_cmpint (run.status, ==, 0);
  g_assert_nonnull (strstr (run.out, "application/pkcs7-mime"));
  plain = mg_ca_openssl (fx.ca, run.out, run.out_len, NULL, "cms", "-decrypt", "-recip", crt, "-inkey", key, NULL);
  g_assert_nonnull (plain);
  g_assert_nonnull (strstr (plain, "The reply, secret 4711"));
  mg_run_clear (&run);

  /* keys names it as harvested, through the index as the filter reads it and through the whole read */
  g_assert_true (mg_test_runf (&run, NULL, mg_test_mimegate (), "keys", "-c", conf, "--index", PARTNER, NULL));
  g_assert_cmpint (run.status, ==, 0);
  g_assert_nonnull (strstr (run.out, fpr));
  g_assert_nonnull (strstr (run.out, "harvested from a verified signature"));
  mg_run_clear (&run);
  g_assert_true (mg_test_runf (&run, NULL, mg_test_mimegate (), "keys", "-c", conf, "--json", PARTNER, NULL));
  g_assert_cmpint (run.status, ==, 0);
  {
    g_autoptr (JsonParser) p = json_parser_new ();
    JsonObject *x509;
    g_assert_true (json_parser_load_from_data (p, run.out, -1, NULL));
    x509 = json_object_get_object_member (
      json_array_get_object_element (json_node_get_array (json_parser_get_root (p)), 0), "x509");
    g_assert_cmpstr (json_object_get_string_member (x509, "fingerprint"), ==, fpr);
    g_assert_true (json_object_get_boolean_member (x509, "harvested"));
    g_assert_true (g_str_has_prefix (json_object_get_string_member (x509, "file"), "harvested/"));
  }
  mg_run_clear (&run);
}

/* test_convert - `mimegate convert` harvests as the filter does */
static void
test_convert (void)
{
  g_autofree char *store = NULL, *conf = store_conf ("convert", TRUE, &store);
  g_autofree char *msg = signed_mail (fx.ca, "partner", NULL, PARTNER, FALSE);
  g_autofree char *file = mg_test_write (fx.dir, "convert.eml", msg, -1);
  g_autofree char *fpr = fingerprint (fx.ca, "partner"), *want = g_strconcat (fpr, ".pem", NULL);
  g_autoptr (GPtrArray) names = NULL;
  MgRun run;

  g_assert_true (
    mg_test_runf (&run, NULL, mg_test_mimegate (), "convert", "-c", conf, "--to", "keep", "-r", LOCAL, file, NULL));
  g_assert_cmpint (run.status, ==, 0);
  mg_run_clear (&run);
  names = harvested (store);
  g_assert_cmpuint (names->len, ==, 1);
  g_assert_cmpstr (g_ptr_array_index (names, 0), ==, want);
}

/* test_set - a signer whose own certificate only signs: the encryption certificate for the same address in the
 * signature's set is kept, one for another address in the set is not */
static void
test_set (void)
{
  g_autofree char *store = NULL, *conf = store_conf ("set", TRUE, &store);
  g_autofree char *set = NULL, *msg = NULL, *a = NULL, *b = NULL, *want = NULL, *enc_fpr = NULL;
  g_autofree char *enc = mg_ca_path (fx.ca, "partner-enc", ".pem"), *other = mg_ca_path (fx.ca, "other", ".pem");
  g_autoptr (GPtrArray) names = NULL;
  MgRun run;

  a = mg_test_read (enc, NULL);
  b = mg_test_read (other, NULL);
  set = g_strconcat (a, b, NULL);
  g_free (mg_test_write (fx.dir, "set.pem", set, -1));
  g_free (set);
  set = g_build_filename (fx.dir, "set.pem", NULL);
  msg = signed_mail (fx.ca, "partner-sign", set, PARTNER, FALSE);
  filter (&run, conf, msg, PARTNER, LOCAL);
  g_assert_cmpint (run.status, ==, 0);
  g_assert_nonnull (strstr (run.out, "smime=pass"));
  mg_run_clear (&run);
  names = harvested (store);
  enc_fpr = fingerprint (fx.ca, "partner-enc");
  want = g_strconcat (enc_fpr, ".pem", NULL);
  g_assert_cmpuint (names->len, ==, 1);
  g_assert_cmpstr (g_ptr_array_index (names, 0), ==, want);
}

/* test_nothing - what must harvest nothing: harvested/ stays empty (absent), and the mail is delivered all the same */
static void
test_nothing (void)
{
  static const struct {
    const char *name;
    gboolean stranger, tamper, harvest;
    const char *from;
    const char *stamp;
  } cases[] = {
    { "bad-signature", FALSE, TRUE, TRUE, PARTNER, "smime=fail" },
    { "untrusted", TRUE, FALSE, TRUE, PARTNER, "smime=neutral" },
    { "other-from", FALSE, FALSE, TRUE, "ceo@partner.example", "smime=pass" },
    { "two-from", FALSE, FALSE, TRUE, PARTNER ">, <ceo@partner.example", "smime=pass" },
    { "off", FALSE, FALSE, FALSE, PARTNER, "smime=pass" },
  };

  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++) {
    g_autofree char *store = NULL, *conf = store_conf (cases[i].name, cases[i].harvest, &store);
    g_autofree char *msg =
      signed_mail (cases[i].stranger ? fx.stranger : fx.ca, "partner", NULL, cases[i].from, cases[i].tamper);
    g_autoptr (GPtrArray) names = NULL;
    MgRun run;

    g_test_message ("case %s", cases[i].name);
    filter (&run, conf, msg, PARTNER, LOCAL);
    g_assert_cmpint (run.status, ==, 0);
    g_assert_nonnull (strstr (run.out, cases[i].stamp));
    g_assert_nonnull (strstr (run.out, "Hello from the partne"));
    mg_run_clear (&run);
    names = harvested (store);
    g_assert_cmpuint (names->len, ==, 0);
  }
}

/* test_unwritable - harvested/ that cannot be written (a symbolic link to a directory that is gone, as a mount that
 * is not there: as root a mode would not stop the write): a note in the log, and the message is delivered as without
 * harvesting */
static void
test_unwritable (void)
{
  g_autofree char *store = NULL, *conf = store_conf ("unwritable", TRUE, &store);
  g_autofree char *msg = signed_mail (fx.ca, "partner", NULL, PARTNER, FALSE);
  g_autofree char *log = NULL, *logpath = NULL;
  MgRun run;

  g_autofree char *link = g_build_filename (store, "harvested", NULL);

  g_assert_cmpint (symlink ("/nonexistent/mimegate-harvested", link), ==, 0);
  filter (&run, conf, msg, PARTNER, LOCAL);
  g_assert_cmpint (run.status, ==, 0);
  g_assert_nonnull (strstr (run.out, "smime=pass"));
  g_assert_cmpstr (run.err, ==, "");
  mg_run_clear (&run);
  logpath = g_build_filename (store, "..", "log.json", NULL);
  log = mg_test_read (logpath, NULL);
  g_assert_nonnull (strstr (log, "no certificate harvested"));
  g_assert_nonnull (strstr (log, "\"outcome\":\"delivered\""));
}

/* settled - a generation of @conf that is not stale at once: a load that (re)builds the X.509 address index in the
 * store changes the store directory it watches, so the load after that is the one to compare with */
static MgGeneration *
settled (const char *conf)
{
  for (int i = 0; i < 3; i++) {
    g_autoptr (GError) error = NULL;
    MgGeneration *gen = mg_generation_load (conf, TRUE, &error);
    g_assert_no_error (error);
    if (!mg_generation_stale (gen))
      return gen;
    mg_generation_unref (gen);
  }
  g_assert_not_reached ();
}

/* test_generation - serve's generation is stale once a certificate is added to harvested/ (made by harvesting or
 * renamed there), whether harvested/ existed before or not */
static void
test_generation (void)
{
  g_autofree char *store = NULL, *conf = store_conf ("generation", TRUE, &store);
  g_autofree char *dir = g_build_filename (store, "harvested", NULL);
  g_autofree char *crt = mg_ca_path (fx.ca, "partner", ".pem"), *pem = mg_test_read (crt, NULL);
  MgGeneration *gen = settled (conf);

  g_assert_cmpint (g_mkdir (dir, 0700), ==, 0);
  g_assert_true (mg_generation_stale (gen));
  mg_generation_unref (gen);
  gen = settled (conf);
  g_free (mg_test_write (dir, "X.pem", pem, -1));
  g_assert_true (mg_generation_stale (gen));
  mg_generation_unref (gen);
}

static void
setup (void)
{
  fx.dir = mg_test_tmpdir ();
  fx.ca = mg_ca_new ();
  fx.stranger = mg_ca_new ();
  g_assert_true (mg_ca_add_leaf (fx.ca, "partner", PARTNER));
  g_assert_true (mg_ca_add_leaf (fx.stranger, "partner", PARTNER));
  g_assert_true (
    mg_ca_add_leaf_dated (fx.ca, "root", "partner-sign", PARTNER, "digitalSignature,nonRepudiation", NULL, NULL, 30));
  g_assert_true (mg_ca_add_leaf_dated (fx.ca, "root", "partner-enc", PARTNER, "keyEncipherment", NULL, NULL, 30));
  g_assert_true (mg_ca_add_leaf (fx.ca, "other", "other@partner.example"));
}

static void
teardown (void)
{
  mg_ca_free (fx.ca);
  mg_ca_free (fx.stranger);
  mg_test_rmtree (fx.dir);
  g_free (fx.dir);
}

int
main (int argc, char **argv)
{
  int status;

  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/harvest/reply", test_reply);
  g_test_add_func ("/harvest/convert", test_convert);
  g_test_add_func ("/harvest/set", test_set);
  g_test_add_func ("/harvest/nothing", test_nothing);
  g_test_add_func ("/harvest/unwritable", test_unwritable);
  g_test_add_func ("/harvest/generation", test_generation);
  setup ();
  status = g_test_run ();
  teardown ();
  return status;
}
