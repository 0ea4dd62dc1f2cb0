/* data.h - message data (after DATA, or in BDAT chunks) line by line: the strict CRLF rule,
 * the end-of-data line and dot-unstuffing, the BDAT argument; and at end of data, the message made
 * transport-safe before it is spooled and signed. No I/O but a log line; any thread. smtpd feeds it
 * one line at a time, exactly as the bytes arrived up to and including the LF. */
#ifndef OUTRELAY_DATA_H
#define OUTRELAY_DATA_H

#include <stddef.h>
#include <stdint.h>

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

/* A line of a BDAT chunk (RFC 3030): no end-of-data line and no dot-stuffing, the octets are
 * the message. The CRLF rule is DATA's (see data.c); DATA_LINE_END never comes back. */
enum data_line data_parse_bdat_line(const char *raw, size_t len, const char **content,
                                    size_t *content_len);

/* The argument of BDAT: "chunk-size [LAST]" (RFC 3030 section 2: 1*DIGIT, then " LAST" in
 * any case). Returns 0 with *size and *last, or -1 when the argument is not that (the caller
 * cannot know how many octets follow then). */
int data_parse_bdat(const char *args, uint64_t *size, int *last);

/* End of DATA, before the spool commit: lines over 998 octets made transport-safe
 * (mail/transport.c) so that the spool holds exactly what is signed and sent. On a change
 * `data` is replaced, env->transformed is set and env->transport says what was done (also when
 * long lines were left, in multipart/signed). Returns NULL, or the 5xx reply refusing a message
 * that cannot be made safe without corrupting it. */
const char *data_make_transport_safe(struct strbuf *data, struct envelope *env);

#endif
