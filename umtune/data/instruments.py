"""Instrument domains of the built-in dataset: names mapped to General MIDI programs.

Program numbers are 0-based, as written in a MIDI program-change message (GM's 1-based
"Acoustic Grand Piano = 1" is program 0 here). `UNSEEN_DOMAIN` is rendered for the held-out
pieces and the note set only, never for training: it measures translation from an instrument
the encoder has never heard (the paper's "unseen domain" experiment).
"""

from __future__ import annotations

from collections.abc import Iterable

from umtune.data.errors import DatasetError

INSTRUMENTS: dict[str, int] = {
    "piano": 0,  # Acoustic Grand Piano
    "harpsichord": 6,
    "organ": 19,  # Church Organ
    "guitar": 24,  # Acoustic Guitar (nylon)
    "violin": 40,
    "viola": 41,
    "cello": 42,
    "strings": 48,  # String Ensemble 1
    "choir": 52,  # Choir Aahs
    "trumpet": 56,
    "trombone": 57,
    "horn": 60,  # French Horn
    "sax": 65,  # Alto Sax
    "oboe": 68,
    "bassoon": 70,
    "clarinet": 71,
    "flute": 73,
    "recorder": 74,
    "whistle": 78,
}

UNSEEN_DOMAIN = "whistle"


def check_domains(domains: Iterable[str]) -> tuple[str, ...]:
    """Check training instrument names: known, distinct, at least two. Returns them as a tuple."""
    if isinstance(domains, str):
        domains = domains.split(",")
    names = tuple(d.strip() for d in domains)
    for name in names:
        if name not in INSTRUMENTS:
            raise DatasetError(f"unknown instrument {name!r}: expected one of "
                               f"{', '.join(sorted(INSTRUMENTS))}")
    if len(set(names)) != len(names):
        raise DatasetError(f"domains {list(names)}: expected distinct instrument names")
    if len(names) < 2:
        raise DatasetError(f"domains {list(names)}: expected at least two domains (translation "
                           f"needs a source and a target)")
    return names
