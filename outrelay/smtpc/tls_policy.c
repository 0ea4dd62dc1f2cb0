/* tls_policy.c - the TLS policy of an outbound connection (see tls_policy.h) from the MX
 * host's DANE TLSA records, the administrator's tls_policy: table or the egress's settings,
 * and the client contexts the current config's egresses hold in the shared cache (tls/).
 * Never touches a connection. Called by the SMTP client (smtpc/); loop thread only. */
#include "smtpc/tls_policy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/x509.h>

#include "common/strbuf.h"
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

/* --- DANE (RFC 7672) -------------------------------------------------------------------------- */

int tls_policy_tlsa_usable(const struct dns_tlsa *t)
{
    if (t->usage != 2 && t->usage != 3) return 0; /* PKIX-TA, PKIX-EE: RFC 7672 section 3.1.3 */
    if (t->selector > 1 || !t->data || t->len == 0) return 0;
    switch (t->mtype) {
    case 1:
        return t->len == 32; /* SHA2-256 */
    case 2:
        return t->len == 64; /* SHA2-512 */
    case 0: {                /* the certificate or key itself, DER: it must parse, whole */
        const unsigned char *d = t->data;
        int ok = 0;
        if (t->selector == 0) {
            X509 *x = d2i_X509(NULL, &d, (long)t->len);
            ok = x && d == t->data + t->len;
            X509_free(x);
        } else {
            EVP_PKEY *k = d2i_PUBKEY(NULL, &d, (long)t->len);
            ok = k && d == t->data + t->len;
            EVP_PKEY_free(k);
        }
        return ok;
    }
    default:
        return 0;
    }
}

/* One TLSA record in presentation form (RFC 6698 section 2.2): "3 1 1 <hex>". */
static void tlsa_text(struct strbuf *out, const struct dns_tlsa *t)
{
    static const char hex[] = "0123456789ABCDEF";
    char head[16];
    snprintf(head, sizeof head, "%u %u %u ", t->usage, t->selector, t->mtype);
    strbuf_puts(out, head);
    for (size_t i = 0; i < t->len; i++) {
        char two[3] = {hex[t->data[i] >> 4], hex[t->data[i] & 15], 0};
        strbuf_puts(out, two);
    }
}

/* The DANE policy when a secure TLSA answer with records came for the MX host (RFC 7672
 * section 2.2): STARTTLS required; with usable records the certificate must match one of them
 * (OpenSSL's DANE verification, the TLSA base domain being the MX host: RFC 7672 section 3.2.2
 * for DANE-TA names), with none usable TLS without authentication (RFC 7672 section 2.2: the
 * server said it does TLS, so no plaintext). For TLS reporting (RFC 8460 section 4.4) the policy
 * domain is the recipient domain and the policy string the TLSA RRset as published. 0 when DANE
 * does not apply (no answer, insecure, no records), and the next source decides. */
static int apply_dane(struct tls_policy *p, const char *domain, const struct tls_policy_inputs *in)
{
    const struct dns_answer *a = in ? in->tlsa : NULL;
    if (!a || !in->mx_secure || a->security != DNS_SECURE || a->status != DNS_OK || a->n == 0)
        return 0;
    struct strbuf published = STRBUF_INIT, used = STRBUF_INIT;
    p->tlsa = xcalloc(a->n, sizeof *p->tlsa);
    for (size_t i = 0; i < a->n; i++) {
        const struct dns_tlsa *t = &a->tlsa[i];
        if (i) strbuf_puts(&published, "\n");
        tlsa_text(&published, t);
        if (!tls_policy_tlsa_usable(t)) continue;
        struct dns_tlsa *copy = &p->tlsa[p->n_tlsa++];
        *copy = *t;
        copy->data = xmalloc(t->len);
        memcpy(copy->data, t->data, t->len);
        char brief[16];
        snprintf(brief, sizeof brief, "%s%u %u %u", used.len ? ", " : "", t->usage, t->selector,
                 t->mtype);
        strbuf_puts(&used, brief);
    }
    p->policy_string = strbuf_detach(&published, NULL);
    snprintf(p->policy_domain, sizeof p->policy_domain, "%s", domain);
    p->source = "dane";
    p->level = TLS_POLICY_REQUIRED;
    p->sni = p->mx;
    if (p->n_tlsa) {
        p->dane = 1;
        p->verify = 1;
        p->names[p->n_names++] = p->mx;
        snprintf(p->reason, sizeof p->reason,
                 "DANE _25._tcp.%s: STARTTLS required, certificate must match TLSA %s", p->mx,
                 used.data);
    } else {
        snprintf(p->reason, sizeof p->reason,
                 "DANE _25._tcp.%s: %zu TLSA record%s, none usable: STARTTLS required, "
                 "certificate not authenticated (RFC 7672 section 2.2)",
                 p->mx, a->n, a->n == 1 ? "" : "s");
    }
    strbuf_free(&used);
    return 1;
}

/* --- MTA-STS (RFC 8461) ------------------------------------------------------------------- */

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

/* --- the decision ------------------------------------------------------------------------- */

struct tls_policy *tls_policy_for(const struct egress_conf *egress, const char *domain,
                                  const char *mx, const struct tls_policy_inputs *in, char *err,
                                  size_t errlen)
{
    struct tls_policy *p = xcalloc(1, sizeof *p);
    snprintf(p->mx, sizeof p->mx, "%s", mx);
    /* the first source that has a policy decides: DANE for the MX host (a bogus TLSA answer
     * never gets here: the connection skips that host), then MTA-STS for the domain (RFC 8461
     * section 2: DANE wins where both are published), then the table, then the egress */
    int dane = apply_dane(p, domain, in);
    if (!dane) {
        int sts = apply_sts(p, egress, domain, in ? in->sts : NULL, err, errlen);
        if (sts < 0) {
            tls_policy_free(p);
            return NULL;
        }
        if (sts == 0) return p;
    }
    const struct tls_policy_rule *rule = dane ? NULL : tls_policy_rule_find(loaded_cfg, domain);
    if (dane) {
        /* decided: level, names, reason */
    } else if (rule) {
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
    if (rule || dane) return p;
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
    for (size_t i = 0; i < p->n_tlsa; i++)
        free(p->tlsa[i].data);
    free(p->tlsa);
    free(p->policy_string);
    free(p);
}
