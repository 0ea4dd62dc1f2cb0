/* qmgr.c - the queue manager's core; see qmgr.h. Owns struct qmgr and every in-memory message:
 * intake (ingress, DSNs) and recovery, the prepare stages run from the stage table, the due heap
 * that wakes the queue at the earliest next try (only due messages are touched), holds and
 * deletion, forgetting. Durability rule: a message is forgotten only after all its marks are
 * durable. Delivery step: qmgr_route.c; destinations and jobs: qmgr_dest.c; recipient outcomes:
 * qmgr_rcpt.c; operator commands: qmgr_control.c. Loop thread only. */
#include "qmgr/qmgr.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check/alignment.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/util.h"
#include "qmgr/qmgr_internal.h"
#include "smtpc/smtpc.h"
#include "route/route.h"
#include "sign/signer.h"

#define QMGR_TICK_US 1000000 /* the slow timer: route counters, dedup prune, compaction */

/* The process's queue manager, behind qmgr.h's functions. */
static struct qmgr *process_qmgr;

/* --- messages ------------------------------------------------------------------------------ */

void qmgr_message_add_pin(struct message *m, uint64_t seg)
{
    m->pins = xrealloc(m->pins, (m->n_pins + 1) * sizeof *m->pins);
    m->pins[m->n_pins++] = seg;
}

static void message_free(struct message *m)
{
    signer_result_free(m->sign);
    alignment_result_free(m->align);
    for (size_t i = 0; i < m->env->n_rcpts; i++) {
        free(m->r[i].last_reply);
        free(m->r[i].last_mx);
    }
    free(m->r);
    strbuf_free(&m->data);
    envelope_free(m->env);
    free(m->pins);
    free(m);
}

struct message *qmgr_message_add(struct qmgr *q, struct envelope *env, const struct spool_loc *loc)
{
    struct message *m = xcalloc(1, sizeof *m);
    m->q = q;
    m->env = env;
    m->loc = *loc;
    m->r = xcalloc(env->n_rcpts, sizeof *m->r);
    TAILQ_INSERT_TAIL(&q->messages, m, link);
    hashmap_put(q->by_id, env->queue_id, m);
    return m;
}

struct message *qmgr_message_find(struct qmgr *q, const char *queue_id)
{
    return hashmap_get(q->by_id, queue_id);
}

int qmgr_all_final(const struct message *m)
{
    for (size_t i = 0; i < m->env->n_rcpts; i++)
        if (m->r[i].state != RCPT_FINAL) return 0;
    return 1;
}

void qmgr_lowercase(char *s)
{
    for (; *s; s++)
        *s = (char)tolower((unsigned char)*s);
}

int qmgr_strip_upstream(const struct message *m)
{
    const struct origin_conf *o = config_find_origin(m->q->cfg, m->env->origin);
    return o && o->strip_upstream_dkim;
}

/* The original as received (for DSNs and compaction). */
int qmgr_message_original(struct message *m, struct strbuf *out)
{
    if (m->has_data) {
        strbuf_reset(out);
        strbuf_append(out, m->data.data, m->data.len);
        return 0;
    }
    return spool_read(m->q->spool, &m->loc, out);
}

/* The message as it goes out: our signatures on top, upstream signatures removed where the
 * origin's policy says so. */
int queue_message_data(struct message *m, struct strbuf *out)
{
    struct strbuf body = STRBUF_INIT;
    strbuf_reset(out);
    if (m->sign && m->sign->headers.len)
        strbuf_append(out, m->sign->headers.data, m->sign->headers.len);
    if (m->has_data) {
        strbuf_append(out, m->data.data, m->data.len);
    } else {
        if (spool_read(m->q->spool, &m->loc, &body) < 0) {
            strbuf_free(&body);
            return -1;
        }
        strbuf_append(out, body.data, body.len);
        strbuf_free(&body);
    }
    if (qmgr_strip_upstream(m)) {
        size_t skip = m->sign ? m->sign->headers.len : 0;
        out->len = skip + dkim_strip_signatures(out->data + skip, out->len - skip);
        out->data[out->len] = '\0';
    }
    return 0;
}

const struct envelope *queue_message_envelope(const struct message *m)
{
    return m->env;
}

void qmgr_message_maybe_forget(struct message *m)
{
    struct qmgr *q = m->q;
    if (m->inflight > 0 || m->marks_pending > 0 || m->prep_pending > 0) return;
    if (!m->deleted && !qmgr_all_final(m)) return;
    for (size_t i = 0; i < m->n_pins; i++)
        spool_unpin(q->spool, m->pins[i]);
    qmgr_heap_remove(&q->due, &m->due);
    if (m->waiting_lookup) TAILQ_REMOVE(&q->lookup_waiting, m, lookup_link);
    TAILQ_REMOVE(&q->messages, m, link);
    hashmap_remove(q->by_id, m->env->queue_id);
    if (q->lookup) qmgr_dedup_forget_message(m);
    message_free(m);
}

/* --- holds, deletion, operator retries ------------------------------------------------------- */

void qmgr_message_hold(struct message *m, const char *why)
{
    m->held = 1;
    qmgr_submit_mark(m, SIZE_MAX, SPOOL_MARK_HELD);
    qmgr_emit(RECORD_HELD, m, SIZE_MAX, NULL, NULL, NULL, why);
    qmgr_rearm(m, clock_now());
}

void qmgr_message_release(struct message *m, int64_t now)
{
    m->held = 0;
    m->alignment_released = 1;
    qmgr_submit_mark(m, SIZE_MAX, SPOOL_MARK_RELEASED);
    qmgr_emit(RECORD_RELEASED, m, SIZE_MAX, NULL, NULL, NULL, "released by the operator");
    qmgr_message_retry_now(m, now);
    qmgr_schedule(m, now);
}

/* The recipients become final with the DELETED mark: no bounce, and a delivery attempt still
 * out when it commits is not retried (queue_job_done). */
void qmgr_message_delete(struct message *m)
{
    m->deleted = 1;
    qmgr_emit(RECORD_DELETED, m, SIZE_MAX, NULL, NULL, NULL, "deleted by the operator");
    qmgr_submit_mark(m, SIZE_MAX, SPOOL_MARK_DELETED);
    qmgr_rearm(m, clock_now());
}

void qmgr_message_retry_now(struct message *m, int64_t now)
{
    for (size_t i = 0; i < m->env->n_rcpts; i++)
        if (m->r[i].state == RCPT_PENDING) qmgr_rcpt_defer(m, i, now);
}

void qmgr_message_moved(struct message *m, const struct spool_loc *loc)
{
    m->loc = *loc;
    qmgr_message_add_pin(m, loc->segment);
}

/* --- the due heap ---------------------------------------------------------------------------- */

/* One libevent timer, armed to the heap's top. */
static void arm_wake(struct qmgr *q)
{
    if (!q->wake) return;
    struct qmgr_timer *top = qmgr_heap_top(&q->due);
    if (!top) {
        event_del(q->wake);
        return;
    }
    int64_t wait_us = top->at * 1000000 - clock_now_us();
    if (wait_us < 0) wait_us = 0;
    struct timeval tv = {(time_t)(wait_us / 1000000), (suseconds_t)(wait_us % 1000000)};
    evtimer_add(q->wake, &tv);
}

static struct message *message_of(struct qmgr_timer *t)
{
    return (struct message *)((char *)t - offsetof(struct message, due));
}

void qmgr_rearm(struct message *m, int64_t now)
{
    struct qmgr *q = m->q;
    int64_t at = INT64_MAX;
    if (!m->held && !m->deleted && !q->stopping && !m->stage_running) {
        if (m->stage < q->n_stages) {
            at = m->stage_retry_at;
        } else {
            for (size_t i = 0; i < m->env->n_rcpts; i++)
                if (m->r[i].state == RCPT_PENDING && m->r[i].next_try < at) at = m->r[i].next_try;
        }
        /* the provider's answer schedules it (qmgr_lookup_answered); this is the fallback */
        if (m->waiting_lookup && at <= now) at = now + 1;
    }
    struct qmgr_timer *top = qmgr_heap_top(&q->due);
    int64_t old_top = top ? top->at : INT64_MAX;
    if (at == INT64_MAX)
        qmgr_heap_remove(&q->due, &m->due);
    else
        qmgr_heap_set(&q->due, &m->due, at);
    top = qmgr_heap_top(&q->due);
    if ((top ? top->at : INT64_MAX) != old_top) arm_wake(q);
}

void qmgr_due_by(struct message *m, int64_t at)
{
    struct qmgr *q = m->q;
    if (m->held || m->deleted || q->stopping || m->stage_running) return;
    if (m->due.slot && m->due.at <= at) return; /* an earlier wake looks again anyway */
    qmgr_heap_set(&q->due, &m->due, at);
    if (qmgr_heap_top(&q->due) == &m->due) arm_wake(q);
}

void qmgr_run_due(struct qmgr *q, int64_t now)
{
    /* taken out first: scheduling files a message again, never at a time already due */
    size_t n = 0, cap = 0;
    struct message **due = NULL;
    struct qmgr_timer *t;
    while ((t = qmgr_heap_pop_due(&q->due, now))) {
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            due = xrealloc(due, cap * sizeof *due);
        }
        due[n++] = message_of(t);
    }
    for (size_t i = 0; i < n; i++)
        qmgr_schedule(due[i], now);
    free(due);
    arm_wake(q);
}

static void wake_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct qmgr *q = arg;
    if (!q->stopping) qmgr_run_due(q, clock_now());
}

void qmgr_lookup_answered(struct qmgr *q)
{
    int64_t now = clock_now();
    struct message *m;
    while ((m = TAILQ_FIRST(&q->lookup_waiting))) {
        TAILQ_REMOVE(&q->lookup_waiting, m, lookup_link);
        m->waiting_lookup = 0;
        qmgr_rearm(m, now); /* due now: the wake timer runs it from the loop */
    }
}

/* --- stages and scheduling ---------------------------------------------------------------------
 */

void qmgr_stage_done(struct message *m, int64_t retry_at)
{
    struct qmgr *q = m->q;
    m->prep_pending--;
    m->stage_running = 0;
    m->stage_retry_at = retry_at;
    if (!retry_at) m->stage++;
    if (m->deleted || q->stopping) {
        qmgr_message_maybe_forget(m);
        return;
    }
    qmgr_schedule(m, clock_now());
}

void qmgr_schedule(struct message *m, int64_t now)
{
    struct qmgr *q = m->q;
    if (!m->held && !m->deleted && !q->stopping && !m->stage_running) {
        if (m->stage < q->n_stages) {
            if (m->stage_retry_at <= now) {
                m->stage_running = 1;
                m->stage_retry_at = 0;
                m->prep_pending++;
                qmgr_heap_remove(&q->due, &m->due);
                q->stages[m->stage].start(m); /* ends in qmgr_stage_done, which schedules on */
                return;
            }
        } else {
            q->deliver(m, now);
        }
    }
    qmgr_rearm(m, now);
}

/* --- intake ------------------------------------------------------------------------------------
 */

void qmgr_accept(struct envelope *env, const struct spool_loc *loc, struct strbuf *data)
{
    qmgr_intake(process_qmgr, env, loc, data);
}

void qmgr_intake(struct qmgr *q, struct envelope *env, const struct spool_loc *loc,
                 struct strbuf *data)
{
    struct message *m = qmgr_message_add(q, env, loc);
    qmgr_message_add_pin(m, loc->segment);
    if (data && data->len) {
        m->data = *data;
        m->has_data = 1;
        *data = (struct strbuf)STRBUF_INIT;
    }
    qmgr_schedule(m, clock_now());
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
        message_free(m);
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
    process_qmgr = q;
    if (smtpc_init(base, cfg, err, errlen) < 0) return -1;
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
