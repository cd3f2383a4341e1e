# Meridian: `make demo` runs the local multi-region mesh with a built-in
# model; `make test` runs every check CI runs.
SHELL := /bin/bash
CARGO ?= cargo
STAGE := scripts/stage.sh
WASM_TARGET := wasm32-wasip1
WASM := target/$(WASM_TARGET)/release-wasm/meridian_filters.wasm

.PHONY: test demo bootstrap fmt-check clippy wasm cargo-test fmt bench-sidecar bench-filters gpu-bundle fuzz soak

## Everything CI checks, in order: set-up, formatting, lints, the wasm build, every test.
test: bootstrap fmt-check clippy wasm cargo-test

## The local mesh that POLICY describes (default examples/policy.yaml: three regions, residency,
## a canary; real Envoy, real sidecars, a generated model) with live traffic from its callers, the
## prober and a Prometheus (127.0.0.1:9090), and a per-region table; Ctrl-C stops every process.
## The mesh is described in .mesh/mesh.json.
POLICY ?= examples/policy.yaml
demo: wasm
	$(CARGO) build --release --locked -p meridian-sidecar --bin meridian-sidecar
	$(CARGO) build --release --locked -p meridian-prober --bin meridian-prober
	$(CARGO) build --release --locked -p meridian-integration --bin meridian-demo
	target/release/meridian-demo -f $(POLICY) $(DEMO_ARGS)

## Installs the wasm target, the pinned Envoy and the Python test clients (idempotent).
bootstrap:
	@$(STAGE) bootstrap bash scripts/bootstrap.sh

fmt-check:
	@$(STAGE) fmt $(CARGO) fmt --all -- --check

clippy: bootstrap
	@$(STAGE) clippy-native $(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	@$(STAGE) clippy-wasm $(CARGO) clippy -p meridian-filters -p meridian-baseline-filter --target $(WASM_TARGET) --locked -- -D warnings

## The filters as one size-optimised wasm32-wasip1 module.
wasm: bootstrap
	@$(STAGE) wasm $(CARGO) build -p meridian-filters --target $(WASM_TARGET) --profile release-wasm --locked
	@ls -l $(WASM)

cargo-test: wasm
	@$(STAGE) cargo-test $(CARGO) test --workspace --locked

fmt:
	$(CARGO) fmt --all

## Sidecar benchmark (not in CI): batching on vs off, closed loop, c = 1, 8, 32.
bench-sidecar: bootstrap
	$(CARGO) build --release --locked -p meridian-sidecar --bin meridian-sidecar
	$(CARGO) build --release --locked -p meridian-integration --bin bench-sidecar
	target/release/bench-sidecar $(BENCH_ARGS)

## Filter benchmark (not in CI): one Envoy, same upstream and load — no wasm, a trivial wasm
## filter, the Meridian filter — interleaved; prints Envoy CPU per request and the ratios.
bench-filters: wasm
	$(CARGO) build -p meridian-baseline-filter --target $(WASM_TARGET) --profile release-wasm --locked
	$(CARGO) build --release --locked -p meridian-sidecar --bin meridian-sidecar
	$(CARGO) build --release --locked -p meridian-integration --bin bench-filters
	target/release/bench-filters $(BENCH_ARGS)

## The GPU device bundle (not in CI; no GPU needed to build it): the release sidecar and bench-serve,
## tract-cuda's kernels precompiled for sm_90 (H100/H200; CUDA_ARCHS=90,89 for more) and the device
## scripts, in target/gpu-bundle. On a machine with an NVIDIA GPU and PyTorch: bash target/gpu-bundle/run.sh
gpu-bundle: bootstrap
	$(CARGO) build --release --locked -p meridian-sidecar --bin meridian-sidecar
	$(CARGO) build --release --locked -p meridian-integration --bin bench-serve
	bash integration/gpu/bundle.sh

## Fuzzing (not in CI; needs the nightly toolchain, installs cargo-fuzz into .tools): every target of
## fuzz/ for FUZZ_SECS seconds (default 30); FUZZ_TARGETS="headers mesh_policy" for some.
FUZZ_SECS ?= 30
## The local mesh under steady load and a seeded schedule of chaos (not in CI): SOAK_SECS (default
## 600), SOAK_ARGS (--seed, --phase-secs, --concurrency, --report FILE).
SOAK_SECS ?= 600
soak: wasm
	$(CARGO) build --release --locked -p meridian-sidecar --bin meridian-sidecar
	$(CARGO) build --release --locked -p meridian-integration --bin meridian-soak
	target/release/meridian-soak --duration-secs $(SOAK_SECS) $(SOAK_ARGS)

fuzz:
	FUZZ_SECS=$(FUZZ_SECS) bash scripts/fuzz.sh
