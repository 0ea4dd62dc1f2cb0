"""backoff_one_connection_receiver.py - a receiver that takes one connection at a time and answers
every other one "421 too many connections" at the greeting: while one connection delivers, the
others' failures back the destination off instead of reconnecting in a loop, and when the working
connection ends, the mail left behind goes out through one new connection at once instead of
waiting out the back-off. All 30 messages arrive, with few refused connections.

The receiver is a minimal SMTP server in this file (one session at a time; a connection that
finds another session still open 0.3 s after it arrived gets 421 and is closed). delivery.retry is 1m, so a message that waited out a back-off would
make the test time out.
"""
import threading
import time

import harness as h

MX_IP = "127.0.0.55"
N = 30


class OneAtATime:
    def __init__(self, ip, port):
        self.busy = threading.Lock()
        self.refused = 0
        self.sessions = 0
        self.messages = 0
        self.listener = h.RawListener(ip, port, self._connection)

    def _connection(self, c):
        # a connection right after the previous QUIT is not "another" one: a moment's grace
        if not self.busy.acquire(timeout=0.3):
            self.refused += 1
            try:
                c.sendall(b"421 4.7.0 too many connections, try later\r\n")
            except OSError:
                pass
            c.close()
            return
        self.sessions += 1
        threading.Thread(target=self._session, args=(c,), daemon=True).start()

    def _session(self, c):
        try:
            f = c.makefile("rb")
            c.sendall(b"220 one.example ESMTP\r\n")
            while True:
                line = f.readline()
                if not line:
                    break
                cmd = line[:4].upper()
                if cmd in (b"EHLO", b"HELO"):
                    c.sendall(b"250 one.example\r\n")
                elif cmd in (b"MAIL", b"RCPT", b"RSET", b"NOOP"):
                    c.sendall(b"250 ok\r\n")
                elif cmd == b"DATA":
                    c.sendall(b"354 go\r\n")
                    while f.readline() not in (b".\r\n", b""):
                        pass
                    self.messages += 1
                    time.sleep(0.1)  # a slow receiver: the queue builds up meanwhile
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
            self.busy.release()

    def stop(self):
        self.listener.stop()


def test(env):
    h.need_binary(env)
    zones = h.default_zones()
    zones["one.example"] = h.zone_with_mx("one.example", MX_IP)
    nsd = h.Nsd(env, zones=zones)
    mx_port = env.free_port(h.SINK_IPS + [MX_IP, h.LEGACY_IP])
    rx = OneAtATime(MX_IP, mx_port)
    egress = {"legacy": {"type": "direct", "source": [h.LEGACY_IP], "helo": "legacy.outrelay.test",
                         "max_messages_per_connection": 5}}
    relay = h.Relay(env, h.standard_config(env, nsd, mx_port, egress=egress, retry=("1m",)))
    t0 = time.monotonic()
    for i in range(N):
        rcpt = f"user{i}@one.example"
        res = h.send(relay.host, relay.port, "alice@example.org", [rcpt],
                     h.make_message("alice@example.org", rcpt, f"one {i}"))
        h.check(res.accepted, f"message {i} not accepted: {res.steps}")
    env.wait_for(lambda: rx.messages >= N, 50, f"all {N} messages at the one-connection receiver")
    took = time.monotonic() - t0
    h.log(f"{N} messages in {took:.1f} s over {rx.sessions} sessions; {rx.refused} connections "
          f"refused at the greeting")
    h.check(rx.refused <= 10, f"{rx.refused} refused connections: the relay kept reconnecting")
    rx.stop()


if __name__ == "__main__":
    h.main(test)
