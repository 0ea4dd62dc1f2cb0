/* state.c - <state>/route.db, the route stage's memory across restarts: the operator's ramp
 * overrides (the default group's and each route group's, by name), each group's autopilot step
 * (held since, last step back, verdict), the message counts per egress x
 * provider x window, and the shaping entries in force. The only code that touches route.db. Writes
 * are synchronous (rare, or batched: counts are flushed every few seconds by route.c); loop thread
 * only. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/dirs.h"
#include "common/log.h"
#include "common/private_file.h"
#include "common/strbuf.h"
#include "common/util.h"
#include "route/route_internal.h"

static const char route_schema_sql[] = "PRAGMA journal_mode=WAL;"
                                       "PRAGMA synchronous=NORMAL;"
                                       "CREATE TABLE IF NOT EXISTS ramp_override ("
                                       " id INTEGER PRIMARY KEY CHECK (id = 1),"
                                       " mode TEXT NOT NULL,"
                                       " percent REAL NOT NULL,"
                                       " since INTEGER NOT NULL);"
                                       "CREATE TABLE IF NOT EXISTS group_override ("
                                       " grp TEXT PRIMARY KEY,"
                                       " mode TEXT NOT NULL,"
                                       " weights TEXT NOT NULL," /* egress=weight,... */
                                       " since INTEGER NOT NULL);"
                                       "CREATE TABLE IF NOT EXISTS autopilot ("
                                       " grp TEXT PRIMARY KEY,"
                                       " step INTEGER NOT NULL," /* -1: before the first */
                                       " held_since INTEGER NOT NULL,"
                                       " last_back INTEGER NOT NULL,"
                                       " verdict TEXT NOT NULL);"
                                       "CREATE TABLE IF NOT EXISTS counters ("
                                       " egress TEXT NOT NULL,"
                                       " provider TEXT NOT NULL,"
                                       " span TEXT NOT NULL," /* minute | hour | day */
                                       " start INTEGER NOT NULL,"
                                       " count INTEGER NOT NULL,"
                                       " PRIMARY KEY (egress, provider, span));"
                                       "CREATE TABLE IF NOT EXISTS shaping ("
                                       " rule TEXT NOT NULL,"
                                       " egress TEXT NOT NULL,"
                                       " provider TEXT NOT NULL,"
                                       " action TEXT NOT NULL,"
                                       " started INTEGER NOT NULL,"
                                       " until INTEGER NOT NULL,"
                                       " last_hit INTEGER NOT NULL,"
                                       " PRIMARY KEY (rule, egress, provider));";

static void db_warn(struct route_world *w, const char *what)
{
    log_error("route: %s/route.db: %s: %s", w->state_dir, what, sqlite3_errmsg(w->db));
}

int route_db_open(struct route_world *w, char *err, size_t errlen)
{
    struct strbuf path = STRBUF_INIT;
    char *msg = NULL;
    if (dirs_make(w->state_dir, 0750, 0750, err, errlen) < 0) return -1;
    strbuf_printf(&path, "%s/route.db", w->state_dir);
    if (private_file_prepare_sqlite(strbuf_str(&path), err, errlen) < 0) {
        strbuf_free(&path);
        return -1;
    }
    int rc =
        sqlite3_open_v2(strbuf_str(&path), &w->db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_busy_timeout(w->db, 2000);
        rc = sqlite3_exec(w->db, route_schema_sql, NULL, NULL, &msg);
    }
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "%s: %s", strbuf_str(&path),
                 msg     ? msg
                 : w->db ? sqlite3_errmsg(w->db)
                         : "cannot open");
        sqlite3_free(msg);
        sqlite3_close(w->db);
        w->db = NULL;
        strbuf_free(&path);
        return -1;
    }
    strbuf_free(&path);
    return 0;
}

void route_db_close(struct route_world *w)
{
    if (w->db) sqlite3_close(w->db);
    w->db = NULL;
}

static const char *column_text(sqlite3_stmt *st, int i)
{
    const unsigned char *s = sqlite3_column_text(st, i);
    return s ? (const char *)s : "";
}

static struct route_shaping *find_shaping(struct route_world *w, const char *rule,
                                          const char *egress, const char *provider)
{
    for (size_t i = 0; i < w->n_shaping_states; i++) {
        struct route_shaping *s = &w->shaping[i];
        if (!strcmp(s->rule->name, rule) && !strcmp(s->pair->egress->name, egress) &&
            !strcmp(s->pair->provider, provider))
            return s;
    }
    return NULL;
}

/* One stored group override, when its group is still configured: weights by egress name (an
 * egress no longer in the group is dropped, a new one weighs 0). */
void route_db_apply_group_override(struct route_world *w, const char *group, const char *mode_name,
                                   const char *text, int64_t since)
{
    long gi = route_group_index(w->cfg, group);
    enum ramp_mode mode;
    if (gi < 0 || ramp_mode_parse(mode_name, &mode) < 0) {
        log_info("route: ramp override of group %s forgotten (not configured)", group);
        return;
    }
    const struct route_group *g = &w->cfg->ramp.groups[gi];
    struct group_override *o = &w->group_override[gi];
    free(o->weights);
    o->weights = NULL;
    o->mode = mode;
    o->since = since;
    if (mode == RAMP_SCHEDULE) return;
    o->weights = xcalloc(g->n_egress ? g->n_egress : 1, sizeof *o->weights);
    char *copy = xstrdup(text), *save = NULL;
    double sum = 0;
    for (char *item = strtok_r(copy, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(item, '=');
        if (!eq) continue;
        *eq = '\0';
        for (size_t e = 0; e < g->n_egress; e++)
            if (!strcmp(g->egress[e], item)) sum += o->weights[e] = strtod(eq + 1, NULL);
    }
    free(copy);
    if (!(sum > 0)) { /* nothing left that the group knows: follow the schedule */
        free(o->weights);
        o->weights = NULL;
        o->mode = RAMP_SCHEDULE;
    }
}

long route_db_apply_autopilot(struct route_world *w, const char *group, int64_t step,
                              int64_t held_since, int64_t last_back, const char *verdict)
{
    long gi =
        !strcmp(group, "default") ? (long)w->cfg->ramp.n_groups : route_group_index(w->cfg, group);
    if (gi < 0 || !w->autopilot || !autopilot_group(w, (size_t)gi)->autopilot.enabled) {
        log_info("route: autopilot of group %s forgotten (not configured)", group);
        return -1;
    }
    const struct route_group *g = autopilot_group(w, (size_t)gi);
    struct autopilot_state *st = &w->autopilot[gi];
    if (step >= (int64_t)g->n_schedule) step = (int64_t)g->n_schedule - 1;
    st->step = step < -1 ? -1 : (long)step;
    st->held_since = held_since;
    st->last_back = last_back;
    st->shared_at = held_since;
    for (int v = AUTOPILOT_OFF; v <= AUTOPILOT_DONE; v++)
        if (!strcmp(verdict, autopilot_verdict_name((enum autopilot_verdict)v)))
            st->verdict = (enum autopilot_verdict)v;
    if ((size_t)gi == w->cfg->ramp.n_groups)
        w->override.pilot_step = st->step;
    else
        w->group_override[gi].pilot_step = st->step;
    return gi;
}

int route_db_load(struct route_world *w, char *err, size_t errlen)
{
    sqlite3_stmt *st = NULL;
    int rc =
        sqlite3_prepare_v2(w->db, "SELECT mode, percent, since FROM ramp_override", -1, &st, NULL);
    while (rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW) {
        enum ramp_mode mode;
        if (ramp_mode_parse(column_text(st, 0), &mode) == 0) {
            w->override.mode = mode;
            w->override.percent = sqlite3_column_double(st, 1);
            w->override.since = sqlite3_column_int64(st, 2);
        }
    }
    sqlite3_finalize(st);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(w->db, "SELECT grp, mode, weights, since FROM group_override", -1,
                                &st, NULL);
    while (rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        route_db_apply_group_override(w, column_text(st, 0), column_text(st, 1), column_text(st, 2),
                                      sqlite3_column_int64(st, 3));
    sqlite3_finalize(st);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(w->db,
                                "SELECT grp, step, held_since, last_back, verdict FROM autopilot",
                                -1, &st, NULL);
    while (rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        route_db_apply_autopilot(w, column_text(st, 0), sqlite3_column_int64(st, 1),
                                 sqlite3_column_int64(st, 2), sqlite3_column_int64(st, 3),
                                 column_text(st, 4));
    sqlite3_finalize(st);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(w->db, "SELECT egress, provider, span, start, count FROM counters",
                                -1, &st, NULL);
    while (rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW) {
        const struct egress_conf *e = config_find_egress(w->cfg, column_text(st, 0));
        const char *provider = column_text(st, 1);
        struct route_pair *p = e ? limits_pair(w, e, provider) : NULL;
        if (!p || strcmp(p->provider, provider)) continue; /* no longer configured */
        for (int i = 0; i < WIN_COUNT; i++)
            if (!strcmp(column_text(st, 2), limits_window_name(i))) {
                p->window_start[i] = sqlite3_column_int64(st, 3);
                p->count[i] = sqlite3_column_int(st, 4);
            }
    }
    sqlite3_finalize(st);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(
            w->db, "SELECT rule, egress, provider, started, until, last_hit FROM shaping", -1, &st,
            NULL);
    while (rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW) {
        struct route_shaping *s =
            find_shaping(w, column_text(st, 0), column_text(st, 1), column_text(st, 2));
        if (!s) continue; /* the rule is gone from the configuration: forget it below */
        s->active = 1;
        s->started = sqlite3_column_int64(st, 3);
        s->until = sqlite3_column_int64(st, 4);
        s->last_hit = sqlite3_column_int64(st, 5);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "%s/route.db: %s", w->state_dir, sqlite3_errmsg(w->db));
        return -1;
    }
    /* Rows of rules or egresses no longer configured. */
    rc = sqlite3_prepare_v2(w->db, "SELECT rule, egress, provider FROM shaping", -1, &st, NULL);
    while (rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        if (!find_shaping(w, column_text(st, 0), column_text(st, 1), column_text(st, 2)))
            log_info("route: shaping=%s, egress=%s, provider=%s, forgotten (not configured)",
                     column_text(st, 0), column_text(st, 1), column_text(st, 2));
    sqlite3_finalize(st);
    return 0;
}

void route_db_save_override(struct route_world *w)
{
    sqlite3_stmt *st = NULL;
    if (!w->db) return;
    if (sqlite3_prepare_v2(w->db,
                           "INSERT OR REPLACE INTO ramp_override (id, mode, percent, since) "
                           "VALUES (1, ?1, ?2, ?3)",
                           -1, &st, NULL) != SQLITE_OK) {
        db_warn(w, "saving the ramp override");
        return;
    }
    sqlite3_bind_text(st, 1, ramp_mode_name(w->override.mode), -1, SQLITE_STATIC);
    sqlite3_bind_double(st, 2, w->override.percent);
    sqlite3_bind_int64(st, 3, w->override.since);
    if (sqlite3_step(st) != SQLITE_DONE) db_warn(w, "saving the ramp override");
    sqlite3_finalize(st);
}

void route_db_save_group_override(struct route_world *w, size_t group)
{
    const struct route_group *g = &w->cfg->ramp.groups[group];
    const struct group_override *o = &w->group_override[group];
    struct strbuf weights = STRBUF_INIT;
    sqlite3_stmt *st = NULL;
    if (!w->db) return;
    for (size_t e = 0; o->weights && e < g->n_egress; e++)
        strbuf_printf(&weights, "%s%s=%.17g", e ? "," : "", g->egress[e], o->weights[e]);
    if (sqlite3_prepare_v2(w->db,
                           "INSERT OR REPLACE INTO group_override (grp, mode, weights, since) "
                           "VALUES (?1, ?2, ?3, ?4)",
                           -1, &st, NULL) != SQLITE_OK) {
        db_warn(w, "saving a group's ramp override");
        strbuf_free(&weights);
        return;
    }
    sqlite3_bind_text(st, 1, g->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, ramp_mode_name(o->mode), -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, strbuf_str(&weights), -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, o->since);
    if (sqlite3_step(st) != SQLITE_DONE) db_warn(w, "saving a group's ramp override");
    sqlite3_finalize(st);
    strbuf_free(&weights);
}

void route_db_flush_counters(struct route_world *w)
{
    sqlite3_stmt *st = NULL;
    size_t n = w->cfg->n_egress * w->n_providers;
    int any = 0;
    for (size_t i = 0; i < n; i++)
        any |= w->pairs[i].dirty;
    if (!w->db || !any) return;
    if (sqlite3_prepare_v2(w->db,
                           "INSERT OR REPLACE INTO counters (egress, provider, span, start, count) "
                           "VALUES (?1, ?2, ?3, ?4, ?5)",
                           -1, &st, NULL) != SQLITE_OK) {
        db_warn(w, "saving counters");
        return;
    }
    sqlite3_exec(w->db, "BEGIN", NULL, NULL, NULL);
    for (size_t i = 0; i < n; i++) {
        struct route_pair *p = &w->pairs[i];
        if (!p->dirty) continue;
        for (int k = 0; k < WIN_COUNT; k++) {
            sqlite3_reset(st);
            sqlite3_bind_text(st, 1, p->egress->name, -1, SQLITE_STATIC);
            sqlite3_bind_text(st, 2, p->provider, -1, SQLITE_STATIC);
            sqlite3_bind_text(st, 3, limits_window_name(k), -1, SQLITE_STATIC);
            sqlite3_bind_int64(st, 4, p->window_start[k]);
            sqlite3_bind_int(st, 5, p->count[k]);
            if (sqlite3_step(st) != SQLITE_DONE) db_warn(w, "saving counters");
        }
        p->dirty = 0;
    }
    sqlite3_finalize(st);
    if (sqlite3_exec(w->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) db_warn(w, "saving counters");
}

void route_db_save_shaping(struct route_world *w, const struct route_shaping *s)
{
    sqlite3_stmt *st = NULL;
    if (!w->db) return;
    if (sqlite3_prepare_v2(w->db,
                           "INSERT OR REPLACE INTO shaping (rule, egress, provider, action, "
                           "started, until, last_hit) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                           -1, &st, NULL) != SQLITE_OK) {
        db_warn(w, "saving a shaping entry");
        return;
    }
    sqlite3_bind_text(st, 1, s->rule->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, s->pair->egress->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, s->pair->provider, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, config_shaping_action_name(s->rule->action), -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, s->started);
    sqlite3_bind_int64(st, 6, s->until);
    sqlite3_bind_int64(st, 7, s->last_hit);
    if (sqlite3_step(st) != SQLITE_DONE) db_warn(w, "saving a shaping entry");
    sqlite3_finalize(st);
}

void route_db_delete_shaping(struct route_world *w, const struct route_shaping *s)
{
    sqlite3_stmt *st = NULL;
    if (!w->db) return;
    if (sqlite3_prepare_v2(w->db,
                           "DELETE FROM shaping WHERE rule = ?1 AND egress = ?2 AND provider = ?3",
                           -1, &st, NULL) != SQLITE_OK) {
        db_warn(w, "removing a shaping entry");
        return;
    }
    sqlite3_bind_text(st, 1, s->rule->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, s->pair->egress->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, s->pair->provider, -1, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_DONE) db_warn(w, "removing a shaping entry");
    sqlite3_finalize(st);
}

void route_db_save_autopilot(struct route_world *w, size_t group)
{
    const struct autopilot_state *st = &w->autopilot[group];
    sqlite3_stmt *st_ = NULL;
    if (!w->db) return;
    if (sqlite3_prepare_v2(w->db,
                           "INSERT OR REPLACE INTO autopilot (grp, step, held_since, last_back, "
                           "verdict) VALUES (?1, ?2, ?3, ?4, ?5)",
                           -1, &st_, NULL) != SQLITE_OK) {
        db_warn(w, "saving a group's autopilot");
        return;
    }
    sqlite3_bind_text(st_, 1, autopilot_group(w, group)->name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st_, 2, st->step);
    sqlite3_bind_int64(st_, 3, st->held_since);
    sqlite3_bind_int64(st_, 4, st->last_back);
    sqlite3_bind_text(st_, 5, autopilot_verdict_name(st->verdict), -1, SQLITE_STATIC);
    if (sqlite3_step(st_) != SQLITE_DONE) db_warn(w, "saving a group's autopilot");
    sqlite3_finalize(st_);
}
