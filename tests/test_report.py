"""The sweep report: built from a sweep folder of the format `umtune sweep` writes, opened in real
headless Chromium (DevTools protocol) with no JavaScript error, every plot drawn and every clip
decodable; and each section says why when its data is absent.

The sweep folder is a fixture of the real format: trials.parquet and sweep.json as the sweep
driver writes them, study.db written by the sweep's own `write_study`, Tune's per-trial
result.json, and `evaluation/metrics.json` of the evaluation format with short WAV files cut
from the tiny dataset's real held-out renderings (a "translation" here is another real
rendering: the fixture tests the report, not the model).
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from umtune.analysis.report import build_report
from umtune.analysis.report_data import load_sweep
from umtune.analysis.report_figures import effects, importance, learning_curves
from umtune.analysis.results import component_effects, effect_verdict
from umtune.config import tiny

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DOMAINS = ("piano", "flute")
DILATIONS = ("doubling", "base3")

# trial -> (status, lambda, lambda enabled, aug, encoder dilations, latent, heldout_ce, epochs)
TRIALS = {
    "trial_a_00000": ("completed", 0.01, True, 0.5, "doubling", 16, 5.20, 4),
    "trial_a_00001": ("completed", 0.03, False, 0.4, "base3", 8, 5.25, 4),
    "trial_a_00002": ("completed", 0.05, True, 0.0, "doubling", 16, 5.31, 4),
    "trial_a_00003": ("completed", 0.002, True, 0.8, "base3", 32, 5.28, 4),
    "trial_a_00004": ("stopped early", 0.08, True, 0.9, "doubling", 4, 5.45, 1),
    "trial_a_00005": ("diverged", 0.09, True, 0.2, "base3", 16, math.inf, 2),
    "trial_a_00006": ("failed", 0.004, True, 0.6, "doubling", 8, math.nan, 0),
}
EVALUATED = {"trial_a_00000": 0.31, "trial_a_00001": 0.12}  # trial -> translation gain


def make_sweep(root: Path, dataset: Path | None, *, objectives=("quality", "cost"),
               trials: dict = TRIALS, evaluated: dict = EVALUATED, study: bool = True,
               name: str = "fixture") -> Path:
    """A sweep folder in the format `umtune sweep` writes (see the module docstring)."""
    from umtune.sweep import SweepOptions, pareto_front, write_study

    sweep = root / name
    sweep.mkdir(parents=True)
    base = tiny(DOMAINS)
    opts = SweepOptions(space="paper", samples=len(trials), search="optuna",
                        objectives=tuple(objectives))
    rows = []
    for trial, (status, lam, on, aug, enc, latent, ce, epochs) in trials.items():
        folder, run = sweep / trial, sweep / "train" / f"train-{trial.removeprefix('trial_')}"
        folder.mkdir()
        run.mkdir(parents=True)
        curve = [ce + 0.4 / e if math.isfinite(ce) else 5.6 - 0.1 * e for e in
                 range(1, epochs + 1)]
        if status == "diverged":
            curve[-1] = math.inf
        (folder / "result.json").write_text("".join(
            json.dumps({"epoch": e, "heldout_ce": v, "train_ce": v - 0.1, "config": {}}) + "\n"
            for e, v in enumerate(curve, start=1)))
        done = status != "failed"
        rows.append({
            "trial": trial, "status": status,
            "reason": {"stopped early": "scheduler", "diverged": "non-finite loss at step 7",
                       "failed": "RuntimeError: worker died"}.get(status, ""),
            "train.confusion_lambda": lam, "train.confusion_lambda:enabled": on,
            "train.aug_semitones": aug, "model.encoder.dilations": enc,
            "model.decoder.dilations": "doubling", "train.lr": 1e-3,
            "model.encoder.latent_channels": latent,
            "epoch": epochs, "step": epochs * 5, "precision": "bf16" if done else None,
            "heldout_ce": ce if done else math.nan, "train_ce": ce - 0.1 if done else math.nan,
            "heldout_confusion_acc": 0.5 + 0.01 * epochs if done else math.nan,
            "generation_flops_per_sample": 200_000 + 2_000 * latent if done else math.nan,
            "elapsed_s": 3.0 * epochs, "path": str(folder), "run_path": str(run),
        })
    table = pd.DataFrame(rows)
    metric = {"quality": "heldout_ce", "cost": "generation_flops_per_sample"}
    table["pareto"] = pareto_front(table, [metric[o] for o in objectives],
                                   ["min"] * len(objectives))
    table.to_parquet(sweep / "trials.parquet")
    table.to_csv(sweep / "trials.csv", index=False)
    (sweep / "sweep.json").write_text(json.dumps(
        {"options": asdict(opts), "base": replace(base, data=replace(
            base.data, path=str(dataset or "data"))).to_dict(), "name": name}))
    if study:
        write_study(table, sweep / "study.db", opts, base, name=name)
    for trial, gain in evaluated.items():
        write_evaluation(Path(table.set_index("trial").loc[trial, "run_path"]) / "evaluation",
                         dataset, gain)
    return sweep


def write_evaluation(folder: Path, dataset: Path, gain: float) -> None:
    """`evaluation/metrics.json` with 0.5 s clips of the dataset's real held-out renderings."""
    from umtune.data import Dataset

    ds = Dataset.open(dataset)
    (folder / "audio").mkdir(parents=True)
    rate, n = ds.sample_rate, ds.sample_rate // 2
    audio, entries = [], []
    for clip, source in enumerate(DOMAINS):
        start = (clip + 1) * rate  # a second in, where the piece plays
        cut = {d: ds.audio(ds.files(d, "heldout")[0])[start:start + n] for d in DOMAINS}
        audio.append((f"{clip}_{source}_source.wav", cut[source],
                      dict(source=source, target=None, kind="source")))
        for target in DOMAINS:
            if target == source:
                continue
            audio.append((f"{clip}_{source}_{target}_truth.wav", cut[target],
                          dict(source=source, target=target, kind="truth")))
            audio.append((f"{clip}_{source}_{target}_translation.wav", cut[target][::-1].copy(),
                          dict(source=source, target=target, kind="translation")))
        for file, samples, entry in audio[len(entries):]:
            sf.write(folder / "audio" / file, samples, rate, subtype="PCM_16")
            entries.append({"clip": clip, **entry, "path": f"audio/{file}"})
    pairs = [{"source": s, "target": t, "timbre_acc": 0.4 + gain + 0.05 * i,
              "chroma_to_source": 0.6 - 0.05 * i, "chroma_to_truth": 0.5 + gain / 2,
              "spectral_distance": 1.2 - gain + 0.1 * i,
              "identity_distance": None if s == t else 0.9 - 0.1 * i,
              "translation_gain": gain + 0.02 * i if s != t else None}
             for i, (s, t) in enumerate((s, t) for s in DOMAINS for t in DOMAINS)]
    summary = {"timbre_acc": 0.5 + gain, "chroma_to_source": 0.6, "chroma_to_truth": 0.5 + gain,
               "chroma_ceiling": 0.8, "spectral_distance": 1.2 - gain, "identity_distance": 0.9,
               "translation_gain": gain, "latent_domain_acc": 0.9 - gain, "latent_chance": 0.5,
               "pitch_probe_acc": 0.8, "pitch_probe_chance": 0.3 + gain, "unseen_timbre_acc": None,
               "recon_ce": 2.1 + gain, "classifier_heldout_acc": 0.95}
    (folder / "metrics.json").write_text(json.dumps({
        "summary": summary, "pairs": pairs, "recon_ce": {d: 2.1 for d in DOMAINS},
        "audio": entries, "checkpoint": "epoch_000004", "clips": 2, "seconds": 0.5,
        "sample_rate": rate, "domains": list(DOMAINS)}))


def unavailable_notes(html: str) -> list[str]:
    return re.findall(r'<p class="unavailable">Not available: ([^<]*)</p>', html)


class Chromium:
    """Headless Chromium driven over the DevTools protocol (one page, via websocket-client)."""

    def __init__(self, profile: Path):
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--remote-debugging-port=0", "--remote-allow-origins=*",
             f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            start_new_session=True)
        self.stderr: list[str] = []
        found = threading.Event()
        url: list[str] = []

        def drain():  # keep reading, or a full pipe stalls the browser
            for line in self.proc.stderr:
                self.stderr.append(line)
                match = re.search(r"DevTools listening on (ws://\S+)", line)
                if match:
                    url.append(match.group(1))
                    found.set()

        threading.Thread(target=drain, daemon=True).start()
        if not found.wait(30):
            self.close()
            raise RuntimeError("chromium printed no DevTools URL:\n" + "".join(self.stderr))
        port = re.match(r"ws://[^:/]+:(\d+)/", url[0]).group(1)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            page = next(t for t in json.load(r) if t["type"] == "page")
        import websocket

        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=60,
                                              suppress_origin=True)
        self.events: list[dict] = []
        self.last_id = 0

    def send(self, method: str, **params) -> dict:
        self.last_id += 1
        self.ws.send(json.dumps({"id": self.last_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.last_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]
            self.events.append(message)

    def wait_for(self, method: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in self.events:
                if e.get("method") == method:
                    return e
            self.ws.settimeout(max(0.1, deadline - time.monotonic()))
            self.events.append(json.loads(self.ws.recv()))
        raise TimeoutError(method)

    def open(self, page: Path, width: int = 1400, height: int = 1000) -> None:
        """Load `page`, recording its errors; the wait is generous because a loaded 2-core
        machine can take a minute to lay out plotly's figures (a wait, not a measurement)."""
        for domain in ("Runtime", "Log", "Page"):
            self.send(f"{domain}.enable")
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height,
                  deviceScaleFactor=1, mobile=False)
        self.send("Page.navigate", url=page.resolve().as_uri())
        self.wait_for("Page.loadEventFired", timeout=120)

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, awaitPromise=True,
                           returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def errors(self) -> list[str]:
        """JavaScript exceptions, console errors and browser log errors seen so far."""
        out = []
        for e in self.events:
            method, p = e.get("method"), e.get("params", {})
            if method == "Runtime.exceptionThrown":
                d = p["exceptionDetails"]
                out.append(f"exception: {d.get('exception', {}).get('description') or d['text']}")
            elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append("console: " + " ".join(str(a.get("value", a.get("description")))
                                                   for a in p.get("args", [])))
            elif method == "Log.entryAdded" and p["entry"]["level"] == "error":
                out.append(f"log: {p['entry']['text']} {p['entry'].get('url', '')}")
        return out

    def close(self) -> None:
        if getattr(self, "ws", None):
            self.ws.close()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


# Waits until every plot is drawn and every <audio> has loaded its metadata (or failed), then
# decodes every clip's data URI with Web Audio; returns what it found.
CHECKS = """
(async () => {
  const sleep = ms => new Promise(r => setTimeout(r, ms));
  const plots = () => Array.from(document.querySelectorAll('.plotly-graph-div'));
  const drawn = p => p.classList.contains('js-plotly-plot') && !!p._fullLayout &&
                     !!p.querySelector('svg.main-svg');
  for (let t = 0; t < 200 && !plots().every(drawn); t++) { await sleep(100); }
  const audios = Array.from(document.querySelectorAll('audio'));
  const durations = await Promise.all(audios.map(a => a.readyState >= 1 ? a.duration :
    new Promise(resolve => {
      a.addEventListener('loadedmetadata', () => resolve(a.duration));
      a.addEventListener('error', () => resolve(-1));
      setTimeout(() => resolve(null), 15000);
    })));
  const decoded = await Promise.all(audios.map(async a => {
    const bytes = await (await fetch(a.src)).arrayBuffer();
    const buffer = await new OfflineAudioContext(1, 1, 16000).decodeAudioData(bytes);
    return buffer.length;
  }));
  return {plots: plots().length, undrawn: plots().filter(p => !drawn(p)).map(p => p.id),
          durations, decoded, sections: document.querySelectorAll('section').length};
})()
"""

# Clicks the heldout_ce header once and twice; returns the column's values after each.
SORT_CHECK = """
(() => {
  const table = document.querySelector('table.sortable');
  const heads = Array.from(table.tHead.rows[0].cells);
  const col = heads.findIndex(th => th.textContent === 'heldout_ce');
  const column = () => Array.from(table.tBodies[0].rows, r => r.cells[col].dataset.value);
  heads[col].click();
  const up = column();
  heads[col].click();
  return {up, down: column()};
})()
"""


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory, tiny_dataset):
    return make_sweep(tmp_path_factory.mktemp("sweeps"), tiny_dataset)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (`make system-deps` "
                    "installs the Debian package)")
def test_report_renders_in_headless_chromium(sweep_dir, tmp_path):
    """Chromium opens the report offline with no JavaScript error, draws every plot, decodes
    every clip, sorts the table on a header click, and the page is saved as a screenshot."""
    out = build_report(sweep_dir, tmp_path / "report.html")
    browser = Chromium(tmp_path / "profile")
    try:
        browser.open(out)
        found = browser.evaluate(CHECKS)
        height = browser.send("Page.getLayoutMetrics")["cssContentSize"]["height"]
        shot = browser.send("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                            clip={"x": 0, "y": 0, "width": 1400, "height": min(height, 16000),
                                  "scale": 1})
        sorted_ce = browser.evaluate(SORT_CHECK)
        errors = browser.errors()
    finally:
        browser.close()
    screenshot = tmp_path / "report.png"
    screenshot.write_bytes(base64.b64decode(shot["data"]))
    print(f"screenshot: {screenshot}")
    assert errors == []
    assert found["sections"] == 9
    assert found["plots"] >= 12 and found["undrawn"] == []
    assert len(found["durations"]) == 8  # 2 clips x (source, truth, best's, ablation's)
    assert all(d is not None and d > 0.4 for d in found["durations"]), found["durations"]
    assert all(n > 0 for n in found["decoded"]), found["decoded"]
    values = [float(v) for v in sorted_ce["up"] if v not in ("", "Infinity")]
    assert values == sorted(values) and sorted_ce["up"][-1] == ""  # empty (failed) last
    down = [float(v) for v in sorted_ce["down"] if v not in ("", "Infinity")]
    assert down == sorted(down, reverse=True)
    assert screenshot.stat().st_size > 50_000


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (`make system-deps` "
                    "installs the Debian package)")
def test_a_thousand_trial_report_renders_in_headless_chromium(tiny_dataset, tmp_path):
    """A sweep of 1,000 trials (mixed statuses, lambda switched off in a quarter, a study,
    two evaluations): Chromium opens its report with no error, draws every plot, decodes
    every clip and lists every trial."""
    statuses = ("completed", "completed", "stopped early", "failed")
    trials = {k: (statuses[i % 4], *v[1:]) for i, (k, v) in
              enumerate(many_trials(1000).items())}
    sweep = make_sweep(tmp_path / "sweeps", tiny_dataset, trials=trials,
                       evaluated={"trial_c_00001": 0.3, "trial_c_00004": 0.1})
    out = build_report(sweep, tmp_path / "report.html")
    browser = Chromium(tmp_path / "profile")
    try:
        browser.open(out)
        found = browser.evaluate(CHECKS)
        rows = browser.evaluate("document.querySelector('table.sortable').tBodies[0].rows"
                                ".length")
        errors = browser.errors()
    finally:
        browser.close()
    assert errors == []
    assert found["sections"] == 9 and found["plots"] >= 12 and found["undrawn"] == []
    assert len(found["durations"]) == 8 and all(n > 0 for n in found["decoded"])
    assert rows == 1000


def test_report_is_self_contained_with_a_sort_script(sweep_dir, tmp_path):
    """One inlined plotly.js, no external script/style/image, a sortable table, all sections."""
    html = build_report(sweep_dir, tmp_path / "r.html").read_text()
    assert not re.search(r"<(script|img|audio|link|iframe)[^>]*(src|href)=\"(https?:)?//", html)
    assert not re.search(r"<link\b", html)
    assert len(re.findall(r"<script\b", html)) == 1 + 1 + html.count('class="plotly-graph-div"')
    assert html.count("Plotly.newPlot(") == html.count('class="plotly-graph-div"')
    assert '<table class="sortable">' in html and 'addEventListener("click"' in html
    assert unavailable_notes(html) == []
    assert 'src="data:audio/wav;base64,' in html
    title = importance(load_sweep(sweep_dir)).layout.title.text
    assert title.startswith("Parameter importance: correlation ratio η / |Spearman ρ| with "
                            "each metric over 4 completed trials")


def test_best_trial_is_the_highest_translation_gain_and_ablation_has_lambda_off(sweep_dir):
    """Best: highest eval/translation_gain among completed; ablation: lambda switched off."""
    data = load_sweep(sweep_dir)
    assert data.best_trial()[0] == "trial_a_00000"
    assert data.ablation_trial(exclude="trial_a_00000") == ("trial_a_00001",
                                                            "no confusion loss (lambda = 0)")
    assert data.trials.set_index("trial").loc["trial_a_00001", "eval/translation_gain"] == 0.12
    assert data.varied()[:4] == ["train.confusion_lambda", "train.aug_semitones",
                                 "model.encoder.dilations", "model.encoder.latent_channels"]


def test_missing_sections_degrade_to_notes(tmp_path):
    """No evaluation, one objective, no study: those sections explain, the rest still draw."""
    sweep = make_sweep(tmp_path, None, objectives=("quality",), evaluated={}, study=False)
    html = build_report(sweep, tmp_path / "r.html").read_text()
    notes = unavailable_notes(html)
    assert any("single-objective sweep (heldout_ce)" in n for n in notes)
    assert sum("has no evaluation yet" in n for n in notes) == 2  # heatmaps and audio
    assert any("no component (lambda, augmentation) was evaluated" in n for n in notes)
    assert len(notes) == 4
    data = load_sweep(sweep)
    assert data.best_trial() == ("trial_a_00000", "lowest heldout_ce among completed trials")


def test_nothing_varied_and_nothing_finished_is_reported_not_raised(tmp_path):
    """A sweep with one configuration whose trials all failed still gives a page of notes."""
    failed = {f"trial_b_0000{i}": ("failed", 0.01, True, 0.5, "doubling", 16, math.nan, 0)
              for i in range(2)}
    sweep = make_sweep(tmp_path, None, objectives=("quality",), trials=failed, evaluated={},
                       study=False)
    notes = unavailable_notes(build_report(sweep, tmp_path / "r.html").read_text())
    assert sum("no hyperparameter took more than one value" in n for n in notes) == 3
    assert any("no trial reported a finite held-out CE" in n for n in notes)
    assert any("no best trial" in n for n in notes)


def many_trials(n: int = 24) -> dict:
    """n completed trials with lambda log-uniform (a numeric axis), switched off in every 4th."""
    rng = np.random.default_rng(0)
    return {f"trial_c_{i:05d}": ("completed", float(10 ** rng.uniform(-3, -1)), bool(i % 4),
                                 float(rng.uniform(0, 1)), DILATIONS[i % 2], 16,
                                 5.0 + float(rng.uniform(0, 0.5)), 3) for i in range(n)}


def test_optuna_importance_with_enough_completed_trials(tmp_path):
    """With 20+ completed trials the importance comes from the study (Optuna's PED-ANOVA)."""
    sweep = make_sweep(tmp_path, None, objectives=("quality",), trials=many_trials(),
                       evaluated={})
    assert (importance(load_sweep(sweep)).layout.title.text ==
            "Parameter importance: Optuna PED-ANOVA for heldout_ce (24 completed trials)")


def test_the_study_holds_values_population_based_training_moved_past_the_space(tmp_path):
    """PBT's explore multiplies a value by 1.2 past the space's top and PB2's rounding lands
    just under its bottom (a real PB2 sweep ran lr 9.999999717e-10 in a space from 1e-9):
    the study widens the range to hold both instead of failing the finished sweep."""
    import optuna

    from umtune.sweep import SweepOptions, write_study
    from umtune.sweep.table import study_distributions

    sweep = make_sweep(tmp_path, None, evaluated={}, study=False)
    table = pd.read_parquet(sweep / "trials.parquet")
    opts = SweepOptions(space="paper", samples=len(table), search="optuna",
                        objectives=("quality", "cost"))
    lr = study_distributions(opts, tiny(DOMAINS))["train.lr"]
    moved = [lr.high * 1.2, lr.low * (1 - 3e-8)]
    table.loc[[0, 1], "train.lr"] = moved
    write_study(table, sweep / "study.db", opts, tiny(DOMAINS), name="fixture")
    study = optuna.load_study(study_name="fixture", storage=f"sqlite:///{sweep / 'study.db'}")
    ran = {t.user_attrs["trial"]: t.params["train.lr"] for t in study.trials}
    assert [ran[t] for t in table["trial"][:2]] == moved and len(ran) == len(table)
    assert study.trials[0].distributions["train.lr"].log


def test_a_stepped_range_widened_past_its_bounds_holds_values_off_its_grid():
    """Explored past a stepped range, a value need not lie on the grid: the widened range
    drops the step (Optuna refuses an off-grid value), an untouched one keeps it."""
    from optuna.distributions import FloatDistribution, IntDistribution

    from umtune.sweep.table import _covering

    space = {"a": IntDistribution(2, 10, step=2), "b": FloatDistribution(0.1, 0.5, step=0.1),
             "c": IntDistribution(2, 10, step=2)}
    ran = pd.DataFrame({"a": [4, 11], "b": [0.2, 0.6], "c": [4, 8]})
    widened = _covering(space, ran)
    assert widened["a"] == IntDistribution(2, 11) and widened["a"]._contains(11)
    assert widened["b"] == FloatDistribution(0.1, 0.6) and widened["b"]._contains(0.6)
    assert widened["c"] is space["c"]


def test_switched_off_trials_are_one_dotted_trace_per_metric_not_a_shape_each(tmp_path):
    """On lambda's numeric axis the trials with its switch off are one trace of dotted lines
    per metric, a line at each one's value across the axis; no shape or annotation per trial
    (each of those made the report quadratic in the trials)."""
    sweep = make_sweep(tmp_path, None, objectives=("quality",), trials=many_trials(),
                       evaluated={}, study=False)
    data = load_sweep(sweep)
    fig = dict(effects(data))["train.confusion_lambda"]
    metrics = data.metrics()
    assert fig.layout.shapes == () and len(fig.layout.annotations) == len(metrics)  # titles
    off = [trace for trace in fig.data if trace.legendgroup == "off"]
    assert len(off) == len(metrics) and [t.showlegend for t in off].count(True) == 1
    t = data.trials
    enabled = t["train.confusion_lambda:enabled"]
    on = t.loc[enabled, "train.confusion_lambda"]
    assert (~enabled).sum() == 6
    for trace, metric in zip(off, metrics, strict=True):
        assert trace.line.dash == "dot" and set(trace.x) == {on.min(), on.max(), None}
        assert list(trace.y[::3]) == list(t.loc[~enabled, metric])
        assert list(trace.text[::3]) == list(t.loc[~enabled, "trial"])


def test_learning_curves_are_one_trace_per_status(sweep_dir):
    """Every trial's curve is in its status's one trace, broken between trials, so a legend of
    four entries serves any number of trials; stopped trials end in an x."""
    fig = learning_curves(load_sweep(sweep_dir))
    names = {trace.name: trace for trace in fig.data}
    assert set(names) == {"completed (4)", "stopped early (1)", "diverged (1)"}
    stopped = names["stopped early (1)"]
    assert list(stopped.x) == [1, None] and stopped.marker.symbol[0] == "x"
    assert list(names["completed (4)"].y).count(None) == 4


def test_a_big_sweeps_table_shows_its_best_trials_and_says_how_many(tmp_path, monkeypatch):
    """Past MAX_TABLE_ROWS the trial table shows that many, best first, and the count."""
    import umtune.analysis.report as report

    monkeypatch.setattr(report, "MAX_TABLE_ROWS", 5)
    trials = many_trials()
    sweep = make_sweep(tmp_path, None, objectives=("quality",), trials=trials, evaluated={},
                       study=False)
    html = build_report(sweep, tmp_path / "r.html").read_text()
    table = html[html.index('<table class="sortable">'):]
    table = table[:table.index("</table>")]
    rows = re.findall(r"<tr[^>]*><td>(trial_c_\d+)</td>", table)
    best = sorted(trials, key=lambda k: trials[k][6])[:5]
    assert rows == best and '<tr class="best"><td>' + best[0] in table
    assert "5 of 24 trials shown" in html


def test_moved_sweep_folder_still_finds_its_trials(sweep_dir, tmp_path):
    """Recorded trial folders that are gone are looked up inside the (moved) sweep folder."""
    moved = shutil.copytree(sweep_dir, tmp_path / "moved")
    table = pd.read_parquet(moved / "trials.parquet")
    table["path"] = "/nowhere/" + table["trial"]
    table["run_path"] = "/nowhere/train/train-" + table["trial"].str.removeprefix("trial_")
    table.to_parquet(moved / "trials.parquet")
    data = load_sweep(moved)
    assert set(data.curves) == set(TRIALS) and set(data.evaluations) == set(EVALUATED)
    assert data.notes == []


def test_cli_report_writes_the_page_and_names_a_missing_sweep(sweep_dir, tmp_path, capsys):
    """`umtune report SWEEP_DIR -o FILE` prints the file; a folder without a table exits 2."""
    from umtune.cli import main

    assert main(["report", str(sweep_dir), "-o", str(tmp_path / "x.html")]) == 0
    assert f"report: {tmp_path / 'x.html'}" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "none"), "-o", str(tmp_path / "y.html")]) == 2
    assert "no trials.parquet" in capsys.readouterr().err


def test_best_names_the_best_trials_newest_checkpoint_or_why_there_is_none(sweep_dir, capsys):
    """`umtune best` prints the newest checkpoint the report's best trial kept (higher epoch
    numbers sort last even past 999,999); a trial with none is named with where it was looked
    for. The real sweeps' checkpoints: tests/test_sweep.py."""
    from umtune.cli import main
    from umtune.layout import STATE_FILE

    data = load_sweep(sweep_dir)
    best, _ = data.best_trial()
    assert main(["best", str(sweep_dir)]) == 2
    assert f"{best}: no checkpoint of its on this machine" in capsys.readouterr().err
    folder = Path(data.trials.set_index("trial").loc[best, "path"])
    for name in ("checkpoint_000002", "checkpoint_000010", "checkpoint_1000000", "checkpoint_x"):
        (folder / name).mkdir(parents=True)
        (folder / name / STATE_FILE).write_bytes(b"")
    (folder / "checkpoint_2000000").mkdir()  # not a checkpoint: no state
    try:
        assert main(["best", str(sweep_dir)]) == 0
        out, err = capsys.readouterr()
        assert out.strip() == str(folder / "checkpoint_1000000") and best in err
    finally:
        for name in ("checkpoint_000002", "checkpoint_000010", "checkpoint_1000000",
                     "checkpoint_x", "checkpoint_2000000"):
            shutil.rmtree(folder / name)


def test_component_effects_compare_evaluated_trials_with_and_without_each_component(sweep_dir):
    """Lambda: trial 00000 (on) against 00001 (switched off); the augmentation is on in both
    evaluated trials, so it has no row. Latent accuracy counts as better when lower. One trial
    a side and one evaluation seed measure no spread, so no verdict is given."""
    effects = component_effects(load_sweep(sweep_dir)).set_index("metric")
    assert set(effects["component"]) == {"confusion loss (lambda > 0)"}
    gain = effects.loc["eval/translation_gain"]
    assert (gain["with"], gain["without"]) == (0.31, 0.12)
    assert gain["change"] == pytest.approx(0.19) and pd.isna(gain["spread"])
    assert gain["verdict"].startswith("no spread measured")
    assert effects.loc["eval/latent_domain_acc", "change"] == pytest.approx(-0.19)
    assert effects.loc["eval/unseen_timbre_acc", "verdict"] == "not measured"  # no whistle
    assert [effect_verdict(x, 0.01) for x in (0.004, -0.01, 0.02, -0.02)] == [
        "no measurable difference", "no measurable difference", "helps", "hurts"]
    assert effects.loc["heldout_ce", "trials with / without"] == "1 / 1"


def test_a_component_helps_only_by_more_than_the_spread_over_seeds(tiny_dataset, tmp_path):
    """Two seeds a side: the translation gain differs by 0.19 with an sd of 0.014 over seeds
    (helps); the held-out CE by 0.015 with an sd of 0.07 (no measurable difference)."""
    row = ("completed", 0.01, True, 0.5, "doubling", 16)
    trials = {"trial_s_00000": (*row, 5.20, 4), "trial_s_00001": (*row, 5.30, 4),
              "trial_s_00002": (*row[:2], False, *row[3:], 5.25, 4),
              "trial_s_00003": (*row[:2], False, *row[3:], 5.22, 4)}
    evaluated = dict(zip(trials, (0.30, 0.32, 0.12, 0.11), strict=True))
    sweep = make_sweep(tmp_path, tiny_dataset, trials=trials, evaluated=evaluated,
                       objectives=("quality",), study=False)
    effects = component_effects(load_sweep(sweep)).set_index("metric")
    gain = effects.loc["eval/translation_gain"]
    assert gain["change"] == pytest.approx(0.195) and gain["verdict"] == "helps"
    assert gain["spread"] == pytest.approx(0.0141, abs=1e-4)
    ce = effects.loc["heldout_ce"]
    assert ce["verdict"] == "no measurable difference" and ce["spread"] > abs(ce["change"])


def test_cli_report_table_says_whether_each_component_helps(sweep_dir, tiny_dataset, tmp_path,
                                                          capsys):
    """`umtune report --table FILE.md` writes every trial and the component verdicts; the
    HTML page has the same section; a sweep without an off trial says so in both."""
    from umtune.cli import main

    md = tmp_path / "tables" / "ablation.md"
    assert main(["report", str(sweep_dir), "-o", str(tmp_path / "r.html"), "--table",
                 str(md)]) == 0
    text = md.read_text()
    assert f"written: {md}" in capsys.readouterr().out
    assert text.count("| trial_a_") == len(TRIALS)
    assert "| confusion loss (lambda > 0) | `eval/translation_gain` | 0.310 | 0.120 | +0.190 " \
           "| - | 1 / 1 | no spread measured" in text
    assert "command: `umtune report " in text and "machine: " in text
    assert "\n- precision: bf16\n" in text and "| epoch | step | elapsed_s |" in text
    assert "Does each component help?" in (tmp_path / "r.html").read_text()

    always_on = {k: v for k, v in TRIALS.items() if v[2]}  # lambda never switched off
    sweep = make_sweep(tmp_path / "on", tiny_dataset, trials=always_on,
                       evaluated={"trial_a_00000": 0.3}, objectives=("quality",), study=False)
    assert main(["report", str(sweep), "-o", str(tmp_path / "on.html"), "--table",
                 str(tmp_path / "on.md")]) == 0
    assert "No component was evaluated both on and off" in (tmp_path / "on.md").read_text()
    assert "no component (lambda, augmentation) was evaluated both on and off" in \
        " ".join(unavailable_notes((tmp_path / "on.html").read_text()))



# Markup a hostile sweep folder puts where the report shows names: each would set window.pwned
# if it ran. File names cannot hold "/", so trial names carry the first and the third.
PAYLOADS = ("<img src=x onerror=window.pwned=1>", "<script>window.pwned=2</script>",
            '"><svg onload=window.pwned=3>', "</script><script>window.pwned=4</script>")


def make_hostile_sweep(root: Path, dataset: Path) -> Path:
    """The fixture sweep with markup in a trial's name, a domain, a clip id, the space, a
    failure reason, a parameter's name and a metric's name."""
    trials = dict(TRIALS)
    trials[f"trial_{PAYLOADS[0]}"] = trials.pop("trial_a_00002")
    trials[f"trial_{PAYLOADS[2]}"] = trials.pop("trial_a_00003")
    sweep = make_sweep(root, dataset, trials=trials)
    table = pd.read_parquet(sweep / "trials.parquet")
    table.loc[table["status"] == "failed", "reason"] = PAYLOADS[1] + PAYLOADS[3]
    table[f"train.{PAYLOADS[0]}"] = [float(i % 3) for i in range(len(table))]
    table.to_parquet(sweep / "trials.parquet")
    saved = json.loads((sweep / "sweep.json").read_text())
    saved["options"]["space"] = PAYLOADS[3]
    (sweep / "sweep.json").write_text(json.dumps(saved))
    best = table.set_index("trial").loc["trial_a_00000", "run_path"]
    metrics_file = Path(best) / "evaluation" / "metrics.json"
    text = metrics_file.read_text().replace('"flute"', json.dumps(PAYLOADS[1]))
    metrics = json.loads(text)
    metrics["summary"][PAYLOADS[3]] = 0.5
    for entry in metrics["audio"]:
        entry["clip"] = PAYLOADS[2] if entry["clip"] == 0 else entry["clip"]
    metrics_file.write_text(json.dumps(metrics))
    return sweep


NOTHING_LIVE = """
(() => ({
  pwned: window.pwned === undefined ? null : window.pwned,
  injected: Array.from(document.querySelectorAll('img, svg[onload]')).map(e => e.outerHTML),
  handlers: Array.from(document.querySelectorAll('*')).flatMap(
    e => Array.from(e.attributes).filter(a => a.name.startsWith('on')).map(a => a.name)),
  scripts: document.querySelectorAll('script').length,
  text: document.body.innerText,
}))()
"""


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (`make system-deps` "
                    "installs the Debian package)")
def test_markup_in_a_sweep_folder_is_shown_as_text_never_run(tiny_dataset, tmp_path):
    """A sweep whose trial, domain, clip, space, reason, parameter and metric names hold markup:
    Chromium runs none of it (no handler, no injected element, window.pwned unset, no error),
    and the names read as written."""
    sweep = make_hostile_sweep(tmp_path / "sweeps", tiny_dataset)
    out = build_report(sweep, tmp_path / "report.html")
    html = out.read_text()
    assert html.count("<script") == 1 + 1 + html.count('class="plotly-graph-div"')
    browser = Chromium(tmp_path / "profile")
    try:
        browser.open(out)
        browser.evaluate(CHECKS)  # every plot drawn: the figures' labels are in the page
        found = browser.evaluate(NOTHING_LIVE)
        errors = browser.errors()
    finally:
        browser.close()
    assert found["pwned"] is None and errors == []
    assert found["injected"] == [] and found["handlers"] == []
    assert found["scripts"] == html.count("<script")
    for shown in (f"Clip {PAYLOADS[2]} ({DOMAINS[0]})", f"trial_{PAYLOADS[0]}", PAYLOADS[3],
                  PAYLOADS[1] + PAYLOADS[3], f"train.{PAYLOADS[0]}"):
        assert shown in found["text"], shown


def test_audio_and_folders_outside_the_sweep_folder_are_never_read(tiny_dataset, tmp_path):
    """An evaluation naming ../outside.wav, an absolute path or a symbolic link out of the sweep,
    and a trial table pointing a run at a folder elsewhere: none of those bytes reach the page,
    and the gallery says why."""
    sweep = make_sweep(tmp_path / "sweeps", tiny_dataset)
    outside = tmp_path / "secret.wav"
    sf.write(outside, np.sin(np.arange(8000) / 5).astype(np.float32) * 0.3, 16000)
    secret = base64.b64encode(outside.read_bytes()).decode()[200:400]
    table = pd.read_parquet(sweep / "trials.parquet").set_index("trial")
    evaluation = Path(table.loc["trial_a_00000", "run_path"]) / "evaluation"
    metrics = json.loads((evaluation / "metrics.json").read_text())
    (evaluation / "audio" / "link.wav").symlink_to(outside)
    escapes = [os.path.relpath(outside, evaluation), str(outside), "audio/link.wav"]
    for entry, path in zip(metrics["audio"], escapes, strict=False):
        entry["path"] = path
    (evaluation / "metrics.json").write_text(json.dumps(metrics))
    elsewhere = tmp_path / "elsewhere" / "train-a_00001"  # an evaluation outside the sweep
    write_evaluation(elsewhere / "evaluation", tiny_dataset, 0.9)
    shutil.copy(outside, elsewhere / "evaluation" / "audio" / "0_piano_source.wav")
    table.loc["trial_a_00001", "run_path"] = str(elsewhere)
    table.reset_index().to_parquet(sweep / "trials.parquet")

    data = load_sweep(sweep)  # the run of the same name inside the sweep folder instead
    assert data.evaluations["trial_a_00001"].location.startswith(str(sweep))
    assert data.evaluations["trial_a_00001"].metrics["summary"]["translation_gain"] == 0.12
    html = build_report(sweep, tmp_path / "r.html").read_text()
    assert secret not in html
    assert html.count("lies outside the sweep folder") == 3
    assert 'src="data:audio/wav;base64,' in html  # the clips inside are still there


def test_a_corrupt_result_or_metrics_file_is_named_and_the_rest_is_reported(tiny_dataset,
                                                                          tmp_path, capsys):
    """Garbage in one trial's result.json and another's metrics.json: the page is written,
    its summary names both files, and the other trials' curves and evaluation are shown."""
    from umtune.cli import main

    sweep = make_sweep(tmp_path / "sweeps", tiny_dataset)
    table = pd.read_parquet(sweep / "trials.parquet").set_index("trial")
    bad_result = sweep / "trial_a_00002" / "result.json"
    bad_result.write_text('{"epoch": 1, "heldout_ce": 5.1}\n{not json')
    bad_metrics = Path(table.loc["trial_a_00001", "run_path"]) / "evaluation" / "metrics.json"
    bad_metrics.write_bytes(b"\xff\xfe[")
    (sweep / "sweep.json").write_text("[1, 2]")
    assert main(["report", str(sweep), "-o", str(tmp_path / "r.html")]) == 0
    html = (tmp_path / "r.html").read_text()
    assert f"unreadable {bad_result}" in html and f"unreadable {bad_metrics}" in html
    assert "unreadable" in html and "sweep.json" in html
    data = load_sweep(sweep)
    assert "trial_a_00002" not in data.curves and len(data.curves) == len(TRIALS) - 1
    assert set(data.evaluations) == {"trial_a_00000"}
    assert 'src="data:audio/wav;base64,' in html and unavailable_notes(html) != []


def test_a_sweep_whose_driver_runs_is_not_reported_as_interrupted_nor_resumed(tmp_path,
                                                                               capsys):
    """While a process holds the sweep's driver lock, `report` says the sweep is still running
    (not to resume it) until a trial has reported, then reports what has (from the trials'
    result.json: finished by the base config's budget, or running), and `sweep --resume` is
    refused; once the lock is gone, report's hint is --resume again."""
    from umtune.cli import main
    from umtune.layout import driver_lock

    sweep = tmp_path / "live"
    sweep.mkdir()
    (sweep / "sweep.json").write_text(json.dumps({"options": {}, "name": "live"}))
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; "
         "from umtune.storage import exclusive_lock; exclusive_lock(Path(sys.argv[1])); "
         "print('held', flush=True); time.sleep(60)", driver_lock(str(sweep))],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["report", str(sweep), "-o", str(tmp_path / "r.html")]) == 2
        err = capsys.readouterr().err
        assert "the sweep is still running" in err and "--resume" not in err
        assert "no trial has reported yet" in err
        base = tiny(DOMAINS)
        base = replace(base, train=replace(base.train, max_epochs=2))
        (sweep / "sweep.json").write_text(json.dumps({"options": {}, "name": "live",
                                                      "base": base.to_dict()}))
        for trial, epochs, ce in (("trial_a_00000", 2, 4.0), ("trial_a_00001", 1, 4.5)):
            (sweep / trial).mkdir()
            (sweep / trial / "result.json").write_text("".join(json.dumps(
                {"epoch": e, "heldout_ce": ce + 1 / e, "elapsed_s": 3.0 * e, "pid": 7,
                 "config": {"train.lr": 1e-3 * e, "trial": {"storage": str(sweep / "train")}}})
                + "\n" for e in range(1, epochs + 1)))
        data = load_sweep(sweep)
        assert data.trials.set_index("trial")[["status", "epoch", "heldout_ce", "train.lr"]] \
            .to_dict("index") == {
                "trial_a_00000": {"status": "completed", "epoch": 2, "heldout_ce": 4.5,
                                  "train.lr": 2e-3},
                "trial_a_00001": {"status": "running", "epoch": 1, "heldout_ce": 5.5,
                                  "train.lr": 1e-3}}
        assert "pid" not in data.trials and data.best_trial()[0] == "trial_a_00000"
        assert main(["report", str(sweep), "-o", str(tmp_path / "r.html")]) == 0
        assert "the sweep is still running: 2 trial(s) reported so far, 1 completed" in \
            (tmp_path / "r.html").read_text()
        assert main(["sweep", "--resume", str(sweep)]) == 2
        assert "a umtune sweep driver is running it" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()
    assert main(["report", str(sweep), "-o", str(tmp_path / "r.html")]) == 2
    assert "umtune sweep --resume" in capsys.readouterr().err


def test_a_report_is_never_written_into_the_sweep_folder_it_reads(sweep_dir, tmp_path, capsys):
    from umtune.cli import main

    before = sorted(p.name for p in sweep_dir.iterdir())
    assert main(["report", str(sweep_dir), "-o", str(sweep_dir / "report.html")]) == 2
    assert "lies in the sweep folder" in capsys.readouterr().err
    assert sorted(p.name for p in sweep_dir.iterdir()) == before
