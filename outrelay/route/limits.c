/* limits.c - caps and shaping per egress x provider, in memory: message counts in fixed UTC
 * calendar windows (minute, hour, day), with a cluster also the cluster-wide counts Redis last
 * gave (cluster_caps.c), receivers' replies matched against the shaping rules, and the
 * suspensions/throttles they start, hold and lift. Changes are handed to state.c to persist;
 * never does I/O itself. Loop thread only; called by route.c and control.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cluster/cluster.h"
#include "common/log.h"
#include "common/util.h"
#include "records/records.h"
#include "route/route_internal.h"

static const int64_t window_seconds[WIN_COUNT] = {60, 3600, 86400};
static const char *const window_names[WIN_COUNT] = {"minute", "hour", "day"};

const char *limits_window_name(int window)
{
    return window_names[window];
}

/* Unix time has no leap seconds, so these are UTC calendar minutes, hours and days. */
int64_t limits_window_start(int window, int64_t now)
{
    int64_t len = window_seconds[window];
    int64_t r = now % len;
    return now - (r < 0 ? r + len : r);
}

int64_t limits_window_end(int window, int64_t now)
{
    return limits_window_start(window, now) + window_seconds[window];
}

static int cap_limit(const struct cap_conf *cap, int window)
{
    if (!cap) return 0;
    return window == WIN_MINUTE ? cap->per_minute
           : window == WIN_HOUR ? cap->per_hour
                                : cap->per_day;
}

static int listed(char **names, size_t n, const char *name)
{
    if (!n) return 1; /* no list: every one */
    for (size_t i = 0; i < n; i++)
        if (!strcmp(names[i], name)) return 1;
    return 0;
}

void limits_build(struct route_world *w)
{
    const struct config *cfg = w->cfg;
    w->n_providers = cfg->n_providers + 1;
    w->pairs = xcalloc(cfg->n_egress * w->n_providers, sizeof *w->pairs);
    for (size_t e = 0; e < cfg->n_egress; e++) {
        for (size_t p = 0; p < w->n_providers; p++) {
            struct route_pair *pair = &w->pairs[e * w->n_providers + p];
            pair->egress = &cfg->egress[e];
            pair->provider = p < cfg->n_providers ? cfg->providers[p].name : "other";
            for (size_t c = 0; c < cfg->n_caps; c++)
                if (!strcmp(cfg->caps[c].egress, pair->egress->name) &&
                    !strcmp(cfg->caps[c].provider, pair->provider))
                    pair->cap = &cfg->caps[c];
        }
    }
    size_t n = 0;
    w->shaping = xcalloc(cfg->n_shaping * cfg->n_egress * w->n_providers + 1, sizeof *w->shaping);
    for (size_t r = 0; r < cfg->n_shaping; r++) {
        const struct shaping_rule *rule = &cfg->shaping[r];
        for (size_t i = 0; i < cfg->n_egress * w->n_providers; i++) {
            struct route_pair *pair = &w->pairs[i];
            if (!listed(rule->egress, rule->n_egress, pair->egress->name) ||
                !listed(rule->providers, rule->n_providers, pair->provider))
                continue;
            struct route_shaping *s = &w->shaping[n++];
            s->rule = rule;
            s->pair = pair;
            s->hit_times = xcalloc((size_t)rule->hits, sizeof *s->hit_times);
        }
    }
    w->n_shaping_states = n;
}

void limits_free(struct route_world *w)
{
    for (size_t i = 0; i < w->n_shaping_states; i++)
        free(w->shaping[i].hit_times);
    free(w->shaping);
    free(w->pairs);
    w->shaping = NULL;
    w->pairs = NULL;
    w->n_shaping_states = 0;
}

struct route_pair *limits_pair(struct route_world *w, const struct egress_conf *egress,
                               const char *provider)
{
    const struct config *cfg = w->cfg;
    size_t e = 0, p = 0;
    if (!egress || !w->pairs) return NULL;
    while (e < cfg->n_egress && strcmp(cfg->egress[e].name, egress->name))
        e++;
    if (e == cfg->n_egress) return NULL;
    while (p < cfg->n_providers && (!provider || strcmp(cfg->providers[p].name, provider)))
        p++;
    return &w->pairs[e * w->n_providers + p]; /* p == n_providers: "other" */
}

static int own_count_in(const struct route_pair *p, int window, int64_t now)
{
    return p->window_start[window] == limits_window_start(window, now) ? p->count[window] : 0;
}

static int shared_count_in(const struct route_pair *p, int window, int64_t now)
{
    return p->shared_start[window] == limits_window_start(window, now) ? p->shared[window] : 0;
}

int limits_count_in(struct route_pair *p, int window, int64_t now)
{
    int own = own_count_in(p, window, now), shared = shared_count_in(p, window, now);
    return shared > own ? shared : own;
}

size_t limits_cap_windows(const struct route_pair *p, int64_t now, struct cluster_cap_window *w)
{
    size_t n = 0;
    for (int i = 0; p && p->cap && i < WIN_COUNT; i++) {
        int limit = cap_limit(p->cap, i);
        if (limit <= 0) continue;
        w[n].span = window_names[i];
        w[n].start = limits_window_start(i, now);
        w[n].end = limits_window_end(i, now);
        w[n].limit = limit;
        n++;
    }
    return n;
}

void limits_shared_update(struct route_pair *p, size_t n, const char *const *spans,
                          const int64_t *starts, const long long *counts)
{
    for (size_t k = 0; k < n; k++)
        for (int i = 0; i < WIN_COUNT; i++) {
            if (strcmp(spans[k], window_names[i]) != 0) continue;
            /* the newest window wins; a late answer about an older one changes nothing */
            if (p->shared_start[i] > starts[k]) break;
            p->shared_start[i] = starts[k];
            p->shared[i] = counts[k] > 1000000000 ? 1000000000 : (int)counts[k];
            break;
        }
}

static int64_t period_start(int64_t period, int64_t now)
{
    return now - now % period;
}

void limits_count(struct route_world *w, struct route_pair *p, int64_t now)
{
    for (int i = 0; i < WIN_COUNT; i++) {
        int64_t start = limits_window_start(i, now);
        if (p->window_start[i] != start) {
            p->window_start[i] = start;
            p->count[i] = 0;
        }
        p->count[i]++;
    }
    p->dirty = 1;
    for (size_t i = 0; i < w->n_shaping_states; i++) {
        struct route_shaping *s = &w->shaping[i];
        int count;
        int64_t period;
        if (s->pair != p || !s->active) continue;
        limits_throttle_rate(w, s, now, &count, &period);
        if (!count) continue;
        if (s->throttle_start != period_start(period, now)) {
            s->throttle_start = period_start(period, now);
            s->throttle_count = 0;
        }
        s->throttle_count++;
    }
}

/* Recovery (rule has recover: {quiet, step}): after `duration` the entry throttles at the
 * rule's rate (1/min for suspend and reroute rules without one), and every `quiet` period
 * without a matching reply multiplies the rate by `step`. It is lifted once the rate passes
 * the cap's per_minute for the pair, or 60 a minute where there is no such cap. */
static int recovery_base(const struct shaping_rule *r, int *count, int64_t *period)
{
    if (r->rate_count) {
        *count = r->rate_count;
        *period = r->rate_period;
        return 1;
    }
    if (r->action == SHAPING_THROTTLE) return 0; /* a connection-only throttle just ends */
    *count = 1;
    *period = 60;
    return 1;
}

static double recovery_rate(const struct route_shaping *s, int64_t now, int *count, int64_t *period)
{
    const struct shaping_rule *r = s->rule;
    if (!recovery_base(r, count, period)) return -1;
    int64_t from = s->last_hit > s->until ? s->last_hit : s->until;
    int64_t steps = now > from ? (now - from) / r->recover_quiet : 0;
    double rate = *count;
    for (int64_t i = 0; i < steps && rate < 1e9; i++) /* libm-free power; stops when huge */
        rate *= r->recover_step;
    return rate;
}

static int recovery_over(const struct route_shaping *s, int64_t now)
{
    int count;
    int64_t period;
    if (!s->rule->recover_quiet) return 1;
    double rate = recovery_rate(s, now, &count, &period);
    if (rate < 0) return 1;
    const struct cap_conf *cap = s->pair->cap;
    double limit = cap && cap->per_minute ? cap->per_minute : 60.0;
    return rate * 60.0 / (double)period > limit;
}

void limits_throttle_rate(const struct route_world *w, const struct route_shaping *s, int64_t now,
                          int *count, int64_t *period)
{
    (void)w;
    *count = 0;
    *period = 60;
    if (!s->active) return;
    if (now < s->until) {
        if (s->rule->action == SHAPING_THROTTLE && s->rule->rate_count) {
            *count = s->rule->rate_count;
            *period = s->rule->rate_period;
        }
        return;
    }
    double rate = recovery_rate(s, now, count, period);
    if (rate < 0) {
        *count = 0;
        return;
    }
    *count = rate > 1e8 ? 100000000 : (int)rate; /* whole messages, rounded down */
}

static void lift(struct route_world *w, struct route_shaping *s, const char *why, int64_t now)
{
    char until[32];
    ramp_format_time(s->until, until, sizeof until);
    log_info("route: shaping=%s, egress=%s, provider=%s, action=%s, lifted (%s)", s->rule->name,
             s->pair->egress->name, s->pair->provider, config_shaping_action_name(s->rule->action),
             why);
    char detail[300];
    snprintf(detail, sizeof detail, "rule %s lifted (%s)", s->rule->name, why);
    struct record_event ev = {.type = RECORD_SHAPING,
                              .queue_id = "-",
                              .egress = s->pair->egress->name,
                              .provider = s->pair->provider,
                              .rule = s->rule->name,
                              .action = "lifted",
                              .detail = detail};
    records_emit(&ev);
    s->active = 0;
    s->throttle_count = 0;
    s->throttle_start = 0;
    route_db_delete_shaping(w, s);
    route_shared_shaping(w, s, now);
}

void limits_expire(struct route_world *w, int64_t now)
{
    for (size_t i = 0; i < w->n_shaping_states; i++) {
        struct route_shaping *s = &w->shaping[i];
        if (!s->active || now < s->until) continue;
        if (recovery_over(s, now))
            lift(w, s, s->rule->recover_quiet ? "recovered" : "duration over", now);
    }
}

int64_t limits_blocked_until(struct route_world *w, struct route_pair *p, int64_t now, char *why,
                             size_t size)
{
    return limits_blocked_until_held(w, p, now, 0, why, size);
}

int64_t limits_blocked_until_held(struct route_world *w, struct route_pair *p, int64_t now,
                                  int held, char *why, size_t size)
{
    int64_t until = 0;
    char tbuf[32];
    if (size) why[0] = '\0';
    /* with a cluster: while Redis answers, the cluster-wide count (as last seen) holds the
     * cap; while it does not, this instance's own count holds the limit divided by the
     * instances last seen, and a window known to be full cluster-wide stays full */
    int local = cluster_configured() && !cluster_is_up();
    int instances = local ? cluster_instances_seen() : 1;
    for (int i = 0; p->cap && i < WIN_COUNT; i++) {
        int limit = cap_limit(p->cap, i);
        if (!limit) continue;
        int share = local ? cluster_caps_local_limit(limit, instances) : limit;
        int full = local ? own_count_in(p, i, now) >= share || shared_count_in(p, i, now) >= limit
                         : limits_count_in(p, i, now) - (held ? 1 : 0) >= limit;
        if (!full) continue;
        int64_t end = limits_window_end(i, now);
        if (end > until) until = end;
        if (local && share != limit)
            snprintf(why, size,
                     "cap %d/%s (%d shared by %d instances, redis down) reached for %s x %s", share,
                     window_names[i], limit, instances, p->egress->name, p->provider);
        else
            snprintf(why, size, "cap %d/%s reached for %s x %s%s", limit, window_names[i],
                     p->egress->name, p->provider, cluster_configured() ? " (cluster-wide)" : "");
    }
    for (size_t i = 0; i < w->n_shaping_states; i++) {
        struct route_shaping *s = &w->shaping[i];
        if (s->pair != p || !s->active) continue;
        if (now < s->until && s->rule->action != SHAPING_THROTTLE) {
            if (s->until > until) until = s->until;
            ramp_format_time(s->until, tbuf, sizeof tbuf);
            snprintf(why, size, "%s by shaping rule %s until %s",
                     s->rule->action == SHAPING_SUSPEND ? "suspended" : "rerouted", s->rule->name,
                     tbuf);
            continue;
        }
        int count;
        int64_t period;
        limits_throttle_rate(w, s, now, &count, &period);
        if (!count || s->throttle_start != period_start(period, now) || s->throttle_count < count)
            continue;
        int64_t end = period_start(period, now) + period;
        if (end > until) until = end;
        snprintf(why, size, "throttled by shaping rule %s to %d per %llds%s", s->rule->name, count,
                 (long long)period, now < s->until ? "" : " (recovering)");
    }
    return until;
}

int limits_feedback(struct route_world *w, const struct route_pair *p, int code,
                    const char *enhanced, const char *text, int64_t now)
{
    int started = 0;
    for (size_t i = 0; i < w->n_shaping_states; i++) {
        struct route_shaping *s = &w->shaping[i];
        const struct shaping_rule *r = s->rule;
        if (s->pair != p || !config_shaping_matches(r, code, enhanced, text)) continue;
        if (s->active && now < s->until) continue; /* in force: nothing to add */
        s->hit_times[s->next_hit] = now;
        s->next_hit = (s->next_hit + 1) % r->hits;
        if (s->n_hits < r->hits) s->n_hits++;
        int recent = 0;
        for (int k = 0; k < s->n_hits; k++)
            recent += s->hit_times[k] > now - r->window;
        if (recent < r->hits) {
            if (s->active) { /* recovering: a matching reply starts the quiet period again */
                s->last_hit = now;
                route_db_save_shaping(w, s);
                route_shared_shaping(w, s, now);
            }
            continue;
        }
        s->active = 1;
        s->started = now;
        s->until = now + r->duration;
        s->last_hit = now;
        s->n_hits = s->next_hit = 0;
        s->throttle_start = 0;
        s->throttle_count = 0;
        route_db_save_shaping(w, s);
        route_shared_shaping(w, s, now);
        char until[32];
        ramp_format_time(s->until, until, sizeof until);
        log_warn("route: shaping=%s, egress=%s, provider=%s, action=%s, until=%s, reply=\"%d %s "
                 "%s\"",
                 r->name, p->egress->name, p->provider, config_shaping_action_name(r->action),
                 until, code, enhanced ? enhanced : "", text ? text : "");
        char detail[300];
        snprintf(detail, sizeof detail, "rule %s: %s until %s", r->name,
                 config_shaping_action_name(r->action), until);
        struct record_event ev = {.type = RECORD_SHAPING,
                                  .queue_id = "-",
                                  .egress = p->egress->name,
                                  .provider = p->provider,
                                  .rule = r->name,
                                  .until = s->until,
                                  .reply_code = code,
                                  .enhanced_code = enhanced,
                                  .reply_text = text,
                                  .action = config_shaping_action_name(r->action),
                                  .detail = detail};
        records_emit(&ev);
        started |= 1 | (r->reputation ? 2 : 0);
    }
    return started;
}

enum limits_merge limits_shaping_merge(struct limits_shared_entry *local,
                                       const struct limits_shared_entry *remote, int64_t remote_at,
                                       int64_t now, int recovers, int *republish)
{
    *republish = 0;
    if (!remote->active) {
        if (!local->active) return LIMITS_KEEP;
        if (local->until <= remote_at && local->last_hit <= remote_at) {
            local->active = 0;
            return LIMITS_LIFTED;
        }
        *republish = 1; /* still in force here after that lift: ours stands, and is shared */
        return LIMITS_KEEP;
    }
    if (!local->active) {
        if (remote->until <= now && !recovers) return LIMITS_KEEP; /* over already */
        *local = *remote;
        return LIMITS_TAKEN;
    }
    struct limits_shared_entry m = *local;
    if (remote->until > m.until) {
        m.until = remote->until;
        m.started = remote->started;
    }
    if (remote->last_hit > m.last_hit) m.last_hit = remote->last_hit;
    *republish = m.until != remote->until || m.last_hit != remote->last_hit;
    int changed = m.until != local->until || m.last_hit != local->last_hit;
    *local = m;
    return changed ? LIMITS_TAKEN : LIMITS_KEEP;
}
