"""The sweep driver: a search space, a searcher and a scheduler on Ray Tune.

`run_sweep` starts a sweep at `<storage>/<name>` and `resume_sweep` finishes one whose driver
died. Every trial is `tune_trial` (trial.py): the trial's config trained in the trial's own
process (one worker) or as a Ray Train run (several), reporting per-epoch metrics to Tune,
where ASHA compares trials at equal `epoch`s (Tune's own `training_iteration` restarts after a
restore). When the sweep ends its trial table and Optuna study are written (table.py) into the
sweep folder (umtune/layout.py).
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import asdict, replace
from pathlib import Path

from umtune.config import RunConfig
from umtune.layout import BASE_KEY, HELDOUT_METRIC, STUDY_FILE, TRAIN_RUNS_DIR, TRIAL_KEY
from umtune.layout import trial_name as _trial_folder
from umtune.search_spaces import get, space
from umtune.storage import absolute, check_storage, local_path
from umtune.sweep.folder import (
    driving,
    read_sweep_file,
    sweep_file_exists,
    write_sweep_file,
    write_table,
)
from umtune.sweep.options import SweepOptions
from umtune.sweep.table import SweepResult, trials_table, write_study
from umtune.sweep.trial import trial_resources, tune_trial

KEEP_CHECKPOINTS = 3  # newest checkpoints kept of a one-worker trial (its history is kept anyway)


def checkpoints_kept(opts: SweepOptions) -> int | None:
    """Tune's `num_to_keep`: every checkpoint under PBT and PB2. Their scheduled save of a
    top trial registers its latest checkpoint a second time, and Tune 2.60 then deletes that
    folder twice: the second deletion raises and fails the sweep (FileNotFoundError)."""
    return None if opts.population else KEEP_CHECKPOINTS


def run_sweep(base: RunConfig, opts: SweepOptions, *, storage: str | Path = "sweeps",
              name: str, address: str | None = None, dashboard: bool = False) -> SweepResult:
    """Run a new sweep at `<storage>/<name>` over `opts.space` around `base`, and write its
    trial table and Optuna study there. Ray: `start_or_join_ray`."""
    from umtune.trainable import ray_train

    base = replace(base, data=base.data.with_absolute_path())
    # The space, the scheduler and Optuna's first point are built (and so checked) before Ray
    # starts and before anything is written.
    param_space = get(opts.space, base, "optuna" if opts.search == "optuna" else opts.search)
    scheduler = _scheduler(opts, base)
    first = [space(opts.space, base).point_of(base)] if opts.enqueue_base else None
    start_or_join_ray(opts, address, dashboard=dashboard)
    storage = check_storage(storage, ray_train.alive_nodes())
    path = f"{storage}/{name}"
    with driving(path):
        return _run(base, opts, param_space, scheduler, first, storage, name)


def _run(base: RunConfig, opts: SweepOptions, param_space: dict, scheduler,
         first: list[dict] | None, storage: str, name: str) -> SweepResult:
    from ray import tune

    from umtune.sweep.live import LiveStudy
    from umtune.trainable.tracking import tune_callbacks

    path = f"{storage}/{name}"
    if sweep_file_exists(path):
        raise FileExistsError(f"{path} already holds a sweep: resume it (--resume) or choose "
                              "another name")
    trial = opts.trial_options(f"{path}/{TRAIN_RUNS_DIR}")
    callbacks = tune_callbacks(opts.log, name)
    if (local := local_path(path)) is not None:  # SQLite needs a file system
        callbacks.append(LiveStudy(local / STUDY_FILE, opts, base, name=local.name))
    tuner = tune.Tuner(
        _trainable(), param_space={**param_space, TRIAL_KEY: trial.to_dict()},
        tune_config=tune.TuneConfig(search_alg=_searcher(opts, name, first),
                                    scheduler=scheduler, num_samples=opts.samples,
                                    max_concurrent_trials=_concurrency(opts)
                                    if opts.search == "optuna" else None,
                                    trial_name_creator=short_trial_name,
                                    trial_dirname_creator=short_trial_name),
        run_config=tune.RunConfig(
            name=name, storage_path=storage, callbacks=callbacks,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=checkpoints_kept(opts)),
            failure_config=tune.FailureConfig(max_failures=0)))
    # Written last: it claims the name, and `--resume` needs it once Tune has started.
    write_sweep_file(path, {"options": asdict(opts), BASE_KEY: base.to_dict(), "name": name})
    return _finish(tuner.fit(), path, opts, base)


def resume_sweep(path: str | Path, *, address: str | None = None,
                 dashboard: bool = False) -> SweepResult:
    """Finish the sweep at `path` after its driver died: finished trials are kept as they are,
    unfinished ones continue from their latest checkpoints. Ray: `start_or_join_ray`.

    Tune's saved state is pickled: restoring it runs whatever code a crafted sweep folder
    holds, so resume only sweep folders you trust (the CLI's --help and the README say so)."""
    from ray import tune

    path = absolute(path)
    with driving(path):
        saved = read_sweep_file(path)
        opts = SweepOptions(**{**saved["options"], **{k: tuple(saved["options"].get(k, ()))
                                                       for k in ("objectives", "log")}})
        start_or_join_ray(opts, address, dashboard=dashboard)
        tuner = tune.Tuner.restore(path, trainable=_trainable(), resume_unfinished=True,
                                   resume_errored=False, restart_errored=False)
        return _finish(tuner.fit(), path, opts, RunConfig.from_dict(saved[BASE_KEY]))


def start_or_join_ray(opts: SweepOptions, address: str | None = None, *,
                      dashboard: bool = False) -> None:
    """Join the cluster at `address`, or start the local Ray a sweep with `opts` needs: with
    Ray's dashboard if asked or if its trials run Ray Train (several workers), which frees a
    finished or stopped run's placement group through the State API the dashboard serves.
    One-worker trials train in the trial's own process and so run without it."""
    from umtune.trainable import ray_train

    ray_train.connect(address, dashboard=dashboard or opts.trial_workers > 1)


def short_trial_name(trial) -> str:
    """Tune's trial_name_creator: short names (Tune's default spells out every value)."""
    return _trial_folder(trial.trial_id)


def _trainable():
    from ray import tune

    return tune.with_resources(tune_trial, trial_resources)


def _searcher(opts: SweepOptions, name: str, first: list[dict] | None):
    """The search: Optuna (starting from the points `first`, if any), or Tune's random/grid."""
    from ray.tune.search.basic_variant import BasicVariantGenerator

    if opts.search != "optuna":  # takes no max_concurrent_trials; its own limit instead
        return BasicVariantGenerator(random_state=opts.seed, max_concurrent=_concurrency(opts))
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    metric, mode = opts.metrics()
    if len(metric) > 1:
        sampler = optuna.samplers.NSGAIISampler(seed=opts.seed,
                                                population_size=max(2, min(50, opts.samples // 2)))
        return OptunaSearch(metric=metric, mode=mode, sampler=sampler,
                            study_name=f"umtune-{name}", points_to_evaluate=first)
    return OptunaSearch(metric=metric[0], mode=mode[0], study_name=f"umtune-{name}",
                        sampler=optuna.samplers.TPESampler(seed=opts.seed),
                        points_to_evaluate=first)


def _scheduler(opts: SweepOptions, base: RunConfig):
    """Early stopping on held-out CE at equal epochs (the reported `epoch`: Tune's iteration
    count restarts when a trial is restored); trials that diverge report inf and are stopped."""
    from ray.tune.schedulers import (
        ASHAScheduler,
        FIFOScheduler,
        HyperBandScheduler,
        MedianStoppingRule,
        PopulationBasedTraining,
    )

    common = {"time_attr": "epoch", "metric": HELDOUT_METRIC, "mode": "min"}
    if opts.scheduler == "asha":
        return ASHAScheduler(**common, max_t=base.train.max_epochs,
                             grace_period=opts.grace_epochs, reduction_factor=2)
    if opts.scheduler == "hyperband":  # pauses trials and resumes them from their checkpoints
        return HyperBandScheduler(**common, max_t=base.train.max_epochs, reduction_factor=2)
    if opts.scheduler == "median":
        return MedianStoppingRule(**common, grace_period=opts.grace_epochs,
                                  min_samples_required=2)
    if opts.population:  # every grace_epochs, the worst quarter takes the best's weights
        if opts.scheduler == "pb2":
            from ray.tune.schedulers.pb2 import PB2

            return PB2(**common, perturbation_interval=opts.grace_epochs,
                       hyperparam_bounds=population_changes(opts, base))
        return PopulationBasedTraining(**common, perturbation_interval=opts.grace_epochs,
                                       hyperparam_mutations=population_changes(opts, base))
    return FIFOScheduler()


def population_changes(opts: SweepOptions, base: RunConfig) -> dict:
    """What population-based training may change: PBT resamples the space's train.* fields,
    PB2 fits a model over the ranges of its continuous ones."""
    varied = space(opts.space, base)
    changes = varied.bounds() if opts.scheduler == "pb2" else varied.mutations()
    if not changes:
        kind = "continuous train.* field (loguniform or uniform)" if opts.scheduler == "pb2" \
            else "train.* field"
        raise ValueError(f"--scheduler {opts.scheduler}: the space {varied.name!r} varies no "
                         f"{kind}; expected some to change (lambda, augmentation, learning rate)")
    if opts.scheduler == "pb2" and importlib.util.find_spec("sklearn") is None:
        raise ValueError("--scheduler pb2: scikit-learn is not installed (PB2's Gaussian "
                         "process); expected `pip install umtune[population]`")
    return changes


def _concurrency(opts: SweepOptions) -> int:
    """Trials that fit the cluster at once, so that no trial holds its driver while waiting for
    Train workers that can never be placed (the deadlock of over-subscribed sweeps)."""
    import ray

    if opts.max_concurrent:
        return opts.max_concurrent
    total = ray.cluster_resources()
    fits = math.floor(total.get("CPU", 0) / (opts.trial_workers * opts.worker_cpus) + 1e-9)
    if opts.gpu:
        fits = min(fits, math.floor(total.get("GPU", 0) / opts.trial_workers))
    if fits < 1:
        print(f"umtune: the cluster has {total.get('CPU', 0):g} CPUs and "
              f"{total.get('GPU', 0):g} GPUs now, less than one trial needs; running one trial "
              "at a time while the autoscaler adds nodes")
    return max(1, fits)


def _finish(results, path: str, opts: SweepOptions, base: RunConfig) -> SweepResult:
    table = trials_table(results, opts, base)
    write_table(table, path)
    if (local := local_path(path)) is not None:  # SQLite needs a file system
        write_study(table, local / STUDY_FILE, opts, base, name=local.name,
                    curves={Path(r.path).name: _curve(r) for r in results})
    return SweepResult(path=path, trials=table)


def _curve(result) -> dict[int, float]:
    """A trial's held-out CE by epoch, from Tune's record of its reports."""
    df = result.metrics_dataframe
    if df is None or not {"epoch", HELDOUT_METRIC} <= set(df.columns):
        return {}
    return dict(zip(df["epoch"].astype(int), df[HELDOUT_METRIC].astype(float), strict=True))
