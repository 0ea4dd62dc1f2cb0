"""auth_requires_tls.py - AUTH is neither offered nor accepted before STARTTLS, works after it
(PLAIN and LOGIN, SHA-512 crypt hash in the users file), and a client outside every origin cannot
relay.

Origin `cloud` has the AUTH user m365-connector and a network no test client is in; origin
`zimbra` is 127.0.0.11 only. Clients connect from 127.0.0.1 (in no origin) and 127.0.0.99.
"""
import base64
import subprocess
import time

import harness as h

USER = "m365-connector"
PASSWORD = "correct horse battery staple"


def b64(text):
    return base64.b64encode(text.encode()).decode()


def ehlo_keywords(text):
    return {line.split()[0].upper() for line in text.splitlines()[1:] if line.strip()}


def auth_plain(c, user, password):
    return c.cmd(f"AUTH PLAIN {b64(chr(0) + user + chr(0) + password)}\r\n")


def auth_login(c, user, password):
    code, text = c.cmd("AUTH LOGIN\r\n")
    if code != 334:
        return code, text
    code, text = c.cmd(b64(user) + "\r\n")
    if code != 334:
        return code, text
    return c.cmd(b64(password) + "\r\n")


def tls_session(relay, ctx, source=None):
    c = h.RawClient(relay.host, relay.port, source_addr=source)
    code, _ = c.reply()
    h.check(code == 220, f"greeting {code}")
    c.cmd("EHLO client.example.org\r\n")
    code, text = c.cmd("STARTTLS\r\n")
    h.check(code == 220, f"STARTTLS refused: {code} {text}")
    c.starttls(ctx)
    code, text = c.cmd("EHLO client.example.org\r\n")
    h.check(code == 250, f"EHLO after STARTTLS: {code} {text}")
    return c, text


def test(env):
    h.need_binary(env)
    nsd = h.Nsd(env)
    mx_port = env.free_port(h.SINK_IPS + [h.LEGACY_IP])
    sink = h.SmtpSink(env, h.MX_EXAMPLE_NET, mx_port, "example.net")
    certs = h.make_ca_and_cert(env.path("tls"), ["relay.outrelay.test"], [h.RELAY_IP])
    hashed = subprocess.run(["openssl", "passwd", "-6", PASSWORD], capture_output=True,
                            text=True, check=True).stdout.strip()
    h.check(hashed.startswith("$6$"), f"openssl passwd -6 gave {hashed!r}")
    users = env.path("users")
    with open(users, "w") as fh:
        fh.write(f"{USER}:{hashed}\n")
    origins = {"zimbra": {"networks": [f"{h.ZIMBRA_IP}/32"]},
               "cloud": {"networks": ["192.0.2.0/24"], "users": [USER]}}
    relay = h.Relay(env, h.standard_config(env, nsd, mx_port, origins=origins, tls=certs,
                                           users_file=users))
    ctx = h.client_tls_context(certs["ca"])

    # --- before TLS: AUTH neither advertised nor accepted ------------------------------------
    c = h.RawClient(relay.host, relay.port)
    code, _ = c.reply()
    h.check(code == 220, f"greeting {code}")
    code, text = c.cmd("EHLO client.example.org\r\n")
    h.check(code == 250, f"EHLO: {code} {text}")
    kw = ehlo_keywords(text)
    h.check("AUTH" not in kw, f"AUTH advertised before TLS:\n{text}")
    h.check("STARTTLS" in kw, f"STARTTLS not advertised:\n{text}")
    code, text = auth_plain(c, USER, PASSWORD)
    h.check(code is not None and 500 <= code < 600,
            f"AUTH PLAIN before TLS must be refused with 5xx (530/503/538), got {code} {text}")
    code, text = c.cmd("AUTH LOGIN\r\n")
    h.check(code is not None and 500 <= code < 600,
            f"AUTH LOGIN before TLS must be refused with 5xx, got {code} {text}")
    c.cmd("QUIT\r\n")
    c.close()
    h.log("AUTH refused before TLS")

    # --- after TLS: PLAIN and LOGIN, right and wrong passwords ----------------------------------
    for mech, fn in (("PLAIN", auth_plain), ("LOGIN", auth_login)):
        c, text = tls_session(relay, ctx)
        kw_lines = [l.upper() for l in text.splitlines() if l.upper().startswith("AUTH")]
        h.check(kw_lines and mech in kw_lines[0].split(),
                f"AUTH {mech} not advertised after STARTTLS:\n{text}")
        code, text = fn(c, USER, PASSWORD + "x")
        h.check(code == 535, f"AUTH {mech} with a wrong password: expected 535, got {code} {text}")
        c.close()
        c, _ = tls_session(relay, ctx)
        code, text = fn(c, "nobody-such", PASSWORD)
        h.check(code == 535, f"AUTH {mech} for an unknown user: expected 535, got {code} {text}")
        c.close()
        c, _ = tls_session(relay, ctx)
        code, text = fn(c, USER, PASSWORD)
        h.check(code == 235, f"AUTH {mech} with the right password: expected 235, got {code} "
                f"{text}")
        c.cmd("QUIT\r\n")
        c.close()
        h.log(f"AUTH {mech} ok after TLS")

    # --- the authenticated client relays ---------------------------------------------------------
    ok_id = "<authenticated@example.org>"
    res = h.send(relay.host, relay.port, "connector@example.org", ["bob@example.net"],
                 h.make_message("connector@example.org", "bob@example.net", "authenticated",
                                message_id=ok_id),
                 starttls=True, tls_context=ctx, auth=(USER, PASSWORD, "PLAIN"))
    h.check(res.code("auth") == 235 and res.accepted, f"authenticated client could not relay: "
            f"{res}")

    # --- clients in no origin cannot relay -------------------------------------------------------
    denied = []
    for label, kwargs in (
            ("127.0.0.99 plain", {"source_addr": h.STRANGER_IP}),
            ("127.0.0.1 plain", {}),
            ("127.0.0.1 TLS without AUTH", {"starttls": True, "tls_context": ctx})):
        mid = f"<denied-{len(denied)}@example.org>"
        denied.append(mid)
        res = h.send(relay.host, relay.port, "stranger@example.org", ["bob@example.net"],
                     h.make_message("stranger@example.org", "bob@example.net", "denied",
                                    message_id=mid), **kwargs)
        h.check(not res.accepted, f"{label}: a client in no origin relayed: {res}")
        refusal = [(s, c, t) for s, c, t in res.steps if s in ("mail", "rcpt") and c != 250]
        h.check(refusal, f"{label}: neither MAIL nor RCPT refused: {res}")
        step, code, text = refusal[0]
        h.check(code == 554 and text.startswith("5.7.1"),
                f"{label}: expected '554 5.7.1' at MAIL/RCPT, got {step}: {code} {text}")
        h.log(f"{label}: refused at {step.upper()}: {code} {text}")

    env.wait_for(lambda: [m for m in sink.messages() if m.message_id == ok_id], 60,
                 "delivery of the authenticated client's message")
    time.sleep(2)
    ids = h.message_ids(sink.messages())
    h.check(ids.get(ok_id) == 1, f"authenticated message arrived {ids.get(ok_id)} times")
    leaked = [m for m in denied if m in ids]
    h.check(not leaked, f"messages from clients in no origin were delivered: {leaked}")
    h.check(set(ids) == {ok_id}, f"unexpected messages at the sink: {sorted(ids)}")

    rows = relay.events("SELECT origin FROM events WHERE event='received' AND message_id LIKE ?",
                        ("%authenticated@example.org%",))
    h.check(rows and all(r["origin"] == "cloud" for r in rows),
            f"authenticated message should be recorded with origin cloud: {rows}")
    relay.stop()


if __name__ == "__main__":
    h.main(test)
