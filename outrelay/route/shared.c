/* shared.c - the route state the instances share through cluster/ (cluster_state.c): shaping
 * entries ("shaping", rule:egress:provider), the ramp overrides of the default group and the
 * route groups ("ramp", the group's name) and each group's autopilot position ("autopilot").
 * Local changes are published by limits.c, route.c and autopilot.c; entries other instances
 * wrote are applied here to route_world and route.db without being published again (no echo),
 * and recorded as learnt from the cluster. Loop thread only. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/cluster.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/strbuf.h"
#include "records/records.h"
#include "route/route_internal.h"

/* How long Redis keeps a shaping entry past its until (recovery may still be running), and a
 * lifted one (long enough for every instance to learn of the lift). */
#define SHAPING_KEEP_S 86400
#define LIFT_KEEP_S 3600
/* An autopilot lease outlives a few flush ticks (5 s) of its holder. */
#define AUTOPILOT_LEASE_S 30

static int seeded;

static int sharing(const struct route_world *w)
{
    return w->cfg && w->cfg->cluster_redis && cluster_configured();
}

/* ---- shaping */

static void shaping_name(const struct route_shaping *s, char *out, size_t size)
{
    snprintf(out, size, "%s:%s:%s", s->rule->name, s->pair->egress->name, s->pair->provider);
}

void route_shared_shaping(struct route_world *w, const struct route_shaping *s, int64_t at)
{
    if (!sharing(w)) return;
    char name[300], value[128];
    shaping_name(s, name, sizeof name);
    snprintf(value, sizeof value, "%s %lld %lld %lld", s->active ? "active" : "lifted",
             (long long)s->started, (long long)s->until, (long long)s->last_hit);
    cluster_state_publish("shaping", name, value, at,
                          s->active ? (s->until > at ? s->until : at) + SHAPING_KEEP_S
                                    : at + LIFT_KEEP_S);
}

static struct route_shaping *shaping_by_name(struct route_world *w, const char *name)
{
    for (size_t i = 0; i < w->n_shaping_states; i++) {
        char n[300];
        shaping_name(&w->shaping[i], n, sizeof n);
        if (!strcmp(n, name)) return &w->shaping[i];
    }
    return NULL;
}

static void apply_shaping(void *arg, const char *name, const char *value, int64_t at,
                          const char *by)
{
    struct route_world *w = arg;
    struct route_shaping *s = shaping_by_name(w, name);
    char state[16];
    long long started, until, last_hit;
    if (!s || sscanf(value, "%15s %lld %lld %lld", state, &started, &until, &last_hit) != 4) return;
    int64_t now = clock_now();
    struct limits_shared_entry local = {s->active, s->started, s->until, s->last_hit};
    struct limits_shared_entry remote = {!strcmp(state, "active"), started, until, last_hit};
    int republish = 0;
    enum limits_merge m =
        limits_shaping_merge(&local, &remote, at, now, s->rule->recover_quiet > 0, &republish);
    const char *action = config_shaping_action_name(s->rule->action);
    char t[32], detail[400];
    if (m != LIMITS_KEEP) {
        int was_active = s->active;
        s->active = local.active;
        s->started = local.started;
        s->until = local.until;
        s->last_hit = local.last_hit;
        if (!s->active || !was_active) s->throttle_start = s->throttle_count = 0;
        if (s->active)
            route_db_save_shaping(w, s);
        else
            route_db_delete_shaping(w, s);
        ramp_format_time(s->until, t, sizeof t);
        if (s->active)
            snprintf(detail, sizeof detail,
                     "rule %s: %s until %s, learnt from the cluster (instance %s)", s->rule->name,
                     action, t, by);
        else
            snprintf(detail, sizeof detail, "rule %s lifted, learnt from the cluster (instance %s)",
                     s->rule->name, by);
        log_info("route: shaping=%s, egress=%s, provider=%s, %s", s->rule->name,
                 s->pair->egress->name, s->pair->provider, detail);
        /* the first learning of an entry is news; a later until or hit on one in force is not */
        if (!was_active || !s->active) {
            struct record_event ev = {.type = RECORD_SHAPING,
                                      .queue_id = "-",
                                      .egress = s->pair->egress->name,
                                      .provider = s->pair->provider,
                                      .rule = s->rule->name,
                                      .until = s->active ? s->until : 0,
                                      .action = s->active ? action : "lifted",
                                      .detail = detail};
            records_emit(&ev);
        }
    }
    if (republish) route_shared_shaping(w, s, now); /* ours holds more: the others learn it */
}

/* ---- ramp overrides */

void route_shared_override(struct route_world *w, long gi)
{
    if (!sharing(w)) return;
    struct strbuf value = STRBUF_INIT;
    const char *name = "default";
    int64_t at;
    if (gi < 0) {
        strbuf_printf(&value, "%s %.17g", ramp_mode_name(w->override.mode), w->override.percent);
        at = w->override.since;
    } else {
        const struct route_group *g = &w->cfg->ramp.groups[gi];
        const struct group_override *o = &w->group_override[gi];
        name = g->name;
        strbuf_printf(&value, "%s ", ramp_mode_name(o->mode));
        for (size_t e = 0; o->weights && e < g->n_egress; e++)
            strbuf_printf(&value, "%s%s=%.17g", e ? "," : "", g->egress[e], o->weights[e]);
        at = o->since;
    }
    cluster_state_publish("ramp", name, strbuf_str(&value), at, 0);
    strbuf_free(&value);
}

static void apply_ramp(void *arg, const char *name, const char *value, int64_t at, const char *by)
{
    struct route_world *w = arg;
    char mode_name[16], rest[400] = "";
    enum ramp_mode mode;
    int64_t now = clock_now();
    if (sscanf(value, "%15s %399s", mode_name, rest) < 1 || ramp_mode_parse(mode_name, &mode) < 0)
        return;
    struct strbuf was = STRBUF_INIT, is = STRBUF_INIT;
    if (!strcmp(name, "default")) {
        double percent = strtod(rest, NULL);
        if (at < w->override.since ||
            (w->override.mode == mode && w->override.percent == percent && w->override.since == at))
            goto done; /* ours is newer, or the same */
        strbuf_printf(&was, "%.2f%%", ramp_share_at(&w->cfg->ramp, &w->override, now));
        w->override.mode = mode;
        w->override.percent = percent;
        w->override.since = at;
        route_db_save_override(w);
        strbuf_printf(&is, "%.2f%%", ramp_share_at(&w->cfg->ramp, &w->override, now));
    } else {
        long gi = route_group_index(w->cfg, name);
        if (gi < 0 || at < w->group_override[gi].since ||
            (at == w->group_override[gi].since && mode == w->group_override[gi].mode))
            goto done; /* ours is newer, or the same */
        const struct route_group *g = &w->cfg->ramp.groups[gi];
        double weights[g->n_egress ? g->n_egress : 1];
        ramp_group_weights(g, &w->group_override[gi], now, weights);
        route_format_weights(g, weights, &was);
        route_db_apply_group_override(w, name, mode_name, rest, at);
        route_db_save_group_override(w, (size_t)gi);
        ramp_group_weights(g, &w->group_override[gi], now, weights);
        route_format_weights(g, weights, &is);
    }
    char detail[600], action[64];
    snprintf(detail, sizeof detail,
             "ramp %s%s%s learnt from the cluster (instance %s): %s (was %s)", mode_name,
             strcmp(name, "default") ? " group " : "", strcmp(name, "default") ? name : "", by,
             strbuf_str(&is), strbuf_str(&was));
    snprintf(action, sizeof action, "%s (learnt)", mode_name);
    log_info("route: %s", detail);
    struct record_event ev = {
        .type = RECORD_RAMP, .queue_id = "-", .action = action, .detail = detail};
    records_emit(&ev);
    if (w->autopilot) /* a resume lets the autopilot judge again at its next chance */
        w->autopilot[strcmp(name, "default") ? (size_t)route_group_index(w->cfg, name)
                                             : w->cfg->ramp.n_groups]
            .next_eval = 0;
done:
    strbuf_free(&was);
    strbuf_free(&is);
}

/* ---- autopilot */

void route_shared_autopilot(struct route_world *w, size_t gi)
{
    if (!sharing(w)) return;
    const struct autopilot_state *st = &w->autopilot[gi];
    char value[200];
    snprintf(value, sizeof value, "%ld %lld %lld %s %s", st->step, (long long)st->held_since,
             (long long)st->last_back, autopilot_verdict_name(st->verdict),
             st->gate[0] ? st->gate : "-");
    cluster_state_publish("autopilot", autopilot_group(w, gi)->name, value, st->shared_at, 0);
}

static void apply_autopilot(void *arg, const char *name, const char *value, int64_t at,
                            const char *by)
{
    struct route_world *w = arg;
    long step;
    long long held_since, last_back;
    char verdict[16], gate[40];
    if (!w->autopilot || sscanf(value, "%ld %lld %lld %15s %39s", &step, &held_since, &last_back,
                                verdict, gate) != 5)
        return;
    long gi =
        !strcmp(name, "default") ? (long)w->cfg->ramp.n_groups : route_group_index(w->cfg, name);
    if (gi < 0 || at < w->autopilot[gi].shared_at) return; /* not ours, or ours is newer */
    long before = w->autopilot[gi].step;
    if (route_db_apply_autopilot(w, name, step, held_since, last_back, verdict) < 0) return;
    struct autopilot_state *st = &w->autopilot[gi];
    st->shared_at = at;
    snprintf(st->gate, sizeof st->gate, "%s", strcmp(gate, "-") ? gate : "");
    route_db_save_autopilot(w, (size_t)gi);
    log_info("route: autopilot group %s: step %ld -> %ld, %s, learnt from the cluster (instance "
             "%s)",
             name, before + 1, st->step + 1, verdict, by);
}

int route_shared_drives_autopilot(struct route_world *w, size_t gi)
{
    if (!sharing(w)) return 1;
    char name[200];
    snprintf(name, sizeof name, "autopilot:%s", autopilot_group(w, gi)->name);
    return cluster_state_lease(name, AUTOPILOT_LEASE_S);
}

/* ---- registration and the first write */

void route_shared_tick(struct route_world *w)
{
    if (!w->cfg || !w->cfg->cluster_redis) return;
    cluster_state_register("shaping", apply_shaping, w);
    cluster_state_register("ramp", apply_ramp, w);
    cluster_state_register("autopilot", apply_autopilot, w);
    if (seeded || !cluster_configured()) return;
    seeded = 1;
    /* what route.db holds, at the times it was made: a newer change in Redis wins over it */
    for (size_t i = 0; i < w->n_shaping_states; i++)
        if (w->shaping[i].active)
            route_shared_shaping(w, &w->shaping[i],
                                 w->shaping[i].last_hit > w->shaping[i].started
                                     ? w->shaping[i].last_hit
                                     : w->shaping[i].started);
    if (w->override.since) route_shared_override(w, -1);
    for (size_t gi = 0; gi < w->cfg->ramp.n_groups; gi++)
        if (w->group_override[gi].since) route_shared_override(w, (long)gi);
    for (size_t gi = 0; w->autopilot && gi <= w->cfg->ramp.n_groups; gi++)
        if (autopilot_group(w, gi)->autopilot.enabled && w->autopilot[gi].shared_at)
            route_shared_autopilot(w, gi);
}
