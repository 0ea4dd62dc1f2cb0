/* table.c - the table model every report fills, and the three plain renderers: aligned terminal
 * text, RFC 4180 CSV and JSON (hand-written, escaped per RFC 8259). The HTML renderer lives in
 * html.c. Owns nothing outside the tables it is given; never touches the database. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/util.h"
#include "report/report_core.h"

struct report_table *report_table_add(struct report_doc *doc, const char *name, const char *title,
                                      const char *columns)
{
    struct report_table *t = xcalloc(1, sizeof *t);
    t->name = xstrdup(name);
    t->title = xstrdup(title);
    char *copy = xstrdup(columns), *save = NULL;
    for (char *tok = strtok_r(copy, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
        t->cols = xrealloc(t->cols, (t->n_cols + 1) * sizeof *t->cols);
        t->kinds = xrealloc(t->kinds, (t->n_cols + 1) * sizeof *t->kinds);
        char *colon = strchr(tok, ':');
        enum report_kind kind = REPORT_COL_TEXT;
        if (colon) {
            *colon = '\0';
            kind = colon[1] == 'i' ? REPORT_COL_INT : REPORT_COL_REAL;
        }
        t->cols[t->n_cols] = xstrdup(tok);
        t->kinds[t->n_cols] = kind;
        t->n_cols++;
    }
    free(copy);
    doc->tables = xrealloc(doc->tables, (doc->n_tables + 1) * sizeof *doc->tables);
    doc->tables[doc->n_tables++] = t;
    return t;
}

struct report_table *report_doc_find(const struct report_doc *doc, const char *name)
{
    for (size_t i = 0; i < doc->n_tables; i++)
        if (strcmp(doc->tables[i]->name, name) == 0) return doc->tables[i];
    return NULL;
}

static void report_table_free(struct report_table *t)
{
    for (size_t i = 0; i < t->n_rows * t->n_cols; i++)
        free(t->cells[i]);
    for (size_t i = 0; i < t->n_cols; i++)
        free(t->cols[i]);
    free(t->cells);
    free(t->cols);
    free(t->kinds);
    free(t->name);
    free(t->title);
    free(t);
}

void report_doc_free(struct report_doc *doc)
{
    for (size_t i = 0; i < doc->n_tables; i++)
        report_table_free(doc->tables[i]);
    free(doc->tables);
    strbuf_free(&doc->notes);
    doc->tables = NULL;
    doc->n_tables = 0;
}

void report_row(struct report_table *t)
{
    if (t->n_rows == t->cap_rows) {
        t->cap_rows = t->cap_rows ? t->cap_rows * 2 : 16;
        t->cells = xrealloc(t->cells, t->cap_rows * t->n_cols * sizeof *t->cells);
    }
    memset(t->cells + t->n_rows * t->n_cols, 0, t->n_cols * sizeof *t->cells);
    t->n_rows++;
}

void report_put_at(struct report_table *t, size_t row, size_t col, const char *text)
{
    if (row >= t->n_rows || col >= t->n_cols) return;
    char **cell = &t->cells[row * t->n_cols + col];
    free(*cell);
    *cell = text ? xstrdup(text) : NULL;
}

void report_put(struct report_table *t, size_t col, const char *text)
{
    if (t->n_rows > 0) report_put_at(t, t->n_rows - 1, col, text);
}

void report_puti(struct report_table *t, size_t col, int64_t v)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%lld", (long long)v);
    report_put(t, col, buf);
}

void report_putr_at(struct report_table *t, size_t row, size_t col, double v)
{
    char buf[64];
    snprintf(buf, sizeof buf, "%.1f", isfinite(v) ? v : 0.0);
    report_put_at(t, row, col, buf);
}

void report_putr(struct report_table *t, size_t col, double v)
{
    if (t->n_rows > 0) report_putr_at(t, t->n_rows - 1, col, v);
}

const char *report_cell(const struct report_table *t, size_t row, size_t col)
{
    if (row >= t->n_rows || col >= t->n_cols) return "";
    const char *s = t->cells[row * t->n_cols + col];
    return s ? s : "";
}

double report_cell_num(const struct report_table *t, size_t row, size_t col)
{
    return strtod(report_cell(t, row, col), NULL);
}

size_t report_col(const struct report_table *t, const char *name)
{
    for (size_t i = 0; i < t->n_cols; i++)
        if (strcmp(t->cols[i], name) == 0) return i;
    return (size_t)-1;
}

/* ---- terminal ------------------------------------------------------------------------------ */

/* Display width: UTF-8 continuation bytes take no column. */
static size_t report_width(const char *s)
{
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        n += (*p & 0xC0) != 0x80;
    return n;
}

static void report_pad(FILE *f, size_t n)
{
    while (n-- > 0)
        fputc(' ', f);
}

/* Cells are printed whole except control characters, which would break the layout. */
static void report_put_clean(FILE *f, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        fputc(*p < 0x20 || *p == 0x7f ? '?' : *p, f);
}

static void report_text_table(const struct report_table *t, FILE *f)
{
    fprintf(f, "%s\n", t->title);
    size_t *w = xcalloc(t->n_cols, sizeof *w);
    for (size_t c = 0; c < t->n_cols; c++) {
        w[c] = report_width(t->cols[c]);
        for (size_t r = 0; r < t->n_rows; r++) {
            size_t cw = report_width(report_cell(t, r, c));
            if (cw > w[c]) w[c] = cw;
        }
    }
    for (size_t r = 0; r <= t->n_rows; r++) {
        for (size_t c = 0; c < t->n_cols; c++) {
            const char *s = r == 0 ? t->cols[c] : report_cell(t, r - 1, c);
            size_t pad = w[c] - report_width(s);
            int right = t->kinds[c] != REPORT_COL_TEXT;
            if (c > 0) fputs("  ", f);
            if (right) report_pad(f, pad);
            report_put_clean(f, s);
            if (!right && c + 1 < t->n_cols) report_pad(f, pad);
        }
        fputc('\n', f);
        if (r == 0) {
            for (size_t c = 0; c < t->n_cols; c++) {
                if (c > 0) fputs("  ", f);
                for (size_t i = 0; i < w[c]; i++)
                    fputc('-', f);
            }
            fputc('\n', f);
        }
    }
    if (t->n_rows == 0) fputs("(none)\n", f);
    fputc('\n', f);
    free(w);
}

static void report_window_text(const struct report_options *opt, struct strbuf *out)
{
    char a[32], b[32];
    strbuf_printf(out, "%s .. %s UTC",
                  opt->since_us ? report_time_text(opt->since_us, a, sizeof a) : "(start)",
                  opt->until_us ? report_time_text(opt->until_us, b, sizeof b) : "(now)");
}

void report_render_text(const struct report_doc *doc, const struct report_options *opt, FILE *f)
{
    struct strbuf head = STRBUF_INIT;
    strbuf_printf(&head, "outrelay report %s: ", doc->report);
    report_window_text(opt, &head);
    if (opt->domain) strbuf_printf(&head, ", domain %s", opt->domain);
    if (opt->egress) strbuf_printf(&head, ", egress %s", opt->egress);
    fprintf(f, "%s\n\n", strbuf_str(&head));
    strbuf_free(&head);
    for (size_t i = 0; i < doc->n_tables; i++)
        if (!opt->table || strcmp(opt->table, doc->tables[i]->name) == 0)
            report_text_table(doc->tables[i], f);
    if (doc->notes.len && !opt->table) fputs(strbuf_str(&doc->notes), f);
}

/* ---- CSV ----------------------------------------------------------------------------------- */

void report_csv_field(FILE *f, const char *s)
{
    if (!s) return;
    if (strpbrk(s, ",\"\r\n") == NULL) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (const char *p = s; *p; p++) {
        if (*p == '"') fputc('"', f);
        fputc(*p, f);
    }
    fputc('"', f);
}

int report_render_csv(const struct report_doc *doc, const struct report_options *opt, FILE *f,
                      char *err, size_t errlen)
{
    const struct report_table *t = opt->table      ? report_doc_find(doc, opt->table)
                                   : doc->n_tables ? doc->tables[0]
                                                   : NULL;
    if (!t) {
        struct strbuf names = STRBUF_INIT;
        for (size_t i = 0; i < doc->n_tables; i++)
            strbuf_printf(&names, "%s%s", i ? ", " : "", doc->tables[i]->name);
        snprintf(err, errlen, "report %s has no table \"%s\" (tables: %s)", doc->report,
                 opt->table ? opt->table : "", strbuf_str(&names));
        strbuf_free(&names);
        return -1;
    }
    for (size_t r = 0; r <= t->n_rows; r++) {
        for (size_t c = 0; c < t->n_cols; c++) {
            if (c > 0) fputc(',', f);
            report_csv_field(f, r == 0 ? t->cols[c] : report_cell(t, r - 1, c));
        }
        fputs("\r\n", f);
    }
    return 0;
}

/* ---- JSON ---------------------------------------------------------------------------------- */

void report_json_string(struct strbuf *out, const char *s)
{
    strbuf_puts(out, "\"");
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        switch (*p) {
        case '"':
            strbuf_puts(out, "\\\"");
            break;
        case '\\':
            strbuf_puts(out, "\\\\");
            break;
        case '\n':
            strbuf_puts(out, "\\n");
            break;
        case '\r':
            strbuf_puts(out, "\\r");
            break;
        case '\t':
            strbuf_puts(out, "\\t");
            break;
        default:
            if (*p < 0x20 || *p == 0x7f)
                strbuf_printf(out, "\\u%04x", *p);
            else
                strbuf_append(out, p, 1);
        }
    }
    strbuf_puts(out, "\"");
}

/* A number column's cell as a JSON number (null when empty or not a number). */
static void report_json_number(struct strbuf *out, const char *s)
{
    char *end = NULL;
    double v = strtod(s, &end);
    if (!*s || *end || !isfinite(v))
        strbuf_puts(out, "null");
    else
        strbuf_puts(out, s);
}

void report_render_json(const struct report_doc *doc, const struct report_options *opt, FILE *f)
{
    struct strbuf out = STRBUF_INIT;
    char a[32];
    strbuf_puts(&out, "{\"report\": ");
    report_json_string(&out, doc->report);
    strbuf_puts(&out, ", \"since\": ");
    if (opt->since_us)
        report_json_string(&out, report_time_text(opt->since_us, a, sizeof a));
    else
        strbuf_puts(&out, "null");
    strbuf_puts(&out, ", \"until\": ");
    if (opt->until_us)
        report_json_string(&out, report_time_text(opt->until_us, a, sizeof a));
    else
        strbuf_puts(&out, "null");
    strbuf_puts(&out, ", \"domain\": ");
    if (opt->domain)
        report_json_string(&out, opt->domain);
    else
        strbuf_puts(&out, "null");
    strbuf_puts(&out, ", \"egress\": ");
    if (opt->egress)
        report_json_string(&out, opt->egress);
    else
        strbuf_puts(&out, "null");
    strbuf_puts(&out, ",\n \"tables\": {");
    int first_table = 1;
    for (size_t i = 0; i < doc->n_tables; i++) {
        const struct report_table *t = doc->tables[i];
        if (opt->table && strcmp(opt->table, t->name) != 0) continue;
        strbuf_puts(&out, first_table ? "\n  " : ",\n  ");
        first_table = 0;
        report_json_string(&out, t->name);
        strbuf_puts(&out, ": [");
        for (size_t r = 0; r < t->n_rows; r++) {
            strbuf_puts(&out, r ? ",\n    {" : "\n    {");
            for (size_t c = 0; c < t->n_cols; c++) {
                if (c) strbuf_puts(&out, ", ");
                report_json_string(&out, t->cols[c]);
                strbuf_puts(&out, ": ");
                if (t->kinds[c] == REPORT_COL_TEXT)
                    report_json_string(&out, report_cell(t, r, c));
                else
                    report_json_number(&out, report_cell(t, r, c));
            }
            strbuf_puts(&out, "}");
        }
        strbuf_puts(&out, "]");
        if (out.len > 1 << 20) { /* keep memory flat on big tables */
            fwrite(out.data, 1, out.len, f);
            strbuf_reset(&out);
        }
    }
    strbuf_puts(&out, "}}\n");
    fwrite(out.data, 1, out.len, f);
    strbuf_free(&out);
}

void report_html_escape(struct strbuf *out, const char *s)
{
    for (const char *p = s ? s : ""; *p; p++) {
        switch (*p) {
        case '<':
            strbuf_puts(out, "&lt;");
            break;
        case '>':
            strbuf_puts(out, "&gt;");
            break;
        case '&':
            strbuf_puts(out, "&amp;");
            break;
        case '"':
            strbuf_puts(out, "&quot;");
            break;
        case '\'':
            strbuf_puts(out, "&#39;");
            break;
        default:
            strbuf_append(out, p, 1);
        }
    }
}

const char *report_time_text(int64_t ts_us, char *buf, size_t size)
{
    time_t t = (time_t)(ts_us / 1000000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, size, "%Y-%m-%d %H:%M:%S", &tm);
    return buf;
}
