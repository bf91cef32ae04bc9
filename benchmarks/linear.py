"""The channels-last matmuls as model.linear runs them on the CPU (one batched matmul over a
chunk of rows per thread) against F.linear: forward and backward at the `cpu` and `paper`
steps' shapes under bf16 autocast, each call on fresh (cold) tensors.

    .venv/bin/python benchmarks/linear.py
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from umtune.trainable.rows import linear

SHAPES = {  # rows, in, out
    "cpu dilated": (8000, 128, 128), "cpu res_skip": (8000, 64, 128),
    "cpu encoder": (48000, 96, 32), "paper dilated": (8000, 256, 256),
}
REPS = 30


def microseconds(fn, rows, c_in, c_out) -> tuple[float, float]:
    """Forward, and backward (the input's and the weight's gradients) of fn(x, weight) under
    bf16 autocast, us per call."""
    weight = torch.randn(c_out, c_in, requires_grad=True)
    sets = [(torch.randn(rows, c_in, dtype=torch.bfloat16, requires_grad=True),
             torch.randn(rows, c_out, dtype=torch.bfloat16)) for _ in range(REPS + 2)]
    times = [0.0, 0.0]
    for i, (x, grad) in enumerate(sets):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = fn(x, weight)
        middle = time.perf_counter()
        torch.autograd.grad(y, (x, weight), grad)
        end = time.perf_counter()
        if i >= 2:  # after the warm-up
            times = [times[0] + (middle - start) / REPS * 1e6,
                     times[1] + (end - middle) / REPS * 1e6]
    return times[0], times[1]


def main() -> None:
    print(f"threads: {torch.get_num_threads()}")
    print(f"{'shape':14} {'rows x in -> out':>20} {'matmul':9} {'forward us':>11} "
          f"{'backward us':>12}")
    for name, (rows, c_in, c_out) in SHAPES.items():
        for label, fn in (("F.linear", F.linear), ("linear", linear)):
            fwd, bwd = microseconds(fn, rows, c_in, c_out)
            print(f"{name:14} {f'{rows} x {c_in} -> {c_out}':>20} {label:9} {fwd:11.0f} "
                  f"{bwd:12.0f}")


if __name__ == "__main__":
    main()
