"""How far generation from the decoders' own past falls behind generation from the true past.

Each domain's decoder reconstructs held-out clips of its own domain (the clip's own latent)
in four ways, and each is scored as `umtune evaluate` scores a translation: the log-mel
distance to the truth and the gain over the identity baseline (1 - distance / the distance of
the same notes on the other domains' renderings to the truth):

- teacher-forced: at every sample, the decoder given the true past; written are its expected
  value (`mean`) and a draw at the default temperature (`draw`), each sample alone;
- the same with another clip's latent (`wrong latent`): what the true past gives without the
  notes, the control that says how much of the teacher-forced figure is the latent's;
- free-running: the default generation (`umtune translate` into the clip's own domain);
- the truth through 8-bit mu-law: what the quantisation alone leaves.

    .venv/bin/python docs/free_running.py CHECKPOINT [--clips N] [--data data/lines8k]

Clips are those `umtune evaluate --clips N` picks (seed 0), one second each.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from umtune.analysis.evaluate import select_clips
from umtune.analysis.features import logmel_distance
from umtune.data import Dataset
from umtune.trainable.generate import DEFAULT_SAMPLING, Sampling, load_translator
from umtune.trainable.model import audio_to_codes, codes_to_audio, mu_law_decode


def teacher_forced(logits: torch.Tensor, levels: torch.Tensor, temperature: float,
                   generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (B, T, classes) -> each sample's expected value and one draw (B, T)."""
    gumbel = -torch.empty_like(logits).exponential_(generator=generator).log()
    return logits.softmax(-1) @ levels, levels[(logits / temperature + gumbel).argmax(-1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--clips", type=int, default=2)
    parser.add_argument("--data", default="data/lines8k")
    args = parser.parse_args()
    translator = load_translator(args.checkpoint)
    cfg, sr = translator.config, translator.sample_rate
    domains = cfg.model.domains
    clips = select_clips(Dataset.open(args.data), domains, args.clips, sr, seed=0)
    levels = mu_law_decode(torch.arange(cfg.model.classes), cfg.model.classes)
    generator = torch.Generator().manual_seed(0)
    t = DEFAULT_SAMPLING.temperature
    rows = {}
    for d in domains:
        truth = torch.tensor(np.stack([c.audio[d] for c in clips]), dtype=torch.float32)
        identity = torch.stack([logmel_distance(torch.tensor(np.stack([c.audio[o] for c in clips]),
                                                             dtype=torch.float32), truth, sr)
                                for o in domains if o != d]).mean(0)
        with torch.no_grad():
            z = translator.model.encode(truth, window=cfg.data.segment_samples)
            codes = audio_to_codes(truth, cfg.model)
            decoder = translator.model.decoders[d]
            right = decoder(codes, z).transpose(1, 2).float()
            wrong = decoder(codes, z.roll(1, 0)).transpose(1, 2).float()
            outputs = dict(zip(("teacher-forced mean", f"teacher-forced draw (T {t})"),
                               teacher_forced(right, levels, t, generator), strict=True))
            outputs.update(zip(("wrong latent: mean", f"wrong latent: draw (T {t})"),
                               teacher_forced(wrong, levels, t, generator), strict=True))
            outputs[f"free-running ({DEFAULT_SAMPLING.emit}, T {t})"] = torch.stack(
                translator.translate_batch(list(truth), sr, d))
            outputs[f"free-running (draws, T {t})"] = torch.stack(
                translator.translate_batch(list(truth), sr, d, Sampling(emit="sample")))
            outputs["8-bit mu-law copy"] = codes_to_audio(codes, cfg.model)
        for name, audio in outputs.items():
            distance = logmel_distance(audio, truth, sr)
            rows.setdefault(name, {})[d] = (distance.mean().item(),
                                           (1 - distance / identity).mean().item())
        rows.setdefault("identity (other domains)", {})[d] = (identity.mean().item(), 0.0)
    print(f"{args.checkpoint}: {args.clips} clip(s) x 1 s per domain; gain (distance dB)\n")
    print("| reconstruction | " + " | ".join(domains) + " | mean |")
    print("|---" * (len(domains) + 2) + "|")
    for name, by_domain in rows.items():
        cells = [f"{g:+.3f} ({dist:.1f})" for dist, g in by_domain.values()]
        mean_d = np.mean([v[0] for v in by_domain.values()])
        mean_g = np.mean([v[1] for v in by_domain.values()])
        print(f"| {name} | " + " | ".join(cells) + f" | **{mean_g:+.3f}** ({mean_d:.1f}) |")


if __name__ == "__main__":
    main()
