/* test_tlsrpt.c - unit tests for outrelay/tlsrpt/: a records.db filled with crafted attempt and
 * recipient rows (the records writer, times given explicitly), read back as TLS sessions per
 * policy domain and type for one UTC day (its first and last microsecond inside, its neighbours
 * outside), the RFC 8460 aggregate JSON built from them, the _smtp._tls record parser
 * (RFC 8460 section 3) and the report mail (section 5). The injected clock fixes "now"; nothing
 * depends on today's date. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sqlite3.h>
#include <openssl/evp.h>
#include <zlib.h>

#include "common/log.h"
#include "common/util.h"
#include "injected_clock.h"
#include "records/records.h"
#include "tlsrpt/tlsrpt.h"

#define DAY 1772323200LL /* 2026-03-01T00:00:00Z */
#define US 1000000LL

static char tmpdir[] = "/tmp/test_tlsrpt.XXXXXX";
static sqlite3 *db;

/* One attempt row and the recipient row it leads to, as qmgr writes them. */
static void session(const char *qid, int64_t ts_us, const char *rcpt, const char *version,
                    const char *failure, const char *source, const char *policy_domain,
                    const char *policy_string, const char *remote_addr)
{
    struct record_event a = {.type = RECORD_ATTEMPT,
                             .queue_id = qid,
                             .sender = "s@example.org",
                             .egress = "legacy",
                             .source_addr = "127.0.0.2",
                             .remote_mx = "mx.example.net",
                             .remote_addr = remote_addr,
                             .tls_version = version,
                             .tls_failure = failure,
                             .tls_policy = "may",
                             .tls_policy_source = source,
                             .tls_policy_domain = policy_domain,
                             .tls_policy_string = policy_string};
    records_emit_at(&a, ts_us);
    struct record_event r = a;
    r.type = version ? RECORD_DELIVERED : RECORD_DEFERRED;
    r.recipient = rcpt;
    records_emit_at(&r, ts_us + 1);
}

static int setup(void **state)
{
    (void)state;
    log_init("test_tlsrpt", 0, LOG_LEVEL_WARN);
    set_clock(DAY + 2 * 86400);
    assert_non_null(mkdtemp(tmpdir));
    char err[256];
    assert_int_equal(records_open(tmpdir, err, sizeof err), 0);
    /* a.test: no published policy */
    session("Q1", DAY * US, "u@a.test", "TLSv1.3", NULL, "egress", NULL, NULL, "127.0.0.50:25");
    session("Q2", (DAY + 20) * US, "v@A.test", NULL, "starttls-not-supported", "table", NULL, NULL,
            "127.0.0.50:25");
    session("Q3", (DAY + 30) * US, "w@a.test", NULL, "starttls-not-supported", "table", NULL, NULL,
            "127.0.0.50:25");
    session("Q4", (DAY + 40) * US, "w@a.test", NULL, "certificate-expired", "table", NULL, NULL,
            "127.0.0.51:25");
    session("Q5", (DAY + 86400) * US - 1, "x@a.test", "TLSv1.2", NULL, "egress", NULL, NULL,
            "127.0.0.50:25");
    /* outside the day: the second before, the first microsecond after */
    session("Q6", DAY * US - 1, "y@a.test", "TLSv1.3", NULL, "egress", NULL, NULL, "127.0.0.50:25");
    session("Q7", (DAY + 86400) * US, "z@a.test", NULL, "validation-failure", "egress", NULL, NULL,
            "127.0.0.50:25");
    /* policy none: no TLS session at all */
    session("Q8", (DAY + 50) * US, "n@a.test", NULL, NULL, "table", NULL, NULL, "127.0.0.50:25");
    /* b.test publishes TLSA records for its MX: the policy domain and lines come with it */
    session("Q9", (DAY + 60) * US, "u@b.test", NULL, "tlsa-invalid", "dane", "b.test",
            "3 1 1 aabb\n3 1 1 ccdd", "[2001:db8::60]:25");
    session("QA", (DAY + 70) * US, "u@b.test", "TLSv1.3", NULL, "dane", "b.test",
            "3 1 1 aabb\n3 1 1 ccdd", "[2001:db8::60]:25");
    /* the same recipient domain, but an MTA-STS policy of another domain applied */
    session("QB", (DAY + 80) * US, "u@c.test", "TLSv1.3", NULL, "mta-sts", "sts.test",
            "version: STSv1\nmode: enforce\nmx: *.c.test\nmax_age: 86400", "127.0.0.70:25");
    records_close();
    char path[600];
    snprintf(path, sizeof path, "%s/records.db", tmpdir);
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    sqlite3_close(db);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    assert_int_equal(system(cmd), 0);
    return 0;
}

static int64_t count(const struct tlsrpt_rows *rows, const char *domain, const char *type,
                     const char *result)
{
    int64_t n = 0;
    for (size_t i = 0; i < rows->n; i++) {
        const struct tlsrpt_row *r = &rows->v[i];
        if (strcmp(r->policy_domain, domain) != 0 || strcmp(r->policy_type, type) != 0) continue;
        if (result ? (r->result_type && strcmp(r->result_type, result) == 0) : !r->result_type)
            n += r->sessions;
    }
    return n;
}

static void test_sessions_of_one_day(void **state)
{
    (void)state;
    struct tlsrpt_rows rows = {0};
    char err[256];
    assert_int_equal(tlsrpt_collect(db, DAY * US, (DAY + 86400) * US, NULL, &rows, err, sizeof err),
                     0);
    /* first and last microsecond of the day in, the neighbours out; policy none not a session */
    assert_int_equal(count(&rows, "a.test", "no-policy-found", NULL), 2);
    assert_int_equal(count(&rows, "a.test", "no-policy-found", "starttls-not-supported"), 2);
    assert_int_equal(count(&rows, "a.test", "no-policy-found", "certificate-expired"), 1);
    assert_int_equal(count(&rows, "a.test", "no-policy-found", "validation-failure"), 0);
    assert_int_equal(count(&rows, "b.test", "tlsa", NULL), 1);
    assert_int_equal(count(&rows, "b.test", "tlsa", "tlsa-invalid"), 1);
    assert_int_equal(count(&rows, "sts.test", "sts", NULL), 1);
    assert_int_equal(count(&rows, "c.test", "no-policy-found", NULL), 0);
    /* same failure and addresses: one group; another receiving IP: its own */
    int groups = 0;
    for (size_t i = 0; i < rows.n; i++)
        if (rows.v[i].result_type && strcmp(rows.v[i].policy_domain, "a.test") == 0) {
            groups++;
            if (strcmp(rows.v[i].result_type, "certificate-expired") == 0)
                assert_string_equal(rows.v[i].receiving_ip, "127.0.0.51");
            assert_string_equal(rows.v[i].sending_ip, "127.0.0.2");
            assert_string_equal(rows.v[i].receiving_mx, "mx.example.net");
        }
    assert_int_equal(groups, 2);
    tlsrpt_rows_free(&rows);

    /* the next day holds only Q7; one domain only */
    assert_int_equal(tlsrpt_collect(db, (DAY + 86400) * US, (DAY + 2 * 86400) * US, "a.test", &rows,
                                    err, sizeof err),
                     0);
    assert_int_equal(rows.n, 1);
    assert_string_equal(rows.v[0].result_type, "validation-failure");
    tlsrpt_rows_free(&rows);
}

static void test_aggregate_json(void **state)
{
    (void)state;
    struct tlsrpt_rows rows = {0};
    char err[256], id[300];
    assert_int_equal(tlsrpt_collect(db, DAY * US, (DAY + 86400) * US, NULL, &rows, err, sizeof err),
                     0);
    struct tlsrpt_meta meta = {.organization = "Example Org",
                               .contact = "tls@example.org",
                               .start = DAY,
                               .end = DAY + 86400};
    tlsrpt_report_id(&meta, "b.test", "relay.example.org", id, sizeof id);
    assert_string_equal(id, "2026-03-01T00:00:00Z_b.test@relay.example.org");
    meta.report_id = id;
    struct strbuf out = STRBUF_INIT;
    assert_int_equal(tlsrpt_json(&rows, "b.test", &meta, &out), 2);
    const char *j = strbuf_str(&out);
    print_message("%s\n", j);
    assert_non_null(strstr(j, "\"organization-name\":"));
    assert_non_null(strstr(j, "\"start-datetime\":\"2026-03-01T00:00:00Z\""));
    assert_non_null(strstr(j, "\"end-datetime\":\"2026-03-01T23:59:59Z\""));
    assert_non_null(strstr(j, "\"policy-type\":\"tlsa\""));
    assert_non_null(strstr(j, "\"policy-string\":[\"3 1 1 aabb\",\"3 1 1 ccdd\"]"));
    assert_non_null(strstr(j, "\"total-successful-session-count\":1"));
    assert_non_null(strstr(j, "\"total-failure-session-count\":1"));
    assert_non_null(strstr(j, "{\"result-type\":\"tlsa-invalid\",\"sending-mta-ip\":\"127.0.0.2\","
                              "\"receiving-mx-hostname\":\"mx.example.net\",\"receiving-ip\":"
                              "\"2001:db8::60\",\"failed-session-count\":1}"));
    assert_null(strstr(j, "a.test"));
    assert_null(strstr(j, "\"mx-host\""));

    /* no-policy-found: no policy-string; two failure groups */
    strbuf_reset(&out);
    assert_int_equal(tlsrpt_json(&rows, "a.test", &meta, &out), 5);
    j = strbuf_str(&out);
    assert_non_null(strstr(j, "\"policy-type\":\"no-policy-found\""));
    assert_null(strstr(j, "policy-string"));
    assert_non_null(strstr(j, "\"total-successful-session-count\":2"));
    assert_non_null(strstr(j, "\"total-failure-session-count\":3"));
    assert_non_null(strstr(j, "\"result-type\":\"starttls-not-supported\""));
    assert_non_null(strstr(j, "\"failed-session-count\":2"));

    /* an MTA-STS policy: its mx patterns as mx-host; a DANE one has none */
    strbuf_reset(&out);
    assert_int_equal(tlsrpt_json(&rows, "sts.test", &meta, &out), 1);
    j = strbuf_str(&out);
    assert_non_null(strstr(j, "\"policy-type\":\"sts\""));
    assert_non_null(strstr(j, "\"policy-domain\":\"sts.test\",\"mx-host\":[\"*.c.test\"]"));

    /* a domain without sessions: an empty report, nothing to send */
    strbuf_reset(&out);
    assert_int_equal(tlsrpt_json(&rows, "none.test", &meta, &out), 0);
    assert_non_null(strstr(strbuf_str(&out), "\"policies\":[]"));
    strbuf_free(&out);
    tlsrpt_rows_free(&rows);
}

static void test_parse_record(void **state)
{
    (void)state;
    char *rua[4];
    size_t n, other;
    assert_int_equal(
        tlsrpt_parse_record("v=TLSRPTv1; rua=mailto:tlsrpt@example.net", rua, 4, &n, &other), 0);
    assert_int_equal(n, 1);
    assert_string_equal(rua[0], "tlsrpt@example.net");
    free(rua[0]);
    /* several URIs, percent-encoding, an https one, an extension field, spaces */
    assert_int_equal(tlsrpt_parse_record("v=TLSRPTv1 ; rua = mailto:a%40x.test?subject=r , "
                                         "https://r.x.test/v1, mailto:b@y.test; ext=1;",
                                         rua, 4, &n, &other),
                     0);
    assert_int_equal(n, 2);
    assert_int_equal(other, 1);
    assert_string_equal(rua[0], "a@x.test");
    assert_string_equal(rua[1], "b@y.test");
    free(rua[0]);
    free(rua[1]);
    /* not ours: version missing or not first, no rua, two rua, only unknown schemes */
    const char *bad[] = {
        "rua=mailto:a@b.test", "v=TLSRPTv2; rua=mailto:a@b.test", "v=TLSRPTv1",
        "v=TLSRPTv1; rua=mailto:a@b.test; rua=mailto:c@d", "v=TLSRPTv1; rua=ftp://x",
        "v=TLSRPTv1; rua=mailto:nobody", "v=TLSRPTv1; rua=mailto:a%4@b.test",
        /* decoded CR LF, NUL or spaces would become RCPT TO and To: text */
        "v=TLSRPTv1; rua=mailto:a@b.test%0D%0ADATA", "v=TLSRPTv1; rua=mailto:a@b.test%00x",
        "v=TLSRPTv1; rua=mailto:a%20b@c.test", "v=spf1 -all"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(tlsrpt_parse_record(bad[i], rua, 4, &n, &other), -1);
        assert_int_equal(n, 0);
    }
}

/* The report mail (RFC 8460 section 5.3): headers, the Subject, the part named per section
 * 5.1, and a gzip body that inflates back to the JSON. */
static void test_report_mail(void **state)
{
    (void)state;
    const char *to[] = {"a@r.test", "b@r.test"};
    const char *json = "{\"organization-name\":\"x\",\"policies\":[]}\n";
    struct tlsrpt_mail m = {.from = "tlsrpt@example.org",
                            .to = to,
                            .n_to = 2,
                            .policy_domain = "b.test",
                            .submitter = "relay.example.org",
                            .report_id = "2026-03-01T00:00:00Z_b.test@relay.example.org",
                            .json = json,
                            .start = DAY,
                            .end = DAY + 86400,
                            .range_text = "2026-03-01 (UTC)",
                            .now = DAY + 86400 + 3600};
    struct strbuf out = STRBUF_INIT;
    assert_int_equal(tlsrpt_mail_build(&m, &out), 0);
    const char *t = strbuf_str(&out);
    assert_non_null(strstr(t, "From: <tlsrpt@example.org>\r\n"));
    assert_non_null(strstr(t, "To: <a@r.test>,\r\n    <b@r.test>\r\n"));
    assert_non_null(strstr(t, "Subject: Report Domain: b.test\r\n Submitter: relay.example.org\r\n "
                              "Report-ID: <2026-03-01T00:00:00Z_b.test@relay.example.org>\r\n"));
    assert_non_null(strstr(t, "TLS-Report-Domain: b.test\r\n"));
    assert_non_null(strstr(t, "TLS-Report-Submitter: relay.example.org\r\n"));
    assert_non_null(strstr(t, "Content-Type: multipart/report; report-type=\"tlsrpt\";"));
    assert_non_null(
        strstr(t, "filename=\"relay.example.org!b.test!1772323200!1772409600.json.gz\""));
    /* every line CRLF-terminated and short */
    for (const char *p = t; *p;) {
        const char *nl = strstr(p, "\r\n");
        assert_non_null(nl);
        assert_true(nl - p <= 998);
        p = nl + 2;
    }
    /* the base64 part back to the JSON */
    const char *b = strstr(t, ".json.gz\"\r\n\r\n");
    assert_non_null(b);
    b += strlen(".json.gz\"\r\n\r\n");
    unsigned char gz[4096], plain[4096];
    size_t n = 0;
    while (*b && *b != '\r') {
        const char *e = strstr(b, "\r\n");
        char line[80];
        memcpy(line, b, (size_t)(e - b));
        line[e - b] = '\0';
        unsigned char dec[64];
        size_t len = strlen(line),
               pad = len >= 2 && line[len - 1] == '=' ? (line[len - 2] == '=' ? 2 : 1) : 0;
        int k = EVP_DecodeBlock(dec, (const unsigned char *)line, (int)len);
        assert_true(k > 0);
        memcpy(gz + n, dec, (size_t)k - pad);
        n += (size_t)k - pad;
        b = e + 2;
    }
    z_stream z;
    memset(&z, 0, sizeof z);
    assert_int_equal(inflateInit2(&z, 15 + 16), Z_OK);
    z.next_in = gz;
    z.avail_in = (uInt)n;
    z.next_out = plain;
    z.avail_out = sizeof plain;
    assert_int_equal(inflate(&z, Z_FINISH), Z_STREAM_END);
    assert_int_equal(z.total_out, strlen(json));
    assert_memory_equal(plain, json, strlen(json));
    inflateEnd(&z);
    strbuf_free(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sessions_of_one_day),
        cmocka_unit_test(test_aggregate_json),
        cmocka_unit_test(test_parse_record),
        cmocka_unit_test(test_report_mail),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
