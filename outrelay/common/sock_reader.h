/* sock_reader.h - reads a plain (non-TLS) socket into the input of its socket bufferevent, in
 * place of the bufferevent's own reading: one readv of 16 KiB or more per readiness and no
 * ioctl(FIONREAD) before it. The bufferevent keeps writing; its reading stays off. Used by
 * ingress/smtpd.c (inbound sessions) and smtpc/smtpc_conn.c (outbound connections). Loop thread
 * only. */
#ifndef OUTRELAY_SOCK_READER_H
#define OUTRELAY_SOCK_READER_H

#include <sys/types.h>

#include <event2/bufferevent.h>
#include <event2/event.h>

struct sock_reader;

/* what == 0: new bytes are in the input. Otherwise BEV_EVENT_READING with BEV_EVENT_EOF,
 * BEV_EVENT_ERROR (errno says why) or BEV_EVENT_TIMEOUT, as a bufferevent's event callback gets
 * them; the reader has stopped by then. The callback may free the reader. */
typedef void (*sock_reader_cb)(void *arg, short what);

/* A stopped reader of fd into bufferevent_get_input(bev), where bev is a socket bufferevent on
 * fd with EV_READ disabled. Returns NULL when libevent cannot make the event. */
struct sock_reader *sock_reader_new(struct event_base *base, evutil_socket_t fd,
                                    struct bufferevent *bev, sock_reader_cb cb, void *arg);
/* Reading starts (again) with the timeout last set; no data for that long ends it with
 * BEV_EVENT_TIMEOUT. */
void sock_reader_start(struct sock_reader *r);
void sock_reader_stop(struct sock_reader *r);
/* The time without data that ends reading; takes effect now when reading, else at the next
 * start. NULL or zero: none. */
void sock_reader_set_timeout(struct sock_reader *r, const struct timeval *tv);
/* Stops and frees r (NULL is fine); safe inside r's own callback. */
void sock_reader_free(struct sock_reader *r);

/* One read of what fd has ready into in, a socket bufferevent's input (its end frozen outside
 * the bufferevent's own reads): readv into at least SOCK_READER_SIZE bytes of reserved space,
 * again only while a read fills all it was given (at most SOCK_READER_ROUNDS times). Returns the
 * bytes read, 0 at end of file, -1 with errno (EAGAIN when nothing was ready). An end of file or
 * error after some bytes is left for the next readiness. */
#define SOCK_READER_SIZE 16384
#define SOCK_READER_ROUNDS 4
ssize_t sock_reader_read(struct evbuffer *in, evutil_socket_t fd);

#endif
