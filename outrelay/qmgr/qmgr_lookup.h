/* qmgr_lookup.h - INTERNAL to qmgr/: providers of recipient domains and duplicate suppression
 * (qmgr_lookup.c). Stands on qmgr_message.h only. Loop thread only. */
#ifndef OUTRELAY_QMGR_LOOKUP_H
#define OUTRELAY_QMGR_LOOKUP_H

#include "qmgr/qmgr_message.h"

struct qmgr_lookup *qmgr_lookup_new(struct qmgr *q);
void qmgr_lookup_free(struct qmgr_lookup *l);
/* After a reload: cached providers of domains are looked up again. */
void qmgr_lookup_reload(struct qmgr_lookup *l);
/* The provider of a domain, or NULL while it is being looked up; then waiter (unless NULL or
 * already waiting) waits for that answer alone, which makes it due again. */
const char *qmgr_provider_of(struct qmgr_lookup *l, const char *domain, struct message *waiter);
/* DEDUP_WAIT: another copy is being delivered, ask again in a moment; DEDUP_ASKING: our claim
 * is out to the cluster, whose answer wakes the message (as a provider lookup's does). */
enum dedup_verdict { DEDUP_SEND, DEDUP_SUPPRESS, DEDUP_WAIT, DEDUP_ASKING };
enum dedup_verdict qmgr_dedup_check(struct message *m, size_t i, int64_t now);
/* The outcome of a delivery attempt for recipient i of m. */
void qmgr_dedup_outcome(const struct message *m, size_t i, int delivered, int64_t now);
void qmgr_dedup_forget_message(const struct message *m);
void qmgr_dedup_prune(struct qmgr_lookup *l, int64_t now);

/* The cluster answered (a dedup claim, a cap reservation): the messages waiting on the queue's
 * own list (q->lookup_waiting) are scheduled again. */
void qmgr_lookup_answered(struct qmgr *q);

#endif
