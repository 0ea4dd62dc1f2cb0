"""requiretls_honoured.py - REQUIRETLS (RFC 8689) in and out.

Ingress: EHLO offers REQUIRETLS only over TLS; MAIL FROM ... REQUIRETLS in plaintext gets
530 5.7.10; after STARTTLS it is accepted. Egress (tls: optional, no CA file: the policy does
not verify, so the relay checks the certificate against the MX name itself; the test CA is the
relay's system store through SSL_CERT_FILE): the REQUIRETLS message to example.net (verified
certificate, REQUIRETLS offered) is delivered over TLS with the REQUIRETLS parameter; to
example.com (REQUIRETLS not offered), tls.test (certificate for another name) and nomx.test (no
STARTTLS at all) it is bounced with 5.7.30 and none of those servers sees a MAIL for it; the
sender gets a DSN per bounce with the original header and without its body, itself sent with
REQUIRETLS (the sender's MX offers it). A message without
REQUIRETLS to tls.test still goes (opportunistic TLS), so the refusal is the message's.
example.net's and example.org's zones are DNSSEC-signed in the test (their keys the relay's
trust anchors): RFC 8689
section 4.2.1 wants the MX host from a validated MX answer or an MTA-STS policy. unsigned.test
has the same MX host (verified certificate, REQUIRETLS offered) through an unsigned zone: bounced
5.7.30 as well.

Next MX (RFC 8689 section 4.2.1: the client says QUIT and tries the domain's other MX hosts,
and bounces only when none will do): two.test's preferred MX (mx.example.com) does not offer
REQUIRETLS, its second (mx.example.net) does, so the REQUIRETLS message to two.test reaches
example.net's server and mx.example.com never sees its MAIL; a message without REQUIRETLS to
two.test still goes to the preferred MX. allbad.test's two MX hosts (mx.example.com, no
REQUIRETLS; mx.tls.test, a certificate for another name) both refuse: bounced 5.7.30 with both
reasons. half.test's second MX refuses connections: its REQUIRETLS message is deferred (that
host may come back), not bounced, and the preferred MX does not get it.
"""
import base64
import os
import smtplib

import harness as h

SECRET = "the body that must not travel in the clear"


def send_requiretls(relay, ca, rcpt, msgid):
    data = h.make_message("alice@example.org", rcpt, "requiretls", message_id=msgid,
                          body=SECRET + "\r\n")
    s = smtplib.SMTP(relay.host, relay.port, timeout=30)
    s.ehlo("client.example.org")
    s.starttls(context=h.client_tls_context(ca))
    s.ehlo("client.example.org")
    h.check(s.has_extn("requiretls"), f"REQUIRETLS not offered over TLS: {s.esmtp_features}")
    refused = s.sendmail("alice@example.org", [rcpt], data, mail_options=["REQUIRETLS"])
    h.check(not refused, f"refused: {refused}")
    s.quit()


def test(env):
    h.need_binary(env)
    zones = h.default_zones()
    signed = h.dnssec_sign(env, "example.net", zones["example.net"])
    zones["example.net"] = signed.text
    signed_org = h.dnssec_sign(env, "example.org", zones["example.org"])  # the DSNs' way
    zones["example.org"] = signed_org.text
    zones["unsigned.test"] = h.zone_text("unsigned.test", "@ IN MX 10 mx.example.net.\n")
    two = h.dnssec_sign(env, "two.test", h.zone_text(
        "two.test", "@ IN MX 10 mx.example.com.\n@ IN MX 20 mx.example.net.\n"))
    zones["two.test"] = two.text
    allbad = h.dnssec_sign(env, "allbad.test", h.zone_text(
        "allbad.test", "@ IN MX 10 mx.example.com.\n@ IN MX 20 mx.tls.test.\n"))
    zones["allbad.test"] = allbad.text
    half = h.dnssec_sign(env, "half.test", h.zone_text(
        "half.test", "@ IN MX 10 mx.example.com.\n@ IN MX 20 dead\ndead IN A 127.0.0.99\n"))
    zones["half.test"] = half.text
    nsd = h.Nsd(env, zones)
    mx_port = env.free_port(h.SINK_IPS + [h.LEGACY_IP])
    tls_dir = env.path("tls")
    relay_certs = h.make_ca_and_cert(tls_dir, ["relay.outrelay.test"], [h.RELAY_IP], "relay")
    net_certs = h.make_ca_and_cert(tls_dir, ["mx.example.net"], [], "net")
    com_certs = h.make_ca_and_cert(tls_dir, ["mx.example.com"], [], "com")
    wrong_certs = h.make_ca_and_cert(tls_dir, ["wrong.example"], [], "wrong")
    ca = relay_certs["ca"]
    org_certs = h.make_ca_and_cert(tls_dir, ["mx.example.org"], [], "org")
    dsn_sink = h.PySink(env, h.MX_EXAMPLE_ORG, mx_port, "example.org", tls=org_certs,
                        requiretls=True)
    good = h.PySink(env, h.MX_EXAMPLE_NET, mx_port, "example.net", tls=net_certs,
                    requiretls=True)
    no_rt = h.PySink(env, h.MX_EXAMPLE_COM, mx_port, "example.com", tls=com_certs)
    wrong = h.PySink(env, h.MX_TLS_TEST, mx_port, "tls.test", tls=wrong_certs, requiretls=True)
    plain = h.PySink(env, h.NOMX_TEST_A, mx_port, "nomx.test")

    os.environ["SSL_CERT_FILE"] = ca   # the relay's system store: the test CA only
    cfg = h.standard_config(env, nsd, mx_port, tls=relay_certs)
    anchors = env.path("anchors.ds")
    with open(anchors, "w") as fh:
        fh.write("\n".join([signed.ds, signed_org.ds, two.ds, allbad.ds, half.ds]) + "\n")
    cfg.setdefault("dns", {})["trust_anchor"] = anchors
    relay = h.Relay(env, cfg)

    # --- ingress -----------------------------------------------------------------------------
    c = h.RawClient(relay.host, relay.port)
    code, _ = c.reply()
    code, text = c.cmd(b"EHLO client.example.org\r\n")
    h.check(code == 250 and "REQUIRETLS" not in text.split("\n"),
            f"REQUIRETLS offered in plaintext: {text}")
    code, text = c.cmd(b"MAIL FROM:<alice@example.org> REQUIRETLS\r\n")
    h.check(code == 530 and text.startswith("5.7.10"), f"REQUIRETLS in plaintext: {code} {text}")
    code, text = c.cmd(b"MAIL FROM:<alice@example.org>\r\n")
    h.check(code == 250, f"plain MAIL after the refusal: {code} {text}")
    c.cmd(b"QUIT\r\n")
    c.close()

    targets = {"bob@example.net": "<rt-net@example.org>", "bob@example.com": "<rt-com@example.org>",
               "bob@tls.test": "<rt-wrong@example.org>", "bob@nomx.test": "<rt-plain@example.org>",
               "bob@unsigned.test": "<rt-unsigned@example.org>",
               "bob@two.test": "<rt-two@example.org>", "bob@allbad.test": "<rt-allbad@example.org>",
               "bob@half.test": "<rt-half@example.org>"}
    for rcpt, msgid in targets.items():
        send_requiretls(relay, ca, rcpt, msgid)
    normal = "<normal-wrong@example.org>"
    res = h.send(relay.host, relay.port, "alice@example.org", ["carol@tls.test"],
                 h.make_message("alice@example.org", "carol@tls.test", "normal",
                                message_id=normal))
    h.check(res.accepted, f"normal message refused: {res}")
    normal_two = "<normal-two@example.org>"
    res = h.send(relay.host, relay.port, "alice@example.org", ["carol@two.test"],
                 h.make_message("alice@example.org", "carol@two.test", "normal",
                                message_id=normal_two))
    h.check(res.accepted, f"normal message to two.test refused: {res}")

    # --- delivered where everything holds -------------------------------------------------------
    env.wait_for(lambda: len(good.messages()) >= 2, 60,
                 "the REQUIRETLS messages to example.net and two.test at mx.example.net")
    got_good = {m.message_id: m for m in good.messages()}
    h.check(set(got_good) == {targets["bob@example.net"], targets["bob@two.test"]},
            f"mx.example.net got {sorted(got_good)}")
    for m in got_good.values():
        h.check(m.tls_version, f"{m.message_id} reached mx.example.net without TLS")
        h.check("REQUIRETLS" in m.mail_args.upper().split(),
                f"MAIL without REQUIRETLS: {m.mail_args}")
    h.check(got_good[targets["bob@two.test"]].rcpts == ["bob@two.test"],
            f"two.test's message: {got_good[targets['bob@two.test']].rcpts}")

    # --- bounced with 5.7.30 elsewhere, a DSN each ----------------------------------------------
    def bounces():
        return relay.events("SELECT recipient, enhanced_code, reply_text FROM events "
                            "WHERE event='bounced'")
    env.wait_for(lambda: len(bounces()) >= 5, 60, "five 5.7.30 bounces")
    got = {b["recipient"]: b for b in bounces()}
    h.check(set(got) == {"bob@example.com", "bob@tls.test", "bob@nomx.test", "bob@unsigned.test",
                         "bob@allbad.test"},
            f"bounced: {sorted(got)}")
    why_allbad = got["bob@allbad.test"]["reply_text"] or ""
    h.check("does not offer REQUIRETLS" in why_allbad and "did not verify" in why_allbad,
            f"allbad.test's bounce should give both MX hosts' reasons: {why_allbad}")
    for rcpt, why in (("bob@example.com", "does not offer REQUIRETLS"),
                      ("bob@tls.test", "did not verify"), ("bob@nomx.test", "not TLS"),
                      ("bob@unsigned.test", "neither through DNSSEC nor in an MTA-STS policy")):
        b = got[rcpt]
        h.check(b["enhanced_code"] == "5.7.30", f"{rcpt}: {b}")
        h.check(why in (b["reply_text"] or ""), f"{rcpt}: want '{why}' in {b['reply_text']}")
    env.wait_for(lambda: len(dsn_sink.messages()) >= 5, 60, "five DSNs to the sender")
    dsns = dsn_sink.messages()
    for d in dsns:
        raw = d.raw.decode("utf-8", "replace")
        h.check(d.mail_from in ("", "<>", None) and "5.7.30" in raw,
                f"DSN from {d.mail_from!r}: {raw[:600]}")
        h.check("REQUIRETLS" in d.mail_args.upper().split(),
                f"the DSN of a REQUIRETLS message went without REQUIRETLS: {d.mail_args}")
        h.check(SECRET not in raw, "the DSN of a REQUIRETLS message returned its body")
        h.check(any(mid in raw for mid in targets.values()),
                "the DSN does not carry the original header")

    # --- none of them saw the REQUIRETLS message; the normal one went ---------------------------
    env.wait_for(lambda: wrong.messages(), 60, "the normal message at tls.test")
    for sink in (no_rt, wrong, plain):
        ids = [x.message_id for x in sink.messages()]
        h.check(not [i for i in ids if i in targets.values()],
                f"{sink.name} received a REQUIRETLS message: {ids}")
        bodies = [base64.b64decode(e.get("data_b64", "")) for e in sink.events()
                  if e.get("event") == "message"]
        h.check(not [b for b in bodies if SECRET.encode() in b], f"{sink.name} saw the secret body")
    h.check([x.message_id for x in wrong.messages()] == [normal],
            f"tls.test got {[x.message_id for x in wrong.messages()]}")
    # half.test: deferred with both reasons, never bounced (its second MX may come back)
    def half_deferred():
        return relay.events("SELECT recipient, enhanced_code, reply_text FROM events "
                            "WHERE event='deferred' AND recipient='bob@half.test'")
    env.wait_for(half_deferred, 60, "half.test's REQUIRETLS message deferred")
    deferred = half_deferred()
    why_half = deferred[0]["reply_text"] or ""
    h.check("does not offer REQUIRETLS" in why_half and "127.0.0.99" in why_half,
            f"half.test's deferral should give both MX hosts' reasons: {why_half}")
    h.check("bob@half.test" not in got, "half.test's REQUIRETLS message was bounced")
    # two.test's preferred MX still takes its mail without REQUIRETLS
    env.wait_for(lambda: no_rt.messages(), 60, "the normal message to two.test at mx.example.com")
    h.check([x.message_id for x in no_rt.messages()] == [normal_two],
            f"mx.example.com got {[x.message_id for x in no_rt.messages()]}")
    relay.stop()


if __name__ == "__main__":
    h.main(test)
