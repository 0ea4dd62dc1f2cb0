"""gated_dns.py - a UDP DNS proxy on loopback in front of the test NSD that holds back the
queries naming _domainkey until the test opens the gate: a session waiting on its
dkim_required check stays busy for as long as a test needs."""
import socket
import threading

import harness as h


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
