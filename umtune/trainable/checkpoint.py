"""Checkpoints on disk: atomic save, `weights_only` load, export.

A checkpoint is a directory holding one file, `state.pt`: model and optimizer states, the step
counters and the run config as a plain dict (`RunConfig.to_dict`), so it loads with
`torch.load(weights_only=True)` and needs no pickled classes, and a file whose weights do not fit
its own config is refused before any model is built. The file is written under a temporary name
beside it and renamed over the old one, so the directory is always there and a reader finds the
old checkpoint or the new one, never none and never half of one. Files and folders get the
permissions the umask allows (with the usual 022, colleagues on shared storage can read them).
"""

from __future__ import annotations

import io
import json
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch

from umtune.config import RunConfig
from umtune.layout import CHECKPOINTS_DIR, RUN_CONFIG_FILE, RUN_FILE, STATE_FILE, kept_checkpoints
from umtune.storage import refuse_output_in, staged, write_json_atomic


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


def checkpoint_of(path: Path) -> Path:
    """`path` itself, or for a run folder (its run.json) its newest checkpoint: commands that
    read a checkpoint take the run."""
    path = Path(path)
    if not (path / RUN_FILE).is_file():
        return path
    kept = kept_checkpoints(path)
    if not kept:
        raise FileNotFoundError(f"run {path}: no complete checkpoint in {CHECKPOINTS_DIR}/ yet; "
                                "expected a run that finished an epoch")
    return kept[max(kept)]


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> TrainingState:
    """Read a checkpoint directory (or its state.pt, or a run folder's newest checkpoint)
    written by `save_checkpoint`."""
    file = _state_file(path)
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


def _state_file(path: Path) -> Path:
    """The state file of a checkpoint directory, of a run folder's newest checkpoint, or `path`
    itself (a state file)."""
    path = checkpoint_of(Path(path))
    file = path / STATE_FILE if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"checkpoint {path}: no {STATE_FILE} found (expected a "
                                "directory written by umtune train)")
    return file


def checkpoint_config(path: Path) -> RunConfig:
    """The config of a checkpoint (or of an exported model) without reading its weights: the
    state file is memory-mapped, so only the config's bytes are read."""
    path = checkpoint_of(Path(path))
    if is_export(path):
        return _read_export(path)[0]
    file = _state_file(path)
    try:
        return RunConfig.from_dict(torch.load(file, mmap=True, weights_only=True)["config"])
    except (OSError, RuntimeError, KeyError, TypeError, ValueError, pickle.UnpicklingError) as e:
        raise ValueError(f"checkpoint {file}: not a readable umtune checkpoint ({e})") from e


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
    refuse_output_in(out, {"the checkpoint": checkpoint_of(checkpoint)})
    state = load_checkpoint(checkpoint)
    out.mkdir(parents=True, exist_ok=True)
    _write_torch(state.generator_weights(), out / EXPORT_WEIGHTS)
    write_json_atomic(out / RUN_CONFIG_FILE, state.config.to_dict())
    return out


def _read_export(path: Path, map_location=None) -> tuple[RunConfig, dict | None]:
    """An exported model's config and, given a `map_location`, its weights."""
    file = path / EXPORT_WEIGHTS
    try:
        config = RunConfig.from_dict(json.loads((path / RUN_CONFIG_FILE).read_text()))
        if map_location is None:
            return config, None
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
