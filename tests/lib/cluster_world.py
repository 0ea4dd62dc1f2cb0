"""cluster_world.py - the shared set-up of the tests of state shared between two relay
instances: one NSD (hotmail.test under olc.protection.outlook.com, so microsoft-consumer by the
shipped policies), one Python sink on mx.example.net's address (optionally scripted), one Redis
and two instances A and B (own spool, state and listen port; instance names relay-A and
relay-B, key prefix "t") with two egresses (legacy 127.0.0.2, cloud 127.0.0.3), the shipped
policies, and a clock file both read (OUTRELAY_TEST_CLOCK, see outrelay/common/clock.h)."""
import json
import os
import time

import harness as h

HOUR = 3600


def cluster_status(relay):
    """`outrelay cluster status --json` of one instance, as a dict."""
    r = relay.queue_like("cluster", "status", "--json")
    h.check(r.returncode == 0, f"cluster status failed: {r.stderr}")
    return json.loads(r.stdout)


def wait_all_seen(relays, n=2, timeout=30):
    """Waits until every instance has Redis up and sees n instances (heartbeats)."""
    def seen(relay):
        r = relay.queue_like("cluster", "status", "--json")
        st = json.loads(r.stdout) if r.returncode == 0 else {}
        return st.get("state") == "up" and st.get("instances_seen") == n

    for r in relays:
        r.wait_for(lambda r=r: seen(r), timeout, f"{n} instances seen through redis")


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


class TwoInstances:
    def __init__(self, env, ramp, now, script=None, metrics_on=None):
        self.env = env
        self.clock_path = env.path("clock")
        self.set_clock(now)
        os.environ["OUTRELAY_TEST_CLOCK"] = self.clock_path  # inherited by both relays
        zones = h.default_zones()
        zones["hotmail.test"] = h.zone_text(
            "hotmail.test", "@ IN MX 10 hotmail-test.olc.protection.outlook.com.\n")
        zones["olc.protection.outlook.com"] = h.zone_text(
            "olc.protection.outlook.com", f"hotmail-test IN A {h.MX_EXAMPLE_NET}\n")
        self.nsd = h.Nsd(env, zones=zones)
        port = env.free_port(h.SINK_IPS + [h.LEGACY_IP, h.CLOUD_IP])
        self.sink = h.PySink(env, h.MX_EXAMPLE_NET, port, "shared", script=script)
        self.redis = h.Redis(env)
        self.metrics_port = env.free_port([h.RELAY_IP]) if metrics_on else None
        egress = {"legacy": {"type": "direct", "source": [h.LEGACY_IP],
                             "helo": "legacy.outrelay.test"},
                  "cloud": {"type": "direct", "source": [h.CLOUD_IP],
                            "helo": "cloud.outrelay.test"}}
        self.relays = {}
        for name in ("A", "B"):
            cfg = h.standard_config(
                env, self.nsd, port, egress=egress, retry=("1s",),
                spool=env.path(f"spool-{name}"), state=env.path(f"state-{name}"),
                cluster={"redis": self.redis.address, "instance": f"relay-{name}",
                         "timeout": "1s", "key_prefix": "t"},
                policies=[os.path.join(env.src, "policies/providers.yaml"),
                          os.path.join(env.src, "policies/shaping.yaml")])
            cfg["ramp"] = dict(ramp)
            cfg["providers"] = {"testprov": {"mx_suffixes": ["mx.example.net"],
                                             "source": "test world"}}
            if name == metrics_on:
                cfg["metrics"] = {"listen": f"127.0.0.1:{self.metrics_port}"}
            self.relays[name] = h.Relay(env, cfg, name=f"relay{name}")

    def set_clock(self, t):
        tmp = self.clock_path + ".tmp"
        with open(tmp, "w") as fh:
            fh.write(f"{int(t)}\n")
        os.replace(tmp, self.clock_path)

    def status(self, relay):
        r = relay.queue_like("ramp", "status")
        h.check(r.returncode == 0, f"ramp status failed: {r.stderr}")
        return r.stdout

    def ramp(self, relay, *args):
        r = relay.queue_like("ramp", *args)
        h.check(r.returncode == 0, f"ramp {' '.join(args)} failed: {r.stdout}{r.stderr}")
        return r.stdout

    def send(self, relay, rcpt, tag):
        """One message to rcpt; returns its Message-ID."""
        msgid = f"<{tag}@shared.test>"
        res = h.send(relay.host, relay.port, "sender@example.org", [rcpt],
                     h.make_message("sender@example.org", rcpt, tag, message_id=msgid))
        h.check(res.accepted, f"{tag}: not accepted: {res}")
        return msgid

    def arrived(self, msgid):
        """The egresses ("legacy", "cloud") the copies of msgid came through."""
        names = {h.LEGACY_IP: "legacy", h.CLOUD_IP: "cloud"}
        return [names.get(m.client_addr, m.client_addr) for m in self.sink.messages()
                if m.message_id == msgid]
