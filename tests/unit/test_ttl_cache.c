/* test_ttl_cache.c - unit tests for outrelay/common/ttl_cache.c: entries live exactly their TTL
 * on the injected clock, a replaced or dropped value is freed once, a full cache drops expired
 * entries before live ones, and threads may share one cache. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/ttl_cache.h"

static int64_t fake_now;
static int freed;

static int64_t fake_clock(void)
{
    return fake_now;
}

static void count_free(void *value)
{
    freed++;
    free(value);
}

static void copy_int(const void *value, void *out)
{
    *(int *)out = *(const int *)value;
}

static int *boxed(int v)
{
    int *p = malloc(sizeof *p);
    *p = v;
    return p;
}

static int setup(void **state)
{
    (void)state;
    fake_now = 1000;
    freed = 0;
    return 0;
}

static void test_lives_its_ttl(void **state)
{
    (void)state;
    struct ttl_cache *c = ttl_cache_new(8, count_free, fake_clock);
    int got = 0;
    assert_int_equal(ttl_cache_get(c, "a", copy_int, &got), 0);
    ttl_cache_put(c, "a", boxed(7), 60);
    assert_int_equal(ttl_cache_get(c, "a", copy_int, &got), 60);
    assert_int_equal(got, 7);
    fake_now += 59;
    assert_int_equal(ttl_cache_get(c, "a", copy_int, &got), 1);
    fake_now += 1;
    got = 0;
    assert_int_equal(ttl_cache_get(c, "a", copy_int, &got), 0);
    assert_int_equal(got, 0); /* an expired value is not copied */
    assert_int_equal(freed, 1);
    assert_int_equal(ttl_cache_count(c), 0);
    ttl_cache_free(c);
}

static void test_replace_and_zero_ttl_free(void **state)
{
    (void)state;
    struct ttl_cache *c = ttl_cache_new(8, count_free, fake_clock);
    ttl_cache_put(c, "k", boxed(1), 10);
    ttl_cache_put(c, "k", boxed(2), 10);
    assert_int_equal(freed, 1);
    int got = 0;
    assert_int_equal(ttl_cache_get(c, "k", copy_int, &got), 10);
    assert_int_equal(got, 2);
    ttl_cache_put(c, "z", boxed(3), 0); /* nothing to keep: freed at once */
    assert_int_equal(freed, 2);
    assert_int_equal(ttl_cache_count(c), 1);
    ttl_cache_clear(c);
    assert_int_equal(freed, 3);
    assert_int_equal(ttl_cache_get(c, "k", copy_int, &got), 0);
    ttl_cache_free(c);
}

static void test_full_drops_expired_first(void **state)
{
    (void)state;
    struct ttl_cache *c = ttl_cache_new(3, count_free, fake_clock);
    ttl_cache_put(c, "short", boxed(1), 5);
    ttl_cache_put(c, "long1", boxed(2), 500);
    ttl_cache_put(c, "long2", boxed(3), 500);
    fake_now += 10;
    ttl_cache_put(c, "new", boxed(4), 500);
    assert_int_equal(ttl_cache_count(c), 3);
    int got = 0;
    assert_true(ttl_cache_get(c, "long1", copy_int, &got) > 0);
    assert_true(ttl_cache_get(c, "new", copy_int, &got) > 0);
    /* Full of live entries: all go, the new one stays. */
    ttl_cache_put(c, "newer", boxed(5), 500);
    assert_int_equal(ttl_cache_count(c), 1);
    assert_true(ttl_cache_get(c, "newer", copy_int, &got) > 0);
    assert_int_equal(got, 5);
    ttl_cache_free(c);
    assert_int_equal(freed, 5);
}

static void *hammer(void *arg)
{
    struct ttl_cache *c = arg;
    char key[16];
    for (int i = 0; i < 2000; i++) {
        snprintf(key, sizeof key, "k%d", i % 50);
        int got;
        if (ttl_cache_get(c, key, copy_int, &got) == 0) ttl_cache_put(c, key, boxed(i), 30);
    }
    return NULL;
}

static void test_threads_share_one_cache(void **state)
{
    (void)state;
    struct ttl_cache *c = ttl_cache_new(20, free, fake_clock);
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, hammer, c), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    assert_true(ttl_cache_count(c) <= 20);
    ttl_cache_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_lives_its_ttl, setup),
        cmocka_unit_test_setup(test_replace_and_zero_ttl_free, setup),
        cmocka_unit_test_setup(test_full_drops_expired_first, setup),
        cmocka_unit_test_setup(test_threads_share_one_cache, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
