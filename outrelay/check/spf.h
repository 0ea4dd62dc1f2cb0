/* spf.h - SPF (RFC 7208) with libspf2 for the egress we are about to use: would the receiver
 * see our source address as authorised for the envelope sender's domain (or the HELO name for
 * the null sender)? libspf2 resolves through our own DNS layer (dns_sync: the configured
 * servers), never /etc/resolv.conf. Results are cached per (address, domain) for the record's
 * TTL. spf_evaluate blocks: worker threads only. */
#ifndef OUTRELAY_SPF_H
#define OUTRELAY_SPF_H

#include <stddef.h>

#include "dns/dns.h"

enum spf_result {
    SPF_NONE,
    SPF_NEUTRAL,
    SPF_PASS,
    SPF_FAIL,
    SPF_SOFTFAIL,
    SPF_TEMPERROR,
    SPF_PERMERROR,
};

struct spf_outcome {
    enum spf_result result;
    char domain[256];      /* the domain evaluated (MAIL FROM domain or HELO) */
    char explanation[256]; /* human words: "SPF record of example.com does not authorise ..." */
    unsigned ttl;          /* how long this may be cached */
};

/* Before workers start: installs the DNS layer and routes libspf2's error/warning handlers to
 * our log (its default error handler aborts). A fatal libspf2 error during an evaluation ends
 * that evaluation with permerror (a thread-local longjmp) instead of the process. One libspf2
 * server is shared by all threads. Returns 0 / -1. */
int spf_init(char *err, size_t errlen);
void spf_shutdown(void);

/* ip: "192.0.2.1" / "2001:db8::1"; sender: envelope sender ("" = null sender, then
 * postmaster@helo is checked); helo: our EHLO name for that egress. Thread-safe. */
void spf_evaluate(const char *ip, const char *sender, const char *helo, struct spf_outcome *out);
/* Same, bypassing the cache (tests, the RFC 7208 suite). */
void spf_evaluate_uncached(const char *ip, const char *sender, const char *helo,
                           struct spf_outcome *out);
const char *spf_result_name(enum spf_result r); /* "pass", "fail", ... as in RFC 7208 */

/* Drops every cached result (configuration reload, tests). Thread-safe. */
void spf_cache_flush(void);

/* Where the DNS layer gets its answers: dns_sync_query/dns_sync_free unless replaced (unit tests
 * answer from a table, without DNS). The functions must be thread-safe; NULL restores the
 * default. Call before workers start. */
typedef int (*spf_query_fn)(const char *name, int rrtype, struct dns_answer *answer);
typedef void (*spf_free_fn)(struct dns_answer *answer);
void spf_set_resolver(spf_query_fn query, spf_free_fn free_answer);

#endif
