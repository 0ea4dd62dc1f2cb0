"""dane_mx.py - DANE for MX delivery (RFC 7672): the relay looks up the TLSA records of each MX
host in a DNSSEC-signed zone (signed in the test, its DS the relay's dns.trust_anchor) and lets
them decide TLS, over the egress's optional TLS. Three real sinks on loopback serve every MX
name (TLSA records belong to host names, so several names share a sink):
  S_EE  aiosmtpd with STARTTLS, a certificate for another name (wrong.name.test) from the test CA
  S_TA  aiosmtpd with STARTTLS, a certificate for mx.ta.dane.test plus the test CA in its chain
  S_PL  Postfix smtp-sink without STARTTLS
The relay trusts no CA (no tls_ca_file), so only DANE can authenticate a server.

  ee.dane.test        TLSA 3 1 1 of S_EE's key: delivered over TLS although the name is wrong
                      (DANE-EE ignores names, RFC 7672 section 3.1.1); policy verify, source dane
  ta.dane.test        TLSA 2 0 1 / 2 1 1 of the test CA: delivered (DANE-TA, name = MX host)
  bad.dane.test       TLSA 3 1 1 of S_TA's key, served by S_EE: deferred 4.7.5, tls_failure
                      tlsa-invalid, S_EE got nothing for it
  fallback.dane.test  MX 10 the bad host, MX 20 mx.ee: the second MX takes the mail
  notls.dane.test     TLSA 3 1 1, smtp-sink without STARTTLS: deferred 4.7.4, never plaintext
  unusable.dane.test  TLSA 1 1 1 and 0 0 1 only (PKIX usages, unusable for SMTP): TLS without
                      authentication (RFC 7672 section 2.2): delivered over TLS, policy encrypt
  unpl.dane.test      the same TLSA, smtp-sink without STARTTLS: deferred 4.7.4
  taname.dane.test    TLSA 2 0 1 of the test CA, served by S_TA whose certificate names
                      mx.ta.dane.test: deferred 4.7.5 certificate-host-mismatch (DANE-TA checks
                      the name, RFC 7672 section 3.2.2)
  bogus.dane.test     TLSA edited after signing: deferred with the reason, tls_failure
                      dnssec-invalid, nothing delivered
  insecure.test       unsigned zone, a non-matching TLSA: not used, delivered opportunistically
Every delivered or deferred row under DANE carries tls_policy_source dane, the recipient domain
as tls_policy_domain and the published TLSA RRset as tls_policy_string (RFC 8460 section 4.4).
"""
import hashlib
import subprocess
import time

import harness as h

S_EE = "127.0.0.60"
S_TA = "127.0.0.61"
S_PL = "127.0.0.62"
OTHER = "aa" * 32


def der(argv, path):
    r = subprocess.run(argv + ["-in", path, "-outform", "DER"], capture_output=True)
    h.check(r.returncode == 0, f"{argv} {path}: {r.stderr}")
    return r.stdout


def spki_sha256(cert):
    pem = subprocess.run(["openssl", "x509", "-in", cert, "-pubkey", "-noout"],
                         capture_output=True, check=True).stdout
    r = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=pem,
                       capture_output=True)
    h.check(r.returncode == 0, f"SPKI of {cert}: {r.stderr}")
    return hashlib.sha256(r.stdout).hexdigest()


def cert_sha256(cert):
    return hashlib.sha256(der(["openssl", "x509"], cert)).hexdigest()


def rows(relay, event, rcpt):
    return relay.events("SELECT * FROM events WHERE event = ? AND recipient = ?", (event, rcpt))


def test(env):
    h.need_binary(env)
    tls_dir = env.path("tls")
    ee_cert = h.make_ca_and_cert(tls_dir, ["wrong.name.test"], prefix="ee")
    ta_cert = h.make_ca_and_cert(tls_dir, ["mx.ta.dane.test"], prefix="ta")
    chain = env.path("tls", "ta-chain.pem")
    with open(chain, "w") as out:
        for p in (ta_cert["cert"], ta_cert["ca"]):
            with open(p) as fh:
                out.write(fh.read())
    ee_spki = spki_sha256(ee_cert["cert"])
    ta_spki = spki_sha256(ta_cert["cert"])
    ca_cert = cert_sha256(ta_cert["ca"])
    ca_spki = spki_sha256(ta_cert["ca"])

    body = (
        f"ee IN MX 10 mx.ee\nmx.ee IN A {S_EE}\n_25._tcp.mx.ee IN TLSA 3 1 1 {ee_spki}\n"
        f"ta IN MX 10 mx.ta\nmx.ta IN A {S_TA}\n_25._tcp.mx.ta IN TLSA 2 0 1 {ca_cert}\n"
        f"_25._tcp.mx.ta IN TLSA 2 1 1 {ca_spki}\n"
        f"bad IN MX 10 mx.bad\nmx.bad IN A {S_EE}\n_25._tcp.mx.bad IN TLSA 3 1 1 {ta_spki}\n"
        f"fallback IN MX 10 mx.bad\nfallback IN MX 20 mx.ee\n"
        f"notls IN MX 10 mx.notls\nmx.notls IN A {S_PL}\n"
        f"_25._tcp.mx.notls IN TLSA 3 1 1 {ee_spki}\n"
        f"unusable IN MX 10 mx.unusable\nmx.unusable IN A {S_TA}\n"
        f"_25._tcp.mx.unusable IN TLSA 1 1 1 {ta_spki}\n"
        f"_25._tcp.mx.unusable IN TLSA 0 0 1 {ca_cert}\n"
        f"unpl IN MX 10 mx.unpl\nmx.unpl IN A {S_PL}\n_25._tcp.mx.unpl IN TLSA 1 1 1 {ta_spki}\n"
        f"taname IN MX 10 mx.taname\nmx.taname IN A {S_TA}\n"
        f"_25._tcp.mx.taname IN TLSA 2 0 1 {ca_cert}\n"
        f"bogus IN MX 10 mx.bogus\nmx.bogus IN A {S_EE}\n"
        f"_25._tcp.mx.bogus IN TLSA 3 1 1 {ee_spki}\n")
    signed = h.dnssec_sign(env, "dane.test", h.zone_text("dane.test", body))
    lines = signed.text.splitlines(keepends=True)
    edited = [i for i, l in enumerate(lines)
              if l.startswith("_25._tcp.mx.bogus.dane.test.") and "\tTLSA\t" in l]
    h.check(len(edited) == 1 and ee_spki in lines[edited[0]].lower(),
            f"the bogus TLSA line in the signed zone: {[lines[i] for i in edited]}")
    lines[edited[0]] = lines[edited[0]].lower().replace(ee_spki, OTHER)
    zones = h.default_zones()
    zones["dane.test"] = "".join(lines)
    zones["insecure.test"] = h.zone_text(
        "insecure.test", f"@ IN MX 10 mx\nmx IN A {S_EE}\n_25._tcp.mx IN TLSA 3 1 1 {OTHER}\n")
    nsd = h.Nsd(env, zones)
    h.check(nsd.status("_25._tcp.mx.ee.dane.test", "TLSA") == "NOERROR", "NSD serves no TLSA")

    port = env.free_port([S_EE, S_TA, S_PL])
    s_ee = h.PySink(env, S_EE, port, "ee", tls=ee_cert)
    s_ta = h.PySink(env, S_TA, port, "ta", tls={"cert": chain, "key": ta_cert["key"]})
    s_pl = h.SmtpSink(env, S_PL, port, "plain")

    cfg = h.standard_config(env, nsd, port)
    cfg["dns"]["trust_anchor"] = signed.write_anchor(env.path("dane.test.ds"))
    relay = h.Relay(env, cfg)
    rcpts = ["u@ee.dane.test", "u@ta.dane.test", "u@bad.dane.test", "u@fallback.dane.test",
             "u@notls.dane.test", "u@unusable.dane.test", "u@unpl.dane.test",
             "u@taname.dane.test", "u@bogus.dane.test", "u@insecure.test"]
    for rcpt in rcpts:
        res = h.send(relay.host, relay.port, "alice@example.org", [rcpt],
                     h.make_message("alice@example.org", rcpt, "dane",
                                    message_id=f"<dane-{rcpt}>"))
        h.check(res.accepted, f"relay refused the message to {rcpt}: {res}")

    def got(sink, rcpt):
        return [m for m in sink.messages() if m.message_id == f"<dane-{rcpt}>"]

    # --- delivered --------------------------------------------------------------------------
    delivered = {"u@ee.dane.test": (s_ee, "verify", "3 1 1"),
                 "u@ta.dane.test": (s_ta, "verify", "2 0 1"),
                 "u@fallback.dane.test": (s_ee, "verify", None),
                 "u@unusable.dane.test": (s_ta, "encrypt", "1 1 1"),
                 "u@insecure.test": (s_ee, "may", None)}
    for rcpt, (sink, level, tlsa) in delivered.items():
        m = env.wait_for(lambda: got(sink, rcpt), 60,
                         lambda: f"delivery to {rcpt}; records.db: {relay.history(rcpt)}")[0]
        h.check(m.tls_version, f"{rcpt} was delivered without TLS: {m}")
        r = env.wait_for(lambda: rows(relay, "delivered", rcpt), 15, f"delivered row of {rcpt}")[0]
        want_source = "egress" if rcpt.endswith("insecure.test") else "dane"
        h.check((r.get("tls_policy"), r.get("tls_policy_source")) == (level, want_source),
                f"delivered row of {rcpt}: policy {r.get('tls_policy')} source "
                f"{r.get('tls_policy_source')}, expected {level} {want_source}: {r}")
        if want_source == "dane":
            domain = rcpt.split("@")[1]
            h.check(r.get("tls_policy_domain") == domain,
                    f"{rcpt}: tls_policy_domain is not {domain}: {r}")
        if tlsa:
            h.check(tlsa in (r.get("tls_policy_string") or ""),
                    f"{rcpt}: the policy string does not hold TLSA {tlsa}: {r}")
        h.log(f"{rcpt}: delivered over {m.tls_version}, policy {level} ({want_source})")
    r = rows(relay, "delivered", "u@fallback.dane.test")[0]
    h.check(r.get("remote_mx") == "mx.ee.dane.test",
            f"the fallback domain's mail did not go to its second MX: {r}")
    r = rows(relay, "delivered", "u@insecure.test")[0]
    h.check(not r.get("tls_policy_string"), f"an insecure TLSA made a policy: {r}")

    # --- deferred: the row says why, the sinks got nothing -----------------------------------
    deferred = {"u@bad.dane.test": ("4.7.5", "tlsa-invalid", "TLSA"),
                "u@notls.dane.test": ("4.7.4", "starttls-not-supported", "DANE"),
                "u@unpl.dane.test": ("4.7.4", "starttls-not-supported", "none usable"),
                "u@taname.dane.test": ("4.7.5", "certificate-host-mismatch", "hostname mismatch"),
                "u@bogus.dane.test": ("4.7.5", "dnssec-invalid", "bogus")}
    for rcpt, (enhanced, failure, words) in deferred.items():
        d = env.wait_for(lambda: rows(relay, "deferred", rcpt), 30,
                         lambda: f"a deferred row for {rcpt}; records.db: {relay.history(rcpt)}")[0]
        h.check(d.get("enhanced_code") == enhanced,
                f"{rcpt} deferred with {d.get('enhanced_code')}, expected {enhanced}: {d}")
        h.check(d.get("tls_failure") == failure,
                f"{rcpt}: tls_failure {d.get('tls_failure')}, expected {failure}: {d}")
        h.check(words in (d.get("reply_text") or ""),
                f"{rcpt}: the deferral does not say {words!r}: {d}")
        h.log(f"{rcpt}: deferred {enhanced} {failure}: {d.get('reply_text')}")
    d = rows(relay, "deferred", "u@notls.dane.test")[0]
    h.check(d.get("tls_policy_source") == "dane", f"notls deferral not under DANE: {d}")

    time.sleep(2.5)  # retries (1s, 2s) must not change the outcome
    for rcpt in deferred:
        for sink in (s_ee, s_ta):
            h.check(not got(sink, rcpt), f"{rcpt} was delivered to {sink.name}")
        leaked = [m for m in s_pl.messages(settle=0) if m.message_id == f"<dane-{rcpt}>"]
        h.check(not leaked, f"{rcpt} was delivered in plaintext: {leaked}")
        final = relay.events("SELECT * FROM events WHERE event IN ('delivered','bounced',"
                             "'expired') AND recipient = ?", (rcpt,))
        h.check(not final, f"{rcpt} should stay queued, records.db says: {final}")
    q = relay.queue("list")
    h.check(q.returncode == 0 and all(r.split("@")[1] in q.stdout for r in deferred),
            f"queue list does not show the held recipients:\n{q.stdout}{q.stderr}")
    log = relay.stderr()
    for host, tlsa in (("mx.ee.dane.test", "3 1 1"), ("mx.ta.dane.test", "2 ")):
        h.check(f"{host}[" in log and f"DANE authenticated by TLSA {tlsa}" in log,
                f"the log does not say which TLSA record authenticated {host}")
    relay.stop()


if __name__ == "__main__":
    h.main(test)
