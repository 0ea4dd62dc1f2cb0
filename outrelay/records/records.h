/* records.h - every event of the mail path becomes one SQLite row (WAL) under <state>/records.db
 * and one Postfix-style log line ("QUEUEID: event=..., to=<...>, ..."). records_emit() may be
 * called from any thread; it copies the event and never blocks on disk: a writer thread batches
 * rows into transactions. records_close() flushes everything. Reports read the same table: each
 * fact has its own column (records/schema.c); `detail` is free text for people only. */
#ifndef OUTRELAY_RECORDS_H
#define OUTRELAY_RECORDS_H

#include <stddef.h>
#include <stdint.h>

/* What happened. The names ("received", ...) live only in records_type_name(); the row's
 * event column holds the name. 0 is no type: such an event is refused. */
enum record_type {
    RECORD_RECEIVED = 1,  /* accepted (250 after DATA) */
    RECORD_REFUSED,       /* refused by policy before 250 */
    RECORD_SIGNED,        /* our DKIM signatures (or why none) */
    RECORD_DKIM_UPSTREAM, /* signatures that came with the message, verified */
    RECORD_CHECKED,       /* SPF / DMARC predicted for one egress */
    RECORD_ROUTED,        /* egress chosen for a recipient (or waiting) */
    RECORD_ATTEMPT,       /* one SMTP transaction */
    RECORD_DELIVERED,
    RECORD_DEFERRED,
    RECORD_BOUNCED,
    RECORD_EXPIRED,
    RECORD_SUPPRESSED, /* duplicate of a delivered copy */
    RECORD_HELD,
    RECORD_RELEASED,
    RECORD_DELETED,
    RECORD_DSN,       /* a delivery status notification was queued */
    RECORD_SHAPING,   /* a shaping rule started or was lifted */
    RECORD_RAMP,      /* an operator override of the ramp */
    RECORD_DELAYED,   /* the sender was warned that a recipient is still not delivered */
    RECORD_CLUSTER,   /* the shared Redis went down (action "down") or came back ("up") */
    RECORD_AUTOPILOT, /* a route group's autopilot judged its gates (action: the verdict) */
};
#define RECORD_TYPE_COUNT (RECORD_AUTOPILOT + 1)

/* "received", ...; NULL for a value outside the enum. */
const char *records_type_name(enum record_type type);
/* The type of a name, 0 when there is none (for callers that carry the name as text). */
enum record_type records_type_of(const char *name);

/* Every field is optional (NULL / 0) except type and queue_id. */
struct record_event {
    enum record_type type;
    const char *queue_id;
    const char *message_id;
    const char *origin;
    const char *client_addr;
    const char *sender;
    const char *recipient;
    const char *egress;
    const char *source_addr;
    const char *remote_mx;
    const char *remote_addr;
    int reply_code; /* 0 when there was no SMTP reply */
    const char *enhanced_code;
    const char *reply_text;
    const char *tls_version;
    const char *tls_cipher;
    const char *tls_policy;        /* the TLS policy's level: none, may, encrypt, verify */
    const char *tls_policy_source; /* who decided it: table (tls_policy:), egress */
    const char *tls_failure;       /* why TLS failed: an RFC 8460 result type */
    const char *tls_policy_domain; /* the domain whose published policy (DANE, MTA-STS) applied */
    const char *tls_policy_string; /* that policy as text, one line per record or policy line */
    const char *route_group;       /* routed: the route group (NULL: no groups configured) */
    const char *planned_egress;    /* routed: the egress the ramp chose, before spills */
    int64_t size;                  /* message bytes */
    int64_t delay_ms;              /* since the message was received */
    int64_t attempt_ms;            /* duration of this attempt */
    const char *detail;            /* free text, e.g. why a message stayed queued */
    /* authentication and routing (sign, check, route stages) */
    const char *from_domain;
    const char *spf_result; /* pass, fail, softfail, neutral, none, temperror, permerror */
    const char *spf_domain;
    const char *dkim;         /* "d=example.org s=s1 a=rsa-sha256 pass aligned; ..." */
    const char *dmarc_policy; /* "p=reject sp=quarantine pct=100 adkim=r aspf=r" */
    const char *dmarc_result; /* predicted: pass, fail, temperror, none */
    const char *action;       /* what outrelay did about it: send, reroute, hold, bounce, ... */
    double ramp_percent;      /* the ramp's cloud share when the egress was chosen; <0 unset */
    const char *provider;     /* of the recipient domain (route stage): google, ..., other */
    /* typed facts of single events (0 / NULL: not known) */
    int64_t nrcpt;            /* received: recipients accepted */
    const char *route_reason; /* routed: why this egress (ramp bucket, cap, pin) */
    const char *dsn_queue_id; /* dsn: queue id of the notification message */
    int64_t next_attempt_s;   /* deferred: seconds until the next attempt */
    int dkim_aligned;         /* checked: 1 when a signature aligns and DNS has its key */
    const char *rule;         /* shaping: the rule's name */
    int64_t until;            /* shaping: when the action ends (Unix seconds) */
};

/* Opens (creates) <state_dir>/records.db, creates the schema or upgrades an older one in place
 * (records_upgrade), starts the writer thread. Returns 0 / -1 with err filled. */
int records_open(const char *state_dir, char *err, size_t errlen);
/* Brings the database at path (which must exist) to the current schema: columns added and
 * filled from older rows' detail text, in one transaction. A database written by a newer
 * outrelay is refused. For readers (reports) before they open it read-only; any thread.
 * Returns 0 / -1 with err filled. */
int records_upgrade(const char *path, char *err, size_t errlen);
/* Rows older than this many seconds are deleted (at open, then hourly); 0 keeps everything.
 * Call before records_open, and again on a reload (any thread; the writer reads it). */
void records_set_retention(int64_t seconds);
/* Logs the event and queues its row. Safe before records_open (then it only logs). */
void records_emit(const struct record_event *ev);
/* One more consumer of every event (the metrics endpoint): called from records_emit, on the
 * emitting thread, before the row is queued. NULL removes it. */
void records_set_observer(void (*observer)(const struct record_event *ev));
/* Calls fn for every (Message-ID, recipient) delivered since since_us, from <state_dir>/records.db
 * (read on its own connection; safe before or after records_open). Returns 0 / -1. */
int records_recent_deliveries(const char *state_dir, int64_t since_us,
                              void (*fn)(void *arg, const char *message_id, const char *recipient,
                                         int64_t ts_us),
                              void *arg);
/* The same for a row whose time is known (replays): logged and queued with ts_us; the
 * observer is not told (it counts live traffic). */
void records_emit_at(const struct record_event *ev, int64_t ts_us);
/* Durability barrier for the spool (spool_set_release_barrier): a token for every row queued so
 * far, and whether all of them are committed (always true when records are not open). Any
 * thread; never blocks on the database. */
uint64_t records_barrier(void);
int records_barrier_passed(uint64_t token);

/* Replay at start (records/replay.c): the spool is the truth about what was accepted and what
 * became final; rows lost with a crash (rows are committed asynchronously) are inserted again
 * from it, marked "replayed from spool at start". Open after records_open, feed every recovered
 * message, close. Loop thread, before the relay accepts mail. */
struct records_replay;
struct envelope;
struct records_replay *records_replay_open(const char *state_dir, char *err, size_t errlen);
/* What records.db says of one open recipient's earlier tries: each failed attempt wrote one
 * "deferred" row (its time and next_attempt_s). attempts 0: nothing known (due now). */
struct records_retry {
    int attempts;    /* deferred rows so far */
    int64_t last_us; /* ts_us of the newest of them */
    int64_t due;     /* unix seconds: its ts + next_attempt_s (when the next try was due) */
};
/* Counts one deferred row into r (rows in any order; the newest sets the due time). Pure. */
void records_retry_add(struct records_retry *r, int64_t ts_us, int64_t next_attempt_s);
/* final[i]: the spool mark of recipient i ('D' delivered, 'B' bounced, 'E' expired) or 0 while
 * open; deleted: the operator deleted the message. Queues the rows records.db lacks: received
 * (not for our own DSNs, which are never "received"), the final event of each final recipient,
 * deleted. retry (NULL, or env->n_rcpts entries): filled from the same read for every open
 * recipient, zero when records.db has no deferred row for it. Returns the number of rows
 * queued, or -1 when records.db could not be read (retry is then all zero). */
int records_replay_message(struct records_replay *rp, const struct envelope *env, const char *final,
                           int deleted, struct records_retry *retry);
/* Frees rp; *messages and *rows (may be NULL): how many messages got rows, how many rows. */
void records_replay_close(struct records_replay *rp, long *messages, long *rows);

/* Waits until every queued row is committed. */
void records_flush(void);
/* Flushes and stops the writer; closes the database. */
void records_close(void);

#endif
