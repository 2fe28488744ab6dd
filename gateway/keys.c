/* keys.c - `mimegate keys [-c CONF] [--json] ADDR...`: for each address, the OpenPGP key and the X.509 certificate
 * mimegate would encrypt to, and every candidate it refused with the reason, in words an admin can act on. The address
 * is shown as written; each key or certificate shows the address in it that matched (the whole address compared
 * without regard to case, mg_keys_address_key), so "Alice@Example.ORG" visibly finds the key for alice@example.org.
 *
 * `mimegate keys --expiring DAYS [--json]`: every key and certificate of every local store (the GnuPG home's public
 * keys and the secret keys the gateway holds there; certs/, harvested/ and private/ of the X.509 store) that ends
 * within DAYS days or has ended, soonest first, for a cron job that mails the admin.
 *
 * Exit status: 0 when every address has at least one usable key (--expiring: nothing ends within DAYS), 1 when some
 * address has none (--expiring: something is listed), 75 when a key store cannot be read at all or a directory cannot
 * answer (the message names the path or the directory), 64 for usage mistakes, 78 for a bad configuration file. */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include <glib/gi18n.h>

#include "cli.h"
#include "gnupg.h"
#include "report.h"
#include "x509.h"

typedef struct {
  char *address;
  MgPgpKey *pgp;
  const MgX509Cert *x509;  /* owned by the store */
  char *x509_matched;      /* (nullable): the certificate's address that matched, as written there */
  const char *x509_source; /* (nullable): the directory it came from ("ldap://host/base"); %NULL: certs/ */
  GPtrArray *refused_pgp;
  GPtrArray *refused_x509;
} Answer;

static void
answer_clear (Answer *a)
{
  g_free (a->address);
  mg_pgp_key_free (a->pgp);
  g_free (a->x509_matched);
  g_ptr_array_unref (a->refused_pgp);
  g_ptr_array_unref (a->refused_x509);
}

static void
print_text (const Answer *a)
{
  printf ("%s\n", a->address);
  if (a->pgp != NULL) {
    g_autofree char *created = mg_keys_format_time (a->pgp->created);
    g_autofree char *expires = mg_keys_format_time (a->pgp->expires);
    printf ("  %-9s %s\n", "OpenPGP", a->pgp->fingerprint);
    printf ("  %-9s %s %s (%s, %s %s, %s %s)\n", "", _ ("encryption subkey"), a->pgp->subkey_id, a->pgp->algorithm,
            _ ("created"), created, _ ("expires"), expires);
    printf ("  %-9s %s \"%s\"\n", "", _ ("user ID"), a->pgp->user_id);
    if (a->pgp->address != NULL)
      printf ("  %-9s %s %s\n", "", _ ("matched address"), a->pgp->address);
    if (a->pgp->source != NULL)
      printf ("  %-9s %s %s\n", "", _ ("from"), a->pgp->source);
  } else
    printf ("  %-9s %s\n", "OpenPGP", _ ("none"));
  if (a->x509 != NULL) {
    g_autofree char *until = mg_keys_format_time (a->x509->not_after);
    printf ("  %-9s SHA-256 %s\n", "X.509", a->x509->fingerprint);
    printf ("  %-9s %s %s, %s %s\n", "", _ ("serial"), a->x509->serial, _ ("valid until"), until);
    printf ("  %-9s %s %s\n", "", _ ("subject"), a->x509->subject);
    printf ("  %-9s %s %s\n", "", _ ("issuer"), a->x509->issuer);
    if (a->x509_matched != NULL)
      printf ("  %-9s %s %s\n", "", _ ("matched address"), a->x509_matched);
    if (a->x509_source != NULL)
      printf ("  %-9s %s %s\n", "", _ ("from"), a->x509_source);
    else if (mg_x509_cert_harvested (a->x509))
      printf ("  %-9s %s %s (%s)\n", "", _ ("from"), a->x509->path, _ ("harvested from a verified signature"));
  } else
    printf ("  %-9s %s\n", "X.509", _ ("none"));
  for (guint i = 0; i < a->refused_pgp->len; i++) {
    const MgRefusal *r = g_ptr_array_index (a->refused_pgp, i);
    if (r->source != NULL)
      printf ("  %-9s OpenPGP %s (%s %s): %s\n", _ ("refused"), r->id, _ ("from"), r->source, r->reason);
    else
      printf ("  %-9s OpenPGP %s: %s\n", _ ("refused"), r->id, r->reason);
  }
  for (guint i = 0; i < a->refused_x509->len; i++) {
    const MgRefusal *r = g_ptr_array_index (a->refused_x509, i);
    if (r->source != NULL)
      printf ("  %-9s X.509 %s (%s %s): %s\n", _ ("refused"), r->id, _ ("from"), r->source, r->reason);
    else
      printf ("  %-9s X.509 %s: %s\n", _ ("refused"), r->id, r->reason);
  }
}

static void
json_time (JsonBuilder *b, const char *key, gint64 t)
{
  g_autoptr (GDateTime) dt = t > 0 ? g_date_time_new_from_unix_utc (t) : NULL;
  g_autofree char *iso = dt ? g_date_time_format_iso8601 (dt) : NULL;

  mg_report_json_member (b, key, iso);
}

static void
json_refused (JsonBuilder *b, const GPtrArray *list, const char *store)
{
  for (guint i = 0; i < list->len; i++) {
    const MgRefusal *r = g_ptr_array_index (list, i);
    json_builder_begin_object (b);
    mg_report_json_member (b, "id", r->id);
    mg_report_json_member (b, "store", store);
    mg_report_json_member (b, "reason", r->reason);
    if (r->source != NULL)
      mg_report_json_member (b, "source", r->source);
    json_builder_end_object (b);
  }
}

static void
print_json (JsonBuilder *b, const Answer *a)
{
  json_builder_begin_object (b);
  mg_report_json_member (b, "address", a->address);
  json_builder_set_member_name (b, "openpgp");
  if (a->pgp != NULL) {
    json_builder_begin_object (b);
    mg_report_json_member (b, "fingerprint", a->pgp->fingerprint);
    mg_report_json_member (b, "subkey", a->pgp->subkey_id);
    mg_report_json_member (b, "algorithm", a->pgp->algorithm);
    json_time (b, "created", a->pgp->created);
    json_time (b, "expires", a->pgp->expires);
    mg_report_json_member (b, "user_id", a->pgp->user_id);
    mg_report_json_member (b, "matched", a->pgp->address);
    if (a->pgp->source != NULL)
      mg_report_json_member (b, "source", a->pgp->source);
    json_builder_end_object (b);
  } else
    json_builder_add_null_value (b);
  json_builder_set_member_name (b, "x509");
  if (a->x509 != NULL) {
    json_builder_begin_object (b);
    mg_report_json_member (b, "fingerprint", a->x509->fingerprint);
    mg_report_json_member (b, "serial", a->x509->serial);
    mg_report_json_member (b, "issuer", a->x509->issuer);
    mg_report_json_member (b, "subject", a->x509->subject);
    mg_report_json_member (b, "algorithm", a->x509->algorithm);
    json_time (b, "not_after", a->x509->not_after);
    mg_report_json_member (b, "matched", a->x509_matched);
    mg_report_json_member (b, "file", a->x509->path);
    json_builder_set_member_name (b, "harvested");
    json_builder_add_boolean_value (b, mg_x509_cert_harvested (a->x509));
    if (a->x509_source != NULL)
      mg_report_json_member (b, "source", a->x509_source);
    json_builder_end_object (b);
  } else
    json_builder_add_null_value (b);
  json_builder_set_member_name (b, "refused");
  json_builder_begin_array (b);
  json_refused (b, a->refused_pgp, "openpgp");
  json_refused (b, a->refused_x509, "x509");
  json_builder_end_array (b);
  json_builder_end_object (b);
}

/* store_error - a store that cannot be read defers: 75, with the path in the one-line message */
static int
store_error (const GError *error)
{
  fprintf (stderr, "mimegate keys: %s\n", error->message);
  return MG_EXIT_TEMPFAIL;
}

/* compare_expiry - soonest first; then by store and id, so that the order is the same every run */
static int
compare_expiry (gconstpointer a, gconstpointer b)
{
  const MgExpiry *x = *(const MgExpiry *const *) a, *y = *(const MgExpiry *const *) b;
  int c;

  if (x->expires != y->expires)
    return x->expires < y->expires ? -1 : 1;
  c = strcmp (x->store, y->store);
  return c != 0 ? c : strcmp (x->id, y->id);
}

/* store_label - how the text output names the store an entry is in */
static const char *
store_label (const char *store)
{
  if (strcmp (store, "openpgp") == 0)
    return _ ("OpenPGP public key");
  if (strcmp (store, "openpgp-secret") == 0)
    return _ ("OpenPGP key the gateway holds");
  if (strcmp (store, "private") == 0)
    return _ ("X.509 certificate of a key the gateway holds");
  if (strcmp (store, "harvested") == 0)
    return _ ("X.509 certificate harvested from a verified signature");
  return _ ("X.509 certificate");
}

/* print_expiry - one entry as text: when, how soon, what, whose, where */
static void
print_expiry (const MgExpiry *e, gint64 now)
{
  g_autofree char *when = mg_keys_format_time (e->expires);
  g_autofree char *soon = NULL;
  g_autoptr (GString) who = g_string_new (NULL);
  gint64 days = (e->expires - now + 86399) / 86400; /* "in 3 days" for a key made with 3d a moment ago */

  for (guint i = 0; i < e->addresses->len; i++)
    g_string_append_printf (who, "%s%s", i ? ", " : "", (const char *) g_ptr_array_index (e->addresses, i));
  if (who->len == 0)
    g_string_append (who, _ ("no address"));
  if (e->expires <= now)
    soon = g_strdup (_ ("expired"));
  else
    soon = g_strdup_printf (g_dngettext (GETTEXT_PACKAGE, "expires in %d day", "expires in %d days", (gulong) days),
                            (int) days);
  printf ("%s  %s  %s: %s\n", when, soon, store_label (e->store), who->str);
  if (e->serial != NULL)
    printf ("  %s  SHA-256 %s  %s %s\n", e->source, e->id, _ ("serial"), e->serial);
  else
    printf ("  %s  %s\n", e->source, e->id);
}

/* json_expiry - one entry as a JSON object */
static void
json_expiry (JsonBuilder *b, const MgExpiry *e, gint64 now)
{
  json_builder_begin_object (b);
  mg_report_json_member (b, "address", e->addresses->len > 0 ? g_ptr_array_index (e->addresses, 0) : NULL);
  json_builder_set_member_name (b, "addresses");
  json_builder_begin_array (b);
  for (guint i = 0; i < e->addresses->len; i++)
    json_builder_add_string_value (b, g_ptr_array_index (e->addresses, i));
  json_builder_end_array (b);
  mg_report_json_member (b, "store", e->store);
  mg_report_json_member (b, "source", e->source);
  mg_report_json_member (b, "fingerprint", e->id);
  mg_report_json_member (b, "serial", e->serial);
  json_time (b, "expires", e->expires);
  json_builder_set_member_name (b, "expired");
  json_builder_add_boolean_value (b, e->expires <= now);
  json_builder_set_member_name (b, "days");
  /* whole days left, rounded up; for one that has ended, the days since as a negative number (at least 1) */
  json_builder_add_int_value (b, e->expires <= now ? -((now - e->expires) / 86400 + 1)
                                                   : (e->expires - now + 86399) / 86400);
  json_builder_end_object (b);
}

/* expiring - `keys --expiring DAYS`: every entry of every store that ends within @days, soonest first */
static int
expiring (const MgConfig *config, guint64 days, gboolean json)
{
  g_autoptr (MgGnupg) gnupg = NULL;
  g_autoptr (MgX509Store) x509 = NULL;
  g_autoptr (GError) error = NULL;
  g_autoptr (GPtrArray) all = g_ptr_array_new_with_free_func ((GDestroyNotify) mg_expiry_free);
  g_autoptr (GPtrArray) listed = g_ptr_array_new ();
  g_autoptr (JsonBuilder) b = json_builder_new ();
  gint64 now = g_get_real_time () / G_USEC_PER_SEC;
  int code;

  if (!mg_cli_open_stores ("keys", config, &gnupg, &x509, &code))
    return code;
  if (gnupg != NULL && !mg_gnupg_expiries (gnupg, all, &error))
    return store_error (error);
  if (x509 != NULL) {
    g_autoptr (GPtrArray) certs = mg_x509_store_expiries (x509);
    if (certs == NULL) {
      g_set_error (&error, MG_KEYS_ERROR, MG_KEYS_ERROR_STORE, _ ("X.509 store %s cannot be read"),
                   mg_x509_store_dir (x509));
      return store_error (error);
    }
    g_ptr_array_extend_and_steal (all, g_steal_pointer (&certs));
  }
  for (guint i = 0; i < all->len; i++) {
    const MgExpiry *e = g_ptr_array_index (all, i);
    if (e->expires <= now || (guint64) (e->expires - now) <= days * 86400)
      g_ptr_array_add (listed, (gpointer) e);
  }
  g_ptr_array_sort (listed, compare_expiry);
  json_builder_begin_array (b);
  for (guint i = 0; i < listed->len; i++) {
    if (json)
      json_expiry (b, g_ptr_array_index (listed, i), now);
    else
      print_expiry (g_ptr_array_index (listed, i), now);
  }
  json_builder_end_array (b);
  if (json) {
    g_autofree char *text = mg_report_json_text (b);
    printf ("%s\n", text);
  }
  return listed->len > 0 ? 1 : MG_EXIT_OK;
}

int
mg_cmd_keys (int argc, char **argv)
{
  g_autofree char *conf = NULL, *within = NULL;
  gboolean json = FALSE, x509_index = FALSE;
  guint64 days = 0;
  g_autofree char *conf_help = mg_cli_config_help (FALSE);
  GOptionEntry entries[] = {
    { "config", 'c', 0, G_OPTION_ARG_FILENAME, &conf, conf_help, N_ ("CONF") },
    { "json", 0, 0, G_OPTION_ARG_NONE, &json, N_ ("Write JSON"), NULL },
    { "index", 0, 0, G_OPTION_ARG_NONE, &x509_index,
      N_ ("Answer from the X.509 address index, as the filter does (rebuilt when stale)"), NULL },
    { "expiring", 0, 0, G_OPTION_ARG_STRING, &within,
      N_ ("List every key and certificate of every store that ends within DAYS days (or has ended); exit 1 when "
          "there is one"),
      N_ ("DAYS") },
    { NULL },
  };
  g_autoptr (GOptionContext) ctx = mg_cli_context ("keys", entries);
  g_autoptr (MgConfig) config = NULL;
  g_autoptr (MgGnupg) gnupg = NULL;
  g_autoptr (MgX509Store) x509 = NULL;
  g_autoptr (GError) error = NULL;
  g_autoptr (JsonBuilder) b = json_builder_new ();
  g_autofree char *text = NULL;
  gboolean all_found = TRUE;
  int code;

  if (!mg_cli_parse ("keys", ctx, &argc, &argv, MG_EXIT_USAGE, &code))
    return code;
  if (within != NULL) {
    if (!g_ascii_string_to_unsigned (within, 10, 0, 36500, &days, NULL)) {
      mg_cli_usage_error ("keys", MG_EXIT_USAGE, _ ("--expiring DAYS: \"%s\" is not a number of days"), within);
      return MG_EXIT_USAGE;
    }
    if (argc > 1 || x509_index) {
      mg_cli_usage_error ("keys", MG_EXIT_USAGE, "%s", _ ("--expiring takes no ADDRESS and no --index"));
      return MG_EXIT_USAGE;
    }
    config = mg_cli_config ("keys", conf, &code);
    return config == NULL ? code : expiring (config, days, json);
  }
  if (argc < 2) {
    mg_cli_usage_error ("keys", MG_EXIT_USAGE, "%s", _ ("at least one ADDRESS is required"));
    return MG_EXIT_USAGE;
  }
  for (int i = 1; i < argc; i++) {
    g_autofree char *key = mg_keys_address_key (argv[i]);
    if (key == NULL) {
      mg_cli_usage_error ("keys", MG_EXIT_USAGE, _ ("\"%s\" is not a mail address"), argv[i]);
      return MG_EXIT_USAGE;
    }
  }
  config = mg_cli_config ("keys", conf, &code);
  if (config == NULL)
    return code;
  if (!mg_cli_open_stores_indexed ("keys", config, x509_index, &gnupg, &x509, &code))
    return code;

  json_builder_begin_array (b);
  for (int i = 1; i < argc; i++) {
    Answer a = { 0 };
    a.address = g_strdup (argv[i]);
    a.refused_pgp = g_ptr_array_new_with_free_func ((GDestroyNotify) mg_keys_refusal_free);
    a.refused_x509 = g_ptr_array_new_with_free_func ((GDestroyNotify) mg_keys_refusal_free);
    if (gnupg != NULL) {
      a.pgp = mg_gnupg_lookup (gnupg, argv[i], a.refused_pgp, &error);
      if (error != NULL) {
        answer_clear (&a);
        return store_error (error);
      }
    }
    if (x509 != NULL) {
      a.x509 = mg_x509_store_lookup_checked (x509, argv[i], a.refused_x509, &error);
      if (error != NULL) {
        answer_clear (&a);
        return store_error (error);
      }
      a.x509_source = a.x509 ? mg_x509_store_cert_source (x509, a.x509) : NULL;
    }
    a.x509_matched = mg_x509_cert_address (a.x509, argv[i]);
    all_found = all_found && (a.pgp != NULL || a.x509 != NULL);
    if (json)
      print_json (b, &a);
    else {
      if (i > 1)
        fputc ('\n', stdout);
      print_text (&a);
    }
    answer_clear (&a);
  }
  json_builder_end_array (b);
  if (json) {
    text = mg_report_json_text (b);
    printf ("%s\n", text);
  }
  return all_found ? MG_EXIT_OK : 1;
}
