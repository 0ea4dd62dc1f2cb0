#!/usr/bin/env bash
# relay-vs-postfix.sh - push identical SMTP load through a throw-away Postfix
# relay (without and with the OpenDKIM milter), a throw-away Exim (without and
# with its own DKIM signing) and through outrelay (without signing, with an
# RSA-2048 key, with RSA-2048 + Ed25519), all delivering to Postfix's
# smtp-sink, and compare accepted and end-to-end message rates; then the
# latency, profile, idle-session and queue (BENCH_QUEUE) phases. See bench/README.md.
#
# Environment knobs (defaults in brackets):
#   BENCH_MESSAGES   messages per system                      [20000]
#   BENCH_SESSIONS   parallel smtp-source sessions            [20]
#   BENCH_SIZE       message size in bytes (smtp-source -l)   [4096]
#   BENCH_TIMEOUT    seconds allowed per phase (accept, drain) [900]
#   BENCH_SYSTEMS    which systems to run, in order
#                    ["postfix postfix-opendkim exim-dkim outrelay outrelay-rsa
#                      outrelay-dual outrelay-ramp"]; "exim" (unsigned) on request
#   BENCH_LATENCY=0  skip the latency phase (end of DATA -> 250 at half and full peak)
#   BENCH_LAT_MESSAGES  messages per latency measurement      [BENCH_MESSAGES, at most 10000]
#   BENCH_IDLE_SESSIONS idle sessions held against outrelay; 0 skips   [10000]
#   BENCH_PROFILE=0  skip the perf profile of outrelay-rsa
#   BENCH_QUEUE      messages deferred for a dead destination in the queue phase; 0 skips [0]
#   BENCH_PROFILE_MESSAGES messages in the profiled run       [BENCH_MESSAGES, at most 5000]
#   BENCH_CACHE      where Exim's Debian packages are unpacked [/var/cache/outrelay-bench]
#   BENCH_KEEP=1     keep the temp dir (logs, spools) afterwards
#   BENCH_TMPDIR     parent for the temp dir                  [$TMPDIR or /tmp]
#   OUTRELAY_BIN     outrelay binary       [$REPO/build-bench/outrelay]
#   BENCH_BUILD=0    use build-bench/outrelay as it is (no incremental rebuild)
set -euo pipefail
[[ "${BENCH_CLUSTER:-0}" == 1 ]] && exec "$(dirname "${BASH_SOURCE[0]}")/cluster.sh"  # only the cluster bench, see bench/README.md

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
N="${BENCH_MESSAGES:-20000}"
SESSIONS="${BENCH_SESSIONS:-20}"
SIZE="${BENCH_SIZE:-4096}"
TIMEOUT="${BENCH_TIMEOUT:-900}"
ALL_SYSTEMS="postfix postfix-opendkim exim exim-dkim outrelay outrelay-rsa outrelay-dual outrelay-ramp outrelay-mx"
# plain exim is in ALL_SYSTEMS but not run by default: Debian's heavy build forks and re-executes
# itself for every delivery, so each Exim system costs minutes; exim-dkim is the anchor
DEFAULT_SYSTEMS="postfix postfix-opendkim exim-dkim outrelay outrelay-rsa outrelay-dual outrelay-ramp"
SYSTEMS="${BENCH_SYSTEMS:-$DEFAULT_SYSTEMS}"
KEEP="${BENCH_KEEP:-0}"
OUTRELAY_BIN="${OUTRELAY_BIN:-$REPO/build-bench/outrelay}"
BUILD="${BENCH_BUILD:-1}"
BUILD_DIR="$REPO/build-bench"
LATENCY="${BENCH_LATENCY:-1}"
LAT_N="${BENCH_LAT_MESSAGES:-$(( N < 10000 ? N : 10000 ))}"
IDLE="${BENCH_IDLE_SESSIONS:-10000}"
PROFILE="${BENCH_PROFILE:-1}"
QUEUE="${BENCH_QUEUE:-0}"
PROF_N="${BENCH_PROFILE_MESSAGES:-$(( N < 5000 ? N : 5000 ))}"
CACHE="${BENCH_CACHE:-/var/cache/outrelay-bench}"
# The sender domain lives in a zone served by our own NSD; smtp-source writes
# "From: <SENDER>" into every message it generates, so the From domain (which
# DKIM signs and DMARC evaluates) is the envelope sender's domain.
ZONE="outrelay.test"
DOMAIN="bench.$ZONE"
SENDER="bench@$DOMAIN"
RCPT="sink@rcpt.$ZONE"
SEL_RSA="rsa1"              # outrelay's RSA-2048 selector
SEL_ED="ed1"                # outrelay's Ed25519 selector
SEL_PF="pf1"                # OpenDKIM's RSA-2048 selector
SEL_EX="ex1"                # Exim's RSA-2048 selector

SMTP_SOURCE=/usr/sbin/smtp-source
SMTP_SINK=/usr/sbin/smtp-sink
POSTFIX=/usr/sbin/postfix
POSTCONF=/usr/sbin/postconf
OPENDKIM=/usr/sbin/opendkim
NSD=/usr/sbin/nsd
PY3=/usr/bin/python3        # the Debian interpreter (python3-dkim lives there)

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

for v in N SESSIONS SIZE TIMEOUT LAT_N PROF_N; do
    [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer (got '${!v}')"
done
[[ "$IDLE" =~ ^[0-9]+$ ]] || die "BENCH_IDLE_SESSIONS must be a number (got '$IDLE')"
[[ "$QUEUE" =~ ^[0-9]+$ ]] || die "BENCH_QUEUE must be a number (got '$QUEUE')"
for s in $SYSTEMS; do
    [[ " $ALL_SYSTEMS " == *" $s "* ]] || die "unknown system '$s' in BENCH_SYSTEMS (known: $ALL_SYSTEMS)"
done
[[ $EUID -eq 0 ]] || die "run as root (Postfix master and smtp-sink -u need it)"
has_system() { [[ " $SYSTEMS " == *" $1 "* ]]; }
has_outrelay() { [[ " $SYSTEMS " == *" outrelay"* ]]; }
# Every system but the plain Postfix one talks to our DNS server: outrelay's
# SPF/DMARC checks resolve against it (so no query leaves the box), and the
# signature check before a signing run looks the public keys up there.
needs_dns() { [[ " $SYSTEMS " == *" outrelay"* || " $SYSTEMS " == *" postfix-opendkim "* || " $SYSTEMS " == *" exim"* ]]; }
has_exim() { [[ " $SYSTEMS " == *" exim"* ]]; }

# ---------------------------------------------------------------- packages
need_pkg() {  # need_pkg FILE PACKAGE
    [[ -x "$1" ]] && return 0
    log "$1 missing; installing package $2"
    DEBIAN_FRONTEND=noninteractive apt-get install -y "$2" >&2
    [[ -x "$1" ]] || die "$1 still missing after installing $2"
}
need_pkg "$POSTFIX" postfix
need_pkg "$SMTP_SOURCE" postfix
need_pkg "$SMTP_SINK" postfix
need_pkg /usr/bin/ss iproute2
need_pkg /usr/bin/timeout coreutils
need_pkg /usr/bin/findmnt util-linux
need_pkg /usr/bin/setpriv util-linux
getent passwd postfix >/dev/null || die "no 'postfix' user (broken postfix install?)"
getent group postdrop >/dev/null || die "no 'postdrop' group (broken postfix install?)"
if needs_dns; then
    need_pkg "$NSD" nsd
    need_pkg /usr/sbin/nsd-checkzone nsd
    need_pkg /usr/bin/dig bind9-dnsutils
    need_pkg /usr/bin/openssl openssl
    need_pkg "$PY3" python3
    if ! "$PY3" -c 'import dkim, nacl' 2>/dev/null; then
        log "python3-dkim/python3-nacl missing (used to verify signatures once); installing"
        DEBIAN_FRONTEND=noninteractive apt-get install -y python3-dkim python3-nacl >&2
        "$PY3" -c 'import dkim, nacl' || die "python3 still cannot import dkim and nacl"
    fi
    getent group nogroup >/dev/null || die "no 'nogroup' group (NSD runs as nobody:nogroup)"
fi
if has_system postfix-opendkim; then
    # Only the binary is used: /etc/opendkim.conf and the system service are
    # neither read nor started (the package's postinst may try to start the
    # service; on our CI box policy-rc.d refuses that).
    need_pkg "$OPENDKIM" opendkim
    getent passwd opendkim >/dev/null || die "no 'opendkim' user (broken opendkim install?)"
fi

# ------------------------------------------------------------------ state
TMP=""                      # created after the (optional) build, see bottom
PF=""                       # the Postfix instance in use (a directory under $TMP)
OD=""                       # OpenDKIM's directory (under /run, see setup_opendkim)
SINK_PID=""
SOURCE_PID=""
OUTRELAY_PID=""
NSD_PID=""
NSD_PORT=""
OPENDKIM_PID=""
EXIM_PID=""
EXIM_CG=""
HOLD_PID=""
PERF_PID=""
PERF_PARANOID=""
PF_STARTED=0
declare -A RES=()

pid_alive() {  # true if PID exists and is not a zombie
    local st
    [[ -n "$1" && -r "/proc/$1/stat" ]] || return 1
    st="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" || return 1
    [[ -n "$st" && "$st" != Z ]]
}

stop_pid() {  # stop_pid PID NAME: TERM, wait up to 5 s, then KILL
    local pid="$1" name="$2" i
    [[ -n "$pid" ]] || return 0
    if pid_alive "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do pid_alive "$pid" || break; sleep 0.1; done
        if pid_alive "$pid"; then
            log "$name (pid $pid) ignored SIGTERM; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || true
}

stop_postfix() {
    [[ "$PF_STARTED" == 1 ]] || return 0
    PF_STARTED=0
    local mpid=""
    [[ -r "$PF/queue/pid/master.pid" ]] && mpid="$(tr -dc 0-9 <"$PF/queue/pid/master.pid")"
    "$POSTFIX" -c "$PF/etc" stop >>"$TMP/postfix-ctl.log" 2>&1 || true
    # 'postfix stop' returns once the master has been signalled; make sure it
    # (and its process group) are really gone before we delete the queue.
    if [[ -n "$mpid" ]]; then
        local i
        for ((i = 0; i < 100; i++)); do pid_alive "$mpid" || break; sleep 0.1; done
        if pid_alive "$mpid"; then
            log "Postfix master $mpid still alive; killing its process group"
            kill -KILL -- "-$mpid" 2>/dev/null || kill -KILL "$mpid" 2>/dev/null || true
        fi
    fi
}

stop_nsd() {  # via its pidfile, falling back to the PID we started
    [[ -n "$NSD_PID" ]] || return 0
    local fpid=""
    [[ -r "$TMP/nsd/nsd.pid" ]] && fpid="$(tr -dc 0-9 <"$TMP/nsd/nsd.pid")"
    if [[ -n "$fpid" && "$fpid" != "$NSD_PID" ]]; then
        log "nsd pidfile says $fpid, we started $NSD_PID; stopping both"
        pid_alive "$fpid" && kill -TERM "$fpid" 2>/dev/null
    fi
    stop_pid "$NSD_PID" nsd
    NSD_PID=""
}

stop_relays() {  # whichever relay, milter and sink are running
    stop_pid "$OUTRELAY_PID" outrelay; OUTRELAY_PID=""
    stop_pid "$EXIM_PID" exim; EXIM_PID=""
    exim_cgroup_remove
    stop_postfix
    stop_pid "$OPENDKIM_PID" opendkim; OPENDKIM_PID=""
    stop_pid "$SINK_PID" smtp-sink; SINK_PID=""
}

cleanup() {
    local rc=$?
    set +e
    trap - INT TERM
    stop_pid "$SOURCE_PID" smtp-source; SOURCE_PID=""
    stop_pid "$HOLD_PID" hold-sessions; HOLD_PID=""
    [[ -n "$PERF_PID" ]] && { kill -INT "$PERF_PID" 2>/dev/null; stop_pid "$PERF_PID" perf; PERF_PID=""; }
    [[ -n "$PERF_PARANOID" ]] && echo "$PERF_PARANOID" >/proc/sys/kernel/perf_event_paranoid
    stop_relays
    stop_nsd
    if [[ -z "$TMP" ]]; then
        :
    elif [[ "$KEEP" == 1 || $rc -ne 0 ]]; then
        log "temp dir kept: $TMP"
        [[ -n "$OD" ]] && log "OpenDKIM directory kept: $OD"
    else
        rm -rf "$TMP"
        [[ -n "$OD" ]] && rm -rf "$OD"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ------------------------------------------------------------------ ports
# Pick ports below the ephemeral range so outgoing client sockets can't
# collide with them, and check nothing is listening there right now (TCP or
# UDP: NSD uses both).
read -r EPH_LO _ </proc/sys/net/ipv4/ip_local_port_range
USED_PORTS=" "
port_busy() { [[ -n "$(ss -Hltun "sport = :$1" 2>/dev/null)" ]]; }
free_port() {
    local lo=20000 hi=$((EPH_LO - 1)) p i
    ((hi > lo)) || { lo=10000; hi=19999; }
    for ((i = 0; i < 200; i++)); do
        p=$((lo + RANDOM % (hi - lo + 1)))
        [[ "$USED_PORTS" == *" $p "* ]] && continue
        port_busy "$p" && continue
        USED_PORTS+="$p "
        echo "$p"
        return 0
    done
    die "could not find a free TCP port"
}

wait_listen() {  # wait_listen PORT PID NAME SECONDS
    local port="$1" pid="$2" name="$3" secs="$4" i
    for ((i = 0; i < secs * 10; i++)); do
        port_busy "$port" && return 0
        [[ -n "$pid" ]] && ! pid_alive "$pid" && die "$name exited before listening on $port"
        sleep 0.1
    done
    die "$name did not listen on 127.0.0.1:$port within ${secs}s"
}

port_owned_by() {  # PORT PID: the listener on PORT belongs to PID
    ss -Hltnp "sport = :$1" 2>/dev/null | grep -q "pid=$2,"
}

now() { echo "$EPOCHREALTIME"; }

# CPU seconds (user + system) used so far by the given processes, their
# threads, their live children and the children they have already reaped.
# Snapshots taken around a run give the relay's own CPU cost, which other
# load on the box inflates much less than it inflates wall-clock rates.
HZ="$(getconf CLK_TCK 2>/dev/null || echo 100)"
cpu_of() {  # cpu_of PID...
    local roots=" $* "
    # cat, not awk over the glob: a process that exits between the glob and the read must not
    # abort the sum (mawk stops at the first file it cannot open, which printed 0 and made a
    # run's CPU negative); cat's own failure on such a file must not end the script under
    # pipefail either. The pid is the first field of each line.
    { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v roots="$roots" -v hz="$HZ" '
        { pid = $1; line = $0; sub(/^.*\) /, "", line); split(line, f, " ")
          # f[2] = ppid, f[12..15] = utime stime cutime cstime
          if (index(roots, " " pid " ") || index(roots, " " f[2] " "))
              t += f[12] + f[13] + f[14] + f[15] }
        END { printf "%.2f", t / hz }'
}
fdiv() { awk -v a="$1" -v b="$2" -v f="${3:-%.1f}" 'BEGIN { if (b > 0) printf f, a / b; else printf "n/a" }'; }
fsub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a - b }'; }

# -------------------------------------------------------------- machine info
print_machine_info() {
    local fstype dirty=""
    fstype="$(findmnt -n -o FSTYPE --target "$TMP" 2>/dev/null || stat -f -c %T "$TMP" 2>/dev/null || echo '?')"
    echo "== machine"
    echo "nproc:        $(nproc)"
    echo "kernel:       $(uname -srm)"
    echo "cpu:          $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo 2>/dev/null || echo '?')"
    echo "memory:       $(awk '/^MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
    echo "temp dir:     $TMP"
    echo "temp dir fs:  $fstype ($(df -P "$TMP" | awk 'NR==2 {print $1}'), mount opts: $(findmnt -n -o OPTIONS --target "$TMP" 2>/dev/null || echo '?'))"
    echo "postfix:      $("$POSTCONF" -h -d mail_version 2>/dev/null || echo '?')"
    has_system postfix-opendkim && echo "opendkim:     $("$OPENDKIM" -V 2>/dev/null | head -n 1 || echo '?')"
    needs_dns && echo "nsd:          $("$NSD" -v 2>&1 | head -n 1 || echo '?')"
    if has_outrelay; then
        if [[ "$OUTRELAY_BIN" == "$BUILD_DIR/outrelay" ]] && git -C "$REPO" rev-parse --git-dir >/dev/null 2>&1; then
            [[ -n "$(git -C "$REPO" status --porcelain --untracked-files=no -- outrelay CMakeLists.txt 2>/dev/null)" ]] \
                && dirty=" + uncommitted changes under outrelay/"
            echo "outrelay:     $OUTRELAY_BIN (tree at $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null)$dirty)"
        else
            echo "outrelay:     $OUTRELAY_BIN (built $(date -r "$OUTRELAY_BIN" '+%F %T'))"
        fi
    fi
    echo "loadavg:      $(cut -d' ' -f1-3 /proc/loadavg) (other work on the box skews results)"
    echo "bench load:   $N msgs x $SIZE B, $SESSIONS sessions; timeout ${TIMEOUT}s per phase"
    echo "systems:      $SYSTEMS"
    echo
}

# ----------------------------------------------------------------- the sink
# A fresh smtp-sink per system. -M N makes it exit after N messages, so its
# exit marks "everything has been delivered"; -c prints running counters that
# we use for progress/diagnostics if it never gets there.
start_sink() {  # start_sink PORT [COUNT]: COUNT messages (default N) then exit; 0 = never exit
    local port="$1" count="${2:-$N}"
    local -a m=(-M "$count")
    ((count > 0)) || m=()
    : >"$TMP/sink-$port.out"
    SINK_CMD=(env MAIL_CONFIG=/nonexistent "$SMTP_SINK" -u nobody -c "${m[@]}" "127.0.0.1:$port" 256)
    echo "  sink:   ${SINK_CMD[*]}"
    "${SINK_CMD[@]}" >"$TMP/sink-$port.out" 2>"$TMP/sink-$port.err" &
    SINK_PID=$!
    wait_listen "$port" "$SINK_PID" smtp-sink 10
    port_owned_by "$port" "$SINK_PID" || die "port $port is held by something other than our smtp-sink"
}

# A sink that writes every message it gets into DIR (one file each) and never
# exits by itself: used for the one-message check before a measured run.
start_dump_sink() {  # start_dump_sink PORT DIR
    local port="$1" dir="$2"
    mkdir -p "$dir"
    chown nobody "$dir"
    env MAIL_CONFIG=/nonexistent "$SMTP_SINK" -u nobody -d "$dir/%H%M%S." "127.0.0.1:$port" 16 \
        >"$dir.sink.out" 2>"$dir.sink.err" &
    SINK_PID=$!
    wait_listen "$port" "$SINK_PID" "smtp-sink (dump)" 10
    port_owned_by "$port" "$SINK_PID" || die "port $port is held by something other than our smtp-sink"
}

sink_count() {  # last message counter printed by smtp-sink -c
    # smtp-sink -c writes "sess=S quit=Q mesg=M" updates separated by CR.
    tr '\r' '\n' <"$TMP/sink-$1.out" 2>/dev/null \
        | sed -n 's/.*mesg=\([0-9][0-9]*\).*/\1/p' | tail -n 1 | awk '{print $1+0} END {if (NR == 0) print 0}'
}

# Before a measured run: wait (up to 30 s) until the whole machine used under 10 % of one CPU
# over a second, so what the previous system left running (Exim's detached deliveries, the
# write-back of its spool, a Python client) does not weigh on the next one. Prints the wait.
busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }
wait_quiet() {
    local t0 b0 b1 i
    t0="$(now)"
    for ((i = 0; i < 30; i++)); do
        b0="$(busy_ticks)"; sleep 1; b1="$(busy_ticks)"
        ((b1 - b0 < HZ / 10)) && break
    done
    echo "  quiet:  $(fsub "$(now)" "$t0")s until the machine was idle ($((b1 - b0)) ticks busy in the last second)"
}

# run_load SYSTEM RELAYPORT SINKPORT: smtp-source against the relay, then wait
# for the sink to see all N messages.
run_load() {
    local sys="$1" rport="$2" sport="$3" t0 t1 t2 rc deadline errs
    local -a src=(env MAIL_CONFIG=/nonexistent timeout "$TIMEOUT" "$SMTP_SOURCE"
        -s "$SESSIONS" -m "$N" -l "$SIZE" -f "$SENDER" -t "$RCPT" "127.0.0.1:$rport")
    echo "  source: ${src[*]}"
    sync
    wait_quiet
    t0="$(now)"
    # background + wait, so that a TERM/INT to this script is handled at once
    "${src[@]}" >"$TMP/source-$sys.out" 2>"$TMP/source-$sys.err" &
    SOURCE_PID=$!
    set +e
    wait "$SOURCE_PID"
    rc=$?
    set -e
    SOURCE_PID=""
    t1="$(now)"
    errs="$(grep -c . "$TMP/source-$sys.err" || true)"
    RES[$sys.srcerr]="$errs"
    if ((rc != 0)); then
        ((rc == 124)) && log "$sys: smtp-source did not finish within ${TIMEOUT}s"
        log "$sys: smtp-source exited $rc after $(fsub "$t1" "$t0")s; stderr:"
        head -n 20 "$TMP/source-$sys.err" >&2
        log "$sys: sink had received $(sink_count "$sport")/$N messages"
        RES[$sys.accept]="failed"; RES[$sys.e2e]="failed"; KEEP=1
        stop_pid "$SINK_PID" smtp-sink; SINK_PID=""
        return 1
    fi
    ((errs == 0)) || { log "$sys: smtp-source reported $errs problem line(s):"; head -n 10 "$TMP/source-$sys.err" >&2; }

    # drain: wait for smtp-sink (-M N) to exit, bounded by TIMEOUT
    deadline=$(( ${t1%.*} + TIMEOUT ))
    while pid_alive "$SINK_PID"; do
        if (( ${EPOCHREALTIME%.*} >= deadline )); then
            log "$sys: sink saw only $(sink_count "$sport")/$N messages after ${TIMEOUT}s"
            RES[$sys.accept]="$(fsub "$t1" "$t0")"; RES[$sys.e2e]="timeout"; KEEP=1
            stop_pid "$SINK_PID" smtp-sink; SINK_PID=""
            return 1
        fi
        sleep 0.02
    done
    t2="$(now)"
    wait "$SINK_PID" 2>/dev/null || true
    SINK_PID=""
    RES[$sys.accept]="$(fsub "$t1" "$t0")"
    RES[$sys.e2e]="$(fsub "$t2" "$t0")"
    log "$sys: accepted in ${RES[$sys.accept]}s, all $N delivered after ${RES[$sys.e2e]}s"
}

# cpu_run SYSTEM COMMAND...: run COMMAND and record the CPU seconds the relay
# used meanwhile (Postfix: master and its children, plus OpenDKIM if it runs;
# outrelay: its process) and, separately, what our NSD used.
relay_pids() {
    local p=""
    [[ "$PF_STARTED" == 1 && -r "$PF/queue/pid/master.pid" ]] && p+=" $(tr -dc 0-9 <"$PF/queue/pid/master.pid")"
    [[ -n "$OPENDKIM_PID" ]] && p+=" $OPENDKIM_PID"
    [[ -n "$OUTRELAY_PID" ]] && p+=" $OUTRELAY_PID"
    [[ -n "$EXIM_PID" ]] && p+=" $EXIM_PID"
    echo "$p"
}
cg_cpu() { awk '{ printf "%.2f", $1 / 1e9 }' "$1/cpuacct.usage"; }  # CPU seconds of a cgroup
cpu_run() {
    local sys="$1" pids c0 c1 d0 d1 rc=0 cg="$EXIM_CG"
    shift
    pids="$(relay_pids)"
    if [[ -n "$cg" ]]; then c0="$(cg_cpu "$cg")"; else c0="$(cpu_of $pids)"; fi
    d0="$(cpu_of $NSD_PID)"
    "$@" || rc=$?
    if [[ -n "$cg" ]]; then c1="$(cg_cpu "$cg")"; else c1="$(cpu_of $pids)"; fi
    d1="$(cpu_of $NSD_PID)"
    if [[ -z "${pids// }" ]]; then
        RES[$sys.cpu]="n/a"; RES[$sys.cpunote]="no relay process to measure"
    elif ! pid_alive "${pids##* }"; then
        RES[$sys.cpu]="n/a"; RES[$sys.cpunote]="the relay exited during the run"
    elif awk -v a="$c0" -v b="$c1" 'BEGIN { exit !(b < a) }'; then
        RES[$sys.cpu]="n/a"; RES[$sys.cpunote]="CPU went down ($c0 s -> $c1 s): a measured process was replaced"
    else
        RES[$sys.cpu]="$(awk -v a="$c0" -v b="$c1" 'BEGIN { printf "%.1f", b - a }')"
    fi
    [[ -n "$NSD_PID" ]] && RES[$sys.dnscpu]="$(awk -v a="$d0" -v b="$d1" 'BEGIN { printf "%.1f", b - a }')"
    return $rc
}

# --------------------------------------------------------- one-message check
# Before a measured run of a system that should sign or check, one message
# goes through a separate, short-lived instance of the same setup into a
# dumping sink, and the stored copy is inspected: the number and algorithms of
# DKIM-Signature fields, and that each of them verifies (dkimpy, with the keys
# looked up in our NSD). A measured run whose messages were not signed would
# be meaningless, so a failed check skips the measurement.

send_one() {  # send_one RELAYPORT LOG: one message like the measured ones
    env MAIL_CONFIG=/nonexistent timeout 60 "$SMTP_SOURCE" -m 1 -l "$SIZE" \
        -f "$SENDER" -t "$RCPT" "127.0.0.1:$1" >>"$2" 2>&1
}

wait_grep() {  # wait_grep FILE REGEX SECONDS: until a line in FILE matches
    local i
    for ((i = 0; i < $3 * 10; i++)); do
        grep -Eq -- "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

write_dkim_verifier() {
    cat >"$TMP/dkim-verify.py" <<'EOF'
# dkim-verify.py DUMPFILE DNSPORT: list and verify every DKIM-Signature of a
# message stored by smtp-sink -d (LF line ends, sink's own X-/Received lines
# on top, which no signature covers). Public keys come from the bench's NSD.
import re, subprocess, sys
import dkim

path, port = sys.argv[1], sys.argv[2]
raw = open(path, 'rb').read().replace(b'\r\n', b'\n').replace(b'\n', b'\r\n')

def lookup(name, timeout=5):
    if isinstance(name, bytes):
        name = name.decode()
    out = subprocess.run(['dig', '@127.0.0.1', '-p', port, '+short', '+norecurse',
                          '+time=2', '+tries=1', 'TXT', name.rstrip('.')],
                         capture_output=True, text=True, timeout=timeout).stdout
    first = out.splitlines()[0] if out.strip() else ''
    parts = re.findall(r'"((?:[^"\\]|\\.)*)"', first)
    return ''.join(parts).encode()

n = len(re.findall(rb'(?im)^dkim-signature:', raw))
ok = 0
for i in range(n):
    d = dkim.DKIM(raw)
    try:
        res = d.verify(idx=i, dnsfunc=lookup)
        err = ''
    except Exception as e:  # a mismatch raises in DKIM.verify
        res, err = False, ' (%s)' % e
    f = d.signature_fields or {}
    tag = lambda k: f.get(k, b'?').decode(errors='replace')
    print('sig %d: a=%s d=%s s=%s c=%s: %s%s' % (i, tag(b'a'), tag(b'd'), tag(b's'), tag(b'c'),
          'pass' if res else 'FAIL', err))
    ok += bool(res)
print('signatures: %d, verified: %d' % (n, ok))
sys.exit(0 if ok == n else 1)
EOF
}

# check_dump SYSTEM DIR EXPECTED_ALGS: the single stored message carries
# exactly the expected signatures ("" = none; else e.g. "rsa-sha256" or
# "ed25519-sha256 rsa-sha256", sorted) and each verifies.
check_dump() {
    local sys="$1" dir="$2" want="$3" f got out
    f="$(find "$dir" -type f | head -n 1)"
    [[ -n "$f" ]] || { log "$sys check: the sink stored no message"; return 1; }
    [[ "$(find "$dir" -type f | wc -l)" == 1 ]] || { log "$sys check: more than one message stored"; return 1; }
    out="$("$PY3" "$TMP/dkim-verify.py" "$f" "$NSD_PORT" 2>&1)" || {
        log "$sys check: DKIM verification failed:"; printf '%s\n' "$out" >&2; return 1; }
    printf '%s\n' "$out" | sed 's/^/  check:  /'
    got="$(printf '%s\n' "$out" | sed -n 's/^sig [0-9]*: a=\([^ ]*\) d=\([^ ]*\) .*/\1 \2/p' | sort)"
    local expect="" a
    for a in $want; do expect+="$a $DOMAIN"$'\n'; done
    expect="$(printf '%s' "$expect" | sort)"
    if [[ "$got" != "$expect" ]]; then
        log "$sys check: expected signatures [$(echo $want)] by $DOMAIN, got:"
        printf '%s\n' "${got:-none}" >&2
        return 1
    fi
}

# ------------------------------------------------------------- DNS and keys
# One NSD for the whole invocation, serving $ZONE: the DKIM keys of outrelay
# and OpenDKIM, the sender domain's SPF record (127.0.0.1 may send) and its
# DMARC record (p=reject).
make_keys() {
    local kcfg
    # outrelay: the RSA key in keys-rsa; the same RSA key plus an Ed25519 key
    # in keys-dual; keys-none stays empty (the plain run must not sign).
    mkdir -p "$TMP/keys-rsa" "$TMP/keys-dual" "$TMP/keys-none"
    chmod 700 "$TMP/keys-rsa" "$TMP/keys-dual" "$TMP/keys-none"
    if has_outrelay; then
        kcfg="$TMP/keygen.yaml"
        printf 'hostname: %s\nspool: %s\nstate: %s\nkeys: %s\n' "$DOMAIN" \
            "$TMP/keygen-spool" "$TMP/keygen-state" "$TMP/keys-dual" >"$kcfg"
        "$OUTRELAY_BIN" keygen "$DOMAIN" "$SEL_RSA" --rsa 2048 -c "$kcfg" >"$TMP/dkim-$SEL_RSA.txt" \
            || die "outrelay keygen $DOMAIN $SEL_RSA --rsa 2048 failed"
        "$OUTRELAY_BIN" keygen "$DOMAIN" "$SEL_ED" --ed25519 -c "$kcfg" >"$TMP/dkim-$SEL_ED.txt" \
            || die "outrelay keygen $DOMAIN $SEL_ED --ed25519 failed"
        mkdir -p "$TMP/keys-rsa/$DOMAIN"
        chmod 700 "$TMP/keys-rsa/$DOMAIN"
        cp -p "$TMP/keys-dual/$DOMAIN/$SEL_RSA.rsa.pem" "$TMP/keys-rsa/$DOMAIN/"
    fi
    has_system postfix-opendkim && openssl_key "$SEL_PF" opendkim
    has_system exim-dkim && openssl_key "$SEL_EX" exim
    return 0
}

# openssl_key SELECTOR NAME: an RSA-2048 key in $TMP/NAME-SELECTOR.pem and its DKIM record
# (RFC 6376 section 3.6.1) in $TMP/dkim-SELECTOR.txt, for OpenDKIM and Exim
openssl_key() {
    local sel="$1" name="$2" p
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$TMP/$name-$sel.pem" 2>/dev/null \
        || die "openssl could not make $name's RSA key"
    chmod 600 "$TMP/$name-$sel.pem"
    p="$(openssl pkey -in "$TMP/$name-$sel.pem" -pubout -outform DER | base64 -w0)"
    # character-strings are at most 255 bytes: split the key
    { printf '%s._domainkey.%s. IN TXT ( "v=DKIM1; k=rsa; "' "$sel" "$DOMAIN"
      printf '%s\n' "p=$p" | fold -w 200 | sed 's/.*/ "&"/' | tr -d '\n'
      printf ' )\n'; } >"$TMP/dkim-$sel.txt"
}

start_nsd() {
    local d="$TMP/nsd" i
    NSD_PORT="$(free_port)"
    mkdir -p "$d"
    {
        printf '$ORIGIN %s.\n$TTL 300\n' "$ZONE"
        printf '@ IN SOA ns1 hostmaster ( 1 3600 600 86400 300 )\n'
        printf '@ IN NS ns1\nns1 IN A 127.0.0.1\n'
        printf '%s. IN TXT "v=spf1 ip4:127.0.0.1 -all"\n' "$DOMAIN"
        printf '_dmarc.%s. IN TXT "v=DMARC1; p=reject; adkim=r; aspf=r"\n' "$DOMAIN"
        # outrelay-mx delivers by MX: the recipient domain's MX is the sink, and it publishes an
        # MTA-STS record whose policy host does not answer, so every connection asks for the
        # _mta-sts TXT and the policy lookup takes its remembered-failure path
        printf 'rcpt IN MX 10 mx.rcpt\nmx.rcpt IN A 127.0.0.1\n'
        printf '_mta-sts.rcpt IN TXT "v=STSv1; id=bench1;"\nmta-sts.rcpt IN A 127.0.0.1\n'
        cat "$TMP"/dkim-*.txt 2>/dev/null || true
    } >"$d/$ZONE.zone"
    cat >"$d/nsd.conf" <<EOF
server:
    ip-address: 127.0.0.1
    port: $NSD_PORT
    do-ip6: no
    username: ""
    chroot: ""
    zonesdir: "$d"
    database: ""
    zonelistfile: "$d/zone.list"
    xfrdfile: "$d/xfrd.state"
    xfrdir: "$d"
    pidfile: "$d/nsd.pid"
    logfile: "$d/nsd.log"
    server-count: 1
    verbosity: 1
remote-control:
    control-enable: no
zone:
    name: "$ZONE"
    zonefile: "$ZONE.zone"
EOF
    chown -R nobody:nogroup "$d"
    nsd-checkconf "$d/nsd.conf" >&2 || die "nsd-checkconf rejected $d/nsd.conf"
    nsd-checkzone "$ZONE" "$d/$ZONE.zone" >"$d/checkzone.out" 2>&1 \
        || { cat "$d/checkzone.out" >&2; die "nsd-checkzone rejected the zone"; }
    setpriv --reuid=nobody --regid=nogroup --clear-groups "$NSD" -d -c "$d/nsd.conf" \
        >"$d/nsd.out" 2>&1 &
    NSD_PID=$!
    wait_listen "$NSD_PORT" "$NSD_PID" nsd 10
    for ((i = 0; i < 50; i++)); do [[ -s "$d/nsd.pid" ]] && break; sleep 0.1; done
    # sanity: the records the relays depend on are served
    local dmarc spf
    dmarc="$(dig @127.0.0.1 -p "$NSD_PORT" +short +time=2 +tries=2 TXT "_dmarc.$DOMAIN" || true)"
    spf="$(dig @127.0.0.1 -p "$NSD_PORT" +short +time=2 +tries=2 TXT "$DOMAIN" || true)"
    [[ "$dmarc" == *"v=DMARC1"* && "$spf" == *"v=spf1"* ]] \
        || die "NSD on 127.0.0.1:$NSD_PORT does not answer for $DOMAIN (dmarc='$dmarc' spf='$spf')"
    echo "== DNS: nsd (pid $NSD_PID) on 127.0.0.1:$NSD_PORT serving $ZONE (zone file $d/$ZONE.zone)"
    echo "  $DOMAIN TXT $spf"
    echo "  _dmarc.$DOMAIN TXT $dmarc"
    local s
    for s in $(cd "$TMP" && ls dkim-*.txt 2>/dev/null | sed 's/^dkim-//; s/\.txt$//'); do
        echo "  $s._domainkey.$DOMAIN TXT ($(dig @127.0.0.1 -p "$NSD_PORT" +short TXT "$s._domainkey.$DOMAIN" \
            | tr -d '" ' | cut -c1-40)...)"
    done
    echo
}

# ------------------------------------------------------------------ Postfix
# A separate instance: own config_directory, queue_directory, data_directory,
# all under $TMP.  /etc/postfix and the system queue are never touched; the
# instance is selected with 'postfix -c DIR' (root may use any config dir
# without listing it in alternate_config_directories).
write_postfix_config() {  # RELAYPORT SINKPORT [MILTER-SOCKET]; instance dir is $PF
    local rport="$1" sport="$2" milter="${3:-}"
    mkdir -p "$PF/etc" "$PF/queue" "$PF/data"
    chown root:root "$PF/etc" "$PF/queue"
    chmod 755 "$PF" "$PF/etc" "$PF/queue"
    chown postfix:postfix "$PF/data"
    chmod 700 "$PF/data"
    cat >"$PF/etc/main.cf" <<EOF
# throw-away benchmark instance written by bench/relay-vs-postfix.sh
compatibility_level = 3.6
config_directory = $PF/etc
queue_directory = $PF/queue
data_directory = $PF/data
mail_owner = postfix
setgid_group = postdrop
syslog_name = postfix-bench
maillog_file = $PF/maillog
maillog_file_prefixes = $PF
myhostname = pf.bench.outrelay.test
mydomain = bench.outrelay.test
myorigin = \$myhostname
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
mydestination =
relay_domains =
local_recipient_maps =
local_transport = error:no local delivery
alias_maps =
alias_database =
relayhost = [127.0.0.1]:$sport
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_recipient_restrictions = permit_mynetworks, reject
smtpd_tls_security_level = none
smtp_tls_security_level = none
default_process_limit = 100
default_destination_concurrency_limit = 20
smtp_destination_concurrency_limit = 20
relay_destination_concurrency_limit = 20
biff = no
EOF
    if [[ -n "$milter" ]]; then
        # A milter that does not answer must show up as a failure (4xx to the
        # client, so smtp-source aborts), not as unsigned mail going out.
        cat >>"$PF/etc/main.cf" <<EOF
smtpd_milters = unix:$milter
non_smtpd_milters =
milter_default_action = tempfail
milter_protocol = 6
EOF
    fi
    # master.cf: only the services this relay path needs, none chrooted.
    # The public SMTP listener sits on the chosen port instead of :25.
    cat >"$PF/etc/master.cf" <<EOF
# service          type  private unpriv chroot wakeup maxproc command
127.0.0.1:$rport   inet  n       -      n      -      -       smtpd
pickup             unix  n       -      n      60     1       pickup
cleanup            unix  n       -      n      -      0       cleanup
qmgr               unix  n       -      n      300    1       qmgr
rewrite            unix  -       -      n      -      -       trivial-rewrite
bounce             unix  -       -      n      -      0       bounce
defer              unix  -       -      n      -      0       bounce
trace              unix  -       -      n      -      0       bounce
verify             unix  -       -      n      -      1       verify
flush              unix  n       -      n      1000?  0       flush
proxymap           unix  -       -      n      -      -       proxymap
proxywrite         unix  -       -      n      -      1       proxymap
smtp               unix  -       -      n      -      -       smtp
relay              unix  -       -      n      -      -       smtp
showq              unix  n       -      n      -      -       showq
error              unix  -       -      n      -      -       error
retry              unix  -       -      n      -      -       error
discard            unix  -       -      n      -      -       discard
anvil              unix  -       -      n      -      1       anvil
scache             unix  -       -      n      -      1       scache
postlog            unix-dgram n  -      n      -      1       postlogd
EOF
}

start_postfix() {  # RELAYPORT; instance dir is $PF
    local rport="$1" mpid qdir
    # Sanity: make sure postconf really resolves to our instance.
    qdir="$("$POSTCONF" -c "$PF/etc" -h queue_directory)"
    [[ "$qdir" == "$PF/queue" ]] || die "postconf -c $PF/etc reports queue_directory=$qdir"
    echo "  relay:  $POSTFIX -c $PF/etc start"
    "$POSTFIX" -c "$PF/etc" check >>"$TMP/postfix-ctl.log" 2>&1 \
        || { cat "$TMP/postfix-ctl.log" >&2; die "postfix check failed"; }
    PF_STARTED=1
    "$POSTFIX" -c "$PF/etc" start >>"$TMP/postfix-ctl.log" 2>&1 \
        || { cat "$TMP/postfix-ctl.log" >&2; die "postfix start failed"; }
    [[ -r "$PF/queue/pid/master.pid" ]] || die "no master.pid in $PF/queue/pid"
    mpid="$(tr -dc 0-9 <"$PF/queue/pid/master.pid")"
    pid_alive "$mpid" || die "Postfix master ($mpid) is not running"
    # Verify the running master is ours: its environment names our config dir
    # and it is the one listening on our port.
    if [[ -r "/proc/$mpid/environ" ]] && ! tr '\0' '\n' <"/proc/$mpid/environ" | grep -qx "MAIL_CONFIG=$PF/etc"; then
        die "Postfix master $mpid does not run with MAIL_CONFIG=$PF/etc"
    fi
    wait_listen "$rport" "$mpid" "postfix smtpd" 15
    port_owned_by "$rport" "$mpid" \
        || die "port $rport is not held by our Postfix master $mpid"
    echo "  master: pid $mpid, queue $PF/queue, log $PF/maillog"
}

postfix_stats() {  # postfix_stats SYS: record what the instance's log says
    local sys="$1"
    RES[$sys.left]="$(find "$PF/queue/active" "$PF/queue/incoming" "$PF/queue/deferred" -type f 2>/dev/null | wc -l)"
    RES[$sys.log]="$(grep -c 'status=sent' "$PF/maillog" 2>/dev/null || true) sent, $(grep -c 'status=deferred' "$PF/maillog" 2>/dev/null || true) deferred, $(grep -ci 'milter' "$PF/maillog" 2>/dev/null || true) milter warning(s) (per maillog); ${RES[$sys.left]} queue file(s) left at stop"
}

bench_postfix() {
    local rport sport
    rport="$(free_port)"; sport="$(free_port)"
    PF="$TMP/postfix"
    echo "== postfix (relay 127.0.0.1:$rport -> sink 127.0.0.1:$sport)"
    write_postfix_config "$rport" "$sport"
    start_sink "$sport"
    start_postfix "$rport"
    cpu_run postfix run_load postfix "$rport" "$sport" || true
    # Messages left in the queue (e.g. the last one if the sink hung up on it
    # when it reached -M N) are irrelevant; report them for the record.
    stop_postfix
    postfix_stats postfix
    echo
}

# OpenDKIM as a milter, run by us in the foreground with our own config file.
# opendkim refuses a config file (and key file) if any directory above it is
# writable by others, sticky bit or not, so /tmp is out: its files live in a
# private directory under /run (root's, 0755), removed at the end.
setup_opendkim() {
    OD="$(mktemp -d /run/outrelay-bench-opendkim.XXXXXX)"
    chmod 755 "$OD"
    mkdir -p "$OD/keys" "$OD/sock"
    install -o opendkim -g opendkim -m 600 "$TMP/opendkim-$SEL_PF.pem" "$OD/keys/$SEL_PF.private"
    chown opendkim:opendkim "$OD/keys"
    chmod 700 "$OD/keys"
    # Postfix's smtpd (user postfix) must reach the socket: the directory is
    # opendkim:postfix 0750 and opendkim runs with group postfix and UMask 007,
    # so the socket is srwxrwx--- opendkim:postfix.
    chown opendkim:postfix "$OD/sock"
    chmod 750 "$OD/sock"
    cat >"$OD/opendkim.conf" <<EOF
# OpenDKIM for bench/relay-vs-postfix.sh: sign only, one domain, one key
Mode                s
Domain              $DOMAIN
Selector            $SEL_PF
KeyFile             $OD/keys/$SEL_PF.private
SubDomains          no
Canonicalization    relaxed/relaxed
SignatureAlgorithm  rsa-sha256
InternalHosts       127.0.0.1
Socket              local:$OD/sock/opendkim.sock
UMask               007
UserID              opendkim:postfix
Background          no
Syslog              no
EOF
    chmod 644 "$OD/opendkim.conf"
}

start_opendkim() {
    local i
    rm -f "$OD/sock/opendkim.sock"
    echo "  milter: $OPENDKIM -f -x $OD/opendkim.conf   (runs as opendkim:postfix; output $OD/opendkim.out)"
    "$OPENDKIM" -f -x "$OD/opendkim.conf" >>"$OD/opendkim.out" 2>&1 &
    OPENDKIM_PID=$!
    for ((i = 0; i < 100; i++)); do
        [[ -S "$OD/sock/opendkim.sock" ]] && return 0
        pid_alive "$OPENDKIM_PID" || break
        sleep 0.1
    done
    cat "$OD/opendkim.out" >&2
    die "opendkim did not create its socket $OD/sock/opendkim.sock"
}

bench_postfix_opendkim() {
    local sys=postfix-opendkim rport sport vdir
    setup_opendkim
    start_opendkim

    # one-message check through a separate instance into a dumping sink
    rport="$(free_port)"; sport="$(free_port)"; vdir="$TMP/$sys-check"
    PF="$TMP/postfix-opendkim-check"
    echo "== $sys: check (relay 127.0.0.1:$rport -> dumping sink 127.0.0.1:$sport)"
    write_postfix_config "$rport" "$sport" "$OD/sock/opendkim.sock"
    start_dump_sink "$sport" "$vdir/dump"
    start_postfix "$rport" >/dev/null
    local ok=1
    send_one "$rport" "$vdir.source.log" || { log "$sys check: smtp-source failed:"; cat "$vdir.source.log" >&2; ok=0; }
    if ((ok)) && ! wait_grep "$PF/maillog" 'status=sent' 30; then
        log "$sys check: no status=sent in $PF/maillog within 30s"; tail -n 20 "$PF/maillog" >&2; ok=0
    fi
    ((ok)) && { check_dump "$sys" "$vdir/dump" "rsa-sha256" || ok=0; }
    stop_postfix
    stop_pid "$SINK_PID" smtp-sink; SINK_PID=""
    if ((!ok)); then
        RES[$sys.accept]="unsigned"; RES[$sys.e2e]="unsigned"; KEEP=1
        stop_pid "$OPENDKIM_PID" opendkim; OPENDKIM_PID=""
        echo; return 0
    fi

    rport="$(free_port)"; sport="$(free_port)"
    PF="$TMP/postfix-opendkim"
    echo "== $sys (relay 127.0.0.1:$rport -> sink 127.0.0.1:$sport)"
    write_postfix_config "$rport" "$sport" "$OD/sock/opendkim.sock"
    start_sink "$sport"
    start_postfix "$rport"
    cpu_run "$sys" run_load "$sys" "$rport" "$sport" || true
    stop_postfix
    postfix_stats "$sys"
    pid_alive "$OPENDKIM_PID" || { log "opendkim exited during the run:"; cat "$OD/opendkim.out" >&2; }
    stop_pid "$OPENDKIM_PID" opendkim; OPENDKIM_PID=""
    echo
}

# -------------------------------------------------------------------- Exim
# Debian's exim4-daemon-heavy conflicts with postfix (installing it would remove Postfix), so
# it is never installed: its packages (and the two libraries it links that this box lacks) are
# fetched with apt-get download into $CACHE/exim/debs and unpacked with dpkg -x into a private
# tree. The binary looks up its compiled-in user Debian-exim before reading any configuration;
# no such user exists here, so nss_wrapper (from libnss-wrapper, unpacked the same way) gives
# the Exim processes a private passwd/group file in which Debian-exim is nobody:nogroup. The
# private copy has its setuid bit cleared: Exim re-executes itself for each delivery after
# dropping to the Exim user, and the loader ignores LD_LIBRARY_PATH for a setuid program run by
# a non-root user. Deliveries therefore run as nobody ("exim user lost privilege for using -C
# option" in the panic log), which the smtp transport does not mind.
EXIM_TREE="$CACHE/exim/tree"
EXIM_BIN="$EXIM_TREE/usr/sbin/exim4"
EXIM_LIBS="$EXIM_TREE/usr/lib/x86_64-linux-gnu"
EXIM_PKGS="exim4-daemon-heavy exim4-base exim4-config libmariadb3 libidn12 libnss-wrapper"

ensure_exim() {
    local d="$CACHE/exim/debs" f missing
    if [[ ! -x "$EXIM_BIN" || ! -r "$EXIM_LIBS/libnss_wrapper.so" ]]; then
        log "unpacking Exim into $EXIM_TREE (apt-get download $EXIM_PKGS; nothing is installed)"
        mkdir -p "$d"
        ( cd "$d" && apt-get download $EXIM_PKGS >&2 ) || die "apt-get download $EXIM_PKGS failed"
        rm -rf "$EXIM_TREE"
        mkdir -p "$EXIM_TREE"
        for f in "$d"/*.deb; do dpkg -x "$f" "$EXIM_TREE" || die "dpkg -x $f failed"; done
        chmod u-s "$EXIM_BIN"
    fi
    missing="$(LD_LIBRARY_PATH="$EXIM_LIBS" ldd "$EXIM_BIN" | grep 'not found' || true)"
    [[ -z "$missing" ]] || die "Exim in $EXIM_TREE still lacks libraries: $missing"
}

exim_env() {  # the environment every Exim process gets (kept by keep_environment)
    echo LD_LIBRARY_PATH="$EXIM_LIBS" LD_PRELOAD="$EXIM_LIBS/libnss_wrapper.so" \
        NSS_WRAPPER_PASSWD="$TMP/exim-nss/passwd" NSS_WRAPPER_GROUP="$TMP/exim-nss/group"
}

write_exim_config() {  # DIR RELAYPORT SINKPORT SIGN(0|1); writes DIR/exim.conf
    local dir="$1" rport="$2" sport="$3" sign="$4"
    mkdir -p "$dir/spool" "$dir/log" "$TMP/exim-nss"
    chown nobody:nogroup "$dir/spool" "$dir/log"
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\nDebian-exim:x:65534:65534:Exim:/nonexistent:/usr/sbin/nologin\n' \
        >"$TMP/exim-nss/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\nDebian-exim:x:65534:\n' >"$TMP/exim-nss/group"
    if ((sign)); then
        install -o nobody -g nogroup -m 600 "$TMP/exim-$SEL_EX.pem" "$dir/$SEL_EX.pem"
    fi
    cat >"$dir/exim.conf" <<EOF
# throw-away benchmark instance written by bench/relay-vs-postfix.sh
primary_hostname = exim.bench.outrelay.test
exim_path = $EXIM_BIN
exim_user = nobody
exim_group = nogroup
trusted_users = root
never_users =
keep_environment = LD_LIBRARY_PATH : LD_PRELOAD : NSS_WRAPPER_PASSWD : NSS_WRAPPER_GROUP
spool_directory = $dir/spool
split_spool_directory = true
log_file_path = $dir/log/%slog
pid_file_path = $dir/exim.pid
local_interfaces = 127.0.0.1
tls_advertise_hosts =
host_lookup =
rfc1413_hosts =
queue_only = false
remote_max_parallel = 20
smtp_accept_max = 1000
smtp_accept_queue_per_connection = 0
domainlist local_domains =
acl_smtp_rcpt = acl_rcpt

begin acl
acl_rcpt:
  accept hosts = 127.0.0.0/8
  deny

begin routers
sink:
  driver = manualroute
  route_list = * 127.0.0.1
  self = send
  transport = sink_smtp

begin transports
sink_smtp:
  driver = smtp
  port = $sport
  allow_localhost
  hosts_avoid_tls = *
EOF
    if ((sign)); then
        cat >>"$dir/exim.conf" <<EOF
  dkim_domain = $DOMAIN
  dkim_selector = $SEL_EX
  dkim_private_key = $dir/$SEL_EX.pem
  dkim_canon = relaxed
  dkim_hash = sha256
EOF
    fi
    printf '\nbegin retry\n* * F,1m,1m\n' >>"$dir/exim.conf"
    chmod 644 "$dir/exim.conf"
}

# Exim's delivery processes are detached from the daemon (they are not its children when they
# exit), so the CPU of its process tree misses them. The daemon is put into a cpuacct cgroup of
# its own right after it starts, before any connection; every process it forks inherits the
# group, and the group's usage is Exim's CPU. Without a writable cgroup v1 cpuacct hierarchy
# cpu_s is the process tree's figure, a lower bound.
CPUACCT=/sys/fs/cgroup/cpuacct
exim_cgroup_add() {  # PID
    EXIM_CG=""
    [[ -w "$CPUACCT/cgroup.procs" ]] || return 0
    local cg="$CPUACCT/outrelay-bench-exim.$$.$1"
    mkdir "$cg" 2>/dev/null && echo "$1" >"$cg/cgroup.procs" 2>/dev/null && EXIM_CG="$cg"
}
exim_cgroup_remove() {  # after the daemon has stopped: move stragglers out, remove the group
    [[ -n "$EXIM_CG" ]] || return 0
    local i p
    for ((i = 0; i < 50; i++)); do
        # a straggler that exits before it is moved fails the echo: that must not end the run
        for p in $(cat "$EXIM_CG/cgroup.procs" 2>/dev/null); do echo "$p" >"$CPUACCT/cgroup.procs" 2>/dev/null || true; done
        rmdir "$EXIM_CG" 2>/dev/null && break
        sleep 0.1
    done
    EXIM_CG=""
}

start_exim() {  # DIR RELAYPORT: sets EXIM_PID, false if it did not come up
    local dir="$1" rport="$2"
    # shellcheck disable=SC2046
    env $(exim_env) "$EXIM_BIN" -C "$dir/exim.conf" -bdf -oX "$rport" >"$dir/exim.out" 2>&1 &
    EXIM_PID=$!
    exim_cgroup_add "$EXIM_PID"
    ( wait_listen "$rport" "$EXIM_PID" exim 15 && port_owned_by "$rport" "$EXIM_PID" )
}

# bench_exim_variant SYSTEM SIGN(0|1) "EXPECTED ALGORITHMS"
bench_exim_variant() {
    local sys="$1" sign="$2" want="$3" rport sport dir ok=1
    ensure_exim
    dir="$TMP/$sys-check"
    rport="$(free_port)"; sport="$(free_port)"
    echo "== $sys: check (relay 127.0.0.1:$rport -> dumping sink 127.0.0.1:$sport)"
    write_exim_config "$dir" "$rport" "$sport" "$sign"
    start_dump_sink "$sport" "$dir/dump"
    if ! start_exim "$dir" "$rport"; then
        log "$sys check: exim did not start:"; cat "$dir/exim.out" "$dir/log/"* >&2 2>/dev/null; ok=0
    fi
    ((ok)) && { send_one "$rport" "$dir/source.log" \
        || { log "$sys check: smtp-source failed:"; cat "$dir/source.log" >&2; ok=0; }; }
    if ((ok)) && ! wait_grep "$dir/log/mainlog" ' Completed$' 30; then
        log "$sys check: no Completed line in its mainlog within 30s:"; tail -n 20 "$dir/log/mainlog" >&2; ok=0
    fi
    ((ok)) && { check_dump "$sys" "$dir/dump" "$want" || ok=0; }
    stop_pid "$EXIM_PID" exim; EXIM_PID=""
    exim_cgroup_remove
    stop_pid "$SINK_PID" smtp-sink; SINK_PID=""
    if ((!ok)); then
        RES[$sys.accept]="check-failed"; RES[$sys.e2e]="check-failed"; KEEP=1
        echo; return 0
    fi

    dir="$TMP/$sys"
    rport="$(free_port)"; sport="$(free_port)"
    echo "== $sys (relay 127.0.0.1:$rport -> sink 127.0.0.1:$sport)"
    write_exim_config "$dir" "$rport" "$sport" "$sign"
    start_sink "$sport"
    echo "  relay:  $EXIM_BIN -C $dir/exim.conf -bdf -oX $rport   (log: $dir/log/mainlog)"
    if start_exim "$dir" "$rport"; then
        cpu_run "$sys" run_load "$sys" "$rport" "$sport" || true
    else
        log "$sys: exim did not start:"; cat "$dir/exim.out" >&2
        RES[$sys.accept]="failed"; RES[$sys.e2e]="failed"; KEEP=1
        stop_pid "$SINK_PID" smtp-sink; SINK_PID=""
    fi
    stop_pid "$EXIM_PID" exim; EXIM_PID=""
    exim_cgroup_remove
    RES[$sys.left]="$(find "$dir/spool/input" -type f 2>/dev/null | wc -l)"
    local lg="$dir/log/mainlog"
    RES[$sys.log]="$(grep -c ' => ' "$lg" || true) delivered, $(grep -c ' == ' "$lg" || true) deferred, $(grep -c ' \*\* ' "$lg" || true) failed (per mainlog); ${RES[$sys.left]} spool file(s) left at stop"
    echo
}

bench_exim()      { bench_exim_variant exim      0 ""; }
bench_exim_dkim() { bench_exim_variant exim-dkim 1 "rsa-sha256"; }

# ----------------------------------------------------------------- outrelay
ensure_outrelay() {
    if [[ "$OUTRELAY_BIN" != "$BUILD_DIR/outrelay" || ( "$BUILD" == 0 && -x "$OUTRELAY_BIN" ) ]]; then
        [[ -x "$OUTRELAY_BIN" ]] || die "OUTRELAY_BIN=$OUTRELAY_BIN does not exist"
        return 0
    fi
    # Always (re)build: cmake --build is incremental, so this is quick when
    # nothing changed and picks up source changes otherwise. At -O2 GCC's
    # -Wformat-truncation reports snprintf calls that the Debug builds don't
    # see; -Werror would stop the bench build there, so that one warning is
    # kept a warning (it changes no generated code).
    need_pkg /usr/bin/cmake cmake
    log "building outrelay (Release) in $BUILD_DIR"
    mkdir -p "$BUILD_DIR"
    echo "build:        cmake -S $REPO -B $BUILD_DIR -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF -DCMAKE_C_FLAGS='-Wno-error=format-truncation -Wno-error=restrict' && cmake --build $BUILD_DIR -j2"
    { cmake -S "$REPO" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
            -DCMAKE_C_FLAGS="-Wno-error=format-truncation -Wno-error=restrict" >"$BUILD_DIR/bench-build.log" 2>&1 \
        && cmake --build "$BUILD_DIR" -j2 >>"$BUILD_DIR/bench-build.log" 2>&1; } \
        || { tail -n 30 "$BUILD_DIR/bench-build.log" >&2
             die "building outrelay failed, see $BUILD_DIR/bench-build.log (BENCH_SYSTEMS='postfix postfix-opendkim' runs the baselines alone)"; }
    [[ -x "$OUTRELAY_BIN" ]] || die "build did not produce $OUTRELAY_BIN"
}

write_outrelay_config() {  # FILE DIR RELAYPORT SINKPORT KEYSDIR [ramp]
    local cfg="$1" dir="$2" rport="$3" sport="$4" keys="$5" sys_ramp="${6:-}"
    mkdir -p "$dir/spool" "$dir/state"
    cat >"$cfg" <<EOF
hostname: bench.outrelay.test
spool: $dir/spool
state: $dir/state
keys: $keys
dns:
  servers: ["127.0.0.1:$NSD_PORT"]
listen:
  - address: "127.0.0.1:$rport"
    tls: none
origins:
  bench:
    networks: ["127.0.0.0/8"]
egress:
  sink:
    type: smarthost
    host: 127.0.0.1
    port: $sport
    tls: none
    max_connections: 20
    spf_ips: ["127.0.0.1/32"]
EOF
    if [[ "$sys_ramp" == mx ]]; then
        # outrelay-mx: the same relay delivering by MX instead of a smarthost, so every new
        # connection makes the TLS policy decision: MX lookup, MTA-STS TXT (and the policy
        # fetch, remembered as failed), the tls_policy table, DANE only on signed answers
        sed -i '/^egress:/,$ { s/^    type: smarthost$/    type: direct/; /^    host: 127.0.0.1$/d; /^    port: /d; s/^    tls: none$/    tls: optional/ }' "$cfg"
        printf 'delivery:\n  mx_port: %s\nmta_sts:\n  port: %s\n  fetch_timeout: 1s\nramp:\n  from: sink\n' \
            "$sport" "$(free_port)" >>"$cfg"
    elif [[ "$sys_ramp" == ramp ]]; then
        # outrelay-ramp: a second egress and a 30 % ramp keyed by Message-ID, so the route
        # stage splits real traffic (both egresses end at the same sink)
        cat >>"$cfg" <<EOF
  sink2:
    type: smarthost
    host: 127.0.0.1
    port: $sport
    tls: none
    max_connections: 20
    spf_ips: ["127.0.0.1/32"]
ramp:
  from: sink
  to: sink2
  key: [message_id]
  schedule:
    - { at: "2026-01-01T00:00:00Z", percent: 30 }
EOF
    else
        printf 'ramp:\n  from: sink\n' >>"$cfg"
    fi
}

start_outrelay() {  # CONFIG LOG RELAYPORT: sets OUTRELAY_PID, false if it did not come up
    "$OUTRELAY_BIN" serve -c "$1" >"$2" 2>&1 &
    OUTRELAY_PID=$!
    ( wait_listen "$3" "$OUTRELAY_PID" outrelay 15 && port_owned_by "$3" "$OUTRELAY_PID" )
}

# bench_outrelay_variant SYSTEM KEYSDIR "EXPECTED ALGORITHMS"
bench_outrelay_variant() {
    local sys="$1" keys="$2" want="$3" rport sport dir cfg ok=1
    dir="$TMP/$sys"

    # one-message check through a separate instance (own spool and ports)
    rport="$(free_port)"; sport="$(free_port)"
    cfg="$dir-check.yaml"
    echo "== $sys: check (relay 127.0.0.1:$rport -> dumping sink 127.0.0.1:$sport)"
    write_outrelay_config "$cfg" "$dir-check" "$rport" "$sport" "$keys" "${sys#outrelay-}"
    start_dump_sink "$sport" "$dir-check/dump"
    if ! start_outrelay "$cfg" "$dir-check/outrelay.log" "$rport"; then
        log "$sys check: outrelay did not start:"; tail -n 30 "$dir-check/outrelay.log" >&2; ok=0
    fi
    ((ok)) && { send_one "$rport" "$dir-check/source.log" \
        || { log "$sys check: smtp-source failed:"; cat "$dir-check/source.log" >&2; ok=0; }; }
    if ((ok)) && ! wait_grep "$dir-check/outrelay.log" 'status=sent' 30; then
        log "$sys check: no status=sent in its log within 30s:"; tail -n 30 "$dir-check/outrelay.log" >&2; ok=0
    fi
    if ((ok)); then
        grep -E '\<(signed|checked)\>' "$dir-check/outrelay.log" | sed 's/^[^ ]* outrelay: /  log:    /'
        if ! grep -E '\<checked\>' "$dir-check/outrelay.log" | grep -q 'dmarc=pass'; then
            log "$sys check: outrelay's log has no 'checked ... dmarc=pass' line"; ok=0
        fi
        check_dump "$sys" "$dir-check/dump" "$want" || ok=0
    fi
    stop_pid "$OUTRELAY_PID" outrelay; OUTRELAY_PID=""
    stop_pid "$SINK_PID" smtp-sink; SINK_PID=""
    if ((!ok)); then
        log "$sys check failed; outrelay log: $dir-check/outrelay.log; the measured run is skipped"
        RES[$sys.accept]="check-failed"; RES[$sys.e2e]="check-failed"; KEEP=1
        echo; return 0
    fi

    rport="$(free_port)"; sport="$(free_port)"
    cfg="$dir.yaml"
    echo "== $sys (relay 127.0.0.1:$rport -> sink 127.0.0.1:$sport)"
    write_outrelay_config "$cfg" "$dir" "$rport" "$sport" "$keys" "${sys#outrelay-}"
    start_sink "$sport"
    echo "  relay:  $OUTRELAY_BIN serve -c $cfg   (log: $dir/outrelay.log)"
    if start_outrelay "$cfg" "$dir/outrelay.log" "$rport"; then
        cpu_run "$sys" run_load "$sys" "$rport" "$sport" || true
    else
        RES[$sys.accept]="failed"; RES[$sys.e2e]="failed"
        stop_pid "$SINK_PID" smtp-sink; SINK_PID=""
    fi
    if [[ "${RES[$sys.e2e]:-}" == failed || "${RES[$sys.e2e]:-}" == timeout ]]; then
        log "$sys log (tail, full log in $dir/outrelay.log):"
        tail -n 30 "$dir/outrelay.log" >&2 || true
        KEEP=1
    fi
    RES[$sys.left]="$(find "$dir/spool" -type f 2>/dev/null | wc -l)"
    pid_alive "$OUTRELAY_PID" || log "$sys: outrelay (pid $OUTRELAY_PID) is no longer running"
    stop_pid "$OUTRELAY_PID" outrelay; OUTRELAY_PID=""
    local lg="$dir/outrelay.log"
    RES[$sys.log]="$(grep -c 'status=sent' "$lg" || true) sent, $(grep -c 'status=deferred' "$lg" || true) deferred, $(grep -E '\<signed\>' "$lg" | grep -c 'dkim=(' || true) signed, $(grep -E '\<signed\>' "$lg" | grep -c 'action=unsigned' || true) unsigned, $(grep -E '\<checked\>' "$lg" | grep -c 'dmarc=pass' || true) checked dmarc=pass (per its log); ${RES[$sys.left]} file(s) left in spool at stop"
    echo
}

bench_outrelay()      { bench_outrelay_variant outrelay      "$TMP/keys-none" ""; }
bench_outrelay_rsa()  { bench_outrelay_variant outrelay-rsa  "$TMP/keys-rsa"  "rsa-sha256"; }
bench_outrelay_dual() { bench_outrelay_variant outrelay-dual "$TMP/keys-dual" "ed25519-sha256 rsa-sha256"; }
bench_outrelay_ramp() { bench_outrelay_variant outrelay-ramp "$TMP/keys-rsa"  "rsa-sha256"; }
bench_outrelay_mx()   { bench_outrelay_variant outrelay-mx   "$TMP/keys-rsa"  "rsa-sha256"; }

# ------------------------------------------------------------ latency phase
# After the throughput runs: outrelay-rsa's end-to-end rate is the peak. Fresh instances of the
# signing relays (outrelay-rsa, postfix-opendkim, exim-dkim) each get LAT_N messages from our
# own client (bench/smtp-latency.py, $SESSIONS sessions) offered at half of that peak and at the
# peak, and the client times every message from the end of DATA to the 250. The offered rates
# are the same for every relay; a relay that cannot keep up shows a lower achieved rate, and
# after BENCH_LAT_SECONDS (60) no new message is started.
LAT_SECONDS="${BENCH_LAT_SECONDS:-60}"
LAT_PEAK=""
lat_run() {  # lat_run SYSTEM LABEL RATE PORT
    local sys="$1" label="$2" rate="$3" port="$4" out
    out="$(timeout "$TIMEOUT" "$PY3" "$REPO/bench/smtp-latency.py" 127.0.0.1 "$port" --messages "$LAT_N" \
        --sessions "$SESSIONS" --rate "$rate" --size "$SIZE" --sender "$SENDER" --rcpt "$RCPT" \
        --max-seconds "$LAT_SECONDS" 2>"$TMP/lat-$sys-$label.err")" || true
    [[ -n "$out" ]] || out="failed: $(head -c 200 "$TMP/lat-$sys-$label.err")"
    echo "  $sys at $label ($rate msg/s offered): $out"
    RES[$sys.lat.$label]="$out"
}
lat_field() {  # lat_field SYSTEM LABEL KEY
    sed -n "s/.* $3=\([^ ]*\).*/\1/p" <<<" ${RES[$1.lat.$2]:-}"
}

latency_phase() {
    local half sys rport sport dir ok
    [[ "$LATENCY" == 1 ]] || return 0
    if ! [[ "${RES[outrelay-rsa.e2e]:-}" =~ ^[0-9.]+$ ]]; then
        echo "== latency: not measured (needs a completed outrelay-rsa run: its e2e rate is the peak)"
        echo; return 0
    fi
    LAT_PEAK="$(fdiv "$N" "${RES[outrelay-rsa.e2e]}" '%.1f')"
    half="$(fdiv "$LAT_PEAK" 2 '%.1f')"
    echo "== latency: end of DATA -> 250 (bench/smtp-latency.py, $SESSIONS sessions, up to $LAT_N msgs or ${LAT_SECONDS}s per rate)"
    echo "  peak = outrelay-rsa's end-to-end rate above: $LAT_PEAK msg/s; half peak: $half msg/s"
    for sys in outrelay-rsa postfix-opendkim exim-dkim; do
        has_system "$sys" && [[ "${RES[$sys.e2e]:-}" =~ ^[0-9.]+$ ]] || continue
        rport="$(free_port)"; sport="$(free_port)"; dir="$TMP/lat-$sys"; ok=1
        start_sink "$sport" 0 >/dev/null
        case "$sys" in
        outrelay-rsa)
            write_outrelay_config "$dir.yaml" "$dir" "$rport" "$sport" "$TMP/keys-rsa"
            start_outrelay "$dir.yaml" "$dir.log" "$rport" || ok=0 ;;
        postfix-opendkim)
            start_opendkim >/dev/null
            PF="$dir"
            write_postfix_config "$rport" "$sport" "$OD/sock/opendkim.sock"
            start_postfix "$rport" >/dev/null ;;
        exim-dkim)
            write_exim_config "$dir" "$rport" "$sport" 1
            start_exim "$dir" "$rport" || ok=0 ;;
        esac
        if ((ok)); then
            lat_run "$sys" half "$half" "$rport"
            lat_run "$sys" peak "$LAT_PEAK" "$rport"
        else
            log "latency: $sys did not start"; RES[$sys.lat.half]="failed"; KEEP=1
        fi
        stop_relays
    done
    echo
}

# ----------------------------------------------------------- sessions phase
# IDLE sessions (EHLO done, then silent) held against a fresh outrelay-rsa by
# bench/hold-sessions.py from 127.0.0.2, 127.0.0.3, ... (5,000 per address), with
# limits.max_connections raised above IDLE. The relay's RSS before (after one warm-up message)
# and with all sessions held gives KB per idle session; while they are held one more session
# must be answered and its message delivered; then every session is closed.
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
wait_sink_count() {  # wait_sink_count PORT COUNT SECONDS
    local i
    for ((i = 0; i < $3 * 10; i++)); do
        (( $(sink_count "$1") >= $2 )) && return 0
        sleep 0.1
    done
    return 1
}

sessions_phase() {
    local rport sport dir cfg rss0 rss1 line open=0 failed=0 secs i estab t0 t1
    ((IDLE > 0)) || return 0
    if ! has_system outrelay-rsa; then
        echo "== sessions: not measured (needs outrelay-rsa in BENCH_SYSTEMS)"; echo; return 0
    fi
    dir="$TMP/sessions"; cfg="$dir.yaml"
    rport="$(free_port)"; sport="$(free_port)"
    echo "== sessions: $IDLE idle sessions against outrelay-rsa (relay 127.0.0.1:$rport -> sink 127.0.0.1:$sport)"
    # every session is a descriptor in the relay and in the holder
    ulimit -Hn $((IDLE + 4096)) 2>/dev/null || true
    ulimit -n $((IDLE + 4096)) || die "cannot raise the open files limit to $((IDLE + 4096))"
    write_outrelay_config "$cfg" "$dir" "$rport" "$sport" "$TMP/keys-rsa"
    printf 'limits:\n  max_connections: %d\n  max_connections_per_client: 0\n' $((IDLE + 1000)) >>"$cfg"
    start_sink "$sport" 0 >/dev/null
    if ! start_outrelay "$cfg" "$dir/outrelay.log" "$rport"; then
        log "sessions: outrelay did not start:"; tail -n 20 "$dir/outrelay.log" >&2
        RES[sessions]="failed"; KEEP=1; stop_pid "$SINK_PID" smtp-sink; SINK_PID=""; echo; return 0
    fi
    send_one "$rport" "$dir/warm.log" && wait_sink_count "$sport" 1 30 \
        || log "sessions: the warm-up message was not delivered"
    rss0="$(rss_kb "$OUTRELAY_PID")"
    : >"$dir/hold.out"
    "$PY3" "$REPO/bench/hold-sessions.py" 127.0.0.1 "$rport" --sessions "$IDLE" \
        --release-file "$dir/release" --hold 300 >"$dir/hold.out" 2>"$dir/hold.err" &
    HOLD_PID=$!
    for ((i = 0; i < 1200; i++)); do
        grep -q '^ready ' "$dir/hold.out" && break
        pid_alive "$HOLD_PID" || break
        sleep 0.1
    done
    line="$(grep '^ready ' "$dir/hold.out" || true)"
    if [[ -z "$line" ]]; then
        log "sessions: the holder did not get its sessions up within 120s:"; cat "$dir/hold.err" >&2
        RES[sessions]="failed"; KEEP=1
    else
        read -r _ open failed secs <<<"$line"
        sleep 1
        rss1="$(rss_kb "$OUTRELAY_PID")"
        estab="$(ss -Htn state established "( sport = :$rport )" | wc -l)"
        echo "  held:   $open sessions open ($failed failed) after ${secs}s; $estab established at the relay's port"
        head -n 3 "$dir/hold.err" | sed 's/^/  holder: /'
        echo "  rss:    ${rss0} KB before, ${rss1} KB held -> $(fdiv "$((rss1 - rss0))" "$open" '%.2f') KB per idle session"
        t0="$(now)"
        if send_one "$rport" "$dir/during.log" && wait_sink_count "$sport" 2 30; then
            t1="$(now)"
            echo "  while held: a new session was answered and its message delivered in $(fsub "$t1" "$t0")s"
            RES[sessions.during]="ok"
        else
            echo "  while held: the new session's message was NOT delivered:"; tail -n 5 "$dir/during.log" | sed 's/^/    /'
            RES[sessions.during]="failed"
        fi
        RES[sessions]="$open"; RES[sessions.failed]="$failed"
        RES[sessions.kb]="$(fdiv "$((rss1 - rss0))" "$open" '%.2f')"
    fi
    touch "$dir/release"
    for ((i = 0; i < 600; i++)); do pid_alive "$HOLD_PID" || break; sleep 0.1; done
    stop_pid "$HOLD_PID" hold-sessions; HOLD_PID=""
    grep '^released' "$dir/hold.out" | sed 's/^/  holder: /'
    for ((i = 0; i < 100; i++)); do
        estab="$(ss -Htn state established "( sport = :$rport )" | wc -l)"
        ((estab == 0)) && break
        sleep 0.1
    done
    echo "  after:  $estab session(s) still established at the relay's port; relay RSS $(rss_kb "$OUTRELAY_PID") KB"
    ((estab == 0)) || RES[sessions.during]="not all closed"
    stop_pid "$OUTRELAY_PID" outrelay; OUTRELAY_PID=""
    stop_pid "$SINK_PID" smtp-sink; SINK_PID=""
    echo
}

# ------------------------------------------------------------ profile phase
# A separate run of outrelay-rsa (PROF_N messages, same load otherwise) under perf record with
# DWARF call graphs (the Release build has no frame pointers), attached to the relay's PID; the
# measured runs above are not profiled. The summary (by library, thread, self and children
# symbols) goes into the output and into BENCH_PROFILE_OUT.
PROFILE_OUT="${BENCH_PROFILE_OUT:-$BUILD_DIR/profile-outrelay-rsa.txt}"
profile_phase() {
    local dir rport sport cfg perf=/usr/bin/perf rc=0 cpu
    [[ "$PROFILE" == 1 ]] || return 0
    if ! has_system outrelay-rsa || [[ ! -x "$perf" ]]; then
        echo "== profile: not measured (needs outrelay-rsa in BENCH_SYSTEMS and $perf)"; echo; return 0
    fi
    dir="$TMP/profile"; cfg="$dir.yaml"
    rport="$(free_port)"; sport="$(free_port)"
    echo "== profile: outrelay-rsa under perf record, $PROF_N msgs (relay 127.0.0.1:$rport -> sink 127.0.0.1:$sport)"
    write_outrelay_config "$cfg" "$dir" "$rport" "$sport" "$TMP/keys-rsa"
    local N="$PROF_N"   # run_load and start_sink read N
    start_sink "$sport" >/dev/null
    if ! start_outrelay "$cfg" "$dir/outrelay.log" "$rport"; then
        log "profile: outrelay did not start"; stop_pid "$SINK_PID" smtp-sink; SINK_PID=""; echo; return 0
    fi
    # root needs no perf_event_paranoid change; if perf still refuses, lower it for this run
    # only (restored right after, and by cleanup on any exit)
    start_perf() {
        "$perf" record -q -F 499 --call-graph dwarf,8192 -p "$OUTRELAY_PID" -o "$dir/perf.data" \
            >"$dir/perf.err" 2>&1 &
        PERF_PID=$!
        sleep 1
        pid_alive "$PERF_PID"
    }
    if ! start_perf; then
        PERF_PARANOID="$(cat /proc/sys/kernel/perf_event_paranoid)"
        echo -1 >/proc/sys/kernel/perf_event_paranoid
        echo "  perf refused ($(head -n 1 "$dir/perf.err")); perf_event_paranoid $PERF_PARANOID -> -1 for this run"
        start_perf || { log "profile: perf record does not run:"; cat "$dir/perf.err" >&2; rc=1; }
    fi
    if ((rc == 0)); then
        cpu_run profile run_load profile "$rport" "$sport" >/dev/null || true
        kill -INT "$PERF_PID" 2>/dev/null || true
        local i
        for ((i = 0; i < 300; i++)); do pid_alive "$PERF_PID" || break; sleep 0.1; done
        stop_pid "$PERF_PID" perf; PERF_PID=""
    fi
    [[ -n "$PERF_PARANOID" ]] && { echo "$PERF_PARANOID" >/proc/sys/kernel/perf_event_paranoid; PERF_PARANOID=""; }
    stop_pid "$OUTRELAY_PID" outrelay; OUTRELAY_PID=""
    stop_pid "$SINK_PID" smtp-sink; SINK_PID=""
    ((rc == 0)) && [[ -s "$dir/perf.data" ]] || { echo "  profile: no data"; echo; return 0; }
    cpu="$(cpu_per_msg profile)"
    {
        echo "outrelay-rsa profile: $PROF_N msgs x $SIZE B, $SESSIONS sessions; accept ${RES[profile.accept]:-?}s, e2e ${RES[profile.e2e]:-?}s, relay CPU ${RES[profile.cpu]:-?}s = $cpu ms/msg (under perf)"
        echo "-- by library (self samples; ms/msg = share x relay CPU per message)"
        "$perf" report -i "$dir/perf.data" --stdio --no-children --sort dso -g none --percent-limit 0.5 2>/dev/null \
            | awk -v c="$cpu" '/^ *[0-9.]+%/ { p = $1; sub(/%/, "", p); printf "  %6.2f%%  %6.3f ms/msg  %s\n", p, p * c / 100, $2 }'
        # the threads' entry points and the big steps under them (children = self + callees);
        # libcrypto.so.3 has no symbols here, so RSA and SHA-256 appear under their callers
        "$perf" report -i "$dir/perf.data" --stdio --children --sort sym -g none --percent-limit 0.3 2>/dev/null \
            | grep -E '^ *[0-9.]+%' | grep -v ' 0x0' >"$dir/children.txt" || true
        echo "-- where the time goes (children %: the function and all it calls; ms/msg as above)"
        local f
        for f in cmd_serve smtpd_session_process qmgr_schedule evbuffer_write_atmost worker sign_work \
                 dkim_sign_message RSA_sign SHA256_Update check_egress spf_evaluate dmarc_predict \
                 records_writer_main sqlite3_step sqlite3_wal_checkpoint_v2 commit_thread __GI_fdatasync \
                 __GI___writev __libc_pwrite64 _int_malloc; do
            awk -v f="$f" -v c="$cpu" '{ s = $0; sub(/^.*\] /, "", s); sub(/ \(inlined\)$/, "", s) }
                s == f { p = $1; sub(/%/, "", p); printf "  %6.2f%%  %6.3f ms/msg  %s\n", p, p * c / 100, f; exit }' \
                "$dir/children.txt"
        done
        echo "  (self samples in libraries perf cannot unwind, mostly libcrypto's bignum code, sit under no caller)"
        echo "-- top symbols, self"
        "$perf" report -i "$dir/perf.data" --stdio --no-children --sort dso,sym -g none --percent-limit 0.7 2>/dev/null \
            | grep -E '^ *[0-9.]+%' | grep -v ' 0x0' | head -n 20 | sed 's/^/  /'
        echo "-- top symbols, children (self + callees)"
        head -n 30 "$dir/children.txt" | sed 's/^/  /'
    } >"$dir/profile.txt"
    mkdir -p "$(dirname "$PROFILE_OUT")"
    cp "$dir/profile.txt" "$PROFILE_OUT"
    sed 's/^/  /' "$dir/profile.txt"
    echo "  (also in $PROFILE_OUT)"
    RES[profile.done]=1
    echo
}

# -------------------------------------------------------------- queue phase
# QUEUE messages (BENCH_QUEUE) deferred for one unreachable destination in a fresh outrelay-rsa:
# the recipient domain dead.outrelay.test is pinned to an egress "dead", a smarthost on a
# loopback port where nothing listens (connection refused: the relay's destination back-off
# starts after the first refusal, and every later message for it is deferred without a
# connection), and delivery.retry is [1h] so none of them is retried during the phase. Then: the
# relay's RSS per queued message, the end-to-end rate of BENCH_MESSAGES to the working sink
# against the same instance's rate before the queue was filled, and two restarts with the queue
# in place (SIGTERM, then SIGKILL), each timed from the start of the process until a message
# sent to it has its 250.
queue_deferred() {  # queue_deferred LOG: status=deferred lines for the dead destination so far
    grep -c 'status=deferred.*dead\.outrelay\.test\|dead\.outrelay\.test.*status=deferred' "$1" 2>/dev/null || true
}
queue_recovered_lines() { grep -c 'recovered [0-9]* messages\? from the spool' "$1" 2>/dev/null || true; }
queue_restart() {  # queue_restart KIND(TERM|KILL) CFG LOG RPORT: stop, start, time until a 250
    local kind="$1" cfg="$2" lg="$3" rport="$4" t0 t1 i stopped=0
    if [[ "$kind" == TERM ]]; then
        t0="$(now)"
        kill -TERM "$OUTRELAY_PID" 2>/dev/null || true
        for ((i = 0; i < TIMEOUT * 10; i++)); do pid_alive "$OUTRELAY_PID" || { stopped=1; break; }; sleep 0.1; done
        ((stopped)) || { log "queue: outrelay did not stop within ${TIMEOUT}s of SIGTERM"; kill -KILL "$OUTRELAY_PID" 2>/dev/null || true; }
        RES[queue.stop_s]="$(fsub "$(now)" "$t0")"
    else
        kill -KILL "$OUTRELAY_PID" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do pid_alive "$OUTRELAY_PID" || break; sleep 0.1; done
    fi
    wait "$OUTRELAY_PID" 2>/dev/null || true
    OUTRELAY_PID=""
    local nrec0
    nrec0="$(queue_recovered_lines "$lg")"
    t0="$(now)"
    "$OUTRELAY_BIN" serve -c "$cfg" >>"$lg" 2>&1 &
    OUTRELAY_PID=$!
    # retried until a whole transaction passes: connection refused before the bind, then a
    # connection that waits for the 220 until the loop runs
    for ((i = 0; ; i++)); do
        if env MAIL_CONFIG=/nonexistent timeout "$TIMEOUT" "$SMTP_SOURCE" -m 1 -l "$SIZE" \
            -f "$SENDER" -t "$RCPT" "127.0.0.1:$rport" >>"$TMP/queue/restart.log" 2>&1; then
            t1="$(now)"; break
        fi
        pid_alive "$OUTRELAY_PID" || { log "queue: outrelay exited after the $kind restart"; tail -n 20 "$lg" >&2; return 1; }
        (( ${EPOCHREALTIME%.*} - ${t0%.*} < TIMEOUT )) || { log "queue: no 250 within ${TIMEOUT}s of the $kind restart"; return 1; }
        sleep 0.05
    done
    RES[queue.restart.$kind]="$(fsub "$t1" "$t0")"
    # the spool's messages come back into the queue in the background: until the log says so
    local line ts rec=""
    for ((i = 0; i < TIMEOUT * 10; i++)); do
        (( $(queue_recovered_lines "$lg") > nrec0 )) && break
        pid_alive "$OUTRELAY_PID" || break
        sleep 0.1
    done
    line="$(grep 'recovered [0-9]* messages\? from the spool' "$lg" | tail -n 1)"
    ts="$(date -u -d "$(cut -d' ' -f1 <<<"$line")" +%s.%N 2>/dev/null || true)"
    [[ -n "$ts" ]] && rec="$(fsub "$ts" "$t0")"
    RES[queue.recovered.$kind]="${rec:-?}"
    echo "  restart after SIG$kind: a message had its 250 $(fsub "$t1" "$t0")s after the process started; $(grep -o 'recovered [0-9]* messages\?' <<<"$line") back in the queue after ${rec:-?}s"
}
queue_phase() {
    local rport sport dport dir cfg lg t0 t1 i n rss0 rss1 qn="$QUEUE" sent
    ((QUEUE > 0)) || return 0
    if ! has_system outrelay-rsa; then
        echo "== queue: not measured (needs outrelay-rsa in BENCH_SYSTEMS)"; echo; return 0
    fi
    dir="$TMP/queue"; cfg="$dir.yaml"; lg="$dir/outrelay.log"
    rport="$(free_port)"; sport="$(free_port)"; dport="$(free_port)"
    echo "== queue: $qn messages deferred for an unreachable destination (relay 127.0.0.1:$rport -> sink 127.0.0.1:$sport; dead.outrelay.test -> 127.0.0.1:$dport, nothing listening)"
    write_outrelay_config "$cfg" "$dir" "$rport" "$sport" "$TMP/keys-rsa"
    # a second smarthost egress for the dead domain, pinned; no retry within the phase
    sed -i "/^ramp:$/i\\
  dead:\\
    type: smarthost\\
    host: 127.0.0.1\\
    port: $dport\\
    tls: none\\
    max_connections: 20\\
    spf_ips: [\"127.0.0.1/32\"]" "$cfg"
    printf '  pins: { domains: { dead.outrelay.test: dead } }\ndelivery:\n  retry: [1h]\n' >>"$cfg"
    : >"$dir/restart.log"
    if ! start_outrelay "$cfg" "$lg" "$rport"; then
        log "queue: outrelay did not start:"; tail -n 20 "$lg" >&2
        RES[queue]="failed"; KEEP=1; echo; return 0
    fi
    # 1. the empty-queue rate of this instance
    start_sink "$sport" >/dev/null
    cpu_run queue-empty run_load queue-empty "$rport" "$sport" || { RES[queue]="failed"; stop_pid "$OUTRELAY_PID" outrelay; OUTRELAY_PID=""; echo; return 0; }
    # 2. fill: QUEUE messages to the dead domain from BENCH_SESSIONS sessions
    rss0="$(rss_kb "$OUTRELAY_PID")"
    t0="$(now)"
    env MAIL_CONFIG=/nonexistent timeout "$TIMEOUT" "$SMTP_SOURCE" -s "$SESSIONS" -m "$qn" -l "$SIZE" \
        -f "$SENDER" -t "dead@dead.$ZONE" "127.0.0.1:$rport" >"$dir/fill.out" 2>"$dir/fill.err" &
    SOURCE_PID=$!
    set +e; wait "$SOURCE_PID"; i=$?; set -e
    SOURCE_PID=""
    t1="$(now)"
    if ((i != 0)); then
        log "queue: filling failed (smtp-source exited $i):"; head -n 5 "$dir/fill.err" >&2
        RES[queue]="failed"; KEEP=1; stop_pid "$OUTRELAY_PID" outrelay; OUTRELAY_PID=""; echo; return 0
    fi
    RES[queue.fill_s]="$(fsub "$t1" "$t0")"
    echo "  fill:   $qn messages accepted in ${RES[queue.fill_s]}s ($(fdiv "$qn" "${RES[queue.fill_s]}") msg/s)"
    for ((i = 0; i < TIMEOUT * 2; i++)); do
        n="$(queue_deferred "$lg")"
        ((n >= qn)) && break
        sleep 0.5
    done
    t1="$(now)"
    if ((n < qn)); then
        log "queue: only $n of $qn deferred after ${TIMEOUT}s"; RES[queue]="failed"; KEEP=1
        stop_pid "$OUTRELAY_PID" outrelay; OUTRELAY_PID=""; echo; return 0
    fi
    echo "  queued: all $qn deferred $(fsub "$t1" "$t0")s after the first was sent"
    # the records writer commits the fill's events after their log lines: the loaded run starts
    # once the relay is idle again (under 5 % of a CPU over 2 s), so it measures the queue, not
    # the fill's tail
    local c0 c1
    t0="$(now)"
    for ((i = 0; i < TIMEOUT / 2; i++)); do
        c0="$(cpu_of "$OUTRELAY_PID")"; sleep 2; c1="$(cpu_of "$OUTRELAY_PID")"
        awk -v a="$c0" -v b="$c1" 'BEGIN { exit !(b - a < 0.1) }' && break
    done
    echo "  settle: the relay was idle again $(fsub "$(now)" "$t0")s later ($(awk -v a="$c0" -v b="$c1" 'BEGIN { printf "%.2f", b - a }') s of CPU in the last 2 s)"
    rss1="$(rss_kb "$OUTRELAY_PID")"
    RES[queue.kb]="$(fdiv "$((rss1 - rss0))" "$qn" '%.2f')"
    echo "  rss:    ${rss0} KB before, ${rss1} KB with the queue -> ${RES[queue.kb]} KB per queued message"
    # 3. the same load to the working sink with the queue in place
    start_sink "$sport" >/dev/null
    cpu_run queue-full run_load queue-full "$rport" "$sport" || RES[queue]="failed"
    RES[queue.ratio]="$(awk -v a="${RES[queue-empty.e2e]}" -v b="${RES[queue-full.e2e]:-x}" 'BEGIN { if (b + 0 > 0) printf "%.2f", a / b; else print "n/a" }')"
    echo "  rate:   $(rate queue-empty e2e) msg/s empty, $(rate queue-full e2e) msg/s with $qn queued -> ${RES[queue.ratio]} of the empty-queue rate"
    echo "  cpu:    $(cpu_per_msg queue-empty) ms of relay CPU per message empty, $(cpu_per_msg queue-full) ms with $qn queued"
    # 4. restarts with the queue in place; the test messages go to a sink that never exits
    start_sink "$sport" 0 >/dev/null
    queue_restart TERM "$cfg" "$lg" "$rport" || RES[queue]="failed"
    [[ -n "$OUTRELAY_PID" ]] && pid_alive "$OUTRELAY_PID" && { queue_restart KILL "$cfg" "$lg" "$rport" || RES[queue]="failed"; }
    sent=2
    wait_sink_count "$sport" "$sent" 60 || { log "queue: the messages sent at the restarts were not delivered"; RES[queue]="failed"; }
    n="$(grep -o 'recovered [0-9]* messages\?' "$lg" | tail -n 1 | grep -o '[0-9]*' || true)"
    echo "  after:  ${n:-?} recovered at the last start (the $qn deferred, plus the working sink's last message of each load run, which it hangs up on), the sink got $(sink_count "$sport") messages (the $sent sent at the restarts among them)"
    echo "          SIGTERM stop took ${RES[queue.stop_s]:-?}s"
    stop_pid "$OUTRELAY_PID" outrelay; OUTRELAY_PID=""
    stop_pid "$SINK_PID" smtp-sink; SINK_PID=""
    RES[queue]="${RES[queue]:-$qn}"
    echo
}

# ------------------------------------------------------------------ report
rate() {  # rate SYSTEM KEY -> msg/s or n/a
    local t="${RES[$1.$2]:-}"
    if [[ "$t" =~ ^[0-9.]+$ ]]; then fdiv "$N" "$t"; else echo "n/a"; fi
}

ratio() {  # ratio A B KEY: A's msg/s divided by B's msg/s (= t_B / t_A)
    local a="${RES[$1.$3]:-}" b="${RES[$2.$3]:-}"
    if [[ "$a" =~ ^[0-9.]+$ && "$b" =~ ^[0-9.]+$ ]]; then
        echo "$(fdiv "$b" "$a" '%.2f')x"
    else
        echo "n/a"
    fi
}

slowdown() {  # slowdown A B KEY: how much lower A's msg/s is than B's, in %
    local a="${RES[$1.$3]:-}" b="${RES[$2.$3]:-}"
    if [[ "$a" =~ ^[0-9.]+$ && "$b" =~ ^[0-9.]+$ ]]; then
        awk -v ta="$a" -v tb="$b" 'BEGIN { printf "%.1f %%", (1 - tb / ta) * 100 }'
    else
        echo "n/a"
    fi
}

verdict() {  # verdict VALUE OP LIMIT: "met" / "missed" for a number, else ""
    local v="${1%x}"; v="${v% %}"
    [[ "$v" =~ ^-?[0-9.]+$ ]] || return 0
    awk -v v="$v" -v op="$2" -v l="$3" 'BEGIN { ok = (op == ">=") ? v >= l : v <= l; printf ok ? "met" : "MISSED" }'
}

ratio_line() {  # ratio_line A B TARGET-MIN
    local acc e2e
    has_system "$1" && has_system "$2" || return 0
    acc="$(ratio "$1" "$2" accept)"; e2e="$(ratio "$1" "$2" e2e)"
    printf '  %-34s accept %8s %-7s end-to-end %8s %-7s%s\n' "$1 / $2" \
        "$acc" "$( [[ -n "$3" ]] && verdict "$acc" '>=' "$3")" \
        "$e2e" "$( [[ -n "$3" ]] && verdict "$e2e" '>=' "$3")" \
        "${3:+  (target >= ${3}x)}"
}

cpu_per_msg() {  # milliseconds of relay CPU per message
    local c="${RES[$1.cpu]:-}"
    if [[ "$c" =~ ^[0-9.]+$ ]]; then awk -v c="$c" -v n="$N" 'BEGIN { printf "%.3f", c * 1000 / n }'; else echo "n/a"; fi
}

report() {
    local s
    echo "== results ($N msgs x $SIZE B, $SESSIONS sessions; loadavg now $(cut -d' ' -f1-3 /proc/loadavg))"
    printf '%-17s %10s %12s %10s %10s %8s %10s %8s\n' system accept_s accept_msg/s e2e_s e2e_msg/s cpu_s cpu_ms/msg src_err
    for s in $SYSTEMS; do
        printf '%-17s %10s %12s %10s %10s %8s %10s %8s\n' "$s" \
            "${RES[$s.accept]:-n/a}" "$(rate "$s" accept)" \
            "${RES[$s.e2e]:-n/a}" "$(rate "$s" e2e)" \
            "${RES[$s.cpu]:-n/a}" "$(cpu_per_msg "$s")" "${RES[$s.srcerr]:-n/a}"
    done
    echo
    [[ "$(wc -w <<<"$SYSTEMS")" -ge 2 ]] && echo "ratios (msg/s of the first divided by msg/s of the second):"
    ratio_line outrelay postfix ""
    ratio_line postfix-opendkim postfix ""
    ratio_line exim postfix ""
    ratio_line exim-dkim postfix-opendkim ""
    ratio_line outrelay-rsa postfix-opendkim 10
    ratio_line outrelay-rsa postfix 4
    ratio_line outrelay-rsa exim-dkim ""
    ratio_line outrelay exim ""
    ratio_line outrelay-rsa outrelay ""
    ratio_line outrelay-ramp outrelay-rsa ""
    ratio_line outrelay-mx outrelay-rsa ""
    ratio_line outrelay-ramp postfix ""
    if has_system outrelay-dual && has_system outrelay-rsa; then
        local a e
        a="$(slowdown outrelay-dual outrelay-rsa accept)"; e="$(slowdown outrelay-dual outrelay-rsa e2e)"
        printf '  %-34s accept %8s %-7s end-to-end %8s %-7s  (target <= 15 %%)\n' \
            "outrelay-dual slower than -rsa by" "$a" "$(verdict "$a" '<=' 15)" "$e" "$(verdict "$e" '<=' 15)"
    fi
    echo
    for s in $SYSTEMS; do
        [[ -n "${RES[$s.cpunote]:-}" ]] && printf '%-17s cpu n/a: %s\n' "$s:" "${RES[$s.cpunote]}"
    done
    for s in $SYSTEMS; do
        [[ -n "${RES[$s.log]:-}" ]] && printf '%-17s %s\n' "$s:" "${RES[$s.log]}${RES[$s.dnscpu]:+; nsd used ${RES[$s.dnscpu]} s CPU meanwhile}"
    done
    if [[ -n "$LAT_PEAK" ]]; then
        echo
        echo "latency, end of DATA -> 250 in ms (offered: half peak $(fdiv "$LAT_PEAK" 2 '%.1f') msg/s, peak $LAT_PEAK msg/s = outrelay-rsa's e2e rate):"
        printf '  %-17s %-5s %9s %9s %8s %8s %8s %8s %7s\n' system load achieved messages p50 p99 p99.9 max failed
        local l
        for s in outrelay-rsa postfix-opendkim exim-dkim; do
            for l in half peak; do
                [[ -n "${RES[$s.lat.$l]:-}" ]] || continue
                printf '  %-17s %-5s %9s %9s %8s %8s %8s %8s %7s\n' "$s" "$l" "$(lat_field "$s" "$l" achieved)" \
                    "$(lat_field "$s" "$l" messages)" "$(lat_field "$s" "$l" p50)" "$(lat_field "$s" "$l" p99)" \
                    "$(lat_field "$s" "$l" p999)" "$(lat_field "$s" "$l" max)" "$(lat_field "$s" "$l" failed)"
            done
        done
    fi
    [[ -n "${RES[sessions.kb]:-}" ]] && printf '\nidle sessions: %s of %s held (%s failed), %s KB of relay RSS per idle session; new session + delivery while held: %s\n' \
        "${RES[sessions]}" "$IDLE" "${RES[sessions.failed]}" "${RES[sessions.kb]}" "${RES[sessions.during]:-?}"
    goals
    return 0
}

# goals: the issue's targets, each met / not met / not measured, from this run's figures
goal() { printf '  %-62s %s\n' "$1" "$2"; }
goal_ratio() {  # goal_ratio A B MIN: end-to-end ratio A/B against MIN
    local r
    r="$(ratio "$1" "$2" e2e)"
    if [[ "$r" == n/a ]]; then echo "not measured"; return; fi
    if [[ "$(verdict "$r" '>=' "$3")" == met ]]; then echo "met ($r)"; else echo "not met ($r)"; fi
}
goals() {
    local v p99 kb
    echo
    echo "goals (ratios are end-to-end msg/s from this run):"
    goal "outrelay-rsa >= 10x postfix-opendkim (signed)" "$(goal_ratio outrelay-rsa postfix-opendkim 10)"
    goal "outrelay-rsa >= 4x plain postfix" "$(goal_ratio outrelay-rsa postfix 4)"
    if [[ "${RES[exim-dkim.e2e]:-}" =~ ^[0-9.]+$ ]]; then
        goal "Exim anchor rows (exim-dkim in the table)" "met (outrelay-rsa / exim-dkim $(ratio outrelay-rsa exim-dkim e2e))"
    else
        goal "Exim anchor rows (exim-dkim in the table)" "not measured"
    fi
    p99="$(lat_field outrelay-rsa half p99)"
    if [[ "$p99" =~ ^[0-9.]+$ ]]; then
        v="$(awk -v p="$p99" 'BEGIN { print (p <= 20) ? "met" : "not met" }')"
        goal "p99 end of DATA -> 250 <= 20 ms at half peak (outrelay-rsa)" "$v (p99 $p99 ms, p50 $(lat_field outrelay-rsa half p50) ms; at peak p99 $(lat_field outrelay-rsa peak p99) ms)"
    else
        goal "p99 end of DATA -> 250 <= 20 ms at half peak (outrelay-rsa)" "not measured"
    fi
    kb="${RES[sessions.kb]:-}"
    if [[ -n "$kb" ]]; then
        if (( ${RES[sessions]:-0} >= 10000 )) && [[ "${RES[sessions.during]:-}" == ok ]]; then v="met"; else v="not met"; fi
        goal "10,000 idle sessions held, new session served meanwhile" "$v (${RES[sessions]} held, $kb KB/session, ${RES[sessions.during]:-?})"
    else
        goal "10,000 idle sessions held, new session served meanwhile" "not measured"
    fi
    goal "profile of outrelay-rsa (perf)" "$( [[ -n "${RES[profile.done]:-}" ]] && echo "measured (see the profile section)" || echo "not measured")"
    if has_system outrelay-dual && has_system outrelay-rsa; then
        v="$(slowdown outrelay-dual outrelay-rsa e2e)"
        goal "outrelay-dual at most 15 % slower than outrelay-rsa (kept)" "$( [[ "$(verdict "$v" '<=' 15)" == met ]] && echo "met ($v)" || { [[ "$v" == n/a ]] && echo "not measured" || echo "not met ($v)"; })"
    fi
    if [[ -n "${RES[queue.kb]:-}" && "${RES[queue.ratio]:-n/a}" != n/a && -n "${RES[queue.restart.TERM]:-}" && -n "${RES[queue.restart.KILL]:-}" ]]; then
        v="$(awk -v q="${RES[queue]}" -v r="${RES[queue.ratio]}" -v a="${RES[queue.restart.TERM]}" -v b="${RES[queue.restart.KILL]}" \
            'BEGIN { print (q >= 200000 && r >= 0.90 && a <= 10 && b <= 10) ? "met" : "not met" }')"
        goal "200,000 deferred messages: flat rate, restart <= 10 s" "$v (${RES[queue]} queued: rate ${RES[queue.ratio]} of empty, restart ${RES[queue.restart.TERM]} s after TERM, ${RES[queue.restart.KILL]} s after KILL (all back in the queue after ${RES[queue.recovered.TERM]:-?} s / ${RES[queue.recovered.KILL]:-?} s), ${RES[queue.kb]} KB per queued message)"
    else
        goal "200,000 deferred messages: flat rate, restart <= 10 s" "not measured$( ((QUEUE > 0)) && echo " (the queue phase failed)" || echo " (BENCH_QUEUE=0)")"
    fi
}

# Build (if needed) before measuring anything, so a compile neither competes
# with the Postfix run for CPU nor fails after minutes of benchmarking.
if has_outrelay; then
    ensure_outrelay
fi

TMP="$(mktemp -d "${BENCH_TMPDIR:-${TMPDIR:-/tmp}}/relay-bench.XXXXXX")"
chmod 755 "$TMP"            # Postfix daemons run as 'postfix' and must traverse it

print_machine_info
if needs_dns; then
    make_keys
    write_dkim_verifier
    start_nsd
fi
for s in $SYSTEMS; do
    "bench_${s//-/_}"
    sleep 1
done
latency_phase
profile_phase
sessions_phase
queue_phase
stop_nsd
report
rc=0
for s in $SYSTEMS; do
    [[ "${RES[$s.e2e]:-}" =~ ^[0-9.]+$ ]] || { log "$s did not complete the run"; rc=1; }
done
exit $rc
