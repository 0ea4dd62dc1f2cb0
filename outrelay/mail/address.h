/* address.h - RFC 5322 address syntax, the one parser for header addresses that ingress, sign and
 * check rely on: the mailboxes of an address-list field (From:, Sender:, Reply-To:) with display
 * names, quoted strings, comments, encoded words, folding, groups and the obsolete forms of
 * section 4.4 (routes, empty list elements). Pure: no I/O, no global state; any thread. */
#ifndef OUTRELAY_MAIL_ADDRESS_H
#define OUTRELAY_MAIL_ADDRESS_H

#include <stddef.h>

struct mail_address {
    char local[256];  /* local part as written (quotes removed, quoted-pairs resolved) */
    char domain[256]; /* lower case, without a trailing dot; "[...]" for a domain literal */
};

/* Parses a header field's value (folded or not) as an address-list. Stores up to `max`
 * mailboxes in out[] and returns how many the value holds (it may be more than max); a group
 * contributes its members ("undisclosed-recipients:;" none). Returns -1 with a reason in
 * *why when the value is not an address-list. */
int mail_parse_address_list(const char *value, struct mail_address *out, size_t max,
                            const char **why);

/* The author domain of a From: value, as DMARC defines it (RFC 7489 3.1 and 6.6.1): the domain
 * of its mailboxes when there is at least one and all share one domain. Returns a malloc'd
 * lower-case string, or NULL with a reason in *why (syntax, no mailbox, several domains). */
char *mail_author_domain(const char *from_value, const char **why);

#endif
