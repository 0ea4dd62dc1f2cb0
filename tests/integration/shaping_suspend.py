"""shaping_suspend.py - receivers' replies slow us down. The shipped policies (policies/
providers.yaml, policies/shaping.yaml) group hotmail.test under microsoft-consumer (its MX is
under olc.protection.outlook.com). The MX answers the cloud egress (127.0.0.3) with Microsoft's
"451 4.7.650 ... rate limited due to IP reputation (S775)" three times: the shipped rule
suspends cloud x microsoft-consumer for 30 minutes, the retried message reroutes to legacy and
arrives, `ramp status` shows the suspension, it survives a restart, and after its duration
(injected clock) cloud carries mail again.
"""
import os

import harness as h
from ramp_world import RampWorld

MS_REPLY = ("451 4.7.650 The mail server [127.0.0.3] has been temporarily rate limited due to "
            "IP reputation. For e-mail delivery information, see https://aka.ms/postmaster "
            "(S775)")


def test(env):
    h.need_binary(env)
    src = env.src
    zones = h.default_zones()
    zones["hotmail.test"] = h.zone_text(
        "hotmail.test", "@ IN MX 10 hotmail-test.olc.protection.outlook.com.\n")
    zones["olc.protection.outlook.com"] = h.zone_text(
        "olc.protection.outlook.com", f"hotmail-test IN A {h.MX_EXAMPLE_NET}\n")
    script = [{"on": "DATA", "peer": h.CLOUD_IP, "reply": MS_REPLY, "count": 3}]
    t0 = 1796000000
    w = RampWorld(env, {"from": "legacy", "to": "cloud",
                        "schedule": [{"at": "2026-01-01T00:00:00Z", "percent": 100}]},
                  policies=[os.path.join(src, "policies/providers.yaml"),
                            os.path.join(src, "policies/shaping.yaml")],
                  sink=lambda env, port: h.PySink(env, h.MX_EXAMPLE_NET, port, "hotmail",
                                                  script=script),
                  zones=zones, now=t0)

    qid = w.send(["alice@hotmail.test"], "first")
    env.wait_for(lambda: w.sink.messages(), 90, "the first message, after the suspension")
    m = w.sink.messages()[0]
    h.check(m.client_addr == h.LEGACY_IP,
            f"after 3 x 4.7.650 from cloud the message should arrive via legacy, came from "
            f"{m.client_addr}")
    replies = [r for r in w.sink.replies() if "4.7.650" in r["reply"]]
    h.check(len(replies) == 3, f"the sink gave {len(replies)} throttling replies, expected 3")
    deferred = w.relay.events("SELECT egress, reply_code, enhanced_code FROM events WHERE "
                              "event='deferred' AND queue_id=?", (qid,))
    h.check(len(deferred) == 3 and all(d["egress"] == "cloud" and d["enhanced_code"] ==
                                       "4.7.650" for d in deferred),
            f"deferrals not recorded as expected: {deferred}")
    status = w.status()
    h.check("ms-ip-reputation" in status and "microsoft-consumer" in status,
            f"the suspension is not shown in ramp status:\n{status}")
    act = w.relay.events("SELECT egress, provider, action, enhanced_code FROM events WHERE "
                         "event='shaping'")
    h.check([(a["egress"], a["provider"], a["action"], a["enhanced_code"]) for a in act] ==
            [("cloud", "microsoft-consumer", "suspend", "4.7.650")],
            f"the suspension is not recorded as an event: {act}")

    rep = w.relay.queue_like("report", "ramp", "--json")
    import json
    susp = json.loads(rep.stdout)["tables"]["suspensions"]
    h.check([(r["egress"], r["provider"], r["action"]) for r in susp] ==
            [("cloud", "microsoft-consumer", "suspend")],
            f"the ramp report does not show the suspension: {susp}")
    w.relay.restart()
    status = w.status()
    h.check("ms-ip-reputation" in status, f"the suspension did not survive a restart:\n{status}")
    w.send(["bob@hotmail.test"], "during")
    env.wait_for(lambda: len(w.sink.messages()) >= 2, 60, "a message during the suspension")
    h.check(w.sink.messages()[1].client_addr == h.LEGACY_IP,
            "during the suspension mail must leave through legacy")

    w.set_clock(t0 + 31 * 60)  # the 30-minute suspension is over
    w.send(["carol@hotmail.test"], "after")
    env.wait_for(lambda: len(w.sink.messages()) >= 3, 60, "a message after the suspension")
    h.check(w.sink.messages()[2].client_addr == h.CLOUD_IP,
            f"after the suspension cloud should carry mail again, came from "
            f"{w.sink.messages()[2].client_addr}")
    w.relay.stop()


if __name__ == "__main__":
    h.main(test)
