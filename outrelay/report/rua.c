/* rua.c - the rua tables of <state>/records.db: rua_import() stores each fully validated
 * report in one transaction (a refused or duplicate report stores nothing), rua_compare()
 * lines up receivers' observations with outrelay's "checked" predictions per domain x source
 * IP as a table, CSV or JSON. Never writes the events table (records.c owns it); reads it only.
 * Called by the report command (outrelay/report/report.c) from the CLI. */
#include "report/rua.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "common/clock.h"
#include "common/util.h"
#include "report/rua_internal.h"

/* Progress lines on a terminal from this many files on. */
#define RUA_PROGRESS_MIN 4

static const char rua_schema_sql[] =
    "CREATE TABLE IF NOT EXISTS rua_reports ("
    " id INTEGER PRIMARY KEY,"
    " org_name TEXT NOT NULL,"
    " email TEXT,"
    " report_id TEXT NOT NULL,"
    " date_begin INTEGER NOT NULL,"
    " date_end INTEGER NOT NULL,"
    " domain TEXT NOT NULL,"
    " adkim TEXT, aspf TEXT, p TEXT, sp TEXT, pct INTEGER,"
    " file TEXT,"
    " imported_at INTEGER NOT NULL,"
    " UNIQUE (org_name, report_id));"
    "CREATE TABLE IF NOT EXISTS rua_rows ("
    " id INTEGER PRIMARY KEY,"
    " report INTEGER NOT NULL REFERENCES rua_reports (id) ON DELETE CASCADE,"
    " source_ip TEXT NOT NULL,"
    " count INTEGER NOT NULL,"
    " disposition TEXT, dkim_eval TEXT, spf_eval TEXT,"
    " header_from TEXT, envelope_from TEXT,"
    " dkim_results TEXT, spf_results TEXT, spf_raw TEXT);"
    "CREATE INDEX IF NOT EXISTS rua_rows_report ON rua_rows (report);"
    "CREATE INDEX IF NOT EXISTS rua_rows_source ON rua_rows (source_ip, header_from);"
    "CREATE INDEX IF NOT EXISTS rua_reports_dates ON rua_reports (date_end, date_begin);";

/* ---- the database ---------------------------------------------------------------------- */

static int rua_db_error(sqlite3 *db, const char *what, char *err, size_t errlen)
{
    snprintf(err, errlen, "records.db: %s: %s", what, sqlite3_errmsg(db));
    return -1;
}

/* Opens <state>/records.db; create: make it (and the rua tables) when missing. */
static int rua_open_db(const char *state_dir, int create, sqlite3 **db, char *err, size_t errlen)
{
    struct stat st;
    *db = NULL;
    if (state_dir == NULL || stat(state_dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "state directory %s does not exist",
                 state_dir != NULL ? state_dir : "(none)");
        return -1;
    }
    struct strbuf path = STRBUF_INIT;
    strbuf_printf(&path, "%s/records.db", state_dir);
    if (!create && access(strbuf_str(&path), F_OK) != 0) {
        snprintf(err, errlen, "%s does not exist (nothing recorded or imported yet)",
                 strbuf_str(&path));
        strbuf_free(&path);
        return -1;
    }
    int flags = create ? SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE : SQLITE_OPEN_READONLY;
    int rc = sqlite3_open_v2(strbuf_str(&path), db, flags, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "cannot open %s: %s", strbuf_str(&path),
                 *db != NULL ? sqlite3_errmsg(*db) : "out of memory");
        strbuf_free(&path);
        sqlite3_close(*db);
        *db = NULL;
        return -1;
    }
    strbuf_free(&path);
    /* the relay's writer may hold the database for a batch; wait for it */
    sqlite3_busy_timeout(*db, 10000);
    if (create) {
        char *msg = NULL;
        if (sqlite3_exec(*db, "PRAGMA journal_mode=WAL;", NULL, NULL, &msg) != SQLITE_OK ||
            sqlite3_exec(*db, rua_schema_sql, NULL, NULL, &msg) != SQLITE_OK) {
            snprintf(err, errlen, "records.db: %s", msg != NULL ? msg : sqlite3_errmsg(*db));
            sqlite3_free(msg);
            sqlite3_close(*db);
            *db = NULL;
            return -1;
        }
    }
    return 0;
}

static int rua_table_exists(sqlite3 *db, const char *name)
{
    sqlite3_stmt *st = NULL;
    int found = 0;
    if (sqlite3_prepare_v2(db, "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?1", -1,
                           &st, NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
        found = sqlite3_step(st) == SQLITE_ROW;
    }
    sqlite3_finalize(st);
    return found;
}

static void rua_bind_text(sqlite3_stmt *st, int i, const char *s)
{
    if (s != NULL)
        sqlite3_bind_text(st, i, s, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(st, i);
}

/* ---- import ---------------------------------------------------------------------------- */

enum rua_stored { RUA_STORED, RUA_DUPLICATE };

static int rua_store(sqlite3 *db, const struct rua_report *rep, const char *file,
                     enum rua_stored *what, char *err, size_t errlen)
{
    static const char find_sql[] =
        "SELECT id FROM rua_reports WHERE org_name = ?1 AND report_id = ?2";
    static const char report_sql[] =
        "INSERT INTO rua_reports (org_name, email, report_id, date_begin, date_end, domain, "
        "adkim, aspf, p, sp, pct, file, imported_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, "
        "?10, ?11, ?12, ?13)";
    static const char row_sql[] =
        "INSERT INTO rua_rows (report, source_ip, count, disposition, dkim_eval, spf_eval, "
        "header_from, envelope_from, dkim_results, spf_results, spf_raw) VALUES (?1, ?2, ?3, ?4, "
        "?5, ?6, ?7, ?8, ?9, ?10, ?11)";
    sqlite3_stmt *find = NULL, *ins_report = NULL, *ins_row = NULL;
    int rc = -1;
    if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        return rua_db_error(db, "begin", err, errlen);
    if (sqlite3_prepare_v2(db, find_sql, -1, &find, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, report_sql, -1, &ins_report, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, row_sql, -1, &ins_row, NULL) != SQLITE_OK) {
        rua_db_error(db, "prepare", err, errlen);
        goto done;
    }
    rua_bind_text(find, 1, rep->org_name);
    rua_bind_text(find, 2, rep->report_id);
    int step = sqlite3_step(find);
    if (step == SQLITE_ROW) {
        *what = RUA_DUPLICATE;
        rc = 0;
        goto done; /* rolled back below: nothing was written */
    }
    if (step != SQLITE_DONE) {
        rua_db_error(db, "lookup", err, errlen);
        goto done;
    }
    rua_bind_text(ins_report, 1, rep->org_name);
    rua_bind_text(ins_report, 2, rep->email);
    rua_bind_text(ins_report, 3, rep->report_id);
    sqlite3_bind_int64(ins_report, 4, rep->date_begin);
    sqlite3_bind_int64(ins_report, 5, rep->date_end);
    rua_bind_text(ins_report, 6, rep->domain);
    rua_bind_text(ins_report, 7, rep->adkim);
    rua_bind_text(ins_report, 8, rep->aspf);
    rua_bind_text(ins_report, 9, rep->p);
    rua_bind_text(ins_report, 10, rep->sp);
    if (rep->pct >= 0)
        sqlite3_bind_int(ins_report, 11, rep->pct);
    else
        sqlite3_bind_null(ins_report, 11);
    rua_bind_text(ins_report, 12, file);
    sqlite3_bind_int64(ins_report, 13, clock_now());
    if (sqlite3_step(ins_report) != SQLITE_DONE) {
        rua_db_error(db, "insert report", err, errlen);
        goto done;
    }
    sqlite3_int64 id = sqlite3_last_insert_rowid(db);
    for (size_t i = 0; i < rep->n_rows; i++) {
        const struct rua_row *r = &rep->rows[i];
        sqlite3_reset(ins_row);
        sqlite3_bind_int64(ins_row, 1, id);
        rua_bind_text(ins_row, 2, r->source_ip);
        sqlite3_bind_int64(ins_row, 3, r->count);
        rua_bind_text(ins_row, 4, r->disposition);
        rua_bind_text(ins_row, 5, r->dkim_eval);
        rua_bind_text(ins_row, 6, r->spf_eval);
        rua_bind_text(ins_row, 7, r->header_from);
        rua_bind_text(ins_row, 8, r->envelope_from);
        rua_bind_text(ins_row, 9, r->dkim_results);
        rua_bind_text(ins_row, 10, r->spf_results);
        rua_bind_text(ins_row, 11, r->spf_raw);
        if (sqlite3_step(ins_row) != SQLITE_DONE) {
            rua_db_error(db, "insert row", err, errlen);
            goto done;
        }
    }
    if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        rua_db_error(db, "commit", err, errlen);
        goto done;
    }
    *what = RUA_STORED;
    rc = 1; /* committed: no rollback */
done:
    sqlite3_finalize(find);
    sqlite3_finalize(ins_report);
    sqlite3_finalize(ins_row);
    if (rc != 1) sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return rc < 0 ? -1 : 0;
}

static void rua_date(int64_t t, char *buf, size_t size)
{
    time_t tt = (time_t)t;
    struct tm tm;
    if (gmtime_r(&tt, &tm) == NULL || strftime(buf, size, "%Y-%m-%d %H:%M", &tm) == 0)
        snprintf(buf, size, "%lld", (long long)t);
}

/* One file: read, parse, store; the outcome is one line in out. Returns 0 / -1 (refused). */
static int rua_import_one(sqlite3 *db, const char *file, struct strbuf *out)
{
    struct strbuf xml = STRBUF_INIT;
    struct rua_report rep;
    char why[512];
    memset(&rep, 0, sizeof rep);
    if (rua_read_file(file, &xml, why, sizeof why) != 0 ||
        rua_parse(xml.data, xml.len, &rep, why, sizeof why) != 0) {
        strbuf_free(&xml);
        strbuf_printf(out, "refused %s: %s\n", file, why);
        return -1;
    }
    strbuf_free(&xml);
    enum rua_stored what = RUA_STORED;
    int rc = rua_store(db, &rep, file, &what, why, sizeof why);
    if (rc != 0) {
        strbuf_printf(out, "refused %s: %s\n", file, why);
    } else if (what == RUA_DUPLICATE) {
        strbuf_printf(out, "skipped %s: %s report %s is already imported\n", file, rep.org_name,
                      rep.report_id);
    } else {
        char begin[32], end[32];
        rua_date(rep.date_begin, begin, sizeof begin);
        rua_date(rep.date_end, end, sizeof end);
        strbuf_printf(out,
                      "imported %s: %s report %s for %s (%s..%s UTC): %zu records, %lld "
                      "messages\n",
                      file, rep.org_name, rep.report_id, rep.domain, begin, end, rep.n_rows,
                      (long long)rep.messages);
    }
    rua_report_free(&rep);
    return rc;
}

int rua_import(const char *state_dir, const char *const *files, size_t n, struct strbuf *out,
               char *err, size_t errlen)
{
    sqlite3 *db = NULL;
    if (rua_open_db(state_dir, 1, &db, err, errlen) != 0) return -1;
    int progress = n >= RUA_PROGRESS_MIN && isatty(STDERR_FILENO);
    size_t refused = 0;
    for (size_t i = 0; i < n; i++) {
        if (progress) {
            fprintf(stderr, "\rimporting rua reports: %zu/%zu", i + 1, n);
            fflush(stderr);
        }
        if (rua_import_one(db, files[i], out) != 0) refused++;
    }
    if (progress) fprintf(stderr, "\rimporting rua reports: %zu/%zu done\n", n, n);
    sqlite3_close(db);
    if (refused == 0) return 0;
    snprintf(err, errlen, "%zu of %zu files refused", refused, n);
    return 1;
}

/* ---- compare --------------------------------------------------------------------------- */

/* One output row, counts as read from the query. */
struct rua_cmp {
    char *domain, *ip, *egress;
    int64_t reports, messages, dkim_pass, dkim_fail, spf_pass, spf_fail, dmarc_pass, dmarc_fail;
    int64_t none, quarantine, reject, first, last;
    int predicted; /* any checked row for this domain and IP */
    int64_t checked, p_spf_pass, p_spf_fail, p_dmarc_pass, p_dmarc_fail;
    const char *obs_spf, *obs_dmarc, *pred_spf, *pred_dmarc; /* pass, fail, mixed, - */
    char mismatch[32];                                       /* "", "spf", "spf,dmarc", ... */
};

static const char *rua_verdict(int64_t pass, int64_t fail)
{
    if (pass + fail == 0) return "-";
    if (fail == 0) return "pass";
    if (pass == 0) return "fail";
    return "mixed";
}

/* A definite prediction (all pass or all fail) that receivers contradicted. */
static int rua_contradicts(const char *pred, const char *obs)
{
    return (strcmp(pred, "pass") == 0 || strcmp(pred, "fail") == 0) && strcmp(obs, "-") != 0 &&
           strcmp(obs, pred) != 0;
}

static void rua_judge(struct rua_cmp *c)
{
    c->obs_spf = rua_verdict(c->spf_pass, c->spf_fail);
    c->obs_dmarc = rua_verdict(c->dmarc_pass, c->dmarc_fail);
    c->pred_spf = rua_verdict(c->p_spf_pass, c->p_spf_fail);
    c->pred_dmarc = rua_verdict(c->p_dmarc_pass, c->p_dmarc_fail);
    c->mismatch[0] = '\0';
    if (!c->predicted) {
        snprintf(c->mismatch, sizeof c->mismatch, "unpredicted");
        return;
    }
    int spf = rua_contradicts(c->pred_spf, c->obs_spf);
    int dmarc = rua_contradicts(c->pred_dmarc, c->obs_dmarc);
    snprintf(c->mismatch, sizeof c->mismatch, "%s%s%s", spf ? "spf" : "", spf && dmarc ? "," : "",
             dmarc ? "dmarc" : "");
}

static int rua_is_mismatch(const struct rua_cmp *c)
{
    return c->predicted && c->mismatch[0] != '\0';
}

static char *rua_col_text(sqlite3_stmt *st, int i)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    char *s = xstrdup(t != NULL ? (const char *)t : "");
    for (char *p = s; *p != '\0'; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f) *p = '?';
    return s;
}

/* The query: observations grouped by domain x IP, predictions for the same keys. */
static void rua_compare_sql(const struct rua_filter *f, int have_events, struct strbuf *sql)
{
    strbuf_puts(sql,
                "WITH obs AS (SELECT lower(coalesce(w.header_from, p.domain)) AS domain,"
                " w.source_ip AS ip, count(DISTINCT p.id) AS reports, sum(w.count) AS msgs,"
                " sum(CASE WHEN w.dkim_eval = 'pass' THEN w.count ELSE 0 END) AS dkim_pass,"
                " sum(CASE WHEN w.dkim_eval = 'fail' THEN w.count ELSE 0 END) AS dkim_fail,"
                " sum(CASE WHEN coalesce(w.spf_raw, w.spf_eval) = 'pass' THEN w.count ELSE 0 "
                "END) AS spf_pass,"
                " sum(CASE WHEN coalesce(w.spf_raw, w.spf_eval) IN ('fail', 'softfail', "
                "'neutral', 'none', 'permerror') THEN w.count ELSE 0 END) AS spf_fail,"
                " sum(CASE WHEN w.dkim_eval = 'pass' OR w.spf_eval = 'pass' THEN w.count ELSE 0 "
                "END) AS dmarc_pass,"
                " sum(CASE WHEN w.dkim_eval = 'pass' OR w.spf_eval = 'pass' THEN 0 ELSE w.count "
                "END) AS dmarc_fail,"
                " sum(CASE WHEN w.disposition = 'none' THEN w.count ELSE 0 END) AS d_none,"
                " sum(CASE WHEN w.disposition = 'quarantine' THEN w.count ELSE 0 END) AS d_quar,"
                " sum(CASE WHEN w.disposition = 'reject' THEN w.count ELSE 0 END) AS d_reject,"
                " min(p.date_begin) AS first, max(p.date_end) AS last"
                " FROM rua_rows w JOIN rua_reports p ON p.id = w.report WHERE 1");
    if (f->since > 0) strbuf_puts(sql, " AND p.date_end >= ?1");
    if (f->until > 0) strbuf_puts(sql, " AND p.date_begin < ?2");
    if (f->source_ip != NULL) strbuf_puts(sql, " AND w.source_ip = ?3");
    strbuf_puts(sql, " GROUP BY 1, 2");
    if (f->domain != NULL) strbuf_puts(sql, " HAVING domain = lower(?4)");
    strbuf_puts(sql, "), pred AS (");
    if (have_events) {
        strbuf_puts(sql,
                    "SELECT lower(from_domain) AS domain, source_addr AS ip, count(*) AS checked,"
                    " sum(spf_result = 'pass') AS spf_pass,"
                    " sum(spf_result IN ('fail', 'softfail', 'neutral', 'none', 'permerror')) AS "
                    "spf_fail,"
                    " sum(dmarc_result = 'pass') AS dmarc_pass,"
                    " sum(dmarc_result = 'fail') AS dmarc_fail,"
                    " group_concat(DISTINCT egress) AS egresses"
                    " FROM events WHERE event = 'checked' AND from_domain IS NOT NULL"
                    " AND source_addr IN (SELECT ip FROM obs)");
        if (f->since > 0) strbuf_puts(sql, " AND ts_us >= ?1 * 1000000");
        if (f->until > 0) strbuf_puts(sql, " AND ts_us < ?2 * 1000000");
        if (f->egress != NULL) strbuf_puts(sql, " AND egress = ?5");
        strbuf_puts(sql, " GROUP BY 1, 2");
    } else {
        strbuf_puts(sql, "SELECT NULL AS domain, NULL AS ip, 0 AS checked, 0 AS spf_pass, 0 AS "
                         "spf_fail, 0 AS dmarc_pass, 0 AS dmarc_fail, NULL AS egresses WHERE 0");
    }
    strbuf_puts(sql, ") SELECT obs.domain, obs.ip, pred.egresses, obs.reports, obs.msgs,"
                     " obs.dkim_pass, obs.dkim_fail, obs.spf_pass, obs.spf_fail, obs.dmarc_pass,"
                     " obs.dmarc_fail, obs.d_none, obs.d_quar, obs.d_reject, obs.first, obs.last,"
                     " pred.checked, pred.spf_pass, pred.spf_fail, pred.dmarc_pass,"
                     " pred.dmarc_fail"
                     " FROM obs LEFT JOIN pred ON pred.domain = obs.domain AND pred.ip = obs.ip");
    if (f->egress != NULL) strbuf_puts(sql, " WHERE pred.checked IS NOT NULL");
    strbuf_puts(sql, " ORDER BY obs.domain, obs.msgs DESC, obs.ip");
}

static int rua_compare_rows(sqlite3 *db, const struct rua_filter *f, struct rua_cmp **rows,
                            size_t *n, char *err, size_t errlen)
{
    *rows = NULL;
    *n = 0;
    if (!rua_table_exists(db, "rua_reports") || !rua_table_exists(db, "rua_rows"))
        return 0; /* nothing imported yet */
    struct strbuf sql = STRBUF_INIT;
    rua_compare_sql(f, rua_table_exists(db, "events"), &sql);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, strbuf_str(&sql), -1, &st, NULL) != SQLITE_OK) {
        strbuf_free(&sql);
        return rua_db_error(db, "compare query", err, errlen);
    }
    strbuf_free(&sql);
    if (f->since > 0) sqlite3_bind_int64(st, 1, f->since);
    if (f->until > 0) sqlite3_bind_int64(st, 2, f->until);
    if (f->source_ip != NULL) sqlite3_bind_text(st, 3, f->source_ip, -1, SQLITE_STATIC);
    if (f->domain != NULL) sqlite3_bind_text(st, 4, f->domain, -1, SQLITE_STATIC);
    if (f->egress != NULL) sqlite3_bind_text(st, 5, f->egress, -1, SQLITE_STATIC);
    size_t cap = 0;
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        struct rua_cmp c;
        memset(&c, 0, sizeof c);
        c.predicted = sqlite3_column_type(st, 16) != SQLITE_NULL;
        int64_t *ints[] = {&c.reports,      &c.messages,    &c.dkim_pass,  &c.dkim_fail,
                           &c.spf_pass,     &c.spf_fail,    &c.dmarc_pass, &c.dmarc_fail,
                           &c.none,         &c.quarantine,  &c.reject,     &c.first,
                           &c.last,         &c.checked,     &c.p_spf_pass, &c.p_spf_fail,
                           &c.p_dmarc_pass, &c.p_dmarc_fail};
        for (int i = 0; i < (int)(sizeof ints / sizeof ints[0]); i++)
            *ints[i] = sqlite3_column_int64(st, 3 + i);
        rua_judge(&c);
        if (f->mismatches_only && !rua_is_mismatch(&c)) continue;
        c.domain = rua_col_text(st, 0);
        c.ip = rua_col_text(st, 1);
        c.egress = rua_col_text(st, 2);
        if (*n == cap) {
            cap = cap ? cap * 2 : 32;
            *rows = xrealloc(*rows, cap * sizeof **rows);
        }
        (*rows)[(*n)++] = c;
    }
    int rc = 0;
    if (step != SQLITE_DONE) rc = rua_db_error(db, "compare query", err, errlen);
    sqlite3_finalize(st);
    return rc;
}

static void rua_free_rows(struct rua_cmp *rows, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(rows[i].domain);
        free(rows[i].ip);
        free(rows[i].egress);
    }
    free(rows);
}

/* ---- output formats -------------------------------------------------------------------- */

static const char *const rua_columns[] = {
    "domain",         "source_ip", "egress",          "reports",         "messages",
    "dkim_pass",      "dkim_fail", "spf_pass",        "spf_fail",        "dmarc_pass",
    "dmarc_fail",     "disp_none", "disp_quarantine", "disp_reject",     "observed_spf",
    "observed_dmarc", "checked",   "predicted_spf",   "predicted_dmarc", "mismatch"};
#define RUA_NCOLUMNS (sizeof rua_columns / sizeof rua_columns[0])

static void rua_csv_field(struct strbuf *out, const char *s)
{
    if (strpbrk(s, ",\"\r\n") == NULL) {
        strbuf_puts(out, s);
        return;
    }
    strbuf_puts(out, "\"");
    for (; *s != '\0'; s++)
        strbuf_append(out, *s == '"' ? "\"\"" : s, *s == '"' ? 2 : 1);
    strbuf_puts(out, "\"");
}

static void rua_json_string(struct strbuf *out, const char *s)
{
    strbuf_puts(out, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        if (*p == '"' || *p == '\\')
            strbuf_printf(out, "\\%c", *p);
        else if (*p < 0x20)
            strbuf_printf(out, "\\u%04x", *p);
        else
            strbuf_append(out, p, 1);
    }
    strbuf_puts(out, "\"");
}

static void rua_format_csv(const struct rua_cmp *rows, size_t n, struct strbuf *out)
{
    for (size_t i = 0; i < RUA_NCOLUMNS; i++)
        strbuf_printf(out, "%s%s", i ? "," : "", rua_columns[i]);
    strbuf_puts(out, "\n");
    for (size_t i = 0; i < n; i++) {
        const struct rua_cmp *c = &rows[i];
        rua_csv_field(out, c->domain);
        strbuf_puts(out, ",");
        rua_csv_field(out, c->ip);
        strbuf_puts(out, ",");
        rua_csv_field(out, c->egress);
        strbuf_printf(out,
                      ",%lld,%lld,%lld,%lld,%lld,%lld,%lld,%lld,%lld,%lld,%lld,%s,%s,%lld,%s,%s,",
                      (long long)c->reports, (long long)c->messages, (long long)c->dkim_pass,
                      (long long)c->dkim_fail, (long long)c->spf_pass, (long long)c->spf_fail,
                      (long long)c->dmarc_pass, (long long)c->dmarc_fail, (long long)c->none,
                      (long long)c->quarantine, (long long)c->reject, c->obs_spf, c->obs_dmarc,
                      (long long)c->checked, c->predicted ? c->pred_spf : "",
                      c->predicted ? c->pred_dmarc : "");
        rua_csv_field(out, c->mismatch);
        strbuf_puts(out, "\n");
    }
}

static void rua_format_json(const struct rua_cmp *rows, size_t n, struct strbuf *out)
{
    strbuf_puts(out, "{\"rows\": [");
    for (size_t i = 0; i < n; i++) {
        const struct rua_cmp *c = &rows[i];
        strbuf_puts(out, i ? ",\n  {" : "\n  {");
        strbuf_puts(out, "\"domain\": ");
        rua_json_string(out, c->domain);
        strbuf_puts(out, ", \"source_ip\": ");
        rua_json_string(out, c->ip);
        strbuf_printf(out,
                      ", \"observed\": {\"reports\": %lld, \"messages\": %lld, \"dkim_pass\": "
                      "%lld, \"dkim_fail\": %lld, \"spf_pass\": %lld, \"spf_fail\": %lld, "
                      "\"dmarc_pass\": %lld, \"dmarc_fail\": %lld, \"disposition\": {\"none\": "
                      "%lld, \"quarantine\": %lld, \"reject\": %lld}, \"spf\": \"%s\", "
                      "\"dmarc\": \"%s\", \"date_begin\": %lld, \"date_end\": %lld}",
                      (long long)c->reports, (long long)c->messages, (long long)c->dkim_pass,
                      (long long)c->dkim_fail, (long long)c->spf_pass, (long long)c->spf_fail,
                      (long long)c->dmarc_pass, (long long)c->dmarc_fail, (long long)c->none,
                      (long long)c->quarantine, (long long)c->reject, c->obs_spf, c->obs_dmarc,
                      (long long)c->first, (long long)c->last);
        if (c->predicted) {
            strbuf_puts(out, ", \"predicted\": {\"egress\": ");
            rua_json_string(out, c->egress);
            strbuf_printf(out,
                          ", \"checked\": %lld, \"spf_pass\": %lld, \"spf_fail\": %lld, "
                          "\"dmarc_pass\": %lld, \"dmarc_fail\": %lld, \"spf\": \"%s\", "
                          "\"dmarc\": \"%s\"}",
                          (long long)c->checked, (long long)c->p_spf_pass, (long long)c->p_spf_fail,
                          (long long)c->p_dmarc_pass, (long long)c->p_dmarc_fail, c->pred_spf,
                          c->pred_dmarc);
        } else {
            strbuf_puts(out, ", \"predicted\": null");
        }
        strbuf_puts(out, ", \"mismatch\": [");
        if (rua_is_mismatch(c)) {
            int spf = strstr(c->mismatch, "spf") != NULL;
            int dmarc = strstr(c->mismatch, "dmarc") != NULL;
            strbuf_printf(out, "%s%s%s", spf ? "\"spf\"" : "", spf && dmarc ? ", " : "",
                          dmarc ? "\"dmarc\"" : "");
        }
        strbuf_printf(out, "], \"unpredicted\": %s}", c->predicted ? "false" : "true");
    }
    strbuf_puts(out, n ? "\n]}\n" : "]}\n");
}

#define RUA_TABLE_COLS 11

static void rua_format_table(const struct rua_cmp *rows, size_t n, struct strbuf *out)
{
    static const char *const head[RUA_TABLE_COLS] = {
        "DOMAIN",    "SOURCE IP", "EGRESS",    "MSGS",          "DKIM p/f", "SPF p/f",
        "DMARC p/f", "none/q/r",  "PREDICTED", "SPF seen/pred", "MISMATCH"};
    char ***cells = xcalloc(n + 1, sizeof *cells);
    size_t width[RUA_TABLE_COLS];
    size_t mismatches = 0, unpredicted = 0;
    for (size_t i = 0; i <= n; i++) {
        cells[i] = xcalloc(RUA_TABLE_COLS, sizeof *cells[i]);
        if (i == 0) {
            for (int k = 0; k < RUA_TABLE_COLS; k++)
                cells[0][k] = xstrdup(head[k]);
            continue;
        }
        const struct rua_cmp *c = &rows[i - 1];
        struct strbuf sb = STRBUF_INIT;
        char **row = cells[i];
        row[0] = xstrdup(c->domain);
        row[1] = xstrdup(c->ip);
        row[2] = xstrdup(c->egress[0] ? c->egress : "-");
        strbuf_printf(&sb, "%lld", (long long)c->messages);
        row[3] = strbuf_detach(&sb, NULL);
        strbuf_printf(&sb, "%lld/%lld", (long long)c->dkim_pass, (long long)c->dkim_fail);
        row[4] = strbuf_detach(&sb, NULL);
        strbuf_printf(&sb, "%lld/%lld", (long long)c->spf_pass, (long long)c->spf_fail);
        row[5] = strbuf_detach(&sb, NULL);
        strbuf_printf(&sb, "%lld/%lld", (long long)c->dmarc_pass, (long long)c->dmarc_fail);
        row[6] = strbuf_detach(&sb, NULL);
        strbuf_printf(&sb, "%lld/%lld/%lld", (long long)c->none, (long long)c->quarantine,
                      (long long)c->reject);
        row[7] = strbuf_detach(&sb, NULL);
        if (c->predicted)
            strbuf_printf(&sb, "%lld: spf %s, dmarc %s", (long long)c->checked, c->pred_spf,
                          c->pred_dmarc);
        else
            strbuf_puts(&sb, "-");
        row[8] = strbuf_detach(&sb, NULL);
        strbuf_printf(&sb, "%s/%s", c->obs_spf, c->predicted ? c->pred_spf : "-");
        row[9] = strbuf_detach(&sb, NULL);
        if (rua_is_mismatch(c)) {
            strbuf_printf(&sb, "** MISMATCH %s", c->mismatch);
            mismatches++;
        } else if (!c->predicted) {
            strbuf_puts(&sb, "(not sent by outrelay)");
            unpredicted++;
        }
        row[10] = xstrdup(strbuf_str(&sb)); /* may be empty: detach would not terminate it */
        strbuf_free(&sb);
    }
    for (int k = 0; k < RUA_TABLE_COLS; k++) {
        width[k] = 0;
        for (size_t i = 0; i <= n; i++)
            if (strlen(cells[i][k]) > width[k]) width[k] = strlen(cells[i][k]);
    }
    for (size_t i = 0; i <= n; i++) {
        struct strbuf line = STRBUF_INIT;
        for (int k = 0; k < RUA_TABLE_COLS; k++) {
            int numeric = k >= 3 && k <= 7;
            if (k) strbuf_puts(&line, "  ");
            strbuf_printf(&line, numeric ? "%*s" : "%-*s", (int)width[k], cells[i][k]);
        }
        while (line.len > 0 && line.data[line.len - 1] == ' ')
            line.data[--line.len] = '\0';
        strbuf_printf(out, "%s\n", strbuf_str(&line));
        strbuf_free(&line);
        for (int k = 0; k < RUA_TABLE_COLS; k++)
            free(cells[i][k]);
        free(cells[i]);
    }
    free(cells);
    strbuf_printf(out, "%zu domain/IP pairs, %zu mismatches, %zu not sent by outrelay\n", n,
                  mismatches, unpredicted);
}

int rua_compare(const char *state_dir, const struct rua_filter *filter, struct strbuf *out,
                int format, char *err, size_t errlen)
{
    static const struct rua_filter all;
    const struct rua_filter *f = filter != NULL ? filter : &all;
    if (format < RUA_FORMAT_TABLE || format > RUA_FORMAT_JSON) {
        snprintf(err, errlen, "unknown output format %d", format);
        return -1;
    }
    sqlite3 *db = NULL;
    if (rua_open_db(state_dir, 0, &db, err, errlen) != 0) return -1;
    struct rua_cmp *rows = NULL;
    size_t n = 0;
    int rc = rua_compare_rows(db, f, &rows, &n, err, errlen);
    sqlite3_close(db);
    if (rc != 0) {
        rua_free_rows(rows, n);
        return -1;
    }
    if (format == RUA_FORMAT_CSV)
        rua_format_csv(rows, n, out);
    else if (format == RUA_FORMAT_JSON)
        rua_format_json(rows, n, out);
    else
        rua_format_table(rows, n, out);
    rua_free_rows(rows, n);
    return 0;
}
