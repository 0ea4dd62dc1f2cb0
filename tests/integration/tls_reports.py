"""tls_reports.py - TLS-RPT (RFC 8460) from a real run: the day's TLS sessions become one
aggregate report per policy domain that publishes `_smtp._tls`, mailed through the relay's own
queue the next day, and `outrelay report tls` says the same.

NSD serves:
  tls.test    MX at a Python sink with STARTTLS (test CA, the egress trusts it): delivered
              over TLS; `_smtp._tls` TXT with two mailto: rua at reports.test
  enc.test    MX at an smtp-sink without STARTTLS, tls_policy encrypt: deferred with
              starttls-not-supported; `_smtp._tls` TXT with one mailto: rua
  quiet.test  MX at a sink with STARTTLS, no `_smtp._tls` record: no report
  reports.test  MX at a Python sink: where the reports arrive
The calendar (OUTRELAY_TEST_CLOCK) starts at 10:00 UTC of day D; after the traffic it moves to
02:00 of D+1, past tls_reports.hour (1). Checked: two reports arrive (tls.test to both rua,
enc.test), with the RFC 8460 section 5.3 headers and Subject, multipart/report;
report-type=tlsrpt, an application/tlsrpt+gzip part named per section 5.1, a DKIM signature;
the gunzipped JSON validates against tests/data/tlsrpt/report.schema.json (RFC 8460 section 4.4)
and its counts equal `outrelay report tls --json --day D`; none for quiet.test; a restart
sends nothing again (STATE/tlsrpt.db). Before that, /metrics shows the TLS share per egress x
provider (1: everything delivered went over TLS) and the TLS failures by result type.
"""
import gzip
import json
import os
import re
import sqlite3
import subprocess
import time
import urllib.request

import jsonschema

import harness as h

MX_ENC, MX_QUIET, MX_REPORTS = "127.0.0.50", "127.0.0.51", "127.0.0.54"
DAY = 1795996800  # a UTC midnight
T0 = DAY + 10 * 3600


def set_clock(path, t):
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(f"{int(t)}\n")
    os.replace(tmp, path)


def report_cli(relay, *args):
    r = subprocess.run([relay.env.bin, "report", *args, "-c", relay.conf_path],
                       capture_output=True, text=True, timeout=120)
    h.check(r.returncode == 0, f"outrelay report {' '.join(args)}: {r.returncode}\n{r.stderr}")
    return r.stdout


def test(env):
    h.need_binary(env)
    clock = env.path("clock")
    set_clock(clock, T0)
    os.environ["OUTRELAY_TEST_CLOCK"] = clock
    zones = h.default_zones()
    tlsrpt_two = '"v=TLSRPTv1; rua=mailto:tlsrpt@reports.test,mailto:second@reports.test"'
    zones["tls.test"] = h.zone_text("tls.test", (
        f"@ IN MX 10 mx\nmx IN A {h.MX_TLS_TEST}\n_smtp._tls IN TXT {tlsrpt_two}\n"))
    zones["enc.test"] = h.zone_text("enc.test", (
        f"@ IN MX 10 mx\nmx IN A {MX_ENC}\n"
        '_smtp._tls IN TXT "v=TLSRPTv1; rua=mailto:tlsrpt@reports.test"\n'))
    zones["quiet.test"] = h.zone_with_mx("quiet.test", MX_QUIET)
    zones["reports.test"] = h.zone_with_mx("reports.test", MX_REPORTS)
    nsd = h.Nsd(env, zones=zones)
    mx_port = env.free_port([h.MX_TLS_TEST, MX_ENC, MX_QUIET, MX_REPORTS])
    tls_dir = env.path("tls")
    tls_cert = h.make_ca_and_cert(tls_dir, ["mx.tls.test", "mx.quiet.test"], prefix="tlstest")
    tls_sink = h.PySink(env, h.MX_TLS_TEST, mx_port, "tls.test", tls=tls_cert)
    h.SmtpSink(env, MX_ENC, mx_port, "enc.test")
    quiet_sink = h.PySink(env, MX_QUIET, mx_port, "quiet.test", tls=tls_cert)
    reports = h.PySink(env, MX_REPORTS, mx_port, "reports.test")

    # the report's From domain has a DKIM key: reports are signed like all mail
    keys_dir = env.path("keys")
    probe = env.path("keygen.yaml")
    with open(probe, "w") as fh:
        fh.write(f"keys: {keys_dir}\n")
    r = subprocess.run([env.bin, "keygen", "example.org", "s1", "--ed25519", "-c", probe],
                       capture_output=True, text=True, timeout=60)
    h.check(r.returncode == 0, f"keygen: {r.stderr}")

    egress = h.default_egress()
    egress["legacy"]["tls_ca_file"] = tls_cert["ca"]
    metrics_port = env.free_port([h.RELAY_IP])
    cfg = h.standard_config(env, nsd, mx_port, egress=egress, retry=["1s", "6h"],
                            metrics={"listen": f"127.0.0.1:{metrics_port}"},
                            max_lifetime="5d", tls_policy={"enc.test": "encrypt"},
                            tls_reports={"enabled": True, "organization": "Outrelay Test",
                                         "contact": "tls@example.org",
                                         "submitter": "relay.outrelay.test",
                                         "from": "tlsrpt@example.org", "hour": 1})
    relay = h.Relay(env, cfg)

    rcpts = ["a@tls.test", "b@tls.test", "u@enc.test", "v@enc.test", "q@quiet.test"]
    for rcpt in rcpts:
        res = h.send(relay.host, relay.port, "alice@example.org", [rcpt],
                     h.make_message("alice@example.org", rcpt, "tls report",
                                    message_id=f"<tlsrpt-{rcpt}>"))
        h.check(res.accepted, f"relay refused the message to {rcpt}: {res}")
    env.wait_for(lambda: len(tls_sink.messages()) >= 2 and quiet_sink.messages(), 60,
                 lambda: f"deliveries to tls.test and quiet.test: {relay.history('tls.test')}")
    for m in tls_sink.messages():
        h.check(m.tls_version, f"tls.test got mail without TLS: {m}")

    def enc_deferrals():
        return relay.events("SELECT * FROM events WHERE event = 'deferred' AND recipient LIKE "
                            "'%enc.test%' AND tls_failure = 'starttls-not-supported'")
    env.wait_for(lambda: len(enc_deferrals()) >= 2, 60,
                 lambda: f"enc.test deferred for STARTTLS: {relay.history('enc.test')}")
    time.sleep(3)  # the 1s retry comes and goes; the next is 6h away on the calendar
    h.check(not reports.messages(), "a report before the day was over")

    # /metrics: TLS share per egress x provider, TLS failures by result type
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                  timeout=10).read().decode()
    share = re.search(r'(?m)^outrelay_tls_share_ratio\{egress="legacy",provider="other"\} (\S+)$',
                      text)
    # tls.test twice and quiet.test over TLS, nothing delivered without: a share of 1
    h.check(share and float(share.group(1)) == 1.0, f"outrelay_tls_share_ratio:\n{text}")
    h.check(re.search(r'(?m)^outrelay_tls_deliveries_total\{egress="legacy",provider="other",'
                      r'tls="yes"\} 3$', text), f"outrelay_tls_deliveries_total:\n{text}")
    failures = re.search(r'(?m)^outrelay_tls_failures_total\{egress="legacy",provider="other",'
                         r'result_type="starttls-not-supported"\} (\S+)$', text)
    h.check(failures and float(failures.group(1)) == len(enc_deferrals()),
            f"outrelay_tls_failures_total vs {len(enc_deferrals())} deferrals:\n{text}")
    h.check("# TYPE outrelay_tls_share_ratio gauge" in text, "no TYPE line for the share")

    # what the operator sees for day D, before the reports go out
    day = time.strftime("%Y-%m-%d", time.gmtime(DAY))
    op = json.loads(report_cli(relay, "tls", "--json", "--day", day))
    rows = {(t["policy_domain"], t["policy_type"]): t for t in op["tables"]["tls"]}
    h.log(f"report tls: {op['tables']}")
    for d in ("tls.test", "enc.test", "quiet.test"):
        h.check((d, "no-policy-found") in rows, f"report tls has no row for {d}: {rows}")
    h.check(rows[("tls.test", "no-policy-found")]["successful"] >= 2
            and rows[("tls.test", "no-policy-found")]["failed"] == 0,
            f"tls.test sessions: {rows[('tls.test', 'no-policy-found')]}")
    h.check(rows[("enc.test", "no-policy-found")]["successful"] == 0
            and rows[("enc.test", "no-policy-found")]["failed"] >= 2,
            f"enc.test sessions: {rows[('enc.test', 'no-policy-found')]}")
    fails = [f for f in op["tables"]["failures"] if f["policy_domain"] == "enc.test"]
    h.check(fails and all(f["result_type"] == "starttls-not-supported"
                          and f["receiving_mx"] == "mx.enc.test" and f["receiving_ip"] == MX_ENC
                          and f["sending_ip"] == h.LEGACY_IP for f in fails),
            f"enc.test failure details: {fails}")
    share = op["tables"]["tls_share"]
    h.check(share == [{"egress": "legacy", "provider": "other", "delivered": 3, "over_tls": 3,
                       "tls_share": 100.0}], f"report tls, tls_share: {share}")
    tf = op["tables"]["tls_failures"]
    h.check(tf == [{"egress": "legacy", "provider": "other",
                    "result_type": "starttls-not-supported", "attempts": len(enc_deferrals())}],
            f"report tls, tls_failures: {tf}")
    page_path = env.path("report.html")
    report_cli(relay, "html", "--day", day, "-o", page_path)
    page = open(page_path).read()
    for table in ("tls_share", "tls_failures", "tls", "failures"):
        h.check(f'data-table="{table}"' in page, f"the HTML report has no {table} table")
    h.check("starttls-not-supported" in page, "the HTML report does not show the failure type")
    text = report_cli(relay, "tls", "--day", day)
    h.check("starttls-not-supported" in text and "enc.test" in text,
            f"report tls (text) lacks the enc.test failure:\n{text}")

    # past midnight and the configured hour: yesterday's reports go out
    set_clock(clock, DAY + 86400 + 2 * 3600)

    def got():
        return {m.msg.get("TLS-Report-Domain", "").strip(): m for m in reports.messages()}
    env.wait_for(lambda: {"tls.test", "enc.test"} <= set(got()), 90,
                 lambda: f"reports for tls.test and enc.test at reports.test; got {list(got())}; "
                 f"queue: {relay.queue('list').stdout}")
    schema = json.load(open(os.path.join(env.src, "tests", "data", "tlsrpt",
                                         "report.schema.json")))
    for domain, m in got().items():
        h.check(domain in ("tls.test", "enc.test"), f"a report for {domain}")
        want_rcpts = (["tlsrpt@reports.test", "second@reports.test"] if domain == "tls.test"
                      else ["tlsrpt@reports.test"])
        h.check(sorted(m.rcpts) == sorted(want_rcpts), f"{domain} report went to {m.rcpts}")
        h.check(m.mail_from == "tlsrpt@example.org", f"envelope sender {m.mail_from}")
        subject = re.sub(r"\s+", " ", m.msg.get("Subject", ""))
        h.check(re.fullmatch(rf"Report Domain: {re.escape(domain)} Submitter: "
                             r"relay\.outrelay\.test Report-ID: <[^>]+>", subject),
                f"Subject: {subject!r}")
        h.check(m.msg.get("TLS-Report-Submitter", "").strip() == "relay.outrelay.test",
                f"TLS-Report-Submitter: {m.msg.get('TLS-Report-Submitter')}")
        h.check(m.msg.get("DKIM-Signature") and "d=example.org" in m.msg.get("DKIM-Signature"),
                f"the {domain} report is not DKIM-signed by example.org")
        h.check(m.msg.get_content_type() == "multipart/report"
                and m.msg.get_param("report-type") == "tlsrpt",
                f"Content-Type: {m.msg.get('Content-Type')}")
        parts = [p for p in m.msg.get_payload() if p.get_content_type() ==
                 "application/tlsrpt+gzip"]
        h.check(len(parts) == 1, f"{domain}: {len(parts)} application/tlsrpt+gzip parts")
        fname = parts[0].get_filename()
        h.check(fname == f"relay.outrelay.test!{domain}!{DAY}!{DAY + 86400}.json.gz",
                f"file name {fname!r} is not per RFC 8460 section 5.1")
        report = json.loads(gzip.decompress(parts[0].get_payload(decode=True)))
        jsonschema.validate(report, schema)
        h.check(report["organization-name"] == "Outrelay Test"
                and report["contact-info"] == "tls@example.org", f"{report}")
        h.check(report["date-range"] == {"start-datetime": f"{day}T00:00:00Z",
                                         "end-datetime": f"{day}T23:59:59Z"},
                f"date-range {report['date-range']}")
        h.check(report["report-id"] in subject, "Report-ID of the Subject is not the report-id")
        h.check(len(report["policies"]) == 1, f"{domain} policies: {report['policies']}")
        pol = report["policies"][0]
        h.check(pol["policy"] == {"policy-type": "no-policy-found", "policy-domain": domain},
                f"{domain} policy: {pol['policy']}")
        row = rows[(domain, "no-policy-found")]
        h.check(pol["summary"] == {"total-successful-session-count": row["successful"],
                                   "total-failure-session-count": row["failed"]},
                f"{domain}: report summary {pol['summary']} vs report tls {row}")
        details = pol.get("failure-details", [])
        want = sorted((f["result_type"], f["sending_ip"], f["receiving_mx"], f["receiving_ip"],
                       f["sessions"]) for f in op["tables"]["failures"]
                      if f["policy_domain"] == domain)
        have = sorted((d["result-type"], d["sending-mta-ip"], d["receiving-mx-hostname"],
                       d["receiving-ip"], d["failed-session-count"]) for d in details)
        h.check(have == want, f"{domain}: failure-details {have} vs report tls {want}")
        # `report tlsrpt` prints the same policies
        cli = json.loads(report_cli(relay, "tlsrpt", "--domain", domain, "--day", day))
        h.check(cli == report, f"report tlsrpt: {cli} vs the mailed report {report}")
        h.log(f"{domain}: report valid, {pol['summary']}, {len(details)} failure groups")

    db = sqlite3.connect(os.path.join(cfg["state"], "tlsrpt.db"))
    sent = {r[0]: r for r in db.execute("SELECT domain, queue_id, rua, note FROM sent "
                                        "WHERE day = ?", (day,))}
    db.close()
    h.check(sent.get("quiet.test") and sent["quiet.test"][3] == "no _smtp._tls record",
            f"quiet.test not settled as without a record: {sent}")
    h.check(sent["enc.test"][1] and sent["tls.test"][1], f"queue ids not remembered: {sent}")

    # a restart on the same day sends nothing again
    count = len(reports.messages())
    relay.restart()
    time.sleep(25)  # two checks of the timer
    h.check(len(reports.messages()) == count,
            f"{len(reports.messages()) - count} more reports after a restart")
    relay.stop()


if __name__ == "__main__":
    h.main(test)
