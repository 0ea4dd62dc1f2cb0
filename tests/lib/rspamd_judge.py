"""rspamd_judge.py - a throw-away rspamd (Debian package `rspamd`) as an independent receiver: it
judges delivered bytes with its own SPF (spf.lua), DKIM (the C dkim module) and DMARC (dmarc.lua)
code, resolving through the test NSD, so integration tests can hold outrelay's predictions against
a second opinion.

Owns: one rspamd process (normal worker only) on a free loopback port with its own configuration,
database, log and pid file under <test dir>/rspamd; started by RspamdJudge(), stopped by its PID
(through harness.Proc, also on failure). Every other module is off: no redis, no network beyond the
NSD, no fuzzy, RBLs, statistics or scores that matter. Checks loopback clients too (check_local).

    judge = RspamdJudge(env, nsd)
    v = judge.verdict(raw_bytes, ip="127.0.0.2", helo="legacy.outrelay.test",
                      mail_from="alice@example.org", rcpt="bob@example.net")
    v.spf, v.dkim, v.dmarc     # "pass"/"fail"/"softfail"/"neutral"/"none"/"temperror"/"permerror";
                               # DMARC also "fail" for p=none failures; v.symbols: {name: options}
    v.signatures               # {(d, s): "pass" | "fail" | "temperror"} per DKIM signature
"""
import grp
import json
import os
import pwd
import urllib.request

import harness as h

RSPAMD = "/usr/sbin/rspamd" if os.path.exists("/usr/sbin/rspamd") else "/usr/bin/rspamd"
RSPAMD_PLUGINS = "/usr/share/rspamd/plugins"
RSPAMD_PSL = "/usr/share/rspamd/effective_tld_names.dat"
RUN_AS = "_rspamd"   # the Debian package's system user and group

# rspamd symbol -> verdict, per mechanism (the names spf.lua, dkim_check.c and dmarc.lua use)
SPF_SYMBOLS = {"R_SPF_ALLOW": "pass", "R_SPF_FAIL": "fail", "R_SPF_SOFTFAIL": "softfail",
               "R_SPF_NEUTRAL": "neutral", "R_SPF_NA": "none", "R_SPF_DNSFAIL": "temperror",
               "R_SPF_PERMFAIL": "permerror"}
DKIM_SYMBOLS = {"R_DKIM_ALLOW": "pass", "R_DKIM_REJECT": "fail", "R_DKIM_TEMPFAIL": "temperror",
                "R_DKIM_PERMFAIL": "permerror", "R_DKIM_NA": "none"}
DMARC_SYMBOLS = {"DMARC_POLICY_ALLOW": "pass", "DMARC_POLICY_REJECT": "fail",
                 "DMARC_POLICY_QUARANTINE": "fail", "DMARC_POLICY_SOFTFAIL": "fail",
                 "DMARC_NA": "none", "DMARC_DNSFAIL": "temperror",
                 "DMARC_BAD_POLICY": "permerror"}


def available():
    """True when the rspamd daemon and its system user are installed."""
    try:
        pwd.getpwnam(RUN_AS)
    except KeyError:
        return False
    return os.access(RSPAMD, os.X_OK) and os.path.isdir(RSPAMD_PLUGINS)


def psl_subset(path, zones):
    """The rules of the public suffix list at `path` that can decide the organisational domain
    of a name in or under one of `zones` (same answers as the whole list for those names): a
    rule matters only when its base (without "!" and "*.") is a suffix of such a name. rspamd
    compiles every rule at start, ~25 s for the whole list, well under 1 s for this subset.

    Every zone's top-level label is added as a rule when the list lacks it (.example, .test): the
    list's implicit default rule "*" (publicsuffix.org/list, "If no rules match, the prevailing
    rule is *"; a one-label rule is never longer than a rule that matches), which libpsl and
    outrelay apply and rspamd 3.4 does not: without it rspamd takes news.strict.example for an
    organisational domain of its own and never looks up _dmarc.strict.example (RFC 7489 6.6.3).
    The test domains are reserved names (RFC 2606), so this only gives rspamd the answer the
    list's own algorithm gives for them."""
    zones = [z.lower().strip(".") for z in zones]

    def suffix_of(a, b):   # a is b or a label-suffix of b
        return a == b or b.endswith("." + a)

    keep = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            rule = line.strip().split(" ", 1)[0]
            if not rule or rule.startswith("//"):
                continue
            base = rule.lstrip("!")
            base = base[2:] if base.startswith("*.") else base
            if any(suffix_of(base, z) or suffix_of(z, base) for z in zones):
                keep.append(rule)
    keep += sorted({z.rsplit(".", 1)[-1] for z in zones} - set(keep))
    return "\n".join(keep) + "\n"


class Verdict:
    """rspamd's answer for one message: spf/dkim/dmarc verdict words, the DMARC symbol itself
    (e.g. DMARC_POLICY_SOFTFAIL, which is rspamd's name for a failure under p=none) and every
    symbol with its options."""

    def __init__(self, reply):
        self.reply = reply
        self.symbols = {name: sym.get("options", [])
                        for name, sym in (reply.get("symbols") or {}).items()}
        self.spf = self._pick(SPF_SYMBOLS)
        self.dkim = self._pick(DKIM_SYMBOLS)
        self.dmarc = self._pick(DMARC_SYMBOLS)
        self.dmarc_symbol = next((s for s in DMARC_SYMBOLS if s in self.symbols), None)
        # per signature: {(d, s): "pass" | "fail" | "temperror"}; rspamd names each signature
        # "domain:s=selector" in the options of its R_DKIM_* symbol
        self.signatures = {}
        for sym, verdict in DKIM_SYMBOLS.items():
            for opt in self.symbols.get(sym, []):
                domain, sep, selector = opt.partition(":s=")
                if sep:
                    self.signatures[(domain.lower(), selector)] = (
                        "fail" if verdict == "permerror" else verdict)

    def _pick(self, table):
        found = [verdict for sym, verdict in table.items() if sym in self.symbols]
        if not found:
            return "none"
        # several DKIM signatures can give ALLOW and REJECT at once: report both
        return "+".join(sorted(set(found)))

    def describe(self):
        """A short line: the interesting symbols with their options."""
        names = [s for s in self.symbols
                 if s in SPF_SYMBOLS or s in DKIM_SYMBOLS or s in DMARC_SYMBOLS]
        return " ".join(f"{s}({','.join(self.symbols[s])})" for s in sorted(names))


class RspamdJudge:
    """rspamd on 127.0.0.1:<free port> resolving through `nsd` only. .verdict() asks /checkv2."""

    def __init__(self, env, nsd, ip=h.RELAY_IP):
        self.env = env
        self.ip = ip
        self.port = env.free_port([ip])
        self.dir = env.mkdir("rspamd")
        for sub in ("db", "run"):
            os.makedirs(os.path.join(self.dir, sub), exist_ok=True)
        self.log_path = os.path.join(self.dir, "rspamd.log")
        self.psl = os.path.join(self.dir, "public_suffixes.dat")
        with open(self.psl, "w") as fh:
            fh.write(psl_subset(RSPAMD_PSL, nsd.zones))
        self.conf = os.path.join(self.dir, "rspamd.conf")
        with open(self.conf, "w") as fh:
            fh.write(self._config(nsd))
        argv = [RSPAMD, "-f", "-c", self.conf]
        if os.geteuid() == 0:
            # rspamd refuses to run its workers as root: they run as the package's user, which
            # must be able to write its database, sockets and log here
            uid, gid = pwd.getpwnam(RUN_AS).pw_uid, grp.getgrnam(RUN_AS).gr_gid
            for root, _, files in os.walk(self.dir):
                os.chown(root, uid, gid)
                for name in files:
                    os.chown(os.path.join(root, name), uid, gid)
            argv += ["-u", RUN_AS, "-g", RUN_AS]
        # never through an http_proxy from the environment: rspamd is on loopback
        self.http = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self.proc = h.Proc(env, "rspamd", argv, os.path.join(self.dir, "rspamd.stdout"),
                           watch=True)
        env.add_diagnostic(lambda: ("rspamd log", h.tail(self.log_path, 40)
                                    + "\n" + h.tail(self.proc.log_path, 20)))
        env.wait_for(self._up, 60, f"rspamd on {ip}:{self.port}")
        h.log(f"rspamd answering on {ip}:{self.port} (pid {self.proc.pid})")

    def _config(self, nsd):
        d = self.dir
        return f"""# written by tests/lib/rspamd_judge.py: SPF, DKIM and DMARC only, DNS from the test NSD
options {{
    pidfile = "{d}/run/rspamd.pid";
    filters = "dkim";                  # internal (C) modules: DKIM only
    check_local = true;                # our egresses are loopback addresses
    check_authed = true;
    local_addrs = [];
    cache_file = "{d}/db/symbols.cache";
    hs_cache_dir = "{d}/db/";
    control_socket = "{d}/run/rspamd.sock mode=0600";
    stats_file = "{d}/db/stats.ucl";
    history_file = "{d}/db/rspamd.history";
    dynamic_conf = "{d}/db/rspamd_dynamic";
    url_tld = "{self.psl}";
    allow_raw_input = true;
    task_timeout = 20s;
    dns {{
        nameserver = ["{nsd.ip}:{nsd.port}"];
        timeout = 2s;
        retransmits = 2;
        sockets = 4;
    }}
}}
logging {{
    type = "file";
    filename = "{self.log_path}";
    level = "info";
}}
worker "normal" {{
    bind_socket = "{self.ip}:{self.port}";
    count = 1;
    task_timeout = 20s;
}}
modules {{
    path = "{RSPAMD_PLUGINS}";         # lua plugins without a section below stay disabled
}}
spf {{ check_local = true; check_authed = true; }}
dkim {{ check_local = true; check_authed = true; }}
dmarc {{ check_local = true; check_authed = true; }}
"""

    def _up(self):
        h.check(self.proc.alive(), lambda: f"rspamd exited: {self.proc.output()}\n"
                                           f"{h.tail(self.log_path, 40)}")
        if not h.is_listening(self.ip, self.port):
            return False
        try:
            with self.http.open(f"http://{self.ip}:{self.port}/ping", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def verdict(self, raw, ip, helo, mail_from, rcpt, timeout=30):
        """rspamd's Verdict on the message bytes `raw` as if received from `ip` with HELO `helo`,
        MAIL FROM `mail_from` ("" for the null sender) and one RCPT."""
        headers = {"IP": ip, "Helo": helo, "From": mail_from or "<>", "Rcpt": rcpt,
                   "Pass": "all"}
        req = urllib.request.Request(f"http://{self.ip}:{self.port}/checkv2", data=raw,
                                     headers=headers, method="POST")
        with self.http.open(req, timeout=timeout) as r:
            return Verdict(json.loads(r.read()))

    def stop(self):
        self.proc.expected_exit = True
        return self.proc.stop()
