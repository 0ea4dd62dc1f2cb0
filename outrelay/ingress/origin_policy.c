/* origin_policy.c - see origin_policy.h. Certificate checks use OpenSSL's own chain and name
 * verification (X509_verify_cert with the SSL client purpose, X509_check_host); nothing here
 * parses certificates by hand. */
#include "ingress/origin_policy.h"

#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/log.h"
#include "mail/header.h"
#include "mail/dkim_verify.h"

static const struct config *policy_cfg;
static X509_STORE **policy_stores; /* per origin; NULL where no certificate is required */
static int policy_any_certificate;

static void stores_free(X509_STORE **stores, size_t n)
{
    for (size_t i = 0; stores && i < n; i++)
        X509_STORE_free(stores[i]);
    free(stores);
}

/* The CA stores of cfg's certificate origins, or NULL with err. *any: some origin needs one. */
static X509_STORE **stores_load(const struct config *cfg, int *any, char *err, size_t errlen)
{
    X509_STORE **stores = calloc(cfg->n_origins ? cfg->n_origins : 1, sizeof *stores);
    if (!stores) abort();
    *any = 0;
    for (size_t i = 0; i < cfg->n_origins; i++) {
        const struct origin_conf *o = &cfg->origins[i];
        if (!o->requires_certificate) continue;
        *any = 1;
        X509_STORE *st = X509_STORE_new();
        int ok = st && (o->cert_ca_file ? X509_STORE_load_file(st, o->cert_ca_file)
                                        : X509_STORE_set_default_paths(st));
        if (!ok) {
            snprintf(err, errlen, "origins.%s: cannot load the CA certificates %s", o->name,
                     o->cert_ca_file ? o->cert_ca_file : "of the system store");
            X509_STORE_free(st);
            stores_free(stores, cfg->n_origins);
            return NULL;
        }
        stores[i] = st;
    }
    return stores;
}

int origin_policy_init(const struct config *cfg, char *err, size_t errlen)
{
    X509_STORE **stores = stores_load(cfg, &policy_any_certificate, err, errlen);
    if (!stores) return -1;
    policy_cfg = cfg;
    policy_stores = stores;
    return 0;
}

/* SIGHUP: the origins of cfg from now on. The stores are built before anything changes, so a CA
 * file that cannot be read leaves the old origins in force (-1 with err). Sessions keep the
 * origin they were given (a pointer into the old config, which the caller keeps alive). */
int origin_policy_reload(const struct config *cfg, SSL_CTX *server_ctx, char *err, size_t errlen)
{
    int any;
    X509_STORE **stores = stores_load(cfg, &any, err, errlen);
    if (!stores) return -1;
    stores_free(policy_stores, policy_cfg ? policy_cfg->n_origins : 0);
    policy_cfg = cfg;
    policy_stores = stores;
    policy_any_certificate = any;
    origin_policy_setup_server_ctx(server_ctx); /* a first certificate origin asks from now on */
    return 0;
}

void origin_policy_shutdown(void)
{
    stores_free(policy_stores, policy_cfg ? policy_cfg->n_origins : 0);
    policy_stores = NULL;
    policy_any_certificate = 0;
}

/* Accept whatever the client presents during the handshake: a client without a certificate, or
 * with one we do not trust, is still a client (just not a certificate origin). */
static int accept_any(int preverify_ok, X509_STORE_CTX *ctx)
{
    (void)preverify_ok;
    (void)ctx;
    return 1;
}

void origin_policy_setup_server_ctx(SSL_CTX *ctx)
{
    if (!ctx || !policy_any_certificate) return;
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_CLIENT_ONCE, accept_any);
    static const unsigned char sid[] = "outrelay";
    SSL_CTX_set_session_id_context(ctx, sid, sizeof sid - 1);
}

static int in_networks(const struct origin_conf *o, const struct sockaddr_any *peer)
{
    for (size_t n = 0; n < o->n_networks; n++)
        if (util_prefix_match(&o->networks[n], peer)) return 1;
    return 0;
}

const struct origin_conf *origin_policy_by_address(const struct sockaddr_any *peer)
{
    for (size_t i = 0; i < policy_cfg->n_origins; i++) {
        const struct origin_conf *o = &policy_cfg->origins[i];
        if (!o->requires_certificate && in_networks(o, peer)) return o;
    }
    return NULL;
}

/* Does cert chain (with the peer's intermediates) to store, for a TLS client? */
static int chain_ok(X509_STORE *store, X509 *cert, STACK_OF(X509) * chain)
{
    X509_STORE_CTX *vctx = X509_STORE_CTX_new();
    if (!vctx) return 0;
    int ok = X509_STORE_CTX_init(vctx, store, cert, chain) == 1 &&
             X509_STORE_CTX_set_purpose(vctx, X509_PURPOSE_SSL_CLIENT) == 1 &&
             X509_verify_cert(vctx) == 1;
    X509_STORE_CTX_free(vctx);
    return ok;
}

const struct origin_conf *origin_policy_by_certificate(SSL *ssl, const struct sockaddr_any *peer,
                                                       char *subject, size_t size)
{
    subject[0] = '\0';
    if (!policy_any_certificate || !ssl) return NULL;
    X509 *cert = SSL_get1_peer_certificate(ssl);
    if (!cert) return NULL;
    X509_NAME_oneline(X509_get_subject_name(cert), subject, (int)size);
    STACK_OF(X509) *chain = SSL_get_peer_cert_chain(ssl);
    const struct origin_conf *found = NULL;
    for (size_t i = 0; i < policy_cfg->n_origins && !found; i++) {
        const struct origin_conf *o = &policy_cfg->origins[i];
        if (!o->requires_certificate || !policy_stores[i]) continue;
        if (o->n_networks && !in_networks(o, peer)) continue;
        int named = 0;
        for (size_t k = 0; k < o->n_cert_names && !named; k++)
            named = X509_check_host(cert, o->cert_names[k], 0, 0, NULL) == 1;
        if (named && chain_ok(policy_stores[i], cert, chain)) found = o;
    }
    X509_free(cert);
    return found;
}

/* Is domain one of the origin's domains or below one of them? */
static int domain_belongs(const struct origin_conf *o, const char *domain)
{
    if (!domain || !*domain) return 0;
    size_t n = strlen(domain);
    for (size_t i = 0; i < o->n_domains; i++) {
        size_t m = strlen(o->domains[i]);
        if (n == m && strcasecmp(domain, o->domains[i]) == 0) return 1;
        if (n > m && domain[n - m - 1] == '.' && strcasecmp(domain + n - m, o->domains[i]) == 0)
            return 1;
    }
    return 0;
}

const char *origin_policy_sender_refusal(const struct origin_conf *o, const char *sender, char *buf,
                                         size_t size)
{
    if (!o || o->n_domains == 0 || !sender[0]) return NULL;
    const char *at = strrchr(sender, '@');
    if (at && domain_belongs(o, at + 1)) return NULL;
    snprintf(buf, size,
             "550 5.7.1 <%s>: sender domain is not one of origin %s's domains; relay access "
             "denied",
             sender, o->name);
    return buf;
}

const char *origin_policy_message_refusal(const struct config *cfg, const struct origin_conf *o,
                                          const char *from_domain, const char *data, size_t len,
                                          char *buf, size_t size)
{
    struct mail_header_iter it;
    const char *name, *value;
    size_t name_len, value_len;
    int tenant_seen = 0, tenant_other = 0;
    mail_header_begin(&it, data, len);
    while (mail_header_next(&it, &name, &name_len, &value, &value_len)) {
        if (mail_header_name_is(name, name_len, ORIGIN_POLICY_LOOP_HEADER) &&
            mail_header_value_is(value, value_len, cfg->deployment_id, 1)) {
            snprintf(buf, size,
                     "554 5.4.6 Mail loop: this message already passed through %s (%s: %s)",
                     cfg->deployment_id, ORIGIN_POLICY_LOOP_HEADER, cfg->deployment_id);
            return buf;
        }
        if (o && o->tenant_id &&
            mail_header_name_is(name, name_len, "X-MS-Exchange-CrossTenant-Id")) {
            tenant_seen = 1;
            if (!mail_header_value_is(value, value_len, o->tenant_id, 1)) tenant_other = 1;
        }
    }
    if (!o) return NULL;
    if (o->n_domains && !domain_belongs(o, from_domain)) {
        snprintf(buf, size,
                 "550 5.7.1 From: domain %s is not one of origin %s's domains; relay access "
                 "denied",
                 from_domain && *from_domain ? from_domain : "(none)", o->name);
        return buf;
    }
    /* The tenant header is not always set by Exchange Online; an origin that also requires a
     * DKIM signature by its domains is bound by that when the header is missing. */
    if (o->tenant_id && (tenant_other || (!tenant_seen && !o->dkim_required))) {
        snprintf(buf, size,
                 "550 5.7.1 Message is not from origin %s's Microsoft 365 tenant "
                 "(X-MS-Exchange-CrossTenant-Id %s); relay access denied",
                 o->name, tenant_seen ? "differs" : "missing");
        return buf;
    }
    return NULL;
}

void origin_policy_stamp(const struct config *cfg, struct strbuf *out)
{
    strbuf_printf(out, "%s: %s\r\n", ORIGIN_POLICY_LOOP_HEADER, cfg->deployment_id);
}

const char *origin_policy_dkim_refusal(const struct origin_conf *o,
                                       const struct dkim_signature *sigs, size_t n, char *buf,
                                       size_t size)
{
    if (!o || !o->dkim_required) return NULL;
    for (size_t i = 0; i < n; i++)
        if (sigs[i].result == 1 && domain_belongs(o, sigs[i].domain)) return NULL;
    snprintf(buf, size,
             "550 5.7.1 Message carries no verifying DKIM signature by origin %s's domains "
             "(%zu signature%s checked); relay access denied",
             o->name, n, n == 1 ? "" : "s");
    return buf;
}
