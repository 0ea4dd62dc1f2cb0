"""plain_socket_reads.py - plain sockets are read by the relay itself (common/sock_reader.c: one
readv of 16 KiB or more per readiness), not by libevent's socket bufferevent; the edges of that
reading, over real sockets on loopback, inbound and outbound:

- a whole session in one write (EHLO, MAIL, RCPT, DATA, a 1 MiB message, the dot, QUIT) gets
  every reply in order and the close, and the message reaches the sink intact;
- a 64 KiB DATA line in one write makes the message refused (500 5.5.2 line too long) after its
  dot, and the same session then has a message accepted;
- a client that closes mid-DATA, or resets the connection mid-DATA, has nothing stored or
  delivered, and the relay serves the next client;
- limits.command_timeout (2 s) ends a silent client with 421 4.4.2 and the close, but not one
  that sends a NOOP every second for longer than that (each read restarts the timeout);
  limits.data_timeout (3 s) ends a client silent inside DATA the same way;
- outbound, delivery.command_timeout (2 s) ends a connection to a receiver that goes silent
  after MAIL FROM (the message is deferred for a timeout, about 2 s after MAIL), and a receiver
  that closes after MAIL FROM defers it as "connection closed by the server".
The relay stops cleanly (no sanitizer report, no leak) after all of it.
"""
import hashlib
import socket
import struct
import threading
import time

import harness as h

BIG = 1024 * 1024


def greeted(relay):
    c = h.RawClient(relay.host, relay.port, timeout=20)
    code, text = c.reply()
    h.check(code == 220, f"greeting: {code} {text}")
    return c


def ehlo(c):
    code, text = c.cmd(b"EHLO client.example.org\r\n")
    h.check(code == 250, f"EHLO: {code} {text}")


def expect(c, wants, what, timeout=30):
    for i, want in enumerate(wants):
        code, text = c.reply(timeout)
        h.check(code == want, f"{what}: reply {i + 1} of {len(wants)}: wanted {want}, "
                              f"got {code} {text}")


def message(mid, body):
    return (b"From: <alice@example.org>\r\nTo: <bob@example.net>\r\n"
            b"Subject: plain socket reads\r\nMessage-ID: <" + mid.encode() + b">\r\n\r\n" + body)


def envelope(rcpt=b"bob@example.net"):
    return b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<" + rcpt + b">\r\nDATA\r\n"


class SilentOrClosingMx:
    """The receiver for example.com: greets, answers EHLO, reads MAIL FROM and then either
    stays silent until the relay closes (mode "silent") or closes at once (mode "close").
    Records the seconds from MAIL FROM to the relay's close."""

    def __init__(self, ip, port):
        self.mode = "silent"
        self.mails = 0
        self.silent_waits = []
        self.lock = threading.Lock()
        self.listener = h.RawListener(ip, port, self.on_connection)

    def on_connection(self, sock):
        threading.Thread(target=self.serve, args=(sock,), daemon=True).start()

    def serve(self, sock):
        f = sock.makefile("rb")
        try:
            sock.sendall(b"220 mx.example.com ESMTP\r\n")
            f.readline()  # EHLO
            sock.sendall(b"250 mx.example.com\r\n")
            line = f.readline()
            if not line.upper().startswith(b"MAIL"):
                return
            with self.lock:
                self.mails += 1
                mode = self.mode
            if mode == "close":
                return
            started = time.monotonic()
            sock.settimeout(60)
            while sock.recv(4096):
                pass
            with self.lock:
                self.silent_waits.append(time.monotonic() - started)
        except OSError:
            pass
        finally:
            f.close()
            sock.close()

    def stop(self):
        self.listener.stop()


def test(env):
    h.need_binary(env)
    nsd = h.Nsd(env)
    mx_port = env.free_port(h.SINK_IPS + [h.LEGACY_IP])
    sink = h.SmtpSink(env, h.MX_EXAMPLE_NET, mx_port, "example.net")
    com = SilentOrClosingMx(h.MX_EXAMPLE_COM, mx_port)
    cfg = h.standard_config(env, nsd, mx_port, retry=("1s", "1s"),
                            limits={"command_timeout": "2s", "data_timeout": "3s"})
    cfg["delivery"]["command_timeout"] = "2s"
    relay = h.Relay(env, cfg)

    # --- a whole session with a 1 MiB message in one write -------------------------------------
    line = b"".join(b"%06d the quick brown fox jumps over the lazy dog 0123456789\r\n" % i
                    for i in range(BIG // 64))
    big = message("big@example.org", line)
    c = greeted(relay)
    c.send(b"EHLO client.example.org\r\n" + envelope() + big + b".\r\nQUIT\r\n")
    expect(c, [250, 250, 250, 354, 250, 221], "one write of a 1 MiB session")
    code, text = c.reply(10)
    h.check(code is None and text == "eof", f"after 221 the relay closes: {code} {text}")
    c.close()

    # --- a 64 KiB DATA line in one write, then a good message in the same session --------------
    c = greeted(relay)
    ehlo(c)
    c.send(envelope())
    expect(c, [250, 250, 354], "envelope before the long line")
    c.send(message("long@example.org", b"x" * 65536 + b"\r\n") + b".\r\n")
    code, text = c.reply(30)
    h.check(code == 500 and "line too long" in text,
            f"a 64 KiB DATA line: expected 500 ... line too long, got {code} {text}")
    c.send(envelope() + message("after-long@example.org", b"short body\r\n") + b".\r\n")
    expect(c, [250, 250, 354, 250], "a message after the refused one, same session")
    c.close()

    # --- closing and resetting mid-DATA -------------------------------------------------------
    half = message("closed-mid-data@example.org", line[: 200 * 1024])
    c = greeted(relay)
    c.send(b"EHLO client.example.org\r\n" + envelope() + half)
    expect(c, [250, 250, 250, 354], "before closing mid-DATA")
    c.sock.shutdown(socket.SHUT_WR)
    h.check(c.closed_by_peer(10), "the relay did not close a connection its client closed")
    c.close()

    c = greeted(relay)
    c.send(b"EHLO client.example.org\r\n"
           + envelope() + message("reset-mid-data@example.org", line[: 200 * 1024]))
    expect(c, [250, 250, 250, 354], "before resetting mid-DATA")
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()  # RST

    res = h.send(relay.host, relay.port, "alice@example.org", ["bob@example.net"],
                 message("after-reset@example.org", b"still serving\r\n"))
    h.check(res.accepted, f"a message after the closed and reset ones was refused: {res}")

    # --- read timeouts, inbound ---------------------------------------------------------------
    c = greeted(relay)
    ehlo(c)
    started = time.monotonic()
    code, text = c.reply(15)
    waited = time.monotonic() - started
    h.check(code == 421 and text.startswith("4.4.2") and "Timeout" in text,
            f"a silent client: expected 421 4.4.2 Timeout, got {code} {text}")
    h.check(1.5 <= waited <= 8, f"the command timeout (2s) fired after {waited:.1f}s")
    h.check(c.closed_by_peer(5), "the relay did not close after the timeout reply")
    c.close()

    c = greeted(relay)
    for i in range(5):  # 5 s in all, a read every second: the 2 s timeout never runs out
        code, text = c.cmd(b"NOOP\r\n", 5)
        h.check(code == 250, f"NOOP {i + 1} a second apart: {code} {text}")
        time.sleep(1)
    code, text = c.cmd(b"QUIT\r\n")
    h.check(code == 221, f"QUIT after the NOOPs: {code} {text}")
    c.close()

    c = greeted(relay)
    c.send(b"EHLO client.example.org\r\n" + envelope() + b"Subject: half a line")
    expect(c, [250, 250, 250, 354], "before going silent in DATA")
    started = time.monotonic()
    code, text = c.reply(15)
    waited = time.monotonic() - started
    h.check(code == 421 and "Timeout" in text,
            f"a client silent in DATA: expected 421 4.4.2 Timeout, got {code} {text}")
    h.check(2.5 <= waited <= 9, f"the data timeout (3s) fired after {waited:.1f}s")
    h.check(c.closed_by_peer(5), "the relay did not close after the DATA timeout reply")
    c.close()

    # --- what was stored and delivered -------------------------------------------------------
    want = {"<big@example.org>", "<after-long@example.org>", "<after-reset@example.org>"}
    env.wait_for(lambda: want <= set(h.message_ids(sink.messages())), 60,
                 "delivery of the accepted messages")
    got = [m for m in sink.messages() if m.message_id == "<big@example.org>"]
    raw = got[0].raw.replace(b"\r\n", b"\n")
    body = raw.split(b"\n\n", 1)[1] if b"\n\n" in raw else b""
    sent = line.replace(b"\r\n", b"\n")
    h.check(hashlib.sha256(body).digest() == hashlib.sha256(sent).digest(),
            f"the 1 MiB body changed on the way: {len(body)} bytes arrived, {len(sent)} sent")
    rows = relay.events("SELECT message_id FROM events WHERE event='received'")
    stored = sorted(r["message_id"] for r in rows)
    h.check(stored == sorted(want), f"received events: {stored}, wanted {sorted(want)}")

    # --- read timeout and end of file, outbound ----------------------------------------------
    res = h.send(relay.host, relay.port, "alice@example.org", ["carol@example.com"],
                 message("to-silent@example.org", b"for a receiver that goes silent\r\n"))
    h.check(res.accepted, f"the message for example.com was refused: {res}")

    def deferred(needle):
        rows = relay.events("SELECT * FROM events WHERE event='deferred' AND "
                            "recipient='carol@example.com'")
        return [r for r in rows if needle in " ".join(str(v) for v in r.values())]

    relay.wait_for(lambda: deferred("timeout"), 40, "a deferral for the silent receiver")
    with com.lock:
        waits = list(com.silent_waits)
        com.mode = "close"
    h.check(waits and all(1.5 <= w <= 8 for w in waits),
            f"the relay's command timeout (2s) closed the silent receiver after {waits} s")
    relay.wait_for(lambda: deferred("closed by the server"), 40,
                   "a deferral for the receiver that closes")
    h.check(com.mails >= 2, f"the receiver saw {com.mails} MAIL commands")
    com.stop()
    relay.stop()


if __name__ == "__main__":
    h.main(test)
