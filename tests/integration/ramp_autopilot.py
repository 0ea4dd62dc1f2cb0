"""ramp_autopilot.py - a route group's autopilot through the relay. Recipients at hotmail.test
(MX under olc.protection.outlook.com: provider microsoft-consumer by the shipped
policies/providers.yaml, with the shipped policies/shaping.yaml) form the group "ms" over
legacy (127.0.0.2) and cloud (127.0.0.3), keyed by recipient, with three steps (cloud 20 %,
50 %, 80 %) and the autopilot on (window 2h, step_after 1h, at least 3 replies). The calendar
moves with OUTRELAY_TEST_CLOCK:

  before the first step's time it holds (date); at it, it takes step 1; healthy replies from
  the sink let it take step 2 an hour later (green); then the sink answers cloud's DATA with
  Microsoft's "451 4.7.650 ... rate limited due to IP reputation" three times, the shipped
  ms-ip-reputation rule (marked reputation) suspends cloud x microsoft-consumer, and the
  autopilot steps back to step 1 (red); while the suspension is in force it holds; once the
  receiver has recovered and cloud's replies are healthy again it takes step 2 again.

`ramp status` and `ramp status --json` say the step, the verdict and the gate; the autopilot
records in records.db show the same timeline, which the test prints (quotable) and checks; a
restart keeps the step.
"""
import json
import os

import harness as h
from ramp_world import RampWorld

MS_REPLY = ("451 4.7.650 The mail server [127.0.0.3] has been temporarily rate limited due to "
            "IP reputation. For e-mail delivery information, see https://aka.ms/postmaster "
            "(S775)")
T0 = 1796000000  # 2026-11-30T00:53:20Z
HOUR = 3600


def iso(t):
    import time
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def test(env):
    h.need_binary(env)
    src = env.src
    zones = h.default_zones()
    zones["hotmail.test"] = h.zone_text(
        "hotmail.test", "@ IN MX 10 hotmail-test.olc.protection.outlook.com.\n")
    zones["olc.protection.outlook.com"] = h.zone_text(
        "olc.protection.outlook.com", f"hotmail-test IN A {h.MX_EXAMPLE_NET}\n")
    sinks = {"n": 0}

    def make_sink(env_, port, script=None):
        sinks["n"] += 1
        return h.PySink(env_, h.MX_EXAMPLE_NET, port, f"hotmail{sinks['n']}", script=script)

    group = {"name": "ms", "match": {"rcpt_domains": ["hotmail.test"]},
             "egress": ["legacy", "cloud"], "key": ["rcpt"],
             "schedule": [{"at": iso(T0), "weights": {"legacy": 80, "cloud": 20}},
                          {"at": iso(T0 + HOUR), "weights": {"legacy": 50, "cloud": 50}},
                          {"at": iso(T0 + 2 * HOUR), "weights": {"legacy": 20, "cloud": 80}}],
             "autopilot": {"enabled": True, "window": "2h", "step_after": "1h",
                           "gates": {"min_replies": 3, "max_deferral_rate": 50}}}
    w = RampWorld(env, {"from": "legacy", "to": "cloud", "groups": [group]},
                  policies=[os.path.join(src, "policies/providers.yaml"),
                            os.path.join(src, "policies/shaping.yaml")],
                  sink=make_sink, zones=zones, now=T0 - 600)
    delivered = []  # messages of sinks already stopped
    count = {"n": 0}

    def all_messages():
        return delivered + w.sink.messages()

    def swap_sink(script=None):
        delivered.extend(w.sink.messages())
        w.sink.stop()
        w.sink = make_sink(env, w.port, script)

    def send_batch(n_msgs=8, per_msg=8):
        """n_msgs messages of per_msg recipients each; waits until all arrived."""
        before = sum(len(m.rcpts) for m in all_messages())
        for _ in range(n_msgs):
            count["n"] += 1
            rcpts = [f"u{count['n']}-{i}@hotmail.test" for i in range(per_msg)]
            w.send(rcpts, f"m{count['n']}")
        env.wait_for(lambda: sum(len(m.rcpts) for m in all_messages()) >= before +
                     n_msgs * per_msg, 120, f"{n_msgs * per_msg} recipients delivered")

    def pilot():
        st = json.loads(w.ramp("status", "--json"))
        g = [x for x in st["groups"] if x["name"] == "ms"][0]
        return g["autopilot"], g["effective_weights"]

    last = {"id": 0}

    def wait_pilot(step, verdict, gate=None, what=""):
        """Until an autopilot record newer than the last one waited for says step and verdict
        (and gate), moving the calendar a minute on every round so that it judges again (it
        does once a minute of the relay's clock). Returns the status's autopilot object."""
        found = {}

        def ok():
            rows = w.relay.events("SELECT id, action, rule, detail FROM events WHERE "
                                  "event='autopilot' AND id > ? ORDER BY id", (last["id"],))
            for r in rows:
                if r["action"] == verdict and f"-> {step} of" in r["detail"] and \
                        (gate is None or (r["rule"] or "").startswith(gate)):
                    found["row"] = r
                    return True
            w.set_clock(w.now + 61)
            return False
        env.wait_for(ok, 120, f"an autopilot record: step {step} {verdict} {gate or ''} "
                     f"({what})", interval=3)
        last["id"] = found["row"]["id"]
        ap, weights = pilot()
        h.log(f"autopilot: {verdict} {gate or ''} -> step {step}: {what}; now weights {weights}")
        return ap

    # before the first step's time: hold on the calendar
    wait_pilot(0, "hold", "date", "before the first step")
    text = w.status()
    h.check("autopilot on, step 0 of 3, hold: date: the next step starts at" in text,
            f"ramp status does not say why it holds:\n{text}")
    # the first step at its time
    w.set_clock(T0)
    wait_pilot(1, "advance", None, "the first step at its time")
    # green: healthy replies on cloud, then step 2 once the hour is over
    send_batch()
    wait_pilot(1, "hold", "date", "healthy, but step 2 is not due yet")
    w.set_clock(T0 + HOUR + 120)
    ap = wait_pilot(2, "advance", None, "green: every gate holds")
    h.check(ap["step"] == 2 and ap["seen"]["replies"] >= 3 and ap["seen"]["deferred"] == 0,
            f"the advance should rest on healthy replies: {ap}")

    # red: the receiver starts answering cloud with 4.7.650
    swap_sink([{"on": "DATA", "peer": h.CLOUD_IP, "reply": MS_REPLY, "count": 3}])
    send_batch()  # deferred three times on cloud, then spilled to legacy
    h.check(len([r for r in w.sink.replies() if "4.7.650" in r["reply"]]) == 3,
            "the sink should have answered 4.7.650 three times")
    wait_pilot(1, "back", "reputation", "red: a reputation suspension")
    _, weights = pilot()
    h.check(abs(weights["cloud"] - 20) < 0.01, f"back to step 1 means cloud 20 %: {weights}")
    # while the suspension is in force: hold
    wait_pilot(1, "hold", "shaping_in_force", "the suspension is in force")
    text = w.status()
    h.check("hold: shaping_in_force" in text, f"ramp status does not say why it holds:\n{text}")

    # the restart keeps the step
    w.relay.restart()
    ap, _ = pilot()
    h.check(ap["step"] == 1, f"after a restart the autopilot should still be on step 1: {ap}")

    # recovery: the receiver is healthy again; the suspension and its recovery end
    swap_sink()
    w.set_clock(w.now + 4 * HOUR)
    wait_pilot(1, "hold", "replies", "the suspension is over, no replies yet")
    send_batch()
    ap = wait_pilot(2, "advance", None, "resumed: healthy again")

    rows = w.relay.events("SELECT ts_us, action, rule, detail FROM events WHERE "
                          "event='autopilot' ORDER BY id")
    timeline = [f"{iso(r['ts_us'] // 1000000)} {r['action']:8} {r['detail']}" for r in rows]
    h.log("autopilot timeline from records.db:\n  " + "\n  ".join(timeline))
    verdicts = [r["action"] for r in rows]
    h.check(verdicts[:2] == ["hold", "advance"], f"the timeline should start hold, advance: "
            f"{verdicts}")
    order = ["advance", "back", "hold", "advance"]
    i = 0
    for v in verdicts[2:]:
        if i < len(order) and v == order[i]:
            i += 1
    h.check(i == len(order), f"the records should show advance, back, hold, advance: {verdicts}")
    h.check(any(r["action"] == "back" and r["rule"] == "reputation" for r in rows),
            "the step back should name the reputation gate")

    # ramp plan: the step ahead no sooner than step_after after the last move; a few hours of
    # history are too little to project volumes from, and it says so
    plan = w.ramp("plan")
    h.log("ramp plan:\n" + plan)
    h.check("group ms: step 2 of 3, autopilot on (at least 1h 00m on a step" in plan and
            "volume: too little history" in plan and
            "step 3 earliest " in plan,
            f"ramp plan does not show the group's plan:\n{plan}")
    pj = json.loads(w.ramp("plan", "--json"))
    g = pj["groups"][0]
    h.check(g["name"] == "ms" and g["autopilot"] and g["step"] == 2 and
            not g["enough_history"] and g["routed"] > 0 and
            [s["step"] for s in g["steps_ahead"]] == [3],
            f"ramp plan --json does not show the group's plan: {g}")

    # the ramp report: the group's planned vs actual share per egress per hour, and the
    # autopilot's history; the HTML report carries both tables
    rep = json.loads(w.relay.queue_like("report", "ramp", "--json").stdout)["tables"]
    cloud = [r for r in rep["groups"] if r["group"] == "ms" and r["egress"] == "cloud"]
    h.log("report ramp, group ms, cloud per hour: " +
          "; ".join(f"{r['hour']} planned {r['planned_pct']:.0f}% actual {r['actual_pct']:.1f}% "
                    f"of {r['routed']}" for r in cloud))
    planned = {round(r["planned_pct"]) for r in cloud}
    h.check({20, 50} <= planned and all(0 < r["actual_pct"] < 100 for r in cloud),
            f"the report should show cloud planned at 20 % and 50 % with real shares: {cloud}")
    h.check([r["verdict"] for r in rep["autopilot"]] == verdicts,
            f"the report's autopilot history differs from the records: {rep['autopilot']}")
    page = env.path("report.html")
    r = w.relay.queue_like("report", "html", "-o", page)
    h.check(r.returncode == 0, f"report html failed: {r.stderr}")
    html = open(page).read()
    h.check('data-table="groups"' in html and 'data-table="autopilot"' in html and
            "reputation" in html, "the HTML report lacks the route group and autopilot tables")
    w.relay.stop()


if __name__ == "__main__":
    h.main(test)
