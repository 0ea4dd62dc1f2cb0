/* spool_recover.c - the spool's recovery at start; see spool.h (spool_recover_start). Two
 * phases: the scan maps every segment oldest first, checks each record's CRC, keeps the last
 * copy of each message (compaction relocates) with the marks written after it, pins every
 * message's segments and starts the commit thread; then, on the event loop in slices (so the
 * relay answers SMTP meanwhile), each message is shown to the witness (records replay) and to
 * the queue, and the pins of those the queue does not keep are dropped. Loop thread only; the
 * scan runs before any submit; the only reader of whole segments. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <fcntl.h>
#include <unistd.h>

#include <event2/event.h>

#include "common/hashmap.h"
#include "common/log.h"
#include "common/util.h"
#include "spool/spool.h"
#include "spool/spool_internal.h"

void spool_set_recovery_witness(struct spool *sp, spool_witness_fn fn, void *arg)
{
    sp->witness = fn;
    sp->witness_arg = arg;
}

size_t spool_recovered_state(const struct spool_recovered *msg, size_t n_rcpts, char *final,
                             int *held, int *deleted)
{
    memset(final, 0, n_rcpts);
    *held = *deleted = 0;
    for (size_t i = 0; i < msg->n_marks; i++) {
        char kind = msg->mark_kind[i];
        uint32_t idx = msg->mark_rcpt[i];
        if (kind == SPOOL_MARK_HELD)
            *held = 1;
        else if (kind == SPOOL_MARK_RELEASED)
            *held = 0;
        else if (kind == SPOOL_MARK_DELETED)
            *deleted = 1;
        else if (idx < n_rcpts)
            final[idx] = kind;
    }
    size_t open = 0;
    for (size_t i = 0; i < n_rcpts; i++)
        open += final[i] == 0;
    return open;
}

int spool_recovered_has_mark(const struct spool_recovered *msg, enum spool_mark mark)
{
    for (size_t i = 0; i < msg->n_marks; i++)
        if (msg->mark_rcpt[i] == SPOOL_ALL_RCPTS && msg->mark_kind[i] == (char)mark) return 1;
    return 0;
}

/* One message found while scanning, with everything later records said about it. */
struct found {
    char *envelope;
    size_t envelope_len;
    struct spool_loc loc;
    uint32_t *mark_rcpt;
    char *mark_kind;
    size_t n_marks;
    uint64_t *pins;
    size_t n_pins;
    uint64_t order;
};

/* The second phase: the messages found, handed out in arrival order a slice at a time. */
struct spool_recovery {
    struct found **items;
    size_t n, next;
    int kept;
    spool_recover_fn fn;
    void *arg;
    spool_recovered_done_fn done;
    void *done_arg;
    struct event *ev;
};

#define SLICE_US 5000   /* loop time one slice of the handing out may take */
#define SYNC_FIRST 1000 /* messages handed out before spool_recover_start returns */

static void found_add_pin(struct found *f, uint64_t seg)
{
    for (size_t i = 0; i < f->n_pins; i++)
        if (f->pins[i] == seg) return;
    f->pins = xrealloc(f->pins, (f->n_pins + 1) * sizeof *f->pins);
    f->pins[f->n_pins++] = seg;
}

static void found_free(struct found *f)
{
    free(f->envelope);
    free(f->mark_rcpt);
    free(f->mark_kind);
    free(f->pins);
    free(f);
}

/* The whole segment, mapped read-only (no copy; the page cache is read in place). *len 0 and
 * *data NULL for an empty file. */
static int map_file(const char *path, const char **data, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    struct stat st;
    if (fstat(fd, &st) < 0) {
        close(fd);
        return -1;
    }
    *len = (size_t)st.st_size;
    *data = NULL;
    if (*len) {
        void *p = mmap(NULL, *len, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
        if (p == MAP_FAILED) {
            close(fd);
            return -1;
        }
        madvise(p, *len, MADV_SEQUENTIAL);
        *data = p;
    }
    close(fd);
    return 0;
}

struct collect {
    struct found **items;
    size_t n;
};

static void collect_one(void *arg, const char *key, void *value)
{
    (void)key;
    struct collect *c = arg;
    c->items[c->n++] = value;
}

static int by_order(const void *a, const void *b)
{
    const struct found *x = *(struct found *const *)a, *y = *(struct found *const *)b;
    return x->order < y->order ? -1 : x->order > y->order;
}

/* One segment's records into map (queue id -> struct found). */
static void scan_segment(struct hashmap *map, uint64_t seg, const char *path, const char *data,
                         size_t len, uint64_t *order)
{
    size_t pos = 0;
    while (pos < len) {
        struct record_header h;
        if (len - pos < sizeof h) {
            log_warn("spool: %s: torn record at offset %zu ignored (never acknowledged)", path,
                     pos);
            break;
        }
        memcpy(&h, data + pos, sizeof h);
        if (h.magic != SPOOL_MAGIC || h.length > len - pos - sizeof h ||
            crc32_of(data + pos + sizeof h, h.length) != h.crc) {
            log_warn("spool: %s: torn record at offset %zu ignored (never acknowledged)", path,
                     pos);
            break;
        }
        const char *payload = data + pos + sizeof h;
        if (h.type == RECORD_MESSAGE && h.length >= 4) {
            uint32_t elen;
            memcpy(&elen, payload, 4);
            if (elen <= h.length - 4) {
                /* queue_id is the first envelope line: "queue_id X\n" */
                const char *e = payload + 4;
                char qid[32] = "";
                if (elen > 9 && memcmp(e, "queue_id ", 9) == 0) {
                    const char *nl = memchr(e + 9, '\n', elen - 9);
                    if (nl && (size_t)(nl - e - 9) < sizeof qid) {
                        memcpy(qid, e + 9, (size_t)(nl - e - 9));
                        qid[nl - e - 9] = '\0';
                    }
                }
                struct found *f = qid[0] ? hashmap_get(map, qid) : NULL;
                if (f) {
                    /* a relocated copy (spool compaction): it replaces the earlier record,
                     * and the marks written after it carry the state */
                    free(f->envelope);
                    free(f->mark_rcpt);
                    free(f->mark_kind);
                    free(f->pins);
                    f->mark_rcpt = NULL;
                    f->mark_kind = NULL;
                    f->pins = NULL;
                    f->n_marks = f->n_pins = 0;
                } else if (qid[0]) {
                    f = xcalloc(1, sizeof *f);
                    f->order = (*order)++;
                    hashmap_put(map, qid, f);
                }
                if (f) {
                    f->envelope = xstrndup(e, elen);
                    f->envelope_len = elen;
                    f->loc.segment = seg;
                    f->loc.offset = pos + sizeof h + 4 + elen;
                    f->loc.length = h.length - 4 - elen;
                    found_add_pin(f, seg);
                }
            }
        } else if (h.type == RECORD_MARK) {
            const char *nul = memchr(payload, '\0', h.length);
            if (nul && (size_t)(nul - payload) + 1 + 4 + 1 == h.length) {
                struct found *f = hashmap_get(map, payload);
                if (f) {
                    uint32_t rcpt;
                    memcpy(&rcpt, nul + 1, 4);
                    f->mark_rcpt = xrealloc(f->mark_rcpt, (f->n_marks + 1) * sizeof(uint32_t));
                    f->mark_kind = xrealloc(f->mark_kind, f->n_marks + 1);
                    f->mark_rcpt[f->n_marks] = rcpt;
                    f->mark_kind[f->n_marks++] = nul[5];
                    found_add_pin(f, seg);
                }
            }
        }
        pos += sizeof h + h.length;
    }
}

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Hands out up to max messages (witness, then the queue); the queue's refusals unpin. */
static void hand_out(struct spool *sp, size_t max, int64_t until_us)
{
    struct spool_recovery *rc = sp->recovery;
    for (size_t k = 0; k < max && rc->next < rc->n; k++) {
        if (until_us && (k & 31) == 31 && mono_us() >= until_us) break;
        struct found *f = rc->items[rc->next];
        rc->items[rc->next++] = NULL;
        struct spool_recovered r = {f->envelope,  f->envelope_len, f->loc,  f->mark_rcpt,
                                    f->mark_kind, f->n_marks,      f->pins, f->n_pins};
        if (sp->witness) sp->witness(sp->witness_arg, &r);
        if (rc->fn(rc->arg, &r)) {
            rc->kept++;
        } else {
            for (size_t p = 0; p < f->n_pins; p++)
                spool_unpin(sp, f->pins[p]);
        }
        found_free(f);
    }
}

/* Ends the second phase: finished 0 when spool_close cut it short. */
static void recovery_end(struct spool *sp, int finished)
{
    struct spool_recovery *rc = sp->recovery;
    if (!rc) return;
    sp->recovery = NULL;
    for (size_t i = rc->next; i < rc->n; i++)
        found_free(rc->items[i]);
    free(rc->items);
    if (rc->ev) event_free(rc->ev);
    if (rc->done) rc->done(rc->done_arg, rc->kept, finished);
    free(rc);
}

void spool_recovery_cancel(struct spool *sp)
{
    recovery_end(sp, 0);
}

static void slice_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct spool *sp = arg;
    struct spool_recovery *rc = sp->recovery;
    hand_out(sp, SIZE_MAX, mono_us() + SLICE_US);
    if (rc->next < rc->n) {
        struct timeval now = {0, 0}; /* again after the loop has looked at everything else */
        evtimer_add(rc->ev, &now);
        return;
    }
    recovery_end(sp, 1);
}

/* The first phase: every segment read, every message found and pinned, the writer started. */
static int scan(struct spool *sp, struct found ***items, size_t *n_items, char *err, size_t errlen)
{
    uint64_t *ids;
    size_t n_ids;
    if (list_segments(sp->dir, &ids, &n_ids) < 0) {
        snprintf(err, errlen, "cannot list spool directory %s: %s", sp->dir, strerror(errno));
        return -1;
    }
    struct hashmap *map = hashmap_new();
    uint64_t order = 0;
    int status = 0;
    for (size_t s = 0; s < n_ids; s++) {
        char path[4096];
        const char *data;
        size_t len;
        segment_path(sp, ids[s], path, sizeof path);
        if (map_file(path, &data, &len) < 0) {
            snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
            status = -1;
            break;
        }
        scan_segment(map, ids[s], path, data, len, &order);
        if (data) munmap((void *)data, len);
    }
    struct collect c = {xcalloc(hashmap_count(map) + 1, sizeof(struct found *)), 0};
    hashmap_foreach(map, collect_one, &c);
    hashmap_free(map);
    qsort(c.items, c.n, sizeof *c.items, by_order);
    if (status < 0) {
        for (size_t i = 0; i < c.n; i++)
            found_free(c.items[i]);
        free(c.items);
        free(ids);
        return -1;
    }
    /* Every message pins its segments until the queue has said whether it keeps it; register
     * every segment, then let the unpinned old end go. */
    pthread_mutex_lock(&sp->lock);
    for (size_t i = 0; i < c.n; i++)
        for (size_t p = 0; p < c.items[i]->n_pins; p++)
            pin_find(sp, c.items[i]->pins[p], 1)->pins++;
    for (size_t s = 0; s < n_ids; s++)
        pin_find(sp, ids[s], 1);
    collect_segments_locked(sp);
    pthread_mutex_unlock(&sp->lock);
    free(ids);
    if (start_writer(sp, err, errlen) < 0) {
        for (size_t i = 0; i < c.n; i++)
            found_free(c.items[i]);
        free(c.items);
        return -1;
    }
    *items = c.items;
    *n_items = c.n;
    return 0;
}

/* The scan, then the state of the handing out (NULL: unreadable spool, err says why). */
static struct spool_recovery *begin(struct spool *sp, spool_recover_fn fn, void *arg,
                                    spool_recovered_done_fn done, void *done_arg, char *err,
                                    size_t errlen)
{
    struct found **items;
    size_t n;
    if (scan(sp, &items, &n, err, errlen) < 0) return NULL;
    struct spool_recovery *rc = xcalloc(1, sizeof *rc);
    rc->items = items;
    rc->n = n;
    rc->fn = fn;
    rc->arg = arg;
    rc->done = done;
    rc->done_arg = done_arg;
    sp->recovery = rc;
    return rc;
}

int spool_recover_start(struct spool *sp, spool_recover_fn fn, void *arg,
                        spool_recovered_done_fn done, void *done_arg, char *err, size_t errlen)
{
    struct spool_recovery *rc = begin(sp, fn, arg, done, done_arg, err, errlen);
    if (!rc) return -1;
    int found = (int)rc->n;
    /* a small queue is back before this returns, as it always was; a big one goes on below */
    hand_out(sp, SYNC_FIRST, 0);
    if (rc->next == rc->n) {
        recovery_end(sp, 1);
        return found;
    }
    rc->ev = evtimer_new(sp->base, slice_cb, sp);
    struct timeval now = {0, 0};
    evtimer_add(rc->ev, &now);
    return found;
}

int spool_recover(struct spool *sp, spool_recover_fn fn, void *arg, char *err, size_t errlen)
{
    struct spool_recovery *rc = begin(sp, fn, arg, NULL, NULL, err, errlen);
    if (!rc) return -1;
    hand_out(sp, SIZE_MAX, 0);
    int kept = rc->kept;
    recovery_end(sp, 1);
    return kept;
}
