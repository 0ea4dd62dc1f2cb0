/* dmarc_eval.c - test tool: runs dmarc_predict() against a given DNS server and prints the
 * prediction as "key=value" lines for tests/integration/dmarc_matrix.py.
 * Usage: dmarc_eval DNS_SERVER FROM_DOMAIN MAILFROM_DOMAIN SPF_RESULT
 *                   [d=DOMAIN,s=SELECTOR,a=ALG,p=PUBKEY_B64 ...]
 * DMARC_EVAL_THREADS=N also repeats the prediction from N threads and prints whether all agree.
 * Exit status 0 unless the arguments or setup are wrong. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check/dmarc.h"
#include "mail/orgdomain.h"
#include "common/log.h"
#include "dns/dns_sync.h"

#define MAX_SIGS 8

static const char *spf_names[] = {
    [SPF_NONE] = "none",           [SPF_NEUTRAL] = "neutral",   [SPF_PASS] = "pass",
    [SPF_FAIL] = "fail",           [SPF_SOFTFAIL] = "softfail", [SPF_TEMPERROR] = "temperror",
    [SPF_PERMERROR] = "permerror",
};

static int parse_spf(const char *text, enum spf_result *out)
{
    for (size_t i = 0; i < sizeof spf_names / sizeof spf_names[0]; i++) {
        if (strcmp(text, spf_names[i]) == 0) {
            *out = (enum spf_result)i;
            return 0;
        }
    }
    return -1;
}

/* "d=example.org,s=sel,a=rsa-sha256,p=MIIB..." -> sig (pointing into the modified text). */
static int parse_sig(char *text, struct dmarc_dkim_input *sig)
{
    memset(sig, 0, sizeof *sig);
    for (char *save = NULL, *tok = strtok_r(text, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');
        if (!eq) return -1;
        *eq = '\0';
        const char *val = eq + 1;
        if (strcmp(tok, "d") == 0)
            sig->domain = val;
        else if (strcmp(tok, "s") == 0)
            sig->selector = val;
        else if (strcmp(tok, "a") == 0)
            sig->algorithm = val;
        else if (strcmp(tok, "p") == 0)
            sig->public_b64 = val;
        else if (strcmp(tok, "u") == 0) /* u=1: a kept upstream signature, verified on arrival */
            sig->upstream = strcmp(val, "1") == 0;
        else
            return -1;
    }
    if (!sig->domain || !sig->selector) return -1;
    if (!sig->algorithm) sig->algorithm = "rsa-sha256";
    if (!sig->public_b64) sig->public_b64 = "";
    return 0;
}

struct thread_job {
    char **argv;
    enum spf_result spf;
    const struct dmarc_dkim_input *sigs;
    size_t n_sigs;
    const struct dmarc_prediction *first;
    int consistent;
};

/* Repeats the prediction (exercising the shared cache) and compares with the first result. */
static void *thread_main(void *arg)
{
    struct thread_job *job = arg;
    struct dmarc_prediction pr;
    job->consistent = 1;
    for (int i = 0; i < 20; i++) {
        dmarc_predict(job->argv[2], job->argv[3], job->spf, job->sigs, job->n_sigs, &pr);
        if (pr.verdict != job->first->verdict || strcmp(pr.reason, job->first->reason) != 0)
            job->consistent = 0;
    }
    return NULL;
}

static int run_threads(int n, char **argv, enum spf_result spf, const struct dmarc_dkim_input *sigs,
                       size_t n_sigs, const struct dmarc_prediction *first)
{
    pthread_t tids[16];
    struct thread_job jobs[16];
    int consistent = 1;
    if (n > 16) n = 16;
    for (int i = 0; i < n; i++) {
        jobs[i] = (struct thread_job){argv, spf, sigs, n_sigs, first, 0};
        pthread_create(&tids[i], NULL, thread_main, &jobs[i]);
    }
    for (int i = 0; i < n; i++) {
        pthread_join(tids[i], NULL);
        consistent &= jobs[i].consistent;
    }
    return consistent;
}

static char show(char c)
{
    return c ? c : '-';
}

int main(int argc, char **argv)
{
    enum spf_result spf;
    if (argc < 5 || argc - 5 > MAX_SIGS || parse_spf(argv[4], &spf) < 0) {
        fprintf(stderr, "usage: dmarc_eval DNS_SERVER FROM_DOMAIN MAILFROM_DOMAIN SPF_RESULT "
                        "[d=DOMAIN,s=SELECTOR,a=ALG,p=PUBKEY_B64 ...]\n"
                        "SPF_RESULT: none neutral pass fail softfail temperror permerror\n");
        return 2;
    }
    struct dmarc_dkim_input sigs[MAX_SIGS];
    size_t n_sigs = 0;
    for (int i = 5; i < argc; i++) {
        if (parse_sig(argv[i], &sigs[n_sigs++]) < 0) {
            fprintf(stderr, "dmarc_eval: bad signature argument %d\n", i);
            return 2;
        }
    }

    /* Debug lines (libopendmarc's own view, overrides) go to stderr; results to stdout. */
    log_init("dmarc_eval", 0, LOG_LEVEL_DEBUG);
    char err[256] = "";
    char *servers[] = {argv[1]};
    if (dns_sync_init(servers, 1, NULL, err, sizeof err) < 0 ||
        orgdomain_init(NULL, err, sizeof err) < 0 || dmarc_init(err, sizeof err) < 0) {
        fprintf(stderr, "dmarc_eval: %s\n", err);
        dns_sync_shutdown();
        orgdomain_shutdown();
        return 1;
    }

    struct dmarc_prediction pr;
    dmarc_predict(argv[2], argv[3], spf, sigs, n_sigs, &pr);

    printf("verdict=%s\n", dmarc_verdict_name(pr.verdict));
    printf("from_domain=%s\n", pr.from_domain);
    printf("record_domain=%s\n", pr.record_domain);
    printf("p=%c\nsp=%c\npct=%d\nadkim=%c\naspf=%c\n", show(pr.p), show(pr.sp), pr.pct,
           show(pr.adkim), show(pr.aspf));
    printf("applied_subdomain_policy=%d\n", pr.applied_subdomain_policy);
    printf("policy_to_apply=%c\n", show(pr.policy_to_apply));
    printf("spf=%s\nspf_domain=%s\nspf_aligned=%d\n", spf_names[pr.spf], pr.spf_domain,
           pr.spf_aligned);
    printf("dkim_aligned_pass=%d\n", pr.dkim_aligned_pass);
    printf("n_dkim=%zu\n", pr.n_dkim);
    for (size_t i = 0; i < pr.n_dkim; i++) {
        const struct dmarc_dkim_outcome *o = &pr.dkim[i];
        printf("dkim%zu.domain=%s\ndkim%zu.selector=%s\ndkim%zu.algorithm=%s\n", i, o->domain, i,
               o->selector, i, o->algorithm);
        printf("dkim%zu.key_matches=%d\ndkim%zu.aligned=%d\ndkim%zu.detail=%s\n", i, o->key_matches,
               i, o->aligned, i, o->detail);
    }
    printf("reason=%s\n", pr.reason);
    const char *threads = getenv("DMARC_EVAL_THREADS");
    if (threads && atoi(threads) > 0)
        printf("threads_consistent=%d\n", run_threads(atoi(threads), argv, spf, sigs, n_sigs, &pr));

    dmarc_shutdown();
    orgdomain_shutdown();
    dns_sync_shutdown();
    return 0;
}
