#!/bin/sh
# run.sh SECONDS - builds the libFuzzer targets (clang, ASan + UBSan) into build-fuzz/ and runs
# each fuzz/fuzz_*.c for SECONDS on its seed corpus fuzz/corpus/NAME/ (new inputs go to
# build-fuzz/corpus/NAME/, never into the repository). Prints runs, exec/s and coverage per
# target; exits 1 if any target crashed, leaked, hit an assertion, a timeout or the memory limit
# (the input is kept as build-fuzz/crashes/NAME-*). contrib/setup.sh test runs it for 30 s.
# The mutation seed is fixed (FUZZ_SEED, default 1) so a CI run repeats what passed here rather
# than failing on a new random path; long runs to explore set FUZZ_SEED=0 (random).
set -eu
cd "$(dirname "$0")/.."
seconds="${1:?usage: fuzz/run.sh SECONDS}"

cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DOUTRELAY_FUZZ=ON -DBUILD_TESTING=OFF \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-fuzz -j"$(nproc)"

# longest input worth trying: a bit past each parser's own line or field limit
max_len() {
    case "$1" in
    command) echo 2100 ;;  # smtpd refuses command lines over 2048 bytes
    header) echo 20000 ;;  # a header field is cut at 8192 bytes
    dns) echo 4096 ;;      # a UDP answer with EDNS0
    reply) echo 20000 ;;   # a reply's text is cut near 8192 bytes
    transport) echo 65536 ;;  # MIME trees with long lines
    *) echo 16384 ;;       # config: the example file is 10 KB
    esac
}

failed=""
mkdir -p build-fuzz/crashes
for src in fuzz/fuzz_*.c; do
    name="$(basename "$src" .c)"
    name="${name#fuzz_}"
    mkdir -p "build-fuzz/corpus/$name"
    log="build-fuzz/fuzz_$name.log"
    rc=0
    "build-fuzz/fuzz/fuzz_$name" "build-fuzz/corpus/$name" "fuzz/corpus/$name" \
        -max_total_time="$seconds" -max_len="$(max_len "$name")" -timeout=10 \
        -seed="${FUZZ_SEED:-1}" \
        -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="build-fuzz/crashes/$name-" >"$log" 2>&1 || rc=$?
    runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")"
    rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")"
    cov="$(grep -o 'cov: [0-9]* ft: [0-9]*' "$log" | tail -n 1)"
    if [ "$rc" -eq 0 ]; then
        echo "fuzz: $name: ${runs:-?} runs in ${seconds}s (${rate:-?} exec/s), ${cov:-no coverage line}"
    else
        echo "fuzz: $name: FAILED (exit $rc) after ${runs:-?} runs; log $log:"
        grep -E '^(==[0-9]+==ERROR|SUMMARY|.*Assertion|artifact_prefix|Test unit written)' "$log" \
            | sed 's/^/fuzz:   /' || true
        failed="$failed $name"
    fi
done
if [ -n "$failed" ]; then
    echo "fuzz: crashed:$failed (inputs in build-fuzz/crashes/; see fuzz/README.md to reproduce)"
    exit 1
fi
echo "fuzz: every target ran ${seconds}s without a crash"
