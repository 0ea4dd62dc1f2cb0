/* report_core.c - what every report builder shares (the records themselves are opened by
 * sources.c): the filter SQL of the time window, --domain and --egress, prepared statements and
 * progress on a terminal. Called by the builders and by report.c; calls none of them.
 * Single-threaded; never blocks a running relay (WAL readers do not block the writer). */
#include <stdio.h>
#include <time.h>

#include "common/strbuf.h"
#include "report/report_core.h"

/* ---- filters and statements ------------------------------------------------------------------ */

void report_sql_filters(struct strbuf *sql, const struct report_ctx *ctx, const char *alias,
                        const char *domain_expr, int use_egress)
{
    const char *a = alias ? alias : "";
    const char *dot = a[0] ? "." : "";
    if (ctx->opt.since_us) strbuf_printf(sql, " AND %s%sts_us >= ?101", a, dot);
    if (ctx->opt.until_us) strbuf_printf(sql, " AND %s%sts_us < ?102", a, dot);
    if (ctx->opt.domain && domain_expr) strbuf_printf(sql, " AND %s = ?103", domain_expr);
    if (ctx->opt.egress && use_egress) strbuf_printf(sql, " AND %s%segress = ?104", a, dot);
}

void report_bind_filters(sqlite3_stmt *st, const struct report_ctx *ctx)
{
    /* Binding a parameter the statement does not use fails harmlessly (SQLITE_RANGE). */
    int n = sqlite3_bind_parameter_count(st);
    if (ctx->opt.since_us && n >= 101) sqlite3_bind_int64(st, 101, ctx->opt.since_us);
    if (ctx->opt.until_us && n >= 102) sqlite3_bind_int64(st, 102, ctx->opt.until_us);
    if (ctx->opt.domain && n >= 103) sqlite3_bind_text(st, 103, ctx->opt.domain, -1, SQLITE_STATIC);
    if (ctx->opt.egress && n >= 104) sqlite3_bind_text(st, 104, ctx->opt.egress, -1, SQLITE_STATIC);
}

sqlite3_stmt *report_prepare(struct report_ctx *ctx, const char *sql)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(ctx->db, sql, -1, &st, NULL) != SQLITE_OK) {
        snprintf(ctx->err, sizeof ctx->err, "records: %s", sqlite3_errmsg(ctx->db));
        sqlite3_finalize(st);
        return NULL;
    }
    report_bind_filters(st, ctx);
    return st;
}

const char *report_text_col(sqlite3_stmt *st, int col)
{
    const unsigned char *s = sqlite3_column_text(st, col);
    return s ? (const char *)s : "";
}

static struct timespec report_progress_last;
static int report_progress_shown;

void report_progress(const struct report_ctx *ctx, const char *what, uint64_t done, uint64_t total)
{
    if (!ctx->opt.progress) return;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    double since = (double)(now.tv_sec - report_progress_last.tv_sec) +
                   (double)(now.tv_nsec - report_progress_last.tv_nsec) / 1e9;
    if (report_progress_shown && since < 0.2 && done < total) return;
    report_progress_last = now;
    report_progress_shown = 1;
    if (total > 0)
        fprintf(stderr, "\r%s: %llu / %llu rows (%d%%)   ", what, (unsigned long long)done,
                (unsigned long long)total, (int)(done * 100 / total));
    else
        fprintf(stderr, "\r%s: %llu rows   ", what, (unsigned long long)done);
    fflush(stderr);
}

void report_progress_end(const struct report_ctx *ctx)
{
    if (ctx->opt.progress && report_progress_shown) fputc('\n', stderr);
    report_progress_shown = 0;
}
