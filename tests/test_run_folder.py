"""The run folder: one shape, what run.json says, and the upgrade of the earlier shapes.

Ray Train's runs and a sweep's trials write the same shape: tests/test_ray_train.py (also the
upgrade of a Ray Train run of the earlier shape) and tests/test_sweep.py.
"""

from __future__ import annotations

import json
import shutil

from test_loop import tiny_run

from umtune.cli import main
from umtune.trainable.checkpoint import load_checkpoint
from umtune.trainable.loop import train
from umtune.trainable.run_folder import LocalRun, RunFolder, read_history


def _train_args(tiny_dataset, run, epochs: int):
    return ["train", "--data", str(tiny_dataset), "--out", str(run), "--set",
            "train.steps_per_epoch=1", "--set", f"train.max_epochs={epochs}", "--set",
            "data.segment_samples=800", "--set", "train.eval_segments=2", "--set",
            "train.indicator_seconds=0"]


def test_a_plain_run_is_one_folder_of_the_one_shape(tiny_dataset, tmp_path, capsys):
    """`umtune train --out RUN`: run.json (format 2, plain), config.json, metrics.jsonl and the
    newest checkpoint in checkpoints/epoch_NNNNNN/ holding the history up to it; translate,
    evaluate and export take the run folder for its newest checkpoint."""
    run = tmp_path / "run"
    assert main(_train_args(tiny_dataset, run, epochs=2)) == 0
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "config.json",
                                                     "metrics.jsonl", "run.json"]
    assert json.loads((run / "run.json").read_text()) == {"format": 2, "trainer": "plain"}
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["epoch_000002"]
    assert read_history(run / "checkpoints" / "epoch_000002") == read_history(run)
    assert load_checkpoint(run).epoch == 2
    capsys.readouterr()
    assert main(["evaluate", str(run), "--clips", "1", "--seconds", "0.1"]) == 0
    written = json.loads((run / "evaluation" / "metrics.json").read_text())
    assert written["checkpoint"] == str(run / "checkpoints" / "epoch_000002")
    assert main(["export", str(run), str(tmp_path / "shared")]) == 0


def test_a_run_folder_of_an_unknown_format_or_a_sweeps_trial_is_not_resumed(tiny_dataset,
                                                                           tmp_path, capsys):
    run = tmp_path / "run"
    assert main(_train_args(tiny_dataset, run, epochs=1)) == 0
    (run / "run.json").write_text(json.dumps({"format": 3, "trainer": "plain"}))
    assert main(["train", "--resume", str(run), "--set", "train.max_epochs=2"]) == 2
    assert f"{run}/run.json: format 3, trainer 'plain'; expected format 2" in \
        capsys.readouterr().err
    (run / "run.json").write_text(json.dumps({"format": 2, "trainer": "tune_trial"}))
    assert main(["train", "--resume", str(run), "--set", "train.max_epochs=2"]) == 2
    assert "a sweep's trial; expected a run of `umtune train`" in capsys.readouterr().err
    (run / "run.json").write_text("{")
    assert main(["train", "--resume", str(run), "--set", "train.max_epochs=2"]) == 2
    assert f"{run}/run.json: not a readable run description" in capsys.readouterr().err
    assert [m["epoch"] for m in read_history(run)] == [1]


def _as_before_run_json(run, tmp_path) -> None:
    """Turn a plain run of 3 epochs kept every epoch into the shape umtune wrote before
    run.json: checkpoint/ (the newest), checkpoints/minute_*/ (the kept ones, without their
    own history), and an evaluation of one of them beside it."""
    kept = {int(p.name.removeprefix("epoch_")): p for p in (run / "checkpoints").iterdir()}
    (run / "run.json").unlink()
    newest = kept.pop(max(kept))
    (newest / "metrics.jsonl").unlink()
    shutil.move(newest, run / "checkpoint")
    for epoch, folder in kept.items():
        (folder / "metrics.jsonl").unlink()
        folder.rename(run / "checkpoints" / f"minute_{epoch:04d}_000")
    (run / "checkpoints" / "evaluation-minute_0001_000").mkdir()
    (run / "checkpoints" / "evaluation-minute_0001_000" / "metrics.json").write_text("{}")


def test_a_run_of_the_earlier_shape_is_refused_until_upgraded_then_resumes(tiny_dataset,
                                                                          tmp_path, capsys):
    """Resume refuses a run folder of the earlier shape, naming `umtune upgrade RUN`; the
    upgrade gives each kept checkpoint its epoch's name and history (same bytes of state.pt),
    moves their evaluations to evaluation/epoch_N/, writes run.json, and the run resumes,
    keeping what was kept."""
    run = LocalRun(tmp_path / "run", echo=False, keep_every_minutes=1e-9)  # keeps every epoch
    train(tiny_run(tiny_dataset, max_epochs=3, steps_per_epoch=1), report=run)
    history = read_history(run.run_dir)
    states = {p.name: (p / "state.pt").read_bytes()
              for p in sorted((run.run_dir / "checkpoints").iterdir())}
    assert list(states) == ["epoch_000001", "epoch_000002", "epoch_000003"]
    _as_before_run_json(run.run_dir, tmp_path)

    assert main(["train", "--resume", str(run.run_dir), "--set", "train.max_epochs=4"]) == 2
    assert f"{run.run_dir}: a run folder of umtune's earlier shape (checkpoint/); expected " \
           f"run.json: run `umtune upgrade {run.run_dir}` once" in capsys.readouterr().err
    assert main(["upgrade", str(run.run_dir)]) == 0
    assert "3 checkpoint(s) now in checkpoints/" in capsys.readouterr().out
    folder = RunFolder(run.run_dir)
    assert folder.trainer() == "plain" and not (run.run_dir / "checkpoint").exists()
    assert {p.name: (p / "state.pt").read_bytes()
            for p in sorted((run.run_dir / "checkpoints").iterdir())} == states
    assert read_history(run.run_dir / "checkpoints" / "epoch_000002") == history[:2]
    assert (run.run_dir / "evaluation" / "epoch_000001" / "metrics.json").is_file()
    assert main(["upgrade", str(run.run_dir)]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert main(["train", "--resume", str(run.run_dir), "--set", "train.max_epochs=4",
                 "--set", "train.indicator_seconds=0"]) == 0
    assert [m["epoch"] for m in folder.history()] == [1, 2, 3, 4]
    # resumed without --keep-every, the run removes nothing an earlier process kept
    assert sorted(p.name for p in (run.run_dir / "checkpoints").iterdir()) == [
        f"epoch_00000{e}" for e in (1, 2, 3, 4)]
    assert main(["upgrade", str(tmp_path / "nothing")]) == 2
    assert "no run of an earlier shape here" in capsys.readouterr().err
