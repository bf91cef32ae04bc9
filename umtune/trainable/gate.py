"""The decoders' gate in training: tanh(a) * sigmoid(b) of a layer's pre-activation [a, b] plus
its latent frame's conditioning.

As PyTorch ops the gate is ~10 passes over (B, T, G) tensors (the frame add, tanh, sigmoid, the
product and their backward; tanh alone is slow on the CPU), and torch.compile's CPU code for it
is no faster. On the CPU it is therefore two custom ops, forward and backward, each one pass of
gate.c, which torch.compile keeps whole. Elsewhere (CUDA, float64, no C compiler) the same
function runs as PyTorch ops (`reference_gate`).
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import torch
from torch import Tensor

from umtune.trainable.native import KernelUnavailable, build

SOURCE = Path(__file__).with_name("gate.c")
COMPILE = ["-O3", "-march=native", "-fopenmp", "-fPIC"]
LINK = ["-shared", "-fopenmp"]
KERNELS = {torch.bfloat16: "bf16", torch.float32: "f32"}
MAX_GATE = 4096  # gate.c's per-frame buffer


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
    if (h.device.type == "cpu" and h.dtype in KERNELS and h.shape[-1] <= MAX_GATE
            and kernel_available()):
        return _gate(h, cond)
    return reference_gate(h, cond)


@functools.cache
def _library() -> ctypes.CDLL | None:
    """gate.c built and loaded once per process; None where it cannot be (then PyTorch ops)."""
    try:
        return ctypes.CDLL(str(build(SOURCE, COMPILE, LINK)))
    except (KernelUnavailable, OSError):
        return None


@torch.compiler.assume_constant_result
def kernel_available() -> bool:
    return _library() is not None


def _sizes(h: Tensor, cond: Tensor) -> tuple[ctypes.c_int64, ...]:
    B, T, G = h.shape
    frames = cond.shape[1]
    return tuple(ctypes.c_int64(n) for n in (B * frames, T // frames, G // 2))


def _pointer(t: Tensor) -> ctypes.c_void_p:
    return ctypes.c_void_p(t.data_ptr())


@torch.library.custom_op("umtune::gate", mutates_args=(), device_types="cpu")
def _gate(h: Tensor, cond: Tensor) -> Tensor:
    library = _library()
    h, c = h.contiguous(), cond.float().contiguous()
    out = h.new_empty(*h.shape[:-1], h.shape[-1] // 2)
    getattr(library, f"umtune_gate_{KERNELS[h.dtype]}")(_pointer(h), _pointer(c), _pointer(out),
                                                        *_sizes(h, c))
    return out


@_gate.register_fake
def _(h: Tensor, cond: Tensor) -> Tensor:
    return h.new_empty(*h.shape[:-1], h.shape[-1] // 2)


@torch.library.custom_op("umtune::gate_backward", mutates_args=(), device_types="cpu")
def _gate_backward(grad: Tensor, h: Tensor, cond: Tensor) -> tuple[Tensor, Tensor]:
    library = _library()
    grad, h, c = grad.contiguous(), h.contiguous(), cond.float().contiguous()
    grad_h, grad_c = torch.empty_like(h), torch.empty_like(c)
    getattr(library, f"umtune_gate_backward_{KERNELS[h.dtype]}")(
        _pointer(grad), _pointer(h), _pointer(c), _pointer(grad_h), _pointer(grad_c),
        *_sizes(h, c))
    return grad_h, grad_c.to(cond.dtype)


@_gate_backward.register_fake
def _(grad: Tensor, h: Tensor, cond: Tensor) -> tuple[Tensor, Tensor]:
    return torch.empty_like(h), torch.empty_like(cond)


def _setup_context(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs)


def _backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor]:
    return _gate_backward(grad, *ctx.saved_tensors)


_gate.register_autograd(_backward, setup_context=_setup_context)
