"""cluster_redis_tls_auth.py - the connection to the shared Redis over TLS with AUTH, and a
relay whose Redis will not have it keeps relaying.

Redis (Debian's redis-server 7, built with TLS) serves TLS only, with a certificate from a test
CA for 127.0.0.1, a default password and an ACL user:
  - relay A (tls: true, tls_ca_file: the CA, user + password) is up, its heartbeat key and the
    delivered marker of the message it sends are in Redis;
  - relay B with a wrong password is down with Redis's refusal as its last error, and still
    delivers;
  - relay C without the CA (the system store cannot verify the test certificate) is down with
    a TLS error: the certificate is verified, never trusted blindly.
"""
import json

import harness as h


def test(env):
    h.need_binary(env)
    nsd = h.Nsd(env)
    port = env.free_port(h.SINK_IPS + [h.LEGACY_IP])
    sink = h.SmtpSink(env, h.MX_EXAMPLE_NET, port, "example.net")
    tls = h.make_ca_and_cert(env.path("redis-tls"), ["redis.test"], ips=[h.RELAY_IP])
    redis = h.Redis(env, password="default-pw", tls=tls)
    h.check(redis.cli("ACL", "SETUSER", "outrelay", "on", ">user-pw", "~*", "+@all") == ["OK"],
            "ACL SETUSER failed")

    def relay(name, **cluster):
        c = {"redis": redis.address, "instance": f"relay-{name}", "timeout": "1s",
             "key_prefix": "t"}
        c.update(cluster)
        cfg = h.standard_config(env, nsd, port, spool=env.path(f"spool-{name}"),
                                state=env.path(f"state-{name}"), cluster=c)
        return h.Relay(env, cfg, name=f"relay{name}")

    a = relay("A", tls=True, tls_ca_file=tls["ca"], user="outrelay", password="user-pw")
    b = relay("B", tls=True, tls_ca_file=tls["ca"], password="wrong-pw")
    c = relay("C", tls=True, password="default-pw")

    def status(r):
        res = r.queue_like("cluster", "status", "--json")
        h.check(res.returncode == 0, f"cluster status: {res.stderr}")
        return json.loads(res.stdout)

    a.wait_for(lambda: status(a)["state"] == "up", 30, "A up over TLS")
    h.check(status(a)["tls"] is True, f"A: {status(a)}")
    text = a.queue_like("cluster", "status").stdout
    h.check("state: up" in text and "instance: relay-A" in text, f"text status: {text}")
    h.check(redis.cli("EXISTS", "t:instance:relay-A") == ["1"], "no heartbeat key of A")
    b.wait_for(lambda: status(b)["state"] == "down" and "WRONGPASS" in (status(b)["last_error"] or ""),
               30, "B down with Redis's refusal")
    c.wait_for(lambda: status(c)["state"] == "down" and status(c)["last_error"], 30, "C down")
    h.check("certificate does not verify" in status(c)["last_error"],
            f"C's error is not about TLS: {status(c)}")
    h.check(redis.cli("EXISTS", "t:instance:relay-B") == ["0"] and
            redis.cli("EXISTS", "t:instance:relay-C") == ["0"], "B or C wrote to Redis")

    for r, msgid in ((a, "<a@tls.test>"), (b, "<b@tls.test>")):
        res = h.send(r.host, r.port, "someone@example.org", ["u@example.net"],
                     h.make_message("someone@example.org", "u@example.net", "x", message_id=msgid),
                     source_addr=h.ZIMBRA_IP)
        h.check(res.accepted, f"not accepted: {res}")
    env.wait_for(lambda: sorted(m.message_id for m in sink.messages()) ==
                 ["<a@tls.test>", "<b@tls.test>"], 30, "both delivered")
    values = [redis.cli("GET", k)[0] for k in redis.cli("KEYS", "t:dup:*") if k]
    h.check(len(values) == 1 and values[0].startswith("delivered relay-A "),
            f"the delivered marker in Redis: {values}")
    h.check(b.events("SELECT 1 FROM events WHERE event='cluster' AND action='down'"),
            "B did not record that Redis is down")
    for r in (a, b, c):
        r.stop()
    redis.stop()


if __name__ == "__main__":
    h.main(test)
