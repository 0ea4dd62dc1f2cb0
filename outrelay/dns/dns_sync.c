/* dns_sync.c - blocking lookups for worker threads; see dns_sync.h. */
#include "dns/dns_sync.h"

#include <stdio.h>
#include <string.h>
#include <unbound.h>

int dns_configure_context(struct ub_ctx *ctx, char *const *servers, size_t n_servers, char *err,
                          size_t errlen);

static struct ub_ctx *sync_ctx;

int dns_sync_init(char *const *servers, size_t n_servers, char *err, size_t errlen)
{
    sync_ctx = ub_ctx_create();
    if (!sync_ctx) {
        snprintf(err, errlen, "cannot create the blocking DNS resolver context");
        return -1;
    }
    if (dns_configure_context(sync_ctx, servers, n_servers, err, errlen) < 0) {
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
    int rc = ub_resolve(sync_ctx, name, rrtype, 1, &r);
    if (rc != 0 || !r) {
        answer->status = DNS_TEMPFAIL;
        answer->error = ub_strerror(rc);
    } else if (!r->answer_packet) {
        answer->status = DNS_TEMPFAIL;
        answer->error = "no DNS answer";
    } else {
        dns_parse_packet(rrtype, r->answer_packet, r->answer_len, answer);
        answer->secure = r->secure;
        if (r->bogus) {
            answer->status = DNS_TEMPFAIL;
            answer->error = "DNSSEC validation failed (bogus)";
        }
    }
    if (r) ub_resolve_free(r);
    return 0;
}

void dns_sync_free(struct dns_answer *answer)
{
    dns_answer_free(answer);
    memset(answer, 0, sizeof *answer);
}
