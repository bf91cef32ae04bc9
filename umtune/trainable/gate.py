"""The decoders' gate in training: tanh(a) * sigmoid(b) of a layer's pre-activation [a, b] plus
its latent frame's conditioning.

As PyTorch ops the gate is ~10 passes over (B, T, G) tensors (the frame add, tanh, sigmoid, the
product and their backward; tanh alone is slow on the CPU), and torch.compile's CPU code for it
is no faster. On the CPU it is therefore two custom ops, forward and backward, each one pass of
kernels.c, which torch.compile keeps whole. Elsewhere (CUDA, float64, no C compiler) the same
function runs as PyTorch ops (`reference_gate`).
"""

from __future__ import annotations

import ctypes

import torch
from torch import Tensor

from umtune.trainable.native import MAX_CHANNELS, kernel, pointer, runs_on_kernels


def add_per_frame(x: Tensor, frame_values: Tensor) -> Tensor:
    """x (B, T, C) + frame_values (B, F, C) repeated over T // F samples (nearest upsampling)."""
    B, T, C = x.shape
    frames = frame_values.shape[1]
    return (x.view(B, frames, T // frames, C) + frame_values[:, :, None]).view(B, T, C)


def reference_gate(h: Tensor, cond: Tensor) -> Tensor:
    a, b = add_per_frame(h, cond).chunk(2, dim=-1)
    return torch.tanh(a) * torch.sigmoid(b)


def gate(h: Tensor, cond: Tensor) -> Tensor:
    """Pre-activations h (B, T, G) and conditioning cond (B, F, G), F dividing T ->
    tanh(a) * sigmoid(b) (B, T, G // 2) of [a, b] = h + cond repeated over each frame."""
    if h.shape[-1] <= MAX_CHANNELS and runs_on_kernels(h):
        return gate_op(h, cond)
    return reference_gate(h, cond)


def _sizes(h: Tensor, cond: Tensor) -> tuple[ctypes.c_int64, ...]:
    B, T, G = h.shape
    frames = cond.shape[1]
    return tuple(ctypes.c_int64(n) for n in (B * frames, T // frames, G // 2))


def gate_forward(h: Tensor, cond: Tensor, out: Tensor | None = None) -> Tensor:
    """`gate_op` without the custom op's dispatch, for callers outside autograd and the
    compiler (layer_stack.py), into `out` (B, T, G // 2) where given (a buffer reused while
    it is in cache)."""
    h, c = h.contiguous(), cond.float().contiguous()
    out = h.new_empty(*h.shape[:-1], h.shape[-1] // 2) if out is None else out
    kernel("gate", h.dtype)(pointer(h), pointer(c), pointer(out), *_sizes(h, c))
    return out


@torch.library.custom_op("umtune::gate", mutates_args=(), device_types="cpu")
def gate_op(h: Tensor, cond: Tensor) -> Tensor:
    return gate_forward(h, cond)


@gate_op.register_fake
def _(h: Tensor, cond: Tensor) -> Tensor:
    return h.new_empty(*h.shape[:-1], h.shape[-1] // 2)


def _backward_kernel(grad: Tensor, h: Tensor, cond: Tensor, grad_h: Tensor | None = None,
                     out: Tensor | None = None) -> tuple[Tensor, Tensor]:
    grad, h, c = grad.contiguous(), h.contiguous(), cond.float().contiguous()
    grad_h = torch.empty_like(h) if grad_h is None else grad_h
    grad_c = torch.empty_like(c)
    kernel("gate_backward", h.dtype)(pointer(grad), pointer(h), pointer(c), pointer(grad_h),
                                     pointer(grad_c), pointer(out) if out is not None else None,
                                     *_sizes(h, c))
    return grad_h, grad_c.to(cond.dtype)


@torch.library.custom_op("umtune::gate_backward", mutates_args=(), device_types="cpu")
def gate_backward_op(grad: Tensor, h: Tensor, cond: Tensor) -> tuple[Tensor, Tensor]:
    return _backward_kernel(grad, h, cond)


def gate_backward_and_output(grad: Tensor, h: Tensor, cond: Tensor, grad_h: Tensor,
                             out: Tensor) -> Tensor:
    """`gate_backward_op`: the gradient of h written into grad_h (B, T, G) and the
    conditioning's returned, and the gate's output written again into out (B, T, G // 2) in
    the same pass, for a backward that did not keep it (grad_h and out: buffers reused while
    they are in cache)."""
    return _backward_kernel(grad, h, cond, grad_h, out)[1]


@gate_backward_op.register_fake
def _(grad: Tensor, h: Tensor, cond: Tensor) -> tuple[Tensor, Tensor]:
    return torch.empty_like(h), torch.empty_like(cond)


def _setup_context(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs)


def _backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor]:
    return gate_backward_op(grad, *ctx.saved_tensors)


gate_op.register_autograd(_backward, setup_context=_setup_context)
