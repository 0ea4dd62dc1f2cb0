/* smtpc.h - the SMTP client lives behind deliver/delivery.h (smtpc_init, smtpc_open,
 * smtpc_wake_idle, smtpc_shutdown); this header names the module and its one pure piece. */
#ifndef OUTRELAY_SMTPC_H
#define OUTRELAY_SMTPC_H
#include "common/strbuf.h"
#include "qmgr/delivery.h"

/* A remote server's reply, read one line at a time (without CRLF) the way a connection reads
 * it: *reply collects the lines' texts joined by one space (about 8 KiB at most), *reply_code
 * the code of the lines so far, 0 before the first (the caller sets it to 0 and empties *reply
 * for a new reply, and when it drops a connection in the middle of one).
 * *text points at this line's text, inside line. Returns 1 when more lines follow, 0 when the
 * reply is complete, -1 when the line is no reply line or changes the code. Pure; any thread
 * (the connection uses it; so does fuzz/fuzz_reply.c). */
int smtpc_reply_add_line(struct strbuf *reply, int *reply_code, const char *line,
                         const char **text);
#endif
