"""demo.py - the body of contrib/demo.sh (see there). Uses the test harness to start the local
internet, so the demo and the tests exercise the same set-up: a DKIM key made with `outrelay
keygen` and published in the demo zone, a ramp holding 30 % of recipients on the cloud egress,
and partner.example, whose SPF authorises only the cloud egress, rerouted there by the alignment
policy when the ramp picks legacy. Ends with the HTML report (its path is printed)."""
import os
import shutil
import subprocess

import harness as h

REPORT = os.environ.get("OUTRELAY_DEMO_REPORT", "/tmp/outrelay-demo-report.html")
MESSAGES = 40
PARTNER = 8  # messages from partner.example


def keygen(env):
    """`outrelay keygen example.org demo`: the key under keys/, the TXT record to publish."""
    cfg = env.path("keygen.yaml")
    with open(cfg, "w") as fh:
        fh.write(f"keys: {env.path('keys')}\n")
    r = subprocess.run([env.bin, "keygen", "example.org", "demo", "--ed25519", "-c", cfg],
                       capture_output=True, text=True, timeout=60)
    h.check(r.returncode == 0, f"keygen: {r.stderr}")
    return r.stdout


def outrelay(relay, *args):
    """The stdout of `outrelay ARGS -c CONFIG` (stderr too when it fails)."""
    r = subprocess.run([relay.env.bin, *args, "-c", relay.conf_path], capture_output=True,
                       text=True, timeout=120)
    return r.stdout + (r.stderr if r.returncode not in (0, 1) else "")


def zones(dkim_record):
    z = h.default_zones()
    spf = f'"v=spf1 ip4:{h.LEGACY_IP} ip4:{h.CLOUD_IP} -all"'
    z["example.org"] = h.zone_text("example.org", (
        f"@ IN MX 10 mx\nmx IN A {h.MX_EXAMPLE_ORG}\n@ IN TXT {spf}\n"
        '_dmarc IN TXT "v=DMARC1; p=none; rua=mailto:dmarc@example.org"\n' + dkim_record))
    # partner.example sends only through the cloud: its SPF names the cloud egress alone
    z["partner.example"] = h.zone_text("partner.example", (
        f"@ IN MX 10 mx\nmx IN A {h.MX_EXAMPLE_ORG}\n"
        f'@ IN TXT "v=spf1 ip4:{h.CLOUD_IP} -all"\n_dmarc IN TXT "v=DMARC1; p=reject"\n'))
    return z


def demo(env):
    h.need_binary(env)
    record = keygen(env)
    print("== outrelay keygen example.org demo (published in the demo zone):\n" + record)
    nsd = h.Nsd(env, zones=zones(record))
    mx_port = env.free_port(h.SINK_IPS + [h.LEGACY_IP, h.CLOUD_IP])
    sinks = {d: h.SmtpSink(env, ip, mx_port, d)
             for d, ip in (("example.net", h.MX_EXAMPLE_NET), ("example.com", h.MX_EXAMPLE_COM))}
    origins = {"zimbra": {"networks": [f"{h.ZIMBRA_IP}/32"]},
               "cloud": {"networks": [f"{h.CLOUD_CLIENT_IP}/32"]}}
    egress = {"legacy": {"type": "direct", "source": [h.LEGACY_IP],
                         "helo": "legacy.outrelay.test"},
              "cloud": {"type": "direct", "source": [h.CLOUD_IP], "helo": "cloud.outrelay.test"}}
    cfg = h.standard_config(env, nsd, mx_port, origins=origins, egress=egress)
    cfg["ramp"] = {"from": "legacy", "to": "cloud", "key": ["rcpt"],
                   "schedule": [{"at": "2026-01-01T00:00:00Z", "percent": 30}]}
    cfg["alignment"] = {"default": "send", "domains": {"partner.example": "reroute"}}
    relay = h.Relay(env, cfg)
    print(f"\n== outrelay listens on {relay.host}:{relay.port}; NSD on {nsd.server}; "
          f"MXs on 127.0.0.30/31:{mx_port}")
    print("== egresses: legacy 127.0.0.2, cloud 127.0.0.3; ramp legacy -> cloud at 30 % of "
          "recipients; partner.example (SPF: cloud only) has alignment action reroute\n")
    print("== outrelay dns-advice")
    print(outrelay(relay, "dns-advice"))

    sent = 0
    for n in range(MESSAGES + PARTNER):
        ip, name = (h.ZIMBRA_IP, "zimbra") if n % 2 else (h.CLOUD_CLIENT_IP, "cloud")
        domain = "partner.example" if n >= MESSAGES else "example.org"
        rcpt = f"user{n}@{'example.net' if n % 3 else 'example.com'}"
        client = h.Client(relay.host, relay.port, source_addr=ip, ehlo=f"{name}.demo")
        res = client.transaction(f"{name}@{domain}", [rcpt],
                                 h.make_message(f"{name}@{domain}", [rcpt], f"demo {n}"))
        client.close()
        h.check(res.accepted, f"not accepted: {res}")
        sent += 1
    env.wait_for(lambda: sum(len(s.messages()) for s in sinks.values()) >= sent, 60,
                 f"{sent} deliveries")
    env.wait_for(lambda: len(relay.events("SELECT 1 FROM events WHERE event='delivered'")) >= sent,
                 30, f"{sent} delivered records")

    print("== relay log (last lines)")
    print("\n".join(relay.stderr().splitlines()[-8:]))
    for d, s in sinks.items():
        msgs = s.messages()
        print(f"\n== MX of {d}: {len(msgs)} messages, e.g. from client {msgs[0].client_addr}")
    signed = [m for s in sinks.values() for m in s.messages() if m.header("DKIM-Signature")]
    if signed:
        print(f"\n== {len(signed)} messages arrived DKIM-signed, e.g.\n   DKIM-Signature: "
              + " ".join(signed[0].header("DKIM-Signature").split())[:150] + " ...")
    h.check(signed, "no message arrived signed")

    rows = relay.events("SELECT c.from_domain AS domain, d.egress AS egress, COUNT(*) AS n "
                        "FROM events d JOIN events c ON c.queue_id = d.queue_id AND "
                        "c.event = 'checked' AND c.egress = d.egress WHERE d.event = 'delivered' "
                        "GROUP BY 1, 2 ORDER BY 1, 2")
    print("\n== delivered per From domain and egress (the ramp: 30 % of recipients by cloud; "
          "partner.example all by cloud)")
    for r in rows:
        print(f"   {r['domain']:<16} {r['egress']:<7} {r['n']}")
    checked = relay.events("SELECT from_domain, egress, spf_result, dmarc_result, action, "
                           "COUNT(*) AS n FROM events WHERE event='checked' GROUP BY 1, 2, 3, 4, 5"
                           " ORDER BY 1, 2")
    print("\n== alignment checks (predicted before sending; reroute = moved to the other egress)")
    for r in checked:
        print(f"   {r['from_domain']:<16} {r['egress']:<7} spf={r['spf_result']:<9} "
              f"dmarc={r['dmarc_result']:<5} action={r['action']:<8} {r['n']}")
    h.check(any(r["action"] == "reroute" for r in checked), "no message was rerouted")
    h.check(any(r["egress"] == "cloud" for r in rows) and any(r["egress"] == "legacy" for r in rows),
            f"the ramp did not use both egresses: {rows}")

    print("\n== outrelay ramp status")
    print(outrelay(relay, "ramp", "status"))
    print("== outrelay report delivery")
    print(outrelay(relay, "report", "delivery"))
    page = env.path("report.html")
    outrelay(relay, "report", "html", "-o", page)
    h.check(os.path.exists(page), "report html wrote nothing")
    shutil.copy(page, REPORT)
    relay.stop()
    print(f"\n== HTML report: {REPORT}  (open file://{REPORT} in a browser)")


if __name__ == "__main__":
    h.main(demo, name="demo")
