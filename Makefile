# tolk: the two commands a newcomer needs are `make run` and `make test`.
# Both install what is missing (Debian packages, models) first; both use one release build.

SHELL := /bin/bash
export PATH := $(HOME)/.cargo/bin:$(PATH)
TOLK_MODELS_DIR ?= $(CURDIR)/models/cache
export TOLK_MODELS_DIR
CARGO ?= cargo
BIND ?= 127.0.0.1:8080

.PHONY: run test setup build test-rust test-python test-fuzz test-api test-browser bench bench-streaming bench-rest bench-auth bench-idle fmt lint

## Install everything, build, and serve on $(BIND).
run: setup build
	./target/release/tolk serve --bind $(BIND)

## Install everything, build, and run every test.
test: setup build test-rust test-python test-fuzz test-api test-browser
	@echo "make test: all test suites passed"

## Debian packages, the converter's numpy, and all models (idempotent).
setup:
	models/fetch

build:
	$(CARGO) build --release --workspace

test-rust:
	$(CARGO) test --release --workspace

test-python:
	$(TOLK_MODELS_DIR)/.venv/bin/python -m unittest discover -s models/tests -v

## Fuzz the client message decoder, the WAV reader and client PCM frames, each for
## FUZZ_SECONDS (fuzz/README.md: running longer). Fails on a crash, a panic, a broken
## property, a slow input or runaway memory; the input is left in fuzz/artifacts/.
## `-s none`: no sanitizer, so stable Rust builds it (AddressSanitizer needs nightly's
## -Zsanitizer, and all the code fuzzed is safe Rust); the targets measure memory themselves.
## Seeds are fuzz/corpus/ (committed); what a run adds goes to fuzz/target/corpus/.
CARGO_FUZZ_VERSION := 0.13.2
FUZZ_SECONDS ?= 30
FUZZ_TARGETS := client_message wav pcm
test-fuzz:
	@cargo fuzz --version 2>/dev/null | grep -qx 'cargo-fuzz $(CARGO_FUZZ_VERSION)' \
		|| $(CARGO) install cargo-fuzz --locked --version $(CARGO_FUZZ_VERSION)
	$(CARGO) fuzz build -s none
	@for t in $(FUZZ_TARGETS); do \
		mkdir -p fuzz/target/corpus/$$t; \
		echo "fuzz: $$t for $(FUZZ_SECONDS) s"; \
		$(CARGO) fuzz run -s none $$t fuzz/target/corpus/$$t fuzz/corpus/$$t -- \
			-max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
			2> fuzz/target/$$t.log || { tail -n 60 fuzz/target/$$t.log; exit 1; }; \
		grep -E '^(stat::number_of_executed_units|stat::average_exec_per_sec|Done)' fuzz/target/$$t.log; \
	done

## The OpenAPI document against the live server (schemathesis).
test-api:
	scripts/test-api.sh

## The browser client in headless Chromium, JFK as the microphone; screenshots in
## target/test-artifacts/browser/.
test-browser:
	cd tests/browser && npm ci --no-audit --no-fund --loglevel=error && node --test --test-concurrency=1

## Real-time factor of file transcription (figures in BENCHMARKS.md).
bench: setup build
	./target/release/tolk bench --models base,base-q8_0,base-q4_0,tiny.en,tiny.en-q8_0 --threads 2 --runs 5

## Streaming latency: real-time streams of JFK, in step (worst case) and staggered.
bench-streaming: setup build
	scripts/bench-streaming.sh base-q4_0 1,2,4 34
	RAMP_UP=9 scripts/bench-streaming.sh base-q4_0 4,8 34
	RAMP_UP=10.5 scripts/bench-streaming.sh tiny.en-q8_0 4,8 34
	RAMP_UP=10.5 scripts/bench-streaming.sh tiny.en 8 34

## REST: sync latency for a 7 s clip, job throughput.
bench-rest: setup build
	scripts/bench-rest.py --runs 10 --jobs 20

## Cost of authentication and rate limiting per request, per store.
bench-auth: setup build
	scripts/bench-auth.py --requests 3000

## Memory of 10,000 idle WebSocket sessions.
bench-idle: setup build
	scripts/bench-idle.sh 10000 30

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings
