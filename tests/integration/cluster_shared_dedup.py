"""cluster_shared_dedup.py - two relay instances share their duplicate window through one
Redis server (cluster:), and keep relaying when it is gone.

Two instances A and B (own spool, state and listen port; the same NSD, sink and Redis, which
asks for a password) and:
  1. the same message (same Message-ID, same recipient) sent to A, then to B: delivered once,
     B records the suppressed duplicate; the same message sent to both at the same moment:
     delivered once, the other copy suppressed;
  2. Redis killed: both keep delivering (no acknowledged message lost), each records the
     `cluster` down event, `outrelay cluster status` says down;
  3. Redis started again (empty: nothing is saved): both record `cluster` up, A writes what it
     delivered during the outage back (reconciliation), and a copy of A's outage message sent to
     B afterwards is suppressed;
  4. /metrics has the cluster gauges and counters.
"""
import threading
import time
import urllib.request

import harness as h
from cluster_world import cluster_status, wait_all_seen

RCPT = "dup@example.net"


def test(env):
    h.need_binary(env)
    nsd = h.Nsd(env)
    port = env.free_port(h.SINK_IPS + [h.LEGACY_IP])
    sink = h.SmtpSink(env, h.MX_EXAMPLE_NET, port, "example.net")
    redis = h.Redis(env, password="s3cret-redis")
    metrics_port = env.free_port([h.RELAY_IP])
    relays = {}
    for name in ("A", "B"):
        extra = {"spool": env.path(f"spool-{name}"), "state": env.path(f"state-{name}"),
                 "cluster": {"redis": redis.address, "instance": f"relay-{name}",
                             "password": "s3cret-redis", "timeout": "1s",
                             "key_prefix": "t"}}
        if name == "A":
            extra["metrics"] = {"listen": f"127.0.0.1:{metrics_port}"}
        cfg = h.standard_config(env, nsd, port, **extra)
        relays[name] = h.Relay(env, cfg, name=f"relay{name}")
    a, b = relays["A"], relays["B"]

    status = cluster_status
    wait_all_seen((a, b))
    h.check(redis.cli("GET", "t:instance:relay-A") != [""], "no heartbeat key of A")

    def send(relay, msgid, rcpt=RCPT):
        res = h.send(relay.host, relay.port, "someone@example.org", [rcpt],
                     h.make_message("someone@example.org", rcpt, "dup", message_id=msgid),
                     source_addr=h.ZIMBRA_IP)
        h.check(res.accepted, f"not accepted: {res}")

    def copies(msgid):
        return [m.message_id for m in sink.messages()].count(msgid)

    def suppressed(relay, msgid):
        return relay.events("SELECT 1 FROM events WHERE event='suppressed' AND message_id=?",
                            (msgid,))

    def delivered(relay, msgid):
        return relay.events("SELECT 1 FROM events WHERE event='delivered' AND message_id=?",
                            (msgid,))

    # 1. one after the other, then both at once
    send(a, "<one@cluster.test>")
    env.wait_for(lambda: copies("<one@cluster.test>") == 1, 30, "A's delivery")
    send(b, "<one@cluster.test>")
    b.wait_for(lambda: suppressed(b, "<one@cluster.test>"), 30, "B to suppress A's message")
    threads = [threading.Thread(target=send, args=(r, "<two@cluster.test>")) for r in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    env.wait_for(lambda: suppressed(a, "<two@cluster.test>") or suppressed(b, "<two@cluster.test>"),
                 30, "one of the simultaneous copies suppressed")
    env.wait_for(lambda: delivered(a, "<two@cluster.test>") or delivered(b, "<two@cluster.test>"),
                 30, "the other delivered")
    # the sink's file may land a moment after the delivered record; then let a late copy show
    env.wait_for(lambda: copies("<two@cluster.test>") >= 1, 15, "the delivered copy at the sink")
    time.sleep(1)
    h.check(copies("<one@cluster.test>") == 1 and copies("<two@cluster.test>") == 1,
            f"duplicates went out: {sorted(m.message_id for m in sink.messages())}")
    sup = b.events("SELECT detail FROM events WHERE event='suppressed'")
    h.log(f"B suppressed: {sup}")

    # 2. Redis gone: both keep relaying on their own window
    redis.stop()
    for r in (a, b):
        r.wait_for(lambda r=r: r.events("SELECT 1 FROM events WHERE event='cluster' AND "
                                        "action='down'"), 30, "the cluster down record")
    h.check(status(a)["state"] == "down" and status(a)["down_since"] > 0,
            f"status while redis is down: {status(a)}")
    down = a.events("SELECT detail FROM events WHERE event='cluster' AND action='down'")
    h.check("2 instances seen" in down[0]["detail"], f"down record: {down}")
    send(a, "<outage@cluster.test>")
    send(b, "<b-outage@cluster.test>", "other@example.net")
    env.wait_for(lambda: copies("<outage@cluster.test>") == 1 and
                 copies("<b-outage@cluster.test>") == 1, 30,
                 "both instances to deliver without redis")
    h.check(status(a)["reconcile_pending"] >= 1, f"A has nothing to reconcile: {status(a)}")

    # 3. Redis back (empty): A's outage delivery is written to it, B then suppresses a copy
    redis.start()
    for r in (a, b):
        r.wait_for(lambda r=r: r.events("SELECT 1 FROM events WHERE event='cluster' AND "
                                        "action='up'"), 30, "the cluster up record")
    a.wait_for(lambda: status(a)["reconcile_pending"] == 0, 30, "A's reconciliation")
    keys = redis.cli("KEYS", "t:dup:*")
    h.check(len([k for k in keys if k]) >= 2, f"reconciled keys in redis: {keys}")
    send(b, "<outage@cluster.test>")
    b.wait_for(lambda: suppressed(b, "<outage@cluster.test>"), 30,
               "B to suppress the message A delivered while redis was down")
    h.check(copies("<outage@cluster.test>") == 1, "A's outage message went out twice")
    # and fresh traffic still flows through both
    send(b, "<after@cluster.test>", "after@example.net")
    env.wait_for(lambda: copies("<after@cluster.test>") == 1, 30, "delivery after the outage")

    # 4. metrics
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read()
    text = text.decode()
    for line in ("outrelay_cluster_up 1", "outrelay_cluster_instances_seen ",
                 'outrelay_cluster_transitions_total{state="down"} 1',
                 'outrelay_cluster_transitions_total{state="up"} 1'):
        h.check(line in text, f"/metrics lacks {line!r}:\n{text}")
    errors = [l for l in text.splitlines() if l.startswith("outrelay_cluster_errors_total ")]
    h.check(errors and float(errors[0].split()[1]) >= 1, f"no cluster errors counted: {errors}")

    a.stop()
    b.stop()
    # stopping is no outage: still the one down record each
    for r in (a, b):
        downs = r.events("SELECT 1 FROM events WHERE event='cluster' AND action='down'")
        h.check(len(downs) == 1, f"{r.name}: {len(downs)} cluster down records")
    redis.stop()


if __name__ == "__main__":
    h.main(test)
