"""Data-parallel scaling of training on CPU: Ray Train workers x threads on this machine's cores.

Runs the real thing, `umtune.trainable.ray_train.fit` (a TorchTrainer, DDP over gloo), on the
same config and the same global batch (`data.batch_per_domain` is split over the workers) with

- 1 worker x all cores (cpus_per_worker = cores: one process, intra-op threads),
- W workers x cores/W each (for W in --workers; Ray sets each worker's OMP/torch threads to
  its CPUs, which the table checks from the `threads` metric every worker reports),
- 1 worker x 1 core (the per-core baseline),

and prints the global training samples/s of each, measured by the loop over whole epochs
(steps only; the held-out evaluation and the checkpoint are outside the timed span). The first
epoch holds process-group set-up and warm-up, so the rate is total samples / total time over
the epochs after it; `spread` is (fastest - slowest) / rate over those epochs, a sign of
other processes taking the cores when it is large. Two ratios:

- speedup = samples/s / samples/s of 1 worker x all cores: is DDP worth it against threads?
- per-core efficiency = samples/s / (cores used x samples/s of 1 worker x 1 core): 100% is
  perfect linear scaling from one core.

The machine may be shared, so compare rows of one run, not numbers across runs.

    .venv/bin/python benchmarks/ddp.py --data /tmp/ddp-data
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ray

from umtune.config import overrides, preset
from umtune.trainable import ray_train

# name -> (preset, overrides, steps per epoch); "mid" doubles the tiny model's widths (about 4x
# the FLOPs per sample) and the batch, so each worker's share of a step is 8x larger.
CONFIGS = {
    "tiny": ("tiny", [], 25),
    "mid": ("tiny", ["data.batch_per_domain=4", "model.encoder.channels=64",
                     "model.decoder.residual_channels=64", "model.decoder.gate_channels=128",
                     "model.decoder.skip_channels=64"], 6),
}


def ensure_dataset(path: Path) -> None:
    if (path / "manifest.json").exists():
        return
    umtune = Path(sys.executable).with_name("umtune")
    subprocess.run([str(umtune), "data", "chorales", "--out", str(path), "--domains",
                    "piano,flute", "--pieces", "2", "--heldout", "1", "--max-piece-seconds",
                    "8"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run(cfg, workers: int, cpus_per_worker: int, storage: str) -> dict:
    """Train on Ray; the post-first-epoch rate and what the workers reported."""
    name = f"w{workers}x{cpus_per_worker}-{time.monotonic_ns()}"
    start = time.perf_counter()
    ray_train.fit(cfg, ray_train.Resources(workers=workers, cpus_per_worker=cpus_per_worker,
                                           max_failures=0),
                  run_dir=f"{storage}/{name}", keep_checkpoints=1)
    wall = time.perf_counter() - start
    _, history = ray_train.latest(f"{storage}/{name}")
    later = history[1:]
    # Every epoch processes the same samples, so total samples / total time over the later
    # epochs is the harmonic mean of their rates.
    rates = [h["samples_per_s"] for h in later]
    rate = len(rates) / sum(1 / r for r in rates)
    return {"workers": history[-1]["world_size"], "threads": history[-1]["threads"],
            "samples/s": rate, "spread": (max(rates) - min(rates)) / rate,
            "epoch1": history[0]["samples_per_s"],
            "steps": history[-1]["step"], "wall": wall}


def start_ray(cores: int) -> None:
    ray.init(num_cpus=cores, log_to_driver=False, include_dashboard=False,
             logging_level="ERROR")


def run_retrying(cfg, workers: int, cpus_per_worker: int, storage: str, cores: int) -> dict:
    """`run`, retried once on a fresh local Ray: on a shared machine, someone's `ray stop`
    kills every Ray on it, ours included."""
    try:
        return run(cfg, workers, cpus_per_worker, storage)
    except Exception as e:  # noqa: BLE001 - whatever killed the run, try once more
        print(f"note: the {workers} x {cpus_per_worker} run failed ({type(e).__name__}); "
              "restarting Ray and running it again", flush=True)
        ray.shutdown()
        start_ray(cores)
        return run(cfg, workers, cpus_per_worker, storage)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path("/tmp/ddp-data"),
                   help="dataset with domains piano and flute (rendered here if missing)")
    p.add_argument("--configs", default="tiny,mid", help=f"of {', '.join(CONFIGS)}")
    p.add_argument("--cores", type=int, default=os.cpu_count(), help="CPUs Ray may use")
    p.add_argument("--workers", default="2", help="worker counts besides 1, comma-separated")
    p.add_argument("--epochs", type=int, default=3, help="epochs per run; the first is dropped")
    p.add_argument("--steps-per-epoch", type=int, help="default: the config's (tiny 25, mid 6)")
    args = p.parse_args()
    if args.epochs < 2:
        p.error("--epochs must be at least 2 (the first epoch is not counted)")
    ensure_dataset(args.data)
    if "OMP_NUM_THREADS" in os.environ:
        print(f"note: OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} is set here; Ray sets "
              "its own per worker")
    start_ray(args.cores)
    storage = tempfile.mkdtemp(prefix="umtune-ddp-")
    layouts = [(1, args.cores)] + [(w, args.cores // w) for w in map(int, args.workers.split(","))]
    layouts.append((1, 1))
    load = os.getloadavg()[0]
    try:
        print(f"cores: {args.cores}; {args.epochs} epochs per run, samples/s over epochs "
              f"2..{args.epochs}; the global batch is the same in every row of a config")
        print(f"{'config':6} {'batch':>10} {'workers':>7} {'threads':>7} {'cores':>5} "
              f"{'samples/s':>9} {'spread':>6} {'ms/step':>8} {'speedup':>7} {'eff/core':>8} "
              f"{'epoch 1':>8} {'wall s':>6}")
        for name in args.configs.split(","):
            base, sets, steps = CONFIGS[name]
            cfg = overrides(preset(base, ("piano", "flute")), [
                *sets, f"data.path={args.data.resolve()}", f"train.max_epochs={args.epochs}",
                f"train.steps_per_epoch={args.steps_per_epoch or steps}"])
            batch = f"2x{cfg.data.batch_per_domain}x{cfg.data.segment_samples}"
            samples_per_step = 2 * cfg.data.batch_per_domain * cfg.data.segment_samples
            results = [run_retrying(cfg, w, c, storage, args.cores) for w, c in layouts]
            all_cores, one_core = results[0]["samples/s"], results[-1]["samples/s"]
            for (w, c), r in zip(layouts, results, strict=True):
                flag = "" if (r["workers"], r["threads"]) == (w, c) else "  (asked for " \
                    f"{w} x {c})"
                print(f"{name:6} {batch:>10} {r['workers']:7d} {r['threads']:7d} {w * c:5d} "
                      f"{r['samples/s']:9.0f} {100 * r['spread']:5.0f}% "
                      f"{1000 * samples_per_step / r['samples/s']:8.1f} "
                      f"{r['samples/s'] / all_cores:7.2f} "
                      f"{100 * r['samples/s'] / (w * c * one_core):7.0f}% "
                      f"{r['epoch1']:8.0f} {r['wall']:6.0f}{flag}", flush=True)
        print(f"1-min load average: {load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end "
              f"(these runs alone make about {args.cores}; well above that, or a large spread, "
              "means other processes shared the cores)")
    finally:
        ray.shutdown()
        shutil.rmtree(storage, ignore_errors=True)


if __name__ == "__main__":
    main()
