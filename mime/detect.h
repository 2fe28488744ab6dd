/* detect.h - what a message is: every MIME part with its path, content type and kind of protection.
 *
 * Detection needs no keys. It is the ground every later decision stands on (policy, conversion, logging), so it
 * never fails as a whole: what cannot be parsed is reported as such, and the rest is still reported. */
#pragma once

#include <glib.h>
#include <gmime/gmime.h>

#include "info.h"

G_BEGIN_DECLS

#define MG_DETECT_ERROR (mg_detect_error_quark ())

/**
 * MgDetectError:
 * @MG_DETECT_ERROR_MALFORMED: the data is not what it claims to be (permanent)
 * @MG_DETECT_ERROR_LIMIT: a configured limit stopped the work (permanent for this message)
 */
typedef enum {
  MG_DETECT_ERROR_MALFORMED,
  MG_DETECT_ERROR_LIMIT,
} MgDetectError;

GQuark mg_detect_error_quark (void);

/* Armor blocks looked at per text part; more are ignored (and reported). */
#define MG_DETECT_MAX_ARMOR_BLOCKS 64

/**
 * MgKind: the kinds of payload DESIGN.md names. Their names (mg_kind_name()) are an interface: scripts rely on them.
 */
typedef enum {
  MG_KIND_PLAIN,
  MG_KIND_PGP_MIME_ENCRYPTED,
  MG_KIND_PGP_MIME_SIGNED,
  MG_KIND_PGP_MIME_MANGLED,
  MG_KIND_PGP_INLINE_ENCRYPTED,
  MG_KIND_PGP_INLINE_SIGNED,
  MG_KIND_PGP_INLINE_KEY,
  MG_KIND_PGP_ATTACHMENT_ENCRYPTED,
  MG_KIND_SMIME_ENVELOPED,
  MG_KIND_SMIME_SIGNED_OPAQUE,
  MG_KIND_SMIME_SIGNED_DETACHED,
  MG_KIND_SMIME_COMPRESSED,
  MG_KIND_COUNT
} MgKind;

#define MG_KIND_BIT(k) (1u << (k))

const char *mg_kind_name (MgKind kind);
gboolean mg_kind_from_name (const char *name, MgKind *kind);

/**
 * MgLimits: bounds on the work done for one message. Hitting one is an outcome recorded in the report, not a crash.
 */
typedef struct {
  gsize max_size;         /* bytes of one message */
  guint max_depth;        /* MIME nesting levels */
  guint max_parts;        /* MIME parts */
  gsize max_decompressed; /* bytes of clear text one decryption may yield (OpenPGP compression can multiply) */
  gsize spool_threshold;  /* a message or result larger than this is held in a file (spool.h), not in memory */
  const char *spool_dir;  /* (nullable): where (borrowed from the configuration; NULL: TMPDIR, else /tmp) */
} MgLimits;

#define MG_LIMIT_DEFAULT_MAX_SIZE ((gsize) 90 * 1024 * 1024) /* a 60 MB attachment in base64 is 81 MiB */
#define MG_LIMIT_DEFAULT_MAX_DEPTH 64
#define MG_LIMIT_DEFAULT_MAX_PARTS 10000
#define MG_LIMIT_DEFAULT_MAX_DECOMPRESSED ((gsize) 256 * 1024 * 1024)
#define MG_LIMIT_DEFAULT_SPOOL_THRESHOLD ((gsize) 1024 * 1024)

void mg_limits_init_default (MgLimits *limits);

/**
 * MgPart: one MIME part (or a file that is a bare CMS or OpenPGP object).
 * @path: "1" for the message body, "1.2" its second child, "1.2.1" the body of a forwarded message in part 1.2
 * @content_type: "type/subtype" in lower case
 * @role: (nullable): the part's place in a protocol: "signed-content", "signature", "control", "ciphertext",
 *   "empty-body", "forwarded", "detached-signature", "raw-file"; static strings
 * @kinds: every kind seen in this part (an armored text may hold a signed message and a key)
 * @error: (nullable): what is wrong with this part
 */
typedef struct {
  char *path;
  guint depth;
  char *content_type;
  char *filename;
  char *encoding;
  const char *role;
  MgKind kind;
  guint kinds;
  MgCryptoInfo info;
  char *error;
} MgPart;

/**
 * MgReport: the detection result for one message. Owns its parts.
 * @kind: the outermost protection (the first non-plain part in document order), or plain
 * @kinds: every kind found in any part
 * @error: (nullable): a problem with the message as a whole (not MIME, a limit reached)
 * @warnings: the MIME parser's complaints (truncation, missing boundaries, ...), may be empty
 */
typedef struct {
  GPtrArray *parts;
  MgKind kind;
  guint kinds;
  char *message_id;
  char *error;
  gboolean limited;
  GPtrArray *warnings;
} MgReport;

MgReport *mg_detect_data (const guint8 *data, gsize len, const MgLimits *limits);
MgReport *mg_detect_message (GMimeMessage *message, const MgLimits *limits);
void mg_report_free (MgReport *report);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (MgReport, mg_report_free)

G_END_DECLS
