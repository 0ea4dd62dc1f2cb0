/* hashmap.c - see hashmap.h. FNV-1a hashing, separate chaining. */
#include "common/hashmap.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

struct hashmap_entry {
    struct hashmap_entry *next;
    uint64_t hash;
    void *value;
    char key[];
};

struct hashmap {
    struct hashmap_entry **buckets;
    size_t n_buckets;
    size_t count;
};

static uint64_t hash_key(const char *key)
{
    uint64_t h = 1469598103934665603ULL;
    for (const unsigned char *p = (const unsigned char *)key; *p; p++) {
        h ^= *p;
        h *= 1099511628211ULL;
    }
    return h;
}

struct hashmap *hashmap_new(void)
{
    struct hashmap *m = xcalloc(1, sizeof *m);
    m->n_buckets = 64;
    m->buckets = xcalloc(m->n_buckets, sizeof *m->buckets);
    return m;
}

struct value_freer {
    void (*free_value)(void *value);
};

static int free_every_value(void *arg, const char *key, void *value)
{
    (void)key;
    const struct value_freer *f = arg;
    f->free_value(value);
    return 1;
}

void hashmap_free_values(struct hashmap *m, void (*free_value)(void *value))
{
    if (!m) return;
    struct value_freer f = {free_value};
    hashmap_remove_if(m, free_every_value, &f);
    hashmap_free(m);
}

void hashmap_free(struct hashmap *m)
{
    if (!m) return;
    for (size_t i = 0; i < m->n_buckets; i++) {
        struct hashmap_entry *e = m->buckets[i];
        while (e) {
            struct hashmap_entry *next = e->next;
            free(e);
            e = next;
        }
    }
    free(m->buckets);
    free(m);
}

static void grow(struct hashmap *m)
{
    size_t n = m->n_buckets * 2;
    struct hashmap_entry **b = xcalloc(n, sizeof *b);
    for (size_t i = 0; i < m->n_buckets; i++) {
        struct hashmap_entry *e = m->buckets[i];
        while (e) {
            struct hashmap_entry *next = e->next;
            e->next = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
            e = next;
        }
    }
    free(m->buckets);
    m->buckets = b;
    m->n_buckets = n;
}

void *hashmap_put(struct hashmap *m, const char *key, void *value)
{
    uint64_t h = hash_key(key);
    for (struct hashmap_entry *e = m->buckets[h & (m->n_buckets - 1)]; e; e = e->next) {
        if (e->hash == h && strcmp(e->key, key) == 0) {
            void *old = e->value;
            e->value = value;
            return old;
        }
    }
    if (m->count + 1 > m->n_buckets) grow(m);
    size_t klen = strlen(key);
    struct hashmap_entry *e = xmalloc(sizeof *e + klen + 1);
    memcpy(e->key, key, klen + 1);
    e->hash = h;
    e->value = value;
    e->next = m->buckets[h & (m->n_buckets - 1)];
    m->buckets[h & (m->n_buckets - 1)] = e;
    m->count++;
    return NULL;
}

void *hashmap_get(const struct hashmap *m, const char *key)
{
    uint64_t h = hash_key(key);
    for (struct hashmap_entry *e = m->buckets[h & (m->n_buckets - 1)]; e; e = e->next)
        if (e->hash == h && strcmp(e->key, key) == 0) return e->value;
    return NULL;
}

void *hashmap_remove(struct hashmap *m, const char *key)
{
    uint64_t h = hash_key(key);
    struct hashmap_entry **pp = &m->buckets[h & (m->n_buckets - 1)];
    for (; *pp; pp = &(*pp)->next) {
        struct hashmap_entry *e = *pp;
        if (e->hash == h && strcmp(e->key, key) == 0) {
            void *v = e->value;
            *pp = e->next;
            free(e);
            m->count--;
            return v;
        }
    }
    return NULL;
}

void hashmap_remove_if(struct hashmap *m, int (*drop)(void *, const char *, void *), void *arg)
{
    for (size_t i = 0; i < m->n_buckets; i++) {
        struct hashmap_entry **pp = &m->buckets[i];
        while (*pp) {
            struct hashmap_entry *e = *pp;
            if (drop(arg, e->key, e->value)) {
                *pp = e->next;
                free(e);
                m->count--;
            } else {
                pp = &e->next;
            }
        }
    }
}

size_t hashmap_count(const struct hashmap *m)
{
    return m->count;
}

void hashmap_foreach(const struct hashmap *m, void (*fn)(void *, const char *, void *), void *arg)
{
    for (size_t i = 0; i < m->n_buckets; i++)
        for (struct hashmap_entry *e = m->buckets[i]; e; e = e->next)
            fn(arg, e->key, e->value);
}
