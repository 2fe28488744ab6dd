/* fuzz-convert.c - harness 2: the whole conversion engine on one message, with real test keys the gateway holds
 * (an OpenPGP key in a temporary GnuPG home, an X.509 key in a temporary store), so that decryption paths run.
 * The first byte picks the form; the rest is the message. Keys are made once per process and removed at exit. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <gmime/gmime.h>
#include <glib/gstdio.h>

#include "convert.h"
#include "rnp.h"
#include "fuzz.h"

static char *dir;
static MgGnupg *gnupg;
static MgX509Store *x509;
static MgLimits limits;

static void
sh (const char *script)
{
  const char *argv[] = { "/bin/sh", "-ec", script, NULL };
  int status = -1;

  if (!g_spawn_sync (dir, (char **) argv, NULL, G_SPAWN_STDOUT_TO_DEV_NULL | G_SPAWN_STDERR_TO_DEV_NULL, NULL, NULL,
                     NULL, NULL, &status, NULL) ||
      !g_spawn_check_wait_status (status, NULL))
    g_error ("fuzz-convert: making the test keys failed: %s", script);
}

static void
cleanup (void)
{
  g_clear_pointer (&gnupg, mg_gnupg_free);
  g_clear_pointer (&x509, mg_x509_store_free);
  sh ("gpgconf --homedir g --kill all; cd / && rm -rf \"$OLDPWD\"");
}

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  mg_fuzz_strict ();
  g_autofree char *home = NULL, *store = NULL;

  g_mime_init ();
  dir = g_dir_make_tmp ("mgfz-XXXXXX", NULL);
  g_assert_nonnull (dir);
  sh ("mkdir -m 700 g && echo allow-loopback-pinentry > g/gpg-agent.conf && "
      "gpg --homedir g --batch --passphrase '' --quick-gen-key alice@example.org ed25519 sign never && "
      "fpr=$(gpg --homedir g --with-colons -k alice@example.org | awk -F: '/^fpr/{print $10; exit}') && "
      "gpg --homedir g --batch --passphrase '' --quick-add-key \"$fpr\" cv25519 encr never && "
      "mkdir -p -m 700 x/ca x/certs x/private && "
      "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out x/ca/root.pem -days 30 -subj /CN=root && "
      "printf 'subjectAltName=email:carol@example.net\\nkeyUsage=digitalSignature,keyEncipherment\\n' > ext && "
      "openssl req -newkey rsa:2048 -nodes -keyout x/private/carol.key -out carol.csr -subj /CN=carol && "
      "openssl x509 -req -in carol.csr -CA x/ca/root.pem -CAkey ca.key -CAcreateserial -out x/certs/carol.pem "
      "-days 30 -extfile ext && chmod 600 x/private/carol.key");
  home = g_build_filename (dir, "g", NULL);
  store = g_build_filename (dir, "x", NULL);
  gnupg = mg_gnupg_open (home, MG_TRUST_ALWAYS, 0, NULL);
  x509 = mg_x509_store_open (store, NULL, NULL);
  g_assert_true (gnupg != NULL && x509 != NULL);
  mg_limits_init_default (&limits);
  limits.max_decompressed = 8 * 1024 * 1024;
  mg_gnupg_set_max_output (gnupg, limits.max_decompressed);
  /* librnp's crypto library (Botan) sets up static state on first use and tears it down at exit: make it before
   * cleanup is registered, so that cleanup (which frees the store's librnp context) runs before that teardown */
  mg_rnp_free (mg_rnp_new (NULL));
  atexit (cleanup);
  return 0;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  static const char *const pgp[] = { "alice@example.org", NULL };
  static const char *const smime[] = { "carol@example.net", NULL };
  MgConvertKeys keys = { 0 };
  MgConvertResult result;
  g_autoptr (GBytes) input = NULL, output = NULL;
  g_autoptr (GError) error = NULL;
  MgForm form;

  if (size < 1)
    return 0;
  form = (MgForm) (data[0] % MG_FORM_COUNT);
  input = g_bytes_new (data + 1, size - 1);
  keys.gnupg = gnupg;
  keys.x509 = x509;
  keys.limits = &limits;
  keys.authserv_id = "fuzz.example";
  keys.gcm = (data[0] / MG_FORM_COUNT) % 2;
  mg_convert_result_init (&result);
  output = mg_convert (input, form, form == MG_FORM_SMIME ? smime : pgp, &keys, &result, &error);
  /* exactly one of: a result, or an error that says why */
  g_assert_true ((output == NULL) == (error != NULL));
  if (output != NULL && (form == MG_FORM_PGP_MIME || form == MG_FORM_PGP_INLINE || form == MG_FORM_SMIME) &&
      g_strcmp0 (result.action, "kept") != 0)
    g_assert_nonnull (result.keys);
  mg_convert_result_clear (&result);
  return 0;
}
