"""caps_spill_wait.py - per egress x provider caps: with the ramp at 100 % cloud and a cap of 5
messages an hour on cloud x testprov, message 6 spills to legacy; with legacy capped at 3 an
hour too, messages 9 and 10 wait in the queue (never bounced) and leave when the next hour
opens. Counters survive a restart.
"""
import harness as h
from ramp_world import RampWorld

HOUR = 3600


def test(env):
    h.need_binary(env)
    t0 = 1796000000 - 1796000000 % HOUR + 600  # ten minutes into an hour
    w = RampWorld(env, {"from": "legacy", "to": "cloud",
                        "schedule": [{"at": "2026-01-01T00:00:00Z", "percent": 100}]},
                  caps=[{"egress": "cloud", "provider": "testprov", "per_hour": 5},
                        {"egress": "legacy", "provider": "testprov", "per_hour": 3}],
                  now=t0)

    def by_egress():
        seen = w.egress_by_rcpt()
        out = {"cloud": 0, "legacy": 0}
        for v in seen.values():
            for e in v:
                out[e] = out.get(e, 0) + 1
        return out

    for i in range(6):
        w.send([f"c{i}@example.net"], f"cap-{i}")
    env.wait_for(lambda: sum(by_egress().values()) == 6, 60, "six deliveries")
    h.check(by_egress() == {"cloud": 5, "legacy": 1},
            f"expected 5 via cloud and 1 spilled to legacy, got {by_egress()}")

    w.relay.restart()  # the hour's counts must survive this
    for i in range(6, 10):
        w.send([f"c{i}@example.net"], f"cap-{i}")
    env.wait_for(lambda: sum(by_egress().values()) == 8, 60, "two more via legacy")
    import time
    time.sleep(3)
    h.check(by_egress() == {"cloud": 5, "legacy": 3},
            f"expected the cloud cap to hold across the restart and legacy to take 2 more, "
            f"got {by_egress()}")
    listing = w.relay.queue("list").stdout
    h.check("2 messages in the queue" in listing, f"two messages should wait:\n{listing}")
    waiting = w.relay.events("SELECT recipient FROM events WHERE event='routed' AND "
                             "action='wait'")
    h.check(len(waiting) == 2, f"the waits are not recorded: {waiting}")
    h.check(not w.relay.events("SELECT 1 FROM events WHERE event='bounced'"),
            "a message was bounced for a cap")

    w.set_clock(t0 + HOUR)  # the next hour opens
    w.relay.queue("flush")
    env.wait_for(lambda: sum(by_egress().values()) == 10, 90, "the waiting messages")
    h.check(by_egress()["cloud"] == 7, f"the waiting messages should leave via cloud: "
                                       f"{by_egress()}")
    w.relay.stop()


if __name__ == "__main__":
    h.main(test)
