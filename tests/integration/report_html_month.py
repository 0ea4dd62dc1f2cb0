"""report_html_month.py - the HTML report over a month of a busy relay reads well: the database of
bench/report-1m.sh (30 days, 400 From domains, a legacy -> cloud ramp, throttling, bounces,
DMARC failures; here 60,000 rows instead of a million, the same shape), rendered by headless
Chromium at 1280 px: no horizontal overflow, the headline carries the bounce share matching the
outcomes chart, the ramp chart shows planned and actual shares, the alignment chart has bars.

Skips (exit 77) when /usr/bin/chromium is not installed (Debian package `chromium`)."""
import importlib.util
import os
import subprocess
import sys

import harness as h

ROWS = 60000


def sibling(name):
    """Another integration test's module (for its Chromium helpers)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test(env):
    h.need_binary(env)
    rhc = sibling("report_html_chromium")
    build = os.path.dirname(env.bin)
    work = env.path("month")
    src = os.environ.get("OUTRELAY_SRC", os.path.join(os.path.dirname(__file__), "..", ".."))
    r = subprocess.run(["sh", os.path.join(src, "bench", "report-1m.sh"), build, work, str(ROWS)],
                       capture_output=True, text=True, timeout=600)
    h.log(f"report-1m.sh {ROWS} -> {r.returncode}\n{r.stdout[-1500:]}{r.stderr[-1500:]}")
    h.check(r.returncode == 0, "the month-long database or its reports failed")
    page = os.path.join(work, "report.html")
    els, dom, width = rhc.rendered(env, page)
    h.log(f"month page: {os.path.getsize(page)} bytes, {width} px wide at 1280")
    h.check(width <= 1280, f"the month page is {width} px wide in a 1280 px window")
    outcomes = [a for t, a, svg in els if svg == "chart-outcomes" and t == "g"
                and a.get("class") == "outcome"]
    h.check(len(outcomes) >= 2, f"outcomes chart: {outcomes[:3]}")
    total = {k: sum(int(a[f"data-{k}"]) for a in outcomes)
             for k in ("delivered", "bounced", "expired")}
    final = sum(total.values())
    share = 100 * (total["bounced"] + total["expired"]) / final
    head = [a for t, a, _ in els if t == "p" and "headline" in (a.get("class") or "").split()]
    h.check(head and head[0]["data-bounce-share"] == f"{share:.1f}",
            f"headline {head[:1]} for a bounce share of {share:.1f}")
    points = [a for t, a, svg in els if svg == "chart-ramp" and t == "g"
              and "point" in (a.get("class") or "").split()]
    lines = [a for t, a, svg in els if svg == "chart-ramp" and t in ("polyline", "path")]
    h.check(points or lines, "the ramp chart is empty over a month")
    bars = [a for t, a, svg in els if svg == "chart-alignment" and t == "rect"
            and "bar" in (a.get("class") or "").split()]
    h.check(bars, "the alignment chart has no bars")
    h.check(not any(b.get("data-policy") == "none" and "bad" in (b.get("class") or "").split()
                    for b in bars), "a domain without DMARC is drawn as a failure")
    shot = env.path("month.png")
    rhc.chromium(env, f"--screenshot={shot}", "--window-size=1280,2000", f"file://{page}")
    h.check(os.path.getsize(shot) > 20000, f"screenshot only {os.path.getsize(shot)} bytes")
    h.log(f"screenshot: {shot}; headline {head[0].get('data-bounce-share')}% bounced, "
          f"{len(bars)} alignment bars, {len(outcomes)} outcome groups")


if __name__ == "__main__":
    if not os.path.exists("/usr/bin/chromium"):
        print("SKIP: /usr/bin/chromium is not installed (Debian package chromium)")
        sys.exit(77)
    h.main(test)
