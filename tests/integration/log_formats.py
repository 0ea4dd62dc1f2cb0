"""log_formats.py - the relay's log outputs, one message relayed through each.

  to: json     every line the relay writes is a JSON object (json.loads) with ts, level, stage,
               pid (the relay's) and msg; smtpd lines carry stage "smtpd" and lose the prefix.
  to: syslog   the lines reach /dev/log as syslog datagrams with facility mail and the tag
               outrelay/<stage>[pid]: the relay runs in a private mount namespace (unshare -m)
               whose /dev is a tmpfs holding null, zero, urandom, ... and our datagram socket as
               log, so nothing on the host changes. Skipped part when unshare is refused.
  to: stderr   (the default) "2026-...Z outrelay/<stage>[pid]: ..." with the timestamp; with
               JOURNAL_STREAM naming stderr, no timestamp and a "<6>" priority instead.
(Before: "2026-...Z outrelay: smtpd: ..." on stderr only; syslog with the tag "outrelay".)
"""
import datetime
import json
import os
import re
import socket
import subprocess

import harness as h

TEXT_LINE = re.compile(r"^(\S+Z )?outrelay/([a-z]+)\[(\d+)\]: (.*)$")


def relay_one(env, nsd, sink, port, name, log, extra_env=None, binary=None):
    cfg = h.standard_config(env, nsd, port, log=log)
    cfg["spool"], cfg["state"] = env.path(f"{name}-spool"), env.path(f"{name}-state")
    saved = env.bin
    if binary:
        env.bin = binary
    try:
        relay = h.Relay(env, cfg, name=name, start=False)
        if extra_env:
            os.environ.update(extra_env)
        try:
            relay.start()
        finally:
            for k in extra_env or {}:
                os.environ.pop(k, None)
    finally:
        env.bin = saved
    before = len(sink.messages())
    res = h.send(relay.host, relay.port, "a@example.org", ["u@example.net"],
                 h.make_message("a@example.org", "u@example.net", f"log {name}"))
    h.check(res.accepted, f"{name}: not accepted: {res}")
    env.wait_for(lambda: len(sink.messages()) > before, 30, f"{name}: the delivery")
    env.wait_for(lambda: relay.events("SELECT 1 FROM events WHERE event='delivered'"), 30,
                 f"{name}: the delivered row")
    pid = relay.proc.pid
    relay.stop()
    return relay, pid


def check_json(env, nsd, sink, port):
    relay, pid = relay_one(env, nsd, sink, port, "json", {"to": "json"})
    lines = [l for l in relay.stderr().splitlines() if l.strip()]
    h.check(len(lines) >= 4, f"json: only {len(lines)} lines: {lines}")
    stages = set()
    for line in lines:
        try:
            obj = json.loads(line)
        except ValueError as e:
            h.fail(f"json: a line that is not JSON ({e}): {line!r}")
        h.check(isinstance(obj, dict) and set(obj) >= {"ts", "level", "stage", "pid", "msg"},
                f"json: fields missing: {line}")
        h.check(obj["pid"] == pid, f"json: pid {obj['pid']} is not the relay's {pid}: {line}")
        h.check(obj["level"] in ("debug", "info", "warning", "error"), f"json: level: {line}")
        datetime.datetime.strptime(obj["ts"], "%Y-%m-%dT%H:%M:%S.%fZ")
        h.check(not obj["msg"].startswith(obj["stage"] + ": "),
                f"json: the stage prefix stayed in msg: {line}")
        stages.add(obj["stage"])
    h.check("smtpd" in stages, f"json: no smtpd line among stages {sorted(stages)}")
    h.log(f"json: {len(lines)} lines parse, stages {sorted(stages)}")


def check_text(env, nsd, sink, port):
    relay, pid = relay_one(env, nsd, sink, port, "text", {"level": "info"})
    lines = [l for l in relay.stderr().splitlines() if l.strip()]
    bad = [l for l in lines if not TEXT_LINE.match(l) or not TEXT_LINE.match(l).group(1)]
    h.check(not bad, f"text: lines without 'TIMESTAMP outrelay/<stage>[pid]: ': {bad[:5]}")
    pids = {TEXT_LINE.match(l).group(3) for l in lines}
    h.check(pids == {str(pid)}, f"text: pids {pids}, relay {pid}")
    h.check(any("outrelay/smtpd[" in l for l in lines), f"text: no smtpd line: {lines}")
    h.check(not any(re.search(r"\]: (smtpd|spool|records): ", l) for l in lines),
            f"text: a stage prefix stayed in the message: {lines}")
    h.log(f"text: {len(lines)} lines with the prefix, e.g. {lines[0]}")

    # stderr as the journal: JOURNAL_STREAM names the relay's stderr (dev:ino of the log file)
    open(env.path("journal.stderr"), "ab").close()
    st = os.stat(env.path("journal.stderr"))
    relay, pid = relay_one(env, nsd, sink, port, "journal", {"to": "stderr"},
                           extra_env={"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
    lines = [l for l in relay.stderr().splitlines() if l.strip()]
    bad = [l for l in lines if not re.match(r"^<[0-7]>outrelay/[a-z]+\[\d+\]: ", l)]
    h.check(not bad, f"journal stream: lines with a timestamp or without <N>: {bad[:5]}")
    h.log(f"journal stream: {len(lines)} lines, e.g. {lines[0]}")


def check_syslog(env, nsd, sink, port):
    if not subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode == 0:
        h.log("SKIP part: unshare -m refused (not root?); the syslog output is not tested")
        return
    sock_path = env.path("devlog.sock")
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(sock_path)
    rx.settimeout(0.2)
    devdir = env.mkdir("devns")
    wrapper = env.path("in_private_dev.sh")
    with open(wrapper, "w") as fh:
        fh.write(f"""#!/bin/sh
# runs "$@" with a private /dev whose log is the test's datagram socket
exec unshare -m --propagation private /bin/sh -ec '
D={devdir}
mount -t tmpfs -o mode=0755 outrelay-test-dev "$D"
for f in null zero full random urandom; do touch "$D/$f"; mount --bind "/dev/$f" "$D/$f"; done
ln -s /proc/self/fd "$D/fd"
touch "$D/log"
mount --bind {sock_path} "$D/log"
mount --rbind "$D" /dev
exec "$@"' sh {env.bin} "$@"
""")
    os.chmod(wrapper, 0o755)
    relay, pid = relay_one(env, nsd, sink, port, "syslog", {"to": "syslog"}, binary=wrapper)
    got = []
    while True:
        try:
            got.append(rx.recv(65536).decode("utf-8", "replace"))
        except socket.timeout:
            break
    rx.close()
    h.check(len(got) >= 4, f"syslog: {len(got)} datagrams reached the socket: {got}")
    tags = set()
    for d in got:
        m = re.match(r"^<(\d+)>\w{3} [ \d]\d \d\d:\d\d:\d\d (outrelay/([a-z]+))\[(\d+)\]: (.*)$",
                     d.rstrip("\n"))
        h.check(m, f"syslog: datagram not '<PRI>TIMESTAMP outrelay/<stage>[pid]: msg': {d!r}")
        pri = int(m.group(1))
        h.check(pri >> 3 == 2, f"syslog: facility {pri >> 3}, not mail (2): {d!r}")
        h.check(int(m.group(4)) == pid, f"syslog: pid {m.group(4)} is not the relay's {pid}")
        tags.add(m.group(2))
    h.check("outrelay/smtpd" in tags, f"syslog: no outrelay/smtpd tag among {sorted(tags)}")
    # nothing but sanitizer output (none expected) went to stderr
    rest = [l for l in relay.stderr().splitlines() if l.strip()]
    h.check(not rest, f"syslog: lines on stderr too: {rest[:5]}")
    h.log(f"syslog: {len(got)} datagrams, facility mail, tags {sorted(tags)}")


def test(env):
    h.need_binary(env)
    nsd = h.Nsd(env)
    port = env.free_port(h.SINK_IPS + [h.LEGACY_IP])
    sink = h.SmtpSink(env, h.MX_EXAMPLE_NET, port, "example.net")
    check_json(env, nsd, sink, port)
    check_text(env, nsd, sink, port)
    check_syslog(env, nsd, sink, port)


if __name__ == "__main__":
    h.main(test)
