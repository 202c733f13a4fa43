#!/usr/bin/env bash
# The demo page in a real browser: Debian's Chromium (/usr/bin/chromium, headless) driven by
# playwright-core (tests/browser). Installs Chromium with apt when it is missing, builds and
# starts the release demo server on a free port, runs the test against the page the server
# serves, and stops the server with Ctrl-C (SIGINT). Screenshots land in target/browser/.
# Never downloads a browser of its own.
set -euo pipefail
cd "$(dirname "$0")/.."

CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$CHROMIUM" ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "browser_check: installing Debian's chromium"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core >/dev/null
  else
    echo "browser_check: no Chromium at $CHROMIUM and apt-get is not usable here: install Debian's chromium"
    exit 1
  fi
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "browser_check: Node.js 20+ and npm are needed (not found)"; exit 1
fi

(cd tests/browser && npm ci --no-audit --no-fund)
cargo build --release --locked --example server

port=$(node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); })')
log=$(mktemp)
./target/release/examples/server --addr "127.0.0.1:$port" >"$log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done
kill -0 $pid 2>/dev/null || { echo "browser_check: the server did not start:"; cat "$log"; exit 1; }

status=0
(cd tests/browser && CHROMIUM="$CHROMIUM" CHAT_HTTP_URL="http://127.0.0.1:$port" node --test --test-timeout=180000 demo.test.js) || status=$?

kill -INT $pid
for _ in $(seq 100); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done
if kill -0 $pid 2>/dev/null; then echo "browser_check: the server did not stop on Ctrl-C"; exit 1; fi
wait $pid || { echo "browser_check: the server exited with an error:"; cat "$log"; exit 1; }
if [ $status -ne 0 ]; then echo "browser_check: the browser test failed; the server's log:"; tail -n 40 "$log"; exit $status; fi
echo "ok: the demo page passed in Chromium; screenshots in target/browser/"
