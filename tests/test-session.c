/* test-session.c - the SMTP/LMTP protocol reader (gateway/session.c): every reply it makes, pipelined
 * conversations, feeds split anywhere (whole, byte by byte, in every two-piece split), dot-unstuffing and CRLF → LF
 * exactness, LMTP's per-recipient replies in RCPT order, the limits, the error budget, XFORWARD, and that a message
 * cut off is never delivered. The deliver callback is the test's own face: it records what it was given. */
#include "config.h"

#include <string.h>

#include "session.h"

#define HOST "mx.test"
#define LHLO_REPLY_SIZE(size)                                                                                          \
  "250-" HOST "\r\n250-PIPELINING\r\n250-SIZE " size "\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250-SMTPUTF8\r\n" \
  "250 XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE\r\n"
#define LHLO_REPLY LHLO_REPLY_SIZE ("1000")
#define OK "250 2.0.0 Ok\r\n"
#define MAIL_OK "250 2.1.0 Ok\r\n"
#define RCPT_OK "250 2.1.5 Ok\r\n"
#define GO_AHEAD "354 End data with <CR><LF>.<CR><LF>\r\n"
#define UNKNOWN "500 5.5.1 Error: command not recognized\r\n"
#define TOO_LONG "500 5.5.2 Error: line too long\r\n"
#define BAD_SENDER "501 5.1.7 Bad sender address syntax\r\n"
#define BAD_RCPT "501 5.1.3 Bad recipient address syntax\r\n"
#define BAD_PARAM "501 5.5.4 Bad parameter syntax\r\n"
#define UNSUPPORTED "555 5.5.4 Unsupported option\r\n"
#define NEED_UTF8 "553 5.6.7 Must declare SMTPUTF8 to send a non-ASCII address\r\n"
#define NEED_MAIL "503 5.5.1 Error: need MAIL command\r\n"
#define DELIVERED(who) "250 2.0.0 delivered " who "\r\n"
#define L "LHLO client.test\r\n"
#define M "MAIL FROM:<alice@example.org>\r\n"
#define R "RCPT TO:<bob@example.net>\r\n"

/* the test's face: what it was handed, and replies that depend on the recipient's local part */
typedef struct {
  MgProtocol protocol;
  guint calls;
  GString *log;         /* one "[envelope|message]" per delivery */
  GPtrArray *messages;  /* (element-type GBytes) */
  GPtrArray *envelopes; /* (element-type utf8): each delivery's envelope, one line */
  gboolean wrong_count; /* answer with no replies at all (a face's bug) */
} Sink;

static void
sink_init (Sink *sink, MgProtocol protocol)
{
  memset (sink, 0, sizeof *sink);
  sink->protocol = protocol;
  sink->log = g_string_new (NULL);
  sink->messages = g_ptr_array_new_with_free_func ((GDestroyNotify) g_bytes_unref);
  sink->envelopes = g_ptr_array_new_with_free_func (g_free);
}

static void
sink_clear (Sink *sink)
{
  g_string_free (sink->log, TRUE);
  g_ptr_array_unref (sink->messages);
  g_ptr_array_unref (sink->envelopes);
}

/* append_escaped - message bytes to a log; a NUL as "<NUL>" so that the log is a C string */
static void
append_escaped (GString *log, const char *data, gsize len)
{
  for (gsize i = 0; i < len; i++)
    if (data[i] == '\0')
      g_string_append (log, "<NUL>");
    else
      g_string_append_c (log, data[i]);
}

static char *
envelope_line (const MgEnvelope *env)
{
  GString *s = g_string_new (NULL);
  g_autoptr (GList) keys = g_list_sort (g_hash_table_get_keys (env->xforward), (GCompareFunc) strcmp);

  g_string_append_printf (s, "helo=%s from=%s to=", env->helo, env->sender);
  for (guint i = 0; i < env->recipients->len; i++)
    g_string_append_printf (s, "%s%s", i ? "," : "", (char *) g_ptr_array_index (env->recipients, i));
  g_string_append_printf (s, " 8bit=%d utf8=%d size=%" G_GSIZE_FORMAT " xforward=", env->eight_bit, env->smtputf8,
                          env->size);
  for (GList *k = keys; k != NULL; k = k->next)
    g_string_append_printf (s, "%s:%s;", (char *) k->data, (char *) g_hash_table_lookup (env->xforward, k->data));
  return g_string_free (s, FALSE);
}

static void
deliver_cb (const MgEnvelope *env, GBytes *message, GPtrArray *replies, gpointer user_data)
{
  Sink *sink = user_data;
  char *line = envelope_line (env);
  gsize len = 0;
  const char *data = g_bytes_get_data (message, &len);
  gboolean refuse_all = TRUE;

  sink->calls++;
  g_string_append_printf (sink->log, "[%s|", line);
  append_escaped (sink->log, data, len);
  g_string_append (sink->log, "]");
  g_ptr_array_add (sink->envelopes, line);
  g_ptr_array_add (sink->messages, g_bytes_ref (message));
  if (sink->wrong_count)
    return;
  for (guint i = 0; i < env->recipients->len; i++) {
    const char *rcpt = g_ptr_array_index (env->recipients, i);
    g_autofree char *text = NULL;
    if (!g_str_has_prefix (rcpt, "refuse"))
      refuse_all = FALSE;
    if (sink->protocol == MG_PROTOCOL_SMTP)
      continue;
    if (g_str_has_prefix (rcpt, "refuse")) {
      g_ptr_array_add (replies, mg_session_reply_new (550, "5.7.1", "refused by policy"));
    } else if (g_str_has_prefix (rcpt, "defer")) {
      g_ptr_array_add (replies, mg_session_reply_new (451, "4.7.0", "deferred"));
    } else {
      text = g_strdup_printf ("delivered %s", rcpt);
      g_ptr_array_add (replies, mg_session_reply_new (250, "2.0.0", text));
    }
  }
  if (sink->protocol == MG_PROTOCOL_SMTP)
    g_ptr_array_add (replies, refuse_all ? mg_session_reply_new (550, "5.7.1", "refused by policy")
                                         : mg_session_reply_new (250, "2.0.0", "delivered"));
}

/* text_of - reply bytes as a string (transfer full) */
static char *
text_of (GBytes *bytes)
{
  return g_strndup (g_bytes_get_data (bytes, NULL), g_bytes_get_size (bytes));
}

static void
test_limits (MgSessionLimits *limits, MgProtocol protocol)
{
  mg_session_limits_init (limits, protocol, HOST);
  limits->max_size = 1000;
  limits->max_recipients = 2;
  limits->max_errors = 100;
}

/* converse - feeds @input in pieces of @chunk octets (0: at once; cut at @cut first when @cut > 0); the replies
 * after the greeting (transfer full) */
static char *
converse (const MgSessionLimits *limits, const char *input, gsize len, gsize chunk, gsize cut, Sink *sink,
          gboolean *closed)
{
  g_autoptr (MgSession) s = mg_session_new (limits, deliver_cb, sink);
  GString *out = g_string_new (NULL);
  gsize i = 0;

  g_bytes_unref (mg_session_greeting (s)); /* sent first, as a face would; not part of what is compared */
  while (i < len) {
    gsize n = cut > 0 && i == 0 ? cut : chunk == 0 ? len - i : MIN (chunk, len - i);
    g_autoptr (GBytes) r = mg_session_feed (s, (const guint8 *) input + i, n);
    g_string_append_len (out, g_bytes_get_data (r, NULL), (gssize) g_bytes_get_size (r));
    i += n;
  }
  if (closed != NULL)
    *closed = mg_session_closed (s);
  return g_string_free (out, FALSE);
}

/* check_conversation - @input gives @want and the same deliveries however it is split: at once, byte by byte, in
 * pieces of 3 and 7, and cut in two at every position; returns the deliveries (transfer full) */
static char *
check_conversation (const MgSessionLimits *limits, const char *input, gsize len, const char *want)
{
  Sink whole;
  g_autofree char *got = NULL;
  static const gsize chunks[] = { 1, 3, 7 };
  char *log;

  sink_init (&whole, limits->protocol);
  got = converse (limits, input, len, 0, 0, &whole, NULL);
  g_assert_cmpstr (got, ==, want);
  for (gsize c = 0; c < G_N_ELEMENTS (chunks) + len - 1; c++) {
    Sink split;
    g_autofree char *again = NULL;
    sink_init (&split, limits->protocol);
    if (c < G_N_ELEMENTS (chunks))
      again = converse (limits, input, len, chunks[c], 0, &split, NULL);
    else /* two feeds, the first of 1 .. len - 1 octets */
      again = converse (limits, input, len, 0, c - G_N_ELEMENTS (chunks) + 1, &split, NULL);
    g_assert_cmpstr (again, ==, got);
    g_assert_cmpstr (split.log->str, ==, whole.log->str);
    sink_clear (&split);
  }
  log = g_strdup (whole.log->str);
  sink_clear (&whole);
  return log;
}

typedef struct {
  const char *name;
  MgProtocol protocol;
  const char *input;
  const char *want;
} ReplyCase;

static const ReplyCase reply_cases[] = {
  { "lhlo", MG_PROTOCOL_LMTP, L, LHLO_REPLY },
  { "lmtp-ehlo", MG_PROTOCOL_LMTP, "EHLO c\r\n", UNKNOWN },
  { "lmtp-helo", MG_PROTOCOL_LMTP, "HELO c\r\n", UNKNOWN },
  { "smtp-lhlo", MG_PROTOCOL_SMTP, "LHLO c\r\n", UNKNOWN },
  { "smtp-ehlo", MG_PROTOCOL_SMTP, "EHLO c\r\n", LHLO_REPLY },
  { "smtp-helo", MG_PROTOCOL_SMTP, "HELO c\r\n", "250 " HOST "\r\n" },
  { "hello-without-name", MG_PROTOCOL_LMTP, "LHLO\r\nLHLO   \r\n",
    "501 5.5.4 Syntax: LHLO hostname\r\n501 5.5.4 Syntax: LHLO hostname\r\n" },
  { "hello-control", MG_PROTOCOL_SMTP, "EHLO a\001b\r\n", "501 5.5.4 Syntax: EHLO hostname\r\n" },
  { "lower-case-verbs", MG_PROTOCOL_LMTP,
    "lhlo c\r\nmail from:<a@b.c>\r\nrCpT tO:<d@e.f>\r\nrset\r\nnoop\r\nvrfy x\r\nquit\r\n",
    LHLO_REPLY MAIL_OK RCPT_OK OK OK
    "252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery\r\n221 2.0.0 " HOST
    " closing connection\r\n" },
  { "bare-lf-commands", MG_PROTOCOL_LMTP, "LHLO c\nNOOP\nNOOP\r\n", LHLO_REPLY OK OK },
  { "unknown", MG_PROTOCOL_LMTP, "HELP\r\nEXPN x\r\nSTARTTLS\r\nMAILFROM:<a@b.c>\r\n\x80\r\n",
    UNKNOWN UNKNOWN UNKNOWN UNKNOWN UNKNOWN },
  { "empty-line", MG_PROTOCOL_LMTP, "\r\n  \r\n", "500 5.5.2 Error: bad syntax\r\n500 5.5.2 Error: bad syntax\r\n" },
  { "mail-before-lhlo", MG_PROTOCOL_LMTP, M R "DATA\r\n",
    "503 5.5.1 Error: send LHLO first\r\n503 5.5.1 Error: send LHLO first\r\n503 5.5.1 Error: send LHLO first\r\n" },
  { "mail-before-ehlo", MG_PROTOCOL_SMTP, M, "503 5.5.1 Error: send HELO/EHLO first\r\n" },
  { "rcpt-before-mail", MG_PROTOCOL_LMTP, L R, LHLO_REPLY NEED_MAIL },
  { "data-before-mail", MG_PROTOCOL_LMTP, L "DATA\r\n", LHLO_REPLY NEED_MAIL },
  { "data-without-rcpt", MG_PROTOCOL_LMTP, L M "RCPT TO:<bad>\r\nDATA\r\n",
    LHLO_REPLY MAIL_OK BAD_RCPT "503 5.5.1 Error: need RCPT command\r\n" },
  { "mail-twice", MG_PROTOCOL_LMTP, L M M, LHLO_REPLY MAIL_OK "503 5.5.1 Error: nested MAIL command\r\n" },
  { "mail-syntax", MG_PROTOCOL_LMTP,
    L "MAIL alice@example.org\r\nMAIL FROM:alice@example.org\r\nMAIL FROM:<alice@example.org>x\r\n"
      "MAIL FROM:<alice..x@example.org>\r\nMAIL FROM:<.alice@example.org>\r\nMAIL FROM:<alice@>\r\n"
      "MAIL FROM:<alice@example..org>\r\nMAIL FROM:<@example.org>\r\nMAIL FROM:<alice>\r\n"
      "MAIL FROM:<alice@example.org\r\nMAIL FROM:<a(b)@example.org>\r\nMAIL FROM:<\"open@example.org>\r\n"
      "MAIL FROM:<a@[]>\r\nMAIL FROM:<a@[1.2.3.4>\r\nMAIL FROM:<a@b c>\r\n",
    LHLO_REPLY "501 5.5.4 Syntax: MAIL FROM:<address>\r\n" BAD_SENDER BAD_SENDER BAD_SENDER BAD_SENDER BAD_SENDER
      BAD_SENDER BAD_SENDER BAD_SENDER BAD_SENDER BAD_SENDER BAD_SENDER BAD_SENDER BAD_SENDER BAD_SENDER },
  { "mail-control-bytes", MG_PROTOCOL_LMTP,
    L "MAIL FROM:<al\rice@example.org>\r\nMAIL FROM:<al\x01ice@example.org>\r\nMAIL FROM:<\"a\x7f\"@b.c>\r\n",
    LHLO_REPLY BAD_SENDER BAD_SENDER BAD_SENDER },
  { "rcpt-syntax", MG_PROTOCOL_LMTP,
    L M "RCPT bob@example.net\r\nRCPT TO:<>\r\nRCPT TO:<bob example@x.y>\r\nRCPT TO:bob@example.net\r\n"
        "RCPT TO:<bob@example.net> x\r\nRCPT TO:<postmasterx>\r\nRCPT TO:<bob@-ex!ample.net>\r\n",
    LHLO_REPLY MAIL_OK
    "501 5.5.4 Syntax: RCPT TO:<address>\r\n" BAD_RCPT BAD_RCPT BAD_RCPT UNSUPPORTED BAD_RCPT BAD_RCPT },
  { "rcpt-control-bytes", MG_PROTOCOL_LMTP,
    L M "RCPT TO:<bob\r@example.net>\r\nRCPT TO:<bob@exa\rmple.net>\r\nRCPT TO:<\"b\x01\"@x.y>\r\n"
        "RCPT TO:<bob@example.net\x7f>\r\nRCPT TO:<bob\x1b@example.net>\r\nRCPT TO:<b\tob@example.net>\r\n",
    LHLO_REPLY MAIL_OK BAD_RCPT BAD_RCPT BAD_RCPT BAD_RCPT BAD_RCPT BAD_RCPT },
  { "rcpt-forms", MG_PROTOCOL_LMTP, L M "RCPT TO:<Postmaster>\r\nRCPT TO: <bob@example.net>\r\n",
    LHLO_REPLY MAIL_OK RCPT_OK RCPT_OK },
  { "rcpt-parameters", MG_PROTOCOL_LMTP, L M "RCPT TO:<bob@example.net> NOTIFY=NEVER\r\n",
    LHLO_REPLY MAIL_OK UNSUPPORTED },
  { "mail-parameters", MG_PROTOCOL_LMTP,
    L "MAIL FROM:<a@b.c> SIZE=abc\r\nMAIL FROM:<a@b.c> SIZE=1 SIZE=2\r\nMAIL FROM:<a@b.c> SIZE=\r\n"
      "MAIL FROM:<a@b.c> BODY=BINARYMIME\r\nMAIL FROM:<a@b.c> BODY\r\nMAIL FROM:<a@b.c> BODY=7BIT BODY=8BITMIME\r\n"
      "MAIL FROM:<a@b.c> SMTPUTF8=yes\r\nMAIL FROM:<a@b.c> AUTH=<>\r\nMAIL FROM:<a@b.c> RET=FULL\r\n"
      "MAIL FROM:<a@b.c> size=1000 body=8bitmime smtputf8\r\n",
    LHLO_REPLY BAD_PARAM BAD_PARAM BAD_PARAM UNSUPPORTED BAD_PARAM BAD_PARAM BAD_PARAM UNSUPPORTED UNSUPPORTED
      MAIL_OK },
  { "mail-size-over-limit", MG_PROTOCOL_LMTP,
    L "MAIL FROM:<a@b.c> SIZE=1001\r\nMAIL FROM:<a@b.c> SIZE=99999999999999999999\r\n",
    LHLO_REPLY "552 5.3.4 Message size exceeds fixed limit\r\n552 5.3.4 Message size exceeds fixed limit\r\n" },
  { "smtputf8", MG_PROTOCOL_LMTP,
    L "MAIL FROM:<j\xc3\xb6rg@example.org>\r\nMAIL FROM:<j\xc3\xb6rg@b\xc3\xbc"
      "cher.example> SMTPUTF8\r\nRCPT TO:<\xe7\x94\xa8\xe6\x88\xb7@\xe4\xbe\x8b.example>\r\n"
      "RCPT TO:<bad\xff@example.net>\r\n",
    LHLO_REPLY NEED_UTF8 MAIL_OK RCPT_OK BAD_RCPT },
  { "rcpt-utf8-without-smtputf8", MG_PROTOCOL_LMTP, L M "RCPT TO:<b\xc3\xb6@example.net>\r\n",
    LHLO_REPLY MAIL_OK NEED_UTF8 },
  { "too-many-recipients", MG_PROTOCOL_LMTP, L M R R R R,
    LHLO_REPLY MAIL_OK RCPT_OK RCPT_OK "452 4.5.3 Error: too many recipients\r\n"
                                       "452 4.5.3 Error: too many recipients\r\n" },
  { "vrfy-without-argument", MG_PROTOCOL_LMTP, "VRFY\r\n", "501 5.5.4 Syntax: VRFY address\r\n" },
  { "arguments-where-none-belong", MG_PROTOCOL_LMTP, L "RSET x\r\nQUIT now\r\n" M R "DATA x\r\n",
    LHLO_REPLY "501 5.5.4 Syntax: RSET\r\n501 5.5.4 Syntax: QUIT\r\n" MAIL_OK RCPT_OK "501 5.5.4 Syntax: DATA\r\n" },
  { "trailing-spaces", MG_PROTOCOL_LMTP, L "RSET  \r\nNOOP whatever\r\n", LHLO_REPLY OK OK },
  { "rset-ends-transaction", MG_PROTOCOL_LMTP, L M "RSET\r\n" R M, LHLO_REPLY MAIL_OK OK NEED_MAIL MAIL_OK },
  { "lhlo-ends-transaction", MG_PROTOCOL_LMTP, L M L M, LHLO_REPLY MAIL_OK LHLO_REPLY MAIL_OK },
  { "xforward", MG_PROTOCOL_LMTP,
    L "XFORWARD NAME=spike.porcupine.org ADDR=168.100.189.2 PORT=25\r\nxforward proto=ESMTP\r\n" M
      "XFORWARD NAME=x\r\n",
    LHLO_REPLY OK OK MAIL_OK "503 5.5.1 Error: MAIL transaction in progress\r\n" },
  { "xforward-bad", MG_PROTOCOL_LMTP,
    "XFORWARD\r\nXFORWARD FOO=bar\r\nXFORWARD NAME\r\nXFORWARD NAME=a+2\r\nXFORWARD NAME=a+0Ab\r\n"
    "XFORWARD NAME=a+ZZ\r\nXFORWARD NAME=a=b\r\nXFORWARD NAME=+FF\r\n",
    "501 5.5.4 Syntax: XFORWARD attribute=value...\r\n501 5.5.4 Bad XFORWARD attribute name\r\n"
    "501 5.5.4 Bad XFORWARD attribute name\r\n501 5.5.4 Bad XFORWARD attribute value\r\n"
    "501 5.5.4 Bad XFORWARD attribute value\r\n501 5.5.4 Bad XFORWARD attribute value\r\n"
    "501 5.5.4 Bad XFORWARD attribute value\r\n501 5.5.4 Bad XFORWARD attribute value\r\n" },
  { "quit-ends-reading", MG_PROTOCOL_LMTP, "NOOP\r\nQUIT\r\nNOOP\r\nNOOP\r\n",
    OK "221 2.0.0 " HOST " closing connection\r\n" },
  { "data-reply-lmtp", MG_PROTOCOL_LMTP, L M R "RCPT TO:<carol@example.net>\r\nDATA\r\nhi\r\n.\r\n",
    LHLO_REPLY MAIL_OK RCPT_OK RCPT_OK GO_AHEAD DELIVERED ("bob@example.net") DELIVERED ("carol@example.net") },
  { "data-reply-smtp", MG_PROTOCOL_SMTP, "EHLO c\r\n" M R "RCPT TO:<carol@example.net>\r\nDATA\r\nhi\r\n.\r\n",
    LHLO_REPLY MAIL_OK RCPT_OK RCPT_OK GO_AHEAD "250 2.0.0 delivered\r\n" },
};

static void
test_replies (gconstpointer data)
{
  const ReplyCase *c = data;
  MgSessionLimits limits;
  g_autofree char *log = NULL;

  test_limits (&limits, c->protocol);
  log = check_conversation (&limits, c->input, strlen (c->input), c->want);
  g_assert_cmpstr (log, ==, g_str_has_prefix (c->name, "data-reply") ? log : "");
}

/* test_line_length - 512 octets with the CRLF are a command; 513 are not; the session reads past an overlong line
 * and answers the next one; with a bare LF, the line's own octets count the same way (at most 510) */
static void
test_line_length (void)
{
  MgSessionLimits limits;
  g_autofree char *x505 = g_strnfill (505, 'x');
  g_autofree char *x506 = g_strnfill (506, 'x');
  g_autofree char *x5000 = g_strnfill (5000, 'x');
  g_autofree char *at512 = g_strdup_printf ("NOOP %s\r\n", x505);
  g_autofree char *at513 = g_strdup_printf ("NOOP %s\r\nNOOP\r\n", x506);
  g_autofree char *bare511 = g_strdup_printf ("NOOP %s\n", x506);
  g_autofree char *huge = g_strdup_printf ("MAIL FROM:<%s@example.org>\r\nNOOP\r\n", x5000);
  g_autofree char *log = NULL;

  test_limits (&limits, MG_PROTOCOL_LMTP);
  g_assert_cmpuint (strlen (at512), ==, 512);
  g_free (check_conversation (&limits, at512, strlen (at512), OK));
  g_free (check_conversation (&limits, at513, strlen (at513), TOO_LONG OK));
  g_free (check_conversation (&limits, bare511, strlen (bare511), TOO_LONG));
  g_free (check_conversation (&limits, huge, strlen (huge), TOO_LONG OK));
  limits.max_line = 16;
  log = check_conversation (&limits, "NOOP 456789012\r\nNOOP 4567890123\r\n", 33, OK TOO_LONG);
  g_assert_cmpstr (log, ==, "");
}

typedef struct {
  const char *name;
  const char *wire; /* what follows DATA, up to and with the terminator */
  const char *message;
  gsize wire_len;    /* 0: strlen */
  gsize message_len; /* 0: strlen */
} DataCase;

static const DataCase data_cases[] = {
  { "crlf-to-lf", "a\r\nb\r\n.\r\n", "a\nb\n" },
  { "stuffed-dot", "..x\r\n.\r\n", ".x\n" },
  { "stuffed-dots", "...\r\n..\r\n.\r\n", "..\n.\n" },
  { "unstuffed-dot-dropped", ".x\r\n. \r\n.\r\n", "x\n \n" },
  { "dot-inside-line", "a.\r\nb..c\r\n.\r\n", "a.\nb..c\n" },
  { "bare-cr-is-content", "a\rb\r\n\r.\r\n.\r\n", "a\rb\n\r.\n" },
  { "cr-before-crlf", "a\r\r\n.\r\n", "a\r\n" },
  { "dot-cr-then-text", ".\rx\r\n.\r\n", "\rx\n" },
  { "dot-cr-cr-lf", ".\r\r\n.\r\n", "\r\n" },
  { "bare-lf-lines-and-end", "a\nb\n.\n", "a\nb\n" },
  { "crlf-line-bare-lf-end", "a\r\n.\n", "a\n" },
  { "bare-lf-line-crlf-end", "a\n.\r\n", "a\n" },
  { "empty-message", ".\r\n", "" },
  { "blank-lines", "\r\n\r\n.\r\n", "\n\n" },
  { "terminator-look-alike", "a\r\n.a\r\n\r\n..\r\n.\r\n", "a\na\n\n.\n" },
  { "binary", "\x01\xff\x80\r\n.\r\n", "\x01\xff\x80\n" },
  { "nul", "a\0b\r\n.\r\n", "a\0b\n", 8, 4 },
  { "headers-and-body", "From: a@b.c\r\nSubject: x\r\n\r\nbody\r\n-- \r\nsig\r\n.\r\n",
    "From: a@b.c\nSubject: x\n\nbody\n-- \nsig\n" },
};

/* test_data - the deliver callback receives exactly the expected bytes, however the feed is split */
static void
test_data (gconstpointer data)
{
  const DataCase *c = data;
  MgSessionLimits limits;
  g_autoptr (GString) input = g_string_new (L M R "DATA\r\n");
  gsize message_len = c->message_len ? c->message_len : strlen (c->message);
  gsize wire = c->wire_len ? c->wire_len : strlen (c->wire);
  g_autofree char *log = NULL;
  g_autoptr (GString) want_log = g_string_new ("[helo=client.test from=alice@example.org to=bob@example.net 8bit=0 "
                                               "utf8=0 size=0 xforward=|");

  test_limits (&limits, MG_PROTOCOL_LMTP);
  g_string_append_len (input, c->wire, (gssize) wire);
  g_string_append (input, "NOOP\r\n");
  log = check_conversation (&limits, input->str, input->len,
                            LHLO_REPLY MAIL_OK RCPT_OK GO_AHEAD DELIVERED ("bob@example.net") OK);
  append_escaped (want_log, c->message, message_len);
  g_string_append (want_log, "]");
  g_assert_cmpstr (log, ==, want_log->str);
}

/* test_lmtp_replies - one reply per accepted recipient, in RCPT order, each the face's own; refused RCPTs get none */
static void
test_lmtp_replies (void)
{
  MgSessionLimits limits;
  const char *input = L M "RCPT TO:<refuse@example.net>\r\nRCPT TO:<bad address>\r\nRCPT TO:<ok@example.net>\r\n"
                          "RCPT TO:<defer@example.net>\r\nDATA\r\nx\r\n.\r\n";
  g_autofree char *log = NULL;

  test_limits (&limits, MG_PROTOCOL_LMTP);
  limits.max_recipients = 10;
  log = check_conversation (&limits, input, strlen (input),
                            LHLO_REPLY MAIL_OK RCPT_OK BAD_RCPT RCPT_OK RCPT_OK GO_AHEAD
                            "550 5.7.1 refused by policy\r\n" DELIVERED ("ok@example.net") "451 4.7.0 deferred\r\n");
  g_assert_nonnull (strstr (log, "to=refuse@example.net,ok@example.net,defer@example.net "));
}

/* test_envelope - what the face is handed: sender, recipients as written (route dropped, quoting kept), the MAIL
 * parameters, the LHLO name and the decoded XFORWARD attributes; and all of it reset for the next transaction */
static void
test_envelope (void)
{
  MgSessionLimits limits;
  const char *input =
    "EHLO relay.example\r\n"
    "XFORWARD NAME=spike.porcupine.org ADDR=168.100.189.2 PORT=25 PROTO=ESMTP\r\n"
    "XFORWARD HELO=spike.porcupine.org IDENT=4ABC+2B1 SOURCE=REMOTE\r\nXFORWARD name=[UNAVAILABLE]\r\n"
    "MAIL FROM:<> SIZE=42 BODY=8BITMIME SMTPUTF8\r\n"
    "RCPT TO:<@hop1,@hop2:j\xc3\xb6rg@example.net>\r\nRCPT TO:<\"a b>c\"@[192.0.2.1]>\r\nDATA\r\nx\r\n.\r\n"
    "MAIL FROM:<\"x y\"@example.org>\r\nRCPT TO:<PostMaster>\r\nDATA\r\ny\r\n.\r\n";
  g_autofree char *log = NULL;

  test_limits (&limits, MG_PROTOCOL_SMTP);
  log = check_conversation (
    &limits, input, strlen (input),
    "250-" HOST "\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n"
    "250-SMTPUTF8\r\n250 XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE\r\n" OK OK OK MAIL_OK RCPT_OK RCPT_OK GO_AHEAD
    "250 2.0.0 delivered\r\n" MAIL_OK RCPT_OK GO_AHEAD "250 2.0.0 delivered\r\n");
  g_assert_cmpstr (log, ==,
                   "[helo=relay.example from= to=j\xc3\xb6rg@example.net,\"a b>c\"@[192.0.2.1] 8bit=1 utf8=1 size=42 "
                   "xforward=ADDR:168.100.189.2;HELO:spike.porcupine.org;IDENT:4ABC+1;NAME:[UNAVAILABLE];PORT:25;"
                   "PROTO:ESMTP;SOURCE:REMOTE;|x\n]"
                   "[helo=relay.example from=\"x y\"@example.org to=PostMaster 8bit=0 utf8=0 size=0 xforward=|y\n]");
}

/* test_pipelined - a whole LMTP conversation in one feed, two messages on one connection, as Postfix's lmtp client
 * sends it (RFC 2920: MAIL, RCPT... DATA in one go); the replies come out in order */
static void
test_pipelined (void)
{
  MgSessionLimits limits;
  const char *input =
    "LHLO postfix.example\r\nXFORWARD IDENT=1111 SOURCE=LOCAL\r\n" M R
    "RCPT TO:<carol@example.net>\r\nDATA\r\nSubject: one\r\n\r\n..first\r\n.\r\n"
    "XFORWARD IDENT=2222\r\nMAIL FROM:<dave@example.org> BODY=8BITMIME\r\nRCPT TO:<erin@example.net>\r\n"
    "DATA\r\nSubject: two\r\n\r\nsecond\r\n.\r\nQUIT\r\n";
  g_autofree char *log = NULL;

  test_limits (&limits, MG_PROTOCOL_LMTP);
  log = check_conversation (
    &limits, input, strlen (input),
    LHLO_REPLY OK MAIL_OK RCPT_OK RCPT_OK GO_AHEAD DELIVERED ("bob@example.net") DELIVERED ("carol@example.net")
      OK MAIL_OK RCPT_OK GO_AHEAD DELIVERED ("erin@example.net") "221 2.0.0 " HOST " closing connection\r\n");
  g_assert_cmpstr (log, ==,
                   "[helo=postfix.example from=alice@example.org to=bob@example.net,carol@example.net 8bit=0 utf8=0 "
                   "size=0 xforward=IDENT:1111;SOURCE:LOCAL;|Subject: one\n\n.first\n]"
                   "[helo=postfix.example from=dave@example.org to=erin@example.net 8bit=1 utf8=0 size=0 "
                   "xforward=IDENT:2222;|Subject: two\n\nsecond\n]");
}

/* test_too_big - max_size counts CRLF line ends as two octets (RFC 1870); a message over it is read to its end,
 * refused per recipient in LMTP (once in SMTP), never delivered, and the connection goes on */
static void
test_too_big (void)
{
  MgSessionLimits limits;
  const char *input = L M R "RCPT TO:<carol@example.net>\r\nDATA\r\n0123456789abcdef\r\n.\r\nNOOP\r\n";
  const char *fits = LHLO_REPLY_SIZE ("18") MAIL_OK RCPT_OK RCPT_OK GO_AHEAD DELIVERED ("bob@example.net")
    DELIVERED ("carol@example.net") OK;
  const char *big = LHLO_REPLY_SIZE ("17") MAIL_OK RCPT_OK RCPT_OK GO_AHEAD
    "552 5.3.4 Error: message file too big\r\n552 5.3.4 Error: message file too big\r\n" OK;
  g_autofree char *long_body = NULL;
  g_autofree char *log = NULL;

  test_limits (&limits, MG_PROTOCOL_LMTP);
  limits.max_size = 18;
  log = check_conversation (&limits, input, strlen (input), fits);
  g_assert_true (g_str_has_suffix (log, "|0123456789abcdef\n]"));
  g_clear_pointer (&log, g_free);
  limits.max_size = 17;
  log = check_conversation (&limits, input, strlen (input), big);
  g_assert_cmpstr (log, ==, "");
  g_clear_pointer (&log, g_free);

  /* a long message with a limit far below it: SMTP gives one reply */
  limits.protocol = MG_PROTOCOL_SMTP;
  limits.max_size = 100;
  {
    g_autoptr (GString) s = g_string_new ("EHLO c\r\n" M R "DATA\r\n");
    for (guint i = 0; i < 2000; i++)
      g_string_append (s, "a line of text in a message that is far too big\r\n");
    g_string_append (s, ".\r\nNOOP\r\n");
    long_body = g_string_free (g_steal_pointer (&s), FALSE);
  }
  {
    Sink sink;
    g_autofree char *got = NULL;
    sink_init (&sink, MG_PROTOCOL_SMTP);
    got = converse (&limits, long_body, strlen (long_body), 1, 0, &sink, NULL);
    g_assert_true (g_str_has_suffix (got, GO_AHEAD "552 5.3.4 Error: message file too big\r\n" OK));
    g_assert_cmpuint (sink.calls, ==, 0);
    sink_clear (&sink);
  }
}

/* test_error_budget - max_errors protocol errors are answered; one more is answered and followed by 421 and the
 * session is closed; what follows is not read. Limits reached are not errors. */
static void
test_error_budget (void)
{
  MgSessionLimits limits;
  gboolean closed = FALSE;
  Sink sink;
  g_autofree char *got = NULL;
  const char *input = "FOO\r\n" L "RCPT TO:<x@y.z>\r\nMAIL FROM:<bad>\r\nDATA\r\nNOOP\r\nNOOP\r\n";

  test_limits (&limits, MG_PROTOCOL_LMTP);
  limits.max_errors = 3;
  g_free (check_conversation (&limits, input, strlen (input),
                              UNKNOWN LHLO_REPLY NEED_MAIL BAD_SENDER NEED_MAIL "421 4.7.0 " HOST
                                                                                " Error: too many errors\r\n"));
  sink_init (&sink, MG_PROTOCOL_LMTP);
  got = converse (&limits, input, strlen (input), 0, 0, &sink, &closed);
  g_assert_true (closed);
  sink_clear (&sink);
  g_clear_pointer (&got, g_free);

  /* three errors exactly: still open */
  input = "FOO\r\nFOO\r\nFOO\r\nNOOP\r\n";
  sink_init (&sink, MG_PROTOCOL_LMTP);
  got = converse (&limits, input, strlen (input), 0, 0, &sink, &closed);
  g_assert_cmpstr (got, ==, UNKNOWN UNKNOWN UNKNOWN OK);
  g_assert_false (closed);
  sink_clear (&sink);
  g_clear_pointer (&got, g_free);

  /* 452 and 552 do not count */
  limits.max_errors = 1;
  limits.max_recipients = 1;
  input = L "MAIL FROM:<a@b.c> SIZE=5000\r\nMAIL FROM:<a@b.c> SIZE=5000\r\n" M R R R R "NOOP\r\n";
  sink_init (&sink, MG_PROTOCOL_LMTP);
  got = converse (&limits, input, strlen (input), 0, 0, &sink, &closed);
  g_assert_true (g_str_has_suffix (got, RCPT_OK "452 4.5.3 Error: too many recipients\r\n"
                                                "452 4.5.3 Error: too many recipients\r\n"
                                                "452 4.5.3 Error: too many recipients\r\n" OK));
  g_assert_false (closed);
  sink_clear (&sink);
}

/* test_cut_off - a client gone in the middle of DATA, or a shutdown then: nothing is delivered */
static void
test_cut_off (void)
{
  MgSessionLimits limits;
  Sink sink;
  const char *input = L M R "DATA\r\nSubject: half\r\n\r\nhalf a message\r\n.";

  test_limits (&limits, MG_PROTOCOL_LMTP);
  for (guint shutdown = 0; shutdown < 3; shutdown++) {
    g_autoptr (MgSession) s = NULL;
    g_autoptr (GBytes) r = NULL;
    sink_init (&sink, MG_PROTOCOL_LMTP);
    s = mg_session_new (&limits, deliver_cb, &sink);
    g_assert_false (mg_session_in_transaction (s));
    g_autofree char *replies = NULL;
    r = mg_session_feed (s, (const guint8 *) input, strlen (input));
    replies = text_of (r);
    g_assert_cmpstr (replies, ==, LHLO_REPLY MAIL_OK RCPT_OK GO_AHEAD);
    g_assert_true (mg_session_in_transaction (s));
    g_assert_false (mg_session_closed (s));
    if (shutdown > 0) {
      g_autoptr (GBytes) bye = shutdown == 1 ? mg_session_shutdown (s, NULL, NULL)
                                             : mg_session_shutdown (s, "4.4.2", "Error: timeout exceeded");
      g_autoptr (GBytes) after = NULL;
      g_autoptr (GBytes) again = NULL;
      g_autofree char *text = text_of (bye);
      g_assert_cmpstr (text, ==,
                       shutdown == 1 ? "421 4.3.2 " HOST " Service shutting down, closing transmission channel\r\n"
                                     : "421 4.4.2 " HOST " Error: timeout exceeded\r\n");
      g_assert_true (mg_session_closed (s));
      g_assert_false (mg_session_in_transaction (s));
      after = mg_session_feed (s, (const guint8 *) "\r\n.\r\n", 5); /* the rest arrives: it is not read */
      g_assert_cmpuint (g_bytes_get_size (after), ==, 0);
      again = mg_session_shutdown (s, NULL, NULL);
      g_assert_cmpuint (g_bytes_get_size (again), ==, 0);
    }
    g_clear_pointer (&s, mg_session_free); /* the face frees the session of a client that went away */
    g_assert_cmpuint (sink.calls, ==, 0);
    sink_clear (&sink);
  }
}

/* test_in_transaction - what a graceful shutdown waits for */
static void
test_in_transaction (void)
{
  static const struct {
    const char *feed;
    gboolean in;
  } steps[] = {
    { L, FALSE },       { M, TRUE }, { R, TRUE },           { "DATA\r\n", TRUE }, { "x\r\n", TRUE },
    { ".\r\n", FALSE }, { M, TRUE }, { "RSET\r\n", FALSE }, { M, TRUE },          { L, FALSE },
  };
  MgSessionLimits limits;
  Sink sink;
  g_autoptr (MgSession) s = NULL;

  test_limits (&limits, MG_PROTOCOL_LMTP);
  sink_init (&sink, MG_PROTOCOL_LMTP);
  s = mg_session_new (&limits, deliver_cb, &sink);
  for (gsize i = 0; i < G_N_ELEMENTS (steps); i++) {
    g_bytes_unref (mg_session_feed (s, (const guint8 *) steps[i].feed, strlen (steps[i].feed)));
    g_assert_cmpint (mg_session_in_transaction (s), ==, steps[i].in);
  }
  g_assert_cmpuint (sink.calls, ==, 1);
  g_assert_cmpuint (mg_session_errors (s), ==, 0);
  g_clear_pointer (&s, mg_session_free);
  sink_clear (&sink);
}

/* test_greeting - the 220 line and SIZE without a limit */
static void
test_greeting (void)
{
  MgSessionLimits limits;
  Sink sink;
  g_autofree char *got = NULL;

  for (int p = 0; p < 2; p++) {
    g_autoptr (MgSession) s = NULL;
    g_autoptr (GBytes) g = NULL;
    test_limits (&limits, p ? MG_PROTOCOL_SMTP : MG_PROTOCOL_LMTP);
    sink_init (&sink, limits.protocol);
    s = mg_session_new (&limits, deliver_cb, &sink);
    g_autofree char *text = NULL;
    g = mg_session_greeting (s);
    text = text_of (g);
    g_assert_cmpstr (text, ==, p ? "220 " HOST " ESMTP mimegate\r\n" : "220 " HOST " LMTP mimegate\r\n");
    g_clear_pointer (&s, mg_session_free);
    sink_clear (&sink);
  }
  limits.max_size = 0;
  sink_init (&sink, MG_PROTOCOL_SMTP);
  got = converse (&limits, "EHLO c\r\n", 8, 0, 0, &sink, NULL);
  g_assert_nonnull (strstr (got, "\r\n250-SIZE\r\n"));
  sink_clear (&sink);
}

/* test_face_bugs - a face that answers with the wrong number of replies, or a malformed one, makes every affected
 * recipient 451 4.3.0 (a bug defers, never bounces); reply text is made one clean line of at most 512 octets */
static void
test_face_bugs (void)
{
  MgSessionLimits limits;
  Sink sink;
  g_autofree char *got = NULL;
  const char *input = L M R "RCPT TO:<carol@example.net>\r\nDATA\r\nx\r\n.\r\n";

  test_limits (&limits, MG_PROTOCOL_LMTP);
  sink_init (&sink, MG_PROTOCOL_LMTP);
  sink.wrong_count = TRUE;
  g_test_expect_message ("mimegate", G_LOG_LEVEL_CRITICAL, "deliver callback gave 0 replies for 2");
  got = converse (&limits, input, strlen (input), 0, 0, &sink, NULL);
  g_test_assert_expected_messages ();
  g_assert_true (
    g_str_has_suffix (got, GO_AHEAD "451 4.3.0 Error: internal error\r\n451 4.3.0 Error: internal error\r\n"));
  sink_clear (&sink);
}

static void
reply_cb (const MgEnvelope *env, GBytes *message, GPtrArray *replies, gpointer user_data)
{
  g_autofree char *long_text = g_strnfill (1000, 'y');

  g_ptr_array_add (replies, mg_session_reply_new (250, "5.7.1", "class mismatch"));
  g_ptr_array_add (replies, mg_session_reply_new (250, NULL, "two\r\nlines\tand \xc3\xa9"));
  g_ptr_array_add (replies, mg_session_reply_new (550, "5.7.1", long_text));
  g_ptr_array_add (replies, mg_session_reply_new (354, NULL, "not a final reply"));
  g_ptr_array_add (replies, mg_session_reply_new (450, "4.7.1000", "detail too long"));
}

static void
test_reply_lines (void)
{
  MgSessionLimits limits;
  g_autoptr (MgSession) s = NULL;
  g_autoptr (GBytes) r = NULL;
  g_autofree char *want = NULL;
  g_autofree char *y = g_strnfill (512 - 2 - 10, 'y');
  const char *input = L M "RCPT TO:<a@x.y>\r\nRCPT TO:<b@x.y>\r\nRCPT TO:<c@x.y>\r\nRCPT TO:<d@x.y>\r\n"
                          "RCPT TO:<e@x.y>\r\nDATA\r\nx\r\n.\r\n";
  gsize len;
  g_autofree char *got = NULL;

  test_limits (&limits, MG_PROTOCOL_LMTP);
  limits.max_recipients = 5;
  s = mg_session_new (&limits, reply_cb, NULL);
  g_test_expect_message ("mimegate", G_LOG_LEVEL_CRITICAL, "*malformed reply (250 5.7.1)");
  g_test_expect_message ("mimegate", G_LOG_LEVEL_CRITICAL, "*malformed reply (354 )");
  g_test_expect_message ("mimegate", G_LOG_LEVEL_CRITICAL, "*malformed reply (450 4.7.1000)");
  r = mg_session_feed (s, (const guint8 *) input, strlen (input));
  g_test_assert_expected_messages ();
  got = text_of (r);
  len = strlen (got);
  want = g_strdup_printf ("%s451 4.3.0 Error: internal error\r\n250 2.0.0 two  lines and ??\r\n550 5.7.1 %s\r\n"
                          "451 4.3.0 Error: internal error\r\n451 4.3.0 Error: internal error\r\n",
                          GO_AHEAD, y);
  g_assert_true (len > strlen (want));
  g_assert_cmpstr (got + len - strlen (want), ==, want);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  for (gsize i = 0; i < G_N_ELEMENTS (reply_cases); i++) {
    g_autofree char *path = g_strdup_printf ("/session/replies/%s", reply_cases[i].name);
    g_test_add_data_func (path, &reply_cases[i], test_replies);
  }
  for (gsize i = 0; i < G_N_ELEMENTS (data_cases); i++) {
    g_autofree char *path = g_strdup_printf ("/session/data/%s", data_cases[i].name);
    g_test_add_data_func (path, &data_cases[i], test_data);
  }
  g_test_add_func ("/session/line-length", test_line_length);
  g_test_add_func ("/session/lmtp-replies", test_lmtp_replies);
  g_test_add_func ("/session/envelope", test_envelope);
  g_test_add_func ("/session/pipelined", test_pipelined);
  g_test_add_func ("/session/too-big", test_too_big);
  g_test_add_func ("/session/error-budget", test_error_budget);
  g_test_add_func ("/session/cut-off", test_cut_off);
  g_test_add_func ("/session/in-transaction", test_in_transaction);
  g_test_add_func ("/session/greeting", test_greeting);
  g_test_add_func ("/session/face-bugs", test_face_bugs);
  g_test_add_func ("/session/reply-lines", test_reply_lines);
  return g_test_run ();
}
