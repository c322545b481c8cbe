#!/usr/bin/env bash
# Gatehouse PostgreSQL gateway benchmark: pgbench directly, through PgBouncer and through Gatehouse.
#
#   ./benchmarks/pgbench.sh                   # builds (or reuses) the release binary, ~4-5 minutes
#   BENCH_SECONDS=15 ./benchmarks/pgbench.sh  # longer runs
#
# In one go on this machine, everything on 127.0.0.1:
#   1. a throwaway PostgreSQL 15 (scripts/lib/postgres.sh), pgbench data at scale 1 in `app`;
#   2. PgBouncer (Debian package) in session mode in front of it, run as the `postgres` user;
#   3. Gatehouse (release build) in front of it with full recording (its defaults), and the floor
#      of its stack: a bare SwiftNIO byte relay (benchmarks/baseline, `gatehouse-baseline
#      tcp-relay`: no parsing, no identity, no recording), and the same relay appending every
#      batch of client bytes to a hash-chained journal with one write before forwarding it
#      (`recording-relay`: the floor of recording before forwarding);
#   4. pgbench select-only simple (-S -M simple), select-only prepared (-S -M prepared) and the
#      default TPC-B-like script, at 1 client and at 8 clients (-j 2), each directly, through
#      PgBouncer and through Gatehouse;
#   5. a table of TPS and average latency with the ratios Gatehouse/direct and Gatehouse/PgBouncer
#      and the latency each proxy adds over direct, in microseconds;
#   6. the masked variant: a select of one sample customer (examples/demo-schema.sql) through
#      Gatehouse on a connection without mask rules and on one whose rules mask the email and card
#      columns and run the SSN and phone detectors over every value; masked/unmasked TPS;
#   7. stops Gatehouse with SIGTERM, runs `gatehouse audit verify` and counts the recorded events.
# Everything it starts is stopped on exit (also on Ctrl-C or failure).
#
# Environment:
#   BENCH_SECONDS   length of each pgbench run (default 10)
#   BENCH_CLIENTS   client counts to run (default "1 8"); -j is min(clients, 2)
#   BENCH_TARGETS   which of "direct pgbouncer relay recording gatehouse" to run (default all)
#   BENCH_WORKLOADS which of "select-simple select-prepared tpcb" to run (default all three)
#   BENCH_MASKED=0  skip the masked variant
#   GATEHOUSE_BIN   use this gatehouse binary instead of building .build-release/release/gatehouse
#   BENCH_SKIP_BUILD=1  reuse .build-release/release/gatehouse without running swift build
#   BENCH_KEEP=1    keep the work directory (pgbench outputs, logs, audit store) for a post-mortem
#   GATEHOUSE_PG_BINDIR  PostgreSQL binaries (default /usr/lib/postgresql/15/bin)
#
# Exit status: 0 when every run completed without failed transactions and the audit trail
# verified with at least one request event per statement pgbench ran through Gatehouse; 1 otherwise.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

DURATION="${BENCH_SECONDS:-10}"
CLIENT_COUNTS="${BENCH_CLIENTS:-1 8}"
TARGETS="${BENCH_TARGETS:-direct pgbouncer relay recording gatehouse}"
WORKLOADS="${BENCH_WORKLOADS:-select-simple select-prepared tpcb}"
SCALE=1
PG_BINDIR="${GATEHOUSE_PG_BINDIR:-/usr/lib/postgresql/15/bin}"
PGBENCH="$PG_BINDIR/pgbench"
PGBOUNCER="$(command -v pgbouncer || echo /usr/sbin/pgbouncer)"

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'pgbench.sh: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------
# Preconditions

[ -x "$PGBENCH" ] || die "$PGBENCH not found: apt-get install -y postgresql-15"
[ -x "$PGBOUNCER" ] || die "pgbouncer not found: apt-get install -y pgbouncer"
command -v curl >/dev/null || die "curl not found: apt-get install -y curl"
if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
  die "running as root needs the 'postgres' OS user (PgBouncer and initdb refuse root)"
fi

# ---------------------------------------------------------------------------------------------
# The gateway binary (release)

if [ -n "${GATEHOUSE_BIN:-}" ]; then
  BIN="$GATEHOUSE_BIN"
else
  BIN="$ROOT/.build-release/release/gatehouse"
fi
BASELINE="$ROOT/.build-release/release/gatehouse-baseline"
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ] || [ ! -x "$BIN" ] || [ ! -x "$BASELINE" ]; then
  say "building gatehouse and gatehouse-baseline (release, .build-release; the first build takes about 6 minutes)"
  for product in $([ -z "${GATEHOUSE_BIN:-}" ] && echo gatehouse) gatehouse-baseline; do
    if ! swift build -c release --product "$product" --scratch-path "$ROOT/.build-release" >"${TMPDIR:-/tmp}/gatehouse-bench-build.log" 2>&1; then
      tail -n 40 "${TMPDIR:-/tmp}/gatehouse-bench-build.log" >&2
      die "release build of $product failed (log: ${TMPDIR:-/tmp}/gatehouse-bench-build.log)"
    fi
  done
fi
[ -x "$BIN" ] || die "no gatehouse binary at $BIN"
[ -x "$BASELINE" ] || die "no gatehouse-baseline binary at $BASELINE"
# What was measured: the commit (and whether Sources/ had uncommitted changes when it was built).
REVISION="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ -z "${GATEHOUSE_BIN:-}" ] && [ -n "$(git -C "$ROOT" status --porcelain -- Sources Package.swift 2>/dev/null)" ]; then
  REVISION="$REVISION+uncommitted"
fi
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')"

# ---------------------------------------------------------------------------------------------
# Work directory and cleanup

WORK="$(mktemp -d /tmp/gatehouse-bench.XXXXXX)"
chmod 755 "$WORK"       # the postgres user must reach the cluster and PgBouncer's files
GATEWAY_PID=""
RELAY_PID=""
RECORDING_PID=""
BOUNCER_PIDFILE="$WORK/pgbouncer/pgbouncer.pid"
PG_STARTED=0

# shellcheck source=../scripts/lib/postgres.sh
source "$ROOT/scripts/lib/postgres.sh"

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if [ -n "$GATEWAY_PID" ] && kill -0 "$GATEWAY_PID" 2>/dev/null; then
    kill -TERM "$GATEWAY_PID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$GATEWAY_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$GATEWAY_PID" 2>/dev/null || true
    wait "$GATEWAY_PID" 2>/dev/null || true
  fi
  if [ -n "$RELAY_PID" ]; then { kill -KILL "$RELAY_PID"; wait "$RELAY_PID"; } 2>/dev/null || true; fi
  if [ -n "$RECORDING_PID" ]; then { kill -KILL "$RECORDING_PID"; wait "$RECORDING_PID"; } 2>/dev/null || true; fi
  if [ -f "$BOUNCER_PIDFILE" ]; then
    local bpid
    bpid="$(cat "$BOUNCER_PIDFILE" 2>/dev/null || true)"
    if [ -n "$bpid" ]; then
      kill -TERM "$bpid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$bpid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$bpid" 2>/dev/null || true
    fi
  fi
  if [ "$PG_STARTED" = 1 ]; then pg_stop "$WORK/pg" || true; fi
  if [ "${BENCH_KEEP:-0}" = 1 ]; then
    echo "work directory kept: $WORK" >&2
  else
    rm -rf "$WORK"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

random_secret() {
  python3 -c 'import secrets; print(secrets.token_urlsafe(24))'
}

# Clients get a clean environment: no inherited PG* variable may redirect them.
clean_env=(env -u PGHOST -u PGHOSTADDR -u PGPORT -u PGUSER -u PGPASSWORD -u PGDATABASE -u PGSERVICE
           -u PGSERVICEFILE -u PGSSLMODE -u PGOPTIONS -u PGPASSFILE -u PGAPPNAME -u PGCONNECT_TIMEOUT)

PG_PORT="$(free_port)"
BOUNCER_PORT="$(free_port)"
GATEWAY_PORT="$(free_port)"
RELAY_PORT="$(free_port)"
RECORDING_PORT="$(free_port)"
ADMIN_PORT="$(free_port)"
DB_PASSWORD="$(random_secret)"
export GATEHOUSE_DEMO_DB_PASSWORD="$DB_PASSWORD"      # for pg_start (role gh_scram)
export GATEHOUSE_BENCH_DB_PASSWORD="$DB_PASSWORD"     # for the gateway's `password: env:...`

# ---------------------------------------------------------------------------------------------
# PostgreSQL

say "starting PostgreSQL on 127.0.0.1:$PG_PORT"
pg_start "$WORK/pg" "$PG_PORT" || die "PostgreSQL did not start"
PG_STARTED=1

say "loading the sample customers (examples/demo-schema.sql)"
"${clean_env[@]}" PGPASSWORD="$DB_PASSWORD" "$PG_BINDIR/psql" -X -q -h 127.0.0.1 -p "$PG_PORT" -U gh_scram -d app \
  -f "$ROOT/examples/demo-schema.sql" >"$WORK/demo-schema.log" 2>&1 || { cat "$WORK/demo-schema.log" >&2; die "loading the sample customers failed"; }
cat >"$WORK/customers.sql" <<'SQL'
\set id random(1, 50)
SELECT id, full_name, email, phone, card_number, national_id FROM customers WHERE id = :id;
SQL

say "pgbench -i -s $SCALE"
if ! "${clean_env[@]}" PGPASSWORD="$DB_PASSWORD" "$PGBENCH" -i -s "$SCALE" -q \
    -h 127.0.0.1 -p "$PG_PORT" -U gh_scram app >"$WORK/pgbench-init.log" 2>&1; then
  cat "$WORK/pgbench-init.log" >&2
  die "pgbench -i failed"
fi

# ---------------------------------------------------------------------------------------------
# PgBouncer (session mode, as the postgres user: it refuses root)

say "starting PgBouncer (session mode) on 127.0.0.1:$BOUNCER_PORT"
mkdir -p "$WORK/pgbouncer"
# A quote in the password is doubled in the userlist format.
printf '"gh_scram" "%s"\n' "${DB_PASSWORD//\"/\"\"}" >"$WORK/pgbouncer/userlist.txt"
cat >"$WORK/pgbouncer/pgbouncer.ini" <<INI
[databases]
app = host=127.0.0.1 port=$PG_PORT dbname=app user=gh_scram

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BOUNCER_PORT
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $WORK/pgbouncer/userlist.txt
pool_mode = session
max_client_conn = 100
default_pool_size = 20
logfile = $WORK/pgbouncer/pgbouncer.log
pidfile = $BOUNCER_PIDFILE
ignore_startup_parameters = extra_float_digits
INI
chmod 700 "$WORK/pgbouncer"
chmod 600 "$WORK/pgbouncer/userlist.txt" "$WORK/pgbouncer/pgbouncer.ini"
if [ "$(id -u)" -eq 0 ]; then
  chown -R postgres:postgres "$WORK/pgbouncer"
  runuser -u postgres -- "$PGBOUNCER" -d "$WORK/pgbouncer/pgbouncer.ini" >"$WORK/pgbouncer-start.log" 2>&1 \
    || { cat "$WORK/pgbouncer-start.log" >&2; die "PgBouncer did not start"; }
else
  "$PGBOUNCER" -d "$WORK/pgbouncer/pgbouncer.ini" >"$WORK/pgbouncer-start.log" 2>&1 \
    || { cat "$WORK/pgbouncer-start.log" >&2; die "PgBouncer did not start"; }
fi
for _ in $(seq 50); do
  "${clean_env[@]}" PGPASSWORD="$DB_PASSWORD" "$PG_BINDIR/psql" -X -At -h 127.0.0.1 -p "$BOUNCER_PORT" \
    -U gh_scram -d app -c 'SELECT 1' >/dev/null 2>&1 && break
  sleep 0.1
done
"${clean_env[@]}" PGPASSWORD="$DB_PASSWORD" "$PG_BINDIR/psql" -X -At -h 127.0.0.1 -p "$BOUNCER_PORT" \
  -U gh_scram -d app -c 'SELECT 1' >/dev/null \
  || { cat "$WORK/pgbouncer/pgbouncer.log" >&2 2>/dev/null || true; die "PgBouncer does not answer"; }

# ---------------------------------------------------------------------------------------------
# The floor: a bare SwiftNIO relay, what any proxy built on the gateway's stack costs at least

say "starting the bare SwiftNIO relay on 127.0.0.1:$RELAY_PORT"
"$BASELINE" tcp-relay "$RELAY_PORT" 127.0.0.1 "$PG_PORT" >"$WORK/relay.log" 2>&1 &
RELAY_PID=$!
for _ in $(seq 100); do grep -q '^ready' "$WORK/relay.log" 2>/dev/null && break; sleep 0.1; done
"${clean_env[@]}" PGPASSWORD="$DB_PASSWORD" "$PG_BINDIR/psql" -X -At -h 127.0.0.1 -p "$RELAY_PORT" \
  -U gh_scram -d app -c 'SELECT 1' >/dev/null || { cat "$WORK/relay.log" >&2; die "the relay does not answer"; }

say "starting the recording relay on 127.0.0.1:$RECORDING_PORT (journal $WORK/recording.journal)"
"$BASELINE" recording-relay "$RECORDING_PORT" 127.0.0.1 "$PG_PORT" "$WORK/recording.journal" >"$WORK/recording.log" 2>&1 &
RECORDING_PID=$!
for _ in $(seq 100); do grep -q '^ready' "$WORK/recording.log" 2>/dev/null && break; sleep 0.1; done
"${clean_env[@]}" PGPASSWORD="$DB_PASSWORD" "$PG_BINDIR/psql" -X -At -h 127.0.0.1 -p "$RECORDING_PORT" \
  -U gh_scram -d app -c 'SELECT 1' >/dev/null || { cat "$WORK/recording.log" >&2; die "the recording relay does not answer"; }

# ---------------------------------------------------------------------------------------------
# Gatehouse (release, full recording: the defaults)

say "starting Gatehouse ($BIN) on 127.0.0.1:$GATEWAY_PORT"
mkdir -p "$WORK/gatehouse"
GATEWAY_CONFIG="$WORK/gatehouse/gatehouse.yaml"
cat >"$GATEWAY_CONFIG" <<YAML
# Written by benchmarks/pgbench.sh. Recording at the defaults: every statement's request event is
# committed (audit.durability: normal) before it is forwarded, results up to 100 rows recorded.
dev: true
gateway:
  node: bench
  state_dir: state
admin:
  listen: 127.0.0.1:$ADMIN_PORT
postgres:
  listen: 127.0.0.1:$GATEWAY_PORT
connections:
  - name: bench
    type: postgres
    upstream: postgres://127.0.0.1:$PG_PORT/app
    username: gh_scram
    password: env:GATEHOUSE_BENCH_DB_PASSWORD
    allow:
      groups: [dev]
  - name: bench-masked
    type: postgres
    upstream: postgres://127.0.0.1:$PG_PORT/app
    username: gh_scram
    password: env:GATEHOUSE_BENCH_DB_PASSWORD
    allow:
      groups: [dev]
policy:
  rules:
    - name: pii
      effect: mask
      connections: [bench-masked]
      columns: [customers.email, customers.card_number]
      detectors: [ssn, phone]
      strategy: partial
YAML
GATEWAY_LOG="$WORK/gatehouse/gateway.log"
"$BIN" serve --config "$GATEWAY_CONFIG" >"$WORK/gatehouse/stdout.log" 2>"$GATEWAY_LOG" &
GATEWAY_PID=$!
for _ in $(seq 300); do
  grep -q '^gatehouse ready:' "$WORK/gatehouse/stdout.log" 2>/dev/null && break
  kill -0 "$GATEWAY_PID" 2>/dev/null || break
  sleep 0.1
done
if ! grep -q '^gatehouse ready:' "$WORK/gatehouse/stdout.log" 2>/dev/null; then
  tail -n 30 "$GATEWAY_LOG" >&2
  die "Gatehouse did not print 'gatehouse ready:'"
fi
for _ in $(seq 200); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$ADMIN_PORT/readyz")" = 200 ] && break
  sleep 0.1
done
TOKEN="$("$BIN" dev token --config "$GATEWAY_CONFIG" --subject bench --groups dev --ttl 86400)" \
  || die "gatehouse dev token failed"
"${clean_env[@]}" PGPASSWORD="$TOKEN" "$PG_BINDIR/psql" -X -At -h 127.0.0.1 -p "$GATEWAY_PORT" \
  -U bench -d bench -c 'SELECT count(*) FROM pgbench_branches' >/dev/null \
  || { tail -n 30 "$GATEWAY_LOG" >&2; die "a query through Gatehouse failed"; }

# ---------------------------------------------------------------------------------------------
# Runs

declare -A TPS LAT TXNS CPU FAILED MASKED_TPS MASKED_CPU
FAILURES=()
GATEWAY_STATEMENTS=0    # statements pgbench ran through the gateway (transactions x statements)

# cpu_ticks PID: user+system CPU time of a process so far, in clock ticks (empty if unknown).
cpu_ticks() {
  [ -n "${1:-}" ] && [ -r "/proc/$1/stat" ] || return 0
  # Fields after the command name (which may contain spaces): utime is the 12th, stime the 13th.
  sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | awk '{ print $12 + $13 }' || true
}
CLK_TCK="$(getconf CLK_TCK 2>/dev/null || echo 100)"

# The proxy process whose CPU time a run is charged with.
proxy_pid() {
  case "$1" in
    gatehouse|gatehouse-masked) echo "$GATEWAY_PID" ;;
    pgbouncer) cat "$BOUNCER_PIDFILE" 2>/dev/null || true ;;
    relay) echo "$RELAY_PID" ;;
    recording) echo "$RECORDING_PID" ;;
  esac
}

# run_pgbench TARGET WORKLOAD CLIENTS
run_pgbench() {
  local target="$1" workload="$2" clients="$3"
  local threads=$(( clients < 2 ? clients : 2 ))
  local key="$workload/$clients/$target"
  local out="$WORK/runs/${workload}-c${clients}-${target}.log"
  local -a conn mode
  case "$target" in
    direct)    conn=(-h 127.0.0.1 -p "$PG_PORT" -U gh_scram app); local pw="$DB_PASSWORD" ;;
    pgbouncer) conn=(-h 127.0.0.1 -p "$BOUNCER_PORT" -U gh_scram app); local pw="$DB_PASSWORD" ;;
    relay)     conn=(-h 127.0.0.1 -p "$RELAY_PORT" -U gh_scram app); local pw="$DB_PASSWORD" ;;
    recording) conn=(-h 127.0.0.1 -p "$RECORDING_PORT" -U gh_scram app); local pw="$DB_PASSWORD" ;;
    gatehouse) conn=(-h 127.0.0.1 -p "$GATEWAY_PORT" -U bench bench); local pw="$TOKEN" ;;
    gatehouse-masked) conn=(-h 127.0.0.1 -p "$GATEWAY_PORT" -U bench bench-masked); local pw="$TOKEN" ;;
  esac
  case "$workload" in
    select-simple)   mode=(-S -M simple) ;;
    select-prepared) mode=(-S -M prepared) ;;
    tpcb)            mode=(-M simple) ;;
    customers)       mode=(-M simple -n -f "$WORK/customers.sql") ;;
  esac
  mkdir -p "$WORK/runs"
  printf '    %-16s %2d client(s)  %-10s ' "$workload" "$clients" "$target" >&2
  local rc=0 pid cpu0 cpu1
  pid="$(proxy_pid "$target")"
  cpu0="$(cpu_ticks "$pid")"
  # A hang is a failure too: each run gets its duration plus a minute.
  "${clean_env[@]}" PGPASSWORD="$pw" PGCONNECT_TIMEOUT=10 timeout --signal=KILL $(( DURATION + 60 )) \
    "$PGBENCH" "${mode[@]}" -c "$clients" -j "$threads" -T "$DURATION" "${conn[@]}" >"$out" 2>&1 || rc=$?
  cpu1="$(cpu_ticks "$pid")"
  local tps lat txns failed
  tps="$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)$/\1/p' "$out")"
  lat="$(sed -n 's/^latency average = \([0-9.]*\) ms$/\1/p' "$out")"
  txns="$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$out")"
  failed="$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$out")"
  if [ "$rc" -ne 0 ] || [ -z "$tps" ] || [ -z "$lat" ] || [ "${failed:-0}" != 0 ] \
      || grep -qiE 'error|abort' "$out"; then
    echo "FAILED (exit $rc)" >&2
    FAILURES+=("$key")
    FAILED[$key]=1
    {
      echo "----- pgbench $key failed (exit $rc$([ "$rc" -eq 137 ] && echo ': killed after timeout, hung')) -----"
      echo "command: pgbench ${mode[*]} -c $clients -j $threads -T $DURATION ${conn[*]}"
      tail -n 40 "$out"
      if [ "$target" = gatehouse ]; then
        echo "----- gateway log tail -----"
        tail -n 40 "$GATEWAY_LOG"
        kill -0 "$GATEWAY_PID" 2>/dev/null || echo "(the gateway process is no longer running)"
      elif [ "$target" = pgbouncer ]; then
        echo "----- pgbouncer log tail -----"
        tail -n 20 "$WORK/pgbouncer/pgbouncer.log" 2>/dev/null || true
      fi
      echo "-----"
    } >&2
  else
    printf '%10s tps  %8s ms\n' "$tps" "$lat" >&2
  fi
  # A failed run's figures are not comparable: the table shows FAIL instead.
  if [ -z "${FAILED[$key]:-}" ]; then
    [ -n "$tps" ] && TPS[$key]="$tps"
    [ -n "$lat" ] && LAT[$key]="$lat"
  fi
  [ -n "$txns" ] && TXNS[$key]="$txns"
  # The proxy's CPU time per transaction (µs), pgbench's setup (vacuum) included.
  if [ -n "$cpu0" ] && [ -n "$cpu1" ] && [ -n "$txns" ] && [ "$txns" -gt 0 ]; then
    CPU[$key]="$(awk -v t=$(( cpu1 - cpu0 )) -v hz="$CLK_TCK" -v n="$txns" 'BEGIN { printf "%.0f", t / hz * 1e6 / n }')"
  fi
  if [[ "$target" == gatehouse* ]] && [ -n "$txns" ]; then
    local per=1
    [ "$workload" = tpcb ] && per=7      # BEGIN, 3 UPDATEs, SELECT, INSERT, END
    GATEWAY_STATEMENTS=$(( GATEWAY_STATEMENTS + txns * per ))
  fi
  return 0
}

say "pgbench runs of ${DURATION}s each (scale $SCALE): workloads [$WORKLOADS], clients [$CLIENT_COUNTS], targets [$TARGETS]"
# Interleaved: the three targets of one workload and client count run back to back, so slow
# drift of the machine affects them alike.
for workload in $WORKLOADS; do
  for clients in $CLIENT_COUNTS; do
    for target in $TARGETS; do
      run_pgbench "$target" "$workload" "$clients"
    done
  done
done

MASKED_ROUNDS=2
if [ "${BENCH_MASKED:-1}" != 0 ] && [[ " $TARGETS " == *" gatehouse "* ]]; then
  say "masked variant: one sample customer per transaction, unmasked and masked connections, ${MASKED_ROUNDS} rounds"
  for clients in $CLIENT_COUNTS; do
    for round in $(seq "$MASKED_ROUNDS"); do
      for target in gatehouse gatehouse-masked; do
        run_pgbench "$target" customers "$clients"
        key="customers/$clients/$target"
        # Rounds are added up: the ratio compares the same amount of time on each side.
        [ -n "${TPS[$key]:-}" ] && MASKED_TPS[$key]="$(awk -v a="${MASKED_TPS[$key]:-0}" -v b="${TPS[$key]}" 'BEGIN { print a + b }')"
        [ -n "${CPU[$key]:-}" ] && MASKED_CPU[$key]="$(awk -v a="${MASKED_CPU[$key]:-0}" -v b="${CPU[$key]}" -v r="$MASKED_ROUNDS" 'BEGIN { print a + b / r }')"
      done
    done
  done
fi

# ---------------------------------------------------------------------------------------------
# Results

fmt_ratio() {  # a / b, or "-"
  if [ -n "${1:-}" ] && [ -n "${2:-}" ]; then awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }'; else echo "-"; fi
}
fmt_added_us() {  # (a - b) ms -> µs, signed
  if [ -n "${1:-}" ] && [ -n "${2:-}" ]; then awk -v a="$1" -v b="$2" 'BEGIN { printf "%+.0f", (a - b) * 1000 }'; else echo "-"; fi
}
fmt_tps() { if [ -n "${1:-}" ]; then awk -v a="$1" 'BEGIN { printf "%.0f", a }'; elif [ -n "${2:-}" ]; then echo FAIL; else echo "-"; fi; }
fmt_ms() { if [ -n "${1:-}" ]; then awk -v a="$1" 'BEGIN { printf "%.3f", a }'; else echo "-"; fi; }

echo
echo "pgbench ${DURATION}s per run, scale $SCALE, $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ), gatehouse $REVISION (release)"
echo "load average before: $LOAD_BEFORE, after: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')"
echo "TPS without connection time; latency = pgbench's average"
echo
printf '| %-15s | %2s | %9s | %9s | %9s | %9s | %9s | %8s | %8s | %9s | %9s | %9s | %9s | %9s | %8s | %8s | %8s | %8s | %10s | %9s | %9s | %9s |\n' \
  workload c "direct" "pgbouncer" "relay" "recording" "gatehouse" "GH/dir" "GH/PgB" "relay/PgB" "rec/PgB" "dir ms" "PgB ms" "GH ms" "PgB +µs" "relay +µs" "rec +µs" "GH +µs" "PgB cpu/tx" "relay cpu" "rec cpu" "GH cpu/tx"
sep="|"
for width in 15 2 9 9 9 9 9 8 8 9 9 9 9 9 8 8 8 8 10 9 9 9; do
  if [ "$width" = 15 ]; then sep+=":$(printf '%*s' $(( width + 1 )) '' | tr ' ' -)|"
  else sep+="$(printf '%*s' $(( width + 1 )) '' | tr ' ' -):|"; fi
done
echo "$sep"
for workload in $WORKLOADS; do
  for clients in $CLIENT_COUNTS; do
    d="$workload/$clients/direct"; b="$workload/$clients/pgbouncer"; g="$workload/$clients/gatehouse"
    r="$workload/$clients/relay"; j="$workload/$clients/recording"
    printf '| %-15s | %2s | %9s | %9s | %9s | %9s | %9s | %8s | %8s | %9s | %9s | %9s | %9s | %9s | %8s | %8s | %8s | %8s | %10s | %9s | %9s | %9s |\n' \
      "$workload" "$clients" \
      "$(fmt_tps "${TPS[$d]:-}" "${FAILED[$d]:-}")" "$(fmt_tps "${TPS[$b]:-}" "${FAILED[$b]:-}")" \
      "$(fmt_tps "${TPS[$r]:-}" "${FAILED[$r]:-}")" "$(fmt_tps "${TPS[$j]:-}" "${FAILED[$j]:-}")" \
      "$(fmt_tps "${TPS[$g]:-}" "${FAILED[$g]:-}")" \
      "$(fmt_ratio "${TPS[$g]:-}" "${TPS[$d]:-}")" "$(fmt_ratio "${TPS[$g]:-}" "${TPS[$b]:-}")" \
      "$(fmt_ratio "${TPS[$r]:-}" "${TPS[$b]:-}")" "$(fmt_ratio "${TPS[$j]:-}" "${TPS[$b]:-}")" \
      "$(fmt_ms "${LAT[$d]:-}")" "$(fmt_ms "${LAT[$b]:-}")" "$(fmt_ms "${LAT[$g]:-}")" \
      "$(fmt_added_us "${LAT[$b]:-}" "${LAT[$d]:-}")" "$(fmt_added_us "${LAT[$r]:-}" "${LAT[$d]:-}")" \
      "$(fmt_added_us "${LAT[$j]:-}" "${LAT[$d]:-}")" "$(fmt_added_us "${LAT[$g]:-}" "${LAT[$d]:-}")" \
      "${CPU[$b]:--}" "${CPU[$r]:--}" "${CPU[$j]:--}" "${CPU[$g]:--}"
  done
done
echo
echo "direct/pgbouncer/relay/recording/gatehouse = TPS (relay: the bare SwiftNIO byte relay, the floor of the"
echo "gateway's stack; recording: the same relay writing each batch of client bytes to a hash-chained journal"
echo "before forwarding it, the floor of recording before forwarding);"
echo "GH/dir, GH/PgB, relay/PgB, rec/PgB = TPS ratios; +µs = average latency added over direct;"
echo "cpu/tx = the proxy process's CPU time (user+system) per pgbench transaction, in µs."

if [ -n "${MASKED_TPS[*]+set}" ]; then   # (set -u: an empty associative array counts as unset)
  echo
  echo "Masked variant (SELECT of one customer's six columns; email and card masked by column, SSN and phone detectors on every value):"
  echo
  printf '| %2s | %14s | %14s | %13s | %12s | %12s |\n' c "unmasked TPS" "masked TPS" "masked/unm." "unm. cpu/tx" "masked cpu/tx"
  printf '|%s|%s|%s|%s|%s|%s|\n' "---:" "---------------:" "---------------:" "--------------:" "-------------:" "--------------:"
  for clients in $CLIENT_COUNTS; do
    u="customers/$clients/gatehouse"; m="customers/$clients/gatehouse-masked"
    printf '| %2s | %14s | %14s | %13s | %12s | %12s |\n' "$clients" \
      "$(fmt_tps "$(awk -v a="${MASKED_TPS[$u]:-0}" -v r="$MASKED_ROUNDS" 'BEGIN { if (a > 0) print a / r }')")" \
      "$(fmt_tps "$(awk -v a="${MASKED_TPS[$m]:-0}" -v r="$MASKED_ROUNDS" 'BEGIN { if (a > 0) print a / r }')")" \
      "$(fmt_ratio "${MASKED_TPS[$m]:-}" "${MASKED_TPS[$u]:-}")" \
      "$(awk -v a="${MASKED_CPU[$u]:-}" 'BEGIN { if (a != "") printf "%.0f", a; else print "-" }')" \
      "$(awk -v a="${MASKED_CPU[$m]:-}" 'BEGIN { if (a != "") printf "%.0f", a; else print "-" }')"
  done
  echo "Target: masking costs under 15% of throughput (masked/unm. at least 0.85x)."
fi

# ---------------------------------------------------------------------------------------------
# The audit trail

AUDIT_OK=1
if [[ " $TARGETS " == *" gatehouse "* ]]; then
  echo
  say "stopping Gatehouse (SIGTERM) and verifying its audit trail"
  kill -TERM "$GATEWAY_PID" 2>/dev/null || true
  stopped=0
  for _ in $(seq 600); do
    kill -0 "$GATEWAY_PID" 2>/dev/null || { stopped=1; break; }
    sleep 0.1
  done
  if [ "$stopped" = 1 ]; then
    gw_rc=0; wait "$GATEWAY_PID" || gw_rc=$?
    GATEWAY_PID=""
    echo "gatehouse serve exited with status $gw_rc after SIGTERM"
    [ "$gw_rc" -eq 0 ] || AUDIT_OK=0
  else
    echo "gatehouse serve did not exit within 60 s of SIGTERM; log tail:"
    tail -n 30 "$GATEWAY_LOG"
    AUDIT_OK=0
  fi
  if [ "$stopped" = 1 ]; then
    verify_rc=0
    verify_out="$("$BIN" audit verify --config "$GATEWAY_CONFIG" 2>&1)" || verify_rc=$?
    echo "gatehouse audit verify: $verify_out"
    [ "$verify_rc" -eq 0 ] || AUDIT_OK=0
    audit_db="$WORK/gatehouse/state/audit.sqlite"
    if command -v sqlite3 >/dev/null && [ -f "$audit_db" ]; then
      echo "events by kind:"
      sqlite3 -readonly "$audit_db" "SELECT kind, count(*) FROM events GROUP BY kind ORDER BY kind" \
        | awk -F'|' '{ printf "  %-16s %9d\n", $1, $2 }'
      requests="$(sqlite3 -readonly "$audit_db" "SELECT count(*) FROM events WHERE kind IN ('sql.query', 'sql.execute')")"
      echo "statement (request) events: $requests; statements pgbench completed through the gateway: $GATEWAY_STATEMENTS (plus pgbench's own setup statements)"
      if [ "$requests" -lt "$GATEWAY_STATEMENTS" ]; then
        echo "MISSING: fewer statement events than statements pgbench completed"
        AUDIT_OK=0
      fi
    fi
  fi
fi

echo
if [ "${#FAILURES[@]}" -gt 0 ]; then
  echo "FAILED runs: ${FAILURES[*]}"
fi
if [ "${#FAILURES[@]}" -gt 0 ] || [ "$AUDIT_OK" != 1 ]; then
  exit 1
fi
echo "all runs completed; audit trail verified"
