/* smtpc_conn.c - the connection core of the SMTP client: allocating a connection, recording why
 * it failed, reading a plain socket (a sock_reader, not the bufferevent), writing lines (on a
 * plain socket one write per event, with no write interest registered unless the kernel did not
 * take everything), timeouts, handing an unfinished job back to its owner, and tearing the
 * connection down (freed later from the event loop, so callers up the stack may still look at
 * it). Calls nothing else in smtpc/: the session reaches it, not the other way round. Loop thread
 * only. */
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/x509_vfy.h>

#include "common/util.h"
#include "smtpc/smtpc_internal.h"
#include "tls/tls.h"

#define SMTPC_QUIT_WAIT_SECONDS 10

struct event_base *smtpc_base;
const struct config *smtpc_cfg;
const struct smtpc_owner *smtpc_owner;
static LIST_HEAD(, smtpc_conn) smtpc_all = LIST_HEAD_INITIALIZER(smtpc_all);
/* Closed connections wait here until the loop is back at the top (or shutdown). */
static LIST_HEAD(, smtpc_conn) smtpc_graveyard = LIST_HEAD_INITIALIZER(smtpc_graveyard);
static struct event *smtpc_graveyard_ev;
/* Plain connections with commands not yet written; see smtpc_output. */
static LIST_HEAD(, smtpc_conn) smtpc_flushq = LIST_HEAD_INITIALIZER(smtpc_flushq);
static struct event *smtpc_flush_ev;

static void flush_all(evutil_socket_t fd, short what, void *arg);

static void bury_all(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    struct smtpc_conn *c;
    while ((c = LIST_FIRST(&smtpc_graveyard))) {
        LIST_REMOVE(c, all_link);
        tls_policy_free(c->tls_policy);
        sts_policy_release(c->sts);
        free(c->hosts);
        free(c->addrs);
        free(c->expects);
        strbuf_free(&c->reply);
        if (c->reply_deadline) event_free(c->reply_deadline);
        free(c);
    }
}

struct smtpc_conn *smtpc_conn_new(struct dest *d, bufferevent_data_cb on_read,
                                  bufferevent_event_cb on_event)
{
    if (!smtpc_graveyard_ev) smtpc_graveyard_ev = event_new(smtpc_base, -1, 0, bury_all, NULL);
    if (!smtpc_flush_ev) smtpc_flush_ev = event_new(smtpc_base, -1, 0, flush_all, NULL);
    struct smtpc_conn *c = xcalloc(1, sizeof *c);
    c->dest = d;
    c->egress = d->egress;
    c->on_read = on_read;
    c->on_event = on_event;
    c->fd = -1;
    LIST_INSERT_HEAD(&smtpc_all, c, all_link);
    return c;
}

/* --- failures -------------------------------------------------------------------------------- */

void smtpc_set_error(struct smtpc_conn *c, int code, const char *enh, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->last_error, sizeof c->last_error, fmt, ap);
    va_end(ap);
    c->last_error_code = code;
    if (c->pinned && (code == 0 || code < 500)) c->pinned_temp = 1;
    snprintf(c->last_error_enh, sizeof c->last_error_enh, "%s", enh);
}

const char *smtpc_tls_failure_type(long verify_result)
{
    switch (verify_result) {
    case X509_V_OK:
        return "validation-failure"; /* the handshake itself failed */
    case X509_V_ERR_HOSTNAME_MISMATCH:
        return "certificate-host-mismatch";
    case X509_V_ERR_CERT_HAS_EXPIRED:
    case X509_V_ERR_CERT_NOT_YET_VALID:
        return "certificate-expired";
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    case X509_V_ERR_CERT_UNTRUSTED:
        return "certificate-not-trusted";
    default:
        return "validation-failure";
    }
}

void smtpc_fill_info(struct smtpc_conn *c, struct attempt_info *info)
{
    memset(info, 0, sizeof *info);
    info->remote_mx = c->mx_name[0] ? c->mx_name : NULL;
    info->remote_addr = c->addr_text[0] ? c->addr_text : NULL;
    info->source_addr = c->source_text[0] ? c->source_text : NULL;
    if (c->tls && c->bev) tls_describe(c->bev, &info->tls_version, &info->tls_cipher);
    if (c->tls_policy) {
        info->tls_policy = tls_policy_level_name(c->tls_policy);
        info->tls_policy_source = c->tls_policy->source;
        if (c->tls_policy->policy_domain[0]) info->tls_policy_domain = c->tls_policy->policy_domain;
        info->tls_policy_string = c->tls_policy->policy_string;
    }
    info->tls_failure = c->tls_failure;
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
    smtpc_owner->job_done(j, &info);
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
    smtpc_owner->failed(c->dest, &why, &info);
}

/* --- the socket ------------------------------------------------------------------------------ */

/* A plain connection's sock_reader: new input, or why reading ended, to the session's handlers
 * as from the bufferevent. */
static void conn_reader_cb(void *arg, short what)
{
    struct smtpc_conn *c = arg;
    if (what)
        c->on_event(c->bev, what, c);
    else
        c->on_read(c->bev, c);
}

/* A plain bufferevent's events (connected; write errors and timeouts): reading starts once
 * connected, before the session hears of it. */
static void conn_plain_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct smtpc_conn *c = arg;
    if ((what & BEV_EVENT_CONNECTED) && c->reader) sock_reader_start(c->reader);
    c->on_event(bev, what, c);
}

void smtpc_conn_attach(struct smtpc_conn *c, struct bufferevent *bev, int64_t timeout_seconds)
{
    sock_reader_free(c->reader); /* the plain socket's, when this is its STARTTLS */
    c->reader = NULL;
    c->bev = bev;
    if (!bufferevent_openssl_get_ssl(bev))
        c->reader = sock_reader_new(smtpc_base, c->fd, bev, conn_reader_cb, c);
    if (c->reader) {
        bufferevent_setcb(c->bev, NULL, NULL, conn_plain_event_cb, c);
        smtpc_set_timeout(c, timeout_seconds);
        bufferevent_enable(c->bev, EV_WRITE); /* connecting */
        return;
    }
    bufferevent_setcb(c->bev, c->on_read, NULL, c->on_event, c);
    smtpc_set_timeout(c, timeout_seconds);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

void smtpc_conn_forget_extensions(struct smtpc_conn *c)
{
    c->ext_pipelining = c->ext_starttls = c->ext_8bitmime = c->ext_smtputf8 = c->ext_dsn = 0;
    c->ext_auth_plain = c->ext_auth_login = c->ext_chunking = c->ext_requiretls = 0;
    c->ext_size = 0;
}

static void unqueue_flush(struct smtpc_conn *c)
{
    if (!c->flush_queued) return;
    c->flush_queued = 0;
    LIST_REMOVE(c, flush_link);
}

void smtpc_conn_drop_socket(struct smtpc_conn *c)
{
    unqueue_flush(c);
    sock_reader_free(c->reader); /* off the fd before it is closed */
    c->reader = NULL;
    if (c->bev) {
        if (c->tls) {
            SSL *ssl = bufferevent_openssl_get_ssl(c->bev);
            if (ssl) SSL_shutdown(ssl);
            bufferevent_free(c->bev); /* owns the fd */
        } else {
            /* Inside the bufferevent's own callback its freeing is deferred: take its events
             * off the fd first, so nothing touches the fd after it is closed (and perhaps
             * reused by the next connection's socket). */
            bufferevent_disable(c->bev, EV_READ | EV_WRITE);
            bufferevent_free(c->bev);
            if (c->fd >= 0) evutil_closesocket(c->fd);
        }
    } else if (c->fd >= 0) {
        evutil_closesocket(c->fd);
    }
    c->bev = NULL;
    c->fd = -1;
    c->tls = 0;
    c->tls_verified = 0;
    strbuf_reset(&c->reply); /* a reply half read from this server is none of the next one's */
    c->reply_code = 0;
    if (c->reply_deadline) evtimer_del(c->reply_deadline);
    c->reply_late = 0;
}

/* Tears the connection down now; the struct itself is freed from the event loop later, so
 * callers up the stack may still look at c->closed. */
void smtpc_conn_close(struct smtpc_conn *c)
{
    if (c->closed) return;
    c->closed = 1;
    if (c->pinned && !c->job) { /* handed back with the connection's error, to be tried again */
        c->job = c->pinned;
        c->pinned = NULL;
    }
    job_abort(c);
    if (c->state == C_IDLE) LIST_REMOVE(c, idle_link);
    LIST_REMOVE(c, all_link);
    if (c->dnsq) dns_cancel(c->dnsq);
    c->dnsq = NULL;
    sts_cancel(c->stsq);
    c->stsq = NULL;
    if (c->idle_timer) event_free(c->idle_timer);
    c->idle_timer = NULL;
    smtpc_conn_drop_socket(c);
    if (c->working) smtpc_owner->working_closed(c->dest);
    LIST_INSERT_HEAD(&smtpc_graveyard, c, all_link);
    event_active(smtpc_graveyard_ev, EV_TIMEOUT, 0);
    smtpc_owner->connection_closed(c->dest);
}

void smtpc_conn_close_all(void)
{
    struct smtpc_conn *c;
    while ((c = LIST_FIRST(&smtpc_all))) {
        /* the queue is going away (the spool keeps the messages): the jobs are not handed back */
        smtpc_job_free(c->job);
        smtpc_job_free(c->pinned);
        c->job = c->pinned = NULL;
        smtpc_conn_close(c);
    }
    bury_all(-1, 0, NULL);
    if (smtpc_graveyard_ev) event_free(smtpc_graveyard_ev);
    smtpc_graveyard_ev = NULL;
    if (smtpc_flush_ev) event_free(smtpc_flush_ev);
    smtpc_flush_ev = NULL;
}

/* --- writing --------------------------------------------------------------------------------- */

/* A plain connection's write interest is off while its output is empty (turning it off then
 * costs no system call: the bufferevent has already taken it off the socket), so adding a
 * command registers nothing; flush_all writes it once the current event is over. While the
 * socket is connecting the bufferevent needs EV_WRITE, and TLS connections write through
 * bufferevent_openssl as before. */
struct evbuffer *smtpc_output(struct smtpc_conn *c)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    if (c->tls || c->state == C_CONNECTING || !smtpc_flush_ev) return out;
    if (evbuffer_get_length(out) == 0 && (bufferevent_get_enabled(c->bev) & EV_WRITE))
        bufferevent_disable(c->bev, EV_WRITE);
    if (!c->flush_queued) {
        c->flush_queued = 1;
        LIST_INSERT_HEAD(&smtpc_flushq, c, flush_link);
        event_active(smtpc_flush_ev, EV_TIMEOUT, 0);
    }
    return out;
}

/* One non-blocking write per connection; what the kernel does not take (or an error) is left
 * to the bufferevent, with EV_WRITE on until smtpc_output finds the output empty again. */
static void flush_all(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    struct smtpc_conn *c;
    while ((c = LIST_FIRST(&smtpc_flushq))) {
        unqueue_flush(c);
        if (c->closed || c->tls || !c->bev || (bufferevent_get_enabled(c->bev) & EV_WRITE))
            continue;
        struct evbuffer *out = bufferevent_get_output(c->bev);
        if (evbuffer_get_length(out) > 0) {
            /* the bufferevent keeps the output's start frozen outside its own write callback */
            evbuffer_unfreeze(out, 1);
            evbuffer_write(out, c->fd);
            evbuffer_freeze(out, 1);
        }
        if (evbuffer_get_length(out) > 0) bufferevent_enable(c->bev, EV_WRITE);
    }
}

void smtpc_send_line(struct smtpc_conn *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    struct evbuffer *out = smtpc_output(c);
    evbuffer_add_vprintf(out, fmt, ap);
    evbuffer_add(out, "\r\n", 2);
    va_end(ap);
}

void smtpc_send_quit(struct smtpc_conn *c)
{
    c->state = C_QUIT;
    smtpc_send_line(c, "QUIT");
    smtpc_set_timeout(c, SMTPC_QUIT_WAIT_SECONDS);
}

void smtpc_quit_done(struct smtpc_conn *c)
{
    if (c->pinned)
        smtpc_conn_next_address(c);
    else
        smtpc_conn_close(c);
}

void smtpc_pinned_exhausted(struct smtpc_conn *c)
{
    struct job *j = c->pinned;
    c->pinned = NULL;
    if (c->pinned_temp) {
        char text[sizeof c->pinned_why + sizeof c->last_error + 40];
        snprintf(text, sizeof text, "%s; %s", c->pinned_why, c->last_error);
        smtpc_job_fail_all(j, 0, c->last_error_enh[0] ? c->last_error_enh : "4.4.1", text);
    } else {
        char text[sizeof c->pinned_why + 60];
        snprintf(text, sizeof text, "%s; no other MX host offers it either", c->pinned_why);
        smtpc_job_fail_all(j, 550, "5.7.30", text);
    }
    struct attempt_info info;
    smtpc_fill_info(c, &info);
    smtpc_owner->job_done(j, &info);
    smtpc_conn_close(c);
}

void smtpc_set_timeout(struct smtpc_conn *c, int64_t seconds)
{
    struct timeval tv = {.tv_sec = seconds};
    c->timeout_s = seconds;
    bufferevent_set_timeouts(c->bev, &tv, &tv);
    if (c->reader) sock_reader_set_timeout(c->reader, &tv);
}
