/* smtpclient.c - the reinjection client of `mimegate serve`: SMTP (RFC 5321) over blocking GIO, one per worker thread,
 * its connection kept open across messages.
 *
 * Extensions: PIPELINING (RFC 2920: XFORWARD, MAIL and every RCPT in one write, DATA only once every recipient is
 * accepted, so that a group is delivered to all its recipients or to none), SIZE (RFC 1870), 8BITMIME (RFC 6152),
 * SMTPUTF8 (RFC 6531), ENHANCEDSTATUSCODES (RFC 2034/3463, read from replies) and Postfix's XFORWARD (values xtext,
 * RFC 3461 section 4). Replies are read with a bounded line reader: GIO's line readers have no limit of their own.
 *
 * The rule that decides every failure path: the server commits a message only after the final dot, so the dot is
 * sent only after the whole body was written, and any failure before it closes the connection without it. A kept
 * connection found dead before the body is reconnected once; once the body has begun nothing is retried here. */
#include "config.h"

#include "smtpclient.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/un.h>

#include <gio/gio.h>

#include "spool.h"

#define INPUT_BUFFER 8192      /* > MG_SMTP_REPLY_LINE_MAX + CRLF */
#define BODY_CHUNK (64 * 1024) /* octets of wire data per write while sending the body */
#define XFORWARD_LINE_MAX 512  /* octets per XFORWARD command, CRLF included (RFC 5321 command line limit) */

struct _MgSmtpClient {
  char *target; /* for messages */
  char *helo;
  GSocketConnectable *address;
  GSocketClient *socket_client;
  guint timeout;

  /* the session, when connected */
  GSocketConnection *connection;
  GBufferedInputStream *in;
  GOutputStream *out; /* the connection's */
  gboolean esmtp;
  gboolean pipelining;
  gboolean size;
  gboolean eightbitmime;
  gboolean smtputf8;
  GPtrArray *xforward; /* attribute names the server announced, upper case; NULL: no XFORWARD */
};

GQuark
mg_smtp_client_error_quark (void)
{
  return g_quark_from_static_string ("mg-smtp-client-error-quark");
}

/* mg_smtp_client_error_is_transient - whether @error should defer the recipients rather than refuse them */
gboolean
mg_smtp_client_error_is_transient (const GError *error)
{
  if (error == NULL || error->domain != MG_SMTP_CLIENT_ERROR)
    return FALSE;
  return error->code != MG_SMTP_CLIENT_ERROR_REJECTED && error->code != MG_SMTP_CLIENT_ERROR_UNSUPPORTED &&
         error->code != MG_SMTP_CLIENT_ERROR_INVALID;
}

/* mg_smtp_reply_clear - frees what @reply holds and zeroes it */
void
mg_smtp_reply_clear (MgSmtpReply *reply)
{
  g_clear_pointer (&reply->enhanced, g_free);
  g_clear_pointer (&reply->text, g_free);
  reply->code = 0;
}

/* parse_target - @target as a connectable, or NULL with @error */
static GSocketConnectable *
parse_target (const char *target, GError **error)
{
  const char *rest;
  if (g_str_has_prefix (target, "unix:")) {
    rest = target + 5;
    if (*rest == '\0' || strlen (rest) >= sizeof (((struct sockaddr_un *) NULL)->sun_path)) {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "reinjection target %s: bad socket path", target);
      return NULL;
    }
    return G_SOCKET_CONNECTABLE (g_unix_socket_address_new (rest));
  }
  if (g_str_has_prefix (target, "smtp:") || g_str_has_prefix (target, "inet:"))
    rest = target + 5;
  else {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                 "reinjection target %s: expected smtp:HOST:PORT, inet:HOST:PORT or unix:PATH", target);
    return NULL;
  }
  g_autofree char *host = NULL;
  const char *port;
  if (*rest == '[') {
    const char *close = strchr (rest, ']');
    if (close == NULL || close[1] != ':') {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "reinjection target %s: expected [ADDRESS]:PORT",
                   target);
      return NULL;
    }
    host = g_strndup (rest + 1, close - rest - 1);
    port = close + 2;
  } else {
    const char *colon = strrchr (rest, ':');
    if (colon == NULL) {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "reinjection target %s: no port", target);
      return NULL;
    }
    host = g_strndup (rest, colon - rest);
    port = colon + 1;
  }
  guint64 number = 0;
  gboolean bracketed = *rest == '[';
  if (*host == '\0' || strpbrk (host, bracketed ? "[]" : "[]:") != NULL ||
      (bracketed && !g_hostname_is_ip_address (host)) ||
      !g_ascii_string_to_unsigned (port, 10, 1, 65535, &number, NULL)) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "reinjection target %s: bad host or port", target);
    return NULL;
  }
  return g_network_address_new (host, (guint16) number);
}

/* helo_valid - a name we can put after EHLO: printable ASCII without spaces */
static gboolean
helo_valid (const char *helo)
{
  if (*helo == '\0' || strlen (helo) > 255)
    return FALSE;
  for (const char *p = helo; *p; p++)
    if (*p <= ' ' || *p >= 0x7f)
      return FALSE;
  return TRUE;
}

MgSmtpClient *
mg_smtp_client_new (const char *target, const char *helo, guint timeout_seconds, GError **error)
{
  g_return_val_if_fail (target != NULL && helo != NULL, NULL);
  if (!helo_valid (helo)) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "bad EHLO name \"%s\"", helo);
    return NULL;
  }
  GSocketConnectable *address = parse_target (target, error);
  if (address == NULL)
    return NULL;
  MgSmtpClient *c = g_new0 (MgSmtpClient, 1);
  c->target = g_strdup (target);
  c->helo = g_strdup (helo);
  c->address = address;
  c->timeout = timeout_seconds;
  c->socket_client = g_socket_client_new ();
  g_socket_client_set_enable_proxy (c->socket_client, FALSE);
  g_socket_client_set_timeout (c->socket_client, timeout_seconds);
  return c;
}

/* drop - closes the connection without QUIT (after a failure that leaves the session in an unknown state) */
static void
drop (MgSmtpClient *c)
{
  if (c->connection == NULL)
    return;
  g_io_stream_close (G_IO_STREAM (c->connection), NULL, NULL);
  g_clear_object (&c->in);
  c->out = NULL;
  g_clear_object (&c->connection);
  g_clear_pointer (&c->xforward, g_ptr_array_unref);
  c->esmtp = c->pipelining = c->size = c->eightbitmime = c->smtputf8 = FALSE;
}

/* io_error - @local (a GIO failure while talking to the server) as our error: a timeout or a lost connection */
static void
io_error (MgSmtpClient *c, GError *local, const char *what, GError **error)
{
  gboolean timeout = g_error_matches (local, G_IO_ERROR, G_IO_ERROR_TIMED_OUT);
  g_set_error (error, MG_SMTP_CLIENT_ERROR, timeout ? MG_SMTP_CLIENT_ERROR_TIMEOUT : MG_SMTP_CLIENT_ERROR_LOST,
               "%s %s: %s", what, c->target, local->message);
}

/* send_all - writes @len octets of @data; on failure some of them were not written */
static gboolean
send_all (MgSmtpClient *c, const void *data, gsize len, GError **error)
{
  g_autoptr (GError) local = NULL;
  gboolean ok = g_output_stream_write_all (c->out, data, len, NULL, NULL, &local);
  if (!ok)
    io_error (c, local, "writing to", error);
  return ok;
}

/* read_line - one reply line without its CRLF (or bare LF), at most MG_SMTP_REPLY_LINE_MAX octets; NUL becomes '?' */
static char *
read_line (MgSmtpClient *c, GError **error)
{
  for (;;) {
    gsize avail = 0;
    const char *buf = g_buffered_input_stream_peek_buffer (c->in, &avail);
    const char *lf = avail > 0 ? memchr (buf, '\n', MIN (avail, (gsize) MG_SMTP_REPLY_LINE_MAX + 2)) : NULL;
    if (lf != NULL) {
      gsize used = lf - buf + 1, len = lf - buf;
      if (len > 0 && buf[len - 1] == '\r')
        len--;
      if (len > MG_SMTP_REPLY_LINE_MAX)
        break;
      char *line = g_malloc (len + 1);
      memcpy (line, buf, len);
      line[len] = '\0';
      for (gsize i = 0; i < len; i++)
        if (line[i] == '\0')
          line[i] = '?';
      g_input_stream_skip (G_INPUT_STREAM (c->in), used, NULL, NULL);
      return line;
    }
    if (avail >= MG_SMTP_REPLY_LINE_MAX + 2)
      break;
    g_autoptr (GError) local = NULL;
    gssize got = g_buffered_input_stream_fill (c->in, -1, NULL, &local);
    if (got < 0) {
      io_error (c, local, "reading from", error);
      return NULL;
    }
    if (got == 0) {
      g_set_error (error, MG_SMTP_CLIENT_ERROR, MG_SMTP_CLIENT_ERROR_LOST, "%s closed the connection", c->target);
      return NULL;
    }
  }
  g_set_error (error, MG_SMTP_CLIENT_ERROR, MG_SMTP_CLIENT_ERROR_PROTOCOL, "%s sent a reply line over %d octets",
               c->target, MG_SMTP_REPLY_LINE_MAX);
  return NULL;
}

/* enhanced_length - the length of the RFC 3463 code at the start of @text ("5.1.1 ..."), of class @klass, or 0 */
static gsize
enhanced_length (const char *text, char klass)
{
  const char *p = text;
  if (*p != klass || p[1] != '.')
    return 0;
  p += 2;
  for (int part = 0; part < 2; part++) {
    int digits = 0;
    while (g_ascii_isdigit (*p) && digits < 4)
      p++, digits++;
    if (digits == 0 || digits > 3)
      return 0;
    if (part == 0 && *p++ != '.')
      return 0;
  }
  return (*p == ' ' || *p == '\0') ? (gsize) (p - text) : 0;
}

/* read_reply - one (multi-line) reply into @reply; the text after each line's code into @lines when not NULL (EHLO) */
static gboolean
read_reply (MgSmtpClient *c, MgSmtpReply *reply, GPtrArray *lines, GError **error)
{
  mg_smtp_reply_clear (reply);
  g_autoptr (GString) text = g_string_new (NULL);
  guint code = 0;
  for (guint n = 0;; n++) {
    if (n == MG_SMTP_REPLY_LINES_MAX) {
      g_set_error (error, MG_SMTP_CLIENT_ERROR, MG_SMTP_CLIENT_ERROR_PROTOCOL, "%s sent a reply of over %d lines",
                   c->target, MG_SMTP_REPLY_LINES_MAX);
      return FALSE;
    }
    g_autofree char *line = read_line (c, error);
    if (line == NULL)
      return FALSE;
    if (!(line[0] >= '2' && line[0] <= '5' && g_ascii_isdigit (line[1]) && g_ascii_isdigit (line[2]) &&
          (line[3] == ' ' || line[3] == '-' || line[3] == '\0'))) {
      g_set_error (error, MG_SMTP_CLIENT_ERROR, MG_SMTP_CLIENT_ERROR_PROTOCOL, "%s sent a malformed reply", c->target);
      return FALSE;
    }
    guint this = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
    if (n > 0 && this != code) {
      g_set_error (error, MG_SMTP_CLIENT_ERROR, MG_SMTP_CLIENT_ERROR_PROTOCOL,
                   "%s sent a multi-line reply with different codes", c->target);
      return FALSE;
    }
    code = this;
    const char *rest = line[3] == '\0' ? "" : line + 4;
    if (lines != NULL)
      g_ptr_array_add (lines, g_strdup (rest));
    gsize elen = enhanced_length (rest, line[0]);
    if (elen > 0) {
      if (reply->enhanced == NULL)
        reply->enhanced = g_strndup (rest, elen);
      rest += elen;
      while (*rest == ' ')
        rest++;
    }
    if (text->len > 0 && *rest != '\0')
      g_string_append_c (text, ' ');
    g_string_append (text, rest);
    if (line[3] != '-')
      break;
  }
  for (gsize i = 0; i < text->len; i++)
    if ((guchar) text->str[i] < 0x20 || (guchar) text->str[i] >= 0x7f)
      text->str[i] = '?';
  reply->code = code;
  reply->text = g_string_free (g_steal_pointer (&text), FALSE);
  return TRUE;
}

/* reply_error - @error for a reply that was not the one wanted: 4xx refused, 5xx rejected, anything else protocol */
static void
reply_error (MgSmtpClient *c, const MgSmtpReply *reply, const char *what, GError **error)
{
  int code = reply->code / 100 == 4   ? MG_SMTP_CLIENT_ERROR_REFUSED
             : reply->code / 100 == 5 ? MG_SMTP_CLIENT_ERROR_REJECTED
                                      : MG_SMTP_CLIENT_ERROR_PROTOCOL;
  g_set_error (error, MG_SMTP_CLIENT_ERROR, code, "%s %s: %u%s%s %s", c->target, what, reply->code,
               reply->enhanced ? " " : "", reply->enhanced ? reply->enhanced : "", reply->text ? reply->text : "");
}

/* command - sends @line (CRLF appended) and reads its reply */
static gboolean
command (MgSmtpClient *c, const char *line, MgSmtpReply *reply, GPtrArray *lines, GError **error)
{
  g_autofree char *wire = g_strconcat (line, "\r\n", NULL);
  return send_all (c, wire, strlen (wire), error) && read_reply (c, reply, lines, error);
}

/* parse_ehlo - what the server announced, from the lines of its 250 reply to EHLO (the first is its name) */
static void
parse_ehlo (MgSmtpClient *c, GPtrArray *lines)
{
  c->esmtp = TRUE;
  for (guint i = 1; i < lines->len; i++) {
    g_auto (GStrv) words = g_strsplit_set (g_ptr_array_index (lines, i), " ", -1);
    if (words[0] == NULL)
      continue;
    if (g_ascii_strcasecmp (words[0], "PIPELINING") == 0)
      c->pipelining = TRUE;
    else if (g_ascii_strcasecmp (words[0], "SIZE") == 0)
      c->size = TRUE;
    else if (g_ascii_strcasecmp (words[0], "8BITMIME") == 0)
      c->eightbitmime = TRUE;
    else if (g_ascii_strcasecmp (words[0], "SMTPUTF8") == 0)
      c->smtputf8 = TRUE;
    else if (g_ascii_strcasecmp (words[0], "XFORWARD") == 0) {
      if (c->xforward == NULL)
        c->xforward = g_ptr_array_new_with_free_func (g_free);
      for (guint w = 1; words[w] != NULL; w++)
        if (*words[w] != '\0')
          g_ptr_array_add (c->xforward, g_ascii_strup (words[w], -1));
    }
  }
}

/* session_refused - @error for a greeting, EHLO or HELO reply that does not let us in; closes the connection */
static gboolean
session_refused (MgSmtpClient *c, const MgSmtpReply *reply, const char *step, GError **error)
{
  g_set_error (error, MG_SMTP_CLIENT_ERROR, MG_SMTP_CLIENT_ERROR_CONNECT, "%s refused the session at %s: %u%s%s %s",
               c->target, step, reply->code, reply->enhanced ? " " : "", reply->enhanced ? reply->enhanced : "",
               reply->text ? reply->text : "");
  drop (c);
  return FALSE;
}

/* session_lost - @local (an I/O failure during @step of the session's start) as @error; closes the connection */
static gboolean
session_lost (MgSmtpClient *c, GError *local, const char *step, GError **error)
{
  if (local->code == MG_SMTP_CLIENT_ERROR_LOST)
    local->code = MG_SMTP_CLIENT_ERROR_CONNECT;
  g_prefix_error (&local, "%s: ", step);
  g_propagate_error (error, local);
  drop (c);
  return FALSE;
}

/* session_open - connects, reads the greeting and introduces us (EHLO, or HELO when EHLO is refused with 5xx) */
static gboolean
session_open (MgSmtpClient *c, MgSmtpReply *reply, GError **error)
{
  GError *local = NULL;
  GSocketConnection *connection = g_socket_client_connect (c->socket_client, c->address, NULL, &local);
  if (connection == NULL) {
    gboolean timeout = g_error_matches (local, G_IO_ERROR, G_IO_ERROR_TIMED_OUT);
    g_set_error (error, MG_SMTP_CLIENT_ERROR, timeout ? MG_SMTP_CLIENT_ERROR_TIMEOUT : MG_SMTP_CLIENT_ERROR_CONNECT,
                 "cannot connect to %s: %s", c->target, local->message);
    g_error_free (local);
    return FALSE;
  }
  c->connection = connection;
  GSocket *socket = g_socket_connection_get_socket (connection);
  g_socket_set_timeout (socket, c->timeout);
  /* commands and the message's tail go out in whole writes: Nagle would only hold them back for the peer's ACK */
  if (g_socket_get_family (socket) != G_SOCKET_FAMILY_UNIX)
    g_socket_set_option (socket, IPPROTO_TCP, TCP_NODELAY, 1, NULL);
  c->in = G_BUFFERED_INPUT_STREAM (
    g_buffered_input_stream_new_sized (g_io_stream_get_input_stream (G_IO_STREAM (connection)), INPUT_BUFFER));
  c->out = g_io_stream_get_output_stream (G_IO_STREAM (connection));

  if (!read_reply (c, reply, NULL, &local))
    return session_lost (c, local, "greeting", error);
  if (reply->code != 220)
    return session_refused (c, reply, "greeting", error);

  g_autofree char *ehlo = g_strconcat ("EHLO ", c->helo, NULL);
  g_autoptr (GPtrArray) lines = g_ptr_array_new_with_free_func (g_free);
  if (!command (c, ehlo, reply, lines, &local))
    return session_lost (c, local, "EHLO", error);
  if (reply->code == 250) {
    parse_ehlo (c, lines);
    return TRUE;
  }
  if (reply->code / 100 != 5)
    return session_refused (c, reply, "EHLO", error);

  g_autofree char *helo = g_strconcat ("HELO ", c->helo, NULL);
  if (!command (c, helo, reply, NULL, &local))
    return session_lost (c, local, "HELO", error);
  if (reply->code != 250)
    return session_refused (c, reply, "HELO", error);
  return TRUE;
}

/* RELEASE_STEP - how much of a spooled message is read before its pages are dropped again (mg_spool_release) */
#define RELEASE_STEP ((gsize) 4 * 1024 * 1024)

/* needs_8bit - whether @data (of @message) holds an octet >= 0x80 */
static gboolean
needs_8bit (GBytes *message, const guint8 *data, gsize len)
{
  for (gsize i = 0; i < len; i++) {
    if (data[i] >= 0x80) {
      mg_spool_release (message, 0, i + 1);
      return TRUE;
    }
    if (i % RELEASE_STEP == RELEASE_STEP - 1)
      mg_spool_release (message, i + 1 - RELEASE_STEP, RELEASE_STEP);
  }
  mg_spool_release (message, len - len % RELEASE_STEP, RELEASE_STEP);
  return FALSE;
}

/* address_ok - whether @address can go between < and > on a command line (no CR, LF or NUL; C strings have no NUL) */
static gboolean
address_ok (const char *address)
{
  return strpbrk (address, "\r\n") == NULL;
}

/* wire_size - the message's size with CRLF line ends and a final CRLF, as RFC 1870 counts it (no dot-stuffing) */
static guint64
wire_size (GBytes *message, const guint8 *data, gsize len)
{
  guint64 size = len;
  for (gsize i = 0; i < len; i++) {
    if (data[i] == '\n' && (i == 0 || data[i - 1] != '\r'))
      size++;
    if (i % RELEASE_STEP == RELEASE_STEP - 1)
      mg_spool_release (message, i + 1 - RELEASE_STEP, RELEASE_STEP);
  }
  mg_spool_release (message, len - len % RELEASE_STEP, RELEASE_STEP);
  if (len > 0 && data[len - 1] != '\n')
    size += 2;
  return size;
}

/* append_xtext - @value xtext-encoded (RFC 3461 section 4): '!' to '~' except '+' and '=' as they are, others +XX */
static void
append_xtext (GString *out, const char *value)
{
  for (const guchar *p = (const guchar *) value; *p; p++)
    if (*p >= '!' && *p <= '~' && *p != '+' && *p != '=')
      g_string_append_c (out, *p);
    else
      g_string_append_printf (out, "+%02X", *p);
}

/* xforward_commands - the XFORWARD lines (CRLF-terminated) for the attributes of @attrs that the server announced */
static GPtrArray *
xforward_commands (MgSmtpClient *c, GHashTable *attrs)
{
  GPtrArray *commands = g_ptr_array_new_with_free_func (g_free);
  if (attrs == NULL || c->xforward == NULL)
    return commands;
  g_autoptr (GString) line = g_string_new ("XFORWARD");
  for (guint i = 0; i < c->xforward->len; i++) {
    const char *name = g_ptr_array_index (c->xforward, i);
    const char *value = g_hash_table_lookup (attrs, name);
    if (value == NULL)
      continue;
    g_autoptr (GString) attr = g_string_new (" ");
    g_string_append_printf (attr, "%s=", name);
    append_xtext (attr, value);
    if (line->len > strlen ("XFORWARD") && line->len + attr->len + 2 > XFORWARD_LINE_MAX) {
      g_ptr_array_add (commands, g_strconcat (line->str, "\r\n", NULL));
      g_string_assign (line, "XFORWARD");
    }
    g_string_append_len (line, attr->str, attr->len);
  }
  if (line->len > strlen ("XFORWARD"))
    g_ptr_array_add (commands, g_strconcat (line->str, "\r\n", NULL));
  return commands;
}

typedef struct {
  MgSmtpClient *c;
  guint8 *buf; /* BODY_CHUNK octets */
  gsize used;
  gsize dirty; /* how many octets of buf ever held message data: what wipe() must clear */
} BodyWriter;

/* body_put - appends @n octets to the writer's buffer, writing it out each time it is full */
static gboolean
body_put (BodyWriter *w, const guint8 *p, gsize n, GError **error)
{
  while (n > 0) {
    gsize take = MIN (BODY_CHUNK - w->used, n);
    memcpy (w->buf + w->used, p, take);
    w->used += take;
    w->dirty = MAX (w->dirty, w->used);
    p += take;
    n -= take;
    if (w->used == BODY_CHUNK) {
      if (!send_all (w->c, w->buf, w->used, error))
        return FALSE;
      w->used = 0;
    }
  }
  return TRUE;
}

/* wipe - zeroes @n octets at @p in a way the compiler keeps (a copy of clear text) */
static void
wipe (void *p, gsize n)
{
  explicit_bzero (p, n);
}

/* send_message - the message dot-stuffed with CRLF line ends and a final CRLF, then the final dot, the dot in the
 * same write as the message's tail (no small last segment for Nagle to hold back). Returns TRUE only when every
 * octet of the dot line was written: on FALSE the server has not seen the end of the data. */
static gboolean
send_message (MgSmtpClient *c, GBytes *message, const guint8 *data, gsize len, GError **error)
{
  BodyWriter w = { c, g_malloc (BODY_CHUNK), 0, 0 };
  gboolean ok = TRUE;
  gsize released = 0; /* a spooled message's pages before this were sent and are dropped from memory again */
  for (gsize pos = 0; ok && pos < len;) {
    if (pos - released >= RELEASE_STEP) {
      mg_spool_release (message, released, pos - released);
      released = pos;
    }
    const guint8 *lf = memchr (data + pos, '\n', len - pos);
    gsize end = lf ? (gsize) (lf - data) : len; /* the line's content is data[pos, end), less a CR before its LF */
    if (lf != NULL && end > pos && data[end - 1] == '\r')
      end--;
    ok = (data[pos] != '.' || body_put (&w, (const guint8 *) ".", 1, error)) &&
         body_put (&w, data + pos, end - pos, error) && body_put (&w, (const guint8 *) "\r\n", 2, error);
    pos = lf ? (gsize) (lf - data) + 1 : len;
  }
  /* the dot goes last: a write that fails leaves some of its octets unsent, so the dot line is never complete */
  ok = ok && body_put (&w, (const guint8 *) ".\r\n", 3, error) && (w.used == 0 || send_all (c, w.buf, w.used, error));
  mg_spool_release (message, released, len - released);
  wipe (w.buf, w.dirty); /* a small message touched only the start of the buffer */
  g_free (w.buf);
  return ok;
}

/* rset - ends a transaction that failed before its body; a connection that cannot be reset is closed */
static void
rset (MgSmtpClient *c)
{
  MgSmtpReply reply = { 0 };
  if (c->connection != NULL && (!command (c, "RSET", &reply, NULL, NULL) || reply.code != 250))
    drop (c);
  mg_smtp_reply_clear (&reply);
}

typedef enum {
  ATTEMPT_DONE,  /* delivered, or failed for good (@error set) */
  ATTEMPT_RETRY, /* the connection was found dead before the body: a new one may try again (@error set) */
} Attempt;

/* attempt - one try of a transaction on the current (or a new) connection */
static Attempt
attempt (MgSmtpClient *c, const char *sender, const char *const *recipients, GBytes *message, GHashTable *xforward,
         gboolean utf8, MgSmtpReply *reply, GError **error)
{
  gsize len = 0;
  const guint8 *data = g_bytes_get_data (message, &len);
  gboolean kept = c->connection != NULL;
  g_autoptr (GError) local = NULL;   /* a failure that ends the session */
  g_autoptr (GError) refusal = NULL; /* the first envelope command refused */

  if (!kept && !session_open (c, reply, error))
    return ATTEMPT_DONE;
  mg_smtp_reply_clear (reply); /* the EHLO reply decides nothing */

  gboolean eight = needs_8bit (message, data, len);
  if ((eight && !c->eightbitmime) || (utf8 && !c->smtputf8)) {
    g_set_error (error, MG_SMTP_CLIENT_ERROR, MG_SMTP_CLIENT_ERROR_UNSUPPORTED,
                 "%s does not offer %s, which the message needs", c->target,
                 eight && !c->eightbitmime ? "8BITMIME" : "SMTPUTF8");
    return ATTEMPT_DONE;
  }

  /* the envelope: XFORWARD, MAIL, RCPT... each as one line */
  g_autoptr (GPtrArray) commands = xforward_commands (c, xforward);
  guint n_xforward = commands->len;
  g_autoptr (GString) mail = g_string_new (NULL);
  g_string_printf (mail, "MAIL FROM:<%s>", sender);
  if (c->size)
    g_string_append_printf (mail, " SIZE=%" G_GUINT64_FORMAT, wire_size (message, data, len));
  if (eight)
    g_string_append (mail, " BODY=8BITMIME");
  if (utf8)
    g_string_append (mail, " SMTPUTF8");
  g_string_append (mail, "\r\n");
  g_ptr_array_add (commands, g_string_free (g_steal_pointer (&mail), FALSE));
  for (guint i = 0; recipients[i] != NULL; i++)
    g_ptr_array_add (commands, g_strdup_printf ("RCPT TO:<%s>\r\n", recipients[i]));

  /* with PIPELINING all at once, then every reply in order; without, one by one, stopping at the first refusal */
  if (c->pipelining) {
    g_autoptr (GString) group = g_string_new (NULL);
    for (guint i = 0; i < commands->len; i++)
      g_string_append (group, g_ptr_array_index (commands, i));
    if (!send_all (c, group->str, group->len, &local))
      goto dead;
  }
  for (guint i = 0; i < commands->len; i++) {
    MgSmtpReply one = { 0 };
    const char *line = g_ptr_array_index (commands, i);
    if (!c->pipelining && !send_all (c, line, strlen (line), &local))
      goto dead;
    if (!read_reply (c, &one, NULL, &local)) {
      mg_smtp_reply_clear (&one);
      goto dead;
    }
    if (one.code == 421) {
      mg_smtp_reply_clear (reply);
      *reply = one;
      reply_error (c, reply, "closed the session", &local);
      goto dead;
    }
    if (one.code / 100 == 2 || refusal != NULL) {
      mg_smtp_reply_clear (&one);
      continue;
    }
    mg_smtp_reply_clear (reply);
    *reply = one;
    if (i < n_xforward)
      reply_error (c, reply, "refused XFORWARD", &refusal);
    else if (i == n_xforward)
      reply_error (c, reply, "refused the sender", &refusal);
    else {
      g_autofree char *what = g_strdup_printf ("refused recipient <%s>", recipients[i - n_xforward - 1]);
      reply_error (c, reply, what, &refusal);
    }
    if (!c->pipelining)
      break;
  }
  if (refusal != NULL) {
    rset (c);
    g_propagate_error (error, g_steal_pointer (&refusal));
    return ATTEMPT_DONE;
  }

  if (!command (c, "DATA", reply, NULL, &local))
    goto dead;
  if (reply->code == 421) {
    reply_error (c, reply, "closed the session", &local);
    goto dead;
  }
  if (reply->code != 354) {
    reply_error (c, reply, "refused DATA", error);
    if (reply->code / 100 == 4 || reply->code / 100 == 5)
      rset (c);
    else
      drop (c);
    return ATTEMPT_DONE;
  }
  mg_smtp_reply_clear (reply);

  /* from here on nothing is retried: the body goes out whole before the dot, or the connection is closed */
  if (!send_message (c, message, data, len, &local)) {
    g_prefix_error (&local, "the message was not sent whole (no final dot, the server discards it): ");
    g_propagate_error (error, g_steal_pointer (&local));
    drop (c);
    return ATTEMPT_DONE;
  }
  if (!read_reply (c, reply, NULL, &local)) {
    g_set_error (error, MG_SMTP_CLIENT_ERROR, MG_SMTP_CLIENT_ERROR_UNKNOWN,
                 "no reply to the final dot, unknown whether the message was delivered: %s", local->message);
    drop (c);
    return ATTEMPT_DONE;
  }
  if (reply->code / 100 == 2)
    return ATTEMPT_DONE;
  if (reply->code / 100 != 4 && reply->code / 100 != 5) {
    g_set_error (error, MG_SMTP_CLIENT_ERROR, MG_SMTP_CLIENT_ERROR_UNKNOWN,
                 "%s answered the final dot with %u, unknown whether the message was delivered", c->target,
                 reply->code);
    drop (c);
    return ATTEMPT_DONE;
  }
  reply_error (c, reply, "refused the message", error);
  if (reply->code == 421)
    drop (c);
  return ATTEMPT_DONE;

dead:
  /* nothing of the body went out: a kept connection that the server had closed is worth one more try */
  drop (c);
  gboolean retry = kept && (local->code == MG_SMTP_CLIENT_ERROR_LOST || reply->code == 421);
  g_propagate_error (error, g_steal_pointer (&local));
  return retry ? ATTEMPT_RETRY : ATTEMPT_DONE;
}

gboolean
mg_smtp_client_send (MgSmtpClient *client, const char *sender, const char *const *recipients, GBytes *message,
                     GHashTable *xforward, MgSmtpReply *reply, GError **error)
{
  g_return_val_if_fail (client != NULL && sender != NULL && recipients != NULL && recipients[0] != NULL, FALSE);
  g_return_val_if_fail (message != NULL, FALSE);
  MgSmtpReply own = { 0 };
  if (reply == NULL)
    reply = &own;
  mg_smtp_reply_clear (reply);

  gboolean utf8 = !g_str_is_ascii (sender);
  if (!address_ok (sender)) {
    g_set_error (error, MG_SMTP_CLIENT_ERROR, MG_SMTP_CLIENT_ERROR_INVALID, "the sender holds CR or LF");
    return FALSE;
  }
  for (guint i = 0; recipients[i] != NULL; i++) {
    if (!address_ok (recipients[i])) {
      g_set_error (error, MG_SMTP_CLIENT_ERROR, MG_SMTP_CLIENT_ERROR_INVALID, "recipient %u holds CR or LF", i + 1);
      return FALSE;
    }
    utf8 = utf8 || !g_str_is_ascii (recipients[i]);
  }

  g_autoptr (GError) local = NULL;
  Attempt a = attempt (client, sender, recipients, message, xforward, utf8, reply, &local);
  if (a == ATTEMPT_RETRY) {
    g_clear_error (&local);
    mg_smtp_reply_clear (reply);
    a = attempt (client, sender, recipients, message, xforward, utf8, reply, &local);
  }
  mg_smtp_reply_clear (&own);
  if (local != NULL) {
    g_propagate_error (error, g_steal_pointer (&local));
    return FALSE;
  }
  return TRUE;
}

void
mg_smtp_client_close (MgSmtpClient *client)
{
  g_return_if_fail (client != NULL);
  if (client->connection == NULL)
    return;
  MgSmtpReply reply = { 0 };
  command (client, "QUIT", &reply, NULL, NULL);
  mg_smtp_reply_clear (&reply);
  drop (client);
}

void
mg_smtp_client_free (MgSmtpClient *client)
{
  if (client == NULL)
    return;
  mg_smtp_client_close (client);
  g_object_unref (client->socket_client);
  g_object_unref (client->address);
  g_free (client->target);
  g_free (client->helo);
  g_free (client);
}
