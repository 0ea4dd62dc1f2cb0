/* dkim_verify.c - see dkim_verify.h. Owns the process's verifying DKIM_LIB (apart from the
 * signing one in sign/dkim.c, so a stage that only checks signatures needs nothing of sign/) and
 * the public-key lookup through dns_sync. Blocks on DNS: worker threads only, never the loop. */
#include "mail/dkim_verify.h"

#include <stdio.h>
#include <string.h>

#include <opendkim/dkim.h>

#include "dns/dns_sync.h"

static DKIM_LIB *verify_lib;
static const char *(*dkim_test_lookup)(const char *domain, const char *selector);

/* ---------------------------------------------------------------------------------------- */
/* Key lookup for verification */

void dkim_verify_set_test_key_lookup(const char *(*fn)(const char *domain, const char *selector))
{
    dkim_test_lookup = fn;
}

/* What the key lookup could not find, per verification (the handle's user context). A
 * TRYAGAIN answer would make libopendkim stop at that signature and give up on the whole
 * message (dkim_eoh returns DKIM_STAT_CBTRYAGAIN, no signature list), so the callback says
 * NOTFOUND and remembers the real reason here for describe_signature(). */
#define LOOKUP_NOTES 16
struct lookup_notes {
    size_t n;
    struct {
        char domain[256];
        char selector[64];
        int temporary;
        char error[96];
    } note[LOOKUP_NOTES];
};

static void lookup_note(DKIM *dkim, const char *domain, const char *selector, int temporary,
                        const char *error)
{
    struct lookup_notes *notes = dkim_get_user_context(dkim);
    if (!notes || notes->n == LOOKUP_NOTES) return;
    snprintf(notes->note[notes->n].domain, sizeof notes->note[0].domain, "%s", domain);
    snprintf(notes->note[notes->n].selector, sizeof notes->note[0].selector, "%s", selector);
    notes->note[notes->n].temporary = temporary;
    snprintf(notes->note[notes->n].error, sizeof notes->note[0].error, "%s", error);
    notes->n++;
}

/* libopendkim calls this synchronously, from dkim_eoh (inside dkim_chunk), for every
 * signature it checks. */
static DKIM_CBSTAT key_lookup(DKIM *dkim, DKIM_SIGINFO *sig, u_char *buf, size_t buflen)
{
    const char *domain = (const char *)dkim_sig_getdomain(sig);
    const char *selector = (const char *)dkim_sig_getselector(sig);
    if (!domain || !selector || !*domain || !*selector) return DKIM_CBSTAT_NOTFOUND;

    if (dkim_test_lookup) {
        const char *record = dkim_test_lookup(domain, selector);
        if (!record) return DKIM_CBSTAT_NOTFOUND;
        if (strlen(record) >= buflen) {
            lookup_note(dkim, domain, selector, 0, "key record too long");
            return DKIM_CBSTAT_NOTFOUND;
        }
        memcpy(buf, record, strlen(record) + 1);
        return DKIM_CBSTAT_CONTINUE;
    }

    char name[512];
    int n = snprintf(name, sizeof name, "%s._domainkey.%s", selector, domain);
    if (n < 0 || (size_t)n >= sizeof name || n > 253) {
        lookup_note(dkim, domain, selector, 0, "key name too long");
        return DKIM_CBSTAT_NOTFOUND;
    }
    struct dns_answer answer;
    dns_sync_query(name, DNS_TYPE_TXT, &answer);
    DKIM_CBSTAT rc = DKIM_CBSTAT_NOTFOUND;
    if (answer.status == DNS_OK) {
        for (size_t i = 0; i < answer.n; i++) {
            size_t len = strlen(answer.txt[i]);
            if (len == 0) continue;
            if (len >= buflen) {
                lookup_note(dkim, domain, selector, 0, "key record too long");
                break;
            }
            /* More than one record is a configuration error; the first wins. */
            memcpy(buf, answer.txt[i], len + 1);
            rc = DKIM_CBSTAT_CONTINUE;
            break;
        }
    } else if (answer.status == DNS_TEMPFAIL) {
        char why[96];
        snprintf(why, sizeof why, "key lookup failed: %s",
                 answer.error ? answer.error : "temporary DNS error");
        lookup_note(dkim, domain, selector, 1, why);
    }
    /* DNS_NXDOMAIN / DNS_NODATA: no key, the library reports it. */
    dns_sync_free(&answer);
    return rc;
}

/* ---------------------------------------------------------------------------------------- */
/* Library set-up */

int dkim_verify_setup(char *err, size_t errlen)
{
    if (verify_lib) return 0;
    verify_lib = dkim_init(NULL, NULL);
    /* FIXCRLF: an LF-only message is verified as the CRLF message it stands for. */
    u_int flags = DKIM_LIBFLAGS_FIXCRLF;
    if (!verify_lib ||
        dkim_options(verify_lib, DKIM_OP_SETOPT, DKIM_OPTS_FLAGS, &flags, sizeof flags) !=
            DKIM_STAT_OK ||
        dkim_set_key_lookup(verify_lib, key_lookup) != DKIM_STAT_OK) {
        snprintf(err, errlen, "cannot set up libopendkim for verification");
        dkim_verify_shutdown();
        return -1;
    }
    return 0;
}

void dkim_verify_shutdown(void)
{
    if (verify_lib) dkim_close(verify_lib);
    verify_lib = NULL;
}

/* ---------------------------------------------------------------------------------------- */
/* Describing signatures */

const char *dkim_verify_algorithm_name(int alg)
{
    switch (alg) {
    case DKIM_SIGN_RSASHA256:
        return "rsa-sha256";
    case DKIM_SIGN_ED25519SHA256:
        return "ed25519-sha256";
    case DKIM_SIGN_RSASHA1:
        return "rsa-sha1";
    default:
        return "unknown";
    }
}

static void describe_signature(DKIM *d, DKIM_SIGINFO *sig, const struct lookup_notes *notes,
                               struct dkim_signature *out)
{
    memset(out, 0, sizeof *out);
    const char *domain = (const char *)dkim_sig_getdomain(sig);
    const char *selector = (const char *)dkim_sig_getselector(sig);
    snprintf(out->domain, sizeof out->domain, "%s", domain ? domain : "");
    snprintf(out->selector, sizeof out->selector, "%s", selector ? selector : "");
    dkim_alg_t alg = -1;
    if (dkim_sig_getsignalg(sig, &alg) != DKIM_STAT_OK) alg = -1;
    snprintf(out->algorithm, sizeof out->algorithm, "%s", dkim_verify_algorithm_name(alg));

    unsigned flags = dkim_sig_getflags(sig);
    int sigerr = dkim_sig_geterror(sig);
    for (size_t i = 0; !DKIM_SIG_CHECK(sig) && i < notes->n; i++) {
        if (strcmp(notes->note[i].domain, out->domain) == 0 &&
            strcmp(notes->note[i].selector, out->selector) == 0) {
            out->result = notes->note[i].temporary ? -1 : 0;
            snprintf(out->error, sizeof out->error, "%s", notes->note[i].error);
            return;
        }
    }
    if (DKIM_SIG_CHECK(sig)) {
        out->result = 1;
    } else if (sigerr == DKIM_SIGERROR_KEYFAIL) {
        out->result = -1;
        snprintf(out->error, sizeof out->error, "%s", dkim_sig_geterrorstr(sigerr));
    } else {
        out->result = 0;
        const char *why;
        /* A changed body also reports "signature verification failed"; say what changed. */
        if ((flags & DKIM_SIGFLAG_PROCESSED) && dkim_sig_getbh(sig) == DKIM_SIGBH_MISMATCH)
            why = "body hash mismatch";
        else if (sigerr != DKIM_SIGERROR_OK && sigerr != DKIM_SIGERROR_UNKNOWN)
            why = dkim_sig_geterrorstr(sigerr);
        else if (!(flags & DKIM_SIGFLAG_PROCESSED))
            why = dkim_geterror(d) && *dkim_geterror(d) ? dkim_geterror(d) : "not processed";
        else
            why = "signature mismatch";
        snprintf(out->error, sizeof out->error, "%s", why ? why : "unknown error");
    }
}

size_t dkim_verify_message(const char *data, size_t len, struct dkim_signature *sigs, size_t max)
{
    if (!verify_lib) return 0;
    DKIM_STAT st;
    DKIM *d = dkim_verify(verify_lib, (const unsigned char *)"outrelay", NULL, &st);
    if (!d) return 0;
    struct lookup_notes notes = {0};
    dkim_set_user_context(d, &notes);
    st = dkim_chunk(d, (u_char *)data, len);
    if (st == DKIM_STAT_OK) st = dkim_chunk(d, NULL, 0);
    if (st == DKIM_STAT_OK) st = dkim_eom(d, NULL);
    size_t found = 0;
    if (st != DKIM_STAT_NOSIG) {
        DKIM_SIGINFO **list = NULL;
        int n = 0;
        if (dkim_getsiglist(d, &list, &n) == DKIM_STAT_OK && list) {
            for (int i = 0; i < n; i++) {
                if (found < max) describe_signature(d, list[i], &notes, &sigs[found]);
                found++;
            }
        }
    }
    dkim_free(d);
    return found < max ? found : max;
}
