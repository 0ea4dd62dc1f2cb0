"""keygen_creates_missing_directories.py - `outrelay keygen` into a key store that does not exist.

With `keys:` three missing levels deep, keygen creates every missing directory (mode 0700, like
mkdir -p), writes KEYS/DOMAIN/SELECTOR.rsa.pem and .ed25519.pem (mode 0600), prints the TXT
records, and `check` then counts both keys. Directories that already exist keep their mode. A
path through a regular file fails with a message naming it and leaves no key behind.
(Before: keygen failed with "cannot create directory" when the key directory's parent was
missing.)
"""
import os
import stat
import subprocess

import harness as h


def run(env, *args, cwd=None):
    return subprocess.run([env.bin, *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test(env):
    h.need_binary(env)
    base = env.mkdir("etc")  # exists, 0755: must stay so
    keys = os.path.join(base, "outrelay", "dkim", "keys")
    conf = env.path("outrelay.yaml")
    with open(conf, "w") as fh:
        fh.write(f"hostname: relay.outrelay.test\nkeys: {keys}\n"
                 f"spool: {env.path('spool')}\nstate: {env.path('state')}\n")

    r = run(env, "keygen", "Example.COM", "s2026", "--rsa", "2048", "-c", conf)
    h.check(r.returncode == 0, f"keygen --rsa into a missing directory failed (status "
            f"{r.returncode}):\n{r.stdout}{r.stderr}")
    h.check("s2026._domainkey.example.com" in r.stdout and "k=rsa" in r.stdout,
            f"keygen printed no RSA TXT record:\n{r.stdout}")
    r = run(env, "keygen", "example.com", "s2026e", "--ed25519", "-c", conf)
    h.check(r.returncode == 0, f"keygen --ed25519 failed:\n{r.stdout}{r.stderr}")
    h.check("k=ed25519" in r.stdout, f"keygen printed no Ed25519 TXT record:\n{r.stdout}")

    created = [os.path.join(base, "outrelay"), os.path.join(base, "outrelay", "dkim"), keys,
               os.path.join(keys, "example.com")]
    modes = {p: mode(p) for p in created}
    h.log("created: " + ", ".join(f"{os.path.relpath(p, env.dir)} {m:04o}"
                                  for p, m in modes.items()))
    h.check(all(m == 0o700 for m in modes.values()), f"created directories are not 0700: "
            f"{ {p: oct(m) for p, m in modes.items()} }")
    h.check(mode(base) == 0o755, f"keygen changed the mode of the existing {base}")
    for name in ("s2026.rsa.pem", "s2026e.ed25519.pem"):
        path = os.path.join(keys, "example.com", name)
        h.check(os.path.isfile(path) and mode(path) == 0o600,
                f"{path} missing or not 0600")

    r = run(env, "check", "-c", conf)
    h.check(r.returncode == 0 and "(2 DKIM keys)" in r.stdout,
            f"check does not count the two new keys (status {r.returncode}):\n{r.stdout}{r.stderr}")

    # a relative key store resolves against the working directory, missing parents included
    work = env.mkdir("work")
    rel_conf = env.path("relative.yaml")
    with open(rel_conf, "w") as fh:
        fh.write("hostname: relay.outrelay.test\nkeys: ./a/b/keys\n")
    r = run(env, "keygen", "example.org", "rel", "--ed25519", "-c", rel_conf, cwd=work)
    h.check(r.returncode == 0 and os.path.isfile(
        os.path.join(work, "a", "b", "keys", "example.org", "rel.ed25519.pem")),
        f"keygen with keys: ./a/b/keys from {work} failed:\n{r.stdout}{r.stderr}")

    # a regular file in the way: a clear error, no key
    blocker = env.path("blocker")
    open(blocker, "w").close()
    bad_conf = env.path("bad.yaml")
    with open(bad_conf, "w") as fh:
        fh.write(f"hostname: relay.outrelay.test\nkeys: {blocker}/sub/keys\n")
    r = run(env, "keygen", "example.com", "s1", "--ed25519", "-c", bad_conf)
    h.check(r.returncode != 0 and blocker in r.stderr,
            f"keygen through a regular file: status {r.returncode}, no message naming "
            f"{blocker}:\n{r.stdout}{r.stderr}")
    h.log(f"through a file: {r.stderr.strip().splitlines()[-1]}")
    h.check(not h.sanitizer_summary(r.stderr), f"sanitizer report:\n{r.stderr}")


if __name__ == "__main__":
    h.main(test)
