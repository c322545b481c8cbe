#!/usr/bin/env bash
# Builds Gatehouse and runs it on the demo configuration (examples/demo.yaml): the built-in
# development issuer on loopback, state under var/demo. Runs until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

export GATEHOUSE_ADMIN_PORT="${GATEHOUSE_ADMIN_PORT:-9090}"
CONFIG=examples/demo.yaml

./scripts/install-deps.sh --build-only
echo "==> building gatehouse (first build of the dependencies takes a few minutes)"
swift build --product gatehouse 2>&1 | { grep -Ev '^\[[0-9]+/[0-9]+\]|swift-distributed-tracing|CMakeLists.txt' || true; }
BIN=.build/debug/gatehouse
[ -x "$BIN" ] || { echo "build failed" >&2; exit 1; }

"$BIN" check --config "$CONFIG"

OUT="$(mktemp)"
"$BIN" serve --config "$CONFIG" >"$OUT" &
PID=$!
# A background job of a script ignores SIGINT, so Ctrl-C is passed on as SIGTERM.
trap 'kill -TERM $PID 2>/dev/null; wait $PID; rm -f "$OUT"; exit 0' INT TERM

for _ in $(seq 1 100); do
  grep -q '^gatehouse ready' "$OUT" && break
  kill -0 "$PID" 2>/dev/null || { echo "gatehouse exited; see the log above" >&2; exit 1; }
  sleep 0.1
done
cat "$OUT"
ADMIN="http://127.0.0.1:${GATEHOUSE_ADMIN_PORT}"
cat <<TEXT

Gatehouse is running (Ctrl-C stops it and seals the audit trail with a signed checkpoint).

  Get a token for a person and the agent acting for them:
    export TOKEN=\$($BIN dev token --config $CONFIG --subject alice --groups dev --actor claude-code)
  Call the gateway with it (the attempt is recorded):
    curl -H "Authorization: Bearer \$TOKEN" $ADMIN/v1/whoami
  A service-account key:
    $BIN keys create --config $CONFIG --name ci-bot --groups ci
  The audit trail:
    $BIN audit list --config $CONFIG
    $BIN audit verify --config $CONFIG
  Health, readiness, metrics:
    curl $ADMIN/readyz ; curl $ADMIN/metrics
TEXT
wait "$PID"
