"""`connect()` starting a local Ray: its workers import what a trial needs before any work
arrives (torch and the trial module: 3-4 s that a trial no longer waits for).

This module imports neither torch nor umtune at its top: Ray's workers may import it to run
the task below, and the task asks what the worker had imported before it ran.
"""

import os
import sys

import pytest
import ray

pytestmark = pytest.mark.slow  # a real local Ray

WATCHED = ("torch", "umtune.sweep.trial", "colorsys")


@ray.remote(num_cpus=0)
def imported() -> list[str]:
    return [m for m in WATCHED if m in sys.modules]


@pytest.fixture
def connect(monkeypatch):
    """umtune's `connect()` with no address (a local Ray), shut down afterwards."""
    from umtune.trainable import ray_train

    assert not ray.is_initialized()
    yield ray_train.connect
    ray.shutdown()


def test_a_local_ray_preloads_the_trial_modules_in_its_workers(connect, monkeypatch):
    monkeypatch.delenv("RAY_preload_python_modules", raising=False)
    connect()
    assert ray.get(imported.remote(), timeout=120) == ["torch", "umtune.sweep.trial"]
    assert "RAY_preload_python_modules" not in os.environ  # the driver's own env is untouched


def test_the_users_own_preload_list_wins(connect, monkeypatch):
    monkeypatch.setenv("RAY_preload_python_modules", "colorsys")
    connect()
    assert ray.get(imported.remote(), timeout=120) == ["colorsys"]
    assert os.environ["RAY_preload_python_modules"] == "colorsys"
