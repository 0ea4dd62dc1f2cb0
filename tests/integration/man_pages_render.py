"""man_pages_render.py - outrelay(8) and outrelay.yaml(5) render cleanly and cover everything.

Both pages in docs/man/ render with `groff -ww -man -Tutf8` without a single warning and with
`man -l` (exit 0, NAME section present). outrelay(8) names every command and subcommand the
binary's own --help texts list; outrelay.yaml(5) names every setting the configuration loader
accepts (every `keys[]` table in outrelay/config/*.c and every settings table), so a new
command or setting without its paragraph fails here. (Before: there were no man pages.)
"""
import glob
import os
import re
import subprocess

import harness as h

PAGES = ("outrelay.8", "outrelay.yaml.5")


def run(argv, **kw):
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, **kw)


def marked_words(page):
    """Words set in bold or italic by a macro line (.B, .BR, .BI, .IB, .TP ...), - unescaped."""
    words = set()
    for line in open(page):
        if line.startswith((".B", ".I", ".RB", ".RI")):
            words.update(re.findall(r"[A-Za-z_][A-Za-z0-9_.-]*", line[3:].replace("\\-", "-")))
    return words


def help_words(binary, *args):
    r = run([binary, *args, "--help"])
    h.check(r.returncode == 0, f"outrelay {' '.join(args)} --help: status {r.returncode}")
    return r.stdout


def test(env):
    h.need_binary(env)
    man_dir = os.path.join(env.src, "docs", "man")
    for name in PAGES:
        page = os.path.join(man_dir, name)
        h.check(os.path.isfile(page), f"{page} is missing")
        r = run(["groff", "-ww", "-man", "-Tutf8", page])
        h.check(r.returncode == 0 and not r.stderr,
                f"groff -ww warns about {name} (status {r.returncode}):\n{r.stderr}")
        h.check(len(r.stdout) > 2000, f"{name} renders to almost nothing ({len(r.stdout)} bytes)")
        r = run(["man", "-l", page], env=dict(os.environ, MANWIDTH="80", MAN_KEEP_STDERR="1"))
        h.check(r.returncode == 0 and "NAME" in r.stdout and not r.stderr,
                f"man -l {name} failed (status {r.returncode}):\n{r.stderr}")
        h.log(f"{name}: {len(r.stdout.splitlines())} lines, no warnings")

    # outrelay(8): every command and subcommand of the binary's help texts
    words8 = marked_words(os.path.join(man_dir, "outrelay.8"))
    main_help = help_words(env.bin)
    commands = re.findall(r"^  ([a-z][a-z-]+) ", main_help, re.M)
    wanted = set(commands)
    queue = help_words(env.bin, "queue")
    wanted |= set(re.findall(r"^  ([a-z]+)\b", queue, re.M))
    ramp = help_words(env.bin, "ramp")
    wanted |= set(re.findall(r"^  ([a-z]+)\b", ramp, re.M))
    report = help_words(env.bin, "report")
    commands_part = report.split("Options:")[0]
    wanted |= set(re.findall(r"^  ([a-z][a-z-]+)\b", commands_part, re.M))
    wanted |= set(re.findall(r"(--[a-z][a-z0-9-]+)", report + queue + ramp + main_help))
    h.check({"serve", "check", "queue", "ramp", "keygen", "dns-advice", "report", "import-rua",
             "rua", "shape", "rollback"} <= wanted,
            f"the help texts no longer list the commands this test expects: {sorted(wanted)}")
    missing = sorted(w for w in wanted if w.lstrip("-") not in words8 and w not in words8)
    h.check(not missing, f"outrelay.8 does not describe: {missing}")

    # outrelay.yaml(5): every setting the loader accepts
    settings = set()
    for src in glob.glob(os.path.join(env.src, "outrelay", "config", "*.c")):
        text = open(src).read()
        for table in re.findall(r"const char \*const \w*keys\[\] = \{(.*?)\};", text, re.S):
            settings |= set(re.findall(r'"([a-z_]+)"', table))
    # ... and every setting of the settings tables next to each module's code
    for src in glob.glob(os.path.join(env.src, "outrelay", "*", "*settings.c")):
        settings |= set(re.findall(r'\.name = "([a-z_]+)"', open(src).read()))
    h.check(len(settings) > 60, f"found only {len(settings)} settings in the loader: "
            f"{sorted(settings)}")
    words5 = marked_words(os.path.join(man_dir, "outrelay.yaml.5"))
    missing = sorted(settings - words5)
    h.check(not missing, f"outrelay.yaml.5 does not describe the settings: {missing}")
    h.log(f"outrelay.8 covers {len(wanted)} commands and options, outrelay.yaml.5 "
          f"{len(settings)} settings")


if __name__ == "__main__":
    h.main(test)
