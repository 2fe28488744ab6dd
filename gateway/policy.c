/* policy.c - the policy groups of the configuration file, resolved per recipient.
 *
 * Groups: [address ADDR] (the whole address without regard to case, as every key store compares it:
 * mg_keys_address_key), [domain NAME] (NAME and its subdomains, in any case (mg_keys_domain_key); the longest matching
 * NAME is the most specific), [default]. Each key is taken from the most
 * specific group that sets it, so a domain rule can require encryption while the default picks the signing identity.
 * Every value is checked when the file is loaded: a bad value anywhere is a configuration error naming file, line
 * and key, never a silent default. */
#include "config.h"

#include "policy.h"

#include <string.h>

#include <glib/gi18n.h>

#include "keys.h"

static const char *const encrypt_names[] = { "never", "opportunistic", "required", NULL };
static const char *const form_names[] = { "auto", "keep", "plain", "pgp-mime", "pgp-inline", "smime", NULL };
static const char *const sign_names[] = { "none", "auto", "pgp", "pgp-inline", "smime", NULL };
static const char *const error_names[] = { "defer", "pass", NULL };
static const char *const cipher_names[] = { "aes-cbc", "aes-gcm", NULL };
static const char *const hp_names[] = { "off", "sign-only", "obscure", NULL }; /* in MgHeaderProtection order */
static const char *const bool_names[] = { "false", "true", "no", "yes", "0", "1", NULL };

typedef struct {
  const char *key;
  const char *const *choices; /* NULL: an address */
} PolicyKey;

static const PolicyKey policy_keys[] = {
  { "encrypt", encrypt_names }, { "form", form_names },           { "inline-only", bool_names },
  { "decrypt", bool_names },    { "sign", sign_names },           { "sign-as", NULL },
  { "on-error", error_names },  { "smime-cipher", cipher_names }, { "header-protection", hp_names },
};

static int
choice_index (const char *const *choices, const char *value)
{
  for (int i = 0; choices[i] != NULL; i++)
    if (g_ascii_strcasecmp (value, choices[i]) == 0)
      return i;
  return -1;
}

/* mg_policy_check - every key of every policy group known and every value valid */
gboolean
mg_policy_check (const MgConfig *config, GError **error)
{
  g_auto (GStrv) groups = g_key_file_get_groups (config->keyfile, NULL);

  for (guint i = 0; groups[i] != NULL; i++) {
    g_auto (GStrv) keys = NULL;
    if (strcmp (groups[i], "gateway") == 0 || strcmp (groups[i], "serve") == 0 || strcmp (groups[i], "directory") == 0)
      continue;
    if (g_str_has_prefix (groups[i], "address ")) {
      g_autofree char *addr = mg_keys_address_key (groups[i] + 8);
      if (addr == NULL) {
        g_autofree char *at = mg_config_where (config, groups[i], NULL);
        g_set_error (error, G_KEY_FILE_ERROR, G_KEY_FILE_ERROR_INVALID_VALUE, _ ("%s: [%s] is not a mail address"), at,
                     groups[i]);
        return FALSE;
      }
    }
    keys = g_key_file_get_keys (config->keyfile, groups[i], NULL, NULL);
    for (guint k = 0; keys != NULL && keys[k] != NULL; k++) {
      const PolicyKey *pk = NULL;
      g_autofree char *value = g_key_file_get_string (config->keyfile, groups[i], keys[k], NULL);
      g_autofree char *at = mg_config_where (config, groups[i], keys[k]);
      for (gsize p = 0; p < G_N_ELEMENTS (policy_keys); p++)
        if (strcmp (policy_keys[p].key, keys[k]) == 0)
          pk = &policy_keys[p];
      if (pk == NULL) {
        g_set_error (error, G_KEY_FILE_ERROR, G_KEY_FILE_ERROR_KEY_NOT_FOUND, _ ("%s: [%s] unknown key \"%s\""), at,
                     groups[i], keys[k]);
        return FALSE;
      }
      g_strstrip (value);
      if (pk->choices != NULL && choice_index (pk->choices, value) < 0) {
        g_autofree char *list = g_strjoinv (", ", (char **) pk->choices);
        g_set_error (error, G_KEY_FILE_ERROR, G_KEY_FILE_ERROR_INVALID_VALUE,
                     _ ("%s: [%s] %s = \"%s\" is not one of: %s"), at, groups[i], keys[k], value, list);
        return FALSE;
      }
      if (pk->choices == NULL) {
        g_autofree char *addr = mg_keys_address_key (value);
        if (addr == NULL) {
          g_set_error (error, G_KEY_FILE_ERROR, G_KEY_FILE_ERROR_INVALID_VALUE,
                       _ ("%s: [%s] %s = \"%s\" is not a mail address"), at, groups[i], keys[k], value);
          return FALSE;
        }
      }
    }
  }
  return TRUE;
}

/* groups_for - the policy groups that apply to @address, most specific first */
static GPtrArray *
groups_for (const MgConfig *config, const char *address)
{
  GPtrArray *out = g_ptr_array_new_with_free_func (g_free);
  g_autofree char *want = mg_keys_address_key (address);
  const char *domain = want ? strrchr (want, '@') + 1 : NULL;
  g_auto (GStrv) groups = NULL;

  if (config->keyfile == NULL)
    return out;
  groups = g_key_file_get_groups (config->keyfile, NULL);
  for (guint i = 0; want != NULL && groups[i] != NULL; i++) {
    if (g_str_has_prefix (groups[i], "address ")) {
      g_autofree char *a = mg_keys_address_key (groups[i] + 8);
      if (g_strcmp0 (a, want) == 0)
        g_ptr_array_add (out, g_strdup (groups[i]));
    }
  }
  /* domains, longest (most specific) first: NAME matches NAME and every subdomain of it */
  for (const char *d = domain; d != NULL;) {
    for (guint i = 0; groups[i] != NULL; i++) {
      g_autofree char *name = g_str_has_prefix (groups[i], "domain ") ? mg_keys_domain_key (groups[i] + 7) : NULL;
      if (g_strcmp0 (name, d) == 0)
        g_ptr_array_add (out, g_strdup (groups[i]));
    }
    d = strchr (d, '.');
    if (d != NULL)
      d++;
  }
  if (g_key_file_has_group (config->keyfile, "default"))
    g_ptr_array_add (out, g_strdup ("default"));
  return out;
}

/* lookup - the value of @key from the first of @groups that sets it */
static char *
lookup (const MgConfig *config, GPtrArray *groups, const char *key)
{
  for (guint i = 0; i < groups->len; i++) {
    char *v = g_key_file_get_string (config->keyfile, g_ptr_array_index (groups, i), key, NULL);
    if (v != NULL)
      return g_strstrip (v);
  }
  return NULL;
}

static int
lookup_choice (const MgConfig *config, GPtrArray *groups, const char *key, const char *const *choices, int fallback)
{
  g_autofree char *v = lookup (config, groups, key);
  int i = v ? choice_index (choices, v) : -1;

  return i < 0 ? fallback : i;
}

/* mg_policy_for - @address's policy (built-in defaults: encrypt = opportunistic, form = auto, decrypt = true, sign =
 * none, on-error = defer, smime-cipher = aes-cbc, header-protection = obscure) */
MgPolicy *
mg_policy_for (const MgConfig *config, const char *address)
{
  g_autoptr (GPtrArray) groups = groups_for (config, address);
  MgPolicy *p = g_new0 (MgPolicy, 1);
  int form = lookup_choice (config, groups, "form", form_names, 0);

  p->encrypt = (MgEncryptPolicy) lookup_choice (config, groups, "encrypt", encrypt_names, MG_ENCRYPT_OPPORTUNISTIC);
  p->form_auto = form == 0;
  p->form = form == 0 ? MG_FORM_KEEP : (MgForm) (form - 1);
  p->inline_only = lookup_choice (config, groups, "inline-only", bool_names, 0) % 2 == 1;
  p->decrypt = lookup_choice (config, groups, "decrypt", bool_names, 1) % 2 == 1;
  p->sign = (MgSignMethod) lookup_choice (config, groups, "sign", sign_names, MG_SIGN_NONE);
  p->sign_as = lookup (config, groups, "sign-as");
  p->pass_on_error = lookup_choice (config, groups, "on-error", error_names, 0) == 1;
  p->gcm = lookup_choice (config, groups, "smime-cipher", cipher_names, 0) == 1;
  p->header_protection =
    (MgHeaderProtection) lookup_choice (config, groups, "header-protection", hp_names, MG_HP_DEFAULT);
  p->rule = g_strdup (groups->len > 0 ? g_ptr_array_index (groups, 0) : "built-in");
  return p;
}

void
mg_policy_free (MgPolicy *policy)
{
  if (policy == NULL)
    return;
  g_free (policy->sign_as);
  g_free (policy->rule);
  g_free (policy);
}
