"""deliver_1000_two_origins.py - 1,000 messages from two origins all arrive exactly once, each at
the MX of its recipient's domain, from the direct egress's bound source address.

Two platform clients (127.0.0.11 = origin zimbra, 127.0.0.12 = origin cloud) send 500 messages each
over persistent sessions from several threads; recipients alternate between example.net (MX
127.0.0.30) and example.com (MX 127.0.0.31), every tenth message has one recipient at each. The
legacy egress binds 127.0.0.2 and says EHLO legacy.outrelay.test; smtp-sink records the client
address of every transaction. records.db must map each client address to its origin.
"""
import threading
import time

import harness as h

PER_ORIGIN = 500
THREADS_PER_ORIGIN = 4
CLIENTS = {h.ZIMBRA_IP: "zimbra", h.CLOUD_CLIENT_IP: "cloud"}


def test(env):
    h.need_binary(env)
    nsd = h.Nsd(env)
    mx_port = env.free_port(h.SINK_IPS + [h.LEGACY_IP])
    sinks = {
        "example.net": h.SmtpSink(env, h.MX_EXAMPLE_NET, mx_port, "example.net"),
        "example.com": h.SmtpSink(env, h.MX_EXAMPLE_COM, mx_port, "example.com"),
    }
    origins = {"zimbra": {"networks": [f"{h.ZIMBRA_IP}/32"]},
               "cloud": {"networks": [f"{h.CLOUD_CLIENT_IP}/32"]}}
    egress = {"legacy": {"type": "direct", "source": [h.LEGACY_IP],
                         "helo": "legacy.outrelay.test"}}
    relay = h.Relay(env, h.standard_config(env, nsd, mx_port, origins=origins, egress=egress))

    # expected[msgid] = set of domains it must reach
    expected = {}
    lock = threading.Lock()
    failures = []

    def worker(idx):
        ip = list(CLIENTS)[idx % 2]
        tag = CLIENTS[ip]
        client = h.Client(relay.host, relay.port, source_addr=ip, ehlo=f"{tag}.platform.test")
        try:
            for n in range(idx // 2, PER_ORIGIN, THREADS_PER_ORIGIN):
                msgid = f"<{tag}-{n}@example.org>"
                if n % 10 == 0:
                    rcpts = [f"u{n}@example.net", f"u{n}@example.com"]
                elif n % 2:
                    rcpts = [f"u{n}@example.net"]
                else:
                    rcpts = [f"u{n}@example.com"]
                sender = f"{tag}-sender@example.org"
                data = h.make_message(sender, rcpts, f"load {tag} {n}", message_id=msgid)
                res = client.transaction(sender, rcpts, data)
                if res.error:   # one reconnect, then it must work
                    res = client.transaction(sender, rcpts, data)
                if not res.accepted:
                    with lock:
                        failures.append((ip, msgid, res))
                    continue
                with lock:
                    expected[msgid] = {r.split("@")[1] for r in rcpts}
        finally:
            client.close()

    h.log(f"sending {2 * PER_ORIGIN} messages from {list(CLIENTS)}")
    h.run_threads(2 * THREADS_PER_ORIGIN, worker)
    h.check(not failures, lambda: f"{len(failures)} message(s) not accepted by the relay, first: "
            f"{failures[:3]}")
    h.check(len(expected) == 2 * PER_ORIGIN, f"only {len(expected)} messages accepted")

    want = {d: {m for m, doms in expected.items() if d in doms} for d in sinks}
    h.log(f"all accepted; waiting for {sum(len(v) for v in want.values())} deliveries")

    def arrived():
        return all(len({m.message_id for m in s.messages()} & want[d]) == len(want[d])
                   for d, s in sinks.items())

    env.wait_for(arrived, 300, "every accepted message at its recipient's MX")
    h.log("all arrived; waiting 3 s for stragglers (duplicates)")
    time.sleep(3)

    for domain, sink in sinks.items():
        msgs = sink.messages()
        counts = h.message_ids(msgs)
        dups = {m: c for m, c in counts.items() if c > 1}
        extra = set(counts) - want[domain]
        missing = want[domain] - set(counts)
        h.check(not missing, f"{domain}: {len(missing)} missing, e.g. {sorted(missing)[:5]}")
        h.check(not dups, f"{domain}: {len(dups)} Message-ID(s) delivered more than once: "
                f"{list(dups.items())[:5]}")
        h.check(not extra, f"{domain}: unexpected messages {sorted(map(str, extra))[:5]}")
        wrong_src = [m for m in msgs if m.client_addr != h.LEGACY_IP]
        h.check(not wrong_src, lambda: f"{domain}: {len(wrong_src)} transaction(s) not from the "
                f"egress source {h.LEGACY_IP}, e.g. {wrong_src[:3]}")
        wrong_helo = [m for m in msgs if (m.helo or "").lower() != "legacy.outrelay.test"]
        h.check(not wrong_helo, lambda: f"{domain}: EHLO name is not legacy.outrelay.test in "
                f"{len(wrong_helo)} transaction(s), e.g. {wrong_helo[:3]}")
        for m in msgs:
            h.check(all(r.endswith("@" + domain) for r in m.rcpts),
                    f"{domain} sink got recipients of another domain: {m}")
        h.log(f"{domain}: {len(msgs)} transactions, {len(counts)} unique Message-IDs, "
              f"all from {h.LEGACY_IP}")

    pairs = relay.events("SELECT DISTINCT client_addr, origin FROM events WHERE event='received'")
    got = {(h.ip_of(r["client_addr"]), r["origin"]) for r in pairs}
    h.check(got == set(CLIENTS.items()),
            f"records.db received rows map client address to origin as {sorted(got)}, "
            f"expected {sorted(CLIENTS.items())}")
    relay.stop()


if __name__ == "__main__":
    h.main(test)
