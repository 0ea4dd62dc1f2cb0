/* spf.c - owns outrelay's use of libspf2: one shared SPF_server_t whose only DNS layer is ours
 * (dns_sync: the configured servers, never /etc/resolv.conf), the routing of libspf2's log
 * handlers to log_msg, the (address, domain) result cache and the operator-readable wording of
 * each result. Blocks on DNS: worker threads only, never the event loop. Called by the check
 * stage (and by tests/tools/spf_eval.c). */
#include "check/spf.h"

/* libspf2's public headers (spf2/spf.h, 1.2.10) use size_t and struct in_addr/in6_addr without
 * including <sys/types.h> or <netinet/in.h>, so those come first; spf2/spf_dns.h pulls in
 * <arpa/nameser.h> (ns_type) and <netdb.h> (the h_errno codes), named here as we use both. */
#include <sys/types.h>
#include <netinet/in.h>
#include <arpa/nameser.h>
#include <netdb.h>
#include <spf2/spf.h>
#include <spf2/spf_dns.h>

#include <arpa/inet.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/ttl_cache.h"
#include "common/log.h"
#include "common/util.h"
#include "dns/dns_sync.h"

/* Cache lifetimes: the smallest TTL among the DNS answers an evaluation used, kept within
 * these bounds (libspf2 does not report TTLs; our DNS layer records them as it answers). */
#define SPF_TTL_MIN 60
#define SPF_TTL_MAX 3600
#define SPF_TTL_NEGATIVE 300 /* no positive answer seen (none, NXDOMAIN): SOA not visible */
#define SPF_CACHE_MAX 4096   /* entries; when full, expired ones go, then everything */

/* State of one evaluation on one thread, reached from the DNS layer and the error handler
 * (libspf2 gives neither a per-request pointer). Lives on spf_evaluate_uncached's stack. */
struct spf_eval_state {
    jmp_buf fatal; /* where SPF_error_handler jumps: libspf2 aborts if it returns */
    char fatal_msg[128];
    unsigned min_ttl; /* smallest positive-answer TTL */
    int have_ttl;
    int dns_failed; /* a lookup came back temporarily failed */
    char failed_name[128];
    const char *failed_error;
    SPF_request_t *request; /* owned by spf_run */
    SPF_response_t *response;
};

static _Thread_local struct spf_eval_state *spf_current;

static SPF_server_t *spf_server;
static SPF_dns_server_t *spf_dns_layer;
/* The layer's configuration (its hook): where answers come from. The servers themselves are
 * dns_sync's business. */
struct spf_dns_config {
    spf_query_fn query;
    spf_free_fn free_answer;
};
static struct spf_dns_config spf_dns_config = {dns_sync_query, dns_sync_free};

/* (address|domain) -> struct spf_outcome, for the TTL spf_outcome_ttl gives. Made by spf_init
 * and freed by spf_shutdown, both before and after the workers run. */
static struct ttl_cache *spf_cache;

/* ------------------------------------------------------------------------------------------ */
/* libspf2 log handlers */

/* libspf2 declares its error handler noreturn and abort()s if it returns. During an evaluation
 * we longjmp back to spf_run (which reports permerror and frees the request and response; any
 * other allocation libspf2 had in flight for that query is lost). Outside one we can only log and
 * abort, as libspf2 would: those errors are setup failures (out of memory at spf_init). */
__attribute__((noreturn)) static void spf_on_error(const char *file, int line, const char *msg)
{
    log_error("spf: libspf2 error at %s:%d: %s", file ? file : "?", line, msg ? msg : "");
    struct spf_eval_state *st = spf_current;
    if (st) {
        snprintf(st->fatal_msg, sizeof st->fatal_msg, "%s", msg ? msg : "internal error");
        longjmp(st->fatal, 1);
    }
    abort();
}

static void spf_on_warning(const char *file, int line, const char *msg)
{
    (void)file;
    (void)line;
    log_warn("spf: libspf2: %s", msg ? msg : "");
}

static void spf_on_info(const char *file, int line, const char *msg)
{
    (void)file;
    (void)line;
    log_debug("spf: libspf2: %s", msg ? msg : "");
}

static void spf_on_debug(const char *file, int line, const char *msg)
{
    log_debug("spf: libspf2 %s:%d: %s", file ? file : "?", line, msg ? msg : "");
}

/* ------------------------------------------------------------------------------------------ */
/* The DNS layer: libspf2 asks, dns_sync (or a test's resolver) answers */

/* RFC 7208 §4.3/§5: a name with an empty or over-long label, or over 253 octets, cannot exist;
 * answering "no such host" here keeps it away from the resolver (which would call it a syntax
 * error, i.e. a temporary failure). */
static int spf_name_is_valid(const char *name)
{
    size_t len = strlen(name);
    if (len > 0 && name[len - 1] == '.') len--;
    if (len == 0 || len > 253) return 0;
    size_t label = 0;
    for (size_t i = 0; i < len; i++) {
        if (name[i] == '.') {
            if (label == 0) return 0;
            label = 0;
        } else if (++label > 63) {
            return 0;
        }
    }
    return label > 0;
}

static void spf_note_ttl(unsigned ttl)
{
    struct spf_eval_state *st = spf_current;
    if (st && (!st->have_ttl || ttl < st->min_ttl)) {
        st->min_ttl = ttl;
        st->have_ttl = 1;
    }
}

static void spf_note_failure(const char *name, const char *error)
{
    struct spf_eval_state *st = spf_current;
    if (st && !st->dns_failed) {
        st->dns_failed = 1;
        snprintf(st->failed_name, sizeof st->failed_name, "%s", name);
        st->failed_error = error ? error : "temporary failure";
    }
}

/* Copies one answer's records into rr; returns 0 / -1 (out of memory). */
static int spf_fill_rr(SPF_dns_rr_t *rr, int rrtype, const struct dns_answer *a)
{
    int n = 0;
    for (size_t i = 0; i < a->n; i++) {
        const char *text = NULL;
        if (rrtype == DNS_TYPE_A || rrtype == DNS_TYPE_AAAA) {
            const struct sockaddr_storage *ss = &a->addrs[i].ss;
            int v4 = ss->ss_family == AF_INET;
            if (v4 != (rrtype == DNS_TYPE_A)) continue;
            size_t size = v4 ? sizeof(struct in_addr) : sizeof(struct in6_addr);
            if (SPF_dns_rr_buf_realloc(rr, n, size) != SPF_E_SUCCESS) return -1;
            if (v4)
                rr->rr[n]->a = ((const struct sockaddr_in *)ss)->sin_addr;
            else
                rr->rr[n]->aaaa = ((const struct sockaddr_in6 *)ss)->sin6_addr;
            n++;
            continue;
        }
        if (rrtype == DNS_TYPE_MX)
            text = a->mx[i].host;
        else if (rrtype == DNS_TYPE_PTR)
            text = a->ptr[i];
        else
            text = a->txt[i];
        size_t len = strlen(text) + 1;
        if (SPF_dns_rr_buf_realloc(rr, n, len) != SPF_E_SUCCESS) return -1;
        /* mx, ptr and txt are the same char array in libspf2's union */
        memcpy(rr->rr[n]->txt, text, len);
        n++;
    }
    rr->num_rr = n;
    if (n == 0) rr->herrno = NO_DATA;
    return 0;
}

static SPF_dns_rr_t *spf_dns_lookup(SPF_dns_server_t *layer, const char *domain, ns_type type,
                                    int should_cache)
{
    (void)should_cache;
    int rrtype = (int)type;
    /* RFC 7208 dropped the SPF RR type (99); only TXT is consulted. libspf2 asks for type 99
     * first and falls back to TXT on "no data". */
    int supported = rrtype == DNS_TYPE_A || rrtype == DNS_TYPE_AAAA || rrtype == DNS_TYPE_MX ||
                    rrtype == DNS_TYPE_TXT || rrtype == DNS_TYPE_PTR;
    if (!supported) return SPF_dns_rr_new_init(layer, domain, type, 0, NO_DATA);
    if (!domain || !spf_name_is_valid(domain))
        return SPF_dns_rr_new_init(layer, domain ? domain : "", type, 0, HOST_NOT_FOUND);

    struct dns_answer a;
    const struct spf_dns_config *cfg = layer->hook;
    cfg->query(domain, rrtype, &a);
    SPF_dns_rr_t *rr = NULL;
    switch (a.status) {
    case DNS_OK:
        rr = SPF_dns_rr_new_init(layer, domain, type, (int)a.ttl, NETDB_SUCCESS);
        spf_note_ttl(a.ttl);
        if (rr && spf_fill_rr(rr, rrtype, &a) < 0) {
            SPF_dns_rr_free(rr);
            rr = NULL;
        }
        break;
    case DNS_NODATA:
        rr = SPF_dns_rr_new_init(layer, domain, type, 0, NO_DATA);
        break;
    case DNS_NXDOMAIN:
        rr = SPF_dns_rr_new_init(layer, domain, type, 0, HOST_NOT_FOUND);
        break;
    default:
        spf_note_failure(domain, a.error);
        rr = SPF_dns_rr_new_init(layer, domain, type, 0, TRY_AGAIN);
        break;
    }
    log_debug("spf: DNS %s type %d: %s, %zu record(s)", domain, rrtype, dns_status_text(a.status),
              a.n);
    cfg->free_answer(&a);
    if (!rr) /* libspf2 treats a NULL answer as fatal: that reaches spf_on_error */
        log_error("spf: out of memory answering %s", domain);
    return rr;
}

static void spf_dns_destroy(SPF_dns_server_t *layer)
{
    free(layer);
}

/* ------------------------------------------------------------------------------------------ */
/* Setup */

int spf_init(char *err, size_t errlen)
{
    if (spf_server) return 0;
    SPF_error_handler = spf_on_error;
    SPF_warning_handler = spf_on_warning;
    SPF_info_handler = spf_on_info;
    SPF_debug_handler = spf_on_debug;

    spf_dns_layer = calloc(1, sizeof *spf_dns_layer);
    if (!spf_dns_layer) {
        snprintf(err, errlen, "SPF: out of memory");
        return -1;
    }
    spf_dns_layer->lookup = spf_dns_lookup;
    spf_dns_layer->destroy = spf_dns_destroy;
    spf_dns_layer->name = "outrelay";
    spf_dns_layer->hook = &spf_dns_config;

    /* Shared by all threads: libspf2 never writes to the server while evaluating (requests and
     * responses are per call), and our layer keeps per-query state on the caller's stack. */
    spf_server = SPF_server_new_dns(spf_dns_layer, 0);
    if (!spf_server) {
        free(spf_dns_layer);
        spf_dns_layer = NULL;
        snprintf(err, errlen, "SPF: cannot create the libspf2 server");
        return -1;
    }
    if (!spf_cache) spf_cache = ttl_cache_new(SPF_CACHE_MAX, free, NULL);
    return 0;
}

void spf_shutdown(void)
{
    if (spf_server) SPF_server_free(spf_server); /* the server does not own our layer */
    spf_server = NULL;
    if (spf_dns_layer) SPF_dns_free(spf_dns_layer);
    spf_dns_layer = NULL;
    ttl_cache_free(spf_cache);
    spf_cache = NULL;
}

void spf_set_resolver(spf_query_fn query, spf_free_fn free_answer)
{
    spf_dns_config.query = query ? query : dns_sync_query;
    spf_dns_config.free_answer = free_answer ? free_answer : dns_sync_free;
}

const char *spf_result_name(enum spf_result r)
{
    switch (r) {
    case SPF_NONE:
        return "none";
    case SPF_NEUTRAL:
        return "neutral";
    case SPF_PASS:
        return "pass";
    case SPF_FAIL:
        return "fail";
    case SPF_SOFTFAIL:
        return "softfail";
    case SPF_TEMPERROR:
        return "temperror";
    case SPF_PERMERROR:
        return "permerror";
    }
    return "unknown";
}

/* ------------------------------------------------------------------------------------------ */
/* Evaluation */

/* The domain RFC 7208 §4.3 checks: the sender's domain, or the HELO name for the null sender
 * (and for a sender without a domain part, as libspf2 does). */
static void spf_pick_domain(const char *sender, const char *helo, char *out, size_t size)
{
    const char *at = sender ? strrchr(sender, '@') : NULL;
    if (at && at[1])
        snprintf(out, size, "%s", at + 1);
    else if (sender && *sender && !at)
        snprintf(out, size, "%s", sender);
    else
        snprintf(out, size, "%s", helo ? helo : "");
}

/* The first error libspf2 attached to the response (warnings only when there is no error),
 * for permerror explanations. */
static const char *spf_first_message(SPF_response_t *resp)
{
    int n = resp ? SPF_response_messages(resp) : 0;
    const char *warning = NULL;
    for (int i = 0; i < n; i++) {
        SPF_error_t *e = SPF_response_message(resp, i);
        const char *text = e ? SPF_error_message(e) : NULL;
        if (!text || !*text) continue;
        if (SPF_error_errorp(e)) return text;
        if (!warning) warning = text;
    }
    return warning;
}

/* libspf2 leaves the result at SPF_RESULT_INVALID when it stops early: a record that does not
 * compile (RFC 7208 §4.6: permerror) or a DNS failure it does not classify (temperror). */
static enum spf_result spf_map_invalid(SPF_response_t *resp)
{
    int n = SPF_response_messages(resp);
    int errors = 0;
    for (int i = 0; i < n; i++) {
        SPF_error_t *e = SPF_response_message(resp, i);
        if (!e || !SPF_error_errorp(e)) continue;
        if (SPF_error_code(e) == SPF_E_DNS_ERROR) return SPF_TEMPERROR;
        errors++;
    }
    return errors ? SPF_PERMERROR : SPF_TEMPERROR;
}

/* Sets out->explanation; an over-long text (255-octet domain names) is cut in the middle so
 * that the result in parentheses at its end survives. */
__attribute__((format(printf, 2, 3))) static void spf_say(struct spf_outcome *out, const char *fmt,
                                                          ...)
{
    char text[1024];
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    size_t room = sizeof out->explanation - 1;
    if (len < 0) len = 0;
    if ((size_t)len > sizeof text - 1) len = (int)(sizeof text - 1);
    if ((size_t)len <= room) {
        memcpy(out->explanation, text, (size_t)len + 1);
        return;
    }
    const char *result = strrchr(text, '(');
    size_t tail = result ? strlen(result) : 0;
    if (tail > room / 2) tail = 0;
    size_t head = room - tail - 4;
    memcpy(out->explanation, text, head);
    memcpy(out->explanation + head, "... ", 4);
    memcpy(out->explanation + head + 4, result ? result : "", tail);
    out->explanation[head + 4 + tail] = '\0';
}

/* SPF_request_query_mailfrom without its "localhost always passes" shortcut: outrelay asks
 * about its own egress addresses, and in test worlds those are 127.0.0.x with real SPF records
 * to evaluate. The same three steps the library takes after that shortcut (installed API). */
static void spf_query_mailfrom(SPF_server_t *server, SPF_request_t *req, SPF_response_t **respp)
{
    SPF_record_t *record = NULL;
    *respp = SPF_response_new(req);
    if (!*respp) return;
    req->cur_dom = req->use_helo ? req->helo_dom : req->env_from_dp;
    SPF_errcode_t err = SPF_server_get_record(server, req, *respp, &record);
    if (err != SPF_E_SUCCESS) {
        if (record) SPF_record_free(record);
        SPF_i_done(*respp, (*respp)->result, (*respp)->reason, (*respp)->err);
        return;
    }
    (*respp)->spf_record_exp = record;
    SPF_record_interpret(record, req, *respp, 0);
    SPF_record_free(record);
}

static void spf_explain(struct spf_outcome *out, const char *ip, SPF_response_t *resp,
                        const struct spf_eval_state *st)
{
    const char *d = out->domain;
    const char *why = NULL;
    switch (out->result) {
    case SPF_PASS:
        if (resp && SPF_response_reason(resp) == SPF_REASON_LOCALHOST)
            spf_say(out, "%s is a loopback address, which libspf2 always passes (pass)", ip);
        else
            spf_say(out, "SPF record of %s authorises %s (pass)", d, ip);
        break;
    case SPF_FAIL:
        spf_say(out, "SPF record of %s does not authorise %s (fail)", d, ip);
        break;
    case SPF_SOFTFAIL:
        spf_say(out, "SPF record of %s says %s is probably not authorised (softfail)", d, ip);
        break;
    case SPF_NEUTRAL:
        spf_say(out, "SPF record of %s makes no statement about %s (neutral)", d, ip);
        break;
    case SPF_NONE:
        if (!*d)
            spf_say(out, "no sender domain and no HELO name to check (none)");
        else
            spf_say(out, "%s publishes no SPF record (none)", d);
        break;
    case SPF_TEMPERROR:
        if (st && st->dns_failed)
            spf_say(out, "DNS error while evaluating SPF of %s: %s for %s (temperror)", d,
                    st->failed_error, st->failed_name);
        else
            spf_say(out, "DNS error while evaluating SPF of %s (temperror)", d);
        break;
    case SPF_PERMERROR:
        why = st && st->fatal_msg[0] ? st->fatal_msg : spf_first_message(resp);
        spf_say(out, "SPF record of %s cannot be evaluated: %s (permerror)", d,
                why ? why : "invalid record");
        break;
    }
}

static enum spf_result spf_map_result(SPF_response_t *resp)
{
    switch (SPF_response_result(resp)) {
    case SPF_RESULT_NEUTRAL:
        return SPF_NEUTRAL;
    case SPF_RESULT_PASS:
        return SPF_PASS;
    case SPF_RESULT_FAIL:
        return SPF_FAIL;
    case SPF_RESULT_SOFTFAIL:
        return SPF_SOFTFAIL;
    case SPF_RESULT_NONE:
        return SPF_NONE;
    case SPF_RESULT_PERMERROR:
        return SPF_PERMERROR;
    case SPF_RESULT_INVALID:
        return spf_map_invalid(resp);
    default:
        return SPF_TEMPERROR;
    }
}

static unsigned spf_outcome_ttl(enum spf_result r, const struct spf_eval_state *st)
{
    if (r == SPF_TEMPERROR) return SPF_TTL_MIN;
    unsigned ttl = st->have_ttl ? st->min_ttl : SPF_TTL_NEGATIVE;
    if (ttl < SPF_TTL_MIN) ttl = SPF_TTL_MIN;
    if (ttl > SPF_TTL_MAX) ttl = SPF_TTL_MAX;
    return ttl;
}

/* Runs one libspf2 query. Separate from the jump target's frame bookkeeping: everything that
 * must survive a longjmp is volatile or lives in *st. */
static void spf_run(const char *ip, const char *sender, const char *helo, struct spf_outcome *out,
                    struct spf_eval_state *st)
{
    if (setjmp(st->fatal) != 0) {
        /* libspf2 hit a fatal error (see spf_on_error); its request state may be half-built,
         * so only what we own is released. */
        out->result = SPF_PERMERROR;
        goto done;
    }
    /* The request and response live in *st, not in locals: after a longjmp only memory is
     * reliable, and libspf2 stores the response through our pointer before evaluating. */
    SPF_request_t *req = st->request = SPF_request_new(spf_server);
    if (!req) {
        out->result = SPF_TEMPERROR;
        snprintf(st->fatal_msg, sizeof st->fatal_msg, "out of memory");
        goto done;
    }
    struct sockaddr_any addr;
    int bad_ip = util_parse_ip(ip, &addr) < 0;
    if (!bad_ip && addr.ss.ss_family == AF_INET) {
        bad_ip =
            SPF_request_set_ipv4(req, ((struct sockaddr_in *)&addr.ss)->sin_addr) != SPF_E_SUCCESS;
    } else if (!bad_ip) {
        /* RFC 7208 §5: an IPv4-mapped IPv6 client is an IPv4 client. libspf2 does not do
         * this itself (SPF_request_set_ipv6 keeps AF_INET6). */
        const struct in6_addr *a6 = &((struct sockaddr_in6 *)&addr.ss)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(a6)) {
            struct in_addr a4;
            memcpy(&a4, &a6->s6_addr[12], 4);
            bad_ip = SPF_request_set_ipv4(req, a4) != SPF_E_SUCCESS;
        } else {
            bad_ip = SPF_request_set_ipv6(req, *a6) != SPF_E_SUCCESS;
        }
    }
    if (bad_ip) {
        out->result = SPF_PERMERROR;
        snprintf(st->fatal_msg, sizeof st->fatal_msg, "'%s' is not an IP address", ip);
        goto done;
    }
    /* HELO first: libspf2 builds postmaster@helo from it when the sender is empty. A sender
     * whose domain part is empty ("user@") counts as the null sender, as in spf_pick_domain. */
    if (helo && *helo) SPF_request_set_helo_dom(req, helo);
    const char *at = sender ? strrchr(sender, '@') : NULL;
    SPF_request_set_env_from(req, !sender || (at && !at[1]) ? "" : sender);

    spf_query_mailfrom(spf_server, req, &st->response);
    SPF_response_t *resp = st->response;
    out->result = resp ? spf_map_result(resp) : SPF_TEMPERROR;
    if (resp) {
        log_debug("spf: %s for %s: libspf2 says %s (%s)", ip, out->domain,
                  SPF_strresult(SPF_response_result(resp)),
                  SPF_strreason(SPF_response_reason(resp)));
        for (int i = 0; i < SPF_response_messages(resp); i++) {
            SPF_error_t *e = SPF_response_message(resp, i);
            log_debug("spf: libspf2 %s %d: %s", SPF_error_errorp(e) ? "error" : "warning",
                      (int)SPF_error_code(e), SPF_error_message(e));
        }
    }
done:
    spf_explain(out, ip, st->response, st);
    if (st->response) SPF_response_free(st->response);
    if (st->request) SPF_request_free(st->request);
    st->response = NULL;
    st->request = NULL;
}

void spf_evaluate_uncached(const char *ip, const char *sender, const char *helo,
                           struct spf_outcome *out)
{
    memset(out, 0, sizeof *out);
    spf_pick_domain(sender, helo, out->domain, sizeof out->domain);
    if (!spf_server) {
        out->result = SPF_TEMPERROR;
        out->ttl = SPF_TTL_MIN;
        spf_say(out, "SPF of %s not evaluated: spf_init was not called (temperror)", out->domain);
        return;
    }
    if (!out->domain[0]) {
        out->result = SPF_NONE;
        out->ttl = SPF_TTL_NEGATIVE;
        spf_explain(out, ip, NULL, NULL);
        return;
    }
    struct spf_eval_state st;
    memset(&st, 0, sizeof st);
    spf_current = &st;
    spf_run(ip, sender, helo, out, &st);
    spf_current = NULL;
    out->ttl = spf_outcome_ttl(out->result, &st);
}

static void spf_copy_outcome(const void *value, void *out)
{
    *(struct spf_outcome *)out = *(const struct spf_outcome *)value;
}

void spf_evaluate(const char *ip, const char *sender, const char *helo, struct spf_outcome *out)
{
    char domain[256];
    spf_pick_domain(sender, helo, domain, sizeof domain);
    char key[320];
    snprintf(key, sizeof key, "%s|%s", ip, domain);
    for (char *p = key; *p; p++) /* domains compare case-insensitively */
        if (*p >= 'A' && *p <= 'Z') *p = (char)(*p - 'A' + 'a');

    int64_t left = spf_cache ? ttl_cache_get(spf_cache, key, spf_copy_outcome, out) : 0;
    if (left > 0) {
        out->ttl = (unsigned)left;
        return;
    }

    /* Evaluated outside the lock: DNS may take seconds. Two threads may race on one key; the
     * later answer simply replaces the earlier. */
    spf_evaluate_uncached(ip, sender, helo, out);

    if (spf_cache) {
        struct spf_outcome *copy = xmalloc(sizeof *copy);
        *copy = *out;
        ttl_cache_put(spf_cache, key, copy, out->ttl);
    }
}

void spf_cache_flush(void)
{
    if (spf_cache) ttl_cache_clear(spf_cache);
}
