/* util.h - small pure helpers shared by every stage: memory, durations, socket addresses,
 * networks (CIDR), dates. No I/O, no global state; safe from any thread. */
#ifndef OUTRELAY_UTIL_H
#define OUTRELAY_UTIL_H

#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);

/* "90s", "5m", "1h", "2d", "1w" or a bare number of seconds. Returns 0 / -1. */
int util_parse_duration(const char *text, int64_t *seconds);
/* "10k", "35M", "1G" or bytes. Returns 0 / -1. */
int util_parse_size(const char *text, int64_t *bytes);

/* A socket address with its length. */
struct sockaddr_any {
    struct sockaddr_storage ss;
    socklen_t len;
};
/* "1.2.3.4:25", "[::1]:25", "::1" (with default_port), "1.2.3.4" (with default_port).
 * default_port < 0 means a port is required. Returns 0 / -1. */
int util_parse_hostport(const char *text, int default_port, struct sockaddr_any *out);
/* An address without port ("192.0.2.1", "::1"). Port is set to 0. */
int util_parse_ip(const char *text, struct sockaddr_any *out);
/* An RFC 5321 address-literal domain, "[192.0.2.1]" or "[IPv6:2001:db8::1]" (section 4.1.3).
 * Returns 0, or -1 for anything else (a name, a malformed literal). Port is set to 0. */
int util_parse_address_literal(const char *domain, struct sockaddr_any *out);
/* "1.2.3.4" or "[::1]:25" style text for logs; buf at least 64 bytes. */
const char *util_format_addr(const struct sockaddr_any *a, int with_port, char *buf, size_t size);
int util_addr_port(const struct sockaddr_any *a);
void util_addr_set_port(struct sockaddr_any *a, int port);

struct net_prefix {
    int family; /* AF_INET or AF_INET6 */
    uint8_t addr[16];
    int bits;
};
/* "10.0.0.0/8", "::1/128", "192.0.2.1" (host). Returns 0 / -1. */
int util_parse_prefix(const char *text, struct net_prefix *out);
/* IPv4-mapped IPv6 addresses match IPv4 prefixes. */
int util_prefix_match(const struct net_prefix *p, const struct sockaddr_any *a);

/* RFC 5322 date for headers: "Mon, 30 Nov 2026 01:02:03 +0000". */
void util_rfc5322_date(int64_t when, char *buf, size_t size);
/* Constant-time string comparison; 1 if equal. */
int util_secure_streq(const char *a, const char *b);
/* ASCII case-insensitive; domain comparisons. */
int util_strcaseeq(const char *a, const char *b);

#endif
