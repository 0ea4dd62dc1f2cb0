"""install_into_destdir.py - what `cmake --install` puts on a machine works where it lands.

1. `DESTDIR=STAGE cmake --install BUILD --prefix /usr` (a package build): the binary in usr/bin,
   outrelay(8) and outrelay.yaml(5) under usr/share/man, README, guides/ and grafana/ under
   usr/share/doc/outrelay, the policies under usr/share/outrelay/policies, the unit under
   usr/lib/systemd/system running /usr/bin/outrelay; the installed example names its policy
   files by absolute /usr/share/outrelay/policies/ paths, and each is in the stage.
2. `cmake --install BUILD --prefix PREFIX` (an install in place): the installed binary passes
   `check` on the installed example as it is (from another directory, so nothing resolves
   against the source tree), then serves from a copy of it with only spool, state, keys,
   listen, DNS and MX port changed, and relays a message to a sink.
(Before: no man pages, guides or dashboard were installed, the unit sat in the doc folder, and
the installed example's ../policies/ paths only resolved from the source tree.)
BUILD is the build directory holding OUTRELAY_BIN.
"""
import os
import subprocess

import yaml

import harness as h

INSTALLED_DOCS = ("README.md", "outrelay.example.yaml", "guides/zimbra.md",
                  "guides/microsoft-365.md", "guides/google-workspace.md",
                  "guides/pre-ramp-checklist.md", "guides/two-instances.md", "grafana/outrelay-dashboard.json",
                  "grafana/README.md")


def cmake_install(env, build, prefix, destdir=None):
    penv = dict(os.environ)
    penv.pop("DESTDIR", None)
    if destdir:
        penv["DESTDIR"] = destdir
    r = subprocess.run(["cmake", "--install", build, "--prefix", prefix], env=penv,
                       capture_output=True, text=True, timeout=300)
    h.check(r.returncode == 0, f"cmake --install {build} --prefix {prefix} (DESTDIR={destdir}) "
            f"failed with status {r.returncode}:\n{r.stdout}\n{r.stderr}")
    return r.stdout


def policy_paths(example):
    with open(example) as fh:
        return yaml.safe_load(fh)["policies"]


def test(env):
    h.need_binary(env)
    build = os.path.dirname(os.path.abspath(env.bin))
    h.check(os.path.exists(os.path.join(build, "cmake_install.cmake")),
            f"{build} (the folder of OUTRELAY_BIN) is not a CMake build directory")

    # 1. a package build: DESTDIR + --prefix /usr
    stage = env.path("stage")
    cmake_install(env, build, "/usr", destdir=stage)
    usr = os.path.join(stage, "usr")
    want = ["bin/outrelay", "share/man/man8/outrelay.8", "share/man/man5/outrelay.yaml.5",
            "lib/systemd/system/outrelay.service", "lib/systemd/system/outrelay@.service"]
    want += [f"share/outrelay/policies/{p}" for p in
             ("providers.yaml", "shaping.yaml", "platforms.yaml")]
    want += [f"share/doc/outrelay/{d}" for d in INSTALLED_DOCS]
    missing = [w for w in want if not os.path.isfile(os.path.join(usr, w))]
    h.check(not missing, f"not installed under {usr}: {missing}")
    h.check(not os.path.exists(os.path.join(usr, "share/doc/outrelay/outrelay.service")),
            "the unit is still installed in the doc folder")
    h.check(os.access(os.path.join(usr, "bin/outrelay"), os.X_OK), "usr/bin/outrelay is not "
            "executable")
    unit = open(os.path.join(usr, "lib/systemd/system/outrelay.service")).read()
    for line in ("ExecStart=/usr/bin/outrelay serve", "ExecStartPre=/usr/bin/outrelay check",
                 "Documentation=man:outrelay(8)"):
        h.check(line in unit, f"the installed unit has no {line!r}")
    h.check("/usr/local/" not in unit, "the installed unit (prefix /usr) still names /usr/local/")
    staged_example = os.path.join(usr, "share/doc/outrelay/outrelay.example.yaml")
    staged = policy_paths(staged_example)
    h.log(f"staged example policies: {staged}")
    h.check(len(staged) == 3 and all(p.startswith("/usr/share/outrelay/policies/")
                                     for p in staged),
            f"the staged example's policies are not the installed ones: {staged}")
    h.check(all(os.path.isfile(stage + p) for p in staged),
            f"a policy file the staged example names is not in the stage: {staged}")

    # 2. an install in place: the installed example passes check as it is, and serves
    prefix = env.path("prefix")
    cmake_install(env, build, prefix)
    binary = os.path.join(prefix, "bin", "outrelay")
    example = os.path.join(prefix, "share/doc/outrelay/outrelay.example.yaml")
    h.check(all(p.startswith(prefix + "/share/outrelay/policies/") and os.path.isfile(p)
                for p in policy_paths(example)),
            f"the installed example's policies are not under {prefix}: {policy_paths(example)}")
    elsewhere = env.mkdir("elsewhere")  # the example's ./keys and ./var resolve here
    r = subprocess.run([binary, "check", "-c", example], cwd=elsewhere, capture_output=True,
                       text=True, timeout=60)
    h.log(f"check: {r.stdout.strip()} {r.stderr.strip()}")
    h.check(r.returncode == 0 and "configuration ok" in r.stdout,
            f"`outrelay check` fails on the installed example (status {r.returncode}):\n"
            f"{r.stdout}{r.stderr}")
    h.check(not h.sanitizer_summary(r.stderr), f"check: sanitizer report:\n{r.stderr}")

    nsd = h.Nsd(env)
    mx_port = env.free_port(h.SINK_IPS)
    sink = h.SmtpSink(env, "127.0.0.30", mx_port, "example.net")
    with open(example) as fh:
        cfg = yaml.safe_load(fh)
    port = env.free_port([h.RELAY_IP])
    os.makedirs(env.path("keys"), exist_ok=True)
    cfg.update({"hostname": "relay.outrelay.test", "spool": env.path("spool"),
                "state": env.path("state"), "keys": env.path("keys"),
                "listen": [{"address": f"{h.RELAY_IP}:{port}", "tls": "optional"}],
                "dns": {"servers": [nsd.server]}})
    cfg["delivery"]["mx_port"] = mx_port
    env.bin = binary
    relay = h.Relay(env, cfg)
    r = subprocess.run([binary, "check", "-c", relay.conf_path], capture_output=True, text=True,
                       timeout=60)
    h.check(r.returncode == 0, f"check fails on the adapted copy:\n{r.stdout}{r.stderr}")
    sent = h.send(h.RELAY_IP, port, "a@example.org", ["b@example.net"],
                  h.make_message("a@example.org", "b@example.net", "installed relay"))
    h.check(sent.accepted, f"the installed relay refused the message: {sent}")
    env.wait_for(lambda: sink.messages(), 60, "delivery to example.net by the installed relay")
    relay.stop()


if __name__ == "__main__":
    h.main(test)
