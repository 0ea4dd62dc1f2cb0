#!/bin/sh
# demo.sh - a local "internet" in a minute: NSD serving demo zones, two smtp-sinks as the
# receiving MXs of example.net and example.com, outrelay in between with two egresses (legacy
# 127.0.0.2, cloud 127.0.0.3), and 48 messages from two "platforms" (127.0.0.11 = zimbra,
# 127.0.0.12 = cloud). Shows: a DKIM key made by `outrelay keygen` and published in the demo
# zone (dns-advice finds it; every example.org message arrives signed), the ramp sending 30 % of
# recipients by cloud, and partner.example (SPF authorises only cloud, alignment action reroute)
# moved off legacy. Prints the relay's log lines, what each MX received, the records, and the
# path of the HTML report (OUTRELAY_DEMO_REPORT, default /tmp/outrelay-demo-report.html).
# Everything runs on loopback and is stopped at the end.
# Needs the packages of `contrib/setup.sh test`; builds outrelay into build/ if it is missing.
set -eu
cd "$(dirname "$0")/.."
if [ -z "${OUTRELAY_BIN:-}" ]; then
    if [ ! -x build/outrelay ]; then
        cmake -S . -B build -DBUILD_TESTING=OFF >/dev/null
        cmake --build build -j"$(nproc)" >/dev/null
    fi
    OUTRELAY_BIN="$PWD/build/outrelay"
fi
export OUTRELAY_BIN OUTRELAY_SRC="$PWD" PYTHONPATH="$PWD/tests/lib"
exec /usr/bin/python3 contrib/demo.py
