/* smtpc_internal.h - INTERNAL to deliver/: what the SMTP client's files share (smtpc.c,
 * smtpc_resolve.c, smtpc_transaction.c). Nothing outside deliver/ includes it; the API is
 * delivery.h. smtpc.c owns every struct smtpc_conn (smtpc_open allocates it, smtpc_conn_close
 * tears it down, the event loop frees it later). Loop thread only. */
#ifndef OUTRELAY_SMTPC_INTERNAL_H
#define OUTRELAY_SMTPC_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

#include <event2/bufferevent.h>
#include <event2/event.h>

#include "common/strbuf.h"
#include "common/util.h"
#include "config/config.h"
#include "qmgr/delivery.h"
#include "dns/dns.h"

enum conn_state {
    C_RESOLVE_MX,
    C_RESOLVE_HOST,
    C_CONNECTING,
    C_GREETING,
    C_EHLO,
    C_HELO,
    C_STARTTLS,
    C_TLS_HANDSHAKE,
    C_AUTH,
    C_AUTH_LOGIN_USER, /* AUTH LOGIN sent, waiting for the username prompt */
    C_AUTH_LOGIN_PASS, /* username sent, waiting for the password prompt */
    C_IDLE,
    C_TRANSACTION,
    C_DATA_BODY,
    C_QUIT,
};

struct mx_host {
    char name[256];
    int preference;
};

enum expect { EXPECT_MAIL, EXPECT_RCPT, EXPECT_DATA, EXPECT_BODY, EXPECT_RSET };

struct smtpc_conn {
    LIST_ENTRY(smtpc_conn) idle_link;
    LIST_ENTRY(smtpc_conn) all_link;
    struct dest *dest;
    int working; /* reached a transaction once; counted in dest->working */
    const struct egress_conf *egress;
    enum conn_state state;
    struct bufferevent *bev;
    evutil_socket_t fd;
    struct dns_query *dnsq;
    struct event *idle_timer;

    /* candidates */
    struct mx_host *hosts;
    size_t n_hosts, host_i;
    struct sockaddr_any *addrs;
    size_t n_addrs, addr_i;
    int aaaa_done;
    int any_tempfail;
    int no_tls; /* retrying this address in plaintext after a failed optional handshake */

    /* current server */
    char mx_name[256];
    char addr_text[64];
    char source_text[64];
    int tls;
    int ext_pipelining, ext_starttls, ext_8bitmime, ext_smtputf8, ext_dsn, ext_auth_plain,
        ext_auth_login;
    int64_t ext_size;
    int messages;
    char last_error[480];
    int last_error_code;
    char last_error_enh[16];

    /* reply being read */
    struct strbuf reply;
    int reply_code;

    /* transaction */
    struct job *job;
    int64_t job_started_us;
    enum expect *expects;
    size_t n_expects, expect_i, sent_i; /* replies read / commands sent (non-pipelined) */
    int rcpt_i;
    int accepted;
    int got_354;
    int closed;
    /* the receiver's last telling reply, for the shaping rules */
    int fb_code;
    char fb_enhanced[16];
    char fb_text[256];
};

/* smtpc.c: set by smtpc_init() */
extern struct event_base *smtpc_base;
extern const struct config *smtpc_cfg;

/* smtpc.c: failures, teardown, writing, the session */
void smtpc_set_error(struct smtpc_conn *c, int code, const char *enh, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void smtpc_fill_info(struct smtpc_conn *c, struct attempt_info *info);
/* Nothing could be connected to: fails the destination's waiting jobs (see smtpc.c). */
void smtpc_fail_destination(struct smtpc_conn *c);
void smtpc_conn_drop_socket(struct smtpc_conn *c);
/* Tears the connection down now; the struct itself is freed from the event loop later. */
void smtpc_conn_close(struct smtpc_conn *c);
void smtpc_send_line(struct smtpc_conn *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void smtpc_set_timeout(struct smtpc_conn *c, int64_t seconds);
/* Ready for a transaction: take the next job, or wait idle a little, or leave. */
void smtpc_conn_ready(struct smtpc_conn *c);
void smtpc_conn_read_cb(struct bufferevent *bev, void *arg);
void smtpc_conn_event_cb(struct bufferevent *bev, short what, void *arg);

/* smtpc_resolve.c: MX and address resolution, connecting */
void smtpc_mx_resolved(void *arg, const struct dns_answer *a);
void smtpc_resolve_next_host(struct smtpc_conn *c);
/* Connects to the next address of the current host, or resolves the next host. */
void smtpc_conn_next_address(struct smtpc_conn *c);

/* smtpc_transaction.c: one job on an open connection */
void smtpc_start_transaction(struct smtpc_conn *c);
/* One complete reply during a transaction. */
void smtpc_transaction_reply(struct smtpc_conn *c, int code, const char *text);

#endif
