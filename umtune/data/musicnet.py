"""MusicNet, the paper's data, imported as a dataset: one domain per (ensemble, composer).

MusicNet's layout: `ROOT/train_data/<id>.wav`, `ROOT/test_data/<id>.wav` and
`ROOT/musicnet_metadata.csv` (columns id, composer, ensemble, ...). A domain is every
recording of one ensemble by one composer; MusicNet's test recordings are its held-out files,
and a domain without one holds out a seeded share of its recordings (`heldout_fraction`). The
audio itself cannot be downloaded here: `umtune data musicnet` reads a copy you have.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from umtune.data.errors import DatasetError
from umtune.data.importer import check_options, write_domains
from umtune.storage import refuse_output_in

METADATA_FILE = "musicnet_metadata.csv"
SPLIT_FOLDERS = {"train_data": None, "test_data": "heldout"}  # None: train unless held out
# The paper's six domains (Mor et al. 2018, section 4), as (ensemble, composer).
PAPER_DOMAINS = (("Accompanied Violin", "Beethoven"), ("Solo Cello", "Bach"),
                 ("Solo Piano", "Bach"), ("Solo Piano", "Beethoven"),
                 ("String Quartet", "Beethoven"), ("Wind Quintet", "Cambini"))


def domain_name(ensemble: str, composer: str) -> str:
    """e.g. ("Solo Piano", "Bach") -> "bach_solo_piano"."""
    return re.sub(r"[^a-z0-9]+", "_", f"{composer} {ensemble}".lower()).strip("_")


def parse_domains(spec: str) -> tuple[tuple[str, str], ...]:
    """`paper`, or comma-separated ENSEMBLE:COMPOSER pairs."""
    if spec.strip() == "paper":
        return PAPER_DOMAINS
    pairs = []
    for item in spec.split(","):
        ensemble, sep, composer = item.partition(":")
        if not sep or not ensemble.strip() or not composer.strip():
            raise DatasetError(f"--domains item {item!r}: expected ENSEMBLE:COMPOSER, e.g. "
                               "'Solo Piano:Bach', or 'paper'")
        pairs.append((ensemble.strip(), composer.strip()))
    return tuple(pairs)


def read_metadata(root: Path) -> dict[tuple[str, str], list[str]]:
    """(ensemble, composer) -> the ids of its recordings, from ROOT/musicnet_metadata.csv."""
    file = root / METADATA_FILE
    if not file.is_file():
        raise DatasetError(f"MusicNet root {root}: no {METADATA_FILE}; expected MusicNet's "
                           f"folder ({', '.join(SPLIT_FOLDERS)} and {METADATA_FILE})")
    groups: dict[tuple[str, str], list[str]] = {}
    try:
        with file.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DatasetError(f"{file}: not a readable CSV ({e})") from None
    for line, row in enumerate(rows, start=2):
        values = [(row.get(k) or "").strip() for k in ("id", "ensemble", "composer")]
        if not all(values):
            raise DatasetError(f"{file} line {line}: expected an id, an ensemble and a "
                               "composer")
        groups.setdefault((values[1], values[2]), []).append(values[0])
    return groups


def import_musicnet(root: Path | str, out: Path | str, *, domains: str = "paper",
                    sample_rate: int = 16000, heldout_fraction: float = 0.2, seed: int = 0,
                    force: bool = False, skip_bad: bool = False, min_seconds: float = 0.75,
                    progress: bool = True) -> Path:
    """Import the recordings of `domains` (see `parse_domains`) from MusicNet at `root` into a
    dataset at `out`, by recording; returns `out`. A recording listed in the metadata but in
    neither split folder is an error (or skipped and listed with `skip_bad`)."""
    root = Path(root)
    check_options(sample_rate, heldout_fraction, min_seconds)
    refuse_output_in(out, {"the MusicNet folder": root})
    groups = read_metadata(root)
    wanted = parse_domains(domains)
    missing = [f"{e}:{c}" for e, c in wanted if (e, c) not in groups]
    if missing:
        known = ", ".join(sorted(f"{e}:{c}" for e, c in groups))
        raise DatasetError(f"MusicNet root {root}: no recordings of {missing} in "
                           f"{METADATA_FILE}; it has {known}")
    files, skipped = {}, []
    for ensemble, composer in wanted:
        entries = []
        for rid in groups[ensemble, composer]:
            found = [(root / folder / f"{rid}.wav", split) for folder, split
                     in SPLIT_FOLDERS.items() if (root / folder / f"{rid}.wav").is_file()]
            if not found:
                message = (f"recording {rid} ({ensemble}, {composer}) of {METADATA_FILE} is in "
                           f"neither {' nor '.join(f'{root / d}/' for d in SPLIT_FOLDERS)}")
                if not skip_bad:
                    raise DatasetError(f"MusicNet root {root}: {message}")
                skipped.append({"path": str(root / f"{rid}.wav"), "reason": message})
            entries += found
        files[domain_name(ensemble, composer)] = entries
    return write_domains(root, out, files, where={domain_name(e, c): f"MusicNet {e}:{c}"
                                                  for e, c in wanted},
                         sample_rate=sample_rate, heldout_fraction=heldout_fraction, seed=seed,
                         force=force, skip_bad=skip_bad, min_seconds=min_seconds,
                         progress=progress, skipped=skipped, source="musicnet",
                         provenance={"domains": [list(p) for p in wanted]})
