/* route.h - the route stage: which egress a recipient's mail leaves through, and whether it
 * may leave now. Three things decide it, in this order:
 *   1. the ramp of the recipient's route group: the default group is a sticky percentage split
 *      between ramp.from and ramp.to; a group of ramp.groups spreads keys over any number of
 *      egresses by weighted rendezvous hashing (schedule + the operator's overrides, which
 *      persist in <state>/route.db);
 *   2. pins: an origin, a recipient domain or a provider fixed to one egress;
 *   3. caps and shaping per egress x provider: message counts per minute/hour/day (persisted),
 *      and suspensions/throttles triggered by receivers' replies (rules in policies/shaping.yaml,
 *      persisted). A capped or suspended choice spills to the other egress (in a group: along
 *      its spill order) when one is allowed, else the mail waits in the queue.
 * Providers group destinations by MX host suffix (policies/providers.yaml).
 * Loop thread only (route.db is written synchronously; writes are rare, counters are flushed
 * every few seconds and at shutdown). */
#ifndef OUTRELAY_ROUTE_H
#define OUTRELAY_ROUTE_H

#include <stddef.h>
#include <stdint.h>

#include "common/strbuf.h"
#include "config/config.h"
#include "mail/envelope.h"

/* Loads persisted overrides, counters and suspensions. Returns 0 / -1 with err. */
int route_init(const struct config *cfg, const char *state_dir, char *err, size_t errlen);
/* SIGHUP: routes with cfg from now on; counters, suspensions and the ramp override carry over by
 * name through route.db. cfg and the config before must stay alive (queued recipients and
 * destinations hold egress pointers into both). Returns 0 / -1 with err (route.db not read
 * back; cfg is in force anyway). */
int route_reload(const struct config *cfg, char *err, size_t errlen);
/* Flushes counters; closes route.db. */
void route_shutdown(void);
/* Writes the counts to route.db now. route_count() does it by itself when 5 s have passed
 * since the last flush; a timer may call this so quiet periods are flushed too. */
void route_flush(void);

/* The provider of a destination from its MX host names (e.g. "microsoft-consumer",
 * "google"); "other" when no provider matches. The returned string lives as long as the config. */
const char *route_provider(const char *const *mx_hosts, size_t n_hosts);

/* The ramp's effective cloud share in percent at `now` (schedule, interpolation, overrides). */
double route_share(int64_t now);

/* A key's bucket in [0, 10000): the same on every instance and every run. */
uint32_t route_bucket(const char *key);

/* The decision for one recipient. */
struct route_decision {
    const struct egress_conf *egress;  /* NULL: nothing may send now; wait until `retry_at` */
    const struct egress_conf *planned; /* what the ramp (and pins) chose */
    const char *group;                 /* the route group ("default": ramp.from/to) */
    double share; /* ramp share used; in a route group the planned egress's share of the weight */
    int spilled;  /* egress != planned because of a cap or shaping */
    int64_t retry_at; /* when egress == NULL */
    char reason[200]; /* why (pin, cap hit, suspension...) */
};
/* The index of the first route group (cfg->ramp.groups) whose match holds for recipient rcpt,
 * -1 for the default group. */
long route_group_of(const struct config *cfg, const struct envelope *env, size_t rcpt);
/* Decides for one recipient whose provider is known. origin: the message's origin name;
 * rcpt_domain: the recipient's domain. Does not count anything. */
void route_decide(const struct envelope *env, size_t rcpt, const char *provider, int64_t now,
                  struct route_decision *out);
/* Counts one message sent through egress to provider (call when a transaction starts). */
void route_count(const struct egress_conf *egress, const char *provider, int64_t now);

/* With a cluster (cluster.redis) a capped egress x provider counts in Redis, shared by the
 * instances: before a message leaves through a pair with a cap, one slot is reserved in every
 * capped window at once, for the job that takes queue_id's recipients at rcpt_domain (see
 * route_job_token). GO: send (no cap, no cluster, Redis down: the local caps, each limit divided by
 * the instances last seen, were applied by route_decide; or a slot is reserved); ASKING: the
 * question is out, wake(arg) runs when any answer is back; FULL: the cap is reached
 * cluster-wide, wait until *retry_at (why says which window). A reserved slot that is not used
 * (the message bounced or was held first, the process died) stays counted: conservative. */
enum route_reserve { ROUTE_RESERVE_GO, ROUTE_RESERVE_ASKING, ROUTE_RESERVE_FULL };
enum route_reserve route_reserve(const struct egress_conf *egress, const char *provider,
                                 const char *queue_id, const char *rcpt_domain, int64_t now,
                                 void (*wake)(void *arg), void *arg, int64_t *retry_at, char *why,
                                 size_t size);
/* The token of the job that takes a recipient of rcpt_domain through egress: the queue id and,
 * for direct delivery, the domain (one job per domain; a smarthost takes a provider's domains
 * in one), lower case. route_decide finds a reserved slot by it. */
void route_job_token(const char *queue_id, const char *rcpt_domain,
                     const struct egress_conf *egress, char *out, size_t size);
/* route_count for the job of queue_id's recipients at rcpt_domain: a slot reserved for it is
 * counted already in Redis. */
void route_count_job(const struct egress_conf *egress, const char *provider, const char *queue_id,
                     const char *rcpt_domain, int64_t now);
/* The connection limits in force for egress x provider (caps and throttles): max concurrent
 * connections and messages per connection; 0 = no limit from the route stage. */
void route_connection_limits(const struct egress_conf *egress, const char *provider, int64_t now,
                             int *max_connections, int *max_per_connection);

/* A reply from a receiver (any code, including 2xx so rules can recover): feeds the shaping
 * rules for egress x provider. Returns 1 when it started a suspension/throttle/reroute. */
int route_feedback(const struct egress_conf *egress, const char *provider, int code,
                   const char *enhanced, const char *text, int64_t now);

/* The check stage's prediction for one message leaving through egress to provider: DMARC
 * predicted to pass (or no policy) or not; the autopilot's dmarc_pass gate counts them. */
void route_note_prediction(const struct egress_conf *egress, const char *provider, int pass,
                           int64_t now);

/* Operator commands ("status", "set PERCENT", "pause", "resume", "rollback", "plan");
 * the answer goes to out. Returns 0 / -1. Overrides are persisted and recorded as events. */
int route_control(const char *command, struct strbuf *out);
/* The same with the word --json in command: status and plan as JSON; an override is made by
 * route_control and answered as {action, mode, share, was, schedule_share}, with route_control's
 * text answer appended to said (may be NULL) for the record. */
int route_control_json(const char *command, struct strbuf *out, struct strbuf *said);

#endif
