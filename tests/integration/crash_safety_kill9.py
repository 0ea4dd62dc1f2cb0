"""crash_safety_kill9.py - a message answered 250 after DATA survives kill -9.

8 client threads send 5,000 messages (unique Message-IDs) over persistent sessions. The MX is
down until 1,000 are acknowledged (a backlog builds in the spool); after about 2,000
acknowledgements, with deliveries in flight, the relay gets SIGKILL, is restarted on the same spool and state, and the
clients reconnect and finish. Every acknowledged Message-ID must reach the sink (smtp-sink at
example.net's MX). Duplicates are allowed only for messages in flight at the kill: their number is
printed and must stay under THREADS * DUP_FACTOR. Messages whose DATA got no reply (the kill hit
them) are not sent again and may or may not arrive.
"""
import threading
import time

import harness as h

TOTAL = 5000
THREADS = 8
KILL_AFTER = 2000
SINK_UP_AFTER = 1000
DUP_FACTOR = 5
ARRIVAL_TIMEOUT = 180


def test(env):
    h.need_binary(env)
    nsd = h.Nsd(env)
    mx_port = env.free_port(h.SINK_IPS + [h.LEGACY_IP])
    # The MX is down for the first SINK_UP_AFTER acks, so at the kill some acknowledged messages
    # exist only in the spool (deferred), while others are being delivered.
    relay = h.Relay(env, h.standard_config(env, nsd, mx_port))
    sink = None

    lock = threading.Lock()
    acked, unanswered, refused = [], [], []
    restarted = threading.Event()   # set once the second relay listens
    after_restart = set()           # messages whose transaction began after the restart
    stop = threading.Event()

    def worker(idx):
        client = h.Client(relay.host, relay.port, ehlo=f"load{idx}.example.org",
                          max_per_session=100, timeout=60)
        try:
            for n in range(idx, TOTAL, THREADS):
                if stop.is_set():
                    return
                msgid = f"<crash-{n}@example.org>"
                rcpt = f"user{n % 50}@example.net"
                data = h.make_message("load@example.org", rcpt, f"crash {n}", message_id=msgid)
                began_after_restart = restarted.is_set()
                res = client.transaction("load@example.org", [rcpt], data)
                if res.error and res.code("data") is None and not res.steps:
                    # no command got through (relay down): reconnect until it is back
                    deadline = time.monotonic() + 90
                    while res.error and not res.steps and time.monotonic() < deadline:
                        time.sleep(0.2)
                        res = client.transaction("load@example.org", [rcpt], data)
                with lock:
                    if res.accepted:
                        acked.append(msgid)
                        if began_after_restart:
                            after_restart.add(msgid)
                    elif res.code("data") is None and res.error:
                        unanswered.append((msgid, res.error))
                    else:
                        refused.append((msgid, res))
        finally:
            client.close()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(THREADS)]
    started = time.monotonic()
    for t in threads:
        t.start()

    env.wait_for(lambda: len(acked) >= SINK_UP_AFTER or not any(t.is_alive() for t in threads),
                 300, f"{SINK_UP_AFTER} acknowledged messages")
    sink = h.SmtpSink(env, h.MX_EXAMPLE_NET, mx_port, "example.net")
    env.wait_for(lambda: len(acked) >= KILL_AFTER or not any(t.is_alive() for t in threads),
                 300, f"{KILL_AFTER} acknowledged messages", interval=0.005)
    relay.kill9()
    with lock:
        acked_before = len(acked)
        acked_at_kill = set(acked)
    delivered_before = len({m.message_id for m in sink.messages(settle=0)} & acked_at_kill)
    h.check(acked_before < TOTAL, "all messages were acknowledged before the kill: the test "
            "proved nothing (raise TOTAL)")
    time.sleep(0.5)
    relay.start()
    restarted.set()
    h.log(f"killed at {acked_before} acks ({acked_before - delivered_before} of them not yet "
          f"at the sink); restarted")

    for t in threads:
        t.join(600)
    stop.set()
    h.log(f"load done in {time.monotonic() - started:.1f}s: {len(acked)} acked, "
          f"{len(unanswered)} without reply, {len(refused)} refused")
    h.check(not refused, lambda: f"{len(refused)} message(s) refused by the relay: "
            f"{refused[:3]}")
    h.check(len(unanswered) <= THREADS * 2, f"{len(unanswered)} messages got no reply to DATA "
            f"(more than the in-flight ones at the kill): {unanswered[:5]}")
    h.check(len(acked) >= TOTAL - THREADS * 2, f"only {len(acked)} of {TOTAL} acknowledged")

    want = set(acked)

    def all_arrived():
        got = {m.message_id for m in sink.messages()}
        return want <= got

    try:
        env.wait_for(all_arrived, ARRIVAL_TIMEOUT, "every acknowledged Message-ID at the sink")
    except h.TestFailure:
        got = {m.message_id for m in sink.messages()}
        missing = sorted(want - got, key=lambda s: int(s.split("-")[1].split("@")[0]))
        h.fail(f"{len(missing)} acknowledged message(s) LOST after kill -9 "
               f"(acked before the kill: {acked_before}); first: {missing[:10]}")
    time.sleep(3)
    counts = h.message_ids(sink.messages())
    dups = {m: c for m, c in counts.items() if c > 1}
    extra_copies = sum(c - 1 for c in dups.values())
    h.log(f"all {len(want)} acknowledged messages arrived; {len(dups)} duplicated Message-ID(s) "
          f"({extra_copies} extra copies): {sorted(dups.items())[:20]}")
    late = sorted(m for m in dups if m in after_restart)
    h.check(not late, f"{len(late)} message(s) submitted after the restart (never in flight at "
            f"the kill) were delivered more than once: {late[:20]}")
    h.check(extra_copies <= THREADS * DUP_FACTOR,
            f"{extra_copies} duplicate deliveries, more than in flight could explain "
            f"(limit {THREADS * DUP_FACTOR}): {sorted(dups.items())[:20]}")
    relay.stop()


if __name__ == "__main__":
    h.main(test)
