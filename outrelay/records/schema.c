/* schema.c - what a row of records.db is: the event names (the only place they are spelled),
 * the columns with the schema version that added each, and the upgrade of an older database in
 * place (columns added, typed facts filled from older rows' detail text, one transaction). A
 * database from a newer outrelay is refused, never changed. Called by records_open (loop
 * thread, before the writer starts) and by readers through records_upgrade (any thread). */
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

#include "common/strbuf.h"
#include "records/records.h"
#include "records/records_internal.h"

static const char *const records_type_names[RECORD_TYPE_COUNT] = {
    [RECORD_RECEIVED] = "received",   [RECORD_REFUSED] = "refused",
    [RECORD_SIGNED] = "signed",       [RECORD_DKIM_UPSTREAM] = "dkim-upstream",
    [RECORD_CHECKED] = "checked",     [RECORD_ROUTED] = "routed",
    [RECORD_ATTEMPT] = "attempt",     [RECORD_DELIVERED] = "delivered",
    [RECORD_DEFERRED] = "deferred",   [RECORD_BOUNCED] = "bounced",
    [RECORD_EXPIRED] = "expired",     [RECORD_SUPPRESSED] = "suppressed",
    [RECORD_HELD] = "held",           [RECORD_RELEASED] = "released",
    [RECORD_DELETED] = "deleted",     [RECORD_DSN] = "dsn",
    [RECORD_SHAPING] = "shaping",     [RECORD_RAMP] = "ramp",
    [RECORD_DELAYED] = "delayed",     [RECORD_CLUSTER] = "cluster",
    [RECORD_AUTOPILOT] = "autopilot",
};

const char *records_type_name(enum record_type type)
{
    if ((int)type <= 0 || (int)type >= RECORD_TYPE_COUNT) return NULL;
    return records_type_names[type];
}

enum record_type records_type_of(const char *name)
{
    for (int t = 1; name != NULL && t < RECORD_TYPE_COUNT; t++)
        if (strcmp(records_type_names[t], name) == 0) return (enum record_type)t;
    return 0;
}

/* The columns of events after id and ts_us, in table order, with the version that added them.
 * A new database gets them all; an older one gets those it lacks. */
static const struct records_column {
    const char *name, *type;
    int since;
} records_columns[] = {
    {"event", "TEXT", 1},
    {"queue_id", "TEXT", 1},
    {"message_id", "TEXT", 1},
    {"origin", "TEXT", 1},
    {"client_addr", "TEXT", 1},
    {"sender", "TEXT", 1},
    {"recipient", "TEXT", 1},
    {"egress", "TEXT", 1},
    {"source_addr", "TEXT", 1},
    {"remote_mx", "TEXT", 1},
    {"remote_addr", "TEXT", 1},
    {"reply_code", "INTEGER", 1},
    {"enhanced_code", "TEXT", 1},
    {"reply_text", "TEXT", 1},
    {"tls_version", "TEXT", 1},
    {"tls_cipher", "TEXT", 1},
    {"size", "INTEGER", 1},
    {"delay_ms", "INTEGER", 1},
    {"attempt_ms", "INTEGER", 1},
    {"detail", "TEXT", 1},
    {"from_domain", "TEXT", 2},
    {"spf_result", "TEXT", 2},
    {"spf_domain", "TEXT", 2},
    {"dkim", "TEXT", 2},
    {"dmarc_policy", "TEXT", 2},
    {"dmarc_result", "TEXT", 2},
    {"action", "TEXT", 2},
    {"ramp_percent", "REAL", 2},
    {"provider", "TEXT", 3},
    {"nrcpt", "INTEGER", 4},
    {"route_reason", "TEXT", 4},
    {"dsn_queue_id", "TEXT", 4},
    {"next_attempt_s", "INTEGER", 4},
    {"dkim_aligned", "INTEGER", 4},
    {"rule", "TEXT", 4},
    {"until_ts", "INTEGER", 4},
    {"tls_policy", "TEXT", 5},
    {"tls_policy_source", "TEXT", 5},
    {"tls_failure", "TEXT", 6},
    {"tls_policy_domain", "TEXT", 6},
    {"tls_policy_string", "TEXT", 6},
    {"route_group", "TEXT", 7},
    {"planned_egress", "TEXT", 7},
};

static const char records_indexes_sql[] =
    "CREATE INDEX IF NOT EXISTS events_queue_id ON events (queue_id);"
    "CREATE INDEX IF NOT EXISTS events_message_id ON events (message_id);"
    "CREATE INDEX IF NOT EXISTS events_ts_us ON events (ts_us);"
    "CREATE INDEX IF NOT EXISTS events_event_ts ON events (event, ts_us);";

/* Version 4 gives the facts older rows packed into detail their own columns: one UPDATE per
 * fact over the rows that have it. The text formats are the ones versions 1-3 wrote. */
static const char records_backfill_v4_sql[] =
    /* received: "nrcpt=N" or "nrcpt=N; client certificate ..." */
    "UPDATE events SET nrcpt = CAST(substr(detail, 7) AS INTEGER), detail = CASE WHEN "
    "instr(detail, '; ') > 0 THEN substr(detail, instr(detail, '; ') + 2) END "
    "WHERE event = 'received' AND detail LIKE 'nrcpt=%';"
    /* routed: "provider=P[; REASON][; waiting in the queue]" */
    "UPDATE events SET provider = coalesce(provider, substr(detail, 10, instr(detail || ';', ';') "
    "- 10)), route_reason = nullif(CASE WHEN instr(detail, '; ') > 0 THEN substr(detail, "
    "instr(detail, '; ') + 2) ELSE '' END, ''), detail = NULL "
    "WHERE event = 'routed' AND detail LIKE 'provider=%';"
    "UPDATE events SET route_reason = CASE WHEN route_reason = 'waiting in the queue' THEN NULL "
    "ELSE substr(route_reason, 1, length(route_reason) - 22) END "
    "WHERE event = 'routed' AND action = 'wait' AND route_reason LIKE '%waiting in the queue';"
    /* dsn: the notification's queue id */
    "UPDATE events SET dsn_queue_id = detail, detail = NULL WHERE event = 'dsn';"
    /* deferred: "next attempt in Ns" (the text stays: it reads well in a trail) */
    "UPDATE events SET next_attempt_s = CAST(substr(detail, 17) AS INTEGER) "
    "WHERE event = 'deferred' AND detail LIKE 'next attempt in %s';"
    /* checked: a signature "key=ok aligned" */
    "UPDATE events SET dkim_aligned = coalesce(dkim, '') LIKE '%key=ok aligned%' "
    "WHERE event = 'checked';"
    /* shaping: "rule NAME: ACTION until TIME" or "rule NAME lifted (WHY)" */
    "UPDATE events SET rule = rtrim(substr(detail, 6, instr(substr(detail, 6) || ' ', ' ') - 1), "
    "':'), until_ts = CASE WHEN instr(detail, ' until ') > 0 THEN CAST(strftime('%s', "
    "substr(detail, instr(detail, ' until ') + 7)) AS INTEGER) END "
    "WHERE event = 'shaping' AND detail LIKE 'rule %';";

/* Version 7 gives routed rows their route group and planned egress, which the reason text
 * carried: "group NAME: ... rendezvous -> EGRESS (...". */
static const char records_backfill_v7_sql[] =
    "UPDATE events SET route_group = substr(route_reason, 7, instr(route_reason, ':') - 7) "
    "WHERE event = 'routed' AND route_reason LIKE 'group %:%';"
    "UPDATE events SET planned_egress = substr(route_reason, instr(route_reason, 'rendezvous -> ') "
    "+ 14, instr(substr(route_reason, instr(route_reason, 'rendezvous -> ') + 14) || ' ', ' ') - "
    "1) WHERE event = 'routed' AND instr(route_reason, 'rendezvous -> ') > 0;";

int records_sql_exec(sqlite3 *db, const char *sql, char *err, size_t errlen)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(err, errlen, "records: %s", msg != NULL ? msg : sqlite3_errmsg(db));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

/* The first column of the first row of sql as an integer; missing stays at fallback. */
static int records_schema_int(sqlite3 *db, const char *sql, int fallback)
{
    sqlite3_stmt *st = NULL;
    int v = fallback;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* The version the database says it has: 0 for no events table (a new database), 1 for an
 * events table without a version row (the first schema). */
static int records_schema_version(sqlite3 *db)
{
    if (!records_schema_int(db,
                            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = "
                            "'events'",
                            0))
        return 0;
    if (!records_schema_int(db,
                            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = "
                            "'schema_version'",
                            0))
        return 1;
    return records_schema_int(db, "SELECT max(version) FROM schema_version", 1);
}

static int records_schema_has_column(sqlite3 *db, const char *name)
{
    char sql[160];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pragma_table_info('events') WHERE name = '%s'",
             name);
    return records_schema_int(db, sql, 0) > 0;
}

/* Creates the tables (a new database) or adds the columns an older one lacks and fills them. */
static int records_schema_build(sqlite3 *db, int version, char *err, size_t errlen)
{
    struct strbuf sql = STRBUF_INIT;
    size_t n = sizeof records_columns / sizeof records_columns[0];
    strbuf_puts(&sql, "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);");
    if (version == 0) {
        strbuf_puts(&sql, "CREATE TABLE events (id INTEGER PRIMARY KEY, ts_us INTEGER NOT NULL");
        for (size_t i = 0; i < n; i++)
            strbuf_printf(&sql, ", %s %s", records_columns[i].name, records_columns[i].type);
        strbuf_puts(&sql, ");");
    } else {
        for (size_t i = 0; i < n; i++)
            if (records_columns[i].since > version &&
                !records_schema_has_column(db, records_columns[i].name))
                strbuf_printf(&sql, "ALTER TABLE events ADD COLUMN %s %s;", records_columns[i].name,
                              records_columns[i].type);
        if (version < 4) strbuf_puts(&sql, records_backfill_v4_sql);
        if (version < 7) strbuf_puts(&sql, records_backfill_v7_sql);
    }
    strbuf_puts(&sql, records_indexes_sql);
    strbuf_printf(&sql, "DELETE FROM schema_version; INSERT INTO schema_version VALUES (%d);",
                  RECORDS_SCHEMA_VERSION);
    int rc = records_sql_exec(db, sql.data, err, errlen);
    strbuf_free(&sql);
    return rc;
}

int records_schema_apply(sqlite3 *db, char *err, size_t errlen)
{
    if (records_sql_exec(db, "BEGIN IMMEDIATE;", err, errlen) != 0) return -1;
    int version = records_schema_version(db);
    int rc = 0;
    if (version > RECORDS_SCHEMA_VERSION) {
        snprintf(err, errlen,
                 "records: records.db has schema version %d, written by a newer outrelay (this "
                 "one knows up to version %d); run the newer outrelay or move the file away",
                 version, RECORDS_SCHEMA_VERSION);
        rc = -1;
    } else if (version < RECORDS_SCHEMA_VERSION) {
        rc = records_schema_build(db, version, err, errlen);
    }
    if (rc != 0) {
        sqlite3_exec(db, "ROLLBACK;", NULL, NULL, NULL);
        return -1;
    }
    return records_sql_exec(db, "COMMIT;", err, errlen);
}

int records_upgrade(const char *path, char *err, size_t errlen)
{
    sqlite3 *db = NULL;
    int rc = -1;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "records: cannot open %s: %s", path,
                 db != NULL ? sqlite3_errmsg(db) : "out of memory");
    } else {
        /* the relay's writer holds the lock only for a batch commit */
        sqlite3_busy_timeout(db, 10000);
        /* current: nothing to write, so a reader without write access is fine */
        rc = records_schema_version(db) == RECORDS_SCHEMA_VERSION
                 ? 0
                 : records_schema_apply(db, err, errlen);
    }
    sqlite3_close(db);
    return rc;
}
