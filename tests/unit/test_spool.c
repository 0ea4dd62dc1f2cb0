/* test_spool.c - unit tests for outrelay/spool/spool.c in a private mkdtemp directory with a
 * real libevent loop: messages and marks become durable through the commit callbacks, read back
 * byte for byte, survive close/reopen, and recovery hands back each message with its marks and
 * pins; torn or corrupt tails lose only the unacknowledged record; unpinned segments are deleted.
 */
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
#include <fcntl.h>
#include <inttypes.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/strbuf.h"
#include "common/util.h"
#include "mail/envelope.h"
#include "spool/spool.h"
#include "spool/spool_internal.h" /* crc32_of */

#define MAX_MSGS 256 /* per recovery */
#define MAX_RCPTS 8
#define MAX_MARKS 8

/* ---- fixture ------------------------------------------------------------------------------ */

struct fixture {
    char dir[64];       /* the mkdtemp directory */
    char spool_dir[96]; /* dir/spool: spool_open must create it */
    struct event_base *base;
    struct event *tick; /* keeps EVLOOP_ONCE from blocking forever */
    struct spool *sp;
};

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
}

static int setup(void **state)
{
    struct fixture *f = xcalloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/outrelay-spool-XXXXXX");
    if (!mkdtemp(f->dir)) return -1;
    snprintf(f->spool_dir, sizeof f->spool_dir, "%s/spool", f->dir);
    f->base = event_base_new();
    if (!f->base) return -1;
    f->tick = event_new(f->base, -1, EV_PERSIST, tick_cb, NULL);
    struct timeval tv = {0, 10000};
    event_add(f->tick, &tv);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    spool_close(f->sp);
    DIR *d = opendir(f->spool_dir);
    if (d) {
        struct dirent *de;
        while ((de = readdir(d))) {
            char path[512];
            if (de->d_name[0] == '.') continue;
            snprintf(path, sizeof path, "%s/%s", f->spool_dir, de->d_name);
            unlink(path);
        }
        closedir(d);
    }
    rmdir(f->spool_dir);
    rmdir(f->dir);
    event_free(f->tick);
    event_base_free(f->base);
    free(f);
    return 0;
}

static void reopen(struct fixture *f)
{
    char err[256] = "";
    spool_close(f->sp);
    f->sp = spool_open(f->spool_dir, f->base, err, sizeof err);
    if (!f->sp) fail_msg("spool_open: %s", err);
}

static void segment_file(const struct fixture *f, uint64_t id, char *buf, size_t size)
{
    snprintf(buf, size, "%s/seg-%016" PRIx64 ".log", f->spool_dir, id);
}

static int segment_exists(const struct fixture *f, uint64_t id)
{
    char path[256];
    struct stat st;
    segment_file(f, id, path, sizeof path);
    return stat(path, &st) == 0;
}

static size_t count_files(const struct fixture *f)
{
    DIR *d = opendir(f->spool_dir);
    assert_non_null(d);
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        if (de->d_name[0] != '.') n++;
    closedir(d);
    return n;
}

/* ---- commit callbacks --------------------------------------------------------------------- */

struct done {
    int fired;
    int status;
    struct spool_loc loc;
    char err[160];
};

static int callbacks_fired;

static void done_cb(void *arg, int status, const struct spool_loc *loc, const char *err)
{
    struct done *d = arg;
    assert_int_equal(d->fired, 0); /* exactly once */
    d->fired = 1;
    d->status = status;
    d->loc = *loc;
    snprintf(d->err, sizeof d->err, "%s", err ? err : "");
    callbacks_fired++;
}

/* Runs the loop until `want` callbacks have fired in total (bounded: about ten seconds). */
static void run_until(struct fixture *f, int want)
{
    for (int i = 0; i < 1000 && callbacks_fired < want; i++)
        event_base_loop(f->base, EVLOOP_ONCE);
    if (callbacks_fired < want)
        fail_msg("only %d of %d spool callbacks fired", callbacks_fired, want);
}

/* ---- test messages ------------------------------------------------------------------------ */

struct msg {
    char queue_id[20];
    size_t n_rcpts;
    struct strbuf envelope;
    struct strbuf data;
    struct done stored;
    /* marks the test submitted, in order */
    uint32_t mark_rcpt[MAX_MARKS];
    char mark_kind[MAX_MARKS];
    struct done mark_done[MAX_MARKS];
    size_t n_marks;
};

static void msg_init(struct msg *m, const char *queue_id, size_t n_rcpts, size_t data_len,
                     unsigned seed)
{
    memset(m, 0, sizeof *m);
    snprintf(m->queue_id, sizeof m->queue_id, "%s", queue_id);
    m->n_rcpts = n_rcpts;
    struct envelope *env = envelope_new();
    snprintf(env->queue_id, sizeof env->queue_id, "%s", queue_id);
    env->arrival = 1795990000 + seed;
    env->sender = xstrdup("sender@example.org");
    env->helo = xstrdup("client\twith\nodd%chars");
    for (size_t i = 0; i < n_rcpts; i++) {
        char addr[64];
        snprintf(addr, sizeof addr, "rcpt%zu@example.net", i);
        envelope_add_rcpt(env, addr, NULL, 0);
    }
    env->size = (int64_t)data_len;
    envelope_serialize(env, &m->envelope);
    envelope_free(env);
    /* binary data: NULs, CR/LF and every byte value */
    strbuf_reserve(&m->data, data_len);
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < data_len; i++) {
        x = x * 1103515245u + 12345u;
        char c = (char)(x >> 16);
        strbuf_append(&m->data, &c, 1);
    }
}

static void msg_free(struct msg *m)
{
    strbuf_free(&m->envelope);
    strbuf_free(&m->data);
}

static void submit_msg(struct fixture *f, struct msg *m)
{
    spool_submit_message(f->sp, m->envelope.data, m->envelope.len, m->data.data, m->data.len,
                         done_cb, &m->stored);
}

static void submit_mark(struct fixture *f, struct msg *m, uint32_t rcpt, enum spool_mark kind)
{
    assert_true(m->n_marks < MAX_MARKS);
    size_t i = m->n_marks++;
    m->mark_rcpt[i] = rcpt;
    m->mark_kind[i] = (char)kind;
    spool_submit_mark(f->sp, m->queue_id, rcpt, kind, done_cb, &m->mark_done[i]);
}

static void assert_stored(const struct done *d)
{
    assert_int_equal(d->fired, 1);
    if (d->status != 0) fail_msg("spool commit failed: %s", d->err);
}

static void assert_data(struct fixture *f, const struct spool_loc *loc, const struct msg *m)
{
    struct strbuf out = STRBUF_INIT;
    assert_int_equal(spool_read(f->sp, loc, &out), 0);
    assert_int_equal(out.len, m->data.len);
    if (m->data.len) assert_memory_equal(out.data, m->data.data, m->data.len);
    strbuf_free(&out);
}

/* ---- recovery ----------------------------------------------------------------------------- */

/* What one recovery saw, copied out of the callback. */
struct seen {
    char queue_id[20];
    struct spool_loc loc;
    uint32_t mark_rcpt[MAX_MARKS];
    char mark_kind[MAX_MARKS];
    size_t n_marks;
    uint64_t pins[MAX_MARKS];
    size_t n_pins;
    int kept;
};

struct recovery {
    struct seen seen[MAX_MSGS];
    size_t n;
};

/* Decides like the queue does: keep the message unless every recipient is final. */
static int recover_cb(void *arg, const struct spool_recovered *r)
{
    struct recovery *rec = arg;
    assert_true(rec->n < MAX_MSGS);
    struct seen *s = &rec->seen[rec->n++];
    struct envelope *env = envelope_parse(r->envelope, r->envelope_len);
    assert_non_null(env);
    snprintf(s->queue_id, sizeof s->queue_id, "%s", env->queue_id);
    s->loc = r->loc;
    assert_true(r->n_marks <= MAX_MARKS);
    assert_true(r->n_pins <= MAX_MARKS);
    s->n_marks = r->n_marks;
    for (size_t i = 0; i < r->n_marks; i++) {
        s->mark_rcpt[i] = r->mark_rcpt[i];
        s->mark_kind[i] = r->mark_kind[i];
    }
    s->n_pins = r->n_pins;
    for (size_t i = 0; i < r->n_pins; i++)
        s->pins[i] = r->pins[i];

    int final[MAX_RCPTS] = {0};
    assert_true(env->n_rcpts <= MAX_RCPTS);
    for (size_t i = 0; i < r->n_marks; i++) {
        char k = r->mark_kind[i];
        int is_final = k == SPOOL_MARK_DELIVERED || k == SPOOL_MARK_BOUNCED ||
                       k == SPOOL_MARK_EXPIRED || k == SPOOL_MARK_DELETED;
        for (size_t j = 0; j < env->n_rcpts; j++)
            if (r->mark_rcpt[i] == SPOOL_ALL_RCPTS || r->mark_rcpt[i] == j)
                final[j] = is_final ? 1 : final[j];
    }
    s->kept = 0;
    for (size_t j = 0; j < env->n_rcpts; j++)
        if (!final[j]) s->kept = 1;
    envelope_free(env);
    return s->kept;
}

static int recover(struct fixture *f, struct recovery *rec)
{
    char err[256] = "";
    memset(rec, 0, sizeof *rec);
    int n = spool_recover(f->sp, recover_cb, rec, err, sizeof err);
    if (n < 0) fail_msg("spool_recover: %s", err);
    return n;
}

/* The recovered entry matches what was submitted: location, marks in order, pins. */
static void assert_seen(const struct seen *s, const struct msg *m, const uint64_t *pins,
                        size_t n_pins)
{
    assert_string_equal(s->queue_id, m->queue_id);
    assert_int_equal(s->loc.segment, m->stored.loc.segment);
    assert_int_equal(s->loc.offset, m->stored.loc.offset);
    assert_int_equal(s->loc.length, m->data.len);
    assert_int_equal(s->n_marks, m->n_marks);
    for (size_t i = 0; i < m->n_marks; i++) {
        assert_int_equal(s->mark_rcpt[i], m->mark_rcpt[i]);
        assert_int_equal(s->mark_kind[i], m->mark_kind[i]);
    }
    assert_int_equal(s->n_pins, n_pins);
    for (size_t i = 0; i < n_pins; i++) {
        int found = 0;
        for (size_t j = 0; j < s->n_pins; j++)
            found |= s->pins[j] == pins[i];
        if (!found) fail_msg("%s: segment %" PRIu64 " not among its pins", m->queue_id, pins[i]);
    }
}

/* ---- tests -------------------------------------------------------------------------------- */

static void test_lifecycle(void **state)
{
    struct fixture *f = *state;
    struct recovery rec;
    struct msg m[7];
    callbacks_fired = 0;

    /* session 1: a fresh spool */
    reopen(f);
    assert_int_equal(recover(f, &rec), 0);
    assert_int_equal(rec.n, 0);
    msg_init(&m[0], "Q0AAAA", 3, 1000, 0);    /* D, B, E: final */
    msg_init(&m[1], "Q1BBBB", 2, 5000, 1);    /* D, H, R: r1 open */
    msg_init(&m[2], "Q2CCCC", 1, 17, 2);      /* X for all: final */
    msg_init(&m[3], "Q3DDDD", 2, 100, 3);     /* no marks */
    msg_init(&m[4], "Q4EEEE", 1, 0, 4);       /* empty data, D: final */
    msg_init(&m[5], "Q5FFFF", 1, 1 << 20, 5); /* 1 MiB, no marks */
    msg_init(&m[6], "Q6GGGG", 1, 333, 6);     /* written in session 2 */
    for (int i = 0; i < 6; i++)
        submit_msg(f, &m[i]);
    run_until(f, 6);
    for (int i = 0; i < 6; i++) {
        assert_stored(&m[i].stored);
        assert_int_equal(m[i].stored.loc.segment, 1);
        assert_int_equal(m[i].stored.loc.length, m[i].data.len);
        assert_data(f, &m[i].stored.loc, &m[i]);
    }
    submit_mark(f, &m[0], 0, SPOOL_MARK_DELIVERED);
    submit_mark(f, &m[1], 0, SPOOL_MARK_DELIVERED);
    submit_mark(f, &m[0], 1, SPOOL_MARK_BOUNCED);
    submit_mark(f, &m[1], 1, SPOOL_MARK_HELD);
    submit_mark(f, &m[2], SPOOL_ALL_RCPTS, SPOOL_MARK_DELETED);
    submit_mark(f, &m[0], 2, SPOOL_MARK_EXPIRED);
    submit_mark(f, &m[4], 0, SPOOL_MARK_DELIVERED);
    submit_mark(f, &m[1], 1, SPOOL_MARK_RELEASED);
    run_until(f, 14);
    for (int i = 0; i < 6; i++)
        for (size_t k = 0; k < m[i].n_marks; k++) {
            assert_stored(&m[i].mark_done[k]);
            assert_int_equal(m[i].mark_done[k].loc.segment, 1);
        }
    /* the queue drops the pins of finished messages; segment 1 is being written: it stays */
    for (int i = 0; i < 6; i++) {
        if (i != 0 && i != 2 && i != 4) continue;
        spool_unpin(f->sp, m[i].stored.loc.segment);
        for (size_t k = 0; k < m[i].n_marks; k++)
            spool_unpin(f->sp, m[i].mark_done[k].loc.segment);
    }
    assert_true(segment_exists(f, 1));

    /* session 2: everything comes back in arrival order; the finished ones are let go */
    reopen(f);
    assert_int_equal(recover(f, &rec), 3);
    assert_int_equal(rec.n, 6);
    const uint64_t seg1[] = {1};
    for (int i = 0; i < 6; i++) {
        assert_seen(&rec.seen[i], &m[i], seg1, 1);
        assert_int_equal(rec.seen[i].kept, i == 1 || i == 3 || i == 5);
    }
    for (int i = 0; i < 6; i++)
        assert_data(f, &rec.seen[i].loc, &m[i]);
    assert_true(segment_exists(f, 1)); /* still pinned by Q1, Q3, Q5 */
    assert_true(segment_exists(f, 2)); /* this session's segment */

    callbacks_fired = 0;
    submit_msg(f, &m[6]);
    submit_mark(f, &m[1], 1, SPOOL_MARK_DELIVERED);
    submit_mark(f, &m[3], SPOOL_ALL_RCPTS, SPOOL_MARK_BOUNCED);
    submit_mark(f, &m[5], 0, SPOOL_MARK_EXPIRED);
    run_until(f, 4);
    assert_stored(&m[6].stored);
    assert_int_equal(m[6].stored.loc.segment, 2);
    assert_data(f, &m[6].stored.loc, &m[6]);
    /* Q1, Q3, Q5 are now final: drop their recovered pins and their new marks' pins */
    for (int i = 1; i <= 5; i += 2) {
        assert_stored(&m[i].mark_done[m[i].n_marks - 1]);
        assert_int_equal(m[i].mark_done[m[i].n_marks - 1].loc.segment, 2);
        for (size_t p = 0; p < rec.seen[i].n_pins; p++)
            spool_unpin(f->sp, rec.seen[i].pins[p]);
        spool_unpin(f->sp, m[i].mark_done[m[i].n_marks - 1].loc.segment);
    }
    /* nobody pins segment 1 any more and it is not being written: gone at once */
    assert_false(segment_exists(f, 1));
    assert_true(segment_exists(f, 2));

    /* session 3: only Q6 is left; the marks for messages that are gone are ignored */
    reopen(f);
    assert_int_equal(recover(f, &rec), 1);
    assert_int_equal(rec.n, 1);
    const uint64_t seg2[] = {2};
    assert_seen(&rec.seen[0], &m[6], seg2, 1);
    assert_data(f, &rec.seen[0].loc, &m[6]);
    callbacks_fired = 0;
    submit_mark(f, &m[6], 0, SPOOL_MARK_DELIVERED);
    run_until(f, 1);
    assert_stored(&m[6].mark_done[0]);
    assert_int_equal(m[6].mark_done[0].loc.segment, 3);

    /* session 4: Q6 is final (its mark is in segment 3): both segments are deleted */
    reopen(f);
    assert_int_equal(recover(f, &rec), 0);
    assert_int_equal(rec.n, 1);
    const uint64_t seg23[] = {2, 3};
    assert_seen(&rec.seen[0], &m[6], seg23, 2);
    assert_false(segment_exists(f, 2));
    assert_false(segment_exists(f, 3));
    assert_true(segment_exists(f, 4));
    assert_int_equal(count_files(f), 1);

    /* session 5: an empty spool; last session's empty segment is cleaned up too */
    reopen(f);
    assert_int_equal(recover(f, &rec), 0);
    assert_int_equal(rec.n, 0);
    assert_false(segment_exists(f, 4));
    assert_true(segment_exists(f, 5));
    assert_int_equal(count_files(f), 1);

    for (int i = 0; i < 7; i++)
        msg_free(&m[i]);
}

/* Damages the end of the newest record of segment `id`. */
enum damage { DAMAGE_TRUNCATE, DAMAGE_FLIP_LAST_BYTE, DAMAGE_APPEND_GARBAGE };

static void damage_segment(struct fixture *f, uint64_t id, enum damage how)
{
    char path[256];
    struct stat st;
    segment_file(f, id, path, sizeof path);
    assert_int_equal(stat(path, &st), 0);
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    switch (how) {
    case DAMAGE_TRUNCATE:
        assert_int_equal(ftruncate(fd, st.st_size - 3), 0);
        break;
    case DAMAGE_FLIP_LAST_BYTE: {
        unsigned char c;
        assert_int_equal(pread(fd, &c, 1, st.st_size - 1), 1);
        c ^= 0x5a;
        assert_int_equal(pwrite(fd, &c, 1, st.st_size - 1), 1);
        break;
    }
    case DAMAGE_APPEND_GARBAGE:
        assert_int_equal(pwrite(fd, "garbage after the last record", 29, st.st_size), 29);
        break;
    }
    close(fd);
}

static void check_torn_tail(struct fixture *f, enum damage how)
{
    struct recovery rec;
    struct msg m[6];
    const int n = 5;
    callbacks_fired = 0;
    reopen(f);
    assert_int_equal(recover(f, &rec), 0);
    for (int i = 0; i < n; i++) {
        char qid[20];
        snprintf(qid, sizeof qid, "T%dXYZ", i);
        msg_init(&m[i], qid, 2, 200 + (size_t)i * 1000, 10 + (unsigned)i);
        submit_msg(f, &m[i]);
        run_until(f, i + 1); /* one record per batch */
        assert_stored(&m[i].stored);
    }
    spool_close(f->sp);
    f->sp = NULL;
    damage_segment(f, 1, how);

    /* every record before the damage is recovered intact; the damaged last one is not */
    reopen(f);
    int expect = how == DAMAGE_APPEND_GARBAGE ? n : n - 1;
    assert_int_equal(recover(f, &rec), expect);
    assert_int_equal((int)rec.n, expect);
    const uint64_t seg1[] = {1};
    for (int i = 0; i < expect; i++) {
        assert_seen(&rec.seen[i], &m[i], seg1, 1);
        assert_data(f, &rec.seen[i].loc, &m[i]);
    }

    /* the spool keeps working: a new message lands in a fresh segment and both survive */
    msg_init(&m[5], "T5NEW", 1, 64, 99);
    callbacks_fired = 0;
    submit_msg(f, &m[5]);
    run_until(f, 1);
    assert_stored(&m[5].stored);
    assert_int_equal(m[5].stored.loc.segment, 2);
    reopen(f);
    assert_int_equal(recover(f, &rec), expect + 1);
    assert_string_equal(rec.seen[expect].queue_id, "T5NEW");
    assert_data(f, &rec.seen[expect].loc, &m[5]);
    for (int i = 0; i < 6; i++)
        msg_free(&m[i]);
}

static void test_truncated_tail(void **state)
{
    check_torn_tail(*state, DAMAGE_TRUNCATE);
}

static void test_corrupt_tail(void **state)
{
    check_torn_tail(*state, DAMAGE_FLIP_LAST_BYTE);
}

static void test_garbage_after_tail(void **state)
{
    check_torn_tail(*state, DAMAGE_APPEND_GARBAGE);
}

static void test_garbage_segment_deleted(void **state)
{
    struct fixture *f = *state;
    struct recovery rec;
    reopen(f); /* creates the directory */
    char path[256];
    segment_file(f, 7, path, sizeof path);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs("this is not a spool segment\n", fp);
    fclose(fp);
    char other[256];
    snprintf(other, sizeof other, "%s/unrelated.txt", f->spool_dir);
    fp = fopen(other, "w");
    assert_non_null(fp);
    fclose(fp);

    reopen(f);
    assert_int_equal(recover(f, &rec), 0);
    assert_int_equal(rec.n, 0);
    assert_false(segment_exists(f, 7));
    assert_true(segment_exists(f, 8)); /* numbering continues after the highest seen */
    struct stat st;
    assert_int_equal(stat(other, &st), 0); /* files that are not segments are left alone */
    unlink(other);
}

static void test_close_delivers_pending_callbacks(void **state)
{
    struct fixture *f = *state;
    struct recovery rec;
    struct msg m[4];
    callbacks_fired = 0;
    reopen(f);
    assert_int_equal(recover(f, &rec), 0);
    for (int i = 0; i < 4; i++) {
        char qid[20];
        snprintf(qid, sizeof qid, "C%dCLOSE", i);
        msg_init(&m[i], qid, 1, 4096, 40 + (unsigned)i);
        submit_msg(f, &m[i]);
    }
    /* close without running the loop: every callback still fires, once, with success */
    spool_close(f->sp);
    f->sp = NULL;
    assert_int_equal(callbacks_fired, 4);
    for (int i = 0; i < 4; i++)
        assert_stored(&m[i].stored);

    reopen(f);
    assert_int_equal(recover(f, &rec), 4);
    for (int i = 0; i < 4; i++) {
        assert_string_equal(rec.seen[i].queue_id, m[i].queue_id);
        assert_data(f, &rec.seen[i].loc, &m[i]);
        msg_free(&m[i]);
    }
}

static void test_many_messages_group_commit(void **state)
{
    struct fixture *f = *state;
    struct recovery rec;
    enum { N = 200 };
    static struct msg m[N];
    callbacks_fired = 0;
    reopen(f);
    assert_int_equal(recover(f, &rec), 0);
    for (int i = 0; i < N; i++) {
        char qid[20];
        snprintf(qid, sizeof qid, "G%04d", i);
        msg_init(&m[i], qid, 1, (size_t)(i * 37) % 3000, 100 + (unsigned)i);
        submit_msg(f, &m[i]);
        if (i % 3 == 0) event_base_loop(f->base, EVLOOP_NONBLOCK); /* interleave with completions */
    }
    run_until(f, N);
    uint64_t end = 0;
    for (int i = 0; i < N; i++) {
        assert_stored(&m[i].stored);
        assert_data(f, &m[i].stored.loc, &m[i]);
        /* records follow each other in submission order */
        assert_true(m[i].stored.loc.offset > end);
        end = m[i].stored.loc.offset + m[i].stored.loc.length;
    }
    for (int i = 0; i < N; i++)
        submit_mark(f, &m[i], 0, SPOOL_MARK_DELIVERED);
    run_until(f, 2 * N);
    reopen(f);
    /* all final: none kept, and the segment is deleted at recovery */
    assert_int_equal(recover(f, &rec), 0);
    assert_false(segment_exists(f, 1));
    for (int i = 0; i < N; i++)
        msg_free(&m[i]);
}

/* A message finished in a later session than the one that stored it must stay finished, even
 * when an older neighbour keeps its own segment alive. */
static void test_final_message_stays_final(void **state)
{
    struct fixture *f = *state;
    struct recovery rec;
    struct msg m[2];
    msg_init(&m[0], "R0DONE", 1, 100, 70);
    msg_init(&m[1], "R1LIVE", 1, 100, 71);

    callbacks_fired = 0;
    reopen(f);
    assert_int_equal(recover(f, &rec), 0);
    submit_msg(f, &m[0]);
    submit_msg(f, &m[1]);
    run_until(f, 2); /* both in segment 1 */

    reopen(f);
    assert_int_equal(recover(f, &rec), 2);
    callbacks_fired = 0;
    submit_mark(f, &m[0], 0, SPOOL_MARK_DELIVERED); /* in segment 2 */
    run_until(f, 1);
    assert_int_equal(m[0].mark_done[0].loc.segment, 2);
    for (size_t p = 0; p < rec.seen[0].n_pins; p++) /* the queue lets R0 go */
        spool_unpin(f->sp, rec.seen[0].pins[p]);
    spool_unpin(f->sp, m[0].mark_done[0].loc.segment);

    /* R0 is final; R1 still pins segment 1, where R0's message record also lives */
    reopen(f);
    assert_int_equal(recover(f, &rec), 1);
    assert_int_equal(rec.n, 2);
    assert_true(segment_exists(f, 1));

    /* R0 must not come back without its final mark */
    reopen(f);
    recover(f, &rec);
    for (size_t i = 0; i < rec.n; i++)
        if (strcmp(rec.seen[i].queue_id, "R0DONE") == 0 && rec.seen[i].kept)
            fail_msg("R0DONE came back with %zu marks: it would be delivered again",
                     rec.seen[i].n_marks);
    for (int i = 0; i < 2; i++)
        msg_free(&m[i]);
}

/* The marks of a recovered message, folded: the last hold/release wins, deletion sticks,
 * final marks per recipient; out-of-range recipients are ignored. */
static void test_recovered_state(void **state)
{
    (void)state;
    uint32_t rcpt[] = {1, SPOOL_ALL_RCPTS, 0, SPOOL_ALL_RCPTS, 7};
    char kind[] = {SPOOL_MARK_DELIVERED, SPOOL_MARK_HELD, SPOOL_MARK_BOUNCED, SPOOL_MARK_RELEASED,
                   SPOOL_MARK_EXPIRED};
    struct spool_recovered r = {.mark_rcpt = rcpt, .mark_kind = kind, .n_marks = 5};
    char final[3];
    int held = -1, deleted = -1;
    assert_int_equal(spool_recovered_state(&r, 3, final, &held, &deleted), 1);
    assert_int_equal(final[0], 'B');
    assert_int_equal(final[1], 'D');
    assert_int_equal(final[2], 0);
    assert_int_equal(held, 0);
    assert_int_equal(deleted, 0);
    uint32_t rcpt2[] = {SPOOL_ALL_RCPTS, SPOOL_ALL_RCPTS};
    char kind2[] = {SPOOL_MARK_HELD, SPOOL_MARK_DELETED};
    struct spool_recovered r2 = {.mark_rcpt = rcpt2, .mark_kind = kind2, .n_marks = 2};
    assert_int_equal(spool_recovered_state(&r2, 3, final, &held, &deleted), 3);
    assert_int_equal(held, 1);
    assert_int_equal(deleted, 1);
    assert_false(spool_recovered_has_mark(&r2, SPOOL_MARK_WARNED));
    /* the delay warning's mark is the message's, never a recipient's outcome */
    uint32_t rcpt3[] = {SPOOL_ALL_RCPTS, 2};
    char kind3[] = {SPOOL_MARK_WARNED, SPOOL_MARK_DELIVERED};
    struct spool_recovered r3 = {.mark_rcpt = rcpt3, .mark_kind = kind3, .n_marks = 2};
    assert_true(spool_recovered_has_mark(&r3, SPOOL_MARK_WARNED));
    assert_false(spool_recovered_has_mark(&r3, SPOOL_MARK_HELD));
    assert_int_equal(spool_recovered_state(&r3, 3, final, &held, &deleted), 2);
    assert_int_equal(final[0], 0);
    assert_int_equal(final[2], 'D');
    assert_int_equal(held, 0);
    uint32_t rcpt4[] = {0};
    struct spool_recovered r4 = {.mark_rcpt = rcpt4, .mark_kind = kind3, .n_marks = 1};
    assert_false(spool_recovered_has_mark(&r4, SPOOL_MARK_WARNED));
}

/* The release barrier of the test: segments wait while barrier_open is 0. */
static int barrier_open;
static uint64_t barrier_tokens;
static uint64_t test_barrier_token(void)
{
    return ++barrier_tokens;
}
static int test_barrier_passed(uint64_t token)
{
    (void)token;
    return barrier_open;
}

static int witnessed;
static void count_witness(void *arg, const struct spool_recovered *msg)
{
    (void)arg;
    (void)msg;
    witnessed++;
}

static void spin(struct fixture *f, int rounds)
{
    for (int i = 0; i < rounds; i++) {
        event_base_loop(f->base, EVLOOP_ONCE);
        usleep(1000);
    }
}

/* When the queue drains, the active segment is rolled over and deleted without a restart (the
 * disk space comes back), but only once the release barrier (records committed) has passed. */
static void test_drained_segment_released_after_barrier(void **state)
{
    struct fixture *f = *state;
    struct recovery rec;
    struct msg m;
    msg_init(&m, "DRAIN1", 1, 5000, 80);
    setenv("OUTRELAY_SPOOL_RECLAIM_BYTES", "0", 1);
    barrier_open = 0;
    callbacks_fired = 0;
    reopen(f);
    spool_set_release_barrier(f->sp, test_barrier_token, test_barrier_passed);
    assert_int_equal(recover(f, &rec), 0);
    uint64_t seg = spool_active_segment(f->sp);
    submit_msg(f, &m);
    run_until(f, 1);
    assert_stored(&m.stored);
    submit_mark(f, &m, 0, SPOOL_MARK_DELIVERED);
    run_until(f, 2);
    assert_int_equal(m.mark_done[0].loc.segment, seg);
    spool_unpin(f->sp, m.stored.loc.segment);
    spin(f, 50);
    assert_true(segment_exists(f, seg)); /* still pinned by the mark */
    spool_unpin(f->sp, m.mark_done[0].loc.segment);
    spin(f, 100);
    assert_int_not_equal(spool_active_segment(f->sp), seg); /* rolled over */
    assert_true(segment_exists(f, seg));                    /* the records are not committed */
    barrier_open = 1;
    spin(f, 100);
    assert_false(segment_exists(f, seg));

    /* the witness sees final messages too (records replay them); here none is left */
    reopen(f);
    witnessed = 0;
    spool_set_recovery_witness(f->sp, count_witness, NULL);
    assert_int_equal(recover(f, &rec), 0);
    assert_int_equal(witnessed, 0);
    unsetenv("OUTRELAY_SPOOL_RECLAIM_BYTES");
    msg_free(&m);
}

/* A final message whose segment is still on disk is shown to the witness, though the queue
 * drops it. */
static void test_witness_sees_final_messages(void **state)
{
    struct fixture *f = *state;
    struct recovery rec;
    struct msg m[2];
    msg_init(&m[0], "W0DONE", 1, 100, 90);
    msg_init(&m[1], "W1LIVE", 2, 100, 91);
    callbacks_fired = 0;
    reopen(f);
    assert_int_equal(recover(f, &rec), 0);
    submit_msg(f, &m[0]);
    submit_msg(f, &m[1]);
    run_until(f, 2);
    submit_mark(f, &m[0], 0, SPOOL_MARK_DELIVERED);
    submit_mark(f, &m[1], 1, SPOOL_MARK_BOUNCED);
    run_until(f, 4);
    reopen(f); /* like kill -9: nothing was unpinned */
    witnessed = 0;
    spool_set_recovery_witness(f->sp, count_witness, NULL);
    assert_int_equal(recover(f, &rec), 1);
    assert_int_equal(witnessed, 2);
    for (int i = 0; i < 2; i++)
        msg_free(&m[i]);
}

/* A stray file whose name merely starts like a segment is not a segment. */
static void test_stray_segment_names_ignored(void **state)
{
    struct fixture *f = *state;
    struct recovery rec;
    struct msg m;
    msg_init(&m, "S0STRAY", 1, 100, 80);
    callbacks_fired = 0;
    reopen(f);
    assert_int_equal(recover(f, &rec), 0);
    submit_msg(f, &m);
    run_until(f, 1);
    submit_mark(f, &m, 0, SPOOL_MARK_HELD);
    run_until(f, 2);
    spool_close(f->sp);
    f->sp = NULL;

    /* an operator's backup copy of segment 1: its records must not count twice */
    char src[256], dst[300];
    segment_file(f, 1, src, sizeof src);
    snprintf(dst, sizeof dst, "%s.bak", src);
    assert_int_equal(link(src, dst), 0);
    reopen(f);
    char err[256] = "";
    memset(&rec, 0, sizeof rec);
    int n = spool_recover(f->sp, recover_cb, &rec, err, sizeof err);
    if (n != 1) fail_msg("recovery returned %d (%s) with a .bak copy present", n, err);
    if (rec.seen[0].n_marks != 1)
        fail_msg("with a .bak copy present the message has %zu marks, not 1", rec.seen[0].n_marks);

    /* an editor's leftover named after a segment that does not exist */
    segment_file(f, 9, src, sizeof src);
    snprintf(dst, sizeof dst, "%s~", src);
    FILE *fp = fopen(dst, "w");
    assert_non_null(fp);
    fclose(fp);
    reopen(f);
    memset(&rec, 0, sizeof rec);
    n = spool_recover(f->sp, recover_cb, &rec, err, sizeof err);
    if (n != 1) fail_msg("recovery returned %d (%s) with a stray file present", n, err);
    msg_free(&m);
}

/* The record checksum is the standard CRC-32 (segments written by earlier versions still read):
 * the check value of "123456789", and lengths around the eight-byte steps. */
static void test_crc32_known_values(void **state)
{
    struct fixture *f = *state;
    reopen(f); /* spool_open makes the tables */
    assert_int_equal(crc32_of("123456789", 9), 0xCBF43926u);
    assert_int_equal(crc32_of("", 0), 0);
    /* the same bytes at every alignment and length agree with a bitwise computation */
    unsigned char buf[64];
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (unsigned char)(i * 37 + 11);
    for (size_t off = 0; off < 8; off++)
        for (size_t len = 0; len + off <= sizeof buf; len++) {
            uint32_t c = 0xFFFFFFFFu;
            for (size_t i = 0; i < len; i++) {
                c ^= buf[off + i];
                for (int k = 0; k < 8; k++)
                    c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            }
            assert_int_equal(crc32_of(buf + off, len), c ^ 0xFFFFFFFFu);
        }
}

/* What the background recovery handed out, in order. */
#define BG_MSGS 1500
struct bg {
    int order[BG_MSGS]; /* message numbers in the order they were handed out */
    int n;
    int done, kept, finished;
};

static int bg_fn(void *arg, const struct spool_recovered *r)
{
    struct bg *b = arg;
    struct envelope *env = envelope_parse(r->envelope, r->envelope_len);
    assert_non_null(env);
    assert_true(b->n < BG_MSGS);
    b->order[b->n++] = atoi(env->queue_id + 2);
    char final[MAX_RCPTS];
    int held, deleted;
    size_t open = spool_recovered_state(r, env->n_rcpts, final, &held, &deleted);
    envelope_free(env);
    return open > 0;
}

static void bg_done(void *arg, int kept, int finished)
{
    struct bg *b = arg;
    assert_int_equal(b->done, 0);
    b->done = 1;
    b->kept = kept;
    b->finished = finished;
}

static struct msg *bg_fill(struct fixture *f)
{
    struct msg *m = xcalloc(BG_MSGS, sizeof *m);
    struct recovery rec;
    callbacks_fired = 0;
    reopen(f);
    assert_int_equal(recover(f, &rec), 0);
    for (int i = 0; i < BG_MSGS; i++) {
        char id[20];
        snprintf(id, sizeof id, "BG%04d", i);
        msg_init(&m[i], id, 1, 32, (unsigned)i);
        submit_msg(f, &m[i]);
    }
    run_until(f, BG_MSGS);
    for (int i = 0; i < BG_MSGS; i += 3) /* every third is delivered: final */
        submit_mark(f, &m[i], 0, SPOOL_MARK_DELIVERED);
    run_until(f, BG_MSGS + BG_MSGS / 3);
    return m;
}

/* spool_recover_start reads the spool at once and hands the messages out on the loop: the first
 * ones before it returns, the rest in slices, in arrival order, then done; new mail can be
 * stored meanwhile. */
static void test_background_recovery(void **state)
{
    struct fixture *f = *state;
    struct msg *m = bg_fill(f);
    reopen(f); /* like kill -9: every message is found again */
    struct bg *b = xcalloc(1, sizeof *b);
    char err[256] = "";
    int found = spool_recover_start(f->sp, bg_fn, b, bg_done, b, err, sizeof err);
    assert_int_equal(found, BG_MSGS);
    assert_true(b->n > 0 && b->n < BG_MSGS); /* a first part at once, the rest to come */
    assert_int_equal(b->done, 0);
    struct msg extra;
    msg_init(&extra, "BGNEW", 1, 32, 4242);
    submit_msg(f, &extra); /* the commit thread runs already */
    for (int i = 0; i < 1000 && !b->done; i++)
        event_base_loop(f->base, EVLOOP_ONCE);
    assert_int_equal(b->done, 1);
    assert_int_equal(b->finished, 1);
    assert_int_equal(b->n, BG_MSGS);
    for (int i = 0; i < BG_MSGS; i++)
        assert_int_equal(b->order[i], i);
    assert_int_equal(b->kept, BG_MSGS - (BG_MSGS + 2) / 3);
    run_until(f, BG_MSGS + BG_MSGS / 3 + 1);
    assert_stored(&extra.stored);
    msg_free(&extra);
    for (int i = 0; i < BG_MSGS; i++)
        msg_free(&m[i]);
    free(m);
    free(b);
}

/* Closing the spool while the recovery is under way ends it (done with finished 0); nothing of
 * what was not handed out is lost: the next start finds it. */
static void test_background_recovery_cut_short(void **state)
{
    struct fixture *f = *state;
    struct msg *m = bg_fill(f);
    reopen(f);
    struct bg *b = xcalloc(1, sizeof *b);
    char err[256] = "";
    assert_int_equal(spool_recover_start(f->sp, bg_fn, b, bg_done, b, err, sizeof err), BG_MSGS);
    int handed = b->n;
    assert_true(handed < BG_MSGS);
    spool_close(f->sp);
    f->sp = NULL;
    assert_int_equal(b->done, 1);
    assert_int_equal(b->finished, 0);
    assert_int_equal(b->n, handed);
    reopen(f);
    memset(b, 0, sizeof *b);
    assert_int_equal(spool_recover(f->sp, bg_fn, b, err, sizeof err), BG_MSGS - (BG_MSGS + 2) / 3);
    assert_int_equal(b->n, BG_MSGS);
    for (int i = 0; i < BG_MSGS; i++)
        msg_free(&m[i]);
    free(m);
    free(b);
}

int main(void)
{
    evthread_use_pthreads();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_lifecycle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncated_tail, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_tail, setup, teardown),
        cmocka_unit_test_setup_teardown(test_garbage_after_tail, setup, teardown),
        cmocka_unit_test_setup_teardown(test_garbage_segment_deleted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_delivers_pending_callbacks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_many_messages_group_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_final_message_stays_final, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stray_segment_names_ignored, setup, teardown),
        cmocka_unit_test(test_recovered_state),
        cmocka_unit_test_setup_teardown(test_drained_segment_released_after_barrier, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_witness_sees_final_messages, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crc32_known_values, setup, teardown),
        cmocka_unit_test_setup_teardown(test_background_recovery, setup, teardown),
        cmocka_unit_test_setup_teardown(test_background_recovery_cut_short, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
