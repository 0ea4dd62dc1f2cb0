"""receiver_agreement.py - outrelay's SPF/DMARC prediction (the `checked` record) agrees with what
an independent receiver concludes from the bytes that actually arrive: rspamd from Debian (its own
SPF, DKIM and DMARC code; tests/lib/rspamd_judge.py) resolving through the same test NSD.

Each case is a sender domain with its own DNS (SPF authorising legacy only, both egresses or
nothing; our DKIM key published, not published, published with h=sha1 or t=y, Ed25519; DMARC
p=reject, p=none, adkim=s) and a message kind (signed by outrelay; signed by the platform and kept
through the `keeper` origin; From: with a quoted display name holding another address). Every case
goes through two relays, one that sends everything via legacy (127.0.0.2) and one whose ramp sends
everything via cloud (127.0.0.3). The aiosmtpd sink keeps the exact bytes; rspamd judges them with
the client IP, HELO and MAIL FROM the sink saw. Compared: the SPF result, each DKIM signature's
verdict and the DMARC result. The test prints the matrix and fails on any
disagreement not listed in KNOWN_DISAGREEMENTS (with which side is right per RFC, and why), and on
a listed one that no longer happens.
"""
import subprocess

import harness as h
import rspamd_judge

SPF_TXT = {"legacy": f"v=spf1 ip4:{h.LEGACY_IP} -all",
           "both": f"v=spf1 ip4:{h.LEGACY_IP} ip4:{h.CLOUD_IP} -all",
           None: None}
EGRESS = {"legacy": h.LEGACY_IP, "cloud": h.CLOUD_IP}


class Case:
    """name: the row label. zone: the sender's zone. spf: key of SPF_TXT. key: our DKIM key in
    keys/<zone>/ and how DNS publishes it: None (we hold no key), "rsa", "ed25519", "unpublished",
    "rsa-h-sha1", "rsa-t-y". dmarc: the _dmarc TXT. kind: "ours" (plain message, the relay signs if
    it has a key), "upstream" (the platform signs d=<zone>, the keeper origin keeps it), "quoted"
    (From: "Bob <bob@other.example>" <alice@...>). sub: the From domain is news.<zone>."""

    def __init__(self, name, zone, spf, key, dmarc, kind="ours", sub=False):
        self.name, self.zone, self.spf, self.key = name, zone, spf, key
        self.dmarc, self.kind, self.sub = dmarc, kind, sub

    @property
    def from_domain(self):
        return f"news.{self.zone}" if self.sub else self.zone


REJECT = "v=DMARC1; p=reject"
CASES = [
    Case("spf legacy only", "spf-legacy.example", "legacy", None, REJECT),
    Case("spf both egresses", "spf-both.example", "both", None, REJECT),
    Case("no spf record", "spf-none.example", None, None, REJECT),
    Case("spf legacy, p=none", "p-none.example", "legacy", None, "v=DMARC1; p=none"),
    Case("our rsa key published", "dkim-rsa.example", None, "rsa", REJECT),
    Case("our ed25519 key published", "dkim-ed.example", None, "ed25519", REJECT),
    Case("our key not published", "dkim-missing.example", None, "unpublished", REJECT),
    Case("our key with h=sha1", "dkim-sha1.example", None, "rsa-h-sha1", REJECT),
    Case("our key with t=y", "dkim-testing.example", None, "rsa-t-y", REJECT),
    Case("spf legacy + our key", "spf-dkim.example", "legacy", "rsa", REJECT),
    Case("ours for subdomain, adkim=r", "relaxed.example", None, "rsa", REJECT, sub=True),
    Case("ours for subdomain, adkim=s", "strict.example", None, "rsa",
         "v=DMARC1; p=reject; adkim=s", sub=True),
    Case("kept upstream signature", "kept.example", None, None, REJECT, kind="upstream"),
    Case("kept upstream, adkim=s, sub", "kept-strict.example", None, None,
         "v=DMARC1; p=reject; adkim=s", kind="upstream", sub=True),
    Case("quoted display name + our key", "quoted.example", None, "rsa", REJECT, kind="quoted"),
    Case("quoted display name + spf", "quoted-spf.example", "legacy", None, REJECT,
         kind="quoted"),
]

# (case name, egress or "*", field) -> why the two disagree and which one is right. Fields: "spf"
# (the SPF result), "dkim" (each signature's verdict: outrelay's key=ok/mismatch against rspamd's
# R_DKIM_ALLOW/REJECT/PERMFAIL), "dmarc" (pass/fail/none; rspamd's SOFTFAIL under p=none is fail).
# The test fails when a disagreement is missing here, and when one listed here no longer happens.
KNOWN_DISAGREEMENTS = {
    ("our key with h=sha1", "*", "dkim"):
        "outrelay is right (our signature fails); see the dmarc entry.",
    ("our key with h=sha1", "*", "dmarc"):
        "outrelay is right (fail). The key record says h=sha1 and we sign rsa-sha256; RFC 6376 "
        "3.6.1 (h=) and 6.1.2 step 6: when the key's h= does not include the signature's hash the "
        "verifier MUST ignore the key and return PERMFAIL, so the only aligned signature fails "
        "and DMARC fails (no SPF record). rspamd 3.4 reads only p= and k= from key records "
        "(rspamd_dkim_parse_key ignores h=, s= and t=), so it verifies the signature and says "
        "DMARC_POLICY_ALLOW. libopendkim follows the RFC (its verifier answers 'signature-key "
        "hash mismatch' for this key), and predicting the failure is the safe side: a receiver "
        "that ignores h= accepts more than outrelay predicted, never less.",
}


def write(path, text):
    with open(path, "w") as fh:
        fh.write(text)
    return path


def run(argv, what, stdin=None):
    r = subprocess.run(argv, input=stdin, capture_output=True, timeout=60,
                       text=stdin is None)
    h.check(r.returncode == 0, lambda: f"{what} failed: {r.stderr}")
    return r.stdout


def make_keys(env):
    """Our keys (outrelay keygen into keys/) and the platform's (dkim_tool keygen); returns the
    zone additions {zone: records}."""
    keygen_cfg = write(env.path("keygen.yaml"), f"keys: {env.path('keys')}\n")
    upstream_dir = env.path("upstream-keys")
    records = {}
    # tags added to the record outrelay keygen prints; RFC 6376 3.6.1
    extra_tags = {"rsa-h-sha1": "h=sha1; ", "rsa-t-y": "t=y; "}
    for c in CASES:
        text = ""
        if c.key:
            alg = ["--ed25519"] if c.key == "ed25519" else ["--rsa", "2048"]
            text = run([env.bin, "keygen", c.zone, "s1", *alg, "-c", keygen_cfg],
                       f"outrelay keygen {c.zone}")
            if c.key == "unpublished":
                text = ""   # the relay signs with it; DNS knows nothing
            elif c.key in extra_tags:
                tagged = text.replace('"v=DKIM1; k=rsa; "',
                                      f'"v=DKIM1; {extra_tags[c.key]}k=rsa; "')
                h.check(tagged != text, f"keygen's record no longer starts as expected: {text}")
                text = tagged
        if c.kind == "upstream":
            text += run([f"{env.tools}/dkim_tool", "keygen", upstream_dir, c.zone, "zm", "rsa"],
                        f"dkim_tool keygen {c.zone}")
        records[c.zone] = text
    return records, upstream_dir


def zones(key_records):
    z = h.default_zones()
    for c in CASES:
        body = f"@ IN MX 10 mx\nmx IN A {h.MX_EXAMPLE_ORG}\n"
        if SPF_TXT[c.spf]:
            body += f'@ IN TXT "{SPF_TXT[c.spf]}"\n'
        body += f'_dmarc IN TXT "{c.dmarc}"\n' + key_records[c.zone]
        z[c.zone] = h.zone_text(c.zone, body)
    # the address inside the quoted display name: a strict policy and nothing that passes, so
    # a parser that takes it for the From domain predicts a failure
    z["other.example"] = h.zone_text("other.example", '_dmarc IN TXT "v=DMARC1; p=reject"\n'
                                                      '@ IN TXT "v=spf1 -all"\n')
    return z


def message(env, c, egress, upstream_dir):
    msgid = f"<{c.zone}.{egress}@test.outrelay>"
    sender = f"alice@{c.from_domain}"
    from_field = (f'"Bob <bob@other.example>" <{sender}>' if c.kind == "quoted"
                  else f"Alice <{sender}>")
    raw = (f"From: {from_field}\r\nTo: bob@example.net\r\nMessage-ID: {msgid}\r\n"
           f"Date: Sun, 06 Dec 2026 10:00:00 +0000\r\nSubject: {c.name} via {egress}\r\n"
           "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
           f"Case {c.name}, egress {egress}.\r\n").encode()
    if c.kind == "upstream":
        raw = run([f"{env.tools}/dkim_tool", "sign", upstream_dir, c.zone], f"signing {c.name}",
                  stdin=raw)
    return msgid, sender, raw


def outrelay_verdict(relay, msgid, egress):
    rows = relay.events("SELECT * FROM events WHERE event='checked' AND message_id=? AND "
                        "egress=? ORDER BY ts_us", (msgid, egress))
    return rows[-1] if rows else None


def dkim_signatures(text):
    """outrelay's dkim column ('d=x s=y a=z key=ok aligned; ...') as {(d, s): verdict} (key=ok:
    the published key is the one that signed, so the signature verifies) and a short summary."""
    sigs, summary = {}, []
    for part in (text or "").split("; "):
        fields = dict(f.split("=", 1) for f in part.split() if "=" in f)
        if not fields:
            continue
        key = fields.get("key")
        sigs[(fields.get("d", "").lower(), fields.get("s"))] = (
            "pass" if key == "ok" else "fail" if key == "mismatch" else "temperror")
        flags = [w for w in part.split() if "=" not in w]
        summary.append(f"{fields.get('d')}:{key},{','.join(flags)}")
    return sigs, " ".join(summary) or "-"


def signature_text(sigs):
    return " ".join(f"{d}/{s}={v}" for (d, s), v in sorted(sigs.items())) or "none"


def print_matrix(rows):
    head = ("case", "egress", "outrelay spf/dkim/dmarc", "rspamd spf/dkim/dmarc", "",
            "outrelay's dkim record", "rspamd's symbols")
    table = [head] + rows
    widths = [max(len(str(r[i])) for r in table) for i in range(5)]
    print("\n" + "=" * 40 + " receiver agreement " + "=" * 40, flush=True)
    for r in table:
        print("  ".join(str(r[i]).ljust(widths[i]) for i in range(5))
              + f"  {r[5]}  |  {r[6]}", flush=True)
    print("=" * 100, flush=True)


def test(env):
    h.need_binary(env)
    h.check(rspamd_judge.available(), "rspamd is not installed: apt-get install rspamd "
            "(listed in contrib/packages-test.txt)")
    key_records, upstream_dir = make_keys(env)
    nsd = h.Nsd(env, zones=zones(key_records))
    judge = rspamd_judge.RspamdJudge(env, nsd)

    mx_port = env.free_port(h.SINK_IPS + [h.LEGACY_IP, h.CLOUD_IP])
    sink = h.PySink(env, h.MX_EXAMPLE_NET, mx_port, "example.net")
    egress = {"legacy": {"type": "direct", "source": [h.LEGACY_IP],
                         "helo": "legacy.outrelay.test"},
              "cloud": {"type": "direct", "source": [h.CLOUD_IP], "helo": "cloud.outrelay.test"}}
    origins = {"keeper": {"networks": [f"{h.ZIMBRA_IP}/32"]}}
    ramps = {"legacy": {"from": "legacy"},
             "cloud": {"from": "legacy", "to": "cloud",
                       "schedule": [{"at": "2020-01-01T00:00:00Z", "percent": 100}]}}
    relays = {}
    for name, ramp in ramps.items():
        cfg = h.standard_config(env, nsd, mx_port, origins=origins, egress=egress,
                                spool=env.path(f"spool-{name}"), state=env.path(f"state-{name}"),
                                ramp=ramp)
        relays[name] = h.Relay(env, cfg, name=f"outrelay-{name}")

    sent = {}   # msgid -> (case, egress)
    for c in CASES:
        for eg, relay in relays.items():
            msgid, sender, raw = message(env, c, eg, upstream_dir)
            res = h.send(relay.host, relay.port, sender, ["bob@example.net"], raw,
                         source_addr=h.ZIMBRA_IP)
            h.check(res.accepted, f"{c.name} via {eg}: not accepted: {res}")
            sent[msgid] = (c, eg)

    def delivered():
        got = {m.message_id: m for m in sink.messages() if m.message_id in sent}
        return got if len(got) == len(sent) else None

    arrived = env.wait_for(delivered, 90, lambda: f"{len(sent)} messages at the sink")
    env.wait_for(lambda: all(outrelay_verdict(relays[eg], mid, eg) for mid, (c, eg)
                             in sent.items()), 30, "a checked record for every message")

    problems, rows, seen = [], [], set()
    for msgid, (c, eg) in sent.items():
        m = arrived[msgid]
        h.check(m.client_addr == EGRESS[eg], f"{c.name}: sent via {eg} but arrived from "
                                             f"{m.client_addr}")
        ours = outrelay_verdict(relays[eg], msgid, eg)
        theirs = judge.verdict(m.raw, ip=m.client_addr, helo=m.helo, mail_from=m.mail_from,
                               rcpt=m.rcpts[0])
        for sym in ("R_SPF_DNSFAIL", "R_DKIM_TEMPFAIL", "DMARC_DNSFAIL"):
            h.check(sym not in theirs.symbols, f"{c.name} via {eg}: rspamd had DNS trouble "
                                               f"({theirs.describe()}): the test world is broken")
        our_sigs, our_dkim = dkim_signatures(ours["dkim"])
        fields = {"spf": (ours["spf_result"], theirs.spf),
                  "dkim": (signature_text(our_sigs), signature_text(theirs.signatures)),
                  "dmarc": (ours["dmarc_result"], theirs.dmarc)}
        mark = ""
        for field, (mine, other) in fields.items():
            if mine == other:
                continue
            key = next((k for k in ((c.name, eg, field), (c.name, "*", field))
                        if k in KNOWN_DISAGREEMENTS), None)
            if key:
                seen.add(key)
                mark = mark or "known"
                continue
            mark = "DIFFERS"
            problems.append(f"{c.name} via {eg}: {field} outrelay={mine} rspamd={other} "
                            f"(outrelay: {ours['detail']}; rspamd: {theirs.describe()})")

        def short(sigs):
            return "+".join(sorted(set(sigs.values()))) or "-"

        rows.append((c.name, eg,
                     f"{ours['spf_result']}/{short(our_sigs)}/{ours['dmarc_result']}",
                     f"{theirs.spf}/{short(theirs.signatures)}/{theirs.dmarc}", mark,
                     our_dkim, theirs.describe()))
    rows.sort(key=lambda r: ([c.name for c in CASES].index(r[0]), r[1] != "legacy"))
    print_matrix(rows)
    for key, why in KNOWN_DISAGREEMENTS.items():
        h.log(f"known disagreement {key}: {why}")
    stale = [k for k in KNOWN_DISAGREEMENTS if k not in seen]
    problems += [f"{k}: listed in KNOWN_DISAGREEMENTS but outrelay and rspamd now agree; remove "
                 f"the entry" for k in stale]
    for relay in relays.values():
        relay.stop()
    judge.stop()
    h.check(not problems, lambda: f"{len(problems)} disagreement(s) with rspamd:\n  "
            + "\n  ".join(problems))


if __name__ == "__main__":
    h.main(test)
