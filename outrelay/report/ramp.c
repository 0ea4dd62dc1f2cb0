/* ramp.c - the ramp report: planned vs actual cloud share per hour and provider (default group's
 * `routed` rows), per route group and egress per hour, caps hit (spill / wait), replies matching
 * the shaping rules (or any 4.7.x) per hour and egress, deferrals per hour, the operator's
 * overrides (`ramp` rows) and the autopilot's judgements (`autopilot` rows). Read-only SQL;
 * shaping matching happens here. */
#include <regex.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/util.h"
#include "config/config.h"
#include "report/report_core.h"

/* 1 when the route stage counts egress as the ramp's cloud side. ?1 = ramp.to, ?2 = ramp.from */
#define RAMP_CLOUD_SQL "(CASE WHEN ?1 IS NOT NULL THEN egress = ?1 ELSE egress <> ?2 END)"
#define RAMP_HOUR_SQL "strftime('%Y-%m-%d %H:00', ts_us / 1000000, 'unixepoch')"
/* Why a recipient spilled or waited, in words: the route's reason, and that it waits. */
#define RAMP_REASON_SQL                                                                            \
    "CASE WHEN action = 'wait' THEN coalesce(route_reason || '; ', '') || 'waiting in the queue' " \
    "ELSE coalesce(route_reason, '') END"

/* Prepares sql (and frees it) with the ramp's sides bound. */
static sqlite3_stmt *ramp_prepare(struct report_ctx *ctx, struct strbuf *sql)
{
    sqlite3_stmt *st = report_prepare(ctx, sql->data);
    strbuf_free(sql);
    if (!st) return NULL;
    const struct config *cfg = ctx->cfg;
    if (cfg->ramp.to) sqlite3_bind_text(st, 1, cfg->ramp.to, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, cfg->ramp.from ? cfg->ramp.from : "", -1, SQLITE_STATIC);
    return st;
}

static int ramp_done(struct report_ctx *ctx, sqlite3_stmt *st, int rc)
{
    if (rc != SQLITE_DONE)
        snprintf(ctx->err, sizeof ctx->err, "records: %s", sqlite3_errmsg(ctx->db));
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

/* Share rows: keys..., routed, cloud, planned_pct, actual_pct, spilled, waiting. */
static int ramp_shares(struct report_ctx *ctx, struct report_table *t, const char *keys, int n_keys)
{
    struct strbuf sql = STRBUF_INIT;
    strbuf_printf(&sql,
                  "SELECT %s, count(*), sum(" RAMP_CLOUD_SQL "), avg(ramp_percent), "
                  "100.0 * sum(" RAMP_CLOUD_SQL ") / nullif(count(egress), 0), "
                  "sum(action = 'spill'), sum(action = 'wait') FROM events "
                  "WHERE event = 'routed'",
                  keys);
    /* route groups have weights of their own: the shares are the default group's */
    if (ctx->cfg->ramp.n_groups)
        strbuf_puts(&sql, " AND coalesce(route_group, 'default') = 'default'");
    report_sql_filters(&sql, ctx, NULL, "from_domain", 0);
    strbuf_printf(&sql, " GROUP BY %s ORDER BY %s", keys, keys);
    sqlite3_stmt *st = ramp_prepare(ctx, &sql);
    if (!st) return -1;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        report_row(t);
        int c = 0;
        for (; c < n_keys; c++)
            report_put(t, (size_t)c, report_text_col(st, c));
        report_puti(t, (size_t)c, sqlite3_column_int64(st, c));
        report_puti(t, (size_t)c + 1, sqlite3_column_int64(st, c + 1));
        report_putr(t, (size_t)c + 2, sqlite3_column_double(st, c + 2));
        report_putr(t, (size_t)c + 3, sqlite3_column_double(st, c + 3));
        report_puti(t, (size_t)c + 4, sqlite3_column_int64(st, c + 4));
        report_puti(t, (size_t)c + 5, sqlite3_column_int64(st, c + 5));
    }
    return ramp_done(ctx, st, rc);
}

static int ramp_caps(struct report_ctx *ctx, struct report_table *t)
{
    struct strbuf sql = STRBUF_INIT;
    strbuf_puts(&sql, "SELECT " RAMP_HOUR_SQL ", provider, action, coalesce(egress, '-'), "
                      "count(*), min(" RAMP_REASON_SQL ") FROM events "
                      "WHERE event = 'routed' AND action IN ('spill', 'wait')");
    report_sql_filters(&sql, ctx, NULL, "from_domain", 1);
    strbuf_puts(&sql, " GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4");
    sqlite3_stmt *st = ramp_prepare(ctx, &sql);
    if (!st) return -1;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        report_row(t);
        for (int c = 0; c < 4; c++)
            report_put(t, (size_t)c, report_text_col(st, c));
        report_puti(t, 4, sqlite3_column_int64(st, 4));
        report_put(t, 5, report_text_col(st, 5));
    }
    return ramp_done(ctx, st, rc);
}

static int ramp_rule_matches(const struct shaping_rule *r, const char *egress, int code,
                             const char *enhanced, const char *text)
{
    if (r->n_egress) {
        size_t i = 0;
        while (i < r->n_egress && strcmp(egress, r->egress[i]) != 0)
            i++;
        if (i == r->n_egress) return 0;
    }
    return config_shaping_matches(r, code, enhanced, text);
}

/* Which shaping rule a reply matches: its name, "4.7.x" for an unmatched 4.7.* policy reply,
 * NULL for none. */
static const char *ramp_shaping_name(const struct config *cfg, const char *egress, int code,
                                     const char *enhanced, const char *text)
{
    for (size_t i = 0; i < cfg->n_shaping; i++)
        if (ramp_rule_matches(&cfg->shaping[i], egress, code, enhanced, text))
            return cfg->shaping[i].name;
    return strncmp(enhanced, "4.7.", 4) == 0 ? "4.7.x (no rule)" : NULL;
}

struct ramp_bucket {
    char *hour, *egress, *rule, *reply;
    int64_t count;
};

/* Deferred and bounced replies grouped by hour, egress and reply; each group classified. */
static int ramp_shaping(struct report_ctx *ctx, struct report_table *shaping,
                        struct report_table *deferrals)
{
    struct strbuf sql = STRBUF_INIT;
    strbuf_puts(&sql, "SELECT " RAMP_HOUR_SQL ", coalesce(egress, '-'), event, reply_code, "
                      "coalesce(enhanced_code, ''), coalesce(reply_text, ''), count(*) FROM events "
                      "WHERE event IN ('deferred', 'bounced') AND reply_code IS NOT NULL");
    report_sql_filters(&sql, ctx, NULL, REPORT_SENDER_DOMAIN_SQL("sender"), 1);
    strbuf_puts(&sql, " GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY 1, 2");
    sqlite3_stmt *st = report_prepare(ctx, sql.data);
    strbuf_free(&sql);
    if (!st) return -1;
    struct ramp_bucket *b = NULL;
    size_t n = 0;
    int rc;
    char hour[32] = "";
    int64_t hour_deferred = 0, hour_shaping = 0;
    for (;;) {
        rc = sqlite3_step(st);
        const char *h = rc == SQLITE_ROW ? report_text_col(st, 0) : "";
        if (hour[0] && strcmp(h, hour) != 0) { /* an hour is complete */
            report_row(deferrals);
            report_put(deferrals, 0, hour);
            report_puti(deferrals, 1, hour_deferred);
            report_puti(deferrals, 2, hour_shaping);
            hour_deferred = hour_shaping = 0;
        }
        if (rc != SQLITE_ROW) break;
        snprintf(hour, sizeof hour, "%s", h);
        const char *egress = report_text_col(st, 1);
        int deferred = strcmp(report_text_col(st, 2), "deferred") == 0;
        int code = sqlite3_column_int(st, 3);
        const char *enhanced = report_text_col(st, 4), *text = report_text_col(st, 5);
        int64_t count = sqlite3_column_int64(st, 6);
        if (deferred) hour_deferred += count;
        const char *rule = ramp_shaping_name(ctx->cfg, egress, code, enhanced, text);
        if (!rule) continue;
        hour_shaping += count;
        size_t i = n;
        while (i > 0 && strcmp(b[i - 1].hour, h) == 0 &&
               !(strcmp(b[i - 1].egress, egress) == 0 && strcmp(b[i - 1].rule, rule) == 0))
            i--;
        if (i > 0 && strcmp(b[i - 1].hour, h) == 0) {
            b[i - 1].count += count;
            continue;
        }
        b = xrealloc(b, (n + 1) * sizeof *b);
        char reply[600];
        snprintf(reply, sizeof reply, "%d %s%s%s", code, enhanced, enhanced[0] ? " " : "", text);
        b[n++] =
            (struct ramp_bucket){xstrdup(h), xstrdup(egress), xstrdup(rule), xstrdup(reply), count};
    }
    for (size_t i = 0; i < n; i++) {
        report_row(shaping);
        report_put(shaping, 0, b[i].hour);
        report_put(shaping, 1, b[i].egress);
        report_put(shaping, 2, b[i].rule);
        report_puti(shaping, 3, b[i].count);
        report_put(shaping, 4, b[i].reply);
        free(b[i].hour);
        free(b[i].egress);
        free(b[i].rule);
        free(b[i].reply);
    }
    free(b);
    return ramp_done(ctx, st, rc);
}

/* A route group's routed rows: the group and the egress the ramp planned (route_group,
 * planned_egress), whose share of the weight is ramp_percent. */
#define GROUP_ROWS_SQL                                                                             \
    "SELECT " RAMP_HOUR_SQL                                                                        \
    " AS hour, route_group AS grp, egress, ramp_percent, planned_egress AS "                       \
    "planned FROM events WHERE event = 'routed' AND route_group IS NOT NULL AND route_group <> "   \
    "'default'"

/* Per hour, route group and egress: recipients given an egress in the group, the egress's share
 * of the weight (planned; 0 when no decision that hour chose it) and of the recipients (actual). */
static int ramp_groups(struct report_ctx *ctx, struct report_table *t)
{
    struct strbuf sql = STRBUF_INIT;
    strbuf_puts(&sql, "WITH r AS (" GROUP_ROWS_SQL);
    report_sql_filters(&sql, ctx, NULL, "from_domain", 0);
    strbuf_puts(&sql,
                "), tot AS (SELECT hour, grp, count(egress) AS n FROM r GROUP BY 1, 2), "
                "act AS (SELECT hour, grp, egress AS e, count(*) AS c FROM r WHERE egress IS NOT "
                "NULL GROUP BY 1, 2, 3), "
                "pl AS (SELECT hour, grp, planned AS e, max(ramp_percent) AS p FROM r WHERE "
                "planned IS NOT NULL GROUP BY 1, 2, 3), "
                "eg AS (SELECT hour, grp, e FROM act UNION SELECT hour, grp, e FROM pl) "
                "SELECT eg.hour, eg.grp, eg.e, tot.n, coalesce(pl.p, 0), "
                "100.0 * coalesce(act.c, 0) / nullif(tot.n, 0) FROM eg JOIN tot USING (hour, grp) "
                "LEFT JOIN act USING (hour, grp, e) LEFT JOIN pl USING (hour, grp, e) "
                "ORDER BY 2, 1, 3");
    sqlite3_stmt *st = report_prepare(ctx, sql.data);
    strbuf_free(&sql);
    if (!st) return -1;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        report_row(t);
        for (int c = 0; c < 3; c++)
            report_put(t, (size_t)c, report_text_col(st, c));
        report_puti(t, 3, sqlite3_column_int64(st, 3));
        report_putr(t, 4, sqlite3_column_double(st, 4));
        report_putr(t, 5, sqlite3_column_double(st, 5));
    }
    return ramp_done(ctx, st, rc);
}

/* One row per recorded event of a kind, in time order: its time, then `columns` as text on one
 * line (operator overrides: event 'ramp'; shaping actions started and lifted: 'shaping'). */
static int ramp_event_rows(struct report_ctx *ctx, struct report_table *t, const char *event,
                           const char *columns, int n_columns, int use_egress)
{
    struct strbuf sql = STRBUF_INIT;
    strbuf_printf(&sql, "SELECT ts_us, %s FROM events WHERE event = '%s'", columns, event);
    report_sql_filters(&sql, ctx, NULL, NULL, use_egress);
    strbuf_puts(&sql, " ORDER BY ts_us, id");
    sqlite3_stmt *st = report_prepare(ctx, sql.data);
    strbuf_free(&sql);
    if (!st) return -1;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        char when[32];
        report_row(t);
        report_put(t, 0, report_time_text(sqlite3_column_int64(st, 0), when, sizeof when));
        for (int c = 1; c <= n_columns; c++) {
            /* multi-line texts (the relay's answer to an override) on one line */
            char *v = xstrdup(report_text_col(st, c));
            size_t len = strlen(v);
            while (len > 0 && (v[len - 1] == '\n' || v[len - 1] == ' '))
                v[--len] = '\0';
            for (char *p = v; *p; p++)
                if (*p == '\n') *p = ' ';
            report_put(t, c, v);
            free(v);
        }
    }
    return ramp_done(ctx, st, rc);
}

int report_ramp_build(struct report_ctx *ctx, struct report_doc *doc)
{
    static const char share_cols[] =
        "routed:i cloud:i planned_pct:r actual_pct:r spilled:i waiting:i";
    char cols[256];
    snprintf(cols, sizeof cols, "hour %s", share_cols);
    struct report_table *hours =
        report_table_add(doc, "hours", "Ramp per hour: planned vs actual cloud share", cols);
    snprintf(cols, sizeof cols, "hour provider %s", share_cols);
    struct report_table *hourly =
        report_table_add(doc, "hourly", "Ramp per hour and provider", cols);
    snprintf(cols, sizeof cols, "provider %s", share_cols);
    struct report_table *providers =
        report_table_add(doc, "providers", "Ramp per provider (whole window)", cols);
    struct report_table *caps = report_table_add(
        doc, "caps", "Caps hit (recipients spilled to the other egress or waiting)",
        "hour provider action egress count:i reason");
    struct report_table *shaping = report_table_add(
        doc, "shaping", "Shaping replies (matching a configured shaping rule, or 4.7.x)",
        "hour egress rule count:i reply");
    struct report_table *deferrals = report_table_add(
        doc, "deferrals", "Deferrals and shaping replies per hour", "hour deferred:i shaping:i");
    struct report_table *overrides = report_table_add(
        doc, "overrides", "Operator overrides (outrelay ramp ...)", "time action result");
    struct report_table *suspensions = report_table_add(
        doc, "suspensions", "Shaping actions started and lifted (per egress x provider)",
        "time egress provider action detail");
    struct report_table *groups =
        report_table_add(doc, "groups", "Route groups per hour: planned vs actual share per egress",
                         "hour group egress routed:i planned_pct:r actual_pct:r");
    struct report_table *autopilot =
        report_table_add(doc, "autopilot", "Autopilot: verdicts and the gates behind them",
                         "time verdict gate step_share detail");

    char hour_provider[400];
    snprintf(hour_provider, sizeof hour_provider, "%s, provider", RAMP_HOUR_SQL);
    if (ramp_shares(ctx, hours, RAMP_HOUR_SQL, 1) < 0 ||
        ramp_shares(ctx, hourly, hour_provider, 2) < 0 ||
        ramp_shares(ctx, providers, "provider", 1) < 0 || ramp_caps(ctx, caps) < 0 ||
        ramp_shaping(ctx, shaping, deferrals) < 0 ||
        ramp_event_rows(ctx, overrides, "ramp", "action, detail", 2, 0) < 0 ||
        ramp_event_rows(ctx, suspensions, "shaping", "egress, provider, action, detail", 4, 1) <
            0 ||
        ramp_groups(ctx, groups) < 0 ||
        ramp_event_rows(ctx, autopilot, "autopilot", "action, rule, ramp_percent, detail", 4, 0) <
            0)
        return -1;
    strbuf_printf(&doc->notes,
                  "cloud = recipients routed to %s%s; actual_pct = cloud / recipients given an "
                  "egress;\nplanned_pct = the mean ramp share recorded with the decisions. "
                  "--egress applies to caps and shaping only.%s\n",
                  ctx->cfg->ramp.to ? ctx->cfg->ramp.to : "any egress but ",
                  ctx->cfg->ramp.to ? "" : (ctx->cfg->ramp.from ? ctx->cfg->ramp.from : "-"),
                  ctx->cfg->ramp.n_groups
                      ? "\nThe shares count the default group's recipients only; groups has the "
                        "route groups: planned_pct = the egress's share of the group's weight\n"
                        "recorded with the decisions that chose it that hour (0 when none did), "
                        "actual_pct = its share of the group's recipients given an egress.\n"
                        "autopilot: step_share = the share of the weight on the egresses the "
                        "step moved traffic to."
                      : "");
    return 0;
}
