#!/usr/bin/python3
"""layer_check.py - the mail path's arrows, read from the source: every `#include "folder/..."`
under outrelay/ is a dependency of the including folder on that folder. Fails (exit 1, one line
per offending include) when a stage includes a later stage, or a shared layer includes a stage.
Run by ctest as unit/layer_order; usage: layer_check.py [OUTRELAY_DIR].

The order: ingress -> sign -> route -> check -> deliver -> report/control/tlsrpt. qmgr, smtpc and sts
(MTA-STS policies for the SMTP client) are the deliver stage. config, dns, tls, mail, common,
records, spool and cluster (the connection to the Redis the instances share) are shared layers every stage may include: records_emit is a sink every stage calls, and the spool is the store ingress
writes (durable before 250) and the queue manager reads and marks, not a step of its own.
outrelay/main.c wires the stages together and is not a folder, so it is not checked.
"""
import os
import re
import sys

STAGES = {
    "ingress": 0,
    "sign": 2,
    "route": 3,
    "check": 4,
    "deliver": 5,
    "qmgr": 5,
    "smtpc": 5,
    "sts": 5,
    "report": 6,
    "control": 6,
    "tlsrpt": 6,
}
SHARED = {"config", "dns", "tls", "mail", "common", "records", "spool", "cluster"}

INCLUDE = re.compile(r'^\s*#\s*include\s+"([A-Za-z0-9_]+)/[^"]+"')


def violation(src, dst):
    """Why folder src may not include folder dst, or None when it may."""
    if src == dst or dst in SHARED:
        return None
    if dst not in STAGES:
        return "includes %s/, a folder the layer order does not know" % dst
    if src in SHARED:
        return "is a shared layer but includes the %s stage" % dst
    if src not in STAGES:
        return "is a folder the layer order does not know"
    if STAGES[dst] > STAGES[src]:
        return "is an earlier stage than %s/ but includes it" % dst
    return None


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..", "outrelay")
    problems = []
    folders = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    for folder in folders:
        for dirpath, _, files in os.walk(os.path.join(root, folder)):
            for name in sorted(files):
                if not name.endswith((".c", ".h")):
                    continue
                path = os.path.join(dirpath, name)
                with open(path, encoding="utf-8", errors="replace") as f:
                    for lineno, line in enumerate(f, 1):
                        m = INCLUDE.match(line)
                        if not m:
                            continue
                        why = violation(folder, m.group(1))
                        if why:
                            rel = os.path.relpath(path, os.path.dirname(root))
                            problems.append("%s:%d: %s/ %s" % (rel, lineno, folder, why))
    for p in problems:
        print(p)
    if problems:
        print("layer_check: %d include(s) run against the mail path" % len(problems))
        return 1
    print("layer_check: %d folders, no include runs against the mail path" % len(folders))
    return 0


if __name__ == "__main__":
    sys.exit(main())
