/* data.h - message data (after DATA) line by line: the strict CRLF rule, the end-of-data
 * line and dot-unstuffing; and at end of data, the message made transport-safe before it is
 * spooled and signed. No I/O but a log line; any thread. smtpd feeds it one line at a time,
 * exactly as the bytes arrived up to and including the LF. */
#ifndef OUTRELAY_DATA_H
#define OUTRELAY_DATA_H

#include <stddef.h>

#include "common/strbuf.h"
#include "mail/envelope.h"

enum data_line {
    DATA_LINE_TEXT,    /* a line of the message: *content / *content_len, unstuffed, no CRLF */
    DATA_LINE_END,     /* the terminating "." line */
    DATA_LINE_BARE_LF, /* the line ends in LF without CR: refuse (SMTP smuggling) */
    DATA_LINE_BARE_CR, /* a CR not followed by LF inside the line: refuse */
};

/* raw/len: one line including its final LF (raw[len-1] == '\n'). */
enum data_line data_parse_line(const char *raw, size_t len, const char **content,
                               size_t *content_len);

/* End of DATA, before the spool commit: lines over 998 octets made transport-safe
 * (mail/transport.c) so that the spool holds exactly what is signed and sent. On a change
 * `data` is replaced, env->transformed is set and env->transport says what was done (also when
 * long lines were left, in multipart/signed). Returns NULL, or the 5xx reply refusing a message
 * that cannot be made safe without corrupting it. */
const char *data_make_transport_safe(struct strbuf *data, struct envelope *env);

#endif
