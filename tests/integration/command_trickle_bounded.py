"""command_trickle_bounded.py - a client that trickles a command line, or its TLS handshake, a
byte at a time (each byte well within limits.command_timeout, so the per-read timeout never
fires) is closed once the line or the handshake is not complete limits.command_timeout after
it began: the slowloris of the command phase, as limits.data_deadline is that of DATA.

Checks over loopback, with limits.command_timeout 3s:
- "EHLO ..." sent one byte every 0.5 s gets 421 4.4.2 about 3 s after its first byte, and the
  connection is closed; the log says "command line not complete";
- after STARTTLS's 220, a handshake trickled one byte every 0.5 s is closed (no reply: the
  session is in TLS) about 3 s after it began; the log says "TLS handshake not complete";
- a slow but honest client is not affected: a command split in two writes 1 s apart is
  answered, and 2 s idle between commands (under the timeout) is fine; the session works
  through STARTTLS, EHLO and NOOP.
"""
import socket
import time

import harness as h

TIMEOUT = 3


def trickle(c, data, started, limit):
    """Sends data one byte every 0.5 s until the relay closes or answers; returns (seconds
    from started, what came back)."""
    got = b""
    for byte in data:
        try:
            c.sock.sendall(bytes([byte]))
        except OSError:
            break
        c.sock.settimeout(0.5)
        try:
            chunk = c.sock.recv(4096)
            if not chunk:
                break
            got += chunk
            if got.endswith(b"\r\n"):
                break
        except socket.timeout:
            pass
        except OSError:
            break
        if time.monotonic() - started > limit:
            break
    return time.monotonic() - started, got


def test(env):
    h.need_binary(env)
    nsd = h.Nsd(env)
    mx_port = env.free_port(h.SINK_IPS + [h.LEGACY_IP])
    certs = h.make_ca_and_cert(env.path("tls"), ["relay.outrelay.test"], [h.RELAY_IP], "relay")
    relay = h.Relay(env, h.standard_config(env, nsd, mx_port, tls=certs,
                                           limits={"command_timeout": f"{TIMEOUT}s"}))

    # --- a trickled command line ---------------------------------------------------------------
    c = h.RawClient(relay.host, relay.port, source_addr=h.ZIMBRA_IP)
    h.check(c.reply()[0] == 220, "greeting")
    elapsed, got = trickle(c, b"EHLO trickle.example.org and a long tail of words\r\n",
                           time.monotonic(), TIMEOUT + 10)
    h.log(f"trickled command: {got!r} after {elapsed:.1f}s")
    h.check(got.startswith(b"421 4.4.2"), f"a trickled command line got {got!r} after "
                                          f"{elapsed:.1f}s, wanted 421 4.4.2")
    h.check(TIMEOUT - 0.5 <= elapsed <= TIMEOUT + 2,
            f"the trickled command line was ended after {elapsed:.1f}s, not about {TIMEOUT}s")
    h.check(c.closed_by_peer(5), "the relay did not close after its 421")
    c.close()

    # --- a trickled TLS handshake ----------------------------------------------------------------
    c = h.RawClient(relay.host, relay.port, source_addr=h.ZIMBRA_IP)
    h.check(c.reply()[0] == 220, "greeting")
    h.check(c.cmd(b"EHLO trickle.example.org\r\n")[0] == 250, "EHLO")
    h.check(c.cmd(b"STARTTLS\r\n")[0] == 220, "STARTTLS")
    hello = b"\x16\x03\x01\x00\x40" + b"\x01" * 0x40  # a record header, then its body slowly
    elapsed, got = trickle(c, hello, time.monotonic(), TIMEOUT + 10)
    h.log(f"trickled handshake: {got!r} after {elapsed:.1f}s")
    h.check(TIMEOUT - 0.5 <= elapsed <= TIMEOUT + 2,
            f"the trickled handshake was ended after {elapsed:.1f}s, not about {TIMEOUT}s")
    c.close()
    err = relay.stderr()
    h.check("command line not complete" in err and "TLS handshake not complete" in err,
            "no log line for the trickled command line or handshake")

    # --- slow but honest ---------------------------------------------------------------------------
    c = h.RawClient(relay.host, relay.port, source_addr=h.ZIMBRA_IP)
    h.check(c.reply()[0] == 220, "greeting")
    c.send(b"EHLO hon")
    time.sleep(1)
    code, text = c.cmd(b"est.example.org\r\n")
    h.check(code == 250, f"a command in two writes 1 s apart: {code} {text}")
    time.sleep(TIMEOUT - 1)
    h.check(c.cmd(b"STARTTLS\r\n")[0] == 220, "STARTTLS after a pause")
    c.sock = h.client_tls_context(certs["ca"]).wrap_socket(c.sock,
                                                          server_hostname="relay.outrelay.test")
    c.buf = b""
    code, text = c.cmd(b"EHLO honest.example.org\r\n")
    h.check(code == 250, f"EHLO over TLS: {code} {text}")
    time.sleep(TIMEOUT - 1)
    code, text = c.cmd(b"NOOP\r\n")
    h.check(code == 250, f"NOOP after {TIMEOUT - 1}s idle: {code} {text}")
    c.cmd(b"QUIT\r\n")
    c.close()
    relay.stop()


if __name__ == "__main__":
    h.main(test)
