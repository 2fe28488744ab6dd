/* convert.c - `mimegate convert [-c CONF] --to FORM -r ADDR... [-o FILE] FILE`: one message into one form.
 *
 * The result goes to stdout, or to FILE (created 0600: it may be clear text). Nothing is written before the whole
 * conversion has succeeded. Failures print one line that starts with an RFC 3463 code, as the filter will: 5.7.x
 * when a recipient has no usable key or the message is encrypted to keys the gateway does not hold (exit 69, naming
 * the address or the key ids), 4.x.x for what may pass (a store or the agent unavailable: exit 75; no key for the
 * --sign identity: exit 78). */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include <glib/gi18n.h>
#include <glib/gstdio.h>

#include "cli.h"
#include "convert.h"
#include "harvest.h"
#include "sources.h"

/* status - the exit code and RFC 3463 code for a conversion failure */
static int
status (const GError *error, const char **code)
{
  if (error->domain == MG_KEYS_ERROR && mg_keys_error_is_transient (error)) {
    *code = "4.7.0";
    return MG_EXIT_TEMPFAIL;
  }
  if (g_error_matches (error, MG_CONVERT_ERROR, MG_CONVERT_ERROR_INTERNAL)) {
    *code = "4.3.0";
    return MG_EXIT_TEMPFAIL;
  }
  if (error->domain == MG_CONVERT_ERROR && error->code == MG_CONVERT_ERROR_NO_SIGNER) {
    *code = "4.3.5"; /* the signing identity is configured, its key is not there */
    return MG_EXIT_CONFIG;
  }
  if (error->domain == MG_CONVERT_ERROR && error->code == MG_CONVERT_ERROR_NO_KEY)
    *code = "5.7.1";
  else if (error->domain == MG_KEYS_ERROR && error->code == MG_KEYS_ERROR_LIMIT)
    *code = "5.3.4"; /* decrypted content over max-decompressed */
  else if (error->domain == MG_KEYS_ERROR)
    *code = "5.7.5"; /* not held, no integrity protection, broken ciphertext */
  else
    *code = "5.6.0"; /* unsupported or malformed content */
  return MG_EXIT_UNAVAILABLE;
}

static gboolean
write_output (const char *path, GBytes *data, GError **error)
{
  gsize len = g_bytes_get_size (data);

  if (path == NULL) {
    if (len > 0 && fwrite (g_bytes_get_data (data, NULL), 1, len, stdout) != len) {
      g_set_error_literal (error, G_FILE_ERROR, G_FILE_ERROR_IO, _ ("cannot write the output"));
      return FALSE;
    }
    return fflush (stdout) == 0;
  }
  /* write, fsync, rename: FILE is either the whole result or untouched; 0600 because it may be clear text */
  return g_file_set_contents_full (path, g_bytes_get_data (data, NULL), (gssize) len, G_FILE_SET_CONTENTS_CONSISTENT,
                                   0600, error);
}

int
mg_cmd_convert (int argc, char **argv)
{
  g_autofree char *conf = NULL, *to = NULL, *output = NULL, *sign = NULL, *sign_method = NULL;
  g_autofree char *hp = NULL;
  g_auto (GStrv) recipients = NULL;
  gboolean gcm = FALSE;
  g_autofree char *conf_help = mg_cli_config_help (FALSE);
  GOptionEntry entries[] = {
    { "config", 'c', 0, G_OPTION_ARG_FILENAME, &conf, conf_help, N_ ("CONF") },
    { "to", 0, 0, G_OPTION_ARG_STRING, &to, N_ ("Form to produce: keep, plain, pgp-mime, pgp-inline or smime"),
      N_ ("FORM") },
    { "recipient", 'r', 0, G_OPTION_ARG_STRING_ARRAY, &recipients, N_ ("Recipient address (repeatable)"),
      N_ ("ADDRESS") },
    { "output", 'o', 0, G_OPTION_ARG_FILENAME, &output, N_ ("Write the result to FILE instead of stdout"),
      N_ ("FILE") },
    { "sign", 0, 0, G_OPTION_ARG_STRING, &sign, N_ ("Sign as this identity (a key the gateway holds)"),
      N_ ("ADDRESS") },
    { "sign-method", 0, 0, G_OPTION_ARG_STRING, &sign_method,
      N_ ("How to sign: auto (default: as the form implies), pgp, pgp-inline or smime"), N_ ("METHOD") },
    { "aes-gcm", 0, 0, G_OPTION_ARG_NONE, &gcm, N_ ("S/MIME: authEnveloped-data with AES-256-GCM"), NULL },
    { "header-protection", 0, 0, G_OPTION_ARG_STRING, &hp,
      N_ ("RFC 9788 header protection: off, sign-only or obscure (default)"), N_ ("MODE") },
    { NULL },
  };
  g_autoptr (GOptionContext) ctx = mg_cli_context ("convert", entries);
  g_autoptr (MgConfig) config = NULL;
  g_autoptr (MgGnupg) gnupg = NULL;
  g_autoptr (MgX509Store) x509 = NULL;
  g_autoptr (GError) error = NULL;
  g_autoptr (GMappedFile) map = NULL;
  g_autoptr (GBytes) input = NULL, result_bytes = NULL;
  MgConvertResult result;
  MgConvertKeys keys = { 0 };
  MgForm form;
  int code;

  if (!mg_cli_parse ("convert", ctx, &argc, &argv, MG_EXIT_USAGE, &code))
    return code;
  if (to == NULL) {
    mg_cli_usage_error ("convert", MG_EXIT_USAGE, "%s", _ ("--to FORM is required"));
    return MG_EXIT_USAGE;
  }
  if (!mg_form_from_name (to, &form)) {
    mg_cli_usage_error ("convert", MG_EXIT_USAGE, _ ("unknown form \"%s\" (keep, plain, pgp-mime, pgp-inline, smime)"),
                        to);
    return MG_EXIT_USAGE;
  }
  if (recipients == NULL || recipients[0] == NULL) {
    mg_cli_usage_error ("convert", MG_EXIT_USAGE, "%s", _ ("at least one -r ADDRESS is required"));
    return MG_EXIT_USAGE;
  }
  if (argc != 2) {
    mg_cli_usage_error ("convert", MG_EXIT_USAGE, "%s", _ ("exactly one FILE is required"));
    return MG_EXIT_USAGE;
  }
  keys.sign = sign != NULL ? MG_SIGN_AUTO : MG_SIGN_NONE;
  if (sign_method != NULL && (!mg_sign_method_from_name (sign_method, &keys.sign) || keys.sign == MG_SIGN_NONE)) {
    mg_cli_usage_error ("convert", MG_EXIT_USAGE, _ ("unknown signing method \"%s\" (auto, pgp, pgp-inline, smime)"),
                        sign_method);
    return MG_EXIT_USAGE;
  }
  if (sign_method != NULL && sign == NULL) {
    mg_cli_usage_error ("convert", MG_EXIT_USAGE, "%s", _ ("--sign-method needs --sign ADDRESS"));
    return MG_EXIT_USAGE;
  }
  keys.sign_as = sign;
  keys.header_protection = MG_HP_DEFAULT;
  if (hp != NULL && !mg_hp_from_name (hp, &keys.header_protection)) {
    mg_cli_usage_error ("convert", MG_EXIT_USAGE, _ ("unknown header protection \"%s\" (off, sign-only, obscure)"), hp);
    return MG_EXIT_USAGE;
  }
  config = mg_cli_config ("convert", conf, &code);
  if (config == NULL)
    return code;
  map = g_mapped_file_new (argv[1], FALSE, &error);
  if (map == NULL) {
    fprintf (stderr, "mimegate convert: %s\n", error->message);
    return MG_EXIT_NOINPUT;
  }
  input = g_mapped_file_get_bytes (map);
  if (!mg_cli_open_stores ("convert", config, &gnupg, &x509, &code))
    return code;
  keys.gnupg = gnupg;
  keys.x509 = x509;
  keys.limits = &config->limits;
  keys.gcm = gcm;
  keys.authserv_id = mg_authserv_id_valid (config->authserv_id) ? config->authserv_id : "localhost";
  mg_convert_result_init (&result);
  result_bytes = mg_convert (input, form, (const char *const *) recipients, &keys, &result, &error);
  if (result_bytes != NULL) {
    g_autoptr (GPtrArray) notes = g_ptr_array_new_with_free_func (g_free);
    mg_harvest_message (config, x509, input, result.signature, notes);
    for (guint i = 0; i < notes->len; i++)
      fprintf (stderr, "mimegate convert: %s\n", (const char *) g_ptr_array_index (notes, i));
  }
  mg_convert_result_clear (&result);
  if (result_bytes == NULL) {
    const char *rfc3463;
    int exit_code = status (error, &rfc3463);
    g_autofree char *line = g_strdup (error->message);
    g_strdelimit (line, "\r\n", ' ');
    fprintf (stderr, "%s mimegate convert: %s\n", rfc3463, line);
    return exit_code;
  }
  if (!write_output (output, result_bytes, &error)) {
    fprintf (stderr, "mimegate convert: %s\n", error ? error->message : _ ("cannot write the output"));
    return MG_EXIT_TEMPFAIL;
  }
  return MG_EXIT_OK;
}
