/* advice.c - see advice.h. */
#include "check/advice.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "check/dmarc.h"
#include "mail/orgdomain.h"
#include "check/spf.h"
#include "common/util.h"
#include "dns/dns_sync.h"

/* A lookup that says nothing about what is published: the resolver failed or did not answer
 * (dns_sync_bound() words it). Counted apart from what is missing or wrong. */
static int unchecked;

static void say_unchecked(struct strbuf *out, const struct dns_answer *a)
{
    strbuf_printf(out, "    cannot check: %s\n", a->error ? a->error : DNS_RESOLVER_SILENT);
    unchecked++;
}

static int advise_dkim(const struct dkim_key *k, struct strbuf *out)
{
    char name[400];
    snprintf(name, sizeof name, "%s._domainkey.%s", k->selector, k->domain);
    strbuf_printf(out, "  DKIM %s (%s, %d bits):\n", name,
                  k->algorithm == DKIM_ALG_RSA_SHA256 ? "rsa" : "ed25519", k->bits);
    struct dns_answer a;
    dns_sync_query(name, DNS_TYPE_TXT, &a);
    int problem = 0;
    if (a.status == DNS_TEMPFAIL) {
        say_unchecked(out, &a);
        strbuf_puts(out, "    the record to publish:\n");
        problem = 1;
    } else if (a.status != DNS_OK) {
        strbuf_printf(out, "    MISSING: not published (%s); add:\n", dns_status_text(a.status));
        problem = 1;
    } else {
        /* judged as receivers judge it: tags, syntax, hash and service limits, our key */
        char detail[400];
        const char *alg = k->algorithm == DKIM_ALG_RSA_SHA256 ? "rsa-sha256" : "ed25519-sha256";
        if (dmarc_key_check(a.txt, a.n, name, alg, k->public_b64, NULL, k->domain, detail,
                            sizeof detail)) {
            strbuf_printf(out, "    ok: the published key matches ours (%s)\n", detail);
        } else {
            strbuf_printf(out,
                          "    WRONG: %s; receivers will not verify our signatures. "
                          "Replace it with:\n",
                          detail);
            problem = 1;
        }
    }
    dns_sync_free(&a);
    if (problem) {
        struct strbuf rec = STRBUF_INIT;
        dkim_dns_record(k, &rec);
        strbuf_printf(out, "    %s", strbuf_str(&rec));
        if (rec.len && rec.data[rec.len - 1] != '\n') strbuf_puts(out, "\n");
        strbuf_free(&rec);
    }
    return problem;
}

/* Is the network `inner` inside `outer`? */
static int prefix_within(const struct net_prefix *inner, const struct net_prefix *outer)
{
    if (inner->family != outer->family || outer->bits > inner->bits) return 0;
    int full = outer->bits / 8, rest = outer->bits % 8;
    if (memcmp(inner->addr, outer->addr, (size_t)full) != 0) return 0;
    if (!rest) return 1;
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return (inner->addr[full] & mask) == (outer->addr[full] & mask);
}

/* The platform (policies/platforms.yaml) whose ranges hold every spf_ips entry of a smarthost
 * egress and that names an SPF include, or NULL: its include is what to publish, since the
 * provider changes its ranges and maintains that record. */
static const struct platform_conf *egress_platform(const struct config *cfg,
                                                   const struct egress_conf *e)
{
    for (size_t p = 0; e->n_spf_ips && p < cfg->n_platforms; p++) {
        const struct platform_conf *pl = &cfg->platforms[p];
        size_t inside = 0;
        for (size_t i = 0; i < e->n_spf_ips; i++)
            for (size_t k = 0; k < pl->n_networks; k++)
                if (prefix_within(&e->spf_ips[i], &pl->networks[k])) {
                    inside++;
                    break;
                }
        if (inside == e->n_spf_ips && pl->spf_include) return pl;
    }
    return NULL;
}

static void egress_mechanisms(const struct config *cfg, const struct egress_conf *e,
                              struct strbuf *mech, struct strbuf *ips)
{
    char ip[64];
    const struct platform_conf *pl = e->type == EGRESS_SMARTHOST ? egress_platform(cfg, e) : NULL;
    if (pl) strbuf_printf(mech, " include:%s", pl->spf_include);
    if (e->type == EGRESS_SMARTHOST) {
        for (size_t i = 0; i < e->n_spf_ips; i++) {
            inet_ntop(e->spf_ips[i].family, e->spf_ips[i].addr, ip, sizeof ip);
            int full = e->spf_ips[i].family == AF_INET ? 32 : 128;
            if (!pl) {
                strbuf_printf(mech, " ip%c:%s", e->spf_ips[i].family == AF_INET ? '4' : '6', ip);
                if (e->spf_ips[i].bits != full) strbuf_printf(mech, "/%d", e->spf_ips[i].bits);
            }
            strbuf_printf(ips, "%s%s", ips->len ? " " : "", ip);
        }
        return;
    }
    for (size_t i = 0; i < e->n_sources; i++) {
        util_format_addr(&e->sources[i], 0, ip, sizeof ip);
        strbuf_printf(mech, " ip%c:%s", e->sources[i].ss.ss_family == AF_INET ? '4' : '6', ip);
        strbuf_printf(ips, "%s%s", ips->len ? " " : "", ip);
    }
}

static int advise_spf(const struct config *cfg, const char *domain, struct strbuf *out)
{
    int problems = 0;
    struct strbuf need = STRBUF_INIT;
    strbuf_printf(out, "  SPF %s:\n", domain);
    struct dns_answer a;
    dns_sync_query(domain, DNS_TYPE_TXT, &a);
    if (a.status == DNS_TEMPFAIL) {
        /* evaluating SPF now would only repeat the failure and suggest a record we cannot
         * compare with what is published */
        say_unchecked(out, &a);
        dns_sync_free(&a);
        return 1;
    }
    const char *published = NULL;
    for (size_t i = 0; a.status == DNS_OK && i < a.n; i++)
        if (!strncasecmp(a.txt[i], "v=spf1", 6) && (a.txt[i][6] == ' ' || !a.txt[i][6]))
            published = a.txt[i];
    strbuf_printf(out, "    published: %s\n", published ? published : "(none: not published)");
    char sender[300];
    snprintf(sender, sizeof sender, "postmaster@%s", domain);
    for (size_t i = 0; i < cfg->n_egress; i++) {
        const struct egress_conf *e = &cfg->egress[i];
        struct strbuf mech = STRBUF_INIT, ips = STRBUF_INIT;
        egress_mechanisms(cfg, e, &mech, &ips);
        if (!ips.len) {
            strbuf_printf(out,
                          "    egress %s: no fixed source address configured (set source "
                          "or spf_ips) - cannot check\n",
                          e->name);
        } else {
            char one[64];
            const char *p = ips.data;
            while (*p) {
                size_t n = strcspn(p, " ");
                snprintf(one, sizeof one, "%.*s", (int)n, p);
                struct spf_outcome o;
                spf_evaluate_uncached(one, sender, e->helo ? e->helo : cfg->hostname, &o);
                strbuf_printf(out, "    egress %s from %s: %s%s%s\n", e->name, one,
                              spf_result_name(o.result), o.result == SPF_PASS ? "" : " - ",
                              o.result == SPF_PASS ? "" : o.explanation);
                if (o.result != SPF_PASS) problems++;
                p += n;
                while (*p == ' ')
                    p++;
            }
            strbuf_append(&need, mech.data, mech.len);
        }
        strbuf_free(&mech);
        strbuf_free(&ips);
    }
    if (problems) {
        strbuf_puts(out, "    add these mechanisms (before the final all):");
        strbuf_printf(out, "%s\n", strbuf_str(&need));
        if (!published)
            strbuf_printf(out, "    suggested: %s. IN TXT \"v=spf1%s ~all\"\n", domain,
                          strbuf_str(&need));
    }
    dns_sync_free(&a);
    strbuf_free(&need);
    return problems;
}

static int advise_dmarc(const char *domain, struct strbuf *out)
{
    char name[300], org[256];
    snprintf(name, sizeof name, "_dmarc.%s", domain);
    strbuf_printf(out, "  DMARC %s:\n", name);
    struct dns_answer a;
    dns_sync_query(name, DNS_TYPE_TXT, &a);
    const char *rec = NULL;
    for (size_t i = 0; a.status == DNS_OK && i < a.n; i++)
        if (!strncasecmp(a.txt[i], "v=DMARC1", 8)) rec = a.txt[i];
    int problem = 0;
    orgdomain_of(domain, org, sizeof org);
    if (rec) {
        strbuf_printf(out, "    published: %s\n", rec);
    } else if (a.status == DNS_TEMPFAIL) {
        say_unchecked(out, &a);
        problem = 1;
    } else if (strcasecmp(org, domain) != 0) {
        strbuf_printf(out, "    none here; the policy of the organisational domain %s applies\n",
                      org);
    } else {
        strbuf_printf(out,
                      "    MISSING: not published. During a migration start with\n"
                      "    suggested: _dmarc.%s. IN TXT \"v=DMARC1; p=none; "
                      "rua=mailto:dmarc-reports@%s; adkim=r; aspf=r\"\n",
                      domain, domain);
        problem = 1;
    }
    dns_sync_free(&a);
    return problem;
}

int advice_report(const struct config *cfg, const struct dkim_keystore *keys, struct strbuf *out)
{
    int problems = 0;
    unchecked = 0;
    if (keys->n_keys == 0)
        strbuf_printf(out,
                      "no DKIM keys under %s: create one with "
                      "`outrelay keygen DOMAIN SELECTOR`\n",
                      cfg->keys);
    for (size_t i = 0; i < keys->n_keys; i++) {
        const char *domain = keys->keys[i].domain;
        int first = 1;
        for (size_t j = 0; j < i; j++)
            if (!strcasecmp(keys->keys[j].domain, domain)) first = 0;
        if (!first) continue;
        strbuf_printf(out, "%s\n", domain);
        for (size_t j = i; j < keys->n_keys; j++)
            if (!strcasecmp(keys->keys[j].domain, domain))
                problems += advise_dkim(&keys->keys[j], out);
        problems += advise_spf(cfg, domain, out);
        problems += advise_dmarc(domain, out);
    }
    if (unchecked)
        strbuf_printf(out,
                      "%d record%s could not be checked: %s (see dns.servers); DNS trouble is "
                      "not an answer about what is published - fix it and run again\n",
                      unchecked, unchecked == 1 ? "" : "s", DNS_RESOLVER_SILENT);
    strbuf_printf(out, "%d problem%s found\n", problems, problems == 1 ? "" : "s");
    return problems;
}
