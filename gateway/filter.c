/* filter.c - `mimegate filter [-c CONF] [--stdout] [--queue-id ID] -f SENDER [--] RCPT...`: the Postfix pipe(8)
 * content filter (DESIGN.md "Users", "Policy", "Outcomes").
 *
 * One run: read the whole message; decide each recipient's form from policy, the detected kind and the keys; group
 * recipients that get the same result (a blind copy that is encrypted always gets its own group, so that no other
 * recipient sees its key id); convert every group; only then reinject the groups one by one with the reinject command
 * plus `-f SENDER -- RCPT...`. Nothing is emitted before all work is done.
 *
 * Exit codes for pipe(8), which bounces on everything but 75 and 71: 0 delivered; 75 with a 4.x.x first line for
 * everything transient or internal (a store or the agent unavailable, reinjection failed or timed out, a bad
 * configuration, a usage mistake in master.cf, SIGTERM); 69 with a 5.7.1 first line when every recipient is refused
 * by policy (encrypt = required and no usable key). When only some are refused, the others are delivered, the
 * sender gets a delivery status notification for the refused ones (RFC 3464) and the run exits 0: pipe(8) has one
 * status per run, so this is the only way to report one recipient without bouncing or deferring the others. With
 * `mimegate_destination_recipient_limit = 1` every run has one recipient and Postfix reports it itself. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <gio/gio.h>
#include <glib/gi18n.h>

#include "cli.h"
#include "convert.h"
#include "log.h"
#include "mg-gmime.h"
#include "policy.h"

#define ENCRYPTED_KINDS                                                                                                \
  (MG_KIND_BIT (MG_KIND_PGP_MIME_ENCRYPTED) | MG_KIND_BIT (MG_KIND_PGP_MIME_MANGLED) |                                 \
   MG_KIND_BIT (MG_KIND_PGP_INLINE_ENCRYPTED) | MG_KIND_BIT (MG_KIND_PGP_ATTACHMENT_ENCRYPTED) |                       \
   MG_KIND_BIT (MG_KIND_SMIME_ENVELOPED))

/* the child being waited for, and what to say when the run is stopped: for the signal handler */
static volatile pid_t child_pid = 0;
static char stop_line[256];

/* on_stop - SIGALRM (the run's timeout) or SIGTERM: the reinjection's whole process group killed, the stop line, 75.
 * The reinjection's input is complete before it starts (reinject_input), so it could only commit the whole message;
 * it is killed because the run is deferred and Postfix will deliver it again, and nothing it started may outlive us. */
static void
on_stop (int sig)
{
  pid_t child = child_pid;

  if (child > 0)
    kill (-child, SIGKILL);
  if (write (STDERR_FILENO, stop_line, strlen (stop_line)) < 0) {
    /* nothing left to tell anyone */
  }
  _exit (sig == SIGALRM || sig == SIGTERM ? 75 : 71);
}

static void
arm_stop_handlers (guint timeout)
{
  struct sigaction sa;

  g_snprintf (stop_line, sizeof stop_line, "4.4.7 mimegate filter: %s\n",
              _ ("stopped (timeout or SIGTERM) before the message was delivered; it is deferred"));
  memset (&sa, 0, sizeof sa);
  sa.sa_handler = on_stop;
  sigemptyset (&sa.sa_mask);
  sigaction (SIGALRM, &sa, NULL);
  sigaction (SIGTERM, &sa, NULL);
  signal (SIGPIPE, SIG_IGN);
  signal (SIGXFSZ, SIG_IGN); /* a full disk or a file size limit is an error to report (EFBIG), not a kill */
  alarm (timeout);
}

/* Rcpt - one envelope recipient and what it gets */
typedef struct {
  char *address;
  MgPolicy *policy;
  MgForm form;
  char *refusal; /* (nullable): the 5.7.x text when policy refuses this recipient */
  char *why;     /* (nullable): why it gets this form, for the log */
  gboolean blind;
} Rcpt;

static void
rcpt_free (Rcpt *r)
{
  g_free (r->address);
  mg_policy_free (r->policy);
  g_free (r->refusal);
  g_free (r->why);
  g_free (r);
}

/* Group - recipients that get the same bytes */
typedef struct {
  MgForm form;
  MgSignMethod sign;
  char *sign_as;
  gboolean gcm;
  GPtrArray *rcpts; /* (element-type Rcpt) borrowed */
  GBytes *output;
  MgConvertResult result;
  char *note; /* (nullable): why this group was kept as it came */
} Group;

static void
group_free (Group *g)
{
  g_free (g->sign_as);
  g_ptr_array_unref (g->rcpts);
  g_clear_pointer (&g->output, g_bytes_unref);
  mg_convert_result_clear (&g->result);
  g_free (g->note);
  g_free (g);
}

/* Run - one filter run */
typedef struct {
  MgConfig *config;
  const char *sender;
  const char *queue_id;
  GBytes *input;
  MgReport *report;
  MgGnupg *gnupg;
  MgX509Store *x509;
  GPtrArray *rcpts;  /* (element-type Rcpt) */
  GPtrArray *groups; /* (element-type Group) */
  GHashTable *named; /* address keys in To, Cc, Resent-To, Resent-Cc */
  gint64 start;
} Run;

static gboolean
encrypting (MgForm form)
{
  return form == MG_FORM_PGP_MIME || form == MG_FORM_PGP_INLINE || form == MG_FORM_SMIME;
}

/* address_ok - an envelope address we may put on a command line and in headers: printable ASCII, no space */
static gboolean
address_ok (const char *a)
{
  for (const char *c = a; *c; c++)
    if ((guchar) *c <= 0x20 || (guchar) *c >= 0x7f)
      return FALSE;
  return TRUE;
}

/* read_named - the addresses the message's own headers name (who may see whom) */
static void
read_named (Run *run)
{
  g_autoptr (GMimeStream) s = mg_stream_for_bytes (run->input);
  g_autoptr (GMimeParser) parser = g_mime_parser_new_with_stream (s);
  g_autoptr (GMimeMessage) m = NULL;
  const char *fields[] = { "To", "Cc", "Resent-To", "Resent-Cc" };

  run->named = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  g_mime_parser_set_persist_stream (parser, FALSE);
  m = g_mime_parser_construct_message (parser, NULL);
  if (m == NULL)
    return;
  for (gsize i = 0; i < G_N_ELEMENTS (fields); i++) {
    GMimeHeaderList *headers = g_mime_object_get_header_list (GMIME_OBJECT (m));
    for (int h = 0; h < g_mime_header_list_get_count (headers); h++) {
      GMimeHeader *hdr = g_mime_header_list_get_header_at (headers, h);
      g_autoptr (InternetAddressList) list = NULL;
      if (g_ascii_strcasecmp (g_mime_header_get_name (hdr), fields[i]) != 0)
        continue;
      list = internet_address_list_parse (NULL, g_mime_header_get_value (hdr));
      for (int k = 0; list != NULL && k < internet_address_list_length (list); k++) {
        InternetAddress *ia = internet_address_list_get_address (list, k);
        if (INTERNET_ADDRESS_IS_MAILBOX (ia)) {
          char *key = mg_keys_address_key (internet_address_mailbox_get_addr (INTERNET_ADDRESS_MAILBOX (ia)));
          if (key != NULL)
            g_hash_table_add (run->named, key);
        }
      }
    }
  }
}

/* has_key - whether @address has a usable key for @form; a store error is transient and set in @error */
static gboolean
has_key (Run *run, const char *address, MgForm form, GError **error)
{
  g_autoptr (GPtrArray) refused = g_ptr_array_new_with_free_func ((GDestroyNotify) mg_keys_refusal_free);

  if (form == MG_FORM_SMIME)
    return run->x509 != NULL && mg_x509_store_lookup (run->x509, address, refused) != NULL;
  if (form == MG_FORM_PGP_MIME || form == MG_FORM_PGP_INLINE) {
    g_autoptr (MgPgpKey) k = run->gnupg ? mg_gnupg_lookup (run->gnupg, address, refused, error) : NULL;
    return k != NULL;
  }
  return TRUE;
}

/* decide - a recipient's form (DESIGN.md "How one recipient's form is decided"); FALSE with a transient @error */
static gboolean
decide (Run *run, Rcpt *r, GError **error)
{
  const MgPolicy *p = r->policy;
  gboolean encrypted = (run->report->kinds & ENCRYPTED_KINDS) != 0;
  gboolean want_auto = p->form_auto || (p->encrypt == MG_ENCRYPT_REQUIRED && !encrypting (p->form));
  GError *local = NULL;

  r->form = MG_FORM_KEEP;
  if (want_auto) {
    gboolean found = FALSE;
    if (p->encrypt != MG_ENCRYPT_NEVER) {
      if (has_key (run, r->address, MG_FORM_PGP_MIME, &local)) {
        r->form = p->inline_only ? MG_FORM_PGP_INLINE : MG_FORM_PGP_MIME;
        found = TRUE;
      } else if (local == NULL && has_key (run, r->address, MG_FORM_SMIME, &local)) {
        r->form = MG_FORM_SMIME;
        found = TRUE;
      }
      if (local != NULL) {
        g_propagate_error (error, local);
        return FALSE;
      }
    }
    if (!found) {
      if (p->encrypt == MG_ENCRYPT_REQUIRED) {
        r->refusal = g_strdup_printf ("5.7.1 <%s>: %s", r->address,
                                      _ ("encryption is required for this recipient and no usable key is known"));
        return TRUE;
      }
      r->form = encrypted && p->decrypt ? MG_FORM_PLAIN : MG_FORM_KEEP;
      r->why = g_strdup (encrypted && p->decrypt ? "no key: decrypted for delivery" : "no key");
    }
  } else {
    r->form = p->form;
    if (encrypting (r->form)) {
      gboolean ok = has_key (run, r->address, r->form, &local);
      if (local != NULL) {
        g_propagate_error (error, local);
        return FALSE;
      }
      if (!ok) {
        if (p->encrypt == MG_ENCRYPT_REQUIRED) {
          r->refusal =
            g_strdup_printf ("5.7.1 <%s>: %s %s", r->address,
                             _ ("encryption is required and there is no usable key for form"), mg_form_name (r->form));
          return TRUE;
        }
        r->why = g_strdup_printf ("no key for form %s", mg_form_name (r->form));
        r->form = MG_FORM_KEEP;
      }
    }
  }
  /* rule 4: the form needs the message decrypted and the policy forbids it: as it came */
  if (encrypted && !p->decrypt && r->form != MG_FORM_KEEP) {
    g_free (r->why);
    r->why = g_strdup ("decrypt = false");
    r->form = MG_FORM_KEEP;
  }
  r->blind = encrypting (r->form) && !g_hash_table_contains (run->named, r->address);
  return TRUE;
}

/* group_of - the group @r joins: same form, signing and cipher; an encrypted blind copy always alone */
static Group *
group_of (Run *run, Rcpt *r)
{
  MgSignMethod sign = r->form == MG_FORM_KEEP ? MG_SIGN_NONE : r->policy->sign;
  const char *sign_as = sign == MG_SIGN_NONE ? NULL : (r->policy->sign_as ? r->policy->sign_as : run->sender);
  gboolean gcm = r->form == MG_FORM_SMIME && r->policy->gcm;
  Group *g;

  for (guint i = 0; !r->blind && i < run->groups->len; i++) {
    g = g_ptr_array_index (run->groups, i);
    if (g->form == r->form && g->sign == sign && g_strcmp0 (g->sign_as, sign_as) == 0 && g->gcm == gcm &&
        !((Rcpt *) g_ptr_array_index (g->rcpts, 0))->blind) {
      g_ptr_array_add (g->rcpts, r);
      return g;
    }
  }
  g = g_new0 (Group, 1);
  g->form = r->form;
  g->sign = sign;
  g->sign_as = g_strdup (sign_as);
  g->gcm = gcm;
  g->rcpts = g_ptr_array_new ();
  g_ptr_array_add (g->rcpts, r);
  mg_convert_result_init (&g->result);
  g_ptr_array_add (run->groups, g);
  return g;
}

/* all_pass - every recipient of @g says on-error = pass, and none of them requires encryption of a clear message */
static gboolean
all_pass (Run *run, Group *g)
{
  gboolean clear = (run->report->kinds & ENCRYPTED_KINDS) == 0;

  for (guint i = 0; i < g->rcpts->len; i++) {
    const Rcpt *r = g_ptr_array_index (g->rcpts, i);
    if (!r->policy->pass_on_error || (clear && r->policy->encrypt == MG_ENCRYPT_REQUIRED))
      return FALSE;
  }
  return TRUE;
}

/* convert_group - @g's bytes. A permanent failure keeps the message as it came (refusing required recipients of
 * a clear message: never clear text for them); a transient one defers, or keeps with on-error = pass. */
static gboolean
convert_group (Run *run, Group *g, GError **error)
{
  g_autoptr (GPtrArray) addrs = g_ptr_array_new ();
  MgConvertKeys keys = { 0 };
  g_autoptr (GError) local = NULL;
  gboolean clear = (run->report->kinds & ENCRYPTED_KINDS) == 0;

  for (guint i = 0; i < g->rcpts->len; i++)
    g_ptr_array_add (addrs, ((Rcpt *) g_ptr_array_index (g->rcpts, i))->address);
  g_ptr_array_add (addrs, NULL);
  keys.gnupg = run->gnupg;
  keys.x509 = run->x509;
  keys.limits = &run->config->limits;
  keys.gcm = g->gcm;
  keys.authserv_id = mg_authserv_id_valid (run->config->authserv_id) ? run->config->authserv_id : "localhost";
  keys.sign = g->sign;
  keys.sign_as = g->sign_as;
  g->output = mg_convert (run->input, g->form, (const char *const *) addrs->pdata, &keys, &g->result, &local);
  if (g->output != NULL && g->form == MG_FORM_PLAIN && g_strcmp0 (g->result.action, "kept") == 0 &&
      g->sign == MG_SIGN_NONE) {
    /* nothing was decrypted: deliver the original bytes rather than GMime's rewrite of them */
    g_clear_pointer (&g->output, g_bytes_unref);
    mg_convert_result_clear (&g->result);
    mg_convert_result_init (&g->result);
    g->form = MG_FORM_KEEP;
    g->output = mg_convert (run->input, MG_FORM_KEEP, (const char *const *) addrs->pdata, &keys, &g->result, NULL);
  }
  if (g->output != NULL)
    return TRUE;
  if (mg_keys_error_is_transient (local) ||
      (local->domain == MG_CONVERT_ERROR && local->code == MG_CONVERT_ERROR_NO_SIGNER)) {
    if (!all_pass (run, g)) {
      g_propagate_error (error, g_steal_pointer (&local));
      return FALSE;
    }
  } else if (clear) {
    /* a clear message that cannot be encrypted: refuse whoever requires encryption, keep it for the others */
    for (guint i = 0; i < g->rcpts->len; i++) {
      Rcpt *r = g_ptr_array_index (g->rcpts, i);
      if (r->policy->encrypt == MG_ENCRYPT_REQUIRED && encrypting (g->form)) {
        r->refusal =
          g_strdup_printf ("5.7.1 <%s>: %s: %s", r->address, _ ("the message cannot be encrypted"), local->message);
        g_ptr_array_remove_index (g->rcpts, i--);
      }
    }
  }
  g->note = g_strdup (local->message);
  mg_convert_result_clear (&g->result);
  mg_convert_result_init (&g->result);
  g->form = MG_FORM_KEEP;
  keys.sign = MG_SIGN_NONE;
  g->output = mg_convert (run->input, MG_FORM_KEEP, (const char *const *) addrs->pdata, &keys, &g->result, NULL);
  return TRUE;
}

/* Reinjection: the command (sendmail) commits whatever it has read when its input ends, and the filter can be killed
 * by SIGKILL at any instant (Postfix's time limit, the OOM killer, an admin), which nothing can catch. So the child's
 * stdin is never a pipe the filter still writes into: the whole result is written into a file first, rewound, and only
 * then is the child spawned with that file as its stdin. A kill before the spawn leaves nothing (the file has no name
 * and dies with its last descriptor); a kill after it leaves a child whose input is complete, so that whatever it
 * commits is the whole message. The child is also tied to the filter's life (PR_SET_PDEATHSIG), so that it usually
 * dies before committing anything; when it has committed already, or a grandchild of it goes on (postdrop, a forking
 * sendmail), Postfix's retry makes a duplicate: acceptable, a truncated copy never is. A timeout or SIGTERM still
 * kills the child's whole process group (on_stop). */

/* results up to this size go into a sealed memfd; larger ones into an unlinked file in spool-dir, because a memfd is
 * memory that only swap can take away, and the filter holds the message and every result in memory already */
#define REINJECT_MEMFD_MAX ((gsize) 1024 * 1024)

/* write_all - all of @len bytes of @data to @fd; FALSE with errno set */
static gboolean
write_all (int fd, const guint8 *data, gsize len)
{
  while (len > 0) {
    ssize_t n = write (fd, data, MIN (len, (gsize) 1 << 30));
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      if (n == 0)
        errno = EIO;
      return FALSE;
    }
    data += n;
    len -= (gsize) n;
  }
  return TRUE;
}

/* spool_file - a new 0600 file in @dir that has no name: O_TMPFILE, or where the file system lacks it a file unlinked
 * the moment it exists, before anything is written into it; -1 with errno set */
static int
spool_file (const char *dir)
{
  g_autofree char *path = NULL;
  int fd = open (dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);

  if (fd >= 0 || (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL))
    return fd;
  path = g_build_filename (dir, "mimegate-reinject-XXXXXX", NULL);
  fd = g_mkstemp_full (path, O_RDWR | O_CLOEXEC, 0600);
  if (fd >= 0 && unlink (path) != 0) {
    int saved = errno;
    close (fd);
    errno = saved;
    return -1;
  }
  return fd;
}

/* reinject_input - a descriptor of a file that holds all of @data, at offset 0: a memfd sealed against any change
 * for a small result (or where memfds are unavailable, as for a large one) an unlinked file in @spool_dir. -1 with
 * @error set when it cannot be written (a full spool is transient). */
static int
reinject_input (GBytes *data, const char *spool_dir, GError **error)
{
  gsize len;
  const guint8 *bytes = g_bytes_get_data (data, &len);
  const char *where = "memfd";
  gboolean sealed = FALSE;
  int fd = -1, saved;

  if (len <= REINJECT_MEMFD_MAX) {
    fd = memfd_create ("mimegate-reinject", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    sealed = fd >= 0;
  }
  if (fd < 0) {
    where = spool_dir;
    fd = spool_file (spool_dir);
  }
  if (fd >= 0 && write_all (fd, bytes, len) &&
      (!sealed || fcntl (fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) == 0) &&
      lseek (fd, 0, SEEK_SET) == 0)
    return fd;
  saved = errno;
  if (fd >= 0)
    close (fd);
  g_set_error (error, G_IO_ERROR, g_io_error_from_errno (saved),
               _ ("cannot hold the message for reinjection in %s: %s"), where, g_strerror (saved));
  return -1;
}

/* own_group - in the reinject child (@data: the filter's pid): its own process group, so that a timeout kills it and
 * whatever it started; and killed when the filter dies. PR_SET_PDEATHSIG is cleared by the exec of a set-uid or
 * set-gid program and does not reach grandchildren: the complete stdin is what makes those safe. */
static void
own_group (gpointer data)
{
  sigset_t stop;

  setpgid (0, 0);
  prctl (PR_SET_PDEATHSIG, SIGKILL);
  if (getppid () != (pid_t) GPOINTER_TO_INT (data))
    _exit (127); /* the filter died before the line above: no signal will come, and nobody waits for us */
  sigemptyset (&stop);
  sigaddset (&stop, SIGALRM);
  sigaddset (&stop, SIGTERM);
  sigprocmask (SIG_UNBLOCK, &stop, NULL); /* blocked in the parent only while it learns this child's pid */
}

/* exit_text - how the reinject child ended, with what it said on stderr (at most 300 bytes, on one line) if anything */
static char *
exit_text (GSubprocess *proc, const char *program, GBytes *err_bytes)
{
  gsize n = 0;
  const char *err = err_bytes ? g_bytes_get_data (err_bytes, &n) : NULL;
  g_autofree char *said = g_strstrip (g_strdelimit (g_strndup (err ? err : "", MIN (n, 300)), "\r\n", ' '));
  g_autofree char *how =
    g_subprocess_get_if_exited (proc)
      ? g_strdup_printf (_ ("%s exited with status %d"), program, g_subprocess_get_exit_status (proc))
      : g_strdup_printf (_ ("%s was killed by signal %d"), program, g_subprocess_get_term_sig (proc));

  return said[0] ? g_strdup_printf ("%s: %s", how, said) : g_steal_pointer (&how);
}

/* reinject - the reinject command with -f SENDER -- RCPT..., @g's result complete on its stdin before it starts;
 * killed at the run's timeout */
static gboolean
reinject (Run *run, Group *g, GError **error)
{
  g_autoptr (GPtrArray) argv = g_ptr_array_new ();
  g_autoptr (GSubprocessLauncher) launcher = NULL;
  g_autoptr (GSubprocess) proc = NULL;
  g_autoptr (GBytes) err_bytes = NULL;
  const char *id;
  sigset_t stop, saved;
  int input;

  for (guint i = 0; run->config->reinject[i] != NULL; i++)
    g_ptr_array_add (argv, run->config->reinject[i]);
  g_ptr_array_add (argv, (gpointer) "-f");
  g_ptr_array_add (argv, (gpointer) run->sender);
  g_ptr_array_add (argv, (gpointer) "--");
  for (guint i = 0; i < g->rcpts->len; i++)
    g_ptr_array_add (argv, ((Rcpt *) g_ptr_array_index (g->rcpts, i))->address);
  g_ptr_array_add (argv, NULL);
  input = reinject_input (g->output, run->config->spool_dir, error);
  if (input < 0)
    return FALSE;
  launcher = g_subprocess_launcher_new (G_SUBPROCESS_FLAGS_STDOUT_SILENCE | G_SUBPROCESS_FLAGS_STDERR_PIPE);
  g_subprocess_launcher_take_stdin_fd (launcher, input);
  g_subprocess_launcher_set_child_setup (launcher, own_group, GINT_TO_POINTER (getpid ()), NULL);
  /* a timeout or SIGTERM between the spawn and knowing the pid would leave the child alive to commit a message the
   * run then defers: the stop signals wait until the handler can kill it */
  sigemptyset (&stop);
  sigaddset (&stop, SIGALRM);
  sigaddset (&stop, SIGTERM);
  sigprocmask (SIG_BLOCK, &stop, &saved);
  proc = g_subprocess_launcher_spawnv (launcher, (const char *const *) argv->pdata, error);
  id = proc ? g_subprocess_get_identifier (proc) : NULL;
  child_pid = id ? (pid_t) g_ascii_strtoll (id, NULL, 10) : 0;
  sigprocmask (SIG_SETMASK, &saved, NULL);
  g_clear_object (&launcher); /* closes the filter's descriptor of the input: the child holds its own */
  if (proc == NULL)
    return FALSE;
  if (!g_subprocess_communicate (proc, NULL, NULL, NULL, &err_bytes, error)) {
    if (child_pid > 0)
      kill (-child_pid, SIGKILL); /* the run defers: whatever it would still commit is a duplicate at best */
    child_pid = 0;
    g_subprocess_wait (proc, NULL, NULL);
    return FALSE;
  }
  child_pid = 0;
  if (!g_subprocess_get_if_exited (proc) || g_subprocess_get_exit_status (proc) != 0) {
    g_autofree char *text = exit_text (proc, argv->pdata[0], err_bytes);
    g_set_error_literal (error, G_SPAWN_ERROR, G_SPAWN_ERROR_FAILED, text);
    return FALSE;
  }
  return TRUE;
}

/* header_block - the message's header block as it came (for the delivery status notification: never the body) */
static char *
header_block (GBytes *input)
{
  gsize len;
  const char *data = g_bytes_get_data (input, &len);
  gsize end = 0;

  while (end < len) {
    const char *nl = memchr (data + end, '\n', len - end);
    gsize next = nl ? (gsize) (nl - data) + 1 : len;
    if (next - end <= 2 && (data[end] == '\n' || data[end] == '\r'))
      break;
    end = next;
  }
  return g_strndup (data, MIN (end, (gsize) 64 * 1024));
}

/* dsn - RFC 3464 delivery status notification to the sender for the refused recipients */
static GBytes *
dsn (Run *run, GPtrArray *refused)
{
  const char *host = run->config->authserv_id ? run->config->authserv_id : "localhost";
  g_autoptr (GDateTime) now = g_date_time_new_now_local ();
  g_autofree char *date = g_date_time_format (now, "%a, %d %b %Y %H:%M:%S %z");
  g_autofree char *headers = header_block (run->input);
  g_autofree char *boundary = g_strdup_printf ("mimegate-dsn-%" G_GINT64_FORMAT "-%d", g_get_real_time (), getpid ());
  GString *s = g_string_new (NULL);

  g_string_append_printf (s,
                          "From: Mail Delivery System <MAILER-DAEMON@%s>\nTo: <%s>\nSubject: %s\nDate: %s\n"
                          "Message-ID: <%s@%s>\nAuto-Submitted: auto-replied\nMIME-Version: 1.0\n"
                          "Content-Type: multipart/report; report-type=delivery-status; boundary=\"%s\"\n\n"
                          "--%s\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n%s\n\n",
                          host, run->sender, "Undelivered Mail Returned to Sender (encryption required)", date,
                          boundary, host, boundary, boundary,
                          _ ("Your message was not delivered to the recipients below, because the policy for them "
                             "requires encryption and it could not be encrypted for them. It was delivered to the "
                             "other recipients."));
  for (guint i = 0; i < refused->len; i++)
    g_string_append_printf (s, "%s\n", ((Rcpt *) g_ptr_array_index (refused, i))->refusal);
  g_string_append_printf (s, "\n--%s\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; %s\n", boundary,
                          host);
  for (guint i = 0; i < refused->len; i++) {
    const Rcpt *r = g_ptr_array_index (refused, i);
    g_string_append_printf (s,
                            "\nFinal-Recipient: rfc822; %s\nAction: failed\nStatus: 5.7.1\nDiagnostic-Code: smtp; %s\n",
                            r->address, r->refusal);
  }
  g_string_append_printf (s, "\n--%s\nContent-Type: text/rfc822-headers\n\n%s\n--%s--\n", boundary, headers, boundary);
  return g_string_free_to_bytes (s);
}

static char *
signature_text (const MgSignature *sig)
{
  return sig ? g_strdup_printf ("%s%s%s", mg_sig_result_name (sig->result), sig->signer ? " " : "",
                                sig->signer ? sig->signer : "")
             : g_strdup ("-");
}

/* record_init - the fields every record of this run shares */
static void
record_init (Run *run, MgLogRecord *rec, const char *record, GPtrArray *recipients, const char *outcome, int exit_code,
             const char *status, const char *text)
{
  rec->record = record;
  rec->message_id = run->report ? run->report->message_id : NULL;
  rec->queue_id = run->queue_id;
  rec->sender = run->sender;
  rec->recipients = recipients;
  rec->kind = run->report ? mg_kind_name (run->report->kind) : NULL;
  rec->outcome = outcome;
  rec->exit_code = exit_code;
  rec->status_text = status;
  rec->duration_ms = (g_get_monotonic_time () - run->start) / 1000;
  rec->text = text;
}

/* log_group - the record of one group; @outcome "delivered", "written", "deferred" or "refused" */
static void
log_group (Run *run, Group *g, GPtrArray *addrs, const char *outcome, int exit_code, const char *status)
{
  g_autofree char *sig = signature_text (g ? g->result.signature : NULL);
  g_autofree char *text = NULL;
  MgLogRecord rec = { 0 };

  if (g == NULL)
    text = g_strdup_printf (_ ("refused for %u recipient(s): %s"), addrs->len, status ? status : "");
  else if (g->note != NULL)
    text =
      g_strdup_printf (_ ("%s as it came (%s) to %u recipient(s); signature %s"), outcome, g->note, addrs->len, sig);
  else
    text = g_strdup_printf (_ ("%s as %s to %u recipient(s); signature %s"), outcome, g ? mg_form_name (g->form) : "-",
                            addrs->len, sig);
  record_init (run, &rec, "group", addrs, outcome, exit_code, status, text);
  rec.action = g ? g->result.action : "refused";
  rec.form = g ? mg_form_name (g->form) : NULL;
  rec.keys = g ? g->result.keys : NULL;
  rec.signature = g ? g->result.signature : NULL;
  mg_log_write (run->config, &rec);
}

static GPtrArray *
addresses_of (GPtrArray *rcpts)
{
  GPtrArray *out = g_ptr_array_new ();

  for (guint i = 0; i < rcpts->len; i++)
    g_ptr_array_add (out, ((Rcpt *) g_ptr_array_index (rcpts, i))->address);
  return out;
}

/* finish - the message record, the status line and the exit code */
static int
finish (Run *run, const char *outcome, int exit_code, const char *status)
{
  g_autoptr (GPtrArray) all = addresses_of (run->rcpts);
  g_autofree char *text = g_strdup_printf (_ ("message %s: %s"), outcome, status ? status : "");
  MgLogRecord rec = { 0 };

  record_init (run, &rec, "message", all, outcome, exit_code, status, text);
  mg_log_write (run->config, &rec);
  if (status != NULL && exit_code != 0)
    fprintf (stderr, "%s\n", status);
  mg_log_flush_warnings ();
  return exit_code;
}

/* read_input - all of stdin */
static GBytes *
read_input (GError **error)
{
  GByteArray *buf = g_byte_array_new ();
  guint8 chunk[65536];
  size_t n;

  while ((n = fread (chunk, 1, sizeof chunk, stdin)) > 0)
    g_byte_array_append (buf, chunk, (guint) n);
  if (ferror (stdin)) {
    g_set_error (error, G_IO_ERROR, g_io_error_from_errno (errno), _ ("cannot read the message: %s"),
                 g_strerror (errno));
    g_byte_array_unref (buf);
    return NULL;
  }
  return g_byte_array_free_to_bytes (buf);
}

/* open_stores - the key stores the configuration names; the first line of the output must stay the status line, so
 * nothing is printed here (files the X.509 store skipped are the business of `mimegate keys`) */
static gboolean
open_stores (Run *run, GError **error)
{
  const MgConfig *c = run->config;

  if (c->use_gnupg) {
    run->gnupg =
      mg_gnupg_open (c->gnupg_home, c->trust_always ? MG_TRUST_ALWAYS : MG_TRUST_GNUPG, c->min_validity, error);
    if (run->gnupg == NULL)
      return FALSE;
    mg_gnupg_set_max_output (run->gnupg, c->limits.max_decompressed);
    mg_gnupg_set_address_index (run->gnupg, TRUE);
  }
  if (c->x509_store != NULL) {
    run->x509 = mg_x509_store_open (c->x509_store, c->passphrase, error);
    if (run->x509 == NULL)
      return FALSE;
  }
  return TRUE;
}

static void
run_clear (Run *run)
{
  g_clear_pointer (&run->groups, g_ptr_array_unref);
  g_clear_pointer (&run->rcpts, g_ptr_array_unref);
  g_clear_pointer (&run->named, g_hash_table_unref);
  g_clear_pointer (&run->report, mg_report_free);
  g_clear_pointer (&run->input, g_bytes_unref);
  g_clear_pointer (&run->gnupg, mg_gnupg_free);
  g_clear_pointer (&run->x509, mg_x509_store_free);
  g_clear_pointer (&run->config, mg_config_free);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (Run, run_clear)

int
mg_cmd_filter (int argc, char **argv)
{
  g_autofree char *conf = NULL, *sender = NULL, *queue_id = NULL;
  gboolean to_stdout = FALSE;
  GOptionEntry entries[] = {
    { "config", 'c', 0, G_OPTION_ARG_FILENAME, &conf, N_ ("Configuration file"), N_ ("CONF") },
    { "stdout", 0, 0, G_OPTION_ARG_NONE, &to_stdout, N_ ("Write the result to stdout instead of reinjecting it"),
      NULL },
    { "from", 'f', 0, G_OPTION_ARG_STRING, &sender, N_ ("Envelope sender"), N_ ("SENDER") },
    { "queue-id", 0, 0, G_OPTION_ARG_STRING, &queue_id, N_ ("Postfix queue id, for the log"), N_ ("ID") },
    { NULL },
  };
  g_autoptr (GOptionContext) ctx = mg_cli_context ("filter", entries);
  g_auto (Run) run = { NULL };
  g_autoptr (GError) error = NULL;
  g_autoptr (GPtrArray) refused = g_ptr_array_new ();
  g_autofree char *status = NULL, *degraded = NULL;
  guint delivered = 0;
  int code;

  run.start = g_get_monotonic_time ();
  if (!mg_cli_parse ("filter", ctx, &argc, &argv, MG_EXIT_TEMPFAIL, &code))
    return code;
  if (sender == NULL) {
    mg_cli_usage_error ("filter", MG_EXIT_TEMPFAIL, "%s", _ ("-f SENDER is required"));
    return MG_EXIT_TEMPFAIL;
  }
  if (argc < 2) {
    mg_cli_usage_error ("filter", MG_EXIT_TEMPFAIL, "%s", _ ("at least one RECIPIENT is required"));
    return MG_EXIT_TEMPFAIL;
  }
  run.config = mg_config_load (conf, &error);
  if (run.config == NULL) {
    fprintf (stderr, "4.3.5 mimegate filter: %s\n", error->message);
    return MG_EXIT_TEMPFAIL;
  }
  arm_stop_handlers (run.config->timeout);
  run.sender = sender;
  run.queue_id = queue_id;
  run.rcpts = g_ptr_array_new_with_free_func ((GDestroyNotify) rcpt_free);
  run.groups = g_ptr_array_new_with_free_func ((GDestroyNotify) group_free);
  if (!address_ok (sender)) {
    status = g_strdup_printf ("5.1.7 mimegate filter: %s", _ ("the envelope sender is not a valid address"));
    return finish (&run, "refused", MG_EXIT_UNAVAILABLE, status);
  }
  for (int i = 1; i < argc; i++) {
    Rcpt *r = g_new0 (Rcpt, 1);
    r->address = g_strdup (argv[i]);
    g_ptr_array_add (run.rcpts, r);
  }
  run.input = read_input (&error);
  if (run.input == NULL) {
    status = g_strdup_printf ("4.3.0 mimegate filter: %s", error->message);
    return finish (&run, "deferred", MG_EXIT_TEMPFAIL, status);
  }
  run.report = mg_detect_data (g_bytes_get_data (run.input, NULL), g_bytes_get_size (run.input), &run.config->limits);
  read_named (&run);
  if (!open_stores (&run, &error)) {
    /* on-error = pass for every recipient (and none requiring encryption of a clear message): as it came */
    gboolean clear = (run.report->kinds & ENCRYPTED_KINDS) == 0;
    for (guint i = 0; i < run.rcpts->len && degraded == NULL; i++) {
      g_autoptr (MgPolicy) p = mg_policy_for (run.config, ((Rcpt *) g_ptr_array_index (run.rcpts, i))->address);
      if (!p->pass_on_error || (clear && p->encrypt == MG_ENCRYPT_REQUIRED))
        break;
      if (i + 1 == run.rcpts->len)
        degraded = g_strdup (error->message);
    }
    if (degraded == NULL) {
      status = g_strdup_printf ("4.7.0 mimegate filter: %s; %s", error->message, _ ("the message is deferred"));
      g_strdelimit (status, "\r\n", ' ');
      return finish (&run, "deferred", MG_EXIT_TEMPFAIL, status);
    }
    g_clear_error (&error);
    g_clear_pointer (&run.gnupg, mg_gnupg_free);
    g_clear_pointer (&run.x509, mg_x509_store_free);
  }

  /* every recipient's form and group, before anything is converted */
  for (guint i = 0; i < run.rcpts->len; i++) {
    Rcpt *r = g_ptr_array_index (run.rcpts, i);
    g_autofree char *key = mg_keys_address_key (r->address);
    r->policy = mg_policy_for (run.config, r->address);
    if (key == NULL || !address_ok (r->address)) {
      /* shown with every control or non-ASCII byte as '?': it goes into the DSN and the status line */
      g_strcanon (r->address, "!#$%&'*+-./0123456789=?@ABCDEFGHIJKLMNOPQRSTUVWXYZ^_`abcdefghijklmnopqrstuvwxyz{|}~",
                  '?');
      r->refusal = g_strdup_printf ("5.1.3 <%s>: %s", r->address, _ ("not a valid recipient address"));
      g_ptr_array_add (refused, r);
      continue;
    }
    g_free (r->address);
    r->address = g_steal_pointer (&key);
    if (degraded != NULL) {
      r->form = MG_FORM_KEEP;
      r->why = g_strdup (degraded);
      {
        Group *g = group_of (&run, r);
        if (g->note == NULL)
          g->note = g_strdup (degraded);
      }
      continue;
    }
    if (!decide (&run, r, &error)) {
      status = g_strdup_printf ("4.7.0 mimegate filter: %s", error->message);
      g_strdelimit (status, "\r\n", ' ');
      return finish (&run, "deferred", MG_EXIT_TEMPFAIL, status);
    }
    if (r->refusal != NULL)
      g_ptr_array_add (refused, r);
    else
      group_of (&run, r);
  }
  for (guint i = 0; i < run.groups->len; i++)
    if (!convert_group (&run, g_ptr_array_index (run.groups, i), &error)) {
      const char *rfc3463 = error->domain == MG_CONVERT_ERROR ? "4.3.5" : "4.7.0";
      status = g_strdup_printf ("%s mimegate filter: %s", rfc3463, error->message);
      g_strdelimit (status, "\r\n", ' ');
      return finish (&run, "deferred", MG_EXIT_TEMPFAIL, status);
    }
  /* refusals found while converting */
  for (guint i = 0; i < run.rcpts->len; i++) {
    Rcpt *r = g_ptr_array_index (run.rcpts, i);
    if (r->refusal != NULL && !g_ptr_array_find (refused, r, NULL))
      g_ptr_array_add (refused, r);
  }
  for (guint i = 0; i < run.groups->len; i++)
    if (((Group *) g_ptr_array_index (run.groups, i))->rcpts->len == 0)
      g_ptr_array_remove_index (run.groups, i--);
  for (guint i = 0; i < refused->len; i++) {
    g_autoptr (GPtrArray) one = g_ptr_array_new ();
    g_ptr_array_add (one, ((Rcpt *) g_ptr_array_index (refused, i))->address);
    log_group (&run, NULL, one, "refused", MG_EXIT_UNAVAILABLE, ((Rcpt *) g_ptr_array_index (refused, i))->refusal);
  }

  if (to_stdout) {
    Group *g;
    if (run.groups->len > 1) {
      status = g_strdup_printf ("4.3.5 mimegate filter: %s (%u)",
                                _ ("--stdout needs every recipient to get the same result; these need different ones"),
                                run.groups->len);
      return finish (&run, "deferred", MG_EXIT_TEMPFAIL, status);
    }
    if (run.groups->len == 1) {
      g = g_ptr_array_index (run.groups, 0);
      if (fwrite (g_bytes_get_data (g->output, NULL), 1, g_bytes_get_size (g->output), stdout) !=
            g_bytes_get_size (g->output) ||
          fflush (stdout) != 0) {
        status = g_strdup_printf ("4.3.0 mimegate filter: %s", _ ("cannot write the output"));
        return finish (&run, "deferred", MG_EXIT_TEMPFAIL, status);
      }
      {
        g_autoptr (GPtrArray) addrs = addresses_of (g->rcpts);
        log_group (&run, g, addrs, "written", 0, NULL);
      }
      delivered = 1;
    }
    for (guint i = 0; i < refused->len; i++)
      fprintf (stderr, "%s\n", ((Rcpt *) g_ptr_array_index (refused, i))->refusal);
  } else {
    for (guint i = 0; i < run.groups->len; i++) {
      Group *g = g_ptr_array_index (run.groups, i);
      g_autoptr (GPtrArray) addrs = addresses_of (g->rcpts);
      if (!reinject (&run, g, &error)) {
        status = g_strdup_printf ("4.3.0 mimegate filter: %s: %s%s", _ ("reinjection failed"), error->message,
                                  i > 0 ? _ (" (earlier groups were delivered; deferring all: duplicates rather "
                                             "than loss)")
                                        : "");
        g_strdelimit (status, "\r\n", ' ');
        log_group (&run, g, addrs, "deferred", MG_EXIT_TEMPFAIL, status);
        return finish (&run, "deferred", MG_EXIT_TEMPFAIL, status);
      }
      log_group (&run, g, addrs, "delivered", 0, NULL);
      delivered++;
    }
  }

  if (refused->len > 0 && delivered == 0) {
    GString *s = g_string_new (NULL);
    for (guint i = 0; i < refused->len; i++)
      g_string_append_printf (s, "%s%s", i ? "; " : "", ((Rcpt *) g_ptr_array_index (refused, i))->refusal);
    status = g_string_free (s, FALSE);
    return finish (&run, "refused", MG_EXIT_UNAVAILABLE, status);
  }
  if (refused->len > 0 && !to_stdout && sender[0] != '\0') {
    /* some refused, others delivered: the sender hears about the refused ones from us (pipe(8) has one status) */
    g_autoptr (GBytes) report = dsn (&run, refused);
    Group notice = { 0 };
    Rcpt to = { 0 };
    const char *saved = run.sender;
    notice.rcpts = g_ptr_array_new ();
    notice.output = report;
    to.address = (char *) sender;
    g_ptr_array_add (notice.rcpts, &to);
    run.sender = "";
    if (!reinject (&run, &notice, &error))
      g_printerr ("mimegate filter: %s: %s\n", _ ("the delivery status notification could not be sent"),
                  error->message);
    run.sender = saved;
    g_ptr_array_unref (notice.rcpts);
  }
  return finish (&run, refused->len > 0 ? "partly-refused" : "delivered", MG_EXIT_OK,
                 refused->len > 0 ? _ ("2.0.0 delivered; some recipients were refused by policy") : "2.0.0 delivered");
}
