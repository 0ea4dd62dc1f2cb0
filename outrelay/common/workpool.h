/* workpool.h - worker threads for what would block or burn CPU on the event loop: password
 * hashing, DKIM verification and signing, SPF/DMARC evaluation (the shared pool, started by
 * main), and slow network fetches that must not hold those back (a pool of their own, e.g. the
 * MTA-STS policy fetches of sts/). work() runs on a worker thread and must not touch libevent
 * objects; done() then runs on the loop thread. Create, submit and stop from the loop thread. */
#ifndef OUTRELAY_WORKPOOL_H
#define OUTRELAY_WORKPOOL_H

#include <event2/event.h>

struct workpool;

/* A pool of threads whose done() callbacks run on base's loop; NULL when a thread cannot be
 * started. */
struct workpool *workpool_new(struct event_base *base, int threads);
void workpool_submit_to(struct workpool *pool, void (*work)(void *arg), void (*done)(void *arg),
                        void *arg);
/* Finishes queued work, runs the remaining done() callbacks, joins the threads, frees pool. */
void workpool_free(struct workpool *pool);

/* The shared pool. */
int workpool_start(struct event_base *base, int threads);
void workpool_submit(void (*work)(void *arg), void (*done)(void *arg), void *arg);
void workpool_stop(void);

#endif
