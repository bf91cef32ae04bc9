"""Training on a real local Ray cluster: DDP equivalence, worker failure, resume, storage rules."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace

import pytest
import ray
import torch
from ray.util.state import list_actors
from ray_nodes import cpus_not_free
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_loop import tiny_run

from umtune import storage
from umtune.cli import main
from umtune.layout import SNAPSHOT_FILE
from umtune.trainable import ray_train
from umtune.trainable.checkpoint import load_checkpoint
from umtune.trainable.loop import train
from umtune.trainable.model import UniversalTranslator
from umtune.trainable.ray_train import Resources
from umtune.trainable.run_folder import LocalRun, RunFolder, read_history

pytestmark = pytest.mark.slow  # a real Ray cluster: minutes


CPUS = 2  # the local Ray's: one per Train worker (the machine has 2 cores)


def _start_ray():
    ray.init(num_cpus=CPUS, include_dashboard=True, log_to_driver=False)


@pytest.fixture(scope="module")
def _module_ray():
    _start_ray()
    yield
    ray.shutdown()


@pytest.fixture
def local_ray(_module_ray):
    """The module's local Ray. A test must leave its CPUs free: one that does not fails, and
    the next test gets a new Ray instead of Train workers that wait forever for them."""
    yield
    if missing := cpus_not_free(CPUS):
        ray.shutdown()
        _start_ray()
        pytest.fail(f"{missing:g} CPUs of the local Ray were not free a minute after the test")


def _update(state: dict, start: dict) -> dict:
    return {k: state[k] - start[k] for k in start if start[k].is_floating_point()}


def test_two_workers_make_the_same_update_as_one_worker_with_the_whole_batch(
        local_ray, tiny_dataset, tmp_path):
    """One step on 2 DDP workers x 2 segments per domain = one step of 1 process x 4 segments.

    Both see the same global batch (same segments, same pitch shifts) and DDP averages the two
    halves' gradients, so the updates agree up to float rounding in the sums. Tolerance: 1% of
    lr absolute (1e-5), 1e-3 relative. Adam's first step is lr * g / (|g| + eps), about
    lr * sign(g), so the rounding of a gradient near 0 can move its update by a sizeable part of
    lr (measured: 2e-6 for 1 of ~800k weights, the rest below 3e-7).
    """
    cfg = tiny_run(tiny_dataset, steps_per_epoch=1, max_epochs=1, lr=1e-3)
    cfg = replace(cfg, data=replace(cfg.data, batch_per_domain=4))
    torch.manual_seed(cfg.train.seed)  # the initial weights, built as the Trainer builds them
    start = UniversalTranslator(cfg.model).state_dict()
    one = LocalRun(tmp_path / "one", echo=False)
    train(cfg, report=one)
    ray_train.fit(cfg, Resources(workers=2), run_dir=tmp_path / "ray" / "two")
    two, history = ray_train.latest(tmp_path / "ray" / "two")
    assert history[-1]["world_size"] == 2 and two.step == 1

    update_two = _update(two.model, start)
    update_one = _update(load_checkpoint(one.checkpoint).model, start)
    assert max(v.abs().max().item() for v in update_one.values()) > 1e-4  # a real update
    for name, u1 in update_one.items():
        torch.testing.assert_close(update_two[name], u1, atol=1e-5, rtol=1e-3, msg=name)


def _train_workers() -> list:
    """This test's Ray (another on the machine would make an address-less query ambiguous)."""
    return list_actors(address=ray.get_runtime_context().gcs_address,
                       filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")])


def _committed_checkpoints(run_dir) -> list[str]:
    """Checkpoints the Train controller has registered (a directory alone is not yet one: a
    failure before registration restarts the run from the previous checkpoint)."""
    snapshot = run_dir / SNAPSHOT_FILE
    if not snapshot.exists():
        return []
    results = json.loads(snapshot.read_text())["checkpoint_results"]
    return [r["checkpoint_dir_name"] for r in results]


def test_a_killed_worker_restarts_from_the_last_checkpoint_and_loses_no_epoch(
        local_ray, tiny_dataset, tmp_path):
    """SIGKILL one of 2 workers in the middle of epoch 2: the group restarts from epoch 1's
    checkpoint, reruns epoch 2, and the history holds epochs 1-3 exactly once each.
    (An epoch of 200 steps takes about 7 s here; the kill comes 0.5 s into it.)"""
    cfg = tiny_run(tiny_dataset, steps_per_epoch=200, max_epochs=3)
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.update(result=ray_train.fit(
        cfg, Resources(workers=2, max_failures=2), run_dir=tmp_path / "run")))
    thread.start()
    deadline = time.monotonic() + 240
    while "checkpoints/epoch_000001" not in _committed_checkpoints(tmp_path / "run"):
        assert time.monotonic() < deadline and thread.is_alive(), "no first checkpoint"
        time.sleep(0.2)
    workers = _train_workers()
    assert len(workers) == 2
    time.sleep(0.5)  # into epoch 2
    assert not (tmp_path / "run" / "checkpoints" / "epoch_000002").exists(), \
        "epoch 2 ended before the kill"
    os.kill(workers[1].pid, signal.SIGKILL)
    thread.join(timeout=300)
    assert not thread.is_alive() and "result" in outcome

    state, history = ray_train.latest(tmp_path / "run")
    assert [m["epoch"] for m in history] == [1, 2, 3]
    assert [m["step"] for m in history] == [200, 400, 600] and state.step == 600
    assert [m["start_epoch"] for m in history] == [0, 1, 1]  # epochs 2-3 after the restart
    assert read_history(tmp_path / "run") == history  # the run folder's, rewritten at restart
    assert RunFolder(tmp_path / "run").trainer() == "ray_train"
    assert {w.pid for w in workers}.isdisjoint({w.pid for w in _train_workers()})


def _as_before_run_json(run) -> None:
    """A Ray Train run of the shape umtune wrote before run.json: epoch_NNNNNN/ beside Ray's
    snapshot, which names them so, and no run.json, config.json or metrics.jsonl."""
    for checkpoint in (run / "checkpoints").iterdir():
        checkpoint.rename(run / checkpoint.name)
    (run / "checkpoints").rmdir()
    snapshot = run / SNAPSHOT_FILE
    snapshot.write_text(snapshot.read_text().replace("checkpoints/epoch_", "epoch_"))
    for name in ("run.json", "config.json", "metrics.jsonl"):
        (run / name).unlink()


def test_cli_resume_continues_a_ray_run_where_it_stopped(local_ray, tiny_dataset, tmp_path,
                                                          capsys):
    """`umtune train --workers 2` for 2 epochs, then `--resume` to 4: steps and history go on,
    on the workers and CPUs the run had. --log tensorboard: rank 0 logs every epoch into the
    run folder, the resumed run too."""
    run = tmp_path / "runs" / "tiny"
    sets = ["--set", "train.steps_per_epoch=3", "--set", "train.eval_segments=2",
            "--set", "data.segment_samples=400", "--set", "model.encoder.pool=200"]
    assert main(["train", "--workers", "2", "--cpus-per-worker", "0.5", "--data",
                 str(tiny_dataset), "--out", str(run), "--set", "train.max_epochs=2", *sets,
                 "--log", "tensorboard", "--log-audio-seconds", "0.1"]) == 0
    assert f"run: {run}" in capsys.readouterr().out
    state, history = ray_train.latest(run)
    assert state.epoch == 2 and [m["epoch"] for m in history] == [1, 2]

    assert main(["train", "--workers", "2", "--data", str(tiny_dataset), "--out", str(run),
                 "--set", "train.max_epochs=2", *sets]) == 2
    assert "already holds a run" in capsys.readouterr().err
    _as_before_run_json(run)  # as umtune wrote it before: refused, upgraded, then resumed
    assert main(["train", "--resume", str(run), "--set", "train.max_epochs=4"]) == 2
    assert "earlier shape" in capsys.readouterr().err
    assert main(["upgrade", str(run)]) == 0
    assert RunFolder(run).trainer() == "ray_train" and [
        m["epoch"] for m in read_history(run)] == [1, 2]
    assert main(["train", "--resume", str(run), "--set", "train.max_epochs=4", "--log",
                 "tensorboard", "--log-audio-seconds", "0"]) == 0
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"audio": 0}).Reload()
    assert sorted(e.step for e in events.Scalars("heldout_ce")) == [1, 2, 3, 4]
    assert [a.step for a in events.Audio("audio/source")] == [1, 2]  # then 0 s: none
    state, history = ray_train.latest(run)
    assert [m["epoch"] for m in history] == [1, 2, 3, 4]
    assert [m["step"] for m in history] == [3, 6, 9, 12] and state.step == 12
    assert [m["start_epoch"] for m in history] == [0, 0, 2, 2]
    # the resumed run kept its resources without being told them again
    assert all(m["world_size"] == 2 and m["gpu"] is False and m["cpus_per_worker"] == 0.5
               for m in history)
    assert main(["train", "--resume", str(tmp_path / "nothing"), "--workers", "2"]) == 2
    assert "no Ray Train run" in capsys.readouterr().err


CONNECT_AND_SHOW_POLICIES = """
import json, os, sys, threading, time, urllib.request, ray, torch
from umtune.trainable.ray_train import connect, use_assigned_cpus
connect(dashboard=sys.argv[1:] != ["--no-dashboard"])
@ray.remote(num_cpus=2)
def train():
    before = set(os.listdir("/proc/self/task"))
    use_assigned_cpus()
    torch.rand(512, 512) @ torch.rand(512, 512)  # starts torch's second thread
    started = set(os.listdir("/proc/self/task")) - before
    return sorted({os.sched_getscheduler(int(t))
                   for t in started | {str(threading.get_native_id())}})
time.sleep(5)  # Ray would have prestarted its idle workers by now
parents = {}
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        parents[int(pid)] = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
    except OSError:
        pass
ours, grown = {os.getpid()}, True
while grown:
    grown = {p for p, parent in parents.items() if parent in ours} - ours
    ours |= grown
def title(pid):
    try:
        return open(f"/proc/{pid}/cmdline").read()
    except OSError:
        return ""
url = ray.init(ignore_reinit_error=True).address_info["webui_url"]
token = open(os.environ["RAY_AUTH_TOKEN_PATH"]).read().strip()  # the session's (conftest)
version = urllib.request.Request(f"http://{url}/api/version",
                                 headers={"Authorization": f"Bearer {token}"})
print(json.dumps({"idle_workers": sum(title(p).startswith("ray::IDLE") for p in ours),
                  "dashboard_modules": sum(title(p).startswith("ray-dashboard-") for p in ours),
                  "dashboard": bool(url) and urllib.request.urlopen(version, timeout=30).status,
                  "driver": os.sched_getscheduler(0),
                  "ray": sorted({os.sched_getscheduler(p) for p in ours - {os.getpid()}}),
                  "task": ray.get(ray.remote(lambda: os.sched_getscheduler(0)).remote()),
                  "training": ray.get(train.remote())}))
"""


@pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="Linux scheduling policies")
@pytest.mark.parametrize("dashboard", [True, False])
def test_the_local_ray_umtune_starts_runs_as_batch_work_without_idle_workers(dashboard):
    """connect() starts Ray's services and workers (so trials) under SCHED_BATCH, and the
    driver, whose own thread launched them, keeps the default policy; no idle worker waits
    (each would wake 100 times a second); the dashboard (its nine module processes) runs unless
    told not to. A worker's training thread and the torch threads it starts go back to the
    default policy. In a fresh process: the module's Ray is started by the fixture."""
    run = subprocess.run([sys.executable, "-c", CONNECT_AND_SHOW_POLICIES]
                         + ["--no-dashboard"] * (not dashboard), capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    policies = json.loads(run.stdout.splitlines()[-1])
    modules = policies.pop("dashboard_modules")
    assert (modules >= 5) if dashboard else (modules == 0), policies
    assert policies == {"idle_workers": 0, "dashboard": 200 if dashboard else False,
                        "driver": os.SCHED_OTHER, "ray": [os.SCHED_BATCH],
                        "task": os.SCHED_BATCH, "training": [os.SCHED_OTHER]}, policies


def test_storage_must_be_shared_on_a_multi_node_cluster(tmp_path):
    """A node-local path is fine on one node and a clear error on several; URIs pass."""
    assert storage.check_storage(tmp_path, alive_nodes=1) == str(tmp_path.resolve())
    with pytest.raises(ValueError, match="this node's disk.*3 nodes.*file:///"):
        storage.check_storage(tmp_path, alive_nodes=3)
    for uri in ("s3://bucket/runs", "file:///mnt/shared/runs", "gs://b/r"):
        assert storage.check_storage(uri, alive_nodes=3) == uri
    with pytest.raises(ValueError, match="unknown scheme"):
        storage.check_storage("ftp://host/runs", alive_nodes=1)
    assert storage.split_run_dir("s3://bucket/runs/tiny") == ("s3://bucket/runs", "tiny")
    assert storage.split_run_dir(tmp_path / "tiny") == (str(tmp_path.resolve()), "tiny")


def test_global_batch_must_split_evenly_over_workers(tiny_dataset):
    cfg = tiny_run(tiny_dataset)  # batch_per_domain=2
    with pytest.raises(ValueError, match="batch_per_domain=2 must be divisible.*3"):
        ray_train.torch_trainer(cfg, Resources(workers=3), storage_path="/tmp", name="x")
