"""PyTorch eager baseline for integration/gpu/run.sh.

Builds the project's two models in PyTorch with the same seeded weights as
sidecar/src/models.rs (SplitMix64 stream per tensor, recomputed here with
numpy) and measures eager inference per batch size on the GPU, host copies
included: host tensor -> device -> forward -> host. With --compare, checks
that PyTorch's output on the bench's deterministic input matches the file
`meridian-sidecar bench --dump-output` wrote.

Lines printed (one per measurement):
  torch: model=<m> precision=<p> batch=<n> rows_per_s=<x> ms_per_batch=<y>
  torch-check: model=<m> precision=<p> max_abs_diff_vs_meridian=<d>
"""
import argparse
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

# seeded.py sits beside this script in the GPU bundle, in ../python in the repository.
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [_here, os.path.join(_here, "..", "python")]
from seeded import weights  # noqa: E402

class Mlp(torch.nn.Module):
    """Gemm + ReLU between layers, softmax at the end (models::mlp)."""

    def __init__(self, dims, seed):
        super().__init__()
        self.layers = torch.nn.ModuleList()
        for k in range(len(dims) - 1):
            fan_in, fan_out = dims[k], dims[k + 1]
            scale = np.float32(1.0) / np.sqrt(np.float32(fan_in))
            lin = torch.nn.Linear(fan_in, fan_out)
            w = weights(seed, 2 * k, fan_in * fan_out, scale).reshape(fan_in, fan_out)
            lin.weight.data = torch.from_numpy(np.ascontiguousarray(w.T))
            lin.bias.data = torch.from_numpy(weights(seed, 2 * k + 1, fan_out, scale))
            self.layers.append(lin)

    def forward(self, x):
        for i, lin in enumerate(self.layers):
            x = lin(x)
            if i + 1 < len(self.layers):
                x = torch.relu(x)
        return torch.softmax(x, dim=1)


class Block(torch.nn.Module):
    """Pre-LN block (models::transformer_block): x + Attn(LN1(x)); h + MLP(LN2(h)), tanh GELU."""

    def __init__(self, seq, width, heads, ffn, seed):
        super().__init__()
        self.heads, self.width = heads, width

        def norm(ids):
            g = torch.from_numpy(1.0 + weights(seed, ids[0], width, 0.1))
            b = torch.from_numpy(weights(seed, ids[1], width, 0.1))
            return torch.nn.Parameter(g), torch.nn.Parameter(b)

        def linear(ids, fan_in, fan_out):
            lin = torch.nn.Linear(fan_in, fan_out)
            scale = np.float32(1.0) / np.sqrt(np.float32(fan_in))
            w = weights(seed, ids[0], fan_in * fan_out, scale).reshape(fan_in, fan_out)
            lin.weight.data = torch.from_numpy(np.ascontiguousarray(w.T))
            lin.bias.data = torch.from_numpy(weights(seed, ids[1], fan_out, scale))
            return lin

        self.g1, self.b1 = norm((0, 1))
        self.q, self.k, self.v, self.o = (linear(i, width, width) for i in [(2, 3), (4, 5), (6, 7), (8, 9)])
        self.g2, self.b2 = norm((10, 11))
        self.up, self.down = linear((12, 13), width, ffn), linear((14, 15), ffn, width)

    def forward(self, x):
        n, s, d = x.shape
        h = F.layer_norm(x, (d,), self.g1, self.b1, 1e-5)
        split = lambda t: t.view(n, s, self.heads, d // self.heads).transpose(1, 2)
        ctx = F.scaled_dot_product_attention(split(self.q(h)), split(self.k(h)), split(self.v(h)))
        x = x + self.o(ctx.transpose(1, 2).reshape(n, s, d))
        h = F.layer_norm(x, (d,), self.g2, self.b2, 1e-5)
        return x + self.down(F.gelu(self.up(h), approximate="tanh"))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", choices=["mlp", "transformer"], required=True)
    p.add_argument("--precision", choices=["fp32", "fp16"], default="fp32")
    p.add_argument("--batch", default="1,32,256,1024")
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--mlp-dims", default="512,2048,2048,10")
    p.add_argument("--compare", help="meridian-sidecar bench --dump-output file")
    p.add_argument("--check-rows", type=int, default=8)
    p.add_argument("--device", default="cuda", help="cuda, or cpu to check the script without a GPU")
    a = p.parse_args()

    dev = torch.device(a.device)
    if a.model == "mlp":
        dims = [int(d) for d in a.mlp_dims.split(",")]
        model, row = Mlp(dims, a.seed), (dims[0],)
    else:
        model, row = Block(64, 256, 4, 1024, a.seed), (64, 256)
    dtype = torch.float16 if a.precision == "fp16" else torch.float32
    model = model.to(dev).to(dtype).eval()

    def run(x_host):
        # The same work as the sidecar's executor: FP32 in from host memory,
        # compute at the model's precision, FP32 back in host memory.
        with torch.inference_mode():
            return model(x_host.to(dev, non_blocking=False).to(dtype)).float().cpu()

    if a.compare:
        count = a.check_rows * math.prod(row)
        x = torch.from_numpy(weights(99, 0, count, 1.0).reshape((a.check_rows,) + row))
        ours = np.fromfile(a.compare, dtype="<f4")
        theirs = run(x).numpy().reshape(-1)
        diff = float(np.max(np.abs(ours - theirs))) if ours.size == theirs.size else float("nan")
        print(f"torch-check: model={a.model} precision={a.precision} max_abs_diff_vs_meridian={diff:.3e}", flush=True)

    for batch in [int(b) for b in a.batch.split(",")]:
        x = torch.from_numpy(weights(99, 0, batch * math.prod(row), 1.0).reshape((batch,) + row))
        for _ in range(3):
            run(x)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < a.seconds:
            run(x)
            n += 1
        wall = time.perf_counter() - start
        print(
            f"torch: model={a.model} precision={a.precision} batch={batch} "
            f"rows_per_s={n * batch / wall:.0f} ms_per_batch={wall * 1e3 / n:.3f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
