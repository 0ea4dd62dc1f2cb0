"""privilege_drop.py - started as root with `user: nobody`, outrelay reads what only root may
read (DKIM keys, mode 0600) and binds, then runs as nobody: the process's user is nobody, its
spool and state belong to nobody, and mail is still signed and delivered. Skipped (77) when
the test does not run as root."""
import os
import pwd
import subprocess
import sys

import harness as h


def test(env):
    h.need_binary(env)
    if os.geteuid() != 0:
        print("SKIP: needs root to drop privileges")
        sys.exit(77)
    keys_cfg = env.path("keygen.yaml")
    with open(keys_cfg, "w") as fh:
        fh.write(f"keys: {env.path('keys')}\n")
    r = subprocess.run([env.bin, "keygen", "example.org", "s1", "--ed25519", "-c", keys_cfg],
                       capture_output=True, text=True, timeout=60)
    h.check(r.returncode == 0, f"keygen: {r.stderr}")
    key = env.path("keys", "example.org", "s1.ed25519.pem")
    h.check(os.stat(key).st_uid == 0 and (os.stat(key).st_mode & 0o077) == 0,
            "the key should be root's, mode 0600")
    os.chmod(env.path(), 0o755)  # nobody must reach its spool and state below the test dir
    nsd = h.Nsd(env)
    port = env.free_port(h.SINK_IPS + [h.LEGACY_IP])
    sink = h.SmtpSink(env, h.MX_EXAMPLE_NET, port, "example.net")
    relay = h.Relay(env, h.standard_config(env, nsd, port, user="nobody"))
    user = subprocess.run(["ps", "-o", "user=", "-p", str(relay.proc.pid)], capture_output=True,
                          text=True).stdout.strip()
    h.check(user == "nobody", f"outrelay runs as {user!r}, not nobody")
    nobody = pwd.getpwnam("nobody").pw_uid
    for d in ("spool", "state"):
        h.check(os.stat(env.path(d)).st_uid == nobody, f"{d} does not belong to nobody")
    res = h.send(relay.host, relay.port, "a@example.org", ["b@example.net"],
                 h.make_message("a@example.org", "b@example.net", "as nobody"))
    h.check(res.accepted, f"not accepted: {res}")
    env.wait_for(lambda: sink.messages(), 30, "delivery")
    h.check(sink.messages()[0].header("DKIM-Signature"), "not signed after dropping root")
    h.check(relay.queue("list").returncode == 0, "the control socket does not answer")
    relay.stop()


if __name__ == "__main__":
    h.main(test)
