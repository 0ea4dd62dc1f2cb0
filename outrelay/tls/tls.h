/* tls.h - OpenSSL contexts for STARTTLS in both directions, and the libevent glue to upgrade a
 * plaintext connection. Server contexts are built at start and on reload by main.c; client
 * contexts are shared through a refcounted cache (tls_cache.c), one per distinct set of files,
 * so egresses with the same CA and certificate share one. Never decides whether or how to use
 * TLS (that is the caller's policy). Loop thread only. */
#ifndef OUTRELAY_TLS_H
#define OUTRELAY_TLS_H

#include <event2/bufferevent.h>
#include <openssl/ssl.h>
#include <stddef.h>

/* Server context from PEM cert chain + key. NULL with err on failure. */
SSL_CTX *tls_server_context(const char *cert_file, const char *key_file, char *err, size_t errlen);
/* Client context. ca_file: verify against it; NULL with system_ca: the system store; NULL
 * without: no verification possible. cert_file/key_file: a client certificate to present (both
 * or neither). NULL with err on failure. */
SSL_CTX *tls_client_context(const char *ca_file, int system_ca, const char *cert_file,
                            const char *key_file, char *err, size_t errlen);
/* The files a client context is built from; the cache key. NULL paths mean "none". */
struct tls_client_files {
    const char *ca_file;   /* verify against it; NULL: only the system store (with system_ca) */
    int system_ca;         /* also load the system store */
    const char *cert_file; /* a client certificate chain to present, with key_file, or NULL */
    const char *key_file;
};
/* A shared client context for f, with one more reference (release it with
 * tls_client_context_release). reread = 0: the context last built for the same files, or a new
 * one; reread = 1 (start, reload): the files are looked at again and a context is built anew
 * when one of them changed on disk (size, time, inode), else the same context is returned.
 * Contexts stay alive while anyone holds a reference; SSL objects made from a context hold
 * their own. NULL with err when the files cannot be loaded. */
SSL_CTX *tls_client_context_acquire(const struct tls_client_files *f, int reread, char *err,
                                    size_t errlen);
void tls_client_context_release(SSL_CTX *ctx);
/* How many distinct client contexts the cache holds (for tests and metrics). */
size_t tls_client_context_count(void);
/* "TLSv1.3" and the cipher name of an established TLS bufferevent. */
void tls_describe(struct bufferevent *bev, const char **version, const char **cipher);
/* The first OpenSSL error of a TLS bufferevent, as text (static buffer, loop thread only). */
const char *tls_error_string(struct bufferevent *bev);

#endif
