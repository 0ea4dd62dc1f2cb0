"""cluster_shared_autopilot.py - with two instances, one drives a route group's autopilot and the
other follows its step.

Two instances A and B (own spool, state and listen port; the same NSD, sink, clock file and
Redis) with the group "ms" (hotmail.test over legacy and cloud, three steps, the autopilot on):
  1. past the first step's time exactly one instance holds the lease `t:lease:autopilot:ms`
     and takes step 1 (its autopilot record says advance); the other records no move of its own
     and its `ramp status` shows step 1 learnt from the driver, and routes by it;
  2. the driver stops: its lease lapses and the other instance takes it over.
"""
import os

import harness as h

T0 = 1796000000  # 2026-11-30T00:53:20Z
HOUR = 3600


def iso(t):
    import time
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def test(env):
    h.need_binary(env)
    src = env.src
    clock = env.path("clock")
    with open(clock, "w") as fh:
        fh.write(f"{T0 + 60}\n")
    os.environ["OUTRELAY_TEST_CLOCK"] = clock  # inherited by both relays
    zones = h.default_zones()
    zones["hotmail.test"] = h.zone_text(
        "hotmail.test", "@ IN MX 10 hotmail-test.olc.protection.outlook.com.\n")
    zones["olc.protection.outlook.com"] = h.zone_text(
        "olc.protection.outlook.com", f"hotmail-test IN A {h.MX_EXAMPLE_NET}\n")
    nsd = h.Nsd(env, zones=zones)
    port = env.free_port(h.SINK_IPS + [h.LEGACY_IP, h.CLOUD_IP])
    sink = h.PySink(env, h.MX_EXAMPLE_NET, port, "pilot")
    redis = h.Redis(env)
    egress = {"legacy": {"type": "direct", "source": [h.LEGACY_IP],
                         "helo": "legacy.outrelay.test"},
              "cloud": {"type": "direct", "source": [h.CLOUD_IP], "helo": "cloud.outrelay.test"}}
    group = {"name": "ms", "match": {"rcpt_domains": ["hotmail.test"]},
             "egress": ["legacy", "cloud"], "key": ["rcpt"],
             "schedule": [{"at": iso(T0), "weights": {"legacy": 0, "cloud": 100}},
                          {"at": iso(T0 + HOUR), "weights": {"legacy": 50, "cloud": 50}},
                          {"at": iso(T0 + 2 * HOUR), "weights": {"legacy": 20, "cloud": 80}}],
             "autopilot": {"enabled": True, "window": "2h", "step_after": "1h",
                           "gates": {"min_replies": 3, "max_deferral_rate": 50}}}
    relays = {}
    for name in ("A", "B"):
        cfg = h.standard_config(
            env, nsd, port, egress=egress, retry=("1s",), spool=env.path(f"spool-{name}"),
            state=env.path(f"state-{name}"),
            cluster={"redis": redis.address, "instance": f"relay-{name}", "timeout": "1s",
                     "key_prefix": "t"},
            policies=[os.path.join(src, "policies/providers.yaml"),
                      os.path.join(src, "policies/shaping.yaml")])
        cfg["ramp"] = {"from": "legacy", "to": "cloud", "groups": [group]}
        relays[name] = h.Relay(env, cfg, name=f"relay{name}")

    def status(relay):
        r = relay.queue_like("ramp", "status")
        h.check(r.returncode == 0, f"ramp status failed: {r.stderr}")
        return r.stdout

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
