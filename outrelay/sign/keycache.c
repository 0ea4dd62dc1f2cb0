/* keycache.c - see keycache.h. The cache is a small array under a read-write lock: lookups
 * (every signature, on the workers) share it; registration happens at load and shutdown. */
#include "sign/keycache.h"

#include <dlfcn.h>
#include <openssl/bio.h>
#include <openssl/pem.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

struct cached_key {
    const char *pem;
    size_t len;
    EVP_PKEY *pkey;
};

static pthread_rwlock_t cache_lock = PTHREAD_RWLOCK_INITIALIZER;
static struct cached_key *cache;
static size_t cache_n;

void keycache_register(const char *pem, EVP_PKEY *pkey)
{
    if (!pem || !pkey || EVP_PKEY_up_ref(pkey) != 1) return;
    pthread_rwlock_wrlock(&cache_lock);
    cache = xrealloc(cache, (cache_n + 1) * sizeof *cache);
    cache[cache_n++] = (struct cached_key){pem, strlen(pem), pkey};
    pthread_rwlock_unlock(&cache_lock);
}

void keycache_unregister(const char *pem)
{
    pthread_rwlock_wrlock(&cache_lock);
    for (size_t i = 0; i < cache_n; i++) {
        if (cache[i].pem != pem) continue;
        EVP_PKEY_free(cache[i].pkey);
        cache[i] = cache[--cache_n];
        break;
    }
    if (cache_n == 0) {
        free(cache);
        cache = NULL;
    }
    pthread_rwlock_unlock(&cache_lock);
}

typedef EVP_PKEY *(*pem_read_fn)(BIO *, EVP_PKEY **, pem_password_cb *, void *);

/* Replaces OpenSSL's entry point for this process (the executable's definition wins over the
 * shared library's for every caller that goes through the dynamic linker, libopendkim
 * included). Only a memory BIO holding exactly a registered PEM is answered from the cache. */
EVP_PKEY *PEM_read_bio_PrivateKey(BIO *bp, EVP_PKEY **x, pem_password_cb *cb, void *u)
{
    char *data = NULL;
    long len = bp && BIO_method_type(bp) == BIO_TYPE_MEM ? BIO_get_mem_data(bp, &data) : 0;
    if (!x && len > 0) {
        EVP_PKEY *found = NULL;
        pthread_rwlock_rdlock(&cache_lock);
        for (size_t i = 0; i < cache_n && !found; i++)
            if (cache[i].len == (size_t)len && memcmp(cache[i].pem, data, (size_t)len) == 0 &&
                EVP_PKEY_up_ref(cache[i].pkey) == 1)
                found = cache[i].pkey;
        pthread_rwlock_unlock(&cache_lock);
        if (found) return found;
    }
    static pem_read_fn real;
    if (!real) real = (pem_read_fn)dlsym(RTLD_NEXT, "PEM_read_bio_PrivateKey");
    return real ? real(bp, x, cb, u) : NULL;
}
