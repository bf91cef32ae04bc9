"""One decoder's gated layers, forward and backward, as the eager CPU step runs them
(`trainable/layer_stack.py`: one Function with its own backward) against the same layers as
modules (autograd's backward), at the `cpu` and `paper` presets' sizes: one decoder's share of
a step (2 x 4,000 and 1 x 8,000 samples), bf16 as under autocast (or fp32, `train.precision:
auto`'s choice where bf16 is emulated), fresh inputs each repetition. The two alternate,
`--rounds` times, in one process.

    .venv/bin/python benchmarks/layer_stack.py [--rounds 3] [--precision fp32]
"""

from __future__ import annotations

import argparse
import time

import torch

from umtune.config import preset
from umtune.trainable import layer_stack
from umtune.trainable.model import WaveNetDecoder

SIZES = {"cpu": (2, 4000), "paper": (1, 8000)}  # one decoder's rows x samples in a step
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def decoder_and_inputs(name: str, dtype: torch.dtype) -> tuple[WaveNetDecoder, list]:
    cfg = preset(name).model
    decoder = WaveNetDecoder(cfg.decoder, cfg.encoder.latent_channels, cfg.classes)
    rows, samples = SIZES[name]
    width = cfg.decoder.residual_channels + cfg.decoder.skip_channels
    frames = samples // cfg.encoder.pool
    inputs = [(torch.randn(rows, samples, width, dtype=dtype, requires_grad=True),
               [torch.randn(rows, frames, cfg.decoder.gate_channels, dtype=dtype)
                for _ in decoder.layers]) for _ in range(4)]
    return decoder, inputs


def as_modules(decoder: WaveNetDecoder, sums, conds):
    residual = decoder.layers[0].dilated.in_channels
    for layer, cond in zip(decoder.layers, conds, strict=True):
        sums = layer(sums, cond)
    return sums[..., residual:]


def seconds(fn, decoder, inputs, reps: int = 4) -> float:
    dtype = inputs[0][0].dtype

    def once(sums, conds):
        with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            skip = fn(decoder, sums, conds)
        skip.float().sum().backward()

    once(*inputs[0])
    start = time.perf_counter()
    for i in range(reps):
        once(*inputs[i % len(inputs)])
    return (time.perf_counter() - start) / reps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--precision", choices=DTYPES, default="bf16")
    args = parser.parse_args()
    print(f"threads: {torch.get_num_threads()}  precision: {args.precision}")
    print(f"{'preset':8} {'layers':>6} {'round':>5} {'modules ms':>11} {'stack ms':>9} ratio")
    for name in SIZES:
        decoder, inputs = decoder_and_inputs(name, DTYPES[args.precision])
        assert layer_stack.applies(inputs[0][0], decoder.gate_channels)
        for r in range(args.rounds):
            modules = seconds(as_modules, decoder, inputs)
            stack = seconds(lambda d, s, c: layer_stack.layer_stack(d.layers, s, c), decoder,
                            inputs)
            print(f"{name:8} {len(decoder.layers):6d} {r + 1:5d} {1000 * modules:11.1f} "
                  f"{1000 * stack:9.1f} {modules / stack:5.2f}x")


if __name__ == "__main__":
    main()
