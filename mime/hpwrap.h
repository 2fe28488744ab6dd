/* hpwrap.h - header protection going out (RFC 9788): the message's header fields carried inside the cryptographic
 * payload, and the outer header obscured by the header confidentiality policy. */
#pragma once

#include <glib.h>
#include <gmime/gmime.h>

G_BEGIN_DECLS

/**
 * MgHeaderProtection: the `header-protection` policy key.
 * @MG_HP_OFF: the cryptographic payload is left as it is (the bytes mimegate made before RFC 9788 support)
 * @MG_HP_SIGN_ONLY: the header fields are copied into the payload (hp="cipher" when encrypted, hp="clear" when only
 *   signed, HP-Outer when encrypted); the outer header is left as it is (RFC 9788 hcp_no_confidentiality)
 * @MG_HP_OBSCURE: as sign-only, and an encrypted message's outer header follows RFC 9788 hcp_baseline: Subject
 *   becomes "[...]", Comments and Keywords are removed, every other field stays; the main body parts inside show
 *   what was hidden (RFC 9788 Legacy Display Element, hp-legacy-display="1"). Only signed: as sign-only.
 */
typedef enum { MG_HP_OFF, MG_HP_SIGN_ONLY, MG_HP_OBSCURE, MG_HP_COUNT } MgHeaderProtection;

/* the built-in default: obscure (what is encrypted keeps its Subject inside; what is only signed is as sign-only);
 * README "Header protection" says why */
#define MG_HP_DEFAULT MG_HP_OBSCURE

const char *mg_hp_name (MgHeaderProtection hp);
gboolean mg_hp_from_name (const char *name, MgHeaderProtection *hp);

GBytes *mg_hpwrap_entity (GMimeMessage *message, GBytes *entity, MgHeaderProtection hp, gboolean encrypting,
                          GPtrArray *notes);
void mg_hpwrap_inline (GMimeMessage *message, MgHeaderProtection hp, GPtrArray *notes);

G_END_DECLS
