"""ramp_control.py - `outrelay ramp pause|set|rollback|resume` act on the running daemon (no
restart): status and routing follow at once, and every override is recorded.
Schedule: 10 % two days ago, 40 % since yesterday (the clock is injected)."""
import time

import harness as h
from ramp_world import DAY, RampWorld, share_line

T0 = 1796000000


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def test(env):
    h.need_binary(env)
    w = RampWorld(env, {"from": "legacy", "to": "cloud", "key": ["rcpt"],
                        "schedule": [{"at": iso(T0 - 2 * DAY), "percent": 10},
                                     {"at": iso(T0 - DAY), "percent": 40},
                                     {"at": iso(T0 + 5 * DAY), "percent": 90}]},
                  now=T0, extra={"limits": {"max_recipients": 1000}})
    h.check(abs(share_line(w.status()) - 40) < 0.01, "the schedule says 40 % now")

    def send_and_share(tag, n=1000):
        before = len(w.egress_by_rcpt())
        rcpts = [f"{tag}{i}@example.net" for i in range(n)]
        w.send(rcpts, tag)
        env.wait_for(lambda: len(w.egress_by_rcpt()) == before + n, 90, f"{tag} at the sink")
        seen = w.egress_by_rcpt()
        return sum(1 for r in rcpts if seen[r][0] == "cloud") / n

    w.ramp("set", "80")
    h.check(abs(share_line(w.status()) - 80) < 0.01, "set 80 not in force")
    s = send_and_share("set")
    h.check(abs(s - 0.80) <= 0.04, f"after set 80 the cloud share is {s:.3f}")

    w.ramp("rollback")
    h.check(abs(share_line(w.status()) - 10) < 0.01,
            f"rollback should pin the previous step (10 %): {w.status()}")
    s = send_and_share("rollback")
    h.check(abs(s - 0.10) <= 0.03, f"after rollback the cloud share is {s:.3f}")

    w.ramp("resume")
    w.ramp("pause")
    w.set_clock(T0 + 6 * DAY)  # the schedule says 90 % now, but we are paused at 40 %
    h.check(abs(share_line(w.status()) - 40) < 0.01, f"pause did not freeze: {w.status()}")
    s = send_and_share("pause")
    h.check(abs(s - 0.40) <= 0.04, f"while paused the cloud share is {s:.3f}")
    w.ramp("resume")
    h.check(abs(share_line(w.status()) - 90) < 0.01, f"resume should follow the schedule")

    actions = [r["action"] for r in w.relay.events("SELECT action FROM events WHERE "
                                                   "event='ramp' ORDER BY ts_us")]
    h.check(actions == ["set 80", "rollback", "resume", "pause", "resume"],
            f"overrides on the record: {actions}")
    w.relay.stop()


if __name__ == "__main__":
    h.main(test)
