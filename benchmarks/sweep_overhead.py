"""What Ray Tune costs on top of training: one run bare vs as a one-trial sweep.

Runs the same training (same config, same number of epochs, same threads, the same leading
indicators every epoch) three ways: as `umtune train` in a fresh process (what a user runs
bare), the same beside an idle local Ray, and as the only trial of `umtune sweep` (a one-worker
trial trains in the Tune trial's own process with all CPUs, reporting every epoch and
checkpointing into the sweep folder). Each is timed whole, imports and set-up included; Ray's
own start-up is timed apart. Prints the sweep's wall time over the bare run's: the overhead
(target: under 10% for 2-minute trials), split into what Ray's idle processes take from the
cores and what the trial machinery adds; and the seconds spent in training steps alone, which
tell this machine's noise from a fixed cost. With --repeats N the three runs alternate N times
and the medians are printed too. Ray runs as `umtune sweep` starts it for one-worker trials
(no dashboard), or with --dashboard as `umtune sweep --dashboard` does.

    .venv/bin/python benchmarks/sweep_overhead.py --data data/bach --epochs 10 [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ray

from umtune.config import overrides, preset
from umtune.data import Dataset
from umtune.sweep import SweepOptions, run_sweep
from umtune.sweep.driver import start_or_join_ray
from umtune.trainable.run_folder import read_history

UMTUNE = Path(sys.executable).with_name("umtune")  # the venv's console script


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="data/bach")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--epochs", type=int, default=10, help="tiny: about 12 s each on 2 cores")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    p.add_argument("--repeats", type=int, default=1,
                   help="alternate the three runs this many times (this machine's noise: the "
                        "same overhead measured -3%% and +19%% in two runs)")
    p.add_argument("--dashboard", action="store_true", help="the local Ray with its dashboard")
    args = p.parse_args()
    cpus = os.cpu_count() or 1
    data = Path(args.data).resolve()
    sets = [f"train.max_epochs={args.epochs}", *args.set]
    cfg = overrides(preset(args.preset, Dataset.open(data).domains), [f"data.path={data}", *sets])
    train_cmd = [str(UMTUNE), "train", "--preset", args.preset, "--data", str(data),
                 *(a for s in sets for a in ("--set", s))]
    work = Path(tempfile.mkdtemp(prefix="umtune-overhead-"))

    rows = [measure(cfg, train_cmd, cpus, work / f"repeat-{i}", args.dashboard)
            for i in range(args.repeats)]
    print(f"{args.preset} preset, {args.epochs} epochs x {cfg.train.steps_per_epoch} steps, "
          f"{cpus} CPUs (bare: `umtune train`, {cpus} threads; sweep: a one-worker trial with "
          f"{cpus} CPUs); Ray {'with' if args.dashboard else 'without'} its dashboard; "
          f"{args.repeats} repeat(s), each bare, beside Ray, sweep in turn")
    print(f"{'seconds':36} " + " ".join(f"{f'run {i + 1}':>8}" for i in range(len(rows)))
          + f" {'median':>8}")
    for key, label in (("ray_start", "Ray start-up (connect)"),
                       ("bare", "bare training (umtune train)"),
                       ("beside_ray", "bare training beside an idle Ray"),
                       ("swept", "one-trial sweep (Tune)"),
                       ("bare_steps", "  training steps alone, bare"),
                       ("swept_steps", "  training steps alone, sweep")):
        values = [r[key] for r in rows]
        print(f"{label:36} " + " ".join(f"{v:8.1f}" for v in values)
              + f" {statistics.median(values):8.1f}")
    for label, over in (("overhead, % of bare", lambda r: r["swept"] - r["bare"]),
                        ("  of which Ray's processes", lambda r: r["beside_ray"] - r["bare"]),
                        ("  of which the trial machinery",
                         lambda r: r["swept"] - r["beside_ray"]),
                        ("  of which slower training steps",
                         lambda r: r["swept_steps"] - r["bare_steps"])):
        values = [100 * over(r) / r["bare"] for r in rows]
        print(f"{label:36} " + " ".join(f"{v:+7.0f}%" for v in values)
              + f" {statistics.median(values):+7.0f}%")


def measure(cfg, train_cmd: list[str], cpus: int, work: Path,
            dashboard: bool) -> dict[str, float]:
    """One repeat: the run bare, then beside an idle local Ray, then as a one-trial sweep."""
    bare, bare_steps = bare_run(train_cmd, work / "bare", cfg.train.max_epochs)

    same_config = {"name": "bare", "params": {"train.seed": {"type": "grid",
                                                             "values": [cfg.train.seed]}}}
    opts = SweepOptions(space=same_config, samples=1, search="grid", scheduler="none",
                        cpus_per_worker=cpus, eval_clips=0)  # the bare run has no evaluation
    start = time.perf_counter()
    start_or_join_ray(opts, dashboard=dashboard)  # as `umtune sweep [--dashboard]` does (all CPUs)
    ray_start = time.perf_counter() - start
    if ray.cluster_resources().get("CPU") != cpus:  # a cgroup limit or a running `ray start`
        raise SystemExit(f"Ray has {ray.cluster_resources().get('CPU')} CPUs, this machine "
                         f"{cpus}: the one-trial sweep would not match the bare run")
    # The same bare run beside an idle Ray: what Ray's own processes take from the cores.
    beside_ray, _ = bare_run(train_cmd, work / "bare-beside-ray", cfg.train.max_epochs)

    start = time.perf_counter()
    result = run_sweep(cfg, opts, storage=work / "sweeps", name="overhead")
    swept = time.perf_counter() - start
    ray.shutdown()
    trial = result.trials.iloc[0]
    assert trial["status"] == "completed" and trial["epoch"] == cfg.train.max_epochs, trial
    return dict(ray_start=ray_start, bare=bare, beside_ray=beside_ray, swept=swept,
                bare_steps=bare_steps, swept_steps=float(trial["elapsed_s"]))


def bare_run(train_cmd: list[str], out: Path, epochs: int) -> tuple[float, float]:
    """`umtune train` in a fresh process, as a user runs it: (wall seconds, seconds in
    training steps)."""
    start = time.perf_counter()
    subprocess.run([*train_cmd, "--out", str(out)], check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    last = read_history(out)[-1]  # metrics.jsonl: the run folder holds it as a checkpoint does
    assert last["epoch"] == epochs, last
    return seconds, last["elapsed_s"]


if __name__ == "__main__":
    main()
