"""queue_bulk_commands.py - the queue commands at scale: 1,000 messages for three domains (a.test,
b.test, c.test, every MX a Python sink answering 451 at RCPT) from three senders, then

  shape        pending recipients per domain (and per sender domain) add up to what was sent;
               totals first, rows sorted by count
  hold --domain a.test      holds exactly the a.test messages; a flush does not attempt them
  delete --sender bob@...   deletes exactly bob's messages (held ones included); none of them is
               ever delivered, even after the sink starts accepting, and no DSN goes out
  kill -9      and a restart: the deleted messages stay gone, the held ones stay held
  flush ALL    retries every message neither held nor deleted: all of them arrive
  release --domain a.test   releases the held ones that are left; they arrive
and `--json` of each (and of list with selectors, show, shape --by sender / egress, ramp status,
plan, set and resume, and errors) parses with json.loads and carries the same counts; an override
asked for in JSON is on the record in the text answer's words. delivery.retry is 1h, so nothing
moves unless a command moves it.
"""
import json
import threading
import time

import harness as h

COUNT = 1000
THREADS = 8
DOMAINS = ["a.test", "b.test", "c.test"]
SENDERS = ["alice@example.org", "bob@example.org", "carol@example.org"]
DEFER = [{"on": "RCPT", "reply": "451 4.3.0 try later"}]


def distinct_ids(relay, event):
    rows = relay.events("SELECT COUNT(DISTINCT queue_id) AS n FROM events WHERE event = ?",
                        (event,))
    return rows[0]["n"] if rows else 0


def queue_json(relay, *args, ok=True):
    r = relay.queue(*args, "--json", timeout=120)
    h.check((r.returncode == 0) == ok, f"queue {' '.join(args)} --json -> {r.returncode}: "
            f"{r.stderr[:500]}")
    text = r.stdout if ok else r.stderr
    try:
        return json.loads(text)
    except ValueError as e:
        h.fail(f"queue {' '.join(args)} --json is not JSON ({e}): {text[:500]!r}")


def test(env):
    h.need_binary(env)
    zones = h.default_zones()
    for d in DOMAINS:
        zones[d] = h.zone_with_mx(d, h.MX_EXAMPLE_NET)
    nsd = h.Nsd(env, zones=zones)
    port = env.free_port(h.SINK_IPS + [h.LEGACY_IP])
    sink = h.PySink(env, h.MX_EXAMPLE_NET, port, "defer", script=DEFER)
    dsn_sink = h.SmtpSink(env, h.MX_EXAMPLE_ORG, port, "example.org")
    egress = {"legacy": {"type": "direct", "source": [h.LEGACY_IP]},
              "cloud": {"type": "direct", "source": [h.CLOUD_IP]}}
    cfg = h.standard_config(env, nsd, port, egress=egress, retry=("1h",), max_lifetime="5d")
    cfg["ramp"] = {"from": "legacy", "to": "cloud"}  # no schedule: 0 % through cloud
    relay = h.Relay(env, cfg)

    sent = {}  # queue id -> (message id, domain, sender)
    lock = threading.Lock()
    failures = []

    def worker(t):
        client = h.Client(relay.host, relay.port)
        try:
            for i in range(t, COUNT, THREADS):
                domain, sender = DOMAINS[i % 3], SENDERS[(i // 3) % 3]
                msgid = f"<bulk-{i}@example.org>"
                rcpt = f"u{i}@{domain}"
                data = h.make_message(sender, rcpt, f"bulk {i}", message_id=msgid)
                res = client.transaction(sender, [rcpt], data)
                if res.error:
                    res = client.transaction(sender, [rcpt], data)
                with lock:
                    if res.accepted:
                        sent[res.queue_id] = (msgid, domain, sender)
                    else:
                        failures.append((i, res))
        finally:
            client.close()

    h.run_threads(THREADS, worker)
    h.check(not failures, lambda: f"{len(failures)} not accepted, first: {failures[:3]}")
    h.check(len(sent) == COUNT, f"{len(sent)} accepted")
    env.wait_for(lambda: distinct_ids(relay, "deferred") >= COUNT, 300,
                 "every message deferred once by the sink")
    per_domain = {d: {q for q, v in sent.items() if v[1] == d} for d in DOMAINS}
    bob = {q for q, v in sent.items() if v[2] == "bob@example.org"}

    # shape, text and JSON
    text = relay.queue("shape").stdout
    h.check("TOTAL" in text and all(d in text for d in DOMAINS), f"queue shape:\n{text}")
    shape = queue_json(relay, "shape")
    h.check(shape["total"]["total"] == COUNT and sum(shape["total"]["buckets"]) == COUNT,
            f"shape total: {shape['total']}")
    h.check(len(shape["buckets"]) == 10 and shape["buckets"][-1] == "1280+", shape["buckets"])
    rows = {r["key"]: r["total"] for r in shape["rows"]}
    h.check(rows == {d: len(per_domain[d]) for d in DOMAINS}, f"shape rows {rows}")
    totals = [r["total"] for r in shape["rows"]]
    h.check(totals == sorted(totals, reverse=True), f"shape rows not sorted by count: {totals}")
    by_sender = queue_json(relay, "shape", "--by", "sender")
    h.check([(r["key"], r["total"]) for r in by_sender["rows"]] == [("example.org", COUNT)],
            f"shape --by sender: {by_sender['rows']}")
    listing = queue_json(relay, "list")
    h.check(listing["count"] == COUNT and len(listing["messages"]) == COUNT,
            f"list --json: count {listing['count']}, {len(listing['messages'])} messages")
    by_egress = queue_json(relay, "shape", "--by", "egress")
    h.check([(r["key"], r["total"]) for r in by_egress["rows"]] == [("legacy", COUNT)],
            f"shape --by egress: {by_egress['rows']}")
    h.check(queue_json(relay, "list", "--egress", "legacy")["count"] == COUNT
            and queue_json(relay, "list", "--egress", "cloud")["count"] == 0, "list --egress")
    h.check(queue_json(relay, "list", "--sender", "@example.org")["count"] == COUNT,
            "list --sender @example.org")
    some = next(iter(per_domain["b.test"]))
    shown = queue_json(relay, "show", some)
    h.check(shown["queue_id"] == some and shown["recipients"][0]["state"] == "deferred"
            and shown["recipients"][0]["last_reply"].startswith("451"), f"show: {shown}")
    err = queue_json(relay, "show", "NOSUCHID", ok=False)
    h.check("NOSUCHID" in err.get("error", ""), f"error as JSON: {err}")

    # hold the a.test messages
    held = queue_json(relay, "hold", "--domain", "a.test")
    h.check(held["messages"] == len(per_domain["a.test"]) == held["recipients"] == held["matched"],
            f"hold --domain a.test: {held}, sent {len(per_domain['a.test'])}")
    again = relay.queue("hold", "--domain", "a.test")
    h.check(again.returncode == 0 and "held 0 messages" in again.stdout,
            f"holding again: {again.stdout}")
    listing = queue_json(relay, "list")
    held_ids = {m["queue_id"] for m in listing["messages"] if m["held"]}
    h.check(held_ids == per_domain["a.test"], f"{len(held_ids)} held in the listing")

    # delete bob's messages, held ones included
    deleted = queue_json(relay, "delete", "--sender", "bob@example.org")
    h.check(deleted["messages"] == len(bob) == deleted["recipients"],
            f"delete --sender bob: {deleted}, sent {len(bob)}")
    env.wait_for(lambda: distinct_ids(relay, "deleted") == len(bob), 60,
                 "a 'deleted' record per deleted message")
    left = set(sent) - bob
    shape = queue_json(relay, "shape")
    h.check(shape["total"]["total"] == len(left)
            and shape["total"]["held"] == len(per_domain["a.test"] - bob),
            f"shape after hold and delete: {shape['total']}, expected {len(left)} with "
            f"{len(per_domain['a.test'] - bob)} held")

    # the hold and delete marks are in the spool: after kill -9 and a restart the deleted
    # messages stay gone and the held ones stay held (and are not attempted)
    a_tries = len([e for e in sink.replies() if "@a.test" in e["arg"]])
    env.wait_for(lambda: queue_json(relay, "list")["count"] == len(left), 60,
                 "the deleted messages forgotten (their marks durable)")
    relay.kill9()
    relay.start()
    listing = queue_json(relay, "list")
    h.check({m["queue_id"] for m in listing["messages"]} == left,
            f"after a restart {listing['count']} messages, expected {len(left)}")
    h.check({m["queue_id"] for m in listing["messages"] if m["held"]}
            == per_domain["a.test"] - bob, "the held messages are not held after a restart")

    # flush ALL while the sink still defers: every message neither held nor deleted is tried
    # again, no held one
    before = len(sink.replies())
    flushed = queue_json(relay, "flush", "ALL")
    flushable = left - per_domain["a.test"]
    h.check(flushed["messages"] == len(flushable) and flushed["matched"] == len(left),
            f"flush ALL: {flushed}, expected {len(flushable)} of {len(left)}")
    env.wait_for(lambda: len(sink.replies()) - before >= len(flushable), 120,
                 "the flushed messages tried again")
    time.sleep(2)
    a_after = len([e for e in sink.replies() if "@a.test" in e["arg"]])
    h.check(a_after == a_tries, f"held a.test messages were attempted: {a_after - a_tries}")

    # the sink accepts from now on; flush ALL (text answer) delivers everything but held/deleted
    sink.stop()
    sink = h.PySink(env, h.MX_EXAMPLE_NET, port, "accept")
    r = relay.queue("flush", "ALL")
    h.check(r.returncode == 0 and f"flushed {len(flushable)} messages" in r.stdout, r.stdout)

    def arrived():
        return {m.message_id for m in sink.messages()}

    want = {sent[q][0] for q in flushable}
    env.wait_for(lambda: want <= arrived(), 300, f"{len(want)} flushed messages delivered")
    released = queue_json(relay, "release", "--domain", "a.test")
    a_left = per_domain["a.test"] - bob
    h.check(released["messages"] == len(a_left) == released["recipients"],
            f"release --domain a.test: {released}, expected {len(a_left)}")
    want |= {sent[q][0] for q in a_left}
    env.wait_for(lambda: want <= arrived(), 300, "the released messages delivered")
    time.sleep(3)
    got = [m.message_id for m in sink.messages()]
    bob_ids = {sent[q][0] for q in bob}
    h.check(not bob_ids & set(got), f"{len(bob_ids & set(got))} deleted messages delivered")
    h.check(len(got) == len(set(got)) == len(want), f"{len(got)} deliveries, "
            f"{len(set(got))} distinct, {len(want)} expected")
    h.check(not relay.events("SELECT 1 FROM events WHERE event='dsn'"), "a DSN for a deletion")
    h.check(not dsn_sink.messages(), "a message at example.org's MX (a DSN)")
    env.wait_for(lambda: queue_json(relay, "list")["count"] == 0, 60, "an empty queue")
    empty = queue_json(relay, "shape")
    h.check(empty["total"]["total"] == 0 and empty["rows"] == [], f"empty shape: {empty}")
    nothing = queue_json(relay, "delete", "ALL")
    h.check(nothing["messages"] == 0, f"delete ALL of an empty queue: {nothing}")

    # the ramp commands answer JSON too
    for args in (("status",), ("plan",)):
        r = relay.queue_like("ramp", *args, "--json")
        h.check(r.returncode == 0, f"ramp {args[0]} --json: {r.stderr}")
        doc = json.loads(r.stdout)
        h.check(isinstance(doc, dict), f"ramp {args[0]} --json: {doc}")
    status = json.loads(relay.queue_like("ramp", "status", "--json").stdout)
    h.check(status["from"] == "legacy" and status["to"] == "cloud"
            and status["mode"] == "schedule", f"ramp status: {status}")
    r = relay.queue_like("ramp", "set", "40", "--json")
    h.check(r.returncode == 0, r.stderr)
    answer = json.loads(r.stdout)
    h.check(answer["mode"] == "set" and answer["share"] == 40 and answer["was"] == 0, answer)
    status = json.loads(relay.queue_like("ramp", "status", "--json").stdout)
    h.check(status["mode"] == "set" and status["effective_share"] == 40, f"ramp status: {status}")
    overrides = relay.events("SELECT action, detail FROM events WHERE event = 'ramp'")
    h.check([o["action"] for o in overrides] == ["set 40"]
            and "share 40.00%" in overrides[0]["detail"],
            f"the override on the record in the text answer's words: {overrides}")
    answer = json.loads(relay.queue_like("ramp", "resume", "--json").stdout)
    h.check(answer["mode"] == "schedule" and answer["share"] == 0 and answer["was"] == 40, answer)
    r = relay.queue_like("ramp", "set", "140", "--json")
    h.check(r.returncode != 0 and "percentage" in json.loads(r.stderr)["error"], r.stderr)
    plan = json.loads(relay.queue_like("ramp", "plan", "--json").stdout)
    delivered = {r["provider"]: r["messages"] for r in plan["delivered_per_day"]}
    h.check(abs(sum(delivered.values()) * 7 - len(want)) < 1e-6,
            f"ramp plan: {delivered} per day, {len(want)} delivered")
    relay.stop()  # exit 0, no sanitizer report


if __name__ == "__main__":
    h.main(test)
