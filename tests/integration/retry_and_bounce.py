"""retry_and_bounce.py - temporary failures are retried, permanent ones and expiry produce an
RFC 3464 DSN at the sender domain's MX, and a bounce never gets a bounce.

Receiving MXs (aiosmtpd sinks with reply scripts, each its own test domain):
  (a) retry.example   first DATA -> 451 4.3.0, then 250: the message arrives exactly once
  (b) reject.example  every RCPT -> 550 5.1.1: DSN (multipart/report, Action: failed,
                   Status: 5.1.1, envelope sender <>) to the sender at example.org's MX
  (c) defer.example   every RCPT -> 451 4.3.0, on a second relay with max_lifetime 3s: expiry DSN
  (d) reject.example  again, with the null sender: bounced, and no DSN at all
example.org's MX (127.0.0.20) is an smtp-sink that receives the DSNs. delivery.retry is 1s.
"""
import re
import time

import harness as h

RETRY_IP, REJECT_IP, DEFER_IP = "127.0.0.50", "127.0.0.51", "127.0.0.52"


def is_failure_report(m):
    """True unless the message is a delay warning (Action: delayed only), which is allowed."""
    text = m.raw.decode("utf-8", "replace")
    actions = re.findall(r"(?im)^Action:\s*(\S+)", text)
    return not actions or any(a.lower() != "delayed" for a in actions)


def dsn_for(dsn_sink, recipient):
    """Failure DSNs (not delay warnings) at example.org's MX that report on `recipient`."""
    out = []
    for m in dsn_sink.messages():
        text = m.raw.decode("utf-8", "replace")
        if re.search(r"(?im)^(Final|Original)-Recipient:\s*rfc822;\s*<?" + re.escape(recipient),
                     text) and is_failure_report(m):
            out.append(m)
    return out


def check_dsn(m, sender, recipient, status_re, label):
    text = m.raw.decode("utf-8", "replace")
    h.check(m.mail_from == "", f"{label}: DSN envelope sender is <{m.mail_from}>, must be <>")
    h.check(m.rcpts == [sender], f"{label}: DSN went to {m.rcpts}, expected [{sender}]")
    h.check(m.msg.get_content_type() == "multipart/report",
            f"{label}: DSN Content-Type is {m.msg.get_content_type()}, not multipart/report")
    h.check((m.msg.get_param("report-type") or "").lower() == "delivery-status",
            f"{label}: report-type is {m.msg.get_param('report-type')!r}")
    parts = [p.get_content_type() for p in m.msg.walk()]
    h.check("message/delivery-status" in parts,
            f"{label}: no message/delivery-status part (parts: {parts})")
    h.check(re.search(r"(?im)^Action:\s*failed\s*$", text), f"{label}: no 'Action: failed':\n{text}")
    st = re.search(r"(?im)^Status:\s*(\S+)", text)
    h.check(st and re.fullmatch(status_re, st.group(1)),
            f"{label}: Status is {st.group(1) if st else None}, expected {status_re}")
    h.log(f"{label}: DSN ok (Status {st.group(1)})")


def test(env):
    h.need_binary(env)
    zones = h.default_zones()
    zones["retry.example"] = h.zone_with_mx("retry.example", RETRY_IP)
    zones["reject.example"] = h.zone_with_mx("reject.example", REJECT_IP)
    zones["defer.example"] = h.zone_with_mx("defer.example", DEFER_IP)
    nsd = h.Nsd(env, zones)
    mx_port = env.free_port([h.MX_EXAMPLE_ORG, RETRY_IP, REJECT_IP, DEFER_IP, h.LEGACY_IP])
    dsn_sink = h.SmtpSink(env, h.MX_EXAMPLE_ORG, mx_port, "example.org")
    retry_sink = h.PySink(env, RETRY_IP, mx_port, "retry.example",
                          script=[{"on": "DATA", "reply": "451 4.3.0 try again later",
                                   "count": 1}])
    reject_sink = h.PySink(env, REJECT_IP, mx_port, "reject.example",
                           script=[{"on": "RCPT", "reply": "550 5.1.1 no such user here"}])
    defer_sink = h.PySink(env, DEFER_IP, mx_port, "defer.example",
                          script=[{"on": "RCPT", "reply": "451 4.3.0 come back later"}])

    relay = h.Relay(env, h.standard_config(env, nsd, mx_port, retry=["1s"]))
    relay_exp = h.Relay(env, h.standard_config(
        env, nsd, mx_port, retry=["1s"], max_lifetime="3s", spool=env.path("spool-expiry"),
        state=env.path("state-expiry")), name="outrelay-expiry")

    def submit(r, sender, rcpt, msgid):
        res = h.send(r.host, r.port, sender, [rcpt],
                     h.make_message(sender, rcpt, f"to {rcpt}", message_id=msgid))
        h.check(res.accepted, f"relay refused {msgid}: {res}")

    submit(relay, "sender-a@example.org", "user@retry.example", "<retry-a@example.org>")
    submit(relay, "sender-b@example.org", "gone@reject.example", "<reject-b@example.org>")
    submit(relay_exp, "sender-c@example.org", "slow@defer.example", "<expire-c@example.org>")
    submit(relay, "", "gone-too@reject.example", "<nullsender-d@example.org>")

    # (a) 451 then 250: exactly once
    env.wait_for(lambda: [m for m in retry_sink.messages()
                          if m.message_id == "<retry-a@example.org>"], 60,
                 lambda: "(a) delivery to retry.example after the 451; records.db: "
                 f"{relay.history('user@retry.example')}")
    env.wait_for(lambda: relay.events("SELECT * FROM events WHERE event='delivered' AND "
                                      "recipient LIKE '%user@retry.example%'"), 15,
                 "(a) a delivered row for user@retry.example")
    deferred = relay.events("SELECT * FROM events WHERE event='deferred' AND "
                            "recipient LIKE '%user@retry.example%'")
    h.check(deferred and deferred[0].get("reply_code") == 451,
            f"(a) expected a deferred row with reply_code 451, got {deferred}")
    h.log(f"(a) deferred then delivered; 451s given: {len(retry_sink.replies())}")

    # (b) 550 5.1.1: DSN to the sender
    dsns = env.wait_for(lambda: dsn_for(dsn_sink, "gone@reject.example"), 60,
                        lambda: "(b) a DSN for gone@reject.example at example.org's MX; records.db: "
                        f"{relay.history('gone@reject.example')}")
    check_dsn(dsns[0], "sender-b@example.org", "gone@reject.example", r"5\.1\.1", "(b)")
    bounced = relay.events("SELECT * FROM events WHERE event='bounced' AND "
                           "recipient LIKE '%gone@reject.example%'")
    h.check(bounced and bounced[0].get("reply_code") == 550,
            f"(b) expected a bounced row with reply_code 550: {bounced}")

    # (c) expiry: DSN after max_lifetime
    dsns_c = env.wait_for(lambda: dsn_for(dsn_sink, "slow@defer.example"), 60,
                          lambda: "(c) an expiry DSN for slow@defer.example at example.org's MX; "
                          f"records.db: {relay_exp.history('slow@defer.example')}")
    check_dsn(dsns_c[0], "sender-c@example.org", "slow@defer.example", r"[45]\.\d{1,3}\.\d{1,3}",
              "(c)")
    expired = relay_exp.events("SELECT * FROM events WHERE event='expired'")
    h.check(expired, "(c) no 'expired' row in records.db")

    # (d) null sender: bounced, never a DSN
    env.wait_for(lambda: relay.events("SELECT * FROM events WHERE event='bounced' AND "
                                      "recipient LIKE '%gone-too@reject.example%'"), 60,
                 "(d) a bounced row for gone-too@reject.example")
    time.sleep(4)
    h.check(not dsn_for(dsn_sink, "gone-too@reject.example"),
            "(d) a DSN was sent for a message with the null sender")

    # exactly-once and no stray DSNs
    time.sleep(1)
    ids = h.message_ids(retry_sink.messages())
    h.check(ids == {"<retry-a@example.org>": 1}, f"(a) retry.example received {ids}")
    h.check(not reject_sink.messages() and not defer_sink.messages(),
            "reject.example/defer.example sinks accepted messages they should have refused")
    failures = [m for m in dsn_sink.messages() if is_failure_report(m)]
    h.check(len(failures) == 2, f"example.org's MX got {len(failures)} failure reports, "
            f"expected 2 DSNs ((b) and (c)): {failures}")
    relay.stop()
    relay_exp.stop()


if __name__ == "__main__":
    h.main(test)
