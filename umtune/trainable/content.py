"""Chroma, and the content loss built on it: the latent made to say which pitch classes sound.

An unsupervised training aid beyond the paper (`train.content_loss_weight`, off in `paper`):
a 1x1 head on the encoder's latent (`model.content_head`) predicts, for every latent frame, the
chroma of the clean input around that frame, a target computed from the audio itself. The
decoders can only follow notes that the latent holds; on our budgets the reconstruction loss
alone let the latent's pitch fade (the linear pitch probe fell from 0.33 to 0.22 over 1500
steps while the latent gain grew on loudness and onsets).

`chroma_frames` is also what the evaluation's chroma similarity uses (analysis/features.py).
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor

CHROMA_FMIN, CHROMA_FMAX = 55.0, 5000.0  # Hz: A1 .. about D#8
CONTENT_WINDOW_SECONDS = 0.128  # resolves neighbouring semitones down to about 110 Hz


@functools.lru_cache(maxsize=16)
def fold_matrix(n_fft: int, sample_rate: int) -> Tensor:
    """(12, n_fft // 2 + 1): power spectrum bins -> pitch classes.

    Each bin is shared between its two nearest pitch classes in proportion to its distance from
    them in semitones (a triangular weight). Bins are linear in frequency, semitones are not (a
    semitone at 4 kHz holds 64 times the bins of one at 62 Hz): each bin is weighted by 1 / (its
    semitone's width in bins), so every semitone counts once, and each pitch class's row is
    scaled to one total weight, so that white noise folds to a flat chroma.
    """
    freqs = torch.arange(n_fft // 2 + 1, dtype=torch.float64) * sample_rate / n_fft
    fold = torch.zeros(12, freqs.numel(), dtype=torch.float64)
    band = (freqs >= CHROMA_FMIN) & (freqs <= min(CHROMA_FMAX, sample_rate / 2))
    midi = 69.0 + 12.0 * torch.log2(freqs[band] / 440.0)  # fractional MIDI pitch of each bin
    low = torch.floor(midi)
    frac = midi - low  # share of the bin that goes to the upper neighbour
    cols = torch.nonzero(band)[:, 0]
    per_semitone = n_fft / sample_rate * freqs[band] * (2 ** (1 / 12) - 1)  # bins a semitone
    weight = 1.0 / per_semitone.clamp_min(1.0)
    fold[(low.long() % 12), cols] += (1.0 - frac) * weight
    fold[((low.long() + 1) % 12), cols] += frac * weight
    return (fold / fold.sum(dim=1, keepdim=True)).float()


def chroma_frames(audio: Tensor, sample_rate: int, n_fft: int, hop: int,
                  offset: int | None = None) -> tuple[Tensor, Tensor]:
    """(B, T) waveforms -> centred unit-norm chroma (B, 12, frames) and frame energy (B, frames).

    Frame j is the Hann-windowed n_fft samples centred on sample j * hop + offset (default 0),
    zero-padded at the ends; a silent frame's chroma is 0.
    """
    offset = 0 if offset is None else offset
    pad = n_fft // 2 - offset
    x = F.pad(audio.float(), (pad, n_fft // 2 + offset))
    spec = torch.stft(x, n_fft=n_fft, hop_length=hop, center=False, return_complex=True,
                      window=torch.hann_window(n_fft, device=audio.device))
    c = fold_matrix(n_fft, sample_rate).to(audio.device) @ spec.abs().square()  # (B, 12, F)
    energy = c.sum(dim=1)
    c = c - c.mean(dim=1, keepdim=True)
    return c / c.norm(dim=1, keepdim=True).clamp_min(1e-12), energy


def content_targets(audio: Tensor, sample_rate: int, pool: int) -> tuple[Tensor, Tensor]:
    """The chroma around every latent frame of (B, T) audio, (B, 12, T // pool), and which
    frames are audible (within 40 dB of the row's loudest), (B, T // pool) bool."""
    n_fft = 2 ** max(4, round(math.log2(CONTENT_WINDOW_SECONDS * sample_rate)))
    c, energy = chroma_frames(audio, sample_rate, n_fft, pool, offset=pool // 2)
    frames = audio.shape[-1] // pool
    c, energy = c[..., :frames], energy[..., :frames]
    return c, energy > energy.amax(dim=-1, keepdim=True).clamp_min(1e-12) * 1e-4


def content_loss(predicted: Tensor, audio: Tensor, sample_rate: int, pool: int) -> Tensor:
    """1 - cosine between the head's prediction (B, 12, F) and the input's chroma, averaged
    over audible frames: 0 when the latent names the sounding pitch classes exactly."""
    target, audible = content_targets(audio, sample_rate, pool)
    cos = F.cosine_similarity(predicted.float(), target, dim=1)  # (B, F)
    return ((1 - cos) * audible).sum() / audible.sum().clamp_min(1)
