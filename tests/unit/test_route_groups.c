/* test_route_groups.c - unit tests for the route groups of outrelay/route (ramp.c's weighted
 * rendezvous hashing, route.c's group choice, spill order and per-group overrides, state.c's
 * group_override table) and their configuration (config/config_route.c): three egresses in
 * two groups over 10,000 keys land within 1.5 points of the weights, and stepping one weight
 * up moves keys only to that egress; the default group keeps the bucket rule. The clock is
 * injected; each test works in a fresh temporary directory. */
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
#include "route_fixture.h"
#include "config/config.h"
#include "mail/envelope.h"
#include "route/route.h"
#include "route/route_internal.h"

#define T0 1796083200 /* 2026-12-01T00:00:00Z */
#define DAY 86400
#define KEYS 10000

static int setup(void **state)
{
    (void)state;
    route_fixture_setup("test_route_groups", T0);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    route_fixture_teardown();
    return 0;
}

/* ---------------------------------------------------------------- the arithmetic */

static char *names3[] = {"legacy", "cloud", "google"};
static char *names2[] = {"legacy", "google"};

static struct route_group group_of(char **names, size_t n)
{
    struct route_group g = {0};
    g.name = "g";
    g.egress = names;
    g.n_egress = n;
    return g;
}

static char keys[KEYS][48];

static void make_keys(unsigned seed)
{
    srand(seed);
    for (int i = 0; i < KEYS; i++)
        snprintf(keys[i], sizeof keys[i], "d%d.example|r%d.example", rand(), rand());
}

/* Each key's egress index under weights. */
static void assign(const struct route_group *g, const double *weights, size_t *out)
{
    size_t order[8];
    for (int i = 0; i < KEYS; i++) {
        ramp_group_order(g, weights, keys[i], order);
        out[i] = order[0];
    }
}

/* The shares in percent, checked within 1.5 points of the weights. */
static void check_shares(const struct route_group *g, const double *weights, const size_t *who,
                         const char *what)
{
    double sum = 0;
    for (size_t e = 0; e < g->n_egress; e++)
        sum += weights[e];
    for (size_t e = 0; e < g->n_egress; e++) {
        int n = 0;
        for (int i = 0; i < KEYS; i++)
            n += who[i] == e;
        double share = 100.0 * n / KEYS, want = 100.0 * weights[e] / sum;
        print_message("%s: %-6s weight %6.2f%%, share of 10,000 keys %6.2f%%\n", what, g->egress[e],
                      want, share);
        assert_true(share >= want - 1.5 && share <= want + 1.5);
    }
}

/* Between before and after, a key that moved went to an egress whose weight rose, and came
 * from one whose weight did not rise. Returns the number of keys that moved. */
static int check_moves(const struct route_group *g, const double *w_before, const double *w_after,
                       const size_t *before, const size_t *after)
{
    int moved = 0;
    for (int i = 0; i < KEYS; i++) {
        if (before[i] == after[i]) continue;
        moved++;
        if (!(w_after[after[i]] > w_before[after[i]])) {
            print_message("key %s moved %s -> %s, whose weight did not rise\n", keys[i],
                          g->egress[before[i]], g->egress[after[i]]);
            fail();
        }
    }
    return moved;
}

/* Three egresses in two groups over 10,000 keys: shares within 1.5 points of the weights at
 * every step of a schedule; raising one weight (others fixed) moves keys only to it, lowering
 * one only away from it, scaling all moves nothing. */
static void test_rendezvous_shares_and_monotone(void **state)
{
    (void)state;
    static size_t a[KEYS], b[KEYS];
    struct route_group ga = group_of(names3, 3), gb = group_of(names2, 2);
    make_keys(20261206);

    /* group A's schedule, one weight raised at each step (others fixed) */
    double steps_a[][3] = {{80, 10, 10}, {80, 20, 10}, {80, 20, 30}, {80, 60, 30}, {80, 60, 90}};
    assign(&ga, steps_a[0], a);
    check_shares(&ga, steps_a[0], a, "group A step 0");
    for (size_t s = 1; s < sizeof steps_a / sizeof steps_a[0]; s++) {
        char what[32];
        assign(&ga, steps_a[s], b);
        snprintf(what, sizeof what, "group A step %zu", s);
        check_shares(&ga, steps_a[s], b, what);
        int moved = check_moves(&ga, steps_a[s - 1], steps_a[s], a, b);
        print_message("%s: %d keys moved, all to the egress whose weight rose\n", what, moved);
        assert_true(moved > 0);
        memcpy(a, b, sizeof a);
    }

    /* group B: two egresses, google raised from 10 to 90 in steps of 10 */
    double prev[2] = {100, 0};
    assign(&gb, prev, a);
    for (int i = 0; i < KEYS; i++)
        assert_int_equal(a[i], 0); /* weight 0 is never chosen */
    for (double p = 10; p <= 90; p += 10) {
        double w[2] = {100, p / (100 - p) * 100}; /* legacy fixed, google rising */
        assign(&gb, w, b);
        check_shares(&gb, w, b, "group B");
        check_moves(&gb, prev, w, a, b);
        memcpy(prev, w, sizeof prev);
        memcpy(a, b, sizeof a);
    }

    /* scaling every weight changes nothing; lowering one moves keys only away from it */
    double w1[3] = {50, 30, 20}, w2[3] = {150, 90, 60}, w3[3] = {50, 30, 5};
    assign(&ga, w1, a);
    assign(&ga, w2, b);
    assert_memory_equal(a, b, sizeof a);
    assign(&ga, w3, b);
    for (int i = 0; i < KEYS; i++)
        if (a[i] != b[i]) assert_int_equal(a[i], 2);
}

/* The score is a fixed function of key, name and weight: the same on every instance. */
static void test_rendezvous_stable(void **state)
{
    (void)state;
    double s = ramp_rendezvous_score("example.org|example.net", "cloud", 30);
    assert_true(s > 0);
    for (int i = 0; i < 100; i++)
        assert_true(ramp_rendezvous_score("example.org|example.net", "cloud", 30) == s);
    assert_true(ramp_rendezvous_score("example.org|example.net", "cloud", 60) == 2 * s);
    assert_true(ramp_rendezvous_score("example.org|example.net", "cloud", 0) == 0);
    assert_true(ramp_rendezvous_score("example.org|example.net", "legacy", 30) != s);
}

static void test_group_schedule(void **state)
{
    (void)state;
    double w0[] = {90, 10, 0}, w1[] = {50, 30, 20};
    struct route_group_step steps[] = {{T0, w0}, {T0 + 4 * DAY, w1}};
    struct route_group g = group_of(names3, 3);
    double w[3];
    g.schedule = steps;
    g.n_schedule = 2;
    ramp_group_schedule_weights(&g, T0 - 1, w); /* before the first step: the first egress */
    assert_true(w[0] == 1 && w[1] == 0 && w[2] == 0);
    ramp_group_schedule_weights(&g, T0 + 2 * DAY, w);
    assert_true(w[0] == 90 && w[1] == 10 && w[2] == 0);
    g.interpolate = 1;
    ramp_group_schedule_weights(&g, T0 + 2 * DAY, w);
    assert_float_equal(w[0], 70, 1e-9);
    assert_float_equal(w[1], 20, 1e-9);
    assert_float_equal(w[2], 10, 1e-9);
    ramp_group_schedule_weights(&g, T0 + 9 * DAY, w);
    assert_true(w[0] == 50 && w[1] == 30 && w[2] == 20);
    ramp_group_rollback_weights(&g, T0 + 9 * DAY, w);
    assert_true(w[0] == 90 && w[1] == 10);
    ramp_group_rollback_weights(&g, T0 + DAY, w);
    assert_true(w[0] == 1 && w[1] == 0 && w[2] == 0);
}

/* ---------------------------------------------------------------- through the configuration */

static const char groups_config[] =
    "egress:\n"
    "  legacy: { type: direct }\n"
    "  cloud: { type: smarthost, host: 192.0.2.1 }\n"
    "  google: { type: smarthost, host: 192.0.2.2 }\n"
    "origins:\n"
    "  local: { networks: [127.0.0.0/8] }\n"
    "  zimbra: { networks: [10.0.0.0/8] }\n"
    "providers:\n"
    "  testprov: { mx_suffixes: [mx.example.net] }\n"
    "ramp:\n"
    "  from: legacy\n"
    "  to: cloud\n"
    "  key: [rcpt]\n"
    "  schedule: [{ at: 2026-11-01, percent: 30 }]\n"
    "  groups:\n"
    "    - name: subsidiary\n"
    "      match: { sender_domains: [sub.example, .sub.example] }\n"
    "      egress: [legacy, cloud, google]\n"
    "      key: [rcpt]\n"
    "      schedule:\n"
    "        - { at: 2026-11-01, weights: { legacy: 50, cloud: 30, google: 20 } }\n"
    "        - { at: 2026-12-10, weights: { legacy: 50, cloud: 30, google: 60 } }\n"
    "    - name: partners\n"
    "      match: { origins: [zimbra], rcpt_domains: [.partner.example] }\n"
    "      egress: [google, legacy]\n"
    "      spill: [legacy]\n"
    "      schedule: [{ at: 2026-11-01, weights: { google: 1 } }]\n";

static struct envelope *message(const char *origin, const char *sender, const char *from_domain,
                                const char *rcpt)
{
    struct envelope *env = envelope_new();
    env->origin = strdup(origin);
    env->sender = strdup(sender);
    env->from_domain = from_domain ? strdup(from_domain) : NULL;
    envelope_add_rcpt(env, rcpt, NULL, 0);
    return env;
}

static const char *decide(const char *origin, const char *sender, const char *from_domain,
                          const char *rcpt, struct route_decision *d)
{
    struct envelope *env = message(origin, sender, from_domain, rcpt);
    route_decide(env, 0, "testprov", clock_now(), d);
    envelope_free(env);
    return d->egress ? d->egress->name : NULL;
}

static void test_group_selection(void **state)
{
    (void)state;
    struct config *cfg = load_text(groups_config);
    assert_non_null(cfg);
    assert_int_equal(cfg->ramp.n_groups, 2);
    start(cfg);
    struct route_decision d;
    /* the From: domain decides, else the envelope sender's */
    decide("local", "a@elsewhere.example", "sub.example", "u1@example.net", &d);
    assert_string_equal(d.group, "subsidiary");
    assert_non_null(strstr(d.reason, "group subsidiary: rendezvous"));
    decide("local", "a@x.sub.example", NULL, "u1@example.net", &d);
    assert_string_equal(d.group, "subsidiary");
    decide("local", "a@sub.example", "other.example", "u1@example.net", &d);
    assert_string_equal(d.group, "default");
    decide("local", "a@notsub.example", NULL, "u1@example.net", &d);
    assert_string_equal(d.group, "default");
    /* every kind given must match: origin and recipient domain (subdomains only) */
    assert_string_equal(decide("zimbra", "a@o.example", NULL, "u@x.partner.example", &d), "google");
    assert_string_equal(d.group, "partners");
    decide("zimbra", "a@o.example", NULL, "u@partner.example", &d);
    assert_string_equal(d.group, "default");
    decide("local", "a@o.example", NULL, "u@x.partner.example", &d);
    assert_string_equal(d.group, "default");

    /* the default group keeps the bucket rule of the two-egress ramp */
    for (int i = 0; i < 200; i++) {
        char rcpt[64];
        snprintf(rcpt, sizeof rcpt, "u%d@example.net", i);
        const char *e = decide("local", "a@o.example", NULL, rcpt, &d);
        int to_cloud = ramp_goes_to(ramp_bucket(rcpt), 30);
        assert_string_equal(e, to_cloud ? "cloud" : "legacy");
        assert_non_null(strstr(d.reason, "group default: ramp 30.00%: bucket"));
    }

    /* the subsidiary splits 50/30/20 and sticks */
    int count[3] = {0, 0, 0};
    for (int i = 0; i < 3000; i++) {
        char rcpt[64];
        snprintf(rcpt, sizeof rcpt, "u%d@example.net", i);
        const char *e = decide("local", "a@sub.example", NULL, rcpt, &d);
        const char *again = decide("local", "a@sub.example", NULL, rcpt, &d);
        assert_string_equal(e, again);
        count[!strcmp(e, "cloud") ? 1 : !strcmp(e, "google") ? 2 : 0]++;
    }
    print_message("subsidiary over 3000 keys: legacy %d cloud %d google %d\n", count[0], count[1],
                  count[2]);
    assert_in_range(count[0], 1350, 1650);
    assert_in_range(count[1], 780, 1020);
    assert_in_range(count[2], 480, 720);
    route_shutdown();
    config_free(cfg);
}

static void control_ok(const char *command, const char *expect)
{
    struct strbuf out = STRBUF_INIT;
    int rc = route_control(command, &out);
    if (rc != 0 || (expect && !strstr(strbuf_str(&out), expect))) {
        print_message("%s (%d):\n%s", command, rc, strbuf_str(&out));
        fail();
    }
    strbuf_free(&out);
}

static void control_fails(const char *command, const char *expect)
{
    struct strbuf out = STRBUF_INIT;
    int rc = route_control(command, &out);
    if (rc != -1 || (expect && !strstr(strbuf_str(&out), expect))) {
        print_message("%s (%d):\n%s", command, rc, strbuf_str(&out));
        fail();
    }
    strbuf_free(&out);
}

/* Overrides per group: one group's set leaves the other and the default; they survive a
 * restart; the bare form is the default group's. */
static void test_group_overrides(void **state)
{
    (void)state;
    struct config *cfg = load_text(groups_config);
    assert_non_null(cfg);
    start(cfg);
    struct route_decision d;
    control_ok("status", "group subsidiary: match sender_domains [sub.example, .sub.example]");
    control_ok("status", "effective weights: legacy=50.00% cloud=30.00% google=20.00% (mode "
                         "schedule)");
    control_ok("set subsidiary google=100", "ramp group subsidiary set: legacy=0.00% cloud=0.00% "
                                            "google=100.00% until resume");
    for (int i = 0; i < 100; i++) {
        char rcpt[64];
        snprintf(rcpt, sizeof rcpt, "u%d@example.net", i);
        assert_string_equal(decide("local", "a@sub.example", NULL, rcpt, &d), "google");
        /* the default group still follows its schedule */
        assert_string_equal(decide("local", "a@o.example", NULL, rcpt, &d),
                            ramp_goes_to(ramp_bucket(rcpt), 30) ? "cloud" : "legacy");
    }
    control_ok("status", "effective share: 30.00% (mode schedule)");
    control_ok("set 60", "ramp set: share 60.00%");
    control_ok("set default legacy=1,cloud=3", "ramp set: share 75.00%");
    control_ok("pause partners", "ramp group partners pause: google=100.00% legacy=0.00%");
    /* kept across a restart */
    route_shutdown();
    start(cfg);
    control_ok("status", "effective weights: legacy=0.00% cloud=0.00% google=100.00% (mode set "
                         "since 2026-12-01T00:00:00Z, until resume; the schedule says "
                         "legacy=50.00% cloud=30.00% google=20.00%)");
    control_ok("status", "effective share: 75.00%");
    set_clock(T0 + 10 * DAY); /* subsidiary's second step: 50/30/60 */
    control_ok("rollback subsidiary", "legacy=50.00% cloud=30.00% google=20.00% until resume");
    control_ok("resume subsidiary", "legacy=35.71% cloud=21.43% google=42.86% (was");
    control_ok("resume default", "follows the schedule again: share 30.00%");
    control_ok("set partners 25", "google=75.00% legacy=25.00%");
    /* JSON shows every group */
    struct strbuf out = STRBUF_INIT;
    assert_int_equal(route_control_json("status --json", &out, NULL), 0);
    assert_non_null(strstr(strbuf_str(&out), "\"groups\":[{\"name\":\"subsidiary\""));
    assert_non_null(strstr(strbuf_str(&out), "\"name\":\"partners\""));
    strbuf_reset(&out);
    assert_int_equal(route_control_json("set subsidiary cloud=1 --json", &out, NULL), 0);
    assert_non_null(strstr(strbuf_str(&out), "\"group\":\"subsidiary\""));
    assert_non_null(strstr(strbuf_str(&out), "\"cloud\":100"));
    strbuf_free(&out);
    /* mistakes */
    control_fails("set subsidiary 30", "group subsidiary has 3 egresses: give weights");
    control_fails("set subsidiary yahoo=3", "\"yahoo\" is not EGRESS=WEIGHT");
    control_fails("set subsidiary cloud=0", "at least one weight must be above 0");
    control_fails("set subsidiary cloud=-1", "is not a weight");
    control_fails("set nogroup 30", "unknown ramp command");
    control_fails("pause subsidiary now", "unknown ramp command");
    route_shutdown();
    config_free(cfg);
}

/* A capped choice spills along the group's spill order, or the rest by score; else waits. */
static void test_group_spill(void **state)
{
    (void)state;
    char text[4096];
    snprintf(text, sizeof text, "%s%s", groups_config,
             "caps:\n"
             "  - { egress: google, provider: testprov, per_minute: 1 }\n"
             "  - { egress: cloud, provider: testprov, per_minute: 1 }\n"
             "  - { egress: legacy, provider: testprov, per_minute: 1 }\n");
    struct config *cfg = load_text(text);
    assert_non_null(cfg);
    start(cfg);
    struct route_decision d;
    const struct egress_conf *google = config_find_egress(cfg, "google");
    const struct egress_conf *cloud = config_find_egress(cfg, "cloud");
    const struct egress_conf *legacy = config_find_egress(cfg, "legacy");
    route_count(google, "testprov", clock_now());
    /* partners: google capped, spill: [legacy] */
    assert_string_equal(decide("zimbra", "a@o.example", NULL, "u@x.partner.example", &d), "legacy");
    assert_true(d.spilled);
    assert_string_equal(d.planned->name, "google");
    assert_non_null(strstr(d.reason, "group partners: spilled to legacy: "));
    /* subsidiary: a key planned on google spills to the better of cloud and legacy by score */
    char rcpt[64] = "";
    size_t order[3];
    double w[3] = {50, 30, 20};
    int i;
    for (i = 0; i < 1000; i++) {
        snprintf(rcpt, sizeof rcpt, "u%d@example.net", i);
        decide("local", "a@sub.example", NULL, rcpt, &d);
        if (!strcmp(d.planned->name, "google")) break;
    }
    assert_true(i < 1000);
    ramp_group_order(&cfg->ramp.groups[0], w, rcpt, order);
    assert_int_equal(order[0], 2);
    assert_true(d.spilled);
    assert_string_equal(d.egress->name, cfg->ramp.groups[0].egress[order[1]]);
    /* the second by score capped too: the third */
    route_count(config_find_egress(cfg, cfg->ramp.groups[0].egress[order[1]]), "testprov",
                clock_now());
    decide("local", "a@sub.example", NULL, rcpt, &d);
    assert_string_equal(d.egress->name, cfg->ramp.groups[0].egress[order[2]]);
    /* all capped: wait until the next minute */
    route_count(cloud, "testprov", clock_now());
    route_count(legacy, "testprov", clock_now());
    assert_null(decide("local", "a@sub.example", NULL, rcpt, &d));
    assert_int_equal(d.retry_at, T0 + 60);
    assert_non_null(strstr(d.reason, "group subsidiary: waiting: "));
    route_shutdown();
    config_free(cfg);
}

/* SIGHUP with a group that lost an egress and a group that is gone: the override keeps the
 * weights of the egresses still in the group; an override of a removed group is forgotten. */
static void test_group_reload(void **state)
{
    (void)state;
    struct config *cfg = load_text(groups_config);
    assert_non_null(cfg);
    start(cfg);
    control_ok("set subsidiary legacy=1,cloud=1,google=2", "legacy=25.00% cloud=25.00% "
                                                           "google=50.00%");
    control_ok("pause partners", NULL);
    char text[sizeof groups_config];
    snprintf(text, sizeof text, "%s", groups_config);
    char *cut = strstr(text, "    - name: partners");
    assert_non_null(cut);
    *cut = '\0';
    char *three = strstr(text, "[legacy, cloud, google]");
    assert_non_null(three);
    memcpy(three, "[cloud, google]        ", strlen("[legacy, cloud, google]"));
    /* the schedule may no longer name legacy */
    char *w;
    while ((w = strstr(text, "legacy: 50, ")))
        memset(w, ' ', strlen("legacy: 50, "));
    struct config *fresh = load_text(text);
    assert_non_null(fresh);
    assert_int_equal(fresh->ramp.n_groups, 1);
    char err[256] = "";
    assert_int_equal(route_reload(fresh, err, sizeof err), 0);
    control_ok("status", "effective weights: cloud=33.33% google=66.67% (mode set");
    struct strbuf out = STRBUF_INIT;
    assert_int_equal(route_control("pause partners", &out), -1);
    strbuf_free(&out);
    route_shutdown();
    config_free(fresh);
    config_free(cfg);
}

static int has_error(const struct config_errors *errs, const char *text)
{
    for (size_t i = 0; i < errs->n; i++)
        if (strstr(errs->items[i], text)) return 1;
    print_message("no error with \"%s\"\n", text);
    for (size_t i = 0; i < errs->n; i++)
        print_message("  %s\n", errs->items[i]);
    return 0;
}

static void test_group_config_errors(void **state)
{
    (void)state;
    char path[128];
    snprintf(path, sizeof path, "%s/broken.yaml", tmpdir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("egress:\n"
          "  legacy: { type: direct }\n"
          "  cloud: { type: smarthost, host: 192.0.2.1 }\n"
          "ramp:\n"
          "  from: legacy\n"
          "  groups:\n"
          "    - { name: a, egress: [legacy, nowhere] }\n"
          "    - { name: default, egress: [legacy] }\n"
          "    - name: b\n"
          "      egress: [legacy, cloud]\n"
          "      match: { origins: [nobody], rcpt_domains: [\"bad domain\"] }\n"
          "      schedule: [{ at: 2026-12-01, weights: { google: 3 } }]\n"
          "    - { name: c, egress: [legacy], spill: [cloud], key: [colour] }\n"
          "    - { name: d, egress: [legacy, cloud], schedule: [{ at: 2026-12-01, weights: { "
          "legacy: 0 } }] }\n"
          "    - { name: e, egress: [legacy] }\n"
          "    - { name: e, egress: [cloud] }\n"
          "    - { egress: [legacy] }\n",
          f);
    fclose(f);
    struct config_errors errs;
    assert_null(config_load(path, &errs));
    assert_true(has_error(&errs, "egress \"nowhere\" is not defined"));
    assert_true(has_error(&errs, "\"default\" cannot name a group"));
    assert_true(has_error(&errs, "origin \"nobody\" is not defined"));
    assert_true(has_error(&errs, "\"bad domain\" is not a domain"));
    assert_true(has_error(&errs, "\"google\" is not one of the group's egresses"));
    assert_true(has_error(&errs, "\"cloud\" is not one of the group's egresses"));
    assert_true(has_error(&errs, "\"colour\" is not a routing key part"));
    assert_true(has_error(&errs, "at least one weight must be above 0"));
    assert_true(has_error(&errs, "a group named \"e\" is defined already"));
    assert_true(has_error(&errs, "needs name and egress"));
    config_errors_free(&errs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rendezvous_shares_and_monotone),
        cmocka_unit_test(test_rendezvous_stable),
        cmocka_unit_test(test_group_schedule),
        cmocka_unit_test_setup_teardown(test_group_selection, setup, teardown),
        cmocka_unit_test_setup_teardown(test_group_overrides, setup, teardown),
        cmocka_unit_test_setup_teardown(test_group_spill, setup, teardown),
        cmocka_unit_test_setup_teardown(test_group_reload, setup, teardown),
        cmocka_unit_test_setup_teardown(test_group_config_errors, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
