"""What the leading indicators cost at an epoch end, one by one: every trial pays it every epoch.

Times the pitch probe, the note latent gain and the reconstruction chroma (analysis/
indicators.py), in the order an epoch end runs them, on a freshly initialised model of the
preset (their cost does not depend on the weights).

    .venv/bin/python benchmarks/indicators.py --data data/bach [--preset tiny] [--calls 3]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from umtune.analysis.indicators import LeadingIndicators, reconstruction_chroma
from umtune.analysis.latent import note_latent_gain, pitch_probe_accuracy
from umtune.config import overrides, preset
from umtune.data import Dataset
from umtune.trainable.model import UniversalTranslator


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="data/bach")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--calls", type=int, default=3)
    args = p.parse_args()
    data = Dataset.open(args.data)
    cfg = overrides(preset(args.preset, data.domains), [f"data.path={Path(args.data).resolve()}"])
    torch.manual_seed(0)
    model = UniversalTranslator(cfg.model).eval()
    clips = LeadingIndicators(cfg).held_out_clips()
    parts = {  # in the order an epoch end runs them
        "pitch probe": lambda: pitch_probe_accuracy(model, data, cfg.model.domains),
        "note latent gain": lambda: note_latent_gain(model, data, cfg.model.domains),
        "reconstruction chroma": lambda: reconstruction_chroma(model, cfg, clips),
    }
    times = {name: [] for name in parts}
    for _ in range(args.calls):
        for name, call in parts.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    print(f"{args.preset} preset, {torch.get_num_threads()} threads, {args.data}; seconds per "
          f"epoch end (the first also reads the note set, and glibc's heap is still cold: it "
          f"serves large tensors by mmap until some are freed)")
    print(f"{'indicator':24} " + " ".join(f"{f'call {i + 1}':>7}" for i in range(args.calls)))
    for name, values in times.items():
        print(f"{name:24} " + " ".join(f"{t:7.2f}" for t in values))
    print(f"{'all':24} " + " ".join(f"{sum(t):7.2f}" for t in zip(*times.values(),
                                                                  strict=True)))


if __name__ == "__main__":
    main()
