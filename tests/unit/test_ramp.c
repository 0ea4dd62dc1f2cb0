/* test_ramp.c - unit tests for outrelay/route/ramp.c and the operator's overrides in route.c:
 * the share at instants of step and interpolated schedules, set/pause/resume/rollback (also
 * across a restart), key building, bucket stability, monotonicity of the split (raising the
 * share only ever moves keys from `from` to `to`) and its accuracy at 30 %. */
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

#include "common/clock.h"
#include "injected_clock.h"
#include "config/config.h"
#include "route/route.h"
#include "route/route_internal.h"
#include "mail/envelope.h"

#define DAY 86400
#define T0 1796083200 /* 2026-12-01T00:00:00Z */

static struct ramp_step steps[] = {{T0, 5}, {T0 + 3 * DAY, 25}, {T0 + 7 * DAY, 60}};

static struct ramp_conf ramp_of(int interpolate)
{
    static char from[] = "legacy", to[] = "cloud";
    struct ramp_conf r = {0};
    r.from = from;
    r.to = to;
    r.schedule = steps;
    r.n_schedule = 3;
    r.interpolate = interpolate;
    return r;
}

static void test_step_schedule(void **state)
{
    (void)state;
    struct ramp_conf r = ramp_of(0);
    assert_true(ramp_schedule_share(&r, T0 - 1) == 0.0);
    assert_true(ramp_schedule_share(&r, T0) == 5.0);
    assert_true(ramp_schedule_share(&r, T0 + 3 * DAY - 1) == 5.0);
    assert_true(ramp_schedule_share(&r, T0 + 3 * DAY) == 25.0);
    assert_true(ramp_schedule_share(&r, T0 + 100 * DAY) == 60.0);
    assert_int_equal(ramp_current_step(&r, T0 - 1), -1);
    assert_int_equal(ramp_current_step(&r, T0 + 4 * DAY), 1);
    assert_true(ramp_rollback_percent(&r, T0 + 4 * DAY) == 5.0);
    assert_true(ramp_rollback_percent(&r, T0 + 1) == 0.0);
    assert_true(ramp_rollback_percent(&r, T0 - 1) == 0.0);
    /* no `to`: nothing moves whatever the schedule says */
    r.to = NULL;
    assert_true(ramp_share_at(&r, NULL, T0 + 4 * DAY) == 0.0);
}

static void test_interpolated_schedule(void **state)
{
    (void)state;
    struct ramp_conf r = ramp_of(1);
    assert_true(ramp_schedule_share(&r, T0 - 1) == 0.0);
    assert_true(ramp_schedule_share(&r, T0) == 5.0);
    assert_float_equal(ramp_schedule_share(&r, T0 + DAY + DAY / 2), 15.0, 1e-9);
    assert_float_equal(ramp_schedule_share(&r, T0 + 5 * DAY), 42.5, 1e-9);
    assert_true(ramp_schedule_share(&r, T0 + 7 * DAY) == 60.0);
    assert_true(ramp_schedule_share(&r, T0 + 70 * DAY) == 60.0);
    /* never decreases on an increasing schedule */
    double last = 0;
    for (int64_t t = T0 - DAY; t < T0 + 9 * DAY; t += 977) {
        double s = ramp_schedule_share(&r, t);
        assert_true(s >= last);
        last = s;
    }
}

static void test_key_parts(void **state)
{
    (void)state;
    static char *all[] = {"from_domain", "rcpt_domain", "sender", "rcpt", "message_id"};
    struct ramp_conf r = ramp_of(0);
    char key[256];
    r.key = all;
    r.n_key = 5;
    struct envelope *env = envelope_new();
    env->sender = strdup("Alice@Sender.EXAMPLE");
    env->message_id = strdup("<id@x>");
    envelope_add_rcpt(env, "Bob@Mail.Example.NET", NULL, 0);
    ramp_key(&r, env, 0, key, sizeof key);
    /* no From domain: the sender's domain stands in */
    assert_string_equal(key, "sender.example|mail.example.net|Alice@sender.example|"
                             "Bob@mail.example.net|<id@x>");
    env->from_domain = strdup("Example.ORG");
    r.n_key = 2;
    ramp_key(&r, env, 0, key, sizeof key);
    assert_string_equal(key, "example.org|mail.example.net");
    envelope_free(env);
}

static void test_bucket_stable(void **state)
{
    (void)state;
    uint32_t b = ramp_bucket("example.org|example.net");
    assert_true(b < 10000);
    for (int i = 0; i < 100; i++)
        assert_int_equal(ramp_bucket("example.org|example.net"), b);
    assert_int_equal(route_bucket("example.org|example.net"), b);
    /* a fixed value: the same on every instance and every build */
    assert_int_equal(ramp_bucket(""), 0xe3b0c44298fc1c14ULL % 10000);
}

/* For 10,000 random keys and every rise of the share, no key goes from `to` back to `from`;
 * at 30 % the split is within 2 points. */
static void test_monotone_and_accurate(void **state)
{
    (void)state;
    static uint32_t buckets[10000];
    srand(20261201);
    for (int i = 0; i < 10000; i++) {
        char key[64];
        snprintf(key, sizeof key, "d%d.example|r%d.example", rand(), rand());
        buckets[i] = ramp_bucket(key);
    }
    for (double low = 0; low < 100; low += 2.5)
        for (double high = low; high <= 100; high += 7.5)
            for (int i = 0; i < 10000; i++)
                if (ramp_goes_to(buckets[i], low)) assert_true(ramp_goes_to(buckets[i], high));
    int to = 0;
    for (int i = 0; i < 10000; i++)
        to += ramp_goes_to(buckets[i], 30);
    print_message("split at 30 %%: %.2f %% of 10,000 keys\n", to / 100.0);
    assert_in_range(to, 2800, 3200);
    for (int i = 0; i < 10000; i++) {
        assert_false(ramp_goes_to(buckets[i], 0));
        assert_true(ramp_goes_to(buckets[i], 100));
    }
}

/* ---- overrides through route_control, with the clock file */

static char tmpdir[64];

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* set_clock() and a check that the clock answers it */
static void set_clock_checked(int64_t t)
{
    set_clock(t);
    assert_int_equal(clock_now(), t);
}

static void control(const char *command, const char *expect)
{
    struct strbuf out = STRBUF_INIT;
    assert_int_equal(route_control(command, &out), 0);
    if (expect && !strstr(strbuf_str(&out), expect)) {
        print_message("%s:\n%s", command, strbuf_str(&out));
        fail();
    }
    strbuf_free(&out);
}

static void test_overrides(void **state)
{
    (void)state;
    char path[128], sdir[128], err[256];
    snprintf(tmpdir, sizeof tmpdir, "/tmp/test_ramp.XXXXXX");
    assert_non_null(mkdtemp(tmpdir));
    snprintf(path, sizeof path, "%s/outrelay.yaml", tmpdir);
    snprintf(sdir, sizeof sdir, "%s/state", tmpdir);
    FILE *f = fopen(path, "w");
    fputs("egress:\n  legacy: { type: direct }\n  cloud: { type: smarthost, host: 192.0.2.1 }\n"
          "ramp:\n  from: legacy\n  to: cloud\n  interpolate: true\n  schedule:\n"
          "    - { at: 2026-12-01, percent: 5 }\n"
          "    - { at: 2026-12-04, percent: 25 }\n"
          "    - { at: 2026-12-08, percent: 60 }\n",
          f);
    fclose(f);
    struct config_errors errs;
    struct config *cfg = config_load(path, &errs);
    assert_non_null(cfg);
    set_clock_checked(T0 + DAY + DAY / 2); /* before route_init: it judges route.db at this time */
    assert_int_equal(route_init(cfg, sdir, err, sizeof err), 0);
    /* interpolated: 5 + 20 * 1.5/3 = 15 */
    assert_float_equal(route_share(clock_now()), 15.0, 1e-9);
    control("status", "effective share: 15.00% (mode schedule)");
    control("set 40", "ramp set: share 40.00%");
    assert_true(route_share(T0 + 6 * DAY) == 40.0);
    control("resume", "share 15.00%");
    control("pause", "share 15.00%");
    set_clock_checked(T0 + 2 * DAY +
                      DAY / 2); /* the schedule says 5 + 20 * 2.5/3, pause holds 15 */
    assert_true(route_share(clock_now()) == 15.0);
    control("status",
            "mode pause since 2026-12-02T12:00:00Z, until resume; the schedule says 21.67%");
    /* the override survives a restart */
    route_shutdown();
    assert_int_equal(route_init(cfg, sdir, err, sizeof err), 0);
    assert_true(route_share(clock_now()) == 15.0);
    control("resume", "share 21.67%");
    set_clock_checked(T0 + 5 * DAY); /* current step: 25 % (Dec 4); the one before: 5 % */
    control("rollback", "ramp rollback: share 5.00%");
    set_clock_checked(T0 + 9 * DAY);
    assert_true(route_share(clock_now()) == 5.0);
    control("resume", "share 60.00%");
    /* mistakes */
    struct strbuf out = STRBUF_INIT;
    assert_int_equal(route_control("set 140", &out), -1);
    assert_int_equal(route_control("set abc", &out), -1);
    assert_int_equal(route_control("jump", &out), -1);
    assert_non_null(strstr(strbuf_str(&out), "unknown ramp command"));
    strbuf_free(&out);
    control("set 12.5%", "share 12.50%");
    route_shutdown();
    clock_set_source(NULL);
    config_free(cfg);
    nftw(tmpdir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_step_schedule),
        cmocka_unit_test(test_interpolated_schedule),
        cmocka_unit_test(test_key_parts),
        cmocka_unit_test(test_bucket_stable),
        cmocka_unit_test(test_monotone_and_accurate),
        cmocka_unit_test(test_overrides),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
