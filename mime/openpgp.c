/* openpgp.c - key-less reading of OpenPGP packet streams (RFC 4880 section 4-5, RFC 9580 section 4-5).
 *
 * Detection must say who a message is encrypted to and who signed it before any key is looked at, so this reads the
 * cleartext packets: PKESK (tag 1, v3 and v6), SKESK (3), SED (9, no integrity), SEIPD (18: v1 MDC, v2 AEAD), AEAD
 * (20), signatures (2: v3, v4, v6 with issuer subpackets), one-pass signatures (4), keys (5, 6, 7, 14) and user IDs
 * (13). Every length is checked against the buffer; a truncated stream yields what was read before the cut. */
#include "config.h"

#include "openpgp.h"

#include <string.h>

#include <openssl/evp.h>

#include "mg-ssl.h"

enum {
  TAG_PKESK = 1,
  TAG_SIGNATURE = 2,
  TAG_SKESK = 3,
  TAG_ONEPASS = 4,
  TAG_SECRET_KEY = 5,
  TAG_PUBLIC_KEY = 6,
  TAG_SECRET_SUBKEY = 7,
  TAG_COMPRESSED = 8,
  TAG_SED = 9,
  TAG_MARKER = 10,
  TAG_LITERAL = 11,
  TAG_USERID = 13,
  TAG_PUBLIC_SUBKEY = 14,
  TAG_SEIPD = 18,
  TAG_AEAD = 20,
};

#define MAX_PACKETS 4096

typedef struct {
  guint tag;
  const guint8 *body; /* the first chunk only when partial lengths are used */
  gsize len;
  gboolean partial;
} Packet;

/* read_packet - reads the header at *@pos; FALSE at the end or on a malformed header */
static gboolean
read_packet (const guint8 *data, gsize len, gsize *pos, Packet *pkt)
{
  gsize p = *pos, body_len;
  guint8 ctb;

  if (p >= len)
    return FALSE;
  ctb = data[p++];
  if ((ctb & 0x80) == 0)
    return FALSE;
  pkt->partial = FALSE;
  if (ctb & 0x40) {
    guint8 o1;
    pkt->tag = ctb & 0x3f;
    if (p >= len)
      return FALSE;
    o1 = data[p++];
    if (o1 < 192)
      body_len = o1;
    else if (o1 < 224) {
      if (p >= len)
        return FALSE;
      body_len = ((gsize) (o1 - 192) << 8) + data[p++] + 192;
    } else if (o1 == 255) {
      if (len - p < 4)
        return FALSE;
      body_len = ((gsize) data[p] << 24) | ((gsize) data[p + 1] << 16) | ((gsize) data[p + 2] << 8) | data[p + 3];
      p += 4;
    } else {
      body_len = (gsize) 1 << (o1 & 0x1f);
      pkt->partial = TRUE;
    }
  } else {
    guint lt = ctb & 3;
    pkt->tag = (ctb >> 2) & 0x0f;
    if (lt == 3)
      body_len = len - p;
    else {
      gsize n = (gsize) 1 << lt;
      if (len - p < n)
        return FALSE;
      body_len = 0;
      for (gsize i = 0; i < n; i++)
        body_len = (body_len << 8) | data[p + i];
      p += n;
    }
  }
  pkt->body = data + p;
  /* A truncated last packet still tells its tag and first fields. */
  pkt->len = MIN (body_len, len - p);
  *pos = (body_len > len - p) ? len : p + body_len;
  return TRUE;
}

/* mg_openpgp_pubkey_algo_name - RFC 9580 section 9.1 */
const char *
mg_openpgp_pubkey_algo_name (guint algo)
{
  switch (algo) {
  case 1:
  case 2:
  case 3:
    return "RSA";
  case 16:
    return "ElGamal";
  case 17:
    return "DSA";
  case 18:
    return "ECDH";
  case 19:
    return "ECDSA";
  case 22:
    return "EdDSA";
  case 25:
    return "X25519";
  case 26:
    return "X448";
  case 27:
    return "Ed25519";
  case 28:
    return "Ed448";
  default:
    return NULL;
  }
}

/* mg_openpgp_hash_algo_name - RFC 9580 section 9.5 */
const char *
mg_openpgp_hash_algo_name (guint algo)
{
  static const char *const names[] = {
    NULL,     "MD5",    "SHA1",   "RIPEMD160", NULL,       NULL, NULL,       NULL,
    "SHA256", "SHA384", "SHA512", "SHA224",    "SHA3-256", NULL, "SHA3-512",
  };
  return algo < G_N_ELEMENTS (names) ? names[algo] : NULL;
}

static char *
hex_id (const guint8 *bytes, gsize n)
{
  GString *s = g_string_sized_new (2 + 2 * n);

  g_string_append (s, "0x");
  for (gsize i = 0; i < n; i++)
    g_string_append_printf (s, "%02X", bytes[i]);
  return g_string_free (s, FALSE);
}

static MgCryptoId *
id_with_algo (char *id_take, guint algo)
{
  const char *name = mg_openpgp_pubkey_algo_name (algo);
  g_autofree char *unknown = name ? NULL : g_strdup_printf ("algorithm %u", algo);
  MgCryptoId *cid = mg_crypto_id_new (id_take, name ? name : unknown);

  g_free (id_take);
  return cid;
}

/* read_pkesk - a public-key encrypted session key: the recipient's key id (v3) or fingerprint (v6) */
static void
read_pkesk (const Packet *pkt, MgCryptoInfo *info)
{
  const guint8 *b = pkt->body;

  if (pkt->len >= 10 && b[0] == 3) {
    g_ptr_array_add (info->recipients, id_with_algo (hex_id (b + 1, 8), b[9]));
  } else if (pkt->len >= 3 && b[0] == 6) {
    gsize n = b[1]; /* key version + fingerprint, or 0 for an anonymous recipient */
    if (n == 0 && pkt->len >= 3)
      g_ptr_array_add (info->recipients, id_with_algo (g_strdup ("anonymous"), b[2]));
    else if (n >= 1 && pkt->len >= 2 + n + 1)
      g_ptr_array_add (info->recipients, id_with_algo (hex_id (b + 3, n - 1), b[2 + n]));
  }
}

/* read_subpackets - the issuer key id (16) or issuer fingerprint (33) of a signature */
static void
read_subpackets (const guint8 *b, gsize len, char **issuer)
{
  gsize p = 0;

  while (p < len) {
    gsize sp_len;
    guint type;
    if (b[p] < 192)
      sp_len = b[p++];
    else if (b[p] < 255) {
      if (len - p < 2)
        return;
      sp_len = ((gsize) (b[p] - 192) << 8) + b[p + 1] + 192;
      p += 2;
    } else {
      if (len - p < 5)
        return;
      sp_len = ((gsize) b[p + 1] << 24) | ((gsize) b[p + 2] << 16) | ((gsize) b[p + 3] << 8) | b[p + 4];
      p += 5;
    }
    if (sp_len == 0 || sp_len > len - p)
      return;
    type = b[p] & 0x7f;
    if (type == 33 && sp_len >= 2 + 20) {
      g_free (*issuer); /* a fingerprint beats a key id */
      *issuer = hex_id (b + p + 2, sp_len - 2);
    } else if (type == 16 && sp_len == 9 && *issuer == NULL)
      *issuer = hex_id (b + p + 1, 8);
    p += sp_len;
  }
}

/* read_signature - signer key id or fingerprint, public-key and hash algorithm */
static void
read_signature (const Packet *pkt, MgCryptoInfo *info)
{
  const guint8 *b = pkt->body;
  char *issuer = NULL;
  guint pk = 0, hash = 0;
  MgCryptoId *cid;

  if (pkt->len >= 19 && b[0] == 3) {
    issuer = hex_id (b + 7, 8);
    pk = b[15];
    hash = b[16];
  } else if (pkt->len >= 6 && b[0] == 4) {
    gsize hashed = ((gsize) b[4] << 8) | b[5], unhashed;
    pk = b[2];
    hash = b[3];
    if (6 + hashed <= pkt->len) {
      read_subpackets (b + 6, hashed, &issuer);
      if (6 + hashed + 2 <= pkt->len) {
        unhashed = ((gsize) b[6 + hashed] << 8) | b[7 + hashed];
        if (8 + hashed + unhashed <= pkt->len)
          read_subpackets (b + 8 + hashed, unhashed, &issuer);
      }
    }
  } else if (pkt->len >= 8 && b[0] == 6) {
    gsize hashed = ((gsize) b[4] << 24) | ((gsize) b[5] << 16) | ((gsize) b[6] << 8) | b[7];
    pk = b[2];
    hash = b[3];
    if (8 + hashed <= pkt->len)
      read_subpackets (b + 8, hashed, &issuer);
  } else
    return;
  cid = id_with_algo (issuer ? issuer : g_strdup ("unknown"), pk);
  cid->digest = g_strdup (mg_openpgp_hash_algo_name (hash));
  g_ptr_array_add (info->signers, cid);
}

/* read_onepass - a one-pass signature names the signer before the signed data */
static void
read_onepass (const Packet *pkt, MgCryptoInfo *info)
{
  const guint8 *b = pkt->body;
  MgCryptoId *cid;

  if (pkt->len < 13 || b[0] != 3)
    return;
  cid = id_with_algo (hex_id (b + 4, 8), b[3]);
  cid->digest = g_strdup (mg_openpgp_hash_algo_name (b[2]));
  g_ptr_array_add (info->signers, cid);
}

/* mpi_end - offset after @count MPIs starting at @p, or 0 when they do not fit */
static gsize
mpi_end (const guint8 *b, gsize len, gsize p, guint count)
{
  for (guint i = 0; i < count; i++) {
    gsize bits, bytes;
    if (p > len || len - p < 2)
      return 0;
    bits = ((gsize) b[p] << 8) | b[p + 1];
    bytes = (bits + 7) / 8;
    p += 2;
    if (bytes > len - p)
      return 0;
    p += bytes;
  }
  return p;
}

/* oid_end - offset after a length-prefixed curve OID at @p */
static gsize
oid_end (const guint8 *b, gsize len, gsize p)
{
  if (p >= len || b[p] == 0 || b[p] == 0xff || b[p] > len - p - 1)
    return 0;
  return p + 1 + b[p];
}

/* v4_public_len - the length of the public part of a v4 key packet body (RFC 9580 section 5.5.5), 0 if unknown */
static gsize
v4_public_len (const guint8 *b, gsize len)
{
  gsize p = 6; /* version, creation time, algorithm */
  guint algo;

  if (len < 6 || b[0] != 4)
    return 0;
  algo = b[5];
  switch (algo) {
  case 1:
  case 2:
  case 3:
    return mpi_end (b, len, p, 2);
  case 16:
    return mpi_end (b, len, p, 3);
  case 17:
    return mpi_end (b, len, p, 4);
  case 19:
  case 22:
    p = oid_end (b, len, p);
    return p ? mpi_end (b, len, p, 1) : 0;
  case 18:
    p = oid_end (b, len, p);
    p = p ? mpi_end (b, len, p, 1) : 0;
    if (p == 0 || p >= len || b[p] > len - p - 1)
      return 0;
    return p + 1 + b[p]; /* KDF parameters */
  case 25:
    return len >= p + 32 ? p + 32 : 0;
  case 26:
    return len >= p + 56 ? p + 56 : 0;
  case 27:
    return len >= p + 32 ? p + 32 : 0;
  case 28:
    return len >= p + 57 ? p + 57 : 0;
  default:
    return 0;
  }
}

/* fingerprint - the hash of a key's public part behind its packet-type prefix @head (RFC 9580 section 5.5.4) */
static MgCryptoId *
fingerprint (const EVP_MD *md, const guint8 *head, gsize head_len, const guint8 *body, gsize len, guint algo)
{
  g_autoptr (EVP_MD_CTX) ctx = EVP_MD_CTX_new ();
  guint8 digest[EVP_MAX_MD_SIZE];
  unsigned int digest_len = 0;

  if (ctx == NULL || !EVP_DigestInit_ex (ctx, md, NULL) || !EVP_DigestUpdate (ctx, head, head_len) ||
      !EVP_DigestUpdate (ctx, body, len) || !EVP_DigestFinal_ex (ctx, digest, &digest_len))
    return NULL;
  return id_with_algo (hex_id (digest, digest_len), algo);
}

/* read_key - a v4 key's fingerprint (SHA-1 over the public part) or a v6 key's (SHA-256), with its algorithm */
static MgCryptoId *
read_key (const Packet *pkt)
{
  const guint8 *b = pkt->body;
  gsize pub_len;

  if (pkt->len < 6)
    return NULL;
  if (b[0] == 4) {
    guint8 head[3];
    pub_len = v4_public_len (b, pkt->len);
    if (pub_len == 0 || pub_len > 0xffff)
      return id_with_algo (g_strdup ("unknown"), b[5]);
    head[0] = 0x99;
    head[1] = (pub_len >> 8) & 0xff;
    head[2] = pub_len & 0xff;
    return fingerprint (EVP_sha1 (), head, sizeof head, b, pub_len, b[5]);
  }
  if (b[0] == 6 && pkt->len >= 10) {
    gsize material = ((gsize) b[6] << 24) | ((gsize) b[7] << 16) | ((gsize) b[8] << 8) | b[9];
    guint8 head[5];
    if (material > pkt->len - 10)
      return id_with_algo (g_strdup ("unknown"), b[5]);
    pub_len = 10 + material;
    head[0] = 0x9b;
    head[1] = (pub_len >> 24) & 0xff;
    head[2] = (pub_len >> 16) & 0xff;
    head[3] = (pub_len >> 8) & 0xff;
    head[4] = pub_len & 0xff;
    return fingerprint (EVP_sha256 (), head, sizeof head, b, pub_len, b[5]);
  }
  return mg_crypto_id_new ("unknown", NULL);
}

/* set_integrity - the first encrypted-data packet decides */
static void
set_integrity (MgCryptoInfo *info, const char *how)
{
  if (info->integrity == NULL)
    info->integrity = g_strdup (how);
}

/**
 * mg_openpgp_inspect - reads an OpenPGP packet stream and adds what it names to @info.
 * @data: binary (dearmored) OpenPGP data
 * @info: (inout): receives recipients, signers, keys and integrity
 *
 * Returns: what the stream is, %MG_OPENPGP_UNKNOWN when it is not OpenPGP at all.
 */
MgOpenpgpType
mg_openpgp_inspect (const guint8 *data, gsize len, MgCryptoInfo *info)
{
  MgOpenpgpType type = MG_OPENPGP_UNKNOWN;
  MgCryptoId *primary = NULL;
  gsize pos = 0;
  Packet pkt;

  for (guint n = 0; n < MAX_PACKETS && read_packet (data, len, &pos, &pkt); n++) {
    switch (pkt.tag) {
    case TAG_PKESK:
      read_pkesk (&pkt, info);
      type = MG_OPENPGP_ENCRYPTED;
      break;
    case TAG_SKESK:
      info->passphrases++;
      type = MG_OPENPGP_ENCRYPTED;
      break;
    case TAG_SED:
      set_integrity (info, "none");
      return MG_OPENPGP_ENCRYPTED;
    case TAG_SEIPD:
      set_integrity (info, pkt.len >= 1 && pkt.body[0] == 2 ? "aead" : "mdc");
      return MG_OPENPGP_ENCRYPTED;
    case TAG_AEAD:
      set_integrity (info, "aead");
      return MG_OPENPGP_ENCRYPTED;
    case TAG_ONEPASS:
      read_onepass (&pkt, info);
      type = MG_OPENPGP_SIGNED;
      break;
    case TAG_COMPRESSED:
    case TAG_LITERAL:
      /* Signature packets after the data still name the signer when the one-pass packets are absent. */
      if (type == MG_OPENPGP_UNKNOWN || type == MG_OPENPGP_SIGNATURE)
        type = MG_OPENPGP_SIGNED;
      if (pkt.partial)
        return type;
      break;
    case TAG_SIGNATURE:
      if (type == MG_OPENPGP_UNKNOWN)
        type = MG_OPENPGP_SIGNATURE;
      if (type == MG_OPENPGP_SIGNATURE || (type == MG_OPENPGP_SIGNED && info->signers->len == 0))
        read_signature (&pkt, info);
      break;
    case TAG_PUBLIC_KEY:
    case TAG_SECRET_KEY:
      primary = read_key (&pkt);
      if (primary)
        g_ptr_array_add (info->keys, primary);
      type = MG_OPENPGP_KEY;
      break;
    case TAG_USERID:
      if (primary && primary->name == NULL && pkt.len > 0)
        primary->name = g_utf8_make_valid ((const char *) pkt.body, pkt.len);
      break;
    case TAG_PUBLIC_SUBKEY:
    case TAG_SECRET_SUBKEY:
    case TAG_MARKER:
      if (type == MG_OPENPGP_UNKNOWN && pkt.tag != TAG_MARKER)
        type = MG_OPENPGP_KEY;
      break;
    default:
      if (type == MG_OPENPGP_UNKNOWN && (pkt.tag == 0 || (pkt.tag > 21 && pkt.tag < 60)))
        return MG_OPENPGP_UNKNOWN;
      break;
    }
  }
  return type;
}

/**
 * mg_openpgp_sniff - whether @data starts like a binary OpenPGP message, signature or key.
 *
 * Strict on purpose: the first packet must be one that starts real OpenPGP data and its length must fit.
 */
gboolean
mg_openpgp_sniff (const guint8 *data, gsize len)
{
  gsize pos = 0;
  Packet pkt;

  if (!read_packet (data, len, &pos, &pkt))
    return FALSE;
  switch (pkt.tag) {
  case TAG_PKESK:
    return pkt.len >= 10 && (pkt.body[0] == 3 || pkt.body[0] == 6);
  case TAG_SKESK:
    return pkt.len >= 4 && (pkt.body[0] == 4 || pkt.body[0] == 5 || pkt.body[0] == 6);
  case TAG_SIGNATURE:
  case TAG_PUBLIC_KEY:
  case TAG_SECRET_KEY:
    return pkt.len >= 6 && pkt.body[0] >= 3 && pkt.body[0] <= 6;
  case TAG_ONEPASS:
    return pkt.len >= 13 && (pkt.body[0] == 3 || pkt.body[0] == 6);
  case TAG_COMPRESSED:
    return pkt.len >= 1 && pkt.body[0] <= 3;
  case TAG_SEIPD:
    return pkt.len >= 1 && (pkt.body[0] == 1 || pkt.body[0] == 2);
  case TAG_MARKER:
    return pkt.len == 3 && memcmp (pkt.body, "PGP", 3) == 0;
  default:
    return FALSE;
  }
}
