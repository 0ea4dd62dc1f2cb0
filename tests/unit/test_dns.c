/* test_dns.c - unit tests for dns_parse_packet() (outrelay/dns/dns.c) on hand-built wire answers,
 * including what whoever controls a sender's or receiver's DNS can publish: an empty TXT RDATA, a
 * character string longer than its RDATA, a truncated packet, TLSA records (RFC 6698) with and
 * without association data; and dns_answer_bogus(), which turns an answer into no data. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dns/dns.h"

/* A response for "a.example" of type rrtype with one answer whose RDATA is `rdata` (rdlen bytes).
 */
static size_t build(unsigned char *buf, int rrtype, const unsigned char *rdata, size_t rdlen)
{
    static const unsigned char head[] = {
        0x12, 0x34, 0x81, 0x80, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, /* header */
        1,    'a',  7,    'e',  'x',  'a',  'm',  'p',  'l',  'e',  0,          /* qname */
        0x00, 0x10, 0x00, 0x01,                                                 /* TYPE IN */
        0xc0, 0x0c, 0x00, 0x10, 0x00, 0x01, 0x00, 0x00, 0x01, 0x2c,             /* an: TTL 300 */
    };
    memcpy(buf, head, sizeof head);
    buf[24] = buf[30] = (unsigned char)rrtype; /* the question's and the answer's type */
    size_t n = sizeof head;
    buf[n++] = (unsigned char)(rdlen >> 8);
    buf[n++] = (unsigned char)rdlen;
    memcpy(buf + n, rdata, rdlen);
    return n + rdlen;
}

static void parse_txt(const unsigned char *rdata, size_t rdlen, struct dns_answer *a)
{
    unsigned char pkt[600];
    size_t n = build(pkt, DNS_TYPE_TXT, rdata, rdlen);
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
    size_t n = build(pkt, DNS_TYPE_TXT, rd, sizeof rd);
    for (size_t cut = 0; cut < n; cut++) {
        struct dns_answer a;
        memset(&a, 0, sizeof a);
        dns_parse_packet(DNS_TYPE_TXT, pkt, (int)cut, &a);
        assert_true(a.n == 0 || a.status == DNS_OK);
        dns_answer_free(&a);
    }
}

static void parse_tlsa(const unsigned char *rdata, size_t rdlen, int cut, struct dns_answer *a)
{
    unsigned char pkt[600];
    size_t n = build(pkt, DNS_TYPE_TLSA, rdata, rdlen);
    memset(a, 0, sizeof *a);
    dns_parse_packet(DNS_TYPE_TLSA, pkt, (int)n - cut, a);
}

static void test_tlsa_fields(void **state)
{
    (void)state;
    unsigned char rd[3 + 32] = {3, 1, 1};
    for (int i = 0; i < 32; i++)
        rd[3 + i] = (unsigned char)(0xa0 + i);
    struct dns_answer a;
    parse_tlsa(rd, sizeof rd, 0, &a);
    assert_int_equal(a.status, DNS_OK);
    assert_int_equal(a.n, 1);
    assert_int_equal(a.tlsa[0].usage, 3);
    assert_int_equal(a.tlsa[0].selector, 1);
    assert_int_equal(a.tlsa[0].mtype, 1);
    assert_int_equal(a.tlsa[0].len, 32);
    assert_memory_equal(a.tlsa[0].data, rd + 3, 32);
    assert_int_equal(a.security, DNS_INSECURE); /* the parser never claims validation */
    dns_answer_free(&a);
}

static void test_tlsa_without_data(void **state)
{
    (void)state;
    static const unsigned char rd[] = {2, 0, 1};
    for (size_t len = 0; len <= sizeof rd; len++) {
        struct dns_answer a;
        parse_tlsa(rd, len, 0, &a);
        assert_int_equal(a.status, DNS_NODATA); /* malformed: no record, nothing read past */
        assert_int_equal(a.n, 0);
        dns_answer_free(&a);
    }
}

static void test_tlsa_rdata_past_packet(void **state)
{
    (void)state;
    static const unsigned char rd[] = {3, 1, 1, 1, 2, 3, 4, 5, 6, 7, 8};
    for (int cut = 1; cut <= (int)sizeof rd; cut++) {
        struct dns_answer a;
        parse_tlsa(rd, sizeof rd, cut, &a); /* rdlength says more than the packet holds */
        assert_int_equal(a.n, 0);
        dns_answer_free(&a);
    }
}

static void test_bogus_answer_has_no_data(void **state)
{
    (void)state;
    static const unsigned char rd[] = {3, 1, 1, 0xde, 0xad};
    struct dns_answer a;
    parse_tlsa(rd, sizeof rd, 0, &a);
    assert_int_equal(a.n, 1);
    dns_answer_bogus(&a);
    assert_int_equal(a.status, DNS_TEMPFAIL);
    assert_int_equal(a.security, DNS_BOGUS);
    assert_int_equal(a.n, 0);
    assert_null(a.tlsa);
    assert_non_null(a.error);
    assert_string_equal(dns_security_text(a.security), "bogus");
    dns_answer_free(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_txt_empty_rdata),
        cmocka_unit_test(test_txt_strings_joined),
        cmocka_unit_test(test_txt_string_longer_than_rdata),
        cmocka_unit_test(test_truncated_packet),
        cmocka_unit_test(test_tlsa_fields),
        cmocka_unit_test(test_tlsa_without_data),
        cmocka_unit_test(test_tlsa_rdata_past_packet),
        cmocka_unit_test(test_bogus_answer_has_no_data),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
