"""auth_plain_authzid.py - AUTH PLAIN's authorization identity (RFC 4616 "authzid") is not
ignored: "cloud\\0loner\\0password" (asking to act as another user) is refused with 535 5.7.8 and
the client stays unauthenticated (it cannot relay); an empty authzid, or one equal to the user,
logs in. Also a response with a NUL inside the password part is malformed (501).

Origin `cloud` has the AUTH users m365-connector and loner; clients connect from 127.0.0.99,
which is in no origin's network, so only AUTH could let them relay.
"""
import base64
import subprocess

import harness as h

PASSWORD = "correct horse battery staple"
USERS = ("m365-connector", "loner")


def b64(raw):
    return base64.b64encode(raw.encode()).decode()


def tls_session(relay, ctx):
    c = h.RawClient(relay.host, relay.port, source_addr=h.STRANGER_IP)
    code, _ = c.reply()
    h.check(code == 220, f"greeting {code}")
    c.cmd("EHLO client.example.org\r\n")
    code, text = c.cmd("STARTTLS\r\n")
    h.check(code == 220, f"STARTTLS refused: {code} {text}")
    c.starttls(ctx)
    code, text = c.cmd("EHLO client.example.org\r\n")
    h.check(code == 250, f"EHLO after STARTTLS: {code} {text}")
    return c


def try_plain(relay, ctx, response, initial=True):
    """One TLS session: AUTH PLAIN with response (initial or after 334), then MAIL + RCPT to see
    whether the session may relay. Returns (auth code, auth text, rcpt code)."""
    c = tls_session(relay, ctx)
    if initial:
        code, text = c.cmd(f"AUTH PLAIN {b64(response)}\r\n")
    else:
        code, text = c.cmd("AUTH PLAIN\r\n")
        h.check(code == 334, f"AUTH PLAIN without initial response: expected 334, got {code}")
        code, text = c.cmd(b64(response) + "\r\n")
    c.cmd("MAIL FROM:<sender@example.org>\r\n")
    rcpt, _ = c.cmd("RCPT TO:<bob@example.net>\r\n")
    c.cmd("QUIT\r\n")
    c.close()
    return code, text, rcpt


def test(env):
    h.need_binary(env)
    nsd = h.Nsd(env)
    mx_port = env.free_port(h.SINK_IPS + [h.LEGACY_IP])
    h.SmtpSink(env, h.MX_EXAMPLE_NET, mx_port, "example.net")
    certs = h.make_ca_and_cert(env.path("tls"), ["relay.outrelay.test"], [h.RELAY_IP])
    hashed = subprocess.run(["openssl", "passwd", "-6", PASSWORD], capture_output=True,
                            text=True, check=True).stdout.strip()
    users = env.path("users")
    with open(users, "w") as fh:
        for u in USERS:
            fh.write(f"{u}:{hashed}\n")
    origins = {"zimbra": {"networks": [f"{h.ZIMBRA_IP}/32"]},
               "cloud": {"networks": ["192.0.2.0/24"], "users": list(USERS)}}
    relay = h.Relay(env, h.standard_config(env, nsd, mx_port, origins=origins, tls=certs,
                                           users_file=users))
    ctx = h.client_tls_context(certs["ca"])
    nul = chr(0)

    # a differing authorization identity: refused, and the session cannot relay
    for initial in (True, False):
        code, text, rcpt = try_plain(relay, ctx, f"m365-connector{nul}loner{nul}{PASSWORD}",
                                     initial)
        h.check(code == 535 and text.startswith("5.7.8"),
                f"AUTH PLAIN acting as another identity (initial={initial}): expected 535 5.7.8, "
                f"got {code} {text}")
        h.check(rcpt == 554, f"a client whose AUTH was refused could relay (RCPT {rcpt})")
        h.log(f"authzid m365-connector for user loner refused (initial={initial}): {code} {text}")
    h.check("authorization identity \"m365-connector\" differs from authentication identity "
            "\"loner\"" in relay.stderr(), "the refusal is not in the log")

    # an empty authzid and one equal to the user are "myself"
    for response, label in ((f"{nul}loner{nul}{PASSWORD}", "empty authzid"),
                            (f"loner{nul}loner{nul}{PASSWORD}", "authzid equal to the user")):
        code, text, rcpt = try_plain(relay, ctx, response)
        h.check(code == 235, f"AUTH PLAIN with {label}: expected 235, got {code} {text}")
        h.check(rcpt == 250, f"AUTH PLAIN with {label}: RCPT {rcpt}, expected 250")
        h.log(f"{label}: {code} {text}")

    # a NUL inside the password part is not PLAIN at all
    code, text, _ = try_plain(relay, ctx, f"{nul}loner{nul}{PASSWORD}{nul}x")
    h.check(code == 501, f"AUTH PLAIN with a third NUL: expected 501, got {code} {text}")
    relay.stop()


if __name__ == "__main__":
    h.main(test)
