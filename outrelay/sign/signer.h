/* signer.h - the sign stage on the worker pool: for one message, verify the DKIM signatures it
 * arrived with (DKIM continuity, recorded per origin) and make ours with the keys of its From
 * domain. The loop submits; the result comes back on the loop. The message data passed in must
 * stay untouched until the callback has run. */
#ifndef OUTRELAY_SIGNER_H
#define OUTRELAY_SIGNER_H

#include <stddef.h>

#include "common/strbuf.h"
#include "sign/dkim.h"

#define SIGNER_MAX_SIGS 4
#define SIGNER_MAX_UPSTREAM 8

struct sign_result {
    struct strbuf headers; /* our DKIM-Signature fields, CRLF-terminated, to go on top */
    struct dkim_signature sigs[SIGNER_MAX_SIGS];
    const struct dkim_key *keys[SIGNER_MAX_SIGS]; /* the key of each signature */
    size_t n_sigs;
    struct dkim_signature upstream[SIGNER_MAX_UPSTREAM];
    size_t n_upstream;
    char error[200]; /* signing failed: the message goes out unsigned, flagged */
};

/* Installs the key store the signer uses (owned by the caller, alive until signer_shutdown). */
void signer_init(const struct dkim_keystore *keys);
/* Reload: new messages are signed with `keys`; `old` (the store passed before) is kept until
 * signer_shutdown frees it, since queued messages may still refer to its keys. Loop thread. */
void signer_replace_keys(struct dkim_keystore *keys, struct dkim_keystore *old);
/* Also frees every store retired by signer_replace_keys. */
void signer_shutdown(void);
/* Queues the job. data/len: the message (CRLF). done(arg, result) runs on the loop; the result
 * is freed by signer_result_free. */
void signer_submit(const char *data, size_t len, const char *from_domain, int verify_upstream,
                   void (*done)(void *arg, struct sign_result *result), void *arg);
void signer_result_free(struct sign_result *r);
/* "d=example.org s=s1 a=rsa-sha256 pass; ..." for records */
void signer_describe(const struct dkim_signature *sigs, size_t n, struct strbuf *out);

#endif
