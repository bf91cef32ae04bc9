"""Where the `cpu` recipe's decoder layer loses to this machine's matmul peak.

Prints GFLOP/s of the layer's convolutions (oneDNN, bf16) against matmuls of the same FLOPs,
then one gated layer's forward and backward in the model's (B, C, T) convolution layout against
a channels-last rewrite with matmuls (the dilated convolution as one matmul over
[x(t - d), x(t)], the 1x1 as a linear), eager and compiled. Sizes: the `cpu` step's 6 domains x
2 segments x 4,000 samples, 64 residual and 128 gate channels, dilation 16.

    .venv/bin/python benchmarks/decoder_layer.py
"""

from __future__ import annotations

import time
from functools import partial

import torch
import torch.nn.functional as F

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
    w = (torch.randn(GATE, RES, 2) * 0.1).requires_grad_()
    bias = torch.zeros(GATE, requires_grad=True)
    w_out = (torch.randn(2 * RES, GATE // 2, 1) * 0.1).requires_grad_()
    x = torch.randn(ROWS, RES, T, requires_grad=True)
    x_last = x.detach().transpose(1, 2).contiguous().requires_grad_()

    def conv_layout(x):
        with torch.autocast("cpu", dtype=DT):
            a, g = F.conv1d(F.pad(x, (DIL, 0)), w, bias, dilation=DIL).chunk(2, 1)
            out = F.conv1d(torch.tanh(a) * torch.sigmoid(g), w_out)
        return out.float().sum()

    def channels_last(x):
        with torch.autocast("cpu", dtype=DT):
            past = F.pad(x, (0, 0, DIL, 0))[:, :-DIL]
            h = F.linear(torch.cat([past, x], -1), torch.cat([w[:, :, 0], w[:, :, 1]], 1), bias)
            a, g = h.chunk(2, -1)
            out = F.linear(torch.tanh(a) * torch.sigmoid(g), w_out[:, :, 0])
        return out.float().sum()

    print(f"\n{'one gated layer, forward + backward (bf16)':52} {'ms':>8}")
    for name, fn, inp in (("(B, C, T) convolutions", conv_layout, x),
                          ("channels-last matmuls", channels_last, x_last),
                          ("(B, C, T) convolutions, compiled", torch.compile(conv_layout), x),
                          ("channels-last matmuls, compiled", torch.compile(channels_last),
                           x_last)):
        print(f"{name:52} {1000 * seconds(partial(_backward, fn, inp), 5):8.1f}")


def _backward(fn, inp) -> None:
    fn(inp).backward()


if __name__ == "__main__":
    print(f"threads: {torch.get_num_threads()}")
    kernels()
    layers()
