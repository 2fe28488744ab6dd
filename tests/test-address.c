/* test-address.c - addresses match as a whole without regard to case (issue 11, item 5), in every matcher: the
 * lookup key itself (mg_keys_address_key), OpenPGP keys in a real GnuPG home (the direct lookup of `mimegate keys` and
 * `convert`, and the filter's address index, also when an index of the previous format is found), X.509 certificates
 * of a real openssl CA, the policy groups [address] and [domain], and the message's own To/Cc for blind copies.
 * Fingerprints are gpg's and openssl's own; encryption results are opened by gpg. No substring ever matches. */
#include "config.h"

#include <string.h>

#include <glib/gstdio.h>

#include "keys.h"
#include "testutil.h"

#define MARKER "address-marker-5f3c"
/* jösé written composed (NFC) and decomposed (NFD: o + U+0308, e + U+0301) */
#define JOSE_NFC "j\xc3\xb6s\xc3\xa9@example.org"
#define JOSE_NFD "jo\xcc\x88se\xcc\x81@example.org"
#define JOSE_UPPER "J\xc3\x96S\xc3\x89@example.org"

typedef struct {
  MgGpg *gpg;
  MgCa *ca;
  char *dir;
  char *store;
  char *conf;
  char *message; /* path of a plain message */
} Fixture;

static Fixture fx;

/* gpg_utf8 - gpg in the fixture's home told that its arguments and output are UTF-8 (mg_gpg runs it with LC_ALL=C,
 * where it would take "jösé" for Latin-1 and store it encoded twice) */
#define gpg_utf8(...) mg_gpg (fx.gpg, NULL, 0, "--display-charset", "utf-8", __VA_ARGS__, NULL)

/* listed - field @n of @record for the key whose user ID is exactly "Test <@address>" */
static char *
listed (const char *address, const char *record, guint n)
{
  g_autofree char *spec = g_strdup_printf ("=Test <%s>", address);
  g_autofree char *out = gpg_utf8 ("--with-colons", "--list-keys", spec);
  char *field = out ? mg_test_colon_field (out, record, n) : NULL;

  g_assert_nonnull (field);
  return field;
}

static char *
fpr_of (const char *address)
{
  return listed (address, "fpr", 9);
}

/* subkey_of - the long key id of @address's encryption subkey */
static char *
subkey_of (const char *address)
{
  return listed (address, "sub", 4);
}

/* add_key - an Ed25519 key with a Curve25519 encryption subkey for the user ID "Test <@address>", as written */
static void
add_key (const char *address)
{
  g_autofree char *uid = g_strdup_printf ("Test <%s>", address);
  g_autofree char *a = gpg_utf8 ("--quick-gen-key", uid, "ed25519", "sign", "never");
  g_autofree char *fpr = NULL, *b = NULL;

  g_assert_nonnull (a);
  fpr = fpr_of (address);
  b = gpg_utf8 ("--quick-add-key", fpr, "cv25519", "encr", "never");
  g_assert_nonnull (b);
}

/* cert_fpr - a leaf's SHA-256 fingerprint as openssl prints it, without colons */
static char *
cert_fpr (const char *name)
{
  g_autofree char *p = mg_ca_path (fx.ca, name, ".pem");
  g_autofree char *out =
    mg_ca_openssl (fx.ca, NULL, 0, NULL, "x509", "-in", p, "-noout", "-fingerprint", "-sha256", NULL);
  g_autoptr (GString) s = NULL;

  g_assert_nonnull (out);
  s = g_string_new (g_strstrip (strchr (out, '=') + 1));
  g_string_replace (s, ":", "", 0);
  return g_string_free (g_steal_pointer (&s), FALSE);
}

static void
setup (void)
{
  const char *keys[] = {
    "alice@example.org",
    "Carol@Example.org",
    JOSE_NFC,
    "\xc3\x85SA@Example.org", /* ÅSA: upper-case UTF-8 in the user ID */
    "J\xc3\x96RG@B\xc3\x9c"
    "CHER.example", /* JÖRG@BÜCHER.example: a UTF-8 domain too */
    "stra\xc3\x9f"
    "e@example.org",          /* straße */
    "alice@example.org.evil", /* decoys: alice's address is a substring of theirs */
    "xalice@example.org",
    "x" JOSE_NFC,
  };
  g_autofree char *message = NULL;

  fx.gpg = mg_gpg_new ();
  for (gsize i = 0; i < G_N_ELEMENTS (keys); i++)
    add_key (keys[i]);
  fx.ca = mg_ca_new ();
  g_assert_true (mg_ca_add_leaf (fx.ca, "alice", "alice@example.org"));
  g_assert_true (mg_ca_add_leaf (fx.ca, "dora", "Dora@Example.net"));
  g_assert_true (mg_ca_add_leaf (fx.ca, "xalice", "xalice@example.org"));
  fx.dir = mg_test_tmpdir ();
  fx.store = mg_ca_store (fx.ca, fx.dir, (const char *const[]){ "alice", "dora", "xalice", NULL }, NULL);
  {
    g_autofree char *text = g_strdup_printf (
      "[gateway]\ngnupg-home = %s\nx509-store = %s\ntrust-model = always\nauthserv-id = gw.example\ntimeout = 20\n",
      fx.gpg->home, fx.store);
    fx.conf = mg_test_write (fx.dir, "mimegate.conf", text, -1);
  }
  message = g_strdup ("From: Sender <sender@example.net>\n"
                      "To: Alice <alice@example.org>, Carol <Carol@Example.org>\n"
                      "Subject: address matching\n"
                      "Message-ID: <address-test@example.net>\n"
                      "MIME-Version: 1.0\n"
                      "Content-Type: text/plain; charset=utf-8\n"
                      "\n"
                      "Hello " MARKER "\n");
  fx.message = mg_test_write (fx.dir, "plain.eml", message, -1);
}

/* the lookup key: the whole address folded (ASCII, and UTF-8 by NFD, case folding, NFC), everything else refused */
static void
test_key (void)
{
  static const struct {
    const char *address;
    const char *key; /* NULL: not an address */
  } cases[] = {
    { "alice@example.org", "alice@example.org" },
    { "Alice@Example.ORG", "alice@example.org" },
    { "ALICE@EXAMPLE.ORG", "alice@example.org" },
    { JOSE_UPPER, JOSE_NFC },
    { JOSE_NFD, JOSE_NFC },
    { "JO\xcc\x88SE\xcc\x81@EXAMPLE.ORG", JOSE_NFC }, /* upper case, decomposed */
    { "J\xc3\x96RG@B\xc3\x9c"
      "CHER.example",
      "j\xc3\xb6rg@b\xc3\xbc"
      "cher.example" },
    { "STRA\xe1\xba\x9e"
      "E@example.org",
      "stra\xc3\x9f"
      "e@example.org" }, /* capital sharp s: ß */
    { "stra\xc3\x9f"
      "e@example.org",
      "stra\xc3\x9f"
      "e@example.org" },                              /* ß is not "ss" ... */
    { "STRASSE@example.org", "strasse@example.org" }, /* ... so these differ */
    { "\xef\xac\x81"
      "n@example.org",
      "\xef\xac\x81"
      "n@example.org" }, /* the ligature fi stays */
    { "local@sub.Example.ORG", "local@sub.example.org" },
    { "Display <alice@example.org>", NULL },
    { "alice example.org", NULL },
    { "alice", NULL },
    { "@example.org", NULL },
    { "alice@", NULL },
    { "a,b@example.org", NULL },
    { "", NULL },
    { "\xff@example.org", NULL },
  };

  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++) {
    g_autofree char *key = mg_keys_address_key (cases[i].address);
    g_assert_cmpstr (key, ==, cases[i].key);
  }
  /* shown, an address stays as written (a signer in Authentication-Results) */
  {
    g_autofree char *copy = mg_keys_address_copy ("Alice@Example.ORG");
    g_assert_cmpstr (copy, ==, "Alice@Example.ORG");
    g_assert_null (mg_keys_address_copy ("Alice <alice@example.org>"));
  }
  /* the domain key is the address key's domain, for [domain NAME] */
  {
    g_autofree char *a = mg_keys_address_key ("x@B\xc3\x9c"
                                              "CHER.Example");
    g_autofree char *d = mg_keys_domain_key ("b\xc3\xbc"
                                             "cher.EXAMPLE");
    g_assert_cmpstr (strchr (a, '@') + 1, ==, d);
    g_assert_null (mg_keys_domain_key ("a@b"));
    g_assert_null (mg_keys_domain_key (""));
  }
}

/* keys_json - `mimegate keys --json ADDR...`, one line per address: address|openpgp fpr|matched|x509 fpr|matched|
 * number refused ("-" for null), and the exit status */
static char *
keys_json (int *status, const char *const *addresses)
{
  g_autoptr (GPtrArray) argv = g_ptr_array_new ();
  g_auto (GStrv) env = mg_test_env ("LANGUAGE", NULL, "LC_ALL", "C.UTF-8", NULL);
  const char *py[] = {
    "python3", "-c",
    "import json,sys\n"
    "for a in json.load(sys.stdin):\n"
    "  p, x = a['openpgp'] or {}, a['x509'] or {}\n"
    "  print('|'.join([a['address'], p.get('fingerprint', '-'), p.get('matched', '-'),\n"
    "                  x.get('fingerprint', '-'), x.get('matched', '-'), str(len(a['refused']))]))\n",
    NULL
  };
  MgRun r, p;
  char *out;

  g_ptr_array_add (argv, (gpointer) mg_test_mimegate ());
  g_ptr_array_add (argv, (gpointer) "keys");
  g_ptr_array_add (argv, (gpointer) "-c");
  g_ptr_array_add (argv, fx.conf);
  g_ptr_array_add (argv, (gpointer) "--json");
  for (guint i = 0; addresses[i] != NULL; i++)
    g_ptr_array_add (argv, (gpointer) addresses[i]);
  g_ptr_array_add (argv, NULL);
  g_assert_true (mg_test_run (&r, (const char *const *) argv->pdata, (const char *const *) env, NULL, 0));
  g_test_message ("keys --json: %d %s %s", r.status, r.out, r.err);
  *status = r.status;
  g_assert_true (mg_test_run (&p, py, NULL, r.out, r.out_len));
  g_assert_cmpint (p.status, ==, 0);
  out = g_steal_pointer (&p.out);
  mg_run_clear (&p);
  mg_run_clear (&r);
  return out;
}

/* `mimegate keys` finds the key and the certificate of alice@example.org for any case of the address, and the other
 * way round (a user ID or certificate written in capitals for the address in lower case); UTF-8 local parts (and
 * domains) fold as well, composed or not; it shows the address as given and the one that matched */
static void
test_keys_command (void)
{
  g_autofree char *alice = fpr_of ("alice@example.org");
  g_autofree char *carol = fpr_of ("Carol@Example.org");
  g_autofree char *jose = fpr_of (JOSE_NFC);
  g_autofree char *asa = fpr_of ("\xc3\x85SA@Example.org");
  g_autofree char *jorg = fpr_of ("J\xc3\x96RG@B\xc3\x9c"
                                  "CHER.example");
  g_autofree char *strasse = fpr_of ("stra\xc3\x9f"
                                     "e@example.org");
  g_autofree char *alice_cert = cert_fpr ("alice");
  g_autofree char *dora_cert = cert_fpr ("dora");
  const char *const queries[] = {
    "Alice@Example.ORG",
    "ALICE@EXAMPLE.ORG",
    "carol@example.org",
    "dora@example.net",
    "DORA@EXAMPLE.NET",
    JOSE_UPPER,
    JOSE_NFD,
    "\xc3\xa5sa@example.org",
    "j\xc3\xb6rg@b\xc3\xbc"
    "cher.example",
    "STRA\xe1\xba\x9e"
    "E@Example.org",
    "strasse@example.org",
    "lice@example.org",
    "alice@example.or",
    "alice@xample.org",
    NULL,
  };
  g_autofree char *want = g_strdup_printf ("Alice@Example.ORG|%s|alice@example.org|%s|alice@example.org|0\n"
                                           "ALICE@EXAMPLE.ORG|%s|alice@example.org|%s|alice@example.org|0\n"
                                           "carol@example.org|%s|Carol@Example.org|-|-|0\n"
                                           "dora@example.net|-|-|%s|Dora@Example.net|0\n"
                                           "DORA@EXAMPLE.NET|-|-|%s|Dora@Example.net|0\n"
                                           "%s|%s|%s|-|-|0\n"
                                           "%s|%s|%s|-|-|0\n"
                                           "\xc3\xa5sa@example.org|%s|\xc3\x85SA@Example.org|-|-|0\n"
                                           "j\xc3\xb6rg@b\xc3\xbc"
                                           "cher.example|%s|J\xc3\x96RG@B\xc3\x9c"
                                           "CHER.example|-|-|0\n"
                                           "STRA\xe1\xba\x9e"
                                           "E@Example.org|%s|stra\xc3\x9f"
                                           "e@example.org|-|-|0\n"
                                           "strasse@example.org|-|-|-|-|0\n"
                                           "lice@example.org|-|-|-|-|0\n"
                                           "alice@example.or|-|-|-|-|0\n"
                                           "alice@xample.org|-|-|-|-|0\n",
                                           alice, alice_cert, alice, alice_cert, carol, dora_cert, dora_cert,
                                           JOSE_UPPER, jose, JOSE_NFC, JOSE_NFD, jose, JOSE_NFC, asa, jorg, strasse);
  g_autofree char *got = NULL;
  int status;

  got = keys_json (&status, queries);
  g_assert_cmpstr (got, ==, want);
  g_assert_cmpint (status, ==, 1); /* some have none */

  /* the text form: the address as written, then what matched */
  {
    const char *argv[] = { mg_test_mimegate (), "keys", "-c", fx.conf, "Alice@Example.ORG", NULL };
    g_auto (GStrv) env = mg_test_env ("LANGUAGE", NULL, "LC_ALL", "C.UTF-8", NULL);
    g_autofree char *pgp = g_strdup_printf ("  OpenPGP   %s\n", alice);
    g_autofree char *x509 = g_strdup_printf ("  X.509     SHA-256 %s\n", alice_cert);
    MgRun r;
    g_assert_true (mg_test_run (&r, argv, (const char *const *) env, NULL, 0));
    g_test_message ("%s", r.out);
    g_assert_cmpint (r.status, ==, 0);
    g_assert_true (g_str_has_prefix (r.out, "Alice@Example.ORG\n"));
    g_assert_nonnull (strstr (r.out, pgp));
    g_assert_nonnull (strstr (r.out, x509));
    g_assert_nonnull (strstr (r.out, "user ID \"Test <alice@example.org>\"\n            matched address "
                                     "alice@example.org\n"));
    g_assert_nonnull (strstr (r.out, "\n            matched address alice@example.org\n"));
    g_assert_null (strstr (r.out, "refused"));
    mg_run_clear (&r);
  }
}

/* no substring ever matches: the decoys whose addresses contain alice's (or jösé's) are found for their own addresses
 * only, and never appear (not even refused) for alice or jösé; the domain-wide search a UTF-8 address needs brings
 * them to the lookup, which must not count them as candidates */
static void
test_no_substring (void)
{
  g_autofree char *alice = fpr_of ("alice@example.org");
  g_autofree char *jose = fpr_of (JOSE_NFC);
  g_autofree char *evil = fpr_of ("alice@example.org.evil");
  g_autofree char *xalice = fpr_of ("xalice@example.org");
  g_autofree char *xjose = fpr_of ("x" JOSE_NFC);
  g_autofree char *alice_cert = cert_fpr ("alice");
  g_autofree char *xalice_cert = cert_fpr ("xalice");
  const char *const queries[] = { "alice@example.org", "Alice@Example.ORG.evil", "XAlice@example.org",
                                  JOSE_UPPER,          "X" JOSE_UPPER,           NULL };
  g_autofree char *want = g_strdup_printf ("alice@example.org|%s|alice@example.org|%s|alice@example.org|0\n"
                                           "Alice@Example.ORG.evil|%s|alice@example.org.evil|-|-|0\n"
                                           "XAlice@example.org|%s|xalice@example.org|%s|xalice@example.org|0\n"
                                           "%s|%s|%s|-|-|0\n"
                                           "X%s|%s|x%s|-|-|0\n",
                                           alice, alice_cert, evil, xalice, xalice_cert, JOSE_UPPER, jose, JOSE_NFC,
                                           JOSE_UPPER, xjose, JOSE_NFC);
  int status;
  g_autofree char *got = keys_json (&status, queries);

  g_assert_cmpstr (got, ==, want);
  g_assert_cmpint (status, ==, 0);
}

/* convert - mimegate convert -c CONF --to FORM -r RCPT... MESSAGE; the result */
static char *
convert (const char *form, const char *const *rcpts)
{
  g_autoptr (GPtrArray) argv = g_ptr_array_new ();
  MgRun r;
  char *out;

  g_ptr_array_add (argv, (gpointer) mg_test_mimegate ());
  g_ptr_array_add (argv, (gpointer) "convert");
  g_ptr_array_add (argv, (gpointer) "-c");
  g_ptr_array_add (argv, fx.conf);
  g_ptr_array_add (argv, (gpointer) "--to");
  g_ptr_array_add (argv, (gpointer) form);
  for (guint i = 0; rcpts[i] != NULL; i++) {
    g_ptr_array_add (argv, (gpointer) "-r");
    g_ptr_array_add (argv, (gpointer) rcpts[i]);
  }
  g_ptr_array_add (argv, fx.message);
  g_ptr_array_add (argv, NULL);
  g_assert_true (mg_test_run (&r, (const char *const *) argv->pdata, NULL, NULL, 0));
  g_test_message ("convert: %d %s", r.status, r.err);
  g_assert_cmpint (r.status, ==, 0);
  out = g_steal_pointer (&r.out);
  mg_run_clear (&r);
  return out;
}

/* packets_of - gpg --list-packets of the first armored block of @msg */
static char *
packets_of (const char *msg)
{
  g_autofree char *block = mg_test_pgp_block (msg);

  return mg_gpg (fx.gpg, block, strlen (block), "--list-packets", NULL);
}

/* `convert -r Alice@Example.ORG` encrypts to alice's key (gpg names her subkey and opens it), and a UTF-8 address
 * in capitals to jösé's */
static void
test_convert (void)
{
  g_autofree char *alice_sub = subkey_of ("alice@example.org");
  g_autofree char *jose_sub = subkey_of (JOSE_NFC);
  g_autofree char *xalice_sub = subkey_of ("xalice@example.org");
  g_autofree char *evil_sub = subkey_of ("alice@example.org.evil");
  g_autofree char *out = convert ("pgp-mime", (const char *const[]){ "Alice@Example.ORG", NULL });
  g_autofree char *packets = packets_of (out);
  g_autofree char *block = mg_test_pgp_block (out);
  g_autofree char *clear = mg_gpg (fx.gpg, block, strlen (block), "-d", NULL);
  g_autofree char *keyid = g_strdup_printf ("keyid %s\n", alice_sub);

  g_assert_nonnull (strstr (out, "Content-Type: multipart/encrypted"));
  g_assert_nonnull (strstr (packets, keyid));
  g_assert_null (strstr (packets, xalice_sub));
  g_assert_null (strstr (packets, evil_sub));
  g_assert_nonnull (clear);
  g_assert_nonnull (strstr (clear, MARKER));

  g_free (out);
  g_free (packets);
  g_free (keyid);
  out = convert ("pgp-mime", (const char *const[]){ JOSE_UPPER, NULL });
  packets = packets_of (out);
  keyid = g_strdup_printf ("keyid %s\n", jose_sub);
  g_assert_nonnull (strstr (packets, keyid));
}

/* filter - mimegate filter -c CONF --stdout -f sender@example.net -- RCPT... with the message on stdin */
static void
filter (MgRun *r, const char *conf, const char *const *rcpts)
{
  g_autoptr (GPtrArray) argv = g_ptr_array_new ();
  g_auto (GStrv) env = mg_test_env ("LANGUAGE", NULL, "LC_ALL", "C.UTF-8", "TMPDIR", fx.dir, NULL);
  gsize len;
  g_autofree char *input = mg_test_read (fx.message, &len);

  g_ptr_array_add (argv, (gpointer) mg_test_mimegate ());
  g_ptr_array_add (argv, (gpointer) "filter");
  g_ptr_array_add (argv, (gpointer) "-c");
  g_ptr_array_add (argv, (gpointer) conf);
  g_ptr_array_add (argv, (gpointer) "--stdout");
  g_ptr_array_add (argv, (gpointer) "-f");
  g_ptr_array_add (argv, (gpointer) "sender@example.net");
  g_ptr_array_add (argv, (gpointer) "--");
  for (guint i = 0; rcpts[i] != NULL; i++)
    g_ptr_array_add (argv, (gpointer) rcpts[i]);
  g_ptr_array_add (argv, NULL);
  g_assert_true (mg_test_run (r, (const char *const *) argv->pdata, (const char *const *) env, input, len));
  g_test_message ("filter: %d %s", r->status, r->err);
}

/* [address ADDR] and [domain NAME] apply to every case of the address (and only to the whole address):
 * encrypt = required refuses a recipient without a key with 5.7.1, which shows the group applied */
static void
test_policy (void)
{
  static const struct {
    const char *group;
    const char *rcpt;
    gboolean applies;
  } cases[] = {
    { "address Bob@Example.Net", "bob@example.net", TRUE },
    { "address bob@example.net", "Bob@Example.Net", TRUE },
    { "address BOB@EXAMPLE.NET", "bOb@eXample.net", TRUE },
    { "domain Example.NET", "bob@example.net", TRUE },
    { "domain example.net", "BOB@SUB.EXAMPLE.NET", TRUE },
    { "address Bob@Example.Net", "xbob@example.net", FALSE },
    { "address Bob@Example.Net", "bob@example.net.evil", FALSE },
    { "address Bob@Example.Net", "ob@example.net", FALSE },
    { "domain Example.NET", "bob@xexample.net", FALSE },
    { "domain Example.NET", "bob@example.network", FALSE },
  };

  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++) {
    g_autofree char *name = g_strdup_printf ("policy-%" G_GSIZE_FORMAT ".conf", i);
    g_autofree char *text = NULL, *conf = NULL;
    MgRun r;
    {
      gsize n;
      g_autofree char *base = mg_test_read (fx.conf, &n);
      text = g_strdup_printf ("%s[%s]\nencrypt = required\n", base, cases[i].group);
    }
    conf = mg_test_write (fx.dir, name, text, -1);
    g_test_message ("[%s] for %s", cases[i].group, cases[i].rcpt);
    filter (&r, conf, (const char *const[]){ cases[i].rcpt, NULL });
    if (cases[i].applies) {
      g_autofree char *line = g_strdup_printf (
        "5.7.1 <%s>: encryption is required for this recipient and no usable key is known\n", cases[i].rcpt);
      g_assert_cmpint (r.status, ==, 69);
      g_assert_true (g_str_has_prefix (r.err, line)); /* the status line pipe(8) reads comes first */
      g_assert_null (strstr (r.out, MARKER));         /* never in clear */
    } else {
      g_assert_cmpint (r.status, ==, 0);
      g_assert_nonnull (strstr (r.out, MARKER)); /* as it came: no key, the group did not apply */
    }
    mg_run_clear (&r);
  }
}

/* the filter's address index: keyed by whole-address keys, so a capitalised recipient finds the key of a lower-case
 * user ID and the other way round; the message's To names them in another case, so neither is a blind copy and both
 * share one result (--stdout allows one only); an index of the previous format (v2: local parts kept as written) is
 * rebuilt, never read with the new keys */
static void
test_filter_index (void)
{
  g_autofree char *index = g_build_filename (fx.gpg->home, "mimegate-addresses", NULL);
  g_autofree char *alice_sub = subkey_of ("alice@example.org");
  g_autofree char *carol_sub = subkey_of ("Carol@Example.org");
  g_autofree char *carol = fpr_of ("Carol@Example.org");
  g_autofree char *text = NULL;
  gsize n;
  MgRun r;

  g_unlink (index);
  filter (&r, fx.conf, (const char *const[]){ "Alice@Example.ORG", "carol@example.org", NULL });
  g_assert_cmpint (r.status, ==, 0);
  g_assert_nonnull (strstr (r.out, "Content-Type: multipart/encrypted"));
  {
    g_autofree char *packets = packets_of (r.out);
    g_assert_nonnull (strstr (packets, alice_sub));
    g_assert_nonnull (strstr (packets, carol_sub));
  }
  mg_run_clear (&r);
  /* the first listing may update the trust database, which outdates the stamp just written: one more run settles
   * it, and a third must then reuse the index as it is (same inode: not written again) */
  for (int run = 0; run < 2; run++) {
    GStatBuf before, after;
    g_assert_cmpint (g_stat (index, &before), ==, 0);
    filter (&r, fx.conf, (const char *const[]){ "carol@example.org", NULL });
    g_assert_cmpint (r.status, ==, 0);
    mg_run_clear (&r);
    g_assert_cmpint (g_stat (index, &after), ==, 0);
    if (run == 1)
      g_assert_cmpuint (before.st_ino, ==, after.st_ino);
  }
  text = mg_test_read (index, &n);
  g_assert_true (g_str_has_prefix (text, "mimegate-index v3 "));
  {
    g_autofree char *line = g_strdup_printf ("\ncarol@example.org\t%s\t", carol);
    g_autofree char *matched = g_base64_encode ((const guchar *) "Carol@Example.org", 17);
    g_autofree char *tail = g_strdup_printf ("\t%s\n", matched);
    const char *at = strstr (text, line);
    g_assert_nonnull (at);
    g_assert_nonnull (strstr (at, tail)); /* the user ID's address as written, for `keys` and the log */
  }

  /* an index as the previous version wrote it, current for this keyring, that has no key for carol@example.org (its
   * key was "Carol@example.org"): read with the new keys, carol would go out in clear */
  {
    const char *nl = strchr (text, '\n');
    g_autofree char *stamp = g_strndup (text, (gsize) (nl - text));
    g_autoptr (GString) old = g_string_new (stamp);
    g_autofree char *written = NULL;
    g_string_replace (old, "mimegate-index v3 ", "mimegate-index v2 ", 1);
    g_string_append (old, "\ncarol@example.org\t-\nalice@example.org\t-\n");
    g_assert_true (g_file_set_contents (index, old->str, (gssize) old->len, NULL));
    filter (&r, fx.conf, (const char *const[]){ "carol@example.org", NULL });
    g_assert_cmpint (r.status, ==, 0);
    g_assert_null (strstr (r.out, MARKER));
    {
      g_autofree char *packets = packets_of (r.out);
      g_assert_nonnull (strstr (packets, carol_sub));
    }
    mg_run_clear (&r);
    written = mg_test_read (index, &n);
    g_assert_true (g_str_has_prefix (written, "mimegate-index v3 ")); /* rebuilt */
  }

  /* a current index is read line by line: a damaged line of another address does not matter (the index stays as
   * it is), a damaged line of the address looked up makes it rebuilt, never trusted */
  {
    g_autofree char *cur = mg_test_read (index, &n);
    g_autofree char *line = g_strdup_printf ("\ncarol@example.org\t%s\t", carol);
    g_autoptr (GString) bad = g_string_new (cur);
    g_autofree char *written = NULL;
    GStatBuf before, after;
    g_assert_nonnull (strstr (cur, line));
    g_string_append (bad, "zed@example.org\tdamaged\n");
    g_assert_true (g_file_set_contents (index, bad->str, (gssize) bad->len, NULL));
    g_assert_cmpint (g_stat (index, &before), ==, 0);
    filter (&r, fx.conf, (const char *const[]){ "carol@example.org", NULL });
    g_assert_cmpint (r.status, ==, 0);
    {
      g_autofree char *packets = packets_of (r.out);
      g_assert_nonnull (strstr (packets, carol_sub));
    }
    mg_run_clear (&r);
    g_assert_cmpint (g_stat (index, &after), ==, 0);
    g_assert_cmpuint (before.st_ino, ==, after.st_ino);          /* not rebuilt */
    g_string_truncate (bad, (gsize) (strchr (cur, '\n') - cur)); /* the stamp, and carol's line cut short */
    g_string_append (bad, "\ncarol@example.org\tdamaged\n");
    g_assert_true (g_file_set_contents (index, bad->str, (gssize) bad->len, NULL));
    filter (&r, fx.conf, (const char *const[]){ "carol@example.org", NULL });
    g_assert_cmpint (r.status, ==, 0);
    g_assert_null (strstr (r.out, MARKER));
    {
      g_autofree char *packets = packets_of (r.out);
      g_assert_nonnull (strstr (packets, carol_sub));
    }
    mg_run_clear (&r);
    written = mg_test_read (index, &n);
    g_assert_nonnull (strstr (written, line)); /* rebuilt: carol's line is whole again */
    g_assert_null (strstr (written, "damaged"));
  }
}

int
main (int argc, char **argv)
{
  int status;

  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/address/key", test_key);
  if (mg_test_have_program ("gpg") && mg_test_have_program ("openssl") && mg_test_have_program ("python3")) {
    setup ();
    g_test_add_func ("/address/keys-command", test_keys_command);
    g_test_add_func ("/address/no-substring", test_no_substring);
    g_test_add_func ("/address/convert", test_convert);
    g_test_add_func ("/address/policy", test_policy);
    g_test_add_func ("/address/filter-index", test_filter_index);
  }
  status = g_test_run ();
  mg_gpg_free (fx.gpg);
  mg_ca_free (fx.ca);
  if (fx.dir != NULL)
    mg_test_rmtree (fx.dir);
  g_free (fx.dir);
  g_free (fx.store);
  g_free (fx.conf);
  g_free (fx.message);
  return status;
}
