/* test_dkim.c - unit tests for outrelay/sign (keystore.c, dkim.c): key generation and loading
 * (algorithms, public keys, the TXT record, file modes, garbage and mismatched keys, ignored
 * names), choosing keys for a From domain (own, organisational, none), stripping DKIM-Signature
 * fields, and sign-then-verify through libopendkim with a test key lookup instead of DNS. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "mail/orgdomain.h"
#include "common/strbuf.h"
#include "common/util.h"
#include "mail/header_limits.h"
#include "config/config.h"
#include "sign/dkim.h"

static char tmpdir[] = "/tmp/outrelay-test-dkim-XXXXXX";
static char keydir[600];
/* Keys the test lookup answers from (set per test). */
static const struct dkim_keystore *lookup_keys;
static char lookup_record[2048];

static const char *test_lookup(const char *domain, const char *selector)
{
    for (size_t i = 0; lookup_keys && i < lookup_keys->n_keys; i++) {
        const struct dkim_key *k = &lookup_keys->keys[i];
        if (strcmp(k->domain, domain) == 0 && strcmp(k->selector, selector) == 0) {
            snprintf(lookup_record, sizeof lookup_record, "v=DKIM1; k=%s; p=%s",
                     k->algorithm == DKIM_ALG_RSA_SHA256 ? "rsa" : "ed25519", k->public_b64);
            return lookup_record;
        }
    }
    return NULL;
}

static void write_file(const char *path, const char *text, mode_t mode)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    assert_int_equal(chmod(path, mode), 0);
}

static void free_errors(char **errors, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(errors[i]);
    free(errors);
}

/* Joins the quoted strings of a TXT record as printed by dkim_dns_record; checks each is at
 * most 255 bytes. */
static void txt_join(const char *txt, char *out, size_t size)
{
    size_t o = 0;
    const char *p = txt;
    while ((p = strchr(p, '"')) != NULL) {
        const char *q = strchr(p + 1, '"');
        assert_non_null(q);
        size_t n = (size_t)(q - p - 1);
        assert_true(n <= 255);
        assert_true(o + n < size);
        memcpy(out + o, p + 1, n);
        o += n;
        p = q + 1;
    }
    out[o] = '\0';
}

static int setup(void **state)
{
    (void)state;
    char err[256];
    if (!mkdtemp(tmpdir)) return -1;
    snprintf(keydir, sizeof keydir, "%s/keys", tmpdir);
    /* the header lists of the embedded defaults (dkim.headers, dkim.oversign) */
    struct config *defaults = config_defaults();
    int rc = orgdomain_init(NULL, err, sizeof err) < 0 || dkim_setup(defaults, err, sizeof err) < 0;
    config_free(defaults);
    if (rc) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    /* The keys every test shares: example.org, RSA-2048 (default) and Ed25519. */
    struct strbuf txt = STRBUF_INIT;
    if (dkim_keygen(keydir, "example.org", "rsa1", DKIM_ALG_RSA_SHA256, 0, &txt, err, sizeof err) <
            0 ||
        dkim_keygen(keydir, "example.org", "ed1", DKIM_ALG_ED25519_SHA256, 0, &txt, err,
                    sizeof err) < 0) {
        fprintf(stderr, "%s\n", err);
        strbuf_free(&txt);
        return -1;
    }
    strbuf_free(&txt);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    dkim_verify_set_test_key_lookup(NULL);
    dkim_shutdown();
    orgdomain_shutdown();
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static void test_keygen_then_load(void **state)
{
    (void)state;
    char dir[700], err[256], path[800];
    snprintf(dir, sizeof dir, "%s/gen", tmpdir);
    struct strbuf rsa_txt = STRBUF_INIT, ed_txt = STRBUF_INIT;
    assert_int_equal(
        dkim_keygen(dir, "Example.COM", "s1", DKIM_ALG_RSA_SHA256, 1024, &rsa_txt, err, sizeof err),
        0);
    assert_int_equal(
        dkim_keygen(dir, "example.com", "s2", DKIM_ALG_ED25519_SHA256, 0, &ed_txt, err, sizeof err),
        0);
    /* Directories 0700, files 0600. */
    struct stat st;
    assert_int_equal(stat(dir, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
    snprintf(path, sizeof path, "%s/example.com", dir);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
    snprintf(path, sizeof path, "%s/example.com/s1.rsa.pem", dir);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    snprintf(path, sizeof path, "%s/example.com/s2.ed25519.pem", dir);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    /* Refuses to overwrite. */
    struct strbuf again = STRBUF_INIT;
    assert_int_equal(
        dkim_keygen(dir, "example.com", "s2", DKIM_ALG_ED25519_SHA256, 0, &again, err, sizeof err),
        -1);
    assert_non_null(strstr(err, "refusing to overwrite"));
    assert_int_equal(again.len, 0);
    /* Bad names and sizes. */
    assert_int_equal(
        dkim_keygen(dir, "bad domain", "s", DKIM_ALG_RSA_SHA256, 0, NULL, err, sizeof err), -1);
    assert_int_equal(
        dkim_keygen(dir, "example.com", "a/b", DKIM_ALG_RSA_SHA256, 0, NULL, err, sizeof err), -1);
    assert_int_equal(
        dkim_keygen(dir, "example.com", "s3", DKIM_ALG_RSA_SHA256, 512, NULL, err, sizeof err), -1);

    char **errors = NULL;
    size_t n_errors = 0;
    struct dkim_keystore *ks = dkim_keystore_load(dir, &errors, &n_errors);
    assert_non_null(ks);
    assert_int_equal(n_errors, 0);
    assert_int_equal(ks->n_keys, 2);
    const struct dkim_key *rsa = &ks->keys[0], *ed = &ks->keys[1];
    assert_int_equal(rsa->algorithm, DKIM_ALG_RSA_SHA256);
    assert_string_equal(rsa->domain, "example.com");
    assert_string_equal(rsa->selector, "s1");
    assert_int_equal(rsa->bits, 1024);
    assert_non_null(strstr(rsa->pem, "-----BEGIN PRIVATE KEY-----"));
    assert_int_equal(ed->algorithm, DKIM_ALG_ED25519_SHA256);
    assert_string_equal(ed->selector, "s2");
    assert_int_equal(ed->bits, 256);
    assert_int_equal(strlen(ed->public_b64), 44);              /* raw 32 bytes, RFC 8463 */
    assert_true(strncmp(rsa->public_b64, "MIGfMA0G", 8) == 0); /* SPKI DER of RSA-1024 */

    /* The record keygen printed carries the same public keys as the loaded ones. */
    char joined[2048], want[2048];
    txt_join(rsa_txt.data, joined, sizeof joined);
    snprintf(want, sizeof want, "v=DKIM1; k=rsa; p=%s", rsa->public_b64);
    assert_string_equal(joined, want);
    assert_true(strncmp(rsa_txt.data, "s1._domainkey.example.com. IN TXT ( ", 36) == 0);
    txt_join(ed_txt.data, joined, sizeof joined);
    snprintf(want, sizeof want, "v=DKIM1; k=ed25519; p=%s", ed->public_b64);
    assert_string_equal(joined, want);
    struct strbuf rec = STRBUF_INIT;
    dkim_dns_record(ed, &rec);
    assert_string_equal(rec.data, ed_txt.data);

    strbuf_free(&rec);
    dkim_keystore_free(ks);
    free_errors(errors, n_errors);
    strbuf_free(&rsa_txt);
    strbuf_free(&ed_txt);
    strbuf_free(&again);
}

/* keygen creates every missing parent of the key directory, 0700 like mkdir -p, and leaves
 * the mode of one that exists; a regular file in the path is an error naming it. */
static void test_keygen_creates_missing_parents(void **state)
{
    (void)state;
    char dir[700], err[256], path[800];
    snprintf(dir, sizeof dir, "%s/etc//outrelay/keys", tmpdir);
    assert_int_equal(
        dkim_keygen(dir, "example.com", "s1", DKIM_ALG_ED25519_SHA256, 0, NULL, err, sizeof err),
        0);
    const char *made[] = {"etc", "etc/outrelay", "etc/outrelay/keys",
                          "etc/outrelay/keys/example.com"};
    for (size_t i = 0; i < sizeof made / sizeof made[0]; i++) {
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", tmpdir, made[i]);
        assert_int_equal(stat(path, &st), 0);
        assert_int_equal(st.st_mode & 0777, 0700);
    }
    struct stat top;
    assert_int_equal(stat(tmpdir, &top), 0);
    assert_int_equal(top.st_mode & 0777, 0700); /* mkdtemp's, untouched */
    snprintf(path, sizeof path, "%s/etc/outrelay/keys/example.com/s1.ed25519.pem", tmpdir);
    assert_int_equal(access(path, F_OK), 0);

    snprintf(path, sizeof path, "%s/plain", tmpdir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fclose(f);
    snprintf(dir, sizeof dir, "%s/plain/keys", tmpdir);
    assert_int_equal(
        dkim_keygen(dir, "example.com", "s1", DKIM_ALG_ED25519_SHA256, 0, NULL, err, sizeof err),
        -1);
    assert_non_null(strstr(err, path));
}

static void test_rsa2048_record_strings_split(void **state)
{
    (void)state;
    char **errors = NULL;
    size_t n_errors = 0;
    struct dkim_keystore *ks = dkim_keystore_load(keydir, &errors, &n_errors);
    assert_non_null(ks);
    assert_int_equal(n_errors, 0);
    assert_int_equal(ks->n_keys, 2);
    assert_int_equal(ks->keys[0].bits, 2048);
    struct strbuf rec = STRBUF_INIT;
    dkim_dns_record(&ks->keys[0], &rec);
    char joined[2048], want[2048];
    txt_join(rec.data, joined, sizeof joined); /* asserts every string <= 255 bytes */
    snprintf(want, sizeof want, "v=DKIM1; k=rsa; p=%s", ks->keys[0].public_b64);
    assert_string_equal(joined, want);
    assert_true(strlen(ks->keys[0].public_b64) > 255);
    strbuf_free(&rec);
    dkim_keystore_free(ks);
    free(errors);
}

static void test_load_refuses_bad_files(void **state)
{
    (void)state;
    char dir[700], sub[800], path[900], err[256], cmd[2000];
    snprintf(dir, sizeof dir, "%s/bad", tmpdir);
    assert_int_equal(
        dkim_keygen(dir, "example.net", "open", DKIM_ALG_ED25519_SHA256, 0, NULL, err, sizeof err),
        0);
    assert_int_equal(
        dkim_keygen(dir, "example.net", "ok", DKIM_ALG_ED25519_SHA256, 0, NULL, err, sizeof err),
        0);
    snprintf(sub, sizeof sub, "%s/example.net", dir);
    snprintf(path, sizeof path, "%s/open.ed25519.pem", sub);
    assert_int_equal(chmod(path, 0644), 0);
    /* A read-only key is fine. */
    snprintf(path, sizeof path, "%s/ok.ed25519.pem", sub);
    assert_int_equal(chmod(path, 0400), 0);
    snprintf(path, sizeof path, "%s/garbage.rsa.pem", sub);
    write_file(path,
               "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5IGF0IGFsbA==\n-----END PRIVATE KEY-----\n",
               0600);
    /* An Ed25519 key under an RSA name. */
    snprintf(cmd, sizeof cmd, "cp -p '%s/ok.ed25519.pem' '%s/mislabelled.rsa.pem'", sub, sub);
    assert_int_equal(system(cmd), 0);
    /* Names outside the pattern are ignored without complaint. */
    snprintf(path, sizeof path, "%s/README", sub);
    write_file(path, "not a key\n", 0644);
    snprintf(path, sizeof path, "%s/sel.pem", sub);
    write_file(path, "not a key\n", 0644);
    snprintf(path, sizeof path, "%s/.hidden.rsa.pem", sub);
    write_file(path, "not a key\n", 0644);
    snprintf(path, sizeof path, "%s/file-not-dir", dir);
    write_file(path, "x\n", 0644);
    snprintf(path, sizeof path, "%s/not a domain", dir);
    assert_int_equal(mkdir(path, 0700), 0);
    snprintf(path, sizeof path, "%s/not a domain/x.rsa.pem", dir);
    write_file(path, "x\n", 0644);

    char **errors = NULL;
    size_t n_errors = 0;
    struct dkim_keystore *ks = dkim_keystore_load(dir, &errors, &n_errors);
    assert_non_null(ks);
    assert_int_equal(ks->n_keys, 1);
    assert_string_equal(ks->keys[0].selector, "ok");
    assert_int_equal(n_errors, 3);
    int seen_mode = 0, seen_garbage = 0, seen_type = 0;
    for (size_t i = 0; i < n_errors; i++) {
        if (strstr(errors[i], "/example.net/open.ed25519.pem: mode 0644 refused")) seen_mode = 1;
        if (strstr(errors[i], "/example.net/garbage.rsa.pem: ") &&
            strstr(errors[i], "not a readable"))
            seen_garbage = 1;
        if (strstr(errors[i], "/example.net/mislabelled.rsa.pem: not an RSA private key"))
            seen_type = 1;
    }
    if (!(seen_mode && seen_garbage && seen_type))
        for (size_t i = 0; i < n_errors; i++)
            fprintf(stderr, "load error: %s\n", errors[i]);
    assert_true(seen_mode);
    assert_true(seen_garbage);
    assert_true(seen_type);
    dkim_keystore_free(ks);
    free_errors(errors, n_errors);

    /* A missing directory is an empty store; errors may be NULL. */
    snprintf(path, sizeof path, "%s/missing", tmpdir);
    ks = dkim_keystore_load(path, NULL, NULL);
    assert_non_null(ks);
    assert_int_equal(ks->n_keys, 0);
    dkim_keystore_free(ks);
}

static void test_keystore_for(void **state)
{
    (void)state;
    char dir[700], err[256], cmd[3000];
    snprintf(dir, sizeof dir, "%s/for", tmpdir);
    snprintf(cmd, sizeof cmd, "mkdir -p '%s' && cp -rp '%s/example.org' '%s/'", dir, keydir, dir);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(dkim_keygen(dir, "own.example.org", "o1", DKIM_ALG_ED25519_SHA256, 0, NULL,
                                 err, sizeof err),
                     0);
    struct dkim_keystore *ks = dkim_keystore_load(dir, NULL, NULL);
    assert_non_null(ks);
    assert_int_equal(ks->n_keys, 3);
    const struct dkim_key *out[4];

    assert_int_equal(dkim_keystore_for(ks, "Example.ORG.", out, 4), 2);
    assert_string_equal(out[0]->domain, "example.org");
    assert_int_equal(out[0]->algorithm, DKIM_ALG_RSA_SHA256);
    assert_int_equal(out[1]->algorithm, DKIM_ALG_ED25519_SHA256);
    /* A subdomain without keys of its own: the organisational domain's keys. */
    assert_int_equal(dkim_keystore_for(ks, "sub.example.org", out, 4), 2);
    assert_string_equal(out[0]->domain, "example.org");
    assert_int_equal(dkim_keystore_for(ks, "deep.sub.example.org", out, 4), 2);
    /* A subdomain with keys: only its own. */
    assert_int_equal(dkim_keystore_for(ks, "own.example.org", out, 4), 1);
    assert_string_equal(out[0]->selector, "o1");
    /* Unrelated domains, suffixes and the max bound. */
    assert_int_equal(dkim_keystore_for(ks, "example.net", out, 4), 0);
    assert_int_equal(dkim_keystore_for(ks, "org", out, 4), 0);
    assert_int_equal(dkim_keystore_for(ks, "xexample.org", out, 4), 0);
    assert_int_equal(dkim_keystore_for(ks, "example.org", out, 1), 1);
    dkim_keystore_free(ks);
}

static void test_strip_signatures(void **state)
{
    (void)state;
    static const char in[] = "DKIM-Signature: v=1; a=rsa-sha256; d=a.example;\r\n"
                             "\tb=AAAA\r\n"
                             "\t BBBB\r\n"
                             "From: a@example.org\r\n"
                             "dkim-signature : v=1; d=b.example; b=CCCC\r\n"
                             "X-DKIM-Signature: kept\r\n"
                             "Subject: DKIM-Signature: kept too\r\n"
                             " DKIM-Signature: a continuation of Subject\r\n"
                             "DKIM-Signature: v=1;\r\n"
                             "  folded=yes\r\n"
                             "\r\n"
                             "DKIM-Signature: this is body text\r\n";
    static const char want[] = "From: a@example.org\r\n"
                               "X-DKIM-Signature: kept\r\n"
                               "Subject: DKIM-Signature: kept too\r\n"
                               " DKIM-Signature: a continuation of Subject\r\n"
                               "\r\n"
                               "DKIM-Signature: this is body text\r\n";
    char buf[sizeof in];
    memcpy(buf, in, sizeof in);
    size_t n = dkim_strip_signatures(buf, sizeof in - 1);
    assert_int_equal(n, sizeof want - 1);
    assert_memory_equal(buf, want, n);

    /* LF-only, and a message that is all header. */
    char lf[] = "From: x\nDKIM-Signature: a;\n b\nTo: y\n\nDKIM-Signature: body\n";
    n = dkim_strip_signatures(lf, strlen(lf));
    assert_int_equal(n, strlen("From: x\nTo: y\n\nDKIM-Signature: body\n"));
    assert_memory_equal(lf, "From: x\nTo: y\n\nDKIM-Signature: body\n", n);
    char only[] = "From: x\r\nDKIM-Signature: a\r\n";
    n = dkim_strip_signatures(only, strlen(only));
    assert_int_equal(n, 9);
    assert_memory_equal(only, "From: x\r\n", 9);
    char none[] = "From: x\r\n\r\nbody\r\n";
    assert_int_equal(dkim_strip_signatures(none, strlen(none)), strlen(none));
    assert_int_equal(dkim_strip_signatures(none, 0), 0);
}

static const char message[] =
    "From: Alice <alice@example.org>\r\n"
    "To: bob@example.net\r\n"
    "Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?= and a rather long subject line that is\r\n"
    " folded onto a second line\r\n"
    "Date: Mon, 30 Nov 2026 01:02:03 +0000\r\n"
    "Message-ID: <unit.1@example.org>\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 8bit\r\n"
    "\r\n"
    "Gr\xc3\xbc\xc3\x9f"
    "e!\r\n"
    ".a line starting with a dot\r\n"
    "\r\n";

/* Signs message with keys, returns signatures + message (caller frees). */
static char *sign(const struct dkim_key *const *keys, size_t n, const char *msg, size_t len,
                  size_t *out_len)
{
    struct strbuf out = STRBUF_INIT;
    struct dkim_signature sigs[4];
    char err[256] = "";
    int rc = dkim_sign_message(keys, n, msg, len, &out, sigs, err, sizeof err);
    if (rc != 0) fprintf(stderr, "sign: %s\n", err);
    assert_int_equal(rc, 0);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(sigs[i].result, 1);
        assert_string_equal(sigs[i].domain, keys[i]->domain);
        assert_string_equal(sigs[i].selector, keys[i]->selector);
    }
    strbuf_append(&out, msg, len);
    return strbuf_detach(&out, out_len);
}

static void test_sign_then_verify(void **state)
{
    (void)state;
    struct dkim_keystore *ks = dkim_keystore_load(keydir, NULL, NULL);
    assert_non_null(ks);
    const struct dkim_key *keys[2];
    assert_int_equal(dkim_keystore_for(ks, "example.org", keys, 2), 2);
    lookup_keys = ks;
    dkim_verify_set_test_key_lookup(test_lookup);

    size_t len;
    char *signed_msg = sign(keys, 2, message, sizeof message - 1, &len);
    /* Two fields, CRLF-terminated, relaxed/relaxed, From oversigned. */
    assert_true(strncmp(signed_msg, "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;", 53) ==
                0);
    assert_non_null(strstr(signed_msg, "\r\nDKIM-Signature: v=1; a=ed25519-sha256;"));
    /* Signed headers in the default order, present ones only, From once more (oversigned);
     * libopendkim folds h= so compare without whitespace. */
    char compact[4096];
    size_t c = 0;
    for (size_t i = 0; i < len && signed_msg[i] && c + 1 < sizeof compact; i++)
        if (signed_msg[i] != '\r' && signed_msg[i] != '\n' && signed_msg[i] != '\t' &&
            signed_msg[i] != ' ')
            compact[c++] = signed_msg[i];
    compact[c] = '\0';
    assert_non_null(strstr(compact, "h=From:To:Subject:Date:Message-ID:MIME-Version:"
                                    "Content-Type:Content-Transfer-Encoding:from;"));

    struct dkim_signature sigs[4];
    assert_int_equal(dkim_verify_message(signed_msg, len, sigs, 4), 2);
    for (int i = 0; i < 2; i++) {
        if (sigs[i].result != 1) fprintf(stderr, "sig %d: %s\n", i, sigs[i].error);
        assert_int_equal(sigs[i].result, 1);
        assert_string_equal(sigs[i].domain, "example.org");
    }
    assert_string_equal(sigs[0].algorithm, "rsa-sha256");
    assert_string_equal(sigs[0].selector, "rsa1");
    assert_string_equal(sigs[1].algorithm, "ed25519-sha256");
    assert_string_equal(sigs[1].selector, "ed1");
    /* max bounds what is filled and returned. */
    assert_int_equal(dkim_verify_message(signed_msg, len, sigs, 1), 1);

    /* A changed body fails both. */
    char *dot = strstr(signed_msg, ".a line");
    assert_non_null(dot);
    dot[1] = 'A';
    assert_int_equal(dkim_verify_message(signed_msg, len, sigs, 4), 2);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(sigs[i].result, 0);
        if (!strstr(sigs[i].error, "body hash")) fprintf(stderr, "error: %s\n", sigs[i].error);
        assert_non_null(strstr(sigs[i].error, "body hash"));
    }
    dot[1] = 'a';
    /* From is oversigned: a From field added on top breaks both. */
    struct strbuf twice = STRBUF_INIT;
    strbuf_puts(&twice, "From: mallory@example.com\r\n");
    strbuf_append(&twice, signed_msg, len);
    assert_int_equal(dkim_verify_message(twice.data, twice.len, sigs, 4), 2);
    assert_int_equal(sigs[0].result, 0);
    assert_int_equal(sigs[1].result, 0);
    strbuf_free(&twice);

    /* No key published: fail, not temperror. */
    lookup_keys = NULL;
    assert_int_equal(dkim_verify_message(signed_msg, len, sigs, 4), 2);
    assert_int_equal(sigs[0].result, 0);
    assert_true(strlen(sigs[0].error) > 0);
    lookup_keys = ks;

    /* Stripping removes both, after which there is nothing to verify. */
    size_t stripped = dkim_strip_signatures(signed_msg, len);
    assert_int_equal(stripped, sizeof message - 1);
    assert_memory_equal(signed_msg, message, stripped);
    assert_int_equal(dkim_verify_message(signed_msg, stripped, sigs, 4), 0);
    free(signed_msg);

    /* Empty body, and each key alone. */
    static const char empty[] = "From: a@example.org\r\nSubject: empty\r\n\r\n";
    for (int k = 0; k < 2; k++) {
        signed_msg = sign(&keys[k], 1, empty, sizeof empty - 1, &len);
        assert_int_equal(dkim_verify_message(signed_msg, len, sigs, 4), 1);
        assert_int_equal(sigs[0].result, 1);
        free(signed_msg);
    }

    dkim_verify_set_test_key_lookup(NULL);
    lookup_keys = NULL;
    dkim_keystore_free(ks);
}

/* FIXCRLF: an LF-only message signs as its CRLF form would (not as an empty body). */
static void test_lf_only_input_signs_crlf_form(void **state)
{
    (void)state;
    struct dkim_keystore *ks = dkim_keystore_load(keydir, NULL, NULL);
    assert_non_null(ks);
    const struct dkim_key *keys[2];
    assert_int_equal(dkim_keystore_for(ks, "example.org", keys, 2), 2);
    lookup_keys = ks;
    dkim_verify_set_test_key_lookup(test_lookup);

    static const char lf[] = "From: a@example.org\nSubject: lf\n\nline one\nline two\n";
    static const char crlf[] = "From: a@example.org\r\nSubject: lf\r\n\r\nline one\r\nline two\r\n";
    struct strbuf out = STRBUF_INIT;
    char err[256];
    assert_int_equal(dkim_sign_message(keys, 2, lf, sizeof lf - 1, &out, NULL, err, sizeof err), 0);
    assert_null(strstr(out.data, "bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="));
    strbuf_puts(&out, crlf);
    struct dkim_signature sigs[4];
    assert_int_equal(dkim_verify_message(out.data, out.len, sigs, 4), 2);
    assert_int_equal(sigs[0].result, 1);
    assert_int_equal(sigs[1].result, 1);
    strbuf_free(&out);
    dkim_verify_set_test_key_lookup(NULL);
    lookup_keys = NULL;
    dkim_keystore_free(ks);
}

static void test_sign_with_bad_key_fails_early(void **state)
{
    (void)state;
    struct dkim_key bad = {
        .domain = "example.org",
        .selector = "bad",
        .algorithm = DKIM_ALG_RSA_SHA256,
        .path = "/nowhere/bad.rsa.pem",
        .pem = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        .public_b64 = "",
        .bits = 2048,
    };
    const struct dkim_key *keys[1] = {&bad};
    struct strbuf out = STRBUF_INIT;
    char err[256] = "";
    assert_int_equal(
        dkim_sign_message(keys, 1, message, sizeof message - 1, &out, NULL, err, sizeof err), -1);
    assert_non_null(strstr(err, "/nowhere/bad.rsa.pem"));
    assert_int_equal(out.len, 0);

    /* Good keys loaded before the bad one are released too (LeakSanitizer checks). */
    struct dkim_keystore *ks = dkim_keystore_load(keydir, NULL, NULL);
    assert_non_null(ks);
    const struct dkim_key *three[3] = {&ks->keys[0], &ks->keys[1], &bad};
    assert_int_equal(
        dkim_sign_message(three, 3, message, sizeof message - 1, &out, NULL, err, sizeof err), -1);
    assert_int_equal(out.len, 0);
    dkim_keystore_free(ks);
    strbuf_free(&out);
}

/* A message libopendkim would sign wrongly (a header field of 64 KiB, several From: fields) is
 * not signed at all: the error says why and nothing is appended. Before, both got signatures
 * that dkimpy rejected. A field of exactly the limit still signs and verifies. */
static void test_unverifiable_headers_not_signed(void **state)
{
    (void)state;
    struct dkim_keystore *ks = dkim_keystore_load(keydir, NULL, NULL);
    assert_non_null(ks);
    const struct dkim_key *keys[2];
    assert_int_equal(dkim_keystore_for(ks, "example.org", keys, 2), 2);
    lookup_keys = ks;
    dkim_verify_set_test_key_lookup(test_lookup);
    struct strbuf msg = STRBUF_INIT, out = STRBUF_INIT;
    char err[256] = "";
    struct dkim_signature sigs[4];

    /* "Subject: " + value = exactly MAIL_MAX_HEADER_FIELD bytes: signed, verifies */
    strbuf_puts(&msg, "From: a@example.org\r\nSubject: ");
    for (size_t i = 0; i < MAIL_MAX_HEADER_FIELD - strlen("Subject: "); i++)
        strbuf_append(&msg, "x", 1);
    strbuf_puts(&msg, "\r\n\r\nbody\r\n");
    assert_int_equal(dkim_sign_message(keys, 2, msg.data, msg.len, &out, NULL, err, sizeof err), 0);
    strbuf_append(&out, msg.data, msg.len);
    assert_int_equal(dkim_verify_message(out.data, out.len, sigs, 4), 2);
    assert_int_equal(sigs[0].result, 1);
    assert_int_equal(sigs[1].result, 1);
    strbuf_reset(&out);

    /* one byte more: not signed */
    strbuf_reset(&msg);
    strbuf_puts(&msg, "From: a@example.org\r\nSubject: x");
    for (size_t i = 0; i < 70000; i++)
        strbuf_append(&msg, i % 70 == 69 ? "\r\n " : "y", i % 70 == 69 ? 3 : 1); /* folded */
    strbuf_puts(&msg, "\r\n\r\nbody\r\n");
    assert_int_equal(dkim_sign_message(keys, 2, msg.data, msg.len, &out, NULL, err, sizeof err),
                     -1);
    assert_non_null(strstr(err, "not signed: a header field longer than 65000 bytes"));
    assert_int_equal(out.len, 0);

    /* 1,000 From: fields (and two): not signed */
    for (int n = 1000; n >= 2; n -= 998) {
        strbuf_reset(&msg);
        for (int i = 0; i < n; i++)
            strbuf_printf(&msg, "From: u%d@example.org\r\n", i);
        strbuf_puts(&msg, "Subject: many\r\n\r\nbody\r\n");
        assert_int_equal(dkim_sign_message(keys, 2, msg.data, msg.len, &out, NULL, err, sizeof err),
                         -1);
        assert_non_null(strstr(err, "not signed: several From: header fields"));
        assert_int_equal(out.len, 0);
    }
    strbuf_free(&msg);
    strbuf_free(&out);
    dkim_verify_set_test_key_lookup(NULL);
    lookup_keys = NULL;
    dkim_keystore_free(ks);
}

static void test_verify_without_signatures(void **state)
{
    (void)state;
    struct dkim_signature sigs[2];
    assert_int_equal(dkim_verify_message(message, sizeof message - 1, sigs, 2), 0);
    static const char junk[] = "not a message at all";
    assert_int_equal(dkim_verify_message(junk, sizeof junk - 1, sigs, 2), 0);
    assert_int_equal(dkim_verify_message("", 0, sigs, 2), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keygen_then_load),
        cmocka_unit_test(test_keygen_creates_missing_parents),
        cmocka_unit_test(test_rsa2048_record_strings_split),
        cmocka_unit_test(test_load_refuses_bad_files),
        cmocka_unit_test(test_keystore_for),
        cmocka_unit_test(test_strip_signatures),
        cmocka_unit_test(test_sign_then_verify),
        cmocka_unit_test(test_lf_only_input_signs_crlf_form),
        cmocka_unit_test(test_sign_with_bad_key_fails_early),
        cmocka_unit_test(test_unverifiable_headers_not_signed),
        cmocka_unit_test(test_verify_without_signatures),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
