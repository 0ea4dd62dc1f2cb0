/* test_records_schema.c - unit tests for outrelay/records/schema.c: a records.db in the schema
 * of version 3 (created here with that version's DDL and rows as it wrote them) is upgraded in
 * place: the typed columns exist and hold the facts older rows packed into detail, the reports
 * give the numbers the rows stand for; a second upgrade changes nothing; a version 4 database
 * gains the TLS policy columns (old rows NULL, new rows filled); a database of a newer
 * version is refused and left alone; every event type has one name; the continuity report reads
 * the relay's `queue list --json` answer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <pthread.h>
#include <sqlite3.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "common/log.h"
#include "common/strbuf.h"
#include "common/util.h"
#include "config/config.h"
#include "records/records.h"
#include "report/report.h"

/* Version 3 as it was created, and rows as versions 1-3 wrote them. */
static const char schema_v3_sql[] =
    "CREATE TABLE schema_version (version INTEGER NOT NULL); INSERT INTO schema_version VALUES (3);"
    "CREATE TABLE events (id INTEGER PRIMARY KEY, ts_us INTEGER NOT NULL, event TEXT, queue_id "
    "TEXT, message_id TEXT, origin TEXT, client_addr TEXT, sender TEXT, recipient TEXT, egress "
    "TEXT, source_addr TEXT, remote_mx TEXT, remote_addr TEXT, reply_code INTEGER, enhanced_code "
    "TEXT, reply_text TEXT, tls_version TEXT, tls_cipher TEXT, size INTEGER, delay_ms INTEGER, "
    "attempt_ms INTEGER, detail TEXT, from_domain TEXT, spf_result TEXT, spf_domain TEXT, dkim "
    "TEXT, dmarc_policy TEXT, dmarc_result TEXT, action TEXT, ramp_percent REAL, provider TEXT);"
    "INSERT INTO events (ts_us, event, queue_id, message_id, sender, detail) VALUES "
    " (1000000, 'received', 'Q1', '<m1@example.org>', 'a@example.org', 'nrcpt=2'),"
    " (1000000, 'received', 'Q2', '<m2@example.org>', 'a@example.org', "
    "  'nrcpt=1; client certificate CN=mail.protection.outlook.com');"
    "INSERT INTO events (ts_us, event, queue_id, recipient, egress, action, ramp_percent, "
    "provider, "
    "detail) VALUES"
    " (2000000, 'routed', 'Q1', 'r1@example.net', 'cloud', 'ramp', 25, NULL, "
    "  'provider=google; ramp 25.00%: bucket 12 -> cloud'),"
    " (2000000, 'routed', 'Q1', 'r2@example.net', NULL, 'wait', 25, 'other', "
    "  'provider=other; cap 10/hour reached for cloud x other; waiting in the queue'),"
    " (2000000, 'routed', 'Q2', 'r3@example.net', NULL, 'wait', 25, NULL, "
    "  'provider=other; waiting in the queue');"
    "INSERT INTO events (ts_us, event, queue_id, recipient, egress, reply_code, delay_ms, detail) "
    "VALUES (3000000, 'delivered', 'Q1', 'r1@example.net', 'cloud', 250, 1500, NULL),"
    " (3000000, 'deferred', 'Q1', 'r2@example.net', 'legacy', 451, 0, 'next attempt in 300s'),"
    " (3000000, 'bounced', 'Q1', 'r2@example.net', 'legacy', 550, 0, NULL),"
    " (3000000, 'dsn', 'Q1', NULL, NULL, NULL, 0, 'Q9');"
    "INSERT INTO events (ts_us, event, queue_id, from_domain, egress, spf_result, dkim, "
    "dmarc_result, action) VALUES"
    " (1500000, 'checked', 'Q1', 'example.org', 'cloud', 'pass', "
    "  'd=example.org s=s1 a=rsa-sha256 key=ok aligned', 'pass', 'send'),"
    " (1500000, 'checked', 'Q2', 'example.org', 'cloud', 'fail', "
    "  'd=example.org s=s1 a=rsa-sha256 key=mismatch aligned', 'fail', 'hold');"
    "INSERT INTO events (ts_us, event, queue_id, egress, provider, action, detail) VALUES"
    " (4000000, 'shaping', '-', 'cloud', 'microsoft', 'suspend', "
    "  'rule ms-block: suspend until 2026-12-01T10:00:00Z'),"
    " (5000000, 'shaping', '-', 'cloud', 'microsoft', 'lifted', "
    "  'rule ms-block lifted (duration over)');";

static char *make_state(void)
{
    char *dir = xstrdup("/tmp/test_records_schema.XXXXXX");
    assert_non_null(mkdtemp(dir));
    return dir;
}

static void db_path(const char *dir, char *path, size_t size)
{
    snprintf(path, size, "%s/records.db", dir);
}

static sqlite3 *open_db(const char *dir)
{
    char path[512];
    sqlite3 *db = NULL;
    db_path(dir, path, sizeof path);
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    return db;
}

static void exec_sql(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) fprintf(stderr, "sql: %s\n", msg ? msg : "?");
    sqlite3_free(msg);
    assert_int_equal(rc, SQLITE_OK);
}

/* The first column of the first row as text ("NULL" for NULL) into buf. */
static const char *query(sqlite3 *db, const char *sql, char *buf, size_t size)
{
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    const unsigned char *v = sqlite3_column_text(st, 0);
    snprintf(buf, size, "%s", v ? (const char *)v : "NULL");
    sqlite3_finalize(st);
    return buf;
}

#define ASSERT_QUERY(db, sql, expected)                                                            \
    do {                                                                                           \
        char buf_[512];                                                                            \
        assert_string_equal(query(db, sql, buf_, sizeof buf_), expected);                          \
    } while (0)

static void make_v3(const char *dir)
{
    sqlite3 *db = open_db(dir);
    exec_sql(db, schema_v3_sql);
    sqlite3_close(db);
}

static void remove_state(char *dir)
{
    char path[600];
    const char *files[] = {"records.db", "records.db-wal", "records.db-shm", "report.json"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        unlink(path);
    }
    rmdir(dir);
    free(dir);
}

static void test_upgrade_from_v3_fills_columns(void **state)
{
    (void)state;
    char *dir = make_state();
    char path[512], err[256] = "";
    make_v3(dir);
    db_path(dir, path, sizeof path);
    assert_int_equal(records_upgrade(path, err, sizeof err), 0);

    sqlite3 *db = open_db(dir);
    ASSERT_QUERY(db, "SELECT version FROM schema_version", "7");
    ASSERT_QUERY(db, "SELECT count(*) FROM schema_version", "1");
    /* received: the count in its column, the certificate stays as text */
    ASSERT_QUERY(db, "SELECT nrcpt FROM events WHERE queue_id = 'Q1' AND event = 'received'", "2");
    ASSERT_QUERY(db, "SELECT detail FROM events WHERE queue_id = 'Q1' AND event = 'received'",
                 "NULL");
    ASSERT_QUERY(db,
                 "SELECT nrcpt || ' ' || detail FROM events WHERE queue_id = 'Q2' AND "
                 "event = 'received'",
                 "1 client certificate CN=mail.protection.outlook.com");
    /* routed: provider and reason; the waiting is the action's */
    ASSERT_QUERY(db,
                 "SELECT provider || '|' || route_reason || '|' || coalesce(detail, '-') FROM "
                 "events WHERE recipient = 'r1@example.net' AND event = 'routed'",
                 "google|ramp 25.00%: bucket 12 -> cloud|-");
    ASSERT_QUERY(db,
                 "SELECT provider || '|' || route_reason FROM events WHERE recipient = "
                 "'r2@example.net' AND event = 'routed'",
                 "other|cap 10/hour reached for cloud x other");
    ASSERT_QUERY(db,
                 "SELECT provider || '|' || coalesce(route_reason, 'NULL') FROM events WHERE "
                 "recipient = 'r3@example.net' AND event = 'routed'",
                 "other|NULL");
    /* dsn, deferred, checked, shaping */
    ASSERT_QUERY(db,
                 "SELECT dsn_queue_id || '|' || coalesce(detail, '-') FROM events WHERE "
                 "event = 'dsn'",
                 "Q9|-");
    ASSERT_QUERY(db, "SELECT next_attempt_s FROM events WHERE event = 'deferred'", "300");
    ASSERT_QUERY(db,
                 "SELECT group_concat(dkim_aligned) FROM (SELECT dkim_aligned FROM events "
                 "WHERE event = 'checked' ORDER BY queue_id)",
                 "1,0");
    ASSERT_QUERY(db,
                 "SELECT rule || '|' || until_ts FROM events WHERE event = 'shaping' AND "
                 "action = 'suspend'",
                 "ms-block|1796119200");
    ASSERT_QUERY(db,
                 "SELECT rule || '|' || coalesce(until_ts, 'NULL') FROM events WHERE "
                 "event = 'shaping' AND action = 'lifted'",
                 "ms-block|NULL");
    ASSERT_QUERY(db, "SELECT count(*) FROM events", "13");
    sqlite3_close(db);

    /* again: nothing changes */
    assert_int_equal(records_upgrade(path, err, sizeof err), 0);
    db = open_db(dir);
    ASSERT_QUERY(db, "SELECT count(*) FROM events WHERE nrcpt IS NOT NULL", "2");
    ASSERT_QUERY(db, "SELECT version FROM schema_version", "7");
    sqlite3_close(db);
    remove_state(dir);
}

/* Version 4 as it was: version 3's table with the columns version 4 added, and an attempt row
 * of that time (no TLS policy columns). */
static void make_v4(const char *dir)
{
    make_v3(dir);
    sqlite3 *db = open_db(dir);
    exec_sql(db, "ALTER TABLE events ADD COLUMN nrcpt INTEGER;"
                 "ALTER TABLE events ADD COLUMN route_reason TEXT;"
                 "ALTER TABLE events ADD COLUMN dsn_queue_id TEXT;"
                 "ALTER TABLE events ADD COLUMN next_attempt_s INTEGER;"
                 "ALTER TABLE events ADD COLUMN dkim_aligned INTEGER;"
                 "ALTER TABLE events ADD COLUMN rule TEXT;"
                 "ALTER TABLE events ADD COLUMN until_ts INTEGER;"
                 "UPDATE schema_version SET version = 4;"
                 "INSERT INTO events (ts_us, event, queue_id, recipient, tls_version) VALUES "
                 "(1700000000000000, 'delivered', 'Q40', 'old@example.net', 'TLSv1.3');"
                 /* routed rows of route groups before version 7: the facts in the reason */
                 "INSERT INTO events (ts_us, event, queue_id, route_reason) VALUES "
                 "(1700000000000001, 'routed', 'Q42', 'group eu: rendezvous -> google (weight "
                 "60.00%)'), (1700000000000002, 'routed', 'Q43', 'ramp 5.00%: bucket 17 -> "
                 "legacy');");
    sqlite3_close(db);
}

static void test_upgrade_from_v4_adds_tls_policy(void **state)
{
    (void)state;
    char *dir = make_state();
    char err[256] = "";
    make_v4(dir);
    assert_int_equal(records_open(dir, err, sizeof err), 0);
    struct record_event ev = {.type = RECORD_DEFERRED,
                              .queue_id = "Q41",
                              .recipient = "new@example.net",
                              .tls_policy = "encrypt",
                              .tls_policy_source = "table"};
    records_emit(&ev);
    records_close();
    sqlite3 *db = open_db(dir);
    ASSERT_QUERY(db, "SELECT version FROM schema_version", "7");
    ASSERT_QUERY(db, "SELECT count(*) FROM schema_version", "1");
    ASSERT_QUERY(db,
                 "SELECT coalesce(tls_policy, 'NULL') || '|' || coalesce(tls_policy_source, "
                 "'NULL') || '|' || tls_version FROM events WHERE queue_id = 'Q40'",
                 "NULL|NULL|TLSv1.3");
    ASSERT_QUERY(db,
                 "SELECT tls_policy || '|' || tls_policy_source FROM events WHERE queue_id = "
                 "'Q41'",
                 "encrypt|table");
    /* version 7: route_group and planned_egress from the reason; none without a group */
    ASSERT_QUERY(db,
                 "SELECT route_group || '|' || planned_egress FROM events WHERE queue_id = 'Q42'",
                 "eu|google");
    ASSERT_QUERY(db,
                 "SELECT coalesce(route_group, 'NULL') || '|' || coalesce(planned_egress, 'NULL') "
                 "FROM events WHERE queue_id = 'Q43'",
                 "NULL|NULL");
    sqlite3_close(db);
    /* a reader's upgrade of the current version changes nothing */
    char path[512];
    db_path(dir, path, sizeof path);
    assert_int_equal(records_upgrade(path, err, sizeof err), 0);
    db = open_db(dir);
    ASSERT_QUERY(db, "SELECT count(*) FROM events WHERE queue_id IN ('Q40', 'Q41')", "2");
    sqlite3_close(db);
    remove_state(dir);
}

/* The relay opening an old database upgrades it and writes typed rows beside the old ones. */
static void test_records_open_upgrades(void **state)
{
    (void)state;
    char *dir = make_state();
    char err[256] = "";
    make_v3(dir);
    assert_int_equal(records_open(dir, err, sizeof err), 0);
    struct record_event ev = {.type = RECORD_RECEIVED, .queue_id = "Q3", .nrcpt = 3};
    records_emit(&ev);
    records_close();
    sqlite3 *db = open_db(dir);
    ASSERT_QUERY(db, "SELECT sum(nrcpt) FROM events WHERE event = 'received'", "6");
    ASSERT_QUERY(db, "SELECT version FROM schema_version", "7");
    sqlite3_close(db);
    remove_state(dir);
}

static void test_newer_schema_refused(void **state)
{
    (void)state;
    char *dir = make_state();
    char path[512], err[256] = "";
    make_v3(dir);
    sqlite3 *db = open_db(dir);
    exec_sql(db, "UPDATE schema_version SET version = 99");
    sqlite3_close(db);
    db_path(dir, path, sizeof path);
    assert_int_equal(records_upgrade(path, err, sizeof err), -1);
    assert_non_null(strstr(err, "schema version 99"));
    assert_non_null(strstr(err, "newer outrelay"));
    assert_int_equal(records_open(dir, err, sizeof err), -1);
    db = open_db(dir);
    ASSERT_QUERY(db, "SELECT count(*) FROM pragma_table_info('events') WHERE name = 'nrcpt'", "0");
    sqlite3_close(db);
    remove_state(dir);
}

/* Runs `outrelay report NAME --json -o <dir>/report.json` and returns the JSON (caller frees).
 * The relay's control socket is <dir>/relay.sock (absent unless a test serves it). */
static char *run_report(const char *dir, const char *name)
{
    struct config cfg;
    memset(&cfg, 0, sizeof cfg);
    char sock[600], out[600];
    snprintf(sock, sizeof sock, "%s/relay.sock", dir);
    snprintf(out, sizeof out, "%s/report.json", dir);
    cfg.state = (char *)dir;
    cfg.control_socket = sock;
    char *argv[] = {"report", (char *)name, "--json", "-o", out, NULL};
    assert_int_equal(report_run(&cfg, 5, argv), 0);
    FILE *f = fopen(out, "r");
    assert_non_null(f);
    struct strbuf sb = STRBUF_INIT;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0)
        strbuf_append(&sb, buf, n);
    fclose(f);
    return strbuf_detach(&sb, NULL);
}

/* One number of a report's JSON, by SQLite's json_extract. */
static void assert_json(const char *json, const char *path, const char *expected)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(":memory:", &db), SQLITE_OK);
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT json_extract(?1, ?2)", -1, &st, NULL),
                     SQLITE_OK);
    sqlite3_bind_text(st, 1, json, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, path, -1, SQLITE_STATIC);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    const unsigned char *v = sqlite3_column_text(st, 0);
    if (!v || strcmp((const char *)v, expected) != 0)
        fprintf(stderr, "%s: %s, expected %s\n", path, v ? (const char *)v : "NULL", expected);
    assert_non_null(v);
    assert_string_equal((const char *)v, expected);
    sqlite3_finalize(st);
    sqlite3_close(db);
}

/* The reports read the upgraded rows: the numbers the v3 rows stand for. */
static void test_reports_after_upgrade(void **state)
{
    (void)state;
    char *dir = make_state();
    make_v3(dir);
    char *json = run_report(dir, "continuity"); /* upgrades on open */
    assert_json(json, "$.tables.accounting[0].accepted", "2");
    assert_json(json, "$.tables.accounting[0].complete", "1");
    assert_json(json, "$.tables.accounting[0].unaccounted", "1");
    assert_json(json, "$.tables.open[0].recipients", "1");
    free(json);
    json = run_report(dir, "alignment");
    assert_json(json, "$.tables.summary[0].dkim_signed", "2");
    assert_json(json, "$.tables.summary[0].dkim_aligned", "1");
    free(json);
    json = run_report(dir, "ramp");
    assert_json(json, "$.tables.providers[0].provider", "google");
    assert_json(json, "$.tables.providers[1].provider", "other");
    assert_json(json, "$.tables.providers[1].waiting", "2");
    assert_json(json, "$.tables.caps[0].reason",
                "cap 10/hour reached for cloud x other; waiting in the queue");
    assert_json(json, "$.tables.caps[0].count", "2");
    free(json);
    json = run_report(dir, "delivery");
    assert_json(json, "$.tables.delivery[0].egress", "cloud");
    assert_json(json, "$.tables.delivery[0].provider", "google");
    assert_json(json, "$.tables.delivery[1].provider", "other");
    assert_json(json, "$.tables.delivery[1].bounced", "1");
    free(json);
    remove_state(dir);
}

/* A relay's control socket that answers one request with a canned text. */
struct fake_relay {
    int listen_fd;
    const char *answer;
    char request[128];
};

static void *fake_relay_main(void *arg)
{
    struct fake_relay *fr = arg;
    int fd = accept(fr->listen_fd, NULL, NULL);
    if (fd < 0) return NULL;
    ssize_t n = read(fd, fr->request, sizeof fr->request - 1);
    fr->request[n > 0 ? n : 0] = '\0';
    ssize_t w = write(fd, fr->answer, strlen(fr->answer));
    (void)w;
    close(fd);
    return NULL;
}

/* Serves answer once on <dir>/relay.sock while the continuity report runs; its JSON. */
static char *continuity_with_relay(const char *dir, const char *answer, char *request, size_t size)
{
    struct fake_relay fr = {.answer = answer};
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    snprintf(sun.sun_path, sizeof sun.sun_path, "%s/relay.sock", dir);
    fr.listen_fd = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_true(fr.listen_fd >= 0);
    assert_int_equal(bind(fr.listen_fd, (struct sockaddr *)&sun, sizeof sun), 0);
    assert_int_equal(listen(fr.listen_fd, 1), 0);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, fake_relay_main, &fr), 0);
    char *json = run_report(dir, "continuity");
    pthread_join(t, NULL);
    close(fr.listen_fd);
    unlink(sun.sun_path);
    snprintf(request, size, "%s", fr.request);
    return json;
}

/* Q2 (one recipient, no final state) is in the relay's queue: in_queue, not unaccounted. An
 * answer that is not the queue listing leaves the queue unknown. */
static void test_continuity_reads_queue_json(void **state)
{
    (void)state;
    char *dir = make_state();
    char request[128];
    make_v3(dir);
    char *json = continuity_with_relay(
        dir,
        "OK\n{\"messages\": [{\"queue_id\": \"Q2\", \"held\": false, \"recipients\": "
        "[{\"address\": \"r3@example.net\", \"next_attempt_in\": 60}]}], \"count\": 1}\n",
        request, sizeof request);
    assert_string_equal(request, "queue list --json\n");
    assert_json(json, "$.tables.accounting[0].in_queue", "1");
    assert_json(json, "$.tables.accounting[0].unaccounted", "0");
    assert_json(json, "$.tables.accounting[0].queue", "asked the running relay");
    assert_json(json, "$.tables.open[0].state", "in queue");
    free(json);
    json = continuity_with_relay(dir, "OK\nQ2  1024 a@example.org\n", request, sizeof request);
    assert_json(json, "$.tables.accounting[0].in_queue", "0");
    assert_json(json, "$.tables.accounting[0].queue", "relay not reachable");
    free(json);
    remove_state(dir);
}

static void test_type_names(void **state)
{
    (void)state;
    for (int t = 1; t < RECORD_TYPE_COUNT; t++) {
        const char *name = records_type_name((enum record_type)t);
        assert_non_null(name);
        assert_int_equal(records_type_of(name), t);
    }
    assert_null(records_type_name(0));
    assert_null(records_type_name(RECORD_TYPE_COUNT));
    assert_int_equal(records_type_of("no-such-event"), 0);
    assert_int_equal(records_type_of(NULL), 0);
    assert_string_equal(records_type_name(RECORD_DKIM_UPSTREAM), "dkim-upstream");
}

int main(void)
{
    log_init("test_records_schema", 0, LOG_LEVEL_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_upgrade_from_v3_fills_columns),
        cmocka_unit_test(test_records_open_upgrades),
        cmocka_unit_test(test_upgrade_from_v4_adds_tls_policy),
        cmocka_unit_test(test_newer_schema_refused),
        cmocka_unit_test(test_reports_after_upgrade),
        cmocka_unit_test(test_continuity_reads_queue_json),
        cmocka_unit_test(test_type_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
