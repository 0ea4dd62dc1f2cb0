"""ramp_split_sticky.py - the ramp splits by share and sticks: 10,000 recipients with distinct
routing keys (ramp.key: [rcpt]) at 30 % reach the sink through the cloud egress 30 % ± 2 % of
the time; sending the same keys again puts every key on the egress it had; after
`outrelay ramp set 50` (no restart) no key that went to cloud goes to legacy, and the share is
50 % ± 2 %. Every recipient's routing is recorded with the ramp percentage.
"""
import harness as h
from ramp_world import RampWorld, share_line

KEYS = 10000
PER_MESSAGE = 500


def send_round(w, tag):
    rcpts = [f"u{i}@example.net" for i in range(KEYS)]
    for n in range(0, KEYS, PER_MESSAGE):
        w.send(rcpts[n:n + PER_MESSAGE], f"{tag}-{n}")


def test(env):
    h.need_binary(env)
    now = 1796000000
    w = RampWorld(env, {"from": "legacy", "to": "cloud", "key": ["rcpt"],
                        "schedule": [{"at": "2026-01-01T00:00:00Z", "percent": 30}]},
                  now=now, extra={"limits": {"max_recipients": 1000}})

    def rounds_done(k):
        seen = w.egress_by_rcpt()
        return len(seen) == KEYS and all(len(v) >= k for v in seen.values())

    send_round(w, "r1")
    env.wait_for(lambda: rounds_done(1), 300, "round 1 at the sink")
    first = {r: v[0] for r, v in w.egress_by_rcpt().items()}
    share = sum(1 for v in first.values() if v == "cloud") / KEYS
    h.log(f"round 1 at 30 %: cloud share {share:.4f}")
    h.check(abs(share - 0.30) <= 0.02, f"cloud share {share:.4f} is not 30 % +- 2 %")

    send_round(w, "r2")
    env.wait_for(lambda: rounds_done(2), 300, "round 2 at the sink")
    moved = [r for r, v in w.egress_by_rcpt().items() if v[1] != first[r]]
    h.check(not moved, f"{len(moved)} keys changed egress at the same percentage: {moved[:5]}")

    out = w.ramp("set", "50")
    h.check("50" in out, f"ramp set 50 answered: {out}")
    h.check(abs(share_line(w.status()) - 50) < 0.001, "status does not show 50 %")
    send_round(w, "r3")
    env.wait_for(lambda: rounds_done(3), 300, "round 3 at the sink")
    third = {r: v[2] for r, v in w.egress_by_rcpt().items()}
    back = [r for r in third if first[r] == "cloud" and third[r] == "legacy"]
    h.check(not back, f"{len(back)} keys went back from cloud to legacy after raising the share")
    share3 = sum(1 for v in third.values() if v == "cloud") / KEYS
    h.log(f"round 3 at 50 %: cloud share {share3:.4f}")
    h.check(abs(share3 - 0.50) <= 0.02, f"cloud share {share3:.4f} is not 50 % +- 2 %")

    rows = w.relay.events("SELECT ramp_percent, egress, COUNT(*) AS n FROM events "
                          "WHERE event='routed' GROUP BY ramp_percent, egress")
    h.log(f"routed events: {rows}")
    pct = {(r["ramp_percent"], r["egress"]) for r in rows}
    h.check((30.0, "cloud") in pct and (50.0, "cloud") in pct,
            f"routing not recorded with the ramp percentage: {rows}")
    ramp_events = w.relay.events("SELECT action FROM events WHERE event='ramp'")
    h.check(any("set 50" in (r["action"] or "") for r in ramp_events),
            f"the override is not on the record: {ramp_events}")
    w.relay.stop()


if __name__ == "__main__":
    h.main(test)
