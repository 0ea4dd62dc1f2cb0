/* queue_prepare.c - the stages a message goes through before delivery, run again after a
 * restart: DKIM signing (sign/) and the SPF/DKIM/DMARC prediction per egress (check/), and the
 * alignment decision the scheduler asks for each recipient (send, reroute, hold or bounce).
 * Writes the "signed", "dkim-upstream" and "checked" records. While a stage runs the message is
 * pinned by m->prep_pending; queue.c still owns it. Loop thread only. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/clock.h"
#include "common/util.h"
#include "qmgr/qmgr_internal.h"
#include "records/records.h"
#include "sign/signer.h"
#include "check/alignment.h"

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
        ev.action = queue_strip_upstream(m) ? "strip" : "keep";
        /* a failure here may be ours: say that the data was changed before it was verified */
        ev.detail = m->env->transformed ? "verified after ingress made the message "
                                          "transport-safe (see the signed event)"
                                        : NULL;
        records_emit(&ev);
        ev.detail = NULL;
        strbuf_reset(&dkim);
    }
    ev.event = "signed";
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
    if (m->deleted || queue_stopping) {
        queue_message_maybe_forget(m);
        return;
    }
    queue_schedule(m, clock_now());
}

void queue_start_sign(struct message *m)
{
    if (!m->has_data) {
        if (spool_read(queue_spool, &m->loc, &m->data) < 0) {
            log_error("%s: cannot read the message from the spool", m->env->queue_id);
            m->sign_state = STAGE_DONE; /* delivery will report the read error */
            m->sign = NULL;
            queue_schedule(m, clock_now());
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
    queue_record_reply(r, &res, NULL);
    r->state = RCPT_FINAL;
    r->final = SPOOL_MARK_BOUNCED;
    queue_emit("bounced", m, i, &res, NULL, NULL, "alignment policy: bounce");
    queue_send_dsn(m, &i, 1);
}

static void check_done(void *arg, struct alignment_result *r)
{
    struct message *m = arg;
    m->prep_pending--;
    alignment_result_free(m->align);
    m->align = r;
    m->check_state = STAGE_DONE;
    if (m->deleted || queue_stopping) {
        queue_message_maybe_forget(m);
        return;
    }
    /* DNS trouble defers the check (a minute, three times), never the mail for long */
    int temp = 0;
    for (size_t i = 0; i < r->n_egress; i++)
        temp |= r->egress[i].dmarc.verdict == DMARC_VERDICT_TEMPERROR;
    if (temp && m->env->from_domain && ++m->check_tries < 3) {
        m->check_state = STAGE_TODO;
        m->check_retry_at = clock_now() + 60;
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
    queue_schedule(m, clock_now());
}

/* By name: after a reload, e may come from an older config than queue_cfg. */
static int egress_index(const struct egress_conf *e)
{
    const struct egress_conf *now = config_find_egress(queue_cfg, e->name);
    return now ? (int)(now - queue_cfg->egress) : 63;
}

const struct egress_conf *queue_apply_alignment(struct message *m, size_t rcpt,
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
        queue_submit_mark(m, SIZE_MAX, SPOOL_MARK_HELD);
        queue_emit("held", m, SIZE_MAX, NULL, NULL, NULL, c->dmarc.reason);
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

void queue_start_check(struct message *m)
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
    for (size_t i = 0; m->sign && !queue_strip_upstream(m) && i < m->sign->n_upstream; i++) {
        const struct dkim_signature *u = &m->sign->upstream[i];
        if (u->result != 1) continue;
        sigs[n++] = (struct dmarc_dkim_input){.domain = u->domain,
                                              .selector = u->selector,
                                              .algorithm = u->algorithm,
                                              .upstream = 1};
    }
    m->check_state = STAGE_RUNNING;
    m->prep_pending++;
    alignment_submit(queue_cfg, m->env->sender, m->env->from_domain, sigs, n, check_done, m);
}
