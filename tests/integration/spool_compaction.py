"""spool_compaction.py - one long-deferred message does not pin the whole spool. With small
segments (OUTRELAY_SPOOL_SEGMENT_BYTES) a message whose MX is down stays queued
while hundreds of others pass through; compaction moves it forward, so the number of segment
files stays small. After kill -9 and a restart the deferred message is still queued (and held
state survives), nothing already delivered is delivered again, and when its MX finally accepts
it arrives exactly once."""
import glob
import os

import harness as h


def test(env):
    h.need_binary(env)
    os.environ["OUTRELAY_SPOOL_SEGMENT_BYTES"] = "20000"
    nsd = h.Nsd(env)
    port = env.free_port(h.SINK_IPS + [h.LEGACY_IP])
    # example.com's MX (127.0.0.31) is down until the end: its message stays deferred
    sink = h.SmtpSink(env, h.MX_EXAMPLE_NET, port, "example.net")
    relay = h.Relay(env, h.standard_config(env, nsd, port, retry=("1s",)))

    def send(rcpt, tag):
        res = h.send(relay.host, relay.port, "a@example.org", [rcpt],
                     h.make_message("a@example.org", rcpt, tag, message_id=f"<{tag}@c.test>",
                                    body=("x" * 70 + "\r\n") * 21))
        h.check(res.accepted, f"{tag}: {res}")
        return res.queue_id

    stuck = send("stuck@example.com", "stuck")
    env.wait_for(lambda: relay.events("SELECT 1 FROM events WHERE event='deferred'"), 30,
                 "the first deferral")
    for i in range(300):
        send(f"u{i}@example.net", f"m{i}")
    env.wait_for(lambda: len(sink.messages()) == 300, 120, "300 deliveries")
    spool = env.path("spool")
    env.wait_for(lambda: len(glob.glob(os.path.join(spool, "seg-*.log"))) <= 8, 60,
                 lambda: f"compaction (segments now: "
                         f"{len(glob.glob(os.path.join(spool, 'seg-*.log')))})")
    segs = len(glob.glob(os.path.join(spool, "seg-*.log")))
    h.log(f"segments after 300 messages with one stuck: {segs}")
    h.check(relay.events("SELECT 1 FROM events WHERE event='deferred'"), "no deferral seen")

    relay.queue("hold", stuck)
    relay.kill9()
    relay.start()
    listing = relay.queue("list").stdout
    h.check(f"{stuck}!" in listing, f"the stuck message (held) did not survive:\n{listing}")
    h.check("1 message in the queue" in listing, f"delivered mail came back:\n{listing}")

    ok_sink = h.PySink(env, h.MX_EXAMPLE_COM, port, "example.com")
    relay.queue("release", stuck)
    env.wait_for(lambda: ok_sink.messages(), 30, "the stuck message, at last")
    import time
    time.sleep(2)
    h.check(len(ok_sink.messages()) == 1, "the stuck message arrived more than once")
    h.check(len(sink.messages()) == 300, f"{len(sink.messages())} at example.net: a delivered "
                                         f"message came back after the restart")
    relay.stop()


if __name__ == "__main__":
    h.main(test)
