#!/usr/bin/env bash
# Starts the demo server the way the README says (release build), has two generic
# WebSocket clients (Python `websockets`) chat through it, then stops it with Ctrl-C (SIGINT)
# and checks that it shut down cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -c 'import websockets' 2>/dev/null || python3 -m pip install --quiet 'websockets>=12,<16'
cargo build --release --locked --example server
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log=$(mktemp)
./target/release/examples/server --addr "127.0.0.1:$port" >"$log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done
python3 scripts/demo_chat.py "ws://127.0.0.1:$port/ws"
kill -INT $pid
for _ in $(seq 100); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done
if kill -0 $pid 2>/dev/null; then echo "the server did not stop on Ctrl-C"; exit 1; fi
wait $pid || { echo "the server exited with an error:"; cat "$log"; exit 1; }
grep -q "shutting down" "$log" || { echo "no graceful shutdown in the log:"; cat "$log"; exit 1; }
echo "ok: the demo server started, served two clients and shut down gracefully"
