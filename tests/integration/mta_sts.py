"""mta_sts.py - MTA-STS (RFC 8461) for direct delivery, against real servers on loopback: NSD
serving _mta-sts TXT records, the MXs and the policy hosts (TTL 1, so a changed zone is seen at
once), two HTTPS servers (Python http.server + ssl, a certificate of the test CA, which the relay
trusts through mta_sts.ca_file) serving the policies and logging every fetch, and TLS sinks.

Phase 1 (policy host A serves enf.test and nomatch.test, B the rest):
  enf.test      enforce, mx.enf.test in the patterns, certificate for it: delivered over TLS,
                the record's tls_policy_source mta-sts, policy domain and string filled
  nomatch.test  enforce, the MX is not in the patterns: queued (4.7.5), nothing delivered
  badcert.test  enforce, the MX's certificate names another host: deferred 4.7.5,
                tls_failure certificate-host-mismatch, nothing delivered
  testing.test  testing, the same wrong certificate: delivered (after the failed handshake, in
                plaintext), the failure recorded (certificate-host-mismatch, source mta-sts)
  down.test     TXT published, the policy host refuses connections, nothing cached: delivered
                as without MTA-STS, tls_failure sts-policy-fetch-error
  gone.test     TXT published, the policy host answers 404: two messages, on two connections
                (the first connection idles out in between): delivered both, and the policy host
                asked once (a failed fetch is not repeated for the same id for a few minutes)
Phase 2 (zones changed, policy host A stopped):
  testing.test  TXT id changed and the policy now enforce: B's log shows the second fetch and
                the next message to the wrong certificate is deferred instead of delivered
  enf.test      TXT id changed, MX now mx2.enf.test (a plain sink, not in the patterns), A down:
                the refetch fails, the cached enforce policy holds: nothing delivered
Phase 3: the relay restarted (A still down): the policy kept in STATE/mta-sts/ still holds for a
new message to enf.test.
"""
import os
import sys
import time

import harness as h

MX_ENF = "127.0.0.140"
MX_NOMATCH = "127.0.0.141"
MX_BAD = "127.0.0.142"
MX_TESTING = "127.0.0.143"
MX_DOWN = "127.0.0.144"
MX_ENF2 = "127.0.0.145"
HTTPS_A = "127.0.0.146"
HTTPS_B = "127.0.0.147"
HTTPS_DEAD = "127.0.0.148"   # nothing listens here

SERVER = r'''
import http.server, ssl, sys, os
ip, port, cert, key, root, log = sys.argv[1:7]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        host = (self.headers.get("Host") or "").split(":")[0]
        with open(log, "a") as fh:
            fh.write(f"{host} {self.path}\n")
        path = os.path.join(root, host)
        if self.path != "/.well-known/mta-sts.txt" or not os.path.exists(path):
            self.send_error(404)
            return
        body = open(path, "rb").read()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
srv = http.server.HTTPServer((ip, int(port)), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print("serving", flush=True)
srv.serve_forever()
'''


def sts_zone(domain, mx_name, mx_ip, sts_ip, sts_id):
    return (f"$ORIGIN {domain}.\n$TTL 1\n"
            f"@ IN SOA ns1.{domain}. hostmaster.{domain}. ( 1 3600 600 86400 1 )\n"
            f"@ IN NS ns1\nns1 IN A 127.0.0.1\n"
            f"@ IN MX 10 {mx_name}\n{mx_name} IN A {mx_ip}\n"
            f"mta-sts IN A {sts_ip}\n"
            f'_mta-sts IN TXT "v=STSv1; id={sts_id};"\n')


def policy(mode, *mx, max_age=86400):
    return ("version: STSv1\r\n" f"mode: {mode}\r\n"
            + "".join(f"mx: {m}\r\n" for m in mx) + f"max_age: {max_age}\r\n")


class PolicyServer:
    def __init__(self, env, name, ip, port, cert):
        self.root = env.mkdir(f"policies-{name}")
        self.log = env.path(f"https-{name}.log")
        open(self.log, "a").close()
        script = env.path("sts_https.py")
        with open(script, "w") as fh:
            fh.write(SERVER)
        self.proc = h.Proc(env, f"https[{name}]", [sys.executable, script, ip, port, cert["cert"],
                           cert["key"], self.root, self.log], env.path(f"https-{name}.stdout"))
        env.wait_for(lambda: h.is_listening(ip, port), 15, f"HTTPS server {name} on {ip}:{port}")

    def put(self, domain, text):
        with open(os.path.join(self.root, f"mta-sts.{domain}"), "w") as fh:
            fh.write(text)

    def fetches(self, domain):
        return [l for l in open(self.log).read().splitlines() if l.startswith(f"mta-sts.{domain} ")]


def rows(relay, event, rcpt):
    return relay.events("SELECT * FROM events WHERE event = ? AND recipient = ? ORDER BY ts_us",
                        (event, rcpt))


def send(relay, rcpt, tag):
    res = h.send(relay.host, relay.port, "alice@example.org", [rcpt],
                 h.make_message("alice@example.org", rcpt, "mta-sts", message_id=f"<{tag}>"))
    h.check(res.accepted, f"relay refused the message to {rcpt}: {res}")


def got(sink, tag):
    return [m for m in sink.messages() if m.message_id == f"<{tag}>"]


def test(env):
    h.need_binary(env)
    tls_dir = env.path("tls")
    certs = {
        "enf": h.make_ca_and_cert(tls_dir, ["mx.enf.test"], prefix="enf"),
        "nomatch": h.make_ca_and_cert(tls_dir, ["mx.nomatch.test"], prefix="nomatch"),
        "bad": h.make_ca_and_cert(tls_dir, ["mx.elsewhere.test"], prefix="bad"),
        "down": h.make_ca_and_cert(tls_dir, ["mx.down.test"], prefix="down"),
        "https": h.make_ca_and_cert(tls_dir, [f"mta-sts.{d}.test" for d in
                                              ("enf", "nomatch", "badcert", "testing", "down",
                                               "gone")],
                                    prefix="https"),
    }
    ca = certs["enf"]["ca"]

    def zones(phase):
        z = h.default_zones()
        z["enf.test"] = (sts_zone("enf.test", "mx", MX_ENF, HTTPS_A, "1") if phase == 1 else
                         sts_zone("enf.test", "mx2", MX_ENF2, HTTPS_A, "2"))
        z["nomatch.test"] = sts_zone("nomatch.test", "mx", MX_NOMATCH, HTTPS_A, "1")
        z["badcert.test"] = sts_zone("badcert.test", "mx", MX_BAD, HTTPS_B, "1")
        z["testing.test"] = sts_zone("testing.test", "mx", MX_BAD, HTTPS_B, str(phase))
        z["down.test"] = sts_zone("down.test", "mx", MX_DOWN, HTTPS_DEAD, "1")
        z["gone.test"] = sts_zone("gone.test", "mx", MX_DOWN, HTTPS_B, "1")
        return z

    nsd = h.Nsd(env, zones=zones(1))
    https_port = env.free_port([HTTPS_A, HTTPS_B, HTTPS_DEAD])
    mx_port = env.free_port([MX_ENF, MX_NOMATCH, MX_BAD, MX_TESTING, MX_DOWN, MX_ENF2])
    server_a = PolicyServer(env, "a", HTTPS_A, https_port, certs["https"])
    server_b = PolicyServer(env, "b", HTTPS_B, https_port, certs["https"])
    server_a.put("enf.test", policy("enforce", "mx.enf.test", "*.backup.enf.test"))
    server_a.put("nomatch.test", policy("enforce", "other.nomatch.test"))
    server_b.put("badcert.test", policy("enforce", "mx.badcert.test"))
    server_b.put("testing.test", policy("testing", "*.testing.test"))

    enf_sink = h.PySink(env, MX_ENF, mx_port, "enf", tls=certs["enf"])
    nomatch_sink = h.PySink(env, MX_NOMATCH, mx_port, "nomatch", tls=certs["nomatch"])
    bad_sink = h.PySink(env, MX_BAD, mx_port, "bad", tls=certs["bad"])
    down_sink = h.PySink(env, MX_DOWN, mx_port, "down", tls=certs["down"])
    enf2_sink = h.PySink(env, MX_ENF2, mx_port, "enf2")

    cfg = h.standard_config(env, nsd, mx_port,
                            mta_sts={"ca_file": ca, "port": https_port, "fetch_timeout": "5s"})
    relay = h.Relay(env, cfg)

    # --- phase 1 -------------------------------------------------------------------------------
    for rcpt, tag in (("u@enf.test", "enf-1"), ("u@nomatch.test", "nomatch-1"),
                      ("u@badcert.test", "badcert-1"), ("u@testing.test", "testing-1"),
                      ("u@down.test", "down-1")):
        send(relay, rcpt, tag)

    m = env.wait_for(lambda: got(enf_sink, "enf-1"), 60,
                     lambda: f"delivery to enf.test; {relay.history('u@enf.test')}")[0]
    h.check(m.tls_version, f"enforce policy delivered without TLS: {m}")
    r = env.wait_for(lambda: rows(relay, "delivered", "u@enf.test"), 15, "enf.test delivered row")
    r = r[0]
    h.check((r.get("tls_policy"), r.get("tls_policy_source")) == ("verify", "mta-sts"),
            f"enf.test delivered row: policy {r.get('tls_policy')} from "
            f"{r.get('tls_policy_source')}, expected verify from mta-sts: {r}")
    h.check(r.get("tls_policy_domain") == "enf.test"
            and "mode: enforce" in (r.get("tls_policy_string") or "")
            and "mx: *.backup.enf.test" in (r.get("tls_policy_string") or ""),
            f"enf.test delivered row lacks the policy domain/string: {r}")
    h.check(not r.get("tls_failure"), f"enf.test delivered row has a tls_failure: {r}")
    h.log("enforce + matching certificate: delivered over TLS, source mta-sts")

    m = env.wait_for(lambda: got(down_sink, "down-1"), 60,
                     lambda: f"delivery to down.test; {relay.history('u@down.test')}")[0]
    r = env.wait_for(lambda: rows(relay, "delivered", "u@down.test"), 15, "down.test row")[0]
    h.check(r.get("tls_failure") == "sts-policy-fetch-error"
            and r.get("tls_policy_source") == "egress",
            f"down.test delivered row should carry sts-policy-fetch-error from the egress "
            f"policy: {r}")
    h.log("policy host unreachable, nothing cached: delivered as before, fetch error recorded")

    m = env.wait_for(lambda: got(bad_sink, "testing-1"), 60,
                     lambda: f"delivery to testing.test; {relay.history('u@testing.test')}")[0]
    r = env.wait_for(lambda: rows(relay, "delivered", "u@testing.test"), 15, "testing row")[0]
    h.check(r.get("tls_failure") == "certificate-host-mismatch"
            and r.get("tls_policy_source") == "mta-sts"
            and r.get("tls_policy_domain") == "testing.test",
            f"testing.test delivered row should record the certificate failure under the "
            f"mta-sts policy: {r}")
    h.log("testing + wrong certificate: delivered, certificate-host-mismatch recorded")

    # a policy host that answers 404: asked once, not once per connection
    for n in (1, 2):
        send(relay, f"u{n}@gone.test", f"gone-{n}")
        env.wait_for(lambda: got(down_sink, f"gone-{n}"), 60,
                     lambda: f"delivery to gone.test; {relay.history(f'u{n}@gone.test')}")
        r = env.wait_for(lambda: rows(relay, "delivered", f"u{n}@gone.test"), 15, "gone row")[0]
        h.check(r.get("tls_failure") == "sts-policy-fetch-error",
                f"gone.test delivery {n} should carry sts-policy-fetch-error: {r}")
        if n == 1:
            time.sleep(3)  # the connection idles out (2 s): the second message opens a new one
    h.check(len(server_b.fetches("gone.test")) == 1,
            f"the failed policy of gone.test was fetched {len(server_b.fetches('gone.test'))} "
            "times for the same id, expected once")
    h.log("policy host answering 404: two connections, one fetch, both delivered")

    def deferred(rcpt, text):
        return env.wait_for(
            lambda: [d for d in rows(relay, "deferred", rcpt) if text in (d.get("reply_text") or "")],
            30, lambda: f"a deferred row with '{text}' for {rcpt}: {relay.history(rcpt)}")[0]

    d = deferred("u@nomatch.test", "matches its MTA-STS policy")
    h.check(d.get("enhanced_code") == "4.7.5", f"nomatch.test deferred with {d}")
    d = deferred("u@badcert.test", "mta-sts badcert.test: enforce")
    h.check(d.get("enhanced_code") == "4.7.5"
            and d.get("tls_failure") == "certificate-host-mismatch"
            and d.get("tls_policy_source") == "mta-sts",
            f"badcert.test deferred row: {d}")
    time.sleep(2)
    h.check(not got(nomatch_sink, "nomatch-1"), "enforce delivered to an MX outside its patterns")
    h.check(not got(bad_sink, "badcert-1"), "enforce delivered to a certificate for another name")
    h.log("enforce: MX outside the patterns queued; wrong certificate deferred 4.7.5")
    h.check(len(server_b.fetches("testing.test")) == 1,
            f"testing.test policy fetched {len(server_b.fetches('testing.test'))} times in "
            "phase 1, expected once (cached)")

    # --- phase 2: ids changed, A down --------------------------------------------------------
    server_b.put("testing.test", policy("enforce", "*.testing.test"))
    server_a.proc.stop()
    nsd.stop()
    nsd = h.Nsd(env, zones=zones(2), port=nsd.port)
    time.sleep(1.5)  # the TTL-1 answers of phase 1 expire in the relay's resolver
    send(relay, "u@testing.test", "testing-2")
    d = deferred("u@testing.test", "mta-sts testing.test: enforce")
    h.check(d.get("tls_failure") == "certificate-host-mismatch", f"testing.test phase 2: {d}")
    h.check(len(server_b.fetches("testing.test")) == 2,
            f"the changed id did not refetch: B's log {server_b.fetches('testing.test')}")
    h.log("changed id: refetched (second fetch in the server's log), the new enforce applies")

    send(relay, "u@enf.test", "enf-2")
    deferred("u@enf.test", "matches its MTA-STS policy")
    time.sleep(2)
    h.check(not got(enf2_sink, "enf-2"), "a failed refetch dropped the cached enforce policy")
    h.check(not got(bad_sink, "testing-2"), "testing.test delivered under the new enforce")
    h.log("policy host down, id changed: the cached enforce policy still holds")

    # --- phase 3: restart ----------------------------------------------------------------------
    h.check(os.path.exists(os.path.join(cfg["state"], "mta-sts", "enf.test")),
            "no policy file in STATE/mta-sts/")
    relay.restart()
    send(relay, "u@enf.test", "enf-3")
    time.sleep(4)
    h.check(not got(enf2_sink, "enf-3") and not got(enf2_sink, "enf-2"),
            "after a restart the cached enforce policy of enf.test was forgotten")
    d = [x for x in rows(relay, "deferred", "u@enf.test")
         if "matches its MTA-STS policy" in (x.get("reply_text") or "")]
    h.check(len(d) >= 2, f"enf.test not deferred by the kept policy after restart: {d}")
    h.log("restart: the policy kept in STATE/mta-sts/ still enforced with its host down")
    relay.stop()


if __name__ == "__main__":
    h.main(test)
