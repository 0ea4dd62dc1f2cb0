/* handoff.c - see handoff.h. Items are appended to an array under a mutex; the loop swaps the
 * array out under the same mutex and delivers outside it, so a pusher never waits for a delivery.
 * The wake-up is an event made active from the pushing thread (libevent is set up for threads by
 * main with evthread_use_pthreads). */
#include "common/handoff.h"

#include <pthread.h>
#include <stdlib.h>

#include "common/util.h"

struct handoff {
    pthread_mutex_t lock;
    void **items; /* under lock */
    size_t n, size;
    struct event *wake;
    void (*deliver)(void *item, void *arg);
    void *arg;
};

static void wake_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    handoff_drain(arg);
}

struct handoff *handoff_new(struct event_base *base, void (*deliver)(void *item, void *arg),
                            void *arg)
{
    struct handoff *h = xcalloc(1, sizeof *h);
    h->wake = event_new(base, -1, 0, wake_cb, h);
    if (!h->wake) {
        free(h);
        return NULL;
    }
    pthread_mutex_init(&h->lock, NULL);
    h->deliver = deliver;
    h->arg = arg;
    return h;
}

void handoff_push(struct handoff *h, void *item)
{
    pthread_mutex_lock(&h->lock);
    if (h->n == h->size) {
        h->size = h->size ? 2 * h->size : 16;
        h->items = xrealloc(h->items, h->size * sizeof *h->items);
    }
    h->items[h->n++] = item;
    pthread_mutex_unlock(&h->lock);
    event_active(h->wake, EV_READ, 0);
}

void handoff_drain(struct handoff *h)
{
    pthread_mutex_lock(&h->lock);
    void **items = h->items;
    size_t n = h->n;
    h->items = NULL;
    h->n = h->size = 0;
    pthread_mutex_unlock(&h->lock);
    for (size_t i = 0; i < n; i++)
        h->deliver(items[i], h->arg);
    free(items);
}

void handoff_free(struct handoff *h)
{
    if (!h) return;
    event_free(h->wake);
    pthread_mutex_destroy(&h->lock);
    free(h->items);
    free(h);
}
