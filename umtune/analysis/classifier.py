"""The timbre judge: a small domain classifier on log-mel statistics, trained once per dataset.

Timbre accuracy (evaluate.py) asks this classifier which instrument a translation sounds like.
It never sees the translation network: it is trained on real renderings of the dataset's
TRAINING split (random 1 s segments of every trained domain) and its own accuracy on the
held-out split's real renderings is stored beside it, so a reader knows how far to trust it.

Features per clip (`timbre_features`): the clip's log-mel in dB (features.logmel_db) minus its
overall mean (so loudness does not matter), then per mel band the mean and standard deviation
over frames and the mean absolute frame-to-frame change (attacks, vibrato): 3 x 64 numbers,
standardised with the training set's statistics. Model: one hidden layer of 64 ReLU units,
full-batch Adam with weight decay; a few seconds on one CPU core.

The trained classifier is cached at `<dataset>/analysis/domain_classifier.pt` (loaded with
`torch.load(weights_only=True)`), written through a temporary file and `os.replace`, with a
JSON summary next to it. Training is deterministic, so concurrent evaluations that both train
write the same thing. A dataset directory that cannot be written is used without a cache.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from umtune.analysis.features import logmel_db
from umtune.data import Dataset, DatasetError

CACHE_DIR = "analysis"
CACHE_FILE = "domain_classifier.pt"
SUMMARY_FILE = "domain_classifier.json"
CLASSIFIER_VERSION = 1  # bump when features or model change: older caches are retrained
SEGMENT_SECONDS = 1.0
TRAIN_SEGMENTS = 96  # per domain, from the training split
HELDOUT_SEGMENTS = 32  # per domain, from the held-out split
HIDDEN = 64
STEPS = 300


def timbre_features(audio: Tensor, sample_rate: int) -> Tensor:
    """(B, T) waveforms -> (B, 3 * N_MELS) loudness-invariant log-mel statistics."""
    db = logmel_db(audio, sample_rate)  # (B, M, F)
    db = db - db.mean(dim=(1, 2), keepdim=True)
    flux = db.diff(dim=2).abs().mean(dim=2) if db.shape[2] > 1 else torch.zeros_like(db[:, :, 0])
    return torch.cat([db.mean(dim=2), db.std(dim=2, correction=0), flux], dim=1)


class _MLP(nn.Module):
    def __init__(self, features: int, classes: int):
        super().__init__()
        self.hidden = nn.Linear(features, HIDDEN)
        self.out = nn.Linear(HIDDEN, classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(F.relu(self.hidden(x)))


@dataclass
class DomainClassifier:
    """Labels clips with one of `domains`. Build with `train_domain_classifier` or
    `domain_classifier(dataset)` (cached)."""

    domains: tuple[str, ...]
    sample_rate: int
    net: _MLP
    mean: Tensor  # feature standardisation, from the training segments
    std: Tensor
    heldout_acc: float  # accuracy on the held-out split's real renderings

    @torch.no_grad()
    def logits(self, audio: Tensor | np.ndarray) -> Tensor:
        """(B, T) waveforms at `sample_rate` -> (B, K) logits."""
        x = torch.as_tensor(np.asarray(audio, dtype=np.float32)) if isinstance(audio, np.ndarray) \
            else audio.float().cpu()
        return self.net((timbre_features(x, self.sample_rate) - self.mean) / self.std)

    def predict(self, audio: Tensor | np.ndarray) -> Tensor:
        """(B, T) waveforms -> (B,) index into `domains`."""
        return self.logits(audio).argmax(dim=-1)

    def state(self) -> dict:
        return {"version": CLASSIFIER_VERSION, "domains": list(self.domains),
                "sample_rate": self.sample_rate, "net": self.net.state_dict(),
                "mean": self.mean, "std": self.std, "heldout_acc": self.heldout_acc}

    @classmethod
    def from_state(cls, state: dict) -> DomainClassifier:
        net = _MLP(state["mean"].numel(), len(state["domains"]))
        net.load_state_dict(state["net"])
        return cls(domains=tuple(state["domains"]), sample_rate=int(state["sample_rate"]),
                   net=net.eval(), mean=state["mean"], std=state["std"],
                   heldout_acc=float(state["heldout_acc"]))


def _segments(data: Dataset, split: str, count: int, seed: int) -> tuple[Tensor, Tensor]:
    """`count` random segments of every domain of `split`: audio (K * count, T) and labels."""
    length = round(SEGMENT_SECONDS * data.sample_rate)
    audio, labels = [], []
    for k, domain in enumerate(data.domains):
        entries = data.files(domain, split)
        if not entries:
            raise DatasetError(f"dataset {data.path} has no {split!r} files for domain "
                               f"{domain!r}; the timbre classifier trains on every domain's "
                               f"'train' files and is checked on its 'heldout' files")
        n = min(length, max(e.num_samples for e in entries))
        rng = np.random.default_rng([seed, k])
        audio.append(torch.from_numpy(data.segments(domain, split, count, n, rng)))
        labels.append(torch.full((count,), k))
    n = min(a.shape[1] for a in audio)
    return torch.cat([a[:, :n] for a in audio]), torch.cat(labels)


def train_domain_classifier(data: Dataset, seed: int = 0) -> DomainClassifier:
    """Train on the training split's real renderings; score on the held-out split's."""
    audio, labels = _segments(data, "train", TRAIN_SEGMENTS, seed)
    x = timbre_features(audio, data.sample_rate)
    mean, std = x.mean(dim=0), x.std(dim=0).clamp_min(1e-3)
    x = (x - mean) / std
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = _MLP(x.shape[1], len(data.domains))
        opt = torch.optim.Adam(net.parameters(), lr=1e-2, weight_decay=1e-3)
        for _ in range(STEPS):
            loss = F.cross_entropy(net(x), labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    clf = DomainClassifier(domains=data.domains, sample_rate=data.sample_rate, net=net,
                           mean=mean, std=std, heldout_acc=float("nan"))
    held, held_labels = _segments(data, "heldout", HELDOUT_SEGMENTS, seed + 1)
    clf.heldout_acc = (clf.predict(held) == held_labels).float().mean().item()
    return clf


def domain_classifier(data: Dataset, seed: int = 0) -> DomainClassifier:
    """The dataset's classifier: loaded from its cache, or trained and cached."""
    directory = data.path / CACHE_DIR
    path = directory / CACHE_FILE
    if path.is_file():
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            if (state.get("version") == CLASSIFIER_VERSION
                    and tuple(state["domains"]) == data.domains
                    and int(state["sample_rate"]) == data.sample_rate):
                return DomainClassifier.from_state(state)
        except Exception:  # noqa: BLE001 - an unreadable cache is retrained and replaced
            pass
    clf = train_domain_classifier(data, seed)
    try:
        _save(clf, directory)
    except OSError as e:
        warnings.warn(f"domain classifier not cached in {directory} ({e.strerror or e}); it "
                      f"will be retrained next time", stacklevel=2)
    return clf


def _save(clf: DomainClassifier, directory: Path) -> None:
    directory.mkdir(exist_ok=True)
    summary = {"version": CLASSIFIER_VERSION, "domains": list(clf.domains),
               "sample_rate": clf.sample_rate, "heldout_acc": clf.heldout_acc,
               "chance": 1 / len(clf.domains), "segment_seconds": SEGMENT_SECONDS,
               "train_segments_per_domain": TRAIN_SEGMENTS,
               "heldout_segments_per_domain": HELDOUT_SEGMENTS}
    for name, write in ((CACHE_FILE, lambda f: torch.save(clf.state(), f)),
                        (SUMMARY_FILE, lambda f: f.write(json.dumps(summary, indent=1).encode()))):
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=directory)
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
            os.replace(tmp, directory / name)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
