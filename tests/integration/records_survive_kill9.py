"""records_survive_kill9.py - the continuity proof survives kill -9.

Records are committed asynchronously, so every kill -9 loses the last events; the spool (fsynced
before every 250 and every final mark) still knows them, and the relay replays them into
records.db at start. 4 client threads send mail (some with two recipients) while the relay is
killed with SIGKILL 10 times and restarted on the same spool and state. After the last restart
and a drained queue, `outrelay report continuity` must show 0 unaccounted messages, and every
acknowledged queue id must have its `received` row. Prints both numbers (before the replay
existed: dozens unaccounted and received rows missing).
"""
import json
import random
import subprocess
import threading
import time

import harness as h

THREADS = 4
ROUNDS = 10


def unaccounted(relay):
    r = subprocess.run([relay.env.bin, "report", "continuity", "--json", "-c", relay.conf_path],
                       capture_output=True, text=True, timeout=120)
    h.check(r.returncode == 0, f"report continuity failed: {r.stdout}{r.stderr}")
    tables = json.loads(r.stdout)["tables"]
    return tables["accounting"][0], tables["open"]


def test(env):
    h.need_binary(env)
    nsd = h.Nsd(env)
    mx_port = env.free_port(h.SINK_IPS + [h.LEGACY_IP])
    sink = h.SmtpSink(env, h.MX_EXAMPLE_NET, mx_port, "example.net")
    relay = h.Relay(env, h.standard_config(env, nsd, mx_port))

    lock = threading.Lock()
    acked = {}  # queue id -> Message-ID
    stop = threading.Event()

    def worker(idx):
        client = h.Client(relay.host, relay.port, ehlo=f"k{idx}.example.org", max_per_session=20,
                          timeout=30)
        n = 0
        try:
            while not stop.is_set():
                n += 1
                msgid = f"<rk-{idx}-{n}@example.org>"
                rcpts = [f"user{n % 40}@example.net"]
                if n % 3 == 0:
                    rcpts.append(f"other{n % 7}@example.net")
                data = h.make_message("load@example.org", rcpts[0], f"kill {idx}/{n}",
                                      message_id=msgid)
                res = client.transaction("load@example.org", rcpts, data)
                if res.accepted:
                    with lock:
                        acked[res.queue_id] = msgid
                elif res.error:
                    time.sleep(0.05)  # relay down: the next call reconnects
        finally:
            client.close()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(THREADS)]
    for t in threads:
        t.start()
    rng = random.Random(9)
    for rnd in range(ROUNDS):
        time.sleep(rng.uniform(0.6, 1.4))
        relay.kill9()
        time.sleep(0.1)
        relay.start()
        h.log(f"round {rnd + 1}: {len(acked)} acknowledged so far")
    time.sleep(1)
    stop.set()
    for t in threads:
        t.join(60)
    h.log(f"{len(acked)} messages acknowledged across {ROUNDS} kill -9 rounds")
    h.check(len(acked) > 200, f"only {len(acked)} messages acknowledged: the test proves little")

    # the last kill happened while mail flowed; this start is the one that must replay
    relay.kill9()
    relay.start()

    def drained():
        return "-- 0 messages in the queue" in relay.queue("list").stdout
    env.wait_for(drained, 120, "an empty queue")
    time.sleep(1.5)  # the writer commits the last rows

    acc, open_rows = unaccounted(relay)
    received = {r["queue_id"] for r in relay.events(
        "SELECT DISTINCT queue_id FROM events WHERE event = 'received'")}
    missing = sorted(set(acked) - received)
    replayed = relay.events("SELECT count(*) AS n FROM events WHERE detail LIKE "
                            "'%replayed from spool at start%'")[0]["n"]
    h.log(f"continuity after {ROUNDS} kill -9 rounds: {acc['accepted']} accepted, "
          f"{acc['complete']} complete, {acc['in_queue']} in queue, "
          f"UNACCOUNTED {acc['unaccounted']}; acknowledged without a received row: "
          f"{len(missing)}; rows replayed from the spool: {replayed}")
    h.check(acc["unaccounted"] == 0,
            lambda: f"{acc['unaccounted']} unaccounted message(s): {open_rows[:10]}")
    h.check(not missing, f"{len(missing)} acknowledged message(s) have no received row: "
            f"{missing[:10]}")
    got = {m.message_id for m in sink.messages()}
    lost = sorted(set(acked.values()) - got)
    h.check(not lost, f"{len(lost)} acknowledged message(s) never arrived: {lost[:10]}")
    relay.stop()


if __name__ == "__main__":
    h.main(test)
