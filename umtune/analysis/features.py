"""Audio features and the pure scores built on them: log-mel, chroma, their distances.

Everything here is a pure function of waveforms (float tensors in [-1, 1] at a given sample
rate); no models, files or randomness. The metrics of evaluate.py compare a translation with
its source clip and with the true rendering of the same clip on the target domain (the held-out
pieces are rendered time-aligned on every domain), so every comparison is frame by frame.

- Log-mel (torchaudio's MelSpectrogram, 64 bands, 64 ms window, 16 ms hop) in dB with a fixed
  floor, so silence compares equal to silence: `logmel_db`, and the spectral distance
  `logmel_distance` = mean absolute dB difference over bands and frames.
- Chroma: the power spectrum of a 256 ms STFT (hop 32 ms) between 55 Hz and 5 kHz folded into
  12 pitch classes, each bin shared between its two nearest pitch classes in proportion to its
  distance from them in semitones (a triangular weight) and weighted so that every semitone
  counts once and white noise folds flat; each frame centred (its mean over the 12 classes
  subtracted) and L2-normalised. `chroma_similarity(candidate, reference)` = mean
  over the reference's audible frames (within 40 dB of its loudest frame) of the frames' cosine,
  i.e. the Pearson correlation of the two 12-class profiles; a silent candidate frame scores 0.
  Centring removes the large shared positive part of raw chroma vectors (raw cosines of white
  noise against music are about 0.6): identical clips score 1, white noise about 0, the same
  notes on two different instruments typically 0.6-0.9.
"""

from __future__ import annotations

import functools
import math

import torch
import torchaudio.transforms as T
from torch import Tensor

from umtune.trainable.content import chroma_frames

N_MELS = 64
MEL_WINDOW_SECONDS = 0.064
MEL_HOP_SECONDS = 0.016
DB_FLOOR = -80.0  # dB: quieter mel bands count as this (a fixed floor, not per clip)
CHROMA_WINDOW_SECONDS = 0.256
CHROMA_HOP_SECONDS = 0.032
AUDIBLE_DB = 40.0  # chroma frames quieter than the loudest by more than this are skipped


def _pow2(seconds: float, sample_rate: int) -> int:
    return 2 ** max(4, round(math.log2(seconds * sample_rate)))


@functools.lru_cache(maxsize=8)
def _mel(sample_rate: int) -> T.MelSpectrogram:
    n_fft = _pow2(MEL_WINDOW_SECONDS, sample_rate)
    return T.MelSpectrogram(sample_rate=sample_rate, n_fft=n_fft,
                            hop_length=max(1, round(MEL_HOP_SECONDS * sample_rate)),
                            n_mels=N_MELS, f_min=30.0, power=2.0, normalized="window")


def logmel_db(audio: Tensor, sample_rate: int) -> Tensor:
    """(..., T) waveform -> (..., N_MELS, frames) log-mel power in dB, floored at DB_FLOOR."""
    mel = _mel(sample_rate)(audio.float().cpu())
    return (10.0 * torch.log10(mel.clamp_min(1e-12))).clamp_min(DB_FLOOR)


def logmel_distance(a: Tensor, b: Tensor, sample_rate: int) -> Tensor:
    """Mean absolute log-mel difference in dB between time-aligned clips (..., T) -> (...).

    Clips of different lengths are compared over the shorter one. 0 for identical clips.
    """
    n = min(a.shape[-1], b.shape[-1])
    return db_distance(logmel_db(a[..., :n], sample_rate), logmel_db(b[..., :n], sample_rate))


def db_distance(a: Tensor, b: Tensor) -> Tensor:
    """Mean absolute difference of two log-mels (..., N_MELS, frames) -> (...)."""
    return (a - b).abs().mean(dim=(-2, -1))


def chroma(audio: Tensor, sample_rate: int) -> tuple[Tensor, Tensor]:
    """(..., T) waveform -> centred unit-norm chroma (..., 12, frames) and frame energy
    (..., frames); a silent frame's chroma is 0 (trainable.content.chroma_frames)."""
    n_fft = _pow2(CHROMA_WINDOW_SECONDS, sample_rate)
    hop = max(1, round(CHROMA_HOP_SECONDS * sample_rate))
    audio = audio.float().cpu()
    shape = audio.shape[:-1]
    c, energy = chroma_frames(audio.reshape(-1, audio.shape[-1]), sample_rate, n_fft, hop)
    return c.reshape(*shape, 12, -1), energy.reshape(*shape, -1)


def chroma_similarity(candidate: Tensor, reference: Tensor, sample_rate: int) -> Tensor:
    """Mean frame-wise cosine of chroma over the reference's audible frames: (..., T) -> (...).

    1 for identical clips; the candidate's silent frames score 0. A reference with no audible
    frame at all gives NaN (nothing to compare).
    """
    n = min(candidate.shape[-1], reference.shape[-1])
    c, _ = chroma(candidate[..., :n], sample_rate)
    r, energy = chroma(reference[..., :n], sample_rate)
    cos = (c * r).sum(dim=-2)  # (..., frames)
    peak = energy.amax(dim=-1, keepdim=True)
    audible = (energy > peak * 10 ** (-AUDIBLE_DB / 10)) & (peak > 0)
    return (cos * audible).sum(-1) / audible.sum(-1)  # NaN where nothing is audible
