"""Writing a dataset directory atomically: all or nothing.

`DatasetWriter` builds the dataset in a hidden staging directory next to the target, writes the
audio there as int16 `.npy` arrays and the manifest last, then renames the staging directory into
place. If anything fails (bad input, a crash, Ctrl-C) the staging directory is removed, so no
half-written dataset is ever left where a reader would find it. `--force` replaces an existing
dataset only once the new one is complete, and never replaces a directory that is not a dataset.

A writer holds an exclusive lock (`flock` on `.NAME.lock` beside the target) from start to end,
so two writers of one target refuse each other, and what a killed writer (`kill -9`, a power
cut) left beside the target is known to be dead: the next writer of that target removes its
staging directory, and puts back a dataset that a replacement (`--force`) had moved aside.
"""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from umtune.data.dataset import FORMAT_VERSION, MANIFEST
from umtune.data.errors import DatasetError
from umtune.storage import Locked, exclusive_lock, write_json_atomic


def to_int16(audio: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] to int16 (clipped, rounded)."""
    return np.round(np.clip(audio, -1.0, 1.0) * 32767.0).astype(np.int16)


def _lock(path: Path, out: Path) -> int:
    """`exclusive_lock` on `path`; DatasetError naming `out` when another process holds it."""
    try:
        return exclusive_lock(path)
    except Locked:
        raise DatasetError(f"output directory {out}: another umtune process is writing it "
                           f"(it holds {path}); expected one writer at a time") from None


class DatasetWriter:
    """Stage a dataset next to `out` and move it into place on `commit()`.

    Use as a context manager: leaving the block with an exception removes the staging directory.
    Creating the writer fails at once (DatasetError) if `out` exists and `force` is false, or if
    `out`'s parent directory cannot be written.
    """

    def __init__(self, out: Path | str, *, force: bool = False):
        self.out = Path(out).absolute()
        self._check_target(force)
        self._created_parents: list[Path] = []
        self._lock_fd: int | None = None
        self.lock_file = self.out.with_name(f".{self.out.name}.lock")
        try:
            missing = [p for p in reversed(self.out.parents) if not p.exists()]
            for p in missing:
                p.mkdir()
                self._created_parents.append(p)
            self._lock_fd = _lock(self.lock_file, self.out)
            self._remove_leftovers()
            self._check_target(force)  # again: a leftover may have been a moved-aside dataset
            self.staging = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.partial-",
                                                 dir=self.out.parent))
        except (OSError, DatasetError) as e:
            self._release()
            self._remove_created_parents()
            if isinstance(e, DatasetError):
                raise
            raise DatasetError(f"output directory {self.out}: cannot write there "
                               f"({e.strerror or e}); expected a writable location") from e
        self.files: list[dict] = []

    def _check_target(self, force: bool) -> None:
        if self.out.exists() or self.out.is_symlink():
            if not force:
                raise DatasetError(f"output directory {self.out} already exists; expected a new "
                                   f"path, or force=True (--force) to replace it")
            if not (self.out.is_dir() and ((self.out / MANIFEST).is_file()
                                           or not any(self.out.iterdir()))):
                raise DatasetError(f"output {self.out} exists and is not a umtune dataset (no "
                                   f"{MANIFEST}); expected a dataset or an empty directory, "
                                   f"refusing to replace it even with --force")

    def _remove_leftovers(self) -> None:
        """What writers of this target that died left beside it (we hold the lock, so every
        other writer is gone): staging directories, and the aside-folder of a replacement cut
        between its two renames, whose dataset goes back to the target if that is missing."""
        pattern = glob.escape(str(self.out.parent / f".{self.out.name}"))
        for aside in map(Path, glob.glob(f"{pattern}.old-*")):
            kept = aside / "dataset"
            if kept.is_dir() and not (self.out.exists() or self.out.is_symlink()):
                os.replace(kept, self.out)
            shutil.rmtree(aside, ignore_errors=True)
        for staging in map(Path, glob.glob(f"{pattern}.partial-*")):
            shutil.rmtree(staging, ignore_errors=True)

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()

    def write(self, relpath: str, audio: np.ndarray) -> int:
        """Store float audio at `relpath` inside the dataset as int16; returns its length.

        Safe to call from several threads at once (for different paths); record the file with
        `add` afterwards, in the order the manifest should list it.
        """
        samples = to_int16(audio)
        target = self.staging / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        np.save(target, samples, allow_pickle=False)
        return int(samples.shape[0])

    def add(self, relpath: str, num_samples: int, **entry) -> None:
        """List a written file in the manifest; `entry` holds split, domain, piece, pitch..."""
        self.files.append({"path": relpath, "num_samples": int(num_samples), **entry})

    def save(self, relpath: str, audio: np.ndarray, **entry) -> None:
        """`write` then `add`."""
        self.add(relpath, self.write(relpath, audio), **entry)

    def commit(self, *, sample_rate: int, domains: tuple[str, ...],
               unseen_domains: tuple[str, ...], **extra) -> Path:
        """Write the manifest and move the staging directory to `out`. Returns `out`."""
        files = [{**f, "duration": round(f["num_samples"] / sample_rate, 6)} for f in self.files]
        manifest = {"format_version": FORMAT_VERSION, "sample_rate": int(sample_rate),
                    "domains": list(domains), "unseen_domains": list(unseen_domains),
                    **extra, "files": files}
        write_json_atomic(self.staging / MANIFEST, manifest)
        os.chmod(self.staging, 0o755)  # mkdtemp makes it private; a dataset is for sharing
        if self.out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.old-", dir=self.out.parent))
            os.replace(self.out, old / "dataset")
            os.replace(self.staging, self.out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(self.staging, self.out)
        self._release()
        return self.out

    def abort(self) -> None:
        """Remove everything this writer created."""
        shutil.rmtree(self.staging, ignore_errors=True)
        self._release()
        self._remove_created_parents()

    def _release(self) -> None:
        if self._lock_fd is not None:
            self.lock_file.unlink(missing_ok=True)  # while still held: the next writer's is new
            os.close(self._lock_fd)
            self._lock_fd = None

    def _remove_created_parents(self) -> None:
        for p in reversed(self._created_parents):
            try:
                p.rmdir()
            except OSError:
                pass
