"""postfix_instance.py - a throw-away Postfix for integration tests: its own config, queue and
data directories under the test dir (/etc/postfix and the system queue are never touched), the
master itself in the foreground (`master -s`, what `postfix start-fg` runs, but without the
script in between, which let the master outlive it) as a harness Proc: it is the leader of its
own session, so stopping it by PID takes its daemons with it.
Its smtpd listens on one address and relays everything to relayhost; its log is a file
(maillog_file through postlogd). Needs root (the master starts as root, the daemons run as
user postfix) and the postfix package.
"""
import os
import shutil
import subprocess

import harness as h

POSTFIX = "/usr/sbin/postfix"
POSTCONF = "/usr/sbin/postconf"
MASTER = "/usr/lib/postfix/sbin/master"


def version():
    r = subprocess.run([POSTCONF, "-h", "-d", "mail_version"], capture_output=True, text=True)
    return r.stdout.strip()


class Postfix:
    def __init__(self, env, ip, port, relayhost, name="postfix", main_extra=None):
        h.check(os.geteuid() == 0, "a Postfix instance needs root")
        h.check(os.path.exists(POSTFIX), "postfix is not installed (contrib/packages-test.txt)")
        self.env = env
        self.dir = env.path(name)
        etc, queue, data = (os.path.join(self.dir, d) for d in ("etc", "queue", "data"))
        for d in (self.dir, etc, queue, data):
            os.makedirs(d, exist_ok=True)
            os.chmod(d, 0o755)
        shutil.chown(data, "postfix", "postfix")
        os.chmod(data, 0o700)
        self.etc = etc
        self.maillog = os.path.join(self.dir, "maillog")
        main = {
            "compatibility_level": "3.6",
            "config_directory": etc,
            "queue_directory": queue,
            "data_directory": data,
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "syslog_name": f"postfix-{name}",
            "maillog_file": self.maillog,
            "maillog_file_prefixes": self.dir,
            "myhostname": f"{name}.outrelay.test",
            "mydomain": "outrelay.test",
            "inet_interfaces": "all",  # the listener below names its address
            "local_header_rewrite_clients": "",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "mydestination": "",
            "relay_domains": "",
            "local_recipient_maps": "",
            "local_transport": "error:no local delivery",
            "alias_maps": "",
            "alias_database": "",
            "relayhost": relayhost,
            "smtpd_relay_restrictions": "permit_mynetworks, reject",
            "smtpd_recipient_restrictions": "permit_mynetworks, reject",
            "smtpd_tls_security_level": "none",
            "smtp_tls_security_level": "none",
            "smtp_dns_support_level": "disabled",
            "biff": "no",
            "multi_instance_directories": "",
        }
        main.update(main_extra or {})
        with open(os.path.join(etc, "main.cf"), "w") as fh:
            fh.write("# throw-away test instance (tests/lib/postfix_instance.py)\n")
            for k, v in main.items():
                fh.write(f"{k} = {v}\n")
        services = [
            (f"{ip}:{port}", "inet", "n", "-", "n", "-", "-", "smtpd"),
            ("pickup", "unix", "n", "-", "n", "60", "1", "pickup"),
            ("cleanup", "unix", "n", "-", "n", "-", "0", "cleanup"),
            ("qmgr", "unix", "n", "-", "n", "300", "1", "qmgr"),
            ("rewrite", "unix", "-", "-", "n", "-", "-", "trivial-rewrite"),
            ("bounce", "unix", "-", "-", "n", "-", "0", "bounce"),
            ("defer", "unix", "-", "-", "n", "-", "0", "bounce"),
            ("trace", "unix", "-", "-", "n", "-", "0", "bounce"),
            ("verify", "unix", "-", "-", "n", "-", "1", "verify"),
            ("flush", "unix", "n", "-", "n", "1000?", "0", "flush"),
            ("proxymap", "unix", "-", "-", "n", "-", "-", "proxymap"),
            ("smtp", "unix", "-", "-", "n", "-", "-", "smtp"),
            ("relay", "unix", "-", "-", "n", "-", "-", "smtp"),
            ("showq", "unix", "n", "-", "n", "-", "-", "showq"),
            ("error", "unix", "-", "-", "n", "-", "-", "error"),
            ("retry", "unix", "-", "-", "n", "-", "-", "error"),
            ("discard", "unix", "-", "-", "n", "-", "-", "discard"),
            ("anvil", "unix", "-", "-", "n", "-", "1", "anvil"),
            ("scache", "unix", "-", "-", "n", "-", "1", "scache"),
            ("postlog", "unix-dgram", "n", "-", "n", "-", "1", "postlogd"),
        ]
        with open(os.path.join(etc, "master.cf"), "w") as fh:
            for s in services:
                fh.write(" ".join(s) + "\n")
        r = subprocess.run([POSTFIX, "-c", etc, "check"], capture_output=True, text=True,
                           timeout=60)
        h.check(r.returncode == 0, f"postfix check: {r.stdout}{r.stderr}")
        self.pid_file = os.path.join(queue, "pid", "master.pid")
        self.proc = h.Proc(env, f"postfix[{name}]", [MASTER, "-s", "-c", etc],
                           env.path(f"{name}-master.log"), extra_env={"MAIL_CONFIG": etc})
        env.add_diagnostic(lambda: (f"postfix {name} log", h.tail(self.maillog, 30)))
        env.wait_for(lambda: self._up(ip, port), 30, f"postfix smtpd on {ip}:{port}")

    def _up(self, ip, port):
        h.check(self.proc.alive(), lambda: f"postfix master exited: {self.proc.output()}")
        return h.is_listening(ip, port)

    def log(self):
        try:
            with open(self.maillog, errors="replace") as fh:
                return fh.read()
        except FileNotFoundError:
            return ""

    def stop(self):
        rc = self.proc.stop()
        h.check(not self._master_alive(), f"the Postfix master of {self.dir} outlived its stop")
        return rc

    def _master_alive(self):
        try:
            with open(self.pid_file) as fh:
                pid = int(fh.read().strip() or 0)
        except (OSError, ValueError):
            return False
        if pid <= 0:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return b"master" in fh.read()
