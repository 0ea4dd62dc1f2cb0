/* charts.c - inline SVG charts for the HTML report, drawn from report tables: the ramp's planned
 * vs actual share over time (lines), DMARC pass rate per domain x egress (bars; "no policy" in
 * grey where DMARC gave no verdict), deferrals and shaping replies per hour (bars), delivered /
 * deferred / bounced / expired per egress x provider (stacked bars). Every point or bar is an
 * element with data-* attributes and a <title> carrying its numbers, so a browser test (or a
 * reader's tooltip) can read them. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/util.h"
#include "report/report_core.h"

#define CHART_W 1000
#define CHART_LEFT 60
#define CHART_RIGHT 20
#define CHART_TOP 20
#define CHART_BOTTOM 40

/* "2026-03-01 14:00" -> unix seconds (UTC); -1 when unreadable. */
static int64_t chart_hour_time(const char *text)
{
    int y, mo, d, h;
    if (sscanf(text, "%4d-%2d-%2d %2d", &y, &mo, &d, &h) != 4) return -1;
    struct tm tm = {.tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d, .tm_hour = h};
    return (int64_t)timegm(&tm);
}

static void chart_attr(struct strbuf *out, const char *name, const char *value)
{
    strbuf_printf(out, " %s=\"", name);
    report_html_escape(out, value);
    strbuf_puts(out, "\"");
}

static void chart_open(struct strbuf *out, const char *id, int height, const char *label)
{
    strbuf_printf(out,
                  "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" id=\"%s\" "
                  "viewBox=\"0 0 %d %d\" width=\"%d\" height=\"%d\" role=\"img\"",
                  id, CHART_W, height, CHART_W, height);
    chart_attr(out, "aria-label", label);
    strbuf_puts(out, ">\n");
}

static void chart_empty(struct strbuf *out, const char *id, const char *label)
{
    chart_open(out, id, 60, label);
    strbuf_puts(out, "<text x=\"20\" y=\"35\" class=\"empty\">no data in this window</text>\n"
                     "</svg>\n");
}

/* Horizontal grid lines and y labels for 0..max at y0 (bottom) .. y1 (top). */
static void chart_y_axis(struct strbuf *out, double max, int y0, int y1, const char *unit)
{
    for (int i = 0; i <= 4; i++) {
        double v = max * i / 4;
        double y = y0 - (double)(y0 - y1) * i / 4;
        strbuf_printf(out,
                      "<line class=\"grid\" x1=\"%d\" x2=\"%d\" y1=\"%.1f\" y2=\"%.1f\"/>"
                      "<text class=\"axis\" x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%g%s</text>\n",
                      CHART_LEFT, CHART_W - CHART_RIGHT, y, y, CHART_LEFT - 6, y + 4, v, unit);
    }
}

/* x labels: the first, last and a few hours in between. */
static void chart_x_labels(struct strbuf *out, int64_t t0, int64_t t1, int y)
{
    int n = t1 > t0 ? 4 : 0;
    for (int i = 0; i <= n; i++) {
        int64_t t = t0 + (t1 - t0) * i / (n ? n : 1);
        time_t tt = (time_t)t;
        struct tm tm;
        char label[32];
        gmtime_r(&tt, &tm);
        strftime(label, sizeof label, "%Y-%m-%d %H:00", &tm);
        double x = CHART_LEFT + (double)(CHART_W - CHART_LEFT - CHART_RIGHT) *
                                    (t1 > t0 ? (double)(t - t0) / (double)(t1 - t0) : 0.5);
        strbuf_printf(
            out, "<text class=\"axis\" x=\"%.1f\" y=\"%d\" text-anchor=\"%s\">%s</text>\n", x, y,
            i == 0 && n   ? "start"
            : i == n && n ? "end"
                          : "middle",
            label);
    }
}

static double chart_x(int64_t t, int64_t t0, int64_t t1)
{
    double span = (double)(CHART_W - CHART_LEFT - CHART_RIGHT);
    return CHART_LEFT + (t1 > t0 ? span * (double)(t - t0) / (double)(t1 - t0) : span / 2);
}

/* hours: columns hour, planned_pct, actual_pct, routed. */
void report_chart_ramp(struct strbuf *out, const struct report_table *hours)
{
    const char *label = "Ramp: planned vs actual cloud share per hour";
    size_t ch = report_col(hours, "hour"), cp = report_col(hours, "planned_pct");
    size_t ca = report_col(hours, "actual_pct"), cr = report_col(hours, "routed");
    if (hours->n_rows == 0) {
        chart_empty(out, "chart-ramp", label);
        return;
    }
    int height = 320, y0 = height - CHART_BOTTOM, y1 = CHART_TOP;
    int64_t t0 = chart_hour_time(report_cell(hours, 0, ch));
    int64_t t1 = chart_hour_time(report_cell(hours, hours->n_rows - 1, ch));
    chart_open(out, "chart-ramp", height, label);
    chart_y_axis(out, 100, y0, y1, "%");
    chart_x_labels(out, t0, t1, height - 12);
    struct strbuf planned = STRBUF_INIT, actual = STRBUF_INIT, points = STRBUF_INIT;
    /* a month of hours: the lines carry the shape, dots would only blur them */
    double dot = hours->n_rows > 100 ? 0 : 3;
    for (size_t r = 0; r < hours->n_rows; r++) {
        const char *hour = report_cell(hours, r, ch);
        double x = chart_x(chart_hour_time(hour), t0, t1);
        double p = report_cell_num(hours, r, cp), a = report_cell_num(hours, r, ca);
        double yp = y0 - (y0 - y1) * p / 100, ya = y0 - (y0 - y1) * a / 100;
        strbuf_printf(&planned, "%s%.1f,%.1f", r ? " " : "", x, yp);
        strbuf_printf(&actual, "%s%.1f,%.1f", r ? " " : "", x, ya);
        strbuf_puts(&points, "<g class=\"point\"");
        chart_attr(&points, "data-hour", hour);
        chart_attr(&points, "data-planned", report_cell(hours, r, cp));
        chart_attr(&points, "data-actual", report_cell(hours, r, ca));
        chart_attr(&points, "data-routed", report_cell(hours, r, cr));
        strbuf_printf(&points,
                      "><circle class=\"planned\" cx=\"%.1f\" cy=\"%.1f\" r=\"%g\"/>"
                      "<circle class=\"actual\" cx=\"%.1f\" cy=\"%.1f\" r=\"%g\"/><title>",
                      x, yp, dot, x, ya, dot);
        report_html_escape(&points, hour);
        strbuf_printf(&points, " UTC: planned %s%%, actual %s%% of %s recipients</title></g>\n",
                      report_cell(hours, r, cp), report_cell(hours, r, ca),
                      report_cell(hours, r, cr));
    }
    strbuf_printf(out,
                  "<polyline class=\"line-planned\" points=\"%s\"/>\n"
                  "<polyline class=\"line-actual\" points=\"%s\"/>\n%s",
                  planned.data, actual.data, points.data);
    strbuf_printf(out,
                  "<g class=\"legend\"><rect x=\"%d\" y=\"4\" width=\"14\" height=\"4\" "
                  "class=\"key-planned\"/><text x=\"%d\" y=\"10\">planned</text>"
                  "<rect x=\"%d\" y=\"4\" width=\"14\" height=\"4\" class=\"key-actual\"/>"
                  "<text x=\"%d\" y=\"10\">actual</text></g>\n</svg>\n",
                  CHART_LEFT, CHART_LEFT + 18, CHART_LEFT + 90, CHART_LEFT + 108);
    strbuf_free(&planned);
    strbuf_free(&actual);
    strbuf_free(&points);
}

#define CHART_MAX_BARS 60

/* The pairs a reader must look at first: most predicted DMARC failures, then the busiest. */
static int chart_by_failures_desc(const void *a, const void *b, void *arg)
{
    const struct report_table *t = arg;
    size_t cm = report_col(t, "messages"), cf = report_col(t, "dmarc_fail");
    size_t i = *(const size_t *)a, j = *(const size_t *)b;
    double fx = report_cell_num(t, i, cf), fy = report_cell_num(t, j, cf);
    if (fx != fy) return fx < fy ? 1 : -1;
    double x = report_cell_num(t, i, cm), y = report_cell_num(t, j, cm);
    if (x != y) return x < y ? 1 : -1;
    return *(const size_t *)a < *(const size_t *)b ? -1 : 1;
}

/* Vertical grid lines at 0, 25, 50, 75 and 100 % of width from x = left, from y_top down to
 * 24 px above `bottom`, with their labels 8 px above it: the scale of the horizontal bar charts. */
static void percent_grid(struct strbuf *out, int left, int width, int y_top, int bottom)
{
    for (int i = 0; i <= 4; i++) {
        double x = left + width * i / 4.0;
        strbuf_printf(
            out,
            "<line class=\"grid\" x1=\"%.1f\" x2=\"%.1f\" y1=\"%d\" y2=\"%d\"/>"
            "<text class=\"axis\" x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%d%%</text>\n",
            x, x, y_top, bottom - 24, x, bottom - 8, i * 25);
    }
}

static int chart_by_row(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return (x > y) - (x < y);
}

/* summary: columns domain, egress, messages, dmarc_pass, dmarc_fail, pass_rate. The
 * CHART_MAX_BARS pairs with the most DMARC failures (then the busiest), in table order. Green
 * from 99 %, amber from 90 %: a month of 99.8 % is good news, not a warning. */
void report_chart_alignment(struct strbuf *out, const struct report_table *summary)
{
    const char *label = "DMARC pass rate per From domain and egress";
    if (summary->n_rows == 0) {
        chart_empty(out, "chart-alignment", label);
        return;
    }
    size_t n = summary->n_rows;
    size_t *rows = xmalloc(n * sizeof *rows);
    for (size_t i = 0; i < n; i++)
        rows[i] = i;
    if (n > CHART_MAX_BARS) {
        qsort_r(rows, n, sizeof *rows, chart_by_failures_desc, (void *)summary);
        n = CHART_MAX_BARS;
        qsort(rows, n, sizeof *rows, chart_by_row);
    }
    size_t cd = report_col(summary, "domain"), ce = report_col(summary, "egress");
    size_t cm = report_col(summary, "messages"), cp = report_col(summary, "dmarc_pass");
    size_t cr = report_col(summary, "pass_rate");
    size_t cpass = report_col(summary, "dmarc_pass"), cfail = report_col(summary, "dmarc_fail");
    int bar = 18, gap = 6, left = 300, top = 24;
    int height = top + (int)n * (bar + gap) + 30;
    chart_open(out, "chart-alignment", height, label);
    int width = CHART_W - left - 80;
    percent_grid(out, left, width, top - 4, height);
    for (size_t k = 0; k < n; k++) {
        size_t r = rows[k];
        double rate = report_cell_num(summary, r, cr);
        double y = top + (double)k * (bar + gap);
        /* no pass and no fail: the domain publishes no DMARC policy (or DNS gave no verdict);
         * that is not a 0 % pass rate */
        int no_policy =
            report_cell_num(summary, r, cpass) == 0 && report_cell_num(summary, r, cfail) == 0;
        const char *cls = no_policy    ? "bar nopolicy"
                          : rate >= 99 ? "bar good"
                          : rate >= 90 ? "bar warn"
                                       : "bar bad";
        double bar_w = no_policy ? width : width * rate / 100 < 1 ? 1 : width * rate / 100;
        strbuf_printf(out,
                      "<g class=\"pair\"><text class=\"label\" x=\"%d\" y=\"%.1f\" "
                      "text-anchor=\"end\">",
                      left - 8, y + bar - 5);
        report_html_escape(out, report_cell(summary, r, cd));
        strbuf_puts(out, " / ");
        report_html_escape(out, report_cell(summary, r, ce));
        strbuf_printf(out,
                      "</text><rect class=\"%s\" x=\"%d\" y=\"%.1f\" width=\"%.1f\" "
                      "height=\"%d\"",
                      cls, left, y, bar_w, bar);
        chart_attr(out, "data-domain", report_cell(summary, r, cd));
        chart_attr(out, "data-egress", report_cell(summary, r, ce));
        chart_attr(out, "data-pass-rate", report_cell(summary, r, cr));
        chart_attr(out, "data-messages", report_cell(summary, r, cm));
        chart_attr(out, "data-dmarc-pass", report_cell(summary, r, cp));
        chart_attr(out, "data-policy", no_policy ? "none" : "published");
        strbuf_puts(out, "><title>");
        report_html_escape(out, report_cell(summary, r, cd));
        strbuf_puts(out, " via ");
        report_html_escape(out, report_cell(summary, r, ce));
        if (no_policy)
            strbuf_printf(out,
                          ": no DMARC verdict for %s messages (no policy published)</title>"
                          "</rect>",
                          report_cell(summary, r, cm));
        else
            strbuf_printf(out, ": DMARC pass %s of %s (%s%%)</title></rect>",
                          report_cell(summary, r, cp), report_cell(summary, r, cm),
                          report_cell(summary, r, cr));
        if (no_policy)
            strbuf_printf(out,
                          "<text class=\"value inside\" x=\"%d\" y=\"%.1f\">no policy "
                          "(%s messages)</text></g>\n",
                          left + 8, y + bar - 5, report_cell(summary, r, cm));
        else
            strbuf_printf(out, "<text class=\"value\" x=\"%.1f\" y=\"%.1f\">%s%%</text></g>\n",
                          left + width * rate / 100 + 6, y + bar - 5, report_cell(summary, r, cr));
    }
    if (summary->n_rows > n)
        strbuf_printf(out,
                      "<text class=\"axis\" x=\"%d\" y=\"14\">the %zu pairs with the most DMARC "
                      "failures of %zu; all are in the table</text>\n",
                      left, n, summary->n_rows);
    strbuf_puts(out, "</svg>\n");
    free(rows);
}

/* deferrals: columns hour, deferred, shaping. Bars on a time axis. */
void report_chart_deferrals(struct strbuf *out, const struct report_table *deferrals)
{
    const char *label = "Deferrals and shaping replies per hour";
    if (deferrals->n_rows == 0) {
        chart_empty(out, "chart-deferrals", label);
        return;
    }
    size_t ch = report_col(deferrals, "hour"), cd = report_col(deferrals, "deferred");
    size_t cs = report_col(deferrals, "shaping");
    double max = 1;
    for (size_t r = 0; r < deferrals->n_rows; r++) {
        double d = report_cell_num(deferrals, r, cd), s = report_cell_num(deferrals, r, cs);
        if (d > max) max = d;
        if (s > max) max = s;
    }
    /* four grid steps of 1, 2 or 5 x 10^k */
    double step = 1;
    while (step * 4 < max) {
        if (step * 8 >= max) {
            step *= 2;
            break;
        }
        if (step * 20 >= max) {
            step *= 5;
            break;
        }
        step *= 10;
    }
    double scale = step * 4;
    int height = 280, y0 = height - CHART_BOTTOM, y1 = CHART_TOP;
    int64_t t0 = chart_hour_time(report_cell(deferrals, 0, ch));
    int64_t t1 = chart_hour_time(report_cell(deferrals, deferrals->n_rows - 1, ch));
    double hours = t1 > t0 ? (double)(t1 - t0) / 3600 + 1 : 1;
    double slot = (CHART_W - CHART_LEFT - CHART_RIGHT) / hours;
    double w = slot / 2 > 12 ? 12 : slot / 2 < 0.6 ? 0.6 : slot / 2;
    chart_open(out, "chart-deferrals", height, label);
    chart_y_axis(out, scale, y0, y1, "");
    chart_x_labels(out, t0, t1, height - 12);
    for (size_t r = 0; r < deferrals->n_rows; r++) {
        const char *hour = report_cell(deferrals, r, ch);
        double x = chart_x(chart_hour_time(hour), t0, t1) - w;
        double d = report_cell_num(deferrals, r, cd), s = report_cell_num(deferrals, r, cs);
        double hd = (y0 - y1) * d / scale, hs = (y0 - y1) * s / scale;
        strbuf_puts(out, "<g class=\"hour\"");
        chart_attr(out, "data-hour", hour);
        chart_attr(out, "data-deferred", report_cell(deferrals, r, cd));
        chart_attr(out, "data-shaping", report_cell(deferrals, r, cs));
        strbuf_printf(out,
                      "><rect class=\"deferred\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" "
                      "height=\"%.1f\"/><rect class=\"shaping\" x=\"%.1f\" y=\"%.1f\" "
                      "width=\"%.1f\" height=\"%.1f\"/><title>",
                      x, y0 - hd, w, hd, x + w, y0 - hs, w, hs);
        report_html_escape(out, hour);
        strbuf_printf(out, " UTC: %s deferred, %s shaping replies</title></g>\n",
                      report_cell(deferrals, r, cd), report_cell(deferrals, r, cs));
    }
    strbuf_printf(out,
                  "<g class=\"legend\"><rect x=\"%d\" y=\"2\" width=\"10\" height=\"10\" "
                  "class=\"deferred\"/><text x=\"%d\" y=\"11\">deferred</text>"
                  "<rect x=\"%d\" y=\"2\" width=\"10\" height=\"10\" class=\"shaping\"/>"
                  "<text x=\"%d\" y=\"11\">shaping replies</text></g>\n</svg>\n",
                  CHART_LEFT, CHART_LEFT + 14, CHART_LEFT + 90, CHART_LEFT + 104);
}

/* delivery: columns egress, provider, delivered, deferred, bounced, expired. One stacked bar
 * per egress x provider (the busiest CHART_MAX_BARS), each part scaled to the row's total, so a
 * row that only bounced is one red bar whatever its size; the total is written beside it. */
void report_chart_outcomes(struct strbuf *out, const struct report_table *delivery)
{
    const char *label = "Delivered, deferred, bounced and expired per egress and provider";
    static const char *const parts[] = {"delivered", "deferred", "bounced", "expired"};
    size_t cols[4];
    for (int i = 0; i < 4; i++)
        cols[i] = report_col(delivery, parts[i]);
    size_t ce = report_col(delivery, "egress"), cp = report_col(delivery, "provider");
    if (delivery->n_rows == 0) {
        chart_empty(out, "chart-outcomes", label);
        return;
    }
    size_t n = delivery->n_rows < CHART_MAX_BARS ? delivery->n_rows : CHART_MAX_BARS;
    int bar = 18, gap = 6, left = 300, top = 28;
    int axis = top + (int)n * (bar + gap) + 30, height = axis + 18; /* a note below the axis */
    int width = CHART_W - left - 150;
    chart_open(out, "chart-outcomes", height, label);
    percent_grid(out, left, width, top - 4, axis);
    for (size_t r = 0; r < n; r++) {
        double v[4], total = 0;
        for (int i = 0; i < 4; i++)
            total += v[i] = report_cell_num(delivery, r, cols[i]);
        double y = top + (double)r * (bar + gap), x = left;
        strbuf_puts(out, "<g class=\"outcome\"");
        chart_attr(out, "data-egress", report_cell(delivery, r, ce));
        chart_attr(out, "data-provider", report_cell(delivery, r, cp));
        for (int i = 0; i < 4; i++) {
            char name[32];
            snprintf(name, sizeof name, "data-%s", parts[i]);
            chart_attr(out, name, report_cell(delivery, r, cols[i]));
        }
        strbuf_printf(out, "><text class=\"label\" x=\"%d\" y=\"%.1f\" text-anchor=\"end\">",
                      left - 8, y + bar - 5);
        if (!strcmp(report_cell(delivery, r, ce), "-")) {
            strbuf_puts(out, "before sending (alignment policy)");
        } else {
            report_html_escape(out, report_cell(delivery, r, ce));
            strbuf_puts(out, " / ");
            report_html_escape(out, report_cell(delivery, r, cp));
        }
        strbuf_puts(out, "</text>");
        for (int i = 0; i < 4 && total > 0; i++) {
            double w = width * v[i] / total;
            if (v[i] <= 0) continue;
            strbuf_printf(out,
                          "<rect class=\"%s\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" "
                          "height=\"%d\"><title>",
                          parts[i], x, y, w < 1 ? 1 : w, bar);
            report_html_escape(out, report_cell(delivery, r, ce));
            strbuf_puts(out, " / ");
            report_html_escape(out, report_cell(delivery, r, cp));
            strbuf_printf(out, ": %s %s (%.1f%%)</title></rect>", report_cell(delivery, r, cols[i]),
                          parts[i], 100 * v[i] / total);
            x += w;
        }
        strbuf_printf(out, "<text class=\"value\" x=\"%d\" y=\"%.1f\">%.0f</text></g>\n",
                      left + width + 6, y + bar - 5, total);
    }
    int lx = left;
    strbuf_puts(out, "<g class=\"legend\">");
    for (int i = 0; i < 4; i++, lx += 100)
        strbuf_printf(out,
                      "<rect x=\"%d\" y=\"4\" width=\"10\" height=\"10\" class=\"%s\"/>"
                      "<text x=\"%d\" y=\"13\">%s</text>",
                      lx, parts[i], lx + 14, parts[i]);
    strbuf_printf(out,
                  "<text x=\"%d\" y=\"13\">total</text></g>\n<text class=\"axis\" x=\"%d\" "
                  "y=\"%d\">delivered, bounced, expired: recipients; deferred: attempts "
                  "answered 4xx</text>\n",
                  left + width + 6, 20, height - 6);
    if (delivery->n_rows > n)
        strbuf_printf(out, "<text class=\"axis\" x=\"20\" y=\"13\">first %zu of %zu rows</text>\n",
                      n, delivery->n_rows);
    strbuf_puts(out, "</svg>\n");
}
