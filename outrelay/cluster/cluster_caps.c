/* cluster_caps.c - the cap counters the instances share in Redis: one key per egress x provider
 * x calendar window, a reservation made atomically by a small Lua script before a message goes
 * (counted only when every capped window of the pair is under its limit), the reservations
 * granted and not used yet, and the counts made while Redis was down, added to its keys when it
 * returns. Called by route/route.c; health from cluster.c. Loop thread only. */
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/cluster.h"
#include "common/clock.h"
#include "common/hashmap.h"
#include "common/log.h"
#include "common/util.h"
#include "records/records.h"

/* A key outlives its window by this much, so an instance whose clock is a little behind still
 * finds the count. */
#define CAP_KEY_MARGIN 60
#define PRUNE_EVERY 60

/* KEYS: the pair's capped windows; ARGV: limit and seconds to live, per key. All under their
 * limit: each is incremented and (re)given its lifetime, and the reply is {1, counts...};
 * otherwise nothing changes and the reply is {0, counts...}. Redis runs a script atomically,
 * so two instances cannot both take the last slot. */
static const char reserve_script[] =
    "local c = {} "
    "for i = 1, #KEYS do c[i] = tonumber(redis.call('GET', KEYS[i]) or 0) end "
    "for i = 1, #KEYS do if c[i] >= tonumber(ARGV[2*i-1]) then "
    "table.insert(c, 1, 0) return c end end "
    "for i = 1, #KEYS do c[i] = redis.call('INCR', KEYS[i]) "
    "redis.call('EXPIRE', KEYS[i], ARGV[2*i]) end "
    "table.insert(c, 1, 1) return c";
/* KEYS[1] += ARGV[1], living ARGV[2] seconds: counts made without a reservation. */
static const char add_script[] = "local c = redis.call('INCRBY', KEYS[1], ARGV[1]) "
                                 "redis.call('EXPIRE', KEYS[1], ARGV[2]) return c";

enum res_state { RES_ASKING, RES_GRANTED, RES_REFUSED, RES_UNKNOWN };

struct reservation {
    enum res_state state;
    int64_t expires; /* the end of the pair's shortest capped window at the time of asking */
};

struct local_count {
    int n;
    int64_t until; /* the window's end */
};

static struct {
    struct hashmap *reservations; /* "egress\nprovider\ntoken" -> struct reservation */
    struct hashmap *local;        /* cap key -> struct local_count, made while Redis was down */
    int in_use;                   /* some pair has a cap */
    int was_down;                 /* caps were enforced locally since the last connection */
    int64_t next_prune;
    cluster_caps_answer_fn answer;
} S;

void cluster_key_cap(const char *prefix, const char *egress, const char *provider, const char *span,
                     int64_t window_start, char *out, size_t size)
{
    snprintf(out, size, "%s:cap:%s:%s:%s:%lld", prefix, egress, provider, span,
             (long long)window_start);
}

int cluster_caps_local_limit(int limit, int instances)
{
    if (limit <= 0) return limit;
    int share = limit / (instances > 1 ? instances : 1);
    return share >= 1 ? share : 1;
}

void cluster_caps_set_in_use(int in_use, cluster_caps_answer_fn answer)
{
    S.in_use = in_use;
    S.answer = answer;
}

int cluster_caps_local(void)
{
    return cluster_configured() && S.in_use && !cluster_is_up();
}

static void res_key(const char *egress, const char *provider, const char *token, char *out,
                    size_t size)
{
    snprintf(out, size, "%s\n%s\n%s", egress, provider, token ? token : "");
}

static int drop_expired(void *arg, const char *key, void *value)
{
    (void)key;
    int64_t now = *(const int64_t *)arg;
    struct reservation *r = value;
    if (r->state == RES_ASKING || r->expires > now) return 0;
    free(r);
    return 1;
}

static int drop_local_over(void *arg, const char *key, void *value)
{
    (void)key;
    int64_t now = *(const int64_t *)arg;
    struct local_count *c = value;
    if (c->until > now) return 0;
    free(c);
    return 1;
}

static void prune(int64_t now)
{
    if (now < S.next_prune) return;
    S.next_prune = now + PRUNE_EVERY;
    if (S.reservations) hashmap_remove_if(S.reservations, drop_expired, &now);
    if (S.local) hashmap_remove_if(S.local, drop_local_over, &now);
}

struct reserve_req {
    char res_key[600];
    char egress[200], provider[200];
    size_t n;
    const char *spans[CLUSTER_CAP_WINDOWS]; /* the caller's strings, which live for good */
    int64_t starts[CLUSTER_CAP_WINDOWS];
};

static void reserve_reply(void *arg, const redisReply *r)
{
    struct reserve_req *req = arg;
    long long counts[CLUSTER_CAP_WINDOWS] = {0};
    int answer = -1; /* no usable answer: the caller decides locally */
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == req->n + 1 &&
        r->element[0]->type == REDIS_REPLY_INTEGER) {
        answer = r->element[0]->integer ? 1 : 0;
        for (size_t i = 0; i < req->n; i++)
            counts[i] =
                r->element[i + 1]->type == REDIS_REPLY_INTEGER ? r->element[i + 1]->integer : 0;
    } else if (r && r->type == REDIS_REPLY_ERROR) {
        log_warn("cluster: cap reservation for %s x %s failed (%s); counted locally", req->egress,
                 req->provider, r->str);
    }
    struct reservation *res = S.reservations ? hashmap_get(S.reservations, req->res_key) : NULL;
    if (res && res->state == RES_ASKING)
        res->state = answer == 1 ? RES_GRANTED : answer == 0 ? RES_REFUSED : RES_UNKNOWN;
    if (S.answer) {
        struct cluster_caps_answer a = {.egress = req->egress,
                                        .provider = req->provider,
                                        .granted = answer,
                                        .n = req->n,
                                        .spans = req->spans,
                                        .starts = req->starts,
                                        .counts = counts};
        S.answer(&a);
    }
    free(req);
}

enum cluster_caps_verdict cluster_caps_reserve(const char *egress, const char *provider,
                                               const char *token,
                                               const struct cluster_cap_window *w, size_t n,
                                               int64_t now)
{
    if (!cluster_is_up() || n == 0 || n > CLUSTER_CAP_WINDOWS) return CLUSTER_CAPS_LOCAL;
    if (!S.reservations) S.reservations = hashmap_new();
    prune(now);
    char rk[600];
    res_key(egress, provider, token, rk, sizeof rk);
    struct reservation *res = hashmap_get(S.reservations, rk);
    if (res && res->state != RES_ASKING && res->expires <= now) { /* its window is over */
        free(hashmap_remove(S.reservations, rk));
        res = NULL;
    }
    if (res) {
        switch (res->state) {
        case RES_ASKING:
            return CLUSTER_CAPS_ASKING;
        case RES_GRANTED:
            return CLUSTER_CAPS_GRANTED; /* taken by cluster_caps_consume when it is counted */
        case RES_REFUSED:
            free(hashmap_remove(S.reservations, rk));
            return CLUSTER_CAPS_REFUSED;
        case RES_UNKNOWN:
            free(hashmap_remove(S.reservations, rk));
            return CLUSTER_CAPS_LOCAL;
        }
    }
    struct reserve_req *req = xcalloc(1, sizeof *req);
    snprintf(req->res_key, sizeof req->res_key, "%s", rk);
    snprintf(req->egress, sizeof req->egress, "%s", egress);
    snprintf(req->provider, sizeof req->provider, "%s", provider);
    req->n = n;
    const char *argv[3 + 3 * CLUSTER_CAP_WINDOWS];
    char keys[CLUSTER_CAP_WINDOWS][400], limits[CLUSTER_CAP_WINDOWS][24],
        ttls[CLUSTER_CAP_WINDOWS][24], nkeys[8];
    int64_t expires = 0;
    snprintf(nkeys, sizeof nkeys, "%zu", n);
    argv[0] = "EVAL";
    argv[1] = reserve_script;
    argv[2] = nkeys;
    for (size_t i = 0; i < n; i++) {
        req->spans[i] = w[i].span;
        req->starts[i] = w[i].start;
        cluster_key_cap(cluster_prefix(), egress, provider, w[i].span, w[i].start, keys[i],
                        sizeof keys[i]);
        snprintf(limits[i], sizeof limits[i], "%d", w[i].limit);
        snprintf(ttls[i], sizeof ttls[i], "%lld",
                 (long long)(w[i].end - now > 0 ? w[i].end - now : 0) + CAP_KEY_MARGIN);
        argv[3 + i] = keys[i];
        argv[3 + n + 2 * i] = limits[i];
        argv[3 + n + 2 * i + 1] = ttls[i];
        if (!expires || w[i].end < expires) expires = w[i].end;
    }
    if (cluster_cmd((int)(3 + 3 * n), argv, NULL, reserve_reply, req) < 0) {
        free(req);
        return CLUSTER_CAPS_LOCAL;
    }
    res = xcalloc(1, sizeof *res);
    res->state = RES_ASKING;
    res->expires = expires;
    free(hashmap_put(S.reservations, rk, res));
    return CLUSTER_CAPS_ASKING;
}

int cluster_caps_granted(const char *egress, const char *provider, const char *token, int64_t now)
{
    if (!S.reservations || !token) return 0;
    char rk[600];
    res_key(egress, provider, token, rk, sizeof rk);
    struct reservation *res = hashmap_get(S.reservations, rk);
    return res && res->state == RES_GRANTED && res->expires > now;
}

int cluster_caps_consume(const char *egress, const char *provider, const char *token)
{
    if (!S.reservations || !token) return 0;
    char rk[600];
    res_key(egress, provider, token, rk, sizeof rk);
    struct reservation *res = hashmap_get(S.reservations, rk);
    if (!res || res->state != RES_GRANTED) return 0;
    free(hashmap_remove(S.reservations, rk));
    return 1;
}

static void local_add(const char *key, int n, int64_t until)
{
    if (!S.local) S.local = hashmap_new();
    struct local_count *c = hashmap_get(S.local, key);
    if (!c) {
        c = xcalloc(1, sizeof *c);
        hashmap_put(S.local, key, c);
    }
    c->n += n;
    c->until = until;
}

struct add_req {
    char key[400];
    int n;
    int64_t until;
};

static void add_reply(void *arg, const redisReply *r)
{
    struct add_req *req = arg;
    if (!r || r->type != REDIS_REPLY_INTEGER) /* not written: again when Redis is back */
        local_add(req->key, req->n, req->until);
    free(req);
}

/* INCRBY n on key, living until its window's end (+ the margin); kept locally when it fails. */
static void add_to_redis(const char *key, int n, int64_t until, int64_t now)
{
    if (until <= now) return; /* the window is over: nobody asks for it any more */
    char amount[24], ttl[24];
    snprintf(amount, sizeof amount, "%d", n);
    snprintf(ttl, sizeof ttl, "%lld", (long long)(until - now + CAP_KEY_MARGIN));
    struct add_req *req = xcalloc(1, sizeof *req);
    snprintf(req->key, sizeof req->key, "%s", key);
    req->n = n;
    req->until = until;
    const char *argv[] = {"EVAL", add_script, "1", key, amount, ttl};
    if (cluster_cmd(6, argv, NULL, add_reply, req) < 0) {
        local_add(key, n, until);
        free(req);
    }
}

void cluster_caps_count(const char *egress, const char *provider,
                        const struct cluster_cap_window *w, size_t n, int64_t now)
{
    if (!cluster_configured()) return;
    for (size_t i = 0; i < n; i++) {
        char key[400];
        cluster_key_cap(cluster_prefix(), egress, provider, w[i].span, w[i].start, key, sizeof key);
        if (cluster_is_up())
            add_to_redis(key, 1, w[i].end, now);
        else
            local_add(key, 1, w[i].end);
    }
}

size_t cluster_caps_pending(void)
{
    return S.local ? hashmap_count(S.local) : 0;
}

struct reconcile {
    int64_t now;
    size_t keys;
    long long messages;
};

static int reconcile_one(void *arg, const char *key, void *value)
{
    struct reconcile *rc = arg;
    struct local_count *c = value;
    if (c->until > rc->now && c->n > 0) {
        rc->keys++;
        rc->messages += c->n;
        add_to_redis(key, c->n, c->until, rc->now); /* a failure puts it back in a new map */
    }
    free(c);
    return 1;
}

void cluster_caps_health(void *arg, int up)
{
    (void)arg;
    if (!S.in_use) return;
    char detail[300];
    if (!up) {
        int n = cluster_instances_seen();
        snprintf(detail, sizeof detail,
                 "instance %s: caps enforced locally, each limit divided by %d instance%s seen",
                 cluster_instance_name(), n, n == 1 ? "" : "s");
        log_warn("cluster: %s", detail);
        struct record_event ev = {
            .type = RECORD_CLUSTER, .queue_id = "-", .action = "caps-local", .detail = detail};
        records_emit(&ev);
        S.was_down = 1;
        return;
    }
    /* detach first: a write that cannot be sent lands in a fresh map */
    struct hashmap *old = S.local;
    S.local = NULL;
    struct reconcile rc = {clock_now(), 0, 0};
    if (old) {
        hashmap_remove_if(old, reconcile_one, &rc);
        hashmap_free(old);
    }
    if (!S.was_down && !rc.keys) return; /* the first connection, nothing counted before it */
    S.was_down = 0;
    snprintf(detail, sizeof detail,
             "instance %s: caps shared again; %lld message%s counted during the outage added "
             "to %zu window key%s",
             cluster_instance_name(), rc.messages, rc.messages == 1 ? "" : "s", rc.keys,
             rc.keys == 1 ? "" : "s");
    log_info("cluster: %s", detail);
    struct record_event ev = {
        .type = RECORD_CLUSTER, .queue_id = "-", .action = "caps-shared", .detail = detail};
    records_emit(&ev);
}

static void free_value(void *value)
{
    free(value);
}

void cluster_caps_stop(void)
{
    hashmap_free_values(S.reservations, free_value);
    hashmap_free_values(S.local, free_value);
    S.reservations = S.local = NULL;
    S.next_prune = 0;
    S.was_down = 0;
}
