/* records.h - every event of the mail path becomes one SQLite row (WAL) under <state>/records.db
 * and one Postfix-style log line ("QUEUEID: event=..., to=<...>, ..."). records_emit() may be
 * called from any thread; it copies the event and never blocks on disk: a writer thread batches
 * rows into transactions. records_close() flushes everything. Reports read the same table. */
#ifndef OUTRELAY_RECORDS_H
#define OUTRELAY_RECORDS_H

#include <stddef.h>
#include <stdint.h>

/* Every field is optional (NULL / 0) except event and queue_id. */
struct record_event {
    const char *event; /* received, attempt, delivered, deferred, bounced, expired,
                          held, released, deleted, dsn */
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
    int64_t size;       /* message bytes */
    int64_t delay_ms;   /* since the message was received */
    int64_t attempt_ms; /* duration of this attempt */
    const char *detail; /* free text, e.g. why a message stayed queued */
    /* authentication and routing (sign, check, route stages) */
    const char *from_domain;
    const char *spf_result; /* pass, fail, softfail, neutral, none, temperror, permerror */
    const char *spf_domain;
    const char *dkim;         /* "d=example.org s=s1 a=rsa-sha256 pass aligned; ..." */
    const char *dmarc_policy; /* "p=reject sp=quarantine pct=100 adkim=r aspf=r" */
    const char *dmarc_result; /* predicted: pass, fail, temperror, none */
    const char *action;       /* what outrelay did about it: send, reroute, hold, bounce, ... */
    double ramp_percent;      /* the ramp's cloud share when the egress was chosen; <0 unset */
    const char *provider;   /* of the recipient domain (route stage): google, ..., other */
};

/* Opens (creates) <state_dir>/records.db, creates the schema, starts the writer thread.
 * Returns 0 / -1 with err filled. */
int records_open(const char *state_dir, char *err, size_t errlen);
/* Rows older than this many seconds are deleted (at open, then hourly); 0 keeps everything.
 * Call before records_open. */
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
/* Waits until every queued row is committed. */
void records_flush(void);
/* Flushes and stops the writer; closes the database. */
void records_close(void);

#endif
