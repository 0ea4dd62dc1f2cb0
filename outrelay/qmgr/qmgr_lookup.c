/* queue_lookup.c - two lookups the queue manager makes before it schedules a recipient: the
 * provider of its domain (cached MX answers) and whether the same message was already delivered
 * to it (duplicate suppression). Owns both caches: created by queue_lookup_init(), freed by
 * queue_lookup_shutdown(), both called by queue.c. Never blocks: a lookup in progress answers
 * "wait". Loop thread only. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/hashmap.h"
#include "common/clock.h"
#include "common/util.h"
#include "qmgr/qmgr_internal.h"
#include "dns/dns.h"
#include "records/records.h"
#include "route/route.h"

/* --- providers of recipient domains ---------------------------------------------------------- */
/* The route stage needs to know which provider (Microsoft, Google...) a recipient domain belongs
 * to, which its MX hosts tell. Answers are cached per domain for the DNS TTL; while a lookup runs
 * the recipients wait (the scan timer picks them up again). Without configured providers every
 * domain is "other" and no lookup happens. */

struct provider_entry {
    const char *provider; /* NULL while the lookup runs */
    int64_t expires;
    struct dns_query *query;
    char *domain;
};

static struct hashmap *queue_providers;

static void provider_answer(void *arg, const struct dns_answer *a)
{
    struct provider_entry *p = arg;
    p->query = NULL;
    const char *hosts[32];
    size_t n = 0;
    for (size_t i = 0; a->status == DNS_OK && i < a->n && n < 32; i++)
        hosts[n++] = a->mx[i].host;
    if (a->status == DNS_NODATA) /* implicit MX: the domain itself */
        hosts[n++] = p->domain;
    p->provider = route_provider(hosts, n);
    unsigned ttl = a->status == DNS_OK ? a->ttl : 60;
    p->expires = clock_now() + (ttl < 60 ? 60 : ttl > 86400 ? 86400 : ttl);
    if (queue_timer) event_active(queue_timer, EV_TIMEOUT, 0); /* reschedule waiting mail */
}

/* The provider of a domain, or NULL while it is being looked up. */
const char *queue_provider_of(const char *domain)
{
    if (queue_cfg->n_providers == 0 || domain[0] == '[') return "other"; /* literal: no MX */
    char key[256];
    snprintf(key, sizeof key, "%s", domain);
    queue_lowercase(key);
    struct provider_entry *p = hashmap_get(queue_providers, key);
    if (p && p->provider && p->expires > clock_now()) return p->provider;
    if (!p) {
        p = xcalloc(1, sizeof *p);
        p->domain = xstrdup(key);
        hashmap_put(queue_providers, key, p);
    }
    if (!p->query) {
        if (p->provider && p->expires <= clock_now()) p->provider = NULL;
        p->query = dns_query(key, DNS_TYPE_MX, provider_answer, p);
    }
    return p->provider;
}

static void free_provider(void *arg, const char *key, void *value)
{
    (void)arg;
    (void)key;
    struct provider_entry *p = value;
    if (p->query) dns_cancel(p->query);
    free(p->domain);
    free(p);
}
/* --- duplicate suppression ------------------------------------------------------------------- */
/* During coexistence both platforms can hand us the same message (journaling, forwarding, both
 * answering). A (Message-ID, recipient) pair delivered within dedup.window is not sent again;
 * while one copy is being delivered, another waits for its outcome. The delivered pairs of the
 * window are reloaded from the records at start. */

struct dedup_entry {
    int64_t delivered_at;           /* 0: not delivered (yet) */
    const struct message *inflight; /* the copy being delivered now, or NULL */
};

static struct hashmap *queue_dedup;

static int dedup_key(const struct message *m, size_t i, char *out, size_t size)
{
    if (!queue_cfg->dedup_enabled || !m->env->message_id || !m->env->message_id[0]) return -1;
    snprintf(out, size, "%s\n%s", m->env->message_id, m->env->rcpts[i].address);
    queue_lowercase(out);
    return 0;
}

static void dedup_load_one(void *arg, const char *message_id, const char *recipient, int64_t ts_us)
{
    (void)arg;
    char key[1200];
    if (!message_id || !recipient) return;
    snprintf(key, sizeof key, "%s\n%s", message_id, recipient);
    queue_lowercase(key);
    struct dedup_entry *e = hashmap_get(queue_dedup, key);
    if (!e) {
        e = xcalloc(1, sizeof *e);
        hashmap_put(queue_dedup, key, e);
    }
    e->delivered_at = ts_us / 1000000;
}

enum dedup_verdict queue_dedup_check(struct message *m, size_t i, int64_t now)
{
    char key[1200];
    if (dedup_key(m, i, key, sizeof key) < 0) return DEDUP_SEND;
    struct dedup_entry *e = hashmap_get(queue_dedup, key);
    if (e && e->delivered_at && now - e->delivered_at < queue_cfg->dedup_window)
        return DEDUP_SUPPRESS;
    if (e && e->inflight && e->inflight != m) return DEDUP_WAIT;
    if (!e) {
        e = xcalloc(1, sizeof *e);
        hashmap_put(queue_dedup, key, e);
    }
    e->inflight = m;
    return DEDUP_SEND;
}

/* The outcome of a delivery attempt for recipient i of m. */
void queue_dedup_outcome(const struct message *m, size_t i, int delivered, int64_t now)
{
    char key[1200];
    if (dedup_key(m, i, key, sizeof key) < 0) return;
    struct dedup_entry *e = hashmap_get(queue_dedup, key);
    if (!e) return;
    if (delivered) e->delivered_at = now;
    if (e->inflight == m) e->inflight = NULL;
}

void queue_dedup_forget_message(const struct message *m)
{
    for (size_t i = 0; i < m->env->n_rcpts; i++)
        queue_dedup_outcome(m, i, 0, 0);
}

struct dedup_prune {
    int64_t now;
    char **dead;
    size_t n;
};

static void dedup_find_old(void *arg, const char *key, void *value)
{
    struct dedup_prune *p = arg;
    struct dedup_entry *e = value;
    if (!e->inflight && p->now - e->delivered_at >= queue_cfg->dedup_window) {
        p->dead = xrealloc(p->dead, (p->n + 1) * sizeof *p->dead);
        p->dead[p->n++] = xstrdup(key);
    }
}

void queue_dedup_prune(int64_t now)
{
    struct dedup_prune p = {now, NULL, 0};
    hashmap_foreach(queue_dedup, dedup_find_old, &p);
    for (size_t i = 0; i < p.n; i++) {
        free(hashmap_remove(queue_dedup, p.dead[i]));
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
void queue_lookup_init(const struct config *cfg)
{
    queue_providers = hashmap_new();
    queue_dedup = hashmap_new();
    if (cfg->dedup_enabled)
        records_recent_deliveries(cfg->state, (clock_now() - cfg->dedup_window) * 1000000,
                                  dedup_load_one, NULL);
}

/* SIGHUP (qmgr_reload): the providers may be grouped differently now, and the names cached
 * here belong to the old config; every domain is looked up again at its next recipient. */
static void expire_provider(void *arg, const char *key, void *value)
{
    (void)arg;
    (void)key;
    struct provider_entry *p = value;
    p->expires = 0;
}

void queue_lookup_reload(void)
{
    if (queue_providers) hashmap_foreach(queue_providers, expire_provider, NULL);
}

void queue_lookup_shutdown(void)
{
    if (queue_dedup) {
        hashmap_foreach(queue_dedup, free_dedup, NULL);
        hashmap_free(queue_dedup);
        queue_dedup = NULL;
    }
    if (queue_providers) {
        hashmap_foreach(queue_providers, free_provider, NULL);
        hashmap_free(queue_providers);
        queue_providers = NULL;
    }
}
