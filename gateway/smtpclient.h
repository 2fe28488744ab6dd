/* smtpclient.h - the reinjection client of `mimegate serve`: one blocking SMTP client per worker thread that hands
 * each converted recipient group to the second Postfix smtpd (FILTER_README's advanced content filter), keeping its
 * connection open across messages. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

#define MG_SMTP_CLIENT_ERROR (mg_smtp_client_error_quark ())

/**
 * MgSmtpClientError: why a transaction did not end with a 2xx reply to the final dot.
 * @MG_SMTP_CLIENT_ERROR_CONNECT: no session: the connection failed, or the greeting or EHLO/HELO was not accepted
 *   (transient)
 * @MG_SMTP_CLIENT_ERROR_TIMEOUT: a read or write took longer than the timeout; the connection is closed (transient)
 * @MG_SMTP_CLIENT_ERROR_LOST: the server closed or broke the connection before the final dot was sent; the server
 *   does not have the message (transient)
 * @MG_SMTP_CLIENT_ERROR_PROTOCOL: the server's reply was malformed or over a limit; the connection is closed
 *   (transient)
 * @MG_SMTP_CLIENT_ERROR_REFUSED: the server answered 4xx (transient; @reply holds it)
 * @MG_SMTP_CLIENT_ERROR_REJECTED: the server answered 5xx (permanent for this server; @reply holds it)
 * @MG_SMTP_CLIENT_ERROR_UNSUPPORTED: the message needs 8BITMIME or SMTPUTF8 and the server does not offer it; nothing
 *   was sent (permanent for this server)
 * @MG_SMTP_CLIENT_ERROR_INVALID: an envelope address holds CR, LF or NUL and cannot be sent; nothing was sent
 *   (permanent)
 * @MG_SMTP_CLIENT_ERROR_UNKNOWN: the final dot was sent and no reply came (timeout or connection lost): the server
 *   may or may not have committed the message (transient; retrying may duplicate it)
 *
 * mg_smtp_client_error_is_transient() says which codes are transient. Messages are diagnostics in English, never
 * translated (they may end up in a reply text); they never hold message content.
 */
typedef enum {
  MG_SMTP_CLIENT_ERROR_CONNECT,
  MG_SMTP_CLIENT_ERROR_TIMEOUT,
  MG_SMTP_CLIENT_ERROR_LOST,
  MG_SMTP_CLIENT_ERROR_PROTOCOL,
  MG_SMTP_CLIENT_ERROR_REFUSED,
  MG_SMTP_CLIENT_ERROR_REJECTED,
  MG_SMTP_CLIENT_ERROR_UNSUPPORTED,
  MG_SMTP_CLIENT_ERROR_INVALID,
  MG_SMTP_CLIENT_ERROR_UNKNOWN,
} MgSmtpClientError;

GQuark mg_smtp_client_error_quark (void);
gboolean mg_smtp_client_error_is_transient (const GError *error);

/* limits of the reply reader (GIO's line readers have none of their own) */
#define MG_SMTP_REPLY_LINE_MAX 4096 /* octets per reply line, CRLF excluded */
#define MG_SMTP_REPLY_LINES_MAX 100 /* lines per (multi-line) reply */

/**
 * MgSmtpReply: a server reply.
 * @code: the three-digit reply code (RFC 5321 section 4.2), 0 when there was none
 * @enhanced: (nullable): the RFC 3463 enhanced status code of its first line ("4.2.0"), when it had one
 * @text: (nullable): the reply text without codes, the lines of a multi-line reply joined by a space; every octet
 *   outside printable ASCII replaced by '?', so that it can be quoted in a log line or a reply as it is
 *
 * Owned by the caller, who clears it with mg_smtp_reply_clear(); zero-initialise it before the first use.
 */
typedef struct {
  guint code;
  char *enhanced;
  char *text;
} MgSmtpReply;

void mg_smtp_reply_clear (MgSmtpReply *reply);

typedef struct _MgSmtpClient MgSmtpClient;

/**
 * mg_smtp_client_new - a client for @target; parses only, connects on the first mg_smtp_client_send().
 * @target: "smtp:HOST:PORT", "smtp:[IPv6]:PORT", "inet:HOST:PORT" (the same) or "unix:/path"
 * @helo: the name we give in EHLO/HELO
 * @timeout_seconds: bound on connecting and on each read or write; 0 for none
 *
 * Returns: (transfer full) (nullable): the client, or %NULL with @error (G_IO_ERROR_INVALID_ARGUMENT) when @target
 * or @helo cannot be used. The client is not thread-safe: one per worker thread.
 */
MgSmtpClient *mg_smtp_client_new (const char *target, const char *helo, guint timeout_seconds, GError **error);

/**
 * mg_smtp_client_send - one SMTP transaction: delivers @message to all of @recipients, or to none of them.
 * @sender: the envelope sender as it goes between < and > (already quoted where RFC 5321 needs it); "" for the
 *   null reverse-path <>
 * @recipients: (array zero-terminated=1): at least one envelope recipient, likewise; an address with CR or LF fails
 *   with INVALID before anything is sent
 * @message: the message with LF or CRLF line ends; sent with CRLF, dot-stuffed, a final CRLF added if it lacks one,
 *   every other octet untouched. Not copied and never logged.
 * @xforward: (nullable) (element-type utf8 utf8): XFORWARD attribute names in upper case (NAME, ADDR, PORT, PROTO,
 *   HELO, IDENT, SOURCE) to their plain values; only those the server announced are sent (xtext-encoded, in the
 *   server's order, in as many commands as keep each under 512 octets), and only when it announced XFORWARD
 * @reply: (out caller-allocates) (optional): cleared, then set to the server reply that decided the outcome (the 2xx
 *   to the final dot, or the reply that refused), when there was one
 *
 * Connects (EHLO, HELO when EHLO is answered 5xx) when not connected. Uses SIZE=, BODY=8BITMIME (the message has an
 * octet >= 0x80) and SMTPUTF8 (an address is not ASCII) only when announced; fails with UNSUPPORTED before sending
 * anything when the message needs 8BITMIME or SMTPUTF8 and the server lacks it. With PIPELINING, XFORWARD, MAIL and
 * every RCPT go out together; any recipient refused ends the transaction (RSET) and names it in @error. A kept
 * connection found dead (closed, or a 421) before the message body is reconnected once and the transaction retried
 * from the start; never once the body has begun. A failure while sending the body closes the connection without the
 * final dot, so that the server discards the incomplete message. A transaction refused before its body is ended with
 * RSET at once (a connection that cannot be reset is closed), so the next one starts clean without another RSET.
 * Timeouts apply to connecting and to each read and write. Nothing is logged.
 *
 * Returns: %TRUE when the server answered 2xx to the final dot; otherwise %FALSE with @error.
 */
gboolean mg_smtp_client_send (MgSmtpClient *client, const char *sender, const char *const *recipients, GBytes *message,
                              GHashTable *xforward, MgSmtpReply *reply, GError **error);

/* mg_smtp_client_close - QUIT and close, if connected; the next send connects again */
void mg_smtp_client_close (MgSmtpClient *client);

/* mg_smtp_client_free - closes (QUIT) and frees @client; %NULL is ignored */
void mg_smtp_client_free (MgSmtpClient *client);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (MgSmtpClient, mg_smtp_client_free)
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (MgSmtpReply, mg_smtp_reply_clear)

G_END_DECLS
