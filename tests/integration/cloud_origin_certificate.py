"""cloud_origin_certificate.py - a cloud platform that cannot AUTH is admitted safely: the origin
`m365` takes clients from its platform's (shared) ranges only with a TLS client certificate that
chains to its CA and carries mail.protection.outlook.com, for its own domains and its own tenant;
everything else is refused with 5.7.1 before 250 and nothing is delivered. Also: a message that
already carries this deployment's loop stamp is refused (554 5.4.6), and `outrelay check` warns
about an origin that admits a shared range without certificate or tenant binding.

The "platform" is 127.0.0.12/32, declared as a platform in the configuration (as
policies/platforms.yaml declares Exchange Online's ranges). A test CA issues the client
certificates: one named like Exchange Online's, one with another name.
"""
import ssl
import subprocess

import harness as h

TENANT = "2f1c0e6a-5d2b-4c1e-9a7b-0c2d4e6f8a10"
PLATFORM_IP = h.CLOUD_CLIENT_IP


def message(sender, tag, tenant=TENANT, from_addr=None, extra=()):
    headers = list(extra)
    if tenant:
        headers.append(f"X-MS-Exchange-CrossTenant-Id: {tenant}")
    return h.make_message(from_addr or sender, "bob@example.net", tag,
                          message_id=f"<{tag}@cloud.test>", extra_headers=headers)


def client_ctx(cert=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if cert:
        ctx.load_cert_chain(cert["cert"], cert["key"])
    return ctx


def test(env):
    h.need_binary(env)
    server = h.make_ca_and_cert(env.path("tls"), ["relay.outrelay.test"], [h.RELAY_IP])
    good = h.make_ca_and_cert(env.path("clients"), ["mail.protection.outlook.com"],
                              prefix="eop", usage="clientAuth")
    other = h.make_ca_and_cert(env.path("clients"), ["smtp.other-tenant.example"],
                               prefix="other", usage="clientAuth")
    nsd = h.Nsd(env)
    mx_port = env.free_port(h.SINK_IPS + [h.LEGACY_IP])
    sink = h.PySink(env, h.MX_EXAMPLE_NET, mx_port, "example.net")
    origins = {"zimbra": {"networks": [f"{h.ZIMBRA_IP}/32"]},
               "m365": {"platforms": ["testcloud"],
                        "certificate": {"names": ["mail.protection.outlook.com"],
                                        "ca_file": good["ca"]},
                        "domains": ["example.org"], "tenant_id": TENANT}}
    cfg = h.standard_config(env, nsd, mx_port, origins=origins, tls=server,
                            platforms={"testcloud": {"networks": [f"{PLATFORM_IP}/32"],
                                                     "source": "test platform"}},
                            deployment_id="relay-test-1")
    relay = h.Relay(env, cfg)

    def send(tag, sender="alice@example.org", cert=good, source=PLATFORM_IP, **kw):
        return h.send(relay.host, relay.port, sender, ["bob@example.net"],
                      message(sender, tag, **kw), starttls=True, tls_context=client_ctx(cert),
                      source_addr=source)

    res = send("accepted")
    h.check(res.accepted, f"the tenant's connector was refused: {res.steps} {res.error}")
    cases = {
        "other-tenant": (send("other-tenant", tenant="99999999-0000-0000-0000-000000000000"),
                         "data"),
        "no-tenant-header": (send("no-tenant-header", tenant=None), "data"),
        "no-certificate": (send("no-certificate", cert=None), "rcpt"),
        "other-name": (send("other-name", cert=other), "rcpt"),
        "sender-outside": (send("sender-outside", sender="mallory@evil.example"), "rcpt"),
        "from-outside": (send("from-outside", from_addr="ceo@evil.example"), "data"),
        "stranger-address": (send("stranger-address", source=h.STRANGER_IP), "rcpt"),
    }
    for tag, (res, step) in cases.items():
        code, text = res.reply(step)
        h.log(f"{tag}: {step} -> {code} {text}")
        h.check(code is not None and code >= 500 and "5.7.1" in (text or ""),
                f"{tag}: expected 5.7.1 at {step.upper()}, got {res.steps}")
        h.check(not res.accepted, f"{tag}: accepted")

    # loop: a message stamped by this deployment comes back (here through zimbra's origin)
    res = h.send(relay.host, relay.port, "alice@example.org", ["bob@example.net"],
                 h.make_message("alice@example.org", "bob@example.net", "loop",
                                message_id="<loop@cloud.test>",
                                extra_headers=["X-Outrelay-Loop: relay-test-1"]),
                 source_addr=h.ZIMBRA_IP)
    h.log(f"loop: {res.steps[-1]}")
    h.check(res.code("data") == 554 and "5.4.6" in res.reply("data")[1],
            f"a message with our loop stamp was not refused: {res.steps}")
    # another deployment's stamp is not ours
    res = h.send(relay.host, relay.port, "alice@example.org", ["bob@example.net"],
                 h.make_message("alice@example.org", "bob@example.net", "foreign-stamp",
                                message_id="<foreign-stamp@cloud.test>",
                                extra_headers=["X-Outrelay-Loop: relay-elsewhere"]),
                 source_addr=h.ZIMBRA_IP)
    h.check(res.accepted, f"another deployment's stamp was refused: {res.steps}")

    env.wait_for(lambda: len(sink.messages()) >= 2, 30, "the two accepted messages")
    ids = sorted(m.message_id for m in sink.messages())
    h.check(ids == ["<accepted@cloud.test>", "<foreign-stamp@cloud.test>"],
            f"the sink got {ids}")
    got = [m for m in sink.messages() if m.message_id == "<accepted@cloud.test>"][0]
    h.check((got.header("X-Outrelay-Loop") or "") == "relay-test-1",
            f"our loop stamp is missing: {got.header('X-Outrelay-Loop')}")
    rec = relay.events("SELECT origin, detail FROM events WHERE event='received' AND "
                       "message_id='<accepted@cloud.test>'")
    h.check(rec and rec[0]["origin"] == "m365" and
            "CN = mail.protection.outlook.com" in (rec[0]["detail"] or "").replace("CN=", "CN = "),
            f"received record lacks origin/certificate: {rec}")
    h.log(f"received: {rec[0]}")

    refused = relay.events("SELECT message_id, recipient, reply_code, enhanced_code, reply_text "
                           "FROM events WHERE event='refused'")
    h.log(f"{len(refused)} refusal records")
    h.check(len(refused) >= len(cases) - 3 + 1,  # RCPT-time sender refusal and DATA refusals
            f"refusals are not all recorded: {refused}")
    h.check(any("X-MS-Exchange-CrossTenant-Id differs" in (r["reply_text"] or "")
                and r["enhanced_code"] == "5.7.1" for r in refused),
            f"the tenant refusal has no record with its reason: {refused}")

    # check warns about a shared range admitted without certificate or binding
    cfg2 = dict(cfg)
    cfg2["origins"] = {"open": {"platforms": ["testcloud"]}}
    path = env.path("open-origin.yaml")
    with open(path, "w") as fh:
        fh.write(h.to_yaml(cfg2) + "\n")
    r = subprocess.run([env.bin, "check", "-c", path], capture_output=True, text=True, timeout=60)
    h.log(f"check on the open origin -> {r.returncode}: {r.stderr.strip()}")
    h.check("warning:" in r.stderr and "every customer of that provider" in r.stderr,
            f"no warning for an open shared range: {r.stderr}")
    r = subprocess.run([env.bin, "check", "-c", relay.conf_path], capture_output=True, text=True,
                       timeout=60)
    h.check(r.returncode == 0 and "warning:" not in r.stderr,
            f"the bound origin's configuration does not pass check cleanly: {r.stdout}{r.stderr}")


if __name__ == "__main__":
    h.main(test)
