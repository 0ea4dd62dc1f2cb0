/* workpool.c - see workpool.h. One job queue, one completion queue, both under one mutex; the
 * completion queue is drained on the loop thread by an event made active from the workers. */
#include "common/workpool.h"

#include <pthread.h>
#include <stdlib.h>

#include "common/util.h"

struct job {
    struct job *next;
    void (*work)(void *);
    void (*done)(void *);
    void *arg;
};

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pool_wake = PTHREAD_COND_INITIALIZER;
static struct job *todo, **todo_tail = &todo, *finished, **finished_tail = &finished;
static pthread_t *pool_threads;
static int pool_n, pool_stopping;
static struct event *pool_done_ev;

static void *worker(void *unused)
{
    (void)unused;
    for (;;) {
        pthread_mutex_lock(&pool_lock);
        while (!todo && !pool_stopping)
            pthread_cond_wait(&pool_wake, &pool_lock);
        struct job *j = todo;
        if (!j) {
            pthread_mutex_unlock(&pool_lock);
            return NULL;
        }
        todo = j->next;
        if (!todo) todo_tail = &todo;
        pthread_mutex_unlock(&pool_lock);
        j->work(j->arg);
        j->next = NULL;
        pthread_mutex_lock(&pool_lock);
        *finished_tail = j;
        finished_tail = &j->next;
        pthread_mutex_unlock(&pool_lock);
        event_active(pool_done_ev, EV_READ, 0);
    }
}

static void run_finished(evutil_socket_t fd, short what, void *unused)
{
    (void)fd;
    (void)what;
    (void)unused;
    pthread_mutex_lock(&pool_lock);
    struct job *list = finished;
    finished = NULL;
    finished_tail = &finished;
    pthread_mutex_unlock(&pool_lock);
    while (list) {
        struct job *j = list;
        list = j->next;
        if (j->done) j->done(j->arg);
        free(j);
    }
}

int workpool_start(struct event_base *base, int threads)
{
    pool_done_ev = event_new(base, -1, 0, run_finished, NULL);
    pool_threads = xcalloc((size_t)threads, sizeof *pool_threads);
    for (pool_n = 0; pool_n < threads; pool_n++)
        if (pthread_create(&pool_threads[pool_n], NULL, worker, NULL) != 0) return -1;
    return 0;
}

void workpool_submit(void (*work)(void *), void (*done)(void *), void *arg)
{
    struct job *j = xcalloc(1, sizeof *j);
    j->work = work;
    j->done = done;
    j->arg = arg;
    pthread_mutex_lock(&pool_lock);
    *todo_tail = j;
    todo_tail = &j->next;
    pthread_cond_signal(&pool_wake);
    pthread_mutex_unlock(&pool_lock);
}

void workpool_stop(void)
{
    if (!pool_threads) return;
    pthread_mutex_lock(&pool_lock);
    pool_stopping = 1;
    pthread_cond_broadcast(&pool_wake);
    pthread_mutex_unlock(&pool_lock);
    for (int i = 0; i < pool_n; i++)
        pthread_join(pool_threads[i], NULL);
    run_finished(-1, 0, NULL);
    free(pool_threads);
    pool_threads = NULL;
    event_free(pool_done_ev);
    pool_done_ev = NULL;
}
