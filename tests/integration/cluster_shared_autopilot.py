"""cluster_shared_autopilot.py - with two instances, one drives a route group's autopilot and the
other follows its step.

Two instances A and B (own spool, state and listen port; the same NSD, sink, clock file and
Redis) with the group "ms" (hotmail.test over legacy and cloud, three steps, the autopilot on):
  1. past the first step's time exactly one instance holds the lease `t:lease:autopilot:ms`
     and takes step 1 (its autopilot record says advance); the other records no move of its own
     and its `ramp status` shows step 1 learnt from the driver, and routes by it;
  2. the driver stops: its lease lapses and the other instance takes it over.
"""
import harness as h
from cluster_world import HOUR, TwoInstances, iso

T0 = 1796000000  # 2026-11-30T00:53:20Z


def test(env):
    h.need_binary(env)
    group = {"name": "ms", "match": {"rcpt_domains": ["hotmail.test"]},
             "egress": ["legacy", "cloud"], "key": ["rcpt"],
             "schedule": [{"at": iso(T0), "weights": {"legacy": 0, "cloud": 100}},
                          {"at": iso(T0 + HOUR), "weights": {"legacy": 50, "cloud": 50}},
                          {"at": iso(T0 + 2 * HOUR), "weights": {"legacy": 20, "cloud": 80}}],
             "autopilot": {"enabled": True, "window": "2h", "step_after": "1h",
                           "gates": {"min_replies": 3, "max_deferral_rate": 50}}}
    world = TwoInstances(env, {"from": "legacy", "to": "cloud", "groups": [group]}, now=T0 + 60)
    relays, redis, sink, status = world.relays, world.redis, world.sink, world.status

    def holder():
        v = redis.cli("GET", "t:lease:autopilot:ms")
        return v[0] if v and v[0] else None

    env.wait_for(holder, 30, "an instance to take the autopilot's lease")
    driver, follower = (relays["A"], relays["B"]) if holder() == "relay-A" else \
        (relays["B"], relays["A"])
    h.log(f"driver {driver.name}, follower {follower.name}")
    for r in (driver, follower):
        r.wait_for(lambda r=r: "autopilot on, step 1 of 3" in status(r), 30,
                   f"{r.name} at step 1")
    moves = lambda r: r.events("SELECT action FROM events WHERE event='autopilot' AND "
                               "action='advance'")
    h.check(len(moves(driver)) == 1, f"the driver's advance records: {moves(driver)}")
    h.check(not follower.events("SELECT 1 FROM events WHERE event='autopilot'"),
            "the follower judged the group itself")
    # the follower routes by the driver's step (all on cloud), not by its own (-1: all on legacy)
    res = h.send(follower.host, follower.port, "sender@example.org", ["x@hotmail.test"],
                 h.make_message("sender@example.org", "x@hotmail.test", "pilot",
                                message_id="<pilot@shared.test>"))
    h.check(res.accepted, f"not accepted: {res}")
    env.wait_for(lambda: sink.messages(), 60, "the follower's message")
    h.check(sink.messages()[0].client_addr == h.CLOUD_IP,
            f"the follower ignored the driver's step: {sink.messages()[0].client_addr}")

    # 2. the driver goes away: its lease lapses, the follower takes it
    driver.stop()
    env.wait_for(lambda: holder() == f"relay-{follower.name[-1]}", 90,
                 "the follower to take the lease over")
    follower.stop()
    redis.stop()


if __name__ == "__main__":
    h.main(test)
