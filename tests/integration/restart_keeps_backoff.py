"""restart_keeps_backoff.py - a restart keeps every deferred recipient's backoff.

defer.example's MX (a Python sink) answers every RCPT with 451 4.3.0. delivery.retry is
[1s, 1h, 3h]: each of slow1..3@defer.example is tried twice and then waits 1h. The relay is
stopped with SIGTERM and started again, then killed with SIGKILL (once records.db holds the
deferrals) and started again. After each start:
  - `outrelay queue list --json` shows each of them deferred with 2 attempts and its next attempt
    about 1h away (as before the restart), and the arrival time unchanged (the lifetime counts
    from it);
  - the sink sees no new attempt for them (before this change every recovered recipient was
    tried at once and its backoff began again at 1s).
slow4@defer.example's deferred rows are deleted from records.db while the relay is down (rows a
crash lost): it falls back to being due at once, and is tried again at the start.
The calendar (OUTRELAY_TEST_CLOCK) then moves 2h on and the relay starts again: slow1..3 are
past due and tried at once, and their third failure waits 3h (the kept attempt count picks the
third step of delivery.retry, not the first).
"""
import json
import os
import sqlite3
import time

import harness as h

DEFER_IP = "127.0.0.52"
T0 = 1796000000
KEPT = ["slow1@defer.example", "slow2@defer.example", "slow3@defer.example"]
LOST = "slow4@defer.example"


def tries(sink, rcpt):
    """RCPT commands the sink answered for rcpt (each one attempt of the relay)."""
    return sum(1 for r in sink.replies() if r.get("cmd") == "RCPT" and rcpt in (r.get("arg") or ""))


def deferrals(relay, rcpt):
    return relay.events("SELECT ts_us, next_attempt_s FROM events WHERE event='deferred' AND "
                        "recipient = ? ORDER BY id", (rcpt,))


def listing(relay):
    r = relay.queue("list", "--json")
    h.check(r.returncode == 0, f"queue list --json failed: {r.stdout}{r.stderr}")
    out = {}
    for m in json.loads(r.stdout)["messages"]:
        for rc in m["recipients"]:
            out[rc["address"]] = dict(rc, arrival=m["arrival"], queue_id=m["queue_id"])
    return out


def check_kept(env, relay, sink, before, arrivals, label):
    """After a start: the kept recipients wait for their due time with their attempt count."""
    env.wait_for(lambda: set(KEPT) <= set(listing(relay)), 30,
                 f"{label}: the deferred messages back in the queue")
    got = listing(relay)
    for rcpt in KEPT:
        r = got[rcpt]
        h.check(r["state"] == "deferred" and r["attempts"] == 2,
                f"{label}: {rcpt} is {r['state']} with {r['attempts']} attempts, expected "
                f"deferred with 2: {r}")
        h.check(r["next_attempt_in"] is not None and 3300 <= r["next_attempt_in"] <= 3600,
                f"{label}: {rcpt}'s next attempt in {r['next_attempt_in']}s, expected about 1h "
                f"(the backoff before the restart): {r}")
        h.check(r["arrival"] == arrivals[rcpt],
                f"{label}: {rcpt}'s arrival moved from {arrivals[rcpt]} to {r['arrival']}")
    time.sleep(5)  # before the change every recovered recipient was tried within a second
    for rcpt in KEPT:
        h.check(tries(sink, rcpt) == before[rcpt],
                f"{label}: {rcpt} was tried {tries(sink, rcpt) - before[rcpt]} more time(s) "
                f"after the start, before its due time; records.db: {relay.history(rcpt)}")
    h.log(f"{label}: {len(KEPT)} recipients kept 2 attempts and their next try ~1h away; "
          "none tried early")


def test(env):
    h.need_binary(env)
    clock = env.path("clock")
    h.set_test_clock(clock, T0)
    os.environ["OUTRELAY_TEST_CLOCK"] = clock  # inherited by the relay
    zones = h.default_zones()
    zones["defer.example"] = h.zone_with_mx("defer.example", DEFER_IP)
    nsd = h.Nsd(env, zones)
    mx_port = env.free_port([DEFER_IP, h.LEGACY_IP])
    sink = h.PySink(env, DEFER_IP, mx_port, "defer.example",
                    script=[{"on": "RCPT", "reply": "451 4.3.0 come back later"}])
    relay = h.Relay(env, h.standard_config(env, nsd, mx_port, retry=["1s", "1h", "3h"],
                                           max_lifetime="5d"))

    for rcpt in KEPT + [LOST]:
        res = h.send(relay.host, relay.port, "sender@example.org", [rcpt],
                     h.make_message("sender@example.org", rcpt, f"to {rcpt}"))
        h.check(res.accepted, f"relay refused the message to {rcpt}: {res}")
    # tried twice (the 1s step, then 1h): records.db holds both deferrals of each
    for rcpt in KEPT + [LOST]:
        env.wait_for(lambda: len(deferrals(relay, rcpt)) >= 2, 60,
                     lambda: f"two deferrals of {rcpt}: {relay.history(rcpt)}")
    for rcpt in KEPT:
        d = deferrals(relay, rcpt)
        h.check(len(d) == 2 and d[-1]["next_attempt_s"] == 3600,
                f"{rcpt}: expected 2 deferrals, the last one 1h: {d}")
    got = listing(relay)
    arrivals = {rcpt: got[rcpt]["arrival"] for rcpt in KEPT}
    before = {rcpt: tries(sink, rcpt) for rcpt in KEPT}
    h.check(all(n == 2 for n in before.values()), f"tries at the sink before the restart: {before}")

    # SIGTERM, and rows lost for slow4 while the relay is down
    relay.stop()
    db = sqlite3.connect(relay.db_path)
    db.execute("DELETE FROM events WHERE event = 'deferred' AND recipient = ?", (LOST,))
    db.commit()
    db.close()
    lost_before = tries(sink, LOST)
    relay.start()
    check_kept(env, relay, sink, before, arrivals, "after SIGTERM")
    env.wait_for(lambda: tries(sink, LOST) > lost_before, 30,
                 f"{LOST} (its records lost) tried again at once after the start")
    h.log(f"{LOST}: no deferred rows in records.db, tried again at the start as before")

    # kill -9 once records.db holds what happened (the rows are read back from it)
    env.wait_for(lambda: len(deferrals(relay, LOST)) >= 2, 60,
                 lambda: f"{LOST} deferred again: {relay.history(LOST)}")
    relay.kill9()
    relay.start()
    check_kept(env, relay, sink, before, arrivals, "after kill -9")

    # 2h later on the calendar (the queue's wake timer runs in real time: a start reads the new
    # calendar): due, tried at once, and the third failure waits 3h (the third step)
    h.set_test_clock(clock, T0 + 2 * 3600)
    relay.restart()
    for rcpt in KEPT:
        env.wait_for(lambda: len(deferrals(relay, rcpt)) >= 3, 60,
                     lambda: f"{rcpt} tried once its due time passed: {relay.history(rcpt)}")
        d = deferrals(relay, rcpt)
        h.check(d[-1]["next_attempt_s"] == 3 * 3600,
                f"{rcpt}: the third failure waits {d[-1]['next_attempt_s']}s, expected 3h "
                f"(attempts kept across the restarts): {d}")
        h.check(tries(sink, rcpt) == before[rcpt] + 1,
                f"{rcpt}: {tries(sink, rcpt) - before[rcpt]} tries after the due time, expected 1")
    got = listing(relay)
    h.check(all(got[r]["attempts"] == 3 for r in KEPT), f"attempts after the third try: {got}")
    h.log("due after 2h on the calendar: each tried once more, the next wait is the 3h step")
    h.check(not sink.messages(), "defer.example accepted a message it refuses")
    relay.stop()


if __name__ == "__main__":
    h.main(test)
