/* origin_policy.h - who a client is and what it may send as, beyond its address and AUTH:
 * origins proved by a TLS client certificate (a chain to the origin's CA and one of its names),
 * tenant binding (the organisation's domains for the envelope sender and From:, Microsoft 365's
 * X-MS-Exchange-CrossTenant-Id) and this deployment's loop stamp (X-Outrelay-Loop). Owns one
 * X509_STORE per certificate origin, built at start. Loop thread only. */
#ifndef OUTRELAY_ORIGIN_POLICY_H
#define OUTRELAY_ORIGIN_POLICY_H

#include <openssl/ssl.h>
#include <stddef.h>

#include "common/strbuf.h"
#include "common/util.h"
#include "config/config.h"

/* The header field that marks mail that passed through a deployment. */
#define ORIGIN_POLICY_LOOP_HEADER "X-Outrelay-Loop"

/* Loads the CA stores of the origins that require certificates. Returns 0 / -1 with err. */
int origin_policy_init(const struct config *cfg, char *err, size_t errlen);
/* SIGHUP: the origins of cfg from now on (see origin_policy.c). Returns 0 / -1 with err. */
int origin_policy_reload(const struct config *cfg, SSL_CTX *server_ctx, char *err, size_t errlen);
void origin_policy_shutdown(void);
/* Makes a server context ask for a client certificate without requiring one and without failing
 * the handshake over it (clients without certificates keep working); the origin decides
 * afterwards. Does nothing when no origin requires a certificate. */
void origin_policy_setup_server_ctx(SSL_CTX *ctx);

/* The origin a client's address proves on its own: its networks (or platforms) match and it
 * asks for no certificate. NULL if none. */
const struct origin_conf *origin_policy_by_address(const struct sockaddr_any *peer);
/* After the TLS handshake: the first certificate origin whose CA and names the client's
 * certificate satisfies and whose networks (if any) hold peer; NULL if none. subject gets the
 * certificate's subject ("" without a certificate) for the records. */
const struct origin_conf *origin_policy_by_certificate(SSL *ssl, const struct sockaddr_any *peer,
                                                       char *subject, size_t size);

/* At RCPT: NULL, or the 550 reply for an envelope sender outside the origin's domains (the
 * null sender is allowed: the From: check at end of DATA still applies). */
const char *origin_policy_sender_refusal(const struct origin_conf *o, const char *sender, char *buf,
                                         size_t size);
/* At end of DATA, before anything is stored: NULL, or the reply refusing the message (our own
 * loop stamp already present; From: domain outside the domains; tenant id missing or another).
 * data/len: the message as the client sent it (without our Received: and stamp). */
const char *origin_policy_message_refusal(const struct config *cfg, const struct origin_conf *o,
                                          const char *from_domain, const char *data, size_t len,
                                          char *buf, size_t size);
/* dkim_required: NULL when one of sigs (the message's DKIM signatures as verified on arrival)
 * passed and is by one of the origin's domains (or below one), else the 550 reply. */
struct dkim_signature;
const char *origin_policy_dkim_refusal(const struct origin_conf *o,
                                       const struct dkim_signature *sigs, size_t n, char *buf,
                                       size_t size);
/* Appends our loop stamp "X-Outrelay-Loop: <deployment_id>\r\n". */
void origin_policy_stamp(const struct config *cfg, struct strbuf *out);

#endif
