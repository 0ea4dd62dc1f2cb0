/* dsn.h - builds RFC 3464 delivery status notifications (multipart/report; report-type=
 * delivery-status) for recipients that failed permanently or expired, and the delay warnings
 * for recipients still being retried (every recipient "delayed"). Pure: no I/O, any thread.
 * The caller injects the result into the spool with the null sender; it never builds a DSN
 * for a message whose own sender is null (no bounce for a bounce). */
#ifndef OUTRELAY_DSN_H
#define OUTRELAY_DSN_H

#include <stddef.h>
#include <stdint.h>

#include "common/strbuf.h"

struct dsn_recipient {
    const char *address;      /* envelope recipient */
    const char *orcpt;        /* ORCPT from RCPT TO (RFC 3461), e.g. "rfc822;a@b", or NULL */
    const char *action;       /* "failed" or "delayed" */
    const char *status;       /* enhanced status "5.1.1" */
    const char *remote_mta;   /* remote host name or NULL */
    const char *diagnostic;   /* the remote reply, e.g. "550 5.1.1 no such user", or NULL */
    int64_t last_attempt;     /* unix seconds, 0 if none */
    int64_t will_retry_until; /* "delayed" only: when we give up (unix seconds), 0 if unknown */
};

struct dsn_request {
    const char *reporting_mta; /* our hostname */
    const char *queue_id;      /* original queue id */
    const char *envid;         /* ENVID from MAIL FROM, or NULL */
    const char *sender;        /* original envelope sender; the DSN goes to it */
    int64_t arrival;           /* when we accepted the original */
    const struct dsn_recipient *recipients;
    size_t n_recipients;
    const char *original; /* original message (CRLF lines) */
    size_t original_len;
    int headers_only; /* RET=HDRS, or message too large: include headers only */
};

/* Appends a complete RFC 5322 message (CRLF line ends, headers + MIME body) to out. */
void dsn_build(const struct dsn_request *req, struct strbuf *out);

#endif
