"""Evaluation of a whole network: every domain pair translated and scored, metrics.json and the
audio gallery written, `umtune evaluate` on a checkpoint, and clear errors."""

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from test_loop import tiny_run

from umtune.analysis.evaluate import (
    SEED_METRICS,
    SUMMARY_KEYS,
    EvalOptions,
    evaluate,
    evaluate_checkpoint,
    reconstruction_gain,
    select_clips,
)
from umtune.analysis.results import heldout_curve, target_rows
from umtune.cli import main
from umtune.data import Dataset, DatasetError
from umtune.trainable.checkpoint import load_checkpoint
from umtune.trainable.generate import DEFAULT_SAMPLING
from umtune.trainable.loop import train
from umtune.trainable.model import UniversalTranslator
from umtune.trainable.run_folder import LocalRun

PAIR_KEYS = {"source", "target", "timbre_acc", "chroma_to_source", "chroma_to_truth",
             "spectral_distance", "identity_distance", "translation_gain"}


@pytest.fixture(scope="module")
def run(tiny_dataset, tmp_path_factory):
    """A run directory with the checkpoint of a tiny model trained for two steps."""
    run = LocalRun(tmp_path_factory.mktemp("eval") / "run", echo=False)
    train(tiny_run(tiny_dataset, max_epochs=1, steps_per_epoch=2), report=run)
    return run


def _dataset_without(tiny_dataset, tmp_path, split):
    """A copy of the tiny dataset whose manifest lists no file of `split`."""
    copy = tmp_path / f"no-{split}"
    shutil.copytree(tiny_dataset, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["files"] = [f for f in manifest["files"] if f["split"] != split]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


def test_evaluate_scores_every_pair_and_writes_metrics_and_audio(tiny_dataset, tmp_path):
    """An untrained in-memory model: K(K-1) pairs plus K from the unseen domain, every summary
    metric, metrics.json equal to the returned dict, 16-bit WAVs, the model's mode kept."""
    cfg = tiny_run(tiny_dataset)
    torch.manual_seed(0)
    model = UniversalTranslator(cfg.model).train()
    out = tmp_path / "evaluation"
    result = evaluate(model, cfg, tiny_dataset, EvalOptions(clips=2, seconds=0.5), out_dir=out)

    assert model.training
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(result))
    assert set(result["summary"]) == set(SUMMARY_KEYS)
    assert all(isinstance(v, float) for v in result["summary"].values()), result["summary"]
    assert result["domains"] == ["piano", "flute"] and result["clips"] == 2
    assert result["seconds"] == 0.5 and result["sample_rate"] == 16000
    assert result["checkpoint"] is None
    pairs = {(p["source"], p["target"]) for p in result["pairs"]}
    assert pairs == {("piano", "flute"), ("flute", "piano"), ("whistle", "piano"),
                     ("whistle", "flute")}
    for p in result["pairs"]:
        assert PAIR_KEYS <= set(p) and all(p[k] is not None for k in PAIR_KEYS)
        assert 0 <= p["timbre_acc"] <= 1 and p["identity_distance"] > 0
    assert set(result["recon_ce"]) == {"piano", "flute"}
    assert result["summary"]["latent_chance"] == 0.5
    assert 0 < result["summary"]["chroma_ceiling"] <= 1

    # the first clip: a group per translated source (first domain, unseen), each with its
    # source clip, and per target the truth and the translation
    clip = result["clip_names"][0]
    gallery = {(a["clip"], a["kind"], a["source"], a["target"]) for a in result["audio"]}
    assert gallery == {
        (f"{clip}/piano", "source", "piano", "piano"),
        (f"{clip}/piano", "truth", "piano", "flute"),
        (f"{clip}/piano", "translation", "piano", "flute"),
        (f"{clip}/whistle", "source", "whistle", "whistle"),
        *((f"{clip}/whistle", kind, "whistle", t) for kind in ("truth", "translation")
          for t in ("piano", "flute"))}
    paths = {a["path"] for a in result["audio"]}
    assert {"audio/clip0_piano.wav", "audio/clip0_flute.wav", "audio/clip0_whistle.wav"} <= paths
    for entry in result["audio"]:
        info = sf.info(out / entry["path"])
        assert info.samplerate == 16000 and info.subtype == "PCM_16" and info.frames == 8000
    assert len(list((out / "audio").iterdir())) == len(paths)
    assert sorted(p.name for p in out.iterdir()) == ["audio", "metrics.json"]  # no temp files


def test_evaluate_checkpoint_cli_prints_a_table_and_writes_next_to_the_run(run, capsys):
    """`umtune evaluate CKPT` (data from the checkpoint's config) prints the pair table and
    summary, names each stage on stderr as it starts, writes RUN/evaluation/, and gives the
    same metrics as evaluate_checkpoint; run again on the same inputs it reuses them."""
    assert main(["evaluate", str(run.checkpoint), "--clips", "1", "--seconds", "0.25"]) == 0
    out, err = capsys.readouterr()
    stages = [line for line in err.splitlines() if line.startswith("evaluate: ")]
    assert stages == ["evaluate: translating 1 clip(s) of 0.25 s per domain pair, seed 1 of 1",
                      "evaluate: reconstruction CE and latent gain",
                      "evaluate: latent domain probe",
                      "evaluate: pitch probe and note latent gain"]
    assert "whistle" in out and "timbre_acc" in out and "translation_gain" in out
    written = json.loads((run.run_dir / "evaluation" / "metrics.json").read_text())
    assert written["checkpoint"] == str(run.checkpoint)
    again = evaluate_checkpoint(run.checkpoint, options=EvalOptions(clips=1, seconds=0.25))
    assert again["pairs"] == written["pairs"] and again["summary"] == written["summary"]
    # the same weights, data and options again: the evaluation is reused, unless --again
    metrics = run.run_dir / "evaluation" / "metrics.json"
    before = metrics.read_bytes()
    assert main(["evaluate", str(run.run_dir), "--clips", "1", "--seconds", "0.25"]) == 0
    assert "\nreused: " in capsys.readouterr().out and metrics.read_bytes() == before
    assert main(["evaluate", str(run.checkpoint), "--clips", "1", "--seconds", "0.25",
                 "--again"]) == 0
    assert "\nwritten: " in capsys.readouterr().out
    assert json.loads(metrics.read_text())["inputs"] == written["inputs"]


def test_evaluate_errors_name_what_is_missing(run, tiny_dataset, tmp_path, capsys):
    """A bad checkpoint and a dataset without held-out audio are exit-2 errors saying what is
    missing; a dataset without a note set evaluates with null pitch metrics and says why."""
    assert main(["evaluate", str(tmp_path / "nothing"), "--data", str(tiny_dataset)]) == 2
    assert "no state.pt" in capsys.readouterr().err

    no_heldout = _dataset_without(tiny_dataset, tmp_path, "heldout")
    assert main(["evaluate", str(run.checkpoint), "--data", str(no_heldout),
                 "-o", str(tmp_path / "x")]) == 2
    assert "no held-out audio" in capsys.readouterr().err
    with pytest.raises(DatasetError, match="'heldout'"):
        evaluate_checkpoint(run.checkpoint, no_heldout)

    no_notes = _dataset_without(tiny_dataset, tmp_path, "notes")
    result = evaluate_checkpoint(run.checkpoint, no_notes,
                                 options=EvalOptions(clips=1, seconds=0.25))
    assert result["summary"]["pitch_probe_acc"] is None
    assert result["summary"]["timbre_acc"] is not None
    assert any("no note set" in s for s in result["skipped"])


def test_evaluate_refuses_a_dataset_lacking_the_models_domains(tiny_dataset):
    """A model of other domains than the dataset's is refused, naming the missing ones."""
    cfg = tiny_run(tiny_dataset)
    cfg = replace(cfg, model=replace(cfg.model, domains=("piano", "oboe")))
    with pytest.raises(DatasetError, match="oboe"):
        evaluate(UniversalTranslator(cfg.model), cfg, Dataset.open(tiny_dataset).path)


def test_dataset_without_parallel_truth_scores_timbre_and_chroma_only(run, tiny_dataset,
                                                                      tmp_path):
    """Held-out audio that is not the same music on every domain (imported folders): the truth
    metrics are null, the others scored, and the result says why."""
    copy = tmp_path / "imported"
    shutil.copytree(tiny_dataset, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["source"] = "folders"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    result = evaluate_checkpoint(run.checkpoint, copy, options=EvalOptions(clips=1, seconds=0.25))
    for p in result["pairs"]:
        assert p["chroma_to_truth"] is None and p["translation_gain"] is None
        assert p["timbre_acc"] is not None and p["chroma_to_source"] is not None
    assert result["summary"]["spectral_distance"] is None
    assert result["summary"]["recon_gain"] is None
    assert result["summary"]["unseen_timbre_acc"] is not None
    assert not any(a["kind"] == "truth" for a in result["audio"])
    sources = {a["source"] for a in result["audio"] if a["kind"] == "source"}
    assert sources == {"piano", "flute", "whistle"}  # every domain's (different) clip
    assert any("truth metrics" in s for s in result["skipped"])


def test_reconstruction_gain_scores_own_domain_samples_as_the_translations(tiny_dataset):
    """On real renderings of one held-out clip: reconstructions that are the truth itself score
    1; a 'reconstruction' into each domain that is the other domain's rendering scores 0 (it is
    the identity baseline); the truth plus noise scores between."""
    data = Dataset.open(tiny_dataset)
    domains = ("piano", "flute")
    clips = select_clips(data, domains, 2, data.sample_rate // 2, seed=0)
    truth = {d: torch.from_numpy(np.stack([c.audio[d] for c in clips])) for d in domains}
    sr = data.sample_rate
    assert reconstruction_gain(truth, truth, domains, sr) == pytest.approx(1.0)
    swapped = {"piano": truth["flute"], "flute": truth["piano"]}
    assert reconstruction_gain(swapped, truth, domains, sr) == pytest.approx(0.0, abs=1e-6)
    noisy = {d: a + 0.01 * torch.randn(a.shape, generator=torch.Generator().manual_seed(0))
             for d, a in truth.items()}
    assert 0 < reconstruction_gain(noisy, truth, domains, sr) < 1


def test_evaluate_table_records_training_machine_and_targets(run, tmp_path, capsys):
    """`umtune evaluate --table FILE.md` writes the targets table: values from metrics.json,
    the checkpoint's steps, epochs and seed, this machine, and the command itself."""
    table = tmp_path / "results" / "cpu.md"
    assert main(["evaluate", str(run.checkpoint), "--clips", "1", "--seconds", "0.25",
                 "--temperature", "0.5", "-o", str(tmp_path / "ev"), "--table", str(table)]) == 0
    assert f"written: {table}" in capsys.readouterr().out
    text = table.read_text()
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    summary = metrics["summary"]
    assert metrics["temperature"] == 0.5 and "sampling temperature 0.5," in text
    assert f"| `latent_gain` | {summary['latent_gain']:.3f} |" in text
    assert f"| timbre accuracy into the target domain | `timbre_acc` | " \
           f"{summary['timbre_acc']:.3f} | >= 0.80 |" in text
    assert f">= ceiling {summary['chroma_ceiling']:.3f} - 0.10" in text
    assert "2 steps, 1 epochs; seed 0" in text and "CPU cores" in text
    assert "held-out CE (nats/sample) by training time: 0 min " in text  # the run's one epoch
    assert "command: `umtune evaluate " in text and f"`recon_ce` | {summary['recon_ce']:.3f}" \
        in text
    met = sum(r["met"] is True for r in target_rows(summary, 0.01))
    assert f"targets met: {met} of 5" in text


def test_targets_are_met_inside_their_bounds_only():
    """Each rule at its edge; the latent target is relative to chance and void with lambda 0;
    a missing value or reference is neither met nor failed."""
    s = {"timbre_acc": 0.8, "chroma_to_truth": 0.6, "chroma_ceiling": 0.71,
         "translation_gain": 0.29, "latent_domain_acc": 0.27, "latent_chance": 1 / 6,
         "unseen_timbre_acc": None}
    met = {r["metric"]: r["met"] for r in target_rows(s, confusion_lambda=0.01)}
    assert met == {"timbre_acc": True, "chroma_to_truth": False, "translation_gain": False,
                   "latent_domain_acc": False, "unseen_timbre_acc": None}
    s.update(latent_domain_acc=0.26, chroma_to_truth=0.62)
    met = {r["metric"]: r["met"] for r in target_rows(s, confusion_lambda=0.01)}
    assert met["latent_domain_acc"] and met["chroma_to_truth"]
    assert {r["metric"]: r["met"] for r in target_rows(s, 0.0)}["latent_domain_acc"] is None
    rows = target_rows({k: v for k, v in s.items() if k != "chroma_ceiling"}, 0.01)
    assert rows[1]["met"] is None and rows[1]["target"] == ">= ceiling (reference not measured)"


def test_heldout_curve_marks_every_ten_minutes_and_the_end():
    epochs = [{"elapsed_s": t, "heldout_ce": ce} for t, ce in
              ((300, 4.0), (600, 3.5), (700, 3.4), (1250, 3.2), (1300, 3.1))]
    assert heldout_curve(epochs) == "10 min 3.500, 21 min 3.200, 22 min 3.100"


def test_several_seeds_average_the_translation_metrics_and_give_their_spread(tiny_dataset):
    """With two seeds, each translation metric of the summary is the mean of the two seeds'
    (other clips, other samples) and `summary_sd` their sd; the model-only metrics are measured
    once; the pairs carry their seed."""
    cfg = tiny_run(tiny_dataset)
    torch.manual_seed(0)
    model = UniversalTranslator(cfg.model)
    result = evaluate(model, cfg, tiny_dataset, EvalOptions(clips=1, seconds=0.5, seeds=2))
    assert result["seeds"] == [0, 1] and [r["seed"] for r in result["per_seed"]] == [0, 1]
    for k in SEED_METRICS:
        values = [r[k] for r in result["per_seed"]]
        assert result["summary"][k] == pytest.approx(np.mean(values)), k
        assert result["summary_sd"][k] == pytest.approx(np.std(values, ddof=1)), k
    assert {p["seed"] for p in result["pairs"]} == {0, 1}
    single = evaluate(model, cfg, tiny_dataset, EvalOptions(
        clips=1, seconds=0.5, seeds=1, sampling=replace(DEFAULT_SAMPLING, seed=1)))
    assert single["summary"]["timbre_acc"] == result["per_seed"][1]["timbre_acc"]
    assert single["summary"]["latent_domain_acc"] == result["summary"]["latent_domain_acc"]
    assert all(v is None for v in single["summary_sd"].values())


def test_a_run_keeps_the_first_checkpoint_past_each_mark(run, tmp_path):
    """With keep_every_minutes=1, reports at 50, 70, 130, 200 and 230 s of training keep the
    checkpoints of 70 s (minute 1), 130 s (minute 2) and 200 s (minute 3), not 50 s; the
    newest (230 s) is kept too, and is the run's checkpoint."""
    kept = LocalRun(tmp_path / "kept", echo=False, keep_every_minutes=1.0)
    staged = shutil.copytree(run.checkpoint, tmp_path / "staged")
    for epoch, elapsed in enumerate((50.0, 70.0, 130.0, 200.0, 230.0), start=1):
        kept({"epoch": epoch, "elapsed_s": elapsed}, staged)
    assert sorted(p.name for p in (kept.run_dir / "checkpoints").iterdir()) == [
        "epoch_000002", "epoch_000003", "epoch_000004", "epoch_000005"]
    assert (kept.run_dir / "checkpoints" / "epoch_000003" / "state.pt").read_bytes() == \
        (run.checkpoint / "state.pt").read_bytes()
    assert kept.checkpoint.name == "epoch_000005"


def test_evaluating_several_checkpoints_writes_one_curve_table(run, tiny_dataset, tmp_path,
                                                               capsys):
    """`umtune evaluate CKPT CKPT --table` evaluates each into a folder of its own and writes
    one row per checkpoint, in order of training steps (a busy machine can take longer over
    fewer); two of one name are refused."""
    later = LocalRun(tmp_path / "later", echo=False)
    train(tiny_run(tiny_dataset, max_epochs=2, steps_per_epoch=2), report=later)
    early, late = shutil.copytree(run.checkpoint, tmp_path / "early"), \
        shutil.copytree(later.checkpoint, tmp_path / "late")
    table = tmp_path / "curve.md"
    assert main(["evaluate", str(late), str(early), "--clips", "1", "--seconds", "0.25",
                 "-o", str(tmp_path / "ev"), "--table", str(table)]) == 0
    assert (tmp_path / "ev" / "early" / "metrics.json").exists()
    namesake = shutil.copytree(later.checkpoint, tmp_path / "other" / later.checkpoint.name)
    assert main(["evaluate", str(later.checkpoint), str(namesake), "-o",
                 str(tmp_path / "ev2"), "--table", str(table)]) == 2
    assert "would both be evaluated into" in capsys.readouterr().err
    text = table.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[0].startswith("| minutes | steps | timbre_acc |")
    assert [r.split(" | ")[1] for r in rows[1:]] == ["2", "4"]  # steps, by training time
    assert "of 5 |" in rows[1] and "lr schedule step" in text
    assert "- targets (references" in text and "{" not in text  # the rules filled in


def test_an_evaluation_is_never_written_into_the_checkpoint_or_dataset_it_reads(run, tmp_path,
                                                                                capsys):
    for inside in (run.checkpoint / "ev", Path(load_checkpoint(run.checkpoint).config.data.path)
                   / "ev"):
        assert main(["evaluate", str(run.checkpoint), "-o", str(inside)]) == 2
        assert "which this command reads" in capsys.readouterr().err
        assert not inside.exists()
