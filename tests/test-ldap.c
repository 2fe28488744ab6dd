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

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/ldap/filter-escaping", test_filter_escaping);
  g_test_add_func ("/ldap/config-defaults", test_config_defaults);
  return g_test_run ();
}
