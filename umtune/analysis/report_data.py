"""What the sweep report reads, gathered once into `SweepData`: the trial table, how the sweep
was started, its Optuna study, every trial's per-epoch reports and any trial's evaluation.

No plotting here (report_figures.py) and no HTML (report_html.py). The sweep folder's layout is
the one the sweep driver writes; its names come from umtune/layout.py, a leaf both read.
Locations may be local paths or URIs (`file://`, `s3://`: read with pyarrow.fs); a trial whose
recorded folders are gone (a sweep folder moved or copied elsewhere) is looked up at the same
place inside the sweep folder.

A sweep folder may come from someone else, so nothing outside it is read: a recorded trial or
run folder, or an audio path in an evaluation, that leads outside the sweep folder (`..`, an
absolute path, a symbolic link) is not followed. A file that cannot be parsed is left out and
named in `SweepData.notes`; only an unreadable trial table stops the report.
"""

from __future__ import annotations

import io
import json
import math
import posixpath
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from umtune.layout import (
    BASE_KEY,
    BEST_EVAL_METRIC,
    CHECKPOINT_PREFIX,
    EVAL_PREFIX,
    EVALUATION_DIR,
    EVALUATION_METRICS_FILE,
    HELDOUT_METRIC,
    OBJECTIVES,
    RESULT_FILE,
    STATE_FILE,
    STUDY_FILE,
    SWEEP_FILE,
    SWITCH_SUFFIX,
    TRAIN_RUNS_DIR,
    TRIAL_KEY,
    TRIAL_PREFIX,
    TRIALS_FILE,
    TUNE_CHECKPOINT_PREFIX,
    driver_lock,
    kept_checkpoints,
    train_run_name,
)
from umtune.storage import exists, is_locked, join, local_path, read_bytes

EVALUATION_FILE = f"{EVALUATION_DIR}/{EVALUATION_METRICS_FILE}"  # in a trial's Train run
LAMBDA = "train.confusion_lambda"
AUG = "train.aug_semitones"
# the method's components first: the confusion weight, the augmentation, the dilation schedules
NAMED_PARAMS = (LAMBDA, AUG, "model.encoder.dilations", "model.decoder.dilations")
TRAINING_METRICS = (HELDOUT_METRIC, "heldout_confusion_acc", "generation_flops_per_sample")
CURVE_METRICS = ("epoch", HELDOUT_METRIC, "train_ce")
OFF = "off"  # the shown value of a parameter whose switch is false


# An audio entry of an evaluation: the keys the gallery reads and the types they must have.
AUDIO_KEYS = {"clip": (str, int), "kind": (str,), "path": (str,)}


class Unavailable(Exception):
    """A report section's data is absent; the message says why, for the reader."""


class OutsideSweep(ValueError):
    """A file named in the sweep folder lies outside it, so it is not read."""


@dataclass(frozen=True)
class Evaluation:
    """One trial's `evaluation/metrics.json` and where it lies."""

    trial: str
    location: str  # the evaluation folder
    metrics: dict
    root: str = ""  # the sweep folder: audio is read only from inside it

    def audio(self) -> list[dict]:
        """The audio entries that name a clip, a kind and a path (others are ignored)."""
        return [e for e in self.metrics.get("audio") or [] if isinstance(e, dict)
                and all(isinstance(e.get(k), t) and not isinstance(e.get(k), bool)
                        for k, t in AUDIO_KEYS.items())
                and all(isinstance(e.get(k), (str, type(None))) for k in ("source", "target"))]

    def audio_bytes(self, entry: dict) -> bytes:
        location = join(self.location, entry["path"])
        if entry["path"].startswith("/") or "://" in entry["path"] or \
                not inside(location, self.root or self.location):
            raise OutsideSweep(f"{entry['path']} lies outside the sweep folder")
        return read_bytes(location)


@dataclass
class SweepData:
    """A finished sweep as the report sees it."""

    location: str
    name: str
    options: dict  # sweep.json's "options" ({} when the file is absent)
    trials: pd.DataFrame  # trials.parquet, plus `eval/<name>` columns from evaluations
    curves: dict[str, pd.DataFrame]  # trial -> its per-epoch reports (CURVE_METRICS)
    evaluations: dict[str, Evaluation]  # trial -> its evaluation, where there is one
    notes: list[str] = field(default_factory=list)  # what could not be read, for the reader

    @property
    def params(self) -> list[str]:
        """The sampled keys: the table's dotted config names (metrics have none), switches
        included."""
        return [c for c in self.trials.columns if "." in c and "/" not in c]

    @property
    def objectives(self) -> list[tuple[str, str]]:
        names = self.options.get("objectives") or ["quality"]
        return [OBJECTIVES[n] for n in names if n in OBJECTIVES]

    def effective(self, key: str) -> pd.Series:
        """A parameter's values as the trials ran them: OFF where its switch was false."""
        values = self.trials[key].astype(object)
        switch = f"{key}{SWITCH_SUFFIX}"
        if switch in self.trials.columns:
            values = values.where(self.trials[switch].astype(bool), OFF)
        return values

    def switched_off(self, key: str) -> pd.Series:
        """Whether each trial ran without the component `key`: switched off, or exactly 0."""
        return self.effective(key).map(lambda v: v == OFF or (_is_number(v) and float(v) == 0.0))

    def varied(self) -> list[str]:
        """Parameters (switches folded into their field) with more than one value in the sweep,
        the method's components first."""
        keys = [k for k in self.params if not k.endswith(SWITCH_SUFFIX)]
        keys = [k for k in NAMED_PARAMS if k in keys] + [k for k in keys if k not in NAMED_PARAMS]
        return [k for k in keys if self.effective(k).dropna().map(repr).nunique() > 1]

    def metrics(self) -> list[str]:
        """The final metrics worth plotting: held-out CE, confusion accuracy, generation cost
        and every evaluation summary metric, each where it differs between trials (a metric
        with one value, such as a chance level, says nothing about the hyperparameters)."""
        t = self.trials
        names = [m for m in TRAINING_METRICS if m in t.columns]
        names += [c for c in t.columns if c.startswith(EVAL_PREFIX)]
        return [m for m in names if finite(t[m]).nunique() > 1]

    def completed(self) -> pd.DataFrame:
        return self.trials[self.trials["status"] == "completed"]

    def best_trial(self) -> tuple[str, str]:
        """The best completed trial and the rule that chose it: the highest translation gain
        among evaluated trials once there are any, else the lowest held-out CE."""
        done = self.completed()
        if BEST_EVAL_METRIC in done.columns and finite(done[BEST_EVAL_METRIC]).any():
            row = done.loc[finite(done[BEST_EVAL_METRIC]).idxmax()]
            return row["trial"], f"highest {BEST_EVAL_METRIC} among completed trials"
        if HELDOUT_METRIC in done.columns and finite(done[HELDOUT_METRIC]).any():
            row = done.loc[finite(done[HELDOUT_METRIC]).idxmin()]
            return row["trial"], "lowest heldout_ce among completed trials"
        raise Unavailable("no completed trial with a finite held-out CE")

    def final_checkpoint(self, trial: str) -> Path:
        """The newest checkpoint a trial kept, on this machine: in its run folder's
        checkpoints/; for a sweep of umtune's earlier run-folder shape, Tune's newest
        (`checkpoint_NNNNNN/` in the trial folder) or its Ray Train run's (`epoch_NNNNNN/`)."""
        row = self.trials[self.trials["trial"] == trial].iloc[0]
        run, tune = _run_folder(row, self.location), _trial_folder(row, self.location)
        local = {f: p for f in (run, tune) if f is not None and (p := local_path(f)) is not None}
        if run in local and (kept := kept_checkpoints(local[run])):
            return kept[max(kept)]
        for folder, prefix in ((run, CHECKPOINT_PREFIX), (tune, TUNE_CHECKPOINT_PREFIX)):
            kept = {int(number): c for c in (local[folder].glob(f"{prefix}*")
                                             if folder in local else ())
                    if (number := c.name.removeprefix(prefix)).isdigit()
                    and (c / STATE_FILE).is_file()}
            if kept:
                return kept[max(kept)]
        raise Unavailable(f"{trial}: no checkpoint of its on this machine (looked in "
                          f"{', '.join(f for f in (run, tune) if f) or 'no folder of its'})")

    def ablation_trial(self, exclude: str) -> tuple[str, str] | None:
        """An evaluated trial without a component of the method, to hear against the best one:
        the confusion loss off (lambda 0) first, else no augmentation; the best such trial by
        the same rule as `best_trial`. None when the sweep has no evaluated one."""
        t = self.trials
        for key, label in ((LAMBDA, "no confusion loss (lambda = 0)"),
                           (AUG, "no augmentation (0 semitones)")):
            if key not in t.columns:
                continue
            off = self.switched_off(key)
            pool = t[off & t["trial"].isin(self.evaluations) & (t["trial"] != exclude)]
            if pool.empty:
                continue
            pool = pool.assign(_done=pool["status"] == "completed")
            if BEST_EVAL_METRIC in pool.columns and finite(pool[BEST_EVAL_METRIC]).any():
                pool = pool.assign(_key=-finite(pool[BEST_EVAL_METRIC]))
            else:
                pool = pool.assign(_key=finite(pool[HELDOUT_METRIC]) if HELDOUT_METRIC in pool
                                   else 0.0)
            row = pool.sort_values(["_done", "_key"], ascending=[False, True],
                                   na_position="last").iloc[0]
            return row["trial"], label
        return None


def load_sweep(location: str | Path) -> SweepData:
    """Read a sweep folder written by `umtune sweep`: its trial table, or, while its driver
    runs, the trials' reports so far."""
    location = _plain_location(location)
    file = join(location, TRIALS_FILE)
    running: list[str] = []
    try:
        trials = pd.read_parquet(io.BytesIO(read_bytes(file)))
    except FileNotFoundError:
        local = local_path(location)
        if local is not None and is_locked(Path(driver_lock(str(local)))):
            trials = running_trials(local)
            if trials.empty:
                raise FileNotFoundError(f"{location}: the sweep is still running (its driver "
                                        f"holds {driver_lock(str(local))}) and no trial has "
                                        "reported yet: report it once one has") from None
            running = [f"the sweep is still running: {len(trials)} trial(s) reported so far, "
                       f"{(trials['status'] == 'completed').sum()} completed; statuses and "
                       "metrics as of their latest report"]
        else:
            raise FileNotFoundError(f"{location}: no {TRIALS_FILE}; expected a sweep folder "
                                    "written by `umtune sweep` (finish one whose driver died "
                                    "with `umtune sweep --resume`)") from None
    except (OSError, ValueError) as e:  # pyarrow's errors are both
        raise ValueError(f"{file}: not a readable trial table ({_first_line(e)}); expected the "
                         "parquet file `umtune sweep` writes") from None
    missing = [c for c in ("trial", "status") if c not in trials.columns]
    if missing:
        raise ValueError(f"{file}: no {' or '.join(missing)} column; expected the trial table "
                         "`umtune sweep` writes")
    notes: list[str] = running
    trials = trials.reset_index(drop=True).astype({"trial": str, "status": str})
    saved = _read_json(join(location, SWEEP_FILE), notes, "the sweep's options are unknown")
    if saved is None and not exists(join(location, SWEEP_FILE)):
        notes.append(f"no {SWEEP_FILE}: the sweep's options are unknown")
    saved = saved or {}
    name = str(saved.get("name") or location.rstrip("/").rpartition("/")[2])
    curves = {}
    evaluations = {}
    for _, row in trials.iterrows():
        trial = row["trial"]
        folder = _trial_folder(row, location)
        if folder is not None and (curve := _curve(folder, notes)) is not None:
            curves[trial] = curve
        run = _run_folder(row, location)
        if run is not None:
            metrics = _read_json(join(run, EVALUATION_FILE), notes,
                                 f"{trial}'s evaluation is left out")
            if metrics is not None:
                evaluations[trial] = Evaluation(trial, join(run, EVALUATION_DIR), metrics,
                                                root=location)
    missing = [t for t in trials["trial"] if t not in curves]
    if missing:
        notes.append(f"no readable {RESULT_FILE} for {len(missing)} trial(s): "
                     f"{', '.join(missing[:5])}")
    options = saved.get("options")
    return SweepData(location=location, name=name,
                     options=options if isinstance(options, dict) else {},
                     trials=_with_evaluations(trials, evaluations), curves=curves,
                     evaluations=evaluations, notes=notes)


def running_trials(sweep: Path) -> pd.DataFrame:
    """A running sweep's trial table from each trial's latest report (Tune's result.json):
    its sampled values, its numeric metrics, and "completed" once the base config's budget is
    spent, else "running"."""
    from umtune.config import RunConfig

    saved = json.loads((sweep / SWEEP_FILE).read_text()) if (sweep / SWEEP_FILE).is_file() \
        else {}
    base = RunConfig.from_dict(saved[BASE_KEY]) if BASE_KEY in saved else None
    rows = []
    for folder in sorted(sweep.glob(f"{TRIAL_PREFIX}*")):
        try:
            lines = (folder / RESULT_FILE).read_text().splitlines()
            last = json.loads(lines[-1]) if lines else None
        except (OSError, ValueError):
            continue  # not reported yet, or mid-write: the next report shows it
        if not isinstance(last, dict):
            continue
        config = last.get("config") if isinstance(last.get("config"), dict) else {}
        done = base is not None and base.train.finished(int(last.get("epoch", 0)),
                                                        float(last.get("elapsed_s", 0)))
        trial_options = config.get(TRIAL_KEY) if isinstance(config.get(TRIAL_KEY), dict) else {}
        rows.append({
            "trial": folder.name, "status": "completed" if done else "running", "reason": "",
            **{k: v for k, v in config.items() if "." in k and "/" not in k},
            **{k: v for k, v in last.items() if _is_number(v) and not k.startswith(
                ("time_", "timestamp", "pid", "done", "training_iteration",
                 "iterations_since_restore")) and ("/" not in k or k.startswith(EVAL_PREFIX))},
            "precision": last.get("precision"),
            "path": str(folder),
            "run_path": f"{trial_options.get('storage', sweep / TRAIN_RUNS_DIR)}/"
                        f"{train_run_name(folder.name.removeprefix(TRIAL_PREFIX))}"})
    return pd.DataFrame(rows)


def _read_json(file: str, notes: list[str], consequence: str) -> dict | None:
    """A JSON object from `file`; None when the file is absent, or (with a note naming it) when
    it is not a JSON object."""
    try:
        value = json.loads(read_bytes(file))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        notes.append(f"unreadable {file} ({_first_line(e)}): {consequence}")
        return None
    if not isinstance(value, dict):
        notes.append(f"unreadable {file} (a JSON {type(value).__name__}, expected an object): "
                     f"{consequence}")
        return None
    return value


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]


def study_file(data: SweepData) -> Path | None:
    """The sweep's Optuna study file when it is on this machine."""
    file = Path(data.location) / STUDY_FILE
    return file if "://" not in data.location and file.is_file() else None


def finite(series: pd.Series) -> pd.Series:
    """Numbers as floats, NaN where a value is missing, not a number, or infinite."""
    values = pd.to_numeric(series, errors="coerce").astype(float)
    return values.where(np.isfinite(values))


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, (bool, np.bool_))


def _with_evaluations(trials: pd.DataFrame, evaluations: dict[str, Evaluation]) -> pd.DataFrame:
    """`eval/<name>` columns from each evaluation's summary, where the table has no value."""
    summaries = {t: e.metrics.get("summary") for t, e in evaluations.items()}
    rows = {t: {f"{EVAL_PREFIX}{k}": v for k, v in summary.items() if _is_number(v) or v is None}
            for t, summary in summaries.items() if isinstance(summary, dict)}
    columns = sorted({c for r in rows.values() for c in r})
    trials = trials.copy()
    for c in columns:
        read = trials["trial"].map(lambda t, c=c: rows.get(t, {}).get(c)).astype(float)
        trials[c] = trials[c].astype(float).fillna(read) if c in trials.columns else read
    return trials


def _curve(folder: str, notes: list[str]) -> pd.DataFrame | None:
    """A trial's per-epoch reports from Tune's result.json; None (and a note naming the file)
    when it cannot be parsed."""
    file = join(folder, RESULT_FILE)
    try:
        text = read_bytes(file).decode()
        reports = [json.loads(line) for line in text.splitlines() if line.strip()]
    except FileNotFoundError:
        return pd.DataFrame(columns=list(CURVE_METRICS))
    except (OSError, ValueError) as e:
        notes.append(f"unreadable {file} ({_first_line(e)}): its learning curve is left out")
        return None
    rows = [{k: r.get(k, math.nan) for k in CURVE_METRICS} for r in reports
            if isinstance(r, dict) and _is_number(r.get("epoch"))]
    curve = pd.DataFrame(rows, columns=list(CURVE_METRICS))
    # a trial restored after a driver failure may report an epoch twice: keep the latest report
    return curve.drop_duplicates("epoch", keep="last").sort_values("epoch", ignore_index=True)


def _trial_folder(row: pd.Series, root: str) -> str | None:
    """A trial's Tune folder in the sweep folder `root` (where it was, or where it is now)."""
    return _found(row.get("path"), join(root, row["trial"]), root)


def _run_folder(row: pd.Series, root: str) -> str | None:
    """A trial's run folder under `root`/train/ (where it was, or where it is now)."""
    run = row.get("run_path")
    name = str(run).rstrip("/").rpartition("/")[2] if isinstance(run, str) else ""
    return _found(run, join(root, TRAIN_RUNS_DIR, name) if name else None, root)


def _found(recorded, fallback: str | None, root: str) -> str | None:
    """The recorded folder if it exists inside the sweep folder `root`, else the fallback (the
    same place inside it), else None."""
    for candidate in (recorded, fallback):
        if isinstance(candidate, str) and candidate:
            candidate = _plain_location(candidate)
            if inside(candidate, root) and exists(candidate):
                return candidate
    return None


def inside(location: str, root: str) -> bool:
    """Whether `location` lies in the folder `root` (or is it), after `..` and, on a local file
    system, symbolic links are resolved; a URI only inside a URI of the same scheme."""
    location, root = _plain_location(location), _plain_location(root)
    if "://" not in location and "://" not in root:
        return Path(location).resolve().is_relative_to(Path(root).resolve())
    scheme, _, path = location.partition("://")
    root_scheme, _, root_path = root.partition("://")
    if "://" not in location or "://" not in root or scheme != root_scheme:
        return False
    path, root_path = posixpath.normpath("/" + path), posixpath.normpath("/" + root_path)
    return path == root_path or path.startswith(root_path.rstrip("/") + "/")


def _plain_location(location: str | Path) -> str:
    text = str(location)
    return text.removeprefix("file://") if text.startswith("file:///") else text
