"""One training run, in one plain process or on Ray: `umtune train` and `umtune train --resume`.

A run folder says how it runs (its run.json, umtune/layout.py): a Ray Train run is resumed on
Ray, a plain one by the plain loop; a new run goes to Ray when it asks for anything Ray gives
(workers, GPUs, CPUs per worker, a cluster's address or a storage). Ray is imported only then.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

from umtune.config import RunConfig
from umtune.layout import PLAIN_TRAINER, RAY_TRAINER, TRIAL_TRAINER
from umtune.trainable.checkpoint import first_difference
from umtune.trainable.loop import Indicators
from umtune.trainable.run_folder import LocalRun, RunFolder
from umtune.trainable.tracking import NO_TRACKING, Tracking


@dataclass(frozen=True)
class RayRequest:
    """What `umtune train` was asked of Ray; None: as the run had it before, else the default."""

    workers: int | None = None
    gpu: bool | None = None
    cpus_per_worker: float | None = None
    address: str | None = None
    storage: str | None = None  # a new run's storage (its folder's name is kept)
    max_failures: int = 3
    adopt: bool = False  # resume from a checkpoint that another run wrote

    def asks_for_ray(self) -> bool:
        return bool(self.workers or self.gpu or self.cpus_per_worker or self.address
                    or self.storage)


def resumed_trainer(run_dir: str | Path) -> str:
    """Which trainer continues the run at `run_dir`: what its run.json says (none: the plain
    loop, which says what is missing); a sweep's trial is refused (its sweep continues it)."""
    trainer = RunFolder(run_dir).trainer() or PLAIN_TRAINER
    if trainer == TRIAL_TRAINER:
        raise ValueError(f"{run_dir}: a sweep's trial; expected a run of `umtune train` (a "
                         "trial goes on with its sweep: umtune sweep --resume SWEEP)")
    return trainer


def _on_ray(run_dir: str | Path, request: RayRequest, resume: bool) -> bool:
    return request.asks_for_ray() or (
        resume and resumed_trainer(_ray_run_dir(run_dir, request)) == RAY_TRAINER)


def _ray_run_dir(run_dir: str | Path, request: RayRequest) -> str:
    return f"{request.storage}/{Path(run_dir).name}" if request.storage else str(run_dir)


def saved_config(run_dir: str | Path, request: RayRequest = RayRequest()) -> RunConfig:
    """The config of the run at `run_dir` (its latest checkpoint's), plain or Ray."""
    if _on_ray(run_dir, request, resume=True):
        from umtune.trainable import ray_train

        return ray_train.latest_config(_ray_run_dir(run_dir, request))
    return LocalRun(Path(run_dir)).resumed_checkpoint_config(adopt=request.adopt)


def resumed_config(saved: RunConfig, changed: RunConfig) -> RunConfig:
    """The config a resumed run goes on with: `changed` (the saved one with the user's --set and
    --data), refused where it changes what the checkpoint's weights fix (the model, the rate)."""
    fixed = first_difference({"model": asdict(saved.model), "rate": saved.data.sample_rate},
                             {"model": asdict(changed.model), "rate": changed.data.sample_rate})
    if fixed is not None:
        fixed = fixed.replace("rate", "data.sample_rate", 1)
        raise ValueError(f"{fixed}: a resumed run's checkpoint fixes this; expected it "
                         "unchanged (train a new run with --out to change it)")
    return changed


def plan(cfg: RunConfig, run_dir: str | Path, *, resume: bool = False,
         request: RayRequest = RayRequest()) -> str:
    """What `train` would do with these arguments, for `umtune train --dry-run`."""
    verb = "continue" if resume else "start"
    where = (f"the Ray Train run {_ray_run_dir(run_dir, request)} on "
             f"{request.address or 'a local Ray'}" if _on_ray(run_dir, request, resume)
             else f"the run {run_dir} in this process")
    budget = f"epoch {cfg.train.max_epochs}" + (f" or {cfg.train.max_minutes:g} minutes of "
                                                 "training" if cfg.train.max_minutes else "")
    return f"would {verb} {where}, until {budget}, on {cfg.data.path}"


def train_run(cfg: RunConfig, run_dir: str | Path, *, resume: bool = False,
          request: RayRequest = RayRequest(), indicators: Indicators | None = None,
          keep_every_minutes: float = 0.0, log: Tracking = NO_TRACKING) -> str:
    """Train `cfg` at `run_dir` (with `resume`, continue the run there) until its budgets are
    spent; returns where the run and its latest checkpoint are. `keep_every_minutes`: see
    `FolderKeep` (plain runs; a Ray Train run keeps its newest epochs). `log`: live
    trackers (tracking.py)."""
    if not _on_ray(run_dir, request, resume):
        from umtune.trainable.loop import train_plain_run

        train_plain_run(cfg, Path(run_dir), resume=resume, indicators=indicators,
                    keep_every_minutes=keep_every_minutes, log=log)
        return f"run: {run_dir}\nlatest checkpoint: {LocalRun(Path(run_dir)).checkpoint}"
    if keep_every_minutes:
        raise ValueError(f"--keep-every {keep_every_minutes:g}: a Ray Train run keeps a "
                         "checkpoint of the newest epochs (checkpoints/epoch_NNNNNN/); expected "
                         "it only for a plain run")

    from umtune.trainable import ray_train

    run_dir = _ray_run_dir(run_dir, request)
    given = {k: v for k in ("workers", "gpu", "cpus_per_worker")
             if (v := getattr(request, k)) is not None}
    if resume:  # the run goes on with the resources it had, unless told otherwise
        resources = ray_train.resources_of(ray_train.latest_history(run_dir),
                                           request.max_failures)
    else:
        resources = ray_train.Resources(max_failures=request.max_failures)
    result = ray_train.fit(cfg, replace(resources, **given), run_dir=run_dir,
                           address=request.address, resume=resume, indicators=indicators,
                           log=log)
    return f"run: {result.path}\nlatest checkpoint: {result.checkpoint.path}"
