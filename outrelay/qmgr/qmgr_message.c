/* qmgr_message.c - the bottom of the queue manager: every in-memory message (intake from ingress,
 * DSNs and recovery; lookup; forgetting once its marks are durable), the due heap that wakes the
 * queue at the earliest next try (only due messages are touched) and scheduling: the prepare
 * stages from the stage table, then the delivery step. Calls nothing above it by name: stages,
 * the delivery step and the lookups' cleanup are function pointers in struct qmgr that the top
 * (qmgr.c) sets. Called by every other file of qmgr/. Loop thread only. */
#include "qmgr/qmgr_message.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check/alignment.h"
#include "common/clock.h"
#include "common/util.h"
#include "sign/signer.h"

/* --- messages ------------------------------------------------------------------------------ */

void qmgr_message_add_pin(struct message *m, uint64_t seg)
{
    m->pins = xrealloc(m->pins, (m->n_pins + 1) * sizeof *m->pins);
    m->pins[m->n_pins++] = seg;
}

void qmgr_message_free(struct message *m)
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

int64_t qmgr_delay_warning_at(const struct message *m)
{
    const struct config *cfg = m->q->cfg;
    if (cfg->delay_warning <= 0 || m->delay_warned || m->deleted) return INT64_MAX;
    if (m->env->sender[0] == '\0' || strcmp(m->env->origin ? m->env->origin : "", "dsn") == 0)
        return INT64_MAX;
    if (qmgr_all_final(m)) return INT64_MAX;
    int64_t at = m->env->arrival + cfg->delay_warning;
    return at > m->warn_retry_at ? at : m->warn_retry_at;
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
int qmgr_message_outgoing(struct message *m, struct strbuf *out)
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

/* --- the prepare window -------------------------------------------------------------------- */

static struct message_list *prep_list(struct message *m)
{
    return m->recovered || m->prepared ? &m->q->prep_again : &m->q->prep_fresh;
}

static void prep_unpark(struct message *m)
{
    if (!m->prep_parked) return;
    TAILQ_REMOVE(prep_list(m), m, prep_link);
    m->prep_parked = 0;
}

/* m is due for a stage but the window is full: it waits for a slot, out of the due heap. */
static void prep_park(struct message *m)
{
    qmgr_heap_remove(&m->q->due, &m->due);
    if (m->prep_parked) return;
    TAILQ_INSERT_TAIL(prep_list(m), m, prep_link);
    m->prep_parked = 1;
}

static void prep_release(struct message *m)
{
    if (!m->prep_slot) return;
    m->prep_slot = 0;
    m->q->prep_busy--;
}

/* Gives free slots to waiting messages, new mail and the backlog in turn. Iterative: stages that
 * end at once (tests, a read error) release their slot inside this loop, never recursing. */
static void prep_fill(struct qmgr *q, int64_t now)
{
    if (q->prep_filling) return;
    q->prep_filling = 1;
    while (!q->stopping && q->prep_busy < q->prep_window) {
        struct message_list *first = q->prep_turn ? &q->prep_again : &q->prep_fresh;
        struct message_list *second = q->prep_turn ? &q->prep_fresh : &q->prep_again;
        struct message *m = TAILQ_FIRST(first);
        if (!m) m = TAILQ_FIRST(second);
        if (!m) break;
        q->prep_turn = !q->prep_turn;
        prep_unpark(m);
        qmgr_schedule(m, now);
    }
    q->prep_filling = 0;
}

void qmgr_message_maybe_forget(struct message *m)
{
    struct qmgr *q = m->q;
    if (m->inflight > 0 || m->marks_pending > 0 || m->prep_pending > 0) return;
    if (!m->deleted && !qmgr_all_final(m)) return;
    for (size_t i = 0; i < m->n_pins; i++)
        spool_unpin(q->spool, m->pins[i]);
    qmgr_heap_remove(&q->due, &m->due);
    prep_unpark(m);
    if (m->waiting_lookup) TAILQ_REMOVE(m->lookup_list, m, lookup_link);
    TAILQ_REMOVE(&q->messages, m, link);
    hashmap_remove(q->by_id, m->env->queue_id);
    if (q->forgetting) q->forgetting(m);
    qmgr_message_free(m);
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

int64_t qmgr_message_next_due(const struct message *m)
{
    int64_t at = INT64_MAX;
    for (size_t i = 0; i < m->env->n_rcpts; i++)
        if (m->r[i].state == RCPT_PENDING && m->r[i].next_try < at) at = m->r[i].next_try;
    /* the delay warning is sent by the delivery step when it is due; while every open
     * recipient is out on a job, their outcome files the message again */
    int64_t warn = at != INT64_MAX ? qmgr_delay_warning_at(m) : INT64_MAX;
    return warn < at ? warn : at;
}

/* When the next stage of m may run: a message prepared again waits for its recipients. */
static int64_t stage_due(const struct message *m)
{
    return m->reprepare ? qmgr_message_next_due(m) : m->stage_retry_at;
}

void qmgr_message_unprepare(struct message *m, int64_t now)
{
    struct qmgr *q = m->q;
    if (m->stage < q->n_stages || m->stage_running || m->inflight || m->deleted ||
        m->waiting_lookup || qmgr_all_final(m) || qmgr_message_next_due(m) <= now)
        return;
    signer_result_free(m->sign);
    alignment_result_free(m->align);
    m->sign = NULL;
    m->align = NULL;
    if (m->has_data) {
        strbuf_free(&m->data);
        m->has_data = 0;
    }
    m->stage = 0;
    m->stage_retry_at = 0;
    m->check_tries = 0;
    m->reprepare = 1;
    qmgr_rearm(m, now);
}

void qmgr_rearm(struct message *m, int64_t now)
{
    struct qmgr *q = m->q;
    int64_t at = INT64_MAX;
    if (m->prep_parked) return; /* filed again when it gets its slot */
    if (!m->held && !m->deleted && !q->stopping && !m->stage_running) {
        if (m->stage < q->n_stages)
            at = stage_due(m);
        else
            at = qmgr_message_next_due(m);
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
    if (m->held || m->deleted || q->stopping || m->stage_running || m->prep_parked) return;
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

/* --- stages and scheduling ------------------------------------------------------------------- */

void qmgr_stage_done(struct message *m, int64_t retry_at)
{
    struct qmgr *q = m->q;
    m->prep_pending--;
    m->stage_running = 0;
    m->stage_retry_at = retry_at;
    if (!retry_at) m->stage++;
    if (m->stage >= q->n_stages) m->prepared = 1;
    /* the slot goes when the stages are done or wait; a message going on keeps it */
    if (retry_at || m->stage >= q->n_stages || m->deleted || q->stopping) prep_release(m);
    int64_t now = clock_now();
    if (m->deleted || q->stopping) {
        qmgr_message_maybe_forget(m);
        prep_fill(q, now); /* the slot it gave up */
        return;
    }
    qmgr_schedule(m, now);
    prep_fill(q, now);
}

void qmgr_schedule(struct message *m, int64_t now)
{
    struct qmgr *q = m->q;
    if (!m->held && !m->deleted && !q->stopping && !m->stage_running) {
        if (m->stage < q->n_stages) {
            if (stage_due(m) <= now) {
                if (!m->prep_slot) {
                    if (q->prep_busy >= q->prep_window) {
                        prep_park(m);
                        return;
                    }
                    prep_unpark(m); /* scheduled directly (a release) while it waited */
                    m->prep_slot = 1;
                    q->prep_busy++;
                }
                m->reprepare = 0;
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
    if (m->prep_slot && !m->stage_running) { /* held or deleted between two stages */
        prep_release(m);
        prep_fill(q, now);
    }
    qmgr_rearm(m, now);
}

/* --- intake ---------------------------------------------------------------------------------- */

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
