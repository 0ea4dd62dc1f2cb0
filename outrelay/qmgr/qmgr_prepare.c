/* qmgr_prepare.c - the prepare stages a message goes through before delivery, in the order of
 * the stage table (qmgr_prepare_stages), run again after a restart: DKIM signing (sign/), then
 * the SPF/DKIM/DMARC prediction per egress (check/); and the alignment decision the delivery
 * step asks for each recipient (send, reroute, hold or bounce). Writes the "signed",
 * "dkim-upstream" and "checked" records. While a stage runs the core pins the message
 * (prep_pending); each stage ends in qmgr_stage_done(). Calls down only (qmgr_rcpt.c,
 * qmgr_message.c); the core reaches it through the stage table the top installs, the delivery
 * step through qmgr_apply_alignment(). Loop thread only. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/clock.h"
#include "common/util.h"
#include "qmgr/qmgr_prepare.h"
#include "route/route.h"
#include "qmgr/qmgr_rcpt.h"
#include "records/records.h"
#include "sign/signer.h"
#include "check/alignment.h"

/* --- sign and check stages ----------------------------------------------------------------------
 */

static void sign_done(void *arg, struct sign_result *r)
{
    struct message *m = arg;
    m->sign = r;
    if (m->prepared && r->n_sigs) { /* signed again for a later try: already recorded */
        qmgr_stage_done(m, 0);
        return;
    }
    struct strbuf dkim = STRBUF_INIT;
    struct record_event ev;
    qmgr_record_init(&ev, RECORD_SIGNED, m, SIZE_MAX);
    ev.from_domain = m->env->from_domain;
    if (r->n_upstream) {
        signer_describe(r->upstream, r->n_upstream, &dkim);
        ev.type = RECORD_DKIM_UPSTREAM;
        ev.dkim = dkim.data;
        ev.action = qmgr_strip_upstream(m) ? "strip" : "keep";
        /* a failure here may be ours: say that the data was changed before it was verified */
        ev.detail = m->env->transformed ? "verified after ingress made the message "
                                          "transport-safe (see the signed event)"
                                        : NULL;
        records_emit(&ev);
        ev.detail = NULL;
        strbuf_reset(&dkim);
    }
    ev.type = RECORD_SIGNED;
    ev.action = NULL;
    struct strbuf detail = STRBUF_INIT;
    if (r->n_sigs) {
        signer_describe(r->sigs, r->n_sigs, &dkim);
        ev.dkim = dkim.data;
    } else {
        ev.dkim = NULL;
        strbuf_puts(&detail, r->error[0]           ? r->error
                             : m->env->from_domain ? "no DKIM key for the From domain or its "
                                                     "organisational domain"
                                                   : "no From: domain");
        ev.action = "unsigned";
    }
    if (m->env->transport) /* what ingress changed so that no line is over 998 octets */
        strbuf_printf(&detail, "%s%s%s", detail.len ? "; " : "",
                      m->env->transformed ? "transformed: " : "", m->env->transport);
    ev.detail = detail.len ? detail.data : NULL;
    records_emit(&ev);
    strbuf_free(&detail);
    strbuf_free(&dkim);
    qmgr_stage_done(m, 0);
}

static void start_sign(struct message *m)
{
    if (!m->has_data) {
        if (spool_read(m->q->spool, &m->loc, &m->data) < 0) {
            log_error("%s: cannot read the message from the spool", m->env->queue_id);
            m->sign = NULL;
            qmgr_stage_done(m, 0); /* delivery will report the read error */
            return;
        }
        m->has_data = 1;
    }
    signer_submit(m->data.data, m->data.len, m->env->from_domain,
                  strcmp(m->env->origin ? m->env->origin : "", "dsn") != 0, sign_done, m);
}

static void emit_check(const struct message *m, const struct egress_conf *e,
                       const struct egress_check *c, const char *action, const char *detail)
{
    struct strbuf policy = STRBUF_INIT, dkim = STRBUF_INIT;
    alignment_policy_text(&c->dmarc, &policy);
    alignment_dkim_text(&c->dmarc, &dkim);
    struct record_event ev;
    qmgr_record_init(&ev, RECORD_CHECKED, m, SIZE_MAX);
    ev.egress = e->name;
    ev.source_addr = c->spf_ip[0] ? c->spf_ip : NULL;
    ev.from_domain = m->env->from_domain;
    ev.spf_result = c->spf_known ? spf_result_name(c->spf.result) : "unknown";
    ev.spf_domain = c->spf.domain[0] ? c->spf.domain : NULL;
    ev.dkim = dkim.len ? dkim.data : NULL;
    ev.dmarc_policy = policy.len ? policy.data : NULL;
    ev.dmarc_result = dmarc_verdict_name(c->dmarc.verdict);
    ev.dkim_aligned = c->dmarc.dkim_aligned_pass;
    ev.action = action;
    ev.detail = detail ? detail : c->dmarc.reason[0] ? c->dmarc.reason : c->spf.explanation;
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
    qmgr_rcpt_record_reply(&m->r[i], &res, NULL);
    struct rcpt_outcome o = {
        .mark = SPOOL_MARK_BOUNCED, .detail = "alignment policy: bounce", .res = &res};
    qmgr_rcpt_finalize(m, i, &o, NULL);
}

static void check_done(void *arg, struct alignment_result *r)
{
    struct message *m = arg;
    alignment_result_free(m->align);
    m->align = r;
    if (m->deleted || m->q->stopping) {
        qmgr_stage_done(m, 0);
        return;
    }
    /* DNS trouble defers the check (a minute, three times), never the mail for long */
    int temp = 0;
    for (size_t i = 0; i < r->n_egress; i++)
        temp |= r->egress[i].dmarc.verdict == DMARC_VERDICT_TEMPERROR;
    if (temp && m->env->from_domain && ++m->check_tries < 3) {
        struct record_event ev;
        qmgr_record_init(&ev, RECORD_CHECKED, m, SIZE_MAX);
        ev.from_domain = m->env->from_domain;
        ev.dmarc_result = "temperror";
        ev.action = "recheck";
        ev.detail = "DNS temporary failure; the check is repeated in a minute";
        records_emit(&ev);
        qmgr_stage_done(m, clock_now() + 60);
        return;
    }
    qmgr_stage_done(m, 0);
}

/* By name: after a reload, e may come from an older config than the queue's. */
static int egress_index(const struct config *cfg, const struct egress_conf *e)
{
    const struct egress_conf *now = config_find_egress(cfg, e->name);
    return now ? (int)(now - cfg->egress) : 63;
}

const struct egress_conf *qmgr_apply_alignment(struct message *m, size_t rcpt, const char *provider,
                                               const struct egress_conf *e, int *stop)
{
    const struct config *cfg = m->q->cfg;
    const struct egress_check *c = alignment_for(m->align, e);
    if (!c) return e;
    uint64_t bit = 1ULL << (egress_index(cfg, e) & 63);
    int first = !(m->checked_recorded & bit);
    m->checked_recorded |= bit;
    enum dmarc_verdict v = c->dmarc.verdict;
    /* the ramp's autopilot watches what it would send through the egress the route chose */
    if (first && v != DMARC_VERDICT_TEMPERROR)
        route_note_prediction(e, provider,
                              !m->env->from_domain || v == DMARC_VERDICT_PASS ||
                                  v == DMARC_VERDICT_NO_POLICY,
                              clock_now());
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
    enum alignment_action a = config_alignment_action(cfg, m->env->from_domain);
    if (a == ALIGN_REROUTE) {
        for (size_t i = 0; i < m->align->n_egress; i++) {
            const struct egress_check *o = &m->align->egress[i];
            if (o->egress == e || o->dmarc.verdict != DMARC_VERDICT_PASS) continue;
            uint64_t obit = 1ULL << (egress_index(cfg, o->egress) & 63);
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
        qmgr_message_hold(m, c->dmarc.reason);
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
    struct dmarc_dkim_input sigs[SIGNER_MAX_SIGS + SIGNER_MAX_UPSTREAM];
    size_t n = 0;
    for (size_t i = 0; m->sign && i < m->sign->n_sigs; i++, n++) {
        sigs[n] = (struct dmarc_dkim_input){.domain = m->sign->sigs[i].domain,
                                            .selector = m->sign->sigs[i].selector,
                                            .algorithm = m->sign->sigs[i].algorithm,
                                            .public_b64 = m->sign->keys[i]->public_b64};
    }
    /* Upstream signatures that verified on arrival and leave with the message count too: the
     * receiver will verify them as we did (nothing below our signatures is changed). When
     * ingress made the message transport-safe (m->env->transformed), "on arrival" is the data
     * after that change, exactly the bytes that leave: a signature the change broke (a re-encoded
     * body) failed there and is not counted; one it did not break (folding under relaxed header
     * canonicalization) still verifies at the receiver and rightly counts. */
    for (size_t i = 0; m->sign && !qmgr_strip_upstream(m) && i < m->sign->n_upstream; i++) {
        const struct dkim_signature *u = &m->sign->upstream[i];
        if (u->result != 1) continue;
        sigs[n++] = (struct dmarc_dkim_input){
            .domain = u->domain, .selector = u->selector, .algorithm = u->algorithm, .upstream = 1};
    }
    alignment_submit(m->q->cfg, m->env->sender, m->env->from_domain, sigs, n, check_done, m);
}

/* --- the stage table ----------------------------------------------------------------------- */

/* In order: the check predicts DMARC with the signatures the sign stage added. ARC sealing
 * would go after the check (it seals what leaves). */
static const struct qmgr_stage prepare_stages[] = {
    {"sign", start_sign},
    {"check", start_check},
};

const struct qmgr_stage *qmgr_prepare_stages(size_t *n)
{
    *n = sizeof prepare_stages / sizeof prepare_stages[0];
    return prepare_stages;
}
