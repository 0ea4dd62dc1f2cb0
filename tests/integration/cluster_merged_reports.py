"""cluster_merged_reports.py - reports over two instances' records as one
(`outrelay report ... --records A --records B`, or --records DIR).

Two instances A and B share one Redis (as in cluster_shared_dedup). The same message (same
Message-ID and recipient) goes to A, then to B: A delivers it, B suppresses its copy. Each
instance also delivers a message of its own. Then, with both stopped:
  - continuity over A and B proves all four accepted messages (B's suppressed copy by A's
    delivery of the same Message-ID to the same recipient) and names both files;
  - continuity over B alone cannot prove B's copy and says why;
  - delivery over A and B counts each delivery once, per instance (relay-A 2, relay-B 1), and
    the sink got the shared message once;
  - --records DIR (a folder holding both state directories) gives the same accounting.
"""
import json
import os
import subprocess

import harness as h
from cluster_world import wait_all_seen


def test(env):
    h.need_binary(env)
    nsd = h.Nsd(env)
    port = env.free_port(h.SINK_IPS + [h.LEGACY_IP])
    sink = h.SmtpSink(env, h.MX_EXAMPLE_NET, port, "example.net")
    redis = h.Redis(env, password="merged-redis")
    relays = {}
    for name in ("A", "B"):
        extra = {"spool": env.path(f"spool-{name}"), "state": env.path(f"relay-{name}"),
                 "cluster": {"redis": redis.address, "instance": f"relay-{name}",
                             "password": "merged-redis", "timeout": "1s", "key_prefix": "m"}}
        cfg = h.standard_config(env, nsd, port, **extra)
        relays[name] = h.Relay(env, cfg, name=f"relay{name}")
    a, b = relays["A"], relays["B"]

    wait_all_seen((a, b))

    def send(relay, msgid, rcpt):
        res = h.send(relay.host, relay.port, "someone@example.org", [rcpt],
                     h.make_message("someone@example.org", rcpt, "merged", message_id=msgid),
                     source_addr=h.ZIMBRA_IP)
        h.check(res.accepted, f"not accepted: {res}")

    def has(relay, event, msgid):
        return relay.events("SELECT 1 FROM events WHERE event=? AND message_id=?", (event, msgid))

    send(a, "<same@merged.test>", "dup@example.net")
    a.wait_for(lambda: has(a, "delivered", "<same@merged.test>"), 30, "A's delivery")
    send(b, "<same@merged.test>", "dup@example.net")
    b.wait_for(lambda: has(b, "suppressed", "<same@merged.test>"), 30, "B to suppress the copy")
    send(a, "<only-a@merged.test>", "a@example.net")
    send(b, "<only-b@merged.test>", "b@example.net")
    a.wait_for(lambda: has(a, "delivered", "<only-a@merged.test>"), 30, "A's own delivery")
    b.wait_for(lambda: has(b, "delivered", "<only-b@merged.test>"), 30, "B's own delivery")
    env.wait_for(lambda: len(sink.messages()) >= 3, 15, "the sink's files")
    a.stop()
    b.stop()
    redis.stop()
    copies = [m.message_id for m in sink.messages()].count("<same@merged.test>")
    h.check(copies == 1, f"the shared message reached the sink {copies} times")

    db_a, db_b = a.db_path, b.db_path

    def report(*args):
        r = subprocess.run([env.bin, "report", *args, "--json", "-c", a.conf_path],
                           capture_output=True, text=True, timeout=120)
        h.log(f"outrelay report {' '.join(args)} -> {r.returncode}\n{r.stdout}{r.stderr}")
        h.check(r.returncode == 0, f"report {args} failed: {r.stderr}")
        return json.loads(r.stdout)["tables"]

    # continuity over both: every accepted message of every instance has an outcome
    t = report("continuity", "--records", db_a, "--records", db_b)
    acc = t["accounting"][0]
    h.check(acc["accepted"] == 4 and acc["complete"] == 4 and acc["unaccounted"] == 0 and
            acc["instances"] == 2, f"merged continuity: {acc}, open: {t['open']}")
    h.check(sorted((i["instance"], i["file"]) for i in t["instances"]) ==
            [("relay-A", db_a), ("relay-B", db_b)], f"instances: {t['instances']}")

    # B alone cannot prove its suppressed copy: A's delivery is not in the set
    t = report("continuity", "--records", db_b)
    acc = t["accounting"][0]
    h.check(acc["accepted"] == 2 and acc["complete"] == 1 and acc["unaccounted"] == 1,
            f"continuity over B alone: {acc}")
    h.check([(o["message_id"], o["instance"], o["state"]) for o in t["open"]] ==
            [("<same@merged.test>", "relay-B", "suppressed, no delivery in these records")],
            f"open over B alone: {t['open']}")

    # delivery over both: each delivery once, with its instance
    t = report("delivery", "--records", db_a, "--records", db_b)
    per = {}
    for row in t["delivery"]:
        per[row["instance"]] = per.get(row["instance"], 0) + (row["delivered"] or 0)
    h.check(per == {"relay-A": 2, "relay-B": 1}, f"deliveries per instance: {t['delivery']}")

    # a directory holding both state directories: the same accounting
    folder = env.path("both")
    os.makedirs(folder)
    for name, state in (("relay-A", env.path("relay-A")), ("relay-B", env.path("relay-B"))):
        os.symlink(state, os.path.join(folder, name))
    t = report("continuity", "--records", folder)
    acc = t["accounting"][0]
    h.check(acc["accepted"] == 4 and acc["complete"] == 4 and acc["instances"] == 2,
            f"continuity over --records {folder}: {acc}")
    h.check(sorted(i["instance"] for i in t["instances"]) == ["relay-A", "relay-B"],
            f"instances over the directory: {t['instances']}")


if __name__ == "__main__":
    h.main(test)
