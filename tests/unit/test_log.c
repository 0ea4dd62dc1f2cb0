/* test_log.c - unit tests for outrelay/common/log.c: the stage taken from a message's own
 * "smtpd: " prefix (known stages only, so a queue ID is never a stage), the Postfix-like text
 * line with and without our timestamp (not under the journal), the level word, newlines folded,
 * and JSON lines with ts, level, stage, pid and an escaped msg. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "common/log.h"
#include "common/strbuf.h"

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stage),
        cmocka_unit_test(test_text),
        cmocka_unit_test(test_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
