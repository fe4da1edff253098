#!/usr/bin/env python3
"""Cost of authentication and rate limiting per request, for each store.

Starts `tolk serve` (release build) once per configuration and sends REQUESTS sequential
requests over one keep-alive connection to GET /api/v1/translate/status/wf_missing (a
small 404 that needs `translate:read`, so the guard does all its work and the handler
almost none):

  open            --auth-mode disabled
  key, memory     X-API-Key, keys file, limits in memory
  jwt, memory     Authorization: Bearer (HS256), limits in memory
  key, redis      X-API-Key, keys and limits in Redis
  jwt, redis      Bearer, limits in Redis

  scripts/bench-auth.py [--requests 3000]
Standard library only; starts its own redis-server.
"""
import argparse
import base64
import hashlib
import hmac
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOLK = os.path.join(ROOT, "target/release/tolk")
SECRET = "bench-secret-of-at-least-thirty-two-bytes"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256(claims):
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = hmac.new(SECRET.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


def serve(args):
    server = subprocess.Popen([TOLK, "serve", "--bind", "127.0.0.1:0", "--job-workers", "0", *args],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = server.stdout.readline()
    return server, line.strip().removeprefix("tolk listening on http://")


def run(addr, headers, n):
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port))
    times = []
    for _ in range(n + 100):
        start = time.perf_counter()
        conn.request("GET", "/api/v1/translate/status/wf_missing", headers=headers)
        response = conn.getresponse()
        response.read()
        times.append(time.perf_counter() - start)
        assert response.status == 404, response.status
    conn.close()
    times = sorted(times[100:])  # the first 100 warm up
    return statistics.median(times) * 1e6, times[int(0.99 * (len(times) - 1))] * 1e6


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    port = free_port()
    redis = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    tmp = tempfile.mkdtemp()
    try:
        time.sleep(0.3)
        redis_url = f"redis://127.0.0.1:{port}/0"
        keys_file = os.path.join(tmp, "keys.json")
        create = [TOLK, "keys", "create", "--name", "bench", "--tier", "enterprise", "--json"]
        file_key = json.loads(subprocess.check_output(create + ["--keys-file", keys_file]))["key"]
        redis_key = json.loads(subprocess.check_output(create + ["--redis-url", redis_url]))["key"]
        now = int(time.time())
        token = hs256({"sub": "bench", "aud": "tolk", "iat": now, "exp": now + 3600,
                       "user_tier": "enterprise", "permissions": ["translate:read"]})
        auth = ["--auth-mode", "required", "--jwt-hs256-secret", SECRET, "--keys-file", keys_file]
        configs = [
            ("open", ["--auth-mode", "disabled"], {}),
            ("key, memory", auth, {"X-API-Key": file_key}),
            ("jwt, memory", auth, {"Authorization": f"Bearer {token}"}),
            ("key, redis", auth + ["--redis-url", redis_url], {"X-API-Key": redis_key}),
            ("jwt, redis", auth + ["--redis-url", redis_url], {"Authorization": f"Bearer {token}"}),
        ]
        rows = []
        for name, flags, headers in configs:
            server, addr = serve(flags)
            try:
                rows.append((name, *run(addr, headers, args.requests)))
            finally:
                server.terminate()
                server.wait()
        base = rows[0][1]
        print(f"{args.requests} sequential requests each, one keep-alive connection")
        print(f"{'':14} {'p50 µs':>8} {'p99 µs':>8} {'p50 / open':>10}")
        for name, p50, p99 in rows:
            print(f"{name:14} {p50:8.0f} {p99:8.0f} {p50 / base:10.2f}")
    finally:
        redis.terminate()
        redis.wait()


if __name__ == "__main__":
    sys.exit(main())
