/* test_smtpc_job.c - unit tests for outrelay/smtpc/smtpc_job.c: taking jobs off a destination in
 * order and failing every recipient of a job with one reply. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "smtpc/smtpc_job.h"

static void test_take_in_order(void **state)
{
    (void)state;
    struct dest d = {0};
    struct job a = {0}, b = {0};
    TAILQ_INIT(&d.jobs);
    assert_null(smtpc_dest_take_job(&d));
    TAILQ_INSERT_TAIL(&d.jobs, &a, link);
    TAILQ_INSERT_TAIL(&d.jobs, &b, link);
    d.n_jobs = 2;
    assert_ptr_equal(smtpc_dest_take_job(&d), &a);
    assert_int_equal(d.n_jobs, 1);
    assert_ptr_equal(smtpc_dest_take_job(&d), &b);
    assert_int_equal(d.n_jobs, 0);
    assert_null(smtpc_dest_take_job(&d));
    assert_int_equal(d.n_jobs, 0);
}

static void test_fail_all(void **state)
{
    (void)state;
    struct rcpt_result results[3] = {{.code = 250, .enhanced = "2.0.0", .text = "ok"}};
    size_t rcpts[3] = {0, 1, 2};
    struct job j = {.rcpts = rcpts, .n_rcpts = 3, .results = results};
    char long_text[600];
    memset(long_text, 'x', sizeof long_text - 1);
    long_text[sizeof long_text - 1] = '\0';
    smtpc_job_fail_all(&j, 451, "4.4.1-and-more-than-fits", long_text);
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(results[i].code, 451);
        assert_int_equal(strlen(results[i].enhanced), sizeof results[i].enhanced - 1);
        assert_int_equal(strlen(results[i].text), sizeof results[i].text - 1); /* cut, ended */
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_take_in_order),
        cmocka_unit_test(test_fail_all),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
