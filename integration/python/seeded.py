"""The project's seeded weights (sidecar/src/models.rs `weights`), recomputed
with numpy: a SplitMix64 stream per tensor, so Python references use the
same weights as the generated ONNX models without reading them."""
import numpy as np

GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def weights(seed, index, count, scale):
    """`count` weights of tensor `index` for `seed`, uniform in [-scale, scale)."""
    with np.errstate(over="ignore"):
        tensor_seed = np.uint64(seed) ^ (np.uint64(index + 1) * GOLDEN)
        z = tensor_seed + (np.arange(1, count + 1, dtype=np.uint64) * GOLDEN)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    u = (z >> np.uint64(40)).astype(np.float32) / np.float32(1 << 24)
    return ((u * np.float32(2.0) - np.float32(1.0)) * np.float32(scale)).astype(np.float32)


def mlp(x, seed, dims):
    """The generated `mlp` model (dense layers with ReLU, softmax) on `x`,
    in float64 from the seeded weights."""
    h = x.astype(np.float64)
    layers = len(dims) - 1
    for k in range(layers):
        fan_in, fan_out = dims[k], dims[k + 1]
        scale = np.float32(1.0) / np.sqrt(np.float32(fan_in))
        w = weights(seed, 2 * k, fan_in * fan_out, scale).reshape(fan_in, fan_out).astype(np.float64)
        b = weights(seed, 2 * k + 1, fan_out, scale).astype(np.float64)
        h = h @ w + b
        if k + 1 < layers:
            h = np.maximum(h, 0.0)
    e = np.exp(h - h.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)
