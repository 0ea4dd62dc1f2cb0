/* qmgr_compact.c - keeps the spool from growing behind a long-deferred message. Segments go
 * oldest first (a mark must outlive the message it finishes), so one message deferred for days
 * would pin every segment written since. Every few seconds, the messages that pin the oldest
 * segment are written again into the active one (same queue id: on recovery the later record
 * wins), followed by their final marks and hold; once that is durable their old pins go and the
 * old segment can be deleted. Calls down only (qmgr_rcpt.c, qmgr_message.c); called by the top's
 * slow timer (qmgr.c); loop thread only. */
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "qmgr/qmgr_compact.h"
#include "qmgr/qmgr_rcpt.h"

#define COMPACT_BATCH 500 /* messages moved per pass at most */
#define COMPACT_LAG 4     /* segments between the oldest and the active one before we act */

struct relocation {
    struct message *m;
    uint64_t *old_pins;
    size_t n_old;
};

static void relocated(void *arg, int status, const struct spool_loc *loc, const char *err)
{
    struct relocation *r = arg;
    struct message *m = r->m;
    m->marks_pending--;
    m->relocating = 0;
    if (status == 0) {
        qmgr_message_moved(m, loc);
        for (size_t i = 0; i < r->n_old; i++)
            spool_unpin(m->q->spool, r->old_pins[i]);
    } else {
        /* still where it was: keep the old pins */
        log_error("%s: spool compaction: %s", m->env->queue_id, err);
        for (size_t i = 0; i < r->n_old; i++)
            qmgr_message_add_pin(m, r->old_pins[i]);
    }
    free(r->old_pins);
    free(r);
    qmgr_message_maybe_forget(m);
}

static int pins_segment(const struct message *m, uint64_t seg)
{
    for (size_t i = 0; i < m->n_pins; i++)
        if (m->pins[i] == seg) return 1;
    return 0;
}

static void relocate(struct message *m)
{
    struct strbuf data = STRBUF_INIT, env = STRBUF_INIT;
    if (qmgr_message_original(m, &data) < 0) {
        strbuf_free(&data);
        return;
    }
    envelope_serialize(m->env, &env);
    struct relocation *r = xcalloc(1, sizeof *r);
    r->m = m;
    r->old_pins = m->pins; /* the new record and the marks below pin afresh */
    r->n_old = m->n_pins;
    m->pins = NULL;
    m->n_pins = 0;
    m->relocating = 1;
    m->marks_pending++;
    spool_submit_message(m->q->spool, env.data, env.len, data.data, data.len, relocated, r);
    for (size_t i = 0; i < m->env->n_rcpts; i++)
        if (m->r[i].state == RCPT_FINAL) qmgr_submit_mark(m, i, (enum spool_mark)m->r[i].final);
    if (m->held) qmgr_submit_mark(m, SIZE_MAX, SPOOL_MARK_HELD);
    if (m->delay_warned) qmgr_submit_mark(m, SIZE_MAX, SPOOL_MARK_WARNED);
    strbuf_free(&data);
    strbuf_free(&env);
}

void qmgr_compact(struct qmgr *q, int64_t now)
{
    if (now - q->last_compact < 5) return;
    q->last_compact = now;
    /* Only once a few segments have piled up behind the oldest: a deferred message is then
     * rewritten once per several segments of traffic, not at every rotation. */
    uint64_t oldest = spool_oldest_segment(q->spool);
    if (!oldest || spool_active_segment(q->spool) - oldest < COMPACT_LAG) return;
    size_t moved = 0;
    struct message *m;
    TAILQ_FOREACH(m, &q->messages, link)
    {
        if (moved == COMPACT_BATCH) break;
        if (m->relocating || m->deleted || m->inflight || m->marks_pending || m->prep_pending ||
            !pins_segment(m, oldest))
            continue;
        relocate(m);
        moved++;
    }
    if (moved)
        log_info("spool: %zu message%s moved out of segment %llu", moved, moved == 1 ? "" : "s",
                 (unsigned long long)oldest);
}
