#!/usr/bin/python3
# check_rejects_broken_configs.py - proves that `outrelay check -c FILE` explains every mistake.
# For each broken configuration in tests/data/configs/ (expectations in expected.txt there) it
# runs the real binary and requires exit status 1 and every expected "FILE:LINE:COL: phrase"
# line on stderr; the shipped contrib/outrelay.example.yaml must pass with status 0.
# Needs OUTRELAY_BIN (the built binary) and OUTRELAY_SRC (the repository root), set by ctest.
import os
import subprocess
import sys

SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


def run_check(binary, path, cwd):
    return subprocess.run([binary, "check", "-c", path], cwd=cwd, capture_output=True,
                          text=True, timeout=60)


def read_expectations(configs_dir):
    """{config file name: [(prefix-with-file-or-None, "LINE:COL" or "FILE:LINE:COL", phrase)]}"""
    expected = {}
    with open(os.path.join(configs_dir, "expected.txt"), encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            parts = line.split(None, 2)
            if len(parts) != 3:
                sys.exit(f"expected.txt:{lineno}: want 'FILE POSITION PHRASE', got {line!r}")
            name, position, phrase = parts
            expected.setdefault(name, []).append((position, phrase))
    return expected


def sanitizer_trouble(text):
    return any(mark in text for mark in SANITIZER_MARKS)


def main():
    binary = os.environ.get("OUTRELAY_BIN")
    src = os.environ.get("OUTRELAY_SRC")
    if not binary or not src:
        sys.exit("OUTRELAY_BIN and OUTRELAY_SRC must be set (ctest sets them)")
    if not os.access(binary, os.X_OK):
        sys.exit(f"{binary} is not an executable")
    configs_dir = os.path.join(src, "tests", "data", "configs")
    expected = read_expectations(configs_dir)
    failures = []

    listed = set(expected)
    present = {n for n in os.listdir(configs_dir) if n.endswith(".yaml")}
    for name in sorted(present - listed):
        failures.append(f"{name}: not described in expected.txt")
    for name in sorted(listed - present):
        failures.append(f"{name}: listed in expected.txt but missing")

    for name in sorted(listed & present):
        path = os.path.join(configs_dir, name)
        result = run_check(binary, path, configs_dir)
        errors = result.stderr.splitlines()
        if result.returncode != 1:
            failures.append(f"{name}: exit status {result.returncode}, want 1")
        if sanitizer_trouble(result.stderr):
            failures.append(f"{name}: sanitizer report:\n{result.stderr}")
        for position, phrase in expected[name]:
            # "3:1" is a position in the configuration itself; "users.txt:3:1" in a file it names.
            prefix = (f"{path}:{position}: " if position.count(":") == 1 else f"{position}: ")
            if not any(e.startswith(prefix) and phrase in e for e in errors):
                failures.append(f"{name}: no stderr line '{prefix}...{phrase}...'; got:\n  " +
                                "\n  ".join(errors))

    example = os.path.join(src, "contrib", "outrelay.example.yaml")
    result = run_check(binary, example, src)
    if result.returncode != 0:
        failures.append(f"example config: exit status {result.returncode}, want 0; stderr:\n"
                        f"{result.stderr}")
    if f"{example}: configuration ok" not in result.stdout:
        failures.append(f"example config: stdout lacks '{example}: configuration ok': "
                        f"{result.stdout!r}")
    if sanitizer_trouble(result.stderr):
        failures.append(f"example config: sanitizer report:\n{result.stderr}")

    for failure in failures:
        print("FAIL:", failure)
    checked = len(listed & present)
    print(f"{checked} broken configurations checked, {len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
