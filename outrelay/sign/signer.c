/* signer.c - see signer.h. Jobs run on the workpool; a key store is read-only there. A reload
 * swaps the current store atomically; replaced stores stay alive until shutdown, because
 * queued messages still point at their keys (they are few and small). */
#include "sign/signer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "common/workpool.h"

static const struct dkim_keystore *signer_keys; /* atomic: workers read, the loop swaps */
static struct dkim_keystore **signer_retired;
static size_t signer_n_retired;

struct sign_job {
    const char *data;
    size_t len;
    char *from_domain;
    int verify_upstream;
    struct sign_result *result;
    void (*done)(void *, struct sign_result *);
    void *arg;
};

void signer_init(const struct dkim_keystore *keys)
{
    __atomic_store_n(&signer_keys, keys, __ATOMIC_RELEASE);
}

void signer_replace_keys(struct dkim_keystore *keys, struct dkim_keystore *old)
{
    __atomic_store_n(&signer_keys, keys, __ATOMIC_RELEASE);
    signer_retired = xrealloc(signer_retired, (signer_n_retired + 1) * sizeof *signer_retired);
    signer_retired[signer_n_retired++] = old;
}

void signer_shutdown(void)
{
    __atomic_store_n(&signer_keys, NULL, __ATOMIC_RELEASE);
    for (size_t i = 0; i < signer_n_retired; i++)
        dkim_keystore_free(signer_retired[i]);
    free(signer_retired);
    signer_retired = NULL;
    signer_n_retired = 0;
}

static void sign_work(void *arg)
{
    struct sign_job *j = arg;
    struct sign_result *r = j->result;
    if (j->verify_upstream)
        r->n_upstream = dkim_verify_message(j->data, j->len, r->upstream, SIGNER_MAX_UPSTREAM);
    const struct dkim_keystore *keys = __atomic_load_n(&signer_keys, __ATOMIC_ACQUIRE);
    if (!keys || !j->from_domain) return;
    r->n_sigs = dkim_keystore_for(keys, j->from_domain, r->keys, SIGNER_MAX_SIGS);
    if (r->n_sigs == 0) return;
    if (dkim_sign_message(r->keys, r->n_sigs, j->data, j->len, &r->headers, r->sigs, r->error,
                          sizeof r->error) < 0) {
        strbuf_reset(&r->headers);
        r->n_sigs = 0;
    }
}

static void sign_done(void *arg)
{
    struct sign_job *j = arg;
    j->done(j->arg, j->result);
    free(j->from_domain);
    free(j);
}

void signer_submit(const char *data, size_t len, const char *from_domain, int verify_upstream,
                   void (*done)(void *arg, struct sign_result *result), void *arg)
{
    struct sign_job *j = xcalloc(1, sizeof *j);
    j->data = data;
    j->len = len;
    j->from_domain = from_domain ? xstrdup(from_domain) : NULL;
    j->verify_upstream = verify_upstream;
    j->result = xcalloc(1, sizeof *j->result);
    j->done = done;
    j->arg = arg;
    workpool_submit(sign_work, sign_done, j);
}

void signer_result_free(struct sign_result *r)
{
    if (!r) return;
    strbuf_free(&r->headers);
    free(r);
}

void signer_describe(const struct dkim_signature *sigs, size_t n, struct strbuf *out)
{
    for (size_t i = 0; i < n; i++)
        strbuf_printf(out, "%sd=%s s=%s a=%s %s%s%s", i ? "; " : "", sigs[i].domain,
                      sigs[i].selector, sigs[i].algorithm,
                      sigs[i].result > 0    ? "pass"
                      : sigs[i].result == 0 ? "fail"
                                            : "temperror",
                      sigs[i].error[0] && sigs[i].result <= 0 ? " " : "",
                      sigs[i].result <= 0 ? sigs[i].error : "");
}
