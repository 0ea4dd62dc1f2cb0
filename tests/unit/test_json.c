/* test_json.c - unit tests for outrelay/common/json.c: RFC 8259 string escaping (quote,
 * backslash, every control character, DEL; valid UTF-8 kept, invalid bytes replaced so the
 * output always parses), commas and nesting, numbers (non-finite -> null). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/json.h"

static char *escaped(const char *s)
{
    struct strbuf sb = STRBUF_INIT;
    json_escape(&sb, s);
    return strbuf_detach(&sb, NULL);
}

#define assert_escapes(in, want)                                                                   \
    do {                                                                                           \
        char *got_ = escaped(in);                                                                  \
        assert_string_equal(got_, want);                                                           \
        free(got_);                                                                                \
    } while (0)

static void test_escape_specials(void **state)
{
    (void)state;
    assert_escapes("", "\"\"");
    assert_escapes(NULL, "\"\"");
    assert_escapes("plain <a@example.net>", "\"plain <a@example.net>\"");
    assert_escapes("q\"b\\s/", "\"q\\\"b\\\\s/\"");
    assert_escapes("a\nb\rc\td", "\"a\\nb\\rc\\td\"");
    assert_escapes("\x01\x1f\x7f", "\"\\u0001\\u001f\\u007f\"");
    assert_escapes("\b\f", "\"\\u0008\\u000c\"");
}

static void test_escape_every_control_character(void **state)
{
    (void)state;
    for (int c = 1; c < 0x20; c++) {
        char in[2] = {(char)c, 0};
        char *got = escaped(in);
        for (const char *p = got; *p; p++)
            assert_true((unsigned char)*p >= 0x20);
        free(got);
    }
}

static void test_escape_utf8(void **state)
{
    (void)state;
    assert_escapes("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x93\xa7",
                   "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x93\xa7\"");
    assert_escapes("\xff", "\"\\ufffd\"");                       /* never valid */
    assert_escapes("\xc3", "\"\\ufffd\"");                       /* truncated at the end */
    assert_escapes("\xc0\xaf", "\"\\ufffd\\ufffd\"");            /* overlong '/' */
    assert_escapes("\xed\xa0\x80", "\"\\ufffd\\ufffd\\ufffd\""); /* a surrogate */
    assert_escapes("\xf4\x90\x80\x80", "\"\\ufffd\\ufffd\\ufffd\\ufffd\""); /* > U+10FFFF */
    assert_escapes("a\xe2\x82z", "\"a\\ufffd\\ufffdz\"");
}

static void test_writer_nesting(void **state)
{
    (void)state;
    struct strbuf sb = STRBUF_INIT;
    struct json_writer w;
    json_init(&w, &sb);
    json_object_begin(&w, NULL);
    json_string(&w, "id", "Q1");
    json_int(&w, "n", -42);
    json_int(&w, "big", INT64_MAX);
    json_bool(&w, "held", 1);
    json_bool(&w, "no", 0);
    json_null(&w, "none");
    json_string(&w, "nul", NULL);
    json_array_begin(&w, "list");
    json_int(&w, NULL, 1);
    json_object_begin(&w, NULL);
    json_object_end(&w);
    json_array_begin(&w, NULL);
    json_array_end(&w);
    json_string(&w, NULL, "x");
    json_array_end(&w);
    json_double(&w, "share", 12.5);
    json_double(&w, "nan", NAN);
    json_double(&w, "inf", INFINITY);
    json_string(&w, "k\"ey", "v");
    json_object_end(&w);
    assert_int_equal(w.depth, 0);
    assert_string_equal(strbuf_str(&sb),
                        "{\"id\":\"Q1\",\"n\":-42,\"big\":9223372036854775807,\"held\":true,"
                        "\"no\":false,\"none\":null,\"nul\":null,\"list\":[1,{},[],\"x\"],"
                        "\"share\":12.5,\"nan\":null,\"inf\":null,\"k\\\"ey\":\"v\"}");
    strbuf_free(&sb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_escape_specials),
        cmocka_unit_test(test_escape_every_control_character),
        cmocka_unit_test(test_escape_utf8),
        cmocka_unit_test(test_writer_nesting),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
