/* transport.h - makes a message transport-safe before it is signed: no line longer than 998
 * octets (RFC 5321 4.5.3.1.6, RFC 5322 2.1.1), so strict receivers take it and the DKIM
 * signature made over it still verifies. Header lines are folded at whitespace; body lines are
 * fixed by re-encoding only the MIME parts that need it (RFC 2045). Pure: data in, data out,
 * no I/O, allocates only `out`; any thread. Called by ingress at end of DATA. */
#ifndef OUTRELAY_MAIL_TRANSPORT_H
#define OUTRELAY_MAIL_TRANSPORT_H

#include <stddef.h>

#include "common/strbuf.h"

/* The longest line allowed, in octets, without its CRLF. */
#define MAIL_LINE_MAX 998

enum mail_transport_verdict {
    MAIL_TRANSPORT_UNCHANGED, /* nothing was changed; `out` is untouched */
    MAIL_TRANSPORT_CHANGED,   /* `out` holds the transport-safe message */
    MAIL_TRANSPORT_REFUSED,   /* cannot be made safe without corrupting it; see report.text */
};

struct mail_transport_report {
    size_t header_lines_folded;   /* header lines over the limit, folded at whitespace */
    size_t header_fields_encoded; /* Subject/Comments/Content-Description words made RFC 2047 */
    size_t body_lines_over;       /* body lines over the limit before the change */
    size_t parts_qp;              /* parts (or the single body) re-encoded quoted-printable */
    size_t parts_base64;          /* parts re-encoded base64 */
    size_t parts_rewrapped;       /* parts already QP/base64 whose long lines were re-wrapped */
    size_t lines_wrapped;         /* lines hard-wrapped where nothing else works */
    size_t signed_lines_left;     /* lines over the limit left inside multipart/signed */
    /* CHANGED: what was done ("body re-encoded quoted-printable (2 lines over 998)");
     * UNCHANGED: empty, or why long lines were left ("multipart/signed left as is ...");
     * REFUSED: why. */
    char text[400];
};

/* data/len: a message with CRLF line ends. On MAIL_TRANSPORT_CHANGED `out` (reset first) holds
 * the new message, which decodes to the same content. `report` is always filled. */
enum mail_transport_verdict mail_transport_safe(const char *data, size_t len, struct strbuf *out,
                                                struct mail_transport_report *report);

#endif
