/* queue_control.c - the operator's view of the queue manager: queue_control() (list, show,
 * hold, release, flush, delete) and the counts (queue_size, queue_stats). Sets a message's
 * operator flags and retry times, then leaves marks, records and scheduling to queue.c; never
 * frees a message. Loop thread only. */
#include <stdio.h>
#include <string.h>

#include "common/hashmap.h"
#include "common/clock.h"
#include "common/util.h"
#include "deliver/queue.h"
#include "deliver/queue_internal.h"

size_t queue_size(void)
{
    return queue_by_id ? hashmap_count(queue_by_id) : 0;
}

void queue_stats(size_t *active, size_t *deferred, size_t *held)
{
    int64_t now = clock_now();
    struct message *m;
    *active = *deferred = *held = 0;
    TAILQ_FOREACH(m, &queue_messages, link)
    {
        if (m->held) {
            (*held)++;
            continue;
        }
        int waiting = m->inflight == 0 && m->prep_pending == 0;
        for (size_t i = 0; waiting && i < m->env->n_rcpts; i++)
            if (m->r[i].state == RCPT_PENDING && m->r[i].next_try <= now) waiting = 0;
        if (waiting && !queue_all_final(m))
            (*deferred)++;
        else
            (*active)++;
    }
}
/* --- operator commands ------------------------------------------------------------------------ */

static const char *rcpt_state_text(const struct message *m, size_t i)
{
    const struct rcpt *r = &m->r[i];
    if (r->state == RCPT_INFLIGHT) return "in delivery";
    if (r->state == RCPT_FINAL)
        return r->final == 'D' ? "delivered" : r->final == 'B' ? "bounced" : "expired";
    if (m->held) return "held";
    return r->attempts ? "deferred" : "queued";
}

static void list_message(const struct message *m, struct strbuf *out, int verbose)
{
    char date[64];
    util_rfc5322_date(m->env->arrival, date, sizeof date);
    strbuf_printf(out, "%s%s %8lld %s <%s>\n", m->env->queue_id, m->held ? "!" : " ",
                  (long long)m->env->size, date, m->env->sender);
    for (size_t i = 0; i < m->env->n_rcpts; i++) {
        const struct rcpt *r = &m->r[i];
        if (!verbose && r->state == RCPT_FINAL) continue;
        strbuf_printf(out, "    <%s> %s", m->env->rcpts[i].address, rcpt_state_text(m, i));
        if (r->last_reply && r->state != RCPT_INFLIGHT) strbuf_printf(out, " (%s)", r->last_reply);
        if (r->state == RCPT_PENDING && r->attempts && !m->held)
            strbuf_printf(out, " next attempt in %llds",
                          (long long)(r->next_try > clock_now() ? r->next_try - clock_now() : 0));
        strbuf_puts(out, "\n");
    }
}

static struct message *find(const char *id, struct strbuf *out)
{
    struct message *m = *id ? hashmap_get(queue_by_id, id) : NULL;
    if (!m) strbuf_printf(out, "no message %s in the queue\n", *id ? id : "(no id given)");
    return m;
}

int queue_control(const char *command, struct strbuf *out)
{
    char verb[16] = "", id[64] = "";
    sscanf(command, "%15s %63s", verb, id);
    struct message *m;
    if (strcmp(verb, "list") == 0) {
        TAILQ_FOREACH(m, &queue_messages, link)
        list_message(m, out, 0);
        size_t n = queue_size();
        strbuf_printf(out, "-- %zu message%s in the queue\n", n, n == 1 ? "" : "s");
        return 0;
    }
    if (strcmp(verb, "flush") == 0) {
        int64_t now = clock_now();
        size_t n = 0;
        TAILQ_FOREACH(m, &queue_messages, link)
        {
            for (size_t i = 0; i < m->env->n_rcpts; i++)
                if (m->r[i].state == RCPT_PENDING) m->r[i].next_try = now;
            if (!m->held) n++;
            queue_schedule(m, now);
        }
        strbuf_printf(out, "flushed %zu message%s\n", n, n == 1 ? "" : "s");
        return 0;
    }
    if (!(m = find(id, out))) return -1;
    if (strcmp(verb, "show") == 0) {
        const struct envelope *e = m->env;
        strbuf_printf(out, "queue id:    %s\norigin:      %s\nclient:      %s (helo %s)\n",
                      e->queue_id, e->origin, e->client_addr, e->helo ? e->helo : "");
        strbuf_printf(out,
                      "sender:      <%s>\nmessage-id:  %s\nfrom domain: %s\nsize:        %lld\n",
                      e->sender, e->message_id ? e->message_id : "(none)",
                      e->from_domain ? e->from_domain : "(none)", (long long)e->size);
        strbuf_printf(out, "held:        %s\n", m->held ? "yes" : "no");
        list_message(m, out, 1);
        return 0;
    }
    if (strcmp(verb, "hold") == 0) {
        if (!m->held) {
            m->held = 1;
            queue_submit_mark(m, SIZE_MAX, SPOOL_MARK_HELD);
            queue_emit("held", m, SIZE_MAX, NULL, NULL, NULL, "held by the operator");
        }
        strbuf_printf(out, "%s: held\n", m->env->queue_id);
        return 0;
    }
    if (strcmp(verb, "release") == 0) {
        if (m->held) {
            m->held = 0;
            m->alignment_released = 1;
            queue_submit_mark(m, SIZE_MAX, SPOOL_MARK_RELEASED);
            queue_emit("released", m, SIZE_MAX, NULL, NULL, NULL, "released by the operator");
            int64_t now = clock_now();
            for (size_t i = 0; i < m->env->n_rcpts; i++)
                if (m->r[i].state == RCPT_PENDING) m->r[i].next_try = now;
            queue_schedule(m, now);
        }
        strbuf_printf(out, "%s: released\n", m->env->queue_id);
        return 0;
    }
    if (strcmp(verb, "delete") == 0) {
        if (!m->deleted) {
            m->deleted = 1;
            queue_emit("deleted", m, SIZE_MAX, NULL, NULL, NULL, "deleted by the operator");
            queue_submit_mark(m, SIZE_MAX, SPOOL_MARK_DELETED);
        }
        strbuf_printf(out, "%s: deleted\n", id);
        return 0;
    }
    strbuf_printf(out, "unknown queue command \"%s\"\n", verb);
    return -1;
}
