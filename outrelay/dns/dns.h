/* dns.h - asynchronous DNS on the event loop (libunbound on our event_base): MX, A, AAAA, TXT,
 * PTR, TLSA; DNSSEC-validated when a trust anchor is configured.
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
#define DNS_TYPE_TLSA 52 /* RFC 6698 */

/* What DNSSEC validation (RFC 4035) said about an answer. Without a trust anchor, or outside
 * the anchored zones, every answer is insecure. A bogus answer is a temporary failure
 * (DNS_TEMPFAIL, no records): a forged or broken answer is never data. */
enum dns_security {
    DNS_INSECURE,
    DNS_SECURE,
    DNS_BOGUS,
};

/* One TLSA record (RFC 6698 section 2.1), as it came in: the fields are not checked against
 * the registries here; the one who uses them decides what is usable (RFC 7672 section 2.2). */
struct dns_tlsa {
    unsigned char usage;    /* certificate usage: 0..3 (PKIX-TA, PKIX-EE, DANE-TA, DANE-EE) */
    unsigned char selector; /* 0 full certificate, 1 SubjectPublicKeyInfo */
    unsigned char mtype;    /* matching type: 0 exact, 1 SHA-256, 2 SHA-512 */
    size_t len;             /* of data, at least 1 */
    unsigned char *data;    /* certificate association data */
};

struct dns_mx {
    int preference;
    char host[256]; /* without trailing dot; "" for a null MX (RFC 7505) */
};

struct dns_answer {
    enum dns_status status;
    enum dns_security security;
    unsigned ttl; /* smallest TTL of the answers */
    size_t n;
    struct dns_mx *mx;          /* for MX */
    struct sockaddr_any *addrs; /* for A / AAAA (port 0) */
    char **txt;                 /* for TXT: character-strings joined */
    char **ptr;                 /* for PTR: names without trailing dot */
    struct dns_tlsa *tlsa;      /* for TLSA */
    const char *error;          /* text for TEMPFAIL */
};

struct dns_query;
typedef void (*dns_cb)(void *arg, const struct dns_answer *answer);

/* servers: "127.0.0.1:5353" / "127.0.0.1@5353" / "::1"; none: the system resolver.
 * trust_anchor: a file of DS/DNSKEY records (dns.trust_anchor) to validate against, or NULL. */
int dns_init(struct event_base *base, char *const *servers, size_t n_servers,
             const char *trust_anchor, char *err, size_t errlen);
struct dns_query *dns_query(const char *name, int rrtype, dns_cb cb, void *arg);
void dns_cancel(struct dns_query *q);
void dns_shutdown(void);
/* For dns_sync.c: the one setup of a libunbound context (servers, trust anchor); parse a wire
 * answer; mark an answer bogus (security DNS_BOGUS, a temporary failure, its records freed);
 * free the arrays of an answer. */
struct ub_ctx;
int dns_configure_context(struct ub_ctx *ctx, char *const *servers, size_t n_servers,
                          const char *trust_anchor, char *err, size_t errlen);
void dns_parse_packet(int rrtype, const unsigned char *packet, int len, struct dns_answer *a);
void dns_answer_bogus(struct dns_answer *a);
void dns_answer_free(struct dns_answer *a);
/* Text name of a status for logs. */
const char *dns_status_text(enum dns_status status);
/* "secure", "insecure" or "bogus". */
const char *dns_security_text(enum dns_security security);

#endif
