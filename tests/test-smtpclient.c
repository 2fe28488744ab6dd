/* test-smtpclient.c - the reinjection client (gateway/smtpclient.c) against real SMTP servers on 127.0.0.1 and on
 * unix sockets: tests/smtp-capture.py, which records every octet it receives and misbehaves on request, and
 * Postfix's own smtp-sink. What is asserted is what went over the wire (dot-stuffing, CRLF, untouched 8-bit octets,
 * the envelope and its parameters, XFORWARD), how many connections were used, and the outcome and reply of every
 * failure: refusals at RCPT and at the final dot, timeouts, refused and dropped connections, malformed replies. */
#include "config.h"

#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <gio/gio.h>
#include <glib/gstdio.h>

#include "smtpclient.h"
#include "testutil.h"

#define HELO "gw.test"

typedef struct {
  char *dir; /* the server's records */
  GSubprocess *server;
  char *target;
} Fixture;

static void
fixture_setup (Fixture *fx, gconstpointer data)
{
  (void) data;
  fx->dir = mg_test_tmpdir ();
}

/* fixture_teardown - stops the server (whatever the test did) and removes its records */
static void
fixture_teardown (Fixture *fx, gconstpointer data)
{
  (void) data;
  if (fx->server != NULL) {
    g_subprocess_force_exit (fx->server);
    g_subprocess_wait (fx->server, NULL, NULL);
    g_clear_object (&fx->server);
  }
  mg_test_rmtree (fx->dir);
  g_clear_pointer (&fx->dir, g_free);
  g_clear_pointer (&fx->target, g_free);
}

/* die_with_parent_cb - in the server's process before exec: killed when the test process ends, however it ends */
static void
die_with_parent_cb (gpointer data)
{
  (void) data;
  prctl (PR_SET_PDEATHSIG, SIGKILL);
}

/* spawn - starts @argv with a stdin pipe (EOF tells smtp-capture.py to go) and stdout piped */
static GSubprocess *
spawn (const char *const *argv)
{
  g_autoptr (GSubprocessLauncher) launcher =
    g_subprocess_launcher_new (G_SUBPROCESS_FLAGS_STDIN_PIPE | G_SUBPROCESS_FLAGS_STDOUT_PIPE);
  g_autoptr (GError) error = NULL;
  g_subprocess_launcher_set_child_setup (launcher, die_with_parent_cb, NULL, NULL);
  GSubprocess *proc = g_subprocess_launcher_spawnv (launcher, argv, &error);
  g_assert_no_error (error);
  return proc;
}

/* start_capture - runs smtp-capture.py on @listen ("inet:127.0.0.1:0", "unix:NAME" under the fixture's directory)
 * with the options that follow (NULL-terminated); sets fx->target. FALSE when it could not listen. */
static gboolean G_GNUC_NULL_TERMINATED
start_capture (Fixture *fx, const char *listen, ...)
{
  g_autofree char *script = g_test_build_filename (G_TEST_DIST, "smtp-capture.py", NULL);
  g_autoptr (GPtrArray) argv = g_ptr_array_new_with_free_func (g_free);
  g_autofree char *sock = NULL;
  g_ptr_array_add (argv, g_strdup ("python3"));
  g_ptr_array_add (argv, g_strdup (script));
  g_ptr_array_add (argv, g_strdup ("--listen"));
  if (g_str_has_prefix (listen, "unix:")) {
    sock = g_build_filename (fx->dir, listen + 5, NULL);
    g_ptr_array_add (argv, g_strconcat ("unix:", sock, NULL));
  } else
    g_ptr_array_add (argv, g_strdup (listen));
  g_ptr_array_add (argv, g_strdup ("--dir"));
  g_ptr_array_add (argv, g_strdup (fx->dir));
  va_list ap;
  va_start (ap, listen);
  for (const char *a = va_arg (ap, const char *); a != NULL; a = va_arg (ap, const char *))
    g_ptr_array_add (argv, g_strdup (a));
  va_end (ap);
  g_ptr_array_add (argv, NULL);

  g_assert_null (fx->server);
  fx->server = spawn ((const char *const *) argv->pdata);
  g_autoptr (GDataInputStream) out = g_data_input_stream_new (g_subprocess_get_stdout_pipe (fx->server));
  g_autofree char *line = g_data_input_stream_read_line (out, NULL, NULL, NULL);
  if (line == NULL || !g_str_has_prefix (line, "ready "))
    return FALSE;
  if (sock != NULL)
    fx->target = g_strconcat ("unix:", sock, NULL);
  else if (strstr (listen, "[::1]") != NULL)
    fx->target = g_strdup_printf ("smtp:[::1]:%s", line + 6);
  else
    fx->target = g_strdup_printf ("smtp:127.0.0.1:%s", line + 6);
  return TRUE;
}

/* free_port - a TCP port on 127.0.0.1 that nothing listens on (just now) */
static guint16
free_port (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GSocket) s = g_socket_new (G_SOCKET_FAMILY_IPV4, G_SOCKET_TYPE_STREAM, G_SOCKET_PROTOCOL_TCP, &error);
  g_assert_no_error (error);
  g_autoptr (GInetAddress) lo = g_inet_address_new_loopback (G_SOCKET_FAMILY_IPV4);
  g_autoptr (GSocketAddress) any = g_inet_socket_address_new (lo, 0);
  g_assert_true (g_socket_bind (s, any, FALSE, &error));
  g_autoptr (GSocketAddress) bound = g_socket_get_local_address (s, &error);
  g_assert_no_error (error);
  return g_inet_socket_address_get_port (G_INET_SOCKET_ADDRESS (bound));
}

/* start_sink - runs Postfix's smtp-sink on a free port (its messages dumped under DIR/sink/) with @options (a
 * NULL-terminated list); waits until it accepts connections. FALSE when smtp-sink is not installed. */
static gboolean G_GNUC_NULL_TERMINATED
start_sink (Fixture *fx, ...)
{
  const char *sink = "/usr/sbin/smtp-sink";
  if (!g_file_test (sink, G_FILE_TEST_IS_EXECUTABLE))
    return FALSE;
  guint16 port = free_port ();
  g_autofree char *dump = g_build_filename (fx->dir, "sink", "%M.", NULL);
  g_autofree char *listen = g_strdup_printf ("127.0.0.1:%u", port);
  g_autoptr (GPtrArray) argv = g_ptr_array_new ();
  g_ptr_array_add (argv, (gpointer) sink);
  if (getuid () == 0) {
    g_ptr_array_add (argv, (gpointer) "-u");
    g_ptr_array_add (argv, (gpointer) "root");
  }
  g_ptr_array_add (argv, (gpointer) "-d");
  g_ptr_array_add (argv, dump);
  va_list ap;
  va_start (ap, fx);
  for (const char *a = va_arg (ap, const char *); a != NULL; a = va_arg (ap, const char *))
    g_ptr_array_add (argv, (gpointer) a);
  va_end (ap);
  g_ptr_array_add (argv, listen);
  g_ptr_array_add (argv, (gpointer) "16");
  g_ptr_array_add (argv, NULL);
  fx->server = spawn ((const char *const *) argv->pdata);
  fx->target = g_strdup_printf ("smtp:127.0.0.1:%u", port);

  g_autoptr (GSocketClient) client = g_socket_client_new ();
  for (int i = 0; i < 100; i++) {
    g_autoptr (GSocketConnection) c = g_socket_client_connect_to_host (client, "127.0.0.1", port, NULL, NULL);
    if (c != NULL)
      return TRUE; /* smtp-sink sees a client that leaves at once: harmless */
    g_usleep (50 * 1000);
  }
  g_error ("smtp-sink did not start on port %u", port);
}

/* record - a file the capture server wrote (NAME under its directory); NULL when it does not exist */
static char *
record (Fixture *fx, const char *name, gsize *len)
{
  g_autofree char *path = g_build_filename (fx->dir, name, NULL);
  char *data = NULL;
  if (!g_file_get_contents (path, &data, len, NULL))
    return NULL;
  return data;
}

/* count - how many of the server's records start with @prefix ("conn-", "msg-") and end with @suffix */
static guint
count (Fixture *fx, const char *subdir, const char *prefix, const char *suffix)
{
  g_autofree char *path = g_build_filename (fx->dir, subdir, NULL);
  g_autoptr (GDir) d = g_dir_open (path, 0, NULL);
  guint n = 0;
  const char *name;
  while (d != NULL && (name = g_dir_read_name (d)) != NULL)
    if (g_str_has_prefix (name, prefix) && g_str_has_suffix (name, suffix))
      n++;
  return n;
}

/* wait_ended - waits until the capture server has finished connection @n */
static void
wait_ended (Fixture *fx, guint n)
{
  g_autofree char *name = g_strdup_printf ("conn-%u.done", n);
  g_autofree char *path = g_build_filename (fx->dir, name, NULL);
  for (int i = 0; i < 400 && !g_file_test (path, G_FILE_TEST_EXISTS); i++)
    g_usleep (25 * 1000);
  g_assert_true (g_file_test (path, G_FILE_TEST_EXISTS));
}

/* conn_raw - what connection @n received, once it has ended */
static char *
conn_raw (Fixture *fx, guint n, gsize *len)
{
  wait_ended (fx, n);
  g_autofree char *name = g_strdup_printf ("conn-%u.raw", n);
  char *raw = record (fx, name, len);
  g_assert_nonnull (raw);
  return raw;
}

static MgSmtpClient *
client_new (Fixture *fx, guint timeout)
{
  g_autoptr (GError) error = NULL;
  MgSmtpClient *c = mg_smtp_client_new (fx->target, HELO, timeout, &error);
  g_assert_no_error (error);
  g_assert_nonnull (c);
  return c;
}

static const char *const two[] = { "a@example.org", "b@example.org", NULL };

/* send_text - sends @text from sender@example.net to @rcpts */
static gboolean
send_text (MgSmtpClient *c, const char *text, const char *const *rcpts, MgSmtpReply *reply, GError **error)
{
  g_autoptr (GBytes) msg = g_bytes_new (text, strlen (text));
  return mg_smtp_client_send (c, "sender@example.net", rcpts, msg, NULL, reply, error);
}

#define assert_reply(reply, want_code, want_enhanced, want_text)                                                       \
  G_STMT_START                                                                                                         \
  {                                                                                                                    \
    g_assert_cmpuint ((reply)->code, ==, (want_code));                                                                 \
    g_assert_cmpstr ((reply)->enhanced, ==, (want_enhanced));                                                          \
    g_assert_cmpstr ((reply)->text, ==, (want_text));                                                                  \
  }                                                                                                                    \
  G_STMT_END

/* ---- what goes over the wire ---- */

/* the message as the wire carries it: LF → CRLF, leading dots doubled, a final CRLF added, 8-bit octets untouched;
 * an existing CRLF stays one CRLF and a bare CR inside a line stays */
static const char wire_in[] = "Subject: dots\n"
                              "\n"
                              ".\n"
                              ". one\n"
                              "..two\r\n"
                              "caf\xc3\xa9 \xff\n"
                              "bare\rcr\n"
                              "\n"
                              ".\r\n"
                              "last line without end";
static const char wire_out[] = "Subject: dots\r\n"
                               "\r\n"
                               "..\r\n"
                               ".. one\r\n"
                               "...two\r\n"
                               "caf\xc3\xa9 \xff\r\n"
                               "bare\rcr\r\n"
                               "\r\n"
                               "..\r\n"
                               "last line without end\r\n";
/* and as the server keeps it (unstuffed) */
static const char wire_kept[] = "Subject: dots\r\n"
                                "\r\n"
                                ".\r\n"
                                ". one\r\n"
                                "..two\r\n"
                                "caf\xc3\xa9 \xff\r\n"
                                "bare\rcr\r\n"
                                "\r\n"
                                ".\r\n"
                                "last line without end\r\n";

static void
test_wire (Fixture *fx, gconstpointer data)
{
  (void) data;
  g_assert_true (start_capture (fx, "inet:127.0.0.1:0", "--ext", "PIPELINING", "--ext", "SIZE 10000000", "--ext",
                                "8BITMIME", "--ext", "ENHANCEDSTATUSCODES", NULL));
  g_autoptr (MgSmtpClient) c = client_new (fx, 10);
  g_auto (MgSmtpReply) reply = { 0 };
  g_autoptr (GError) error = NULL;
  g_autoptr (GBytes) msg = g_bytes_new (wire_in, sizeof wire_in - 1);
  g_assert_true (mg_smtp_client_send (c, "sender@example.net", two, msg, NULL, &reply, &error));
  g_assert_no_error (error);
  assert_reply (&reply, 250, "2.0.0", "Ok: queued as 1");

  /* the null reverse-path, a CRLF message that already ends in CRLF, an empty message */
  const char *const one[] = { "c@example.org", NULL };
  g_autoptr (GBytes) crlf = g_bytes_new_static ("A: b\r\n\r\nbody\r\n", 14);
  g_assert_true (mg_smtp_client_send (c, "", one, crlf, NULL, &reply, &error));
  g_assert_no_error (error);
  g_autoptr (GBytes) empty = g_bytes_new_static ("", 0);
  g_assert_true (mg_smtp_client_send (c, "", one, empty, NULL, NULL, &error));
  g_assert_no_error (error);
  mg_smtp_client_close (c);

  gsize len = 0;
  g_autofree char *raw = conn_raw (fx, 1, &len);
  g_autofree char *want = g_strdup_printf ("EHLO " HELO "\r\n"
                                           "MAIL FROM:<sender@example.net> SIZE=%zu BODY=8BITMIME\r\n"
                                           "RCPT TO:<a@example.org>\r\n"
                                           "RCPT TO:<b@example.org>\r\n"
                                           "DATA\r\n"
                                           "%s.\r\n"
                                           "MAIL FROM:<> SIZE=14\r\n"
                                           "RCPT TO:<c@example.org>\r\n"
                                           "DATA\r\n"
                                           "A: b\r\n\r\nbody\r\n.\r\n"
                                           "MAIL FROM:<> SIZE=0\r\n"
                                           "RCPT TO:<c@example.org>\r\n"
                                           "DATA\r\n"
                                           ".\r\n"
                                           "QUIT\r\n",
                                           sizeof wire_kept - 1, wire_out);
  g_assert_cmpmem (raw, len, want, strlen (want));
  g_autofree char *kept = record (fx, "msg-1.eml", &len);
  g_assert_cmpmem (kept, len, wire_kept, sizeof wire_kept - 1);
  g_assert_cmpuint (count (fx, "", "conn-", ".raw"), ==, 1);
}

/* without extensions: no SIZE, no BODY; an 8-bit message or a non-ASCII address is refused before anything is sent */
static void
test_no_extensions (Fixture *fx, gconstpointer data)
{
  (void) data;
  g_assert_true (start_capture (fx, "inet:127.0.0.1:0", NULL));
  g_autoptr (MgSmtpClient) c = client_new (fx, 10);
  g_autoptr (GError) error = NULL;
  g_auto (MgSmtpReply) reply = { 0 };
  g_assert_true (send_text (c, "Subject: a\n\nascii\n", two, &reply, &error));
  g_assert_no_error (error);
  assert_reply (&reply, 250, "2.0.0", "Ok: queued as 1");

  g_assert_false (send_text (c, "Subject: b\n\ncaf\xc3\xa9\n", two, &reply, &error));
  g_assert_error (error, MG_SMTP_CLIENT_ERROR, MG_SMTP_CLIENT_ERROR_UNSUPPORTED);
  g_assert_nonnull (strstr (error->message, "8BITMIME"));
  g_assert_false (mg_smtp_client_error_is_transient (error));
  g_assert_cmpuint (reply.code, ==, 0);
  g_clear_error (&error);

  const char *const utf8[] = { "j\xc3\xb6rg@example.org", NULL };
  g_assert_false (send_text (c, "Subject: c\n\nascii\n", utf8, &reply, &error));
  g_assert_error (error, MG_SMTP_CLIENT_ERROR, MG_SMTP_CLIENT_ERROR_UNSUPPORTED);
  g_assert_nonnull (strstr (error->message, "SMTPUTF8"));
  g_clear_error (&error);
  mg_smtp_client_close (c);

  gsize len = 0;
  g_autofree char *raw = conn_raw (fx, 1, &len);
  const char want[] = "EHLO " HELO "\r\n"
                      "MAIL FROM:<sender@example.net>\r\n"
                      "RCPT TO:<a@example.org>\r\n"
                      "RCPT TO:<b@example.org>\r\n"
                      "DATA\r\n"
                      "Subject: a\r\n\r\nascii\r\n.\r\n"
                      "QUIT\r\n";
  g_assert_cmpmem (raw, len, want, sizeof want - 1);
}

/* SMTPUTF8 and BODY=8BITMIME when announced and needed; the address goes out as UTF-8 */
static void
test_smtputf8 (Fixture *fx, gconstpointer data)
{
  (void) data;
  g_assert_true (start_capture (fx, "inet:127.0.0.1:0", "--ext", "8BITMIME", "--ext", "SMTPUTF8", NULL));
  g_autoptr (MgSmtpClient) c = client_new (fx, 10);
  g_autoptr (GError) error = NULL;
  const char *const utf8[] = { "j\xc3\xb6rg@example.org", NULL };
  g_assert_true (send_text (c, "Subject: a\n\nascii\n", utf8, NULL, &error));
  g_assert_no_error (error);
  g_assert_true (send_text (c, "Subject: a\n\n\xc3\xa9\n", two, NULL, &error));
  g_assert_no_error (error);
  mg_smtp_client_close (c);
  gsize len = 0;
  g_autofree char *raw = conn_raw (fx, 1, &len);
  const char want[] = "EHLO " HELO "\r\n"
                      "MAIL FROM:<sender@example.net> SMTPUTF8\r\n"
                      "RCPT TO:<j\xc3\xb6rg@example.org>\r\n"
                      "DATA\r\n"
                      "Subject: a\r\n\r\nascii\r\n.\r\n"
                      "MAIL FROM:<sender@example.net> BODY=8BITMIME\r\n"
                      "RCPT TO:<a@example.org>\r\n"
                      "RCPT TO:<b@example.org>\r\n"
                      "DATA\r\n"
                      "Subject: a\r\n\r\n\xc3\xa9\r\n.\r\n"
                      "QUIT\r\n";
  g_assert_cmpmem (raw, len, want, sizeof want - 1);
}

/* XFORWARD: only the announced attributes, in the server's order, xtext-encoded, split below 512 octets a line */
static void
test_xforward (Fixture *fx, gconstpointer data)
{
  (void) data;
  g_assert_true (
    start_capture (fx, "inet:127.0.0.1:0", "--ext", "PIPELINING", "--ext", "XFORWARD NAME ADDR PROTO HELO", NULL));
  g_autoptr (MgSmtpClient) c = client_new (fx, 10);
  g_autoptr (GError) error = NULL;
  g_autoptr (GHashTable) xf = g_hash_table_new (g_str_hash, g_str_equal);
  g_hash_table_insert (xf, "HELO", "bad host+name=x\xc3\xa9"); /* the message stays ASCII */
  g_hash_table_insert (xf, "PORT", "2525");                    /* not announced */
  g_hash_table_insert (xf, "NAME", "client.example");
  g_hash_table_insert (xf, "ADDR", "192.0.2.1");
  g_hash_table_insert (xf, "PROTO", "ESMTP");
  g_autoptr (GBytes) msg = g_bytes_new_static ("S: x\n\nx\n", 8);
  g_assert_true (mg_smtp_client_send (c, "s@example.net", two + 1, msg, xf, NULL, &error));
  g_assert_no_error (error);

  /* long values: two commands, each at most 512 octets */
  g_autofree char *long_name = g_strnfill (300, 'n');
  g_autofree char *long_helo = g_strnfill (300, 'h');
  g_hash_table_insert (xf, "NAME", long_name);
  g_hash_table_insert (xf, "HELO", long_helo);
  g_assert_true (mg_smtp_client_send (c, "s@example.net", two + 1, msg, xf, NULL, &error));
  g_assert_no_error (error);
  mg_smtp_client_close (c);

  gsize len = 0;
  g_autofree char *raw = conn_raw (fx, 1, &len);
  g_autofree char *want = g_strdup_printf ("EHLO " HELO "\r\n"
                                           "XFORWARD NAME=client.example ADDR=192.0.2.1 PROTO=ESMTP "
                                           "HELO=bad+20host+2Bname+3Dx+C3+A9\r\n"
                                           "MAIL FROM:<s@example.net>\r\n"
                                           "RCPT TO:<b@example.org>\r\nDATA\r\nS: x\r\n\r\nx\r\n.\r\n"
                                           "XFORWARD NAME=%s ADDR=192.0.2.1 PROTO=ESMTP\r\n"
                                           "XFORWARD HELO=%s\r\n"
                                           "MAIL FROM:<s@example.net>\r\n"
                                           "RCPT TO:<b@example.org>\r\nDATA\r\nS: x\r\n\r\nx\r\n.\r\n"
                                           "QUIT\r\n",
                                           long_name, long_helo);
  g_assert_cmpmem (raw, len, want, strlen (want));
}

/* a server without XFORWARD gets none, whatever the caller passes */
static void
test_xforward_hidden (Fixture *fx, gconstpointer data)
{
  (void) data;
  g_assert_true (start_capture (fx, "inet:127.0.0.1:0", "--ext", "PIPELINING", NULL));
  g_autoptr (MgSmtpClient) c = client_new (fx, 10);
  g_autoptr (GError) error = NULL;
  g_autoptr (GHashTable) xf = g_hash_table_new (g_str_hash, g_str_equal);
  g_hash_table_insert (xf, "NAME", "client.example");
  g_autoptr (GBytes) msg = g_bytes_new_static ("S: x\n\nx\n", 8);
  g_assert_true (mg_smtp_client_send (c, "s@example.net", two + 1, msg, xf, NULL, &error));
  g_assert_no_error (error);
  mg_smtp_client_close (c);
  gsize len = 0;
  g_autofree char *raw = conn_raw (fx, 1, &len);
  const char want[] = "EHLO " HELO "\r\nMAIL FROM:<s@example.net>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n"
                      "S: x\r\n\r\nx\r\n.\r\nQUIT\r\n";
  g_assert_cmpmem (raw, len, want, sizeof want - 1);
}

/* EHLO refused with 5xx: HELO, and no extensions at all */
static void
test_helo_fallback (Fixture *fx, gconstpointer data)
{
  (void) data;
  g_assert_true (
    start_capture (fx, "inet:127.0.0.1:0", "--reply", "ehlo=502 5.5.2 Error: command not recognized", NULL));
  g_autoptr (MgSmtpClient) c = client_new (fx, 10);
  g_autoptr (GError) error = NULL;
  g_assert_true (send_text (c, "S: x\n\nx\n", two + 1, NULL, &error));
  g_assert_no_error (error);
  g_assert_false (send_text (c, "S: x\n\n\xe9\n", two + 1, NULL, &error));
  g_assert_error (error, MG_SMTP_CLIENT_ERROR, MG_SMTP_CLIENT_ERROR_UNSUPPORTED);
  mg_smtp_client_close (c);
  gsize len = 0;
  g_autofree char *raw = conn_raw (fx, 1, &len);
  const char want[] = "EHLO " HELO "\r\nHELO " HELO "\r\nMAIL FROM:<sender@example.net>\r\n"
                      "RCPT TO:<b@example.org>\r\nDATA\r\nS: x\r\n\r\nx\r\n.\r\nQUIT\r\n";
  g_assert_cmpmem (raw, len, want, sizeof want - 1);
}

/* ---- connections ---- */

/* several transactions over one connection, no RSET between successful ones */
static void
test_keep_connection (Fixture *fx, gconstpointer data)
{
  (void) data;
  g_assert_true (start_capture (fx, "inet:127.0.0.1:0", "--ext", "PIPELINING", NULL));
  g_autoptr (MgSmtpClient) c = client_new (fx, 10);
  for (int i = 0; i < 3; i++) {
    g_autoptr (GError) error = NULL;
    g_auto (MgSmtpReply) reply = { 0 };
    g_autofree char *text = g_strdup_printf ("Subject: %d\n\nbody %d\n", i, i);
    g_assert_true (send_text (c, text, two, &reply, &error));
    g_assert_no_error (error);
    g_autofree char *queued = g_strdup_printf ("Ok: queued as %d", i + 1);
    assert_reply (&reply, 250, "2.0.0", queued);
  }
  mg_smtp_client_free (g_steal_pointer (&c));
  gsize len = 0;
  g_autofree char *raw = conn_raw (fx, 1, &len);
  g_assert_cmpuint (count (fx, "", "conn-", ".raw"), ==, 1);
  g_assert_cmpuint (count (fx, "", "msg-", ".eml"), ==, 3);
  g_assert_null (strstr (raw, "RSET"));
  g_assert_true (g_str_has_suffix (raw, ".\r\nQUIT\r\n"));
}

/* the server closed the kept connection (silently, or with a 421): the next transaction reconnects once */
static void
test_reconnect (Fixture *fx, gconstpointer data)
{
  const char *farewell = data; /* NULL: close silently */
  g_assert_true (
    start_capture (fx, "inet:127.0.0.1:0", "--ext", "PIPELINING", "--close-after-dot", farewell ? farewell : "", NULL));
  g_autoptr (MgSmtpClient) c = client_new (fx, 10);
  for (int i = 0; i < 3; i++) {
    g_autoptr (GError) error = NULL;
    g_assert_true (send_text (c, "S: x\n\nx\n", two, NULL, &error));
    g_assert_no_error (error);
    wait_ended (fx, i + 1); /* the server has closed it before the next transaction starts */
  }
  g_assert_cmpuint (count (fx, "", "conn-", ".raw"), ==, 3);
  g_assert_cmpuint (count (fx, "", "msg-", ".eml"), ==, 3);
  gsize len = 0;
  g_autofree char *second = conn_raw (fx, 2, &len);
  g_assert_true (g_str_has_prefix (second, "EHLO " HELO "\r\nMAIL FROM:<sender@example.net>\r\n"));
}

/* the kept connection answers 421 to MAIL, or drops it: reconnect once, and the message arrives once */
static void
test_reconnect_mid_envelope (Fixture *fx, gconstpointer data)
{
  const char *how = data;
  g_assert_true (start_capture (fx, "inet:127.0.0.1:0", how[0] == 'd' ? "--drop" : "--reply",
                                how[0] == 'd' ? "mail#2" : "mail#2=421 4.3.2 capture shutting down", NULL));
  g_autoptr (MgSmtpClient) c = client_new (fx, 10);
  for (int i = 0; i < 2; i++) {
    g_autoptr (GError) error = NULL;
    g_assert_true (send_text (c, "S: x\n\nx\n", two, NULL, &error));
    g_assert_no_error (error);
  }
  mg_smtp_client_close (c);
  wait_ended (fx, 2);
  g_assert_cmpuint (count (fx, "", "conn-", ".raw"), ==, 2);
  g_assert_cmpuint (count (fx, "", "msg-", ".eml"), ==, 2);
}

/* a fresh connection that fails is not retried: 421 at MAIL, or the connection dropped at RCPT */
static void
test_no_retry_fresh (Fixture *fx, gconstpointer data)
{
  (void) data;
  g_assert_true (start_capture (fx, "inet:127.0.0.1:0", "--ext", "PIPELINING", "--reply",
                                "mail#1=421 4.3.2 capture shutting down", "--drop", "rcpt#2", NULL));
  g_autoptr (MgSmtpClient) c = client_new (fx, 10);
  g_autoptr (GError) error = NULL;
  g_auto (MgSmtpReply) reply = { 0 };
  g_assert_false (send_text (c, "S: x\n\nx\n", two, &reply, &error));
  g_assert_error (error, MG_SMTP_CLIENT_ERROR, MG_SMTP_CLIENT_ERROR_REFUSED);
  assert_reply (&reply, 421, "4.3.2", "capture shutting down");
  g_assert_true (mg_smtp_client_error_is_transient (error));
  g_assert_cmpuint (count (fx, "", "conn-", ".raw"), ==, 1);
  g_clear_error (&error);

  /* the first connection closed after MAIL; on the second, the second RCPT is dropped */
  g_assert_false (send_text (c, "S: x\n\nx\n", two, &reply, &error));
  g_assert_error (error, MG_SMTP_CLIENT_ERROR, MG_SMTP_CLIENT_ERROR_LOST);
  g_assert_cmpuint (reply.code, ==, 0);
  wait_ended (fx, 2);
  g_assert_cmpuint (count (fx, "", "conn-", ".raw"), ==, 2);
  g_assert_cmpuint (count (fx, "", "msg-", ".eml"), ==, 0);
}

static void
test_connect_refused (Fixture *fx, gconstpointer data)
{
  (void) data;
  g_autoptr (GError) error = NULL;
  fx->target = g_strdup_printf ("smtp:127.0.0.1:%u", free_port ());
  g_autoptr (MgSmtpClient) c = client_new (fx, 5);
  g_auto (MgSmtpReply) reply = { 0 };
  g_assert_false (send_text (c, "S: x\n\nx\n", two, &reply, &error));
  g_assert_error (error, MG_SMTP_CLIENT_ERROR, MG_SMTP_CLIENT_ERROR_CONNECT);
  g_assert_cmpuint (reply.code, ==, 0);
  g_clear_error (&error);

  g_autofree char *path = g_build_filename (fx->dir, "nobody.sock", NULL);
  g_autofree char *target = g_strconcat ("unix:", path, NULL);
  g_autoptr (MgSmtpClient) u = mg_smtp_client_new (target, HELO, 5, &error);
  g_assert_no_error (error);
  g_assert_false (send_text (u, "S: x\n\nx\n", two, NULL, &error));
  g_assert_error (error, MG_SMTP_CLIENT_ERROR, MG_SMTP_CLIENT_ERROR_CONNECT);
}

/* a greeting or EHLO that refuses: CONNECT, with the reply */
static void
test_greeting_refused (Fixture *fx, gconstpointer data)
{
  (void) data;
  g_assert_true (start_capture (fx, "inet:127.0.0.1:0", "--reply", "greeting=554 5.3.2 capture: go away", NULL));
  g_autoptr (MgSmtpClient) c = client_new (fx, 10);
  g_autoptr (GError) error = NULL;
  g_auto (MgSmtpReply) reply = { 0 };
  g_assert_false (send_text (c, "S: x\n\nx\n", two, &reply, &error));
  g_assert_error (error, MG_SMTP_CLIENT_ERROR, MG_SMTP_CLIENT_ERROR_CONNECT);
  assert_reply (&reply, 554, "5.3.2", "capture: go away");
  g_assert_true (mg_smtp_client_error_is_transient (error));
}

/* unix: targets, with smtp-capture.py */
static void
test_unix (Fixture *fx, gconstpointer data)
{
  (void) data;
  g_assert_true (start_capture (fx, "unix:smtp.sock", "--ext", "PIPELINING", NULL));
  g_assert_true (g_str_has_prefix (fx->target, "unix:/"));
  g_autoptr (MgSmtpClient) c = client_new (fx, 10);
  for (int i = 0; i < 2; i++) {
    g_autoptr (GError) error = NULL;
    g_assert_true (send_text (c, "S: x\n\n.x\n", two, NULL, &error));
    g_assert_no_error (error);
  }
  mg_smtp_client_close (c);
  gsize len = 0;
  g_autofree char *raw = conn_raw (fx, 1, &len);
  g_assert_nonnull (strstr (raw, "DATA\r\nS: x\r\n\r\n..x\r\n.\r\nMAIL FROM:"));
  g_assert_cmpuint (count (fx, "", "conn-", ".raw"), ==, 1);
  g_assert_cmpuint (count (fx, "", "msg-", ".eml"), ==, 2);
}

/* smtp:[::1]:PORT (skipped without IPv6 on the loopback) */
static void
test_ipv6 (Fixture *fx, gconstpointer data)
{
  (void) data;
  if (!start_capture (fx, "inet:[::1]:0", NULL)) {
    g_test_skip ("no IPv6 loopback");
    return;
  }
  g_assert_true (g_str_has_prefix (fx->target, "smtp:[::1]:"));
  g_autoptr (MgSmtpClient) c = client_new (fx, 10);
  g_autoptr (GError) error = NULL;
  g_assert_true (send_text (c, "S: x\n\nx\n", two, NULL, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (count (fx, "", "msg-", ".eml"), ==, 1);
}

/* ---- refusals ---- */

typedef struct {
  const char *name;
  const char *extension; /* "PIPELINING" or "8BITMIME" (none) */
  const char *option;    /* --reply STEP=REPLY */
  MgSmtpClientError code;
  guint reply_code;
  const char *enhanced;
  const char *text;       /* the reply text as MgSmtpReply has it */
  const char *in_message; /* in error->message */
  const char *absent;     /* not on the wire */
} RefusalCase;

static const RefusalCase refusals[] = {
  { "rcpt-4xx-pipelined", "PIPELINING", "rcpt:a@example.org=450 4.2.0 <a@example.org>: mailbox busy",
    MG_SMTP_CLIENT_ERROR_REFUSED, 450, "4.2.0", "<a@example.org>: mailbox busy", "refused recipient <a@example.org>",
    "DATA" },
  { "rcpt-5xx-pipelined", "PIPELINING", "rcpt:b@example.org=550 5.1.1 <b@example.org>: no such user",
    MG_SMTP_CLIENT_ERROR_REJECTED, 550, "5.1.1", "<b@example.org>: no such user", "refused recipient <b@example.org>",
    "DATA" },
  /* without PIPELINING, the recipients after a refused one are not even sent */
  { "rcpt-5xx-lockstep", "8BITMIME", "rcpt:a@example.org=550 5.1.1 no such user", MG_SMTP_CLIENT_ERROR_REJECTED, 550,
    "5.1.1", "no such user", "<a@example.org>", "RCPT TO:<b@example.org>" },
  { "mail-5xx", "PIPELINING", "mail=553 5.7.1 <sender@example.net>: sender refused", MG_SMTP_CLIENT_ERROR_REJECTED, 553,
    "5.7.1", "<sender@example.net>: sender refused", "refused the sender", "DATA" },
  { "data-4xx", "PIPELINING", "data=451 4.3.0 try later", MG_SMTP_CLIENT_ERROR_REFUSED, 451, "4.3.0", "try later",
    "refused DATA", "Subject:" },
  { "dot-4xx", "PIPELINING", "dot=451 4.3.0 Error: queue file write error", MG_SMTP_CLIENT_ERROR_REFUSED, 451, "4.3.0",
    "Error: queue file write error", "refused the message", NULL },
  { "dot-5xx", "PIPELINING", "dot=554 5.7.1 content refused", MG_SMTP_CLIENT_ERROR_REJECTED, 554, "5.7.1",
    "content refused", "refused the message", NULL },
  /* a multi-line reply: the lines' texts joined, the enhanced code taken once */
  { "rcpt-multiline", "PIPELINING", "rcpt=550-5.1.1 first line\\n550-5.1.1 second\x01line\\n550 5.1.1 third \xc3\xa9",
    MG_SMTP_CLIENT_ERROR_REJECTED, 550, "5.1.1", "first line second?line third ??", "first line", "DATA" },
  /* no enhanced code */
  { "rcpt-plain", "PIPELINING", "rcpt=452 too many recipients", MG_SMTP_CLIENT_ERROR_REFUSED, 452, NULL,
    "too many recipients", "452 too many", "DATA" },
};

/* a refusal at any step: FALSE with the right code and reply; the connection stays usable (one connection in all) */
static void
test_refusal (Fixture *fx, gconstpointer data)
{
  const RefusalCase *t = data;
  g_autofree char *option = g_strdup (t->option);
  /* only the first occurrence of the step refuses, so that the retry on the same connection succeeds */
  char *eq = strchr (option, '=');
  g_autofree char *once = g_strdup_printf ("%.*s#1%s", (int) (eq - option), option, eq);
  g_assert_true (start_capture (fx, "inet:127.0.0.1:0", "--ext", t->extension, "--reply", once, NULL));
  g_autoptr (MgSmtpClient) c = client_new (fx, 10);
  g_autoptr (GError) error = NULL;
  g_auto (MgSmtpReply) reply = { 0 };
  g_assert_false (send_text (c, "Subject: refused\n\nx\n", two, &reply, &error));
  g_assert_error (error, MG_SMTP_CLIENT_ERROR, (gint) t->code);
  g_assert_cmpuint (reply.code, ==, t->reply_code);
  g_assert_cmpstr (reply.enhanced, ==, t->enhanced);
  g_assert_cmpstr (reply.text, ==, t->text);
  g_assert_nonnull (strstr (error->message, t->in_message));
  g_assert_cmpint (mg_smtp_client_error_is_transient (error), ==, t->code == MG_SMTP_CLIENT_ERROR_REFUSED);
  g_clear_error (&error);

  /* the same client goes on over the same connection */
  g_assert_true (send_text (c, "Subject: second\n\ny\n", two, &reply, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (reply.code, ==, 250);
  mg_smtp_client_close (c);

  gsize len = 0;
  g_autofree char *raw = conn_raw (fx, 1, &len);
  g_assert_cmpuint (count (fx, "", "conn-", ".raw"), ==, 1);
  /* the first transaction: up to the refusal, then RSET (unless the dot ended it) */
  const char *second = strstr (strstr (raw, "MAIL FROM:") + 1, "MAIL FROM:");
  g_assert_nonnull (second);
  g_assert_nonnull (strstr (second, "Subject: second"));
  g_autofree char *first = g_strndup (raw, second - raw);
  if (t->absent != NULL)
    g_assert_null (strstr (first, t->absent));
  if (g_str_has_prefix (t->name, "dot-")) {
    g_assert_null (strstr (first, "RSET"));
    g_assert_cmpuint (count (fx, "", "msg-", ".eml"), ==, 2); /* the server had it and refused it */
  } else {
    g_assert_nonnull (strstr (first, "RSET\r\n"));
    g_assert_cmpuint (count (fx, "", "msg-", ".eml"), ==, 1);
  }
}

/* ---- time and broken servers ---- */

typedef struct {
  const char *slow; /* --slow STEP=SECONDS */
  MgSmtpClientError code;
  gboolean delivered; /* whether the server has the message in the end */
} TimeoutCase;

static const TimeoutCase timeouts[] = {
  { "greeting=30", MG_SMTP_CLIENT_ERROR_TIMEOUT, FALSE },
  { "rcpt=30", MG_SMTP_CLIENT_ERROR_TIMEOUT, FALSE },
  { "data=30", MG_SMTP_CLIENT_ERROR_TIMEOUT, FALSE },
  /* the dot went out, no reply came: the outcome is unknown (here the server does have it) */
  { "dot=30", MG_SMTP_CLIENT_ERROR_UNKNOWN, TRUE },
};

static void
test_timeout (Fixture *fx, gconstpointer data)
{
  const TimeoutCase *t = data;
  g_assert_true (start_capture (fx, "inet:127.0.0.1:0", "--ext", "PIPELINING", "--slow", t->slow, NULL));
  g_autoptr (MgSmtpClient) c = client_new (fx, 2);
  g_autoptr (GError) error = NULL;
  g_assert_false (send_text (c, "S: x\n\nx\n", two, NULL, &error));
  g_assert_error (error, MG_SMTP_CLIENT_ERROR, (gint) t->code);
  g_assert_true (mg_smtp_client_error_is_transient (error));
  if (t->code == MG_SMTP_CLIENT_ERROR_UNKNOWN)
    g_assert_nonnull (strstr (error->message, "unknown whether"));
  g_assert_cmpuint (count (fx, "", "msg-", ".eml"), ==, t->delivered ? 1 : 0);
}

/* a reply to the final dot that is neither 2xx, 4xx nor 5xx: the outcome is unknown, the connection closed */
static void
test_dot_nonsense (Fixture *fx, gconstpointer data)
{
  (void) data;
  g_assert_true (start_capture (fx, "inet:127.0.0.1:0", "--reply", "dot#1=354 go on", NULL));
  g_autoptr (MgSmtpClient) c = client_new (fx, 10);
  g_autoptr (GError) error = NULL;
  g_auto (MgSmtpReply) reply = { 0 };
  g_assert_false (send_text (c, "S: x\n\nx\n", two, &reply, &error));
  g_assert_error (error, MG_SMTP_CLIENT_ERROR, MG_SMTP_CLIENT_ERROR_UNKNOWN);
  g_assert_cmpuint (reply.code, ==, 354);
  g_clear_error (&error);
  g_assert_true (send_text (c, "S: x\n\nx\n", two, &reply, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (count (fx, "", "conn-", ".raw"), ==, 2);
}

/* a big message, so that the body is still being written when the server misbehaves */
static GBytes *
big_message (gsize size)
{
  GString *s = g_string_sized_new (size + 100);
  g_string_append (s, "Subject: big\n\n");
  for (guint i = 0; s->len < size; i++)
    g_string_append_printf (s, "%sline %u of a big message, long enough to fill the socket buffers\n",
                            i % 7 == 0 ? "." : "", i);
  gsize len = s->len;
  return g_bytes_new_take (g_string_free (s, FALSE), len);
}

/* the server drops the connection in the middle of the body: FALSE, and no message was received */
static void
test_drop_mid_body (Fixture *fx, gconstpointer data)
{
  (void) data;
  g_assert_true (start_capture (fx, "inet:127.0.0.1:0", "--ext", "PIPELINING", "--drop", "body", NULL));
  g_autoptr (MgSmtpClient) c = client_new (fx, 10);
  g_autoptr (GError) error = NULL;
  g_autoptr (GBytes) msg = big_message (32 * 1024 * 1024);
  g_assert_false (mg_smtp_client_send (c, "s@example.net", two, msg, NULL, NULL, &error));
  g_assert_error (error, MG_SMTP_CLIENT_ERROR, MG_SMTP_CLIENT_ERROR_LOST);
  g_assert_nonnull (strstr (error->message, "no final dot"));
  wait_ended (fx, 1);
  g_assert_cmpuint (count (fx, "", "msg-", ".eml"), ==, 0);
}

/* the server stops reading in the middle of the body: TIMEOUT, and the connection is closed without the final dot —
 * the server, reading on later, finds a body cut short and no end of data */
static void
test_stall_mid_body (Fixture *fx, gconstpointer data)
{
  (void) data;
  g_assert_true (start_capture (fx, "inet:127.0.0.1:0", "--ext", "PIPELINING", "--slow", "body=5", NULL));
  g_autoptr (MgSmtpClient) c = client_new (fx, 2);
  g_autoptr (GError) error = NULL;
  g_autoptr (GBytes) msg = big_message (32 * 1024 * 1024);
  g_assert_false (mg_smtp_client_send (c, "s@example.net", two, msg, NULL, NULL, &error));
  g_assert_error (error, MG_SMTP_CLIENT_ERROR, MG_SMTP_CLIENT_ERROR_TIMEOUT);
  g_assert_nonnull (strstr (error->message, "no final dot"));

  gsize len = 0;
  g_autofree char *raw = conn_raw (fx, 1, &len);
  g_assert_cmpuint (count (fx, "", "msg-", ".eml"), ==, 0);
  const char *body = strstr (raw, "DATA\r\n");
  g_assert_nonnull (body);
  body += 6;
  gsize got = len - (body - raw);
  /* what arrived is a strict prefix of the wire form of the body: never the end-of-data line */
  gsize mlen = 0;
  const char *m = g_bytes_get_data (msg, &mlen);
  GString *wire = g_string_sized_new (mlen + mlen / 40);
  for (gsize i = 0; i < mlen; i++) {
    if ((i == 0 || m[i - 1] == '\n') && m[i] == '.')
      g_string_append_c (wire, '.');
    if (m[i] == '\n')
      g_string_append_c (wire, '\r');
    g_string_append_c (wire, m[i]);
  }
  g_assert_cmpuint (got, >, 0);
  g_assert_cmpuint (got, <, wire->len);
  g_assert_cmpmem (body, got, wire->str, got);
  g_string_free (wire, TRUE);
}

/* replies the client must not accept: over the line or line-count limit, mixed codes, no code */
static void
test_protocol (Fixture *fx, gconstpointer data)
{
  const char *kind = data;
  g_autofree char *reply = NULL;
  if (g_str_equal (kind, "long-line")) {
    g_autofree char *x = g_strnfill (MG_SMTP_REPLY_LINE_MAX, 'x');
    reply = g_strdup_printf ("rcpt=250 %s", x);
  } else if (g_str_equal (kind, "many-lines")) {
    GString *s = g_string_new ("rcpt=");
    for (int i = 0; i < MG_SMTP_REPLY_LINES_MAX; i++)
      g_string_append (s, "250-ok\\n");
    g_string_append (s, "250 ok");
    reply = g_string_free (s, FALSE);
  } else if (g_str_equal (kind, "mixed-codes"))
    reply = g_strdup ("rcpt=250-ok\\n550 no");
  else
    reply = g_strdup ("rcpt=hello");
  g_assert_true (start_capture (fx, "inet:127.0.0.1:0", "--ext", "PIPELINING", "--reply", reply, NULL));
  g_autoptr (MgSmtpClient) c = client_new (fx, 10);
  g_autoptr (GError) error = NULL;
  g_assert_false (send_text (c, "S: x\n\nx\n", two, NULL, &error));
  g_assert_error (error, MG_SMTP_CLIENT_ERROR, MG_SMTP_CLIENT_ERROR_PROTOCOL);
  g_assert_cmpuint (count (fx, "", "msg-", ".eml"), ==, 0);
}

/* the longest line and the most lines allowed are accepted */
static void
test_protocol_limits_ok (Fixture *fx, gconstpointer data)
{
  (void) data;
  g_autofree char *x = g_strnfill (MG_SMTP_REPLY_LINE_MAX - 4, 'x');
  g_autofree char *long_line = g_strdup_printf ("rcpt#1=250 %s", x);
  GString *s = g_string_new ("rcpt#2=");
  for (int i = 0; i < MG_SMTP_REPLY_LINES_MAX - 1; i++)
    g_string_append (s, "250-ok\\n");
  g_string_append (s, "250 ok");
  g_autofree char *many = g_string_free (s, FALSE);
  g_assert_true (
    start_capture (fx, "inet:127.0.0.1:0", "--ext", "PIPELINING", "--reply", long_line, "--reply", many, NULL));
  g_autoptr (MgSmtpClient) c = client_new (fx, 10);
  g_autoptr (GError) error = NULL;
  g_assert_true (send_text (c, "S: x\n\nx\n", two, NULL, &error));
  g_assert_no_error (error);
}

/* ---- Postfix's smtp-sink ---- */

/* a real Postfix test server: messages arrive as sent (it unstuffs and keeps them), over one connection */
static void
test_sink (Fixture *fx, gconstpointer data)
{
  (void) data;
  if (!start_sink (fx, NULL)) {
    g_test_skip ("no /usr/sbin/smtp-sink (package postfix)");
    return;
  }
  g_autoptr (MgSmtpClient) c = client_new (fx, 10);
  g_autoptr (GHashTable) xf = g_hash_table_new (g_str_hash, g_str_equal);
  g_hash_table_insert (xf, "NAME", "client.example");
  g_hash_table_insert (xf, "ADDR", "192.0.2.1");
  for (int i = 0; i < 2; i++) {
    g_autoptr (GError) error = NULL;
    g_auto (MgSmtpReply) reply = { 0 };
    g_autoptr (GBytes) msg = g_bytes_new_static ("Subject: sink\n\n.leading dot\ncaf\xc3\xa9\n", 34);
    g_assert_true (mg_smtp_client_send (c, "sender@example.net", two, msg, xf, &reply, &error));
    g_assert_no_error (error);
    g_assert_cmpuint (reply.code, ==, 250);
  }
  mg_smtp_client_close (c);
  g_autofree char *dir = g_build_filename (fx->dir, "sink", NULL);
  for (int i = 0; i < 200 && count (fx, "sink", "", "") < 2; i++)
    g_usleep (25 * 1000);
  g_assert_cmpuint (count (fx, "sink", "", ""), ==, 2);
  g_autoptr (GDir) d = g_dir_open (dir, 0, NULL);
  const char *name;
  while ((name = g_dir_read_name (d)) != NULL) {
    g_autofree char *path = g_build_filename (dir, name, NULL);
    g_autofree char *dump = mg_test_read (path, NULL);
    g_assert_nonnull (strstr (dump, "X-Helo-Args: " HELO "\n"));
    g_assert_nonnull (strstr (dump, "X-Mail-Args: <sender@example.net> BODY=8BITMIME\n"));
    g_assert_nonnull (strstr (dump, "X-Rcpt-Args: <a@example.org>\nX-Rcpt-Args: <b@example.org>\n"));
    g_assert_true (g_str_has_suffix (dump, "Subject: sink\n\n.leading dot\ncaf\xc3\xa9\n\n"));
  }
}

typedef struct {
  const char *option;
  const char *commands;
  MgSmtpClientError code;
  guint reply_code;
} SinkCase;

static const SinkCase sink_cases[] = {
  { "-f", "RCPT", MG_SMTP_CLIENT_ERROR_REJECTED, 500 }, { "-r", "RCPT", MG_SMTP_CLIENT_ERROR_REFUSED, 450 },
  { "-f", ".", MG_SMTP_CLIENT_ERROR_REJECTED, 500 },    { "-r", ".", MG_SMTP_CLIENT_ERROR_REFUSED, 450 },
  { "-Q", "MAIL", MG_SMTP_CLIENT_ERROR_REFUSED, 421 }, /* a fresh connection: no retry */
  { "-q", ".", MG_SMTP_CLIENT_ERROR_UNKNOWN, 0 },      /* disconnects without answering the dot */
};

static void
test_sink_refusal (Fixture *fx, gconstpointer data)
{
  const SinkCase *t = data;
  if (!start_sink (fx, t->option, t->commands, NULL)) {
    g_test_skip ("no /usr/sbin/smtp-sink (package postfix)");
    return;
  }
  g_autoptr (MgSmtpClient) c = client_new (fx, 10);
  g_autoptr (GError) error = NULL;
  g_auto (MgSmtpReply) reply = { 0 };
  g_assert_false (send_text (c, "S: x\n\nx\n", two, &reply, &error));
  g_assert_error (error, MG_SMTP_CLIENT_ERROR, (gint) t->code);
  g_assert_cmpuint (reply.code, ==, t->reply_code);
}

/* smtp-sink on a unix socket */
static void
test_sink_unix (Fixture *fx, gconstpointer data)
{
  (void) data;
  const char *sink = "/usr/sbin/smtp-sink";
  if (!g_file_test (sink, G_FILE_TEST_IS_EXECUTABLE)) {
    g_test_skip ("no /usr/sbin/smtp-sink (package postfix)");
    return;
  }
  g_autofree char *path = g_build_filename (fx->dir, "sink.sock", NULL);
  g_autofree char *listen = g_strconcat ("unix:", path, NULL);
  g_autofree char *dump = g_build_filename (fx->dir, "sink", "%M.", NULL);
  const char *root_argv[] = { sink, "-u", "root", "-d", dump, listen, "16", NULL };
  const char *argv[] = { sink, "-d", dump, listen, "16", NULL };
  fx->server = spawn (getuid () == 0 ? root_argv : argv);
  for (int i = 0; i < 200 && !g_file_test (path, G_FILE_TEST_EXISTS); i++)
    g_usleep (25 * 1000);
  fx->target = g_strdup (listen);
  g_autoptr (MgSmtpClient) c = client_new (fx, 10);
  g_autoptr (GError) error = NULL;
  g_assert_true (send_text (c, "Subject: unix\n\nx\n", two, NULL, &error));
  g_assert_no_error (error);
  mg_smtp_client_close (c);
  for (int i = 0; i < 200 && count (fx, "sink", "", "") < 1; i++)
    g_usleep (25 * 1000);
  g_assert_cmpuint (count (fx, "sink", "", ""), ==, 1);
}

/* ---- parsing ---- */

static void
test_targets (void)
{
  const struct {
    const char *target;
    const char *helo;
    gboolean ok;
  } cases[] = {
    { "smtp:127.0.0.1:10026", HELO, TRUE },
    { "inet:localhost:25", HELO, TRUE },
    { "smtp:[::1]:10026", HELO, TRUE },
    { "inet:[2001:db8::1]:25", HELO, TRUE },
    { "unix:/run/mimegate/reinject", HELO, TRUE },
    { "smtp:127.0.0.1", HELO, FALSE },
    { "smtp::25", HELO, FALSE },
    { "smtp:host:0", HELO, FALSE },
    { "smtp:host:65536", HELO, FALSE },
    { "smtp:host:25x", HELO, FALSE },
    { "smtp:[::1]25", HELO, FALSE },
    { "smtp:::1:25", HELO, FALSE },
    { "smtp:[host]:25", HELO, FALSE },
    { "tcp:host:25", HELO, FALSE },
    { "127.0.0.1:25", HELO, FALSE },
    { "unix:", HELO, FALSE },
    { "smtp:127.0.0.1:25", "", FALSE },
    { "smtp:127.0.0.1:25", "gw example", FALSE },
    { "smtp:127.0.0.1:25", "gw\r\nQUIT", FALSE },
  };
  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++) {
    g_autoptr (GError) error = NULL;
    g_autoptr (MgSmtpClient) c = mg_smtp_client_new (cases[i].target, cases[i].helo, 5, &error);
    g_test_message ("target %s, EHLO name %s", cases[i].target, cases[i].helo);
    if (cases[i].ok) {
      g_assert_no_error (error);
      g_assert_nonnull (c);
    } else {
      g_assert_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT);
      g_assert_null (c);
    }
  }
  g_autofree char *long_path = g_strnfill (200, 'p');
  g_autofree char *long_target = g_strconcat ("unix:/", long_path, NULL);
  g_autoptr (GError) error = NULL;
  g_assert_null (mg_smtp_client_new (long_target, HELO, 5, &error));
  g_assert_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT);
}

/* an address with CR or LF never reaches the wire (nothing is connected for it) */
static void
test_invalid_address (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (MgSmtpClient) c = mg_smtp_client_new ("smtp:127.0.0.1:1", HELO, 5, &error);
  g_assert_no_error (error);
  const char *const bad[] = { "a@example.org", "b@example.org>\r\nRCPT TO:<c@example.org", NULL };
  g_assert_false (send_text (c, "S: x\n\nx\n", bad, NULL, &error));
  g_assert_error (error, MG_SMTP_CLIENT_ERROR, MG_SMTP_CLIENT_ERROR_INVALID);
  g_clear_error (&error);
  g_autoptr (GBytes) msg = g_bytes_new_static ("x\n", 2);
  g_assert_false (mg_smtp_client_send (c, "s\n@example.net", two, msg, NULL, NULL, &error));
  g_assert_error (error, MG_SMTP_CLIENT_ERROR, MG_SMTP_CLIENT_ERROR_INVALID);
}

#define ADD(path, data, fn) g_test_add (path, Fixture, data, fixture_setup, fn, fixture_teardown)

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  signal (SIGPIPE, SIG_IGN);

  g_test_add_func ("/smtpclient/targets", test_targets);
  g_test_add_func ("/smtpclient/invalid-address", test_invalid_address);
  ADD ("/smtpclient/wire", NULL, test_wire);
  ADD ("/smtpclient/no-extensions", NULL, test_no_extensions);
  ADD ("/smtpclient/smtputf8", NULL, test_smtputf8);
  ADD ("/smtpclient/xforward", NULL, test_xforward);
  ADD ("/smtpclient/xforward-hidden", NULL, test_xforward_hidden);
  ADD ("/smtpclient/helo-fallback", NULL, test_helo_fallback);
  ADD ("/smtpclient/keep-connection", NULL, test_keep_connection);
  ADD ("/smtpclient/reconnect/closed", NULL, test_reconnect);
  ADD ("/smtpclient/reconnect/421", "421 4.4.2 capture Error: timeout exceeded", test_reconnect);
  ADD ("/smtpclient/reconnect/mail-421", "421", test_reconnect_mid_envelope);
  ADD ("/smtpclient/reconnect/mail-dropped", "dropped", test_reconnect_mid_envelope);
  ADD ("/smtpclient/no-retry-fresh", NULL, test_no_retry_fresh);
  ADD ("/smtpclient/connect-refused", NULL, test_connect_refused);
  ADD ("/smtpclient/greeting-refused", NULL, test_greeting_refused);
  ADD ("/smtpclient/unix", NULL, test_unix);
  ADD ("/smtpclient/ipv6", NULL, test_ipv6);
  for (gsize i = 0; i < G_N_ELEMENTS (refusals); i++) {
    g_autofree char *path = g_strdup_printf ("/smtpclient/refusal/%s", refusals[i].name);
    ADD (path, &refusals[i], test_refusal);
  }
  for (gsize i = 0; i < G_N_ELEMENTS (timeouts); i++) {
    g_autofree char *name = g_strndup (timeouts[i].slow, strcspn (timeouts[i].slow, "="));
    g_autofree char *path = g_strdup_printf ("/smtpclient/timeout/%s", name);
    ADD (path, &timeouts[i], test_timeout);
  }
  ADD ("/smtpclient/dot-nonsense", NULL, test_dot_nonsense);
  ADD ("/smtpclient/drop-mid-body", NULL, test_drop_mid_body);
  ADD ("/smtpclient/stall-mid-body", NULL, test_stall_mid_body);
  ADD ("/smtpclient/protocol/long-line", "long-line", test_protocol);
  ADD ("/smtpclient/protocol/many-lines", "many-lines", test_protocol);
  ADD ("/smtpclient/protocol/mixed-codes", "mixed-codes", test_protocol);
  ADD ("/smtpclient/protocol/no-code", "no-code", test_protocol);
  ADD ("/smtpclient/protocol/limits-ok", NULL, test_protocol_limits_ok);
  ADD ("/smtpclient/smtp-sink", NULL, test_sink);
  for (gsize i = 0; i < G_N_ELEMENTS (sink_cases); i++) {
    g_autofree char *path =
      g_strdup_printf ("/smtpclient/smtp-sink/%s%s", sink_cases[i].option + 1,
                       g_str_equal (sink_cases[i].commands, ".") ? "dot" : sink_cases[i].commands);
    ADD (path, &sink_cases[i], test_sink_refusal);
  }
  ADD ("/smtpclient/smtp-sink/unix", NULL, test_sink_unix);
  return g_test_run ();
}
