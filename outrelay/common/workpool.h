/* workpool.h - a few worker threads for what would block or burn CPU on the event loop:
 * password hashing, DKIM verification and signing, SPF/DMARC evaluation. work() runs on a
 * worker thread and must not touch libevent objects; done() then runs on the loop thread.
 * Start, submit and stop from the loop thread. */
#ifndef OUTRELAY_WORKPOOL_H
#define OUTRELAY_WORKPOOL_H

#include <event2/event.h>

int workpool_start(struct event_base *base, int threads);
void workpool_submit(void (*work)(void *arg), void (*done)(void *arg), void *arg);
/* Finishes queued work, runs the remaining done() callbacks, joins the threads. */
void workpool_stop(void);

#endif
