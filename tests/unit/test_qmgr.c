/* test_qmgr.c - unit tests for the queue manager (outrelay/qmgr/) on its own: the timer heap
 * (order, removal, re-keying, many entries), the stage table's order and retries, scheduling
 * of due and not-due messages under an injected clock, and qmgr_rcpt_finalize's transitions
 * with a real spool in a mkdtemp directory; the callbacks the SMTP client calls back through
 * (qmgr_dest_owner) and the core's forgetting hook. Fake stages and a fake delivery step stand in
 * for sign, check, route and the SMTP client. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <dirent.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <unistd.h>

#include "common/util.h"
#include "injected_clock.h"
#include "qmgr/qmgr_heap.h"
#include "qmgr/qmgr_dest.h"
#include "qmgr/qmgr_lookup.h"
#include "qmgr/qmgr_message.h"
#include "qmgr/qmgr_rcpt.h"
#include "mail/envelope.h"
#include "spool/spool.h"

#define T0 1800000000 /* 2027-01-15, seconds */

/* ---- the heap ------------------------------------------------------------------------------- */

static void test_heap_order(void **state)
{
    (void)state;
    struct qmgr_heap h;
    struct qmgr_timer t[6] = {{0, 0}};
    const int64_t at[6] = {50, 10, 40, 10, 30, 20};
    qmgr_heap_init(&h);
    for (size_t i = 0; i < 6; i++)
        qmgr_heap_set(&h, &t[i], at[i]);
    assert_int_equal(qmgr_heap_count(&h), 6);
    assert_null(qmgr_heap_pop_due(&h, 9));
    int64_t last = 0;
    struct qmgr_timer *x;
    size_t n = 0;
    while ((x = qmgr_heap_pop_due(&h, 100))) {
        assert_true(x->at >= last);
        assert_int_equal(x->slot, 0);
        last = x->at;
        n++;
    }
    assert_int_equal(n, 6);
    assert_null(qmgr_heap_top(&h));
    qmgr_heap_free(&h);
}

static void test_heap_remove_and_rekey(void **state)
{
    (void)state;
    struct qmgr_heap h;
    struct qmgr_timer t[5] = {{0, 0}};
    qmgr_heap_init(&h);
    for (size_t i = 0; i < 5; i++)
        qmgr_heap_set(&h, &t[i], (int64_t)(i + 1) * 10); /* 10 20 30 40 50 */
    qmgr_heap_remove(&h, &t[0]);
    qmgr_heap_remove(&h, &t[0]); /* not in: nothing happens */
    assert_int_equal(qmgr_heap_count(&h), 4);
    assert_ptr_equal(qmgr_heap_top(&h), &t[1]);
    qmgr_heap_set(&h, &t[4], 5); /* earlier: becomes the top */
    assert_ptr_equal(qmgr_heap_top(&h), &t[4]);
    qmgr_heap_set(&h, &t[4], 100); /* later: sinks */
    assert_ptr_equal(qmgr_heap_top(&h), &t[1]);
    qmgr_heap_remove(&h, &t[2]); /* from the middle */
    assert_ptr_equal(qmgr_heap_pop_due(&h, 1000), &t[1]);
    assert_ptr_equal(qmgr_heap_pop_due(&h, 1000), &t[3]);
    assert_ptr_equal(qmgr_heap_pop_due(&h, 1000), &t[4]);
    assert_null(qmgr_heap_pop_due(&h, 1000));
    qmgr_heap_set(&h, &t[0], 7); /* a removed timer goes back in */
    assert_ptr_equal(qmgr_heap_top(&h), &t[0]);
    qmgr_heap_free(&h);
    assert_int_equal(t[0].slot, 0);
}

static void test_heap_many(void **state)
{
    (void)state;
    enum { N = 20000 };
    struct qmgr_heap h;
    struct qmgr_timer *t = xcalloc(N, sizeof *t);
    unsigned seed = 12345;
    qmgr_heap_init(&h);
    for (size_t i = 0; i < N; i++)
        qmgr_heap_set(&h, &t[i], rand_r(&seed) % 100000);
    for (size_t i = 0; i < N; i += 3) /* re-key a third, remove a seventh */
        qmgr_heap_set(&h, &t[i], rand_r(&seed) % 100000);
    size_t removed = 0;
    for (size_t i = 0; i < N; i += 7, removed++)
        qmgr_heap_remove(&h, &t[i]);
    assert_int_equal(qmgr_heap_count(&h), N - removed);
    int64_t last = -1;
    size_t n = 0;
    struct qmgr_timer *x;
    while ((x = qmgr_heap_pop_due(&h, INT64_MAX))) {
        assert_true(x->at >= last);
        last = x->at;
        n++;
    }
    assert_int_equal(n, N - removed);
    for (size_t i = 0; i < N; i++)
        assert_int_equal(t[i].slot, 0);
    qmgr_heap_free(&h);
    free(t);
}

/* ---- a queue manager with fake stages and a fake delivery step ------------------------------ */

struct fixture {
    char dir[64];
    struct event_base *base;
    struct spool *sp;
    struct config cfg;
    struct qmgr *q;
};

static char trail[256];       /* what ran, in order: "a b deliver " */
static int64_t stage_b_retry; /* stage b asks to run again at this time once */
static int64_t deliver_defer; /* the fake delivery step defers every due recipient by this */

static void note(const char *what)
{
    strncat(trail, what, sizeof trail - strlen(trail) - 1);
    strncat(trail, " ", sizeof trail - strlen(trail) - 1);
}

static int hold_a;                /* stage a keeps messages (asynchronous) instead of ending */
static struct message *held_a[8]; /* the messages stage a keeps, in the order it started them */
static size_t n_held_a;

static void stage_a(struct message *m)
{
    note("a");
    if (hold_a && n_held_a < sizeof held_a / sizeof held_a[0]) {
        held_a[n_held_a++] = m;
        return;
    }
    qmgr_stage_done(m, 0);
}

static void stage_b(struct message *m)
{
    note("b");
    int64_t retry = stage_b_retry;
    stage_b_retry = 0;
    qmgr_stage_done(m, retry);
}

static const struct qmgr_stage test_stages[] = {{"a", stage_a}, {"b", stage_b}};

static void fake_deliver(struct message *m, int64_t now)
{
    note(m->env->queue_id);
    for (size_t i = 0; i < m->env->n_rcpts; i++)
        if (m->r[i].state == RCPT_PENDING && m->r[i].next_try <= now)
            qmgr_rcpt_defer(m, i, now + deliver_defer);
}

static void noop_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
}

static int recover_nothing(void *arg, const struct spool_recovered *msg)
{
    (void)arg;
    (void)msg;
    return 0;
}

static int setup(void **state)
{
    struct fixture *f = xcalloc(1, sizeof *f);
    char err[256];
    snprintf(f->dir, sizeof f->dir, "/tmp/outrelay-qmgr-XXXXXX");
    if (!mkdtemp(f->dir)) return -1;
    f->base = event_base_new();
    f->sp = spool_open(f->dir, f->base, err, sizeof err);
    if (!f->sp || spool_recover(f->sp, recover_nothing, NULL, err, sizeof err) < 0) return -1;
    f->cfg.hostname = "relay.test";
    f->cfg.max_lifetime = 5 * 86400;
    f->q = qmgr_new(f->base, &f->cfg, f->sp, test_stages, 2, fake_deliver);
    set_clock(T0);
    trail[0] = '\0';
    stage_b_retry = 0;
    deliver_defer = 300;
    hold_a = 0;
    n_held_a = 0;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    spool_close(f->sp); /* late mark callbacks still find their messages (as in main) */
    qmgr_free(f->q);
    DIR *d = opendir(f->dir);
    struct dirent *de;
    while (d && (de = readdir(d))) {
        char path[512];
        if (de->d_name[0] == '.') continue;
        snprintf(path, sizeof path, "%s/%s", f->dir, de->d_name);
        unlink(path);
    }
    if (d) closedir(d);
    rmdir(f->dir);
    event_base_free(f->base);
    free(f);
    return 0;
}

struct stored {
    int fired, status;
    struct spool_loc loc;
};

static void stored_cb(void *arg, int status, const struct spool_loc *loc, const char *err)
{
    (void)err;
    struct stored *s = arg;
    s->fired = 1;
    s->status = status;
    s->loc = *loc;
}

/* Runs the loop until *flag is set. */
static void run_until(struct fixture *f, const int *flag)
{
    struct event *tick = event_new(f->base, -1, EV_PERSIST, noop_cb, NULL);
    struct timeval tv = {0, 10000};
    event_add(tick, &tv);
    for (int i = 0; i < 500 && !*flag; i++)
        event_base_loop(f->base, EVLOOP_ONCE);
    event_free(tick);
    assert_true(*flag);
}

/* A message with n recipients, made durable in the spool, then handed to the queue. */
static struct message *add_message(struct fixture *f, const char *id, const char *sender, size_t n)
{
    struct envelope *env = envelope_new();
    snprintf(env->queue_id, sizeof env->queue_id, "%s", id);
    env->arrival = clock_now();
    env->sender = xstrdup(sender);
    env->origin = xstrdup("test");
    for (size_t i = 0; i < n; i++) {
        char rcpt[64];
        snprintf(rcpt, sizeof rcpt, "r%zu@example.net", i);
        envelope_add_rcpt(env, rcpt, NULL, 0);
    }
    struct strbuf text = STRBUF_INIT, data = STRBUF_INIT;
    envelope_serialize(env, &text);
    strbuf_puts(&data, "Subject: test\r\n\r\nbody\r\n");
    struct stored stored = {0};
    spool_submit_message(f->sp, text.data, text.len, data.data, data.len, stored_cb, &stored);
    run_until(f, &stored.fired);
    assert_int_equal(stored.status, 0);
    qmgr_intake(f->q, env, &stored.loc, &data);
    strbuf_free(&text);
    strbuf_free(&data);
    return qmgr_message_find(f->q, id);
}

/* As add_message, but the message comes back from the spool (recovery): its stages wait in the
 * backlog's line of the prepare window. */
static struct message *add_recovered(struct fixture *f, const char *id)
{
    struct envelope *env = envelope_new();
    snprintf(env->queue_id, sizeof env->queue_id, "%s", id);
    env->arrival = clock_now();
    env->sender = xstrdup("s@example.org");
    env->origin = xstrdup("test");
    envelope_add_rcpt(env, "r0@example.net", NULL, 0);
    struct spool_loc loc = {spool_active_segment(f->sp), 0, 0};
    struct message *m = qmgr_message_add(f->q, env, &loc);
    m->recovered = 1;
    qmgr_schedule(m, clock_now());
    return m;
}

/* Runs the loop until the spool has called back for every mark of m (or m is forgotten). */
static void settle(struct fixture *f, const char *id)
{
    struct event *tick = event_new(f->base, -1, EV_PERSIST, noop_cb, NULL);
    struct timeval tv = {0, 10000};
    event_add(tick, &tv);
    for (int i = 0; i < 500; i++) {
        struct message *m = qmgr_message_find(f->q, id);
        if (!m || m->marks_pending == 0) break;
        event_base_loop(f->base, EVLOOP_ONCE);
    }
    event_free(tick);
}

static void test_stage_table_order(void **state)
{
    struct fixture *f = *state;
    struct message *m = add_message(f, "Q1", "s@example.org", 1);
    assert_string_equal(trail, "a b Q1 ");
    assert_int_equal(m->stage, 2);
    assert_int_equal(m->prep_pending, 0);
    assert_int_equal(m->r[0].state, RCPT_PENDING);
    assert_int_equal(m->r[0].next_try, T0 + 300);
    assert_int_equal(m->due.at, T0 + 300); /* filed at its recipient's next try */
}

static void test_stage_retry(void **state)
{
    struct fixture *f = *state;
    stage_b_retry = T0 + 60;
    struct message *m = add_message(f, "Q1", "s@example.org", 1);
    assert_string_equal(trail, "a b ");
    assert_int_equal(m->stage, 1); /* stays at b */
    assert_int_equal(m->due.at, T0 + 60);
    qmgr_run_due(f->q, T0 + 59);
    assert_string_equal(trail, "a b ");
    set_clock(T0 + 60);
    qmgr_run_due(f->q, T0 + 60);
    assert_string_equal(trail, "a b b Q1 "); /* a is not run again */
}

static void test_only_due_messages_run(void **state)
{
    struct fixture *f = *state;
    deliver_defer = 100;
    add_message(f, "Q1", "s@example.org", 2); /* due again at T0+100 */
    set_clock(T0 + 10);
    deliver_defer = 20;
    add_message(f, "Q2", "s@example.org", 1); /* due again at T0+30 */
    trail[0] = '\0';
    assert_int_equal(qmgr_heap_count(&f->q->due), 2);
    assert_ptr_equal(qmgr_heap_top(&f->q->due), &qmgr_message_find(f->q, "Q2")->due);
    qmgr_run_due(f->q, T0 + 29);
    assert_string_equal(trail, ""); /* nothing due yet */
    set_clock(T0 + 30);
    deliver_defer = 1000;
    qmgr_run_due(f->q, T0 + 30);
    assert_string_equal(trail, "Q2 "); /* Q1 is not touched */
    assert_int_equal(qmgr_message_find(f->q, "Q2")->due.at, T0 + 1030);
    set_clock(T0 + 100);
    qmgr_run_due(f->q, T0 + 100);
    assert_string_equal(trail, "Q2 Q1 ");
    /* a held message leaves the schedule; release brings it back at once */
    struct message *m = qmgr_message_find(f->q, "Q1");
    m->held = 1;
    qmgr_rearm(m, T0 + 100);
    assert_int_equal(m->due.slot, 0);
    m->held = 0;
    qmgr_message_retry_now(m, T0 + 100);
    assert_int_equal(m->due.at, T0 + 100);
}

/* A recipient waiting for its domain's provider is looked at again when the answer comes, or
 * a second later at the latest; deleted messages leave the schedule. */
static void test_lookup_wait_and_delete(void **state)
{
    struct fixture *f = *state;
    deliver_defer = 0; /* the fake step leaves the recipient due, as a lookup in flight does */
    struct message *m = add_message(f, "Q1", "s@example.org", 1);
    m->waiting_lookup = 1;
    m->lookup_list = &f->q->lookup_waiting;
    TAILQ_INSERT_TAIL(&f->q->lookup_waiting, m, lookup_link);
    qmgr_rearm(m, T0);
    assert_int_equal(m->due.at, T0 + 1); /* the fallback, not a busy loop */
    qmgr_lookup_answered(f->q);
    assert_int_equal(m->waiting_lookup, 0);
    assert_int_equal(m->due.at, T0); /* due now: the wake timer runs it */
    qmgr_message_delete(m);
    assert_int_equal(m->due.slot, 0);
    assert_int_equal(qmgr_heap_count(&f->q->due), 0);
    qmgr_message_retry_now(m, T0); /* a flush does not bring it back */
    assert_int_equal(qmgr_heap_count(&f->q->due), 0);
}

static void test_finalize_delivered(void **state)
{
    struct fixture *f = *state;
    struct message *m = add_message(f, "Q1", "s@example.org", 2);
    struct rcpt_result ok = {.code = 250, .enhanced = "2.0.0", .text = "queued"};
    struct rcpt_outcome o = {.mark = SPOOL_MARK_DELIVERED, .res = &ok};
    qmgr_rcpt_finalize(m, 0, &o, NULL);
    assert_int_equal(m->r[0].state, RCPT_FINAL);
    assert_int_equal(m->r[0].final, 'D');
    assert_int_equal(m->marks_pending, 1);
    settle(f, "Q1");
    m = qmgr_message_find(f->q, "Q1");
    assert_non_null(m); /* r1 is still open */
    assert_int_equal(m->r[0].mark_committed, 1);
    qmgr_rcpt_finalize(m, 1, &o, NULL);
    settle(f, "Q1");
    assert_null(qmgr_message_find(f->q, "Q1")); /* all final and durable: forgotten */
}

static void test_finalize_bounce_and_expiry(void **state)
{
    struct fixture *f = *state;
    struct message *m = add_message(f, "Q1", "s@example.org", 3);
    struct rcpt_result no = {.code = 550, .text = "no such user"};
    struct rcpt_batch failed = {xmalloc(3 * sizeof *failed.idx), 0};
    qmgr_rcpt_record_reply(&m->r[0], &no, NULL);
    struct rcpt_outcome bounce = {.mark = SPOOL_MARK_BOUNCED, .res = &no};
    qmgr_rcpt_finalize(m, 0, &bounce, &failed);
    struct rcpt_outcome expire = {.mark = SPOOL_MARK_EXPIRED};
    qmgr_rcpt_finalize(m, 1, &expire, &failed);
    assert_string_equal(m->r[0].status, "5.0.0"); /* a bounce without enhanced code */
    assert_string_equal(m->r[1].status, "4.4.7");
    assert_int_equal(failed.n, 2);
    assert_int_equal(m->marks_pending, 0); /* no mark before the DSN is durable */
    qmgr_rcpt_batch_flush(m, &failed);
    free(failed.idx);
    assert_int_equal(failed.n, 0);
    assert_int_equal(m->marks_pending, 1); /* the DSN */
    settle(f, "Q1");
    m = qmgr_message_find(f->q, "Q1");
    assert_non_null(m);
    assert_int_equal(m->r[0].mark_committed, 1);
    assert_int_equal(m->r[1].mark_committed, 1);
    assert_int_equal(m->r[2].state, RCPT_PENDING);
    assert_int_equal(hashmap_count(f->q->by_id), 2); /* the DSN entered the queue */
}

static void test_finalize_null_sender_no_dsn(void **state)
{
    struct fixture *f = *state;
    struct message *m = add_message(f, "Q1", "", 1);
    struct rcpt_result no = {.code = 550, .enhanced = "5.1.1", .text = "no such user"};
    qmgr_rcpt_record_reply(&m->r[0], &no, NULL);
    struct rcpt_outcome bounce = {.mark = SPOOL_MARK_BOUNCED, .res = &no};
    qmgr_rcpt_finalize(m, 0, &bounce, NULL);
    assert_string_equal(m->r[0].status, "5.1.1");
    assert_int_equal(m->marks_pending, 1); /* the mark at once: no bounce for a bounce */
    settle(f, "Q1");
    assert_null(qmgr_message_find(f->q, "Q1"));
    assert_int_equal(hashmap_count(f->q->by_id), 0);
}

static char forgotten[256]; /* queue ids the forgetting hook saw, in order */

static void note_forgotten(const struct message *m)
{
    strncat(forgotten, m->env->queue_id, sizeof forgotten - strlen(forgotten) - 1);
    strncat(forgotten, " ", sizeof forgotten - strlen(forgotten) - 1);
}

/* The core calls the top's hook once, just before it frees a message, and never before. */
static void test_forgetting_hook(void **state)
{
    struct fixture *f = *state;
    forgotten[0] = '\0';
    f->q->forgetting = note_forgotten;
    struct message *m = add_message(f, "Q1", "s@example.org", 1);
    qmgr_message_maybe_forget(m); /* still pending: stays */
    assert_string_equal(forgotten, "");
    struct rcpt_result ok = {.code = 250, .enhanced = "2.0.0", .text = "queued"};
    struct rcpt_outcome o = {.mark = SPOOL_MARK_DELIVERED, .res = &ok};
    qmgr_rcpt_finalize(m, 0, &o, NULL);
    assert_string_equal(forgotten, ""); /* the mark is not durable yet */
    settle(f, "Q1");
    assert_null(qmgr_message_find(f->q, "Q1"));
    assert_string_equal(forgotten, "Q1 ");
}

/* What the SMTP client calls back: the job's message and envelope, its outcome per recipient
 * (delivered, deferred), and a destination's back-off after a failed connection. */
static void test_dest_owner_callbacks(void **state)
{
    struct fixture *f = *state;
    const struct smtpc_owner *owner = qmgr_dest_owner();
    struct egress_conf egress = {.name = "direct"};
    struct dest d = {.owner = f->q, .egress = &egress, .key = "direct/example.net"};
    TAILQ_INIT(&d.jobs);
    LIST_INIT(&d.idle);
    struct message *m = add_message(f, "Q1", "s@example.org", 2);
    const size_t both[2] = {0, 1};
    struct job *j = qmgr_job_new(&d, m, both, 2);
    assert_int_equal(m->r[0].state, RCPT_INFLIGHT);

    assert_ptr_equal(owner->message_envelope(j), m->env);
    struct strbuf out = STRBUF_INIT;
    assert_int_equal(owner->message_data(j, &out), 0);
    assert_non_null(strstr(out.data, "Subject: test\r\n"));
    strbuf_free(&out);

    smtpc_job_fail_all(j, 250, "2.0.0", "queued");
    j->results[1].code = 451;
    owner->job_done(j, NULL); /* frees the job */
    assert_int_equal(m->inflight, 0);
    assert_int_equal(m->has_data, 0); /* later attempts read the spool */
    assert_int_equal(m->r[0].state, RCPT_FINAL);
    assert_int_equal(m->r[0].final, 'D');
    assert_int_equal(m->r[1].state, RCPT_PENDING);
    assert_true(m->r[1].next_try > T0);
    assert_int_equal(m->r[1].attempts, 1);

    d.connections = 1;
    struct rcpt_result refused = {.code = 421, .enhanced = "4.4.1", .text = "refused"};
    owner->failed(&d, &refused, NULL);
    assert_int_equal(d.failures, 1);
    assert_true(d.retry_at >= T0);
    assert_non_null(d.retry_ev);
    owner->working(&d); /* a connection works again: the back-off ends */
    assert_int_equal(d.failures, 0);
    assert_int_equal(d.retry_at, 0);
    assert_int_equal(d.working, 1);
    owner->working_closed(&d);
    assert_int_equal(d.working, 0);
    owner->connection_closed(&d);
    assert_int_equal(d.connections, 0);
    event_free(d.retry_ev);
    settle(f, "Q1");
}

/* At most prep_window messages run stages at once; the others wait out of the due heap, and a
 * free slot goes to new mail and to the backlog (recovered mail) in turn. */
static void test_prepare_window(void **state)
{
    struct fixture *f = *state;
    f->q->prep_window = 2;
    hold_a = 1;
    add_message(f, "N1", "s@example.org", 1);
    add_message(f, "N2", "s@example.org", 1);
    struct message *n3 = add_message(f, "N3", "s@example.org", 1);
    assert_string_equal(trail, "a a ");
    assert_int_equal(f->q->prep_busy, 2);
    assert_int_equal(n3->prep_parked, 1);
    assert_int_equal(n3->due.slot, 0); /* waits for a slot, not for a time */
    struct message *r1 = add_recovered(f, "R1");
    add_recovered(f, "R2");
    struct message *r3 = add_recovered(f, "R3");
    assert_int_equal(r1->prep_parked, 1);
    /* a parked message the operator deletes leaves the line */
    r3->deleted = 1;
    qmgr_message_maybe_forget(r3);
    assert_null(qmgr_message_find(f->q, "R3"));
    trail[0] = '\0';
    qmgr_stage_done(held_a[0], 0); /* N1: b, delivery, and its slot goes to N3 (new mail) */
    assert_string_equal(trail, "b N1 a ");
    assert_string_equal(held_a[2]->env->queue_id, "N3");
    qmgr_stage_done(held_a[1], 0); /* N2's slot: the backlog's turn */
    assert_string_equal(held_a[3]->env->queue_id, "R1");
    qmgr_stage_done(held_a[2], 0); /* N3's: new mail's turn, but none waits */
    assert_string_equal(held_a[4]->env->queue_id, "R2");
    assert_int_equal(f->q->prep_busy, 2);
    assert_null(TAILQ_FIRST(&f->q->prep_fresh));
    assert_null(TAILQ_FIRST(&f->q->prep_again));
    /* a message deleted while its stage runs gives its slot to the next in line */
    add_message(f, "N4", "s@example.org", 1);
    assert_int_equal(qmgr_message_find(f->q, "N4")->prep_parked, 1);
    held_a[3]->deleted = 1;
    qmgr_stage_done(held_a[3], 0);
    assert_null(qmgr_message_find(f->q, "R1"));
    assert_string_equal(held_a[5]->env->queue_id, "N4");
    qmgr_stage_done(held_a[4], 0);
    qmgr_stage_done(held_a[5], 0);
    assert_int_equal(f->q->prep_busy, 0);
    assert_int_equal(qmgr_message_find(f->q, "R2")->stage, 2);
    assert_int_equal(qmgr_message_find(f->q, "R2")->due.at, T0 + 300);
}

/* A deferred message drops what its stages made; they run again when a recipient is next due,
 * not before. */
static void test_unprepare_redoes_stages(void **state)
{
    struct fixture *f = *state;
    struct message *m = add_message(f, "Q1", "s@example.org", 1);
    assert_string_equal(trail, "a b Q1 ");
    assert_int_equal(m->prepared, 1);
    /* nothing dropped while a recipient is due now */
    m->r[0].next_try = T0;
    qmgr_message_unprepare(m, T0);
    assert_int_equal(m->stage, 2);
    m->r[0].next_try = T0 + 300;
    qmgr_message_unprepare(m, T0);
    assert_int_equal(m->stage, 0);
    assert_int_equal(m->reprepare, 1);
    assert_null(m->sign);
    assert_int_equal(m->has_data, 0);
    assert_int_equal(m->due.at, T0 + 300); /* filed at the recipient's next try */
    set_clock(T0 + 299);
    qmgr_run_due(f->q, T0 + 299);
    assert_string_equal(trail, "a b Q1 ");
    set_clock(T0 + 300);
    qmgr_run_due(f->q, T0 + 300);
    assert_string_equal(trail, "a b Q1 a b Q1 ");
    assert_int_equal(m->reprepare, 0);
    assert_int_equal(m->due.at, T0 + 600);
    /* an operator's retry brings a dropped message back at once */
    qmgr_message_unprepare(m, T0 + 300);
    qmgr_message_retry_now(m, T0 + 300);
    assert_int_equal(m->due.at, T0 + 300);
}

int main(void)
{
    evthread_use_pthreads();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_heap_order),
        cmocka_unit_test(test_heap_remove_and_rekey),
        cmocka_unit_test(test_heap_many),
        cmocka_unit_test_setup_teardown(test_stage_table_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stage_retry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_only_due_messages_run, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lookup_wait_and_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_finalize_delivered, setup, teardown),
        cmocka_unit_test_setup_teardown(test_finalize_bounce_and_expiry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_finalize_null_sender_no_dsn, setup, teardown),
        cmocka_unit_test_setup_teardown(test_forgetting_hook, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dest_owner_callbacks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prepare_window, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unprepare_redoes_stages, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
