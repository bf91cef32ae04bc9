"""Where the `cpu` recipe's decoder layer loses to this machine's matmul peak.

Prints GFLOP/s of the layer's convolutions (oneDNN, bf16) against matmuls of the same FLOPs,
then one gated layer's forward and backward as the model runs it (`DecoderLayer`: channels-last,
the dilated convolution as one matmul over [x(t - d), x(t)], the 1x1 as a linear) against the
same weights as (B, C, T) convolutions, eager and compiled. Sizes: the `cpu` step's 6 domains x
2 segments x 4,000 samples (one decoder's 2 for the layer), 64 residual and 128 gate channels,
dilation 16.

    .venv/bin/python benchmarks/decoder_layer.py
"""

from __future__ import annotations

import time
from functools import partial

import torch
import torch.nn.functional as F

from umtune.config import DecoderConfig
from umtune.trainable.model import DecoderLayer

ROWS, RES, GATE, T, DIL = 12, 64, 128, 4000, 16
DT = torch.bfloat16


def seconds(fn, reps: int = 10) -> float:
    fn()
    fn()  # warm-up (and, compiled, the compilation)
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - start) / reps


def kernels() -> None:
    dilated_flops = 2 * ROWS * T * RES * 2 * GATE
    x = torch.randn(ROWS, RES, T + DIL, dtype=DT)
    w = torch.randn(GATE, RES, 2, dtype=DT)
    a, b = torch.randn(ROWS * T, 2 * RES, dtype=DT), torch.randn(2 * RES, GATE, dtype=DT)
    x1, w1 = torch.randn(ROWS, RES, T, dtype=DT), torch.randn(GATE, RES, 1, dtype=DT)
    rows, w2 = torch.randn(ROWS * T, RES, dtype=DT), torch.randn(GATE, RES, dtype=DT)
    big = torch.randn(2048, 2048, dtype=DT)
    print(f"{'kernel (bf16, forward)':52} {'GFLOP/s':>8}")
    for name, fn, flops in (
            ("dilated conv1d k=2, 64 -> 128, (B, C, T)", lambda: F.conv1d(x, w, dilation=DIL),
             dilated_flops),
            ("the same FLOPs as a (48000 x 128) @ (128 x 128) matmul", lambda: a @ b,
             dilated_flops),
            ("1x1 conv1d 64 -> 128, (B, C, T)", lambda: F.conv1d(x1, w1), dilated_flops / 2),
            ("the same as a linear over (48000, 64) rows", lambda: F.linear(rows, w2),
             dilated_flops / 2),
            ("2048^3 matmul (the peak)", lambda: big @ big, 2 * 2048**3)):
        print(f"{name:52} {flops / seconds(fn) / 1e9:8.0f}")


def layers() -> None:
    """The model's DecoderLayer (channels-last matmuls) against the same weights as the
    (B, C, T) convolutions it ran as before, forward and backward, on one decoder's share of
    the step (2 segments; the residual stream in bf16, as under autocast)."""
    rows, frames = 2, T // 200
    layer = DecoderLayer(DecoderConfig(residual_channels=RES, gate_channels=GATE,
                                       skip_channels=RES), DIL)
    cond = torch.randn(rows, frames, GATE)
    sums = torch.randn(rows, T, 2 * RES, dtype=DT, requires_grad=True)
    x = torch.randn(rows, RES, T, dtype=DT, requires_grad=True)
    skip = torch.randn(rows, RES, T, dtype=DT)

    def conv_layout(x):
        with torch.autocast("cpu", dtype=DT):
            h = F.conv1d(F.pad(x, (DIL, 0)), layer.dilated.weight, layer.dilated.bias,
                         dilation=DIL)
            h = (h.view(rows, GATE, frames, -1) + cond.transpose(1, 2)[..., None]).flatten(2)
            a, g = h.chunk(2, 1)
            out = F.conv1d(torch.tanh(a) * torch.sigmoid(g), layer.res_skip.weight,
                           layer.res_skip.bias)
            return (x + out[:, :RES]).float().sum() + (skip + out[:, RES:]).float().sum()

    def matmul_layout(sums):
        with torch.autocast("cpu", dtype=DT):
            return layer(sums, cond).float().sum()

    print(f"\n{'one gated layer, forward + backward (bf16, 2 x 4,000)':52} {'ms':>8}")
    for name, fn, inp in (("(B, C, T) convolutions", conv_layout, x),
                          ("DecoderLayer: channels-last matmuls", matmul_layout, sums),
                          ("(B, C, T) convolutions, compiled", torch.compile(conv_layout), x),
                          ("DecoderLayer, compiled", torch.compile(matmul_layout), sums)):
        print(f"{name:52} {1000 * seconds(partial(_backward, fn, inp), 10):8.2f}")


def _backward(fn, inp) -> None:
    fn(inp).backward()


if __name__ == "__main__":
    print(f"threads: {torch.get_num_threads()}")
    kernels()
    layers()
