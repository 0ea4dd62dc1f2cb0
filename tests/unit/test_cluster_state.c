/* test_cluster_state.c - unit tests for the merge rules of the state the instances share:
 * cluster_state_newer (outrelay/cluster/cluster_state.c: the later change wins, a tie goes to
 * the greater instance name) and limits_shaping_merge (outrelay/route/limits.c: a shaping entry
 * learnt from another instance is taken, extended or lifted, and an entry in force on either
 * side stays in force). The time of each case comes from the injected clock. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "cluster/cluster.h"
#include "common/clock.h"
#include "injected_clock.h"
#include "route/route_internal.h"

#define T0 1796083200 /* 2026-12-01T00:00:00Z */

static void later_change_wins_ties_by_name(void **state)
{
    (void)state;
    assert_true(cluster_state_newer(T0 + 1, "relay-a", T0, "relay-b"));
    assert_false(cluster_state_newer(T0, "relay-b", T0 + 1, "relay-a"));
    assert_true(cluster_state_newer(T0, "relay-b", T0, "relay-a"));
    assert_false(cluster_state_newer(T0, "relay-a", T0, "relay-b"));
    assert_false(cluster_state_newer(T0, "relay-a", T0, "relay-a")); /* the same: not newer */
}

static struct limits_shared_entry entry(int active, int64_t started, int64_t until,
                                        int64_t last_hit)
{
    struct limits_shared_entry e = {active, started, until, last_hit};
    return e;
}

static void idle_takes_an_entry_in_force(void **state)
{
    (void)state;
    set_clock(T0 + 60);
    struct limits_shared_entry local = entry(0, 0, 0, 0);
    struct limits_shared_entry remote = entry(1, T0, T0 + 1800, T0);
    int republish = -1;
    assert_int_equal(limits_shaping_merge(&local, &remote, T0, clock_now(), 0, &republish),
                     LIMITS_TAKEN);
    assert_int_equal(republish, 0); /* nothing to add: no echo */
    assert_int_equal(local.active, 1);
    assert_int_equal(local.started, T0);
    assert_int_equal(local.until, T0 + 1800);
}

static void idle_ignores_an_entry_over_unless_it_recovers(void **state)
{
    (void)state;
    set_clock(T0 + 3600);
    struct limits_shared_entry local = entry(0, 0, 0, 0);
    struct limits_shared_entry remote = entry(1, T0, T0 + 1800, T0);
    int republish = -1;
    assert_int_equal(limits_shaping_merge(&local, &remote, T0, clock_now(), 0, &republish),
                     LIMITS_KEEP);
    assert_int_equal(local.active, 0);
    /* a rule with a recovery still throttles after its until */
    assert_int_equal(limits_shaping_merge(&local, &remote, T0, clock_now(), 1, &republish),
                     LIMITS_TAKEN);
    assert_int_equal(local.active, 1);
}

static void both_in_force_keep_the_later_until_and_hit(void **state)
{
    (void)state;
    set_clock(T0 + 600);
    /* the remote one ends later: taken; ours has the later hit: written back */
    struct limits_shared_entry local = entry(1, T0, T0 + 1800, T0 + 500);
    struct limits_shared_entry remote = entry(1, T0 + 300, T0 + 2100, T0 + 300);
    int republish = -1;
    assert_int_equal(limits_shaping_merge(&local, &remote, T0 + 300, clock_now(), 1, &republish),
                     LIMITS_TAKEN);
    assert_int_equal(local.until, T0 + 2100);
    assert_int_equal(local.started, T0 + 300);
    assert_int_equal(local.last_hit, T0 + 500);
    assert_int_equal(republish, 1);
    /* ours ends later: kept, and written back */
    local = entry(1, T0 + 300, T0 + 2100, T0 + 300);
    remote = entry(1, T0, T0 + 1800, T0);
    assert_int_equal(limits_shaping_merge(&local, &remote, T0, clock_now(), 0, &republish),
                     LIMITS_KEEP);
    assert_int_equal(local.until, T0 + 2100);
    assert_int_equal(republish, 1);
    /* the same entry: nothing changes, nothing is written */
    remote = local;
    assert_int_equal(limits_shaping_merge(&local, &remote, T0 + 300, clock_now(), 0, &republish),
                     LIMITS_KEEP);
    assert_int_equal(republish, 0);
}

static void a_lift_ends_only_what_was_over(void **state)
{
    (void)state;
    set_clock(T0 + 1900);
    struct limits_shared_entry lifted = entry(0, T0, T0 + 1800, T0);
    int republish = -1;
    /* the same episode, over when lifted: lifted here too */
    struct limits_shared_entry local = entry(1, T0, T0 + 1800, T0);
    assert_int_equal(limits_shaping_merge(&local, &lifted, T0 + 1850, clock_now(), 0, &republish),
                     LIMITS_LIFTED);
    assert_int_equal(local.active, 0);
    assert_int_equal(republish, 0);
    /* started here while the other had lifted its own (Redis away): in force, kept, shared */
    local = entry(1, T0 + 1700, T0 + 3500, T0 + 1700);
    assert_int_equal(limits_shaping_merge(&local, &lifted, T0 + 1850, clock_now(), 0, &republish),
                     LIMITS_KEEP);
    assert_int_equal(local.active, 1);
    assert_int_equal(republish, 1);
    /* recovering here with a matching reply after the lift: kept */
    local = entry(1, T0, T0 + 1800, T0 + 1880);
    assert_int_equal(limits_shaping_merge(&local, &lifted, T0 + 1850, clock_now(), 1, &republish),
                     LIMITS_KEEP);
    assert_int_equal(local.active, 1);
    assert_int_equal(republish, 1);
    /* nothing here: nothing to lift */
    local = entry(0, 0, 0, 0);
    assert_int_equal(limits_shaping_merge(&local, &lifted, T0 + 1850, clock_now(), 0, &republish),
                     LIMITS_KEEP);
    assert_int_equal(republish, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(later_change_wins_ties_by_name),
        cmocka_unit_test(idle_takes_an_entry_in_force),
        cmocka_unit_test(idle_ignores_an_entry_over_unless_it_recovers),
        cmocka_unit_test(both_in_force_keep_the_later_until_and_hit),
        cmocka_unit_test(a_lift_ends_only_what_was_over),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
