/* cluster.h - the connection of this instance to the Redis server the instances share
 * (cluster.c): connect with capped, jittered exponential backoff, AUTH, SELECT, optional TLS,
 * pipelined commands with a timeout, health (up, or down since T) told to subscribers and to
 * the records, an instance heartbeat key and the count of instances seen. Commands are encoded
 * and replies decoded by hiredis; the transport is a libevent bufferevent. The duplicate window
 * on top of it is cluster_dedup.c, the shared cap counters cluster_caps.c, the keys
 * cluster_keys.c. Loop thread only. */
#ifndef OUTRELAY_CLUSTER_H
#define OUTRELAY_CLUSTER_H

#include <event2/event.h>
#include <stddef.h>
#include <stdint.h>

#include "common/strbuf.h"
#include "config/config.h"

struct redisReply;
/* reply NULL: the command got no answer (connection lost, timeout); an error reply is passed
 * as it came (REDIS_REPLY_ERROR). Called on the loop, never from inside cluster_cmd. */
typedef void (*cluster_reply_fn)(void *arg, const struct redisReply *reply);

/* Starts connecting when cfg->cluster_redis is set (else does nothing and returns 0); never
 * waits for Redis: it is down until the first connection is ready. 0 / -1 with err (a TLS
 * file that cannot be read). */
int cluster_start(struct event_base *base, const struct config *cfg, char *err, size_t errlen);
/* Closes the connection; pending commands get a NULL reply. */
void cluster_stop(void);

int cluster_configured(void);
int cluster_is_up(void);
/* When Redis went down (unix seconds), 0 while up. */
int64_t cluster_down_since(void);
/* Instances whose heartbeat key was alive at the last look, ours included (1 before any). */
int cluster_instances_seen(void);
const char *cluster_instance_name(void);
const char *cluster_prefix(void);
/* Commands that failed: no answer, timeout, connection lost, error reply. */
uint64_t cluster_errors(void);

/* Sends one command (argv with lengths; argvlen NULL: C strings); cb (may be NULL) gets the
 * reply. -1 when Redis is not up: nothing is sent and cb is not called. */
int cluster_cmd(int argc, const char **argv, const size_t *argvlen, cluster_reply_fn cb, void *arg);

/* fn(arg, up) on every change of health; up is 1 once a connection is ready. */
void cluster_subscribe(void (*fn)(void *arg, int up), void *arg);

/* The state for `outrelay cluster status`: text lines, or one JSON object. */
void cluster_status(struct strbuf *out, int json);

/* --- keys (cluster_keys.c; pure) */
/* "<prefix>:dup:<32 hex>": the SHA-256 of the lower-cased "message-id\nrecipient", cut to 128
 * bits, so no mail text reaches Redis and keys have one length. */
void cluster_key_dup(const char *prefix, const char *message_id, const char *recipient, char *out,
                     size_t size);
/* "<prefix>:instance:<name>" */
void cluster_key_instance(const char *prefix, const char *name, char *out, size_t size);

/* The wait before the next connection attempt, in ms: *step (0 after a stable connection)
 * doubles from 200 ms up to 30 s, and the wait is half the step plus `random` modulo the other
 * half, so instances that lost Redis together do not come back together. */
int64_t cluster_backoff(int64_t *step, unsigned random);

/* --- the reconciliation queue (cluster_keys.c; pure): deliveries made while Redis was down,
 * written to Redis when it is back. Bounded: past max entries the oldest is dropped. */
struct cluster_reconcile;
struct cluster_reconcile *cluster_reconcile_new(size_t max);
void cluster_reconcile_free(struct cluster_reconcile *q);
/* key delivered at `at`, to be remembered until `until` (unix seconds). */
void cluster_reconcile_push(struct cluster_reconcile *q, const char *key, int64_t at,
                            int64_t until);
size_t cluster_reconcile_count(const struct cluster_reconcile *q);
size_t cluster_reconcile_dropped(const struct cluster_reconcile *q);
/* Empties the queue in arrival order: fn for every entry still to be remembered at now (the
 * others are dropped, their window is over). Returns how many fn got. fn may push again. */
size_t cluster_reconcile_take(struct cluster_reconcile *q, int64_t now,
                              void (*fn)(void *arg, const char *key, int64_t at, int64_t until),
                              void *arg);

/* --- the shared duplicate window (cluster_dedup.c) */
enum cluster_claim {
    CLUSTER_CLAIM_MINE,      /* this instance holds the claim: deliver */
    CLUSTER_CLAIM_OTHER,     /* another instance is delivering: wait for its outcome */
    CLUSTER_CLAIM_DELIVERED, /* delivered by some instance at *at: a duplicate */
    CLUSTER_CLAIM_UNKNOWN,   /* no answer: decide locally */
};
/* Claims the pair for this instance (SET NX with claim_ttl, or ours already). -1 when Redis
 * is not up (decide locally; cb is not called). */
int cluster_dedup_claim(const char *message_id, const char *recipient,
                        void (*cb)(void *arg, enum cluster_claim c, int64_t at), void *arg);
/* Keeps our claim alive while the delivery runs. */
void cluster_dedup_extend(const char *message_id, const char *recipient);
/* The pair was delivered at `at`: the marker lives for the window. Queued for reconciliation
 * when Redis is down or does not answer. */
void cluster_dedup_delivered(const char *message_id, const char *recipient, int64_t at,
                             int64_t window);
/* The pair will not be delivered by us (bounced, expired, deleted): our claim is removed, so a
 * later copy may go. */
void cluster_dedup_release(const char *message_id, const char *recipient);
/* How long a claim lives unless extended (cluster.claim_ttl). */
void cluster_dedup_set_claim_ttl(int64_t seconds);
/* Deliveries waiting to be written to Redis. */
size_t cluster_dedup_pending(void);
/* For cluster.c: Redis came back (up = 1) or went away; and the end. */
void cluster_dedup_health(void *arg, int up);
void cluster_dedup_stop(void);

/* --- shared state (cluster_state.c): small entries by kind and name, each {value, at, by}.
 * A change is written only over an older one (the later `at` wins; a tie goes to the greater
 * instance name); every instance polls a version key once a second and, when it moved, reads all
 * entries and hands the ones it did not know to the kind's apply function. Entries are mirrored
 * locally: those changed while Redis was away are written back when it returns (and a
 * `cluster` record "reconciled" says how many). */
typedef void (*cluster_state_apply_fn)(void *arg, const char *name, const char *value, int64_t at,
                                       const char *by);
/* fn gets the entries of kind another instance wrote (never our own unchanged ones); once per
 * kind, again replaces. Safe before cluster_start. */
void cluster_state_register(const char *kind, cluster_state_apply_fn fn, void *arg);
/* A change made here at `at`; until (unix seconds, 0 = none) is when Redis may forget it. Kept
 * for reconciliation when Redis is down. Does nothing without cluster.redis. */
void cluster_state_publish(const char *kind, const char *name, const char *value, int64_t at,
                           int64_t until);
/* 1 when change a (at_a by by_a) wins over change b. Pure. */
int cluster_state_newer(int64_t at_a, const char *by_a, int64_t at_b, const char *by_b);
/* A lease "<prefix>:lease:NAME" (SET NX EX ttl), asked for or renewed: 1 while the last answer
 * said it is ours (what we knew stands while Redis does not answer); 1 without cluster.redis. */
int cluster_state_lease(const char *name, int64_t ttl);
/* Entries changed here and not yet written to Redis; entries learnt from other instances. */
size_t cluster_state_pending(void);
uint64_t cluster_state_learnt(void);
/* For cluster.c: the poll timer, health, and the end. */
void cluster_state_start(struct event_base *base);
void cluster_state_health(void *arg, int up);
void cluster_state_stop(void);
/* --- the shared cap counters (cluster_caps.c) */
/* "<prefix>:cap:<egress>:<provider>:<span>:<window start>", span minute, hour or day, the
 * window's start in unix seconds. */
void cluster_key_cap(const char *prefix, const char *egress, const char *provider, const char *span,
                     int64_t window_start, char *out, size_t size);
/* While Redis is down each instance enforces limit / instances (instances seen last, at least
 * 1), rounded down but never below 1 when limit >= 1; a limit <= 0 (none) stays as it is. */
int cluster_caps_local_limit(int limit, int instances);

#define CLUSTER_CAP_WINDOWS 3
/* One capped calendar window of an egress x provider pair: [start, end) and its limit. */
struct cluster_cap_window {
    const char *span; /* a string that lives for good (the route stage's window names) */
    int64_t start, end;
    int limit;
};
/* Redis's answer to a reservation: granted 1 (counted), 0 (a window is full: nothing counted),
 * -1 (no answer: decide locally); counts[i] the count of window spans[i] starting at
 * starts[i] after it. */
struct cluster_caps_answer {
    const char *egress, *provider;
    int granted;
    size_t n;
    const char *const *spans;
    const int64_t *starts;
    const long long *counts;
};
typedef void (*cluster_caps_answer_fn)(const struct cluster_caps_answer *a);
/* Whether any pair has a cap (no records or gauge otherwise), and who hears every answer (the
 * route stage: its mirror of the shared counts, and waking the waiting mail). */
void cluster_caps_set_in_use(int in_use, cluster_caps_answer_fn answer);
/* 1 while caps are enforced locally: a cluster with caps, and Redis not up. */
int cluster_caps_local(void);

enum cluster_caps_verdict {
    CLUSTER_CAPS_GRANTED, /* a slot is reserved for token: send (cluster_caps_consume counts it) */
    CLUSTER_CAPS_ASKING,  /* the question is out: the answer callback says when it is back */
    CLUSTER_CAPS_REFUSED, /* a window of the pair is full cluster-wide */
    CLUSTER_CAPS_LOCAL,   /* Redis is not up, or did not answer: the local caps decide */
};
/* Reserves one message for egress x provider in every capped window w[0..n) in one round trip
 * (a Lua script: all under their limit, or nothing counted). token names what is reserved for
 * (a message's job); asking again for the same token while the answer is out asks nothing. */
enum cluster_caps_verdict cluster_caps_reserve(const char *egress, const char *provider,
                                               const char *token,
                                               const struct cluster_cap_window *w, size_t n,
                                               int64_t now);
/* 1 when a slot is reserved for token (granted, its window not over); nothing changes. */
int cluster_caps_granted(const char *egress, const char *provider, const char *token, int64_t now);
/* The job token is leaving: 1 when it used a granted reservation (already counted in Redis). */
int cluster_caps_consume(const char *egress, const char *provider, const char *token);
/* One message counted without a reservation: INCRBY now when Redis is up, else kept for the
 * reconciliation (added to the windows' keys when Redis is back, if they are still current). */
void cluster_caps_count(const char *egress, const char *provider,
                        const struct cluster_cap_window *w, size_t n, int64_t now);
/* Window keys whose local counts wait for Redis. */
size_t cluster_caps_pending(void);
/* For cluster.c: health changes (records the switch to local caps, reconciles on return); the
 * end. */
void cluster_caps_health(void *arg, int up);
void cluster_caps_stop(void);

#endif
