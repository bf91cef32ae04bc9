"""Any user's data: a folder of per-domain audio folders, imported as a dataset.

`import_folders(src, out)` reads SRC/<domain>/**/* audio files (every format audio_io.py
decodes; other files are listed as skipped; one folder per domain, each named as a domain can
be and holding at least two usable files), converts every file to mono at the dataset rate,
and splits each domain's files into train and held-out by file with a seeded shuffle. Imported
domains have no parallel held-out pieces and no note set; `unseen_domains` is empty.

A bad file stops the import with a DatasetError naming it, unless `skip_bad` is set: then each
bad file is skipped, listed on stderr with the reason, and recorded in the manifest ("skipped").
Either way nothing is left at `out` unless the whole import succeeds (writer.py).
"""

from __future__ import annotations

import re
import sys
import zlib
from pathlib import Path

import numpy as np
from tqdm import tqdm

from umtune.config import domain_name_problem
from umtune.data.audio_io import AUDIO_NAMES, is_audio_name, load_audio
from umtune.data.errors import DatasetError
from umtune.data.writer import DatasetWriter
from umtune.storage import refuse_output_in


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def find_domains(src: Path, skipped: list[dict] | None = None) -> dict[str, list[Path]]:
    """Domain name -> its audio files (sorted), checking the layout: >= 2 folders, each named
    as a domain can be and holding audio. Other files (another extension, a broken symbolic
    link) are appended to `skipped` with the reason."""
    if not src.is_dir():
        raise DatasetError(f"import source {src}: not a directory; expected a folder holding "
                           f"one folder of audio files per domain")
    folders = sorted(p for p in src.iterdir() if p.is_dir() and _visible(p))
    if len(folders) < 2:
        raise DatasetError(f"import source {src}: {len(folders)} domain folder(s) "
                           f"{[p.name for p in folders]}; expected at least two, one folder of "
                           f"audio files per domain")
    splits = [p.name for p in folders if p.name.lower() in SPLIT_NAMES]
    if splits:
        raise DatasetError(f"import source {src}: folders {splits} look like a dataset's splits, "
                           "not domains; expected one folder per domain (instrument, ensemble; "
                           "import splits' parent folders per domain, or MusicNet with `umtune "
                           "data musicnet`)")
    domains = {}
    for folder in folders:
        problem = domain_name_problem(folder.name)
        if problem:
            raise DatasetError(f"domain folder {folder}: {problem}; rename the folder")
        files = []
        for p in sorted(folder.rglob("*")):
            if any(q.startswith(".") for q in p.relative_to(folder).parts) or p.is_dir():
                continue
            reason = ("a broken symbolic link" if not p.exists() else None if is_audio_name(p)
                      else f"not an audio file name (expected one of {AUDIO_NAMES})")
            if reason is None:
                files.append(p)
            elif skipped is not None:
                skipped.append({"path": str(p), "reason": reason})
        if not files:
            raise DatasetError(f"domain folder {folder}: no audio files; expected at least two "
                               f"files of {AUDIO_NAMES} (one to train on, one held out)")
        domains[folder.name] = files
    return domains


SPLIT_NAMES = ("train", "test", "train_data", "test_data", "valid", "validation", "val",
               "heldout", "dev")


def split_heldout(n: int, fraction: float, rng: np.random.Generator) -> set[int]:
    """Indices (of n files) held out: round(fraction * n), at least one of each split if n >= 2."""
    if n < 2 or fraction <= 0:
        return set()
    k = min(max(round(fraction * n), 1), n - 1)
    return {int(i) for i in rng.permutation(n)[:k]}


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:80]


def import_folders(src: Path | str, out: Path | str, *, sample_rate: int = 16000,
                   heldout_fraction: float = 0.2, seed: int = 0, force: bool = False,
                   skip_bad: bool = False, min_seconds: float = 0.75,
                   progress: bool = True) -> Path:
    """Import SRC's per-domain audio folders into a dataset at `out`; returns `out`.

    Args:
        src: folder with one sub-folder of audio files per domain.
        out: the dataset directory to create (replaced only with `force`).
        sample_rate: Hz; files are resampled to it with torchaudio.
        heldout_fraction: share of each domain's files held out (by file, seeded).
        seed: seeds the split; each domain's split depends only on the seed and its files.
        force: replace an existing dataset at `out`.
        skip_bad: skip bad files (listed on stderr and in the manifest) instead of failing.
        min_seconds: shortest usable file: one training segment.
        progress: show a progress bar on stderr.
    """
    src = Path(src)
    check_options(sample_rate, heldout_fraction, min_seconds)
    refuse_output_in(out, {"the import source": src})
    skipped: list[dict] = []
    domains = find_domains(src, skipped)
    return write_domains(src, out, {d: [(f, None) for f in files] for d, files in domains.items()},
                         where={d: f"domain folder {src / d}" for d in domains},
                         sample_rate=sample_rate, heldout_fraction=heldout_fraction, seed=seed,
                         force=force, skip_bad=skip_bad, min_seconds=min_seconds,
                         progress=progress, skipped=skipped, source="import")


def check_options(sample_rate: int, heldout_fraction: float, min_seconds: float) -> None:
    if not 1000 <= sample_rate <= 384000:
        raise DatasetError(f"sample_rate={sample_rate!r}: expected 1000..384000 Hz")
    if not 0 <= heldout_fraction < 1:
        raise DatasetError(f"heldout_fraction={heldout_fraction!r}: expected a value in [0, 1)")
    if min_seconds < 0:
        raise DatasetError(f"min_seconds={min_seconds!r}: expected >= 0")


def write_domains(src: Path, out: Path | str, domains: dict[str, list[tuple[Path, str | None]]],
                  *, where: dict[str, str], sample_rate: int, heldout_fraction: float,
                  seed: int, force: bool, skip_bad: bool, min_seconds: float, progress: bool,
                  skipped: list[dict], source: str, provenance: dict | None = None) -> Path:
    """Convert each domain's files (path, split or None) into a dataset at `out`. In a domain
    whose files have no split, a seeded shuffle holds out `heldout_fraction` of them
    (`split_heldout`); otherwise an unsplit file trains. Every domain needs two usable files.
    `where` names each domain's source in errors."""
    for entry in skipped:
        print(f"umtune: skipped {entry['path']}: {entry['reason']}", file=sys.stderr)
    with DatasetWriter(out, force=force) as writer:
        total = sum(len(f) for f in domains.values())
        bar = tqdm(total=total, desc="import", unit="file", disable=not progress, file=sys.stderr)
        with bar:
            for domain, files in domains.items():
                good = []
                for path, split in files:
                    bar.update()
                    try:
                        audio = load_audio(path, sample_rate, min_seconds=min_seconds)
                    except DatasetError as e:
                        if not skip_bad:
                            raise
                        reason = str(e).removeprefix(f"{path}: ")
                        skipped.append({"path": str(path), "reason": reason})
                        tqdm.write(f"umtune: skipped {path}: {reason}", file=sys.stderr)
                        continue
                    relpath = f"audio/{domain}/{len(good):05d}_{_safe(path.stem)}.npy"
                    good.append((relpath, writer.write(relpath, audio),
                                 path.relative_to(src).as_posix(), split))
                rng = np.random.default_rng([seed, zlib.crc32(domain.encode())])
                held = set() if any(entry[3] for entry in good) else \
                    split_heldout(len(good), heldout_fraction, rng)
                splits = [split or ("heldout" if i in held else "train")
                          for i, (*_, split) in enumerate(good)]
                if len(good) < 2:
                    raise DatasetError(f"{where[domain]}: {len(good)} usable audio file(s) of "
                                       f"{len(files)}; expected at least two (one to train on, "
                                       "one held out)")
                for (relpath, n, piece, _), split in zip(good, splits, strict=True):
                    writer.add(relpath, n, split=split, domain=domain, piece=piece, pitch=None)
        provenance = {"src": str(src.absolute()), "heldout_fraction": heldout_fraction,
                      "min_seconds": min_seconds, "resampler": "torchaudio.functional.resample",
                      "seed": seed, **(provenance or {})}
        return writer.commit(sample_rate=sample_rate, domains=tuple(domains), unseen_domains=(),
                             source=source, provenance=provenance, skipped=skipped)
