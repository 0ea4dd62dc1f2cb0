/* test_records.c - unit tests for outrelay/records/records.c: rows written from several threads
 * and read back with sqlite3 directly (fields, NULLs, WAL, schema version), the Postfix-style
 * log line, life-cycle edges (emit before open / after close, close twice, reopen) and a
 * printed (not asserted) insert-rate measurement. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <pthread.h>
#include <sqlite3.h>

#include "common/log.h"
#include "common/strbuf.h"
#include "common/clock.h"
#include "common/util.h"
#include "records/records.h"
#include "records/records_internal.h"
#include "capture_stderr.h"
#include "mail/envelope.h"

#define THREAD_EVENTS 1000

static const struct record_event full_event = {
    .type = RECORD_DELIVERED,
    .queue_id = "7F3A2B1C0D",
    .message_id = "<m.1@example.org>",
    .origin = "zimbra",
    .client_addr = "10.0.1.5",
    .sender = "s@example.org",
    .recipient = "a@example.net",
    .egress = "legacy",
    .source_addr = "127.0.0.2",
    .remote_mx = "mx1.example.net",
    .remote_addr = "127.0.0.1:25",
    .reply_code = 250,
    .enhanced_code = "2.0.0",
    .reply_text = "Ok queued as X",
    .tls_version = "TLSv1.3",
    .tls_cipher = "TLS_AES_256_GCM_SHA384",
    .size = 4096,
    .delay_ms = 420,
    .attempt_ms = 130,
    .detail = "first try",
};

/* A fresh directory under /tmp; caller frees. rm -rf at the end of each test. */
static char *make_tmpdir(void)
{
    char *dir = xstrdup("/tmp/test_records.XXXXXX");
    assert_non_null(mkdtemp(dir));
    return dir;
}

static void remove_tree(const char *dir)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

static sqlite3 *open_db(const char *state)
{
    char path[512];
    sqlite3 *db = NULL;
    snprintf(path, sizeof path, "%s/records.db", state);
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    return db;
}

static int64_t query_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static void query_text(sqlite3 *db, const char *sql, char *buf, size_t size)
{
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    const unsigned char *t = sqlite3_column_text(st, 0);
    snprintf(buf, size, "%s", t != NULL ? (const char *)t : "(null)");
    sqlite3_finalize(st);
}

struct emitter {
    int thread;
};

static void *emit_many(void *arg)
{
    const struct emitter *e = arg;
    for (int i = 0; i < THREAD_EVENTS; i++) {
        char qid[32], rcpt[64];
        snprintf(qid, sizeof qid, "T%d-%05d", e->thread, i);
        snprintf(rcpt, sizeof rcpt, "r%d@example.net", i);
        struct record_event ev = {
            .type = (i % 2) ? RECORD_ATTEMPT : RECORD_RECEIVED,
            .queue_id = qid,
            .recipient = rcpt,
            .size = i + 1,
        };
        records_emit(&ev);
        if (i == THREAD_EVENTS / 2)
            records_flush(); /* flushing while the other thread emits must not stall */
    }
    return NULL;
}

static void test_records_emit_before_open_only_logs(void **state)
{
    (void)state;
    log_init("test_records", 0, LOG_LEVEL_WARN);
    records_emit(&full_event);
    records_flush();
    records_close();
    records_emit(NULL);
}

static void test_records_open_fails_cleanly(void **state)
{
    (void)state;
    char *dir = make_tmpdir();
    char file[512], under[600], err[256] = "";
    snprintf(file, sizeof file, "%s/plainfile", dir);
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    fclose(f);
    snprintf(under, sizeof under, "%s/state", file);
    assert_int_equal(records_open(under, err, sizeof err), -1);
    assert_true(strlen(err) > 0);
    assert_int_equal(records_open(file, err, sizeof err), -1);
    records_emit(&full_event); /* still only logs */
    records_close();
    remove_tree(dir);
    free(dir);
}

static void test_records_rows_from_two_threads(void **state)
{
    (void)state;
    log_init("test_records", 0, LOG_LEVEL_WARN);
    char *dir = make_tmpdir();
    char statedir[512], err[256] = "";
    snprintf(statedir, sizeof statedir, "%s/var/state", dir); /* mkdir -p */
    int64_t before = clock_now_us();
    assert_int_equal(records_open(statedir, err, sizeof err), 0);
    assert_int_equal(records_open(statedir, err, sizeof err), -1); /* already open */

    records_emit(&full_event);
    struct record_event minimal = {.type = RECORD_HELD, .queue_id = "MINIMAL1", .sender = ""};
    records_emit(&minimal);
    pthread_t threads[2];
    struct emitter emitters[2] = {{1}, {2}};
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&threads[i], NULL, emit_many, &emitters[i]), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(threads[i], NULL);
    records_flush();
    int64_t after = clock_now_us();

    sqlite3 *db = open_db(statedir);
    char text[256];
    assert_int_equal(query_int(db, "SELECT count(*) FROM events"), 2 + 2 * THREAD_EVENTS);
    assert_int_equal(query_int(db, "SELECT count(DISTINCT queue_id) FROM events"),
                     2 + 2 * THREAD_EVENTS);
    assert_int_equal(query_int(db, "SELECT version FROM schema_version"), 7);
    query_text(db, "PRAGMA journal_mode", text, sizeof text);
    assert_string_equal(text, "wal");
    assert_int_equal(query_int(db, "SELECT count(*) FROM sqlite_master WHERE type='index' AND "
                                   "name IN ('events_queue_id','events_message_id',"
                                   "'events_ts_us','events_event_ts')"),
                     4);
    /* Each thread's rows keep their order. */
    assert_int_equal(query_int(db, "SELECT count(*) FROM events a JOIN events b ON "
                                   "substr(a.queue_id,1,3) = substr(b.queue_id,1,3) AND "
                                   "a.queue_id < b.queue_id AND a.id > b.id"),
                     0);
    assert_int_equal(query_int(db, "SELECT sum(size) FROM events WHERE queue_id LIKE 'T1-%'"),
                     THREAD_EVENTS * (THREAD_EVENTS + 1) / 2);

    /* Every field of the full event. */
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(
                         db,
                         "SELECT ts_us, event, queue_id, message_id, origin, client_addr, sender, "
                         "recipient, egress, source_addr, remote_mx, remote_addr, reply_code, "
                         "enhanced_code, reply_text, tls_version, tls_cipher, size, delay_ms, "
                         "attempt_ms, detail FROM events WHERE queue_id = '7F3A2B1C0D'",
                         -1, &st, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t ts = sqlite3_column_int64(st, 0);
    assert_true(ts >= before && ts <= after);
    const char *expect[] = {"delivered", "7F3A2B1C0D",      "<m.1@example.org>", "zimbra",
                            "10.0.1.5",  "s@example.org",   "a@example.net",     "legacy",
                            "127.0.0.2", "mx1.example.net", "127.0.0.1:25"};
    for (int i = 0; i < 11; i++)
        assert_string_equal((const char *)sqlite3_column_text(st, 1 + i), expect[i]);
    assert_int_equal(sqlite3_column_int(st, 12), 250);
    assert_string_equal((const char *)sqlite3_column_text(st, 13), "2.0.0");
    assert_string_equal((const char *)sqlite3_column_text(st, 14), "Ok queued as X");
    assert_string_equal((const char *)sqlite3_column_text(st, 15), "TLSv1.3");
    assert_string_equal((const char *)sqlite3_column_text(st, 16), "TLS_AES_256_GCM_SHA384");
    assert_int_equal(sqlite3_column_int64(st, 17), 4096);
    assert_int_equal(sqlite3_column_int64(st, 18), 420);
    assert_int_equal(sqlite3_column_int64(st, 19), 130);
    assert_string_equal((const char *)sqlite3_column_text(st, 20), "first try");
    sqlite3_finalize(st);

    /* Unset fields are NULL; the null sender is an empty string, not NULL. */
    assert_int_equal(
        sqlite3_prepare_v2(db, "SELECT * FROM events WHERE queue_id = 'MINIMAL1'", -1, &st, NULL),
        SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int set = 0;
    for (int i = 0; i < sqlite3_column_count(st); i++) {
        const char *name = sqlite3_column_name(st, i);
        if (strcmp(name, "id") == 0 || strcmp(name, "ts_us") == 0 || strcmp(name, "event") == 0 ||
            strcmp(name, "queue_id") == 0 || strcmp(name, "sender") == 0) {
            assert_int_not_equal(sqlite3_column_type(st, i), SQLITE_NULL);
            set++;
        } else {
            assert_int_equal(sqlite3_column_type(st, i), SQLITE_NULL);
        }
    }
    assert_int_equal(set, 5);
    assert_int_equal(sqlite3_column_count(st), 45);
    sqlite3_finalize(st);
    sqlite3_close(db);

    records_close();
    records_close();           /* twice is fine */
    records_emit(&full_event); /* after close: only logs */
    records_flush();

    /* Reopen: the schema exists already, rows stay, new rows append. */
    assert_int_equal(records_open(statedir, err, sizeof err), 0);
    records_emit(&minimal);
    records_close(); /* close flushes */
    db = open_db(statedir);
    assert_int_equal(query_int(db, "SELECT count(*) FROM events"), 3 + 2 * THREAD_EVENTS);
    assert_int_equal(query_int(db, "SELECT count(*) FROM schema_version"), 1);
    sqlite3_close(db);
    remove_tree(dir);
    free(dir);
}

static void emit_examples(void)
{
    struct record_event delivered = {
        .type = RECORD_DELIVERED,
        .queue_id = "7F3A2B1C0D",
        .recipient = "a@example.net",
        .egress = "legacy",
        .remote_mx = "mx1.example.net",
        .remote_addr = "127.0.0.1:25",
        .delay_ms = 420,
        .tls_version = "TLSv1.3",
        .enhanced_code = "2.0.0",
        .reply_code = 250,
        .reply_text = "2.0.0 Ok queued as X",
    };
    struct record_event received = {
        .type = RECORD_RECEIVED,
        .queue_id = "7F3A2B1C0D",
        .sender = "s@example.org",
        .origin = "zimbra",
        .client_addr = "127.0.0.1",
        .message_id = "m.1@example.org",
        .size = 4096,
        .nrcpt = 2,
    };
    struct record_event deferred = {
        .type = RECORD_DEFERRED,
        .queue_id = "7F3A2B1C0E",
        .recipient = "b@example.com",
        .remote_addr = "[2001:db8::25]:25",
        .detail = "connect to mx: Connection refused",
    };
    struct record_event hostile = {
        .type = RECORD_BOUNCED,
        .queue_id = "7F3A2B1C0F",
        .recipient = "c@example.com",
        .reply_code = 550,
        .enhanced_code = "5.1.1",
        .reply_text = "no such user\r\n7F3A2B1C0F: delivered fake",
    };
    records_emit(&delivered);
    records_emit(&received);
    records_emit(&deferred);
    records_emit(&hostile);
    struct record_event routed = {
        .type = RECORD_ROUTED,
        .queue_id = "7F3A2B1C0D",
        .recipient = "a@example.net",
        .provider = "google",
        .route_reason = "ramp 25.00%: bucket 12 -> cloud",
        .action = "ramp",
    };
    struct record_event untyped = {.queue_id = "7F3A2B1C0D"}; /* refused, said once */
    records_emit(&routed);
    records_emit(&untyped);
}

static void test_records_log_lines(void **state)
{
    (void)state;
    char out[8192];
    log_init("test_records", 0, LOG_LEVEL_INFO);
    capture_stderr(emit_examples, out, sizeof out);
    log_init("test_records", 0, LOG_LEVEL_WARN);

    const char *lines[] = {
        "]: 7F3A2B1C0D: delivered to=<a@example.net>, egress=legacy, "
        "relay=mx1.example.net[127.0.0.1]:25, delay=0.42, tls=TLSv1.3, dsn=2.0.0, "
        "status=sent (250 2.0.0 Ok queued as X)\n",
        "]: 7F3A2B1C0D: received from=<s@example.org>, origin=zimbra, "
        "client=127.0.0.1, nrcpt=2, message-id=<m.1@example.org>, size=4096\n",
        "]: 7F3A2B1C0E: deferred to=<b@example.com>, relay=unknown[2001:db8::25]:25, "
        "status=deferred (connect to mx: Connection refused)\n",
        "]: 7F3A2B1C0F: bounced to=<c@example.com>, dsn=5.1.1, "
        "status=bounced (550 5.1.1 no such user??7F3A2B1C0F: delivered fake)\n",
        "]: 7F3A2B1C0D: routed to=<a@example.net>, provider=google, "
        "reason=(ramp 25.00%: bucket 12 -> cloud), action=ramp\n",
        "error: event of unknown type 0 for 7F3A2B1C0D not recorded\n",
    };
    int count = 0;
    for (const char *p = out; (p = strchr(p, '\n')) != NULL; p++)
        count++;
    assert_int_equal(count, 6);
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
        if (strstr(out, lines[i]) == NULL) fail_msg("missing log line %s\nin:\n%s", lines[i], out);
    }
}

static double seconds_since(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) + (double)(t1.tv_nsec - t0->tv_nsec) / 1e9;
}

/* Prints the sustained rate; the number is reported, not asserted (machines differ). */
static void test_records_throughput(void **state)
{
    (void)state;
    const int n = 200000;
    log_init("test_records", 0, LOG_LEVEL_WARN); /* measure the database, not stderr */
    char *dir = make_tmpdir();
    char err[256] = "";
    assert_int_equal(records_open(dir, err, sizeof err), 0);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < n; i++) {
        char qid[32];
        snprintf(qid, sizeof qid, "Q%08d", i);
        struct record_event ev = full_event;
        ev.queue_id = qid;
        records_emit(&ev);
    }
    double emitted = seconds_since(&t0);
    records_flush();
    double committed = seconds_since(&t0);
    printf("records throughput: %d events emitted in %.3f s, committed in %.3f s = %.0f "
           "events/s\n",
           n, emitted, committed, n / committed);
    records_close();
    sqlite3 *db = open_db(dir);
    assert_int_equal(query_int(db, "SELECT count(*) FROM events"), n);
    sqlite3_close(db);
    remove_tree(dir);
    free(dir);
}

/* Rows that arrive one at a time while others are being written (a relay under load) share
 * transactions: at most one commit per gathering interval (50 ms) after the first, where one
 * commit per row was the rule before. A lone row after a quiet spell is committed without a
 * flush, and a flush right after a commit is answered. */
static void test_records_group_commit(void **state)
{
    (void)state;
    log_init("test_records", 0, LOG_LEVEL_WARN);
    char *dir = make_tmpdir();
    char err[256] = "";
    assert_int_equal(records_open(dir, err, sizeof err), 0);
    sqlite3 *db = open_db(dir);

    /* quiet: one row reaches the database by itself */
    struct record_event ev = full_event;
    ev.queue_id = "LONE1";
    records_emit(&ev);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (query_int(db, "SELECT count(*) FROM events") != 1) {
        assert_true(seconds_since(&t0) < 10);
        usleep(5000);
    }

    /* a trickle: 400 rows, about one every 0.5 ms */
    uint64_t commits0 = records_commit_count();
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < 400; i++) {
        char qid[32];
        snprintf(qid, sizeof qid, "T%05d", i);
        ev.queue_id = qid;
        records_emit(&ev);
        usleep(500);
    }
    records_flush();
    double took = seconds_since(&t0);
    uint64_t commits = records_commit_count() - commits0;
    printf("records group commit: 400 rows over %.3f s in %llu transactions\n", took,
           (unsigned long long)commits);
    assert_int_equal(query_int(db, "SELECT count(*) FROM events"), 401);
    assert_true(commits >= 1);
    assert_true((double)commits <= took / 0.050 + 2);

    /* a flush right after a commit is answered (it makes the writer stop gathering) */
    ev.queue_id = "LAST1";
    records_emit(&ev);
    records_flush();
    ev.queue_id = "LAST2";
    records_emit(&ev);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    records_flush();
    assert_true(seconds_since(&t0) < 1.0);
    assert_int_equal(query_int(db, "SELECT count(*) FROM events WHERE queue_id LIKE 'LAST_'"), 2);

    sqlite3_close(db);
    records_close();
    remove_tree(dir);
    free(dir);
}

/* Rows older than the retention are removed when the records open; newer ones stay. */
static void test_records_retention(void **state)
{
    (void)state;
    char *dir = make_tmpdir();
    char err[256] = "";
    records_set_retention(0);
    assert_int_equal(records_open(dir, err, sizeof err), 0);
    struct record_event ev = {.type = RECORD_RECEIVED, .queue_id = "KEEP1"};
    records_emit(&ev);
    records_flush();
    records_close();

    char path[512];
    sqlite3 *db = NULL;
    snprintf(path, sizeof path, "%s/records.db", dir);
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    char sql[256];
    int64_t old = clock_now_us() - 10LL * 86400 * 1000000;
    for (int i = 0; i < 3; i++) {
        snprintf(sql, sizeof sql,
                 "INSERT INTO events (ts_us, event, queue_id) VALUES (%lld, 'received', 'OLD%d')",
                 (long long)(old + i), i);
        assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    }
    sqlite3_close(db);

    records_set_retention(2 * 86400);
    assert_int_equal(records_open(dir, err, sizeof err), 0);
    records_emit(&ev);
    records_flush();
    records_close();
    records_set_retention(0);
    db = open_db(dir);
    assert_int_equal(query_int(db, "SELECT count(*) FROM events WHERE queue_id LIKE 'OLD%'"), 0);
    assert_int_equal(query_int(db, "SELECT count(*) FROM events WHERE queue_id = 'KEEP1'"), 2);
    sqlite3_close(db);
    free(dir);
}

/* The replay at start inserts exactly what the spool proves and records.db lacks: a missing
 * received row (with the arrival time and nrcpt), the final event of a recipient whose row was
 * lost, nothing twice, and no received row for our own DSNs; the barrier passes once the rows
 * are committed. */
static struct envelope *replay_envelope(const char *qid, const char *origin, size_t n)
{
    struct envelope *env = envelope_new();
    snprintf(env->queue_id, sizeof env->queue_id, "%s", qid);
    env->arrival_us = 1795990000123456LL;
    env->arrival = env->arrival_us / 1000000;
    env->origin = xstrdup(origin);
    env->sender = xstrdup("s@example.org");
    env->message_id = xstrdup("<r@example.org>");
    for (size_t i = 0; i < n; i++) {
        char addr[64];
        snprintf(addr, sizeof addr, "r%zu@example.net", i);
        envelope_add_rcpt(env, addr, NULL, 0);
    }
    return env;
}

/* A restart keeps the backoff: the same per-message read counts each open recipient's deferred
 * rows and takes its due time from the newest (its ts + next_attempt_s), whatever the order the
 * rows come in; a final recipient and one without rows stay at zero (due now). */
static void test_records_retry_add(void **state)
{
    (void)state;
    struct records_retry r = {0};
    records_retry_add(&r, 1796000100500000LL, 3600);
    records_retry_add(&r, 1796000000900000LL, 60); /* an older row read later */
    assert_int_equal(r.attempts, 2);
    assert_int_equal(r.last_us, 1796000100500000LL);
    assert_int_equal(r.due, 1796000100LL + 3600);
    records_retry_add(&r, 1796003700000000LL, -5); /* no next_attempt_s: due at its time */
    assert_int_equal(r.attempts, 3);
    assert_int_equal(r.due, 1796003700LL);
}

static void test_records_replay_retry(void **state)
{
    (void)state;
    log_init("test_records", 0, LOG_LEVEL_WARN);
    char *dir = make_tmpdir();
    char err[256] = "";
    assert_int_equal(records_open(dir, err, sizeof err), 0);
    struct record_event rcv = {.type = RECORD_RECEIVED, .queue_id = "RPR1", .nrcpt = 3};
    records_emit(&rcv);
    int64_t t0 = 1796000000000000LL;
    for (int k = 0; k < 3; k++) { /* r0: three failed attempts, backoff 60, 600, 3600 */
        static const int64_t wait[] = {60, 600, 3600};
        struct record_event ev = {.type = RECORD_DEFERRED,
                                  .queue_id = "RPR1",
                                  .recipient = "r0@example.net",
                                  .next_attempt_s = wait[k]};
        records_emit_at(&ev, t0 + k * 1000000000LL);
    }
    struct record_event r2 = {.type = RECORD_DEFERRED,
                              .queue_id = "RPR1",
                              .recipient = "r2@example.net",
                              .next_attempt_s = 60};
    records_emit_at(&r2, t0);
    struct record_event other = r2; /* another message's row for the same address */
    other.queue_id = "RPR2";
    records_emit_at(&other, t0 + 5000000000LL);
    records_flush();

    struct records_replay *rp = records_replay_open(dir, err, sizeof err);
    assert_non_null(rp);
    struct envelope *env = replay_envelope("RPR1", "zimbra", 3);
    struct records_retry retry[3];
    memset(retry, 0xff, sizeof retry); /* filled, not added to */
    assert_int_equal(records_replay_message(rp, env, "\0\0D", 0, retry), 1); /* r2 delivered */
    assert_int_equal(retry[0].attempts, 3);
    assert_int_equal(retry[0].due, t0 / 1000000 + 2000 + 3600);
    assert_int_equal(retry[1].attempts, 0); /* no rows: due now */
    assert_int_equal(retry[1].due, 0);
    assert_int_equal(retry[2].attempts, 0); /* final: no next try */
    records_replay_close(rp, NULL, NULL);
    records_close();
    envelope_free(env);
    remove_tree(dir);
    free(dir);
}

static void test_records_replay_from_spool(void **state)
{
    (void)state;
    log_init("test_records", 0, LOG_LEVEL_WARN);
    char *dir = make_tmpdir();
    char err[256] = "";
    assert_int_equal(records_open(dir, err, sizeof err), 0);
    struct record_event rcv = {.type = RECORD_RECEIVED, .queue_id = "RPQ1", .nrcpt = 2};
    struct record_event dlv = {
        .type = RECORD_DELIVERED, .queue_id = "RPQ1", .recipient = "r0@example.net"};
    records_emit(&rcv);
    records_emit(&dlv);
    records_flush();

    struct records_replay *rp = records_replay_open(dir, err, sizeof err);
    assert_non_null(rp);
    struct envelope *q1 = replay_envelope("RPQ1", "zimbra", 2);
    struct envelope *q2 = replay_envelope("RPQ2", "dsn", 1);
    struct envelope *q3 = replay_envelope("RPQ3", "zimbra", 1);
    assert_int_equal(records_replay_message(rp, q1, "DB", 0, NULL), 1); /* the bounce only */
    assert_int_equal(records_replay_message(rp, q2, "D", 0, NULL), 1);  /* no received */
    assert_int_equal(records_replay_message(rp, q3, "\0", 1, NULL), 2); /* received, deleted */
    uint64_t token = records_barrier();
    records_flush();
    assert_true(records_barrier_passed(token));
    assert_int_equal(records_replay_message(rp, q1, "DB", 0, NULL), 0); /* nothing twice */
    long messages = 0, rows = 0;
    records_replay_close(rp, &messages, &rows);
    assert_int_equal(messages, 3);
    assert_int_equal(rows, 4);
    records_close();

    sqlite3 *db = open_db(dir);
    char text[256];
    assert_int_equal(query_int(db, "SELECT count(*) FROM events WHERE queue_id='RPQ1' AND "
                                   "event='bounced' AND recipient='r1@example.net' AND detail "
                                   "LIKE 'replayed from spool at start%'"),
                     1);
    assert_int_equal(query_int(db, "SELECT count(*) FROM events WHERE queue_id='RPQ2'"), 1);
    query_text(db, "SELECT event FROM events WHERE queue_id='RPQ2'", text, sizeof text);
    assert_string_equal(text, "delivered");
    query_text(db, "SELECT detail FROM events WHERE queue_id='RPQ3' AND event='received'", text,
               sizeof text);
    assert_string_equal(text, "replayed from spool at start");
    assert_int_equal(query_int(db, "SELECT nrcpt FROM events WHERE queue_id='RPQ3' AND "
                                   "event='received'"),
                     1);
    assert_int_equal(query_int(db, "SELECT ts_us FROM events WHERE queue_id='RPQ3' AND "
                                   "event='received'"),
                     1795990000123456LL);
    assert_int_equal(query_int(db, "SELECT count(*) FROM events WHERE queue_id='RPQ3' AND "
                                   "event='deleted'"),
                     1);
    sqlite3_close(db);
    envelope_free(q1);
    envelope_free(q2);
    envelope_free(q3);
    remove_tree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_records_emit_before_open_only_logs),
        cmocka_unit_test(test_records_open_fails_cleanly),
        cmocka_unit_test(test_records_rows_from_two_threads),
        cmocka_unit_test(test_records_log_lines),
        cmocka_unit_test(test_records_throughput),
        cmocka_unit_test(test_records_group_commit),
        cmocka_unit_test(test_records_retention),
        cmocka_unit_test(test_records_replay_from_spool),
        cmocka_unit_test(test_records_retry_add),
        cmocka_unit_test(test_records_replay_retry),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
