"""accept_fd_limit_backoff.py - out of file descriptors, the relay backs off instead of spinning:
it is started with a low open files limit (RLIMIT_NOFILE, inherited from this process), origin
connections are opened until accept() fails with EMFILE, and while they are held
  - the relay's CPU time (utime + stime from /proc/PID/stat) grows by well under a second over
    3 seconds (a busy loop takes ~3 s of CPU),
  - its log grows by a few lines (one per back-off), not thousands of "Too many open files";
then the connections are closed and a new session delivers a message.
"""
import os
import resource
import socket
import time

import harness as h

LIMIT = 128      # the relay's open files limit
CONNECTIONS = 200  # more than it can accept
WINDOW = 3.0


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def log_lines(relay):
    return relay.stderr().count("\n")


def test(env):
    h.need_binary(env)
    nsd = h.Nsd(env)
    mx_port = env.free_port(h.SINK_IPS + [h.LEGACY_IP])
    sink = h.SmtpSink(env, h.MX_EXAMPLE_NET, mx_port, "example.net")
    cfg = h.standard_config(env, nsd, mx_port)

    # the relay inherits a low soft limit; this process takes its own back right after
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (LIMIT, hard))
    try:
        relay = h.Relay(env, cfg)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    pid = relay.proc.pid
    with open(f"/proc/{pid}/limits") as fh:
        limit_line = [l for l in fh if l.startswith("Max open files")][0]
    h.log(f"relay pid {pid}: {limit_line.strip()}; {open_fds(pid)} descriptors open at start")
    h.check(int(limit_line.split()[3]) == LIMIT, f"the relay did not inherit the limit: "
            f"{limit_line}")

    socks = []
    for _ in range(CONNECTIONS):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.bind((h.ZIMBRA_IP, 0))
        s.connect_ex((relay.host, relay.port))
        socks.append(s)
    relay.wait_for(lambda: open_fds(pid) >= LIMIT - 1, 20, "the relay to run out of descriptors")
    time.sleep(0.5)
    lines0, cpu0, t0 = log_lines(relay), cpu_seconds(pid), time.monotonic()
    time.sleep(WINDOW)
    lines1, cpu1, t1 = log_lines(relay), cpu_seconds(pid), time.monotonic()
    cpu = cpu1 - cpu0
    grown = lines1 - lines0
    h.log(f"at the descriptor limit ({open_fds(pid)} open): CPU {cpu:.2f}s in {t1 - t0:.1f}s "
          f"({100 * cpu / (t1 - t0):.0f}%), log grew by {grown} lines "
          f"({os.path.getsize(relay.log_path)} bytes in all)")
    tail = [l for l in relay.stderr().splitlines() if "accept" in l][-3:]
    h.log("log: " + " | ".join(tail))
    h.check(cpu < 0.1 * WINDOW, f"the relay used {cpu:.2f}s of CPU in {t1 - t0:.1f}s at the "
            f"descriptor limit (a busy accept loop?)")
    h.check(grown <= 6, f"the log grew by {grown} lines in {t1 - t0:.1f}s at the descriptor "
            f"limit:\n" + "\n".join(relay.stderr().splitlines()[-5:]))
    h.check(any("Too many open files" in l and "not accepting for" in l for l in tail),
            "no back-off line in the log")

    for s in socks:
        s.close()
    started = time.monotonic()

    def delivers():
        res = h.send(relay.host, relay.port, "zimbra@example.org", ["bob@example.net"],
                     h.make_message("zimbra@example.org", "bob@example.net", "after",
                                    message_id="<after-fd-limit@example.org>"),
                     source_addr=h.ZIMBRA_IP, timeout=10)
        return res.accepted

    relay.wait_for(delivers, 30, "a session accepted after the connections were closed")
    h.log(f"a new session was accepted {time.monotonic() - started:.1f}s after the "
          f"connections closed")
    relay.wait_for(lambda: [m for m in sink.messages()
                            if m.message_id == "<after-fd-limit@example.org>"], 30,
                   "delivery after the descriptor shortage")
    relay.stop()


if __name__ == "__main__":
    h.main(test)
