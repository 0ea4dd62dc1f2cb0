/* ttl_cache.c - see ttl_cache.h. A hashmap under one mutex; entries carry their expiry and are
 * dropped lazily (on lookup when expired, in bulk when the cache is full). Never blocks beyond its
 * own lock and never calls out except to free_value and the caller's copy. */
#include "common/ttl_cache.h"

#include <pthread.h>
#include <stdlib.h>

#include "common/clock.h"
#include "common/hashmap.h"
#include "common/util.h"

struct ttl_entry {
    int64_t expires;
    void *value;
};

struct ttl_cache {
    pthread_mutex_t lock;
    struct hashmap *map; /* key -> struct ttl_entry */
    size_t max_entries;
    void (*free_value)(void *);
    int64_t (*now)(void);
};

struct ttl_cache *ttl_cache_new(size_t max_entries, void (*free_value)(void *value),
                                int64_t (*now)(void))
{
    struct ttl_cache *c = xcalloc(1, sizeof *c);
    pthread_mutex_init(&c->lock, NULL);
    c->map = hashmap_new();
    c->max_entries = max_entries ? max_entries : 1;
    c->free_value = free_value;
    c->now = now ? now : clock_now;
    return c;
}

static void entry_free(const struct ttl_cache *c, struct ttl_entry *e)
{
    if (!e) return;
    if (c->free_value) c->free_value(e->value);
    free(e);
}

struct drop_scan {
    const struct ttl_cache *cache;
    int64_t now; /* INT64_MAX: drop everything */
};

static int drop_expired(void *arg, const char *key, void *value)
{
    (void)key;
    const struct drop_scan *scan = arg;
    struct ttl_entry *e = value;
    if (e->expires > scan->now) return 0;
    entry_free(scan->cache, e);
    return 1;
}

static void drop_locked(struct ttl_cache *c, int64_t now)
{
    struct drop_scan scan = {c, now};
    hashmap_remove_if(c->map, drop_expired, &scan);
}

void ttl_cache_free(struct ttl_cache *c)
{
    if (!c) return;
    drop_locked(c, INT64_MAX);
    hashmap_free(c->map);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

int64_t ttl_cache_get(struct ttl_cache *c, const char *key,
                      void (*copy)(const void *value, void *out), void *out)
{
    int64_t now = c->now(), left = 0;
    pthread_mutex_lock(&c->lock);
    struct ttl_entry *e = hashmap_get(c->map, key);
    if (e && e->expires > now) {
        if (copy) copy(e->value, out);
        left = e->expires - now;
    } else if (e) {
        entry_free(c, hashmap_remove(c->map, key));
    }
    pthread_mutex_unlock(&c->lock);
    return left;
}

void ttl_cache_put(struct ttl_cache *c, const char *key, void *value, int64_t ttl)
{
    if (ttl <= 0) {
        if (c->free_value) c->free_value(value);
        return;
    }
    struct ttl_entry *e = xmalloc(sizeof *e);
    int64_t now = c->now();
    e->expires = now + ttl;
    e->value = value;
    pthread_mutex_lock(&c->lock);
    if (hashmap_count(c->map) >= c->max_entries && !hashmap_get(c->map, key)) {
        drop_locked(c, now);
        if (hashmap_count(c->map) >= c->max_entries) drop_locked(c, INT64_MAX);
    }
    entry_free(c, hashmap_put(c->map, key, e));
    pthread_mutex_unlock(&c->lock);
}

void ttl_cache_clear(struct ttl_cache *c)
{
    pthread_mutex_lock(&c->lock);
    drop_locked(c, INT64_MAX);
    pthread_mutex_unlock(&c->lock);
}

size_t ttl_cache_count(struct ttl_cache *c)
{
    pthread_mutex_lock(&c->lock);
    size_t n = hashmap_count(c->map);
    pthread_mutex_unlock(&c->lock);
    return n;
}
