"""dkim_key_reload.py - keys are loaded at start and on reload: a selector added while the relay
runs (keygen) signs new mail after SIGHUP, without a restart and without losing the key that
was already there; a key file that becomes unusable is reported and left out at the next
reload."""
import os
import re
import signal
import subprocess

import harness as h


def selectors(msg):
    return sorted(re.search(r"\bs=([^;\s]+)", "".join(v.split())).group(1)
                  for k, v in msg.msg.items() if k.lower() == "dkim-signature")


def test(env):
    h.need_binary(env)
    kcfg = env.path("keygen.yaml")
    with open(kcfg, "w") as fh:
        fh.write(f"keys: {env.path('keys')}\n")

    def keygen(sel):
        r = subprocess.run([env.bin, "keygen", "example.org", sel, "--ed25519", "-c", kcfg],
                           capture_output=True, text=True, timeout=60)
        h.check(r.returncode == 0, r.stderr)

    keygen("before")
    nsd = h.Nsd(env)
    port = env.free_port(h.SINK_IPS + [h.LEGACY_IP])
    sink = h.SmtpSink(env, h.MX_EXAMPLE_NET, port, "example.net")
    relay = h.Relay(env, h.standard_config(env, nsd, port))

    def send(tag):
        res = h.send(relay.host, relay.port, "a@example.org", ["b@example.net"],
                     h.make_message("a@example.org", "b@example.net", tag,
                                    message_id=f"<{tag}@reload.test>"))
        h.check(res.accepted, f"{tag}: {res}")
        env.wait_for(lambda: [m for m in sink.messages()
                              if m.message_id == f"<{tag}@reload.test>"], 30, tag)
        return [m for m in sink.messages() if m.message_id == f"<{tag}@reload.test>"][0]

    h.check(selectors(send("first")) == ["before"], "the first message is not signed by 'before'")
    keygen("added")
    relay.proc.signal(signal.SIGHUP)
    env.wait_for(lambda: "reload: 2 DKIM keys" in relay.stderr(), 15, "the reload")
    sels = selectors(send("second"))
    h.check(sels == ["added", "before"], f"after the reload: {sels}")

    os.chmod(env.path("keys", "example.org", "before.ed25519.pem"), 0o644)  # now unusable
    relay.proc.signal(signal.SIGHUP)
    env.wait_for(lambda: "reload: 1 DKIM key " in relay.stderr(), 15, "the second reload")
    h.check("mode 0644 refused" in relay.stderr(), "the unusable key is not reported")
    h.check(selectors(send("third")) == ["added"], "the unusable key still signs")
    relay.stop()


if __name__ == "__main__":
    h.main(test)
