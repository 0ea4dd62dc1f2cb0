/* dns_lookup.c - test tool: one lookup through both of outrelay's resolvers, the event-loop one
 * (dns/dns.c) and the blocking one of the workers (dns/dns_sync.c), against a given DNS server,
 * with an optional DNSSEC trust anchor. Used by tests/integration/dnssec_tlsa.py.
 * Usage: dns_lookup DNS_SERVER TRUST_ANCHOR|- NAME TYPE (A, AAAA, MX, TXT, PTR, TLSA) -> per
 * resolver ("loop", "sync") a line "R<TAB>security<TAB>status<TAB>error" and one line per record
 * "R<TAB>record<TAB>text" (TLSA: "usage selector mtype hex"); exit 0, or 2 on usage or setup. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "dns/dns.h"
#include "dns/dns_sync.h"

static void print_answer(const char *who, const struct dns_answer *a)
{
    printf("%s\t%s\t%s\t%s\n", who, dns_security_text(a->security), dns_status_text(a->status),
           a->error ? a->error : "");
    for (size_t i = 0; i < a->n && a->status == DNS_OK; i++) {
        if (a->tlsa) {
            printf("%s\trecord\t%u %u %u ", who, a->tlsa[i].usage, a->tlsa[i].selector,
                   a->tlsa[i].mtype);
            for (size_t j = 0; j < a->tlsa[i].len; j++)
                printf("%02x", a->tlsa[i].data[j]);
            printf("\n");
        } else if (a->txt) {
            printf("%s\trecord\t%s\n", who, a->txt[i]);
        } else if (a->mx) {
            printf("%s\trecord\t%d %s\n", who, a->mx[i].preference, a->mx[i].host);
        } else if (a->ptr) {
            printf("%s\trecord\t%s\n", who, a->ptr[i]);
        } else if (a->addrs) {
            char text[64];
            util_format_addr(&a->addrs[i], 0, text, sizeof text);
            printf("%s\trecord\t%s\n", who, text);
        }
    }
}

static void loop_done(void *arg, const struct dns_answer *answer)
{
    print_answer("loop", answer);
    event_base_loopbreak(arg);
}

static int type_of(const char *name)
{
    static const struct {
        const char *name;
        int type;
    } types[] = {{"A", DNS_TYPE_A},     {"AAAA", DNS_TYPE_AAAA}, {"MX", DNS_TYPE_MX},
                 {"TXT", DNS_TYPE_TXT}, {"PTR", DNS_TYPE_PTR},   {"TLSA", DNS_TYPE_TLSA}};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (!strcmp(types[i].name, name)) return types[i].type;
    return -1;
}

int main(int argc, char **argv)
{
    int rrtype = argc == 5 ? type_of(argv[4]) : -1;
    if (rrtype < 0) {
        fprintf(stderr, "usage: %s DNS_SERVER TRUST_ANCHOR|- NAME A|AAAA|MX|TXT|PTR|TLSA\n",
                argv[0]);
        return 2;
    }
    log_init("dns_lookup", 0, LOG_LEVEL_WARN);
    char *servers[] = {argv[1]};
    const char *anchor = strcmp(argv[2], "-") ? argv[2] : NULL;
    char err[512];
    struct event_base *base = event_base_new();
    if (!base || dns_init(base, servers, 1, anchor, err, sizeof err) < 0 ||
        dns_sync_init(servers, 1, anchor, err, sizeof err) < 0) {
        fprintf(stderr, "dns_lookup: %s\n", base ? err : "no event base");
        dns_shutdown();
        dns_sync_shutdown();
        if (base) event_base_free(base);
        return 2;
    }
    dns_query(argv[3], rrtype, loop_done, base);
    event_base_dispatch(base);
    struct dns_answer a;
    dns_sync_query(argv[3], rrtype, &a);
    print_answer("sync", &a);
    dns_sync_free(&a);
    dns_shutdown();
    dns_sync_shutdown();
    event_base_free(base);
    return 0;
}
