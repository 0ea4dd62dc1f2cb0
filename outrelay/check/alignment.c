/* alignment.c - see alignment.h. One job evaluates every egress: SPF per source address
 * (cached by spf.c), then the DMARC prediction with that SPF result. */
#include "check/alignment.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include "common/strbuf.h"
#include "common/util.h"
#include "common/workpool.h"
#include "mail/smtp_proto.h"

struct align_job {
    const struct config *cfg;
    char *sender;
    char *from_domain;
    struct dmarc_dkim_input *sigs;
    char **strings; /* owned copies behind sigs */
    size_t n_sigs;
    struct alignment_result *result;
    void (*done)(void *, struct alignment_result *);
    void *arg;
};

/* Ranks SPF results from best to worst for combining several source addresses. */
static int spf_rank(enum spf_result r)
{
    switch (r) {
    case SPF_PASS:
        return 0;
    case SPF_NONE:
        return 1;
    case SPF_NEUTRAL:
        return 2;
    case SPF_SOFTFAIL:
        return 3;
    case SPF_TEMPERROR:
        return 4;
    case SPF_PERMERROR:
        return 5;
    default:
        return 6;
    }
}

static void prefix_first_address(const struct net_prefix *p, char *out, size_t size)
{
    inet_ntop(p->family, p->addr, out, (socklen_t)size);
}

static void check_egress(const struct align_job *j, struct egress_check *c)
{
    const struct egress_conf *e = c->egress;
    const char *helo = e->helo ? e->helo : j->cfg->hostname;
    char ip[64];
    size_t n = e->type == EGRESS_SMARTHOST ? e->n_spf_ips : e->n_sources;
    for (size_t i = 0; i < n; i++) {
        struct spf_outcome o;
        if (e->type == EGRESS_SMARTHOST)
            prefix_first_address(&e->spf_ips[i], ip, sizeof ip);
        else
            util_format_addr(&e->sources[i], 0, ip, sizeof ip);
        spf_evaluate(ip, j->sender, helo, &o);
        if (!c->spf_known || spf_rank(o.result) > spf_rank(c->spf.result)) {
            c->spf = o;
            snprintf(c->spf_ip, sizeof c->spf_ip, "%s", ip);
        }
        c->spf_known = 1;
    }
    if (!c->spf_known) {
        c->spf.result = SPF_NONE;
        snprintf(c->spf.domain, sizeof c->spf.domain, "%s",
                 j->sender[0] ? smtp_address_domain(j->sender) : helo);
        snprintf(c->spf.explanation, sizeof c->spf.explanation,
                 "egress %s has no fixed source address (set source or spf_ips) so SPF cannot "
                 "be predicted",
                 e->name);
    }
    if (!j->from_domain) {
        c->dmarc.verdict = DMARC_VERDICT_NO_POLICY;
        snprintf(c->dmarc.reason, sizeof c->dmarc.reason,
                 "the message has no From: domain, so DMARC does not apply");
        return;
    }
    const char *mailfrom_domain = j->sender[0] ? smtp_address_domain(j->sender) : helo;
    dmarc_predict(j->from_domain, mailfrom_domain, c->spf.result, j->sigs, j->n_sigs, &c->dmarc);
}

static void align_work(void *arg)
{
    struct align_job *j = arg;
    for (size_t i = 0; i < j->result->n_egress; i++)
        check_egress(j, &j->result->egress[i]);
}

static void align_done(void *arg)
{
    struct align_job *j = arg;
    j->done(j->arg, j->result);
    for (size_t i = 0; i < j->n_sigs * 4; i++)
        free(j->strings[i]);
    free(j->strings);
    free(j->sigs);
    free(j->sender);
    free(j->from_domain);
    free(j);
}

void alignment_submit(const struct config *cfg, const char *sender, const char *from_domain,
                      const struct dmarc_dkim_input *sigs, size_t n_sigs,
                      void (*done)(void *arg, struct alignment_result *r), void *arg)
{
    struct align_job *j = xcalloc(1, sizeof *j);
    j->cfg = cfg;
    j->sender = xstrdup(sender);
    j->from_domain = from_domain ? xstrdup(from_domain) : NULL;
    j->n_sigs = n_sigs;
    j->sigs = xcalloc(n_sigs, sizeof *j->sigs);
    j->strings = xcalloc(n_sigs * 4, sizeof *j->strings);
    for (size_t i = 0; i < n_sigs; i++) {
        const char *src[4] = {sigs[i].domain, sigs[i].selector, sigs[i].algorithm,
                              sigs[i].public_b64};
        for (int k = 0; k < 4; k++)
            j->strings[i * 4 + k] = xstrdup(src[k] ? src[k] : "");
        j->sigs[i].domain = j->strings[i * 4];
        j->sigs[i].selector = j->strings[i * 4 + 1];
        j->sigs[i].algorithm = j->strings[i * 4 + 2];
        j->sigs[i].public_b64 = j->strings[i * 4 + 3];
        j->sigs[i].upstream = sigs[i].upstream;
    }
    j->result = xcalloc(1, sizeof *j->result);
    j->result->n_egress = cfg->n_egress;
    j->result->egress = xcalloc(cfg->n_egress, sizeof *j->result->egress);
    for (size_t i = 0; i < cfg->n_egress; i++)
        j->result->egress[i].egress = &cfg->egress[i];
    j->done = done;
    j->arg = arg;
    workpool_submit(align_work, align_done, j);
}

void alignment_result_free(struct alignment_result *r)
{
    if (!r) return;
    free(r->egress);
    free(r);
}

const struct egress_check *alignment_for(const struct alignment_result *r,
                                         const struct egress_conf *e)
{
    /* by name too: the check ran with the config of its time; a reload since then hands the
     * queue the same egress from a newer config */
    for (size_t i = 0; r && i < r->n_egress; i++)
        if (r->egress[i].egress == e || strcmp(r->egress[i].egress->name, e->name) == 0)
            return &r->egress[i];
    return NULL;
}

void alignment_policy_text(const struct dmarc_prediction *p, struct strbuf *out)
{
    if (!p->p) return;
    strbuf_printf(out, "p=%s", p->p == 'r' ? "reject" : p->p == 'q' ? "quarantine" : "none");
    if (p->sp)
        strbuf_printf(out, " sp=%s",
                      p->sp == 'r'   ? "reject"
                      : p->sp == 'q' ? "quarantine"
                                     : "none");
    strbuf_printf(out, " pct=%d adkim=%c aspf=%c", p->pct, p->adkim ? p->adkim : 'r',
                  p->aspf ? p->aspf : 'r');
    if (p->record_domain[0]) strbuf_printf(out, " at=%s", p->record_domain);
}

void alignment_dkim_text(const struct dmarc_prediction *p, struct strbuf *out)
{
    for (size_t i = 0; i < p->n_dkim; i++) {
        const struct dmarc_dkim_outcome *d = &p->dkim[i];
        strbuf_printf(out, "%sd=%s s=%s a=%s key=%s %s%s", i ? "; " : "", d->domain, d->selector,
                      d->algorithm,
                      d->key_matches > 0    ? "ok"
                      : d->key_matches == 0 ? "mismatch"
                                            : "dns-error",
                      d->aligned ? "aligned" : "unaligned", d->upstream ? " upstream" : "");
    }
}
