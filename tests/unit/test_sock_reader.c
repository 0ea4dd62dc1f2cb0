/* test_sock_reader.c - unit tests for outrelay/common/sock_reader.c over TCP connections on
 * loopback: one call takes 64 KiB that wait in the socket (a bufferevent reads 4 KiB a time), a
 * read that leaves its space unfilled stops without a read for EAGAIN, and the reader's event
 * path reports new input, a read timeout, end of file and a reset as a bufferevent would, stopping
 * itself and surviving being freed inside its own callback. */
#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/sock_reader.h"

/* A connected pair on 127.0.0.1: *ours non-blocking (the relay's side), *peer blocking. */
static void tcp_pair(int *ours, int *peer)
{
    int l = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(l >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(l, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(l, 1), 0);
    socklen_t len = sizeof a;
    assert_int_equal(getsockname(l, (struct sockaddr *)&a, &len), 0);
    *peer = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(connect(*peer, (struct sockaddr *)&a, sizeof a), 0);
    *ours = accept(l, NULL, NULL);
    assert_true(*ours >= 0);
    close(l);
    assert_int_equal(evutil_make_socket_nonblocking(*ours), 0);
}

/* The relay's side of a connection as smtpd and smtpc hold it: a non-blocking socket with a
 * socket bufferevent whose input the reader fills; peer is the other end. */
struct conn {
    int ours, peer;
    struct event_base *base;
    struct bufferevent *bev;
    struct evbuffer *in;
};

static void conn_open(struct conn *c)
{
    tcp_pair(&c->ours, &c->peer);
    c->base = event_base_new();
    c->bev = bufferevent_socket_new(c->base, c->ours, 0);
    c->in = bufferevent_get_input(c->bev);
}

static void conn_close(struct conn *c)
{
    bufferevent_free(c->bev);
    event_base_free(c->base);
    close(c->ours);
    if (c->peer >= 0) close(c->peer);
}

static void send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, 0);
        assert_true(w > 0);
        p += w;
        n -= (size_t)w;
    }
}

/* Waits until n bytes are queued on fd for reading. */
static void wait_queued(int fd, int n)
{
    for (int i = 0; i < 2000; i++) {
        int q = 0;
        assert_int_equal(ioctl(fd, FIONREAD, &q), 0);
        if (q >= n) return;
        poll(NULL, 0, 1);
    }
    fail_msg("%d bytes never arrived", n);
}

static void test_big_read_in_one_call(void **state)
{
    (void)state;
    struct conn c;
    conn_open(&c);
    enum { N = 65536 };
    char *out = malloc(N), *back = malloc(N);
    for (int i = 0; i < N; i++)
        out[i] = (char)('a' + i % 23);
    send_all(c.peer, out, N);
    wait_queued(c.ours, N);

    ssize_t n = sock_reader_read(c.in, c.ours);
    assert_int_equal(n, N); /* several filled reads in one call, the last one short */
    assert_int_equal(evbuffer_get_length(c.in), N);
    assert_int_equal(evbuffer_remove(c.in, back, N), N);
    assert_memory_equal(out, back, N);

    errno = 0;
    assert_int_equal(sock_reader_read(c.in, c.ours), -1); /* nothing more: EAGAIN */
    assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
    /* the input is frozen again for anyone but a reader, as the bufferevent keeps it */
    assert_int_equal(evbuffer_add(c.in, "x", 1), -1);
    free(out);
    free(back);
    conn_close(&c);
}

static void test_short_read_stops_and_eof_follows(void **state)
{
    (void)state;
    struct conn c;
    conn_open(&c);
    send_all(c.peer, "QUIT\r\n", 6);
    shutdown(c.peer, SHUT_WR);
    wait_queued(c.ours, 6);
    /* a read that did not fill its space is the last of the call: the end of file is left for
     * the next one */
    assert_int_equal(sock_reader_read(c.in, c.ours), 6);
    assert_int_equal(sock_reader_read(c.in, c.ours), 0);
    assert_int_equal(evbuffer_get_length(c.in), 6);
    conn_close(&c);
}

struct seen {
    struct event_base *base;
    struct sock_reader *reader;
    int data_calls;
    short last_what;
    int last_errno;
    int free_in_callback;
};

static void on_read(void *arg, short what)
{
    struct seen *s = arg;
    if (what == 0) {
        s->data_calls++;
    } else {
        s->last_what = what;
        s->last_errno = errno;
    }
    if (what && s->free_in_callback) {
        sock_reader_free(s->reader);
        s->reader = NULL;
    }
    event_base_loopbreak(s->base);
}

static void test_events_data_timeout_eof(void **state)
{
    (void)state;
    struct conn c;
    conn_open(&c);
    struct seen s = {.base = c.base};
    s.reader = sock_reader_new(c.base, c.ours, c.bev, on_read, &s);
    assert_non_null(s.reader);
    struct timeval tv = {.tv_sec = 0, .tv_usec = 100000};
    sock_reader_set_timeout(s.reader, &tv);
    sock_reader_start(s.reader);

    send_all(c.peer, "EHLO a\r\n", 8);
    event_base_dispatch(c.base);
    assert_int_equal(s.data_calls, 1);
    assert_int_equal(evbuffer_get_length(c.in), 8);

    /* nothing more: the timeout ends reading, which stays off */
    event_base_dispatch(c.base);
    assert_int_equal(s.last_what, BEV_EVENT_READING | BEV_EVENT_TIMEOUT);
    assert_int_equal(event_base_dispatch(c.base), 1); /* no event left: returns at once */

    /* started again, the peer's close is the end of file */
    s.last_what = 0;
    sock_reader_start(s.reader);
    shutdown(c.peer, SHUT_WR);
    event_base_dispatch(c.base);
    assert_int_equal(s.last_what, BEV_EVENT_READING | BEV_EVENT_EOF);
    assert_int_equal(s.data_calls, 1);
    assert_int_equal(event_base_dispatch(c.base), 1);

    sock_reader_free(s.reader);
    conn_close(&c);
}

static void test_reset_is_an_error_and_free_in_callback(void **state)
{
    (void)state;
    struct conn c;
    conn_open(&c);
    struct seen s = {.base = c.base, .free_in_callback = 1};
    s.reader = sock_reader_new(c.base, c.ours, c.bev, on_read, &s);
    sock_reader_set_timeout(s.reader, NULL);
    sock_reader_start(s.reader);
    /* closing with SO_LINGER 0 resets the connection */
    send_all(c.ours, "220 x\r\n", 7);
    wait_queued(c.peer, 7);
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(c.peer, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(c.peer);
    c.peer = -1;
    event_base_dispatch(c.base);
    assert_int_equal(s.last_what, BEV_EVENT_READING | BEV_EVENT_ERROR);
    assert_int_equal(s.last_errno, ECONNRESET);
    assert_null(s.reader); /* freed inside its callback; ASan sees any use after */
    assert_int_equal(event_base_dispatch(c.base), 1);
    conn_close(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_big_read_in_one_call),
        cmocka_unit_test(test_short_read_stops_and_eof_follows),
        cmocka_unit_test(test_events_data_timeout_eof),
        cmocka_unit_test(test_reset_is_an_error_and_free_in_callback),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
