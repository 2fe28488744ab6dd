/* session.c - the protocol reader of `mimegate serve`: the server side of one SMTP (RFC 5321) or LMTP (RFC 2033)
 * connection as a state machine, with SIZE (RFC 1870), 8BITMIME (RFC 6152), ENHANCEDSTATUSCODES (RFC 2034, codes
 * from RFC 3463), PIPELINING (RFC 2920), SMTPUTF8 (RFC 6531) and Postfix's XFORWARD (XFORWARD_README).
 *
 * Modelled on Postfix's smtpd and smtp-sink: greeting → LHLO/EHLO → MAIL → RCPT... → DATA → the message → replies,
 * then the next transaction. It knows no sockets, no policy and no crypto: the face pushes whatever bytes arrived
 * into mg_session_feed() and writes back what it returns; when a message is complete the deliver callback gets the
 * envelope and the bytes and answers with the reply lines. That keeps it fuzzable on its own.
 *
 * Decisions, each on purpose:
 * - A feed may end anywhere (inside a command, inside the DATA terminator); feeding byte by byte gives the same
 *   replies and the same messages as feeding everything at once. Pipelined commands are answered in order.
 * - A line ends with LF; one CR before it is removed. So bare LF is accepted in commands and in DATA, where the
 *   terminator is a line holding only "." (".\r\n" or ".\n" after a line end), and dot-unstuffing removes the first
 *   dot of every line that starts with one. Postfix's smtpd reads the same way with smtpd_forbid_bare_newline = no.
 *   The clients of a content filter are Postfix's lmtp/smtp clients, which send CRLF and stuff every line, so for
 *   them both readings agree; a bare LF cannot reach us from a queue file. A CR not followed by LF is content.
 * - Every error is a reply; only the error budget (max_errors protocol errors: 500, 501, 503, 553, 555) closes the
 *   connection, with 421 4.7.0 after the reply of the error that spent it. Answers to limits (452 4.5.3 too many
 *   recipients, 552 5.3.4 too big) are outcomes the client expects (Postfix's client sends the remaining recipients
 *   in a new transaction) and are not counted.
 * - A command before LHLO/EHLO/HELO other than NOOP, RSET, VRFY, XFORWARD and QUIT gets 503 5.5.1.
 * - MAIL and RCPT want <path>; a source route (@a,@b:) is accepted and dropped; the local part is a dot-string or a
 *   quoted string; the domain is letters, digits, '-', '_' and non-ASCII between dots, or an address literal.
 *   Non-ASCII needs SMTPUTF8 on the MAIL (else 553 5.6.7) and must be valid UTF-8. A sender's bad address is
 *   501 5.1.7, a recipient's 501 5.1.3 (a CR, NUL or other control byte included). RCPT <postmaster> is accepted.
 * - XFORWARD may come any time outside a transaction; its attributes belong to the next transaction and are
 *   forgotten when it ends, at RSET and at LHLO/EHLO/HELO (as smtpd's mail_reset does).
 * - A message over max_size is read to its end without being stored, then refused with 552 5.3.4 (per recipient in
 *   LMTP); it never reaches the deliver callback, and neither does a message cut off by mg_session_shutdown() or by
 *   the session being freed. */
#include "config.h"

#include "session.h"

#include "spool.h"

#include <string.h>

#define SESSION_MAX_LINE_DEFAULT 512
#define SESSION_MAX_LINE_MIN 16
#define SESSION_MAX_RECIPIENTS_DEFAULT 1000
#define SESSION_MAX_ERRORS_DEFAULT 20
#define SESSION_MAX_SIZE_DEFAULT ((gsize) 10240000) /* Postfix's message_size_limit */
#define SESSION_HARD_MAX ((gsize) G_MAXINT32)       /* what one GByteArray holds safely, whatever max_size says */
#define SESSION_REPLY_MAX 512                       /* a reply line with its CRLF (RFC 5321 §4.5.3.1.5) */

typedef enum {
  STATE_START, /* greeted, no LHLO/EHLO/HELO yet */
  STATE_READY, /* LHLO/EHLO/HELO done, no transaction */
  STATE_MAIL,  /* MAIL accepted, collecting RCPT */
  STATE_DATA,  /* reading the message */
  STATE_CLOSED,
} SessionState;

typedef enum {
  DATA_BOL,    /* at the start of a line */
  DATA_DOT,    /* a line started with "." */
  DATA_DOT_CR, /* a line started with ".\r" */
  DATA_MID,    /* inside a line */
  DATA_CR,     /* inside a line, after a CR */
} DataState;

/* a refusal the session makes itself; @error: counted against max_errors */
typedef struct {
  guint code;
  const char *enhanced;
  const char *text;
  gboolean error;
} Refusal;

static const Refusal bad_syntax = { 500, "5.5.2", "Error: bad syntax", TRUE };
static const Refusal line_too_long = { 500, "5.5.2", "Error: line too long", TRUE };
static const Refusal unknown_command = { 500, "5.5.1", "Error: command not recognized", TRUE };
static const Refusal need_mail = { 503, "5.5.1", "Error: need MAIL command", TRUE };
static const Refusal need_rcpt = { 503, "5.5.1", "Error: need RCPT command", TRUE };
static const Refusal nested_mail = { 503, "5.5.1", "Error: nested MAIL command", TRUE };
static const Refusal in_transaction = { 503, "5.5.1", "Error: MAIL transaction in progress", TRUE };
static const Refusal bad_sender = { 501, "5.1.7", "Bad sender address syntax", TRUE };
static const Refusal bad_recipient = { 501, "5.1.3", "Bad recipient address syntax", TRUE };
static const Refusal bad_parameter = { 501, "5.5.4", "Bad parameter syntax", TRUE };
static const Refusal unknown_parameter = { 555, "5.5.4", "Unsupported option", TRUE };
static const Refusal need_smtputf8 = { 553, "5.6.7", "Must declare SMTPUTF8 to send a non-ASCII address", TRUE };
static const Refusal size_too_big = { 552, "5.3.4", "Message size exceeds fixed limit", FALSE };
static const Refusal too_many_recipients = { 452, "4.5.3", "Error: too many recipients", FALSE };
static const Refusal message_too_big = { 552, "5.3.4", "Error: message file too big", FALSE };
static const Refusal bad_xforward_name = { 501, "5.5.4", "Bad XFORWARD attribute name", TRUE };
static const Refusal bad_xforward_value = { 501, "5.5.4", "Bad XFORWARD attribute value", TRUE };

struct _MgSession {
  MgSessionLimits limits;
  char *hostname;
  MgSessionDeliverFunc deliver;
  gpointer user_data;
  SessionState state;
  GByteArray *line; /* the command line so far, at most max_line - 1 octets */
  gboolean overlong;
  MgEnvelope env;     /* env.sender != NULL: MAIL accepted */
  char *spool_dir;    /* (nullable) */
  MgSpool *message;   /* (nullable): the message being read */
  gsize message_size; /* as RFC 1870 counts: line ends as two octets */
  gboolean too_big;
  gboolean unstored; /* the spool could not take it: read to the end, answered 451 */
  DataState dstate;
  guint errors;
  GString *out;
};

static const char *const xforward_names[] = { "NAME", "ADDR", "PORT", "PROTO", "HELO", "IDENT", "SOURCE" };

/* mg_session_reply_new - one reply line for the deliver callback's array (transfer full) */
MgReply *
mg_session_reply_new (guint code, const char *enhanced, const char *text)
{
  MgReply *r = g_new0 (MgReply, 1);

  r->code = code;
  r->enhanced = g_strdup (enhanced);
  r->text = g_strdup (text);
  return r;
}

/* mg_session_reply_free - frees a reply (NULL is fine) */
void
mg_session_reply_free (MgReply *reply)
{
  if (reply == NULL)
    return;
  g_free (reply->enhanced);
  g_free (reply->text);
  g_free (reply);
}

/* mg_session_limits_init - the default limits: 10240000-octet messages (Postfix's message_size_limit), 1000
 * recipients, 20 errors, 512-octet command lines */
void
mg_session_limits_init (MgSessionLimits *limits, MgProtocol protocol, const char *hostname)
{
  g_return_if_fail (limits != NULL);
  limits->protocol = protocol;
  limits->hostname = hostname;
  limits->max_size = SESSION_MAX_SIZE_DEFAULT;
  limits->max_recipients = SESSION_MAX_RECIPIENTS_DEFAULT;
  limits->max_errors = SESSION_MAX_ERRORS_DEFAULT;
  limits->max_line = SESSION_MAX_LINE_DEFAULT;
  limits->spool_dir = NULL;
  limits->spool_threshold = MG_SPOOL_DEFAULT_THRESHOLD;
}

static void
envelope_reset (MgEnvelope *env)
{
  g_clear_pointer (&env->sender, g_free);
  g_ptr_array_set_size (env->recipients, 0);
  env->eight_bit = FALSE;
  env->smtputf8 = FALSE;
  env->size = 0;
  g_hash_table_remove_all (env->xforward);
}

/* mg_session_new - a session in its greeting state; @limits is copied (transfer none) */
MgSession *
mg_session_new (const MgSessionLimits *limits, MgSessionDeliverFunc deliver, gpointer user_data)
{
  MgSession *s;

  g_return_val_if_fail (limits != NULL, NULL);
  g_return_val_if_fail (deliver != NULL, NULL);
  g_return_val_if_fail (limits->max_line == 0 || limits->max_line >= SESSION_MAX_LINE_MIN, NULL);
  s = g_new0 (MgSession, 1);
  s->limits = *limits;
  s->hostname = g_strdup (limits->hostname != NULL && *limits->hostname != '\0' ? limits->hostname : "localhost");
  s->limits.hostname = s->hostname;
  s->spool_dir = g_strdup (limits->spool_dir);
  s->limits.spool_dir = s->spool_dir;
  if (s->limits.max_line == 0)
    s->limits.max_line = SESSION_MAX_LINE_DEFAULT;
  if (s->limits.max_size == 0 || s->limits.max_size > SESSION_HARD_MAX)
    s->limits.max_size = SESSION_HARD_MAX;
  s->deliver = deliver;
  s->user_data = user_data;
  s->state = STATE_START;
  s->line = g_byte_array_sized_new ((guint) s->limits.max_line);
  s->env.recipients = g_ptr_array_new_with_free_func (g_free);
  s->env.xforward = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  s->out = g_string_new (NULL);
  return s;
}

/* mg_session_free - frees the session; a message still being read is dropped, never delivered */
void
mg_session_free (MgSession *s)
{
  if (s == NULL)
    return;
  g_free (s->hostname);
  g_byte_array_unref (s->line);
  g_free (s->env.sender);
  g_free (s->env.helo);
  g_ptr_array_unref (s->env.recipients);
  g_hash_table_unref (s->env.xforward);
  mg_spool_free (s->message);
  g_free (s->spool_dir);
  g_string_free (s->out, TRUE);
  g_free (s);
}

/* take_output - the replies gathered so far (transfer full); the buffer is kept for the next ones */
static GBytes *
take_output (MgSession *s)
{
  GBytes *out = g_bytes_new (s->out->str, s->out->len);

  g_string_truncate (s->out, 0);
  return out;
}

/* add_reply - "CODE ENH TEXT\r\n", text made one printable ASCII line that fits 512 octets */
static void
add_reply (MgSession *s, guint code, const char *enhanced, const char *text, gboolean more)
{
  gsize start = s->out->len;
  gsize room;

  g_string_append_printf (s->out, "%03u%c", code, more ? '-' : ' ');
  if (enhanced != NULL)
    g_string_append_printf (s->out, "%s ", enhanced);
  room = SESSION_REPLY_MAX - 2 - (s->out->len - start);
  for (const char *p = text != NULL ? text : ""; *p != '\0' && room > 0; p++, room--) {
    guchar c = (guchar) *p;
    g_string_append_c (s->out, c < 0x20 || c == 0x7f ? ' ' : c >= 0x80 ? '?' : (char) c);
  }
  g_string_append (s->out, "\r\n");
}

/* close_with - a 421 line, and the session is closed; a transaction in flight is dropped */
static void
close_with (MgSession *s, const char *enhanced, const char *why)
{
  g_autofree char *text = g_strdup_printf ("%s %s", s->hostname, why);

  add_reply (s, 421, enhanced, text, FALSE);
  s->state = STATE_CLOSED;
}

static void
refuse (MgSession *s, const Refusal *r)
{
  add_reply (s, r->code, r->enhanced, r->text, FALSE);
  if (!r->error)
    return;
  s->errors++;
  if (s->limits.max_errors > 0 && s->errors > s->limits.max_errors)
    close_with (s, "4.7.0", "Error: too many errors");
}

static void
ok (MgSession *s, const char *enhanced, const char *text)
{
  add_reply (s, 250, enhanced, text, FALSE);
}

static void
transaction_reset (MgSession *s)
{
  envelope_reset (&s->env);
  if (s->state == STATE_MAIL || s->state == STATE_DATA)
    s->state = STATE_READY;
}

static gboolean
has_control (const char *p, gsize len)
{
  for (gsize i = 0; i < len; i++)
    if ((guchar) p[i] < 0x20 || (guchar) p[i] == 0x7f)
      return TRUE;
  return FALSE;
}

static gboolean
is_atext (guchar c)
{
  return g_ascii_isalnum (c) || c >= 0x80 || (c != '\0' && strchr ("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

typedef enum { PATH_OK, PATH_BAD, PATH_NON_ASCII } PathStatus;

/* parse_path - "<" [source route ":"] mailbox ">" at @arg; *@end: the index after ">"; *@address: the mailbox
 * (transfer full), "" for "<>" when @null_ok. PATH_NON_ASCII: valid but needs SMTPUTF8 */
static PathStatus
parse_path (const char *arg, gsize len, gboolean null_ok, gsize *end, char **address)
{
  gsize i = 0, start, at = 0;
  gboolean ascii = TRUE;

  if (len == 0 || arg[0] != '<')
    return PATH_BAD;
  i = 1;
  if (i < len && arg[i] == '>') {
    if (!null_ok)
      return PATH_BAD;
    *end = 2;
    *address = g_strdup ("");
    return PATH_OK;
  }
  if (i < len && arg[i] == '@') { /* A-d-l ":" (RFC 5321 §4.1.2): accepted and ignored */
    while (i < len && arg[i] != ':') {
      guchar c = (guchar) arg[i];
      if (!(g_ascii_isalnum (c) || c == '@' || c == ',' || c == '.' || c == '-' || c == '_' || c == '[' || c == ']' ||
            c >= 0x80))
        return PATH_BAD;
      i++;
    }
    if (i == len)
      return PATH_BAD;
    i++;
  }
  start = i;
  if (i < len && arg[i] == '"') { /* Quoted-string */
    for (i++; i < len && arg[i] != '"'; i++) {
      guchar c = (guchar) arg[i];
      if (c == '\\') {
        if (++i == len || (guchar) arg[i] < 0x20 || (guchar) arg[i] == 0x7f)
          return PATH_BAD;
      } else if (c < 0x20 || c == 0x7f) {
        return PATH_BAD;
      }
    }
    if (i == len)
      return PATH_BAD;
    i++;
  } else { /* Dot-string */
    gboolean want_atom = TRUE;
    for (; i < len && arg[i] != '@' && arg[i] != '>'; i++) {
      if (arg[i] == '.' && !want_atom)
        want_atom = TRUE;
      else if (is_atext ((guchar) arg[i]))
        want_atom = FALSE;
      else
        return PATH_BAD;
    }
    if (want_atom)
      return PATH_BAD;
  }
  if (i < len && arg[i] == '>') { /* only <postmaster> may go without a domain (RFC 5321 §4.5.1) */
    if (null_ok || i - start != 10 || g_ascii_strncasecmp (arg + start, "postmaster", 10) != 0)
      return PATH_BAD;
  } else {
    gboolean want_label = TRUE;
    if (i == len || arg[i] != '@')
      return PATH_BAD;
    at = ++i;
    if (i < len && arg[i] == '[') { /* address literal: dcontent (RFC 5321 §4.1.3) */
      for (i++; i < len && arg[i] != ']'; i++)
        if ((guchar) arg[i] < 33 || (guchar) arg[i] > 126 || arg[i] == '[' || arg[i] == '\\')
          return PATH_BAD;
      if (i == len || i == at + 1)
        return PATH_BAD;
      i++;
      want_label = FALSE;
    } else {
      for (; i < len && arg[i] != '>'; i++) {
        guchar c = (guchar) arg[i];
        if (c == '.' && !want_label)
          want_label = TRUE;
        else if (g_ascii_isalnum (c) || c == '-' || c == '_' || c >= 0x80)
          want_label = FALSE;
        else
          return PATH_BAD;
      }
    }
    if (want_label || i == len || arg[i] != '>')
      return PATH_BAD;
  }
  for (gsize k = start; k < i; k++)
    if ((guchar) arg[k] >= 0x80)
      ascii = FALSE;
  if (!ascii && !g_utf8_validate_len (arg + start, i - start, NULL))
    return PATH_BAD;
  *end = i + 1;
  *address = g_strndup (arg + start, i - start);
  return ascii ? PATH_OK : PATH_NON_ASCII;
}

/* next_param - the next "KEY[=VALUE]" after spaces; FALSE at the end */
static gboolean
next_param (const char *arg, gsize len, gsize *pos, const char **key, gsize *key_len, const char **value,
            gsize *value_len)
{
  gsize i = *pos, k;

  while (i < len && arg[i] == ' ')
    i++;
  if (i == len)
    return FALSE;
  k = i;
  while (i < len && arg[i] != ' ' && arg[i] != '=')
    i++;
  *key = arg + k;
  *key_len = i - k;
  *value = NULL;
  *value_len = 0;
  if (i < len && arg[i] == '=') {
    k = ++i;
    while (i < len && arg[i] != ' ')
      i++;
    *value = arg + k;
    *value_len = i - k;
  }
  *pos = i;
  return TRUE;
}

static gboolean
word_is (const char *p, gsize len, const char *word)
{
  return len == strlen (word) && g_ascii_strncasecmp (p, word, len) == 0;
}

/* after_keyword - @arg starts with @keyword ("FROM:"), case-insensitive: the index after it and any spaces */
static gboolean
after_keyword (const char *arg, gsize len, const char *keyword, gsize *pos)
{
  gsize k = strlen (keyword);

  if (len < k || g_ascii_strncasecmp (arg, keyword, k) != 0)
    return FALSE;
  while (k < len && arg[k] == ' ')
    k++;
  *pos = k;
  return TRUE;
}

static gboolean
parse_size (const char *p, gsize len, gsize *size)
{
  gsize v = 0;

  if (len == 0 || len > 20)
    return FALSE;
  for (gsize i = 0; i < len; i++) {
    if (!g_ascii_isdigit (p[i]))
      return FALSE;
    v = v > (G_MAXSIZE - 9) / 10 ? G_MAXSIZE : v * 10 + (gsize) (p[i] - '0');
  }
  *size = v;
  return TRUE;
}

/* require_hello - TRUE after LHLO/EHLO/HELO; else 503 5.5.1 (an error) */
static gboolean
require_hello (MgSession *s)
{
  Refusal r = { 503, "5.5.1", "Error: send HELO/EHLO first", TRUE };

  if (s->state != STATE_START)
    return TRUE;
  if (s->limits.protocol == MG_PROTOCOL_LMTP)
    r.text = "Error: send LHLO first";
  refuse (s, &r);
  return FALSE;
}

static void
cmd_hello (MgSession *s, const char *verb, const char *arg, gsize len)
{
  gboolean lmtp = s->limits.protocol == MG_PROTOCOL_LMTP;
  gboolean extended = g_ascii_strcasecmp (verb, "HELO") != 0;

  if (lmtp != (g_ascii_strcasecmp (verb, "LHLO") == 0)) {
    refuse (s, &unknown_command);
    return;
  }
  if (len == 0 || has_control (arg, len) || !g_utf8_validate_len (arg, len, NULL)) {
    Refusal r = { 501, "5.5.4",
                  lmtp       ? "Syntax: LHLO hostname"
                  : extended ? "Syntax: EHLO hostname"
                             : "Syntax: HELO hostname",
                  TRUE };
    refuse (s, &r);
    return;
  }
  transaction_reset (s);
  g_free (s->env.helo);
  s->env.helo = g_strndup (arg, len);
  s->state = STATE_READY;
  if (!extended) {
    add_reply (s, 250, NULL, s->hostname, FALSE);
    return;
  }
  add_reply (s, 250, NULL, s->hostname, TRUE);
  add_reply (s, 250, NULL, "PIPELINING", TRUE);
  if (s->limits.max_size < SESSION_HARD_MAX) {
    g_autofree char *size = g_strdup_printf ("SIZE %" G_GSIZE_FORMAT, s->limits.max_size);
    add_reply (s, 250, NULL, size, TRUE);
  } else {
    add_reply (s, 250, NULL, "SIZE", TRUE);
  }
  add_reply (s, 250, NULL, "8BITMIME", TRUE);
  add_reply (s, 250, NULL, "ENHANCEDSTATUSCODES", TRUE);
  add_reply (s, 250, NULL, "SMTPUTF8", TRUE);
  add_reply (s, 250, NULL, "XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE", FALSE);
}

static void
cmd_mail (MgSession *s, const char *verb, const char *arg, gsize len)
{
  gsize pos = 0, end = 0, size = 0, key_len, value_len;
  g_autofree char *sender = NULL;
  gboolean got_size = FALSE, got_body = FALSE, eight_bit = FALSE, smtputf8 = FALSE;
  const char *key, *value;
  PathStatus status;

  if (!require_hello (s))
    return;
  if (s->state != STATE_READY) {
    refuse (s, &nested_mail);
    return;
  }
  if (!after_keyword (arg, len, "FROM:", &pos)) {
    Refusal r = { 501, "5.5.4", "Syntax: MAIL FROM:<address>", TRUE };
    refuse (s, &r);
    return;
  }
  status = parse_path (arg + pos, len - pos, TRUE, &end, &sender);
  if (status == PATH_BAD || (pos + end < len && arg[pos + end] != ' ')) {
    refuse (s, &bad_sender);
    return;
  }
  pos += end;
  while (next_param (arg, len, &pos, &key, &key_len, &value, &value_len)) {
    if (word_is (key, key_len, "SIZE")) {
      if (got_size || value == NULL || !parse_size (value, value_len, &size)) {
        refuse (s, &bad_parameter);
        return;
      }
      got_size = TRUE;
    } else if (word_is (key, key_len, "BODY")) {
      if (got_body || value == NULL) {
        refuse (s, &bad_parameter);
        return;
      }
      if (word_is (value, value_len, "8BITMIME")) {
        eight_bit = TRUE;
      } else if (!word_is (value, value_len, "7BIT")) {
        refuse (s, &unknown_parameter);
        return;
      }
      got_body = TRUE;
    } else if (word_is (key, key_len, "SMTPUTF8")) {
      if (smtputf8 || value != NULL) {
        refuse (s, &bad_parameter);
        return;
      }
      smtputf8 = TRUE;
    } else {
      refuse (s, &unknown_parameter);
      return;
    }
  }
  if (status == PATH_NON_ASCII && !smtputf8) {
    refuse (s, &need_smtputf8);
    return;
  }
  if (got_size && size > s->limits.max_size) {
    refuse (s, &size_too_big);
    return;
  }
  s->env.sender = g_steal_pointer (&sender);
  s->env.size = size;
  s->env.eight_bit = eight_bit;
  s->env.smtputf8 = smtputf8;
  s->state = STATE_MAIL;
  ok (s, "2.1.0", "Ok");
}

static void
cmd_rcpt (MgSession *s, const char *verb, const char *arg, gsize len)
{
  gsize pos = 0, end = 0;
  g_autofree char *recipient = NULL;
  PathStatus status;

  if (!require_hello (s))
    return;
  if (s->state != STATE_MAIL) {
    refuse (s, &need_mail);
    return;
  }
  if (!after_keyword (arg, len, "TO:", &pos)) {
    Refusal r = { 501, "5.5.4", "Syntax: RCPT TO:<address>", TRUE };
    refuse (s, &r);
    return;
  }
  status = parse_path (arg + pos, len - pos, FALSE, &end, &recipient);
  if (status == PATH_BAD || (pos + end < len && arg[pos + end] != ' ')) {
    refuse (s, &bad_recipient);
    return;
  }
  pos += end;
  while (pos < len && arg[pos] == ' ')
    pos++;
  if (pos < len) { /* no RCPT parameter is offered (DSN is not) */
    refuse (s, &unknown_parameter);
    return;
  }
  if (status == PATH_NON_ASCII && !s->env.smtputf8) {
    refuse (s, &need_smtputf8);
    return;
  }
  if (s->limits.max_recipients > 0 && s->env.recipients->len >= s->limits.max_recipients) {
    refuse (s, &too_many_recipients);
    return;
  }
  g_ptr_array_add (s->env.recipients, g_steal_pointer (&recipient));
  ok (s, "2.1.5", "Ok");
}

static void
cmd_data (MgSession *s, const char *verb, const char *arg, gsize len)
{
  if (len > 0) {
    Refusal r = { 501, "5.5.4", "Syntax: DATA", TRUE };
    refuse (s, &r);
    return;
  }
  if (!require_hello (s))
    return;
  if (s->state != STATE_MAIL) {
    refuse (s, &need_mail);
    return;
  }
  if (s->env.recipients->len == 0) {
    refuse (s, &need_rcpt);
    return;
  }
  mg_spool_free (s->message);
  s->message = mg_spool_new (s->spool_dir, s->limits.spool_threshold);
  s->message_size = 0;
  s->too_big = FALSE;
  s->unstored = FALSE;
  s->dstate = DATA_BOL;
  s->state = STATE_DATA;
  add_reply (s, 354, NULL, "End data with <CR><LF>.<CR><LF>", FALSE);
}

static void
cmd_rset (MgSession *s, const char *verb, const char *arg, gsize len)
{
  if (len > 0) {
    Refusal r = { 501, "5.5.4", "Syntax: RSET", TRUE };
    refuse (s, &r);
    return;
  }
  transaction_reset (s);
  ok (s, "2.0.0", "Ok");
}

static void
cmd_noop (MgSession *s, const char *verb, const char *arg, gsize len)
{
  ok (s, "2.0.0", "Ok");
}

static void
cmd_quit (MgSession *s, const char *verb, const char *arg, gsize len)
{
  g_autofree char *text = NULL;

  if (len > 0) {
    Refusal r = { 501, "5.5.4", "Syntax: QUIT", TRUE };
    refuse (s, &r);
    return;
  }
  text = g_strdup_printf ("%s closing connection", s->hostname);
  add_reply (s, 221, "2.0.0", text, FALSE);
  transaction_reset (s);
  s->state = STATE_CLOSED;
}

static void
cmd_vrfy (MgSession *s, const char *verb, const char *arg, gsize len)
{
  if (len == 0) {
    Refusal r = { 501, "5.5.4", "Syntax: VRFY address", TRUE };
    refuse (s, &r);
    return;
  }
  add_reply (s, 252, "2.0.0", "Cannot VRFY user, but will accept message and attempt delivery", FALSE);
}

/* xtext_decode - RFC 3461 §4 xtext ("+" two hex digits for any octet); NULL when malformed or when the value is not
 * UTF-8 without control characters */
static char *
xtext_decode (const char *p, gsize len)
{
  g_autoptr (GString) v = g_string_sized_new (len);

  for (gsize i = 0; i < len; i++) {
    guchar c = (guchar) p[i];
    if (c == '+') {
      if (i + 2 >= len || !g_ascii_isxdigit (p[i + 1]) || !g_ascii_isxdigit (p[i + 2]))
        return NULL;
      g_string_append_c (v, (char) (g_ascii_xdigit_value (p[i + 1]) * 16 + g_ascii_xdigit_value (p[i + 2])));
      i += 2;
    } else if (c < 33 || c > 126 || c == '=') {
      return NULL;
    } else {
      g_string_append_c (v, (char) c);
    }
  }
  if (has_control (v->str, v->len) || !g_utf8_validate_len (v->str, v->len, NULL))
    return NULL;
  return g_string_free (g_steal_pointer (&v), FALSE);
}

static void
cmd_xforward (MgSession *s, const char *verb, const char *arg, gsize len)
{
  g_autoptr (GPtrArray) pairs = g_ptr_array_new_with_free_func (g_free);
  gsize pos = 0, key_len, value_len;
  const char *key, *value;

  if (s->state == STATE_MAIL) {
    refuse (s, &in_transaction);
    return;
  }
  while (next_param (arg, len, &pos, &key, &key_len, &value, &value_len)) {
    const char *name = NULL;
    char *decoded;
    for (gsize n = 0; n < G_N_ELEMENTS (xforward_names); n++)
      if (word_is (key, key_len, xforward_names[n]))
        name = xforward_names[n];
    if (name == NULL || value == NULL) {
      refuse (s, &bad_xforward_name);
      return;
    }
    if ((decoded = xtext_decode (value, value_len)) == NULL) {
      refuse (s, &bad_xforward_value);
      return;
    }
    g_ptr_array_add (pairs, g_strdup (name));
    g_ptr_array_add (pairs, decoded);
  }
  if (pairs->len == 0) {
    Refusal r = { 501, "5.5.4", "Syntax: XFORWARD attribute=value...", TRUE };
    refuse (s, &r);
    return;
  }
  for (guint i = 0; i < pairs->len; i += 2)
    g_hash_table_replace (s->env.xforward, g_steal_pointer (&pairs->pdata[i]), g_steal_pointer (&pairs->pdata[i + 1]));
  ok (s, "2.0.0", "Ok");
}

typedef void (*CommandFunc) (MgSession *s, const char *verb, const char *arg, gsize len);

static const struct {
  const char *verb;
  CommandFunc func;
} commands[] = {
  { "LHLO", cmd_hello }, { "EHLO", cmd_hello }, { "HELO", cmd_hello },        { "MAIL", cmd_mail },
  { "RCPT", cmd_rcpt },  { "DATA", cmd_data },  { "RSET", cmd_rset },         { "NOOP", cmd_noop },
  { "QUIT", cmd_quit },  { "VRFY", cmd_vrfy },  { "XFORWARD", cmd_xforward },
};

/* dispatch - one command line without its line end (@line[@len] is NUL; it may hold NULs of its own) */
static void
dispatch (MgSession *s, const char *line, gsize len)
{
  gsize verb_len = 0, a;

  while (len > 0 && line[len - 1] == ' ')
    len--;
  while (verb_len < len && line[verb_len] != ' ')
    verb_len++;
  if (len == 0) {
    refuse (s, &bad_syntax);
    return;
  }
  for (a = verb_len; a < len && line[a] == ' '; a++)
    ;
  for (gsize c = 0; c < G_N_ELEMENTS (commands); c++)
    if (word_is (line, verb_len, commands[c].verb)) {
      commands[c].func (s, commands[c].verb, line + a, len - a);
      return;
    }
  refuse (s, &unknown_command);
}

/* command_consume - command bytes up to and with the next LF; the octets used */
static gsize
command_consume (MgSession *s, const guint8 *data, gsize len)
{
  const guint8 *nl = memchr (data, '\n', len);
  gsize n = nl != NULL ? (gsize) (nl - data) : len;
  gsize cap = s->limits.max_line - 2; /* octets before CRLF */

  if (!s->overlong) {
    if (s->line->len + n > cap + 1) { /* +1: the CR of a CRLF split from its LF */
      s->overlong = TRUE;
      g_byte_array_set_size (s->line, 0);
    } else {
      g_byte_array_append (s->line, data, (guint) n);
    }
  }
  if (nl == NULL)
    return len;
  if (!s->overlong && s->line->len > 0 && s->line->data[s->line->len - 1] == '\r')
    g_byte_array_set_size (s->line, s->line->len - 1);
  if (s->overlong || s->line->len > cap) {
    refuse (s, &line_too_long);
  } else {
    gsize line_len = s->line->len;
    g_byte_array_append (s->line, (const guint8 *) "", 1);
    dispatch (s, (const char *) s->line->data, line_len);
  }
  s->overlong = FALSE;
  g_byte_array_set_size (s->line, 0);
  return n + 1;
}

/* store - message octets; @wire: what they count as on the wire (a line end: two) */
static void
store (MgSession *s, const guint8 *p, gsize n, gsize wire)
{
  if (s->too_big || s->unstored)
    return;
  if (wire > s->limits.max_size - s->message_size) {
    s->too_big = TRUE; /* keep reading to the end, keep nothing */
    mg_spool_free (s->message);
    s->message = mg_spool_new (s->spool_dir, s->limits.spool_threshold);
    return;
  }
  s->message_size += wire;
  if (!mg_spool_write (s->message, p, n, NULL)) {
    s->unstored = TRUE; /* the same: to the end, nothing kept; 451 */
    mg_spool_free (s->message);
    s->message = mg_spool_new (s->spool_dir, s->limits.spool_threshold);
  }
}

static void
deliver (MgSession *s)
{
  guint n = s->limits.protocol == MG_PROTOCOL_LMTP ? s->env.recipients->len : 1;
  g_autoptr (GPtrArray) replies = g_ptr_array_new_with_free_func ((GDestroyNotify) mg_session_reply_free);
  g_autoptr (GBytes) message = NULL;
  gboolean bug = FALSE;

  if (s->too_big) {
    for (guint i = 0; i < n; i++)
      add_reply (s, message_too_big.code, message_too_big.enhanced, message_too_big.text, FALSE);
    return;
  }
  if (!s->unstored)
    message = mg_spool_finish (s->message, NULL);
  if (message == NULL) {
    for (guint i = 0; i < n; i++)
      add_reply (s, 451, "4.3.0", "Cannot store the message", FALSE);
    return;
  }
  s->deliver (&s->env, message, replies, s->user_data);
  if (replies->len != n) {
    g_critical ("deliver callback gave %u replies for %u", replies->len, n);
    bug = TRUE;
  }
  for (guint i = 0; i < n; i++) {
    const MgReply *r = bug ? NULL : g_ptr_array_index (replies, i);
    guint class = r != NULL ? r->code / 100 : 0;
    g_autofree char *enhanced = NULL;
    if (r != NULL && r->enhanced == NULL && (class == 2 || class == 4 || class == 5))
      enhanced = g_strdup_printf ("%u.0.0", class);
    else if (r != NULL && r->enhanced != NULL) {
      g_auto (GStrv) parts = g_strsplit (r->enhanced, ".", -1);
      gboolean valid = g_strv_length (parts) == 3 && r->code < 600 && (class == 2 || class == 4 || class == 5) &&
                       parts[0][0] == (char) ('0' + class) && parts[0][1] == '\0';
      for (guint k = 1; valid && k < 3; k++) {
        gsize l = strlen (parts[k]);
        valid = l >= 1 && l <= 3 && strspn (parts[k], "0123456789") == l;
      }
      if (valid)
        enhanced = g_strdup (r->enhanced);
    }
    if (enhanced == NULL) {
      if (!bug)
        g_critical ("deliver callback gave a malformed reply (%u %s)", r->code, r->enhanced ? r->enhanced : "");
      add_reply (s, 451, "4.3.0", "Error: internal error", FALSE);
    } else {
      add_reply (s, r->code, enhanced, r->text, FALSE);
    }
  }
}

/* data_consume - message bytes up to and with the terminator; the octets used, *@done when it was seen */
static gsize
data_consume (MgSession *s, const guint8 *d, gsize len, gboolean *done)
{
  static const guint8 cr = '\r', lf = '\n';
  gsize i = 0;

  *done = FALSE;
  while (i < len) {
    switch (s->dstate) {
    case DATA_BOL:
      if (d[i] == '.') {
        s->dstate = DATA_DOT;
        i++;
      } else {
        s->dstate = DATA_MID;
      }
      break;
    case DATA_DOT: /* the first dot of a line is dropped */
      if (d[i] == '\r') {
        s->dstate = DATA_DOT_CR;
        i++;
      } else if (d[i] == '\n') {
        *done = TRUE;
        return i + 1;
      } else {
        s->dstate = DATA_MID;
      }
      break;
    case DATA_DOT_CR:
      if (d[i] == '\n') {
        *done = TRUE;
        return i + 1;
      }
      store (s, &cr, 1, 1);
      s->dstate = DATA_MID;
      break;
    case DATA_CR:
      if (d[i] == '\n') {
        store (s, &lf, 1, 2);
        s->dstate = DATA_BOL;
        i++;
      } else {
        store (s, &cr, 1, 1);
        s->dstate = DATA_MID;
      }
      break;
    case DATA_MID: {
      gsize j = i;
      while (j < len && d[j] != '\r' && d[j] != '\n')
        j++;
      if (j > i)
        store (s, d + i, j - i, j - i);
      if (j < len) {
        if (d[j] == '\r') {
          s->dstate = DATA_CR;
        } else {
          store (s, &lf, 1, 2);
          s->dstate = DATA_BOL;
        }
        j++;
      }
      i = j;
      break;
    }
    }
  }
  return len;
}

/* mg_session_greeting - the 220 line to send first (transfer full) */
GBytes *
mg_session_greeting (MgSession *s)
{
  g_autofree char *text = NULL;

  g_return_val_if_fail (s != NULL, NULL);
  text = g_strdup_printf ("%s %s mimegate", s->hostname, s->limits.protocol == MG_PROTOCOL_LMTP ? "LMTP" : "ESMTP");
  add_reply (s, 220, NULL, text, FALSE);
  return take_output (s);
}

/**
 * mg_session_feed - bytes from the client (any split); returns the replies to send, in order, possibly empty
 * (transfer full). Calls the deliver callback for each message completed within @data. After the session closed,
 * bytes are ignored.
 */
GBytes *
mg_session_feed (MgSession *s, const guint8 *data, gsize len)
{
  gsize i = 0;

  g_return_val_if_fail (s != NULL, NULL);
  g_return_val_if_fail (data != NULL || len == 0, NULL);
  while (i < len && s->state != STATE_CLOSED) {
    if (s->state == STATE_DATA) {
      gboolean done;
      i += data_consume (s, data + i, len - i, &done);
      if (done) {
        deliver (s);
        g_clear_pointer (&s->message, mg_spool_free);
        transaction_reset (s);
      }
    } else {
      i += command_consume (s, data + i, len - i);
    }
  }
  return take_output (s);
}

/* mg_session_closed - QUIT was answered, the error budget spent or mg_session_shutdown() called: close the
 * connection after sending what the last call returned */
gboolean
mg_session_closed (MgSession *s)
{
  g_return_val_if_fail (s != NULL, TRUE);
  return s->state == STATE_CLOSED;
}

/**
 * mg_session_shutdown - the session closes (SIGTERM, idle timeout): returns the 421 line to send (transfer full),
 * empty when it was closed already. A transaction in flight is dropped; its message is never delivered.
 * @enhanced: (nullable): the RFC 3463 code, %NULL: "4.3.2" (system not accepting messages); 4.4.2 for a timeout
 * @why: (nullable): the text after the host name; %NULL: "Service shutting down, closing transmission channel"
 */
GBytes *
mg_session_shutdown (MgSession *s, const char *enhanced, const char *why)
{
  g_return_val_if_fail (s != NULL, NULL);
  if (s->state != STATE_CLOSED) {
    transaction_reset (s);
    g_clear_pointer (&s->message, mg_spool_free);
    close_with (s, enhanced != NULL ? enhanced : "4.3.2",
                why != NULL ? why : "Service shutting down, closing transmission channel");
  }
  return take_output (s);
}

/* mg_session_in_transaction - MAIL accepted and its transaction not finished (a graceful shutdown waits for it) */
gboolean
mg_session_in_transaction (MgSession *s)
{
  g_return_val_if_fail (s != NULL, FALSE);
  return s->state == STATE_MAIL || s->state == STATE_DATA;
}

/* mg_session_errors - protocol errors so far on this connection (for the connection's log line) */
guint
mg_session_errors (MgSession *s)
{
  g_return_val_if_fail (s != NULL, 0);
  return s->errors;
}
