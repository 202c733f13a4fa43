#!/usr/bin/env bash
# The JavaScript client's tests (clients/js, `node --test`) against the real demo server,
# which each test file starts from the release build (and stops).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "js_check: Node.js 20+ and npm are needed (not found)"; exit 1
fi
if ! node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)'; then
  echo "js_check: Node.js 20+ is needed, found $(node --version)"; exit 1
fi

cargo build --release --locked --example server
(cd clients/js && npm ci --no-audit --no-fund)
cd clients/js
CHAT_SERVER_BIN="${CHAT_SERVER_BIN:-$PWD/../../target/release/examples/server}" node --test --test-timeout=120000 test/*.test.js
