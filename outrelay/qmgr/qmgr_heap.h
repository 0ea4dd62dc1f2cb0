/* qmgr_heap.h - the queue manager's timer heap: a binary min-heap of next-try times, so the
 * queue wakes at the earliest due time and touches only what is due instead of walking every
 * message. Intrusive: the caller embeds a struct qmgr_timer in what it schedules and owns it;
 * the heap only holds pointers and never frees them. Pure (no I/O, no clock); loop thread only. */
#ifndef OUTRELAY_QMGR_HEAP_H
#define OUTRELAY_QMGR_HEAP_H

#include <stddef.h>
#include <stdint.h>

struct qmgr_timer {
    int64_t at;  /* unix seconds */
    size_t slot; /* position in the heap + 1; 0 while not in it */
};

struct qmgr_heap {
    struct qmgr_timer **v;
    size_t n, cap;
};

void qmgr_heap_init(struct qmgr_heap *h);
/* Frees the array; the timers stay with their owners (and are marked not in the heap). */
void qmgr_heap_free(struct qmgr_heap *h);
/* Puts t in the heap at `at`, or moves it there when it is in already. */
void qmgr_heap_set(struct qmgr_heap *h, struct qmgr_timer *t, int64_t at);
/* Takes t out; nothing happens when it is not in. */
void qmgr_heap_remove(struct qmgr_heap *h, struct qmgr_timer *t);
/* The earliest timer, or NULL when the heap is empty. */
struct qmgr_timer *qmgr_heap_top(const struct qmgr_heap *h);
/* Takes out and returns the earliest timer if it is due at now, else NULL. */
struct qmgr_timer *qmgr_heap_pop_due(struct qmgr_heap *h, int64_t now);
size_t qmgr_heap_count(const struct qmgr_heap *h);

#endif
