/* sources.c - which records a report reads: <state>/records.db of the configuration, or the
 * files and directories given with --records (several instances' records merged). Each file is
 * upgraded in place when older (refused when newer), attached read-only, and a TEMP VIEW `events`
 * is the UNION ALL of their events tables with an `instance` column, so every builder's SQL reads
 * one instance or many alike. Called by report.c (report_sources_add, report_open);
 * single-threaded. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/strbuf.h"
#include "common/util.h"
#include "config/config.h"
#include "records/records.h"
#include "report/report_core.h"

static int report_sources_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void report_sources_push(struct report_options *opt, const char *path)
{
    opt->records = xrealloc(opt->records, (opt->n_records + 1) * sizeof *opt->records);
    opt->records[opt->n_records++] = xstrdup(path);
}

static int report_sources_is_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int report_sources_add(struct report_options *opt, const char *arg, char *err, size_t errlen)
{
    struct stat st;
    if (stat(arg, &st) != 0) {
        snprintf(err, errlen, "--records %s: no such file or directory", arg);
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) {
        report_sources_push(opt, arg);
        return 0;
    }
    /* a directory: each DIR/NAME/records.db (one state directory per instance) or
     * DIR/NAME/state/records.db (outrelay@NAME's layout), and each DIR/NAME.db (copies gathered
     * in one place), in name order */
    DIR *d = opendir(arg);
    if (!d) {
        snprintf(err, errlen, "--records %s: cannot read the directory", arg);
        return -1;
    }
    char **found = NULL;
    size_t n = 0;
    struct dirent *de;
    struct strbuf path = STRBUF_INIT;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.') continue;
        size_t len = strlen(de->d_name);
        strbuf_reset(&path);
        if (len > 3 && strcmp(de->d_name + len - 3, ".db") == 0) {
            strbuf_printf(&path, "%s/%s", arg, de->d_name);
        } else {
            strbuf_printf(&path, "%s/%s/records.db", arg, de->d_name);
            if (!report_sources_is_file(path.data)) {
                strbuf_reset(&path);
                strbuf_printf(&path, "%s/%s/state/records.db", arg, de->d_name);
            }
        }
        if (!report_sources_is_file(path.data)) continue;
        found = xrealloc(found, (n + 1) * sizeof *found);
        found[n++] = xstrdup(path.data);
    }
    closedir(d);
    strbuf_free(&path);
    if (n > 1) qsort(found, n, sizeof *found, report_sources_cmp);
    for (size_t i = 0; i < n; i++) {
        report_sources_push(opt, found[i]);
        free(found[i]);
    }
    free(found);
    if (n == 0) {
        snprintf(err, errlen, "--records %s: no */records.db and no *.db in the directory", arg);
        return -1;
    }
    return 0;
}

void report_sources_free(struct report_options *opt)
{
    for (size_t i = 0; i < opt->n_records; i++)
        free(opt->records[i]);
    free(opt->records);
    opt->records = NULL;
    opt->n_records = 0;
}

/* The name of an instance's records when they do not say it: the state directory of a
 * records.db (its parent when it is called state), else the file's name without .db. */
static char *report_sources_default_name(const char *path)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    if (strcmp(base, "records.db") == 0) {
        if (base == path) return xstrdup("records");
        char *dir = xstrndup(path, (size_t)(base - 1 - path));
        char *p = strrchr(dir, '/');
        /* <NAME>/state/records.db (outrelay@NAME's layout): the instance is NAME */
        if (p && strcmp(p + 1, "state") == 0 && p != dir) {
            *p = '\0';
            p = strrchr(dir, '/');
        }
        char *name = xstrdup(p ? p + 1 : dir[0] ? dir : "/");
        free(dir);
        return name;
    }
    size_t len = strlen(base);
    return len > 3 && strcmp(base + len - 3, ".db") == 0 ? xstrndup(base, len - 3) : xstrdup(base);
}

/* The instance name the attached records r<i> carry in their latest `cluster` record
 * ("instance NAME: redis ..."), or NULL. */
static char *report_sources_cluster_name(sqlite3 *db, size_t i)
{
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT substr(detail, 10, instr(detail, ':') - 10) FROM r%zu.events WHERE event = "
             "'cluster' AND detail LIKE 'instance %%:%%' ORDER BY id DESC LIMIT 1",
             i);
    sqlite3_stmt *st = NULL;
    char *name = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW) {
        const char *s = (const char *)sqlite3_column_text(st, 0);
        if (s && *s) name = xstrdup(s);
    }
    sqlite3_finalize(st);
    return name;
}

static int report_sources_fail(struct report_ctx *ctx, const char *what, const char *path)
{
    snprintf(ctx->err, sizeof ctx->err, "%s %s: %s", what, path, sqlite3_errmsg(ctx->db));
    return -1;
}

/* Attaches records i and names its instance (unique among those attached). */
static int report_sources_attach(struct report_ctx *ctx, size_t i)
{
    const char *path = ctx->sources[i].file;
    char err[400];
    if (!report_sources_is_file(path)) {
        snprintf(ctx->err, sizeof ctx->err, "no records at %s%s", path,
                 ctx->opt.n_records ? "" : " (has the relay run with this configuration?)");
        return -1;
    }
    if (records_upgrade(path, err, sizeof err) != 0) {
        snprintf(ctx->err, sizeof ctx->err, "%s: %s", path, err);
        return -1;
    }
    char *uri = sqlite3_mprintf("file:%s?mode=ro", path);
    char *sql = sqlite3_mprintf("ATTACH DATABASE %Q AS r%d", uri, (int)i);
    int rc = sqlite3_exec(ctx->db, sql, NULL, NULL, NULL);
    sqlite3_free(sql);
    sqlite3_free(uri);
    if (rc != SQLITE_OK) return report_sources_fail(ctx, "cannot open", path);
    char *name = report_sources_cluster_name(ctx->db, i);
    if (!name) name = report_sources_default_name(path);
    /* two state directories of the same name elsewhere: keep them apart as NAME#2, ... */
    char *base = name;
    name = xstrdup(base);
    for (int k = 2;; k++) {
        int taken = 0;
        for (size_t j = 0; j < i; j++)
            taken |= strcmp(ctx->sources[j].instance, name) == 0;
        if (!taken) break;
        free(name);
        name = xmalloc(strlen(base) + 16);
        sprintf(name, "%s#%d", base, k);
    }
    free(base);
    ctx->sources[i].instance = name;
    return 0;
}

/* The view over every attached events table: the first file's columns, named, in each. */
static int report_sources_view(struct report_ctx *ctx)
{
    struct strbuf cols = STRBUF_INIT, sql = STRBUF_INIT;
    sqlite3_stmt *st = NULL;
    int rc = -1;
    if (sqlite3_prepare_v2(ctx->db, "SELECT name FROM pragma_table_info('events', 'r0')", -1, &st,
                           NULL) == SQLITE_OK) {
        while (sqlite3_step(st) == SQLITE_ROW)
            strbuf_printf(&cols, "%s\"%s\"", cols.len ? ", " : "", sqlite3_column_text(st, 0));
    }
    sqlite3_finalize(st);
    strbuf_puts(&sql, "CREATE TEMP VIEW events AS ");
    for (size_t i = 0; i < ctx->n_sources; i++) {
        char *inst = sqlite3_mprintf("%Q", ctx->sources[i].instance);
        strbuf_printf(&sql, "%sSELECT %s, %s AS instance FROM r%zu.events", i ? " UNION ALL " : "",
                      strbuf_str(&cols), inst, i);
        sqlite3_free(inst);
    }
    if (cols.len && sqlite3_exec(ctx->db, sql.data, NULL, NULL, NULL) == SQLITE_OK)
        rc = 0;
    else
        snprintf(ctx->err, sizeof ctx->err, "records: cannot merge the events tables: %s",
                 sqlite3_errmsg(ctx->db));
    strbuf_free(&cols);
    strbuf_free(&sql);
    return rc;
}

int report_open(struct report_ctx *ctx)
{
    struct strbuf def = STRBUF_INIT;
    if (ctx->opt.n_records == 0) {
        strbuf_printf(&def, "%s/records.db", ctx->cfg->state);
        ctx->n_sources = 1;
    } else {
        ctx->n_sources = ctx->opt.n_records;
    }
    ctx->sources = xcalloc(ctx->n_sources, sizeof *ctx->sources);
    for (size_t i = 0; i < ctx->n_sources; i++)
        ctx->sources[i].file = xstrdup(ctx->opt.n_records ? ctx->opt.records[i] : def.data);
    strbuf_free(&def);
    /* main is an empty in-memory database; the records are attached read-only beside it */
    if (sqlite3_open_v2(":memory:", &ctx->db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI,
                        NULL) != SQLITE_OK) {
        snprintf(ctx->err, sizeof ctx->err, "records: cannot open a connection");
        return -1;
    }
    /* a relay's writer holds the lock only for a batch commit */
    sqlite3_busy_timeout(ctx->db, 10000);
    sqlite3_limit(ctx->db, SQLITE_LIMIT_ATTACHED, 125);
    if (ctx->n_sources > (size_t)sqlite3_limit(ctx->db, SQLITE_LIMIT_ATTACHED, -1)) {
        snprintf(ctx->err, sizeof ctx->err, "%zu records files: at most %d at once", ctx->n_sources,
                 sqlite3_limit(ctx->db, SQLITE_LIMIT_ATTACHED, -1));
        return -1;
    }
    for (size_t i = 0; i < ctx->n_sources; i++)
        if (report_sources_attach(ctx, i) != 0) return -1;
    if (report_sources_view(ctx) != 0) return -1;
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(ctx->db,
                           "SELECT 1 FROM r0.sqlite_master WHERE type = 'table' AND "
                           "name = 'rua_reports'",
                           -1, &q, NULL) == SQLITE_OK)
        ctx->has_rua = ctx->n_sources == 1 && sqlite3_step(q) == SQLITE_ROW;
    sqlite3_finalize(q);
    return 0;
}

void report_close(struct report_ctx *ctx)
{
    sqlite3_close(ctx->db);
    ctx->db = NULL;
    for (size_t i = 0; i < ctx->n_sources; i++) {
        free(ctx->sources[i].file);
        free(ctx->sources[i].instance);
    }
    free(ctx->sources);
    ctx->sources = NULL;
    ctx->n_sources = 0;
}

void report_sources_table(const struct report_ctx *ctx, struct report_doc *doc)
{
    if (ctx->opt.n_records == 0) return;
    char title[96];
    snprintf(title, sizeof title, "Records merged: %zu instance%s", ctx->n_sources,
             ctx->n_sources == 1 ? "" : "s");
    struct report_table *t = report_table_add(doc, "instances", title, "instance file");
    for (size_t i = 0; i < ctx->n_sources; i++) {
        report_row(t);
        report_put(t, 0, ctx->sources[i].instance);
        report_put(t, 1, ctx->sources[i].file);
    }
}
