"""spf_rfc7208_suite.py - the openspf RFC 7208 test suite run through outrelay's SPF layer.

Owns: turning each scenario's zonedata into a real DNS world (one NSD serving the root zone, so
every name the scenario does not define is a genuine NXDOMAIN), a small UDP/TCP proxy in front of
it that plays the suite's TIMEOUT entries, and the comparison of `spf_eval` (libspf2 through our
DNS layer and libunbound) with each expected result. Every case that fails must be listed in
KNOWN_DEVIATIONS with the libspf2 behaviour behind it; a listed case that passes fails the test.

Skips (exit 77) when python3-yaml or the data file ($OUTRELAY_TESTDATA/spf/rfc7208-tests.yml) is
missing. TIMEOUT is answered with SERVFAIL by default (libunbound's own retry schedule for a
silent server takes ~17 s per lookup, and dns_sync folds both into DNS_TEMPFAIL); one real,
silent timeout is checked at the end. SPF_SUITE_REAL_TIMEOUTS=1 makes every TIMEOUT silent;
SPF_SUITE_ONLY=scenario-number-or-test-name runs a subset (then deviations are not checked).
"""
import os
import socket
import struct
import subprocess
import sys
import threading
import time

DATA = os.path.join(os.environ.get("OUTRELAY_TESTDATA", "/work/shared/testdata"), "spf",
                    "rfc7208-tests.yml")

try:
    import yaml
except ImportError:
    print("SKIP: python3-yaml is not installed (apt-get install python3-yaml)")
    sys.exit(77)
if not os.path.exists(DATA):
    print(f"SKIP: SPF test data {DATA} is absent")
    sys.exit(77)

import harness as h  # noqa: E402

# "scenario description/test name": why libspf2 1.2.10 answers differently. Checked against the
# libspf2 sources (github shevek/libspf2, src/libspf2/*.c); every entry must still fail.
KNOWN_DEVIATIONS = {
}

REAL_TIMEOUTS = os.environ.get("SPF_SUITE_REAL_TIMEOUTS") == "1"
ONLY = os.environ.get("SPF_SUITE_ONLY", "")
SILENT_TIMEOUT_SECONDS = 40  # libunbound gives up on a silent server after ~17 s

QTYPES = {"A": 1, "NS": 2, "CNAME": 5, "PTR": 12, "MX": 15, "TXT": 16, "AAAA": 28, "SPF": 99}


# ---------------------------------------------------------------------------------------------
# Zone data -> zone file


def name_labels(name):
    """The suite's name as a list of lower-cased byte labels (names here never escape dots)."""
    return [label.encode("utf-8").lower() for label in name.rstrip(".").split(".")]


def zone_name(name):
    """Presentation form for a zone file, absolute; anything unusual as \\DDD."""
    if name.rstrip(".") == "":
        return "."
    out = []
    for label in name.rstrip(".").split("."):
        text = ""
        for byte in label.encode("utf-8"):
            c = chr(byte)
            text += c if (c.isascii() and (c.isalnum() or c in "-_")) else f"\\{byte:03d}"
        out.append(text)
    return ".".join(out) + "."


def character_strings(value):
    """TXT/SPF rdata: a list of quoted character-strings, each at most 255 octets."""
    parts = value if isinstance(value, list) else [value]
    chunks = []
    for part in parts:
        raw = str(part).encode("utf-8")
        pieces = [raw[i:i + 255] for i in range(0, len(raw), 255)] or [b""]
        chunks += pieces
    if not chunks:  # "SPF: [ ]": a record without strings cannot be sent; the nearest is ""
        chunks = [b""]
    quoted = []
    for chunk in chunks:
        text = ""
        for byte in chunk:
            c = chr(byte)
            if 32 <= byte < 127 and c not in '"\\':
                text += c
            else:
                text += f"\\{byte:03d}"
        quoted.append(f'"{text}"')
    return " ".join(quoted)


def expand_records(records):
    """The suite's conventions for one name: SPF records double as TXT unless the name lists TXT
    records of its own; a value of NONE means "no record of that type"; TIMEOUT after some records
    means queries for those types answer and all others time out. Returns (rrs, timeout_types)
    where timeout_types is None (no TIMEOUT) or the set of qtypes that still answer."""
    has_txt = any(isinstance(r, dict) and "TXT" in r for r in records)
    rrs = []
    answered = set()
    timeout = None
    for r in records:
        if r == "TIMEOUT":
            timeout = set(answered)
            continue
        for rtype, value in r.items():
            if value == "NONE":
                continue
            rrs.append((rtype, value))
            answered.add(QTYPES[rtype])
            if rtype == "SPF" and not has_txt:
                rrs.append(("TXT", value))
    return rrs, timeout


def root_zone(zonedata):
    """One zone file for "." holding every name of a scenario; returns (text, timeouts) with
    timeouts {labels tuple: set of qtypes that answer}."""
    lines = ["$TTL 300", ". IN SOA ns. hostmaster. ( 1 3600 600 86400 300 )", ". IN NS localhost."]
    timeouts = {}
    for name, records in zonedata.items():
        rrs, timeout = expand_records(records)
        owner = zone_name(name)
        if timeout is not None:
            timeouts[tuple(name_labels(name))] = timeout
        for rtype, value in rrs:
            if rtype in ("TXT", "SPF"):
                rdata = character_strings(value)
            elif rtype == "MX":
                rdata = f"{int(value[0])} {zone_name(value[1])}"
            elif rtype in ("PTR", "CNAME"):
                rdata = zone_name(value)
            else:
                rdata = str(value)
            lines.append(f"{owner} IN {rtype} {rdata}")
    return "\n".join(lines) + "\n", timeouts


# ---------------------------------------------------------------------------------------------
# The proxy: NSD answers everything except the suite's TIMEOUT names


def parse_question(msg):
    """(labels, qtype) of a DNS query, or None."""
    pos = 12
    labels = []
    try:
        while True:
            n = msg[pos]
            if n == 0:
                pos += 1
                break
            if n & 0xC0:
                return None
            labels.append(bytes(msg[pos + 1:pos + 1 + n]).lower())
            pos += 1 + n
        qtype = struct.unpack("!H", msg[pos:pos + 2])[0]
        return tuple(labels), qtype, pos + 4
    except (IndexError, struct.error):
        return None


def servfail(query, qend):
    """A SERVFAIL reply carrying the query's id and question."""
    qid, flags = struct.unpack("!HH", query[:4])
    flags = 0x8000 | (flags & 0x7900) | 0x0080 | 2  # QR, opcode+RD kept, RA, rcode 2
    return struct.pack("!HHHHHH", qid, flags, 1, 0, 0, 0) + query[12:qend]


class Proxy:
    """UDP and TCP on 127.0.0.1:port in front of NSD. For a query the scenario says must time
    out it stays silent (real) or answers SERVFAIL (emulated); everything else goes to NSD."""

    def __init__(self, env, nsd_port):
        self.nsd = ("127.0.0.1", nsd_port)
        self.port = env.free_port(["127.0.0.1"], udp=True)
        self.timeouts = {}
        self.silent = REAL_TIMEOUTS
        self.stopping = False
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", self.port))
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind(("127.0.0.1", self.port))
        self.tcp.listen(16)
        for loop in (self._udp_loop, self._tcp_loop):
            threading.Thread(target=loop, daemon=True).start()

    @property
    def server(self):
        return f"127.0.0.1:{self.port}"

    def _times_out(self, query):
        q = parse_question(query)
        if not q:
            return None
        labels, qtype, qend = q
        answering = self.timeouts.get(labels)
        if answering is None or qtype in answering:
            return None
        return qend

    def _udp_loop(self):
        while not self.stopping:
            try:
                query, peer = self.udp.recvfrom(65535)
            except OSError:
                return
            threading.Thread(target=self._udp_one, args=(query, peer), daemon=True).start()

    def _udp_one(self, query, peer):
        qend = self._times_out(query)
        if qend is not None:
            if not self.silent:
                self.udp.sendto(servfail(query, qend), peer)
            return
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as up:
            up.settimeout(3)
            try:
                up.sendto(query, self.nsd)
                reply = up.recv(65535)
            except OSError:
                return
        try:
            self.udp.sendto(reply, peer)
        except OSError:
            pass

    def _tcp_loop(self):
        while not self.stopping:
            try:
                conn, _ = self.tcp.accept()
            except OSError:
                return
            threading.Thread(target=self._tcp_one, args=(conn,), daemon=True).start()

    @staticmethod
    def _read_msg(sock):
        head = b""
        while len(head) < 2:
            more = sock.recv(2 - len(head))
            if not more:
                return None
            head += more
        size = struct.unpack("!H", head)[0]
        body = b""
        while len(body) < size:
            more = sock.recv(size - len(body))
            if not more:
                return None
            body += more
        return body

    def _tcp_one(self, conn):
        with conn:
            conn.settimeout(10)
            try:
                while True:
                    query = self._read_msg(conn)
                    if query is None:
                        return
                    qend = self._times_out(query)
                    if qend is not None:
                        if self.silent:
                            time.sleep(SILENT_TIMEOUT_SECONDS)
                            return
                        reply = servfail(query, qend)
                    else:
                        with socket.create_connection(self.nsd, timeout=3) as up:
                            up.sendall(struct.pack("!H", len(query)) + query)
                            reply = self._read_msg(up)
                        if reply is None:
                            return
                    conn.sendall(struct.pack("!H", len(reply)) + reply)
            except OSError:
                return

    def stop(self):
        self.stopping = True
        for s in (self.udp, self.tcp):
            try:
                s.close()
            except OSError:
                pass


# ---------------------------------------------------------------------------------------------
# Running the suite


def spf_eval(server, host, mailfrom, helo, timeout=60):
    tool = os.path.join(os.environ["OUTRELAY_TOOLS"], "spf_eval")
    r = subprocess.run([tool, server, host, mailfrom, helo], capture_output=True, text=True,
                       timeout=timeout)
    sanitizer = [p for p in h.SANITIZER_PATTERNS if p in r.stderr]
    h.check(not sanitizer, lambda: f"spf_eval {host} {mailfrom!r} {helo!r}: sanitizer report:\n"
            f"{r.stderr[-3000:]}")
    h.check(r.returncode == 0, lambda: f"spf_eval exited {r.returncode}: {r.stderr[-2000:]}")
    result, _, explanation = r.stdout.rstrip("\n").partition("\t")
    return result, explanation


def selected(index, scenario, test):
    if not ONLY:
        return True
    return ONLY in (str(index), test, f"{scenario}/{test}")


def run_scenario(env, index, doc, outcomes):
    scenario = doc["description"]
    tests = {name: t for name, t in doc["tests"].items() if selected(index, scenario, name)}
    if not tests:
        return
    text, timeouts = root_zone(doc.get("zonedata") or {})
    nsd = h.Nsd(env, {".": text})
    proxy = Proxy(env, nsd.port)
    proxy.timeouts = timeouts
    try:
        for name, t in tests.items():
            want = t["result"] if isinstance(t["result"], list) else [t["result"]]
            want = [w.lower() for w in want]
            got, why = spf_eval(proxy.server, str(t["host"]), str(t.get("mailfrom", "")),
                                str(t.get("helo", "")))
            outcomes.append((f"{scenario}/{name}", got, want, why))
    finally:
        proxy.stop()
        nsd.stop()


def real_timeout_check(env):
    """One TIMEOUT played by a silent server: libunbound's own timeout must become temperror."""
    zonedata = {"alltimeout.example.net": ["TIMEOUT"],
                "example.net": [{"TXT": "v=spf1 include:alltimeout.example.net -all"}]}
    text, timeouts = root_zone(zonedata)
    nsd = h.Nsd(env, {".": text})
    proxy = Proxy(env, nsd.port)
    proxy.timeouts = timeouts
    proxy.silent = True
    try:
        started = time.monotonic()
        got, why = spf_eval(proxy.server, "192.0.2.1", "a@example.net", "mail.example.net",
                            timeout=120)
        took = time.monotonic() - started
        h.log(f"silent server: {got} after {took:.1f}s ({why})")
        h.check(got == "temperror", f"a silent DNS server gave {got!r} ({why}), not temperror")
    finally:
        proxy.stop()
        nsd.stop()


def test(env):
    with open(DATA, encoding="utf-8") as fh:
        docs = [d for d in yaml.safe_load_all(fh) if d]
    started = time.monotonic()
    outcomes = []
    for index, doc in enumerate(docs):
        run_scenario(env, index, doc, outcomes)
    passed = [o for o in outcomes if o[1] in o[2]]
    failed = [o for o in outcomes if o[1] not in o[2]]
    h.log(f"RFC 7208 suite: {len(passed)} of {len(outcomes)} pass "
          f"({time.monotonic() - started:.1f}s, TIMEOUT {'silent' if REAL_TIMEOUTS else 'SERVFAIL'})")
    problems = []
    for key, got, want, why in failed:
        known = KNOWN_DEVIATIONS.get(key)
        h.log(f"  {'known' if known else 'NEW  '} {key}: got {got}, want {'|'.join(want)} ({why})")
        if not known:
            problems.append(f"{key}: got {got}, want {'|'.join(want)} ({why})")
    if not ONLY:
        for key, got, want, _ in passed:
            if key in KNOWN_DEVIATIONS:
                problems.append(f"{key}: listed in KNOWN_DEVIATIONS but now passes ({got}); "
                                "remove it from the list")
        ran = {o[0] for o in outcomes}
        for key in KNOWN_DEVIATIONS:
            if key not in ran:
                problems.append(f"{key}: listed in KNOWN_DEVIATIONS but not in the suite")
        if not REAL_TIMEOUTS:
            real_timeout_check(env)
    h.check(not problems, lambda: "SPF suite deviations not explained:\n  " +
            "\n  ".join(problems))
    h.log(f"RFC 7208 suite done in {time.monotonic() - started:.1f}s")


if __name__ == "__main__":
    h.main(test)
