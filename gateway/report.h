/* report.h - a detection report as a readable tree or as JSON. */
#pragma once

#include <stdio.h>

#include "detect.h"
#include "json.h"

G_BEGIN_DECLS

void mg_report_print (FILE *out, const char *name, const MgReport *report);
void mg_report_json (MgJson *j, const char *file, guint index, const MgReport *report);
void mg_report_json_kinds (MgJson *j, guint kinds);

G_END_DECLS
