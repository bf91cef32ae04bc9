"""Generation speed: cached (one step per layer per sample) vs naive (a full pass over the
receptive field per sample), through PyTorch's step (`torch`) and the compiled one (`fused`;
`generate` picks it up to FUSED_MAX_ROWS rows on the CPU), for the `tiny` and `paper` presets,
with the real-time factor;
with `--official`, the paper's official Python generator at the `paper` preset's sizes, batch 1,
in the same run; then what translation costs: a clip translated into every domain with the
decoders stepped one after another vs together (`DecoderStack`), and chunks entered through a
lead-in vs restarting from silence (the price of no false attacks).

    .venv/bin/python benchmarks/generate.py [--official music-translation/src]

`--official` takes the `src` folder of a checkout of facebookresearch/music-translation (its
`wavenet.py` and `wavenet_generator.py` are imported from there, not copied here).
"""

from __future__ import annotations

import argparse
import sys
import time
from argparse import Namespace
from pathlib import Path

import torch

from umtune.config import preset
from umtune.trainable.generate import Sampling, Translator, generate
from umtune.trainable.model import UniversalTranslator, decoder_receptive_field


def cached_rate(model: UniversalTranslator, pool: int, batch: int, frames: int,
                backend: str = "auto") -> float:
    """Samples/s of cached generation, all rows together, on the model's device."""
    decoder = next(iter(model.decoders.values()))
    z = torch.randn(batch, model.cfg.encoder.latent_channels, frames,
                    device=next(model.parameters()).device)
    start = time.perf_counter()
    generate(decoder, z, pool, backend=backend).cpu()  # .cpu() waits for the GPU
    return batch * frames * pool / (time.perf_counter() - start)


@torch.no_grad()
def naive_rate(model: UniversalTranslator, pool: int, reps: int = 2) -> float:
    """One sample costs one teacher-forced pass over a receptive-field-long window."""
    decoder = next(iter(model.decoders.values()))
    frames = -(-decoder_receptive_field(model.cfg.decoder) // pool)
    z = torch.randn(1, model.cfg.encoder.latent_channels, frames)
    codes = torch.randint(0, 256, (1, frames * pool))
    decoder(codes, z)
    start = time.perf_counter()
    for _ in range(reps):
        decoder(codes, z)
    return reps / (time.perf_counter() - start)


@torch.no_grad()
def official_rate(src: Path, name: str, frames: int) -> float:
    """Samples/s of the official `WavenetGenerator` at batch 1, its WaveNet built with the
    preset's decoder sizes (the official decoder has no separate gate width: 2 x residual)."""
    cfg = preset(name, ("a", "b")).model
    if cfg.decoder.gate_channels != 2 * cfg.decoder.residual_channels:
        raise SystemExit(f"--official: preset {name!r} has gate_channels != 2 x residual")
    sys.path.insert(0, str(src))
    from wavenet import WaveNet  # the official code
    from wavenet_generator import WavenetGenerator

    torch.manual_seed(0)
    wavenet = WaveNet(Namespace(blocks=cfg.decoder.blocks, layers=cfg.decoder.layers_per_block,
                                kernel_size=cfg.decoder.kernel_size,
                                residual_channels=cfg.decoder.residual_channels,
                                skip_channels=cfg.decoder.skip_channels,
                                latent_d=cfg.encoder.latent_channels))
    pool = cfg.encoder.pool
    generator = WavenetGenerator(wavenet, batch_size=1, cond_repeat=pool)
    z = torch.randn(1, cfg.encoder.latent_channels, frames)
    start = time.perf_counter()
    generator.generate(z)
    return frames * pool / (time.perf_counter() - start)


def translation_seconds(translator: Translator, seconds: float, sampling: Sampling,
                        stacked: bool) -> float:
    """Wall time to translate one clip of noise into every domain of the translator."""
    clip = torch.rand(round(seconds * translator.sample_rate)) - 0.5
    sr = translator.sample_rate
    start = time.perf_counter()
    if stacked:
        translator.translate_many({d: [clip] for d in translator.domains}, sr, sampling)
    else:
        for d in translator.domains:
            translator.translate_batch([clip], sr, d, sampling)
    return time.perf_counter() - start


def translation_table(name: str, seconds: float, chunk: float, lead: float) -> None:
    cfg = preset(name)
    torch.manual_seed(0)
    translator = Translator(UniversalTranslator(cfg.model).eval(), cfg)
    k = len(cfg.model.domains)
    print(f"\ntranslating a {seconds:g} s clip into all {k} domains, `{name}` preset, "
          f"{chunk:g} s chunks")
    print(f"{'decoders':9} {'lead-in':>8} {'seconds':>8} {'x real time':>11}")
    times = {}
    for stacked, lead_s in ((False, lead), (True, 0.0), (True, lead)):
        t = translation_seconds(translator, seconds, Sampling(chunk_seconds=chunk,
                                                             lead_seconds=lead_s), stacked)
        times[stacked, lead_s] = t
        print(f"{'stacked' if stacked else 'one by one':9} {lead_s:7.2f}s {t:8.1f} "
              f"{k * seconds / t:11.2f}")
    print(f"stacked vs one by one: {times[False, lead] / times[True, lead]:.1f}x faster; "
          f"lead-in {lead:g} s costs {times[True, lead] / times[True, 0.0]:.2f}x "
          f"(samples: {(chunk + lead) / chunk:.2f}x)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", default="tiny,paper")
    p.add_argument("--batches", default="1,16,64")
    p.add_argument("--seconds", type=float, default=0.1, help="audio generated per batch row")
    p.add_argument("--clip-seconds", type=float, default=10.0,
                   help="the translated clip (0: skip the translation table)")
    p.add_argument("--translate-preset", default="cpu")
    p.add_argument("--official", type=Path,
                   help="src folder of the official code: time its generator in this run")
    args = p.parse_args()
    sr = 16000
    print(f"threads: {torch.get_num_threads()}; real-time factor = generated samples/s / {sr}")
    print(f"{'preset':7} {'mode':7} {'batch':>5} {'samples/s':>10} {'x real time':>11} "
          f"{'cached/naive':>12}")
    batch_one = {}
    for name in args.presets.split(","):
        cfg = preset(name, ("a", "b"))
        torch.manual_seed(0)
        model = UniversalTranslator(cfg.model).eval()
        pool = cfg.model.encoder.pool
        naive = naive_rate(model, pool)
        print(f"{name:7} {'naive':7} {1:5d} {naive:10.1f} {naive / sr:11.4f} {'':>12}")
        frames = max(1, round(args.seconds * sr / pool))
        for batch in map(int, args.batches.split(",")):
            for backend in ("torch", "fused"):
                rate = cached_rate(model, pool, batch, frames, backend)
                if backend == "fused":
                    batch_one.setdefault(name, rate)
                print(f"{name:7} {backend:7} {batch:5d} {rate:10.0f} {rate / sr:11.3f} "
                      f"{rate / naive:12.0f}")
    if args.official:
        official = official_rate(args.official, "paper", frames=1)
        print(f"{'paper':7} {'official':8} {1:4d} {official:10.0f} {official / sr:11.3f}   "
              f"(the official WavenetGenerator, {args.official})")
        if "paper" in batch_one:
            print(f"umtune fused / official at batch 1, paper sizes: "
                  f"{batch_one['paper'] / official:.1f}x")
    if args.clip_seconds:
        translation_table(args.translate_preset, args.clip_seconds, chunk=0.5, lead=0.1)


if __name__ == "__main__":
    main()
