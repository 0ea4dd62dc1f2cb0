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
    int ours, peer;
    tcp_pair(&ours, &peer);
    struct event_base *base = event_base_new();
    struct bufferevent *bev = bufferevent_socket_new(base, ours, 0);
    struct evbuffer *in = bufferevent_get_input(bev);
    enum { N = 65536 };
    char *out = malloc(N), *back = malloc(N);
    for (int i = 0; i < N; i++)
        out[i] = (char)('a' + i % 23);
    send_all(peer, out, N);
    wait_queued(ours, N);

    ssize_t n = sock_reader_read(in, ours);
    assert_int_equal(n, N); /* several filled reads in one call, the last one short */
    assert_int_equal(evbuffer_get_length(in), N);
    assert_int_equal(evbuffer_remove(in, back, N), N);
    assert_memory_equal(out, back, N);

    errno = 0;
    assert_int_equal(sock_reader_read(in, ours), -1); /* nothing more: EAGAIN */
    assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
    /* the input is frozen again for anyone but a reader, as the bufferevent keeps it */
    assert_int_equal(evbuffer_add(in, "x", 1), -1);

    free(out);
    free(back);
    bufferevent_free(bev);
    event_base_free(base);
    close(ours);
    close(peer);
}

static void test_short_read_stops_and_eof_follows(void **state)
{
    (void)state;
    int ours, peer;
    tcp_pair(&ours, &peer);
    struct event_base *base = event_base_new();
    struct bufferevent *bev = bufferevent_socket_new(base, ours, 0);
    struct evbuffer *in = bufferevent_get_input(bev);
    send_all(peer, "QUIT\r\n", 6);
    shutdown(peer, SHUT_WR);
    wait_queued(ours, 6);
    /* a read that did not fill its space is the last of the call: the end of file is left for
     * the next one */
    assert_int_equal(sock_reader_read(in, ours), 6);
    assert_int_equal(sock_reader_read(in, ours), 0);
    assert_int_equal(evbuffer_get_length(in), 6);
    bufferevent_free(bev);
    event_base_free(base);
    close(ours);
    close(peer);
}

struct seen {
    struct event_base *base;
    struct sock_reader *reader;
    struct evbuffer *in;
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
    int ours, peer;
    tcp_pair(&ours, &peer);
    struct seen s = {.base = event_base_new()};
    struct bufferevent *bev = bufferevent_socket_new(s.base, ours, 0);
    s.in = bufferevent_get_input(bev);
    s.reader = sock_reader_new(s.base, ours, bev, on_read, &s);
    assert_non_null(s.reader);
    struct timeval tv = {.tv_sec = 0, .tv_usec = 100000};
    sock_reader_set_timeout(s.reader, &tv);
    sock_reader_start(s.reader);

    send_all(peer, "EHLO a\r\n", 8);
    event_base_dispatch(s.base);
    assert_int_equal(s.data_calls, 1);
    assert_int_equal(evbuffer_get_length(s.in), 8);

    /* nothing more: the timeout ends reading, which stays off */
    event_base_dispatch(s.base);
    assert_int_equal(s.last_what, BEV_EVENT_READING | BEV_EVENT_TIMEOUT);
    assert_int_equal(event_base_dispatch(s.base), 1); /* no event left: returns at once */

    /* started again, the peer's close is the end of file */
    s.last_what = 0;
    sock_reader_start(s.reader);
    shutdown(peer, SHUT_WR);
    event_base_dispatch(s.base);
    assert_int_equal(s.last_what, BEV_EVENT_READING | BEV_EVENT_EOF);
    assert_int_equal(s.data_calls, 1);
    assert_int_equal(event_base_dispatch(s.base), 1);

    sock_reader_free(s.reader);
    bufferevent_free(bev);
    event_base_free(s.base);
    close(ours);
    close(peer);
}

static void test_reset_is_an_error_and_free_in_callback(void **state)
{
    (void)state;
    int ours, peer;
    tcp_pair(&ours, &peer);
    struct seen s = {.base = event_base_new(), .free_in_callback = 1};
    struct bufferevent *bev = bufferevent_socket_new(s.base, ours, 0);
    s.in = bufferevent_get_input(bev);
    s.reader = sock_reader_new(s.base, ours, bev, on_read, &s);
    sock_reader_set_timeout(s.reader, NULL);
    sock_reader_start(s.reader);
    /* unread data at close makes the peer's kernel reset the connection */
    send_all(ours, "220 x\r\n", 7);
    wait_queued(peer, 7);
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(peer, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(peer);
    event_base_dispatch(s.base);
    assert_int_equal(s.last_what, BEV_EVENT_READING | BEV_EVENT_ERROR);
    assert_int_equal(s.last_errno, ECONNRESET);
    assert_null(s.reader); /* freed inside its callback; ASan sees any use after */
    assert_int_equal(event_base_dispatch(s.base), 1);
    bufferevent_free(bev);
    event_base_free(s.base);
    close(ours);
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
