/* test_rua.c - unit tests for outrelay/report/rua*.c: the sample aggregate reports in
 * tests/data/rua (plain XML, gzip, zip) import into records.db with the right rows and counts,
 * a second import is skipped, every hostile file (entities, XXE, DTD, malformed, truncated,
 * gzip/zip bombs made here at run time, deep nesting, non-reports, a bad record, a FIFO) is
 * refused with its name in the message and leaves nothing stored, and rua_compare lines receivers'
 * observations up with planted "checked" predictions, marking the planted mismatches. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>
#include <zip.h>
#include <zlib.h>

#include "common/strbuf.h"
#include "common/util.h"
#include "records/records.h"
#include "report/rua.h"

#define GOOGLE "google-example.org-2026-03-01.xml"
#define OUTLOOK "outlook-example.org-2026-03-01.xml.gz"
#define YAHOO "yahoo-example.net-2026-03-02.zip"

struct fixture {
    char *state;
    char data[512];
};

static void data_path(const struct fixture *fx, const char *name, char *out, size_t size)
{
    snprintf(out, size, "%s/%s", fx->data, name);
}

static void remove_tree(const char *dir)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

/* One "checked" event as the queue writes it after the alignment check. */
static void emit_checked(const char *qid, const char *domain, const char *egress, const char *ip,
                         const char *spf, const char *dmarc)
{
    struct record_event ev = {.type = RECORD_CHECKED,
                              .queue_id = qid,
                              .sender = "news@example.org",
                              .egress = egress,
                              .source_addr = ip,
                              .from_domain = domain,
                              .spf_result = spf,
                              .spf_domain = domain,
                              .dmarc_result = dmarc,
                              .action = "send",
                              .ramp_percent = -1};
    records_emit(&ev);
}

static int setup(void **state)
{
    struct fixture *fx = xcalloc(1, sizeof *fx);
    fx->state = xstrdup("/tmp/test_rua.XXXXXX");
    assert_non_null(mkdtemp(fx->state));
    const char *src = getenv("OUTRELAY_SRC");
    snprintf(fx->data, sizeof fx->data, "%s/tests/data/rua", src != NULL ? src : ".");

    char err[256];
    assert_int_equal(records_open(fx->state, err, sizeof err), 0);
    emit_checked("Q1", "example.org", "legacy", "192.0.2.10", "pass", "pass");
    emit_checked("Q2", "example.org", "legacy", "192.0.2.10", "pass", "pass");
    emit_checked("Q3", "EXAMPLE.org", "legacy", "192.0.2.10", "pass", "pass");
    /* planted: we predict SPF pass on the cloud IP, receivers saw it fail */
    emit_checked("Q4", "example.org", "cloud", "198.51.100.20", "pass", "pass");
    emit_checked("Q5", "example.org", "cloud", "198.51.100.20", "pass", "pass");
    emit_checked("Q6", "example.org", "cloud", "2001:db8:25::7", "pass", "pass");
    /* planted: we predict DMARC fail for example.net on cloud, receivers saw DKIM carry it */
    emit_checked("Q7", "example.net", "cloud", "198.51.100.20", "fail", "fail");
    emit_checked("Q8", "example.net", "legacy", "192.0.2.10", "softfail", "fail");
    /* not predictions for an IP: a DNS recheck and a delivery */
    struct record_event recheck = {.type = RECORD_CHECKED,
                                   .queue_id = "Q9",
                                   .from_domain = "example.org",
                                   .dmarc_result = "temperror",
                                   .action = "recheck",
                                   .ramp_percent = -1};
    records_emit(&recheck);
    struct record_event delivered = {.type = RECORD_DELIVERED,
                                     .queue_id = "Q1",
                                     .recipient = "a@example.net",
                                     .source_addr = "192.0.2.10",
                                     .from_domain = "example.org",
                                     .ramp_percent = -1};
    records_emit(&delivered);
    records_flush();
    records_close();
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    remove_tree(fx->state);
    free(fx->state);
    free(fx);
    return 0;
}

static sqlite3 *open_db(const struct fixture *fx)
{
    char path[600];
    sqlite3 *db = NULL;
    snprintf(path, sizeof path, "%s/records.db", fx->state);
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    return db;
}

static int64_t query_int(const struct fixture *fx, const char *sql)
{
    sqlite3 *db = open_db(fx);
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK) fail_msg("%s: %s", sql, sqlite3_errmsg(db));
    int64_t v = -1;
    if (sqlite3_step(st) == SQLITE_ROW) v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

/* The text of the first column of the first row; caller frees. */
static char *query_text(const struct fixture *fx, const char *sql)
{
    sqlite3 *db = open_db(fx);
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    char *v = NULL;
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0) != NULL)
        v = xstrdup((const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

static int count_lines_starting(const char *text, const char *prefix)
{
    int n = 0;
    for (const char *p = text; p != NULL && *p != '\0';) {
        if (strncmp(p, prefix, strlen(prefix)) == 0) n++;
        p = strchr(p, '\n');
        if (p != NULL) p++;
    }
    return n;
}

/* The line of text that contains both a and b; NULL if none. Caller frees. */
static char *line_with(const char *text, const char *a, const char *b)
{
    const char *p = text;
    while (p != NULL && *p != '\0') {
        const char *end = strchr(p, '\n');
        size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
        char *line = xstrndup(p, len);
        if (strstr(line, a) != NULL && (b == NULL || strstr(line, b) != NULL)) return line;
        free(line);
        p = end != NULL ? end + 1 : NULL;
    }
    return NULL;
}

static int import_names(struct fixture *fx, const char *const *names, size_t n, struct strbuf *out)
{
    char paths[8][600];
    const char *files[8];
    assert_true(n <= 8);
    for (size_t i = 0; i < n; i++) {
        if (names[i][0] == '/')
            snprintf(paths[i], sizeof paths[i], "%s", names[i]);
        else
            data_path(fx, names[i], paths[i], sizeof paths[i]);
        files[i] = paths[i];
    }
    char err[256] = "";
    return rua_import(fx->state, files, n, out, err, sizeof err);
}

static void import_good(struct fixture *fx)
{
    static const char *const good[] = {GOOGLE, OUTLOOK, YAHOO};
    struct strbuf out = STRBUF_INIT;
    int rc = import_names(fx, good, 3, &out);
    if (rc != 0) fail_msg("import failed:\n%s", strbuf_str(&out));
    assert_int_equal(count_lines_starting(strbuf_str(&out), "imported "), 3);
    strbuf_free(&out);
}

/* ---- import ---------------------------------------------------------------------------- */

static void test_import_stores_reports(void **state)
{
    struct fixture *fx = *state;
    import_good(fx);
    assert_int_equal(query_int(fx, "SELECT count(*) FROM rua_reports"), 3);
    assert_int_equal(query_int(fx, "SELECT count(*) FROM rua_rows"), 9);
    assert_int_equal(query_int(fx, "SELECT sum(count) FROM rua_rows"), 55 + 34 + 13);

    /* metadata and policy of each reporter */
    assert_int_equal(query_int(fx, "SELECT date_begin FROM rua_reports WHERE org_name = "
                                   "'google.com' AND report_id = '4821337490215623087'"),
                     1772323200);
    assert_int_equal(query_int(fx, "SELECT pct FROM rua_reports WHERE org_name = "
                                   "'Enterprise Outlook'"),
                     100);
    char *p = query_text(fx, "SELECT p || ',' || coalesce(sp, '-') || ',' || adkim || ',' || "
                             "aspf || ',' || domain FROM rua_reports WHERE org_name = 'Yahoo'");
    assert_string_equal(p, "reject,-,s,r,example.net");
    free(p);
    char *file = query_text(fx, "SELECT file FROM rua_reports WHERE org_name = 'Yahoo'");
    assert_non_null(strstr(file, YAHOO));
    free(file);

    /* rows: IPv6 kept, IPv4-mapped IPv6 normalised, header_from lower-cased */
    assert_int_equal(query_int(fx, "SELECT count FROM rua_rows WHERE source_ip = "
                                   "'2001:db8:25::7'"),
                     5);
    assert_int_equal(query_int(fx, "SELECT count FROM rua_rows WHERE source_ip = '192.0.2.10' "
                                   "AND header_from = 'example.net'"),
                     4);
    char *disp = query_text(fx, "SELECT disposition || ',' || dkim_eval || ',' || spf_eval "
                                "FROM rua_rows WHERE source_ip = '192.0.2.10' AND "
                                "header_from = 'example.net'");
    assert_string_equal(disp, "reject,fail,fail");
    free(disp);
    char *dkim = query_text(fx, "SELECT dkim_results FROM rua_rows WHERE count = 9");
    assert_string_equal(dkim, "d=example.net s=y1 pass; d=esp.example s=k1 pass");
    free(dkim);
    char *spf = query_text(fx, "SELECT spf_results || ' / ' || spf_raw FROM rua_rows WHERE "
                               "source_ip = '198.51.100.20' AND count = 12");
    assert_string_equal(spf, "d=example.org softfail / softfail");
    free(spf);
    char *env = query_text(fx, "SELECT envelope_from FROM rua_rows WHERE count = 7");
    assert_string_equal(env, "news.example.org");
    free(env);
    assert_int_equal(query_int(fx, "SELECT count(*) FROM rua_rows WHERE dkim_results IS NULL"), 2);
}

static void test_reimport_is_skipped(void **state)
{
    struct fixture *fx = *state;
    import_good(fx);
    /* the same reports again, and the Outlook one as plain XML instead of gzip */
    static const char *const again[] = {GOOGLE, OUTLOOK, YAHOO,
                                        "src/outlook-example.org-2026-03-01.xml"};
    struct strbuf out = STRBUF_INIT;
    assert_int_equal(import_names(fx, again, 4, &out), 0);
    assert_int_equal(count_lines_starting(strbuf_str(&out), "skipped "), 4);
    char *line = line_with(strbuf_str(&out), "Enterprise Outlook", "already imported");
    assert_non_null(line);
    free(line);
    strbuf_free(&out);
    assert_int_equal(query_int(fx, "SELECT count(*) FROM rua_reports"), 3);
    assert_int_equal(query_int(fx, "SELECT count(*) FROM rua_rows"), 9);
}

/* ---- hostile input --------------------------------------------------------------------- */

/* A gzip of `bytes` zeros: a few dozen KiB on disk. */
static void write_gzip_bomb(const char *path, size_t bytes)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    assert_int_equal(deflateInit2(&zs, 9, Z_DEFLATED, 16 + MAX_WBITS, 9, Z_DEFAULT_STRATEGY), Z_OK);
    static unsigned char zeros[65536], buf[65536];
    size_t left = bytes;
    int flush = Z_NO_FLUSH;
    do {
        size_t n = left < sizeof zeros ? left : sizeof zeros;
        left -= n;
        flush = left == 0 ? Z_FINISH : Z_NO_FLUSH;
        zs.next_in = zeros;
        zs.avail_in = (uInt)n;
        do {
            zs.next_out = buf;
            zs.avail_out = sizeof buf;
            deflate(&zs, flush);
            fwrite(buf, 1, sizeof buf - zs.avail_out, f);
        } while (zs.avail_out == 0);
    } while (flush != Z_FINISH);
    deflateEnd(&zs);
    fclose(f);
}

static void write_zip_bomb(const char *path, size_t bytes)
{
    int zerr = 0;
    zip_t *za = zip_open(path, ZIP_CREATE | ZIP_TRUNCATE, &zerr);
    assert_non_null(za);
    void *zeros = xcalloc(1, bytes);
    zip_source_t *src = zip_source_buffer(za, zeros, bytes, 0);
    assert_non_null(src);
    assert_true(zip_file_add(za, "report.xml", src, ZIP_FL_OVERWRITE) >= 0);
    assert_int_equal(zip_close(za), 0);
    free(zeros);
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* Elements nested far beyond any report (and libxml2's default depth limit). */
static void write_deep(const char *path)
{
    struct strbuf sb = STRBUF_INIT;
    strbuf_puts(&sb, "<?xml version=\"1.0\"?>\n<feedback>");
    for (int i = 0; i < 5000; i++)
        strbuf_puts(&sb, "<a>");
    for (int i = 0; i < 5000; i++)
        strbuf_puts(&sb, "</a>");
    strbuf_puts(&sb, "</feedback>\n");
    write_text(path, strbuf_str(&sb));
    strbuf_free(&sb);
}

static void expect_refused(struct fixture *fx, const char *name, const char *why)
{
    struct strbuf out = STRBUF_INIT;
    char path[600], err[256] = "";
    if (name[0] == '/')
        snprintf(path, sizeof path, "%s", name);
    else
        data_path(fx, name, path, sizeof path);
    const char *files[] = {path};
    int rc = rua_import(fx->state, files, 1, &out, err, sizeof err);
    char prefix[700], got[1024];
    snprintf(prefix, sizeof prefix, "refused %s: ", path);
    snprintf(got, sizeof got, "%s", strbuf_str(&out));
    strbuf_free(&out);
    if (rc != 1) fail_msg("%s: rc %d, output: %s", name, rc, got);
    assert_string_equal(err, "1 of 1 files refused");
    if (strncmp(got, prefix, strlen(prefix)) != 0 || strstr(got, why) == NULL)
        fail_msg("%s: expected \"%s...%s\", got: %s", name, prefix, why, got);
    print_message("%s", got);
    assert_int_equal(query_int(fx, "SELECT count(*) FROM rua_reports"), 0);
    assert_int_equal(query_int(fx, "SELECT count(*) FROM rua_rows"), 0);
}

static void test_hostile_files_are_refused(void **state)
{
    struct fixture *fx = *state;
    char bomb_gz[600], bomb_zip[600], deep[600], empty[600], missing[600], two[600];
    snprintf(bomb_gz, sizeof bomb_gz, "%s/bomb.xml.gz", fx->state);
    snprintf(bomb_zip, sizeof bomb_zip, "%s/bomb.zip", fx->state);
    snprintf(deep, sizeof deep, "%s/deep.xml", fx->state);
    snprintf(empty, sizeof empty, "%s/empty.xml", fx->state);
    snprintf(missing, sizeof missing, "%s/missing.xml", fx->state);
    snprintf(two, sizeof two, "%s/two-reports.zip", fx->state);
    size_t over = (size_t)RUA_MAX_BYTES + 1024 * 1024;
    write_gzip_bomb(bomb_gz, over);
    write_zip_bomb(bomb_zip, over);
    write_deep(deep);
    write_text(empty, "");
    char huge[600];
    snprintf(huge, sizeof huge, "%s/huge.xml", fx->state);
    FILE *hf = fopen(huge, "w");
    assert_non_null(hf);
    assert_int_equal(ftruncate(fileno(hf), (off_t)over), 0); /* sparse: no disk used */
    fclose(hf);

    expect_refused(fx, "hostile/billion-laughs.xml", "DOCTYPE");
    expect_refused(fx, "hostile/xxe-file.xml", "DOCTYPE");
    expect_refused(fx, "hostile/external-dtd.xml", "DOCTYPE");
    expect_refused(fx, "hostile/malformed.xml",
                   "malformed XML at line 14: Opening and ending tag mismatch");
    expect_refused(fx, "hostile/not-a-report.xml", "not a DMARC aggregate report");
    expect_refused(fx, "hostile/truncated.xml.gz", "gzip data is truncated");
    expect_refused(fx, "hostile/bad-third-record.xml",
                   "record 3 (line 26): source_ip \"192.0.2.300\" is not an IP address");
    expect_refused(fx, bomb_gz, "decompresses to more than the 50 MiB limit");
    expect_refused(fx, bomb_zip, "decompresses to more than the 50 MiB limit");
    expect_refused(fx, deep, "malformed XML");
    expect_refused(fx, empty, "file is empty");
    expect_refused(fx, huge, "bytes, more than the 50 MiB limit");
    expect_refused(fx, missing, "cannot open");
    expect_refused(fx, fx->state, "not a regular file (a directory)");

    /* a zip with two reports is ambiguous */
    int zerr = 0;
    zip_t *za = zip_open(two, ZIP_CREATE | ZIP_TRUNCATE, &zerr);
    assert_non_null(za);
    char g[600], y[600];
    data_path(fx, GOOGLE, g, sizeof g);
    data_path(fx, "src/yahoo-example.net-2026-03-02.xml", y, sizeof y);
    assert_true(zip_file_add(za, "a.xml", zip_source_file(za, g, 0, -1), 0) >= 0);
    assert_true(zip_file_add(za, "b.xml", zip_source_file(za, y, 0, -1), 0) >= 0);
    assert_int_equal(zip_close(za), 0);
    expect_refused(fx, two, "expected one report");
}

/* A FIFO (or any non-regular file) is refused at once, without waiting for a writer: the
 * first version opened the path before checking its type and hung in open(). The alarm turns a
 * hang into a failure instead of a stuck test run. */
static void test_fifo_is_refused_without_blocking(void **state)
{
    struct fixture *fx = *state;
    char fifo[600];
    snprintf(fifo, sizeof fifo, "%s/report.xml", fx->state);
    assert_int_equal(mkfifo(fifo, 0600), 0);
    alarm(10);
    expect_refused(fx, fifo, "not a regular file (a FIFO)");
    expect_refused(fx, "/dev/null", "not a regular file (a character device)");
    alarm(0);
}

/* A refused file among good ones: the good ones are imported, the bad one leaves nothing. */
static void test_mixed_batch(void **state)
{
    struct fixture *fx = *state;
    static const char *const mixed[] = {GOOGLE, "hostile/bad-third-record.xml", YAHOO};
    struct strbuf out = STRBUF_INIT;
    char files[3][600];
    const char *f[3];
    for (int i = 0; i < 3; i++) {
        data_path(fx, mixed[i], files[i], sizeof files[i]);
        f[i] = files[i];
    }
    char err[256] = "";
    assert_int_equal(rua_import(fx->state, f, 3, &out, err, sizeof err), 1);
    assert_string_equal(err, "1 of 3 files refused");
    assert_int_equal(count_lines_starting(strbuf_str(&out), "imported "), 2);
    assert_int_equal(count_lines_starting(strbuf_str(&out), "refused "), 1);
    strbuf_free(&out);
    assert_int_equal(query_int(fx, "SELECT count(*) FROM rua_reports"), 2);
    assert_int_equal(query_int(fx, "SELECT count(*) FROM rua_reports WHERE org_name = "
                                   "'partial.example'"),
                     0);
    assert_int_equal(query_int(fx, "SELECT sum(count) FROM rua_rows"), 55 + 13);

    /* no state directory at all: nothing can be done */
    const char *one[] = {files[0]};
    assert_int_equal(rua_import("/nonexistent/rua-state", one, 1, &out, err, sizeof err), -1);
    assert_non_null(strstr(err, "does not exist"));
    strbuf_free(&out);
}

/* ---- compare --------------------------------------------------------------------------- */

static void test_compare_csv(void **state)
{
    struct fixture *fx = *state;
    import_good(fx);
    struct strbuf out = STRBUF_INIT;
    char err[256] = "";
    assert_int_equal(rua_compare(fx->state, NULL, &out, RUA_FORMAT_CSV, err, sizeof err), 0);
    const char *csv = strbuf_str(&out);
    print_message("%s", csv);
    assert_int_equal(strncmp(csv, "domain,source_ip,egress,reports,messages,", 41), 0);
    /* header + 7 domain/IP pairs */
    assert_int_equal(count_lines_starting(csv, ""), 8);

    /* domain,ip,egress,reports,messages,dkim p/f,spf p/f,dmarc p/f,none/q/r,obs spf,obs dmarc,
       checked,pred spf,pred dmarc,mismatch */
    static const char *const expected[] = {
        "example.net,198.51.100.20,cloud,1,9,9,0,0,9,9,0,9,0,0,fail,pass,1,fail,fail,dmarc",
        "example.net,192.0.2.10,legacy,1,4,0,4,0,4,0,4,0,0,4,fail,fail,1,fail,fail,",
        "example.org,192.0.2.10,legacy,2,60,60,0,60,0,60,0,60,0,0,pass,pass,3,pass,pass,",
        "example.org,198.51.100.20,cloud,2,14,14,0,0,14,14,0,14,0,0,fail,pass,2,pass,pass,spf",
        "example.org,2001:db8:25::7,cloud,1,5,5,0,5,0,5,0,5,0,0,pass,pass,1,pass,pass,",
        "example.org,203.0.113.99,,1,3,0,3,3,0,0,3,0,3,0,pass,fail,0,,,unpredicted",
        "news.example.org,198.51.100.20,,1,7,7,0,7,0,7,0,7,0,0,pass,pass,0,,,unpredicted",
    };
    for (size_t i = 0; i < sizeof expected / sizeof expected[0]; i++) {
        char want[200];
        snprintf(want, sizeof want, "%s\n", expected[i]);
        if (strstr(csv, want) == NULL) fail_msg("missing CSV line: %s", expected[i]);
    }
    strbuf_free(&out);
}

static void test_compare_table_marks_mismatch(void **state)
{
    struct fixture *fx = *state;
    import_good(fx);
    struct strbuf out = STRBUF_INIT;
    char err[256] = "";
    assert_int_equal(rua_compare(fx->state, NULL, &out, RUA_FORMAT_TABLE, err, sizeof err), 0);
    const char *t = strbuf_str(&out);
    print_message("%s", t);
    assert_int_equal(strncmp(t, "DOMAIN ", 7), 0);
    char *line = line_with(t, "example.org ", "198.51.100.20");
    assert_non_null(line);
    assert_non_null(strstr(line, "** MISMATCH spf"));
    assert_non_null(strstr(line, "2: spf pass, dmarc pass")); /* predicted */
    assert_non_null(strstr(line, "0/14"));                    /* receivers: SPF 0 pass, 14 fail */
    free(line);
    line = line_with(t, "example.net ", "198.51.100.20");
    assert_non_null(strstr(line, "** MISMATCH dmarc"));
    free(line);
    line = line_with(t, "example.org ", "192.0.2.10");
    assert_null(strstr(line, "MISMATCH"));
    free(line);
    line = line_with(t, "203.0.113.99", NULL);
    assert_non_null(strstr(line, "(not sent by outrelay)"));
    free(line);
    assert_non_null(strstr(t, "7 domain/IP pairs, 2 mismatches, 2 not sent by outrelay\n"));
    /* columns line up: every row's MSGS column ends where the header's does */
    const char *head_end = strstr(t, "MSGS") + 4;
    size_t col = (size_t)(head_end - t);
    line = line_with(t, "2001:db8:25::7", NULL);
    assert_true(strlen(line) > col);
    assert_true(line[col - 1] == '5' && line[col] == ' ');
    free(line);
    strbuf_free(&out);
}

static void test_compare_json_and_filters(void **state)
{
    struct fixture *fx = *state;
    import_good(fx);
    struct strbuf out = STRBUF_INIT;
    char err[256] = "";
    struct rua_filter f = {.domain = "Example.NET"};
    assert_int_equal(rua_compare(fx->state, &f, &out, RUA_FORMAT_JSON, err, sizeof err), 0);
    const char *j = strbuf_str(&out);
    print_message("%s", j);
    assert_int_equal(strncmp(j, "{\"rows\": [", 10), 0);
    assert_null(strstr(j, "example.org"));
    assert_non_null(strstr(j, "\"mismatch\": [\"dmarc\"]"));
    assert_non_null(strstr(j, "\"predicted\": {\"egress\": \"cloud\", \"checked\": 1"));
    strbuf_free(&out);

    struct rua_filter mm = {.mismatches_only = 1};
    assert_int_equal(rua_compare(fx->state, &mm, &out, RUA_FORMAT_CSV, err, sizeof err), 0);
    assert_int_equal(count_lines_starting(strbuf_str(&out), ""), 3);
    assert_non_null(strstr(strbuf_str(&out), ",spf\n"));
    assert_non_null(strstr(strbuf_str(&out), ",dmarc\n"));
    strbuf_free(&out);

    struct rua_filter eg = {.egress = "legacy"};
    assert_int_equal(rua_compare(fx->state, &eg, &out, RUA_FORMAT_CSV, err, sizeof err), 0);
    assert_int_equal(count_lines_starting(strbuf_str(&out), ""), 3);
    assert_int_equal(count_lines_starting(strbuf_str(&out), "example.org,192.0.2.10,legacy"), 1);
    strbuf_free(&out);

    struct rua_filter ip = {.source_ip = "2001:db8:25::7"};
    assert_int_equal(rua_compare(fx->state, &ip, &out, RUA_FORMAT_CSV, err, sizeof err), 0);
    assert_int_equal(count_lines_starting(strbuf_str(&out), ""), 2);
    strbuf_free(&out);

    /* reports overlapping 2 March (after its first second): Yahoo's only */
    struct rua_filter day = {.since = 1772409601, .until = 1772496000};
    assert_int_equal(rua_compare(fx->state, &day, &out, RUA_FORMAT_CSV, err, sizeof err), 0);
    assert_int_equal(count_lines_starting(strbuf_str(&out), "example.net,"), 2);
    assert_int_equal(count_lines_starting(strbuf_str(&out), "example.org,"), 0);
    strbuf_free(&out);
    /* reports that began before 2 March: Google's and Outlook's */
    struct rua_filter before = {.until = 1772409600};
    assert_int_equal(rua_compare(fx->state, &before, &out, RUA_FORMAT_CSV, err, sizeof err), 0);
    assert_int_equal(count_lines_starting(strbuf_str(&out), "example.net,"), 0);
    assert_int_equal(count_lines_starting(strbuf_str(&out), "example.org,"), 4);
    strbuf_free(&out);

    assert_int_equal(rua_compare(fx->state, NULL, &out, 7, err, sizeof err), -1);
    assert_int_equal(rua_compare("/nonexistent/rua", NULL, &out, 0, err, sizeof err), -1);
    strbuf_free(&out);
}

/* Nothing imported yet: an empty comparison, not an error. */
static void test_compare_before_import(void **state)
{
    struct fixture *fx = *state;
    struct strbuf out = STRBUF_INIT;
    char err[256] = "";
    assert_int_equal(rua_compare(fx->state, NULL, &out, RUA_FORMAT_JSON, err, sizeof err), 0);
    assert_string_equal(strbuf_str(&out), "{\"rows\": []}\n");
    strbuf_free(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_import_stores_reports, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reimport_is_skipped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hostile_files_are_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fifo_is_refused_without_blocking, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mixed_batch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_compare_csv, setup, teardown),
        cmocka_unit_test_setup_teardown(test_compare_table_marks_mismatch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_compare_json_and_filters, setup, teardown),
        cmocka_unit_test_setup_teardown(test_compare_before_import, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
