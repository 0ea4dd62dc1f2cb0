"""reload_under_load.py - SIGHUP reloads the whole configuration while clients keep sending:
three clients send 300 messages over six SMTP sessions of 50 messages, sessions that are open
while three reloads happen: (a) the ramp goes from 0 % to 100 % (mail accepted after it leaves
through cloud instead of legacy), (b) a new origin (a client from its network, refused before,
is then accepted) and a new EHLO name for the cloud egress (the next new connection uses it),
(c) a broken file (refused with file:line:col in the log; the old configuration stays in force:
the new origin is still accepted, mail still leaves through cloud). Every accepted message is
delivered once, no client sees a disconnect or a 421, a change of listen address is logged as
needing a restart, the relay stays up and stops clean (no sanitizer report)."""
import re
import signal
import smtplib
import threading
import time

import harness as h
from ramp_world import RampWorld

CLIENTS = 3
SESSIONS_PER_CLIENT = 2
PER_SESSION = 50  # 3 x 2 x 50 = 300 messages
NEW_ORIGIN_IP = h.CLOUD_CLIENT_IP
PAUSE = 0.1  # between messages: the sessions stay open across all three reloads


class Load:
    """The clients: each sends its messages over long sessions, checking every reply. `sent`
    maps each accepted Message-ID to the time its DATA was answered; `problems` collects any
    reply that is not the expected one and any dropped connection."""

    def __init__(self, w):
        self.w = w
        self.sent = {}
        self.problems = []
        self.lock = threading.Lock()

    def session(self, client, number):
        smtp = smtplib.SMTP(timeout=60)
        try:
            code, text = smtp.connect(self.w.relay.host, self.w.relay.port)
            if code != 220:
                raise RuntimeError(f"greeting {code} {text}")
            code, text = smtp.ehlo("client.example.org")
            if code != 250:
                raise RuntimeError(f"EHLO {code} {text}")
            for i in range(PER_SESSION):
                tag = f"c{client}s{number}m{i}"
                mid = f"<{tag}@reload.test>"
                rcpt = f"{tag}@example.net"
                data = h.make_message("sender@example.org", rcpt, tag, message_id=mid)
                for cmd, want in ((f"MAIL FROM:<sender@example.org>", 250),
                                  (f"RCPT TO:<{rcpt}>", 250)):
                    code, text = smtp.docmd(cmd)
                    if code != want:
                        raise RuntimeError(f"{tag}: {cmd}: {code} {text}")
                code, text = smtp.data(data)
                if code != 250:
                    raise RuntimeError(f"{tag}: DATA: {code} {text}")
                with self.lock:
                    self.sent[mid] = time.monotonic()
                time.sleep(PAUSE)
            code, text = smtp.docmd("QUIT")
            if code != 221:
                raise RuntimeError(f"QUIT: {code} {text}")
        except Exception as e:  # noqa: BLE001 - every failure is a finding
            with self.lock:
                self.problems.append(f"client {client} session {number}: {e!r}")
        finally:
            smtp.close()

    def client(self, client):
        for number in range(SESSIONS_PER_CLIENT):
            self.session(client, number)

    def count(self):
        with self.lock:
            return len(self.sent)


def write_config(w, cfg):
    with open(w.relay.conf_path, "w") as fh:
        fh.write(h.to_yaml(cfg) + "\n")


def reload(w, cfg_text_or_dict, marker, n_before):
    """Writes the file, sends SIGHUP and waits for the marker to appear in the log once more."""
    if isinstance(cfg_text_or_dict, dict):
        write_config(w, cfg_text_or_dict)
    else:
        with open(w.relay.conf_path, "w") as fh:
            fh.write(cfg_text_or_dict)
    w.relay.proc.signal(signal.SIGHUP)
    w.relay.wait_for(lambda: w.relay.stderr().count(marker) > n_before, 20, f"'{marker}'")
    return time.monotonic()


def test(env):
    h.need_binary(env)
    w = RampWorld(env, {"from": "legacy", "to": "cloud",
                        "schedule": [{"at": "2026-01-01T00:00:00Z", "percent": 0}]})
    cfg = w.relay.config
    stranger = h.send(w.relay.host, w.relay.port, "sender@example.org", ["x@example.net"],
                      h.make_message("sender@example.org", "x@example.net", "stranger"),
                      source_addr=NEW_ORIGIN_IP)
    h.check(not stranger.accepted, f"a client outside every origin was accepted: {stranger}")

    load = Load(w)
    threads = [threading.Thread(target=load.client, args=(c,), daemon=True)
               for c in range(CLIENTS)]
    for t in threads:
        t.start()
    applied = ".yaml in force: "  # "reload: configuration FILE in force: 2 origins, ..."
    w.relay.wait_for(lambda: load.count() >= 30 or load.problems, 60, "the first messages")

    # (a) the ramp moves to 100 %: mail accepted from now on leaves through cloud
    cfg["ramp"]["schedule"] = [{"at": "2026-01-01T00:00:00Z", "percent": 100}]
    t_ramp = reload(w, cfg, applied, 0)
    w.relay.wait_for(lambda: load.count() >= 100 or load.problems, 60, "messages after (a)")

    # (b) a new origin, a changed egress (new connections use it), and a changed listen address
    # that needs a restart
    cfg["origins"]["newnet"] = {"networks": [f"{NEW_ORIGIN_IP}/32"]}
    cfg["egress"]["cloud"]["helo"] = "cloud-reloaded.outrelay.test"
    moved_listen = dict(cfg, listen=cfg["listen"] + [{"address": "127.0.0.1:1", "tls": "none"}])
    reload(w, moved_listen, applied, 1)
    log = w.relay.stderr()
    h.check(re.search(r"reload.*changed settings that need a restart.*\blisten\b", log),
            "the new listen address is not reported as needing a restart")
    newcomer = w.send(["newcomer@example.net"], "newcomer", source_addr=NEW_ORIGIN_IP)
    h.check(newcomer, "the client of the new origin got no queue id")
    w.relay.wait_for(lambda: load.count() >= 160 or load.problems, 60, "messages after (b)")

    # (c) a broken file: refused with file:line:col, the configuration before stays
    good = h.to_yaml(moved_listen) + "\n"
    broken = good.replace("percent: 100", 'percent: "lots"', 1)
    h.check(broken != good, "could not break the file")
    before = w.relay.stderr().count("refused; the configuration loaded before stays in force")
    reload(w, broken, "refused; the configuration loaded before stays in force", before)
    h.check(load.count() < CLIENTS * SESSIONS_PER_CLIENT * PER_SESSION,
            "the clients were done before the last reload: no session was open during it")
    log = w.relay.stderr()
    h.check(re.search(re.escape(w.relay.conf_path) + r":\d+:\d+: ", log),
            f"the refusal does not name file:line:col:\n{log[-3000:]}")
    after_broken = w.send(["after-broken@example.net"], "after-broken", source_addr=NEW_ORIGIN_IP)
    h.check(after_broken, "the new origin was forgotten after the broken file")
    write_config(w, moved_listen)  # leave a good file behind

    for t in threads:
        t.join(300)
    h.check(not load.problems, f"clients saw trouble during the reloads: {load.problems}")
    h.check(load.count() == CLIENTS * SESSIONS_PER_CLIENT * PER_SESSION,
            f"{load.count()} messages accepted, expected "
            f"{CLIENTS * SESSIONS_PER_CLIENT * PER_SESSION}")

    expected = set(load.sent) | {"<newcomer@ramp.test>", "<after-broken@ramp.test>"}

    def delivered():
        return {m.message_id for m in w.sink.messages()} >= expected

    env.wait_for(delivered, 180, lambda: f"{len(expected - {m.message_id for m in w.sink.messages()})}"
                 " accepted messages not delivered")
    names = {h.LEGACY_IP: "legacy", h.CLOUD_IP: "cloud"}
    egress = {}
    for m in w.sink.messages():
        egress.setdefault(m.message_id, set()).add(names.get(m.client_addr, m.client_addr))
    late = [mid for mid, t in load.sent.items() if t > t_ramp]
    early = [mid for mid, t in load.sent.items() if t <= t_ramp]
    h.check(late and early, f"{len(early)} messages before the ramp change, {len(late)} after")
    wrong = [mid for mid in late if egress.get(mid) != {"cloud"}]
    h.check(not wrong, f"{len(wrong)} messages accepted after the ramp change did not leave "
            f"through cloud only: {[(m, egress.get(m)) for m in wrong[:5]]}")
    h.check(any(egress.get(mid) == {"legacy"} for mid in early),
            "no message left through legacy before the ramp change")
    h.check(egress.get("<after-broken@ramp.test>") == {"cloud"},
            f"after the broken file the ramp is no longer 100 %: "
            f"{egress.get('<after-broken@ramp.test>')}")
    # connections opened before (b) stay idle 2 s at most: the next one says the new EHLO name
    time.sleep(3)
    w.send(["final@example.net"], "final")
    w.relay.wait_for(lambda: [m for m in w.sink.messages() if m.message_id == "<final@ramp.test>"],
                     60, "the last message")
    final = [m for m in w.sink.messages() if m.message_id == "<final@ramp.test>"][0]
    h.check(final.helo == "cloud-reloaded.outrelay.test",
            f"a new connection after the reload still says EHLO {final.helo}")
    counts = h.message_ids(w.sink.messages())
    dup = [mid for mid, n in counts.items() if n > 1]
    h.check(not dup, f"messages delivered twice: {dup[:5]}")
    h.log(f"{len(load.sent)} messages over {CLIENTS * SESSIONS_PER_CLIENT} sessions, "
          f"{len(early)} before the ramp change, {len(late)} after; three reloads")
    w.relay.stop()


if __name__ == "__main__":
    h.main(test)
