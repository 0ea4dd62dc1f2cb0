/* test_log.c - unit tests for outrelay/common/log.c: the stage taken from a message's own
 * "smtpd: " prefix (known stages only, so a queue ID is never a stage), the Postfix-like text
 * line with and without our timestamp (not under the journal), the level word, newlines folded,
 * JSON lines with ts, level, stage, pid and an escaped msg, the timestamp kept per second (right
 * when the second changes, forwards and backwards), log_text cutting where log_msg does, and
 * held lines (log_hold_*): nothing written before the flush, one kick per batch, a warning
 * flushing what is held first, 64 KiB flushing at once, another thread writing at once. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/strbuf.h"
#include "capture_stderr.h"

#define T0_US 1796083200123456LL /* 2026-12-01T00:00:00.123456Z */

static void test_stage(void **state)
{
    (void)state;
    size_t skip;
    assert_string_equal(log_stage("smtpd: connect from x", &skip), "smtpd");
    assert_int_equal(skip, 7);
    assert_string_equal(log_stage("records: 12 events replayed", &skip), "records");
    assert_int_equal(skip, 9);
    assert_string_equal(log_stage("spool: compaction", &skip), "spool");
    assert_string_equal(log_stage("control: listening", &skip), "control");
    assert_string_equal(log_stage("config: x.yaml:1:1: y", &skip), "config");
    assert_string_equal(log_stage("reload: 2 DKIM keys", &skip), "main");
    assert_int_equal(skip, 0);
    assert_string_equal(log_stage("outrelay: stopped", &skip), "main");
    assert_int_equal(skip, 10);
    /* a queue ID, an unknown word, no space after the colon, nothing: stage main, nothing cut */
    assert_string_equal(log_stage("4F2A9C01D3: to=<a@b>, status=sent", &skip), "main");
    assert_int_equal(skip, 0);
    assert_string_equal(log_stage("nonsense: x", &skip), "main");
    assert_int_equal(skip, 0);
    assert_string_equal(log_stage("smtpd:x", &skip), "main");
    assert_int_equal(skip, 0);
    assert_string_equal(log_stage("smtpdx: y", &skip), "main");
    assert_int_equal(skip, 0);
    assert_string_equal(log_stage("", &skip), "main");
    assert_int_equal(skip, 0);
}

static void test_text(void **state)
{
    (void)state;
    struct strbuf sb = STRBUF_INIT;
    log_format_line(&sb, 0, 0, LOG_LEVEL_INFO, T0_US, "outrelay", 42,
                    "smtpd: connect from [127.0.0.1]");
    assert_string_equal(sb.data,
                        "2026-12-01T00:00:00.123Z outrelay/smtpd[42]: connect from [127.0.0.1]\n");
    strbuf_reset(&sb);
    log_format_line(&sb, 0, 0, LOG_LEVEL_WARN, T0_US, "outrelay", 42, "4F2A: not stored\nforged");
    assert_string_equal(
        sb.data, "2026-12-01T00:00:00.123Z outrelay/main[42]: warning: 4F2A: not stored forged\n");
    strbuf_reset(&sb);
    /* under the journal: no timestamp of our own, the priority as "<N>" */
    log_format_line(&sb, 0, 1, LOG_LEVEL_ERROR, T0_US, "outrelay", 7, "spool: write failed");
    assert_string_equal(sb.data, "<3>outrelay/spool[7]: error: write failed\n");
    strbuf_reset(&sb);
    log_format_line(&sb, 0, 1, LOG_LEVEL_INFO, T0_US, "outrelay", 7, "queue: x");
    assert_string_equal(sb.data, "<6>outrelay/queue[7]: x\n");
    strbuf_free(&sb);
}

static void test_json(void **state)
{
    (void)state;
    struct strbuf sb = STRBUF_INIT;
    log_format_line(&sb, 1, 0, LOG_LEVEL_INFO, T0_US, "outrelay", 42,
                    "smtpd: from=<\"odd\\name\"@x> \x01\ttab\n");
    assert_string_equal(sb.data, "{\"ts\":\"2026-12-01T00:00:00.123Z\",\"level\":\"info\","
                                 "\"stage\":\"smtpd\",\"pid\":42,"
                                 "\"msg\":\"from=<\\\"odd\\\\name\\\"@x> \\u0001\\ttab\\n\"}\n");
    strbuf_reset(&sb);
    /* the journal flag changes nothing in JSON; a byte that is not UTF-8 becomes U+FFFD */
    log_format_line(&sb, 1, 1, LOG_LEVEL_WARN, T0_US, "outrelay", 1, "caf\xc3\xa9 \xff");
    assert_string_equal(sb.data, "{\"ts\":\"2026-12-01T00:00:00.123Z\",\"level\":\"warning\","
                                 "\"stage\":\"main\",\"pid\":1,\"msg\":\"caf\xc3\xa9 \\ufffd\"}\n");
    assert_null(memchr(sb.data, '\n', sb.len - 1)); /* one line */
    strbuf_free(&sb);
}

/* The date part is kept per second and thread: every change of second (next millisecond's
 * second, a day back, a year on) must show, and the milliseconds are never cached. */
static void test_stamp_per_second(void **state)
{
    (void)state;
    static const struct {
        int64_t us;
        const char *want;
    } cases[] = {
        {T0_US, "2026-12-01T00:00:00.123Z"},
        {T0_US + 1000, "2026-12-01T00:00:00.124Z"},
        {T0_US + 876544, "2026-12-01T00:00:01.000Z"},
        {T0_US + 875000, "2026-12-01T00:00:00.998Z"}, /* back into the second before */
        {T0_US - 86400LL * 1000000 - 116000, "2026-11-30T00:00:00.007Z"},
        {T0_US + 31LL * 86400 * 1000000 - 124000, "2026-12-31T23:59:59.999Z"},
        {T0_US + 31LL * 86400 * 1000000 + 875544, "2027-01-01T00:00:00.999Z"},
        {T0_US, "2026-12-01T00:00:00.123Z"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct strbuf sb = STRBUF_INIT;
        log_format_line(&sb, 0, 0, LOG_LEVEL_INFO, cases[i].us, "outrelay", 42, "queue: x");
        char want[128];
        snprintf(want, sizeof want, "%s outrelay/queue[42]: x\n", cases[i].want);
        assert_string_equal(sb.data, want);
        strbuf_reset(&sb);
        log_format_line(&sb, 1, 0, LOG_LEVEL_INFO, cases[i].us, "outrelay", 42, "x");
        snprintf(want, sizeof want, "{\"ts\":\"%s\"", cases[i].want);
        assert_memory_equal(sb.data, want, strlen(want));
        strbuf_free(&sb);
    }
}

static char long_text[6000];

static void write_long_by_text(void)
{
    log_text(LOG_LEVEL_WARN, long_text, strlen(long_text));
    log_text(LOG_LEVEL_DEBUG, "queue: below the level", 22);
}

static void write_long_by_msg(void)
{
    log_msg(LOG_LEVEL_WARN, "%s", long_text);
    log_msg(LOG_LEVEL_DEBUG, "queue: below the level");
}

/* log_text (a finished text) writes the line log_msg writes for the same text: stage, level
 * word, a newline folded, cut at LOG_TEXT_MAX - 1 bytes; nothing below the level. */
static void test_log_text_as_log_msg(void **state)
{
    (void)state;
    memset(long_text, 'a', sizeof long_text - 1);
    memcpy(long_text, "smtpd: one\nline ", 16);
    log_init("outrelay", LOG_TO_STDERR, LOG_LEVEL_INFO);
    assert_false(log_enabled(LOG_LEVEL_DEBUG));
    assert_true(log_enabled(LOG_LEVEL_INFO));
    char *by_text = calloc(1, 16384), *by_msg = calloc(1, 16384);
    assert_non_null(by_text);
    assert_non_null(by_msg);
    capture_stderr(write_long_by_text, by_text, 16384);
    capture_stderr(write_long_by_msg, by_msg, 16384);
    /* the timestamps may differ by a millisecond: compare from the ident on */
    const char *t = strstr(by_text, " outrelay/"), *m = strstr(by_msg, " outrelay/");
    assert_non_null(t);
    assert_non_null(m);
    assert_string_equal(t, m);
    char head[64];
    snprintf(head, sizeof head, " outrelay/smtpd[%ld]: warning: one line aaa", (long)getpid());
    assert_memory_equal(t, head, strlen(head));
    const char *nl = strchr(t, '\n');
    assert_non_null(nl);
    assert_null(strchr(nl + 1, '\n')); /* one line, the debug one not written */
    const char *body = strstr(t, "one line ");
    assert_int_equal(nl - body, LOG_TEXT_MAX - 1 - 7); /* the text minus "smtpd: " */
    free(by_text);
    free(by_msg);
}

/* --- held lines ------------------------------------------------------------------------- */

static int kicks;
static void count_kick(void *arg)
{
    (void)arg;
    kicks++;
}

/* bytes written to fd 2 so far (it is the capture file inside capture_stderr) */
static long written(void)
{
    struct stat st;
    assert_int_equal(fstat(2, &st), 0);
    return (long)st.st_size;
}

static void *other_thread(void *arg)
{
    (void)arg;
    log_info("queue: from another thread");
    return NULL;
}

static void write_held(void)
{
    kicks = 0;
    log_hold_start(count_kick, NULL);
    log_info("smtpd: one");
    log_info("queue: two");
    assert_int_equal(written(), 0); /* held */
    assert_int_equal(kicks, 1);     /* once per batch */
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, other_thread, NULL), 0);
    pthread_join(t, NULL);
    long other = written();
    assert_true(other > 0); /* another thread's line is not held */
    log_hold_flush();
    long after_flush = written();
    assert_true(after_flush > other);
    log_info("queue: three");
    assert_int_equal(kicks, 2); /* a new batch */
    assert_int_equal(written(), after_flush);
    log_warn("queue: four"); /* leaves at once, after three */
    long after_warn = written();
    assert_true(after_warn > after_flush);
    log_debug("queue: below the level"); /* neither held nor written */
    log_hold_flush();
    assert_int_equal(written(), after_warn);
    /* 64 KiB held leave without waiting for the flush */
    static char big[3000];
    memset(big, 'b', sizeof big - 1);
    int n = 0;
    while (written() == after_warn && n < 100) {
        log_info("queue: %s", big);
        n++;
    }
    assert_true(n >= 20 && n < 30);
    log_info("queue: five");
    log_hold_stop();            /* flushes */
    log_info("queue: six");     /* no longer held */
    assert_int_equal(kicks, 4); /* one, three, the first big line, five */
}

static void test_held_lines(void **state)
{
    (void)state;
    log_init("outrelay", LOG_TO_STDERR, LOG_LEVEL_INFO);
    char *out = calloc(1, 262144);
    assert_non_null(out);
    capture_stderr(write_held, out, 262144);
    /* every line once, in the loop thread's order (the other thread's line came first) */
    const char *order[] = {
        "from another thread", "one\n", "two\n", "three\n", "four\n", "five\n", "six\n"};
    const char *at = out;
    for (size_t i = 0; i < sizeof order / sizeof *order; i++) {
        const char *p = strstr(at, order[i]);
        assert_non_null(p);
        at = p;
    }
    assert_non_null(strstr(out, "outrelay/queue["));
    assert_non_null(strstr(out, "warning: four"));
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stage),
        cmocka_unit_test(test_text),
        cmocka_unit_test(test_json),
        cmocka_unit_test(test_stamp_per_second),
        cmocka_unit_test(test_log_text_as_log_msg),
        cmocka_unit_test(test_held_lines),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
