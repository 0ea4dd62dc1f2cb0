/* test_strbuf.c - unit tests for outrelay/common/strbuf.c: the buffer is NUL-terminated after
 * len bytes from its first allocation on, including when it is detached empty (an empty
 * Message-ID: once handed heap garbage to the log, the spool and records.db); strbuf_put_int
 * writes what "%lld" writes, the extremes included. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/strbuf.h"

static void test_detach_empty_is_a_string(void **state)
{
    (void)state;
    struct strbuf sb = STRBUF_INIT;
    size_t len = 99;
    char *p = strbuf_detach(&sb, &len);
    assert_non_null(p);
    assert_int_equal(len, 0);
    assert_int_equal(p[0], '\0'); /* ASan fills fresh heap with 0xbe: fails without the fix */
    free(p);
}

static void test_reserve_then_detach(void **state)
{
    (void)state;
    struct strbuf sb = STRBUF_INIT;
    strbuf_reserve(&sb, 500);
    assert_int_equal(sb.data[0], '\0');
    char *p = strbuf_detach(&sb, NULL);
    assert_string_equal(p, "");
    free(p);
}

static void test_append_reset_reuse(void **state)
{
    (void)state;
    struct strbuf sb = STRBUF_INIT;
    strbuf_append(&sb, "abc\0def", 7);
    assert_int_equal(sb.len, 7);
    assert_memory_equal(sb.data, "abc\0def", 8);
    strbuf_reset(&sb);
    assert_string_equal(strbuf_str(&sb), "");
    strbuf_printf(&sb, "%d-%s", 42, "x");
    assert_string_equal(strbuf_str(&sb), "42-x");
    strbuf_free(&sb);
    assert_string_equal(strbuf_str(&sb), "");
}

static void test_put_int_as_printf(void **state)
{
    (void)state;
    const int64_t values[] = {0,         7,        -7, 10, 4096, -1000000, 1796083200123456LL,
                              INT64_MAX, INT64_MIN};
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        struct strbuf sb = STRBUF_INIT;
        char want[32];
        snprintf(want, sizeof want, "%lld", (long long)values[i]);
        strbuf_puts(&sb, "n=");
        strbuf_put_int(&sb, values[i]);
        assert_string_equal(sb.data + 2, want);
        assert_int_equal(sb.len, 2 + strlen(want));
        strbuf_free(&sb);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_detach_empty_is_a_string),
        cmocka_unit_test(test_reserve_then_detach),
        cmocka_unit_test(test_append_reset_reuse),
        cmocka_unit_test(test_put_int_as_printf),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
