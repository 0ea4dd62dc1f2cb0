"""bdat_ingress_edges.py - CHUNKING/BDAT (RFC 3030) on our ingress, with a byte-exact client.

Proves: EHLO offers CHUNKING; pipelined chunks whose boundary falls between CR and LF make one
message that arrives with its bytes unchanged (a "." line and a leading dot are text, no
unstuffing); BDAT 0 LAST ends a message; every refused BDAT still consumes exactly its octets
(the chunk holds "QUIT" and the session lives on): BDAT without MAIL (503), before any RCPT
(554), over the size limit (552, then 503 for the next chunk), after TLS is required but not
started (530); DATA after BDAT and RCPT after BDAT (503); RSET in between drops the chunks; a
bare LF in a chunk refuses the message (550 5.6.0) but not the session; inside DATA a BDAT line is
message text; an unparsable size closes the connection (501). Only the three good messages reach
the sink.
"""
import time

import harness as h

SIZE_LIMIT = 50000


def session(relay, ehlo=True):
    c = h.RawClient(relay.host, relay.port)
    code, text = c.reply()
    h.check(code == 220, f"greeting: {code} {text}")
    if ehlo:
        code, text = c.cmd(b"EHLO client.example.org\r\n")
        h.check(code == 250, f"EHLO: {code} {text}")
        h.check("CHUNKING" in text.split("\n"), f"EHLO does not offer CHUNKING: {text}")
    return c


def replies(c, n, timeout=10):
    out = []
    for _ in range(n):
        out.append(c.reply(timeout))
    return out


def expect(c, what, want, timeout=10):
    code, text = c.reply(timeout)
    h.check(code == want, f"{what}: want {want}, got {code} {text}")
    return text


def transaction(c, rcpt="bob@example.net"):
    for line, want in ((b"MAIL FROM:<alice@example.org>\r\n", 250),
                       (f"RCPT TO:<{rcpt}>\r\n".encode(), 250)):
        code, text = c.cmd(line)
        h.check(code == want, f"{line!r} -> {code} {text}")


def test(env):
    h.need_binary(env)
    nsd = h.Nsd(env)
    mx_port = env.free_port(h.SINK_IPS + [h.LEGACY_IP])
    sink = h.SmtpSink(env, h.MX_EXAMPLE_NET, mx_port, "example.net")
    certs = h.make_ca_and_cert(env.path("tls"), ["relay.outrelay.test"], [h.RELAY_IP])
    strict_port = env.free_port([h.RELAY_IP])
    cfg = h.standard_config(env, nsd, mx_port, tls=certs,
                            extra_listen=[{"address": f"{h.RELAY_IP}:{strict_port}",
                                           "tls": "required"}],
                            limits={"max_message_size": SIZE_LIMIT})
    relay = h.Relay(env, cfg)

    # --- one message in three pipelined chunks, boundaries inside CR LF --------------------------
    good1 = "<bdat-chunks@example.org>"
    body = (b"From: <alice@example.org>\r\nTo: <bob@example.net>\r\nSubject: chunks\r\n"
            b"Message-ID: " + good1.encode() + b"\r\n\r\n"
            b"first line\r\n.\r\n..two dots stay two\r\n.leading dot\r\nBDAT 5\r\nlast line\r\n")
    cut1 = body.index(b"first line\r\n") + len(b"first line\r")   # chunk ends after CR
    cut2 = body.index(b"..two") + 1                                 # inside a leading "..'"
    chunks = [body[:cut1], body[cut1:cut2], body[cut2:]]
    c = session(relay)
    wire = (b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.net>\r\n"
            + b"".join(f"BDAT {len(x)}{' LAST' if i == 2 else ''}\r\n".encode() + x
                       for i, x in enumerate(chunks)))
    c.send(wire)
    got = replies(c, 5)
    h.log(f"pipelined chunks: {got}")
    h.check([r[0] for r in got] == [250, 250, 250, 250, 250], f"pipelined BDAT replies: {got}")
    h.check("queued as" in got[-1][1], f"the LAST chunk did not queue the message: {got[-1]}")

    # --- BDAT 0 LAST ends a message ----------------------------------------------------------------
    good2 = "<bdat-zero-last@example.org>"
    msg2 = h.make_message("alice@example.org", "carol@example.net", "zero last", message_id=good2)
    transaction(c, "carol@example.net")
    code, text = c.cmd(f"BDAT {len(msg2)}\r\n".encode() + msg2)
    h.check(code == 250 and "octets" in text, f"BDAT chunk: {code} {text}")
    code, text = c.cmd(b"BDAT 0 LAST\r\n")
    h.check(code == 250 and "queued as" in text, f"BDAT 0 LAST: {code} {text}")

    # --- refused chunks still consume their octets -----------------------------------------------
    quit_ = b"QUIT\r\n"
    code, text = c.cmd(b"BDAT 6\r\n" + quit_)
    h.check(code == 503, f"BDAT without MAIL: {code} {text}")
    code, text = c.cmd(b"MAIL FROM:<alice@example.org>\r\n")
    h.check(code == 250, f"MAIL: {code} {text}")
    code, text = c.cmd(b"BDAT 6 LAST\r\n" + quit_)
    h.check(code == 554, f"BDAT with no recipient: {code} {text}")
    code, text = c.cmd(b"RCPT TO:<bob@example.net>\r\n")
    h.check(code == 250, f"RCPT after a refused BDAT: {code} {text}")
    # over the limit: the octets are read and dropped, then 552; the transaction is gone
    big = b"x" * 70 + b"\r\n"
    big = big * (SIZE_LIMIT // len(big) + 10)
    code, text = c.cmd(f"BDAT {len(big)}\r\n".encode() + big, timeout=30)
    h.check(code == 552, f"oversize chunk: {code} {text}")
    code, text = c.cmd(b"BDAT 6 LAST\r\n" + quit_)
    h.check(code == 503, f"BDAT after a failed chunk: {code} {text}")
    # several chunks adding up to more than the limit
    transaction(c)
    half = big[:SIZE_LIMIT // 2 + 100]
    code, text = c.cmd(f"BDAT {len(half)}\r\n".encode() + half)
    h.check(code == 250, f"first half: {code} {text}")
    code, text = c.cmd(f"BDAT {len(half)} LAST\r\n".encode() + half)
    h.check(code == 552, f"the chunks together over the limit: {code} {text}")

    # --- sequence: DATA and RCPT after BDAT, RSET in between, MAIL inside ------------------------
    transaction(c)
    code, text = c.cmd(b"BDAT 12\r\nSubject: x\r\n")
    h.check(code == 250, f"chunk: {code} {text}")
    for line, what in ((b"DATA\r\n", "DATA after BDAT"), (b"RCPT TO:<dave@example.net>\r\n",
                                                          "RCPT after BDAT"),
                       (b"MAIL FROM:<alice@example.org>\r\n", "MAIL inside BDAT")):
        code, text = c.cmd(line)
        h.check(code == 503, f"{what}: {code} {text}")
    code, text = c.cmd(b"RSET\r\n")
    h.check(code == 250, f"RSET: {code} {text}")
    code, text = c.cmd(b"BDAT 6 LAST\r\n" + quit_)
    h.check(code == 503, f"BDAT LAST after RSET: {code} {text}")

    # --- bare LF inside a chunk refuses the message, not the session -----------------------------
    transaction(c)
    bad = (b"From: <alice@example.org>\r\nSubject: bare lf\nMessage-ID: <bdat-bare-lf@example.org>"
           b"\r\n\r\nbody\r\n")
    code, text = c.cmd(f"BDAT {len(bad)} LAST\r\n".encode() + bad)
    h.check(code == 550 and "5.6.0" in text, f"bare LF in BDAT: {code} {text}")
    code, text = c.cmd(b"NOOP\r\n")
    h.check(code == 250, f"NOOP after the refused message: {code} {text}")

    # --- after DATA has started, a BDAT line is message text ------------------------------------
    good3 = "<data-with-bdat-line@example.org>"
    msg3 = h.make_message("alice@example.org", "dave@example.net", "bdat line in data",
                          message_id=good3, body="BDAT 6 LAST\r\nQUIT\r\n")
    transaction(c, "dave@example.net")
    code, text = c.cmd(b"DATA\r\n")
    h.check(code == 354, f"DATA: {code} {text}")
    code, text = c.cmd(msg3 + b".\r\n")
    h.check(code == 250 and "queued as" in text, f"DATA with a BDAT line: {code} {text}")

    # --- unparsable size: the connection ends ------------------------------------------------
    code, text = c.cmd(b"BDAT 12x LAST\r\n")
    h.check(code == 501, f"BDAT with a bad size: {code} {text}")
    h.check(c.closed_by_peer(5), "the relay kept the connection after an unparsable BDAT")
    c.close()

    # --- TLS required but not started: the chunk is dropped with 530 ---------------------------
    c = h.RawClient(relay.host, strict_port)
    expect(c, "greeting (tls required)", 220)
    expect_text = c.cmd(b"EHLO client.example.org\r\n")
    h.check(expect_text[0] == 250, f"EHLO: {expect_text}")
    code, text = c.cmd(b"BDAT 6 LAST\r\n" + quit_)
    h.check(code == 530, f"BDAT before STARTTLS on a TLS-only listener: {code} {text}")
    code, text = c.cmd(b"NOOP\r\n")
    h.check(code == 250, f"NOOP: {code} {text}")
    c.cmd(b"QUIT\r\n")
    c.close()

    # --- what arrived ------------------------------------------------------------------------------
    env.wait_for(lambda: len(sink.messages()) >= 3, 60, "delivery of the three messages")
    time.sleep(2)
    msgs = sink.messages()
    ids = h.message_ids(msgs)
    h.check(ids == {good1: 1, good2: 1, good3: 1},
            f"the sink got {ids}, want exactly the three good ones")
    m3 = [m for m in msgs if m.message_id == good3][0]
    h.check(b"BDAT 6 LAST" in m3.raw, f"the BDAT line inside DATA was lost: {m3.raw!r}")
    m1 = [m for m in msgs if m.message_id == good1][0]
    h.check(m1.raw.replace(b"\r\n", b"\n").endswith(body.replace(b"\r\n", b"\n")),
            f"the chunked message changed on the way: {m1.raw!r}")
    m2 = [m for m in msgs if m.message_id == good2][0]
    h.check(m2.raw.replace(b"\r\n", b"\n").endswith(msg2.replace(b"\r\n", b"\n")),
            f"the BDAT 0 LAST message changed on the way: {m2.raw!r}")
    h.check(m2.rcpts == ["carol@example.net"], f"rcpts of the second message: {m2.rcpts}")
    relay.stop()


if __name__ == "__main__":
    h.main(test)
