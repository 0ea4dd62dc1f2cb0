/* qmgr_control.c - the operator's view of the queue manager: qmgr_control() (list, show,
 * shape, hold, release, flush, delete; one message by id or many by selector: --domain,
 * --sender, --egress, ALL; text or --json) and the counts (qmgr_stats). Reads messages; every
 * change (hold, release, delete, retry now) goes through qmgr_rcpt.c's qmgr_message_* functions;
 * never frees a message. Calls down only (qmgr_rcpt.c, qmgr_message.c); called through qmgr.h's
 * wrappers in qmgr.c; loop thread only. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/clock.h"
#include "common/hashmap.h"
#include "common/json.h"
#include "common/util.h"
#include "qmgr/qmgr_control.h"
#include "qmgr/qmgr_rcpt.h"

void qmgr_count_states(struct qmgr *q, size_t *active, size_t *deferred, size_t *held)
{
    int64_t now = clock_now();
    struct message *m;
    TAILQ_FOREACH(m, &q->messages, link)
    {
        if (m->held) {
            (*held)++;
            continue;
        }
        int waiting = m->inflight == 0 && m->prep_pending == 0;
        for (size_t i = 0; waiting && i < m->env->n_rcpts; i++)
            if (m->r[i].state == RCPT_PENDING && m->r[i].next_try <= now) waiting = 0;
        if (waiting && !qmgr_all_final(m))
            (*deferred)++;
        else
            (*active)++;
    }
}
/* --- the request: verb, selector, options ----------------------------------------------------- */

#define MAX_WORDS 8

enum selector_kind { SEL_NONE, SEL_ID, SEL_DOMAIN, SEL_SENDER, SEL_EGRESS, SEL_ALL };

struct request {
    struct qmgr *q;
    char verb[16];
    enum selector_kind sel;
    const char *value; /* the id, domain, sender or egress; points into the words */
    const char *by;    /* shape --by */
    int json;
};

static const char *const selector_names[] = {"", "id", "domain", "sender", "egress", "all"};

/* Splits command (modified in place) into a request; fills out and returns -1 on a mistake. */
static int parse_request(char *command, struct request *req, struct strbuf *out)
{
    char *words[MAX_WORDS];
    int n = 0;
    for (char *save = NULL, *w = strtok_r(command, " \t", &save); w;
         w = strtok_r(NULL, " \t", &save)) {
        if (n == MAX_WORDS) {
            strbuf_puts(out, "too many words in the queue command\n");
            return -1;
        }
        words[n++] = w;
    }
    memset(req, 0, sizeof *req);
    if (n == 0) {
        strbuf_puts(out, "no queue command given\n");
        return -1;
    }
    snprintf(req->verb, sizeof req->verb, "%s", words[0]);
    for (int i = 1; i < n; i++) {
        const char *w = words[i];
        enum selector_kind kind = SEL_NONE;
        if (!strcmp(w, "--json")) {
            req->json = 1;
            continue;
        }
        if (!strcmp(w, "--by")) {
            if (i + 1 >= n) {
                strbuf_puts(out, "--by needs domain, sender or egress\n");
                return -1;
            }
            req->by = words[++i];
            continue;
        }
        if (!strcmp(w, "--domain")) kind = SEL_DOMAIN;
        if (!strcmp(w, "--sender")) kind = SEL_SENDER;
        if (!strcmp(w, "--egress")) kind = SEL_EGRESS;
        if (!strcmp(w, "ALL")) kind = SEL_ALL;
        if (kind == SEL_NONE && w[0] == '-') {
            strbuf_printf(out, "unknown option \"%s\"\n", w);
            return -1;
        }
        if (kind == SEL_NONE) kind = SEL_ID;
        if (req->sel != SEL_NONE) {
            strbuf_puts(out, "give one selector: ID, --domain D, --sender S, --egress E or ALL\n");
            return -1;
        }
        req->sel = kind;
        if (kind == SEL_ID) {
            req->value = w;
        } else if (kind != SEL_ALL) {
            if (i + 1 >= n) {
                strbuf_printf(out, "%s needs a value\n", w);
                return -1;
            }
            req->value = words[++i];
        }
    }
    return 0;
}

static const char *address_domain(const char *address)
{
    const char *at = strrchr(address, '@');
    return at ? at + 1 : "";
}

/* Whether m is chosen by the selector. Deleted messages are gone for the operator; domain and
 * egress look at the recipients not final yet. */
static int selected(const struct message *m, const struct request *req)
{
    if (m->deleted) return 0;
    switch (req->sel) {
    case SEL_NONE:
    case SEL_ALL:
        return 1;
    case SEL_ID:
        return !strcmp(m->env->queue_id, req->value);
    case SEL_SENDER:
        if (req->value[0] == '@')
            return !strcasecmp(address_domain(m->env->sender), req->value + 1);
        return !strcasecmp(m->env->sender, req->value);
    case SEL_DOMAIN:
    case SEL_EGRESS:
        for (size_t i = 0; i < m->env->n_rcpts; i++) {
            const struct rcpt *r = &m->r[i];
            if (r->state == RCPT_FINAL) continue;
            if (req->sel == SEL_DOMAIN &&
                !strcasecmp(address_domain(m->env->rcpts[i].address), req->value))
                return 1;
            if (req->sel == SEL_EGRESS && r->routed && !strcmp(r->routed->name, req->value))
                return 1;
        }
        return 0;
    }
    return 0;
}

static size_t open_rcpts(const struct message *m)
{
    size_t n = 0;
    for (size_t i = 0; i < m->env->n_rcpts; i++)
        n += m->r[i].state != RCPT_FINAL;
    return n;
}

/* --- list and show ------------------------------------------------------------------------------
 */

static const char *rcpt_state_text(const struct message *m, size_t i)
{
    const struct rcpt *r = &m->r[i];
    if (r->state == RCPT_INFLIGHT) return "in delivery";
    if (r->state == RCPT_FINAL)
        return r->final == 'D' ? "delivered" : r->final == 'B' ? "bounced" : "expired";
    if (m->held) return "held";
    return r->attempts ? "deferred" : "queued";
}

static int64_t next_attempt_in(const struct message *m, size_t i, int64_t now)
{
    const struct rcpt *r = &m->r[i];
    if (r->state != RCPT_PENDING || !r->attempts || m->held) return -1;
    return r->next_try > now ? r->next_try - now : 0;
}

static void list_message(const struct message *m, struct strbuf *out, int verbose)
{
    char date[64];
    int64_t now = clock_now();
    util_rfc5322_date(m->env->arrival, date, sizeof date);
    strbuf_printf(out, "%s%s %8lld %s <%s>\n", m->env->queue_id, m->held ? "!" : " ",
                  (long long)m->env->size, date, m->env->sender);
    for (size_t i = 0; i < m->env->n_rcpts; i++) {
        const struct rcpt *r = &m->r[i];
        if (!verbose && r->state == RCPT_FINAL) continue;
        strbuf_printf(out, "    <%s> %s", m->env->rcpts[i].address, rcpt_state_text(m, i));
        if (r->last_reply && r->state != RCPT_INFLIGHT) strbuf_printf(out, " (%s)", r->last_reply);
        int64_t next = next_attempt_in(m, i, now);
        if (next >= 0) strbuf_printf(out, " next attempt in %llds", (long long)next);
        strbuf_puts(out, "\n");
    }
}

static void list_message_json(const struct message *m, struct json_writer *w, int verbose)
{
    const struct envelope *e = m->env;
    int64_t now = clock_now();
    json_object_begin(w, NULL);
    json_string(w, "queue_id", e->queue_id);
    json_bool(w, "held", m->held);
    json_int(w, "size", e->size);
    json_int(w, "arrival", e->arrival);
    json_string(w, "sender", e->sender);
    if (verbose) {
        json_string(w, "origin", e->origin);
        json_string(w, "client", e->client_addr);
        json_string(w, "helo", e->helo);
        json_string(w, "message_id", e->message_id);
        json_string(w, "from_domain", e->from_domain);
    }
    json_array_begin(w, "recipients");
    for (size_t i = 0; i < e->n_rcpts; i++) {
        const struct rcpt *r = &m->r[i];
        if (!verbose && r->state == RCPT_FINAL) continue;
        json_object_begin(w, NULL);
        json_string(w, "address", e->rcpts[i].address);
        json_string(w, "state", rcpt_state_text(m, i));
        json_int(w, "attempts", r->attempts);
        json_string(w, "last_reply", r->state != RCPT_INFLIGHT ? r->last_reply : NULL);
        json_string(w, "egress", r->routed ? r->routed->name : NULL);
        int64_t next = next_attempt_in(m, i, now);
        if (next >= 0)
            json_int(w, "next_attempt_in", next);
        else
            json_null(w, "next_attempt_in");
        json_object_end(w);
    }
    json_array_end(w);
    json_object_end(w);
}

static int command_list(const struct request *req, struct strbuf *out)
{
    struct json_writer w;
    struct message *m;
    size_t n = 0;
    if (req->json) {
        json_init(&w, out);
        json_object_begin(&w, NULL);
        json_array_begin(&w, "messages");
    }
    TAILQ_FOREACH(m, &req->q->messages, link)
    {
        if (req->sel != SEL_NONE && !selected(m, req)) continue;
        n++;
        if (req->json)
            list_message_json(m, &w, 0);
        else
            list_message(m, out, 0);
    }
    if (req->sel == SEL_NONE) n = hashmap_count(req->q->by_id);
    if (req->json) {
        json_array_end(&w);
        json_int(&w, "count", (int64_t)n);
        json_object_end(&w);
        strbuf_puts(out, "\n");
    } else {
        strbuf_printf(out, "-- %zu message%s %s\n", n, n == 1 ? "" : "s",
                      req->sel == SEL_NONE ? "in the queue" : "selected");
    }
    return 0;
}

static int command_show(const struct request *req, struct strbuf *out)
{
    const struct message *m = req->sel == SEL_ID ? qmgr_message_find(req->q, req->value) : NULL;
    if (!m || m->deleted) {
        strbuf_printf(out, "no message %s in the queue\n",
                      req->sel == SEL_ID ? req->value : "(no id given)");
        return -1;
    }
    const struct envelope *e = m->env;
    if (req->json) {
        struct json_writer w;
        json_init(&w, out);
        list_message_json(m, &w, 1);
        strbuf_puts(out, "\n");
        return 0;
    }
    strbuf_printf(out, "queue id:    %s\norigin:      %s\nclient:      %s (helo %s)\n", e->queue_id,
                  e->origin, e->client_addr, e->helo ? e->helo : "");
    strbuf_printf(out, "sender:      <%s>\nmessage-id:  %s\nfrom domain: %s\nsize:        %lld\n",
                  e->sender, e->message_id ? e->message_id : "(none)",
                  e->from_domain ? e->from_domain : "(none)", (long long)e->size);
    strbuf_printf(out, "held:        %s\n", m->held ? "yes" : "no");
    list_message(m, out, 1);
    return 0;
}
/* --- hold, release, delete, flush ------------------------------------------------------------- */

/* Each returns whether it changed m. Every message changes by itself: one spool mark for the
 * whole message, so a crash in the middle of a bulk command leaves each message either done or
 * untouched. */
static int act_hold(struct message *m, int64_t now)
{
    (void)now;
    if (m->held) return 0;
    qmgr_message_hold(m, "held by the operator");
    return 1;
}

static int act_release(struct message *m, int64_t now)
{
    if (!m->held) return 0;
    qmgr_message_release(m, now);
    return 1;
}

static int act_delete(struct message *m, int64_t now)
{
    (void)now;
    if (m->deleted) return 0;
    qmgr_message_delete(m);
    return 1;
}

/* Held messages keep their hold: flush retries what may be sent. */
static int act_flush(struct message *m, int64_t now)
{
    qmgr_message_retry_now(m, now);
    if (m->held) return 0;
    qmgr_schedule(m, now);
    return 1;
}

static const struct action {
    const char *verb;
    const char *done; /* past tense, for the answer */
    int (*act)(struct message *m, int64_t now);
} actions[] = {
    {"hold", "held", act_hold},
    {"release", "released", act_release},
    {"delete", "deleted", act_delete},
    {"flush", "flushed", act_flush},
};

static void describe_selector(const struct request *req, struct strbuf *out)
{
    if (req->sel == SEL_ALL || req->sel == SEL_NONE)
        strbuf_puts(out, "ALL");
    else if (req->sel == SEL_ID)
        strbuf_puts(out, req->value);
    else
        strbuf_printf(out, "--%s %s", selector_names[req->sel], req->value);
}

static int command_action(const struct action *a, const struct request *req, struct strbuf *out)
{
    int64_t now = clock_now();
    size_t matched = 0, changed = 0, rcpts = 0;
    struct message *m, *next;
    if (req->sel == SEL_NONE && strcmp(a->verb, "flush") != 0) {
        strbuf_printf(out, "queue %s needs ID, --domain D, --sender S, --egress E or ALL\n",
                      a->verb);
        return -1;
    }
    if (req->sel == SEL_ID) {
        m = qmgr_message_find(req->q, req->value);
        if (!m || (m->deleted && strcmp(a->verb, "delete") != 0)) {
            strbuf_printf(out, "no message %s in the queue\n", req->value);
            return -1;
        }
    }
    for (m = TAILQ_FIRST(&req->q->messages); m; m = next) {
        next = TAILQ_NEXT(m, link); /* nothing is freed here, but do not rely on it */
        if (!selected(m, req) &&
            !(req->sel == SEL_ID && m->deleted && !strcmp(m->env->queue_id, req->value)))
            continue;
        matched++;
        size_t open = open_rcpts(m);
        if (a->act(m, now)) {
            changed++;
            rcpts += open;
        }
    }
    if (req->json) {
        struct json_writer w;
        json_init(&w, out);
        json_object_begin(&w, NULL);
        json_string(&w, "action", a->verb);
        json_object_begin(&w, "selector");
        json_string(&w, "kind", req->sel == SEL_NONE ? "all" : selector_names[req->sel]);
        json_string(&w, "value", req->value);
        json_object_end(&w);
        json_int(&w, "matched", (int64_t)matched);
        json_int(&w, "messages", (int64_t)changed);
        json_int(&w, "recipients", (int64_t)rcpts);
        json_object_end(&w);
        strbuf_puts(out, "\n");
    } else if (req->sel == SEL_ID) {
        strbuf_printf(out, "%s: %s\n", req->value, a->done); /* the answer before bulk selectors */
    } else {
        strbuf_printf(out, "%s %zu message%s (%zu recipient%s) of %zu matching ", a->done, changed,
                      changed == 1 ? "" : "s", rcpts, rcpts == 1 ? "" : "s", matched);
        describe_selector(req, out);
        strbuf_puts(out, "\n");
    }
    return 0;
}

/* --- shape: pending recipients per domain x age, like Postfix's qshape ----------------------- */

/* Upper bounds in minutes of the age buckets; the last bucket is everything older. */
static const int shape_bounds[] = {5, 10, 20, 40, 80, 160, 320, 640, 1280};
#define SHAPE_BUCKETS (sizeof shape_bounds / sizeof shape_bounds[0] + 1)

struct shape_row {
    const char *key; /* owned by the map */
    size_t total, held;
    size_t bucket[SHAPE_BUCKETS];
};

struct shape_rows {
    struct shape_row **rows;
    size_t n;
};

static void collect_row(void *arg, const char *key, void *value)
{
    struct shape_rows *all = arg;
    struct shape_row *row = value;
    row->key = key;
    all->rows[all->n++] = row;
}

static int compare_rows(const void *a, const void *b)
{
    const struct shape_row *x = *(struct shape_row *const *)a, *y = *(struct shape_row *const *)b;
    if (x->total != y->total) return x->total > y->total ? -1 : 1;
    return strcmp(x->key, y->key);
}

static size_t shape_bucket(int64_t age_seconds)
{
    size_t b = 0;
    while (b < SHAPE_BUCKETS - 1 && age_seconds >= (int64_t)shape_bounds[b] * 60)
        b++;
    return b;
}

static void shape_count(struct shape_row *row, size_t bucket, int held)
{
    row->total++;
    row->held += held != 0;
    row->bucket[bucket]++;
}

static void shape_text_row(struct strbuf *out, const char *key, const struct shape_row *row,
                           int width)
{
    strbuf_printf(out, "%*s %6zu", width, key, row->total);
    for (size_t b = 0; b < SHAPE_BUCKETS; b++)
        strbuf_printf(out, " %5zu", row->bucket[b]);
    strbuf_printf(out, " %6zu\n", row->held);
}

static void shape_json_row(struct json_writer *w, const char *key, const struct shape_row *row)
{
    json_object_begin(w, NULL);
    json_string(w, "key", key);
    json_int(w, "total", (int64_t)row->total);
    json_int(w, "held", (int64_t)row->held);
    json_array_begin(w, "buckets");
    for (size_t b = 0; b < SHAPE_BUCKETS; b++)
        json_int(w, NULL, (int64_t)row->bucket[b]);
    json_array_end(w);
    json_object_end(w);
}

static int command_shape(const struct request *req, struct strbuf *out)
{
    const char *by = req->by ? req->by : "domain";
    if (strcmp(by, "domain") && strcmp(by, "sender") && strcmp(by, "egress")) {
        strbuf_printf(out, "--by %s: expected domain, sender or egress\n", by);
        return -1;
    }
    int64_t now = clock_now();
    struct hashmap *map = hashmap_new();
    struct shape_row total = {.key = "TOTAL"};
    struct message *m;
    TAILQ_FOREACH(m, &req->q->messages, link)
    {
        if (!selected(m, req)) continue;
        size_t bucket = shape_bucket(now - m->env->arrival);
        for (size_t i = 0; i < m->env->n_rcpts; i++) {
            const struct rcpt *r = &m->r[i];
            if (r->state == RCPT_FINAL) continue;
            char key[256];
            const char *k;
            if (!strcmp(by, "sender"))
                k = m->env->sender[0] ? address_domain(m->env->sender) : "MAILER-DAEMON";
            else if (!strcmp(by, "egress"))
                k = r->routed ? r->routed->name : "(not routed)";
            else
                k = address_domain(m->env->rcpts[i].address);
            snprintf(key, sizeof key, "%s", k);
            qmgr_lowercase(key);
            struct shape_row *row = hashmap_get(map, key);
            if (!row) {
                row = xcalloc(1, sizeof *row);
                hashmap_put(map, key, row);
            }
            shape_count(row, bucket, m->held);
            shape_count(&total, bucket, m->held);
        }
    }
    struct shape_rows all = {xcalloc(hashmap_count(map) + 1, sizeof *all.rows), 0};
    hashmap_foreach(map, collect_row, &all);
    qsort(all.rows, all.n, sizeof *all.rows, compare_rows);
    if (req->json) {
        struct json_writer w;
        json_init(&w, out);
        json_object_begin(&w, NULL);
        json_string(&w, "by", by);
        json_array_begin(&w, "buckets");
        for (size_t b = 0; b + 1 < SHAPE_BUCKETS; b++)
            json_int(&w, NULL, shape_bounds[b]);
        json_string(&w, NULL, "1280+");
        json_array_end(&w);
        json_object_begin(&w, "total");
        json_int(&w, "total", (int64_t)total.total);
        json_int(&w, "held", (int64_t)total.held);
        json_array_begin(&w, "buckets");
        for (size_t b = 0; b < SHAPE_BUCKETS; b++)
            json_int(&w, NULL, (int64_t)total.bucket[b]);
        json_array_end(&w);
        json_object_end(&w);
        json_array_begin(&w, "rows");
        for (size_t i = 0; i < all.n; i++)
            shape_json_row(&w, all.rows[i]->key, all.rows[i]);
        json_array_end(&w);
        json_object_end(&w);
        strbuf_puts(out, "\n");
    } else {
        int width = 6;
        for (size_t i = 0; i < all.n; i++)
            if ((int)strlen(all.rows[i]->key) > width) width = (int)strlen(all.rows[i]->key);
        if (width > 60) width = 60;
        strbuf_printf(out,
                      "pending recipients by %s and age in minutes (held included, last "
                      "column):\n",
                      by);
        strbuf_printf(out, "%*s %6s", width, "", "T");
        for (size_t b = 0; b + 1 < SHAPE_BUCKETS; b++)
            strbuf_printf(out, " %5d", shape_bounds[b]);
        strbuf_printf(out, " %5s %6s\n", "1280+", "held");
        shape_text_row(out, "TOTAL", &total, width);
        for (size_t i = 0; i < all.n; i++)
            shape_text_row(out, all.rows[i]->key, all.rows[i], width);
    }
    for (size_t i = 0; i < all.n; i++)
        free(all.rows[i]);
    free(all.rows);
    hashmap_free(map);
    return 0;
}

/* --- the entry point ------------------------------------------------------------------------- */

static int command_run(const struct request *req, struct strbuf *out)
{
    if (!strcmp(req->verb, "list")) return command_list(req, out);
    if (!strcmp(req->verb, "shape")) return command_shape(req, out);
    if (!strcmp(req->verb, "show")) return command_show(req, out);
    for (size_t i = 0; i < sizeof actions / sizeof actions[0]; i++)
        if (!strcmp(req->verb, actions[i].verb)) return command_action(&actions[i], req, out);
    strbuf_printf(out,
                  "unknown queue command \"%s\" (expected: list, show, shape, hold, release, "
                  "delete, flush)\n",
                  req->verb);
    return -1;
}

int qmgr_control_run(struct qmgr *q, const char *command, struct strbuf *out)
{
    char *copy = xstrdup(command ? command : "");
    struct request req;
    int rc = parse_request(copy, &req, out);
    req.q = q;
    if (rc == 0) rc = command_run(&req, out);
    free(copy);
    return rc;
}
