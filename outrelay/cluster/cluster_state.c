/* cluster_state.c - small named state the instances share in Redis (shaping entries, ramp
 * overrides, autopilot positions): a hash per entry "<prefix>:state:<kind>:<name>" {value, at,
 * by}, written only over an older change (the latest `at` wins, ties to the greater instance
 * name), listed in "<prefix>:state:keys", and a version counter "<prefix>:state:version" that every
 * instance polls once a second; when it moved, all entries are fetched in one script and handed
 * to the kind's owner (route/). Entries are mirrored here, so those made or learnt while Redis
 * was away are pushed when it returns; and leases (SET NX EX) for work one instance does at a
 * time. Started by cluster.c; registered with and published to by route/. Loop thread only. */
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

#define POLL_MS 1000
#define KINDS_MAX 8
#define LEASES_MAX 16

struct mirror_entry {
    char *kind, *name, *value, *by;
    int64_t at, until; /* until: 0 = no end (Redis keeps it) */
    int pending;       /* not yet written to Redis */
};

static struct {
    struct event *timer;
    struct hashmap *mirror; /* "<kind>:<name>" -> struct mirror_entry */
    char version[32];       /* the version last fetched ("" = fetch at the next poll) */
    int polling;
    uint64_t learnt, published, reconciled;
    struct {
        char kind[32];
        cluster_state_apply_fn fn;
        void *arg;
    } kinds[KINDS_MAX];
    size_t n_kinds;
    struct {
        char name[128];
        int held;
    } leases[LEASES_MAX];
    size_t n_leases;
} S;

/* Write only over an older change; an unchanged entry does not move the version. */
static const char publish_script[] =
    "local old = redis.call('HMGET', KEYS[1], 'value', 'at', 'by') "
    "if old[2] and (tonumber(old[2]) > tonumber(ARGV[2]) or "
    "(tonumber(old[2]) == tonumber(ARGV[2]) and old[3] > ARGV[3])) then return 0 end "
    "redis.call('SADD', KEYS[2], KEYS[1]) "
    "if tonumber(ARGV[4]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[4]) "
    "else redis.call('PERSIST', KEYS[1]) end "
    "if old[1] == ARGV[1] and old[2] == ARGV[2] and old[3] == ARGV[3] then return 1 end "
    "redis.call('HSET', KEYS[1], 'value', ARGV[1], 'at', ARGV[2], 'by', ARGV[3]) "
    "if tonumber(ARGV[4]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[4]) end "
    "redis.call('INCR', KEYS[3]) return 1";
/* Every live entry as key, value, at, by and its seconds to live (-1: none); expired ones leave
 * the list. */
static const char fetch_script[] = "local out = {} "
                                   "for _, k in ipairs(redis.call('SMEMBERS', KEYS[1])) do "
                                   "local v = redis.call('HMGET', k, 'value', 'at', 'by') "
                                   "if v[1] and v[2] and v[3] then "
                                   "out[#out + 1] = k out[#out + 1] = v[1] "
                                   "out[#out + 1] = v[2] out[#out + 1] = v[3] "
                                   "out[#out + 1] = tostring(redis.call('TTL', k)) "
                                   "else redis.call('SREM', KEYS[1], k) end end return out";
static const char lease_renew_script[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then "
    "redis.call('EXPIRE', KEYS[1], ARGV[2]) return 1 end return 0";

int cluster_state_newer(int64_t at_a, const char *by_a, int64_t at_b, const char *by_b)
{
    if (at_a != at_b) return at_a > at_b;
    return strcmp(by_a ? by_a : "", by_b ? by_b : "") > 0;
}

static void key_of(const char *kind, const char *name, char *out, size_t size)
{
    snprintf(out, size, "%s:state:%s:%s", cluster_prefix(), kind, name);
}

static void mirror_free(void *v)
{
    struct mirror_entry *e = v;
    free(e->kind);
    free(e->name);
    free(e->value);
    free(e->by);
    free(e);
}

/* The mirror's entry for kind:name, created empty when absent. */
static struct mirror_entry *mirror_get(const char *kind, const char *name)
{
    char id[512];
    if (!S.mirror) S.mirror = hashmap_new();
    snprintf(id, sizeof id, "%s:%s", kind, name);
    struct mirror_entry *e = hashmap_get(S.mirror, id);
    if (!e) {
        e = xcalloc(1, sizeof *e);
        e->kind = xstrdup(kind);
        e->name = xstrdup(name);
        e->value = xstrdup("");
        e->by = xstrdup("");
        hashmap_put(S.mirror, id, e);
    }
    return e;
}

static void mirror_set(struct mirror_entry *e, const char *value, int64_t at, const char *by,
                       int64_t until)
{
    free(e->value);
    free(e->by);
    e->value = xstrdup(value);
    e->by = xstrdup(by);
    e->at = at;
    e->until = until;
}

struct write_req {
    char kind[32], name[256], value[512], by[128];
    int64_t at;
};

static void write_reply(void *arg, const redisReply *r)
{
    struct write_req *req = arg;
    if (!r || r->type == REDIS_REPLY_ERROR) {
        /* still ours to push, unless something newer took the mirror's place meanwhile */
        struct mirror_entry *e = mirror_get(req->kind, req->name);
        if (e->at == req->at && !strcmp(e->by, req->by) && !strcmp(e->value, req->value))
            e->pending = 1;
    }
    free(req);
}

/* Sends the mirror entry; 0 when the command went out (its reply may still fail it). */
static int write_entry(struct mirror_entry *e)
{
    int64_t ttl = 0;
    if (e->until) {
        ttl = e->until - clock_now();
        if (ttl <= 0) return 0; /* over: nothing to share */
    }
    if (!cluster_is_up()) return -1;
    char key[512], set[300], version[300], at[32], ex[32];
    key_of(e->kind, e->name, key, sizeof key);
    snprintf(set, sizeof set, "%s:state:keys", cluster_prefix());
    snprintf(version, sizeof version, "%s:state:version", cluster_prefix());
    snprintf(at, sizeof at, "%lld", (long long)e->at);
    snprintf(ex, sizeof ex, "%lld", (long long)ttl);
    struct write_req *req = xcalloc(1, sizeof *req);
    snprintf(req->kind, sizeof req->kind, "%s", e->kind);
    snprintf(req->name, sizeof req->name, "%s", e->name);
    snprintf(req->value, sizeof req->value, "%s", e->value);
    snprintf(req->by, sizeof req->by, "%s", e->by);
    req->at = e->at;
    const char *argv[] = {"EVAL", publish_script, "3", key, set, version, e->value, at, e->by, ex};
    if (cluster_cmd(10, argv, NULL, write_reply, req) < 0) {
        free(req);
        return -1;
    }
    return 0;
}

void cluster_state_publish(const char *kind, const char *name, const char *value, int64_t at,
                           int64_t until)
{
    if (!cluster_configured()) return;
    struct mirror_entry *e = mirror_get(kind, name);
    mirror_set(e, value, at, cluster_instance_name(), until);
    S.published++;
    e->pending = write_entry(e) < 0;
}

void cluster_state_register(const char *kind, cluster_state_apply_fn fn, void *arg)
{
    for (size_t i = 0; i < S.n_kinds; i++)
        if (!strcmp(S.kinds[i].kind, kind)) {
            S.kinds[i].fn = fn;
            S.kinds[i].arg = arg;
            return;
        }
    if (S.n_kinds == KINDS_MAX) return;
    snprintf(S.kinds[S.n_kinds].kind, sizeof S.kinds[S.n_kinds].kind, "%s", kind);
    S.kinds[S.n_kinds].fn = fn;
    S.kinds[S.n_kinds].arg = arg;
    S.n_kinds++;
}

/* One fetched entry: handed to its kind's owner unless the mirror has it already. */
static void learn(const char *key, const char *value, int64_t at, const char *by, int64_t ttl)
{
    char prefix[300];
    snprintf(prefix, sizeof prefix, "%s:state:", cluster_prefix());
    size_t plen = strlen(prefix);
    if (strncmp(key, prefix, plen) != 0) return;
    const char *kind = key + plen, *colon = strchr(kind, ':');
    if (!colon || (size_t)(colon - kind) >= 32) return;
    char kind_name[32];
    memcpy(kind_name, kind, (size_t)(colon - kind));
    kind_name[colon - kind] = '\0';
    const char *name = colon + 1;
    struct mirror_entry *e = mirror_get(kind_name, name);
    if (e->at == at && !strcmp(e->by, by) && !strcmp(e->value, value)) return; /* known */
    if (e->at && cluster_state_newer(e->at, e->by, at, by)) {
        e->pending = write_entry(e) < 0; /* ours is newer and did not land: again */
        return;
    }
    mirror_set(e, value, at, by, ttl > 0 ? clock_now() + ttl : 0);
    e->pending = 0;
    for (size_t i = 0; i < S.n_kinds; i++)
        if (!strcmp(S.kinds[i].kind, kind_name)) {
            S.learnt++;
            S.kinds[i].fn(S.kinds[i].arg, name, value, at, by);
        }
}

static void fetch_reply(void *arg, const redisReply *r)
{
    (void)arg;
    S.polling = 0;
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        S.version[0] = '\0';
        return;
    }
    for (size_t i = 0; i + 5 <= r->elements; i += 5) {
        int ok = 1;
        for (size_t k = 0; k < 5; k++)
            ok &= r->element[i + k]->type == REDIS_REPLY_STRING;
        if (ok)
            learn(r->element[i]->str, r->element[i + 1]->str,
                  strtoll(r->element[i + 2]->str, NULL, 10), r->element[i + 3]->str,
                  strtoll(r->element[i + 4]->str, NULL, 10));
    }
}

static void version_reply(void *arg, const redisReply *r)
{
    (void)arg;
    char seen[32] = "0";
    if (!r || (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_NIL)) {
        S.polling = 0;
        return;
    }
    if (r->type == REDIS_REPLY_STRING) snprintf(seen, sizeof seen, "%s", r->str);
    if (S.version[0] && !strcmp(seen, S.version)) {
        S.polling = 0;
        return;
    }
    snprintf(S.version, sizeof S.version, "%s", seen);
    char set[300];
    snprintf(set, sizeof set, "%s:state:keys", cluster_prefix());
    const char *argv[] = {"EVAL", fetch_script, "1", set};
    if (cluster_cmd(4, argv, NULL, fetch_reply, NULL) < 0) {
        S.polling = 0;
        S.version[0] = '\0';
    }
}

static void poll_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    if (!cluster_is_up() || S.polling) return;
    char version[300];
    snprintf(version, sizeof version, "%s:state:version", cluster_prefix());
    const char *argv[] = {"GET", version};
    if (cluster_cmd(2, argv, NULL, version_reply, NULL) == 0) S.polling = 1;
}

struct push_ctx {
    size_t pushed;
};

static void push_one(void *arg, const char *id, void *value)
{
    (void)id;
    struct push_ctx *ctx = arg;
    struct mirror_entry *e = value;
    if (!e->at && !e->by[0]) return; /* created by a lookup, never set */
    int was_pending = e->pending;
    if (write_entry(e) == 0) {
        e->pending = 0;
        ctx->pushed += was_pending;
    }
}

static void count_pending(void *arg, const char *id, void *value)
{
    (void)id;
    *(size_t *)arg += ((struct mirror_entry *)value)->pending;
}

size_t cluster_state_pending(void)
{
    size_t n = 0;
    if (S.mirror) hashmap_foreach(S.mirror, count_pending, &n); /* tens of entries */
    return n;
}

uint64_t cluster_state_learnt(void)
{
    return S.learnt;
}

void cluster_state_health(void *arg, int up)
{
    (void)arg;
    if (!up) {
        S.polling = 0;
        return;
    }
    /* Back (or first up): everything known is written over older changes only, so the latest
     * change wins whoever made it; then everything is read again. */
    size_t pending = cluster_state_pending();
    struct push_ctx ctx = {0};
    if (S.mirror) hashmap_foreach(S.mirror, push_one, &ctx);
    S.version[0] = '\0';
    if (pending) {
        S.reconciled += pending;
        char detail[300];
        snprintf(detail, sizeof detail,
                 "instance %s: %zu shared state entr%s changed while redis was away written "
                 "back (the latest change wins)",
                 cluster_instance_name(), pending, pending == 1 ? "y" : "ies");
        log_info("cluster: %s", detail);
        struct record_event ev = {
            .type = RECORD_CLUSTER, .queue_id = "-", .action = "reconciled", .detail = detail};
        records_emit(&ev);
    }
}

static void lease_reply(void *arg, const redisReply *r)
{
    size_t i = (size_t)(uintptr_t)arg;
    if (i >= S.n_leases || !r) return; /* no answer: what we knew stands */
    if (r->type == REDIS_REPLY_NIL)
        S.leases[i].held = 1; /* it was free: ours now */
    else if (r->type == REDIS_REPLY_STRING)
        S.leases[i].held = !strcmp(r->str, cluster_instance_name());
}

int cluster_state_lease(const char *name, int64_t ttl)
{
    if (!cluster_configured()) return 1;
    size_t i = 0;
    while (i < S.n_leases && strcmp(S.leases[i].name, name))
        i++;
    if (i == S.n_leases) {
        if (S.n_leases == LEASES_MAX) return 0;
        snprintf(S.leases[i].name, sizeof S.leases[i].name, "%s", name);
        S.leases[i].held = 0;
        S.n_leases++;
    }
    char key[300], ex[32];
    snprintf(key, sizeof key, "%s:lease:%s", cluster_prefix(), name);
    snprintf(ex, sizeof ex, "%lld", (long long)(ttl > 0 ? ttl : 30));
    if (S.leases[i].held) {
        const char *argv[] = {"EVAL", lease_renew_script, "1", key, cluster_instance_name(), ex};
        cluster_cmd(6, argv, NULL, NULL, NULL);
    }
    /* free: ours; else the holder's name (ours after a renewal, or another's) */
    const char *argv[] = {"SET", key, cluster_instance_name(), "NX", "GET", "EX", ex};
    cluster_cmd(7, argv, NULL, lease_reply, (void *)(uintptr_t)i);
    return S.leases[i].held;
}

void cluster_state_start(struct event_base *base)
{
    S.version[0] = '\0';
    S.polling = 0;
    if (S.timer) event_free(S.timer);
    S.timer = event_new(base, -1, EV_PERSIST, poll_tick, NULL);
    struct timeval tv = {POLL_MS / 1000, (POLL_MS % 1000) * 1000};
    event_add(S.timer, &tv);
    cluster_subscribe(cluster_state_health, NULL);
}

void cluster_state_stop(void)
{
    if (S.timer) event_free(S.timer);
    S.timer = NULL;
    hashmap_free_values(S.mirror, mirror_free);
    S.mirror = NULL;
    S.n_leases = 0;
    S.learnt = S.published = S.reconciled = 0;
    S.polling = 0;
}
