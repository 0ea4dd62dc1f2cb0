#!/bin/sh
# setup.sh - the two ways to start with outrelay on a fresh Debian 12 machine.
#   contrib/setup.sh run    install what the relay needs, build it, run it on the example config
#   contrib/setup.sh test   install what the tests need, build Debug (ASan+UBSan), run every test,
#                           then the unit tests again with the clock shifted a year ahead and back
# Tests start their own servers (NSD, smtp-sink, Python TLS sinks) on loopback and stop them.
set -eu
cd "$(dirname "$0")/.."

# package lists shared with .ci/run
packages() { grep -v '^#' "contrib/packages-$1.txt" | tr '\n' ' '; }
BUILD_DEPS="$(packages build)"
TEST_DEPS="$(packages test)"

install() {
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    missing=""
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
    done
    [ -z "$missing" ] && return 0
    echo "setup: installing$missing"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q
    # postfix is only used for its smtp-sink/smtp-source tools; "No configuration" keeps it idle
    echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
}

case "${1:-}" in
run)
    install $BUILD_DEPS
    cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBUILD_TESTING=OFF
    cmake --build build -j"$(nproc)"
    exec ./build/outrelay serve -c contrib/outrelay.example.yaml
    ;;
test)
    install $BUILD_DEPS $TEST_DEPS
    cmake -S . -B build-debug -DCMAKE_BUILD_TYPE=Debug
    cmake --build build-debug -j"$(nproc)"
    rc=0
    ctest --test-dir build-debug --output-on-failure --timeout 900 ${CTEST_ARGS:-} || rc=$?
    # A skipped test says why (its "SKIP:" line) here, not only in the log file.
    grep -h '^SKIP:' build-debug/Testing/Temporary/LastTest.log 2>/dev/null \
        | sed 's/^/setup: skipped test: /' || true
    # No test may depend on today's date: the unit tests again with the clock a year ahead and a
    # year back (libfaketime; ASan must tolerate the preloaded library).
    for shift in +400d -400d; do
        echo "setup: unit tests with the system clock shifted $shift"
        ASAN_OPTIONS=verify_asan_link_order=0 faketime -f "$shift" \
            ctest --test-dir build-debug --output-on-failure -R '^unit/' || rc=1
    done
    # Every parser of network input and the config loader, fuzzed 30 s each (fuzz/README.md).
    fuzz/run.sh 30 || rc=1
    # The build "setup.sh run" makes (-O2 finds warnings a Debug build does not; -Werror holds).
    echo "setup: the optimised build of 'setup.sh run'"
    { cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBUILD_TESTING=OFF >/dev/null &&
        cmake --build build -j"$(nproc)" >/dev/null; } || { echo "setup: the optimised build failed" >&2; rc=1; }
    exit $rc
    ;;
*)
    echo "usage: contrib/setup.sh run|test" >&2
    exit 2
    ;;
esac
