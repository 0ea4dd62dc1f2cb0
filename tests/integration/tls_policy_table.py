"""tls_policy_table.py - the administrator's tls_policy: table decides TLS per recipient domain,
over the egress's setting, and every attempt's record says which level and which source.

One relay (egress legacy: tls optional, the test CA as tls_ca_file) and five receiving MXs on
loopback, each a real sink:
  enc.test       encrypt    smtp-sink without STARTTLS: deferred 4.7.4 naming the policy,
                            nothing delivered, the message still queued
  vbad.test      verify     STARTTLS with a certificate for another name (same CA): deferred
                            4.7.5 naming the policy, nothing delivered
  a.vok.test     .vok.test: verify (subdomain rule, default name = the MX host)
                            STARTTLS, certificate for mx.a.vok.test: delivered over TLS
  plain.test     none       a sink that offers STARTTLS: delivered in plaintext
  tls.test       (no rule)  the egress decides: delivered over TLS, source "egress"
The delivered and deferred rows carry tls_policy (none/may/encrypt/verify) and
tls_policy_source (table/egress); the deferred ones the RFC 8460 result type in tls_failure.
"""
import time

import harness as h

MX_ENC = "127.0.0.50"
MX_VBAD = "127.0.0.51"
MX_VOK = "127.0.0.52"
MX_PLAIN = "127.0.0.53"


def rows(relay, event, rcpt):
    return relay.events("SELECT * FROM events WHERE event = ? AND recipient LIKE ?",
                        (event, f"%{rcpt}%"))


def test(env):
    h.need_binary(env)
    zones = h.default_zones()
    zones["enc.test"] = h.zone_with_mx("enc.test", MX_ENC)
    zones["vbad.test"] = h.zone_with_mx("vbad.test", MX_VBAD)
    zones["vok.test"] = h.zone_text("vok.test", f"a IN MX 10 mx.a\nmx.a IN A {MX_VOK}\n")
    zones["plain.test"] = h.zone_with_mx("plain.test", MX_PLAIN)
    nsd = h.Nsd(env, zones=zones)
    mx_port = env.free_port([MX_ENC, MX_VBAD, MX_VOK, MX_PLAIN, h.MX_TLS_TEST])
    tls_dir = env.path("tls")
    bad_cert = h.make_ca_and_cert(tls_dir, ["mx.elsewhere.test"], prefix="vbad")
    ok_cert = h.make_ca_and_cert(tls_dir, ["mx.a.vok.test"], prefix="vok")
    plain_cert = h.make_ca_and_cert(tls_dir, ["mx.plain.test"], prefix="plain")
    tls_cert = h.make_ca_and_cert(tls_dir, ["mx.tls.test"], prefix="tlstest")

    enc_sink = h.SmtpSink(env, MX_ENC, mx_port, "enc.test")
    vbad_sink = h.PySink(env, MX_VBAD, mx_port, "vbad.test", tls=bad_cert)
    vok_sink = h.PySink(env, MX_VOK, mx_port, "vok.test", tls=ok_cert)
    plain_sink = h.PySink(env, MX_PLAIN, mx_port, "plain.test", tls=plain_cert)
    tls_sink = h.PySink(env, h.MX_TLS_TEST, mx_port, "tls.test", tls=tls_cert)

    egress = h.default_egress()
    egress["legacy"]["tls_ca_file"] = tls_cert["ca"]
    policy = {"enc.test": "encrypt", "vbad.test": {"level": "verify"}, ".vok.test": "verify",
              "plain.test": "none"}
    relay = h.Relay(env, h.standard_config(env, nsd, mx_port, egress=egress, tls_policy=policy))

    rcpts = ["u@enc.test", "u@vbad.test", "u@a.vok.test", "u@plain.test", "u@tls.test"]
    for rcpt in rcpts:
        res = h.send(relay.host, relay.port, "alice@example.org", [rcpt],
                     h.make_message("alice@example.org", rcpt, "tls policy",
                                    message_id=f"<policy-{rcpt}>"))
        h.check(res.accepted, f"relay refused the message to {rcpt}: {res}")

    # --- delivered: verify with the right name, none, and the egress default ----------------
    def delivered(sink, rcpt):
        return env.wait_for(
            lambda: [m for m in sink.messages() if m.message_id == f"<policy-{rcpt}>"], 60,
            lambda: f"delivery to {rcpt}; records.db: {relay.history(rcpt)}")

    m = delivered(vok_sink, "u@a.vok.test")[0]
    h.check(m.tls_version, f"verify policy delivered a.vok.test without TLS: {m}")
    m = delivered(plain_sink, "u@plain.test")[0]
    h.check(not m.tls_version, f"none policy used STARTTLS towards plain.test: {m}")
    m = delivered(tls_sink, "u@tls.test")[0]
    h.check(m.tls_version, f"the egress's optional TLS was not used towards tls.test: {m}")

    expect = {"u@a.vok.test": ("verify", "table"), "u@plain.test": ("none", "table"),
              "u@tls.test": ("may", "egress")}
    for rcpt, (level, source) in expect.items():
        r = env.wait_for(lambda: rows(relay, "delivered", rcpt), 15, f"a delivered row for {rcpt}")
        got = (r[0].get("tls_policy"), r[0].get("tls_policy_source"))
        h.check(got == (level, source), f"delivered row of {rcpt} has policy {got}, "
                f"expected {(level, source)}: {r[0]}")
    r = rows(relay, "delivered", "u@a.vok.test")[0]
    h.check(r.get("tls_version"), f"verify delivery recorded without a TLS version: {r}")
    h.log("delivered: verify over TLS, none in plaintext, egress default over TLS")

    # --- deferred: encrypt without STARTTLS, verify with the wrong name ----------------------
    # the last element: the RFC 8460 result type recorded in tls_failure
    cases = {"u@enc.test": ("encrypt", "4.7.4", "tls_policy enc.test: encrypt",
                            "starttls-not-supported"),
             "u@vbad.test": ("verify", "4.7.5", "tls_policy vbad.test: verify",
                             "certificate-host-mismatch")}
    for rcpt, (level, enhanced, reason, failure) in cases.items():
        def deferral():
            return [d for d in rows(relay, "deferred", rcpt)
                    if reason in (d.get("reply_text") or "")]
        d = env.wait_for(deferral, 30, lambda: f"a deferred row naming '{reason}' for {rcpt}; "
                         f"records.db: {relay.history(rcpt)}")[0]
        h.check(d.get("enhanced_code") == enhanced,
                f"{rcpt} deferred with {d.get('enhanced_code')}, expected {enhanced}: {d}")
        h.check((d.get("tls_policy"), d.get("tls_policy_source")) == (level, "table"),
                f"deferred row of {rcpt} does not carry the table's {level}: {d}")
        h.check(d.get("tls_failure") == failure,
                f"deferred row of {rcpt} has tls_failure {d.get('tls_failure')}, "
                f"expected {failure}: {d}")
        h.log(f"{rcpt}: deferred {enhanced}: {d.get('reply_text')}")

    time.sleep(2)  # a retry or two (retry: 1s, 2s) must not change the outcome
    leaked = [m for m in enc_sink.messages(settle=0) if m.message_id == "<policy-u@enc.test>"]
    h.check(not leaked, f"encrypt policy delivered to a sink without STARTTLS: {leaked}")
    leaked = [m for m in vbad_sink.messages() if m.message_id == "<policy-u@vbad.test>"]
    h.check(not leaked, f"verify policy delivered to a certificate for another name: {leaked}")
    for rcpt in cases:
        final = relay.events("SELECT * FROM events WHERE event IN "
                             "('delivered','bounced','expired') AND recipient LIKE ?",
                             (f"%{rcpt}%",))
        h.check(not final, f"{rcpt} should stay queued, records.db says: {final}")
    q = relay.queue("list")
    h.check(q.returncode == 0 and "enc.test" in q.stdout and "vbad.test" in q.stdout,
            f"queue list does not show the two held recipients:\n{q.stdout}{q.stderr}")
    relay.stop()


if __name__ == "__main__":
    h.main(test)
