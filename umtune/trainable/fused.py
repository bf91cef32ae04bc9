"""The generation step compiled: fused_step.c, built on first use with the system's C compiler.

The C loop runs a `DecoderStack`'s steps on its own tensors (weights, `DecoderCache`,
`Conditioning`), so it needs no copy of the model and computes what `decoder_step` computes. It
serves CPU batches of a few rows, where PyTorch's per-operation cost dominates; larger batches
and GPUs keep the PyTorch step, whose matmuls are then efficient.

The library is built and cached by native.py.
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import torch
from torch import Tensor

from umtune.trainable.native import KernelUnavailable
from umtune.trainable.native import build as build_library

SOURCE = Path(__file__).with_name("fused_step.c")
# -ffast-math vectorises tanhf/expf through libmvec.
COMPILE = ["-O3", "-march=native", "-ffast-math", "-fPIC"]
LINK = ["-shared", "-lmvec", "-lm"]
SIZES = ("layers", "decoders", "batch", "residual", "skip", "gate", "kernel", "classes", "pool",
         "length")


def build() -> Path:
    """The compiled step's path, built if this source, these flags and this CPU have none."""
    return build_library(SOURCE, COMPILE, LINK)


@functools.cache
def _kernel_or_reason() -> ctypes.CDLL | str:
    """Built and loaded once per process; a failure too is remembered, not retried."""
    try:
        kernel = ctypes.CDLL(str(build()))
    except (KernelUnavailable, OSError) as e:
        return str(e)
    kernel.umtune_steps.restype = None
    kernel.umtune_steps.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                                    ctypes.c_void_p, ctypes.c_void_p, ctypes.c_float,
                                    ctypes.c_float, ctypes.c_void_p, ctypes.c_void_p,
                                    ctypes.c_int64, ctypes.c_int64]
    return kernel


def load_kernel() -> ctypes.CDLL:
    kernel = _kernel_or_reason()
    if isinstance(kernel, str):
        raise KernelUnavailable(kernel)
    return kernel


def fused_available() -> str | None:
    """None when the C step loads here, else why not."""
    kernel = _kernel_or_reason()
    return kernel if isinstance(kernel, str) else None


class FusedSteps:
    """A `DecoderStack`, its `DecoderCache` (whose state the C step advances) and a latent's
    `Conditioning` bound to the C step, for codes (G, B, length).

    Holds every tensor whose address the C code reads, so that they outlive its calls.
    """

    def __init__(self, stack, cache, conditioning, pool: int, length: int):
        G, batch = len(stack), cache.batch
        sums, gate = stack.start.shape[-1], stack.gate_channels
        skip = sums - stack.residual_channels
        self.logits = torch.zeros(G, batch, stack.classes)
        scratch = torch.empty(batch * (sums + gate + gate // 2 + skip))
        tensors = [stack.start, stack.past, stack.present, stack.res_skip, stack.head_hidden,
                   stack.head_out, stack.out_bias, conditioning.gates, conditioning.head,
                   cache.past.values, cache.inputs, self.logits, scratch]
        for t in tensors:
            if t.dtype != torch.float32 or t.device.type != "cpu" or not t.is_contiguous():
                raise KernelUnavailable(f"the fused step runs contiguous float32 tensors on the "
                                        f"CPU, got {t.dtype} on {t.device}")
        self.tensors = tensors
        sizes = dict(layers=len(stack.dilations), decoders=G, batch=batch,
                     residual=stack.residual_channels, skip=skip,
                     gate=gate, kernel=stack.kernel_size, classes=stack.classes, pool=pool,
                     length=length)
        self.sizes = torch.tensor([sizes[name] for name in SIZES], dtype=torch.long)
        self.shape = (G, batch, length)
        past = cache.past
        self.ring = torch.cat([past.lengths[:, 0], past.offsets[:, 0], past.lags.flatten()])
        self.pointers = (ctypes.c_void_p * len(tensors))(*[t.data_ptr() for t in tensors])
        self.kernel = load_kernel()

    def run(self, codes: Tensor, t0: int, steps: int, noise: Tensor | None = None,
            temperature: float = 1.0, floor: float = 0.0, levels: Tensor | None = None,
            means: Tensor | None = None) -> None:
        """Steps t0 .. t0 + steps - 1. With noise (steps, G, B, classes) each samples its code
        into `codes` (Gumbel-max, never a class less probable than `floor`) and, with `means`
        (float32, the shape of codes), the expectation of `levels` (classes,) under its
        distribution; without noise, codes are only read (teacher forcing) and `logits` are the
        last step's."""
        if codes.shape != self.shape or codes.dtype != torch.long or not codes.is_contiguous():
            raise ValueError(f"codes: expected a contiguous int64 tensor of shape {self.shape}, "
                             f"got {codes.dtype} {tuple(codes.shape)}")
        if noise is not None:
            noise = noise.contiguous()
        if means is not None and (means.shape != self.shape or means.dtype != torch.float32
                                  or not means.is_contiguous() or levels is None):
            raise ValueError(f"means: expected a contiguous float32 tensor of shape {self.shape}"
                             " and the class levels")
        if levels is not None:
            levels = levels.float().contiguous()
        self.kernel.umtune_steps(self.sizes.data_ptr(), self.pointers, self.ring.data_ptr(),
                                 codes.data_ptr(), None if noise is None else noise.data_ptr(),
                                 temperature, floor,
                                 None if levels is None else levels.data_ptr(),
                                 None if means is None else means.data_ptr(), t0, steps)
