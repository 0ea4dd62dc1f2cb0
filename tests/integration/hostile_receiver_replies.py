"""hostile_receiver_replies.py - receivers that never finish a reply must not hold a delivery
connection forever. The per-read timeout restarts with every byte, so on its own it never ends
a server that trickles its reply, nor one that sends continuation lines ("250-...") without
end. The relay bounds each reply: once its first byte is in, it must be complete within
delivery.command_timeout, and its text may not go past 8 KiB.

Three receivers on loopback (minimal SMTP servers in this file), delivery.command_timeout 3s:
- trickle.test answers MAIL FROM with "250 2.1.0 Ok" one byte every 0.5 s, then again and
  again: the relay gives up within the timeout (not after the whole 60-byte reply), the
  message is deferred with "reply not complete", and no DATA is ever sent;
- endless.test answers EHLO with "250-..." lines as fast as they are taken, never a last line:
  the relay drops it after 8 KiB of reply text, well before the timeout (what the receiver
  managed to write meanwhile is mostly the kernel's socket buffers); the message is deferred ("a reply of more than 8192 bytes");
- tlstrickle.test offers STARTTLS, says 220 to it and then trickles a TLS record a byte every
  0.5 s: the handshake is given up within delivery.connect_timeout (5 s), and since TLS is
  opportunistic the same server is tried again in plaintext and takes the message;
- good.test, a well-behaved receiver, gets its message meanwhile (the relay is not stuck).
Both hostile destinations are retried with back-off (retry 1s, 2s, ...), never in a loop.
"""
import threading
import time

import harness as h

TRICKLE_IP = "127.0.0.56"
ENDLESS_IP = "127.0.0.57"
GOOD_IP = "127.0.0.58"
TLS_TRICKLE_IP = "127.0.0.59"
CONNECT_TIMEOUT = 5  # standard_config's delivery.connect_timeout: the handshake's bound
TIMEOUT = 3


class Receiver:
    """A minimal SMTP server; `mode` says how it misbehaves."""

    def __init__(self, ip, port, mode):
        self.mode = mode
        self.sessions = 0
        self.messages = 0
        self.data_seen = 0
        self.sent_bytes = []   # per session: (bytes sent, seconds) of the endless reply, to the close
        self.ended = []        # per session: seconds from the first trickled byte to the close
        self.listener = h.RawListener(ip, port, self._connection)

    def _connection(self, c):
        self.sessions += 1
        threading.Thread(target=self._session, args=(c,), daemon=True).start()

    def _endless(self, c):
        chunk = b"".join(b"250-endless line %06d of a reply that never ends\r\n" % i
                         for i in range(200))
        sent, t0 = 0, time.monotonic()
        try:
            while time.monotonic() - t0 < 30:  # bounded: the test fails long before
                c.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass
        self.sent_bytes.append((sent, time.monotonic() - t0))

    def _trickle(self, c):
        t0 = time.monotonic()
        try:
            for _ in range(60):  # bounded: 30 s at most
                for b in b"250 2.1.0 Ok\r\n"[:-2]:
                    c.sendall(bytes([b]))
                    time.sleep(0.5)
        except OSError:
            pass
        self.ended.append(time.monotonic() - t0)

    def _tls_trickle(self, c):
        t0 = time.monotonic()
        try:
            for b in b"\x16\x03\x03\x00\x40" + b"\x02" * 0x40:  # 35 s at most
                c.sendall(bytes([b]))
                time.sleep(0.5)
        except OSError:
            pass
        self.ended.append(time.monotonic() - t0)

    def _session(self, c):
        starttls = self.mode == "tlstrickle" and self.sessions == 1
        try:
            f = c.makefile("rb")
            c.sendall(b"220 rx.example ESMTP\r\n")
            while True:
                line = f.readline()
                if not line:
                    break
                cmd = line[:4].upper()
                if cmd in (b"EHLO", b"HELO"):
                    if self.mode == "endless":
                        self._endless(c)
                        break
                    c.sendall(b"250-rx.example\r\n250 STARTTLS\r\n" if starttls
                              else b"250 rx.example\r\n")
                elif cmd == b"STAR" and starttls:
                    c.sendall(b"220 2.0.0 go ahead\r\n")
                    self._tls_trickle(c)
                    break
                elif cmd == b"MAIL":
                    if self.mode == "trickle":
                        self._trickle(c)
                        break
                    c.sendall(b"250 ok\r\n")
                elif cmd in (b"RCPT", b"RSET", b"NOOP"):
                    c.sendall(b"250 ok\r\n")
                elif cmd == b"DATA":
                    self.data_seen += 1
                    c.sendall(b"354 go\r\n")
                    while f.readline() not in (b".\r\n", b""):
                        pass
                    self.messages += 1
                    c.sendall(b"250 queued\r\n")
                elif cmd == b"QUIT":
                    c.sendall(b"221 bye\r\n")
                    break
                else:
                    c.sendall(b"502 no\r\n")
        except OSError:
            pass
        finally:
            c.close()

    def stop(self):
        self.listener.stop()


def test(env):
    h.need_binary(env)
    zones = h.default_zones()
    for name, ip in (("trickle.test", TRICKLE_IP), ("endless.test", ENDLESS_IP),
                     ("good.test", GOOD_IP), ("tlstrickle.test", TLS_TRICKLE_IP)):
        zones[name] = h.zone_with_mx(name, ip)
    nsd = h.Nsd(env, zones=zones)
    mx_port = env.free_port(h.SINK_IPS + [TRICKLE_IP, ENDLESS_IP, GOOD_IP, TLS_TRICKLE_IP,
                                          h.LEGACY_IP])
    trickle = Receiver(TRICKLE_IP, mx_port, "trickle")
    endless = Receiver(ENDLESS_IP, mx_port, "endless")
    good = Receiver(GOOD_IP, mx_port, "good")
    tls_trickle = Receiver(TLS_TRICKLE_IP, mx_port, "tlstrickle")
    cfg = h.standard_config(env, nsd, mx_port, retry=("1s", "2s", "4s", "8s"))
    cfg["delivery"]["command_timeout"] = f"{TIMEOUT}s"
    relay = h.Relay(env, cfg)

    for rcpt in ("bob@trickle.test", "bob@endless.test", "bob@good.test",
                 "bob@tlstrickle.test"):
        res = h.send(relay.host, relay.port, "alice@example.org", [rcpt],
                     h.make_message("alice@example.org", rcpt, "hostile",
                                    message_id=f"<{rcpt.split('@')[1]}@example.org>"))
        h.check(res.accepted, f"{rcpt}: not accepted: {res.steps}")

    env.wait_for(lambda: good.messages >= 1, 30, "the message at the well-behaved receiver")

    def deferred(rcpt):
        return relay.events("SELECT reply_text, id FROM events WHERE event='deferred' "
                            f"AND recipient='{rcpt}' ORDER BY id")

    env.wait_for(lambda: deferred("bob@trickle.test"), 30, "the trickled reply given up")
    why = deferred("bob@trickle.test")[0]["reply_text"] or ""
    h.check("reply not complete" in why, f"trickle.test deferred with: {why}")
    env.wait_for(lambda: trickle.ended, 10, "the trickling receiver's first session closed")
    h.check(trickle.ended[0] < TIMEOUT + 2,
            f"the relay listened to a trickled reply for {trickle.ended[0]:.1f}s "
            f"(timeout {TIMEOUT}s)")
    h.check(trickle.data_seen == 0, "DATA was sent after a reply that never completed")

    env.wait_for(lambda: deferred("bob@endless.test"), 30, "the endless reply given up")
    why = deferred("bob@endless.test")[0]["reply_text"] or ""
    h.check("more than 8192 bytes" in why, f"endless.test deferred with: {why}")
    env.wait_for(lambda: endless.sent_bytes, 10, "the endless receiver's first session closed")
    sent, took = endless.sent_bytes[0]
    h.check(took < TIMEOUT - 1,
            f"the relay listened to an endless reply for {took:.1f}s ({sent} bytes sent into "
            f"the connection): it was not cut at 8 KiB")

    env.wait_for(lambda: tls_trickle.messages >= 1, 30,
                 "tlstrickle.test's message, in plaintext after the trickled handshake")
    env.wait_for(lambda: tls_trickle.ended, 10, "the trickled handshake's session closed")
    h.check(tls_trickle.ended[0] < CONNECT_TIMEOUT + 2,
            f"the relay waited on a trickled TLS handshake for {tls_trickle.ended} s "
            f"(connect timeout {CONNECT_TIMEOUT}s)")
    h.check(tls_trickle.sessions == 2, f"{tls_trickle.sessions} sessions to tlstrickle.test")

    # back-off, not a loop: a few sessions over some seconds
    time.sleep(4)
    h.log(f"sessions: trickle {trickle.sessions}, endless {endless.sessions}; endless bytes "
          f"{endless.sent_bytes}; trickle sessions ended after {trickle.ended}")
    h.check(endless.sessions <= 5, f"{endless.sessions} sessions to the endless receiver")
    h.check(trickle.sessions <= 4, f"{trickle.sessions} sessions to the trickling receiver")
    relay.stop()
    for rx in (trickle, endless, good, tls_trickle):
        rx.stop()


if __name__ == "__main__":
    h.main(test)
