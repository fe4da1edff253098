#!/usr/bin/env bash
# GPU figures for BENCHMARKS.md ("GPU"), on a machine with an NVIDIA GPU and a
# `--features cuda` build. Each step is bounded by a timeout and writes its own file, so a
# step that fails leaves the others' figures:
#
#   BIN=target/release scripts/bench-gpu.sh OUTDIR
#
#   OUTDIR/bench.jsonl      file RTF on JFK, base-q4_0: GPU, then the CPU with 2 and all cores
#   OUTDIR/transcribe.txt   JFK and a Spanish clip transcribed on the GPU
#   OUTDIR/devices.txt      what the server chose (/api/v1/models), and an ONNX GPU request
#   OUTDIR/sweep-gpu.*      real-time streams on the GPU: table and the load tester's JSON
#   OUTDIR/sweep-cpu.*      the same on this machine's CPU, for the ratio
#
# GPU_LEVELS / CPU_LEVELS (comma-separated stream counts) and SECONDS_PER_LEVEL size it.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/bench-gpu.sh OUTDIR}
mkdir -p "$out"
bin=${BIN:-target/release}
models=${TOLK_MODELS_DIR:-models/cache}
export TOLK_MODELS_DIR=$models BIN=$bin
model=${MODEL:-base-q4_0}
seconds=${SECONDS_PER_LEVEL:-23}
cores=$(nproc)
step() { echo "== $1 ($(date +%T))"; }

step "machine"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; echo "cores: $cores"; } |
  tee "$out/machine.txt"

step "file RTF"
for device in cuda:0 "cpu 2" "cpu $cores"; do
  set -- $device
  timeout 120 "$bin/tolk" bench --models "$model" --device "$1" --threads "${2:-1}" --runs 10 --json
done | tee "$out/bench.jsonl"

step "transcribe on the GPU"
{
  timeout 60 "$bin/tolk" transcribe "$models/testdata/jfk.wav" --model "$model" --device cuda:0 --language en
  for clip in "$models"/testdata/es-*.wav; do
    [ -f "$clip" ] || continue
    timeout 60 "$bin/tolk" transcribe "$clip" --model "$model" --device cuda:0
    break
  done
} 2>&1 | tee "$out/transcribe.txt"

step "devices"
{
  port=8297
  "$bin/tolk" serve --bind 127.0.0.1:$port --asr-model "$model" >"$out/serve-devices.log" 2>&1 &
  pid=$!
  for _ in $(seq 150); do
    python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$port/healthz')" 2>/dev/null && break
    sleep 0.2
  done
  python3 -c "import json, urllib.request as u
print('devices:', json.load(u.urlopen('http://127.0.0.1:$port/api/v1/models'))['devices'])"
  kill $pid; wait $pid
  echo "--onnx-device cuda:0 with the CPU ONNX Runtime:"
  timeout 30 "$bin/tolk" serve --bind 127.0.0.1:$port --onnx-device cuda:0 2>&1 | tail -1
} 2>&1 | tee "$out/devices.txt"

step "streams on the GPU"
JSON_OUT="$out/sweep-gpu.json" RAMP_UP=${RAMP_UP:-10} SERVE_ARGS="--asr-device cuda:0 --max-sessions 512" \
  timeout 400 scripts/bench-streaming.sh "$model" "${GPU_LEVELS:-1,32,64,128,192}" "$seconds" |
  tee "$out/sweep-gpu.txt"
cp /tmp/tolk-bench-serve.log "$out/serve-gpu.log" 2>/dev/null

step "streams on the CPU ($cores cores)"
JSON_OUT="$out/sweep-cpu.json" RAMP_UP=${RAMP_UP:-10} SERVE_ARGS="--asr-device cpu --max-sessions 512" \
  timeout 200 scripts/bench-streaming.sh "$model" "${CPU_LEVELS:-4,8,16}" "$seconds" |
  tee "$out/sweep-cpu.txt"
step "done"
