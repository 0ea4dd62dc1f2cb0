"""operator_commands.py - the commands an administrator types, against real DNS and a running
relay:

  dns-advice   with one DKIM key published and one not, SPF covering legacy but not cloud and
               no DMARC record, it names each problem (and what to publish) and exits 1; once
               DNS holds everything it says "0 problems found" and exits 0; pointed at a
               DNS server address where nothing listens it says within seconds that the
               resolver did not answer, never that a record is not published
  queue        show, hold (a held message is not delivered), release, delete (never
               delivered, no bounce), flush (a deferred message goes now)
  listeners    `tls: implicit` speaks TLS from the first byte; `tls: required` refuses MAIL
               before STARTTLS
"""
import smtplib
import socket
import ssl
import subprocess
import time

import harness as h


def advice(env, cfg_path):
    r = subprocess.run([env.bin, "dns-advice", "-c", cfg_path], capture_output=True, text=True,
                       timeout=120)
    h.log(f"dns-advice -> {r.returncode}\n{r.stdout}{r.stderr}")
    return r


def test(env):
    h.need_binary(env)
    keys_cfg = env.path("keygen.yaml")
    with open(keys_cfg, "w") as fh:
        fh.write(f"keys: {env.path('keys')}\n")
    recs = {}
    for sel, alg in (("s1", "--ed25519"), ("s2", "--ed25519"), ("s3", "--ed25519")):
        r = subprocess.run([env.bin, "keygen", "example.org", sel, alg, "-c", keys_cfg],
                           capture_output=True, text=True, timeout=60)
        h.check(r.returncode == 0, r.stderr)
        recs[sel] = r.stdout
    egress = {"legacy": {"type": "direct", "source": [h.LEGACY_IP]},
              "cloud": {"type": "direct", "source": [h.CLOUD_IP]}}

    # DNS with problems: s2 unpublished, s3 published with h=sha1 (receivers refuse our
    # ed25519-sha256 signatures against it), cloud not in SPF, no DMARC
    zones = h.default_zones()
    zones["example.org"] = h.zone_text("example.org", (
        f"@ IN MX 10 mx\nmx IN A {h.MX_EXAMPLE_ORG}\n"
        f'@ IN TXT "v=spf1 ip4:{h.LEGACY_IP} -all"\n' + recs["s1"]
        + recs["s3"].replace("v=DKIM1;", "v=DKIM1; h=sha1;", 1)))
    nsd = h.Nsd(env, zones=zones)
    port = env.free_port(h.SINK_IPS + [h.LEGACY_IP, h.CLOUD_IP])
    # a smarthost egress inside a platform's ranges: SPF should include the platform's record
    cfg = h.standard_config(env, nsd, port, egress={
        **egress, "m365": {"type": "smarthost", "host": "127.0.0.12", "spf_ips": ["127.0.0.12/32"]}},
        platforms={"testcloud": {"networks": ["127.0.0.0/24"], "source": "test",
                                 "spf_include": "spf.testcloud.example"}})
    cfg_path = env.path("advice1.yaml")
    with open(cfg_path, "w") as fh:
        fh.write(h.to_yaml(cfg))
    r = advice(env, cfg_path)
    out = r.stdout
    h.check(r.returncode == 1, "dns-advice should exit 1 when DNS is incomplete")
    h.check("s1._domainkey.example.org" in out and "ok: the published key matches" in out,
            "the published key is not recognised")
    h.check("s2._domainkey.example.org" in out and "MISSING: not published" in out,
            "the unpublished key is not reported")
    h.check("cannot check" not in out, "a DNS answer is reported as DNS trouble")
    h.check("include:spf.testcloud.example" in out and "ip4:127.0.0.12" not in out,
            "dns-advice does not suggest the platform's SPF include for its smarthost egress")
    h.check("s3._domainkey.example.org" in out and "allows only h=sha1" in out,
            "a key record receivers refuse (h=sha1) is not explained")
    h.check(f"ip4:{h.CLOUD_IP}" in out and "fail" in out, "the missing SPF mechanism for cloud")
    h.check("_dmarc.example.org" in out and "v=DMARC1; p=none" in out,
            "no DMARC record suggested")
    nsd.stop()

    # DNS complete: everything published
    zones["example.org"] = h.zone_text("example.org", (
        f"@ IN MX 10 mx\nmx IN A {h.MX_EXAMPLE_ORG}\n"
        f'@ IN TXT "v=spf1 ip4:{h.LEGACY_IP} ip4:{h.CLOUD_IP} -all"\n'
        '_dmarc IN TXT "v=DMARC1; p=none"\n' + recs["s1"] + recs["s2"] + recs["s3"]))
    nsd = h.Nsd(env, zones=zones)
    cfg = h.standard_config(env, nsd, port, egress=egress)
    with open(cfg_path, "w") as fh:
        fh.write(h.to_yaml(cfg))
    r = advice(env, cfg_path)
    h.check(r.returncode == 0 and "0 problems found" in r.stdout, "DNS is complete now")

    # no DNS server: "cannot check", not "not published", and in seconds (once 29 s)
    silent = dict(cfg, dns={"servers": [f"127.0.0.1:{env.free_port(['127.0.0.1'], udp=True)}"]})
    silent_path = env.path("advice-silent.yaml")
    with open(silent_path, "w") as fh:
        fh.write(h.to_yaml(silent))
    started = time.monotonic()
    r = advice(env, silent_path)
    took = time.monotonic() - started
    h.check(r.returncode == 1 and "cannot check: the resolver did not answer" in r.stdout,
            "a silent resolver is not reported as such")
    h.check("not published" not in r.stdout and "MISSING" not in r.stdout,
            "a silent resolver is read as records not published")
    h.check(took < 8, f"dns-advice against a silent resolver took {took:.1f} s")

    # queue commands against a running relay; the MX answers 451 to one recipient at first
    sink = h.PySink(env, h.MX_EXAMPLE_NET, port, "example.net",
                    script=[{"on": "RCPT", "match": "later@", "reply": "451 4.3.0 later",
                             "count": 1},
                            {"on": "RCPT", "match": "held@", "reply": "451 4.3.0 later",
                             "count": 1},
                            {"on": "RCPT", "match": "deleted@", "reply": "451 4.3.0 later"}])
    tls = h.make_ca_and_cert(env.path("tls"), ["relay.outrelay.test"], ips=["127.0.0.1"])
    implicit_port = env.free_port([h.RELAY_IP])
    required_port = env.free_port([h.RELAY_IP])
    cfg = h.standard_config(env, nsd, port, egress=egress, tls=tls, retry=("1h",),
                            extra_listen=[
                                {"address": f"127.0.0.1:{implicit_port}", "tls": "implicit"},
                                {"address": f"127.0.0.1:{required_port}", "tls": "required"}])
    cfg["spool"], cfg["state"] = env.path("spool2"), env.path("state2")
    relay = h.Relay(env, cfg)

    def send(rcpt, tag):
        res = h.send(relay.host, relay.port, "a@example.org", [rcpt],
                     h.make_message("a@example.org", rcpt, tag, message_id=f"<{tag}@ops.test>"))
        h.check(res.accepted, f"{tag}: {res}")
        return res.queue_id

    later = send("later@example.net", "later")
    env.wait_for(lambda: relay.events("SELECT 1 FROM events WHERE event='deferred'"), 30,
                 "the deferral")
    shown = relay.queue("show", later).stdout
    h.check("later@example.net" in shown and "451" in shown, f"queue show:\n{shown}")
    h.check(relay.queue("flush").returncode == 0, "flush failed")
    env.wait_for(lambda: [m for m in sink.messages() if m.message_id == "<later@ops.test>"],
                 30, "the flushed message (the next retry was an hour away)")

    # both deferred for an hour by their first answer; hold one, delete the other
    held = send("held@example.net", "held")
    deleted = send("deleted@example.net", "deleted")
    env.wait_for(lambda: len(relay.events("SELECT 1 FROM events WHERE event='deferred'")) >= 3,
                 30, "the two new deferrals")
    relay.queue("hold", held)
    listing = relay.queue("list").stdout
    h.check(f"{held}!" in listing and deleted in listing, f"not held / not queued:\n{listing}")
    r = relay.queue("delete", deleted)
    h.check(r.returncode == 0, f"delete failed: {r.stderr}")
    relay.queue("release", held)
    env.wait_for(lambda: [m for m in sink.messages() if m.message_id == "<held@ops.test>"], 30,
                 "the released message")
    h.check(not [m for m in sink.messages() if m.message_id == "<deleted@ops.test>"],
            "a deleted message was delivered")
    h.check(not relay.events("SELECT 1 FROM events WHERE event='dsn'"), "a DSN for a deletion")
    h.check(relay.queue("show", "NOSUCHID").returncode != 0, "show of an unknown id succeeded")

    # listeners
    ctx = h.client_tls_context(tls["ca"])
    with socket.create_connection(("127.0.0.1", implicit_port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="relay.outrelay.test") as s:
            greeting = s.recv(200).decode()
            h.check(greeting.startswith("220 "), f"implicit TLS greeting: {greeting!r}")
    c = smtplib.SMTP("127.0.0.1", required_port, timeout=10)
    c.ehlo("x")
    code, text = c.mail("a@example.org")
    h.check(code == 530, f"MAIL before STARTTLS on a tls: required listener got {code} {text}")
    c.starttls(context=ctx)
    c.ehlo("x")
    code, _ = c.mail("a@example.org")
    h.check(code == 250, f"MAIL after STARTTLS got {code}")
    c.quit()
    relay.stop()


if __name__ == "__main__":
    h.main(test)
