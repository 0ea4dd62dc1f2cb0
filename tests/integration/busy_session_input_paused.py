"""busy_session_input_paused.py - a session that is busy (here: the DKIM check of a
dkim_required origin, a worker waiting on DNS) handles no input; past SMTPD_INPUT_PAUSE
(256 KiB) of input held it stops reading its client, so what the client pipelines meanwhile
waits in the kernel's socket buffers and TCP flow control holds the client back, instead of
piling up in the relay's memory.

Checks, over real sockets on loopback:
- while the DNS answer for the signing domain's key is held back (a UDP proxy in front of the
  test NSD that keeps _domainkey queries until the test lets them through), a client that
  pipelines 16 MiB of NOOP commands behind the end of its message gets no reply; the relay
  reads at most 512 KiB of them, the kernel holds the rest it took (the relay's Recv-Q and the
  client's Send-Q, from ss), and the relay's resident memory grows by far less than what the
  client offered;
- the session does not time out for not reading while it is busy, even past
  limits.command_timeout;
- once the answer is let through: the message's 250, then one 250 per NOOP, in order; the
  message reaches the sink; then, idle, the session gets the command timeout as usual.
"""
import socket
import struct
import subprocess
import threading
import time

import harness as h
from gated_dns import BusyRelay

NOOP = b"NOOP " + b"x" * 1000 + b"\r\n"
NOOP_COUNT = (16 << 20) // len(NOOP)   # 16 MiB offered
COMMAND_TIMEOUT = 3                   # seconds; the DNS answer is held for longer


def vm_rss_kib(pid):
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    h.fail(f"no VmRSS for pid {pid}")


def queues(client_port):
    """(Recv-Q of the relay's side, Send-Q of the client's side) of the connection from
    client_port: the bytes the kernel holds on each side."""
    def ss(selector):
        out = subprocess.run(["ss", "-tnH", "state", "established", f"( {selector} )"],
                             capture_output=True, text=True).stdout.split()
        h.check(out, f"ss shows no connection for {selector}")
        return int(out[0]), int(out[1])
    return ss(f"dport = :{client_port}")[0], ss(f"sport = :{client_port}")[1]


def test(env):
    h.need_binary(env)
    busy = BusyRelay(env, {"command_timeout": f"{COMMAND_TIMEOUT}s"})
    relay, dns, sink = busy.relay, busy.dns, busy.sink
    pid = relay.proc.pid
    c = busy.send_busy(b"<busy@gw.test>", b"hello while the relay waits on DNS")
    rss_before = vm_rss_kib(pid)

    offered = NOOP * NOOP_COUNT
    sent = [0]
    send_error = []

    def sender():
        sock = c.sock
        sock.settimeout(120)
        view = memoryview(offered)
        try:
            while sent[0] < len(offered):
                n = sock.send(view[sent[0]:sent[0] + 65536])
                sent[0] += n
        except OSError as e:
            send_error.append(e)

    t = threading.Thread(target=sender, daemon=True)
    t0 = time.monotonic()
    t.start()
    # let the sender push all the kernel takes, and stay busy past the command timeout
    last, still_since = -1, time.monotonic()
    while time.monotonic() - t0 < COMMAND_TIMEOUT + 2:
        if sent[0] != last:
            last, still_since = sent[0], time.monotonic()
        time.sleep(0.1)
    h.check(not send_error, f"sending the pipelined commands: {send_error}")
    h.check(dns.held_total > 0 and not dns.open, "the key query is still held")
    held_unread, client_unsent = queues(c.sock.getsockname()[1])
    rss_after = vm_rss_kib(pid)
    growth = (rss_after - rss_before) * 1024
    read_by_relay = sent[0] - held_unread - client_unsent
    h.log(f"busy: client offered {len(offered)} bytes, the kernel took {sent[0]} "
          f"(stalled {time.monotonic() - still_since:.1f}s), relay Recv-Q {held_unread}, "
          f"client Send-Q {client_unsent}, read by the relay {read_by_relay}, "
          f"relay RSS {rss_before} -> {rss_after} KiB")
    h.check(sent[0] < len(offered), "the client sent all 16 MiB while the session was busy: "
                                    "nothing held it back")
    h.check(held_unread > 0, "the relay's side of the busy session holds no unread bytes")
    # 256 KiB, plus what the read that crossed it brought (up to 64 KiB), plus slack
    h.check(read_by_relay <= 512 * 1024,
            f"the busy session read {read_by_relay} bytes of pipelined input")
    h.check(held_unread + client_unsent >= 1 << 20,
            f"the kernel holds only {held_unread} + {client_unsent} bytes of the busy session's "
            f"input")
    h.check(growth < 4 << 20,
            f"the relay's memory grew by {growth} bytes while its busy session was offered "
            f"{len(offered)} (the kernel took {sent[0]})")
    # nothing was answered: the session is busy, and did not time out for not reading
    c.sock.setblocking(False)
    try:
        early = c.sock.recv(65536)
    except BlockingIOError:
        early = None
    c.sock.setblocking(True)
    h.check(early is None, f"the busy session answered before the DKIM check ended: {early!r}")

    dns.release()
    data = bytearray()
    c.sock.settimeout(60)
    deadline = time.monotonic() + 120
    # the message's 250 and one 250 per NOOP; then, idle past the command timeout, the 421
    while time.monotonic() < deadline:
        try:
            chunk = c.sock.recv(1 << 20)
        except socket.timeout:
            break
        if not chunk:
            break
        data += chunk
    t.join(30)
    h.check(not send_error, f"sending the pipelined commands: {send_error}")
    h.check(sent[0] == len(offered), f"the client sent {sent[0]} of {len(offered)} bytes")
    lines = bytes(data).split(b"\r\n")
    h.check(lines and lines[-1] == b"", f"the output ends mid-line: {bytes(data[-80:])!r}")
    lines = lines[:-1]
    h.check(lines[0].startswith(b"250 2.0.0 Ok: queued as "),
            f"first reply after the DKIM check: {lines[0]!r}")
    noops = lines[1:-1]
    h.check(len(noops) == NOOP_COUNT,
            f"{len(noops)} NOOP replies, wanted {NOOP_COUNT}; last lines {lines[-3:]!r}")
    bad = [i for i, ln in enumerate(noops) if ln != b"250 2.0.0 Ok"]
    h.check(not bad, f"NOOP reply {bad[:1]} is {noops[bad[0]] if bad else b''!r}")
    h.check(lines[-1].startswith(b"421 4.4.2") and b"Timeout" in lines[-1],
            f"idle after the NOOPs, the session ends with the command timeout: {lines[-1]!r}")
    c.sock.close()

    env.wait_for(lambda: sink.messages(), 30, "the message at the sink")
    ids = [m.message_id for m in sink.messages()]
    h.check(ids == ["<busy@gw.test>"], f"the sink got {ids}")
    relay.stop()
    dns.stop()


if __name__ == "__main__":
    h.main(test)
