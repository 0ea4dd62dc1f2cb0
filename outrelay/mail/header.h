/* header.h - walking the header section of a message (RFC 5322 2.2): one field at a time, name
 * and raw value (folding kept), comparing and copying an unfolded value. The one header walker:
 * ingress (Received:, Message-ID:, From: of each message), sign and check use it. Pure; any
 * thread. */
#ifndef OUTRELAY_MAIL_HEADER_H
#define OUTRELAY_MAIL_HEADER_H

#include <stddef.h>

struct mail_header_iter {
    const char *p, *end;
};

/* Starts at data (a CRLF or LF message; the header section ends at the first empty line). */
void mail_header_begin(struct mail_header_iter *it, const char *data, size_t len);
/* The next field: name (without the colon) and value (after the colon, folding CRLFs kept,
 * up to but not including the final line end). Returns 1, or 0 at the end of the section.
 * Lines without a colon are skipped. */
int mail_header_next(struct mail_header_iter *it, const char **name, size_t *name_len,
                     const char **value, size_t *value_len);
/* Does the field name equal `want` (ASCII case-insensitive)? */
int mail_header_name_is(const char *name, size_t name_len, const char *want);
/* Does the value, unfolded and without surrounding white space, equal `want`
 * (case-insensitively when nocase)? */
int mail_header_value_is(const char *value, size_t value_len, const char *want, int nocase);
/* The value unfolded and without surrounding white space, as a malloc'd string; it ends at the
 * first NUL the value holds (the white space before that NUL is trimmed too). */
char *mail_header_value_unfold(const char *value, size_t value_len);

#endif
