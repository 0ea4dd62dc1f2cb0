"""dkim_signed_through_relay.py - every message outrelay delivers carries an RSA and an Ed25519
signature that an independent verifier (dkimpy, keys fetched from NSD) accepts; upstream
signatures survive where the origin keeps them and are gone where its policy strips them; every
signature made and verified is recorded.

Keys are made with `outrelay keygen` and published in the NSD zone of example.org. Messages:
multipart/alternative, 8-bit UTF-8, long folded headers, lines starting with dots, a message
written with LF-only line ends (the client library turns them into CRLF on the wire, as every
SMTP client must), an empty body, and From: fields whose display name or comment holds another
address. Our Received: line names the client as an address literal ([127.0.0.11]). The MX is the aiosmtpd sink, which keeps the exact bytes.
"""
import re
import subprocess

import dkim

import harness as h

LONG_SUBJECT = "Quarterly results " + " ".join(f"word{i}" for i in range(60))


def dig_txt(nsd, name):
    out = subprocess.run(["dig", "+short", "+tcp", "-p", str(nsd.port), f"@{nsd.ip}", name, "TXT"],
                         capture_output=True, text=True, timeout=10).stdout
    records = []
    for line in out.splitlines():
        # dig prints "part1" "part2" for multi-string records
        parts = [p for p in line.split('"') if p.strip()]
        records.append("".join(parts).encode())
    return b" ".join(records) if records else None


def messages():
    from_ = "Alice Example <alice@example.org>"
    to = "bob@example.net"
    yield "multipart", (
        f"From: {from_}\r\nTo: {to}\r\nSubject: multipart test\r\nMIME-Version: 1.0\r\n"
        "Content-Type: multipart/alternative; boundary=\"b1\"\r\n\r\n"
        "--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nplain part\r\n"
        "--b1\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>html part</p>\r\n--b1--\r\n")
    yield "8bit", (
        f"From: {from_}\r\nTo: {to}\r\nSubject: 8bit\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        "Grüße aus Köln, ça va? Ωμέγα 日本語\r\n")
    yield "folded", (
        f"From: {from_}\r\nTo: {to}\r\nSubject: {LONG_SUBJECT[:70]}\r\n {LONG_SUBJECT[70:160]}\r\n"
        f"\t{LONG_SUBJECT[160:]}\r\nX-Long: {'x' * 900}\r\n\r\nbody\r\n")
    yield "dots", (
        f"From: {from_}\r\nTo: {to}\r\nSubject: dots\r\n\r\n.leading dot\r\n..two dots\r\n.\r\n"
        "..\r\nend\r\n")
    yield "lf-only", (
        f"From: {from_}\nTo: {to}\nSubject: written with LF only\n\nline one\nline two\n")
    yield "empty-body", f"From: {from_}\r\nTo: {to}\r\nSubject: empty\r\n\r\n"
    # display names and comments that look like addresses: the key and the DMARC domain come
    # from the real address (RFC 5322 3.4), not from the first '<' or '@'
    yield "from-quoted", (f"From: \"Bob <bob@other.example>\" <alice@example.org>\r\nTo: {to}\r\n"
                          "Subject: quoted display name\r\n\r\nbody\r\n")
    yield "from-comment", (f"From: alice@example.org (Alice <x@other.example>)\r\nTo: {to}\r\n"
                           "Subject: comment after the address\r\n\r\nbody\r\n")


def test(env):
    h.need_binary(env)
    keys_dir = env.path("keys")
    cfg_probe = env.path("keygen.yaml")
    with open(cfg_probe, "w") as fh:
        fh.write(f"keys: {keys_dir}\n")
    records = []
    for sel, alg in (("s2048", ["--rsa", "2048"]), ("ed1", ["--ed25519"])):
        r = subprocess.run([env.bin, "keygen", "example.org", sel, *alg, "-c", cfg_probe],
                           capture_output=True, text=True, timeout=60)
        h.check(r.returncode == 0, f"keygen failed: {r.stderr}")
        records.append(r.stdout)
    # a second run must refuse to overwrite the key
    again = subprocess.run([env.bin, "keygen", "example.org", "ed1", "--ed25519", "-c", cfg_probe],
                           capture_output=True, text=True, timeout=60)
    h.check(again.returncode != 0, "keygen overwrote an existing key")

    # upstream signer (the platform's own DKIM), keys outside the relay's key store
    tools = env.tools
    up_dir = env.path("upstream-keys")
    r = subprocess.run([f"{tools}/dkim_tool", "keygen", up_dir, "upstream.example", "zm", "rsa"],
                       capture_output=True, text=True, timeout=60)
    h.check(r.returncode == 0, f"dkim_tool keygen: {r.stderr}")
    upstream_record = r.stdout

    zones = h.default_zones()
    zones["example.org"] += "".join(records)
    zones["upstream.example"] = h.zone_text("upstream.example", upstream_record + (
        '_dmarc IN TXT "v=DMARC1; p=reject"\n'))
    nsd = h.Nsd(env, zones=zones)
    mx_port = env.free_port(h.SINK_IPS + [h.LEGACY_IP])
    sink = h.PySink(env, h.MX_EXAMPLE_NET, mx_port, "example.net")
    origins = {"keeper": {"networks": [f"{h.ZIMBRA_IP}/32"]},
               "stripper": {"networks": [f"{h.CLOUD_CLIENT_IP}/32"], "dkim_upstream": "strip"}}
    relay = h.Relay(env, h.standard_config(env, nsd, mx_port, origins=origins))

    def dnsfunc(name, timeout=5):
        return dig_txt(nsd, name.decode().rstrip("."))

    sent = {}
    for label, text in messages():
        msgid = f"<{label}@test.outrelay>"
        data = text.replace("Subject:", f"Message-ID: {msgid}\r\nSubject:", 1) \
            if "\r\n" in text else text.replace("Subject:", f"Message-ID: {msgid}\nSubject:", 1)
        if label == "lf-only":
            # what every SMTP client (smtplib, swaks, Zimbra's Postfix) does to LF-only input
            data = re.sub(r"\r\n|\r|\n", "\r\n", data)
        res = h.send(relay.host, relay.port, "alice@example.org", ["bob@example.net"],
                     data.encode(), source_addr=h.ZIMBRA_IP)
        h.check(res.accepted, f"{label}: not accepted: {res}")
        sent[msgid] = label

    # upstream-signed message through both origins
    for ip, tag in ((h.ZIMBRA_IP, "kept"), (h.CLOUD_CLIENT_IP, "stripped")):
        msgid = f"<upstream-{tag}@test.outrelay>"
        raw = (f"From: alice@example.org\r\nTo: bob@example.net\r\nMessage-ID: {msgid}\r\n"
               f"Subject: signed upstream ({tag})\r\n\r\nhello from the platform\r\n").encode()
        r = subprocess.run([f"{tools}/dkim_tool", "sign", up_dir, "upstream.example"],
                           input=raw, capture_output=True, timeout=60)
        h.check(r.returncode == 0, f"upstream signing failed: {r.stderr!r}")
        res = h.send(relay.host, relay.port, "alice@example.org", ["bob@example.net"], r.stdout,
                     source_addr=ip)
        h.check(res.accepted, f"upstream {tag}: not accepted: {res}")
        sent[msgid] = f"upstream-{tag}"

    # From: at the upstream signer's own domain, which has no key in outrelay: the message
    # leaves with the platform's aligned signature only (kept) or none (stripped). DMARC at the
    # receiver passes on the kept one (RFC 7489 4.2) and the prediction must say so.
    for ip, tag in ((h.ZIMBRA_IP, "kept"), (h.CLOUD_CLIENT_IP, "stripped")):
        msgid = f"<platform-only-{tag}@test.outrelay>"
        raw = (f"From: Carol <carol@upstream.example>\r\nTo: bob@example.net\r\n"
               f"Message-ID: {msgid}\r\nSubject: only the platform signs ({tag})\r\n\r\n"
               "hello\r\n").encode()
        r = subprocess.run([f"{tools}/dkim_tool", "sign", up_dir, "upstream.example"],
                           input=raw, capture_output=True, timeout=60)
        h.check(r.returncode == 0, f"upstream signing failed: {r.stderr!r}")
        res = h.send(relay.host, relay.port, "carol@bounce.example.net", ["bob@example.net"],
                     r.stdout, source_addr=ip)
        h.check(res.accepted, f"platform-only {tag}: not accepted: {res}")
        sent[msgid] = f"platform-only-{tag}"

    env.wait_for(lambda: len(sink.messages()) >= len(sent), 60, "every message at the sink")
    for m in sink.messages():
        label = sent.get(m.message_id)
        h.check(label, f"unexpected message at the sink: {m.message_id}")
        sigs = [v for k, v in m.msg.items() if k.lower() == "dkim-signature"]
        tags = []
        for i in range(len(sigs)):
            d = dkim.DKIM(m.raw)
            ok = d.verify(idx=i, dnsfunc=dnsfunc)
            sig = dict(p.strip().split("=", 1) for p in "".join(sigs[i].split()).split(";")
                       if "=" in p)
            tags.append((sig.get("d"), sig.get("a"), ok))
            h.check(ok, f"{label}: signature {i} (d={sig.get('d')} a={sig.get('a')}) does not "
                        f"verify in dkimpy")
        received = m.header("Received") or ""
        h.check(re.search(r"\(\[127\.0\.0\.\d+\]\)", received),
                f"{label}: our Received: line lacks the bracketed address literal (RFC 5321 "
                f"4.4): {received!r}")
        if label.startswith("platform-only"):
            h.check(not [t for t in tags if t[0] == "example.org"], f"{label}: signed by us")
            h.log(f"{label}: {tags}")
            continue
        ours = {(d, a) for d, a, ok in tags if d == "example.org"}
        h.check(ours == {("example.org", "rsa-sha256"), ("example.org", "ed25519-sha256")},
                f"{label}: expected RSA and Ed25519 signatures by example.org, got {tags}")
        upstream = [t for t in tags if t[0] == "upstream.example"]
        if label == "upstream-kept":
            h.check(len(upstream) == 1, f"upstream signature missing after relaying: {tags}")
        else:
            h.check(not upstream, f"{label}: upstream signature present: {tags}")
        h.log(f"{label}: {tags}")

    checked = relay.events("SELECT message_id, dmarc_result, dkim, detail FROM events "
                           "WHERE event='checked' AND from_domain='upstream.example'")
    verdicts = {r["message_id"]: r["dmarc_result"] for r in checked}
    h.log(f"predictions for upstream.example: {checked}")
    h.check(verdicts.get("<platform-only-kept@test.outrelay>") == "pass",
            f"kept aligned upstream signature: prediction {verdicts} (receivers say pass)")
    h.check(verdicts.get("<platform-only-stripped@test.outrelay>") == "fail",
            f"stripped upstream signature: prediction {verdicts} (receivers say fail)")
    signed = relay.events("SELECT queue_id, dkim FROM events WHERE event='signed' AND "
                          "from_domain != 'upstream.example'")
    h.check(len(signed) == len(sent) - 2 and all(
        "a=rsa-sha256" in (r["dkim"] or "") and "a=ed25519-sha256" in (r["dkim"] or "")
        for r in signed), f"signed events: {signed}")
    up = relay.events("SELECT origin, dkim, action FROM events WHERE event='dkim-upstream'")
    h.check(sorted((r["origin"], r["action"]) for r in up) ==
            [("keeper", "keep")] * 2 + [("stripper", "strip")] * 2, f"dkim-upstream events: {up}")
    h.check(all("d=upstream.example" in r["dkim"] and " pass" in r["dkim"] for r in up),
            f"upstream signatures not recorded as verified: {up}")
    relay.stop()


if __name__ == "__main__":
    h.main(test)
