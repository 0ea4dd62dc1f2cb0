/* dkim.h - DKIM signing with libopendkim: the key store under `keys:`, signing every message
 * with the keys of its From domain (or of its organisational domain), stripping upstream
 * signatures, and generating keys. Verification is mail/dkim_verify.h. One signing DKIM_LIB per
 * process, configured before the workers start; dkim_sign_message runs on worker threads (never
 * the loop). Called by sign/signer.c, main (setup, keygen, check) and check/advice.c (records). */
#ifndef OUTRELAY_DKIM_H
#define OUTRELAY_DKIM_H

#include <stddef.h>

#include "common/strbuf.h"
#include "config/config.h"
#include "mail/dkim_verify.h"

enum dkim_algorithm { DKIM_ALG_RSA_SHA256, DKIM_ALG_ED25519_SHA256 };

/* One loaded private key: <keys>/<domain>/<selector>.rsa.pem | .ed25519.pem */
struct dkim_key {
    char *domain; /* lower case */
    char *selector;
    enum dkim_algorithm algorithm;
    char *path;
    char *pem;        /* the private key as libopendkim wants it */
    char *public_b64; /* what p= of the DNS record must hold (RSA: SPKI DER; Ed25519: raw) */
    int bits;         /* RSA modulus size; 256 for Ed25519 */
};

struct dkim_keystore {
    struct dkim_key *keys;
    size_t n_keys;
};

/* Loads every key under dir. Problems (unreadable, mode not 0600/0400, not a key of the
 * algorithm its name says, unparseable) are appended to errors as "path: what is wrong", one
 * item each; returns NULL only when dir itself is unreadable (a missing dir = no keys). */
struct dkim_keystore *dkim_keystore_load(const char *dir, char ***errors, size_t *n_errors);
void dkim_keystore_free(struct dkim_keystore *ks);
/* Keys that sign for from_domain: its own, else its organisational domain's (still aligned under
 * relaxed DMARC). Fills out[] (up to max) and returns how many. */
size_t dkim_keystore_for(const struct dkim_keystore *ks, const char *from_domain,
                         const struct dkim_key **out, size_t max);

/* Once per process, before any worker uses it; sets up verification too (dkim_verify_setup).
 * Returns 0 / -1. (Not "dkim_init": libopendkim
 * exports that symbol itself, and ours would replace it at link time.) */
/* The header lists to sign and oversign are cfg's dkim.headers and dkim.oversign (copied). */
int dkim_setup(const struct config *cfg, char *err, size_t errlen);
void dkim_shutdown(void);

/* Signs data (a whole CRLF message, not dot-stuffed) with every key in keys[]; appends the
 * DKIM-Signature header fields (CRLF-terminated) to headers_out, to be placed above the message.
 * sigs[] (n_keys entries) describe them. Returns 0 / -1 with err. Thread-safe. */
int dkim_sign_message(const struct dkim_key *const *keys, size_t n_keys, const char *data,
                      size_t len, struct strbuf *headers_out, struct dkim_signature *sigs,
                      char *err, size_t errlen);
/* Removes every DKIM-Signature header field from the header section of data (policy: strip
 * upstream signatures). Returns the new length (in place). */
size_t dkim_strip_signatures(char *data, size_t len);

/* `outrelay keygen`: writes <dir>/<domain>/<selector>.<alg>.pem (0600, directories 0700) and
 * appends the TXT record to publish ("selector._domainkey.domain. IN TXT ( "..." "..." )", every
 * string <= 255 bytes) to txt_out. bits only for RSA (default 2048). Refuses to overwrite. */
int dkim_keygen(const char *dir, const char *domain, const char *selector,
                enum dkim_algorithm algorithm, int bits, struct strbuf *txt_out, char *err,
                size_t errlen);
/* The TXT record text for a loaded key (same format as keygen prints). */
void dkim_dns_record(const struct dkim_key *key, struct strbuf *out);

#endif
