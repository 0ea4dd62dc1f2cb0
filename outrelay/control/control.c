/* control.c - control socket server and client; see control.h. Requests are dispatched to the
 * module that owns the state (qmgr_control for "queue ...", route_control for "ramp ...").
 * A request with the word --json is answered in JSON by that module; its errors are wrapped
 * here as {"error": TEXT}. */
#include "control/control.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/listener.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "cluster/cluster.h"
#include "common/json.h"
#include "common/log.h"
#include "common/util.h"
#include "qmgr/qmgr.h"
#include "records/records.h"
#include "route/route.h"

#define CONTROL_MAX_REQUEST 1024

static struct evconnlistener *control_listener;
static char *control_path;

/* Whether the request has the word --json (not as the value of another option: no command
 * takes a value starting with "--"). */
static int wants_json(const char *req)
{
    for (const char *p = strstr(req, "--json"); p; p = strstr(p + 1, "--json"))
        if ((p == req || p[-1] == ' ') && (p[6] == '\0' || p[6] == ' ')) return 1;
    return 0;
}

/* The request without its --json words, into out. */
static void without_json(const char *req, struct strbuf *out)
{
    char *copy = xstrdup(req);
    for (char *save = NULL, *w = strtok_r(copy, " ", &save); w; w = strtok_r(NULL, " ", &save))
        if (strcmp(w, "--json") != 0) strbuf_printf(out, "%s%s", out->len ? " " : "", w);
    free(copy);
}

static void dispatch_module(const char *req, struct strbuf *out, int *ok)
{
    if (strncmp(req, "queue ", 6) == 0) {
        *ok = qmgr_control(req + 6, out) == 0;
        return;
    }
    if (strncmp(req, "ramp ", 5) == 0) {
        const char *cmd = req + 5;
        struct strbuf said = STRBUF_INIT, action = STRBUF_INIT;
        if (wants_json(cmd)) {
            *ok = route_control_json(cmd, out, &said) == 0;
            without_json(cmd, &action);
        } else {
            *ok = route_control(cmd, out) == 0;
            strbuf_append(&said, out->data ? out->data : "", out->len);
            strbuf_puts(&action, cmd);
        }
        const char *verb = strbuf_str(&action);
        if (*ok && strncmp(verb, "status", 6) != 0 && strncmp(verb, "plan", 4) != 0) {
            /* an operator override: on the record like every other decision, in the words of
             * the text answer also when it was asked for in JSON */
            struct record_event ev = {.type = RECORD_RAMP,
                                      .queue_id = "-",
                                      .action = strbuf_str(&action),
                                      .detail = strbuf_str(&said)};
            records_emit(&ev);
        }
        strbuf_free(&said);
        strbuf_free(&action);
        return;
    }
    if (strncmp(req, "cluster ", 8) == 0 || strcmp(req, "cluster") == 0) {
        struct strbuf cmd = STRBUF_INIT;
        without_json(req, &cmd);
        if (strcmp(strbuf_str(&cmd), "cluster status") == 0 ||
            strcmp(strbuf_str(&cmd), "cluster") == 0) {
            cluster_status(out, wants_json(req));
            *ok = 1;
        } else {
            strbuf_printf(out, "usage: cluster status [--json]\n");
        }
        strbuf_free(&cmd);
        return;
    }
    if (strcmp(req, "ping") == 0) {
        strbuf_puts(out, "pong\n");
        *ok = 1;
        return;
    }
    strbuf_printf(out, "unknown request \"%s\"\n", req);
    *ok = 0;
}

static void dispatch(const char *req, struct strbuf *out, int *ok)
{
    dispatch_module(req, out, ok);
    if (*ok || !wants_json(req)) return;
    struct strbuf text = STRBUF_INIT;
    strbuf_append(&text, out->data ? out->data : "", out->len);
    while (text.len && text.data[text.len - 1] == '\n')
        text.data[--text.len] = '\0';
    strbuf_reset(out);
    struct json_writer w;
    json_init(&w, out);
    json_object_begin(&w, NULL);
    json_string(&w, "error", strbuf_str(&text));
    json_object_end(&w);
    strbuf_puts(out, "\n");
    strbuf_free(&text);
}

static void client_write_cb(struct bufferevent *bev, void *arg)
{
    (void)arg;
    bufferevent_free(bev);
}

static void client_event_cb(struct bufferevent *bev, short what, void *arg)
{
    (void)what;
    (void)arg;
    bufferevent_free(bev);
}

static void client_read_cb(struct bufferevent *bev, void *arg)
{
    (void)arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t n;
    char *line = evbuffer_readln(in, &n, EVBUFFER_EOL_LF);
    if (!line) {
        if (evbuffer_get_length(in) > CONTROL_MAX_REQUEST) bufferevent_free(bev);
        return;
    }
    struct strbuf out = STRBUF_INIT;
    int ok = 0;
    dispatch(line, &out, &ok);
    log_info("control: %s -> %s", line, ok ? "ok" : "error");
    free(line);
    bufferevent_disable(bev, EV_READ);
    evbuffer_add_printf(bufferevent_get_output(bev), "%s\n", ok ? "OK" : "ERR");
    evbuffer_add(bufferevent_get_output(bev), out.data ? out.data : "", out.len);
    strbuf_free(&out);
    bufferevent_setcb(bev, NULL, client_write_cb, client_event_cb, NULL);
}

static void accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *a, int alen,
                      void *arg)
{
    (void)a;
    (void)alen;
    (void)arg;
    struct bufferevent *bev =
        bufferevent_socket_new(evconnlistener_get_base(l), fd, BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(bev, client_read_cb, NULL, client_event_cb, NULL);
    struct timeval tv = {10, 0};
    bufferevent_set_timeouts(bev, &tv, &tv);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
}

int control_start(struct event_base *base, const char *path, char *err, size_t errlen)
{
    struct sockaddr_un sun;
    memset(&sun, 0, sizeof sun);
    sun.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof sun.sun_path) {
        snprintf(err, errlen, "control socket path too long: %s", path);
        return -1;
    }
    strcpy(sun.sun_path, path);
    unlink(path); /* a stale socket from an earlier run */
    mode_t old = umask(0077);
    control_listener = evconnlistener_new_bind(base, accept_cb, NULL,
                                               LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 16,
                                               (struct sockaddr *)&sun, sizeof sun);
    umask(old);
    if (!control_listener) {
        snprintf(err, errlen, "cannot create control socket %s: %s", path, strerror(errno));
        return -1;
    }
    control_path = xstrdup(path);
    return 0;
}

void control_stop(void)
{
    if (control_listener) evconnlistener_free(control_listener);
    control_listener = NULL;
    if (control_path) {
        unlink(control_path);
        free(control_path);
        control_path = NULL;
    }
}

int control_request(const char *path, const char *request, struct strbuf *out, char *err,
                    size_t errlen)
{
    struct sockaddr_un sun;
    memset(&sun, 0, sizeof sun);
    sun.sun_family = AF_UNIX;
    snprintf(sun.sun_path, sizeof sun.sun_path, "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof sun) < 0) {
        snprintf(err, errlen, "cannot reach the outrelay daemon at %s: %s (is it running?)", path,
                 strerror(errno));
        if (fd >= 0) close(fd);
        return -1;
    }
    struct strbuf req = STRBUF_INIT;
    strbuf_printf(&req, "%s\n", request);
    ssize_t w = write(fd, req.data, req.len);
    strbuf_free(&req);
    if (w < 0) {
        snprintf(err, errlen, "write to %s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    char buf[4096];
    ssize_t n;
    struct strbuf all = STRBUF_INIT;
    while ((n = read(fd, buf, sizeof buf)) > 0)
        strbuf_append(&all, buf, (size_t)n);
    close(fd);
    const char *text = strbuf_str(&all);
    int status;
    if (strncmp(text, "OK\n", 3) == 0)
        status = 0;
    else if (strncmp(text, "ERR\n", 4) == 0)
        status = 1;
    else {
        snprintf(err, errlen, "unexpected answer from the daemon");
        strbuf_free(&all);
        return -1;
    }
    strbuf_puts(out, text + (status == 0 ? 3 : 4));
    strbuf_free(&all);
    return status;
}
