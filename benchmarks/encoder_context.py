"""Does the encoder see in translation what it saw in training? The decoders' CE both ways.

Training encodes segments of `data.segment_samples` alone (zero padding beyond them); a
translation could encode the whole clip at once, so that every latent frame also sees audio the
encoder never saw in training when its field is longer than the segment (`cpu`: 4,097 samples
against 4,000). This prints, per domain, each decoder's teacher-forced CE on the same held-out
clips with latents from training-size windows, from the whole clip, and with another clip's
latent (the latent gain), in the training precision (or --precision: generation runs fp32):

    .venv/bin/python benchmarks/encoder_context.py runs/base60 --seconds 2 --clips 4
"""

from __future__ import annotations

import argparse

import torch

from umtune.analysis.evaluate import select_clips
from umtune.data import Dataset
from umtune.trainable import precision
from umtune.trainable.checkpoint import load_model
from umtune.trainable.model import audio_to_codes, encoder_input, swapped_latent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("--data", default=None, help="dataset (default: the run's)")
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--clips", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", choices=("fp32", "bf16"),
                   help="autocast precision of the measurement (default: the run's)")
    args = p.parse_args()
    model, cfg = load_model(args.checkpoint)
    data = Dataset.open(args.data or cfg.data.path)
    domains, pool = cfg.model.domains, cfg.model.encoder.pool
    length = round(args.seconds * data.sample_rate / pool) * pool
    clips = select_clips(data, domains, args.clips, length, args.seed)
    audio = torch.stack([torch.from_numpy(c.audio[d]) for d in domains for c in clips])
    codes = audio_to_codes(audio, cfg.model)
    inputs = encoder_input(audio, cfg.model.classes)
    chosen = args.precision or precision.resolve(cfg.train.precision).precision
    print(f"{args.clips} clips x {length / data.sample_rate:.2f} s per domain, training segment "
          f"{cfg.data.segment_samples} samples, precision {chosen}")
    rows = {}
    with torch.no_grad(), precision.autocast(chosen, "cpu"):
        latents = {"windows": model.encoder(inputs, window=cfg.data.segment_samples),
                   "whole clip": model.encoder(inputs)}
        for name, z in latents.items():
            rows[name] = model.autoencoder.sample_ce(z, codes).unflatten(0, (len(domains), -1))
        rows["other clip"] = model.autoencoder.sample_ce(
            swapped_latent(latents["windows"], len(domains)), codes).unflatten(
                0, (len(domains), -1))
    print(f"{'latent':12} " + " ".join(f"{d:>8}" for d in domains) + f" {'mean':>8}")
    for name, ce in rows.items():
        per_domain = ce.mean(dim=(1, 2))
        print(f"{name:12} " + " ".join(f"{v:8.4f}" for v in per_domain.tolist())
              + f" {per_domain.mean().item():8.4f}")


if __name__ == "__main__":
    main()
