#!/usr/bin/env bash
# Installs what the tests need, builds, and runs every test: Swift unit tests, then integration
# tests that drive the real gatehouse binary against a real OIDC provider (glewlwyd) on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh

echo "==> building (debug, with tests)"
swift build --build-tests 2>&1 | { grep -Ev '^\[[0-9]+/[0-9]+\]|swift-distributed-tracing|CMakeLists.txt' || true; }

echo "==> unit tests"
swift test --skip-build

echo "==> integration tests"
export GATEHOUSE_BIN
GATEHOUSE_BIN="$(swift build --show-bin-path)/gatehouse"
python3 -m pytest -p no:cacheprovider -q tests/integration
