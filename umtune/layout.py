"""The names in run and sweep folders and in trials' reports, spelled once.

The trainer writes them, the sweep driver writes and reads them, the report reads them: so they
live in a leaf module (like storage.py and config.py) that every layer may import.

A run folder, one shape however the run trains (umtune/trainable/run_folder.py writes it):
    run.json            what the folder holds: its format and the trainer that writes it
                        (plain, ray_train or tune_trial); resume reads it
    config.json         the config the run was started (or last resumed) with
    metrics.jsonl       every epoch's report, one JSON object a line
    checkpoints/        epoch_NNNNNN/: state.pt and metrics.jsonl (the history up to it); the
                        newest ones, and with `--keep-every M` the first after every M minutes
                        of training
    checkpoint_manager_snapshot.json   Ray Train's state in a Ray Train run (how its restarts
                        find the latest checkpoint)
    evaluation/         an evaluation of the run: metrics.json and audio/ (a sweep's trial: of
                        its final checkpoint); evaluation/epoch_NNNNNN/ for several checkpoints
    diverged.txt        why the loss stopped being finite, if it did
Folders of the earlier shapes (a plain run's checkpoint/ and checkpoints/minute_*, a Ray Train
run's epoch_NNNNNN/ beside the snapshot) are refused, naming `umtune upgrade RUN`.

A sweep folder `<storage>/<name>/`:
    sweep.json          how the sweep was started (options, base config, name)
    trial_<id>/         Tune's trial folder: result.json holds each epoch's report, one per
                        line; a one-worker trial's checkpoints as Tune keeps them (Tune's state:
                        restores and population-based training read them)
    train/train-<id>/   the trial's run folder (above)
    trials.parquet      one row per trial when the sweep ends (and trials.csv)
    study.db            the same trials as an Optuna study
"""

from __future__ import annotations

from pathlib import Path

# -- a run folder
RUN_FILE = "run.json"
RUN_FORMAT = 2  # 1: the shapes before run.json (`umtune upgrade` turns them into this one)
# run.json's "trainer": `umtune train` in one process, on Ray Train, or a sweep's trial
PLAIN_TRAINER, RAY_TRAINER, TRIAL_TRAINER = "plain", "ray_train", "tune_trial"
TRAINERS = (PLAIN_TRAINER, RAY_TRAINER, TRIAL_TRAINER)
RUN_CONFIG_FILE = "config.json"
HISTORY_FILE = "metrics.jsonl"  # in the run folder, and in each checkpoint (history up to it)
CHECKPOINTS_DIR = "checkpoints"
CHECKPOINT_PREFIX = "epoch_"
STATE_FILE = "state.pt"  # in every checkpoint folder: weights, optimiser, config, step
SNAPSHOT_FILE = "checkpoint_manager_snapshot.json"  # Ray Train's, in its run folder
DIVERGED_FILE = "diverged.txt"
EVALUATION_DIR = "evaluation"
EVALUATION_METRICS_FILE = "metrics.json"
EVALUATION_AUDIO_DIR = "audio"
TUNE_CHECKPOINT_PREFIX = "checkpoint_"  # Tune's name for a one-worker trial's checkpoints


def checkpoint_name(epoch: int) -> str:
    return f"{CHECKPOINT_PREFIX}{epoch:06d}"


def checkpoint_epoch(name: str) -> int | None:
    """The epoch of a checkpoint folder's name; None for another name."""
    number = name.removeprefix(CHECKPOINT_PREFIX)
    return int(number) if name.startswith(CHECKPOINT_PREFIX) and number.isdigit() else None


def kept_checkpoints(run_dir: Path) -> dict[int, Path]:
    """A local run folder's complete checkpoints by epoch (checkpoints/epoch_NNNNNN/)."""
    folder = Path(run_dir) / CHECKPOINTS_DIR
    return {epoch: c for c in (folder.iterdir() if folder.is_dir() else ())
            if (epoch := checkpoint_epoch(c.name)) is not None and (c / STATE_FILE).is_file()}


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
