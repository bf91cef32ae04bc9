"""Checkpoints and run folders on disk: refused when their weights do not fit their config,
shared with the permissions the umask allows, replaced so that a reader never finds none; a
run folder is never overwritten by a new run nor left behind by one that never started."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from test_loop import tiny_run

from umtune.cli import main
from umtune.data import Dataset
from umtune.trainable.checkpoint import (
    checkpoint_config,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from umtune.trainable.loop import Trainer, train
from umtune.trainable.run_folder import LocalRun


def _state(tiny_dataset, **train):
    return Trainer(tiny_run(tiny_dataset, **train), Dataset.open(tiny_dataset)).state()


def test_weights_that_do_not_fit_the_config_are_refused_naming_the_file(tiny_dataset,
                                                                        tmp_path, capsys):
    """A checkpoint whose config was edited (wider encoder) is a one-line error naming the file
    and the first mismatching tensor, from load_checkpoint and from `umtune translate`."""
    state = _state(tiny_dataset)
    wider = replace(state.config, model=replace(state.config.model, encoder=replace(
        state.config.model.encoder, channels=state.config.model.encoder.channels * 2)))
    path = save_checkpoint(replace(state, config=wider), tmp_path / "ckpt")
    with pytest.raises(ValueError, match=r"checkpoint .*state.pt: its weights do not match its "
                                         r"config \(autoencoder\.encoder\..* is "
                                         r"\[\d+, \d+, \d+\], the config makes it \[\d+"):
        load_checkpoint(path)
    fewer = {k: v for k, v in state.model.items() if ".decoders.flute." not in k}
    save_checkpoint(replace(state, model=fewer), tmp_path / "cut")
    with pytest.raises(ValueError, match=r"missing autoencoder\.decoders\.flute\."):
        load_checkpoint(tmp_path / "cut")
    clip = tmp_path / "clip.wav"
    import soundfile as sf

    sf.write(clip, [0.1, -0.1] * 2000, 16000)
    assert main(["translate", "--checkpoint", str(path), "--to", "flute", str(clip), "-o",
                 str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "its weights do not match its config" in err and err.count("\n") == 1


@pytest.mark.parametrize("umask, folder, file", [(0o022, 0o755, 0o644), (0o027, 0o750, 0o640)])
def test_checkpoints_get_the_permissions_the_umask_allows(tiny_dataset, tmp_path, umask,
                                                          folder, file):
    """Run folder, checkpoint folder and state.pt are readable by the group (and others under
    022), as the umask says: colleagues on shared storage can evaluate them."""
    old = os.umask(umask)
    try:
        run = LocalRun(tmp_path / "run", echo=False)
        train(tiny_run(tiny_dataset, max_epochs=1, steps_per_epoch=1), report=run)
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert (mode(run.run_dir), mode(run.checkpoint), mode(run.checkpoint / "state.pt")) == \
        (folder, folder, file)


def test_replacing_a_checkpoint_never_leaves_a_moment_without_one(tiny_dataset, tmp_path):
    """Each new checkpoint appears whole (one rename of its folder) before the one it replaces
    is removed; a reader polling all the while always finds a loadable newest one."""
    run = LocalRun(tmp_path / "run", echo=False)
    state = _state(tiny_dataset)
    staged = save_checkpoint(state, tmp_path / "staged")
    run({"epoch": 1}, staged)
    seen, stop = [], threading.Event()

    def newest_is_whole() -> bool:
        try:
            return (run.checkpoint / "state.pt").is_file()
        except FileNotFoundError:
            return False

    def read() -> None:
        while not stop.is_set():  # a listing taken just before a removal is read again
            seen.append(newest_is_whole() or newest_is_whole())
            time.sleep(0.0005)  # leave the writer the interpreter

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for epoch in range(2, 12):
            save_checkpoint(replace(state, epoch=epoch), staged)
            run({"epoch": epoch}, staged)
    finally:
        stop.set()
        reader.join()
    assert seen and all(seen)
    assert load_checkpoint(run.checkpoint).epoch == 11
    assert sorted(p.name for p in run.checkpoint.iterdir()) == ["metrics.jsonl", "state.pt"]
    assert sorted(p.name for p in run.run_dir.iterdir()) == ["checkpoints", "metrics.jsonl",
                                                             "run.json"]
    assert [p.name for p in (run.run_dir / "checkpoints").iterdir()] == ["epoch_000011"]


def test_a_run_that_fails_before_its_first_epoch_leaves_no_directory(tiny_dataset, tmp_path,
                                                                    capsys):
    """A config the dataset cannot serve (a domain it lacks) fails without a run folder."""
    run = tmp_path / "run"
    assert main(["train", "--data", str(tiny_dataset), "--out", str(run),
                 "--set", "model.domains=[piano, banjo]"]) == 2
    assert "['banjo'] are not in dataset" in capsys.readouterr().err
    assert not run.exists()


def test_a_new_run_takes_its_datasets_sample_rate_and_a_set_against_it_is_refused(
        tiny_dataset, tmp_path, capsys):
    """Presets count in samples: `cpu` (chosen at 8 kHz) on a 16 kHz dataset runs at 16 kHz;
    a --set of another rate names both."""
    run = tmp_path / "run"
    assert main(["train", "--preset", "cpu", "--data", str(tiny_dataset), "--out", str(run),
                 "--set", "train.steps_per_epoch=1", "--set", "train.max_epochs=1",
                 "--set", "train.eval_segments=2"]) == 0
    assert json.loads((run / "config.json").read_text())["data"]["sample_rate"] == 16000
    assert main(["train", "--data", str(tiny_dataset), "--out", str(tmp_path / "other"),
                 "--set", "data.sample_rate=8000"]) == 2
    assert "is at 16000 Hz but the model runs at data.sample_rate=8000" in \
        capsys.readouterr().err


def test_train_out_onto_an_existing_run_without_resume_is_refused(tiny_dataset, tmp_path,
                                                                  capsys):
    """A second `train --out RUN` exits 2 and leaves the first run's files as they were."""
    run = tmp_path / "run"
    args = ["train", "--data", str(tiny_dataset), "--out", str(run), "--set",
            "train.steps_per_epoch=1", "--set", "train.max_epochs=1", "--set",
            "data.segment_samples=800", "--set", "train.eval_segments=2"]
    assert main(args) == 0
    before = {p.name: p.read_bytes() for p in (run / "metrics.jsonl", run / "config.json",
                                                 LocalRun(run).checkpoint / "state.pt")}
    capsys.readouterr()
    assert main(args) == 2
    assert f"{run} already holds a run" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in (run / "metrics.jsonl", run / "config.json",
                                               LocalRun(run).checkpoint / "state.pt")} == before
    assert [json.loads(line)["epoch"] for line in
            (run / "metrics.jsonl").read_text().splitlines()] == [1]


def test_a_second_trainer_of_one_run_is_refused_and_a_killed_ones_lock_is_free(tiny_dataset,
                                                                              tmp_path, capsys):
    """While one `umtune train --out RUN` trains, a second into RUN (new or --resume) exits 2
    naming the other process's lock; once the first is killed (-9), the run resumes."""
    run = tmp_path / "run"
    args = ["--data", str(tiny_dataset), "--out", str(run), "--set", "train.steps_per_epoch=2",
            "--set", "train.max_epochs=1000", "--set", "data.segment_samples=800",
            "--set", "train.eval_segments=2", "--set", "train.indicator_seconds=0"]
    first = subprocess.Popen([sys.executable, "-m", "umtune.cli", "train", *args],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (run / "metrics.jsonl").exists():  # it holds the lock and has an epoch
            assert first.poll() is None and time.monotonic() < deadline, "first run stalled"
            time.sleep(0.2)
        assert main(["train", *args]) == 2
        assert "another umtune process is training this run" in capsys.readouterr().err
        assert main(["train", "--resume", str(run), "--set", "train.max_epochs=1000"]) == 2
        assert f"{run}: another umtune process" in capsys.readouterr().err
    finally:
        first.kill()
        first.wait()
    done = len((run / "metrics.jsonl").read_text().splitlines())
    assert main(["train", "--resume", str(run), "--set", f"train.max_epochs={done + 1}"]) == 0
    assert len((run / "metrics.jsonl").read_text().splitlines()) == done + 1


@pytest.fixture
def small_disk(tmp_path):
    """A 16 KiB tmpfs (root only): too small for a checkpoint; remount(size) resizes it."""
    if os.geteuid() != 0:
        pytest.skip("mounts a tmpfs: needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(disk)]).returncode:
        pytest.skip("cannot mount a tmpfs here")

    def remount(options: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{options}", str(disk)], check=True)

    yield disk, remount
    subprocess.run(["umount", str(disk)], check=True)


def _train_args(tiny_dataset, run):
    return ["train", "--data", str(tiny_dataset), "--out", str(run), "--set",
            "train.steps_per_epoch=1", "--set", "train.max_epochs=1", "--set",
            "data.segment_samples=800", "--set", "train.eval_segments=2"]


def test_a_disk_that_fills_at_the_first_checkpoint_leaves_a_folder_a_new_run_can_take(
        tiny_dataset, small_disk, capsys):
    """The first checkpoint does not fit: exit 2 naming the file; the folder is no run (resume
    says so) and, once there is room, a new run into it trains."""
    disk, remount = small_disk
    run = disk / "run"
    assert main(_train_args(tiny_dataset, run)) == 2
    err = capsys.readouterr().err
    assert f"{disk}/" in err and "state.pt: cannot write the checkpoint" in err
    assert "No space left on device" in err and err.count("\n") == 1
    assert [p.name for p in disk.glob(".*")] == [".run.lock"]  # no staging left
    assert main(["train", "--resume", str(run)]) == 2
    assert f"{run} holds no complete checkpoint" in capsys.readouterr().err
    remount("size=8m")
    assert main(_train_args(tiny_dataset, run)) == 0
    assert (LocalRun(run).checkpoint / "state.pt").is_file()
    assert [p.name for p in disk.glob(".*")] == [".run.lock"] and not list(run.rglob(".*.tmp"))


def test_an_unwritable_run_folder_is_refused_before_training(tiny_dataset, small_disk, capsys):
    disk, remount = small_disk
    remount("ro")
    assert main(_train_args(tiny_dataset, disk / "run")) == 2
    captured = capsys.readouterr()
    assert f"run folder {disk / 'run'}: cannot write there" in captured.err
    assert "epoch" not in captured.out


def test_checkpoint_staging_left_by_a_killed_process_is_removed(tiny_dataset, tmp_path):
    """Each epoch's checkpoint is staged beside the run; a staging folder of a dead process
    (its pid in the name) is removed when a run starts there, one of a live process is not."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = Path(tempfile.mkdtemp(prefix=f".umtune-ckpt-{dead.pid}-", dir=tmp_path))
    live = Path(tempfile.mkdtemp(prefix=f".umtune-ckpt-{os.getpid()}-", dir=tmp_path))
    try:
        train(tiny_run(tiny_dataset, max_epochs=1, steps_per_epoch=1),
              report=LocalRun(tmp_path / "run", echo=False), staging=tmp_path)
        assert not stale.exists() and live.exists()
    finally:
        shutil.rmtree(stale, ignore_errors=True)
        shutil.rmtree(live, ignore_errors=True)


def test_resume_keeps_what_the_weights_fix_and_refuses_edits_and_strangers(tiny_dataset,
                                                                           tmp_path,
                                                                           monkeypatch, capsys):
    """A run started with a relative --data resumes from another folder (the path is stored
    absolute) and from a moved dataset (--data on --resume); a --set of the model's size, an
    edited config.json and a checkpoint copied in from another run are refused, naming what;
    --adopt takes the stranger."""
    monkeypatch.chdir(tiny_dataset.parent)
    run, other = tmp_path / "run", tmp_path / "other"
    for folder in (run, other):
        assert main([*_train_args(tiny_dataset.name, folder), "--set",
                     f"train.seed={len(folder.name)}"]) == 0
    saved = json.loads((run / "config.json").read_text())
    assert saved["data"]["path"] == str(tiny_dataset)
    monkeypatch.chdir(tmp_path)
    moved = shutil.copytree(tiny_dataset, tmp_path / "moved")
    assert main(["train", "--resume", str(run), "--data", str(moved), "--set",
                 "train.max_epochs=2"]) == 0
    assert load_checkpoint(run).config.data.path == str(moved)
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--set", "model.decoder.residual_channels=4",
                 "--set", "train.max_epochs=3"]) == 2
    assert "model.decoder.residual_channels (32 against 4): a resumed run's checkpoint fixes" \
        in capsys.readouterr().err
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "train": {**config["train"],
                                                                      "lr": 0.5}}))
    assert main(["train", "--resume", str(run), "--set", "train.max_epochs=3"]) == 2
    assert "config.json differs from its checkpoint's config at train.lr" in \
        capsys.readouterr().err
    (run / "config.json").write_text(json.dumps(config))
    shutil.copy(LocalRun(other).checkpoint / "state.pt", LocalRun(run).checkpoint / "state.pt")
    shutil.copy(other / "config.json", run / "config.json")
    assert main(["train", "--resume", str(run), "--set", "train.max_epochs=3"]) == 2
    assert "was written by another run" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "--adopt", "--set", "train.max_epochs=3"]) == 0
    # A run written before a field existed (its config.json without it) resumes: the default.
    config = json.loads((run / "config.json").read_text())
    del config["train"]["splice_fraction"]
    (run / "config.json").write_text(json.dumps(config))
    assert main(["train", "--resume", str(run), "--set", "train.max_epochs=4"]) == 0


@pytest.mark.parametrize(("signum", "code", "how"), [(signal.SIGTERM, 143, "terminated (SIGTERM)"),
                                                     (signal.SIGINT, 130, "interrupted")])
def test_a_stopped_training_says_what_was_saved_and_resumes(tiny_dataset, tmp_path, signum,
                                                            code, how):
    """SIGTERM (143) and SIGINT (130) after the first epoch: one line naming the checkpoint and
    the command to continue, which then continues the run. A run that does not stop is aborted
    with every thread's stack on its stderr."""
    run = tmp_path / "run"
    args = [*_train_args(tiny_dataset, run)[1:-4], "--set", "train.max_epochs=1000",
            "--set", "data.segment_samples=800", "--set", "train.indicator_seconds=0"]
    # SIGINT as a terminal delivers it: a test run started in the background (`make test &`
    # from a script) hands its children SIGINT ignored, which Python then keeps ignoring.
    proc = subprocess.Popen([sys.executable, "-m", "umtune.cli", "train", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONFAULTHANDLER": "1"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not (run / "metrics.jsonl").exists():
        assert proc.poll() is None and time.monotonic() < deadline, "no epoch finished"
        time.sleep(0.2)
    proc.send_signal(signum)
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)  # faulthandler prints where each thread is
        pytest.fail(f"still running 120 s after signal {signum}:\n{proc.communicate()[1]}")
    assert proc.returncode == code
    assert re.fullmatch(
        re.escape(f"umtune: {how}; {run}/checkpoints/epoch_") + r"\d{6}" + re.escape(
            f" holds the last finished epoch: continue with `umtune train --resume {run}`"),
        err.strip().splitlines()[-1])
    done = len((run / "metrics.jsonl").read_text().splitlines())
    assert main(["train", "--resume", str(run), "--set", f"train.max_epochs={done + 1}"]) == 0


def test_an_exported_model_is_the_generation_weights_and_config_alone(tiny_dataset, tmp_path,
                                                                       capsys):
    """`umtune export CKPT OUT`: OUT holds model.pt (a plain state_dict of the moving average)
    and config.json, smaller than the checkpoint; load_model and evaluate read it as the
    checkpoint's network; a non-empty OUT is refused, and so is a table (no training time)."""
    run = LocalRun(tmp_path / "run", echo=False)
    train(tiny_run(tiny_dataset, max_epochs=1, steps_per_epoch=2, ema_decay=0.9), report=run)
    out = tmp_path / "shared"
    assert main(["export", str(run.checkpoint), str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.pt"]
    assert (out / "model.pt").stat().st_size < (run.checkpoint / "state.pt").stat().st_size / 2
    weights = torch.load(out / "model.pt", weights_only=True)
    exported, config = load_model(out)
    original, _ = load_model(run.checkpoint)
    assert config == load_checkpoint(run.checkpoint).config == checkpoint_config(out) \
        == checkpoint_config(run.checkpoint) == checkpoint_config(run.run_dir)
    for name, value in original.state_dict().items():
        assert torch.equal(exported.state_dict()[name], value) and torch.equal(
            weights[name], value), name
    assert main(["export", str(run.checkpoint), str(out)]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    evaluation = tmp_path / "evaluation"
    assert main(["evaluate", str(out), "--clips", "1", "--seconds", "0.1", "-o",
                 str(evaluation)]) == 0
    assert (evaluation / "metrics.json").is_file()
    assert main(["evaluate", str(out), "--table", str(tmp_path / "t.md")]) == 2
    assert "is an exported model; expected a training checkpoint" in capsys.readouterr().err
