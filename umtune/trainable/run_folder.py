"""A run's folder: one shape however the run trains (the shape and its names: umtune/layout.py).

`Reporter` is the report every way of training gives the loop (`loop.train`'s `report`): it
adds the run's facts to each epoch's metrics, writes the history into the checkpoint, hands
the checkpoint to the run's `Keep`, then writes run.json, config.json and metrics.jsonl, so a
folder never names a checkpoint it lacks. What differs between the ways of training is only
the `Keep`, a few lines each: a plain run copies the checkpoint into checkpoints/
(`FolderKeep`), a Ray Train worker hands it to Train (ray_train.py), a Tune trial copies it and
hands it to Tune (sweep/trial.py). Ray is never imported here.

`upgrade` turns a folder of the earlier shapes into this one (`umtune upgrade RUN`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from umtune import storage
from umtune.config import RunConfig
from umtune.layout import (
    CHECKPOINTS_DIR,
    EVALUATION_DIR,
    HISTORY_FILE,
    PLAIN_TRAINER,
    RAY_TRAINER,
    RUN_CONFIG_FILE,
    RUN_FILE,
    RUN_FORMAT,
    SNAPSHOT_FILE,
    STATE_FILE,
    TRAINERS,
    checkpoint_epoch,
    checkpoint_name,
    kept_checkpoints,
)
from umtune.storage import Locked, exclusive_lock
from umtune.trainable.checkpoint import (
    checkpoint_config,
    first_difference,
    format_metrics,
    load_checkpoint,
)

# What a run does with one epoch's report once the run folder's files are written: the metrics
# and, on rank 0, the checkpoint folder (deleted after the call: copy what is kept).
Keep = Callable[[dict, Path | None], None]
# Called on rank 0 with the final checkpoint's folder and the run's config before the last
# report; what it returns joins that report (a sweep's trial scores translations here).
FinalMetrics = Callable[[Path, RunConfig], dict]

OLD_CHECKPOINT_DIR = "checkpoint"  # format 1: a plain run's newest checkpoint
OLD_MILESTONE_PREFIX = "minute_"  # format 1: a plain run's checkpoints/minute_MMMM_MMM/


def read_history(folder: str | Path) -> list[dict]:
    """The metrics.jsonl of a run folder or a checkpoint, one dict an epoch; [] without one."""
    text = storage.read_text(storage.join(str(folder), HISTORY_FILE))
    return [json.loads(line) for line in (text or "").splitlines() if line]


def _history_text(history: list[dict]) -> str:
    return "".join(json.dumps(m) + "\n" for m in history)


class RunFolder:
    """The folder of one run, at a local path or a storage URI (a Ray Train run's)."""

    def __init__(self, location: str | Path):
        self.location = str(location).rstrip("/") or "/"
        self.local = storage.local_path(self.location)

    def __str__(self) -> str:
        return self.location

    def file(self, *parts: str) -> str:
        return storage.join(self.location, *parts)

    @property
    def checkpoints(self) -> str:
        return self.file(CHECKPOINTS_DIR)

    def checkpoint_at(self, epoch: int) -> str:
        return self.file(CHECKPOINTS_DIR, checkpoint_name(epoch))

    def trainer(self) -> str | None:
        """Which trainer writes this folder (run.json's); None where it holds no run. A folder
        of an earlier shape, or of a format this umtune does not know, is refused."""
        text = storage.read_text(self.file(RUN_FILE))
        if text is None:
            old = self.old_shape()
            if old:
                raise ValueError(f"{self}: a run folder of umtune's earlier shape ({old}); "
                                 f"expected {RUN_FILE}: run `umtune upgrade {self}` once")
            # Train registered the first checkpoint and the run stopped before writing run.json
            return RAY_TRAINER if storage.exists(self.file(SNAPSHOT_FILE)) else None
        try:
            found = json.loads(text)
            fmt, trainer = found["format"], found["trainer"]
        except (ValueError, TypeError, KeyError):
            raise ValueError(f"{self.file(RUN_FILE)}: not a readable run description; expected "
                             "the JSON umtune writes ({\"format\": ..., \"trainer\": ...})"
                             ) from None
        if fmt != RUN_FORMAT or trainer not in TRAINERS:
            raise ValueError(f"{self.file(RUN_FILE)}: format {fmt!r}, trainer {trainer!r}; "
                             f"expected format {RUN_FORMAT} and one of {', '.join(TRAINERS)} "
                             "(a newer umtune's run?)")
        return trainer

    def old_shape(self) -> str:
        """What marks the folder as one of the earlier shapes ('' for none)."""
        names = set(storage.list_names(self.location))
        if OLD_CHECKPOINT_DIR in names:
            return f"{OLD_CHECKPOINT_DIR}/"
        if SNAPSHOT_FILE in names and any(checkpoint_epoch(n) is not None for n in names):
            return f"{SNAPSHOT_FILE} beside epoch_NNNNNN/"
        if any(n.startswith(OLD_MILESTONE_PREFIX)
               for n in storage.list_names(self.checkpoints)):
            return f"{CHECKPOINTS_DIR}/{OLD_MILESTONE_PREFIX}*"
        return ""

    def history(self) -> list[dict]:
        return read_history(self.location)

    @property
    def checkpoint(self) -> Path:
        """The newest complete checkpoint of a run on this machine's file system."""
        kept = kept_checkpoints(self.local) if self.local is not None else {}
        if not kept:
            raise FileNotFoundError(f"{self}: no complete checkpoint in {CHECKPOINTS_DIR}/ "
                                    "(no run, or one stopped before its first was saved)")
        return kept[max(kept)]

    def write(self, history: list[dict], *, trainer: str | None = None,
              config: RunConfig | None = None) -> None:
        """The whole history, then config.json and run.json where given (a process's first
        report, an upgrade), each file whole; run.json last: a folder without it holds no run
        yet (or, for `upgrade`, is upgraded again)."""
        storage.write_text(self.file(HISTORY_FILE), _history_text(history))
        if config is not None:
            storage.write_text(self.file(RUN_CONFIG_FILE),
                               json.dumps(config.to_dict(), indent=1) + "\n")
        if trainer is not None:
            storage.write_text(self.file(RUN_FILE), json.dumps(
                {"format": RUN_FORMAT, "trainer": trainer}, indent=1) + "\n")


class Reporter:
    """`loop.train`'s report for a run in `run` (see the module's docstring).

    Args:
        run: the run folder (rank 0 writes it).
        keep: what the run does with each report after the folder's files (`Keep`).
        trainer: run.json's "trainer".
        cfg: written to config.json with the first report (run.json too); its budget says
            which report is the last (for `final_metrics`).
        history: the reports before this process's first (a resumed checkpoint's history).
        facts: joins every report (the run's resources, a trial's name and schedule).
        final_metrics: joins the last report (rank 0 calls it).
        echo: print each epoch's metrics.
    """

    def __init__(self, run: RunFolder, keep: Keep, *, trainer: str, cfg: RunConfig | None,
                 history: list[dict], facts: dict | None = None,
                 final_metrics: FinalMetrics | None = None, echo: bool = True):
        self.run, self.keep, self.trainer, self.cfg = run, keep, trainer, cfg
        self.history, self.facts = list(history), facts or {}
        self.final_metrics, self.echo = final_metrics, echo
        self.described = False  # run.json and config.json, once a process

    def __call__(self, metrics: dict, checkpoint: Path | None) -> None:
        metrics = {**metrics, **self.facts}
        if checkpoint is None:  # a rank other than 0: nothing of the folder to write
            self.keep(metrics, None)
            return
        if self.final_metrics and self.cfg.train.finished(metrics["epoch"],
                                                           metrics["elapsed_s"]):
            metrics.update(self.final_metrics(checkpoint, self.cfg))
        self.history.append(metrics)
        (Path(checkpoint) / HISTORY_FILE).write_text(_history_text(self.history))
        self.keep(metrics, checkpoint)  # first: the folder never names a checkpoint it lacks
        if self.described:
            self.run.write(self.history)
        else:
            self.run.write(self.history, trainer=self.trainer, config=self.cfg)
            self.described = True
        if self.echo:
            print(format_metrics(metrics), flush=True)


@dataclass(frozen=True)
class FolderKeep:
    """Copies each epoch's checkpoint into the run's checkpoints/ and removes the ones no longer
    kept: all but the `newest` ones, except, with `every_minutes`, the first checkpoint after
    every so many minutes of training (e.g. to evaluate a run over time), and the `protected`
    epochs (a resumed plain run's: whatever earlier processes kept stays)."""

    run: RunFolder
    newest: int = 1
    every_minutes: float = 0.0
    protected: frozenset[int] = frozenset()

    def __call__(self, metrics: dict, checkpoint: Path | None) -> None:
        if checkpoint is None:
            return
        target = self.run.checkpoint_at(metrics["epoch"])
        try:
            storage.copy_dir(Path(checkpoint), target)
        except OSError as e:
            raise OSError(e.errno, f"{target}: cannot write the checkpoint ({e.strerror or e}); "
                          "the previous one, if any, is intact") from e
        kept = self.kept(read_history(checkpoint))
        for name in storage.list_names(self.run.checkpoints):
            epoch = checkpoint_epoch(name)
            if epoch is not None and epoch not in kept and epoch not in self.protected:
                storage.delete_dir(self.run.checkpoint_at(epoch))

    def kept(self, history: list[dict]) -> set[int]:
        """The epochs whose checkpoints stay, by the history up to the newest."""
        epochs = [m["epoch"] for m in history]
        kept = set(epochs[-self.newest:])
        if self.every_minutes:
            every, before = self.every_minutes * 60, 0.0
            for m in history:
                if m.get("elapsed_s", 0.0) // every > before // every:
                    kept.add(m["epoch"])
                before = m.get("elapsed_s", before)
        return kept


class LocalRun(RunFolder):
    """The folder of a plain run (`umtune train` in one process), and the loop's report for it
    (a `Reporter` with a `FolderKeep`). Nothing is written before the first report, so a run
    that fails before its first epoch leaves no folder behind.

    Args:
        run_dir: the run folder.
        echo: print each epoch's metrics.
        config: written to config.json with the first report (replacing an older one).
        keep_every_minutes: see `FolderKeep.every_minutes`.
    """

    def __init__(self, run_dir: Path, echo: bool = True, config: RunConfig | None = None,
                 keep_every_minutes: float = 0.0):
        super().__init__(run_dir)
        self.run_dir = Path(run_dir)
        self.echo, self.config, self.keep_every_minutes = echo, config, keep_every_minutes
        self.reporter: Reporter | None = None

    def __call__(self, metrics: dict, checkpoint: Path | None) -> None:
        if self.reporter is None:  # a resumed run goes on from its newest checkpoint
            earlier = kept_checkpoints(self.run_dir)
            keep = FolderKeep(self, every_minutes=self.keep_every_minutes,
                              protected=frozenset(earlier))
            self.reporter = Reporter(self, keep, trainer=PLAIN_TRAINER, cfg=self.config,
                                     history=read_history(earlier[max(earlier)]) if earlier
                                     else [], echo=self.echo)
        self.reporter(metrics, checkpoint)

    @contextlib.contextmanager
    def claim(self, new: bool) -> Iterator[None]:
        """Hold this run's lock (`.NAME.lock` beside the folder) for the block: a second
        process training into the same folder is refused, naming it; a killed holder's lock
        is free at once. With `new`, a folder that already holds a run is refused too."""
        lock = self.run_dir.with_name(f".{self.run_dir.name}.lock")
        fd = None
        try:
            self.run_dir.parent.mkdir(parents=True, exist_ok=True)
            fd = exclusive_lock(lock)
            with tempfile.TemporaryFile(dir=self.run_dir if self.run_dir.is_dir() else
                                        self.run_dir.parent):
                pass  # found now, not after the first epoch
        except Locked:
            raise FileExistsError(f"{self.run_dir}: another umtune process is training this run "
                                  f"(it holds {lock}); expected one at a time") from None
        except OSError as e:
            if fd is not None:
                os.close(fd)
            raise OSError(e.errno, f"run folder {self.run_dir}: cannot write there "
                          f"({e.strerror or e}); expected a folder this user can write") from None
        try:
            if new and (self.exists() or self.old_shape()):
                raise FileExistsError(f"{self.run_dir} already holds a run "
                                      f"({CHECKPOINTS_DIR}/, {HISTORY_FILE}): continue it "
                                      f"with --resume {self.run_dir}, or choose another --out")
            if new:
                self.clear_leftovers()
            yield
        finally:
            os.close(fd)

    def exists(self) -> bool:
        """Whether the folder holds a run: a complete checkpoint (what a run that died before
        its first one was saved left, a disk that filled or a kill, is no run)."""
        return bool(kept_checkpoints(self.run_dir))

    def resumed_checkpoint_config(self, adopt: bool = False) -> RunConfig:
        """The config of the checkpoint a resume continues from. Refuses a folder without a
        complete checkpoint, a config.json edited since (resume reads the checkpoint's config),
        or, unless `adopt`, a checkpoint that does not continue this folder's history (one
        copied in from another run)."""
        self.trainer()  # refuses an earlier shape, naming the upgrade
        if not self.exists():
            raise FileNotFoundError(f"{self.run_dir} holds no complete checkpoint (no run, or "
                                    "one stopped before its first was saved): start it anew "
                                    f"with --out {self.run_dir}")
        checkpoint = self.checkpoint
        state = load_checkpoint(checkpoint)
        config_file = self.run_dir / RUN_CONFIG_FILE
        if config_file.is_file():
            written = None
            try:
                written = json.loads(config_file.read_text())
                # As the checkpoint's is read: a field added to umtune since takes its default.
                written = RunConfig.from_dict(written).to_dict()
            except (ValueError, UnicodeDecodeError, KeyError, TypeError):
                pass  # compared as it stands: the first field that differs is named
            field = first_difference(written, state.config.to_dict())
            if field is not None:
                raise ValueError(f"{config_file} differs from its checkpoint's config at "
                                 f"{field}: a resumed run continues with the checkpoint's; "
                                 "expected config.json as the run wrote it (change fields "
                                 "with --set)")
        history = self.history()
        if history and not adopt and not _continues(state, history[-1]):
            last = history[-1]
            raise ValueError(f"{checkpoint} does not continue {self.file(HISTORY_FILE)} (its "
                             f"epoch {state.epoch}, step {state.step}; the history ends at "
                             f"epoch {last.get('epoch')}, step {last.get('step')}): it was "
                             "written by another run; expected this run's own checkpoint "
                             "(--adopt continues from it anyway)")
        return state.config

    def clear_leftovers(self) -> None:
        """Remove what a run that never saved a checkpoint left here (nothing else)."""
        for name in (RUN_FILE, RUN_CONFIG_FILE, HISTORY_FILE):
            (self.run_dir / name).unlink(missing_ok=True)
        shutil.rmtree(self.run_dir / CHECKPOINTS_DIR, ignore_errors=True)


def _continues(state, last: dict) -> bool:
    """Whether `state` is the checkpoint of the history's last report, or of the epoch after it
    (a run stopped between writing its checkpoint and its report)."""
    if (last.get("epoch"), last.get("step")) == (state.epoch, state.step):
        return abs(last.get("elapsed_s", -1.0) - state.elapsed_seconds) < 1e-3
    return state.epoch == last.get("epoch", -2) + 1 and state.step > last.get("step", state.step)


def upgrade(run_dir: Path) -> str:
    """Turn a local run folder of the earlier shapes into this one, in place; returns what was
    done. A plain run's checkpoint/ and checkpoints/minute_*/ become checkpoints/epoch_N/, each
    given the history up to it, and their evaluations move to evaluation/epoch_N/; a Ray Train
    run's epoch_N/ move into checkpoints/ (Ray's snapshot renamed to match) and its history
    and config join the folder. run.json is written last: a folder stopped half-way is
    upgraded again."""
    run = RunFolder(run_dir)
    if run.local is None:
        raise ValueError(f"{run_dir}: expected a run folder on this machine's file system (copy "
                         "a run in cloud storage here to upgrade it)")
    run_dir = run.local
    if (run_dir / RUN_FILE).is_file():
        return f"{run_dir}: already of format {RUN_FORMAT}, nothing to do"
    if (run_dir / SNAPSHOT_FILE).is_file():
        return _upgrade_ray_train(run_dir)
    old = [run_dir / OLD_CHECKPOINT_DIR, *sorted((run_dir / CHECKPOINTS_DIR).glob(
        f"{OLD_MILESTONE_PREFIX}*"))]
    old = [c for c in old if (c / STATE_FILE).is_file()]
    if not old:
        raise ValueError(f"{run_dir}: no run of an earlier shape here (no {OLD_CHECKPOINT_DIR}/"
                         f"{STATE_FILE}, no {SNAPSHOT_FILE}); expected a folder `umtune train` "
                         "wrote")
    history = read_history(run_dir)
    epochs = {c: load_checkpoint(c).epoch for c in old}
    for checkpoint, epoch in epochs.items():
        new = run_dir / CHECKPOINTS_DIR / checkpoint_name(epoch)
        if not (new / STATE_FILE).is_file():
            with storage.staged_dir(new) as staging:
                os.link(checkpoint / STATE_FILE, staging / STATE_FILE)  # no second copy
                (staging / HISTORY_FILE).write_text(
                    _history_text([m for m in history if m.get("epoch", 0) <= epoch]))
        evaluation = checkpoint.parent / f"{EVALUATION_DIR}-{checkpoint.name}"
        if evaluation.is_dir():
            (run_dir / EVALUATION_DIR).mkdir(exist_ok=True)
            os.replace(evaluation, run_dir / EVALUATION_DIR / checkpoint_name(epoch))
    RunFolder(run_dir).write(history, trainer=PLAIN_TRAINER)
    for checkpoint in old:
        shutil.rmtree(checkpoint)
    return (f"{run_dir}: {len(old)} checkpoint(s) now in {CHECKPOINTS_DIR}/ ("
            f"{', '.join(checkpoint_name(e) for e in sorted(set(epochs.values())))})")


def _upgrade_ray_train(run_dir: Path) -> str:
    moved = sorted(p.name for p in run_dir.iterdir() if checkpoint_epoch(p.name) is not None)
    (run_dir / CHECKPOINTS_DIR).mkdir(exist_ok=True)
    for name in moved:
        os.replace(run_dir / name, run_dir / CHECKPOINTS_DIR / name)
    snapshot = json.loads((run_dir / SNAPSHOT_FILE).read_text())
    storage.write_text(str(run_dir / SNAPSHOT_FILE), json.dumps(_in_checkpoints(snapshot)))
    kept = kept_checkpoints(run_dir)
    newest = kept[max(kept)] if kept else None
    RunFolder(run_dir).write(read_history(newest) if newest else [], trainer=RAY_TRAINER,
                             config=checkpoint_config(newest) if newest else None)
    return f"{run_dir}: {len(moved)} checkpoint(s) moved into {CHECKPOINTS_DIR}/"


def _in_checkpoints(value, key: str = ""):
    """Ray Train's snapshot with its checkpoints' names (relative to the run) in checkpoints/."""
    if isinstance(value, dict):
        return {k: _in_checkpoints(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_in_checkpoints(v, key) for v in value]
    if isinstance(value, str) and "checkpoint_dir_name" in key and \
            checkpoint_epoch(value) is not None:
        return f"{CHECKPOINTS_DIR}/{value}"
    return value
