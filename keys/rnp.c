/* rnp.c - OpenPGP encryption (RFC 4880 / RFC 9580 SEIPD v1 with MDC) in-process with librnp, the OpenPGP engine
 * Thunderbird ships, so that no gpg process runs on the encryption path.
 *
 * librnp never chooses a key here. keys/gnupg.c's judge chooses a key and its encryption subkey; the public key
 * material comes from the GnuPG home (a GPGME export) and is imported once per store; the subkey is located by its
 * fingerprint and handed to rnp_op_encrypt_add_recipient() as a subkey handle. librnp's find_suitable_key() returns
 * a handle that is itself usable for encryption unchanged (it looks at subkeys only when the handle it is given
 * cannot encrypt, and a subkey has none), so the packet names exactly that subkey; mg_rnp_import() checks that librnp
 * considers the subkey valid and able to encrypt, so that a key librnp rejects (an algorithm it lacks, signatures it
 * holds insecure) is known before any message is encrypted with it.
 *
 * What the recipients' clients read: SEIPD v1 with MDC (no AEAD: GnuPG 2.2 cannot read OCB/EAX packets), AES-256
 * unless every recipient key's preferences (the preferred-symmetric subpacket of its self-signatures) leave it out,
 * ZLIB below 1 MiB and no compression above (mail attachments that big are compressed formats already, base64-encoded
 * in the entity: compressing 27 MB of that costs librnp about 1 s and saves only the base64 overhead). The GBytes
 * form reads the caller's memory as it is and writes into one growing buffer; the stream form
 * (mg_rnp_encrypt_stream) reads and writes GMimeStreams through librnp's callback I/O, so neither side is ever
 * whole in memory. */
#include "config.h"

#include "rnp.h"
#include "dl.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <glib/gi18n.h>
#include <gmime/gmime.h>
#include <rnp/rnp.h>
#include <rnp/rnp_err.h>

#define COMPRESS_MAX (1024 * 1024)

/* librnp is loaded on first use, not linked: it brings Botan and libstdc++, whose relocations alone cost every
 * mimegate process about 3 ms before main() (measured: `mimegate --version` 3.3 ms CPU without, 6.7 ms with). A run
 * that never encrypts OpenPGP in-process (pass-through, S/MIME, openpgp-encrypt = gpg) must not pay for it. The
 * header gives the prototypes; the table holds what dlsym() found. */
#define MG_RNP_FUNCS(X)                                                                                                \
  X (rnp_buffer_destroy)                                                                                               \
  X (rnp_ffi_create)                                                                                                   \
  X (rnp_ffi_destroy)                                                                                                  \
  X (rnp_ffi_set_log_fd)                                                                                               \
  X (rnp_import_keys)                                                                                                  \
  X (rnp_input_destroy)                                                                                                \
  X (rnp_input_from_callback)                                                                                          \
  X (rnp_input_from_memory)                                                                                            \
  X (rnp_key_allows_usage)                                                                                             \
  X (rnp_key_get_alg)                                                                                                  \
  X (rnp_key_get_primary_fprint)                                                                                       \
  X (rnp_key_handle_destroy)                                                                                           \
  X (rnp_key_is_primary)                                                                                               \
  X (rnp_key_is_valid)                                                                                                 \
  X (rnp_key_remove)                                                                                                   \
  X (rnp_locate_key)                                                                                                   \
  X (rnp_op_encrypt_add_recipient)                                                                                     \
  X (rnp_op_encrypt_create)                                                                                            \
  X (rnp_op_encrypt_destroy)                                                                                           \
  X (rnp_op_encrypt_execute)                                                                                           \
  X (rnp_op_encrypt_set_aead)                                                                                          \
  X (rnp_op_encrypt_set_armor)                                                                                         \
  X (rnp_op_encrypt_set_cipher)                                                                                        \
  X (rnp_op_encrypt_set_compression)                                                                                   \
  X (rnp_op_encrypt_set_file_mtime)                                                                                    \
  X (rnp_output_destroy)                                                                                               \
  X (rnp_output_to_callback)                                                                                           \
  X (rnp_result_to_string)

#define MG_RNP_NAME(f) #f,
static const char *const api_names[] = { MG_RNP_FUNCS (MG_RNP_NAME) NULL };
#undef MG_RNP_NAME

/* api - the functions, named as the library names them; filled through slot by mg_dl_load() */
static union {
  struct {
#define MG_RNP_POINTER(f) __typeof__ (f) *f;
    MG_RNP_FUNCS (MG_RNP_POINTER)
#undef MG_RNP_POINTER
  };
  void *slot[G_N_ELEMENTS (api_names) - 1];
} api;
G_STATIC_ASSERT (sizeof (api) == sizeof (api.slot)); /* each slot is one function pointer */

/* load - librnp's functions into api, once per process; NULL, or why they cannot be had */
static const char *
load (void)
{
  static MgDlOnce state;

  return mg_dl_load (&state, MG_RNP_SONAME, api_names, api.slot);
}

struct _MgRnp {
  rnp_ffi_t ffi;
  GHashTable *keys; /* primary fingerprint (upper case) → Prefs: the keys imported so far */
};

/* Prefs - one imported key's preferred symmetric algorithms (RFC 9580 5.2.3.14), from its self-signatures */
typedef struct {
  gboolean any;   /* a self-signature states preferences */
  guint8 set[32]; /* bitmap of every algorithm any self-signature lists */
  GByteArray *order;
} Prefs;

static void
prefs_free (Prefs *p)
{
  g_byte_array_unref (p->order);
  g_free (p);
}

static const struct {
  guint8 id;
  const char *name;
} ciphers[] = {
  { 9, "AES256" },       { 8, "AES192" },       { 7, "AES128" },   { 13, "CAMELLIA256" },
  { 12, "CAMELLIA192" }, { 11, "CAMELLIA128" }, { 10, "TWOFISH" },
};

/* Debian's librnp is built with its console log always on: validating a key it rejects writes "[function() file:line]
 * reason" to stderr, whatever rnp_ffi_set_log_fd() says. The pipe filter's stderr ends up in bounces, so the calls
 * that validate keys run with fd 2 on a memory file, and what librnp wrote becomes the reason the admin reads. fd 2
 * is the process's, so one lock serialises these sections (an import, once per key per store); anything else written
 * meanwhile is passed on to the real stderr. */
static GMutex stderr_lock;

typedef struct {
  int saved; /* the real stderr, or -1 when it could not be diverted */
  int mem;
} Quiet;

static void
quiet_begin (Quiet *q)
{
  g_mutex_lock (&stderr_lock);
  fflush (stderr);
  q->mem = memfd_create ("mimegate-librnp-log", MFD_CLOEXEC);
  q->saved = q->mem >= 0 ? fcntl (2, F_DUPFD_CLOEXEC, 3) : -1;
  if (q->saved >= 0 && dup2 (q->mem, 2) < 0) {
    close (q->saved);
    q->saved = -1;
  }
}

/* quiet_end - stderr back; returns what librnp said (its own "[where]" prefixes dropped), or NULL */
static char *
quiet_end (Quiet *q)
{
  g_autoptr (GString) said = g_string_new (NULL);
  char buf[4096];
  ssize_t n;

  fflush (stderr);
  if (q->saved >= 0) {
    dup2 (q->saved, 2);
    close (q->saved);
  }
  if (q->mem >= 0 && lseek (q->mem, 0, SEEK_SET) == 0)
    while ((n = read (q->mem, buf, sizeof buf)) > 0 && said->len < 64 * 1024)
      g_string_append_len (said, buf, n);
  if (q->mem >= 0)
    close (q->mem);
  g_mutex_unlock (&stderr_lock);
  {
    g_auto (GStrv) lines = g_strsplit (said->str, "\n", -1);
    g_autoptr (GString) reasons = g_string_new (NULL);
    for (guint i = 0; lines[i] != NULL; i++) {
      const char *end = lines[i][0] == '[' ? strstr (lines[i], "] ") : NULL;
      if (lines[i][0] == '\0')
        continue;
      if (end == NULL) { /* not librnp's: someone else's output */
        fprintf (stderr, "%s\n", lines[i]);
        continue;
      }
      if (strstr (reasons->str, end + 2) == NULL)
        g_string_append_printf (reasons, "%s%s", reasons->len ? "; " : "", end + 2);
    }
    return reasons->len ? g_utf8_make_valid (reasons->str, -1) : NULL;
  }
}

/* set_error - @res (an rnp_result_t) into GError, once, here */
static void
set_error (GError **error, MgKeysError code, const char *what, rnp_result_t res)
{
  g_set_error (error, MG_KEYS_ERROR, code, "%s: %s", what, api.rnp_result_to_string (res));
}

/**
 * mg_rnp_new - an empty librnp context (no keyring on disk; keys come through mg_rnp_import()).
 *
 * librnp's log goes nowhere: the pipe filter's stderr ends up in bounces.
 *
 * Returns: (transfer full): the context, or %NULL with a transient %MG_KEYS_ERROR_STORE.
 */
MgRnp *
mg_rnp_new (GError **error)
{
  const char *unloadable = load ();
  rnp_ffi_t ffi = NULL;
  rnp_result_t res;
  int null_fd;
  MgRnp *rnp;

  if (unloadable != NULL) {
    g_set_error_literal (error, MG_KEYS_ERROR, MG_KEYS_ERROR_STORE, unloadable);
    return NULL;
  }
  res = api.rnp_ffi_create (&ffi, "GPG", "GPG");
  if (res != RNP_SUCCESS) {
    set_error (error, MG_KEYS_ERROR_STORE, _ ("librnp cannot start"), res);
    return NULL;
  }
  null_fd = open ("/dev/null", O_WRONLY | O_CLOEXEC);
  if (null_fd >= 0 && api.rnp_ffi_set_log_fd (ffi, null_fd) != RNP_SUCCESS)
    close (null_fd); /* librnp owns it once set */
  rnp = g_new0 (MgRnp, 1);
  rnp->ffi = ffi;
  rnp->keys = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, (GDestroyNotify) prefs_free);
  return rnp;
}

void
mg_rnp_free (MgRnp *rnp)
{
  if (rnp == NULL)
    return;
  api.rnp_ffi_destroy (rnp->ffi);
  g_hash_table_unref (rnp->keys);
  g_free (rnp);
}

/* mg_rnp_holds - whether the key with primary fingerprint @fingerprint was imported */
gboolean
mg_rnp_holds (MgRnp *rnp, const char *fingerprint)
{
  g_autofree char *up = g_ascii_strup (fingerprint, -1);

  return g_hash_table_contains (rnp->keys, up);
}

/* packet_next - the next OpenPGP packet (RFC 9580 4.2) of @data from *@at: its tag and body; FALSE at the end or on
 * anything this walk does not expect in a key export (partial or indeterminate lengths, truncation) */
static gboolean
packet_next (const guint8 *data, gsize len, gsize *at, guint *tag, const guint8 **body, gsize *body_len)
{
  gsize i = *at, n, hdr;
  guint8 b;

  if (i >= len || !((b = data[i]) & 0x80))
    return FALSE;
  if (b & 0x40) {
    *tag = b & 0x3f;
    if (i + 1 >= len)
      return FALSE;
    if (data[i + 1] < 192)
      n = data[i + 1], hdr = 2;
    else if (data[i + 1] < 224 && i + 2 < len)
      n = ((gsize) (data[i + 1] - 192) << 8) + data[i + 2] + 192, hdr = 3;
    else if (data[i + 1] == 255 && i + 5 < len)
      n = (gsize) data[i + 2] << 24 | (gsize) data[i + 3] << 16 | (gsize) data[i + 4] << 8 | data[i + 5], hdr = 6;
    else
      return FALSE;
  } else {
    static const gsize sizes[] = { 1, 2, 4 };
    guint lt = b & 3;
    *tag = (b >> 2) & 0xf;
    if (lt == 3 || i + sizes[lt] >= len)
      return FALSE;
    n = 0;
    for (gsize k = 0; k < sizes[lt]; k++)
      n = n << 8 | data[i + 1 + k];
    hdr = 1 + sizes[lt];
  }
  if (n > len - i - hdr)
    return FALSE;
  *body = data + i + hdr;
  *body_len = n;
  *at = i + hdr + n;
  return TRUE;
}

/* read_prefs - the preferred symmetric algorithms that the v4 self-signatures (certifications 0x10-0x13, direct key
 * 0x1f) of the exported key @data state; an export-minimal block holds self-signatures only */
static Prefs *
read_prefs (const guint8 *data, gsize len)
{
  Prefs *p = g_new0 (Prefs, 1);
  gsize at = 0, body_len;
  const guint8 *body;
  guint tag;

  p->order = g_byte_array_new ();
  while (packet_next (data, len, &at, &tag, &body, &body_len)) {
    gsize hashed, i;
    if (tag != 2 || body_len < 6 || body[0] != 4 || !((body[1] >= 0x10 && body[1] <= 0x13) || body[1] == 0x1f))
      continue;
    hashed = (gsize) body[4] << 8 | body[5];
    if (hashed > body_len - 6)
      continue;
    for (i = 0; i < hashed;) {
      const guint8 *sp = body + 6;
      gsize n, hdr;
      if (sp[i] < 192)
        n = sp[i], hdr = 1;
      else if (sp[i] < 255 && i + 1 < hashed)
        n = ((gsize) (sp[i] - 192) << 8) + sp[i + 1] + 192, hdr = 2;
      else if (sp[i] == 255 && i + 4 < hashed)
        n = (gsize) sp[i + 1] << 24 | (gsize) sp[i + 2] << 16 | (gsize) sp[i + 3] << 8 | sp[i + 4], hdr = 5;
      else
        break;
      if (n == 0 || n > hashed - i - hdr)
        break;
      if ((sp[i + hdr] & 0x7f) == 11) {
        p->any = TRUE;
        for (gsize k = 1; k < n; k++) {
          guint8 a = sp[i + hdr + k];
          if (!(p->set[a / 8] & (1u << (a % 8))))
            g_byte_array_append (p->order, &a, 1);
          p->set[a / 8] |= (guint8) (1u << (a % 8));
        }
      }
      i += hdr + n;
    }
  }
  return p;
}

static gboolean
accepts (const Prefs *p, guint8 id)
{
  return !p->any || (p->set[id / 8] & (1u << (id % 8))) != 0;
}

/* locate - the key with @fpr in @rnp's context, or NULL */
static rnp_key_handle_t
locate (MgRnp *rnp, const char *fpr)
{
  rnp_key_handle_t key = NULL;

  if (api.rnp_locate_key (rnp->ffi, "fingerprint", fpr, &key) != RNP_SUCCESS)
    return NULL;
  return key;
}

/* subkey_usable - why librnp cannot encrypt to the subkey @fpr of the primary key @primary_fpr, or NULL */
static char *
subkey_unusable (MgRnp *rnp, const char *primary_fpr, const char *fpr)
{
  rnp_key_handle_t primary = locate (rnp, primary_fpr), sub = locate (rnp, fpr);
  char *why = NULL, *alg = NULL, *owner = NULL;
  bool is_primary = true, valid = false, encrypt = false;

  if (primary == NULL)
    why = g_strdup (_ ("librnp did not import the primary key"));
  else if (sub == NULL)
    why = g_strdup (_ ("librnp did not import the encryption subkey"));
  else if (api.rnp_key_is_primary (sub, &is_primary) != RNP_SUCCESS || is_primary ||
           api.rnp_key_get_primary_fprint (sub, &owner) != RNP_SUCCESS || g_ascii_strcasecmp (owner, primary_fpr) != 0)
    why = g_strdup (_ ("librnp does not see the encryption subkey as a subkey of this key"));
  else if (api.rnp_key_is_valid (primary, &valid) != RNP_SUCCESS || !valid)
    why = g_strdup (_ ("librnp holds the key invalid (an algorithm or self-signature it does not accept)"));
  else if (api.rnp_key_is_valid (sub, &valid) != RNP_SUCCESS || !valid)
    why = g_strdup (_ ("librnp holds the encryption subkey invalid (an algorithm or binding signature it does not "
                       "accept)"));
  else if (api.rnp_key_allows_usage (sub, "encrypt", &encrypt) != RNP_SUCCESS || !encrypt)
    why = g_strdup (_ ("librnp does not see the subkey as able to encrypt"));
  else if (api.rnp_key_get_alg (sub, &alg) != RNP_SUCCESS)
    why = g_strdup (_ ("librnp does not know the subkey's algorithm"));
  api.rnp_buffer_destroy (alg);
  api.rnp_buffer_destroy (owner);
  api.rnp_key_handle_destroy (primary);
  api.rnp_key_handle_destroy (sub);
  return why;
}

/**
 * mg_rnp_import - imports the public key block @keyblock (a GnuPG export of the key with primary fingerprint
 * @fingerprint) and checks that librnp can encrypt to its subkey @subkey_fpr.
 *
 * Returns: %TRUE, or %FALSE with a permanent %MG_KEYS_ERROR_CRYPTO saying why librnp cannot use the key (the caller
 * encrypts with gpg instead). A key that fails is not kept.
 */
gboolean
mg_rnp_import (MgRnp *rnp, const char *fingerprint, const char *subkey_fpr, GBytes *keyblock, GError **error)
{
  gsize len = 0;
  const guint8 *data = g_bytes_get_data (keyblock, &len);
  rnp_input_t in = NULL;
  rnp_result_t res;
  g_autofree char *why = NULL, *said = NULL;
  Quiet quiet;

  if (len == 0) {
    g_set_error (error, MG_KEYS_ERROR, MG_KEYS_ERROR_CRYPTO, _ ("the GnuPG home exported nothing for key %s"),
                 fingerprint);
    return FALSE;
  }
  quiet_begin (&quiet);
  res = api.rnp_input_from_memory (&in, data, len, false);
  if (res == RNP_SUCCESS)
    res = api.rnp_import_keys (rnp->ffi, in, RNP_LOAD_SAVE_PUBLIC_KEYS, NULL);
  api.rnp_input_destroy (in);
  if (res == RNP_SUCCESS)
    why = subkey_unusable (rnp, fingerprint, subkey_fpr);
  said = quiet_end (&quiet);
  if (res != RNP_SUCCESS) {
    g_set_error (error, MG_KEYS_ERROR, MG_KEYS_ERROR_CRYPTO, "%s: %s%s%s", _ ("librnp cannot import the key"),
                 api.rnp_result_to_string (res), said ? ": " : "", said ? said : "");
    return FALSE;
  }
  if (why != NULL) {
    rnp_key_handle_t key = locate (rnp, fingerprint);
    if (key != NULL)
      api.rnp_key_remove (key, RNP_KEY_REMOVE_PUBLIC | RNP_KEY_REMOVE_SUBKEYS);
    api.rnp_key_handle_destroy (key);
    g_set_error (error, MG_KEYS_ERROR, MG_KEYS_ERROR_CRYPTO, "%s%s%s", why, said ? ": " : "", said ? said : "");
    return FALSE;
  }
  g_hash_table_insert (rnp->keys, g_ascii_strup (fingerprint, -1), read_prefs (data, len));
  return TRUE;
}

/* choose_cipher - AES-256 unless every key's preferences leave it out; then the first algorithm, in the first key's
 * order, that every key accepts; NULL when there is none */
static const char *
choose_cipher (GPtrArray *prefs)
{
  const Prefs *first = g_ptr_array_index (prefs, 0);
  gboolean all_exclude = TRUE;

  for (guint i = 0; i < prefs->len; i++)
    if (accepts (g_ptr_array_index (prefs, i), 9))
      all_exclude = FALSE;
  if (!all_exclude)
    return "AES256";
  for (guint k = 0; k <= first->order->len; k++)
    for (gsize c = 0; c < G_N_ELEMENTS (ciphers); c++) {
      gboolean ok = k == first->order->len || ciphers[c].id == first->order->data[k];
      for (guint i = 0; ok && i < prefs->len; i++)
        ok = accepts (g_ptr_array_index (prefs, i), ciphers[c].id);
      if (ok)
        return ciphers[c].name;
    }
  return NULL;
}

/* Out - where librnp's output goes (a growing buffer, or the caller's stream); armor's CRLF line ends become LF as
 * they are written (what gpg writes, and what the MIME builders expect of text). For a stream, each piece librnp
 * hands over is written with one call (@scratch holds it without its CRs): a write per armor line would be a system
 * call per 64 bytes. */
typedef struct {
  GByteArray *buf;     /* (nullable): the GBytes form's buffer */
  GMimeStream *stream; /* (nullable): the stream form's output */
  GByteArray *scratch; /* (nullable): the stream form's piece being written */
  gboolean armor;
  gboolean failed; /* the stream refused a write */
} Out;

static bool
out_write_cb (void *ctx, const void *data, size_t len)
{
  Out *o = ctx;
  const guint8 *p = data;
  GByteArray *to = o->stream != NULL ? o->scratch : o->buf;

  if (o->stream != NULL && !o->armor) {
    if (len > 0 && g_mime_stream_write (o->stream, (const char *) p, len) != (gssize) len)
      o->failed = TRUE;
    return !o->failed;
  }
  if (o->stream != NULL)
    g_byte_array_set_size (to, 0);
  if (!o->armor) {
    g_byte_array_append (to, p, (guint) len);
    return true;
  }
  for (size_t i = 0; i < len;) {
    const guint8 *cr = memchr (p + i, '\r', len - i);
    size_t end = cr ? (size_t) (cr - p) : len;
    g_byte_array_append (to, p + i, (guint) (end - i));
    i = end + (cr ? 1 : 0);
  }
  if (o->stream != NULL && to->len > 0 && g_mime_stream_write (o->stream, (const char *) to->data, to->len) != to->len)
    o->failed = TRUE;
  return !o->failed;
}

/* encrypt_io - the encryption both forms share: @in to @out for the subkeys, compressed only when @compress */
static gboolean
encrypt_io (MgRnp *rnp, rnp_input_t in, Out *out, gboolean compress, const char *const *fingerprints,
            const char *const *subkey_fprs, const char **cipher, GError **error)
{
  g_autoptr (GPtrArray) prefs = g_ptr_array_new ();
  rnp_output_t dst = NULL;
  rnp_op_encrypt_t op = NULL;
  rnp_result_t res;
  const char *algo;

  for (guint i = 0; fingerprints[i] != NULL; i++) {
    g_autofree char *up = g_ascii_strup (fingerprints[i], -1);
    Prefs *p = g_hash_table_lookup (rnp->keys, up);
    if (p == NULL || subkey_fprs[i] == NULL) {
      g_set_error (error, MG_KEYS_ERROR, MG_KEYS_ERROR_CRYPTO, _ ("key %s was not imported into librnp"),
                   fingerprints[i]);
      return FALSE;
    }
    g_ptr_array_add (prefs, p);
  }
  if (prefs->len == 0) {
    g_set_error_literal (error, MG_KEYS_ERROR, MG_KEYS_ERROR_CRYPTO, _ ("no recipient to encrypt to"));
    return FALSE;
  }
  algo = choose_cipher (prefs);
  if (algo == NULL) {
    g_set_error_literal (error, MG_KEYS_ERROR, MG_KEYS_ERROR_CRYPTO,
                         _ ("the recipients' keys share no symmetric cipher librnp offers"));
    return FALSE;
  }
  res = api.rnp_output_to_callback (&dst, out_write_cb, NULL, out);
  if (res == RNP_SUCCESS)
    res = api.rnp_op_encrypt_create (&op, rnp->ffi, in, dst);
  for (guint i = 0; res == RNP_SUCCESS && subkey_fprs[i] != NULL; i++) {
    rnp_key_handle_t sub = locate (rnp, subkey_fprs[i]);
    res = sub ? api.rnp_op_encrypt_add_recipient (op, sub) : RNP_ERROR_KEY_NOT_FOUND;
    api.rnp_key_handle_destroy (sub);
    if (res != RNP_SUCCESS) {
      g_autofree char *what = g_strdup_printf (_ ("librnp cannot encrypt to subkey %s"), subkey_fprs[i]);
      set_error (error, MG_KEYS_ERROR_CRYPTO, what, res);
      goto fail;
    }
  }
  if (res == RNP_SUCCESS)
    res = api.rnp_op_encrypt_set_aead (op, "None"); /* SEIPD v1 with MDC */
  if (res == RNP_SUCCESS)
    res = api.rnp_op_encrypt_set_cipher (op, algo);
  if (res == RNP_SUCCESS)
    res = compress ? api.rnp_op_encrypt_set_compression (op, "ZLIB", 6)
                   : api.rnp_op_encrypt_set_compression (op, "Uncompressed", 0);
  if (res == RNP_SUCCESS)
    res = api.rnp_op_encrypt_set_armor (op, out->armor);
  if (res == RNP_SUCCESS)
    res = api.rnp_op_encrypt_set_file_mtime (op, (uint32_t) (g_get_real_time () / G_USEC_PER_SEC));
  if (res == RNP_SUCCESS)
    res = api.rnp_op_encrypt_execute (op);
  if (res != RNP_SUCCESS) {
    set_error (error, MG_KEYS_ERROR_STORE, _ ("librnp cannot encrypt"), res);
    goto fail;
  }
  api.rnp_op_encrypt_destroy (op);
  api.rnp_output_destroy (dst);
  if (cipher != NULL)
    *cipher = algo;
  return TRUE;

fail:
  api.rnp_op_encrypt_destroy (op);
  api.rnp_output_destroy (dst);
  return FALSE;
}

/**
 * mg_rnp_encrypt - one OpenPGP message of @plain to the subkeys @subkey_fprs (each of the key named at the same
 * index in @fingerprints, both %NULL-terminated, every key imported with mg_rnp_import()).
 * @armor: ASCII armor, or binary packets
 * @cipher: (out) (optional): the symmetric algorithm used ("AES256")
 *
 * Returns: (transfer full): the message, or %NULL with a permanent %MG_KEYS_ERROR_CRYPTO (librnp refused a key or
 * the keys share no cipher) or a transient %MG_KEYS_ERROR_STORE.
 */
GBytes *
mg_rnp_encrypt (MgRnp *rnp, GBytes *plain, const char *const *fingerprints, const char *const *subkey_fprs,
                gboolean armor, const char **cipher, GError **error)
{
  gsize len = 0;
  const guint8 *data = g_bytes_get_data (plain, &len);
  static const guint8 empty[1] = { 0 };
  Out out = { NULL, NULL, NULL, armor, FALSE };
  rnp_input_t in = NULL;
  rnp_result_t res;
  gboolean ok;

  /* librnp wants a non-NULL buffer even for an empty message */
  res = api.rnp_input_from_memory (&in, len ? data : empty, len, false);
  if (res != RNP_SUCCESS) {
    set_error (error, MG_KEYS_ERROR_STORE, _ ("librnp cannot encrypt"), res);
    return NULL;
  }
  out.buf = g_byte_array_sized_new ((guint) MIN (len + len / 3 + 1024, G_MAXUINT));
  ok = encrypt_io (rnp, in, &out, len <= COMPRESS_MAX, fingerprints, subkey_fprs, cipher, error);
  api.rnp_input_destroy (in);
  if (!ok) {
    g_byte_array_unref (out.buf);
    return NULL;
  }
  return g_byte_array_free_to_bytes (out.buf);
}

/* In - the stream librnp reads the clear text from */
typedef struct {
  GMimeStream *stream;
  gboolean read; /* anything was asked of it */
  gboolean failed;
} In;

static bool
in_read_cb (void *ctx, void *buf, size_t len, size_t *read)
{
  In *i = ctx;
  gssize n;

  i->read = TRUE;
  n = g_mime_stream_read (i->stream, buf, len);

  if (n < 0) {
    i->failed = TRUE;
    return false;
  }
  *read = (size_t) n;
  return true;
}

/* stream_compress - whether clear text of @plain (from where it stands) is compressed: only when its length is
 * known and at most 1 MiB (see the file comment); a stream that cannot tell its length is taken as large */
static gboolean
stream_compress (GMimeStream *plain)
{
  gint64 len = g_mime_stream_length (plain), at = g_mime_stream_tell (plain);

  if (len < 0)
    return FALSE;
  if (at > plain->bound_start)
    len -= at - plain->bound_start;
  return len <= COMPRESS_MAX;
}

/**
 * mg_rnp_encrypt_stream - mg_rnp_encrypt() from stream to stream: the clear text is read from @plain (from its
 * current position to its end) and the OpenPGP message written to @out as librnp produces it, a few kilobytes at a
 * time; neither is held whole in memory.
 *
 * Compressed (ZLIB) only when @plain tells its length and that is at most 1 MiB.
 *
 * Returns: %TRUE, or %FALSE with the errors of mg_rnp_encrypt() (a read or write failure of either stream is a
 * transient %MG_KEYS_ERROR_STORE); @out may then hold part of a message, which the caller discards. A permanent
 * %MG_KEYS_ERROR_CRYPTO (librnp refused a key, no common cipher) comes before any byte is read or written, so the
 * caller can still encrypt the same streams another way.
 */
gboolean
mg_rnp_encrypt_stream (MgRnp *rnp, GMimeStream *plain, GMimeStream *out, const char *const *fingerprints,
                       const char *const *subkey_fprs, gboolean armor, const char **cipher, GError **error)
{
  In src = { plain, FALSE, FALSE };
  Out dst = { NULL, out, g_byte_array_new (), armor, FALSE };
  rnp_input_t in = NULL;
  rnp_result_t res;
  g_autoptr (GError) local = NULL;
  gboolean ok;

  g_return_val_if_fail (GMIME_IS_STREAM (plain) && GMIME_IS_STREAM (out), FALSE);
  res = api.rnp_input_from_callback (&in, in_read_cb, NULL, &src);
  if (res != RNP_SUCCESS) {
    g_byte_array_unref (dst.scratch);
    set_error (error, MG_KEYS_ERROR_STORE, _ ("librnp cannot encrypt"), res);
    return FALSE;
  }
  ok = encrypt_io (rnp, in, &dst, stream_compress (plain), fingerprints, subkey_fprs, cipher, &local);
  api.rnp_input_destroy (in);
  g_byte_array_unref (dst.scratch);
  if (src.failed || dst.failed) {
    g_set_error_literal (error, MG_KEYS_ERROR, MG_KEYS_ERROR_STORE,
                         src.failed ? _ ("cannot read the clear text to encrypt") : _ ("cannot write the ciphertext"));
    return FALSE;
  }
  if (!ok) {
    if (src.read && local->code == MG_KEYS_ERROR_CRYPTO)
      local->code = MG_KEYS_ERROR_STORE; /* see the contract: CRYPTO means nothing was read or written */
    g_propagate_error (error, g_steal_pointer (&local));
    return FALSE;
  }
  return TRUE;
}
