#!/usr/bin/env bash
# The GPU device script (issue: GPU execution). Run it on a machine with an
# NVIDIA GPU, its driver, and a Python environment with PyTorch and its CUDA
# 13 pip packages (nvidia/*/lib: cudart, NVRTC, cuBLAS, cuDNN):
#
#   make gpu-bundle                 # here: builds target/gpu-bundle (no GPU needed)
#   bash target/gpu-bundle/run.sh   # there: writes $OUT (default ./gpu-out)
#
# What it measures, in one run (figures go to $OUT/gpu-results.md, raw lines
# to $OUT/raw.txt):
#   1. correctness: each model at fp32 and fp16 on CUDA against tract on the
#      CPU at fp32, and against PyTorch on the same weights; ops left on the host;
#   2. raw executor throughput per batch size and thread count (meridian-sidecar
#      bench: host copies included, no gRPC), and tract on the host's CPU cores;
#   3. PyTorch eager on the same weights, same precision, copies included;
#   4. served throughput through gRPC at high concurrency (bench-serve against
#      meridian-sidecar --device cuda), with the batch size the batcher formed.
#
# MERIDIAN_DEVICE=cpu TORCH_DEVICE=cpu SECONDS_PER_POINT=0.3 checks the
# script's plumbing on a machine without a GPU (the figures then mean nothing).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${OUT:-$PWD/gpu-out}
seconds=${SECONDS_PER_POINT:-2}
device=${MERIDIAN_DEVICE:-cuda}
torch_device=${TORCH_DEVICE:-cuda}
py=${PYTHON:-python3}
mkdir -p "$out"
raw=$out/raw.txt
: >"$raw"
log() { echo "$*" | tee -a "$raw"; }

# CUDA libraries from the PyTorch environment's pip packages.
libs=$("$py" - <<'PY'
import glob, os
import nvidia
dirs = {os.path.dirname(p) for root in nvidia.__path__ for p in glob.glob(os.path.join(root, "**", "lib*.so*"), recursive=True)}
print(":".join(sorted(dirs)))
PY
)
export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# tract-cuda's kernels, precompiled by `make gpu-bundle` (cuda-precompile).
export XDG_CACHE_HOME=$here/cache
# Should the GPU's NVRTC differ from the precompiled one, tract-cuda compiles
# with the headers of the pip packages.
cu13=$("$py" -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13"))')
[ -d "$cu13/include" ] && export CUDA_HOME=${CUDA_HOME:-$cu13}

serve_seconds=$("$py" -c "print($seconds * 4)")
sidecar=$here/bin/meridian-sidecar
serve=$here/bin/bench-serve
log "gpu-run: device=$device date=$(date -u +%Y-%m-%dT%H:%MZ) commit=$(cat "$here/COMMIT") gpu=\"$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1)\" host_cpus=$(nproc) torch=$("$py" -c 'import torch; print(torch.__version__)')"

repo=$out/repo
"$sidecar" generate-models --out "$repo" --transformer --max-batch-size 1024 --max-queue-delay-us 2000 \
  --config-extra "$(printf 'device: %s\ninstances: 4' "$device")" >/dev/null
mlp=$repo/mlp/1/model.onnx
block=$repo/transformer/1/model.onnx

for precision in fp32 fp16; do
  "$sidecar" bench --model "$mlp" --device "$device" --precision $precision --batch 1,32,256,1024 --threads 1,4 \
    --seconds "$seconds" --dump-output "$out/mlp-$precision.out" | tee -a "$raw"
  "$py" "$here/torch_baseline.py" --device "$torch_device" --model mlp --precision $precision --batch 1,32,256,1024 --seconds "$seconds" \
    --compare "$out/mlp-$precision.out" | tee -a "$raw"
  "$sidecar" bench --model "$block" --device "$device" --precision $precision --batch 1,32,256 --threads 1,4 \
    --seconds "$seconds" --dump-output "$out/transformer-$precision.out" | tee -a "$raw"
  "$py" "$here/torch_baseline.py" --device "$torch_device" --model transformer --precision $precision --batch 1,32,256 \
    --seconds "$seconds" --compare "$out/transformer-$precision.out" | tee -a "$raw"
done
# tract on the host's cores: one single-threaded plan per core, batch 256.
"$sidecar" bench --model "$block" --device cpu --batch 256 --threads "$(nproc)" --seconds "$seconds" |
  sed 's/^bench:/host-cpu:/' | tee -a "$raw"

# Served through gRPC: the sidecar on CUDA (4 instances, batches up to 1024).
NO_COLOR=1 "$sidecar" --model-repository "$repo" --device "$device" --grpc-listen 127.0.0.1:18001 --metrics-listen 127.0.0.1:18002 --http-listen 127.0.0.1:18000 \
  --repository-poll-secs 0 --log info 2>"$out/sidecar.log" &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
"$py" - <<'PY'
import time, urllib.request
for _ in range(600):
    try:
        if urllib.request.urlopen("http://127.0.0.1:18002/readyz", timeout=1).status == 200:
            break
    except Exception:
        pass
    time.sleep(0.5)
else:
    raise SystemExit("the sidecar did not become ready in 300 s")
PY
grep -m1 "device " "$out/sidecar.log" | tee -a "$raw" || true
"$serve" --addr 127.0.0.1:18001 --model mlp --row-shape 512 --rows 64 --concurrency 64 --threads 8 \
  --seconds "$serve_seconds" | tee -a "$raw"
"$serve" --addr 127.0.0.1:18001 --model transformer --row-shape 64,256 --rows 8 --concurrency 128 --threads 8 \
  --seconds "$serve_seconds" | tee -a "$raw"
kill $pid

"$py" "$here/summarize.py" "$raw" >"$out/gpu-results.md"
cat "$out/gpu-results.md"
