/* session.h - the server side of one SMTP or LMTP connection as a state machine: bytes in, reply bytes out, and a
 * callback when a message is complete. No sockets, no policy, no crypto (STYLE.md "A long-running face"). */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

typedef enum { MG_PROTOCOL_LMTP, MG_PROTOCOL_SMTP } MgProtocol;

/**
 * MgEnvelope: one transaction as the client gave it, handed to the deliver callback (transfer none: valid only during
 * the call; copy what you keep). Every string is valid UTF-8 without control characters.
 * @sender: the reverse-path without <> (a source route dropped); "" for the null sender
 * @recipients: (element-type utf8): the forward-paths of the accepted RCPT commands without <>, in RCPT order;
 *   addresses are as the client wrote them (a quoted local part stays quoted, so `<` + it + `>` is a valid path)
 * @eight_bit: BODY=8BITMIME was given
 * @smtputf8: SMTPUTF8 was given
 * @size: the SIZE= parameter, 0 if none
 * @helo: the LHLO/EHLO/HELO argument
 * @xforward: (element-type utf8 utf8): XFORWARD attributes given before this MAIL, name in upper case (NAME, ADDR,
 *   PORT, PROTO, HELO, IDENT, SOURCE) to the xtext-decoded value ("[UNAVAILABLE]" kept as sent); IDENT is Postfix's
 *   queue id
 */
typedef struct {
  char *sender;
  GPtrArray *recipients;
  gboolean eight_bit;
  gboolean smtputf8;
  gsize size;
  char *helo;
  GHashTable *xforward;
} MgEnvelope;

/**
 * MgReply: one reply line, e.g. { 250, "2.0.0", "Ok" }.
 * @code: 200..599
 * @enhanced: (nullable): the RFC 3463 code, whose class must be @code's first digit; %NULL: "X.0.0"
 * @text: (nullable): one line of text; control characters are sent as spaces, and it is cut to fit a 512-octet line
 */
typedef struct {
  guint code;
  char *enhanced;
  char *text;
} MgReply;

MgReply *mg_session_reply_new (guint code, const char *enhanced, const char *text);
void mg_session_reply_free (MgReply *reply);

/**
 * MgSessionDeliverFunc: called once for each complete message, synchronously from mg_session_feed(); never for a
 * message that was cut off (shutdown, disconnect, the session freed) or too big.
 * @message: (transfer none): the message as sent, dot-unstuffed, every line end (CRLF or LF) an LF, otherwise the
 *   exact bytes; mg_session_feed() drops its reference after the call (take one to keep it)
 * @replies: (element-type MgReply): empty, owning its elements; add one mg_session_reply_new() per recipient for LMTP
 *   (in RCPT order) or exactly one for SMTP. Any other count is a bug of the face: every recipient then gets 451 4.3.0.
 * The callback must not call back into the session.
 */
typedef void (*MgSessionDeliverFunc) (const MgEnvelope *env, GBytes *message, GPtrArray *replies, gpointer user_data);

/**
 * MgSessionLimits: every limit of a session, each a named setting (mg_session_limits_init() gives the defaults).
 * @hostname: the name in the greeting and the replies; copied by mg_session_new()
 * @max_size: the largest message, counted as RFC 1870 does (CRLF line ends, without dot-stuffing); 0: none (EHLO says
 *   "SIZE"; 2 GiB, what one buffer holds, stays the ceiling). It also bounds what a session stores: a message over it
 *   is read to its end and refused, never kept.
 * @max_recipients: accepted RCPT commands per transaction; 0: none
 * @max_errors: protocol errors (500, 501, 503, 553, 555) allowed on one connection; one more closes it with 421;
 *   0: none. Limits reached (452 recipients, 552 size) are answers, not errors.
 * @max_line: the longest command line with its CRLF (RFC 5321 §4.5.3.1.4: 512); at least 16; 0: 512. DATA lines are
 *   bounded by @max_size only.
 * @spool_dir: (nullable): where a message larger than @spool_threshold is held while it is read and delivered, in a
 *   file of mode 0600 that has no name (spool.h); copied by mg_session_new(); %NULL: TMPDIR, else /tmp. A message
 *   that cannot be stored there (a full disk) is read to its end and answered 451 4.3.0, never delivered.
 * @spool_threshold: up to this many octets a message stays in memory (default 1 MiB)
 */
typedef struct {
  MgProtocol protocol;
  const char *hostname;
  gsize max_size;
  guint max_recipients;
  guint max_errors;
  gsize max_line;
  const char *spool_dir;
  gsize spool_threshold;
} MgSessionLimits;

typedef struct _MgSession MgSession;

void mg_session_limits_init (MgSessionLimits *limits, MgProtocol protocol, const char *hostname);
MgSession *mg_session_new (const MgSessionLimits *limits, MgSessionDeliverFunc deliver, gpointer user_data);
GBytes *mg_session_greeting (MgSession *s);
GBytes *mg_session_feed (MgSession *s, const guint8 *data, gsize len);
gboolean mg_session_closed (MgSession *s);
GBytes *mg_session_shutdown (MgSession *s, const char *enhanced, const char *why);
gboolean mg_session_in_transaction (MgSession *s);
guint mg_session_errors (MgSession *s);
void mg_session_free (MgSession *s);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (MgSession, mg_session_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (MgReply, mg_session_reply_free)

G_END_DECLS
