"""Pitch-shift augmentation O(s, r): right pitch, untouched surroundings, seeded, shardable."""

import math

import pytest
import torch

from umtune.trainable.augment import ShiftParams, apply_shifts, pitch_shift, sample_shifts

SR = 16000
PAPER = dict(max_semitones=0.5, min_seconds=0.25, max_seconds=0.5)


def _peak_frequency(x: torch.Tensor) -> float:
    """Strongest frequency: FFT peak of a Hann-windowed, 8x zero-padded signal, refined by a
    parabola through the log magnitudes of the peak bin and its neighbours."""
    n = 8 * x.numel()
    window = torch.hann_window(x.numel(), dtype=torch.float64)
    spectrum = torch.fft.rfft(x.double() * window, n).abs().log()
    k = int(spectrum.argmax())
    a, b, c = spectrum[k - 1:k + 2].tolist()
    return (k + 0.5 * (a - c) / (a - 2 * b + c)) * SR / n


def _sine(hz: float, samples: int) -> torch.Tensor:
    t = torch.arange(samples, dtype=torch.float64) / SR
    return (0.5 * torch.sin(2 * math.pi * hz * t)).float()


def _music(rows: int, samples: int, seed: int = 0) -> torch.Tensor:
    """Harmonic tones at random pitches plus a little noise, peak 0.9."""
    g = torch.Generator().manual_seed(seed)
    f0 = 100 * 2 ** (4 * torch.rand(rows, 1, generator=g))
    t = torch.arange(samples) / SR
    x = sum(torch.sin(2 * math.pi * k * f0 * t + k) / k for k in range(1, 9))
    x = x + 0.05 * torch.randn(rows, samples, generator=g)
    return 0.9 * x / x.abs().amax(1, keepdim=True)


@pytest.mark.parametrize("semitones", [0.5, -0.5, 0.3])
def test_sine_frequency_moves_by_the_requested_ratio(semitones):
    """A 440 Hz sine in a 1.5 s shifted stretch measures 440 * 2**(s/12) to within 1 ppm."""
    x = _sine(440.0, 32000)[None]  # (1, T)
    params = ShiftParams(torch.tensor([4000]), torch.tensor([24000]), torch.tensor([semitones]))
    y = apply_shifts(x, params, SR)
    expected = 440.0 * 2 ** (semitones / 12)
    assert _peak_frequency(x[0, 8000:24000]) == pytest.approx(440.0, rel=1e-6)
    assert _peak_frequency(y[0, 8000:24000]) == pytest.approx(expected, rel=1e-6)
    assert _peak_frequency(pitch_shift(x[0], semitones, SR)[4000:28000]) == pytest.approx(
        expected, rel=1e-6)


def test_outside_the_stretch_is_bit_identical():
    """Every sample outside [start, start + length) is unchanged; inside, every row changed."""
    x = _music(8, 12000)
    params = sample_shifts(8, 12000, SR, **PAPER, generator=torch.Generator().manual_seed(1))
    y = apply_shifts(x, params, SR)
    for b, (s, n) in enumerate(zip(params.start.tolist(), params.length.tolist(), strict=True)):
        assert torch.equal(y[b, :s], x[b, :s]) and torch.equal(y[b, s + n:], x[b, s + n:])
        assert not torch.equal(y[b, s:s + n], x[b, s:s + n])


def test_shapes_are_kept_and_output_is_finite_and_sane():
    """Same shape and dtype; finite; peak within 1.5x and stretch RMS within 1.5x of the input."""
    x = _music(16, 12000, seed=2)
    params = sample_shifts(16, 12000, SR, **PAPER, generator=torch.Generator().manual_seed(2))
    y = apply_shifts(x, params, SR)
    assert y.shape == x.shape and y.dtype == x.dtype and y.isfinite().all()
    assert y.abs().max() <= 1.5 * x.abs().max()
    for b, (s, n) in enumerate(zip(params.start.tolist(), params.length.tolist(), strict=True)):
        rms_ratio = (y[b, s:s + n].square().mean() / x[b, s:s + n].square().mean()).sqrt()
        assert 1 / 1.5 <= rms_ratio <= 1.5
    assert pitch_shift(x[0], 0.4, SR).shape == x[0].shape
    assert pitch_shift(x[:3], torch.tensor([0.4, -0.2, 0.1]), SR).shape == (3, 12000)


def test_zero_semitones_leave_the_batch_unchanged():
    """Rows with 0 semitones, and every row when max_semitones is 0, come back equal."""
    x = _music(4, 12000)
    params = sample_shifts(4, 12000, SR, max_semitones=0.0, min_seconds=0.25, max_seconds=0.5,
                           generator=torch.Generator().manual_seed(3))
    assert torch.equal(params.semitones, torch.zeros(4))
    assert torch.equal(apply_shifts(x, params, SR), x)
    mixed = ShiftParams(params.start, params.length, torch.tensor([0.0, 0.4, 0.0, -0.3]))
    y = apply_shifts(x, mixed, SR)
    assert torch.equal(y[0], x[0]) and torch.equal(y[2], x[2]) and not torch.equal(y[1], x[1])
    assert torch.equal(pitch_shift(x, 0.0, SR), x)


def test_same_seed_gives_same_params_and_output():
    """Two generators with one seed draw equal params, and the shifted batches are equal."""
    x = _music(6, 12000)
    p, q = (sample_shifts(6, 12000, SR, **PAPER, generator=torch.Generator().manual_seed(7))
            for _ in range(2))
    assert all(torch.equal(getattr(p, f), getattr(q, f)) for f in ("start", "length", "semitones"))
    assert torch.equal(apply_shifts(x, p, SR), apply_shifts(x, q, SR))
    r = sample_shifts(6, 12000, SR, **PAPER, generator=torch.Generator().manual_seed(8))
    assert not torch.equal(p.start, r.start)


def test_params_respect_the_ranges():
    """Lengths within [min, max] seconds clipped to the segment, start + length <= L, |s| <= max."""
    g = torch.Generator().manual_seed(4)
    p = sample_shifts(2000, 12000, SR, **PAPER, generator=g)
    assert p.start.dtype == p.length.dtype == torch.int64 and len(p) == 2000
    assert p.length.min() >= 4000 and p.length.max() <= 8000
    assert p.start.min() >= 0 and (p.start + p.length).max() <= 12000
    assert p.semitones.abs().max() <= 0.5 and p.semitones.min() < 0 < p.semitones.max()
    short = sample_shifts(50, 3000, SR, **PAPER, generator=g)  # a segment shorter than 0.25 s
    assert torch.equal(short.length, torch.full((50,), 3000)) and torch.equal(short.start,
                                                                             torch.zeros(50).long())


def test_rows_of_params_shift_the_rows_of_a_batch_exactly():
    """apply_shifts(batch[i], params.rows(i)) equals apply_shifts(batch, params)[i], bit for bit,
    so distributed ranks can each shift their own rows of a global batch."""
    x = _music(8, 12000)
    params = sample_shifts(8, 12000, SR, **PAPER, generator=torch.Generator().manual_seed(5))
    full = apply_shifts(x, params, SR)
    for index in (slice(1, None, 2), slice(0, 1), torch.tensor([5, 1, 3])):
        assert len(params.rows(index)) == len(x[index])
        assert torch.equal(apply_shifts(x[index], params.rows(index), SR), full[index])
