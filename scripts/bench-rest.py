#!/usr/bin/env python3
"""REST speed: sync latency for a 7 s clip, and job throughput.

Starts `tolk serve` (release build), then
  1. POSTs the first 7 s of JFK to /api/v1/translate/sync RUNS times, one after another
     (transcription only, then with target_lang=pt and tts), reporting p50/p95 latency;
  2. submits JOBS jobs of the whole JFK clip (11 s) at once and reports jobs per minute
     from the first submission to the last completion.

  scripts/bench-rest.py [--runs 10] [--jobs 20] [--job-workers 2]
Standard library only.
"""
import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
import wave

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def clip(path, seconds):
    with wave.open(path, "rb") as w:
        frames = w.readframes(int(w.getframerate() * seconds))
        params = w.getparams()
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setparams(params)
        w.writeframes(frames)
    return out.getvalue()


def call(base, method, path, body=None):
    request = urllib.request.Request(base + path, data=body, method=method)
    if body is not None:
        request.add_header("Content-Type", "audio/wav")
    try:
        with urllib.request.urlopen(request, timeout=300) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--job-workers", type=int, default=2)
    parser.add_argument("--asr-model", default="base-q4_0")
    args = parser.parse_args()
    models = os.environ.get("TOLK_MODELS_DIR", os.path.join(ROOT, "models/cache"))
    jfk = os.path.join(models, "testdata/jfk.wav")
    server = subprocess.Popen(
        [os.path.join(ROOT, "target/release/tolk"), "serve", "--bind", "127.0.0.1:0",
         "--asr-model", args.asr_model, "--job-workers", str(args.job_workers),
         "--job-queue-capacity", str(max(64, args.jobs))],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = server.stdout.readline()
        base = line.strip().removeprefix("tolk listening on ")
        seven = clip(jfk, 7.0)
        whole = open(jfk, "rb").read()
        rows = []
        for label, query in [("7 s clip, transcribe", "?source_lang=en"),
                             ("7 s clip, en→pt + tts", "?source_lang=en&target_lang=pt&tts=true")]:
            call(base, "POST", "/api/v1/translate/sync" + query, seven)  # warm-up
            latencies = []
            for _ in range(args.runs):
                start = time.perf_counter()
                status, body = call(base, "POST", "/api/v1/translate/sync" + query, seven)
                latencies.append((time.perf_counter() - start) * 1000)
                assert status == 200, body
            rows.append((label, statistics.median(latencies), percentile(latencies, 95)))
        print(f"sync ({args.asr_model}, {args.runs} runs each)")
        for label, p50, p95 in rows:
            print(f"  {label:26} p50 {p50:6.0f} ms   p95 {p95:6.0f} ms")

        start = time.perf_counter()
        ids = []
        for _ in range(args.jobs):
            status, body = call(base, "POST", "/api/v1/translate?source_lang=en&target_lang=pt", whole)
            assert status == 202, body
            ids.append(body["workflow_id"])
        pending = set(ids)
        while pending:
            for job in list(pending):
                status, body = call(base, "GET", f"/api/v1/translate/status/{job}")
                assert body["status"] != "failed", body
                if body["status"] == "completed":
                    pending.discard(job)
            time.sleep(0.2)
        elapsed = time.perf_counter() - start
        print(f"jobs ({args.jobs} × 11 s JFK, en→pt, {args.job_workers} job workers): "
              f"{elapsed:.1f} s, {args.jobs / elapsed * 60:.1f} jobs/min, "
              f"{args.jobs * 11.0 / elapsed:.1f} s of audio per s")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    sys.exit(main())
