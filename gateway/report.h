/* report.h - a detection report as a readable tree or as JSON. */
#pragma once

#include <stdio.h>

#include "detect.h"
#include <json-glib/json-glib.h>

G_BEGIN_DECLS

void mg_report_print (FILE *out, const char *name, const MgReport *report);
void mg_report_json (JsonBuilder *b, const char *file, guint index, const MgReport *report);
void mg_report_json_kinds (JsonBuilder *b, guint kinds);
void mg_report_json_string (JsonBuilder *b, const char *value);
void mg_report_json_member (JsonBuilder *b, const char *key, const char *value);
char *mg_report_json_text (JsonBuilder *b);

G_END_DECLS
