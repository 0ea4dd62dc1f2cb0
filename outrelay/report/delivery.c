/* delivery.c - the delivery report: delivered / deferred / bounced / expired per egress x
 * provider with delivery delays (p50, p95 of delay_ms: acceptance to the remote 250), and the
 * most frequent remote replies. The provider is the row's own, else the one the recipient's
 * latest `routed` row names (of the same instance). Over several instances' records each row is
 * also grouped by its instance. Read-only SQL; percentiles are computed here. */
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "report/report_core.h"

struct delivery_group {
    char *instance, *egress, *provider;
    int64_t delivered, deferred, bounced, expired;
    int64_t *delays;
    size_t n_delays, cap_delays;
};

static int delivery_cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int delivery_cmp_group(const void *a, const void *b)
{
    const struct delivery_group *x = a, *y = b;
    int c = strcmp(x->instance, y->instance);
    if (!c) c = strcmp(x->egress, y->egress);
    return c ? c : strcmp(x->provider, y->provider);
}

/* Nearest-rank percentile of sorted values. */
static int64_t delivery_percentile(const int64_t *v, size_t n, int pct)
{
    if (n == 0) return 0;
    size_t rank = (size_t)((pct * n + 99) / 100);
    return v[rank ? rank - 1 : 0];
}

static struct delivery_group *delivery_group_of(struct delivery_group **groups, size_t *n,
                                                const char *instance, const char *egress,
                                                const char *provider)
{
    for (size_t i = 0; i < *n; i++)
        if (strcmp((*groups)[i].instance, instance) == 0 &&
            strcmp((*groups)[i].egress, egress) == 0 &&
            strcmp((*groups)[i].provider, provider) == 0)
            return &(*groups)[i];
    *groups = xrealloc(*groups, (*n + 1) * sizeof **groups);
    struct delivery_group *g = &(*groups)[(*n)++];
    memset(g, 0, sizeof *g);
    g->instance = xstrdup(instance);
    g->egress = xstrdup(egress);
    g->provider = xstrdup(provider);
    return g;
}

static int delivery_counts(struct report_ctx *ctx, struct report_table *t)
{
    struct strbuf sql = STRBUF_INIT;
    /* rows without a provider of their own (recipients bounced before any attempt, rows of
     * schema 1 and 2) take it from the recipient's latest routing decision */
    strbuf_puts(&sql, "SELECT e.event, coalesce(e.egress, '-'), coalesce(e.provider, r.provider, "
                      "'-'), e.delay_ms, e.instance, max(r.id) FROM events e LEFT JOIN events r ON "
                      "e.provider IS NULL AND r.instance = e.instance AND r.queue_id = e.queue_id "
                      "AND r.event = 'routed' AND r.recipient = e.recipient WHERE e.event IN "
                      "('delivered', 'deferred', 'bounced', 'expired')");
    report_sql_filters(&sql, ctx, "e", REPORT_SENDER_DOMAIN_SQL("e.sender"), 1);
    /* max(r.id): r.provider is the latest routing decision's (SQLite's bare column rule) */
    strbuf_puts(&sql, " GROUP BY e.instance, e.id");
    sqlite3_stmt *st = report_prepare(ctx, sql.data);
    strbuf_free(&sql);
    if (!st) return -1;
    struct delivery_group *groups = NULL;
    size_t n = 0;
    int rc;
    uint64_t rows = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (++rows % 4096 == 0) report_progress(ctx, "delivery", rows, 0);
        const char *event = report_text_col(st, 0);
        struct delivery_group *g =
            delivery_group_of(&groups, &n, ctx->n_sources > 1 ? report_text_col(st, 4) : "",
                              report_text_col(st, 1), report_text_col(st, 2));
        switch (event[0]) {
        case 'd':
            if (event[2] == 'f') {
                g->deferred++;
                break;
            }
            g->delivered++;
            if (g->n_delays == g->cap_delays) {
                g->cap_delays = g->cap_delays ? g->cap_delays * 2 : 64;
                g->delays = xrealloc(g->delays, g->cap_delays * sizeof *g->delays);
            }
            g->delays[g->n_delays++] = sqlite3_column_int64(st, 3);
            break;
        case 'b':
            g->bounced++;
            break;
        default:
            g->expired++;
        }
    }
    report_progress_end(ctx);
    if (rc != SQLITE_DONE)
        snprintf(ctx->err, sizeof ctx->err, "records: %s", sqlite3_errmsg(ctx->db));
    sqlite3_finalize(st);
    if (n > 1) qsort(groups, n, sizeof *groups, delivery_cmp_group);
    for (size_t i = 0; i < n; i++) {
        struct delivery_group *g = &groups[i];
        if (g->n_delays > 1) qsort(g->delays, g->n_delays, sizeof *g->delays, delivery_cmp_i64);
        report_row(t);
        report_put(t, 0, g->egress);
        report_put(t, 1, g->provider);
        report_puti(t, 2, g->delivered);
        report_puti(t, 3, g->deferred);
        report_puti(t, 4, g->bounced);
        report_puti(t, 5, g->expired);
        if (g->n_delays) {
            report_puti(t, 6, delivery_percentile(g->delays, g->n_delays, 50));
            report_puti(t, 7, delivery_percentile(g->delays, g->n_delays, 95));
        }
        if (ctx->n_sources > 1) report_put(t, 8, g->instance);
        free(g->instance);
        free(g->egress);
        free(g->provider);
        free(g->delays);
    }
    free(groups);
    return rc == SQLITE_DONE ? 0 : -1;
}

static int delivery_replies(struct report_ctx *ctx, struct report_table *t)
{
    struct strbuf sql = STRBUF_INIT;
    /* a 250's text is mostly the receiver's queue id: group those by code only */
    strbuf_puts(&sql, "SELECT event, reply_code, coalesce(enhanced_code, ''), CASE WHEN event = "
                      "'delivered' THEN '' ELSE coalesce(reply_text, '') END, count(*) "
                      "FROM events WHERE event IN ('delivered', 'deferred', 'bounced', "
                      "'expired') AND reply_code IS NOT NULL");
    report_sql_filters(&sql, ctx, NULL, REPORT_SENDER_DOMAIN_SQL("sender"), 1);
    strbuf_puts(&sql, " GROUP BY 1, 2, 3, 4 ORDER BY 5 DESC, 1, 2, 3, 4 LIMIT 20");
    sqlite3_stmt *st = report_prepare(ctx, sql.data);
    strbuf_free(&sql);
    if (!st) return -1;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        report_row(t);
        report_put(t, 0, report_text_col(st, 0));
        report_puti(t, 1, sqlite3_column_int64(st, 1));
        report_put(t, 2, report_text_col(st, 2));
        report_put(t, 3, report_text_col(st, 3));
        report_puti(t, 4, sqlite3_column_int64(st, 4));
    }
    if (rc != SQLITE_DONE)
        snprintf(ctx->err, sizeof ctx->err, "records: %s", sqlite3_errmsg(ctx->db));
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

int report_delivery_build(struct report_ctx *ctx, struct report_doc *doc)
{
    /* over several instances' records a last column names each row's instance */
    struct report_table *t = report_table_add(
        doc, "delivery", "Delivery per egress x provider (delays: acceptance to remote 250, ms)",
        ctx->n_sources > 1
            ? "egress provider delivered:i deferred:i bounced:i expired:i p50_ms:i p95_ms:i "
              "instance"
            : "egress provider delivered:i deferred:i bounced:i expired:i p50_ms:i p95_ms:i");
    struct report_table *replies = report_table_add(doc, "replies", "Top remote replies",
                                                    "event code:i enhanced text count:i");
    if (delivery_counts(ctx, t) < 0 || delivery_replies(ctx, replies) < 0) return -1;
    strbuf_puts(&doc->notes, "deferred counts attempts answered 4xx; delivered, bounced and "
                             "expired count recipients. egress '-': bounced before any attempt "
                             "(alignment policy).\n");
    return 0;
}
