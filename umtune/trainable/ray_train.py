"""The Ray adapter: one training run as a Ray Train `TorchTrainer` (DDP over N workers).

The loop in `loop.py` does the training; this module only connects it to Ray Train: each worker
rebuilds the config from a plain dict, resumes from `ray.train.get_checkpoint()` if Train hands
it one, wraps the autoencoder and the confusion net with `ray.train.torch.prepare_model`
(DistributedDataParallel: gloo on CPU, nccl on GPU) and reports every epoch with
`ray.train.report` (rank 0 attaches the checkpoint). Nothing else in the package touches Ray
Train, so when its reporting API changes again, this file is the one to change.

A run lives at `<storage>/<name>`, a run folder of the one shape (umtune/layout.py), written
through run_folder.Reporter; Train's own snapshot (checkpoint_manager_snapshot.json) lies
beside checkpoints/. Running again with the same storage and name continues from the latest
checkpoint, which is how both `--resume` and worker-failure restarts work. Each checkpoint
holds the run's history up to it, so a restart from an older one rewrites metrics.jsonl to
match.

The trainer knows nothing of sweeps or analysis: a Tune trial (umtune/sweep/trial.py) hands it
the per-epoch indicators and the end-of-run evaluation as callbacks. `train_and_report` is what
a run on Ray does whoever carries its reports: Train's workers here, or a one-worker Tune
trial in its own process.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import ray
import ray.train
import ray.train.torch
import torch
from ray._private import services as ray_services

from umtune import storage
from umtune.config import RunConfig
from umtune.layout import (
    CHECKPOINTS_DIR,
    COST_METRIC,
    DIVERGED_FILE,
    DIVERGED_KEY,
    HELDOUT_METRIC,
    RAY_TRAINER,
    SNAPSHOT_FILE,
    checkpoint_name,
)
from umtune.trainable import loop
from umtune.trainable.checkpoint import TrainingState, checkpoint_config, load_checkpoint
from umtune.trainable.model import WaveNetDecoder, generation_flops_per_sample
from umtune.trainable.run_folder import FinalMetrics, Keep, Reporter, RunFolder, read_history
from umtune.trainable.tracking import NO_TRACKING, Tracked, Tracking


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


def train_and_report(cfg: RunConfig, *, run_path: str, resume: Path | None, keep: Keep,
                     trainer: str, device: torch.device, cpus: float, wrap=lambda m: m,
                     rank: int = 0, world_size: int = 1,
                     indicators: loop.Indicators | None = None,
                     final_metrics: FinalMetrics | None = None, extra: dict | None = None,
                     ) -> None:
    """`loop.train` as every run on Ray reports it: into the run folder at `run_path` through a
    `Reporter` with `keep` (Train's report in a Train worker, Tune's in a trial that trains in
    its own process), each epoch's metrics with the run's resources and generation cost
    (`resume` holds the history so far). A diverged run reports held-out CE inf and the
    reason, and writes the reason to the run folder instead of raising: a restart would only
    diverge again. `extra` joins every report (a trial's name and schedule)."""
    if rank == 0:  # a resumed run starts afresh (e.g. with a lower lr)
        storage.delete(f"{run_path}/{DIVERGED_FILE}")
    cost = generation_flops_per_sample(WaveNetDecoder(cfg.model.decoder,
                                                      cfg.model.encoder.latent_channels,
                                                      cfg.model.classes))
    history = read_history(resume) if resume else []
    facts = {"start_epoch": history[-1]["epoch"] if history else 0, "world_size": world_size,
             "gpu": device.type == "cuda", "cpus_per_worker": cpus,
             "threads": torch.get_num_threads(), COST_METRIC: cost, **(extra or {})}
    report = Reporter(RunFolder(run_path), keep, trainer=trainer, cfg=cfg, history=history,
                      facts=facts, final_metrics=final_metrics)
    try:
        loop.train(cfg, report=report, resume=resume, device=device, wrap=wrap, rank=rank,
                   world_size=world_size, indicators=indicators)
    except loop.DivergenceError as e:
        # Every rank gets here at the same step (the finiteness check is collective).
        if rank == 0:
            storage.write_text(f"{run_path}/{DIVERGED_FILE}", str(e))
        keep({"epoch": e.epoch, "step": e.step, HELDOUT_METRIC: math.inf,
              DIVERGED_KEY: str(e)}, None)


def use_assigned_cpus() -> float:
    """Torch threads = the CPUs Ray assigned this process, rounded (Ray sets OMP_NUM_THREADS to
    their floor); returns that CPU count.

    The calling thread, and the torch threads it starts, leave the batch policy that a Ray
    started by connect() gives its workers: training's wake-ups then preempt Ray's, not the
    other way round (docs/speed.md, Trial start-up)."""
    if hasattr(os, "SCHED_BATCH") and os.sched_getscheduler(0) == os.SCHED_BATCH:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    torch.set_num_threads(max(1, round(cpus)))
    return cpus


def train_loop_per_worker(config: dict) -> None:
    """The function every Ray Train worker runs: `train_and_report` through Train's report."""
    ctx = ray.train.get_context()
    cpus = use_assigned_cpus()

    def keep(metrics: dict, checkpoint_dir: Path | None) -> None:
        checkpoint = (None if checkpoint_dir is None
                      else ray.train.Checkpoint.from_directory(checkpoint_dir))
        ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=f"{CHECKPOINTS_DIR}/"
                         f"{checkpoint_name(metrics['epoch'])}")

    cfg, log = RunConfig.from_dict(config["run"]), config["log"]
    if log and ctx.get_world_rank() == 0:  # the trackers write from rank 0 only
        local = storage.local_path(config["run_path"])  # else W&B's files go to a temp folder
        folder = local or Path(tempfile.gettempdir()) / config["run_path"].rpartition("/")[2]
        keep = Tracked(keep, log, folder, cfg)
    restored = ray.train.get_checkpoint()
    try:
        with restored.as_directory() if restored else contextlib.nullcontext() as resume:
            train_and_report(cfg, run_path=config["run_path"],
                             resume=Path(resume) if resume else None, keep=keep,
                             trainer=config["trainer"], device=ray.train.torch.get_device(),
                             cpus=cpus,
                             wrap=ray.train.torch.prepare_model, rank=ctx.get_world_rank(),
                             world_size=ctx.get_world_size(), indicators=config["indicators"],
                             final_metrics=config["final_metrics"])
    finally:
        if isinstance(keep, Tracked):
            keep.close()


def torch_trainer(cfg: RunConfig, resources: Resources, *, storage_path: str, name: str,
                  keep_checkpoints: int | None = 3, callbacks: list | None = None,
                  indicators: loop.Indicators | None = None,
                  final_metrics: FinalMetrics | None = None,
                  log: Tracking = NO_TRACKING, trainer: str = RAY_TRAINER,
                  ) -> ray.train.torch.TorchTrainer:
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
        log: live trackers, written by rank 0 (tracking.py; a local run folder for
            TensorBoard).
        trainer: run.json's "trainer" ("tune_trial" for a multi-worker trial's run).
    """
    cfg.data.check_workers(resources.workers)
    if "tensorboard" in log.trackers and storage.local_path(storage_path) is None:
        raise ValueError(f"--log tensorboard: the run lives at {storage_path}, not on a file "
                         "system; expected local or file:// storage (or wandb, mlflow)")
    cfg = replace(cfg, data=cfg.data.with_absolute_path())
    return ray.train.torch.TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"run": cfg.to_dict(), "run_path": f"{storage_path}/{name}",
                           "final_metrics": final_metrics, "indicators": indicators,
                           "log": log, "trainer": trainer},
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
        indicators: loop.Indicators | None = None, log: Tracking = NO_TRACKING
        ) -> ray.train.Result:
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
                           keep_checkpoints=keep_checkpoints, indicators=indicators,
                           log=log).fit()
    raise_if_diverged(f"{storage_path}/{name}")
    return result


def connect(address: str | None = None, *, dashboard: bool = True) -> None:
    """Join the Ray cluster at `address`, or start a local Ray; nothing if Ray is running.

    Ray 2.60 clusters require token auth; a client sends ~/.ray/auth_token when
    RAY_AUTH_MODE=token is set, or by itself for `--address auto` (a cluster on this node).

    A local Ray started here keeps out of the way of the training it runs: Ray's threads wake
    ~1,000 times a second, and each wake-up of an ordinary thread preempts a training thread at
    once (on 2 cores a trial's were preempted ~300 times a second each). So its processes
    (services, workers, so trials too) run as batch work, whose wake-ups wait for the running
    thread's time slice, and it prestarts no idle workers (each checks for signals 100 times a
    second; a trial starts its own). Without `dashboard` it runs no dashboard (its head and nine
    module processes are ~40% of an idle Ray's wake-ups), but then no Ray Train run may start:
    Train frees a finished run's placement group through the State API the dashboard serves.
    """
    if ray.is_initialized():
        return
    if address or _cluster_to_join():
        ray.init(address=address)
        return
    with _children_as_batch_work():
        ray.init(include_dashboard=dashboard,
                 _system_config={"prestart_worker_first_driver": False})


def _cluster_to_join() -> str | None:
    """The cluster a bare ray.init() joins (RAY_ADDRESS, as in a Ray job, or the latest
    `ray start` on this node), or None where it starts its own: Ray's own rule."""
    return ray_services.canonicalize_bootstrap_address(None)


@contextlib.contextmanager
def _children_as_batch_work():
    """Processes and threads started inside run under Linux's SCHED_BATCH (they inherit this
    thread's policy); this thread gets its own back. Elsewhere, or for a thread not under the
    default policy, nothing changes."""
    if not hasattr(os, "SCHED_BATCH") or os.sched_getscheduler(0) != os.SCHED_OTHER:
        yield
        return
    os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    try:
        yield
    finally:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


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


def _latest_checkpoint(run_dir: str | Path) -> ray.train.Checkpoint:
    if not run_exists(run_dir):
        raise FileNotFoundError(f"{run_dir}: no Ray Train run there (no {SNAPSHOT_FILE})")
    checkpoint = ray.train.Result.from_path(str(run_dir)).checkpoint
    if checkpoint is None:
        raise FileNotFoundError(f"{run_dir}: the run has no checkpoint yet")
    return checkpoint


def latest(run_dir: str | Path) -> tuple[TrainingState, list[dict]]:
    """The latest checkpoint of a Ray Train run (state and config) and its metrics history."""
    with _latest_checkpoint(run_dir).as_directory() as d:
        return load_checkpoint(d), read_history(d)


def latest_config(run_dir: str | Path) -> RunConfig:
    """The config of a Ray Train run's latest checkpoint, without loading its weights."""
    with _latest_checkpoint(run_dir).as_directory() as d:
        return checkpoint_config(Path(d))


def latest_history(run_dir: str | Path) -> list[dict]:
    """The metrics history of a Ray Train run, without loading its weights."""
    with _latest_checkpoint(run_dir).as_directory() as d:
        return read_history(d)


def resources_of(history: list[dict], max_failures: int) -> Resources:
    """The resources a run last ran with, from its history (its reports say them)."""
    last = history[-1]
    return Resources(workers=last["world_size"], gpu=last.get("gpu", False),
                     cpus_per_worker=last.get("cpus_per_worker"), max_failures=max_failures)
