/* test_report_sources.c - unit tests for outrelay/report/sources.c: several records.db files
 * attached and read as one `events` view with an instance column (a queue id in two instances
 * stays two messages), an older file upgraded and a newer one refused, a directory expanded, and
 * the continuity and delivery reports over the merged records. Crafted databases in /tmp. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "common/util.h"
#include "records/records.h"
#include "report/report_core.h"

static char *tmpdir;

static char *path_of(const char *rel)
{
    char *p = xmalloc(strlen(tmpdir) + strlen(rel) + 2);
    sprintf(p, "%s/%s", tmpdir, rel);
    return p;
}

static void exec_sql(const char *rel, const char *sql)
{
    char *p = path_of(rel);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(p, &db), SQLITE_OK);
    char *err = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
    if (rc != SQLITE_OK) fprintf(stderr, "%s: %s\n", rel, err);
    assert_int_equal(rc, SQLITE_OK);
    sqlite3_close(db);
    free(p);
}

/* A: the current schema (made by records_upgrade from an empty file), delivered Q1.
 * B: the first schema (no version table; nrcpt still in detail), the same Message-ID and queue id
 * suppressed as a duplicate, a later routed row of Q1 naming another provider, and Q2 accepted
 * with no outcome; its cluster record names the instance relay-B. */
static int setup(void **state)
{
    (void)state;
    tmpdir = xstrdup("/tmp/test_report_sources.XXXXXX");
    assert_non_null(mkdtemp(tmpdir));
    char *a = path_of("A"), *b = path_of("B");
    assert_int_equal(mkdir(a, 0700), 0);
    assert_int_equal(mkdir(b, 0700), 0);
    free(a);
    free(b);
    exec_sql("A/records.db", "CREATE TABLE IF NOT EXISTS x (y); DROP TABLE x;");
    char *pa = path_of("A/records.db");
    char err[300];
    assert_int_equal(records_upgrade(pa, err, sizeof err), 0);
    free(pa);
    exec_sql("A/records.db",
             "INSERT INTO events (ts_us, event, queue_id, message_id, sender, nrcpt) VALUES "
             "(1000000, 'received', 'Q1', '<m1@t>', 's@example.org', 1);"
             "INSERT INTO events (ts_us, event, queue_id, recipient, provider) VALUES "
             "(2000000, 'routed', 'Q1', 'r@example.net', 'gmail');"
             "INSERT INTO events (ts_us, event, queue_id, message_id, sender, recipient, egress, "
             "delay_ms, reply_code) VALUES (3000000, 'delivered', 'Q1', '<m1@t>', "
             "'s@example.org', 'r@example.net', 'cloud', 100, 250);");
    exec_sql("B/records.db",
             "CREATE TABLE events (id INTEGER PRIMARY KEY, ts_us INTEGER NOT NULL, event TEXT, "
             "queue_id TEXT, message_id TEXT, origin TEXT, client_addr TEXT, sender TEXT, "
             "recipient TEXT, egress TEXT, source_addr TEXT, remote_mx TEXT, remote_addr TEXT, "
             "reply_code INTEGER, enhanced_code TEXT, reply_text TEXT, tls_version TEXT, "
             "tls_cipher TEXT, size INTEGER, delay_ms INTEGER, attempt_ms INTEGER, detail TEXT);"
             "INSERT INTO events (ts_us, event, queue_id, detail) VALUES (500000, 'cluster', '-', "
             "'instance relay-B: redis 127.0.0.1:6379 reachable; 2 instances seen');"
             "INSERT INTO events (ts_us, event, queue_id, message_id, sender, detail) VALUES "
             "(1100000, 'received', 'Q1', '<m1@t>', 's@example.org', 'nrcpt=1');"
             "INSERT INTO events (ts_us, event, queue_id, recipient, detail) VALUES (1200000, "
             "'routed', 'Q1', 'r@example.net', 'provider=wrong');"
             "INSERT INTO events (ts_us, event, queue_id, recipient, detail) VALUES (1200001, "
             "'routed', 'Q1', 'r@example.net', 'provider=wrong');"
             "INSERT INTO events (ts_us, event, queue_id, recipient, detail) VALUES (1200002, "
             "'routed', 'Q1', 'r@example.net', 'provider=wrong');"
             "INSERT INTO events (ts_us, event, queue_id, message_id, sender, recipient, detail) "
             "VALUES (1300000, 'suppressed', 'Q1', '<m1@t>', 's@example.org', 'r@example.net', "
             "'duplicate');"
             "INSERT INTO events (ts_us, event, queue_id, message_id, sender, detail) VALUES "
             "(1400000, 'received', 'Q2', '<m2@t>', 's@example.org', 'nrcpt=1');");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    assert_int_equal(system(cmd), 0);
    free(tmpdir);
    return 0;
}

static void open_both(struct report_ctx *ctx)
{
    char *a = path_of("A/records.db"), *b = path_of("B/records.db");
    assert_int_equal(report_sources_add(&ctx->opt, a, ctx->err, sizeof ctx->err), 0);
    assert_int_equal(report_sources_add(&ctx->opt, b, ctx->err, sizeof ctx->err), 0);
    free(a);
    free(b);
    if (report_open(ctx) != 0) fail_msg("report_open: %s", ctx->err);
}

static int64_t one_int(struct report_ctx *ctx, const char *sql)
{
    sqlite3_stmt *st = report_prepare(ctx, sql);
    assert_non_null(st);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static void test_union_keeps_instances_apart(void **state)
{
    (void)state;
    struct report_ctx ctx = {0};
    open_both(&ctx);
    assert_int_equal(ctx.n_sources, 2);
    assert_string_equal(ctx.sources[0].instance, "A");       /* no cluster record: the dir */
    assert_string_equal(ctx.sources[1].instance, "relay-B"); /* its cluster record */
    /* Q1 is two messages, one per instance */
    assert_int_equal(one_int(&ctx, "SELECT count(*) FROM events WHERE event = 'received'"), 3);
    assert_int_equal(one_int(&ctx, "SELECT count(DISTINCT instance || ' ' || queue_id) FROM "
                                   "events WHERE event = 'received'"),
                     3);
    assert_int_equal(one_int(&ctx, "SELECT count(*) FROM events WHERE queue_id = 'Q1' AND "
                                   "instance = 'relay-B'"),
                     5);
    /* B was upgraded in place: nrcpt and provider taken out of detail */
    assert_int_equal(one_int(&ctx, "SELECT nrcpt FROM events WHERE instance = 'relay-B' AND "
                                   "queue_id = 'Q2'"),
                     1);
    report_close(&ctx);
    report_sources_free(&ctx.opt);
}

static void test_continuity_merged(void **state)
{
    (void)state;
    struct report_ctx ctx = {0};
    open_both(&ctx);
    struct report_doc doc = {.report = "continuity"};
    assert_int_equal(report_continuity_build(&ctx, &doc, 0), 0);
    struct report_table *acc = report_doc_find(&doc, "accounting");
    struct report_table *open = report_doc_find(&doc, "open");
    assert_int_equal(report_cell_num(acc, 0, report_col(acc, "accepted")), 3);
    /* A's Q1 delivered, B's Q1 suppressed and A's delivery of <m1@t> to r@ is in the set */
    assert_int_equal(report_cell_num(acc, 0, report_col(acc, "complete")), 2);
    assert_int_equal(report_cell_num(acc, 0, report_col(acc, "instances")), 2);
    assert_int_equal(open->n_rows, 1);
    assert_string_equal(report_cell(open, 0, report_col(open, "queue_id")), "Q2");
    assert_string_equal(report_cell(open, 0, report_col(open, "instance")), "relay-B");
    assert_string_equal(report_cell(open, 0, report_col(open, "state")), "unaccounted?");
    report_doc_free(&doc);
    report_close(&ctx);
    report_sources_free(&ctx.opt);
}

static void test_continuity_suppressed_unproven_alone(void **state)
{
    (void)state;
    struct report_ctx ctx = {0};
    char *b = path_of("B/records.db");
    assert_int_equal(report_sources_add(&ctx.opt, b, ctx.err, sizeof ctx.err), 0);
    free(b);
    assert_int_equal(report_open(&ctx), 0);
    struct report_doc doc = {.report = "continuity"};
    assert_int_equal(report_continuity_build(&ctx, &doc, 0), 0);
    struct report_table *acc = report_doc_find(&doc, "accounting");
    struct report_table *open = report_doc_find(&doc, "open");
    assert_int_equal(report_cell_num(acc, 0, report_col(acc, "complete")), 0);
    assert_int_equal(open->n_rows, 2);
    assert_string_equal(report_cell(open, 0, report_col(open, "state")),
                        "suppressed, no delivery in these records");
    report_doc_free(&doc);
    report_close(&ctx);
    report_sources_free(&ctx.opt);
}

static void test_delivery_merged(void **state)
{
    (void)state;
    struct report_ctx ctx = {0};
    open_both(&ctx);
    struct report_doc doc = {.report = "delivery"};
    assert_int_equal(report_delivery_build(&ctx, &doc), 0);
    struct report_table *t = report_doc_find(&doc, "delivery");
    assert_int_equal(t->n_rows, 1);
    assert_int_equal(report_cell_num(t, 0, report_col(t, "delivered")), 1);
    assert_string_equal(report_cell(t, 0, report_col(t, "instance")), "A");
    /* the provider of A's own routed row, not the later one of B's Q1 */
    assert_string_equal(report_cell(t, 0, report_col(t, "provider")), "gmail");
    report_doc_free(&doc);
    report_close(&ctx);
    report_sources_free(&ctx.opt);
}

static void test_directory_and_newer_refused(void **state)
{
    (void)state;
    struct report_options opt = {0};
    char err[300];
    assert_int_equal(report_sources_add(&opt, tmpdir, err, sizeof err), 0);
    assert_int_equal(opt.n_records, 2);
    assert_non_null(strstr(opt.records[0], "/A/records.db"));
    assert_non_null(strstr(opt.records[1], "/B/records.db"));
    report_sources_free(&opt);
    char *empty = path_of("A");
    assert_int_equal(report_sources_add(&opt, empty, err, sizeof err), 0); /* A/records.db */
    assert_int_equal(opt.n_records, 1);
    report_sources_free(&opt);
    free(empty);

    exec_sql("C.db", "CREATE TABLE events (id INTEGER PRIMARY KEY, ts_us INTEGER NOT NULL);"
                     "CREATE TABLE schema_version (version INTEGER NOT NULL);"
                     "INSERT INTO schema_version VALUES (99);");
    struct report_ctx ctx = {0};
    char *a = path_of("A/records.db"), *c = path_of("C.db");
    assert_int_equal(report_sources_add(&ctx.opt, a, ctx.err, sizeof ctx.err), 0);
    assert_int_equal(report_sources_add(&ctx.opt, c, ctx.err, sizeof ctx.err), 0);
    assert_int_equal(report_open(&ctx), -1);
    assert_non_null(strstr(ctx.err, "newer outrelay"));
    assert_non_null(strstr(ctx.err, "C.db"));
    report_close(&ctx);
    report_sources_free(&ctx.opt);
    free(a);
    free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_union_keeps_instances_apart),
        cmocka_unit_test(test_continuity_merged),
        cmocka_unit_test(test_continuity_suppressed_unproven_alone),
        cmocka_unit_test(test_delivery_merged),
        cmocka_unit_test(test_directory_and_newer_refused),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
