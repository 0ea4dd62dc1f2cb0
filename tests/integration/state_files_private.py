"""state_files_private.py - the relay's state and spool files are owner-only.

records.db holds senders, recipients and Message-IDs; route.db and the spool segments hold mail
metadata too. With the state and spool directories created 0755 beforehand and the relay
started under umask 000, every regular file the relay creates there (records.db, route.db, their
-wal and -shm, the spool segments) must be 0600, and the control socket must give nothing to
group or others. A records.db left 0644 by an older version is made 0600 at the next start.
(Before: records.db, route.db and their -wal/-shm were 0644.)
"""
import os
import stat

import harness as h


def modes(dirs):
    out = {}
    for d in dirs:
        for name in sorted(os.listdir(d)):
            p = os.path.join(d, name)
            st = os.lstat(p)
            out[p] = st.st_mode
    return out


def check_private(dirs, what):
    bad = []
    seen = modes(dirs)
    for p, mode in seen.items():
        perm = stat.S_IMODE(mode)
        if stat.S_ISREG(mode) and perm != 0o600:
            bad.append(f"{p} {perm:04o}")
        elif stat.S_ISSOCK(mode) and perm & 0o077:
            bad.append(f"{p} (socket) {perm:04o}")
    h.log(f"{what}: " + ", ".join(f"{os.path.basename(p)} {stat.S_IMODE(m):04o}"
                                   for p, m in seen.items()))
    h.check(not bad, f"{what}: files readable beyond their owner: {bad}")
    names = {os.path.basename(p) for p in seen}
    for want in ("records.db", "records.db-wal", "records.db-shm", "route.db"):
        h.check(want in names, f"{what}: {want} missing (the test checks nothing): {names}")


def test(env):
    h.need_binary(env)
    nsd = h.Nsd(env)
    port = env.free_port(h.SINK_IPS + [h.LEGACY_IP])
    sink = h.SmtpSink(env, h.MX_EXAMPLE_NET, port, "example.net")
    state, spool = env.mkdir("state"), env.mkdir("spool")  # 0755, as an installer might leave
    old = os.umask(0)
    try:
        relay = h.Relay(env, h.standard_config(env, nsd, port))
    finally:
        os.umask(old)
    res = h.send(relay.host, relay.port, "a@example.org", ["u@example.net"],
                 h.make_message("a@example.org", "u@example.net", "private"))
    h.check(res.accepted, f"not accepted: {res}")
    env.wait_for(lambda: sink.messages(), 30, "the delivery")
    env.wait_for(lambda: relay.events("SELECT 1 FROM events WHERE event='delivered'"), 30,
                 "the delivered row")
    check_private([state, spool], "first start")

    relay.stop()
    os.chmod(os.path.join(state, "records.db"), 0o644)  # as an older version left it
    os.chmod(os.path.join(state, "route.db"), 0o644)
    old = os.umask(0)
    try:
        relay.start()
    finally:
        os.umask(old)
    check_private([state, spool], "restart after 0644")
    relay.stop()


if __name__ == "__main__":
    h.main(test)
