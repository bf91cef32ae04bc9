"""Reading a dataset directory: the manifest, whole files, and seeded random segments.

A dataset is a directory holding `manifest.json` and int16 `.npy` audio files. The manifest names
the format version, sample rate, training domains, unseen domains, every file (split "train",
"heldout" or "notes"; domain; path; length; piece id; pitch for the note set) and where the data
came from. Audio is memory-mapped on read, so random segments cost a page fault, not a file read.

`Dataset.segments` is what training calls: it draws all `count` segment positions of a batch from
the caller's generator, identically on every worker, and reads only this worker's rows
(rank::world_size), so N workers together read exactly what one worker would.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from umtune.data.errors import DatasetError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SPLITS = ("train", "heldout", "notes")
_SCALE = np.float32(1.0 / 32768.0)
_OPEN_FILES = 256  # memory maps kept open (each holds a file descriptor)


@dataclass(frozen=True)
class FileEntry:
    """One audio file of a dataset, as listed in its manifest."""

    domain: str
    split: str
    path: Path  # absolute
    num_samples: int
    duration: float  # seconds
    piece: str | None = None  # corpus piece id (chorales) or source file (imports)
    pitch: int | None = None  # MIDI pitch, note set only


class Dataset:
    """A dataset directory opened for reading. Create with `Dataset.open(path)`."""

    def __init__(self, path: Path, manifest: dict):
        self.path = Path(path)
        self.manifest = manifest
        self.sample_rate: int = int(manifest["sample_rate"])
        self.domains: tuple[str, ...] = tuple(manifest["domains"])
        self.unseen_domains: tuple[str, ...] = tuple(manifest.get("unseen_domains", ()))
        self._files: dict[tuple[str, str], list[FileEntry]] = {}
        for f in manifest["files"]:
            entry = FileEntry(domain=f["domain"], split=f["split"], path=self.path / f["path"],
                              num_samples=int(f["num_samples"]), duration=float(f["duration"]),
                              piece=f.get("piece"), pitch=f.get("pitch"))
            self._files.setdefault((entry.domain, entry.split), []).append(entry)
        self._maps: OrderedDict[Path, np.ndarray] = OrderedDict()

    @classmethod
    def open(cls, path: Path | str) -> Dataset:
        """Open a dataset directory, checking its manifest's format version and fields."""
        path = Path(path)
        manifest_path = path / MANIFEST
        if not path.is_dir():
            raise DatasetError(f"dataset {path}: not a directory; expected a dataset directory "
                               f"written by `umtune data`")
        if not manifest_path.is_file():
            raise DatasetError(f"dataset {path}: no {MANIFEST}; expected a dataset directory "
                               f"written by `umtune data`")
        try:
            manifest = json.loads(manifest_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DatasetError(f"manifest {manifest_path}: not valid JSON ({e})") from e
        if not isinstance(manifest, dict):
            raise DatasetError(f"manifest {manifest_path}: expected a JSON object")
        version = manifest.get("format_version")
        if version != FORMAT_VERSION:
            raise DatasetError(f"manifest {manifest_path}: format_version {version!r} is unknown; "
                               f"expected format_version {FORMAT_VERSION} (re-create the dataset "
                               f"with `umtune data`, or use the umtune that wrote it)")
        missing = [k for k in ("sample_rate", "domains", "files") if k not in manifest]
        if missing:
            raise DatasetError(f"manifest {manifest_path}: missing fields {missing}")
        return cls(path, manifest)

    def __repr__(self) -> str:
        return (f"Dataset({str(self.path)!r}, sample_rate={self.sample_rate}, "
                f"domains={self.domains}, unseen_domains={self.unseen_domains})")

    def __getstate__(self) -> dict:  # memory maps stay behind when a Dataset is pickled
        return {**self.__dict__, "_maps": OrderedDict()}

    def check_serves(self, sample_rate: int, domains: tuple[str, ...]) -> None:
        """Refuse a model this dataset cannot feed: another sample rate, or domains it lacks."""
        if self.sample_rate != sample_rate:
            raise DatasetError(f"dataset {self.path} is at {self.sample_rate} Hz but the model "
                               f"runs at data.sample_rate={sample_rate}")
        missing = [d for d in domains if d not in self.domains]
        if missing:
            raise DatasetError(f"model.domains {missing} are not in dataset {self.path} (its "
                               f"domains: {', '.join(self.domains)})")

    def files(self, domain: str, split: str) -> list[FileEntry]:
        """The files of one domain and split, in manifest order (empty if there are none)."""
        if domain not in self.domains + self.unseen_domains:
            raise DatasetError(f"domain {domain!r}: not in dataset {self.path}; expected one of "
                               f"{', '.join(self.domains + self.unseen_domains)}")
        if split not in SPLITS:
            raise DatasetError(f"split {split!r}: expected one of {', '.join(SPLITS)}")
        return list(self._files.get((domain, split), ()))

    def _map(self, path: Path) -> np.ndarray:
        mm = self._maps.pop(path, None)
        if mm is None:
            mm = np.load(path, mmap_mode="r")
            if len(self._maps) >= _OPEN_FILES:
                self._maps.popitem(last=False)
        self._maps[path] = mm
        return mm

    def audio(self, entry: FileEntry) -> np.ndarray:
        """A whole file as float32 samples in [-1, 1]."""
        return self._map(entry.path).astype(np.float32) * _SCALE

    def segments(self, domain: str, split: str, count: int, length: int,
                 rng: np.random.Generator, rank: int = 0, world_size: int = 1) -> np.ndarray:
        """Random segments of one domain and split, float32 of shape (count // world_size, length).

        Draws `count` positions from `rng` (a file with probability proportional to the number of
        segment starts it offers, then a start in it) the same way on every rank, and reads rows
        rank, rank + world_size, ...: the ranks of a world together read what one worker reads.
        """
        if world_size < 1 or not 0 <= rank < world_size:
            raise DatasetError(f"rank {rank} of world_size {world_size}: expected "
                               f"0 <= rank < world_size")
        if count < 0 or count % world_size:
            raise DatasetError(f"segment count {count}: expected a non-negative multiple of "
                               f"world_size {world_size}, so every worker reads as many")
        if length < 1:
            raise DatasetError(f"segment length {length}: expected at least 1 sample")
        entries = self.files(domain, split)
        if not entries:
            raise DatasetError(f"dataset {self.path} has no {split!r} files for domain {domain!r}")
        usable = [e for e in entries if e.num_samples >= length]
        if not usable:
            longest = max(e.num_samples for e in entries)
            raise DatasetError(f"segment length {length} samples: no {split!r} file of domain "
                               f"{domain!r} is that long (longest {longest} samples); expected "
                               f"a length of at most {longest}")
        starts = np.array([e.num_samples - length + 1 for e in usable], dtype=np.int64)
        which = rng.choice(len(usable), size=count, p=starts / starts.sum())
        offsets = rng.integers(0, starts[which])
        mine = range(rank, count, world_size)
        out = np.empty((len(mine), length), dtype=np.float32)
        for row, i in enumerate(mine):
            out[row] = self._map(usable[which[i]].path)[offsets[i]:offsets[i] + length]
        out *= _SCALE
        return out

    def summary(self) -> str:
        """A table of files and minutes of audio per domain and split."""
        rows = [("domain", "train files", "train min", "heldout files", "heldout min",
                 "notes")]
        totals = [0, 0.0, 0, 0.0, 0]
        for domain in self.domains + self.unseen_domains:
            cells = []
            for split in SPLITS:
                entries = self.files(domain, split)
                minutes = sum(e.duration for e in entries) / 60
                cells += [len(entries), minutes] if split != "notes" else [len(entries)]
            totals = [t + c for t, c in zip(totals, cells, strict=True)]
            name = domain + (" (unseen)" if domain in self.unseen_domains else "")
            rows.append((name, *_fmt(cells)))
        rows.append(("total", *_fmt(totals)))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = [f"dataset {self.path}  ({self.manifest.get('source', 'unknown')}, "
                 f"{self.sample_rate} Hz, mono, format {FORMAT_VERSION})"]
        for i, r in enumerate(rows):
            lines.append("  ".join(c.ljust(w) if j == 0 else c.rjust(w)
                                   for j, (c, w) in enumerate(zip(r, widths, strict=True))))
            if i == 0 or i == len(rows) - 2:
                lines.append("  ".join("-" * w for w in widths))
        skipped = self.manifest.get("skipped", [])
        if skipped:
            lines.append(f"{len(skipped)} input file(s) skipped as bad (see {MANIFEST})")
        return "\n".join(lines)


def _fmt(cells: list) -> list[str]:
    return [f"{c:.2f}" if isinstance(c, float) else str(c) for c in cells]
