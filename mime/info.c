/* info.c - the key-less crypto facts attached to each detected part. */
#include "config.h"

#include "info.h"

#include <string.h>

/* mg_crypto_id_new - a key reference; both strings are copied */
MgCryptoId *
mg_crypto_id_new (const char *id, const char *algorithm)
{
  MgCryptoId *cid = g_new0 (MgCryptoId, 1);

  cid->id = g_strdup (id);
  cid->algorithm = g_strdup (algorithm);
  return cid;
}

/* mg_crypto_id_free - frees @cid and its strings */
void
mg_crypto_id_free (MgCryptoId *cid)
{
  if (cid == NULL)
    return;
  g_free (cid->id);
  g_free (cid->algorithm);
  g_free (cid->digest);
  g_free (cid->name);
  g_free (cid);
}

/* mg_crypto_info_init - an empty info; release with mg_crypto_info_clear() */
void
mg_crypto_info_init (MgCryptoInfo *info)
{
  memset (info, 0, sizeof *info);
  info->recipients = g_ptr_array_new_with_free_func ((GDestroyNotify) mg_crypto_id_free);
  info->signers = g_ptr_array_new_with_free_func ((GDestroyNotify) mg_crypto_id_free);
  info->keys = g_ptr_array_new_with_free_func ((GDestroyNotify) mg_crypto_id_free);
}

/* mg_crypto_info_clear - frees what @info owns and leaves it empty and initialised */
void
mg_crypto_info_clear (MgCryptoInfo *info)
{
  g_clear_pointer (&info->recipients, g_ptr_array_unref);
  g_clear_pointer (&info->signers, g_ptr_array_unref);
  g_clear_pointer (&info->keys, g_ptr_array_unref);
  g_clear_pointer (&info->cipher, g_free);
  g_clear_pointer (&info->integrity, g_free);
  g_clear_pointer (&info->compression, g_free);
  g_clear_pointer (&info->content, g_free);
  info->passphrases = 0;
}

/* mg_crypto_info_is_empty - TRUE when nothing at all is known */
gboolean
mg_crypto_info_is_empty (const MgCryptoInfo *info)
{
  return (info->recipients == NULL || info->recipients->len == 0) &&
         (info->signers == NULL || info->signers->len == 0) && (info->keys == NULL || info->keys->len == 0) &&
         info->cipher == NULL && info->integrity == NULL && info->compression == NULL && info->content == NULL &&
         info->passphrases == 0;
}
