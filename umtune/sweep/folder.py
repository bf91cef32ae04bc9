"""Reading and writing a sweep folder's own files (names in umtune/layout.py): sweep.json, the
trial table. Local folders are written atomically; on object stores a whole object appears at
once."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from umtune import storage
from umtune.layout import SWEEP_FILE, TRIALS_STEM, driver_lock


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


@contextlib.contextmanager
def driving(path: str) -> Iterator[None]:
    """Hold the sweep's driver lock for the block (local folders): a second driver of the same
    sweep (a `--resume` of a live one, the same --name twice) is refused, naming it; a killed
    driver's lock is free at once."""
    local = storage.local_path(path)
    if local is None:  # object stores have no locks: the name check is all there is
        yield
        return
    lock = Path(driver_lock(str(local)))
    lock.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = storage.exclusive_lock(lock)
    except storage.Locked:
        raise FileExistsError(f"{path}: a umtune sweep driver is running it (it holds {lock}); "
                              "expected one driver at a time: wait for it to end, or stop "
                              "it") from None
    try:
        yield
    finally:
        os.close(fd)
