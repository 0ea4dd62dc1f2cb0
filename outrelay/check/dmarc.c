/* dmarc.c - predicts the receiver's DMARC verdict for a message we are about to send (see
 * dmarc.h). Owns the _dmarc / _domainkey TXT cache and the one-time libopendmarc setup.
 * libopendmarc parses the record and gives p/sp/pct/adkim/aspf; identifier alignment and the
 * verdict are decided here, because 1.4.2 treats adkim=s / aspf=s as relaxed once the suffix
 * list is loaded. Never calls libopendmarc's own DNS code (query_dmarc, fetch_rua/ruf with a
 * buffer, fake records). Blocking DNS: worker threads only; everything here is thread-safe. */
#include "check/dmarc.h"

#include <ctype.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <opendmarc/dmarc.h>

#include "mail/orgdomain.h"
#include "common/ttl_cache.h"
#include "common/log.h"
#include "common/util.h"
#include "dns/dns_sync.h"

/* How long "no record" answers are cached: dns_sync does not hand us the SOA minimum. */
#define DMARC_NEGATIVE_TTL 300
#define DMARC_MAX_TTL 86400
#define DMARC_CACHE_MAX 4096
/* libopendmarc wants a client address; it plays no part in the prediction. */
#define DMARC_DUMMY_IP "192.0.2.1"

/* ---------------------------------------------------------------------------------------------
 * TXT cache: name -> answer, shared by the _dmarc and _domainkey lookups. */

/* A private copy of a (possibly cached) TXT answer; the caller frees it with txt_result_free. */
struct txt_result {
    enum dns_status status;
    size_t n;
    char **txt;
    char error[96];
};

static pthread_mutex_t dmarc_lock = PTHREAD_MUTEX_INITIALIZER;
static struct ttl_cache *txt_cache; /* name -> struct txt_result; made under dmarc_lock */
static int dmarc_library_ready;     /* under dmarc_lock */

static char **copy_strings(char *const *src, size_t n)
{
    if (n == 0) return NULL;
    char **out = xcalloc(n, sizeof *out);
    for (size_t i = 0; i < n; i++)
        out[i] = xstrdup(src[i]);
    return out;
}

static void free_strings(char **s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(s[i]);
    free(s);
}

static void txt_result_free(struct txt_result *r)
{
    free_strings(r->txt, r->n);
    memset(r, 0, sizeof *r);
}

static void txt_result_free_cb(void *value)
{
    txt_result_free(value);
    free(value);
}

static void txt_result_copy(const void *value, void *out)
{
    const struct txt_result *from = value;
    struct txt_result *to = out;
    to->status = from->status;
    to->n = from->n;
    to->txt = copy_strings(from->txt, from->n);
}

/* The cache, made on first use (dmarc_init makes it; the tools may look up without it). */
static struct ttl_cache *txt_cache_get(void)
{
    pthread_mutex_lock(&dmarc_lock);
    if (!txt_cache) txt_cache = ttl_cache_new(DMARC_CACHE_MAX, txt_result_free_cb, NULL);
    struct ttl_cache *c = txt_cache;
    pthread_mutex_unlock(&dmarc_lock);
    return c;
}

/* Looks name up (cache first). Temporary failures are never cached. */
static void txt_lookup(const char *name, struct txt_result *out)
{
    memset(out, 0, sizeof *out);
    struct ttl_cache *cache = txt_cache_get();
    if (ttl_cache_get(cache, name, txt_result_copy, out) > 0) return;

    struct dns_answer answer;
    dns_sync_query(name, DNS_TYPE_TXT, &answer);
    out->status = answer.status;
    if (answer.status == DNS_OK) {
        out->n = answer.n;
        out->txt = copy_strings(answer.txt, answer.n);
    } else if (answer.status == DNS_TEMPFAIL) {
        snprintf(out->error, sizeof out->error, "%s",
                 answer.error ? answer.error : "temporary failure");
    }
    unsigned ttl = answer.status == DNS_OK ? answer.ttl : DMARC_NEGATIVE_TTL;
    if (ttl > DMARC_MAX_TTL) ttl = DMARC_MAX_TTL;
    dns_sync_free(&answer);
    if (out->status == DNS_TEMPFAIL || ttl == 0) return;

    struct txt_result *copy = xcalloc(1, sizeof *copy);
    txt_result_copy(out, copy);
    ttl_cache_put(cache, name, copy, ttl);
}

/* ---------------------------------------------------------------------------------------------
 * Library setup */

int dmarc_init(char *err, size_t errlen)
{
    int rc = 0;
    pthread_mutex_lock(&dmarc_lock);
    if (!dmarc_library_ready) {
        /* The suffix list is what makes relaxed alignment work between sibling subdomains. */
        OPENDMARC_LIB_T lib;
        memset(&lib, 0, sizeof lib);
        lib.tld_type = OPENDMARC_TLD_TYPE_MOZILLA;
        snprintf((char *)lib.tld_source_file, sizeof lib.tld_source_file, "%s", ORGDOMAIN_PSL_FILE);
        int st = opendmarc_policy_library_init(&lib);
        if (st != DMARC_PARSE_OKAY) {
            snprintf(err, errlen, "libopendmarc initialisation with %s failed: %s",
                     ORGDOMAIN_PSL_FILE, opendmarc_policy_status_to_str(st));
            rc = -1;
        } else {
            dmarc_library_ready = 1;
        }
    }
    pthread_mutex_unlock(&dmarc_lock);
    if (rc == 0) txt_cache_get();
    return rc;
}

void dmarc_shutdown(void)
{
    pthread_mutex_lock(&dmarc_lock);
    if (dmarc_library_ready) {
        OPENDMARC_LIB_T lib;
        memset(&lib, 0, sizeof lib);
        opendmarc_policy_library_shutdown(&lib);
        dmarc_library_ready = 0;
    }
    ttl_cache_free(txt_cache);
    txt_cache = NULL;
    pthread_mutex_unlock(&dmarc_lock);
}

const char *dmarc_verdict_name(enum dmarc_verdict v)
{
    switch (v) {
    case DMARC_VERDICT_PASS:
        return "pass";
    case DMARC_VERDICT_FAIL:
        return "fail";
    case DMARC_VERDICT_TEMPERROR:
        return "temperror";
    case DMARC_VERDICT_NO_POLICY:
        return "none";
    }
    return "unknown";
}

/* ---------------------------------------------------------------------------------------------
 * Small text helpers */

static void append(char *buf, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Appends to a NUL-terminated buffer, truncating quietly (reasons are for humans). */
static void append(char *buf, size_t size, const char *fmt, ...)
{
    size_t used = strnlen(buf, size);
    if (used + 1 >= size) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + used, size - used, fmt, ap);
    va_end(ap);
}

/* Lower case, without a trailing dot. */
static void normalise_domain(const char *in, char *out, size_t size)
{
    size_t n = 0;
    for (; in && in[n] && n + 1 < size; n++)
        out[n] = (char)tolower((unsigned char)in[n]);
    out[n] = '\0';
    if (n && out[n - 1] == '.') out[n - 1] = '\0';
}

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static const char *skip_space(const char *s)
{
    while (is_space(*s))
        s++;
    return s;
}

/* Base64 strings equal when whitespace is ignored. */
static int b64_equal(const char *a, const char *b)
{
    for (;;) {
        while (is_space(*a))
            a++;
        while (is_space(*b))
            b++;
        if (*a != *b) return 0;
        if (!*a) return 1;
        a++;
        b++;
    }
}

static const char *policy_word(char p)
{
    switch (p) {
    case 'n':
        return "none";
    case 'q':
        return "quarantine";
    case 'r':
        return "reject";
    }
    return "unset";
}

/* ---------------------------------------------------------------------------------------------
 * DKIM key records */

/* tag-name = ALPHA *ALNUMPUNC (RFC 6376 3.2) */
static int valid_tag_name(const char *name, size_t len)
{
    if (len == 0 || !isalpha((unsigned char)name[0])) return 0;
    for (size_t i = 1; i < len; i++)
        if (!isalnum((unsigned char)name[i]) && name[i] != '_') return 0;
    return 1;
}

/* tag-value: tval (%x21-3A / %x3C-7E) separated by folding white space. */
static int valid_tag_value(const char *val, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)val[i];
        if (!is_space((char)c) && (c < 0x21 || c > 0x7e || c == ';')) return 0;
    }
    return 1;
}

/* Copies a value without its white space; -1 when it does not fit. */
static int copy_compact(const char *val, size_t len, char *out, size_t size)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (is_space(val[i])) continue;
        if (o + 1 >= size) return -1;
        out[o++] = val[i];
    }
    out[o] = '\0';
    return 0;
}

/* Is `item` one of the colon-separated entries of `list` (case-insensitive)? */
static int list_has(const char *list, const char *item)
{
    size_t n = strlen(item);
    for (const char *p = list; *p;) {
        const char *end = strchr(p, ':');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == n && strncasecmp(p, item, n) == 0) return 1;
        if (!end) break;
        p = end + 1;
    }
    return 0;
}

#define KEY_MAX_TAGS 32

int dmarc_parse_key_record(const char *txt, struct dmarc_key_record *out, const char **why)
{
    const char *dummy;
    if (!why) why = &dummy;
    *why = NULL;
    memset(out, 0, sizeof *out);
    snprintf(out->key_type, sizeof out->key_type, "rsa");
    char seen[KEY_MAX_TAGS][16];
    size_t n_seen = 0;
    int first = 1, seen_p = 0;
    const char *s = txt;
    while (*s) {
        const char *end = strchr(s, ';');
        size_t len = end ? (size_t)(end - s) : strlen(s);
        const char *spec = skip_space(s);
        const char *spec_end = s + len;
        s = end ? end + 1 : s + len;
        if (spec >= spec_end) continue; /* empty tag-spec, e.g. a trailing ";" */
        const char *eq = memchr(spec, '=', (size_t)(spec_end - spec));
        if (!eq) {
            *why = "a tag without '='";
            return -1;
        }
        const char *name_end = eq;
        while (name_end > spec && is_space(name_end[-1]))
            name_end--;
        size_t name_len = (size_t)(name_end - spec);
        const char *val = skip_space(eq + 1);
        const char *val_end = spec_end;
        while (val_end > val && is_space(val_end[-1]))
            val_end--;
        size_t val_len = val_end > val ? (size_t)(val_end - val) : 0;
        if (!valid_tag_name(spec, name_len) || name_len >= sizeof seen[0]) {
            *why = "a malformed tag name";
            return -1;
        }
        if (!valid_tag_value(val, val_len)) {
            *why = "a tag value with characters the syntax does not allow";
            return -1;
        }
        for (size_t i = 0; i < n_seen; i++) {
            if (strlen(seen[i]) == name_len && strncmp(seen[i], spec, name_len) == 0) {
                *why = "a tag appears twice (the whole record is invalid)";
                return -1;
            }
        }
        if (n_seen < KEY_MAX_TAGS) {
            memcpy(seen[n_seen], spec, name_len);
            seen[n_seen++][name_len] = '\0';
        }
        char tag = name_len == 1 ? spec[0] : '\0';
        if (tag == 'v') {
            /* RFC 6376 3.6.1: if present, first and "DKIM1". */
            if (!first || val_len != 5 || strncmp(val, "DKIM1", 5) != 0) {
                *why = "v= is not first or not DKIM1";
                return -1;
            }
        } else if (tag == 'k') {
            if (val_len == 0 || copy_compact(val, val_len, out->key_type, sizeof out->key_type)) {
                *why = "a malformed k=";
                return -1;
            }
        } else if (tag == 'p') {
            seen_p = 1;
            if (copy_compact(val, val_len, out->public_b64, sizeof out->public_b64) < 0) {
                *why = "a p= longer than any key we could have made";
                return -1;
            }
        } else if (tag == 'h') {
            if (copy_compact(val, val_len, out->hashes, sizeof out->hashes) < 0) {
                *why = "an h= too long";
                return -1;
            }
        } else if (tag == 's') {
            if (copy_compact(val, val_len, out->services, sizeof out->services) < 0) {
                *why = "an s= too long";
                return -1;
            }
        } else if (tag == 't') {
            char flags[64];
            if (copy_compact(val, val_len, flags, sizeof flags) < 0) {
                *why = "a t= too long";
                return -1;
            }
            out->testing = list_has(flags, "y");
            out->strict_identity = list_has(flags, "s");
        } /* n= and unknown tags: ignored (RFC 6376 3.6.1) */
        first = 0;
    }
    if (!seen_p) {
        *why = "no p= tag";
        return -1;
    }
    return 0;
}

/* "rsa-sha256" -> "rsa" and "sha256" */
static void split_algorithm(const char *algorithm, char *type, size_t tsize, char *hash,
                            size_t hsize)
{
    const char *dash = algorithm ? strchr(algorithm, '-') : NULL;
    size_t n = dash ? (size_t)(dash - algorithm) : (algorithm ? strlen(algorithm) : 0);
    snprintf(type, tsize, "%.*s", (int)n, algorithm ? algorithm : "");
    snprintf(hash, hsize, "%s", dash ? dash + 1 : "");
}

int dmarc_key_check(char *const *txt, size_t n_txt, const char *name, const char *algorithm,
                    const char *public_b64, const char *auid_domain, const char *sdid, char *detail,
                    size_t detail_size)
{
    char want_type[16], want_hash[16];
    split_algorithm(algorithm, want_type, sizeof want_type, want_hash, sizeof want_hash);
    int usable = 0;
    char problem[300] = "";
    const char *syntax = NULL;
    for (size_t i = 0; i < n_txt; i++) {
        struct dmarc_key_record rec;
        const char *why = NULL;
        if (dmarc_parse_key_record(txt[i], &rec, &why) < 0) {
            if (!syntax && strstr(txt[i], "p=")) syntax = why; /* meant as a key record */
            continue;
        }
        usable++;
        if (rec.public_b64[0] == '\0') {
            snprintf(problem, sizeof problem, "key at %s is revoked (empty p=)", name);
        } else if (strcasecmp(rec.key_type, want_type) != 0) {
            snprintf(problem, sizeof problem, "key at %s is k=%s, we sign with %s", name,
                     rec.key_type, algorithm ? algorithm : "?");
        } else if (!public_b64 || !b64_equal(rec.public_b64, public_b64)) {
            snprintf(problem, sizeof problem, "key published at %s differs from ours", name);
        } else if (rec.hashes[0] && !list_has(rec.hashes, want_hash)) {
            snprintf(problem, sizeof problem,
                     "key at %s allows only h=%s, so receivers refuse our %s signature "
                     "(RFC 6376 3.6.1)",
                     name, rec.hashes, algorithm);
        } else if (rec.services[0] && !list_has(rec.services, "*") &&
                   !list_has(rec.services, "email")) {
            snprintf(problem, sizeof problem,
                     "key at %s is for service s=%s, not email (RFC 6376 3.6.1)", name,
                     rec.services);
        } else if (rec.strict_identity && auid_domain && auid_domain[0] && sdid &&
                   strcasecmp(auid_domain, sdid) != 0) {
            snprintf(problem, sizeof problem,
                     "key at %s has t=s but the signature's i= is in %s, not d=%s", name,
                     auid_domain, sdid);
        } else {
            snprintf(detail, detail_size, "our key is published at %s%s", name,
                     rec.testing ? " (t=y: the domain says it is testing DKIM)" : "");
            return 1;
        }
    }
    if (problem[0])
        snprintf(detail, detail_size, "%s", problem);
    else if (!usable && syntax)
        snprintf(detail, detail_size, "the key record at %s is invalid: %s", name, syntax);
    else
        snprintf(detail, detail_size, "no usable DKIM key record at %s", name);
    return 0;
}

/* Fills key_matches and detail of one outcome from DNS. */
static void check_published_key(const struct dmarc_dkim_input *sig, struct dmarc_dkim_outcome *o)
{
    char name[600];
    snprintf(name, sizeof name, "%s._domainkey.%s", sig->selector ? sig->selector : "", o->domain);
    struct txt_result r;
    txt_lookup(name, &r);
    switch (r.status) {
    case DNS_OK:
        o->key_matches = dmarc_key_check(r.txt, r.n, name, sig->algorithm, sig->public_b64, NULL,
                                         o->domain, o->detail, sizeof o->detail);
        break;
    case DNS_NXDOMAIN:
    case DNS_NODATA:
        o->key_matches = 0;
        append(o->detail, sizeof o->detail, "no key published at %s", name);
        break;
    case DNS_TEMPFAIL:
        o->key_matches = -1;
        append(o->detail, sizeof o->detail, "temporary DNS failure looking up %s (%s)", name,
               r.error);
        break;
    }
    txt_result_free(&r);
}

/* ---------------------------------------------------------------------------------------------
 * Alignment and verdict */

int dmarc_domains_aligned(const char *identifier, const char *from_domain, char mode)
{
    char a[256], b[256];
    normalise_domain(identifier, a, sizeof a);
    normalise_domain(from_domain, b, sizeof b);
    if (!a[0] || !b[0]) return 0;
    if (mode == 's') return strcmp(a, b) == 0;
    char org_a[256], org_b[256];
    orgdomain_of(a, org_a, sizeof org_a);
    orgdomain_of(b, org_b, sizeof org_b);
    return strcmp(org_a, org_b) == 0;
}

static void describe_spf(const struct dmarc_prediction *p, char *buf, size_t size)
{
    const char *d = p->spf_domain;
    if (!d[0]) {
        append(buf, size, "no envelope domain for SPF");
        return;
    }
    switch (p->spf) {
    case SPF_PASS:
        append(buf, size, "SPF passes for %s", d);
        break;
    case SPF_FAIL:
        append(buf, size, "SPF fails for %s", d);
        break;
    case SPF_SOFTFAIL:
        append(buf, size, "SPF softfails for %s", d);
        break;
    case SPF_NEUTRAL:
        append(buf, size, "SPF is neutral for %s", d);
        break;
    case SPF_NONE:
        append(buf, size, "no SPF record for %s", d);
        break;
    case SPF_TEMPERROR:
        append(buf, size, "SPF temporary error for %s", d);
        break;
    case SPF_PERMERROR:
        append(buf, size, "SPF permanent error for %s", d);
        break;
    }
    append(buf, size, " (%s)", p->spf_aligned ? "aligned" : "not aligned");
}

static void describe_dkim(const struct dmarc_prediction *p, char *buf, size_t size)
{
    if (p->n_dkim == 0) {
        append(buf, size, "no DKIM signature");
        return;
    }
    for (size_t i = 0; i < p->n_dkim; i++) {
        const struct dmarc_dkim_outcome *o = &p->dkim[i];
        /* An unaligned signature cannot help, whatever its key: say only that. */
        if (!o->aligned)
            append(buf, size, "%sDKIM d=%s (not aligned)", i ? ", " : "", o->domain);
        else if (o->key_matches == 1)
            append(buf, size, "%sDKIM d=%s (aligned, %s)", i ? ", " : "", o->domain,
                   o->upstream ? "kept upstream signature" : "key published");
        else
            append(buf, size, "%sDKIM d=%s (aligned, but %s)", i ? ", " : "", o->domain, o->detail);
    }
}

void dmarc_decide(struct dmarc_prediction *out, enum dmarc_record_state state,
                  const char *record_note)
{
    const char *note = record_note ? record_note : "";
    out->reason[0] = '\0';
    out->policy_to_apply = 0;
    out->dkim_aligned_pass = 0;
    int dkim_tempfail = 0;
    for (size_t i = 0; i < out->n_dkim; i++) {
        if (out->dkim[i].aligned && out->dkim[i].key_matches == 1) out->dkim_aligned_pass = 1;
        if (out->dkim[i].aligned && out->dkim[i].key_matches < 0) dkim_tempfail = 1;
    }
    out->applied_subdomain_policy = state == DMARC_RECORD_FOUND && out->sp &&
                                    out->record_domain[0] &&
                                    strcasecmp(out->record_domain, out->from_domain) != 0;

    if (state == DMARC_RECORD_TEMPFAIL) {
        out->verdict = DMARC_VERDICT_TEMPERROR;
        append(out->reason, sizeof out->reason, "DMARC for %s cannot be predicted now: %s",
               out->from_domain, note[0] ? note : "temporary DNS failure");
        return;
    }
    if (state == DMARC_RECORD_NONE) {
        out->verdict = DMARC_VERDICT_NO_POLICY;
        append(out->reason, sizeof out->reason, "no DMARC policy for %s%s%s", out->from_domain,
               note[0] ? ": " : "", note);
        return;
    }

    int spf_pass = out->spf == SPF_PASS && out->spf_aligned;
    char what[320] = "";
    if (spf_pass || out->dkim_aligned_pass) {
        out->verdict = DMARC_VERDICT_PASS;
        if (spf_pass) describe_spf(out, what, sizeof what);
        for (size_t i = 0; i < out->n_dkim; i++) {
            const struct dmarc_dkim_outcome *o = &out->dkim[i];
            if (o->aligned && o->key_matches == 1)
                append(what, sizeof what, "%sDKIM d=%s%s%s (aligned, %s)", what[0] ? ", " : "",
                       o->domain, o->selector[0] ? " s=" : "", o->selector,
                       o->upstream ? "kept upstream signature" : "key published");
        }
        append(out->reason, sizeof out->reason, "DMARC passes for %s: %s", out->from_domain, what);
        return;
    }

    describe_spf(out, what, sizeof what);
    append(what, sizeof what, ", ");
    describe_dkim(out, what, sizeof what);
    if ((out->spf == SPF_TEMPERROR && out->spf_aligned) || dkim_tempfail) {
        out->verdict = DMARC_VERDICT_TEMPERROR;
        append(out->reason, sizeof out->reason, "DMARC for %s cannot be predicted now: %s",
               out->from_domain, what);
        return;
    }
    out->verdict = DMARC_VERDICT_FAIL;
    out->policy_to_apply = out->applied_subdomain_policy ? out->sp : out->p;
    append(out->reason, sizeof out->reason, "DMARC would fail for %s: %s; %spolicy %s",
           out->from_domain, what, out->applied_subdomain_policy ? "subdomain " : "",
           policy_word(out->policy_to_apply));
    if (out->pct >= 0 && out->pct < 100)
        append(out->reason, sizeof out->reason, " (pct=%d)", out->pct);
}

/* ---------------------------------------------------------------------------------------------
 * Policy discovery (RFC 7489 6.6.3) */

static int is_dmarc_record(const char *txt)
{
    const char *s = skip_space(txt);
    if (*s != 'v') return 0;
    s = skip_space(s + 1);
    if (*s != '=') return 0;
    s = skip_space(s + 1);
    if (strncmp(s, "DMARC1", 6) != 0) return 0;
    s += 6;
    return *s == '\0' || *s == ';' || is_space(*s);
}

enum lookup_outcome { LOOKUP_ONE, LOOKUP_NONE, LOOKUP_SEVERAL, LOOKUP_TEMPFAIL };

/* One _dmarc.<domain> lookup; *record (malloc'd) on LOOKUP_ONE. */
static enum lookup_outcome lookup_dmarc_at(const char *domain, char **record, char *note,
                                           size_t note_size)
{
    char name[300];
    snprintf(name, sizeof name, "_dmarc.%s", domain);
    struct txt_result r;
    txt_lookup(name, &r);
    enum lookup_outcome outcome = LOOKUP_NONE;
    if (r.status == DNS_TEMPFAIL) {
        snprintf(note, note_size, "temporary DNS failure looking up %s (%s)", name, r.error);
        outcome = LOOKUP_TEMPFAIL;
    } else {
        size_t found = 0;
        for (size_t i = 0; i < r.n; i++) {
            if (!is_dmarc_record(r.txt[i])) continue;
            if (found++ == 0) *record = xstrdup(r.txt[i]);
        }
        if (found == 1) {
            outcome = LOOKUP_ONE;
        } else if (found > 1) {
            free(*record);
            *record = NULL;
            snprintf(note, note_size, "%zu DMARC records at %s, so none applies", found, name);
            outcome = LOOKUP_SEVERAL;
        }
    }
    txt_result_free(&r);
    return outcome;
}

/* Finds the policy record for from (normalised). On FOUND: *record and record_domain. */
static enum dmarc_record_state discover_record(const char *from, char **record, char *record_domain,
                                               size_t rd_size, char *note, size_t note_size)
{
    *record = NULL;
    enum lookup_outcome o = lookup_dmarc_at(from, record, note, note_size);
    if (o == LOOKUP_TEMPFAIL) return DMARC_RECORD_TEMPFAIL;
    if (o == LOOKUP_SEVERAL) return DMARC_RECORD_NONE;
    if (o == LOOKUP_ONE) {
        snprintf(record_domain, rd_size, "%s", from);
        return DMARC_RECORD_FOUND;
    }
    char org[256];
    orgdomain_of(from, org, sizeof org);
    if (strcmp(org, from) == 0) {
        snprintf(note, note_size, "no record at _dmarc.%s", from);
        return DMARC_RECORD_NONE;
    }
    o = lookup_dmarc_at(org, record, note, note_size);
    if (o == LOOKUP_TEMPFAIL) return DMARC_RECORD_TEMPFAIL;
    if (o == LOOKUP_SEVERAL) return DMARC_RECORD_NONE;
    if (o == LOOKUP_NONE) {
        snprintf(note, note_size, "no record at _dmarc.%s nor at _dmarc.%s", from, org);
        return DMARC_RECORD_NONE;
    }
    snprintf(record_domain, rd_size, "%s", org);
    return DMARC_RECORD_FOUND;
}

/* ---------------------------------------------------------------------------------------------
 * libopendmarc */

static int spf_outcome_for_library(enum spf_result r)
{
    switch (r) {
    case SPF_PASS:
        return DMARC_POLICY_SPF_OUTCOME_PASS;
    case SPF_NONE:
        return DMARC_POLICY_SPF_OUTCOME_NONE;
    case SPF_TEMPERROR:
        return DMARC_POLICY_SPF_OUTCOME_TMPFAIL;
    case SPF_FAIL:
    case SPF_SOFTFAIL:
    case SPF_NEUTRAL:
    case SPF_PERMERROR:
        break;
    }
    return DMARC_POLICY_SPF_OUTCOME_FAIL; /* DMARC counts anything but pass as not passing */
}

static char char_or_zero(int v)
{
    return (v == 'n' || v == 'q' || v == 'r' || v == 's') ? (char)v : 0;
}

/* Runs the record and identifiers through libopendmarc. Fills p/sp/pct/adkim/aspf. Returns 0,
 * or -1 when libopendmarc rejects the record (note says why). */
static int evaluate_with_library(struct dmarc_prediction *out, const char *record, char *note,
                                 size_t note_size, int *lib_dkim_aligned, int *lib_spf_aligned)
{
    u_char ip[] = DMARC_DUMMY_IP;
    DMARC_POLICY_T *pctx = opendmarc_policy_connect_init(ip, 0); /* 0 = IPv4: it is is_ipv6 */
    if (!pctx) {
        snprintf(note, note_size, "libopendmarc could not create a policy context");
        return -1;
    }
    char from[256], org[256];
    snprintf(from, sizeof from, "%s", out->from_domain);
    snprintf(org, sizeof org, "%s", out->record_domain);
    char *rec = xstrdup(record);
    int at_org = strcmp(org, from) != 0;

    int rc = 0;
    opendmarc_policy_store_from_domain(pctx, (u_char *)from);
    /* store_dmarc overwrites the From domain with its 3rd argument: pass the From domain. */
    int st = opendmarc_policy_store_dmarc(pctx, (u_char *)rec, (u_char *)from,
                                          at_org ? (u_char *)org : NULL);
    if (st != DMARC_PARSE_OKAY) {
        snprintf(note, note_size, "the DMARC record at _dmarc.%s is invalid (%s)", org,
                 opendmarc_policy_status_to_str(st));
        rc = -1;
        goto done;
    }
    if (out->spf_domain[0]) {
        char spfdom[256];
        snprintf(spfdom, sizeof spfdom, "%s", out->spf_domain);
        opendmarc_policy_store_spf(pctx, (u_char *)spfdom, spf_outcome_for_library(out->spf),
                                   DMARC_POLICY_SPF_ORIGIN_MAILFROM, NULL);
    }
    for (size_t i = 0; i < out->n_dkim; i++) {
        struct dmarc_dkim_outcome *o = &out->dkim[i];
        int result =
            o->key_matches == 1 ? DMARC_POLICY_DKIM_OUTCOME_PASS : DMARC_POLICY_DKIM_OUTCOME_FAIL;
        opendmarc_policy_store_dkim(pctx, (u_char *)o->domain, (u_char *)o->selector, result, NULL);
    }
    int policy = opendmarc_get_policy_to_enforce(pctx);
    int lib_dkim = 0, lib_spf = 0, v = 0;
    opendmarc_policy_fetch_alignment(pctx, &lib_dkim, &lib_spf);
    if (opendmarc_policy_fetch_p(pctx, &v) == DMARC_PARSE_OKAY) out->p = char_or_zero(v);
    v = 0;
    if (opendmarc_policy_fetch_sp(pctx, &v) == DMARC_PARSE_OKAY) out->sp = char_or_zero(v);
    v = -1;
    opendmarc_policy_fetch_pct(pctx, &v);
    out->pct = (v >= 0 && v <= 100) ? v : 100;
    v = 0;
    opendmarc_policy_fetch_adkim(pctx, &v);
    out->adkim = v == 's' ? 's' : 'r';
    v = 0;
    opendmarc_policy_fetch_aspf(pctx, &v);
    out->aspf = v == 's' ? 's' : 'r';
    *lib_dkim_aligned = lib_dkim == DMARC_POLICY_DKIM_ALIGNMENT_PASS;
    *lib_spf_aligned = lib_spf == DMARC_POLICY_SPF_ALIGNMENT_PASS;
    log_debug("dmarc: libopendmarc for %s: policy %s, DKIM alignment %s, SPF alignment %s "
              "(adkim=%c aspf=%c)",
              from, opendmarc_policy_status_to_str(policy), *lib_dkim_aligned ? "pass" : "fail",
              *lib_spf_aligned ? "pass" : "fail", out->adkim, out->aspf);
done:
    free(rec);
    opendmarc_policy_connect_shutdown(pctx);
    return rc;
}

void dmarc_predict(const char *from_domain, const char *mailfrom_domain, enum spf_result spf,
                   const struct dmarc_dkim_input *sigs, size_t n_sigs, struct dmarc_prediction *out)
{
    memset(out, 0, sizeof *out);
    normalise_domain(from_domain, out->from_domain, sizeof out->from_domain);
    normalise_domain(mailfrom_domain, out->spf_domain, sizeof out->spf_domain);
    out->spf = spf;
    out->pct = 100;
    out->adkim = out->aspf = 'r';
    size_t max_sigs = sizeof out->dkim / sizeof out->dkim[0];
    out->n_dkim = n_sigs < max_sigs ? n_sigs : max_sigs;
    for (size_t i = 0; i < out->n_dkim; i++) {
        struct dmarc_dkim_outcome *o = &out->dkim[i];
        normalise_domain(sigs[i].domain, o->domain, sizeof o->domain);
        snprintf(o->selector, sizeof o->selector, "%s", sigs[i].selector ? sigs[i].selector : "");
        snprintf(o->algorithm, sizeof o->algorithm, "%s",
                 sigs[i].algorithm ? sigs[i].algorithm : "");
        o->upstream = sigs[i].upstream;
    }
    if (!out->from_domain[0]) {
        dmarc_decide(out, DMARC_RECORD_NONE, "the message has no From domain");
        return;
    }

    char note[200] = "";
    char *record = NULL;
    enum dmarc_record_state state = discover_record(out->from_domain, &record, out->record_domain,
                                                    sizeof out->record_domain, note, sizeof note);

    for (size_t i = 0; i < out->n_dkim; i++) {
        if (sigs[i].upstream) { /* RFC 7489 4.2: any aligned, verifying signature counts */
            out->dkim[i].key_matches = 1;
            snprintf(out->dkim[i].detail, sizeof out->dkim[i].detail,
                     "upstream signature, verified on arrival and kept");
            continue;
        }
        check_published_key(&sigs[i], &out->dkim[i]);
    }

    int lib_dkim = 0, lib_spf = 0;
    if (state == DMARC_RECORD_FOUND &&
        evaluate_with_library(out, record, note, sizeof note, &lib_dkim, &lib_spf) < 0) {
        state = DMARC_RECORD_NONE;
        out->record_domain[0] = '\0';
        out->p = out->sp = 0;
    }
    free(record);

    /* Our own alignment, strict included (libopendmarc 1.4.2 treats 's' as relaxed). */
    out->spf_aligned = dmarc_domains_aligned(out->spf_domain, out->from_domain, out->aspf);
    for (size_t i = 0; i < out->n_dkim; i++)
        out->dkim[i].aligned =
            dmarc_domains_aligned(out->dkim[i].domain, out->from_domain, out->adkim);
    dmarc_decide(out, state, note);
    if (state == DMARC_RECORD_FOUND && lib_dkim != out->dkim_aligned_pass)
        log_debug("dmarc: %s: DKIM alignment %s here, libopendmarc said %s (adkim=%c)",
                  out->from_domain, out->dkim_aligned_pass ? "pass" : "fail",
                  lib_dkim ? "pass" : "fail", out->adkim);
    if (state == DMARC_RECORD_FOUND && lib_spf != (out->spf == SPF_PASS && out->spf_aligned))
        log_debug("dmarc: %s: SPF alignment %s here, libopendmarc said %s (aspf=%c)",
                  out->from_domain, out->spf_aligned ? "pass" : "fail", lib_spf ? "pass" : "fail",
                  out->aspf);
}
