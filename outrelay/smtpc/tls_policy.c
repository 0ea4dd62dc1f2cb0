/* tls_policy.c - the TLS policy of an outbound connection (see tls_policy.h) from the
 * administrator's tls_policy: table or the egress's settings, and the client contexts the
 * current config's egresses hold in the shared cache (tls/). Never touches a connection.
 * Called by the SMTP client (smtpc/); loop thread only. */
#include "smtpc/tls_policy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/util.h"
#include "sts/sts.h"
#include "tls/tls.h"

/* One context reference per egress of the current config: what keeps its contexts cached
 * between connections. */
static SSL_CTX **loaded_ctx;
static size_t n_loaded_ctx;
/* The current config, for its tls_policy: table. */
static const struct config *loaded_cfg;

/* The system store is loaded for every context: whether to verify is decided per connection. */
static struct tls_client_files egress_files(const struct egress_conf *e)
{
    return (struct tls_client_files){.ca_file = e->tls_ca_file,
                                     .system_ca = 1,
                                     .cert_file = e->tls_cert,
                                     .key_file = e->tls_key};
}

static void release_all(SSL_CTX **ctx, size_t n)
{
    for (size_t i = 0; i < n; i++)
        tls_client_context_release(ctx[i]);
    free(ctx);
}

int tls_policy_load(const struct config *cfg, char *err, size_t errlen)
{
    SSL_CTX **ctx = xcalloc(cfg->n_egress ? cfg->n_egress : 1, sizeof *ctx);
    for (size_t i = 0; i < cfg->n_egress; i++) {
        struct tls_client_files files = egress_files(&cfg->egress[i]);
        ctx[i] = tls_client_context_acquire(&files, 1, err, errlen);
        if (!ctx[i]) {
            release_all(ctx, i);
            return -1;
        }
    }
    release_all(loaded_ctx, n_loaded_ctx);
    loaded_ctx = ctx;
    n_loaded_ctx = cfg->n_egress;
    loaded_cfg = cfg;
    return 0;
}

void tls_policy_unload(void)
{
    release_all(loaded_ctx, n_loaded_ctx);
    loaded_ctx = NULL;
    n_loaded_ctx = 0;
    loaded_cfg = NULL;
}

const struct tls_policy_rule *tls_policy_rule_find(const struct config *cfg, const char *domain)
{
    if (!cfg || !domain || !domain[0]) return NULL;
    for (size_t i = 0; i < cfg->n_tls_policy_rules; i++)
        if (!strcasecmp(cfg->tls_policy_rules[i].domain, domain)) return &cfg->tls_policy_rules[i];
    /* ".example.org" for a.b.example.org: the nearest parent first */
    for (const char *p = strchr(domain, '.'); p; p = strchr(p + 1, '.'))
        for (size_t i = 0; i < cfg->n_tls_policy_rules; i++)
            if (!strcasecmp(cfg->tls_policy_rules[i].domain, p)) return &cfg->tls_policy_rules[i];
    return NULL;
}

const char *tls_policy_level_name(const struct tls_policy *p)
{
    switch (p->level) {
    case TLS_POLICY_NONE:
        return "none";
    case TLS_POLICY_OPPORTUNISTIC:
        return "may";
    case TLS_POLICY_REQUIRED:
        return p->verify ? "verify" : "encrypt";
    }
    return "?";
}

static const char *level_text(enum tls_policy_level level)
{
    switch (level) {
    case TLS_POLICY_NONE:
        return "no TLS";
    case TLS_POLICY_OPPORTUNISTIC:
        return "STARTTLS when offered";
    case TLS_POLICY_REQUIRED:
        return "STARTTLS required";
    }
    return "?";
}

/* The administrator's rule for the domain: level, names and reason; the egress still gives the
 * client context (its CA file and client certificate). */
static void apply_rule(struct tls_policy *p, const struct tls_policy_rule *r)
{
    static const char *const words[] = {"none", "may", "encrypt", "verify"};
    p->source = "table";
    p->level = r->level == TLS_RULE_NONE  ? TLS_POLICY_NONE
               : r->level == TLS_RULE_MAY ? TLS_POLICY_OPPORTUNISTIC
                                          : TLS_POLICY_REQUIRED;
    p->verify = r->level == TLS_RULE_VERIFY;
    p->sni = p->mx;
    if (p->verify) {
        for (size_t i = 0; i < r->n_names && i < TLS_POLICY_MAX_NAMES; i++) {
            snprintf(p->name_store[i], sizeof p->name_store[i], "%s", r->names[i]);
            p->names[p->n_names++] = p->name_store[i];
        }
        if (p->n_names == 0) p->names[p->n_names++] = p->mx;
    }
    snprintf(p->reason, sizeof p->reason, "tls_policy %s: %s (%s%s%s)", r->domain, words[r->level],
             level_text(p->level), p->verify ? ", certificate verified for " : "",
             p->verify ? (r->n_names ? r->names[0] : p->mx) : "");
}

/* RFC 8461 section 5: an enforce or testing policy of the recipient domain asks for STARTTLS
 * and a certificate for the MX name that chains to the CAs of mta_sts.ca_file (else the
 * system's). Under enforce a failure keeps the mail queued; under testing the connection goes
 * on as an optional one (a failed handshake is retried in plaintext) with the failure recorded.
 * 0 when the policy decided, 1 when it does not apply (mode none), -1 with err. */
static int apply_sts(struct tls_policy *p, const struct egress_conf *egress, const char *domain,
                     const struct mta_sts_policy *sts, char *err, size_t errlen)
{
    if (!sts || sts->mode == STS_MODE_NONE || !domain || !domain[0]) return 1;
    struct tls_client_files files = egress_files(egress);
    files.ca_file = loaded_cfg ? loaded_cfg->mta_sts_ca_file : NULL;
    p->ctx = tls_client_context_acquire(&files, 0, err, errlen);
    if (!p->ctx) return -1;
    p->source = "mta-sts";
    p->level = sts->mode == STS_MODE_ENFORCE ? TLS_POLICY_REQUIRED : TLS_POLICY_OPPORTUNISTIC;
    p->verify = 1;
    p->sni = p->mx;
    p->names[p->n_names++] = p->mx;
    p->client_cert = egress->tls_cert;
    snprintf(p->policy_domain, sizeof p->policy_domain, "%s", domain);
    p->policy_string = xstrdup(sts->text);
    snprintf(p->reason, sizeof p->reason, "mta-sts %s: %s, id %s (%s, certificate verified for %s)",
             domain, sts_mode_name(sts->mode), sts->id, level_text(p->level), p->mx);
    return 0;
}

struct tls_policy *tls_policy_for(const struct egress_conf *egress, const char *domain,
                                  const char *mx, const struct tls_policy_inputs *in, char *err,
                                  size_t errlen)
{
    struct tls_policy *p = xcalloc(1, sizeof *p);
    snprintf(p->mx, sizeof p->mx, "%s", mx);
    /* DANE (RFC 7672) for the MX, then MTA-STS (RFC 8461) for the domain, go here, before the
     * table: the first source that has a policy decides. DANE uses the MX host's TLSA records
     * (dns_query(DNS_TYPE_TLSA) on "_25._tcp.<mx>", dns/dns.h) only when the answer is
     * DNS_SECURE (and the MX's address answer was secure too); a secure set with no usable record
     * keeps the mail waiting, DNS_BOGUS is a temporary failure, DNS_INSECURE falls through to
     * MTA-STS and the table. The lookup runs on the loop before this call and reaches it as an
     * argument. */
    int sts = apply_sts(p, egress, domain, in ? in->sts : NULL, err, errlen);
    if (sts <= 0) {
        if (sts < 0) {
            tls_policy_free(p);
            return NULL;
        }
        return p;
    }
    const struct tls_policy_rule *rule = tls_policy_rule_find(loaded_cfg, domain);
    if (rule) {
        apply_rule(p, rule);
    } else {
        p->source = "egress";
        p->level = egress->tls == TLS_NONE       ? TLS_POLICY_NONE
                   : egress->tls == TLS_REQUIRED ? TLS_POLICY_REQUIRED
                                                 : TLS_POLICY_OPPORTUNISTIC;
    }
    if (p->level == TLS_POLICY_NONE) {
        if (!rule)
            snprintf(p->reason, sizeof p->reason, "egress %s: %s", egress->name,
                     level_text(p->level));
        return p;
    }
    struct tls_client_files files = egress_files(egress);
    p->ctx = tls_client_context_acquire(&files, 0, err, errlen);
    if (!p->ctx) {
        tls_policy_free(p);
        return NULL;
    }
    p->client_cert = egress->tls_cert;
    if (rule) return p;
    /* the name the certificate must carry is also the one we ask for (SNI) */
    p->sni = egress->tls_name ? egress->tls_name : p->mx;
    p->verify = egress->tls_verify;
    if (p->verify) p->names[p->n_names++] = p->sni;
    snprintf(p->reason, sizeof p->reason, "egress %s: %s%s%s%s%s", egress->name,
             level_text(p->level), p->verify ? ", certificate verified for " : "",
             p->verify ? p->sni : "", p->client_cert ? ", client certificate " : "",
             p->client_cert ? p->client_cert : "");
    return p;
}

void tls_policy_free(struct tls_policy *p)
{
    if (!p) return;
    tls_client_context_release(p->ctx);
    free(p->policy_string);
    free(p);
}
