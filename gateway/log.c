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

#include "report.h"

static GMutex lock;      /* serve writes records from many threads */
static GString *pending; /* warnings about records that could not be written */

static void
member_list (JsonBuilder *b, const char *key, GPtrArray *list)
{
  json_builder_set_member_name (b, key);
  json_builder_begin_array (b);
  for (guint i = 0; list != NULL && i < list->len; i++)
    mg_report_json_string (b, g_ptr_array_index (list, i));
  json_builder_end_array (b);
}

/* mg_log_format - the record as one line of JSON (no newline) */
char *
mg_log_format (const MgLogRecord *rec)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();

  json_builder_begin_object (b);
  mg_report_json_member (b, "record", rec->record);
  mg_report_json_member (b, "message_id", rec->message_id);
  mg_report_json_member (b, "queue_id", rec->queue_id);
  mg_report_json_member (b, "sender", rec->sender);
  member_list (b, "recipients", rec->recipients);
  mg_report_json_member (b, "kind", rec->kind);
  mg_report_json_member (b, "action", rec->action);
  mg_report_json_member (b, "form", rec->form);
  member_list (b, "keys", rec->keys);
  member_list (b, "notes", rec->notes);
  json_builder_set_member_name (b, "signature");
  if (rec->signature != NULL) {
    json_builder_begin_object (b);
    mg_report_json_member (b, "result", mg_sig_result_name (rec->signature->result));
    mg_report_json_member (b, "signer", rec->signature->signer);
    mg_report_json_member (b, "id", rec->signature->id);
    mg_report_json_member (b, "reason", rec->signature->reason);
    json_builder_end_object (b);
  } else
    json_builder_add_null_value (b);
  mg_report_json_member (b, "outcome", rec->outcome);
  json_builder_set_member_name (b, "status");
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "exit");
  json_builder_add_int_value (b, (gint64) rec->exit_code);
  mg_report_json_member (b, "text", rec->status_text);
  json_builder_end_object (b);
  json_builder_set_member_name (b, "duration_ms");
  json_builder_add_int_value (b, (gint64) MAX (rec->duration_ms, 0));
  mg_report_json_member (b, "text", rec->text);
  json_builder_end_object (b);
  return mg_report_json_text (b);
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
