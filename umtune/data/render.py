"""FluidSynth: render a MIDI file to mono audio at the dataset's sample rate.

The `fluidsynth` command line (Debian package `fluidsynth`) renders faster than real time with a
General MIDI SoundFont (default: FluidR3_GM from `fluid-soundfont-gm`). Each render runs as a
subprocess with a time limit and a bound on the size of the file it writes, so a malformed MIDI
file (a note that never ends) fails fast instead of filling the disk. Reverb and chorus are off:
the audio is dry, deterministic, and its pitch is easy to verify.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from umtune.data.errors import DatasetError

DEFAULT_SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
GAIN = 0.5  # FluidSynth master gain; output is float, peak-normalised afterwards, never clipped


def fluidsynth_binary() -> str:
    """Path of the `fluidsynth` executable, or a DatasetError saying how to install it."""
    found = shutil.which("fluidsynth")
    if found is None:
        raise DatasetError("fluidsynth: not found on PATH; expected the FluidSynth command line "
                           "(Debian/Ubuntu: apt-get install fluidsynth fluid-soundfont-gm)")
    return found


def fluidsynth_version() -> str:
    """The FluidSynth version string, e.g. "2.3.1" (recorded in the manifest's provenance)."""
    out = subprocess.run([fluidsynth_binary(), "--version"], capture_output=True, text=True,
                         timeout=30).stdout
    match = re.search(r"version\s+(\S+)", out)
    return match.group(1) if match else out.strip()


def check_soundfont(path: Path | str | None) -> Path:
    """The SoundFont to use (default FluidR3_GM), checked to exist and look like a SoundFont."""
    path = Path(path) if path is not None else DEFAULT_SOUNDFONT
    if not path.is_file():
        raise DatasetError(f"SoundFont {path}: not found; expected a General MIDI .sf2 file "
                           f"(Debian/Ubuntu: apt-get install fluid-soundfont-gm)")
    with open(path, "rb") as f:
        head = f.read(12)
    if head[:4] != b"RIFF" or head[8:12] != b"sfbk":
        raise DatasetError(f"SoundFont {path}: not a SoundFont 2 file (starts with {head!r}); "
                           f"expected a .sf2 file")
    return path


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks (for provenance)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def render_midi(midi: Path, wav: Path, *, soundfont: Path, sample_rate: int,
                expected_seconds: float, timeout: float | None = None) -> np.ndarray:
    """Render `midi` with FluidSynth into `wav` and return it as float32 mono samples.

    The render is killed, and a DatasetError raised, if it runs longer than `timeout` seconds
    (default: 60 s plus the expected duration) or writes more than 4x the expected audio plus
    a minute: the signature of a note that never ends.
    """
    timeout = 60.0 + expected_seconds if timeout is None else timeout
    bytes_per_second = sample_rate * 2 * 4  # stereo float32
    max_bytes = int((4 * expected_seconds + 60) * bytes_per_second)
    cmd = [fluidsynth_binary(), "-n", "-i", "-q", "-R", "0", "-C", "0", "-g", str(GAIN),
           "-r", str(sample_rate), "-O", "float", "-T", "wav",
           "-o", "synth.dynamic-sample-loading=1", "-F", str(wav), str(soundfont), str(midi)]
    log = wav.with_suffix(".log")  # a file, not a pipe: a chatty render must never block
    with open(log, "wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
    started = time.monotonic()
    try:
        while proc.poll() is None:
            if wav.exists() and wav.stat().st_size > max_bytes:
                raise DatasetError(f"FluidSynth rendering {midi.name}: output passed "
                                   f"{max_bytes} bytes for {expected_seconds:.1f} s of music; "
                                   f"expected every note to end (killed)")
            if time.monotonic() - started > timeout:
                raise DatasetError(f"FluidSynth rendering {midi.name}: still running after "
                                   f"{timeout:.0f} s; expected about {expected_seconds:.1f} s of "
                                   f"audio (killed)")
            time.sleep(0.02)
    except BaseException:
        proc.kill()
        proc.wait()
        wav.unlink(missing_ok=True)
        log.unlink(missing_ok=True)
        raise
    stderr = log.read_text(errors="replace")
    log.unlink()
    if proc.returncode != 0 or not wav.exists():
        raise DatasetError(f"FluidSynth rendering {midi.name} failed (exit {proc.returncode}): "
                           f"{stderr.strip()[-500:]}")
    audio, rate = sf.read(wav, dtype="float32", always_2d=True)
    if rate != sample_rate:
        raise DatasetError(f"FluidSynth wrote {wav.name} at {rate} Hz; expected {sample_rate} Hz")
    return audio.mean(axis=1)
