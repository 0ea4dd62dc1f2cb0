/* handoff.h - the one way a worker thread hands something to the event loop: any thread pushes an
 * item, the loop thread is woken and takes every queued item, in push order, through the deliver
 * function the hand-off was made with. Owns only its queue; items stay the caller's. Used by the
 * workpool (finished jobs); deliver runs on the loop and never on the pushing thread. */
#ifndef OUTRELAY_HANDOFF_H
#define OUTRELAY_HANDOFF_H

#include <event2/event.h>

struct handoff;

/* deliver(item, arg) runs on base's loop thread. Returns NULL when libevent cannot make the
 * wake-up event. */
struct handoff *handoff_new(struct event_base *base, void (*deliver)(void *item, void *arg),
                            void *arg);
/* Any thread: queues item and wakes the loop. */
void handoff_push(struct handoff *h, void *item);
/* Loop thread: delivers what is queued now, without waiting for the wake-up (shutdown). */
void handoff_drain(struct handoff *h);
/* Loop thread, once no thread pushes any more: drops undelivered items and frees h. */
void handoff_free(struct handoff *h);

#endif
