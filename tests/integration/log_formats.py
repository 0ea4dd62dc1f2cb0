"""log_formats.py - the relay's log outputs, one message relayed through each.

  to: json     every line the relay writes is a JSON object (json.loads) with ts, level, stage,
               pid (the relay's) and msg; smtpd lines carry stage "smtpd" and lose the prefix;
               the configuration's warnings (hostname not fully qualified) are JSON lines too.
  to: syslog   the lines reach /dev/log as syslog datagrams with facility mail and the tag
               outrelay/<stage>[pid]: the relay runs in a private mount namespace (unshare -m)
               whose /dev is a tmpfs holding null, zero, urandom, ... and our datagram socket as
               log, so nothing on the host changes. Both skipped when unshare is refused.
  to: journald datagrams of the native protocol at /run/systemd/journal/socket (a private /run
               the same way): PRIORITY, SYSLOG_FACILITY 2, SYSLOG_IDENTIFIER outrelay/<stage>,
               SYSLOG_PID, OUTRELAY_STAGE and MESSAGE.
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


def relay_one(env, nsd, sink, port, name, log, extra_env=None, binary=None, **extra):
    cfg = h.standard_config(env, nsd, port, log=log, **extra)
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
    # a hostname that is not fully qualified: its config warning is a JSON line too
    relay, pid = relay_one(env, nsd, sink, port, "json", {"to": "json"}, hostname="relay")
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
    h.check("config" in stages, f"json: the config warning is not a JSON line: {lines[:3]}")
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


def private_ns_wrapper(env, name, mounts):
    """A script that runs the relay (same pid: exec all the way) in a private mount namespace
    where each (directory, [(file, socket)]) in mounts is a fresh tmpfs whose named files are
    our sockets; /dev keeps null, zero, full, random and urandom."""
    lines = []
    for target, files in mounts:
        d = env.mkdir(f"{name}-ns{len(lines)}")
        lines.append(f'D={d}; mount -t tmpfs -o mode=0755 outrelay-test "$D"')
        if target == "/dev":
            lines.append('for f in null zero full random urandom; do touch "$D/$f"; '
                         'mount --bind "/dev/$f" "$D/$f"; done; ln -s /proc/self/fd "$D/fd"')
        for rel, sock in files:
            lines.append(f'mkdir -p "$(dirname "$D/{rel}")"; touch "$D/{rel}"; '
                         f'mount --bind {sock} "$D/{rel}"')
        lines.append(f'mount --rbind "$D" {target}')
    path = env.path(f"{name}-wrapper.sh")
    with open(path, "w") as fh:
        fh.write("#!/bin/sh\nexec unshare -m --propagation private /bin/sh -ec '\n"
                 + "\n".join(lines) + "\nexec \"$@\"' sh " + env.bin + ' "$@"\n')
    os.chmod(path, 0o755)
    return path


def datagram_socket(path):
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(path)
    rx.settimeout(0.2)
    return rx


def drain(rx):
    got = []
    while True:
        try:
            got.append(rx.recv(65536))
        except socket.timeout:
            break
    rx.close()
    return got


def check_syslog(env, nsd, sink, port):
    sock_path = env.path("devlog.sock")
    rx = datagram_socket(sock_path)
    wrapper = private_ns_wrapper(env, "syslog", [("/dev", [("log", sock_path)])])
    relay, pid = relay_one(env, nsd, sink, port, "syslog", {"to": "syslog"}, binary=wrapper)
    got = [d.decode("utf-8", "replace") for d in drain(rx)]
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


def journal_fields(datagram):
    """The fields of one native-protocol datagram: KEY=value lines, or KEY, newline, 64-bit
    little-endian length, value, newline."""
    out, i = {}, 0
    while i < len(datagram):
        nl = datagram.index(b"\n", i)
        line = datagram[i:nl]
        if b"=" in line:
            k, _, v = line.partition(b"=")
            out[k.decode()] = v.decode("utf-8", "replace")
            i = nl + 1
        else:
            size = int.from_bytes(datagram[nl + 1:nl + 9], "little")
            out[line.decode()] = datagram[nl + 9:nl + 9 + size].decode("utf-8", "replace")
            h.check(datagram[nl + 9 + size:nl + 10 + size] == b"\n",
                    f"journald: binary field {line!r} not closed by a newline: {datagram!r}")
            i = nl + 10 + size
    return out


def check_journald(env, nsd, sink, port):
    sock_path = env.path("journal.sock")
    rx = datagram_socket(sock_path)
    wrapper = private_ns_wrapper(env, "journald",
                                 [("/run", [("systemd/journal/socket", sock_path)])])
    relay, pid = relay_one(env, nsd, sink, port, "journald", {"to": "journald"}, binary=wrapper)
    got = [journal_fields(d) for d in drain(rx)]
    h.check(len(got) >= 4, f"journald: {len(got)} datagrams reached the socket: {got}")
    stages = set()
    for f in got:
        h.check(set(f) >= {"MESSAGE", "PRIORITY", "SYSLOG_IDENTIFIER", "SYSLOG_PID",
                           "SYSLOG_FACILITY", "OUTRELAY_STAGE"}, f"journald: fields missing: {f}")
        h.check(f["SYSLOG_FACILITY"] == "2", f"journald: facility not mail: {f}")
        h.check(f["SYSLOG_PID"] == str(pid), f"journald: pid not the relay's {pid}: {f}")
        h.check(f["SYSLOG_IDENTIFIER"] == "outrelay/" + f["OUTRELAY_STAGE"], f"journald: {f}")
        stages.add(f["OUTRELAY_STAGE"])
    h.check("smtpd" in stages, f"journald: no smtpd stage among {sorted(stages)}")
    rest = [l for l in relay.stderr().splitlines() if l.strip()]
    h.check(not rest, f"journald: lines on stderr too: {rest[:5]}")
    h.log(f"journald: {len(got)} datagrams, stages {sorted(stages)}, e.g. {got[0]}")


def test(env):
    h.need_binary(env)
    nsd = h.Nsd(env)
    port = env.free_port(h.SINK_IPS + [h.LEGACY_IP])
    sink = h.SmtpSink(env, h.MX_EXAMPLE_NET, port, "example.net")
    check_json(env, nsd, sink, port)
    check_text(env, nsd, sink, port)
    if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        h.log("SKIP part: unshare -m refused (not root?); syslog and journald are not tested")
        return
    check_syslog(env, nsd, sink, port)
    check_journald(env, nsd, sink, port)


if __name__ == "__main__":
    h.main(test)
