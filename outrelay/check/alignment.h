/* alignment.h - the check stage on the worker pool: for one message and every configured
 * egress, would SPF pass for that egress's source addresses, and what would DMARC conclude
 * given the signatures we made? The queue decides what to do with the answers (send, reroute,
 * hold, bounce). Loop submits, result back on the loop. */
#ifndef OUTRELAY_ALIGNMENT_H
#define OUTRELAY_ALIGNMENT_H

#include <stddef.h>

#include "check/dmarc.h"
#include "common/strbuf.h"
#include "check/spf.h"
#include "config/config.h"

struct egress_check {
    const struct egress_conf *egress;
    struct spf_outcome spf; /* worst over the egress's source addresses */
    char spf_ip[64];        /* the address the worst result is for */
    int spf_known;          /* 0: the egress has no fixed source address to check */
    struct dmarc_prediction dmarc;
};

struct alignment_result {
    struct egress_check *egress; /* one per configured egress, in config order */
    size_t n_egress;
};

/* sigs: the signatures we made (may be empty). from_domain may be NULL (no From header). */
void alignment_submit(const struct config *cfg, const char *sender, const char *from_domain,
                      const struct dmarc_dkim_input *sigs, size_t n_sigs,
                      void (*done)(void *arg, struct alignment_result *r), void *arg);
void alignment_result_free(struct alignment_result *r);
/* The entry for an egress (the same one, or one of the same name from a reloaded config), or
 * NULL. */
const struct egress_check *alignment_for(const struct alignment_result *r,
                                         const struct egress_conf *e);
/* "p=reject sp=quarantine pct=100 adkim=r aspf=r" */
void alignment_policy_text(const struct dmarc_prediction *p, struct strbuf *out);
void alignment_dkim_text(const struct dmarc_prediction *p, struct strbuf *out);

#endif
