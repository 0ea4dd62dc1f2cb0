/* continuity.c - the continuity report: every accepted message (`received`) must reach a final
 * state for each recipient (delivered, bounced, expired) or be deleted by the operator, unless it
 * is still in the queue. Counts what is unaccounted for (should be 0), lists the open messages,
 * and with --message-id or a window prints every event of each message, its DSN included.
 * The queue is asked over the control socket (`queue list --json`, read with SQLite's JSON
 * functions) unless --records names the records; read-only SQL otherwise. Over several
 * instances' records a message is keyed by (instance, queue id), and a recipient suppressed as a
 * duplicate is proven by a delivery of the same Message-ID to the same recipient in the set. */
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "config/config.h"
#include "control/control.h"
#include "report/report_core.h"

/* The trail's detail of a row in words: the typed facts of received, routed and dsn rows as
 * the relay has always written them, then the row's own free text. */
#define CONTINUITY_DETAIL_SQL                                                                      \
    "CASE e.event WHEN 'received' THEN 'nrcpt=' || coalesce(e.nrcpt, 0) || coalesce('; ' || "      \
    "e.detail, '') WHEN 'routed' THEN 'provider=' || coalesce(e.provider, '') || "                 \
    "coalesce('; ' || e.route_reason, '') || CASE WHEN e.action = 'wait' THEN '; waiting in the "  \
    "queue' ELSE '' END WHEN 'dsn' THEN e.dsn_queue_id ELSE e.detail END"

/* A suppressed row f is proven when a delivery of its Message-ID to its recipient is in the
 * records (this instance's or another's). */
#define CONTINUITY_PROVEN_SQL                                                                      \
    "EXISTS (SELECT 1 FROM events d WHERE d.event = 'delivered' AND d.message_id = f.message_id "  \
    "AND d.recipient = f.recipient)"

struct continuity_queue {
    int known; /* the relay answered */
    char **ids;
    size_t n;
};

static int continuity_cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The queue ids the running relay holds: `queue list --json` ({"messages": [{"queue_id": ...},
 * ...], "count": N}) read with SQLite's JSON functions. known stays 0 when the relay does not
 * answer, or answers something that is not that object. */
static void continuity_queue_load(struct report_ctx *ctx, struct continuity_queue *q)
{
    struct strbuf out = STRBUF_INIT;
    char err[256];
    memset(q, 0, sizeof *q);
    sqlite3_stmt *st = NULL;
    /* records named with --records may be any instance's: no one queue to ask */
    if (ctx->opt.n_records == 0 &&
        control_request(ctx->cfg->control_socket, "queue list --json", &out, err, sizeof err) ==
            0 &&
        sqlite3_prepare_v2(ctx->db,
                           /* one row even for an empty queue: whether it is the answer */
                           "SELECT json_type(?1, '$.messages') = 'array', "
                           "json_extract(m.value, '$.queue_id') FROM (SELECT 1) "
                           "LEFT JOIN json_each(?1, '$.messages') AS m",
                           -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, strbuf_str(&out), -1, SQLITE_STATIC);
        int rc, is_list = 0;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            is_list = sqlite3_column_int(st, 0);
            const char *id = (const char *)sqlite3_column_text(st, 1);
            if (!is_list || !id) continue;
            q->ids = xrealloc(q->ids, (q->n + 1) * sizeof *q->ids);
            q->ids[q->n++] = xstrdup(id);
        }
        q->known = rc == SQLITE_DONE && is_list;
        if (q->n > 1) qsort(q->ids, q->n, sizeof *q->ids, continuity_cmp_str);
    }
    sqlite3_finalize(st);
    strbuf_free(&out);
}

static int continuity_queue_has(const struct continuity_queue *q, const char *id)
{
    return q->n && bsearch(&id, q->ids, q->n, sizeof *q->ids, continuity_cmp_str) != NULL;
}

static void continuity_queue_free(struct continuity_queue *q)
{
    for (size_t i = 0; i < q->n; i++)
        free(q->ids[i]);
    free(q->ids);
}

/* The messages of the report: received in the window (and from --domain), or carrying
 * --message-id (?1, ?2: with and without angle brackets). Columns q (queue id), t0. */
static void continuity_messages_sql(struct report_ctx *ctx, struct strbuf *sql)
{
    strbuf_puts(sql, "SELECT queue_id AS q, ts_us AS t0, message_id AS mid, sender AS snd, "
                     "nrcpt, instance AS inst, id AS rid FROM events WHERE event = 'received'");
    if (ctx->opt.message_id) strbuf_puts(sql, " AND message_id IN (?1, ?2)");
    report_sql_filters(sql, ctx, NULL, REPORT_SENDER_DOMAIN_SQL("sender"), 0);
}

static sqlite3_stmt *continuity_prepare(struct report_ctx *ctx, const char *sql, char **alt)
{
    sqlite3_stmt *st = report_prepare(ctx, sql);
    if (!st || !ctx->opt.message_id) return st;
    const char *id = ctx->opt.message_id;
    size_t len = strlen(id);
    if (id[0] == '<' && len >= 2 && id[len - 1] == '>') {
        *alt = xstrndup(id + 1, len - 2);
    } else {
        *alt = xmalloc(len + 3);
        snprintf(*alt, len + 3, "<%s>", id);
    }
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, *alt, -1, SQLITE_STATIC);
    return st;
}

static int continuity_finish(struct report_ctx *ctx, sqlite3_stmt *st, int rc, char *alt)
{
    if (rc != SQLITE_DONE)
        snprintf(ctx->err, sizeof ctx->err, "records: %s", sqlite3_errmsg(ctx->db));
    sqlite3_finalize(st);
    free(alt);
    return rc == SQLITE_DONE ? 0 : -1;
}

static int continuity_accounting(struct report_ctx *ctx, struct report_table *acc,
                                 struct report_table *open)
{
    struct continuity_queue q;
    continuity_queue_load(ctx, &q);
    struct strbuf sql = STRBUF_INIT;
    /* final: recipients delivered, bounced, expired, or suppressed as a duplicate of a delivery
     * (same Message-ID and recipient) in these records; unproven: suppressed ones without it.
     * A join, not a correlated count: over several files SQLite then reads the merged view
     * once instead of once per message. */
    strbuf_puts(&sql,
                "SELECT m.q, m.t0, m.mid, m.snd, m.nrcpt, count(DISTINCT CASE WHEN f.event IN "
                "('delivered', 'bounced', 'expired') OR (f.event = 'suppressed' AND "
                "" CONTINUITY_PROVEN_SQL ") THEN f.recipient END), coalesce(max(f.event = "
                "'deleted'), 0), m.inst, count(DISTINCT CASE WHEN f.event = 'suppressed' AND NOT "
                "" CONTINUITY_PROVEN_SQL " THEN f.recipient END) FROM (");
    continuity_messages_sql(ctx, &sql);
    strbuf_puts(&sql, ") AS m LEFT JOIN events f ON f.instance = m.inst AND f.queue_id = m.q "
                      "GROUP BY m.inst, m.rid ORDER BY m.t0, m.inst, m.rid");
    char *alt = NULL;
    sqlite3_stmt *st = continuity_prepare(ctx, sql.data, &alt);
    strbuf_free(&sql);
    if (!st) {
        continuity_queue_free(&q);
        return -1;
    }
    int64_t accepted = 0, complete = 0, queued = 0, unaccounted = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (++accepted % 4096 == 0) report_progress(ctx, "continuity", (uint64_t)accepted, 0);
        const char *id = report_text_col(st, 0);
        int64_t nrcpt = sqlite3_column_int64(st, 4);
        int64_t final = sqlite3_column_int64(st, 5);
        if (final >= nrcpt || sqlite3_column_int(st, 6)) {
            complete++;
            continue;
        }
        int in_queue = ctx->n_sources == 1 && continuity_queue_has(&q, id);
        if (in_queue)
            queued++;
        else
            unaccounted++;
        char when[32];
        report_row(open);
        report_put(open, 0, report_time_text(sqlite3_column_int64(st, 1), when, sizeof when));
        report_put(open, 1, id);
        report_put(open, 2, report_text_col(st, 2));
        report_put(open, 3, report_text_col(st, 3));
        report_puti(open, 4, nrcpt);
        report_puti(open, 5, final);
        report_put(open, 6,
                   in_queue                          ? "in queue"
                   : sqlite3_column_int64(st, 8) > 0 ? "suppressed, no delivery in these records"
                   : q.known                         ? "UNACCOUNTED"
                                                     : "unaccounted?");
        report_put(open, 7, report_text_col(st, 7));
    }
    report_progress_end(ctx);
    report_row(acc);
    report_puti(acc, 0, accepted);
    report_puti(acc, 1, complete);
    report_puti(acc, 2, queued);
    report_puti(acc, 3, unaccounted);
    report_put(acc, 4,
               q.known              ? "asked the running relay"
               : ctx->opt.n_records ? "not asked (records given with --records)"
                                    : "relay not reachable");
    report_puti(acc, 5, (int64_t)ctx->n_sources);
    continuity_queue_free(&q);
    return continuity_finish(ctx, st, rc, alt);
}

static int continuity_trails(struct report_ctx *ctx, struct report_table *t)
{
    struct strbuf sql = STRBUF_INIT;
    strbuf_puts(&sql, "WITH m AS (");
    continuity_messages_sql(ctx, &sql);
    strbuf_puts(&sql,
                "), g AS (SELECT q, t0, q AS orig, inst FROM m UNION ALL SELECT d.dsn_queue_id, "
                "m.t0, m.q, m.inst FROM events d JOIN m ON d.instance = m.inst AND d.queue_id = "
                "m.q WHERE d.event = 'dsn') "
                "SELECT e.ts_us, e.queue_id, e.event, e.recipient, e.egress, e.remote_mx, "
                "e.remote_addr, e.reply_code, e.enhanced_code, e.reply_text, " CONTINUITY_DETAIL_SQL
                ", e.message_id, e.action, e.instance FROM g JOIN events e ON e.instance = g.inst "
                "AND e.queue_id = g.q ORDER BY g.t0, g.inst, g.orig, e.ts_us, e.id");
    char *alt = NULL;
    sqlite3_stmt *st = continuity_prepare(ctx, sql.data, &alt);
    strbuf_free(&sql);
    if (!st) return -1;
    int rc;
    struct strbuf cell = STRBUF_INIT;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        char when[32];
        report_row(t);
        report_put(t, 0, report_time_text(sqlite3_column_int64(st, 0), when, sizeof when));
        report_put(t, 1, report_text_col(st, 1));
        report_put(t, 2, report_text_col(st, 2));
        report_put(t, 3, report_text_col(st, 3));
        report_put(t, 4, report_text_col(st, 4));
        strbuf_reset(&cell);
        if (*report_text_col(st, 5) || *report_text_col(st, 6))
            strbuf_printf(&cell, "%s[%s]", report_text_col(st, 5), report_text_col(st, 6));
        report_put(t, 5, cell.data);
        strbuf_reset(&cell);
        if (sqlite3_column_type(st, 7) != SQLITE_NULL)
            strbuf_printf(&cell, "%d %s%s%s", sqlite3_column_int(st, 7), report_text_col(st, 8),
                          *report_text_col(st, 8) ? " " : "", report_text_col(st, 9));
        report_put(t, 6, cell.data);
        strbuf_reset(&cell);
        const char *event = report_text_col(st, 2);
        if (strcmp(event, "received") == 0)
            strbuf_printf(&cell, "message-id=%s %s", report_text_col(st, 11),
                          report_text_col(st, 10));
        else if (*report_text_col(st, 12))
            strbuf_printf(&cell, "%s: %s", report_text_col(st, 12), report_text_col(st, 10));
        else
            strbuf_puts(&cell, report_text_col(st, 10));
        report_put(t, 7, cell.data);
        report_put(t, 8, report_text_col(st, 13));
    }
    strbuf_free(&cell);
    return continuity_finish(ctx, st, rc, alt);
}

int report_continuity_build(struct report_ctx *ctx, struct report_doc *doc, int trails)
{
    struct report_table *acc =
        report_table_add(doc, "accounting", "Accepted messages and their final states",
                         "accepted:i complete:i in_queue:i unaccounted:i queue instances:i");
    struct report_table *open =
        report_table_add(doc, "open", "Messages without a final state for every recipient",
                         "received queue_id message_id sender recipients:i final:i state instance");
    if (continuity_accounting(ctx, acc, open) < 0) return -1;
    if (trails) {
        struct report_table *t = report_table_add(
            doc, "trail", "Trail of each message (acceptance to remote reply or DSN)",
            "time queue_id event recipient egress remote reply detail instance");
        if (continuity_trails(ctx, t) < 0) return -1;
    }
    strbuf_puts(&doc->notes,
                "complete: every recipient delivered, bounced or expired (or suppressed as a "
                "duplicate of a delivery of the same Message-ID to the same recipient in these "
                "records), or the message deleted.\n"
                "unaccounted: neither complete nor in the running relay's queue (must be 0).\n");
    return 0;
}
