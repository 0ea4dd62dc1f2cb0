"""per_client_connection_limits.py - the anvil-style limits per client address:
  - rate: with max_connection_rate_per_client 5/min, a stranger's 6th and later connections in
    the minute get "421 4.7.0 ... too many connections from ADDR" and are closed; another
    stranger address is not affected; an origin (by network) is exempt;
  - count: with max_connections_per_client 3, a stranger holding 3 connections is refused a 4th
    the same way, and admitted again once one of them ends; an origin is exempt.
Each refusal kind is logged, and the relay's log does not get one line per refused connection.
"""
import harness as h

RATE = 5
COUNT = 3


def greet(relay, source):
    """Connects from source; returns (client, code, text) after the first reply."""
    c = h.RawClient(relay.host, relay.port, source_addr=source)
    code, text = c.reply()
    return c, code, text


def one_session(relay, source):
    c, code, text = greet(relay, source)
    if code == 220:
        c.cmd("QUIT\r\n")
    else:
        h.check(c.closed_by_peer(5), f"{source}: not closed after {code} {text}")
    c.close()
    return code, text


def test(env):
    h.need_binary(env)
    nsd = h.Nsd(env)
    mx_port = env.free_port(h.SINK_IPS + [h.LEGACY_IP])
    h.SmtpSink(env, h.MX_EXAMPLE_NET, mx_port, "example.net")

    # --- rate ----------------------------------------------------------------------------------
    relay = h.Relay(env, h.standard_config(
        env, nsd, mx_port, limits={"max_connection_rate_per_client": f"{RATE}/min"}),
        name="rate")
    stranger = "127.0.0.77"
    codes = [one_session(relay, stranger) for _ in range(RATE + 20)]
    h.log(f"{stranger}: {[c for c, _ in codes]}")
    h.check(all(c == 220 for c, _ in codes[:RATE]),
            f"the first {RATE} connections in the minute should be greeted: {codes[:RATE]}")
    for code, text in codes[RATE:]:
        h.check(code == 421 and text.startswith("4.7.0")
                and f"too many connections from {stranger}" in text,
                f"connection over the rate: expected '421 4.7.0 ... too many connections from "
                f"{stranger}', got {code} {text}")
    code, text = one_session(relay, "127.0.0.78")
    h.check(code == 220, f"another stranger address was refused: {code} {text}")
    origin_codes = [one_session(relay, h.ZIMBRA_IP)[0] for _ in range(RATE * 3)]
    h.check(all(c == 220 for c in origin_codes),
            f"an origin by network must be exempt from the rate: {origin_codes}")
    log = relay.stderr()
    lines = [l for l in log.splitlines() if "connection rate limit exceeded" in l]
    h.check(lines and f"from {stranger}" in lines[0], "no log line for the rate refusals")
    h.check(len(lines) <= 6, f"{len(lines)} log lines for 20 refusals (expected ~log2(20)):\n"
            + "\n".join(lines))
    h.log(f"rate: {len(codes) - RATE} refused, {len(lines)} log lines, e.g. {lines[0]}")
    relay.stop()

    # --- concurrent count ----------------------------------------------------------------------
    relay = h.Relay(env, h.standard_config(
        env, nsd, mx_port, limits={"max_connections_per_client": COUNT}), name="count")
    stranger = "127.0.0.79"
    held = []
    for i in range(COUNT):
        c, code, text = greet(relay, stranger)
        h.check(code == 220, f"connection {i + 1} of {COUNT} refused: {code} {text}")
        held.append(c)
    c, code, text = greet(relay, stranger)
    h.check(code == 421 and text.startswith("4.7.0")
            and f"too many connections from {stranger}" in text,
            f"connection {COUNT + 1}: expected '421 4.7.0 ... too many connections from "
            f"{stranger}', got {code} {text}")
    h.check(c.closed_by_peer(5), "not closed after the 421")
    c.close()
    h.log(f"count: connection {COUNT + 1} from {stranger}: {code} {text}")
    origin_held = []
    for i in range(COUNT * 3):
        c, code, text = greet(relay, h.ZIMBRA_IP)
        h.check(code == 220, f"origin connection {i + 1}: {code} {text} (origins are exempt)")
        origin_held.append(c)
    held.pop().cmd("QUIT\r\n")
    relay.wait_for(lambda: greet_ok(relay, stranger, held), 10,
                   "a stranger admitted again once one of its connections ended")
    h.check("too many connections from 127.0.0.79: 4, limit 3" in relay.stderr(),
            "no log line for the count refusal")
    for c in held + origin_held:
        c.close()
    relay.stop()


def greet_ok(relay, source, held):
    c, code, _ = greet(relay, source)
    if code == 220:
        held.append(c)
        return True
    c.close()
    return False


if __name__ == "__main__":
    h.main(test)
