/* log.c - the filter's records: one JSON object per line, to syslog (facility mail) or appended to a file.
 *
 * Field names are stable (admins' tools parse them): record, message_id, queue_id, sender, recipients, kind, action,
 * form, keys, notes, signature, outcome, status {exit, text}, duration_ms, text. Only "text" and "notes" are
 * translated. A record that
 * cannot be written is reported on stderr after the status line; it never changes what happens to the mail. */
#include "config.h"

#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <fcntl.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include <glib/gi18n.h>

#include "json.h"

static GMutex lock;      /* serve writes records from many threads */
static GString *pending; /* warnings about records that could not be written */

static void
member_nullable (MgJson *j, const char *key, const char *value)
{
  mg_json_key (j, key);
  if (value != NULL)
    mg_json_string (j, value);
  else
    mg_json_null (j);
}

static void
member_list (MgJson *j, const char *key, GPtrArray *list)
{
  mg_json_key (j, key);
  mg_json_begin_array (j);
  for (guint i = 0; list != NULL && i < list->len; i++)
    mg_json_string (j, g_ptr_array_index (list, i));
  mg_json_end_array (j);
}

/* mg_log_format - the record as one line of JSON (no newline) */
char *
mg_log_format (const MgLogRecord *rec)
{
  GString *out = g_string_new (NULL);
  MgJson j;

  mg_json_init (&j, out);
  mg_json_begin_object (&j);
  mg_json_member_string (&j, "record", rec->record);
  member_nullable (&j, "message_id", rec->message_id);
  member_nullable (&j, "queue_id", rec->queue_id);
  member_nullable (&j, "sender", rec->sender);
  member_list (&j, "recipients", rec->recipients);
  member_nullable (&j, "kind", rec->kind);
  member_nullable (&j, "action", rec->action);
  member_nullable (&j, "form", rec->form);
  member_list (&j, "keys", rec->keys);
  member_list (&j, "notes", rec->notes);
  mg_json_key (&j, "signature");
  if (rec->signature != NULL) {
    mg_json_begin_object (&j);
    mg_json_member_string (&j, "result", mg_sig_result_name (rec->signature->result));
    member_nullable (&j, "signer", rec->signature->signer);
    member_nullable (&j, "id", rec->signature->id);
    member_nullable (&j, "reason", rec->signature->reason);
    mg_json_end_object (&j);
  } else
    mg_json_null (&j);
  mg_json_member_string (&j, "outcome", rec->outcome);
  mg_json_key (&j, "status");
  mg_json_begin_object (&j);
  mg_json_member_uint (&j, "exit", (guint64) rec->exit_code);
  member_nullable (&j, "text", rec->status_text);
  mg_json_end_object (&j);
  mg_json_member_uint (&j, "duration_ms", (guint64) MAX (rec->duration_ms, 0));
  member_nullable (&j, "text", rec->text);
  mg_json_end_object (&j);
  return g_string_free (out, FALSE);
}

/* mg_log_write - the record to the configured target: syslog (mail facility), a JSON-lines file, or nowhere */
void
mg_log_write (const MgConfig *config, const MgLogRecord *rec)
{
  g_autofree char *line = NULL;

  if (config->log == MG_LOG_NONE)
    return;
  line = mg_log_format (rec);
  if (config->log == MG_LOG_SYSLOG) {
    static gsize opened = 0;
    if (g_once_init_enter (&opened)) {
      openlog ("mimegate", LOG_PID, LOG_MAIL);
      g_once_init_leave (&opened, 1);
    }
    syslog (g_strcmp0 (rec->outcome, "deferred") == 0 ? LOG_WARNING : LOG_INFO, "%s", line);
    return;
  }
  {
    /* one write of one whole line with O_APPEND: concurrent filter processes never interleave within a record */
    g_autofree char *with_nl = g_strconcat (line, "\n", NULL);
    gsize len = strlen (with_nl);
    int fd = open (config->log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    ssize_t n = fd >= 0 ? write (fd, with_nl, len) : -1;
    int saved = errno;
    if (fd >= 0)
      close (fd);
    if (n != (ssize_t) len) {
      g_mutex_lock (&lock);
      if (pending == NULL)
        pending = g_string_new (NULL);
      g_string_append_printf (pending, "mimegate filter: %s: %s\n", config->log_path,
                              n < 0 ? g_strerror (saved) : _ ("the log record was written only in part"));
      g_mutex_unlock (&lock);
    }
  }
}

/* mg_log_flush_warnings - what could not be logged, on stderr: called after the status line, which must come first
 * (pipe(8) reads the RFC 3463 code at the start of the output) */
void
mg_log_flush_warnings (void)
{
  g_mutex_lock (&lock);
  if (pending != NULL) {
    fputs (pending->str, stderr);
    g_string_free (pending, TRUE);
    pending = NULL;
  }
  g_mutex_unlock (&lock);
}
