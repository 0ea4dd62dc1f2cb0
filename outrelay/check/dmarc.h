/* dmarc.h - DMARC prediction for outbound mail: given the From domain, the SPF outcome for the
 * egress we will use and the DKIM signatures we made, what will the receiver conclude? Policy
 * records come from DNS (dns_sync) with organisational-domain fallback (orgdomain.h); the
 * evaluation uses libopendmarc, with strict alignment (adkim=s / aspf=s) enforced here because
 * libopendmarc 1.4.2 gets it wrong once the suffix list is loaded. A signature only counts as a
 * predicted pass when the key published at selector._domainkey.domain matches ours (cached).
 * Blocking: worker threads only. */
#ifndef OUTRELAY_DMARC_H
#define OUTRELAY_DMARC_H

#include <stddef.h>

#include "check/spf.h"

enum dmarc_verdict {
    DMARC_VERDICT_PASS,
    DMARC_VERDICT_FAIL,
    DMARC_VERDICT_TEMPERROR, /* DNS trouble: decide later, not now */
    DMARC_VERDICT_NO_POLICY, /* no DMARC record: nothing to fail */
};

/* A signature we made, with the public key we expect to find in DNS. */
struct dmarc_dkim_input {
    const char *domain;     /* d= */
    const char *selector;   /* s= */
    const char *algorithm;  /* "rsa-sha256" | "ed25519-sha256" */
    const char *public_b64; /* our public key as p= must hold it */
    int upstream;           /* a signature the message arrived with, verified on arrival and
                             * kept unmodified: counts as passing, no key lookup */
};

struct dmarc_dkim_outcome {
    char domain[256];
    char selector[64];
    char algorithm[24];
    int key_matches;  /* 1 DNS has our key, 0 missing/different, -1 DNS temporary error */
    int aligned;      /* with the From domain under the record's adkim */
    int upstream;     /* kept upstream signature (see dmarc_dkim_input) */
    char detail[160]; /* "no key published at s1._domainkey.example.org", ... */
};

struct dmarc_prediction {
    char from_domain[256];
    char record_domain[256]; /* where the policy was found ("" = none) */
    char p, sp;              /* 'n' none, 'q' quarantine, 'r' reject, 0 when no record */
    int pct;
    char adkim, aspf; /* 'r' / 's' */
    int applied_subdomain_policy;
    enum spf_result spf;
    char spf_domain[256];
    int spf_aligned;
    struct dmarc_dkim_outcome dkim[12]; /* ours, then kept upstream ones */
    size_t n_dkim;
    int dkim_aligned_pass; /* some signature both matches its published key and aligns */
    enum dmarc_verdict verdict;
    char policy_to_apply; /* on FAIL: the p (or sp) the receiver would apply */
    char reason[320];     /* words for the operator */
};

/* Before workers start (needs orgdomain_init). Returns 0 / -1. */
int dmarc_init(char *err, size_t errlen);
void dmarc_shutdown(void);

/* mailfrom_domain: domain of the envelope sender (HELO name for the null sender) that spf
 * refers to. Thread-safe. */
void dmarc_predict(const char *from_domain, const char *mailfrom_domain, enum spf_result spf,
                   const struct dmarc_dkim_input *sigs, size_t n_sigs,
                   struct dmarc_prediction *out);
const char *dmarc_verdict_name(enum dmarc_verdict v); /* "pass", "fail", "temperror", "none" */

/* ---- For tests: the DNS-free pieces of dmarc_predict, exposed so tests/unit/test_dmarc.c can
 * check them directly. Not for other modules. ---- */

/* A DKIM key record (RFC 6376 3.6.1), every tag a verifier acts on. */
struct dmarc_key_record {
    char key_type[16];     /* k=, "rsa" when absent */
    char public_b64[2048]; /* p= with whitespace removed; "" = revoked */
    char hashes[64];       /* h=, colon-separated, whitespace removed; "" when absent (any) */
    char services[64];     /* s=, colon-separated; "" when absent ("*") */
    int testing;           /* t= has y: the domain is testing DKIM */
    int strict_identity;   /* t= has s: an i= domain must equal d=, not be a subdomain */
};
/* Parses one TXT string as verifiers do. Returns 0, or -1 with a reason in *why (may be NULL)
 * when verifiers refuse it: v= not first or not DKIM1, no p=, a tag twice, a malformed tag
 * name or value, a p= too long for us. Unknown tags are ignored, as the RFC requires. */
int dmarc_parse_key_record(const char *txt, struct dmarc_key_record *out, const char **why);
/* Will a verifier accept a signature with `algorithm` ("rsa-sha256", "ed25519-sha256") and
 * public key public_b64 against the key records `txt` (the TXT strings found at `name`)?
 * auid_domain: the domain of the signature's i= ("" or NULL when it has none), sdid: its d=.
 * Returns 1 / 0 and explains in detail (why a 0; for a 1, notes such as testing mode). */
int dmarc_key_check(char *const *txt, size_t n_txt, const char *name, const char *algorithm,
                    const char *public_b64, const char *auid_domain, const char *sdid,
                    char *detail, size_t detail_size);
/* Identifier alignment (RFC 7489 3.1): mode 's' exact match (case-insensitive), anything else
 * relaxed (same organisational domain, needs orgdomain_init). Returns 1 / 0. */
int dmarc_domains_aligned(const char *identifier, const char *from_domain, char mode);

enum dmarc_record_state {
    DMARC_RECORD_FOUND,    /* out->record_domain, p, sp, ... are filled */
    DMARC_RECORD_NONE,     /* no (usable) record: nothing to fail */
    DMARC_RECORD_TEMPFAIL, /* the _dmarc lookup failed temporarily */
};
/* Computes verdict, dkim_aligned_pass, policy_to_apply and reason from the other fields of
 * *out (from_domain, record fields, spf, spf_domain, spf_aligned, dkim[]). record_note: extra
 * words for the reason when there is no usable record or the lookup failed ("" / NULL: none). */
void dmarc_decide(struct dmarc_prediction *out, enum dmarc_record_state state,
                  const char *record_note);

#endif
