/* workpool.c - see workpool.h. One job queue under a mutex and a condition the workers wait on;
 * finished jobs go back to the loop thread through a hand-off (common/handoff.h). Called by
 * ingress (password checks, DKIM checks), the signing and checking stages and main (start/stop). */
#include "common/workpool.h"

#include <pthread.h>
#include <stdlib.h>

#include "common/handoff.h"
#include "common/util.h"

struct job {
    struct job *next;
    void (*work)(void *);
    void (*done)(void *);
    void *arg;
};

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pool_wake = PTHREAD_COND_INITIALIZER;
static struct job *todo, **todo_tail = &todo;
static pthread_t *pool_threads;
static int pool_n, pool_stopping;
static struct handoff *pool_finished;

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
        handoff_push(pool_finished, j);
    }
}

static void run_finished(void *item, void *unused)
{
    (void)unused;
    struct job *j = item;
    if (j->done) j->done(j->arg);
    free(j);
}

int workpool_start(struct event_base *base, int threads)
{
    pool_finished = handoff_new(base, run_finished, NULL);
    if (!pool_finished) return -1;
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
    handoff_drain(pool_finished);
    free(pool_threads);
    pool_threads = NULL;
    handoff_free(pool_finished);
    pool_finished = NULL;
}
