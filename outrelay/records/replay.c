/* replay.c - puts back into records.db what a crash took away. Rows are committed by a writer
 * thread in batches, so kill -9 loses the last ones; the spool, written before every 250 and
 * every final mark, still proves them. At start, for every message the spool recovered, the
 * rows records.db lacks (received, delivered/bounced/expired, deleted) are queued again with
 * detail "replayed from spool at start". The same read tells the queue each open recipient's
 * attempts so far and when its next try was due (its deferred rows), so a restart keeps the
 * backoff. Reads records.db on its own read-only connection; writes only through
 * records_emit_at. Called by main() during spool recovery (loop thread). */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/strbuf.h"
#include "common/util.h"
#include "records/records.h"
#include "mail/envelope.h"

#define REPLAY_DETAIL "replayed from spool at start"

struct records_replay {
    sqlite3 *db;
    sqlite3_stmt *known; /* the events of one queue id that prove something */
    long messages, rows;
};

struct records_replay *records_replay_open(const char *state_dir, char *err, size_t errlen)
{
    struct strbuf path = STRBUF_INIT;
    strbuf_printf(&path, "%s/records.db", state_dir);
    struct records_replay *rp = xcalloc(1, sizeof *rp);
    if (sqlite3_open_v2(strbuf_str(&path), &rp->db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK ||
        sqlite3_busy_timeout(rp->db, 5000) != SQLITE_OK ||
        sqlite3_prepare_v2(rp->db,
                           "SELECT event, recipient, ts_us, next_attempt_s FROM events WHERE "
                           "queue_id = ?1 AND event IN ('received', 'delivered', 'bounced', "
                           "'expired', 'suppressed', 'deleted', 'deferred')",
                           -1, &rp->known, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "records: replay: %s: %s", strbuf_str(&path),
                 rp->db ? sqlite3_errmsg(rp->db) : "cannot open");
        records_replay_close(rp, NULL, NULL);
        rp = NULL;
    }
    strbuf_free(&path);
    return rp;
}

void records_replay_close(struct records_replay *rp, long *messages, long *rows)
{
    if (messages) *messages = rp ? rp->messages : 0;
    if (rows) *rows = rp ? rp->rows : 0;
    if (!rp) return;
    sqlite3_finalize(rp->known);
    sqlite3_close(rp->db);
    free(rp);
}

static enum record_type replay_type_of(char mark)
{
    switch (mark) {
    case 'D':
        return RECORD_DELIVERED;
    case 'B':
        return RECORD_BOUNCED;
    case 'E':
        return RECORD_EXPIRED;
    default:
        return 0;
    }
}

/* What records.db already holds for one message. */
struct replay_known {
    int received, deleted;
    char **final_rcpts; /* recipients with a final event (or a suppression) */
    size_t n_final;
    struct records_retry *retry; /* the caller's, per recipient of env (may be NULL) */
    const struct envelope *env;
};

void records_retry_add(struct records_retry *r, int64_t ts_us, int64_t next_attempt_s)
{
    r->attempts++;
    if (r->attempts > 1 && ts_us < r->last_us) return;
    r->last_us = ts_us;
    r->due = ts_us / 1000000 + (next_attempt_s > 0 ? next_attempt_s : 0);
}

/* A deferred row counts for every open recipient of that address (an address is in an
 * envelope once; a repeat would share its history). */
static void replay_deferred(struct replay_known *k, const char *rcpt, int64_t ts_us,
                            int64_t next_attempt_s)
{
    if (!k->retry) return;
    for (size_t i = 0; i < k->env->n_rcpts; i++)
        if (strcmp(k->env->rcpts[i].address, rcpt) == 0)
            records_retry_add(&k->retry[i], ts_us, next_attempt_s);
}

static int replay_known_has(const struct replay_known *k, const char *rcpt)
{
    for (size_t i = 0; i < k->n_final; i++)
        if (strcmp(k->final_rcpts[i], rcpt) == 0) return 1;
    return 0;
}

static int replay_load(struct records_replay *rp, const struct envelope *env,
                       struct records_retry *retry, struct replay_known *k)
{
    memset(k, 0, sizeof *k);
    k->env = env;
    k->retry = retry;
    sqlite3_reset(rp->known);
    sqlite3_bind_text(rp->known, 1, env->queue_id, -1, SQLITE_STATIC);
    int rc;
    while ((rc = sqlite3_step(rp->known)) == SQLITE_ROW) {
        const char *event = (const char *)sqlite3_column_text(rp->known, 0);
        const char *rcpt = (const char *)sqlite3_column_text(rp->known, 1);
        if (!event) continue;
        if (strcmp(event, "received") == 0) {
            k->received = 1;
        } else if (strcmp(event, "deleted") == 0) {
            k->deleted = 1;
        } else if (strcmp(event, "deferred") == 0) {
            if (rcpt)
                replay_deferred(k, rcpt, sqlite3_column_int64(rp->known, 2),
                                sqlite3_column_int64(rp->known, 3));
        } else if (rcpt) {
            k->final_rcpts = xrealloc(k->final_rcpts, (k->n_final + 1) * sizeof *k->final_rcpts);
            k->final_rcpts[k->n_final++] = xstrdup(rcpt);
        }
    }
    sqlite3_reset(rp->known);
    return rc == SQLITE_DONE ? 0 : -1;
}

static void replay_known_free(struct replay_known *k)
{
    for (size_t i = 0; i < k->n_final; i++)
        free(k->final_rcpts[i]);
    free(k->final_rcpts);
}

int records_replay_message(struct records_replay *rp, const struct envelope *env, const char *final,
                           int deleted, struct records_retry *retry)
{
    struct replay_known k;
    if (retry) memset(retry, 0, env->n_rcpts * sizeof *retry);
    if (replay_load(rp, env, retry, &k) < 0) {
        log_error("records: replay: %s: %s", env->queue_id, sqlite3_errmsg(rp->db));
        replay_known_free(&k);
        if (retry) memset(retry, 0, env->n_rcpts * sizeof *retry);
        return -1;
    }
    /* a final recipient has no next try */
    for (size_t i = 0; retry && i < env->n_rcpts; i++)
        if (final[i]) memset(&retry[i], 0, sizeof retry[i]);
    int64_t now = clock_now_us();
    int64_t arrival = env->arrival_us ? env->arrival_us : env->arrival * 1000000;
    int rows = 0;
    struct record_event base = {.queue_id = env->queue_id,
                                .message_id = env->message_id,
                                .origin = env->origin,
                                .client_addr = env->client_addr,
                                .sender = env->sender,
                                .from_domain = env->from_domain};
    /* Our own DSNs are accepted by queue_send_dsn, which records "dsn" on the bounced message,
     * never "received": a replayed "received" would count them as accepted mail. */
    if (!k.received && strcmp(env->origin ? env->origin : "", "dsn") != 0) {
        struct record_event ev = base;
        ev.type = RECORD_RECEIVED;
        ev.size = env->size;
        ev.nrcpt = (int64_t)env->n_rcpts;
        ev.detail = REPLAY_DETAIL;
        records_emit_at(&ev, arrival); /* the spool knows when it was accepted */
        rows++;
    }
    for (size_t i = 0; i < env->n_rcpts; i++) {
        enum record_type type = replay_type_of(final[i]);
        if (!type || replay_known_has(&k, env->rcpts[i].address)) continue;
        /* The mark proves the outcome, not its time or the remote reply: the row carries the
         * time of the replay and says so. */
        struct record_event ev = base;
        ev.type = type;
        ev.recipient = env->rcpts[i].address;
        ev.detail = final[i] == 'D' ? REPLAY_DETAIL " (spool mark D: delivered, or suppressed "
                                                    "as a duplicate; time and reply not recorded)"
                                    : REPLAY_DETAIL " (time and reply not recorded)";
        records_emit_at(&ev, now);
        rows++;
    }
    if (deleted && !k.deleted) {
        struct record_event ev = base;
        ev.type = RECORD_DELETED;
        ev.detail = REPLAY_DETAIL;
        records_emit_at(&ev, now);
        rows++;
    }
    replay_known_free(&k);
    if (rows) {
        rp->messages++;
        rp->rows += rows;
    }
    return rows;
}
