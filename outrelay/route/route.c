/* route.c - the route stage's public face (route.h): startup and shutdown, the decision for
 * one recipient (pins, then its route group's ramp, then caps and shaping with spill along
 * the group's spill order), the reservation in the cluster's shared cap counters, counting,
 * receivers' feedback and the operator's commands. Owns the one
 * route_world; the arithmetic is in ramp.c, the windows and rules in limits.c, route.db in state.c,
 * the status and plan texts in control.c. Loop thread only. */
#include "route/route.h"

#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cluster/cluster.h"
#include "common/log.h"
#include "common/clock.h"
#include "common/util.h"
#include "route/route_internal.h"

/* How often counts reach route.db at most (seconds of real time): a crash loses at most this
 * much counting. */
#define ROUTE_FLUSH_INTERVAL 5

struct route_world route_world;

static void caps_in_use(struct route_world *w);

static void group_overrides_free(struct route_world *w)
{
    size_t n = w->cfg ? w->cfg->ramp.n_groups : 0;
    for (size_t i = 0; w->group_override && i < n; i++)
        free(w->group_override[i].weights);
    free(w->group_override);
    w->group_override = NULL;
}

static void group_overrides_build(struct route_world *w)
{
    size_t n = w->cfg->ramp.n_groups;
    w->group_override = xcalloc(n ? n : 1, sizeof *w->group_override);
}

int route_init(const struct config *cfg, const char *state_dir, char *err, size_t errlen)
{
    struct route_world *w = &route_world;
    if (w->cfg) route_shutdown();
    memset(w, 0, sizeof *w);
    w->cfg = cfg;
    w->state_dir = xstrdup(state_dir);
    w->last_flush = clock_now();
    limits_build(w);
    group_overrides_build(w);
    autopilot_build(w);
    if (route_db_open(w, err, errlen) < 0 || route_db_load(w, err, errlen) < 0) {
        route_shutdown();
        return -1;
    }
    limits_expire(w, clock_now());
    route_shared_tick(w);
    caps_in_use(w);
    if (w->override.mode != RAMP_SCHEDULE)
        log_info("route: ramp override %s %.2f%% (since %lld) still in force",
                 ramp_mode_name(w->override.mode), w->override.percent,
                 (long long)w->override.since);
    return 0;
}

/* SIGHUP: route with cfg from now on (ramp, pins, providers, caps, shaping). The counters are
 * written to route.db and read back for the new egresses and providers, by name, as at start;
 * so are active suspensions and throttles of rules that still exist, and the operator's ramp
 * override. Replies counted toward a rule's threshold but not yet acting are forgotten. The
 * world is on cfg even when -1 (route.db could not be read back; err says why). */
int route_reload(const struct config *cfg, char *err, size_t errlen)
{
    struct route_world *w = &route_world;
    if (!w->cfg) return 0;
    route_db_flush_counters(w);
    w->last_flush = clock_now();
    autopilot_free(w);
    limits_free(w);
    group_overrides_free(w);
    w->cfg = cfg;
    limits_build(w);
    group_overrides_build(w);
    autopilot_build(w);
    caps_in_use(w);
    if (route_db_load(w, err, errlen) < 0) return -1;
    limits_expire(w, clock_now());
    return 0;
}

void route_flush(void)
{
    struct route_world *w = &route_world;
    if (!w->cfg) return;
    route_db_flush_counters(w);
    w->last_flush = clock_now();
    autopilot_tick(w, clock_now());
}

void route_shutdown(void)
{
    struct route_world *w = &route_world;
    if (!w->cfg) return;
    if (w->db) route_db_flush_counters(w);
    cluster_caps_set_in_use(0, NULL);
    route_db_close(w);
    autopilot_free(w);
    limits_free(w);
    group_overrides_free(w);
    free(w->state_dir);
    memset(w, 0, sizeof *w);
}

/* Longest suffix wins, so "mx.microsoft" and "mail.protection.outlook.com" can sit beside
 * broader groupings. */
const char *route_provider(const char *const *mx_hosts, size_t n_hosts)
{
    const struct config *cfg = route_world.cfg;
    for (size_t h = 0; cfg && h < n_hosts; h++) {
        const char *host = mx_hosts[h];
        size_t hlen = host ? strlen(host) : 0;
        while (hlen && host[hlen - 1] == '.')
            hlen--;
        const char *best = NULL;
        size_t best_len = 0;
        for (size_t p = 0; p < cfg->n_providers; p++) {
            for (size_t s = 0; s < cfg->providers[p].n_mx_suffixes; s++) {
                const char *sfx = cfg->providers[p].mx_suffixes[s];
                size_t slen = strlen(sfx);
                if (slen > hlen || slen <= best_len) continue;
                if (strncasecmp(host + hlen - slen, sfx, slen)) continue;
                if (slen < hlen && host[hlen - slen - 1] != '.') continue;
                best = cfg->providers[p].name;
                best_len = slen;
            }
        }
        if (best) return best;
    }
    return "other";
}

double route_share(int64_t now)
{
    const struct config *cfg = route_world.cfg;
    return cfg ? ramp_share_at(&cfg->ramp, &route_world.override, now) : 0.0;
}

uint32_t route_bucket(const char *key)
{
    return ramp_bucket(key);
}

static int pin_live(const struct ramp_pin *pin, int64_t now)
{
    return !pin->until || now < pin->until;
}

static const struct ramp_pin *find_domain_pin(const struct ramp_conf *r, const char *domain,
                                              int64_t now)
{
    const struct ramp_pin *best = NULL;
    size_t dlen = strlen(domain);
    for (size_t i = 0; i < r->n_pin_domains; i++) {
        const struct ramp_pin *p = &r->pin_domains[i];
        size_t plen = strlen(p->name);
        int match = dlen == plen  ? !strcasecmp(domain, p->name)
                    : dlen > plen ? domain[dlen - plen - 1] == '.' &&
                                        !strcasecmp(domain + dlen - plen, p->name)
                                  : 0;
        if (match && pin_live(p, now) && (!best || plen > strlen(best->name))) best = p;
    }
    return best;
}

static const struct ramp_pin *find_pin(const struct ramp_pin *pins, size_t n, const char *name,
                                       int64_t now)
{
    for (size_t i = 0; name && i < n; i++)
        if (!strcmp(pins[i].name, name) && pin_live(&pins[i], now)) return &pins[i];
    return NULL;
}

/* The ramp egress that is not e (ramp.from for an egress outside the ramp). */
static const struct egress_conf *other_egress(const struct config *cfg, const struct egress_conf *e)
{
    const struct egress_conf *from = config_find_egress(cfg, cfg->ramp.from);
    const struct egress_conf *to = config_find_egress(cfg, cfg->ramp.to);
    if (e == to) return from;
    if (e == from) return to;
    return from;
}

static void describe_pin(char *out, size_t size, const char *kind, const struct ramp_pin *pin)
{
    char until[32] = "";
    if (pin->until) ramp_format_time(pin->until, until, sizeof until);
    snprintf(out, size, "pinned: %s %s -> %s%s%s", kind, pin->name, pin->egress,
             pin->until ? " until " : "", until);
}

/* Reasons are for logs and records: cut rather than fail when long. */
static void __attribute__((format(printf, 2, 3)))
set_reason(struct route_decision *out, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out->reason, sizeof out->reason, fmt, ap);
    va_end(ap);
}

/* "example.com" matches itself only, ".example.com" the domains below it. */
static int domain_matches(const char *domain, const char *pattern)
{
    if (pattern[0] != '.') return !strcasecmp(domain, pattern);
    size_t dlen = strlen(domain), plen = strlen(pattern);
    return dlen > plen && !strcasecmp(domain + dlen - plen, pattern);
}

static int any_domain(char *const *list, size_t n, const char *domain)
{
    for (size_t i = 0; i < n; i++)
        if (domain_matches(domain, list[i])) return 1;
    return 0;
}

static const char *domain_of(const char *address)
{
    const char *at = address ? strrchr(address, '@') : NULL;
    return at ? at + 1 : "";
}

long route_group_of(const struct config *cfg, const struct envelope *env, size_t rcpt)
{
    const char *sender_domain =
        env->from_domain && *env->from_domain ? env->from_domain : domain_of(env->sender);
    const char *rcpt_domain = domain_of(rcpt < env->n_rcpts ? env->rcpts[rcpt].address : NULL);
    for (size_t i = 0; cfg && i < cfg->ramp.n_groups; i++) {
        const struct route_group *g = &cfg->ramp.groups[i];
        if (g->n_origins) {
            size_t k = 0;
            while (k < g->n_origins && !(env->origin && !strcmp(env->origin, g->origins[k])))
                k++;
            if (k == g->n_origins) continue;
        }
        if (g->n_sender_domains &&
            !any_domain(g->sender_domains, g->n_sender_domains, sender_domain))
            continue;
        if (g->n_rcpt_domains && !any_domain(g->rcpt_domains, g->n_rcpt_domains, rcpt_domain))
            continue;
        return (long)i;
    }
    return -1;
}

/* The egress a group's ramp plans for the key, with the spill candidates after it (spill
 * order, or the rest by score). Returns the number of candidates in cand. */
static size_t group_candidates(struct route_world *w, size_t gi, const struct envelope *env,
                               size_t rcpt, int64_t now, const struct egress_conf **cand,
                               struct route_decision *out)
{
    const struct config *cfg = w->cfg;
    const struct route_group *g = &cfg->ramp.groups[gi];
    size_t n = g->n_egress, order[n ? n : 1], m = 0;
    double weights[n ? n : 1], sum = 0;
    char key[512];
    ramp_group_weights(g, &w->group_override[gi], now, weights);
    ramp_key_parts(g->key, g->n_key, env, rcpt, key, sizeof key);
    ramp_group_order(g, weights, key, order);
    for (size_t e = 0; e < n; e++)
        sum += weights[e];
    out->share = sum > 0 ? 100.0 * weights[order[0]] / sum : 0.0;
    cand[m++] = config_find_egress(cfg, g->egress[order[0]]);
    if (g->n_spill) {
        for (size_t i = 0; i < g->n_spill; i++) {
            const struct egress_conf *e = config_find_egress(cfg, g->spill[i]);
            size_t k = 0;
            while (k < m && cand[k] != e)
                k++;
            if (k == m && m < n) cand[m++] = e; /* each egress once */
        }
    } else {
        for (size_t i = 1; i < n; i++)
            cand[m++] = config_find_egress(cfg, g->egress[order[i]]);
    }
    set_reason(out, "group %s: rendezvous -> %s (%.2f%% of the weight)", g->name,
               cand[0] ? cand[0]->name : "?", out->share);
    return m;
}

void route_job_token(const char *queue_id, const char *rcpt_domain,
                     const struct egress_conf *egress, char *out, size_t size)
{
    snprintf(out, size, "%s %s", queue_id,
             egress->type == EGRESS_SMARTHOST ? ""
             : rcpt_domain                    ? rcpt_domain
                                              : "");
    for (char *c = out; *c; c++)
        *c = (char)tolower((unsigned char)*c);
}

/* 1 when recipient rcpt's job through e holds a slot reserved in the cluster's shared count. */
static int holds_slot(const struct egress_conf *e, const char *provider, const struct envelope *env,
                      size_t rcpt, int64_t now)
{
    if (!cluster_is_up()) return 0; /* first: without a cluster this costs nothing */
    struct route_pair *p = limits_pair(&route_world, e, provider);
    if (!p || !p->cap) return 0;
    char token[300];
    route_job_token(env->queue_id, domain_of(rcpt < env->n_rcpts ? env->rcpts[rcpt].address : NULL),
                    e, token, sizeof token);
    return cluster_caps_granted(e->name, p->provider, token, now);
}

void route_decide(const struct envelope *env, size_t rcpt, const char *provider, int64_t now,
                  struct route_decision *out)
{
    struct route_world *w = &route_world;
    const struct config *cfg = w->cfg;
    memset(out, 0, sizeof *out);
    if (!cfg || !cfg->n_egress) {
        snprintf(out->reason, sizeof out->reason, "no egress configured");
        out->retry_at = now + 60;
        return;
    }
    const struct ramp_conf *r = &cfg->ramp;
    const char *address = rcpt < env->n_rcpts ? env->rcpts[rcpt].address : "";
    const char *at = address ? strrchr(address, '@') : NULL;
    const char *domain = at ? at + 1 : "";
    const struct ramp_pin *pin = NULL;
    const struct egress_conf *planned = NULL;
    char pin_reason[sizeof out->reason] = "";
    /* the planned egress first, then where it spills to, in order */
    size_t n_cand = 0, max_cand = cfg->n_egress + 2;
    const struct egress_conf *cand[max_cand];
    long gi = route_group_of(cfg, env, rcpt);
    char group[80] = ""; /* with groups configured, every reason names the recipient's group */

    out->group = gi >= 0 ? r->groups[gi].name : "default";
    if (r->n_groups) snprintf(group, sizeof group, "group %s: ", out->group);
    out->share = gi >= 0 ? 0.0 : ramp_share_at(r, &w->override, now);
    if ((pin = find_pin(r->pin_origins, r->n_pin_origins, env->origin, now)))
        describe_pin(pin_reason, sizeof pin_reason, "origin", pin);
    else if ((pin = find_domain_pin(r, domain, now)))
        describe_pin(pin_reason, sizeof pin_reason, "domain", pin);
    else if ((pin = find_pin(r->pin_providers, r->n_pin_providers, provider, now)))
        describe_pin(pin_reason, sizeof pin_reason, "provider", pin);
    if (pin) {
        planned = config_find_egress(cfg, pin->egress);
        set_reason(out, "%s%s", group, pin_reason);
    }
    if (planned) {
        cand[n_cand++] = planned;
        cand[n_cand++] = other_egress(cfg, planned);
    } else if (gi >= 0) {
        n_cand = group_candidates(w, (size_t)gi, env, rcpt, now, cand, out);
        planned = cand[0];
    } else {
        char key[512];
        const struct egress_conf *to = config_find_egress(cfg, r->to);
        ramp_key(r, env, rcpt, key, sizeof key);
        uint32_t bucket = ramp_bucket(key);
        planned = to && ramp_goes_to(bucket, out->share) ? to : config_find_egress(cfg, r->from);
        if (!planned) planned = &cfg->egress[0];
        set_reason(out, "%sramp %.2f%%: bucket %u -> %s", group, out->share, bucket, planned->name);
        cand[n_cand++] = planned;
        cand[n_cand++] = other_egress(cfg, planned);
    }
    if (!planned) planned = &cfg->egress[0];
    out->planned = planned;

    limits_expire(w, now);
    char why[200], others[200] = "";
    int64_t blocked =
        limits_blocked_until_held(w, limits_pair(w, planned, provider), now,
                                  holds_slot(planned, provider, env, rcpt, now), why, sizeof why);
    if (!blocked) {
        out->egress = planned;
        return;
    }
    int64_t soonest = blocked;
    for (size_t i = 1; i < n_cand; i++) {
        const struct egress_conf *other = cand[i];
        char other_why[200] = "";
        if (!other || other == planned) continue;
        int64_t other_blocked = limits_blocked_until_held(
            w, limits_pair(w, other, provider), now, holds_slot(other, provider, env, rcpt, now),
            other_why, sizeof other_why);
        if (!other_blocked) {
            out->egress = other;
            out->spilled = 1;
            set_reason(out, "%sspilled to %s: %s", group, other->name, why);
            return;
        }
        if (other_blocked < soonest) soonest = other_blocked;
        size_t len = strlen(others);
        snprintf(others + len, sizeof others - len, "; %s", other_why);
    }
    out->retry_at = soonest;
    set_reason(out, "%swaiting: %s%s", group, why, others);
}

/* --- shared caps: with a cluster, a capped pair's counts live in Redis (cluster_caps.c) ------ */

static struct {
    void (*wake)(void *arg);
    void *arg;
} reserve_waker;

/* Every answer to a reservation: the mirror of the cluster-wide counts, then the mail waiting
 * for it goes on. */
static void reserve_answer(const struct cluster_caps_answer *a)
{
    struct route_world *w = &route_world;
    const struct egress_conf *e = w->cfg ? config_find_egress(w->cfg, a->egress) : NULL;
    struct route_pair *p = e ? limits_pair(w, e, a->provider) : NULL;
    if (p && a->granted >= 0) limits_shared_update(p, a->n, a->spans, a->starts, a->counts);
    if (reserve_waker.wake) reserve_waker.wake(reserve_waker.arg);
}

static void caps_in_use(struct route_world *w)
{
    int any = 0;
    for (size_t i = 0; w->pairs && i < w->cfg->n_egress * w->n_providers; i++)
        any |= w->pairs[i].cap != NULL;
    cluster_caps_set_in_use(any, reserve_answer);
}

enum route_reserve route_reserve(const struct egress_conf *egress, const char *provider,
                                 const char *queue_id, const char *rcpt_domain, int64_t now,
                                 void (*wake)(void *arg), void *arg, int64_t *retry_at, char *why,
                                 size_t size)
{
    if (!cluster_is_up()) return ROUTE_RESERVE_GO; /* no cluster, or the local caps decided */
    struct route_world *w = &route_world;
    struct route_pair *p = limits_pair(w, egress, provider);
    struct cluster_cap_window win[CLUSTER_CAP_WINDOWS];
    size_t n = limits_cap_windows(p, now, win);
    if (!n) return ROUTE_RESERVE_GO; /* no cap: Redis is not asked */
    char token[300];
    route_job_token(queue_id, rcpt_domain, egress, token, sizeof token);
    reserve_waker.wake = wake;
    reserve_waker.arg = arg;
    /* why keeps the route's reason unless the answer is FULL */
    char full[200];
    int held = cluster_caps_granted(egress->name, p->provider, token, now);
    int64_t until = limits_blocked_until_held(w, p, now, held, full, sizeof full);
    if (!until) {
        switch (cluster_caps_reserve(egress->name, p->provider, token, win, n, now)) {
        case CLUSTER_CAPS_GRANTED:
        case CLUSTER_CAPS_LOCAL:
            return ROUTE_RESERVE_GO;
        case CLUSTER_CAPS_ASKING:
            return ROUTE_RESERVE_ASKING;
        case CLUSTER_CAPS_REFUSED: /* the answer filled the mirror: it says which window */
            until = limits_blocked_until(w, p, now, full, sizeof full);
            break;
        }
    }
    if (!until) { /* refused for a window that has ended since: ask again at once */
        until = now + 1;
        snprintf(full, sizeof full, "cap reached for %s x %s (cluster-wide)", egress->name,
                 p->provider);
    }
    *retry_at = until;
    snprintf(why, size, "waiting: %s", full);
    return ROUTE_RESERVE_FULL;
}

void route_count_job(const struct egress_conf *egress, const char *provider, const char *queue_id,
                     const char *rcpt_domain, int64_t now)
{
    struct route_world *w = &route_world;
    struct route_pair *p = limits_pair(w, egress, provider);
    if (!p) return;
    struct cluster_cap_window win[CLUSTER_CAP_WINDOWS];
    size_t n = cluster_configured() ? limits_cap_windows(p, now, win) : 0;
    /* a reserved slot is counted in Redis already; any other message of a capped pair is
     * added to it (or kept for the reconciliation while Redis is down) */
    if (n) {
        char token[300] = "";
        if (queue_id) route_job_token(queue_id, rcpt_domain, egress, token, sizeof token);
        if (!cluster_caps_consume(egress->name, p->provider, token))
            cluster_caps_count(egress->name, p->provider, win, n, now);
    }
    limits_count(w, p, now);
    if (clock_now() - w->last_flush >= ROUTE_FLUSH_INTERVAL) route_flush();
}

void route_count(const struct egress_conf *egress, const char *provider, int64_t now)
{
    route_count_job(egress, provider, NULL, NULL, now);
}

void route_connection_limits(const struct egress_conf *egress, const char *provider, int64_t now,
                             int *max_connections, int *max_per_connection)
{
    struct route_world *w = &route_world;
    struct route_pair *p = limits_pair(w, egress, provider);
    *max_connections = 0;
    *max_per_connection = 0;
    if (!p) return;
    if (p->cap) {
        *max_connections = p->cap->connections;
        *max_per_connection = p->cap->per_connection;
    }
    limits_expire(w, now);
    for (size_t i = 0; i < w->n_shaping_states; i++) {
        const struct route_shaping *s = &w->shaping[i];
        int c = s->rule->connections;
        if (s->pair != p || !s->active || !c) continue;
        if (!*max_connections || c < *max_connections) *max_connections = c;
    }
}

int route_feedback(const struct egress_conf *egress, const char *provider, int code,
                   const char *enhanced, const char *text, int64_t now)
{
    struct route_world *w = &route_world;
    struct route_pair *p = limits_pair(w, egress, provider);
    if (!p) return 0;
    int started = limits_feedback(w, p, code, enhanced, text, now);
    autopilot_note(w, p, code, started, now);
    return started != 0;
}

void route_note_prediction(const struct egress_conf *egress, const char *provider, int pass,
                           int64_t now)
{
    struct route_world *w = &route_world;
    autopilot_note_prediction(w, limits_pair(w, egress, provider), pass, now);
}

static void set_override(struct route_world *w, enum ramp_mode mode, double percent, int64_t now,
                         struct strbuf *out)
{
    double before = ramp_share_at(&w->cfg->ramp, &w->override, now);
    w->override.mode = mode; /* the autopilot's fields stay */
    w->override.percent = percent;
    w->override.since = now;
    route_db_save_override(w);
    route_shared_override(w, -1);
    double after = ramp_share_at(&w->cfg->ramp, &w->override, now);
    log_info("route: ramp %s, share=%.2f%%, was=%.2f%%", ramp_mode_name(mode), after, before);
    if (mode == RAMP_SCHEDULE)
        strbuf_printf(out, "ramp follows the schedule again: share %.2f%% (was %.2f%%)\n", after,
                      before);
    else
        strbuf_printf(out, "ramp %s: share %.2f%% until resume (was %.2f%%)\n",
                      ramp_mode_name(mode), after, before);
}

void route_format_weights(const struct route_group *g, const double *weights, struct strbuf *out)
{
    double sum = 0;
    for (size_t e = 0; e < g->n_egress; e++)
        sum += weights[e];
    for (size_t e = 0; e < g->n_egress; e++)
        strbuf_printf(out, "%s%s=%.2f%%", e ? " " : "", g->egress[e],
                      sum > 0 ? 100.0 * weights[e] / sum : 0.0);
}

/* A route group's override; weights (g->n_egress) is copied, NULL for RAMP_SCHEDULE. */
static void set_group_override(struct route_world *w, size_t gi, enum ramp_mode mode,
                               const double *weights, int64_t now, struct strbuf *out)
{
    const struct route_group *g = &w->cfg->ramp.groups[gi];
    struct group_override *o = &w->group_override[gi];
    size_t n = g->n_egress ? g->n_egress : 1;
    double before[n], after[n];
    struct strbuf was = STRBUF_INIT, now_text = STRBUF_INIT;
    ramp_group_weights(g, o, now, before);
    free(o->weights);
    o->weights = NULL;
    if (mode != RAMP_SCHEDULE) {
        o->weights = xcalloc(n, sizeof *o->weights);
        memcpy(o->weights, weights, g->n_egress * sizeof *weights);
    }
    o->mode = mode;
    o->since = now;
    route_db_save_group_override(w, gi);
    route_shared_override(w, (long)gi);
    ramp_group_weights(g, o, now, after);
    route_format_weights(g, before, &was);
    route_format_weights(g, after, &now_text);
    log_info("route: ramp group %s %s, weights %s, was %s", g->name, ramp_mode_name(mode),
             strbuf_str(&now_text), strbuf_str(&was));
    if (mode == RAMP_SCHEDULE)
        strbuf_printf(out, "ramp group %s follows the schedule again: %s (was %s)\n", g->name,
                      strbuf_str(&now_text), strbuf_str(&was));
    else
        strbuf_printf(out, "ramp group %s %s: %s until resume (was %s)\n", g->name,
                      ramp_mode_name(mode), strbuf_str(&now_text), strbuf_str(&was));
    strbuf_free(&was);
    strbuf_free(&now_text);
}

/* "30", "30%" into *p (0..100). */
static int parse_command_percent(const char *text, double *p)
{
    char arg[64], *end;
    size_t len = strlen(text);
    if (len >= sizeof arg) return -1;
    memcpy(arg, text, len + 1);
    if (len && arg[len - 1] == '%') arg[--len] = '\0';
    *p = strtod(arg, &end);
    return !len || *end || !isdigit((unsigned char)arg[0]) || !isfinite(*p) || *p < 0 || *p > 100
               ? -1
               : 0;
}

/* "legacy=50,cloud=30,google=20" over names[n] into weights (a name left out weighs 0). */
static int parse_command_weights(const char *text, char *const *names, size_t n, double *weights,
                                 struct strbuf *out)
{
    char *copy = xstrdup(text), *save = NULL;
    double sum = 0;
    int rc = 0;
    for (size_t e = 0; e < n; e++)
        weights[e] = 0;
    for (char *item = strtok_r(copy, ",", &save); item && !rc; item = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(item, '='), *end = NULL;
        size_t e = 0;
        if (eq) *eq = '\0';
        while (eq && e < n && strcmp(names[e], item))
            e++;
        double v = eq ? strtod(eq + 1, &end) : -1;
        if (!eq || e == n) {
            strbuf_printf(out, "\"%s\" is not EGRESS=WEIGHT with an egress of the group (", item);
            for (size_t k = 0; k < n; k++)
                strbuf_printf(out, "%s%s", k ? ", " : "", names[k]);
            strbuf_puts(out, ")\n");
            rc = -1;
        } else if (!isdigit((unsigned char)eq[1]) || *end || !isfinite(v) || v > 1e6) {
            strbuf_printf(out, "\"%s\" is not a weight from 0 to 1000000\n", eq + 1);
            rc = -1;
        } else {
            weights[e] = v;
            sum += v;
        }
    }
    if (!rc && !(sum > 0)) {
        strbuf_puts(out, "at least one weight must be above 0\n");
        rc = -1;
    }
    free(copy);
    return rc;
}

long route_group_index(const struct config *cfg, const char *name)
{
    for (size_t i = 0; cfg && name && i < cfg->ramp.n_groups; i++)
        if (!strcmp(cfg->ramp.groups[i].name, name)) return (long)i;
    return -1;
}

/* An override of a route group: verb [ARG]. */
static int group_control(struct route_world *w, size_t gi, const char *verb, const char *arg,
                         int64_t now, struct strbuf *out)
{
    const struct route_group *g = &w->cfg->ramp.groups[gi];
    size_t n = g->n_egress ? g->n_egress : 1;
    double weights[n];
    if (!strcmp(verb, "pause") && !arg) {
        ramp_group_weights(g, &w->group_override[gi], now, weights);
        set_group_override(w, gi, RAMP_PAUSE, weights, now, out);
        return 0;
    }
    if (!strcmp(verb, "resume") && !arg) {
        set_group_override(w, gi, RAMP_SCHEDULE, NULL, now, out);
        if (w->autopilot) w->autopilot[gi].next_eval = 0; /* judge again at the next chance */
        return 0;
    }
    if (!strcmp(verb, "rollback") && !arg) {
        if (w->group_override[gi].piloted) /* the step before the autopilot's */
            ramp_group_step_weights(g, w->group_override[gi].pilot_step - 1, weights);
        else
            ramp_group_rollback_weights(g, now, weights);
        set_group_override(w, gi, RAMP_ROLLBACK, weights, now, out);
        return 0;
    }
    if (!strcmp(verb, "set") && arg) {
        double p;
        if (strchr(arg, '=')) {
            if (parse_command_weights(arg, g->egress, g->n_egress, weights, out) < 0) return -1;
        } else if (g->n_egress != 2) {
            strbuf_printf(out, "group %s has %zu egresses: give weights (e.g. set %s %s=50,...)\n",
                          g->name, g->n_egress, g->name, g->egress[0]);
            return -1;
        } else if (parse_command_percent(arg, &p) < 0) {
            strbuf_printf(out, "\"%s\" is not a percentage from 0 to 100\n", arg);
            return -1;
        } else {
            weights[0] = 100 - p; /* PERCENT is the second egress's share, as ramp.to's */
            weights[1] = p;
        }
        set_group_override(w, gi, RAMP_SET, weights, now, out);
        return 0;
    }
    return 1; /* not a group command */
}

int route_control(const char *command, struct strbuf *out)
{
    struct route_world *w = &route_world;
    int64_t now = clock_now();
    char *copy = xstrdup(command ? command : ""), *save = NULL;
    const char *words[4] = {NULL, NULL, NULL, NULL};
    int n = 0, rc = -1;
    for (char *word = strtok_r(copy, " \t", &save); word; word = strtok_r(NULL, " \t", &save))
        words[n < 4 ? n : 3] = word, n++;
    const char *verb = n ? words[0] : "";
    if (!w->cfg) {
        strbuf_puts(out, "the route stage is not running\n");
        goto done;
    }
    if ((!strcmp(verb, "status") || !strcmp(verb, "plan")) && n == 1) {
        if (!strcmp(verb, "plan")) {
            rc = route_plan_report(w, now, out);
            goto done;
        }
        limits_expire(w, now);
        route_status_report(w, now, out);
        rc = 0;
        goto done;
    }
    /* a named group: VERB GROUP [ARG] */
    long gi = n >= 2 && n <= 3 ? route_group_index(w->cfg, words[1]) : -1;
    if (gi >= 0) {
        rc = group_control(w, (size_t)gi, verb, n == 3 ? words[2] : NULL, now, out);
        if (rc <= 0) goto done;
        rc = -1;
        goto unknown;
    }
    /* the default group, named or not */
    if (n >= 2 && !strcmp(words[1], "default")) {
        words[1] = words[2];
        n--;
    }
    int moves = !strcmp(verb, "pause") || !strcmp(verb, "resume") || !strcmp(verb, "rollback") ||
                !strcmp(verb, "set");
    if (moves && !w->cfg->ramp.to) {
        strbuf_puts(out, "the ramp has no ramp.to egress: there is nothing to move\n");
        goto done;
    }
    if (n == 1 && !strcmp(verb, "pause")) {
        set_override(w, RAMP_PAUSE, ramp_share_at(&w->cfg->ramp, &w->override, now), now, out);
        rc = 0;
    } else if (n == 1 && !strcmp(verb, "resume")) {
        set_override(w, RAMP_SCHEDULE, 0, now, out);
        if (w->autopilot) w->autopilot[w->cfg->ramp.n_groups].next_eval = 0;
        rc = 0;
    } else if (n == 1 && !strcmp(verb, "rollback")) {
        const struct ramp_conf *r = &w->cfg->ramp;
        long back = w->override.pilot_step - 1; /* under the autopilot: the step before its own */
        set_override(w, RAMP_ROLLBACK,
                     !w->override.piloted ? ramp_rollback_percent(r, now)
                     : back >= 0          ? r->schedule[back].percent
                                          : 0.0,
                     now, out);
        rc = 0;
    } else if (n == 2 && !strcmp(verb, "set")) {
        double p, weights[2];
        char *names[2] = {w->cfg->ramp.from, w->cfg->ramp.to};
        if (strchr(words[1], '=')) {
            if (parse_command_weights(words[1], names, 2, weights, out) < 0) goto done;
            p = 100.0 * weights[1] / (weights[0] + weights[1]);
        } else if (parse_command_percent(words[1], &p) < 0) {
            strbuf_printf(out, "\"%s\" is not a percentage from 0 to 100 (or a group: ", words[1]);
            for (size_t i = 0; i < w->cfg->ramp.n_groups; i++)
                strbuf_printf(out, "%s, ", w->cfg->ramp.groups[i].name);
            strbuf_puts(out, "default)\n");
            goto done;
        }
        set_override(w, RAMP_SET, p, now, out);
        rc = 0;
    } else {
        goto unknown;
    }
    goto done;
unknown:
    strbuf_printf(out,
                  "unknown ramp command \"%s\" (expected: status, plan, set [GROUP] "
                  "PERCENT|EGRESS=WEIGHT,..., pause [GROUP], resume [GROUP], rollback [GROUP])\n",
                  command ? command : "");
done:
    free(copy);
    return rc;
}
