/* qmgr_internal.h - INTERNAL to qmgr/: what the queue manager's files share. Nothing outside
 * qmgr/ includes it; the API is qmgr.h (operators, main, ingress) and delivery.h (smtpc).
 * struct qmgr holds all queue state; qmgr.c owns it and every struct message (allocates in
 * intake and recovery, frees once forgotten); the other files borrow them. A recipient's state
 * changes only through the qmgr_rcpt_* functions (qmgr_rcpt.c). Loop thread only. */
#ifndef OUTRELAY_QMGR_INTERNAL_H
#define OUTRELAY_QMGR_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

#include <event2/event.h>

#include "common/hashmap.h"
#include "common/strbuf.h"
#include "config/config.h"
#include "qmgr/delivery.h"
#include "qmgr/qmgr_heap.h"
#include "mail/envelope.h"
#include "records/records.h"
#include "spool/spool.h"

struct sign_result;
struct alignment_result;
struct qmgr;
struct qmgr_lookup;
struct record_event;

enum rcpt_state { RCPT_PENDING, RCPT_INFLIGHT, RCPT_FINAL };

struct rcpt {
    enum rcpt_state state;
    char final; /* spool mark once final: D, B, E */
    int attempts;
    int64_t next_try; /* unix seconds */
    char *last_reply; /* for queue list and DSNs */
    char *last_mx;
    char status[16];                  /* enhanced status of the last reply */
    int mark_committed;               /* its final mark is durable */
    const struct egress_conf *routed; /* egress of the last "routed" event */
    int waiting_recorded;             /* a "routed ... waiting" event was written */
};

struct message {
    TAILQ_ENTRY(message) link;
    TAILQ_ENTRY(message) lookup_link; /* in q->lookup_waiting while waiting_lookup */
    struct qmgr *q;
    struct envelope *env;
    struct spool_loc loc;
    struct strbuf data; /* kept until the first attempt is over */
    int has_data;
    struct rcpt *r;
    int held;
    int deleted;
    int inflight; /* jobs out */
    int marks_pending;
    int prep_pending;      /* a prepare stage holds a pointer to us */
    struct qmgr_timer due; /* earliest next try, in q->due while something is to be done */
    int waiting_lookup;    /* a recipient waits for its domain's provider */
    /* prepare stages (q->stages), redone after a restart */
    size_t stage; /* the next stage to run; q->n_stages once all are done */
    int stage_running;
    int64_t stage_retry_at;         /* the stage asked to run again then (0: now) */
    struct sign_result *sign;       /* set by the sign stage */
    struct alignment_result *align; /* set by the check stage */
    int check_tries;
    int alignment_released;    /* an operator released an alignment hold: send as is */
    uint64_t checked_recorded; /* bit per egress: its "checked" event is written */
    int relocating;            /* being rewritten into the active segment (qmgr_compact.c) */
    uint64_t *pins;
    size_t n_pins;
};
TAILQ_HEAD(message_list, message);

/* A prepare stage: start() begins it for m and, at once or later, calls qmgr_stage_done(). The
 * queue runs q->stages in order before any delivery; a restart runs them again. */
struct qmgr_stage {
    const char *name;
    void (*start)(struct message *m);
};

/* The queue manager's state: one per process (qmgr.h's functions use it), any number in tests. */
struct qmgr {
    struct event_base *base;
    const struct config *cfg;
    struct spool *spool;
    struct message_list messages;
    struct message_list lookup_waiting;
    struct hashmap *by_id; /* queue id -> struct message */
    struct hashmap *dests; /* "egress/domain" -> struct dest */
    struct qmgr_heap due;  /* messages by the time something of theirs is due */
    struct event *wake;    /* fires at the top of `due`; NULL once stopping */
    struct event *tick;    /* slow periodic work: route counters, dedup prune, compaction */
    const struct qmgr_stage *stages;
    size_t n_stages;
    void (*deliver)(struct message *m, int64_t now); /* routes and hands out due recipients */
    struct qmgr_lookup *lookup;
    int64_t last_flush, last_prune, last_compact;
    int stopping;
};

/* qmgr.c: the core - messages, the due heap, the stage table, scheduling */
/* A queue manager without SMTP client or lookups (those are set up by qmgr_init); tests give
 * their own stages and deliver function. */
struct qmgr *qmgr_new(struct event_base *base, const struct config *cfg, struct spool *sp,
                      const struct qmgr_stage *stages, size_t n_stages,
                      void (*deliver)(struct message *m, int64_t now));
void qmgr_free(struct qmgr *q);
struct message *qmgr_message_add(struct qmgr *q, struct envelope *env, const struct spool_loc *loc);
/* A message now durable in the spool enters the queue (takes env; data as in qmgr_accept). */
void qmgr_intake(struct qmgr *q, struct envelope *env, const struct spool_loc *loc,
                 struct strbuf *data);
struct message *qmgr_message_find(struct qmgr *q, const char *queue_id);
/* Moves m forward: the next prepare stage, then its due recipients; re-arms its due time. */
void qmgr_schedule(struct message *m, int64_t now);
/* Something of m is due at `at` (a recipient deferred): files m no later than that. */
void qmgr_due_by(struct message *m, int64_t at);
/* Runs what is due at now (the wake timer's work). */
void qmgr_run_due(struct qmgr *q, int64_t now);
/* Files m in the due heap by its earliest pending recipient or stage retry. */
void qmgr_rearm(struct message *m, int64_t now);
/* A stage ends: retry_at 0 goes on to the next stage, else this one runs again then. */
void qmgr_stage_done(struct message *m, int64_t retry_at);
/* Frees m once nothing refers to it and all its marks are durable. */
void qmgr_message_maybe_forget(struct message *m);
int qmgr_all_final(const struct message *m);
void qmgr_lowercase(char *s);
/* The origin's policy removes upstream DKIM signatures. */
int qmgr_strip_upstream(const struct message *m);
/* The message as received (no signatures added), from memory or the spool. */
int qmgr_message_original(struct message *m, struct strbuf *out);
void qmgr_message_add_pin(struct message *m, uint64_t seg);
/* Operator and policy holds: a spool mark, a record, and the message leaves the schedule. */
void qmgr_message_hold(struct message *m, const char *why);
void qmgr_message_release(struct message *m, int64_t now);
void qmgr_message_delete(struct message *m);
/* Every pending recipient is due now (flush, release). */
void qmgr_message_retry_now(struct message *m, int64_t now);
/* The message was rewritten to loc (compaction). */
void qmgr_message_moved(struct message *m, const struct spool_loc *loc);
/* A domain's provider is known: messages waiting for one are scheduled again. */
void qmgr_lookup_answered(struct qmgr *q);

/* qmgr_dest.c: destinations and jobs (the smtpc side of delivery.h) */
/* Queues a job for recipients idx[0..n) of m to the destination of egress e and domain. */
void qmgr_dest_enqueue(struct message *m, const struct egress_conf *e, const char *domain,
                       const char *provider, const size_t *idx, size_t n);
void qmgr_dests_reload(struct qmgr *q);
void qmgr_dests_free(struct qmgr *q);

/* qmgr_rcpt.c: every change of a recipient's state, its records, marks and DSNs */
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
/* A recipient left final by the spool (recovery). */
void qmgr_rcpt_recovered(struct message *m, size_t i, char mark);
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

/* qmgr_prepare.c: the sign and check stages, the alignment decision */
const struct qmgr_stage *qmgr_prepare_stages(size_t *n);
/* The alignment decision for recipients routed to egress e: returns the egress to use (e, or
 * another one whose DMARC would pass), or NULL when the message was held (*stop set) or the
 * recipient bounced. */
const struct egress_conf *qmgr_apply_alignment(struct message *m, size_t rcpt,
                                               const struct egress_conf *e, int *stop);

/* qmgr_route.c: the delivery step of scheduling (expiry, dedup, provider, route, alignment) */
void qmgr_route_due(struct message *m, int64_t now);

/* qmgr_control.c: operator commands and counts (qmgr_control, qmgr_stats) */
int qmgr_control_run(struct qmgr *q, const char *command, struct strbuf *out);
void qmgr_count_states(struct qmgr *q, size_t *active, size_t *deferred, size_t *held);

/* qmgr_compact.c: moves messages out of the oldest spool segment (see there). */
void qmgr_compact(struct qmgr *q, int64_t now);

/* qmgr_lookup.c: providers of recipient domains and duplicate suppression */
struct qmgr_lookup *qmgr_lookup_new(struct qmgr *q);
void qmgr_lookup_free(struct qmgr_lookup *l);
/* After a reload: cached providers of domains are looked up again. */
void qmgr_lookup_reload(struct qmgr_lookup *l);
/* The provider of a domain, or NULL while it is being looked up. */
const char *qmgr_provider_of(struct qmgr_lookup *l, const char *domain);
enum dedup_verdict { DEDUP_SEND, DEDUP_SUPPRESS, DEDUP_WAIT };
enum dedup_verdict qmgr_dedup_check(struct message *m, size_t i, int64_t now);
/* The outcome of a delivery attempt for recipient i of m. */
void qmgr_dedup_outcome(const struct message *m, size_t i, int delivered, int64_t now);
void qmgr_dedup_forget_message(const struct message *m);
void qmgr_dedup_prune(struct qmgr_lookup *l, int64_t now);

#endif
