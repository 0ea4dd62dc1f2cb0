/* sts.h - MTA-STS (RFC 8461) for direct delivery: the _mta-sts TXT record, the policy fetched
 * over HTTPS (libcurl, on the worker pool), its cache (memory and STATE/mta-sts/, valid for
 * max_age) and the rules the SMTP client applies (which MX hosts a policy allows). The parsers
 * and the matcher are pure functions (any thread, fuzzed and unit-tested); sts_lookup() and
 * sts_cancel() run on the loop thread, called by smtpc/smtpc_resolve.c before the MX lookup. */
#ifndef OUTRELAY_STS_H
#define OUTRELAY_STS_H

#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>

#include "config/config.h"

#define STS_MAX_AGE_LIMIT 31557600 /* RFC 8461 section 3.2: at most a year */
#define STS_MAX_MX 32

enum sts_mode { STS_MODE_NONE, STS_MODE_TESTING, STS_MODE_ENFORCE };

/* One domain's policy (RFC 8461 section 3.2). Shared by reference: the cache holds one, each
 * connection using it another (loop thread only). */
struct mta_sts_policy {
    int refs;
    char domain[256];
    char id[33]; /* the TXT record's id it was fetched under */
    enum sts_mode mode;
    int64_t max_age;
    int64_t expires; /* unix time: fetched + max_age */
    char *mx[STS_MAX_MX];
    size_t n_mx;
    char *text; /* the policy's lines joined by "\n" (RFC 8460 policy-string) */
};

/* RFC 8461 section 3.1: the id of the one "v=STSv1" record among txt[0..n), into id (33
 * bytes). 0, or -1 when there is none, more than one, or it is malformed. */
int sts_parse_txt(char *const *txt, size_t n, char *id);
/* RFC 8461 section 3.2: the policy body (len bytes, not NUL-terminated) into a new policy with
 * refs 1 (max_age clamped to STS_MAX_AGE_LIMIT, expires left 0). NULL with err when it is not
 * a valid policy (version, mode, max_age, and mx unless mode is none). */
struct mta_sts_policy *sts_parse_policy(const char *body, size_t len, char *err, size_t errlen);
/* RFC 8461 section 4.1: whether host (an MX name, no trailing dot) matches pattern
 * ("mx.example.com" or "*.example.com", which covers exactly one more label). Case-insensitive. */
int sts_mx_matches(const char *pattern, const char *host);
/* Whether the policy lists a pattern that host matches. */
int sts_policy_allows(const struct mta_sts_policy *p, const char *host);
const char *sts_mode_name(enum sts_mode mode);

void sts_policy_ref(struct mta_sts_policy *p);
void sts_policy_release(struct mta_sts_policy *p);

/* The answer of a lookup: the policy to apply (a reference the callee releases; NULL: none),
 * and when a policy was published but could not be had, the RFC 8460 result type
 * ("sts-policy-fetch-error" or "sts-policy-invalid", static text; else NULL) with a reason. */
typedef void (*sts_cb)(void *arg, struct mta_sts_policy *policy, const char *failure,
                       const char *reason);
struct sts_lookup;
/* Looks up domain's policy under cfg's mta_sts settings (cfg->state for the disk cache): the
 * TXT record, then the cache or a fetch (RFC 8461 section 5.1: a changed id refetches; a failed
 * refetch keeps the cached policy). NULL when MTA-STS is off (cb is not called); otherwise cb
 * runs once, never before this returns, unless sts_cancel() comes first. */
struct sts_lookup *sts_lookup(const struct config *cfg, const char *domain, sts_cb cb, void *arg);
void sts_cancel(struct sts_lookup *l);
/* The loop the fetches report back to (the SMTP client's, at its start). */
void sts_start(struct event_base *base);
/* Ends every lookup (the SMTP client's connections are closed first, so no callback runs),
 * aborts running fetches, stops the fetch threads and drops the memory cache (the disk cache
 * stays). */
void sts_shutdown(void);

#endif
