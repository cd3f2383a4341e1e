"""Turns the raw lines of integration/gpu/run.sh into one Markdown results
table with the GPU issue's bar checks. Usage: summarize.py raw.txt"""
import re
import sys


def fields(line):
    return dict(re.findall(r'(\w+)=("[^"]*"|\S+)', line))


def main(path):
    header, bench, torch, checks, served, cpu, device = {}, {}, {}, [], {}, {}, ""
    for line in open(path):
        line = line.strip()
        f = fields(line)
        if line.startswith("gpu-run:"):
            header = f
        elif line.startswith("host-cpu:") and "batch" in f:
            cpu[(f["model"], int(f["batch"]))] = (float(f["rows_per_s"]), int(f["threads"]))
        elif line.startswith("bench:") and "batch" in f:
            key = (f["model"], f["precision"], int(f["batch"]), int(f["threads"]))
            bench[key] = float(f["rows_per_s"])
        elif line.startswith("bench:") and "max_abs_diff_vs_cpu_fp32" in f:
            checks.append((f"meridian {f['device']} vs tract cpu fp32", f["model"], f["precision"], f["max_abs_diff_vs_cpu_fp32"], f.get("host_ops", "")))
        elif line.startswith("torch-check:"):
            checks.append(("pytorch vs meridian", f["model"], f["precision"], f["max_abs_diff_vs_meridian"], ""))
        elif line.startswith("torch:"):
            torch[(f["model"], f["precision"], int(f["batch"]))] = float(f["rows_per_s"])
        elif line.startswith("bench-serve:"):
            served[f["model"]] = (float(f["rows_per_s"]), float(f["mean_batch_rows"]), f["p99_ms"], f["errors"])
        elif "device cuda" in line:
            device = line

    out = []
    gpu = header.get("gpu", "?").strip('"')
    out.append(f"GPU results (device {header.get('device', '?')}) — {header.get('date', '?')}, {gpu}, commit {header.get('commit', '?')}, "
               f"{header.get('host_cpus', '?')} host CPUs, PyTorch {header.get('torch', '?')}\n")
    out.append("## Correctness (max |difference| on the bench's deterministic 8-row input)\n")
    out.append("| check | model | precision | max abs diff | ops left on the host |")
    out.append("|---|---|---|---|---|")
    for c in checks:
        host = c[4] if c[4] not in ("", "[]") else ("none" if c[0].startswith("meridian") else "—")
        out.append(f"| {c[0]} | {c[1]} | {c[2]} | {c[3]} | {host} |")
    out.append("\n## Raw executor vs PyTorch eager (inferences/s, host copies included)\n")
    out.append("| model | precision | batch | meridian 1 thread | meridian 4 threads | PyTorch eager | best meridian / PyTorch |")
    out.append("|---|---|---|---|---|---|---|")
    for (model, precision, batch), t in sorted(torch.items()):
        one = bench.get((model, precision, batch, 1), float("nan"))
        four = bench.get((model, precision, batch, 4), float("nan"))
        best = max(one, four)
        out.append(f"| {model} | {precision} | {batch} | {one:,.0f} | {four:,.0f} | {t:,.0f} | {best / t:.2f}× |")
    out.append(f"\n## Served through gRPC (bench-serve, meridian-sidecar --device {header.get('device', '?')}, 4 instances)\n")
    def best_raw(model, batch):
        return max(bench.get((model, "fp32", batch, t), 0.0) for t in (1, 4)) or float("nan")

    out.append("| model | rows/s | mean batch formed | p99 ms | errors | raw fp32 at that batch (best of 1, 4 threads) | served / raw |")
    out.append("|---|---|---|---|---|---|---|")
    for model, (rps, mean_batch, p99, errors) in served.items():
        sizes = sorted({b for (m, p, b, t) in bench if m == model and p == "fp32"})
        nearest = min(sizes, key=lambda b: abs(b - mean_batch)) if sizes else None
        raw = best_raw(model, nearest)
        out.append(f"| {model} | {rps:,.0f} | {mean_batch:.0f} | {p99} | {errors} | {raw:,.0f} (batch {nearest}) | {rps / raw:.2f}× |")
    out.append("\n## Bar\n")
    def ratio(model, precision, batch):
        t = torch.get((model, precision, batch))
        best = max(bench.get((model, precision, batch, 1), 0), bench.get((model, precision, batch, 4), 0))
        return best / t if t else float("nan")
    for batch in (256, 1024):
        r = ratio("mlp", "fp32", batch)
        out.append(f"- MLP fp32 batch {batch}: {r:.2f}× PyTorch eager (bar ≥ 0.8×): {'met' if r >= 0.8 else 'NOT met'}")
    r = max(ratio("transformer", "fp32", 256), ratio("transformer", "fp16", 256))
    out.append(f"- transformer batch 256: {r:.2f}× PyTorch eager at the same precision (bar ≥ 0.5×): {'met' if r >= 0.5 else 'NOT met'}")
    host = [c for c in checks if c[1] == "transformer" and c[4] not in ("", "[]")]
    out.append(f"- transformer ops on the host: {'none' if not host else host[0][4]}")
    c = cpu.get(("transformer", 256))
    if c:
        g = max(bench.get(("transformer", p, 256, t), 0) for p in ("fp32", "fp16") for t in (1, 4))
        out.append(f"- transformer batch 256: {g / c[0]:.1f}× tract on {c[1]} host CPU threads ({c[0]:,.0f}/s) (bar ≥ 5×): {'met' if g / c[0] >= 5 else 'NOT met'}")
    for model, (rps, mean_batch, _, _) in served.items():
        sizes = sorted({b for (m, p, b, t) in bench if m == model and p == "fp32"})
        if sizes:
            nearest = min(sizes, key=lambda b: abs(b - mean_batch))
            raw = best_raw(model, nearest)
            out.append(f"- served {model}: {rps / raw:.2f}× the raw executor at batch {nearest} (bar ≥ 0.5×): {'met' if rps / raw >= 0.5 else 'NOT met'}")
    if device:
        out.append(f"\nSidecar start: `{device}`")
    print("\n".join(out))


if __name__ == "__main__":
    main(sys.argv[1])
