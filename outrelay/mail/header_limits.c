/* header_limits.c - see header_limits.h. Reads the header section only, one field at a time
 * (a field is a line and the continuation lines that start with a space or tab); allocates
 * nothing. Called by ingress (end of DATA) and sign (before signing). */
#include "mail/header_limits.h"

#include <string.h>
#include <strings.h>

#define MAIL_HEADER_STR2(x) #x
#define MAIL_HEADER_STR(x) MAIL_HEADER_STR2(x)

/* Length of the line at p, without its CRLF (or LF); *next: the start of the next line. */
static size_t line_at(const char *p, const char *end, const char **next)
{
    const char *lf = memchr(p, '\n', (size_t)(end - p));
    const char *stop = lf ? lf : end;
    *next = lf ? lf + 1 : end;
    if (stop > p && stop[-1] == '\r') stop--;
    return (size_t)(stop - p);
}

static int is_from_field(const char *p, size_t n)
{
    if (n < 5 || strncasecmp(p, "from", 4) != 0) return 0;
    size_t i = 4;
    while (i < n && (p[i] == ' ' || p[i] == '\t')) /* obsolete "From :" (RFC 5322 4.5) */
        i++;
    return i < n && p[i] == ':';
}

enum mail_header_fault mail_header_check(const char *data, size_t len)
{
    const char *p = data, *end = data + len;
    size_t from_fields = 0;
    while (p < end) {
        const char *next;
        size_t n = line_at(p, end, &next);
        if (n == 0) break; /* the empty line: end of the header section */
        const char *field = p;
        size_t field_len = n;
        if (is_from_field(field, n) && ++from_fields > 1) return MAIL_HEADER_SEVERAL_FROM;
        p = next;
        while (p < end && (*p == ' ' || *p == '\t')) { /* continuation lines */
            n = line_at(p, end, &next);
            field_len = (size_t)(p - field) + n;
            p = next;
        }
        if (field_len > MAIL_MAX_HEADER_FIELD) return MAIL_HEADER_FIELD_TOO_LONG;
    }
    return MAIL_HEADER_OK;
}

const char *mail_header_fault_text(enum mail_header_fault fault)
{
    switch (fault) {
    case MAIL_HEADER_SEVERAL_FROM:
        return "several From: header fields (RFC 5322 allows one)";
    case MAIL_HEADER_FIELD_TOO_LONG:
        return "a header field longer than " MAIL_HEADER_STR(
            MAIL_MAX_HEADER_FIELD) " bytes (libopendkim cannot sign it correctly)";
    case MAIL_HEADER_OK:
    default:
        return "no fault";
    }
}
