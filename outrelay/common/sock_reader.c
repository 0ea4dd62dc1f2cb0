/* sock_reader.c - see sock_reader.h. A socket bufferevent asks the kernel how much is readable
 * (ioctl FIONREAD) before every read and reads at most 4 KiB; this reads into reserved space of
 * 16 KiB or more and takes a read that did not fill it as the socket being drained, so one
 * readiness costs one system call. A persistent EV_READ event with the read timeout stands in
 * for the bufferevent's read event; EOF, errors and timeouts reach the owner as the same
 * BEV_EVENT_* flags. Loop thread only. */
#include "common/sock_reader.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/uio.h>

#include <event2/buffer.h>

#include "common/util.h"

struct sock_reader {
    struct event *ev;
    struct evbuffer *in;
    struct timeval timeout;
    int has_timeout;
    sock_reader_cb cb;
    void *arg;
};

ssize_t sock_reader_read(struct evbuffer *in, evutil_socket_t fd)
{
    ssize_t total = 0;
    int err = 0;
    evbuffer_unfreeze(in, 0);
    for (int round = 0; round < SOCK_READER_ROUNDS; round++) {
        struct evbuffer_iovec space[2];
        int n_space = evbuffer_reserve_space(in, SOCK_READER_SIZE, space, 2);
        if (n_space < 1) {
            err = ENOMEM;
            if (total == 0) total = -1;
            break;
        }
        struct iovec vec[2];
        size_t asked = 0;
        for (int i = 0; i < n_space; i++) {
            vec[i].iov_base = space[i].iov_base;
            vec[i].iov_len = space[i].iov_len;
            asked += space[i].iov_len;
        }
        ssize_t n = readv(fd, vec, n_space);
        if (n <= 0) {
            err = errno;
            if (total == 0) total = n; /* else this end of file or error shows at the next read */
            break;
        }
        size_t left = (size_t)n;
        int used = 0;
        while (used < n_space && left > 0) {
            if (space[used].iov_len > left) space[used].iov_len = left;
            left -= space[used].iov_len;
            used++;
        }
        evbuffer_commit_space(in, space, used);
        total += n;
        if ((size_t)n < asked) break; /* the socket is drained: no read to learn EAGAIN */
    }
    evbuffer_freeze(in, 0);
    if (total < 0) errno = err;
    return total;
}

static void sock_reader_ready(evutil_socket_t fd, short what, void *arg)
{
    struct sock_reader *r = arg;
    if (!(what & EV_READ)) {
        event_del(r->ev);
        r->cb(r->arg, BEV_EVENT_READING | BEV_EVENT_TIMEOUT);
        return;
    }
    ssize_t n = sock_reader_read(r->in, fd);
    if (n > 0) {
        r->cb(r->arg, 0);
        return;
    }
    int err = errno;
    if (n < 0 && (err == EAGAIN || err == EWOULDBLOCK || err == EINTR)) return;
    event_del(r->ev);
    errno = err; /* the owner reports it, as after a bufferevent's read error */
    r->cb(r->arg, BEV_EVENT_READING | (n == 0 ? BEV_EVENT_EOF : BEV_EVENT_ERROR));
}

struct sock_reader *sock_reader_new(struct event_base *base, evutil_socket_t fd,
                                    struct bufferevent *bev, sock_reader_cb cb, void *arg)
{
    struct sock_reader *r = xcalloc(1, sizeof *r);
    r->ev = event_new(base, fd, EV_READ | EV_PERSIST, sock_reader_ready, r);
    if (!r->ev) {
        free(r);
        return NULL;
    }
    r->in = bufferevent_get_input(bev);
    r->cb = cb;
    r->arg = arg;
    return r;
}

void sock_reader_start(struct sock_reader *r)
{
    event_add(r->ev, r->has_timeout ? &r->timeout : NULL);
}

void sock_reader_stop(struct sock_reader *r)
{
    event_del(r->ev);
}

void sock_reader_set_timeout(struct sock_reader *r, const struct timeval *tv)
{
    int had = r->has_timeout;
    r->has_timeout = tv && (tv->tv_sec > 0 || tv->tv_usec > 0);
    if (r->has_timeout) r->timeout = *tv;
    if (!event_pending(r->ev, EV_READ, NULL)) return;
    if (had && !r->has_timeout) event_del(r->ev); /* event_add keeps a timeout it is not given */
    sock_reader_start(r);
}

void sock_reader_free(struct sock_reader *r)
{
    if (!r) return;
    event_free(r->ev);
    free(r);
}
