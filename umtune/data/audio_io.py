"""Reading a user's audio file into clean mono samples at the dataset rate, or saying why not.

`load_audio` decodes WAV, FLAC, OGG (Vorbis, Opus), MP3, AIFF, CAF or AU with soundfile, mixes
down to mono, resamples with `torchaudio.functional.resample`, and checks the result. Every way
a file can be unusable is a `DatasetError` naming the file and what was expected: empty file, a
file whose bytes are not the format its extension claims (a text file named .wav), audio
soundfile cannot decode (corrupt), a WAV file cut short of the length its header declares
(libsndfile reads what is there without a word), a sample rate outside FILE_RATES (999,983 Hz
would need a 64 GB resampling kernel; 1 Hz is no audio), non-finite samples, float samples
beyond full scale (which would be clipped), silence, and a file shorter than one training
segment.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np
import soundfile as sf

from umtune.data.errors import DatasetError

# extension -> (format name, accepted leading bytes): the formats the bundled libsndfile
# decodes that music comes in. FLAC and MP3 may start with an ID3 tag; an MP3 without one
# starts with an MPEG audio frame's sync bits.
AUDIO_FORMATS = {
    ".wav": ("WAV", (b"RIFF", b"RIFX", b"RF64", b"BW64")),
    ".flac": ("FLAC", (b"fLaC", b"ID3")),
    ".ogg": ("OGG", (b"OggS",)),
    ".opus": ("OGG", (b"OggS",)),
    ".mp3": ("MP3", (b"ID3", b"\xff\xfb", b"\xff\xfa", b"\xff\xf3", b"\xff\xf2",
                     b"\xff\xe3", b"\xff\xe2")),
    ".aiff": ("AIFF", (b"FORM",)),
    ".aif": ("AIFF", (b"FORM",)),
    ".caf": ("CAF", (b"caff",)),
    ".au": ("AU", (b".snd",)),
}
SILENCE = 1e-4  # peak amplitude below which a file counts as silent (-80 dBFS)
FILE_RATES = (4000, 384000)  # Hz: the sample rates a file may declare (both included)
# torchaudio's resampler builds a (new/g) x (orig/g) kernel (g: the rates' gcd); above this many
# elements (256 MB of float32) a polyphase filter of length ~ max(orig, new) / g is used instead.
KERNEL_ELEMENTS = 2**26


AUDIO_NAMES = ", ".join(dict.fromkeys(AUDIO_FORMATS))  # ".wav, .flac, ..." for messages


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


def _wav_cut(path: Path) -> tuple[int, int] | None:
    """(declared, present) bytes of a RIFF WAV's data chunk when the file ends inside it; None
    when the file is whole, or keeps its sizes elsewhere (RF64) or leaves them open (0, ~0)."""
    with open(path, "rb") as f:
        head = f.read(12)
        if head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
            return None
        order = "<" if head[:4] == b"RIFF" else ">"
        size, pos = path.stat().st_size, 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk, length = struct.unpack(f"{order}4sI", f.read(8))
            if chunk == b"data":
                present = size - pos - 8
                unknown = length in (0, 0xFFFFFFFF)
                return None if unknown or length <= present else (length, present)
            pos += 8 + length + (length & 1)
    return None


def resample(audio: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """Mono float32 audio from `orig_rate` to `new_rate` with torchaudio (band-limited sinc);
    rates with a small common divisor (44,101 Hz to 16 kHz) with scipy's polyphase filter,
    whose cost does not grow with the product of the two rates."""
    if orig_rate == new_rate:
        return audio
    g = math.gcd(orig_rate, new_rate)
    if (orig_rate // g) * (new_rate // g) > KERNEL_ELEMENTS:
        from scipy.signal import resample_poly

        return resample_poly(audio, new_rate // g, orig_rate // g).astype(np.float32)
    import torch
    from torchaudio.functional import resample as ta_resample

    return ta_resample(torch.from_numpy(np.ascontiguousarray(audio)), orig_rate,
                       new_rate).numpy()


def load_audio(path: Path | str, sample_rate: int, *, min_seconds: float = 0.0) -> np.ndarray:
    """Decode, downmix, resample and check one file; float32 mono samples in [-1, 1]."""
    path = Path(path)
    _sniff(path)
    if (cut := _wav_cut(path)) is not None:
        raise DatasetError(f"{path}: truncated WAV, its data chunk declares {cut[0]:,} bytes but "
                           f"the file holds {cut[1]:,}; expected a complete file")
    try:
        info = sf.info(path)
        if not FILE_RATES[0] <= info.samplerate <= FILE_RATES[1]:
            raise DatasetError(f"{path}: declares a sample rate of {info.samplerate:,} Hz; "
                               f"expected {FILE_RATES[0]:,} to {FILE_RATES[1]:,} Hz")
        audio, rate = sf.read(path, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError, EOFError) as e:
        if isinstance(e, DatasetError):
            raise
        raise DatasetError(f"{path}: corrupt audio, soundfile cannot decode it ({e}); expected "
                           f"a readable {AUDIO_FORMATS[path.suffix.lower()][0]} file") from e
    if audio.shape[0] == 0:
        raise DatasetError(f"{path}: no audio samples (0 frames); expected audio")
    if not np.isfinite(audio).all():
        raise DatasetError(f"{path}: corrupt audio (NaN or infinite samples); expected finite "
                           f"samples")
    peak = float(np.abs(audio).max())
    if peak > 1.0:  # only float formats can: integer PCM is full scale at most
        raise DatasetError(f"{path}: float samples peak at {peak:.3g}, beyond full scale (1.0), "
                           f"and would be clipped; expected samples in [-1, 1] (scale the file "
                           f"by 1/{peak:.3g} first)")
    # The resampler's ringing can overshoot full scale by a little: that much is clipped.
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
