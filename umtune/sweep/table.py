"""The results of a sweep: one row per trial (sampled values, final metrics, status and why,
resources, folders), the Pareto front of its objectives, the same trials as an Optuna study,
and the summary `umtune sweep` prints."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from umtune.config import RunConfig
from umtune.layout import (
    DIVERGED_KEY,
    EPOCH_TRIAL_KEY,
    EVAL_PREFIX,
    HELDOUT_METRIC,
    SCHEDULE_PREFIX,
    STUDY_FILE,
    TRIAL_KEY,
    TRIAL_PREFIX,
    TRIALS_FILE,
    train_run_name,
)
from umtune.search_spaces import space
from umtune.storage import staged
from umtune.sweep.options import SweepOptions
from umtune.trainable.run_folder import read_history


@dataclass
class SweepResult:
    path: str
    trials: pd.DataFrame
    failed: int = field(init=False)

    def __post_init__(self):
        self.failed = int((self.trials["status"].isin(["failed", "diverged"])).sum())


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
               k.startswith(("config/", SCHEDULE_PREFIX, "time_this", "timestamp", "pid",
                             "done"))},
            "precision": m.get("precision"),  # what `train.precision: auto` chose, e.g. bf16
            "trial_workers": opts.trial_workers, "gpu": opts.gpu,
            "path": r.path,  # Tune's trial folder: result.json holds every epoch's report
            # the trial's run folder (layout.py): its checkpoints, history, evaluation/
            "run_path": f"{r.config[TRIAL_KEY]['storage']}/"
                        f"{train_run_name(Path(r.path).name.removeprefix(TRIAL_PREFIX))}",
        })
        if opts.population:
            rows[-1].update(lineage(_history(r)))
    table = pd.DataFrame(rows)
    metric, mode = opts.metrics()
    table["pareto"] = pareto_front(table, metric, mode, eligible=table["status"] == "completed")
    return table.sort_values("trial", ignore_index=True)


def _history(result) -> list[dict]:
    """Every epoch's report in the trial's latest checkpoint (begun, under PBT, by the trials
    whose weights it took)."""
    if result.checkpoint is None:
        return []
    with result.checkpoint.as_directory() as d:
        return read_history(d)


def lineage(history: list[dict]) -> dict[str, str]:
    """The trials that trained a run's epochs, and each scheduled field's values over the
    epochs: "lineage" ("trial_a 1-2, trial_b 3-4") and "schedule" ("train.lr 0.003 (1-2),
    0.0036 (3-4)"; fields separated by "; ")."""
    def spans(pairs: list[tuple[int, object]], show) -> str:
        parts: list[list] = []
        for epoch, value in pairs:
            if parts and parts[-1][0] == value:
                parts[-1][2] = epoch
            else:
                parts.append([value, epoch, epoch])
        return ", ".join(show(v, f"{a}" if a == b else f"{a}-{b}") for v, a, b in parts)

    keys = list(dict.fromkeys(k for h in history for k in h if k.startswith(SCHEDULE_PREFIX)))
    return {
        "lineage": spans([(h["epoch"], h.get(EPOCH_TRIAL_KEY, "?")) for h in history],
                         lambda v, e: f"{v} {e}"),
        "schedule": "; ".join(
            f"{k.removeprefix(SCHEDULE_PREFIX)} " + spans(
                [(h["epoch"], h.get(k)) for h in history],
                lambda v, e: f"{v:.3g} ({e})" if isinstance(v, float) else f"{v} ({e})")
            for k in keys)}


def _status(result, m: dict, base: RunConfig) -> tuple[str, str]:
    if m.get(DIVERGED_KEY):  # also when a scheduler stopped it on its inf report first
        return "diverged", m[DIVERGED_KEY]
    if result.error is not None:
        return "failed", _last_line(str(result.error))
    if not base.train.finished(m.get("epoch", 0), m.get("elapsed_s", 0)):
        return "stopped early", "scheduler"
    return "completed", ""


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line.split(":")[0]]
    return (errors or lines or [""])[-1][:300]


def pareto_front(table: pd.DataFrame, metrics: list[str], modes: list[str],
                 eligible: pd.Series | None = None) -> list[bool]:
    """Whether each row is non-dominated among the eligible rows (all by default; a sweep's
    completed trials: the study calls a stopped one pruned) with finite values of every metric.
    In lexicographic order a row can only be dominated by one before it, so each is checked
    against the front found so far: fast for the small fronts of big sweeps."""
    front = np.zeros(len(table), dtype=bool)
    if not set(metrics) <= set(table.columns):
        return front.tolist()
    signs = np.array([1.0 if mode == "min" else -1.0 for mode in modes])
    values = table[metrics].to_numpy(dtype=float) * signs
    usable = np.isfinite(values).all(axis=1)
    if eligible is not None:
        usable &= np.asarray(eligible, dtype=bool)
    kept = np.empty((0, len(metrics)))
    for i in np.lexsort(values.T[::-1]):
        v = values[i]
        if usable[i] and not ((kept <= v).all(axis=1) & (kept != v).any(axis=1)).any():
            front[i] = True
            kept = np.vstack([kept, v])
    return front.tolist()


def study_distributions(opts: SweepOptions, base: RunConfig) -> dict:
    """The space as Optuna distributions, whatever searcher samples it."""
    from ray.tune.search.optuna import OptunaSearch

    return dict(OptunaSearch.convert_search_space(space(opts.space, base)
                                                  .tune_config("optuna")))


def create_study(file: Path, opts: SweepOptions, name: str):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(storage=f"sqlite:///{file}", study_name=name, load_if_exists=True,
                               directions=["minimize" if m == "min" else "maximize"
                                           for m in opts.metrics()[1]])


def write_study(table: pd.DataFrame, file: Path, opts: SweepOptions, base: RunConfig,
                name: str, curves: dict[str, dict[int, float]] | None = None) -> None:
    """The trials as an Optuna study in SQLite (replaced atomically), each with its held-out
    CE per epoch (`curves`, by trial) as intermediate values: Optuna's visualisations and
    optuna-dashboard open any sweep, whatever searcher ran it. While the sweep runs,
    `LiveStudy` keeps the same file up to date."""
    import optuna

    distributions = _covering(study_distributions(opts, base), table)
    metric, _ = opts.metrics()
    states = {"completed": optuna.trial.TrialState.COMPLETE,
              "stopped early": optuna.trial.TrialState.PRUNED}
    with staged(file) as tmp:  # SQLite takes the empty staged file as an empty database
        study = create_study(tmp, opts, name)
        for _, row in table.iterrows():
            state = states.get(row["status"], optuna.trial.TrialState.FAIL)
            values = [float(row[m]) for m in metric] if state == states["completed"] else None
            study.add_trial(optuna.trial.create_trial(
                params={k: _plain(row[k]) for k in distributions}, distributions=distributions,
                values=values, state=state, user_attrs={"trial": row["trial"],
                                                        "status": row["status"]},
                intermediate_values=_finite((curves or {}).get(row["trial"], {}))))


def _covering(distributions: dict, table: pd.DataFrame) -> dict:
    """The space's numeric ranges widened to every value a trial ran: PBT's explore step
    multiplies a value by 0.8 or 1.2 and PB2's rounds it, both past the space's bounds (a
    PB2 trial ran lr 9.9999997e-10 in a space from 1e-9), and Optuna refuses a trial whose
    value its distribution does not contain. A widened range keeps no step: the values
    explored past the bounds need not lie on its grid."""
    from optuna.distributions import FloatDistribution, IntDistribution

    widened = dict(distributions)
    for key, d in distributions.items():
        ran = pd.to_numeric(table[key], errors="coerce").dropna() if key in table else ()
        if not isinstance(d, FloatDistribution | IntDistribution) or len(ran) == 0:
            continue
        low, high = min(d.low, ran.min()), max(d.high, ran.max())
        if (low, high) != (d.low, d.high):
            widened[key] = (FloatDistribution(float(low), float(high), log=d.log)
                            if isinstance(d, FloatDistribution) else
                            IntDistribution(int(low), int(high), log=d.log))
    return widened


def _finite(values: dict) -> dict[int, float]:
    return {int(k): float(v) for k, v in values.items() if math.isfinite(v)}


def _plain(value):
    return value.item() if hasattr(value, "item") else value


def summary(result: SweepResult) -> str:
    """The results table and the counts, for the end of `umtune sweep`."""
    t = result.trials
    counts = t["status"].value_counts()
    shown = [c for c in ("trial", "status", *[c for c in t.columns if "." in c],
                         "epoch", HELDOUT_METRIC, "heldout_confusion_acc",
                         "generation_flops_per_sample",
                         *(f"{EVAL_PREFIX}{m}" for m in ("timbre_acc", "translation_gain",
                                                         "latent_domain_acc")), "lineage",
                         "pareto", "reason")
             if c in t.columns]
    with pd.option_context("display.width", 200, "display.max_columns", 30,
                           "display.max_colwidth", 60):
        table = t[shown].to_string(index=False)
    return (f"{table}\n\n{len(t)} trials: " + ", ".join(f"{n} {s}" for s, n in counts.items())
            + f"; {result.failed} failed\nsweep: {result.path}\ntrials: {result.path}/"
            f"{TRIALS_FILE} (and .csv), Optuna study: {result.path}/{STUDY_FILE}")


