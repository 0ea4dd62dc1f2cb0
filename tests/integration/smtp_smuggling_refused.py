"""smtp_smuggling_refused.py - SMTP smuggling variants are refused and nothing extra is delivered;
bare LF / bare CR in command lines are refused; data pipelined after STARTTLS drops the
connection.

Each smuggling message's DATA carries, after a fake end of data (<LF>.<LF>, <CR>.<CR>,
<LF>.<CR><LF>), a complete second transaction (MAIL/RCPT/DATA) for victim@example.net. The relay
must answer the real end of data with 5xx (the issue: bare LF / bare CR in DATA are refused),
and neither the outer nor the smuggled message may reach the sink. A normal message sent last
(the canary) must arrive, so "nothing arrived" is not vacuous.
"""
import time

import harness as h

VARIANTS = {"LF.LF": b"\n.\n", "CR.CR": b"\r.\r", "LF.CRLF": b"\n.\r\n"}


def session(relay, source=None):
    c = h.RawClient(relay.host, relay.port, source_addr=source)
    code, text = c.reply()
    h.check(code == 220, f"greeting: {code} {text}")
    code, text = c.cmd(b"EHLO client.example.org\r\n")
    h.check(code == 250, f"EHLO: {code} {text}")
    return c


def all_replies(c, timeout=4):
    """Every reply until the connection goes quiet for `timeout` s or closes."""
    out = []
    while True:
        code, text = c.reply(timeout)
        if code is None:
            out.append((None, text))
            return out
        out.append((code, text))


def test(env):
    h.need_binary(env)
    nsd = h.Nsd(env)
    mx_port = env.free_port(h.SINK_IPS + [h.LEGACY_IP])
    sink = h.SmtpSink(env, h.MX_EXAMPLE_NET, mx_port, "example.net")
    certs = h.make_ca_and_cert(env.path("tls"), ["relay.outrelay.test"], [h.RELAY_IP])
    relay = h.Relay(env, h.standard_config(env, nsd, mx_port, tls=certs))
    problems = []

    # --- smuggling in DATA -----------------------------------------------------------------------
    for name, fake_end in VARIANTS.items():
        outer_id = f"<outer-{name}@example.org>"
        smuggled_id = f"<smuggled-{name}@example.org>"
        c = session(relay)
        for line, want in ((b"MAIL FROM:<alice@example.org>\r\n", 250),
                           (b"RCPT TO:<bob@example.net>\r\n", 250),
                           (b"DATA\r\n", 354)):
            code, text = c.cmd(line)
            h.check(code == want, f"{name}: {line!r} -> {code} {text}")
        payload = (b"From: <alice@example.org>\r\nTo: <bob@example.net>\r\n"
                   b"Subject: smuggling " + name.encode() + b"\r\n"
                   b"Message-ID: " + outer_id.encode() + b"\r\n\r\n"
                   b"innocent body" + fake_end +
                   b"MAIL FROM:<ceo@example.org>\r\n"
                   b"RCPT TO:<victim@example.net>\r\n"
                   b"DATA\r\n"
                   b"From: <ceo@example.org>\r\nTo: <victim@example.net>\r\n"
                   b"Subject: smuggled\r\nMessage-ID: " + smuggled_id.encode() + b"\r\n\r\n"
                   b"pay the invoice\r\n"
                   b"\r\n.\r\n")
        try:
            c.send(payload)
        except OSError as e:   # the relay may hang up as soon as it sees the bare LF/CR
            h.log(f"{name}: relay closed while we sent the payload: {e}")
        replies = all_replies(c)
        try:
            c.send(b"QUIT\r\n")
        except OSError:
            pass
        c.close()
        h.log(f"{name}: replies after DATA: {replies}")
        codes = [code for code, _ in replies if code is not None]
        if not codes:
            problems.append(f"{name}: no reply to the end of data ({replies})")
        elif not 500 <= codes[0] < 600:
            problems.append(f"{name}: DATA containing {fake_end!r} was answered {codes[0]} "
                            f"(must be refused with 5xx): {replies}")
        if codes.count(250) > 1 or 354 in codes:
            problems.append(f"{name}: smuggled commands were executed: {replies}")

    # --- bare LF / bare CR in command lines --------------------------------------------------
    for name, line in (("bare LF", b"MAIL FROM:<alice@example.org>\nRCPT TO:<bob@example.net>\r\n"),
                       ("bare CR", b"MAIL FROM:<alice@example.org>\rRCPT TO:<bob@example.net>\r\n")):
        c = session(relay)
        try:
            c.send(line)
        except OSError:
            pass
        code, text = c.reply(5)
        c.close()
        h.log(f"{name} in a command: {code} {text}")
        if code is None and text != "eof":
            problems.append(f"{name} in a command line: no reply within 5 s ({text})")
        elif code is not None and not 500 <= code < 600:
            problems.append(f"{name} in a command line answered {code} {text} (must be 5xx)")

    # --- data pipelined after STARTTLS -----------------------------------------------------------
    c = session(relay)
    c.send(b"STARTTLS\r\nMAIL FROM:<alice@example.org>\r\n")
    closed = c.closed_by_peer(5)
    h.log(f"STARTTLS + pipelined command: connection closed by relay: {closed}; "
          f"bytes seen: {c.buf!r}")
    c.close()
    if not closed:
        problems.append("data pipelined after STARTTLS: the relay kept the connection open "
                        "(it must discard the data and disconnect)")
    h.check(relay.alive(), "relay died during the framing tests")

    # --- canary, then nothing else may have arrived ------------------------------------------
    canary = "<canary@example.org>"
    res = h.send(relay.host, relay.port, "alice@example.org", ["bob@example.net"],
                 h.make_message("alice@example.org", "bob@example.net", "canary",
                                message_id=canary))
    h.check(res.accepted, f"canary refused: {res}")
    env.wait_for(lambda: [m for m in sink.messages() if m.message_id == canary], 60,
                 "delivery of the canary")
    time.sleep(3)
    msgs = sink.messages()
    ids = h.message_ids(msgs)
    smuggled = [m for m in msgs if "victim@example.net" in m.rcpts
                or (m.message_id or "").startswith("<smuggled-")]
    h.check(not smuggled, f"SMUGGLED MESSAGE DELIVERED: {smuggled}")
    extra = sorted(i for i in ids if i != canary)
    if extra:
        problems.append(f"messages other than the canary reached the sink: {extra}")
    h.check(ids.get(canary) == 1, f"canary arrived {ids.get(canary)} times")
    h.check(not problems, "\n  " + "\n  ".join(problems))
    relay.stop()


if __name__ == "__main__":
    h.main(test)
