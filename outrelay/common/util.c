/* util.c - see util.h. Pure helpers; no global state. */
#include "common/util.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>

void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) abort();
    return p;
}

void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) abort();
    return p;
}

void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p) abort();
    return p;
}

char *xstrdup(const char *s)
{
    return xstrndup(s, strlen(s));
}

char *xstrndup(const char *s, size_t n)
{
    char *p = xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

static int parse_number_with_unit(const char *text, int64_t *value, const char *units,
                                  const int64_t *factors)
{
    char *end;
    if (!text || !isdigit((unsigned char)*text)) return -1;
    long long n = strtoll(text, &end, 10);
    if (n < 0) return -1;
    int64_t factor = 1;
    if (*end) {
        const char *u = strchr(units, *end);
        if (!u || end[1] != '\0') return -1;
        factor = factors[u - units];
    }
    if (n > INT64_MAX / factor) return -1;
    *value = (int64_t)n * factor;
    return 0;
}

int util_parse_duration(const char *text, int64_t *seconds)
{
    static const int64_t f[] = {1, 60, 3600, 86400, 604800};
    return parse_number_with_unit(text, seconds, "smhdw", f);
}

int util_parse_size(const char *text, int64_t *bytes)
{
    static const int64_t f[] = {1024, 1024, 1048576, 1048576, 1073741824, 1073741824};
    return parse_number_with_unit(text, bytes, "kKmMgG", f);
}

int util_parse_ip(const char *text, struct sockaddr_any *out)
{
    memset(out, 0, sizeof *out);
    struct sockaddr_in *s4 = (struct sockaddr_in *)&out->ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&out->ss;
    if (inet_pton(AF_INET, text, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        out->len = sizeof *s4;
        return 0;
    }
    if (inet_pton(AF_INET6, text, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        out->len = sizeof *s6;
        return 0;
    }
    return -1;
}

int util_parse_address_literal(const char *domain, struct sockaddr_any *out)
{
    size_t n = strlen(domain);
    if (n < 3 || domain[0] != '[' || domain[n - 1] != ']' || n - 2 >= INET6_ADDRSTRLEN + 5)
        return -1;
    char ip[INET6_ADDRSTRLEN + 8];
    memcpy(ip, domain + 1, n - 2);
    ip[n - 2] = '\0';
    if (strncasecmp(ip, "IPv6:", 5) == 0) {
        if (util_parse_ip(ip + 5, out) < 0 || out->ss.ss_family != AF_INET6) return -1;
        return 0;
    }
    if (util_parse_ip(ip, out) < 0 || out->ss.ss_family != AF_INET) return -1;
    return 0;
}

int util_addr_port(const struct sockaddr_any *a)
{
    if (a->ss.ss_family == AF_INET) return ntohs(((const struct sockaddr_in *)&a->ss)->sin_port);
    if (a->ss.ss_family == AF_INET6) return ntohs(((const struct sockaddr_in6 *)&a->ss)->sin6_port);
    return 0;
}

void util_addr_set_port(struct sockaddr_any *a, int port)
{
    if (a->ss.ss_family == AF_INET)
        ((struct sockaddr_in *)&a->ss)->sin_port = htons((uint16_t)port);
    else if (a->ss.ss_family == AF_INET6)
        ((struct sockaddr_in6 *)&a->ss)->sin6_port = htons((uint16_t)port);
}

static int parse_port(const char *p, int *port)
{
    char *end;
    if (!isdigit((unsigned char)*p)) return -1;
    long v = strtol(p, &end, 10);
    if (*end || v < 0 || v > 65535) return -1;
    *port = (int)v;
    return 0;
}

int util_parse_hostport(const char *text, int default_port, struct sockaddr_any *out)
{
    char host[INET6_ADDRSTRLEN + 2];
    int port = default_port;
    const char *colon;

    if (!text) return -1;
    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (!close || (size_t)(close - text - 1) >= sizeof host) return -1;
        memcpy(host, text + 1, (size_t)(close - text - 1));
        host[close - text - 1] = '\0';
        if (close[1] == ':') {
            if (parse_port(close + 2, &port) < 0) return -1;
        } else if (close[1] != '\0') {
            return -1;
        }
    } else if ((colon = strchr(text, ':')) && !strchr(colon + 1, ':')) {
        if ((size_t)(colon - text) >= sizeof host) return -1;
        memcpy(host, text, (size_t)(colon - text));
        host[colon - text] = '\0';
        if (parse_port(colon + 1, &port) < 0) return -1;
    } else {
        if (strlen(text) >= sizeof host) return -1;
        strcpy(host, text);
    }
    if (port < 0) return -1;
    if (util_parse_ip(host, out) < 0) return -1;
    util_addr_set_port(out, port);
    return 0;
}

const char *util_format_addr(const struct sockaddr_any *a, int with_port, char *buf, size_t size)
{
    char ip[INET6_ADDRSTRLEN];
    if (a->ss.ss_family == AF_INET) {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)&a->ss)->sin_addr, ip, sizeof ip);
        if (with_port)
            snprintf(buf, size, "%s:%d", ip, util_addr_port(a));
        else
            snprintf(buf, size, "%s", ip);
    } else if (a->ss.ss_family == AF_INET6) {
        const struct in6_addr *in6 = &((const struct sockaddr_in6 *)&a->ss)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(in6))
            inet_ntop(AF_INET, &in6->s6_addr[12], ip, sizeof ip);
        else
            inet_ntop(AF_INET6, in6, ip, sizeof ip);
        if (with_port)
            snprintf(buf, size, "[%s]:%d", ip, util_addr_port(a));
        else
            snprintf(buf, size, "%s", ip);
    } else {
        snprintf(buf, size, "unix");
    }
    return buf;
}

int util_parse_prefix(const char *text, struct net_prefix *out)
{
    char tmp[INET6_ADDRSTRLEN + 8];
    struct sockaddr_any a;
    int bits = -1;

    if (!text || strlen(text) >= sizeof tmp) return -1;
    strcpy(tmp, text);
    char *slash = strchr(tmp, '/');
    if (slash) {
        *slash = '\0';
        if (parse_port(slash + 1, &bits) < 0) return -1;
    }
    if (util_parse_ip(tmp, &a) < 0) return -1;
    memset(out, 0, sizeof *out);
    out->family = a.ss.ss_family;
    int maxbits = out->family == AF_INET ? 32 : 128;
    if (bits < 0) bits = maxbits;
    if (bits > maxbits) return -1;
    out->bits = bits;
    if (out->family == AF_INET)
        memcpy(out->addr, &((struct sockaddr_in *)&a.ss)->sin_addr, 4);
    else
        memcpy(out->addr, &((struct sockaddr_in6 *)&a.ss)->sin6_addr, 16);
    return 0;
}

int util_prefix_match(const struct net_prefix *p, const struct sockaddr_any *a)
{
    const uint8_t *bytes;
    if (a->ss.ss_family == AF_INET) {
        if (p->family != AF_INET) return 0;
        bytes = (const uint8_t *)&((const struct sockaddr_in *)&a->ss)->sin_addr;
    } else if (a->ss.ss_family == AF_INET6) {
        const struct in6_addr *in6 = &((const struct sockaddr_in6 *)&a->ss)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(in6)) {
            if (p->family != AF_INET) return 0;
            bytes = &in6->s6_addr[12];
        } else {
            if (p->family != AF_INET6) return 0;
            bytes = in6->s6_addr;
        }
    } else {
        return 0;
    }
    int full = p->bits / 8, rest = p->bits % 8;
    if (memcmp(bytes, p->addr, (size_t)full) != 0) return 0;
    if (rest) {
        uint8_t mask = (uint8_t)(0xff << (8 - rest));
        if ((bytes[full] & mask) != (p->addr[full] & mask)) return 0;
    }
    return 1;
}

void util_rfc5322_date(int64_t when, char *buf, size_t size)
{
    time_t t = (time_t)when;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, size, "%a, %d %b %Y %H:%M:%S +0000", &tm);
}

int util_secure_streq(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la != lb) return 0;
    return CRYPTO_memcmp(a, b, la) == 0;
}

int util_strcaseeq(const char *a, const char *b)
{
    return strcasecmp(a, b) == 0;
}
