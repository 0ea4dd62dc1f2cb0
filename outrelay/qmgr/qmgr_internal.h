/* queue_internal.h - INTERNAL to deliver/: what the queue manager's files share (queue.c,
 * queue_prepare.c, queue_lookup.c, qmgr_control.c). Nothing outside deliver/ includes it; the
 * API is queue.h and delivery.h. queue.c owns every struct message (allocates it in intake and
 * recovery, frees it once forgotten); the other files only borrow them. Loop thread only. */
#ifndef OUTRELAY_QUEUE_INTERNAL_H
#define OUTRELAY_QUEUE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

#include <event2/event.h>

#include "common/hashmap.h"
#include "common/strbuf.h"
#include "config/config.h"
#include "qmgr/delivery.h"
#include "spool/envelope.h"
#include "spool/spool.h"

struct sign_result;
struct alignment_result;

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
    struct envelope *env;
    struct spool_loc loc;
    struct strbuf data; /* kept until the first attempt is over */
    int has_data;
    struct rcpt *r;
    int held;
    int deleted;
    int inflight; /* jobs out */
    int marks_pending;
    int prep_pending; /* a sign or check job holds a pointer to us */
    /* sign and check stages, redone after a restart */
    enum { STAGE_TODO, STAGE_RUNNING, STAGE_DONE } sign_state, check_state;
    struct sign_result *sign;
    struct alignment_result *align;
    int check_tries;
    int64_t check_retry_at;
    int alignment_released;    /* an operator released an alignment hold: send as is */
    uint64_t checked_recorded; /* bit per egress: its "checked" event is written */
    int relocating; /* being rewritten into the active segment (queue_compact.c) */
    uint64_t *pins;
    size_t n_pins;
};
TAILQ_HEAD(message_list, message);

/* queue.c: the module's state, set by qmgr_init() and freed by qmgr_shutdown() */
extern const struct config *queue_cfg;
extern struct spool *queue_spool;
extern struct message_list queue_messages;
extern struct hashmap *queue_by_id; /* queue id -> struct message */
extern struct event *queue_timer;   /* the scan timer; NULL once stopping */
extern int queue_stopping;

/* queue.c: messages, scheduling, outcomes, marks, records and DSNs */
int queue_all_final(const struct message *m);
void queue_lowercase(char *s);
/* The origin's policy removes upstream DKIM signatures. */
int queue_strip_upstream(const struct message *m);
/* Moves m forward: sign, check, then jobs for its due recipients. */
void queue_schedule(struct message *m, int64_t now);
/* Frees m once nothing refers to it and all its marks are durable. */
void queue_message_maybe_forget(struct message *m);
/* rcpt SIZE_MAX: a mark for the whole message. */
void queue_submit_mark(struct message *m, size_t rcpt, enum spool_mark mark);
/* The message as received (no signatures added), from memory or the spool. */
int queue_message_original(struct message *m, struct strbuf *out);
void queue_message_add_pin(struct message *m, uint64_t seg);
/* queue_compact.c: moves messages out of the oldest spool segment (see there). */
void queue_compact(int64_t now);
void queue_emit(const char *event, const struct message *m, size_t rcpt,
                const struct rcpt_result *res, const struct dest *d,
                const struct attempt_info *info, const char *detail);
void queue_record_reply(struct rcpt *r, const struct rcpt_result *res,
                        const struct attempt_info *info);
/* DSN for recipients that just became final with B/E; their marks follow its commit. */
void queue_send_dsn(struct message *m, size_t *rcpts, size_t n);

/* queue_prepare.c: the sign and check stages */
void queue_start_sign(struct message *m);
void queue_start_check(struct message *m);
/* The alignment decision for recipients routed to egress e: returns the egress to use (e, or
 * another one whose DMARC would pass), or NULL when the message was held (*stop set) or the
 * recipient bounced. */
const struct egress_conf *queue_apply_alignment(struct message *m, size_t rcpt,
                                                const struct egress_conf *e, int *stop);

/* queue_lookup.c: providers of recipient domains and duplicate suppression */
void queue_lookup_init(const struct config *cfg);
void queue_lookup_shutdown(void);
/* After a reload: cached providers of domains are looked up again. */
void queue_lookup_reload(void);
/* The provider of a domain, or NULL while it is being looked up. */
const char *queue_provider_of(const char *domain);
enum dedup_verdict { DEDUP_SEND, DEDUP_SUPPRESS, DEDUP_WAIT };
enum dedup_verdict queue_dedup_check(struct message *m, size_t i, int64_t now);
/* The outcome of a delivery attempt for recipient i of m. */
void queue_dedup_outcome(const struct message *m, size_t i, int delivered, int64_t now);
void queue_dedup_forget_message(const struct message *m);
void queue_dedup_prune(int64_t now);

#endif
