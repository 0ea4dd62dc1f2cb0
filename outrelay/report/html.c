/* html.c - `outrelay report html -o FILE`: one self-contained HTML page (inline CSS, inline SVG
 * from charts.c, no scripts, nothing fetched) with the ramp, alignment, deferral and delivery
 * outcome charts, a headline (bounce share by severity, continuity), the route groups' shares and
 * autopilot history, and the tables of the alignment, ramp, delivery, continuity and TLS reports
 * for the same window and filters. Builds each report with its own module; only the layout lives
 * here. */
#include <string.h>

#include "common/clock.h"
#include "common/util.h"
#include "config/config.h"
#include "report/report_core.h"

static const char html_style[] =
    "body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1d2330;background:#fff}"
    "h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:32px 0 8px;border-bottom:2px "
    "solid #dfe3ea;padding-bottom:4px}h3{font-size:15px;margin:18px 0 6px}"
    ".meta{color:#5b6475}nav a{margin-right:14px}"
    "div.table{max-width:100%;overflow-x:auto;margin:4px 0 12px}"
    "table{border-collapse:collapse;font-size:13px}"
    "th,td{border:1px solid #dfe3ea;padding:3px 6px;text-align:left;vertical-align:top}"
    "td{overflow-wrap:anywhere;max-width:36em}th{font-size:12px;line-height:1.2}"
    "th{background:#f3f5f9}td.num{text-align:right;font-variant-numeric:tabular-nums}"
    "tr.alert td{background:#fde8e8}.none{color:#8a93a3;font-style:italic}"
    ".big{font-size:20px;font-weight:600}.ok{color:#17803d}.bad{color:#c0262d}"
    ".warn{color:#a86a00}.headline span.share{padding:0 6px;border-radius:4px}"
    ".headline span.share.ok{background:#e3f4e8}.headline span.share.warn{background:#fdf1d8}"
    ".headline span.share.bad{background:#fde8e8}"
    "svg.chart{display:block;max-width:100%;height:auto;margin:6px 0 8px;background:#fbfcfe;"
    "border:1px solid #e6e9ef}"
    "svg .grid{stroke:#e3e7ee;stroke-width:1}svg .axis,svg .label,svg .value,svg .legend text,"
    "svg .empty{font:12px system-ui,sans-serif;fill:#4a5263}"
    "svg .line-planned{fill:none;stroke:#2f6fde;stroke-width:2;stroke-dasharray:6 4}"
    "svg .line-actual{fill:none;stroke:#e0731b;stroke-width:2}"
    "svg circle.planned,svg .key-planned{fill:#2f6fde}svg circle.actual,svg .key-actual{fill:"
    "#e0731b}svg .bar.good{fill:#2e9c5a}svg .bar.warn{fill:#e0a21b}svg .bar.bad{fill:#d64545}"
    "svg rect.deferred{fill:#e0a21b}svg rect.shaping{fill:#c0262d}"
    "svg .bar.nopolicy{fill:#e6e9ef;stroke:#b8bfcc;stroke-dasharray:4 3}"
    "svg text.inside{fill:#5b6475;font-style:italic}"
    "svg rect.delivered{fill:#4caf78}svg rect.bounced{fill:#d64545}svg rect.expired{fill:#6b2a8c}"
    "p.note{white-space:pre-wrap;color:#5b6475;font-size:12px}";

static void html_table(struct strbuf *out, const struct report_table *t)
{
    strbuf_puts(out, "<h3>");
    report_html_escape(out, t->title);
    strbuf_puts(out, "</h3>\n<div class=\"table\"><table data-table=\"");
    report_html_escape(out, t->name);
    strbuf_puts(out, "\"><thead><tr>");
    for (size_t c = 0; c < t->n_cols; c++) {
        /* "spf_temperror" may break after its underscores: narrow columns, no overflow */
        strbuf_puts(out, "<th>");
        for (const char *p = t->cols[c]; *p; p++) {
            char one[2] = {*p, 0};
            report_html_escape(out, one);
            if (*p == '_') strbuf_puts(out, "<wbr>");
        }
        strbuf_puts(out, "</th>");
    }
    strbuf_puts(out, "</tr></thead><tbody>\n");
    size_t state = report_col(t, "state");
    for (size_t r = 0; r < t->n_rows; r++) {
        int alert = state != (size_t)-1 && strcmp(report_cell(t, r, state), "in queue") != 0;
        strbuf_puts(out, alert ? "<tr class=\"alert\">" : "<tr>");
        for (size_t c = 0; c < t->n_cols; c++) {
            strbuf_puts(out, t->kinds[c] == REPORT_COL_TEXT ? "<td>" : "<td class=\"num\">");
            report_html_escape(out, report_cell(t, r, c));
            strbuf_puts(out, "</td>");
        }
        strbuf_puts(out, "</tr>\n");
    }
    if (t->n_rows == 0)
        strbuf_printf(out, "<tr><td class=\"none\" colspan=\"%zu\">none</td></tr>\n", t->n_cols);
    strbuf_puts(out, "</tbody></table></div>\n");
}

static void html_notes(struct strbuf *out, const struct report_doc *doc)
{
    if (!doc->notes.len) return;
    strbuf_puts(out, "<p class=\"note\">");
    report_html_escape(out, doc->notes.data);
    strbuf_puts(out, "</p>\n");
}

static void html_section(struct strbuf *out, const char *id, const char *title)
{
    strbuf_printf(out, "<h2 id=\"%s\">", id);
    report_html_escape(out, title);
    strbuf_puts(out, "</h2>\n");
}

/* Writes out and empties it, so a month of tables never sits in memory twice. */
static void html_flush(struct strbuf *out, FILE *f)
{
    fwrite(out->data ? out->data : "", 1, out->len, f);
    strbuf_reset(out);
}

static void html_head(struct strbuf *out, const struct report_ctx *ctx)
{
    char a[32], b[32], now[32];
    strbuf_puts(out, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                     "<title>outrelay report</title><style>");
    strbuf_puts(out, html_style);
    strbuf_puts(out, "</style></head><body>\n<h1>outrelay: alignment, ramp, delivery and "
                     "continuity</h1>\n<p class=\"meta\">");
    strbuf_printf(out, "Records %s .. %s UTC",
                  ctx->opt.since_us ? report_time_text(ctx->opt.since_us, a, sizeof a) : "(start)",
                  ctx->opt.until_us ? report_time_text(ctx->opt.until_us, b, sizeof b) : "(now)");
    if (ctx->opt.domain) {
        strbuf_puts(out, ", domain ");
        report_html_escape(out, ctx->opt.domain);
    }
    if (ctx->opt.egress) {
        strbuf_puts(out, ", egress ");
        report_html_escape(out, ctx->opt.egress);
    }
    strbuf_puts(out, "; ramp ");
    report_html_escape(out, ctx->cfg->ramp.from ? ctx->cfg->ramp.from : "-");
    strbuf_puts(out, " &rarr; ");
    report_html_escape(out, ctx->cfg->ramp.to ? ctx->cfg->ramp.to : "(any other egress)");
    strbuf_printf(out, ". Generated %s UTC.</p>\n",
                  report_time_text(clock_now_us(), now, sizeof now));
    strbuf_puts(out, "<nav>Charts: <a href=\"#outcomes\">outcomes</a><a href=\"#ramp\">ramp</a>"
                     "<a href=\"#deferrals\">deferrals</a><a href=\"#alignment\">alignment</a> "
                     "Tables: <a href=\"#continuity\">"
                     "continuity</a><a href=\"#ramp-tables\">ramp</a><a href=\"#alignment-tables"
                     "\">alignment</a><a href=\"#delivery\">delivery</a><a href=\"#tls\">TLS</a>"
                     "</nav>\n");
}

/* The first line a reader sees: what share of recipients with a final outcome bounced or
 * expired (coloured by severity: under 2 % ok, under 10 % warn, else bad), then continuity.
 * 0 unaccounted is expected, not good news, so only a non-zero count is coloured. */
static void html_headline(struct strbuf *out, const struct report_table *acc,
                          const struct report_table *delivery)
{
    double delivered = 0, failed = 0;
    size_t cd = report_col(delivery, "delivered"), cb = report_col(delivery, "bounced");
    size_t cx = report_col(delivery, "expired");
    for (size_t r = 0; r < delivery->n_rows; r++) {
        delivered += report_cell_num(delivery, r, cd);
        failed += report_cell_num(delivery, r, cb) + report_cell_num(delivery, r, cx);
    }
    double final = delivered + failed, share = final > 0 ? 100 * failed / final : 0;
    const char *severity = final == 0 ? "none" : share < 2 ? "ok" : share < 10 ? "warn" : "bad";
    strbuf_printf(out,
                  "<p class=\"big headline\" data-bounce-share=\"%.1f\" data-final=\"%.0f\" "
                  "data-severity=\"%s\">",
                  share, final, severity);
    if (final > 0)
        strbuf_printf(out,
                      "<span class=\"share %s\">%.1f%% bounced</span> (%.0f of %.0f recipients "
                      "bounced or expired, %.0f delivered)",
                      severity, share, failed, final, delivered);
    else
        strbuf_puts(out, "<span class=\"share none\">no recipient has a final outcome yet</span>");
    strbuf_puts(out, "</p>\n");
    if (acc->n_rows == 0) return;
    double unaccounted = report_cell_num(acc, 0, report_col(acc, "unaccounted"));
    strbuf_printf(out,
                  "<p class=\"big\" data-accepted=\"%s\" data-unaccounted=\"%s\">%s accepted, "
                  "%s complete, %s in the queue, <span%s>%s unaccounted</span></p>\n",
                  report_cell(acc, 0, 0), report_cell(acc, 0, 3), report_cell(acc, 0, 0),
                  report_cell(acc, 0, 1), report_cell(acc, 0, 2),
                  unaccounted > 0 ? " class=\"bad\"" : "", report_cell(acc, 0, 3));
}

int report_html_write(struct report_ctx *ctx, FILE *f)
{
    struct report_doc align = {.report = "alignment"}, ramp = {.report = "ramp"};
    struct report_doc delivery = {.report = "delivery"}, cont = {.report = "continuity"};
    struct report_doc tls = {.report = "tls"};
    struct strbuf out = STRBUF_INIT;
    int rc = -1;
    const int parts = 5;
    report_progress(ctx, "html: alignment (parts done)", 0, parts);
    if (report_alignment_build(ctx, &align) < 0) goto done;
    report_progress(ctx, "html: ramp (parts done)", 1, parts);
    if (report_ramp_build(ctx, &ramp) < 0) goto done;
    report_progress(ctx, "html: delivery (parts done)", 2, parts);
    if (report_delivery_build(ctx, &delivery) < 0) goto done;
    report_progress(ctx, "html: continuity (parts done)", 3, parts);
    if (report_continuity_build(ctx, &cont, ctx->opt.message_id != NULL) < 0) goto done;
    report_progress(ctx, "html: TLS (parts done)", 4, parts);
    if (report_tls_build(ctx, &tls) < 0) goto done;
    report_progress(ctx, "html: writing (parts done)", 5, parts);
    report_progress_end(ctx);

    /* the headline and the charts first, so the first screen answers "how is it going" */
    html_head(&out, ctx);
    html_headline(&out, report_doc_find(&cont, "accounting"),
                  report_doc_find(&delivery, "delivery"));
    html_section(&out, "outcomes", "Delivered, deferred, bounced and expired per egress");
    report_chart_outcomes(&out, report_doc_find(&delivery, "delivery"));
    html_section(&out, "ramp", "Ramp: planned vs actual cloud share");
    report_chart_ramp(&out, report_doc_find(&ramp, "hours"));
    html_section(&out, "deferrals", "Deferrals and shaping replies over time");
    report_chart_deferrals(&out, report_doc_find(&ramp, "deferrals"));
    html_section(&out, "alignment", "Alignment: DMARC pass rate per From domain and egress");
    report_chart_alignment(&out, report_doc_find(&align, "summary"));
    html_flush(&out, f);

    html_section(&out, "continuity", "Continuity");
    for (size_t i = 0; i < cont.n_tables; i++)
        html_table(&out, cont.tables[i]);
    html_notes(&out, &cont);

    if (ctx->cfg->ramp.n_groups) {
        html_section(&out, "ramp-groups",
                     "Route groups: planned vs actual share per egress, and the autopilot");
        html_table(&out, report_doc_find(&ramp, "groups"));
        html_table(&out, report_doc_find(&ramp, "autopilot"));
        html_flush(&out, f);
    }

    html_section(&out, "ramp-tables", "Ramp tables");
    static const char *const ramp_tables[] = {"providers", "caps",  "overrides", "shaping",
                                              "deferrals", "hours", "hourly"};
    for (size_t i = 0; i < sizeof ramp_tables / sizeof ramp_tables[0]; i++) {
        html_table(&out, report_doc_find(&ramp, ramp_tables[i]));
        html_flush(&out, f);
    }
    html_notes(&out, &ramp);

    html_section(&out, "alignment-tables", "Alignment tables");
    static const char *const align_tables[] = {"summary", "reasons", "alignment"};
    for (size_t i = 0; i < sizeof align_tables / sizeof align_tables[0]; i++) {
        html_table(&out, report_doc_find(&align, align_tables[i]));
        html_flush(&out, f);
    }
    html_notes(&out, &align);

    html_section(&out, "delivery", "Delivery");
    for (size_t i = 0; i < delivery.n_tables; i++)
        html_table(&out, delivery.tables[i]);
    html_notes(&out, &delivery);

    html_section(&out, "tls", "TLS");
    static const char *const tls_tables[] = {"tls_share", "tls_failures", "tls", "failures"};
    for (size_t i = 0; i < sizeof tls_tables / sizeof tls_tables[0]; i++)
        html_table(&out, report_doc_find(&tls, tls_tables[i]));
    html_notes(&out, &tls);
    strbuf_puts(&out, "</body></html>\n");
    html_flush(&out, f);
    rc = ferror(f) ? -1 : 0;
    if (rc < 0) snprintf(ctx->err, sizeof ctx->err, "write error");
done:
    strbuf_free(&out);
    report_doc_free(&align);
    report_doc_free(&ramp);
    report_doc_free(&delivery);
    report_doc_free(&cont);
    report_doc_free(&tls);
    return rc;
}
