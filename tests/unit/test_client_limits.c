/* test_client_limits.c - ingress/client_limits.c: the total, the origins' reserve, the
 * per-address count and rate, refusals that count toward the rate, the log thinning, and that
 * idle addresses are forgotten. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "ingress/client_limits.h"

#define T0 1800000000

static struct client_limits *make(int total, int reserve, int per_client, int rate, int period)
{
    struct client_limits_conf c = {.max_total = total,
                                   .reserved_for_origins = reserve,
                                   .per_client = per_client,
                                   .rate_count = rate,
                                   .rate_period = period};
    return client_limits_new(&c);
}

static enum client_limits_verdict connect_at(struct client_limits *cl, const char *a, int origin,
                                             int64_t now)
{
    return client_limits_connect(cl, a, origin, now).verdict;
}

static void test_per_client_count(void **state)
{
    (void)state;
    struct client_limits *cl = make(100, 10, 3, 0, 60);
    for (int i = 0; i < 3; i++)
        assert_int_equal(connect_at(cl, "192.0.2.1", 0, T0), CLIENT_LIMITS_OK);
    struct client_limits_result r = client_limits_connect(cl, "192.0.2.1", 0, T0);
    assert_int_equal(r.verdict, CLIENT_LIMITS_CLIENT_COUNT);
    assert_int_equal(r.count, 4);
    /* another address is not affected; one that leaves makes room */
    assert_int_equal(connect_at(cl, "192.0.2.2", 0, T0), CLIENT_LIMITS_OK);
    client_limits_disconnect(cl, "192.0.2.1", 0);
    assert_int_equal(connect_at(cl, "192.0.2.1", 0, T0), CLIENT_LIMITS_OK);
    assert_int_equal(client_limits_total(cl), 4);
    assert_int_equal(client_limits_strangers(cl), 4);
    client_limits_free(cl);
}

static void test_origins_exempt_and_reserve(void **state)
{
    (void)state;
    /* 10 in all, 4 reserved: strangers may hold 6 */
    struct client_limits *cl = make(10, 4, 0, 0, 60);
    char a[32];
    for (int i = 0; i < 6; i++) {
        snprintf(a, sizeof a, "198.51.100.%d", i);
        assert_int_equal(connect_at(cl, a, 0, T0), CLIENT_LIMITS_OK);
    }
    assert_int_equal(connect_at(cl, "198.51.100.99", 0, T0), CLIENT_LIMITS_STRANGERS_FULL);
    for (int i = 0; i < 4; i++)
        assert_int_equal(connect_at(cl, "10.0.1.5", 1, T0), CLIENT_LIMITS_OK);
    assert_int_equal(connect_at(cl, "10.0.1.5", 1, T0), CLIENT_LIMITS_FULL);
    assert_int_equal(client_limits_total(cl), 10);
    assert_int_equal(client_limits_strangers(cl), 6);
    client_limits_disconnect(cl, "10.0.1.5", 1);
    assert_int_equal(connect_at(cl, "10.0.1.5", 1, T0), CLIENT_LIMITS_OK);
    client_limits_free(cl);

    /* an origin is not held to the per-client count or rate */
    cl = make(100, 10, 2, 2, 60);
    for (int i = 0; i < 20; i++)
        assert_int_equal(connect_at(cl, "10.0.1.5", 1, T0), CLIENT_LIMITS_OK);
    client_limits_free(cl);
}

static void test_rate_counts_refusals_and_rolls(void **state)
{
    (void)state;
    struct client_limits *cl = make(100, 10, 0, 3, 60);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(connect_at(cl, "203.0.113.7", 0, T0 + i), CLIENT_LIMITS_OK);
        client_limits_disconnect(cl, "203.0.113.7", 0);
    }
    struct client_limits_result r = client_limits_connect(cl, "203.0.113.7", 0, T0 + 10);
    assert_int_equal(r.verdict, CLIENT_LIMITS_CLIENT_RATE);
    assert_int_equal(r.count, 4);
    /* log thinning: the 1st, 2nd, 4th, 8th refusal are to be logged */
    int logged = r.log_it;
    for (int i = 0; i < 14; i++) {
        r = client_limits_connect(cl, "203.0.113.7", 0, T0 + 20);
        assert_int_equal(r.verdict, CLIENT_LIMITS_CLIENT_RATE);
        logged += r.log_it;
    }
    assert_int_equal(r.refused, 15);
    assert_int_equal(logged, 4);
    /* the next period starts afresh */
    assert_int_equal(connect_at(cl, "203.0.113.7", 0, T0 + 60), CLIENT_LIMITS_OK);
    client_limits_free(cl);
}

static void test_idle_addresses_are_dropped(void **state)
{
    (void)state;
    struct client_limits *cl = make(100, 10, 1, 1, 60);
    char a[32];
    for (int i = 0; i < 50; i++) {
        snprintf(a, sizeof a, "192.0.2.%d", i);
        assert_int_equal(connect_at(cl, a, 0, T0), CLIENT_LIMITS_OK);
        client_limits_disconnect(cl, a, 0);
    }
    /* one stays connected across the sweep and keeps its count */
    assert_int_equal(connect_at(cl, "192.0.2.200", 0, T0), CLIENT_LIMITS_OK);
    assert_int_equal(connect_at(cl, "192.0.2.201", 0, T0 + 61), CLIENT_LIMITS_OK);
    assert_int_equal(connect_at(cl, "192.0.2.200", 0, T0 + 62), CLIENT_LIMITS_CLIENT_COUNT);
    /* swept ones start a new period: allowed again */
    assert_int_equal(connect_at(cl, "192.0.2.3", 0, T0 + 62), CLIENT_LIMITS_OK);
    client_limits_free(cl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_per_client_count),
        cmocka_unit_test(test_origins_exempt_and_reserve),
        cmocka_unit_test(test_rate_counts_refusals_and_rolls),
        cmocka_unit_test(test_idle_addresses_are_dropped),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
