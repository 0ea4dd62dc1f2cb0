/* test_sts.c - unit tests for outrelay/sts/sts_parse.c: the _mta-sts TXT record (RFC 8461
 * section 3.1: one STSv1 record, others ignored, two of them = none), the policy file (section
 * 3.2: fields, CRLF or LF, max_age clamped, invalid policies refused) and mx pattern matching
 * with the examples of section 4.1. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "sts/sts.h"

static int txt(const char *a, const char *b, char *id)
{
    char *recs[2] = {(char *)a, (char *)b};
    return sts_parse_txt(recs, b ? 2 : 1, id);
}

static void test_txt_record(void **state)
{
    (void)state;
    char id[33];
    assert_int_equal(txt("v=STSv1; id=20160831085700Z;", NULL, id), 0);
    assert_string_equal(id, "20160831085700Z");
    assert_int_equal(txt("v = STSv1 ;id=abc", NULL, id), 0);
    assert_string_equal(id, "abc");
    /* another record beside it is ignored; a second STSv1 record means no policy */
    assert_int_equal(txt("v=spf1 -all", "v=STSv1; id=x1; ext=val", id), 0);
    assert_string_equal(id, "x1");
    assert_int_equal(txt("v=STSv1; id=a", "v=STSv1; id=b", id), -1);
    /* malformed: no id, an id too long or not alphanumeric, not STSv1 at all */
    assert_int_equal(txt("v=STSv1;", NULL, id), -1);
    assert_int_equal(txt("v=STSv1; id=123456789012345678901234567890123", NULL, id), -1);
    assert_int_equal(txt("v=STSv1; id=a-b", NULL, id), -1);
    assert_int_equal(txt("v=STSv2; id=a", NULL, id), -1);
    assert_int_equal(txt("x v=STSv1; id=a", NULL, id), -1);
}

static struct mta_sts_policy *parse(const char *body)
{
    char err[200];
    return sts_parse_policy(body, strlen(body), err, sizeof err);
}

static void test_policy(void **state)
{
    (void)state;
    struct mta_sts_policy *p = parse("version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\n"
                                     "mx: *.example.net\r\nmx: backupmx.example.com\r\n"
                                     "max_age: 604800\r\n");
    assert_non_null(p);
    assert_int_equal(p->mode, STS_MODE_ENFORCE);
    assert_int_equal(p->max_age, 604800);
    assert_int_equal(p->n_mx, 3);
    assert_string_equal(p->mx[1], "*.example.net");
    assert_non_null(strstr(p->text, "mode: enforce\nmx: mail.example.com"));
    assert_true(sts_policy_allows(p, "foo.example.net"));
    assert_false(sts_policy_allows(p, "other.example.com"));
    sts_policy_release(p);

    /* LF endings, spaces around the colon, unknown fields ignored, max_age clamped */
    p = parse("version : STSv1\nmode:testing\nfuture: x\nmx: a.example\nmax_age: 9999999999\n");
    assert_non_null(p);
    assert_int_equal(p->mode, STS_MODE_TESTING);
    assert_int_equal(p->max_age, STS_MAX_AGE_LIMIT);
    sts_policy_release(p);
    /* mode none needs no mx */
    p = parse("version: STSv1\nmode: none\nmax_age: 86400\n");
    assert_non_null(p);
    assert_int_equal(p->mode, STS_MODE_NONE);
    sts_policy_release(p);

    assert_null(parse("version: STSv2\nmode: enforce\nmx: a.example\nmax_age: 1\n"));
    assert_null(parse("version: STSv1\nmode: strict\nmx: a.example\nmax_age: 1\n"));
    assert_null(parse("version: STSv1\nmode: enforce\nmax_age: 1\n"));    /* no mx */
    assert_null(parse("version: STSv1\nmode: enforce\nmx: a.example\n")); /* no max_age */
    assert_null(parse("version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 12345678901\n"));
    assert_null(parse("version: STSv1\nmode: enforce\nmx: a..example\nmax_age: 1\n"));
    assert_null(parse("version: STSv1\nmode: enforce\nmx: a.example.\nmax_age: 1\n"));
    assert_null(parse("<html>not a policy</html>\n"));
    assert_null(parse(""));
}

static void test_mx_patterns(void **state)
{
    (void)state;
    /* RFC 8461 section 4.1 */
    assert_true(sts_mx_matches("mail.example.com", "mail.example.com"));
    assert_true(sts_mx_matches("mail.example.com", "MAIL.Example.COM."));
    assert_true(sts_mx_matches("*.example.net", "mx1.example.net"));
    assert_true(sts_mx_matches("*.example.net", "mx2.example.net"));
    assert_false(sts_mx_matches("*.example.net", "example.net"));
    assert_false(sts_mx_matches("*.example.net", "a.b.example.net"));
    assert_false(sts_mx_matches("*.example.net", "mx1.example.network"));
    assert_false(sts_mx_matches("mail.example.com", "backup.mail.example.com"));
    assert_false(sts_mx_matches("mail.example.com", "example.com"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_txt_record),
        cmocka_unit_test(test_policy),
        cmocka_unit_test(test_mx_patterns),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
