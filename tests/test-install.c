/* test-install.c - mimegate as a package installs it: the compiled-in paths each command names in --help, and the
 * example configuration (gateway/mimegate.conf) that becomes /etc/mimegate/mimegate.conf. */
#include "config.h"

#include <string.h>

#include <glib/gstdio.h>

#include "testutil.h"

/* every command that takes -c says which file it reads without it (a /usr/local build reads /usr/local/etc/...) */
static void
test_config_default_in_help (void)
{
  static const char *const commands[] = { "filter", "inspect", "convert", "keys", "serve", "scan" };
  const char *want = "(default: " SYSCONFDIR "/mimegate/mimegate.conf)";

  for (gsize i = 0; i < G_N_ELEMENTS (commands); i++) {
    g_auto (GStrv) env = mg_test_env ("LANGUAGE", NULL, "LC_ALL", "C.UTF-8", NULL);
    const char *argv[] = { mg_test_mimegate (), commands[i], "--help", NULL };
    g_autofree char *line = NULL;
    MgRun r;
    const char *at;

    g_assert_true (mg_test_run (&r, argv, (const char *const *) env, NULL, 0));
    g_assert_cmpint (r.status, ==, 0);
    at = strstr (r.out, "-c, --config=CONF");
    g_assert_nonnull (at);
    line = g_strndup (at, strcspn (at, "\n"));
    if (strstr (line, want) == NULL)
      g_error ("mimegate %s --help: \"%s\" does not name %s", commands[i], line, want);
    mg_run_clear (&r);
  }
}

/* example_run - `mimegate keys` and `mimegate serve --check` with @conf: the configuration must load (keys 0 or 1,
 * --check 0), never 78 (bad configuration) or 75 (a store it names cannot be read) */
static void
example_run (const char *conf, const char *gnupghome)
{
  g_auto (GStrv) env = mg_test_env ("LANGUAGE", NULL, "LC_ALL", "C.UTF-8", "GNUPGHOME", gnupghome, NULL);
  const char *keys[] = { mg_test_mimegate (), "keys", "-c", conf, "nobody@example.org", NULL };
  const char *check[] = { mg_test_mimegate (), "serve", "--check", "-c", conf, NULL };
  MgRun r;

  g_assert_true (mg_test_run (&r, keys, (const char *const *) env, NULL, 0));
  if (r.status != 0 && r.status != 1)
    g_error ("mimegate keys -c %s: status %d: %s", conf, r.status, r.err);
  g_assert_nonnull (strstr (r.out, "nobody@example.org"));
  mg_run_clear (&r);
  g_assert_true (mg_test_run (&r, check, (const char *const *) env, NULL, 0));
  if (r.status != 0)
    g_error ("mimegate serve --check -c %s: status %d: %s", conf, r.status, r.err);
  g_assert_nonnull (strstr (r.out, "listen: inet:127.0.0.1:10025 (lmtp)"));
  mg_run_clear (&r);
}

/* the example configuration loads as shipped (every key commented out: the built-in defaults), and with every key
 * uncommented (the defaults written out, and the example values where a default is not a value) */
static void
test_example_config (void)
{
  const char *example = g_getenv ("MIMEGATE_EXAMPLE_CONF");
  g_autofree char *text = NULL, *dir = mg_test_tmpdir ();
  g_autofree char *home = g_build_filename (dir, "gnupg", NULL), *none = g_build_filename (dir, "no-gnupg", NULL);
  g_autofree char *store = g_build_filename (dir, "x509", NULL), *pass = NULL, *all = NULL, *conf = NULL;
  g_autoptr (GRegex) uncomment = g_regex_new ("^#([a-z0-9-]+ = )", G_REGEX_MULTILINE, 0, NULL);
  g_autoptr (GString) out = NULL;
  guint keys = 0;

  g_assert_nonnull (example);
  text = mg_test_read (example, NULL);
  g_assert_nonnull (text);
  g_assert_null (strstr (text, "@SYSCONFDIR@"));
  example_run (example, none);

  /* every "#key = value" line, uncommented; the paths it names made to exist under @dir */
  all = g_regex_replace (uncomment, text, -1, 0, "\\1", 0, NULL);
  for (const char *l = all; (l = strchr (l, '\n')) != NULL; l++)
    keys += l[1] != '#' && l[1] != '[' && l[1] != '\n' && l[1] != '\0';
  g_assert_cmpuint (keys, >=, 33); /* [gateway] 14, [serve] 11, policy 8 */
  out = g_string_new (all);
  {
    /* [directory] uncommented names a server that does not exist here: every key of it is loaded against a real
     * slapd by ldap-test.py instead */
    const char *from = strstr (out->str, "\n[directory]\n"), *to = from ? strstr (from + 1, "\n[") : NULL;
    if (from != NULL && to != NULL)
      g_string_erase (out, from - out->str, to - from);
  }
  g_string_replace (out, "/var/lib/mimegate/gnupg", home, 0);
  pass = g_build_filename (dir, "x509.pass", NULL);
  g_string_replace (out, SYSCONFDIR "/mimegate/x509.pass", pass, 0); /* before the store's path, its prefix */
  g_string_replace (out, SYSCONFDIR "/mimegate/x509", store, 0);
  g_assert_cmpint (g_mkdir (home, 0700), ==, 0);
  for (const char *sub = "certs\0ca\0crl\0private\0"; *sub; sub += strlen (sub) + 1) {
    g_autofree char *d = g_build_filename (store, sub, NULL);
    g_assert_cmpint (g_mkdir_with_parents (d, 0700), ==, 0);
  }
  g_free (mg_test_write (dir, "x509.pass", "secret\n", -1));
  g_assert_cmpint (g_chmod (pass, 0600), ==, 0);
  conf = mg_test_write (dir, "all.conf", out->str, (gssize) out->len);
  example_run (conf, none);
  mg_test_rmtree (dir);
}

/* the bash completion offers every option each command's --help lists (gateway/mimegate.bash) */
static void
test_bash_completion (void)
{
  static const char *const commands[] = { "filter", "inspect", "convert", "keys", "serve", "scan" };
  g_autofree char *path = g_test_build_filename (G_TEST_DIST, "..", "gateway", "mimegate.bash", NULL);
  g_autofree char *text = mg_test_read (path, NULL);
  g_autoptr (GRegex) option = g_regex_new ("^  (?:-[a-z], )?(--[a-z-]+)", G_REGEX_MULTILINE, 0, NULL);

  g_assert_nonnull (text);
  for (gsize i = 0; i < G_N_ELEMENTS (commands); i++) {
    g_autofree char *label = g_strdup_printf ("\n        %s) opts=\"", commands[i]);
    const char *at = strstr (text, label);
    g_autofree char *opts = NULL;
    g_autoptr (GMatchInfo) m = NULL;
    const char *argv[] = { mg_test_mimegate (), commands[i], "--help", NULL };
    g_auto (GStrv) env = mg_test_env ("LANGUAGE", NULL, "LC_ALL", "C.UTF-8", NULL);
    MgRun r;
    guint n = 0;

    g_assert_nonnull (at);
    at += strlen (label);
    opts = g_strdup_printf (" %.*s ", (int) strcspn (at, "\""), at);
    g_assert_true (mg_test_run (&r, argv, (const char *const *) env, NULL, 0));
    g_assert_cmpint (r.status, ==, 0);
    for (g_regex_match (option, r.out, 0, &m); g_match_info_matches (m); g_match_info_next (m, NULL)) {
      g_autofree char *name = g_match_info_fetch (m, 1);
      g_autofree char *word = g_strdup_printf (" %s ", name);
      if (strcmp (name, "--help") == 0 || strcmp (name, "--version") == 0)
        continue;
      if (strstr (opts, word) == NULL)
        g_error ("mimegate.bash: %s has no %s", commands[i], name);
      n++;
    }
    g_assert_cmpuint (n, >=, 1);
    mg_run_clear (&r);
  }
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/install/config-default-in-help", test_config_default_in_help);
  g_test_add_func ("/install/example-config", test_example_config);
  g_test_add_func ("/install/bash-completion", test_bash_completion);
  return g_test_run ();
}
