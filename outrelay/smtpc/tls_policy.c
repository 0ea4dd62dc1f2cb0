/* tls_policy.c - the TLS policy of an outbound connection (see tls_policy.h) from the egress's
 * settings, and the client contexts the current config's egresses hold in the shared cache
 * (tls/). Never touches a connection. Called by the SMTP client (smtpc/); loop thread only. */
#include "smtpc/tls_policy.h"

#include <stdio.h>
#include <stdlib.h>

#include "common/util.h"
#include "tls/tls.h"

/* One context reference per egress of the current config: what keeps its contexts cached
 * between connections. */
static SSL_CTX **loaded_ctx;
static size_t n_loaded_ctx;

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
    return 0;
}

void tls_policy_unload(void)
{
    release_all(loaded_ctx, n_loaded_ctx);
    loaded_ctx = NULL;
    n_loaded_ctx = 0;
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

struct tls_policy *tls_policy_for(const struct egress_conf *egress, const char *domain,
                                  const char *mx, char *err, size_t errlen)
{
    (void)domain; /* a per-domain source (MTA-STS) will look at it */
    /* DANE (RFC 7672) plugs in here, before the egress default: the MX host's TLSA records
     * (dns_query(DNS_TYPE_TLSA) on "_25._tcp.<mx>", dns/dns.h), used only when the answer's
     * security is DNS_SECURE (and the MX's address answer was secure too); a secure set with no
     * usable record means the delivery waits, DNS_BOGUS is a temporary failure, DNS_INSECURE
     * falls through to MTA-STS and the tables below. The lookup has to run before this call (the
     * caller resolves the MX on the loop) and reach it as an argument. */
    struct tls_policy *p = xcalloc(1, sizeof *p);
    snprintf(p->mx, sizeof p->mx, "%s", mx);
    p->level = egress->tls == TLS_NONE       ? TLS_POLICY_NONE
               : egress->tls == TLS_REQUIRED ? TLS_POLICY_REQUIRED
                                             : TLS_POLICY_OPPORTUNISTIC;
    if (p->level == TLS_POLICY_NONE) {
        snprintf(p->reason, sizeof p->reason, "egress %s: %s", egress->name, level_text(p->level));
        return p;
    }
    struct tls_client_files files = egress_files(egress);
    p->ctx = tls_client_context_acquire(&files, 0, err, errlen);
    if (!p->ctx) {
        free(p);
        return NULL;
    }
    /* the name the certificate must carry is also the one we ask for (SNI) */
    p->sni = egress->tls_name ? egress->tls_name : p->mx;
    p->verify = egress->tls_verify;
    if (p->verify) p->names[p->n_names++] = p->sni;
    p->client_cert = egress->tls_cert;
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
    free(p);
}
