/* queue.c - the queue manager; see queue.h and delivery.h. Owns every in-memory message, its
 * per-recipient state and the destinations jobs wait in: intake, recovery, scheduling into
 * destinations, job outcomes and retries, spool marks, DSNs, forgetting. Ordering rule for
 * durability: a recipient's final mark goes to the spool only after whatever must survive it (the
 * DSN) is durable; a message is forgotten only after all its marks are durable. Sign and check
 * stages: queue_prepare.c; lookups: queue_lookup.c; operator commands: queue_control.c. */
#include "deliver/queue.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/hashmap.h"
#include "common/log.h"
#include "common/clock.h"
#include "common/util.h"
#include "deliver/delivery.h"
#include "deliver/dsn.h"
#include "deliver/queue_internal.h"
#include "ingress/smtp_proto.h"
#include "records/records.h"
#include "sign/signer.h"
#include "check/alignment.h"
#include "route/route.h"

#define QUEUE_MAX_RCPTS_PER_JOB 100
#define QUEUE_SCAN_INTERVAL_US 500000

const struct config *queue_cfg;
struct spool *queue_spool;
static struct event_base *queue_base;
struct message_list queue_messages = TAILQ_HEAD_INITIALIZER(queue_messages);
struct hashmap *queue_by_id;
static struct hashmap *queue_dests;
struct event *queue_timer;
int queue_stopping;

/* --- helpers ------------------------------------------------------------------------------ */

void queue_message_add_pin(struct message *m, uint64_t seg)
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

static struct message *message_new(struct envelope *env, const struct spool_loc *loc)
{
    struct message *m = xcalloc(1, sizeof *m);
    m->env = env;
    m->loc = *loc;
    m->r = xcalloc(env->n_rcpts, sizeof *m->r);
    TAILQ_INSERT_TAIL(&queue_messages, m, link);
    hashmap_put(queue_by_id, env->queue_id, m);
    return m;
}

int queue_all_final(const struct message *m)
{
    for (size_t i = 0; i < m->env->n_rcpts; i++)
        if (m->r[i].state != RCPT_FINAL) return 0;
    return 1;
}

void queue_lowercase(char *s)
{
    for (; *s; s++)
        *s = (char)tolower((unsigned char)*s);
}

/* The current config's egress with the name of e (from this or an older config), or e itself
 * when a reload removed it. */
static const struct egress_conf *current_egress(const struct egress_conf *e)
{
    const struct egress_conf *now = config_find_egress(queue_cfg, e->name);
    return now ? now : e;
}

static struct dest *dest_get(const struct egress_conf *e, const char *domain, const char *provider)
{
    char key[600];
    /* a smarthost takes every domain, but caps and throttles apply per provider */
    if (e->type == EGRESS_SMARTHOST)
        snprintf(key, sizeof key, "%s/@%s", e->name, provider);
    else
        snprintf(key, sizeof key, "%s/%s", e->name, domain);
    queue_lowercase(key);
    struct dest *d = hashmap_get(queue_dests, key);
    if (d) return d;
    d = xcalloc(1, sizeof *d);
    d->key = xstrdup(key);
    d->egress = current_egress(e); /* an alignment reroute may name an egress of an older config */
    d->domain = xstrdup(e->type == EGRESS_SMARTHOST ? "" : domain);
    queue_lowercase(d->domain);
    d->provider = provider;
    TAILQ_INIT(&d->jobs);
    LIST_INIT(&d->idle);
    hashmap_put(queue_dests, key, d);
    return d;
}

static void dest_defer_waiting(struct dest *d);
static int64_t retry_delay(int attempts);

static void dest_kick(struct dest *d)
{
    while (d->n_jobs > 0) {
        if (smtpc_wake_idle(d)) continue;
        if (d->retry_at > clock_now()) { /* backing off: no new connection */
            if (d->connections == 0) dest_defer_waiting(d); /* nobody left to take them */
            return;
        }
        int limit = d->egress->max_connections; /* its default is in the egress settings table */
        int route_conns = 0, route_per_conn = 0;
        route_connection_limits(d->egress, d->provider, clock_now(), &route_conns, &route_per_conn);
        if (route_conns > 0 && route_conns < limit) limit = route_conns;
        if (d->failures > 0) limit = 1; /* after a failure, one probe until one works */
        d->max_per_connection = route_per_conn;
        if (d->connections >= limit || (size_t)d->connections >= d->n_jobs) return;
        d->connections++;
        smtpc_open(d);
        return;
    }
}

static void dest_retry_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct dest *d = arg;
    if (!queue_stopping) dest_kick(d);
}

/* Every job waiting for d ends now with d's failure, without a connection: its recipients are
 * deferred (or expire, or bounce on a permanent failure) and wait at least until retry_at. */
static void dest_defer_waiting(struct dest *d)
{
    struct job *j;
    while ((j = queue_dest_take_job(d))) {
        delivery_fail_all(j, d->failure.code, d->failure.enhanced, d->failure.text);
        j->not_before = d->retry_at;
        queue_job_done(j, NULL);
    }
}

void queue_dest_working(struct dest *d)
{
    if (d->failures > 0)
        log_info("deliver: %s works again after %d failed connection(s)", d->key, d->failures);
    d->working++;
    d->failures = 0;
    d->retry_at = 0;
    if (d->retry_ev) event_del(d->retry_ev);
}

void queue_dest_working_closed(struct dest *d)
{
    if (d->working > 0) d->working--;
    /* The destination worked until now: jobs left behind get one probe connection at once
     * (failures stays set, so dest_kick opens only one) instead of waiting out a back-off
     * that another connection's failure started meanwhile. */
    if (d->working == 0 && d->retry_at) {
        d->retry_at = 0;
        if (d->retry_ev) event_del(d->retry_ev);
    }
}

void queue_dest_failed(struct dest *d, const struct rcpt_result *why,
                       const struct attempt_info *info)
{
    d->failure = *why;
    if (why->code < 500) {
        d->failures++;
        int64_t wait = retry_delay(d->failures);
        d->retry_at = clock_now() + wait;
        if (!d->retry_ev) d->retry_ev = evtimer_new(queue_base, dest_retry_cb, d);
        struct timeval tv = {(time_t)wait, 0};
        evtimer_add(d->retry_ev, &tv);
        log_info("deliver: %s: no new connection for %llds (failure %d in a row): %s", d->key,
                 (long long)wait, d->failures, why->text);
        /* a working connection takes the waiting jobs; one still opening may; when the last
         * connection closes, dest_kick defers whatever is left (the back-off holds) */
        if (d->working > 0 || d->connections > 1) return;
    }
    struct job *j;
    while ((j = queue_dest_take_job(d))) {
        delivery_fail_all(j, why->code, why->enhanced, why->text);
        j->not_before = d->retry_at;
        queue_job_done(j, info);
    }
}

struct job *queue_dest_take_job(struct dest *d)
{
    struct job *j = TAILQ_FIRST(&d->jobs);
    if (j) {
        TAILQ_REMOVE(&d->jobs, j, link);
        d->n_jobs--;
    }
    return j;
}

void queue_dest_connection_closed(struct dest *d)
{
    d->connections--;
    if (!queue_stopping) dest_kick(d);
}

void delivery_fail_all(struct job *job, int code, const char *enhanced, const char *text)
{
    for (size_t i = 0; i < job->n_rcpts; i++) {
        job->results[i].code = code;
        snprintf(job->results[i].enhanced, sizeof job->results[i].enhanced, "%s", enhanced);
        snprintf(job->results[i].text, sizeof job->results[i].text, "%s", text);
    }
}

int queue_strip_upstream(const struct message *m)
{
    const struct origin_conf *o = config_find_origin(queue_cfg, m->env->origin);
    return o && o->strip_upstream_dkim;
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
        if (spool_read(queue_spool, &m->loc, &body) < 0) {
            strbuf_free(&body);
            return -1;
        }
        strbuf_append(out, body.data, body.len);
        strbuf_free(&body);
    }
    if (queue_strip_upstream(m)) {
        size_t skip = m->sign ? m->sign->headers.len : 0;
        out->len = skip + dkim_strip_signatures(out->data + skip, out->len - skip);
        out->data[out->len] = '\0';
    }
    return 0;
}

/* The original as received (for DSNs). */
int queue_message_original(struct message *m, struct strbuf *out)
{
    if (m->has_data) {
        strbuf_reset(out);
        strbuf_append(out, m->data.data, m->data.len);
        return 0;
    }
    return spool_read(queue_spool, &m->loc, out);
}

const struct envelope *queue_message_envelope(const struct message *m)
{
    return m->env;
}

/* --- scheduling ---------------------------------------------------------------------------- */

static void enqueue_job(struct message *m, struct dest *d, size_t *idx, size_t n)
{
    struct job *j = xcalloc(1, sizeof *j);
    j->msg = m;
    j->dest = d;
    j->rcpts = xmalloc(n * sizeof *j->rcpts);
    memcpy(j->rcpts, idx, n * sizeof *idx);
    j->n_rcpts = n;
    j->results = xcalloc(n, sizeof *j->results);
    for (size_t i = 0; i < n; i++)
        m->r[idx[i]].state = RCPT_INFLIGHT;
    m->inflight++;
    TAILQ_INSERT_TAIL(&d->jobs, j, link);
    d->n_jobs++;
    dest_kick(d);
}

static void emit_routed(struct message *m, size_t i, const struct route_decision *rd,
                        const struct egress_conf *e, const char *provider)
{
    struct rcpt *r = &m->r[i];
    if (e && r->routed == e) return;
    if (!e && r->waiting_recorded) return;
    char detail[300];
    snprintf(detail, sizeof detail, "provider=%s%s%s%s", provider, rd->reason[0] ? "; " : "",
             rd->reason, e ? "" : "; waiting in the queue");
    struct record_event ev = {.event = "routed",
                              .queue_id = m->env->queue_id,
                              .message_id = m->env->message_id,
                              .origin = m->env->origin,
                              .sender = m->env->sender,
                              .recipient = m->env->rcpts[i].address,
                              .egress = e ? e->name : NULL,
                              .from_domain = m->env->from_domain,
                              .ramp_percent = rd->share,
                              .provider = provider,
                              .action = !e                 ? "wait"
                                        : e != rd->planned ? "spill"
                                                           : "ramp",
                              .detail = detail};
    records_emit(&ev);
    r->routed = e;
    r->waiting_recorded = !e;
}

void queue_schedule(struct message *m, int64_t now)
{
    if (m->held || m->deleted || queue_stopping) return;
    if (m->sign_state != STAGE_DONE) {
        if (m->sign_state == STAGE_TODO) queue_start_sign(m);
        return;
    }
    if (m->check_state != STAGE_DONE) {
        if (m->check_state == STAGE_TODO && now >= m->check_retry_at) queue_start_check(m);
        return;
    }
    size_t n = m->env->n_rcpts;
    const struct egress_conf **chosen = xcalloc(n, sizeof *chosen);
    const char **providers = xcalloc(n, sizeof *providers);
    size_t *expired = xmalloc(n * sizeof *expired);
    size_t n_expired = 0;
    for (size_t i = 0; i < n; i++) {
        struct rcpt *r = &m->r[i];
        if (r->state != RCPT_PENDING || r->next_try > now) continue;
        if (now - m->env->arrival >= queue_cfg->max_lifetime) {
            /* the lifetime holds at every try, also for mail that never got a connection
             * (waiting for a cap, a suspension or a destination's back-off) */
            r->state = RCPT_FINAL;
            r->final = SPOOL_MARK_EXPIRED;
            if (r->status[0] != '4') snprintf(r->status, sizeof r->status, "4.4.7");
            queue_emit("expired", m, i, NULL, NULL, NULL, "maximum queue lifetime exceeded");
            expired[n_expired++] = i;
            continue;
        }
        enum dedup_verdict dv = queue_dedup_check(m, i, now);
        if (dv == DEDUP_WAIT) { /* another copy is being delivered: its outcome decides */
            r->next_try = now + 2;
            continue;
        }
        if (dv == DEDUP_SUPPRESS) {
            r->state = RCPT_FINAL;
            r->final = SPOOL_MARK_DELIVERED;
            queue_emit("suppressed", m, i, NULL, NULL, NULL,
                       "duplicate: this Message-ID was already delivered to this recipient");
            queue_submit_mark(m, i, SPOOL_MARK_DELIVERED);
            continue;
        }
        const char *provider = queue_provider_of(smtp_address_domain(m->env->rcpts[i].address));
        if (!provider) continue; /* being looked up; the scan comes back */
        struct route_decision rd;
        route_decide(m->env, i, provider, now, &rd);
        if (!rd.egress) {
            /* wait until retry_at, but look again at least every minute (caps and suspensions
             * can also end by an operator's command) */
            int64_t wait = rd.retry_at - now;
            r->next_try = now + (wait < 1 ? 1 : wait > 60 ? 60 : wait);
            emit_routed(m, i, &rd, NULL, provider);
            continue;
        }
        int stop = 0;
        const struct egress_conf *e = queue_apply_alignment(m, i, rd.egress, &stop);
        if (stop) break;  /* held */
        if (!e) continue; /* bounced for alignment */
        emit_routed(m, i, &rd, e, provider);
        chosen[i] = e;
        providers[i] = provider;
    }
    size_t *idx = xmalloc(n * sizeof *idx);
    for (size_t i = 0; i < n && !m->held; i++) {
        if (!chosen[i]) continue;
        const struct egress_conf *e = chosen[i];
        const char *provider = providers[i];
        const char *domain = smtp_address_domain(m->env->rcpts[i].address);
        struct dest *d = dest_get(e, domain, provider);
        size_t k = 0;
        for (size_t j = i; j < n; j++) {
            if (chosen[j] != e || providers[j] != provider) continue;
            if (e->type != EGRESS_SMARTHOST &&
                strcasecmp(smtp_address_domain(m->env->rcpts[j].address), domain) != 0)
                continue;
            chosen[j] = NULL;
            idx[k++] = j;
            if (k == QUEUE_MAX_RCPTS_PER_JOB) {
                route_count(e, provider, now);
                enqueue_job(m, d, idx, k);
                k = 0;
            }
        }
        if (k) {
            route_count(e, provider, now);
            enqueue_job(m, d, idx, k);
        }
    }
    free(idx);
    free(chosen);
    free(providers);
    if (n_expired) queue_send_dsn(m, expired, n_expired);
    free(expired);
}

static void scan_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    int64_t now = clock_now();
    static int64_t last_flush;
    if (now - last_flush >= 5) { /* counters of quiet periods reach route.db too */
        route_flush();
        last_flush = now;
    }
    static int64_t last_prune;
    if (now - last_prune >= 60) {
        queue_dedup_prune(now);
        last_prune = now;
    }
    queue_compact(now);
    struct message *m;
    TAILQ_FOREACH(m, &queue_messages, link)
    {
        if (m->held || m->deleted) continue;
        if (m->check_state == STAGE_TODO && m->sign_state == STAGE_DONE && m->check_retry_at &&
            m->check_retry_at <= now) {
            queue_schedule(m, now);
            continue;
        }
        for (size_t i = 0; i < m->env->n_rcpts; i++) {
            if (m->r[i].state == RCPT_PENDING && m->r[i].next_try <= now) {
                queue_schedule(m, now);
                break;
            }
        }
    }
}

/* --- outcomes -------------------------------------------------------------------------------- */

struct mark_ctx {
    struct message *m;
    size_t rcpt; /* SIZE_MAX: not a recipient mark */
};

static void mark_done(void *arg, int status, const struct spool_loc *loc, const char *err)
{
    struct mark_ctx *c = arg;
    struct message *m = c->m;
    m->marks_pending--;
    if (status == 0) {
        queue_message_add_pin(m, loc->segment);
        if (c->rcpt != SIZE_MAX) m->r[c->rcpt].mark_committed = 1;
    } else {
        /* The outcome is not durable; after a restart the recipient would be tried again
         * (a possible duplicate, never a loss). */
        log_error("%s: spool mark not stored: %s", m->env->queue_id, err);
        if (c->rcpt != SIZE_MAX) m->r[c->rcpt].mark_committed = 1;
    }
    free(c);
    queue_message_maybe_forget(m);
}

void queue_submit_mark(struct message *m, size_t rcpt, enum spool_mark mark)
{
    struct mark_ctx *c = xcalloc(1, sizeof *c);
    c->m = m;
    c->rcpt = rcpt;
    m->marks_pending++;
    spool_submit_mark(queue_spool, m->env->queue_id,
                      rcpt == SIZE_MAX ? SPOOL_ALL_RCPTS : (uint32_t)rcpt, mark, mark_done, c);
}

void queue_message_maybe_forget(struct message *m)
{
    if (m->inflight > 0 || m->marks_pending > 0 || m->prep_pending > 0) return;
    if (!m->deleted && !queue_all_final(m)) return;
    for (size_t i = 0; i < m->n_pins; i++)
        spool_unpin(queue_spool, m->pins[i]);
    TAILQ_REMOVE(&queue_messages, m, link);
    hashmap_remove(queue_by_id, m->env->queue_id);
    queue_dedup_forget_message(m);
    message_free(m);
}

void queue_emit(const char *event, const struct message *m, size_t rcpt,
                const struct rcpt_result *res, const struct dest *d,
                const struct attempt_info *info, const char *detail)
{
    int64_t now_us = clock_now_us();
    struct record_event ev = {
        .event = event,
        .queue_id = m->env->queue_id,
        .message_id = m->env->message_id,
        .origin = m->env->origin,
        .client_addr = m->env->client_addr,
        .sender = m->env->sender,
        .recipient = rcpt != SIZE_MAX ? m->env->rcpts[rcpt].address : NULL,
        .egress = d ? d->egress->name : NULL,
        .provider = d ? d->provider : NULL,
        .source_addr = info ? info->source_addr : NULL,
        .remote_mx = info ? info->remote_mx : NULL,
        .remote_addr = info ? info->remote_addr : NULL,
        .reply_code = res ? res->code : 0,
        .enhanced_code = res && res->enhanced[0] ? res->enhanced : NULL,
        .reply_text = res && res->text[0] ? res->text : NULL,
        .tls_version = info ? info->tls_version : NULL,
        .tls_cipher = info ? info->tls_cipher : NULL,
        .size = m->env->size,
        .delay_ms =
            (now_us - (m->env->arrival_us ? m->env->arrival_us : m->env->arrival * 1000000)) / 1000,
        .attempt_ms = info && info->started_us ? (now_us - info->started_us) / 1000 : 0,
        .detail = detail,
    };
    records_emit(&ev);
}

/* DSN for the recipients that just became final with B/E; their marks follow its commit. */
struct dsn_ctx {
    struct message *m;
    size_t *rcpts;
    size_t n;
    struct envelope *env;
};

static void dsn_committed(void *arg, int status, const struct spool_loc *loc, const char *err)
{
    struct dsn_ctx *c = arg;
    struct message *m = c->m;
    m->marks_pending--;
    if (status == 0) {
        struct record_event ev = {.event = "dsn",
                                  .queue_id = m->env->queue_id,
                                  .message_id = m->env->message_id,
                                  .sender = m->env->sender,
                                  .detail = c->env->queue_id};
        records_emit(&ev);
        queue_accept(c->env, loc, NULL);
        c->env = NULL;
        for (size_t i = 0; i < c->n; i++)
            queue_submit_mark(m, c->rcpts[i], m->r[c->rcpts[i]].final);
    } else {
        /* The sender must hear of the failure: these recipients are not final until the DSN
         * is durable. They are tried again in a minute, fail again and bring a new DSN. */
        log_error("%s: DSN not stored (recipients kept, retried in 60s): %s", m->env->queue_id,
                  err);
        envelope_free(c->env);
        for (size_t i = 0; i < c->n; i++) {
            m->r[c->rcpts[i]].state = RCPT_PENDING;
            m->r[c->rcpts[i]].next_try = clock_now() + 60;
        }
    }
    free(c->rcpts);
    free(c);
    queue_message_maybe_forget(m);
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

void queue_send_dsn(struct message *m, size_t *rcpts, size_t n)
{
    size_t k = 0;
    struct dsn_recipient *dr = xcalloc(n, sizeof *dr);
    size_t *notify_rcpts = xmalloc(n * sizeof *notify_rcpts);
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
        notify_rcpts[k++] = rcpts[i];
    }
    free(notify_rcpts);
    if (m->env->sender[0] == '\0' || k == 0) {
        /* No bounce for a bounce; no DSN where NOTIFY says never. */
        for (size_t i = 0; i < n; i++)
            queue_submit_mark(m, rcpts[i], m->r[rcpts[i]].final);
        free(dr);
        return;
    }
    struct strbuf original = STRBUF_INIT, text = STRBUF_INIT, envtext = STRBUF_INIT;
    if (queue_message_original(m, &original) < 0)
        strbuf_puts(&original, "(original message could not be read from the spool)\r\n");
    struct dsn_request req = {.reporting_mta = queue_cfg->hostname,
                              .queue_id = m->env->queue_id,
                              .envid = m->env->envid,
                              .sender = m->env->sender,
                              .arrival = m->env->arrival,
                              .recipients = dr,
                              .n_recipients = k,
                              .original = original.data,
                              .original_len = original.len,
                              .headers_only = m->env->ret_hdrs};
    dsn_build(&req, &text);
    struct envelope *env = envelope_new();
    new_dsn_queue_id(env->queue_id, sizeof env->queue_id);
    env->arrival_us = clock_now_us();
    env->arrival = env->arrival_us / 1000000;
    env->origin = xstrdup("dsn");
    env->client_addr = xstrdup("localhost");
    env->helo = xstrdup(queue_cfg->hostname);
    env->sender = xstrdup("");
    env->size = (int64_t)text.len;
    envelope_add_rcpt(env, m->env->sender, NULL, 0);
    envelope_serialize(env, &envtext);
    struct dsn_ctx *c = xcalloc(1, sizeof *c);
    c->m = m;
    c->env = env;
    c->rcpts = xmalloc(n * sizeof *c->rcpts);
    memcpy(c->rcpts, rcpts, n * sizeof *rcpts);
    c->n = n;
    m->marks_pending++;
    spool_submit_message(queue_spool, envtext.data, envtext.len, text.data, text.len, dsn_committed,
                         c);
    strbuf_free(&original);
    strbuf_free(&text);
    strbuf_free(&envtext);
    free(dr);
}

static int64_t retry_delay(int attempts)
{
    if (queue_cfg->n_retry == 0) return 300;
    size_t i = attempts <= 0 ? 0 : (size_t)attempts - 1;
    if (i >= queue_cfg->n_retry) i = queue_cfg->n_retry - 1;
    return queue_cfg->retry[i];
}

void queue_record_reply(struct rcpt *r, const struct rcpt_result *res,
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

void queue_job_done(struct job *job, const struct attempt_info *info)
{
    struct message *m = job->msg;
    int64_t now = clock_now();
    size_t *failed = xmalloc(job->n_rcpts * sizeof *failed);
    size_t n_failed = 0;

    m->inflight--;
    if (info) queue_emit("attempt", m, SIZE_MAX, NULL, job->dest, info, NULL);
    if (info && info->reply_code)
        route_feedback(job->dest->egress, job->dest->provider, info->reply_code,
                       info->reply_enhanced, info->reply_text, clock_now());
    for (size_t i = 0; i < job->n_rcpts; i++) {
        size_t ri = job->rcpts[i];
        struct rcpt *r = &m->r[ri];
        struct rcpt_result *res = &job->results[i];
        r->attempts++;
        queue_record_reply(r, res, info);
        if (m->deleted) {
            r->state = RCPT_FINAL;
            continue;
        }
        queue_dedup_outcome(m, ri, res->code >= 200 && res->code < 300, now);
        if (res->code >= 200 && res->code < 300) {
            r->state = RCPT_FINAL;
            r->final = SPOOL_MARK_DELIVERED;
            queue_emit("delivered", m, ri, res, job->dest, info, NULL);
            queue_submit_mark(m, ri, SPOOL_MARK_DELIVERED);
        } else if (res->code >= 500) {
            r->state = RCPT_FINAL;
            r->final = SPOOL_MARK_BOUNCED;
            if (!r->status[0]) snprintf(r->status, sizeof r->status, "5.0.0");
            queue_emit("bounced", m, ri, res, job->dest, info, NULL);
            failed[n_failed++] = ri;
        } else if (now - m->env->arrival >= queue_cfg->max_lifetime) {
            r->state = RCPT_FINAL;
            r->final = SPOOL_MARK_EXPIRED;
            if (!r->status[0] || r->status[0] != '4')
                snprintf(r->status, sizeof r->status, "4.4.7");
            queue_emit("expired", m, ri, res, job->dest, info, "maximum queue lifetime exceeded");
            failed[n_failed++] = ri;
        } else {
            r->state = RCPT_PENDING;
            r->next_try = now + retry_delay(r->attempts);
            if (r->next_try < job->not_before) r->next_try = job->not_before;
            char detail[64];
            snprintf(detail, sizeof detail, "next attempt in %llds",
                     (long long)(r->next_try - now));
            queue_emit("deferred", m, ri, res, job->dest, info, detail);
        }
    }
    if (n_failed) queue_send_dsn(m, failed, n_failed);
    free(failed);
    if (m->has_data && m->inflight == 0) {
        strbuf_free(&m->data); /* later attempts read it back from the spool */
        m->has_data = 0;
    }
    free(job->rcpts);
    free(job->results);
    free(job);
    queue_message_maybe_forget(m);
}

/* --- intake ---------------------------------------------------------------------------------- */

void queue_accept(struct envelope *env, const struct spool_loc *loc, struct strbuf *data)
{
    struct message *m = message_new(env, loc);
    queue_message_add_pin(m, loc->segment);
    if (data && data->len) {
        m->data = *data;
        m->has_data = 1;
        *data = (struct strbuf)STRBUF_INIT;
    }
    queue_schedule(m, clock_now());
}

static int recover_one(void *arg, const struct spool_recovered *rec)
{
    (void)arg;
    struct envelope *env = envelope_parse(rec->envelope, rec->envelope_len);
    if (!env) {
        log_error("spool: an unreadable envelope in segment %llu was skipped",
                  (unsigned long long)rec->loc.segment);
        return 0;
    }
    char *final = xcalloc(env->n_rcpts, 1);
    int held = 0, deleted = 0;
    for (size_t i = 0; i < rec->n_marks; i++) {
        char kind = rec->mark_kind[i];
        uint32_t idx = rec->mark_rcpt[i];
        if (kind == SPOOL_MARK_HELD)
            held = 1;
        else if (kind == SPOOL_MARK_RELEASED)
            held = 0;
        else if (kind == SPOOL_MARK_DELETED)
            deleted = 1;
        else if (idx < env->n_rcpts)
            final[idx] = kind;
    }
    size_t open = 0;
    for (size_t i = 0; i < env->n_rcpts; i++)
        open += final[i] == 0;
    if (deleted || open == 0) {
        free(final);
        envelope_free(env);
        return 0;
    }
    struct message *m = message_new(env, &rec->loc);
    for (size_t i = 0; i < rec->n_pins; i++)
        queue_message_add_pin(m, rec->pins[i]);
    for (size_t i = 0; i < env->n_rcpts; i++) {
        if (final[i]) {
            m->r[i].state = RCPT_FINAL;
            m->r[i].final = final[i];
            m->r[i].mark_committed = 1;
        }
    }
    m->held = held;
    free(final);
    return 1;
}

int queue_recover(char *err, size_t errlen)
{
    int n = spool_recover(queue_spool, recover_one, NULL, err, errlen);
    if (n < 0) return -1;
    int64_t now = clock_now();
    struct message *m, *next;
    for (m = TAILQ_FIRST(&queue_messages); m; m = next) {
        next = TAILQ_NEXT(m, link);
        queue_schedule(m, now);
    }
    return n;
}

int queue_init(struct event_base *base, const struct config *cfg, struct spool *sp, char *err,
               size_t errlen)
{
    queue_base = base;
    queue_cfg = cfg;
    queue_spool = sp;
    queue_by_id = hashmap_new();
    queue_dests = hashmap_new();
    queue_lookup_init(cfg);
    if (smtpc_init(base, cfg, err, errlen) < 0) return -1;
    queue_timer = event_new(base, -1, EV_PERSIST, scan_cb, NULL);
    struct timeval tv = {0, QUEUE_SCAN_INTERVAL_US};
    event_add(queue_timer, &tv);
    return 0;
}

static void reload_dest(void *arg, const char *key, void *value)
{
    (void)arg;
    (void)key;
    struct dest *d = value;
    d->egress = current_egress(d->egress);
}

int queue_reload(const struct config *cfg, char *err, size_t errlen)
{
    if (smtpc_reload(cfg, err, errlen) < 0) return -1;
    queue_cfg = cfg;
    if (queue_dests) hashmap_foreach(queue_dests, reload_dest, NULL);
    queue_lookup_reload();
    return 0;
}

static void free_dest(void *arg, const char *key, void *value)
{
    (void)arg;
    (void)key;
    struct dest *d = value;
    struct job *j;
    while ((j = TAILQ_FIRST(&d->jobs))) {
        TAILQ_REMOVE(&d->jobs, j, link);
        free(j->rcpts);
        free(j->results);
        free(j);
    }
    if (d->retry_ev) event_free(d->retry_ev);
    free(d->key);
    free(d->domain);
    free(d);
}

void queue_stop(void)
{
    queue_stopping = 1;
    if (queue_timer) event_free(queue_timer);
    queue_timer = NULL;
    smtpc_shutdown();
}

void queue_shutdown(void)
{
    if (!queue_stopping) queue_stop();
    if (queue_dests) {
        hashmap_foreach(queue_dests, free_dest, NULL);
        hashmap_free(queue_dests);
        queue_dests = NULL;
    }
    struct message *m;
    while ((m = TAILQ_FIRST(&queue_messages))) {
        TAILQ_REMOVE(&queue_messages, m, link);
        message_free(m);
    }
    hashmap_free(queue_by_id);
    queue_by_id = NULL;
    queue_lookup_shutdown();
}
