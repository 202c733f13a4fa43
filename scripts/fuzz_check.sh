#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for SECONDS seconds each (default 45), one after
# the other, and prints each one's figures: executions, executions per second, coverage
# (cov: edges, ft: features), corpus size and crashes. Exits non-zero if any target
# crashed, hung or failed to build; a crashing input is left in fuzz/artifacts/<target>/.
#
#   scripts/fuzz_check.sh [SECONDS] [TARGET...]
#
# Environment: FUZZ_SANITIZER (default `address`; `none` runs faster). The targets run one
# at a time, each in one process.
#
# cargo-fuzz passes rustc flags that only nightly accepts (-Zsanitizer); with a stable
# toolchain RUSTC_BOOTSTRAP=1 lets it through. The corpus each run grows is kept in
# fuzz/corpus/<target>/ for the next run (only the seed-* files there are committed).
set -euo pipefail

seconds="${1:-45}"
shift || true
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

export RUSTC_BOOTSTRAP=1
sanitizer="${FUZZ_SANITIZER:-address}"
flags=(--fuzz-dir fuzz -O --debug-assertions --sanitizer "$sanitizer")

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list --fuzz-dir fuzz)
fi

echo "== building ${#targets[@]} targets (sanitizer: $sanitizer)"
cargo fuzz build "${flags[@]}"

logs="$(mktemp -d)"
failed=0
summary=()
for target in "${targets[@]}"; do
    echo "== $target: ${seconds} s"
    mkdir -p "fuzz/corpus/$target"
    options=(-max_total_time="$seconds" -timeout=60 -rss_limit_mb=4096 -print_final_stats=1)
    case "$target" in
        # These keep a runtime (and a server, an engine) from one input to the next, which
        # LeakSanitizer's check after each input takes for a leak and scans for at great
        # cost (20 times slower).
        engine_requests | ws_connection | ws_handshake) options+=(-detect_leaks=0) ;;
    esac
    if [ -f "fuzz/dict/$target.dict" ]; then
        options+=(-dict="fuzz/dict/$target.dict")
    fi
    status=0
    cargo fuzz run "${flags[@]}" "$target" -- "${options[@]}" \
        >"$logs/$target.log" 2>&1 || status=$?
    stat() { sed -n "s/^stat::$1: *//p" "$logs/$target.log" | tail -1; }
    last="$(grep -E '^#[0-9]+' "$logs/$target.log" | tail -1 || true)"
    cov="$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")"
    ft="$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")"
    corp="$(sed -n 's/.* corp: \([^ ]*\).*/\1/p' <<<"$last")"
    crashes="$(ls "fuzz/artifacts/$target" 2>/dev/null | grep -cE '^(crash|timeout|oom|leak)-' || true)"
    line="$(printf '%-16s execs %-10s exec/s %-7s cov %-6s ft %-7s corpus %-12s rss %-5s MB exit %s' \
        "$target" "$(stat number_of_executed_units)" "$(stat average_exec_per_sec)" \
        "${cov:-?}" "${ft:-?}" "${corp:-?}" "$(stat peak_rss_mb)" "$status")"
    if [ "$status" -ne 0 ]; then
        failed=1
        line="$line  FAILED (artifacts: $crashes)"
        grep -E 'panicked|ERROR|SUMMARY|Test unit written' "$logs/$target.log" | head -20 || true
    fi
    echo "$line"
    summary+=("$line")
done

echo "== summary (${seconds} s per target; logs in $logs)"
printf '%s\n' "${summary[@]}"
exit "$failed"
