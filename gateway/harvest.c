/* harvest.c - `harvest = smime`: the certificates of an inbound S/MIME signature that verified as a pass, from a
 * signer whose certificate names the message's one From address, are kept in the X.509 store's harvested/ so that
 * the reply to that partner is encrypted without anyone importing anything (what CipherMail and PGP Universal call
 * collecting certificates). keys/x509.c judges each certificate again before it writes it, and judges it every time
 * the store is read after that, like any certificate of certs/.
 *
 * Harvesting never changes what happens to the message: a failure (harvested/ not writable) is a note in the log
 * record, nothing more. */
#include "config.h"

#include "harvest.h"

#include <glib/gi18n.h>

#include "mg-gmime.h"

/* from_address - (transfer full) (nullable): the address of the message's From header when there is exactly one
 * From header holding exactly one mailbox (RFC 5322 allows several authors; then no one partner is named) */
static char *
from_address (GBytes *input)
{
  g_autoptr (GMimeStream) s = mg_stream_for_bytes (input);
  g_autoptr (GMimeParser) parser = g_mime_parser_new_with_stream (s);
  g_autoptr (GMimeMessage) m = NULL;
  g_autoptr (InternetAddressList) list = NULL;
  GMimeHeaderList *headers;
  const char *value = NULL;
  InternetAddress *ia;

  g_mime_parser_set_persist_stream (parser, FALSE);
  m = g_mime_parser_construct_message (parser, NULL);
  if (m == NULL)
    return NULL;
  headers = g_mime_object_get_header_list (GMIME_OBJECT (m));
  for (int h = 0; h < g_mime_header_list_get_count (headers); h++) {
    GMimeHeader *hdr = g_mime_header_list_get_header_at (headers, h);
    if (g_ascii_strcasecmp (g_mime_header_get_name (hdr), "From") != 0)
      continue;
    if (value != NULL)
      return NULL;
    value = g_mime_header_get_value (hdr);
  }
  list = value ? internet_address_list_parse (NULL, value) : NULL;
  if (list == NULL || internet_address_list_length (list) != 1)
    return NULL;
  ia = internet_address_list_get_address (list, 0);
  if (!INTERNET_ADDRESS_IS_MAILBOX (ia))
    return NULL;
  return g_strdup (internet_address_mailbox_get_addr (INTERNET_ADDRESS_MAILBOX (ia)));
}

/**
 * mg_harvest_message - keeps the certificates of @sig, the verdict on @input's S/MIME signature, when harvesting is
 * on and @sig is a pass whose signer's certificate names @input's From address.
 * @notes: (element-type utf8): receives what was kept, or why nothing could be, for the log record
 *
 * Returns: whether @sig was one to harvest from (an S/MIME pass with its certificates), whatever came of it: a
 * message is harvested from once, not once per recipient group.
 */
gboolean
mg_harvest_message (const MgConfig *config, MgX509Store *store, GBytes *input, const MgSignature *sig, GPtrArray *notes)
{
  g_autofree char *from = NULL;
  g_autoptr (GPtrArray) stored = NULL;
  g_autoptr (GError) error = NULL;

  if (!config->harvest_smime || store == NULL || sig == NULL || sig->result != MG_SIG_PASS || sig->certs == NULL ||
      sig->certs->len == 0)
    return FALSE;
  from = from_address (input);
  if (from == NULL) {
    g_ptr_array_add (notes, g_strdup (_ ("no certificate harvested: the message has not exactly one From address")));
    return TRUE;
  }
  stored = g_ptr_array_new_with_free_func (g_free);
  if (!mg_x509_store_harvest (store, sig->certs, from, stored, &error)) {
    g_ptr_array_add (notes, g_strdup_printf (_ ("no certificate harvested: %s"), error->message));
    return TRUE;
  }
  for (guint i = 0; i < stored->len; i++)
    g_ptr_array_add (notes, g_strdup_printf (_ ("harvested X.509 certificate %s for %s"),
                                             (const char *) g_ptr_array_index (stored, i), from));
  return TRUE;
}
