"""demo.py - the body of contrib/demo.sh (see there). Uses the test harness to start the local
internet, so the demo and the tests exercise the same set-up."""
import harness as h


def demo(env):
    nsd = h.Nsd(env)
    mx_port = env.free_port(h.SINK_IPS + [h.LEGACY_IP])
    sinks = {d: h.SmtpSink(env, ip, mx_port, d)
             for d, ip in (("example.net", h.MX_EXAMPLE_NET), ("example.com", h.MX_EXAMPLE_COM))}
    origins = {"zimbra": {"networks": [f"{h.ZIMBRA_IP}/32"]},
               "cloud": {"networks": [f"{h.CLOUD_CLIENT_IP}/32"]}}
    relay = h.Relay(env, h.standard_config(env, nsd, mx_port, origins=origins))
    print(f"\n== outrelay listens on {relay.host}:{relay.port}; NSD on {nsd.server}; "
          f"MXs on 127.0.0.30/31:{mx_port}\n")
    for n in range(40):
        ip, name = (h.ZIMBRA_IP, "zimbra") if n % 2 else (h.CLOUD_CLIENT_IP, "cloud")
        rcpt = f"user{n}@{'example.net' if n % 3 else 'example.com'}"
        client = h.Client(relay.host, relay.port, source_addr=ip, ehlo=f"{name}.demo")
        res = client.transaction(f"{name}@example.org", [rcpt],
                                 h.make_message(f"{name}@example.org", [rcpt], f"demo {n}"))
        client.close()
        h.check(res.accepted, f"not accepted: {res}")
    env.wait_for(lambda: sum(len(s.messages()) for s in sinks.values()) >= 40, 60,
                 "40 deliveries")
    print("== relay log (last lines)")
    print("\n".join(relay.stderr().splitlines()[-8:]))
    for d, s in sinks.items():
        msgs = s.messages()
        print(f"\n== MX of {d}: {len(msgs)} messages, e.g. from client {msgs[0].client_addr}")
    env.wait_for(lambda: len(relay.events("SELECT 1 FROM events WHERE event='delivered'")) >= 40,
                 30, "40 delivered records")
    rows = relay.events("SELECT event, origin, COUNT(*) AS n FROM events GROUP BY event, origin")
    print("\n== records.db events")
    for r in rows:
        print(f"   {r['event']:<10} {r['origin'] or '':<8} {r['n']}")
    print("\n== outrelay report delivery")
    print(relay.queue_like("report", "delivery").stdout)
    print("\n== outrelay queue list")
    print(relay.queue("list").stdout)
    relay.stop()


if __name__ == "__main__":
    h.main(demo, name="demo")
