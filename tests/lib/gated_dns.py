"""gated_dns.py - a UDP DNS proxy on loopback in front of the test NSD that holds back the
queries naming _domainkey until the test opens the gate: a session waiting on its
dkim_required check stays busy for as long as a test needs."""
import socket
import subprocess
import threading

import harness as h

PLATFORM_IP = "127.0.0.14"  # the dkim_required origin's platform address


class GatedDns:
    """A UDP DNS proxy on loopback in front of the test NSD: forwards every query, except that
    queries naming _domainkey are held while the gate is closed and answered once it opens."""

    def __init__(self, env, nsd):
        self.upstream = nsd.server.rpartition(":")
        self.upstream = (self.upstream[0], int(self.upstream[2]))
        self.port = env.free_port([h.RELAY_IP], udp=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((h.RELAY_IP, self.port))
        self.sock.settimeout(0.2)
        self.lock = threading.Lock()
        self.open = False
        self.held = []
        self.held_total = 0
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @property
    def server(self):
        return f"{h.RELAY_IP}:{self.port}"

    @staticmethod
    def qname(packet):
        labels, i = [], 12
        while i < len(packet) and packet[i]:
            n = packet[i]
            labels.append(packet[i + 1:i + 1 + n].decode("ascii", "replace"))
            i += 1 + n
        return ".".join(labels).lower()

    def _forward(self, packet, addr):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as up:
            up.settimeout(2)
            up.sendto(packet, self.upstream)
            try:
                answer = up.recv(65535)
            except socket.timeout:
                return
        self.sock.sendto(answer, addr)

    def _run(self):
        while not self.stopping:
            try:
                packet, addr = self.sock.recvfrom(65535)
            except socket.timeout:
                continue
            except OSError:
                return
            if len(packet) < 12:
                continue
            with self.lock:
                hold = not self.open and "_domainkey" in self.qname(packet)
                if hold:
                    self.held.append((packet, addr))
                    self.held_total += 1
            if not hold:
                self._forward(packet, addr)

    def release(self):
        with self.lock:
            self.open = True
            held, self.held = self.held, []
        for packet, addr in held:  # libunbound retransmits: every copy gets its answer
            self._forward(packet, addr)

    def stop(self):
        self.stopping = True
        self.thread.join(5)
        self.sock.close()


class BusyRelay:
    """A relay whose origin "platform" (PLATFORM_IP) is dkim_required for example.org, resolving
    through a GatedDns: a message it accepts keeps its session busy until dns.release().
    .relay, .dns, .sink (example.net's MX); send_busy() starts the busy session."""

    def __init__(self, env, limits):
        self.env = env
        self.keys = env.path("platform-keys")
        r = subprocess.run([f"{env.tools}/dkim_tool", "keygen", self.keys, "example.org", "gw",
                            "rsa"], capture_output=True, text=True, timeout=60)
        h.check(r.returncode == 0, f"dkim_tool keygen: {r.stderr}")
        zones = h.default_zones()
        zones["example.org"] += r.stdout
        nsd = h.Nsd(env, zones=zones)
        self.dns = GatedDns(env, nsd)
        env.add_diagnostic(lambda: ("gated DNS",
                                    f"held {self.dns.held_total}, open {self.dns.open}"))
        mx_port = env.free_port(h.SINK_IPS + [h.LEGACY_IP])
        self.sink = h.PySink(env, h.MX_EXAMPLE_NET, mx_port, "example.net")
        origins = {"platform": {"platforms": ["testplatform"], "domains": ["example.org"],
                                "dkim_required": True}}
        cfg = h.standard_config(env, nsd, mx_port, origins=origins,
                                platforms={"testplatform": {"networks": [f"{PLATFORM_IP}/32"],
                                                            "source": "test platform"}},
                                limits=limits)
        cfg["dns"] = {"servers": [self.dns.server]}
        self.relay = h.Relay(env, cfg)

    def send_busy(self, message_id, body):
        """A RawClient from the platform that has sent a signed message (alice@example.org to
        bob@example.net) and its end of data; returns once the relay asks for the signing key,
        so the session is busy from then on."""
        raw = (b"From: alice@example.org\r\nTo: bob@example.net\r\nMessage-ID: " + message_id
               + b"\r\nSubject: busy\r\n\r\n" + body + b"\r\n")
        r = subprocess.run([f"{self.env.tools}/dkim_tool", "sign", self.keys, "example.org"],
                           input=raw, capture_output=True, timeout=60)
        h.check(r.returncode == 0, f"signing failed: {r.stderr!r}")
        c = h.RawClient(self.relay.host, self.relay.port, source_addr=PLATFORM_IP)
        h.check(c.reply()[0] == 220, "greeting")
        code, text = c.cmd(b"EHLO platform.example.org\r\n")
        h.check(code == 250, f"EHLO: {code} {text}")
        for line, want in ((b"MAIL FROM:<alice@example.org>\r\n", 250),
                           (b"RCPT TO:<bob@example.net>\r\n", 250), (b"DATA\r\n", 354)):
            code, text = c.cmd(line)
            h.check(code == want, f"{line!r}: {code} {text}")
        c.send(r.stdout + b".\r\n")
        # the worker asks for gw._domainkey.example.org: from here on the session is busy
        self.env.wait_for(lambda: self.dns.held_total > 0, 20,
                          "the DKIM key query at the DNS proxy")
        return c
