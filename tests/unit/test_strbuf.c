/* test_strbuf.c - unit tests for outrelay/common/strbuf.c: the buffer is NUL-terminated after
 * len bytes from its first allocation on, including when it is detached empty (an empty
 * Message-ID: once handed heap garbage to the log, the spool and records.db). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_detach_empty_is_a_string),
        cmocka_unit_test(test_reserve_then_detach),
        cmocka_unit_test(test_append_reset_reuse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
