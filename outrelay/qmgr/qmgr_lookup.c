/* qmgr_lookup.c - two lookups the delivery step (qmgr_route.c) makes before it routes a
 * recipient: the provider of its domain (cached MX answers) and whether the same message was
 * already delivered to it (duplicate suppression). Owns both caches (struct qmgr_lookup, made by
 * qmgr_lookup_new(), freed by qmgr_lookup_free(), both called by qmgr.c). Never blocks: a lookup
 * in progress answers "wait" and its answer makes the waiting messages due. Calls only the core
 * (qmgr_message.c); the core reaches it through q->forgetting. Loop thread only. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/cluster.h"
#include "common/hashmap.h"
#include "common/ttl_cache.h"
#include "common/clock.h"
#include "common/util.h"
#include "qmgr/qmgr_lookup.h"
#include "dns/dns.h"
#include "records/records.h"
#include "route/route.h"

/* --- providers of recipient domains ---------------------------------------------------------- */
/* The route stage needs to know which provider (Microsoft, Google...) a recipient domain belongs
 * to, which its MX hosts tell. Answers are cached per domain for the DNS TTL; while a lookup runs
 * the recipients wait (the answer schedules them again). Without configured providers every
 * domain is "other" and no lookup happens. */

struct qmgr_lookup {
    struct qmgr *q;
    struct ttl_cache *providers; /* domain -> provider name (the config's string), for the TTL */
    struct hashmap *asking;      /* domain -> struct provider_query, while its MX lookup runs */
    struct hashmap *dedup;       /* "message-id\nrecipient" -> struct dedup_entry */
};

struct provider_query {
    struct qmgr_lookup *owner;
    struct dns_query *query;
    char *domain;
    /* the messages waiting for this answer (and no other): an answer wakes its own waiters, so
     * a queue waiting on many domains is not run again in full at every answer */
    struct message_list waiting;
};

/* The messages waiting on list become due now (the wake timer runs them from the loop). */
static void wake_list(struct message_list *list)
{
    int64_t now = clock_now();
    struct message *m;
    while ((m = TAILQ_FIRST(list))) {
        TAILQ_REMOVE(list, m, lookup_link);
        m->waiting_lookup = 0;
        m->lookup_list = NULL;
        qmgr_rearm(m, now);
    }
}

#define PROVIDERS_MAX 100000 /* domains remembered at once */

static void provider_answer(void *arg, const struct dns_answer *a)
{
    struct provider_query *p = arg;
    struct qmgr_lookup *l = p->owner;
    const char *hosts[32];
    size_t n = 0;
    for (size_t i = 0; a->status == DNS_OK && i < a->n && n < 32; i++)
        hosts[n++] = a->mx[i].host;
    if (a->status == DNS_NODATA) /* implicit MX: the domain itself */
        hosts[n++] = p->domain;
    const char *provider = route_provider(hosts, n);
    unsigned ttl = a->status == DNS_OK ? a->ttl : 60;
    ttl_cache_put(l->providers, p->domain, (void *)provider,
                  ttl < 60      ? 60
                  : ttl > 86400 ? 86400
                                : ttl);
    hashmap_remove(l->asking, p->domain);
    wake_list(&p->waiting);
    free(p->domain);
    free(p);
}

static void copy_provider(const void *value, void *out)
{
    *(const char **)out = value;
}

/* The provider of a domain, or NULL while it is being looked up; then waiter (unless NULL or
 * already waiting for something) waits for the answer. */
const char *qmgr_provider_of(struct qmgr_lookup *l, const char *domain, struct message *waiter)
{
    if (l->q->cfg->n_providers == 0 || domain[0] == '[') return "other"; /* literal: no MX */
    char key[256];
    snprintf(key, sizeof key, "%s", domain);
    qmgr_lowercase(key);
    const char *provider = NULL;
    if (ttl_cache_get(l->providers, key, copy_provider, &provider) > 0) return provider;
    struct provider_query *p = hashmap_get(l->asking, key);
    if (!p) {
        p = xcalloc(1, sizeof *p);
        p->owner = l;
        p->domain = xstrdup(key);
        TAILQ_INIT(&p->waiting);
        hashmap_put(l->asking, key, p);
        p->query = dns_query(key, DNS_TYPE_MX, provider_answer, p); /* answers after return */
    }
    if (waiter && !waiter->waiting_lookup) {
        waiter->waiting_lookup = 1;
        waiter->lookup_list = &p->waiting;
        TAILQ_INSERT_TAIL(&p->waiting, waiter, lookup_link);
    }
    return NULL;
}

static void cancel_query(void *arg, const char *key, void *value)
{
    (void)key;
    struct qmgr *q = arg;
    struct provider_query *p = value;
    struct message *m;
    while ((m = TAILQ_FIRST(&p->waiting))) { /* no answer now: the queue's own list */
        TAILQ_REMOVE(&p->waiting, m, lookup_link);
        m->lookup_list = &q->lookup_waiting;
        TAILQ_INSERT_TAIL(&q->lookup_waiting, m, lookup_link);
    }
    dns_cancel(p->query);
    free(p->domain);
    free(p);
}
/* The cluster answered a claim or a reservation: the messages waiting on the queue's own list
 * become due now. */
void qmgr_lookup_answered(struct qmgr *q)
{
    wake_list(&q->lookup_waiting);
}

/* --- duplicate suppression ------------------------------------------------------------------- */
/* During coexistence both platforms can hand us the same message (journaling, forwarding, both
 * answering). A (Message-ID, recipient) pair delivered within dedup.window is not sent again;
 * while one copy is being delivered, another waits for its outcome. The delivered pairs of the
 * window are reloaded from the records at start.
 *
 * With a cluster (cluster/cluster_dedup.c) the window is shared: before a pair is sent this
 * instance claims it in Redis and waits for the answer (DEDUP_WAIT); another instance's claim
 * means wait for its outcome, its delivered marker means suppress. Each try claims again, so a
 * claim that lapsed while we deferred is noticed. When Redis is down the local window alone
 * decides (at worst a duplicate goes) and our deliveries are written to Redis when it returns. */

enum dedup_cluster { CLUSTER_NONE, CLUSTER_ASKING, CLUSTER_MINE };

struct dedup_entry {
    int64_t delivered_at;           /* 0: not delivered (yet) */
    const struct message *inflight; /* the copy being delivered now, or NULL */
    enum dedup_cluster cluster;     /* this instance's claim in Redis for this try */
    int64_t extended_at;            /* when the claim was last made or extended */
    int64_t other_until;            /* another instance holds the claim: ask again after this */
};

static void pair_key(const char *message_id, const char *recipient, char *out, size_t size)
{
    snprintf(out, size, "%s\n%s", message_id, recipient);
    qmgr_lowercase(out);
}

static int dedup_key(const struct message *m, size_t i, char *out, size_t size)
{
    if (!m->q->cfg->dedup_enabled || !m->env->message_id || !m->env->message_id[0]) return -1;
    pair_key(m->env->message_id, m->env->rcpts[i].address, out, size);
    return 0;
}

/* The entry of key, made when there is none. */
static struct dedup_entry *dedup_entry(struct qmgr_lookup *l, const char *key)
{
    struct dedup_entry *e = hashmap_get(l->dedup, key);
    if (!e) {
        e = xcalloc(1, sizeof *e);
        hashmap_put(l->dedup, key, e);
    }
    return e;
}

static void dedup_load_one(void *arg, const char *message_id, const char *recipient, int64_t ts_us)
{
    struct qmgr_lookup *l = arg;
    char key[1200];
    if (!message_id || !recipient) return;
    pair_key(message_id, recipient, key, sizeof key);
    dedup_entry(l, key)->delivered_at = ts_us / 1000000;
    /* Redis may have missed it (down then, or emptied since): written when it is up */
    cluster_dedup_delivered(message_id, recipient, ts_us / 1000000, l->q->cfg->dedup_window);
}

/* Redis's answer to our claim of a pair ("message-id\nrecipient"); the recipient asks again at
 * its next try (DEDUP_WAIT) and finds the verdict here. */
struct claim_wait {
    struct qmgr_lookup *l;
    char key[];
};

static void claim_answer(void *arg, enum cluster_claim c, int64_t at)
{
    struct claim_wait *w = arg;
    struct dedup_entry *e = hashmap_get(w->l->dedup, w->key);
    if (e && e->cluster == CLUSTER_ASKING) {
        e->cluster = CLUSTER_NONE;
        if (c == CLUSTER_CLAIM_MINE || c == CLUSTER_CLAIM_UNKNOWN) /* no answer: local */
            e->cluster = CLUSTER_MINE;
        else if (c == CLUSTER_CLAIM_DELIVERED && !e->delivered_at)
            e->delivered_at = at > 0 ? at : clock_now();
        else if (c == CLUSTER_CLAIM_OTHER) /* another instance delivers: ask again later */
            e->other_until = clock_now() + 2;
    }
    struct qmgr *q = w->l->q;
    free(w);
    qmgr_lookup_answered(q); /* the waiting messages go on at once */
}

enum dedup_verdict qmgr_dedup_check(struct message *m, size_t i, int64_t now)
{
    char key[1200];
    if (dedup_key(m, i, key, sizeof key) < 0) return DEDUP_SEND;
    struct dedup_entry *e = hashmap_get(m->q->lookup->dedup, key);
    if (e && e->delivered_at && now - e->delivered_at < m->q->cfg->dedup_window)
        return DEDUP_SUPPRESS;
    if (e && e->inflight && e->inflight != m) return DEDUP_WAIT;
    e = dedup_entry(m->q->lookup, key);
    if (e->cluster == CLUSTER_ASKING) return DEDUP_ASKING;
    if (e->other_until > now) return DEDUP_WAIT;
    if (e->cluster != CLUSTER_MINE && cluster_is_up()) {
        size_t len = strlen(key) + 1;
        struct claim_wait *w = xmalloc(sizeof *w + len);
        w->l = m->q->lookup;
        memcpy(w->key, key, len);
        if (cluster_dedup_claim(m->env->message_id, m->env->rcpts[i].address, claim_answer, w) ==
            0) {
            e->cluster = CLUSTER_ASKING;
            return DEDUP_ASKING;
        }
        free(w); /* Redis went away meanwhile: the local window decides */
    }
    e->inflight = m;
    e->extended_at = now;
    return DEDUP_SEND;
}

/* The outcome of a delivery attempt for recipient i of m. */
void qmgr_dedup_outcome(const struct message *m, size_t i, int delivered, int64_t now)
{
    char key[1200];
    if (dedup_key(m, i, key, sizeof key) < 0) return;
    struct dedup_entry *e = hashmap_get(m->q->lookup->dedup, key);
    if (!e) return;
    if (delivered) {
        e->delivered_at = now;
        cluster_dedup_delivered(m->env->message_id, m->env->rcpts[i].address, now,
                                m->q->cfg->dedup_window);
    }
    if (e->inflight == m) {
        e->inflight = NULL;
        if (e->cluster == CLUSTER_MINE) e->cluster = CLUSTER_NONE; /* the next try claims again */
    }
}

/* m is done (every recipient final) or deleted: a pair it did not deliver gives up our claim,
 * so a later copy, here or on another instance, may go (the claim would lapse anyway). */
void qmgr_dedup_forget_message(const struct message *m)
{
    char key[1200];
    for (size_t i = 0; i < m->env->n_rcpts; i++) {
        if (dedup_key(m, i, key, sizeof key) < 0) return;
        struct dedup_entry *e = hashmap_get(m->q->lookup->dedup, key);
        if (!e) continue;
        if (e->inflight == m) {
            e->inflight = NULL;
            e->cluster = CLUSTER_NONE;
        }
        if (!e->delivered_at && !e->inflight)
            cluster_dedup_release(m->env->message_id, m->env->rcpts[i].address);
    }
}

struct dedup_prune {
    int64_t now, window, claim_ttl;
    char **dead;
    size_t n;
};

static void dedup_find_old(void *arg, const char *key, void *value)
{
    struct dedup_prune *p = arg;
    struct dedup_entry *e = value;
    if (e->inflight && e->cluster == CLUSTER_MINE &&
        p->now - e->extended_at >= p->claim_ttl / 3) { /* a delivery still runs: keep our claim */
        const char *nl = strchr(key, '\n');
        if (nl) {
            char mid[1200];
            snprintf(mid, sizeof mid, "%.*s", (int)(nl - key), key);
            cluster_dedup_extend(mid, nl + 1);
        }
        e->extended_at = p->now;
    }
    if (!e->inflight && e->cluster != CLUSTER_ASKING && p->now - e->delivered_at >= p->window) {
        p->dead = xrealloc(p->dead, (p->n + 1) * sizeof *p->dead);
        p->dead[p->n++] = xstrdup(key);
    }
}

void qmgr_dedup_prune(struct qmgr_lookup *l, int64_t now)
{
    struct dedup_prune p = {now, l->q->cfg->dedup_window, l->q->cfg->cluster_claim_ttl, NULL, 0};
    hashmap_foreach(l->dedup, dedup_find_old, &p);
    for (size_t i = 0; i < p.n; i++) {
        free(hashmap_remove(l->dedup, p.dead[i]));
        free(p.dead[i]);
    }
    free(p.dead);
}

static void free_dedup(void *arg, const char *key, void *value)
{
    (void)arg;
    (void)key;
    free(value);
}
struct qmgr_lookup *qmgr_lookup_new(struct qmgr *q)
{
    struct qmgr_lookup *l = xcalloc(1, sizeof *l);
    l->q = q;
    l->providers = ttl_cache_new(PROVIDERS_MAX, NULL, NULL);
    l->asking = hashmap_new();
    l->dedup = hashmap_new();
    if (q->cfg->dedup_enabled)
        records_recent_deliveries(q->cfg->state, (clock_now() - q->cfg->dedup_window) * 1000000,
                                  dedup_load_one, l);
    return l;
}

/* SIGHUP (qmgr_reload): the providers may be grouped differently now, and the names cached
 * here belong to the old config; every domain is looked up again at its next recipient. */
void qmgr_lookup_reload(struct qmgr_lookup *l)
{
    ttl_cache_clear(l->providers);
}

void qmgr_lookup_free(struct qmgr_lookup *l)
{
    if (!l) return;
    hashmap_foreach(l->dedup, free_dedup, NULL);
    hashmap_free(l->dedup);
    hashmap_foreach(l->asking, cancel_query, l->q);
    hashmap_free(l->asking);
    ttl_cache_free(l->providers);
    free(l);
}
