/* test-ldap.c - the directory's search filter (keys/ldap.c): an address goes in escaped per RFC 4515 section 3, so
 * that no address can widen or change the search; the whole lookup runs against a real slapd in ldap-test.py. */
#include "config.h"

#include "mg-ldap.h"

static void
test_filter_escaping (void)
{
  static const struct {
    const char *filter, *address, *want;
  } cases[] = {
    { "(mail=%s)", "dave@dir.test", "(mail=dave@dir.test)" },
    { "(mail=%s)", "*@dir.test", "(mail=\\2A@dir.test)" },
    { "(mail=%s)", "a)(mail=*", "(mail=a\\29\\28mail=\\2A)" },
    { "(mail=%s)", "a\\b@x", "(mail=a\\5Cb@x)" },
    { "(|(mail=%s)(proxyAddresses=smtp:%s))", "x*@y", "(|(mail=x\\2A@y)(proxyAddresses=smtp:x\\2A@y))" },
    { "(&(mail=%s)(cn=100%%))", "a@b", "(&(mail=a@b)(cn=100%))" },
  };

  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++) {
    g_autofree char *got = mg_ldap_filter_for (cases[i].filter, cases[i].address);
    g_assert_nonnull (got);
    /* libldap writes its escapes in either case: compare without regard to it */
    g_assert_cmpint (g_ascii_strcasecmp (got, cases[i].want), ==, 0);
  }
}

static void
test_config_defaults (void)
{
  g_autoptr (MgLdapConfig) c = mg_ldap_config_new ();

  g_assert_cmpstr (c->filter, ==, "(mail=%s)");
  g_assert_cmpuint (g_strv_length (c->attributes), ==, 2);
  g_assert_cmpstr (c->attributes[0], ==, "userSMIMECertificate");
  g_assert_cmpstr (c->attributes[1], ==, "userCertificate;binary");
  g_assert_cmpuint (c->timeout, ==, 10);
  g_assert_cmpuint (c->cache_ttl, ==, 3600);
  g_assert_cmpuint (c->negative_ttl, ==, 600);
  g_assert_cmpuint (c->stale_ttl, ==, 86400);
  g_assert_false (c->starttls);
}

/* test_config_openpgp - openpgp-attributes: off by default; named, a second directory of the same server asking for
 * them, its cache file apart; and what makes two configurations alike (a reload keeps the cache only then) */
static void
test_config_openpgp (void)
{
  g_autoptr (MgLdapConfig) c = mg_ldap_config_new ();
  g_autoptr (MgLdapConfig) pgp = NULL, other = NULL;

  g_assert_null (c->openpgp_attributes);
  g_assert_false (c->openpgp_full);
  g_assert_null (mg_ldap_config_openpgp (c));
  c->uri = g_strdup ("ldap://127.0.0.1:389");
  c->cache_file = g_strdup ("/var/lib/mimegate/directory.cache");
  c->openpgp_attributes = g_strsplit ("pgpKey", ",", -1);
  pgp = mg_ldap_config_openpgp (c);
  g_assert_nonnull (pgp);
  g_assert_cmpuint (g_strv_length (pgp->attributes), ==, 1);
  g_assert_cmpstr (pgp->attributes[0], ==, "pgpKey");
  g_assert_cmpstr (pgp->cache_file, ==, "/var/lib/mimegate/directory.cache.openpgp");
  g_assert_cmpstr (pgp->uri, ==, c->uri);
  g_assert_cmpstr (pgp->filter, ==, c->filter);
  g_assert_false (mg_ldap_config_equal (c, pgp));

  other = mg_ldap_config_openpgp (c);
  g_assert_true (mg_ldap_config_equal (pgp, other));
  other->cache_ttl++;
  g_assert_false (mg_ldap_config_equal (pgp, other));
  other->cache_ttl--;
  other->openpgp_full = TRUE;
  g_assert_false (mg_ldap_config_equal (pgp, other));
  other->openpgp_full = FALSE;
  g_free (other->bind_password);
  other->bind_password = g_strdup ("changed");
  g_assert_false (mg_ldap_config_equal (pgp, other));
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/ldap/filter-escaping", test_filter_escaping);
  g_test_add_func ("/ldap/config-defaults", test_config_defaults);
  g_test_add_func ("/ldap/config-openpgp", test_config_openpgp);
  return g_test_run ();
}
