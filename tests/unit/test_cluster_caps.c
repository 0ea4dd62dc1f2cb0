/* test_cluster_caps.c - unit tests for the shared cap counters: the Redis key of an egress x
 * provider window (cluster_caps.c), the division of a limit among the instances while Redis is
 * down, the capped windows and the mirror of the cluster-wide counts in limits.c (an injected
 * clock puts them in known UTC windows), and the job token route.c and qmgr_route.c share.
 * Without a cluster configured nothing is reserved and nothing asks Redis. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cluster/cluster.h"
#include "config/config.h"
#include "injected_clock.h"
#include "route_fixture.h"
#include "mail/envelope.h"
#include "route/route.h"
#include "route/route_internal.h"

#define T0 1796083200 /* 2026-12-01T00:00:00Z */

static int setup(void **state)
{
    (void)state;
    route_fixture_setup("test_cluster_caps", T0);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    route_fixture_teardown();
    return 0;
}

static struct config *load(const char *text)
{
    struct config *cfg = load_text(text);
    assert_non_null(cfg);
    start(cfg);
    return cfg;
}

static const char caps_config[] = "egress:\n"
                                  "  legacy: { type: direct }\n"
                                  "  cloud: { type: smarthost, host: 192.0.2.1 }\n"
                                  "origins:\n"
                                  "  local: { networks: [127.0.0.0/8] }\n"
                                  "providers:\n"
                                  "  google: { mx_suffixes: [google.com] }\n"
                                  "ramp: { from: legacy }\n"
                                  "caps:\n"
                                  "  - { egress: legacy, provider: google, per_minute: 2, "
                                  "per_day: 100 }\n";

static void key_names_the_window(void **state)
{
    (void)state;
    char key[200];
    cluster_key_cap("outrelay", "cloud", "google", "hour", T0 + 3600, key, sizeof key);
    assert_string_equal(key, "outrelay:cap:cloud:google:hour:1796086800");
    cluster_key_cap("t", "legacy", "other", "day", T0, key, sizeof key);
    assert_string_equal(key, "t:cap:legacy:other:day:1796083200");
    /* a short buffer is cut, never overrun */
    char small[12];
    cluster_key_cap("outrelay", "cloud", "google", "minute", T0, small, sizeof small);
    assert_string_equal(small, "outrelay:ca");
}

/* Redis down: the limit divided by the instances last seen, rounded down, never below 1. */
static void division_rule(void **state)
{
    (void)state;
    assert_int_equal(cluster_caps_local_limit(10, 2), 5);
    assert_int_equal(cluster_caps_local_limit(10, 3), 3);
    assert_int_equal(cluster_caps_local_limit(7, 2), 3);
    assert_int_equal(cluster_caps_local_limit(10, 1), 10);
    assert_int_equal(cluster_caps_local_limit(10, 0), 10); /* no instance seen: ourselves */
    assert_int_equal(cluster_caps_local_limit(10, -3), 10);
    assert_int_equal(cluster_caps_local_limit(1, 2), 1);
    assert_int_equal(cluster_caps_local_limit(3, 4), 1);
    assert_int_equal(cluster_caps_local_limit(1, 1000), 1);
    assert_int_equal(cluster_caps_local_limit(0, 2), 0); /* no limit stays none */
}

/* The pair's capped windows at the injected time, and nothing for a pair without a cap. */
static void capped_windows(void **state)
{
    (void)state;
    struct config *cfg = load(caps_config);
    struct route_world *w = &route_world;
    int64_t now = T0 + 3600 * 5 + 70; /* 05:01:10 */
    set_clock(now);
    struct cluster_cap_window win[CLUSTER_CAP_WINDOWS];
    struct route_pair *p = limits_pair(w, config_find_egress(cfg, "legacy"), "google");
    assert_int_equal(limits_cap_windows(p, now, win), 2);
    assert_string_equal(win[0].span, "minute");
    assert_int_equal(win[0].start, T0 + 3600 * 5 + 60);
    assert_int_equal(win[0].end, T0 + 3600 * 5 + 120);
    assert_int_equal(win[0].limit, 2);
    assert_string_equal(win[1].span, "day");
    assert_int_equal(win[1].start, T0);
    assert_int_equal(win[1].end, T0 + 86400);
    assert_int_equal(win[1].limit, 100);
    struct route_pair *free_pair = limits_pair(w, config_find_egress(cfg, "cloud"), "google");
    assert_int_equal(limits_cap_windows(free_pair, now, win), 0);
    route_shutdown();
    config_free(cfg);
}

/* Redis's counts fill the mirror: the pair known full waits until its window ends; a late
 * answer about an older window changes nothing; the next window reads 0 again. */
static void mirror_of_the_shared_counts(void **state)
{
    (void)state;
    struct config *cfg = load(caps_config);
    struct route_world *w = &route_world;
    int64_t now = T0 + 3600 * 5 + 70;
    set_clock(now);
    struct route_pair *p = limits_pair(w, config_find_egress(cfg, "legacy"), "google");
    const char *spans[] = {"minute", "day"};
    int64_t starts[] = {T0 + 3600 * 5 + 60, T0};
    long long counts[] = {2, 40};
    limits_shared_update(p, 2, spans, starts, counts);
    assert_int_equal(limits_count_in(p, WIN_MINUTE, now), 2);
    assert_int_equal(limits_count_in(p, WIN_DAY, now), 40);
    assert_int_equal(limits_count_in(p, WIN_HOUR, now), 0); /* not capped: never shared */

    struct envelope *env = envelope_new();
    snprintf(env->queue_id, sizeof env->queue_id, "ABC");
    env->origin = strdup("local");
    env->sender = strdup("a@example.org");
    envelope_add_rcpt(env, "bob@gmail.example", NULL, 0);
    struct route_decision d;
    route_decide(env, 0, "google", now, &d);
    assert_null(d.egress); /* no spill: legacy is the only candidate with a pair */
    assert_int_equal(d.retry_at, T0 + 3600 * 5 + 120);
    assert_non_null(strstr(d.reason, "cap 2/minute reached for legacy x google"));
    /* a job holding a reserved slot counts itself: only beyond the limit does it wait; and
     * without a cluster nothing is ever held */
    char why[200];
    assert_int_equal(limits_blocked_until_held(w, p, now, 1, why, sizeof why), 0);
    assert_int_equal(cluster_caps_granted("legacy", "google", "abc gmail.example", now), 0);

    /* our own count is higher: it wins */
    for (int i = 0; i < 3; i++)
        route_count(config_find_egress(cfg, "legacy"), "google", now);
    assert_int_equal(limits_count_in(p, WIN_MINUTE, now), 3);

    /* an answer about the minute and the day before (asked before the windows turned) changes
     * nothing */
    int64_t old_start[] = {T0 + 3600 * 5, T0 - 86400};
    long long old_counts[] = {0, 0};
    limits_shared_update(p, 2, spans, old_start, old_counts);
    assert_int_equal(limits_count_in(p, WIN_DAY, now), 40);
    assert_int_equal(limits_count_in(p, WIN_MINUTE, now), 3);

    /* the next minute is open again */
    set_clock(now + 60);
    route_decide(env, 0, "google", now + 60, &d);
    assert_non_null(d.egress);
    assert_string_equal(d.egress->name, "legacy");
    assert_int_equal(limits_count_in(p, WIN_DAY, now + 60), 40);
    envelope_free(env);
    route_shutdown();
    config_free(cfg);
}

/* Without a cluster a capped pair reserves nothing (the local cap decided) and the count is
 * only local. */
static void no_cluster_no_reservation(void **state)
{
    (void)state;
    struct config *cfg = load(caps_config);
    int64_t now = T0 + 10;
    const struct egress_conf *legacy = config_find_egress(cfg, "legacy");
    int64_t retry = 0;
    char why[200] = "";
    assert_int_equal(route_reserve(legacy, "google", "Q1", "example.net", now, NULL, NULL, &retry,
                                   why, sizeof why),
                     ROUTE_RESERVE_GO);
    struct cluster_cap_window win[1] = {{"hour", T0, T0 + 3600, 10}};
    assert_int_equal(cluster_caps_reserve("legacy", "google", "t", win, 1, now),
                     CLUSTER_CAPS_LOCAL);
    assert_int_equal(cluster_caps_local(), 0);
    assert_int_equal(cluster_caps_pending(), 0);
    route_count_job(legacy, "google", "Q1", "example.net", now);
    assert_int_equal(cluster_caps_pending(), 0); /* nothing kept for a Redis there is not */
    route_shutdown();
    config_free(cfg);
}

/* One token per job: the queue id and the domain for direct delivery, lower case; a smarthost
 * takes every domain of a provider in one job. */
static void job_token(void **state)
{
    (void)state;
    struct config *cfg = load(caps_config);
    char token[100];
    route_job_token("4F2A", "Example.NET", config_find_egress(cfg, "legacy"), token, sizeof token);
    assert_string_equal(token, "4f2a example.net");
    route_job_token("4F2A", "example.net", config_find_egress(cfg, "cloud"), token, sizeof token);
    assert_string_equal(token, "4f2a ");
    route_shutdown();
    config_free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(key_names_the_window),
        cmocka_unit_test(division_rule),
        cmocka_unit_test_setup_teardown(capped_windows, setup, teardown),
        cmocka_unit_test_setup_teardown(mirror_of_the_shared_counts, setup, teardown),
        cmocka_unit_test_setup_teardown(no_cluster_no_reservation, setup, teardown),
        cmocka_unit_test_setup_teardown(job_token, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
