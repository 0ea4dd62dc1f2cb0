"""ramp_world.py - the shared set-up of the ramp tests: two direct egresses (legacy from
127.0.0.2, cloud from 127.0.0.3), recipients at example.net whose MX (mx.example.net) belongs
to the test provider "testprov", a sink that records which egress each recipient arrived
from, and a clock file every component of the relay reads (OUTRELAY_TEST_CLOCK, see
outrelay/common/clock.h)."""
import os

import harness as h

DAY = 86400


class RampWorld:
    def __init__(self, env, ramp, caps=None, shaping=None, policies=None, sink=None,
                 zones=None, now=1796000000, extra=None):
        self.env = env
        self.clock_path = env.path("clock")
        self.set_clock(now)
        os.environ["OUTRELAY_TEST_CLOCK"] = self.clock_path   # inherited by the relay
        self.nsd = h.Nsd(env, zones=zones)
        self.port = env.free_port(h.SINK_IPS + [h.LEGACY_IP, h.CLOUD_IP])
        self.sink = sink(env, self.port) if sink else h.SmtpSink(env, h.MX_EXAMPLE_NET,
                                                                 self.port, "example.net")
        egress = {"legacy": {"type": "direct", "source": [h.LEGACY_IP],
                             "helo": "legacy.outrelay.test"},
                  "cloud": {"type": "direct", "source": [h.CLOUD_IP],
                            "helo": "cloud.outrelay.test"}}
        cfg = h.standard_config(env, self.nsd, self.port, egress=egress, ramp_from="legacy",
                                retry=("1s",))
        cfg["ramp"] = dict(ramp)
        cfg["providers"] = {"testprov": {"mx_suffixes": ["mx.example.net"],
                                         "source": "test world"}}
        if caps:
            cfg["caps"] = caps
        if shaping:
            cfg["shaping"] = shaping
        if policies:
            cfg["policies"] = policies
        cfg.update(extra or {})
        self.relay = h.Relay(env, cfg)

    def set_clock(self, t):
        self.now = int(t)
        tmp = self.clock_path + ".tmp"
        with open(tmp, "w") as fh:
            fh.write(f"{self.now}\n")
        os.replace(tmp, self.clock_path)

    def send(self, rcpts, tag, sender="sender@example.org", source_addr=None):
        """One message to many recipients; returns its queue id."""
        msgid = f"<{tag}@ramp.test>"
        res = h.send(self.relay.host, self.relay.port, sender, rcpts,
                     h.make_message(sender, rcpts[0], tag, message_id=msgid),
                     source_addr=source_addr)
        h.check(res.accepted, f"{tag}: not accepted: {res}")
        return res.queue_id

    def egress_by_rcpt(self):
        """{recipient: set of egress names it arrived from} over everything the sink has."""
        names = {h.LEGACY_IP: "legacy", h.CLOUD_IP: "cloud"}
        seen = {}
        for m in self.sink.messages():
            for r in m.rcpts:
                seen.setdefault(r.lower(), []).append(names.get(m.client_addr, m.client_addr))
        return seen

    def status(self):
        r = self.relay.queue_like("ramp", "status")
        h.check(r.returncode == 0, f"ramp status failed: {r.stderr}")
        return r.stdout

    def ramp(self, *args):
        r = self.relay.queue_like("ramp", *args)
        h.check(r.returncode == 0, f"ramp {' '.join(args)} failed: {r.stdout}{r.stderr}")
        return r.stdout


def share_line(status):
    for line in status.splitlines():
        if line.startswith("effective share:"):
            return float(line.split(":", 1)[1].split("%")[0])
    h.fail(f"no effective share in ramp status:\n{status}")
