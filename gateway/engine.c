/* engine.c - one message through the gateway (DESIGN.md "Policy", "Outcomes"), whatever face it came through.
 *
 * mg_job_prepare(): detect the message; decide each recipient's form from policy, the detected kind and the keys;
 * group recipients that get the same result (a blind copy that is encrypted always gets its own group, so that no
 * other recipient sees its key id); convert every group. Nothing is emitted before all of that is done. Then
 * mg_job_deliver() hands each group to the face's reinjection, and each recipient ends delivered, deferred (4.x.x)
 * or refused (5.x.x) with its status text. A permanent conversion failure keeps the message as it came (refusing
 * the recipients who require encryption of a clear message: never clear text for them); a transient one defers,
 * or keeps it for recipients whose policy says on-error = pass.
 *
 * One log record per group and one per message, with stable field names; never a body or key material. */
#include "config.h"

#include "engine.h"

#include <string.h>
#include <unistd.h>

#include <gio/gio.h>
#include <glib/gi18n.h>

#include "convert.h"
#include "harvest.h"
#include "log.h"
#include "mg-gmime.h"
#include "policy.h"

/* the log's status.exit of a group record: the sysexits value the pipe would give it (stable field, both faces) */
#define LOG_EXIT_REFUSED 69  /* EX_UNAVAILABLE */
#define LOG_EXIT_DEFERRED 75 /* EX_TEMPFAIL */

#define ENCRYPTED_KINDS                                                                                                \
  (MG_KIND_BIT (MG_KIND_PGP_MIME_ENCRYPTED) | MG_KIND_BIT (MG_KIND_PGP_MIME_MANGLED) |                                 \
   MG_KIND_BIT (MG_KIND_PGP_INLINE_ENCRYPTED) | MG_KIND_BIT (MG_KIND_PGP_ATTACHMENT_ENCRYPTED) |                       \
   MG_KIND_BIT (MG_KIND_SMIME_ENVELOPED))

/* Rcpt - one envelope recipient and what it gets */
typedef struct {
  MgRcptOutcome out; /* the address, and what became of it */
  MgPolicy *policy;
  MgForm form;
  char *why;   /* (nullable): why it gets this form, for the log */
  char *fault; /* (nullable): the transient store fault it gets the message as it came for (on-error = pass) */
  gboolean blind;
} Rcpt;

static void
rcpt_free (Rcpt *r)
{
  g_free (r->out.address);
  mg_policy_free (r->policy);
  g_free (r->out.status);
  g_free (r->why);
  g_free (r->fault);
  g_free (r);
}

/* refuse - @r is refused with @status (transfer full), the RFC 3463 text */
static void
refuse (Rcpt *r, char *status)
{
  g_free (r->out.status);
  r->out.status = status;
  r->out.state = MG_RCPT_REFUSED;
}

/* MgJob - one message */
struct _MgJob {
  MgGeneration *gen;
  const MgConfig *config; /* the generation's */
  char *face;             /* "filter", "serve": the status lines say "mimegate FACE: …" */
  char *sender;
  char *queue_id;
  GBytes *input;
  MgReport *report;
  MgGnupg *gnupg; /* (nullable): taken from the generation for this message */
  MgX509Store *x509;
  GPtrArray *rcpts;  /* (element-type Rcpt) */
  GPtrArray *groups; /* (element-type Group) */
  GHashTable *named; /* address keys in To, Cc, Resent-To, Resent-Cc */
  char *status;      /* (nullable): why the whole message was deferred or refused */
  gboolean utf8;     /* addresses may be UTF-8 (an SMTPUTF8 transaction) */
  gint64 start;
};

/* Group - recipients that get the same bytes */
typedef struct {
  MgForm form;
  MgSignMethod sign;
  char *sign_as;
  gboolean gcm;
  MgHeaderProtection hp;
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

static gboolean
encrypting (MgForm form)
{
  return form == MG_FORM_PGP_MIME || form == MG_FORM_PGP_INLINE || form == MG_FORM_SMIME;
}

/* address_ok - an envelope address we may put on a command line and in headers: printable ASCII, no space; with
 * @utf8 (an SMTPUTF8 transaction, RFC 6531) also UTF-8 beyond ASCII, never a control character */
static gboolean
address_ok (const char *a, gboolean utf8)
{
  if (utf8 && g_utf8_validate (a, -1, NULL)) {
    for (const char *c = a; *c; c = g_utf8_next_char (c)) {
      gunichar u = g_utf8_get_char (c);
      if (u <= 0x20 || u == 0x7f || (u >= 0x80 && (g_unichar_iscntrl (u) || g_unichar_isspace (u))))
        return FALSE;
    }
    return TRUE;
  }
  for (const char *c = a; *c; c++)
    if ((guchar) *c <= 0x20 || (guchar) *c >= 0x7f)
      return FALSE;
  return TRUE;
}

/* read_named - the addresses the message's own headers name (who may see whom) */
static void
read_named (MgJob *job)
{
  g_autoptr (GMimeStream) s = mg_stream_for_bytes (job->input);
  g_autoptr (GMimeParser) parser = g_mime_parser_new_with_stream (s);
  g_autoptr (GMimeMessage) m = NULL;
  const char *fields[] = { "To", "Cc", "Resent-To", "Resent-Cc" };

  job->named = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
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
            g_hash_table_add (job->named, key);
        }
      }
    }
  }
}

/* has_key - whether @address has a usable key for @form; a store error is transient and set in @error */
static gboolean
has_key (MgJob *job, const char *address, MgForm form, GError **error)
{
  g_autoptr (GPtrArray) refused = g_ptr_array_new_with_free_func ((GDestroyNotify) mg_keys_refusal_free);

  if (form == MG_FORM_SMIME)
    return job->x509 != NULL && mg_x509_store_lookup_checked (job->x509, address, refused, error) != NULL;
  if (form == MG_FORM_PGP_MIME || form == MG_FORM_PGP_INLINE) {
    g_autoptr (MgPgpKey) k = job->gnupg ? mg_gnupg_lookup (job->gnupg, address, refused, error) : NULL;
    return k != NULL;
  }
  return TRUE;
}

/* lookup_fault - a key lookup for @r failed transiently (@local, taken; a directory that cannot answer, a GnuPG home
 * that cannot be listed): with on-error = pass @r gets the message as it came and the fault is noted for the log, as
 * when a store cannot be read at all; never for a required recipient of a clear message. Returns: FALSE with @error
 * (the message is deferred) otherwise */
static gboolean
lookup_fault (MgJob *job, Rcpt *r, GError *local, GError **error)
{
  gboolean clear = (job->report->kinds & ENCRYPTED_KINDS) == 0;

  if (!r->policy->pass_on_error || (clear && r->policy->encrypt == MG_ENCRYPT_REQUIRED)) {
    g_propagate_error (error, local);
    return FALSE;
  }
  r->form = MG_FORM_KEEP;
  g_free (r->why);
  r->why = g_strdup (local->message);
  r->fault = g_strdup (local->message);
  g_error_free (local);
  return TRUE;
}

/* decide - a recipient's form (DESIGN.md "How one recipient's form is decided"); FALSE with a transient @error */
static gboolean
decide (MgJob *job, Rcpt *r, GError **error)
{
  const MgPolicy *p = r->policy;
  gboolean encrypted = (job->report->kinds & ENCRYPTED_KINDS) != 0;
  gboolean want_auto = p->form_auto || (p->encrypt == MG_ENCRYPT_REQUIRED && !encrypting (p->form));
  GError *local = NULL;

  r->form = MG_FORM_KEEP;
  if (want_auto) {
    gboolean found = FALSE;
    if (p->encrypt != MG_ENCRYPT_NEVER) {
      if (has_key (job, r->out.address, MG_FORM_PGP_MIME, &local)) {
        r->form = p->inline_only ? MG_FORM_PGP_INLINE : MG_FORM_PGP_MIME;
        found = TRUE;
      } else if (local == NULL && has_key (job, r->out.address, MG_FORM_SMIME, &local)) {
        r->form = MG_FORM_SMIME;
        found = TRUE;
      }
      if (local != NULL)
        return lookup_fault (job, r, local, error);
    }
    if (!found) {
      if (p->encrypt == MG_ENCRYPT_REQUIRED) {
        refuse (r, g_strdup_printf ("5.7.1 <%s>: %s", r->out.address,
                                    _ ("encryption is required for this recipient and no usable key is known")));
        return TRUE;
      }
      r->form = encrypted && p->decrypt ? MG_FORM_PLAIN : MG_FORM_KEEP;
      r->why = g_strdup (encrypted && p->decrypt ? "no key: decrypted for delivery" : "no key");
    }
  } else {
    r->form = p->form;
    if (encrypting (r->form)) {
      gboolean ok = has_key (job, r->out.address, r->form, &local);
      if (local != NULL)
        return lookup_fault (job, r, local, error);
      if (!ok) {
        if (p->encrypt == MG_ENCRYPT_REQUIRED) {
          refuse (r, g_strdup_printf ("5.7.1 <%s>: %s %s", r->out.address,
                                      _ ("encryption is required and there is no usable key for form"),
                                      mg_form_name (r->form)));
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
  {
    g_autofree char *key = mg_keys_address_key (r->out.address); /* named holds address keys: compare like with like */
    r->blind = encrypting (r->form) && (key == NULL || !g_hash_table_contains (job->named, key));
  }
  return TRUE;
}

/* group_of - the group @r joins: same form, signing, cipher and header protection; an encrypted blind copy always alone
 */
static Group *
group_of (MgJob *job, Rcpt *r)
{
  MgSignMethod sign = r->form == MG_FORM_KEEP ? MG_SIGN_NONE : r->policy->sign;
  const char *sign_as = sign == MG_SIGN_NONE ? NULL : (r->policy->sign_as ? r->policy->sign_as : job->sender);
  gboolean gcm = r->form == MG_FORM_SMIME && r->policy->gcm;
  /* header protection changes only what is encrypted or signed: other groups need not split on it */
  MgHeaderProtection hp = encrypting (r->form) || sign != MG_SIGN_NONE ? r->policy->header_protection : MG_HP_OFF;
  Group *g;

  for (guint i = 0; !r->blind && i < job->groups->len; i++) {
    g = g_ptr_array_index (job->groups, i);
    if (g->form == r->form && g->sign == sign && g_strcmp0 (g->sign_as, sign_as) == 0 && g->gcm == gcm && g->hp == hp &&
        g_strcmp0 (g->note, r->fault) == 0 && !((Rcpt *) g_ptr_array_index (g->rcpts, 0))->blind) {
      g_ptr_array_add (g->rcpts, r);
      return g;
    }
  }
  g = g_new0 (Group, 1);
  g->form = r->form;
  g->sign = sign;
  g->sign_as = g_strdup (sign_as);
  g->gcm = gcm;
  g->hp = hp;
  g->note = g_strdup (r->fault); /* a recipient kept for a store fault is logged with it, apart from the others */
  g->rcpts = g_ptr_array_new ();
  g_ptr_array_add (g->rcpts, r);
  mg_convert_result_init (&g->result);
  g_ptr_array_add (job->groups, g);
  return g;
}

/* all_pass - every recipient of @g says on-error = pass, and none of them requires encryption of a clear message */
static gboolean
all_pass (MgJob *job, Group *g)
{
  gboolean clear = (job->report->kinds & ENCRYPTED_KINDS) == 0;

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
convert_group (MgJob *job, Group *g, GError **error)
{
  g_autoptr (GPtrArray) addrs = g_ptr_array_new ();
  MgConvertKeys keys = { 0 };
  g_autoptr (GError) local = NULL;
  g_autoptr (GPtrArray) notes = NULL;
  gboolean clear = (job->report->kinds & ENCRYPTED_KINDS) == 0;

  for (guint i = 0; i < g->rcpts->len; i++)
    g_ptr_array_add (addrs, ((Rcpt *) g_ptr_array_index (g->rcpts, i))->out.address);
  g_ptr_array_add (addrs, NULL);
  keys.gnupg = job->gnupg;
  keys.x509 = job->x509;
  keys.limits = &job->config->limits;
  keys.gcm = g->gcm;
  keys.authserv_id = mg_authserv_id_valid (job->config->authserv_id) ? job->config->authserv_id : "localhost";
  keys.sign = g->sign;
  keys.sign_as = g->sign_as;
  keys.header_protection = g->hp;
  g->output = mg_convert (job->input, g->form, (const char *const *) addrs->pdata, &keys, &g->result, &local);
  if (g->output != NULL && g->form == MG_FORM_PLAIN && g_strcmp0 (g->result.action, "kept") == 0 &&
      g->sign == MG_SIGN_NONE) {
    /* nothing was decrypted: deliver the original bytes rather than GMime's rewrite of them */
    g_clear_pointer (&g->output, g_bytes_unref);
    mg_convert_result_clear (&g->result);
    mg_convert_result_init (&g->result);
    g->form = MG_FORM_KEEP;
    g->output = mg_convert (job->input, MG_FORM_KEEP, (const char *const *) addrs->pdata, &keys, &g->result, NULL);
  }
  if (g->output != NULL)
    return TRUE;
  if (mg_keys_error_is_transient (local) || g_error_matches (local, MG_CONVERT_ERROR, MG_CONVERT_ERROR_NO_SIGNER) ||
      g_error_matches (local, MG_CONVERT_ERROR, MG_CONVERT_ERROR_INTERNAL)) {
    if (!all_pass (job, g)) {
      g_propagate_error (error, g_steal_pointer (&local));
      return FALSE;
    }
  } else if (clear) {
    /* a clear message that cannot be encrypted: refuse whoever requires encryption, keep it for the others */
    for (guint i = 0; i < g->rcpts->len; i++) {
      Rcpt *r = g_ptr_array_index (g->rcpts, i);
      if (r->policy->encrypt == MG_ENCRYPT_REQUIRED && encrypting (g->form)) {
        refuse (r, g_strdup_printf ("5.7.1 <%s>: %s: %s", r->out.address, _ ("the message cannot be encrypted"),
                                    local->message));
        g_ptr_array_remove_index (g->rcpts, i--);
      }
    }
  }
  g_free (g->note);
  g->note = g_strdup (local->message);
  notes = g_steal_pointer (&g->result.notes); /* what was tried still tells the admin something */
  mg_convert_result_clear (&g->result);
  mg_convert_result_init (&g->result);
  g_ptr_array_extend_and_steal (g->result.notes, g_steal_pointer (&notes));
  g->form = MG_FORM_KEEP;
  keys.sign = MG_SIGN_NONE;
  g->output = mg_convert (job->input, MG_FORM_KEEP, (const char *const *) addrs->pdata, &keys, &g->result, NULL);
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
  return len > 0 ? g_strndup (data, MIN (end, (gsize) 64 * 1024)) : g_strdup ("");
}

/* dsn - RFC 3464 delivery status notification to the sender for the refused recipients */
static GBytes *
dsn (MgJob *job, GPtrArray *refused)
{
  const char *host = job->config->authserv_id ? job->config->authserv_id : "localhost";
  g_autoptr (GDateTime) now = g_date_time_new_now_local ();
  g_autofree char *date = g_date_time_format (now, "%a, %d %b %Y %H:%M:%S %z");
  g_autofree char *headers = header_block (job->input);
  g_autofree char *boundary = g_strdup_printf ("mimegate-dsn-%" G_GINT64_FORMAT "-%d", g_get_real_time (), getpid ());
  GString *s = g_string_new (NULL);

  g_string_append_printf (s,
                          "From: Mail Delivery System <MAILER-DAEMON@%s>\nTo: <%s>\nSubject: %s\nDate: %s\n"
                          "Message-ID: <%s@%s>\nAuto-Submitted: auto-replied\nMIME-Version: 1.0\n"
                          "Content-Type: multipart/report; report-type=delivery-status; boundary=\"%s\"\n\n"
                          "--%s\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n%s\n\n",
                          host, job->sender, "Undelivered Mail Returned to Sender (encryption required)", date,
                          boundary, host, boundary, boundary,
                          _ ("Your message was not delivered to the recipients below, because the policy for them "
                             "requires encryption and it could not be encrypted for them. It was delivered to the "
                             "other recipients."));
  for (guint i = 0; i < refused->len; i++)
    g_string_append_printf (s, "%s\n", ((Rcpt *) g_ptr_array_index (refused, i))->out.status);
  g_string_append_printf (s, "\n--%s\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; %s\n", boundary,
                          host);
  for (guint i = 0; i < refused->len; i++) {
    const Rcpt *r = g_ptr_array_index (refused, i);
    g_string_append_printf (s,
                            "\nFinal-Recipient: rfc822; %s\nAction: failed\nStatus: 5.7.1\nDiagnostic-Code: smtp; %s\n",
                            r->out.address, r->out.status);
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
record_init (MgJob *job, MgLogRecord *rec, const char *record, GPtrArray *recipients, const char *outcome,
             int exit_code, const char *status, const char *text)
{
  rec->record = record;
  rec->message_id = job->report ? job->report->message_id : NULL;
  rec->queue_id = job->queue_id;
  rec->sender = job->sender;
  rec->recipients = recipients;
  rec->kind = job->report ? mg_kind_name (job->report->kind) : NULL;
  rec->outcome = outcome;
  rec->exit_code = exit_code;
  rec->status_text = status;
  rec->duration_ms = (g_get_monotonic_time () - job->start) / 1000;
  rec->text = text;
}

/* log_group - the record of one group; @outcome "delivered", "written", "deferred" or "refused" */
static void
log_group (MgJob *job, Group *g, GPtrArray *addrs, const char *outcome, int exit_code, const char *status)
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
  record_init (job, &rec, "group", addrs, outcome, exit_code, status, text);
  rec.action = g ? g->result.action : "refused";
  rec.form = g ? mg_form_name (g->form) : NULL;
  rec.keys = g ? g->result.keys : NULL;
  rec.notes = g ? g->result.notes : NULL;
  rec.signature = g ? g->result.signature : NULL;
  mg_log_write (job->config, &rec);
}

static GPtrArray *
addresses_of (GPtrArray *rcpts)
{
  GPtrArray *out = g_ptr_array_new ();

  for (guint i = 0; i < rcpts->len; i++)
    g_ptr_array_add (out, ((Rcpt *) g_ptr_array_index (rcpts, i))->out.address);
  return out;
}

/**
 * mg_job_new - a message for @gen (a reference is taken) from envelope sender @sender ("" for the null sender).
 * @face: the command name the status lines carry ("filter", "serve")
 * @queue_id: (nullable): the MTA's queue id, for the log
 *
 * Returns: (transfer full)
 */
MgJob *
mg_job_new (MgGeneration *gen, const char *face, const char *sender, const char *queue_id)
{
  MgJob *job = g_new0 (MgJob, 1);

  job->gen = mg_generation_ref (gen);
  job->config = mg_generation_config (gen);
  job->face = g_strdup (face);
  job->sender = g_strdup (sender);
  job->queue_id = g_strdup (queue_id);
  job->rcpts = g_ptr_array_new_with_free_func ((GDestroyNotify) rcpt_free);
  job->groups = g_ptr_array_new_with_free_func ((GDestroyNotify) group_free);
  job->start = g_get_monotonic_time ();
  return job;
}

/* mg_job_set_utf8 - the envelope's addresses may be UTF-8 beyond ASCII (RFC 6531 SMTPUTF8), before mg_job_prepare;
 * without it an address with a byte beyond ASCII is refused as invalid (5.1.3, the sender 5.1.7) */
void
mg_job_set_utf8 (MgJob *job, gboolean utf8)
{
  job->utf8 = utf8;
}

/* mg_job_add_recipient - one envelope recipient, in envelope order (before mg_job_prepare) */
void
mg_job_add_recipient (MgJob *job, const char *address)
{
  Rcpt *r = g_new0 (Rcpt, 1);

  r->out.address = g_strdup (address);
  r->out.state = MG_RCPT_PENDING;
  g_ptr_array_add (job->rcpts, r);
}

/* defer_all - the whole message is deferred with @status (transfer full) */
static gboolean
defer_all (MgJob *job, char *status)
{
  g_strdelimit (status, "\r\n", ' ');
  for (guint i = 0; i < job->rcpts->len; i++) {
    Rcpt *r = g_ptr_array_index (job->rcpts, i);
    if (r->out.state == MG_RCPT_REFUSED)
      continue;
    g_free (r->out.status);
    r->out.status = g_strdup (status);
    r->out.state = MG_RCPT_DEFERRED;
  }
  g_free (job->status);
  job->status = status;
  return FALSE;
}

/* degraded_reason - when a key store cannot be used and every recipient says on-error = pass (none requiring
 * encryption of a clear message): the store's error, and the message goes as it came; else %NULL */
static char *
degraded_reason (MgJob *job, const GError *store_error)
{
  gboolean clear = (job->report->kinds & ENCRYPTED_KINDS) == 0;

  for (guint i = 0; i < job->rcpts->len; i++) {
    g_autoptr (MgPolicy) p = mg_policy_for (job->config, ((Rcpt *) g_ptr_array_index (job->rcpts, i))->out.address);
    if (!p->pass_on_error || (clear && p->encrypt == MG_ENCRYPT_REQUIRED))
      return NULL;
  }
  return job->rcpts->len > 0 ? g_strdup (store_error->message) : NULL;
}

/**
 * mg_job_prepare - everything before delivery: detection, every recipient's form and group, every group's bytes.
 * @input: the message as it came (a reference is taken)
 *
 * Returns: %TRUE when there is something to deliver or every recipient is refused (see each recipient's state);
 * %FALSE when the whole message is deferred (mg_job_status() says why) or its sender is refused
 */
gboolean
mg_job_prepare (MgJob *job, GBytes *input)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *degraded = NULL;
  const GError *store_error = mg_generation_store_error (job->gen);

  job->input = g_bytes_ref (input);
  job->report = mg_detect_data (g_bytes_get_data (input, NULL), g_bytes_get_size (input), &job->config->limits);
  if (!address_ok (job->sender, job->utf8)) {
    job->status =
      g_strdup_printf ("5.1.7 mimegate %s: %s", job->face, _ ("the envelope sender is not a valid address"));
    for (guint i = 0; i < job->rcpts->len; i++)
      refuse (g_ptr_array_index (job->rcpts, i), g_strdup (job->status));
    return FALSE;
  }
  read_named (job);
  if (store_error == NULL) {
    job->gnupg = mg_generation_take_gnupg (job->gen, &error);
    job->x509 = mg_generation_x509 (job->gen);
    store_error = error;
  }
  if (store_error != NULL) {
    degraded = degraded_reason (job, store_error);
    if (degraded == NULL)
      return defer_all (job, g_strdup_printf ("4.7.0 mimegate %s: %s; %s", job->face, store_error->message,
                                              _ ("the message is deferred")));
    g_clear_error (&error);
    mg_generation_give_gnupg (job->gen, g_steal_pointer (&job->gnupg));
    job->x509 = NULL;
  }

  /* every recipient's form and group, before anything is converted */
  for (guint i = 0; i < job->rcpts->len; i++) {
    Rcpt *r = g_ptr_array_index (job->rcpts, i);
    g_autofree char *key = mg_keys_address_key (r->out.address);
    r->policy = mg_policy_for (job->config, r->out.address);
    if (key == NULL || !address_ok (r->out.address, job->utf8)) {
      /* shown with every control or non-ASCII byte as '?': it goes into the DSN and the status line */
      g_strcanon (r->out.address, "!#$%&'*+-./0123456789=?@ABCDEFGHIJKLMNOPQRSTUVWXYZ^_`abcdefghijklmnopqrstuvwxyz{|}~",
                  '?');
      refuse (r, g_strdup_printf ("5.1.3 <%s>: %s", r->out.address, _ ("not a valid recipient address")));
      continue;
    }
    /* the address stays as written: it is reinjected and reported as the MTA gave it (a local part's case may
     * matter to the final server); every matcher folds it with mg_keys_address_key itself */
    if (degraded != NULL) {
      r->form = MG_FORM_KEEP;
      r->why = g_strdup (degraded);
      r->fault = g_strdup (degraded);
      group_of (job, r);
      continue;
    }
    if (!decide (job, r, &error))
      return defer_all (job, g_strdup_printf ("4.7.0 mimegate %s: %s", job->face, error->message));
    if (r->out.state != MG_RCPT_REFUSED)
      group_of (job, r);
  }
  for (guint i = 0; i < job->groups->len; i++)
    if (!convert_group (job, g_ptr_array_index (job->groups, i), &error)) {
      const char *rfc3463 = g_error_matches (error, MG_CONVERT_ERROR, MG_CONVERT_ERROR_INTERNAL) ? "4.3.0"
                            : error->domain == MG_CONVERT_ERROR                                  ? "4.3.5"
                                                                                                 : "4.7.0";
      return defer_all (job, g_strdup_printf ("%s mimegate %s: %s", rfc3463, job->face, error->message));
    }
  /* groups emptied by refusals found while converting are gone; the others' recipients know their group */
  for (guint i = 0; i < job->groups->len; i++)
    if (((Group *) g_ptr_array_index (job->groups, i))->rcpts->len == 0)
      g_ptr_array_remove_index (job->groups, i--);
  for (guint i = 0; i < job->groups->len; i++) {
    Group *g = g_ptr_array_index (job->groups, i);
    for (guint k = 0; k < g->rcpts->len; k++)
      ((Rcpt *) g_ptr_array_index (g->rcpts, k))->out.group = i;
  }
  /* harvest = smime: the partner's certificates from a verified signature (never changes the delivery) */
  for (guint i = 0; i < job->groups->len; i++) {
    Group *g = g_ptr_array_index (job->groups, i);
    if (mg_harvest_message (job->config, job->x509, job->input, g->result.signature, g->result.notes))
      break;
  }
  for (guint i = 0; i < job->rcpts->len; i++) {
    Rcpt *r = g_ptr_array_index (job->rcpts, i);
    g_autoptr (GPtrArray) one = g_ptr_array_new ();
    if (r->out.state != MG_RCPT_REFUSED)
      continue;
    g_ptr_array_add (one, r->out.address);
    log_group (job, NULL, one, "refused", LOG_EXIT_REFUSED, r->out.status);
  }
  return TRUE;
}

/* mg_job_n_groups - how many groups mg_job_prepare() made (recipients that get the same bytes) */
guint
mg_job_n_groups (MgJob *job)
{
  return job->groups->len;
}

/* mg_job_group_output - Returns: (transfer none): group @group's complete bytes */
GBytes *
mg_job_group_output (MgJob *job, guint group)
{
  g_return_val_if_fail (group < job->groups->len, NULL);
  return ((Group *) g_ptr_array_index (job->groups, group))->output;
}

/* mg_job_log_group - the record of group @group; @outcome "delivered", "written" or "deferred" */
void
mg_job_log_group (MgJob *job, guint group, const char *outcome, int exit_code, const char *status)
{
  Group *g = g_ptr_array_index (job->groups, group);
  g_autoptr (GPtrArray) addrs = addresses_of (g->rcpts);

  log_group (job, g, addrs, outcome, exit_code, status);
}

/**
 * mg_job_deliver - each group through @reinject, in order. A group that fails is deferred (4.3.0, the reason in the
 * status). With @stop_at_failure (the pipe, which has one exit status for everyone), the groups after it are not
 * tried and mg_job_status() says that the earlier ones were delivered; without it (LMTP), every group is tried and
 * each recipient has its own outcome.
 *
 * Returns: %TRUE when every group was delivered
 */
gboolean
mg_job_deliver (MgJob *job, MgReinjectFunc reinject, gpointer user_data, gboolean stop_at_failure)
{
  gboolean all = TRUE;

  for (guint i = 0; i < job->groups->len; i++) {
    Group *g = g_ptr_array_index (job->groups, i);
    g_autoptr (GPtrArray) addrs = addresses_of (g->rcpts);
    g_autoptr (GError) error = NULL;
    g_autofree char *status = NULL;
    const char *code = "4.3.0";

    g_ptr_array_add (addrs, NULL);
    if (reinject (job->sender, (const char *const *) addrs->pdata, g->output, user_data, &code, &error)) {
      g_ptr_array_set_size (addrs, addrs->len - 1);
      for (guint k = 0; k < g->rcpts->len; k++)
        ((Rcpt *) g_ptr_array_index (g->rcpts, k))->out.state = MG_RCPT_DELIVERED;
      log_group (job, g, addrs, "delivered", 0, NULL);
      continue;
    }
    g_ptr_array_set_size (addrs, addrs->len - 1);
    all = FALSE;
    status = g_strdup_printf ("%s mimegate %s: %s: %s%s", code, job->face, _ ("reinjection failed"), error->message,
                              stop_at_failure && i > 0 ? _ (" (earlier groups were delivered; deferring all: "
                                                            "duplicates rather than loss)")
                                                       : "");
    g_strdelimit (status, "\r\n", ' ');
    for (guint k = 0; k < g->rcpts->len; k++) {
      Rcpt *r = g_ptr_array_index (g->rcpts, k);
      g_free (r->out.status);
      r->out.status = g_strdup (status);
      r->out.state = MG_RCPT_DEFERRED;
    }
    log_group (job, g, addrs, "deferred", LOG_EXIT_DEFERRED, status);
    if (stop_at_failure) {
      g_free (job->status);
      job->status = g_steal_pointer (&status);
      return FALSE;
    }
  }
  return all;
}

/* mg_job_n_recipients - how many recipients were added */
guint
mg_job_n_recipients (MgJob *job)
{
  return job->rcpts->len;
}

/* mg_job_recipient - Returns: (transfer none): what became of recipient @i (envelope order) */
const MgRcptOutcome *
mg_job_recipient (MgJob *job, guint i)
{
  g_return_val_if_fail (i < job->rcpts->len, NULL);
  return &((Rcpt *) g_ptr_array_index (job->rcpts, i))->out;
}

/* mg_job_status - Returns: (transfer none) (nullable): why the whole message was deferred or refused */
const char *
mg_job_status (MgJob *job)
{
  return job->status;
}

/**
 * mg_job_refusal_report - the RFC 3464 delivery status notification for the recipients that were refused, for the
 * envelope sender (a face whose protocol has one status for every recipient sends it: the pipe, SMTP).
 *
 * Returns: (transfer full) (nullable): %NULL when nobody was refused or the sender is the null sender
 */
GBytes *
mg_job_refusal_report (MgJob *job)
{
  g_autoptr (GPtrArray) refused = g_ptr_array_new ();

  for (guint i = 0; i < job->rcpts->len; i++) {
    Rcpt *r = g_ptr_array_index (job->rcpts, i);
    if (r->out.state == MG_RCPT_REFUSED)
      g_ptr_array_add (refused, r);
  }
  if (refused->len == 0 || job->sender[0] == '\0')
    return NULL;
  return dsn (job, refused);
}

/* mg_job_finish - the message's own log record; @outcome "delivered", "partly-refused", "refused", "deferred" */
void
mg_job_finish (MgJob *job, const char *outcome, int exit_code, const char *status)
{
  g_autoptr (GPtrArray) all = addresses_of (job->rcpts);
  g_autofree char *text = g_strdup_printf (_ ("message %s: %s"), outcome, status ? status : "");
  MgLogRecord rec = { 0 };

  record_init (job, &rec, "message", all, outcome, exit_code, status, text);
  mg_log_write (job->config, &rec);
}

/* mg_job_free - also gives the GnuPG store back to the generation, and drops the reference to it */
void
mg_job_free (MgJob *job)
{
  g_clear_pointer (&job->groups, g_ptr_array_unref);
  g_clear_pointer (&job->rcpts, g_ptr_array_unref);
  g_clear_pointer (&job->named, g_hash_table_unref);
  g_clear_pointer (&job->report, mg_report_free);
  g_clear_pointer (&job->input, g_bytes_unref);
  mg_generation_give_gnupg (job->gen, g_steal_pointer (&job->gnupg));
  mg_generation_unref (job->gen);
  g_free (job->face);
  g_free (job->sender);
  g_free (job->queue_id);
  g_free (job->status);
  g_free (job);
}
