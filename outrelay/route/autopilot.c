/* autopilot.c - a route group's ramp moving along its schedule by itself: replies per egress x
 * provider counted in memory per minute (fed by route_feedback), gates judged over the group's
 * window every AUTOPILOT_TICK seconds, the step in force persisted in route.db and every change
 * of verdict, step or holding gate (and otherwise one per window) written as an autopilot record.
 * Loop thread only; called by route.c (feedback, decisions, the flush timer) and control.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "records/records.h"
#include "route/route_internal.h"

/* A day of minutes: the longest window the loader accepts. */
#define RING_MINUTES 1440
/* Shaping actions started, remembered to the second (they are rare and decide a step back, so
 * one must never count again after the move it caused). */
#define RING_STARTS 16

struct autopilot_minute {
    int64_t minute; /* unix minute the counts belong to */
    int replies, deferred, bounced;
    int predicted, predicted_fail; /* messages checked for this pair; DMARC predicted to fail */
};

struct autopilot_ring {
    struct autopilot_minute *m; /* RING_MINUTES, allocated at the first reply */
    int64_t start_at[RING_STARTS];
    int start_reputation[RING_STARTS];
    int next_start;
};

static const char *const verdict_names[] = {"off", "advance", "hold", "back", "operator", "done"};

const char *autopilot_verdict_name(enum autopilot_verdict v)
{
    return verdict_names[v];
}

const struct route_group *autopilot_group(const struct route_world *w, size_t gi)
{
    return gi < w->cfg->ramp.n_groups ? &w->cfg->ramp.groups[gi] : &w->default_group;
}

/* The default group as a route group: egresses from and to, each step's weights 100 - percent
 * and percent, the ramp's autopilot (off without ramp.to). */
static void default_group_build(struct route_world *w)
{
    const struct ramp_conf *r = &w->cfg->ramp;
    struct route_group *g = &w->default_group;
    memset(g, 0, sizeof *g);
    g->name = "default";
    g->egress = xcalloc(2, sizeof *g->egress);
    g->egress[0] = r->from ? r->from : "";
    g->egress[1] = r->to ? r->to : "";
    g->n_egress = r->to ? 2 : 1;
    g->schedule = xcalloc(r->n_schedule ? r->n_schedule : 1, sizeof *g->schedule);
    for (size_t i = 0; i < r->n_schedule; i++) {
        g->schedule[i].at = r->schedule[i].at;
        g->schedule[i].weights = xcalloc(2, sizeof(double));
        g->schedule[i].weights[0] = 100.0 - r->schedule[i].percent;
        g->schedule[i].weights[1] = r->schedule[i].percent;
    }
    g->n_schedule = r->n_schedule;
    g->autopilot = r->autopilot;
    if (!r->to) g->autopilot.enabled = 0;
}

void autopilot_build(struct route_world *w)
{
    size_t n = w->cfg->ramp.n_groups;
    default_group_build(w);
    w->autopilot = xcalloc(n + 1, sizeof *w->autopilot);
    for (size_t i = 0; i <= n; i++)
        w->autopilot[i].step = -1;
    for (size_t i = 0; i < n; i++) {
        w->group_override[i].piloted = w->cfg->ramp.groups[i].autopilot.enabled;
        w->group_override[i].pilot_step = -1;
    }
    w->override.piloted = w->default_group.autopilot.enabled;
    w->override.pilot_step = -1;
    size_t pairs = w->cfg->n_egress * w->n_providers;
    w->rings = xcalloc(pairs ? pairs : 1, sizeof *w->rings);
}

void autopilot_free(struct route_world *w)
{
    size_t pairs = w->cfg ? w->cfg->n_egress * w->n_providers : 0;
    for (size_t i = 0; w->rings && i < pairs; i++)
        free(w->rings[i].m);
    free(w->rings);
    free(w->autopilot);
    w->rings = NULL;
    w->autopilot = NULL;
    for (size_t i = 0; i < w->default_group.n_schedule; i++)
        free(w->default_group.schedule[i].weights);
    free(w->default_group.schedule);
    free(w->default_group.egress);
    memset(&w->default_group, 0, sizeof w->default_group);
}

/* This minute's counts of ring r (reset when the slot held an older minute). */
static struct autopilot_minute *minute_of(struct autopilot_ring *r, int64_t now)
{
    if (!r->m) r->m = xcalloc(RING_MINUTES, sizeof *r->m);
    int64_t minute = now / 60;
    struct autopilot_minute *m = &r->m[minute % RING_MINUTES];
    if (m->minute != minute) *m = (struct autopilot_minute){.minute = minute};
    return m;
}

void autopilot_note_prediction(struct route_world *w, const struct route_pair *p, int pass,
                               int64_t now)
{
    if (!w->rings || !p) return;
    struct autopilot_minute *m = minute_of(&w->rings[p - w->pairs], now);
    m->predicted++;
    m->predicted_fail += !pass;
}

void autopilot_note(struct route_world *w, const struct route_pair *p, int code, int started,
                    int64_t now)
{
    if (!w->rings || !p) return;
    struct autopilot_ring *r = &w->rings[p - w->pairs];
    struct autopilot_minute *m = minute_of(r, now);
    m->replies++;
    m->deferred += code >= 400 && code < 500;
    m->bounced += code >= 500 && code < 600;
    if (started & 1) {
        r->start_at[r->next_start] = now;
        r->start_reputation[r->next_start] = (started & 2) != 0;
        r->next_start = (r->next_start + 1) % RING_STARTS;
    }
}

/* The egresses the group's current step gave more of the traffic than the step before (at
 * -1, the first step's): mark[e] = 1. */
static void gaining(const struct route_group *g, long step, int *mark)
{
    size_t n = g->n_egress ? g->n_egress : 1;
    double now_w[n], before_w[n], sn = 0, sb = 0;
    long s = step < 0 ? 0 : step;
    ramp_group_step_weights(g, s, now_w);
    ramp_group_step_weights(g, s - 1, before_w);
    for (size_t e = 0; e < g->n_egress; e++) {
        sn += now_w[e];
        sb += before_w[e];
    }
    for (size_t e = 0; e < g->n_egress; e++)
        mark[e] = sn > 0 && now_w[e] / sn > (sb > 0 ? before_w[e] / sb : 0) + 1e-9;
}

/* The share (percent) of the step's weight on the egresses it gains: what the record's
 * ramp_percent says for an autopilot row. */
static double gaining_share(const struct route_group *g, long step)
{
    size_t n = g->n_egress ? g->n_egress : 1;
    double w[n], sum = 0, gain = 0;
    int mark[n];
    ramp_group_step_weights(g, step, w);
    gaining(g, step, mark);
    for (size_t e = 0; e < g->n_egress; e++) {
        sum += w[e];
        if (mark[e]) gain += w[e];
    }
    return sum > 0 ? 100.0 * gain / sum : 0.0;
}

void autopilot_gather(struct route_world *w, size_t gi, int64_t now, struct autopilot_inputs *in)
{
    const struct route_group *g = autopilot_group(w, gi);
    const struct autopilot_state *st = &w->autopilot[gi];
    int mark[g->n_egress ? g->n_egress : 1];
    int64_t from = now - g->autopilot.window;
    if (st->held_since > from) from = st->held_since;
    memset(in, 0, sizeof *in);
    gaining(g, st->step, mark);
    for (size_t e = 0; e < g->n_egress; e++) {
        if (!mark[e]) continue;
        const struct egress_conf *eg = config_find_egress(w->cfg, g->egress[e]);
        size_t ei = eg ? (size_t)(eg - w->cfg->egress) : 0;
        if (!eg) continue;
        for (size_t p = 0; p < w->n_providers; p++) {
            struct route_pair *pair = &w->pairs[ei * w->n_providers + p];
            struct autopilot_ring *r = &w->rings[ei * w->n_providers + p];
            int replies = 0, deferred = 0;
            for (size_t k = 0; r->m && k < RING_MINUTES; k++) {
                const struct autopilot_minute *m = &r->m[k];
                /* a minute counts when it overlaps [from, now]; its bounces only when it lies
                 * wholly after from, so those before a step back cannot cause another */
                if (m->minute * 60 + 59 < from || m->minute * 60 > now) continue;
                in->predicted += m->predicted;
                in->predicted_fail += m->predicted_fail;
                if (!m->replies) continue;
                replies += m->replies;
                deferred += m->deferred;
                if (m->minute * 60 >= from) in->bounced += m->bounced;
            }
            for (int k = 0; k < RING_STARTS; k++)
                if (r->start_at[k] && r->start_at[k] >= from && r->start_at[k] <= now) {
                    in->shaping_started++;
                    in->reputation_started += r->start_reputation[k];
                }
            in->replies += replies;
            in->deferred += deferred;
            if (replies &&
                (!in->worst_provider ||
                 (double)deferred / replies >
                     (double)in->worst_deferred / (in->worst_replies ? in->worst_replies : 1))) {
                in->worst_provider = pair->provider;
                in->worst_replies = replies;
                in->worst_deferred = deferred;
            }
        }
        for (size_t i = 0; i < w->n_shaping_states; i++)
            if (w->shaping[i].active && w->shaping[i].pair->egress == eg) in->shaping_active++;
    }
}

static void verdict(struct autopilot_state *st, enum autopilot_verdict v, const char *gate,
                    double value, double threshold)
{
    st->verdict = v;
    snprintf(st->gate, sizeof st->gate, "%s", gate);
    st->value = value;
    st->threshold = threshold;
}

/* Red first (they step back whatever else holds), then the amber gates, then the calendar:
 * the next step comes no sooner than its own at and no sooner than step_after on this one. */
void autopilot_judge(const struct route_group *g, struct autopilot_state *st,
                     const struct autopilot_inputs *in, int operator_override, int64_t now)
{
    const struct autopilot_conf *a = &g->autopilot;
    st->seen = *in;
    if (!a->enabled) {
        verdict(st, AUTOPILOT_OFF, "", 0, 0);
        return;
    }
    if (operator_override) {
        verdict(st, AUTOPILOT_OPERATOR, "operator", 0, 0);
        return;
    }
    if (in->reputation_started > 0) {
        verdict(st, AUTOPILOT_BACK, "reputation", in->reputation_started, 0);
        return;
    }
    double bounce = in->replies ? 100.0 * in->bounced / in->replies : 0;
    if (in->replies >= a->min_replies && in->replies > 0 && bounce > a->max_bounce_rate) {
        verdict(st, AUTOPILOT_BACK, "bounce_rate", bounce, a->max_bounce_rate);
        return;
    }
    if (in->shaping_started > a->max_shaping) {
        verdict(st, AUTOPILOT_HOLD, "shaping", in->shaping_started, a->max_shaping);
        return;
    }
    if (in->shaping_active > 0) {
        verdict(st, AUTOPILOT_HOLD, "shaping_in_force", in->shaping_active, 0);
        return;
    }
    /* before the first step nothing has moved yet: there is nothing to count */
    if (st->step >= 0 && in->replies < a->min_replies) {
        verdict(st, AUTOPILOT_HOLD, "replies", in->replies, a->min_replies);
        return;
    }
    double dmarc_pass =
        in->predicted ? 100.0 * (in->predicted - in->predicted_fail) / in->predicted : 100.0;
    if (in->predicted > 0 && dmarc_pass < a->min_dmarc_pass) {
        verdict(st, AUTOPILOT_HOLD, "dmarc_pass", dmarc_pass, a->min_dmarc_pass);
        return;
    }
    if (in->worst_provider && in->worst_replies) {
        double rate = 100.0 * in->worst_deferred / in->worst_replies;
        if (rate > a->max_deferral_rate) {
            char gate[40];
            snprintf(gate, sizeof gate, "deferral_rate:%s", in->worst_provider);
            verdict(st, AUTOPILOT_HOLD, gate, rate, a->max_deferral_rate);
            return;
        }
    }
    if (st->step + 1 >= (long)g->n_schedule) {
        verdict(st, AUTOPILOT_DONE, "", 0, 0);
        return;
    }
    int64_t at = g->schedule[st->step + 1].at;
    if (now < at) {
        verdict(st, AUTOPILOT_HOLD, "date", (double)at, 0);
        return;
    }
    if (st->held_since && now - st->held_since < a->step_after)
        verdict(st, AUTOPILOT_HOLD, "step_after", (double)(now - st->held_since),
                (double)a->step_after);
    else
        verdict(st, AUTOPILOT_ADVANCE, "", 0, 0);
}

static void format_gate(const struct autopilot_state *st, char *buf, size_t size)
{
    if (!st->gate[0]) {
        snprintf(buf, size, "every gate holds");
    } else if (!strcmp(st->gate, "date")) {
        char t[32];
        ramp_format_time((int64_t)st->value, t, sizeof t);
        snprintf(buf, size, "date: the next step starts at %s", t);
    } else if (!strcmp(st->gate, "step_after")) {
        snprintf(buf, size, "step_after: %.0fs on this step < %.0fs", st->value, st->threshold);
    } else if (!strncmp(st->gate, "deferral_rate", 13) || !strcmp(st->gate, "bounce_rate")) {
        snprintf(buf, size, "%s %.1f%% > %.0f%%", st->gate, st->value, st->threshold);
    } else if (!strcmp(st->gate, "dmarc_pass")) {
        snprintf(buf, size, "dmarc_pass %.1f%% < %.0f%%", st->value, st->threshold);
    } else if (!strcmp(st->gate, "replies")) {
        snprintf(buf, size, "replies %.0f < %.0f", st->value, st->threshold);
    } else if (!strcmp(st->gate, "shaping")) {
        snprintf(buf, size, "shaping %.0f started > %.0f", st->value, st->threshold);
    } else if (!strcmp(st->gate, "operator")) {
        snprintf(buf, size, "operator override in force");
    } else {
        snprintf(buf, size, "%s %.0f", st->gate, st->value);
    }
}

static void emit(struct route_world *w, size_t gi, long from_step, int64_t now)
{
    const struct route_group *g = autopilot_group(w, gi);
    struct autopilot_state *st = &w->autopilot[gi];
    const struct autopilot_inputs *in = &st->seen;
    char gate[160], detail[400];
    format_gate(st, gate, sizeof gate);
    snprintf(detail, sizeof detail,
             "group %s: step %ld -> %ld of %zu; %s; replies=%d deferred=%d bounced=%d "
             "shaping_started=%d reputation=%d shaping_in_force=%d predicted=%d "
             "dmarc_fail=%d",
             g->name, from_step + 1, st->step + 1, g->n_schedule, gate, in->replies, in->deferred,
             in->bounced, in->shaping_started, in->reputation_started, in->shaping_active,
             in->predicted, in->predicted_fail);
    struct record_event ev = {.type = RECORD_AUTOPILOT,
                              .queue_id = "-",
                              .action = autopilot_verdict_name(st->verdict),
                              .rule = st->gate,
                              .ramp_percent = gaining_share(g, st->step),
                              .detail = detail};
    records_emit(&ev);
    st->last_record = now;
    log_info("route: autopilot %s", detail);
}

static void evaluate(struct route_world *w, size_t gi, int64_t now)
{
    const struct route_group *g = autopilot_group(w, gi);
    struct autopilot_state *st = &w->autopilot[gi];
    int is_default = gi == w->cfg->ramp.n_groups;
    int operator_override = is_default ? w->override.mode != RAMP_SCHEDULE
                                       : w->group_override[gi].mode != RAMP_SCHEDULE;
    struct autopilot_inputs in;
    enum autopilot_verdict before = st->verdict;
    char gate_before[sizeof st->gate];
    long from_step = st->step;
    memcpy(gate_before, st->gate, sizeof gate_before);
    autopilot_gather(w, gi, now, &in);
    autopilot_judge(g, st, &in, operator_override, now);
    if (st->verdict == AUTOPILOT_ADVANCE) {
        st->step++;
        st->held_since = now;
    } else if (st->verdict == AUTOPILOT_BACK && st->step >= 0) {
        st->step--;
        st->held_since = now;
        st->last_back = now;
    } else if (st->verdict == AUTOPILOT_BACK) {
        st->held_since = now; /* nothing further back: start the window again */
    }
    if (is_default)
        w->override.pilot_step = st->step;
    else
        w->group_override[gi].pilot_step = st->step;
    if (st->step != from_step || st->verdict != before ||
        (st->verdict == AUTOPILOT_BACK && from_step < 0))
        route_db_save_autopilot(w, gi);
    if (st->step != from_step || st->verdict != before || strcmp(st->gate, gate_before)) {
        st->shared_at = now;
        route_shared_autopilot(w, gi); /* the instances that do not drive it follow */
    }
    if (st->step != from_step || st->verdict != before || strcmp(st->gate, gate_before) ||
        now - st->last_record >= g->autopilot.window)
        emit(w, gi, from_step, now);
}

void autopilot_tick(struct route_world *w, int64_t now)
{
    if (w->autopilot) limits_expire(w, now);
    route_shared_tick(w);
    for (size_t gi = 0; w->autopilot && gi <= w->cfg->ramp.n_groups; gi++) {
        struct autopilot_state *st = &w->autopilot[gi];
        if (!autopilot_group(w, gi)->autopilot.enabled) continue;
        /* with several instances one drives a group (its lease); the others follow its step */
        if (!route_shared_drives_autopilot(w, gi) || now < st->next_eval) continue;
        st->next_eval = now + AUTOPILOT_TICK;
        evaluate(w, gi, now);
    }
}

void autopilot_describe(const struct route_world *w, size_t gi, struct strbuf *out)
{
    const struct route_group *g = autopilot_group(w, gi);
    const struct autopilot_state *st = &w->autopilot[gi];
    char gate[160];
    if (!g->autopilot.enabled) {
        strbuf_puts(out, "autopilot off");
        return;
    }
    format_gate(st, gate, sizeof gate);
    strbuf_printf(out, "autopilot on, step %ld of %zu, %s: %s", st->step + 1, g->n_schedule,
                  autopilot_verdict_name(st->verdict), gate);
}
