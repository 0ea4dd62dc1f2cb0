/* alignment.c - the alignment report: from the `checked` rows (one per message x egress, written
 * by the check stage before the first attempt) it counts, per From domain x egress x day, SPF,
 * DKIM and predicted DMARC outcomes and the actions taken, plus a per domain x egress summary
 * (the HTML bar chart reads it) and the most frequent failure reasons in words. Read-only SQL. */
#include <string.h>

#include "report/report_core.h"

/* The counted columns, shared by the daily and the summary query. */
#define ALIGNMENT_COUNTS                                                                           \
    "count(DISTINCT instance || ' ' || queue_id), sum(spf_result = 'pass'), sum(spf_result IN "    \
    "('fail', "                                                                                    \
    "'softfail')), sum(spf_result = 'temperror'), sum(coalesce(dkim, '') <> ''), "                 \
    "sum(dkim_aligned), sum(dmarc_result = 'pass'), sum(dmarc_result = "                           \
    "'fail'), sum(dmarc_result IN ('none', 'temperror')), sum(action = 'reroute'), "               \
    "sum(action = 'hold'), sum(action = 'bounce')"
#define ALIGNMENT_N_COUNTS 12

static int alignment_fill(struct report_ctx *ctx, struct report_table *t, const char *sql,
                          int n_keys)
{
    sqlite3_stmt *st = report_prepare(ctx, sql);
    if (!st) return -1;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        report_row(t);
        for (int k = 0; k < n_keys; k++)
            report_put(t, (size_t)k, report_text_col(st, k));
        for (int c = 0; c < ALIGNMENT_N_COUNTS; c++)
            report_puti(t, (size_t)(n_keys + c), sqlite3_column_int64(st, n_keys + c));
    }
    if (rc != SQLITE_DONE)
        snprintf(ctx->err, sizeof ctx->err, "records: %s", sqlite3_errmsg(ctx->db));
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

int report_alignment_build(struct report_ctx *ctx, struct report_doc *doc)
{
    static const char counts[] =
        "messages:i spf_pass:i spf_fail:i spf_temperror:i dkim_signed:i dkim_aligned:i "
        "dmarc_pass:i dmarc_fail:i dmarc_other:i rerouted:i held:i bounced:i";
    char cols[512];
    snprintf(cols, sizeof cols, "day domain egress %s", counts);
    struct report_table *daily = report_table_add(
        doc, "alignment", "Alignment per From domain x egress x day (predicted before sending)",
        cols);
    snprintf(cols, sizeof cols, "domain egress %s pass_rate:r", counts);
    struct report_table *summary =
        report_table_add(doc, "summary", "Alignment per From domain x egress (whole window)", cols);
    struct report_table *reasons = report_table_add(
        doc, "reasons", "Top reasons for predicted DMARC failures", "domain egress count:i reason");

    struct strbuf where = STRBUF_INIT, sql = STRBUF_INIT;
    strbuf_puts(&where, "event = 'checked' AND egress IS NOT NULL");
    report_sql_filters(&where, ctx, NULL, "from_domain", 1);

    strbuf_printf(
        &sql,
        "SELECT strftime('%%Y-%%m-%%d', ts_us / 1000000, 'unixepoch'), "
        "coalesce(from_domain, '(none)'), egress, %s FROM events WHERE %s GROUP BY 1, 2, 3 "
        "ORDER BY 1, 2, 3",
        ALIGNMENT_COUNTS, where.data);
    int rc = alignment_fill(ctx, daily, sql.data, 3);

    strbuf_reset(&sql);
    strbuf_printf(
        &sql,
        "SELECT coalesce(from_domain, '(none)'), egress, %s FROM events WHERE %s GROUP BY "
        "1, 2 ORDER BY 1, 2",
        ALIGNMENT_COUNTS, where.data);
    if (rc == 0) rc = alignment_fill(ctx, summary, sql.data, 2);
    size_t rate = report_col(summary, "pass_rate"), msgs = report_col(summary, "messages");
    size_t pass = report_col(summary, "dmarc_pass");
    for (size_t r = 0; r < summary->n_rows; r++) {
        double n = report_cell_num(summary, r, msgs);
        report_putr_at(summary, r, rate, n > 0 ? 100.0 * report_cell_num(summary, r, pass) / n : 0);
    }

    strbuf_reset(&sql);
    strbuf_printf(&sql,
                  "SELECT domain, egress, n, reason FROM (SELECT coalesce(from_domain, '(none)') "
                  "AS domain, egress, count(*) AS n, coalesce(detail, '(no reason recorded)') AS "
                  "reason, row_number() OVER (PARTITION BY from_domain, egress ORDER BY count(*) "
                  "DESC, detail) AS rank FROM events WHERE %s AND dmarc_result IN ('fail', "
                  "'temperror') GROUP BY from_domain, egress, detail) WHERE rank <= 3 "
                  "ORDER BY domain, egress, n DESC",
                  where.data);
    sqlite3_stmt *st = rc == 0 ? report_prepare(ctx, sql.data) : NULL;
    if (st) {
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            report_row(reasons);
            report_put(reasons, 0, report_text_col(st, 0));
            report_put(reasons, 1, report_text_col(st, 1));
            report_puti(reasons, 2, sqlite3_column_int64(st, 2));
            report_put(reasons, 3, report_text_col(st, 3));
        }
        if (rc != SQLITE_DONE)
            snprintf(ctx->err, sizeof ctx->err, "records: %s", sqlite3_errmsg(ctx->db));
        rc = rc == SQLITE_DONE ? 0 : -1;
        sqlite3_finalize(st);
    } else {
        rc = -1;
    }
    strbuf_puts(&doc->notes,
                "Counts are checks: one per message and egress, whichever egress was used in the "
                "end.\nspf_fail counts fail and softfail; dmarc_other counts none and temperror; "
                "dkim_aligned counts\nmessages with a signature whose key DNS publishes and whose "
                "d= aligns with the From domain.\n");
    strbuf_free(&where);
    strbuf_free(&sql);
    return rc;
}
