"""Cost model of `paper`-preset sweeps on GPU clusters: GPU-hours and money per trial, trials
per day on 8 and 64 GPUs, with and without ASHA.

The one measured input is the FLOPs per audio sample of a full training step (both updates),
counted here by torch.utils.flop_counter on the `paper` preset exactly as
benchmarks/train_step.py does. Everything else is an assumption printed with the tables:
public peaks and memory bandwidths, a roofline for achievable throughput (the WaveNet's 128-256
channel convolutions do about 64 FLOP per byte moved in bf16, so most GPUs are memory-bound
here), list prices that change often (override with --price), the trial length in epochs of the
official recipe, and a fixed start-up cost per trial (Train worker group, data, first compile).

    .venv/bin/python benchmarks/sweep_cost.py --data data/bach
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, replace

from train_step import measure, step_config

from umtune.data import Dataset

# The official recipe's epoch: 1000 steps, each 32 segments of 12000 samples for each of 6 domains.
EPOCH_SAMPLES = 1000 * 32 * 12000 * 6
ASHA_REDUCTION = 2  # umtune sweep's ASHA reduction factor
BF16_FLOP_PER_BYTE = 64  # 1x1 128->128 conv in bf16; the k=2 dilated 128->256 conv is about 128


@dataclass(frozen=True)
class Instance:
    """A cloud instance type: its GPUs' bf16 dense peak and HBM bandwidth, and a list price
    (AWS us-east-1 on-demand after the June 2025 cuts, rounded; they change, see --price)."""

    name: str
    gpu: str
    gpus: int
    bf16_tflops: float
    tb_per_s: float
    usd_per_hour: float

    def memory_bound(self, utilisation: float) -> bool:
        return BF16_FLOP_PER_BYTE * self.tb_per_s < utilisation * self.bf16_tflops

    def samples_per_s_per_gpu(self, flop_per_sample: float, utilisation: float) -> float:
        """Roofline: a share of the compute peak, or what memory bandwidth allows, if lower."""
        flops = min(utilisation * self.bf16_tflops, BF16_FLOP_PER_BYTE * self.tb_per_s) * 1e12
        return flops / flop_per_sample


INSTANCES = [
    Instance("g6e.12xlarge", "L40S", 4, 362, 0.864, 10.49),
    Instance("p4d.24xlarge", "A100 40GB", 8, 312, 1.555, 21.96),
    Instance("p5.48xlarge", "H100 SXM", 8, 989, 3.35, 55.04),
]


def asha_epochs_per_trial(max_epochs: float, grace: float, eta: int = ASHA_REDUCTION) -> float:
    """Mean epochs a trial trains under ASHA with many trials: every trial reaches the grace
    period, 1/eta of them each next rung (grace * eta^k), 1/eta^K of them max_epochs."""
    rungs = [grace * eta**k for k in range(int(math.log(max_epochs / grace, eta)) + 1)]
    rungs = [r for r in rungs if r < max_epochs] + [max_epochs]
    segments = zip(rungs, rungs[1:], strict=False)
    return rungs[0] + sum((b - a) / eta ** (k + 1) for k, (a, b) in enumerate(segments))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="data/bach")
    p.add_argument("--epochs", type=float, nargs="+", default=[10, 100],
                   help="trial lengths, in epochs of the official recipe (2.30 G samples each)")
    p.add_argument("--grace", type=float, default=0.1,
                   help="ASHA grace period as a fraction of the trial length")
    p.add_argument("--utilisation", type=float, default=0.4, help="of the bf16 compute peak")
    p.add_argument("--trial-gpus", type=int, default=0,
                   help="Train workers (GPUs) per trial (default: one instance's GPUs)")
    p.add_argument("--startup-minutes", type=float, default=3.0,
                   help="per trial: worker group start, data, warm-up (GPUs held, idle)")
    p.add_argument("--price", action="append", default=[], metavar="INSTANCE=USD_PER_HOUR")
    args = p.parse_args()

    prices = {k: float(v) for k, v in (item.split("=") for item in args.price)}
    instances = [replace(i, usd_per_hour=prices.get(i.name, i.usd_per_hour)) for i in INSTANCES]
    data = Dataset.open(args.data)
    counted = measure(step_config("paper", data, domains=2, batch_per_domain=1, segment=4000,
                                  precision="fp32"), data, steps=1)
    flop_per_sample = counted["GFLOP/step"] * 1e9 / (2 * 4000)
    print(f"paper preset: {flop_per_sample / 1e6:.2f} MFLOP per training sample (counted); "
          f"official epoch = {EPOCH_SAMPLES / 1e9:.2f} G samples = "
          f"{EPOCH_SAMPLES * flop_per_sample / 1e15:.0f} PFLOP")
    print(f"assumed: {args.utilisation:.0%} of bf16 peak or {BF16_FLOP_PER_BYTE} FLOP/byte x "
          f"bandwidth, whichever is lower; {args.startup_minutes:g} min start-up per trial; "
          f"ASHA grace {args.grace:.0%} of the trial, reduction {ASHA_REDUCTION}\n")

    print(f"{'instance':13} {'GPU':10} {'$/GPU-h':>7} {'M samples/s/GPU':>15} {'bound':>7} "
          f"{'GPU-h/epoch':>11} {'$/epoch':>8}")
    for i in instances:
        rate = i.samples_per_s_per_gpu(flop_per_sample, args.utilisation)
        bound = "memory" if i.memory_bound(args.utilisation) else "compute"
        gpu_hours = EPOCH_SAMPLES / rate / 3600
        print(f"{i.name:13} {i.gpu:10} {i.usd_per_hour / i.gpus:7.2f} {rate / 1e6:15.2f} "
              f"{bound:>7} {gpu_hours:11.3f} {gpu_hours * i.usd_per_hour / i.gpus:8.2f}")

    print(f"\ntrials of {args.trial_gpus or 'one instance of'} GPUs each; days of whole clusters")
    print(f"{'instance':13} {'epochs':>6} {'ASHA':>5} {'epochs/trial':>12} {'GPU-h/trial':>11} "
          f"{'$/trial':>8} {'GPUs':>4} {'trials/day 8 GPUs':>17} {'64 GPUs':>8} {'$/day 64':>9}")
    for i in instances:
        rate = i.samples_per_s_per_gpu(flop_per_sample, args.utilisation)
        trial_gpus = args.trial_gpus or i.gpus
        for epochs in args.epochs:
            for asha in (False, True):
                trained = asha_epochs_per_trial(epochs, args.grace * epochs) if asha else epochs
                hours = trained * EPOCH_SAMPLES / (rate * trial_gpus) / 3600 \
                    + args.startup_minutes / 60
                gpu_hours = hours * trial_gpus
                per_day = [24 * (gpus // trial_gpus) / hours for gpus in (8, 64)]
                print(f"{i.name:13} {epochs:6g} {'yes' if asha else 'no':>5} {trained:12.1f} "
                      f"{gpu_hours:11.1f} {gpu_hours * i.usd_per_hour / i.gpus:8.0f} "
                      f"{trial_gpus:4} "
                      f"{per_day[0]:17.1f} {per_day[1]:8.1f} "
                      f"{24 * 64 * i.usd_per_hour / i.gpus:9.0f}")


if __name__ == "__main__":
    main()
