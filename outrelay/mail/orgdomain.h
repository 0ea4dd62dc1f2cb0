/* orgdomain.h - organisational domains (RFC 7489 3.2) from the public suffix list of Debian's
 * publicsuffix package, through libpsl: a fact about mail domains, so it sits below the stages.
 * Called by sign (keys of the organisational domain), check (DMARC record fallback and relaxed
 * alignment) and main (loads it once at start). Read-only and thread-safe after init. */
#ifndef OUTRELAY_MAIL_ORGDOMAIN_H
#define OUTRELAY_MAIL_ORGDOMAIN_H

#include <stddef.h>

#define ORGDOMAIN_PSL_FILE "/usr/share/publicsuffix/public_suffix_list.dat"

/* path NULL: ORGDOMAIN_PSL_FILE. Returns 0 / -1 with err. */
int orgdomain_init(const char *path, char *err, size_t errlen);
void orgdomain_shutdown(void);
/* Writes the organisational domain of `domain` (lower case) to out; a domain that is itself a
 * public suffix, or unknown to the list, is its own organisational domain. */
void orgdomain_of(const char *domain, char *out, size_t size);

#endif
