/* smtpc.c - the session of an outbound SMTP connection, for one destination each: opening it,
 * the dialogue before transactions (greeting, EHLO, STARTTLS as the connection's TLS policy
 * says, AUTH for smarthosts), reading replies, idle reuse for several messages. Drives
 * resolution and connecting (smtpc_resolve.c) and transactions (smtpc_transaction.c) over the
 * connection core (smtpc_conn.c); every TLS decision comes from the policy (tls_policy.c).
 * Takes jobs from its owner's destinations; outcomes go back through the core. Loop thread. */
#include "smtpc/smtpc.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/log.h"
#include "common/util.h"
#include "smtpc/smtpc_internal.h"
#include "dns/dns.h"
#include "mail/smtp_proto.h"
#include "tls/tls.h"

#define SMTPC_IDLE_SECONDS 2
#define SMTPC_MAX_REPLY 8192

/* --- session (before transactions) ---------------------------------------------------------- */

static void parse_ehlo_line(struct smtpc_conn *c, const char *kw)
{
    if (strcasecmp(kw, "PIPELINING") == 0)
        c->ext_pipelining = 1;
    else if (strcasecmp(kw, "STARTTLS") == 0)
        c->ext_starttls = 1;
    else if (strcasecmp(kw, "CHUNKING") == 0)
        c->ext_chunking = 1;
    else if (strcasecmp(kw, "REQUIRETLS") == 0)
        c->ext_requiretls = 1;
    else if (strcasecmp(kw, "8BITMIME") == 0)
        c->ext_8bitmime = 1;
    else if (strcasecmp(kw, "SMTPUTF8") == 0)
        c->ext_smtputf8 = 1;
    else if (strcasecmp(kw, "DSN") == 0)
        c->ext_dsn = 1;
    else if (strncasecmp(kw, "SIZE", 4) == 0 && (kw[4] == ' ' || kw[4] == '\0'))
        c->ext_size = kw[4] ? atoll(kw + 5) : 0;
    else if (strncasecmp(kw, "AUTH", 4) == 0 && (kw[4] == ' ' || kw[4] == '=')) {
        c->ext_auth_plain = strcasestr(kw, " PLAIN") != NULL || strcasestr(kw, "=PLAIN");
        c->ext_auth_login = strcasestr(kw, " LOGIN") != NULL || strcasestr(kw, "=LOGIN");
    }
}

static void smtpc_conn_ready(struct smtpc_conn *c);
static void reply_deadline_arm(struct smtpc_conn *c);

static const char *helo_name(const struct smtpc_conn *c)
{
    return c->egress->helo ? c->egress->helo : smtpc_cfg->hostname;
}

static void start_tls(struct smtpc_conn *c)
{
    const struct tls_policy *p = c->tls_policy;
    SSL *ssl = SSL_new(p->ctx);
    SSL_set_tlsext_host_name(ssl, p->sni);
    if (p->dane) {
        /* DANE (RFC 7672 section 3): the certificate must match one of the TLSA records, the
         * TLSA base domain (the MX host) being the name a DANE-TA chain must carry; DANE-EE
         * ignores names and dates (section 3.1.1). The context was made ready for DANE in
         * tls/ (SSL_CTX_dane_enable, once per shared context). */
        int added = 0;
        if (SSL_dane_enable(ssl, p->mx) > 0) {
            SSL_dane_set_flags(ssl, DANE_FLAG_NO_DANE_EE_NAMECHECKS);
            for (size_t i = 0; i < p->n_tlsa; i++)
                if (SSL_dane_tlsa_add(ssl, p->tlsa[i].usage, p->tlsa[i].selector, p->tlsa[i].mtype,
                                      p->tlsa[i].data, p->tlsa[i].len) > 0)
                    added++;
        }
        ERR_clear_error();
        if (!added) { /* never fall back to an unauthenticated handshake */
            SSL_free(ssl);
            c->tls_failure = "tlsa-invalid";
            smtpc_set_error(c, 0, "4.7.5", "no TLSA record of %s could be used by OpenSSL (%s)",
                            c->mx_name, p->reason);
            log_warn("smtpc: %s", c->last_error);
            smtpc_conn_next_address(c);
            return;
        }
        SSL_set_verify(ssl, SSL_VERIFY_PEER, NULL);
    } else if (p->verify) { /* the chain and a name (RFC 6125), not the chain alone */
        SSL_set_verify(ssl, SSL_VERIFY_PEER, NULL);
        SSL_set1_host(ssl, p->names[0]);
        for (size_t i = 1; i < p->n_names; i++)
            SSL_add1_host(ssl, p->names[i]);
    } else {
        /* The policy does not ask for verification, but a REQUIRETLS message (RFC 8689)
         * may only go over a connection whose certificate verifies for the MX
         * name: check it without failing the handshake (SSL_VERIFY_NONE still verifies and
         * keeps the result); c->tls_verified says how it went. */
        SSL_set_verify(ssl, SSL_VERIFY_NONE, NULL);
        SSL_set1_host(ssl, p->sni);
    }
    bufferevent_free(c->bev); /* the plaintext bev does not own the fd */
    struct bufferevent *bev = bufferevent_openssl_socket_new(
        smtpc_base, c->fd, ssl, BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE);
    bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    smtpc_conn_attach(c, bev, smtpc_cfg->connect_timeout);
    c->tls = 1;
    c->tls_verified = 0;
    c->state = C_TLS_HANDSHAKE;
    reply_deadline_arm(c); /* a handshake trickled a byte at a time ends too */
}

/* Sends prefix and the credentials in base64, and wipes the encoded copy. */
static void send_secret_base64(struct smtpc_conn *c, const char *prefix, const char *data,
                               size_t len)
{
    char *b64 = xmalloc(len * 2 + 8);
    int n = EVP_EncodeBlock((unsigned char *)b64, (const unsigned char *)data, (int)len);
    smtpc_send_line(c, "%s%s", prefix, b64);
    explicit_bzero(b64, (size_t)n);
    free(b64);
}

static void after_ehlo(struct smtpc_conn *c)
{
    const struct egress_conf *e = c->egress;
    if (!c->tls && c->tls_policy->level != TLS_POLICY_NONE && !c->no_tls) {
        if (c->ext_starttls) {
            c->state = C_STARTTLS;
            smtpc_send_line(c, "STARTTLS");
            return;
        }
        c->tls_failure = "starttls-not-supported";
        if (c->tls_policy->level == TLS_POLICY_REQUIRED) {
            smtpc_set_error(c, 0, "4.7.4",
                            "TLS is required (%s) but %s[%s] does not offer STARTTLS; the mail "
                            "stays queued",
                            c->tls_policy->reason, c->mx_name, c->addr_text);
            log_warn("smtpc: %s", c->last_error);
            smtpc_send_quit(c);
            smtpc_conn_next_address(c);
            return;
        }
    }
    if (e->type == EGRESS_SMARTHOST && e->auth_user) {
        if (!c->ext_auth_plain && !c->ext_auth_login) {
            smtpc_set_error(c, 0, "4.7.0", "smarthost %s[%s] offers no AUTH PLAIN/LOGIN",
                            c->mx_name, c->addr_text);
            smtpc_conn_next_address(c);
            return;
        }
        if (!c->ext_auth_plain) { /* LOGIN only: username and password in two steps */
            c->state = C_AUTH_LOGIN_USER;
            smtpc_send_line(c, "AUTH LOGIN");
            return;
        }
        struct strbuf raw = STRBUF_INIT;
        strbuf_append(&raw, "", 1);
        strbuf_puts(&raw, e->auth_user);
        strbuf_append(&raw, "", 1);
        strbuf_puts(&raw, e->auth_password ? e->auth_password : "");
        c->state = C_AUTH;
        send_secret_base64(c, "AUTH PLAIN ", raw.data, raw.len);
        explicit_bzero(raw.data, raw.len);
        strbuf_free(&raw);
        return;
    }
    smtpc_conn_ready(c);
}

static void idle_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct smtpc_conn *c = arg;
    LIST_REMOVE(c, idle_link);
    smtpc_send_quit(c);
}

/* Ready for a transaction: take the next job, or wait idle a little, or leave. */
static void smtpc_conn_ready(struct smtpc_conn *c)
{
    if (!c->working) {
        c->working = 1;
        smtpc_owner->working(c->dest);
    }
    int limit = c->egress->max_messages_per_connection; /* default: egress settings table */
    if (c->dest->max_per_connection > 0 && c->dest->max_per_connection < limit)
        limit = c->dest->max_per_connection; /* a cap or throttle of the route stage */
    /* a job carried here from a server that could not take it goes first */
    if (c->pinned) {
        c->job = c->pinned;
        c->pinned = NULL;
        enum transaction_next next = smtpc_start_transaction(c);
        if (!c->pinned) { /* taken here, or refused for good: the carrying is over */
            c->pinned_why[0] = '\0';
            c->pinned_temp = 0;
            c->carried = 1;
        }
        if (next == TRANSACTION_GOES_ON) return;
    }
    if (c->carried) { /* the destination's other mail goes to its preferred MX hosts */
        smtpc_send_quit(c);
        return;
    }
    /* a job refused before any command (e.g. too big for this server) makes room for the next */
    while (c->messages < limit) {
        c->job = smtpc_dest_take_job(c->dest);
        if (!c->job) {
            c->state = C_IDLE;
            LIST_INSERT_HEAD(&c->dest->idle, c, idle_link);
            if (!c->idle_timer) c->idle_timer = evtimer_new(smtpc_base, idle_timeout, c);
            struct timeval tv = {SMTPC_IDLE_SECONDS, 0};
            evtimer_add(c->idle_timer, &tv);
            smtpc_set_timeout(c, smtpc_cfg->command_timeout);
            return;
        }
        if (smtpc_start_transaction(c) == TRANSACTION_GOES_ON) return;
    }
    smtpc_send_quit(c);
}

int smtpc_wake_idle(struct dest *d)
{
    struct smtpc_conn *c = LIST_FIRST(&d->idle);
    if (!c) return 0;
    LIST_REMOVE(c, idle_link);
    evtimer_del(c->idle_timer);
    c->state = C_TRANSACTION;
    c->job = smtpc_dest_take_job(d);
    if (!c->job) {
        smtpc_conn_ready(c);
        return 0;
    }
    if (smtpc_start_transaction(c) == TRANSACTION_READY) smtpc_conn_ready(c);
    return 1;
}

/* A complete reply outside a transaction. */
static void session_reply(struct smtpc_conn *c, int code, const char *text)
{
    switch (c->state) {
    case C_GREETING:
        if (code != 220) {
            smtpc_set_error(c, 0, "4.4.2", "%s[%s] greeted with %d %s", c->mx_name, c->addr_text,
                            code, text);
            smtpc_conn_next_address(c);
            return;
        }
        c->state = C_EHLO;
        smtpc_send_line(c, "EHLO %s", helo_name(c));
        return;
    case C_EHLO:
        if (code != 250) {
            c->state = C_HELO;
            smtpc_send_line(c, "HELO %s", helo_name(c));
            return;
        }
        after_ehlo(c);
        return;
    case C_HELO:
        if (code != 250) {
            smtpc_set_error(c, 0, "4.4.2", "%s[%s] refused HELO: %d %s", c->mx_name, c->addr_text,
                            code, text);
            smtpc_conn_next_address(c);
            return;
        }
        after_ehlo(c);
        return;
    case C_STARTTLS:
        if (code != 220) {
            c->tls_failure = "starttls-not-supported";
            if (c->tls_policy->level == TLS_POLICY_REQUIRED) {
                smtpc_set_error(c, 0, "4.7.4", "%s[%s] refused STARTTLS: %d %s (%s)", c->mx_name,
                                c->addr_text, code, text, c->tls_policy->reason);
                smtpc_conn_next_address(c);
                return;
            }
            smtpc_conn_ready(c);
            return;
        }
        if (evbuffer_get_length(bufferevent_get_input(c->bev)) > 0) {
            smtpc_set_error(c, 0, "4.7.0", "%s[%s] sent data after its STARTTLS reply", c->mx_name,
                            c->addr_text);
            smtpc_conn_next_address(c);
            return;
        }
        start_tls(c);
        return;
    case C_AUTH_LOGIN_USER:
    case C_AUTH_LOGIN_PASS:
        if (code == 334) {
            const char *v = c->state == C_AUTH_LOGIN_USER
                                ? c->egress->auth_user
                                : (c->egress->auth_password ? c->egress->auth_password : "");
            c->state = c->state == C_AUTH_LOGIN_USER ? C_AUTH_LOGIN_PASS : C_AUTH;
            send_secret_base64(c, "", v, strlen(v));
            return;
        }
        /* anything else ends the exchange like a final AUTH reply */
        __attribute__((fallthrough));
    case C_AUTH:
        if (code != 235) {
            smtpc_set_error(c, 0, "4.7.0", "smarthost %s[%s] refused our credentials: %d %s",
                            c->mx_name, c->addr_text, code, text);
            log_error("smtpc: %s", c->last_error);
            smtpc_fail_destination(c);
            smtpc_conn_close(c);
            return;
        }
        smtpc_conn_ready(c);
        return;
    case C_IDLE: /* e.g. a 421 while idle */
        smtpc_conn_close(c);
        return;
    case C_QUIT:
        smtpc_quit_done(c);
        return;
    default:
        return;
    }
}

/* --- input ----------------------------------------------------------------------------------- */

int smtpc_reply_add_line(struct strbuf *reply, int *reply_code, const char *line, const char **text)
{
    int code, more;
    /* a reply that goes on past the cap is no reply (each line adds at least its separator,
     * so this also bounds the lines of one reply) */
    if (reply->len >= SMTPC_MAX_REPLY) return -1;
    /* *reply_code, not reply->len, says whether lines came before: a first line may be empty */
    if (smtp_parse_reply_line(line, &code, &more, text) < 0 || (*reply_code && code != *reply_code))
        return -1;
    if (reply->len) strbuf_puts(reply, " ");
    size_t n = strlen(*text), room = SMTPC_MAX_REPLY - reply->len; /* len <= MAX here */
    strbuf_append(reply, *text, n < room ? n : room);
    *reply_code = code;
    return more;
}

/* The server broke the protocol: before any transaction try the next address, during one
 * close (the job keeps the error). */
static void leave_server(struct smtpc_conn *c)
{
    if (c->state <= C_AUTH_LOGIN_PASS)
        smtpc_conn_next_address(c);
    else if (c->state == C_QUIT)
        smtpc_quit_done(c);
    else
        smtpc_conn_close(c);
}

static void reply_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct smtpc_conn *c = arg;
    if (c->closed || !c->bev) return;
    c->reply_late = 1; /* session_event_cb says so */
    c->on_event(c->bev, BEV_EVENT_READING | BEV_EVENT_TIMEOUT, c);
}

/* Part of a reply is in: the rest must follow within the timeout (set once per reply). */
static void reply_deadline_arm(struct smtpc_conn *c)
{
    if (!c->reply_deadline) c->reply_deadline = evtimer_new(smtpc_base, reply_deadline_cb, c);
    if (evtimer_pending(c->reply_deadline, NULL)) return;
    struct timeval tv = {.tv_sec = c->timeout_s > 0 ? c->timeout_s : smtpc_cfg->command_timeout};
    evtimer_add(c->reply_deadline, &tv);
}

static void session_read_cb(struct bufferevent *bev, void *arg)
{
    struct smtpc_conn *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    for (;;) {
        size_t eol_len;
        char *line = evbuffer_readln(in, &eol_len, EVBUFFER_EOL_CRLF);
        if (!line) {
            if (evbuffer_get_length(in) > SMTPC_MAX_REPLY) {
                smtpc_set_error(c, 0, "4.4.2", "%s[%s] sent an overlong line", c->mx_name,
                                c->addr_text);
                leave_server(c);
                return;
            }
            if (evbuffer_get_length(in) > 0 || c->reply_code != 0)
                reply_deadline_arm(c);
            else if (c->reply_deadline)
                evtimer_del(c->reply_deadline);
            return;
        }
        const char *text;
        int first = c->reply_code == 0;
        int more = smtpc_reply_add_line(&c->reply, &c->reply_code, line, &text);
        if (more < 0) {
            if (c->reply.len >= SMTPC_MAX_REPLY)
                smtpc_set_error(c, 0, "4.4.2", "%s[%s] sent a reply of more than %d bytes",
                                c->mx_name, c->addr_text, SMTPC_MAX_REPLY);
            else
                smtpc_set_error(c, 0, "4.4.2", "%s[%s] sent a malformed reply: %.100s", c->mx_name,
                                c->addr_text, line);
            free(line);
            leave_server(c);
            return;
        }
        if (c->state == C_EHLO && !first) /* extension lines after the first */
            parse_ehlo_line(c, text);
        free(line);
        if (more) continue;
        int code = c->reply_code;
        char *full = strbuf_detach(&c->reply, NULL);
        c->reply_code = 0;
        if (c->reply_deadline) evtimer_del(c->reply_deadline); /* complete in time */
        if (code >= 400 || c->state == C_DATA_BODY) {
            size_t skip = smtp_enhanced_code(full, c->fb_enhanced, sizeof c->fb_enhanced);
            c->fb_code = code;
            snprintf(c->fb_text, sizeof c->fb_text, "%s", full + skip);
        }
        struct bufferevent *before_bev = c->bev;
        if (c->state == C_TRANSACTION || c->state == C_DATA_BODY) {
            if (smtpc_transaction_reply(c, code, full) == TRANSACTION_READY && !c->closed)
                smtpc_conn_ready(c);
        } else
            session_reply(c, code, full);
        free(full);
        /* the connection may be closed, moved to another address or upgraded to TLS: then
         * this bufferevent's input is no longer ours to read */
        if (c->closed || c->bev != before_bev) return;
    }
}

/* The RFC 8460 result type of a DANE handshake that did not verify: no TLSA record matched
 * the server's certificate (tlsa-invalid), else what the DANE-TA chain check said. */
static const char *dane_failure_type(long verify_result)
{
    return verify_result == X509_V_ERR_DANE_NO_MATCH ? "tlsa-invalid"
                                                     : smtpc_tls_failure_type(verify_result);
}

/* After a DANE handshake: 1 when a TLSA record authenticated the server (which one goes into
 * the policy's reason and the log), else the address is given up with 4.7.5 and 0. */
static int dane_authenticated(struct smtpc_conn *c, SSL *ssl)
{
    uint8_t usage, selector, mtype;
    long vr = SSL_get_verify_result(ssl);
    int depth = SSL_get0_dane_tlsa(ssl, &usage, &selector, &mtype, NULL, NULL);
    if (vr == X509_V_OK && depth >= 0 && SSL_get0_dane_authority(ssl, NULL, NULL) >= 0) {
        struct tls_policy *p = c->tls_policy;
        char *before = strstr(p->reason, "; matched TLSA"); /* an earlier address's */
        if (before) *before = '\0';
        size_t used = strlen(p->reason);
        snprintf(p->reason + used, sizeof p->reason - used, "; matched TLSA %u %u %u at depth %d",
                 usage, selector, mtype, depth);
        log_info("smtpc: %s[%s]: DANE authenticated by TLSA %u %u %u (certificate depth %d)",
                 c->mx_name, c->addr_text, usage, selector, mtype, depth);
        return 1;
    }
    c->tls_failure = dane_failure_type(vr != X509_V_OK ? vr : X509_V_ERR_DANE_NO_MATCH);
    smtpc_set_error(c, 0, "4.7.5", "certificate of %s[%s] did not match its TLSA records: %s (%s)",
                    c->mx_name, c->addr_text,
                    X509_verify_cert_error_string(vr != X509_V_OK ? vr : X509_V_ERR_DANE_NO_MATCH),
                    c->tls_policy->reason);
    log_warn("smtpc: %s", c->last_error);
    smtpc_conn_next_address(c);
    return 0;
}

static void session_event_cb(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    struct smtpc_conn *c = arg;
    if (what & BEV_EVENT_CONNECTED) {
        if (c->state == C_CONNECTING) {
            c->state = C_GREETING;
            smtpc_set_timeout(c, smtpc_cfg->command_timeout);
            return;
        }
        if (c->state == C_TLS_HANDSHAKE) {
            if (c->reply_deadline) evtimer_del(c->reply_deadline);
            SSL *ssl = bufferevent_openssl_get_ssl(c->bev);
            if (c->tls_policy->dane && !dane_authenticated(c, ssl)) return;
            if (c->tls_policy->verify && SSL_get_verify_result(ssl) != X509_V_OK) {
                c->tls_failure = smtpc_tls_failure_type(SSL_get_verify_result(ssl));
                smtpc_set_error(c, 0, "4.7.5", "certificate of %s[%s] did not verify: %s (%s)",
                                c->mx_name, c->addr_text,
                                X509_verify_cert_error_string(SSL_get_verify_result(ssl)),
                                c->tls_policy->reason);
                log_warn("smtpc: %s", c->last_error);
                smtpc_conn_next_address(c);
                return;
            }
            c->tls_verified =
                SSL_get0_peer_certificate(ssl) != NULL && SSL_get_verify_result(ssl) == X509_V_OK;
            c->state = C_EHLO;
            smtpc_set_timeout(c, smtpc_cfg->command_timeout);
            smtpc_send_line(c, "EHLO %s", helo_name(c));
            smtpc_conn_forget_extensions(c);
            return;
        }
        return;
    }
    char sys[200];
    const char *why = (what & BEV_EVENT_TIMEOUT) ? "timeout"
                      : (what & BEV_EVENT_EOF)   ? "connection closed by the server"
                                                 : NULL;
    if ((what & BEV_EVENT_TIMEOUT) && c->reply_late) {
        if (c->state == C_TLS_HANDSHAKE)
            snprintf(sys, sizeof sys, "handshake not complete %llds after it began",
                     (long long)c->timeout_s);
        else
            snprintf(sys, sizeof sys, "reply not complete %llds after its first byte",
                     (long long)c->timeout_s);
        why = sys;
    }
    if (!why) {
        if (c->tls)
            snprintf(sys, sizeof sys, "TLS: %s", tls_error_string(c->bev));
        else
            snprintf(sys, sizeof sys, "%s", evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        why = sys;
    }
    switch (c->state) {
    case C_CONNECTING:
        smtpc_set_error(c, 0, "4.4.1", "connect to %s[%s]: %s", c->mx_name, c->addr_text, why);
        smtpc_conn_next_address(c);
        return;
    case C_TLS_HANDSHAKE: {
        /* say why verification failed (e.g. "hostname mismatch"), not only that it did */
        SSL *ssl = c->bev ? bufferevent_openssl_get_ssl(c->bev) : NULL;
        long vr = ssl && c->tls_policy->verify ? SSL_get_verify_result(ssl) : X509_V_OK;
        c->tls_failure = c->tls_policy->dane ? dane_failure_type(vr) : smtpc_tls_failure_type(vr);
        smtpc_set_error(c, 0, "4.7.5", "TLS handshake with %s[%s] failed: %s%s%s%s (%s)",
                        c->mx_name, c->addr_text, why,
                        vr != X509_V_OK ? " (certificate did not verify: " : "",
                        vr != X509_V_OK ? X509_verify_cert_error_string(vr) : "",
                        vr != X509_V_OK ? ")" : "", c->tls_policy->reason);
        log_warn("smtpc: %s", c->last_error);
        if (c->tls_policy->level != TLS_POLICY_REQUIRED) {
            /* opportunistic TLS must not block mail: same address again, in plaintext */
            c->retry_plain = 1;
            c->addr_i--;
        }
        smtpc_conn_next_address(c);
        return;
    }
    case C_GREETING:
    case C_EHLO:
    case C_HELO:
    case C_STARTTLS:
    case C_AUTH:
    case C_AUTH_LOGIN_USER:
    case C_AUTH_LOGIN_PASS:
        smtpc_set_error(c, 0, "4.4.2", "lost connection with %s[%s] during the greeting: %s",
                        c->mx_name, c->addr_text, why);
        smtpc_conn_next_address(c);
        return;
    case C_QUIT:
        smtpc_quit_done(c);
        return;
    case C_IDLE:
        smtpc_conn_close(c);
        return;
    default:
        smtpc_set_error(c, 0, "4.4.2", "lost connection with %s[%s] during the transaction: %s",
                        c->mx_name, c->addr_text, why);
        smtpc_conn_close(c);
        return;
    }
}

void smtpc_open(struct dest *d)
{
    struct smtpc_conn *c = smtpc_conn_new(d, session_read_cb, session_event_cb);
    if (d->egress->type == EGRESS_SMARTHOST) {
        c->hosts = xcalloc(1, sizeof *c->hosts);
        snprintf(c->hosts[0].name, sizeof c->hosts[0].name, "%s", d->egress->host);
        c->n_hosts = 1;
        smtpc_resolve_next_host(c);
        return;
    }
    if (d->domain[0] == '[') { /* an address literal: no MX lookup (RFC 5321 5.1) */
        struct sockaddr_any lit;
        c->hosts = xcalloc(1, sizeof *c->hosts);
        c->n_hosts = 1;
        if (util_parse_address_literal(d->domain, &lit) < 0) {
            smtpc_set_error(c, 550, "5.1.2", "malformed address literal %s", d->domain);
            smtpc_fail_destination(c);
            smtpc_conn_close(c);
            return;
        }
        util_format_addr(&lit, 0, c->hosts[0].name, sizeof c->hosts[0].name);
        smtpc_resolve_next_host(c);
        return;
    }
    smtpc_resolve_mx(c);
}

int smtpc_init(struct event_base *base, const struct config *cfg, const struct smtpc_owner *owner,
               char *err, size_t errlen)
{
    smtpc_base = base;
    smtpc_owner = owner;
    smtpc_cfg = cfg;
    sts_start(base);
    return tls_policy_load(cfg, err, errlen);
}

/* SIGHUP: new connections use cfg (egresses, timeouts, MX port, TLS files); open connections
 * finish with the egress and TLS policy they started with. Nothing changes when a client
 * context cannot be built (-1 with err). The caller keeps the old config alive until after
 * smtpc_shutdown(). */
int smtpc_reload(const struct config *cfg, char *err, size_t errlen)
{
    if (tls_policy_load(cfg, err, errlen) < 0) return -1;
    smtpc_cfg = cfg;
    return 0;
}

void smtpc_shutdown(void)
{
    smtpc_conn_close_all();
    tls_policy_unload();
    sts_shutdown();
}
