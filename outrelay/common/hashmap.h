/* hashmap.h - string-keyed hash map (chained, grows by doubling). Keys are copied; values are
 * caller-owned pointers. Not thread-safe: each map belongs to one thread. */
#ifndef OUTRELAY_HASHMAP_H
#define OUTRELAY_HASHMAP_H

#include <stddef.h>

struct hashmap;

struct hashmap *hashmap_new(void);
/* Frees the map and its keys; values are left to the caller (iterate first if needed). */
void hashmap_free(struct hashmap *map);
/* Frees the map, its keys and every value with free_value (e.g. free). NULL map is fine. */
void hashmap_free_values(struct hashmap *map, void (*free_value)(void *value));
/* Inserts or replaces; returns the previous value or NULL. */
void *hashmap_put(struct hashmap *map, const char *key, void *value);
void *hashmap_get(const struct hashmap *map, const char *key);
/* Removes the key; returns its value or NULL. */
void *hashmap_remove(struct hashmap *map, const char *key);
size_t hashmap_count(const struct hashmap *map);
/* Removes every entry for which drop(arg, key, value) returns 1; drop owns (may free) the value
 * of an entry it drops. */
void hashmap_remove_if(struct hashmap *map, int (*drop)(void *arg, const char *key, void *value),
                       void *arg);
/* Calls fn for every entry; fn must not change the map. */
void hashmap_foreach(const struct hashmap *map, void (*fn)(void *arg, const char *key, void *value),
                     void *arg);

#endif
