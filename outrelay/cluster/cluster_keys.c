/* cluster_keys.c - the names of the keys the instances share in Redis, the reconnection
 * backoff, and the queue of deliveries made while Redis was down (written to Redis when it
 * returns). Pure: no I/O, no clock; called by cluster.c, cluster_dedup.c and the unit tests. Loop
 * thread only. */
#include <ctype.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/cluster.h"
#include "common/util.h"

void cluster_key_dup(const char *prefix, const char *message_id, const char *recipient, char *out,
                     size_t size)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    for (int part = 0; part < 2; part++) {
        const char *s = part == 0 ? message_id : recipient;
        for (; s && *s; s++) {
            unsigned char c = (unsigned char)tolower((unsigned char)*s);
            EVP_DigestUpdate(md, &c, 1);
        }
        if (part == 0) EVP_DigestUpdate(md, "\n", 1);
    }
    EVP_DigestFinal_ex(md, digest, &n);
    EVP_MD_CTX_free(md);
    char hex[33];
    for (int i = 0; i < 16; i++)
        snprintf(hex + 2 * i, 3, "%02x", digest[i]);
    snprintf(out, size, "%s:dup:%s", prefix, hex);
}

void cluster_key_instance(const char *prefix, const char *name, char *out, size_t size)
{
    snprintf(out, size, "%s:instance:%s", prefix, name);
}

#define BACKOFF_FIRST_MS 200
#define BACKOFF_MAX_MS 30000

int64_t cluster_backoff(int64_t *step, unsigned random)
{
    *step = *step > 0 ? *step * 2 : BACKOFF_FIRST_MS;
    if (*step > BACKOFF_MAX_MS) *step = BACKOFF_MAX_MS;
    return *step / 2 + (int64_t)(random % (unsigned)(*step / 2 + 1));
}

struct reconcile_entry {
    char *key;
    int64_t at, until;
};

struct cluster_reconcile {
    struct reconcile_entry *ring;
    size_t max, head, n, dropped;
};

struct cluster_reconcile *cluster_reconcile_new(size_t max)
{
    struct cluster_reconcile *q = xcalloc(1, sizeof *q);
    q->max = max ? max : 1;
    q->ring = xcalloc(q->max, sizeof *q->ring);
    return q;
}

void cluster_reconcile_free(struct cluster_reconcile *q)
{
    if (!q) return;
    for (size_t i = 0; i < q->n; i++)
        free(q->ring[(q->head + i) % q->max].key);
    free(q->ring);
    free(q);
}

void cluster_reconcile_push(struct cluster_reconcile *q, const char *key, int64_t at, int64_t until)
{
    if (q->n == q->max) { /* full: the oldest goes, it has the least of its window left */
        free(q->ring[q->head].key);
        q->head = (q->head + 1) % q->max;
        q->n--;
        q->dropped++;
    }
    struct reconcile_entry *e = &q->ring[(q->head + q->n) % q->max];
    e->key = xstrdup(key);
    e->at = at;
    e->until = until;
    q->n++;
}

size_t cluster_reconcile_count(const struct cluster_reconcile *q)
{
    return q->n;
}

size_t cluster_reconcile_dropped(const struct cluster_reconcile *q)
{
    return q->dropped;
}

size_t cluster_reconcile_take(struct cluster_reconcile *q, int64_t now,
                              void (*fn)(void *arg, const char *key, int64_t at, int64_t until),
                              void *arg)
{
    /* detach first: fn may push entries back (a write that failed) */
    size_t n = q->n, head = q->head, max = q->max, given = 0;
    struct reconcile_entry *ring = q->ring;
    q->ring = xcalloc(q->max, sizeof *q->ring);
    q->head = q->n = 0;
    for (size_t i = 0; i < n; i++) {
        struct reconcile_entry *e = &ring[(head + i) % max];
        if (e->until > now) {
            fn(arg, e->key, e->at, e->until);
            given++;
        }
        free(e->key);
    }
    free(ring);
    return given;
}
