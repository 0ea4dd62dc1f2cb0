/* tls_policy.h - what one outbound connection must do about TLS, decided in one place: whether
 * to send STARTTLS and whether mail may go without it, which client context (and so which CA
 * and client certificate) to use, which names the server's certificate must match, and a short
 * reason for logs and records. The connection code (smtpc/) reads only the policy, never the
 * egress's TLS settings.
 *
 * Sources, first that applies wins: DANE (RFC 7672: a DNSSEC-validated TLSA answer for the MX
 * host, apply_dane() in tls_policy.c), then MTA-STS (its slot follows DANE's), the
 * administrator's tls_policy: table for the recipient domain (like Postfix's
 * smtp_tls_policy_maps; direct delivery only), then the egress's settings (tls, tls_ca_file,
 * tls_verify, tls_name, tls_cert/tls_key). DANE makes the level REQUIRED, carries the usable
 * TLSA records the certificate must match (verify set, names the MX host), or, when every
 * record is unusable, REQUIRED without authentication (RFC 7672 section 2.2); an MTA-STS policy
 * in enforce mode would make it REQUIRED with the policy's mx patterns in names. The policy says
 * which source decided (source) and why (reason); both go into every attempt's record.
 *
 * Contexts come from the shared cache in tls/: tls_policy_load() holds one reference per
 * egress of the current config (and fails when an egress's files cannot be loaded); each
 * policy holds its own until tls_policy_free(), so a reload never pulls a context from under a
 * connection. Loop thread only. */
#ifndef OUTRELAY_TLS_POLICY_H
#define OUTRELAY_TLS_POLICY_H

#include <openssl/ssl.h>
#include <stddef.h>

#include "config/config.h"
#include "dns/dns.h"

enum tls_policy_level {
    TLS_POLICY_NONE,          /* plaintext: STARTTLS is never sent */
    TLS_POLICY_OPPORTUNISTIC, /* STARTTLS when offered; without it, or when it fails, plaintext */
    TLS_POLICY_REQUIRED,      /* STARTTLS or no delivery to this host */
};

#define TLS_POLICY_MAX_NAMES 4

struct mta_sts_policy;

/* What the connection looked up before asking for a policy (all optional: a zeroed struct, or
 * NULL, means nothing is known and only the table and the egress decide). */
struct tls_policy_inputs {
    int mx_secure; /* the MX answer (and so the MX name) is DNSSEC-validated */
    /* the TLSA answer for _25._tcp.<mx>, or NULL; used (DANE) only when it and mx_secure are
     * secure: the caller looks it up only for direct delivery after a secure address answer
     * (RFC 7672 section 2.2.2) */
    const struct dns_answer *tlsa;
    const struct mta_sts_policy *sts; /* the recipient domain's MTA-STS policy, or NULL */
};

struct tls_policy {
    enum tls_policy_level level;
    /* The server's certificate must chain to a trusted CA and carry one of names[] (RFC 6125);
     * a handshake that does not verify fails like any other (see level for what follows). */
    int verify;
    SSL_CTX *ctx;    /* the client context (one reference, the policy's); NULL with NONE */
    const char *sni; /* the name sent in the handshake */
    const char *names[TLS_POLICY_MAX_NAMES]; /* with verify: the names accepted, n_names > 0 */
    size_t n_names;
    const char *client_cert; /* the certificate file the context presents, or NULL */
    const char *source;      /* who decided: "dane", "table" or "egress" (static text) */
    /* For TLS reporting (RFC 8460 section 4.4): the domain whose published policy (DANE or
     * MTA-STS) decided, and that policy as text (one line per record / policy line); empty and
     * NULL when no published policy applied. policy_string is the policy's (freed with it). */
    char policy_domain[256];
    char *policy_string;
    char reason[200]; /* e.g. "egress cloud: STARTTLS required, certificate verified" */
    /* names and sni point into the strings below or into the egress's settings */
    char mx[256];
    char name_store[TLS_POLICY_MAX_NAMES][256]; /* a table rule's names, copied */
    /* DANE (RFC 7672): authenticate the server by these TLSA records (the usable ones, owned
     * copies; the TLSA base domain is mx) instead of the CA store. 0 with a DANE policy whose
     * records are all unusable: TLS without authentication. */
    int dane;
    struct dns_tlsa *tlsa;
    size_t n_tlsa;
};

/* The contexts of cfg's egresses (start and SIGHUP): on success they replace those of the
 * previous config, which are released (contexts still used by policies stay alive). -1 with
 * err, nothing changed, when an egress's files cannot be loaded. cfg must outlive the policies
 * made for its egresses. */
int tls_policy_load(const struct config *cfg, char *err, size_t errlen);
/* Releases the current config's contexts (shutdown, after every policy is freed). */
void tls_policy_unload(void);

/* The policy for a connection of egress to mx (the MX host name, or the smarthost's host) for
 * recipient domain ("" for a smarthost), given what was looked up (in, may be NULL). NULL with
 * err when the egress's client context cannot be had. The caller frees it with
 * tls_policy_free(). */
struct tls_policy *tls_policy_for(const struct egress_conf *egress, const char *domain,
                                  const char *mx, const struct tls_policy_inputs *in, char *err,
                                  size_t errlen);
void tls_policy_free(struct tls_policy *p);
/* Whether a TLSA record can authenticate an SMTP server (RFC 7672 section 3.1, RFC 6698): usage
 * DANE-TA (2) or DANE-EE (3) (PKIX-TA and PKIX-EE are unusable for SMTP, RFC 7672 section
 * 3.1.3), selector 0 or 1, matching type 0 with data that parses as a certificate or a
 * SubjectPublicKeyInfo, 1 with 32 octets or 2 with 64. */
int tls_policy_tlsa_usable(const struct dns_tlsa *t);

/* The level in the words of the tls_policy: table, for records: "none", "may" (opportunistic,
 * with or without an attempt to verify), "encrypt" (required, unchecked) or "verify". */
const char *tls_policy_level_name(const struct tls_policy *p);
/* The rule of cfg's tls_policy: table for a recipient domain: the exact domain, else the
 * longest ".parent" entry; NULL when none applies (or domain is ""). */
const struct tls_policy_rule *tls_policy_rule_find(const struct config *cfg, const char *domain);

#endif
