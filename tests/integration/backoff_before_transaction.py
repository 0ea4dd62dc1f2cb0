"""backoff_before_transaction.py - a destination that fails before any transaction (a 421
greeting, a refused port) is backed off, not hammered: the relay opens a handful of connections
per minute, not thousands per second; every waiting recipient gets a `deferred` record with the
receiver's reply; the queue lifetime ends the wait with an expiry DSN; the relay's CPU stays low.

Receivers (each its own test domain, MX on the test MX port):
  busy.example     a listener that counts connections, answers "421 4.3.2 busy" and hangs up
  closed.example   an address where nothing listens (connection refused)
example.org's MX (127.0.0.20) is an smtp-sink that receives the DSNs. delivery.retry is 1s, 2s,
4s and max_lifetime 15s, so the back-off must grow and the messages must expire within ~25 s.
Before the fix: 122,088 connections in 12 s to the 421 listener, 0 of 3 messages expired.
"""
import time

import harness as h

BUSY_IP, CLOSED_IP = "127.0.0.53", "127.0.0.54"
RCPTS_PER_DOMAIN = 3


class Busy421:
    """Accepts, says 421, closes; counts connections (per second, for the log)."""

    def __init__(self, ip, port):
        self.times = []
        self.listener = h.RawListener(ip, port, self._connection, backlog=512)

    def _connection(self, c):
        self.times.append(time.monotonic())
        try:
            c.sendall(b"421 4.3.2 busy, try later\r\n")
        except OSError:
            pass
        c.close()

    def stop(self):
        self.listener.stop()


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as fh:
        f = fh.read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / 100.0


def test(env):
    h.need_binary(env)
    zones = h.default_zones()
    zones["busy.example"] = h.zone_with_mx("busy.example", BUSY_IP)
    zones["closed.example"] = h.zone_with_mx("closed.example", CLOSED_IP)
    nsd = h.Nsd(env, zones=zones)
    mx_port = env.free_port(h.SINK_IPS + [BUSY_IP, CLOSED_IP, h.LEGACY_IP])
    dsn_sink = h.SmtpSink(env, h.MX_EXAMPLE_ORG, mx_port, "example.org")
    busy = Busy421(BUSY_IP, mx_port)
    env.add_diagnostic(lambda: ("busy listener", f"{len(busy.times)} connections"))
    relay = h.Relay(env, h.standard_config(env, nsd, mx_port, retry=("1s", "2s", "4s"),
                                           max_lifetime="15s"))
    cpu0 = cpu_seconds(relay.proc.pid)
    sent = {}
    for domain in ("busy.example", "closed.example"):
        for i in range(RCPTS_PER_DOMAIN):
            rcpt = f"user{i}@{domain}"
            res = h.send(relay.host, relay.port, "alice@example.org", [rcpt],
                         h.make_message("alice@example.org", rcpt, f"backoff {rcpt}"))
            h.check(res.accepted, f"{rcpt}: not accepted: {res.steps} {res.error}")
            sent[rcpt] = res.queue_id
    t0 = time.monotonic()

    def expired_all():
        rows = relay.events("SELECT recipient FROM events WHERE event = 'expired'")
        return {r["recipient"] for r in rows} >= set(sent)

    env.wait_for(expired_all, 40, "every recipient to expire (max_lifetime 15s)")
    elapsed = time.monotonic() - t0
    time.sleep(1)
    conns = len(busy.times)
    cpu = cpu_seconds(relay.proc.pid) - cpu0
    rate = conns / elapsed * 60
    h.log(f"421 receiver: {conns} connections in {elapsed:.1f} s ({rate:.0f}/min); relay CPU "
          f"{cpu:.2f} s over the run")
    # retry 1s, 2s, 4s then 4s: about 6 connections before the 15 s lifetime; a storm is 1000s
    h.check(conns <= 15, f"{conns} connections to the 421 receiver in {elapsed:.0f} s: the "
                         f"destination is not backed off")
    h.check(conns >= 2, f"only {conns} connection(s) to the 421 receiver: was it retried at all?")
    h.check(cpu < 5, f"the relay used {cpu:.1f} s of CPU while waiting: it is spinning")

    deferred = relay.events("SELECT recipient, reply_code, reply_text, detail FROM events "
                            "WHERE event = 'deferred'")
    for rcpt in sent:
        rows = [r for r in deferred if r["recipient"] == rcpt]
        h.check(rows, f"{rcpt}: no 'deferred' record while its destination failed")
        if rcpt.endswith("@busy.example"):
            h.check(any("busy, try later" in (r["reply_text"] or "") for r in rows),
                    f"{rcpt}: the 421 reply is not in its deferred records: {rows}")
    # one expiry DSN per recipient reaches the sender
    def dsns():
        return [m for m in dsn_sink.messages() if m.mail_from == ""]

    env.wait_for(lambda: len(dsns()) >= len(sent), 20, "the expiry DSNs")
    text = "\n".join(m.raw.decode("utf-8", "replace") for m in dsns())
    for rcpt in sent:
        h.check(rcpt in text, f"no DSN names {rcpt}")
    attempts = relay.events("SELECT COUNT(*) AS n FROM events WHERE event = 'attempt'")[0]["n"]
    h.log(f"records: {len(deferred)} deferred, {attempts} attempts for {len(sent)} recipients")
    busy.stop()


if __name__ == "__main__":
    h.main(test)
