"""Live tracking (umtune/trainable/tracking.py) with the real packages: TensorBoard's event
files read back with TensorBoard's own reader, W&B in offline mode read back from its run file,
MLflow into a local SQLite store read back with its client. Sweeps: tests/test_sweep.py."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from wandb.proto import wandb_internal_pb2

from umtune.cli import main
from umtune.trainable import tracking

BLOCK, HEADER = 32768, 7  # W&B's run file: LevelDB's log format after a 7-byte file header


def wandb_history(run_file: Path) -> list[dict]:
    """The `history` records of an offline W&B run file, as {key: value}."""
    data, pos, part, rows = run_file.read_bytes(), HEADER, b"", []
    assert data.startswith(b":W&B")
    while pos + HEADER <= len(data):
        if BLOCK - pos % BLOCK < HEADER:  # a block's tail too short for a record header
            pos += BLOCK - pos % BLOCK
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        part += data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        if kind in (1, 4):  # a whole record, or the last fragment of one
            record = wandb_internal_pb2.Record.FromString(part)
            part = b""
            if record.WhichOneof("record_type") == "history":
                rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                             for item in record.history.item})
    return rows


def test_train_logs_each_epoch_and_its_audio_to_tensorboard_wandb_and_mlflow(
        tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)  # MLflow keeps a SQLite store's artifacts in ./mlruns
    run = tmp_path / "run"
    assert main(["train", "--data", str(tiny_dataset), "--out", str(run), "--set",
                 "train.max_epochs=2", "--set", "train.steps_per_epoch=2", "--log",
                 "tensorboard,wandb,mlflow", "--log-audio-seconds", "0.25"]) == 0
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    ce = [round(h["heldout_ce"], 4) for h in history]
    clips = {"audio/source", "audio/piano_reconstructed", "audio/piano_to_flute"}

    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"audio": 0}).Reload()
    assert [(e.step, round(e.value, 4)) for e in events.Scalars("heldout_ce")] == \
        list(zip([1, 2], ce, strict=True))
    assert set(events.Tags()["audio"]) == clips
    assert {a.length_frames for a in events.Audio("audio/piano_to_flute")} == {4000}

    (run_file,) = run.glob("wandb/offline-run-*/run-*.wandb")
    rows = [r for r in wandb_history(run_file) if "heldout_ce" in r]
    assert [(r["_step"], round(r["heldout_ce"], 4)) for r in rows] == \
        list(zip([1, 2], ce, strict=True))
    assert all(any(key.startswith(f"{clip}/") for key in row) for clip in clips for row in rows)
    assert len(list(run.glob("wandb/offline-run-*/files/media/audio/**/*.wav"))) == 6

    client = mlflow.MlflowClient()
    (found,) = client.search_runs([client.get_experiment_by_name("umtune").experiment_id])
    assert found.info.run_name == "run" and found.data.params["train.steps_per_epoch"] == "2"
    assert [(m.step, round(m.value, 4)) for m in
            client.get_metric_history(found.info.run_id, "heldout_ce")] == \
        list(zip([1, 2], ce, strict=True))
    assert len(client.list_artifacts(found.info.run_id, "audio")) == 6
    assert list((tmp_path / "mlruns").rglob("*.wav"))


def test_an_unknown_or_missing_tracker_is_refused_before_training(tiny_dataset, tmp_path,
                                                                  capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", str(tiny_dataset), "--out", str(run), "--log",
                 "tensorboard,neptune"]) == 2
    assert "unknown tracker 'neptune'; expected some of tensorboard, wandb, mlflow" in \
        capsys.readouterr().err
    assert main(["train", "--workers", "2", "--data", str(tiny_dataset), "--out", str(run),
                 "--log", "mlflow", "--dry-run"]) == 0  # a dry run trains nothing
    assert not run.exists()


@pytest.mark.parametrize("names", ["", "tensorboard", "mlflow,wandb,mlflow"])
def test_log_names_parse(names):
    assert tracking.parse_log(names) == tuple(dict.fromkeys(n for n in names.split(",") if n))
