/* dkim.c - signing with libopendkim (one signing DKIM_LIB per process, configured by dkim_setup
 * before any worker starts) and stripping DKIM-Signature fields from a header section. Signing
 * does no I/O but burns CPU, so it runs on worker threads, never on the event loop. Keys:
 * keystore.c; verification: mail/dkim_verify.c. */
#include "sign/dkim.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>

#include <opendkim/dkim.h>

#include "common/log.h"
#include "common/util.h"
#include "mail/header.h"
#include "mail/header_limits.h"

/* Feed size per dkim_chunk call when several handles share one pass over the message. */
#define FEED_PIECE (64 * 1024)
#define MAX_SIGNING_KEYS 16

static DKIM_LIB *dkim_lib;
static const char **dkim_sign_list;     /* NULL-terminated copies handed to libopendkim */
static const char **dkim_oversign_list; /* (it copies them too; kept until shutdown) */

/* ---------------------------------------------------------------------------------------- */
/* libopendkim 2.11.0 signing-handle leaks
 *
 * dkim_free() releases the key material of a signing handle only when the signature is RSA:
 * an Ed25519 signature leaves its EVP_PKEY and its 64-byte output buffer behind (~1.3 KB per
 * message), and a handle freed after dkim_privkey_load() but before dkim_eom() attached the
 * key (any error on the way) leaves the whole key. We record the two blocks dkim_privkey_load
 * allocates through our allocator (the library's struct dkim_crypto and its output buffer),
 * check that they look exactly like 2.11.0's layout (mirrored below), and free what the
 * library forgot. Anything unexpected: we touch nothing and warn once (a leak, never a crash).
 */

struct odkim_crypto_2_11 { /* libopendkim/dkim-types.h, 2.11.0, OpenSSL build */
    unsigned char pad;
    int keysize;
    size_t inlen;
    size_t outlen;
    EVP_PKEY *pkey;
    void *rsa; /* RSA * from EVP_PKEY_get1_RSA */
    BIO *keydata;
    unsigned char *in;
    unsigned char *out;
};
_Static_assert(sizeof(struct odkim_crypto_2_11) == 64, "mirror of struct dkim_crypto");

/* The per-handle allocator closure (handles made with dkim_sign(..., memclosure, ...)):
 * remembers the blocks allocated while recording (during dkim_privkey_load) and which of them
 * the library freed since. */
#define HANDLE_MEM_BLOCKS 8
struct handle_mem {
    int recording;
    int n;
    void *block[HANDLE_MEM_BLOCKS];
    size_t size[HANDLE_MEM_BLOCKS];
    int freed[HANDLE_MEM_BLOCKS];
};

static int dkim_fix_leaks; /* the library is the version the workaround knows */

static void *lib_malloc(void *closure, size_t n)
{
    void *p = malloc(n);
    struct handle_mem *m = closure;
    if (m && m->recording && p && m->n < HANDLE_MEM_BLOCKS) {
        m->block[m->n] = p;
        m->size[m->n] = n;
        m->freed[m->n] = 0;
        m->n++;
    }
    return p;
}

static void lib_free(void *closure, void *p)
{
    struct handle_mem *m = closure;
    for (int i = 0; m && p && i < m->n; i++)
        if (m->block[i] == p && !m->freed[i]) {
            m->freed[i] = 1;
            break;
        }
    free(p);
}

/* The first block dkim_privkey_load allocates is its struct dkim_crypto. Returns the index of
 * its output buffer among the recorded blocks, -1 when the load failed (pkey, BIO and buffer
 * all empty), -2 when the blocks do not look like 2.11.0's. */
static int handle_mem_layout(const struct handle_mem *m)
{
    if (!dkim_fix_leaks || m->n < 1 || m->freed[0] ||
        m->size[0] != sizeof(struct odkim_crypto_2_11))
        return -2;
    const struct odkim_crypto_2_11 *c = m->block[0];
    if (!c->pkey && !c->keydata && !c->out && !c->rsa) return -1;
    for (int i = 1; i < m->n; i++)
        if (c->pkey && c->out == m->block[i] && !m->freed[i] && c->outlen == m->size[i]) return i;
    return -2;
}

/* Frees h, then whatever libopendkim leaves behind of its key. */
static void free_signing_handle(DKIM *h, struct handle_mem *m, dkim_alg_t alg)
{
    int out = handle_mem_layout(m);
    struct odkim_crypto_2_11 snap = {0};
    if (out != -2) {
        snap = *(const struct odkim_crypto_2_11 *)m->block[0];
    } else if (dkim_fix_leaks && m->n > 0) {
        static atomic_int warned;
        if (atomic_fetch_add(&warned, 1) == 0)
            log_warn("dkim: unexpected libopendkim key layout; not freeing its leftovers");
    }
    dkim_free(h);
    if (out == -2) return;
    if (m->freed[0]) {
        /* Attached to the signature: dkim_free released everything for RSA, only the
         * struct for Ed25519. dkim_eom already freed and cleared the BIO. */
        if (alg == DKIM_SIGN_ED25519SHA256) {
            EVP_PKEY_free(snap.pkey);
            BIO_free(snap.keydata);
            if (out > 0 && !m->freed[out]) free(m->block[out]);
        }
        return;
    }
    /* Never attached: the library forgot the whole key. */
    EVP_PKEY_free(snap.pkey);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    RSA_free(snap.rsa);
#pragma GCC diagnostic pop
    BIO_free(snap.keydata);
    if (out > 0 && !m->freed[out]) free(m->block[out]);
    free(m->block[0]);
}

/* ---------------------------------------------------------------------------------------- */
/* Library set-up */

static const char **copy_header_list(char **names, size_t n)
{
    const char **list = xcalloc(n + 1, sizeof *list);
    for (size_t i = 0; i < n; i++)
        list[i] = xstrdup(names[i]);
    return list;
}

static void free_header_list(const char **list)
{
    if (!list) return;
    for (size_t i = 0; list[i]; i++)
        free((char *)list[i]);
    free(list);
}

void dkim_shutdown(void)
{
    dkim_verify_shutdown();
    if (dkim_lib) dkim_close(dkim_lib);
    dkim_lib = NULL;
    free_header_list(dkim_sign_list);
    free_header_list(dkim_oversign_list);
    dkim_sign_list = dkim_oversign_list = NULL;
}

int dkim_setup(const struct config *cfg, char *err, size_t errlen)
{
    if (dkim_lib) return 0;
    if (dkim_verify_setup(err, errlen) < 0) return -1;
    dkim_lib = dkim_init(lib_malloc, lib_free);
    if (!dkim_lib) {
        snprintf(err, errlen, "libopendkim initialisation failed");
        return -1;
    }
    if (!dkim_libfeature(dkim_lib, DKIM_FEATURE_ED25519) ||
        !dkim_libfeature(dkim_lib, DKIM_FEATURE_SHA256) ||
        !dkim_libfeature(dkim_lib, DKIM_FEATURE_OVERSIGN)) {
        snprintf(err, errlen, "libopendkim lacks Ed25519, SHA-256 or oversigning support");
        dkim_shutdown();
        return -1;
    }
    dkim_fix_leaks = dkim_libversion() == 0x020B0000;
    dkim_sign_list = copy_header_list(cfg->dkim_headers, cfg->n_dkim_headers);
    dkim_oversign_list = copy_header_list(cfg->dkim_oversign, cfg->n_dkim_oversign);
    /* Never sign every header (the library's default without SIGNHDRS); the array itself is
     * the option value. FIXCRLF: our data is CRLF already, this only guards against an
     * LF-only message silently signing an empty body. */
    u_int flags = DKIM_LIBFLAGS_FIXCRLF;
    if (dkim_options(dkim_lib, DKIM_OP_SETOPT, DKIM_OPTS_SIGNHDRS, dkim_sign_list,
                     sizeof(char **)) != DKIM_STAT_OK ||
        dkim_options(dkim_lib, DKIM_OP_SETOPT, DKIM_OPTS_OVERSIGNHDRS, dkim_oversign_list,
                     sizeof(char **)) != DKIM_STAT_OK ||
        dkim_options(dkim_lib, DKIM_OP_SETOPT, DKIM_OPTS_FLAGS, &flags, sizeof flags) !=
            DKIM_STAT_OK) {
        snprintf(err, errlen, "cannot configure libopendkim (header lists, flags)");
        dkim_shutdown();
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Signing */

static const char *dkim_error_text(DKIM *d, DKIM_STAT st)
{
    const char *e = d ? dkim_geterror(d) : NULL;
    return e && *e ? e : dkim_getresultstr(st);
}

int dkim_sign_message(const struct dkim_key *const *keys, size_t n_keys, const char *data,
                      size_t len, struct strbuf *headers_out, struct dkim_signature *sigs,
                      char *err, size_t errlen)
{
    DKIM *handles[MAX_SIGNING_KEYS] = {0};
    struct handle_mem mem[MAX_SIGNING_KEYS];
    dkim_alg_t algs[MAX_SIGNING_KEYS];
    struct strbuf out = STRBUF_INIT;
    DKIM_STAT st = DKIM_STAT_OK;
    int rc = -1;

    if (!dkim_lib) {
        snprintf(err, errlen, "DKIM not initialised");
        return -1;
    }
    if (n_keys > MAX_SIGNING_KEYS) {
        snprintf(err, errlen, "too many DKIM keys for one message (%zu, at most %d)", n_keys,
                 MAX_SIGNING_KEYS);
        return -1;
    }
    /* libopendkim signs these without complaint, but nobody can verify the result (and a
     * message with several From: fields is invalid anyway; ingress refuses both). */
    enum mail_header_fault fault = mail_header_check(data, len);
    if (fault != MAIL_HEADER_OK) {
        snprintf(err, errlen, "not signed: %s", mail_header_fault_text(fault));
        return -1;
    }
    for (size_t i = 0; i < n_keys; i++) {
        const struct dkim_key *k = keys[i];
        dkim_alg_t alg =
            k->algorithm == DKIM_ALG_ED25519_SHA256 ? DKIM_SIGN_ED25519SHA256 : DKIM_SIGN_RSASHA256;
        algs[i] = alg;
        memset(&mem[i], 0, sizeof mem[i]);
        handles[i] =
            dkim_sign(dkim_lib, (const unsigned char *)"outrelay", &mem[i], (dkim_sigkey_t)k->pem,
                      (const unsigned char *)k->selector, (const unsigned char *)k->domain,
                      DKIM_CANON_RELAXED, DKIM_CANON_RELAXED, alg, -1, &st);
        if (!handles[i] || st != DKIM_STAT_OK) {
            snprintf(err, errlen, "%s: dkim_sign: %s", k->path ? k->path : k->selector,
                     dkim_getresultstr(st));
            goto out;
        }
        mem[i].recording = 1;
        st = dkim_privkey_load(handles[i]);
        mem[i].recording = 0;
        if (st != DKIM_STAT_OK) {
            snprintf(err, errlen, "%s: unusable private key: %s", k->path ? k->path : k->selector,
                     dkim_error_text(handles[i], st));
            goto out;
        }
        if (sigs) {
            memset(&sigs[i], 0, sizeof sigs[i]);
            snprintf(sigs[i].domain, sizeof sigs[i].domain, "%s", k->domain);
            snprintf(sigs[i].selector, sizeof sigs[i].selector, "%s", k->selector);
            snprintf(sigs[i].algorithm, sizeof sigs[i].algorithm, "%s",
                     dkim_verify_algorithm_name(alg));
        }
    }

    /* One pass over the message feeds every handle. */
    for (size_t off = 0; off < len; off += FEED_PIECE) {
        size_t piece = len - off < FEED_PIECE ? len - off : FEED_PIECE;
        for (size_t i = 0; i < n_keys; i++) {
            st = dkim_chunk(handles[i], (u_char *)data + off, piece);
            if (st != DKIM_STAT_OK) {
                snprintf(err, errlen, "signing with %s: %s", keys[i]->selector,
                         dkim_error_text(handles[i], st));
                goto out;
            }
        }
    }
    for (size_t i = 0; i < n_keys; i++) {
        st = dkim_chunk(handles[i], NULL, 0);
        if (st == DKIM_STAT_OK) st = dkim_eom(handles[i], NULL);
        if (st != DKIM_STAT_OK) {
            snprintf(err, errlen, "signing with %s: %s", keys[i]->selector,
                     dkim_error_text(handles[i], st));
            goto out;
        }
        u_char *value = NULL;
        size_t vlen = 0;
        st = dkim_getsighdr_d(handles[i], strlen(DKIM_SIGNHEADER) + 2, &value, &vlen);
        if (st != DKIM_STAT_OK || !value) {
            snprintf(err, errlen, "signing with %s: cannot get the signature: %s",
                     keys[i]->selector, dkim_error_text(handles[i], st));
            goto out;
        }
        /* value belongs to the handle: copy before dkim_free. */
        strbuf_puts(&out, DKIM_SIGNHEADER ": ");
        strbuf_append(&out, value, vlen);
        strbuf_puts(&out, "\r\n");
        if (sigs) sigs[i].result = 1;
    }
    strbuf_append(headers_out, out.data, out.len);
    rc = 0;
out:
    for (size_t i = 0; i < n_keys; i++)
        if (handles[i]) free_signing_handle(handles[i], &mem[i], algs[i]);
    strbuf_free(&out);
    return rc;
}

/* ---------------------------------------------------------------------------------------- */
/* Stripping */

size_t dkim_strip_signatures(char *data, size_t len)
{
    struct mail_header_iter it;
    const char *name, *value;
    size_t name_len, value_len;
    mail_header_begin(&it, data, len);
    while (mail_header_next(&it, &name, &name_len, &value, &value_len)) {
        if (!mail_header_name_is(name, name_len, DKIM_SIGNHEADER)) continue;
        /* The field runs from its name to where the next one starts. */
        char *field = data + (name - data);
        size_t field_len = (size_t)(it.p - name);
        memmove(field, it.p, (size_t)(it.end - it.p));
        it.p = field;
        it.end -= field_len;
    }
    return (size_t)(it.end - data);
}
