"""The decoders' cross-entropy in training: each sample's CE of its mu-law logits.

As PyTorch ops it is a float32 copy of the bf16 logits, a log-softmax, a gather, and in the
backward a zero-filled one-hot, the log-softmax's backward and a cast back: ~7 passes over
(rows, classes). On the CPU it is therefore two custom ops, forward and backward, each one pass
of kernels.c (the forward keeps each row's log-sum-exp for the backward). Elsewhere (CUDA,
float64, no C compiler) the same function runs as PyTorch ops.
"""

from __future__ import annotations

import ctypes

import torch
import torch.nn.functional as F
from torch import Tensor

from umtune.trainable.native import kernel, pointer, runs_on_kernels


def cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """Logits (N, C) and class indices target (N,) -> each row's CE (N,) in float32, as
    F.cross_entropy(logits.float(), target, reduction="none")."""
    if runs_on_kernels(logits):
        return _cross_entropy(logits, target)[0]
    return F.cross_entropy(logits.float(), target, reduction="none")


def _sizes(logits: Tensor) -> tuple[ctypes.c_int64, ...]:
    return ctypes.c_int64(logits.shape[0]), ctypes.c_int64(logits.shape[1])


def _checked(logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    if target.numel() and not 0 <= int(target.min()) <= int(target.max()) < logits.shape[1]:
        raise IndexError(f"cross_entropy: targets must lie in [0, {logits.shape[1]}), got "
                         f"[{int(target.min())}, {int(target.max())}]")
    return logits.contiguous(), target.long().contiguous()


@torch.library.custom_op("umtune::cross_entropy", mutates_args=(), device_types="cpu")
def _cross_entropy(logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """-> each row's CE and its log-sum-exp, both float32."""
    logits, target = _checked(logits, target)
    loss, lse = (logits.new_empty(logits.shape[0], dtype=torch.float32) for _ in range(2))
    kernel("cross_entropy", logits.dtype)(pointer(logits), pointer(target), pointer(loss),
                                          pointer(lse), *_sizes(logits))
    return loss, lse


@_cross_entropy.register_fake
def _(logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    return tuple(logits.new_empty(logits.shape[0], dtype=torch.float32) for _ in range(2))


@torch.library.custom_op("umtune::cross_entropy_backward", mutates_args=(),
                         device_types="cpu")
def _cross_entropy_backward(grad: Tensor, logits: Tensor, target: Tensor, lse: Tensor,
                            ) -> Tensor:
    # The forward checked these targets.
    logits, target = logits.contiguous(), target.long().contiguous()
    grad, lse = grad.float().contiguous(), lse.contiguous()
    out = torch.empty_like(logits)
    kernel("cross_entropy_backward", logits.dtype)(pointer(grad), pointer(logits),
                                                   pointer(target), pointer(lse), pointer(out),
                                                   *_sizes(logits))
    return out


@_cross_entropy_backward.register_fake
def _(grad: Tensor, logits: Tensor, target: Tensor, lse: Tensor) -> Tensor:
    return torch.empty_like(logits)


def _setup_context(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs, output[1])


def _backward(ctx, grad: Tensor, _grad_lse: Tensor | None) -> tuple[Tensor, None]:
    logits, target, lse = ctx.saved_tensors
    return _cross_entropy_backward(grad, logits, target, lse), None


_cross_entropy.register_autograd(_backward, setup_context=_setup_context)
