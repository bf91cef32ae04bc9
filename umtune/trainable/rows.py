"""Matmuls over the rows of channels-last activations (..., C), as the eager CPU step runs them.

One batched matmul over a chunk of rows per thread, the weight broadcast, so that a weight's
gradient is a sum of per-thread products: as one (C, rows) x (rows, O) product, oneDNN leaves
a thread idle (docs/speed.md). Compiled and on CUDA, F.linear (inductor runs the batched form
slower than its own linear). And the column sums of such rows, a bias's gradient.
"""

from __future__ import annotations

import ctypes
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from umtune.trainable.native import kernel, pointer, rows_evenly_strided, runs_on_kernels

SUM_BLOCKS = 16  # column_sums' partial sums, whatever the threads (the same result every run)


def _chunks(x: Tensor) -> int:
    return math.gcd(x.numel() // x.shape[-1], torch.get_num_threads())


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """F.linear of channels-last x (..., C) and weight (O, C)."""
    if torch.compiler.is_compiling() or x.device.type != "cpu":
        return F.linear(x, weight, bias)
    chunks = _chunks(x)
    if chunks == 1:
        return F.linear(x, weight, bias)
    rows = x.reshape(chunks, -1, x.shape[-1])
    w = weight.t().expand(chunks, -1, -1)
    out = torch.bmm(rows, w) if bias is None else torch.baddbmm(bias, rows, w)
    return out.view(*x.shape[:-1], -1)


def weight_grad(x: Tensor, grad: Tensor) -> Tensor:
    """The gradient (O, C), float32, of `linear(x, weight)`'s weight given its output's gradient
    grad (..., O): a product per thread of their chunks of rows, summed."""
    chunks = _chunks(x)
    per_chunk = torch.bmm(grad.reshape(chunks, -1, grad.shape[-1]).transpose(1, 2),
                          x.reshape(chunks, -1, x.shape[-1]))
    return per_chunk.sum(0, dtype=torch.float32)


def column_sums(x: Tensor) -> Tensor:
    """The float32 sum of x (..., C) over all its rows (a bias's gradient). bf16 on the CPU in
    one pass of kernels.c: PyTorch's sum(dtype=torch.float32) first copies all of x to float32."""
    if not (x.dtype == torch.bfloat16 and rows_evenly_strided(x) and runs_on_kernels(x)):
        return x.sum(tuple(range(x.dim() - 1)), dtype=torch.float32)
    partial = x.new_empty(SUM_BLOCKS, x.shape[-1], dtype=torch.float32)
    kernel("column_sums", x.dtype)(pointer(x), pointer(partial),
                                   *(ctypes.c_int64(n) for n in (x.numel() // x.shape[-1],
                                                                 x.stride(-2), x.shape[-1],
                                                                 SUM_BLOCKS)))
    return partial.sum(0)
