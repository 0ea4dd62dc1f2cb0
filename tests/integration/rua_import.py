"""rua_import.py - `outrelay report import-rua FILE...` with the real binary: the sample DMARC
aggregate reports in tests/data/rua (plain XML, gzip, zip) are imported into <state>/records.db,
a second import skips them, hostile files (entities, XXE, DTD, malformed, truncated gzip, a gzip
and a zip bomb made here, a non-report, a FIFO) are refused by name and leave nothing in the
database, and progress is shown when stderr is a terminal. Exits 77 (skipped) while the report
command does not know import-rua yet; tests/unit/test_rua.c covers the same ground in-process."""
import gzip
import io
import os
import pty
import sqlite3
import subprocess
import types
import zipfile

import harness as h

DATA = os.path.join(os.environ.get("OUTRELAY_SRC", "."), "tests", "data", "rua")
GOOD = ["google-example.org-2026-03-01.xml", "outlook-example.org-2026-03-01.xml.gz",
        "yahoo-example.net-2026-03-02.zip"]
HOSTILE = {
    "hostile/billion-laughs.xml": "DOCTYPE",
    "hostile/xxe-file.xml": "DOCTYPE",
    "hostile/external-dtd.xml": "DOCTYPE",
    "hostile/malformed.xml": "malformed XML at line 14",
    "hostile/not-a-report.xml": "not a DMARC aggregate report",
    "hostile/truncated.xml.gz": "truncated",
    "hostile/bad-third-record.xml": "record 3",
}
LIMIT = 50 * 1024 * 1024


def write_config(env):
    """A config whose state directory is under the env; nothing is started from it."""
    dns = types.SimpleNamespace(server="127.0.0.1:53")
    cfg = h.standard_config(env, dns, 25)
    os.makedirs(cfg["state"], exist_ok=True)
    path = env.path("outrelay.yaml")
    with open(path, "w") as fh:
        fh.write(h.to_yaml(cfg) + "\n")
    return path, os.path.join(cfg["state"], "records.db")


def run(env, conf, files, stderr=subprocess.PIPE):
    return subprocess.run([env.bin, "report", "import-rua", "-c", conf] + files,
                          stdout=subprocess.PIPE, stderr=stderr, text=True, timeout=120)


def db_counts(db):
    con = sqlite3.connect(db)
    try:
        reports = con.execute("SELECT count(*) FROM rua_reports").fetchone()[0]
        rows, msgs = con.execute("SELECT count(*), coalesce(sum(count), 0) FROM rua_rows").fetchone()
        return reports, rows, msgs
    finally:
        con.close()


def make_bombs(env):
    bomb_gz = env.path("bomb.xml.gz")
    with open(bomb_gz, "wb") as fh:
        fh.write(gzip.compress(b"\0" * (LIMIT + 1024 * 1024), compresslevel=9))
    bomb_zip = env.path("bomb.zip")
    with zipfile.ZipFile(bomb_zip, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("report.xml", b"<" * (LIMIT + 1024 * 1024))
    h.check(os.path.getsize(bomb_gz) < 1024 * 1024 and os.path.getsize(bomb_zip) < 1024 * 1024,
            "the bombs should be small on disk")
    return {bomb_gz: "decompresses to more than the 50 MiB limit",
            bomb_zip: "decompresses to more than the 50 MiB limit"}


def test(env):
    h.need_binary(env)
    conf, db = write_config(env)
    good = [os.path.join(DATA, f) for f in GOOD]

    r = run(env, conf, good)
    both = r.stdout + r.stderr
    h.check(r.returncode == 0, f"import-rua exited {r.returncode}:\n{both}")
    for f in good:
        h.check(f"imported {f}: " in both, f"no 'imported {f}' line in:\n{both}")
    h.check(db_counts(db) == (3, 9, 102), lambda: f"stored {db_counts(db)}, want (3, 9, 102)")

    r = run(env, conf, good)
    both = r.stdout + r.stderr
    h.check(r.returncode == 0 and both.count("skipped ") == 3, f"re-import:\n{both}")
    h.check(db_counts(db) == (3, 9, 102), "re-import changed the database")

    # hostile files, each on its own into a fresh state directory: refused, nothing stored
    hostile = {os.path.join(DATA, k): v for k, v in HOSTILE.items()}
    hostile.update(make_bombs(env))
    os.remove(db)
    for path, why in hostile.items():
        r = run(env, conf, [path])
        both = r.stdout + r.stderr
        h.check(r.returncode == 1, f"{path}: exit {r.returncode}, want 1:\n{both}")
        h.check(f"refused {path}: " in both and why in both,
                f"{path}: want 'refused {path}: ...{why}...' in:\n{both}")
        h.check("root:" not in both, "the content of /etc/passwd leaked into the output")
        h.check(db_counts(db) == (0, 0, 0), f"{path}: something was stored")
        h.check("Sanitizer" not in r.stderr, f"{path}: sanitizer report:\n{r.stderr}")

    # a FIFO is refused at once instead of waiting forever for a writer
    fifo = env.path("report-fifo.xml")
    os.mkfifo(fifo)
    try:
        r = subprocess.run([env.bin, "report", "import-rua", "-c", conf, fifo],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        h.check(False, "import-rua hung on a FIFO (no answer within 10 s)")
    both = r.stdout + r.stderr
    h.check(r.returncode == 1 and f"refused {fifo}: not a regular file (a FIFO)" in both,
            f"FIFO: exit {r.returncode}, want 1 and 'not a regular file (a FIFO)':\n{both}")
    h.check(db_counts(db) == (0, 0, 0), "FIFO: something was stored")

    # a mixed batch on a terminal: good files imported, the bad one refused, progress shown
    batch = good + [os.path.join(DATA, "hostile/xxe-file.xml")]
    master, slave = pty.openpty()
    try:
        r = run(env, conf, batch, stderr=slave)
    finally:
        os.close(slave)
    tty = io.BytesIO()
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        tty.write(chunk)
    os.close(master)
    tty_text = tty.getvalue().decode(errors="replace")
    h.check(r.returncode == 1, f"mixed batch exit {r.returncode}:\n{r.stdout}{tty_text}")
    h.check("importing rua reports: 4/4" in tty_text, f"no progress on the terminal:\n{tty_text}")
    h.check(db_counts(db) == (3, 9, 102), lambda: f"mixed batch stored {db_counts(db)}")


def import_rua_unknown():
    """The binary's answer when it does not know the command (exit 2, "unknown ... import-rua"),
    else None. Probed in its own Env, before the test proper."""
    env = h.Env("rua_import-probe")
    try:
        h.need_binary(env)
        conf, _ = write_config(env)
        r = run(env, conf, [os.path.join(DATA, GOOD[0])])
        text = r.stdout + r.stderr
        return text if r.returncode == 2 and "unknown" in text and "import-rua" in text else None
    finally:
        env.cleanup()


if __name__ == "__main__":
    unknown = import_rua_unknown()
    if unknown is not None:
        print(f"SKIP: this outrelay does not know `report import-rua` yet:\n{unknown}")
        raise SystemExit(77)
    h.main(test)
