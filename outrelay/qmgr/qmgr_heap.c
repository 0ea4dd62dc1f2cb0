/* qmgr_heap.c - the binary min-heap of next-try times behind qmgr_heap.h. Each timer knows its
 * slot, so re-keying and removal are O(log n) without a search. Used by qmgr.c only; pure, loop
 * thread only. */
#include "qmgr/qmgr_heap.h"

#include <stdlib.h>

#include "common/util.h"

void qmgr_heap_init(struct qmgr_heap *h)
{
    h->v = NULL;
    h->n = h->cap = 0;
}

void qmgr_heap_free(struct qmgr_heap *h)
{
    for (size_t i = 0; i < h->n; i++)
        h->v[i]->slot = 0;
    free(h->v);
    qmgr_heap_init(h);
}

static void place(struct qmgr_heap *h, size_t i, struct qmgr_timer *t)
{
    h->v[i] = t;
    t->slot = i + 1;
}

/* Moves the timer at i towards the root while it is earlier than its parent. */
static void sift_up(struct qmgr_heap *h, size_t i)
{
    struct qmgr_timer *t = h->v[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (h->v[parent]->at <= t->at) break;
        place(h, i, h->v[parent]);
        i = parent;
    }
    place(h, i, t);
}

/* Moves the timer at i towards the leaves while a child is earlier. */
static void sift_down(struct qmgr_heap *h, size_t i)
{
    struct qmgr_timer *t = h->v[i];
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= h->n) break;
        if (child + 1 < h->n && h->v[child + 1]->at < h->v[child]->at) child++;
        if (t->at <= h->v[child]->at) break;
        place(h, i, h->v[child]);
        i = child;
    }
    place(h, i, t);
}

void qmgr_heap_set(struct qmgr_heap *h, struct qmgr_timer *t, int64_t at)
{
    if (t->slot) {
        int64_t was = t->at;
        t->at = at;
        if (at < was)
            sift_up(h, t->slot - 1);
        else if (at > was)
            sift_down(h, t->slot - 1);
        return;
    }
    if (h->n == h->cap) {
        h->cap = h->cap ? 2 * h->cap : 64;
        h->v = xrealloc(h->v, h->cap * sizeof *h->v);
    }
    t->at = at;
    place(h, h->n++, t);
    sift_up(h, h->n - 1);
}

void qmgr_heap_remove(struct qmgr_heap *h, struct qmgr_timer *t)
{
    if (!t->slot) return;
    size_t i = t->slot - 1;
    t->slot = 0;
    struct qmgr_timer *last = h->v[--h->n];
    if (i == h->n) return;
    place(h, i, last);
    /* the last leaf may belong above or below the hole */
    if (i > 0 && h->v[(i - 1) / 2]->at > last->at)
        sift_up(h, i);
    else
        sift_down(h, i);
}

struct qmgr_timer *qmgr_heap_top(const struct qmgr_heap *h)
{
    return h->n ? h->v[0] : NULL;
}

struct qmgr_timer *qmgr_heap_pop_due(struct qmgr_heap *h, int64_t now)
{
    struct qmgr_timer *t = qmgr_heap_top(h);
    if (!t || t->at > now) return NULL;
    qmgr_heap_remove(h, t);
    return t;
}

size_t qmgr_heap_count(const struct qmgr_heap *h)
{
    return h->n;
}
