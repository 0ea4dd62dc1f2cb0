/* queue.c - the queue manager; see queue.h and delivery.h. Owns every in-memory message, its
 * per-recipient state and the destinations jobs wait in. Ordering rule for durability: a
 * recipient's final mark goes to the spool only after whatever must survive it (the DSN) is
 * durable; a message is forgotten only after all its marks are durable. */
#include "deliver/queue.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/hashmap.h"
#include "common/log.h"
#include "common/util.h"
#include "deliver/delivery.h"
#include "deliver/dsn.h"
#include "ingress/smtp_proto.h"
#include "records/records.h"
#include "sign/signer.h"
#include "check/alignment.h"
#include "dns/dns.h"
#include "route/route.h"

#define QUEUE_MAX_RCPTS_PER_JOB 100
#define QUEUE_SCAN_INTERVAL_US 500000

enum rcpt_state { RCPT_PENDING, RCPT_INFLIGHT, RCPT_FINAL };

struct rcpt {
    enum rcpt_state state;
    char final; /* spool mark once final: D, B, E */
    int attempts;
    int64_t next_try; /* unix seconds */
    char *last_reply; /* for queue list and DSNs */
    char *last_mx;
    char status[16];    /* enhanced status of the last reply */
    int mark_committed; /* its final mark is durable */
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
    uint64_t *pins;
    size_t n_pins;
};
TAILQ_HEAD(message_list, message);

static const struct config *queue_cfg;
static struct spool *queue_spool;
static struct event_base *queue_base;
static struct message_list queue_messages = TAILQ_HEAD_INITIALIZER(queue_messages);
static struct hashmap *queue_by_id;
static struct hashmap *queue_dests;
static struct event *queue_timer;
static int queue_stopping;
static size_t queue_count;

static void message_maybe_forget(struct message *m);
static void schedule(struct message *m, int64_t now);

/* --- helpers ------------------------------------------------------------------------------ */

static void message_add_pin(struct message *m, uint64_t seg)
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
    queue_count++;
    return m;
}

static int all_final(const struct message *m)
{
    for (size_t i = 0; i < m->env->n_rcpts; i++)
        if (m->r[i].state != RCPT_FINAL) return 0;
    return 1;
}

static void lowercase(char *s)
{
    for (; *s; s++)
        *s = (char)tolower((unsigned char)*s);
}

/* --- providers of recipient domains ---------------------------------------------------------- */
/* The route stage needs to know which provider (Microsoft, Google...) a recipient domain belongs
 * to, which its MX hosts tell. Answers are cached per domain for the DNS TTL; while a lookup runs
 * the recipients wait (the scan timer picks them up again). Without configured providers every
 * domain is "other" and no lookup happens. */

struct provider_entry {
    const char *provider; /* NULL while the lookup runs */
    int64_t expires;
    struct dns_query *query;
    char *domain;
};

static struct hashmap *queue_providers;

static void provider_answer(void *arg, const struct dns_answer *a)
{
    struct provider_entry *p = arg;
    p->query = NULL;
    const char *hosts[32];
    size_t n = 0;
    for (size_t i = 0; a->status == DNS_OK && i < a->n && n < 32; i++)
        hosts[n++] = a->mx[i].host;
    if (a->status == DNS_NODATA) /* implicit MX: the domain itself */
        hosts[n++] = p->domain;
    p->provider = route_provider(hosts, n);
    unsigned ttl = a->status == DNS_OK ? a->ttl : 60;
    p->expires = util_now() + (ttl < 60 ? 60 : ttl > 86400 ? 86400 : ttl);
    if (queue_timer) event_active(queue_timer, EV_TIMEOUT, 0); /* reschedule waiting mail */
}

/* The provider of a domain, or NULL while it is being looked up. */
static const char *provider_of(const char *domain)
{
    if (queue_cfg->n_providers == 0) return "other";
    char key[256];
    snprintf(key, sizeof key, "%s", domain);
    lowercase(key);
    struct provider_entry *p = hashmap_get(queue_providers, key);
    if (p && p->provider && p->expires > util_now()) return p->provider;
    if (!p) {
        p = xcalloc(1, sizeof *p);
        p->domain = xstrdup(key);
        hashmap_put(queue_providers, key, p);
    }
    if (!p->query) {
        if (p->provider && p->expires <= util_now()) p->provider = NULL;
        p->query = dns_query(key, DNS_TYPE_MX, provider_answer, p);
    }
    return p->provider;
}

static void free_provider(void *arg, const char *key, void *value)
{
    (void)arg;
    (void)key;
    struct provider_entry *p = value;
    if (p->query) dns_cancel(p->query);
    free(p->domain);
    free(p);
}


static struct dest *dest_get(const struct egress_conf *e, const char *domain,
                             const char *provider)
{
    char key[600];
    /* a smarthost takes every domain, but caps and throttles apply per provider */
    if (e->type == EGRESS_SMARTHOST)
        snprintf(key, sizeof key, "%s/@%s", e->name, provider);
    else
        snprintf(key, sizeof key, "%s/%s", e->name, domain);
    lowercase(key);
    struct dest *d = hashmap_get(queue_dests, key);
    if (d) return d;
    d = xcalloc(1, sizeof *d);
    d->key = xstrdup(key);
    d->egress = e;
    d->domain = xstrdup(e->type == EGRESS_SMARTHOST ? "" : domain);
    lowercase(d->domain);
    d->provider = provider;
    TAILQ_INIT(&d->jobs);
    LIST_INIT(&d->idle);
    hashmap_put(queue_dests, key, d);
    return d;
}

static void dest_kick(struct dest *d)
{
    while (d->n_jobs > 0) {
        if (smtpc_wake_idle(d)) continue;
        int limit = d->egress->max_connections > 0 ? d->egress->max_connections : 10;
        int route_conns = 0, route_per_conn = 0;
        route_connection_limits(d->egress, d->provider, route_now(), &route_conns,
                                &route_per_conn);
        if (route_conns > 0 && route_conns < limit) limit = route_conns;
        d->max_per_connection = route_per_conn;
        if (d->connections >= limit || (size_t)d->connections >= d->n_jobs) return;
        d->connections++;
        smtpc_open(d);
        return;
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

static int strip_upstream(const struct message *m)
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
    if (strip_upstream(m)) {
        size_t skip = m->sign ? m->sign->headers.len : 0;
        out->len = skip + dkim_strip_signatures(out->data + skip, out->len - skip);
        out->data[out->len] = '\0';
    }
    return 0;
}

/* The original as received (for DSNs). */
static int message_original(struct message *m, struct strbuf *out)
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

/* --- duplicate suppression ------------------------------------------------------------------- */
/* During coexistence both platforms can hand us the same message (journaling, forwarding, both
 * answering). A (Message-ID, recipient) pair delivered within dedup.window is not sent again;
 * while one copy is being delivered, another waits for its outcome. The delivered pairs of the
 * window are reloaded from the records at start. */

struct dedup_entry {
    int64_t delivered_at;            /* 0: not delivered (yet) */
    const struct message *inflight;  /* the copy being delivered now, or NULL */
};

static struct hashmap *queue_dedup;

enum dedup_verdict { DEDUP_SEND, DEDUP_SUPPRESS, DEDUP_WAIT };

static int dedup_key(const struct message *m, size_t i, char *out, size_t size)
{
    if (!queue_cfg->dedup_enabled || !m->env->message_id || !m->env->message_id[0]) return -1;
    snprintf(out, size, "%s\n%s", m->env->message_id, m->env->rcpts[i].address);
    lowercase(out);
    return 0;
}

static void dedup_load_one(void *arg, const char *message_id, const char *recipient,
                           int64_t ts_us)
{
    (void)arg;
    char key[1200];
    if (!message_id || !recipient) return;
    snprintf(key, sizeof key, "%s\n%s", message_id, recipient);
    lowercase(key);
    struct dedup_entry *e = hashmap_get(queue_dedup, key);
    if (!e) {
        e = xcalloc(1, sizeof *e);
        hashmap_put(queue_dedup, key, e);
    }
    e->delivered_at = ts_us / 1000000;
}

static enum dedup_verdict dedup_check(struct message *m, size_t i, int64_t now)
{
    char key[1200];
    if (dedup_key(m, i, key, sizeof key) < 0) return DEDUP_SEND;
    struct dedup_entry *e = hashmap_get(queue_dedup, key);
    if (e && e->delivered_at && now - e->delivered_at < queue_cfg->dedup_window)
        return DEDUP_SUPPRESS;
    if (e && e->inflight && e->inflight != m) return DEDUP_WAIT;
    if (!e) {
        e = xcalloc(1, sizeof *e);
        hashmap_put(queue_dedup, key, e);
    }
    e->inflight = m;
    return DEDUP_SEND;
}

/* The outcome of a delivery attempt for recipient i of m. */
static void dedup_outcome(const struct message *m, size_t i, int delivered, int64_t now)
{
    char key[1200];
    if (dedup_key(m, i, key, sizeof key) < 0) return;
    struct dedup_entry *e = hashmap_get(queue_dedup, key);
    if (!e) return;
    if (delivered) e->delivered_at = now;
    if (e->inflight == m) e->inflight = NULL;
}

static void dedup_forget_message(const struct message *m)
{
    for (size_t i = 0; i < m->env->n_rcpts; i++) dedup_outcome(m, i, 0, 0);
}

struct dedup_prune {
    int64_t now;
    char **dead;
    size_t n;
};

static void dedup_find_old(void *arg, const char *key, void *value)
{
    struct dedup_prune *p = arg;
    struct dedup_entry *e = value;
    if (!e->inflight && p->now - e->delivered_at >= queue_cfg->dedup_window) {
        p->dead = xrealloc(p->dead, (p->n + 1) * sizeof *p->dead);
        p->dead[p->n++] = xstrdup(key);
    }
}

static void dedup_prune(int64_t now)
{
    struct dedup_prune p = {now, NULL, 0};
    hashmap_foreach(queue_dedup, dedup_find_old, &p);
    for (size_t i = 0; i < p.n; i++) {
        free(hashmap_remove(queue_dedup, p.dead[i]));
        free(p.dead[i]);
    }
    free(p.dead);
}

static void free_dedup(void *arg, const char *key, void *value)
{
    (void)arg;
    (void)key;
    free(value);
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

static void start_sign(struct message *m);
static void start_check(struct message *m);
static void submit_mark(struct message *m, size_t rcpt, enum spool_mark mark);
static void emit(const char *event, const struct message *m, size_t rcpt,
                 const struct rcpt_result *res, const struct dest *d,
                 const struct attempt_info *info, const char *detail);

/* The alignment decision for recipients routed to egress e: returns the egress to use (e, or
 * another one whose DMARC would pass), or NULL when the message was held (*stop set) or the
 * recipient bounced. */
static const struct egress_conf *apply_alignment(struct message *m, size_t rcpt,
                                                 const struct egress_conf *e, int *stop);

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
                              .action = !e                  ? "wait"
                                        : e != rd->planned ? "spill"
                                                           : "ramp",
                              .detail = detail};
    records_emit(&ev);
    r->routed = e;
    r->waiting_recorded = !e;
}

static void schedule(struct message *m, int64_t now)
{
    if (m->held || m->deleted || queue_stopping) return;
    if (m->sign_state != STAGE_DONE) {
        if (m->sign_state == STAGE_TODO) start_sign(m);
        return;
    }
    if (m->check_state != STAGE_DONE) {
        if (m->check_state == STAGE_TODO && now >= m->check_retry_at) start_check(m);
        return;
    }
    size_t n = m->env->n_rcpts;
    const struct egress_conf **chosen = xcalloc(n, sizeof *chosen);
    const char **providers = xcalloc(n, sizeof *providers);
    int64_t rnow = route_now();
    for (size_t i = 0; i < n; i++) {
        struct rcpt *r = &m->r[i];
        if (r->state != RCPT_PENDING || r->next_try > now) continue;
        enum dedup_verdict dv = dedup_check(m, i, now);
        if (dv == DEDUP_WAIT) { /* another copy is being delivered: its outcome decides */
            r->next_try = now + 2;
            continue;
        }
        if (dv == DEDUP_SUPPRESS) {
            r->state = RCPT_FINAL;
            r->final = SPOOL_MARK_DELIVERED;
            emit("suppressed", m, i, NULL, NULL, NULL,
                 "duplicate: this Message-ID was already delivered to this recipient");
            submit_mark(m, i, SPOOL_MARK_DELIVERED);
            continue;
        }
        const char *provider = provider_of(smtp_address_domain(m->env->rcpts[i].address));
        if (!provider) continue; /* being looked up; the scan comes back */
        struct route_decision rd;
        route_decide(m->env, i, provider, rnow, &rd);
        if (!rd.egress) {
            /* retry_at is on the route clock; wait that long on ours, but look again at least
             * every minute (caps and suspensions can also end by an operator's command) */
            int64_t wait = rd.retry_at - rnow;
            r->next_try = now + (wait < 1 ? 1 : wait > 60 ? 60 : wait);
            emit_routed(m, i, &rd, NULL, provider);
            continue;
        }
        int stop = 0;
        const struct egress_conf *e = apply_alignment(m, i, rd.egress, &stop);
        if (stop) break; /* held */
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
                route_count(e, provider, rnow);
                enqueue_job(m, d, idx, k);
                k = 0;
            }
        }
        if (k) {
            route_count(e, provider, rnow);
            enqueue_job(m, d, idx, k);
        }
    }
    free(idx);
    free(chosen);
    free(providers);
}

static void scan_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    int64_t now = util_now();
    static int64_t last_flush;
    if (now - last_flush >= 5) { /* counters of quiet periods reach route.db too */
        route_flush();
        last_flush = now;
    }
    static int64_t last_prune;
    if (now - last_prune >= 60) {
        dedup_prune(now);
        last_prune = now;
    }
    struct message *m;
    TAILQ_FOREACH(m, &queue_messages, link)
    {
        if (m->held || m->deleted) continue;
        if (m->check_state == STAGE_TODO && m->sign_state == STAGE_DONE && m->check_retry_at &&
            m->check_retry_at <= now) {
            schedule(m, now);
            continue;
        }
        for (size_t i = 0; i < m->env->n_rcpts; i++) {
            if (m->r[i].state == RCPT_PENDING && m->r[i].next_try <= now) {
                schedule(m, now);
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
        message_add_pin(m, loc->segment);
        if (c->rcpt != SIZE_MAX) m->r[c->rcpt].mark_committed = 1;
    } else {
        /* The outcome is not durable; after a restart the recipient would be tried again
         * (a possible duplicate, never a loss). */
        log_error("%s: spool mark not stored: %s", m->env->queue_id, err);
        if (c->rcpt != SIZE_MAX) m->r[c->rcpt].mark_committed = 1;
    }
    free(c);
    message_maybe_forget(m);
}

static void submit_mark(struct message *m, size_t rcpt, enum spool_mark mark)
{
    struct mark_ctx *c = xcalloc(1, sizeof *c);
    c->m = m;
    c->rcpt = rcpt;
    m->marks_pending++;
    spool_submit_mark(queue_spool, m->env->queue_id,
                      rcpt == SIZE_MAX ? SPOOL_ALL_RCPTS : (uint32_t)rcpt, mark, mark_done, c);
}

static void message_maybe_forget(struct message *m)
{
    if (m->inflight > 0 || m->marks_pending > 0 || m->prep_pending > 0) return;
    if (!m->deleted && !all_final(m)) return;
    for (size_t i = 0; i < m->n_pins; i++)
        spool_unpin(queue_spool, m->pins[i]);
    TAILQ_REMOVE(&queue_messages, m, link);
    hashmap_remove(queue_by_id, m->env->queue_id);
    queue_count--;
    dedup_forget_message(m);
    message_free(m);
}

static void emit(const char *event, const struct message *m, size_t rcpt,
                 const struct rcpt_result *res, const struct dest *d,
                 const struct attempt_info *info, const char *detail)
{
    int64_t now_us = util_now_us();
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
        .delay_ms = (now_us - m->env->arrival * 1000000) / 1000,
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
    } else {
        log_error("%s: DSN not stored: %s", m->env->queue_id, err);
        envelope_free(c->env);
    }
    for (size_t i = 0; i < c->n; i++)
        submit_mark(m, c->rcpts[i], m->r[c->rcpts[i]].final);
    free(c->rcpts);
    free(c);
    message_maybe_forget(m);
}

static void new_dsn_queue_id(char *out, size_t size)
{
    static uint64_t last;
    uint64_t now = (uint64_t)util_now_us();
    if (now <= last) now = last + 1;
    last = now;
    /* D prefix keeps our notifications apart from ids issued by smtpd. */
    snprintf(out, size, "D%012llX", (unsigned long long)(now & 0xFFFFFFFFFFFFULL));
}

static void send_dsn(struct message *m, size_t *rcpts, size_t n)
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
        dr[k].last_attempt = util_now();
        notify_rcpts[k++] = rcpts[i];
    }
    free(notify_rcpts);
    if (m->env->sender[0] == '\0' || k == 0) {
        /* No bounce for a bounce; no DSN where NOTIFY says never. */
        for (size_t i = 0; i < n; i++)
            submit_mark(m, rcpts[i], m->r[rcpts[i]].final);
        free(dr);
        return;
    }
    struct strbuf original = STRBUF_INIT, text = STRBUF_INIT, envtext = STRBUF_INIT;
    if (message_original(m, &original) < 0)
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
    env->arrival = util_now();
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

static void record_reply(struct rcpt *r, const struct rcpt_result *res,
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
    int64_t now = util_now();
    size_t *failed = xmalloc(job->n_rcpts * sizeof *failed);
    size_t n_failed = 0;

    m->inflight--;
    emit("attempt", m, SIZE_MAX, NULL, job->dest, info, NULL);
    if (info && info->reply_code)
        route_feedback(job->dest->egress, job->dest->provider, info->reply_code,
                       info->reply_enhanced, info->reply_text, route_now());
    for (size_t i = 0; i < job->n_rcpts; i++) {
        size_t ri = job->rcpts[i];
        struct rcpt *r = &m->r[ri];
        struct rcpt_result *res = &job->results[i];
        r->attempts++;
        record_reply(r, res, info);
        if (m->deleted) {
            r->state = RCPT_FINAL;
            continue;
        }
        dedup_outcome(m, ri, res->code >= 200 && res->code < 300, now);
        if (res->code >= 200 && res->code < 300) {
            r->state = RCPT_FINAL;
            r->final = SPOOL_MARK_DELIVERED;
            emit("delivered", m, ri, res, job->dest, info, NULL);
            submit_mark(m, ri, SPOOL_MARK_DELIVERED);
        } else if (res->code >= 500) {
            r->state = RCPT_FINAL;
            r->final = SPOOL_MARK_BOUNCED;
            if (!r->status[0]) snprintf(r->status, sizeof r->status, "5.0.0");
            emit("bounced", m, ri, res, job->dest, info, NULL);
            failed[n_failed++] = ri;
        } else if (now - m->env->arrival >= queue_cfg->max_lifetime) {
            r->state = RCPT_FINAL;
            r->final = SPOOL_MARK_EXPIRED;
            if (!r->status[0] || r->status[0] != '4')
                snprintf(r->status, sizeof r->status, "4.4.7");
            emit("expired", m, ri, res, job->dest, info, "maximum queue lifetime exceeded");
            failed[n_failed++] = ri;
        } else {
            r->state = RCPT_PENDING;
            r->next_try = now + retry_delay(r->attempts);
            char detail[64];
            snprintf(detail, sizeof detail, "next attempt in %llds",
                     (long long)(r->next_try - now));
            emit("deferred", m, ri, res, job->dest, info, detail);
        }
    }
    if (n_failed) send_dsn(m, failed, n_failed);
    free(failed);
    if (m->has_data && m->inflight == 0) {
        strbuf_free(&m->data); /* later attempts read it back from the spool */
        m->has_data = 0;
    }
    free(job->rcpts);
    free(job->results);
    free(job);
    message_maybe_forget(m);
}

/* --- sign and check stages ----------------------------------------------------------------------
 */

static void sign_done(void *arg, struct sign_result *r)
{
    struct message *m = arg;
    m->prep_pending--;
    m->sign = r;
    m->sign_state = STAGE_DONE;
    struct strbuf dkim = STRBUF_INIT;
    struct record_event ev = {.event = "signed",
                              .queue_id = m->env->queue_id,
                              .message_id = m->env->message_id,
                              .origin = m->env->origin,
                              .sender = m->env->sender,
                              .from_domain = m->env->from_domain};
    if (r->n_upstream) {
        signer_describe(r->upstream, r->n_upstream, &dkim);
        ev.event = "dkim-upstream";
        ev.dkim = dkim.data;
        ev.action = strip_upstream(m) ? "strip" : "keep";
        records_emit(&ev);
        strbuf_reset(&dkim);
    }
    ev.event = "signed";
    ev.action = NULL;
    if (r->n_sigs) {
        signer_describe(r->sigs, r->n_sigs, &dkim);
        ev.dkim = dkim.data;
    } else {
        ev.dkim = NULL;
        ev.detail = r->error[0]           ? r->error
                    : m->env->from_domain ? "no DKIM key for the From domain or its "
                                            "organisational domain"
                                          : "no From: domain";
        ev.action = "unsigned";
    }
    records_emit(&ev);
    strbuf_free(&dkim);
    if (m->deleted || queue_stopping) {
        message_maybe_forget(m);
        return;
    }
    schedule(m, util_now());
}

static void start_sign(struct message *m)
{
    if (!m->has_data) {
        if (spool_read(queue_spool, &m->loc, &m->data) < 0) {
            log_error("%s: cannot read the message from the spool", m->env->queue_id);
            m->sign_state = STAGE_DONE; /* delivery will report the read error */
            m->sign = NULL;
            schedule(m, util_now());
            return;
        }
        m->has_data = 1;
    }
    m->sign_state = STAGE_RUNNING;
    m->prep_pending++;
    signer_submit(m->data.data, m->data.len, m->env->from_domain,
                  strcmp(m->env->origin ? m->env->origin : "", "dsn") != 0, sign_done, m);
}

static void emit_check(const struct message *m, const struct egress_conf *e,
                       const struct egress_check *c, const char *action, const char *detail)
{
    struct strbuf policy = STRBUF_INIT, dkim = STRBUF_INIT;
    alignment_policy_text(&c->dmarc, &policy);
    alignment_dkim_text(&c->dmarc, &dkim);
    struct record_event ev = {
        .event = "checked",
        .queue_id = m->env->queue_id,
        .message_id = m->env->message_id,
        .origin = m->env->origin,
        .sender = m->env->sender,
        .egress = e->name,
        .source_addr = c->spf_ip[0] ? c->spf_ip : NULL,
        .from_domain = m->env->from_domain,
        .spf_result = c->spf_known ? spf_result_name(c->spf.result) : "unknown",
        .spf_domain = c->spf.domain[0] ? c->spf.domain : NULL,
        .dkim = dkim.len ? dkim.data : NULL,
        .dmarc_policy = policy.len ? policy.data : NULL,
        .dmarc_result = dmarc_verdict_name(c->dmarc.verdict),
        .action = action,
        .detail = detail               ? detail
                  : c->dmarc.reason[0] ? c->dmarc.reason
                                       : c->spf.explanation,
    };
    records_emit(&ev);
    strbuf_free(&policy);
    strbuf_free(&dkim);
}

/* A recipient is returned to the sender because DMARC would fail. */
static void bounce_for_alignment(struct message *m, size_t i, const char *reason)
{
    struct rcpt_result res = {.code = 550};
    snprintf(res.enhanced, sizeof res.enhanced, "5.7.1");
    snprintf(res.text, sizeof res.text, "not sent: %s", reason);
    struct rcpt *r = &m->r[i];
    record_reply(r, &res, NULL);
    r->state = RCPT_FINAL;
    r->final = SPOOL_MARK_BOUNCED;
    emit("bounced", m, i, &res, NULL, NULL, "alignment policy: bounce");
    send_dsn(m, &i, 1);
}

static void check_done(void *arg, struct alignment_result *r)
{
    struct message *m = arg;
    m->prep_pending--;
    alignment_result_free(m->align);
    m->align = r;
    m->check_state = STAGE_DONE;
    if (m->deleted || queue_stopping) {
        message_maybe_forget(m);
        return;
    }
    /* DNS trouble defers the check (a minute, three times), never the mail for long */
    int temp = 0;
    for (size_t i = 0; i < r->n_egress; i++)
        temp |= r->egress[i].dmarc.verdict == DMARC_VERDICT_TEMPERROR;
    if (temp && m->env->from_domain && ++m->check_tries < 3) {
        m->check_state = STAGE_TODO;
        m->check_retry_at = util_now() + 60;
        struct record_event ev = {.event = "checked",
                                  .queue_id = m->env->queue_id,
                                  .message_id = m->env->message_id,
                                  .origin = m->env->origin,
                                  .sender = m->env->sender,
                                  .from_domain = m->env->from_domain,
                                  .dmarc_result = "temperror",
                                  .action = "recheck",
                                  .detail = "DNS temporary failure; the check is repeated in "
                                            "a minute"};
        records_emit(&ev);
        return;
    }
    schedule(m, util_now());
}

static int egress_index(const struct egress_conf *e)
{
    return (int)(e - queue_cfg->egress);
}

static const struct egress_conf *apply_alignment(struct message *m, size_t rcpt,
                                                 const struct egress_conf *e, int *stop)
{
    const struct egress_check *c = alignment_for(m->align, e);
    if (!c) return e;
    uint64_t bit = 1ULL << (egress_index(e) & 63);
    int first = !(m->checked_recorded & bit);
    m->checked_recorded |= bit;
    enum dmarc_verdict v = c->dmarc.verdict;
    if (!m->env->from_domain || v == DMARC_VERDICT_PASS || v == DMARC_VERDICT_NO_POLICY) {
        if (first) emit_check(m, e, c, "send", NULL);
        return e;
    }
    if (v == DMARC_VERDICT_TEMPERROR) {
        if (first) emit_check(m, e, c, "send", "DNS kept failing; sent without a prediction");
        return e;
    }
    if (m->alignment_released) {
        if (first) emit_check(m, e, c, "send", "released by the operator");
        return e;
    }
    enum alignment_action a = config_alignment_action(queue_cfg, m->env->from_domain);
    if (a == ALIGN_REROUTE) {
        for (size_t i = 0; i < m->align->n_egress; i++) {
            const struct egress_check *o = &m->align->egress[i];
            if (o->egress == e || o->dmarc.verdict != DMARC_VERDICT_PASS) continue;
            uint64_t obit = 1ULL << (egress_index(o->egress) & 63);
            if (first) {
                char detail[400];
                snprintf(detail, sizeof detail, "rerouted to %s: %s", o->egress->name,
                         c->dmarc.reason);
                emit_check(m, e, c, "reroute", detail);
            }
            if (!(m->checked_recorded & obit)) {
                emit_check(m, o->egress, o, "send", NULL);
                m->checked_recorded |= obit;
            }
            return o->egress;
        }
        if (first) emit_check(m, e, c, "send", "no egress would pass DMARC; sent and flagged");
        return e;
    }
    if (a == ALIGN_HOLD) {
        if (first) emit_check(m, e, c, "hold", NULL);
        m->held = 1;
        submit_mark(m, SIZE_MAX, SPOOL_MARK_HELD);
        emit("held", m, SIZE_MAX, NULL, NULL, NULL, c->dmarc.reason);
        *stop = 1;
        return NULL;
    }
    if (a == ALIGN_BOUNCE) {
        if (first) emit_check(m, e, c, "bounce", NULL);
        bounce_for_alignment(m, rcpt, c->dmarc.reason);
        return NULL;
    }
    if (first) emit_check(m, e, c, "send", NULL);
    return e;
}

static void start_check(struct message *m)
{
    struct dmarc_dkim_input sigs[SIGNER_MAX_SIGS];
    size_t n = 0;
    for (size_t i = 0; m->sign && i < m->sign->n_sigs; i++, n++) {
        sigs[n].domain = m->sign->sigs[i].domain;
        sigs[n].selector = m->sign->sigs[i].selector;
        sigs[n].algorithm = m->sign->sigs[i].algorithm;
        sigs[n].public_b64 = m->sign->keys[i]->public_b64;
    }
    m->check_state = STAGE_RUNNING;
    m->prep_pending++;
    alignment_submit(queue_cfg, m->env->sender, m->env->from_domain, sigs, n, check_done, m);
}

/* --- intake ---------------------------------------------------------------------------------- */

void queue_accept(struct envelope *env, const struct spool_loc *loc, struct strbuf *data)
{
    struct message *m = message_new(env, loc);
    message_add_pin(m, loc->segment);
    if (data && data->len) {
        m->data = *data;
        m->has_data = 1;
        *data = (struct strbuf)STRBUF_INIT;
    }
    schedule(m, util_now());
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
        message_add_pin(m, rec->pins[i]);
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
    int64_t now = util_now();
    struct message *m, *next;
    for (m = TAILQ_FIRST(&queue_messages); m; m = next) {
        next = TAILQ_NEXT(m, link);
        schedule(m, now);
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
    queue_providers = hashmap_new();
    queue_dedup = hashmap_new();
    if (cfg->dedup_enabled)
        records_recent_deliveries(cfg->state, (util_now() - cfg->dedup_window) * 1000000,
                                  dedup_load_one, NULL);
    if (smtpc_init(base, cfg, err, errlen) < 0) return -1;
    queue_timer = event_new(base, -1, EV_PERSIST, scan_cb, NULL);
    struct timeval tv = {0, QUEUE_SCAN_INTERVAL_US};
    event_add(queue_timer, &tv);
    return 0;
}

size_t queue_size(void)
{
    return queue_count;
}

void queue_stats(size_t *active, size_t *deferred, size_t *held)
{
    int64_t now = util_now();
    struct message *m;
    *active = *deferred = *held = 0;
    TAILQ_FOREACH(m, &queue_messages, link)
    {
        if (m->held) {
            (*held)++;
            continue;
        }
        int waiting = m->inflight == 0 && m->prep_pending == 0;
        for (size_t i = 0; waiting && i < m->env->n_rcpts; i++)
            if (m->r[i].state == RCPT_PENDING && m->r[i].next_try <= now) waiting = 0;
        if (waiting && !all_final(m))
            (*deferred)++;
        else
            (*active)++;
    }
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
    if (queue_dedup) {
        hashmap_foreach(queue_dedup, free_dedup, NULL);
        hashmap_free(queue_dedup);
        queue_dedup = NULL;
    }
    if (queue_providers) {
        hashmap_foreach(queue_providers, free_provider, NULL);
        hashmap_free(queue_providers);
        queue_providers = NULL;
    }
}

/* --- operator commands ------------------------------------------------------------------------ */

static const char *rcpt_state_text(const struct message *m, size_t i)
{
    const struct rcpt *r = &m->r[i];
    if (r->state == RCPT_INFLIGHT) return "in delivery";
    if (r->state == RCPT_FINAL)
        return r->final == 'D' ? "delivered" : r->final == 'B' ? "bounced" : "expired";
    if (m->held) return "held";
    return r->attempts ? "deferred" : "queued";
}

static void list_message(const struct message *m, struct strbuf *out, int verbose)
{
    char date[64];
    util_rfc5322_date(m->env->arrival, date, sizeof date);
    strbuf_printf(out, "%s%s %8lld %s <%s>\n", m->env->queue_id, m->held ? "!" : " ",
                  (long long)m->env->size, date, m->env->sender);
    for (size_t i = 0; i < m->env->n_rcpts; i++) {
        const struct rcpt *r = &m->r[i];
        if (!verbose && r->state == RCPT_FINAL) continue;
        strbuf_printf(out, "    <%s> %s", m->env->rcpts[i].address, rcpt_state_text(m, i));
        if (r->last_reply && r->state != RCPT_INFLIGHT) strbuf_printf(out, " (%s)", r->last_reply);
        if (r->state == RCPT_PENDING && r->attempts && !m->held)
            strbuf_printf(out, " next attempt in %llds",
                          (long long)(r->next_try > util_now() ? r->next_try - util_now() : 0));
        strbuf_puts(out, "\n");
    }
}

static struct message *find(const char *id, struct strbuf *out)
{
    struct message *m = *id ? hashmap_get(queue_by_id, id) : NULL;
    if (!m) strbuf_printf(out, "no message %s in the queue\n", *id ? id : "(no id given)");
    return m;
}

int queue_control(const char *command, struct strbuf *out)
{
    char verb[16] = "", id[64] = "";
    sscanf(command, "%15s %63s", verb, id);
    struct message *m;
    if (strcmp(verb, "list") == 0) {
        TAILQ_FOREACH(m, &queue_messages, link)
        list_message(m, out, 0);
        strbuf_printf(out, "-- %zu message%s in the queue\n", queue_count,
                      queue_count == 1 ? "" : "s");
        return 0;
    }
    if (strcmp(verb, "flush") == 0) {
        int64_t now = util_now();
        size_t n = 0;
        TAILQ_FOREACH(m, &queue_messages, link)
        {
            for (size_t i = 0; i < m->env->n_rcpts; i++)
                if (m->r[i].state == RCPT_PENDING) m->r[i].next_try = now;
            if (!m->held) n++;
            schedule(m, now);
        }
        strbuf_printf(out, "flushed %zu message%s\n", n, n == 1 ? "" : "s");
        return 0;
    }
    if (!(m = find(id, out))) return -1;
    if (strcmp(verb, "show") == 0) {
        const struct envelope *e = m->env;
        strbuf_printf(out, "queue id:    %s\norigin:      %s\nclient:      %s (helo %s)\n",
                      e->queue_id, e->origin, e->client_addr, e->helo ? e->helo : "");
        strbuf_printf(out,
                      "sender:      <%s>\nmessage-id:  %s\nfrom domain: %s\nsize:        %lld\n",
                      e->sender, e->message_id ? e->message_id : "(none)",
                      e->from_domain ? e->from_domain : "(none)", (long long)e->size);
        strbuf_printf(out, "held:        %s\n", m->held ? "yes" : "no");
        list_message(m, out, 1);
        return 0;
    }
    if (strcmp(verb, "hold") == 0) {
        if (!m->held) {
            m->held = 1;
            submit_mark(m, SIZE_MAX, SPOOL_MARK_HELD);
            emit("held", m, SIZE_MAX, NULL, NULL, NULL, "held by the operator");
        }
        strbuf_printf(out, "%s: held\n", m->env->queue_id);
        return 0;
    }
    if (strcmp(verb, "release") == 0) {
        if (m->held) {
            m->held = 0;
            m->alignment_released = 1;
            submit_mark(m, SIZE_MAX, SPOOL_MARK_RELEASED);
            emit("released", m, SIZE_MAX, NULL, NULL, NULL, "released by the operator");
            int64_t now = util_now();
            for (size_t i = 0; i < m->env->n_rcpts; i++)
                if (m->r[i].state == RCPT_PENDING) m->r[i].next_try = now;
            schedule(m, now);
        }
        strbuf_printf(out, "%s: released\n", m->env->queue_id);
        return 0;
    }
    if (strcmp(verb, "delete") == 0) {
        if (!m->deleted) {
            m->deleted = 1;
            emit("deleted", m, SIZE_MAX, NULL, NULL, NULL, "deleted by the operator");
            submit_mark(m, SIZE_MAX, SPOOL_MARK_DELETED);
        }
        strbuf_printf(out, "%s: deleted\n", id);
        return 0;
    }
    strbuf_printf(out, "unknown queue command \"%s\"\n", verb);
    return -1;
}
