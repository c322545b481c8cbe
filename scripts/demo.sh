#!/usr/bin/env bash
# Builds Gatehouse and runs it on the demo configuration (examples/demo.yaml): the built-in
# development issuer, a throwaway PostgreSQL with a sample customer schema behind the gateway on
# 127.0.0.1:15432, and a sample HTTP API (examples/sample_api.py) behind the gateway on
# 127.0.0.1:8080. Everything listens on loopback only. Runs until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

export GATEHOUSE_ADMIN_PORT="${GATEHOUSE_ADMIN_PORT:-9090}"
export GATEHOUSE_PG_PORT="${GATEHOUSE_PG_PORT:-15432}"
export GATEHOUSE_DEMO_DB_PORT="${GATEHOUSE_DEMO_DB_PORT:-15433}"
export GATEHOUSE_HTTP_PORT="${GATEHOUSE_HTTP_PORT:-8080}"
export GATEHOUSE_DEMO_API_PORT="${GATEHOUSE_DEMO_API_PORT:-9100}"
CONFIG=examples/demo.yaml
STATE=var/demo

./scripts/install-deps.sh --demo
echo "==> building gatehouse (first build of the dependencies takes a few minutes)"
swift build --product gatehouse 2>&1 | { grep -Ev '^\[[0-9]+/[0-9]+\]|swift-distributed-tracing|CMakeLists.txt' || true; }
BIN=.build/debug/gatehouse

mkdir -p "$STATE/tls"
if [ ! -f "$STATE/tls/cert.pem" ]; then
  openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj "/CN=localhost" \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$STATE/tls/key.pem" -out "$STATE/tls/cert.pem" 2>/dev/null
  chmod 600 "$STATE/tls/key.pem"
fi

# The database password exists only here and in the gateway's environment; clients never see it.
export GATEHOUSE_DEMO_DB_PASSWORD="${GATEHOUSE_DEMO_DB_PASSWORD:-$(openssl rand -hex 16)}"
# shellcheck source=lib/postgres.sh
. scripts/lib/postgres.sh
echo "==> starting a throwaway PostgreSQL on 127.0.0.1:$GATEHOUSE_DEMO_DB_PORT"
pg_start "$STATE/pg" "$GATEHOUSE_DEMO_DB_PORT"

# Likewise the sample API's service key.
export GATEHOUSE_DEMO_API_KEY="${GATEHOUSE_DEMO_API_KEY:-$(openssl rand -hex 16)}"
echo "==> starting the sample HTTP API on 127.0.0.1:$GATEHOUSE_DEMO_API_PORT"
SAMPLE_API_KEY="$GATEHOUSE_DEMO_API_KEY" python3 examples/sample_api.py --port "$GATEHOUSE_DEMO_API_PORT" >/dev/null &
API_PID=$!

"$BIN" check --config "$CONFIG"

OUT="$(mktemp)"
"$BIN" serve --config "$CONFIG" >"$OUT" &
PID=$!
cleanup() {
  kill -TERM "$PID" 2>/dev/null || true
  wait "$PID" 2>/dev/null || true
  kill -TERM "$API_PID" 2>/dev/null || true
  pg_stop "$STATE/pg" || true
  rm -f "$OUT"
}
# A background job of a script ignores SIGINT, so Ctrl-C is passed on as SIGTERM.
trap 'cleanup; exit 0' INT TERM
trap cleanup EXIT

for _ in $(seq 1 100); do
  grep -q '^gatehouse ready' "$OUT" && break
  kill -0 "$PID" 2>/dev/null || { echo "gatehouse exited; see the log above" >&2; exit 1; }
  sleep 0.1
done
cat "$OUT"
ADMIN="http://127.0.0.1:${GATEHOUSE_ADMIN_PORT}"
cat <<TEXT

Gatehouse is running (Ctrl-C stops it, seals the audit trail and removes the demo database).

  A person (alice) with an agent acting for her, connecting with psql through the gateway:
    export PGPASSWORD=\$($BIN dev token --config $CONFIG --subject alice --groups dev --actor claude-code)
    psql "host=127.0.0.1 port=$GATEHOUSE_PG_PORT dbname=demo user=alice sslmode=require"
  Someone not allowed on this connection is refused:
    PGPASSWORD=\$($BIN dev token --config $CONFIG --subject mallory --groups sales) psql "host=127.0.0.1 port=$GATEHOUSE_PG_PORT dbname=demo user=mallory sslmode=require"
  The sample HTTP API through the gateway (the gateway adds the API key; alice never sees it):
    API=http://127.0.0.1:$GATEHOUSE_HTTP_PORT/c/config-api
    curl -H "Authorization: Bearer \$PGPASSWORD" -H "Gatehouse-Intent: check the pool size" \$API/config
    curl -X PUT -H "Authorization: Bearer \$PGPASSWORD" --data '20' \$API/config/db.pool_size
  The agent may not delete config or export customers (403 naming the rule); alice herself may:
    curl -X DELETE -H "Authorization: Bearer \$PGPASSWORD" \$API/config/banner
    curl -H "Authorization: Bearer \$PGPASSWORD" \$API/export/customers
    curl -H "Authorization: Bearer \$($BIN dev token --config $CONFIG --subject alice --groups dev)" \$API/export/customers
  A delete by the agent waits for a person's approval (psql shows the review id, then waits):
    psql "host=127.0.0.1 port=$GATEHOUSE_PG_PORT dbname=demo user=alice sslmode=require" -c "DELETE FROM orders WHERE id = 1"
  bob, an approver, decides from another terminal (alice cannot approve her own request):
    export GATEHOUSE_TOKEN=\$($BIN dev token --config $CONFIG --subject bob --groups approvers)
    $BIN reviews list --config $CONFIG
    $BIN reviews approve --config $CONFIG REVIEW_ID      # or: reviews deny ... --reason "..."
  A command-line tool through the gateway (it holds the tool's database password; output is masked):
    GATEHOUSE_TOKEN=\$PGPASSWORD $BIN exec --config $CONFIG reports -- top-customers 3
  Gatehouse as the agent's MCP server (tools: list_connections, describe_connection, query,
  http_request, run_command, review_status), e.g. for Claude Code:
    claude mcp add --transport http gatehouse http://127.0.0.1:$GATEHOUSE_HTTP_PORT/mcp --header "Authorization: Bearer \$PGPASSWORD"
  What happened, session by session:
    $BIN sessions list --config $CONFIG
    $BIN sessions replay --config $CONFIG SESSION_ID
    $BIN audit verify --config $CONFIG
  The identity check over HTTP, health and metrics:
    curl -H "Authorization: Bearer \$PGPASSWORD" $ADMIN/v1/whoami
    curl $ADMIN/readyz ; curl $ADMIN/metrics
TEXT
wait "$PID"
