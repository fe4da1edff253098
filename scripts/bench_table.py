"""Format the last line of `tolk-loadtest --sweep ... --json` as a table (stdin → stdout)."""

import json
import sys

model = sys.argv[1]
d = json.loads(sys.stdin.read().strip().splitlines()[-1])
if "sweep" not in d:  # a single level prints its summary alone
    d = {"sweep": [d], "slo_ms": None}
print(f"{'model':<10} {'streams':>7} {'finals':>6}  {'first partial p50 / p95 ms':>26}  {'final p50 / p95 / max ms':>26} {'whisper ms / share':>18} {'dropped':>7}  errors")
for s in d["sweep"]:
    fp, fl = s["first_partial_ms"], s["final_latency_ms"]
    partial = f"{fp['p50']:.0f} / {fp['p95']:.0f}"
    final = f"{fl['p50']:.0f} / {fl['p95']:.0f} / {fl['max']:.0f}"
    # Mean whisper time of a final decode, and its share of the mean final latency.
    decode, share = s.get("server_final_decode_ms_mean"), s.get("whisper_share_of_final_latency")
    whisper = f"{decode:.0f} / {share:.2f}" if decode is not None and share is not None else "–"
    print(f"{model:<10} {s['streams']:>7} {fl['count']:>6}  {partial:>26}  {final:>26} {whisper:>18} {s['dropped']:>7}  {s['errors'] or 'none'}")
if d["slo_ms"] is not None:
    print(f"largest N with p95 final <= {d['slo_ms']:.0f} ms: {d['max_streams_within_slo']}")
