/* qmgr_rcpt.c - every change of a recipient's state, and what must go with it: its record, its
 * spool mark, its DSN. qmgr_rcpt_finalize() is the one way a recipient becomes final (delivered,
 * bounced, expired, suppressed); ordering rule: a final mark goes to the spool only after what
 * must survive it (the DSN) is durable; the delay warning's whole-message mark W likewise. Also the
 * one builder of the queue's records (qmgr_record_init), and of the message-wide holds, releases
 * and deletions. Calls only the core below it (qmgr_message.c); called by the middle files (route,
 * dest, prepare, control, compact) and the top; never frees a message (the core does, once its
 * marks are durable). Loop thread only. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/util.h"
#include "mail/smtp_proto.h"
#include "qmgr/dsn.h"
#include "qmgr/qmgr_rcpt.h"
#include "records/records.h"

/* --- records ------------------------------------------------------------------------------------
 */

void qmgr_record_init(struct record_event *ev, enum record_type type, const struct message *m,
                      size_t rcpt)
{
    *ev = (struct record_event){
        .type = type,
        .queue_id = m->env->queue_id,
        .message_id = m->env->message_id,
        .origin = m->env->origin,
        .sender = m->env->sender,
        .recipient = rcpt != SIZE_MAX ? m->env->rcpts[rcpt].address : NULL,
    };
}

/* The record of what happened to recipient rcpt (SIZE_MAX: the message) at this moment. */
static void record_outcome(struct record_event *ev_out, enum record_type type,
                           const struct message *m, size_t rcpt, const struct rcpt_result *res,
                           const struct dest *d, const struct attempt_info *info,
                           const char *detail)
{
    int64_t now_us = clock_now_us();
    int64_t arrival_us = m->env->arrival_us ? m->env->arrival_us : m->env->arrival * 1000000;
    struct record_event ev;
    qmgr_record_init(&ev, type, m, rcpt);
    ev.client_addr = m->env->client_addr;
    ev.egress = d ? d->egress->name : NULL;
    ev.provider = d ? d->provider : NULL;
    ev.source_addr = info ? info->source_addr : NULL;
    ev.remote_mx = info ? info->remote_mx : NULL;
    ev.remote_addr = info ? info->remote_addr : NULL;
    ev.reply_code = res ? res->code : 0;
    ev.enhanced_code = res && res->enhanced[0] ? res->enhanced : NULL;
    ev.reply_text = res && res->text[0] ? res->text : NULL;
    ev.tls_version = info ? info->tls_version : NULL;
    ev.tls_cipher = info ? info->tls_cipher : NULL;
    ev.tls_policy = info ? info->tls_policy : NULL;
    ev.tls_policy_source = info ? info->tls_policy_source : NULL;
    ev.tls_failure = info ? info->tls_failure : NULL;
    ev.tls_policy_domain = info ? info->tls_policy_domain : NULL;
    ev.tls_policy_string = info ? info->tls_policy_string : NULL;
    ev.size = m->env->size;
    ev.delay_ms = (now_us - arrival_us) / 1000;
    ev.attempt_ms = info && info->started_us ? (now_us - info->started_us) / 1000 : 0;
    ev.detail = detail;
    *ev_out = ev;
}

void qmgr_emit(enum record_type type, const struct message *m, size_t rcpt,
               const struct rcpt_result *res, const struct dest *d, const struct attempt_info *info,
               const char *detail)
{
    struct record_event ev;
    record_outcome(&ev, type, m, rcpt, res, d, info, detail);
    records_emit(&ev);
}

/* --- spool marks ---------------------------------------------------------------------------------
 */

struct mark_ctx {
    struct message *m;
    size_t rcpt; /* SIZE_MAX: not a recipient mark */
};

static void mark_done(void *arg, int status, const struct spool_loc *loc, const char *err)
{
    struct mark_ctx *c = arg;
    struct message *m = c->m;
    m->marks_pending--;
    if (status == 0)
        qmgr_message_add_pin(m, loc->segment);
    else /* not durable: after a restart the recipient is tried again (a possible duplicate,
          * never a loss) */
        log_error("%s: spool mark not stored: %s", m->env->queue_id, err);
    if (c->rcpt != SIZE_MAX) m->r[c->rcpt].mark_committed = 1;
    free(c);
    qmgr_message_maybe_forget(m);
}

void qmgr_submit_mark(struct message *m, size_t rcpt, enum spool_mark mark)
{
    struct mark_ctx *c = xcalloc(1, sizeof *c);
    c->m = m;
    c->rcpt = rcpt;
    m->marks_pending++;
    spool_submit_mark(m->q->spool, m->env->queue_id,
                      rcpt == SIZE_MAX ? SPOOL_ALL_RCPTS : (uint32_t)rcpt, mark, mark_done, c);
}

/* --- DSNs ---------------------------------------------------------------------------------------
 */

struct dsn_ctx {
    struct message *m;
    size_t *rcpts;
    size_t n;
    struct envelope *env;
    int warning; /* a delay warning: rcpts are the open recipients it reports */
};

static void mark_all_final(struct message *m, const size_t *rcpts, size_t n)
{
    for (size_t i = 0; i < n; i++)
        qmgr_submit_mark(m, rcpts[i], (enum spool_mark)m->r[rcpts[i]].final);
}

/* The delay warning is durable (or not): record it and mark the message, or try again later. */
static void warning_committed(struct dsn_ctx *c, int status, const struct spool_loc *loc,
                              const char *err)
{
    struct message *m = c->m;
    if (status == 0) {
        for (size_t i = 0; i < c->n; i++) {
            const struct rcpt *r = &m->r[c->rcpts[i]];
            struct record_event ev;
            record_outcome(&ev, RECORD_DELAYED, m, c->rcpts[i], NULL, NULL, NULL,
                           "delay warning sent to the sender");
            ev.dsn_queue_id = c->env->queue_id;
            ev.enhanced_code = r->status[0] ? r->status : NULL;
            ev.reply_text = r->last_reply;
            ev.remote_mx = r->last_mx;
            records_emit(&ev);
        }
        qmgr_intake(m->q, c->env, loc, NULL);
        c->env = NULL;
        qmgr_submit_mark(m, SIZE_MAX, SPOOL_MARK_WARNED);
    } else {
        log_error("%s: delay warning not stored (retried in 60s): %s", m->env->queue_id, err);
        envelope_free(c->env);
        m->delay_warned = 0;
        m->warn_retry_at = clock_now() + 60;
        qmgr_due_by(m, m->warn_retry_at);
    }
    free(c->rcpts);
    free(c);
    qmgr_message_maybe_forget(m);
}

static void dsn_committed(void *arg, int status, const struct spool_loc *loc, const char *err)
{
    struct dsn_ctx *c = arg;
    struct message *m = c->m;
    m->marks_pending--;
    if (c->warning) {
        warning_committed(c, status, loc, err);
        return;
    }
    if (status == 0) {
        struct record_event ev;
        qmgr_record_init(&ev, RECORD_DSN, m, SIZE_MAX);
        ev.origin = NULL;
        ev.dsn_queue_id = c->env->queue_id;
        records_emit(&ev);
        qmgr_intake(m->q, c->env, loc, NULL);
        c->env = NULL;
        mark_all_final(m, c->rcpts, c->n);
    } else {
        /* The sender must hear of the failure: these recipients are not final until the DSN
         * is durable. They are tried again in a minute, fail again and bring a new DSN. */
        log_error("%s: DSN not stored (recipients kept, retried in 60s): %s", m->env->queue_id,
                  err);
        envelope_free(c->env);
        for (size_t i = 0; i < c->n; i++)
            qmgr_rcpt_defer(m, c->rcpts[i], clock_now() + 60);
    }
    free(c->rcpts);
    free(c);
    qmgr_message_maybe_forget(m);
}

static void new_dsn_queue_id(char *out, size_t size)
{
    static uint64_t last;
    uint64_t now = (uint64_t)clock_now_us();
    if (now <= last) now = last + 1;
    last = now;
    /* D prefix keeps our notifications apart from ids issued by smtpd. */
    snprintf(out, size, "D%012llX", (unsigned long long)(now & 0xFFFFFFFFFFFFULL));
}

static void spool_dsn(struct message *m, const struct dsn_recipient *dr, size_t k, int headers_only,
                      const size_t *rcpts, size_t n, int warning);

/* DSN for recipients that just became final with B/E; their marks follow its commit. */
static void send_dsn(struct message *m, const size_t *rcpts, size_t n)
{
    size_t k = 0;
    struct dsn_recipient *dr = xcalloc(n, sizeof *dr);
    for (size_t i = 0; i < n; i++) {
        const struct envelope_rcpt *er = &m->env->rcpts[rcpts[i]];
        const struct rcpt *r = &m->r[rcpts[i]];
        if (er->notify && !(er->notify & SMTP_NOTIFY_FAILURE)) continue;
        dr[k].address = er->address;
        dr[k].orcpt = er->orcpt;
        dr[k].action = "failed";
        dr[k].status = r->status[0] ? r->status : (r->final == 'E' ? "4.4.7" : "5.0.0");
        dr[k].remote_mta = r->last_mx;
        dr[k].diagnostic = r->last_reply;
        dr[k].last_attempt = clock_now();
        k++;
    }
    if (m->env->sender[0] == '\0' || k == 0) {
        /* No bounce for a bounce; no DSN where NOTIFY says never. */
        mark_all_final(m, rcpts, n);
        free(dr);
        return;
    }
    /* a REQUIRETLS message's DSN returns its header only (the body never travels where the
     * sender did not allow it to) and is itself sent with REQUIRETLS (RFC 8689) */
    spool_dsn(m, dr, k, m->env->ret_hdrs || m->env->requiretls, rcpts, n, 0);
    free(dr);
}

/* Builds the DSN of m reporting dr[0..k) and queues it with the null sender; its commit
 * (dsn_committed) finishes rcpts[0..n) or, for a warning, marks the message. */
static void spool_dsn(struct message *m, const struct dsn_recipient *dr, size_t k, int headers_only,
                      const size_t *rcpts, size_t n, int warning)
{
    const struct config *cfg = m->q->cfg;
    struct strbuf original = STRBUF_INIT, text = STRBUF_INIT, envtext = STRBUF_INIT;
    if (qmgr_message_original(m, &original) < 0)
        strbuf_puts(&original, "(original message could not be read from the spool)\r\n");
    struct dsn_request req = {.reporting_mta = cfg->hostname,
                              .queue_id = m->env->queue_id,
                              .envid = m->env->envid,
                              .sender = m->env->sender,
                              .arrival = m->env->arrival,
                              .recipients = dr,
                              .n_recipients = k,
                              .original = original.data,
                              .original_len = original.len,
                              .headers_only = headers_only};
    dsn_build(&req, &text);
    struct envelope *env = envelope_new();
    new_dsn_queue_id(env->queue_id, sizeof env->queue_id);
    env->arrival_us = clock_now_us();
    env->arrival = env->arrival_us / 1000000;
    env->origin = xstrdup("dsn");
    env->client_addr = xstrdup("localhost");
    env->helo = xstrdup(cfg->hostname);
    env->sender = xstrdup("");
    env->requiretls = m->env->requiretls;
    env->size = (int64_t)text.len;
    envelope_add_rcpt(env, m->env->sender, NULL, 0);
    envelope_serialize(env, &envtext);
    struct dsn_ctx *c = xcalloc(1, sizeof *c);
    c->m = m;
    c->env = env;
    c->rcpts = qmgr_rcpt_indexes_copy(rcpts, n);
    c->n = n;
    c->warning = warning;
    m->marks_pending++;
    spool_submit_message(m->q->spool, envtext.data, envtext.len, text.data, text.len, dsn_committed,
                         c);
    strbuf_free(&original);
    strbuf_free(&text);
    strbuf_free(&envtext);
}

void qmgr_rcpt_delay_warning(struct message *m, int64_t now)
{
    if (qmgr_delay_warning_at(m) > now) return;
    size_t n = m->env->n_rcpts, k = 0;
    struct dsn_recipient *dr = xcalloc(n, sizeof *dr);
    size_t *idx = xmalloc(n * sizeof *idx);
    for (size_t i = 0; i < n; i++) {
        const struct envelope_rcpt *er = &m->env->rcpts[i];
        const struct rcpt *r = &m->r[i];
        if (r->state == RCPT_FINAL) continue;
        /* RFC 3461: without NOTIFY we may warn; with it, only NOTIFY=DELAY asks for it */
        if (er->notify && !(er->notify & SMTP_NOTIFY_DELAY)) continue;
        dr[k].address = er->address;
        dr[k].orcpt = er->orcpt;
        dr[k].action = "delayed";
        dr[k].status = r->status[0] == '4' ? r->status : "4.0.0";
        dr[k].remote_mta = r->last_mx;
        dr[k].diagnostic = r->last_reply;
        dr[k].will_retry_until = m->env->arrival + m->q->cfg->max_lifetime;
        idx[k++] = i;
    }
    /* once per message, also when no open recipient asked for it */
    m->delay_warned = 1;
    if (k > 0) spool_dsn(m, dr, k, 1, idx, k, 1);
    free(dr);
    free(idx);
}

void qmgr_rcpt_batch_flush(struct message *m, struct rcpt_batch *batch)
{
    if (batch->n) send_dsn(m, batch->idx, batch->n);
    batch->n = 0;
}

size_t *qmgr_rcpt_indexes_copy(const size_t *idx, size_t n)
{
    size_t *copy = xmalloc(n * sizeof *copy);
    memcpy(copy, idx, n * sizeof *idx);
    return copy;
}

/* --- recipient states ---------------------------------------------------------------------------
 */

void qmgr_rcpt_finalize(struct message *m, size_t i, const struct rcpt_outcome *o,
                        struct rcpt_batch *batch)
{
    struct rcpt *r = &m->r[i];
    enum record_type type = o->type;
    const char *detail = o->detail;
    r->state = RCPT_FINAL;
    r->final = (char)o->mark;
    if (o->mark == SPOOL_MARK_BOUNCED) {
        if (!type) type = RECORD_BOUNCED;
        if (!r->status[0]) snprintf(r->status, sizeof r->status, "5.0.0");
    } else if (o->mark == SPOOL_MARK_EXPIRED) {
        /* the lifetime holds at every try, also for mail that never got a connection */
        if (!type) type = RECORD_EXPIRED;
        if (!detail) detail = "maximum queue lifetime exceeded";
        if (r->status[0] != '4') snprintf(r->status, sizeof r->status, "4.4.7");
    } else if (!type) {
        type = RECORD_DELIVERED;
    }
    qmgr_emit(type, m, i, o->res, o->dest, o->info, detail);
    if (o->mark == SPOOL_MARK_DELIVERED)
        qmgr_submit_mark(m, i, SPOOL_MARK_DELIVERED);
    else if (batch)
        batch->idx[batch->n++] = i;
    else
        send_dsn(m, &i, 1);
}

void qmgr_rcpt_recovered(struct message *m, size_t i, char mark)
{
    m->r[i].state = RCPT_FINAL;
    m->r[i].final = mark;
    m->r[i].mark_committed = 1;
}

void qmgr_rcpt_resumed(struct message *m, size_t i, int attempts, int64_t due)
{
    m->r[i].attempts = attempts > 0 ? attempts : 0;
    m->r[i].next_try = due > 0 ? due : 0;
}

void qmgr_rcpt_inflight(struct message *m, size_t i)
{
    m->r[i].state = RCPT_INFLIGHT;
}

void qmgr_rcpt_defer(struct message *m, size_t i, int64_t when)
{
    m->r[i].state = RCPT_PENDING;
    m->r[i].next_try = when;
    qmgr_due_by(m, when);
}

void qmgr_rcpt_drop(struct message *m, size_t i)
{
    m->r[i].state = RCPT_FINAL;
}

void qmgr_rcpt_record_reply(struct rcpt *r, const struct rcpt_result *res,
                            const struct attempt_info *info)
{
    free(r->last_reply);
    free(r->last_mx);
    struct strbuf sb = STRBUF_INIT;
    if (res->code)
        strbuf_printf(&sb, "%d %s%s%s", res->code, res->enhanced, res->enhanced[0] ? " " : "",
                      res->text);
    else
        strbuf_puts(&sb, res->text);
    r->last_reply = strbuf_detach(&sb, NULL);
    r->last_mx = info && info->remote_mx ? xstrdup(info->remote_mx) : NULL;
    snprintf(r->status, sizeof r->status, "%s", res->enhanced);
}

void qmgr_rcpt_attempted(struct message *m, size_t i, const struct rcpt_result *res,
                         const struct attempt_info *info)
{
    m->r[i].attempts++;
    qmgr_rcpt_record_reply(&m->r[i], res, info);
}

int64_t qmgr_retry_delay(const struct qmgr *q, int attempts)
{
    if (q->cfg->n_retry == 0) return 300;
    size_t i = attempts <= 0 ? 0 : (size_t)attempts - 1;
    if (i >= q->cfg->n_retry) i = q->cfg->n_retry - 1;
    return q->cfg->retry[i];
}

void qmgr_rcpt_retry_later(struct message *m, size_t i, const struct rcpt_outcome *o,
                           int64_t not_before, int64_t now)
{
    int64_t next = now + qmgr_retry_delay(m->q, m->r[i].attempts);
    if (next < not_before) next = not_before;
    qmgr_rcpt_defer(m, i, next);
    char detail[64];
    snprintf(detail, sizeof detail, "next attempt in %llds", (long long)(next - now));
    struct record_event ev;
    record_outcome(&ev, RECORD_DEFERRED, m, i, o->res, o->dest, o->info, detail);
    ev.next_attempt_s = next - now;
    records_emit(&ev);
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
 * out when it commits is not retried (qmgr_dest.c). */
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
