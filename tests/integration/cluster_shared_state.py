"""cluster_shared_state.py - two relay instances share their shaping suspensions and ramp
overrides through one Redis server (cluster:), and keep them when it goes away.

Two instances A and B (own spool, state and listen port; the same NSD, sink, clock file and
Redis), two egresses (legacy 127.0.0.2, cloud 127.0.0.3), the ramp at 100 % on cloud, the
shipped policies (hotmail.test is microsoft-consumer):
  1. the sink answers cloud's first three DATA with Microsoft's 4.7.650: A suspends cloud x
     microsoft-consumer; B learns it within seconds (a `shaping` record naming relay-A, `ramp
     status` shows it) and B's next hotmail.test message leaves through legacy at its first try
     (without the shared entry it would go through cloud, which the sink now accepts);
  2. `ramp set 0` on A: B's `ramp status` shows it and B's mail for example.net leaves through
     legacy; `ramp pause` on A pauses B;
  3. Redis killed: both keep relaying; `ramp set 100` on B meanwhile; Redis started again
     (empty): B records that it wrote its change back, A follows it (the latest change wins), the
     suspension is in Redis again (written back by both), and mail flows through both.
"""
import json
import urllib.request

import harness as h
from cluster_world import TwoInstances

MS_REPLY = ("451 4.7.650 The mail server [127.0.0.3] has been temporarily rate limited due to "
            "IP reputation. For e-mail delivery information, see https://aka.ms/postmaster "
            "(S775)")


def test(env):
    h.need_binary(env)
    t0 = 1796000000
    script = [{"on": "DATA", "peer": h.CLOUD_IP, "reply": MS_REPLY, "count": 3}]
    world = TwoInstances(env, {"from": "legacy", "to": "cloud",
                               "schedule": [{"at": "2026-01-01T00:00:00Z", "percent": 100}]},
                         now=t0, script=script, metrics_on="B")
    a, b = world.relays["A"], world.relays["B"]
    sink, redis, metrics_port = world.sink, world.redis, world.metrics_port
    status, ramp, send, arrived = world.status, world.ramp, world.send, world.arrived
    set_clock = world.set_clock

    def cluster_up(relay):
        r = relay.queue_like("cluster", "status")
        return "state: up" in r.stdout

    for r in (a, b):
        r.wait_for(lambda r=r: cluster_up(r), 30, "redis reachable")

    # 1. A's suspension reaches B
    first = send(a, "alice@hotmail.test", "first")
    env.wait_for(lambda: arrived(first), 90, "A's message, after the suspension")
    h.check(arrived(first) == ["legacy"], f"A's message came through {arrived(first)}")
    h.check(a.events("SELECT 1 FROM events WHERE event='shaping' AND action='suspend'"),
            "A did not record its suspension")
    learnt = lambda: b.events("SELECT egress, provider, rule, action, detail FROM events "
                              "WHERE event='shaping'")
    b.wait_for(learnt, 15, "B to learn A's suspension")
    row = learnt()[0]
    h.check((row["egress"], row["provider"], row["rule"], row["action"]) ==
            ("cloud", "microsoft-consumer", "ms-ip-reputation", "suspend") and
            "relay-A" in row["detail"] and "learnt from the cluster" in row["detail"],
            f"B's record of the learnt suspension: {row}")
    h.check("ms-ip-reputation" in status(b), f"B's ramp status lacks it:\n{status(b)}")
    h.check(redis.cli("HGET", "t:state:shaping:ms-ip-reputation:cloud:microsoft-consumer",
                      "by") == ["relay-A"], "the suspension is not in redis")
    second = send(b, "bob@hotmail.test", "second")
    env.wait_for(lambda: arrived(second), 60, "B's message during the suspension")
    h.check(arrived(second) == ["legacy"],
            f"B's message for the suspended pair came through {arrived(second)}")
    h.check(not b.events("SELECT 1 FROM events WHERE event='deferred'"),
            "B's message was deferred: B tried cloud although A's suspension was shared")
    replies = [r for r in sink.replies() if "4.7.650" in r["reply"]]
    h.check(len(replies) == 3, f"the sink gave {len(replies)} throttling replies, expected 3")
    # B did not publish the learnt entry as its own (no echo)
    h.check(redis.cli("HGET", "t:state:shaping:ms-ip-reputation:cloud:microsoft-consumer",
                      "by") == ["relay-A"], "B re-published A's suspension as its own")

    # 2. ramp set and pause on A reach B
    ramp(a, "set", "0")
    b.wait_for(lambda: "mode set" in status(b), 15, "B to follow A's ramp set")
    h.check("effective share: 0.00%" in status(b), f"B's share after set 0:\n{status(b)}")
    h.check(b.events("SELECT 1 FROM events WHERE event='ramp' AND detail LIKE '%relay-A%'"),
            "B has no ramp record of the learnt override")
    third = send(b, "carol@example.net", "third")
    env.wait_for(lambda: arrived(third), 60, "B's message after ramp set 0")
    h.check(arrived(third) == ["legacy"], f"B's routing ignored set 0: {arrived(third)}")
    ramp(a, "pause")
    b.wait_for(lambda: "mode pause" in status(b), 15, "B to follow A's pause")

    # 3. Redis gone: both relay; B's change made meanwhile wins when it is back
    redis.stop()
    for r in (a, b):
        r.wait_for(lambda r=r: r.events("SELECT 1 FROM events WHERE event='cluster' AND "
                                        "action='down'"), 30, "the cluster down record")
    set_clock(t0 + 900)  # B's change is later than A's pause; the suspension still holds
    ramp(b, "set", "100")
    pending = json.loads(b.queue_like("cluster", "status", "--json").stdout)["state_pending"]
    h.check(pending >= 1, f"B's change made without redis is not pending: {pending}")
    out_a = send(a, "dave@example.net", "outage-a")
    out_b = send(b, "erin@example.net", "outage-b")
    env.wait_for(lambda: arrived(out_a) and arrived(out_b), 60, "both relaying without redis")
    h.check(arrived(out_a) == ["legacy"] and arrived(out_b) == ["cloud"],
            f"local state during the outage: A {arrived(out_a)} (paused at 0), "
            f"B {arrived(out_b)} (set 100)")
    h.check("mode pause" in status(a), "A changed its ramp without redis")
    redis.start()
    b.wait_for(lambda: b.events("SELECT 1 FROM events WHERE event='cluster' AND "
                                "action='reconciled'"), 30, "B's reconciliation record")
    a.wait_for(lambda: "mode set" in status(a) and "effective share: 100.00%" in status(a), 30,
               "A to follow B's change made during the outage")
    h.check("mode set" in status(b), f"B lost its own change:\n{status(b)}")
    b.wait_for(lambda: json.loads(b.queue_like("cluster", "status", "--json").stdout)
               ["state_pending"] == 0, 30, "B's pending state written back")
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10)
    text = text.read().decode()
    learnt = [l for l in text.splitlines() if l.startswith("outrelay_cluster_state_learnt_total ")]
    h.check(learnt and float(learnt[0].split()[1]) >= 3,
            f"B's metrics do not count what it learnt (suspension, set, pause): {learnt}")
    h.check("outrelay_cluster_state_pending 0" in text, "B's pending gauge is not 0")
    env.wait_for(lambda: redis.cli("HGET", "t:state:shaping:ms-ip-reputation:cloud:"
                                   "microsoft-consumer", "value") not in ([], [""]), 30,
                 "the suspension written back to redis")
    after = send(a, "frank@example.net", "after")
    env.wait_for(lambda: arrived(after), 60, "A's mail after the outage")
    h.check(arrived(after) == ["cloud"], f"A after reconciliation: {arrived(after)}")
    a.stop()
    b.stop()
    redis.stop()


if __name__ == "__main__":
    h.main(test)
