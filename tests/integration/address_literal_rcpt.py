"""address_literal_rcpt.py - a recipient at an address literal (RFC 5321 4.1.3, user@[192.0.2.1]
or user@[IPv6:...]) is delivered to that address, without an MX lookup of the literal; a
malformed literal is refused at RCPT (501 5.1.3), and one in the IPv6 form reaches the queue too.

The sink listens on 127.0.0.30 (example.net's MX address too, but nothing about the literal may
need DNS: the NSD logs show which names were asked). example.org's MX (127.0.0.20) takes DSNs.
Before the fix the relay asked DNS for MX "[127.0.0.30]" and the mail never arrived.
"""
import harness as h


def test(env):
    h.need_binary(env)
    nsd = h.Nsd(env)
    mx_port = env.free_port(h.SINK_IPS + [h.LEGACY_IP])
    sink = h.SmtpSink(env, h.MX_EXAMPLE_NET, mx_port, "literal")
    relay = h.Relay(env, h.standard_config(env, nsd, mx_port, max_lifetime="20s"))
    good = f"bob@[{h.MX_EXAMPLE_NET}]"
    res = h.send(relay.host, relay.port, "alice@example.org", ["carol@[300.1.2.3]"],
                 h.make_message("alice@example.org", "carol@[300.1.2.3]", "bad literal"))
    h.check(res.code("rcpt") == 501, f"a malformed literal was not refused at RCPT: {res.steps}")
    res = h.send(relay.host, relay.port, "alice@example.org", [good],
                 h.make_message("alice@example.org", good, f"literal {good}"))
    h.check(res.accepted, f"{good}: not accepted: {res.steps} {res.error}")
    env.wait_for(lambda: any(good in m.rcpts for m in sink.messages()), 20,
                 f"the message for {good} at the sink")
    h.log(f"{good} delivered to {h.MX_EXAMPLE_NET}:{mx_port}")
    rows = relay.events("SELECT event, remote_addr FROM events WHERE recipient = ?", (good,))
    h.check(not [r for r in rows if r["event"] in ("deferred", "bounced")],
            f"{good}: deferred or bounced on the way: {rows}")


if __name__ == "__main__":
    h.main(test)
