"""Throughput of the full training step (both updates) for the `tiny` and `paper` presets.

Runs `Trainer.step()` exactly as training does (segment reads, augmentation, confusion update,
autoencoder update), counts its FLOPs with torch.utils.flop_counter, and prints samples/s and
achieved GFLOP/s next to this machine's fp32 and bf16 matmul peaks measured in the same run.

    .venv/bin/python benchmarks/train_step.py --data data/bach
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch
from torch.utils.flop_counter import FlopCounterMode

from umtune.config import RunConfig, preset
from umtune.data import Dataset
from umtune.trainable.loop import Trainer


def matmul_peak(dtype: torch.dtype, device: str = "cpu", n: int = 2048, reps: int = 10) -> float:
    """GFLOP/s of an n x n matmul: the peak this machine reaches in `dtype`, measured."""
    a = torch.randn(n, n, device=device).to(dtype)
    a @ a
    if a.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(reps):
        b = a @ a
    b.sum().item()  # waits for the GPU
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9


def step_config(name: str, data: Dataset, *, domains: int | None = None,
                batch_per_domain: int | None = None, segment: int = 0,
                precision: str | None = None) -> RunConfig:
    """Preset `name` on `data`'s first `domains` domains, sized for a benchmark (None and 0 keep
    the preset's)."""
    cfg = preset(name, data.domains[:domains])
    return replace(cfg, data=replace(cfg.data, path=str(data.path),
                                     batch_per_domain=batch_per_domain or cfg.data.batch_per_domain,
                                     segment_samples=segment or cfg.data.segment_samples),
                   train=replace(cfg.train, precision=precision or cfg.train.precision))


def measure(cfg: RunConfig, data: Dataset, steps: int, **trainer_options) -> dict:
    """Seconds and FLOPs of `Trainer.step()`: one step counted, one warm-up, `steps` timed.

    `trainer_options` (device, wrap, rank, world_size) place the trainer; under DDP the rates
    are of the global batch and the FLOPs of this process's share.
    """
    trainer = Trainer(cfg, data, **trainer_options)
    with FlopCounterMode(display=False) as counter:
        trainer.step()
    trainer.step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        trainer.step()  # returns floats: waits for the GPU
    seconds = (time.perf_counter() - start) / steps
    samples = cfg.data.batch_per_domain * len(cfg.model.domains) * cfg.data.segment_samples
    return {"precision": cfg.train.precision,
            "batch": f"{len(cfg.model.domains)}x{cfg.data.batch_per_domain}x"
                     f"{cfg.data.segment_samples}",
            "s/step": seconds, "samples/s": samples / seconds,
            "GFLOP/step": counter.get_total_flops() / 1e9,
            "GFLOP/s": counter.get_total_flops() / seconds / 1e9}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="data/bach")
    p.add_argument("--presets", default="tiny,paper")
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--domains", type=int, default=2, help="domains in each step")
    p.add_argument("--batch-per-domain", type=int, default=1)
    p.add_argument("--segment", type=int, default=8000, help="samples per segment (0: preset)")
    p.add_argument("--steps", type=int, default=3)
    args = p.parse_args()
    data = Dataset.open(args.data)
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    print(f"threads: {torch.get_num_threads()}  matmul peak: fp32 {peaks['fp32']:.0f} GFLOP/s, "
          f"bf16 {peaks['bf16']:.0f} GFLOP/s")
    header = f"{'preset':7} {'prec':5} {'batch':>12} {'s/step':>7} {'samples/s':>10} " \
             f"{'GFLOP/step':>10} {'GFLOP/s':>8} {'% fp32 peak':>11}"
    print(header)
    for name in args.presets.split(","):
        for precision in args.precisions.split(","):
            cfg = step_config(name, data, domains=args.domains,
                              batch_per_domain=args.batch_per_domain, segment=args.segment,
                              precision=precision)
            r = measure(cfg, data, args.steps)
            print(f"{name:7} {r['precision']:5} {r['batch']:>12} {r['s/step']:7.3f} "
                  f"{r['samples/s']:10.0f} {r['GFLOP/step']:10.1f} {r['GFLOP/s']:8.1f} "
                  f"{100 * r['GFLOP/s'] / peaks['fp32']:10.0f}%")


if __name__ == "__main__":
    main()
