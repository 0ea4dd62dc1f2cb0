"""service_unit_hardened.py - contrib/outrelay.service is sandboxed and valid.

`systemd-analyze security --offline=true` must rate the shipped unit at or below 2.5 (it was
5.3 MEDIUM: no SystemCallFilter, PrivateDevices, ProtectClock, UMask), and `systemd-analyze
verify` must report nothing on a copy whose ExecStart/ExecStartPre point at the built binary
(verify wants the executable to exist). The settings the relay depends on are checked by name:
the privilege drop needs @setuid and chown back after ~@privileged, and the spool lives under
StateDirectory= (no ReadWritePaths= to a folder nothing creates).
The template contrib/outrelay@.service (several instances on one host) gets the same checks,
plus: it is the plain unit's hardening line for line, instance NAME reads /etc/outrelay/NAME.yaml
and writes only below /var/lib/outrelay/NAME (StateDirectory=outrelay/%i), and verify passes on
the template and on an instance of it.
Skipped (77) when systemd-analyze is not installed (Debian package `systemd`).
"""
import os
import re
import shutil
import subprocess
import sys

import harness as h

MAX_EXPOSURE = 2.5
ANALYZE = shutil.which("systemd-analyze")


def unit_settings(text):
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")) or "=" not in line:
            continue
        key, _, value = line.partition("=")
        out.setdefault(key, []).append(value)
    return out


def check_unit(env, path, copy_name, verify_names):
    """The security rating, verify on copies named verify_names, the settings the relay needs."""
    text = open(path).read()
    res = subprocess.run([ANALYZE, "security", "--offline=true", "--no-pager", path],
                         capture_output=True, text=True, timeout=120)
    out = res.stdout + res.stderr
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", out)
    h.check(m, f"{copy_name}: no exposure level in systemd-analyze security output (status "
               f"{res.returncode}):\n{out}")
    score = float(m.group(1))
    h.log(f"{copy_name}: systemd-analyze security: {score} (limit {MAX_EXPOSURE})")
    if score > MAX_EXPOSURE:
        open_items = [l for l in out.splitlines() if l.startswith("✗")]
        h.fail(f"{copy_name}: exposure {score} > {MAX_EXPOSURE}; open items:\n" +
               "\n".join(open_items))

    # verify: on a copy whose binary paths exist
    folder = env.path(f"verify-{copy_name}")
    os.makedirs(folder, exist_ok=True)
    for name in verify_names:
        copy = os.path.join(folder, name)
        with open(copy, "w") as fh:
            fh.write(text.replace("/usr/local/bin/outrelay", os.path.abspath(env.bin)))
        res = subprocess.run([ANALYZE, "verify", "--no-pager", copy], capture_output=True,
                             text=True, timeout=120, cwd=folder)
        complaints = [l for l in (res.stdout + res.stderr).splitlines() if l.strip()]
        h.check(res.returncode == 0 and not complaints,
                f"systemd-analyze verify {name} (status {res.returncode}):\n" +
                "\n".join(complaints))

    s = unit_settings(text)
    h.check("ReadWritePaths" not in s,
            f"ReadWritePaths= {s.get('ReadWritePaths')}: use StateDirectory= so systemd creates it")
    h.check(s.get("UMask") == ["0077"], f"UMask= {s.get('UMask')}")
    filters = " ".join(s.get("SystemCallFilter", []))
    for name in ("@system-service", "~@privileged", "@setuid", "chown"):
        h.check(name in filters, f"SystemCallFilter= lacks {name}: {filters}")
    caps = " ".join(s.get("CapabilityBoundingSet", [])).split()
    h.check(sorted(caps) == sorted(["CAP_NET_BIND_SERVICE", "CAP_SETUID", "CAP_SETGID",
                                    "CAP_CHOWN", "CAP_DAC_READ_SEARCH"]),
            f"CapabilityBoundingSet= {caps}")
    return text, s


def test(env):
    h.need_binary(env)
    src = os.environ.get("OUTRELAY_SRC") or os.path.join(os.path.dirname(__file__), "..", "..")
    text, s = check_unit(env, os.path.join(src, "contrib", "outrelay.service"), "plain",
                         ["outrelay.service"])
    h.check(s.get("StateDirectory") == ["outrelay"], f"StateDirectory= {s.get('StateDirectory')}")
    h.check("spool: /var/lib/outrelay/spool" in text,
            "the unit's comment must name the spool path under StateDirectory=")

    # the template: the same sandbox, one configuration file and one directory per instance
    ttext, ts = check_unit(env, os.path.join(src, "contrib", "outrelay@.service"), "template",
                           ["outrelay@.service", "outrelay@a.service"])
    h.check(ts.get("StateDirectory") == ["outrelay/%i"],
            f"template StateDirectory= {ts.get('StateDirectory')}")
    for key in ("ExecStart", "ExecStartPre"):
        h.check(all("-c /etc/outrelay/%i.yaml" in v for v in ts.get(key, [""])),
                f"template {key}= {ts.get(key)}: must read /etc/outrelay/%i.yaml")
    h.check("spool: /var/lib/outrelay/NAME/spool" in ttext,
            "the template's comment must name the spool path under its StateDirectory=")
    per_instance = {"StateDirectory", "ExecStart", "ExecStartPre", "Description"}
    differ = sorted(k for k in set(s) | set(ts)
                    if k not in per_instance and s.get(k) != ts.get(k))
    h.check(not differ, "the template's hardening differs from outrelay.service: " +
            ", ".join(f"{k}: {s.get(k)} vs {ts.get(k)}" for k in differ))


if __name__ == "__main__":
    if not ANALYZE:
        print("SKIP: systemd-analyze is not installed (apt-get install systemd)", flush=True)
        sys.exit(77)
    h.main(test)
