/* qmgr_message.h - INTERNAL to qmgr/: the queue's data (struct qmgr, struct message, struct rcpt)
 * and the core that every other file of qmgr/ stands on (qmgr_message.c). Nothing outside qmgr/
 * includes it; the API is qmgr.h. qmgr_message.c owns every struct message (allocates in intake
 * and recovery, frees once forgotten); the other files borrow them. A recipient's state changes
 * only through qmgr_rcpt.h. The core calls nothing above it by name: it reaches the prepare stages
 * and the delivery step through the function pointers in struct qmgr. Loop thread only. */
#ifndef OUTRELAY_QMGR_MESSAGE_H
#define OUTRELAY_QMGR_MESSAGE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

#include <event2/event.h>

#include "common/hashmap.h"
#include "common/strbuf.h"
#include "config/config.h"
#include "qmgr/qmgr_heap.h"
#include "smtpc/smtpc_job.h"
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
    /* while waiting_lookup: in lookup_list, the waiting list of its domain's provider lookup
     * (qmgr_lookup.c) or q->lookup_waiting (a cluster's answer) */
    TAILQ_ENTRY(message) lookup_link;
    struct message_list *lookup_list;
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
    int delay_warned;          /* the delay warning is queued or sent (spool mark W once durable) */
    int64_t warn_retry_at;     /* a warning that could not be stored is tried again then */
    uint64_t *pins;
    size_t n_pins;
    /* After a failed attempt the stages' results are dropped (qmgr_message_unprepare) and the
     * stages run again when a recipient is next due; their records are not written twice. */
    int reprepare;
    int prepared; /* the stages ran to the end once in this process */
    /* The prepare window: at most q->prep_window messages run stages at a time; the others wait
     * in q->prep_fresh (new mail) or q->prep_again (recovered or re-prepared mail). */
    int prep_slot;
    int prep_parked;
    int recovered; /* came back from the spool at start */
    TAILQ_ENTRY(message) prep_link;
};
TAILQ_HEAD(message_list, message);

/* A prepare stage: start() begins it for m and, at once or later, calls qmgr_stage_done(). The
 * queue runs q->stages in order before any delivery; a restart runs them again. The table is
 * how the core reaches the stages above it (qmgr_prepare.c, or a test's). */
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
    /* set by the top (qmgr.c, or a test): how the core reaches the steps above it */
    void (*deliver)(struct message *m, int64_t now); /* routes and hands out due recipients */
    void (*forgetting)(const struct message *m);     /* m is freed next (may be NULL) */
    struct qmgr_lookup *lookup;
    /* recovery: what the earlier run knew of the recipients' tries (qmgr_recover) */
    void (*recover_retry)(void *arg, const struct envelope *env, struct records_retry *retry);
    void *recover_retry_arg;
    int64_t last_flush, last_prune, last_compact;
    int stopping;
    /* The prepare window (see struct message): new mail and the backlog take turns for slots,
     * so neither a restart with a big queue nor a retry wave holds new mail up behind it, and
     * only prep_window messages hold their data for the stages at a time. */
    struct message_list prep_fresh, prep_again;
    size_t prep_busy, prep_window;
    int prep_turn, prep_filling;
};

/* qmgr_message.c: messages, the due heap, the stage table, scheduling */
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
/* Frees m (qmgr_free; anything else goes through qmgr_message_maybe_forget). */
void qmgr_message_free(struct message *m);
/* Frees m once nothing refers to it and all its marks are durable. */
void qmgr_message_maybe_forget(struct message *m);
int qmgr_all_final(const struct message *m);
/* When m's sender is due its delay warning (delivery.delay_warning after arrival), or INT64_MAX:
 * warnings off, already warned, no recipient left open, a null sender or a DSN itself. */
int64_t qmgr_delay_warning_at(const struct message *m);
void qmgr_lowercase(char *s);
/* The origin's policy removes upstream DKIM signatures. */
int qmgr_strip_upstream(const struct message *m);
/* The message as received (no signatures added), from memory or the spool. */
int qmgr_message_original(struct message *m, struct strbuf *out);
/* The message as it goes out: our signatures on top, upstream signatures removed where the
 * origin's policy says so. Returns 0 / -1 (unreadable spool). */
int qmgr_message_outgoing(struct message *m, struct strbuf *out);
void qmgr_message_add_pin(struct message *m, uint64_t seg);
/* After an attempt that left recipients open (nothing in flight): drops what the prepare stages
 * made (signatures, the alignment prediction; tens of KB per message) so a deferred message
 * costs only its envelope and recipients; the stages run again when a recipient is next due. */
void qmgr_message_unprepare(struct message *m, int64_t now);
/* The earliest time something of m is due: a pending recipient's next try or its delay warning
 * (INT64_MAX: nothing). */
int64_t qmgr_message_next_due(const struct message *m);
/* The message was rewritten to loc (compaction). */
void qmgr_message_moved(struct message *m, const struct spool_loc *loc);

/* qmgr.c (the top): a queue manager without SMTP client or lookups (those are set up by
 * qmgr_init); tests give their own stages and deliver function. */
struct qmgr *qmgr_new(struct event_base *base, const struct config *cfg, struct spool *sp,
                      const struct qmgr_stage *stages, size_t n_stages,
                      void (*deliver)(struct message *m, int64_t now));
void qmgr_free(struct qmgr *q);

#endif
