/* control.c - the texts of `outrelay ramp status` (schedule, where each group and its autopilot
 * stand, caps, shaping in force) and `outrelay ramp plan` (7 days' expected messages per egress x
 * provider from the last 7 days of <state>/records.db, read only; each route group's steps ahead,
 * their earliest times and recipients per hour), as text or JSON (route_control_json). Formats
 * only; changes nothing. Loop thread; called by route.c and the control socket. */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/json.h"
#include "common/strbuf.h"
#include "common/util.h"
#include "route/route.h"
#include "route/route_internal.h"

static void format_span(int64_t seconds, char *buf, size_t size)
{
    if (seconds < 0) seconds = 0;
    if (seconds >= 86400)
        snprintf(buf, size, "%lldd %02lldh", (long long)(seconds / 86400),
                 (long long)(seconds % 86400 / 3600));
    else if (seconds >= 3600)
        snprintf(buf, size, "%lldh %02lldm", (long long)(seconds / 3600),
                 (long long)(seconds % 3600 / 60));
    else
        snprintf(buf, size, "%lldm %02llds", (long long)(seconds / 60), (long long)(seconds % 60));
}

static void status_schedule(const struct ramp_conf *r, const struct ramp_override *o, int64_t now,
                            struct strbuf *out)
{
    long current = o->piloted ? o->pilot_step : ramp_current_step(r, now);
    char t[32], span[32];
    if (!r->n_schedule) {
        strbuf_puts(out, "schedule: none (the share is 0 % unless set by the operator)\n");
        return;
    }
    strbuf_printf(out, "schedule (UTC, %s):\n",
                  o->piloted       ? "steps, each no sooner than its time under the autopilot"
                  : r->interpolate ? "interpolated"
                                   : "steps");
    for (size_t i = 0; i < r->n_schedule; i++) {
        ramp_format_time(r->schedule[i].at, t, sizeof t);
        strbuf_printf(out, "  %s %s %7.2f%%", (long)i == current ? ">" : " ", t,
                      r->schedule[i].percent);
        if ((long)i == current) strbuf_puts(out, "   current");
        if ((long)i == current + 1) {
            format_span(r->schedule[i].at - now, span, sizeof span);
            strbuf_printf(out, "   next, in %s", span);
        }
        strbuf_puts(out, "\n");
    }
}

static void status_pins(const struct ramp_conf *r, int64_t now, struct strbuf *out)
{
    static const char *const kinds[] = {"origin", "domain", "provider"};
    const struct ramp_pin *lists[] = {r->pin_origins, r->pin_domains, r->pin_providers};
    size_t counts[] = {r->n_pin_origins, r->n_pin_domains, r->n_pin_providers};
    int any = 0;
    for (int k = 0; k < 3; k++) {
        for (size_t i = 0; i < counts[k]; i++) {
            const struct ramp_pin *p = &lists[k][i];
            char t[32];
            if (!any++) strbuf_puts(out, "pins (checked in this order):\n");
            strbuf_printf(out, "  %-8s %-30s -> %s", kinds[k], p->name, p->egress);
            if (p->until) {
                ramp_format_time(p->until, t, sizeof t);
                strbuf_printf(out, " until %s%s", t, now >= p->until ? " (expired)" : "");
            }
            strbuf_puts(out, "\n");
        }
    }
}

static void cell(char *buf, size_t size, int count, int cap)
{
    if (cap)
        snprintf(buf, size, "%d/%d%s", count, cap, count >= cap ? "!" : "");
    else
        snprintf(buf, size, "%d/-", count);
}

static void status_counts(struct route_world *w, int64_t now, struct strbuf *out)
{
    size_t n = w->cfg->n_egress * w->n_providers;
    int header = 0;
    for (size_t i = 0; i < n; i++) {
        struct route_pair *p = &w->pairs[i];
        int c[WIN_COUNT];
        char cells[WIN_COUNT][32];
        for (int k = 0; k < WIN_COUNT; k++)
            c[k] = limits_count_in(p, k, now);
        if (!p->cap && !c[WIN_DAY]) continue;
        if (!header++)
            strbuf_printf(out,
                          "messages per egress x provider (UTC calendar windows; count/cap, "
                          "! = cap reached):\n  %-10s %-22s %12s %12s %14s %6s %9s\n",
                          "egress", "provider", "minute", "hour", "day", "conns", "per-conn");
        cell(cells[0], sizeof cells[0], c[0], p->cap ? p->cap->per_minute : 0);
        cell(cells[1], sizeof cells[1], c[1], p->cap ? p->cap->per_hour : 0);
        cell(cells[2], sizeof cells[2], c[2], p->cap ? p->cap->per_day : 0);
        char conns[16] = "-", per[16] = "-";
        if (p->cap && p->cap->connections) snprintf(conns, sizeof conns, "%d", p->cap->connections);
        if (p->cap && p->cap->per_connection)
            snprintf(per, sizeof per, "%d", p->cap->per_connection);
        strbuf_printf(out, "  %-10s %-22s %12s %12s %14s %6s %9s\n", p->egress->name, p->provider,
                      cells[0], cells[1], cells[2], conns, per);
    }
    if (!header) strbuf_puts(out, "messages per egress x provider: none counted today, no caps\n");
}

/* Messages of provider p this UTC hour [0] and day [1], and how many of them left through to. */
static void observed_counts(struct route_world *w, const struct egress_conf *to, size_t p,
                            int64_t now, int total[2], int moved[2])
{
    total[0] = total[1] = moved[0] = moved[1] = 0;
    for (size_t e = 0; e < w->cfg->n_egress; e++) {
        struct route_pair *pair = &w->pairs[e * w->n_providers + p];
        for (int k = 0; k < 2; k++) {
            int c = limits_count_in(pair, k == 0 ? WIN_HOUR : WIN_DAY, now);
            total[k] += c;
            if (pair->egress == to) moved[k] += c;
        }
    }
}

/* The share of each provider's messages that actually left through ramp.to. */
static void status_observed(struct route_world *w, int64_t now, struct strbuf *out)
{
    const struct egress_conf *to = config_find_egress(w->cfg, w->cfg->ramp.to);
    int header = 0;
    if (!to) return;
    for (size_t p = 0; p < w->n_providers; p++) {
        int total[2], moved[2];
        observed_counts(w, to, p, now, total, moved);
        if (!total[1]) continue;
        if (!header++)
            strbuf_printf(out, "observed share through %s (this UTC hour / day):\n", to->name);
        char hour[16] = "-";
        if (total[0]) snprintf(hour, sizeof hour, "%.1f%%", 100.0 * moved[0] / total[0]);
        strbuf_printf(out, "  %-22s %8s / %5.1f%%  (%d / %d messages)\n", w->pairs[p].provider,
                      hour, 100.0 * moved[1] / total[1], total[0], total[1]);
    }
}

static void status_shaping(struct route_world *w, int64_t now, struct strbuf *out)
{
    int header = 0;
    for (size_t i = 0; i < w->n_shaping_states; i++) {
        const struct route_shaping *s = &w->shaping[i];
        char t[32], span[32];
        if (!s->active) continue;
        if (!header++) strbuf_puts(out, "shaping in force:\n");
        strbuf_printf(out, "  %-24s %s x %s: %s", s->rule->name, s->pair->egress->name,
                      s->pair->provider, config_shaping_action_name(s->rule->action));
        if (now < s->until) {
            ramp_format_time(s->until, t, sizeof t);
            format_span(s->until - now, span, sizeof span);
            if (s->rule->action == SHAPING_THROTTLE && s->rule->rate_count)
                strbuf_printf(out, " to %d per %llds", s->rule->rate_count,
                              (long long)s->rule->rate_period);
            if (s->rule->connections)
                strbuf_printf(out, ", %d connection(s)", s->rule->connections);
            strbuf_printf(out, ", ends in %s (%s)", span, t);
        } else {
            int count;
            int64_t period;
            limits_throttle_rate(w, s, now, &count, &period);
            strbuf_printf(out,
                          " over, recovering: %d per %llds, stepping up x%g every %llds "
                          "without a matching reply",
                          count, (long long)period, s->rule->recover_step,
                          (long long)s->rule->recover_quiet);
        }
        strbuf_puts(out, "\n");
    }
    if (!header) strbuf_puts(out, "shaping in force: none\n");
}

static void names_line(struct strbuf *out, const char *label, char *const *names, size_t n)
{
    if (!n) return;
    strbuf_printf(out, " %s [", label);
    for (size_t i = 0; i < n; i++)
        strbuf_printf(out, "%s%s", i ? ", " : "", names[i]);
    strbuf_puts(out, "]");
}

/* Every route group: what it matches, its schedule, the weights in force and why. */
static void status_groups(struct route_world *w, int64_t now, struct strbuf *out)
{
    const struct ramp_conf *r = &w->cfg->ramp;
    char t[32];
    if (!r->n_groups) return;
    strbuf_puts(out, "route groups (the first whose match holds; else the default group above):\n");
    for (size_t gi = 0; gi < r->n_groups; gi++) {
        const struct route_group *g = &r->groups[gi];
        const struct group_override *o = &w->group_override[gi];
        double weights[g->n_egress ? g->n_egress : 1];
        struct strbuf text = STRBUF_INIT;
        strbuf_printf(out, "group %s: match", g->name);
        if (!g->n_origins && !g->n_sender_domains && !g->n_rcpt_domains)
            strbuf_puts(out, " every message");
        names_line(out, "origins", g->origins, g->n_origins);
        names_line(out, "sender_domains", g->sender_domains, g->n_sender_domains);
        names_line(out, "rcpt_domains", g->rcpt_domains, g->n_rcpt_domains);
        strbuf_puts(out, "; key ");
        for (size_t i = 0; i < g->n_key; i++)
            strbuf_printf(out, "%s%s", i ? "|" : "", g->key[i]);
        strbuf_puts(out, "; spill ");
        if (g->n_spill)
            for (size_t i = 0; i < g->n_spill; i++)
                strbuf_printf(out, "%s%s", i ? ", " : "", g->spill[i]);
        else
            strbuf_puts(out, "by score");
        strbuf_puts(out, "\n");
        long current = -1;
        for (size_t i = 0; i < g->n_schedule && g->schedule[i].at <= now; i++)
            current = (long)i;
        if (o->piloted) current = o->pilot_step; /* the autopilot's step, not the date's */
        strbuf_printf(out, "  schedule (UTC, %s; before the first step all on %s%s):\n",
                      g->interpolate && !o->piloted ? "interpolated" : "steps", g->egress[0],
                      o->piloted ? "; the autopilot takes a step no sooner than its time" : "");
        for (size_t i = 0; i < g->n_schedule; i++) {
            strbuf_reset(&text);
            route_format_weights(g, g->schedule[i].weights, &text);
            ramp_format_time(g->schedule[i].at, t, sizeof t);
            strbuf_printf(out, "    %s %s %s%s\n", (long)i == current ? ">" : " ", t,
                          strbuf_str(&text), (long)i == current ? "   current" : "");
        }
        strbuf_reset(&text);
        ramp_group_weights(g, o, now, weights);
        route_format_weights(g, weights, &text);
        strbuf_printf(out, "  effective weights: %s (", strbuf_str(&text));
        if (o->mode == RAMP_SCHEDULE) {
            strbuf_puts(out, "mode schedule)\n");
        } else {
            strbuf_reset(&text);
            ramp_group_schedule_weights(g, now, weights);
            route_format_weights(g, weights, &text);
            ramp_format_time(o->since, t, sizeof t);
            strbuf_printf(out, "mode %s since %s, until resume; the schedule says %s)\n",
                          ramp_mode_name(o->mode), t, strbuf_str(&text));
        }
        strbuf_puts(out, "  ");
        autopilot_describe(w, gi, out);
        strbuf_puts(out, "\n");
        strbuf_free(&text);
    }
}

void route_status_report(struct route_world *w, int64_t now, struct strbuf *out)
{
    const struct ramp_conf *r = &w->cfg->ramp;
    char t[32];
    strbuf_printf(out, "ramp: %s -> %s, key ", r->from ? r->from : "-", r->to ? r->to : "(none)");
    for (size_t i = 0; i < r->n_key; i++)
        strbuf_printf(out, "%s%s", i ? "|" : "", r->key[i]);
    ramp_format_time(now, t, sizeof t);
    strbuf_printf(out, ", now %s\n", t);
    status_schedule(r, &w->override, now, out);
    strbuf_printf(out, "effective share: %.2f%% (", ramp_share_at(r, &w->override, now));
    if (w->override.mode == RAMP_SCHEDULE) {
        strbuf_printf(out, "mode schedule)\n");
    } else {
        ramp_format_time(w->override.since, t, sizeof t);
        strbuf_printf(out, "mode %s since %s, until resume; the schedule says %.2f%%)\n",
                      ramp_mode_name(w->override.mode), t, ramp_schedule_share(r, now));
    }
    if (w->override.piloted) {
        autopilot_describe(w, r->n_groups, out);
        strbuf_puts(out, "\n");
    }
    status_groups(w, now, out);
    status_pins(r, now, out);
    status_counts(w, now, out);
    status_observed(w, now, out);
    status_shaping(w, now, out);
}

/* ---- plan */

#define PLAN_DAYS 7

/* records.db opened read-only with sql prepared and ?1, ?2 bound to the last PLAN_DAYS days
 * before now (in microseconds, as ts_us). 0, or -1 with nothing left open and why in err (*path
 * is the file either way). */
static int plan_query(struct route_world *w, const char *sql, int64_t now, sqlite3 **db,
                      sqlite3_stmt **st, struct strbuf *path, char *err, size_t errlen)
{
    *db = NULL;
    *st = NULL;
    strbuf_printf(path, "%s/records.db", w->state_dir);
    int rc = sqlite3_open_v2(strbuf_str(path), db, SQLITE_OPEN_READONLY, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_prepare_v2(*db, sql, -1, st, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "%s", *db ? sqlite3_errmsg(*db) : "cannot open");
        sqlite3_close(*db);
        *db = NULL;
        return -1;
    }
    sqlite3_bind_int64(*st, 1, (now - PLAN_DAYS * 86400) * 1000000);
    sqlite3_bind_int64(*st, 2, now * 1000000);
    return 0;
}

/* Delivered messages per provider over the last 7 days, from records.db. */
static int read_traffic(struct route_world *w, int64_t now, double *per_provider,
                        struct strbuf *out)
{
    struct strbuf path = STRBUF_INIT;
    sqlite3 *db;
    sqlite3_stmt *st;
    char err[200];
    if (plan_query(w,
                   "SELECT remote_mx, COUNT(*) FROM events WHERE event = 'delivered' AND ts_us "
                   ">= ?1 AND ts_us < ?2 GROUP BY remote_mx",
                   now, &db, &st, &path, err, sizeof err) < 0) {
        strbuf_printf(out, "cannot read %s: %s\n", strbuf_str(&path), err);
        strbuf_free(&path);
        return -1;
    }
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *mx = (const char *)sqlite3_column_text(st, 0);
        const char *const hosts[] = {mx ? mx : ""};
        const char *provider = route_provider(hosts, 1);
        size_t p = 0;
        while (p + 1 < w->n_providers && strcmp(w->pairs[p].provider, provider))
            p++;
        per_provider[p] += (double)sqlite3_column_int64(st, 1) / PLAN_DAYS;
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    strbuf_free(&path);
    return 0;
}

/* The share over one UTC day: the mean of 24 hourly samples (steps may fall inside it). */
static double day_share(struct route_world *w, int64_t day)
{
    double sum = 0;
    for (int h = 0; h < 24; h++)
        sum += ramp_share_at(&w->cfg->ramp, &w->override, day + h * 3600 + 1800);
    return sum / 24;
}

static void json_time(struct json_writer *jw, const char *key, int64_t t);

/* Less history than this (hours since the group's first routed recipient in the last PLAN_DAYS
 * days, or recipients) projects no volumes: a rate from a few hours says little about a week. */
#define PLAN_MIN_HOURS 24
#define PLAN_MIN_RECIPIENTS 100

/* The group's routed recipients in the last PLAN_DAYS days and the time of the first, from
 * records.db (routed rows name it in route_group; without groups configured, none). 0 / -1. */
static int read_group_volume(struct route_world *w, const char *group, int64_t now, int64_t *count,
                             int64_t *first)
{
    struct strbuf path = STRBUF_INIT;
    sqlite3 *db;
    sqlite3_stmt *st;
    char err[200];
    *count = 0;
    *first = 0;
    int rc = plan_query(w,
                        "SELECT COUNT(*), MIN(ts_us) FROM events WHERE event = 'routed' AND ts_us "
                        ">= ?1 AND ts_us < ?2 AND coalesce(route_group, 'default') = ?3",
                        now, &db, &st, &path, err, sizeof err);
    strbuf_free(&path);
    if (rc < 0) return -1;
    sqlite3_bind_text(st, 3, group, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW) {
        *count = sqlite3_column_int64(st, 0);
        *first = sqlite3_column_int64(st, 1) / 1000000;
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return 0;
}

/* One route group's plan: the steps ahead with the earliest time each may come (the schedule's
 * at; with the autopilot also step_after after the one before, counted from its last move, and
 * only if every gate holds), their weights and, with enough history, the recipients per hour
 * each egress would carry at the recent rate. */
static void group_plan(struct route_world *w, size_t gi, int64_t now, struct strbuf *out,
                       struct json_writer *jw)
{
    const struct route_group *g = &w->cfg->ramp.groups[gi];
    const struct group_override *o = &w->group_override[gi];
    const struct autopilot_state *st = &w->autopilot[gi];
    int pilot = g->autopilot.enabled;
    long current = pilot ? st->step : -1;
    int64_t count = 0, first = 0;
    if (!pilot)
        for (size_t i = 0; i < g->n_schedule && g->schedule[i].at <= now; i++)
            current = (long)i;
    int have = read_group_volume(w, g->name, now, &count, &first) == 0;
    double hours = have && count ? (double)(now - first) / 3600.0 : 0;
    if (hours < 1) hours = count ? 1 : 0;
    int enough = have && count >= PLAN_MIN_RECIPIENTS && hours >= PLAN_MIN_HOURS;
    double rate = hours > 0 ? (double)count / hours : 0;
    char t[32];
    if (jw) {
        json_object_begin(jw, NULL);
        json_string(jw, "name", g->name);
        json_bool(jw, "autopilot", pilot);
        json_int(jw, "step", current + 1);
        json_int(jw, "steps", (int64_t)g->n_schedule);
        json_string(jw, "mode", ramp_mode_name(o->mode));
        json_int(jw, "step_after", pilot ? g->autopilot.step_after : 0);
        json_int(jw, "routed", count);
        json_double(jw, "history_hours", hours);
        json_bool(jw, "enough_history", enough);
        if (enough)
            json_double(jw, "recipients_per_hour", rate);
        else
            json_null(jw, "recipients_per_hour");
        json_array_begin(jw, "steps_ahead");
    } else {
        strbuf_printf(out, "group %s: step %ld of %zu, ", g->name, current + 1, g->n_schedule);
        if (pilot) {
            char dwell[32];
            format_span(g->autopilot.step_after, dwell, sizeof dwell);
            strbuf_printf(out,
                          "autopilot on (at least %s on a step, each step only if every "
                          "gate holds)",
                          dwell);
        } else {
            strbuf_puts(out, "autopilot off (the schedule's times)");
        }
        if (o->mode != RAMP_SCHEDULE)
            strbuf_printf(out, "; operator %s in force until resume", ramp_mode_name(o->mode));
        strbuf_puts(out, "\n");
        if (!have)
            strbuf_puts(out, "  volume: records.db cannot be read\n");
        else if (!enough)
            strbuf_printf(out,
                          "  volume: too little history (%lld recipients routed over %.0f h in "
                          "the last %d days; at least %d over %d h are needed): no volumes "
                          "projected\n",
                          (long long)count, hours, PLAN_DAYS, PLAN_MIN_RECIPIENTS, PLAN_MIN_HOURS);
        else
            strbuf_printf(out, "  volume: %.1f recipients per hour (%lld over %.0f h)\n", rate,
                          (long long)count, hours);
        if (current + 1 >= (long)g->n_schedule)
            strbuf_puts(out, "  no steps ahead: the schedule's last step is in force\n");
    }
    int64_t earliest = pilot ? (st->held_since ? st->held_since : now) : now;
    for (long k = current + 1; k < (long)g->n_schedule; k++) {
        const struct route_group_step *s = &g->schedule[k];
        if (pilot) {
            if (k > current + 1 || st->held_since) earliest += g->autopilot.step_after;
            if (earliest < s->at) earliest = s->at;
            if (earliest < now) earliest = now;
        } else {
            earliest = s->at;
        }
        double sum = 0;
        for (size_t e = 0; e < g->n_egress; e++)
            sum += s->weights[e];
        ramp_format_time(earliest, t, sizeof t);
        if (jw) {
            json_object_begin(jw, NULL);
            json_int(jw, "step", k + 1);
            json_time(jw, "at", s->at);
            json_time(jw, "earliest", earliest);
            json_object_begin(jw, "weights");
            for (size_t e = 0; e < g->n_egress; e++)
                json_double(jw, g->egress[e], sum > 0 ? 100.0 * s->weights[e] / sum : 0);
            json_object_end(jw);
            if (enough) {
                json_object_begin(jw, "per_hour");
                for (size_t e = 0; e < g->n_egress; e++)
                    json_double(jw, g->egress[e], sum > 0 ? rate * s->weights[e] / sum : 0);
                json_object_end(jw);
            }
            json_object_end(jw);
        } else {
            struct strbuf text = STRBUF_INIT;
            route_format_weights(g, s->weights, &text);
            strbuf_printf(out, "  step %ld %s %s %s", k + 1, pilot ? "earliest" : "at", t,
                          strbuf_str(&text));
            for (size_t e = 0; enough && e < g->n_egress; e++)
                strbuf_printf(out, "%s%s %.1f/h", e ? ", " : "; ", g->egress[e],
                              sum > 0 ? rate * s->weights[e] / sum : 0);
            strbuf_puts(out, "\n");
            strbuf_free(&text);
        }
    }
    if (jw) {
        json_array_end(jw);
        json_object_end(jw);
    }
}

/* Text into out, or JSON into jw when jw is set (out then only gets an error). */
static int plan_report(struct route_world *w, int64_t now, struct strbuf *out,
                       struct json_writer *jw)
{
    const struct config *cfg = w->cfg;
    const struct egress_conf *from = config_find_egress(cfg, cfg->ramp.from);
    const struct egress_conf *to = config_find_egress(cfg, cfg->ramp.to);
    double traffic[w->n_providers];
    int flagged = 0;
    memset(traffic, 0, sizeof traffic);
    if (read_traffic(w, now, traffic, out) < 0) return -1;
    double all = 0;
    if (jw) {
        json_object_begin(jw, NULL);
        json_int(jw, "days", PLAN_DAYS);
        json_array_begin(jw, "delivered_per_day");
    } else {
        strbuf_printf(out,
                      "average messages delivered per day over the last %d days, by provider:\n",
                      PLAN_DAYS);
    }
    for (size_t p = 0; p < w->n_providers; p++) {
        all += traffic[p];
        if (traffic[p] <= 0) continue;
        if (jw) {
            json_object_begin(jw, NULL);
            json_string(jw, "provider", w->pairs[p].provider);
            json_double(jw, "messages", traffic[p]);
            json_object_end(jw);
        } else {
            strbuf_printf(out, "  %-22s %10.1f\n", w->pairs[p].provider, traffic[p]);
        }
    }
    if (jw) json_array_end(jw);
    if (!jw && cfg->ramp.n_groups)
        strbuf_puts(out, "the table below counts route groups' recipients at the default group's "
                         "share; each group's own plan follows it\n");
    if (!jw && w->override.piloted)
        strbuf_puts(out, "the default group's autopilot decides its steps: the share below stays "
                         "at the current step's until it advances\n");
    if (jw) json_array_begin(jw, "expected");
    if (all <= 0 && !jw)
        strbuf_puts(out, "  (no delivered messages recorded: nothing to plan from)\n");
    if (all <= 0) goto done;
    if (!jw)
        strbuf_printf(out,
                      "expected messages per UTC day (share averaged over the day; provider pins "
                      "applied, origin and domain pins not modelled; ! = over the per_day cap):\n"
                      "  %-10s %7s  %-10s %-22s %10s %9s\n",
                      "day", "share", "egress", "provider", "expected", "cap/day");
    int64_t today = limits_window_start(WIN_DAY, now);
    for (int d = 0; d < PLAN_DAYS; d++) {
        int64_t day = today + (int64_t)d * 86400;
        double share = day_share(w, day);
        char date[32];
        ramp_format_time(day, date, sizeof date);
        date[10] = '\0';
        int first = 1;
        for (size_t p = 0; p < w->n_providers; p++) {
            if (traffic[p] <= 0) continue;
            const char *provider = w->pairs[p].provider;
            for (size_t e = 0; e < cfg->n_egress; e++) {
                const struct egress_conf *eg = &cfg->egress[e];
                double expected = 0;
                const struct ramp_pin *pin = NULL;
                for (size_t i = 0; i < cfg->ramp.n_pin_providers; i++)
                    if (!strcmp(cfg->ramp.pin_providers[i].name, provider) &&
                        (!cfg->ramp.pin_providers[i].until ||
                         day + 43200 < cfg->ramp.pin_providers[i].until))
                        pin = &cfg->ramp.pin_providers[i];
                if (pin)
                    expected = !strcmp(pin->egress, eg->name) ? traffic[p] : 0;
                else if (eg == to)
                    expected = traffic[p] * share / 100.0;
                else if (eg == from)
                    expected = traffic[p] * (to ? 1.0 - share / 100.0 : 1.0);
                const struct cap_conf *cap = w->pairs[e * w->n_providers + p].cap;
                int limit = cap ? cap->per_day : 0;
                if (expected <= 0 && !limit) continue;
                char capbuf[16] = "-";
                if (limit) snprintf(capbuf, sizeof capbuf, "%d", limit);
                int over = limit && expected > limit;
                flagged += over;
                if (jw) {
                    json_object_begin(jw, NULL);
                    json_string(jw, "day", date);
                    json_double(jw, "share", share);
                    json_string(jw, "egress", eg->name);
                    json_string(jw, "provider", provider);
                    json_double(jw, "expected", expected);
                    if (limit)
                        json_int(jw, "cap_per_day", limit);
                    else
                        json_null(jw, "cap_per_day");
                    json_bool(jw, "over_cap", over);
                    json_object_end(jw);
                } else {
                    strbuf_printf(out, "  %-10s %6.1f%%  %-10s %-22s %10.0f %9s%s\n",
                                  first ? date : "", share, eg->name, provider, expected, capbuf,
                                  over ? " !" : "");
                }
                first = 0;
            }
        }
    }
done:
    if (jw) {
        json_array_end(jw);
        json_int(jw, "rows_over_cap", flagged);
    } else if (flagged)
        strbuf_printf(out,
                      "%d day x egress x provider rows exceed a per_day cap: that mail "
                      "spills to the other egress where its caps allow, else waits.\n",
                      flagged);
    else
        strbuf_puts(out, "no day exceeds a per_day cap.\n");
    if (jw) json_array_begin(jw, "groups");
    for (size_t gi = 0; gi < cfg->ramp.n_groups; gi++)
        group_plan(w, gi, now, out, jw);
    if (jw) {
        json_array_end(jw);
        json_object_end(jw);
        strbuf_puts(jw->out, "\n");
    }
    return 0;
}

int route_plan_report(struct route_world *w, int64_t now, struct strbuf *out)
{
    return plan_report(w, now, out, NULL);
}

/* ---- the same as JSON */

static void json_time(struct json_writer *jw, const char *key, int64_t t)
{
    char buf[32];
    ramp_format_time(t, buf, sizeof buf);
    json_string(jw, key, buf);
}

static void json_cap(struct json_writer *jw, const char *key, int cap)
{
    if (cap)
        json_int(jw, key, cap);
    else
        json_null(jw, key);
}

static void weights_json(struct json_writer *jw, const char *key, const struct route_group *g,
                         const double *weights)
{
    double sum = 0;
    for (size_t e = 0; e < g->n_egress; e++)
        sum += weights[e];
    json_object_begin(jw, key);
    for (size_t e = 0; e < g->n_egress; e++)
        json_double(jw, g->egress[e], sum > 0 ? 100.0 * weights[e] / sum : 0.0);
    json_object_end(jw);
}

static void strings_json(struct json_writer *jw, const char *key, char *const *list, size_t n)
{
    json_array_begin(jw, key);
    for (size_t i = 0; i < n; i++)
        json_string(jw, NULL, list[i]);
    json_array_end(jw);
}

/* A group's autopilot: on/off, step (1-based; 0 before the first), verdict and the gate that
 * decided it with its value and threshold, and what the gates saw. */
static void autopilot_json(struct route_world *w, size_t gi, struct json_writer *jw)
{
    const struct route_group *g = autopilot_group(w, gi);
    const struct autopilot_state *st = &w->autopilot[gi];
    const struct autopilot_conf *a = &g->autopilot;
    json_object_begin(jw, "autopilot");
    json_bool(jw, "enabled", a->enabled);
    if (a->enabled) {
        json_int(jw, "step", st->step + 1);
        json_int(jw, "steps", (int64_t)g->n_schedule);
        json_string(jw, "verdict", autopilot_verdict_name(st->verdict));
        if (st->gate[0]) {
            json_string(jw, "gate", st->gate);
            json_double(jw, "value", st->value);
            json_double(jw, "threshold", st->threshold);
        } else {
            json_null(jw, "gate");
        }
        if (st->held_since)
            json_time(jw, "held_since", st->held_since);
        else
            json_null(jw, "held_since");
        if (st->last_back)
            json_time(jw, "last_back", st->last_back);
        else
            json_null(jw, "last_back");
        json_int(jw, "window", a->window);
        json_int(jw, "step_after", a->step_after);
        json_object_begin(jw, "seen");
        json_int(jw, "replies", st->seen.replies);
        json_int(jw, "deferred", st->seen.deferred);
        json_int(jw, "bounced", st->seen.bounced);
        json_int(jw, "shaping_started", st->seen.shaping_started);
        json_int(jw, "reputation_started", st->seen.reputation_started);
        json_int(jw, "shaping_in_force", st->seen.shaping_active);
        json_object_end(jw);
        json_object_begin(jw, "thresholds");
        json_int(jw, "max_deferral_rate", a->max_deferral_rate);
        json_int(jw, "max_shaping", a->max_shaping);
        json_int(jw, "min_replies", a->min_replies);
        json_int(jw, "max_bounce_rate", a->max_bounce_rate);
        json_object_end(jw);
    }
    json_object_end(jw);
}

/* One route group: weights as percentages of the group's total. */
static void group_json(struct route_world *w, size_t gi, int64_t now, struct json_writer *jw)
{
    const struct route_group *g = &w->cfg->ramp.groups[gi];
    const struct group_override *o = &w->group_override[gi];
    double weights[g->n_egress ? g->n_egress : 1];
    json_object_begin(jw, NULL);
    json_string(jw, "name", g->name);
    json_object_begin(jw, "match");
    strings_json(jw, "origins", g->origins, g->n_origins);
    strings_json(jw, "sender_domains", g->sender_domains, g->n_sender_domains);
    strings_json(jw, "rcpt_domains", g->rcpt_domains, g->n_rcpt_domains);
    json_object_end(jw);
    strings_json(jw, "egress", g->egress, g->n_egress);
    strings_json(jw, "key", g->key, g->n_key);
    strings_json(jw, "spill", g->spill, g->n_spill);
    json_bool(jw, "interpolate", g->interpolate);
    json_array_begin(jw, "schedule");
    for (size_t i = 0; i < g->n_schedule; i++) {
        json_object_begin(jw, NULL);
        json_time(jw, "at", g->schedule[i].at);
        weights_json(jw, "weights", g, g->schedule[i].weights);
        json_object_end(jw);
    }
    json_array_end(jw);
    ramp_group_weights(g, o, now, weights);
    weights_json(jw, "effective_weights", g, weights);
    ramp_group_schedule_weights(g, now, weights);
    weights_json(jw, "schedule_weights", g, weights);
    json_string(jw, "mode", ramp_mode_name(o->mode));
    if (o->mode == RAMP_SCHEDULE)
        json_null(jw, "mode_since");
    else
        json_time(jw, "mode_since", o->since);
    autopilot_json(w, gi, jw);
    json_object_end(jw);
}

static void status_json(struct route_world *w, int64_t now, struct json_writer *jw)
{
    const struct ramp_conf *r = &w->cfg->ramp;
    long current = ramp_current_step(r, now);
    json_object_begin(jw, NULL);
    json_string(jw, "from", r->from);
    json_string(jw, "to", r->to);
    json_array_begin(jw, "key");
    for (size_t i = 0; i < r->n_key; i++)
        json_string(jw, NULL, r->key[i]);
    json_array_end(jw);
    json_time(jw, "now", now);
    json_bool(jw, "interpolate", r->interpolate);
    json_array_begin(jw, "schedule");
    for (size_t i = 0; i < r->n_schedule; i++) {
        json_object_begin(jw, NULL);
        json_time(jw, "at", r->schedule[i].at);
        json_double(jw, "percent", r->schedule[i].percent);
        json_bool(jw, "current", (long)i == current);
        if ((long)i == current + 1)
            json_int(jw, "starts_in", r->schedule[i].at > now ? r->schedule[i].at - now : 0);
        json_object_end(jw);
    }
    json_array_end(jw);
    json_double(jw, "effective_share", ramp_share_at(r, &w->override, now));
    json_string(jw, "mode", ramp_mode_name(w->override.mode));
    if (w->override.mode == RAMP_SCHEDULE)
        json_null(jw, "mode_since");
    else
        json_time(jw, "mode_since", w->override.since);
    json_double(jw, "schedule_share", ramp_schedule_share(r, now));
    autopilot_json(w, r->n_groups, jw);

    static const char *const kinds[] = {"origin", "domain", "provider"};
    const struct ramp_pin *lists[] = {r->pin_origins, r->pin_domains, r->pin_providers};
    const size_t counts[] = {r->n_pin_origins, r->n_pin_domains, r->n_pin_providers};
    json_array_begin(jw, "pins");
    for (int k = 0; k < 3; k++)
        for (size_t i = 0; i < counts[k]; i++) {
            const struct ramp_pin *p = &lists[k][i];
            json_object_begin(jw, NULL);
            json_string(jw, "kind", kinds[k]);
            json_string(jw, "name", p->name);
            json_string(jw, "egress", p->egress);
            if (p->until)
                json_time(jw, "until", p->until);
            else
                json_null(jw, "until");
            json_bool(jw, "expired", p->until && now >= p->until);
            json_object_end(jw);
        }
    json_array_end(jw);

    const struct egress_conf *to = config_find_egress(w->cfg, r->to);
    json_array_begin(jw, "counts");
    for (size_t i = 0; i < w->cfg->n_egress * w->n_providers; i++) {
        struct route_pair *p = &w->pairs[i];
        int c[WIN_COUNT];
        for (int k = 0; k < WIN_COUNT; k++)
            c[k] = limits_count_in(p, k, now);
        if (!p->cap && !c[WIN_DAY]) continue;
        json_object_begin(jw, NULL);
        json_string(jw, "egress", p->egress->name);
        json_string(jw, "provider", p->provider);
        json_int(jw, "minute", c[WIN_MINUTE]);
        json_int(jw, "hour", c[WIN_HOUR]);
        json_int(jw, "day", c[WIN_DAY]);
        json_cap(jw, "cap_per_minute", p->cap ? p->cap->per_minute : 0);
        json_cap(jw, "cap_per_hour", p->cap ? p->cap->per_hour : 0);
        json_cap(jw, "cap_per_day", p->cap ? p->cap->per_day : 0);
        json_cap(jw, "connections", p->cap ? p->cap->connections : 0);
        json_cap(jw, "per_connection", p->cap ? p->cap->per_connection : 0);
        json_object_end(jw);
    }
    json_array_end(jw);

    json_array_begin(jw, "observed");
    for (size_t p = 0; to && p < w->n_providers; p++) {
        int total[2], moved[2];
        observed_counts(w, to, p, now, total, moved);
        if (!total[1]) continue;
        json_object_begin(jw, NULL);
        json_string(jw, "provider", w->pairs[p].provider);
        json_int(jw, "hour_messages", total[0]);
        json_int(jw, "hour_moved", moved[0]);
        json_int(jw, "day_messages", total[1]);
        json_int(jw, "day_moved", moved[1]);
        json_double(jw, "day_share", 100.0 * moved[1] / total[1]);
        json_object_end(jw);
    }
    json_array_end(jw);

    json_array_begin(jw, "groups");
    for (size_t gi = 0; gi < r->n_groups; gi++)
        group_json(w, gi, now, jw);
    json_array_end(jw);

    json_array_begin(jw, "shaping");
    for (size_t i = 0; i < w->n_shaping_states; i++) {
        const struct route_shaping *s = &w->shaping[i];
        if (!s->active) continue;
        json_object_begin(jw, NULL);
        json_string(jw, "rule", s->rule->name);
        json_string(jw, "egress", s->pair->egress->name);
        json_string(jw, "provider", s->pair->provider);
        json_string(jw, "action", config_shaping_action_name(s->rule->action));
        json_bool(jw, "recovering", now >= s->until);
        json_time(jw, "until", s->until);
        int count = s->rule->rate_count;
        int64_t period = s->rule->rate_period;
        if (now >= s->until) limits_throttle_rate(w, s, now, &count, &period);
        json_int(jw, "rate_count", count);
        json_int(jw, "rate_period", period);
        json_cap(jw, "connections", s->rule->connections);
        json_object_end(jw);
    }
    json_array_end(jw);
    json_object_end(jw);
    strbuf_puts(jw->out, "\n");
}

int route_control_json(const char *command, struct strbuf *out, struct strbuf *said)
{
    struct route_world *w = &route_world;
    int64_t now = clock_now();
    struct strbuf plain = STRBUF_INIT;
    char *copy = xstrdup(command ? command : "");
    char *words[4];
    int n = 0, rc = 0;
    for (char *save = NULL, *word = strtok_r(copy, " \t", &save); word;
         word = strtok_r(NULL, " \t", &save)) {
        if (!strcmp(word, "--json")) continue;
        if (n == 4) break;
        words[n++] = word;
        strbuf_printf(&plain, "%s%s", plain.len ? " " : "", word);
    }
    struct json_writer jw;
    json_init(&jw, out);
    if (!w->cfg || n == 0 || (strcmp(words[0], "status") && strcmp(words[0], "plan")) || n > 1) {
        /* an override (or a mistake): route_control decides; the answer says where it stands */
        double before = w->cfg ? ramp_share_at(&w->cfg->ramp, &w->override, now) : 0;
        struct strbuf text = STRBUF_INIT;
        rc = route_control(strbuf_str(&plain), &text);
        if (rc == 0 && said) strbuf_append(said, text.data ? text.data : "", text.len);
        long gi = rc == 0 && n >= 2 ? route_group_index(w->cfg, words[1]) : -1;
        if (gi >= 0) {
            const struct route_group *g = &w->cfg->ramp.groups[gi];
            double weights[g->n_egress ? g->n_egress : 1];
            json_object_begin(&jw, NULL);
            json_string(&jw, "action", words[0]);
            json_string(&jw, "group", g->name);
            json_string(&jw, "mode", ramp_mode_name(w->group_override[gi].mode));
            ramp_group_weights(g, &w->group_override[gi], now, weights);
            weights_json(&jw, "weights", g, weights);
            ramp_group_schedule_weights(g, now, weights);
            weights_json(&jw, "schedule_weights", g, weights);
            json_object_end(&jw);
            strbuf_puts(out, "\n");
        } else if (rc == 0) {
            json_object_begin(&jw, NULL);
            json_string(&jw, "action", words[0]);
            json_string(&jw, "group", "default");
            json_string(&jw, "mode", ramp_mode_name(w->override.mode));
            json_double(&jw, "share", ramp_share_at(&w->cfg->ramp, &w->override, now));
            json_double(&jw, "was", before);
            json_double(&jw, "schedule_share", ramp_schedule_share(&w->cfg->ramp, now));
            json_object_end(&jw);
            strbuf_puts(out, "\n");
        } else {
            strbuf_append(out, text.data ? text.data : "", text.len);
        }
        strbuf_free(&text);
    } else if (!strcmp(words[0], "status")) {
        limits_expire(w, now);
        status_json(w, now, &jw);
    } else {
        rc = plan_report(w, now, out, &jw);
    }
    free(copy);
    strbuf_free(&plain);
    return rc;
}
