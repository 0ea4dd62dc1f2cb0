/* spool.c - durable queue as an append-only log with group commit; see spool.h. The scan at
 * start is spool_recover.c.
 * Threads: the event loop calls spool_*; one commit thread owns the active segment's fd and is
 * the only writer. The two meet in `pending` (loop -> thread, under `lock`) and `completed`
 * (thread -> loop, the common hand-off); pin counts and doomed segments are under `lock` too.
 * Recovery runs before the thread writes. Disk full: a reserve preallocated past the end of the
 * active segment keeps room for marks; while it cannot be renewed new messages are refused, marks
 * are retried until they are durable, and a drained queue gives its segment back without a restart.
 */
#include "spool/spool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "common/dirs.h"
#include "common/handoff.h"
#include "common/log.h"
#include "common/private_file.h"
#include "common/util.h"
#include "spool/spool_internal.h"

#define SEGMENT_MAX_BYTES (64u << 20) /* OUTRELAY_SPOOL_SEGMENT_BYTES overrides (tests) */
/* Once the queue has drained, a segment at least this big is rolled over so its space comes
 * back (OUTRELAY_SPOOL_RECLAIM_BYTES overrides); when the disk was found full, any size is. */
#define RECLAIM_MIN_BYTES (1u << 20)
/* Preallocated past the end of the active segment so marks can still be written when the disk
 * is full; while it cannot be renewed, messages are refused. OUTRELAY_SPOOL_RESERVE_BYTES. */
#define RESERVE_BYTES (256u << 10)
#define MARK_RETRY_US 250000 /* a mark that could not be written is tried again after this */
/* How long a finished segment waits for the records of its messages to be committed before it
 * is deleted anyway (the disk may be full of it). OUTRELAY_SPOOL_RECORDS_WAIT_MS overrides. */
#define BARRIER_WAIT_US (30LL * 1000000)
/* CRC-32 (the IEEE polynomial, reflected) eight bytes at a time ("slicing by 8"): recovery
 * checks every byte of the spool before the queue comes back, so this is its main cost. */
static uint32_t crc32_table[8][256];

static void crc32_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc32_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            crc32_table[t][i] =
                (crc32_table[t - 1][i] >> 8) ^ crc32_table[0][crc32_table[t - 1][i] & 0xFF];
}

uint32_t crc32_of(const void *data, size_t len)
{
    const uint8_t *p = data;
    uint32_t c = 0xFFFFFFFFu;
    for (; len >= 8; len -= 8, p += 8) {
        /* little-endian load of the first four bytes folded into the running value */
        uint32_t lo = c ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                           (uint32_t)p[3] << 24);
        c = crc32_table[7][lo & 0xFF] ^ crc32_table[6][(lo >> 8) & 0xFF] ^
            crc32_table[5][(lo >> 16) & 0xFF] ^ crc32_table[4][lo >> 24] ^ crc32_table[3][p[4]] ^
            crc32_table[2][p[5]] ^ crc32_table[1][p[6]] ^ crc32_table[0][p[7]];
    }
    for (; len; len--, p++)
        c = crc32_table[0][(c ^ *p) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

void segment_path(const struct spool *sp, uint64_t id, char *buf, size_t size)
{
    snprintf(buf, size, "%s/seg-%016" PRIx64 ".log", sp->dir, id);
}

static int64_t monotonic_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static uint64_t env_bytes(const char *name, uint64_t dflt)
{
    const char *v = getenv(name);
    return v && atoll(v) >= 0 && *v ? (uint64_t)atoll(v) : dflt;
}

void spool_set_release_barrier(struct spool *sp, uint64_t (*token)(void),
                               int (*passed)(uint64_t token))
{
    pthread_mutex_lock(&sp->lock);
    sp->barrier_token = token;
    sp->barrier_passed = passed;
    pthread_mutex_unlock(&sp->lock);
}

/* --- pins (under lock) ------------------------------------------------------------------ */
/* Every segment on disk has an entry, pinned or not. Segments are deleted strictly oldest
 * first: a mark in segment N may finish a message stored in an older segment, so N must stay
 * as long as any older segment does, or that message would come back after a restart. */

struct segment_pin *pin_find(struct spool *sp, uint64_t id, int create)
{
    for (size_t i = 0; i < sp->n_pins; i++)
        if (sp->pins[i].id == id) return &sp->pins[i];
    if (!create) return NULL;
    sp->pins = xrealloc(sp->pins, (sp->n_pins + 1) * sizeof *sp->pins);
    sp->pins[sp->n_pins] = (struct segment_pin){id, 0};
    return &sp->pins[sp->n_pins++];
}

/* Deletes the doomed segments whose records are committed, oldest first; after the barrier
 * wait they go anyway (a full disk must be able to drain). Called with lock held. */
static void reap_doomed_locked(struct spool *sp)
{
    size_t k = 0;
    int64_t now = sp->n_doomed ? monotonic_us() : 0;
    for (; k < sp->n_doomed; k++) {
        struct doomed_segment *d = &sp->doomed[k];
        if (sp->barrier_passed && !sp->barrier_passed(d->token)) {
            if (now - d->since_us < sp->barrier_wait_us) break;
            if (!d->warned)
                log_warn("spool: records not committed after %llds; segment %016" PRIx64
                         " deleted anyway so the disk can drain (a crash now would leave its "
                         "messages without their last events in records.db)",
                         (long long)(sp->barrier_wait_us / 1000000), d->id);
            d->warned = 1;
        }
        char path[4096];
        segment_path(sp, d->id, path, sizeof path);
        if (unlink(path) < 0 && errno != ENOENT)
            log_warn("spool: cannot remove %s: %s", path, strerror(errno));
    }
    if (k) {
        memmove(sp->doomed, sp->doomed + k, (sp->n_doomed - k) * sizeof *sp->doomed);
        sp->n_doomed -= k;
    }
}

/* Dooms the unpinned segments at the old end of the log. Called with lock held. */
void collect_segments_locked(struct spool *sp)
{
    for (;;) {
        size_t oldest = SIZE_MAX;
        for (size_t i = 0; i < sp->n_pins; i++)
            if (oldest == SIZE_MAX || sp->pins[i].id < sp->pins[oldest].id) oldest = i;
        if (oldest == SIZE_MAX) break;
        struct segment_pin *p = &sp->pins[oldest];
        if (p->pins > 0 || p->id == sp->active_id) break;
        sp->doomed = xrealloc(sp->doomed, (sp->n_doomed + 1) * sizeof *sp->doomed);
        sp->doomed[sp->n_doomed++] = (struct doomed_segment){
            p->id, sp->barrier_token ? sp->barrier_token() : 0, monotonic_us(), 0};
        *p = sp->pins[--sp->n_pins];
    }
    reap_doomed_locked(sp);
}

uint64_t spool_active_segment(struct spool *sp)
{
    pthread_mutex_lock(&sp->lock);
    uint64_t id = sp->active_id;
    pthread_mutex_unlock(&sp->lock);
    return id;
}

uint64_t spool_oldest_segment(struct spool *sp)
{
    uint64_t oldest = 0;
    pthread_mutex_lock(&sp->lock);
    for (size_t i = 0; i < sp->n_pins; i++)
        if (sp->pins[i].id != sp->active_id && (!oldest || sp->pins[i].id < oldest))
            oldest = sp->pins[i].id;
    pthread_mutex_unlock(&sp->lock);
    return oldest;
}

void spool_unpin(struct spool *sp, uint64_t segment)
{
    pthread_mutex_lock(&sp->lock);
    struct segment_pin *p = pin_find(sp, segment, 0);
    if (p && --p->pins <= 0) {
        p->pins = 0;
        collect_segments_locked(sp);
        sp->reclaim_check = 1; /* the queue may have drained: the commit thread looks */
        pthread_cond_signal(&sp->wake);
    }
    pthread_mutex_unlock(&sp->lock);
}

/* --- commit thread ----------------------------------------------------------------------- */

static int is_space_error(int err)
{
    return err == ENOSPC || err == EDQUOT;
}

/* Keeps `reserve` bytes allocated past the end of the active segment (they stay invisible: the
 * file size does not change), so the marks that finish messages fit when the disk is full.
 * Renewed when half used; while it cannot be, space_short refuses new messages. */
static void reserve_space(struct spool *sp)
{
    if (!sp->reserve) return;
    if (!sp->space_short && sp->reserved_end >= sp->active_size + sp->reserve / 2) return;
    if (fallocate(sp->active_fd, FALLOC_FL_KEEP_SIZE, (off_t)sp->active_size, (off_t)sp->reserve) ==
        0) {
        if (sp->space_short) log_info("spool: disk space is available again; accepting messages");
        sp->space_short = 0;
        sp->reserved_end = sp->active_size + sp->reserve;
    } else if (is_space_error(errno)) {
        if (!sp->space_short)
            log_error("spool: %s: no room for a %llu KiB reserve; new messages are refused "
                      "(4xx) until space is freed",
                      sp->dir, (unsigned long long)(sp->reserve >> 10));
        sp->space_short = 1;
    } else {
        log_warn("spool: %s: cannot preallocate (%s); no reserve for marks on a full disk", sp->dir,
                 strerror(errno));
        sp->reserve = 0;
        sp->space_short = 0;
    }
}

static int open_segment(struct spool *sp, uint64_t id, char *err, size_t errlen)
{
    char path[4096];
    segment_path(sp, id, path, sizeof path);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "cannot create %s: %s", path, strerror(errno));
        return -1;
    }
    if (private_file_fix_mode(fd) < 0) /* 0600 whatever the umask */
        log_warn("spool: cannot set mode 0600 on %s: %s", path, strerror(errno));
    /* The new directory entry must be durable before any record in it is acknowledged. */
    if (fsync(sp->dirfd) < 0) {
        snprintf(err, errlen, "fsync of spool directory %s: %s", sp->dir, strerror(errno));
        close(fd);
        unlink(path);
        return -1;
    }
    sp->active_fd = fd;
    pthread_mutex_lock(&sp->lock);
    sp->active_id = id; /* spool_unpin reads it to spare the segment being written */
    pin_find(sp, id, 1);
    pthread_mutex_unlock(&sp->lock);
    sp->active_size = 0;
    sp->reserved_end = 0;
    reserve_space(sp);
    return 0;
}

/* Called with lock NOT held; takes it to check pins of the segment being retired. */
static int rotate_segment(struct spool *sp, char *err, size_t errlen)
{
    int old_fd = sp->active_fd;
    if (open_segment(sp, sp->active_id + 1, err, errlen) < 0) {
        sp->active_fd = old_fd;
        return -1;
    }
    close(old_fd);
    pthread_mutex_lock(&sp->lock);
    collect_segments_locked(sp);
    pthread_mutex_unlock(&sp->lock);
    return 0;
}

/* Records per writev in write_batch: two iovecs each, well under IOV_MAX (1024 on Linux). */
#define SPOOL_GATHER 128

static int write_all(int fd, struct iovec *iov, int n)
{
    while (n > 0) {
        ssize_t w = writev(fd, iov, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        while (n > 0 && (size_t)w >= iov->iov_len) {
            w -= (ssize_t)iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (char *)iov->iov_base + w;
            iov->iov_len -= (size_t)w;
        }
    }
    return 0;
}

/* Writes a batch and fdatasyncs once. Nothing of a failed batch is acknowledged; its marks are
 * flagged `retry` (unless final) so they go back to the queue: a delivered mark that is not
 * durable would bring the message back after a restart. While space_short, messages are refused
 * without a write and marks go into the reserve. */
static void write_batch(struct spool *sp, struct request *batch, int final)
{
    char err[160] = "";
    int failed = 0, failed_errno = 0, wrote = 0;

    reserve_space(sp); /* renews it, or finds out that space came back */
    if (sp->active_size > sp->segment_max && rotate_segment(sp, err, sizeof err) < 0) {
        failed = 1;
        failed_errno = errno;
    }
    uint64_t batch_start = sp->active_size, at = sp->active_size;
    /* The batch leaves in as few writev calls as the iovec limit allows, not one per record. */
    struct record_header heads[SPOOL_GATHER];
    struct iovec iov[2 * SPOOL_GATHER];
    int n = 0;
    for (struct request *r = batch; !failed && (r || n > 0); r = r ? r->next : NULL) {
        if (r && r->type == RECORD_MESSAGE && sp->space_short) {
            r->status = -1;
            snprintf(r->err, sizeof r->err, "spool: the disk is full");
            continue;
        }
        if (r) {
            r->status = 0;
            heads[n] = (struct record_header){SPOOL_MAGIC,
                                              r->type,
                                              {0, 0, 0},
                                              (uint32_t)r->payload_len,
                                              crc32_of(r->payload, r->payload_len)};
            iov[2 * n] = (struct iovec){&heads[n], sizeof heads[n]};
            iov[2 * n + 1] = (struct iovec){r->payload, r->payload_len};
            r->loc.segment = sp->active_id;
            r->loc.offset = at + sizeof heads[n] + r->data_skip;
            r->loc.length = r->payload_len - r->data_skip;
            at += sizeof heads[n] + r->payload_len;
            if (++n < SPOOL_GATHER && r->next) continue;
        }
        /* the gather is full, or the batch ends (r is NULL after a refused last message) */
        if (write_all(sp->active_fd, iov, 2 * n) < 0) {
            failed_errno = errno;
            snprintf(err, sizeof err, "spool write: %s", strerror(errno));
            failed = 1;
            break;
        }
        wrote = 1;
        sp->active_size = at;
        n = 0;
        if (!r) break;
    }
    if (!failed && wrote && fdatasync(sp->active_fd) < 0) {
        failed_errno = errno;
        snprintf(err, sizeof err, "spool fdatasync: %s", strerror(errno));
        failed = 1;
    }
    if (failed) {
        /* Cut the batch off so the log stays parseable (this also frees the reserve past it). */
        if (ftruncate(sp->active_fd, (off_t)batch_start) == 0) sp->active_size = batch_start;
        sp->reserved_end = 0;
        if (is_space_error(failed_errno)) sp->space_short = 1;
        reserve_space(sp);
        log_error("spool: %s", err);
    }
    pthread_mutex_lock(&sp->lock);
    for (struct request *r = batch; r; r = r->next) {
        if (!failed && r->status < 0) continue; /* refused above */
        r->status = failed ? -1 : 0;
        snprintf(r->err, sizeof r->err, "%s", err);
        if (failed && r->type == RECORD_MARK && !final) r->retry = 1;
        if (!failed) pin_find(sp, r->loc.segment, 1)->pins++;
    }
    pthread_mutex_unlock(&sp->lock);
}

/* When every message is final (only the active segment is left and nothing pins it), the active
 * segment is rolled over so it can be deleted: the space comes back without a restart. */
static void reclaim_if_drained(struct spool *sp)
{
    if (sp->active_size == 0) return;
    if (sp->active_size < sp->reclaim_min && !sp->space_short) return;
    pthread_mutex_lock(&sp->lock);
    struct segment_pin *a = pin_find(sp, sp->active_id, 0);
    int drained = sp->n_pins == 1 && a && a->pins == 0;
    pthread_mutex_unlock(&sp->lock);
    /* Only this thread adds pins, so "drained" cannot change before the rotation. */
    if (!drained) return;
    uint64_t old_id = sp->active_id, old_size = sp->active_size;
    char err[160];
    if (rotate_segment(sp, err, sizeof err) < 0) {
        log_warn("spool: the queue drained but segment %016" PRIx64 " cannot be rolled over: %s",
                 old_id, err);
        return;
    }
    log_info("spool: the queue drained; segment %016" PRIx64 " (%llu bytes) released", old_id,
             (unsigned long long)old_size);
}

static void wait_for_work_locked(struct spool *sp)
{
    for (;;) {
        reap_doomed_locked(sp);
        int64_t now = monotonic_us();
        if (sp->stopping || sp->pending || sp->reclaim_check) return;
        if (sp->retry && now >= sp->retry_at_us) return;
        int64_t until = -1;
        if (sp->retry) until = sp->retry_at_us;
        if (sp->n_doomed && (until < 0 || now + 200000 < until)) until = now + 200000;
        if (until < 0) {
            pthread_cond_wait(&sp->wake, &sp->lock);
        } else {
            struct timespec ts = {(time_t)(until / 1000000), (long)(until % 1000000) * 1000};
            pthread_cond_timedwait(&sp->wake, &sp->lock, &ts);
        }
    }
}

static void *commit_thread(void *arg)
{
    struct spool *sp = arg;
    for (;;) {
        pthread_mutex_lock(&sp->lock);
        wait_for_work_locked(sp);
        struct request *batch = sp->pending;
        sp->pending = NULL;
        sp->pending_tail = &sp->pending;
        int stopping = sp->stopping;
        sp->reclaim_check = 0;
        pthread_mutex_unlock(&sp->lock);
        if (sp->retry && (stopping || batch || monotonic_us() >= sp->retry_at_us)) {
            /* marks that failed before go first, with any batch: they are older than anything
             * pending, and a hold must not overtake its release */
            struct request *last = sp->retry;
            while (last->next)
                last = last->next;
            last->next = batch;
            batch = sp->retry;
            sp->retry = NULL;
        }
        if (!batch) {
            if (stopping && !sp->retry) break;
            reclaim_if_drained(sp);
            continue;
        }
        write_batch(sp, batch, stopping);
        /* split: the marks to try again stay here, everything else goes to its caller */
        struct request *done = NULL, **done_tail = &done, **retry_tail = &sp->retry;
        while (batch) {
            struct request *r = batch;
            batch = r->next;
            r->next = NULL;
            if (r->retry) {
                r->retry = 0;
                *retry_tail = r;
                retry_tail = &r->next;
            } else {
                *done_tail = r;
                done_tail = &r->next;
            }
        }
        if (sp->retry)
            sp->retry_at_us = monotonic_us() + MARK_RETRY_US;
        else
            reclaim_if_drained(sp);
        if (!done) continue;
        handoff_push(sp->completed, done); /* the batch goes as one list */
    }
    return NULL;
}

/* Loop thread: the callbacks of one written batch, in submission order. */
static void completed_deliver(void *item, void *arg)
{
    (void)arg;
    struct request *list = item;
    while (list) {
        struct request *r = list;
        list = r->next;
        if (r->cb) r->cb(r->arg, r->status, &r->loc, r->err);
        free(r->payload);
        free(r);
    }
}

static void submit(struct spool *sp, struct request *r)
{
    pthread_mutex_lock(&sp->lock);
    *sp->pending_tail = r;
    sp->pending_tail = &r->next;
    pthread_cond_signal(&sp->wake);
    pthread_mutex_unlock(&sp->lock);
}

void spool_submit_message(struct spool *sp, const char *envelope, size_t envelope_len,
                          const char *data, size_t data_len, spool_done_cb cb, void *arg)
{
    struct request *r = xcalloc(1, sizeof *r);
    uint32_t elen = (uint32_t)envelope_len;
    r->type = RECORD_MESSAGE;
    r->payload_len = sizeof elen + envelope_len + data_len;
    r->payload = xmalloc(r->payload_len);
    memcpy(r->payload, &elen, sizeof elen);
    memcpy(r->payload + sizeof elen, envelope, envelope_len);
    memcpy(r->payload + sizeof elen + envelope_len, data, data_len);
    r->data_skip = sizeof elen + envelope_len;
    r->cb = cb;
    r->arg = arg;
    submit(sp, r);
}

void spool_submit_mark(struct spool *sp, const char *queue_id, uint32_t rcpt, enum spool_mark mark,
                       spool_done_cb cb, void *arg)
{
    struct request *r = xcalloc(1, sizeof *r);
    size_t qlen = strlen(queue_id);
    r->type = RECORD_MARK;
    r->payload_len = qlen + 1 + sizeof rcpt + 1;
    r->payload = xmalloc(r->payload_len);
    memcpy(r->payload, queue_id, qlen + 1);
    memcpy(r->payload + qlen + 1, &rcpt, sizeof rcpt);
    r->payload[qlen + 1 + sizeof rcpt] = (char)mark;
    r->data_skip = r->payload_len;
    r->cb = cb;
    r->arg = arg;
    submit(sp, r);
}

int spool_read(struct spool *sp, const struct spool_loc *loc, struct strbuf *out)
{
    char path[4096];
    segment_path(sp, loc->segment, path, sizeof path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    strbuf_reset(out);
    strbuf_reserve(out, loc->length);
    size_t got = 0;
    while (got < loc->length) {
        ssize_t n = pread(fd, out->data + got, loc->length - got, (off_t)(loc->offset + got));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            close(fd);
            return -1;
        }
        got += (size_t)n;
    }
    close(fd);
    out->len = got;
    out->data[got] = '\0';
    return 0;
}

/* --- open / close / recovery ------------------------------------------------------------- */

int list_segments(const char *dir, uint64_t **ids, size_t *n)
{
    DIR *d = opendir(dir);
    if (!d) return -1;
    struct dirent *de;
    *ids = NULL;
    *n = 0;
    while ((de = readdir(d))) {
        uint64_t id;
        int end = 0;
        /* exactly "seg-" + 16 hex digits + ".log": backups and editor files are not ours */
        if (strlen(de->d_name) == 24 &&
            sscanf(de->d_name, "seg-%16" SCNx64 ".log%n", &id, &end) == 1 && end == 24) {
            *ids = xrealloc(*ids, (*n + 1) * sizeof **ids);
            (*ids)[(*n)++] = id;
        }
    }
    closedir(d);
    for (size_t i = 1; i < *n; i++) /* insertion sort: few segments */
        for (size_t j = i; j > 0 && (*ids)[j - 1] > (*ids)[j]; j--) {
            uint64_t t = (*ids)[j];
            (*ids)[j] = (*ids)[j - 1];
            (*ids)[j - 1] = t;
        }
    return 0;
}

struct spool *spool_open(const char *dir, struct event_base *base, char *err, size_t errlen)
{
    crc32_init();
    if (dirs_make(dir, 0700, 0700, err, errlen) < 0) return NULL;
    struct spool *sp = xcalloc(1, sizeof *sp);
    sp->dir = xstrdup(dir);
    const char *max = getenv("OUTRELAY_SPOOL_SEGMENT_BYTES");
    sp->segment_max = max && atoll(max) > 0 ? (uint64_t)atoll(max) : SEGMENT_MAX_BYTES;
    sp->reclaim_min = env_bytes("OUTRELAY_SPOOL_RECLAIM_BYTES", RECLAIM_MIN_BYTES);
    sp->reserve = env_bytes("OUTRELAY_SPOOL_RESERVE_BYTES", RESERVE_BYTES);
    const char *wait = getenv("OUTRELAY_SPOOL_RECORDS_WAIT_MS");
    sp->barrier_wait_us = wait && *wait ? atoll(wait) * 1000 : BARRIER_WAIT_US;
    sp->base = base;
    sp->active_fd = -1;
    sp->pending_tail = &sp->pending;
    pthread_mutex_init(&sp->lock, NULL);
    pthread_condattr_t attr; /* timed waits (mark retries, doomed segments) on CLOCK_MONOTONIC */
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&sp->wake, &attr);
    pthread_condattr_destroy(&attr);
    sp->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (sp->dirfd < 0) {
        snprintf(err, errlen, "cannot open spool directory %s: %s", dir, strerror(errno));
        spool_close(sp);
        return NULL;
    }
    uint64_t *ids;
    size_t n;
    if (list_segments(dir, &ids, &n) < 0) {
        snprintf(err, errlen, "cannot list spool directory %s: %s", dir, strerror(errno));
        spool_close(sp);
        return NULL;
    }
    sp->next_id = n ? ids[n - 1] + 1 : 1;
    free(ids);
    sp->active_id = 0; /* no active segment until recovery is done */
    sp->completed = handoff_new(base, completed_deliver, sp);
    if (!sp->completed) {
        snprintf(err, errlen, "cannot create the spool's completion event");
        spool_close(sp);
        return NULL;
    }
    return sp;
}

int start_writer(struct spool *sp, char *err, size_t errlen)
{
    if (open_segment(sp, sp->next_id, err, errlen) < 0) return -1;
    if (pthread_create(&sp->thread, NULL, commit_thread, sp) != 0) {
        snprintf(err, errlen, "cannot start the spool commit thread");
        return -1;
    }
    sp->thread_started = 1;
    return 0;
}

void spool_close(struct spool *sp)
{
    if (!sp) return;
    spool_recovery_cancel(sp); /* what was not handed out stays for the next start */
    if (sp->thread_started) {
        pthread_mutex_lock(&sp->lock);
        sp->stopping = 1;
        pthread_cond_signal(&sp->wake);
        pthread_mutex_unlock(&sp->lock);
        pthread_join(sp->thread, NULL);
        handoff_drain(sp->completed); /* deliver the last callbacks */
    }
    if (sp->active_fd >= 0) close(sp->active_fd);
    if (sp->dirfd >= 0) close(sp->dirfd);
    pthread_mutex_lock(&sp->lock);
    reap_doomed_locked(sp); /* the rest waits for the records: the next start replays them */
    pthread_mutex_unlock(&sp->lock);
    free(sp->doomed);
    handoff_free(sp->completed);
    pthread_mutex_destroy(&sp->lock);
    pthread_cond_destroy(&sp->wake);
    free(sp->pins);
    free(sp->dir);
    free(sp);
}
