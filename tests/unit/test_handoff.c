/* test_handoff.c - unit tests for outrelay/common/handoff.c: items pushed from several threads
 * all reach the loop thread, in push order per thread, and a drain delivers without the loop. */
#include <event2/event.h>
#include <event2/thread.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "common/handoff.h"

#define THREADS 4
#define PER_THREAD 500

struct seen {
    pthread_t loop;
    int total;
    int last[THREADS];
    int out_of_order, wrong_thread;
    struct event_base *base;
};

struct item {
    int thread, seq;
};

static void deliver(void *arg_item, void *arg)
{
    struct item *it = arg_item;
    struct seen *s = arg;
    if (!pthread_equal(pthread_self(), s->loop)) s->wrong_thread++;
    if (it->seq != s->last[it->thread] + 1) s->out_of_order++;
    s->last[it->thread] = it->seq;
    free(it);
    if (++s->total == THREADS * PER_THREAD) event_base_loopbreak(s->base);
}

static void give_up(evutil_socket_t fd, short what, void *base)
{
    (void)fd;
    (void)what;
    event_base_loopbreak(base);
}

struct pusher {
    struct handoff *h;
    int thread;
};

static void *push_many(void *arg)
{
    struct pusher *p = arg;
    for (int i = 1; i <= PER_THREAD; i++) {
        struct item *it = malloc(sizeof *it);
        it->thread = p->thread;
        it->seq = i;
        handoff_push(p->h, it);
    }
    return NULL;
}

static void test_threads_to_loop(void **state)
{
    (void)state;
    evthread_use_pthreads();
    struct seen s = {.loop = pthread_self()};
    s.base = event_base_new();
    struct handoff *h = handoff_new(s.base, deliver, &s);
    assert_non_null(h);
    pthread_t t[THREADS];
    struct pusher p[THREADS];
    for (int i = 0; i < THREADS; i++) {
        p[i] = (struct pusher){h, i};
        assert_int_equal(pthread_create(&t[i], NULL, push_many, &p[i]), 0);
    }
    struct timeval limit = {10, 0};
    struct event *timeout = evtimer_new(s.base, give_up, s.base);
    evtimer_add(timeout, &limit);
    while (s.total < THREADS * PER_THREAD && !event_base_got_break(s.base))
        event_base_loop(s.base, EVLOOP_ONCE);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    handoff_drain(h); /* anything pushed after the last wake-up */
    assert_int_equal(s.total, THREADS * PER_THREAD);
    assert_int_equal(s.out_of_order, 0);
    assert_int_equal(s.wrong_thread, 0);
    event_free(timeout);
    handoff_free(h);
    event_base_free(s.base);
}

static void test_drain_without_loop(void **state)
{
    (void)state;
    struct seen s = {.loop = pthread_self()};
    s.base = event_base_new();
    struct handoff *h = handoff_new(s.base, deliver, &s);
    struct pusher p = {h, 0};
    push_many(&p);
    assert_int_equal(s.total, 0); /* nothing runs on the pushing call */
    handoff_drain(h);
    assert_int_equal(s.total, PER_THREAD);
    assert_int_equal(s.out_of_order, 0);
    handoff_drain(h); /* empty: nothing happens */
    assert_int_equal(s.total, PER_THREAD);
    handoff_free(h);
    event_base_free(s.base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_threads_to_loop),
        cmocka_unit_test(test_drain_without_loop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
