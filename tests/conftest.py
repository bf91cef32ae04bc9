"""Shared fixtures: a real tiny built-in dataset, rendered once per test session.

`tiny_dataset` is the path of a dataset rendered with FluidSynth from two short Bach pieces per
instrument on two instruments (piano, flute), one held-out piece on both and on the unseen
whistle, and a four-note note set: about 80,000 samples (5 s at 16 kHz) per training file, a few
seconds to render. Tests that train use it as their data; the data tests check it.
"""

from __future__ import annotations

import os

import pytest

# Ray 2.60 clusters (`ray start`, `ray.init()`) require token auth, and a client joining one by
# address sends its token only in token mode; Ray reads the mode when it is first imported.
os.environ.setdefault("RAY_AUTH_MODE", "token")

TINY_DATASET_OPTIONS = dict(domains=("piano", "flute"), sample_rate=16000, pieces_per_domain=2,
                            heldout_pieces=1, seed=0, note_pitches=(48, 60, 72, 84),
                            max_piece_seconds=4.0, progress=False)


@pytest.fixture(scope="session")
def tiny_dataset_options() -> dict:
    """The `render_chorales` keyword arguments `tiny_dataset` was rendered with."""
    return dict(TINY_DATASET_OPTIONS)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory, tiny_dataset_options):
    """Path of a real tiny chorale dataset (2 pieces x 2 instruments, held-out, note set)."""
    from umtune.data import render_chorales

    return render_chorales(tmp_path_factory.mktemp("data") / "tiny", **tiny_dataset_options)
