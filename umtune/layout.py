"""The names in run and sweep folders and in trials' reports, spelled once.

The trainer writes them, the sweep driver writes and reads them, the report reads them: so they
live in a leaf module (like storage.py and config.py) that every layer may import.

A sweep folder `<storage>/<name>/`:
    sweep.json          how the sweep was started (options, base config, name)
    trial_<id>/         Tune's trial folder; result.json holds each epoch's report, one per line;
                        a one-worker trial's checkpoints (checkpoint_NNNNNN/)
    train/train-<id>/   the trial's run folder: a multi-worker trial's Ray Train run (below);
                        for every trial its evaluation/ and diverged.txt
    trials.parquet      one row per trial when the sweep ends (and trials.csv)
    study.db            the same trials as an Optuna study
A plain run folder (`umtune train --out RUN`): config.json, checkpoint/, metrics.jsonl, and with
`--keep-every M` checkpoints/minute_MMMM_MMM/: the first checkpoint after each M minutes of
training.
A Ray Train run folder `<storage>/<name>/`:
    checkpoint_manager_snapshot.json   Ray Train's, in every run
    epoch_NNNNNN/       a kept checkpoint, with metrics.jsonl (the history up to it)
    diverged.txt        why the loss stopped being finite, if it did
    evaluation/         the end-of-run evaluation: metrics.json and audio/
"""

from __future__ import annotations

# -- a run folder: plain (config.json, checkpoint/, metrics.jsonl) or Ray Train's (above)
STATE_FILE = "state.pt"  # in every checkpoint folder: weights, optimiser, config, step
HISTORY_FILE = "metrics.jsonl"  # every epoch's metrics; in a Ray Train run, in each checkpoint
RUN_CONFIG_FILE = "config.json"  # plain runs: the config the run was started (or resumed) with
RUN_CHECKPOINT_DIR = "checkpoint"  # plain runs: the newest checkpoint
MILESTONES_DIR = "checkpoints"  # plain runs: checkpoints kept at training-time marks (below)
SNAPSHOT_FILE = "checkpoint_manager_snapshot.json"
DIVERGED_FILE = "diverged.txt"
EVALUATION_DIR = "evaluation"
EVALUATION_METRICS_FILE = "metrics.json"
EVALUATION_AUDIO_DIR = "audio"


CHECKPOINT_PREFIX = "epoch_"  # a Ray Train run's checkpoints
TUNE_CHECKPOINT_PREFIX = "checkpoint_"  # a one-worker trial's, in its Tune folder (Tune's name)


def checkpoint_name(epoch: int) -> str:
    return f"{CHECKPOINT_PREFIX}{epoch:06d}"


def milestone_name(minutes: float) -> str:
    """A plain run's checkpoint kept once `minutes` of training had passed (`--keep-every`)."""
    return f"minute_{minutes:08.3f}".replace(".", "_")


# -- a sweep folder
SWEEP_FILE = "sweep.json"
TRIALS_STEM = "trials"  # .parquet and .csv
TRIALS_FILE = f"{TRIALS_STEM}.parquet"
STUDY_FILE = "study.db"
TRAIN_RUNS_DIR = "train"
RESULT_FILE = "result.json"  # Tune's, in each trial folder


def driver_lock(sweep: str) -> str:
    """The lock a sweep's driver holds beside the folder while it runs (local folders)."""
    head, _, name = sweep.rstrip("/").rpartition("/")
    return f"{head}/.{name}.driver.lock" if head else f".{name}.driver.lock"


TRIAL_PREFIX = "trial_"


def trial_name(trial_id: str) -> str:
    """A trial's folder (Tune's default name spells out every sampled value)."""
    return f"{TRIAL_PREFIX}{trial_id}"


def train_run_name(trial_id: str) -> str:
    """The trial's Ray Train run in `train/`: named after the trial, so that a restored trial
    continues the same run."""
    return f"train-{trial_id}"


# -- keys of the reports (per epoch, and the last one's evaluation)
HELDOUT_METRIC = "heldout_ce"  # what schedulers (ASHA) and the default objective minimise
COST_METRIC = "generation_flops_per_sample"  # the cost objective of multi-objective sweeps
EPOCH_TRIAL_KEY = "epoch_trial"  # in each epoch's report: the trial that trained it (PBT moves
# weights between trials, so a trial's history can begin in another's)
SCHEDULE_PREFIX = "schedule/"  # + a space's train.* field: its value in that epoch's training
DIVERGED_KEY = "diverged"  # in a trial's last report: why its loss stopped being finite
EVAL_PREFIX = "eval/"  # translation-quality metrics of the final checkpoint
BEST_EVAL_METRIC = f"{EVAL_PREFIX}translation_gain"  # higher is better
# objective name -> (reported metric, direction)
OBJECTIVES = {"quality": (HELDOUT_METRIC, "min"), "cost": (COST_METRIC, "min")}

# -- keys of a search space's sampled config
SWITCH_SUFFIX = ":enabled"  # the on/off switch of a parameter with an `off_value`
BASE_KEY = "base"  # the base config, as RunConfig.to_dict() (also in sweep.json)
SPACE_KEY = "space"  # a built-in space's name, or a YAML space's whole spec
TRIAL_KEY = "trial"  # the trial's resources and evaluation options, beside the sampled values
