# Meridian: `make test` runs every check CI runs; `make demo` arrives with the
# local multi-region mesh.
SHELL := /bin/bash
CARGO ?= cargo
STAGE := scripts/stage.sh
WASM_TARGET := wasm32-wasip1
WASM := target/$(WASM_TARGET)/release-wasm/meridian_filters.wasm

.PHONY: test bootstrap fmt-check clippy wasm cargo-test fmt bench-sidecar

## Everything CI checks, in order: set-up, formatting, lints, the wasm build, every test.
test: bootstrap fmt-check clippy wasm cargo-test

## Installs the wasm target, the pinned Envoy and the Python test clients (idempotent).
bootstrap:
	@$(STAGE) bootstrap bash scripts/bootstrap.sh

fmt-check:
	@$(STAGE) fmt $(CARGO) fmt --all -- --check

clippy: bootstrap
	@$(STAGE) clippy-native $(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	@$(STAGE) clippy-wasm $(CARGO) clippy -p meridian-filters --target $(WASM_TARGET) --locked -- -D warnings

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
