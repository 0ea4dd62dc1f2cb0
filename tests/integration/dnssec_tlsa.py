"""dnssec_tlsa.py - proves the DNSSEC-validating resolver (dns/dns.c, dns/dns_sync.c) and the
TLSA record parser (RFC 6698) against NSD serving a zone signed in the test (ldns-keygen and
ldns-signzone), through tests/tools/dns_lookup, which asks the event-loop resolver and the
workers' blocking one and prints what each got.

With the zone's DS as trust anchor (dns.trust_anchor): its TLSA records come back secure with
their usage, selector, matching type and data, several per name; its missing names come back
NXDOMAIN, proven secure by NSEC; the same TLSA in an unsigned zone comes back insecure; a TLSA
record edited after signing comes back bogus, as a temporary failure with no records. With the
DS of another key every answer of the zone is bogus (the anchor is really used). Without an
anchor everything is insecure data, as before DNSSEC validation existed (RFC 4035 4.3).

Then the relay itself with dns.trust_anchor: while the anchor file holds the other key's DS, mail
to the signed domain stays queued (deferred, the reason saying the MX answer was bogus) and mail to
an unsigned domain is delivered; with the zone's own DS after a restart the queued message is
delivered to the signed domain's MX (mail.secure.test, a host without TLSA records: secure
NODATA, so no DANE; DANE itself is proven by dane_mx.py).
"""
import os
import subprocess

import harness as h

EE = "0123456789abcdef" * 4           # a SHA-256 of a SubjectPublicKeyInfo (DANE-EE 3 1 1)
TA = "fedcba9876543210" * 4           # a SHA-256 of a CA certificate (DANE-TA 2 0 1)
FULL = "3082" + "00" * 40 + "ff"       # exact match data of odd length (DANE-EE 3 0 0)
FORGED = "aa" * 32


def secure_zone():
    return h.zone_text("secure.test", (
        f"@ IN MX 10 mail\nmail IN A {h.MX_EXAMPLE_NET}\nmx IN A {h.MX_EXAMPLE_NET}\n"
        f"_25._tcp.mx IN TLSA 3 1 1 {EE}\n"
        f"_25._tcp.mx IN TLSA 2 0 1 {TA}\n"
        f"_25._tcp.full IN TLSA 3 0 0 {FULL}\n"
        f"_25._tcp.forged IN TLSA 3 1 1 {EE}\n"))


def plain_zone():
    return h.zone_text("plain.test", f"@ IN MX 10 mx\nmx IN A 127.0.0.31\n"
                                     f"_25._tcp.mx IN TLSA 3 1 1 {EE}\n")


def lookup(env, nsd, anchor, name, rtype):
    """{resolver: (security, status, error, [records])} for "loop" and "sync"."""
    tool = os.path.join(env.tools, "dns_lookup")
    r = subprocess.run([tool, nsd.server, anchor or "-", name, rtype], capture_output=True,
                       text=True, timeout=60)
    h.check(r.returncode == 0, f"dns_lookup {name} {rtype}: status {r.returncode}\n{r.stderr}")
    h.check("runtime error" not in r.stderr and "Sanitizer" not in r.stderr, r.stderr)
    out = {}
    for line in r.stdout.splitlines():
        who, kind, *rest = line.split("\t")
        if kind == "record":
            out[who][3].append(rest[0])
        else:
            out[who] = (kind, rest[0], rest[1], [])
    h.check(set(out) == {"loop", "sync"}, f"dns_lookup printed {r.stdout!r}")
    return out


def expect(env, nsd, anchor, name, rtype, security, status, records=None, error=None):
    got = lookup(env, nsd, anchor, name, rtype)
    for who, (sec, st, err, recs) in got.items():
        what = f"{who} resolver, {name} {rtype}, anchor {anchor or 'none'}: got {got[who]}"
        h.check(sec == security, f"{what}: security is not {security}")
        h.check(st == status, f"{what}: status is not {status}")
        if records is not None:
            h.check(sorted(recs) == sorted(records), f"{what}: records are not {records}")
        if error is not None:
            h.check(error in err, f"{what}: error does not say {error!r}")
    used = os.path.basename(anchor) if anchor else "none"
    h.log(f"{name} {rtype} (anchor {used}): {security} {status}")


def test(env):
    signed = h.dnssec_sign(env, "secure.test", secure_zone())
    h.check(f"3 1 1 {EE}" in signed.text, "the signed zone does not hold the TLSA record as given")
    # the signature of _25._tcp.forged no longer matches its data
    lines = signed.text.splitlines(keepends=True)
    edited = [i for i, l in enumerate(lines)
              if l.startswith("_25._tcp.forged.secure.test.") and "\tTLSA\t" in l]
    h.check(len(edited) == 1, f"forged TLSA lines in the signed zone: {edited}")
    lines[edited[0]] = lines[edited[0]].replace(EE, FORGED)
    h.check(FORGED in lines[edited[0]], "the forged TLSA record was not edited")
    zones = h.default_zones()
    zones.update({"secure.test": "".join(lines), "plain.test": plain_zone()})
    nsd = h.Nsd(env, zones)
    anchor = signed.write_anchor(env.path("secure.test.ds"))
    other = h.dnssec_sign(env, "secure.test", secure_zone())
    h.check(other.ds != signed.ds, "two keys made the same DS")
    wrong = other.write_anchor(env.path("other.ds"))

    # with the anchor: the signed zone is secure, field by field
    expect(env, nsd, anchor, "_25._tcp.mx.secure.test", "TLSA", "secure", "ok",
           [f"3 1 1 {EE}", f"2 0 1 {TA}"])
    expect(env, nsd, anchor, "_25._tcp.full.secure.test", "TLSA", "secure", "ok",
           [f"3 0 0 {FULL}"])
    expect(env, nsd, anchor, "mx.secure.test", "A", "secure", "ok", [h.MX_EXAMPLE_NET])
    expect(env, nsd, anchor, "_25._tcp.nothere.secure.test", "TLSA", "secure", "NXDOMAIN", [])
    # outside the anchored zone: data, but insecure
    expect(env, nsd, anchor, "_25._tcp.mx.plain.test", "TLSA", "insecure", "ok", [f"3 1 1 {EE}"])
    # a record changed after signing: bogus, a temporary failure, no data
    expect(env, nsd, anchor, "_25._tcp.forged.secure.test", "TLSA", "bogus",
           "temporary failure", [], error="bogus")
    # an anchor that is not the zone's key: nothing in the zone validates
    expect(env, nsd, wrong, "_25._tcp.mx.secure.test", "TLSA", "bogus", "temporary failure", [])
    expect(env, nsd, wrong, "mx.secure.test", "A", "bogus", "temporary failure", [])
    # without an anchor: everything is insecure data, as before
    expect(env, nsd, None, "_25._tcp.mx.secure.test", "TLSA", "insecure", "ok",
           [f"3 1 1 {EE}", f"2 0 1 {TA}"])
    expect(env, nsd, None, "_25._tcp.forged.secure.test", "TLSA", "insecure", "ok",
           [f"3 1 1 {FORGED}"])
    expect(env, nsd, None, "_25._tcp.mx.plain.test", "TLSA", "insecure", "ok", [f"3 1 1 {EE}"])

    relay_with_anchor(env, nsd, signed, other)


def relay_with_anchor(env, nsd, signed, other):
    h.need_binary(env)
    port = env.free_port([h.MX_EXAMPLE_NET, h.MX_EXAMPLE_COM])
    secure_mx = h.PySink(env, h.MX_EXAMPLE_NET, port, "secure")
    plain_mx = h.PySink(env, h.MX_EXAMPLE_COM, port, "plain")
    anchor = other.write_anchor(env.path("relay-anchor.ds"))  # not the zone's key
    cfg = h.standard_config(env, nsd, port)
    cfg["dns"]["trust_anchor"] = anchor
    relay = h.Relay(env, cfg)
    for rcpt in ("b@secure.test", "c@plain.test"):
        res = h.send(relay.host, relay.port, "a@example.org", [rcpt],
                     h.make_message("a@example.org", rcpt, f"to {rcpt}"))
        h.check(res.accepted, f"{rcpt} not accepted: {res}")
    env.wait_for(lambda: plain_mx.messages(), 30, "delivery to the unsigned domain")
    env.wait_for(lambda: relay.events("SELECT 1 FROM events WHERE event='deferred' "
                                      "AND recipient='b@secure.test'"), 30,
                 "the signed domain's mail deferred")
    rows = relay.events("SELECT event, reply_text FROM events WHERE recipient='b@secure.test'")
    h.check(not [r for r in rows if r["event"] in ("delivered", "bounced")],
            f"mail to the signed domain finished under a wrong anchor: {rows}")
    deferred = [r for r in rows if r["event"] == "deferred"]
    h.check(all("bogus" in (r["reply_text"] or "") for r in deferred),
            f"the deferral does not say the answer was bogus: {deferred}")
    h.check(not secure_mx.messages(), "the signed domain's MX got mail under a wrong anchor")

    signed.write_anchor(anchor)  # the zone's own DS
    relay.restart()
    env.wait_for(lambda: secure_mx.messages(), 30, "delivery once the anchor is the zone's")
    h.check(len(plain_mx.messages()) == 1, "the unsigned domain's mail was sent twice")
    relay.stop()


if __name__ == "__main__":
    h.main(test)
