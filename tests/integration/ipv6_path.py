"""ipv6_path.py - the mail path over IPv6: a platform submits on [::1], the recipient domain's
only MX has an AAAA record (::1), the direct egress binds the IPv6 source ::1, and the
message arrives. An IPv4-only egress (source 127.0.0.2) cannot use an AAAA-only MX: that
recipient is returned with a DSN saying so. Skipped (77) when the machine has no IPv6
loopback."""
import smtplib
import socket
import sys

import harness as h


def test(env):
    h.need_binary(env)
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        print("SKIP: no IPv6 loopback")
        sys.exit(77)
    zones = h.default_zones()
    zones["v6.test"] = h.zone_text("v6.test", "@ IN MX 10 mx\nmx IN AAAA ::1\n"
                                              "v4only IN MX 10 mx\n")
    nsd = h.Nsd(env, zones=zones)
    port = env.free_port(["::1", h.MX_EXAMPLE_ORG])
    sink = h.PySink(env, "::1", port, "v6")
    senders = h.SmtpSink(env, h.MX_EXAMPLE_ORG, port, "example.org")
    v6_port = env.free_port(["::1"])
    origins = {"local": {"networks": ["127.0.0.0/8", "::1/128"]}}
    egress = {"v6": {"type": "direct", "source": ["::1"], "helo": "v6.outrelay.test"},
              "v4": {"type": "direct", "source": [h.LEGACY_IP]}}
    cfg = h.standard_config(env, nsd, port, origins=origins, egress=egress, ramp_from="v6",
                            extra_listen=[{"address": f"[::1]:{v6_port}", "tls": "none"}])
    cfg["ramp"]["pins"] = {"domains": {"v4only.v6.test": "v4", "example.org": "v4"}}
    relay = h.Relay(env, cfg)

    c = smtplib.SMTP("::1", v6_port, timeout=10)
    c.ehlo("client6.test")
    msg = h.make_message("a@example.org", "b@v6.test", "over v6", message_id="<v6@v6.test>")
    c.sendmail("a@example.org", ["b@v6.test"], msg)
    c.quit()
    env.wait_for(lambda: sink.messages(), 30, "delivery over IPv6")
    m = sink.messages()[0]
    h.check(m.client_addr == "::1", f"arrived from {m.client_addr}, not ::1")
    rec = relay.events("SELECT client_addr FROM events WHERE event='received'")[0]
    h.check(rec["client_addr"] == "::1", f"client recorded as {rec['client_addr']}")

    res = h.send(relay.host, relay.port, "a@example.org", ["c@v4only.v6.test"],
                 h.make_message("a@example.org", "c@v4only.v6.test", "v4 egress"))
    h.check(res.accepted, f"not accepted: {res}")
    env.wait_for(lambda: senders.messages(), 30, "the DSN for the unreachable MX")
    row = relay.events("SELECT egress, reply_text FROM events WHERE event='bounced'")[0]
    h.check(row["egress"] == "v4" and "no address" in row["reply_text"],
            f"bounce reason: {row}")
    h.check(len(sink.messages()) == 1, "the v4-only egress reached the IPv6 MX")
    relay.stop()


if __name__ == "__main__":
    h.main(test)
