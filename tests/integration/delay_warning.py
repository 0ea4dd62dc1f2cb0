"""delay_warning.py - a message that stays deferred past delivery.delay_warning brings its sender
exactly one RFC 3464 delay warning (Action: delayed), also across more retries and a restart.

Receivers (each its own test domain, MX served by NSD):
  defer.example   every RCPT -> 451 4.3.0 (a Python sink): the mail stays queued
  ontime.example  accepts everything: that mail is delivered long before the warning is due
example.org (the senders' domain) has its MX at 127.0.0.20, an smtp-sink that receives the DSNs.
The calendar is moved with OUTRELAY_TEST_CLOCK from T0 past T0 + delay_warning (2h).

Relay "warn" (delay_warning 2h, max_lifetime 5d):
  (a) sender-a -> slow@defer.example: one warning, its RFC 3464 fields checked; a "delayed" row
      in records.db; no second one after more retries, nor after a restart
  (b) sender-b -> fine@ontime.example: delivered in time, no warning
  (c) null sender -> nullslow@defer.example: never a warning
Relay "off" (delay_warning 0), same clock:
  (d) sender-d -> offslow@defer.example: no warning
"""
import email.utils
import os
import re
import time

import harness as h

DEFER_IP, ONTIME_IP = "127.0.0.52", "127.0.0.53"
T0 = 1796000000
WARN_AFTER = 2 * 3600
LIFETIME = 5 * 86400


def set_clock(path, t):
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(f"{int(t)}\n")
    os.replace(tmp, path)


def warnings_for(dsn_sink, recipient):
    """Delay warnings (every Action: delayed) at example.org's MX that report on `recipient`."""
    out = []
    for m in dsn_sink.messages():
        text = m.raw.decode("utf-8", "replace")
        actions = re.findall(r"(?im)^Action:\s*(\S+)", text)
        if actions and all(a.lower() == "delayed" for a in actions) and re.search(
                r"(?im)^Final-Recipient:\s*rfc822;\s*<?" + re.escape(recipient), text):
            out.append(m)
    return out


def reports_for(dsn_sink, recipient):
    """Every DSN at example.org's MX that names `recipient`."""
    return [m for m in dsn_sink.messages()
            if re.search(r"(?im)^(Final|Original)-Recipient:\s*rfc822;\s*<?" + re.escape(recipient),
                         m.raw.decode("utf-8", "replace"))]


def deferrals(relay, recipient):
    return len(relay.events("SELECT id FROM events WHERE event='deferred' AND recipient LIKE ?",
                            (f"%{recipient}%",)))


def wait_more_deferrals(env, relay, recipient, more):
    start = deferrals(relay, recipient)
    env.wait_for(lambda: deferrals(relay, recipient) >= start + more, 60,
                 lambda: f"{more} more deferrals of {recipient}: {relay.history(recipient)}")


def check_warning(m, arrival_floor):
    """The RFC 3464 fields of the delay warning for slow@defer.example sent to sender-a."""
    text = m.raw.decode("utf-8", "replace")
    h.check(m.mail_from == "", f"warning envelope sender is <{m.mail_from}>, must be <>")
    h.check(m.rcpts == ["sender-a@example.org"], f"warning went to {m.rcpts}")
    h.check(m.msg.get_content_type() == "multipart/report",
            f"Content-Type is {m.msg.get_content_type()}, not multipart/report")
    h.check((m.msg.get_param("report-type") or "").lower() == "delivery-status",
            f"report-type is {m.msg.get_param('report-type')!r}")
    h.check("Delayed" in (m.msg.get("Subject") or ""), f"Subject: {m.msg.get('Subject')!r}")
    h.check((m.msg.get("Auto-Submitted") or "").strip() == "auto-replied",
            f"Auto-Submitted: {m.msg.get('Auto-Submitted')!r}")
    parts = [p.get_content_type() for p in m.msg.get_payload()]
    h.check(parts == ["text/plain", "message/delivery-status", "text/rfc822-headers"],
            f"parts of the warning: {parts}")
    h.check(re.search(r"(?im)^Reporting-MTA:\s*dns;\s*relay\.outrelay\.test\s*$", text),
            f"no Reporting-MTA for relay.outrelay.test:\n{text}")
    h.check(re.search(r"(?im)^Arrival-Date:\s*\S", text), f"no Arrival-Date:\n{text}")
    h.check(re.search(r"(?im)^Final-Recipient:\s*rfc822;\s*slow@defer\.example\s*$", text),
            f"no Final-Recipient for slow@defer.example:\n{text}")
    h.check(re.search(r"(?im)^Status:\s*4\.3\.0\s*$", text), f"Status is not 4.3.0:\n{text}")
    h.check(re.search(r"(?im)^Diagnostic-Code:\s*smtp;\s*451 4\.3\.0 come back later\s*$", text),
            f"Diagnostic-Code is not the last reply:\n{text}")
    h.check(re.search(r"(?im)^Remote-MTA:\s*dns;\s*mx\.defer\.example\s*$", text),
            f"no Remote-MTA mx.defer.example:\n{text}")
    until = re.search(r"(?im)^Will-Retry-Until:\s*(.+?)\s*$", text)
    h.check(until, f"no Will-Retry-Until:\n{text}")
    when = email.utils.parsedate_to_datetime(until.group(1)).timestamp()
    h.check(arrival_floor + LIFETIME <= when <= arrival_floor + LIFETIME + 120,
            f"Will-Retry-Until {until.group(1)} is not the arrival (~{arrival_floor}) + 5d")
    h.check(b"Subject: delayed one" in m.raw, "the original header section is not attached")
    h.check(b"the body stays home" not in m.raw, "a delay warning must carry headers only")
    h.log("(a) warning fields ok: " + ", ".join(
        re.findall(r"(?im)^((?:Action|Status|Will-Retry-Until):.*?)\s*$", text)))


def test(env):
    h.need_binary(env)
    clock = env.path("clock")
    set_clock(clock, T0)
    os.environ["OUTRELAY_TEST_CLOCK"] = clock  # inherited by the relays
    zones = h.default_zones()
    zones["defer.example"] = h.zone_with_mx("defer.example", DEFER_IP)
    zones["ontime.example"] = h.zone_with_mx("ontime.example", ONTIME_IP)
    nsd = h.Nsd(env, zones)
    mx_port = env.free_port([h.MX_EXAMPLE_ORG, DEFER_IP, ONTIME_IP, h.LEGACY_IP])
    dsn_sink = h.SmtpSink(env, h.MX_EXAMPLE_ORG, mx_port, "example.org")
    defer_sink = h.PySink(env, DEFER_IP, mx_port, "defer.example",
                          script=[{"on": "RCPT", "reply": "451 4.3.0 come back later"}])
    ontime_sink = h.PySink(env, ONTIME_IP, mx_port, "ontime.example")

    def config(**kw):
        cfg = h.standard_config(env, nsd, mx_port, retry=["1s"], max_lifetime="5d", **kw)
        return cfg

    warn_cfg = config()
    warn_cfg["delivery"]["delay_warning"] = "2h"
    relay = h.Relay(env, warn_cfg)
    off_cfg = config(spool=env.path("spool-off"), state=env.path("state-off"))
    off_cfg["delivery"]["delay_warning"] = "0"
    relay_off = h.Relay(env, off_cfg, name="outrelay-off")

    def submit(r, sender, rcpt, subject):
        body = "the body stays home\r\n"
        res = h.send(r.host, r.port, sender, [rcpt],
                     h.make_message(sender or "mailer@example.org", rcpt, subject, body=body))
        h.check(res.accepted, f"relay refused the message to {rcpt}: {res}")

    submit(relay, "sender-a@example.org", "slow@defer.example", "delayed one")
    submit(relay, "sender-b@example.org", "fine@ontime.example", "on time")
    submit(relay, "", "nullslow@defer.example", "null sender")
    submit(relay_off, "sender-d@example.org", "offslow@defer.example", "warnings off")

    # before delay_warning: retries, delivery of (b), and no warning yet
    env.wait_for(lambda: ontime_sink.messages(), 60,
                 lambda: f"(b) delivery to ontime.example: {relay.history('fine@ontime.example')}")
    for r, rcpt in ((relay, "slow@defer.example"), (relay, "nullslow@defer.example"),
                    (relay_off, "offslow@defer.example")):
        wait_more_deferrals(env, r, rcpt, 2)
    h.check(not dsn_sink.messages(), f"a DSN before delay_warning passed: {dsn_sink.messages()}")

    # past delay_warning: exactly one warning, for (a)
    set_clock(clock, T0 + WARN_AFTER + 60)
    warned = env.wait_for(lambda: warnings_for(dsn_sink, "slow@defer.example"), 60,
                          lambda: "(a) a delay warning for slow@defer.example; records.db: "
                          f"{relay.history('slow@defer.example')}")
    check_warning(warned[0], T0)
    rows = env.wait_for(lambda: relay.events(
        "SELECT * FROM events WHERE event='delayed' AND recipient LIKE '%slow@defer.example%'"),
        15, "(a) a 'delayed' row in records.db")
    h.check(len(rows) == 1 and rows[0].get("dsn_queue_id") and rows[0].get("sender") ==
            "sender-a@example.org" and rows[0].get("enhanced_code") == "4.3.0",
            f"(a) the 'delayed' row: {rows}")

    # more retries, then a restart, then more retries and a later calendar: nothing more
    for r, rcpt in ((relay, "slow@defer.example"), (relay, "nullslow@defer.example"),
                    (relay_off, "offslow@defer.example")):
        wait_more_deferrals(env, r, rcpt, 3)
    relay.restart()
    set_clock(clock, T0 + WARN_AFTER + 3600)
    wait_more_deferrals(env, relay, "slow@defer.example", 3)
    wait_more_deferrals(env, relay_off, "offslow@defer.example", 2)
    time.sleep(2)
    got = warnings_for(dsn_sink, "slow@defer.example")
    h.check(len(got) == 1, f"(a) {len(got)} delay warnings for slow@defer.example, expected 1")
    rows = relay.events("SELECT id FROM events WHERE event='delayed'")
    h.check(len(rows) == 1, f"(a) {len(rows)} 'delayed' rows, expected 1")
    h.check(not reports_for(dsn_sink, "fine@ontime.example"), "(b) a DSN for delivered mail")
    h.check(not reports_for(dsn_sink, "nullslow@defer.example"),
            "(c) a DSN for a message with the null sender")
    h.check(not reports_for(dsn_sink, "offslow@defer.example"),
            "(d) a delay warning although delay_warning is 0")
    h.check(not relay_off.events("SELECT id FROM events WHERE event='delayed'"),
            "(d) a 'delayed' row although delay_warning is 0")
    h.check(len(dsn_sink.messages()) == 1,
            f"example.org's MX got {len(dsn_sink.messages())} messages, expected the one warning")
    h.check(not defer_sink.messages(), "defer.example accepted a message it refuses")
    h.log("one warning for (a), none for (b), (c), (d), also after a restart")
    relay.stop()
    relay_off.stop()


if __name__ == "__main__":
    h.main(test)
