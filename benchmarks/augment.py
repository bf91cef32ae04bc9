"""Speed of the pitch-shift augmentation O(s, r) on one core, next to the shifters it replaces.

Times `apply_shifts` on batches of 0.75 s segments at 16 kHz with the paper's draws (a 0.25-0.5 s
stretch each, up to +/-0.5 semitones), exactly as the training loop calls it, and in the same run
librosa.effects.pitch_shift (if librosa is importable; the paper's code shifted each stretch with
it) and torchaudio.functional.pitch_shift (one call: fractional steps make it very slow).

    .venv/bin/python benchmarks/augment.py
"""

from __future__ import annotations

import argparse
import time

import torch
import torchaudio
from torch.utils.benchmark import Timer

from umtune.trainable.augment import apply_shifts, sample_shifts


def seconds_per_call(min_run_time: float, fn, *args) -> float:
    """Median over blocks of calls of fn(*args), on one thread."""
    return Timer("fn(*args)", globals={"fn": fn, "args": args}, num_threads=1).blocked_autorange(
        min_run_time=min_run_time).median


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", default="1,12")
    p.add_argument("--segment-seconds", type=float, default=0.75)
    p.add_argument("--min-run-time", type=float, default=2.0, help="seconds timed per row")
    args = p.parse_args()
    torch.set_num_threads(1)
    sr = 16000
    samples = round(args.segment_seconds * sr)
    batches = [int(b) for b in args.batches.split(",")]
    g = torch.Generator().manual_seed(0)
    audio = torch.rand(max(batches), samples, generator=g) * 1.6 - 0.8  # (B, T)
    params = sample_shifts(max(batches), samples, sr, max_semitones=0.5, min_seconds=0.25,
                           max_seconds=0.5, generator=g)
    stretches = [audio[b, s:s + n] for b, (s, n) in enumerate(zip(
        params.start.tolist(), params.length.tolist(), strict=True))]
    steps = params.semitones.tolist()

    rows = []  # (method, batch, seconds per segment)
    for batch in batches:
        seconds = seconds_per_call(args.min_run_time, apply_shifts, audio[:batch],
                                   params.rows(slice(0, batch)), sr)
        rows.append(("umtune apply_shifts", batch, seconds / batch))
    try:
        import librosa
    except ImportError:
        print("librosa is not importable: its rows are skipped")
    else:
        def librosa_shifts(whole: bool) -> None:
            for b, (y, n) in enumerate(zip(stretches, steps, strict=True)):
                librosa.effects.pitch_shift(audio[b].numpy() if whole else y.numpy(), sr=sr,
                                            n_steps=n)

        n = len(steps)
        for whole, what in ((False, "each stretch"), (True, "each whole segment")):
            seconds = seconds_per_call(args.min_run_time, librosa_shifts, whole)
            rows.append((f"librosa {librosa.__version__} on {what}", 1, seconds / n))
    start = time.perf_counter()
    torchaudio.functional.pitch_shift(stretches[0], sr, steps[0])
    rows.append((f"torchaudio {torchaudio.__version__.split('+')[0]} on one stretch (1 call)", 1,
                 time.perf_counter() - start))

    ours = rows[len(batches) - 1][2]
    print(f"threads: {torch.get_num_threads()}; {args.segment_seconds} s segments at {sr} Hz, "
          f"stretches of {min(map(len, stretches))}-{max(map(len, stretches))} samples; "
          f"torchaudio's stretch shifted by {steps[0]:+.3f} semitones")
    print(f"{'method':44} {'batch':>5} {'ms/segment':>10} {'x real time':>11} "
          f"{f'time / ours (batch {batches[-1]})':>24}")
    for method, batch, seconds in rows:
        print(f"{method:44} {batch:5d} {seconds * 1e3:10.3f} "
              f"{args.segment_seconds / seconds:11.0f} {seconds / ours:24.2f}")


if __name__ == "__main__":
    main()
