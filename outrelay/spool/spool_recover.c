/* spool_recover.c - the spool's scan at start; see spool.h (spool_recover). Reads every segment
 * oldest first, keeps the last copy of each message (compaction relocates) with the marks
 * written after it, shows each message to the witness (records replay) and to the queue, pins
 * what the queue keeps and dooms the rest, then starts the commit thread. Runs on the loop
 * thread before any submit; the only reader of whole segments. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>

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

static void found_add_pin(struct found *f, uint64_t seg)
{
    for (size_t i = 0; i < f->n_pins; i++)
        if (f->pins[i] == seg) return;
    f->pins = xrealloc(f->pins, (f->n_pins + 1) * sizeof *f->pins);
    f->pins[f->n_pins++] = seg;
}

static int read_file(const char *path, char **data, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    struct stat st;
    if (fstat(fd, &st) < 0) {
        close(fd);
        return -1;
    }
    *data = xmalloc((size_t)st.st_size + 1);
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t n = read(fd, *data + got, (size_t)st.st_size - got);
        if (n <= 0) break;
        got += (size_t)n;
    }
    close(fd);
    *len = got;
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

int spool_recover(struct spool *sp, spool_recover_fn fn, void *arg, char *err, size_t errlen)
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
        char path[4096], *data;
        size_t len;
        segment_path(sp, ids[s], path, sizeof path);
        if (read_file(path, &data, &len) < 0) {
            snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
            status = -1;
            break;
        }
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
                        f->order = order++;
                        hashmap_put(map, qid, f);
                    }
                    if (f) {
                        f->envelope = xstrndup(e, elen);
                        f->envelope_len = elen;
                        f->loc.segment = ids[s];
                        f->loc.offset = pos + sizeof h + 4 + elen;
                        f->loc.length = h.length - 4 - elen;
                        found_add_pin(f, ids[s]);
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
                        found_add_pin(f, ids[s]);
                    }
                }
            }
            pos += sizeof h + h.length;
        }
        free(data);
    }

    struct collect c = {xcalloc(hashmap_count(map) + 1, sizeof(struct found *)), 0};
    hashmap_foreach(map, collect_one, &c);
    qsort(c.items, c.n, sizeof *c.items, by_order);
    int kept = 0;
    for (size_t i = 0; i < c.n; i++) {
        struct found *f = c.items[i];
        if (status == 0) {
            for (size_t p = 0; p < f->n_pins; p++)
                pin_find(sp, f->pins[p], 1)->pins++;
            struct spool_recovered r = {f->envelope,  f->envelope_len, f->loc,  f->mark_rcpt,
                                        f->mark_kind, f->n_marks,      f->pins, f->n_pins};
            if (sp->witness) sp->witness(sp->witness_arg, &r);
            if (fn(arg, &r)) {
                kept++;
            } else {
                for (size_t p = 0; p < f->n_pins; p++)
                    pin_find(sp, f->pins[p], 1)->pins--;
            }
        }
        free(f->envelope);
        free(f->mark_rcpt);
        free(f->mark_kind);
        free(f->pins);
        free(f);
    }
    free(c.items);
    hashmap_free(map);
    if (status == 0) {
        /* Register every segment, then let the unpinned old end go. */
        for (size_t s = 0; s < n_ids; s++)
            pin_find(sp, ids[s], 1);
        collect_segments_locked(sp);
        if (start_writer(sp, err, errlen) < 0) status = -1;
    }
    free(ids);
    return status < 0 ? -1 : kept;
}
