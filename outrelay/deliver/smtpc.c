/* smtpc.c - outbound SMTP connections for one destination each: opening and closing them,
 * the session before transactions (greeting, EHLO, STARTTLS opportunistic or required and
 * optionally verified, AUTH for smarthosts), reading replies, idle reuse for several messages.
 * Resolution and connecting: smtpc_resolve.c; transactions: smtpc_transaction.c. Reports every
 * job's per-recipient outcome to the queue (queue_job_done). Loop thread only. */
#include "deliver/smtpc.h"

#include <arpa/inet.h>
#include <errno.h>
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
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "deliver/queue.h"
#include "deliver/smtpc_internal.h"
#include "dns/dns.h"
#include "ingress/smtp_proto.h"
#include "tls/tls.h"

#define SMTPC_IDLE_SECONDS 2
#define SMTPC_MAX_REPLY 8192

struct event_base *smtpc_base;
const struct config *smtpc_cfg;
/* One client context per distinct (CA file, client certificate) among a config's egresses; each
 * egress points at its own (egress_ctx[i] for cfg->egress[i]). A reload adds a generation for
 * the new config; older ones stay until shutdown, because connections opened before the reload
 * still hold egress pointers into the config they started with. Newest first. */
struct smtpc_tls_generation {
    const struct config *cfg;
    SSL_CTX **egress_ctx;
    SSL_CTX **distinct_ctx;
    size_t n_distinct;
    struct smtpc_tls_generation *older;
};
static struct smtpc_tls_generation *smtpc_tls;
static LIST_HEAD(, smtpc_conn) smtpc_all = LIST_HEAD_INITIALIZER(smtpc_all);

/* --- failures -------------------------------------------------------------------------------- */

void smtpc_set_error(struct smtpc_conn *c, int code, const char *enh, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->last_error, sizeof c->last_error, fmt, ap);
    va_end(ap);
    c->last_error_code = code;
    snprintf(c->last_error_enh, sizeof c->last_error_enh, "%s", enh);
}

void smtpc_fill_info(struct smtpc_conn *c, struct attempt_info *info)
{
    memset(info, 0, sizeof *info);
    info->remote_mx = c->mx_name[0] ? c->mx_name : NULL;
    info->remote_addr = c->addr_text[0] ? c->addr_text : NULL;
    info->source_addr = c->source_text[0] ? c->source_text : NULL;
    if (c->tls && c->bev) tls_describe(c->bev, &info->tls_version, &info->tls_cipher);
    info->started_us = c->job_started_us;
    if (c->fb_code) {
        info->reply_code = c->fb_code;
        info->reply_enhanced = c->fb_enhanced;
        info->reply_text = c->fb_text;
    }
}

/* The current job ends without a (complete) answer: recipients without a final reply keep
 * the connection's error, which is temporary unless we know better. */
static void job_abort(struct smtpc_conn *c)
{
    if (!c->job) return;
    struct job *j = c->job;
    for (size_t i = 0; i < j->n_rcpts; i++) {
        if (j->results[i].code == 0 || (j->results[i].code >= 200 && j->results[i].code < 300)) {
            /* accepted at RCPT but the data never got its final reply: try again */
            j->results[i].code = 0;
            snprintf(j->results[i].enhanced, sizeof j->results[i].enhanced, "%s",
                     c->last_error_enh[0] ? c->last_error_enh : "4.4.2");
            snprintf(j->results[i].text, sizeof j->results[i].text, "%s",
                     c->last_error[0] ? c->last_error : "lost connection");
        }
    }
    struct attempt_info info;
    smtpc_fill_info(c, &info);
    c->job = NULL;
    queue_job_done(j, &info);
}

/* Nothing could be connected to (or nothing got past the greeting, TLS or AUTH): the queue
 * puts the destination in back-off and gives the waiting jobs the error, unless another
 * connection is working on them; a permanent error bounces them. */
void smtpc_fail_destination(struct smtpc_conn *c)
{
    struct rcpt_result why = {.code = c->last_error_code};
    snprintf(why.enhanced, sizeof why.enhanced, "%s",
             c->last_error_enh[0] ? c->last_error_enh : "4.4.1");
    snprintf(why.text, sizeof why.text, "%s", c->last_error);
    struct attempt_info info;
    smtpc_fill_info(c, &info);
    queue_dest_failed(c->dest, &why, &info);
}

/* --- connection teardown --------------------------------------------------------------------- */

void smtpc_conn_drop_socket(struct smtpc_conn *c)
{
    if (c->bev) {
        if (c->tls) {
            SSL *ssl = bufferevent_openssl_get_ssl(c->bev);
            if (ssl) SSL_shutdown(ssl);
            bufferevent_free(c->bev); /* owns the fd */
        } else {
            bufferevent_free(c->bev);
            if (c->fd >= 0) evutil_closesocket(c->fd);
        }
    } else if (c->fd >= 0) {
        evutil_closesocket(c->fd);
    }
    c->bev = NULL;
    c->fd = -1;
    c->tls = 0;
    strbuf_reset(&c->reply); /* a reply half read from this server is none of the next one's */
    c->reply_code = 0;
}

/* Closed connections wait here until the loop is back at the top (or shutdown). */
static LIST_HEAD(, smtpc_conn) smtpc_graveyard = LIST_HEAD_INITIALIZER(smtpc_graveyard);
static struct event *smtpc_graveyard_ev;

static void bury_all(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    struct smtpc_conn *c;
    while ((c = LIST_FIRST(&smtpc_graveyard))) {
        LIST_REMOVE(c, all_link);
        free(c->hosts);
        free(c->addrs);
        free(c->expects);
        strbuf_free(&c->reply);
        free(c);
    }
}

/* Tears the connection down now; the struct itself is freed from the event loop later, so
 * callers up the stack may still look at c->closed. */
void smtpc_conn_close(struct smtpc_conn *c)
{
    if (c->closed) return;
    c->closed = 1;
    job_abort(c);
    if (c->state == C_IDLE) LIST_REMOVE(c, idle_link);
    LIST_REMOVE(c, all_link);
    if (c->dnsq) dns_cancel(c->dnsq);
    c->dnsq = NULL;
    if (c->idle_timer) event_free(c->idle_timer);
    c->idle_timer = NULL;
    smtpc_conn_drop_socket(c);
    if (c->working) queue_dest_working_closed(c->dest);
    LIST_INSERT_HEAD(&smtpc_graveyard, c, all_link);
    event_active(smtpc_graveyard_ev, EV_TIMEOUT, 0);
    queue_dest_connection_closed(c->dest);
}

/* --- writing --------------------------------------------------------------------------------- */

void smtpc_send_line(struct smtpc_conn *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    struct evbuffer *out = bufferevent_get_output(c->bev);
    evbuffer_add_vprintf(out, fmt, ap);
    evbuffer_add(out, "\r\n", 2);
    va_end(ap);
}

void smtpc_set_timeout(struct smtpc_conn *c, int64_t seconds)
{
    struct timeval tv = {.tv_sec = seconds};
    bufferevent_set_timeouts(c->bev, &tv, &tv);
}

/* --- session (before transactions) ---------------------------------------------------------------
 */

static void parse_ehlo_line(struct smtpc_conn *c, const char *kw)
{
    if (strcasecmp(kw, "PIPELINING") == 0)
        c->ext_pipelining = 1;
    else if (strcasecmp(kw, "STARTTLS") == 0)
        c->ext_starttls = 1;
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

static const char *helo_name(const struct smtpc_conn *c)
{
    return c->egress->helo ? c->egress->helo : smtpc_cfg->hostname;
}

/* The client context of an egress of the current config or of one a reload replaced. */
static SSL_CTX *egress_tls_context(const struct egress_conf *e)
{
    for (struct smtpc_tls_generation *g = smtpc_tls; g; g = g->older)
        if (g->cfg->n_egress && e >= g->cfg->egress && e < g->cfg->egress + g->cfg->n_egress)
            return g->egress_ctx[e - g->cfg->egress];
    abort(); /* every egress a connection holds comes from a config smtpc was given */
}

static void start_tls(struct smtpc_conn *c)
{
    SSL_CTX *ctx = egress_tls_context(c->egress);
    SSL *ssl = SSL_new(ctx);
    const char *name = c->egress->tls_name ? c->egress->tls_name : c->mx_name;
    SSL_set_tlsext_host_name(ssl, name);
    if (c->egress->tls_verify) { /* the chain and the name (RFC 6125), not the chain alone */
        SSL_set_verify(ssl, SSL_VERIFY_PEER, NULL);
        SSL_set1_host(ssl, name);
    }
    bufferevent_free(c->bev); /* the plaintext bev does not own the fd */
    c->bev = bufferevent_openssl_socket_new(smtpc_base, c->fd, ssl, BUFFEREVENT_SSL_CONNECTING,
                                            BEV_OPT_CLOSE_ON_FREE);
    bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
    bufferevent_setcb(c->bev, smtpc_conn_read_cb, NULL, smtpc_conn_event_cb, c);
    smtpc_set_timeout(c, smtpc_cfg->connect_timeout);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    c->tls = 1;
    c->state = C_TLS_HANDSHAKE;
}

static void after_ehlo(struct smtpc_conn *c)
{
    const struct egress_conf *e = c->egress;
    if (!c->tls && e->tls != TLS_NONE && !c->no_tls) {
        if (c->ext_starttls) {
            c->state = C_STARTTLS;
            smtpc_send_line(c, "STARTTLS");
            return;
        }
        if (e->tls == TLS_REQUIRED) {
            smtpc_set_error(c, 0, "4.7.4",
                            "TLS is required for egress %s but %s[%s] does not offer STARTTLS",
                            e->name, c->mx_name, c->addr_text);
            log_warn("smtpc: %s", c->last_error);
            c->state = C_QUIT;
            smtpc_send_line(c, "QUIT");
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
        char *b64 = xmalloc(raw.len * 2 + 8);
        EVP_EncodeBlock((unsigned char *)b64, (const unsigned char *)raw.data, (int)raw.len);
        c->state = C_AUTH;
        smtpc_send_line(c, "AUTH PLAIN %s", b64);
        explicit_bzero(raw.data, raw.len);
        strbuf_free(&raw);
        free(b64);
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
    c->state = C_QUIT;
    smtpc_send_line(c, "QUIT");
    smtpc_set_timeout(c, 10);
}

/* Ready for a transaction: take the next job, or wait idle a little, or leave. */
void smtpc_conn_ready(struct smtpc_conn *c)
{
    if (!c->working) {
        c->working = 1;
        queue_dest_working(c->dest);
    }
    int limit = c->egress->max_messages_per_connection; /* default: egress settings table */
    if (c->dest->max_per_connection > 0 && c->dest->max_per_connection < limit)
        limit = c->dest->max_per_connection; /* a cap or throttle of the route stage */
    if (c->messages < limit) {
        c->job = queue_dest_take_job(c->dest);
        if (c->job) {
            smtpc_start_transaction(c);
            return;
        }
        c->state = C_IDLE;
        LIST_INSERT_HEAD(&c->dest->idle, c, idle_link);
        if (!c->idle_timer) c->idle_timer = evtimer_new(smtpc_base, idle_timeout, c);
        struct timeval tv = {SMTPC_IDLE_SECONDS, 0};
        evtimer_add(c->idle_timer, &tv);
        smtpc_set_timeout(c, smtpc_cfg->command_timeout);
        return;
    }
    c->state = C_QUIT;
    smtpc_send_line(c, "QUIT");
    smtpc_set_timeout(c, 10);
}

int smtpc_wake_idle(struct dest *d)
{
    struct smtpc_conn *c = LIST_FIRST(&d->idle);
    if (!c) return 0;
    LIST_REMOVE(c, idle_link);
    evtimer_del(c->idle_timer);
    c->state = C_TRANSACTION;
    c->job = queue_dest_take_job(d);
    if (!c->job) {
        smtpc_conn_ready(c);
        return 0;
    }
    smtpc_start_transaction(c);
    return 1;
}

/* A complete reply outside a transaction. */
static void session_reply(struct smtpc_conn *c, int code, const char *text)
{
    switch (c->state) {
    case C_GREETING:
        if (code != 220) {
            smtpc_set_error(c, code >= 500 ? 0 : 0, "4.4.2", "%s[%s] greeted with %d %s",
                            c->mx_name, c->addr_text, code, text);
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
            if (c->egress->tls == TLS_REQUIRED) {
                smtpc_set_error(c, 0, "4.7.4", "%s[%s] refused STARTTLS: %d %s", c->mx_name,
                                c->addr_text, code, text);
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
            size_t len = strlen(v);
            char *b64 = xmalloc(len * 2 + 8);
            EVP_EncodeBlock((unsigned char *)b64, (const unsigned char *)v, (int)len);
            c->state = c->state == C_AUTH_LOGIN_USER ? C_AUTH_LOGIN_PASS : C_AUTH;
            smtpc_send_line(c, "%s", b64);
            explicit_bzero(b64, strlen(b64));
            free(b64);
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
        smtpc_conn_close(c);
        return;
    default:
        return;
    }
}

/* --- input
 * ---------------------------------------------------------------------------------------- */

int smtpc_reply_add_line(struct strbuf *reply, int *reply_code, const char *line,
                         const char **text)
{
    int code, more;
    /* *reply_code, not reply->len, says whether lines came before: a first line may be empty */
    if (smtp_parse_reply_line(line, &code, &more, text) < 0 || (*reply_code && code != *reply_code))
        return -1;
    if (reply->len) strbuf_puts(reply, " ");
    if (reply->len < SMTPC_MAX_REPLY) strbuf_puts(reply, *text);
    *reply_code = code;
    return more;
}

void smtpc_conn_read_cb(struct bufferevent *bev, void *arg)
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
                if (c->state <= C_AUTH_LOGIN_PASS)
                    smtpc_conn_next_address(c);
                else
                    smtpc_conn_close(c);
            }
            return;
        }
        const char *text;
        int first = c->reply_code == 0;
        int more = smtpc_reply_add_line(&c->reply, &c->reply_code, line, &text);
        if (more < 0) {
            smtpc_set_error(c, 0, "4.4.2", "%s[%s] sent a malformed reply: %.100s", c->mx_name,
                            c->addr_text, line);
            free(line);
            if (c->state <= C_AUTH_LOGIN_PASS)
                smtpc_conn_next_address(c);
            else
                smtpc_conn_close(c);
            return;
        }
        if (c->state == C_EHLO && !first) /* extension lines after the first */
            parse_ehlo_line(c, text);
        free(line);
        if (more) continue;
        int code = c->reply_code;
        char *full = strbuf_detach(&c->reply, NULL);
        c->reply_code = 0;
        if (code >= 400 || c->state == C_DATA_BODY) {
            size_t skip = smtp_enhanced_code(full, c->fb_enhanced, sizeof c->fb_enhanced);
            c->fb_code = code;
            snprintf(c->fb_text, sizeof c->fb_text, "%s", full + skip);
        }
        struct bufferevent *before_bev = c->bev;
        if (c->state == C_TRANSACTION || c->state == C_DATA_BODY)
            smtpc_transaction_reply(c, code, full);
        else
            session_reply(c, code, full);
        free(full);
        /* the connection may be closed, moved to another address or upgraded to TLS: then
         * this bufferevent's input is no longer ours to read */
        if (c->closed || c->bev != before_bev) return;
    }
}

void smtpc_conn_event_cb(struct bufferevent *bev, short what, void *arg)
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
            SSL *ssl = bufferevent_openssl_get_ssl(c->bev);
            if (c->egress->tls_verify && SSL_get_verify_result(ssl) != X509_V_OK) {
                smtpc_set_error(c, 0, "4.7.5", "certificate of %s[%s] did not verify: %s",
                                c->mx_name, c->addr_text,
                                X509_verify_cert_error_string(SSL_get_verify_result(ssl)));
                log_warn("smtpc: %s", c->last_error);
                smtpc_conn_next_address(c);
                return;
            }
            c->state = C_EHLO;
            smtpc_set_timeout(c, smtpc_cfg->command_timeout);
            smtpc_send_line(c, "EHLO %s", helo_name(c));
            c->ext_pipelining = c->ext_starttls = c->ext_8bitmime = c->ext_smtputf8 = 0;
            c->ext_dsn = c->ext_auth_plain = c->ext_auth_login = 0;
            return;
        }
        return;
    }
    const char *why = (what & BEV_EVENT_TIMEOUT) ? "timeout"
                      : (what & BEV_EVENT_EOF)   ? "connection closed by the server"
                                                 : NULL;
    char sys[200];
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
        long vr = ssl && c->egress->tls_verify ? SSL_get_verify_result(ssl) : X509_V_OK;
        smtpc_set_error(c, 0, "4.7.5", "TLS handshake with %s[%s] failed: %s%s%s%s", c->mx_name,
                        c->addr_text, why, vr != X509_V_OK ? " (certificate did not verify: " : "",
                        vr != X509_V_OK ? X509_verify_cert_error_string(vr) : "",
                        vr != X509_V_OK ? ")" : "");
        log_warn("smtpc: %s", c->last_error);
        if (c->egress->tls != TLS_REQUIRED) {
            /* opportunistic TLS must not block mail: same address again, in plaintext */
            c->no_tls = 1;
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
    struct smtpc_conn *c = xcalloc(1, sizeof *c);
    c->dest = d;
    c->egress = d->egress;
    c->fd = -1;
    LIST_INSERT_HEAD(&smtpc_all, c, all_link);
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
    c->state = C_RESOLVE_MX;
    c->dnsq = dns_query(d->domain, DNS_TYPE_MX, smtpc_mx_resolved, c);
}

static int str_same(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static void tls_generation_free(struct smtpc_tls_generation *g)
{
    for (size_t i = 0; i < g->n_distinct; i++)
        SSL_CTX_free(g->distinct_ctx[i]);
    free(g->distinct_ctx);
    free(g->egress_ctx);
    free(g);
}

/* The client contexts of cfg's egresses, or NULL with err. */
static struct smtpc_tls_generation *tls_generation_new(const struct config *cfg, char *err,
                                                       size_t errlen)
{
    struct smtpc_tls_generation *g = xcalloc(1, sizeof *g);
    g->cfg = cfg;
    g->egress_ctx = xcalloc(cfg->n_egress ? cfg->n_egress : 1, sizeof *g->egress_ctx);
    g->distinct_ctx = xcalloc(cfg->n_egress ? cfg->n_egress : 1, sizeof *g->distinct_ctx);
    for (size_t i = 0; i < cfg->n_egress; i++) {
        const struct egress_conf *e = &cfg->egress[i];
        for (size_t j = 0; j < i && !g->egress_ctx[i]; j++) {
            const struct egress_conf *o = &cfg->egress[j];
            if (str_same(e->tls_ca_file, o->tls_ca_file) && str_same(e->tls_cert, o->tls_cert) &&
                str_same(e->tls_key, o->tls_key))
                g->egress_ctx[i] = g->egress_ctx[j];
        }
        if (g->egress_ctx[i]) continue;
        /* the system store is loaded for every context: verification is asked per egress */
        SSL_CTX *ctx = tls_client_context(e->tls_ca_file, 1, e->tls_cert, e->tls_key, err, errlen);
        if (!ctx) {
            tls_generation_free(g);
            return NULL;
        }
        g->egress_ctx[i] = g->distinct_ctx[g->n_distinct++] = ctx;
    }
    return g;
}

int smtpc_init(struct event_base *base, const struct config *cfg, char *err, size_t errlen)
{
    smtpc_base = base;
    smtpc_cfg = cfg;
    smtpc_graveyard_ev = event_new(base, -1, 0, bury_all, NULL);
    smtpc_tls = tls_generation_new(cfg, err, errlen);
    return smtpc_tls ? 0 : -1;
}

/* SIGHUP: new connections use cfg (egresses, timeouts, MX port, TLS files); open connections
 * finish with the egress they started with. Nothing changes when a client context cannot be
 * built (-1 with err). The caller keeps the old config alive until after smtpc_shutdown(). */
int smtpc_reload(const struct config *cfg, char *err, size_t errlen)
{
    struct smtpc_tls_generation *g = tls_generation_new(cfg, err, errlen);
    if (!g) return -1;
    g->older = smtpc_tls;
    smtpc_tls = g;
    smtpc_cfg = cfg;
    return 0;
}

void smtpc_shutdown(void)
{
    struct smtpc_conn *c;
    while ((c = LIST_FIRST(&smtpc_all))) {
        c->job = NULL; /* the queue is going away; the spool keeps the messages */
        smtpc_conn_close(c);
    }
    bury_all(-1, 0, NULL);
    if (smtpc_graveyard_ev) event_free(smtpc_graveyard_ev);
    smtpc_graveyard_ev = NULL;
    while (smtpc_tls) {
        struct smtpc_tls_generation *older = smtpc_tls->older;
        tls_generation_free(smtpc_tls);
        smtpc_tls = older;
    }
}
