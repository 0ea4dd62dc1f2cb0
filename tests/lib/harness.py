"""harness.py - the loopback "internet" every outrelay integration test runs in.

Owns: a per-test temp directory, free ports, and every process a test starts (NSD, smtp-sink,
the aiosmtpd sink, the relay), each stopped by its PID when the test ends, passes or fails.
Never touches anything outside 127.0.0.0/8 and ::1, and never kills a process it did not start.

Typical test:

    import harness as h

    def test(env):
        nsd = h.Nsd(env)                                 # default zones, see default_zones()
        port = env.free_port(h.SINK_IPS)
        sink = h.SmtpSink(env, "127.0.0.30", port, "example.net")
        relay = h.Relay(env, h.standard_config(env, nsd, port))
        r = h.send("127.0.0.1", relay.port, "a@example.org", ["b@example.net"],
                   h.make_message("a@example.org", "b@example.net", "hi"))
        h.check(r.accepted, f"relay refused the message: {r}")
        env.wait_for(lambda: sink.messages(), 30, "delivery to example.net")

    if __name__ == "__main__":
        h.main(test)

API (details in each docstring):
  main(test)                      run test(env) with cleanup, diagnostics and exit status
  fail(msg) / check(cond, msg)    TestFailure with an operator-readable message
  Env                             .path() .mkdir(world=) .free_port(ips, udp=) .wait_for()
  Nsd(env, zones=None)            NSD as nobody; .server "127.0.0.1:PORT", .query(), .status()
  default_zones() zone_text() zone_with_mx()   the test DNS; NXDOMAIN_DOMAIN
  make_ca_and_cert(dir, names, ips) -> {ca, cert, key};  client_tls_context(ca)
  SmtpSink(env, ip, port, name, extra_args)    Postfix smtp-sink; .messages() -> [SinkMessage]
  PySink(env, ip, port, name, tls=, script=)   aiosmtpd sink (py_sink.py); .messages() .replies()
  standard_config(env, nsd, mx_port, ...) -> dict;  to_yaml(dict)
  Relay(env, cfg)                 .stop() .kill9() .start() .restart() .queue() .events()
                                  .history(rcpt) .wait_for() .stderr()
  send(...) -> SendResult         one smtplib transaction, every reply recorded
  Client(host, port, source_addr) persistent sessions for load; .transaction()
  RawClient(host, port)           byte-exact client (smuggling, pipelining)
  smtp_source(...), swaks(...)    the Postfix load generator / swaks, as subprocesses
  make_message(), message_ids(), ip_of(), run_threads(), sanitizer_summary()

h.main() runs the test inside an Env, turns a TestFailure or any exception into exit status 1 with
a clear message, prints the relay's stderr tail and the sinks' logs on failure, and removes the
temp directory on success (set OUTRELAY_KEEP=1 to keep it). Environment: OUTRELAY_BIN (the binary),
OUTRELAY_SRC (repo root).
"""
import atexit
import base64
import email
import email.policy
import email.utils
import json
import os
import random
import re
import shutil
import signal
import smtplib
import socket
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid

LIB_DIR = os.path.dirname(os.path.abspath(__file__))
PYTHON = "/usr/bin/python3"
SMTP_SINK = "/usr/sbin/smtp-sink"
SMTP_SOURCE = "/usr/sbin/smtp-source"

# Addresses of the test world (all routed to lo by Linux).
RELAY_IP = "127.0.0.1"        # the relay listens here; the NSD too
LEGACY_IP = "127.0.0.2"       # legacy egress source address
CLOUD_IP = "127.0.0.3"        # cloud egress source address
ZIMBRA_IP = "127.0.0.11"      # platform client addresses
CLOUD_CLIENT_IP = "127.0.0.12"
STRANGER_IP = "127.0.0.99"    # inside no origin network
MX_EXAMPLE_ORG = "127.0.0.20"  # senders' domain MX: DSNs arrive here
MX_EXAMPLE_NET = "127.0.0.30"
MX_EXAMPLE_COM = "127.0.0.31"
MX_TLS_TEST = "127.0.0.40"
NOMX_TEST_A = "127.0.0.41"    # nomx.test has no MX: implicit MX to its A record
# Names outside the served zones get REFUSED from an authoritative-only NSD (a resolver error, not
# "no such domain"); a missing name inside a served zone is a real NXDOMAIN with the aa flag.
NXDOMAIN_DOMAIN = "no-such-domain.example.com"
SINK_IPS = [MX_EXAMPLE_ORG, MX_EXAMPLE_NET, MX_EXAMPLE_COM, MX_TLS_TEST, NOMX_TEST_A]

SANITIZER_PATTERNS = ("AddressSanitizer", "LeakSanitizer", "runtime error:",
                      "UndefinedBehaviorSanitizer")


class TestFailure(AssertionError):
    """A test's expectation did not hold. The message is what the operator reads."""


def fail(msg):
    raise TestFailure(msg)


def check(cond, msg):
    """Fails the test with msg (a string or a callable giving one) unless cond is true."""
    if not cond:
        fail(msg() if callable(msg) else msg)


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def tail(path, lines=60):
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as e:
        return f"(cannot read {path}: {e})"
    text = data.decode("utf-8", "replace").splitlines()
    return "\n".join(text[-lines:])


def set_test_clock(path, t):
    """Writes unix time t to the clock file relays read through OUTRELAY_TEST_CLOCK (they add
    the real time elapsed since the write; see outrelay/common/clock.h), atomically."""
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(f"{int(t)}\n")
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# Ports and sockets


def _listening_sockets():
    """Set of (ip, port) in LISTEN state from /proc/net/tcp{,6} ("0.0.0.0"/"::" for wildcards)."""
    found = set()
    for name, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        try:
            with open(name) as fh:
                next(fh)
                for line in fh:
                    parts = line.split()
                    if parts[3] != "0A":
                        continue
                    hexip, hexport = parts[1].split(":")
                    port = int(hexport, 16)
                    raw = bytes.fromhex(hexip)
                    if v6:
                        # /proc prints four host-order 32-bit words
                        raw = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
                        ip = socket.inet_ntop(socket.AF_INET6, raw)
                        if ip.startswith("::ffff:"):
                            ip = ip[7:]
                    else:
                        ip = socket.inet_ntop(socket.AF_INET, raw[::-1])
                    found.add((ip, port))
        except FileNotFoundError:
            pass
    return found


def is_listening(ip, port):
    """True when something listens on ip:port (or on the wildcard address of that family).
    Reads /proc instead of connecting, so it never creates a session on the server."""
    socks = _listening_sockets()
    wild = "::" if ":" in ip else "0.0.0.0"
    return (ip, port) in socks or (wild, port) in socks or ("::", port) in socks


def port_is_free(ip, port, udp=False):
    fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
    kinds = [socket.SOCK_STREAM] + ([socket.SOCK_DGRAM] if udp else [])
    for kind in kinds:
        s = socket.socket(fam, kind)
        try:
            s.bind((ip, port))
        except OSError:
            return False
        finally:
            s.close()
    return not is_listening(ip, port)


# ---------------------------------------------------------------------------------------------
# Processes


class Proc:
    """One started process, stopped by PID. stop_signal is what asks it to exit nicely."""

    def __init__(self, env, name, argv, log_path, stop_signal=signal.SIGTERM, cwd=None,
                 extra_env=None, watch=False):
        self.env = env
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log_path = log_path
        self.stop_signal = stop_signal
        self.watch = watch   # env.wait_for fails fast when a watched process dies
        penv = dict(os.environ)
        penv.update(extra_env or {})
        self.logfh = open(log_path, "ab")
        self.log_offset = self.logfh.tell()
        log(f"start {name}: {' '.join(self.argv)}")
        self.popen = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=self.logfh,
                                      stderr=subprocess.STDOUT, cwd=cwd, env=penv,
                                      start_new_session=True)
        self.pid = self.popen.pid
        env._register(self)

    def alive(self):
        return self.popen.poll() is None

    def returncode(self):
        return self.popen.poll()

    def signal(self, sig):
        if self.alive():
            os.kill(self.pid, sig)

    def stop(self, timeout=30):
        """Asks the process to exit (stop_signal), waits, then SIGKILLs its process group
        (its own PID, as it was started in a new session). Returns the exit status."""
        if self.alive():
            try:
                os.kill(self.pid, self.stop_signal)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                log(f"{self.name} (pid {self.pid}) did not exit in {timeout}s: SIGKILL")
                self.kill9()
        self._reap_group()
        if not self.logfh.closed:
            self.logfh.close()
        return self.popen.returncode

    def kill9(self):
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.popen.wait(30)
        self._reap_group()

    def _reap_group(self):
        # Children (NSD's server processes) share the process group whose id is our PID.
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def output(self, since_start=False):
        try:
            with open(self.log_path, "rb") as fh:
                if since_start:
                    fh.seek(self.log_offset)
                return fh.read().decode("utf-8", "replace")
        except OSError:
            return ""


class Env:
    """A test's world: temp directory, ports, processes, cleanup and failure diagnostics.

    env.path("x") is a path inside the temp dir; env.mkdir("x", world=True) makes a directory that
    nobody-run daemons (NSD, smtp-sink) can write. free_port(ips) returns a port free on every IP
    given. Every Proc registers itself and is stopped (reverse order) by env.cleanup(), which runs
    from main()'s finally, from atexit and on SIGTERM/SIGINT/SIGHUP."""

    def __init__(self, name):
        self.name = name
        self.dir = tempfile.mkdtemp(prefix=f"outrelay-it-{name}-")
        os.chmod(self.dir, 0o755)
        self.procs = []
        self.diagnostics = []   # callables returning (title, text) to print on failure
        self.used_ports = set()
        self.failed = False
        self._cleaned = False
        self.bin = os.environ.get("OUTRELAY_BIN", "")
        self.tools = os.environ.get("OUTRELAY_TOOLS", os.path.join(os.path.dirname(self.bin), "tools"))
        self.src = os.environ.get("OUTRELAY_SRC",
                                  os.path.dirname(os.path.dirname(LIB_DIR)))
        atexit.register(self.cleanup)
        log(f"test dir {self.dir}")

    def path(self, *parts):
        return os.path.join(self.dir, *parts)

    def mkdir(self, name, world=False):
        p = self.path(name)
        os.makedirs(p, exist_ok=True)
        os.chmod(p, 0o1777 if world else 0o755)
        return p

    def free_port(self, ips=(RELAY_IP,), udp=False):
        """A TCP (and UDP if asked) port free on every address in ips, never handed out before
        in this test. Random in 20000-59999 so parallel tests rarely race for the same one."""
        ips = list(ips)
        for _ in range(500):
            port = random.randint(20000, 59999)
            if port in self.used_ports:
                continue
            if all(port_is_free(ip, port, udp) for ip in ips):
                self.used_ports.add(port)
                return port
        fail(f"no free port on {ips} after 500 tries")

    def _register(self, proc):
        self.procs.append(proc)

    def add_diagnostic(self, fn):
        self.diagnostics.append(fn)

    def wait_for(self, predicate, timeout, what, interval=0.2):
        """Polls predicate() until it returns something truthy (returned) or timeout seconds pass
        (TestFailure naming `what`, a string or a callable evaluated then). Fails at once when a
        watched process (the relay) died."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            for p in self.procs:
                if p.watch and not p.alive() and not getattr(p, "expected_exit", False):
                    summary = sanitizer_summary(p.output(since_start=True), context=0)
                    fail(f"{p.name} (pid {p.pid}) exited with status {p.returncode()} while "
                         f"waiting for {what}" + (": " + " | ".join(summary) if summary else ""))
            if time.monotonic() >= deadline:
                fail(f"timed out after {timeout}s waiting for {what() if callable(what) else what}")
            time.sleep(interval)

    def print_diagnostics(self):
        print("=" * 30 + f" diagnostics ({self.dir}) " + "=" * 30, flush=True)
        for fn in self.diagnostics:
            try:
                title, text = fn()
            except Exception as e:  # diagnostics must never hide the failure
                title, text = "diagnostic error", repr(e)
            print(f"----- {title} -----\n{text}", flush=True)

    def cleanup(self):
        if self._cleaned:
            return
        self._cleaned = True
        for p in reversed(self.procs):
            try:
                p.stop(timeout=15)
            except Exception as e:
                print(f"cleanup: stopping {p.name} pid {p.pid}: {e}", flush=True)
        if self.failed or os.environ.get("OUTRELAY_KEEP"):
            print(f"kept test directory {self.dir}", flush=True)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


def _on_signal(signum, frame):
    raise SystemExit(128 + signum)


def main(test, name=None):
    """Runs test(env) and exits: 0 on success, 1 on failure with the reason and diagnostics."""
    name = name or os.path.splitext(os.path.basename(sys.argv[0]))[0]
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    env = Env(name)
    status = 0
    started = time.monotonic()
    try:
        test(env)
        log(f"PASS {name} ({time.monotonic() - started:.1f}s)")
    except TestFailure as e:
        env.failed = True
        status = 1
        print(f"\nFAIL {name}: {e}", flush=True)
    except SystemExit as e:  # from _on_signal
        env.failed = True
        status = 1
        print(f"\nFAIL {name}: interrupted (exit status {e.code}, signal "
              f"{(e.code or 128) - 128})", flush=True)
    except BaseException as e:
        env.failed = True
        status = 1
        print(f"\nFAIL {name}: unexpected {type(e).__name__}: {e}", flush=True)
        traceback.print_exc()
    finally:
        if env.failed:
            for p in env.procs:
                if p.watch and not p.alive() and not getattr(p, "expected_exit", False):
                    print(f"NOTE: {p.name} (pid {p.pid}) died during the test with status "
                          f"{p.returncode()}", flush=True)
                    for line in sanitizer_summary(p.output(since_start=True)):
                        print(f"      {line}", flush=True)
            env.print_diagnostics()
        try:
            env.cleanup()
        except TestFailure as e:  # e.g. the relay exited badly on the final stop
            print(f"\nFAIL {name} during cleanup: {e}", flush=True)
            status = 1
    sys.exit(status)


def sanitizer_summary(text, context=12):
    """The first sanitizer report in text: its ERROR/runtime-error line, the stack frames that
    follow (up to `context` lines) and every SUMMARY line. [] when there is none."""
    lines = text.splitlines()
    out = []
    for i, line in enumerate(lines):
        if "ERROR: AddressSanitizer" in line or "ERROR: LeakSanitizer" in line \
                or "runtime error:" in line:
            out = lines[i:i + context]
            break
    out += [l for l in lines if l.startswith("SUMMARY:") and l not in out]
    return out


def need_binary(env):
    check(env.bin and os.access(env.bin, os.X_OK),
          f"OUTRELAY_BIN is not an executable file: {env.bin!r} (build the outrelay target)")


# ---------------------------------------------------------------------------------------------
# DNS: NSD


def zone_text(origin, body):
    """A zone file for `origin` with SOA/NS boilerplate and `body` (records relative to it)."""
    return (f"$ORIGIN {origin}.\n$TTL 300\n"
            f"@ IN SOA ns1.{origin}. hostmaster.{origin}. ( 1 3600 600 86400 300 )\n"
            f"@ IN NS ns1\nns1 IN A 127.0.0.1\n" + body)


def zone_with_mx(origin, mx_ip):
    """A zone whose apex MX is mx.<origin> at mx_ip (for tests that need their own domains)."""
    return zone_text(origin, f"@ IN MX 10 mx\nmx IN A {mx_ip}\n")


def default_zones():
    """The test zones: {zone name: zone text}. example.org is the senders' domain (MX
    127.0.0.20, where DSNs arrive); example.net / example.com / tls.test have MXs at 127.0.0.30 /
    .31 / .40; nomx.test has only an A record (implicit MX 127.0.0.41); outrelay.test names the
    relay and its egress addresses. SPF (both egress IPs) and DMARC (p=none) TXT records are
    placeholders for later issues. Use NXDOMAIN_DOMAIN for a domain that does not exist."""
    zone = zone_text
    spf = f'"v=spf1 ip4:{LEGACY_IP} ip4:{CLOUD_IP} -all"'
    dmarc = '"v=DMARC1; p=none; rua=mailto:dmarc@example.org"'
    return {
        "example.org": zone("example.org", (
            f"@ IN MX 10 mx\nmx IN A {MX_EXAMPLE_ORG}\n"
            f"@ IN TXT {spf}\n_dmarc IN TXT {dmarc}\n")),
        "example.net": zone("example.net", (
            f"@ IN MX 10 mx\nmx IN A {MX_EXAMPLE_NET}\n"
            f"@ IN TXT {spf}\n_dmarc IN TXT {dmarc}\n")),
        "example.com": zone("example.com", (
            f"@ IN MX 10 mx\nmx IN A {MX_EXAMPLE_COM}\n"
            f"@ IN TXT {spf}\n_dmarc IN TXT {dmarc}\n")),
        "tls.test": zone("tls.test", f"@ IN MX 10 mx\nmx IN A {MX_TLS_TEST}\n"),
        "nomx.test": zone("nomx.test", f"@ IN A {NOMX_TEST_A}\n"),
        "outrelay.test": zone("outrelay.test", (
            f"relay IN A {RELAY_IP}\nlegacy IN A {LEGACY_IP}\ncloud IN A {CLOUD_IP}\n")),
    }


class Nsd:
    """NSD authoritative server for `zones` ({name: text}, default_zones() when None), started as
    nobody on ip:port (UDP and TCP). .port, .query(name, type) -> list of dig +short lines."""

    def __init__(self, env, zones=None, ip=RELAY_IP, port=None):
        self.env = env
        self.ip = ip
        self.port = port or env.free_port([ip], udp=True)
        self.zones = default_zones() if zones is None else zones
        self.dir = env.mkdir("nsd", world=True)
        conf = [
            "server:",
            f"    ip-address: {ip}",
            f"    port: {self.port}",
            "    do-ip6: no",
            '    username: ""',
            '    chroot: ""',
            f'    zonesdir: "{self.dir}"',
            '    database: ""',
            f'    zonelistfile: "{self.dir}/zone.list"',
            f'    xfrdfile: "{self.dir}/xfrd.state"',
            f'    xfrdir: "{self.dir}"',
            f'    pidfile: "{self.dir}/nsd.pid"',
            f'    logfile: "{self.dir}/nsd.log"',
            "    server-count: 1",
            "    verbosity: 1",
            "remote-control:",
            "    control-enable: no",
        ]
        for name, text in self.zones.items():
            zpath = os.path.join(self.dir, f"{name}.zone")
            with open(zpath, "w") as fh:
                fh.write(text)
            os.chmod(zpath, 0o644)
            conf += ["zone:", f'    name: "{name}"', f'    zonefile: "{name}.zone"']
            r = subprocess.run(["nsd-checkzone", name, zpath], capture_output=True, text=True)
            check(r.returncode == 0, f"nsd-checkzone {name} failed: {r.stdout}{r.stderr}")
        self.conf = os.path.join(self.dir, "nsd.conf")
        with open(self.conf, "w") as fh:
            fh.write("\n".join(conf) + "\n")
        os.chmod(self.conf, 0o644)
        r = subprocess.run(["nsd-checkconf", self.conf], capture_output=True, text=True)
        check(r.returncode == 0, f"nsd-checkconf failed: {r.stdout}{r.stderr}")
        argv = ["nsd", "-d", "-c", self.conf]
        if os.geteuid() == 0:
            argv = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"] + argv
        self.proc = Proc(env, "nsd", argv, os.path.join(self.dir, "nsd.stdout"))
        env.add_diagnostic(lambda: ("nsd log", tail(os.path.join(self.dir, "nsd.log"), 20)
                                    + "\n" + tail(self.proc.log_path, 20)))
        first = next(iter(self.zones), None)
        if first:
            env.wait_for(lambda: self._alive_or_fail() and self.query(first, "SOA"), 15,
                         f"NSD to answer on {ip}:{self.port}")
        log(f"nsd answering on {ip}:{self.port} (pid {self.proc.pid})")

    def _alive_or_fail(self):
        check(self.proc.alive(), lambda: f"nsd exited: {self.proc.output()}"
              f"{tail(os.path.join(self.dir, 'nsd.log'))}")
        return True

    @property
    def server(self):
        """The address as dns.servers wants it: "127.0.0.1:PORT"."""
        return f"{self.ip}:{self.port}"

    def query(self, name, rtype="A", tcp=False):
        argv = ["dig", f"@{self.ip}", "-p", str(self.port), name, rtype, "+short",
                "+time=1", "+tries=1"] + (["+tcp"] if tcp else [])
        r = subprocess.run(argv, capture_output=True, text=True)
        if r.returncode != 0:
            return []
        return [line for line in r.stdout.splitlines() if line and not line.startswith(";")]

    def status(self, name, rtype="A"):
        """The response code (NOERROR, NXDOMAIN, ...) for name/rtype."""
        r = subprocess.run(["dig", f"@{self.ip}", "-p", str(self.port), name, rtype,
                            "+time=1", "+tries=1"], capture_output=True, text=True)
        m = re.search(r"status: (\w+)", r.stdout)
        return m.group(1) if m else None

    def stop(self):
        pidfile = os.path.join(self.dir, "nsd.pid")
        try:
            with open(pidfile) as fh:
                pid = int(fh.read().strip())
            if pid != self.proc.pid:
                log(f"nsd pidfile says {pid}, started {self.proc.pid}; stopping the one started")
        except (OSError, ValueError):
            pass
        return self.proc.stop()


class Redis:
    """redis-server on ip:port (a free port unless given), without persistence (--save '',
    --appendonly no), stopped by PID. password: requirepass. tls: a dict from make_ca_and_cert;
    then the port speaks TLS only (client certificates not required). .address is what
    cluster.redis wants; .cli(*args) runs redis-cli against it and returns its stdout lines;
    .stop() and .start() again keep the port (the data is gone: nothing is saved)."""

    def __init__(self, env, ip=RELAY_IP, port=None, password=None, tls=None, name="redis"):
        self.env = env
        self.ip = ip
        self.port = port or env.free_port([ip])
        self.password = password
        self.tls = tls
        self.name = name
        self.dir = env.mkdir(name)
        self.proc = None
        self.start()

    @property
    def address(self):
        return f"{self.ip}:{self.port}"

    def start(self, timeout=15):
        argv = ["redis-server", "--bind", self.ip, "--save", "", "--appendonly", "no",
                "--dir", self.dir, "--daemonize", "no", "--protected-mode", "no",
                "--logfile", ""]
        if self.tls:
            argv += ["--port", "0", "--tls-port", str(self.port),
                     "--tls-cert-file", self.tls["cert"], "--tls-key-file", self.tls["key"],
                     "--tls-ca-cert-file", self.tls["ca"], "--tls-auth-clients", "no"]
        else:
            argv += ["--port", str(self.port)]
        if self.password:
            argv += ["--requirepass", self.password]
        self.proc = Proc(self.env, self.name, argv, os.path.join(self.dir, "redis.log"))
        self.env.add_diagnostic(lambda: (f"{self.name} log", tail(self.proc.log_path, 20)))
        self.env.wait_for(lambda: self._alive_or_fail() and is_listening(self.ip, self.port),
                          timeout, f"{self.name} to listen on {self.address}")
        log(f"{self.name} listening on {self.address} (pid {self.proc.pid})")
        return self

    def _alive_or_fail(self):
        check(self.proc.alive(), lambda: f"{self.name} exited: {tail(self.proc.log_path)}")
        return True

    def cli(self, *args):
        argv = ["redis-cli", "-h", self.ip, "-p", str(self.port), "--no-auth-warning"]
        if self.password:
            argv += ["-a", self.password]
        if self.tls:
            argv += ["--tls", "--cacert", self.tls["ca"]]
        r = subprocess.run(argv + [str(a) for a in args], capture_output=True, text=True,
                           timeout=30)
        check(r.returncode == 0, f"redis-cli {' '.join(map(str, args))}: {r.stderr}")
        return r.stdout.splitlines()

    def stop(self):
        if self.proc:
            self.proc.expected_exit = True
            self.proc.stop()
            log(f"{self.name} stopped (pid {self.proc.pid})")


class SignedZone:
    """A zone signed by dnssec_sign(): .text (the signed zone file, to serve with Nsd and to
    edit for a tampered record), .ds (the DS record of its key, one line) and
    .write_anchor(path), the trust anchor file for dns.trust_anchor."""

    def __init__(self, text, ds):
        self.text = text
        self.ds = ds

    def write_anchor(self, path):
        with open(path, "w") as fh:
            fh.write(self.ds + "\n")
        os.chmod(path, 0o644)
        return path


def dnssec_sign(env, origin, text, valid_days=30):
    """Signs the zone `text` of `origin` (RFC 4033-4035) with a fresh ECDSA P-256 key made by
    ldns-keygen (one key, KSK flag, signing the whole zone) and ldns-signzone (NSEC). The
    signatures are valid from a day before now to valid_days after, now being this machine's
    clock, which the resolver under test reads too. Returns a SignedZone."""
    for tool in ("ldns-keygen", "ldns-signzone"):
        check(shutil.which(tool), f"{tool} is missing (Debian package ldnsutils)")
    d = env.mkdir(f"dnssec-{origin}")
    with open(os.path.join(d, "zone"), "w") as fh:
        fh.write(text)
    r = subprocess.run(["ldns-keygen", "-a", "ECDSAP256SHA256", "-k", origin], cwd=d,
                       capture_output=True, text=True)
    check(r.returncode == 0 and r.stdout.strip(), f"ldns-keygen {origin}: {r.stderr}")
    key = r.stdout.strip()
    stamp = "%Y%m%d%H%M%S"
    now = time.time()
    r = subprocess.run(["ldns-signzone", "-f", "signed",
                        "-i", time.strftime(stamp, time.gmtime(now - 86400)),
                        "-e", time.strftime(stamp, time.gmtime(now + valid_days * 86400)),
                        "zone", key], cwd=d, capture_output=True, text=True)
    check(r.returncode == 0, f"ldns-signzone {origin}: {r.stdout}{r.stderr}")
    with open(os.path.join(d, "signed")) as fh:
        signed = fh.read()
    with open(os.path.join(d, key + ".ds")) as fh:
        ds = fh.read().strip()
    return SignedZone(signed, ds)


# ---------------------------------------------------------------------------------------------
# Certificates


def make_ca_and_cert(directory, names, ips=(), prefix="server", usage="serverAuth"):
    """Creates (once per directory) a test CA and a server certificate for DNS `names` and IP
    addresses `ips` with the openssl CLI. Returns {"ca": path, "cert": path, "key": path}.
    EC P-256 keys: fast to make, accepted by OpenSSL 3 and Python's ssl."""
    os.makedirs(directory, exist_ok=True)
    ca_key = os.path.join(directory, "ca.key")
    ca = os.path.join(directory, "ca.pem")

    def run(argv):
        r = subprocess.run(argv, capture_output=True, text=True)
        check(r.returncode == 0, f"{' '.join(argv)} failed: {r.stderr}")

    if not os.path.exists(ca):
        run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-keyout", ca_key, "-out", ca, "-days", "30", "-subj",
             "/CN=outrelay test CA", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
    key = os.path.join(directory, f"{prefix}.key")
    csr = os.path.join(directory, f"{prefix}.csr")
    cert = os.path.join(directory, f"{prefix}.pem")
    ext = os.path.join(directory, f"{prefix}.ext")
    sans = [f"DNS:{n}" for n in names] + [f"IP:{i}" for i in ips]
    with open(ext, "w") as fh:
        fh.write(f"subjectAltName={','.join(sans)}\nbasicConstraints=CA:FALSE\n"
                 f"keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage={usage}\n")
    run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", key, "-out", csr, "-subj", f"/CN={names[0] if names else ips[0]}"])
    run(["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
         "-days", "30", "-out", cert, "-extfile", ext])
    for p in (ca, cert, key):
        os.chmod(p, 0o644)   # test material: readable by daemons running as nobody
    return {"ca": ca, "cert": cert, "key": key}


def client_tls_context(ca=None):
    """A client SSLContext: verifying against `ca` when given, else not verifying at all."""
    if ca:
        ctx = ssl.create_default_context(cafile=ca)
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


# ---------------------------------------------------------------------------------------------
# Receiving MXs


class SinkMessage:
    """One received transaction. Fields: client_addr, helo, mail_from, rcpts (addresses without
    <>), tls_version, tls_cipher, raw (bytes of header+body), msg (email.message.Message),
    message_id (header value, with <>), file (where it came from)."""

    def __init__(self, **kw):
        self.client_addr = None
        self.helo = None
        self.mail_from = None
        self.mail_args = ""
        self.rcpts = []
        self.tls_version = None
        self.tls_cipher = None
        self.raw = b""
        self.file = None
        self.__dict__.update(kw)
        self.msg = email.message_from_bytes(self.raw, policy=email.policy.compat32)
        mid = self.msg.get("Message-ID")
        self.message_id = mid.strip() if mid else None

    def header(self, name):
        v = self.msg.get(name)
        return v.strip() if v is not None else None

    def __repr__(self):
        return (f"<SinkMessage from={self.client_addr} helo={self.helo} "
                f"mail_from=<{self.mail_from}> rcpts={self.rcpts} id={self.message_id} "
                f"tls={self.tls_version}>")


def _addr_arg(args):
    """'<a@b> SIZE=1' -> 'a@b'."""
    first = (args or "").strip().split(" ", 1)[0]
    if first.upper().startswith(("FROM:", "TO:")):
        first = first.split(":", 1)[1]
    return first.strip("<>")


class SmtpSink:
    """Postfix smtp-sink on ip:port, dumping every transaction to its own file.

    extra_args go to smtp-sink verbatim, e.g. ["-r", "RCPT"] (4xx on RCPT), ["-f", "RCPT"]
    (5xx), ["-q", "DATA"] (disconnect), ["-Q", "MAIL"] (421); see man smtp-sink.
    .messages() -> [SinkMessage] for complete transactions."""

    def __init__(self, env, ip, port, name, extra_args=(), hostname=None):
        self.env = env
        self.ip = ip
        self.port = port
        self.name = name
        self.dump_dir = env.mkdir(f"sink-{name}", world=True)
        self._cache = {}
        argv = [SMTP_SINK, "-c", "-h", hostname or f"sink.{name}",
                "-d", os.path.join(self.dump_dir, "%Y%m%d%H%M%S.")]
        if os.geteuid() == 0:
            argv += ["-u", "nobody"]
        argv += list(extra_args) + [f"{ip}:{port}", "256"]
        self.proc = Proc(env, f"smtp-sink[{name}]", argv, env.path(f"sink-{name}.log"),
                         extra_env={"MAIL_CONFIG": "/nonexistent"})
        env.add_diagnostic(self._diag)
        env.wait_for(lambda: self._up(), 10, f"smtp-sink {name} on {ip}:{port}")

    def _up(self):
        check(self.proc.alive(), lambda: f"smtp-sink {self.name} exited: {self.proc.output()}")
        return is_listening(self.ip, self.port)

    def _diag(self):
        msgs = self.messages(settle=0)
        lines = [repr(m) for m in msgs[-15:]]
        return (f"smtp-sink {self.name} {self.ip}:{self.port}: {len(msgs)} message(s)",
                "\n".join(lines) + "\n" + tail(self.proc.log_path, 5).replace("\r", "\n")[-600:])

    @staticmethod
    def _complete(data, age, settle):
        # smtp-sink writes buffered and ends each dump with an empty line at "." before closing;
        # a transaction still in progress has no data or a 4 KiB-multiple partial buffer.
        if not data.endswith(b"\n\n"):
            return False
        if len(data) % 4096 == 0:
            return age > max(settle, 2.0)
        return age >= settle

    @staticmethod
    def parse(data, path=None):
        lines = data.split(b"\n")
        fields = {"rcpts": [], "file": path}
        i = 0
        while i < len(lines):
            line = lines[i]
            text = line.decode("utf-8", "replace")
            if text.startswith("X-Client-Addr:"):
                fields["client_addr"] = text.split(":", 1)[1].strip()
            elif text.startswith("X-Helo-Args:"):
                fields["helo"] = text.split(":", 1)[1].strip()
            elif text.startswith("X-Mail-Args:"):
                fields["mail_args"] = text.split(":", 1)[1].strip()
                fields["mail_from"] = _addr_arg(fields["mail_args"])
            elif text.startswith("X-Rcpt-Args:"):
                fields["rcpts"].append(_addr_arg(text.split(":", 1)[1]))
            elif text.startswith("X-Client-Proto:"):
                pass
            elif text.startswith("Received:"):
                # smtp-sink's own three-line Received: ends its headers
                i += 1
                while i < len(lines) and lines[i][:1] in (b" ", b"\t"):
                    i += 1
                break
            else:
                break
            i += 1
        body = lines[i:]
        if body and body[-1] == b"":
            body = body[:-1]
        if body and body[-1] == b"":
            body = body[:-1]   # the empty line smtp-sink appends
        fields["raw"] = b"\n".join(body) + b"\n"
        return SinkMessage(**fields)

    def messages(self, settle=0.3):
        """Complete transactions, oldest first (by file name). settle: how long a file must be
        unmodified before it counts (guards against reading a dump still being written)."""
        now = time.time()
        out = []
        try:
            names = sorted(os.listdir(self.dump_dir))
        except FileNotFoundError:
            return []
        for n in names:
            if n in self._cache:
                out.append(self._cache[n])
                continue
            p = os.path.join(self.dump_dir, n)
            try:
                st = os.stat(p)
                with open(p, "rb") as fh:
                    data = fh.read()
            except OSError:
                continue
            if not self._complete(data, now - st.st_mtime, settle):
                continue
            m = self.parse(data, p)
            self._cache[n] = m
            out.append(m)
        return out

    def stop(self):
        return self.proc.stop()


class PySink:
    """The aiosmtpd sink (tests/lib/py_sink.py) on ip:port: optional STARTTLS (tls = dict from
    make_ca_and_cert), optional reply script (see py_sink.py), optional max_line_length (octets;
    998 = a receiver that enforces RFC 5321's limit), optional requiretls (offered after
    STARTTLS, the MAIL parameter recorded in mail_args). .messages() -> [SinkMessage] with
    tls_version/tls_cipher set; .replies() -> the scripted replies it gave."""

    def __init__(self, env, ip, port, name, tls=None, script=None, hostname=None, auth=None,
                 client_ca=None, max_line_length=None, requiretls=False):
        self.env = env
        self.ip = ip
        self.port = port
        self.name = name
        self.record = env.path(f"pysink-{name}.jsonl")
        open(self.record, "a").close()
        argv = [PYTHON, os.path.join(LIB_DIR, "py_sink.py"), "--listen", f"{ip}:{port}",
                "--record", self.record, "--hostname", hostname or f"pysink.{name}",
                "--script", json.dumps(script or [])]
        if tls:
            argv += ["--tls-cert", tls["cert"], "--tls-key", tls["key"]]
        if client_ca:  # require a client certificate issued by this CA
            argv += ["--tls-client-ca", client_ca]
        if auth:
            argv += ["--auth", auth]
        if max_line_length is not None:  # a strict receiver: 500 5.5.2 for a longer line
            argv += ["--max-line-length", str(max_line_length)]
        if requiretls:  # offers REQUIRETLS (RFC 8689) over TLS
            argv += ["--requiretls"]
        self.proc = Proc(env, f"py-sink[{name}]", argv, env.path(f"pysink-{name}.log"),
                         stop_signal=signal.SIGINT)
        env.add_diagnostic(lambda: (f"py-sink {name} {ip}:{port}",
                                    "\n".join(json.dumps(e)[:300] for e in self.events()[-15:])
                                    + "\n" + tail(self.proc.log_path, 15)))
        env.wait_for(self._up, 15, f"py-sink {name} on {ip}:{port}")

    def _up(self):
        check(self.proc.alive(), lambda: f"py-sink {self.name} exited: {self.proc.output()}")
        return is_listening(self.ip, self.port)

    def events(self):
        out = []
        try:
            with open(self.record, "rb") as fh:
                for line in fh:
                    if line.endswith(b"\n"):
                        out.append(json.loads(line))
        except FileNotFoundError:
            pass
        return out

    def messages(self):
        out = []
        for e in self.events():
            if e.get("event") != "message":
                continue
            peer = e.get("peer") or [None]
            out.append(SinkMessage(client_addr=peer[0], helo=e.get("helo"),
                                   mail_from=e.get("mail_from"), rcpts=e.get("rcpt_tos", []),
                                   mail_args=" ".join(e.get("mail_options", [])),
                                   tls_version=e.get("tls_version"),
                                   tls_cipher=e.get("tls_cipher"),
                                   tls_client_subject=e.get("tls_client_subject"),
                                   raw=base64.b64decode(e.get("data_b64", "")),
                                   file=self.record))
        return out

    def replies(self):
        return [e for e in self.events() if e.get("event") == "reply"]

    def auths(self):
        return [e for e in self.events() if e.get("event") == "auth"]

    def stop(self):
        return self.proc.stop()


# ---------------------------------------------------------------------------------------------
# The relay


def to_yaml(value, indent=0):
    """A small YAML emitter for config dicts: block mappings, block sequences of mappings, flow
    sequences of scalars; strings double-quoted (JSON escapes are valid YAML), ints/bools plain."""
    pad = "  " * indent

    def scalar(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return str(v)
        if v is None:
            return "null"
        return json.dumps(str(v))

    lines = []
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, dict):
                if v:
                    lines.append(f"{pad}{k}:")
                    lines.append(to_yaml(v, indent + 1))
                else:
                    lines.append(f"{pad}{k}: {{}}")
            elif isinstance(v, (list, tuple)):
                if v and any(isinstance(x, dict) for x in v):
                    lines.append(f"{pad}{k}:")
                    for item in v:
                        sub = to_yaml(item, indent + 2).splitlines()
                        first = sub[0].lstrip()
                        lines.append(f"{pad}  - {first}")
                        lines.extend(sub[1:])
                else:
                    lines.append(f"{pad}{k}: [{', '.join(scalar(x) for x in v)}]")
            else:
                lines.append(f"{pad}{k}: {scalar(v)}")
    else:
        lines.append(pad + scalar(value))
    return "\n".join(lines)


def default_egress():
    return {"legacy": {"type": "direct", "source": [LEGACY_IP], "helo": "legacy.outrelay.test"}}


def default_origins():
    return {"zimbra": {"networks": [f"{RELAY_IP}/32", f"{ZIMBRA_IP}/32"]}}


def standard_config(env, nsd, mx_port, origins=None, egress=None, ramp_from="legacy",
                    listen_port=None, extra_listen=(), tls=None, retry=("1s", "2s"),
                    max_lifetime="1h", users_file=None, limits=None, **extra):
    """The standard test config as a dict (Relay writes it as YAML): listens on
    127.0.0.1:<listen_port> (free port if None) plus extra_listen [{address, tls}], resolves with
    the NSD, delivers to MXs on mx_port, spool/state under the env dir. tls: dict from
    make_ca_and_cert (sets tls.cert/key). extra: more top-level keys, merged last."""
    listen_port = listen_port or env.free_port([RELAY_IP])
    os.makedirs(env.path("keys"), exist_ok=True)
    cfg = {
        "hostname": "relay.outrelay.test",
        "spool": env.path("spool"),
        "state": env.path("state"),
        "keys": env.path("keys"),
        "dns": {"servers": [nsd.server]},
        "delivery": {"mx_port": mx_port, "retry": list(retry), "max_lifetime": max_lifetime,
                     "connect_timeout": "5s", "command_timeout": "30s"},
        "listen": [{"address": f"{RELAY_IP}:{listen_port}", "tls": "optional"}]
        + list(extra_listen),
        "origins": origins if origins is not None else default_origins(),
        "egress": egress if egress is not None else default_egress(),
        "ramp": {"from": ramp_from},
    }
    if tls:
        cfg["tls"] = {"cert": tls["cert"], "key": tls["key"]}
    if users_file:
        cfg["auth"] = {"users_file": users_file}
    if limits:
        cfg["limits"] = limits
    cfg.update(extra)
    return cfg


class Relay:
    """outrelay serve -c <env>/outrelay.yaml, started at construction (start=False to defer).

    .port / .address: the first listen address. .stop() (SIGTERM, exit 0, no sanitizer reports),
    .kill9(), .start(), .restart(), .queue(*args) -> CompletedProcess of `outrelay queue ...`,
    .events(sql, params) -> [dict] from records.db, .stderr() -> its whole log."""

    def __init__(self, env, config, start=True, name="outrelay"):
        need_binary(env)
        self.env = env
        self.config = config
        self.name = name
        self.conf_path = env.path(f"{name}.yaml")
        with open(self.conf_path, "w") as fh:
            fh.write(to_yaml(config) + "\n")
        first = config["listen"][0]["address"]
        self.host, _, port = first.rpartition(":")
        self.host = self.host.strip("[]")
        self.port = int(port)
        self.log_path = env.path(f"{name}.stderr")
        self.db_path = os.path.join(config["state"], "records.db")
        self.proc = None
        self.starts = 0
        env.add_diagnostic(self._diag_stderr)
        env.add_diagnostic(lambda: (f"{name} config {self.conf_path}",
                                    open(self.conf_path).read()))
        if start:
            self.start()

    def _diag_stderr(self):
        text = tail(self.log_path, 10 ** 9)
        report = sanitizer_summary(text, context=40)
        lines = [l for l in text.splitlines()
                 if not re.match(r"\s+(0x[0-9a-f]+:|Shadow|Addressable|Partially|Heap |Freed|"
                                 r"Stack |Global |Poisoned|Container|Array|Intra|ASan|Left |"
                                 r"Right )", l)]
        body = "\n".join(lines[-60:])
        if report:
            body = "sanitizer report:\n" + "\n".join(report) + "\n...\nlast lines:\n" + body
        return f"{self.name} stderr ({self.log_path})", body

    def start(self, timeout=20):
        self.starts += 1
        self.proc = Proc(self.env, self.name, [self.env.bin, "serve", "-c", self.conf_path],
                         self.log_path, watch=True)
        deadline = time.monotonic() + timeout
        while not is_listening(self.host, self.port):
            if not self.proc.alive():
                fail(f"{self.name} exited with status {self.proc.returncode()} before listening "
                     f"on {self.host}:{self.port}:\n{tail(self.log_path, 40)}")
            if time.monotonic() > deadline:
                fail(f"{self.name} did not listen on {self.host}:{self.port} within {timeout}s:"
                     f"\n{tail(self.log_path, 40)}")
            time.sleep(0.05)
        # the control socket comes up after the spool is recovered: "ready" means both
        sock = self.config.get("control_socket") or os.path.join(self.config["state"],
                                                                 "control.sock")
        def control_up():
            # a stale socket file from a killed run exists but refuses connections
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
                    c.settimeout(1)
                    c.connect(sock)
                return True
            except OSError:
                return False

        while not control_up():
            if not self.proc.alive():
                fail(f"{self.name} exited with status {self.proc.returncode()} before its "
                     f"control socket appeared:\n{tail(self.log_path, 40)}")
            if time.monotonic() > deadline:
                fail(f"{self.name} has no control socket {sock} after {timeout}s:"
                     f"\n{tail(self.log_path, 40)}")
            time.sleep(0.05)
        log(f"{self.name} listening on {self.host}:{self.port} (pid {self.proc.pid})")
        return self

    def sanitizer_lines(self, since_start=True):
        text = self.proc.output(since_start=since_start) if self.proc else ""
        return [l for l in text.splitlines() if any(p in l for p in SANITIZER_PATTERNS)]

    def stop(self, timeout=60):
        """SIGTERM; asserts exit status 0 and no sanitizer report in this run's stderr."""
        if not self.proc:
            return
        proc, self.proc = self.proc, None
        proc.expected_exit = True
        was_alive = proc.alive()
        rc = proc.stop(timeout=timeout)
        self.proc = proc
        san = self.sanitizer_lines()
        check(not san, lambda: f"{self.name} stderr has sanitizer reports:\n" + "\n".join(san[:20])
              + "\n" + tail(self.log_path, 60))
        check(was_alive, f"{self.name} had already exited (status {rc}) before stop()")
        check(rc == 0, f"{self.name} exited with status {rc} on SIGTERM:\n{tail(self.log_path, 30)}")
        log(f"{self.name} stopped cleanly")

    def kill9(self):
        self.proc.expected_exit = True
        self.proc.kill9()
        log(f"{self.name} killed with SIGKILL (pid {self.proc.pid})")

    def wait_for(self, predicate, timeout=30, what="the relay"):
        """env.wait_for, failing at once if this relay dies."""
        return self.env.wait_for(predicate, timeout, what)

    def restart(self):
        if self.proc and self.proc.alive():
            self.stop()
        return self.start()

    def alive(self):
        return self.proc is not None and self.proc.alive()

    def stderr(self):
        return tail(self.log_path, 10 ** 9)

    def queue_like(self, command, *args, timeout=30):
        """`outrelay COMMAND ARGS -c CONFIG` (ramp, queue, ...) as a CompletedProcess."""
        r = subprocess.run([self.env.bin, command, *args, "-c", self.conf_path],
                           capture_output=True, text=True, timeout=timeout)
        log(f"outrelay {command} {' '.join(args)} -> {r.returncode}\n{r.stdout}{r.stderr}")
        return r

    def queue(self, *args, timeout=30):
        r = subprocess.run([self.env.bin, "queue", *args, "-c", self.conf_path],
                           capture_output=True, text=True, timeout=timeout)
        log(f"outrelay queue {' '.join(args)} -> {r.returncode}\n{r.stdout}{r.stderr}")
        return r

    def history(self, recipient):
        """records.db's story of one recipient, one short string per event (for messages)."""
        try:
            rows = self.events("SELECT event, reply_code, enhanced_code, reply_text, detail "
                               "FROM events WHERE recipient LIKE ? ORDER BY ts_us",
                               (f"%{recipient}%",))
        except sqlite3.Error as e:
            return [f"(records.db: {e})"]
        return [" ".join(str(r[k]) for k in ("event", "reply_code", "enhanced_code",
                                              "reply_text", "detail") if r.get(k))
                for r in rows]

    def events(self, sql="SELECT * FROM events ORDER BY ts_us", params=(), retries=50):
        """Rows as dicts from <state>/records.db, opened read-only; retries on SQLITE_BUSY or
        while the database does not exist yet (returns [] if it never appears)."""
        for attempt in range(retries):
            if not os.path.exists(self.db_path):
                return []
            try:
                db = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=5)
                try:
                    db.row_factory = sqlite3.Row
                    return [dict(r) for r in db.execute(sql, params).fetchall()]
                finally:
                    db.close()
            except sqlite3.OperationalError as e:
                msg = str(e)
                if ("locked" in msg or "busy" in msg or "no such table" in msg) \
                        and attempt < retries - 1:
                    time.sleep(0.1)
                    continue
                raise
        return []


# ---------------------------------------------------------------------------------------------
# Clients


def make_message(mail_from, to, subject="test", message_id=None, body=None, extra_headers=()):
    """An RFC 5322 message as bytes with CRLF line ends and a unique Message-ID."""
    message_id = message_id or f"<{uuid.uuid4().hex}@example.org>"
    if isinstance(to, (list, tuple)):
        to = ", ".join(to)
    lines = [f"From: <{mail_from}>" if mail_from else "From: <mailer-daemon@example.org>",
             f"To: {to}", f"Subject: {subject}", f"Message-ID: {message_id}",
             f"Date: {email.utils.formatdate(localtime=False)}", "MIME-Version: 1.0",
             "Content-Type: text/plain; charset=us-ascii"]
    lines += list(extra_headers)
    body = body if body is not None else f"Test message {message_id}.\r\nSecond line.\r\n"
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode("utf-8")


class SendResult:
    """What happened in one send(): steps [(step, code, text)], features (EHLO keywords, upper
    case, from the last EHLO), tls_version, error (str or None). .accepted: DATA got 250."""

    def __init__(self):
        self.steps = []
        self.features = {}
        self.tls_version = None
        self.tls_cipher = None
        self.error = None

    def add(self, step, code, text):
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        self.steps.append((step, code, text))

    def reply(self, step):
        """(code, text) of the last step with this name, or (None, None)."""
        for s, c, t in reversed(self.steps):
            if s == step:
                return c, t
        return None, None

    def code(self, step):
        return self.reply(step)[0]

    @property
    def accepted(self):
        return self.code("data") == 250

    @property
    def queue_id(self):
        """The relay's queue id from "250 2.0.0 Ok: queued as ID", or None."""
        for step in self.steps:
            if step[0] == "data" and step[1] == 250 and "queued as " in (step[2] or ""):
                return step[2].rsplit("queued as ", 1)[1].strip()
        return None

    def __repr__(self):
        return f"SendResult(steps={self.steps}, tls={self.tls_version}, error={self.error})"


def send(host, port, mail_from, rcpts, data, ehlo="client.example.org", starttls=False,
         auth=None, source_addr=None, tls_context=None, timeout=60):
    """One SMTP transaction with smtplib, never raising for SMTP replies: every step's reply is
    recorded in the returned SendResult; the session stops at the first refused step (MAIL, DATA,
    AUTH, STARTTLS; a refused RCPT is recorded and the others go on; DATA is skipped when no
    RCPT was accepted). auth = (user, password) or (user, password, "PLAIN"|"LOGIN").
    source_addr binds the client socket (any 127.0.0.0/8 address)."""
    res = SendResult()
    if isinstance(rcpts, str):
        rcpts = [rcpts]
    if isinstance(data, str):
        data = data.encode("utf-8")
    smtp = smtplib.SMTP(timeout=timeout,
                        source_address=(source_addr, 0) if source_addr else None)
    try:
        try:
            code, text = smtp.connect(host, port)
        except (OSError, smtplib.SMTPException) as e:
            res.error = f"connect: {e}"
            return res
        res.add("connect", code, text)
        if code != 220:
            return res
        code, text = smtp.ehlo(ehlo)
        res.add("ehlo", code, text)
        res.features = {k.upper(): v for k, v in smtp.esmtp_features.items()}
        if code != 250:
            return res
        if starttls:
            code, text = smtp.docmd("STARTTLS")
            res.add("starttls", code, text)
            if code != 220:
                return res
            ctx = tls_context or client_tls_context()
            smtp.sock = ctx.wrap_socket(smtp.sock, server_hostname=host)
            smtp.file = None
            smtp.helo_resp = smtp.ehlo_resp = None
            smtp.esmtp_features = {}
            smtp.does_esmtp = False
            res.tls_version = smtp.sock.version()
            res.tls_cipher = smtp.sock.cipher()[0]
            code, text = smtp.ehlo(ehlo)
            res.add("ehlo", code, text)
            res.features = {k.upper(): v for k, v in smtp.esmtp_features.items()}
            if code != 250:
                return res
        if auth:
            user, password = auth[0], auth[1]
            mech = auth[2].upper() if len(auth) > 2 else "PLAIN"
            smtp.user, smtp.password = user, password
            try:
                if mech == "PLAIN":
                    code, text = smtp.docmd(
                        "AUTH", "PLAIN " + base64.b64encode(
                            f"\0{user}\0{password}".encode()).decode())
                else:
                    code, text = smtp.docmd("AUTH", "LOGIN")
                    if code == 334:
                        code, text = smtp.docmd(base64.b64encode(user.encode()).decode())
                    if code == 334:
                        code, text = smtp.docmd(base64.b64encode(password.encode()).decode())
            except smtplib.SMTPServerDisconnected as e:
                res.error = f"auth: disconnected: {e}"
                return res
            res.add("auth", code, text)
            if code != 235:
                return res
        code, text = smtp.mail(mail_from or "")
        res.add("mail", code, text)
        if code != 250:
            return res
        ok = 0
        for rcpt in rcpts:
            code, text = smtp.rcpt(rcpt)
            res.add("rcpt", code, text)
            ok += code in (250, 251)
        if not ok:
            return res
        try:
            code, text = smtp.data(data)
        except smtplib.SMTPDataError as e:
            code, text = e.smtp_code, e.smtp_error
        res.add("data", code, text)
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            pass
    except smtplib.SMTPServerDisconnected as e:
        res.error = f"disconnected: {e}"
    except (OSError, smtplib.SMTPException) as e:
        res.error = f"{type(e).__name__}: {e}"
    finally:
        try:
            smtp.close()
        except Exception:
            pass
    return res


class Client:
    """A persistent smtplib session for load tests: transaction() runs MAIL/RCPT/DATA on the
    current connection (connecting, with EHLO, when needed; a new connection after
    max_per_session transactions) and returns a SendResult; any connection error drops the
    connection and is reported in SendResult.error (the next call reconnects). Not thread-safe:
    one Client per thread."""

    def __init__(self, host, port, source_addr=None, ehlo="client.example.org", timeout=60,
                 max_per_session=50):
        self.host, self.port = host, port
        self.source_addr = source_addr
        self.ehlo = ehlo
        self.timeout = timeout
        self.max_per_session = max_per_session
        self.smtp = None
        self.count = 0

    def _connect(self):
        smtp = smtplib.SMTP(timeout=self.timeout,
                            source_address=(self.source_addr, 0) if self.source_addr else None)
        code, text = smtp.connect(self.host, self.port)
        if code != 220:
            smtp.close()
            raise smtplib.SMTPConnectError(code, text)
        code, text = smtp.ehlo(self.ehlo)
        if code != 250:
            smtp.close()
            raise smtplib.SMTPHeloError(code, text)
        self.smtp, self.count = smtp, 0

    def close(self):
        if self.smtp:
            try:
                self.smtp.quit()
            except (smtplib.SMTPException, OSError):
                pass
            try:
                self.smtp.close()
            except OSError:
                pass
        self.smtp = None

    def transaction(self, mail_from, rcpts, data):
        res = SendResult()
        if isinstance(rcpts, str):
            rcpts = [rcpts]
        try:
            if self.smtp is None or self.count >= self.max_per_session:
                self.close()
                self._connect()
            self.count += 1
            code, text = self.smtp.mail(mail_from or "")
            res.add("mail", code, text)
            if code != 250:
                self.smtp.rset()
                return res
            ok = 0
            for r in rcpts:
                code, text = self.smtp.rcpt(r)
                res.add("rcpt", code, text)
                ok += code in (250, 251)
            if not ok:
                self.smtp.rset()
                return res
            try:
                code, text = self.smtp.data(data)
            except smtplib.SMTPDataError as e:
                code, text = e.smtp_code, e.smtp_error
            res.add("data", code, text)
        except (OSError, smtplib.SMTPException) as e:
            res.error = f"{type(e).__name__}: {e}"
            try:
                if self.smtp:
                    self.smtp.close()
            except OSError:
                pass
            self.smtp = None
        return res


def smtp_source(host, port, count=1, sessions=1, size=None, mail_from="load@example.org",
                rcpt="rcpt@example.net", extra=(), timeout=600):
    """Runs Postfix smtp-source (-c -m count -s sessions [-l size] -f from -t rcpt) against
    host:port and returns the CompletedProcess. smtp-source has no option to bind a client
    address (see man smtp-source), and Linux picks 127.0.0.1 as the source for every 127/8
    destination, so its sessions always come from 127.0.0.1: origins for smtp-source load must
    include 127.0.0.1/32. Use send() or swaks(local_interface=) for other client addresses."""
    argv = [SMTP_SOURCE, "-c", "-m", str(count), "-s", str(sessions), "-f", mail_from,
            "-t", rcpt]
    if size:
        argv += ["-l", str(size)]
    argv += list(extra) + [f"{host}:{port}"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, MAIL_CONFIG="/nonexistent"))


def have_swaks():
    return shutil.which("swaks") is not None


def swaks_has_tls():
    return have_swaks() and subprocess.run(["perl", "-MNet::SSLeay", "-e", "1"],
                                           capture_output=True).returncode == 0


def swaks(host, port, mail_from, to, data_file=None, local_interface=None, tls=False,
          auth=None, ehlo="client.example.org", extra=(), timeout=120):
    """Runs swaks (if installed; have_swaks()) and returns the CompletedProcess. auth =
    (user, password[, mech]). local_interface binds the client address (swaks --local-interface).
    tls=True needs Perl's Net::SSLeay (Debian libnet-ssleay-perl), which swaks does not depend on:
    check swaks_has_tls() first, or use send(starttls=True)."""
    argv = ["swaks", "--server", host, "--port", str(port), "--from", mail_from, "--to", to,
            "--ehlo", ehlo, "--timeout", "30"]
    if data_file:
        argv += ["--data", data_file]
    if local_interface:
        argv += ["--local-interface", local_interface]
    if tls:
        argv += ["--tls"]
    if auth:
        argv += ["--auth", auth[2] if len(auth) > 2 else "PLAIN", "--auth-user", auth[0],
                 "--auth-password", auth[1]]
    argv += list(extra)
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


class RawListener:
    """A bare TCP listener on loopback for receivers that misbehave on purpose: each accepted
    socket is handed to on_connection(sock) on the accept thread, which owns and closes it."""

    def __init__(self, ip, port, on_connection, backlog=64):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((ip, port))
        self.sock.listen(backlog)
        self.sock.settimeout(0.2)
        self.on_connection = on_connection
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.on_connection(c)

    def stop(self):
        self.stopping = True
        self.thread.join(2)
        self.sock.close()


class RawClient:
    """A byte-exact SMTP client over a plain socket, for tests about framing (smuggling, bare
    LF, pipelining). send(bytes) sends exactly those bytes; reply() reads one (multi-line) reply
    as (code, text) or (None, reason) on EOF/timeout; cmd(bytes) does both."""

    def __init__(self, host, port, source_addr=None, timeout=15):
        self.sock = socket.create_connection(
            (host, port), timeout=timeout,
            source_address=(source_addr, 0) if source_addr else None)
        self.buf = b""
        self.timeout = timeout
        self.host = host

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, timeout):
        self.sock.settimeout(timeout)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            return None
        except (ConnectionResetError, ssl.SSLError, OSError):
            return b""
        return chunk

    def reply(self, timeout=None):
        timeout = timeout or self.timeout
        deadline = time.monotonic() + timeout
        lines = []
        while True:
            while b"\r\n" not in self.buf:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None, "timeout"
                chunk = self._fill(left)
                if chunk is None:
                    return None, "timeout"
                if chunk == b"":
                    return None, "eof"
                self.buf += chunk
            line, self.buf = self.buf.split(b"\r\n", 1)
            text = line.decode("utf-8", "replace")
            lines.append(text[4:])
            if len(text) < 4 or text[3] != "-":
                try:
                    return int(text[:3]), "\n".join(lines)
                except ValueError:
                    return None, f"garbage: {text!r}"

    def cmd(self, line, timeout=None):
        if isinstance(line, str):
            line = line.encode()
        self.send(line)
        return self.reply(timeout)

    def starttls(self, ctx=None):
        ctx = ctx or client_tls_context()
        self.sock = ctx.wrap_socket(self.sock, server_hostname=self.host)
        return self.sock.version()

    def closed_by_peer(self, timeout=5):
        """True when the server closes the connection within timeout (data before EOF ignored)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            chunk = self._fill(max(0.05, deadline - time.monotonic()))
            if chunk == b"":
                return True
            if chunk:
                self.buf += chunk
        return False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def ip_of(text):
    """The IP address inside "1.2.3.4", "[1.2.3.4]:25", "ipv6:::1" etc. (text unchanged if none)."""
    if text is None:
        return None
    m = re.search(r"\d+\.\d+\.\d+\.\d+", text)
    if m:
        return m.group(0)
    return text.strip("[]").replace("ipv6:", "")


def message_ids(messages):
    """Counter-like dict {Message-ID: how many times} over SinkMessages."""
    counts = {}
    for m in messages:
        counts[m.message_id] = counts.get(m.message_id, 0) + 1
    return counts


def run_threads(n, fn):
    """Runs fn(i) for i in range(n) in n threads; re-raises the first exception."""
    errors = []

    def wrap(i):
        try:
            fn(i)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=wrap, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
