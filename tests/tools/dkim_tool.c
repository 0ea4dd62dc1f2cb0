/* dkim_tool.c - drives outrelay/sign for integration tests and measurements:
 *   dkim_tool sign KEYDIR FROMDOMAIN < msg > signed   (signatures + the message, CRLF)
 *   dkim_tool verify DNS_SERVER < msg                  (one line per signature)
 *   dkim_tool keygen DIR DOMAIN SELECTOR rsa|ed25519 [BITS]   (prints the TXT record)
 *   dkim_tool bench KEYDIR DOMAIN N                    (signing time for a 4 KiB message)
 * Input with bare LF line endings is converted to CRLF first (the relay's spool holds CRLF). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mail/orgdomain.h"
#include "common/strbuf.h"
#include "common/clock.h"
#include "common/util.h"
#include "dns/dns_sync.h"
#include "config/config.h"
#include "sign/dkim.h"

#define MAX_KEYS 8

static int usage(void)
{
    fprintf(stderr, "usage: dkim_tool sign KEYDIR FROMDOMAIN < message\n"
                    "       dkim_tool verify DNS_SERVER < message\n"
                    "       dkim_tool keygen DIR DOMAIN SELECTOR rsa|ed25519 [BITS]\n"
                    "       dkim_tool bench KEYDIR DOMAIN N\n");
    return 2;
}

/* Reads stdin whole, turning every bare LF into CRLF. */
static void read_message_crlf(struct strbuf *out)
{
    char buf[65536];
    size_t n;
    char prev = 0;
    while ((n = fread(buf, 1, sizeof buf, stdin)) > 0) {
        for (size_t i = 0; i < n; i++) {
            if (buf[i] == '\n' && prev != '\r') strbuf_append(out, "\r", 1);
            strbuf_append(out, &buf[i], 1);
            prev = buf[i];
        }
    }
}

static struct dkim_keystore *load_keys(const char *dir)
{
    char **errors = NULL;
    size_t n_errors = 0;
    struct dkim_keystore *ks = dkim_keystore_load(dir, &errors, &n_errors);
    for (size_t i = 0; i < n_errors; i++) {
        fprintf(stderr, "dkim_tool: %s\n", errors[i]);
        free(errors[i]);
    }
    free(errors);
    return ks;
}

static int start_libraries(void)
{
    char err[256];
    /* the header lists of the embedded defaults (dkim.headers, dkim.oversign) */
    struct config *defaults = config_defaults();
    int rc = orgdomain_init(NULL, err, sizeof err) < 0 || dkim_setup(defaults, err, sizeof err) < 0;
    config_free(defaults);
    if (rc) {
        fprintf(stderr, "dkim_tool: %s\n", err);
        return -1;
    }
    return 0;
}

static void stop_libraries(void)
{
    dkim_shutdown();
    orgdomain_shutdown();
}

static int cmd_sign(const char *keydir, const char *domain)
{
    struct dkim_keystore *ks = load_keys(keydir);
    if (!ks) return 1;
    const struct dkim_key *keys[MAX_KEYS];
    size_t n = dkim_keystore_for(ks, domain, keys, MAX_KEYS);
    if (n == 0) {
        fprintf(stderr, "dkim_tool: no key for %s in %s\n", domain, keydir);
        dkim_keystore_free(ks);
        return 1;
    }
    struct strbuf msg = STRBUF_INIT, headers = STRBUF_INIT;
    struct dkim_signature sigs[MAX_KEYS];
    char err[512];
    read_message_crlf(&msg);
    int rc = dkim_sign_message(keys, n, msg.data ? msg.data : "", msg.len, &headers, sigs, err,
                               sizeof err);
    if (rc == 0) {
        fwrite(headers.data, 1, headers.len, stdout);
        fwrite(msg.data, 1, msg.len, stdout);
        for (size_t i = 0; i < n; i++)
            fprintf(stderr, "signed d=%s s=%s a=%s\n", sigs[i].domain, sigs[i].selector,
                    sigs[i].algorithm);
    } else {
        fprintf(stderr, "dkim_tool: %s\n", err);
    }
    strbuf_free(&msg);
    strbuf_free(&headers);
    dkim_keystore_free(ks);
    return rc == 0 ? 0 : 1;
}

static int cmd_verify(const char *server)
{
    char err[256];
    char *servers[1] = {(char *)server};
    if (dns_sync_init(servers, 1, NULL, err, sizeof err) < 0) {
        fprintf(stderr, "dkim_tool: %s\n", err);
        return 1;
    }
    struct strbuf msg = STRBUF_INIT;
    read_message_crlf(&msg);
    struct dkim_signature sigs[16];
    size_t n = dkim_verify_message(msg.data ? msg.data : "", msg.len, sigs, 16);
    static const char *const names[] = {"temperror", "fail", "pass"};
    for (size_t i = 0; i < n; i++)
        printf("%s d=%s s=%s a=%s %s\n", names[sigs[i].result + 1], sigs[i].domain,
               sigs[i].selector, sigs[i].algorithm, sigs[i].error);
    if (n == 0) printf("none\n");
    strbuf_free(&msg);
    dns_sync_shutdown();
    return 0;
}

static int cmd_keygen(const char *dir, const char *domain, const char *selector, const char *alg,
                      const char *bits)
{
    enum dkim_algorithm a;
    if (strcmp(alg, "rsa") == 0)
        a = DKIM_ALG_RSA_SHA256;
    else if (strcmp(alg, "ed25519") == 0)
        a = DKIM_ALG_ED25519_SHA256;
    else
        return usage();
    struct strbuf txt = STRBUF_INIT;
    char err[512];
    int rc = dkim_keygen(dir, domain, selector, a, bits ? atoi(bits) : 0, &txt, err, sizeof err);
    if (rc == 0)
        fputs(strbuf_str(&txt), stdout);
    else
        fprintf(stderr, "dkim_tool: %s\n", err);
    strbuf_free(&txt);
    return rc == 0 ? 0 : 1;
}

/* A 4 KiB message: realistic headers and a text body. */
static void bench_message(const char *domain, struct strbuf *msg)
{
    strbuf_printf(msg,
                  "From: Sender <sender@%s>\r\nTo: rcpt@example.net\r\n"
                  "Subject: benchmark message\r\nDate: Mon, 30 Nov 2026 01:02:03 +0000\r\n"
                  "Message-ID: <bench.1@%s>\r\nMIME-Version: 1.0\r\n"
                  "Content-Type: text/plain; charset=utf-8\r\n\r\n",
                  domain, domain);
    while (msg->len < 4096 - 80)
        strbuf_puts(msg, "The quick brown fox jumps over the lazy dog, again and again.\r\n");
    while (msg->len < 4096 - 2)
        strbuf_puts(msg, "x");
    strbuf_puts(msg, "\r\n");
}

static double bench_run(const struct dkim_key *const *keys, size_t n_keys, const struct strbuf *msg,
                        int rounds)
{
    struct strbuf out = STRBUF_INIT;
    char err[512];
    int64_t start = clock_now_us();
    for (int i = 0; i < rounds; i++) {
        strbuf_reset(&out);
        if (dkim_sign_message(keys, n_keys, msg->data, msg->len, &out, NULL, err, sizeof err)) {
            fprintf(stderr, "dkim_tool: %s\n", err);
            strbuf_free(&out);
            return -1;
        }
    }
    int64_t took = clock_now_us() - start;
    strbuf_free(&out);
    return (double)took / rounds;
}

static int cmd_bench(const char *keydir, const char *domain, const char *count)
{
    int rounds = atoi(count);
    if (rounds <= 0) return usage();
    struct dkim_keystore *ks = load_keys(keydir);
    if (!ks) return 1;
    const struct dkim_key *all[MAX_KEYS], *rsa = NULL, *ed = NULL;
    size_t n = dkim_keystore_for(ks, domain, all, MAX_KEYS);
    for (size_t i = 0; i < n; i++) {
        if (all[i]->algorithm == DKIM_ALG_RSA_SHA256 && !rsa) rsa = all[i];
        if (all[i]->algorithm == DKIM_ALG_ED25519_SHA256 && !ed) ed = all[i];
    }
    struct strbuf msg = STRBUF_INIT;
    bench_message(domain, &msg);
    printf("message %zu bytes, %d rounds each\n", msg.len, rounds);
    int rc = 0;
    if (rsa) {
        double us = bench_run(&rsa, 1, &msg, rounds);
        rc |= us < 0;
        printf("rsa-%d: %.1f us/message\n", rsa->bits, us);
    }
    if (ed) {
        double us = bench_run(&ed, 1, &msg, rounds);
        rc |= us < 0;
        printf("ed25519: %.1f us/message\n", us);
    }
    if (rsa && ed) {
        const struct dkim_key *both[2] = {rsa, ed};
        double us = bench_run(both, 2, &msg, rounds);
        rc |= us < 0;
        printf("rsa-%d+ed25519: %.1f us/message\n", rsa->bits, us);
    }
    strbuf_free(&msg);
    dkim_keystore_free(ks);
    return rc ? 1 : 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) return usage();
    const char *cmd = argv[1];
    if (strcmp(cmd, "keygen") == 0 && (argc == 6 || argc == 7))
        return cmd_keygen(argv[2], argv[3], argv[4], argv[5], argc == 7 ? argv[6] : NULL);
    int rc;
    if (start_libraries() < 0) return 1;
    if (strcmp(cmd, "sign") == 0 && argc == 4)
        rc = cmd_sign(argv[2], argv[3]);
    else if (strcmp(cmd, "verify") == 0 && argc == 3)
        rc = cmd_verify(argv[2]);
    else if (strcmp(cmd, "bench") == 0 && argc == 5)
        rc = cmd_bench(argv[2], argv[3], argv[4]);
    else
        rc = usage();
    stop_libraries();
    return rc;
}
