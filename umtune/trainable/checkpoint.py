"""Checkpoints on disk: atomic save, `weights_only` load, and the run directory of a plain run.

A checkpoint is a directory holding `state.pt`: model and optimizer states, the step counters
and the run config as a plain dict (`RunConfig.to_dict`), so it loads with
`torch.load(weights_only=True)` and needs no pickled classes. Directories are written under a
temporary name and renamed, so a reader never sees half a checkpoint.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from umtune.config import RunConfig

STATE_FILE = "state.pt"


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


def save_checkpoint(state: TrainingState, directory: Path) -> Path:
    """Write `state` as a checkpoint directory at `directory` (replacing it), atomically."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    torch.save({
        "config": state.config.to_dict(),
        "model": state.model,
        "autoencoder_optimizer": state.autoencoder_optimizer,
        "confusion_optimizer": state.confusion_optimizer,
        "step": state.step,
        "epoch": state.epoch,
        "elapsed_seconds": state.elapsed_seconds,
    }, tmp / STATE_FILE)
    _replace_dir(tmp, directory)
    return directory


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> TrainingState:
    """Read a checkpoint directory (or its state.pt) written by `save_checkpoint`."""
    path = Path(path)
    file = path / STATE_FILE if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"checkpoint {path}: no {STATE_FILE} found (expected a "
                                "directory written by umtune train)")
    try:
        raw = torch.load(file, map_location=map_location, weights_only=True)
        return TrainingState(config=RunConfig.from_dict(raw["config"]), model=raw["model"],
                             autoencoder_optimizer=raw["autoencoder_optimizer"],
                             confusion_optimizer=raw["confusion_optimizer"], step=raw["step"],
                             epoch=raw["epoch"], elapsed_seconds=raw["elapsed_seconds"])
    except (RuntimeError, KeyError, TypeError, EOFError, pickle.UnpicklingError) as e:
        raise ValueError(f"checkpoint {file}: not a readable umtune checkpoint ({e})") from e


def _replace_dir(src: Path, dst: Path) -> None:
    """Move directory src to dst, replacing dst; dst is never missing and never partial."""
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)


class LocalRun:
    """The run directory of a plain (non-Ray) run: `checkpoint/` and `metrics.jsonl`.

    Used as the loop's `report` callback: it keeps the newest checkpoint and appends one JSON
    line of metrics per epoch.
    """

    def __init__(self, run_dir: Path, echo: bool = True):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.echo = echo

    @property
    def checkpoint(self) -> Path:
        return self.run_dir / "checkpoint"

    @property
    def metrics_file(self) -> Path:
        return self.run_dir / "metrics.jsonl"

    def __call__(self, metrics: dict, checkpoint: Path | None) -> None:
        if checkpoint is not None:
            tmp = Path(tempfile.mkdtemp(prefix=".checkpoint.", dir=self.run_dir))
            shutil.copytree(checkpoint, tmp, dirs_exist_ok=True)
            _replace_dir(tmp, self.checkpoint)
        with open(self.metrics_file, "a") as f:
            f.write(json.dumps(metrics) + "\n")
        if self.echo:
            print(format_metrics(metrics), flush=True)

    def history(self) -> list[dict]:
        if not self.metrics_file.exists():
            return []
        return [json.loads(line) for line in self.metrics_file.read_text().splitlines() if line]


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
