"""connection_flood_origin_reserve.py - strangers holding connections open cannot lock the
origins out (the default limits: max_connections 500, reserved_for_origins 100,
max_connections_per_client 50, max_connection_rate_per_client 300/min):
  1. one stranger address (127.0.0.66) opens 3,000 connections and holds them; it keeps 50,
     the rest get "421 4.7.0 ... too many connections from 127.0.0.66"; meanwhile an origin
     client (zimbra, 127.0.0.11) gets its greeting and its message is delivered;
  2. 40 stranger addresses open 12 connections each (480, each address under its own limit):
     strangers get 400 (max_connections minus the reserve), the rest 421 4.3.2; the origin still
     delivers from the reserve.
Prints the origin's session time during each flood and how many stranger connections were
refused. The relay inherits this process's open files limit, raised to the hard limit.
"""
import resource
import selectors
import socket
import time

import harness as h

FLOOD = 3000
FLOOD_IP = "127.0.0.66"
SPREAD_IPS = [f"127.0.0.{i}" for i in range(100, 140)]
SPREAD_EACH = 12


def open_connections(port, sources):
    """Opens one connection per source address (non-blocking connects, so a full accept queue
    does not serialise them); returns the sockets whose connect succeeded and the failures."""
    socks, failed = [], 0
    for src in sources:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.bind((src, 0))
        err = s.connect_ex((h.RELAY_IP, port))
        if err not in (0, 115):  # EINPROGRESS
            failed += 1
            s.close()
            continue
        socks.append(s)
    return socks, failed


def first_lines(socks, timeout=60):
    """The first reply line from each socket ("220 ...", "421 ...", or "eof"/"timeout")."""
    sel = selectors.DefaultSelector()
    bufs = {}
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
        bufs[s] = b""
    result = {}
    deadline = time.monotonic() + timeout
    while len(result) < len(socks) and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=1):
            s = key.fileobj
            try:
                chunk = s.recv(4096)
            except BlockingIOError:
                continue
            except OSError:
                chunk = b""
            if chunk:
                bufs[s] += chunk
                if b"\r\n" not in bufs[s]:
                    continue
                result[s] = bufs[s].split(b"\r\n", 1)[0].decode("utf-8", "replace")
            else:
                result[s] = "eof"
            sel.unregister(s)
    for s in socks:
        result.setdefault(s, "timeout")
    sel.close()
    return result


def tally(lines):
    counts = {}
    for line in lines.values():
        key = line[:9] if line[:1].isdigit() else line
        counts[key] = counts.get(key, 0) + 1
    return counts


def origin_delivers(relay, sink, label):
    mid = f"<origin-{label}@example.org>"
    started = time.monotonic()
    res = h.send(relay.host, relay.port, "zimbra@example.org", ["bob@example.net"],
                 h.make_message("zimbra@example.org", "bob@example.net", label, message_id=mid),
                 source_addr=h.ZIMBRA_IP, timeout=30)
    took = time.monotonic() - started
    h.log(f"{label}: origin session (connect to QUIT) took {took:.3f}s: "
          f"connect={res.code('connect')} data={res.code('data')}")
    h.check(res.accepted, f"{label}: the origin could not deliver during the flood: {res}")
    relay.wait_for(lambda: [m for m in sink.messages() if m.message_id == mid], 30,
                   f"{label}: delivery of the origin's message")
    return took


def test(env):
    h.need_binary(env)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 16384) if hard != resource.RLIM_INFINITY else 16384
    if want < FLOOD + 600:
        print(f"SKIP: the open files hard limit ({hard}) is below {FLOOD + 600}")
        raise SystemExit(77)
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    nsd = h.Nsd(env)
    mx_port = env.free_port(h.SINK_IPS + [h.LEGACY_IP])
    sink = h.SmtpSink(env, h.MX_EXAMPLE_NET, mx_port, "example.net")
    relay = h.Relay(env, h.standard_config(env, nsd, mx_port))

    # --- 1. one stranger address, 3,000 connections ----------------------------------------------
    started = time.monotonic()
    socks, failed = open_connections(relay.port, [FLOOD_IP] * FLOOD)
    lines = first_lines(socks)
    counts = tally(lines)
    h.log(f"flood 1: {FLOOD} connections from {FLOOD_IP} in {time.monotonic() - started:.1f}s "
          f"({failed} connect failures): {counts}")
    took = origin_delivers(relay, sink, "flood-1")
    greeted = sum(1 for l in lines.values() if l.startswith("220"))
    refused = [l for l in lines.values() if l.startswith("421")]
    h.log(f"flood 1: stranger connections greeted {greeted}, refused {len(refused)}; origin "
          f"session {took:.3f}s")
    h.check(greeted == 50, f"{FLOOD_IP} should hold exactly max_connections_per_client (50) "
            f"connections, holds {greeted}: {counts}")
    h.check(refused and all(l.startswith("421 4.7.0") and
                            f"too many connections from {FLOOD_IP}" in l for l in refused),
            f"refusals should be '421 4.7.0 ... too many connections from {FLOOD_IP}': "
            f"{sorted(set(l[:80] for l in refused))[:5]}")
    h.check(len(refused) >= FLOOD - 50 - failed - 5, f"only {len(refused)} refusals: {counts}")
    log_lines = [l for l in relay.stderr().splitlines() if f"from {FLOOD_IP}" in l]
    h.check(0 < len(log_lines) <= 30,
            f"{len(log_lines)} log lines about {FLOOD_IP} for {len(refused)} refusals")
    for s in socks:
        s.close()

    # --- 2. many stranger addresses, each under its own limit --------------------------------------
    time.sleep(1)  # the relay sees the 50 held connections close
    started = time.monotonic()
    sources = [ip for ip in SPREAD_IPS for _ in range(SPREAD_EACH)]
    socks, failed = open_connections(relay.port, sources)
    lines = first_lines(socks)
    counts = tally(lines)
    h.log(f"flood 2: {len(sources)} connections from {len(SPREAD_IPS)} addresses in "
          f"{time.monotonic() - started:.1f}s ({failed} connect failures): {counts}")
    took = origin_delivers(relay, sink, "flood-2")
    greeted = sum(1 for l in lines.values() if l.startswith("220"))
    refused = [l for l in lines.values() if l.startswith("421")]
    h.log(f"flood 2: stranger connections greeted {greeted}, refused {len(refused)}; origin "
          f"session {took:.3f}s")
    h.check(greeted == 400, f"strangers should hold max_connections - reserved_for_origins "
            f"(400) connections, hold {greeted}: {counts}")
    h.check(all(l.startswith("421 4.3.2") for l in refused),
            f"refusals over the strangers' share should be 421 4.3.2: {counts}")
    for s in socks:
        s.close()
    relay.stop()


if __name__ == "__main__":
    h.main(test)
