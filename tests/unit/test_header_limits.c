/* test_header_limits.c - unit tests for outrelay/mail/header_limits.c: one From: field passes,
 * a second one (also written "From :" or "FROM:") is found, a From: in the body is not, a field
 * of exactly MAIL_MAX_HEADER_FIELD bytes passes and one byte more (folded or not) does not. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "common/strbuf.h"
#include "mail/header_limits.h"

static enum mail_header_fault check(const char *s)
{
    return mail_header_check(s, strlen(s));
}

static void test_from_fields(void **state)
{
    (void)state;
    assert_int_equal(check("From: a@example.org\r\nTo: b@example.net\r\n\r\nbody\r\n"),
                     MAIL_HEADER_OK);
    assert_int_equal(check("From: a@example.org\r\nX-From: c\r\nFromage: d\r\n\r\n"),
                     MAIL_HEADER_OK);
    assert_int_equal(check("From: a@example.org\r\n\r\nFrom: in the body\r\n"), MAIL_HEADER_OK);
    assert_int_equal(check("Subject: no from at all\r\n\r\n"), MAIL_HEADER_OK);
    assert_int_equal(check("From: a@example.org\r\nFROM: b@example.org\r\n\r\n"),
                     MAIL_HEADER_SEVERAL_FROM);
    assert_int_equal(check("From: a@example.org\r\nFrom : b@example.org\r\n\r\n"),
                     MAIL_HEADER_SEVERAL_FROM);
    assert_int_equal(check("From: a@example.org\r\nFrom: b@example.org"), /* no body */
                     MAIL_HEADER_SEVERAL_FROM);
    assert_non_null(strstr(mail_header_fault_text(MAIL_HEADER_SEVERAL_FROM), "From:"));
}

static void test_field_length(void **state)
{
    (void)state;
    struct strbuf m = STRBUF_INIT;
    strbuf_puts(&m, "From: a@example.org\r\nSubject: ");
    while (m.len - strlen("From: a@example.org\r\n") < MAIL_MAX_HEADER_FIELD)
        strbuf_append(&m, "x", 1);
    strbuf_puts(&m, "\r\n\r\nbody\r\n");
    assert_int_equal(mail_header_check(m.data, m.len), MAIL_HEADER_OK);

    strbuf_reset(&m);
    strbuf_puts(&m, "From: a@example.org\r\nSubject: ");
    while (m.len - strlen("From: a@example.org\r\n") < MAIL_MAX_HEADER_FIELD + 1)
        strbuf_append(&m, "x", 1);
    strbuf_puts(&m, "\r\n\r\n");
    assert_int_equal(mail_header_check(m.data, m.len), MAIL_HEADER_FIELD_TOO_LONG);

    /* folded: 1,000 continuation lines of 80 bytes make one field of 82,000 bytes */
    strbuf_reset(&m);
    strbuf_puts(&m, "From: a@example.org\r\nReferences:");
    for (int i = 0; i < 1000; i++)
        strbuf_printf(&m, "\r\n <%076d>", i);
    strbuf_puts(&m, "\r\nTo: b@example.net\r\n\r\n");
    assert_int_equal(mail_header_check(m.data, m.len), MAIL_HEADER_FIELD_TOO_LONG);

    /* many short fields are fine, however many bytes they add up to */
    strbuf_reset(&m);
    strbuf_puts(&m, "From: a@example.org\r\n");
    for (int i = 0; i < 2000; i++)
        strbuf_printf(&m, "X-Trace-%d: %076d\r\n", i, i);
    strbuf_puts(&m, "\r\n");
    assert_int_equal(mail_header_check(m.data, m.len), MAIL_HEADER_OK);
    strbuf_free(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_from_fields),
        cmocka_unit_test(test_field_length),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
