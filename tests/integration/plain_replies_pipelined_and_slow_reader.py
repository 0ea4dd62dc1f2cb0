"""plain_replies_pipelined_and_slow_reader.py - on a plain socket the relay writes a pipelined
group's replies itself at the end of the event that produced them and asks the event loop for
write readiness only when the kernel does not take everything (ingress and the SMTP client).

Checks, over real sockets on loopback:
- a pipelined MAIL/RCPT/RCPT(553)/RCPT/DATA group gets every reply, in order; the end of data
  pipelined with the next MAIL/RCPT/DATA gets the 250 (sent from the spool's commit callback)
  and then the next group's replies, in order; QUIT pipelined after the last dot gets 250 then
  221, then the connection closes;
- a client that does not read (a small receive buffer, thousands of pipelined EHLO: megabytes
  of replies) gets every reply in order once it reads, then 221 and the close: the write the
  kernel did not finish is completed, and the close waits for it; meanwhile another client is
  served at once (the relay never blocks on the stuck one);
- a message larger than the relay's socket send buffer reaches the sink intact through the
  SMTP client (its writes are partial too).
"""
import socket
import subprocess
import time

import harness as h

EHLO_COUNT = 60000  # about 6.5 MB of replies: more than a socket send buffer grows to (4 MB)


def plain_client(relay, rcvbuf=None):
    if rcvbuf:
        # set before connecting, so the window the relay sees stays small from the start
        c = h.RawClient.__new__(h.RawClient)
        c.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        c.sock.settimeout(15)
        c.sock.connect((relay.host, relay.port))
        c.buf, c.timeout, c.host = b"", 15, relay.host
    else:
        c = h.RawClient(relay.host, relay.port)
    code, text = c.reply()
    h.check(code == 220, f"greeting: {code} {text}")
    return c


def message(mid, body=b"hello\r\n"):
    return (b"From: <alice@example.org>\r\nTo: <bob@example.net>\r\n"
            b"Subject: pipelined\r\nMessage-ID: <" + mid.encode() + b">\r\n\r\n" + body)


def expect(c, wants, what):
    for i, want in enumerate(wants):
        code, text = c.reply(20)
        h.check(code == want, f"{what}: reply {i + 1} of {len(wants)}: wanted {want}, "
                              f"got {code} {text}")


def test(env):
    h.need_binary(env)
    nsd = h.Nsd(env)
    mx_port = env.free_port(h.SINK_IPS + [h.LEGACY_IP])
    sink = h.SmtpSink(env, h.MX_EXAMPLE_NET, mx_port, "example.net")
    relay = h.Relay(env, h.standard_config(env, nsd, mx_port))

    # --- a pipelined group, the 250 after the commit, QUIT after the last dot -------------------
    c = plain_client(relay)
    code, text = c.cmd(b"EHLO client.example.org\r\n")
    h.check(code == 250 and "PIPELINING" in text, f"EHLO: {code} {text}")
    c.send(b"MAIL FROM:<alice@example.org>\r\n"
           b"RCPT TO:<bob@example.net>\r\n"
           + "RCPT TO:<jos\u00e9@example.net>\r\n".encode() +  # no SMTPUTF8 on MAIL: 553
           b"RCPT TO:<carol@example.net>\r\n"
           b"DATA\r\n")
    expect(c, [250, 250, 553, 250, 354], "first group")
    c.send(message("pipe-1@example.org") + b".\r\n"
           b"MAIL FROM:<alice@example.org>\r\n"
           b"RCPT TO:<dave@example.net>\r\n"
           b"DATA\r\n")
    expect(c, [250, 250, 250, 354], "end of data with the next group")
    c.send(message("pipe-2@example.org") + b".\r\nQUIT\r\n")
    expect(c, [250, 221], "last dot and QUIT")
    code, text = c.reply(10)
    h.check(code is None and text == "eof", f"after 221 the relay closes: {code} {text}")
    c.close()

    # --- a client that does not read ----------------------------------------------------------
    slow = plain_client(relay, rcvbuf=4096)
    slow.send(b"EHLO client.example.org\r\n" * EHLO_COUNT + b"QUIT\r\n")
    time.sleep(1.0)
    # past 64 KiB of unread replies the relay stops reading that client: the rest of its commands
    # wait in the relay's socket (kernel memory, bounded), not as replies in the relay's memory
    cport = slow.sock.getsockname()[1]
    ss = subprocess.run(["ss", "-tnH", "state", "established", f"( dport = :{cport} )"],
                        capture_output=True, text=True).stdout.split()
    h.check(ss and int(ss[0]) > 0,
            f"the relay's side of the stuck client holds its unread commands (ss: {ss})")
    # the relay still serves others while the slow client's replies wait
    other = plain_client(relay)
    t0 = time.monotonic()
    code, text = other.cmd(b"EHLO other.example.org\r\n", timeout=5)
    h.check(code == 250, f"another client during the stuck write: {code} {text}")
    h.check(time.monotonic() - t0 < 3, "another client's EHLO waited on the stuck client")
    other.cmd(b"QUIT\r\n")
    other.close()
    # read everything up to the close, then check it reply by reply
    data = bytearray(slow.buf)
    slow.sock.settimeout(20)
    while True:
        chunk = slow.sock.recv(1 << 20)
        if not chunk:
            break
        data += chunk
    data = bytes(data)
    h.check(len(data) > 5_000_000,
            f"the replies ({len(data)} bytes) must exceed the socket buffers")
    h.check(data.endswith(b"\r\n"), f"slow reader: the output ends mid-line: {data[-80:]!r}")
    lines = data[:-2].split(b"\r\n")
    h.check(lines[-1] == b"221 2.0.0 Bye", f"slow reader: last reply: {lines[-1]!r}")
    ehlo_lines = lines[:-1]
    per_reply = next(i for i, ln in enumerate(ehlo_lines) if ln[3:4] == b" ") + 1
    first = ehlo_lines[:per_reply]
    h.check(first[0].startswith(b"250-") and first[-1].startswith(b"250 "),
            f"slow reader: first EHLO reply: {first!r}")
    h.check(len(ehlo_lines) == per_reply * EHLO_COUNT,
            f"slow reader: {len(ehlo_lines)} reply lines, wanted {per_reply} x {EHLO_COUNT}")
    for i in range(EHLO_COUNT):
        got = ehlo_lines[i * per_reply:(i + 1) * per_reply]
        h.check(got == first, f"slow reader: EHLO reply {i + 1} of {EHLO_COUNT} differs: {got!r}")
    slow.close()

    # --- a big message through the SMTP client -------------------------------------------------
    line = b"x" * 998 + b"\r\n"
    big_body = line * 3000   # 3 MB
    c = plain_client(relay)
    c.cmd(b"EHLO client.example.org\r\n")
    c.send(b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<erin@example.net>\r\nDATA\r\n")
    expect(c, [250, 250, 354], "big message")
    c.send(message("big@example.org", big_body) + b".\r\n")
    expect(c, [250], "big message stored")
    c.cmd(b"QUIT\r\n")
    c.close()

    def arrived():
        got = {}
        for m in sink.messages():
            for r in m.rcpts:
                got[r] = m
        return got

    want = {"bob@example.net", "carol@example.net", "dave@example.net", "erin@example.net"}
    env.wait_for(lambda: want <= set(arrived()), 60, "the four recipients at the sink")
    got = arrived()
    h.check(not any(r.startswith("jos") for r in got), "the refused recipient was delivered")
    big = got["erin@example.net"].raw
    h.check(big.count(b"x" * 998) == 3000,
            f"the big message arrived cut or altered: {big.count(b'x' * 998)} of 3000 lines")
    relay.stop()


if __name__ == "__main__":
    h.main(test)
