/* test-hp-more.c - header protection, the rest of issue 17 (RFC 9788): the legacy display that obscure (the default
 * for what is encrypted) puts in the main body parts, seen by gpg --decrypt, openssl cms -decrypt and Python's email
 * package (text/plain lines, the text/html div, hp-legacy-display="1", a signed part beside it byte for byte and still
 * verifying with gpg, no display and a note where no main body part is text); the round trip through mimegate as the
 * recipient's gateway (convert --to plain: the real Subject back, the display and HP-Outer gone); conversion to
 * PGP/Inline of a message with the sender's protected fields (RFC 9788 and the corpus's protected-headers="v1"):
 * restored outside, noted, the armored text without the display; and S/MIME to PGP/MIME of the corpus's protected
 * S/MIME sample: the payload re-encrypted as it was (gpg's output equals the corpus's .inner). */
#include "config.h"

#include <string.h>

#include <gpgme.h>

#include "convert.h"
#include "gnupg.h"
#include "mg-gmime.h"
#include "testutil.h"
#include "x509.h"

static struct {
  MgGpg *gpg; /* the gateway's home: alice (signs), bob, inline (recipients; bob's secret key held); corpus keys */
  MgCa *ca;   /* dave: the gateway holds his key (S/MIME recipient, and the recipient's gateway in the round trip) */
  char *dir;
  char *store;
  char *conf;
  MgGnupg *gnupg;
  MgX509Store *corpus_x509; /* (nullable): the corpus's bob.p12 and its sample CA */
  MgLimits limits;
} fx;

#define SUBJECT "=?UTF-8?Q?Gr=C3=BC=C3=9Fe?= about the Jones contract"

static const char simple[] = "From: Sender <sender@example.net>\n"
                             "To: Bob <bob@example.org>, Dave <dave@example.net>\n"
                             "Subject: " SUBJECT "\n"
                             "Date: Mon, 1 Jan 2024 10:00:00 +0000\n"
                             "Message-ID: <hp-more@example.net>\n"
                             "Keywords: merger\n"
                             "MIME-Version: 1.0\n"
                             "Content-Type: text/plain; charset=utf-8\n"
                             "Content-Transfer-Encoding: quoted-printable\n"
                             "\n"
                             "Gr=C3=BC=C3=9Fe, the contract is signed.\n";

/* what Python's email package decodes from the legacy-displayed text of @simple */
#define SIMPLE_SHOWN "Subject: Grüße about the Jones contract\nKeywords: merger\n\nGrüße, the contract is signed.\n"

/* convert_cli - mimegate convert -c CONF [--header-protection HP] --to FORM -r RCPT, @input on a file */
static void
convert_cli (MgRun *r, const char *hp, const char *form, const char *rcpt, const char *input, gsize len)
{
  g_autofree char *file = mg_test_write (fx.dir, "in.eml", input, (gssize) len);
  g_auto (GStrv) env = mg_test_env ("LANGUAGE", NULL, "LC_ALL", "C.UTF-8", NULL);
  const char *with[] = {
    mg_test_mimegate (), "convert", "-c", fx.conf, "--header-protection", hp, "--to", form, "-r", rcpt, file, NULL
  };
  const char *without[] = { mg_test_mimegate (), "convert", "-c", fx.conf, "--to", form, "-r", rcpt, file, NULL };

  g_assert_true (mg_test_run (r, hp ? with : without, (const char *const *) env, NULL, 0));
}

/* head - the header section of @data, line ends made LF */
static char *
head (const char *data)
{
  const char *end = strstr (data, "\n\n"), *crlf = strstr (data, "\r\n\r\n");
  g_autofree char *h = NULL;
  GString *s = g_string_new (NULL);

  if (crlf != NULL && (end == NULL || crlf < end))
    end = crlf;
  h = g_strndup (data, end ? (gsize) (end - data) : strlen (data));
  for (const char *c = h; *c; c++)
    if (*c != '\r')
      g_string_append_c (s, *c);
  return g_string_free (s, FALSE);
}

/* in_head - whether the header section of @msg contains @text */
static gboolean
in_head (const char *msg, const char *text)
{
  g_autofree char *h = head (msg);

  return strstr (h, text) != NULL;
}

static guint
count (const char *hay, const char *needle)
{
  guint n = 0;

  for (const char *p = strstr (hay, needle); p != NULL; p = strstr (p + 1, needle))
    n++;
  return n;
}

/* leaves - Python's email package on @entity: for each leaf "== CONTENT-TYPE (unfolded)" and, for text, its decoded
 * text (LF line ends): an independent reading of what GMime and our encoder wrote */
static char *
leaves (const char *entity)
{
  static const char script[] = "import email, email.policy, sys\n"
                               "m = email.message_from_bytes(sys.stdin.buffer.read(), policy=email.policy.compat32)\n"
                               "for p in m.walk():\n"
                               "    if p.is_multipart():\n"
                               "        continue\n"
                               "    print('== ' + ' '.join(str(p.get('Content-Type')).split()))\n"
                               "    if p.get_content_maintype() == 'text':\n"
                               "        t = p.get_payload(decode=True).decode(p.get_content_charset() or 'us-ascii')\n"
                               "        sys.stdout.write(t.replace('\\r\\n', '\\n') + '\\n')\n";
  const char *argv[] = { "python3", "-c", script, NULL };
  MgRun r;
  char *out;

  g_assert_true (mg_test_run (&r, argv, NULL, entity, strlen (entity)));
  if (r.status != 0)
    g_test_message ("python3: %s", r.err);
  g_assert_cmpint (r.status, ==, 0);
  out = g_strdup (r.out);
  mg_run_clear (&r);
  return out;
}

/* the default is obscure for what is encrypted: "[...]" outside, the legacy display inside; for what is only signed
 * it is sign-only: the Subject outside, hp="clear", no legacy display */
static void
test_default (void)
{
  g_autofree char *inner = NULL, *outer = NULL, *text = NULL;
  MgRun r;

  convert_cli (&r, NULL, "pgp-mime", "bob@example.org", simple, strlen (simple));
  g_assert_cmpint (r.status, ==, 0);
  outer = head (r.out);
  g_assert_nonnull (strstr (outer, "\nSubject: [...]\n"));
  g_assert_null (strstr (r.out, "Jones"));
  inner = mg_test_gpg_decrypt (fx.gpg, r.out);
  g_assert_true (g_str_has_prefix (inner, "Content-Type: text/plain; charset=utf-8; hp=\"cipher\";\r\n"
                                          " hp-legacy-display=\"1\"\r\n"));
  text = leaves (inner);
  g_assert_cmpstr (text, ==,
                   "== text/plain; charset=utf-8; hp=\"cipher\"; hp-legacy-display=\"1\"\n" SIMPLE_SHOWN "\n");
  mg_run_clear (&r);

  {
    g_auto (GStrv) env = mg_test_env ("LANGUAGE", NULL, "LC_ALL", "C.UTF-8", NULL);
    g_autofree char *file = mg_test_write (fx.dir, "simple.eml", simple, -1);
    g_autofree char *signed_head = NULL;
    const char *argv[] = {
      mg_test_mimegate (),  "convert", "-c", fx.conf, "--sign", "alice@example.org", "--to", "plain", "-r",
      "anyone@example.org", file,      NULL
    };
    g_assert_true (mg_test_run (&r, argv, (const char *const *) env, NULL, 0));
    g_assert_cmpint (r.status, ==, 0);
    g_assert_true (in_head (r.out, "\nSubject: " SUBJECT "\n"));
    g_assert_nonnull (strstr (r.out, "hp=\"clear\""));
    g_assert_null (strstr (r.out, "hp-legacy-display"));
    g_assert_null (strstr (r.out, "HP-Outer"));
    signed_head = head (strstr (r.out, "Content-Type: text/plain"));
    g_assert_nonnull (strstr (signed_head, "\nSubject: " SUBJECT));
    mg_run_clear (&r);
  }
}

#define SIGNED_PART "Content-Type: text/plain; charset=us-ascii\r\n\r\nForwarded, and signed by Alice.\r\n"

/* structured - multipart/mixed: an alternative (iso-8859-1 8bit text, HTML) as the main body part, a forwarded
 * multipart/signed by alice (gpg) and a PDF after it, CRLF throughout; *@sig: the signature block */
static char *
structured (char **sig)
{
  *sig = mg_gpg (fx.gpg, SIGNED_PART, strlen (SIGNED_PART), "--armor", "--local-user", "alice@example.org",
                 "--digest-algo", "SHA256", "--detach-sign", NULL);
  g_assert_nonnull (*sig);
  return g_strdup_printf (
    "From: Sender <sender@example.net>\r\nTo: Bob <bob@example.org>\r\nSubject: Lunch & <plans>\r\n"
    "Message-ID: <hp-more-2@example.net>\r\nMIME-Version: 1.0\r\n"
    "Content-Type: multipart/mixed; boundary=\"mix\"\r\n\r\n"
    "--mix\r\nContent-Type: multipart/alternative; boundary=\"alt\"\r\n\r\n"
    "--alt\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    "Caf\xe9 at noon.\r\n"
    "--alt\r\nContent-Type: text/html; charset=us-ascii\r\n\r\n"
    "<html><head><title>t</title></head><BODY class=\"m\"><p>Caf&eacute; at noon.</p></BODY></html>\r\n"
    "--alt--\r\n"
    "--mix\r\nContent-Type: multipart/signed; protocol=\"application/pgp-signature\"; micalg=pgp-sha256;"
    " boundary=\"sig\"\r\n\r\n--sig\r\n" SIGNED_PART "\r\n--sig\r\nContent-Type: application/pgp-signature\r\n\r\n"
    "%s\r\n--sig--\r\n"
    "--mix\r\nContent-Type: application/pdf; name=\"a.pdf\"\r\nContent-Disposition: attachment; filename=\"a.pdf\"\r\n"
    "Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--mix--\r\n",
    *sig);
}

/* assert_signed_verifies - the forwarded signed part in @clear (CRLF) is byte for byte what alice signed, and gpg
 * verifies it there */
static void
assert_signed_verifies (const char *clear)
{
  const char *start = strstr (clear, "--sig\r\n"), *end, *sig;
  g_autofree char *part = NULL, *sigtext = NULL, *partfile = NULL, *sigfile = NULL, *status = NULL;
  g_autofree char *alice = mg_gpg_fingerprint (fx.gpg, "alice@example.org");

  g_assert_nonnull (start);
  start += 7;
  end = strstr (start, "\r\n--sig\r\n");
  g_assert_nonnull (end);
  part = g_strndup (start, (gsize) (end - start));
  g_assert_cmpstr (part, ==, SIGNED_PART);
  sig = strstr (end, "-----BEGIN PGP SIGNATURE");
  g_assert_nonnull (sig);
  sigtext = g_strndup (sig, (gsize) (strstr (sig, "\r\n--sig--") - sig));
  partfile = mg_test_write (fx.dir, "signed.txt", part, -1);
  sigfile = mg_test_write (fx.dir, "signed.asc", sigtext, -1);
  status = mg_gpg (fx.gpg, NULL, 0, "--status-fd", "1", "--verify", sigfile, partfile, NULL);
  g_assert_nonnull (status);
  g_assert_nonnull (strstr (status, "[GNUPG:] GOODSIG"));
  g_assert_nonnull (strstr (status, alice));
}

/* the legacy display in each main body part (the text and the HTML alternative), HTML-escaped in the div, the parts
 * re-encoded as UTF-8; the signed part and the PDF beside them untouched */
static void
test_structure (void)
{
  g_autofree char *sig = NULL;
  g_autofree char *msg = structured (&sig);
  g_autofree char *clear = NULL, *text = NULL;
  MgRun r;

  convert_cli (&r, NULL, "pgp-mime", "bob@example.org", msg, strlen (msg));
  g_assert_cmpint (r.status, ==, 0);
  g_assert_true (in_head (r.out, "\nSubject: [...]\n"));
  clear = mg_test_gpg_decrypt (fx.gpg, r.out);
  g_test_message ("%s", clear);
  text = leaves (clear);
  g_assert_cmpstr (text, ==,
                   "== text/plain; charset=utf-8; hp-legacy-display=\"1\"\n"
                   "Subject: Lunch & <plans>\n\nCafé at noon.\n"
                   "== text/html; charset=utf-8; hp-legacy-display=\"1\"\n"
                   "<html><head><title>t</title></head><BODY class=\"m\">\n"
                   "<div class=\"header-protection-legacy-display\">\n<pre>Subject: Lunch &amp; &lt;plans&gt;</pre>\n"
                   "</div><p>Caf&eacute; at noon.</p></BODY></html>\n"
                   "== text/plain; charset=us-ascii\nForwarded, and signed by Alice.\n\n"
                   "== application/pgp-signature\n"
                   "== application/pdf; name=\"a.pdf\"\n");
  g_assert_cmpuint (count (clear, "hp-legacy-display"), ==, 2);
  g_assert_nonnull (strstr (clear, "\r\n\r\nJVBERi0xLjQK\r\n--mix--"));
  assert_signed_verifies (clear);
  mg_run_clear (&r);

  /* the recipient's gateway: plain gives the real Subject back and removes both displays */
  {
    g_autofree char *enc = NULL;
    convert_cli (&r, NULL, "pgp-mime", "bob@example.org", msg, strlen (msg));
    enc = g_strndup (r.out, r.out_len);
    mg_run_clear (&r);
    convert_cli (&r, NULL, "plain", "bob@example.org", enc, strlen (enc));
    g_assert_cmpint (r.status, ==, 0);
    g_free (text);
    text = leaves (r.out);
    g_assert_true (in_head (r.out, "\nSubject: Lunch & <plans>\n"));
    g_assert_null (strstr (r.out, "hp-legacy-display"));
    g_assert_null (strstr (r.out, "header-protection-legacy-display"));
    g_assert_null (strstr (r.out, "HP-Outer"));
    /* each in the charset GMime picks for it once the display is gone: the ones it came in */
    g_assert_true (g_str_has_prefix (text, "== text/plain; charset=iso-8859-1\nCafé at noon.\n"
                                           "== text/html; charset=us-ascii\n<html><head><title>t</title></head>"
                                           "<BODY class=\"m\">\n<p>Caf&eacute; at noon.</p></BODY></html>\n"));
    mg_run_clear (&r);
  }
}

/* keys_for - what mg_convert() may use, in-process (the notes come back) */
static MgConvertKeys
keys_for (MgHeaderProtection hp)
{
  MgConvertKeys keys = { fx.gnupg, fx.corpus_x509, &fx.limits, FALSE, "gw.example", MG_SIGN_NONE, NULL, hp };
  return keys;
}

/* run - @data converted in-process to @form for @rcpt; the test fails on an error */
static char *
run (const char *data, gsize len, MgForm form, const char *rcpt, MgHeaderProtection hp, GPtrArray **notes)
{
  g_autoptr (GBytes) in = g_bytes_new (data, len);
  const char *rcpts[] = { rcpt, NULL };
  MgConvertKeys keys = keys_for (hp);
  MgConvertResult result;
  g_autoptr (GError) error = NULL;
  g_autoptr (GBytes) out = NULL;

  mg_convert_result_init (&result);
  out = mg_convert (in, form, rcpts, &keys, &result, &error);
  g_assert_no_error (error);
  *notes = g_steal_pointer (&result.notes);
  mg_convert_result_clear (&result);
  return g_strndup (g_bytes_get_data (out, NULL), g_bytes_get_size (out));
}

static gboolean
has_note (GPtrArray *notes, const char *part)
{
  for (guint i = 0; i < notes->len; i++)
    if (strstr (g_ptr_array_index (notes, i), part) != NULL)
      return TRUE;
  return FALSE;
}

/* a payload whose only main body part is a signature the gateway must not break: no legacy display, a note, the
 * signed part as it was and still verifying */
static void
test_no_main_text (void)
{
  g_autofree char *sig = mg_gpg (fx.gpg, SIGNED_PART, strlen (SIGNED_PART), "--armor", "--local-user",
                                 "alice@example.org", "--digest-algo", "SHA256", "--detach-sign", NULL);
  g_autofree char *msg = g_strdup_printf (
    "From: Sender <sender@example.net>\r\nTo: Bob <bob@example.org>\r\nSubject: Signed inside\r\n"
    "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"mix\"\r\n\r\n"
    "--mix\r\nContent-Type: multipart/signed; protocol=\"application/pgp-signature\"; micalg=pgp-sha256;"
    " boundary=\"sig\"\r\n\r\n--sig\r\n" SIGNED_PART "\r\n--sig\r\nContent-Type: application/pgp-signature\r\n\r\n"
    "%s\r\n--sig--\r\n--mix\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    "JVBERi0xLjQK\r\n--mix--\r\n",
    sig);
  g_autoptr (GPtrArray) notes = NULL;
  g_autofree char *out = run (msg, strlen (msg), MG_FORM_PGP_MIME, "bob@example.org", MG_HP_OBSCURE, &notes);
  g_autofree char *clear = mg_test_gpg_decrypt (fx.gpg, out);

  g_assert_true (in_head (out, "\nSubject: [...]\n"));
  g_assert_null (strstr (clear, "hp-legacy-display"));
  g_assert_nonnull (strstr (clear, "hp=\"cipher\""));
  g_assert_true (has_note (notes, "no main body part can show the obscured Subject"));
  assert_signed_verifies (clear);
}

/* S/MIME, opened by openssl: the legacy display and hp-legacy-display="1" are there; then mimegate as the recipient's
 * gateway (holding dave's key) gives the real Subject back, without display or HP-Outer; PGP/MIME the same with gpg */
static void
test_round_trip (void)
{
  const struct {
    const char *form, *rcpt;
  } cases[] = { { "smime", "dave@example.net" }, { "pgp-mime", "bob@example.org" } };

  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++) {
    g_autofree char *enc = NULL, *clear = NULL, *text = NULL, *h = NULL;
    MgRun r;
    convert_cli (&r, "obscure", cases[i].form, cases[i].rcpt, simple, strlen (simple));
    g_assert_cmpint (r.status, ==, 0);
    enc = g_strndup (r.out, r.out_len);
    clear = i == 0 ? mg_test_cms_decrypt (fx.ca, "dave", r.out, r.out_len, NULL) : mg_test_gpg_decrypt (fx.gpg, r.out);
    mg_run_clear (&r);
    g_assert_nonnull (strstr (clear, "hp-legacy-display=\"1\""));
    g_assert_nonnull (strstr (clear, "\r\n\r\nSubject: Gr=C3=BC=C3=9Fe about the Jones contract\r\n"
                                     "Keywords: merger\r\n\r\nGr=C3=BC=C3=9Fe, the contract is signed."));
    text = leaves (clear);
    g_assert_true (g_str_has_suffix (text, SIMPLE_SHOWN "\n"));

    convert_cli (&r, NULL, "plain", cases[i].rcpt, enc, strlen (enc));
    g_assert_cmpint (r.status, ==, 0);
    h = head (r.out);
    g_test_message ("%s: %s", cases[i].form, r.out);
    g_assert_nonnull (strstr (h, "\nSubject: " SUBJECT "\n"));
    g_assert_nonnull (strstr (h, "\nKeywords: merger\n"));
    g_assert_cmpuint (count (h, "Subject:"), ==, 1);
    g_assert_nonnull (strstr (h, "x-hp=unsigned policy.hp=cipher"));
    g_assert_null (strstr (r.out, "[...]"));
    g_assert_null (strstr (r.out, "HP-Outer"));
    g_assert_null (strstr (r.out, "hp-legacy-display"));
    g_free (text);
    text = leaves (r.out);
    /* the text as it was (GMime writes it in the charset it picks once the display is gone) */
    g_assert_cmpstr (text, ==, "== text/plain; charset=iso-8859-1; hp=cipher\nGrüße, the contract is signed.\n\n");
    mg_run_clear (&r);
  }
}

/* armored_text - the decrypted armor of a PGP/Inline result's text (gpg) */
static char *
armored_text (const char *msg)
{
  g_autofree char *block = mg_test_pgp_block (msg);
  char *clear = mg_gpg (fx.gpg, block, strlen (block), "-d", NULL);

  g_assert_nonnull (clear);
  return clear;
}

/* PGP/Inline cannot carry protected fields: a message that came with them (ours, RFC 9788; the corpus's, the legacy
 * protected-headers="v1") gets them back outside, with a note and our x-hp stamp; the armored text has no display */
static void
test_inline_conversion (void)
{
  const char *corpus = mg_test_corpus ();

  {
    g_autoptr (GPtrArray) n1 = NULL, n2 = NULL;
    g_autofree char *enc = run (simple, strlen (simple), MG_FORM_PGP_MIME, "bob@example.org", MG_HP_OBSCURE, &n1);
    g_autofree char *out = run (enc, strlen (enc), MG_FORM_PGP_INLINE, "inline@example.org", MG_HP_OBSCURE, &n2);
    g_autofree char *h = head (out);
    g_autofree char *clear = armored_text (out);
    g_assert_nonnull (strstr (enc, "Subject: [...]"));
    g_assert_nonnull (strstr (h, "\nSubject: " SUBJECT "\n"));
    g_assert_nonnull (strstr (h, "\nKeywords: merger\n"));
    g_assert_cmpuint (count (h, "Subject:"), ==, 1);
    g_assert_null (strstr (out, "[...]"));
    g_assert_null (strstr (out, "HP-Outer"));
    g_assert_nonnull (strstr (h, "Authentication-Results: gw.example; x-hp=unsigned policy.hp=cipher"));
    g_assert_true (has_note (n2, "PGP/Inline cannot carry the sender's protected header fields; they are restored "
                                 "outside, the Subject in clear"));
    g_assert_false (has_note (n2, "PGP/Inline cannot protect header fields")); /* one note, not two */
    g_assert_cmpstr (clear, ==, "Grüße, the contract is signed.\r\n");
  }
  if (corpus == NULL) {
    g_test_message ("../shared/corpus is not beside the checkout: the legacy sample is skipped");
    return;
  }
  {
    g_autofree char *path = g_build_filename (corpus, "autocrypt-protected-headers/pgpmime-enc+legacy-disp.eml", NULL);
    gsize len;
    g_autofree char *data = mg_test_read (path, &len);
    g_autoptr (GPtrArray) notes = NULL;
    g_autofree char *out = NULL, *h = NULL, *clear = NULL;
    g_assert_nonnull (data);
    out = run (data, len, MG_FORM_PGP_INLINE, "inline@example.org", MG_HP_OBSCURE, &notes);
    h = head (out);
    clear = armored_text (out);
    g_assert_nonnull (strstr (h, "\nSubject: BarCorp contract signed, let's go!\n"));
    g_assert_null (strstr (h, "Subject: ...\n"));
    g_assert_nonnull (strstr (h, "x-hp=unsigned policy.hp=v1"));
    g_assert_true (has_note (notes, "they are restored outside"));
    g_assert_true (g_str_has_prefix (clear, "Hi Bob!"));
    g_assert_null (strstr (clear, "Subject:"));
  }
}

/* S/MIME to PGP/MIME keeps the sender's protection: the corpus's smime-enc+legacy-disp (protected-headers="v1",
 * legacy display part, outer Subject "...") re-encrypted for bob as it was: gpg gives the corpus's .inner back */
static void
test_smime_to_pgp (void)
{
  const char *corpus = mg_test_corpus ();
  g_autofree char *path = NULL, *inner_path = NULL, *data = NULL, *inner = NULL, *out = NULL, *clear = NULL;
  g_autoptr (GPtrArray) notes = NULL;
  g_autoptr (GString) want = g_string_new (NULL), got = g_string_new (NULL);
  gsize len;

  if (corpus == NULL || fx.corpus_x509 == NULL) {
    g_test_skip ("../shared/corpus is not beside the checkout");
    return;
  }
  path = g_build_filename (corpus, "autocrypt-protected-headers/smime-enc+legacy-disp.eml", NULL);
  inner_path = g_build_filename (corpus, "autocrypt-protected-headers/smime-enc+legacy-disp.inner", NULL);
  data = mg_test_read (path, &len);
  inner = mg_test_read (inner_path, NULL);
  g_assert_nonnull (data);
  g_assert_nonnull (inner);
  out = run (data, len, MG_FORM_PGP_MIME, "bob@example.org", MG_HP_OBSCURE, &notes);
  g_assert_true (in_head (out, "\nSubject: ...\n")); /* the sender's obscured outer Subject */
  g_assert_null (strstr (out, "BarCorp"));
  g_assert_true (has_note (notes, "the content carries the sender's own protected headers"));
  clear = mg_test_gpg_decrypt (fx.gpg, out);
  for (const char *c = inner; *c; c++)
    if (*c != '\r')
      g_string_append_c (want, *c);
  for (const char *c = clear; *c; c++)
    if (*c != '\r')
      g_string_append_c (got, *c);
  while (want->len > 0 && want->str[want->len - 1] == '\n')
    g_string_truncate (want, want->len - 1);
  while (got->len > 0 && got->str[got->len - 1] == '\n')
    g_string_truncate (got, got->len - 1);
  g_assert_cmpstr (got->str, ==, want->str);
  g_assert_null (strstr (clear, "hp-legacy-display")); /* nothing of ours added */
}

static void
setup (void)
{
  const char *corpus = mg_test_corpus ();
  g_autofree char *conf = NULL;
  g_autoptr (GError) error = NULL;

  fx.gpg = mg_gpg_new ();
  g_assert_true (mg_gpg_add_key (fx.gpg, "alice@example.org", "ed25519"));
  g_assert_true (mg_gpg_add_key (fx.gpg, "bob@example.org", "ed25519"));
  g_assert_true (mg_gpg_add_key (fx.gpg, "inline@example.org", "ed25519"));
  fx.ca = mg_ca_new ();
  g_assert_true (mg_ca_add_leaf (fx.ca, "dave", "dave@example.net"));
  fx.dir = mg_test_tmpdir ();
  fx.store = mg_ca_store (fx.ca, fx.dir, (const char *const[]){ "dave", NULL }, (const char *const[]){ "dave", NULL });
  conf =
    g_strdup_printf ("[gateway]\ngnupg-home = %s\nx509-store = %s\ntrust-model = always\nauthserv-id = gw.example\n",
                     fx.gpg->home, fx.store);
  fx.conf = mg_test_write (fx.dir, "mimegate.conf", conf, -1);
  mg_limits_init_default (&fx.limits);
  if (corpus != NULL) {
    const char *keys[] = { "autocrypt-protected-headers/bob@openpgp.example.sec.asc",
                           "autocrypt-protected-headers/alice@openpgp.example.pub.asc" };
    g_autofree char *store = mg_test_autocrypt_x509 (corpus, fx.dir, "corpus-x509");
    for (gsize i = 0; i < G_N_ELEMENTS (keys); i++) {
      g_autofree char *path = g_build_filename (corpus, keys[i], NULL);
      g_autofree char *out = mg_gpg (fx.gpg, NULL, 0, "--import", path, NULL);
      g_assert_nonnull (out);
    }
    fx.corpus_x509 = mg_x509_store_open (store, "bob", &error);
    g_assert_no_error (error);
  }
  fx.gnupg = mg_gnupg_open (fx.gpg->home, MG_TRUST_ALWAYS, GPGME_VALIDITY_FULL, &error);
  g_assert_no_error (error);
}

int
main (int argc, char **argv)
{
  int status;

  g_test_init (&argc, &argv, NULL);
  g_mime_init ();
  if (!mg_test_have_program ("gpg") || !mg_test_have_program ("openssl") || !mg_test_have_program ("python3"))
    return 77;
  setup ();
  g_test_add_func ("/hp-more/default", test_default);
  g_test_add_func ("/hp-more/structure", test_structure);
  g_test_add_func ("/hp-more/no-main-text", test_no_main_text);
  g_test_add_func ("/hp-more/round-trip", test_round_trip);
  g_test_add_func ("/hp-more/inline-conversion", test_inline_conversion);
  g_test_add_func ("/hp-more/smime-to-pgp", test_smime_to_pgp);
  status = g_test_run ();
  g_clear_pointer (&fx.gnupg, mg_gnupg_free);
  g_clear_pointer (&fx.corpus_x509, mg_x509_store_free);
  mg_gpg_free (fx.gpg);
  mg_ca_free (fx.ca);
  mg_test_rmtree (fx.dir);
  g_free (fx.dir);
  g_free (fx.store);
  g_free (fx.conf);
  g_mime_shutdown ();
  return status;
}
