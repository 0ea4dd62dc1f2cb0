/* dns.c - libunbound running on our event_base, and the context setup (servers, DNSSEC trust
 * anchor) that dns_sync.c shares; see dns.h. Answers are parsed from the wire packet (the
 * callback's rcode is unreliable for NXDOMAIN) with glibc's ns_* parser. Loop thread, except
 * the parser and setup, which dns_sync.c calls from workers. */
#include "dns/dns.h"

#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <resolv.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unbound-event.h>
#include <unbound.h>

#include "common/log.h"
#include "common/strbuf.h"

struct dns_query {
    dns_cb cb; /* NULL once cancelled */
    void *arg;
    int rrtype;
    struct dns_answer answer;
    struct event *deliver;
};

static struct ub_ctx *dns_ctx;
static struct event_base *dns_base;

int dns_init(struct event_base *base, char *const *servers, size_t n_servers,
             const char *trust_anchor, char *err, size_t errlen)
{
    dns_base = base;
    dns_ctx = ub_ctx_create_event(base);
    if (!dns_ctx) {
        snprintf(err, errlen, "cannot create the DNS resolver context");
        return -1;
    }
    if (dns_configure_context(dns_ctx, servers, n_servers, trust_anchor, err, errlen) < 0) {
        ub_ctx_delete(dns_ctx);
        dns_ctx = NULL;
        return -1;
    }
    return 0;
}

/* Points a libunbound context at our servers (or the system resolver) and gives it the trust
 * anchors; without them libunbound validates nothing and every answer is insecure. */
int dns_configure_context(struct ub_ctx *ctx, char *const *servers, size_t n_servers,
                          const char *trust_anchor, char *err, size_t errlen)
{
    struct ub_ctx *dns_ctx = ctx;
    int rc = 0;
    if (n_servers == 0) {
        rc = ub_ctx_resolvconf(dns_ctx, NULL);
    } else {
        for (size_t i = 0; i < n_servers && rc == 0; i++) {
            char fwd[300];
            snprintf(fwd, sizeof fwd, "%s", servers[i]);
            /* "addr:port" -> "addr@port" (only when there is exactly one colon: IPv4). */
            char *colon = strchr(fwd, ':');
            if (colon && !strchr(colon + 1, ':')) *colon = '@';
            if (fwd[0] == '[') { /* "[::1]:53" */
                char *close = strchr(fwd, ']');
                if (close) {
                    char tmp[300];
                    *close = '\0';
                    snprintf(tmp, sizeof tmp, "%s%s%s", fwd + 1, close[1] == ':' ? "@" : "",
                             close[1] == ':' ? close + 2 : "");
                    snprintf(fwd, sizeof fwd, "%s", tmp);
                }
            }
            rc = ub_ctx_set_fwd(dns_ctx, fwd);
        }
        /* Test and lab setups point us at servers on loopback, serving names under .test,
         * which libunbound would otherwise answer itself with NXDOMAIN (RFC 6761 default). */
        if (rc == 0) rc = ub_ctx_set_option(dns_ctx, "do-not-query-localhost:", "no");
        if (rc == 0) rc = ub_ctx_set_option(dns_ctx, "local-zone:", "test. transparent");
        /* reverse zones of private and documentation ranges are the configured servers' to
         * answer (SPF ptr and %{p}), not libunbound's built-in NXDOMAIN */
        if (rc == 0) rc = ub_ctx_set_option(dns_ctx, "unblock-lan-zones:", "yes");
    }
    if (rc == 0) rc = ub_ctx_set_option(dns_ctx, "outgoing-range:", "256");
    if (rc != 0) {
        snprintf(err, errlen, "DNS resolver setup: %s", ub_strerror(rc));
        return -1;
    }
    if (trust_anchor) {
        rc = ub_ctx_add_ta_file(dns_ctx, trust_anchor);
        if (rc != 0) {
            snprintf(err, errlen, "DNS trust anchor %s: %s", trust_anchor, ub_strerror(rc));
            return -1;
        }
    }
    return 0;
}

void dns_shutdown(void)
{
    if (dns_ctx) ub_ctx_delete(dns_ctx);
    dns_ctx = NULL;
}

const char *dns_status_text(enum dns_status s)
{
    switch (s) {
    case DNS_OK:
        return "ok";
    case DNS_NODATA:
        return "no data";
    case DNS_NXDOMAIN:
        return "NXDOMAIN";
    default:
        return "temporary failure";
    }
}

const char *dns_security_text(enum dns_security s)
{
    switch (s) {
    case DNS_SECURE:
        return "secure";
    case DNS_BOGUS:
        return "bogus";
    default:
        return "insecure";
    }
}

void dns_answer_bogus(struct dns_answer *a)
{
    dns_answer_free(a);
    memset(a, 0, sizeof *a);
    a->status = DNS_TEMPFAIL;
    a->security = DNS_BOGUS;
    a->error = "DNSSEC validation failed (bogus)";
}

void dns_answer_free(struct dns_answer *a)
{
    free(a->mx);
    free(a->addrs);
    for (size_t i = 0; i < a->n && a->txt; i++)
        free(a->txt[i]);
    free(a->txt);
    for (size_t i = 0; i < a->n && a->ptr; i++)
        free(a->ptr[i]);
    free(a->ptr);
    for (size_t i = 0; i < a->n && a->tlsa; i++)
        free(a->tlsa[i].data);
    free(a->tlsa);
}

void dns_parse_packet(int rrtype, const unsigned char *packet, int len, struct dns_answer *a)
{
    ns_msg msg;
    if (ns_initparse(packet, len, &msg) < 0) {
        a->status = DNS_TEMPFAIL;
        a->error = "unparseable DNS answer";
        return;
    }
    int rcode = ns_msg_getflag(msg, ns_f_rcode);
    if (rcode == ns_r_nxdomain) {
        a->status = DNS_NXDOMAIN;
        return;
    }
    if (rcode != ns_r_noerror) {
        a->status = DNS_TEMPFAIL;
        a->error = rcode == ns_r_servfail ? "SERVFAIL" : "DNS error";
        return;
    }
    int count = ns_msg_count(msg, ns_s_an);
    a->ttl = 86400;
    for (int i = 0; i < count; i++) {
        ns_rr rr;
        if (ns_parserr(&msg, ns_s_an, i, &rr) < 0) continue;
        if ((int)ns_rr_type(rr) != rrtype) continue; /* CNAME chain members */
        const unsigned char *rd = ns_rr_rdata(rr);
        int rdlen = ns_rr_rdlen(rr);
        if (ns_rr_ttl(rr) < a->ttl) a->ttl = ns_rr_ttl(rr);
        if (rrtype == DNS_TYPE_MX && rdlen >= 3) {
            struct dns_mx mx;
            mx.preference = ns_get16(rd);
            if (ns_name_uncompress(ns_msg_base(msg), ns_msg_end(msg), rd + 2, mx.host,
                                   sizeof mx.host) < 0)
                continue;
            size_t hl = strlen(mx.host);
            if (hl && mx.host[hl - 1] == '.') mx.host[hl - 1] = '\0';
            if (strcmp(mx.host, ".") == 0) mx.host[0] = '\0';
            a->mx = xrealloc(a->mx, (a->n + 1) * sizeof *a->mx);
            a->mx[a->n++] = mx;
        } else if (rrtype == DNS_TYPE_A && rdlen == 4) {
            struct sockaddr_any sa;
            memset(&sa, 0, sizeof sa);
            struct sockaddr_in *s4 = (struct sockaddr_in *)&sa.ss;
            s4->sin_family = AF_INET;
            memcpy(&s4->sin_addr, rd, 4);
            sa.len = sizeof *s4;
            a->addrs = xrealloc(a->addrs, (a->n + 1) * sizeof *a->addrs);
            a->addrs[a->n++] = sa;
        } else if (rrtype == DNS_TYPE_AAAA && rdlen == 16) {
            struct sockaddr_any sa;
            memset(&sa, 0, sizeof sa);
            struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&sa.ss;
            s6->sin6_family = AF_INET6;
            memcpy(&s6->sin6_addr, rd, 16);
            sa.len = sizeof *s6;
            a->addrs = xrealloc(a->addrs, (a->n + 1) * sizeof *a->addrs);
            a->addrs[a->n++] = sa;
        } else if (rrtype == DNS_TYPE_PTR) {
            char host[NS_MAXDNAME];
            if (ns_name_uncompress(ns_msg_base(msg), ns_msg_end(msg), rd, host, sizeof host) < 0)
                continue;
            size_t hl = strlen(host);
            if (hl > 1 && host[hl - 1] == '.') host[hl - 1] = '\0';
            a->ptr = xrealloc(a->ptr, (a->n + 1) * sizeof *a->ptr);
            a->ptr[a->n++] = xstrdup(host);
        } else if (rrtype == DNS_TYPE_TXT) {
            struct strbuf sb = STRBUF_INIT;
            for (int p = 0; p < rdlen;) {
                int l = rd[p];
                if (p + 1 + l > rdlen) break;
                strbuf_append(&sb, rd + p + 1, (size_t)l);
                p += 1 + l;
            }
            a->txt = xrealloc(a->txt, (a->n + 1) * sizeof *a->txt);
            a->txt[a->n++] = strbuf_detach(&sb, NULL);
        } else if (rrtype == DNS_TYPE_TLSA && rdlen > 3) {
            /* usage, selector, matching type, then the association data to the RDATA's end
             * (ns_parserr checked that rdlen lies within the packet); empty data is malformed */
            struct dns_tlsa t = {.usage = rd[0], .selector = rd[1], .mtype = rd[2]};
            t.len = (size_t)rdlen - 3;
            t.data = xmalloc(t.len);
            memcpy(t.data, rd + 3, t.len);
            a->tlsa = xrealloc(a->tlsa, (a->n + 1) * sizeof *a->tlsa);
            a->tlsa[a->n++] = t;
        }
    }
    a->status = a->n ? DNS_OK : DNS_NODATA;
}

static void deliver_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct dns_query *q = arg;
    if (q->cb) q->cb(q->arg, &q->answer);
    dns_answer_free(&q->answer);
    event_free(q->deliver);
    free(q);
}

static void ub_done(void *arg, int rcode, void *packet, int len, int sec, char *why_bogus,
                    int ratelimited)
{
    (void)why_bogus;
    (void)ratelimited;
    struct dns_query *q = arg;
    /* sec: 0 insecure, 1 bogus (whatever the rcode), 2 secure */
    if (sec == 1) {
        dns_answer_bogus(&q->answer);
    } else if (rcode != 0 && rcode != ns_r_nxdomain) {
        q->answer.status = DNS_TEMPFAIL;
        q->answer.error = rcode == ns_r_servfail ? "SERVFAIL" : "DNS error";
    } else if (!packet) {
        q->answer.status = DNS_TEMPFAIL;
        q->answer.error = "no DNS answer";
    } else {
        dns_parse_packet(q->rrtype, packet, len, &q->answer);
        if (sec == 2) q->answer.security = DNS_SECURE;
    }
    event_active(q->deliver, EV_TIMEOUT, 0);
}

struct dns_query *dns_query(const char *name, int rrtype, dns_cb cb, void *arg)
{
    struct dns_query *q = xcalloc(1, sizeof *q);
    q->cb = cb;
    q->arg = arg;
    q->rrtype = rrtype;
    q->deliver = event_new(dns_base, -1, 0, deliver_cb, q);
    int id;
    int rc = dns_ctx ? ub_resolve_event(dns_ctx, name, rrtype, 1, q, ub_done, &id) : -1;
    if (rc != 0) {
        q->answer.status = DNS_TEMPFAIL;
        q->answer.error = dns_ctx ? ub_strerror(rc) : "no resolver";
        event_active(q->deliver, EV_TIMEOUT, 0);
    }
    return q;
}

void dns_cancel(struct dns_query *q)
{
    if (q) q->cb = NULL;
}
