"""long_lines_transport_safe.py - a receiver that enforces RFC 5321's 998-octet line limit
(py_sink --max-line-length 998: "500 5.5.2 Line too long") gets every message of a corpus of
long-line messages through outrelay, each delivered message's DKIM signatures verify in dkimpy,
and each decodes to the same text as the original (header values and every MIME leaf).

Corpus: long Subject with whitespace (folded), long Subject without (RFC 2047 encoded words),
long body line in text/plain 7bit and in 8-bit UTF-8, base64 on one 3,200-character line,
multipart/alternative with one long part, an already quoted-printable part with a long line, a
line of exactly 998 octets (left alone) and one of 999. The records say what was changed
("signed" detail "transformed: ..."). A structured header with no whitespace to fold at is
refused at DATA (554 5.6.0), never corrupted. Platform-signed messages (From: the platform's
domain, signature kept): one whose body had to be re-encoded is no longer predicted DMARC pass on
that signature (the change broke it, and dkimpy agrees); one whose long Cc: line was only folded
still is (relaxed canonicalization unfolds it, and dkimpy verifies it).
"""
import email
import email.header
import email.policy
import re
import subprocess

import dkim

import harness as h

FROM = "Alice Example <alice@example.org>"
TO = "bob@example.net"


def mime(ctype, cte, body):
    head = f"MIME-Version: 1.0\r\nContent-Type: {ctype}\r\n"
    if cte:
        head += f"Content-Transfer-Encoding: {cte}\r\n"
    return head + "\r\n" + body


def corpus():
    """(label, header lines after To:, body part) -> the test's messages, and what the records
    must say ("" = not transformed)."""
    words = " ".join(f"word{i}" for i in range(400))  # ~3,500 octets
    yield ("subject-ws", f"Subject: {words}\r\n", "short body\r\n", "header line folded")
    yield ("subject-nows", f"Subject: Re: {'x' * 1500}\r\n", "short body\r\n",
           "header field RFC 2047-encoded")
    yield ("text-7bit", "Subject: 7bit\r\n",
           mime("text/plain; charset=us-ascii", "7bit",
                "first line\r\n" + "The quick brown fox. " * 80 + "\r\nlast line\r\n"),
           "body re-encoded quoted-printable (1 line over 998)")
    yield ("text-8bit", "Subject: 8bit\r\n",
           mime("text/plain; charset=utf-8", "8bit", "Grüße aus Köln — " * 90 + "\r\nok\r\n"),
           "body re-encoded quoted-printable (1 line over 998)")
    yield ("base64-one-line", "Subject: base64\r\n",
           mime("multipart/mixed; boundary=\"m1\"", None,
                "--m1\r\nContent-Type: text/plain\r\n\r\nsee attachment\r\n"
                "--m1\r\nContent-Type: application/octet-stream; name=\"a.bin\"\r\n"
                "Content-Transfer-Encoding: base64\r\n\r\n" + "QUJDREVGR0hJSktM" * 200 +
                "\r\n--m1--\r\n"),
           "body re-wrapped (1 line over 998)")
    yield ("alternative", "Subject: alternative\r\n",
           mime("multipart/alternative; boundary=\"b1\"", None,
                "--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nplain part\r\n"
                "--b1\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<html>" +
                "<td>cell</td>" * 200 + "</html>\r\n--b1--\r\n"),
           "body re-encoded quoted-printable (1 line over 998)")
    yield ("already-qp", "Subject: qp\r\n",
           mime("text/plain; charset=utf-8", "quoted-printable",
                "ab=C3=A9cd" * 150 + "\r\nsoft=\r\n break\r\n"),
           "body re-wrapped (1 line over 998)")
    yield ("exactly-998", "Subject: 998\r\n", "y" * 998 + "\r\n", "")
    yield ("exactly-999", "Subject: 999\r\n", "z" * 999 + "\r\n",
           "body re-encoded quoted-printable (1 line over 998)")


def leaves(raw):
    """Decoded content of a message: header values that matter and every MIME leaf."""
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    subject = msg.get("Subject")
    out = [str(email.header.make_header(email.header.decode_header(
        re.sub(r"\r?\n", "", subject)))) if subject else None]
    for part in msg.walk():
        if part.is_multipart():
            continue
        payload = part.get_payload(decode=True) or b""
        out.append((part.get_content_type(), payload.replace(b"\r\n", b"\n").rstrip(b"\n")))
    return out


def dig_txt(nsd, name):
    out = subprocess.run(["dig", "+short", "+tcp", "-p", str(nsd.port), f"@{nsd.ip}", name, "TXT"],
                         capture_output=True, text=True, timeout=10).stdout
    records = ["".join(p for p in line.split('"') if p.strip()) for line in out.splitlines()]
    return " ".join(records).encode() if records else None


def test(env):
    h.need_binary(env)
    keys_dir = env.path("keys")
    cfg_probe = env.path("keygen.yaml")
    with open(cfg_probe, "w") as fh:
        fh.write(f"keys: {keys_dir}\n")
    r = subprocess.run([env.bin, "keygen", "example.org", "s1", "--rsa", "2048", "-c", cfg_probe],
                       capture_output=True, text=True, timeout=60)
    h.check(r.returncode == 0, f"keygen failed: {r.stderr}")
    tools = env.tools
    up_dir = env.path("upstream-keys")
    up = subprocess.run([f"{tools}/dkim_tool", "keygen", up_dir, "upstream.example", "zm", "rsa"],
                        capture_output=True, text=True, timeout=60)
    h.check(up.returncode == 0, f"dkim_tool keygen: {up.stderr}")

    zones = h.default_zones()
    zones["example.org"] += r.stdout
    zones["upstream.example"] = h.zone_text("upstream.example", up.stdout + (
        '_dmarc IN TXT "v=DMARC1; p=reject"\n'))
    nsd = h.Nsd(env, zones=zones)
    mx_port = env.free_port(h.SINK_IPS + [h.LEGACY_IP])
    sink = h.PySink(env, h.MX_EXAMPLE_NET, mx_port, "example.net", max_line_length=998)
    origins = {"keeper": {"networks": [f"{h.ZIMBRA_IP}/32"]}}
    relay = h.Relay(env, h.standard_config(env, nsd, mx_port, origins=origins))

    # the sink really is strict: 999 octets refused, 998 taken
    for n, ok in ((999, False), (998, True)):
        res = h.send(h.MX_EXAMPLE_NET, mx_port, "probe@example.org", [TO],
                     f"From: probe@example.org\r\nSubject: probe\r\n\r\n{'p' * n}\r\n".encode())
        h.check(res.accepted == ok, f"sink with a {n}-octet line: {res.steps}")

    originals, expect = {}, {}
    for label, headers, body, says in corpus():
        msgid = f"<{label}@test.outrelay>"
        sep = "" if body.startswith("MIME-Version") else "\r\n"  # mime() ends the header
        raw = f"From: {FROM}\r\nTo: {TO}\r\nMessage-ID: {msgid}\r\n{headers}{sep}{body}"
        data = raw.encode("utf-8")
        res = h.send(relay.host, relay.port, "alice@example.org", [TO], data,
                     source_addr=h.ZIMBRA_IP)
        h.check(res.accepted, f"{label}: not accepted: {res.steps}")
        originals[msgid] = data
        expect[msgid] = (label, says)

    # platform-signed messages at the platform's own domain (no key in outrelay, signature
    # kept). Its body re-encoded: the platform's signature is broken and must not make the
    # DMARC prediction pass. Only a header line folded: relaxed canonicalization (RFC 6376
    # 3.4.2) unfolds it, the signature still verifies at the receiver, and the prediction must
    # keep counting it.
    platform = {"<platform-body@test.outrelay>": (f"Subject: long line\r\n\r\n{'w' * 1200}\r\n",
                                                  "fail", False),
                "<platform-folded@test.outrelay>": (
                    "Cc: " + ", ".join(f"user{i}@example.net" for i in range(80)) +
                    "\r\nSubject: long Cc\r\n\r\nhello\r\n", "pass", True)}
    for msgid, (rest, _, _) in platform.items():
        raw = (f"From: Carol <carol@upstream.example>\r\nTo: {TO}\r\nMessage-ID: {msgid}\r\n"
               f"{rest}").encode()
        signed = subprocess.run([f"{tools}/dkim_tool", "sign", up_dir, "upstream.example"],
                                input=raw, capture_output=True, timeout=60)
        h.check(signed.returncode == 0, f"upstream signing failed: {signed.stderr!r}")
        res = h.send(relay.host, relay.port, "carol@bounce.example.net", [TO], signed.stdout,
                     source_addr=h.ZIMBRA_IP)
        h.check(res.accepted, f"{msgid}: not accepted: {res.steps}")

    # refused rather than corrupted: a structured field with nothing to fold at
    res = h.send(relay.host, relay.port, "alice@example.org", [TO],
                 f"From: {FROM}\r\nTo: {TO}\r\nReferences: <{'r' * 1200}@example.org>\r\n"
                 f"Subject: refs\r\n\r\nbody\r\n".encode(), source_addr=h.ZIMBRA_IP)
    h.check(res.code("data") == 554 and "998" in (res.reply("data")[1] or ""),
            f"unfoldable References: not refused at DATA: {res.steps}")

    def dnsfunc(name, timeout=5):
        return dig_txt(nsd, name.decode().rstrip("."))

    env.wait_for(lambda: len(sink.messages()) >= len(originals) + 1 + len(platform), 90,
                 "every message at the strict sink")  # + the 998 probe
    refused = [e for e in sink.replies() if e.get("reply", "").startswith("500")]
    h.check(len(refused) == 1, f"the sink refused relayed messages as too long: {refused}")
    seen = set()
    for m in sink.messages():
        if m.mail_from == "probe@example.org":
            continue
        if m.message_id in platform:
            seen.add(m.message_id)
            try:
                ok = dkim.DKIM(m.raw).verify(idx=0, dnsfunc=dnsfunc)
            except dkim.ValidationError:  # dkimpy raises for a body hash mismatch
                ok = False
            h.check(ok == platform[m.message_id][2],
                    f"{m.message_id}: platform signature verifies in dkimpy: {ok}")
            continue
        label, _ = expect.get(m.message_id, (None, None))
        h.check(label, f"unexpected message at the sink: {m.message_id}")
        seen.add(m.message_id)
        longest = max(len(line) for line in m.raw.split(b"\r\n"))
        h.check(longest <= 998, f"{label}: a line of {longest} octets left the relay")
        sigs = [k for k in m.msg.keys() if k.lower() == "dkim-signature"]
        h.check(len(sigs) == 1, f"{label}: {len(sigs)} DKIM signatures")
        h.check(dkim.DKIM(m.raw).verify(idx=0, dnsfunc=dnsfunc),
                f"{label}: our signature does not verify in dkimpy")
        before, after = leaves(originals[m.message_id]), leaves(m.raw)
        h.check(before == after, f"{label}: decoded content changed:\n{before!r:.600}\n"
                                 f"{after!r:.600}")
        if label == "exactly-998":
            h.check(originals[m.message_id] in m.raw, f"{label}: changed though it fitted")
    h.check(seen == set(expect) | set(platform),
            f"missing at the sink: {set(expect) - seen}")

    signed_ev = relay.events("SELECT message_id, detail FROM events WHERE event='signed'")
    details = {r["message_id"]: r["detail"] or "" for r in signed_ev}
    for msgid, (label, says) in expect.items():
        if says:
            h.check(details.get(msgid, "").startswith("transformed: ") and
                    says in details.get(msgid, ""),
                    f"{label}: signed record detail {details.get(msgid)!r}, expected {says!r}")
        else:
            h.check("transformed" not in details.get(msgid, ""),
                    f"{label}: recorded as transformed: {details.get(msgid)!r}")
    checked = relay.events("SELECT message_id, dmarc_result, detail FROM events "
                           "WHERE event='checked' AND from_domain='upstream.example'")
    h.log(f"predictions for the transformed platform-signed messages: {checked}")
    verdicts = {r["message_id"]: r["dmarc_result"] for r in checked}
    h.check(verdicts == {k: v[1] for k, v in platform.items()},
            f"DMARC predictions {verdicts}; receivers say {platform}")
    up = relay.events("SELECT message_id, dkim, detail FROM events WHERE event='dkim-upstream'")
    h.check(len(up) == 2 and all("transport-safe" in (r["detail"] or "") for r in up),
            f"dkim-upstream records do not say the data was changed first: {up}")
    relay.stop()


if __name__ == "__main__":
    h.main(test)
