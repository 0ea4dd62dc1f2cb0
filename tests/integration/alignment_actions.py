"""alignment_actions.py - outrelay predicts DMARC for the egress it is about to use and acts on
a predicted failure as configured per From domain (policy file under the env dir):

  reroute.example  SPF authorises only the cloud egress (127.0.0.3), p=reject, action reroute:
                   delivered from 127.0.0.3 although the ramp says legacy (127.0.0.2)
  hold.example     same DNS, action hold: held in the queue (queue list shows '!'), delivered
                   after `outrelay queue release ID`
  bounce.example   SPF authorises nothing, p=quarantine, action bounce: not delivered; a DSN
                   explaining the DMARC failure reaches the sender's MX
  send.example     SPF fails, p=reject, default action send: delivered, recorded as dmarc=fail
  pass.example     SPF authorises legacy: dmarc=pass, nothing to do
  nopolicy.example no DMARC record: dmarc=none
  stale.example    we hold a DKIM key, DNS publishes a different one, SPF fails: DKIM does not
                   count, dmarc=fail with key=mismatch recorded
Every check and action is a row in records.db.
"""
import subprocess

import harness as h

SENDER_MX = "127.0.0.21"


def zone(name, spf, dmarc, extra=""):
    body = f"@ IN MX 10 mx\nmx IN A {SENDER_MX}\n"
    if spf:
        body += f'@ IN TXT "{spf}"\n'
    if dmarc:
        body += f'_dmarc IN TXT "{dmarc}"\n'
    return h.zone_text(name, body + extra)


def test(env):
    h.need_binary(env)
    keys_cfg = env.path("keygen.yaml")
    with open(keys_cfg, "w") as fh:
        fh.write(f"keys: {env.path('keys')}\n")
    r = subprocess.run([env.bin, "keygen", "stale.example", "s1", "--ed25519", "-c", keys_cfg],
                       capture_output=True, text=True, timeout=60)
    h.check(r.returncode == 0, f"keygen: {r.stderr}")
    other = subprocess.run([f"{env.tools}/dkim_tool", "keygen", env.path("otherkeys"),
                            "stale.example", "s1", "ed25519"], capture_output=True, text=True,
                           timeout=60)
    h.check(other.returncode == 0, f"dkim_tool keygen: {other.stderr}")

    cloud_only = f"v=spf1 ip4:{h.CLOUD_IP} -all"
    zones = h.default_zones()
    zones.update({
        "reroute.example": zone("reroute.example", cloud_only, "v=DMARC1; p=reject"),
        "hold.example": zone("hold.example", cloud_only, "v=DMARC1; p=reject"),
        "bounce.example": zone("bounce.example", "v=spf1 -all", "v=DMARC1; p=quarantine"),
        "send.example": zone("send.example", cloud_only, "v=DMARC1; p=reject"),
        "pass.example": zone("pass.example", f"v=spf1 ip4:{h.LEGACY_IP} -all",
                             "v=DMARC1; p=reject"),
        "nopolicy.example": zone("nopolicy.example", cloud_only, None),
        "stale.example": zone("stale.example", cloud_only, "v=DMARC1; p=reject",
                              other.stdout),
    })
    nsd = h.Nsd(env, zones=zones)
    mx_port = env.free_port(h.SINK_IPS + [SENDER_MX, h.LEGACY_IP, h.CLOUD_IP])
    sink = h.SmtpSink(env, h.MX_EXAMPLE_NET, mx_port, "example.net")
    senders_mx = h.SmtpSink(env, SENDER_MX, mx_port, "senders")
    policy = env.path("alignment.yaml")
    with open(policy, "w") as fh:
        fh.write("alignment:\n  default: send\n  domains:\n"
                 "    reroute.example: reroute\n    hold.example: hold\n"
                 "    bounce.example: bounce\n")
    egress = {"legacy": {"type": "direct", "source": [h.LEGACY_IP], "helo": "legacy.outrelay.test"},
              "cloud": {"type": "direct", "source": [h.CLOUD_IP], "helo": "cloud.outrelay.test"}}
    relay = h.Relay(env, h.standard_config(env, nsd, mx_port, egress=egress,
                                           policies=[policy]))

    domains = ["reroute", "hold", "bounce", "send", "pass", "nopolicy", "stale"]
    qids = {}
    for d in domains:
        addr = f"user@{d}.example"
        msgid = f"<{d}@test.outrelay>"
        res = h.send(relay.host, relay.port, addr, ["rcpt@example.net"],
                     h.make_message(addr, "rcpt@example.net", f"alignment {d}", message_id=msgid))
        h.check(res.accepted, f"{d}: not accepted: {res}")
        qids[d] = res.queue_id

    def checked(d, egress="legacy"):
        rows = relay.events("SELECT * FROM events WHERE event='checked' AND queue_id=? AND "
                            "egress=?", (qids[d], egress))
        return rows[-1] if rows else None

    env.wait_for(lambda: all(checked(d) for d in domains), 60, "a check of every message")
    expect = {"reroute": ("fail", "reroute", "legacy"), "hold": ("fail", "hold", "legacy"),
              "bounce": ("fail", "bounce", "legacy"), "send": ("fail", "send", "legacy"),
              "pass": ("pass", "send", "legacy"), "nopolicy": ("none", "send", "legacy"),
              "stale": ("fail", "send", "legacy")}
    for d, (verdict, action, egress_name) in expect.items():
        row = checked(d)
        h.log(f"{d}: spf={row['spf_result']} dmarc={row['dmarc_result']} action={row['action']} "
              f"egress={row['egress']} dkim={row['dkim']} detail={row['detail']}")
        h.check((row["dmarc_result"], row["action"], row["egress"]) == (verdict, action,
                                                                         egress_name),
                f"{d}: expected dmarc={verdict} action={action} egress={egress_name}, got {row}")
    h.check("key=mismatch" in (checked("stale")["dkim"] or ""),
            f"stale.example: the mismatching published key was not noticed: {checked('stale')}")
    cloud = checked("reroute", "cloud")
    h.check(cloud and cloud["spf_result"] == "pass" and cloud["dmarc_result"] == "pass",
            f"reroute: the cloud egress should pass SPF and DMARC: {cloud}")
    h.check(checked("reroute")["spf_result"] == "fail", "reroute: SPF should fail on legacy")

    def at_sink(d):
        return [m for m in sink.messages() if m.message_id == f"<{d}@test.outrelay>"]

    env.wait_for(lambda: all(at_sink(d) for d in ("reroute", "send", "pass", "nopolicy",
                                                  "stale")), 60, "deliveries")
    h.check(at_sink("reroute")[0].client_addr == h.CLOUD_IP,
            f"reroute.example left from {at_sink('reroute')[0].client_addr}, not the cloud egress")
    for d in ("send", "pass", "nopolicy", "stale"):
        h.check(at_sink(d)[0].client_addr == h.LEGACY_IP, f"{d} did not leave from legacy")

    # hold: in the queue, held; release sends it
    listing = relay.queue("list").stdout
    h.check(f"{qids['hold']}!" in listing, f"held message not shown as held:\n{listing}")
    h.check(not at_sink("hold"), "held message was delivered")
    held = relay.events("SELECT * FROM events WHERE event='held' AND queue_id=?", (qids["hold"],))
    h.check(held and "DMARC" in (held[0]["detail"] or ""), f"held event: {held}")
    rel = relay.queue("release", qids["hold"])
    h.check(rel.returncode == 0, f"release failed: {rel.stderr}")
    env.wait_for(lambda: at_sink("hold"), 30, "the released message at the sink")
    h.check(relay.events("SELECT 1 FROM events WHERE event='released' AND queue_id=?",
                         (qids["hold"],)), "no released event")

    # bounce: never delivered; the DSN says why
    h.check(not at_sink("bounce"), "bounce.example was delivered")
    env.wait_for(lambda: [m for m in senders_mx.messages()
                          if "user@bounce.example" in m.rcpts], 30, "the DSN for bounce.example")
    dsn = [m for m in senders_mx.messages() if "user@bounce.example" in m.rcpts][0]
    h.check(dsn.mail_from in ("", "<>"), f"DSN sent with sender {dsn.mail_from!r}")
    body = dsn.raw.decode("utf-8", "replace")
    h.check("DMARC" in body and "5.7.1" in body, f"DSN does not explain the DMARC failure:\n{body}")
    relay.stop()


if __name__ == "__main__":
    h.main(test)
