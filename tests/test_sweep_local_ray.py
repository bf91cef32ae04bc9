"""Sweeps on the local Ray that `umtune sweep` starts itself (no --address): Ray's dashboard
runs where the trials need it (Ray Train frees a finished run's placement group through the
State API the dashboard serves) or where asked, and not for one-worker trials, whose cores it
would share."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from ray_nodes import tiny_sweep_args

pytestmark = pytest.mark.slow  # a real Ray per test: minutes

# Into a file: the trials' logs reach the driver's stdout late.
SWEEP_THEN_SHOW_DASHBOARD = """
import json, sys, ray
from umtune.cli import main
code = main(sys.argv[2:])
url = ray.init(ignore_reinit_error=True).address_info["webui_url"]  # the sweep's own Ray
open(sys.argv[1], "w").write(json.dumps({"code": code, "dashboard": bool(url)}))
"""


def _sweep_on_its_own_ray(args: list[str], shown: Path) -> dict:
    """`umtune sweep ARGS` in a fresh process with no cluster to join, so it starts Ray."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    run = subprocess.run([sys.executable, "-c", SWEEP_THEN_SHOW_DASHBOARD, str(shown), *args],
                         env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(shown.read_text())


def test_two_worker_asha_trials_run_one_after_another_on_a_ray_with_its_dashboard(
        tiny_dataset, tmp_path):
    """Each trial's two workers take both CPUs, so a trial starts only once the one before,
    finished or stopped by ASHA, has freed its placement group (with the dashboard forced off
    the first trial's never was: the ones after it timed out waiting for their workers). The
    first trial learns and the two after it barely move, so ASHA stops them at its first
    rung whatever the machine's precision."""
    space = tmp_path / "lr.yaml"
    space.write_text("params:\n"
                     "  train.lr: {type: grid, values: [3.0e-3, 1.0e-9, 2.0e-9]}\n")
    shown = _sweep_on_its_own_ray([*tiny_sweep_args(tiny_dataset, str(tmp_path), "two", 1),
                                   "--space", str(space), "--search", "grid",
                                   "--trial-workers", "2", "--scheduler", "asha",
                                   "--set", "train.max_epochs=3"], tmp_path / "shown.json")
    assert shown == {"code": 0, "dashboard": True}
    table = pd.read_parquet(tmp_path / "two" / "trials.parquet")
    assert len(table) == 3 and set(table["status"]) <= {"completed", "stopped early"}
    assert "stopped early" in set(table["status"]) and set(table["world_size"]) == {2}


def test_one_worker_asha_trials_run_without_the_dashboard_and_stopped_ones_free_their_cpus(
        tiny_dataset, tmp_path):
    """Six one-worker trials, two at a time, ASHA stopping the worse half after each epoch:
    every trial ends (a stopped trial that kept its CPU would leave the rest pending)."""
    shown = _sweep_on_its_own_ray([*tiny_sweep_args(tiny_dataset, str(tmp_path), "asha", 6),
                                   "--scheduler", "asha", "--set", "train.max_epochs=3"],
                                  tmp_path / "shown.json")
    assert shown == {"code": 0, "dashboard": False}
    table = pd.read_parquet(tmp_path / "asha" / "trials.parquet")
    assert len(table) == 6 and set(table["status"]) <= {"completed", "stopped early"}
    assert set(table["world_size"]) == {1}


def test_the_dashboard_runs_for_one_worker_trials_when_asked(tiny_dataset, tmp_path):
    shown = _sweep_on_its_own_ray([*tiny_sweep_args(tiny_dataset, str(tmp_path), "asked", 1),
                                   "--dashboard"], tmp_path / "shown.json")
    assert shown == {"code": 0, "dashboard": True}
