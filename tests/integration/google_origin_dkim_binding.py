"""google_origin_dkim_binding.py - a Google Workspace-style origin (shared ranges, no tenant
header, no client certificate) is bound to its tenant by DKIM: a message must arrive with a
verifying signature by one of the origin's domains, checked before 250; unsigned mail, mail
signed by another domain, and mail altered after signing are refused with 550 5.7.1 and nothing
of it is delivered.

The platform's range is 127.0.0.14/32. The platform's own key (selector gw, for example.org) is
made with dkim_tool and published in the test NSD, as a tenant publishes Google's DKIM key.
"""
import subprocess

import harness as h

PLATFORM_IP = "127.0.0.14"


def test(env):
    h.need_binary(env)
    tools = env.tools
    keys = env.path("platform-keys")
    records = ""
    for domain in ("example.org", "example.com"):
        r = subprocess.run([f"{tools}/dkim_tool", "keygen", keys, domain, "gw", "rsa"],
                           capture_output=True, text=True, timeout=60)
        h.check(r.returncode == 0, f"dkim_tool keygen {domain}: {r.stderr}")
        records += r.stdout if domain == "example.org" else ""
        if domain == "example.com":
            com_record = r.stdout
    zones = h.default_zones()
    zones["example.org"] += records
    zones["example.com"] += com_record
    nsd = h.Nsd(env, zones=zones)
    mx_port = env.free_port(h.SINK_IPS + [h.LEGACY_IP])
    sink = h.PySink(env, h.MX_EXAMPLE_NET, mx_port, "example.net")
    origins = {"google": {"platforms": ["testgoogle"], "domains": ["example.org"],
                          "dkim_required": True}}
    cfg = h.standard_config(env, nsd, mx_port, origins=origins,
                            platforms={"testgoogle": {"networks": [f"{PLATFORM_IP}/32"],
                                                      "source": "test platform"}})
    relay = h.Relay(env, cfg)

    def signed(tag, domain="example.org", from_addr="alice@example.org"):
        raw = (f"From: {from_addr}\r\nTo: bob@example.net\r\nMessage-ID: <{tag}@gw.test>\r\n"
               f"Subject: {tag}\r\n\r\nhello from the platform\r\n").encode()
        r = subprocess.run([f"{tools}/dkim_tool", "sign", keys, domain], input=raw,
                           capture_output=True, timeout=60)
        h.check(r.returncode == 0, f"signing failed: {r.stderr!r}")
        return r.stdout

    def send(tag, data):
        return h.send(relay.host, relay.port, "alice@example.org", ["bob@example.net"], data,
                      source_addr=PLATFORM_IP)

    res = send("signed", signed("signed"))
    h.check(res.accepted, f"the tenant's signed message was refused: {res.steps}")
    unsigned = (b"From: alice@example.org\r\nTo: bob@example.net\r\nMessage-ID: <unsigned@gw.test>"
                b"\r\nSubject: unsigned\r\n\r\nhello\r\n")
    altered = signed("altered").replace(b"hello from the platform", b"pay the invoice now!!")
    other = signed("other-domain", domain="example.com")
    for tag, data in (("unsigned", unsigned), ("altered", altered), ("other-domain", other)):
        res = send(tag, data)
        code, text = res.reply("data")
        h.log(f"{tag}: DATA -> {code} {text}")
        h.check(code == 550 and "5.7.1" in text and "DKIM" in text,
                f"{tag}: expected 550 5.7.1 (no verifying DKIM signature), got {res.steps}")
    env.wait_for(lambda: sink.messages(), 30, "the signed message")
    import time
    time.sleep(1)
    ids = [m.message_id for m in sink.messages()]
    h.check(ids == ["<signed@gw.test>"], f"the sink got {ids}")
    refused = relay.events("SELECT reply_text FROM events WHERE event='refused'")
    h.check(len(refused) == 3, f"refusal records: {refused}")


if __name__ == "__main__":
    h.main(test)
