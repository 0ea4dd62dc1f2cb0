"""many_mx_hosts_bounded.py - a domain that publishes a dozen MX hosts, none of which takes
mail (each answers "421" at the greeting), costs one delivery attempt at most five connections
(SMTPC_MAX_ADDRESSES, as Postfix's smtp_mx_address_limit), tried in preference order; the
rest are left for the next attempt instead of holding the connection through every host (with
unreachable hosts, hours of connect timeouts). The message is deferred with the last host's
answer, not bounced.

Checks, with twelve 421-answering receivers on loopback (127.0.0.60-71, MX preferences 10-120)
and delivery.retry 1m (so one attempt falls in the test):
- exactly 5 connections, to the five most preferred hosts, and none to the others;
- one deferral for the recipient, with the 421 text of the fifth host;
- a message to a good domain sent meanwhile is delivered (the queue is not stuck).
"""
import time

import harness as h

HOSTS = [f"127.0.0.{60 + i}" for i in range(12)]


class Refuser:
    def __init__(self, ip, port):
        self.ip = ip
        self.sessions = 0
        self.listener = h.RawListener(ip, port, self._connection)

    def _connection(self, c):
        self.sessions += 1
        try:
            c.sendall(f"421 4.3.2 mx {self.ip} is busy\r\n".encode())
        except OSError:
            pass
        c.close()


def test(env):
    h.need_binary(env)
    zones = h.default_zones()
    body = "".join(f"@ IN MX {10 * (i + 1)} mx{i}\nmx{i} IN A {ip}\n"
                   for i, ip in enumerate(HOSTS))
    zones["many.test"] = h.zone_text("many.test", body)
    nsd = h.Nsd(env, zones=zones)
    mx_port = env.free_port(h.SINK_IPS + HOSTS + [h.LEGACY_IP])
    refusers = [Refuser(ip, mx_port) for ip in HOSTS]
    sink = h.PySink(env, h.MX_EXAMPLE_NET, mx_port, "example.net")
    relay = h.Relay(env, h.standard_config(env, nsd, mx_port, retry=("1m",)))

    for rcpt in ("bob@many.test", "bob@example.net"):
        res = h.send(relay.host, relay.port, "alice@example.org", [rcpt],
                     h.make_message("alice@example.org", rcpt, "many MX hosts"))
        h.check(res.accepted, f"{rcpt}: not accepted: {res.steps}")
    env.wait_for(lambda: sink.messages(), 30, "the message to example.net")

    def deferred():
        return relay.events("SELECT reply_text FROM events WHERE event='deferred' "
                            "AND recipient='bob@many.test'")
    env.wait_for(deferred, 30, "many.test's message deferred")
    time.sleep(1)
    counts = [r.sessions for r in refusers]
    h.log(f"connections per MX host (preference order): {counts}")
    h.check(counts == [1] * 5 + [0] * 7,
            f"one attempt should connect to the five most preferred hosts once each: {counts}")
    rows = deferred()
    h.check(len(rows) == 1, f"{len(rows)} deferrals in one attempt")
    h.check(f"mx {HOSTS[4]} is busy" in (rows[0]["reply_text"] or ""),
            f"the deferral gives the fifth host's answer: {rows[0]['reply_text']}")
    h.check(not relay.events("SELECT 1 FROM events WHERE event='bounced'"), "a bounce")
    relay.stop()
    for r in refusers:
        r.listener.stop()


if __name__ == "__main__":
    h.main(test)
