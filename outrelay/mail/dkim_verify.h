/* dkim_verify.h - verifying the DKIM signatures a message carries (RFC 6376) with libopendkim,
 * public keys from DNS through dns_sync. Shared by ingress (an origin's dkim_required rule) and
 * sign (upstream signatures reported for DKIM continuity); signing itself stays in sign/dkim.c.
 * Never signs, never touches the event loop: dkim_verify_message blocks, so worker threads only.
 * Set up once (dkim_setup in sign/ does it) before the workers start. */
#ifndef OUTRELAY_MAIL_DKIM_VERIFY_H
#define OUTRELAY_MAIL_DKIM_VERIFY_H

#include <stddef.h>

/* One signature we made, or one we found and verified. */
struct dkim_signature {
    char domain[256];
    char selector[64];
    char algorithm[24]; /* "rsa-sha256", "ed25519-sha256" */
    int result;         /* verification: 1 pass, 0 fail, -1 temporary error; signing: 1 */
    char error[128];    /* why it failed */
};

/* Once per process, before any worker verifies; idempotent. Returns 0 / -1 with err. */
int dkim_verify_setup(char *err, size_t errlen);
void dkim_verify_shutdown(void);

/* Verifies the DKIM signatures present in data (a whole message, CRLF or LF). Fills up to max
 * entries, returns how many it filled (0 when none, or before dkim_verify_setup). Thread-safe. */
size_t dkim_verify_message(const char *data, size_t len, struct dkim_signature *sigs, size_t max);

/* The a= name of a libopendkim algorithm (dkim_alg_t): "rsa-sha256", "ed25519-sha256", ... */
const char *dkim_verify_algorithm_name(int alg);

/* Tests only: public keys come from fn (a "v=DKIM1; k=...; p=..." record, or NULL for "no
 * key") instead of DNS. NULL restores DNS. Not thread-safe; set before verifying. */
void dkim_verify_set_test_key_lookup(const char *(*fn)(const char *domain, const char *selector));

#endif
