#!/bin/sh
# report-1m.sh - times `outrelay report` over a month of a busy relay: generates 1,000,000
# event rows (the records.db schema 3 of outrelay/records/records.c) for 30 days, 400 From
# domains, two egresses (legacy -> cloud ramp from 0 to 100 %), the shipped providers and
# shaping policies, deferrals (some of them Microsoft throttling replies), bounces, checks
# with DMARC failures, cap spills and operator overrides; then runs every report and prints
# the seconds each took. Usage: bench/report-1m.sh [BUILD_DIR] [WORK_DIR] [ROWS]
set -eu
SRC=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$SRC/build-rel}
WORK=${2:-/tmp/outrelay-report-1m}
ROWS=${3:-1000000}
BIN=$BUILD/outrelay
[ -x "$BIN" ] || { echo "no $BIN: build first (cmake --build $BUILD)" >&2; exit 1; }
mkdir -p "$WORK/state"
CONF=$WORK/outrelay.yaml
cat > "$CONF" <<YAML
state: $WORK/state
spool: $WORK/spool
egress:
  legacy: { type: direct, source: [192.0.2.10] }
  cloud: { type: direct, source: [198.51.100.10] }
ramp:
  from: legacy
  to: cloud
policies:
  - $SRC/policies/providers.yaml
  - $SRC/policies/shaping.yaml
YAML

DB=$WORK/state/records.db
if [ ! -s "$DB" ] || [ "$(sqlite3 "$DB" 'SELECT count(*) FROM events')" != "$ROWS" ]; then
    rm -f "$DB" "$DB-wal" "$DB-shm"
    echo "generating $ROWS rows into $DB ..."
    start=$(date +%s.%N)
    python3 - "$DB" "$ROWS" <<'PY'
import random, sqlite3, sys

db_path, target = sys.argv[1], int(sys.argv[2])
rnd = random.Random(20260301)
db = sqlite3.connect(db_path)
db.executescript("""
PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF;
CREATE TABLE schema_version (version INTEGER NOT NULL); INSERT INTO schema_version VALUES (3);
CREATE TABLE events (id INTEGER PRIMARY KEY, ts_us INTEGER NOT NULL, event TEXT, queue_id TEXT,
 message_id TEXT, origin TEXT, client_addr TEXT, sender TEXT, recipient TEXT, egress TEXT,
 source_addr TEXT, remote_mx TEXT, remote_addr TEXT, reply_code INTEGER, enhanced_code TEXT,
 reply_text TEXT, tls_version TEXT, tls_cipher TEXT, size INTEGER, delay_ms INTEGER,
 attempt_ms INTEGER, detail TEXT, from_domain TEXT, spf_result TEXT, spf_domain TEXT, dkim TEXT,
 dmarc_policy TEXT, dmarc_result TEXT, action TEXT, ramp_percent REAL, provider TEXT);
""")
START = 1772323200  # 2026-03-01 00:00 UTC
DAYS = 30
EGRESS_IP = {"legacy": "192.0.2.10", "cloud": "198.51.100.10"}
PROVIDERS = [("microsoft-consumer", "outlook.com", "outlook-com.olc.protection.outlook.com", 30),
             ("microsoft-tenant", "contoso.example", "contoso-example.mail.protection.outlook.com", 15),
             ("google", "gmail.com", "gmail-smtp-in.l.google.com", 30),
             ("yahoo", "yahoo.com", "mta5.am0.yahoodns.net", 10),
             ("other", "partner.example", "mx.partner.example", 15)]
PWEIGHTS = [p[3] for p in PROVIDERS]
domains = [f"d{i:03d}.example" for i in range(400)]
cloud_spf_missing = set(domains[::9])      # SPF lacks the cloud egress ...
stale_key = set(domains[::18])             # ... and DNS publishes an old DKIM key: DMARC fails
no_dkim = set(domains[::13])               # no signing key
origins = [("zimbra", "10.0.0.5"), ("exchange", "10.0.1.7")]
rows = []
ids = 0

def ev(ts, event, qid, **kw):
    rows.append((int(ts * 1e6), event, qid, kw.get("message_id"), kw.get("origin"),
                 kw.get("client_addr"), kw.get("sender"), kw.get("recipient"), kw.get("egress"),
                 kw.get("source_addr"), kw.get("remote_mx"), kw.get("remote_addr"),
                 kw.get("reply_code"), kw.get("enhanced_code"), kw.get("reply_text"),
                 kw.get("tls_version"), kw.get("tls_cipher"), kw.get("size"),
                 kw.get("delay_ms"), kw.get("attempt_ms"), kw.get("detail"),
                 kw.get("from_domain"), kw.get("spf_result"), kw.get("spf_domain"),
                 kw.get("dkim"), kw.get("dmarc_policy"), kw.get("dmarc_result"),
                 kw.get("action"), kw.get("ramp_percent"), kw.get("provider")))

# overrides: a pause and a resume in week 2, a set in week 3
for day, action, detail in ((9, "pause", "ramp paused at 30 %"), (10, "resume", "ramp follows "
        "the schedule"), (17, "set 60", "cloud share pinned at 60 %")):
    ev(START + day * 86400 + 36000, "ramp", "-", action=action, detail=detail)

n = 0
while len(rows) < target:
    n += 1
    t = START + rnd.random() * DAYS * 86400
    share = min(100.0, (t - START) / (DAYS * 86400) * 120)  # planned share
    qid = f"Q{n:08X}"
    dom = domains[int(rnd.paretovariate(1.2)) % len(domains)]
    sender = f"user{rnd.randrange(500)}@{dom}"
    origin, client = rnd.choice(origins)
    mid = f"<{n}.{rnd.randrange(10**9)}@{dom}>"
    pname, rdom, mx, _ = rnd.choices(PROVIDERS, PWEIGHTS)[0]
    rcpt = f"r{rnd.randrange(100000)}@{rdom}"
    size = rnd.randrange(2000, 200000)
    ev(t, "received", qid, message_id=mid, origin=origin, client_addr=client, sender=sender,
       size=size, detail="nrcpt=1")
    signed = dom not in no_dkim
    ev(t + 0.01, "signed", qid, message_id=mid, origin=origin, sender=sender, from_domain=dom,
       dkim=f"d={dom} s=s1 a=rsa-sha256" if signed else None,
       action=None if signed else "unsigned")
    key = "mismatch unaligned" if dom in stale_key else "ok aligned"
    dkim = f"d={dom} s=s1 a=rsa-sha256 key={key}" if signed else None
    for eg in ("legacy", "cloud"):
        spf_ok = not (eg == "cloud" and dom in cloud_spf_missing)
        tempfail = rnd.random() < 0.002
        spf = "temperror" if tempfail else ("pass" if spf_ok else "fail")
        dkim_ok = signed and dom not in stale_key
        dmarc = "temperror" if tempfail else ("pass" if spf_ok or dkim_ok else "fail")
        reason = None
        if dmarc == "fail":
            reason = (f"SPF record of {dom} does not authorise {EGRESS_IP[eg]} (egress {eg})"
                      + ("; DNS publishes a different DKIM key for s1._domainkey" if signed
                         else "; the message is not signed"))
        elif tempfail:
            reason = f"DNS timeout looking up the SPF record of {dom}"
        ev(t + 0.05, "checked", qid, message_id=mid, origin=origin, sender=sender, egress=eg,
           source_addr=EGRESS_IP[eg], from_domain=dom, spf_result=spf, spf_domain=dom, dkim=dkim,
           dmarc_policy="p=quarantine sp=quarantine pct=100 adkim=r aspf=r",
           dmarc_result=dmarc, action="send", detail=reason or "SPF pass")
    planned = "cloud" if rnd.random() * 100 < share else "legacy"
    egress, action, why = planned, "ramp", ""
    if planned == "cloud" and pname == "microsoft-consumer" and rnd.random() < 0.04:
        egress, action, why = "legacy", "spill", "; cap per_hour 2000 reached on cloud"
    if planned == "cloud" and dom in cloud_spf_missing:
        egress = "legacy"   # rerouted by the alignment policy
    ev(t + 0.06, "routed", qid, message_id=mid, origin=origin, sender=sender, recipient=rcpt,
       egress=egress, from_domain=dom, ramp_percent=round(share, 2), action=action,
       provider=pname,
       detail=f"provider={pname}{why}")
    ts = t + 0.3
    addr = f"203.0.113.{rnd.randrange(1, 250)}:25"
    common = dict(message_id=mid, origin=origin, client_addr=client, sender=sender,
                  recipient=rcpt, egress=egress, source_addr=EGRESS_IP[egress], remote_mx=mx,
                  remote_addr=addr, size=size, tls_version="TLSv1.3", provider=pname,
                  tls_cipher="TLS_AES_256_GCM_SHA384")
    r = rnd.random()
    tries = 0
    while r < 0.06 and tries < 3:        # deferrals, then a retry
        tries += 1
        ev(ts, "attempt", qid, **common)
        if pname == "microsoft-consumer" and rnd.random() < 0.5:
            code, enh, text = 451, "4.7.650", ("The mail server [%s] has been temporarily rate "
                                              "limited due to IP reputation" % EGRESS_IP[egress])
        else:
            code, enh, text = 421, "4.4.2", "Connection dropped, try again later"
        ev(ts + 0.2, "deferred", qid, reply_code=code, enhanced_code=enh, reply_text=text,
           delay_ms=int((ts + 0.2 - t) * 1000), attempt_ms=200, **common)
        ts += 300 * tries
        r = rnd.random() * 1.05
    ev(ts, "attempt", qid, **common)
    if r > 0.99:
        ev(ts + 0.2, "bounced", qid, reply_code=550, enhanced_code="5.1.1",
           reply_text="The email account that you tried to reach does not exist",
           delay_ms=int((ts + 0.2 - t) * 1000), attempt_ms=200, **common)
        ev(ts + 0.3, "dsn", qid, message_id=mid, sender=sender, detail=f"D{n:08X}")
    else:
        ev(ts + 0.2, "delivered", qid, reply_code=250, enhanced_code="2.0.0",
           reply_text=f"OK {rnd.randrange(10**12):x} - gsmtp", delay_ms=int((ts + 0.2 - t) * 1000),
           attempt_ms=int(rnd.expovariate(1 / 400)), **common)
    if len(rows) >= 50000:
        rows = rows[:target]
        rows.sort()
        db.executemany("INSERT INTO events (ts_us, event, queue_id, message_id, origin, "
                       "client_addr, sender, recipient, egress, source_addr, remote_mx, "
                       "remote_addr, reply_code, enhanced_code, reply_text, tls_version, "
                       "tls_cipher, size, delay_ms, attempt_ms, detail, from_domain, spf_result, "
                       "spf_domain, dkim, dmarc_policy, dmarc_result, action, ramp_percent, "
                       "provider) VALUES (" + ",".join("?" * 30) + ")", rows)
        target -= len(rows)
        rows = []
rows = rows[:max(0, target)]
rows.sort()
db.executemany("INSERT INTO events (ts_us, event, queue_id, message_id, origin, client_addr, "
               "sender, recipient, egress, source_addr, remote_mx, remote_addr, reply_code, "
               "enhanced_code, reply_text, tls_version, tls_cipher, size, delay_ms, attempt_ms, "
               "detail, from_domain, spf_result, spf_domain, dkim, dmarc_policy, dmarc_result, "
               "action, ramp_percent, provider) VALUES (" + ",".join("?" * 30) + ")", rows)
db.executescript("""
CREATE INDEX events_queue_id ON events (queue_id);
CREATE INDEX events_message_id ON events (message_id);
CREATE INDEX events_ts_us ON events (ts_us);
CREATE INDEX events_event_ts ON events (event, ts_us);
""")
db.commit()
print(f"{n} messages")
PY
    echo "generated in $(echo "$(date +%s.%N) - $start" | bc) s"
fi
echo "records: $(sqlite3 "$DB" 'SELECT count(*) FROM events') rows, $(du -h "$DB" | cut -f1)"
MSGID=$(sqlite3 "$DB" "SELECT message_id FROM events WHERE event='received' LIMIT 1 OFFSET 5000")

timeit() {
    label=$1
    shift
    start=$(date +%s.%N)
    "$@" > "$WORK/out.$label" 2> "$WORK/err.$label" || { echo "$label failed:"; cat "$WORK/err.$label"; exit 1; }
    printf '%-28s %6.2f s  (%s bytes of output)\n' "$label" "$(echo "$(date +%s.%N) - $start" | bc)" \
        "$(wc -c < "$WORK/out.$label")"
}
timeit alignment "$BIN" report alignment -c "$CONF"
timeit ramp "$BIN" report ramp -c "$CONF"
timeit delivery "$BIN" report delivery -c "$CONF"
timeit continuity "$BIN" report continuity -c "$CONF"
timeit continuity-message-id "$BIN" report continuity --message-id "$MSGID" -c "$CONF"
timeit continuity-1-day-trails "$BIN" report continuity --since 2026-03-15 --until 2026-03-16 -c "$CONF"
timeit alignment-json-1-domain "$BIN" report alignment --json --domain d002.example -c "$CONF"
timeit export-pmta "$BIN" report export --format pmta -c "$CONF"
timeit html "$BIN" report html -o "$WORK/report.html" -c "$CONF"
ls -l "$WORK/report.html"
