/* engine.h - the per-message engine both faces share (`filter` on a pipe, `serve` on a socket): every recipient's
 * form from policy, the detected kind and the keys; the groups; every group converted; then each group handed to
 * the face's reinjection; per recipient an outcome, and the log records. It knows no stdin, no socket and no exit
 * status (DESIGN.md "Layout"). */
#pragma once

#include <glib.h>

#include "generation.h"

G_BEGIN_DECLS

/**
 * MgRcptState: what became of one recipient.
 * @MG_RCPT_PENDING: converted, not (yet) reinjected
 * @MG_RCPT_DELIVERED: its group was reinjected
 * @MG_RCPT_DEFERRED: a transient fault (4.x.x): the sender's MTA keeps the message and tries again
 * @MG_RCPT_REFUSED: refused by policy or as an invalid address (5.x.x): never sent, least of all in clear
 */
typedef enum { MG_RCPT_PENDING, MG_RCPT_DELIVERED, MG_RCPT_DEFERRED, MG_RCPT_REFUSED } MgRcptState;

/**
 * MgRcptOutcome: one envelope recipient, in the order it was added.
 * @address: as given (control and non-ASCII bytes shown as '?' when the address was refused as invalid)
 * @status: (nullable): for DEFERRED and REFUSED, the RFC 3463 text ("5.7.1 <a@b>: …"); protocol text, never
 *   translated by the caller again
 * @group: for PENDING and DELIVERED, the 0-based index of the group that carries it
 */
typedef struct {
  char *address;
  MgRcptState state;
  char *status;
  guint group;
} MgRcptOutcome;

/**
 * MgReinjectFunc: the face's way of handing one group to the next MTA: @message for @recipients with envelope
 * sender @sender ("" for the null sender). Returns %FALSE with @error when it was not accepted; the engine treats
 * every such failure as transient, with the RFC 3463 code in *@code (preset to "4.3.0"; a static string).
 */
typedef gboolean (*MgReinjectFunc) (const char *sender, const char *const *recipients, GBytes *message,
                                    gpointer user_data, const char **code, GError **error);

typedef struct _MgJob MgJob;

MgJob *mg_job_new (MgGeneration *gen, const char *face, const char *sender, const char *queue_id);
void mg_job_set_utf8 (MgJob *job, gboolean utf8);
void mg_job_add_recipient (MgJob *job, const char *address);
gboolean mg_job_prepare (MgJob *job, GBytes *input);
guint mg_job_n_groups (MgJob *job);
GBytes *mg_job_group_output (MgJob *job, guint group);
gboolean mg_job_deliver (MgJob *job, MgReinjectFunc reinject, gpointer user_data, gboolean stop_at_failure);
void mg_job_log_group (MgJob *job, guint group, const char *outcome, int exit_code, const char *status);
guint mg_job_n_recipients (MgJob *job);
const MgRcptOutcome *mg_job_recipient (MgJob *job, guint i);
const char *mg_job_status (MgJob *job);
GBytes *mg_job_refusal_report (MgJob *job);
void mg_job_finish (MgJob *job, const char *outcome, int exit_code, const char *status);
void mg_job_free (MgJob *job);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (MgJob, mg_job_free)

G_END_DECLS
