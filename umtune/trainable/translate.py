"""Translating audio files on disk: the edge between `umtune translate` and `Translator`.

Reads every input (files, or folders of audio files) with the data layer's checked loader, so a
bad file gets the same clear error as at import; writes each translation atomically as
`OUT/<name>_to_<domain>.wav` at the model's sample rate.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import soundfile as sf

from umtune.data.audio_io import is_audio_name, load_audio
from umtune.trainable.generate import DEFAULT_SAMPLING, Sampling, load_translator


def expand_inputs(inputs: Sequence[Path]) -> list[Path]:
    """Files as given, folders replaced by the audio files they hold (sorted)."""
    files: list[Path] = []
    for p in map(Path, inputs):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and is_audio_name(f))
            if not found:
                raise ValueError(f"{p}: folder holds no audio files (.wav, .flac, .ogg)")
            files += found
        elif p.is_file():
            if not is_audio_name(p):
                raise ValueError(f"{p}: not an audio file name; expected .wav, .flac or .ogg")
            files.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    return files


def translate_files(checkpoint: Path, inputs: Sequence[Path], to: str, out: Path,
                    sampling: Sampling = DEFAULT_SAMPLING, *, progress: bool = True) -> list[Path]:
    """Translate every input into domain `to`; all clips are generated together as one batch."""
    translator = load_translator(checkpoint)
    if to not in translator.domains:
        raise ValueError(f"unknown target domain {to!r}: checkpoint {checkpoint} has "
                         f"{', '.join(translator.domains)}")
    files = expand_inputs(inputs)
    sr = translator.sample_rate
    clips = [load_audio(f, sr) for f in files]
    outputs = translator.translate_batch(clips, sr, to, sampling, progress=progress)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for f, audio in zip(files, outputs, strict=True):
        target = out / f"{f.stem}_to_{to}.wav"
        tmp = target.with_name(f".{target.name}.partial")
        sf.write(tmp, audio.numpy(), sr, subtype="PCM_16", format="WAV")
        os.replace(tmp, target)
        written.append(target)
    return written
