"""Translating audio files on disk: the edge between `umtune translate` and `Translator`.

Reads every input (files, or folders of audio files) with the data layer's checked loader, so a
bad file gets the same clear error as at import; writes each translation atomically as
`OUT/<name>_to_<domain>.wav` at the model's sample rate. Two inputs of the same name (a/x.wav
and b/x.wav) are refused rather than one silently overwriting the other, and so is an output
that would replace an input or a file that `umtune translate` did not write.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import soundfile as sf

from umtune.data.audio_io import AUDIO_NAMES, is_audio_name, load_audio
from umtune.storage import staged
from umtune.trainable.generate import DEFAULT_SAMPLING, Sampling, load_translator


def expand_inputs(inputs: Sequence[Path]) -> list[Path]:
    """Files as given, folders replaced by the audio files they hold (sorted)."""
    files: list[Path] = []
    for p in map(Path, inputs):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and is_audio_name(f))
            if not found:
                raise ValueError(f"{p}: folder holds no audio files ({AUDIO_NAMES})")
            files += found
        elif p.is_file():
            if not is_audio_name(p):
                raise ValueError(f"{p}: not an audio file name; expected one of {AUDIO_NAMES}")
            files.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    return files


def translate_files(checkpoint: Path, inputs: Sequence[Path], to: str, out: Path,
                    sampling: Sampling = DEFAULT_SAMPLING, *, progress: bool = True) -> list[Path]:
    """Translate every input into domain `to`; all clips are generated together as one batch.

    Everything that can be checked is checked before the (long) generation starts: the inputs,
    that no two inputs would write the same output, that no output would replace an input or a
    file this command did not write, that `out` can be written and holds the outputs' names
    and sizes, the checkpoint and the target domain, and every input's audio (`sampling` checks
    its own numbers). Each output is then written on its own (atomically): if one fails, the
    others are kept and the error names the file.
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
    _refuse_overwrites(files, targets)
    translator = load_translator(checkpoint)
    if to not in translator.domains:
        raise ValueError(f"unknown target domain {to!r}: checkpoint {checkpoint} has "
                         f"{', '.join(translator.domains)}")
    sr = translator.sample_rate
    clips = [load_audio(f, sr) for f in files]
    _check_room(out, targets, sum(len(c) for c in clips) * 2 + WAV_HEADER * len(clips))
    outputs = translator.translate_batch(clips, sr, to, sampling, progress=progress)
    failed = []
    for target, audio in zip(targets, outputs, strict=True):
        try:
            with staged(target) as tmp, sf.SoundFile(tmp, "w", sr, 1, "PCM_16",
                                                     format="WAV") as wav:
                wav.software = SOFTWARE
                wav.write(audio.numpy())
        except OSError as e:
            failed.append((target, e))
    if failed:
        target, e = failed[0]
        kept = len(targets) - len(failed)
        raise OSError(f"{target}: cannot write the translation ({e.strerror or e}); "
                      f"{len(failed)} of {len(targets)} not written, {kept} written to {out}")
    return targets


SOFTWARE = "umtune translate"  # in every output's WAV header: a rerun may replace its own files
WAV_HEADER = 256  # bytes, with the software tag


def _refuse_overwrites(inputs: Sequence[Path], targets: Sequence[Path]) -> None:
    """No output may replace an input, nor an existing file that an earlier `umtune translate`
    did not write."""
    sources = {f.resolve() for f in inputs}
    for target in targets:
        if target.resolve() in sources:
            raise ValueError(f"output {target} is also an input; expected outputs apart from "
                             "the inputs (choose another -o)")
        if target.exists() or target.is_symlink():
            if not (target.is_file() and _written_here(target)):
                raise ValueError(f"output {target} exists and was not written by umtune "
                                 "translate; expected a new file (choose another -o, or move it)")


def _written_here(path: Path) -> bool:
    try:
        with sf.SoundFile(path) as f:
            return f.software.startswith(SOFTWARE)
    except (sf.LibsndfileError, OSError, RuntimeError):
        return False


def _check_room(folder: Path, targets: Sequence[Path], size: int) -> None:
    """Every output's name fits the file system, and the folder has room for `size` bytes."""
    longest = os.pathconf(folder, "PC_NAME_MAX")
    for target in targets:
        if len(os.fsencode(f".{target.name}.{os.getpid()}.00000000.tmp")) > longest:
            raise ValueError(f"output {target}: the name is too long for {folder}'s file "
                             f"system (at most {longest} bytes, with the temporary suffix); "
                             "expected a shorter input name")
    stats = os.statvfs(folder)
    free = stats.f_bavail * stats.f_frsize
    if free < size:
        raise OSError(f"output folder {folder}: {free / 1e6:.1f} MB free, the translations need "
                      f"{size / 1e6:.1f} MB; expected room for them")


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
