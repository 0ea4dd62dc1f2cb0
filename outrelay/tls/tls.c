/* tls.c - OpenSSL context setup (client contexts ready for DANE, RFC 7672); see tls.h. */
#include "tls/tls.h"

#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>
#include <stdio.h>

static void last_error(char *err, size_t errlen, const char *what)
{
    unsigned long e = ERR_get_error();
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    snprintf(err, errlen, "%s: %s", what, e ? buf : "unknown error");
    ERR_clear_error();
}

static void common_options(SSL_CTX *ctx)
{
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    /* A peer closing TCP without close_notify after QUIT is normal in SMTP; with OpenSSL 3 and
     * libevent 2.1 this option is what makes it an EOF rather than an error. */
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
}

SSL_CTX *tls_server_context(const char *cert_file, const char *key_file, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        last_error(err, errlen, "SSL_CTX_new");
        return NULL;
    }
    common_options(ctx);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
        last_error(err, errlen, cert_file);
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        last_error(err, errlen, key_file);
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

SSL_CTX *tls_client_context(const char *ca_file, int system_ca, const char *cert_file,
                            const char *key_file, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        last_error(err, errlen, "SSL_CTX_new");
        return NULL;
    }
    common_options(ctx);
    /* DANE's shared state (the digests of TLSA matching types 1 and 2), once per context: a
     * connection turns DANE on for itself (SSL_dane_enable) when its policy has TLSA records;
     * without that the context verifies as before */
    if (SSL_CTX_dane_enable(ctx) <= 0) {
        last_error(err, errlen, "SSL_CTX_dane_enable");
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (ca_file && SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
        last_error(err, errlen, ca_file);
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (!ca_file && system_ca) SSL_CTX_set_default_verify_paths(ctx);
    if (cert_file && SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
        last_error(err, errlen, cert_file);
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (key_file && (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1 ||
                     SSL_CTX_check_private_key(ctx) != 1)) {
        last_error(err, errlen, key_file);
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

void tls_describe(struct bufferevent *bev, const char **version, const char **cipher)
{
    SSL *ssl = bufferevent_openssl_get_ssl(bev);
    *version = ssl ? SSL_get_version(ssl) : NULL;
    *cipher = ssl ? SSL_get_cipher_name(ssl) : NULL;
}

const char *tls_error_string(struct bufferevent *bev)
{
    static char buf[256];
    unsigned long e = bufferevent_get_openssl_error(bev);
    if (!e) return "TLS handshake failed";
    ERR_error_string_n(e, buf, sizeof buf);
    while (bufferevent_get_openssl_error(bev))
        ;
    return buf;
}
