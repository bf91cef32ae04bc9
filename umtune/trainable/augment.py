"""Pitch-shift augmentation O(s, r) of the Universal Music Translation network.

Mor et al. 2018 (arXiv 1805.07848), "Audio Input Augmentation": a random local stretch of each
training segment (paper: 0.25-0.5 s) is pitch-shifted by a random amount (paper: up to +/-0.5
semitones), so that the encoder cannot memorise the exact waveform; the rest of the segment is left
as it is. `sample_shifts` draws where and by how much, `apply_shifts` applies that to a batch, and
`pitch_shift` is the length-preserving pitch shift they use. Not here: when to augment and the
mu-law encoding (loop.py).

Method. The official code calls librosa.effects.pitch_shift: a phase-vocoder time-stretch by the
pitch ratio, then a resample back to the original length. We do the same, in one batched pass over
rows with different ratios, with the resample folded into the synthesis:
1. STFT, Hann window of about 64 ms (1024 samples at 16 kHz), hop a quarter window.
2. Phase vocoder: output frame k takes the magnitudes of analysis time k / ratio (interpolated
   between frames) and advances each bin's phase by that bin's measured advance over one hop,
   multiplying unit phasors so no angle is computed or wrapped. Bins that would land above Nyquist
   after the resample are dropped (the anti-alias filter).
3. Inverse STFT at twice the sample rate (each frame's spectrum zero-padded to twice the length):
   the stretched signal, 2x oversampled, for the price of a longer inverse FFT.
4. Read it at `ratio` times the original rate with 4-point (cubic) Lagrange interpolation, which is
   accurate on a 2x-oversampled signal (about -40 dB images at 6-7 kHz from 16 kHz audio, below the
   vocoder's own artifacts; exact band-limited resampling measured the same vocoder floor).
Every frequency is scaled by exactly `ratio`, and output time t comes from input time t, so the
shifted stretch lines up with its surroundings. torchaudio.functional.pitch_shift does steps 1-2
with one rate per call and resamples with a rational-ratio kernel that is huge for fractional
semitones; this runs far faster than real time on one core (docs/speed.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

WINDOW_SECONDS = 0.064  # STFT window, rounded up to a power of two: 1024 samples at 16 kHz
FADE_SECONDS = 0.005  # raised-cosine crossfade inside each end of a shifted stretch: no clicks
OVERSAMPLE = 2  # synthesis rate / sample rate, so that cubic interpolation is accurate


@dataclass(frozen=True)
class ShiftParams:
    """One pitch shift per row of a batch: samples [start, start + length) move by `semitones`."""

    start: Tensor  # (N,) int64
    length: Tensor  # (N,) int64
    semitones: Tensor  # (N,) float; 0 leaves the row untouched

    def __post_init__(self):
        shapes = [tuple(t.shape) for t in (self.start, self.length, self.semitones)]
        if len(set(shapes)) != 1 or len(shapes[0]) != 1:
            raise ValueError(f"ShiftParams fields must be 1-D of one length, got {shapes}")

    def __len__(self) -> int:
        return self.start.shape[0]

    def rows(self, index: slice | Tensor) -> ShiftParams:
        """The params of some rows, e.g. one distributed rank's share of a global batch."""
        return ShiftParams(self.start[index], self.length[index], self.semitones[index])


def sample_shifts(count: int, segment_samples: int, sample_rate: int, *, max_semitones: float,
                  min_seconds: float, max_seconds: float,
                  generator: torch.Generator) -> ShiftParams:
    """Draw `count` shifts: length uniform in [min, max] seconds (clipped to the segment), start
    uniform over the positions that fit, semitones uniform in [-max, +max].

    Every number comes from `generator`, and the same ones are drawn whatever `max_semitones` is,
    so a seeded loop is reproducible and max_semitones == 0 only zeroes the amounts.
    """
    if not 0 < min_seconds <= max_seconds:
        raise ValueError(f"need 0 < min_seconds <= max_seconds, got {min_seconds}, {max_seconds}")
    if max_semitones < 0:
        raise ValueError(f"max_semitones must be >= 0, got {max_semitones}")
    low = min(round(min_seconds * sample_rate), segment_samples)
    high = min(round(max_seconds * sample_rate), segment_samples)
    length = torch.randint(low, high + 1, (count,), generator=generator)
    fraction = torch.rand(count, generator=generator, dtype=torch.float64)
    start = (fraction * (segment_samples - length + 1)).long()  # in [0, segment - length]
    semitones = torch.empty(count).uniform_(-max_semitones, max_semitones, generator=generator)
    return ShiftParams(start, length, semitones)


def apply_shifts(batch: Tensor, params: ShiftParams, sample_rate: int) -> Tensor:
    """O(s, r) on a batch: a new (B, T) tensor whose row b equals `batch[b]` outside
    [start, start + length) and is pitch-shifted by `semitones[b]` inside (crossfaded over
    FADE_SECONDS at both ends of the stretch). Rows with 0 semitones come back unchanged."""
    if batch.dim() != 2 or len(params) != batch.shape[0]:
        raise ValueError(f"need a (B, T) batch and B params, got {tuple(batch.shape)} and "
                         f"{len(params)}")
    T = batch.shape[1]
    if bool((params.start < 0).any() or (params.start + params.length > T).any()):
        raise ValueError(f"shifted stretches must lie within the {T} samples of a row")
    out = batch.clone()
    rows = ((params.semitones != 0) & (params.length > 0)).nonzero().squeeze(1).to(batch.device)
    if rows.numel() == 0:
        return out
    start = params.start.to(batch.device)[rows, None]  # (R, 1)
    length = params.length.to(batch.device)[rows, None]  # (R, 1)
    ratio = 2 ** (params.semitones.to(batch.device, torch.float64)[rows] / 12)  # (R,)
    # Cut each stretch with a window of context either side, so that the STFT frames over the
    # stretch see real audio, and zeros past that (and past the segment), so that a row's result
    # does not depend on the other rows of the batch.
    context = _window_size(sample_rate)
    width = int(length.max()) + 2 * context
    pos = torch.arange(width, device=batch.device) - context  # (W,) position within the stretch
    padded = F.pad(batch[rows], (context, width))  # (R, context + T + width)
    index = start + context + pos  # (R, W) chunk positions in padded
    chunk = padded.gather(1, index)  # (R, W)
    shifted = _shift(chunk.masked_fill(pos >= length + context, 0), ratio, sample_rate)  # (R, W)
    # Crossfade over n_fade samples at each end of the stretch; from a table, so that it is
    # computed the same way whatever the batch.
    n_fade = max(1, round(FADE_SECONDS * sample_rate))
    ramp = torch.arange(n_fade, dtype=batch.dtype, device=batch.device).add_(0.5) / n_fade
    ramp = F.pad(0.5 - 0.5 * torch.cos(math.pi * ramp), (0, 1), value=1.0)  # (n_fade + 1,)
    to_end = torch.minimum(pos, length - 1 - pos)  # (R, W) samples to the nearer end, < 0 outside
    fade = ramp[to_end.clamp(0, n_fade)]  # (R, W)
    mixed = torch.where(to_end >= 0, chunk + fade * (shifted - chunk), chunk)  # outside: as is
    out[rows] = padded.scatter(1, index, mixed)[:, context:context + T]
    return out


def pitch_shift(audio: Tensor, semitones: float | Tensor, sample_rate: int) -> Tensor:
    """Shift the pitch of (T,) or (B, T) audio by `semitones` (a number, or one per row),
    keeping its length. Rows shifted by 0 come back unchanged."""
    x = audio.reshape(-1, audio.shape[-1])  # (B, T)
    steps = torch.as_tensor(semitones, dtype=torch.float64, device=audio.device)
    ratio = 2 ** (steps.expand(x.shape[0]) / 12)  # (B,)
    y = torch.where((ratio == 1)[:, None], x, _shift(x, ratio, sample_rate))
    return y.reshape(audio.shape)


def _window_size(sample_rate: int) -> int:
    return 2 ** math.ceil(math.log2(WINDOW_SECONDS * sample_rate))


def _shift(x: Tensor, ratio: Tensor, sample_rate: int) -> Tensor:
    """Pitch-shift each row of x (R, W) by its ratio (R,), float64; see the module docstring."""
    R, W = x.shape
    n_fft = _window_size(sample_rate)
    hop = n_fft // 4
    window = torch.hann_window(n_fft, dtype=x.dtype, device=x.device)
    frames = F.pad(x, (n_fft // 2, n_fft // 2)).unfold(1, n_fft, hop)  # (R, N, n_fft), centred
    spec = torch.fft.rfft(frames * window)  # (R, N, F)
    N, n_bins = spec.shape[1:]
    # Real arithmetic on the parts: complex ops round differently in vector and scalar loops,
    # which would make a row's result depend on the batch. The offset gives silent bins phase 0.
    re, im = spec.real + 1e-12, spec.imag
    magnitude = (re * re + im * im).sqrt_()  # (R, N, F)
    re, im = re / magnitude, im / magnitude  # unit phasors
    advance = torch.complex(re[:, 1:] * re[:, :-1] + im[:, 1:] * im[:, :-1],
                            im[:, 1:] * re[:, :-1] - re[:, 1:] * im[:, :-1])  # (R, N-1, F)

    # Stretch by ratio: output frame k (a hop after k-1) has the magnitudes at analysis time
    # k / ratio, and its phase is frame k-1's advanced by the bins' step at that time.
    stretched = math.ceil(W * ratio.max().item()) + 2  # samples the interpolation reads
    n_out = -(-stretched // hop) + 1
    source = torch.arange(n_out, dtype=torch.float64, device=x.device) / ratio[:, None]
    source = source.clamp(max=N - 1)  # (R, n_out), in analysis frames
    before = source.long().clamp(max=N - 2)  # (R, n_out)
    frac = (source - before).to(x.dtype).view(R * n_out, 1)
    row = torch.arange(R, device=x.device)[:, None]
    magnitude = magnitude.view(R * N, n_bins)  # frames as rows: index_select is fast
    mag0 = magnitude.index_select(0, (row * N + before).flatten())
    mag1 = magnitude.index_select(0, (row * N + before + 1).flatten())
    mag = (mag0 + frac * (mag1 - mag0)).view(R, n_out, n_bins)
    top = (n_bins - 1) / ratio.clamp(min=1)  # (R,) bins that stay below Nyquist after reading
    mag *= (torch.arange(n_bins, device=x.device) < top[:, None])[:, None]  # (R, n_out, F)
    steps = advance.reshape(R * (N - 1), n_bins).index_select(
        0, (row * (N - 1) + before[:, :-1]).flatten()).view(R, n_out - 1, n_bins)
    phase = torch.cat([torch.complex(re[:, :1], im[:, :1]), steps], 1).cumprod_(1)
    spec = torch.view_as_complex(torch.view_as_real(phase).mul_(mag[..., None]))  # (R, n_out, F)

    # Inverse STFT at OVERSAMPLE x the rate: zero-padded spectra, weighted overlap-add.
    size, step = OVERSAMPLE * n_fft, OVERSAMPLE * hop
    window = torch.hann_window(size, dtype=x.dtype, device=x.device)
    grains = torch.fft.irfft(spec, size).mul_(OVERSAMPLE * window)  # (R, n_out, size)
    y = _overlap_add(grains, step).div_(_overlap_add(window.square().expand(1, n_out, size), step))
    y = y[:, size // 2:size // 2 + OVERSAMPLE * stretched]  # (R, OVERSAMPLE * stretched)

    # Read the stretched signal at ratio x the rate: cubic Lagrange through 4 neighbours.
    pos = torch.arange(W, dtype=torch.float64, device=x.device) * (OVERSAMPLE * ratio[:, None])
    base = pos.long()  # (R, W)
    mu = (pos - base).to(x.dtype)
    y = F.pad(y, (1, 2))  # taps base-1 .. base+2
    p0, p1, p2, p3 = (y.gather(1, base + k) for k in range(4))
    c1 = p2 - p0 / 3 - p1 / 2 - p3 / 6
    c2 = (p0 + p2) / 2 - p1
    c3 = (p3 - p0) / 6 + (p1 - p2) / 2
    return p1 + mu * (c1 + mu * (c2 + mu * c3))


def _overlap_add(frames: Tensor, hop: int) -> Tensor:
    """Sum (R, K, L) frames placed `hop` apart (L a multiple of hop) into (R, (K - 1) * hop + L)."""
    R, K, L = frames.shape
    parts = frames.reshape(R, K, L // hop, hop)
    out = frames.new_zeros(R, K + L // hop - 1, hop)
    for i in range(L // hop):
        out[:, i:i + K] += parts[:, :, i]
    return out.reshape(R, -1)
