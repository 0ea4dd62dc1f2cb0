/* auth_throttle.h - failed SMTP AUTH attempts per client address, across sessions, after
 * Postfix's anvil auth rate: each failure answers later than the one before, and an address with
 * too many failures in a window gets 421 until the window ends. Other clients are not touched.
 * Pure bookkeeping (callers pass the time); loop thread only. */
#ifndef OUTRELAY_AUTH_THROTTLE_H
#define OUTRELAY_AUTH_THROTTLE_H

#include <stdint.h>

#define AUTH_THROTTLE_WINDOW 900  /* seconds a failure is remembered */
#define AUTH_THROTTLE_LIMIT 10    /* failures per window before the address is refused */
#define AUTH_THROTTLE_MAX_DELAY 5 /* seconds: the n-th failure is answered after min(n, this) */

struct auth_throttle;

struct auth_throttle *auth_throttle_new(void);
void auth_throttle_free(struct auth_throttle *t);
/* Counts one failure of address at now; returns the failures in its current window. */
int auth_throttle_failed(struct auth_throttle *t, const char *address, int64_t now);
/* Failures of address in its current window (0 when the window is over). */
int auth_throttle_failures(struct auth_throttle *t, const char *address, int64_t now);

#endif
