/* test-install.c - mimegate as a package installs it: the compiled-in paths each command names in --help, and the
 * example configuration (gateway/mimegate.conf) that becomes /etc/mimegate/mimegate.conf. */
#include "config.h"

#include <string.h>

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

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/install/config-default-in-help", test_config_default_in_help);
  return g_test_run ();
}
