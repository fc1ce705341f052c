# callbridge — the two commands a newcomer needs are `make run` and `make test`.
SWIFT ?= swift
PORT ?= 8080
BIN := .build/debug/callbridge
RELEASE_BIN := .build/release/callbridge

.PHONY: run run-release test build build-release deps demo bargein-check bench bench-check bench-thresholds bench-silero fixtures fixtures-update certs clean deploy-check fuzz loadtest

## Start the bridge (embedded echo agent unless OPENAI_API_KEY is set). Options: make run ARGS="--port 9000".
run: build
	$(BIN) run $(ARGS)

## Same, with an optimized build (what you deploy).
run-release: build-release
	$(RELEASE_BIN) run $(ARGS)

## Install what is missing, build, and run every test.
test: deps
	scripts/validate-deploy.sh
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build

build: deps
	$(SWIFT) build --product callbridge

build-release: deps
	$(SWIFT) build -c release --product callbridge

deps:
	@scripts/ensure-deps.sh

## Call a running bridge (make run in another terminal) with a spoken fixture, talk over the reply, print the report.
demo: build
	$(BIN) dial ws://127.0.0.1:$(PORT)/twilio/media --audio Fixtures/audio/hello.wav \
		--barge-in-at 6.5 --barge-in-audio Fixtures/audio/interrupt.wav --record heard.wav

## Barge-in acceptance: service VAD 300 ms late, N calls talking over the AI, one echo-only call. N=10 by default.
bargein-check: build
	scripts/bargein-check.sh $(N)

## Micro-benchmarks of the per-frame path (release): time and mallocs per operation. A separate package in
## Benchmarks/ (ordo-one/benchmark), so `make test` never builds it.
bench: deps
	cd Benchmarks && $(SWIFT) package benchmark --no-progress

## Run the micro-benchmarks and compare with Benchmarks/Thresholds/: fails when a malloc count differs from the
## committed one (either way) or time is well over the committed p90 (twice, or three times for the state machine).
bench-check: deps
	cd Benchmarks && $(SWIFT) package benchmark thresholds check --no-progress

## Rewrite Benchmarks/Thresholds/ from a run on this machine (after an intended change; review the diff).
bench-thresholds: deps
	cd Benchmarks && $(SWIFT) package --allow-writing-to-package-directory benchmark thresholds update --no-progress

## Silero VAD timed over a whole process (release): cost per window and per call.
bench-silero: deps
	$(SWIFT) build -c release --product CallBridgeBench
	.build/release/CallBridgeBench Sources/CallBridge/Resources/silero_vad_v6_8k.f32 20000

## Regenerate the spoken audio fixtures (espeak-ng + sox from Debian).
fixtures:
	@scripts/ensure-deps.sh espeak-ng sox
	Fixtures/audio/generate.sh

## Rewrite the golden call transcripts (Fixtures/calls/*.golden) from their event scripts. Review the diff.
fixtures-update: deps
	$(SWIFT) build --build-tests
	UPDATE_GOLDEN=1 $(SWIFT) test --skip-build --filter ReplayTests

## Check everything under deploy/ (manifests, Dockerfile, systemd unit, dashboard, alert rules); no cluster needed.
deploy-check:
	scripts/validate-deploy.sh

## Regenerate the test-only CA and localhost certificate.
certs:
	@scripts/ensure-deps.sh openssl
	Fixtures/tls/generate.sh

clean:
	rm -rf .build Benchmarks/.build

## Fuzz the wire decoders for longer than CI does: ROUNDS mutation rounds over every seed (100000 ≈ 2 million inputs).
ROUNDS ?= 100000
SEED ?= 7
fuzz: deps
	$(SWIFT) build --build-tests
	FUZZ_ROUNDS=$(ROUNDS) FUZZ_SEED=$(SEED) $(SWIFT) test --skip-build --filter ScannerFuzzTests

## Load test on loopback (release build): the load double over TLS, `callbridge run` as in production, and
## `callbridge load`; one table row per call count. make loadtest N=10,100 DURATION=60 RAMP=10 [LOADTEST_SCRATCH=.build-x]
## [REALTIME_PRIORITY=0: the bridge and the generator at normal scheduling; default 10 where allowed]
LOADTEST_N := 10,100
DURATION ?= 60
RAMP ?= 10
LOADTEST_SCRATCH ?= .build
loadtest: deps
	$(SWIFT) build -c release --product callbridge --scratch-path $(LOADTEST_SCRATCH)
	python3 scripts/loadtest.py --binary $(LOADTEST_SCRATCH)/release/callbridge --calls $(or $(N),$(LOADTEST_N)) \
		--duration $(DURATION) --ramp $(RAMP) $(if $(REALTIME_PRIORITY),--realtime-priority $(REALTIME_PRIORITY))
