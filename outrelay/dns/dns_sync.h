/* dns_sync.h - blocking DNS for worker threads (libspf2's DNS layer, DMARC and DKIM key
 * lookups): one libunbound context shared by all workers (libunbound makes concurrent blocking
 * calls on one context safe and lets them share its cache). Never call from the event loop. */
#ifndef OUTRELAY_DNS_SYNC_H
#define OUTRELAY_DNS_SYNC_H

#include "dns/dns.h"

/* Same server syntax and trust anchor as dns_init(). Call once, before the workers start. */
int dns_sync_init(char *const *servers, size_t n_servers, const char *trust_anchor, char *err,
                  size_t errlen);
void dns_sync_shutdown(void);
/* Resolves name/rrtype; fills *answer (free with dns_sync_free). Returns 0, or -1 when the
 * resolver is not initialised (answer->status is DNS_TEMPFAIL then). Timeouts and SERVFAIL come
 * back as DNS_TEMPFAIL, a missing name as DNS_NXDOMAIN, an empty answer as DNS_NODATA;
 * answer->security says what DNSSEC validation found (bogus: DNS_TEMPFAIL, no records). */
int dns_sync_query(const char *name, int rrtype, struct dns_answer *answer);
void dns_sync_free(struct dns_answer *answer);
/* For one-shot commands (dns-advice), never for the relay's workers: from now on each query
 * waits at most timeout_ms, a name and type that failed is not asked again, and once a query
 * timed out before the resolver ever answered, every later query fails at once. Failures then
 * read DNS_RESOLVER_SILENT ("the resolver did not answer ..."), telling DNS trouble apart from
 * NXDOMAIN / NODATA. Call from one thread, after dns_sync_init(). */
void dns_sync_bound(int timeout_ms);
#define DNS_RESOLVER_SILENT "the resolver did not answer"

#endif
