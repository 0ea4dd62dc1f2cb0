/* fuzz_dns.c - the DNS answer parser dns_parse_packet (dns/dns.c) on a wire packet from the
 * network. The first byte picks the query type (A, AAAA, MX, TXT, PTR, TLSA), the rest is the
 * packet. Asserts a valid status, that n answers of the right kind were filled, that every name
 * and TXT string is a terminated C string within bounds, that TLSA association data is non-empty
 * and lies within the packet, and that dns_answer_free frees it all. */
#include <assert.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

#include "dns/dns.h"

static const int rrtypes[] = {DNS_TYPE_A,   DNS_TYPE_AAAA, DNS_TYPE_MX,
                              DNS_TYPE_TXT, DNS_TYPE_PTR,  DNS_TYPE_TLSA};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    int rrtype = rrtypes[data[0] % (sizeof rrtypes / sizeof rrtypes[0])];
    struct dns_answer a;
    memset(&a, 0, sizeof a);
    dns_parse_packet(rrtype, data + 1, (int)(size - 1), &a);
    assert(a.status == DNS_OK || a.status == DNS_NODATA || a.status == DNS_NXDOMAIN ||
           a.status == DNS_TEMPFAIL);
    assert((a.status == DNS_OK) == (a.n > 0));
    if (a.status == DNS_TEMPFAIL) assert(a.error && a.error[0]);
    for (size_t i = 0; i < a.n; i++) {
        switch (rrtype) {
        case DNS_TYPE_MX:
            assert(a.mx && strlen(a.mx[i].host) < sizeof a.mx[i].host);
            break;
        case DNS_TYPE_A:
        case DNS_TYPE_AAAA:
            assert(a.addrs);
            assert(a.addrs[i].ss.ss_family == (rrtype == DNS_TYPE_A ? AF_INET : AF_INET6));
            break;
        case DNS_TYPE_TXT:
            /* a TXT record is at most 64 KiB of character-strings; an unterminated one is not */
            assert(a.txt && a.txt[i] && strlen(a.txt[i]) < 65536);
            break;
        case DNS_TYPE_PTR:
            assert(a.ptr && a.ptr[i] && strlen(a.ptr[i]) < 1025);
            break;
        case DNS_TYPE_TLSA:
            /* usage, selector and matching type take 3 of the packet's bytes */
            assert(a.tlsa && a.tlsa[i].data && a.tlsa[i].len >= 1 && a.tlsa[i].len + 3 < size);
            break;
        }
    }
    dns_answer_free(&a);
    return 0;
}
