"""The decoders' gate as custom ops (trainable/gate.py, kernels.c) against the same function as
PyTorch's ops, eager and compiled: forward and backward of one decoder's share of a step, with
the cold data a training step gives it (each repetition reads and writes fresh tensors).

    .venv/bin/python benchmarks/gate.py
"""

from __future__ import annotations

import time
from functools import partial

import torch

from umtune.trainable.gate import gate, reference_gate
from umtune.trainable.native import kernels_available

SIZES = {"cpu": (2, 20, 200, 128), "paper": (1, 10, 800, 256)}  # rows, frames, pool, gate
REPS = 40


def cold_microseconds(fn, make_inputs) -> tuple[float, float]:
    """Forward, and forward plus backward, in microseconds per call of fn(*args), each
    repetition on its own `make_inputs()` -> (args, grad), kept until the end, so that every
    call reads memory no earlier call warmed."""
    out = []
    for backward in (False, True):
        sets = [make_inputs() for _ in range(REPS + 2)]
        for args, grad in sets[:2]:  # warm-up (and, compiled, the compilation)
            fn(*args).backward(grad)
        start = time.perf_counter()
        for args, grad in sets[2:]:
            y = fn(*args)
            if backward:
                y.backward(grad)
        out.append((time.perf_counter() - start) / REPS * 1e6)
    return out[0], out[1]


def gate_inputs(dtype, rows, frames, pool, channels):
    h = torch.randn(rows, frames * pool, channels, dtype=dtype, requires_grad=True)
    cond = torch.randn(rows, frames, channels, dtype=dtype, requires_grad=True)
    return (h, cond), torch.randn(rows, frames * pool, channels // 2, dtype=dtype)


def main() -> None:
    if not kernels_available():
        raise SystemExit("kernels.c could not be built here (no C compiler?)")
    print(f"threads: {torch.get_num_threads()}")
    print(f"{'preset':7} {'dtype':9} {'gate':22} {'forward us':>11} {'fwd+bwd us':>11}")
    for name, sizes in SIZES.items():
        for dtype in (torch.bfloat16, torch.float32):
            for label, fn in (("custom ops (kernels.c)", gate), ("PyTorch ops", reference_gate),
                              ("PyTorch ops, compiled", torch.compile(reference_gate))):
                fwd, both = cold_microseconds(fn, partial(gate_inputs, dtype, *sizes))
                print(f"{name:7} {str(dtype)[6:]:9} {label:22} {fwd:11.0f} {both:11.0f}")


if __name__ == "__main__":
    main()
