"""cluster_shared_caps.py - two relay instances share their cap counters through one Redis
server (cluster:): a cap of 10 an hour is 10 an hour across both, and stays conservative while
Redis is gone.

Two instances A and B (own spool, state and listen port; the same NSD, sink, Redis and clock
file), one egress (legacy) with a cap of 10/hour on legacy x testprov and nowhere to spill:
  1. 15 distinct messages to each: exactly 10 reach the sink across both; the others wait in the
     queues with the cap reason (never bounced); Redis's key for the hour holds 10 and both
     `ramp status` show the cluster-wide 10/10;
  2. Redis killed, the next hour opened (the test clock): both record `cluster` caps-local and
     each sends 5 more (10 / 2 instances), no more, and a new message waits with the reason
     "cap 5/hour (10 shared by 2 instances, redis down)"; the gauge outrelay_cluster_caps_local
     is 1;
  3. Redis started again (empty): both record caps-shared, Redis's key for that hour holds the
     sum of their outage counts (10), and the shared count holds the cap again: nothing more
     leaves that hour.
"""
import os
import time
import urllib.request

import harness as h
from cluster_world import cluster_status, wait_all_seen

HOUR = 3600
CAP = 10
PER_INSTANCE = 15


def test(env):
    h.need_binary(env)
    t0 = 1796000000 - 1796000000 % HOUR + 600  # ten minutes into an hour
    clock_path = env.path("clock")

    def set_clock(t):
        tmp = clock_path + ".tmp"
        with open(tmp, "w") as fh:
            fh.write(f"{int(t)}\n")
        os.replace(tmp, clock_path)

    set_clock(t0)
    os.environ["OUTRELAY_TEST_CLOCK"] = clock_path  # inherited by both relays
    nsd = h.Nsd(env)
    port = env.free_port(h.SINK_IPS + [h.LEGACY_IP])
    sink = h.SmtpSink(env, h.MX_EXAMPLE_NET, port, "example.net")
    redis = h.Redis(env)
    metrics_port = env.free_port([h.RELAY_IP])
    relays = {}
    for name in ("A", "B"):
        extra = {"spool": env.path(f"spool-{name}"), "state": env.path(f"state-{name}"),
                 "cluster": {"redis": redis.address, "instance": f"relay-{name}",
                             "timeout": "1s", "key_prefix": "t"},
                 "providers": {"testprov": {"mx_suffixes": ["mx.example.net"],
                                            "source": "test world"}},
                 "caps": [{"egress": "legacy", "provider": "testprov", "per_hour": CAP}]}
        if name == "A":
            extra["metrics"] = {"listen": f"127.0.0.1:{metrics_port}"}
        cfg = h.standard_config(env, nsd, port, retry=("1s",), **extra)
        relays[name] = h.Relay(env, cfg, name=f"relay{name}")
    a, b = relays["A"], relays["B"]

    status = cluster_status
    wait_all_seen((a, b))

    def send(relay, tag):
        rcpt = f"{tag}@example.net"
        res = h.send(relay.host, relay.port, "someone@example.org", [rcpt],
                     h.make_message("someone@example.org", rcpt, "cap", message_id=f"<{tag}@t>"),
                     source_addr=h.ZIMBRA_IP)
        h.check(res.accepted, f"not accepted: {res}")

    def delivered():
        return len(sink.messages())

    def delivered_by(relay):
        return len(relay.events("SELECT 1 FROM events WHERE event='delivered'"))

    def settle(expected, what):
        env.wait_for(lambda: delivered() >= expected, 60, what)
        time.sleep(4)  # what would leave beyond the cap has had its chance
        h.check(delivered() == expected,
                f"{what}: {delivered()} messages reached the sink, expected {expected}")

    def hour_key(t):
        return f"t:cap:legacy:testprov:hour:{t - t % HOUR}"

    def metric(name):
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                      timeout=10).read().decode()
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        h.fail(f"/metrics lacks {name}:\n{text}")

    # 1. 15 each, 10 across both
    for i in range(PER_INSTANCE):
        send(a, f"a{i}")
        send(b, f"b{i}")
    settle(CAP, "the shared cap of 10/hour")
    h.check(redis.cli("GET", hour_key(t0)) == [str(CAP)],
            f"redis's count for the hour: {redis.cli('GET', hour_key(t0))}")
    ttl = int(redis.cli("TTL", hour_key(t0))[0])
    h.check(0 < ttl <= HOUR, f"the hour's key lives {ttl} s")
    first = {r.name: delivered_by(r) for r in (a, b)}
    h.log(f"delivered in the first hour: {first}")
    for r in (a, b):
        waits = r.events("SELECT route_reason FROM events WHERE event='routed' AND action='wait'")
        h.check(len(waits) == PER_INSTANCE - first[r.name],
                f"{r.name}: {len(waits)} waits recorded, {first[r.name]} delivered: {waits}")
        h.check(all("cap 10/hour reached for legacy x testprov" in w["route_reason"]
                    for w in waits), f"{r.name}: wait reasons {waits}")
        sent = r.events("SELECT route_reason FROM events WHERE event='routed' AND "
                        "action!='wait'")
        h.check(len(sent) == first[r.name] and
                all((s["route_reason"] or "").startswith("ramp ") for s in sent),
                f"{r.name}: the routed records of what was sent lost their reason: {sent}")
        h.check(not r.events("SELECT 1 FROM events WHERE event='bounced'"),
                f"{r.name} bounced a message for a cap")
        ramp = r.queue_like("ramp", "status").stdout
        h.check("10/10!" in ramp, f"{r.name}'s ramp status lacks the cluster-wide 10/10:\n{ramp}")
    h.check(metric("outrelay_cluster_caps_local") == 0, "caps local while redis is up")

    # 2. Redis gone, the next hour: each instance sends 10 / 2 = 5
    redis.stop()
    for r in (a, b):
        r.wait_for(lambda r=r: r.events("SELECT detail FROM events WHERE event='cluster' AND "
                                        "action='caps-local'"), 30, "the caps-local record")
        rec = r.events("SELECT detail FROM events WHERE event='cluster' AND action='caps-local'")
        h.check("divided by 2 instances" in rec[0]["detail"], f"{r.name}: {rec}")
    h.check(metric("outrelay_cluster_caps_local") == 1, "caps not local while redis is down")
    t1 = t0 + HOUR
    set_clock(t1)
    for r in (a, b):
        r.queue("flush")
    settle(2 * CAP, "5 more from each instance while redis is down")
    for r in (a, b):
        h.check(delivered_by(r) - first[r.name] == CAP // 2,
                f"{r.name} sent {delivered_by(r) - first[r.name]} in the outage hour, expected 5")
    send(a, "late")  # a new message meets the divided cap, and says so
    a.wait_for(lambda: a.events("SELECT 1 FROM events WHERE event='routed' AND "
                                "recipient='late@example.net'"), 30, "the late message routed")
    late = a.events("SELECT action, route_reason FROM events WHERE event='routed' AND "
                    "recipient='late@example.net'")
    h.check(late[0]["action"] == "wait" and "cap 5/hour (10 shared by 2 instances, redis down)"
            in late[0]["route_reason"], f"the late message's route: {late}")

    # 3. Redis back (empty): the outage counts are added, the shared count rules again
    redis.start()
    for r in (a, b):
        r.wait_for(lambda r=r: r.events("SELECT 1 FROM events WHERE event='cluster' AND "
                                        "action='caps-shared'"), 30, "the caps-shared record")
    env.wait_for(lambda: redis.cli("GET", hour_key(t1)) == [str(CAP)], 15,
                 "redis's key to hold both outage counts")
    shared = a.events("SELECT detail FROM events WHERE event='cluster' AND action='caps-shared'")
    h.check("5 messages counted during the outage" in shared[0]["detail"], f"A: {shared}")
    h.check(metric("outrelay_cluster_caps_local") == 0, "caps still local after redis returned")
    for r in (a, b):
        r.queue("flush")
    settle(2 * CAP, "nothing more in the reconciled hour")
    h.check(redis.cli("GET", hour_key(t1)) == [str(CAP)],
            f"the reconciled hour's count moved: {redis.cli('GET', hour_key(t1))}")
    listing = a.queue("list").stdout + b.queue("list").stdout
    h.log(listing)

    a.stop()
    b.stop()
    redis.stop()


if __name__ == "__main__":
    h.main(test)
