/* records_internal.h - what the files of records/ share: the schema version and the function
 * that creates or upgrades the schema on an open connection (records/schema.c). Not for other
 * modules: they use records.h. */
#ifndef OUTRELAY_RECORDS_INTERNAL_H
#define OUTRELAY_RECORDS_INTERNAL_H

#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

/* 1: delivery columns; 2: authentication and routing; 3: provider; 4: typed facts (nrcpt,
 * route_reason, dsn_queue_id, next_attempt_s, dkim_aligned, rule, until_ts); 5: tls_policy and
 * tls_policy_source; 6: tls_failure, tls_policy_domain, tls_policy_string (TLS reporting); 7:
 * route_group and planned_egress of routed rows. */
#define RECORDS_SCHEMA_VERSION 7

/* Creates the latest schema in a new database, upgrades an older one in place, refuses a newer
 * one; one IMMEDIATE transaction. Returns 0 / -1 with err filled. */
int records_schema_apply(sqlite3 *db, char *err, size_t errlen);

/* sqlite3_exec with the error as "records: ..." in err. Returns 0 / -1. */
int records_sql_exec(sqlite3 *db, const char *sql, char *err, size_t errlen);

/* Transactions of rows the writer has committed since the process started (tests check that rows
 * arriving one by one under load share transactions). Any thread. */
uint64_t records_commit_count(void);

#endif
