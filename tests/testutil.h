/* testutil.h - helpers shared by mimegate's tests: running programs, temporary directories, a throw-away GnuPG home
 * and a throw-away OpenSSL CA. Everything is real (gpg, gpg-agent, openssl); nothing is mocked. */
#pragma once

#include <stdio.h>

#include <glib.h>

G_BEGIN_DECLS

typedef struct {
  int status; /* exit status, or 128 + signal */
  char *out;
  gsize out_len;
  char *err;
} MgRun;

void mg_run_clear (MgRun *run);
gboolean mg_test_run (MgRun *run, const char *const *argv, const char *const *envp, const char *input, gsize input_len);
gboolean mg_test_runf (MgRun *run, const char *input, const char *first, ...) G_GNUC_NULL_TERMINATED;
char **mg_test_env (const char *first_var, ...) G_GNUC_NULL_TERMINATED;

char *mg_test_tmpdir (void);
void mg_test_rmtree (const char *path);
const char *mg_test_corpus (void);
const char *mg_test_mimegate (void);
gboolean mg_test_have_program (const char *program);
char *mg_test_write (const char *dir, const char *name, const char *data, gssize len);
char *mg_test_read (const char *path, gsize *len);
char *mg_test_pgp_block (const char *msg);
char *mg_test_colon_field (const char *listing, const char *record, guint n);

/* a GnuPG home with one key pair per address, no passphrases; removed with its agent by mg_gpg_free() */
typedef struct {
  char *home;
} MgGpg;

MgGpg *mg_gpg_new (void);
gboolean mg_gpg_add_key (MgGpg *gpg, const char *address, const char *algo);
char *mg_gpg_encryption_keyid (MgGpg *gpg, const char *address);
char *mg_gpg_fingerprint (MgGpg *gpg, const char *address);
char *mg_gpg (MgGpg *gpg, const char *input, gsize input_len, const char *first_arg, ...) G_GNUC_NULL_TERMINATED;
void mg_gpg_free (MgGpg *gpg);

/* a root CA and leaf certificates made with the openssl command */
typedef struct {
  char *dir;
} MgCa;

MgCa *mg_ca_new (void);
gboolean mg_ca_add_leaf (MgCa *ca, const char *name, const char *address);
char *mg_ca_path (MgCa *ca, const char *name, const char *suffix);
char *mg_ca_serial (MgCa *ca, const char *name);
char *mg_ca_openssl (MgCa *ca, const char *input, gsize input_len, gsize *out_len, const char *first_arg,
                     ...) G_GNUC_NULL_TERMINATED;
char *mg_ca_store (MgCa *ca, const char *dir, const char *const *certs, const char *const *held);
void mg_ca_free (MgCa *ca);
gboolean mg_ca_add_intermediate (MgCa *ca, const char *name);
gboolean mg_ca_add_leaf_by (MgCa *ca, const char *issuer, const char *name, const char *address);
gboolean mg_ca_add_leaf_dated (MgCa *ca, const char *issuer, const char *name, const char *address, const char *usage,
                               const char *start, const char *end, int days);

guint mg_test_dir_entries (const char *dir);
void mg_test_random_base64 (GRand *rand, gsize bytes, GChecksum *sum, FILE *a, FILE *b);
char *mg_test_gpg_decrypt (MgGpg *gpg, const char *text);
char *mg_test_cms_decrypt (MgCa *ca, const char *who, const char *msg, gsize msg_len, gsize *len);
char *mg_test_autocrypt_x509 (const char *corpus, const char *dir, const char *name);

G_END_DECLS
