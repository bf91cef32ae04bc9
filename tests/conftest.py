"""Shared fixtures: a real tiny built-in dataset, rendered once per test session, the Ray token
of the session (below), and a machine without a C compiler for the C kernels.

`tiny_dataset` is the path of a dataset rendered with FluidSynth from two short Bach pieces per
instrument on two instruments (piano, flute), one held-out piece on both and on the unseen
whistle, and a four-note note set: about 80,000 samples (5 s at 16 kHz) per training file, a few
seconds to render. Tests that train use it as their data; the data tests check it.
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import tempfile
from pathlib import Path

import pytest

# Ray 2.60 clusters (`ray start`, `ray.init()`) require token auth, and a client joining one by
# address sends its token only in token mode; Ray reads the mode and the token when it is first
# imported. The session makes its own token (`ray start` refuses to start without one) and
# points Ray and every process the tests start at it: nothing depends on ~/.ray/auth_token, so a
# fresh machine or an empty home passes the first time, and the user's own token is not touched.
_token_dir = Path(tempfile.mkdtemp(prefix="umtune-test-ray-"))
atexit.register(shutil.rmtree, _token_dir, ignore_errors=True)
(_token_dir / "auth_token").write_text(secrets.token_hex(32))
(_token_dir / "auth_token").chmod(0o600)
os.environ["RAY_AUTH_MODE"] = "token"
os.environ["RAY_AUTH_TOKEN_PATH"] = str(_token_dir / "auth_token")
os.environ.pop("RAY_AUTH_TOKEN", None)  # it would take precedence over the file

TINY_DATASET_OPTIONS = dict(domains=("piano", "flute"), sample_rate=16000, pieces_per_domain=2,
                            heldout_pieces=1, seed=0, note_pitches=(48, 60, 72, 84),
                            max_piece_seconds=4.0)


@pytest.fixture(scope="session")
def tiny_dataset_options() -> dict:
    """The `ChoraleOptions` `tiny_dataset` was rendered with."""
    from umtune.data import ChoraleOptions

    return ChoraleOptions(**TINY_DATASET_OPTIONS)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory, tiny_dataset_options):
    """Path of a real tiny chorale dataset (2 pieces x 2 instruments, held-out, note set)."""
    from umtune.data import render_chorales

    return render_chorales(tmp_path_factory.mktemp("data") / "tiny", tiny_dataset_options,
                           progress=False)


@pytest.fixture
def without_a_compiler(tmp_path, monkeypatch):
    """kernels.c cannot be built (CC=false, an empty kernel cache): its callers run PyTorch
    ops. The library is loaded afresh before and after."""
    from umtune.trainable import native

    monkeypatch.setenv("UMTUNE_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", "false")
    native.kernels.cache_clear()
    yield
    native.kernels.cache_clear()
