/* spool.h - the durable queue: the only code that writes spool files.
 * Messages and per-recipient marks are appended to log segments (<spool>/seg-N.log) by one
 * commit thread that writes a whole batch and then fdatasyncs once (group commit): every
 * caller whose record is in the batch is told "durable" together. A message may be answered
 * 250 only from its commit callback. A segment is deleted when no live message pins it (and,
 * with a release barrier, once the records of its messages are committed). A failed mark is
 * retried until it is durable; on a full disk messages are refused, and when the queue drains
 * the active segment is rolled over so its space comes back without a restart.
 * Callbacks run on the event loop thread; spool_* calls are made from that thread only. */
#ifndef OUTRELAY_SPOOL_H
#define OUTRELAY_SPOOL_H

#include <event2/event.h>
#include <stddef.h>
#include <stdint.h>

#include "common/strbuf.h"

struct spool;

/* Where a message's data lives. */
struct spool_loc {
    uint64_t segment;
    uint64_t offset; /* of the data */
    uint64_t length; /* data bytes */
};

/* Per-recipient marks. */
enum spool_mark {
    SPOOL_MARK_DELIVERED = 'D',
    SPOOL_MARK_BOUNCED = 'B',
    SPOOL_MARK_EXPIRED = 'E',
    SPOOL_MARK_DELETED = 'X', /* whole message removed by the operator */
    SPOOL_MARK_HELD = 'H',
    SPOOL_MARK_RELEASED = 'R',
    SPOOL_MARK_WARNED = 'W', /* whole message: the sender got its delay warning */
};
#define SPOOL_ALL_RCPTS UINT32_MAX

/* status 0: durable; -1: not stored (err says why). loc is valid for messages.
 * segment is the segment that now holds the record: the caller must keep it pinned
 * (spool_unpin) for as long as the record matters. */
typedef void (*spool_done_cb)(void *arg, int status, const struct spool_loc *loc, const char *err);

struct spool *spool_open(const char *dir, struct event_base *base, char *err, size_t errlen);
void spool_close(struct spool *sp);

/* Queue one message (envelope text + data, both copied) for the next group commit. Writing a
 * message whose queue id is already in the spool relocates it: on recovery the later record
 * replaces the earlier one, and only marks written after it count. */
void spool_submit_message(struct spool *sp, const char *envelope, size_t envelope_len,
                          const char *data, size_t data_len, spool_done_cb cb, void *arg);
/* Queue a mark for one recipient (index) or SPOOL_ALL_RCPTS. */
void spool_submit_mark(struct spool *sp, const char *queue_id, uint32_t rcpt, enum spool_mark mark,
                       spool_done_cb cb, void *arg);
/* The oldest segment still on disk other than the one being written, or 0. Compaction moves the
 * messages that pin it into the active segment so it can go. */
uint64_t spool_oldest_segment(struct spool *sp);
uint64_t spool_active_segment(struct spool *sp);
/* Drop one pin of a segment; a segment without pins (and not being written) is deleted. */
void spool_unpin(struct spool *sp, uint64_t segment);
/* Read a message's data back (blocking pread; page-cache fast). Returns 0 / -1. */
int spool_read(struct spool *sp, const struct spool_loc *loc, struct strbuf *out);

/* Recovery, before any submit: calls fn once per message still in the spool, in arrival order.
 * marks/n_marks: every mark recorded for it, in order. pins: the segments it pins (already
 * pinned on its behalf, one entry per pin). */
struct spool_recovered {
    const char *envelope;
    size_t envelope_len;
    struct spool_loc loc;
    const uint32_t *mark_rcpt;
    const char *mark_kind;
    size_t n_marks;
    const uint64_t *pins;
    size_t n_pins;
};
/* fn returns 1 to keep the message (its pins stay, to be released with spool_unpin) or 0 when
 * every recipient is final (its pins are dropped by the spool). */
typedef int (*spool_recover_fn)(void *arg, const struct spool_recovered *msg);
/* Returns the number of messages recovered, or -1 on an unreadable spool. */
int spool_recover(struct spool *sp, spool_recover_fn fn, void *arg, char *err, size_t errlen);
/* The same in the background, so the relay serves while a big queue comes back: reads every
 * segment and starts the commit thread now (returns the number of messages found, or -1 on an
 * unreadable spool), then hands the messages to the witness and fn on the event loop, a slice of
 * a few milliseconds at a time, and calls done(done_arg, kept, 1) after the last. Submits are
 * allowed once it returns. spool_close (or spool_recovery_cancel) cuts it short with
 * done(done_arg, kept so far, 0); the messages not handed out are recovered at the next start. */
typedef void (*spool_recovered_done_fn)(void *arg, int kept, int finished);
int spool_recover_start(struct spool *sp, spool_recover_fn fn, void *arg,
                        spool_recovered_done_fn done, void *done_arg, char *err, size_t errlen);
void spool_recovery_cancel(struct spool *sp);

/* Called by spool_recover for every message found, final or not, before fn (records replay the
 * events the spool proves). Set before spool_recover. */
typedef void (*spool_witness_fn)(void *arg, const struct spool_recovered *msg);
void spool_set_recovery_witness(struct spool *sp, spool_witness_fn fn, void *arg);
/* A segment no message needs is deleted only once passed(token) holds for the token taken when
 * it was released (records: every event emitted before is committed), or after a bounded wait.
 * Both are called with the spool's lock held from either thread: they must not call spool_*. */
void spool_set_release_barrier(struct spool *sp, uint64_t (*token)(void),
                               int (*passed)(uint64_t token));
/* What a recovered message's marks say: final[i] is the mark ('D', 'B', 'E') of recipient i or
 * 0 while it is open (final has n_rcpts bytes); *held, *deleted (operator marks). Returns the
 * number of open recipients. Pure. */
size_t spool_recovered_state(const struct spool_recovered *msg, size_t n_rcpts, char *final,
                             int *held, int *deleted);
/* 1 when a whole-message mark of this kind was recorded for the message (e.g. WARNED). Pure. */
int spool_recovered_has_mark(const struct spool_recovered *msg, enum spool_mark mark);

#endif
