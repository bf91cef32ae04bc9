"""The Ray adapter: one training run as a Ray Train `TorchTrainer` (DDP over N workers).

The loop in `loop.py` does the training; this module only connects it to Ray Train: each worker
rebuilds the config from a plain dict, resumes from `ray.train.get_checkpoint()` if Train hands
it one, wraps the autoencoder and the confusion net with `ray.train.torch.prepare_model`
(DistributedDataParallel: gloo on CPU, nccl on GPU) and reports every epoch with
`ray.train.report` (rank 0 attaches the checkpoint). Nothing else in the package touches Ray
Train, so when its reporting API changes again, this file is the one to change.

A run lives at `<storage>/<name>` (umtune/layout.py: Ray's checkpoint_manager_snapshot.json
and one `epoch_NNNNNN/` checkpoint per kept epoch). Running again with the same storage and name
continues from the latest checkpoint, which is how both `--resume` and worker-failure restarts
work. Each checkpoint also holds `metrics.jsonl`, the run's whole history up to that epoch
(kept checkpoints are pruned, the history is not).

The trainer knows nothing of sweeps or analysis: a Tune trial (umtune/sweep/trial.py) hands it
the per-epoch indicators and the end-of-run evaluation as callbacks.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import ray
import ray.train
import ray.train.torch
import torch

from umtune import storage
from umtune.config import RunConfig
from umtune.layout import (
    COST_METRIC,
    DIVERGED_FILE,
    DIVERGED_KEY,
    HELDOUT_METRIC,
    HISTORY_FILE,
    SNAPSHOT_FILE,
    checkpoint_name,
)
from umtune.trainable import loop
from umtune.trainable.checkpoint import TrainingState, format_metrics, load_checkpoint
from umtune.trainable.model import WaveNetDecoder, generation_flops_per_sample

# Called on rank 0 with the final checkpoint's folder and the run's config before the last
# report; what it returns joins that report (a sweep's trial scores translations here).
FinalMetrics = Callable[[Path, RunConfig], dict]


@dataclass(frozen=True)
class Resources:
    """What one Ray Train run asks of the cluster."""

    workers: int = 1  # training processes, one per GPU with `gpu`
    gpu: bool = False
    cpus_per_worker: float | None = None  # CPUs (and torch threads) per worker; Ray's default 1
    max_failures: int = 3  # worker-group restarts (from the latest checkpoint) before giving up

    def __post_init__(self):
        if self.workers < 1 or self.max_failures < 0 or (self.cpus_per_worker is not None
                                                          and not self.cpus_per_worker > 0):
            raise ValueError(f"{self}: expected workers >= 1, max_failures >= 0 and "
                             "cpus_per_worker > 0")

    def scaling_config(self) -> ray.train.ScalingConfig:
        return ray.train.ScalingConfig(
            num_workers=self.workers, use_gpu=self.gpu,
            resources_per_worker={"CPU": self.cpus_per_worker} if self.cpus_per_worker else None)


def train_loop_per_worker(config: dict) -> None:
    """The function every Ray Train worker runs: `loop.train` with Ray's context and report."""
    cfg = RunConfig.from_dict(config["run"])
    run_path, final_metrics = config["run_path"], config["final_metrics"]
    ctx = ray.train.get_context()
    # Ray sets OMP_NUM_THREADS to floor(CPUs); a sweep's workers ask for a hair under a whole
    # number of CPUs (umtune.sweep), so round instead.
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    torch.set_num_threads(max(1, round(cpus)))
    if ctx.get_world_rank() == 0:  # a resumed run starts afresh (e.g. with a lower lr)
        storage.delete(f"{run_path}/{DIVERGED_FILE}")
    cost = generation_flops_per_sample(WaveNetDecoder(cfg.model.decoder,
                                                      cfg.model.encoder.latent_channels,
                                                      cfg.model.classes))
    device = ray.train.torch.get_device()
    restored = ray.train.get_checkpoint()
    with restored.as_directory() if restored else contextlib.nullcontext() as resume:
        history = read_history(resume) if resume else []
        start_epoch = history[-1]["epoch"] if history else 0

        def report(metrics: dict, checkpoint_dir: Path | None) -> None:
            metrics = {**metrics, "start_epoch": start_epoch, "world_size": ctx.get_world_size(),
                       "gpu": device.type == "cuda", "cpus_per_worker": cpus,
                       "threads": torch.get_num_threads(), COST_METRIC: cost}
            checkpoint = None
            if checkpoint_dir is not None:
                if final_metrics and cfg.train.finished(metrics["epoch"], metrics["elapsed_s"]):
                    metrics.update(final_metrics(checkpoint_dir, cfg))
                history.append(metrics)
                (checkpoint_dir / HISTORY_FILE).write_text(
                    "".join(json.dumps(m) + "\n" for m in history))
                checkpoint = ray.train.Checkpoint.from_directory(checkpoint_dir)
                print(format_metrics(metrics), flush=True)
            ray.train.report(metrics, checkpoint=checkpoint,
                             checkpoint_dir_name=checkpoint_name(metrics["epoch"]))

        try:
            loop.train(cfg, report=report, resume=Path(resume) if resume else None,
                       device=device, wrap=ray.train.torch.prepare_model,
                       rank=ctx.get_world_rank(), world_size=ctx.get_world_size(),
                       indicators=config["indicators"])
        except loop.DivergenceError as e:
            # Every rank gets here at the same step (the finiteness check is collective).
            # Ending normally, not raising, keeps Train from restarting a run that would only
            # diverge again; `fit` and the sweep's trial find the reason in the run folder.
            if ctx.get_world_rank() == 0:
                storage.write_text(f"{run_path}/{DIVERGED_FILE}", str(e))
            ray.train.report({"epoch": e.epoch, "step": e.step, HELDOUT_METRIC: math.inf,
                              DIVERGED_KEY: str(e)})


def torch_trainer(cfg: RunConfig, resources: Resources, *, storage_path: str, name: str,
                  keep_checkpoints: int | None = 3, callbacks: list | None = None,
                  indicators: loop.Indicators | None = None,
                  final_metrics: FinalMetrics | None = None) -> ray.train.torch.TorchTrainer:
    """A TorchTrainer for one run at `<storage_path>/<name>` (not started; call `.fit()`).

    Args:
        cfg: the run config; `data.batch_per_domain` is the global batch, split over workers.
        resources: workers, GPUs, CPUs per worker and restarts.
        storage_path: a local directory, a shared mount as file:///path, or a cloud URI.
        name: the run's folder under `storage_path`; an existing run of that name is continued.
        keep_checkpoints: newest checkpoints to keep (None: all; the history is kept anyway).
        callbacks: Ray Train callbacks, e.g. Tune's TuneReportCallback inside a Tune trial.
        indicators: `loop.train`'s per-epoch callback (pickled to every worker).
        final_metrics: added to the last report (pickled to every worker; rank 0 calls it).
    """
    cfg.data.check_workers(resources.workers)
    cfg = replace(cfg, data=cfg.data.with_absolute_path())
    return ray.train.torch.TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"run": cfg.to_dict(), "run_path": f"{storage_path}/{name}",
                           "final_metrics": final_metrics, "indicators": indicators},
        scaling_config=resources.scaling_config(),
        run_config=ray.train.RunConfig(
            name=name, storage_path=storage_path, callbacks=callbacks,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=keep_checkpoints),
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),  # one line per epoch
            # controller_failure_limit defaults to retrying forever; a broken run must stop.
            failure_config=ray.train.FailureConfig(max_failures=resources.max_failures,
                                                   controller_failure_limit=3)))


def fit(cfg: RunConfig, resources: Resources = Resources(), *, run_dir: str | Path,
        address: str | None = None, keep_checkpoints: int | None = 3, resume: bool = False,
        indicators: loop.Indicators | None = None) -> ray.train.Result:
    """Run (or with `resume`, continue) the run at `run_dir` (`<storage>/<name>`) on Ray and
    wait for it.

    Starts a local Ray unless `address` names a cluster to join (or Ray is already running).
    """
    connect(address)
    storage_path, name = storage.split_run_dir(run_dir)
    storage_path = storage.check_storage(storage_path, alive_nodes())
    exists = run_exists(f"{storage_path}/{name}")
    if resume and not exists:
        raise FileNotFoundError(f"{storage_path}/{name}: no Ray Train run to resume there")
    if exists and not resume:
        raise FileExistsError(f"{storage_path}/{name} already holds a run: resume it (--resume) "
                              "or choose another name")
    result = torch_trainer(cfg, resources, storage_path=storage_path, name=name,
                           keep_checkpoints=keep_checkpoints, indicators=indicators).fit()
    raise_if_diverged(f"{storage_path}/{name}")
    return result


def connect(address: str | None = None) -> None:
    """Join the Ray cluster at `address`, or start a local Ray; nothing if Ray is running.

    Ray 2.60 clusters require token auth; a client sends ~/.ray/auth_token when
    RAY_AUTH_MODE=token is set, or by itself for `--address auto` (a cluster on this node).
    """
    if ray.is_initialized():
        return
    ray.init(address=address) if address else ray.init()


def alive_nodes() -> int:
    return sum(node["Alive"] for node in ray.nodes())


def raise_if_diverged(run_path: str) -> None:
    """Raise the DivergenceError that ended the run at `run_path`, if one did."""
    reason = storage.read_text(f"{run_path}/{DIVERGED_FILE}")
    if reason is not None:
        raise loop.DivergenceError(reason)


def run_exists(run_path: str | Path) -> bool:
    """Whether `run_path` holds a Ray Train run (its checkpoint snapshot file)."""
    return storage.exists(f"{storage.absolute(run_path)}/{SNAPSHOT_FILE}")


def read_history(checkpoint_dir: str | Path) -> list[dict]:
    """The metrics of every epoch up to the checkpoint's, one dict each, in order."""
    file = Path(checkpoint_dir) / HISTORY_FILE
    return [json.loads(line) for line in file.read_text().splitlines() if line]


def latest(run_dir: str | Path) -> tuple[TrainingState, list[dict]]:
    """The latest checkpoint of a Ray Train run (state and config) and its metrics history."""
    if not run_exists(run_dir):
        raise FileNotFoundError(f"{run_dir}: no Ray Train run there (no {SNAPSHOT_FILE})")
    checkpoint = ray.train.Result.from_path(str(run_dir)).checkpoint
    if checkpoint is None:
        raise FileNotFoundError(f"{run_dir}: the run has no checkpoint yet")
    with checkpoint.as_directory() as d:
        return load_checkpoint(d), read_history(d)


def resources_of(history: list[dict], max_failures: int) -> Resources:
    """The resources a run last ran with, from its history (its reports say them)."""
    last = history[-1]
    return Resources(workers=last["world_size"], gpu=last.get("gpu", False),
                     cpus_per_worker=last.get("cpus_per_worker"), max_failures=max_failures)
