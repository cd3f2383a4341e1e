#!/usr/bin/env bash
# Assembles target/gpu-bundle (under 64 MiB, what the device tool carries) for
# integration/gpu/run.sh (called by `make gpu-bundle`,
# after the release builds): the stripped binaries, tract-cuda's kernels precompiled
# for the GPU architectures in $CUDA_ARCHS (default 90: H100/H200) with the NVRTC
# wheels the bootstrap installed, the scripts, and the commit. No GPU needed.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bundle=$root/target/gpu-bundle
cu13=$root/.tools/cuda/nvidia/cu13
rm -rf "$bundle"
mkdir -p "$bundle/bin" "$bundle/cache"
for bin in meridian-sidecar bench-serve; do
  strip --strip-all -o "$bundle/bin/$bin" "$root/target/release/$bin"
done
LD_LIBRARY_PATH=$cu13/lib "$bundle/bin/meridian-sidecar" cuda-precompile \
  --arch "${CUDA_ARCHS:-90}" --cache-home "$bundle/cache" --cuda-home "$cu13" | tail -1
cp "$root"/integration/gpu/{run.sh,torch_baseline.py,summarize.py} "$root/integration/python/seeded.py" "$bundle/"
commit=$(git -C "$root" rev-parse --short=12 HEAD)
git -C "$root" diff --quiet HEAD || commit="$commit+dirty"
echo "$commit" >"$bundle/COMMIT"
echo "gpu-bundle: $(du -sh "$bundle" | cut -f1) in ${bundle#"$root"/} (commit $commit); on the GPU machine: bash ${bundle#"$root"/}/run.sh"
