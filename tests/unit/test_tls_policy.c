/* test_tls_policy.c - unit tests for outrelay/smtpc/tls_policy.c and the shared client contexts
 * of outrelay/tls/tls_cache.c: what each egress setting makes of the policy (level, verify,
 * names, SNI, client certificate, reason), one SSL_CTX for egresses with the same files and
 * another for a different CA, a reload with unchanged files keeping the context and one with a
 * changed file building a new one while policies made before keep theirs; the tls_policy:
 * table over the egress (exact domains, the nearest ".parent" rule, levels, names, source);
 * which TLSA records can authenticate an SMTP server (RFC 7672) and the DANE policy over the
 * table (secure records, unusable ones, insecure or empty answers, the RFC 8460 policy text).
 * Certificates are made in a temporary folder at the start. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "config/config.h"
#include "smtpc/tls_policy.h"
#include "sts/sts.h"
#include "tls/tls.h"

static char dir[] = "/tmp/test_tls_policy.XXXXXX";
static char ca_a[64], ca_b[64], client_cert[64], client_key[64];

/* A self-signed certificate for cn in cert_path, its key in key_path (if not NULL). */
static void make_certificate(const char *cn, const char *cert_path, const char *key_path)
{
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    assert_non_null(key);
    assert_non_null(x);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600L * 24 * 3650);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, name);
    X509_set_pubkey(x, key);
    assert_true(X509_sign(x, key, EVP_sha256()) > 0);
    FILE *f = fopen(cert_path, "w");
    assert_non_null(f);
    PEM_write_X509(f, x);
    fclose(f);
    if (key_path) {
        f = fopen(key_path, "w");
        assert_non_null(f);
        PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL);
        fclose(f);
    }
    X509_free(x);
    EVP_PKEY_free(key);
}

static int setup(void **state)
{
    (void)state;
    if (!mkdtemp(dir)) return -1;
    snprintf(ca_a, sizeof ca_a, "%s/ca-a.pem", dir);
    snprintf(ca_b, sizeof ca_b, "%s/ca-b.pem", dir);
    snprintf(client_cert, sizeof client_cert, "%s/client.pem", dir);
    snprintf(client_key, sizeof client_key, "%s/client.key", dir);
    make_certificate("CA A", ca_a, NULL);
    make_certificate("CA B", ca_b, NULL);
    make_certificate("relay.tenant.example", client_cert, client_key);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unlink(ca_a);
    unlink(ca_b);
    unlink(client_cert);
    unlink(client_key);
    rmdir(dir);
    return 0;
}

static struct egress_conf egress(const char *name, enum tls_mode tls, const char *ca)
{
    return (struct egress_conf){.name = (char *)name,
                                .type = EGRESS_SMARTHOST,
                                .tls = tls,
                                .tls_ca_file = (char *)ca,
                                .tls_verify = ca != NULL};
}

static struct config config_of(struct egress_conf *e, size_t n)
{
    return (struct config){.egress = e, .n_egress = n};
}

static struct tls_policy *policy(const struct egress_conf *e, const char *mx)
{
    char err[256] = "";
    struct tls_policy *p = tls_policy_for(e, "example.com", mx, NULL, err, sizeof err);
    assert_non_null(p);
    return p;
}

static void test_levels_from_the_egress(void **state)
{
    (void)state;
    struct egress_conf e[3] = {egress("plain", TLS_NONE, NULL),
                               egress("legacy", TLS_OPTIONAL, NULL),
                               egress("cloud", TLS_REQUIRED, NULL)};
    struct config cfg = config_of(e, 3);
    char err[256];
    assert_int_equal(tls_policy_load(&cfg, err, sizeof err), 0);

    struct tls_policy *p = policy(&e[0], "mx.example.com");
    assert_int_equal(p->level, TLS_POLICY_NONE);
    assert_null(p->ctx); /* nothing to hold for plaintext */
    assert_non_null(strstr(p->reason, "egress plain"));
    tls_policy_free(p);

    p = policy(&e[1], "mx.example.com");
    assert_int_equal(p->level, TLS_POLICY_OPPORTUNISTIC);
    assert_non_null(p->ctx);
    assert_false(p->verify);
    assert_int_equal(p->n_names, 0);
    assert_string_equal(p->sni, "mx.example.com");
    assert_null(p->client_cert);
    tls_policy_free(p);

    p = policy(&e[2], "mx.example.com");
    assert_int_equal(p->level, TLS_POLICY_REQUIRED);
    assert_non_null(strstr(p->reason, "STARTTLS required"));
    tls_policy_free(p);
    tls_policy_unload();
    assert_int_equal(tls_client_context_count(), 0);
}

static void test_verify_names_and_client_certificate(void **state)
{
    (void)state;
    struct egress_conf e[2] = {egress("cloud", TLS_REQUIRED, ca_a),
                               egress("named", TLS_REQUIRED, ca_a)};
    e[1].tls_name = "smarthost.outrelay.test";
    e[1].tls_cert = client_cert;
    e[1].tls_key = client_key;
    struct config cfg = config_of(e, 2);
    char err[256];
    assert_int_equal(tls_policy_load(&cfg, err, sizeof err), 0);

    /* without tls_name the certificate must carry the host connected to */
    struct tls_policy *p = policy(&e[0], "mx1.example.com");
    assert_true(p->verify);
    assert_int_equal(p->n_names, 1);
    assert_string_equal(p->names[0], "mx1.example.com");
    assert_string_equal(p->sni, "mx1.example.com");
    tls_policy_free(p);

    p = policy(&e[1], "10.0.0.1");
    assert_true(p->verify);
    assert_int_equal(p->n_names, 1);
    assert_string_equal(p->names[0], "smarthost.outrelay.test");
    assert_string_equal(p->sni, "smarthost.outrelay.test");
    assert_string_equal(p->client_cert, client_cert);
    assert_non_null(strstr(p->reason, "smarthost.outrelay.test"));
    assert_non_null(strstr(p->reason, "client certificate"));
    tls_policy_free(p);
    tls_policy_unload();
}

static void test_same_files_share_one_context(void **state)
{
    (void)state;
    struct egress_conf e[3] = {egress("legacy", TLS_OPTIONAL, ca_a),
                               egress("cloud", TLS_REQUIRED, ca_a),
                               egress("other", TLS_REQUIRED, ca_b)};
    struct config cfg = config_of(e, 3);
    char err[256];
    assert_int_equal(tls_policy_load(&cfg, err, sizeof err), 0);
    assert_int_equal(tls_client_context_count(), 2);

    struct tls_policy *legacy = policy(&e[0], "mx.example.com");
    struct tls_policy *cloud = policy(&e[1], "smarthost.example.net");
    struct tls_policy *other = policy(&e[2], "smarthost.example.net");
    assert_ptr_equal(legacy->ctx, cloud->ctx);
    assert_ptr_not_equal(legacy->ctx, other->ctx);

    /* a client certificate is part of what makes a context */
    struct egress_conf with_cert = egress("cert", TLS_REQUIRED, ca_a);
    with_cert.tls_cert = client_cert;
    with_cert.tls_key = client_key;
    struct tls_policy *cert = policy(&with_cert, "smarthost.example.net");
    assert_ptr_not_equal(cert->ctx, legacy->ctx);
    tls_policy_free(cert);
    assert_int_equal(tls_client_context_count(), 2);

    tls_policy_free(legacy);
    tls_policy_free(cloud);
    tls_policy_free(other);
    tls_policy_unload();
    assert_int_equal(tls_client_context_count(), 0);
}

static void test_reload_reuses_unchanged_and_rebuilds_changed(void **state)
{
    (void)state;
    struct egress_conf old_e[2] = {egress("legacy", TLS_OPTIONAL, ca_a),
                                   egress("cloud", TLS_REQUIRED, ca_b)};
    struct config old_cfg = config_of(old_e, 2);
    char err[256];
    assert_int_equal(tls_policy_load(&old_cfg, err, sizeof err), 0);
    struct tls_policy *before_a = policy(&old_e[0], "mx.example.com");
    struct tls_policy *before_b = policy(&old_e[1], "smarthost.example.net");

    /* SIGHUP with the same files (a new config, new egress structs): the same contexts */
    struct egress_conf new_e[2] = {egress("legacy", TLS_OPTIONAL, ca_a),
                                   egress("cloud", TLS_REQUIRED, ca_b)};
    struct config new_cfg = config_of(new_e, 2);
    assert_int_equal(tls_policy_load(&new_cfg, err, sizeof err), 0);
    struct tls_policy *after_a = policy(&new_e[0], "mx.example.com");
    assert_ptr_equal(after_a->ctx, before_a->ctx);
    assert_int_equal(tls_client_context_count(), 2);
    tls_policy_free(after_a);

    /* CA B replaced on disk, then SIGHUP: a new context for it; the connection that started
     * before keeps the old one until it is done */
    sleep(1); /* a file time that differs even where times are in whole seconds */
    make_certificate("CA B renewed", ca_b, NULL);
    struct egress_conf newer_e[2] = {egress("legacy", TLS_OPTIONAL, ca_a),
                                     egress("cloud", TLS_REQUIRED, ca_b)};
    struct config newer_cfg = config_of(newer_e, 2);
    assert_int_equal(tls_policy_load(&newer_cfg, err, sizeof err), 0);
    struct tls_policy *after_b = policy(&newer_e[1], "smarthost.example.net");
    assert_ptr_not_equal(after_b->ctx, before_b->ctx);
    assert_int_equal(tls_client_context_count(), 3);
    /* an egress of the old config, connecting to its next host, gets the newest context */
    struct tls_policy *late_b = policy(&old_e[1], "smarthost2.example.net");
    assert_ptr_equal(late_b->ctx, after_b->ctx);
    tls_policy_free(late_b);
    tls_policy_free(before_b); /* the last user of the old context of CA B */
    assert_int_equal(tls_client_context_count(), 2);

    tls_policy_free(after_b);
    tls_policy_free(before_a);
    tls_policy_unload();
    assert_int_equal(tls_client_context_count(), 0);
}

static void test_unloadable_files_change_nothing(void **state)
{
    (void)state;
    struct egress_conf good[1] = {egress("legacy", TLS_OPTIONAL, ca_a)};
    struct config good_cfg = config_of(good, 1);
    char err[256] = "";
    assert_int_equal(tls_policy_load(&good_cfg, err, sizeof err), 0);
    struct tls_policy *p = policy(&good[0], "mx.example.com");
    SSL_CTX *ctx = p->ctx;
    tls_policy_free(p);

    char missing[80];
    snprintf(missing, sizeof missing, "%s/missing.pem", dir);
    struct egress_conf bad[2] = {egress("legacy", TLS_OPTIONAL, ca_a),
                                 egress("cloud", TLS_REQUIRED, missing)};
    struct config bad_cfg = config_of(bad, 2);
    assert_int_equal(tls_policy_load(&bad_cfg, err, sizeof err), -1);
    assert_non_null(strstr(err, "missing.pem"));
    assert_int_equal(tls_client_context_count(), 1);
    p = policy(&good[0], "mx.example.com"); /* the previous config is still the one in use */
    assert_ptr_equal(p->ctx, ctx);
    tls_policy_free(p);
    tls_policy_unload();
    assert_int_equal(tls_client_context_count(), 0);
}

static struct tls_policy_rule rule(const char *domain, int level, char **names, size_t n)
{
    return (struct tls_policy_rule){
        .domain = (char *)domain, .level = level, .names = names, .n_names = n, .line = 1};
}

static void test_table_rule_matching(void **state)
{
    (void)state;
    struct tls_policy_rule r[4] = {rule("example.com", TLS_RULE_ENCRYPT, NULL, 0),
                                   rule(".example.org", TLS_RULE_MAY, NULL, 0),
                                   rule(".deep.example.org", TLS_RULE_VERIFY, NULL, 0),
                                   rule("deep.example.org", TLS_RULE_NONE, NULL, 0)};
    struct config cfg = {.tls_policy_rules = r, .n_tls_policy_rules = 4};
    /* exact only: example.com is not a parent rule */
    assert_ptr_equal(tls_policy_rule_find(&cfg, "example.com"), &r[0]);
    assert_ptr_equal(tls_policy_rule_find(&cfg, "EXAMPLE.Com"), &r[0]);
    assert_null(tls_policy_rule_find(&cfg, "mx.example.com"));
    /* ".example.org" covers subdomains, not the domain itself */
    assert_null(tls_policy_rule_find(&cfg, "example.org"));
    assert_ptr_equal(tls_policy_rule_find(&cfg, "a.example.org"), &r[1]);
    /* the exact rule beats a parent rule; the nearest parent beats a farther one */
    assert_ptr_equal(tls_policy_rule_find(&cfg, "deep.example.org"), &r[3]);
    assert_ptr_equal(tls_policy_rule_find(&cfg, "x.deep.example.org"), &r[2]);
    assert_ptr_equal(tls_policy_rule_find(&cfg, "y.x.deep.example.org"), &r[2]);
    /* no rule for other domains, nor for a smarthost's "" */
    assert_null(tls_policy_rule_find(&cfg, "example.net"));
    assert_null(tls_policy_rule_find(&cfg, "notexample.org"));
    assert_null(tls_policy_rule_find(&cfg, ""));
    assert_null(tls_policy_rule_find(NULL, "example.com"));
}

static struct tls_policy *policy_for(const struct egress_conf *e, const char *domain,
                                     const char *mx)
{
    char err[256] = "";
    struct tls_policy *p = tls_policy_for(e, domain, mx, NULL, err, sizeof err);
    assert_non_null(p);
    return p;
}

static void test_table_over_egress(void **state)
{
    (void)state;
    struct egress_conf e[2] = {egress("legacy", TLS_OPTIONAL, ca_a),
                               egress("strict", TLS_REQUIRED, ca_a)};
    char *names[] = {"mx1.secure.example", "mx2.secure.example"};
    struct tls_policy_rule r[4] = {rule("plain.example", TLS_RULE_NONE, NULL, 0),
                                   rule("may.example", TLS_RULE_MAY, NULL, 0),
                                   rule("enc.example", TLS_RULE_ENCRYPT, NULL, 0),
                                   rule(".secure.example", TLS_RULE_VERIFY, names, 2)};
    struct config cfg = config_of(e, 2);
    cfg.tls_policy_rules = r;
    cfg.n_tls_policy_rules = 4;
    char err[256];
    assert_int_equal(tls_policy_load(&cfg, err, sizeof err), 0);

    /* no rule: the egress decides, and says so */
    struct tls_policy *p = policy_for(&e[0], "other.example", "mx.other.example");
    assert_string_equal(p->source, "egress");
    assert_int_equal(p->level, TLS_POLICY_OPPORTUNISTIC);
    assert_true(p->verify); /* the egress's CA file turns verification on */
    assert_string_equal(tls_policy_level_name(p), "may");
    tls_policy_free(p);

    /* none beats an egress that requires TLS: no context, never STARTTLS */
    p = policy_for(&e[1], "plain.example", "mx.plain.example");
    assert_string_equal(p->source, "table");
    assert_int_equal(p->level, TLS_POLICY_NONE);
    assert_null(p->ctx);
    assert_string_equal(tls_policy_level_name(p), "none");
    assert_non_null(strstr(p->reason, "tls_policy plain.example: none"));
    tls_policy_free(p);

    /* may: opportunistic, and the table does not verify even where the egress would */
    p = policy_for(&e[0], "may.example", "mx.may.example");
    assert_int_equal(p->level, TLS_POLICY_OPPORTUNISTIC);
    assert_false(p->verify);
    assert_string_equal(tls_policy_level_name(p), "may");
    tls_policy_free(p);

    /* encrypt: required, certificate not checked */
    p = policy_for(&e[0], "enc.example", "mx.enc.example");
    assert_int_equal(p->level, TLS_POLICY_REQUIRED);
    assert_false(p->verify);
    assert_int_equal(p->n_names, 0);
    assert_non_null(p->ctx);
    assert_string_equal(tls_policy_level_name(p), "encrypt");
    assert_string_equal(p->source, "table");
    tls_policy_free(p);

    /* verify on a subdomain rule: required, the table's names, SNI the MX */
    p = policy_for(&e[0], "a.secure.example", "mx9.a.secure.example");
    assert_int_equal(p->level, TLS_POLICY_REQUIRED);
    assert_true(p->verify);
    assert_int_equal(p->n_names, 2);
    assert_string_equal(p->names[0], "mx1.secure.example");
    assert_string_equal(p->names[1], "mx2.secure.example");
    assert_string_equal(p->sni, "mx9.a.secure.example");
    assert_string_equal(tls_policy_level_name(p), "verify");
    assert_non_null(strstr(p->reason, "tls_policy .secure.example: verify"));
    tls_policy_free(p);

    /* verify without names: the MX host name */
    r[3].n_names = 0;
    p = policy_for(&e[0], "b.secure.example", "mx.b.secure.example");
    assert_int_equal(p->n_names, 1);
    assert_string_equal(p->names[0], "mx.b.secure.example");
    tls_policy_free(p);

    /* a smarthost (domain "") keeps the egress's settings */
    p = policy_for(&e[1], "", "smarthost.example.net");
    assert_string_equal(p->source, "egress");
    assert_string_equal(tls_policy_level_name(p), "verify");
    tls_policy_free(p);
    tls_policy_unload();
    assert_int_equal(tls_client_context_count(), 0);
}

static struct dns_tlsa tlsa(unsigned char usage, unsigned char selector, unsigned char mtype,
                            unsigned char *data, size_t len)
{
    return (struct dns_tlsa){usage, selector, mtype, len, data};
}

static void test_tlsa_usability(void **state)
{
    (void)state;
    unsigned char h256[32], h512[64], junk[40];
    memset(h256, 0xab, sizeof h256);
    memset(h512, 0xcd, sizeof h512);
    memset(junk, 0x30, sizeof junk);
    const struct {
        struct dns_tlsa record;
        int usable;
    } cases[] = {
        {tlsa(3, 1, 1, h256, 32), 1}, /* DANE-EE SPKI SHA-256 */
        {tlsa(2, 0, 1, h256, 32), 1}, /* DANE-TA certificate SHA-256 */
        {tlsa(2, 1, 2, h512, 64), 1},
        /* PKIX-TA and PKIX-EE are unusable for SMTP (RFC 7672 section 3.1.3) */
        {tlsa(0, 0, 1, h256, 32), 0},
        {tlsa(1, 1, 1, h256, 32), 0},
        /* unknown usage, selector, matching type */
        {tlsa(4, 1, 1, h256, 32), 0},
        {tlsa(3, 2, 1, h256, 32), 0},
        {tlsa(3, 1, 3, h256, 32), 0},
        /* a digest of the wrong length */
        {tlsa(3, 1, 1, h512, 64), 0},
        {tlsa(3, 1, 2, h256, 32), 0},
        {tlsa(3, 1, 1, h256, 31), 0},
        /* matching type 0: the data must be a whole DER certificate or SubjectPublicKeyInfo */
        {tlsa(3, 0, 0, junk, sizeof junk), 0},
        {tlsa(3, 1, 0, junk, sizeof junk), 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (tls_policy_tlsa_usable(&cases[i].record) != cases[i].usable)
            fail_msg("TLSA case %zu (%u %u %u, %zu octets): usable should be %d", i,
                     cases[i].record.usage, cases[i].record.selector, cases[i].record.mtype,
                     cases[i].record.len, cases[i].usable);
    }
    struct dns_tlsa t;
    FILE *f = fopen(ca_a, "r");
    assert_non_null(f);
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    assert_non_null(x);
    unsigned char *cert = NULL, *spki = NULL;
    int cert_len = i2d_X509(x, &cert);
    int spki_len = i2d_PUBKEY(X509_get0_pubkey(x), &spki);
    assert_true(cert_len > 0 && spki_len > 0);
    t = tlsa(3, 0, 0, cert, (size_t)cert_len);
    assert_true(tls_policy_tlsa_usable(&t));
    t = tlsa(2, 1, 0, spki, (size_t)spki_len);
    assert_true(tls_policy_tlsa_usable(&t));
    t = tlsa(3, 0, 0, cert, (size_t)cert_len - 1); /* cut short */
    assert_false(tls_policy_tlsa_usable(&t));
    t = tlsa(3, 0, 0, spki, (size_t)spki_len); /* a key where a certificate belongs */
    assert_false(tls_policy_tlsa_usable(&t));
    OPENSSL_free(cert);
    OPENSSL_free(spki);
    X509_free(x);
}

static void test_dane_over_table(void **state)
{
    (void)state;
    struct egress_conf e[1] = {egress("legacy", TLS_OPTIONAL, NULL)};
    struct tls_policy_rule r[1] = {rule("dane.example", TLS_RULE_NONE, NULL, 0)};
    struct config cfg = config_of(e, 1);
    cfg.tls_policy_rules = r;
    cfg.n_tls_policy_rules = 1;
    char err[256];
    assert_int_equal(tls_policy_load(&cfg, err, sizeof err), 0);

    unsigned char h256[32];
    memset(h256, 0x0f, sizeof h256);
    struct dns_tlsa recs[3] = {tlsa(1, 1, 1, h256, 32), tlsa(3, 1, 1, h256, 32),
                               tlsa(2, 0, 1, h256, 32)};
    struct dns_answer a = {.status = DNS_OK, .security = DNS_SECURE, .n = 3, .tlsa = recs};
    struct tls_policy_inputs in = {.mx_secure = 1, .tlsa = &a};

    /* secure records: DANE wins over the table's "none", the usable records carried */
    struct tls_policy *p =
        tls_policy_for(&e[0], "dane.example", "mx.dane.example", &in, err, sizeof err);
    assert_non_null(p);
    assert_string_equal(p->source, "dane");
    assert_int_equal(p->level, TLS_POLICY_REQUIRED);
    assert_true(p->dane);
    assert_true(p->verify);
    assert_non_null(p->ctx);
    assert_int_equal(p->n_tlsa, 2);
    assert_int_equal(p->tlsa[0].usage, 3);
    assert_int_equal(p->tlsa[1].usage, 2);
    assert_memory_equal(p->tlsa[0].data, h256, 32);
    assert_ptr_not_equal(p->tlsa[0].data, h256); /* a copy: the answer dies with its callback */
    assert_int_equal(p->n_names, 1);
    assert_string_equal(p->names[0], "mx.dane.example");
    assert_string_equal(p->sni, "mx.dane.example");
    assert_string_equal(tls_policy_level_name(p), "verify");
    assert_non_null(strstr(p->reason, "DANE _25._tcp.mx.dane.example"));
    assert_non_null(strstr(p->reason, "TLSA 3 1 1, 2 0 1"));
    /* RFC 8460 section 4.4: the recipient domain and every published record */
    assert_string_equal(p->policy_domain, "dane.example");
    assert_non_null(p->policy_string);
    assert_non_null(strstr(p->policy_string, "1 1 1 0F0F"));
    assert_non_null(strstr(p->policy_string, "\n3 1 1 0F0F"));
    assert_non_null(strstr(p->policy_string, "\n2 0 1 0F0F"));
    tls_policy_free(p);

    /* secure but no usable record: TLS required, not authenticated */
    a.n = 1;
    p = tls_policy_for(&e[0], "dane.example", "mx.dane.example", &in, err, sizeof err);
    assert_string_equal(p->source, "dane");
    assert_int_equal(p->level, TLS_POLICY_REQUIRED);
    assert_false(p->dane);
    assert_false(p->verify);
    assert_int_equal(p->n_tlsa, 0);
    assert_string_equal(tls_policy_level_name(p), "encrypt");
    assert_non_null(strstr(p->reason, "none usable"));
    tls_policy_free(p);

    /* insecure records, an insecure MX, no records: no DANE, the table decides */
    a.n = 3;
    a.security = DNS_INSECURE;
    p = tls_policy_for(&e[0], "dane.example", "mx.dane.example", &in, err, sizeof err);
    assert_string_equal(p->source, "table");
    assert_int_equal(p->level, TLS_POLICY_NONE);
    assert_null(p->policy_string);
    assert_string_equal(p->policy_domain, "");
    tls_policy_free(p);
    a.security = DNS_SECURE;
    in.mx_secure = 0;
    p = tls_policy_for(&e[0], "dane.example", "mx.dane.example", &in, err, sizeof err);
    assert_string_equal(p->source, "table");
    tls_policy_free(p);
    in.mx_secure = 1;
    a.status = DNS_NODATA;
    a.n = 0;
    p = tls_policy_for(&e[0], "dane.example", "mx.dane.example", &in, err, sizeof err);
    assert_string_equal(p->source, "table");
    tls_policy_free(p);
    /* another domain without a rule: the egress */
    a.status = DNS_NXDOMAIN;
    p = tls_policy_for(&e[0], "other.example", "mx.other.example", &in, err, sizeof err);
    assert_string_equal(p->source, "egress");
    assert_false(p->dane);
    tls_policy_free(p);
    tls_policy_unload();
    assert_int_equal(tls_client_context_count(), 0);
}

/* The order of the sources: DANE, then MTA-STS, then the table, then the egress. */
static void test_precedence_dane_sts_table(void **state)
{
    (void)state;
    struct egress_conf e[1] = {egress("legacy", TLS_OPTIONAL, NULL)};
    struct tls_policy_rule r[1] = {rule("both.example", TLS_RULE_NONE, NULL, 0)};
    struct config cfg = config_of(e, 1);
    cfg.tls_policy_rules = r;
    cfg.n_tls_policy_rules = 1;
    char err[256];
    assert_int_equal(tls_policy_load(&cfg, err, sizeof err), 0);
    static const char enforce[] =
        "version: STSv1\nmode: enforce\nmx: *.both.example\nmax_age: 600\n";
    struct mta_sts_policy *sts = sts_parse_policy(enforce, strlen(enforce), err, sizeof err);
    assert_non_null(sts);
    unsigned char h256[32];
    memset(h256, 0x0f, sizeof h256);
    struct dns_tlsa recs[1] = {tlsa(3, 1, 1, h256, 32)};
    struct dns_answer a = {.status = DNS_OK, .security = DNS_SECURE, .n = 1, .tlsa = recs};
    struct tls_policy_inputs in = {.mx_secure = 1, .tlsa = &a, .sts = sts};

    /* DANE and MTA-STS both published: DANE (RFC 8461 section 2) */
    struct tls_policy *p =
        tls_policy_for(&e[0], "both.example", "mx.both.example", &in, err, sizeof err);
    assert_string_equal(p->source, "dane");
    tls_policy_free(p);
    /* no secure TLSA: MTA-STS enforce over the table's "none": required, verified for the MX */
    a.security = DNS_INSECURE;
    p = tls_policy_for(&e[0], "both.example", "mx.both.example", &in, err, sizeof err);
    assert_string_equal(p->source, "mta-sts");
    assert_int_equal(p->level, TLS_POLICY_REQUIRED);
    assert_true(p->verify);
    assert_string_equal(p->names[0], "mx.both.example");
    assert_string_equal(p->policy_domain, "both.example");
    assert_non_null(strstr(p->policy_string, "mx: *.both.example"));
    tls_policy_free(p);
    /* testing: verified but optional */
    sts->mode = STS_MODE_TESTING;
    p = tls_policy_for(&e[0], "both.example", "mx.both.example", &in, err, sizeof err);
    assert_string_equal(p->source, "mta-sts");
    assert_int_equal(p->level, TLS_POLICY_OPPORTUNISTIC);
    assert_true(p->verify);
    tls_policy_free(p);
    /* mode none: the table decides */
    sts->mode = STS_MODE_NONE;
    p = tls_policy_for(&e[0], "both.example", "mx.both.example", &in, err, sizeof err);
    assert_string_equal(p->source, "table");
    assert_int_equal(p->level, TLS_POLICY_NONE);
    tls_policy_free(p);
    sts_policy_release(sts);
    tls_policy_unload();
    assert_int_equal(tls_client_context_count(), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_levels_from_the_egress),
        cmocka_unit_test(test_verify_names_and_client_certificate),
        cmocka_unit_test(test_same_files_share_one_context),
        cmocka_unit_test(test_reload_reuses_unchanged_and_rebuilds_changed),
        cmocka_unit_test(test_unloadable_files_change_nothing),
        cmocka_unit_test(test_table_rule_matching),
        cmocka_unit_test(test_table_over_egress),
        cmocka_unit_test(test_tlsa_usability),
        cmocka_unit_test(test_dane_over_table),
        cmocka_unit_test(test_precedence_dane_sts_table),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
