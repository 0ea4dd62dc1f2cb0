/* qmgr.c - the top of the queue manager; see qmgr.h. Wires the layers below it and calls only
 * down: makes struct qmgr with its stage table (qmgr_prepare.c), delivery step (qmgr_route.c),
 * lookups (qmgr_lookup.c) and the SMTP client's callbacks (qmgr_dest.c); owns the timers (wake,
 * slow tick), recovery from the spool, reload, stop and shutdown, and the process's queue
 * manager behind qmgr.h's functions. Messages and scheduling: qmgr_message.c; recipient
 * outcomes: qmgr_rcpt.c; operator commands: qmgr_control.c. Loop thread only. */
#include "qmgr/qmgr.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/util.h"
#include "qmgr/qmgr_compact.h"
#include "qmgr/qmgr_control.h"
#include "qmgr/qmgr_dest.h"
#include "qmgr/qmgr_lookup.h"
#include "qmgr/qmgr_message.h"
#include "qmgr/qmgr_prepare.h"
#include "qmgr/qmgr_rcpt.h"
#include "qmgr/qmgr_route.h"
#include "smtpc/smtpc.h"
#include "route/route.h"

#define QMGR_TICK_US 1000000 /* the slow timer: route counters, dedup prune, compaction */

/* The process's queue manager, behind qmgr.h's functions. */
static struct qmgr *process_qmgr;

/* --- the wake timer -------------------------------------------------------------------------- */

static void wake_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct qmgr *q = arg;
    if (!q->stopping) qmgr_run_due(q, clock_now());
}

/* --- intake and recovery --------------------------------------------------------------------- */

void qmgr_accept(struct envelope *env, const struct spool_loc *loc, struct strbuf *data)
{
    qmgr_intake(process_qmgr, env, loc, data);
}

static int recover_one(void *arg, const struct spool_recovered *rec)
{
    struct qmgr *q = arg;
    struct envelope *env = envelope_parse(rec->envelope, rec->envelope_len);
    if (!env) {
        log_error("spool: an unreadable envelope in segment %llu was skipped",
                  (unsigned long long)rec->loc.segment);
        return 0;
    }
    char *final = xcalloc(env->n_rcpts, 1);
    int held, deleted;
    size_t open = spool_recovered_state(rec, env->n_rcpts, final, &held, &deleted);
    if (deleted || open == 0) {
        free(final);
        envelope_free(env);
        return 0;
    }
    struct message *m = qmgr_message_add(q, env, &rec->loc);
    for (size_t i = 0; i < rec->n_pins; i++)
        qmgr_message_add_pin(m, rec->pins[i]);
    for (size_t i = 0; i < env->n_rcpts; i++)
        if (final[i]) qmgr_rcpt_recovered(m, i, final[i]);
    m->held = held;
    m->delay_warned = spool_recovered_has_mark(rec, SPOOL_MARK_WARNED);
    free(final);
    return 1;
}

int qmgr_recover(char *err, size_t errlen)
{
    struct qmgr *q = process_qmgr;
    int n = spool_recover(q->spool, recover_one, q, err, errlen);
    if (n < 0) return -1;
    int64_t now = clock_now();
    struct message *m, *next;
    for (m = TAILQ_FIRST(&q->messages); m; m = next) {
        next = TAILQ_NEXT(m, link);
        qmgr_schedule(m, now);
    }
    return n;
}

/* --- life cycle ------------------------------------------------------------------------------- */

struct qmgr *qmgr_new(struct event_base *base, const struct config *cfg, struct spool *sp,
                      const struct qmgr_stage *stages, size_t n_stages,
                      void (*deliver)(struct message *m, int64_t now))
{
    struct qmgr *q = xcalloc(1, sizeof *q);
    q->base = base;
    q->cfg = cfg;
    q->spool = sp;
    TAILQ_INIT(&q->messages);
    TAILQ_INIT(&q->lookup_waiting);
    q->by_id = hashmap_new();
    q->dests = hashmap_new();
    qmgr_heap_init(&q->due);
    q->wake = evtimer_new(base, wake_cb, q);
    q->stages = stages;
    q->n_stages = n_stages;
    q->deliver = deliver;
    return q;
}

/* Stops scheduling: no timer fires again; messages stay for late spool callbacks. */
static void qmgr_halt(struct qmgr *q)
{
    q->stopping = 1;
    if (q->wake) event_free(q->wake);
    if (q->tick) event_free(q->tick);
    q->wake = q->tick = NULL;
}

void qmgr_free(struct qmgr *q)
{
    if (!q) return;
    if (!q->stopping) qmgr_halt(q);
    qmgr_dests_free(q);
    qmgr_heap_free(&q->due); /* before the messages that hold its timers */
    struct message *m;
    while ((m = TAILQ_FIRST(&q->messages))) {
        TAILQ_REMOVE(&q->messages, m, link);
        qmgr_message_free(m);
    }
    hashmap_free(q->by_id);
    hashmap_free(q->dests);
    qmgr_lookup_free(q->lookup);
    free(q);
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct qmgr *q = arg;
    int64_t now = clock_now();
    if (now - q->last_flush >= 5) { /* counters of quiet periods reach route.db too */
        route_flush();
        q->last_flush = now;
    }
    if (now - q->last_prune >= 60) {
        qmgr_dedup_prune(q->lookup, now);
        q->last_prune = now;
    }
    qmgr_compact(q, now);
}

int qmgr_init(struct event_base *base, const struct config *cfg, struct spool *sp, char *err,
              size_t errlen)
{
    size_t n_stages;
    const struct qmgr_stage *stages = qmgr_prepare_stages(&n_stages);
    struct qmgr *q = qmgr_new(base, cfg, sp, stages, n_stages, qmgr_route_due);
    q->lookup = qmgr_lookup_new(q);
    q->forgetting = qmgr_dedup_forget_message;
    process_qmgr = q;
    if (smtpc_init(base, cfg, qmgr_dest_owner(), err, errlen) < 0) return -1;
    q->tick = event_new(base, -1, EV_PERSIST, tick_cb, q);
    struct timeval tv = {0, QMGR_TICK_US};
    event_add(q->tick, &tv);
    return 0;
}

int qmgr_reload(const struct config *cfg, char *err, size_t errlen)
{
    struct qmgr *q = process_qmgr;
    if (smtpc_reload(cfg, err, errlen) < 0) return -1;
    q->cfg = cfg;
    qmgr_dests_reload(q);
    qmgr_lookup_reload(q->lookup);
    return 0;
}

size_t qmgr_size(void)
{
    return process_qmgr ? hashmap_count(process_qmgr->by_id) : 0;
}

void qmgr_stop(void)
{
    if (!process_qmgr) return;
    qmgr_halt(process_qmgr);
    smtpc_shutdown();
}

void qmgr_shutdown(void)
{
    if (process_qmgr && !process_qmgr->stopping) qmgr_stop();
    qmgr_free(process_qmgr);
    process_qmgr = NULL;
}

int qmgr_control(const char *command, struct strbuf *out)
{
    return qmgr_control_run(process_qmgr, command, out);
}

void qmgr_stats(size_t *active, size_t *deferred, size_t *held)
{
    *active = *deferred = *held = 0;
    if (process_qmgr) qmgr_count_states(process_qmgr, active, deferred, held);
}
