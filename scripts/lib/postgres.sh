# shellcheck shell=bash
# A throwaway PostgreSQL 15 for the demo, on 127.0.0.1 only. Source this file, then:
#
#   export GATEHOUSE_DEMO_DB_PASSWORD=...      # the upstream password the gateway will hold
#   pg_start var/demo-pg 5433                  # fresh cluster, role gh_scram, database app
#   pg_psql var/demo-pg -c 'SELECT count(*) FROM customers'   # superuser, over the private socket
#   pg_stop var/demo-pg
#
# pg_start always starts from an empty cluster (about 1.5 s): database `app`, owned by gh_scram,
# loaded from examples/demo-schema.sql. TCP accepts only gh_scram from 127.0.0.1, with
# SCRAM-SHA-256; the superuser is reachable only through a Unix socket in DIR/cluster/sock (mode
# 0700, peer authentication). As root, initdb/pg_ctl run as the `postgres` user (initdb refuses
# root); if that user cannot reach DIR, the cluster lives in a mktemp directory under /tmp whose
# path is written to DIR/cluster.path. Quiet on success; on failure the log tail goes to stderr.
# Binaries: $GATEHOUSE_PG_BINDIR or /usr/lib/postgresql/15/bin (Debian postgresql-15).

_PG_LIB_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PG_BINDIR="${GATEHOUSE_PG_BINDIR:-/usr/lib/postgresql/15/bin}"

# Runs a command as the cluster's owner: `postgres` when we are root, ourselves otherwise.
_pg_as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

# The directory holding data/, sock/ and postgres.log for DIR.
_pg_cluster() {
  local dir="$1"
  if [ -f "$dir/cluster.path" ]; then
    cat "$dir/cluster.path"
  else
    printf '%s/cluster\n' "$(cd "$dir" && pwd)"
  fi
}

# _pg_fail MESSAGE LOG...: the message and the tail of each non-empty log on stderr.
_pg_fail() {
  echo "pg_start: $1" >&2; shift
  local f
  for f in "$@"; do
    if [ -s "$f" ]; then echo "--- tail of $f ---" >&2; tail -n 25 "$f" >&2; fi
  done
  return 1
}

# pg_psql DIR [psql args...]: psql as the cluster superuser over the private Unix socket.
pg_psql() {
  local cluster
  cluster="$(_pg_cluster "$1")"; shift
  local port
  port="$(sed -n 's/^port = //p' "$cluster/data/postgresql.gatehouse.conf" 2>/dev/null)"
  _pg_as_owner env -u PGHOST -u PGPORT -u PGUSER -u PGPASSWORD -u PGDATABASE -u PGSERVICE \
    "$PG_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h "$cluster/sock" -p "${port:-5432}" -d postgres "$@"
}

# pg_start DIR PORT: a fresh cluster in DIR listening on 127.0.0.1:PORT.
pg_start() {
  local dir="$1" port="$2"
  local password="${GATEHOUSE_DEMO_DB_PASSWORD:-}"
  if [ -z "$password" ]; then
    echo "pg_start: set GATEHOUSE_DEMO_DB_PASSWORD (the password for the upstream role gh_scram)" >&2
    return 1
  fi
  if [ ! -x "$PG_BINDIR/initdb" ]; then
    echo "pg_start: $PG_BINDIR/initdb not found: apt-get install -y postgresql-15" >&2
    return 1
  fi
  mkdir -p "$dir"
  pg_stop "$dir" 2>/dev/null || true          # a server left over from an earlier run

  local cluster old
  old="$(_pg_cluster "$dir")"
  [ -n "$old" ] && rm -rf "$old"               # throwaway: every start begins empty
  rm -f "$dir/cluster.path"
  if [ "$(id -u)" -eq 0 ] && ! runuser -u postgres -- test -x "$(cd "$dir" && pwd)"; then
    cluster="$(mktemp -d /tmp/gatehouse-demo-pg.XXXXXX)"
    printf '%s\n' "$cluster" >"$dir/cluster.path"
  else
    cluster="$(cd "$dir" && pwd)/cluster"
    mkdir -p "$cluster"
  fi
  mkdir -p "$cluster/sock"
  chmod 700 "$cluster" "$cluster/sock"
  [ "$(id -u)" -eq 0 ] && chown -R postgres:postgres "$cluster"

  # Superuser = the OS user running initdb (postgres as root), reachable only via peer auth.
  if ! (cd "$cluster" && _pg_as_owner "$PG_BINDIR/initdb" -D "$cluster/data" --auth-local=peer \
        --auth-host=reject -E UTF8 --no-locale --no-sync --no-instructions) >"$cluster/initdb.log" 2>&1; then
    _pg_fail "initdb failed" "$cluster/initdb.log"; return 1
  fi
  _pg_as_owner tee "$cluster/data/pg_hba.conf" >/dev/null <<HBA
# Written by scripts/lib/postgres.sh: superuser via the private socket only, gh_scram via TCP.
local all all peer
host  all gh_scram 127.0.0.1/32 scram-sha-256
host  all all      0.0.0.0/0    reject
host  all all      ::/0         reject
HBA
  _pg_as_owner tee "$cluster/data/postgresql.gatehouse.conf" >/dev/null <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$cluster/sock'
unix_socket_permissions = 0700
password_encryption = 'scram-sha-256'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
log_connections = on
log_line_prefix = '%m [%p] %q%u@%d '
lc_messages = 'C'
timezone = 'UTC'
ssl = off
CONF
  echo "include = 'postgresql.gatehouse.conf'" | _pg_as_owner tee -a "$cluster/data/postgresql.conf" >/dev/null

  if ! (cd "$cluster" && _pg_as_owner "$PG_BINDIR/pg_ctl" -D "$cluster/data" -l "$cluster/postgres.log" \
        -w -t 30 start) >"$cluster/pg_ctl.log" 2>&1; then
    _pg_fail "PostgreSQL did not start on 127.0.0.1:$port" "$cluster/pg_ctl.log" "$cluster/postgres.log"; return 1
  fi

  # The password goes in on stdin (never on a command line); quotes are doubled for SQL.
  local quoted="${password//\'/\'\'}"
  if ! pg_psql "$dir" >"$cluster/setup.log" 2>&1 <<SQL
CREATE ROLE gh_scram LOGIN PASSWORD '$quoted';
CREATE DATABASE app OWNER gh_scram;
SQL
  then
    _pg_fail "creating role gh_scram / database app failed" "$cluster/setup.log" "$cluster/postgres.log"; return 1
  fi
  # The schema is loaded as gh_scram (so it owns the tables), over the socket via SET ROLE.
  if ! { echo "SET ROLE gh_scram;"; cat "$_PG_LIB_ROOT/examples/demo-schema.sql"; } \
      | pg_psql "$dir" -d app >>"$cluster/setup.log" 2>&1; then
    _pg_fail "loading examples/demo-schema.sql failed" "$cluster/setup.log"; return 1
  fi
}

# pg_stop DIR: stops the cluster started by pg_start DIR (fast, then immediate). Keeps the files.
pg_stop() {
  local dir="$1" cluster
  [ -d "$dir" ] || return 0
  cluster="$(_pg_cluster "$dir")"
  [ -f "$cluster/data/postmaster.pid" ] || return 0
  (cd "$cluster" && _pg_as_owner "$PG_BINDIR/pg_ctl" -D "$cluster/data" -m fast -w -t 20 stop) >/dev/null 2>&1 \
    || (cd "$cluster" && _pg_as_owner "$PG_BINDIR/pg_ctl" -D "$cluster/data" -m immediate -w stop) >/dev/null 2>&1
}
