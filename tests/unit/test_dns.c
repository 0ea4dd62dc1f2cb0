/* test_dns.c - unit tests for dns_parse_packet() (outrelay/dns/dns.c) on hand-built wire answers,
 * including what whoever controls a sender's DNS can publish: an empty TXT RDATA, a character
 * string longer than its RDATA, a truncated packet. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dns/dns.h"

/* A response for "a.example" TXT with one answer whose RDATA is `rdata` (rdlen bytes). */
static size_t build_txt(unsigned char *buf, const unsigned char *rdata, size_t rdlen)
{
    static const unsigned char head[] = {
        0x12, 0x34, 0x81, 0x80, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, /* header */
        1,    'a',  7,    'e',  'x',  'a',  'm',  'p',  'l',  'e',  0,          /* qname */
        0x00, 0x10, 0x00, 0x01,                                                 /* TXT IN */
        0xc0, 0x0c, 0x00, 0x10, 0x00, 0x01, 0x00, 0x00, 0x01, 0x2c,             /* an: TTL 300 */
    };
    memcpy(buf, head, sizeof head);
    size_t n = sizeof head;
    buf[n++] = (unsigned char)(rdlen >> 8);
    buf[n++] = (unsigned char)rdlen;
    memcpy(buf + n, rdata, rdlen);
    return n + rdlen;
}

static void parse_txt(const unsigned char *rdata, size_t rdlen, struct dns_answer *a)
{
    unsigned char pkt[600];
    size_t n = build_txt(pkt, rdata, rdlen);
    memset(a, 0, sizeof *a);
    dns_parse_packet(DNS_TYPE_TXT, pkt, (int)n, a);
}

static void test_txt_empty_rdata(void **state)
{
    (void)state;
    struct dns_answer a;
    parse_txt((const unsigned char *)"", 0, &a);
    assert_int_equal(a.status, DNS_OK);
    assert_int_equal(a.n, 1);
    assert_int_equal(strlen(a.txt[0]), 0); /* reads heap garbage without the fix */
    assert_int_equal(a.ttl, 300);
    dns_answer_free(&a);
}

static void test_txt_strings_joined(void **state)
{
    (void)state;
    struct dns_answer a;
    static const unsigned char rd[] = {5, 'v', '=', 'D', 'K', 'I', 3, 'M', '1', ';'};
    parse_txt(rd, sizeof rd, &a);
    assert_int_equal(a.n, 1);
    assert_string_equal(a.txt[0], "v=DKIM1;");
    dns_answer_free(&a);
}

static void test_txt_string_longer_than_rdata(void **state)
{
    (void)state;
    struct dns_answer a;
    static const unsigned char rd[] = {3, 'a', 'b', 'c', 200, 'x'};
    parse_txt(rd, sizeof rd, &a);
    assert_int_equal(a.n, 1);
    assert_string_equal(a.txt[0], "abc"); /* the overlong string is dropped, nothing read past */
    dns_answer_free(&a);
}

static void test_truncated_packet(void **state)
{
    (void)state;
    unsigned char pkt[600];
    static const unsigned char rd[] = {3, 'a', 'b', 'c'};
    size_t n = build_txt(pkt, rd, sizeof rd);
    for (size_t cut = 0; cut < n; cut++) {
        struct dns_answer a;
        memset(&a, 0, sizeof a);
        dns_parse_packet(DNS_TYPE_TXT, pkt, (int)cut, &a);
        assert_true(a.n == 0 || a.status == DNS_OK);
        dns_answer_free(&a);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_txt_empty_rdata),
        cmocka_unit_test(test_txt_strings_joined),
        cmocka_unit_test(test_txt_string_longer_than_rdata),
        cmocka_unit_test(test_truncated_packet),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
