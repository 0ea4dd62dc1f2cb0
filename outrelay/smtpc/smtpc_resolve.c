/* smtpc_resolve.c - where an SMTP client connection goes: the MX hosts of the destination's
 * domain (or the smarthost), their addresses in the egress's families, the host's DANE TLSA
 * records (RFC 7672) and from them the TLS policy for the host, and connecting to the addresses
 * one by one from a bound source address. When nothing is left it fails the destination and
 * closes the connection. Never blocks: DNS and connect are asynchronous. Called by the session
 * (smtpc.c); uses only the connection core. Loop thread. */
#include <errno.h>
#include <event2/bufferevent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "common/log.h"
#include "common/util.h"
#include "smtpc/smtpc_internal.h"
#include "dns/dns.h"

/* --- MX and address resolution --------------------------------------------------------------- */

static int by_preference(const void *a, const void *b)
{
    const struct mx_host *x = a, *y = b;
    return x->preference - y->preference;
}

static void host_resolved(void *arg, const struct dns_answer *a);
static void tlsa_resolved(void *arg, const struct dns_answer *a);

/* The host's addresses (and TLSA answer, or NULL) are known: its TLS policy, then connect. */
static void host_ready(struct smtpc_conn *c, const struct dns_answer *tlsa)
{
    char err[256];
    struct tls_policy_inputs in = {.mx_secure = c->mx_secure, .tlsa = tlsa, .sts = c->sts};
    c->tls_policy = tls_policy_for(c->egress, c->dest->domain, c->mx_name, &in, err, sizeof err);
    c->host_i++;
    if (!c->tls_policy) {
        smtpc_set_error(c, 0, "4.7.5", "no TLS client context for %s: %s", c->mx_name, err);
        log_error("smtpc: %s", c->last_error);
        smtpc_resolve_next_host(c);
        return;
    }
    smtpc_conn_next_address(c);
}

int smtpc_more_candidates(const struct smtpc_conn *c)
{
    return c->tries < SMTPC_MAX_ADDRESSES && (c->addr_i < c->n_addrs || c->host_i < c->n_hosts);
}

void smtpc_resolve_next_host(struct smtpc_conn *c)
{
    if (c->host_i < c->n_hosts && c->tries >= SMTPC_MAX_ADDRESSES) {
        log_info("smtpc: %s: %d addresses tried, %zu more MX hosts left for the next attempt",
                 c->dest->domain[0] ? c->dest->domain : c->egress->host, c->tries,
                 c->n_hosts - c->host_i);
        c->host_i = c->n_hosts;
        if (c->pinned) c->pinned_temp = 1; /* a host left untried may take it */
    }
    if (c->host_i >= c->n_hosts && c->pinned) {
        smtpc_pinned_exhausted(c);
        return;
    }
    if (c->host_i >= c->n_hosts) {
        if (!c->last_error[0]) {
            if (c->any_tempfail)
                smtpc_set_error(c, 0, "4.4.3",
                                "cannot resolve any mail exchanger of %s (DNS temporary failure)",
                                c->dest->domain);
            else
                smtpc_set_error(c, 550, "5.4.4", "no address for any mail exchanger of %s",
                                c->dest->domain[0] ? c->dest->domain : c->egress->host);
        }
        smtpc_fail_destination(c);
        smtpc_conn_close(c);
        return;
    }
    c->state = C_RESOLVE_HOST;
    snprintf(c->mx_name, sizeof c->mx_name, "%s", c->hosts[c->host_i].name);
    tls_policy_free(c->tls_policy);
    c->tls_policy = NULL;
    free(c->addrs);
    c->addrs = NULL;
    c->n_addrs = c->addr_i = 0;
    c->aaaa_done = 0;
    c->addr_secure = 1;
    struct sockaddr_any lit;
    if (util_parse_ip(c->mx_name, &lit) == 0) { /* smarthost given as an address */
        c->addrs = xmalloc(sizeof *c->addrs);
        c->addrs[0] = lit;
        c->n_addrs = 1;
        host_ready(c, NULL);
        return;
    }
    c->dnsq = dns_query(c->mx_name, DNS_TYPE_A, host_resolved, c);
}

static int source_family_ok(const struct smtpc_conn *c, int family)
{
    if (c->egress->n_sources == 0) return 1;
    for (size_t i = 0; i < c->egress->n_sources; i++)
        if (c->egress->sources[i].ss.ss_family == family) return 1;
    return 0;
}

static void host_resolved(void *arg, const struct dns_answer *a)
{
    struct smtpc_conn *c = arg;
    c->dnsq = NULL;
    if (a->status == DNS_TEMPFAIL) c->any_tempfail = 1;
    if (a->security != DNS_SECURE) c->addr_secure = 0;
    for (size_t i = 0; i < a->n && a->status == DNS_OK; i++) {
        if (!source_family_ok(c, a->addrs[i].ss.ss_family)) continue;
        c->addrs = xrealloc(c->addrs, (c->n_addrs + 1) * sizeof *c->addrs);
        c->addrs[c->n_addrs++] = a->addrs[i];
    }
    if (!c->aaaa_done) {
        c->aaaa_done = 1;
        c->dnsq = dns_query(c->mx_name, DNS_TYPE_AAAA, host_resolved, c);
        return;
    }
    if (c->n_addrs == 0) {
        c->host_i++;
        smtpc_resolve_next_host(c);
        return;
    }
    /* DANE (RFC 7672 section 2.2): TLSA records count only for an MX host reached through
     * DNSSEC-validated MX and address answers (section 2.2.2); a smarthost is the
     * administrator's choice and keeps the egress's TLS settings (section 3 would allow DANE
     * for it; not done) */
    if (c->egress->type == EGRESS_DIRECT && c->dest->domain[0] && c->dest->domain[0] != '[' &&
        c->mx_secure && c->addr_secure) {
        char qname[300];
        snprintf(qname, sizeof qname, "_25._tcp.%s", c->mx_name);
        c->dnsq = dns_query(qname, DNS_TYPE_TLSA, tlsa_resolved, c);
        return;
    }
    host_ready(c, NULL);
}

/* The MX host's TLSA answer. Secure records: DANE decides (tls_policy_for); secure NXDOMAIN or
 * NODATA and insecure answers: no DANE. A bogus answer, or one that could not be had, may hide
 * records an attacker removed: that host is skipped with a temporary error (RFC 7672 section
 * 2.2), so the mail waits rather than go without the TLS the receiver asked for. */
static void tlsa_resolved(void *arg, const struct dns_answer *a)
{
    struct smtpc_conn *c = arg;
    c->dnsq = NULL;
    if (a->security == DNS_BOGUS || a->status == DNS_TEMPFAIL) {
        int bogus = a->security == DNS_BOGUS;
        c->tls_failure = bogus ? "dnssec-invalid" : NULL;
        smtpc_set_error(c, 0, bogus ? "4.7.5" : "4.4.3",
                        "TLSA lookup for _25._tcp.%s failed (%s): DANE status unknown, the mail "
                        "stays queued",
                        c->mx_name,
                        a->error ? a->error
                        : bogus  ? "DNSSEC validation failed (bogus)"
                                 : "temporary DNS failure");
        log_warn("smtpc: %s", c->last_error);
        c->host_i++;
        smtpc_resolve_next_host(c);
        return;
    }
    host_ready(c, a);
}

/* RFC 8461 section 4.1: under an enforce policy only the MX hosts its mx patterns match are
 * used; when none is left the mail stays queued. 0, or -1 when the destination failed. */
static int sts_filter_hosts(struct smtpc_conn *c)
{
    if (!c->sts || c->sts->mode != STS_MODE_ENFORCE) return 0;
    size_t kept = 0;
    for (size_t i = 0; i < c->n_hosts; i++) {
        if (sts_policy_allows(c->sts, c->hosts[i].name))
            c->hosts[kept++] = c->hosts[i];
        else
            log_warn("smtpc: MX %s of %s is not in its MTA-STS policy (id %s): not used",
                     c->hosts[i].name, c->dest->domain, c->sts->id);
    }
    c->n_hosts = kept;
    if (kept > 0) return 0;
    smtpc_set_error(c, 0, "4.7.5",
                    "no MX host of %s matches its MTA-STS policy (mode enforce, id %s, mx %s%s); "
                    "the mail stays queued",
                    c->dest->domain, c->sts->id, c->sts->n_mx ? c->sts->mx[0] : "",
                    c->sts->n_mx > 1 ? ", ..." : "");
    c->tls_failure = "validation-failure";
    log_warn("smtpc: %s", c->last_error);
    smtpc_fail_destination(c);
    smtpc_conn_close(c);
    return -1;
}

static void mx_resolved(void *arg, const struct dns_answer *a)
{
    struct smtpc_conn *c = arg;
    c->dnsq = NULL;
    const char *domain = c->dest->domain;
    c->mx_secure = a->security == DNS_SECURE;
    if (a->status == DNS_TEMPFAIL) {
        smtpc_set_error(c, 0, "4.4.3", "MX lookup for %s failed: %s", domain,
                        a->error ? a->error : "temporary DNS failure");
        smtpc_fail_destination(c);
        smtpc_conn_close(c);
        return;
    }
    if (a->status == DNS_NXDOMAIN) {
        smtpc_set_error(c, 550, "5.1.2", "Host or domain name not found: %s (NXDOMAIN)", domain);
        smtpc_fail_destination(c);
        smtpc_conn_close(c);
        return;
    }
    if (a->status == DNS_NODATA) { /* implicit MX (RFC 5321 5.1) */
        c->hosts = xcalloc(1, sizeof *c->hosts);
        snprintf(c->hosts[0].name, sizeof c->hosts[0].name, "%s", domain);
        c->n_hosts = 1;
    } else {
        if (a->n == 1 && a->mx[0].host[0] == '\0') {
            smtpc_set_error(c, 556, "5.1.10", "Domain %s does not accept mail (null MX)", domain);
            smtpc_fail_destination(c);
            smtpc_conn_close(c);
            return;
        }
        c->hosts = xcalloc(a->n, sizeof *c->hosts);
        for (size_t i = 0; i < a->n; i++) {
            if (a->mx[i].host[0] == '\0') continue;
            c->hosts[c->n_hosts].preference = a->mx[i].preference;
            snprintf(c->hosts[c->n_hosts].name, sizeof c->hosts[0].name, "%s", a->mx[i].host);
            c->n_hosts++;
        }
        /* spread load over equal preferences, then sort stably by preference */
        for (size_t i = c->n_hosts; i > 1; i--) {
            size_t j = (size_t)random() % i;
            struct mx_host t = c->hosts[i - 1];
            c->hosts[i - 1] = c->hosts[j];
            c->hosts[j] = t;
        }
        qsort(c->hosts, c->n_hosts, sizeof *c->hosts, by_preference);
    }
    if (sts_filter_hosts(c) < 0) return;
    c->host_i = 0;
    smtpc_resolve_next_host(c);
}

/* The domain's MTA-STS policy (or none) is known: now its MX hosts. */
static void sts_resolved(void *arg, struct mta_sts_policy *policy, const char *failure,
                         const char *reason)
{
    struct smtpc_conn *c = arg;
    c->stsq = NULL;
    sts_policy_release(c->sts);
    c->sts = policy;
    c->sts_failure = failure;
    if (reason) log_info("smtpc: %s; delivering as without MTA-STS", reason);
    c->dnsq = dns_query(c->dest->domain, DNS_TYPE_MX, mx_resolved, c);
}

void smtpc_resolve_mx(struct smtpc_conn *c)
{
    c->state = C_RESOLVE_MX;
    /* RFC 8461 section 5: the policy first, so the MX answer can be checked against it */
    c->stsq = sts_lookup(smtpc_cfg, c->dest->domain, sts_resolved, c);
    if (!c->stsq) c->dnsq = dns_query(c->dest->domain, DNS_TYPE_MX, mx_resolved, c);
}

/* --- connecting ------------------------------------------------------------------------------- */

static const struct sockaddr_any *pick_source(struct smtpc_conn *c, int family)
{
    for (size_t i = 0; i < c->egress->n_sources; i++)
        if (c->egress->sources[i].ss.ss_family == family) return &c->egress->sources[i];
    return NULL;
}

void smtpc_conn_next_address(struct smtpc_conn *c)
{
    smtpc_conn_drop_socket(c);
    if (!c->retry_plain && c->tries >= SMTPC_MAX_ADDRESSES && c->addr_i < c->n_addrs) {
        c->addr_i = c->n_addrs;
        if (c->pinned) c->pinned_temp = 1; /* an address left untried may take it */
    }
    if (c->addr_i >= c->n_addrs) {
        smtpc_resolve_next_host(c);
        return;
    }
    if (!c->retry_plain) c->tries++;
    /* a plaintext retry keeps the reason its handshake failed; a new address starts clean */
    c->no_tls = c->retry_plain;
    c->retry_plain = 0;
    if (!c->no_tls) c->tls_failure = c->sts_failure; /* a policy that could not be fetched */
    struct sockaddr_any target = c->addrs[c->addr_i++];
    int port = c->egress->type == EGRESS_SMARTHOST ? c->egress->port : smtpc_cfg->mx_port;
    util_addr_set_port(&target, port);
    util_format_addr(&target, 1, c->addr_text, sizeof c->addr_text);
    c->state = C_CONNECTING;
    c->fd = socket(target.ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        smtpc_set_error(c, 0, "4.4.1", "socket: %s", strerror(errno));
        smtpc_conn_next_address(c);
        return;
    }
    const struct sockaddr_any *src = pick_source(c, target.ss.ss_family);
    c->source_text[0] = '\0';
    if (src) {
        util_format_addr(src, 0, c->source_text, sizeof c->source_text);
        if (bind(c->fd, (const struct sockaddr *)&src->ss, src->len) < 0) {
            smtpc_set_error(c, 0, "4.4.1", "cannot bind source address %s of egress %s: %s",
                            c->source_text, c->egress->name, strerror(errno));
            log_error("smtpc: %s", c->last_error);
            smtpc_conn_next_address(c);
            return;
        }
    }
    evutil_make_socket_nonblocking(c->fd);
    smtpc_conn_attach(c, bufferevent_socket_new(smtpc_base, c->fd, 0), smtpc_cfg->connect_timeout);
    c->tls = 0;
    smtpc_conn_forget_extensions(c);
    if (bufferevent_socket_connect(c->bev, (struct sockaddr *)&target.ss, (int)target.len) < 0) {
        smtpc_set_error(c, 0, "4.4.1", "connect to %s[%s]: %s", c->mx_name, c->addr_text,
                        strerror(errno));
        smtpc_conn_next_address(c);
    }
}
