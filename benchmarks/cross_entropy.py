"""The decoders' cross-entropy as custom ops (trainable/cross_entropy.py, kernels.c) against
F.cross_entropy on the float32 logits, as the step ran it before: forward and backward of one
decoder's logits in a step, each repetition on fresh (cold) tensors as a training step gives it.

    .venv/bin/python benchmarks/cross_entropy.py
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from gate import cold_microseconds

from umtune.trainable.cross_entropy import cross_entropy
from umtune.trainable.native import kernels_available

ROWS, CLASSES = 8000, 256  # one decoder's rows in a `cpu` or `paper` step, mu-law classes


def plain(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), target, reduction="none")


def ce_inputs(dtype, rows, classes):
    logits = (4 * torch.randn(rows, classes)).to(dtype).requires_grad_()
    return (logits, torch.randint(0, classes, (rows,))), torch.randn(rows)


def main() -> None:
    if not kernels_available():
        raise SystemExit("kernels.c could not be built here (no C compiler?)")
    print(f"threads: {torch.get_num_threads()}")
    print(f"{'rows x classes':15} {'dtype':9} {'cross-entropy':26} {'forward us':>11} "
          f"{'fwd+bwd us':>11}")
    for dtype in (torch.bfloat16, torch.float32):
        for label, fn in (("custom ops (kernels.c)", cross_entropy),
                          ("F.cross_entropy, float32", plain)):
            fwd, both = cold_microseconds(fn, partial(ce_inputs, dtype, ROWS, CLASSES))
            print(f"{f'{ROWS} x {CLASSES}':15} {str(dtype)[6:]:9} {label:26} {fwd:11.0f} "
                  f"{both:11.0f}")


if __name__ == "__main__":
    main()
