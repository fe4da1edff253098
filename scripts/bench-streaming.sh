#!/usr/bin/env bash
# Streaming latency under load: starts `tolk serve` with a model, runs tolk-loadtest with
# JFK looped (1 s of silence between loops) at real-time pace, prints one line per level.
#
#   scripts/bench-streaming.sh [MODEL] [STREAMS,...] [SECONDS]
#   scripts/bench-streaming.sh base-q4_0 1,4 34
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-base-q4_0}
levels=${2:-1,4}
seconds=${3:-34}
port=${PORT:-8299}
audio=${TOLK_MODELS_DIR:-models/cache}/testdata/jfk.wav
./target/release/tolk serve --bind 127.0.0.1:$port --asr-model "$model" >/tmp/tolk-bench-serve.log 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 50); do python3 -c "import urllib.request as u; u.urlopen(\"http://127.0.0.1:$port/healthz\")" 2>/dev/null && break; sleep 0.2; done
./target/release/tolk-loadtest --url ws://127.0.0.1:$port/ws/translate --audio "$audio" \
  --sweep "$levels" --duration "$seconds" --json 2>/dev/null | tail -1 |
python3 -c '
import json, sys
d = json.load(sys.stdin)
model = sys.argv[1]
print(f"{\"model\":<10} {\"streams\":>7} {\"finals\":>6} {\"first partial p50/p95 ms\":>25} {\"final p50/p95/max ms\":>22} {\"dropped\":>7}  errors")
for s in d["sweep"]:
    fp, fl = s["first_partial_ms"], s["final_latency_ms"]
    print(f"{model:<10} {s[\"streams\"]:>7} {fl[\"count\"]:>6} {fp[\"p50\"]:>12.0f} / {fp[\"p95\"]:<10.0f} {fl[\"p50\"]:>7.0f} / {fl[\"p95\"]:.0f} / {fl[\"max\"]:<6.0f} {s[\"dropped\"]:>7}  {s[\"errors\"] or \"none\"}")
print(f"largest N with p95 final <= {d[\"slo_ms\"]:.0f} ms: {d[\"max_streams_within_slo\"]}")
' "$model"
