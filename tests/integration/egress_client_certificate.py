"""egress_client_certificate.py - a smarthost egress presents its client certificate (as an
Exchange Online certificate-based inbound connector expects) and verifies the smarthost's NAME,
not just the chain: delivered with the certificate to a receiver that requires one; not delivered
(deferred, with the reason) when the egress has no certificate, or when the smarthost's
certificate carries another name than tls_name.

The smarthost is a Python sink on 127.0.0.60 with a certificate for smarthost.outrelay.test from
a test CA, requiring client certificates from a second test CA. Three relays run one after the
other, each with its own spool and state, each sending one message.
"""
import os

import harness as h

SMARTHOST_IP = "127.0.0.60"


def relay_with(env, nsd, mx_port, name, egress_extra):
    egress = {"cloud": {"type": "smarthost", "host": SMARTHOST_IP, "port": mx_port,
                        "tls": "required", **egress_extra}}
    cfg = h.standard_config(env, nsd, mx_port, egress=egress, ramp_from="cloud")
    cfg["spool"] = env.path(f"spool-{name}")
    cfg["state"] = env.path(f"state-{name}")
    return h.Relay(env, cfg, name=name)


def send_one(relay, tag):
    rcpt = "bob@example.net"
    msgid = f"<{tag}@cert.test>"
    res = h.send(relay.host, relay.port, "alice@example.org", [rcpt],
                 h.make_message("alice@example.org", rcpt, tag, message_id=msgid))
    h.check(res.accepted, f"{tag}: not accepted: {res.steps} {res.error}")
    return msgid


def test(env):
    h.need_binary(env)
    server = h.make_ca_and_cert(env.path("server-ca"), ["smarthost.outrelay.test"], [SMARTHOST_IP])
    client = h.make_ca_and_cert(env.path("client-ca"), ["relay.tenant.example"],
                                prefix="client", usage="clientAuth")
    nsd = h.Nsd(env)
    mx_port = env.free_port(h.SINK_IPS + [SMARTHOST_IP, h.LEGACY_IP])
    sink = h.PySink(env, SMARTHOST_IP, mx_port, "smarthost", tls=server,
                    hostname="smarthost.outrelay.test", client_ca=client["ca"])
    verify = {"tls_ca_file": server["ca"], "tls_name": "smarthost.outrelay.test"}

    # 1. certificate presented, name verified: delivered, and the receiver saw our certificate
    r1 = relay_with(env, nsd, mx_port, "with-cert",
                    {**verify, "tls_cert": client["cert"], "tls_key": client["key"]})
    m1 = send_one(r1, "with-cert")
    env.wait_for(lambda: any(m.message_id == m1 for m in sink.messages()), 30,
                 "the message sent with a client certificate")
    got = [m for m in sink.messages() if m.message_id == m1][0]
    h.check(got.tls_client_subject == "relay.tenant.example",
            f"the receiver saw client certificate {got.tls_client_subject!r}")
    h.log(f"delivered over {got.tls_version} with client certificate CN={got.tls_client_subject}")
    r1.stop()

    # 2. no client certificate: the receiver refuses the handshake; the mail waits, recorded
    r2 = relay_with(env, nsd, mx_port, "no-cert", dict(verify))
    m2 = send_one(r2, "no-cert")
    env.wait_for(lambda: r2.events("SELECT 1 FROM events WHERE event='deferred'"), 30,
                 "a deferral without a client certificate")
    rows = r2.events("SELECT reply_text FROM events WHERE event='deferred'")
    h.log(f"without a certificate: {rows[0]['reply_text']}")
    h.check(not any(m.message_id == m2 for m in sink.messages()),
            "delivered although the receiver requires a client certificate")
    r2.stop()

    # 3. the smarthost's certificate does not carry the configured name: refused by us
    r3 = relay_with(env, nsd, mx_port, "wrong-name",
                    {"tls_ca_file": server["ca"], "tls_name": "other.outrelay.test",
                     "tls_cert": client["cert"], "tls_key": client["key"]})
    m3 = send_one(r3, "wrong-name")
    env.wait_for(lambda: r3.events("SELECT 1 FROM events WHERE event='deferred'"), 30,
                 "a deferral for a certificate of another name")
    rows = r3.events("SELECT reply_text FROM events WHERE event='deferred'")
    h.log(f"wrong name: {rows[0]['reply_text']}")
    h.check("hostname mismatch" in rows[0]["reply_text"],
            f"the name mismatch is not the reason: {rows}")
    h.check(not any(m.message_id == m3 for m in sink.messages()),
            "delivered to a smarthost whose certificate names another host")
    r3.stop()
    h.check(os.path.exists(client["cert"]), "client certificate vanished")


if __name__ == "__main__":
    h.main(test)
