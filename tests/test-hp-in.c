/* test-hp-in.c - header protection coming in (RFC 9788 hp="cipher"/hp="clear", legacy protected-headers="v1"):
 * what `plain` delivers for the corpus samples that carry protected headers (autocrypt-protected-headers and notmuch's
 * corpora-protected-headers, decrypted with the keys the corpus ships), and for messages made here with gpg in both
 * forms, signed and unsigned: the real Subject in the header, HP-Outer gone, the legacy display removed, our x-hp
 * stamp saying whether a signature covered the fields, a log note when an unsigned inner Subject differs, and
 * refused fields (bare CR, an encoded line break, an overlong line) never copied. */
#include "config.h"

#include <string.h>

#include <gpgme.h>

#include "convert.h"
#include "gnupg.h"
#include "mg-gmime.h"
#include "testutil.h"
#include "x509.h"

static struct {
  MgGpg *home; /* the gateway's home: the corpus's Bob and notmuch keys, and two made here (gw, sender) */
  char *dir;
  MgGnupg *gnupg;
  MgX509Store *x509; /* the corpus's bob.p12 and its sample CA */
  MgLimits limits;
} fx;

/* Out - what plain delivered */
typedef struct {
  char *out;
  char *subject; /* decoded, by GMime */
  char *ar;      /* our Authentication-Results, unfolded */
  GPtrArray *notes;
} Out;

static void
out_clear (Out *o)
{
  g_free (o->out);
  g_free (o->subject);
  g_free (o->ar);
  g_clear_pointer (&o->notes, g_ptr_array_unref);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (Out, out_clear)

/* plain - @data converted to plain for gw@example.org; the test fails on an error */
static void
plain (const char *data, gsize len, Out *o)
{
  g_autoptr (GBytes) in = g_bytes_new (data, len);
  const char *rcpt[] = { "gw@example.org", NULL };
  MgConvertKeys keys = { fx.gnupg, fx.x509, &fx.limits, FALSE, "gw.example", MG_SIGN_NONE, NULL };
  MgConvertResult result;
  g_autoptr (GError) error = NULL;
  g_autoptr (GBytes) bytes = NULL;
  g_autoptr (GMimeStream) s = NULL;
  g_autoptr (GMimeParser) p = NULL;
  g_autoptr (GMimeMessage) m = NULL;
  const char *ar;

  mg_convert_result_init (&result);
  bytes = mg_convert (in, MG_FORM_PLAIN, rcpt, &keys, &result, &error);
  g_assert_no_error (error);
  o->out = g_strndup (g_bytes_get_data (bytes, NULL), g_bytes_get_size (bytes));
  o->notes = g_steal_pointer (&result.notes);
  mg_convert_result_clear (&result);
  s = mg_stream_for_bytes (bytes);
  p = g_mime_parser_new_with_stream (s);
  m = g_mime_parser_construct_message (p, NULL);
  g_assert_nonnull (m);
  o->subject = g_strdup (g_mime_message_get_subject (m));
  ar = g_mime_object_get_header (GMIME_OBJECT (m), "Authentication-Results");
  if (ar != NULL) {
    o->ar = g_strdup (ar);
    g_strdelimit (o->ar, "\r\n\t", ' ');
  }
}

static guint
count (const char *hay, const char *needle)
{
  guint n = 0;

  for (const char *p = strstr (hay, needle); p != NULL; p = strstr (p + 1, needle))
    n++;
  return n;
}

/* has_note - whether a note contains @part */
static gboolean
has_note (const Out *o, const char *part)
{
  for (guint i = 0; i < o->notes->len; i++)
    if (strstr (g_ptr_array_index (o->notes, i), part) != NULL)
      return TRUE;
  return FALSE;
}

/* no_note_says - no note repeats @text (the secrets rule: log that Subjects differ, never what they say) */
static void
no_note_says (const Out *o, const char *text)
{
  for (guint i = 0; i < o->notes->len; i++)
    g_assert_null (strstr (g_ptr_array_index (o->notes, i), text));
}

/* header_block - the delivered header block (up to the first empty line) */
static char *
header_block (const char *msg)
{
  const char *end = strstr (msg, "\n\n");
  const char *crlf = strstr (msg, "\r\n\r\n");

  if (crlf != NULL && (end == NULL || crlf < end))
    end = crlf;
  return g_strndup (msg, end ? (gsize) (end - msg) : strlen (msg));
}

/* the corpus: every sample with protected headers that a key in the corpus opens, and what plain must deliver */
static const struct {
  const char *file;
  const char *subject;
  const char *hp;     /* our x-hp resinfo, NULL: none (nothing to restore, or nothing that protects it) */
  guint subject_seen; /* times "Subject: <subject>" is in the output: 1 = only our header (legacy display gone) */
} corpus_cases[] = {
  { "autocrypt-protected-headers/pgpmime-enc+legacy-disp.eml", "BarCorp contract signed, let's go!",
    "x-hp=unsigned policy.hp=v1", 1 },
  /* the legacy display stays inside the signature that travels on: the header, the signed part's, the display */
  { "autocrypt-protected-headers/pgpmime-layered+legacy-disp.eml", "BarCorp contract signed, let's go!",
    "x-hp=signed policy.hp=v1", 3 },
  { "autocrypt-protected-headers/pgpmime-layered.eml", "BarCorp contract signed, let's go!", "x-hp=signed policy.hp=v1",
    2 },
  { "autocrypt-protected-headers/pgpmime-sign+enc+legacy-disp.eml", "BarCorp contract signed, let's go!",
    "x-hp=signed policy.hp=v1", 1 },
  { "autocrypt-protected-headers/pgpmime-sign+enc.eml", "BarCorp contract signed, let's go!",
    "x-hp=signed policy.hp=v1", 1 },
  { "autocrypt-protected-headers/pgpmime-signed.eml", "The FooCorp contract", "x-hp=signed policy.hp=v1", 2 },
  { "autocrypt-protected-headers/smime-enc+legacy-disp.eml", "BarCorp contract signed, let's go!",
    "x-hp=unsigned policy.hp=v1", 1 },
  { "autocrypt-protected-headers/smime-multipart-signed.eml", "The FooCorp contract", "x-hp=signed policy.hp=v1", 2 },
  { "autocrypt-protected-headers/smime-onepart-signed.eml", "The FooCorp contract", "x-hp=signed policy.hp=v1", 1 },
  { "autocrypt-protected-headers/smime-sign+enc+legacy-disp.eml", "BarCorp contract signed, let's go!",
    "x-hp=signed policy.hp=v1", 1 },
  { "autocrypt-protected-headers/smime-sign+enc.eml", "BarCorp contract signed, let's go!", "x-hp=signed policy.hp=v1",
    1 },
  { "autocrypt-protected-headers/unfortunately-complex.eml", "BarCorp contract signed, let's go!",
    "x-hp=signed policy.hp=v1", 3 },
  { "notmuch/corpora-protected-headers/encrypted-message-with-forwarded-attachment.eml",
    "This is the cryptographic envelope subject", "x-hp=unsigned policy.hp=v1", 1 },
  { "notmuch/corpora-protected-headers/encrypted-signed-not-masked.eml", "Rhinoceros dinner",
    "x-hp=signed policy.hp=v1", 1 },
  { "notmuch/corpora-protected-headers/encrypted-signed.eml", "Rhinoceros dinner", "x-hp=signed policy.hp=v1", 1 },
  { "notmuch/corpora-protected-headers/protected-header.eml", "This is a protected header",
    "x-hp=unsigned policy.hp=v1", 1 },
  { "notmuch/corpora-protected-headers/protected-with-legacy-display.eml", "Interrupting Cow",
    "x-hp=signed policy.hp=v1", 1 },
  { "notmuch/corpora-protected-headers/signed-protected-header.eml", "This is a signed message",
    "x-hp=signed policy.hp=v1", 2 },
  { "notmuch/corpora-protected-headers/subjectless-protected-header.eml", "This is a protected header",
    "x-hp=unsigned policy.hp=v1", 1 },
  /* protected-headers on a part that is not the payload, or no attribute at all: nothing to restore */
  { "notmuch/corpora-protected-headers/misplaced-protected-header.eml", "Subject Unavailable", NULL, 0 },
  { "notmuch/corpora-protected-headers/no-protected-header-attribute.eml", "Subject Unavailable", NULL, 0 },
  { "notmuch/corpora-protected-headers/nested-rfc822-message.eml", "Subject Unavailable", NULL, 0 },
  { "notmuch/corpora-protected-headers/wrapped-protected-header.eml", "[mailing-list] Subject Unavailable", NULL, 0 },
  { "notmuch/corpora-protected-headers/double-wrapped-with-phony-protected-header.eml", "Subject Unavailable", NULL,
    0 },
  { "notmuch/corpora-protected-headers/simple-signed-mail.eml", "This is a signed message", NULL, 0 },
};

static void
test_corpus (void)
{
  const char *corpus = mg_test_corpus ();

  if (corpus == NULL) {
    g_test_skip ("../shared/corpus is not beside the checkout");
    return;
  }
  for (gsize i = 0; i < G_N_ELEMENTS (corpus_cases); i++) {
    g_autofree char *path = g_build_filename (corpus, corpus_cases[i].file, NULL);
    g_autofree char *seen = g_strdup_printf ("Subject: %s", corpus_cases[i].subject);
    g_autofree char *head = NULL;
    gsize len;
    g_autofree char *data = mg_test_read (path, &len);
    g_auto (Out) o = { 0 };
    g_assert_nonnull (data);
    plain (data, len, &o);
    g_test_message ("%s: Subject %s; %s", corpus_cases[i].file, o.subject, o.ar ? o.ar : "(no stamp)");
    g_assert_cmpstr (o.subject, ==, corpus_cases[i].subject);
    head = header_block (o.out);
    g_assert_cmpuint (count (head, "\nSubject:"), <=, 1);
    g_assert_null (strstr (o.out, "HP-Outer"));
    if (corpus_cases[i].hp == NULL) {
      g_assert_true (o.ar == NULL || strstr (o.ar, "x-hp=") == NULL);
      continue;
    }
    g_assert_nonnull (o.ar);
    g_assert_true (g_str_has_suffix (o.ar, corpus_cases[i].hp));
    g_assert_cmpuint (count (o.out, seen), ==, corpus_cases[i].subject_seen);
    if (strstr (corpus_cases[i].hp, "unsigned") && strstr (corpus_cases[i].file, "autocrypt"))
      g_assert_true (has_note (&o, "no good signature covers"));
    no_note_says (&o, corpus_cases[i].subject);
  }
}

/* encrypted_message - a PGP/MIME message (RFC 3156) around @inner, encrypted by gpg to gw@example.org, signed by
 * sender@example.org when @sign; @outer_subject is the outer Subject */
static char *
encrypted_message (const char *inner, gboolean sign, const char *outer_subject)
{
  g_autofree char *armor = NULL;

  if (sign)
    armor = mg_gpg (fx.home, inner, strlen (inner), "--trust-model", "always", "--armor", "--local-user",
                    "sender@example.org", "--recipient", "gw@example.org", "--sign", "--encrypt", NULL);
  else
    armor = mg_gpg (fx.home, inner, strlen (inner), "--trust-model", "always", "--armor", "--recipient",
                    "gw@example.org", "--encrypt", NULL);
  g_assert_nonnull (armor);
  return g_strdup_printf (
    "Received: from relay.example.net by mx.example.org; Tue, 1 Dec 2026 10:00:00 +0000\r\n"
    "From: Sender <sender@example.org>\r\nTo: Gw <gw@example.org>\r\n"
    "Subject: %s\r\nMessage-ID: <hp@example.org>\r\nList-Id: <plans.example.org>\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"b1\"\r\n"
    "\r\n--b1\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n"
    "--b1\r\nContent-Type: application/octet-stream\r\n\r\n%s\r\n--b1--\r\n",
    outer_subject, armor);
}

#define RFC9788_INNER                                                                                                  \
  "Content-Type: text/plain; charset=\"us-ascii\"; hp=\"cipher\"; hp-legacy-display=\"1\"\r\n"                         \
  "Subject: Dinner plans\r\nFrom: Sender <sender@example.org>\r\nTo: Gw <gw@example.org>\r\n"                          \
  "Cc: Hidden <hidden@example.org>\r\nMessage-ID: <hp@example.org>\r\n"                                                \
  "HP-Outer: Subject: [...]\r\nHP-Outer: From: Sender <sender@example.org>\r\nHP-Outer: To: Gw <gw@example.org>\r\n"   \
  "HP-Outer: Message-ID: <hp@example.org>\r\n\r\n"                                                                     \
  "Subject: Dinner plans\r\n\r\nLet's meet at Rama's Roti Shop at 8pm.\r\n"

#define LEGACY_INNER                                                                                                   \
  "Content-Type: multipart/mixed; boundary=\"ld\"; protected-headers=\"v1\"\r\n"                                       \
  "Subject: Lunch plans\r\nFrom: Sender <sender@example.org>\r\nTo: Gw <gw@example.org>\r\n"                           \
  "Message-ID: <hp@example.org>\r\n\r\n"                                                                               \
  "--ld\r\nContent-Type: text/rfc822-headers; protected-headers=\"v1\"\r\nContent-Disposition: inline\r\n\r\n"         \
  "Subject: Lunch plans\r\n\r\n--ld\r\nContent-Type: text/plain; charset=\"us-ascii\"\r\n\r\n"                         \
  "Noon at the usual place.\r\n--ld--\r\n"

/* RFC 9788 hp="cipher" and the legacy form, each unsigned and signed, made by gpg */
static void
test_generated (void)
{
  const struct {
    const char *inner;
    gboolean sign;
    const char *subject;
    const char *hp;
    const char *legacy; /* (nullable): the legacy display part's type, gone from the delivered body */
    const char *body;   /* what the body still says; RFC 9788: what it starts with, the display element gone */
  } cases[] = {
    { RFC9788_INNER, FALSE, "Dinner plans", "x-hp=unsigned policy.hp=cipher", NULL,
      "Let's meet at Rama's Roti Shop at 8pm." },
    { RFC9788_INNER, TRUE, "Dinner plans", "x-hp=signed policy.hp=cipher", NULL,
      "Let's meet at Rama's Roti Shop at 8pm." },
    { LEGACY_INNER, FALSE, "Lunch plans", "x-hp=unsigned policy.hp=v1", "text/rfc822-headers",
      "Noon at the usual place." },
    { LEGACY_INNER, TRUE, "Lunch plans", "x-hp=signed policy.hp=v1", "text/rfc822-headers",
      "Noon at the usual place." },
  };

  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++) {
    g_autofree char *msg = encrypted_message (cases[i].inner, cases[i].sign, "[...]");
    g_autofree char *head = NULL;
    g_auto (Out) o = { 0 };
    plain (msg, strlen (msg), &o);
    g_test_message ("case %" G_GSIZE_FORMAT ": %s", i, o.ar);
    head = header_block (o.out);
    g_assert_cmpstr (o.subject, ==, cases[i].subject);
    g_assert_cmpuint (count (head, "Subject:"), ==, 1);
    g_assert_cmpuint (count (o.out, "Subject:"), ==, 1);
    g_assert_null (strstr (o.out, "[...]"));
    g_assert_null (strstr (o.out, "HP-Outer"));
    if (cases[i].legacy != NULL)
      g_assert_null (strstr (o.out, cases[i].legacy));
    g_assert_nonnull (strstr (o.out, cases[i].body));
    g_assert_cmpuint (count (head, "From: Sender <sender@example.org>"), ==, 1);
    g_assert_nonnull (strstr (head, "Received: from relay.example.net")); /* trace and list fields stay */
    g_assert_nonnull (strstr (head, "List-Id: <plans.example.org>"));
    if (strcmp (cases[i].inner, RFC9788_INNER) == 0) {
      g_assert_nonnull (strstr (head, "Cc: Hidden <hidden@example.org>")); /* protected only: it comes back */
      const char *body = o.out + strlen (head);
      g_assert_null (strstr (o.out, "hp-legacy-display"));
      g_assert_true (g_str_has_prefix (body + strspn (body, "\r\n"), cases[i].body));
    }
    g_assert_nonnull (o.ar);
    g_assert_true (g_str_has_prefix (o.ar, cases[i].sign ? "gw.example; x-openpgp=pass" : "gw.example; x-hp="));
    g_assert_true (g_str_has_suffix (o.ar, cases[i].hp));
    /* outer "[...]" and the inner Subject differ: a note when nothing signed the inner one, never their text */
    g_assert_true (has_note (&o, "no good signature covers") == !cases[i].sign);
    no_note_says (&o, cases[i].subject);
    no_note_says (&o, "[...]");
  }
}

/* an RFC 9788 payload whose outer Subject is not the one its HP-Outer records: changed in transit, noted */
static void
test_changed_in_transit (void)
{
  g_autofree char *msg = encrypted_message (RFC9788_INNER, TRUE, "[list] [...]");
  g_auto (Out) o = { 0 };

  plain (msg, strlen (msg), &o);
  g_assert_cmpstr (o.subject, ==, "Dinner plans");
  g_assert_true (has_note (&o, "changed in transit"));
  g_assert_false (has_note (&o, "no good signature covers"));
  no_note_says (&o, "[list]");
}

/* signed_message - multipart/signed (RFC 3156) over @part, signed by sender@example.org with gpg; @tamper: one byte
 * of the part changed after signing */
static char *
signed_message (const char *part, const char *outer_subject, gboolean tamper)
{
  g_autofree char *sig = mg_gpg (fx.home, part, strlen (part), "--armor", "--local-user", "sender@example.org",
                                 "--digest-algo", "SHA256", "--detach-sign", NULL);
  g_autofree char *sent = g_strdup (part);

  g_assert_nonnull (sig);
  if (tamper)
    *strstr (sent, "Signed body") = 's';
  return g_strdup_printf ("From: Sender <sender@example.org>\r\nTo: Gw <gw@example.org>\r\nSubject: %s\r\n"
                          "MIME-Version: 1.0\r\n"
                          "Content-Type: multipart/signed; protocol=\"application/pgp-signature\"; micalg=pgp-sha256;"
                          " boundary=\"s1\"\r\n\r\n--s1\r\n%s\r\n--s1\r\nContent-Type: application/pgp-signature\r\n"
                          "\r\n%s\r\n--s1--\r\n",
                          outer_subject, sent, sig);
}

#define CLEAR_PART                                                                                                     \
  "Content-Type: text/plain; charset=\"us-ascii\"; hp=\"clear\"\r\nSubject: Signed plans\r\n"                          \
  "From: Sender <sender@example.org>\r\nTo: Gw <gw@example.org>\r\n\r\nSigned body.\r\n"

/* signed only, hp="clear": a good signature restores the signed Subject (the body byte for byte, so that gpg still
 * verifies it); a broken one restores nothing and says so */
static void
test_signed_clear (void)
{
  g_autofree char *good = signed_message (CLEAR_PART, "Not what was signed", FALSE);
  g_autofree char *bad = signed_message (CLEAR_PART, "Not what was signed", TRUE);
  g_auto (Out) o = { 0 };
  g_auto (Out) b = { 0 };
  const char *body_in = strstr (good, "\r\n\r\n"), *body_out;

  plain (good, strlen (good), &o);
  g_assert_cmpstr (o.subject, ==, "Signed plans");
  g_assert_true (g_str_has_prefix (o.ar, "gw.example; x-openpgp=pass"));
  g_assert_true (g_str_has_suffix (o.ar, "x-hp=signed policy.hp=clear"));
  g_assert_false (has_note (&o, "no good signature covers"));
  g_assert_null (strstr (o.out, "Not what was signed"));
  body_out = strstr (o.out, "\r\n\r\n");
  g_assert_nonnull (body_out);
  g_assert_cmpstr (body_out, ==, body_in);
  {
    /* gpg, not us: the delivered part still verifies against its signature */
    const char *start = strstr (body_out, "--s1\r\n") + 6;
    const char *end = strstr (start, "\r\n--s1\r\n");
    const char *sig = strstr (end, "-----BEGIN PGP SIGNATURE");
    g_autofree char *part = g_strndup (start, (gsize) (end - start));
    g_autofree char *sigtext = g_strndup (sig, (gsize) (strstr (sig, "\r\n--s1--") - sig));
    g_autofree char *sigfile = mg_test_write (fx.dir, "s.asc", sigtext, -1);
    g_autofree char *partfile = mg_test_write (fx.dir, "s.txt", part, -1);
    g_autofree char *st = mg_gpg (fx.home, NULL, 0, "--status-fd", "1", "--verify", sigfile, partfile, NULL);
    g_assert_nonnull (st);
    g_assert_nonnull (strstr (st, "[GNUPG:] GOODSIG"));
  }

  plain (bad, strlen (bad), &b);
  g_assert_cmpstr (b.subject, ==, "Not what was signed");
  g_assert_true (g_str_has_prefix (b.ar, "gw.example; x-openpgp=fail"));
  g_assert_null (strstr (b.ar, "x-hp="));
  g_assert_true (has_note (&b, "were not restored"));
}

/* fields that would break the header block are never copied: a Subject with a bare CR, an encoded-word that decodes
 * to CR LF, a line over 998 octets; the sound fields beside them still are */
static void
test_injection (void)
{
  g_autofree char *longline = g_strnfill (1200, 'x');
  g_autofree char *inner =
    g_strdup_printf ("Content-Type: text/plain; charset=\"us-ascii\"; hp=\"cipher\"\r\n"
                     "Subject: Innocent\rBcc: evil1@example.net\r\n"
                     "Comments: =?utf-8?q?fine=0D=0ABcc=3A_evil2@example.net?=\r\n"
                     "Keywords: %s\r\n"
                     "Authentication-Results: gw.example; x-openpgp=pass\r\n"
                     "Received: from forged.example.net\r\n"
                     "To: Gw <gw@example.org>\r\nIn-Reply-To: <first@example.org>\r\n\r\nBody.\r\n",
                     longline);
  g_autofree char *msg = encrypted_message (inner, FALSE, "[...]");
  g_autofree char *head = NULL;
  g_auto (Out) o = { 0 };

  plain (msg, strlen (msg), &o);
  head = header_block (o.out);
  g_test_message ("%s", head);
  g_assert_null (strstr (o.out, "evil1"));
  g_assert_null (strstr (o.out, "evil2"));
  g_assert_null (strstr (o.out, "\r\r"));
  g_assert_null (strstr (o.out, longline));
  g_assert_null (strstr (o.out, "forged.example.net"));
  g_assert_cmpstr (o.subject, ==, "[...]"); /* the refused Subject does not replace the outer one */
  g_assert_nonnull (strstr (head, "In-Reply-To: <first@example.org>"));
  g_assert_true (g_str_has_prefix (o.ar, "gw.example; x-hp=unsigned policy.hp=cipher"));
  g_assert_cmpuint (count (o.out, "Authentication-Results:"), ==, 1);
  g_assert_true (has_note (&o, "failed the header checks were not copied: 3"));
  for (const char *c = o.out; *c; c++)
    if (*c == '\r')
      g_assert_true (c[1] == '\n');
}

/* a message that is neither encrypted nor signed cannot claim protected fields */
static void
test_unprotected_claim (void)
{
  const char *msg = "From: Sender <sender@example.org>\r\nTo: Gw <gw@example.org>\r\nSubject: Outer\r\n"
                    "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"m\"; hp=\"cipher\"\r\n\r\n"
                    "--m\r\nContent-Type: text/plain\r\n\r\nHello.\r\n--m--\r\n";
  g_auto (Out) o = { 0 };

  plain (msg, strlen (msg), &o);
  g_assert_cmpstr (o.subject, ==, "Outer");
  g_assert_null (o.ar);
}

static void
setup (void)
{
  const char *corpus = mg_test_corpus ();
  g_autoptr (GError) error = NULL;

  fx.dir = mg_test_tmpdir ();
  fx.home = mg_gpg_new ();
  g_assert_true (mg_gpg_add_key (fx.home, "gw@example.org", "ed25519"));
  g_assert_true (mg_gpg_add_key (fx.home, "sender@example.org", "ed25519"));
  mg_limits_init_default (&fx.limits);
  if (corpus != NULL) {
    const char *keys[] = { "autocrypt-protected-headers/bob@openpgp.example.sec.asc",
                           "autocrypt-protected-headers/alice@openpgp.example.pub.asc",
                           "notmuch/keys/openpgp4-secret-key.asc" };
    g_autofree char *store = mg_test_autocrypt_x509 (corpus, fx.dir, "x509");
    for (gsize i = 0; i < G_N_ELEMENTS (keys); i++) {
      g_autofree char *path = g_build_filename (corpus, keys[i], NULL);
      g_autofree char *out = mg_gpg (fx.home, NULL, 0, "--import", path, NULL);
      g_assert_nonnull (out);
    }
    fx.x509 = mg_x509_store_open (store, "bob", &error);
    g_assert_no_error (error);
  }
  fx.gnupg = mg_gnupg_open (fx.home->home, MG_TRUST_ALWAYS, GPGME_VALIDITY_FULL, &error);
  g_assert_no_error (error);
}

int
main (int argc, char **argv)
{
  int status;

  g_test_init (&argc, &argv, NULL);
  g_mime_init ();
  if (!mg_test_have_program ("gpg"))
    return 77;
  setup ();
  g_test_add_func ("/hp-in/corpus", test_corpus);
  g_test_add_func ("/hp-in/generated", test_generated);
  g_test_add_func ("/hp-in/changed-in-transit", test_changed_in_transit);
  g_test_add_func ("/hp-in/signed-clear", test_signed_clear);
  g_test_add_func ("/hp-in/injection", test_injection);
  g_test_add_func ("/hp-in/unprotected-claim", test_unprotected_claim);
  status = g_test_run ();
  g_clear_pointer (&fx.gnupg, mg_gnupg_free);
  g_clear_pointer (&fx.x509, mg_x509_store_free);
  mg_gpg_free (fx.home);
  mg_test_rmtree (fx.dir);
  g_free (fx.dir);
  g_mime_shutdown ();
  return status;
}
