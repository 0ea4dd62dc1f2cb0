/* tls.c - `outrelay report tls`: per policy domain (the recipient domain when no DANE or MTA-STS
 * policy applied) and policy type, the TLS sessions that succeeded and failed, and the failures
 * by RFC 8460 result type, receiving MX and IP and sending IP; `outrelay report tlsrpt`: the
 * RFC 8460 aggregate report JSON of one domain, as the daily sender mails it. Both read the
 * sessions through tlsrpt/ (tlsrpt_collect); the TLS share and TLS failures per egress x
 * provider for the HTML page and the terminal. Called by report.c and html.c. */
#include <stdio.h>
#include <string.h>

#include "config/config.h"
#include "report/report_core.h"
#include "tlsrpt/tlsrpt.h"
#include "tlsrpt/tlsrpt_send.h"

/* The TLS share per egress x provider (delivered recipients) and the TLS failures per egress x
 * provider x result type (attempts), over the window and --egress. */
static int tls_egress_tables(struct report_ctx *ctx, struct report_doc *doc)
{
    struct report_table *share =
        report_table_add(doc, "tls_share", "Delivered over TLS per egress x provider",
                         "egress provider delivered:i over_tls:i tls_share:r");
    struct report_table *fails =
        report_table_add(doc, "tls_failures", "TLS failures per egress x provider x result type",
                         "egress provider result_type attempts:i");
    struct strbuf where = STRBUF_INIT, sql = STRBUF_INIT;
    report_sql_filters(&where, ctx, NULL, NULL, 1);
    strbuf_printf(&sql,
                  "SELECT coalesce(egress, ''), coalesce(provider, 'other'), count(*), "
                  "sum(tls_version IS NOT NULL) FROM events WHERE event = 'delivered'%s "
                  "GROUP BY 1, 2 ORDER BY 1, 2",
                  where.data ? where.data : "");
    int rc = SQLITE_DONE;
    sqlite3_stmt *st = report_prepare(ctx, sql.data);
    if (!st) goto out;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t n = sqlite3_column_int64(st, 2), tls = sqlite3_column_int64(st, 3);
        report_row(share);
        report_put(share, 0, report_text_col(st, 0));
        report_put(share, 1, report_text_col(st, 1));
        report_puti(share, 2, n);
        report_puti(share, 3, tls);
        report_putr(share, 4, n ? 100.0 * (double)tls / (double)n : 0);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) goto out;
    strbuf_reset(&sql);
    strbuf_printf(&sql,
                  "SELECT coalesce(egress, ''), coalesce(provider, 'other'), tls_failure, "
                  "count(*) FROM events WHERE event = 'attempt' AND tls_failure IS NOT NULL AND "
                  "tls_version IS NULL%s GROUP BY 1, 2, 3 ORDER BY 1, 2, 4 DESC, 3",
                  where.data ? where.data : "");
    st = report_prepare(ctx, sql.data);
    if (!st) {
        rc = SQLITE_ERROR;
        goto out;
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        report_row(fails);
        for (int c = 0; c < 3; c++)
            report_put(fails, (size_t)c, report_text_col(st, c));
        report_puti(fails, 3, sqlite3_column_int64(st, 3));
    }
    sqlite3_finalize(st);
out:
    if (rc != SQLITE_DONE && !ctx->err[0])
        snprintf(ctx->err, sizeof ctx->err, "records: %s", sqlite3_errmsg(ctx->db));
    strbuf_free(&where);
    strbuf_free(&sql);
    return rc == SQLITE_DONE ? 0 : -1;
}

int report_tls_build(struct report_ctx *ctx, struct report_doc *doc)
{
    struct report_table *summary =
        report_table_add(doc, "tls", "TLS sessions per policy domain and policy type",
                         "policy_domain policy_type successful:i failed:i");
    struct report_table *failures = report_table_add(
        doc, "failures", "TLS failures by result type, receiving MX and IP, sending IP",
        "policy_domain policy_type result_type receiving_mx receiving_ip sending_ip sessions:i");
    struct tlsrpt_rows rows = {0};
    if (tlsrpt_collect(ctx->db, ctx->opt.since_us, ctx->opt.until_us, ctx->opt.domain, &rows,
                       ctx->err, sizeof ctx->err) != 0)
        return -1;
    for (size_t i = 0; i < rows.n; i++) {
        const struct tlsrpt_row *r = &rows.v[i];
        size_t last = summary->n_rows - 1;
        if (summary->n_rows == 0 || strcmp(report_cell(summary, last, 0), r->policy_domain) != 0 ||
            strcmp(report_cell(summary, last, 1), r->policy_type) != 0) {
            report_row(summary);
            report_put(summary, 0, r->policy_domain);
            report_put(summary, 1, r->policy_type);
            report_puti(summary, 2, 0);
            report_puti(summary, 3, 0);
            last = summary->n_rows - 1;
        }
        size_t col = r->result_type ? 3 : 2;
        char num[32];
        snprintf(num, sizeof num, "%lld",
                 (long long)(report_cell_num(summary, last, col) + (double)r->sessions));
        report_put_at(summary, last, col, num);
        if (!r->result_type) continue;
        report_row(failures);
        report_put(failures, 0, r->policy_domain);
        report_put(failures, 1, r->policy_type);
        report_put(failures, 2, r->result_type);
        report_put(failures, 3, r->receiving_mx);
        report_put(failures, 4, r->receiving_ip);
        report_put(failures, 5, r->sending_ip);
        report_puti(failures, 6, r->sessions);
    }
    tlsrpt_rows_free(&rows);
    if (tls_egress_tables(ctx, doc) < 0) return -1;
    strbuf_puts(
        &doc->notes,
        "A session is one delivery attempt that negotiated TLS or recorded why it could "
        "not (RFC 8460\nresult types); attempts under policy none or that never reached "
        "the server are not counted; a connection that carries several messages counts once per "
        "message.\n--domain selects the policy domain. tls_share: recipients "
        "delivered over TLS\nin percent of all delivered; tls_failures counts attempts.\n");
    return 0;
}

int report_tlsrpt_write(struct report_ctx *ctx, FILE *out)
{
    if (!ctx->opt.domain || !ctx->opt.since_us || !ctx->opt.until_us) {
        snprintf(ctx->err, sizeof ctx->err, "needs --domain and --day (or --since and --until)");
        return -1;
    }
    struct tlsrpt_rows rows = {0};
    if (tlsrpt_collect(ctx->db, ctx->opt.since_us, ctx->opt.until_us, ctx->opt.domain, &rows,
                       ctx->err, sizeof ctx->err) != 0)
        return -1;
    char id[600];
    struct tlsrpt_who who;
    tlsrpt_who(ctx->cfg, &who);
    struct tlsrpt_meta meta = {.organization = who.organization,
                               .contact = who.contact,
                               .start = ctx->opt.since_us / 1000000,
                               .end = ctx->opt.until_us / 1000000};
    tlsrpt_report_id(&meta, ctx->opt.domain, who.submitter, id, sizeof id);
    meta.report_id = id;
    struct strbuf json = STRBUF_INIT;
    tlsrpt_json(&rows, ctx->opt.domain, &meta, &json);
    strbuf_puts(&json, "\n");
    fwrite(json.data, 1, json.len, out);
    strbuf_free(&json);
    tlsrpt_rows_free(&rows);
    return 0;
}
