"""data_deadline_slowloris.py - a client that trickles its message one byte a second (each
byte within data_timeout, so the per-read timeout never fires) gets 421 4.4.2 when
limits.data_deadline (3s here) runs out, the connection is closed, and nothing is stored or
delivered. A message sent at normal speed right after still goes through.

The slow client is an origin (zimbra, 127.0.0.11), so it is refused for its pace alone.
"""
import time

import harness as h

DEADLINE = 3


def test(env):
    h.need_binary(env)
    nsd = h.Nsd(env)
    mx_port = env.free_port(h.SINK_IPS + [h.LEGACY_IP])
    sink = h.SmtpSink(env, h.MX_EXAMPLE_NET, mx_port, "example.net")
    relay = h.Relay(env, h.standard_config(env, nsd, mx_port,
                                           limits={"data_timeout": "10m",
                                                   "data_deadline": f"{DEADLINE}s"}))

    c = h.RawClient(relay.host, relay.port, source_addr=h.ZIMBRA_IP)
    h.check(c.reply()[0] == 220, "no greeting")
    for line, want in (("EHLO slow.example.org", 250), ("MAIL FROM:<slow@example.org>", 250),
                       ("RCPT TO:<bob@example.net>", 250), ("DATA", 354)):
        code, text = c.cmd(line + "\r\n")
        h.check(code == want, f"{line}: expected {want}, got {code} {text}")
    started = time.monotonic()
    body = h.make_message("slow@example.org", "bob@example.net", "slowloris",
                          message_id="<slowloris@example.org>")
    body = body.encode() if isinstance(body, str) else body
    reply = (None, "no reply")
    sent = 0
    for byte in body:
        try:
            c.send(bytes([byte]))
        except OSError:
            break
        sent += 1
        reply = c.reply(timeout=1)
        if reply[0] is not None or reply[1] == "eof":
            break
        if time.monotonic() - started > DEADLINE + 10:
            break
    elapsed = time.monotonic() - started
    code, text = reply
    h.log(f"after {elapsed:.1f}s and {sent} bytes of DATA: {code} {text}")
    h.check(code == 421 and text.startswith("4.4.2") and "DATA deadline exceeded" in text,
            f"a client trickling DATA a byte a second: expected '421 4.4.2 ... DATA deadline "
            f"exceeded' after {DEADLINE}s, got {code} {text} after {elapsed:.1f}s")
    h.check(DEADLINE - 0.5 <= elapsed <= DEADLINE + 3,
            f"the deadline reply came after {elapsed:.1f}s, not about {DEADLINE}s")
    h.check(c.closed_by_peer(5), "the relay did not close the connection after the 421")
    c.close()
    h.check("DATA deadline of 3s exceeded" in relay.stderr(), "no log line for the deadline")

    # the relay is fine and a message at normal speed is delivered; the slow one never is
    res = h.send(relay.host, relay.port, "fast@example.org", ["bob@example.net"],
                 h.make_message("fast@example.org", "bob@example.net", "fast",
                                message_id="<fast@example.org>"), source_addr=h.ZIMBRA_IP)
    h.check(res.accepted, f"a normal message after the slow one was refused: {res}")
    env.wait_for(lambda: [m for m in sink.messages() if m.message_id == "<fast@example.org>"],
                 30, "delivery of the normal message")
    time.sleep(1)
    ids = h.message_ids(sink.messages())
    h.check("<slowloris@example.org>" not in ids, f"the slow message was delivered: {ids}")
    rows = relay.events("SELECT message_id FROM events WHERE event='received'")
    h.check([r["message_id"] for r in rows] == ["<fast@example.org>"],
            f"received events: {rows} (only the normal message should be stored)")
    relay.stop()


if __name__ == "__main__":
    h.main(test)
