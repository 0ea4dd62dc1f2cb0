/* cluster.c - the one connection of this instance to the shared Redis server; see cluster.h.
 * A bufferevent (plain, or OpenSSL through tls/) carries commands that hiredis encodes
 * (redisFormatCommandArgv) and replies that hiredis decodes (redisReader); replies come back in
 * order, so pending callbacks are a FIFO. One timer drives reconnection (exponential, capped,
 * jittered), the command timeout and the heartbeat. Started and stopped by main.c; used by
 * cluster_dedup.c and control/. Loop thread only. */
#include "cluster/cluster.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <hiredis/hiredis.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>

#include "common/clock.h"
#include "common/json.h"
#include "common/log.h"
#include "common/util.h"
#include "records/records.h"
#include "tls/tls.h"

#define TICK_MS 100
#define HEARTBEAT_EVERY_S 5
#define HEARTBEAT_TTL_S 20
#define STABLE_MS 10000 /* a connection that lived this long starts the backoff afresh */
#define SUBSCRIBERS_MAX 8

struct pending {
    cluster_reply_fn cb;
    void *arg;
    int64_t sent_ms;
    TAILQ_ENTRY(pending) link;
};
TAILQ_HEAD(pending_list, pending);

enum conn_state { CONN_IDLE, CONN_CONNECTING, CONN_HANDSHAKE, CONN_READY };
enum health { HEALTH_UNKNOWN, HEALTH_UP, HEALTH_DOWN };

static struct {
    int configured, stopping;
    struct event_base *base;
    char *addr, *instance, *prefix, *user, *password;
    int db;
    SSL_CTX *ssl_ctx;
    int64_t timeout_ms;
    struct bufferevent *bev;
    redisReader *reader;
    enum conn_state state;
    unsigned generation; /* bumped on every close: a callback can tell its connection is gone */
    struct pending_list pending;
    size_t handshake_left;
    struct event *timer;
    int64_t connect_at_ms, connect_started_ms, ready_at_ms, backoff_ms;
    enum health health;
    int64_t down_since;
    int instances_seen, counting;
    int64_t next_heartbeat_ms;
    uint64_t errors;
    char last_error[256];
    struct {
        void (*fn)(void *arg, int up);
        void *arg;
    } subscribers[SUBSCRIBERS_MAX];
    size_t n_subscribers;
} C;

/* Timeouts and backoff run on the monotonic clock: an injected calendar jump is no timeout. */
static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void set_health(enum health h)
{
    if (C.health == h) return;
    enum health before = C.health;
    C.health = h;
    char detail[512];
    if (h == HEALTH_DOWN) {
        C.down_since = clock_now();
        snprintf(detail, sizeof detail,
                 "instance %s: redis %s unreachable (%s); %d instance%s seen", C.instance, C.addr,
                 C.last_error[0] ? C.last_error : "no connection", C.instances_seen,
                 C.instances_seen == 1 ? "" : "s");
        log_warn("cluster: %s; relaying on local state", detail);
    } else {
        C.down_since = 0;
        snprintf(detail, sizeof detail, "instance %s: redis %s reachable; %d instance%s seen",
                 C.instance, C.addr, C.instances_seen, C.instances_seen == 1 ? "" : "s");
        log_info("cluster: %s", detail);
    }
    /* the first success at start is no news worth a record; every change after it is */
    if (!(before == HEALTH_UNKNOWN && h == HEALTH_UP)) {
        struct record_event ev = {.type = RECORD_CLUSTER,
                                  .queue_id = "-",
                                  .action = h == HEALTH_UP ? "up" : "down",
                                  .detail = detail};
        records_emit(&ev);
    }
    for (size_t i = 0; i < C.n_subscribers; i++)
        C.subscribers[i].fn(C.subscribers[i].arg, h == HEALTH_UP);
}

/* Closes the connection, fails what was pending, schedules the next try. */
static void conn_fail(const char *why)
{
    if (C.state == CONN_IDLE) return;
    /* a connection that was ready for a while ends a streak of failures; one that fails
     * right after its handshake (a flapping server) keeps the backoff growing */
    if (C.state == CONN_READY && mono_ms() - C.ready_at_ms >= STABLE_MS) C.backoff_ms = 0;
    snprintf(C.last_error, sizeof C.last_error, "%s", why);
    if (C.bev) bufferevent_free(C.bev);
    C.bev = NULL;
    if (C.reader) redisReaderFree(C.reader);
    C.reader = NULL;
    C.state = CONN_IDLE;
    C.generation++;
    C.counting = 0;
    C.errors++;
    unsigned r = 0;
    if (getrandom(&r, sizeof r, GRND_NONBLOCK) != sizeof r) r = (unsigned)mono_ms();
    int64_t wait = cluster_backoff(&C.backoff_ms, r);
    C.connect_at_ms = mono_ms() + wait;
    struct pending_list failed;
    TAILQ_INIT(&failed);
    TAILQ_CONCAT(&failed, &C.pending, link);
    if (!C.stopping) set_health(HEALTH_DOWN); /* stopping is no outage */
    struct pending *p;
    while ((p = TAILQ_FIRST(&failed))) {
        TAILQ_REMOVE(&failed, p, link);
        if (p->cb) {
            C.errors++;
            p->cb(p->arg, NULL);
        }
        free(p);
    }
}

static int send_raw(int argc, const char **argv, const size_t *argvlen, cluster_reply_fn cb,
                    void *arg)
{
    char *cmd = NULL;
    int len = redisFormatCommandArgv(&cmd, argc, argv, argvlen);
    if (len < 0) return -1;
    bufferevent_write(C.bev, cmd, (size_t)len);
    redisFreeCommand(cmd);
    struct pending *p = xcalloc(1, sizeof *p);
    p->cb = cb;
    p->arg = arg;
    p->sent_ms = mono_ms();
    TAILQ_INSERT_TAIL(&C.pending, p, link);
    return 0;
}

int cluster_cmd(int argc, const char **argv, const size_t *argvlen, cluster_reply_fn cb, void *arg)
{
    if (C.state != CONN_READY) return -1;
    return send_raw(argc, argv, argvlen, cb, arg);
}

/* --- heartbeat and the count of instances ---------------------------------------------------- */

static void count_reply(void *arg, const redisReply *r);

static void count_next(const char *cursor)
{
    char match[300];
    snprintf(match, sizeof match, "%s:instance:*", C.prefix);
    const char *argv[] = {"SCAN", cursor, "MATCH", match, "COUNT", "1000"};
    if (cluster_cmd(6, argv, NULL, count_reply, NULL) < 0) C.counting = 0;
}

static int counted;
static void count_reply(void *arg, const redisReply *r)
{
    (void)arg;
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_ARRAY) {
        C.counting = 0;
        return;
    }
    counted += (int)r->element[1]->elements;
    if (strcmp(r->element[0]->str, "0") != 0) {
        count_next(r->element[0]->str);
        return;
    }
    C.instances_seen = counted > 0 ? counted : 1;
    C.counting = 0;
}

static void heartbeat(void)
{
    char key[300], value[64], ttl[16];
    cluster_key_instance(C.prefix, C.instance, key, sizeof key);
    snprintf(value, sizeof value, "%lld", (long long)clock_now());
    snprintf(ttl, sizeof ttl, "%d", HEARTBEAT_TTL_S);
    const char *argv[] = {"SET", key, value, "EX", ttl};
    cluster_cmd(5, argv, NULL, NULL, NULL);
    if (!C.counting) {
        C.counting = 1;
        counted = 0;
        count_next("0");
    }
}

/* --- the connection -------------------------------------------------------------------------- */

static void handshake_reply(void *arg, const redisReply *r)
{
    (void)arg;
    if (!r) return;
    if (r->type == REDIS_REPLY_ERROR) {
        char why[300];
        snprintf(why, sizeof why, "%s", r->str);
        log_error("cluster: redis %s refused us: %s", C.addr, why);
        conn_fail(why);
        return;
    }
    if (--C.handshake_left > 0) return;
    C.state = CONN_READY;
    C.ready_at_ms = mono_ms();
    C.last_error[0] = '\0';
    C.next_heartbeat_ms = 0;
    heartbeat();
    set_health(HEALTH_UP);
}

static void on_read(struct bufferevent *bev, void *arg)
{
    (void)arg;
    unsigned gen = C.generation;
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t n;
    while ((n = evbuffer_get_length(in)) > 0) {
        size_t chunk = n > 65536 ? 65536 : n;
        unsigned char *data = evbuffer_pullup(in, (ev_ssize_t)chunk);
        if (redisReaderFeed(C.reader, (const char *)data, chunk) != REDIS_OK) {
            conn_fail("reply buffer error");
            return;
        }
        evbuffer_drain(in, chunk);
    }
    for (;;) {
        void *reply = NULL;
        if (redisReaderGetReply(C.reader, &reply) != REDIS_OK) {
            conn_fail("protocol error in a reply");
            return;
        }
        if (!reply) return;
        struct pending *p = TAILQ_FIRST(&C.pending);
        if (!p) {
            freeReplyObject(reply);
            conn_fail("a reply nobody asked for");
            return;
        }
        TAILQ_REMOVE(&C.pending, p, link);
        const redisReply *r = reply;
        if (r->type == REDIS_REPLY_ERROR) {
            C.errors++;
            log_warn("cluster: redis answered %s", r->str);
        }
        if (p->cb) p->cb(p->arg, r);
        free(p);
        freeReplyObject(reply);
        if (gen != C.generation) return; /* the callback closed the connection */
    }
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    (void)arg;
    if (what & BEV_EVENT_CONNECTED) {
        C.state = CONN_HANDSHAKE;
        C.handshake_left = 0;
        char db[16];
        snprintf(db, sizeof db, "%d", C.db);
        if (C.password && C.user) {
            const char *argv[] = {"AUTH", C.user, C.password};
            send_raw(3, argv, NULL, handshake_reply, NULL);
            C.handshake_left++;
        } else if (C.password) {
            const char *argv[] = {"AUTH", C.password};
            send_raw(2, argv, NULL, handshake_reply, NULL);
            C.handshake_left++;
        }
        if (C.db) {
            const char *argv[] = {"SELECT", db};
            send_raw(2, argv, NULL, handshake_reply, NULL);
            C.handshake_left++;
        }
        const char *argv[] = {"PING"};
        send_raw(1, argv, NULL, handshake_reply, NULL);
        C.handshake_left++;
        return;
    }
    char why[300];
    if (what & BEV_EVENT_EOF)
        snprintf(why, sizeof why, "connection closed by redis");
    else if (C.ssl_ctx && bufferevent_openssl_get_ssl(C.bev) &&
             SSL_get_verify_result(bufferevent_openssl_get_ssl(C.bev)) != X509_V_OK)
        snprintf(why, sizeof why, "TLS: redis's certificate does not verify: %s",
                 X509_verify_cert_error_string(
                     SSL_get_verify_result(bufferevent_openssl_get_ssl(C.bev))));
    else if (C.ssl_ctx && bufferevent_get_openssl_error(C.bev))
        snprintf(why, sizeof why, "TLS: %s", tls_error_string(C.bev));
    else
        snprintf(why, sizeof why, "%s",
                 strerror(EVUTIL_SOCKET_ERROR() ? EVUTIL_SOCKET_ERROR() : ECONNRESET));
    conn_fail(why);
}

static void conn_start(void)
{
    struct sockaddr_storage ss;
    socklen_t len;
    memset(&ss, 0, sizeof ss);
    char host[256] = "";
    if (strncmp(C.addr, "unix:", 5) == 0) {
        struct sockaddr_un *un = (struct sockaddr_un *)&ss;
        un->sun_family = AF_UNIX;
        snprintf(un->sun_path, sizeof un->sun_path, "%s", C.addr + 5);
        len = sizeof *un;
    } else {
        struct sockaddr_any a;
        if (util_parse_hostport(C.addr, 6379, &a) < 0) return; /* checked by the loader */
        memcpy(&ss, &a.ss, a.len);
        len = a.len;
        util_format_addr(&a, 0, host, sizeof host);
    }
    C.reader = redisReaderCreate();
    if (C.ssl_ctx) {
        SSL *ssl = SSL_new(C.ssl_ctx);
        SSL_set_verify(ssl, SSL_VERIFY_PEER, NULL);
        if (host[0]) X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host);
        C.bev = bufferevent_openssl_socket_new(C.base, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
                                               BEV_OPT_CLOSE_ON_FREE);
    } else {
        C.bev = bufferevent_socket_new(C.base, -1, BEV_OPT_CLOSE_ON_FREE);
    }
    C.state = CONN_CONNECTING;
    C.connect_started_ms = mono_ms();
    bufferevent_setcb(C.bev, on_read, NULL, on_event, NULL);
    bufferevent_enable(C.bev, EV_READ | EV_WRITE);
    if (bufferevent_socket_connect(C.bev, (struct sockaddr *)&ss, (int)len) < 0)
        conn_fail(strerror(errno));
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    int64_t now = mono_ms();
    if (C.state == CONN_IDLE) {
        if (now >= C.connect_at_ms) conn_start();
        return;
    }
    if ((C.state == CONN_CONNECTING && now - C.connect_started_ms > C.timeout_ms)) {
        conn_fail("connect timed out");
        return;
    }
    struct pending *oldest = TAILQ_FIRST(&C.pending);
    if (oldest && now - oldest->sent_ms > C.timeout_ms) {
        conn_fail("no answer within the timeout");
        return;
    }
    if (C.state == CONN_READY && now >= C.next_heartbeat_ms) {
        C.next_heartbeat_ms = now + HEARTBEAT_EVERY_S * 1000;
        heartbeat();
    }
}

int cluster_start(struct event_base *base, const struct config *cfg, char *err, size_t errlen)
{
    if (!cfg->cluster_redis) return 0;
    memset(&C, 0, sizeof C);
    TAILQ_INIT(&C.pending);
    if (cfg->cluster_tls) {
        C.ssl_ctx = tls_client_context(cfg->cluster_tls_ca_file, 1, cfg->cluster_tls_cert,
                                       cfg->cluster_tls_key, err, errlen);
        if (!C.ssl_ctx) return -1;
    }
    C.configured = 1;
    C.base = base;
    C.addr = xstrdup(cfg->cluster_redis);
    C.instance = xstrdup(cfg->cluster_instance ? cfg->cluster_instance : "outrelay");
    C.prefix = xstrdup(cfg->cluster_key_prefix ? cfg->cluster_key_prefix : "outrelay");
    C.user = cfg->cluster_user ? xstrdup(cfg->cluster_user) : NULL;
    C.password = cfg->cluster_password ? xstrdup(cfg->cluster_password) : NULL;
    C.db = cfg->cluster_db;
    C.timeout_ms = cfg->cluster_timeout > 0 ? cfg->cluster_timeout * 1000 : 2000;
    C.instances_seen = 1;
    C.timer = event_new(base, -1, EV_PERSIST, on_tick, NULL);
    struct timeval tv = {0, TICK_MS * 1000};
    event_add(C.timer, &tv);
    cluster_dedup_set_claim_ttl(cfg->cluster_claim_ttl);
    cluster_subscribe(cluster_dedup_health, NULL);
    cluster_state_start(base); /* shared state: polls the version, written back on return */
    cluster_subscribe(cluster_caps_health, NULL);
    conn_start();
    log_info("cluster: instance %s, redis %s%s", C.instance, C.addr, C.ssl_ctx ? " (TLS)" : "");
    return 0;
}

void cluster_stop(void)
{
    if (!C.configured) return;
    C.stopping = 1;
    conn_fail("stopping"); /* pending commands get no answer: their callbacks run now */
    if (C.timer) event_free(C.timer);
    if (C.ssl_ctx) SSL_CTX_free(C.ssl_ctx);
    free(C.addr);
    free(C.instance);
    free(C.prefix);
    free(C.user);
    free(C.password);
    memset(&C, 0, sizeof C);
    cluster_dedup_stop();
    cluster_state_stop();
    cluster_caps_stop();
}

int cluster_configured(void)
{
    return C.configured;
}

int cluster_is_up(void)
{
    return C.configured && C.state == CONN_READY;
}

int64_t cluster_down_since(void)
{
    return C.health == HEALTH_DOWN ? C.down_since : 0;
}

int cluster_instances_seen(void)
{
    return C.instances_seen > 0 ? C.instances_seen : 1;
}

const char *cluster_instance_name(void)
{
    return C.instance;
}

const char *cluster_prefix(void)
{
    return C.prefix;
}

uint64_t cluster_errors(void)
{
    return C.errors;
}

void cluster_subscribe(void (*fn)(void *arg, int up), void *arg)
{
    if (C.n_subscribers < SUBSCRIBERS_MAX) {
        C.subscribers[C.n_subscribers].fn = fn;
        C.subscribers[C.n_subscribers].arg = arg;
        C.n_subscribers++;
    }
}

void cluster_status(struct strbuf *out, int json)
{
    const char *state = !C.configured             ? "off"
                        : cluster_is_up()         ? "up"
                        : C.health == HEALTH_DOWN ? "down"
                                                  : "connecting";
    if (json) {
        struct json_writer w;
        json_init(&w, out);
        json_object_begin(&w, NULL);
        json_string(&w, "state", state);
        if (C.configured) {
            json_string(&w, "instance", C.instance);
            json_string(&w, "redis", C.addr);
            json_bool(&w, "tls", C.ssl_ctx != NULL);
            json_int(&w, "down_since", cluster_down_since());
            json_int(&w, "instances_seen", cluster_instances_seen());
            json_int(&w, "errors", (int64_t)C.errors);
            json_int(&w, "reconcile_pending", (int64_t)cluster_dedup_pending());
            json_int(&w, "state_pending", (int64_t)cluster_state_pending());
            json_string(&w, "last_error", C.last_error[0] ? C.last_error : NULL);
        }
        json_object_end(&w);
        strbuf_puts(out, "\n");
        return;
    }
    if (!C.configured) {
        strbuf_puts(out, "cluster: off (no cluster.redis configured)\n");
        return;
    }
    strbuf_printf(out, "instance: %s\nredis: %s%s\nstate: %s", C.instance, C.addr,
                  C.ssl_ctx ? " (TLS)" : "", state);
    if (cluster_down_since()) {
        char when[64];
        time_t t = (time_t)cluster_down_since();
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
        strbuf_printf(out, " since %s", when);
    }
    strbuf_printf(out,
                  "\ninstances seen: %d\nerrors: %llu\nreconcile pending: %zu\nstate pending: "
                  "%zu\n",
                  cluster_instances_seen(), (unsigned long long)C.errors, cluster_dedup_pending(),
                  cluster_state_pending());
    if (C.last_error[0]) strbuf_printf(out, "last error: %s\n", C.last_error);
}
