/* tls.h - OpenSSL contexts for STARTTLS in both directions, and the libevent glue to upgrade a
 * plaintext connection. Contexts are built once at start (read-only afterwards, shared by all
 * connections); the helpers run on the event loop thread. */
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
/* "TLSv1.3" and the cipher name of an established TLS bufferevent. */
void tls_describe(struct bufferevent *bev, const char **version, const char **cipher);
/* The first OpenSSL error of a TLS bufferevent, as text (static buffer, loop thread only). */
const char *tls_error_string(struct bufferevent *bev);

#endif
