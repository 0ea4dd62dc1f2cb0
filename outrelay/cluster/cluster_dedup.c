/* cluster_dedup.c - the duplicate window the instances share in Redis. Before delivering a
 * (Message-ID, recipient) an instance claims its key: SET NX with a short TTL holding
 * "claim <instance>", extended while the delivery runs; the outcome replaces it: "delivered
 * <instance> <unix time>" for the whole window, or nothing (the claim is removed) when we will
 * not deliver, so a later copy may go. Deliveries made while Redis was down wait in the
 * reconciliation queue and are written when it returns. Called by qmgr_lookup.c; loop thread. */
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/cluster.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/util.h"

#define RECONCILE_MAX 1000000 /* deliveries of an outage remembered for Redis */

static struct cluster_reconcile *reconcile;
static int64_t claim_ttl = 300;

/* Ours only: compare and act in one step (Redis runs a script atomically). */
static const char if_ours_expire[] = "if redis.call('GET', KEYS[1]) == ARGV[1] then "
                                     "return redis.call('EXPIRE', KEYS[1], ARGV[2]) end return 0";
static const char if_ours_delete[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";

static void dup_key(const char *message_id, const char *recipient, char *out, size_t size)
{
    cluster_key_dup(cluster_prefix(), message_id, recipient, out, size);
}

static void claim_value(char *out, size_t size)
{
    snprintf(out, size, "claim %s", cluster_instance_name());
}

void cluster_dedup_set_claim_ttl(int64_t seconds)
{
    claim_ttl = seconds > 0 ? seconds : 300;
}

struct claim_req {
    void (*cb)(void *arg, enum cluster_claim c, int64_t at);
    void *arg;
    char key[300];
};

static void claim_reply(void *arg, const redisReply *r)
{
    struct claim_req *req = arg;
    enum cluster_claim c = CLUSTER_CLAIM_UNKNOWN;
    int64_t at = 0;
    char mine[300];
    claim_value(mine, sizeof mine);
    if (r && r->type == REDIS_REPLY_NIL) {
        c = CLUSTER_CLAIM_MINE; /* it was free and is ours now */
    } else if (r && r->type == REDIS_REPLY_STRING) {
        long long t = 0;
        char who[200];
        if (strcmp(r->str, mine) == 0) {
            c = CLUSTER_CLAIM_MINE; /* ours from an earlier try (or before a restart) */
            char ttl[32];
            snprintf(ttl, sizeof ttl, "%lld", (long long)claim_ttl);
            const char *argv[] = {"EVAL", if_ours_expire, "1", req->key, mine, ttl};
            cluster_cmd(6, argv, NULL, NULL, NULL);
        } else if (sscanf(r->str, "delivered %199s %lld", who, &t) == 2) {
            c = CLUSTER_CLAIM_DELIVERED;
            at = t;
        } else {
            c = CLUSTER_CLAIM_OTHER;
        }
    }
    req->cb(req->arg, c, at);
    free(req);
}

int cluster_dedup_claim(const char *message_id, const char *recipient,
                        void (*cb)(void *arg, enum cluster_claim c, int64_t at), void *arg)
{
    if (!cluster_is_up()) return -1;
    struct claim_req *req = xcalloc(1, sizeof *req);
    req->cb = cb;
    req->arg = arg;
    dup_key(message_id, recipient, req->key, sizeof req->key);
    char value[300], ttl[32];
    claim_value(value, sizeof value);
    snprintf(ttl, sizeof ttl, "%lld", (long long)claim_ttl);
    /* NX with GET (Redis 7): set when free, and say what was there otherwise, in one step */
    const char *argv[] = {"SET", req->key, value, "NX", "GET", "EX", ttl};
    if (cluster_cmd(7, argv, NULL, claim_reply, req) < 0) {
        free(req);
        return -1;
    }
    return 0;
}

void cluster_dedup_extend(const char *message_id, const char *recipient)
{
    if (!cluster_is_up()) return;
    char key[300], value[300], ttl[32];
    dup_key(message_id, recipient, key, sizeof key);
    claim_value(value, sizeof value);
    snprintf(ttl, sizeof ttl, "%lld", (long long)claim_ttl);
    const char *argv[] = {"EVAL", if_ours_expire, "1", key, value, ttl};
    cluster_cmd(6, argv, NULL, NULL, NULL);
}

void cluster_dedup_release(const char *message_id, const char *recipient)
{
    if (!cluster_is_up()) return; /* the claim's TTL ends it */
    char key[300], value[300];
    dup_key(message_id, recipient, key, sizeof key);
    claim_value(value, sizeof value);
    const char *argv[] = {"EVAL", if_ours_delete, "1", key, value};
    cluster_cmd(5, argv, NULL, NULL, NULL);
}

struct marker {
    char key[300];
    int64_t at, until;
};

static void queue_marker(const char *key, int64_t at, int64_t until)
{
    if (!reconcile) reconcile = cluster_reconcile_new(RECONCILE_MAX);
    cluster_reconcile_push(reconcile, key, at, until);
}

static void marker_reply(void *arg, const redisReply *r)
{
    struct marker *mk = arg;
    if (!r || r->type == REDIS_REPLY_ERROR) queue_marker(mk->key, mk->at, mk->until);
    free(mk);
}

/* SET key "delivered <instance> <at>" for the rest of the window; queued when it fails. */
static void write_marker(void *arg, const char *key, int64_t at, int64_t until)
{
    (void)arg;
    int64_t left = until - clock_now();
    if (left <= 0) return;
    char value[300], ex[32];
    snprintf(value, sizeof value, "delivered %s %lld", cluster_instance_name(), (long long)at);
    snprintf(ex, sizeof ex, "%lld", (long long)left);
    struct marker *mk = xcalloc(1, sizeof *mk);
    snprintf(mk->key, sizeof mk->key, "%s", key);
    mk->at = at;
    mk->until = until;
    const char *argv[] = {"SET", key, value, "EX", ex};
    if (cluster_cmd(5, argv, NULL, marker_reply, mk) < 0) {
        queue_marker(key, at, until);
        free(mk);
    }
}

void cluster_dedup_delivered(const char *message_id, const char *recipient, int64_t at,
                             int64_t window)
{
    if (!cluster_configured()) return;
    char key[300];
    dup_key(message_id, recipient, key, sizeof key);
    write_marker(NULL, key, at, at + window);
}

size_t cluster_dedup_pending(void)
{
    return reconcile ? cluster_reconcile_count(reconcile) : 0;
}

void cluster_dedup_health(void *arg, int up)
{
    (void)arg;
    if (!up || !reconcile || cluster_reconcile_count(reconcile) == 0) return;
    size_t dropped = cluster_reconcile_dropped(reconcile);
    size_t n = cluster_reconcile_take(reconcile, clock_now(), write_marker, NULL);
    log_info("cluster: %zu deliveries made while redis was down written to it%s", n,
             dropped ? " (the oldest beyond the queue's size were lost)" : "");
}

void cluster_dedup_stop(void)
{
    cluster_reconcile_free(reconcile);
    reconcile = NULL;
}
