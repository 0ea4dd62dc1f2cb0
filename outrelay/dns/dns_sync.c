/* dns_sync.c - blocking lookups for worker threads; see dns_sync.h. Owns its own libunbound
 * context (never the loop's) and, for `outrelay check`, the memory of lookups that already failed.
 * Called by check (SPF, DMARC), mail/dkim_verify.c (DKIM keys) and check/advice.c; never on the
 * event loop. */
#include "dns/dns_sync.h"

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unbound.h>

#include "common/util.h"

static struct ub_ctx *sync_ctx;

/* dns_sync_bound(): the per-query limit, what failed already, whether anything ever answered */
static int bound_ms;
static int resolver_answered, resolver_silent;
struct failed_lookup {
    char *name;
    int rrtype;
    const char *error;
};
static struct failed_lookup *failed;
static size_t n_failed;

int dns_sync_init(char *const *servers, size_t n_servers, const char *trust_anchor, char *err,
                  size_t errlen)
{
    sync_ctx = ub_ctx_create();
    if (!sync_ctx) {
        snprintf(err, errlen, "cannot create the blocking DNS resolver context");
        return -1;
    }
    if (dns_configure_context(sync_ctx, servers, n_servers, trust_anchor, err, errlen) < 0) {
        ub_ctx_delete(sync_ctx);
        sync_ctx = NULL;
        return -1;
    }
    return 0;
}

void dns_sync_shutdown(void)
{
    if (sync_ctx) ub_ctx_delete(sync_ctx);
    sync_ctx = NULL;
    for (size_t i = 0; i < n_failed; i++)
        free(failed[i].name);
    free(failed);
    failed = NULL;
    n_failed = 0;
    bound_ms = resolver_answered = resolver_silent = 0;
}

void dns_sync_bound(int timeout_ms)
{
    /* answers come back through a thread of libunbound's, not a forked process */
    if (sync_ctx && !bound_ms) ub_ctx_async(sync_ctx, 1);
    bound_ms = timeout_ms;
}

struct bound_wait {
    int done, err;
    struct ub_result *result;
};

static void bound_done(void *arg, int err, struct ub_result *result)
{
    struct bound_wait *w = arg;
    w->done = 1;
    w->err = err;
    w->result = result;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ub_resolve with a deadline: 0 with *r set (or rc from libunbound), 1 on timeout */
static int bound_resolve(const char *name, int rrtype, struct ub_result **r, int *rc)
{
    struct bound_wait w = {0};
    int id = 0;
    *rc = ub_resolve_async(sync_ctx, name, rrtype, 1, &w, bound_done, &id);
    if (*rc != 0) return 0;
    int64_t deadline = mono_ms() + bound_ms;
    while (!w.done) {
        int64_t left = deadline - mono_ms();
        if (left <= 0) {
            ub_cancel(sync_ctx, id);
            return 1;
        }
        struct pollfd p = {.fd = ub_fd(sync_ctx), .events = POLLIN};
        if (poll(&p, 1, (int)left) > 0) ub_process(sync_ctx);
    }
    *rc = w.err;
    *r = w.result;
    return 0;
}

static void remember_failure(const char *name, int rrtype, const char *error)
{
    failed = xrealloc(failed, (n_failed + 1) * sizeof *failed);
    failed[n_failed++] = (struct failed_lookup){xstrdup(name), rrtype, error};
}

static const char *known_failure(const char *name, int rrtype)
{
    if (resolver_silent) return DNS_RESOLVER_SILENT " (no answer to an earlier query either)";
    for (size_t i = 0; i < n_failed; i++)
        if (failed[i].rrtype == rrtype && !strcasecmp(failed[i].name, name)) return failed[i].error;
    return NULL;
}

int dns_sync_query(const char *name, int rrtype, struct dns_answer *answer)
{
    memset(answer, 0, sizeof *answer);
    if (!sync_ctx) {
        answer->status = DNS_TEMPFAIL;
        answer->error = "no resolver";
        return -1;
    }
    struct ub_result *r = NULL;
    int rc = 0;
    if (bound_ms) {
        const char *known = known_failure(name, rrtype);
        if (known) {
            answer->status = DNS_TEMPFAIL;
            answer->error = known;
            return 0;
        }
        if (bound_resolve(name, rrtype, &r, &rc)) {
            answer->status = DNS_TEMPFAIL;
            answer->error = DNS_RESOLVER_SILENT " (no reply in time)";
            if (!resolver_answered) resolver_silent = 1;
            remember_failure(name, rrtype, answer->error);
            return 0;
        }
    } else {
        rc = ub_resolve(sync_ctx, name, rrtype, 1, &r);
    }
    if (r && r->bogus) {
        dns_answer_bogus(answer);
    } else if (rc != 0 || !r) {
        answer->status = DNS_TEMPFAIL;
        answer->error = ub_strerror(rc);
    } else if (!r->answer_packet) {
        answer->status = DNS_TEMPFAIL;
        answer->error = "no DNS answer";
    } else {
        dns_parse_packet(rrtype, r->answer_packet, r->answer_len, answer);
        if (r->secure) answer->security = DNS_SECURE;
    }
    if (r) ub_resolve_free(r);
    if (bound_ms && answer->status == DNS_TEMPFAIL) {
        /* a SERVFAIL from a forwarding libunbound means its servers did not answer either */
        if (answer->error && !strcmp(answer->error, "SERVFAIL"))
            answer->error = DNS_RESOLVER_SILENT " (SERVFAIL)";
        remember_failure(name, rrtype, answer->error);
    } else if (bound_ms) {
        resolver_answered = 1;
    }
    return 0;
}

void dns_sync_free(struct dns_answer *answer)
{
    dns_answer_free(answer);
    memset(answer, 0, sizeof *answer);
}
