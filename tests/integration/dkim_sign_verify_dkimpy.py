"""dkim_sign_verify_dkimpy.py - outrelay's DKIM signatures verify in an independent implementation.

Generates an RSA-2048 and an Ed25519 key for example.org with `dkim_tool keygen`, publishes the
TXT records it prints (already zone-file syntax, long p= split into <=255-byte strings) in an NSD
zone, signs a set of awkward messages with `dkim_tool sign` and checks with dkimpy (querying that
NSD through dnspython) that both signatures of every message verify. Also: the published p= values
match what the openssl CLI derives from the key files; `dkim_tool verify` against the NSD says
pass for both, fail after a body change, fail for an unpublished selector and temperror for a
domain no server answers for. Messages with LF-only line endings are turned into CRLF by
dkim_tool before signing (the relay's spool holds CRLF), so dkimpy sees the CRLF form. Messages
libopendkim would sign into signatures that do not verify (a header field over 65,000 bytes,
several From: fields) are refused by `dkim_tool sign` with "not signed: ...".
"""
import base64
import os
import re
import subprocess

import dkim
import dns.message
import dns.query
import dns.rdatatype

import harness as h

TOOLS = os.environ.get("OUTRELAY_TOOLS", "")
DOMAIN = "example.org"


def tool(*args, stdin=b"", check_ok=True):
    exe = os.path.join(TOOLS, "dkim_tool")
    h.check(os.access(exe, os.X_OK), f"dkim_tool not built at {exe} (set OUTRELAY_TOOLS)")
    r = subprocess.run([exe] + [str(a) for a in args], input=stdin, capture_output=True,
                       timeout=120)
    if check_ok:
        h.check(r.returncode == 0, lambda: f"dkim_tool {' '.join(map(str, args))} exited "
                f"{r.returncode}: {r.stderr.decode(errors='replace')}")
    return r


def record_strings(txt):
    """The character-strings of a record as dkim_dns_record prints it."""
    return re.findall(r'"([^"]*)"', txt)


def openssl_public_b64(pem_path, ed25519):
    der = subprocess.run(["openssl", "pkey", "-in", pem_path, "-pubout", "-outform", "DER"],
                         capture_output=True, check=True).stdout
    return base64.b64encode(der[-32:] if ed25519 else der).decode()


def messages():
    """name -> message bytes (CRLF unless the name says otherwise)."""
    crlf = lambda s: s.replace("\n", "\r\n").encode("utf-8")
    common = ("From: Alice Example <alice@example.org>\n"
              "To: bob@example.net\n"
              "Date: Mon, 30 Nov 2026 01:02:03 +0000\n")
    out = {}
    out["multipart_alternative"] = crlf(
        common + "Subject: multipart\nMessage-ID: <mp.1@example.org>\nMIME-Version: 1.0\n"
        'Content-Type: multipart/alternative; boundary="b1"\n\n'
        "This is a multi-part message in MIME format.\n\n--b1\n"
        "Content-Type: text/plain; charset=us-ascii\n\nHello in plain text.\n\n--b1\n"
        "Content-Type: text/html; charset=us-ascii\n\n<html><body><p>Hello "
        "in <b>HTML</b></p></body></html>\n\n--b1--\n")
    out["utf8_8bit_body"] = crlf(
        common + "Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\nMessage-ID: <u8.1@example.org>\n"
        "MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n"
        "Content-Transfer-Encoding: 8bit\n\n"
        "Grüße aus Köln — naïve café, 日本語のテキスト, emoji 📨.\n"
        "Trailing spaces and tabs \t \nend\n\n\n")
    out["long_folded_headers"] = crlf(
        "From: Alice Example <alice@example.org>\n"
        "To: first.recipient@example.net, second.recipient@example.net,\n"
        "  third.recipient@example.net, fourth.recipient@example.net,\n"
        "\tfifth.recipient@example.net\n"
        "Cc: cc.one@example.com,\n   cc.two@example.com\n"
        "Date: Mon, 30 Nov 2026 01:02:03 +0000\n"
        "Subject: A subject line that is long enough that it has to be folded over\n"
        " several lines, with   odd    internal   spacing and a\n"
        "\t tab-started continuation\n"
        "Message-ID: <folded.1@example.org>\n"
        "References: <a.1@example.org> <b.2@example.org> <c.3@example.org>\n"
        " <d.4@example.org> <e.5@example.org>\n"
        "List-Unsubscribe: <mailto:unsub@example.org?subject=unsubscribe>,\n"
        " <https://example.org/unsubscribe/0123456789abcdef0123456789abcdef>\n"
        "List-Unsubscribe-Post: List-Unsubscribe=One-Click\n\nbody\n")
    out["lines_starting_with_dots"] = crlf(
        common + "Subject: dots\nMessage-ID: <dots.1@example.org>\n\n"
        ".\n..\n.leading dot\n..two leading dots\n. \nmiddle . line\n.\n")
    out["lf_only_line_endings"] = (
        common + "Subject: LF only\nMessage-ID: <lf.1@example.org>\n\n"
        "line one\nline two\n\nline four\n").encode()
    out["empty_body"] = crlf(common + "Subject: empty\nMessage-ID: <empty.1@example.org>\n\n")
    out["headers_only_no_separator"] = crlf(common + "Subject: nothing after me\n")
    # the longest header field outrelay signs (65,000 bytes with its name)
    out["subject_at_the_length_limit"] = crlf(
        common + "Message-ID: <long.1@example.org>\nSubject: " + "s" * (65000 - 9) + "\n\nb\n")
    return out


def unsignable():
    """name -> a message libopendkim would sign into a signature nobody verifies (checked with
    dkimpy before the fix: both signatures failed); outrelay must refuse to sign them."""
    crlf = lambda s: s.replace("\n", "\r\n").encode("utf-8")
    rest = "To: bob@example.net\nDate: Mon, 30 Nov 2026 01:02:03 +0000\n\nbody\n"
    return {
        "subject_of_70000_bytes": crlf(
            "From: a@example.org\nSubject: " + "x" * 70000 + "\n" + rest),
        "from_of_70000_bytes": crlf("From: " + "a" * 70000 + "@example.org\n" + rest),
        "folded_subject_of_72000_bytes": crlf(
            "From: a@example.org\nSubject:" + "\n word" * 12000 + "\n" + rest),
        "1000_from_fields": crlf("".join(f"From: u{i}@example.org\n" for i in range(1000)) + rest),
        "2_from_fields": crlf("From: a@example.org\nFrom: b@example.org\n" + rest),
    }


def test(env):
    keys = env.path("keys")
    rsa_txt = tool("keygen", keys, DOMAIN, "rsa2026", "rsa").stdout.decode()
    ed_txt = tool("keygen", keys, DOMAIN, "ed2026", "ed25519").stdout.decode()
    h.log("published records:\n" + rsa_txt + ed_txt)
    r = tool("keygen", keys, DOMAIN, "ed2026", "ed25519", check_ok=False)
    h.check(r.returncode != 0 and b"refusing to overwrite" in r.stderr,
            f"keygen overwrote an existing key: {r}")

    # The records: zone syntax as printed, strings <= 255 bytes, p= = what openssl derives.
    expected = {}
    for sel, txt, ed in (("rsa2026", rsa_txt, False), ("ed2026", ed_txt, True)):
        h.check(txt.startswith(f"{sel}._domainkey.{DOMAIN}. IN TXT ( "),
                f"unexpected record owner: {txt!r}")
        strings = record_strings(txt)
        h.check(all(len(s.encode()) <= 255 for s in strings),
                f"a TXT string is longer than 255 bytes: {[len(s) for s in strings]}")
        joined = "".join(strings)
        pem = os.path.join(keys, DOMAIN, f"{sel}.{'ed25519' if ed else 'rsa'}.pem")
        h.check(oct(os.stat(pem).st_mode & 0o777) == "0o600", f"{pem} is not mode 0600")
        want = f"v=DKIM1; k={'ed25519' if ed else 'rsa'}; p={openssl_public_b64(pem, ed)}"
        h.check(joined == want, f"record for {sel} is {joined!r}, openssl says {want!r}")
        expected[f"{sel}._domainkey.{DOMAIN}."] = joined
    h.check(len(record_strings(rsa_txt)) >= 3, "the RSA-2048 p= was not split")

    # Keys the DNS will not vouch for: an unpublished selector, and a domain NSD refuses.
    nopub = env.path("keys-nopub")
    tool("keygen", nopub, DOMAIN, "unpublished", "ed25519")
    unserved = env.path("keys-unserved")
    tool("keygen", unserved, "unserved.test", "s1", "ed25519")

    zones = h.default_zones()
    zones[DOMAIN] += rsa_txt + ed_txt
    nsd = h.Nsd(env, zones)
    h.check(nsd.query(f"rsa2026._domainkey.{DOMAIN}", "TXT"), "NSD does not serve the RSA key")

    def dnsfunc(name, timeout=5):
        """dkimpy's key lookup, answered by the NSD (not by a dict)."""
        qname = name.decode() if isinstance(name, bytes) else name
        q = dns.message.make_query(qname, dns.rdatatype.TXT)
        resp = dns.query.udp(q, nsd.ip, port=nsd.port, timeout=timeout)
        for rrset in resp.answer:
            if rrset.rdtype == dns.rdatatype.TXT:
                txt = b"".join(list(rrset)[0].strings)
                h.check(txt.decode() == expected.get(qname),
                        f"NSD answered {txt!r} for {qname}, expected {expected.get(qname)!r}")
                return txt
        return None

    for name, msg in messages().items():
        r = tool("sign", keys, DOMAIN, stdin=msg)
        signed = r.stdout
        h.check(signed.count(b"DKIM-Signature:") == 2,
                f"{name}: expected two DKIM-Signature fields:\n{signed[:1500]!r}")
        h.check(b"\n" not in signed.replace(b"\r\n", b""), f"{name}: bare LF in signed output")
        h.check(signed.endswith(msg.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")),
                f"{name}: the signed output does not end with the (CRLF) original")
        d = dkim.DKIM(signed)
        algs = set()
        for idx in range(2):
            try:
                ok = d.verify(idx=idx, dnsfunc=dnsfunc)
            except dkim.ValidationError as e:
                h.fail(f"{name}: dkimpy rejected signature {idx}: {e}\n{signed[:2500]!r}")
            h.check(ok, f"{name}: dkimpy says signature {idx} does not verify\n"
                    f"{signed[:2500]!r}")
            algs.add(d.signature_fields[b"a"].decode())
        h.check(algs == {"rsa-sha256", "ed25519-sha256"}, f"{name}: algorithms {algs}")

        out = tool("verify", nsd.server, stdin=signed).stdout.decode()
        lines = sorted(out.splitlines())
        want = sorted([f"pass d={DOMAIN} s=ed2026 a=ed25519-sha256 ",
                       f"pass d={DOMAIN} s=rsa2026 a=rsa-sha256 "])
        h.check(lines == want, f"{name}: dkim_tool verify said {out!r}")

        # A body change: dkimpy and dkim_tool both fail both signatures.
        # (A message without a header/body separator gets one, or the line would be a header.)
        tampered = signed + (b"" if b"\r\n\r\n" in signed else b"\r\n") + b"appended line\r\n"
        d = dkim.DKIM(tampered)
        for idx in range(2):
            try:
                ok = d.verify(idx=idx, dnsfunc=dnsfunc)
            except dkim.ValidationError:
                ok = False
            h.check(not ok, f"{name}: dkimpy accepted signature {idx} after a body change")
        out = tool("verify", nsd.server, stdin=tampered).stdout.decode()
        h.check(len(out.splitlines()) == 2 and
                all(l.startswith("fail ") and "body hash mismatch" in l
                    for l in out.splitlines()),
                f"{name}: after a body change dkim_tool verify said {out!r}")
        h.log(f"{name}: both signatures verify in dkimpy and dkim_tool; tampering detected")

    # Whatever outrelay signs verifies: what libopendkim would get wrong is not signed at all.
    for name, msg in unsignable().items():
        r = tool("sign", keys, DOMAIN, stdin=msg, check_ok=False)
        err = r.stderr.decode(errors="replace")
        h.check(r.returncode != 0 and b"DKIM-Signature:" not in r.stdout and "not signed: " in err,
                f"{name}: signed anyway (exit {r.returncode}): {err}")
        h.log(f"{name}: refused: {err.strip()}")

    msg = messages()["utf8_8bit_body"]
    signed = tool("sign", nopub, DOMAIN, stdin=msg).stdout
    out = tool("verify", nsd.server, stdin=signed).stdout.decode().strip()
    h.check(out.startswith(f"fail d={DOMAIN} s=unpublished a=ed25519-sha256 "),
            f"unpublished selector: {out!r}")
    signed = tool("sign", unserved, "unserved.test", stdin=msg).stdout
    out = tool("verify", nsd.server, stdin=signed).stdout.decode().strip()
    h.check(out.startswith("temperror d=unserved.test s=s1 a=ed25519-sha256 "),
            f"unanswerable DNS: {out!r}")
    out = tool("verify", nsd.server, stdin=msg).stdout.decode().strip()
    h.check(out == "none", f"unsigned message: {out!r}")

    bench = tool("bench", keys, DOMAIN, 200).stdout.decode()
    h.log("signing time (this build):\n" + bench)


if __name__ == "__main__":
    h.main(test)
