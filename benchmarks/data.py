"""Data-layer speed: rendering the built-in dataset, and random-segment reads as training does them.

Prints two tables:
- rendering: seconds of audio written per second of wall time, for FluidSynth alone on one piece
  and for the whole `render_chorales` pipeline (parse, MIDI, render, write) on the default dataset;
- segment reads: `Dataset.segments` samples per second for training-shaped batches, and the ratio
  to what training consumes (at most ~20,000 samples/s on these machines); it must be >= 100x.

Run: `.venv/bin/python benchmarks/data.py [--pieces 8 --heldout 6 --keep DIR]`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from umtune.config import DEFAULT_DOMAINS
from umtune.data import ChoraleOptions, Dataset, render_chorales
from umtune.data.chorales import bach_corpus
from umtune.data.midi import end_time, score_notes, write_midi
from umtune.data.render import DEFAULT_SOUNDFONT, render_midi

TRAINING_SAMPLES_PER_SECOND = 20_000  # generous upper bound of training consumption (2 CPU cores)
BATCHES = [(12, 12000, 1), (32, 12000, 1), (32, 12000, 2), (2, 4000, 1)]  # count, length, world


def bench_fluidsynth(scratch: Path, sample_rate: int) -> tuple[float, float]:
    """(audio seconds, wall seconds) of FluidSynth rendering one whole chorale on the piano."""
    from music21 import converter

    piece = dict(bach_corpus())["bach/bwv10.7.mxl"]
    parts = score_notes(converter.parse(piece))
    midi = write_midi(scratch / "one.mid", parts, program=0)
    render_midi(midi, scratch / "warm.wav", soundfont=DEFAULT_SOUNDFONT,  # warm the page cache
                sample_rate=sample_rate, expected_seconds=end_time(parts))
    start = time.perf_counter()
    audio = render_midi(midi, scratch / "one.wav", soundfont=DEFAULT_SOUNDFONT,
                        sample_rate=sample_rate, expected_seconds=end_time(parts))
    return audio.shape[0] / sample_rate, time.perf_counter() - start


def bench_reads(ds: Dataset, count: int, length: int, world: int, seconds: float = 2.0
                ) -> float:
    """Samples per second one worker reads with `segments`, cycling through training domains."""
    rng = np.random.default_rng(0)
    done, batches, start = 0, 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        seg = ds.segments(ds.domains[batches % len(ds.domains)], "train", count, length, rng,
                          rank=0, world_size=world)
        done += seg.size
        batches += 1
    return done / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pieces", type=int, default=8, help="training pieces per domain")
    p.add_argument("--heldout", type=int, default=6)
    p.add_argument("--sample-rate", type=int, default=16000)
    p.add_argument("--keep", type=Path, default=None, help="write the dataset here and keep it")
    a = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        out = a.keep if a.keep is not None else tmp / "bach"
        fs_audio, fs_wall = bench_fluidsynth(tmp, a.sample_rate)
        start = time.perf_counter()
        render_chorales(out, ChoraleOptions(domains=DEFAULT_DOMAINS, sample_rate=a.sample_rate,
                                            pieces_per_domain=a.pieces,
                                            heldout_pieces=a.heldout),
                        force=True, progress=False)
        wall = time.perf_counter() - start
        ds = Dataset.open(out)
        audio = sum(e.duration for d in ds.domains + ds.unseen_domains
                    for s in ("train", "heldout", "notes") for e in ds.files(d, s))

        print(f"rendering ({a.sample_rate} Hz)")
        print(f"{'what':56} {'audio s':>9} {'wall s':>8} {'audio s / s':>12}")
        print(f"{'FluidSynth alone, one chorale (1 process)':56} {fs_audio:9.1f} {fs_wall:8.2f} "
              f"{fs_audio / fs_wall:12.0f}")
        what = (f"render_chorales: {len(DEFAULT_DOMAINS)} domains x {a.pieces} + "
                f"{a.heldout} held-out x {len(DEFAULT_DOMAINS) + 1} + notes")
        print(f"{what:56} {audio:9.1f} {wall:8.2f} {audio / wall:12.0f}")
        print()
        print(f"segment reads (Dataset.segments, memory-mapped int16; training consumes "
              f"<= {TRAINING_SAMPLES_PER_SECOND:,} samples/s)")
        print(f"{'batch':28} {'samples/s':>14} {'x training':>11}")
        worst = float("inf")
        for count, length, world in BATCHES:
            rate = bench_reads(ds, count, length, world)
            ratio = rate / TRAINING_SAMPLES_PER_SECOND
            worst = min(worst, ratio)
            label = f"{count} x {length}" + (f", rank 0 of {world}" if world > 1 else "")
            print(f"{label:28} {rate:14,.0f} {ratio:10.0f}x")
        print(f"\nslowest read path is {worst:.0f}x training consumption "
              f"({'OK' if worst >= 100 else 'TOO SLOW'}: required >= 100x)")


if __name__ == "__main__":
    main()
