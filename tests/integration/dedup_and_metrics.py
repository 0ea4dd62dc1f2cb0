"""dedup_and_metrics.py - duplicate suppression across the two platforms, and the Prometheus
endpoint.

The same message (same Message-ID, same recipient) reaches outrelay from both origins - once one
after the other, once both at the same moment - and is delivered exactly once each time; the
second copy is recorded as a suppressed duplicate. Then /metrics (metrics.listen) must parse as
Prometheus text format and its counters must equal what records.db says.
"""
import re
import threading
import urllib.request

import harness as h

LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})?'
                  r' (-?[0-9.eE+-]+|\+Inf|NaN)$')


def parse_prometheus(text):
    """{(name, labels): value}; fails on any line that is not valid exposition format."""
    out, types = {}, {}
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            h.check(kind in ("counter", "gauge", "histogram", "summary", "untyped"),
                    f"bad TYPE line: {line}")
            types[name] = kind
            continue
        m = LINE.match(line)
        h.check(m, f"not Prometheus text format: {line!r}")
        out[(m.group(1), m.group(2) or "")] = float(m.group(3))
    return out, types


def total(metrics, name, **labels):
    s = 0.0
    for (n, lab), v in metrics.items():
        if n == name and all(f'{k}="{val}"' in lab for k, val in labels.items()):
            s += v
    return s


def test(env):
    h.need_binary(env)
    nsd = h.Nsd(env)
    port = env.free_port(h.SINK_IPS + [h.LEGACY_IP])
    metrics_port = env.free_port([h.RELAY_IP])
    sink = h.SmtpSink(env, h.MX_EXAMPLE_NET, port, "example.net")
    origins = {"zimbra": {"networks": [f"{h.ZIMBRA_IP}/32"]},
               "cloud": {"networks": [f"{h.CLOUD_CLIENT_IP}/32"]}}
    cfg = h.standard_config(env, nsd, port, origins=origins,
                            metrics={"listen": f"127.0.0.1:{metrics_port}"})
    relay = h.Relay(env, cfg)

    def send(ip, msgid, rcpt="dup@example.net"):
        res = h.send(relay.host, relay.port, "someone@example.org", [rcpt],
                     h.make_message("someone@example.org", rcpt, "dup", message_id=msgid),
                     source_addr=ip)
        h.check(res.accepted, f"not accepted: {res}")

    # one after the other: the copy from the second platform arrives after delivery
    send(h.ZIMBRA_IP, "<one@dup.test>")
    env.wait_for(lambda: len(sink.messages()) == 1, 30, "the first copy")
    send(h.CLOUD_CLIENT_IP, "<one@dup.test>")
    env.wait_for(lambda: relay.events("SELECT 1 FROM events WHERE event='suppressed'"), 30,
                 "the suppressed second copy")
    # both at once
    threads = [threading.Thread(target=send, args=(ip, "<two@dup.test>"))
               for ip in (h.ZIMBRA_IP, h.CLOUD_CLIENT_IP)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    env.wait_for(lambda: len(relay.events("SELECT 1 FROM events WHERE event='suppressed'")) == 2,
                 30, "the second suppressed copy")
    # ordinary traffic, and one bounce (the domain does not exist)
    for i in range(20):
        send(h.ZIMBRA_IP, f"<plain{i}@dup.test>", f"u{i}@example.net")
    send(h.CLOUD_CLIENT_IP, "<nx@dup.test>", f"x@{h.NXDOMAIN_DOMAIN}")
    env.wait_for(lambda: len(sink.messages()) == 22, 60, "the ordinary messages")
    env.wait_for(lambda: relay.events("SELECT 1 FROM events WHERE event='bounced'"), 60,
                 "the bounce")
    ids = [m.message_id for m in sink.messages()]
    h.check(ids.count("<one@dup.test>") == 1 and ids.count("<two@dup.test>") == 1,
            f"duplicates were delivered: {sorted(ids)[:5]}")
    sup = relay.events("SELECT origin, message_id, detail FROM events WHERE event='suppressed'")
    h.check(sorted(r["message_id"] for r in sup) == ["<one@dup.test>", "<two@dup.test>"],
            f"suppressed events: {sup}")

    body = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10)
    text = body.read().decode()
    h.check(body.headers.get("Content-Type", "").startswith("text/plain"),
            f"content type {body.headers.get('Content-Type')}")
    metrics, types = parse_prometheus(text)
    h.check(types.get("outrelay_recipients_delivered_total") == "counter" and
            types.get("outrelay_delivery_delay_seconds") == "histogram", f"types: {types}")

    def rows(event, origin=None):
        q = "SELECT COUNT(*) AS n FROM events WHERE event=?"
        args = [event]
        if origin:
            q += " AND origin=?"
            args.append(origin)
        return relay.events(q, tuple(args))[0]["n"]

    for origin in ("zimbra", "cloud"):
        h.check(total(metrics, "outrelay_messages_accepted_total", origin=origin) ==
                rows("received", origin), f"accepted_total for {origin} differs from records")
    for ev in ("delivered", "bounced", "suppressed", "deferred"):
        got = total(metrics, f"outrelay_recipients_{ev}_total")
        h.check(got == rows(ev), f"{ev}: /metrics says {got}, records.db {rows(ev)}")
    h.check(total(metrics, "outrelay_delivery_delay_seconds_count") == rows("delivered"),
            "delay histogram count differs from deliveries")
    h.check(total(metrics, "outrelay_delivery_delay_seconds_bucket", le="+Inf") ==
            rows("delivered"), "the +Inf bucket must count every delivery")
    h.check(("outrelay_queue_messages", '{state="held"}') in metrics, "queue gauge missing")
    # every series the shipped Grafana dashboard charts must exist
    import json
    import os
    dash = json.load(open(os.path.join(env.src, "contrib/grafana/outrelay-dashboard.json")))
    names = set(re.findall(r"outrelay_[a-z_]+", json.dumps(dash)))
    known = set(types) | {f"{t}{s}" for t in types for s in ("_bucket", "_sum", "_count")}
    h.check(names <= known, f"the dashboard uses metrics /metrics lacks: {names - known}")
    h.log(f"/metrics: {len(metrics)} series, delivered={rows('delivered')}")
    relay.stop()


if __name__ == "__main__":
    h.main(test)
