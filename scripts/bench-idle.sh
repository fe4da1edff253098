#!/usr/bin/env bash
# Memory of idle WebSocket sessions: a fresh `tolk serve`, N connections that only
# heartbeat, server RSS (from /metrics) before and with all of them open.
#
#   scripts/bench-idle.sh [N] [HOLD_SECONDS]      (default 10000, 30)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-10000}
hold=${2:-30}
log=$(mktemp)
ulimit -n "$((n + 1000))" 2>/dev/null || true
./target/release/tolk serve --bind 127.0.0.1:0 --max-sessions "$n" >"$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 100); do grep -q "listening on" "$log" && break; sleep 0.1; done
addr=$(sed -n 's/^tolk listening on http:\/\///p' "$log" | head -1)
./target/release/tolk-loadtest --url "ws://$addr/ws/translate" --idle --streams "$n" \
  --ramp-up 5 --duration "$hold" --json | tail -1
