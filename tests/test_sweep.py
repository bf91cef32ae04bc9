"""Sweeps on a real Ray cluster (`ray start --head` on this machine): tune.run and Tuner on the
trainable, failures and divergence recorded, resume after the driver is SIGKILLed, results."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import optuna
import pandas as pd
import pytest
import ray
from ray import tune
from ray_nodes import RayNodes, cpus_not_free

import umtune.search_spaces
import umtune.sweep
from umtune.cli import main
from umtune.config import overrides, preset
from umtune.trainable.checkpoint import load_model
from umtune.trainable.run_folder import RunFolder

pytestmark = pytest.mark.slow  # real Ray clusters: minutes
# Trials short enough that Train's worker start-up (~20 s) dominates: 2 epochs of 3 steps.
FAST = ["train.max_epochs=2", "train.steps_per_epoch=3", "train.eval_segments=2",
        "data.segment_samples=800", "model.encoder.pool=200"]


CPUS = 2  # the sweeps' Ray head's


@pytest.fixture(scope="module")
def _head():
    """A Ray head started like a user's (`ray start --head`), shared by the module."""
    head = [RayNodes().start_head(cpus=CPUS)]
    yield head
    ray.shutdown()
    head[0].stop()


@pytest.fixture
def cluster(_head):
    """The head's address; sweeps join it. A test must leave its CPUs free: one that does not
    fails, and the next test gets a new head instead of a sweep that waits forever for them."""
    yield _head[0].address
    ray.init(address=_head[0].address, ignore_reinit_error=True)
    missing = cpus_not_free(CPUS)
    ray.shutdown()  # the trials this process started end with it
    if missing:
        _head[0].stop()
        _head[0] = RayNodes().start_head(cpus=CPUS)
        pytest.fail(f"{missing:g} CPUs of the sweeps' Ray were not free a minute after the test")


def _base(data):
    return overrides(preset("tiny", ("piano", "flute")), [f"data.path={data}", *FAST])


def _sets():
    return [arg for item in FAST for arg in ("--set", item)]


def test_tune_run_and_tuner_run_the_trainable_on_a_named_space(cluster, tiny_dataset, tmp_path):
    """The README's two ways: tune.run over the ablation grid (lambda and augmentation on and
    off, two seeds each), and a Tuner sampling the demo's space (three trials: the grid's
    eight once is enough on a 2-core machine)."""
    ray.init(address=cluster)
    config = umtune.search_spaces.get("ablation", _base(tiny_dataset))
    config["trial"] = {"storage": str(tmp_path / "train"), "eval_clips": 0}
    analysis = tune.run(tune.with_resources(umtune.sweep.tune_trial,
                                            umtune.sweep.trial_resources),
                        config=config, storage_path=str(tmp_path), name="run", verbose=0)
    df = analysis.dataframe()
    assert len(df) == 8 and set(df["epoch"]) == {2}
    assert sorted((r["config/train.confusion_lambda"], r["config/train.aug_semitones"],
                   r["config/train.seed"]) for _, r in df.iterrows()) == [
        (lam, aug, seed) for lam in (0.0, 0.01) for aug in (0.0, 0.5) for seed in (0, 1)]

    tuner = tune.Tuner(tune.with_resources(umtune.sweep.tune_trial,
                                            umtune.sweep.trial_resources),
                       param_space={**umtune.search_spaces.get("lambda-aug",
                                                               _base(tiny_dataset)),
                                    "trial": {"storage": str(tmp_path / "train"),
                                              "eval_clips": 0}},
                       tune_config=tune.TuneConfig(metric="heldout_ce", mode="min",
                                                   num_samples=3),
                       run_config=tune.RunConfig(storage_path=str(tmp_path), name="tuner",
                                                 verbose=0))
    grid = tuner.fit()
    assert len(grid) == 3 and not grid.errors
    assert len({r.config["train.aug_semitones"] for r in grid}) == 3  # sampled, not the base's
    assert grid.get_best_result().metrics["heldout_ce"] == min(r.metrics["heldout_ce"]
                                                                for r in grid)


def test_failed_and_diverged_trials_are_recorded_and_the_sweep_goes_on(
        cluster, tiny_dataset, tmp_path, capsys, monkeypatch):
    """A grid of 4: one good trial, one with lr 1e30 (diverges), two with a missing dataset
    (raise). The sweep finishes, the table says why each failed, the exit code is 1; the good
    trial is evaluated with two seeds. --log: every trial's reports reach TensorBoard (event
    files in the trial folders) and MLflow (a run per trial in the sweep's experiment)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)  # MLflow keeps a SQLite store's artifacts in ./mlruns
    space = tmp_path / "failing.yaml"
    space.write_text(f"params:\n  train.lr: {{type: grid, values: [0.003, 1.0e+30]}}\n"
                     f"  data.path: {{type: grid, values: ['{tiny_dataset}', "
                     f"'{tmp_path / 'missing'}']}}\n")
    code = main(["sweep", "--space", str(space), "--data", str(tiny_dataset), "--search", "grid",
                 "--scheduler", "none", "--storage", str(tmp_path), "--name", "failing",
                 "--address", cluster, "--eval-seeds", "2", "--log", "tensorboard,mlflow",
                 *_sets()])
    out, err = capsys.readouterr()
    assert code == 1 and "4 trials" in out and "3 failed" in out, err[-2000:]
    table = pd.read_parquet(tmp_path / "failing" / "trials.parquet")
    by_case = {(r["train.lr"], Path(r["data.path"]).name): r for _, r in table.iterrows()}
    good = by_case[(0.003, Path(tiny_dataset).name)]
    assert good["status"] == "completed" and good["epoch"] == 2 and good["pareto"]
    assert good["world_size"] == 1 and list(Path(good["path"]).glob("checkpoint_*"))  # in-trial
    assert good["precision"] == json.loads(Path(good["path"], "result.json").read_text(
        ).splitlines()[-1])["precision"] in ("fp32", "bf16")  # what `auto` chose
    evaluation = json.loads((Path(good["run_path"]) / "evaluation" / "metrics.json").read_text())
    assert good["eval/timbre_acc"] == evaluation["summary"]["timbre_acc"]  # scored at the end
    assert [s["seed"] for s in evaluation["per_seed"]] == [0, 1]  # --eval-seeds 2
    assert {(p["source"], p["target"]) for p in evaluation["pairs"]} >= {("piano", "flute")}
    diverged = by_case[(1e30, Path(tiny_dataset).name)]
    assert diverged["status"] == "diverged" and "loss is" in diverged["reason"]
    assert diverged["epoch"] == 1 and diverged["step"] < 3  # stopped at once, not retried
    for lr in (0.003, 1e30):
        failed = by_case[(lr, "missing")]
        assert failed["status"] == "failed" and "missing" in failed["reason"]
        assert (Path(failed["path"]) / "error.txt").exists()  # Tune's traceback
    assert pd.read_csv(tmp_path / "failing" / "trials.csv").shape == table.shape
    assert list(Path(good["path"]).glob("events.out.tfevents*"))
    client = mlflow.MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("failing").experiment_id])
    logged = {r.info.run_name: r for r in runs}
    assert len(runs) == 4 and good["trial"] in logged
    assert [m.step for m in client.get_metric_history(logged[good["trial"]].info.run_id,
                                                      "heldout_ce")] == [1, 2]
    assert main(["best", str(tmp_path / "failing")]) == 0  # the one completed trial's newest
    best = capsys.readouterr()
    run = RunFolder(good["run_path"])  # the trial's run folder, of the one shape
    assert best.out.strip() == str(run.checkpoint) and run.checkpoint.name == "epoch_000002"
    assert run.trainer() == "tune_trial" and [m["epoch"] for m in run.history()] == [1, 2]
    assert json.loads(Path(run.file("config.json")).read_text())["train"]["lr"] == 0.003
    assert best.err.startswith(f"best trial: {good['trial']} (highest eval/translation_gain")
    assert load_model(Path(best.out.strip()))[1].train.lr == 0.003
    study = optuna.load_study(study_name="failing",
                              storage=f"sqlite:///{tmp_path / 'failing' / 'study.db'}")
    states = sorted(t.state.name for t in study.trials)
    assert states == ["COMPLETE", "FAIL", "FAIL", "FAIL"]
    (done,) = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert sorted(done.intermediate_values) == [1, 2]  # held-out CE per epoch
    assert done.intermediate_values[2] == pytest.approx(good["heldout_ce"])


@pytest.mark.parametrize("scheduler", ["median", "hyperband"])
def test_median_and_hyperband_stop_the_trials_that_do_not_learn(cluster, tiny_dataset,
                                                                 tmp_path, scheduler):
    """One learning rate that learns, three that barely move: the median rule stops some of the
    three on held-out CE at equal epochs; HyperBand (which pauses and resumes trials) spreads
    four trials over its brackets and may stop none; the one that learns runs to its end."""
    space = tmp_path / "lr.yaml"
    space.write_text("params:\n"
                     "  train.lr: {type: grid, values: [3.0e-3, 1.0e-9, 2.0e-9, 3.0e-9]}\n")
    assert main(["sweep", "--space", str(space), "--search", "grid", "--scheduler", scheduler,
                 "--data", str(tiny_dataset), "--storage", str(tmp_path), "--name", scheduler,
                 "--address", cluster, "--eval-clips", "0", *_sets(),
                 "--set", "train.max_epochs=4"]) == 0
    table = pd.read_parquet(tmp_path / scheduler / "trials.parquet")
    assert set(table["status"]) == ({"completed", "stopped early"} if scheduler == "median"
                                    else set(table["status"]) & {"completed", "stopped early"})
    assert table.set_index("train.lr").loc[3e-3, "status"] == "completed"


@pytest.mark.parametrize("scheduler, param, search", [
    ("pbt", "{type: grid, values: [3.0e-3, 2.0e-3, 1.0e-9, 2.0e-9]}", ["--search", "grid"]),
    ("pb2", "{type: loguniform, low: 1.0e-9, high: 3.0e-3}", ["--samples", "4", "--seed", "1"]),
])
def test_population_based_trials_take_the_best_trials_weights_and_continue(
        cluster, tiny_dataset, tmp_path, capsys, scheduler, param, search):
    """Population-based training (PBT, PB2) over four concurrent one-worker trials of learning
    rates far apart: a trial that took another's weights continues that trial's history (each
    of its epochs is one that the trial named for it reported, to the last digit), its lineage
    and schedule say so, and all complete."""
    space = tmp_path / "lr.yaml"
    space.write_text(f"params:\n  train.lr: {param}\n")
    assert main(["sweep", "--space", str(space), "--scheduler", scheduler, *search, "--data",
                 str(tiny_dataset), "--storage", str(tmp_path), "--name", scheduler,
                 "--address", cluster, "--eval-clips", "0", "--cpus-per-worker", "0.5",
                 *_sets(), "--set", "train.max_epochs=4"]) == 0
    assert "lineage" in capsys.readouterr().out
    table = pd.read_parquet(tmp_path / scheduler / "trials.parquet").set_index("trial")
    assert set(table["status"]) == {"completed"} and set(table["epoch"]) == {4}
    kept = [len(list(Path(path).glob("checkpoint_*"))) for path in table["path"]]
    assert max(kept) >= 4, kept  # a trial never exploited keeps all 4: `checkpoints_kept`

    took = [t for t in table.index if not table.loc[t, "lineage"].startswith(f"{t} ")]
    assert took, table["lineage"].tolist()
    for trial in took:
        newest = max(Path(table.loc[trial, "path"]).glob("checkpoint_*"))
        history = [json.loads(line) for line in (newest / "metrics.jsonl").read_text()
                   .splitlines()]
        assert [h["epoch"] for h in history] == [1, 2, 3, 4]
        assert history[-1]["epoch_trial"] == trial
        assert {h["epoch_trial"] for h in history} - {trial} <= set(table.index)
        assert table.loc[trial, "schedule"].startswith("train.lr ")
    report = tmp_path / "report.html"
    assert main(["report", str(tmp_path / scheduler), "-o", str(report)]) == 0
    assert table.loc[took[0], "lineage"] in report.read_text()  # the report's trial table


def _terminated(sweep: Path) -> int:
    """Trials Tune's saved experiment state records as finished."""
    states = sorted(sweep.glob("experiment_state*.json"))
    return states[-1].read_text().count('\\"status\\": \\"TERMINATED\\"') if states else 0


def test_resume_after_the_driver_is_killed_keeps_finished_trials(cluster, tiny_dataset,
                                                                 tmp_path, capsys):
    """SIGKILL `umtune sweep` once a trial has finished (the Optuna study in the sweep folder
    already holds it); `--resume` finishes the other three, the finished trial is neither lost
    nor run again, and the (multi-objective) Optuna searcher goes on: the table marks the
    Pareto front of held-out CE and generation FLOPs. --enqueue-base: the first trial is the
    base config."""
    cmd = [sys.executable, "-m", "umtune.cli", "sweep", "--space", "ablation", "--search",
           "optuna", "--enqueue-base", "--samples", "4", "--scheduler", "asha", "--objective",
           "quality,cost",
           "--data", str(tiny_dataset),
           "--storage", str(tmp_path), "--name", "sweep", "--address", cluster,
           "--max-concurrent", "1", "--eval-clips", "0", *_sets()]
    driver = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sweep = tmp_path / "sweep"
    deadline = time.monotonic() + 300
    while _terminated(sweep) < 1:
        assert driver.poll() is None and time.monotonic() < deadline, "no trial finished"
        time.sleep(0.5)
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    finished = {p.parent.name: p.read_text() for p in sweep.glob("trial_*/result.json")
                if len(p.read_text().splitlines()) == 2}
    assert finished and not (sweep / "trials.parquet").exists()
    live = optuna.load_study(study_name="sweep", storage=f"sqlite:///{sweep / 'study.db'}")
    assert set(finished) <= {t.user_attrs["trial"] for t in live.trials}  # kept while it ran

    assert main(["sweep", "--resume", str(sweep), "--address", cluster]) == 0
    assert "4 trials" in capsys.readouterr().out
    table = pd.read_parquet(sweep / "trials.parquet")
    assert len(table) == 4 and table["trial"].is_unique
    assert set(table["status"]) <= {"completed", "stopped early"}
    for trial, results in finished.items():  # not re-run: same results, same single run
        assert (sweep / trial / "result.json").read_text() == results
        assert table.set_index("trial").loc[trial, "status"] == "completed"
    assert table["pareto"].any() and table["generation_flops_per_sample"].nunique() == 1
    saved = json.loads((sweep / "sweep.json").read_text())
    assert saved["options"]["search"] == "optuna" and saved["options"]["samples"] == 4
    assert (0.01, 0.5, 0) in {(r["train.confusion_lambda"], r["train.aug_semitones"],
                               r["train.seed"]) for _, r in table.iterrows()}  # enqueued base


def test_a_two_worker_trial_trains_as_a_ray_train_run(cluster, tiny_dataset, tmp_path, capsys):
    """--trial-workers 2: the trial runs a Ray Train run (DDP over two workers) whose folder
    holds its checkpoints and its evaluation (`umtune best` names its last); one-worker trials
    (the other tests) train in the trial's own process, their checkpoints in Tune's trial
    folder and the newest in their run folder."""
    space = tmp_path / "one.yaml"
    space.write_text("params:\n  train.seed: {type: grid, values: [0]}\n")
    assert main(["sweep", "--space", str(space), "--search", "grid", "--scheduler", "none",
                 "--data", str(tiny_dataset), "--storage", str(tmp_path), "--name", "two",
                 "--address", cluster, "--trial-workers", "2", *_sets()]) == 0
    row = pd.read_parquet(tmp_path / "two" / "trials.parquet").iloc[0]
    assert row["status"] == "completed" and row["epoch"] == 2 and row["world_size"] == 2
    run = Path(row["run_path"])
    assert (run / "checkpoint_manager_snapshot.json").exists()
    assert list(run.glob("checkpoints/epoch_*")) and RunFolder(run).trainer() == "tune_trial"
    evaluation = json.loads((run / "evaluation" / "metrics.json").read_text())
    assert row["eval/timbre_acc"] == evaluation["summary"]["timbre_acc"]
    assert not list(Path(row["path"]).glob("checkpoint_*"))
    capsys.readouterr()
    assert main(["best", str(tmp_path / "two")]) == 0
    assert capsys.readouterr().out.strip() == str(run / "checkpoints" / "epoch_000002")
