#!/usr/bin/env bash
# Streaming latency under load: starts `tolk serve` with a model, runs tolk-loadtest with
# JFK looped (1 s of silence between loops) at real-time pace, prints one line per level.
#
#   scripts/bench-streaming.sh [MODEL] [STREAMS,...] [SECONDS]
#   scripts/bench-streaming.sh base-q4_0 1,4 34
#
# RAMP_UP=SECONDS starts the streams that far apart in all: with 0 every stream says the
# same word at the same moment, the worst case; real speakers are not in step.
# BIN=DIR takes the binaries from DIR (default target/release); SERVE_ARGS are added to
# `tolk serve` (`--asr-device cuda:0 --max-sessions 256`, say); JSON_OUT=FILE keeps the
# load tester's JSON.
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-base-q4_0}
levels=${2:-1,4}
seconds=${3:-34}
port=${PORT:-8299}
audio=${TOLK_MODELS_DIR:-models/cache}/testdata/jfk.wav
bin=${BIN:-target/release}
# shellcheck disable=SC2086 # SERVE_ARGS is a list of words
"$bin/tolk" serve --bind 127.0.0.1:$port --asr-model "$model" ${SERVE_ARGS:-} >/tmp/tolk-bench-serve.log 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 150); do python3 -c "import urllib.request as u; u.urlopen(\"http://127.0.0.1:$port/healthz\")" 2>/dev/null && break; sleep 0.2; done
"$bin/tolk-loadtest" --url ws://127.0.0.1:$port/ws/translate --audio "$audio" \
  --sweep "$levels" --duration "$seconds" --ramp-up "${RAMP_UP:-0}" --json 2>/dev/null | tail -1 |
tee "${JSON_OUT:-/dev/null}" | python3 scripts/bench_table.py "$model"
