/* policy.h - what each recipient gets: the [default], [domain NAME] and [address ADDR] groups (DESIGN.md "Policy"). */
#pragma once

#include <glib.h>

#include "convert.h"
#include "settings.h"

G_BEGIN_DECLS

typedef enum { MG_ENCRYPT_NEVER, MG_ENCRYPT_OPPORTUNISTIC, MG_ENCRYPT_REQUIRED } MgEncryptPolicy;

/**
 * MgPolicy: one recipient's policy, key by key from the most specific group that sets it.
 * @form_auto: form = auto (then @form is unused)
 * @sign_as: (nullable): the signing identity; %NULL: the envelope sender
 * @header_protection: RFC 9788 header protection of what is signed or encrypted (default MG_HP_DEFAULT)
 * @rule: the most specific group that applies ("address a@b", "domain b", "default" or "built-in"), for the log
 */
typedef struct {
  MgEncryptPolicy encrypt;
  gboolean form_auto;
  MgForm form;
  gboolean inline_only;
  gboolean decrypt;
  MgSignMethod sign;
  char *sign_as;
  gboolean pass_on_error;
  gboolean gcm;
  MgHeaderProtection header_protection;
  char *rule;
} MgPolicy;

gboolean mg_policy_check (const MgConfig *config, GError **error);
MgPolicy *mg_policy_for (const MgConfig *config, const char *address);
void mg_policy_free (MgPolicy *policy);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (MgPolicy, mg_policy_free)

G_END_DECLS
