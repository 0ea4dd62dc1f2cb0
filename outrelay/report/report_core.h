/* report_core.h - what the report modules share: options, the read-only database handle
 * and the filter SQL (report_core.c), the table model every report fills (report_table, table.c)
 * and the renderers that print it (text, CSV, JSON, HTML). One report = one report_doc of named
 * tables; the first is the main one. Builders use the core and the tables; only report.c and
 * html.c call builders. Single-threaded; every string a table holds is owned by the table. */
#ifndef OUTRELAY_REPORT_CORE_H
#define OUTRELAY_REPORT_CORE_H

#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/strbuf.h"

struct config;

enum report_format { REPORT_TEXT, REPORT_CSV, REPORT_JSON };

struct report_options {
    int64_t since_us, until_us; /* [since, until); 0 = open */
    const char *domain;         /* sending domain, lower case; NULL = all */
    const char *egress;         /* NULL = all */
    const char *message_id;     /* continuity */
    const char *export_format;  /* export: "pmta" */
    const char *output;         /* -o FILE; NULL = stdout */
    const char *table;          /* --table NAME: which table --csv prints / text shows */
    enum report_format format;
    int window_given;    /* --since or --until was given */
    int progress;        /* stderr is a terminal: show progress of long jobs */
    int mismatches_only; /* rua: only rows where receivers disagree with our prediction */
    char **records;      /* --records: files to merge (report_sources_add); none = <state> */
    size_t n_records;
};

/* One records file a report reads, attached as r<index>, and its instance's name. */
struct report_source {
    char *file;
    char *instance;
};

struct report_ctx {
    const struct config *cfg;
    sqlite3 *db;
    int has_rua;                   /* rua_reports exists (aggregate reports were imported) */
    struct report_source *sources; /* what report_open attached */
    size_t n_sources;
    struct report_options opt;
    char err[512];
};

/* ---- tables -------------------------------------------------------------------------------- */

enum report_kind { REPORT_COL_TEXT, REPORT_COL_INT, REPORT_COL_REAL };

struct report_table {
    char *name;  /* machine name: JSON key, --table NAME */
    char *title; /* what a reader sees above it */
    size_t n_cols;
    char **cols;
    enum report_kind *kinds;
    size_t n_rows, cap_rows;
    char **cells; /* n_rows * n_cols; NULL = empty */
};

struct report_doc {
    const char *report; /* "alignment", ... */
    struct report_table **tables;
    size_t n_tables;
    struct strbuf notes; /* free text printed under the tables (terminal, HTML) */
};

/* columns: space-separated names; "name:i" integer, "name:r" real (1 decimal), else text.
 * The table is appended to doc, which owns it. */
struct report_table *report_table_add(struct report_doc *doc, const char *name, const char *title,
                                      const char *columns);
struct report_table *report_doc_find(const struct report_doc *doc, const char *name);
void report_doc_free(struct report_doc *doc);
/* Starts a new row (all cells empty); the put calls fill the last row. */
void report_row(struct report_table *t);
void report_put(struct report_table *t, size_t col, const char *text); /* NULL = empty */
void report_puti(struct report_table *t, size_t col, int64_t v);
void report_putr(struct report_table *t, size_t col, double v);
/* The same for any row. */
void report_put_at(struct report_table *t, size_t row, size_t col, const char *text);
void report_putr_at(struct report_table *t, size_t row, size_t col, double v);
/* The cell text ("" when empty) and its number (0 when empty). */
const char *report_cell(const struct report_table *t, size_t row, size_t col);
double report_cell_num(const struct report_table *t, size_t row, size_t col);
/* Column index by name, or (size_t)-1. */
size_t report_col(const struct report_table *t, const char *name);

/* Renderers. text: every table (or only opt->table), aligned; csv: one table, RFC 4180;
 * json: {"report":..., "since":..., "until":..., "tables": {name: [ {col: value} ]}}. */
void report_render_text(const struct report_doc *doc, const struct report_options *opt, FILE *f);
int report_render_csv(const struct report_doc *doc, const struct report_options *opt, FILE *f,
                      char *err, size_t errlen);
void report_render_json(const struct report_doc *doc, const struct report_options *opt, FILE *f);
void report_json_string(struct strbuf *out, const char *s);
void report_csv_field(FILE *f, const char *s);
void report_html_escape(struct strbuf *out, const char *s);

/* ---- database and shared SQL pieces (report_core.c) ----------------------------------------- */

/* sources.c. report_open attaches <state>/records.db, or every opt.records file, read-only to
 * ctx->db, each upgraded in place first when older (records_upgrade; a newer one is refused),
 * and makes `events` a TEMP VIEW over all of them with one more column, instance (the name the
 * file's `cluster` records give, else its state directory's (the parent's when that is called
 * state), else the file's name without .db).
 * A queue id is unique within one instance only: join rows of a message on instance too.
 * 0 / -1 with ctx->err; report_close either way. */
int report_open(struct report_ctx *ctx);
void report_close(struct report_ctx *ctx);
/* --records ARG: a file, or a directory (each DIR/NAME/records.db or DIR/NAME/state/records.db,
 * and each DIR/NAME.db, in name order). 0 / -1. */
int report_sources_add(struct report_options *opt, const char *arg, char *err, size_t errlen);
void report_sources_free(struct report_options *opt);
/* When --records was given: appends the table "instances" (instance, file) to doc. */
struct report_doc;
void report_sources_table(const struct report_ctx *ctx, struct report_doc *doc);

/* Appends " AND <time window> [AND domain] [AND egress]" over events table alias `a` (may be
 * ""), binding nothing: values go in as parameters ?101 since, ?102 until, ?103 domain, ?104
 * egress (bind with report_bind_filters). domain_expr: the SQL giving the row's sending domain
 * (e.g. "from_domain"), NULL to ignore --domain. */
void report_sql_filters(struct strbuf *sql, const struct report_ctx *ctx, const char *alias,
                        const char *domain_expr, int use_egress);
void report_bind_filters(sqlite3_stmt *st, const struct report_ctx *ctx);
/* Prepares sql; on failure fills ctx->err and returns NULL. */
sqlite3_stmt *report_prepare(struct report_ctx *ctx, const char *sql);
/* The sending domain of an envelope sender column. */
#define REPORT_SENDER_DOMAIN_SQL(col) "lower(substr(" col ", instr(" col ", '@') + 1))"

/* "2026-03-01 14:05:09" UTC. buf >= 32 bytes. */
const char *report_time_text(int64_t ts_us, char *buf, size_t size);
const char *report_text_col(sqlite3_stmt *st, int col); /* "" for NULL */
/* Progress on stderr when opt->progress: "what: done/total (pct%)", throttled. */
void report_progress(const struct report_ctx *ctx, const char *what, uint64_t done, uint64_t total);
void report_progress_end(const struct report_ctx *ctx);

/* ---- the reports (fill doc; 0 / -1 with ctx->err) ------------------------------------------- */

int report_alignment_build(struct report_ctx *ctx, struct report_doc *doc);
int report_ramp_build(struct report_ctx *ctx, struct report_doc *doc);
int report_delivery_build(struct report_ctx *ctx, struct report_doc *doc);
/* trails: include every event of the window's messages (or of --message-id). */
int report_continuity_build(struct report_ctx *ctx, struct report_doc *doc, int trails);
/* tls.c: `report tls` (tables tls, failures) and `report tlsrpt` (RFC 8460 JSON of --domain) */
int report_tls_build(struct report_ctx *ctx, struct report_doc *doc);
int report_tlsrpt_write(struct report_ctx *ctx, FILE *out);
int report_export_pmta(struct report_ctx *ctx, FILE *out);
int report_html_write(struct report_ctx *ctx, FILE *out);

/* charts.c: inline SVG from tables (see the functions for which columns they read). */
void report_chart_ramp(struct strbuf *out, const struct report_table *hours);
void report_chart_alignment(struct strbuf *out, const struct report_table *summary);
void report_chart_deferrals(struct strbuf *out, const struct report_table *deferrals);
void report_chart_outcomes(struct strbuf *out, const struct report_table *delivery);

#endif
