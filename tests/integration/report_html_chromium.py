"""report_html_chromium.py - `outrelay report html -o FILE` from a relay run with known traffic
(report_known_traffic.run_traffic) is one self-contained page that headless Chromium renders:
the rendered DOM holds the three charts with the recorded numbers in their data attributes
(ramp planned 25 % / actual 31.2 %, DMARC pass rate per domain x egress, 2 deferrals that are
shaping replies) and the tables; a screenshot is taken (its path is logged) and is a real
picture: a PNG of the asked size, many colours, the chart colours among them. The headline
carries the bounce share coloured by severity, the delivered / deferred / bounced chart holds the
delivery table's numbers, and the page is no wider than a 1280 px window (scrollWidth measured
by a script in a copy of the page). A second, tiny records database where every recipient
bounced and the one From domain publishes no DMARC record gives a red bounce share in the
headline and a neutral "no policy" bar, never a red 0 %.
Skips (exit 77) when /usr/bin/chromium is not installed (Debian package `chromium`)."""
import html.parser
import os
import re
import sqlite3
import time
import shutil
import struct
import subprocess
import sys
import zlib

import harness as h
from report_known_traffic import report, run_traffic

CHROMIUM = "/usr/bin/chromium"


class Dom(html.parser.HTMLParser):
    """Every element as (tag, attrs dict, id of the enclosing svg)."""

    def __init__(self):
        super().__init__()
        self.elements, self.svg = [], None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "svg":
            self.svg = a.get("id")
        self.elements.append((tag, a, self.svg))

    def handle_endtag(self, tag):
        if tag == "svg":
            self.svg = None


def png_pixels(path):
    """(width, height, rows of RGB tuples) of an 8-bit RGB/RGBA PNG, filters undone."""
    data = open(path, "rb").read()
    h.check(data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG")
    pos, idat, width = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, ctype = struct.unpack(">IIBB", body[:10])
            h.check(depth == 8 and ctype in (2, 6), f"PNG depth {depth} colour type {ctype}")
            bpp = 3 if ctype == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows, prev = [], bytearray(stride)
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append([tuple(line[x * bpp:x * bpp + 3]) for x in range(width)])
        prev = line
    return width, height, rows


def chromium(env, *args):
    argv = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--no-first-run", f"--user-data-dir={env.path('chromium-profile')}", *args]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=180)
    h.log(f"chromium {' '.join(args)} -> {r.returncode}; stderr tail:\n"
          + "\n".join(r.stderr.splitlines()[-5:]))
    h.check(r.returncode == 0, f"chromium failed: {r.stderr[-2000:]}")
    return r.stdout


def rendered(env, page):
    """(elements, DOM text, scrollWidth at 1280 px) of page as Chromium renders it; the width
    comes from a copy of the page with a script that writes it into the DOM."""
    dom = chromium(env, "--dump-dom", f"file://{page}")
    parser = Dom()
    parser.feed(dom)
    probe = page + ".width.html"
    with open(probe, "w", encoding="utf-8") as fh:
        fh.write(open(page, encoding="utf-8").read().replace(
            "</body>", "<script>document.body.setAttribute('data-scroll-width', "
            "document.documentElement.scrollWidth)</script></body>"))
    measured = chromium(env, "--window-size=1280,2000", "--dump-dom", f"file://{probe}")
    m = re.search(r'data-scroll-width="(\d+)"', measured)
    h.check(m, "the width probe did not run")
    return parser.elements, dom, int(m.group(1))


def no_policy_all_bounced(env, relay):
    """A copy of the relay's configuration on a records database holding three messages from
    nopolicy.example (no DMARC record: dmarc none) whose recipients all bounced."""
    state = env.path("state-nopolicy")
    os.makedirs(state, exist_ok=True)
    db = os.path.join(state, "records.db")
    src = sqlite3.connect(relay.db_path)
    dst = sqlite3.connect(db)
    src.backup(dst)
    src.close()
    now = int(time.time() * 1e6)
    dst.execute("DELETE FROM events")
    for i in range(3):
        q = f"NOPOL{i}"
        dst.execute("INSERT INTO events (ts_us, event, queue_id, sender, recipient, from_domain, "
                    "egress, spf_result, dmarc_result, action) VALUES (?, 'checked', ?, "
                    "'a@nopolicy.example', ?, 'nopolicy.example', 'legacy', 'pass', 'none', "
                    "'send')", (now - 60_000_000 + i, q, f"u{i}@example.net"))
        dst.execute("INSERT INTO events (ts_us, event, queue_id, recipient, egress, remote_mx, "
                    "reply_code, enhanced_code, reply_text) VALUES (?, 'bounced', ?, ?, 'legacy',"
                    " 'mx.example.net', 550, '5.1.1', 'no such user')",
                    (now - 30_000_000 + i, q, f"u{i}@example.net"))
    dst.commit()
    dst.close()
    conf = env.path("nopolicy.yaml")
    text = open(relay.conf_path, encoding="utf-8").read()
    h.check(relay.config["state"] in text, "cannot find the state path in the configuration")
    with open(conf, "w", encoding="utf-8") as fh:
        fh.write(text.replace(relay.config["state"], state))
    return conf


def test(env):
    relay, _ = run_traffic(env)
    page = env.path("report.html")
    report(relay, "html", "-o", page)
    text = open(page, encoding="utf-8").read()
    h.log(f"{page}: {len(text)} bytes")
    for bad in ("<script", "<link", "src=\"http", "href=\"http", "url(http", "@import"):
        h.check(bad not in text, f"the page is not self-contained: it contains {bad!r}")

    els, dom, width = rendered(env, page)

    def in_chart(chart, tag, cls, elements=None):
        return [a for t, a, svg in (elements or els) if svg == chart and t == tag
                and cls in (a.get("class") or "").split()]

    points = in_chart("chart-ramp", "g", "point")
    h.check(points, "the ramp chart has no points in the rendered DOM")
    h.check(all(p["data-planned"] == "25.0" for p in points), f"ramp points: {points}")
    h.check(sum(int(p["data-routed"]) for p in points) == 16, f"routed in chart: {points}")
    if len(points) == 1:
        h.check(points[0]["data-actual"] == "31.2", f"actual share in chart: {points}")
    bars = {(a["data-domain"], a["data-egress"]): a for a in in_chart("chart-alignment", "rect",
                                                                       "bar")}
    for key, rate, msgs in ((("pass.example", "legacy"), "100.0", "4"),
                            (("pass.example", "cloud"), "100.0", "5"),
                            (("fail.example", "legacy"), "0.0", "3"),
                            (("bounce.example", "legacy"), "0.0", "2")):
        h.check(key in bars and bars[key]["data-pass-rate"] == rate and
                bars[key]["data-messages"] == msgs, f"alignment bar {key}: {bars.get(key)}")
    hours = in_chart("chart-deferrals", "g", "hour")
    h.check(sum(int(g["data-deferred"]) for g in hours) == 2 and
            sum(int(g["data-shaping"]) for g in hours) == 2, f"deferral bars: {hours}")
    tables = {a.get("data-table") for t, a, _ in els if t == "table"}
    for name in ("accounting", "summary", "reasons", "hours", "delivery", "replies", "shaping",
                 "overrides"):
        h.check(name in tables, f"table {name} missing from the rendered page: {tables}")
    h.check("14 accepted" in dom and "0 unaccounted" in dom, "continuity summary not rendered")

    # the headline: bounce share of the recipients with a final outcome, by severity; the
    # outcomes chart holds the same counts
    outcomes = [a for t, a, svg in els if svg == "chart-outcomes" and t == "g"
                and a.get("class") == "outcome"]
    h.check(outcomes, "the delivered/deferred/bounced chart is missing")
    total = {k: sum(int(a[f"data-{k}"]) for a in outcomes)
             for k in ("delivered", "deferred", "bounced", "expired")}
    h.log(f"outcomes chart: {total}")
    h.check(total["delivered"] > 0 and total["bounced"] > 0 and total["deferred"] >= 2,
            f"outcome counts: {total}")
    head = [a for t, a, _ in els if t == "p" and "headline" in (a.get("class") or "").split()]
    h.check(head, "no headline with the bounce share")
    final = total["delivered"] + total["bounced"] + total["expired"]
    share = 100 * (total["bounced"] + total["expired"]) / final
    h.check(head[0]["data-bounce-share"] == f"{share:.1f}" and
            head[0]["data-severity"] == ("ok" if share < 2 else "warn" if share < 10 else "bad")
            and f"{share:.1f}% bounced" in dom, f"headline {head[0]} for a share of {share:.1f}")
    h.log(f"page width at a 1280 px window: {width}")
    h.check(width <= 1280, f"the page is {width} px wide in a 1280 px window")

    shot = env.path("report.png")
    chromium(env, f"--screenshot={shot}", "--window-size=1280,2000", f"file://{page}")
    keep = os.path.join(os.environ.get("TMPDIR", "/tmp"), "outrelay-report-screenshot.png")
    shutil.copy(shot, keep)
    h.log(f"screenshot: {shot} (copied to {keep}), {os.path.getsize(shot)} bytes")
    h.check(os.path.getsize(shot) > 20000, f"screenshot only {os.path.getsize(shot)} bytes")
    width, height, rows = png_pixels(shot)
    h.check((width, height) == (1280, 2000), f"screenshot is {width}x{height}")
    colours = {}
    for row in rows[::2]:
        for px in row[::2]:
            colours[px] = colours.get(px, 0) + 1
    top = max(colours.values()) / sum(colours.values())
    h.log(f"screenshot: {len(colours)} colours, the commonest covers {top:.0%}")
    h.check(len(colours) > 50 and top < 0.97, "the screenshot is (nearly) one colour")
    for name, rgb in (("green pass-rate bar", (0x2e, 0x9c, 0x5a)),
                      ("amber deferral bar", (0xe0, 0xa2, 0x1b))):
        h.check(any(px == rgb for row in rows for px in row),
                f"the {name} colour {rgb} is not in the screenshot")

    # little data: every recipient bounced, the only From domain publishes no DMARC record
    conf = no_policy_all_bounced(env, relay)
    small = env.path("report-nopolicy.html")
    r = subprocess.run([env.bin, "report", "html", "-o", small, "-c", conf], capture_output=True,
                       text=True, timeout=120)
    h.check(r.returncode == 0, f"report html on the small database: {r.stderr}")
    sels, sdom, swidth = rendered(env, small)
    bars = in_chart("chart-alignment", "rect", "bar", sels)
    h.log(f"no-policy page: bars {bars}, width {swidth}")
    h.check(len(bars) == 1 and bars[0]["data-domain"] == "nopolicy.example" and
            bars[0]["data-policy"] == "none" and "nopolicy" in bars[0]["class"].split() and
            "bad" not in bars[0]["class"].split(), f"the no-policy bar: {bars}")
    h.check("no policy" in sdom and not re.search(r">0\.0%<", sdom),
            "a domain without DMARC shows as 0 % pass")
    head = [a for t, a, _ in sels if t == "p" and "headline" in (a.get("class") or "").split()]
    h.check(head and head[0]["data-bounce-share"] == "100.0" and head[0]["data-severity"] == "bad"
            and "100.0% bounced" in sdom, f"headline when every recipient bounced: {head}")
    h.check(swidth <= 1280, f"the small page is {swidth} px wide in a 1280 px window")
    shot = env.path("report-nopolicy.png")
    chromium(env, f"--screenshot={shot}", "--window-size=1280,2000", f"file://{small}")
    keep = os.path.join(os.environ.get("TMPDIR", "/tmp"), "outrelay-report-nopolicy.png")
    shutil.copy(shot, keep)
    h.log(f"screenshot of the small page: {keep}")


if __name__ == "__main__":
    if not os.access(CHROMIUM, os.X_OK):
        print(f"SKIP: {CHROMIUM} is not installed (Debian package chromium)")
        sys.exit(77)
    h.main(test)
