"""settings_files_generated.py - the shipped example file and man page hold what the settings
tables generate, word for word.

`outrelay settings --example` prints one block per settings table (blank lines between them)
and `outrelay settings --man` one block per table (each starting with a `.\\" settings table`
line). Every block must appear unchanged in contrib/outrelay.example.yaml and
docs/man/outrelay.yaml.5, so a default, bound or help text changed in a table without
regenerating the shipped files fails here, and so does a hand edit of a generated paragraph.
(Before: both files were written by hand and could drift from the loader.)
"""
import os
import re
import subprocess

import harness as h


def generated(binary, option):
    r = subprocess.run([binary, "settings", option], capture_output=True, text=True, timeout=60)
    h.check(r.returncode == 0 and not r.stderr,
            f"outrelay settings {option}: status {r.returncode}\n{r.stderr}")
    return r.stdout


def test(env):
    h.need_binary(env)
    example = open(os.path.join(env.src, "contrib", "outrelay.example.yaml")).read()
    blocks = [b for b in generated(env.bin, "--example").split("\n\n") if b.strip()]
    h.check(len(blocks) >= 8, f"outrelay settings --example printed only {len(blocks)} blocks")
    for block in blocks:
        h.check(block in example,
                "contrib/outrelay.example.yaml differs from `outrelay settings --example` in "
                f"this block (regenerate it):\n{block}")

    page = open(os.path.join(env.src, "docs", "man", "outrelay.yaml.5")).read()
    man = generated(env.bin, "--man")
    blocks = [b for b in re.split(r'(?m)^(?=\.\\" settings table )', man) if b.strip()]
    h.check(len(blocks) >= 10, f"outrelay settings --man printed only {len(blocks)} blocks")
    for block in blocks:
        h.check(block in page,
                "docs/man/outrelay.yaml.5 differs from `outrelay settings --man` in this block "
                f"(regenerate it):\n{block.splitlines()[0]}")
    h.log(f"example file and man page hold all {len(blocks)} generated settings blocks")


if __name__ == "__main__":
    h.main(test)
