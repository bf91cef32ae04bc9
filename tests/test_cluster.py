"""Multi-node Ray on this machine: a head and a second node started with `ray start`, a sweep
joined to them with --address, and the same sweep submitted as a Ray job. Ray's state API says
where the Train workers ran."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from ray.job_submission import JobStatus, JobSubmissionClient
from ray.util.state import list_actors, list_nodes
from ray_nodes import RAY, RayNodes, tiny_sweep_args

pytestmark = pytest.mark.slow  # real Ray nodes and sweeps: minutes
UMTUNE = Path(sys.executable).with_name("umtune")
ENV = {**os.environ, "RAY_AUTH_MODE": "token"}


def _sweep_args(data: Path, storage: str, name: str) -> list[str]:
    """Two trials of one 1-CPU worker each, over two 1-CPU nodes: one worker lands on each."""
    return tiny_sweep_args(data, storage, name, samples=2)


@pytest.fixture(scope="module")
def two_nodes():
    """A head (1 CPU) and a second node (1 CPU) on 127.0.0.1, as two machines would run."""
    nodes = RayNodes().start_head(cpus=1, resources={"head_node": 1})
    nodes.add_node(cpus=1, resources={"second_node": 1})
    yield nodes
    nodes.stop()
    assert nodes.pids() == [], "processes of the test cluster outlived stop()"


def _completed(storage: Path, name: str) -> pd.DataFrame:
    table = pd.read_csv(storage / name / "trials.csv")
    assert list(table["status"]) == ["completed"] * 2, table[["trial", "status", "reason"]]
    return table


def test_ray_start_needs_nothing_in_the_home_folder(monkeypatch, tmp_path):
    """`ray start --head` with token auth starts with an empty home (a fresh machine or CI
    runner): the tests bring their own token; nothing comes from ~/.ray."""
    monkeypatch.setenv("HOME", str(tmp_path / "empty-home"))
    (tmp_path / "empty-home").mkdir()
    nodes = RayNodes()
    try:
        nodes.start_head(cpus=1)
        status = subprocess.run([RAY, "status", "--address", nodes.address], env=ENV | {
            "HOME": str(tmp_path / "empty-home")}, capture_output=True, text=True, timeout=120)
        assert status.returncode == 0, status.stdout[-2000:] + status.stderr[-2000:]
    finally:
        nodes.stop()
    assert not (tmp_path / "empty-home" / ".ray").exists()


def test_a_sweep_with_address_runs_its_trials_on_both_nodes(two_nodes, tiny_dataset, tmp_path):
    """Two one-worker trials of 1 CPU each on two 1-CPU nodes: each trains on its own node, in
    its Tune trial's process (Tune's `ImplicitFunc` actor)."""
    nodes = {n.node_id for n in list_nodes(address=two_nodes.address) if n.state == "ALIVE"}
    assert len(nodes) == 2
    # A plain path would be refused on two nodes: file:// says every node sees it.
    run = subprocess.run([UMTUNE, *_sweep_args(tiny_dataset, f"file://{tmp_path}", "spread"),
                          "--address", two_nodes.address], env=ENV, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    _completed(tmp_path, "spread")
    actors = list_actors(address=two_nodes.address, detail=True, limit=10_000)
    trials = [a for a in actors if a.class_name.endswith("ImplicitFunc")]
    assert {t.node_id for t in trials} == nodes, [(a.class_name, a.node_id) for a in actors]


def test_the_sweep_as_a_ray_job(two_nodes, tiny_dataset, tmp_path):
    """`ray job submit -- umtune sweep ...` to the head's job server, as the README shows."""
    submit = subprocess.run(
        [RAY, "job", "submit", "--address", two_nodes.dashboard, "--submission-id",
         "umtune-test-sweep", "--", str(UMTUNE), *_sweep_args(tiny_dataset, f"file://{tmp_path}",
                                                              "as-job")],
        env=ENV, capture_output=True, text=True, timeout=600)
    assert submit.returncode == 0, submit.stdout[-3000:] + submit.stderr[-3000:]
    client = JobSubmissionClient(two_nodes.dashboard)
    assert client.get_job_status("umtune-test-sweep") == JobStatus.SUCCEEDED
    logs = client.get_job_logs("umtune-test-sweep")
    table = _completed(tmp_path, "as-job")
    assert all(trial_id in logs for trial_id in table["trial"]), logs[-2000:]
