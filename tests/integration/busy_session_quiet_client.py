"""busy_session_quiet_client.py - a client that sent its message and waits, saying nothing,
for the reply is not idle: the relay is the slow one. While the session is busy (here: the
DKIM check of a dkim_required origin, a worker waiting on DNS that the test holds back) past
limits.data_timeout and limits.command_timeout, the session must not time out: a 421 there
would tell the client the message failed while the relay goes on to queue it, and the client's
retry would deliver it twice.

Checks, over real sockets on loopback:
- with both timeouts at 3 s and the key query held for 3 s longer, the quiet client gets no
  reply at all while the session is busy (no 421), and the relay keeps the connection;
- once the answer is let through: 250 for the message, then the session goes on (NOOP, QUIT);
- exactly one copy reaches the sink;
- a second session left idle afterwards still gets the command timeout (421 4.4.2).
"""
import socket
import time

import harness as h
from gated_dns import PLATFORM_IP, BusyRelay

TIMEOUT = 3   # limits.command_timeout and limits.data_timeout, seconds


def test(env):
    h.need_binary(env)
    busy = BusyRelay(env, {"command_timeout": f"{TIMEOUT}s", "data_timeout": f"{TIMEOUT}s"})
    relay, dns, sink = busy.relay, busy.dns, busy.sink
    c = busy.send_busy(b"<quiet@gw.test>", b"waiting for the relay")
    t0 = time.monotonic()
    c.sock.settimeout(0.2)
    early = b""
    while time.monotonic() - t0 < TIMEOUT + 3:
        try:
            chunk = c.sock.recv(4096)
        except socket.timeout:
            continue
        early += chunk
        if not chunk:
            break
    h.check(early == b"", f"the busy session answered its quiet client after "
                          f"{time.monotonic() - t0:.1f}s, before the DKIM check ended: {early!r}")
    h.check(not dns.open and dns.held_total > 0, "the key query is still held")

    dns.release()
    code, text = c.reply(30)
    h.check(code == 250 and "queued as" in text, f"after the DKIM check: {code} {text}")
    code, text = c.cmd(b"NOOP\r\n")
    h.check(code == 250, f"NOOP after the busy period: {code} {text}")
    code, text = c.cmd(b"QUIT\r\n")
    h.check(code == 221, f"QUIT: {code} {text}")
    c.sock.close()

    env.wait_for(lambda: sink.messages(), 30, "the message at the sink")
    time.sleep(1)
    ids = [m.message_id for m in sink.messages()]
    h.check(ids == ["<quiet@gw.test>"], f"the sink got {ids}")

    idle = h.RawClient(relay.host, relay.port, source_addr=PLATFORM_IP)
    h.check(idle.reply()[0] == 220, "greeting of the idle session")
    t1 = time.monotonic()
    code, text = idle.reply(TIMEOUT + 10)
    h.check(code == 421 and "4.4.2" in text,
            f"an idle session after {time.monotonic() - t1:.1f}s: {code} {text}")
    idle.sock.close()
    relay.stop()
    dns.stop()


if __name__ == "__main__":
    h.main(test)
