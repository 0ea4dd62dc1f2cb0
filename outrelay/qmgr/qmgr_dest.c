/* qmgr_dest.c - destinations and jobs: the queue manager's side of the SMTP client's job
 * contract (smtpc/smtpc_job.h). A destination ("egress/domain") holds the jobs waiting for a
 * connection, its concurrency and its back-off after failed connections; the client takes jobs
 * from it and hands each back through the callbacks of qmgr_dest_owner() (given to smtpc_init by
 * qmgr.c), whose per-recipient outcomes go to qmgr_rcpt.c. Calls down only (the client, the
 * recipient states, the lookups, the core); never opens a connection itself (smtpc_open) and
 * never frees a message (qmgr_message.c). Called by the delivery step (qmgr_route.c) and the
 * top. Loop thread only. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/util.h"
#include "qmgr/qmgr_dest.h"
#include "qmgr/qmgr_lookup.h"
#include "qmgr/qmgr_rcpt.h"
#include "route/route.h"

static void job_done(struct job *job, const struct attempt_info *info);

static struct qmgr *dest_qmgr(const struct dest *d)
{
    return d->owner;
}

/* The current config's egress with the name of e (from this or an older config), or e itself
 * when a reload removed it. */
static const struct egress_conf *current_egress(const struct qmgr *q, const struct egress_conf *e)
{
    const struct egress_conf *now = config_find_egress(q->cfg, e->name);
    return now ? now : e;
}

static struct dest *dest_get(struct qmgr *q, const struct egress_conf *e, const char *domain,
                             const char *provider)
{
    char key[600];
    /* a smarthost takes every domain, but caps and throttles apply per provider */
    if (e->type == EGRESS_SMARTHOST)
        snprintf(key, sizeof key, "%s/@%s", e->name, provider);
    else
        snprintf(key, sizeof key, "%s/%s", e->name, domain);
    qmgr_lowercase(key);
    struct dest *d = hashmap_get(q->dests, key);
    if (d) return d;
    d = xcalloc(1, sizeof *d);
    d->owner = q;
    d->key = xstrdup(key);
    d->egress = current_egress(q, e); /* an alignment reroute may name an older config's egress */
    d->domain = xstrdup(e->type == EGRESS_SMARTHOST ? "" : domain);
    qmgr_lowercase(d->domain);
    d->provider = provider;
    TAILQ_INIT(&d->jobs);
    LIST_INIT(&d->idle);
    hashmap_put(q->dests, key, d);
    return d;
}

/* Every job waiting for d ends now with `why`, without a connection: its recipients are deferred
 * (or expire, or bounce on a permanent failure) and wait at least until d's retry_at. */
static void dest_fail_waiting(struct dest *d, const struct rcpt_result *why,
                              const struct attempt_info *info)
{
    struct job *j;
    while ((j = smtpc_dest_take_job(d))) {
        smtpc_job_fail_all(j, why->code, why->enhanced, why->text);
        j->not_before = d->retry_at;
        job_done(j, info);
    }
}

static void dest_kick(struct dest *d)
{
    while (d->n_jobs > 0) {
        if (smtpc_wake_idle(d)) continue;
        if (d->retry_at > clock_now()) { /* backing off: no new connection */
            if (d->connections == 0)     /* nobody left to take them */
                dest_fail_waiting(d, &d->failure, NULL);
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
    if (!dest_qmgr(d)->stopping) dest_kick(d);
}

static void dest_working(struct dest *d)
{
    if (d->failures > 0)
        log_info("deliver: %s works again after %d failed connection(s)", d->key, d->failures);
    d->working++;
    d->failures = 0;
    d->retry_at = 0;
    if (d->retry_ev) event_del(d->retry_ev);
}

static void dest_working_closed(struct dest *d)
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

static void dest_failed(struct dest *d, const struct rcpt_result *why,
                        const struct attempt_info *info)
{
    d->failure = *why;
    if (why->code < 500) {
        d->failures++;
        int64_t wait = qmgr_retry_delay(dest_qmgr(d), d->failures);
        d->retry_at = clock_now() + wait;
        if (!d->retry_ev) d->retry_ev = evtimer_new(dest_qmgr(d)->base, dest_retry_cb, d);
        struct timeval tv = {(time_t)wait, 0};
        evtimer_add(d->retry_ev, &tv);
        log_info("deliver: %s: no new connection for %llds (failure %d in a row): %s", d->key,
                 (long long)wait, d->failures, why->text);
        /* a working connection takes the waiting jobs; one still opening may; when the last
         * connection closes, dest_kick defers whatever is left (the back-off holds) */
        if (d->working > 0 || d->connections > 1) return;
    }
    dest_fail_waiting(d, why, info);
}

static void dest_connection_closed(struct dest *d)
{
    d->connections--;
    if (!dest_qmgr(d)->stopping) dest_kick(d);
}

struct job *qmgr_job_new(struct dest *d, struct message *m, const size_t *idx, size_t n)
{
    struct job *j = xcalloc(1, sizeof *j);
    j->msg = m;
    j->dest = d;
    j->rcpts = qmgr_rcpt_indexes_copy(idx, n);
    j->n_rcpts = n;
    j->results = xcalloc(n, sizeof *j->results);
    for (size_t i = 0; i < n; i++)
        qmgr_rcpt_inflight(m, idx[i]);
    m->inflight++;
    return j;
}

void qmgr_dest_enqueue(struct message *m, const struct egress_conf *e, const char *domain,
                       const char *provider, const size_t *idx, size_t n)
{
    struct dest *d = dest_get(m->q, e, domain, provider);
    struct job *j = qmgr_job_new(d, m, idx, n);
    TAILQ_INSERT_TAIL(&d->jobs, j, link);
    d->n_jobs++;
    dest_kick(d);
}

static void job_free(struct job *job)
{
    smtpc_job_free(job);
}

static void job_done(struct job *job, const struct attempt_info *info)
{
    struct message *m = job->msg;
    int64_t now = clock_now();
    struct rcpt_batch failed = {xmalloc(job->n_rcpts * sizeof *failed.idx), 0};

    m->inflight--;
    if (info) qmgr_emit(RECORD_ATTEMPT, m, SIZE_MAX, NULL, job->dest, info, NULL);
    if (info && info->reply_code)
        route_feedback(job->dest->egress, job->dest->provider, info->reply_code,
                       info->reply_enhanced, info->reply_text, clock_now());
    for (size_t i = 0; i < job->n_rcpts; i++) {
        size_t ri = job->rcpts[i];
        struct rcpt_result *res = &job->results[i];
        qmgr_rcpt_attempted(m, ri, res, info);
        if (m->deleted) {
            qmgr_rcpt_drop(m, ri);
            continue;
        }
        qmgr_dedup_outcome(m, ri, res->code >= 200 && res->code < 300, now);
        struct rcpt_outcome o = {.res = res, .dest = job->dest, .info = info};
        if (res->code >= 200 && res->code < 300) {
            o.mark = SPOOL_MARK_DELIVERED;
        } else if (res->code >= 500) {
            o.mark = SPOOL_MARK_BOUNCED;
        } else if (now - m->env->arrival >= m->q->cfg->max_lifetime) {
            o.mark = SPOOL_MARK_EXPIRED;
        } else {
            qmgr_rcpt_retry_later(m, ri, &o, job->not_before, now);
            continue;
        }
        qmgr_rcpt_finalize(m, ri, &o, &failed);
    }
    qmgr_rcpt_batch_flush(m, &failed);
    free(failed.idx);
    if (m->has_data && m->inflight == 0) {
        strbuf_free(&m->data); /* later attempts read it back from the spool */
        m->has_data = 0;
    }
    /* what the stages made is redone at the next try; a deferred message stays small */
    if (m->inflight == 0) qmgr_message_unprepare(m, now);
    job_free(job);
    qmgr_message_maybe_forget(m);
}

static void reload_dest(void *arg, const char *key, void *value)
{
    (void)key;
    struct dest *d = value;
    d->egress = current_egress(arg, d->egress);
}

void qmgr_dests_reload(struct qmgr *q)
{
    hashmap_foreach(q->dests, reload_dest, q);
}

static void free_dest(void *arg, const char *key, void *value)
{
    (void)arg;
    (void)key;
    struct dest *d = value;
    struct job *j;
    while ((j = smtpc_dest_take_job(d)))
        job_free(j);
    if (d->retry_ev) event_free(d->retry_ev);
    free(d->key);
    free(d->domain);
    free(d);
}

void qmgr_dests_free(struct qmgr *q)
{
    hashmap_foreach(q->dests, free_dest, NULL);
}

/* --- the SMTP client's callbacks -------------------------------------------------------------- */

static int job_message_data(struct job *job, struct strbuf *out)
{
    return qmgr_message_outgoing(job->msg, out);
}

static const struct envelope *job_message_envelope(const struct job *job)
{
    const struct message *m = job->msg;
    return m->env;
}

static const struct smtpc_owner dest_owner = {
    .job_done = job_done,
    .message_data = job_message_data,
    .message_envelope = job_message_envelope,
    .connection_closed = dest_connection_closed,
    .working = dest_working,
    .working_closed = dest_working_closed,
    .failed = dest_failed,
};

const struct smtpc_owner *qmgr_dest_owner(void)
{
    return &dest_owner;
}
