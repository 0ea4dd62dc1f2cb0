"""bdat_egress_postfix.py - outrelay sends with BDAT (RFC 3030) to a real Postfix smtpd.

The MX of example.net is a throw-away Postfix (tests/lib/postfix_instance.py), which offers
CHUNKING and PIPELINING and relays what it gets to the Python sink (which keeps the exact bytes).
Proves: a 3 MB message goes as several pipelined BDAT chunks and a small one as one (Postfix's
smtpd counts bdat= and no data= for our connections); both arrive byte-identical below the
headers we and Postfix add, with lines that DATA would have dot-stuffed ("." alone, leading
dots); our DKIM signature verifies in dkimpy; a refused recipient next to an accepted one keeps
its own result. With egress chunking: false the next message goes with DATA.
"""
import re
import subprocess
import time

import dkim

import harness as h
import postfix_instance


def dig_txt(nsd, name):
    out = subprocess.run(["dig", "+short", "+tcp", "-p", str(nsd.port), f"@{nsd.ip}", name, "TXT"],
                         capture_output=True, text=True, timeout=10).stdout
    records = ["".join(p for p in line.split('"') if p.strip()) for line in out.splitlines()]
    return " ".join(records).encode() if records else None


def message(msgid, subject, body_lines):
    head = (f"From: Alice <alice@example.org>\r\nTo: <bob@example.net>\r\n"
            f"Subject: {subject}\r\nDate: Thu, 01 Jan 2026 00:00:00 +0000\r\n"
            f"Message-ID: {msgid}\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: text/plain; charset=us-ascii\r\n\r\n")
    return head.encode() + b"".join(line + b"\r\n" for line in body_lines)


def smtpd_sessions(pf):
    """Postfix smtpd's per-session command counts for connections from our egress."""
    return [line for line in pf.log().splitlines()
            if " disconnect from " in line and f"[{h.LEGACY_IP}]" in line]


def test(env):
    h.need_binary(env)
    h.log(f"postfix {postfix_instance.version()}")
    keys_dir = env.path("keys")
    probe = env.path("keygen.yaml")
    with open(probe, "w") as fh:
        fh.write(f"keys: {keys_dir}\n")
    r = subprocess.run([env.bin, "keygen", "example.org", "s1", "--rsa", "2048", "-c", probe],
                       capture_output=True, text=True, timeout=60)
    h.check(r.returncode == 0, f"keygen: {r.stderr}")
    zones = h.default_zones()
    zones["example.org"] += r.stdout
    nsd = h.Nsd(env, zones=zones)
    mx_port = env.free_port(h.SINK_IPS + [h.LEGACY_IP])
    sink_port = env.free_port([h.RELAY_IP])
    sink = h.PySink(env, h.RELAY_IP, sink_port, "behind-postfix")
    pf = postfix_instance.Postfix(env, h.MX_EXAMPLE_NET, mx_port, f"[{h.RELAY_IP}]:{sink_port}",
                                  main_extra={"smtpd_recipient_restrictions":
                                              "check_recipient_access inline:{ "
                                              "nobody@example.net=REJECT }, "
                                              "permit_mynetworks, reject"})

    def dnsfunc(name, timeout=5):
        return dig_txt(nsd, name.decode().rstrip("."))

    cfg = h.standard_config(env, nsd, mx_port)
    relay = h.Relay(env, cfg)
    big_lines = [b"." , b".leading dot", b"..two dots"] + \
        [f"line {i:07d} ".encode() + b"x" * 60 for i in range(45000)] + [b".", b"end"]
    big = message("<bdat-big@example.org>", "big", big_lines)
    small = message("<bdat-small@example.org>", "small", [b"hello", b".", b".x", b"bye"])
    h.check(len(big) > 3 * 1024 * 1024, f"the big message is only {len(big)} bytes")
    for data, rcpts in ((big, ["bob@example.net"]),
                        (small, ["bob@example.net", "nobody@example.net"])):
        res = h.send(relay.host, relay.port, "alice@example.org", rcpts, data,
                     source_addr=h.ZIMBRA_IP)
        h.check(res.accepted, f"relay refused: {res}")
    env.wait_for(lambda: len(sink.messages()) >= 2, 120, "both messages behind Postfix")
    # the refused recipient bounces with Postfix's answer
    env.wait_for(lambda: relay.events("SELECT 1 FROM events WHERE event='bounced' AND "
                                      "recipient='nobody@example.net'"),
                 60, "the bounce of nobody@example.net")
    env.wait_for(lambda: len(smtpd_sessions(pf)) >= 1, 30, "Postfix logging our session")

    for m in sink.messages():
        want = big if m.message_id == "<bdat-big@example.org>" else small
        h.check(m.raw.endswith(want), f"{m.message_id} changed on the way "
                f"(got {len(m.raw)} bytes, tail {m.raw[-200:]!r})")
        h.check(m.rcpts == ["bob@example.net"], f"{m.message_id}: recipients {m.rcpts}")
        d = dkim.DKIM(m.raw)
        h.check(d.verify(dnsfunc=dnsfunc), f"{m.message_id}: our DKIM signature does not verify")
        h.check(b"d=example.org" in m.raw, f"{m.message_id}: not signed by example.org")
    sessions = smtpd_sessions(pf)
    h.log("postfix smtpd sessions: " + " | ".join(s.split("disconnect from ")[1] for s in sessions))
    bdat = sum(int(x) for s in sessions for x in re.findall(r" bdat=(\d+)", s))
    h.check(bdat >= 4, f"Postfix counted {bdat} BDAT commands (want several chunks for 3 MB "
            f"plus one for the small message): {sessions}")
    h.check(not any(" data=" in s for s in sessions), f"a message went with DATA: {sessions}")
    ok = relay.events("SELECT recipient FROM events WHERE event='delivered'")
    h.check(sorted(r["recipient"] for r in ok) == ["bob@example.net", "bob@example.net"],
            f"delivered events: {ok}")
    relay.stop()

    # --- chunking: false -------------------------------------------------------------------------
    before = len(sessions)
    cfg["egress"]["legacy"]["chunking"] = False
    relay = h.Relay(env, cfg, name="outrelay-no-chunking")
    plain = message("<data-plain@example.org>", "plain", [b"hello", b".", b"bye"])
    res = h.send(relay.host, relay.port, "alice@example.org", ["bob@example.net"], plain,
                 source_addr=h.ZIMBRA_IP)
    h.check(res.accepted, f"relay refused: {res}")
    env.wait_for(lambda: len(sink.messages()) >= 3, 60, "the DATA message behind Postfix")
    env.wait_for(lambda: len(smtpd_sessions(pf)) > before, 30, "Postfix logging the session")
    time.sleep(0.5)
    last = smtpd_sessions(pf)[before:]
    h.check(all(" data=1" in s and " bdat=" not in s for s in last),
            f"with chunking: false the message must go with DATA: {last}")
    m = [m for m in sink.messages() if m.message_id == "<data-plain@example.org>"][0]
    h.check(m.raw.endswith(plain), f"the DATA message changed: {m.raw[-120:]!r}")
    relay.stop()
    pf.stop()


if __name__ == "__main__":
    h.main(test)
