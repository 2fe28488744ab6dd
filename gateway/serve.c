/* serve.c - `mimegate serve [-c CONF] [--check]`: the long-running LMTP (RFC 2033) or SMTP (RFC 5321) face of the
 * engine, Postfix's "advanced content filter" (FILTER_README): Postfix hands each message to us on 127.0.0.1, we
 * convert it and reinject every recipient group over SMTP into a second Postfix smtpd, and only then answer.
 *
 * Threads: one per connection (GThreadedSocketService, bounded by max-connections) with blocking I/O; the protocol
 * is session.c's state machine; conversions run in the connection's thread, at most `workers` at once (a counting
 * gate), each with a reinjection client (smtpclient.c) that keeps its connection open across messages. The main
 * thread only accepts and handles signals: SIGHUP loads a new generation, SIGTERM stops accepting, lets the
 * transactions in flight finish within shutdown-grace, answers 421 4.3.2 to idle clients and exits 0.
 *
 * Generations (generation.c): each transaction takes a reference to the current one, after a stat() of the files it
 * was read from; a changed file or SIGHUP loads a new one beside it and swaps it in, and a load that fails keeps the
 * old one (and says why). A transaction always finishes on the generation it started with.
 *
 * Never lose, never commit partial: no reply is sent for a message before every group's reinjection has its answer;
 * the reinjection client never sends the final dot of an incomplete message; a client that disconnects mid-DATA
 * has its transaction discarded; a SIGKILL leaves Postfix without an answer, so it keeps the message and retries. */
#include "config.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <gio/gio.h>
#include <gio/gunixsocketaddress.h>
#include <glib-unix.h>
#include <glib/gi18n.h>
#include <glib/gstdio.h>

#include "cli.h"
#include "convert.h"
#include "engine.h"
#include "log.h"
#include "session.h"
#include "smtpclient.h"

/* ServeConfig - the [serve] group; every key has a default */
typedef struct {
  char *listen; /* inet:HOST:PORT, inet:[V6]:PORT, unix:/PATH */
  guint mode;   /* of a unix socket */
  MgProtocol protocol;
  char *reinject; /* smtp:HOST:PORT, unix:/PATH */
  guint max_connections;
  guint workers;
  guint idle_timeout;
  guint shutdown_grace;
  guint max_errors;
  guint max_recipients;
  GPtrArray *allow; /* (element-type GInetAddressMask) */
} ServeConfig;

static const char *const serve_keys[] = { "listen",          "listen-mode",    "protocol",     "reinject",
                                          "max-connections", "workers",        "idle-timeout", "shutdown-grace",
                                          "max-errors",      "max-recipients", "allow",        NULL };

static void
serve_config_clear (ServeConfig *sc)
{
  g_clear_pointer (&sc->listen, g_free);
  g_clear_pointer (&sc->reinject, g_free);
  g_clear_pointer (&sc->allow, g_ptr_array_unref);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (ServeConfig, serve_config_clear)

/* serve_number - [serve] KEY as a number in [@min, @max], or @def when absent */
static gboolean
serve_number (const MgConfig *c, const char *key, guint64 min, guint64 max, guint def, guint *out, GError **error)
{
  g_autofree char *v = c->keyfile ? g_key_file_get_string (c->keyfile, "serve", key, NULL) : NULL;
  guint64 n;

  *out = def;
  if (v == NULL)
    return TRUE;
  if (!g_ascii_string_to_unsigned (g_strstrip (v), 10, min, max, &n, NULL)) {
    g_autofree char *at = mg_config_where (c, "serve", key);
    g_autofree char *lo = g_strdup_printf ("%" G_GUINT64_FORMAT, min);
    g_autofree char *hi = g_strdup_printf ("%" G_GUINT64_FORMAT, max);
    g_set_error (error, G_KEY_FILE_ERROR, G_KEY_FILE_ERROR_INVALID_VALUE,
                 _ ("%s: [serve] %s = \"%s\" is not a number from %s to %s"), at, key, v, lo, hi);
    return FALSE;
  }
  *out = (guint) n;
  return TRUE;
}

/* serve_string - [serve] KEY, or @def */
static char *
serve_string (const MgConfig *c, const char *key, const char *def)
{
  g_autofree char *v = c->keyfile ? g_key_file_get_string (c->keyfile, "serve", key, NULL) : NULL;

  return v ? g_strdup (g_strstrip (v)) : g_strdup (def);
}

/* address_target - whether @t is inet:HOST:PORT, inet:[V6]:PORT, smtp:… (with @smtp) or unix:/PATH */
static gboolean
address_target (const char *t, gboolean smtp)
{
  const char *rest = g_str_has_prefix (t, "inet:") ? t + 5 : smtp && g_str_has_prefix (t, "smtp:") ? t + 5 : NULL;
  const char *colon;

  if (g_str_has_prefix (t, "unix:"))
    return g_path_is_absolute (t + 5);
  if (rest == NULL || (colon = strrchr (rest, ':')) == NULL || colon == rest)
    return FALSE;
  return g_ascii_string_to_unsigned (colon + 1, 10, 1, 65535, NULL, NULL);
}

/* serve_config_read - the [serve] group of @c, checked; errors name the file, line and key */
static gboolean
serve_config_read (const MgConfig *c, ServeConfig *sc, GError **error)
{
  g_autofree char *protocol = serve_string (c, "protocol", "lmtp");
  g_autofree char *allow = serve_string (c, "allow", "127.0.0.0/8 ::1");
  g_autofree char *mode = serve_string (c, "listen-mode", "0660");
  g_auto (GStrv) nets = NULL;
  guint64 m;

  if (c->keyfile != NULL && g_key_file_has_group (c->keyfile, "serve")) {
    g_auto (GStrv) keys = g_key_file_get_keys (c->keyfile, "serve", NULL, NULL);
    for (guint i = 0; keys != NULL && keys[i] != NULL; i++)
      if (!g_strv_contains (serve_keys, keys[i])) {
        g_autofree char *at = mg_config_where (c, "serve", keys[i]);
        g_set_error (error, G_KEY_FILE_ERROR, G_KEY_FILE_ERROR_KEY_NOT_FOUND, _ ("%s: [%s] unknown key \"%s\""), at,
                     "serve", keys[i]);
        return FALSE;
      }
  }
  sc->listen = serve_string (c, "listen", "inet:127.0.0.1:10025");
  sc->reinject = serve_string (c, "reinject", "smtp:127.0.0.1:10026");
  if (!address_target (sc->listen, FALSE) || !address_target (sc->reinject, TRUE)) {
    gboolean bad_listen = !address_target (sc->listen, FALSE);
    const char *key = bad_listen ? "listen" : "reinject";
    g_autofree char *at = mg_config_where (c, "serve", key);
    g_set_error (error, G_KEY_FILE_ERROR, G_KEY_FILE_ERROR_INVALID_VALUE,
                 _ ("%s: [serve] %s = \"%s\" is not inet:HOST:PORT, inet:[ADDRESS]:PORT or unix:/PATH"), at, key,
                 bad_listen ? sc->listen : sc->reinject);
    return FALSE;
  }
  if (g_strcmp0 (protocol, "lmtp") == 0 || g_strcmp0 (protocol, "smtp") == 0)
    sc->protocol = protocol[0] == 'l' ? MG_PROTOCOL_LMTP : MG_PROTOCOL_SMTP;
  else {
    g_autofree char *at = mg_config_where (c, "serve", "protocol");
    g_set_error (error, G_KEY_FILE_ERROR, G_KEY_FILE_ERROR_INVALID_VALUE,
                 _ ("%s: [serve] protocol = \"%s\" is not lmtp or smtp"), at, protocol);
    return FALSE;
  }
  if (!g_ascii_string_to_unsigned (mode, 8, 0, 0777, &m, NULL)) {
    g_autofree char *at = mg_config_where (c, "serve", "listen-mode");
    g_set_error (error, G_KEY_FILE_ERROR, G_KEY_FILE_ERROR_INVALID_VALUE,
                 _ ("%s: [serve] listen-mode = \"%s\" is not an octal file mode"), at, mode);
    return FALSE;
  }
  sc->mode = (guint) m;
  if (!serve_number (c, "max-connections", 1, 10000, 100, &sc->max_connections, error) ||
      !serve_number (c, "workers", 1, 1024, MAX (g_get_num_processors (), 1), &sc->workers, error) ||
      !serve_number (c, "idle-timeout", 1, 86400, 300, &sc->idle_timeout, error) ||
      !serve_number (c, "shutdown-grace", 0, 86400, 30, &sc->shutdown_grace, error) ||
      !serve_number (c, "max-errors", 1, 10000, 10, &sc->max_errors, error) ||
      !serve_number (c, "max-recipients", 1, 100000, 1000, &sc->max_recipients, error))
    return FALSE;
  sc->allow = g_ptr_array_new_with_free_func (g_object_unref);
  nets = g_strsplit_set (allow, " ,\t", -1);
  for (guint i = 0; nets[i] != NULL; i++) {
    g_autoptr (GError) local = NULL;
    GInetAddressMask *mask;
    if (nets[i][0] == '\0')
      continue;
    mask = g_inet_address_mask_new_from_string (nets[i], &local);
    if (mask == NULL) {
      g_autofree char *at = mg_config_where (c, "serve", "allow");
      g_set_error (error, G_KEY_FILE_ERROR, G_KEY_FILE_ERROR_INVALID_VALUE,
                   _ ("%s: [serve] allow: \"%s\" is not a network (ADDRESS or ADDRESS/BITS)"), at, nets[i]);
      return FALSE;
    }
    g_ptr_array_add (sc->allow, mask);
  }
  return TRUE;
}

/* Server - the state every connection shares */
typedef struct {
  ServeConfig sc;
  char *conf_path;
  char *hostname;
  GMutex lock;        /* guards gen, retry_after */
  MgGeneration *gen;  /* the current generation */
  gint64 retry_after; /* after a failed reload: no new attempt for a changed file before this (monotonic) */
  GMutex reload_lock; /* one load at a time */
  GMutex gate_lock;   /* guards busy, clients */
  GCond gate;
  guint busy;         /* conversions running */
  GPtrArray *clients; /* (element-type MgSmtpClient): reinjection clients not in use */
  gint connections;   /* atomic */
  gint transactions;  /* atomic: messages between DATA and our reply */
  gint stopping;      /* atomic */
  GMainLoop *loop;
} Server;

/* log_line - a record of the service itself (record "service" or "connection"), never a message's content */
static void
log_line (Server *srv, MgGeneration *gen, const char *record, const char *outcome, const char *status, const char *text)
{
  MgLogRecord rec = { 0 };

  rec.record = record;
  rec.outcome = outcome;
  rec.status_text = status;
  rec.text = text;
  mg_log_write (mg_generation_config (gen), &rec);
  (void) srv;
}

/* reload - a new generation beside the current one, swapped in when it loads; %FALSE (the old one kept) when not.
 * Without @force (a file changed) nothing is loaded when another thread has just done it. */
static gboolean
reload (Server *srv, const char *why, gboolean force)
{
  g_autoptr (GError) error = NULL;
  MgGeneration *fresh, *old;
  gboolean ok;

  g_mutex_lock (&srv->reload_lock);
  if (!force) {
    g_mutex_lock (&srv->lock);
    old = mg_generation_ref (srv->gen);
    g_mutex_unlock (&srv->lock);
    ok = !mg_generation_stale (old);
    mg_generation_unref (old);
    if (ok) {
      g_mutex_unlock (&srv->reload_lock);
      return TRUE;
    }
  }
  fresh = mg_generation_load (srv->conf_path, TRUE, &error);
  g_mutex_lock (&srv->lock);
  old = srv->gen;
  ok = fresh != NULL;
  if (ok) {
    mg_generation_adopt (fresh, old); /* the directory's cached answers (memory only), when [directory] is unchanged */
    srv->gen = fresh;
  }
  /* a file that stays broken is not read again for every transaction: once every 10 s at most (SIGHUP: at once) */
  srv->retry_after = ok ? 0 : g_get_monotonic_time () + 10 * G_USEC_PER_SEC;
  g_mutex_unlock (&srv->lock);
  /* reload_lock stays held while the record is written: the next reload would swap out (and free) fresh or old */
  if (ok) {
    g_autofree char *text = g_strdup_printf (_ ("configuration and key stores reloaded (%s)"), why);
    log_line (srv, fresh, "service", "reloaded", NULL, text);
    mg_generation_unref (old);
  } else {
    g_autofree char *text =
      g_strdup_printf (_ ("reload failed (%s); the previous configuration stays in force: %s"), why, error->message);
    log_line (srv, old, "service", "reload-failed", NULL, text);
    g_printerr ("mimegate serve: %s\n", text);
  }
  g_mutex_unlock (&srv->reload_lock);
  return ok;
}

/* current - Returns: (transfer full): the generation for a new transaction, a new one when a file it read changed */
static MgGeneration *
current (Server *srv)
{
  MgGeneration *gen;
  gboolean wait;

  g_mutex_lock (&srv->lock);
  gen = mg_generation_ref (srv->gen);
  wait = g_get_monotonic_time () < srv->retry_after;
  g_mutex_unlock (&srv->lock);
  if (wait || !mg_generation_stale (gen))
    return gen;
  mg_generation_unref (gen);
  reload (srv, _ ("a file changed"), FALSE);
  g_mutex_lock (&srv->lock);
  gen = mg_generation_ref (srv->gen);
  g_mutex_unlock (&srv->lock);
  return gen;
}

/* gate_enter - waits for a free worker; Returns: (transfer full) (nullable): an idle reinjection client, or %NULL */
static MgSmtpClient *
gate_enter (Server *srv)
{
  MgSmtpClient *client = NULL;

  g_mutex_lock (&srv->gate_lock);
  while (srv->busy >= srv->sc.workers)
    g_cond_wait (&srv->gate, &srv->gate_lock);
  srv->busy++;
  if (srv->clients->len > 0)
    client = g_ptr_array_steal_index_fast (srv->clients, srv->clients->len - 1);
  g_mutex_unlock (&srv->gate_lock);
  return client;
}

static void
gate_leave (Server *srv, MgSmtpClient *client)
{
  g_mutex_lock (&srv->gate_lock);
  srv->busy--;
  if (client != NULL)
    g_ptr_array_add (srv->clients, client);
  g_cond_signal (&srv->gate);
  g_mutex_unlock (&srv->gate_lock);
}

/* Reinjection - what reinject_cb needs for one message */
typedef struct {
  MgSmtpClient *client;
  GHashTable *xforward; /* (nullable) borrowed */
} Reinjection;

/* reinject_cb - MgReinjectFunc over SMTP; a connection failure is 4.4.1, a timeout 4.4.2, a 4xx refusal keeps the
 * server's own enhanced code when it gave one (interned: the engine wants a static string; codes are a small set), a
 * 5xx is deferred with 4.3.0 all the same (the engine defers every reinjection failure) */
static gboolean
reinject_cb (const char *sender, const char *const *recipients, GBytes *message, gpointer user_data, const char **code,
             GError **error)
{
  Reinjection *r = user_data;
  g_auto (MgSmtpReply) reply = { 0 };
  GError *local = NULL;

  if (mg_smtp_client_send (r->client, sender, recipients, message, r->xforward, &reply, &local))
    return TRUE;
  if (g_error_matches (local, MG_SMTP_CLIENT_ERROR, MG_SMTP_CLIENT_ERROR_CONNECT) ||
      g_error_matches (local, MG_SMTP_CLIENT_ERROR, MG_SMTP_CLIENT_ERROR_LOST))
    *code = "4.4.1";
  else if (g_error_matches (local, MG_SMTP_CLIENT_ERROR, MG_SMTP_CLIENT_ERROR_TIMEOUT) ||
           g_error_matches (local, MG_SMTP_CLIENT_ERROR, MG_SMTP_CLIENT_ERROR_UNKNOWN))
    *code = "4.4.2";
  else if (g_error_matches (local, MG_SMTP_CLIENT_ERROR, MG_SMTP_CLIENT_ERROR_REFUSED) && reply.enhanced != NULL &&
           reply.enhanced[0] == '4')
    *code = g_intern_string (reply.enhanced);
  g_propagate_error (error, local);
  return FALSE;
}

/* reply_from_status - an SMTP reply for an RFC 3463 status text ("5.7.1 <a@b>: why") */
static MgReply *
reply_from_status (const char *status, gboolean deferred)
{
  g_auto (GStrv) parts = g_strsplit (status ? status : "", " ", 2);
  const char *enhanced = parts[0] ? parts[0] : "";
  gboolean valid = strlen (enhanced) >= 5 && (enhanced[0] == '4' || enhanced[0] == '5') && enhanced[1] == '.';
  guint code;

  if (!valid)
    return mg_session_reply_new (deferred ? 451 : 550, deferred ? "4.3.0" : "5.3.0", status);
  if (enhanced[0] == '4')
    code = 451;
  else if (g_str_has_prefix (enhanced, "5.3.4"))
    code = 552;
  else if (g_str_has_prefix (enhanced, "5.1."))
    code = 553;
  else
    code = 550;
  return mg_session_reply_new (code, enhanced, parts[1] ? parts[1] : "");
}

/* Connection - one client */
typedef struct {
  Server *srv;
  char *peer;
  guint messages;
} Connection;

/* outcome_reply - one recipient's LMTP reply */
static MgReply *
outcome_reply (const MgRcptOutcome *o)
{
  g_autofree char *text = NULL;

  switch (o->state) {
  case MG_RCPT_DELIVERED:
    text = g_strdup_printf ("<%s> delivered", o->address);
    return mg_session_reply_new (250, "2.0.0", text);
  case MG_RCPT_REFUSED:
    return reply_from_status (o->status, FALSE);
  case MG_RCPT_DEFERRED:
  case MG_RCPT_PENDING:
  default:
    return reply_from_status (o->status ? o->status : "4.3.0 not delivered", TRUE);
  }
}

/* deliver_cb - MgSessionDeliverFunc: one message through the engine, then its replies */
static void
deliver_cb (const MgEnvelope *env, GBytes *message, GPtrArray *replies, gpointer user_data)
{
  Connection *conn = user_data;
  Server *srv = conn->srv;
  g_autoptr (MgGeneration) gen = current (srv);
  const char *queue_id = env->xforward ? g_hash_table_lookup (env->xforward, "IDENT") : NULL;
  g_autoptr (MgJob) job = NULL;
  g_autoptr (GError) error = NULL;
  Reinjection r = { NULL, env->xforward };
  gboolean smtp = srv->sc.protocol == MG_PROTOCOL_SMTP;
  guint delivered = 0, deferred = 0, refused = 0;
  const char *outcome;

  g_atomic_int_inc (&srv->transactions);
  conn->messages++;
  if (queue_id != NULL && g_str_equal (queue_id, "[UNAVAILABLE]"))
    queue_id = NULL;
  job = mg_job_new (gen, "serve", env->sender, queue_id);
  mg_job_set_utf8 (job, env->smtputf8);
  for (guint i = 0; i < env->recipients->len; i++)
    mg_job_add_recipient (job, g_ptr_array_index (env->recipients, i));
  r.client = gate_enter (srv);
  if (r.client == NULL)
    r.client = mg_smtp_client_new (srv->sc.reinject, srv->hostname, mg_generation_config (gen)->timeout, &error);
  if (r.client == NULL) {
    /* cannot happen with a checked configuration; never a crash */
    g_autofree char *status = g_strdup_printf ("4.3.5 mimegate serve: %s", error->message);
    for (guint i = 0; i < (smtp ? 1 : env->recipients->len); i++)
      g_ptr_array_add (replies, reply_from_status (status, TRUE));
    gate_leave (srv, NULL);
    g_atomic_int_add (&srv->transactions, -1);
    return;
  }
  if (mg_job_prepare (job, message))
    mg_job_deliver (job, reinject_cb, &r, smtp);
  for (guint i = 0; i < mg_job_n_recipients (job); i++) {
    MgRcptState s = mg_job_recipient (job, i)->state;
    delivered += s == MG_RCPT_DELIVERED;
    refused += s == MG_RCPT_REFUSED;
    deferred += s == MG_RCPT_DEFERRED || s == MG_RCPT_PENDING;
  }
  if (smtp && deferred == 0 && delivered > 0 && refused > 0) {
    /* SMTP has one reply for everyone: the sender hears about the refused ones from us, as from the pipe */
    g_autoptr (GBytes) report = mg_job_refusal_report (job);
    const char *to[] = { env->sender, NULL };
    const char *code = "4.3.0";
    Reinjection notice = { r.client, NULL };
    g_autoptr (GError) local = NULL;
    if (report != NULL && !reinject_cb ("", to, report, &notice, &code, &local))
      g_printerr ("mimegate serve: %s: %s\n", _ ("the delivery status notification could not be sent"), local->message);
  }
  gate_leave (srv, r.client);

  outcome = deferred > 0 ? "deferred" : refused == 0 ? "delivered" : delivered == 0 ? "refused" : "partly-refused";
  if (!smtp) {
    for (guint i = 0; i < mg_job_n_recipients (job); i++)
      g_ptr_array_add (replies, outcome_reply (mg_job_recipient (job, i)));
  } else if (deferred > 0) {
    const char *status = mg_job_status (job);
    for (guint i = 0; status == NULL && i < mg_job_n_recipients (job); i++)
      if (mg_job_recipient (job, i)->state == MG_RCPT_DEFERRED)
        status = mg_job_recipient (job, i)->status;
    g_ptr_array_add (replies, reply_from_status (status, TRUE));
  } else if (delivered == 0) {
    const char *status = mg_job_status (job) ? mg_job_status (job) : mg_job_recipient (job, 0)->status;
    g_ptr_array_add (replies, reply_from_status (status, FALSE));
  } else
    g_ptr_array_add (
      replies,
      mg_session_reply_new (250, "2.0.0", refused ? "delivered; some recipients were refused by policy" : "delivered"));
  mg_job_finish (job, outcome, 0, mg_job_status (job));
  g_atomic_int_add (&srv->transactions, -1);
}

/* send_all - @bytes to the client; FALSE when it is gone */
static gboolean
send_all (GSocket *sock, GBytes *bytes)
{
  gsize len, done = 0;
  const char *data = g_bytes_get_data (bytes, &len);

  while (done < len) {
    gssize n = g_socket_send (sock, data + done, len - done, NULL, NULL);
    if (n <= 0)
      return FALSE;
    done += (gsize) n;
  }
  return TRUE;
}

/* allowed - whether the peer may use the service (`allow`); a unix socket's peers are judged by its mode */
static gboolean
allowed (Server *srv, GSocketAddress *addr)
{
  GInetAddress *ip;

  if (!G_IS_INET_SOCKET_ADDRESS (addr))
    return TRUE;
  ip = g_inet_socket_address_get_address (G_INET_SOCKET_ADDRESS (addr));
  for (guint i = 0; i < srv->sc.allow->len; i++)
    if (g_inet_address_mask_matches (g_ptr_array_index (srv->sc.allow, i), ip))
      return TRUE;
  return FALSE;
}

static char *
peer_name (GSocketAddress *addr)
{
  if (G_IS_INET_SOCKET_ADDRESS (addr)) {
    g_autofree char *ip = g_inet_address_to_string (g_inet_socket_address_get_address (G_INET_SOCKET_ADDRESS (addr)));
    return g_strdup_printf ("%s:%u", ip, g_inet_socket_address_get_port (G_INET_SOCKET_ADDRESS (addr)));
  }
  return g_strdup ("unix");
}

/* run_cb - one connection, in its own thread, from greeting to close */
static gboolean
run_cb (GThreadedSocketService *service, GSocketConnection *connection, GObject *source, gpointer user_data)
{
  Server *srv = user_data;
  GSocket *sock = g_socket_connection_get_socket (connection);
  g_autoptr (GSocketAddress) addr = g_socket_connection_get_remote_address (connection, NULL);
  g_autoptr (MgGeneration) gen = current (srv);
  g_autoptr (MgSession) session = NULL;
  g_autoptr (GBytes) greeting = NULL;
  g_autofree char *why = NULL;
  g_autofree char *text = NULL;
  Connection conn = { srv, addr ? peer_name (addr) : g_strdup ("?"), 0 };
  MgSessionLimits limits;
  guint idle = 0;
  guint8 buf[65536];

  (void) service;
  (void) source;
  g_atomic_int_inc (&srv->connections);
  g_socket_set_blocking (sock, TRUE);
  g_socket_set_timeout (sock, srv->sc.idle_timeout); /* bounds a send to a client that does not read */
  if (addr == NULL || !allowed (srv, addr)) {
    g_autofree char *line = g_strdup_printf ("554 5.7.1 %s\r\n", "access denied: this client is not allowed");
    g_autoptr (GBytes) b = g_bytes_new (line, strlen (line));
    send_all (sock, b);
    why = g_strdup ("refused: not in allow");
    goto done;
  }
  mg_session_limits_init (&limits, srv->sc.protocol, srv->hostname);
  limits.max_size = mg_generation_config (gen)->limits.max_size;
  limits.spool_dir = mg_generation_config (gen)->spool_dir;
  limits.spool_threshold = mg_generation_config (gen)->limits.spool_threshold;
  limits.max_errors = srv->sc.max_errors;
  limits.max_recipients = srv->sc.max_recipients;
  session = mg_session_new (&limits, deliver_cb, &conn);
  greeting = mg_session_greeting (session);
  if (!send_all (sock, greeting)) {
    why = g_strdup ("lost before the greeting");
    goto done;
  }
  for (;;) {
    g_autoptr (GError) error = NULL;
    g_autoptr (GBytes) out = NULL;
    gssize n;
    if (g_atomic_int_get (&srv->stopping) && !mg_session_in_transaction (session)) {
      g_autoptr (GBytes) bye = mg_session_shutdown (session, "4.3.2", "service shutting down");
      send_all (sock, bye);
      why = g_strdup ("shutdown");
      break;
    }
    if (!g_socket_condition_timed_wait (sock, G_IO_IN, G_USEC_PER_SEC, NULL, &error)) {
      if (!g_error_matches (error, G_IO_ERROR, G_IO_ERROR_TIMED_OUT)) {
        why = g_strdup (error->message);
        break;
      }
      if (++idle >= srv->sc.idle_timeout) {
        g_autoptr (GBytes) bye = mg_session_shutdown (session, "4.4.2", "idle timeout");
        send_all (sock, bye);
        why = g_strdup ("idle timeout");
        break;
      }
      continue;
    }
    idle = 0;
    n = g_socket_receive (sock, (char *) buf, sizeof buf, NULL, &error);
    if (n <= 0) {
      /* the client went away: whatever it had sent of a message is discarded, nothing was reinjected */
      why = g_strdup (n == 0 ? "closed by the client" : error->message);
      break;
    }
    out = mg_session_feed (session, buf, (gsize) n);
    if (out != NULL && g_bytes_get_size (out) > 0 && !send_all (sock, out)) {
      why = g_strdup ("lost while replying");
      break;
    }
    if (mg_session_closed (session)) {
      why = g_strdup (mg_session_errors (session) > srv->sc.max_errors ? "too many errors" : "quit");
      break;
    }
  }
done:
  text = g_strdup_printf (_ ("connection from %s closed after %u message(s): %s"), conn.peer, conn.messages, why);
  log_line (srv, gen, "connection", "closed", NULL, text);
  g_free (conn.peer);
  g_atomic_int_add (&srv->connections, -1);
  return TRUE;
}

/* listen_on - the service bound to sc->listen */
static GSocketService *
listen_on (Server *srv, GError **error)
{
  GSocketService *service = g_threaded_socket_service_new ((int) srv->sc.max_connections);
  g_autoptr (GSocketAddress) addr = NULL;
  const char *t = srv->sc.listen;

  if (g_str_has_prefix (t, "unix:")) {
    g_unlink (t + 5); /* a socket left by a killed predecessor */
    addr = g_unix_socket_address_new (t + 5);
  } else {
    const char *hostport = t + 5, *colon = strrchr (hostport, ':');
    g_autofree char *host = g_strndup (hostport, (gsize) (colon - hostport));
    g_autoptr (GInetAddress) ip = NULL;
    if (host[0] == '[' && host[strlen (host) - 1] == ']') {
      memmove (host, host + 1, strlen (host));
      host[strlen (host) - 1] = '\0';
    }
    ip = g_inet_address_new_from_string (host);
    if (ip == NULL) {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, _ ("listen: %s is not an IP address"), host);
      g_object_unref (service);
      return NULL;
    }
    addr = g_inet_socket_address_new (ip, (guint16) g_ascii_strtoull (colon + 1, NULL, 10));
  }
  if (!g_socket_listener_add_address (G_SOCKET_LISTENER (service), addr, G_SOCKET_TYPE_STREAM,
                                      G_SOCKET_PROTOCOL_DEFAULT, NULL, NULL, error)) {
    g_object_unref (service);
    return NULL;
  }
  if (g_str_has_prefix (t, "unix:"))
    g_chmod (t + 5, (int) srv->sc.mode);
  g_signal_connect (service, "run", G_CALLBACK (run_cb), srv);
  return service;
}

/* on_hup - SIGHUP, in the main thread: a new generation now, so that a bad file is reported at once */
static gboolean
on_hup (gpointer data)
{
  reload (data, "SIGHUP", TRUE);
  return G_SOURCE_CONTINUE;
}

static gboolean
on_term (gpointer data)
{
  Server *srv = data;

  g_atomic_int_set (&srv->stopping, 1);
  g_main_loop_quit (srv->loop);
  return G_SOURCE_REMOVE;
}

/* check - what --check prints: where it would listen, what it found */
static void
check (Server *srv)
{
  const MgConfig *c = mg_generation_config (srv->gen);
  const GError *store_error = mg_generation_store_error (srv->gen);
  MgX509Store *x509 = mg_generation_x509 (srv->gen);

  printf ("configuration: %s\n", c->path ? c->path : _ ("(built-in defaults)"));
  printf ("listen: %s (%s), allow:", srv->sc.listen, srv->sc.protocol == MG_PROTOCOL_LMTP ? "lmtp" : "smtp");
  for (guint i = 0; i < srv->sc.allow->len; i++) {
    g_autofree char *s = g_inet_address_mask_to_string (g_ptr_array_index (srv->sc.allow, i));
    printf (" %s", s);
  }
  printf ("\nreinject: %s\n", srv->sc.reinject);
  printf ("workers: %u, max-connections: %u, idle-timeout: %u s, shutdown-grace: %u s\n", srv->sc.workers,
          srv->sc.max_connections, srv->sc.idle_timeout, srv->sc.shutdown_grace);
  printf ("gnupg-home: %s\n", !c->use_gnupg ? "none" : c->gnupg_home ? c->gnupg_home : _ ("(GnuPG's default)"));
  printf ("x509-store: %s", c->x509_store ? c->x509_store : "none");
  if (x509 != NULL)
    printf (" (%u private key(s), %u file(s) skipped)", mg_x509_store_private_keys (x509)->len,
            mg_x509_store_warnings (x509)->len);
  printf ("\n");
  if (store_error != NULL)
    printf ("%s: %s\n", _ ("key stores"), store_error->message);
}

int
mg_cmd_serve (int argc, char **argv)
{
  g_autofree char *conf = NULL;
  gboolean check_only = FALSE;
  g_autofree char *conf_help = mg_cli_config_help (FALSE);
  GOptionEntry entries[] = {
    { "config", 'c', 0, G_OPTION_ARG_FILENAME, &conf, conf_help, N_ ("CONF") },
    { "check", 0, 0, G_OPTION_ARG_NONE, &check_only,
      N_ ("Load the configuration and the key stores, say what was found, and exit"), NULL },
    { NULL },
  };
  g_autoptr (GOptionContext) ctx = mg_cli_context ("serve", entries);
  g_autoptr (GError) error = NULL;
  g_autoptr (GSocketService) service = NULL;
  Server srv = { 0 };
  gint64 deadline;
  int code;

  g_option_context_set_description (
    ctx, _ ("The [serve] group of the configuration file (every key has a default):\n"
            "  listen = inet:127.0.0.1:10025   also inet:[::1]:PORT or unix:/PATH (with listen-mode = 0660)\n"
            "  protocol = lmtp                 or smtp (one reply for all recipients; refusals by DSN)\n"
            "  reinject = smtp:127.0.0.1:10026 the second Postfix smtpd\n"
            "  workers = number of CPUs        conversions at once\n"
            "  max-connections = 100           idle-timeout = 300    shutdown-grace = 30 (seconds)\n"
            "  max-errors = 10                 max-recipients = 1000\n"
            "  allow = 127.0.0.0/8 ::1         client networks\n"
            "SIGHUP, or a changed configuration or key store, loads a new generation; SIGTERM finishes what is in "
            "flight."));
  if (!mg_cli_parse ("serve", ctx, &argc, &argv, MG_EXIT_USAGE, &code))
    return code;
  if (argc > 1) {
    mg_cli_usage_error ("serve", MG_EXIT_USAGE, _ ("unexpected argument \"%s\""), argv[1]);
    return MG_EXIT_USAGE;
  }
  srv.conf_path = conf;
  srv.gen = mg_generation_load (conf, TRUE, &error);
  if (srv.gen == NULL || !serve_config_read (mg_generation_config (srv.gen), &srv.sc, &error)) {
    fprintf (stderr, "mimegate serve: %s\n", error->message);
    g_clear_pointer (&srv.gen, mg_generation_unref);
    serve_config_clear (&srv.sc);
    return MG_EXIT_CONFIG;
  }
  srv.hostname = g_strdup (mg_authserv_id_valid (mg_generation_config (srv.gen)->authserv_id)
                             ? mg_generation_config (srv.gen)->authserv_id
                             : "localhost");
  if (check_only) {
    check (&srv);
    code = mg_generation_store_error (srv.gen) ? MG_EXIT_CONFIG : MG_EXIT_OK;
    mg_generation_unref (srv.gen);
    serve_config_clear (&srv.sc);
    g_free (srv.hostname);
    return code;
  }
  g_mutex_init (&srv.lock);
  g_mutex_init (&srv.reload_lock);
  g_mutex_init (&srv.gate_lock);
  g_cond_init (&srv.gate);
  srv.clients = g_ptr_array_new_with_free_func ((GDestroyNotify) mg_smtp_client_free);
  signal (SIGPIPE, SIG_IGN);
  service = listen_on (&srv, &error);
  if (service == NULL) {
    fprintf (stderr, "mimegate serve: %s: %s\n", srv.sc.listen, error->message);
    code = MG_EXIT_TEMPFAIL;
  } else {
    g_autofree char *text = g_strdup_printf (_ ("listening on %s (%s), reinjecting to %s"), srv.sc.listen,
                                             srv.sc.protocol == MG_PROTOCOL_LMTP ? "lmtp" : "smtp", srv.sc.reinject);
    srv.loop = g_main_loop_new (NULL, FALSE);
    g_unix_signal_add (SIGHUP, on_hup, &srv);
    g_unix_signal_add (SIGTERM, on_term, &srv);
    g_unix_signal_add (SIGINT, on_term, &srv);
    g_socket_service_start (service);
    log_line (&srv, srv.gen, "service", "started", NULL, text);
    g_main_loop_run (srv.loop);
    /* SIGTERM: no new connections; transactions in flight get shutdown-grace to finish, idle clients a 421 */
    g_socket_service_stop (service);
    g_socket_listener_close (G_SOCKET_LISTENER (service));
    deadline = g_get_monotonic_time () + (gint64) srv.sc.shutdown_grace * G_USEC_PER_SEC;
    while (g_atomic_int_get (&srv.connections) > 0 && g_get_monotonic_time () < deadline)
      g_usleep (50 * 1000);
    {
      g_autofree char *done =
        g_strdup_printf (_ ("stopped; %d connection(s) still open were cut off"), g_atomic_int_get (&srv.connections));
      log_line (&srv, srv.gen, "service", "stopped", NULL, done);
    }
    code = MG_EXIT_OK;
    if (g_atomic_int_get (&srv.connections) > 0)
      _exit (code); /* threads still in a transaction: Postfix has no reply and keeps the message */
    if (g_str_has_prefix (srv.sc.listen, "unix:"))
      g_unlink (srv.sc.listen + 5);
    g_main_loop_unref (srv.loop);
  }
  g_clear_object (&service);
  g_ptr_array_unref (srv.clients);
  mg_generation_unref (srv.gen);
  serve_config_clear (&srv.sc);
  g_free (srv.hostname);
  g_mutex_clear (&srv.lock);
  g_mutex_clear (&srv.reload_lock);
  g_mutex_clear (&srv.gate_lock);
  g_cond_clear (&srv.gate);
  mg_log_flush_warnings ();
  return code;
}
