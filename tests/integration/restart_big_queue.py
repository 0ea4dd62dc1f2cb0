"""restart_big_queue.py - a restart with a big queue serves at once and loses nothing.

5,000 messages are deferred for example.net, whose MX refuses connections (retry 1h keeps them
waiting). The relay is killed (SIGKILL) and started again with the MX now up, 2h later on the
calendar (OUTRELAY_TEST_CLOCK: a restart keeps each recipient's next try, so the backlog must be
due to come back at once, as after a long outage; the lifetime is 5d, so nothing expires). The
spool is read before the relay answers, but its messages come back into the queue in the
background: a message sent as soon as the relay listens must get its 250 before the relay logs
that the recovery has ended, and it must reach the MX among the first half of all messages (new
mail takes turns with the recovered backlog for the prepare stages instead of waiting behind all
of it). Every recovered Message-ID must arrive exactly once: nothing lost, nothing duplicated.
"""
import os
import re
import time

import harness as h

QUEUED = 5000
T0 = 1796000000


def deferred_count(relay):
    rows = relay.events("SELECT count(DISTINCT queue_id) AS n FROM events WHERE event = 'deferred'")
    return rows[0]["n"]


def test(env):
    h.need_binary(env)
    clock = env.path("clock")
    h.set_test_clock(clock, T0)
    os.environ["OUTRELAY_TEST_CLOCK"] = clock  # inherited by the relay
    nsd = h.Nsd(env)
    mx_port = env.free_port(h.SINK_IPS)
    relay = h.Relay(env, h.standard_config(env, nsd, mx_port, retry=("1h",), max_lifetime="5d"))

    started = time.monotonic()
    res = h.smtp_source(relay.host, relay.port, count=QUEUED, sessions=8,
                        rcpt="user@example.net")
    h.check(res.returncode == 0, lambda: f"smtp-source failed ({res.returncode}): "
            f"{res.stderr[-2000:]}")
    env.wait_for(lambda: deferred_count(relay) >= QUEUED, 300,
                 f"{QUEUED} messages deferred (their MX refuses connections)", interval=1)
    h.log(f"{QUEUED} messages queued and deferred in {time.monotonic() - started:.1f}s")

    relay.kill9()
    h.set_test_clock(clock, T0 + 2 * 3600)  # every deferred message is due again
    sink = h.SmtpSink(env, h.MX_EXAMPLE_NET, mx_port, "example.net")
    log_before = os.path.getsize(relay.log_path)
    relay.start()
    client = h.Client(relay.host, relay.port, timeout=60)
    fresh_id = "<fresh-after-restart@example.org>"
    sent = client.transaction("load@example.org", ["fresh@example.net"],
                              h.make_message("load@example.org", "fresh@example.net",
                                             "sent at the restart", message_id=fresh_id))
    client.close()
    h.check(sent.accepted, f"the message sent at the restart was not accepted: {sent.steps} "
            f"{sent.error}")

    with open(relay.log_path, errors="replace") as fh:
        fh.seek(log_before)
        lines = fh.read().splitlines()

    def first(pattern):
        return next((i for i, l in enumerate(lines) if re.search(pattern, l)), None)

    def wait_line(pattern, what):
        nonlocal lines
        def seen():
            nonlocal lines
            with open(relay.log_path, errors="replace") as fh:
                fh.seek(log_before)
                lines = fh.read().splitlines()
            return first(pattern) is not None
        env.wait_for(seen, 300, what)
        return first(pattern)

    done_at = wait_line(r"recovered \d+ messages? from the spool", "the end of the recovery")
    received_at = first(r"received .*message-id=" + re.escape(fresh_id))
    found_at = first(r"\d+ messages? found in the spool")
    h.check(found_at is not None, "the relay did not log what it found in the spool")
    h.check(re.search(rf"\b{QUEUED} messages found in the spool", lines[found_at]),
            f"expected {QUEUED} messages found: {lines[found_at]}")
    h.check(re.search(rf"recovered {QUEUED} messages", lines[done_at]),
            f"expected {QUEUED} messages recovered: {lines[done_at]}")
    h.check(received_at is not None, f"no 'received' line for {fresh_id}")
    h.check(received_at < done_at, "the message sent at the restart was accepted only after "
            "the recovery had ended: the relay did not serve while recovering")
    h.log(f"the new message was received {done_at - received_at} log line(s) before the "
          "recovery ended")

    want = QUEUED + 1

    def all_arrived():
        return len(h.message_ids(sink.messages())) >= want

    env.wait_for(all_arrived, 400, f"{want} distinct Message-IDs at the sink", interval=1)
    time.sleep(2)  # anything sent twice would show up now
    msgs = sink.messages()
    counts = h.message_ids(msgs)
    dups = {m: c for m, c in counts.items() if c > 1}
    h.check(not dups, f"{len(dups)} message(s) delivered more than once: "
            f"{sorted(dups.items())[:10]}")
    h.check(len(counts) == want, f"{len(counts)} distinct messages at the sink, want {want}")
    h.check(fresh_id in counts, "the message sent at the restart never arrived")

    order = sorted(msgs, key=lambda m: os.stat(m.file).st_mtime_ns)
    rank = next(i for i, m in enumerate(order) if m.message_id == fresh_id)
    h.log(f"the new message arrived as number {rank + 1} of {len(order)}")
    h.check(rank < QUEUED // 2, f"the message sent at the restart arrived as number {rank + 1} "
            f"of {len(order)}: it waited behind the recovered backlog")
    relay.stop()


if __name__ == "__main__":
    h.main(test)
