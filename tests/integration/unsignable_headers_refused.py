"""unsignable_headers_refused.py - messages libopendkim would sign into signatures no receiver
verifies are refused at the end of DATA with a 5xx, not accepted and signed: several From:
fields (2, and 1,000; RFC 5322 allows one) get 554 5.6.0, a folded header field of about
72,000 bytes gets 552 5.6.0. A field of exactly 65,000 bytes and a normal message on the same
connection are still accepted with 250, so the refusals are not vacuous."""
import harness as h


def send(c, header):
    for line, want in ((b"MAIL FROM:<alice@example.org>\r\n", 250),
                       (b"RCPT TO:<bob@example.net>\r\n", 250), (b"DATA\r\n", 354)):
        code, text = c.cmd(line)
        h.check(code == want, f"{line!r} -> {code} {text}")
    c.send(header.encode() + b"To: <bob@example.net>\r\n\r\nbody\r\n.\r\n")
    return c.reply(30)


def test(env):
    h.need_binary(env)
    nsd = h.Nsd(env)
    mx_port = env.free_port(h.SINK_IPS + [h.LEGACY_IP])
    h.SmtpSink(env, h.MX_EXAMPLE_NET, mx_port, "example.net")
    relay = h.Relay(env, h.standard_config(env, nsd, mx_port))
    c = h.RawClient(relay.host, relay.port)
    code, text = c.reply()
    h.check(code == 220, f"greeting: {code} {text}")
    code, text = c.cmd(b"EHLO client.example.org\r\n")
    h.check(code == 250, f"EHLO: {code} {text}")

    cases = [
        ("two From:", "From: <a@example.org>\r\nFrom: <b@example.org>\r\n", 554,
         "5.6.0 Several From: header fields"),
        ("1000 From:", "".join(f"From: <u{i}@example.org>\r\n" for i in range(1000)), 554,
         "5.6.0 Several From: header fields"),
        ("72 KB Subject:", "From: <a@example.org>\r\nSubject:" + "\r\n word" * 12000 + "\r\n",
         552, "5.6.0 Header field too long to sign"),
        ("65,000-byte Subject:", "From: <a@example.org>\r\n" +
         ("Subject:" + ("\r\n " + "w" * 97) * 650)[:65000] + "\r\n", 250, "Ok"),
        ("normal", "From: <a@example.org>\r\nSubject: hi\r\n", 250, "Ok"),
    ]
    for name, header, want, phrase in cases:
        code, text = send(c, header)
        h.log(f"{name}: {code} {text}")
        h.check(code == want and phrase in text, f"{name}: got {code} {text}, want {want} {phrase}")
    c.cmd(b"QUIT\r\n")
    c.close()


if __name__ == "__main__":
    h.main(test)
