"""smarthost_auth_tls.py - the cloud egress as a smarthost (the tenant's connector): STARTTLS
required and the certificate verified against a CA file, then AUTH PLAIN, or AUTH LOGIN when
the smarthost offers only that. A smarthost whose certificate does not carry its name is not
used: the message stays queued and the reason is recorded. Wrong credentials keep mail queued
too (never a bounce for our own misconfiguration)."""
import harness as h

SMARTHOST = "127.0.0.40"


def scenario(env, nsd, ca, port, name, mechs, host="smarthost.tls.test", password="s3cret"):
    sink = h.PySink(env, SMARTHOST, port, name, tls=ca, auth=f"relay:s3cret:{mechs}")
    egress = {"cloud": {"type": "smarthost", "host": host, "port": port, "tls": "required",
                        "tls_ca_file": ca["ca"], "auth": {"user": "relay", "password": password},
                        "spf_ips": ["127.0.0.1/32"]}}
    cfg = h.standard_config(env, nsd, port, egress=egress, ramp_from="cloud")
    cfg["spool"] = env.path(f"spool-{name}")
    cfg["state"] = env.path(f"state-{name}")
    relay = h.Relay(env, cfg, name=f"outrelay-{name}")
    res = h.send(relay.host, relay.port, "a@example.org", ["b@example.net"],
                 h.make_message("a@example.org", "b@example.net", name))
    h.check(res.accepted, f"{name}: not accepted: {res}")
    return sink, relay, res.queue_id


def test(env):
    h.need_binary(env)
    zones = h.default_zones()
    zones["tls.test"] += (f"smarthost IN A {SMARTHOST}\nwrong IN A {SMARTHOST}\n")
    nsd = h.Nsd(env, zones=zones)
    ca = h.make_ca_and_cert(env.path("tls"), ["smarthost.tls.test"])
    port = env.free_port([SMARTHOST])

    for name, mechs in (("plain", "PLAIN,LOGIN"), ("login", "LOGIN")):
        sink, relay, _ = scenario(env, nsd, ca, port, name, mechs)
        env.wait_for(lambda: sink.messages(), 30, f"{name}: delivery through the smarthost")
        m = sink.messages()[0]
        h.check(m.tls_version and m.tls_version.startswith("TLSv1."), f"{name}: no TLS")
        auths = sink.auths()
        h.check(auths and auths[-1]["ok"] and auths[-1]["login"] == "relay" and
                auths[-1]["mechanism"] == mechs.split(",")[0],
                f"{name}: AUTH not as expected: {auths}")
        relay.stop()
        sink.stop()
        port = env.free_port([SMARTHOST])

    # the certificate does not carry the name we connect to: refused, stays queued
    sink, relay, qid = scenario(env, nsd, ca, port, "wrongname", "PLAIN",
                                host="wrong.tls.test")
    env.wait_for(lambda: relay.events("SELECT 1 FROM events WHERE event='deferred' AND "
                                      "reply_text LIKE '%certificate verify failed%'"), 45,
                 lambda: "a deferral for the unverifiable certificate; deferrals: " +
                 str(relay.events("SELECT reply_text FROM events WHERE event='deferred'")))
    h.check(not sink.messages(), "delivered to a smarthost whose certificate did not verify")
    h.check(qid in relay.queue("list").stdout, "the message is not in the queue")
    relay.stop()
    sink.stop()

    # wrong password: deferred (our configuration is wrong, not the mail), stays queued
    port = env.free_port([SMARTHOST])
    sink, relay, qid = scenario(env, nsd, ca, port, "badpass", "PLAIN", password="nope")
    env.wait_for(lambda: relay.events("SELECT 1 FROM events WHERE event='deferred' AND "
                                      "reply_text LIKE '%refused our credentials%'"), 45,
                 lambda: "a deferral for refused credentials; deferrals: " +
                 str(relay.events("SELECT reply_text FROM events WHERE event='deferred'")))
    h.check(not relay.events("SELECT 1 FROM events WHERE event='bounced'"),
            "bounced because of our own credentials")
    relay.stop()


if __name__ == "__main__":
    h.main(test)
