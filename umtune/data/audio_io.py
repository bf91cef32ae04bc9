"""Reading a user's audio file into clean mono samples at the dataset rate, or saying why not.

`load_audio` decodes WAV, FLAC or OGG with soundfile, mixes down to mono, resamples with
`torchaudio.functional.resample`, and checks the result. Every way a file can be unusable is a
`DatasetError` naming the file and what was expected: empty file, a file whose bytes are not the
format its extension claims (a text file named .wav), audio soundfile cannot decode (corrupt),
non-finite samples, silence, and a file shorter than one training segment.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from umtune.data.errors import DatasetError

# extension -> (format name, accepted leading bytes). FLAC may start with an ID3 tag.
AUDIO_FORMATS = {
    ".wav": ("WAV", (b"RIFF", b"RIFX", b"RF64", b"BW64")),
    ".flac": ("FLAC", (b"fLaC", b"ID3")),
    ".ogg": ("OGG", (b"OggS",)),
}
SILENCE = 1e-4  # peak amplitude below which a file counts as silent (-80 dBFS)


def is_audio_name(path: Path) -> bool:
    """Whether `path` has one of the audio extensions import reads."""
    return path.suffix.lower() in AUDIO_FORMATS


def _sniff(path: Path) -> None:
    """Fail if the file is empty or its first bytes are not those of its extension's format."""
    size = path.stat().st_size
    if size == 0:
        raise DatasetError(f"{path}: empty file (0 bytes); expected audio")
    name, magics = AUDIO_FORMATS[path.suffix.lower()]
    with open(path, "rb") as f:
        head = f.read(12)
    if not any(head.startswith(m) for m in magics):
        raise DatasetError(f"{path}: not {name} audio (starts with {head[:8]!r}); expected "
                           f"{name} audio, as its {path.suffix} extension says")


def resample(audio: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """Mono float32 audio from `orig_rate` to `new_rate` with torchaudio (band-limited sinc)."""
    if orig_rate == new_rate:
        return audio
    import torch
    from torchaudio.functional import resample as ta_resample

    return ta_resample(torch.from_numpy(np.ascontiguousarray(audio)), orig_rate,
                       new_rate).numpy()


def load_audio(path: Path | str, sample_rate: int, *, min_seconds: float = 0.0) -> np.ndarray:
    """Decode, downmix, resample and check one file; float32 mono samples in [-1, 1]."""
    path = Path(path)
    _sniff(path)
    try:
        audio, rate = sf.read(path, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError, EOFError) as e:
        raise DatasetError(f"{path}: corrupt audio, soundfile cannot decode it ({e}); expected "
                           f"a readable {AUDIO_FORMATS[path.suffix.lower()][0]} file") from e
    if audio.shape[0] == 0:
        raise DatasetError(f"{path}: no audio samples (0 frames); expected audio")
    if not np.isfinite(audio).all():
        raise DatasetError(f"{path}: corrupt audio (NaN or infinite samples); expected finite "
                           f"samples")
    audio = np.clip(resample(audio.mean(axis=1), rate, sample_rate), -1.0, 1.0)
    peak = float(np.abs(audio).max())
    if peak < SILENCE:
        raise DatasetError(f"{path}: silent (peak amplitude {peak:.1e}); expected audible audio "
                           f"(peak at least {SILENCE:.0e})")
    seconds = audio.shape[0] / sample_rate
    if seconds < min_seconds:
        raise DatasetError(f"{path}: {seconds:.2f} s long; expected at least {min_seconds:g} s "
                           f"(one training segment; see min_seconds / --min-seconds)")
    return audio.astype(np.float32, copy=False)
