/* spool_internal.h - INTERNAL to spool/: what spool.c (the commit thread, pins, open/close) and
 * spool_recover.c (the scan at start) share: the record format and struct spool. The API is
 * spool.h. Locking rules are in spool.c's header comment. */
#ifndef OUTRELAY_SPOOL_INTERNAL_H
#define OUTRELAY_SPOOL_INTERNAL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "spool/spool.h"

#define SPOOL_MAGIC 0x5053524fu /* "ORSP" */
#define RECORD_MESSAGE 'M'
#define RECORD_MARK 'K'

struct record_header {
    uint32_t magic;
    uint8_t type;
    uint8_t pad[3];
    uint32_t length; /* payload bytes */
    uint32_t crc;    /* CRC-32 of the payload */
};

struct request {
    struct request *next;
    uint8_t type;
    char *payload; /* envelope length (u32) + envelope + data, or a mark */
    size_t payload_len;
    size_t data_skip; /* offset of the data inside the payload (messages) */
    spool_done_cb cb;
    void *arg;
    int status;
    int retry; /* a mark that failed: back to the queue instead of to its caller */
    char err[160];
    struct spool_loc loc;
};

struct segment_pin {
    uint64_t id;
    long pins;
};

/* A segment nothing needs any more, kept until the records emitted before it was released are
 * committed (the continuity proof: recovery replays records from the spool). */
struct doomed_segment {
    uint64_t id;
    uint64_t token;
    int64_t since_us; /* monotonic */
    int warned;
};

struct spool {
    char *dir;
    int dirfd;
    struct event_base *base;

    pthread_t thread;
    int thread_started;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    int stopping;
    struct request *pending, **pending_tail;
    struct handoff *completed; /* written batches, commit thread -> loop */

    /* owned by the commit thread once it runs */
    int active_fd;
    uint64_t active_id;
    uint64_t active_size;
    uint64_t next_id;     /* first segment this run writes */
    uint64_t segment_max; /* rotate after this many bytes */
    uint64_t reclaim_min; /* roll a drained segment over from this size */
    uint64_t reserve;     /* bytes preallocated past the end; 0: not supported */
    uint64_t reserved_end;
    int space_short;       /* the reserve cannot be renewed: refuse messages */
    struct request *retry; /* marks to write again, oldest first */
    int64_t retry_at_us;   /* monotonic */

    struct segment_pin *pins; /* under lock */
    size_t n_pins;
    struct doomed_segment *doomed; /* under lock, oldest first */
    size_t n_doomed;
    int reclaim_check; /* under lock: a pin count reached 0, look whether the queue drained */
    uint64_t (*barrier_token)(void);
    int (*barrier_passed)(uint64_t token);
    int64_t barrier_wait_us;

    spool_witness_fn witness;
    void *witness_arg;
    struct spool_recovery *recovery; /* the handing out of recovered messages, while it runs */
};

uint32_t crc32_of(const void *data, size_t len);
void segment_path(const struct spool *sp, uint64_t id, char *buf, size_t size);
/* Segment ids in dir ("seg-" + 16 hex digits + ".log"), sorted. Returns 0 / -1. */
int list_segments(const char *dir, uint64_t **ids, size_t *n);
/* Under lock: the pin entry of a segment (created when asked); dooms the unpinned old end. */
struct segment_pin *pin_find(struct spool *sp, uint64_t id, int create);
void collect_segments_locked(struct spool *sp);
/* Opens the first segment of this run and starts the commit thread (end of recovery). */
int start_writer(struct spool *sp, char *err, size_t errlen);

#endif
