/* test_address.c - unit tests for outrelay/mail/address.c, the RFC 5322 address-list parser:
 * display names with quoted specials and comments that look like addresses (the author domain
 * must come from the real address), encoded words, folding, groups, obsolete routes and empty
 * elements, and what counts as no author domain (several domains, none, bad syntax). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mail/address.h"

static void author(const char *value, const char *want)
{
    const char *why = NULL;
    char *d = mail_author_domain(value, &why);
    if (!want) {
        if (d) print_message("%s -> %s, expected none\n", value, d);
        assert_null(d);
        assert_non_null(why);
        return;
    }
    if (!d || strcmp(d, want) != 0)
        print_message("%s -> %s (%s), expected %s\n", value, d ? d : "NULL", why ? why : "",
                      want);
    assert_non_null(d);
    assert_string_equal(d, want);
    free(d);
}

static void test_display_names_that_look_like_addresses(void **state)
{
    (void)state;
    author("\"Bob <bob@other.example>\" <alice@example.org>", "example.org");
    author("alice@example.org (Alice <x@other.example>)", "example.org");
    author("(x@other.example) alice@example.org", "example.org");
    author("\"bob@other.example\" <alice@Example.ORG>", "example.org");
    author("Alice (comment (nested @other.example) ) <alice@example.org>", "example.org");
    author("\"quote \\\" inside <x@other.example>\" <alice@example.org>", "example.org");
    author("(paren \\) inside x@other.example) alice@example.org", "example.org");
}

static void test_plain_forms(void **state)
{
    (void)state;
    author("alice@example.org", "example.org");
    author("<alice@example.org>", "example.org");
    author("Alice Example <alice@example.org>", "example.org");
    author("  Alice\r\n\t<alice@example.org>\r\n", "example.org"); /* folded */
    author("\"john doe\"@example.org", "example.org");
    author("alice@example.org.", "example.org");
    author("=?utf-8?q?Bob=40other?= <alice@example.org>", "example.org");
    author("=?utf-8?B?Qm9iIDxib2JAb3RoZXIuZXhhbXBsZT4=?= <alice@example.org>", "example.org");
    author("<@route.example,@other.example:alice@example.org>", "example.org"); /* obs-route */
    author("alice@[192.0.2.1]", "[192.0.2.1]");
    author("Team: alice@example.org, bob@example.org;", "example.org"); /* group */
    author("alice@example.org, , Bob <bob@sub.example.org>", NULL);       /* two domains */
    author("alice@example.org, Alice Two <alice2@EXAMPLE.org>", "example.org");
}

static void test_no_author_domain(void **state)
{
    (void)state;
    author("", NULL);
    author("undisclosed-recipients:;", NULL);
    author("alice@example.org, bob@other.example", NULL);
    author("Alice", NULL);
    author("<alice>", NULL);
    author("alice@", NULL);
    author("\"unterminated <alice@example.org>", NULL);
    author("alice@example.org (unterminated", NULL);
    author("<alice@example.org", NULL);
    author("bob@other.example <alice@example.org>", NULL); /* unquoted '@' in a display name */
    author("alice@example..org", NULL);
    /* an encoded word is no domain or local part (RFC 2047 section 5): what it encloses would
     * become the author domain (fuzz finding: '@' and capitals in the domain) */
    author("a@=?x?q?y@Z?=", NULL);
    author("Me <a@=?x?q?y@Z?=>", NULL);
    author("=?x?q?y<z>?=@example.org", NULL);
    /* longer than a domain or a local part may be: refused, never cut short (fuzz seed) */
    char lit[400] = "Me@[";
    memset(lit + 4, '1', 300);
    strcpy(lit + 304, "]");
    author(lit, NULL);
    char longdom[400] = "me@";
    memset(longdom + 3, 'a', 300);
    strcpy(longdom + 303, ".example");
    author(longdom, NULL);
}

static void test_list_counts_and_bounds(void **state)
{
    (void)state;
    struct mail_address a[2];
    const char *why = NULL;
    int n = mail_parse_address_list("a@x.example, Group: b@y.example, c@z.example;, d@w.example",
                                    a, 2, &why);
    assert_int_equal(n, 4); /* only two stored */
    assert_string_equal(a[0].local, "a");
    assert_string_equal(a[1].domain, "y.example");
    n = mail_parse_address_list("\"x y\"@q.example", a, 2, &why);
    assert_int_equal(n, 1);
    assert_string_equal(a[0].local, "x y");
    /* a local part longer than any address may hold is refused, not cut short or overflowed */
    char big[5000];
    memset(big, 'a', sizeof big);
    memcpy(big + sizeof big - 20, "@example.org", 13);
    n = mail_parse_address_list(big, a, 2, &why);
    assert_int_equal(n, -1);
    assert_string_equal(why, "local part too long");
    /* a long display name is fine: only the address must fit */
    memset(big, 'a', sizeof big);
    memcpy(big + sizeof big - 30, " <bob@example.org>", 19);
    n = mail_parse_address_list(big, a, 2, &why);
    assert_int_equal(n, 1);
    assert_string_equal(a[0].domain, "example.org");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_display_names_that_look_like_addresses),
        cmocka_unit_test(test_plain_forms),
        cmocka_unit_test(test_no_author_domain),
        cmocka_unit_test(test_list_counts_and_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
