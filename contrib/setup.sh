#!/bin/sh
# setup.sh - the two ways to start with outrelay on a fresh Debian 12 machine.
#   contrib/setup.sh run    install what the relay needs, build it, run it on the example config
#   contrib/setup.sh test   install what the tests need, build Debug (ASan+UBSan), run every test
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
    ctest --test-dir build-debug --output-on-failure --timeout 900 ${CTEST_ARGS:-}
    ;;
*)
    echo "usage: contrib/setup.sh run|test" >&2
    exit 2
    ;;
esac
