/* ttl_cache.h - the one cache of answers that expire: string key -> value, each with its own
 * lifetime, at most max_entries of them, read through an injectable clock. Owns its values (frees
 * them with the free function it was made with). Locked inside: any thread may call any function
 * but ttl_cache_free. Used by check (SPF results, DMARC and DKIM-key TXT records) and the queue
 * manager (the provider of a recipient domain). */
#ifndef OUTRELAY_TTL_CACHE_H
#define OUTRELAY_TTL_CACHE_H

#include <stddef.h>
#include <stdint.h>

struct ttl_cache;

/* free_value may be NULL (values are not freed); now NULL: clock_now (seconds). */
struct ttl_cache *ttl_cache_new(size_t max_entries, void (*free_value)(void *value),
                                int64_t (*now)(void));
/* Frees every value and the cache; NULL is fine. No other thread may be using it. */
void ttl_cache_free(struct ttl_cache *c);

/* A live entry for key: calls copy(value, out) under the cache's lock (the value stays the
 * cache's; copy must not call back into the cache) and returns the seconds it still lives (>= 1).
 * 0 when there is none or it expired. */
int64_t ttl_cache_get(struct ttl_cache *c, const char *key,
                      void (*copy)(const void *value, void *out), void *out);
/* Stores value for ttl seconds, replacing (and freeing) an older one; the cache owns value from
 * now on. ttl <= 0 stores nothing and frees value. When the cache is full, the expired entries
 * go first and, when none had expired, all of them. */
void ttl_cache_put(struct ttl_cache *c, const char *key, void *value, int64_t ttl);
/* Drops every entry (the operator changed what the answers depend on). */
void ttl_cache_clear(struct ttl_cache *c);
/* Entries held, expired ones included until they are dropped. */
size_t ttl_cache_count(struct ttl_cache *c);

#endif
