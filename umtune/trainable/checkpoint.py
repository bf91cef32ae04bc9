"""Checkpoints on disk: atomic save, `weights_only` load, and the run directory of a plain run.

A checkpoint is a directory holding one file, `state.pt`: model and optimizer states, the step
counters and the run config as a plain dict (`RunConfig.to_dict`), so it loads with
`torch.load(weights_only=True)` and needs no pickled classes, and a file whose weights do not fit
its own config is refused before any model is built. The file is written under a temporary name
beside it and renamed over the old one, so the directory is always there and a reader finds the
old checkpoint or the new one, never none and never half of one. Files and folders get the
permissions the umask allows (with the usual 022, colleagues on shared storage can read them).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from umtune.config import RunConfig
from umtune.layout import (
    HISTORY_FILE,
    MILESTONES_DIR,
    RUN_CHECKPOINT_DIR,
    RUN_CONFIG_FILE,
    STATE_FILE,
    milestone_name,
)
from umtune.storage import Locked, exclusive_lock, refuse_output_in, staged, write_json_atomic


@dataclass(frozen=True)
class TrainingState:
    """Everything needed to continue a run exactly (all other randomness derives from step)."""

    config: RunConfig
    model: dict
    autoencoder_optimizer: dict
    confusion_optimizer: dict
    step: int
    epoch: int
    elapsed_seconds: float
    # The moving average of the weights (`train.ema_decay`; an AveragedModel's state), or None.
    averaged: dict | None = None

    def generator_weights(self) -> dict:
        """The network's weights that generation uses: the moving average where one is kept."""
        if self.averaged is None:
            return self.model
        return {k.removeprefix("module."): v for k, v in self.averaged.items()
                if k.startswith("module.")} if isinstance(self.averaged, dict) else {}


def save_checkpoint(state: TrainingState, directory: Path) -> Path:
    """Write `state` as the checkpoint directory `directory`, replacing the checkpoint there
    with one rename of its state.pt."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _write_torch({
        "config": state.config.to_dict(),
        "model": state.model,
        "autoencoder_optimizer": state.autoencoder_optimizer,
        "confusion_optimizer": state.confusion_optimizer,
        "step": state.step,
        "epoch": state.epoch,
        "elapsed_seconds": state.elapsed_seconds,
        **({} if state.averaged is None else {"averaged": state.averaged}),
    }, directory / STATE_FILE)
    return directory


def _write_torch(obj, file: Path) -> None:
    """`torch.save` to `file` with one rename, serialised in memory first so that a failed
    write (a full disk) is an OSError naming `file`."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    try:
        with staged(file) as tmp:
            tmp.write_bytes(buffer.getbuffer())
    except OSError as e:
        raise OSError(e.errno, f"{file}: cannot write the checkpoint ({e.strerror or e})") from e


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> TrainingState:
    """Read a checkpoint directory (or its state.pt) written by `save_checkpoint`."""
    path = Path(path)
    file = path / STATE_FILE if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"checkpoint {path}: no {STATE_FILE} found (expected a "
                                "directory written by umtune train)")
    try:
        raw = torch.load(file, map_location=map_location, weights_only=True)
        state = TrainingState(config=RunConfig.from_dict(raw["config"]), model=raw["model"],
                              autoencoder_optimizer=raw["autoencoder_optimizer"],
                              confusion_optimizer=raw["confusion_optimizer"], step=raw["step"],
                              epoch=raw["epoch"], elapsed_seconds=raw["elapsed_seconds"],
                              averaged=raw.get("averaged"))
    except (RuntimeError, KeyError, TypeError, EOFError, pickle.UnpicklingError) as e:
        raise ValueError(f"checkpoint {file}: not a readable umtune checkpoint ({e})") from e
    _check_weights(state.config, (state.model, state.generator_weights()), file)
    return state


def load_model(path: Path, map_location: str | torch.device = "cpu"):
    """The network of a checkpoint (or of a model `export_model` wrote) as generation uses it
    (its moving average of the weights where one is kept), on `map_location`, in eval mode,
    and its config."""
    from umtune.trainable.model import UniversalTranslator

    path = Path(path)
    if is_export(path):
        config, weights = _read_export(path, map_location)
    else:
        state = load_checkpoint(path, map_location)
        config, weights = state.config, state.generator_weights()
    model = UniversalTranslator(config.model)
    model.load_state_dict(weights)
    return model.to(map_location).eval(), config


EXPORT_WEIGHTS = "model.pt"  # an exported model: these weights and config.json beside them


def is_export(path: str | Path) -> bool:
    return (Path(path) / EXPORT_WEIGHTS).is_file()


def export_model(checkpoint: Path, out: Path) -> Path:
    """Write the weights generation uses and the config, nothing else (no optimizer state, no
    history), as OUT/model.pt (a plain state_dict: `torch.load(weights_only=True)` and
    `UniversalTranslator(config.model)` read it) and OUT/config.json; returns OUT."""
    checkpoint, out = Path(checkpoint), Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"export folder {out} exists and is not empty; expected a new "
                              "or empty folder")
    refuse_output_in(out, {"the checkpoint": checkpoint})
    state = load_checkpoint(checkpoint)
    out.mkdir(parents=True, exist_ok=True)
    _write_torch(state.generator_weights(), out / EXPORT_WEIGHTS)
    write_json_atomic(out / RUN_CONFIG_FILE, state.config.to_dict())
    return out


def _read_export(path: Path, map_location) -> tuple[RunConfig, dict]:
    file = path / EXPORT_WEIGHTS
    try:
        config = RunConfig.from_dict(json.loads((path / RUN_CONFIG_FILE).read_text()))
        weights = torch.load(file, map_location=map_location, weights_only=True)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError,
            pickle.UnpicklingError) as e:
        raise ValueError(f"exported model {path}: not readable ({e}); expected the "
                         f"{EXPORT_WEIGHTS} and {RUN_CONFIG_FILE} `umtune export` writes") from e
    _check_weights(config, (weights,), file)
    return config, weights


def _check_weights(config: RunConfig, weight_sets: tuple, file: Path) -> None:
    """Refuse weights that do not fit the checkpoint's own config (names and shapes), which
    `load_state_dict` would otherwise report as a traceback far from the file."""
    from umtune.trainable.model import UniversalTranslator

    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        expected = {k: tuple(v.shape) for k, v in
                    UniversalTranslator(config.model).state_dict().items()}
    problems = []
    for weights in weight_sets:
        weights = weights if isinstance(weights, dict) else {}
        found = {k: tuple(v.shape) for k, v in weights.items() if isinstance(v, torch.Tensor)}
        problems += [f"missing {k}" for k in expected if k not in found]
        problems += [f"unexpected {k}" for k in weights if k not in expected]
        problems += [f"{k} is {list(found[k])}, the config makes it {list(shape)}"
                     for k, shape in expected.items() if k in found and found[k] != shape]
    if problems:
        more = f" and {len(problems) - 2} more" if len(problems) > 2 else ""
        raise ValueError(f"checkpoint {file}: its weights do not match its config "
                         f"({'; '.join(problems[:2])}{more}); expected the weights of the "
                         "network its config describes, as umtune train writes them")


class LocalRun:
    """The run directory of a plain (non-Ray) run: `config.json`, `checkpoint/`, `metrics.jsonl`.

    Used as the loop's `report` callback: it keeps the newest checkpoint and appends one JSON
    line of metrics per epoch. Nothing is written before the first report, so a run that fails
    before its first epoch leaves no directory behind.

    Args:
        run_dir: the run directory.
        echo: print each epoch's metrics.
        config: written to config.json with the first report (and replacing an older one).
        keep_every_minutes: also keep the first checkpoint after every so many minutes of
            training in `checkpoints/` (0: only the newest), e.g. to evaluate a run over time.
    """

    def __init__(self, run_dir: Path, echo: bool = True, config: RunConfig | None = None,
                 keep_every_minutes: float = 0.0):
        self.run_dir = Path(run_dir)
        self.echo = echo
        self.config = config
        self.keep_every_minutes = keep_every_minutes

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
            if new and self.exists():
                raise FileExistsError(f"{self.run_dir} already holds a run "
                                      f"({RUN_CHECKPOINT_DIR}/, {HISTORY_FILE}): continue it "
                                      f"with --resume {self.run_dir}, or choose another --out")
            if new:
                self.clear_leftovers()
            yield
        finally:
            os.close(fd)

    def exists(self) -> bool:
        """Whether the folder holds a run: a complete checkpoint (what a run that died before
        its first one was saved left, a disk that filled or a kill, is no run)."""
        return (self.checkpoint / STATE_FILE).is_file()

    def check_resumable(self, adopt: bool = False) -> None:
        """Refuse to resume a folder without a complete checkpoint, a config.json edited since
        (resume reads the checkpoint's config), or, unless `adopt`, a checkpoint that does not
        continue this folder's history (one copied in from another run)."""
        if not self.exists():
            raise FileNotFoundError(f"{self.run_dir} holds no complete checkpoint (no run, or "
                                    "one stopped before its first was saved): start it anew "
                                    f"with --out {self.run_dir}")
        state = load_checkpoint(self.checkpoint)
        config_file = self.run_dir / RUN_CONFIG_FILE
        if config_file.is_file():
            try:
                written = json.loads(config_file.read_text())
            except (ValueError, UnicodeDecodeError):
                written = None
            field = first_difference(written, state.config.to_dict())
            if field is not None:
                raise ValueError(f"{config_file} differs from its checkpoint's config at "
                                 f"{field}: a resumed run continues with the checkpoint's; "
                                 "expected config.json as the run wrote it (change fields "
                                 "with --set)")
        history = self.history()
        if history and not adopt and not _continues(state, history[-1]):
            last = history[-1]
            raise ValueError(f"{self.checkpoint} does not continue {self.metrics_file} (its "
                             f"epoch {state.epoch}, step {state.step}; the history ends at "
                             f"epoch {last.get('epoch')}, step {last.get('step')}): it was "
                             "written by another run; expected this run's own checkpoint "
                             "(--adopt continues from it anyway)")

    def clear_leftovers(self) -> None:
        """Remove what a run that never saved a checkpoint left here (nothing else)."""
        for name in (RUN_CONFIG_FILE, HISTORY_FILE):
            (self.run_dir / name).unlink(missing_ok=True)
        for name in (RUN_CHECKPOINT_DIR, MILESTONES_DIR):
            shutil.rmtree(self.run_dir / name, ignore_errors=True)

    @property
    def checkpoint(self) -> Path:
        return self.run_dir / RUN_CHECKPOINT_DIR

    @property
    def metrics_file(self) -> Path:
        return self.run_dir / HISTORY_FILE

    def __call__(self, metrics: dict, checkpoint: Path | None) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if checkpoint is not None:  # first: a folder without a complete checkpoint is no run
            self._keep(Path(checkpoint), self.checkpoint)
            if self.keep_every_minutes and "elapsed_s" in metrics:
                self._keep_milestone(Path(checkpoint), metrics["elapsed_s"])
        if self.config is not None:
            write_json_atomic(self.run_dir / RUN_CONFIG_FILE, self.config.to_dict())
            self.config = None
        with open(self.metrics_file, "a") as f:
            f.write(json.dumps(metrics) + "\n")
        if self.echo:
            print(format_metrics(metrics), flush=True)

    def _keep(self, checkpoint: Path, where: Path) -> None:
        """Copy a reported checkpoint's files over the checkpoint at `where`, each with one
        rename."""
        where.mkdir(parents=True, exist_ok=True)
        names = {f.name for f in checkpoint.iterdir() if f.is_file()}
        for name in sorted(names, key=lambda n: n == STATE_FILE):  # state.pt last
            try:
                with staged(where / name) as tmp, open(checkpoint / name, "rb") as src, \
                        open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            except OSError as e:
                raise OSError(e.errno, f"{where / name}: cannot write the checkpoint "
                              f"({e.strerror or e}); the previous one, if any, is intact") from e
        for old in where.iterdir():
            if old.is_file() and old.name not in names and not old.name.startswith("."):
                old.unlink()

    def _keep_milestone(self, checkpoint: Path, elapsed_seconds: float) -> None:
        """Keep `checkpoint` in checkpoints/ if it is the first past a `keep_every_minutes`
        mark (the previous epoch's report, in the history, was before it)."""
        history = self.history()
        before = history[-1].get("elapsed_s", 0.0) if history else 0.0
        every = self.keep_every_minutes * 60
        if elapsed_seconds // every > before // every:
            mark = elapsed_seconds // every * self.keep_every_minutes
            self._keep(checkpoint, self.milestones / milestone_name(mark))

    @property
    def milestones(self) -> Path:
        return self.run_dir / MILESTONES_DIR

    def history(self) -> list[dict]:
        if not self.metrics_file.exists():
            return []
        return [json.loads(line) for line in self.metrics_file.read_text().splitlines() if line]


def _continues(state: TrainingState, last: dict) -> bool:
    """Whether `state` is the checkpoint of the history's last report, or of the epoch after it
    (a run stopped between writing its checkpoint and its report)."""
    if (last.get("epoch"), last.get("step")) == (state.epoch, state.step):
        return abs(last.get("elapsed_s", -1.0) - state.elapsed_seconds) < 1e-3
    return state.epoch == last.get("epoch", -2) + 1 and state.step > last.get("step", state.step)


def first_difference(a, b, where: str = "") -> str | None:
    """The dotted path of the first value where two nested dicts differ (None: equal)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in dict.fromkeys([*a, *b]):
            found = first_difference(a.get(key), b.get(key), f"{where}.{key}" if where else key)
            if found is not None:
                return found
        return None
    same = a == b or (isinstance(a, list | tuple) and isinstance(b, list | tuple)
                      and list(a) == list(b))
    return None if same else (f"{where} ({a!r} against {b!r})" if where else repr(a))


def format_metrics(m: dict) -> str:
    """One line per epoch: the losses and the leading indicators that are present."""
    optional = [(f"pitch probe {m['pitch_probe_acc']:.2f}" if "pitch_probe_acc" in m else ""),
                (f"note gain {m['note_latent_gain']:.3f} (onset {m['note_latent_gain_onset']:.3f})"
                 if "note_latent_gain" in m else ""),
                (f"recon chroma {m['recon_chroma']:.2f}" if "recon_chroma" in m else "")]
    return "  ".join([
        f"epoch {m['epoch']:4d}  step {m['step']:6d}  train CE {m['train_ce']:.4f}  "
        f"held-out CE {m['heldout_ce']:.4f}  latent gain {m['heldout_latent_gain']:.3f} "
        f"(cold {m['heldout_latent_gain_cold']:.3f})", *filter(None, optional),
        f"confusion acc {m['confusion_acc']:.2f}  lr {m['lr']:.2e}  "
        f"{m['samples_per_s']:.0f} samples/s"])
