/* export.c - `outrelay report export --format pmta`: the delivery records as a PowerMTA-style
 * accounting CSV (header line, then one d / b / t record per delivered, bounced or expired, and
 * deferred recipient attempt) so existing accounting tooling can read outrelay's history.
 * Streams rows straight from SQLite to the output; never holds the export in memory. */
#include <string.h>

#include "report/report_core.h"

static const char *const export_columns[] = {"type",
                                             "timeLogged",
                                             "timeQueued",
                                             "orig",
                                             "rcpt",
                                             "orcpt",
                                             "dsnAction",
                                             "dsnStatus",
                                             "dsnDiag",
                                             "dsnMta",
                                             "bounceCat",
                                             "srcType",
                                             "srcMta",
                                             "dlvType",
                                             "dlvSourceIp",
                                             "dlvDestinationIp",
                                             "dlvEsmtpAvailable",
                                             "dlvSize",
                                             "vmta",
                                             "jobId",
                                             "envId",
                                             "queue",
                                             "vmtaPool",
                                             "header_Message-Id",
                                             "dlvTlsProtocol",
                                             "dlvTlsCipher",
                                             "outrelayQueueId",
                                             "outrelayOrigin"};

/* PowerMTA's bounce categories, guessed from the enhanced status code and the reply. */
static const char *export_bounce_category(const char *event, const char *enhanced, int code)
{
    if (strcmp(event, "expired") == 0) return "message-expired";
    if (strcmp(event, "bounced") != 0) return "";
    if (strncmp(enhanced, "5.1.1", 5) == 0 || strncmp(enhanced, "5.1.0", 5) == 0)
        return "bad-mailbox";
    if (strncmp(enhanced, "5.1.2", 5) == 0 || strncmp(enhanced, "5.4.4", 5) == 0)
        return "bad-domain";
    if (strncmp(enhanced, "5.2.2", 5) == 0) return "quota-issues";
    if (strncmp(enhanced, "5.2.1", 5) == 0) return "inactive-mailbox";
    if (strncmp(enhanced, "5.7.", 4) == 0) return "policy-related";
    if (strncmp(enhanced, "5.6.", 4) == 0) return "content-related";
    if (strncmp(enhanced, "5.5.", 4) == 0) return "protocol-errors";
    if (strncmp(enhanced, "5.1.8", 5) == 0 || strncmp(enhanced, "5.1.7", 5) == 0)
        return "invalid-sender";
    return code >= 500 ? "other" : "";
}

/* "192.0.2.1:25" / "[2001:db8::1]:25" -> the address alone. */
static void export_strip_port(const char *addr, char *out, size_t size)
{
    const char *colon = strrchr(addr, ':');
    if (addr[0] == '[') {
        const char *close = strchr(addr, ']');
        snprintf(out, size, "%.*s", close ? (int)(close - addr - 1) : (int)strlen(addr + 1),
                 addr + 1);
    } else if (colon && strchr(addr, ':') == colon) {
        snprintf(out, size, "%.*s", (int)(colon - addr), addr);
    } else {
        snprintf(out, size, "%s", addr);
    }
}

static void export_row(FILE *out, sqlite3_stmt *st)
{
    char logged[32], queued[32], buf[640], dest[128];
    const char *event = report_text_col(st, 0);
    int64_t ts = sqlite3_column_int64(st, 1), delay_ms = sqlite3_column_int64(st, 2);
    const char *sender = report_text_col(st, 3), *rcpt = report_text_col(st, 4);
    int code = sqlite3_column_int(st, 5);
    const char *enhanced = report_text_col(st, 6), *text = report_text_col(st, 7);
    const char *mx = report_text_col(st, 8), *raddr = report_text_col(st, 9);
    const char *egress = report_text_col(st, 12);
    const char *fields[sizeof export_columns / sizeof export_columns[0]] = {0};
    char status[64], diag[600], mta[300], queue[300], size[32];
    int delivered = strcmp(event, "delivered") == 0, deferred = strcmp(event, "deferred") == 0;

    report_time_text(ts, buf, sizeof buf);
    snprintf(logged, sizeof logged, "%s+0000", buf);
    report_time_text(ts - delay_ms * 1000, buf, sizeof buf);
    snprintf(queued, sizeof queued, "%s+0000", buf);
    snprintf(status, sizeof status, "%s",
             enhanced[0]       ? enhanced
             : delivered       ? "2.0.0"
             : deferred        ? "4.0.0"
             : event[0] == 'e' ? "4.4.7"
                               : "5.0.0");
    diag[0] = '\0';
    if (code)
        snprintf(diag, sizeof diag, "smtp;%d %s", code, text);
    else if (event[0] == 'e')
        snprintf(diag, sizeof diag, "maximum queue lifetime exceeded");
    export_strip_port(raddr, dest, sizeof dest);
    mta[0] = '\0';
    if (mx[0] || dest[0]) snprintf(mta, sizeof mta, "%s (%s)", mx[0] ? mx : dest, dest);
    const char *at = strrchr(rcpt, '@');
    snprintf(queue, sizeof queue, "%s/%s", at ? at + 1 : rcpt, egress);
    snprintf(size, sizeof size, "%lld", (long long)sqlite3_column_int64(st, 13));

    fields[0] = delivered ? "d" : deferred ? "t" : "b";
    fields[1] = logged;
    fields[2] = queued;
    fields[3] = sender;
    fields[4] = rcpt;
    fields[6] = delivered ? "relayed" : deferred ? "delayed" : "failed";
    fields[7] = status;
    fields[8] = diag;
    fields[9] = mta;
    fields[10] = export_bounce_category(event, enhanced, code);
    fields[11] = "smtp";
    fields[12] = report_text_col(st, 10); /* client address that submitted it */
    fields[13] = "smtp";
    fields[14] = report_text_col(st, 11);
    fields[15] = dest;
    fields[17] = size;
    fields[18] = egress;
    fields[21] = queue;
    fields[23] = report_text_col(st, 14);
    fields[24] = report_text_col(st, 15);
    fields[25] = report_text_col(st, 16);
    fields[26] = report_text_col(st, 17);
    fields[27] = report_text_col(st, 18);
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        if (i) fputc(',', out);
        report_csv_field(out, fields[i]);
    }
    fputs("\r\n", out);
}

int report_export_pmta(struct report_ctx *ctx, FILE *out)
{
    struct strbuf where = STRBUF_INIT, sql = STRBUF_INIT;
    strbuf_puts(&where, "event IN ('delivered', 'bounced', 'expired', 'deferred')");
    report_sql_filters(&where, ctx, NULL, REPORT_SENDER_DOMAIN_SQL("sender"), 1);
    uint64_t total = 0;
    if (ctx->opt.progress) {
        strbuf_printf(&sql, "SELECT count(*) FROM events WHERE %s", where.data);
        sqlite3_stmt *st = report_prepare(ctx, sql.data);
        if (st && sqlite3_step(st) == SQLITE_ROW) total = (uint64_t)sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
        strbuf_reset(&sql);
    }
    strbuf_printf(&sql,
                  "SELECT event, ts_us, coalesce(delay_ms, 0), coalesce(sender, ''), recipient, "
                  "reply_code, enhanced_code, reply_text, remote_mx, remote_addr, client_addr, "
                  "source_addr, egress, size, message_id, tls_version, tls_cipher, queue_id, "
                  "origin FROM events WHERE %s ORDER BY id",
                  where.data);
    sqlite3_stmt *st = report_prepare(ctx, sql.data);
    strbuf_free(&where);
    strbuf_free(&sql);
    if (!st) return -1;
    for (size_t i = 0; i < sizeof export_columns / sizeof export_columns[0]; i++)
        fprintf(out, "%s%s", i ? "," : "", export_columns[i]);
    fputs("\r\n", out);
    int rc;
    uint64_t rows = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        export_row(out, st);
        if (++rows % 4096 == 0) report_progress(ctx, "export", rows, total);
    }
    report_progress(ctx, "export", rows, total ? total : rows);
    report_progress_end(ctx);
    if (rc != SQLITE_DONE)
        snprintf(ctx->err, sizeof ctx->err, "records: %s", sqlite3_errmsg(ctx->db));
    sqlite3_finalize(st);
    if (rc == SQLITE_DONE && ferror(out)) {
        snprintf(ctx->err, sizeof ctx->err, "write error");
        return -1;
    }
    return rc == SQLITE_DONE ? 0 : -1;
}
