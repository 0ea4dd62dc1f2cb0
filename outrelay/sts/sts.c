/* sts.c - MTA-STS lookups for the SMTP client (RFC 8461 section 5.1): the _mta-sts TXT record and
 * the address of mta-sts.<domain> through our resolver (dns/, on the loop), the HTTPS fetch with
 * libcurl on a worker pool of its own (common/workpool.h: a blocking easy handle with a timeout
 * keeps this file small, fetches are rare because policies are cached for max_age, and a slow
 * policy host never holds up signing on the shared pool), and the cache: in memory
 * (common/ttl_cache.h) and one file per domain under STATE/mta-sts/ so a restart keeps the
 * policies. One fetch per domain at a time: the connections that need the same policy meanwhile
 * wait for it; a failed fetch is not tried again for the same id for STS_RETRY_AFTER seconds, so
 * a policy host that is down sees one attempt per few minutes, not one per connection. Loop
 * thread, except fetch_work() which runs on a worker and touches no loop object. Called by
 * smtpc/smtpc_resolve.c. */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/dirs.h"
#include "common/hashmap.h"
#include "common/log.h"
#include "common/private_file.h"
#include "common/ttl_cache.h"
#include "common/util.h"
#include "common/workpool.h"
#include "dns/dns.h"
#include "sts/sts.h"

/* A failed fetch is not repeated for the same policy id within this many seconds (the cached
 * policy, or the failure, answers meanwhile). */
#define STS_RETRY_AFTER 300

struct sts_lookup {
    char domain[256];
    sts_cb cb;
    void *arg;
    struct dns_query *dnsq;
    /* A lookup that fetches is its domain's leader (in `fetching`) until the fetch is done:
     * lookups that need the same policy meanwhile wait in its waiters list. A leader or a
     * waiter is only marked by sts_cancel(), and freed when the fetch ends. */
    int leader, waiting;
    struct sts_lookup *waiters, *next_waiter;
    int cancelled; /* by sts_cancel(): the callback is not called */
    int aaaa_done;
    char id[33]; /* the TXT record's */
    struct mta_sts_policy *cached;
    /* the fetch's inputs (copied: the config may be reloaded meanwhile) and outputs */
    char *ca_file;
    char *state;
    long timeout;
    int64_t max_bytes;
    int port;
    char resolve[2][300]; /* CURLOPT_RESOLVE entries "host:port:address" */
    size_t n_resolve;
    struct mta_sts_policy *fetched;
    const char *failure;
    char reason[300];
};

/* what a failed fetch left, for STS_RETRY_AFTER seconds */
struct failed_fetch {
    char id[33];
    const char *failure;
    char reason[300];
};

static struct ttl_cache *mem_cache;
static struct ttl_cache *failed_cache; /* domain -> struct failed_fetch */
static struct hashmap *fetching;       /* domain -> the leader lookup */
static struct workpool *fetch_pool;
static struct event_base *sts_base;
static volatile sig_atomic_t stopping; /* aborts running transfers at shutdown */
static int curl_ready;

static void copy_ref(const void *value, void *out)
{
    struct mta_sts_policy *p = (struct mta_sts_policy *)value;
    p->refs++;
    *(struct mta_sts_policy **)out = p;
}

static void release_value(void *value)
{
    sts_policy_release(value);
}

static void cache_path(const char *state, const char *domain, char *out, size_t n)
{
    snprintf(out, n, "%s/mta-sts/%s", state, domain);
}

/* The disk form: "id ID\nexpires UNIXTIME\n\n" then the policy's lines. */
static struct mta_sts_policy *disk_load(const char *state, const char *domain)
{
    char path[1024];
    cache_path(state, domain, path, sizeof path);
    FILE *f = fopen(path, "re");
    if (!f) return NULL;
    char buf[70000];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char id[33];
    long long expires;
    int off = 0;
    if (sscanf(buf, "id %32[A-Za-z0-9]\nexpires %lld\n\n%n", id, &expires, &off) != 2 || !off)
        return NULL;
    if (expires <= clock_now()) return NULL;
    char err[200];
    struct mta_sts_policy *p = sts_parse_policy(buf + off, n - (size_t)off, err, sizeof err);
    if (!p) return NULL;
    snprintf(p->domain, sizeof p->domain, "%s", domain);
    snprintf(p->id, sizeof p->id, "%s", id);
    p->expires = expires;
    return p;
}

static void disk_store(const char *state, const struct mta_sts_policy *p)
{
    char dir[1024], path[1024], tmp[1100], err[200];
    snprintf(dir, sizeof dir, "%s/mta-sts", state);
    if (dirs_make(dir, 0700, 0700, err, sizeof err) < 0) {
        log_warn("mta-sts: cannot keep the policy of %s: %s", p->domain, err);
        return;
    }
    cache_path(state, p->domain, path, sizeof path);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, PRIVATE_FILE_MODE);
    if (fd < 0) {
        log_warn("mta-sts: cannot write %s: %s", tmp, strerror(errno));
        return;
    }
    private_file_fix_mode(fd);
    FILE *f = fdopen(fd, "w");
    fprintf(f, "id %s\nexpires %lld\n\n%s\n", p->id, (long long)p->expires, p->text);
    int bad = fflush(f) != 0 || fsync(fd) != 0;
    fclose(f);
    if (bad || rename(tmp, path) < 0) {
        log_warn("mta-sts: cannot write %s: %s", path, strerror(errno));
        unlink(tmp);
    }
}

/* The unexpired policy of domain from memory, else from disk (then kept in memory too). */
static struct mta_sts_policy *cache_get(const char *state, const char *domain)
{
    struct mta_sts_policy *p = NULL;
    if (ttl_cache_get(mem_cache, domain, copy_ref, &p) > 0) return p;
    p = disk_load(state, domain);
    if (!p) return NULL;
    p->refs++; /* one for the cache, one for the caller */
    ttl_cache_put(mem_cache, domain, p, p->expires - clock_now());
    return p;
}

static void finish(struct sts_lookup *l, struct mta_sts_policy *use, const char *failure,
                   const char *reason)
{
    if (l->cancelled)
        sts_policy_release(use);
    else
        l->cb(l->arg, use, failure, reason);
    sts_policy_release(l->cached);
    free(l->ca_file);
    free(l->state);
    free(l);
}

/* --- the fetch, on a worker --------------------------------------------------------------------
 */

struct body {
    char *data;
    size_t len, max;
    int too_big;
};

static size_t body_write(char *ptr, size_t size, size_t nmemb, void *arg)
{
    struct body *b = arg;
    size_t n = size * nmemb;
    if (b->len + n > b->max) {
        b->too_big = 1;
        return 0; /* aborts the transfer */
    }
    b->data = xrealloc(b->data, b->len + n + 1);
    memcpy(b->data + b->len, ptr, n);
    b->len += n;
    return n;
}

static int fetch_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                          curl_off_t ulnow)
{
    (void)arg, (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
    return stopping ? 1 : 0; /* nonzero aborts the transfer */
}

static void fetch_work(void *arg)
{
    struct sts_lookup *l = arg;
    char url[400];
    snprintf(url, sizeof url, "https://mta-sts.%s:%d/.well-known/mta-sts.txt", l->domain, l->port);
    struct body b = {.max = (size_t)l->max_bytes};
    struct curl_slist *resolve = NULL;
    for (size_t i = 0; i < l->n_resolve; i++)
        resolve = curl_slist_append(resolve, l->resolve[i]);
    CURL *h = curl_easy_init();
    char curl_err[CURL_ERROR_SIZE] = "";
    l->failure = "sts-policy-fetch-error";
    if (!h) {
        snprintf(l->reason, sizeof l->reason, "cannot start an HTTPS client");
        curl_slist_free_all(resolve);
        return;
    }
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_RESOLVE, resolve);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "https");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L); /* RFC 8461 section 3.3: no redirects */
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
    if (l->ca_file) curl_easy_setopt(h, CURLOPT_CAINFO, l->ca_file);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, l->timeout);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "outrelay/" OUTRELAY_VERSION);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, curl_err);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, body_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, fetch_progress);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    CURLcode rc = curl_easy_perform(h);
    long status = 0;
    char *ctype = NULL;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(h, CURLINFO_CONTENT_TYPE, &ctype);
    if (b.too_big) {
        snprintf(l->reason, sizeof l->reason, "%s: the policy exceeds %lld bytes", url,
                 (long long)l->max_bytes);
    } else if (rc == CURLE_PEER_FAILED_VERIFICATION || rc == CURLE_SSL_CACERT_BADFILE ||
               rc == CURLE_SSL_ISSUER_ERROR) {
        l->failure = "sts-webpki-invalid";
        snprintf(l->reason, sizeof l->reason, "%s: certificate did not verify: %s", url,
                 curl_err[0] ? curl_err : curl_easy_strerror(rc));
    } else if (rc != CURLE_OK) {
        snprintf(l->reason, sizeof l->reason, "%s: %s", url,
                 curl_err[0] ? curl_err : curl_easy_strerror(rc));
    } else if (status != 200) {
        snprintf(l->reason, sizeof l->reason, "%s: HTTP status %ld", url, status);
    } else if (!ctype || strncasecmp(ctype, "text/plain", 10) != 0 ||
               (ctype[10] && ctype[10] != ';' && ctype[10] != ' ')) {
        l->failure = "sts-policy-invalid";
        snprintf(l->reason, sizeof l->reason, "%s: media type %s, not text/plain", url,
                 ctype ? ctype : "(none)");
    } else {
        char err[200];
        l->fetched = sts_parse_policy(b.data ? b.data : "", b.len, err, sizeof err);
        if (l->fetched) {
            l->failure = NULL;
        } else {
            l->failure = "sts-policy-invalid";
            snprintf(l->reason, sizeof l->reason, "%s: %s", url, err);
        }
    }
    curl_easy_cleanup(h);
    curl_slist_free_all(resolve);
    free(b.data);
}

static void copy_failed(const void *value, void *out)
{
    *(struct failed_fetch *)out = *(const struct failed_fetch *)value;
}

/* One lookup's answer once its policy could not be had (failure, reason: the fetch's):
 * RFC 8461 section 5.1, a failed refresh keeps the unexpired cached policy. */
static void finish_failed(struct sts_lookup *l, const char *failure, const char *reason)
{
    if (l->cached) {
        log_warn("mta-sts: %s: no new policy (%s); the cached policy id %s still applies",
                 l->domain, reason, l->cached->id);
        struct mta_sts_policy *c = l->cached;
        c->refs++;
        finish(l, c, NULL, NULL);
        return;
    }
    char text[400];
    snprintf(text, sizeof text, "MTA-STS policy of %s: %s", l->domain, reason);
    finish(l, NULL, failure, text);
}

/* The fetch of leader's domain ended (fetched: the new policy with one reference, or NULL with
 * the leader's failure and reason): every lookup that waited for it gets its answer. */
static void fetch_complete(struct sts_lookup *leader, struct mta_sts_policy *fetched)
{
    if (hashmap_get(fetching, leader->domain) == leader) hashmap_remove(fetching, leader->domain);
    if (fetched) {
        struct mta_sts_policy *p = fetched;
        snprintf(p->domain, sizeof p->domain, "%s", leader->domain);
        snprintf(p->id, sizeof p->id, "%s", leader->id);
        p->expires = clock_now() + p->max_age;
        log_info("mta-sts: %s policy id %s: mode %s, max_age %lld", leader->domain, p->id,
                 sts_mode_name(p->mode), (long long)p->max_age);
        if (p->max_age > 0) {
            disk_store(leader->state, p);
            p->refs++;
            ttl_cache_put(mem_cache, leader->domain, p, p->max_age);
        }
    } else {
        log_warn("mta-sts: %s: policy fetch failed: %s (not tried again for id %s within %ds)",
                 leader->domain, leader->reason, leader->id, STS_RETRY_AFTER);
        struct failed_fetch *f = xcalloc(1, sizeof *f);
        snprintf(f->id, sizeof f->id, "%s", leader->id);
        f->failure = leader->failure;
        snprintf(f->reason, sizeof f->reason, "%s", leader->reason);
        ttl_cache_put(failed_cache, leader->domain, f, STS_RETRY_AFTER);
    }
    struct sts_lookup *l = leader, *next;
    const char *failure = leader->failure;
    char reason[300];
    snprintf(reason, sizeof reason, "%s", leader->reason);
    struct sts_lookup *waiters = leader->waiters;
    for (int first = 1; l; l = next, first = 0) {
        next = first ? waiters : l->next_waiter;
        if (fetched) {
            fetched->refs++;
            finish(l, fetched, NULL, NULL);
        } else {
            finish_failed(l, failure, reason);
        }
    }
    sts_policy_release(fetched);
}

static void fetch_done(void *arg)
{
    struct sts_lookup *l = arg;
    fetch_complete(l, l->fetched);
}

/* --- the lookup on the loop ----------------------------------------------------------------------
 */

static void start_fetch(struct sts_lookup *l)
{
    if (!fetch_pool) fetch_pool = workpool_new(sts_base, 2);
    if (!fetch_pool) {
        snprintf(l->reason, sizeof l->reason, "cannot start the HTTPS client's threads");
        l->failure = "sts-policy-fetch-error";
        fetch_complete(l, NULL);
        return;
    }
    workpool_submit_to(fetch_pool, fetch_work, fetch_done, l);
}

static void host_answer(void *arg, const struct dns_answer *a)
{
    struct sts_lookup *l = arg;
    l->dnsq = NULL;
    for (size_t i = 0; a->status == DNS_OK && i < a->n && l->n_resolve < 2; i++) {
        char ip[64], entry[sizeof l->resolve[0]];
        util_format_addr(&a->addrs[i], 0, ip, sizeof ip);
        /* built apart: GCC's -Wrestrict (at -O2) takes two fields of l for one object */
        snprintf(entry, sizeof entry, "mta-sts.%s:%d:%s", l->domain, l->port, ip);
        memcpy(l->resolve[l->n_resolve++], entry, sizeof entry);
    }
    if (l->n_resolve == 0 && !l->aaaa_done) {
        char name[300];
        snprintf(name, sizeof name, "mta-sts.%s", l->domain);
        l->aaaa_done = 1;
        l->dnsq = dns_query(name, DNS_TYPE_AAAA, host_answer, l);
        return;
    }
    if (l->n_resolve == 0) {
        snprintf(l->reason, sizeof l->reason, "no address for mta-sts.%s", l->domain);
        l->failure = "sts-policy-fetch-error";
        fetch_complete(l, NULL); /* as a failed fetch: the cached policy, or the failure */
        return;
    }
    start_fetch(l);
}

static void txt_answer(void *arg, const struct dns_answer *a)
{
    struct sts_lookup *l = arg;
    l->dnsq = NULL;
    if (a->status != DNS_OK || sts_parse_txt(a->txt, a->n, l->id) < 0) {
        /* no (usable) record: an unexpired cached policy still applies (section 5.1) */
        struct mta_sts_policy *c = l->cached;
        if (c) c->refs++;
        finish(l, c, NULL, NULL);
        return;
    }
    if (l->cached && !strcmp(l->cached->id, l->id)) {
        struct mta_sts_policy *c = l->cached;
        c->refs++;
        finish(l, c, NULL, NULL);
        return;
    }
    /* a new id, or nothing cached: fetch, unless that failed lately for this id, or another
     * connection is fetching this domain's policy right now */
    struct failed_fetch f;
    if (ttl_cache_get(failed_cache, l->domain, copy_failed, &f) > 0 && !strcmp(f.id, l->id)) {
        finish_failed(l, f.failure, f.reason);
        return;
    }
    struct sts_lookup *leader = hashmap_get(fetching, l->domain);
    if (leader) {
        l->waiting = 1;
        l->next_waiter = leader->waiters;
        leader->waiters = l;
        return;
    }
    l->leader = 1;
    hashmap_put(fetching, l->domain, l);
    char name[300];
    snprintf(name, sizeof name, "mta-sts.%s", l->domain);
    l->dnsq = dns_query(name, DNS_TYPE_A, host_answer, l);
}

struct sts_lookup *sts_lookup(const struct config *cfg, const char *domain, sts_cb cb, void *arg)
{
    if (!cfg->mta_sts_enabled || !domain[0] || strlen(domain) > 200 || domain[0] == '.' ||
        strspn(domain, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-") !=
            strlen(domain))
        return NULL; /* not a host name (an address literal, say): no policy, no file name */
    if (!curl_ready) {
        /* cleaned up at exit, after the worker pool has stopped (no fetch can be running) */
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) return NULL;
        atexit(curl_global_cleanup);
        curl_ready = 1;
    }
    if (!mem_cache) mem_cache = ttl_cache_new(10000, release_value, NULL);
    if (!failed_cache) failed_cache = ttl_cache_new(10000, free, NULL);
    if (!fetching) fetching = hashmap_new();
    struct sts_lookup *l = xcalloc(1, sizeof *l);
    snprintf(l->domain, sizeof l->domain, "%s", domain);
    for (char *s = l->domain; *s; s++)
        if (*s >= 'A' && *s <= 'Z') *s = (char)(*s - 'A' + 'a');
    l->cb = cb;
    l->arg = arg;
    l->ca_file = cfg->mta_sts_ca_file ? xstrdup(cfg->mta_sts_ca_file) : NULL;
    l->state = xstrdup(cfg->state);
    l->timeout = (long)cfg->mta_sts_fetch_timeout;
    l->max_bytes = cfg->mta_sts_max_policy_bytes;
    l->port = cfg->mta_sts_port;
    l->cached = cache_get(l->state, l->domain);
    char name[300];
    snprintf(name, sizeof name, "_mta-sts.%s", l->domain);
    l->dnsq = dns_query(name, DNS_TYPE_TXT, txt_answer, l);
    return l;
}

void sts_cancel(struct sts_lookup *l)
{
    if (!l) return;
    if (l->leader || l->waiting) {
        l->cancelled = 1; /* the fetch goes on for the others; freed when it ends */
        return;
    }
    if (l->dnsq) dns_cancel(l->dnsq);
    sts_policy_release(l->cached);
    free(l->ca_file);
    free(l->state);
    free(l);
}

void sts_start(struct event_base *base)
{
    sts_base = base;
}

static void collect_leader(void *arg, const char *key, void *value)
{
    (void)key;
    struct sts_lookup ***next = arg;
    *(*next)++ = value;
}

void sts_shutdown(void)
{
    /* leaders still resolving the policy host end now; fetches running are aborted and end in
     * workpool_free() */
    size_t n = fetching ? hashmap_count(fetching) : 0;
    struct sts_lookup **leaders = xcalloc(n + 1, sizeof *leaders), **next = leaders;
    if (fetching) hashmap_foreach(fetching, collect_leader, &next);
    for (size_t i = 0; i < n; i++) {
        struct sts_lookup *l = leaders[i];
        if (!l->dnsq) continue;
        dns_cancel(l->dnsq);
        l->dnsq = NULL;
        l->failure = "sts-policy-fetch-error";
        snprintf(l->reason, sizeof l->reason, "shutting down");
        fetch_complete(l, NULL);
    }
    free(leaders);
    stopping = 1;
    workpool_free(fetch_pool);
    fetch_pool = NULL;
    stopping = 0;
    hashmap_free(fetching);
    fetching = NULL;
    ttl_cache_free(failed_cache);
    failed_cache = NULL;
    ttl_cache_free(mem_cache);
    mem_cache = NULL;
}
