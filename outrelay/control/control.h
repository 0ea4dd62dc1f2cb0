/* control.h - the local control socket (<state>/control.sock, mode 0600): one request line per
 * connection ("queue list", "queue hold ID", ...), answered with "OK\n" or "ERR\n" followed by
 * text, then closed. Server side runs on the loop thread; control_request() is the client used
 * by the command line. */
#ifndef OUTRELAY_CONTROL_H
#define OUTRELAY_CONTROL_H

#include <event2/event.h>
#include <stddef.h>

#include "common/strbuf.h"

int control_start(struct event_base *base, const char *path, char *err, size_t errlen);
void control_stop(void);
/* Sends one request to a running daemon; fills out with its answer text. Returns 0 when the
 * daemon answered OK, 1 when it answered ERR, -1 when it could not be reached (err filled). */
int control_request(const char *path, const char *request, struct strbuf *out, char *err,
                    size_t errlen);

#endif
