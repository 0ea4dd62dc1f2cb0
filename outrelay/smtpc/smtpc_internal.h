/* smtpc_internal.h - INTERNAL to smtpc/: what the SMTP client's files share. Calls go one way:
 * the session (smtpc.c) drives resolution and connecting (smtpc_resolve.c) and transactions
 * (smtpc_transaction.c); all three use the connection core (smtpc_conn.c), which calls none of
 * them (it reaches the session only through the callbacks a connection carries); the bottom is
 * smtpc_job.c. Nothing in smtpc/ names the queue manager: jobs go back through smtpc_owner, the
 * callbacks given to smtpc_init(). Nothing outside
 * smtpc/ includes this; the API is smtpc.h. The core owns every struct smtpc_conn
 * (smtpc_conn_new allocates it, smtpc_conn_close tears it down, the event loop frees it later).
 * Loop thread only. */
#ifndef OUTRELAY_SMTPC_INTERNAL_H
#define OUTRELAY_SMTPC_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

#include <event2/bufferevent.h>
#include <event2/event.h>

#include "common/sock_reader.h"
#include "common/strbuf.h"
#include "common/util.h"
#include "config/config.h"
#include "dns/dns.h"
#include "smtpc/smtpc.h"
#include "smtpc/smtpc_job.h"
#include "smtpc/tls_policy.h"
#include "sts/sts.h"

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

/* EXPECT_BDAT: a chunk but the last (RFC 3030); the LAST one is answered as EXPECT_BODY */
enum expect { EXPECT_MAIL, EXPECT_RCPT, EXPECT_DATA, EXPECT_BDAT, EXPECT_BODY, EXPECT_RSET };

struct smtpc_conn {
    LIST_ENTRY(smtpc_conn) idle_link;
    LIST_ENTRY(smtpc_conn) all_link;
    struct dest *dest;
    int working; /* reached a transaction once; counted in dest->working */
    const struct egress_conf *egress;
    struct tls_policy *tls_policy; /* for the current host; what every TLS decision reads */
    /* the session's handlers for the connection's bufferevent (smtpc_conn_attach) */
    bufferevent_data_cb on_read;
    bufferevent_event_cb on_event;
    enum conn_state state;
    /* TLS connections read and write through it; plain ones only write (reader reads) */
    struct bufferevent *bev;
    /* plain connections: reads the socket into bev's input, one readv per readiness, from
     * the moment the connect completes */
    struct sock_reader *reader;
    evutil_socket_t fd;
    struct dns_query *dnsq;
    struct sts_lookup *stsq;    /* the MTA-STS lookup before the MX lookup, or NULL */
    struct mta_sts_policy *sts; /* the domain's MTA-STS policy (a reference), or NULL */
    const char *sts_failure;    /* why a published policy could not be had (RFC 8460), or NULL */
    struct event *idle_timer;

    /* candidates */
    struct mx_host *hosts;
    size_t n_hosts, host_i;
    struct sockaddr_any *addrs;
    size_t n_addrs, addr_i;
    int aaaa_done;
    int any_tempfail;
    int tries;       /* addresses connected to by this connection (a plaintext retry not counted) */
    int mx_secure;   /* the MX answer was DNSSEC-validated (an implicit MX: the domain's) */
    int addr_secure; /* every address answer of the current host was DNSSEC-validated */
    int no_tls;      /* this address in plaintext: its optional handshake failed */
    int retry_plain; /* the next address tried is the same one again, in plaintext */

    /* current server */
    char mx_name[256];
    char addr_text[64];
    char source_text[64];
    int tls;
    /* why TLS failed with the current server, as an RFC 8460 result type
     * ("starttls-not-supported", "certificate-host-mismatch", ...), or NULL; static text */
    const char *tls_failure;
    int tls_verified; /* the server's certificate verified for the MX name (or policy names) */
    int ext_pipelining, ext_starttls, ext_8bitmime, ext_smtputf8, ext_dsn, ext_auth_plain,
        ext_auth_login, ext_chunking, ext_requiretls;
    int64_t ext_size;
    int messages;
    char last_error[480];
    int last_error_code;
    char last_error_enh[16];

    /* reply being read */
    struct strbuf reply;
    int reply_code;
    /* A reply, once its first byte is in, must be complete within timeout_s (the per-read
     * timeout alone never ends a server that trickles a byte at a time); reply_late: it was
     * not. */
    struct event *reply_deadline;
    int64_t timeout_s;
    int reply_late;

    /* transaction */
    struct job *job;
    /* A REQUIRETLS job this server could not take (RFC 8689 section 4.2.1): the connection
     * says QUIT and carries it on to the next address or MX host, where it is offered first.
     * pinned_why is the first refusal; pinned_temp: a later candidate failed in a way that may
     * pass (then the job is deferred, not bounced, once no candidate is left). */
    struct job *pinned;
    char pinned_why[400];
    int pinned_temp;
    int carried; /* this server took a carried job: no other job goes to it (it is not the
                  * preferred MX); the connection leaves after that job */
    int64_t job_started_us;
    enum expect *expects;
    size_t n_expects, expect_i, sent_i; /* replies read / commands sent (non-pipelined) */
    int rcpt_i;
    int accepted;
    int got_354;
    int bdat;        /* this transaction sends BDAT chunks instead of DATA */
    int bdat_failed; /* a chunk was refused: RSET once the replies are in */
    int closed;
    /* plain connections: commands wait in the output until the event that made them ends, then
     * go out in one write (smtpc_conn.c, smtpc_output) */
    int flush_queued;
    LIST_ENTRY(smtpc_conn) flush_link;
    /* the receiver's last telling reply, for the shaping rules */
    int fb_code;
    char fb_enhanced[16];
    char fb_text[256];
};

/* smtpc_conn.c: the connection core. smtpc_base, smtpc_cfg and smtpc_owner are set by
 * smtpc_init() and smtpc_reload() (new connections use the newest config). */
extern struct event_base *smtpc_base;
extern const struct config *smtpc_cfg;
extern const struct smtpc_owner *smtpc_owner;

/* A connection for d with the session's handlers; the caller starts it. */
struct smtpc_conn *smtpc_conn_new(struct dest *d, bufferevent_data_cb on_read,
                                  bufferevent_event_cb on_event);
void smtpc_set_error(struct smtpc_conn *c, int code, const char *enh, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* The RFC 8460 result type (section 4.3) for a failed handshake whose verification ended with
 * verify_result (X509_V_OK when verification was not the reason). Static text. */
const char *smtpc_tls_failure_type(long verify_result);
void smtpc_fill_info(struct smtpc_conn *c, struct attempt_info *info);
/* Nothing could be connected to: fails the destination's waiting jobs (see smtpc_conn.c). */
void smtpc_fail_destination(struct smtpc_conn *c);
/* Makes bev (plaintext or TLS, over c->fd) the connection's, with the session's handlers and
 * the given timeout, reading and writing (a plaintext bev only writes: a sock_reader reads for
 * it once it reports BEV_EVENT_CONNECTED, and the session's handlers see no difference). */
void smtpc_conn_attach(struct smtpc_conn *c, struct bufferevent *bev, int64_t timeout_seconds);
/* A new server, or the same after STARTTLS: what its EHLO offered no longer holds. */
void smtpc_conn_forget_extensions(struct smtpc_conn *c);
void smtpc_conn_drop_socket(struct smtpc_conn *c);
/* Tears the connection down now; the struct itself is freed from the event loop later. */
void smtpc_conn_close(struct smtpc_conn *c);
/* Closes every connection without handing their jobs back (shutdown). */
void smtpc_conn_close_all(void);
void smtpc_send_line(struct smtpc_conn *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* The connection's output, for a command or message data to be added to it now: on a plain
 * connection it is written in one write once the current event is over. */
struct evbuffer *smtpc_output(struct smtpc_conn *c);
/* QUIT, and the connection closes on the reply or after a short wait (or, carrying a pinned
 * job, goes on to the next address: smtpc_quit_done). */
void smtpc_send_quit(struct smtpc_conn *c);
void smtpc_quit_done(struct smtpc_conn *c);
/* No address or MX host is left for the pinned job: it goes back to the queue, bounced with
 * 5.7.30 when every server refused it, else deferred; the connection closes. The destination
 * is not failed: its other mail goes on. */
void smtpc_pinned_exhausted(struct smtpc_conn *c);
void smtpc_set_timeout(struct smtpc_conn *c, int64_t seconds);

/* smtpc_resolve.c: MX and address resolution, connecting */
void smtpc_resolve_mx(struct smtpc_conn *c);
void smtpc_resolve_next_host(struct smtpc_conn *c);
/* Connects to the next address of the current host, or resolves the next host. */
void smtpc_conn_next_address(struct smtpc_conn *c);
/* At most this many addresses are tried per connection, over all MX hosts (RFC 5321 section
 * 5.1 leaves the number to the client): a domain publishing hundreds of unreachable MX hosts
 * must not hold a connection for hours of connect timeouts. */
#define SMTPC_MAX_ADDRESSES 5
/* Another address or MX host is left to try. */
int smtpc_more_candidates(const struct smtpc_conn *c);

/* smtpc_transaction.c: one job on an open connection. Both return what the session does next:
 * TRANSACTION_GOES_ON (wait for more replies; the connection may also have been closed or sent
 * QUIT) or TRANSACTION_READY (the job is back with the queue; the connection is free for
 * the next). */
enum transaction_next { TRANSACTION_GOES_ON, TRANSACTION_READY };
/* Starts c->job (taken from the queue). */
enum transaction_next smtpc_start_transaction(struct smtpc_conn *c);
/* One complete reply during a transaction. */
enum transaction_next smtpc_transaction_reply(struct smtpc_conn *c, int code, const char *text);

#endif
