"""ramp_clock_restart.py - the ramp share is a pure function of the schedule, the clock and the
operator's overrides. With an interpolated schedule (0 % -> 100 % over ten days) and an
injected clock (OUTRELAY_TEST_CLOCK) the share follows the schedule, a restart keeps it, an
override (pause) survives a restart, and `resume` returns to the schedule. Traffic sent at 30 %
splits accordingly.
"""
import harness as h
from ramp_world import DAY, RampWorld, share_line

T0 = 1796000000  # 2026-12-01 ... the schedule starts here


def iso(t):
    import time
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def test(env):
    h.need_binary(env)
    w = RampWorld(env, {"from": "legacy", "to": "cloud", "key": ["rcpt"], "interpolate": True,
                        "schedule": [{"at": iso(T0), "percent": 0},
                                     {"at": iso(T0 + 10 * DAY), "percent": 100}]},
                  now=T0 + 3 * DAY, extra={"limits": {"max_recipients": 1000}})
    s = share_line(w.status())
    h.check(abs(s - 30) < 0.01, f"at day 3 of 10 the share should be 30 %, status says {s}")

    rcpts = [f"k{i}@example.net" for i in range(2000)]
    for n in range(0, len(rcpts), 500):
        w.send(rcpts[n:n + 500], f"day3-{n}")
    env.wait_for(lambda: len(w.egress_by_rcpt()) == len(rcpts), 120, "delivery at day 3")
    cloud = sum(1 for v in w.egress_by_rcpt().values() if v[0] == "cloud") / len(rcpts)
    h.log(f"cloud share at 30 %: {cloud:.3f}")
    h.check(abs(cloud - 0.30) <= 0.03, f"cloud share {cloud:.3f} is not about 30 %")

    w.set_clock(T0 + 6 * DAY + DAY // 2)
    s = share_line(w.status())
    h.check(abs(s - 65) < 0.01, f"at day 6.5 the share should be 65 %, status says {s}")
    w.relay.restart()
    s = share_line(w.status())
    h.check(abs(s - 65) < 0.01, f"after a restart the share should still be 65 %, got {s}")

    w.ramp("pause")
    w.set_clock(T0 + 8 * DAY)
    s = share_line(w.status())
    h.check(abs(s - 65) < 0.01, f"paused at 65 %, the share moved to {s}")
    w.relay.restart()
    status = w.status()
    h.check(abs(share_line(status) - 65) < 0.01 and "pause" in status,
            f"the pause did not survive a restart:\n{status}")
    w.ramp("resume")
    s = share_line(w.status())
    h.check(abs(s - 80) < 0.01, f"after resume at day 8 the share should be 80 %, got {s}")
    events = [r["action"] for r in w.relay.events("SELECT action FROM events WHERE event='ramp'")]
    h.check(any(a.startswith("pause") for a in events) and
            any(a.startswith("resume") for a in events), f"overrides not recorded: {events}")
    w.relay.stop()


if __name__ == "__main__":
    h.main(test)
