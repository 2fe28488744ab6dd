/* keys.c - the keys module's error domain and the single place where OpenSSL's error queue becomes a GError. */
#include "config.h"

#include "keys.h"

#include <openssl/err.h>

GQuark
mg_keys_error_quark (void)
{
  return g_quark_from_static_string ("mg-keys-error-quark");
}

/* mg_keys_error_is_transient - whether @error should defer mail rather than refuse it */
gboolean
mg_keys_error_is_transient (const GError *error)
{
  return error != NULL && error->domain == MG_KEYS_ERROR && error->code == MG_KEYS_ERROR_STORE;
}

/**
 * mg_keys_set_openssl_error - drain OpenSSL's thread error queue into @error.
 * @what: a short human description of the operation that failed ("cannot parse CMS")
 *
 * The queue is always emptied, so that a later failure does not report an old reason.
 */
void
mg_keys_set_openssl_error (GError **error, MgKeysError code, const char *what)
{
  unsigned long e = ERR_get_error ();
  char reason[256] = "";

  if (e != 0)
    ERR_error_string_n (e, reason, sizeof reason);
  ERR_clear_error ();
  if (reason[0] != '\0')
    g_set_error (error, MG_KEYS_ERROR, code, "%s: %s", what, reason);
  else
    g_set_error_literal (error, MG_KEYS_ERROR, code, what);
}
