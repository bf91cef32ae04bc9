"""Reading and writing a sweep folder's own files (names in umtune/layout.py): sweep.json, the
trial table. Local folders are written atomically; on object stores a whole object appears at
once."""

from __future__ import annotations

import json

import pandas as pd

from umtune import storage
from umtune.layout import SWEEP_FILE, TRIALS_STEM


def sweep_file_exists(path: str) -> bool:
    return storage.exists(storage.join(path, SWEEP_FILE))


def write_sweep_file(path: str, content: dict) -> None:
    storage.write_text(storage.join(path, SWEEP_FILE), json.dumps(content, indent=1) + "\n")


def read_sweep_file(path: str) -> dict:
    text = storage.read_text(storage.join(path, SWEEP_FILE))
    if text is None:
        raise FileNotFoundError(f"{path}: not a umtune sweep (no {SWEEP_FILE})")
    return json.loads(text)


def write_table(table: pd.DataFrame, path: str) -> None:
    """The trial table as trials.parquet and trials.csv."""
    for suffix, write in ((".parquet", table.to_parquet),
                          (".csv", lambda f: table.to_csv(f, index=False))):
        final = storage.join(path, f"{TRIALS_STEM}{suffix}")
        if (local := storage.local_path(final)) is None:
            write(final)
            continue
        with storage.staged(local) as tmp:
            write(tmp)
