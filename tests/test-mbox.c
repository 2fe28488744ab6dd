/* test-mbox.c - mbox files as sources.c reads them through GMime's parser in mbox mode (RFC 4155): where messages
 * begin, the bytes each message is handed on as (its "From " line included), mboxrd's ">From " quoting undone, and
 * an unquoted "From " line after an empty line inside a MIME part, which begins a new message (mboxo and mboxrd
 * writers quote such lines, so an unquoted one is a separator; GMime reads it so, as mutt and Thunderbird do). */
#include "config.h"

#include <string.h>

#include <gmime/gmime.h>

#include "sources.h"
#include "testutil.h"

typedef struct {
  GPtrArray *messages; /* (element-type GBytes) */
  gboolean in_mbox;
  guint64 last_done;
} Collected;

static void
collect_cb (const char *path, guint index, gboolean in_mbox, const guint8 *data, gsize len, guint64 done,
            gpointer user_data)
{
  Collected *c = user_data;

  g_assert_cmpuint (index, ==, c->messages->len + 1);
  g_assert_cmpuint (done, >=, c->last_done);
  c->last_done = done;
  c->in_mbox = in_mbox;
  g_ptr_array_add (c->messages, g_bytes_new (data, len));
}

#define FROM1 "From alice@example.org Mon Jan  1 00:00:00 2024\n"
#define FROM2 "From bob@example.org Tue Jan  2 00:00:00 2024\n"
#define MIME_HEAD                                                                                                      \
  "Subject: parts\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\n"

static void
test_mbox_split (void)
{
  struct {
    const char *name;
    const char *file;
    gboolean in_mbox;
    const char *want[4]; /* each message as handed on */
  } cases[] = {
    { "not an mbox: one message", "Subject: a\n\nFrom here on\n", FALSE, { "Subject: a\n\nFrom here on\n" } },
    { "empty file", "", FALSE, { "" } },
    { "two messages",
      FROM1 "Subject: a\n\none\n\n" FROM2 "Subject: b\n\ntwo\n",
      TRUE,
      { FROM1 "Subject: a\n\none\n\n", FROM2 "Subject: b\n\ntwo\n" } },
    { "one message, CRLF",
      "From a@b Mon Jan  1 00:00:00 2024\r\nSubject: a\r\n\r\none\r\n",
      TRUE,
      { "From a@b Mon Jan  1 00:00:00 2024\r\nSubject: a\r\n\r\none\r\n" } },
    /* mboxrd: one '>' off each ">...>From " line; other lines that start with '>' stay */
    { ">From quoting",
      FROM1 "Subject: q\n\n>From the start\n>>From twice\n>Fromage\n> From not quoting\n>From\n\n" FROM2
            "Subject: r\n\n>From b\n",
      TRUE,
      { FROM1 "Subject: q\n\nFrom the start\n>From twice\n>Fromage\n> From not quoting\n>From\n\n",
        FROM2 "Subject: r\n\nFrom b\n" } },
    /* an unquoted "From " after an empty line in the middle of a MIME part: a new message begins there; the first
     * one ends without its closing boundary, as every mbox reader would cut it */
    { "From after an empty line inside a MIME part",
      FROM1 MIME_HEAD "first paragraph\n\nFrom the desk of Alice\nmore\n--b--\n",
      TRUE,
      { FROM1 MIME_HEAD "first paragraph\n\n", "From the desk of Alice\nmore\n--b--\n" } },
    /* ... and the message after it is still found: GMime's parser stops at the piece it cannot read as headers,
     * a new one starts at the next "From " line */
    { "a message after the unquoted From",
      FROM1 MIME_HEAD "p\n\nFrom the desk\nmore\n--b--\n\n" FROM2 "Subject: b\n\ntwo\n",
      TRUE,
      { FROM1 MIME_HEAD "p\n\n", "From the desk\nmore\n--b--\n\n", FROM2 "Subject: b\n\ntwo\n" } },
    /* the same line quoted (as a writer must): one message, the line given back unquoted */
    { "the same From quoted",
      FROM1 MIME_HEAD "first paragraph\n\n>From the desk of Alice\nmore\n--b--\n",
      TRUE,
      { FROM1 MIME_HEAD "first paragraph\n\nFrom the desk of Alice\nmore\n--b--\n" } },
  };

  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++) {
    g_autofree char *dir = mg_test_tmpdir ();
    g_autofree char *path = mg_test_write (dir, "box", cases[i].file, -1);
    g_autoptr (GError) error = NULL;
    g_autoptr (GPtrArray) messages = g_ptr_array_new_with_free_func ((GDestroyNotify) g_bytes_unref);
    Collected c = { messages, FALSE, 0 };
    guint n = 0;

    g_test_message ("%s", cases[i].name);
    g_assert_true (mg_source_read (path, collect_cb, &c, &error));
    g_assert_no_error (error);
    while (n < G_N_ELEMENTS (cases[i].want) && cases[i].want[n] != NULL)
      n++;
    g_assert_cmpuint (messages->len, ==, n);
    g_assert_cmpint (c.in_mbox, ==, cases[i].in_mbox);
    g_assert_cmpuint (c.last_done, ==, strlen (cases[i].file));
    for (guint m = 0; m < n; m++) {
      gsize len;
      const char *got = g_bytes_get_data (g_ptr_array_index (messages, m), &len);
      g_autofree char *text = g_strndup (got ? got : "", len);
      g_assert_cmpstr (text, ==, cases[i].want[m]);
    }
    mg_test_rmtree (dir);
  }
}

/* the same through `mimegate scan`: the message count of an mbox with a quoted and an unquoted "From " line */
static void
test_mbox_scan (void)
{
  g_autofree char *dir = mg_test_tmpdir ();
  g_autofree char *path = mg_test_write (
    dir, "box", FROM1 MIME_HEAD "a\n\n>From quoted\n\nFrom unquoted\n--b--\n\n" FROM2 "Subject: b\n\nx\n", -1);
  const char *argv[] = { mg_test_mimegate (), "scan", "--json", "--no-progress", path, NULL };
  MgRun r;

  g_assert_true (mg_test_run (&r, argv, NULL, NULL, 0));
  g_assert_cmpint (r.status, ==, 0);
  g_assert_nonnull (strstr (r.out, "\"files\":1,\"messages\":3,"));
  mg_run_clear (&r);
  mg_test_rmtree (dir);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_mime_init ();
  g_test_add_func ("/mbox/split", test_mbox_split);
  g_test_add_func ("/mbox/scan", test_mbox_scan);
  return g_test_run ();
}
