"""auth_failures_throttled.py - failed SMTP AUTH is throttled per client address across sessions
(after Postfix's anvil): 50 password guesses from one address, 50 sessions at once, get at most
AUTH_THROTTLE_LIMIT (10) chances, answered later and later, then 421; meanwhile a network origin
delivers as usual and the real user logs in from another address.

Clients: the guesser at 127.0.0.77, the user at 127.0.0.78 (origin `cloud` by AUTH user), Zimbra
at 127.0.0.11 (origin by network). Before the change every guess got a prompt 535, forever.
"""
import base64
import concurrent.futures
import subprocess
import time

import harness as h

USER = "m365-connector"
PASSWORD = "correct horse battery staple"
GUESSER, USER_IP = "127.0.0.77", "127.0.0.78"


def b64(text):
    return base64.b64encode(text.encode()).decode()


def guess(relay, ctx, i):
    """One session: STARTTLS, one wrong AUTH PLAIN. Returns (code, seconds) of the AUTH reply."""
    try:
        c = h.RawClient(relay.host, relay.port, source_addr=GUESSER)
        if c.reply()[0] != 220:
            return None, 0
        c.cmd("EHLO guesser.example\r\n")
        if c.cmd("STARTTLS\r\n")[0] != 220:
            return None, 0
        c.starttls(ctx)
        c.cmd("EHLO guesser.example\r\n")
        t0 = time.monotonic()
        code, _ = c.cmd(f"AUTH PLAIN {b64(chr(0) + USER + chr(0) + 'guess' + str(i))}\r\n")
        took = time.monotonic() - t0
        c.close()
        return code, took
    except OSError:
        return "closed", 0


def test(env):
    h.need_binary(env)
    nsd = h.Nsd(env)
    mx_port = env.free_port(h.SINK_IPS + [h.LEGACY_IP])
    sink = h.SmtpSink(env, h.MX_EXAMPLE_NET, mx_port, "example.net")
    certs = h.make_ca_and_cert(env.path("tls"), ["relay.outrelay.test"], [h.RELAY_IP])
    hashed = subprocess.run(["openssl", "passwd", "-6", PASSWORD], capture_output=True,
                            text=True, check=True).stdout.strip()
    users = env.path("users")
    with open(users, "w") as fh:
        fh.write(f"{USER}:{hashed}\n")
    origins = {"zimbra": {"networks": [f"{h.ZIMBRA_IP}/32"]}, "cloud": {"users": [USER]}}
    relay = h.Relay(env, h.standard_config(env, nsd, mx_port, origins=origins, tls=certs,
                                           users_file=users))
    ctx = h.client_tls_context(certs["ca"])

    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool:
        futures = [pool.submit(guess, relay, ctx, i) for i in range(50)]
        # while the guesser is busy, Zimbra delivers and the real user logs in
        time.sleep(0.5)
        z0 = time.monotonic()
        res = h.send(relay.host, relay.port, "alice@example.org", ["bob@example.net"],
                     h.make_message("alice@example.org", "bob@example.net", "zimbra-during"),
                     source_addr=h.ZIMBRA_IP)
        zimbra_s = time.monotonic() - z0
        h.check(res.accepted, f"Zimbra was refused during the guessing: {res.steps}")
        res = h.send(relay.host, relay.port, "alice@example.org", ["bob@example.net"],
                     h.make_message("alice@example.org", "bob@example.net", "user-during"),
                     starttls=True, tls_context=ctx, auth=(USER, PASSWORD), source_addr=USER_IP)
        h.check(res.accepted, f"the real user was refused during the guessing: {res.steps}")
        results = [f.result() for f in futures]
    elapsed = time.monotonic() - t0
    codes = [c for c, _ in results]
    n535 = codes.count(535)
    n421 = codes.count(421) + codes.count("closed") + codes.count(None)
    slowest = max(t for _, t in results)
    h.log(f"50 guesses: {n535} answered 535 (slowest after {slowest:.1f} s), {n421} refused "
          f"(421/closed) in {elapsed:.1f} s; Zimbra's session meanwhile took {zimbra_s:.2f} s")
    h.check(n535 <= 10, f"{n535} guesses got a verdict; the limit is 10 per window")
    h.check(n421 >= 40, f"only {n421} guesses were refused outright: {codes}")
    h.check(slowest >= 2, f"failed AUTH was answered at once ({slowest:.1f} s): no delay")
    # the guesser stays refused even for the right password, for the window
    code, text = guess(relay, ctx, 999)
    h.check(code in (421, "closed", None), f"the guesser got another try: {code} {text}")
    env.wait_for(lambda: len(sink.messages()) >= 2, 30, "both legitimate messages")


if __name__ == "__main__":
    h.main(test)
