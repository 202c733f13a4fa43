#!/usr/bin/env bash
# A bounded scale run: NODES demo server nodes (one PostgreSQL, one Redis between them)
# holding CONNECTIONS concurrent WebSocket connections in total, on this machine.
#
#   scripts/scale_run.sh                 # 6 nodes, 100,000 connections
#   scripts/scale_run.sh 3 20000
#
# Builds release; starts the nodes on BASE_PORT (default 9101) and up, on a fresh PostgreSQL
# schema and a Redis prefix of their own; records each server's RSS (VmRSS) once they listen;
# starts ceil(CONNECTIONS / PER_CLIENT) `hold_clients` processes (round-robin over the nodes,
# source addresses spread over 127.0.0.2-254, PER_CLIENT_CONCURRENCY connections being set
# up at once each); waits until every client has reported; records the servers' RSS again at
# that peak; then stops the clients, SIGINTs the servers, drops the schema and the Redis keys.
# Prints a table. Each process runs with `ulimit -n 20000` (the hard limit asked for).
#
# POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/test), REDIS_URL (default
# redis://127.0.0.1:6379), PER_CLIENT (default 16000), PER_CLIENT_CONCURRENCY (default 250),
# CONNECT_TIMEOUT (seconds per connection, default 60), HOLD (seconds everyone is held
# before the RSS is taken, default 30), HEARTBEAT_MS (server default, 25 s).
set -euo pipefail

nodes="${1:-6}"
connections="${2:-100000}"
if ! [[ "$nodes" =~ ^[0-9]+$ && "$connections" =~ ^[0-9]+$ ]] ||
  ((nodes < 1 || nodes > 64 || connections < 1 || connections > 1000000)); then
  echo "usage: scripts/scale_run.sh [NODES=6 (1-64)] [CONNECTIONS=100000 (1-1000000)]" >&2
  exit 2
fi
base="${BASE_PORT:-9101}"
pg="${POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
redis="${REDIS_URL:-redis://127.0.0.1:6379}"
per_client="${PER_CLIENT:-16000}"
concurrency="${PER_CLIENT_CONCURRENCY:-250}"
timeout="${CONNECT_TIMEOUT:-60}"
hold="${HOLD:-30}"
files=20000
run="scale$$_$(date +%s)"
schema="chat_$run"
cluster="$run"
work="$(mktemp -d)"
stop_file="$work/stop"

cd "$(dirname "$0")/.."

echo "== limits"
echo "ulimit -n: soft $(ulimit -Sn), hard $(ulimit -Hn); each process here runs with ulimit -n $files"
echo "$(sysctl -n net.ipv4.ip_local_port_range | tr -s '\t ' ' ' | sed 's/^/ephemeral ports: /') per source address"
echo "fs.file-max $(sysctl -n fs.file-max), somaxconn $(sysctl -n net.core.somaxconn), memory: $(free -m | awk '/^Mem:/ {print $2 " MiB total, " $7 " MiB available"}'), $(nproc) CPUs"
if (($(ulimit -Hn) < files)); then
  echo "the hard file limit $(ulimit -Hn) is below $files" >&2
  exit 1
fi

echo "== build"
cargo build --release --example server --features postgres,redis
cargo build --release --example hold_clients
server_bin=target/release/examples/server
client_bin=target/release/examples/hold_clients

server_pids=()
client_pids=()
cleanup() {
  touch "$stop_file" 2>/dev/null || true
  for pid in "${client_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${server_pids[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
  for pid in "${client_pids[@]}" "${server_pids[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  psql -q "$pg" -c "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1 || true
  redis-cli -u "$redis" --scan --pattern "*$cluster*" 2>/dev/null |
    head -n 1000000 | xargs -r -n 500 redis-cli -u "$redis" del >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== $nodes nodes (schema $schema, cluster $cluster)"
psql -q "$pg" -c "CREATE SCHEMA $schema" >/dev/null
sep='?'
[[ "$pg" == *\?* ]] && sep='&'
node_pg="${pg}${sep}options=-c%20search_path%3D${schema}"
extra=()
[[ -n "${HEARTBEAT_MS:-}" ]] && extra+=(--heartbeat-ms "$HEARTBEAT_MS")
urls=()
for ((i = 0; i < nodes; i++)); do
  port=$((base + i))
  (
    ulimit -n "$files"
    RUST_LOG="${RUST_LOG:-warn}" exec "$server_bin" --addr "127.0.0.1:$port" --postgres "$node_pg" \
      --redis "$redis" --cluster "$cluster" --node-id "node-$((i + 1))" "${extra[@]}"
  ) >"$work/node-$((i + 1)).log" 2>&1 &
  server_pids+=($!)
  urls+=("ws://127.0.0.1:$port/ws")
done
for ((i = 0; i < nodes; i++)); do
  port=$((base + i))
  for attempt in $(seq 1 120); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
    if ((attempt == 120)) || ! kill -0 "${server_pids[$i]}" 2>/dev/null; then
      echo "node-$((i + 1)) does not listen on $port:" >&2
      tail -20 "$work/node-$((i + 1)).log" >&2
      exit 1
    fi
    sleep 0.5
  done
done
sleep 1

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
rss_sum() {
  local total=0
  for pid in "${server_pids[@]}"; do total=$((total + $(rss_kib "$pid"))); done
  echo "$total"
}
before=()
for pid in "${server_pids[@]}"; do before+=("$(rss_kib "$pid")"); done
rss_before=$(rss_sum)
echo "server RSS before: ${before[*]} KiB (total $rss_before KiB)"
echo "kernel sockets before: $(grep '^TCP:' /proc/net/sockstat) (mem in pages, not in any RSS)"

clients=$(((connections + per_client - 1) / per_client))
echo "== $clients client processes, $connections connections"
url_list=$(IFS=,; echo "${urls[*]}")
start_ms=$(date +%s%3N)
offset=0
for ((c = 0; c < clients; c++)); do
  count=$(((connections - offset) / (clients - c)))
  (
    ulimit -n "$files"
    exec "$client_bin" --url "$url_list" --count "$count" --offset "$offset" \
      --hold $((hold + 600)) --concurrency "$concurrency" --timeout "$timeout" \
      --prefix "$run-" --stop-file "$stop_file"
  ) >"$work/client-$c.out" 2>"$work/client-$c.err" &
  client_pids+=($!)
  offset=$((offset + count))
done

# Wait for every client's "connected" line (bounded: 20 minutes), sampling the peak RSS.
peak=()
for pid in "${server_pids[@]}"; do peak+=(0); done
deadline=$((SECONDS + 1200))
while true; do
  reported=$(cat "$work"/client-*.out 2>/dev/null | grep -c '"event":"connected"' || true)
  for ((i = 0; i < nodes; i++)); do
    r=$(rss_kib "${server_pids[$i]}" 2>/dev/null || echo 0)
    ((r > peak[i])) && peak[i]=$r
  done
  ((reported >= clients)) && break
  running=0
  for pid in "${client_pids[@]}"; do kill -0 "$pid" 2>/dev/null && running=$((running + 1)); done
  if ((running == 0)); then
    echo "every client exited, $reported of $clients reported" >&2
    break
  fi
  if ((SECONDS > deadline)); then
    echo "not every client reported within 20 minutes" >&2
    break
  fi
  sleep 1
done
# Hold everyone HOLD seconds (default 30: past a heartbeat, so pings and pongs are part
# of the run), then take the servers' RSS at rest with everyone held.
echo "all reported; holding ${hold}s"
sleep "$hold"
at_peak=()
for ((i = 0; i < nodes; i++)); do
  r=$(rss_kib "${server_pids[$i]}")
  at_peak+=("$r")
  ((r > peak[i])) && peak[i]=$r
done
rss_held=0
for r in "${at_peak[@]}"; do rss_held=$((rss_held + r)); done
rss_peak=0
for r in "${peak[@]}"; do rss_peak=$((rss_peak + r)); done

connected=0 failed=0 last_ms=0
while read -r line; do
  connected=$((connected + $(sed 's/.*"connected":\([0-9]*\).*/\1/' <<<"$line")))
  failed=$((failed + $(sed 's/.*"failed":\([0-9]*\).*/\1/' <<<"$line")))
  done_ms=$(sed 's/.*"done_unix_ms":\([0-9]*\).*/\1/' <<<"$line")
  ((done_ms > last_ms)) && last_ms=$done_ms
done < <(cat "$work"/client-*.out | grep '"event":"connected"')
connect_s=$(awk -v a="$start_ms" -v b="$last_ms" 'BEGIN {printf "%.1f", (b - a) / 1000}')

echo "server RSS held:   ${at_peak[*]} KiB (total $rss_held KiB)"
echo "server RSS peak:   ${peak[*]} KiB (total $rss_peak KiB)"
echo "kernel sockets held: $(grep '^TCP:' /proc/net/sockstat) (both ends on this machine)"
client_rss=0
for pid in "${client_pids[@]}"; do client_rss=$((client_rss + $(rss_kib "$pid" 2>/dev/null || echo 0))); done
echo "client RSS held: $((client_rss / 1024)) MiB in $clients processes"
for c in $(seq 0 $((clients - 1))); do
  grep -h 'first failure' "$work/client-$c.err" || true
done

# Stop: the clients close everything, then the servers shut down.
touch "$stop_file"
for pid in "${client_pids[@]}"; do
  for _ in $(seq 1 600); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
done
dropped=0
for line in $(cat "$work"/client-*.out | grep '"event":"done"' | sed 's/.*"dropped_while_held":\([0-9]*\).*/\1/'); do
  dropped=$((dropped + line))
done

growth=$((rss_held - rss_before))
per_conn=$(awk -v g="$growth" -v n="$connected" 'BEGIN {if (n > 0) printf "%.1f", g / n; else print "-"}')
per_conn_peak=$(awk -v g="$((rss_peak - rss_before))" -v n="$connected" 'BEGIN {if (n > 0) printf "%.1f", g / n; else print "-"}')
echo
echo "| nodes | connections | per node | connected | failed | dropped while held | server RSS before (total) | server RSS held (total) | growth | per connection | connect time |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
printf '| %d | %d | %d | %d | %d | %d | %d MiB | %d MiB | %d MiB | %s KiB (peak %s) | %s s |\n' \
  "$nodes" "$connections" $((connections / nodes)) "$connected" "$failed" "$dropped" \
  $((rss_before / 1024)) $((rss_held / 1024)) $((growth / 1024)) "$per_conn" "$per_conn_peak" "$connect_s"
((failed == 0 && connected == connections))
