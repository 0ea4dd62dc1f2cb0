"""report_known_traffic.py - `outrelay report` computed from a real relay run equals the traffic
the test sent, number for number. Two egresses; every destination pinned to one of them so the
split is known (ramp schedule 25 %, pins: example.net, pass.example, bounce.example -> legacy,
example.com -> cloud); providers netprov (mx.example.net) and comprov (mx.example.com):

  pass.example   -> 4 x example.net   delivered (legacy)         SPF pass, DMARC pass
  fail.example   -> 3 x example.net   delivered (legacy)         SPF fail, DMARC fail, sent
  bounce.example -> 2 x example.net   bounced before sending (alignment policy: bounce) + DSN
  pass.example   -> 3 x ok@example.com   2 of them deferred once (451 4.7.650, a shaping rule),
                                          then all delivered (cloud)
  pass.example   -> 2 x bad@example.com  550 5.1.1 at RCPT: bounced (cloud) + DSN

Checked: alignment (per domain x egress, reasons, --domain, --csv parsed by the csv module,
--json by json.loads), ramp (planned 25 %, actual 5/16, shaping 2, overrides pause/resume),
delivery (per egress x provider, p50/p95 present, --egress), continuity (14 accepted, 0
unaccounted; the trail of one Message-ID from received to the remote 250; a bounced one to its
DSN), export --format pmta (d/b/t records and their fields). The HTML test reuses run_traffic().
"""
import csv
import io
import json
import subprocess

import harness as h

SENDER_MX = "127.0.0.21"
IP_REPUTATION = "451 4.7.650 The mail server [127.0.0.3] has been temporarily rate limited " \
                "due to IP reputation"


def zone(name, spf, dmarc):
    return h.zone_text(name, f"@ IN MX 10 mx\nmx IN A {SENDER_MX}\n@ IN TXT \"{spf}\"\n"
                             f"_dmarc IN TXT \"{dmarc}\"\n")


def run_traffic(env):
    """Starts the world, sends the traffic above, waits until every recipient is final and
    returns (relay, info) with the Message-IDs used."""
    zones = h.default_zones()
    both = f"v=spf1 ip4:{h.LEGACY_IP} ip4:{h.CLOUD_IP} -all"
    zones.update({"pass.example": zone("pass.example", both, "v=DMARC1; p=reject"),
                  "fail.example": zone("fail.example", "v=spf1 -all", "v=DMARC1; p=quarantine"),
                  "bounce.example": zone("bounce.example", "v=spf1 -all", "v=DMARC1; p=reject")})
    nsd = h.Nsd(env, zones=zones)
    port = env.free_port(h.SINK_IPS + [SENDER_MX, h.LEGACY_IP, h.CLOUD_IP])
    net = h.SmtpSink(env, h.MX_EXAMPLE_NET, port, "example.net")
    com = h.PySink(env, h.MX_EXAMPLE_COM, port, "example.com", script=[
        {"on": "RCPT", "match": "bad", "reply": "550 5.1.1 no such user"},
        {"on": "DATA", "reply": IP_REPUTATION, "count": 2}])
    senders = h.SmtpSink(env, SENDER_MX, port, "senders")
    policy = env.path("alignment.yaml")
    with open(policy, "w") as fh:
        fh.write("alignment:\n  default: send\n  domains:\n    bounce.example: bounce\n")
    egress = {"legacy": {"type": "direct", "source": [h.LEGACY_IP], "helo": "legacy.outrelay.test"},
              "cloud": {"type": "direct", "source": [h.CLOUD_IP], "helo": "cloud.outrelay.test"}}
    cfg = h.standard_config(env, nsd, port, egress=egress, retry=("1s",), policies=[policy])
    cfg["ramp"] = {"from": "legacy", "to": "cloud",
                   "schedule": [{"at": "2020-01-01T00:00:00Z", "percent": 25}],
                   "pins": {"domains": {"example.net": "legacy", "pass.example": "legacy",
                                        "bounce.example": "legacy", "example.com": "cloud"}}}
    cfg["providers"] = {"netprov": {"mx_suffixes": ["mx.example.net"]},
                        "comprov": {"mx_suffixes": ["mx.example.com"]}}
    cfg["shaping"] = [{"name": "test-ip-reputation",
                       "match": {"code": 451, "enhanced": "4.7.650",
                                 "text": "rate limited due to IP reputation"},
                       "threshold": {"hits": 1000, "window": "1h"},
                       "action": "throttle", "rate": "1/min", "duration": "1m"}]
    relay = h.Relay(env, cfg)

    info = {"msgids": {}}
    plan = [("pass", "u{i}@example.net", 4), ("fail", "u{i}@example.net", 3),
            ("bounce", "u{i}@example.net", 2), ("pass", "ok{i}@example.com", 3),
            ("pass", "bad{i}@example.com", 2)]
    n = 0
    for dom, rcpt_fmt, count in plan:
        for i in range(count):
            n += 1
            sender, rcpt = f"user@{dom}.example", rcpt_fmt.format(i=n)
            msgid = f"<m{n}.{dom}@test.outrelay>"
            res = h.send(relay.host, relay.port, sender, [rcpt],
                         h.make_message(sender, rcpt, f"report {n}", message_id=msgid))
            h.check(res.accepted, f"message {n} not accepted: {res}")
            info["msgids"].setdefault(rcpt_fmt.split("{")[0] + dom, []).append(msgid)

    def finals():
        rows = relay.events("SELECT count(*) AS n FROM events WHERE event IN ('delivered', "
                            "'bounced', 'expired')")
        return rows[0]["n"] if rows else 0
    # 14 recipients + 4 DSNs (2 alignment bounces, 2 at RCPT) reach a final state
    env.wait_for(lambda: finals() >= 18, 90, "every recipient and DSN final")
    env.wait_for(lambda: len(senders.messages()) == 4, 30, "the 4 DSNs at the senders' MX")
    h.check(len(net.messages()) == 7, f"example.net got {len(net.messages())} messages, not 7")
    h.check(len(com.messages()) == 3, f"example.com got {len(com.messages())}, not 3")
    for r in ("pause", "resume"):
        h.check(relay.queue_like("ramp", r).returncode == 0, f"ramp {r} failed")
    env.wait_for(lambda: len(relay.events("SELECT 1 FROM events WHERE event = 'ramp'")) == 2, 10,
                 "the two overrides on the record")
    return relay, info


def report(relay, *args, ok=True):
    r = subprocess.run([relay.env.bin, "report", *args, "-c", relay.conf_path],
                       capture_output=True, text=True, timeout=120)
    h.log(f"outrelay report {' '.join(args)} -> {r.returncode}\n{r.stdout[:6000]}{r.stderr}")
    if ok:
        h.check(r.returncode == 0, f"report {' '.join(args)} failed: {r.stderr}")
        h.check(not any(p in r.stderr for p in h.SANITIZER_PATTERNS),
                f"sanitizer report from `report {' '.join(args)}`:\n{r.stderr}")
    return r


def tables(relay, *args):
    return json.loads(report(relay, *args, "--json").stdout)["tables"]


def expect(row, what, **values):
    h.check(row is not None, f"{what}: no such row")
    for k, v in values.items():
        h.check(row.get(k) == v, f"{what}: {k} is {row.get(k)!r}, expected {v!r} (row {row})")


def find(rows, **key):
    got = [r for r in rows if all(r.get(k) == v for k, v in key.items())]
    h.check(len(got) <= 1, f"several rows for {key}: {got}")
    return got[0] if got else None


def test(env):
    relay, info = run_traffic(env)

    # ---- alignment
    a = tables(relay, "alignment")
    s = a["summary"]
    expect(find(s, domain="pass.example", egress="legacy"), "pass.example via legacy",
           messages=4, spf_pass=4, spf_fail=0, dmarc_pass=4, dmarc_fail=0, pass_rate=100.0)
    expect(find(s, domain="pass.example", egress="cloud"), "pass.example via cloud",
           messages=5, spf_pass=5, dmarc_pass=5, pass_rate=100.0)
    expect(find(s, domain="fail.example", egress="legacy"), "fail.example via legacy",
           messages=3, spf_pass=0, spf_fail=3, dmarc_pass=0, dmarc_fail=3, bounced=0,
           pass_rate=0.0)
    expect(find(s, domain="bounce.example", egress="legacy"), "bounce.example via legacy",
           messages=2, spf_fail=2, dmarc_fail=2, bounced=2, rerouted=0, held=0)
    h.check(find(s, domain="fail.example", egress="cloud") is None, "fail.example never used cloud")
    daily = [r for r in a["alignment"] if r["domain"] in ("pass.example", "fail.example",
                                                          "bounce.example")]
    h.check(sum(r["messages"] for r in daily) == 14, f"daily rows do not add up to 14: {daily}")
    reasons = [r for r in a["reasons"] if r["domain"] == "fail.example"]
    h.check(len(reasons) == 1 and reasons[0]["count"] == 3 and reasons[0]["reason"],
            f"fail.example should have one reason counted 3 times: {reasons}")
    only = tables(relay, "alignment", "--domain", "FAIL.example")["summary"]
    h.check([r["domain"] for r in only] == ["fail.example"], f"--domain filter: {only}")
    rows = list(csv.DictReader(io.StringIO(report(relay, "alignment", "--csv", "--table",
                                                  "summary").stdout)))
    row = [r for r in rows if r["domain"] == "pass.example" and r["egress"] == "cloud"]
    h.check(row and row[0]["messages"] == "5" and row[0]["pass_rate"] == "100.0",
            f"alignment --csv: {rows}")
    text = report(relay, "alignment").stdout
    h.check("fail.example" in text and "dmarc_fail" in text, "terminal table lacks its columns")

    # ---- ramp
    rp = tables(relay, "ramp")
    h.check(len(rp["hours"]) >= 1, "no ramp hours")
    routed = sum(r["routed"] for r in rp["hours"])
    cloud = sum(r["cloud"] for r in rp["hours"])
    # 14 recipients - 2 bounced by the alignment policy before routing + 4 DSNs
    h.check((routed, cloud) == (16, 5), f"routed/cloud {routed}/{cloud}, expected 16/5")
    for r in rp["hours"]:
        h.check(r["planned_pct"] == 25.0, f"planned share {r['planned_pct']}, expected 25.0")
    if len(rp["hours"]) == 1:
        h.check(rp["hours"][0]["actual_pct"] == 31.2, f"actual share {rp['hours'][0]}")
    prov = {r["provider"]: r for r in rp["providers"]}
    expect(prov.get("netprov"), "ramp netprov", routed=7, cloud=0, actual_pct=0.0)
    expect(prov.get("comprov"), "ramp comprov", routed=5, cloud=5, actual_pct=100.0)
    expect(prov.get("other"), "ramp other (DSNs)", routed=4, cloud=0)
    h.check(sum(r["count"] for r in rp["shaping"] if r["rule"] == "test-ip-reputation"
                and r["egress"] == "cloud") == 2, f"shaping replies: {rp['shaping']}")
    h.check(sum(r["deferred"] for r in rp["deferrals"]) == 2 and
            sum(r["shaping"] for r in rp["deferrals"]) == 2, f"deferrals: {rp['deferrals']}")
    h.check([r["action"] for r in rp["overrides"]] == ["pause", "resume"],
            f"overrides: {rp['overrides']}")
    h.check(rp["caps"] == [], f"no cap was hit, yet: {rp['caps']}")

    # ---- delivery
    d = tables(relay, "delivery")["delivery"]
    expect(find(d, egress="legacy", provider="netprov"), "legacy x netprov",
           delivered=7, deferred=0, bounced=0, expired=0)
    expect(find(d, egress="cloud", provider="comprov"), "cloud x comprov",
           delivered=3, deferred=2, bounced=2, expired=0)
    expect(find(d, egress="legacy", provider="other"), "legacy x other (DSNs)",
           delivered=4, bounced=0)
    # bounced by the alignment policy before any routing: no egress, no provider
    expect(find(d, egress="-", provider="-"), "alignment bounces", bounced=2, delivered=0)
    h.check(len(d) == 4, f"unexpected delivery rows: {d}")
    for r in d:
        if r["delivered"]:
            h.check(isinstance(r["p50_ms"], int) and r["p95_ms"] >= r["p50_ms"] >= 0,
                    f"delays: {r}")
    c_rows = tables(relay, "delivery", "--egress", "cloud")["delivery"]
    h.check([(r["egress"], r["delivered"]) for r in c_rows] == [("cloud", 3)],
            f"--egress cloud: {c_rows}")
    replies = tables(relay, "delivery")["replies"]
    h.check(any(r["code"] == 550 and r["enhanced"] == "5.1.1" and r["count"] == 2
                for r in replies), f"top replies lack the two 550 5.1.1: {replies}")

    # ---- continuity
    c = tables(relay, "continuity")
    expect(c["accounting"][0], "accounting", accepted=14, complete=14, in_queue=0, unaccounted=0,
           queue="asked the running relay")
    h.check(c["open"] == [], f"open messages: {c['open']}")
    msgid = info["msgids"]["u" + "pass"][0]
    trail = tables(relay, "continuity", "--message-id", msgid)["trail"]
    events = [r["event"] for r in trail]
    h.check(events and events[0] == "received" and events[-1] == "delivered",
            f"trail of {msgid}: {events}")
    h.check(trail[-1]["reply"].startswith("250"), f"last step is not a 250: {trail[-1]}")
    h.check(msgid in trail[0]["detail"], f"received row lacks the Message-ID: {trail[0]}")
    bad = info["msgids"]["bad" + "pass"][0].strip("<>")    # without brackets works too
    btrail = tables(relay, "continuity", "--message-id", bad)["trail"]
    bev = [r["event"] for r in btrail]
    h.check("bounced" in bev and "dsn" in bev and bev[-1] == "delivered",
            f"a bounced message's trail should end with its DSN delivered: {bev}")
    relay.stop()
    c = tables(relay, "continuity")   # the relay is down: the queue cannot be asked
    expect(c["accounting"][0], "accounting (relay stopped)", accepted=14, unaccounted=0,
           queue="relay not reachable")

    # ---- export --format pmta
    out = report(relay, "export", "--format", "pmta").stdout
    recs = list(csv.DictReader(io.StringIO(out)))
    kinds = {}
    for r in recs:
        kinds[r["type"]] = kinds.get(r["type"], 0) + 1
    h.check(kinds == {"d": 14, "b": 4, "t": 2}, f"pmta record types {kinds}, expected d14 b4 t2")
    d_rec = [r for r in recs if r["type"] == "d" and r["rcpt"].startswith("ok")]
    h.check(len(d_rec) == 3 and all(r["vmta"] == "cloud" and r["dsnAction"] == "relayed" and
                                    r["dlvSourceIp"] == h.CLOUD_IP and
                                    r["dlvDestinationIp"] == h.MX_EXAMPLE_COM and
                                    r["dsnDiag"].startswith("smtp;250") for r in d_rec),
            f"pmta d records for example.com: {d_rec}")
    b_rec = [r for r in recs if r["type"] == "b" and r["rcpt"].startswith("bad")]
    h.check(len(b_rec) == 2 and all(r["dsnStatus"].startswith("5.1.1") and
                                    r["bounceCat"] == "bad-mailbox" and
                                    r["dsnAction"] == "failed" for r in b_rec),
            f"pmta b records: {b_rec}")
    h.check(all(r["timeLogged"] >= r["timeQueued"] for r in recs), "timeQueued after timeLogged")
    h.check(out.splitlines()[0].startswith("type,timeLogged,timeQueued,orig,rcpt"),
            "pmta header line")

    # ---- usage errors
    h.check(report(relay, "export", ok=False).returncode == 2, "export without --format pmta")
    h.check(report(relay, "html", ok=False).returncode == 2, "html without -o")
    h.check(report(relay, "nonsense", ok=False).returncode == 2, "unknown report")
    h.check(report(relay, "ramp", "--since", "yesterday-ish", ok=False).returncode == 2,
            "unreadable --since")


if __name__ == "__main__":
    h.main(test)
