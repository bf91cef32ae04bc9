"""The README's listening figure: one held-out clip translated from a source into every domain,
each domain's own reconstruction, and the true renderings, as spectrograms and wav files;
each label gives the output's chroma similarity to the truth.

    .venv/bin/python docs/spectrograms.py CHECKPOINT --out docs/img/cpu-translations.png \\
        [--data data/lines8k] [--clip 0] [--seconds 2] [--source piano] [--wavs DIR]

Rows: the source clip, its unseen-domain version, then per domain the reconstruction (that
domain's clip through its own decoder), the translation from the source and the truth. Each
spectrogram is 0 to the Nyquist frequency (bottom to top) over the clip's seconds, in dB from
-80 (black) to the clip's loudest (white).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.transforms as T
from PIL import Image, ImageDraw

from umtune.analysis.evaluate import select_clips
from umtune.analysis.features import chroma_similarity
from umtune.data import Dataset
from umtune.storage import staged
from umtune.trainable.generate import DEFAULT_SAMPLING, load_translator

ROW_HEIGHT, LABEL_WIDTH, DB_RANGE = 96, 230, 80.0


def spectrogram_image(audio: np.ndarray, sample_rate: int, width: int) -> Image.Image:
    """A grey-scale spectrogram (frequency up, time right), resized to width x ROW_HEIGHT."""
    spec = T.Spectrogram(n_fft=512, hop_length=64)(torch.from_numpy(audio).float())
    db = 10 * torch.log10(spec.clamp_min(1e-12))
    db = ((db - db.max() + DB_RANGE) / DB_RANGE).clamp(0, 1).flip(0)
    pixels = (255 * db.sqrt()).to(torch.uint8).numpy()  # sqrt: the quiet partials show
    return Image.fromarray(pixels, "L").resize((width, ROW_HEIGHT))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("--out", type=Path, required=True, help="the image (.png or .jpg)")
    p.add_argument("--data", help="dataset (default: the checkpoint's)")
    p.add_argument("--clip", type=int, default=0, help="which of the seeded held-out clips")
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--source", default="piano")
    p.add_argument("--width", type=int, default=900)
    p.add_argument("--wavs", type=Path, help="also write every row as a wav file here")
    args = p.parse_args()
    translator = load_translator(args.checkpoint)
    data = Dataset.open(args.data or translator.config.data.path)
    sr, domains = data.sample_rate, translator.domains
    unseen = [d for d in data.unseen_domains if data.files(d, "heldout")]
    clip = select_clips(data, (*domains, *unseen), args.clip + 1, round(args.seconds * sr),
                        DEFAULT_SAMPLING.seed)[args.clip]
    jobs = {d: [clip.audio[d], clip.audio[args.source]] for d in domains}
    out = translator.translate_many(jobs, sr, DEFAULT_SAMPLING, progress=True)
    rows = [(f"{args.source} (source)", args.source, clip.audio[args.source])]
    rows += [(f"{u} (unseen)", u, clip.audio[u]) for u in unseen]
    for d in domains:
        recon, translated = (o.numpy() for o in out[d])
        truth = torch.from_numpy(clip.audio[d])
        score = {k: chroma_similarity(torch.from_numpy(a), truth, sr).item()
                 for k, a in (("recon", recon), ("translation", translated))}
        rows += [(f"{d} reconstruction {score['recon']:.2f}", f"{d}_reconstruction", recon),
                 (f"{args.source} -> {d} {score['translation']:.2f}", f"{args.source}_to_{d}",
                  translated),
                 (f"{d} truth", f"{d}_truth", clip.audio[d])]
    image = Image.new("L", (LABEL_WIDTH + args.width, ROW_HEIGHT * len(rows)), 255)
    draw = ImageDraw.Draw(image)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for i, (label, name, audio) in enumerate(rows):
        image.paste(spectrogram_image(audio, sr, args.width), (LABEL_WIDTH, i * ROW_HEIGHT))
        draw.text((6, i * ROW_HEIGHT + ROW_HEIGHT // 2 - 6), label, fill=0)
        if args.wavs:
            args.wavs.mkdir(parents=True, exist_ok=True)
            with staged(args.wavs / f"{name}.wav") as tmp:
                sf.write(tmp, np.clip(audio, -1, 1), sr, subtype="PCM_16", format="WAV")
    with staged(args.out) as tmp:
        image.save(tmp, format="JPEG" if args.out.suffix in (".jpg", ".jpeg") else "PNG")
    print(f"{clip.name}: {args.out}" + (f", wav files in {args.wavs}" if args.wavs else ""))


if __name__ == "__main__":
    main()
