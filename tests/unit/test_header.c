/* test_header.c - unit tests for outrelay/mail/header.c: walking fields (folded, obsolete
 * "Name :", lines without a colon) and the unfolded copy of a value that ingress stores. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mail/header.h"

static void test_walk_fields(void **state)
{
    (void)state;
    static const char msg[] = "From: a@example.org\r\n"
                              "Subject: one\r\n two\r\n"
                              "no colon here\r\n"
                              "Message-ID : <x@y>\r\n"
                              "\r\n"
                              "Body: not a header\r\n";
    struct mail_header_iter it;
    const char *name, *value;
    size_t name_len, value_len;
    const char *want[] = {"from", "subject", "message-id"};
    size_t n = 0;
    mail_header_begin(&it, msg, sizeof msg - 1);
    while (mail_header_next(&it, &name, &name_len, &value, &value_len)) {
        assert_true(n < 3);
        assert_true(mail_header_name_is(name, name_len, want[n]));
        n++;
    }
    assert_int_equal(n, 3);
}

static void test_value_unfold(void **state)
{
    (void)state;
    static const char value[] = " \t<abc@\r\n\texample.org> \t";
    char *v = mail_header_value_unfold(value, sizeof value - 1);
    assert_string_equal(v, "<abc@\texample.org>");
    assert_true(mail_header_value_is(value, sizeof value - 1, "<ABC@\texample.org>", 1));
    free(v);
    v = mail_header_value_unfold("  ", 2);
    assert_string_equal(v, "");
    free(v);
    /* a NUL ends the value: the white space before it goes too (found by fuzz_header) */
    static const char nul[] = "<id@example.org>\t\0more";
    v = mail_header_value_unfold(nul, sizeof nul - 1);
    assert_string_equal(v, "<id@example.org>");
    free(v);
    /* white space that only touches the end once the fold is gone */
    static const char folded[] = "<id@example.org> \r\n";
    v = mail_header_value_unfold(folded, sizeof folded - 1);
    assert_string_equal(v, "<id@example.org>");
    free(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_walk_fields),
        cmocka_unit_test(test_value_unfold),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
