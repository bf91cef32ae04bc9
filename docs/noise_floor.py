"""Where a translation's excess energy lies: the log-mel of each translation in an evaluation's
audio against the true rendering of the same notes, split by how loud the truth is there and
by frequency, so that a change in the spectral distance can be read as a noise floor that rose
or fell, or as partials that went missing.

    .venv/bin/python docs/noise_floor.py EVALUATION [EVALUATION ...]

EVALUATION is an `umtune evaluate` output folder (its audio/ holds clipN_SRC_to_DST.wav and the
truth clipN_DST.wav; translations from its unseen domains are left out, as their gains are
lenient: metrics.json). The features are the spectral distance's (`logmel_db`). Columns, the
median of translation minus truth in dB over the time-frequency cells where the truth is:
quiet (40 dB or more below its loudest cell), loud (within 20 dB of it); then over all cells of
the bands below 500 Hz, 500 Hz-2 kHz and above 2 kHz; the output's level against the truth; and
its translation gain as the evaluation computes it (1 - distance to the truth / the source's).
Under each evaluation, the same for the truth itself through 8-bit mu-law (256 classes, what
the decoders output): the floor the quantisation alone leaves, which no model gets under.
A second table gives the long-term spectrum (power per Hz averaged over the clip) of the
translations against their truths' by octave: whether the excess is white, or gathers in
some part of the spectrum.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from umtune.analysis.features import N_MELS, logmel_db, logmel_distance

QUIET_DB, LOUD_DB = 40.0, 20.0
BANDS_HZ = (500.0, 2000.0)
OCTAVES_HZ = (0, 60, 120, 250, 500, 1000, 2000, 4000)
SPECTRUM_WINDOW = 2048
MU_LAW_CLASSES = 256
TRANSLATION = re.compile(r"(clip\d+)_(\w+?)_to_(\w+)\.wav")


def excess(translation: np.ndarray, truth: np.ndarray, source: np.ndarray,
           sample_rate: int) -> list[float]:
    """The row of the table for one translation, its truth and its source (see the module's
    docstring)."""
    n = min(len(translation), len(truth))
    out, ref = (logmel_db(torch.from_numpy(x[:n]), sample_rate) for x in (translation, truth))
    diff, peak = out - ref, ref.max()
    centres = AF.melscale_fbanks(sample_rate // 2 + 1, 30.0, sample_rate / 2, N_MELS,
                                 sample_rate).argmax(dim=0).float()  # Hz per mel band (1-Hz bins)
    low, high = centres < BANDS_HZ[0], centres >= BANDS_HZ[1]
    level = 20 * np.log10(np.std(translation[:n]) / max(np.std(truth[:n]), 1e-12))
    clips = [torch.from_numpy(x).float() for x in (translation, truth, source)]
    gain = 1 - logmel_distance(clips[0], clips[1], sample_rate) / logmel_distance(
        clips[2], clips[1], sample_rate)
    return [diff[ref <= peak - QUIET_DB].median().item(),
            diff[ref >= peak - LOUD_DB].median().item(),
            diff[low].median().item(), diff[~low & ~high].median().item(),
            diff[high].median().item(), level, gain.item()]


def long_term_spectrum(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Power per Hz in dB in each band of OCTAVES_HZ, averaged over Hann-windowed frames of
    SPECTRUM_WINDOW samples with half overlap (bands past Nyquist are left out)."""
    n, hop = SPECTRUM_WINDOW, SPECTRUM_WINDOW // 2
    frames = np.lib.stride_tricks.sliding_window_view(audio, n)[::hop] * np.hanning(n)
    power = (np.abs(np.fft.rfft(frames, axis=-1)) ** 2).mean(axis=0)
    hz = np.fft.rfftfreq(n, 1 / sample_rate)
    edges = [e for e in OCTAVES_HZ if e <= sample_rate / 2]
    return np.array([10 * np.log10(power[(hz >= lo) & (hz < hi)].mean() + 1e-20)
                     for lo, hi in zip(edges, edges[1:], strict=False)])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("evaluations", nargs="+", type=Path)
    args = p.parse_args()
    print(f"{'evaluation':28} {'pairs':>5} {'quiet':>7} {'loud':>7} {'<500':>7} {'500-2k':>7} "
          f"{'>2k':>7} {'level':>7} {'gain':>7}  (dB, translation - truth)")
    long_term = {}
    for folder in args.evaluations:
        rows, quantised, spectra = [], [], []
        unseen = json.loads((folder / "metrics.json").read_text())["unseen_domains"]
        for path in sorted((folder / "audio").glob("clip*_to_*.wav")):
            clip, source, target = TRANSLATION.fullmatch(path.name).groups()
            truth, played = (path.with_name(f"{clip}_{d}.wav") for d in (target, source))
            if truth.exists() and played.exists() and source not in unseen:
                (out, sr), (ref, _), (src, _) = sf.read(path), sf.read(truth), sf.read(played)
                rows.append(excess(out, ref, src, sr))
                n = min(len(out), len(ref))
                spectra.append(long_term_spectrum(out[:n], sr) - long_term_spectrum(ref[:n], sr))
                codes = AF.mu_law_encoding(torch.from_numpy(ref), MU_LAW_CLASSES)
                copy = AF.mu_law_decoding(codes, MU_LAW_CLASSES).numpy()
                quantised.append(excess(copy, ref, src, sr))
        if not rows:
            raise SystemExit(f"{folder}: no translation with its truth in {folder / 'audio'}")
        for name, table in ((str(folder)[-28:], rows), ("  the truth through mu-law", quantised)):
            means = np.mean(table, axis=0)
            print(f"{name:28} {len(table):5d} " + " ".join(f"{v:7.1f}" for v in means[:-1])
                  + f" {means[-1]:7.3f}")
        long_term[str(folder)[-28:]] = np.mean(spectra, axis=0)
    edges = [f"{lo}-{hi}" for lo, hi in zip(OCTAVES_HZ, OCTAVES_HZ[1:], strict=False)]
    print(f"\n{'long-term spectrum (Hz)':28} " + " ".join(f"{e:>9}" for e in edges)
          + "  (dB, translation - truth)")
    for name, diff in long_term.items():
        print(f"{name:28} " + " ".join(f"{v:9.1f}" for v in diff))


if __name__ == "__main__":
    main()
