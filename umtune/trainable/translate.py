"""Translating audio files on disk: the edge between `umtune translate` and `Translator`.

Reads every input (files, or folders of audio files) with the data layer's checked loader, so a
bad file gets the same clear error as at import; writes each translation atomically as
`OUT/<name>_to_<domain>.wav` at the model's sample rate. Two inputs of the same name (a/x.wav
and b/x.wav) are refused rather than one silently overwriting the other.
"""

from __future__ import annotations

import os
import tempfile
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
    """Translate every input into domain `to`; all clips are generated together as one batch.

    Everything that can be checked is checked before the (long) generation starts: the inputs,
    that no two inputs would write the same output, that `out` can be written, the checkpoint
    and the target domain, and every input's audio (`sampling` checks its own numbers).
    """
    out = Path(out)
    files = expand_inputs(inputs)
    targets = [out / f"{f.stem}_to_{to}.wav" for f in files]
    first: dict[Path, Path] = {}
    for f, target in zip(files, targets, strict=True):
        if first.setdefault(target, f) != f:
            raise ValueError(f"inputs {first[target]} and {f} would both be written to {target}; "
                             "expected inputs with distinct file names (translate them "
                             "separately, into different -o folders)")
    _check_writable(out)
    translator = load_translator(checkpoint)
    if to not in translator.domains:
        raise ValueError(f"unknown target domain {to!r}: checkpoint {checkpoint} has "
                         f"{', '.join(translator.domains)}")
    sr = translator.sample_rate
    clips = [load_audio(f, sr) for f in files]
    outputs = translator.translate_batch(clips, sr, to, sampling, progress=progress)
    for target, audio in zip(targets, outputs, strict=True):
        tmp = target.with_name(f".{target.name}.partial")
        sf.write(tmp, audio.numpy(), sr, subtype="PCM_16", format="WAV")
        os.replace(tmp, target)
    return targets


def _check_writable(folder: Path) -> None:
    """Create `folder` if need be and write a probe file in it; a ValueError naming the folder
    when either fails."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise ValueError(f"output folder {folder}: cannot write there ({e.strerror or e}); "
                         "expected a folder this user can write") from None
