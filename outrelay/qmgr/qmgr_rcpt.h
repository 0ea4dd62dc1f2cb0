/* qmgr_rcpt.h - INTERNAL to qmgr/: every change of a recipient's or a message's state with its
 * record, spool mark and DSN (qmgr_rcpt.c). Stands on qmgr_message.h only. Loop thread only. */
#ifndef OUTRELAY_QMGR_RCPT_H
#define OUTRELAY_QMGR_RCPT_H

#include "qmgr/qmgr_message.h"

/* How a recipient ends. mark: SPOOL_MARK_DELIVERED, _BOUNCED or _EXPIRED. event defaults to
 * "delivered", "bounced" or "expired" by the mark; detail of an expiry to the lifetime. */
struct rcpt_outcome {
    enum spool_mark mark;
    enum record_type type; /* 0: by the mark (delivered, bounced, expired) */
    const char *detail;
    const struct rcpt_result *res;
    const struct dest *dest;
    const struct attempt_info *info;
};
/* Recipients that failed (bounced or expired) and get one DSN together. */
struct rcpt_batch {
    size_t *idx;
    size_t n;
};
/* The one way a recipient becomes final: state, status, record, then its spool mark (delivered)
 * or a DSN first (bounced, expired; into batch when given, else at once). */
void qmgr_rcpt_finalize(struct message *m, size_t i, const struct rcpt_outcome *o,
                        struct rcpt_batch *batch);
/* A copy (to free) of n recipient indexes, for a job or a DSN that outlives the caller. */
size_t *qmgr_rcpt_indexes_copy(const size_t *idx, size_t n);
/* Sends the batch's DSN and empties it. */
void qmgr_rcpt_batch_flush(struct message *m, struct rcpt_batch *batch);
/* Once delivery.delay_warning has passed (qmgr_delay_warning_at), queues ONE delay warning to the
 * sender for the recipients still open; the whole-message mark W follows its commit, so a
 * restart does not warn again (a crash in between may warn twice, never lose the mail). */
void qmgr_rcpt_delay_warning(struct message *m, int64_t now);
/* A recipient left final by the spool (recovery). */
void qmgr_rcpt_recovered(struct message *m, size_t i, char mark);
/* An open recipient's earlier run (recovery, from records.db): attempts so far and when its
 * next try was due (unix seconds; in the past or 0: due now). Before the message is
 * scheduled. */
void qmgr_rcpt_resumed(struct message *m, size_t i, int attempts, int64_t due);
/* An attempt for the recipient ended with res (counted, reply kept for list and DSNs). */
void qmgr_rcpt_attempted(struct message *m, size_t i, const struct rcpt_result *res,
                         const struct attempt_info *info);
/* A temporary failure: the recipient waits the retry interval (at least until not_before);
 * o says what to record. */
void qmgr_rcpt_retry_later(struct message *m, size_t i, const struct rcpt_outcome *o,
                           int64_t not_before, int64_t now);
/* The wait before try attempts+1 (delivery.retry; its last step repeats). */
int64_t qmgr_retry_delay(const struct qmgr *q, int attempts);
/* A recipient is in a job now. */
void qmgr_rcpt_inflight(struct message *m, size_t i);
/* A recipient waits (again) until `when`. */
void qmgr_rcpt_defer(struct message *m, size_t i, int64_t when);
/* An attempt was deleted by the operator while out: final, no mark of its own. */
void qmgr_rcpt_drop(struct message *m, size_t i);
void qmgr_rcpt_record_reply(struct rcpt *r, const struct rcpt_result *res,
                            const struct attempt_info *info);
/* rcpt SIZE_MAX: a mark for the whole message. */
void qmgr_submit_mark(struct message *m, size_t rcpt, enum spool_mark mark);
/* Every queue record starts here: the message's ids, origin, sender and the recipient
 * (rcpt SIZE_MAX: none); the caller adds what its event knows. */
void qmgr_record_init(struct record_event *ev, enum record_type type, const struct message *m,
                      size_t rcpt);
/* A record of the delivery path (attempts and outcomes, holds, operator actions). */
void qmgr_emit(enum record_type type, const struct message *m, size_t rcpt,
               const struct rcpt_result *res, const struct dest *d, const struct attempt_info *info,
               const char *detail);

/* Operator and policy holds: a spool mark, a record, and the message leaves the schedule. */
void qmgr_message_hold(struct message *m, const char *why);
void qmgr_message_release(struct message *m, int64_t now);
void qmgr_message_delete(struct message *m);
/* Every pending recipient is due now (flush, release). */
void qmgr_message_retry_now(struct message *m, int64_t now);

#endif
