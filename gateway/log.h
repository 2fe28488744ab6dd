/* log.h - one record per message and per recipient group (DESIGN.md "Outcomes, exit codes, logging"). */
#pragma once

#include <glib.h>

#include "keys.h"
#include "settings.h"

G_BEGIN_DECLS

/**
 * MgLogRecord: the stable fields of one record. Strings may be %NULL (written as null). Never a body or key material.
 * @record: "message" or "group"
 * @text: a sentence for people (translated)
 */
typedef struct {
  const char *record;
  const char *message_id;
  const char *queue_id;
  const char *sender;
  GPtrArray *recipients; /* (element-type utf8) */
  const char *kind;
  const char *action;
  const char *form;
  GPtrArray *keys;  /* (element-type utf8) (nullable) */
  GPtrArray *notes; /* (element-type utf8) (nullable): how it was done, for admins (translated) */
  const MgSignature *signature;
  const char *outcome;
  int exit_code;
  const char *status_text;
  gint64 duration_ms;
  const char *text;
} MgLogRecord;

char *mg_log_format (const MgLogRecord *rec);
void mg_log_write (const MgConfig *config, const MgLogRecord *rec);
void mg_log_flush_warnings (void);

G_END_DECLS
