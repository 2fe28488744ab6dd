/* fuzz-session.c - harness 5: the SMTP/LMTP protocol reader (gateway/session.c) on a client's byte stream.
 *
 * Input: byte 0 picks the protocol (bit 0), one of four sets of limits (bits 1-2) and whether the face shuts the
 * session down at the end (bit 3); bytes 1-2 are a chunk size (1..65536). The rest is fed twice into two sessions:
 * once whole and once in chunks of that size. Both must give the same reply bytes and deliver the same envelopes and
 * messages (feed boundaries never change the outcome), every reply must be well-formed, and no delivered message
 * may exceed max_size. The deliver callback answers with canned replies that depend on the recipient. */
#include "config.h"

#include <string.h>

#include <glib.h>

#include "fuzz.h"
#include "session.h"

typedef struct {
  GString *log; /* every delivery, for comparing the two runs */
  const MgSessionLimits *limits;
} Run;

static void
deliver_cb (const MgEnvelope *env, GBytes *message, GPtrArray *replies, gpointer user_data)
{
  Run *run = user_data;
  gsize len = 0;
  const char *data = g_bytes_get_data (message, &len);
  guint n = run->limits->protocol == MG_PROTOCOL_LMTP ? env->recipients->len : 1;

  g_assert_nonnull (env->sender);
  g_assert_true (g_utf8_validate (env->sender, -1, NULL));
  g_assert_cmpuint (env->recipients->len, >=, 1);
  g_assert_true (run->limits->max_recipients == 0 || env->recipients->len <= run->limits->max_recipients);
  g_assert_true (run->limits->max_size == 0 || len <= run->limits->max_size);
  g_assert_nonnull (env->helo);
  g_string_append_printf (run->log, "[%s|%s|%d%d|%" G_GSIZE_FORMAT "|", env->helo, env->sender, env->eight_bit,
                          env->smtputf8, env->size);
  for (guint i = 0; i < env->recipients->len; i++) {
    const char *r = g_ptr_array_index (env->recipients, i);
    g_assert_true (g_utf8_validate (r, -1, NULL));
    g_assert_true (strchr (r, '@') != NULL || g_ascii_strcasecmp (r, "postmaster") == 0);
    g_string_append_printf (run->log, "%s,", r);
  }
  g_string_append_printf (run->log, "|%u|%" G_GSIZE_FORMAT "|", g_hash_table_size (env->xforward), len);
  g_string_append_len (run->log, data, (gssize) len);
  g_string_append (run->log, "]");
  for (guint i = 0; i < n; i++) {
    static const guint codes[] = { 250, 450, 550 };
    static const char *const enhanced[] = { "2.0.0", "4.7.0", "5.7.1" };
    guint k = (guint) ((len + i) % 3);
    g_ptr_array_add (replies, mg_session_reply_new (codes[k], enhanced[k], i % 2 ? "text\r\nwith\001controls" : "ok"));
  }
}

/* check_replies - every line "DDD[ -]..." ending with CRLF, at most 512 octets, no other CR or LF */
static void
check_replies (GBytes *out)
{
  gsize len = 0;
  const char *p = g_bytes_get_data (out, &len);
  gsize start = 0;

  for (gsize i = 0; i < len; i++) {
    if (p[i] != '\n')
      continue;
    g_assert_cmpuint (i - start + 1, <=, 512);
    g_assert_cmpuint (i - start, >=, 5);
    g_assert_true (p[i - 1] == '\r');
    g_assert_true (g_ascii_isdigit (p[start]) && g_ascii_isdigit (p[start + 1]) && g_ascii_isdigit (p[start + 2]));
    g_assert_true (p[start + 3] == ' ' || p[start + 3] == '-');
    for (gsize k = start; k < i - 1; k++)
      g_assert_true (p[k] != '\r' && p[k] != '\0');
    start = i + 1;
  }
  g_assert_cmpuint (start, ==, len);
}

static GString *
run_session (const MgSessionLimits *limits, const guint8 *data, gsize size, gsize chunk, gboolean shutdown,
             GString *log)
{
  Run run = { log, limits };
  g_autoptr (MgSession) s = mg_session_new (limits, deliver_cb, &run);
  GString *replies = g_string_new (NULL);
  g_autoptr (GBytes) greeting = mg_session_greeting (s);
  gsize i = 0;

  g_string_append_len (replies, g_bytes_get_data (greeting, NULL), (gssize) g_bytes_get_size (greeting));
  do { /* an empty input is one empty feed */
    gsize n = MIN (chunk, size - i);
    g_autoptr (GBytes) out = mg_session_feed (s, data + i, n);
    check_replies (out);
    g_string_append_len (replies, g_bytes_get_data (out, NULL), (gssize) g_bytes_get_size (out));
    i += n;
  } while (i < size);
  if (shutdown) {
    g_autoptr (GBytes) out = mg_session_shutdown (s, NULL, NULL);
    check_replies (out);
    g_assert_true (mg_session_closed (s));
    g_assert_false (mg_session_in_transaction (s));
    g_string_append_len (replies, g_bytes_get_data (out, NULL), (gssize) g_bytes_get_size (out));
  }
  return replies;
}

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  mg_fuzz_strict ();
  return 0;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  MgSessionLimits limits;
  gsize chunk;
  gboolean shutdown;
  g_autoptr (GString) log_whole = g_string_new (NULL);
  g_autoptr (GString) log_split = g_string_new (NULL);
  g_autoptr (GString) whole = NULL;
  g_autoptr (GString) split = NULL;

  if (size < 3)
    return 0;
  mg_session_limits_init (&limits, data[0] & 1 ? MG_PROTOCOL_SMTP : MG_PROTOCOL_LMTP, "mx.example.org");
  switch ((data[0] >> 1) & 3) {
  case 0: /* the defaults */
    break;
  case 1: /* small: every limit within reach of a short input */
    limits.max_size = 64;
    limits.max_recipients = 3;
    limits.max_errors = 4;
    limits.max_line = 40;
    break;
  case 2: /* none */
    limits.max_size = 0;
    limits.max_recipients = 0;
    limits.max_errors = 0;
    limits.max_line = 0;
    break;
  default: /* the smallest line, one error */
    limits.max_size = 1;
    limits.max_recipients = 1;
    limits.max_errors = 1;
    limits.max_line = 16;
    break;
  }
  shutdown = (data[0] & 8) != 0;
  chunk = (gsize) data[1] << 8 | data[2];
  chunk = chunk == 0 ? 65536 : chunk;
  data += 3;
  size -= 3;
  whole = run_session (&limits, data, size, MAX (size, 1), shutdown, log_whole);
  split = run_session (&limits, data, size, chunk, shutdown, log_split);
  g_assert_cmpuint (whole->len, ==, split->len);
  g_assert_true (memcmp (whole->str, split->str, whole->len) == 0);
  g_assert_cmpuint (log_whole->len, ==, log_split->len);
  g_assert_true (memcmp (log_whole->str, log_split->str, log_whole->len) == 0);
  return 0;
}
