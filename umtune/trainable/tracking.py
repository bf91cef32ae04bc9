"""Live tracking in the tools users already watch: TensorBoard, Weights & Biases, MLflow.

`Tracked(report, ...)` wraps a run's report (a plain run's, or rank 0's of a Ray Train run):
each epoch's numeric metrics go to every tracker at step = epoch, and with them a few seconds of
one held-out clip reconstructed by its own decoder and translated into the next domain,
generated from that epoch's checkpoint as `umtune translate` would. A resumed run is a new run
in W&B and MLflow; TensorBoard appends to the same folder. Sweeps log through Ray Tune's own
callbacks (`tune_callbacks`).

Where each writes: TensorBoard to RUN/tensorboard/; W&B to its project (WANDB_PROJECT, default
"umtune"; WANDB_MODE=offline keeps it on disk under RUN/wandb/); MLflow to its tracking URI
(MLFLOW_TRACKING_URI, default MLflow's own) in the experiment "umtune".
"""

from __future__ import annotations

import importlib.util
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from umtune.config import RunConfig

TRACKERS = ("tensorboard", "wandb", "mlflow")
PROJECT = "umtune"  # W&B project and MLflow experiment, unless the environment says otherwise
TENSORBOARD_DIR = "tensorboard"
CLIP_SECONDS = 2.0


@dataclass(frozen=True)
class Tracking:
    """What `train --log` asks for: the trackers, and seconds of audio per epoch (0: none)."""

    trackers: tuple[str, ...] = ()
    audio_seconds: float = CLIP_SECONDS

    def __bool__(self) -> bool:
        return bool(self.trackers)


NO_TRACKING = Tracking()


def parse_log(text: str | None) -> tuple[str, ...]:
    """`--log tensorboard,wandb,mlflow` (any subset) as a tuple; None or "" is none."""
    names = tuple(dict.fromkeys(n.strip() for n in (text or "").split(",") if n.strip()))
    unknown = [n for n in names if n not in TRACKERS]
    if unknown:
        raise ValueError(f"--log {text}: unknown tracker {unknown[0]!r}; expected some of "
                         f"{', '.join(TRACKERS)}, comma-separated")
    return names


def _scalars(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))
            and not isinstance(v, bool) and math.isfinite(v)}


def _flat(d: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = str(v)
    return out


class _TensorBoard:
    def __init__(self, run_dir: Path, cfg: RunConfig):
        from tensorboardX import SummaryWriter

        self.writer = SummaryWriter(str(run_dir / TENSORBOARD_DIR))
        self.writer.add_text("config", f"```\n{cfg.to_dict()}\n```", 0)

    def log(self, scalars: dict, clips: dict, sample_rate: int, step: int) -> None:
        for k, v in scalars.items():
            self.writer.add_scalar(k, v, step)
        for name, audio in clips.items():
            self.writer.add_audio(name, audio, step, sample_rate=sample_rate)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class _WandB:
    def __init__(self, run_dir: Path, cfg: RunConfig):
        import wandb

        self.wandb = wandb
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", PROJECT),
                              dir=str(run_dir), name=run_dir.name, config=cfg.to_dict(),
                              reinit="create_new")

    def log(self, scalars: dict, clips: dict, sample_rate: int, step: int) -> None:
        audio = {n: self.wandb.Audio(a, sample_rate=sample_rate) for n, a in clips.items()}
        self.run.log({**scalars, **audio}, step=step)

    def close(self) -> None:
        self.run.finish()


class _MLflow:
    def __init__(self, run_dir: Path, cfg: RunConfig):
        import mlflow

        self.mlflow = mlflow
        mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME", PROJECT))
        self.run = mlflow.start_run(run_name=run_dir.name)
        self.client = mlflow.MlflowClient()
        mlflow.log_params(_flat(cfg.to_dict()), run_id=self.run.info.run_id)

    def log(self, scalars: dict, clips: dict, sample_rate: int, step: int) -> None:
        run_id = self.run.info.run_id
        self.mlflow.log_metrics(scalars, step=step, run_id=run_id)
        with tempfile.TemporaryDirectory() as tmp:
            for name, audio in clips.items():
                file = Path(tmp) / f"{name.replace('/', '_')}_epoch{step:04d}.wav"
                sf.write(file, audio, sample_rate)
                self.client.log_artifact(run_id, str(file), artifact_path="audio")

    def close(self) -> None:
        self.mlflow.end_run()


OPENERS = {"tensorboard": _TensorBoard, "wandb": _WandB, "mlflow": _MLflow}


MODULES = {"tensorboard": "tensorboardX", "wandb": "wandb", "mlflow": "mlflow"}


class Tracked:
    """A report that also logs each epoch to the named trackers (rank 0 of a plain run). The
    trackers open at the first report, once the run folder holds a checkpoint (a run that
    fails before its first epoch leaves no folder); a missing package is refused at once.

    Args:
        report: the run's own report (written first: tracking never loses a checkpoint).
        tracking: the trackers and the seconds of audio per epoch.
        run_dir: the run folder (names the run; TensorBoard and offline W&B write in it).
        cfg: the run's config (logged as the run's parameters).
    """

    def __init__(self, report: Callable, tracking: Tracking, run_dir: Path, cfg: RunConfig):
        names = tracking.trackers
        missing = [n for n in names if importlib.util.find_spec(MODULES[n]) is None]
        if missing:
            raise ValueError(f"--log {missing[0]}: {MODULES[missing[0]]} is not installed; "
                             "expected `pip install umtune[tracking]` (tensorboard, wandb, "
                             "mlflow)")
        self.report, self.names, self.run_dir, self.cfg = report, names, run_dir, cfg
        self.audio_seconds = tracking.audio_seconds
        self.trackers: list | None = None

    def __call__(self, metrics: dict, checkpoint: Path | None) -> None:
        self.report(metrics, checkpoint)
        if self.trackers is None:
            self.trackers = []
            for name in self.names:
                self.trackers.append(OPENERS[name](self.run_dir, self.cfg))
        clips = example_clips(Path(checkpoint), self.cfg, self.audio_seconds) \
            if checkpoint is not None and self.audio_seconds > 0 else {}
        for tracker in self.trackers:
            tracker.log(_scalars(metrics), clips, self.cfg.data.sample_rate,
                        int(metrics["epoch"]))

    def close(self) -> None:
        for tracker in self.trackers or ():
            tracker.close()
        self.trackers = None


def example_clips(checkpoint: Path, cfg: RunConfig, seconds: float) -> dict[str, np.ndarray]:
    """The first held-out clip of the first domain, reconstructed by its own decoder and
    translated into the second domain, with the default generation (`DEFAULT_SAMPLING`)."""
    from umtune.data import Dataset
    from umtune.trainable.generate import DEFAULT_SAMPLING, load_translator

    data = Dataset.open(cfg.data.path)
    source, target = cfg.model.domains[0], cfg.model.domains[1 % len(cfg.model.domains)]
    entry = data.files(source, "heldout")[0]
    length = int(seconds * data.sample_rate)
    clip = np.asarray(data.audio(entry)[:length], dtype=np.float32)
    translator = load_translator(checkpoint)
    out = translator.translate_many({source: [clip], target: [clip]}, data.sample_rate,
                                    DEFAULT_SAMPLING)
    return {"audio/source": clip, f"audio/{source}_reconstructed": out[source][0].numpy(),
            f"audio/{source}_to_{target}": out[target][0].numpy()}


def tune_callbacks(names: tuple[str, ...], sweep_name: str) -> list:
    """Ray Tune's own logger callbacks for `names`: every trial's reports, as Tune sends them."""
    callbacks = []
    if "tensorboard" in names:
        from ray.tune.logger import TBXLoggerCallback

        callbacks.append(TBXLoggerCallback())
    if "wandb" in names:
        from ray.air.integrations.wandb import WandbLoggerCallback

        callbacks.append(WandbLoggerCallback(project=os.environ.get("WANDB_PROJECT", PROJECT),
                                             group=sweep_name))
    if "mlflow" in names:
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        callbacks.append(MLflowLoggerCallback(
            tracking_uri=os.environ.get("MLFLOW_TRACKING_URI"),
            experiment_name=os.environ.get("MLFLOW_EXPERIMENT_NAME") or sweep_name))
    return callbacks
