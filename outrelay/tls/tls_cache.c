/* tls_cache.c - the shared client contexts: one SSL_CTX per distinct (CA file, system store,
 * client certificate, key) and version of those files on disk, refcounted so that a reload
 * with unchanged files keeps the same context and one whose files changed builds another while
 * old connections finish with theirs. Builds contexts with tls_client_context(); never decides
 * how a connection uses TLS. Called by smtpc/tls_policy.c; loop thread only. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/util.h"
#include "tls/tls.h"

/* What a file looked like when a context was built from it; all zero for "no file". */
struct file_version {
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
};

struct cache_entry {
    struct cache_entry *next;
    char *ca_file, *cert_file, *key_file; /* owned copies; NULL = none */
    int system_ca;
    struct file_version ca_version, cert_version, key_version;
    SSL_CTX *ctx;
    size_t refs;
};

/* Newest first: for the same files, the first entry is the one built last. */
static struct cache_entry *tls_cache;

static int same_path(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static int same_files(const struct cache_entry *e, const struct tls_client_files *f)
{
    return e->system_ca == f->system_ca && same_path(e->ca_file, f->ca_file) &&
           same_path(e->cert_file, f->cert_file) && same_path(e->key_file, f->key_file);
}

static void file_version_of(const char *path, struct file_version *v)
{
    struct stat st;
    memset(v, 0, sizeof *v);
    if (!path || stat(path, &st) < 0) return; /* loading it will say what is wrong */
    v->dev = st.st_dev;
    v->ino = st.st_ino;
    v->size = st.st_size;
    v->mtime = st.st_mtim;
}

static int same_version(const struct file_version *a, const struct file_version *b)
{
    return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
           a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec;
}

static char *copy_or_null(const char *s)
{
    return s ? xstrdup(s) : NULL;
}

SSL_CTX *tls_client_context_acquire(const struct tls_client_files *f, int reread, char *err,
                                    size_t errlen)
{
    struct file_version ca, cert, key;
    file_version_of(f->ca_file, &ca);
    file_version_of(f->cert_file, &cert);
    file_version_of(f->key_file, &key);
    for (struct cache_entry *e = tls_cache; e; e = e->next) {
        if (!same_files(e, f)) continue;
        if (!reread ||
            (same_version(&e->ca_version, &ca) && same_version(&e->cert_version, &cert) &&
             same_version(&e->key_version, &key))) {
            e->refs++;
            return e->ctx;
        }
        break; /* the newest context for these files is out of date: build another */
    }
    SSL_CTX *ctx =
        tls_client_context(f->ca_file, f->system_ca, f->cert_file, f->key_file, err, errlen);
    if (!ctx) return NULL;
    struct cache_entry *e = xcalloc(1, sizeof *e);
    e->ca_file = copy_or_null(f->ca_file);
    e->cert_file = copy_or_null(f->cert_file);
    e->key_file = copy_or_null(f->key_file);
    e->system_ca = f->system_ca;
    e->ca_version = ca;
    e->cert_version = cert;
    e->key_version = key;
    e->ctx = ctx;
    e->refs = 1;
    e->next = tls_cache;
    tls_cache = e;
    return ctx;
}

void tls_client_context_release(SSL_CTX *ctx)
{
    if (!ctx) return;
    for (struct cache_entry **p = &tls_cache; *p; p = &(*p)->next) {
        struct cache_entry *e = *p;
        if (e->ctx != ctx) continue;
        if (--e->refs > 0) return;
        *p = e->next;
        SSL_CTX_free(e->ctx);
        free(e->ca_file);
        free(e->cert_file);
        free(e->key_file);
        free(e);
        return;
    }
    abort(); /* a context the cache never handed out */
}

size_t tls_client_context_count(void)
{
    size_t n = 0;
    for (const struct cache_entry *e = tls_cache; e; e = e->next)
        n++;
    return n;
}
