/* address.c - the one rule for comparing mail addresses across key stores and policy: the whole address, local part
 * and domain, without regard to case. Every matcher (OpenPGP user IDs and the address index, X.509 certificate
 * names, the policy groups [address] and [domain], the message's own To/Cc) turns both sides into a key here and
 * compares keys byte for byte, never a substring. GnuPG's `<addr>` search and Postfix tables fold the whole address
 * too; RFC 5321 section 2.4 lets a server treat local-part case as significant, but discourages relying on it, and
 * real address books capitalise local parts. An address that could not be a bare addr-spec is refused, so that
 * neither a display name nor a header fragment ever selects a key.
 *
 * Folding: ASCII letters in lower case. Text with other characters gets Unicode's canonical caseless form (Unicode
 * 15, D145: NFD, then full case folding with g_utf8_casefold(), then NFC so that the key stays compact), so that
 * "JÖSÉ" matches "jösé" whether either is written composed or decomposed. One exception, for safety: a non-ASCII
 * character whose folding is plain ASCII (ß → "ss", ſ → "s", the ligature ﬁ → "fi") is only lowered (ẞ → ß), so an
 * ASCII address is never matched by a non-ASCII one and GnuPG's ASCII-folding `<addr>` search finds every key the
 * rule matches. */
#include "config.h"

#include <string.h>

#include "keys.h"

/* plain_text - no control characters, white space, angle brackets or commas: what an addr-spec key may hold */
static gboolean
plain_text (const char *text)
{
  for (const char *p = text; *p; p++)
    if ((guchar) *p <= ' ' || *p == '<' || *p == '>' || *p == 0x7f || *p == ',')
      return FALSE;
  return TRUE;
}

/* fold - @text (valid UTF-8) without case, by the rule in this file's comment */
static char *
fold (const char *text)
{
  g_autofree char *nfd = NULL;
  g_autoptr (GString) out = NULL;

  if (g_str_is_ascii (text))
    return g_ascii_strdown (text, -1);
  nfd = g_utf8_normalize (text, -1, G_NORMALIZE_NFD);
  if (nfd == NULL)
    return NULL;
  out = g_string_sized_new (strlen (nfd));
  for (const char *p = nfd; *p; p = g_utf8_next_char (p)) {
    gunichar c = g_utf8_get_char (p);
    gsize len = (gsize) (g_utf8_next_char (p) - p);
    g_autofree char *f = NULL;
    if (c < 0x80) {
      g_string_append_c (out, g_ascii_tolower ((char) c));
      continue;
    }
    f = g_utf8_casefold (p, (gssize) len);
    if (!g_str_is_ascii (f))
      g_string_append (out, f);
    else if (g_unichar_tolower (c) >= 0x80)
      g_string_append_unichar (out, g_unichar_tolower (c));
    else
      g_string_append_len (out, p, (gssize) len);
  }
  return g_utf8_normalize (out->str, (gssize) out->len, G_NORMALIZE_NFC);
}

/**
 * mg_keys_address_key - the lookup key of @address: the single place where an address becomes what matchers compare.
 * Two addresses are the same mailbox for mimegate exactly when their keys are equal (strcmp).
 *
 * Returns: (transfer full) (nullable): the folded "local@domain", or %NULL when @address is not a plain addr-spec (no
 * '@', not UTF-8, control characters, white space, angle brackets, commas).
 */
char *
mg_keys_address_key (const char *address)
{
  const char *at;
  g_autofree char *key = NULL;

  if (address == NULL || *address == '\0' || !g_utf8_validate (address, -1, NULL) || !plain_text (address))
    return NULL;
  at = strrchr (address, '@');
  if (at == NULL || at == address || at[1] == '\0')
    return NULL;
  key = fold (address);
  /* folding never makes specials, but the key is what gets compared: check it as well */
  if (key == NULL || !plain_text (key) || strrchr (key, '@') == NULL)
    return NULL;
  return g_steal_pointer (&key);
}

/**
 * mg_keys_address_copy - @address as written, when it is a plain addr-spec (what mg_keys_address_key accepts): for
 * showing an address (a signer in Authentication-Results), never for comparing one.
 *
 * Returns: (transfer full) (nullable): %NULL when @address is not an address
 */
char *
mg_keys_address_copy (const char *address)
{
  g_autofree char *key = mg_keys_address_key (address);

  return key != NULL ? g_strdup (address) : NULL;
}

/**
 * mg_keys_domain_key - the lookup key of a domain name (a policy group's [domain NAME]), folded exactly as the
 * domain of mg_keys_address_key(), so that it can be compared with the part after the '@' of an address key and with
 * each of its parent domains.
 *
 * Returns: (transfer full) (nullable): %NULL when @domain is empty, not UTF-8, or holds an '@' or white space
 */
char *
mg_keys_domain_key (const char *domain)
{
  if (domain == NULL || *domain == '\0' || !g_utf8_validate (domain, -1, NULL) || !plain_text (domain) ||
      strchr (domain, '@') != NULL)
    return NULL;
  return fold (domain);
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

/* mg_expiry_new - (transfer full): an expiry entry without addresses yet (add them to @addresses) */
MgExpiry *
mg_expiry_new (const char *store, const char *source, const char *id, const char *serial, gint64 expires)
{
  MgExpiry *e = g_new0 (MgExpiry, 1);

  e->store = g_strdup (store);
  e->source = g_strdup (source);
  e->id = g_strdup (id);
  e->serial = g_strdup (serial);
  e->addresses = g_ptr_array_new_with_free_func (g_free);
  e->expires = expires;
  return e;
}

void
mg_expiry_free (MgExpiry *expiry)
{
  if (expiry == NULL)
    return;
  g_free (expiry->store);
  g_free (expiry->source);
  g_free (expiry->id);
  g_free (expiry->serial);
  g_ptr_array_unref (expiry->addresses);
  g_free (expiry);
}

void
mg_keys_refusal_free (MgRefusal *refusal)
{
  if (refusal == NULL)
    return;
  g_free (refusal->id);
  g_free (refusal->reason);
  g_free (refusal->source);
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
  g_clear_pointer (&sig->certs, g_ptr_array_unref);
  g_free (sig);
}
