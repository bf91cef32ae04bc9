"""The sweep driver: a search space, a searcher and a scheduler on Ray Tune, and the trial table.

`run_sweep` starts a sweep at `<storage>/<name>` and `resume_sweep` finishes one whose driver
died. Every trial is `tune_trial` (ray_train.py): a Ray Train run of the trial's config, relaying
its per-epoch metrics to Tune, where ASHA compares trials at equal `epoch`s (Tune's own
`training_iteration` restarts after a restore). The sweep directory holds Tune's experiment
state, `train/` (each trial's Train run and checkpoints), `sweep.json` (how it was started),
and when it ends `trials.parquet` and `trials.csv` (one row per trial: sampled values, final
metrics, status, time, resources, Pareto front) and `study.db` (an Optuna study of the same
trials, for Optuna's visualisations and optuna-dashboard).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import pandas as pd

from umtune.config import RunConfig
from umtune.data.writer import write_json_atomic
from umtune.search_spaces import BASE_KEY, get, space
from umtune.storage import local_path

SWEEP_FILE = "sweep.json"
TRIALS_FILE = "trials"  # .parquet and .csv
STUDY_FILE = "study.db"
# objective name -> (reported metric, direction); "quality" becomes translation quality when the
# analysis metrics are reported, held-out CE until then.
OBJECTIVES = {"quality": ("heldout_ce", "min"), "cost": ("generation_flops_per_sample", "min")}
SEARCHES = ("optuna", "random", "grid")
SCHEDULERS = ("asha", "none")


@dataclass(frozen=True)
class SweepOptions:
    """How a sweep samples, schedules and sizes its trials (saved in sweep.json)."""

    space: str | dict  # a built-in space's name or a YAML space's spec
    samples: int = 1  # trials (grid: repetitions of the grid)
    search: str = "optuna"
    scheduler: str = "asha"
    objectives: tuple[str, ...] = ("quality",)
    trial_workers: int = 1
    gpu: bool = False
    cpus_per_worker: float | None = None  # default 1 (see _cpus_per_worker)
    max_concurrent: int | None = None  # default: as many trials as the cluster's resources fit
    seed: int = 0
    grace_epochs: int = 1  # ASHA: epochs every trial runs before it can be stopped
    train_failures: int = 1  # worker-group restarts within one trial
    eval_clips: int = 1  # held-out clips per domain pair scored at each trial's end (0: none)
    eval_seconds: float = 1.0
    eval_seeds: int = 1  # evaluation seeds averaged (other clips, other samples)

    def __post_init__(self):
        checks = [(self.search in SEARCHES, "search", f"one of {', '.join(SEARCHES)}"),
                  (self.scheduler in SCHEDULERS, "scheduler", f"one of {', '.join(SCHEDULERS)}"),
                  (len(self.objectives) >= 1 and set(self.objectives) <= set(OBJECTIVES),
                   "objectives", f"some of {', '.join(OBJECTIVES)}"),
                  (self.samples >= 1, "samples", ">= 1"),
                  (self.eval_seeds >= 1, "eval_seeds", ">= 1"),
                  (self.trial_workers >= 1, "trial_workers", ">= 1"),
                  (len(self.objectives) == 1 or self.search == "optuna", "objectives",
                   "a single objective unless search is optuna (multi-objective sampler)")]
        for ok, name, expected in checks:
            if not ok:
                raise ValueError(f"sweep option {name}={getattr(self, name)!r}: expected "
                                 f"{expected}")


@dataclass
class SweepResult:
    path: str
    trials: pd.DataFrame
    failed: int = field(init=False)

    def __post_init__(self):
        self.failed = int((self.trials["status"].isin(["failed", "diverged"])).sum())


def run_sweep(base: RunConfig, opts: SweepOptions, *, storage: str | Path = "sweeps",
              name: str, address: str | None = None) -> SweepResult:
    """Run a new sweep at `<storage>/<name>` over `opts.space` around `base`, and write its
    trial table and Optuna study there."""
    from ray import tune

    from umtune.trainable import ray_train

    if "://" not in base.data.path:  # trials run in their own working directories
        base = replace(base, data=replace(base.data, path=str(Path(base.data.path).resolve())))
    # The space is built (and so checked) before Ray starts and before anything is written.
    domains = get(opts.space, base, "optuna" if opts.search == "optuna" else opts.search)
    ray_train.connect(address)
    storage = ray_train.check_storage(storage, ray_train.alive_nodes())
    path = f"{storage}/{name}"
    if _sweep_file_exists(path):
        raise FileExistsError(f"{path} already holds a sweep: resume it (--resume) or choose "
                              "another name")
    param_space = {**domains,
                   "trial": {"workers": opts.trial_workers, "gpu": opts.gpu,
                             "cpus_per_worker": _cpus_per_worker(opts),
                             "max_failures": opts.train_failures,
                             "eval_clips": opts.eval_clips, "eval_seconds": opts.eval_seconds,
                             "eval_seeds": opts.eval_seeds,
                             "storage": f"{path}/{ray_train.TRAIN_RUNS_DIR}"}}
    tuner = tune.Tuner(
        _trainable(), param_space=param_space,
        tune_config=tune.TuneConfig(search_alg=_searcher(opts, name),
                                    scheduler=_scheduler(opts, base), num_samples=opts.samples,
                                    max_concurrent_trials=_concurrency(opts)
                                    if opts.search == "optuna" else None,
                                    trial_name_creator=trial_name,
                                    trial_dirname_creator=trial_name),
        run_config=tune.RunConfig(name=name, storage_path=storage,
                                  failure_config=tune.FailureConfig(max_failures=0)))
    # Written last: it claims the name, and `--resume` needs it once Tune has started.
    _write_sweep_file(path, {"options": asdict(opts), BASE_KEY: base.to_dict(), "name": name})
    return _finish(tuner.fit(), path, opts, base)


def resume_sweep(path: str | Path, *, address: str | None = None) -> SweepResult:
    """Finish the sweep at `path` after its driver died: finished trials are kept as they are,
    unfinished ones continue their Train runs from their latest checkpoints.

    Tune's saved state is pickled: restoring it runs whatever code a crafted sweep folder
    holds, so resume only sweep folders you trust (the CLI's --help and the README say so)."""
    from ray import tune

    from umtune.trainable import ray_train

    path = str(path) if "://" in str(path) else str(Path(path).resolve())
    saved = _read_sweep_file(path)
    opts = SweepOptions(**{**saved["options"], "objectives": tuple(saved["options"]
                                                                   ["objectives"])})
    ray_train.connect(address)
    tuner = tune.Tuner.restore(path, trainable=_trainable(), resume_unfinished=True,
                               resume_errored=False, restart_errored=False)
    return _finish(tuner.fit(), path, opts, RunConfig.from_dict(saved[BASE_KEY]))


def trial_name(trial) -> str:
    """Short trial names (Tune's default spells out every sampled value)."""
    return f"trial_{trial.trial_id}"


def _trainable():
    from ray import tune

    from umtune.trainable.ray_train import TRIAL_RESOURCES, tune_trial

    return tune.with_resources(tune_trial, TRIAL_RESOURCES)


def _metrics(opts: SweepOptions) -> tuple[list[str], list[str]]:
    metric, mode = zip(*(OBJECTIVES[o] for o in opts.objectives), strict=True)
    return list(metric), list(mode)


def _searcher(opts: SweepOptions, name: str):
    from ray.tune.search.basic_variant import BasicVariantGenerator

    if opts.search != "optuna":  # takes no max_concurrent_trials; its own limit instead
        return BasicVariantGenerator(random_state=opts.seed, max_concurrent=_concurrency(opts))
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    metric, mode = _metrics(opts)
    if len(metric) > 1:
        sampler = optuna.samplers.NSGAIISampler(seed=opts.seed,
                                                population_size=max(2, min(50, opts.samples // 2)))
        return OptunaSearch(metric=metric, mode=mode, sampler=sampler,
                            study_name=f"umtune-{name}")
    return OptunaSearch(metric=metric[0], mode=mode[0], study_name=f"umtune-{name}",
                        sampler=optuna.samplers.TPESampler(seed=opts.seed))


def _scheduler(opts: SweepOptions, base: RunConfig):
    """ASHA on held-out CE at equal epochs; trials that diverge report inf and are stopped."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if opts.scheduler == "none":
        return FIFOScheduler()
    return ASHAScheduler(time_attr="epoch", metric=OBJECTIVES["quality"][0], mode="min",
                         max_t=base.train.max_epochs, grace_period=opts.grace_epochs,
                         reduction_factor=2)


def _cpus_per_worker(opts: SweepOptions) -> float:
    """CPUs (= torch threads) each Train worker requests; the trial driver takes none."""
    return opts.cpus_per_worker or 1.0


def _concurrency(opts: SweepOptions) -> int:
    """Trials that fit the cluster at once, so that no trial holds its driver while waiting for
    Train workers that can never be placed (the deadlock of over-subscribed sweeps)."""
    import ray

    if opts.max_concurrent:
        return opts.max_concurrent
    total = ray.cluster_resources()
    need = opts.trial_workers * _cpus_per_worker(opts)
    fits = math.floor(total.get("CPU", 0) / need + 1e-9)
    if opts.gpu:
        fits = min(fits, math.floor(total.get("GPU", 0) / opts.trial_workers))
    if fits < 1:
        print(f"umtune: the cluster has {total.get('CPU', 0):g} CPUs and "
              f"{total.get('GPU', 0):g} GPUs now, less than one trial needs; running one trial "
              "at a time while the autoscaler adds nodes")
    return max(1, fits)


def _finish(results, path: str, opts: SweepOptions, base: RunConfig) -> SweepResult:
    table = trials_table(results, opts, base)
    _write_table(table, path)
    if (local := local_path(path)) is not None:  # SQLite needs a file system
        write_study(table, local / STUDY_FILE, opts, base, name=local.name)
    return SweepResult(path=path, trials=table)


def trials_table(results, opts: SweepOptions, base: RunConfig) -> pd.DataFrame:
    """One row per trial: id, status, reason, sampled values, final metrics, time, resources."""
    keys = space(opts.space, base).keys
    rows = []
    for r in results:
        m = r.metrics or {}
        status, reason = _status(r, m, base)
        rows.append({
            "trial": Path(r.path).name,
            "status": status, "reason": reason,
            **{k: r.config.get(k) for k in keys},
            **{k: v for k, v in m.items() if isinstance(v, (int, float)) and not
               k.startswith(("config/", "time_this", "timestamp", "pid", "done"))},
            "trial_workers": opts.trial_workers, "gpu": opts.gpu,
            "path": r.path,  # Tune's trial folder: result.json holds every epoch's report
            # the trial's Train run (checkpoints; evaluation/ once evaluated)
            "run_path": f"{r.config['trial']['storage']}/train-"
                        f"{Path(r.path).name.removeprefix('trial_')}",
        })
    table = pd.DataFrame(rows)
    metric, mode = _metrics(opts)
    table["pareto"] = pareto_front(table, metric, mode)
    return table.sort_values("trial", ignore_index=True)


def _status(result, m: dict, base: RunConfig) -> tuple[str, str]:
    from umtune.trainable.ray_train import DIVERGED_KEY

    if m.get(DIVERGED_KEY):  # also when a scheduler stopped it on its inf report first
        return "diverged", m[DIVERGED_KEY]
    if result.error is not None:
        return "failed", _last_line(str(result.error))
    budget = base.train.max_minutes * 60
    if m.get("epoch", 0) < base.train.max_epochs and not (budget and
                                                          m.get("elapsed_s", 0) >= budget):
        return "stopped early", "scheduler"
    return "completed", ""


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line.split(":")[0]]
    return (errors or lines or [""])[-1][:300]


def pareto_front(table: pd.DataFrame, metrics: list[str], modes: list[str]) -> list[bool]:
    """Whether each row is non-dominated among rows with finite values of every metric."""
    if not set(metrics) <= set(table.columns):
        return [False] * len(table)
    signs = [1 if mode == "min" else -1 for mode in modes]
    values = [[s * row[m] for m, s in zip(metrics, signs, strict=True)]
              for _, row in table[metrics].iterrows()]
    finite = [all(math.isfinite(v) for v in vs) for vs in values]

    def dominated(i: int) -> bool:
        return any(finite[j] and j != i and all(a <= b for a, b in zip(values[j], values[i],
                                                                       strict=True))
                   and values[j] != values[i] for j in range(len(values)))

    return [finite[i] and not dominated(i) for i in range(len(values))]


def write_study(table: pd.DataFrame, file: Path, opts: SweepOptions, base: RunConfig,
                name: str) -> None:
    """The trials as an Optuna study in SQLite (replaced atomically): Optuna's visualisations
    and optuna-dashboard open any sweep, whatever searcher ran it."""
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    distributions = dict(OptunaSearch.convert_search_space(
        space(opts.space, base).tune_config("optuna")))
    metric, mode = _metrics(opts)
    tmp = Path(tempfile.mkdtemp(dir=file.parent, prefix=".study.")) / file.name
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=f"sqlite:///{tmp}", study_name=name,
                                directions=["minimize" if m == "min" else "maximize"
                                            for m in mode])
    states = {"completed": optuna.trial.TrialState.COMPLETE,
              "stopped early": optuna.trial.TrialState.PRUNED}
    for _, row in table.iterrows():
        state = states.get(row["status"], optuna.trial.TrialState.FAIL)
        values = [float(row[m]) for m in metric] if state == states["completed"] else None
        study.add_trial(optuna.trial.create_trial(
            params={k: _plain(row[k]) for k in distributions}, distributions=distributions,
            values=values, state=state, user_attrs={"trial": row["trial"],
                                                    "status": row["status"]}))
    os.replace(tmp, file)
    os.rmdir(tmp.parent)


def _plain(value):
    return value.item() if hasattr(value, "item") else value


def _write_table(table: pd.DataFrame, path: str) -> None:
    if (local := local_path(path)) is None:
        table.to_parquet(f"{path}/{TRIALS_FILE}.parquet")
        table.to_csv(f"{path}/{TRIALS_FILE}.csv", index=False)
        return
    for suffix, write in ((".parquet", table.to_parquet),
                          (".csv", lambda f: table.to_csv(f, index=False))):
        final = local / f"{TRIALS_FILE}{suffix}"
        tmp = final.with_name(f".{final.name}.tmp")
        write(tmp)
        os.replace(tmp, final)


def read_trials(path: str | Path) -> pd.DataFrame:
    local = local_path(str(path))
    return pd.read_parquet(f"{local if local is not None else path}/{TRIALS_FILE}.parquet")


def summary(result: SweepResult) -> str:
    """The results table and the counts, for the end of `umtune sweep`."""
    t = result.trials
    counts = t["status"].value_counts()
    shown = [c for c in ("trial", "status", *[c for c in t.columns if "." in c],
                         "epoch", "heldout_ce", "heldout_confusion_acc",
                         "generation_flops_per_sample", "eval/timbre_acc",
                         "eval/translation_gain", "eval/latent_domain_acc", "pareto", "reason")
             if c in t.columns]
    with pd.option_context("display.width", 200, "display.max_columns", 30,
                           "display.max_colwidth", 60):
        table = t[shown].to_string(index=False)
    return (f"{table}\n\n{len(t)} trials: " + ", ".join(f"{n} {s}" for s, n in counts.items())
            + f"; {result.failed} failed\nsweep: {result.path}\ntrials: {result.path}/"
            f"{TRIALS_FILE}.parquet (and .csv), Optuna study: {result.path}/{STUDY_FILE}")


def _sweep_file_exists(path: str) -> bool:
    import pyarrow.fs

    fs, where = pyarrow.fs.FileSystem.from_uri(f"{path}/{SWEEP_FILE}")
    return fs.get_file_info(where).type != pyarrow.fs.FileType.NotFound


def _write_sweep_file(path: str, content: dict) -> None:
    if (local := local_path(path)) is None:  # an object store: a whole object appears at once
        import pyarrow.fs

        fs, where = pyarrow.fs.FileSystem.from_uri(f"{path}/{SWEEP_FILE}")
        with fs.open_output_stream(where) as f:
            f.write(json.dumps(content, indent=1).encode())
        return
    local.mkdir(parents=True, exist_ok=True)
    write_json_atomic(local / SWEEP_FILE, content)


def _read_sweep_file(path: str) -> dict:
    import pyarrow.fs

    fs, where = pyarrow.fs.FileSystem.from_uri(f"{path}/{SWEEP_FILE}")
    try:
        with fs.open_input_stream(where) as f:
            return json.loads(f.read())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: not a umtune sweep (no {SWEEP_FILE})") from None
