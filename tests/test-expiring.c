/* test-expiring.c - `mimegate keys --expiring DAYS [--json]` (issue 16): every key and certificate of every local
 * store that ends within DAYS (or has ended), soonest first, with exit 1 when there is one and 0 when none, over real
 * stores: a GnuPG home with keys made by gpg --quick-gen-key with short lifetimes (one made in 2020 with
 * --faked-system-time, long expired) and the gateway's own secret key, and an X.509 store with certificates from the
 * test CA in certs/, harvested/ and private/. JSON is read back with json-glib. */
#include "config.h"

#include <string.h>

#include <glib/gstdio.h>
#include <json-glib/json-glib.h>

#include "testutil.h"

static struct {
  MgGpg *gpg;     /* the gateway's home: its own key, and the partners' public keys */
  MgGpg *partner; /* where the partners' keys were made */
  MgCa *ca;
  char *dir, *store, *conf;
  char *fpr_gateway, *fpr_soon, *fpr_later, *fpr_old;
} fx;

/* fingerprint_of - the primary fingerprint of <@address> in @gpg */
static char *
fingerprint_of (MgGpg *gpg, const char *address)
{
  char *fpr = mg_gpg_fingerprint (gpg, address);

  g_assert_nonnull (fpr);
  return fpr;
}

/* partner_key - a key for <@address> in the partner's home that ends after @expire (gpg's notation), made at @when
 * (NULL: now), its public half imported into the gateway's home */
static char *
partner_key (const char *address, const char *expire, const char *when)
{
  g_autofree char *uid = g_strdup_printf ("Partner <%s>", address);
  g_autofree char *out = NULL, *pub = NULL, *spec = g_strdup_printf ("<%s>", address);

  if (when != NULL)
    out = mg_gpg (fx.partner, NULL, 0, "--faked-system-time", when, "--quick-gen-key", uid, "future-default", "default",
                  expire, NULL);
  else
    out = mg_gpg (fx.partner, NULL, 0, "--quick-gen-key", uid, "future-default", "default", expire, NULL);
  g_assert_nonnull (out);
  pub = mg_gpg (fx.partner, NULL, 0, "--armor", "--export", spec, NULL);
  g_assert_nonnull (pub);
  g_free (out);
  out = mg_gpg (fx.gpg, pub, strlen (pub), "--import", NULL);
  g_assert_nonnull (out);
  return fingerprint_of (fx.partner, address);
}

/* leaf - a certificate from the test CA, copied into the store's @sub/ (with its key 0600 for private/) */
static void
leaf (const char *name, const char *address, const char *sub, const char *start, const char *end, int days)
{
  g_autofree char *src = mg_ca_path (fx.ca, name, ".pem"), *pem = NULL, *fname = g_strconcat (name, ".pem", NULL);
  g_autofree char *dir = g_build_filename (fx.store, sub, NULL);

  g_assert_true (
    mg_ca_add_leaf_dated (fx.ca, "root", name, address, "digitalSignature,keyEncipherment", start, end, days));
  g_mkdir (dir, 0700);
  pem = mg_test_read (src, NULL);
  g_free (mg_test_write (dir, fname, pem, -1));
  if (strcmp (sub, "private") == 0) {
    g_autofree char *ksrc = mg_ca_path (fx.ca, name, ".key"), *key = mg_test_read (ksrc, NULL);
    g_autofree char *kname = g_strconcat (name, ".key", NULL), *kpath = mg_test_write (dir, kname, key, -1);
    g_chmod (kpath, 0600);
  }
}

/* expiring - `mimegate keys -c CONF --expiring DAYS [--json]` */
static void
expiring (MgRun *run, const char *conf, const char *days, gboolean json)
{
  g_assert_true (mg_test_runf (run, NULL, mg_test_mimegate (), "keys", "-c", conf, "--expiring", days,
                               json ? "--json" : NULL, NULL));
}

/* test_order - within 30 days: the expired ones first, then soonest first, each with address, store and id; the
 * ones that end later or never are not listed */
static void
test_order (void)
{
  static const struct {
    const char *store;
    const char *address;
    gboolean expired;
    const char *source; /* (nullable): ends with */
  } want[] = {
    { "openpgp", "old@partner.example", TRUE, NULL },
    { "certs", "gone@partner.example", TRUE, "certs/gone.pem" },
    { "openpgp", "soon@partner.example", FALSE, NULL },
    { "certs", "x509soon@partner.example", FALSE, "certs/x509soon.pem" },
    { "openpgp", "gateway@ours.example", FALSE, NULL },
    { "openpgp-secret", "gateway@ours.example", FALSE, NULL },
    { "harvested", "harvested@partner.example", FALSE, "harvested/harvested.pem" },
    { "openpgp", "later@partner.example", FALSE, NULL },
    { "private", "own@ours.example", FALSE, "private/own.key" },
  };
  g_autoptr (JsonParser) p = json_parser_new ();
  g_autoptr (GError) error = NULL;
  JsonArray *list;
  gint64 last = G_MININT64;
  MgRun run;

  expiring (&run, fx.conf, "30", TRUE);
  g_assert_cmpstr (run.err, ==, "");
  g_assert_cmpint (run.status, ==, 1);
  g_assert_true (json_parser_load_from_data (p, run.out, -1, &error));
  g_assert_no_error (error);
  list = json_node_get_array (json_parser_get_root (p));
  g_assert_cmpuint (json_array_get_length (list), ==, G_N_ELEMENTS (want));
  for (guint i = 0; i < G_N_ELEMENTS (want); i++) {
    JsonObject *o = json_array_get_object_element (list, i);
    g_autoptr (GDateTime) t = g_date_time_new_from_iso8601 (json_object_get_string_member (o, "expires"), NULL);
    const char *fpr = json_object_get_string_member (o, "fingerprint");
    g_test_message ("entry %u: %s %s", i, json_object_get_string_member (o, "store"),
                    json_object_get_string_member (o, "address"));
    g_assert_cmpstr (json_object_get_string_member (o, "store"), ==, want[i].store);
    g_assert_cmpstr (json_object_get_string_member (o, "address"), ==, want[i].address);
    g_assert_cmpint (json_object_get_boolean_member (o, "expired"), ==, want[i].expired);
    if (want[i].expired)
      g_assert_cmpint (json_object_get_int_member (o, "days"), <, 0);
    else
      g_assert_cmpint (json_object_get_int_member (o, "days"), >=, 0);
    g_assert_nonnull (t);
    g_assert_cmpint (g_date_time_to_unix (t), >=, last);
    last = g_date_time_to_unix (t);
    if (want[i].source != NULL) {
      g_assert_true (g_str_has_suffix (json_object_get_string_member (o, "source"), want[i].source));
      g_assert_true (g_str_has_prefix (json_object_get_string_member (o, "serial"), "0x"));
      g_assert_cmpuint (strlen (fpr), ==, 64);
    } else {
      g_assert_cmpstr (json_object_get_string_member (o, "source"), ==, fx.gpg->home);
      g_assert_true (json_object_get_null_member (o, "serial"));
    }
  }
  g_assert_cmpstr (json_object_get_string_member (json_array_get_object_element (list, 0), "fingerprint"), ==,
                   fx.fpr_old);
  g_assert_cmpstr (json_object_get_string_member (json_array_get_object_element (list, 2), "fingerprint"), ==,
                   fx.fpr_soon);
  g_assert_cmpstr (json_object_get_string_member (json_array_get_object_element (list, 4), "fingerprint"), ==,
                   fx.fpr_gateway);
  g_assert_cmpstr (json_object_get_string_member (json_array_get_object_element (list, 7), "fingerprint"), ==,
                   fx.fpr_later);
  g_assert_null (strstr (run.out, "far@partner.example"));
  g_assert_null (strstr (run.out, "never@partner.example"));
  g_assert_null (strstr (run.out, "x509far@partner.example"));
  mg_run_clear (&run);

  /* the text: one entry per two lines, in the same order */
  expiring (&run, fx.conf, "30", FALSE);
  g_assert_cmpint (run.status, ==, 1);
  {
    const char *a = strstr (run.out, "old@partner.example"), *b = strstr (run.out, "soon@partner.example");
    const char *c = strstr (run.out, "later@partner.example");
    g_assert_nonnull (a);
    g_assert_nonnull (b);
    g_assert_nonnull (c);
    g_assert_true (a < b && b < c);
    g_assert_nonnull (strstr (run.out, "  expired  OpenPGP public key: old@partner.example"));
    g_assert_nonnull (strstr (run.out, "X.509 certificate harvested from a verified signature"));
    g_assert_nonnull (strstr (run.out, fx.fpr_soon));
    g_assert_nonnull (strstr (run.out, "expires in 3 days  OpenPGP public key: soon@partner.example"));
  }
  mg_run_clear (&run);

  /* within 0 days: the expired ones only; within 500: all that end */
  expiring (&run, fx.conf, "0", TRUE);
  g_assert_cmpint (run.status, ==, 1);
  {
    g_autoptr (JsonParser) q = json_parser_new ();
    g_assert_true (json_parser_load_from_data (q, run.out, -1, NULL));
    g_assert_cmpuint (json_array_get_length (json_node_get_array (json_parser_get_root (q))), ==, 2);
  }
  mg_run_clear (&run);
  expiring (&run, fx.conf, "500", TRUE);
  g_assert_cmpint (run.status, ==, 1);
  g_assert_nonnull (strstr (run.out, "far@partner.example"));
  g_assert_nonnull (strstr (run.out, "x509far@partner.example"));
  g_assert_null (strstr (run.out, "never@partner.example"));
  mg_run_clear (&run);
}

/* test_none - nothing ends within the window: exit 0, an empty list */
static void
test_none (void)
{
  g_autofree char *store = g_build_filename (fx.dir, "far", NULL), *certs = g_build_filename (store, "certs", NULL);
  g_autofree char *ca = g_build_filename (store, "ca", NULL), *text = NULL, *conf = NULL;
  g_autofree char *root = mg_ca_path (fx.ca, "root", ".pem"), *far = mg_ca_path (fx.ca, "x509far", ".pem");
  g_autofree char *a = mg_test_read (root, NULL), *b = mg_test_read (far, NULL);
  MgRun run;

  g_mkdir_with_parents (certs, 0700);
  g_mkdir_with_parents (ca, 0700);
  g_free (mg_test_write (ca, "root.pem", a, -1));
  g_free (mg_test_write (certs, "far.pem", b, -1));
  text = g_strdup_printf ("[gateway]\ngnupg-home = none\nx509-store = %s\n", store);
  conf = mg_test_write (fx.dir, "none.conf", text, -1);
  expiring (&run, conf, "30", TRUE);
  g_assert_cmpint (run.status, ==, 0);
  g_assert_cmpstr (g_strstrip (run.out), ==, "[]");
  mg_run_clear (&run);
  expiring (&run, conf, "30", FALSE);
  g_assert_cmpint (run.status, ==, 0);
  g_assert_cmpstr (run.out, ==, "");
  mg_run_clear (&run);
  expiring (&run, conf, "200", FALSE);
  g_assert_cmpint (run.status, ==, 1);
  g_assert_nonnull (strstr (run.out, "x509far@partner.example"));
  mg_run_clear (&run);
}

/* test_errors - a store that cannot be read: 75 naming it (as `keys ADDR`), never 0 or 1; usage mistakes: 64 */
static void
test_errors (void)
{
  g_autofree char *missing = g_build_filename (fx.dir, "no-such-store", NULL);
  g_autofree char *text = g_strdup_printf ("[gateway]\ngnupg-home = none\nx509-store = %s\n", missing);
  g_autofree char *conf = mg_test_write (fx.dir, "missing.conf", text, -1);
  MgRun run;

  expiring (&run, conf, "30", FALSE);
  g_assert_cmpint (run.status, ==, 75);
  g_assert_nonnull (strstr (run.err, missing));
  g_assert_cmpstr (run.out, ==, "");
  mg_run_clear (&run);
  expiring (&run, fx.conf, "soon", FALSE);
  g_assert_cmpint (run.status, ==, 64);
  g_assert_nonnull (strstr (run.err, "--expiring"));
  mg_run_clear (&run);
  g_assert_true (mg_test_runf (&run, NULL, mg_test_mimegate (), "keys", "-c", fx.conf, "--expiring", "30",
                               "soon@partner.example", NULL));
  g_assert_cmpint (run.status, ==, 64);
  mg_run_clear (&run);
  g_assert_true (mg_test_runf (&run, NULL, mg_test_mimegate (), "keys", "--help", NULL));
  g_assert_cmpint (run.status, ==, 0);
  g_assert_nonnull (strstr (run.out, "--expiring=DAYS"));
  mg_run_clear (&run);
}

static void
setup (void)
{
  g_autofree char *text = NULL, *out = NULL;

  fx.dir = mg_test_tmpdir ();
  fx.gpg = mg_gpg_new ();
  fx.partner = mg_gpg_new ();
  fx.ca = mg_ca_new ();
  out = mg_gpg (fx.gpg, NULL, 0, "--quick-gen-key", "Gateway <gateway@ours.example>", "future-default", "default",
                "10d", NULL);
  g_assert_nonnull (out);
  fx.fpr_gateway = fingerprint_of (fx.gpg, "gateway@ours.example");
  fx.fpr_soon = partner_key ("soon@partner.example", "3d", NULL);
  fx.fpr_later = partner_key ("later@partner.example", "20d", NULL);
  g_free (partner_key ("far@partner.example", "400d", NULL));
  g_free (partner_key ("never@partner.example", "never", NULL));
  fx.fpr_old = partner_key ("old@partner.example", "10d", "20200101T000000");

  fx.store = g_build_filename (fx.dir, "x509", NULL);
  g_free (mg_ca_store (fx.ca, fx.dir, (const char *const[]){ NULL }, (const char *const[]){ NULL }));
  leaf ("gone", "gone@partner.example", "certs", "20200101000000Z", "20200201000000Z", 0);
  leaf ("x509soon", "x509soon@partner.example", "certs", NULL, NULL, 5);
  leaf ("x509far", "x509far@partner.example", "certs", NULL, NULL, 100);
  leaf ("harvested", "harvested@partner.example", "harvested", NULL, NULL, 15);
  leaf ("own", "own@ours.example", "private", NULL, NULL, 25);
  text =
    g_strdup_printf ("[gateway]\ngnupg-home = %s\nx509-store = %s\ntrust-model = always\n", fx.gpg->home, fx.store);
  fx.conf = mg_test_write (fx.dir, "mimegate.conf", text, -1);
}

static void
teardown (void)
{
  mg_gpg_free (fx.gpg);
  mg_gpg_free (fx.partner);
  mg_ca_free (fx.ca);
  mg_test_rmtree (fx.dir);
  g_free (fx.dir);
  g_free (fx.store);
  g_free (fx.conf);
  g_free (fx.fpr_gateway);
  g_free (fx.fpr_soon);
  g_free (fx.fpr_later);
  g_free (fx.fpr_old);
}

int
main (int argc, char **argv)
{
  int status;

  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/expiring/order", test_order);
  g_test_add_func ("/expiring/none", test_none);
  g_test_add_func ("/expiring/errors", test_errors);
  setup ();
  status = g_test_run ();
  teardown ();
  return status;
}
