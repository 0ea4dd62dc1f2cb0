/* workpool.c - see workpool.h. Each pool: one job queue under a mutex and a condition its
 * workers wait on; finished jobs go back to the loop thread through a hand-off
 * (common/handoff.h). Called by ingress (password checks, DKIM checks), the signing and
 * checking stages, sts/ (its own pool) and main (the shared pool's start and stop). */
#include "common/workpool.h"

#include <pthread.h>
#include <stdlib.h>

#include "common/handoff.h"
#include "common/util.h"

struct work_item {
    struct work_item *next;
    void (*work)(void *);
    void (*done)(void *);
    void *arg;
};

struct workpool {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    struct work_item *todo, **todo_tail;
    pthread_t *threads;
    int n_threads, stopping;
    struct handoff *finished;
};

static struct workpool *shared_pool;

static void *worker(void *arg)
{
    struct workpool *pool = arg;
    for (;;) {
        pthread_mutex_lock(&pool->lock);
        while (!pool->todo && !pool->stopping)
            pthread_cond_wait(&pool->wake, &pool->lock);
        struct work_item *j = pool->todo;
        if (!j) {
            pthread_mutex_unlock(&pool->lock);
            return NULL;
        }
        pool->todo = j->next;
        if (!pool->todo) pool->todo_tail = &pool->todo;
        pthread_mutex_unlock(&pool->lock);
        j->work(j->arg);
        handoff_push(pool->finished, j);
    }
}

static void run_finished(void *item, void *unused)
{
    (void)unused;
    struct work_item *j = item;
    if (j->done) j->done(j->arg);
    free(j);
}

struct workpool *workpool_new(struct event_base *base, int threads)
{
    struct workpool *pool = xcalloc(1, sizeof *pool);
    pthread_mutex_init(&pool->lock, NULL);
    pthread_cond_init(&pool->wake, NULL);
    pool->todo_tail = &pool->todo;
    pool->finished = handoff_new(base, run_finished, NULL);
    if (!pool->finished) {
        workpool_free(pool);
        return NULL;
    }
    pool->threads = xcalloc((size_t)threads, sizeof *pool->threads);
    for (; pool->n_threads < threads; pool->n_threads++)
        if (pthread_create(&pool->threads[pool->n_threads], NULL, worker, pool) != 0) {
            workpool_free(pool);
            return NULL;
        }
    return pool;
}

void workpool_submit_to(struct workpool *pool, void (*work)(void *), void (*done)(void *),
                        void *arg)
{
    struct work_item *j = xcalloc(1, sizeof *j);
    j->work = work;
    j->done = done;
    j->arg = arg;
    pthread_mutex_lock(&pool->lock);
    *pool->todo_tail = j;
    pool->todo_tail = &j->next;
    pthread_cond_signal(&pool->wake);
    pthread_mutex_unlock(&pool->lock);
}

void workpool_free(struct workpool *pool)
{
    if (!pool) return;
    pthread_mutex_lock(&pool->lock);
    pool->stopping = 1;
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->lock);
    for (int i = 0; i < pool->n_threads; i++)
        pthread_join(pool->threads[i], NULL);
    if (pool->finished) {
        handoff_drain(pool->finished);
        handoff_free(pool->finished);
    }
    free(pool->threads);
    pthread_mutex_destroy(&pool->lock);
    pthread_cond_destroy(&pool->wake);
    free(pool);
}

int workpool_start(struct event_base *base, int threads)
{
    shared_pool = workpool_new(base, threads);
    return shared_pool ? 0 : -1;
}

void workpool_submit(void (*work)(void *), void (*done)(void *), void *arg)
{
    workpool_submit_to(shared_pool, work, done, arg);
}

void workpool_stop(void)
{
    workpool_free(shared_pool);
    shared_pool = NULL;
}
