/* dns.h - asynchronous DNS on the event loop (libunbound on our event_base): MX, A, AAAA, TXT,
 * PTR.
 * dns_query() never calls back before it returns; the answer struct lives only for the duration
 * of the callback. dns_cancel() guarantees the callback will not run. Loop thread only. */
#ifndef OUTRELAY_DNS_H
#define OUTRELAY_DNS_H

#include <event2/event.h>
#include <stddef.h>

#include "common/util.h"

enum dns_status {
    DNS_OK,       /* answers present */
    DNS_NODATA,   /* name exists, no records of that type */
    DNS_NXDOMAIN, /* name does not exist */
    DNS_TEMPFAIL, /* SERVFAIL, timeout, network trouble */
};

#define DNS_TYPE_A 1
#define DNS_TYPE_PTR 12
#define DNS_TYPE_MX 15
#define DNS_TYPE_TXT 16
#define DNS_TYPE_AAAA 28

struct dns_mx {
    int preference;
    char host[256]; /* without trailing dot; "" for a null MX (RFC 7505) */
};

struct dns_answer {
    enum dns_status status;
    unsigned ttl; /* smallest TTL of the answers */
    size_t n;
    struct dns_mx *mx;          /* for MX */
    struct sockaddr_any *addrs; /* for A / AAAA (port 0) */
    char **txt;                 /* for TXT: character-strings joined */
    char **ptr;                 /* for PTR: names without trailing dot */
    const char *error;          /* text for TEMPFAIL */
};

struct dns_query;
typedef void (*dns_cb)(void *arg, const struct dns_answer *answer);

/* servers: "127.0.0.1:5353" / "127.0.0.1@5353" / "::1"; none: the system resolver. */
int dns_init(struct event_base *base, char *const *servers, size_t n_servers, char *err,
             size_t errlen);
struct dns_query *dns_query(const char *name, int rrtype, dns_cb cb, void *arg);
void dns_cancel(struct dns_query *q);
void dns_shutdown(void);
/* For dns_sync.c: parse a wire answer; free the arrays of an answer. */
void dns_parse_packet(int rrtype, const unsigned char *packet, int len, struct dns_answer *a);
void dns_answer_free(struct dns_answer *a);
/* Text name of a status for logs. */
const char *dns_status_text(enum dns_status status);

#endif
