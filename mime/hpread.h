/* hpread.h - header protection coming in: the protected header fields of a decrypted or verified cryptographic
 * payload (RFC 9788 hp="cipher"/hp="clear", and the older protected-headers="v1" of draft-autocrypt-lamps-protected-
 * headers) restored into the delivered message. */
#pragma once

#include <glib.h>

#include "mg-gmime.h"
#include "keys.h"

G_BEGIN_DECLS

/* the most protected fields copied from one payload, and the longest field value (all its lines, RFC 5322 2.1.1
 * limits each line to 998 octets); a field over a limit is not copied */
#define MG_HP_MAX_FIELDS 100
#define MG_HP_MAX_VALUE 8192
#define MG_HP_MAX_LINE 998

typedef enum { MG_HP_NONE, MG_HP_CIPHER, MG_HP_CLEAR, MG_HP_LEGACY } MgHpScheme;

/**
 * MgHp: the protected header fields of one cryptographic payload, already checked (no bare CR or LF, no control
 * characters once decoded, within the limits above); structural fields (Content-*, MIME-Version), HP-Outer and trace
 * or authentication fields (Received, Authentication-Results, DKIM-Signature, ARC-*, ...) are never among them.
 * @payload: (transfer full): the payload the fields were read from
 * @encrypted: the payload came out of decryption (its fields were confidential)
 * @covered: a good signature by a trusted signer covers the payload, its header fields included
 */
typedef struct {
  MgHpScheme scheme;
  GMimeObject *payload;
  gboolean encrypted;
  gboolean covered;
  GPtrArray *names;  /* (element-type utf8): field names as written, in order */
  GPtrArray *values; /* (element-type utf8): each one's value, decoded (RFC 2047) to UTF-8 */
  GPtrArray *raws;   /* (element-type utf8): each one's raw value, folded as it came, with LF line ends */
  GPtrArray *outer;  /* (element-type utf8): "Name: value" of every HP-Outer field that passed the checks */
  guint refused;     /* fields not copied because they failed a check or a limit */
} MgHp;

void mg_hp_free (MgHp *hp);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (MgHp, mg_hp_free)

gboolean mg_hp_name_ok (const char *name);
const char *mg_hp_scheme_name (MgHpScheme scheme);
MgHpScheme mg_hp_scheme (GMimeObject *payload);
MgHp *mg_hp_find (GMimeObject *entity, GMimeObject *unwrapped, gboolean encrypted, gboolean sealed,
                  const MgSignature *verdict, GPtrArray *notes);
void mg_hp_drop_fields (GMimeObject *entity);
void mg_hp_restore (const MgHp *hp, GMimeMessage *message, GMimeObject *delivered, GPtrArray *notes);
GBytes *mg_hp_restore_raw (const MgHp *hp, GBytes *input, GPtrArray *notes);
char *mg_hp_resinfo (const MgHp *hp);

G_END_DECLS
