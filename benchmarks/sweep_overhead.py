"""What Ray Tune + Ray Train cost on top of training: one run bare vs as a one-trial sweep.

Runs the same training (same config, same number of epochs, same threads, the same leading
indicators every epoch) twice: in this process with the plain loop, and as the only trial of
`umtune sweep` (a one-worker trial trains in the Tune trial's own process with all CPUs,
reporting every epoch and checkpointing into the sweep folder).
Prints Ray's start-up time and the sweep's wall time over the bare run's: the Tune/Train
overhead (target: under 10% for 2-minute trials), and the bare run again beside an idle Ray, to
tell what Ray's own processes take from the cores from what the trial machinery costs. With
--repeats N the three runs alternate N times and the medians are printed too.

    .venv/bin/python benchmarks/sweep_overhead.py --data data/bach --epochs 10 [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import ray
import torch

from umtune.analysis.indicators import LeadingIndicators
from umtune.config import overrides, preset
from umtune.data import Dataset
from umtune.sweep import SweepOptions, run_sweep
from umtune.trainable.checkpoint import LocalRun
from umtune.trainable.loop import train
from umtune.trainable.ray_train import connect


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="data/bach")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--epochs", type=int, default=10, help="tiny: about 12 s each on 2 cores")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    p.add_argument("--repeats", type=int, default=1,
                   help="alternate the three runs this many times (this machine's noise: the "
                        "same overhead measured -3%% and +19%% in two runs)")
    args = p.parse_args()
    cpus = os.cpu_count() or 1
    cfg = overrides(preset(args.preset, Dataset.open(args.data).domains),
                    [f"data.path={Path(args.data).resolve()}", f"train.max_epochs={args.epochs}",
                     *args.set])
    work = Path(tempfile.mkdtemp(prefix="umtune-overhead-"))

    torch.set_num_threads(cpus)
    rows = [measure(cfg, cpus, work / f"repeat-{i}", args.epochs) for i in range(args.repeats)]
    print(f"{args.preset} preset, {args.epochs} epochs x {cfg.train.steps_per_epoch} steps, "
          f"{cpus} CPUs (bare: {cpus} threads; sweep: a one-worker trial with {cpus} CPUs); "
          f"{args.repeats} repeat(s), each bare, beside Ray, sweep in turn")
    print(f"{'seconds':34} " + " ".join(f"{f'run {i + 1}':>8}" for i in range(len(rows)))
          + f" {'median':>8}")
    for key, label in (("ray_start", "Ray start-up (connect)"),
                       ("bare", "bare training (plain loop)"),
                       ("beside_ray", "bare training beside an idle Ray"),
                       ("swept", "one-trial sweep (Tune)")):
        values = [r[key] for r in rows]
        print(f"{label:34} " + " ".join(f"{v:8.1f}" for v in values)
              + f" {statistics.median(values):8.1f}")
    for label, over in (("overhead, % of bare", lambda r: r["swept"] - r["bare"]),
                        ("  of which Ray's processes", lambda r: r["beside_ray"] - r["bare"]),
                        ("  of which the trial machinery",
                         lambda r: r["swept"] - r["beside_ray"])):
        values = [100 * over(r) / r["bare"] for r in rows]
        print(f"{label:34} " + " ".join(f"{v:+7.0f}%" for v in values)
              + f" {statistics.median(values):+7.0f}%")


def measure(cfg, cpus: int, work: Path, epochs: int) -> dict[str, float]:
    """One repeat: the run bare, then beside an idle local Ray, then as a one-trial sweep."""
    start = time.perf_counter()
    # The trial measures the leading indicators every epoch: so does the bare run.
    train(cfg, report=LocalRun(work / "bare", echo=False), indicators=LeadingIndicators(cfg))
    bare = time.perf_counter() - start

    start = time.perf_counter()
    connect()  # the local Ray `umtune sweep` starts (all CPUs, the dashboard)
    ray_start = time.perf_counter() - start
    if ray.cluster_resources().get("CPU") != cpus:  # a cgroup limit or a running `ray start`
        raise SystemExit(f"Ray has {ray.cluster_resources().get('CPU')} CPUs, this machine "
                         f"{cpus}: the one-trial sweep would not match the bare run")
    # The same bare run beside an idle Ray: what Ray's own processes take from the cores.
    start = time.perf_counter()
    train(cfg, report=LocalRun(work / "bare-beside-ray", echo=False),
          indicators=LeadingIndicators(cfg))
    beside_ray = time.perf_counter() - start

    start = time.perf_counter()
    same_config = {"name": "bare", "params": {"train.seed": {"type": "grid",
                                                             "values": [cfg.train.seed]}}}
    result = run_sweep(cfg, SweepOptions(space=same_config, samples=1, search="grid",
                                         scheduler="none", cpus_per_worker=cpus,
                                         eval_clips=0),  # the bare run has no evaluation
                       storage=work / "sweeps", name="overhead")
    swept = time.perf_counter() - start
    ray.shutdown()
    trial = result.trials.iloc[0]
    assert trial["status"] == "completed" and trial["epoch"] == epochs, trial
    return dict(ray_start=ray_start, bare=bare, beside_ray=beside_ray, swept=swept)


if __name__ == "__main__":
    main()
