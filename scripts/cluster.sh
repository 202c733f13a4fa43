#!/usr/bin/env bash
# Starts N demo server nodes on consecutive ports, one PostgreSQL and one Redis between
# them: one chat, N WebSocket endpoints. Ctrl-C stops them all.
#
#   scripts/cluster.sh 3                       # ws://127.0.0.1:9001/ws … 9003
#   BASE_PORT=7000 scripts/cluster.sh 6
#
# POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/test) and REDIS_URL (default
# redis://127.0.0.1:6379) say where; CLUSTER (default chat) keeps clusters on one Redis
# apart; PROFILE=release builds optimized; HEARTBEAT_MS shortens the heartbeat and lease.
set -euo pipefail

n="${1:-3}"
if ! [[ "$n" =~ ^[0-9]+$ ]] || (( n < 1 || n > 64 )); then
  echo "usage: scripts/cluster.sh N   (1 ≤ N ≤ 64)" >&2
  exit 2
fi
base="${BASE_PORT:-9001}"
pg="${POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
redis="${REDIS_URL:-redis://127.0.0.1:6379}"
cluster="${CLUSTER:-chat}"
profile="${PROFILE:-debug}"

cd "$(dirname "$0")/.."
flags=()
[[ "$profile" == release ]] && flags+=(--release)
cargo build "${flags[@]}" --example server --features postgres,redis
binary="target/$profile/examples/server"

pids=()
stop() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap stop EXIT INT TERM

extra=()
[[ -n "${HEARTBEAT_MS:-}" ]] && extra+=(--heartbeat-ms "$HEARTBEAT_MS")
for ((i = 0; i < n; i++)); do
  port=$((base + i))
  "$binary" --addr "127.0.0.1:$port" --postgres "$pg" --redis "$redis" \
    --cluster "$cluster" --node-id "node-$((i + 1))" "${extra[@]}" \
    > >(sed "s/^/[node-$((i + 1))] /") 2>&1 &
  pids+=($!)
done
echo "$n nodes: ws://127.0.0.1:$base/ws … ws://127.0.0.1:$((base + n - 1))/ws (Ctrl-C stops them)"
wait
