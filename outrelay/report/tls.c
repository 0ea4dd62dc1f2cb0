/* tls.c - `outrelay report tls`: per policy domain (the recipient domain when no DANE or MTA-STS
 * policy applied) and policy type, the TLS sessions that succeeded and failed, and the failures
 * by RFC 8460 result type, receiving MX and IP and sending IP; `outrelay report tlsrpt`: the
 * RFC 8460 aggregate report JSON of one domain, as the daily sender mails it. Both read the
 * sessions through tlsrpt/ (tlsrpt_collect). Called by report.c and html.c. */
#include <stdio.h>
#include <string.h>

#include "config/config.h"
#include "report/report_core.h"
#include "tlsrpt/tlsrpt.h"

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
    strbuf_puts(&doc->notes,
                "A session is one delivery attempt that negotiated TLS or recorded why it could "
                "not (RFC 8460\nresult types); attempts under policy none or that never reached "
                "the server are not counted.\n--domain selects the policy domain.\n");
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
    char id[300];
    struct tlsrpt_meta meta = {.organization = ctx->cfg->hostname,
                               .contact = ctx->cfg->hostname,
                               .start = ctx->opt.since_us / 1000000,
                               .end = ctx->opt.until_us / 1000000};
    tlsrpt_report_id(&meta, ctx->opt.domain, ctx->cfg->hostname, id, sizeof id);
    meta.report_id = id;
    struct strbuf json = STRBUF_INIT;
    tlsrpt_json(&rows, ctx->opt.domain, &meta, &json);
    strbuf_puts(&json, "\n");
    fwrite(json.data, 1, json.len, out);
    strbuf_free(&json);
    tlsrpt_rows_free(&rows);
    return 0;
}
