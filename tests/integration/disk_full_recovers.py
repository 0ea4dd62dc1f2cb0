"""disk_full_recovers.py - a full disk costs 4xx answers, never a restart and never a duplicate.

The spool and the state directory each live on a small tmpfs. 30 messages (20 recipients each)
wait in the queue
(their MX is down) when both filesystems are filled to ENOSPC with a dummy file: new mail gets
4xx, then the MX comes up and the 30 are delivered while the disk is still full (their delivered
marks and records cannot simply be written). The dummies go; the spool's tmpfs is filled again
leaving only 1.5 MiB, and 200 messages of 16 KiB (twice that space) are sent one after the other:
all must be accepted without a restart (before: the active segment kept the space of delivered
mail until a restart, so the relay refused after about 80). Finally kill -9 and a restart:
nothing may be delivered a second time (before: the marks lost on the full disk brought
delivered messages back). Needs root (mount).
"""
import os
import subprocess
import sys
import time

import harness as h

PHASE_B = 200
BODY = ("y" * 78 + "\r\n") * 200  # 16 KiB


def mount_tmpfs(path, size):
    os.makedirs(path, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", path],
                   check=True)


def fill(path, leave=0):
    """A dummy file that takes the free space of path's filesystem but `leave` bytes."""
    dummy = os.path.join(path, "dummy.fill")
    st = os.statvfs(path)
    want = st.f_bavail * st.f_frsize - leave
    with open(dummy, "ab") as fh:
        chunk = b"\0" * (1 << 16)
        written = 0
        try:
            while written < want:
                n = min(len(chunk), want - written)
                fh.write(chunk[:n])
                written += n
            fh.flush()
            os.fsync(fh.fileno())
        except OSError:
            pass  # ENOSPC: full, as asked
    return dummy


def send_one(relay, tag, tries=1, n_rcpts=1):
    last = None
    rcpts = [f"{tag}.{j}@example.net" for j in range(n_rcpts)]
    for i in range(tries):
        res = h.send(relay.host, relay.port, "a@example.org", rcpts,
                     h.make_message("a@example.org", rcpts, tag,
                                    message_id=f"<{tag}@disk.test>", body=BODY))
        if res.accepted:
            return True, res
        last = res
        time.sleep(0.3)
    return False, last


def test(env):
    h.need_binary(env)
    if os.geteuid() != 0:
        print("SKIP: needs root to mount a tmpfs")
        sys.exit(77)
    spool, state = env.path("spool"), env.path("state")
    mounted = []
    try:
        mount_tmpfs(spool, "8m")
        mounted.append(spool)
        mount_tmpfs(state, "16m")
        mounted.append(state)
        run(env, spool, state)
    finally:
        for m in reversed(mounted):
            # lazy: detached now, freed when the last process using it (the relay, stopped by
            # the harness's cleanup on failure) is gone
            subprocess.run(["umount", "-l", m], check=False)


def run(env, spool, state):
    nsd = h.Nsd(env)
    port = env.free_port(h.SINK_IPS + [h.LEGACY_IP])
    relay = h.Relay(env, h.standard_config(env, nsd, port, retry=("1s",)))

    # phase A: a queue waits for its MX; the disk fills up. 20 recipients each: their 600
    # delivered marks need more than the slack in the spool's last page
    for i in range(30):
        ok, res = send_one(relay, f"a{i}", n_rcpts=20)
        h.check(ok, f"a{i} refused before the disk was full: {res}")
    env.wait_for(lambda: relay.events("SELECT 1 FROM events WHERE event='deferred'"), 30,
                 "the first deferral")
    dummies = [fill(spool), fill(state)]
    # the first may still fit in the spool's reserve (stored and fsynced: a fair 250); then 4xx
    refused, full_ok = 0, set()
    for i in range(8):
        ok, res = send_one(relay, f"full{i}")
        if ok:
            full_ok.add(f"<full{i}@disk.test>")
            continue
        codes = [c for c in (res.code("mail"), res.code("rcpt"), res.code("data")) if c]
        h.check(codes and 400 <= codes[-1] < 500, f"a full disk must give 4xx, got {res}")
        refused += 1
    h.log(f"disk full: {refused} of 8 new messages refused with 4xx, {len(full_ok)} stored")
    h.check(refused >= 5, f"only {refused} of 8 messages refused on a full disk")
    sink = h.SmtpSink(env, h.MX_EXAMPLE_NET, port, "example.net")
    env.wait_for(lambda: len({m.message_id for m in sink.messages()}) >= 30, 60,
                 "the 30 queued messages delivered on the full disk")
    time.sleep(2)
    for d in dummies:
        os.unlink(d)
    time.sleep(1.5)  # marks and records retried meanwhile

    # phase B: little space left, much more mail than fits; no restart
    dummy = fill(spool, leave=1536 * 1024)
    accepted, streak, sent = set(), 0, 0
    for i in range(PHASE_B):
        ok, _ = send_one(relay, f"b{i}", tries=10)
        sent += 1
        if ok:
            accepted.add(f"<b{i}@disk.test>")
        streak = 0 if ok else streak + 1
        if streak >= 10:
            break  # stuck for good: the rest would be refused too
    h.log(f"after the disk-full episode, without restart: {len(accepted)} of {PHASE_B} messages "
          f"accepted with 1.5 MiB free on the spool's filesystem (stopped trying after {sent})")
    failures = []
    if len(accepted) != PHASE_B:
        failures.append(f"only {len(accepted)} of {PHASE_B} accepted after the episode (space of "
                        f"delivered mail not reclaimed without a restart)")
    want = {f"<a{i}@disk.test>" for i in range(30)} | accepted | full_ok
    env.wait_for(lambda: want <= {m.message_id for m in sink.messages()}, 120,
                 "every accepted message at the sink")
    os.unlink(dummy)

    # a restart must not deliver anything again
    time.sleep(1)
    relay.kill9()
    relay.start()
    time.sleep(6)  # retries are 1s apart: anything that came back is delivered by now
    counts = h.message_ids(sink.messages())
    dups = {m: c for m, c in counts.items() if c > 1}
    h.log(f"after kill -9 and restart: {len(dups)} message(s) delivered twice "
          f"{sorted(dups)[:10]}")
    if dups:
        failures.append(f"{len(dups)} message(s) delivered twice after the restart: "
                        f"{sorted(dups.items())[:10]}")
    h.check(not failures, "; ".join(failures))
    relay.stop()


if __name__ == "__main__":
    h.main(test)
