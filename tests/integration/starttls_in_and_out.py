"""starttls_in_and_out.py - STARTTLS works inbound and outbound, and an egress with `tls: required`
never delivers in clear text.

1. A client negotiates STARTTLS with the relay (certificate from the test CA, verified), sends a
   message to x@tls.test; the aiosmtpd sink at tls.test's MX offers STARTTLS and must record the
   delivery as TLS (and records.db's delivered row carries the TLS version).
2. A second relay whose egress says `tls: required` sends to example.net, whose MX is an
   smtp-sink (no STARTTLS): nothing arrives, `outrelay queue list` still shows the message, and
   records.db has a `deferred` row whose reply_text or detail names TLS as the reason.
"""
import time

import harness as h


def test(env):
    h.need_binary(env)
    nsd = h.Nsd(env)
    mx_port = env.free_port(h.SINK_IPS + [h.LEGACY_IP])
    relay_certs = h.make_ca_and_cert(env.path("tls"), ["relay.outrelay.test"], [h.RELAY_IP],
                                     prefix="relay")
    mx_certs = h.make_ca_and_cert(env.path("tls"), ["mx.tls.test"], [h.MX_TLS_TEST],
                                  prefix="mx")
    tls_sink = h.PySink(env, h.MX_TLS_TEST, mx_port, "tls.test", tls=mx_certs)
    plain_sink = h.SmtpSink(env, h.MX_EXAMPLE_NET, mx_port, "example.net")

    # --- 1. TLS in and out --------------------------------------------------------------------
    relay = h.Relay(env, h.standard_config(env, nsd, mx_port, tls=relay_certs))
    ctx = h.client_tls_context(relay_certs["ca"])
    msgid = "<tls-in-out@example.org>"
    res = h.send(relay.host, relay.port, "alice@example.org", ["x@tls.test"],
                 h.make_message("alice@example.org", "x@tls.test", "over TLS", message_id=msgid),
                 starttls=True, tls_context=ctx)
    first_ehlo = res.steps[1] if len(res.steps) > 1 else None
    h.check(first_ehlo and "STARTTLS" in first_ehlo[2].upper(),
            f"relay's EHLO does not advertise STARTTLS: {res}")
    h.check(res.code("starttls") == 220, f"STARTTLS refused: {res}")
    h.check(res.tls_version and res.tls_version.startswith("TLS"),
            f"no TLS negotiated inbound: {res}")
    h.check(res.accepted, f"message over TLS not accepted: {res}")
    h.log(f"inbound STARTTLS ok: {res.tls_version} {res.tls_cipher}")

    msgs = env.wait_for(lambda: [m for m in tls_sink.messages() if m.message_id == msgid], 60,
                        lambda: "delivery to the STARTTLS sink at tls.test; records.db: "
                        f"{relay.history('x@tls.test')}")
    h.check(len(msgs) == 1, f"tls.test sink got {msgid} {len(msgs)} times")
    m = msgs[0]
    h.check(m.tls_version, f"message reached tls.test without TLS although the MX offers "
            f"STARTTLS: {m}")
    h.check(m.client_addr == h.LEGACY_IP, f"delivery to tls.test came from {m.client_addr}, "
            f"not the egress source {h.LEGACY_IP}")
    h.log(f"outbound STARTTLS ok: {m.tls_version} {m.tls_cipher}")

    rows = env.wait_for(lambda: relay.events(
        "SELECT * FROM events WHERE event='delivered' AND recipient LIKE '%x@tls.test%'"), 15,
        "a delivered row for x@tls.test in records.db")
    h.check(rows[0].get("tls_version"), f"delivered row has no tls_version: {rows[0]}")
    relay.stop()

    # --- 2. tls: required towards a sink without STARTTLS ------------------------------------
    egress = {"legacy": {"type": "direct", "source": [h.LEGACY_IP],
                         "helo": "legacy.outrelay.test", "tls": "required"}}
    cfg = h.standard_config(env, nsd, mx_port, egress=egress, spool=env.path("spool-required"),
                            state=env.path("state-required"))
    relay2 = h.Relay(env, cfg, name="outrelay-required")
    msgid2 = "<tls-required@example.org>"
    res = h.send(relay2.host, relay2.port, "alice@example.org", ["bob@example.net"],
                 h.make_message("alice@example.org", "bob@example.net", "must not go in clear",
                                message_id=msgid2))
    h.check(res.accepted, f"relay refused the message: {res}")

    def tls_deferral():
        rows = relay2.events("SELECT * FROM events WHERE event='deferred' "
                             "AND recipient LIKE '%bob@example.net%'")
        return [r for r in rows
                if "tls" in f"{r.get('reply_text') or ''} {r.get('detail') or ''}".lower()]

    rows = env.wait_for(tls_deferral, 30, lambda: "a 'deferred' row mentioning TLS for "
                        f"bob@example.net; records.db: {relay2.history('bob@example.net')}")
    h.log(f"deferred: reply_text={rows[0].get('reply_text')!r} detail={rows[0].get('detail')!r}")
    time.sleep(2)   # let a retry or two happen (retry: 1s)
    leaked = [m for m in plain_sink.messages(settle=0) if m.message_id == msgid2]
    h.check(not leaked, f"tls: required egress delivered in clear text: {leaked}")
    bad = relay2.events("SELECT * FROM events WHERE event IN ('delivered','bounced','expired') "
                        "AND recipient LIKE '%bob@example.net%'")
    h.check(not bad, f"message should stay queued, records.db says: {bad}")

    queue_id = rows[0]["queue_id"]
    q = relay2.queue("list")
    h.check(q.returncode == 0, f"queue list failed ({q.returncode}): {q.stderr}")
    h.check(queue_id in q.stdout or "bob@example.net" in q.stdout,
            f"queue list does not show {queue_id} / bob@example.net:\n{q.stdout}")
    relay2.stop()


if __name__ == "__main__":
    h.main(test)
