/* qmgr_route.c - the delivery step of scheduling, run by the core once a message's prepare
 * stages are done: for each due recipient the lifetime, duplicate suppression, the provider of
 * its domain, the route stage's choice of egress, the alignment decision and, with a cluster, the
 * reservation in the shared cap counts (waited for like a lookup); then jobs of up to
 * QMGR_MAX_RCPTS_PER_JOB recipients per destination (qmgr_dest.c). Writes the "routed" records.
 * Calls down only (qmgr_dest.c, qmgr_prepare.c, qmgr_lookup.c, qmgr_rcpt.c, qmgr_message.c);
 * the core reaches it through the deliver pointer the top sets. Never frees a message; loop
 * thread only. */
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

#include "common/util.h"
#include "mail/smtp_proto.h"
#include "qmgr/qmgr_dest.h"
#include "qmgr/qmgr_lookup.h"
#include "qmgr/qmgr_prepare.h"
#include "qmgr/qmgr_rcpt.h"
#include "qmgr/qmgr_route.h"
#include "records/records.h"
#include "route/route.h"

#define QMGR_MAX_RCPTS_PER_JOB 100

static void emit_routed(struct message *m, size_t i, const struct route_decision *rd,
                        const struct egress_conf *e, const char *provider)
{
    struct rcpt *r = &m->r[i];
    if (e && r->routed == e) return;
    if (!e && r->waiting_recorded) return;
    struct record_event ev;
    qmgr_record_init(&ev, RECORD_ROUTED, m, i);
    ev.egress = e ? e->name : NULL;
    ev.from_domain = m->env->from_domain;
    ev.ramp_percent = rd->share;
    ev.provider = provider;
    ev.action = !e ? "wait" : e != rd->planned ? "spill" : "ramp";
    ev.route_reason = rd->reason[0] ? rd->reason : NULL;
    ev.route_group = m->q->cfg->ramp.n_groups ? rd->group : NULL;
    ev.planned_egress = rd->planned ? rd->planned->name : NULL;
    records_emit(&ev);
    r->routed = e;
    r->waiting_recorded = !e;
}

/* Waits for the provider of a recipient's domain: the lookup's answer wakes the message. */
static void wait_for_lookup(struct message *m)
{
    if (m->waiting_lookup) return;
    m->waiting_lookup = 1;
    m->lookup_list = &m->q->lookup_waiting;
    TAILQ_INSERT_TAIL(&m->q->lookup_waiting, m, lookup_link);
}

static void reserve_answered(void *arg)
{
    qmgr_lookup_answered(arg);
}

/* Decides recipient i: returns its egress (and provider), or NULL when it is not sent now. */
static const struct egress_conf *route_one(struct message *m, size_t i, int64_t now,
                                           struct rcpt_batch *expired, const char **provider,
                                           int *stop)
{
    const struct config *cfg = m->q->cfg;
    if (now - m->env->arrival >= cfg->max_lifetime) {
        /* the lifetime holds at every try, also for mail that never got a connection
         * (waiting for a cap, a suspension or a destination's back-off) */
        struct rcpt_outcome o = {.mark = SPOOL_MARK_EXPIRED};
        qmgr_rcpt_finalize(m, i, &o, expired);
        return NULL;
    }
    enum dedup_verdict dv = qmgr_dedup_check(m, i, now);
    if (dv == DEDUP_WAIT) { /* another copy is being delivered: its outcome decides */
        qmgr_rcpt_defer(m, i, now + 2);
        return NULL;
    }
    if (dv == DEDUP_ASKING) { /* the cluster's answer to our claim wakes the message */
        wait_for_lookup(m);
        return NULL;
    }
    if (dv == DEDUP_SUPPRESS) {
        struct rcpt_outcome o = {
            .mark = SPOOL_MARK_DELIVERED,
            .type = RECORD_SUPPRESSED,
            .detail = "duplicate: this Message-ID was already delivered to this recipient"};
        qmgr_rcpt_finalize(m, i, &o, NULL);
        return NULL;
    }
    *provider = qmgr_provider_of(m->q->lookup, smtp_address_domain(m->env->rcpts[i].address), m);
    if (!*provider) return NULL; /* the answer wakes the message */
    struct route_decision rd;
    route_decide(m->env, i, *provider, now, &rd);
    if (!rd.egress) {
        /* wait until retry_at, but look again at least every minute (caps and suspensions
         * can also end by an operator's command) */
        int64_t wait = rd.retry_at - now;
        qmgr_rcpt_defer(m, i, now + (wait < 1 ? 1 : wait > 60 ? 60 : wait));
        emit_routed(m, i, &rd, NULL, *provider);
        return NULL;
    }
    const struct egress_conf *e = qmgr_apply_alignment(m, i, *provider, rd.egress, stop);
    if (!e) return NULL;
    /* with a cluster, a capped pair reserves its slot in the shared count first */
    switch (route_reserve(e, *provider, m->env->queue_id,
                          smtp_address_domain(m->env->rcpts[i].address), now, reserve_answered,
                          m->q, &rd.retry_at, rd.reason, sizeof rd.reason)) {
    case ROUTE_RESERVE_GO:
        break;
    case ROUTE_RESERVE_ASKING: /* Redis's answer wakes the message */
        wait_for_lookup(m);
        return NULL;
    case ROUTE_RESERVE_FULL: {
        int64_t wait = rd.retry_at - now;
        qmgr_rcpt_defer(m, i, now + (wait < 1 ? 1 : wait > 60 ? 60 : wait));
        rd.egress = NULL;
        emit_routed(m, i, &rd, NULL, *provider);
        return NULL;
    }
    }
    emit_routed(m, i, &rd, e, *provider);
    return e;
}

/* Jobs for the recipients chosen[] sends to egress e: one destination per domain (per provider
 * for a smarthost), at most QMGR_MAX_RCPTS_PER_JOB recipients each. Clears their chosen[]. */
static void enqueue_for(struct message *m, size_t first, const struct egress_conf **chosen,
                        const char **providers, size_t *idx, int64_t now)
{
    size_t n = m->env->n_rcpts;
    const struct egress_conf *e = chosen[first];
    const char *provider = providers[first];
    const char *domain = smtp_address_domain(m->env->rcpts[first].address);
    size_t k = 0;
    for (size_t j = first; j < n; j++) {
        if (chosen[j] != e || providers[j] != provider) continue;
        if (e->type != EGRESS_SMARTHOST &&
            strcasecmp(smtp_address_domain(m->env->rcpts[j].address), domain) != 0)
            continue;
        chosen[j] = NULL;
        idx[k++] = j;
        if (k == QMGR_MAX_RCPTS_PER_JOB) {
            route_count_job(e, provider, m->env->queue_id, domain, now);
            qmgr_dest_enqueue(m, e, domain, provider, idx, k);
            k = 0;
        }
    }
    if (k) {
        route_count_job(e, provider, m->env->queue_id, domain, now);
        qmgr_dest_enqueue(m, e, domain, provider, idx, k);
    }
}

void qmgr_route_due(struct message *m, int64_t now)
{
    size_t n = m->env->n_rcpts;
    const struct egress_conf **chosen = xcalloc(n, sizeof *chosen);
    const char **providers = xcalloc(n, sizeof *providers);
    struct rcpt_batch expired = {xmalloc(n * sizeof *expired.idx), 0};
    if (m->waiting_lookup) {
        TAILQ_REMOVE(m->lookup_list, m, lookup_link);
        m->waiting_lookup = 0;
        m->lookup_list = NULL;
    }
    for (size_t i = 0; i < n; i++) {
        if (m->r[i].state != RCPT_PENDING || m->r[i].next_try > now) continue;
        int stop = 0;
        chosen[i] = route_one(m, i, now, &expired, &providers[i], &stop);
        if (stop) break; /* held */
    }
    size_t *idx = xmalloc(n * sizeof *idx);
    for (size_t i = 0; i < n && !m->held; i++)
        if (chosen[i]) enqueue_for(m, i, chosen, providers, idx, now);
    free(idx);
    free(chosen);
    free(providers);
    qmgr_rcpt_batch_flush(m, &expired);
    free(expired.idx);
    qmgr_rcpt_delay_warning(m, now);
}
