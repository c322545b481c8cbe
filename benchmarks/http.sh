#!/usr/bin/env bash
# Gatehouse HTTP gateway benchmark: wrk directly against a small upstream, through nginx as a
# reverse proxy, and through Gatehouse with full recording, in one run on this machine.
#
#   ./benchmarks/http.sh                   # builds (or reuses) the release binary, ~2 minutes
#   BENCH_SECONDS=20 ./benchmarks/http.sh  # longer runs
#
# Everything on 127.0.0.1:
#   1. the upstream: nginx answering GET /config/db.pool_size with a small JSON document, and only
#      when the request carries the service key (X-Api-Key) -- the "small upstream";
#   2. nginx as a reverse proxy in front of it (keep-alive pool, adds the key, strips the client's
#      Authorization), the peer to beat;
#   3. Gatehouse (release build) in front of it: token check, request rules, the request event
#      committed before forwarding, credential injection, the response event after;
#   4. the floor of Gatehouse's stack: a bare Hummingbird + AsyncHTTPClient proxy that injects the
#      key and nothing else (benchmarks/baseline, `gatehouse-baseline http-proxy`), and the same
#      proxy on SwiftNIO's HTTP/1 codec alone (`nio-http-proxy`): what a hand-written data path
#      could reach.
#   Then wrk at 1 connection (-t1 -c1) and at 32 connections (-t2 -c32) against each target; a
#   table of requests/s and average latency with the ratios Gatehouse/direct and Gatehouse/nginx;
#   then stops Gatehouse with SIGTERM, verifies its audit trail and checks that it holds one
#   request event per request wrk completed through it.
#
# Environment:
#   BENCH_SECONDS        length of each wrk run (default 10)
#   BENCH_CONNECTIONS    connection counts (default "1 32")
#   BENCH_TARGETS        which of "direct nginx nio-proxy hb-proxy gatehouse" to run (default all five)
#   GATEHOUSE_BIN        use this gatehouse binary instead of building .build-release/release/gatehouse
#   BENCH_SKIP_BUILD=1   reuse .build-release/release/gatehouse without running swift build
#   BENCH_KEEP=1         keep the work directory
#
# Exit status: 0 when every run completed without socket errors or non-2xx answers and the audit
# trail verified with at least one request event per request; 1 otherwise.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

DURATION="${BENCH_SECONDS:-10}"
CONNECTION_COUNTS="${BENCH_CONNECTIONS:-1 32}"
TARGETS="${BENCH_TARGETS:-direct nginx nio-proxy hb-proxy gatehouse}"
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'http.sh: %s\n' "$*" >&2; exit 1; }

command -v wrk >/dev/null || die "wrk not found: ./scripts/install-deps.sh --bench (or apt-get install -y wrk)"
[ -x "$NGINX" ] || die "nginx not found: ./scripts/install-deps.sh --bench (or apt-get install -y nginx-light)"
command -v curl >/dev/null || die "curl not found"

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
[ -x "$BASELINE" ] || die "no gatehouse-baseline binary at $BASELINE"
[ -x "$BIN" ] || die "no gatehouse binary at $BIN"
REVISION="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ -z "${GATEHOUSE_BIN:-}" ] && [ -n "$(git -C "$ROOT" status --porcelain -- Sources Package.swift 2>/dev/null)" ]; then
  REVISION="$REVISION+uncommitted"
fi
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')"

# ---------------------------------------------------------------------------------------------
# Work directory and cleanup

WORK="$(mktemp -d /tmp/gatehouse-httpbench.XXXXXX)"
chmod 755 "$WORK"
GATEWAY_PID=""
BASELINE_PID=""
NIO_PROXY_PID=""
NGINX_PIDFILE="$WORK/nginx/nginx.pid"

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if [ -n "$GATEWAY_PID" ] && kill -0 "$GATEWAY_PID" 2>/dev/null; then
    kill -TERM "$GATEWAY_PID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$GATEWAY_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$GATEWAY_PID" 2>/dev/null || true
  fi
  if [ -n "$BASELINE_PID" ]; then { kill -KILL "$BASELINE_PID"; wait "$BASELINE_PID"; } 2>/dev/null || true; fi
  if [ -n "$NIO_PROXY_PID" ]; then { kill -KILL "$NIO_PROXY_PID"; wait "$NIO_PROXY_PID"; } 2>/dev/null || true; fi
  if [ -f "$NGINX_PIDFILE" ]; then
    kill -TERM "$(cat "$NGINX_PIDFILE")" 2>/dev/null || true
    sleep 0.3
  fi
  if [ "${BENCH_KEEP:-0}" = 1 ]; then echo "work directory kept: $WORK" >&2; else rm -rf "$WORK"; fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

UPSTREAM_PORT="$(free_port)"
PROXY_PORT="$(free_port)"
GATEWAY_PORT="$(free_port)"
BASELINE_PORT="$(free_port)"
NIO_PROXY_PORT="$(free_port)"
ADMIN_PORT="$(free_port)"
API_KEY="$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
export GATEHOUSE_BENCH_API_KEY="$API_KEY"

# ---------------------------------------------------------------------------------------------
# nginx: the upstream and the reverse proxy, one master process

say "starting nginx: upstream on 127.0.0.1:$UPSTREAM_PORT, reverse proxy on 127.0.0.1:$PROXY_PORT"
mkdir -p "$WORK/nginx/tmp"
NGINX_USER=""
if [ "$(id -u)" -eq 0 ]; then NGINX_USER="user $(id -un nobody 2>/dev/null || echo nobody) $(id -gn nobody 2>/dev/null || echo nogroup);"; fi
cat >"$WORK/nginx/nginx.conf" <<CONF
$NGINX_USER
worker_processes auto;
pid $NGINX_PIDFILE;
error_log $WORK/nginx/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx/tmp/body;
  proxy_temp_path $WORK/nginx/tmp/proxy;
  fastcgi_temp_path $WORK/nginx/tmp/fastcgi;
  uwsgi_temp_path $WORK/nginx/tmp/uwsgi;
  scgi_temp_path $WORK/nginx/tmp/scgi;
  keepalive_requests 1000000;

  # The small upstream: a config service that wants its service key.
  server {
    listen 127.0.0.1:$UPSTREAM_PORT;
    location / {
      if (\$http_x_api_key != "$API_KEY") { return 401 '{"error":"a valid X-Api-Key is required"}\n'; }
      default_type application/json;
      return 200 '{"key":"db.pool_size","value":20}\n';
    }
  }

  upstream config_api {
    server 127.0.0.1:$UPSTREAM_PORT;
    keepalive 64;
  }

  # The peer: a plain reverse proxy that injects the key (no identity, no policy, no audit).
  server {
    listen 127.0.0.1:$PROXY_PORT;
    location / {
      proxy_pass http://config_api;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Authorization "";
      proxy_set_header X-Api-Key "$API_KEY";
      proxy_set_header X-Forwarded-For \$remote_addr;
    }
  }
}
CONF
"$NGINX" -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" || die "nginx did not start (see $WORK/nginx/error.log)"
for _ in $(seq 50); do [ -f "$NGINX_PIDFILE" ] && break; sleep 0.1; done

# ---------------------------------------------------------------------------------------------
# The floor: a bare Hummingbird + AsyncHTTPClient proxy, what any proxy on Gatehouse's stack costs

say "starting the bare Hummingbird + AsyncHTTPClient proxy on 127.0.0.1:$BASELINE_PORT"
"$BASELINE" http-proxy "$BASELINE_PORT" "http://127.0.0.1:$UPSTREAM_PORT" X-Api-Key GATEHOUSE_BENCH_API_KEY >"$WORK/baseline.log" 2>&1 &
BASELINE_PID=$!
"$BASELINE" nio-http-proxy "$NIO_PROXY_PORT" 127.0.0.1 "$UPSTREAM_PORT" X-Api-Key GATEHOUSE_BENCH_API_KEY >"$WORK/nio-proxy.log" 2>&1 &
NIO_PROXY_PID=$!
for _ in $(seq 100); do grep -q '^ready' "$WORK/baseline.log" 2>/dev/null && grep -q '^ready' "$WORK/nio-proxy.log" 2>/dev/null && break; sleep 0.1; done

# ---------------------------------------------------------------------------------------------
# Gatehouse

say "starting Gatehouse ($BIN) on 127.0.0.1:$GATEWAY_PORT"
mkdir -p "$WORK/gatehouse"
GATEWAY_CONFIG="$WORK/gatehouse/gatehouse.yaml"
cat >"$GATEWAY_CONFIG" <<YAML
dev: true
gateway:
  node: bench
  state_dir: $WORK/gatehouse/state
admin:
  listen: 127.0.0.1:$ADMIN_PORT
http:
  listen: 127.0.0.1:$GATEWAY_PORT
connections:
  - name: config-api
    type: http
    upstream: http://127.0.0.1:$UPSTREAM_PORT
    credential:
      header: X-Api-Key
      value: env:GATEHOUSE_BENCH_API_KEY
    allow:
      groups: [dev]
    requests:
      - name: read-config
        methods: [GET]
        paths: ["/config/*"]
YAML
GATEWAY_LOG="$WORK/gatehouse/gateway.log"
"$BIN" serve --config "$GATEWAY_CONFIG" >"$WORK/gatehouse/stdout.log" 2>"$GATEWAY_LOG" &
GATEWAY_PID=$!
for _ in $(seq 200); do
  grep -q '^gatehouse ready:' "$WORK/gatehouse/stdout.log" 2>/dev/null && break
  kill -0 "$GATEWAY_PID" 2>/dev/null || break
  sleep 0.1
done
grep -q '^gatehouse ready:' "$WORK/gatehouse/stdout.log" 2>/dev/null || { tail -n 30 "$GATEWAY_LOG" >&2; die "Gatehouse did not start"; }
TOKEN="$("$BIN" dev token --config "$GATEWAY_CONFIG" --subject bench --groups dev --actor bench-agent --ttl 86400)" \
  || die "gatehouse dev token failed"

url_of() {
  case "$1" in
    direct) echo "http://127.0.0.1:$UPSTREAM_PORT/config/db.pool_size" ;;
    nginx) echo "http://127.0.0.1:$PROXY_PORT/config/db.pool_size" ;;
    hb-proxy) echo "http://127.0.0.1:$BASELINE_PORT/config/db.pool_size" ;;
    nio-proxy) echo "http://127.0.0.1:$NIO_PROXY_PORT/config/db.pool_size" ;;
    gatehouse) echo "http://127.0.0.1:$GATEWAY_PORT/c/config-api/config/db.pool_size" ;;
  esac
}
headers_of() {
  case "$1" in
    direct) echo "X-Api-Key: $API_KEY" ;;
    *) echo "Authorization: Bearer $TOKEN" ;;
  esac
}
pid_of() {
  case "$1" in
    gatehouse) echo "$GATEWAY_PID" ;;
    hb-proxy) echo "$BASELINE_PID" ;;
    nio-proxy) echo "$NIO_PROXY_PID" ;;
    *) echo "" ;;
  esac
}

# Every target answers the same document before anything is measured.
for target in $TARGETS; do
  body="$(curl -sS -H "$(headers_of "$target")" "$(url_of "$target")")" || die "$target: request failed"
  [ "$body" = '{"key":"db.pool_size","value":20}' ] || die "$target answered: $body"
done

# ---------------------------------------------------------------------------------------------
# Runs

declare -A RPS LATENCY CPU
FAILED=0
GATEWAY_REQUESTS=0

cpu_ticks() {  # user+system clock ticks of a process and its threads
  [ -n "$1" ] && [ -r "/proc/$1/stat" ] && awk '{ print $14 + $15 }' "/proc/$1/stat" || echo 0
}

run_wrk() {
  local target="$1" connections="$2" threads=$(( $2 < 2 ? 1 : 2 ))
  local out="$WORK/wrk-$target-$connections.txt" pid ticks_before ticks_after
  pid="$(pid_of "$target")"
  ticks_before="$(cpu_ticks "$pid")"
  if ! timeout $(( DURATION + 60 )) wrk -t"$threads" -c"$connections" -d"${DURATION}s" --latency \
      -H "$(headers_of "$target")" "$(url_of "$target")" >"$out" 2>&1; then
    echo "    $target c=$connections: wrk failed" >&2; tail -n 20 "$out" >&2; FAILED=1; RPS["$target/$connections"]=FAIL; return
  fi
  ticks_after="$(cpu_ticks "$pid")"
  local rps latency requests errors non2xx
  rps="$(awk '/^Requests\/sec:/ { print $2 }' "$out")"
  latency="$(awk '/^    Latency/ { print $2 }' "$out")"
  requests="$(awk '/requests in/ { print $1 }' "$out")"
  errors="$(grep -c 'Socket errors' "$out" || true)"
  non2xx="$(awk '/Non-2xx or 3xx responses:/ { print $5 }' "$out")"
  if [ "$errors" != 0 ] || [ -n "$non2xx" ]; then
    echo "    $target c=$connections: errors (socket errors or non-2xx answers)" >&2; cat "$out" >&2; FAILED=1
  fi
  RPS["$target/$connections"]="$rps"
  LATENCY["$target/$connections"]="$latency"
  if [ -n "$pid" ] && [ -n "$requests" ] && [ "$requests" -gt 0 ]; then
    CPU["$target/$connections"]=$(( (ticks_after - ticks_before) * 1000000 / $(getconf CLK_TCK) / requests ))
  fi
  [ "$target" = gatehouse ] && GATEWAY_REQUESTS=$(( GATEWAY_REQUESTS + requests ))
  printf '    %-9s c=%-3s %10s req/s  latency %s\n' "$target" "$connections" "$rps" "$latency" >&2
}

say "wrk runs of ${DURATION}s: connections [$CONNECTION_COUNTS], targets [$TARGETS]"
for connections in $CONNECTION_COUNTS; do
  for target in $TARGETS; do
    run_wrk "$target" "$connections"
  done
done

# ---------------------------------------------------------------------------------------------
# Report

to_us() {  # wrk latency (e.g. 85.00us, 1.20ms, 2.00s) in microseconds
  awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) print n; else if (v ~ /ms$/) print n * 1000; else if (v ~ /s$/) print n * 1000000; else print "" }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2fx", a / b; else print "-" }'; }

echo
echo "wrk ${DURATION}s per run, $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ), gatehouse $REVISION (release)"
echo "load average before: $LOAD_BEFORE, after: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')"
echo
printf '| %3s | %10s | %10s | %10s | %10s | %10s | %8s | %8s | %8s | %8s | %9s | %9s | %9s | %9s | %9s | %9s | %9s | %10s |\n' \
  c direct nginx nio-proxy hb-proxy gatehouse "GH/dir" "GH/nginx" "nio/ngx" "hb/ngx" "dir µs" "nginx µs" "nio µs" "hb µs" "GH µs" \
  "nio cpu" "hb cpu" "GH cpu/req"
printf '|%s|\n' "----:|-----------:|-----------:|-----------:|-----------:|-----------:|---------:|---------:|---------:|---------:|----------:|----------:|----------:|----------:|----------:|----------:|----------:|-----------:"
for connections in $CONNECTION_COUNTS; do
  d="direct/$connections"; n="nginx/$connections"; g="gatehouse/$connections"; h="hb-proxy/$connections"; o="nio-proxy/$connections"
  printf '| %3s | %10s | %10s | %10s | %10s | %10s | %8s | %8s | %8s | %8s | %9s | %9s | %9s | %9s | %9s | %9s | %9s | %10s |\n' "$connections" \
    "${RPS[$d]:--}" "${RPS[$n]:--}" "${RPS[$o]:--}" "${RPS[$h]:--}" "${RPS[$g]:--}" \
    "$(ratio "${RPS[$g]:-}" "${RPS[$d]:-}")" "$(ratio "${RPS[$g]:-}" "${RPS[$n]:-}")" \
    "$(ratio "${RPS[$o]:-}" "${RPS[$n]:-}")" "$(ratio "${RPS[$h]:-}" "${RPS[$n]:-}")" \
    "$(to_us "${LATENCY[$d]:-}")" "$(to_us "${LATENCY[$n]:-}")" "$(to_us "${LATENCY[$o]:-}")" "$(to_us "${LATENCY[$h]:-}")" \
    "$(to_us "${LATENCY[$g]:-}")" "${CPU[$o]:--}" "${CPU[$h]:--}" "${CPU[$g]:--}"
done
echo
echo "requests/s of each target; nio-proxy: a proxy on SwiftNIO's HTTP/1 codec alone; hb-proxy: a bare Hummingbird +"
echo "AsyncHTTPClient proxy (the floor of Gatehouse's stack); ratios of throughput; µs = wrk's average latency;"
echo "cpu/req = the proxy process's CPU time (user+system) per request, in µs."

if [[ " $TARGETS " == *" gatehouse "* ]]; then
  echo
  say "stopping Gatehouse (SIGTERM) and verifying its audit trail"
  kill -TERM "$GATEWAY_PID"
  status=0
  wait "$GATEWAY_PID" || status=$?
  GATEWAY_PID=""
  echo "gatehouse serve exited with status $status after SIGTERM"
  if ! "$BIN" audit verify --config "$GATEWAY_CONFIG"; then FAILED=1; fi
  if command -v sqlite3 >/dev/null; then
    requests_recorded="$(sqlite3 -readonly "$WORK/gatehouse/state/audit.sqlite" "SELECT count(*) FROM events WHERE kind = 'http.request'")"
    responses_recorded="$(sqlite3 -readonly "$WORK/gatehouse/state/audit.sqlite" "SELECT count(*) FROM events WHERE kind = 'http.response'")"
    echo "request events: $requests_recorded, response events: $responses_recorded; requests wrk completed through the gateway: $GATEWAY_REQUESTS"
    if [ "$requests_recorded" -lt "$GATEWAY_REQUESTS" ]; then
      echo "FAIL: fewer request events than requests" >&2
      FAILED=1
    fi
  fi
fi

[ "$FAILED" = 0 ] && echo "all runs completed; audit trail verified" || { echo "some runs FAILED" >&2; exit 1; }
