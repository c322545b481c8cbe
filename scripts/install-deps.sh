#!/usr/bin/env bash
# Installs what building and testing Gatehouse needs on a fresh Debian machine. Idempotent: only
# missing packages are installed. `--demo` installs what the demo needs, `--bench` what the
# benchmarks compare against; no option, what the tests need.
set -euo pipefail

BUILD_PACKAGES=(libsqlite3-dev libpg-query-dev)
DEMO_PACKAGES=(postgresql-15 postgresql-client-15 openssl curl python3)
BENCH_PACKAGES=(postgresql-15 postgresql-client-15 pgbouncer wrk nginx-light curl sqlite3)
# PostgreSQL 15 (server, psql, pgbench), PgJDBC with a JDK to compile its test client, openssl for
# test certificates, and the OIDC provider the identity tests use.
# curl drives the HTTP gateway.
TEST_PACKAGES=(sqlite3 glewlwyd dbconfig-sqlite3 postgresql-15 postgresql-client-15 libpostgresql-jdbc-java openjdk-17-jdk-headless openssl curl)
PYTHON_PACKAGES=(pytest requests cryptography "psycopg[binary]" asyncpg "mcp==2.3.0")

packages=("${BUILD_PACKAGES[@]}")
case "${1:-}" in
  --demo) packages+=("${DEMO_PACKAGES[@]}") ;;
  --bench) packages+=("${BENCH_PACKAGES[@]}") ;;
  *) packages+=("${TEST_PACKAGES[@]}") ;;
esac

missing=()
for package in "${packages[@]}"; do
  dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing Debian packages: ${missing[*]} (run as root, or install them)" >&2
    exit 1
  fi
  echo "==> installing ${missing[*]}"
  apt-get update -qq
  # glewlwyd's post-install tries to start its system service; nothing here needs it.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ -z "${1:-}" ]; then
  python3 -m pip install -q --disable-pip-version-check "${PYTHON_PACKAGES[@]}"
fi
