/* test_report.c - unit tests for outrelay/report/table.c: the table model and the CSV (RFC 4180),
 * JSON (RFC 8259 escaping) and terminal renderers every report uses. No database needed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "report/report_core.h"

static struct report_doc make_doc(void)
{
    struct report_doc doc = {.report = "test"};
    struct report_table *t = report_table_add(&doc, "main", "Main table", "name count:i rate:r");
    report_row(t);
    report_put(t, 0, "plain");
    report_puti(t, 1, 42);
    report_putr(t, 2, 12.345);
    report_row(t);
    report_put(t, 0, "comma, \"quote\"\nnewline");
    report_puti(t, 1, -1);
    report_table_add(&doc, "empty", "Empty table", "a b:i");
    return doc;
}

static char *render(int format, const char *table)
{
    struct report_doc doc = make_doc();
    struct report_options opt = {.table = table};
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    char err[200];
    if (format == REPORT_CSV)
        assert_int_equal(report_render_csv(&doc, &opt, f, err, sizeof err), 0);
    else if (format == REPORT_JSON)
        report_render_json(&doc, &opt, f);
    else
        report_render_text(&doc, &opt, f);
    fclose(f);
    report_doc_free(&doc);
    return buf;
}

static void test_csv_rfc4180(void **state)
{
    (void)state;
    char *out = render(REPORT_CSV, NULL);
    assert_string_equal(out, "name,count,rate\r\n"
                             "plain,42,12.3\r\n"
                             "\"comma, \"\"quote\"\"\nnewline\",-1,\r\n");
    free(out);
}

static void test_csv_unknown_table(void **state)
{
    (void)state;
    struct report_doc doc = make_doc();
    struct report_options opt = {.table = "nope"};
    char err[200];
    FILE *f = fopen("/dev/null", "w");
    assert_int_equal(report_render_csv(&doc, &opt, f, err, sizeof err), -1);
    assert_non_null(strstr(err, "tables: main, empty"));
    fclose(f);
    report_doc_free(&doc);
}

static void test_json_types_and_escapes(void **state)
{
    (void)state;
    char *out = render(REPORT_JSON, NULL);
    assert_non_null(strstr(out, "{\"name\": \"plain\", \"count\": 42, \"rate\": 12.3}"));
    assert_non_null(strstr(out, "\"comma, \\\"quote\\\"\\nnewline\", \"count\": -1, \"rate\": "
                                "null}"));
    assert_non_null(strstr(out, "\"empty\": []"));
    free(out);
    struct strbuf sb = STRBUF_INIT;
    report_json_string(&sb, "a\\b\x01\t");
    assert_string_equal(sb.data, "\"a\\\\b\\u0001\\t\"");
    strbuf_free(&sb);
}

static void test_text_aligned(void **state)
{
    (void)state;
    char *out = render(REPORT_TEXT, "main");
    /* numbers right-aligned under their headers; control characters shown as '?' */
    assert_non_null(strstr(out, "name                    count  rate\n"));
    assert_non_null(strstr(out, "plain                      42  12.3\n"));
    assert_non_null(strstr(out, "comma, \"quote\"?newline     -1"));
    assert_null(strstr(out, "Empty table"));
    free(out);
}

static void test_cells(void **state)
{
    (void)state;
    struct report_doc doc = make_doc();
    struct report_table *t = report_doc_find(&doc, "main");
    assert_int_equal(report_col(t, "rate"), 2);
    assert_int_equal(report_col(t, "missing"), (size_t)-1);
    assert_true(report_cell_num(t, 0, 1) == 42.0);
    assert_string_equal(report_cell(t, 1, 2), "");
    report_putr_at(t, 0, 2, 99.99);
    assert_string_equal(report_cell(t, 0, 2), "100.0");
    assert_string_equal(report_cell(t, 7, 0), "");
    report_doc_free(&doc);
}

static void test_html_escape(void **state)
{
    (void)state;
    struct strbuf sb = STRBUF_INIT;
    report_html_escape(&sb, "<a href=\"x\">'&'</a>");
    assert_string_equal(sb.data, "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
    strbuf_free(&sb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_csv_rfc4180),
        cmocka_unit_test(test_csv_unknown_table),
        cmocka_unit_test(test_json_types_and_escapes),
        cmocka_unit_test(test_text_aligned),
        cmocka_unit_test(test_cells),
        cmocka_unit_test(test_html_escape),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
