#!/usr/bin/env bash
# Memory over a long run: one fresh `tolk serve`, the load tester in rounds for MINUTES
# (each round opens new sessions: STREAMS real-time streams of JFK translated into
# Portuguese and spoken, so every pool works), the server's RSS read from /metrics after
# each round. A leak shows as RSS that keeps climbing after the first rounds.
#
#   scripts/soak.sh [MINUTES] [STREAMS] [ROUND_SECONDS]      (default 10, 2, 30)
#
# Prints one line per round and a summary; the last line is JSON.
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-10}
streams=${2:-2}
round=${3:-30}
log=$(mktemp)
./target/release/tolk serve --bind 127.0.0.1:0 >"$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 300); do grep -q "listening on" "$log" && break; sleep 0.1; done
addr=$(sed -n 's/^tolk listening on http:\/\///p' "$log" | head -1)
rss() { curl -s "http://$addr/metrics" | awk '/^process_resident_memory_bytes /{printf "%.1f", $2/1048576}'; }
audio="${TOLK_MODELS_DIR:-models/cache}/testdata/jfk.wav"

start=$(date +%s)
rss0=$(rss)
echo "round  elapsed_s  rss_mib  finals  p95_final_ms  errors"
echo "0      0          $rss0    -       -             -"
series="$rss0"
i=0
total_errors=0
while (( $(date +%s) - start < minutes * 60 )); do
  i=$((i + 1))
  out=$(./target/release/tolk-loadtest --url "ws://$addr/ws/translate" --audio "$audio" \
    --streams "$streams" --duration "$round" --target-lang pt --tts --json 2>/dev/null | tail -1)
  r=$(rss)
  series="$series,$r"
  read -r finals p95 errors < <(python3 -c '
import json, sys
s = json.loads(sys.argv[1])
print(s["finals"], round(s["final_latency_ms"]["p95"]), sum(s["errors"].values()) + s["dropped"])
' "$out")
  total_errors=$((total_errors + errors))
  printf '%-6s %-10s %-8s %-7s %-13s %s\n' "$i" "$(( $(date +%s) - start ))" "$r" "$finals" "$p95" "$errors"
done
python3 - "$series" "$total_errors" "$minutes" <<'PY'
import json, sys
rss = [float(x) for x in sys.argv[1].split(",")]
warm = rss[1] if len(rss) > 1 else rss[0]
# Growth after the first round (model buffers, allocator arenas warm up in it), by a
# least-squares slope over the rest.
tail = rss[1:]
n = len(tail)
slope = 0.0
if n > 1:
    xs = range(n)
    mx, my = (n - 1) / 2, sum(tail) / n
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, tail)) / sum((x - mx) ** 2 for x in xs)
summary = {
    "rounds": n, "minutes": float(sys.argv[3]), "rss_start_mib": rss[0], "rss_after_round_1_mib": warm,
    "rss_end_mib": rss[-1], "rss_max_mib": max(rss), "growth_after_round_1_mib": round(rss[-1] - warm, 1),
    "slope_mib_per_round": round(slope, 2), "errors_and_drops": int(sys.argv[2]),
}
print(f"RSS {rss[0]} MiB at start, {warm} after round 1, {rss[-1]} at the end (max {max(rss)}); "
      f"slope after round 1: {slope:+.2f} MiB per round; errors+drops {sys.argv[2]}")
print(json.dumps(summary))
PY
