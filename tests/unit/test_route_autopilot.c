/* test_route_autopilot.c - unit tests of a route group's autopilot (outrelay/route/autopilot.c):
 * the gates judged on crafted inputs (advance on green, hold on amber, step back on red, the
 * calendar and step_after), then through route_feedback, the flush timer's tick and the
 * operator's commands on an injected clock: a 4.7.650 reputation rule steps back, the group
 * resumes after the receiver recovers, pause and set freeze it, and a restart keeps the step
 * (route.db); ramp plan per group. Each test works in a fresh temporary directory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/clock.h"
#include "injected_clock.h"
#include "route_fixture.h"
#include "config/config.h"
#include "records/records.h"
#include "route/route.h"
#include "route/route_internal.h"

#define T0 1796083200 /* 2026-12-01T00:00:00Z */
#define HOUR 3600
#define DAY 86400

/* The autopilot records seen, as "verdict gate step" lines. */
static char seen[4096];

static void observe(const struct record_event *ev)
{
    if (ev->type != RECORD_AUTOPILOT) return;
    size_t len = strlen(seen);
    snprintf(seen + len, sizeof seen - len, "%s %s|", ev->action, ev->rule ? ev->rule : "");
}

static int setup(void **state)
{
    (void)state;
    route_fixture_setup("test_route_autopilot", T0);
    seen[0] = '\0';
    records_set_observer(observe);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    records_set_observer(NULL);
    route_fixture_teardown();
    return 0;
}

/* ---------------------------------------------------------------- the gates alone */

static char *names[] = {"legacy", "cloud"};

static struct route_group pilot_group(struct route_group_step *steps, double w[][2])
{
    struct route_group g = {0};
    g.name = "g";
    g.egress = names;
    g.n_egress = 2;
    for (int i = 0; i < 3; i++)
        steps[i] = (struct route_group_step){T0 + i * DAY, w[i]};
    g.schedule = steps;
    g.n_schedule = 3;
    g.autopilot = (struct autopilot_conf){.enabled = 1,
                                          .window = HOUR,
                                          .step_after = DAY,
                                          .max_deferral_rate = 5,
                                          .max_shaping = 0,
                                          .min_replies = 100,
                                          .max_bounce_rate = 3,
                                          .min_dmarc_pass = 98};
    return g;
}

static void test_judge(void **state)
{
    (void)state;
    struct route_group_step steps[3];
    double w[3][2] = {{90, 10}, {70, 30}, {0, 100}};
    struct route_group g = pilot_group(steps, w);
    struct autopilot_state st = {.step = 0, .held_since = T0};
    struct autopilot_inputs green = {.replies = 200,
                                     .deferred = 4,
                                     .worst_provider = "google",
                                     .worst_replies = 200,
                                     .worst_deferred = 4};

    /* green, but the next step's time has not come */
    autopilot_judge(&g, &st, &green, 0, T0 + DAY - 1);
    assert_int_equal(st.verdict, AUTOPILOT_HOLD);
    assert_string_equal(st.gate, "date");
    /* green and due: advance */
    autopilot_judge(&g, &st, &green, 0, T0 + DAY);
    assert_int_equal(st.verdict, AUTOPILOT_ADVANCE);
    assert_string_equal(st.gate, "");
    /* due by the calendar, but not step_after on this step */
    st.held_since = T0 + DAY + HOUR;
    autopilot_judge(&g, &st, &green, 0, T0 + 2 * DAY);
    assert_int_equal(st.verdict, AUTOPILOT_HOLD);
    assert_string_equal(st.gate, "step_after");
    st.held_since = T0;

    /* amber: deferral rate of a provider over 5 % */
    struct autopilot_inputs amber = green;
    amber.worst_deferred = amber.deferred = 11;
    autopilot_judge(&g, &st, &amber, 0, T0 + DAY);
    assert_int_equal(st.verdict, AUTOPILOT_HOLD);
    assert_string_equal(st.gate, "deferral_rate:google");
    assert_true(st.value > 5.4 && st.value < 5.6);
    assert_true(st.threshold == 5);
    /* amber: too few replies to judge */
    amber = green;
    amber.replies = 99;
    autopilot_judge(&g, &st, &amber, 0, T0 + DAY);
    assert_string_equal(st.gate, "replies");
    /* amber: a throttle started, or a suspension in force */
    amber = green;
    amber.shaping_started = 1;
    autopilot_judge(&g, &st, &amber, 0, T0 + DAY);
    assert_int_equal(st.verdict, AUTOPILOT_HOLD);
    assert_string_equal(st.gate, "shaping");
    amber = green;
    amber.shaping_active = 1;
    autopilot_judge(&g, &st, &amber, 0, T0 + DAY);
    assert_string_equal(st.gate, "shaping_in_force");
    /* amber: DMARC predicted to fail for 3 of 100 messages checked for the gaining egress */
    amber = green;
    amber.predicted = 100;
    amber.predicted_fail = 3;
    autopilot_judge(&g, &st, &amber, 0, T0 + DAY);
    assert_int_equal(st.verdict, AUTOPILOT_HOLD);
    assert_string_equal(st.gate, "dmarc_pass");
    assert_true(st.value > 96.9 && st.value < 97.1);
    amber.predicted_fail = 2; /* 98 %: holds no longer */
    autopilot_judge(&g, &st, &amber, 0, T0 + DAY);
    assert_int_equal(st.verdict, AUTOPILOT_ADVANCE);

    /* red: a reputation rule started; a bounce spike */
    struct autopilot_inputs red = green;
    red.shaping_started = red.reputation_started = 1;
    autopilot_judge(&g, &st, &red, 0, T0 + DAY);
    assert_int_equal(st.verdict, AUTOPILOT_BACK);
    assert_string_equal(st.gate, "reputation");
    red = green;
    red.bounced = 7;
    autopilot_judge(&g, &st, &red, 0, T0 + DAY);
    assert_int_equal(st.verdict, AUTOPILOT_BACK);
    assert_string_equal(st.gate, "bounce_rate");
    /* ... judged only with enough replies */
    red.replies = 20;
    red.bounced = 7;
    autopilot_judge(&g, &st, &red, 0, T0 + DAY);
    assert_int_equal(st.verdict, AUTOPILOT_HOLD);

    /* the operator wins over everything, red included */
    red = green;
    red.reputation_started = 1;
    autopilot_judge(&g, &st, &red, 1, T0 + DAY);
    assert_int_equal(st.verdict, AUTOPILOT_OPERATOR);

    /* the last step with every gate holding */
    st.step = 2;
    autopilot_judge(&g, &st, &green, 0, T0 + 5 * DAY);
    assert_int_equal(st.verdict, AUTOPILOT_DONE);
    /* before the first step nothing is counted: its time alone decides */
    st = (struct autopilot_state){.step = -1};
    struct autopilot_inputs none = {0};
    autopilot_judge(&g, &st, &none, 0, T0 - 1);
    assert_string_equal(st.gate, "date");
    autopilot_judge(&g, &st, &none, 0, T0);
    assert_int_equal(st.verdict, AUTOPILOT_ADVANCE);
    /* off */
    g.autopilot.enabled = 0;
    autopilot_judge(&g, &st, &green, 0, T0);
    assert_int_equal(st.verdict, AUTOPILOT_OFF);
}

/* ---------------------------------------------------------------- through the route stage */

static const char pilot_config[] =
    "egress:\n"
    "  legacy: { type: direct }\n"
    "  cloud: { type: smarthost, host: 192.0.2.1 }\n"
    "ramp:\n"
    "  from: legacy\n"
    "  groups:\n"
    "    - name: moving\n"
    "      egress: [legacy, cloud]\n"
    "      schedule:\n"
    "        - { at: \"2026-12-01T00:00:00Z\", weights: { legacy: 90, cloud: 10 } }\n"
    "        - { at: \"2026-12-02T00:00:00Z\", weights: { legacy: 50, cloud: 50 } }\n"
    "        - { at: \"2026-12-03T00:00:00Z\", weights: { cloud: 1 } }\n"
    "      autopilot:\n"
    "        enabled: true\n"
    "        window: 1h\n"
    "        step_after: 1d\n"
    "        gates: { min_replies: 20, max_deferral_rate: 10 }\n"
    "shaping:\n"
    "  - name: reputation\n"
    "    match: { code: 451, enhanced: 4.7.650 }\n"
    "    action: suspend\n"
    "    duration: 30m\n"
    "    reputation: true\n";

/* n replies on cloud, one per second from now, with `deferred` of them 4xx. */
static void replies(const struct config *cfg, int n, int deferred)
{
    const struct egress_conf *cloud = config_find_egress(cfg, "cloud");
    for (int i = 0; i < n; i++) {
        route_feedback(cloud, "other", i < deferred ? 421 : 250, i < deferred ? "4.3.2" : "2.0.0",
                       "", clock_now());
        set_clock(clock_now() + 1);
    }
}

/* Moves the clock to t and lets the flush timer run. */
static void tick_at(int64_t t)
{
    set_clock(t);
    route_flush();
}

static void status_has(const char *text)
{
    struct strbuf out = STRBUF_INIT;
    assert_int_equal(route_control("status", &out), 0);
    if (!strstr(strbuf_str(&out), text)) print_message("status:\n%s\n", strbuf_str(&out));
    assert_non_null(strstr(strbuf_str(&out), text));
    strbuf_free(&out);
}

static void control_ok(const char *command)
{
    struct strbuf out = STRBUF_INIT;
    assert_int_equal(route_control(command, &out), 0);
    strbuf_free(&out);
}

static void test_pilot_timeline(void **state)
{
    (void)state;
    struct config *cfg = load_text(pilot_config);
    assert_non_null(cfg);
    set_clock(T0 - HOUR);
    start(cfg);
    tick_at(T0 - HOUR);
    status_has("autopilot on, step 0 of 3, hold: date: the next step starts at "
               "2026-12-01T00:00:00Z");
    /* the first step at its time */
    tick_at(T0);
    status_has("autopilot on, step 1 of 3, advance");
    status_has("effective weights: legacy=90.00% cloud=10.00%");
    /* a day later the calendar allows step 2, the replies of the last hour decide */
    set_clock(T0 + DAY - 600);
    replies(cfg, 30, 6); /* 20 % deferred */
    tick_at(T0 + DAY);
    status_has("hold: deferral_rate:other 20.0% > 10%");
    set_clock(T0 + DAY + 2 * HOUR); /* those replies leave the window */
    replies(cfg, 30, 1);
    tick_at(clock_now());
    status_has("autopilot on, step 2 of 3, advance");
    status_has("effective weights: legacy=50.00% cloud=50.00%");
    /* red: the receiver starts answering 4.7.650 */
    route_feedback(config_find_egress(cfg, "cloud"), "other", 451, "4.7.650",
                   "rate limited due to IP reputation", clock_now());
    tick_at(clock_now() + AUTOPILOT_TICK);
    status_has("autopilot on, step 1 of 3, back");
    status_has("effective weights: legacy=90.00% cloud=10.00%");
    /* the suspension holds it while in force; no second step back */
    tick_at(clock_now() + AUTOPILOT_TICK);
    status_has("hold: shaping_in_force");
    /* the receiver recovers: healthy replies, but step_after on the step it fell back to */
    set_clock(clock_now() + HOUR);
    replies(cfg, 30, 0);
    tick_at(clock_now());
    status_has("hold: step_after");
    set_clock(clock_now() + DAY);
    replies(cfg, 30, 0);
    tick_at(clock_now());
    status_has("autopilot on, step 2 of 3, advance");

    /* the operator's pause freezes it; resume hands back */
    control_ok("pause moving");
    set_clock(clock_now() + DAY);
    replies(cfg, 30, 0);
    tick_at(clock_now());
    status_has("autopilot on, step 2 of 3, operator");
    control_ok("set moving legacy=1,cloud=0");
    tick_at(clock_now() + AUTOPILOT_TICK);
    status_has("effective weights: legacy=100.00% cloud=0.00%");
    control_ok("resume moving");
    replies(cfg, 30, 0);
    tick_at(clock_now());
    status_has("autopilot on, step 3 of 3, advance");
    status_has("effective weights: legacy=0.00% cloud=100.00%");

    /* the records tell the same story, one per change */
    print_message("autopilot records: %s\n", seen);
    assert_non_null(strstr(seen, "hold date|advance |"));
    assert_non_null(strstr(seen, "hold deferral_rate:other|advance |back reputation|"
                                 "hold shaping_in_force|hold step_after|advance |"));
    assert_non_null(strstr(seen, "operator operator|advance |"));

    /* a restart keeps the step */
    route_shutdown();
    start(cfg);
    status_has("autopilot on, step 3 of 3, advance");
    status_has("effective weights: legacy=0.00% cloud=100.00%");
    struct strbuf out = STRBUF_INIT;
    assert_int_equal(route_control_json("status --json", &out, NULL), 0);
    assert_non_null(strstr(strbuf_str(&out), "\"autopilot\":{\"enabled\":true,\"step\":3"));
    strbuf_free(&out);
    route_shutdown();
    config_free(cfg);
}

/* The check stage's predictions for the gaining egress hold the step while too many would fail
 * DMARC (route_note_prediction, as qmgr calls it), and let go once they leave the window. */
static void test_pilot_dmarc_gate(void **state)
{
    (void)state;
    struct config *cfg = load_text(pilot_config);
    assert_non_null(cfg);
    set_clock(T0 - HOUR);
    start(cfg);
    tick_at(T0 - HOUR);
    tick_at(T0);
    status_has("autopilot on, step 1 of 3, advance");
    set_clock(T0 + DAY - 600);
    replies(cfg, 30, 0);
    const struct egress_conf *cloud = config_find_egress(cfg, "cloud");
    for (int k = 0; k < 20; k++)
        route_note_prediction(cloud, "other", k >= 5, clock_now()); /* 5 of 20 would fail */
    tick_at(T0 + DAY);
    status_has("hold: dmarc_pass 75.0% < 98%");
    set_clock(T0 + DAY + 2 * HOUR); /* those predictions leave the window */
    replies(cfg, 30, 0);
    for (int k = 0; k < 20; k++)
        route_note_prediction(cloud, "other", 1, clock_now());
    tick_at(clock_now());
    status_has("autopilot on, step 2 of 3, advance");
    route_shutdown();
    config_free(cfg);
}

/* One red signal steps back once, even when the evaluation that acts on it falls in the same
 * minute as the reply: a 4.7.650 and a bounce spike each cost one step, not one per tick. */
static void test_pilot_red_once(void **state)
{
    (void)state;
    struct config *cfg = load_text(pilot_config);
    assert_non_null(cfg);
    const struct egress_conf *cloud = config_find_egress(cfg, "cloud");
    start(cfg);
    tick_at(T0);
    set_clock(T0 + DAY + HOUR);
    replies(cfg, 30, 0);
    tick_at(T0 + DAY + 2 * HOUR); /* minute-aligned: step 2 */
    set_clock(T0 + 2 * DAY + HOUR);
    replies(cfg, 30, 0);
    tick_at(T0 + 2 * DAY + 2 * HOUR); /* and step 3 */
    status_has("step 3 of 3");
    set_clock(T0 + 3 * DAY + 5);
    route_feedback(cloud, "other", 451, "4.7.650", "", clock_now());
    tick_at(T0 + 3 * DAY + 30); /* the same minute */
    status_has("step 2 of 3, back: reputation 1");
    tick_at(T0 + 3 * DAY + 95);
    status_has("step 2 of 3, hold: shaping_in_force");
    tick_at(T0 + 3 * DAY + 2 * HOUR); /* lifted; nothing counted since the step back */
    status_has("step 2 of 3, hold: replies 0 < 20");

    /* a bounce spike: 25 replies, 5 of them 5xx, in the minute of the next evaluation */
    set_clock(T0 + 3 * DAY + 3 * HOUR + 1);
    for (int i = 0; i < 25; i++)
        route_feedback(cloud, "other", i < 5 ? 550 : 250, i < 5 ? "5.7.1" : "2.0.0", "",
                       clock_now());
    tick_at(T0 + 3 * DAY + 3 * HOUR + 30);
    status_has("step 1 of 3, back: bounce_rate 20.0% > 3%");
    replies(cfg, 20, 0);
    tick_at(clock_now() + AUTOPILOT_TICK);
    status_has("step 1 of 3, hold: step_after");
    route_shutdown();
    config_free(cfg);
}

/* A red signal before the first step has anything to step back to only starts the window
 * again; and a config without the autopilot forgets the stored step. */
static void test_pilot_restart_forgets(void **state)
{
    (void)state;
    struct config *cfg = load_text(pilot_config);
    assert_non_null(cfg);
    start(cfg);
    tick_at(T0);
    status_has("step 1 of 3, advance");
    route_shutdown();
    char text[sizeof pilot_config + 8];
    const char *on = strstr(pilot_config, "enabled: true");
    assert_non_null(on);
    snprintf(text, sizeof text, "%.*senabled: false%s", (int)(on - pilot_config), pilot_config,
             on + strlen("enabled: true"));
    struct config *off = load_text(text);
    assert_non_null(off);
    start(off);
    status_has("autopilot off");
    /* off: the calendar decides again (interpolation off: the step in force) */
    set_clock(T0 + DAY);
    status_has("effective weights: legacy=50.00% cloud=50.00%");
    route_shutdown();
    config_free(off);
    config_free(cfg);
}

/* ramp plan per group: the steps ahead no sooner than step_after apart, and the recipients per
 * hour each egress would carry at the rate of the last 7 days in records.db; too little history
 * says so and projects nothing. */
static void test_pilot_plan(void **state)
{
    (void)state;
    struct config *cfg = load_text(pilot_config);
    assert_non_null(cfg);
    set_clock(T0 + HOUR);
    start(cfg);
    tick_at(T0 + HOUR); /* step 1, taken now */
    /* records.db as the relay writes it: the columns the plan reads */
    char path[160], sql[600];
    sqlite3 *db = NULL;
    snprintf(path, sizeof path, "%s/state/records.db", tmpdir);
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db,
                                  "CREATE TABLE events (id INTEGER PRIMARY KEY, ts_us INTEGER, "
                                  "event TEXT, route_group TEXT, remote_mx TEXT)",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    struct strbuf out = STRBUF_INIT;
    assert_int_equal(route_control("plan", &out), 0);
    print_message("%s", strbuf_str(&out));
    assert_non_null(strstr(strbuf_str(&out), "group moving: step 1 of 3, autopilot on (at least "
                                             "1d 00h on a step"));
    assert_non_null(strstr(strbuf_str(&out), "volume: too little history (0 recipients"));
    assert_non_null(strstr(strbuf_str(&out), "step 2 earliest 2026-12-02T01:00:00Z "
                                             "legacy=50.00% cloud=50.00%\n"));
    assert_non_null(strstr(strbuf_str(&out), "step 3 earliest 2026-12-03T01:00:00Z"));

    /* a week of history: 10 recipients an hour routed in the group (and others outside it) */
    snprintf(sql, sizeof sql,
             "WITH RECURSIVE k(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM k WHERE n < 1679) "
             "INSERT INTO events (ts_us, event, route_group) SELECT (%lld - (n / 10 + 1) * "
             "3600) * 1000000, 'routed', 'moving' FROM k;"
             "INSERT INTO events (ts_us, event, route_group) VALUES (%lld000000, 'routed', "
             "'other');",
             (long long)clock_now(), (long long)clock_now() - 60);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    strbuf_reset(&out);
    assert_int_equal(route_control("plan", &out), 0);
    print_message("%s", strbuf_str(&out));
    assert_non_null(strstr(strbuf_str(&out), "volume: 10.0 recipients per hour (1680 over 168 h)"));
    assert_non_null(strstr(strbuf_str(&out), "legacy=50.00% cloud=50.00%; legacy 5.0/h, cloud "
                                             "5.0/h\n"));
    strbuf_reset(&out);
    assert_int_equal(route_control_json("plan --json", &out, NULL), 0);
    assert_non_null(strstr(strbuf_str(&out), "\"enough_history\":true,\"recipients_per_hour\":10"));
    strbuf_free(&out);
    route_shutdown();
    config_free(cfg);
}

/* The default group (ramp.from/to) with ramp.autopilot: its steps are the schedule's percents;
 * a reputation rule steps it back, rollback and pause win, a restart keeps the step. */
static const char default_config[] =
    "egress:\n"
    "  legacy: { type: direct }\n"
    "  cloud: { type: smarthost, host: 192.0.2.1 }\n"
    "ramp:\n"
    "  from: legacy\n"
    "  to: cloud\n"
    "  interpolate: true\n"
    "  schedule:\n"
    "    - { at: \"2026-12-01T00:00:00Z\", percent: 10 }\n"
    "    - { at: \"2026-12-02T00:00:00Z\", percent: 40 }\n"
    "    - { at: \"2026-12-03T00:00:00Z\", percent: 100 }\n"
    "  autopilot: { enabled: true, step_after: 1d, gates: { min_replies: 20 } }\n"
    "shaping:\n"
    "  - name: reputation\n"
    "    match: { code: 451, enhanced: 4.7.650 }\n"
    "    action: suspend\n"
    "    duration: 30m\n"
    "    reputation: true\n";

static void test_default_pilot(void **state)
{
    (void)state;
    struct config *cfg = load_text(default_config);
    assert_non_null(cfg);
    set_clock(T0);
    start(cfg);
    tick_at(T0);
    status_has("effective share: 10.00% (mode schedule)\nautopilot on, step 1 of 3, advance");
    /* the calendar (interpolated) would say 25 % by noon of the second day; the autopilot holds
     * on step 1 without replies */
    tick_at(T0 + DAY + DAY / 2);
    assert_true(route_share(clock_now()) == 10.0);
    status_has("hold: replies 0 < 20");
    replies(cfg, 30, 0);
    tick_at(clock_now() + AUTOPILOT_TICK);
    assert_true(route_share(clock_now()) == 40.0);
    route_feedback(config_find_egress(cfg, "cloud"), "other", 451, "4.7.650", "", clock_now());
    tick_at(clock_now() + AUTOPILOT_TICK);
    assert_true(route_share(clock_now()) == 10.0);
    status_has("step 1 of 3, back: reputation 1");
    /* rollback under the autopilot: the step before its own (none: 0 %); resume hands back */
    control_ok("rollback");
    assert_true(route_share(clock_now()) == 0.0);
    tick_at(clock_now() + AUTOPILOT_TICK);
    status_has("step 1 of 3, operator");
    control_ok("resume");
    assert_true(route_share(clock_now()) == 10.0);
    /* a restart keeps the step and the JSON says it */
    route_shutdown();
    start(cfg);
    assert_true(route_share(clock_now()) == 10.0);
    struct strbuf out = STRBUF_INIT;
    assert_int_equal(route_control_json("status --json", &out, NULL), 0);
    assert_non_null(strstr(strbuf_str(&out),
                           "\"autopilot\":{\"enabled\":true,\"step\":1,\"steps\":3,"
                           "\"verdict\":\"operator\""));
    strbuf_free(&out);
    route_shutdown();
    config_free(cfg);
}

static void test_pilot_config_errors(void **state)
{
    (void)state;
    struct config *cfg =
        load_text("egress:\n"
                  "  legacy: { type: direct }\n"
                  "ramp:\n"
                  "  from: legacy\n"
                  "  groups:\n"
                  "    - { name: a, egress: [legacy], autopilot: { enabled: true } }\n"
                  "    - { name: b, egress: [legacy], autopilot: { gates: { colour: 1 } } }\n"
                  "    - { name: c, egress: [legacy], autopilot: { gates: { max_bounce_rate: "
                  "101 } } }\n"
                  "    - { name: d, egress: [legacy], autopilot: { window: 2d } }\n"
                  "  autopilot: { enabled: true }\n");
    assert_null(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_pilot_dmarc_gate, setup, teardown),
        cmocka_unit_test(test_judge),
        cmocka_unit_test_setup_teardown(test_pilot_timeline, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pilot_red_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pilot_restart_forgets, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pilot_plan, setup, teardown),
        cmocka_unit_test_setup_teardown(test_default_pilot, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pilot_config_errors, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
