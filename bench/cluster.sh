#!/usr/bin/env bash
# cluster.sh - what sharing state through Redis costs: the signed relay
# (outrelay-rsa: RSA-2048, SPF/DMARC, fsync) alone and as two instances on this machine sharing
# one redis-server, the same load end to end into smtp-sink, with the CPU of the relays and of
# Redis per message. Standalone; `BENCH_CLUSTER=1 bench/relay-vs-postfix.sh` runs it too.
# See bench/README.md, section "cluster.sh".
#
# Environment knobs (defaults in brackets):
#   BENCH_MESSAGES   messages per run, split evenly between the instances     [5000]
#   BENCH_SESSIONS   parallel smtp-source sessions in total (split as well)   [20]
#   BENCH_SIZE       message size in bytes (smtp-source -l)                   [4096]
#   BENCH_TIMEOUT    seconds allowed for sending, and again for draining      [600]
#   BENCH_ROUNDS     rounds of all runs; the goals take the per-round median  [5]
#   BENCH_CLUSTER_RUNS  which runs, in this order per round
#                    ["solo-local solo-redis pair-redis pair-local"]
#   BENCH_KEEP=1     keep the temp dir (configs, logs, spools) afterwards
#   BENCH_TMPDIR     parent for the temp dir                                  [$TMPDIR or /tmp]
#   OUTRELAY_BIN     outrelay binary                       [$REPO/build-bench/outrelay]
#   BENCH_BUILD=0    use build-bench/outrelay as it is (no incremental rebuild)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
N="${BENCH_MESSAGES:-5000}"
SESSIONS="${BENCH_SESSIONS:-20}"
SIZE="${BENCH_SIZE:-4096}"
TIMEOUT="${BENCH_TIMEOUT:-600}"
ROUNDS="${BENCH_ROUNDS:-5}"
ALL_RUNS="solo-local solo-redis pair-redis pair-local"
RUNS="${BENCH_CLUSTER_RUNS:-$ALL_RUNS}"
KEEP="${BENCH_KEEP:-0}"
BUILD_DIR="$REPO/build-bench"
OUTRELAY_BIN="${OUTRELAY_BIN:-$BUILD_DIR/outrelay}"
BUILD="${BENCH_BUILD:-1}"
ZONE="outrelay.test"
DOMAIN="bench.$ZONE"
SENDER="bench@$DOMAIN"
RCPT="sink@rcpt.$ZONE"
SEL_RSA="rsa1"

SMTP_SOURCE=/usr/sbin/smtp-source
SMTP_SINK=/usr/sbin/smtp-sink
NSD=/usr/sbin/nsd
REDIS_SERVER=/usr/bin/redis-server
REDIS_CLI=/usr/bin/redis-cli
PY3=/usr/bin/python3

log() { printf '[cluster-bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# The helpers this bench shares with relay-vs-postfix.sh are taken from that script by name
# (sourcing it would run it): process stop by PID, ports, CPU of a process tree, the Release
# build, NSD and the sink. A helper renamed there stops this script here, loudly.
bench_import() {  # bench_import NAME...: define these functions of relay-vs-postfix.sh here
    local f body src="$REPO/bench/relay-vs-postfix.sh"
    for f in "$@"; do
        # "NAME() { ...; }" on one line, or from "NAME() {" to the first line that is "}"
        body="$(awk -v f="$f" 'index($0, f "() {") == 1 { on = 1; print; if ($0 !~ /\{ *(#.*)?$/) exit; next }
                               on { print; if ($0 == "}") exit }' "$src")"
        [[ -n "$body" ]] || die "no function $f() in $src"
        eval "$body"
    done
}
bench_import need_pkg pid_alive stop_pid stop_nsd port_busy free_port wait_listen port_owned_by now \
    cpu_of fdiv fsub ensure_outrelay start_nsd start_sink sink_count write_outrelay_config

for v in N SESSIONS SIZE TIMEOUT ROUNDS; do
    [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer (got '${!v}')"
done
((N >= 2 && SESSIONS >= 2)) || die "BENCH_MESSAGES and BENCH_SESSIONS must be at least 2 (the pair splits them)"
for r in $RUNS; do
    [[ " $ALL_RUNS " == *" $r "* ]] || die "unknown run '$r' in BENCH_CLUSTER_RUNS (known: $ALL_RUNS)"
done
[[ $EUID -eq 0 ]] || die "run as root (smtp-sink -u and NSD as nobody need it)"

need_pkg "$SMTP_SOURCE" postfix
need_pkg "$SMTP_SINK" postfix
need_pkg "$NSD" nsd
need_pkg /usr/sbin/nsd-checkzone nsd
need_pkg /usr/bin/dig bind9-dnsutils
need_pkg "$REDIS_SERVER" redis-server
need_pkg "$REDIS_CLI" redis-tools
need_pkg /usr/bin/ss iproute2
need_pkg /usr/bin/setpriv util-linux
need_pkg /usr/bin/timeout coreutils

# ------------------------------------------------------------------ state
TMP=""
NSD_PID=""
NSD_PORT=""
SINK_PID=""
REDIS_PID=""
REDIS_PORT=""
RELAY_PIDS=()
SOURCE_PIDS=()
declare -A RES=()

stop_run() {  # whatever a run started: sources, relays, sink, Redis
    local p
    for p in "${SOURCE_PIDS[@]}"; do stop_pid "$p" smtp-source; done
    SOURCE_PIDS=()
    for p in "${RELAY_PIDS[@]}"; do stop_pid "$p" outrelay; done
    RELAY_PIDS=()
    stop_pid "$SINK_PID" smtp-sink; SINK_PID=""
    stop_pid "$REDIS_PID" redis-server; REDIS_PID=""
}

cleanup() {
    local rc=$?
    set +e
    trap - INT TERM
    stop_run
    stop_nsd
    if [[ -n "$TMP" ]]; then
        if [[ "$KEEP" == 1 || $rc -ne 0 ]]; then log "temp dir kept: $TMP"; else rm -rf "$TMP"; fi
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ------------------------------------------------------------------ helpers
read -r EPH_LO _ </proc/sys/net/ipv4/ip_local_port_range  # for free_port
USED_PORTS=" "
HZ="$(getconf CLK_TCK 2>/dev/null || echo 100)"                 # for cpu_of
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

# ------------------------------------------------------------- DNS and keys
# The RSA-2048 DKIM key (RFC 6376) made by `outrelay keygen`; start_nsd serves its record from
# $TMP/dkim-*.txt with the sender domain's SPF (127.0.0.1 may send) and DMARC (p=reject), so
# the relays' checks resolve on loopback.
make_key() {
    local kcfg="$TMP/keygen.yaml"
    mkdir -p "$TMP/keys"
    chmod 700 "$TMP/keys"
    printf 'hostname: %s\nspool: %s\nstate: %s\nkeys: %s\n' "$DOMAIN" \
        "$TMP/keygen-spool" "$TMP/keygen-state" "$TMP/keys" >"$kcfg"
    "$OUTRELAY_BIN" keygen "$DOMAIN" "$SEL_RSA" --rsa 2048 -c "$kcfg" >"$TMP/dkim-$SEL_RSA.txt" \
        || die "outrelay keygen $DOMAIN $SEL_RSA --rsa 2048 failed"
}

# ------------------------------------------------------------------ Redis
# A fresh redis-server per run (so its CPU and command counters belong to that run), as nobody,
# without persistence, like the integration tests' (tests/lib/harness.py).
start_redis() {  # start_redis DIR
    local d="$1/redis"
    REDIS_PORT="$(free_port)"
    mkdir -p "$d"
    chown nobody:nogroup "$d"
    setpriv --reuid=nobody --regid=nogroup --clear-groups "$REDIS_SERVER" --bind 127.0.0.1 \
        --port "$REDIS_PORT" --save '' --appendonly no --dir "$d" --daemonize no \
        --protected-mode no --logfile '' >"$d/redis.log" 2>&1 &
    REDIS_PID=$!
    wait_listen "$REDIS_PORT" "$REDIS_PID" redis-server 15
    port_owned_by "$REDIS_PORT" "$REDIS_PID" || die "port $REDIS_PORT is not held by our redis-server"
}
redis_cli() { "$REDIS_CLI" -h 127.0.0.1 -p "$REDIS_PORT" "$@"; }
redis_commands() {  # commands Redis has processed so far (INFO stats), not counting this INFO
    redis_cli INFO stats | tr -d '\r' | awk -F: '$1 == "total_commands_processed" { print $2 }'
}

# ------------------------------------------------------------------ relays
# outrelay-rsa as relay-vs-postfix.sh writes it (smarthost egress to the sink, 20 connections,
# the RSA key, DNS from our NSD), plus `cluster:` when REDIS is given.
write_config() {  # write_config FILE DIR RELAYPORT SINKPORT INSTANCE [REDIS-ADDR]
    local cfg="$1" dir="$2" rport="$3" sport="$4" inst="$5" redis="${6:-}"
    write_outrelay_config "$cfg" "$dir" "$rport" "$sport" "$TMP/keys"
    [[ -n "$redis" ]] && printf 'cluster:\n  redis: "%s"\n  instance: %s\n  key_prefix: bench\n' \
        "$redis" "$inst" >>"$cfg"
    return 0
}

cluster_state() {  # cluster_state CONFIG: "up N" (instances seen) or what status says
    "$OUTRELAY_BIN" cluster status --json -c "$1" 2>/dev/null | "$PY3" -c '
import json, sys
s = json.load(sys.stdin)
print(s.get("state", "?"), s.get("instances_seen", "?"))' 2>/dev/null || echo "unknown"
}

# run_one RUN ROUND: one measured run. RUN is solo-* (one instance) or pair-* (two), *-redis
# with cluster: pointing at a fresh redis-server, *-local without. One sink (-M N) for all
# instances; with two, each gets its own smtp-source with N/2 messages and half the sessions,
# both started together. accept = until the last source is done, e2e = until the sink has N.
run_one() {
    local run="$1" round="$2" key="$1.$2" dir sport inst=1 redis="" i cfg c0 c1 r0=0 r1=0 k0=0 k1=0
    local t0 t1 t2 rc=0 deadline st n msgs sess lg
    [[ "$run" == pair-* ]] && inst=2
    dir="$TMP/$run-$round"
    mkdir -p "$dir"
    RES[$key.load]="$(loadavg)"
    echo "== $run, round $round: $inst instance(s)$([[ "$run" == *-redis ]] && echo ", one redis-server" || echo ", no cluster"); loadavg ${RES[$key.load]}"
    if [[ "$run" == *-redis ]]; then
        start_redis "$dir"
        redis="127.0.0.1:$REDIS_PORT"
        echo "  redis:  $REDIS_SERVER on $redis (pid $REDIS_PID)"
    fi
    sport="$(free_port)"
    start_sink "$sport"                 # -M N: exits once all N messages are in
    local -a rports=() cfgs=()
    for ((i = 1; i <= inst; i++)); do
        rports+=("$(free_port)")
        cfg="$dir/relay-$i.yaml"
        cfgs+=("$cfg")
        write_config "$cfg" "$dir/relay-$i" "${rports[-1]}" "$sport" "relay-$i" "$redis"
        "$OUTRELAY_BIN" serve -c "$cfg" >"$dir/relay-$i.log" 2>&1 &
        RELAY_PIDS+=($!)
        wait_listen "${rports[-1]}" "${RELAY_PIDS[-1]}" "outrelay relay-$i" 15
        port_owned_by "${rports[-1]}" "${RELAY_PIDS[-1]}" || die "port ${rports[-1]} is not held by relay-$i"
        echo "  relay:  $OUTRELAY_BIN serve -c $cfg (pid ${RELAY_PIDS[-1]}, 127.0.0.1:${rports[-1]} -> sink 127.0.0.1:$sport)"
    done
    if [[ -n "$redis" ]]; then
        # measure only once every instance talks to Redis and sees the others
        for ((i = 0; i < 300; i++)); do
            n=0
            for cfg in "${cfgs[@]}"; do [[ "$(cluster_state "$cfg")" == "up $inst" ]] && n=$((n + 1)); done
            ((n == inst)) && break
            sleep 0.1
        done
        ((n == inst)) || die "$run: the instances did not all see $inst instance(s) through Redis within 30 s (relay-1: $(cluster_state "${cfgs[0]}"))"
        echo "  cluster: every instance up, $inst instance(s) seen"
        r0="$(cpu_of "$REDIS_PID")"; k0="$(redis_commands)"
    fi
    c0="$(cpu_of "${RELAY_PIDS[@]}")"
    sync
    t0="$(now)"
    for ((i = 1; i <= inst; i++)); do
        msgs=$((N / inst + (i == 1 ? N % inst : 0)))
        sess=$((SESSIONS / inst + (i == 1 ? SESSIONS % inst : 0)))
        env MAIL_CONFIG=/nonexistent timeout "$TIMEOUT" "$SMTP_SOURCE" -s "$sess" -m "$msgs" -l "$SIZE" \
            -f "$SENDER" -t "$RCPT" "127.0.0.1:${rports[i - 1]}" >"$dir/source-$i.out" 2>"$dir/source-$i.err" &
        SOURCE_PIDS+=($!)
    done
    echo "  source: $inst x smtp-source -s $((SESSIONS / inst)) -m $((N / inst)) -l $SIZE, started together"
    set +e
    for i in "${!SOURCE_PIDS[@]}"; do wait "${SOURCE_PIDS[i]}" || rc=$?; done
    set -e
    SOURCE_PIDS=()
    t1="$(now)"
    RES[$key.srcerr]="$(cat "$dir"/source-*.err | grep -c . || true)"
    if ((rc != 0)); then
        log "$run: smtp-source exited $rc; stderr:"; head -n 20 "$dir"/source-*.err >&2
        RES[$key.e2e]="failed"; KEEP=1; stop_run; return 1
    fi
    deadline=$(( ${t1%.*} + TIMEOUT ))
    while pid_alive "$SINK_PID"; do
        if (( ${EPOCHREALTIME%.*} >= deadline )); then
            log "$run: the sink saw only $(sink_count "$sport")/$N messages after ${TIMEOUT}s"
            RES[$key.e2e]="timeout"; KEEP=1; stop_run; return 1
        fi
        sleep 0.02
    done
    t2="$(now)"
    wait "$SINK_PID" 2>/dev/null || true
    SINK_PID=""
    c1="$(cpu_of "${RELAY_PIDS[@]}")"
    if [[ -n "$redis" ]]; then
        r1="$(cpu_of "$REDIS_PID")"; k1="$(redis_commands)"
        RES[$key.rcpu]="$(fsub "$r1" "$r0")"
        RES[$key.rcmd]="$((k1 - k0 - 1))"        # minus the INFO before
        RES[$key.rkeys]="$(redis_cli --scan --pattern 'bench:dup:*' | wc -l)"
    fi
    RES[$key.accept]="$(fsub "$t1" "$t0")"
    RES[$key.e2e]="$(fsub "$t2" "$t0")"
    RES[$key.cpu]="$(fsub "$c1" "$c0")"
    for p in "${RELAY_PIDS[@]}"; do pid_alive "$p" || { log "$run: relay pid $p exited during the run"; RES[$key.e2e]="failed"; }; done
    stop_run
    # what the relays' logs say: every message signed and checked, none suppressed as a duplicate
    local sent=0 signed=0 dmarc=0 supp=0 def=0 left=0
    for ((i = 1; i <= inst; i++)); do
        lg="$dir/relay-$i.log"
        sent=$((sent + $(grep -c 'status=sent' "$lg" || true)))
        def=$((def + $(grep -c 'status=deferred' "$lg" || true)))
        signed=$((signed + $(grep -E '\<signed\>' "$lg" | grep -c 'dkim=(' || true)))
        dmarc=$((dmarc + $(grep -E '\<checked\>' "$lg" | grep -c 'dmarc=pass' || true)))
        supp=$((supp + $(grep -ci 'suppress' "$lg" || true)))
        left=$((left + $(find "$dir/relay-$i/spool" -type f 2>/dev/null | wc -l)))
    done
    st="$sent sent, $def deferred, $signed signed, $dmarc checked dmarc=pass, $supp suppressed; $left spool file(s) left"
    [[ -n "$redis" ]] && st+="; redis: ${RES[$key.rcmd]} commands, ${RES[$key.rkeys]} duplicate-window keys"
    echo "  logs:   $st"
    if ((signed < N || dmarc < N || supp > 0)); then
        log "$run: not every message was signed and checked, or some were suppressed: the run does not count"
        RES[$key.e2e]="check-failed"; KEEP=1
    fi
    log "$run round $round: accepted in ${RES[$key.accept]}s, all $N delivered after ${RES[$key.e2e]}s, relay CPU ${RES[$key.cpu]}s${redis:+, redis CPU ${RES[$key.rcpu]}s}"
    echo
}

# ------------------------------------------------------------------ report
median() {  # median VALUE...: of the numeric ones (the mean of the middle two), else "n/a"
    printf '%s\n' "$@" | awk '/^[-+]?[0-9.]+$/' | sort -g | awk '{ v[NR] = $1 }
        END { if (!NR) print "n/a"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
med() {  # med RUN FIELD: the median over the rounds
    local r; local -a v=()
    for ((r = 1; r <= ROUNDS; r++)); do v+=("${RES[$1.$r.$2]:-}"); done
    median "${v[@]}"
}
per_msg_ms() { [[ "$1" =~ ^[0-9.]+$ ]] && awk -v c="$1" -v n="$N" 'BEGIN { printf "%.3f", c * 1000 / n }' || echo n/a; }
rate() { [[ "$1" =~ ^[0-9.]+$ ]] && fdiv "$N" "$1" || echo n/a; }
num() { [[ "$1" =~ ^[-+]?[0-9.]+$ ]]; }
goal() { printf '  %-70s %s\n' "$1" "$2"; }

report() {
    local run r key
    echo "== results ($N msgs x $SIZE B per run, $SESSIONS sessions in total, $ROUNDS round(s); loadavg now $(loadavg))"
    printf '%-11s %5s %-14s %9s %9s %9s %8s %10s %8s %10s %8s %7s\n' run round loadavg accept_s e2e_s e2e_msg/s \
        cpu_s cpu_ms/msg redis_s redis_ms/msg cmd/msg src_err
    for ((r = 1; r <= ROUNDS; r++)); do
        for run in $RUNS; do
            key="$run.$r"
            printf '%-11s %5s %-14s %9s %9s %9s %8s %10s %8s %10s %8s %7s\n' "$run" "$r" \
                "$(cut -d' ' -f1-2 <<<"${RES[$key.load]:-n/a}")" "${RES[$key.accept]:-n/a}" "${RES[$key.e2e]:-n/a}" \
                "$(rate "${RES[$key.e2e]:-}")" "${RES[$key.cpu]:-n/a}" "$(per_msg_ms "${RES[$key.cpu]:-}")" \
                "${RES[$key.rcpu]:--}" "$( [[ -n "${RES[$key.rcpu]:-}" ]] && per_msg_ms "${RES[$key.rcpu]}" || echo -)" \
                "$( [[ -n "${RES[$key.rcmd]:-}" ]] && fdiv "${RES[$key.rcmd]}" "$N" '%.2f' || echo -)" \
                "${RES[$key.srcerr]:-n/a}"
        done
    done
    echo
    echo "medians over the rounds:"
    for run in $RUNS; do
        MED[$run.e2e]="$(med "$run" e2e)"; MED[$run.cpu]="$(med "$run" cpu)"; MED[$run.rcpu]="$(med "$run" rcpu)"
        printf '  %-11s e2e %8s s = %7s msg/s   relay CPU %7s ms/msg%s\n' "$run" "${MED[$run.e2e]}" \
            "$(rate "${MED[$run.e2e]}")" "$(per_msg_ms "${MED[$run.cpu]}")" \
            "$( [[ "$run" == *-redis ]] && echo "   redis CPU $(per_msg_ms "${MED[$run.rcpu]}") ms/msg")"
    done
    goals
}

declare -A MED=()
# The goals compare runs of the same round (a few seconds apart): other work on the box moves
# the rates and even the CPU per message by tens of percent between rounds, much less within
# one. Each goal's figure is the median of its per-round values, which are shown too.
per_round() {  # per_round KIND A B: one value per round ("n/a" where a run did not complete)
    local r a b ar br
    for ((r = 1; r <= ROUNDS; r++)); do
        a="${RES[$2.$r.e2e]:-}"; b="${RES[${3:-$2}.$r.e2e]:-}"
        if ! num "$a" || ! num "$b"; then printf ' n/a'; continue; fi
        a="${RES[$2.$r.cpu]:-}"; ar="${RES[$2.$r.rcpu]:-0}"
        b="${RES[${3:-$2}.$r.cpu]:-}"; br="${RES[${3:-$2}.$r.rcpu]:-0}"
        case "$1" in
        rate)  printf ' %s' "$(fdiv "${RES[$3.$r.e2e]}" "${RES[$2.$r.e2e]}" '%.2f')" ;;  # A's msg/s / B's
        share) printf ' %s' "$(awk -v a="$ar" -v b="$a" 'BEGIN { printf("%.1f", a * 100 / b) }')" ;;
        added) printf ' %s' "$(awk -v a="$a" -v r="$ar" -v b="$b" -v q="$br" \
                   'BEGIN { printf("%+.1f", (a + r - b - q) * 100 / b) }')" ;;  # (A + its Redis) vs B
        esac
    done
}
verdict() {  # verdict VALUE OP LIMIT
    num "$1" || { echo "not measured"; return; }
    awk -v v="$1" -v op="$2" -v l="$3" 'BEGIN { ok = (op == ">=") ? v >= l : v < l; print ok ? "met" : "not met" }'
}
goals() {
    local vals v run
    echo
    echo "goals (the median of the per-round values decides):"
    # 1. two instances with Redis deliver together >= 90 % of one instance with Redis
    vals="$(per_round rate pair-redis solo-redis)"; v="$(median $vals)"
    goal "two instances + Redis >= 90 % of one instance + Redis (e2e msg/s)" \
        "$(verdict "$v" '>=' 0.9) (ratio $v; by round:$vals; medians $(rate "${MED[pair-redis.e2e]:-}") / $(rate "${MED[solo-redis.e2e]:-}") msg/s)"
    # 2. Redis adds < 10 % CPU per message: redis-server's CPU against the relays' in the same run
    for run in solo-redis pair-redis; do
        vals="$(per_round share "$run")"; v="$(median $vals)"
        goal "Redis < 10 % CPU per message: redis-server / relays ($run)" \
            "$(verdict "$v" '<' 10) ($v %; by round:$vals)"
    done
    # ... and all the cluster adds to one instance: relay with cluster: + redis-server against
    # the relay without, in the same round
    vals="$(per_round added solo-redis solo-local)"; v="$(median $vals)"
    goal "Redis < 10 % CPU per message: (relay + redis) with cluster: / without" \
        "$(verdict "$v" '<' 10) ($v %; by round:$vals)"
    # for reading the first goal: what two instances cost without any Redis
    vals="$(per_round rate pair-local solo-local)"; v="$(median $vals)"
    num "$v" && goal "(for comparison) two instances / one, both without cluster:" "ratio $v; by round:$vals"
    vals="$(per_round added pair-local solo-local)"; v="$(median $vals)"
    num "$v" && goal "(for comparison) CPU per message, two instances / one, no cluster:" "$v %; by round:$vals"
    goal "shared caps through Redis (a cap on the pair)" "not measured (no shared caps in this build)"
}

# ------------------------------------------------------------------ main
ensure_outrelay
TMP="$(mktemp -d "${BENCH_TMPDIR:-${TMPDIR:-/tmp}}/cluster-bench.XXXXXX")"
chmod 755 "$TMP"
echo "== machine"
echo "nproc:        $(nproc)"
echo "kernel:       $(uname -srm)"
echo "cpu:          $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo 2>/dev/null || echo '?')"
echo "temp dir fs:  $(findmnt -n -o FSTYPE --target "$TMP" 2>/dev/null || echo '?') ($TMP)"
echo "redis:        $("$REDIS_SERVER" --version | cut -d' ' -f1-3)"
if [[ "$OUTRELAY_BIN" == "$BUILD_DIR/outrelay" ]] && git -C "$REPO" rev-parse --git-dir >/dev/null 2>&1; then
    echo "outrelay:     $OUTRELAY_BIN (tree at $(git -C "$REPO" rev-parse --short HEAD)$( [[ -n "$(git -C "$REPO" status --porcelain --untracked-files=no -- outrelay CMakeLists.txt)" ]] && echo " + uncommitted changes under outrelay/"))"
else
    echo "outrelay:     $OUTRELAY_BIN"
fi
echo "loadavg:      $(loadavg) (other work on the box skews the rates; CPU per message less so)"
echo "bench load:   $N msgs x $SIZE B per run, $SESSIONS sessions in total; runs: $RUNS; $ROUNDS round(s)"
make_key
start_nsd
echo
for ((round = 1; round <= ROUNDS; round++)); do
    for run in $RUNS; do
        run_one "$run" "$round" || true
        sleep 1
    done
done
stop_nsd
report
rc=0
for run in $RUNS; do
    num "$(med "$run" e2e)" || { log "$run completed no round"; rc=1; }
    for ((r = 1; r <= ROUNDS; r++)); do
        num "${RES[$run.$r.e2e]:-}" || { log "$run round $r did not complete"; rc=1; }
    done
done
exit $rc
