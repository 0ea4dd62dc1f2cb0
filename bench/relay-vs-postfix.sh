#!/usr/bin/env bash
# relay-vs-postfix.sh - push identical SMTP load through a throw-away Postfix
# relay and through outrelay, both delivering to Postfix's smtp-sink, and
# compare accepted and end-to-end message rates.  See bench/README.md.
#
# Environment knobs (defaults in brackets):
#   BENCH_MESSAGES   messages per system                      [20000]
#   BENCH_SESSIONS   parallel smtp-source sessions            [20]
#   BENCH_SIZE       message size in bytes (smtp-source -l)   [4096]
#   BENCH_TIMEOUT    seconds allowed per phase (accept, drain) [900]
#   BENCH_SYSTEMS    which systems to run, in order           ["postfix outrelay"]
#   BENCH_KEEP=1     keep the temp dir (logs, spools) afterwards
#   BENCH_TMPDIR     parent for the temp dir                  [$TMPDIR or /tmp]
#   OUTRELAY_BIN     outrelay binary       [$REPO/build-bench/outrelay]
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
N="${BENCH_MESSAGES:-20000}"
SESSIONS="${BENCH_SESSIONS:-20}"
SIZE="${BENCH_SIZE:-4096}"
TIMEOUT="${BENCH_TIMEOUT:-900}"
SYSTEMS="${BENCH_SYSTEMS:-postfix outrelay}"
KEEP="${BENCH_KEEP:-0}"
OUTRELAY_BIN="${OUTRELAY_BIN:-$REPO/build-bench/outrelay}"
SENDER="bench@sender.outrelay.test"
RCPT="sink@rcpt.outrelay.test"

SMTP_SOURCE=/usr/sbin/smtp-source
SMTP_SINK=/usr/sbin/smtp-sink
POSTFIX=/usr/sbin/postfix
POSTCONF=/usr/sbin/postconf

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

for v in N SESSIONS SIZE TIMEOUT; do
    [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer (got '${!v}')"
done
for s in $SYSTEMS; do
    [[ "$s" == postfix || "$s" == outrelay ]] || die "unknown system '$s' in BENCH_SYSTEMS"
done
[[ $EUID -eq 0 ]] || die "run as root (Postfix master and smtp-sink -u need it)"

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
getent passwd postfix >/dev/null || die "no 'postfix' user (broken postfix install?)"
getent group postdrop >/dev/null || die "no 'postdrop' group (broken postfix install?)"

# ------------------------------------------------------------------ state
TMP=""                      # created after the (optional) build, see bottom
PF=""                       # $TMP/postfix: throw-away Postfix instance
SINK_PID=""
SOURCE_PID=""
OUTRELAY_PID=""
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

cleanup() {
    local rc=$?
    set +e
    trap - INT TERM
    stop_pid "$SOURCE_PID" smtp-source; SOURCE_PID=""
    stop_pid "$OUTRELAY_PID" outrelay; OUTRELAY_PID=""
    stop_postfix
    stop_pid "$SINK_PID" smtp-sink; SINK_PID=""
    if [[ -z "$TMP" ]]; then
        :
    elif [[ "$KEEP" == 1 || $rc -ne 0 ]]; then
        log "temp dir kept: $TMP"
    else
        rm -rf "$TMP"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ------------------------------------------------------------------ ports
# Pick ports below the ephemeral range so outgoing client sockets can't
# collide with them, and check nothing is listening there right now.
read -r EPH_LO _ </proc/sys/net/ipv4/ip_local_port_range
USED_PORTS=" "
port_busy() { [[ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]]; }
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
fdiv() { awk -v a="$1" -v b="$2" -v f="${3:-%.1f}" 'BEGIN { if (b > 0) printf f, a / b; else printf "n/a" }'; }
fsub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a - b }'; }

# -------------------------------------------------------------- machine info
print_machine_info() {
    local fstype
    fstype="$(findmnt -n -o FSTYPE --target "$TMP" 2>/dev/null || stat -f -c %T "$TMP" 2>/dev/null || echo '?')"
    echo "== machine"
    echo "nproc:        $(nproc)"
    echo "kernel:       $(uname -srm)"
    echo "cpu:          $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo 2>/dev/null || echo '?')"
    echo "memory:       $(awk '/^MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
    echo "temp dir:     $TMP"
    echo "temp dir fs:  $fstype ($(df -P "$TMP" | awk 'NR==2 {print $1}'), mount opts: $(findmnt -n -o OPTIONS --target "$TMP" 2>/dev/null || echo '?'))"
    echo "postfix:      $("$POSTCONF" -h -d mail_version 2>/dev/null || echo '?')"
    echo "loadavg:      $(cut -d' ' -f1-3 /proc/loadavg) (other work on the box skews results)"
    echo "bench load:   $N msgs x $SIZE B, $SESSIONS sessions; timeout ${TIMEOUT}s per phase"
    echo
}

# ----------------------------------------------------------------- the sink
# A fresh smtp-sink per system. -M N makes it exit after N messages, so its
# exit marks "everything has been delivered"; -c prints running counters that
# we use for progress/diagnostics if it never gets there.
start_sink() {  # start_sink PORT
    local port="$1"
    : >"$TMP/sink-$port.out"
    SINK_CMD=(env MAIL_CONFIG=/nonexistent "$SMTP_SINK" -u nobody -c -M "$N" "127.0.0.1:$port" 256)
    echo "  sink:   ${SINK_CMD[*]}"
    "${SINK_CMD[@]}" >"$TMP/sink-$port.out" 2>"$TMP/sink-$port.err" &
    SINK_PID=$!
    wait_listen "$port" "$SINK_PID" smtp-sink 10
    port_owned_by "$port" "$SINK_PID" || die "port $port is held by something other than our smtp-sink"
}

sink_count() {  # last message counter printed by smtp-sink -c
    # smtp-sink -c writes "sess=S quit=Q mesg=M" updates separated by CR.
    tr '\r' '\n' <"$TMP/sink-$1.out" 2>/dev/null \
        | sed -n 's/.*mesg=\([0-9][0-9]*\).*/\1/p' | tail -n 1 | awk '{print $1+0} END {if (NR == 0) print 0}'
}

# run_load SYSTEM RELAYPORT SINKPORT: smtp-source against the relay, then wait
# for the sink to see all N messages.
run_load() {
    local sys="$1" rport="$2" sport="$3" t0 t1 t2 rc deadline errs
    local -a src=(env MAIL_CONFIG=/nonexistent timeout "$TIMEOUT" "$SMTP_SOURCE"
        -s "$SESSIONS" -m "$N" -l "$SIZE" -f "$SENDER" -t "$RCPT" "127.0.0.1:$rport")
    echo "  source: ${src[*]}"
    sync
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

# ------------------------------------------------------------------ Postfix
# A separate instance: own config_directory, queue_directory, data_directory,
# all under $TMP.  /etc/postfix and the system queue are never touched; the
# instance is selected with 'postfix -c DIR' (root may use any config dir
# without listing it in alternate_config_directories).
write_postfix_config() {  # RELAYPORT SINKPORT
    local rport="$1" sport="$2"
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

start_postfix() {  # RELAYPORT
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

bench_postfix() {
    local rport sport
    rport="$(free_port)"; sport="$(free_port)"
    echo "== postfix (relay 127.0.0.1:$rport -> sink 127.0.0.1:$sport)"
    write_postfix_config "$rport" "$sport"
    start_sink "$sport"
    start_postfix "$rport"
    run_load postfix "$rport" "$sport" || true
    # Messages left in the queue (e.g. the last one if the sink hung up on it
    # when it reached -M N) are irrelevant; report them for the record.
    RES[postfix.left]="$(find "$PF/queue/active" "$PF/queue/incoming" "$PF/queue/deferred" -type f 2>/dev/null | wc -l)"
    stop_postfix
    RES[postfix.log]="$(grep -c 'status=sent' "$PF/maillog" 2>/dev/null || true) sent, $(grep -c 'status=deferred' "$PF/maillog" 2>/dev/null || true) deferred (per maillog)"
    echo
}

# ----------------------------------------------------------------- outrelay
ensure_outrelay() {
    if [[ ! -x "$OUTRELAY_BIN" ]]; then
        [[ "$OUTRELAY_BIN" == "$REPO/build-bench/outrelay" ]] \
            || die "OUTRELAY_BIN=$OUTRELAY_BIN does not exist"
        need_pkg /usr/bin/cmake cmake
        log "building outrelay (Release) into $REPO/build-bench"
        echo "build:        cmake -S $REPO -B $REPO/build-bench -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF && cmake --build $REPO/build-bench -j2"
        { cmake -S "$REPO" -B "$REPO/build-bench" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF >&2 \
            && cmake --build "$REPO/build-bench" -j2 >&2; } \
            || die "building outrelay failed (BENCH_SYSTEMS=postfix runs the baseline alone)"
        [[ -x "$OUTRELAY_BIN" ]] || die "build did not produce $OUTRELAY_BIN"
    fi
}

bench_outrelay() {
    local rport sport cfg="$TMP/outrelay.yaml"
    rport="$(free_port)"; sport="$(free_port)"
    echo "== outrelay (relay 127.0.0.1:$rport -> sink 127.0.0.1:$sport)"
    mkdir -p "$TMP/ospool" "$TMP/ostate"
    cat >"$cfg" <<EOF
hostname: bench.outrelay.test
spool: $TMP/ospool
state: $TMP/ostate
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
ramp:
  from: sink
EOF
    start_sink "$sport"
    echo "  relay:  $OUTRELAY_BIN serve -c $cfg   (config: $cfg, log: $TMP/outrelay.log)"
    "$OUTRELAY_BIN" serve -c "$cfg" >"$TMP/outrelay.log" 2>&1 &
    OUTRELAY_PID=$!
    if ( wait_listen "$rport" "$OUTRELAY_PID" outrelay 15 && port_owned_by "$rport" "$OUTRELAY_PID" ); then
        run_load outrelay "$rport" "$sport" || true
    else
        RES[outrelay.accept]="failed"; RES[outrelay.e2e]="failed"
        stop_pid "$SINK_PID" smtp-sink; SINK_PID=""
    fi
    if [[ "${RES[outrelay.e2e]:-}" == failed || "${RES[outrelay.e2e]:-}" == timeout ]]; then
        log "outrelay log (tail, full log in $TMP/outrelay.log):"
        tail -n 30 "$TMP/outrelay.log" >&2 || true
        KEEP=1
    fi
    RES[outrelay.left]="$(find "$TMP/ospool" -type f 2>/dev/null | wc -l)"
    stop_pid "$OUTRELAY_PID" outrelay; OUTRELAY_PID=""
    echo
}

# ------------------------------------------------------------------ report
rate() {  # rate SYSTEM KEY -> msg/s or n/a
    local t="${RES[$1.$2]:-}"
    if [[ "$t" =~ ^[0-9.]+$ ]]; then fdiv "$N" "$t"; else echo "n/a"; fi
}

ratio() {  # ratio KEY: outrelay msg/s divided by postfix msg/s (= t_postfix / t_outrelay)
    local p="${RES[postfix.$1]:-}" o="${RES[outrelay.$1]:-}"
    if [[ "$p" =~ ^[0-9.]+$ && "$o" =~ ^[0-9.]+$ ]]; then
        echo "$(fdiv "$p" "$o" '%.2f')x"
    else
        echo "n/a"
    fi
}

report() {
    local s
    echo "== results ($N msgs x $SIZE B, $SESSIONS sessions; loadavg now $(cut -d' ' -f1-3 /proc/loadavg))"
    printf '%-10s %12s %12s %12s %12s %8s\n' system accept_s accept_msg/s e2e_s e2e_msg/s src_err
    for s in $SYSTEMS; do
        printf '%-10s %12s %12s %12s %12s %8s\n' "$s" \
            "${RES[$s.accept]:-n/a}" "$(rate "$s" accept)" \
            "${RES[$s.e2e]:-n/a}" "$(rate "$s" e2e)" "${RES[$s.srcerr]:-n/a}"
    done
    if [[ -n "${RES[postfix.accept]:-}" && -n "${RES[outrelay.accept]:-}" ]]; then
        echo
        echo "ratio outrelay/postfix (msg/s): accept $(ratio accept)   end-to-end $(ratio e2e)"
    fi
    [[ -n "${RES[postfix.log]:-}" ]] && echo "postfix: ${RES[postfix.log]}; ${RES[postfix.left]} queue file(s) left at stop"
    [[ -n "${RES[outrelay.left]:-}" ]] && echo "outrelay: ${RES[outrelay.left]} file(s) left in spool at stop"
    return 0
}

# Build (if needed) before measuring anything, so a compile neither competes
# with the Postfix run for CPU nor fails after minutes of benchmarking.
if [[ " $SYSTEMS " == *" outrelay "* ]]; then
    ensure_outrelay
fi

TMP="$(mktemp -d "${BENCH_TMPDIR:-${TMPDIR:-/tmp}}/relay-bench.XXXXXX")"
chmod 755 "$TMP"            # Postfix daemons run as 'postfix' and must traverse it
PF="$TMP/postfix"

print_machine_info
for s in $SYSTEMS; do
    "bench_$s"
    sleep 1
done
report
rc=0
for s in $SYSTEMS; do
    [[ "${RES[$s.e2e]:-}" =~ ^[0-9.]+$ ]] || { log "$s did not complete the run"; rc=1; }
done
exit $rc
