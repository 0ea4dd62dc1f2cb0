"""dmarc_matrix.py - proves dmarc_predict() (outrelay/check/dmarc.c) against NSD: a table of From /
envelope domain / SPF result / our DKIM signatures run through tests/tools/dmarc_eval, asserting the
verdict and the fields each row is about: SPF and DKIM alignment, strict vs relaxed (where
libopendmarc 1.4.2 alone says "aligned"), sp, p values, missing/duplicate/invalid records, keys that
differ, are revoked or missing, and DNS timeouts (a proxy drops queries under dead.example.org).
"""
import base64
import concurrent.futures
import os
import random
import socket
import subprocess
import threading
import time

import harness as h

# Fake but realistically sized keys: the prediction compares p= text, it does no crypto.
_rng = random.Random(7489)
RSA = base64.b64encode(bytes(_rng.randrange(256) for _ in range(294))).decode()  # 392 chars
RSA_OTHER = base64.b64encode(bytes(_rng.randrange(256) for _ in range(294))).decode()
ED = base64.b64encode(bytes(_rng.randrange(256) for _ in range(32))).decode()

DEAD_SUFFIX = "dead.example.org"  # the proxy never answers for names under it
TIMEOUT_BOUND = 90                # seconds one dmarc_eval run may take, timeouts included


def txt(*strings):
    """A TXT rdata of several character-strings (each <= 255 bytes)."""
    return " ".join('"' + s + '"' for s in strings)


def key_txt(prefix, key):
    """A key record whose p= is split across character-strings, as big RSA keys are."""
    return txt(prefix + key[:200], key[200:])


def zones():
    z = h.zone_text
    return {
        "example.org": z("example.org", (
            f'_dmarc IN TXT {txt("v=DMARC1; p=reject; sp=quarantine; rua=mailto:d@example.org")}\n'
            f'_dmarc IN TXT {txt("site-verification=not-dmarc")}\n'
            f"rsa1._domainkey IN TXT {key_txt('v=DKIM1; k=rsa; p=', RSA)}\n"
            f"sel._domainkey.mail IN TXT {key_txt('v=DKIM1; p=', RSA)}\n"
            f'ed1._domainkey IN TXT {txt("v=DKIM1; k=ed25519; p=" + ED)}\n'
            # whitespace inside p= (allowed by RFC 6376) and across the string boundary
            f'spaced._domainkey IN TXT {txt("v=DKIM1; p=" + RSA[:100] + " ", " " + RSA[100:300], chr(9) + RSA[300:])}\n'
            f"other._domainkey IN TXT {key_txt('v=DKIM1; p=', RSA_OTHER)}\n"
            f'revoked._domainkey IN TXT {txt("v=DKIM1; k=rsa; p=")}\n'
            # RFC 6376 3.6.1 tags that make receivers refuse a key that is ours
            f"sha1only._domainkey IN TXT {key_txt('v=DKIM1; h=sha1; k=rsa; p=', RSA)}\n"
            f"hashes._domainkey IN TXT {key_txt('v=DKIM1; h=sha1:sha256; k=rsa; p=', RSA)}\n"
            f"service._domainkey IN TXT {key_txt('v=DKIM1; s=tlsrpt; p=', RSA)}\n"
            f"testing._domainkey IN TXT {key_txt('v=DKIM1; t=y; future=1; p=', RSA)}\n"
            f"twice._domainkey IN TXT {key_txt('v=DKIM1; k=rsa; k=rsa; p=', RSA)}\n"
            f'_dmarc.sub2 IN TXT {txt("this is not a DMARC record")}\n'
            f'_dmarc.own IN TXT {txt("v=DMARC1; p=none; sp=reject")}\n')),
        "example.com": z("example.com", (
            f'_dmarc IN TXT {txt("v=DMARC1; p=quarantine; pct=50; adkim=s; aspf=s")}\n'
            f"sel._domainkey IN TXT {key_txt('v=DKIM1; p=', RSA)}\n"
            f"sel._domainkey.mail IN TXT {key_txt('v=DKIM1; p=', RSA)}\n")),
        "example.net": z("example.net", f'_dmarc IN TXT {txt("v=DMARC1; p=none")}\n'),
        "other.net": z("other.net", f"sel._domainkey IN TXT {key_txt('v=DKIM1; p=', RSA)}\n"),
        "norecord.net": z("norecord.net", "@ IN A 127.0.0.1\n"),
        "double.net": z("double.net", (
            f'_dmarc IN TXT {txt("v=DMARC1; p=reject")}\n'
            f'_dmarc IN TXT {txt("v=DMARC1; p=none")}\n')),
        "invalid.net": z("invalid.net", f'_dmarc IN TXT {txt("v=DMARC1; p=bogus")}\n'),
    }


class DropProxy:
    """UDP DNS forwarder to NSD that silently drops queries for names under `drop_suffix`, so
    the resolver times out on them. (Delegating a zone to a dead NS does not work here: dns_sync
    forwards with RD set, and libunbound in forwarding mode takes NSD's referral as the final,
    empty answer - NODATA, not a timeout.)"""

    def __init__(self, env, upstream, drop_suffix):
        self.upstream = upstream
        self.drop_suffix = drop_suffix
        self.dropped = []
        self.lock = threading.Lock()
        self.port = env.free_port([h.RELAY_IP], udp=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((h.RELAY_IP, self.port))
        self.stopping = False
        threading.Thread(target=self._serve, daemon=True).start()
        env.add_diagnostic(lambda: ("dns proxy", f"dropped: {self.dropped}"))

    @property
    def server(self):
        return f"{h.RELAY_IP}:{self.port}"

    @staticmethod
    def qname(packet):
        i, labels = 12, []
        while i < len(packet) and packet[i]:
            n = packet[i]
            labels.append(packet[i + 1:i + 1 + n].decode("ascii", "replace"))
            i += 1 + n
        return ".".join(labels).lower()

    def _serve(self):
        self.sock.settimeout(0.5)
        while not self.stopping:
            try:
                data, addr = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            name = self.qname(data)
            if name == self.drop_suffix or name.endswith("." + self.drop_suffix):
                with self.lock:
                    self.dropped.append(name)
                continue
            threading.Thread(target=self._forward, args=(data, addr), daemon=True).start()

    def _forward(self, data, addr):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as up:
            up.settimeout(3)
            up.sendto(data, self.upstream)
            try:
                self.sock.sendto(up.recvfrom(65535)[0], addr)
            except OSError:
                pass

    def stop(self):
        self.stopping = True
        self.sock.close()


def sig(d, s, a="rsa-sha256", p=RSA):
    return f"d={d},s={s},a={a},p={p}"


# name, From domain, MAIL FROM domain, SPF result, signatures,
# expected fields (exact), reason must contain, debug stderr must contain
ROWS = [
    # --- SPF alignment, relaxed (example.org: p=reject sp=quarantine, adkim/aspf default r)
    ("spf aligned relaxed", "example.org", "bounce.example.org", "pass", [],
     dict(verdict="pass", record_domain="example.org", p="r", sp="q", pct="100", adkim="r",
          aspf="r", spf_aligned="1", policy_to_apply="-"),
     ["SPF passes for bounce.example.org (aligned)"], None),
    ("spf and dkim unaligned", "example.org", "bounce.other.net", "pass", [sig("other.net", "sel")],
     dict(verdict="fail", policy_to_apply="r", spf_aligned="0", dkim_aligned_pass="0",
          **{"dkim0.key_matches": "1", "dkim0.aligned": "0"}),
     ["DMARC would fail for example.org: SPF passes for bounce.other.net (not aligned), "
      "DKIM d=other.net (not aligned); policy reject"], None),
    ("spf aligned but softfail", "example.org", "example.org", "softfail", [],
     dict(verdict="fail", spf_aligned="1", policy_to_apply="r"),
     ["SPF softfails for example.org (aligned)"], None),
    ("spf aligned but none", "example.org", "example.org", "none", [],
     dict(verdict="fail", spf="none"), ["no SPF record for example.org"], None),
    # --- DKIM: which published keys count
    ("dkim rsa aligned", "example.org", "bounce.other.net", "pass",
     [sig("other.net", "sel"), sig("example.org", "rsa1")],
     dict(verdict="pass", dkim_aligned_pass="1", spf_aligned="0",
          **{"dkim0.aligned": "0", "dkim1.key_matches": "1", "dkim1.aligned": "1"}),
     ["DKIM d=example.org s=rsa1 (aligned, key published)"], None),
    ("dkim relaxed signer subdomain", "example.org", "other.net", "fail",
     [sig("mail.example.org", "sel")],
     dict(verdict="pass", **{"dkim0.key_matches": "1", "dkim0.aligned": "1"}), [], None),
    ("dkim ed25519", "example.org", "other.net", "fail",
     [sig("example.org", "ed1", "ed25519-sha256", ED)],
     dict(verdict="pass", **{"dkim0.key_matches": "1", "dkim0.algorithm": "ed25519-sha256"}),
     [], None),
    ("dkim key with whitespace in p=", "example.org", "other.net", "fail",
     [sig("example.org", "spaced")],
     dict(verdict="pass", **{"dkim0.key_matches": "1"}), [], None),
    ("dkim key type differs", "example.org", "other.net", "fail",
     [sig("example.org", "ed1", "rsa-sha256", ED)],
     dict(verdict="fail", dkim_aligned_pass="0",
          **{"dkim0.key_matches": "0", "dkim0.aligned": "1",
             "dkim0.detail": "key at ed1._domainkey.example.org is k=ed25519, we sign with "
                             "rsa-sha256"}), [], None),
    ("dkim published key differs", "example.org", "other.net", "fail",
     [sig("example.org", "other")],
     dict(verdict="fail", policy_to_apply="r",
          **{"dkim0.key_matches": "0", "dkim0.aligned": "1",
             "dkim0.detail": "key published at other._domainkey.example.org differs from ours"}),
     ["DKIM d=example.org (aligned, but key published at other._domainkey.example.org "
      "differs from ours)"], None),
    ("dkim key revoked", "example.org", "other.net", "fail", [sig("example.org", "revoked")],
     dict(verdict="fail",
          **{"dkim0.key_matches": "0",
             "dkim0.detail": "key at revoked._domainkey.example.org is revoked (empty p=)"}),
     [], None),
    ("dkim key missing", "example.org", "other.net", "fail", [sig("example.org", "missing")],
     dict(verdict="fail",
          **{"dkim0.key_matches": "0",
             "dkim0.detail": "no key published at missing._domainkey.example.org"}),
     ["aligned, but no key published at missing._domainkey.example.org"], None),
    # kept upstream signatures (verified on arrival): RFC 7489 4.2, any aligned pass suffices
    ("kept upstream signature aligned", "example.org", "other.net", "fail",
     [sig("example.org", "platform") + ",u=1"],
     dict(verdict="pass", dkim_aligned_pass="1", **{"dkim0.key_matches": "1"}),
     ["DKIM d=example.org s=platform (aligned, kept upstream signature)"], None),
    ("kept upstream signature unaligned", "example.org", "other.net", "fail",
     [sig("other.net", "platform") + ",u=1"],
     dict(verdict="fail", dkim_aligned_pass="0", **{"dkim0.aligned": "0"}), [], None),
    ("ours fails, kept upstream passes", "example.org", "other.net", "fail",
     [sig("example.org", "other"), sig("mail.example.org", "platform") + ",u=1"],
     dict(verdict="pass", **{"dkim0.key_matches": "0", "dkim1.key_matches": "1"}),
     ["DKIM d=mail.example.org s=platform (aligned, kept upstream signature)"], None),
    ("dkim key allows only sha1", "example.org", "other.net", "fail",
     [sig("example.org", "sha1only")],
     dict(verdict="fail", **{"dkim0.key_matches": "0"}),
     ["allows only h=sha1, so receivers refuse our rsa-sha256 signature"], None),
    ("dkim key allows sha1 and sha256", "example.org", "other.net", "fail",
     [sig("example.org", "hashes")], dict(verdict="pass", **{"dkim0.key_matches": "1"}), [], None),
    ("dkim key for another service", "example.org", "other.net", "fail",
     [sig("example.org", "service")], dict(verdict="fail", **{"dkim0.key_matches": "0"}),
     ["is for service s=tlsrpt, not email"], None),
    ("dkim key in testing mode, unknown tag", "example.org", "other.net", "fail",
     [sig("example.org", "testing")], dict(verdict="pass", **{"dkim0.key_matches": "1"}), [],
     None),
    ("dkim key record with a tag twice", "example.org", "other.net", "fail",
     [sig("example.org", "twice")], dict(verdict="fail", **{"dkim0.key_matches": "0"}),
     ["is invalid: a tag appears twice"], None),
    # --- strict (example.com: p=quarantine pct=50 adkim=s aspf=s). libopendmarc 1.4.2 calls
    # these aligned (visible in its debug line); the prediction must not.
    ("strict dkim subdomain signer", "example.com", "bounce.other.net", "pass",
     [sig("mail.example.com", "sel")],
     dict(verdict="fail", adkim="s", aspf="s", pct="50", policy_to_apply="q",
          dkim_aligned_pass="0", **{"dkim0.key_matches": "1", "dkim0.aligned": "0"}),
     ["policy quarantine (pct=50)"],
     "DKIM alignment fail here, libopendmarc said pass (adkim=s)"),
    ("strict spf subdomain", "example.com", "bounce.example.com", "pass", [],
     dict(verdict="fail", aspf="s", spf_aligned="0", policy_to_apply="q"),
     ["SPF passes for bounce.example.com (not aligned)"],
     "SPF alignment fail here, libopendmarc said pass (aspf=s)"),
    ("strict exact match", "Example.COM", "example.com", "pass", [sig("EXAMPLE.com", "sel")],
     dict(verdict="pass", from_domain="example.com", spf_aligned="1", dkim_aligned_pass="1",
          **{"dkim0.domain": "example.com", "dkim0.aligned": "1"}), [], None),
    # --- subdomain policy
    ("sp at org domain", "sub.example.org", "bounce.other.net", "pass", [sig("other.net", "sel")],
     dict(verdict="fail", record_domain="example.org", p="r", sp="q",
          applied_subdomain_policy="1", policy_to_apply="q"),
     ["subdomain policy quarantine"], None),
    ("sub relaxed pass", "sub.example.org", "bounce.example.org", "pass", [],
     dict(verdict="pass", record_domain="example.org", spf_aligned="1"), [], None),
    ("deep sub falls back to org", "a.b.example.org", "other.net", "fail", [],
     dict(verdict="fail", record_domain="example.org", policy_to_apply="q"), [], None),
    ("non-DMARC TXT at sub ignored", "sub2.example.org", "other.net", "fail", [],
     dict(verdict="fail", record_domain="example.org", applied_subdomain_policy="1"), [], None),
    ("record at the sub itself", "own.example.org", "other.net", "fail", [],
     dict(verdict="fail", record_domain="own.example.org", p="n", sp="r",
          applied_subdomain_policy="0", policy_to_apply="n"), ["; policy none"], None),
    ("sub without sp gets p", "sub.example.com", "other.net", "fail", [],
     dict(verdict="fail", record_domain="example.com", sp="-", applied_subdomain_policy="0",
          policy_to_apply="q"), [], None),
    # --- p values and absent/broken policies
    ("p=none", "example.net", "other.net", "fail", [],
     dict(verdict="fail", p="n", policy_to_apply="n"), ["; policy none"], None),
    ("no record", "norecord.net", "other.net", "fail", [],
     dict(verdict="none", record_domain="", p="-", sp="-", policy_to_apply="-"),
     ["no DMARC policy for norecord.net: no record at _dmarc.norecord.net"], None),
    ("no record at sub nor org", "sub.norecord.net", "other.net", "fail", [],
     dict(verdict="none", record_domain=""),
     ["no record at _dmarc.sub.norecord.net nor at _dmarc.norecord.net"], None),
    ("two records", "double.net", "double.net", "fail", [],
     dict(verdict="none", record_domain=""), ["2 DMARC records at _dmarc.double.net"], None),
    ("invalid record", "invalid.net", "invalid.net", "fail", [],
     dict(verdict="none", record_domain="", p="-"),
     ["the DMARC record at _dmarc.invalid.net is invalid"], None),
    # --- temporary errors
    ("spf temperror aligned", "example.org", "example.org", "temperror", [],
     dict(verdict="temperror", policy_to_apply="-"), ["cannot be predicted now"], None),
    ("spf temperror unaligned", "example.org", "other.net", "temperror", [],
     dict(verdict="fail"), [], None),
    ("dmarc lookup times out", "dead.example.org", "bounce.example.org", "pass", [],
     dict(verdict="temperror", record_domain="", p="-"),
     ["DMARC for dead.example.org cannot be predicted now: temporary DNS failure looking up "
      "_dmarc.dead.example.org"], None),
    ("aligned key lookup times out", "example.org", "other.net", "fail",
     [sig("dead.example.org", "sel")],
     dict(verdict="temperror", **{"dkim0.key_matches": "-1", "dkim0.aligned": "1"}),
     ["temporary DNS failure looking up sel._domainkey.dead.example.org"], None),
    ("key timeout does not matter when another passes", "example.org", "other.net", "fail",
     [sig("dead.example.org", "sel"), sig("example.org", "rsa1")],
     dict(verdict="pass", **{"dkim0.key_matches": "-1", "dkim1.key_matches": "1"}), [], None),
]


def parse(stdout):
    fields = {}
    for line in stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key] = value
    return fields


def run_row(tool, server, row):
    name, frm, mailfrom, spf, sigs, want, reason_parts, debug_part = row
    argv = [tool, server, frm, mailfrom, spf] + sigs
    started = time.monotonic()
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT_BOUND)
    except subprocess.TimeoutExpired:
        return [f"{name}: dmarc_eval took longer than {TIMEOUT_BOUND}s"]
    took = time.monotonic() - started
    errors = []
    if r.returncode != 0:
        errors.append(f"{name}: dmarc_eval exited {r.returncode}: {r.stderr[-1500:]}")
    for line in h.sanitizer_summary(r.stderr):
        errors.append(f"{name}: sanitizer: {line}")
    got = parse(r.stdout)
    for key, value in want.items():
        if got.get(key) != value:
            errors.append(f"{name}: {key} is {got.get(key)!r}, expected {value!r}")
    for part in reason_parts:
        if part not in got.get("reason", ""):
            errors.append(f"{name}: reason {got.get('reason')!r} lacks {part!r}")
    if debug_part and debug_part not in r.stderr:
        errors.append(f"{name}: debug output lacks {debug_part!r}:\n{r.stderr[-1500:]}")
    h.log(f"{'ok  ' if not errors else 'FAIL'} {name} ({took:.1f}s): {got.get('verdict')} - "
          f"{got.get('reason')}")
    return errors


def test(env):
    tools = os.environ.get("OUTRELAY_TOOLS", "")
    tool = os.path.join(tools, "dmarc_eval")
    h.check(os.access(tool, os.X_OK), f"dmarc_eval not built: {tool!r} (OUTRELAY_TOOLS)")
    nsd = h.Nsd(env, zones=zones())
    proxy = DropProxy(env, (nsd.ip, nsd.port), DEAD_SUFFIX)
    try:
        # Sanity of the test world itself: NSD serves the split key, the proxy drops.
        h.check("".join(nsd.query("rsa1._domainkey.example.org", "TXT")[0].split('"')[1::2])
                == "v=DKIM1; k=rsa; p=" + RSA, "NSD does not serve the joined RSA key record")
        # Rows run concurrently: the timeout rows each wait for libunbound to give up (~20s).
        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
            results = list(pool.map(lambda row: run_row(tool, proxy.server, row), ROWS))
        # The same prediction from 8 threads at once (shared cache, per-call libopendmarc
        # contexts) must agree with the single-threaded one.
        r = subprocess.run([tool, proxy.server, "example.org", "bounce.other.net", "pass",
                            sig("other.net", "sel"), sig("example.org", "rsa1")],
                           capture_output=True, text=True, timeout=TIMEOUT_BOUND,
                           env=dict(os.environ, DMARC_EVAL_THREADS="8"))
        got = parse(r.stdout)
        h.log(f"8 threads x 20 predictions: threads_consistent={got.get('threads_consistent')}")
        h.check(r.returncode == 0 and got.get("threads_consistent") == "1"
                and got.get("verdict") == "pass" and not h.sanitizer_summary(r.stderr),
                lambda: f"threaded predictions disagree or crashed: rc {r.returncode}, "
                        f"{got}, {r.stderr[-1500:]}")
    finally:
        proxy.stop()
    errors = [e for errs in results for e in errs]
    h.check(any(n.endswith(DEAD_SUFFIX) for n in proxy.dropped),
            "the proxy never dropped a query: the timeout rows did not time out")
    h.check(not errors, lambda: f"{len(errors)} problem(s) in the DMARC matrix:\n  "
            + "\n  ".join(errors))


if __name__ == "__main__":
    h.main(test)
