"""A convolution's taps, channels-last: at each t, x[t - before + i * dilation] for i < kernel
size side by side (zeros outside x), so that the convolution is one matmul with `taps_weight`.

Written into one buffer, and their gradient added into one buffer the shape of x (autograd's
backward of slices of a zero-padded copy of x zero-fills and copies the padded copy once per
tap, docs/speed.md); on the CPU each in one pass of kernels.c, where PyTorch's strided copies
take a few passes per tap.

Or no taps at all (`tap_products`): one product per tap, of the rows of x that tap reads,
accumulated into the rows of the output it feeds. In float32 on the CPU this skips the taps'
write and read and their gradient's (k times x's size each); in bf16 every partial sum would
round, where the one product over the taps rounds once.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator

import torch
from torch import Tensor

from umtune.trainable.native import (
    MAX_CHANNELS,
    kernel,
    pointer,
    rows_evenly_strided,
    runs_on_kernels,
)


def taps_weight(weight: Tensor) -> Tensor:
    """A Conv1d's weight (O, C, k) as the (O, k * C) matrix that multiplies the taps."""
    return weight.transpose(1, 2).flatten(1)


def _tap_rows(t: int, kernel_size: int, dilation: int, before: int
             ) -> Iterator[tuple[int, int, int]]:
    """For each tap i: (shift, lo, hi), tap i at rows [lo, hi) reading x at rows + shift (zeros
    elsewhere)."""
    for i in range(kernel_size):
        shift = i * dilation - before
        lo = min(max(-shift, 0), t)
        yield shift, lo, max(lo, min(t - shift, t))


def write_taps(x: Tensor, channels: int, kernel_size: int, dilation: int, before: int,
               out: Tensor | None = None) -> Tensor:
    """The taps (B, T, kernel_size * channels) of x[..., :channels] (B, T, C), into `out` where
    given (a buffer reused while it is in cache)."""
    out = x.new_empty(*x.shape[:-1], kernel_size * channels) if out is None else out
    if _on_kernels(x, channels):
        kernel("taps", x.dtype)(pointer(x), pointer(out),
                                *_sizes(x, channels, kernel_size, dilation, before))
        return out
    for i, (shift, lo, hi) in enumerate(_tap_rows(x.shape[1], kernel_size, dilation, before)):
        tap = out[..., i * channels:(i + 1) * channels]
        tap[:, lo:hi] = x[:, lo + shift:hi + shift, :channels]
        tap[:, :lo] = 0
        tap[:, hi:] = 0
    return out


def add_tap_grads(grad_x: Tensor, grad_taps: Tensor, kernel_size: int, dilation: int,
                  before: int) -> None:
    """Add the taps' gradient (B, T, kernel_size * channels) into grad_x[..., :channels]."""
    channels = grad_taps.shape[-1] // kernel_size
    if _on_kernels(grad_x, channels) and grad_taps.is_contiguous() \
            and grad_taps.dtype == grad_x.dtype:
        kernel("tap_grads", grad_x.dtype)(pointer(grad_taps), pointer(grad_x),
                                          *_sizes(grad_x, channels, kernel_size, dilation, before))
        return
    for i, (shift, lo, hi) in enumerate(_tap_rows(grad_x.shape[1], kernel_size, dilation,
                                                 before)):
        grad_x[:, lo + shift:hi + shift, :channels] += grad_taps[:, lo:hi,
                                                                 i * channels:(i + 1) * channels]


def _on_kernels(x: Tensor, channels: int) -> bool:
    """Whether kernels.c writes these taps: x's rows (B * T of them) evenly strided."""
    return channels <= MAX_CHANNELS and rows_evenly_strided(x) and runs_on_kernels(x)


def _sizes(x: Tensor, channels: int, kernel_size: int, dilation: int, before: int
           ) -> tuple[ctypes.c_int64, ...]:
    return tuple(ctypes.c_int64(n) for n in (x.shape[0], x.shape[1], x.stride(1), channels,
                                             kernel_size, dilation, before))


def tap_products(x: Tensor, weight: Tensor, bias: Tensor | None, dilation: int, before: int
                 ) -> Tensor:
    """The convolution of x (B, T, C) with a Conv1d's weight (O, C, k) (and bias), tap i reading
    x[t - before + i * dilation] (zeros outside x): (B, T, O), as k products accumulated in
    place, with their own backward."""
    return _TapProducts.apply(x, weight, bias, dilation, before)


class _TapProducts(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, dilation: int,
                before: int) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.taps = dilation, before
        B, T, _ = x.shape
        out = x.new_zeros(B, T, weight.shape[0]) if bias is None else \
            bias.expand(B, T, -1).contiguous()
        for i, (shift, lo, hi) in enumerate(_tap_rows(T, weight.shape[-1], dilation, before)):
            out[:, lo:hi].baddbmm_(x[:, lo + shift:hi + shift],
                                   weight[:, :, i].t().expand(B, -1, -1))
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        B, T, _ = x.shape
        grad = grad.contiguous()
        grad_x = torch.zeros_like(x) if ctx.needs_input_grad[0] else None
        grad_weight = torch.empty_like(weight) if ctx.needs_input_grad[1] else None
        for i, (shift, lo, hi) in enumerate(_tap_rows(T, weight.shape[-1], *ctx.taps)):
            if grad_x is not None:
                grad_x[:, lo + shift:hi + shift].baddbmm_(grad[:, lo:hi],
                                                          weight[:, :, i].expand(B, -1, -1))
            if grad_weight is not None:
                grad_weight[:, :, i] = torch.bmm(grad[:, lo:hi].transpose(1, 2),
                                                 x[:, lo + shift:hi + shift]).sum(0)
        grad_bias = grad.sum((0, 1)) if ctx.needs_input_grad[2] else None
        return grad_x, grad_weight, grad_bias, None, None
