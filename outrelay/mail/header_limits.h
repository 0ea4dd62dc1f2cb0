/* header_limits.h - the header-section rules outrelay enforces before it signs: exactly one
 * From: field at most (RFC 5322 section 3.6 allows one), and no header field longer than
 * MAIL_MAX_HEADER_FIELD bytes. libopendkim 2.11 silently makes signatures no verifier accepts
 * for a field of 65,534 bytes or more and for 820 or more From: fields; ingress refuses such
 * messages at end of DATA and the signer refuses to sign them. Pure; any thread. */
#ifndef OUTRELAY_MAIL_HEADER_LIMITS_H
#define OUTRELAY_MAIL_HEADER_LIMITS_H

#include <stddef.h>

/* Bytes of one header field: name, colon, value and folding CRLFs, without the final CRLF.
 * Below libopendkim's 64 KiB buffer (65,533 bytes was the longest Subject that verified). */
#define MAIL_MAX_HEADER_FIELD 65000

enum mail_header_fault {
    MAIL_HEADER_OK,
    MAIL_HEADER_SEVERAL_FROM,   /* two or more From: fields */
    MAIL_HEADER_FIELD_TOO_LONG, /* one field longer than MAIL_MAX_HEADER_FIELD */
};

/* Checks the header section of data (a CRLF message; the section ends at the first empty line
 * or at the end of data). Returns the first fault found, else MAIL_HEADER_OK. */
enum mail_header_fault mail_header_check(const char *data, size_t len);
/* A short English description of a fault ("several From: header fields"). */
const char *mail_header_fault_text(enum mail_header_fault fault);

#endif
