/* address.c - the one rule for comparing mail addresses across key stores: the local part exactly, the domain without
 * regard to case (RFC 5321 section 2.4). An address that could not be a bare addr-spec is refused, so that neither a
 * display name nor a header fragment ever selects a key. */
#include "config.h"

#include <string.h>

#include "keys.h"

/**
 * mg_keys_address_key - the comparison key of @address: "local@domain" with the domain in lower case.
 *
 * Returns: (transfer full) (nullable): %NULL when @address is not a plain addr-spec (no '@', control characters,
 * white space, angle brackets).
 */
char *
mg_keys_address_key (const char *address)
{
  const char *at;
  g_autofree char *domain = NULL;

  if (address == NULL || *address == '\0' || !g_utf8_validate (address, -1, NULL))
    return NULL;
  for (const char *p = address; *p; p++)
    if ((guchar) *p <= ' ' || *p == '<' || *p == '>' || *p == 0x7f || *p == ',')
      return NULL;
  at = strrchr (address, '@');
  if (at == NULL || at == address || at[1] == '\0')
    return NULL;
  domain = g_utf8_strdown (at + 1, -1);
  return g_strdup_printf ("%.*s@%s", (int) (at - address), address, domain);
}

/* mg_keys_refusal_new - a refused candidate: its id and a translated reason */
MgRefusal *
mg_keys_refusal_new (const char *id, const char *reason)
{
  MgRefusal *r = g_new0 (MgRefusal, 1);

  r->id = g_strdup (id);
  r->reason = g_strdup (reason);
  return r;
}

void
mg_keys_refusal_free (MgRefusal *refusal)
{
  if (refusal == NULL)
    return;
  g_free (refusal->id);
  g_free (refusal->reason);
  g_free (refusal);
}

/* mg_keys_format_time - a UTC date for people and JSON ("2026-11-23"), or "never" for 0 */
char *
mg_keys_format_time (gint64 unix_time)
{
  g_autoptr (GDateTime) dt = NULL;

  if (unix_time <= 0)
    return g_strdup ("never");
  dt = g_date_time_new_from_unix_utc (unix_time);
  return dt ? g_date_time_format (dt, "%Y-%m-%d %H:%M:%S UTC") : g_strdup ("?");
}

/* mg_sig_result_name - the RFC 8601 result keyword */
const char *
mg_sig_result_name (MgSigResult result)
{
  static const char *const names[] = { "pass", "fail", "neutral", "temperror", "permerror" };

  return result < G_N_ELEMENTS (names) ? names[result] : "permerror";
}

MgSignature *
mg_signature_new (MgSigResult result, const char *reason)
{
  MgSignature *sig = g_new0 (MgSignature, 1);

  sig->result = result;
  sig->reason = g_strdup (reason);
  return sig;
}

void
mg_signature_free (MgSignature *sig)
{
  if (sig == NULL)
    return;
  g_free (sig->signer);
  g_free (sig->id);
  g_free (sig->reason);
  g_free (sig);
}
