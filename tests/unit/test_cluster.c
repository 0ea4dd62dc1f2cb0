/* test_cluster.c - unit tests for outrelay/cluster/cluster_keys.c: the duplicate window's key is
 * the SHA-256 of the lower-cased "message-id\nrecipient" cut to 128 bits under the prefix (checked
 * against a value computed elsewhere), case does not matter and the pair's halves cannot be
 * shifted into each other; reconnection waits double to a cap with jitter; the reconciliation queue
 * gives back what it holds in order, drops entries whose window is over, drops the oldest when
 * full, and takes entries pushed back. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cluster/cluster.h"

static void dup_key_is_the_pairs_hash(void **state)
{
    (void)state;
    char key[128];
    /* python3: hashlib.sha256(b"<abc@example.org>\nuser@example.net").hexdigest()[:32] */
    cluster_key_dup("outrelay", "<abc@example.org>", "user@example.net", key, sizeof key);
    assert_string_equal(key, "outrelay:dup:1e886569606e2e97345d7c00d741a09b");
    char upper[128];
    cluster_key_dup("outrelay", "<ABC@Example.ORG>", "User@EXAMPLE.net", upper, sizeof upper);
    assert_string_equal(key, upper);
    char other[128];
    cluster_key_dup("p2", "<abc@example.org>", "user@example.net", other, sizeof other);
    assert_string_equal(other, "p2:dup:1e886569606e2e97345d7c00d741a09b");
    /* the separator keeps ("ab", "c") and ("a", "bc") apart */
    char k1[128], k2[128];
    cluster_key_dup("p", "ab", "c", k1, sizeof k1);
    cluster_key_dup("p", "a", "bc", k2, sizeof k2);
    assert_string_not_equal(k1, k2);
    cluster_key_dup("p", "<x@y>", "b@c", k1, sizeof k1);
    cluster_key_dup("p", "<x@y>", "a@c", k2, sizeof k2);
    assert_string_not_equal(k1, k2);
}

static void instance_key(void **state)
{
    (void)state;
    char key[128];
    cluster_key_instance("outrelay", "relay-a", key, sizeof key);
    assert_string_equal(key, "outrelay:instance:relay-a");
}

/* Never a reconnect loop: the step doubles to a cap, every wait lies in [step/2, step]. */
static void backoff_doubles_capped_jittered(void **state)
{
    (void)state;
    const int64_t steps[] = {200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000};
    int64_t step = 0;
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        assert_int_equal(cluster_backoff(&step, 0), steps[i] / 2); /* no jitter: half */
        assert_int_equal(step, steps[i]);
    }
    /* with jitter the wait stays within [step/2, step] */
    const unsigned randoms[] = {1, 99, 100, 101, 14999, 15000, 15001, 123456789u, 0xffffffffu};
    for (size_t i = 0; i < sizeof randoms / sizeof randoms[0]; i++) {
        int64_t s = 15000; /* the next step is the cap */
        int64_t w = cluster_backoff(&s, randoms[i]);
        assert_int_equal(s, 30000);
        assert_true(w >= 15000 && w <= 30000);
        s = 100;
        w = cluster_backoff(&s, randoms[i]);
        assert_true(w >= 100 && w <= 200);
    }
    step = 30000;
    assert_int_equal(cluster_backoff(&step, 7), 15007);
    assert_int_equal(step, 30000);
}

struct seen {
    char keys[16][64];
    int64_t at[16], until[16];
    int n;
    struct cluster_reconcile *push_back_to; /* when set, every entry is pushed again */
};

static void collect(void *arg, const char *key, int64_t at, int64_t until)
{
    struct seen *s = arg;
    snprintf(s->keys[s->n], sizeof s->keys[0], "%s", key);
    s->at[s->n] = at;
    s->until[s->n] = until;
    s->n++;
    if (s->push_back_to) cluster_reconcile_push(s->push_back_to, key, at, until);
}

static void reconcile_in_order_without_expired(void **state)
{
    (void)state;
    struct cluster_reconcile *q = cluster_reconcile_new(10);
    cluster_reconcile_push(q, "k1", 100, 1000);
    cluster_reconcile_push(q, "k2", 200, 300); /* its window ends before now */
    cluster_reconcile_push(q, "k3", 400, 2000);
    assert_int_equal(cluster_reconcile_count(q), 3);
    struct seen s = {0};
    assert_int_equal(cluster_reconcile_take(q, 500, collect, &s), 2);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.keys[0], "k1");
    assert_int_equal(s.at[0], 100);
    assert_int_equal(s.until[0], 1000);
    assert_string_equal(s.keys[1], "k3");
    assert_int_equal(cluster_reconcile_count(q), 0);
    /* nothing left: a second take gives nothing */
    struct seen none = {0};
    assert_int_equal(cluster_reconcile_take(q, 500, collect, &none), 0);
    cluster_reconcile_free(q);
}

static void reconcile_full_drops_oldest(void **state)
{
    (void)state;
    struct cluster_reconcile *q = cluster_reconcile_new(3);
    char key[16];
    for (int i = 0; i < 5; i++) {
        snprintf(key, sizeof key, "k%d", i);
        cluster_reconcile_push(q, key, i, 1000);
    }
    assert_int_equal(cluster_reconcile_count(q), 3);
    assert_int_equal(cluster_reconcile_dropped(q), 2);
    struct seen s = {0};
    assert_int_equal(cluster_reconcile_take(q, 10, collect, &s), 3);
    assert_string_equal(s.keys[0], "k2");
    assert_string_equal(s.keys[1], "k3");
    assert_string_equal(s.keys[2], "k4");
    cluster_reconcile_free(q);
}

static void reconcile_failed_writes_come_back(void **state)
{
    (void)state;
    struct cluster_reconcile *q = cluster_reconcile_new(4);
    cluster_reconcile_push(q, "a", 1, 100);
    cluster_reconcile_push(q, "b", 2, 100);
    struct seen s = {.push_back_to = q};
    assert_int_equal(cluster_reconcile_take(q, 50, collect, &s), 2);
    /* Redis went away again while they were written: both wait for the next return */
    assert_int_equal(cluster_reconcile_count(q), 2);
    struct seen again = {0};
    assert_int_equal(cluster_reconcile_take(q, 50, collect, &again), 2);
    assert_string_equal(again.keys[0], "a");
    assert_string_equal(again.keys[1], "b");
    cluster_reconcile_free(q); /* freeing a queue with entries frees them too (ASan) */
    q = cluster_reconcile_new(2);
    cluster_reconcile_push(q, "left", 1, 100);
    cluster_reconcile_free(q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(dup_key_is_the_pairs_hash),
        cmocka_unit_test(instance_key),
        cmocka_unit_test(backoff_doubles_capped_jittered),
        cmocka_unit_test(reconcile_in_order_without_expired),
        cmocka_unit_test(reconcile_full_drops_oldest),
        cmocka_unit_test(reconcile_failed_writes_come_back),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
