"""Result tables in Markdown, meant to be committed: one trained network against the translation
targets, the same network over its training time, and the paper's ablation (what each
component of the method changes) from a sweep.

The targets are those a preset must reach to count as translating (docs/results.md):
timbre accuracy >= 0.8, chroma similarity to the truth within 0.1 of the truth-vs-truth ceiling,
translation gain >= 0.3, latent classifier accuracy within 0.1 of chance when lambda > 0, and
timbre accuracy >= 0.6 from the unseen domain. Each table says what machine produced it, because
every figure in it depends on how much training that machine fits in the budget.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from umtune.analysis.report_data import AUG, LAMBDA, SweepData, finite, load_sweep
from umtune.layout import EVAL_PREFIX, HELDOUT_METRIC
from umtune.storage import write_text_atomic
from umtune.trainable.checkpoint import TrainingState, checkpoint_of, load_checkpoint
from umtune.trainable.run_folder import read_history


@dataclass(frozen=True)
class Target:
    """A metric's acceptable range, computed from the evaluation's summary (some targets are
    relative to a ceiling or a chance level measured in the same evaluation)."""

    metric: str
    label: str
    bounds: Callable[[dict], tuple[float, float]]
    rule: str


TARGETS = (
    Target("timbre_acc", "timbre accuracy into the target domain",
           lambda s: (0.8, 1.0), ">= 0.80"),
    Target("chroma_to_truth", "chroma similarity to the true target rendering",
           lambda s: (s["chroma_ceiling"] - 0.1, 1.0), ">= ceiling {chroma_ceiling:.3f} - 0.10"),
    Target("translation_gain", "translation gain over the identity baseline",
           lambda s: (0.3, 1.0), ">= 0.30"),
    Target("latent_domain_acc", "latent domain classifier accuracy",
           lambda s: (s["latent_chance"] - 0.1, s["latent_chance"] + 0.1),
           "chance {latent_chance:.3f} +- 0.10, with lambda > 0"),
    Target("unseen_timbre_acc", "timbre accuracy from the unseen domain",
           lambda s: (0.6, 1.0), ">= 0.60"),
)

# metric -> +1 when higher is better, -1 when lower is (the latent accuracy: towards chance)
DIRECTIONS = {**{f"{EVAL_PREFIX}{name}": sign for name, sign in (
    ("timbre_acc", 1), ("chroma_to_truth", 1), ("translation_gain", 1), ("latent_domain_acc", -1),
    ("unseen_timbre_acc", 1))}, HELDOUT_METRIC: -1}
COMPONENTS = ((LAMBDA, "confusion loss (lambda > 0)"), (AUG, "pitch augmentation (> 0 semitones)"))


def machine() -> str:
    """This machine in one line: CPU model, usable cores, memory, accelerator, torch version."""
    model = platform.processor() or platform.machine()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        model = next(line.split(":", 1)[1].strip() for line in lines if line.startswith(
            "model name"))
    except (OSError, StopIteration):
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{model} ({vector_extensions()}), {len(os.sched_getaffinity(0))} CPU cores, "
            f"{memory:.0f} GiB RAM, {gpu}; Python {platform.python_version()}, torch "
            f"{torch.__version__}")


# The CPU features that decide training speed: fp32 vector width and native bf16.
VECTOR_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "asimd", "sve", "bf16")


def vector_extensions() -> str:
    """This CPU's vector extensions among VECTOR_FLAGS, e.g. "avx2 avx512f avx512_bf16"."""
    try:
        flags = next((line.split(":", 1)[1].split() for line in
                      Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith(("flags", "Features"))), [])
    except OSError:
        flags = []
    return " ".join(f for f in VECTOR_FLAGS if f in flags) or "no vector extensions listed"


def target_rows(summary: dict, confusion_lambda: float) -> list[dict]:
    """Each target with its value, the rule with its numbers filled in, and whether it is met
    (None where the value is missing or, for the latent target, lambda is 0)."""
    rows = []
    for t in TARGETS:
        value = summary.get(t.metric)
        try:
            low, high = t.bounds(summary)
            rule = t.rule.format(**summary)
        except (KeyError, TypeError):  # a ceiling or chance level the evaluation lacks
            low = high = None
            rule = t.rule.split("{")[0] + "(reference not measured)"
        met = None if value is None or low is None else low <= value <= high
        if t.metric == "latent_domain_acc" and confusion_lambda == 0:
            met = None
        rows.append({"metric": t.metric, "label": t.label, "value": value, "target": rule,
                     "met": met})
    return rows


def heldout_curve(epochs: list[dict], every_minutes: float = 10.0) -> str:
    """Held-out CE at each `every_minutes` of training time (the epoch reports' `elapsed_s`):
    whether the run was still improving when its budget ended."""
    marks, next_mark = [], every_minutes
    for i, report in enumerate(epochs):
        last = i == len(epochs) - 1
        if HELDOUT_METRIC in report and (report["elapsed_s"] / 60 >= next_mark or last):
            marks.append(f"{report['elapsed_s'] / 60:.0f} min {report['heldout_ce']:.3f}")
            next_mark = (report["elapsed_s"] / 60 // every_minutes + 1) * every_minutes
    return ", ".join(marks)


def results_markdown(evaluation: dict, checkpoint: str | Path, state: TrainingState, *,
                     command: str | None = None, epochs: Sequence[dict] = ()) -> str:
    """The committed results table of one trained network: training facts, the machine, the
    targets with values, and the remaining summary metrics; with the run's epoch reports, the
    held-out CE curve too."""
    s = evaluation["summary"]
    train = state.config.train
    rows = target_rows(s, train.confusion_lambda)
    met = sum(r["met"] is True for r in rows)
    lines = [
        f"# Translation results: {Path(checkpoint)}",
        "",
        f"- written: {time.strftime('%Y-%m-%d %H:%M %Z')}",
        *([f"- command: `{command}`"] if command else []),
        f"- training: {state.elapsed_seconds / 60:.1f} minutes of training steps, {state.step} "
        f"steps, {state.epoch} epochs; seed {train.seed}; precision "
        f"{_precision(train.precision, epochs)}; lambda "
        f"{train.confusion_lambda:g}; augmentation {train.aug_semitones:g} semitones",
        *([f"- held-out CE (nats/sample) by training time: {heldout_curve(epochs)}"]
          if epochs else []),
        f"- machine: {machine()}",
        f"- evaluation: {evaluation['clips']} held-out clip(s) x {evaluation['seconds']:.2f} s "
        f"per domain pair, {_seeds(evaluation)}, sampling temperature "
        f"{evaluation['temperature']:g}, {evaluation['sample_rate']} Hz; the timbre "
        f"judge's own accuracy on real held-out renderings "
        f"{_number(evaluation['classifier']['heldout_acc'])}",
        f"- targets met: {met} of {len(rows)}",
        "",
        "| target | metric | value | required | met |",
        "|---|---|---|---|---|",
        *(f"| {r['label']} | `{r['metric']}` | {_spread(evaluation, r['metric'], r['value'])} | "
          f"{r['target']} | {_verdict(r['met'])} |" for r in rows),
        "",
        "| other metric | value |",
        "|---|---|",
        *(f"| `{k}` | {_spread(evaluation, k, v)} |" for k, v in s.items()
          if k not in {t.metric for t in TARGETS}),
    ]
    return "\n".join(lines) + "\n"


# Beside the targets in a curve table: what stalls them (evaluate.py's summary).
CURVE_INDICATORS = ("self_timbre_acc", "recon_chroma", "recon_gain", "recon_ce", "latent_gain",
                    "pitch_probe_acc")


def curve_markdown(evaluations: Sequence[dict], states: Sequence[TrainingState], *,
                   command: str | None = None) -> str:
    """One network at several points of its training (checkpoints of one run, in order): per
    checkpoint the training time, the steps, every target metric and the indicators of what
    limits them, and how many targets it meets."""
    first = states[0].config.train
    header = ["minutes", "steps", *(t.metric for t in TARGETS), "met", *CURVE_INDICATORS]
    lines = [
        "# Translation results over training time",
        "",
        f"- written: {time.strftime('%Y-%m-%d %H:%M %Z')}",
        *([f"- command: `{command}`"] if command else []),
        f"- training: seed {first.seed}; precision {first.precision}; lambda "
        f"{first.confusion_lambda:g}; augmentation {first.aug_semitones:g} semitones; lr "
        f"schedule {first.lr_schedule}",
        f"- machine: {machine()}",
        f"- evaluation: {evaluations[0]['clips']} held-out clip(s) x "
        f"{evaluations[0]['seconds']:.2f} s per domain pair, {_seeds(evaluations[0])}, "
        f"sampling temperature {evaluations[0]['temperature']:g}",
        "- targets (references of the last checkpoint's evaluation): " + "; ".join(
            f"`{r['metric']}` {r['target']}" for r in target_rows(
                evaluations[-1]["summary"], states[-1].config.train.confusion_lambda)),
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for evaluation, state in zip(evaluations, states, strict=True):
        s = evaluation["summary"]
        met = sum(r["met"] is True for r in target_rows(s, state.config.train.confusion_lambda))
        cells = [f"{state.elapsed_seconds / 60:.0f}", str(state.step),
                 *(_spread(evaluation, t.metric, s[t.metric]) for t in TARGETS),
                 f"{met} of {len(TARGETS)}", *(_number(s[k]) for k in CURVE_INDICATORS)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_curve_table(evaluations: Sequence[dict], checkpoints: Sequence[str | Path],
                      out: str | Path, command: str | None = None) -> Path:
    """`curve_markdown` of evaluated checkpoints, in order of their training steps, written
    atomically to `out`."""
    states = [load_checkpoint(Path(c)) for c in checkpoints]
    order = sorted(range(len(states)), key=lambda i: (states[i].step, states[i].elapsed_seconds))
    return write_text_atomic(Path(out), curve_markdown(
        [evaluations[i] for i in order], [states[i] for i in order], command=command))


def _precision(configured: str, epochs: Sequence[dict]) -> str:
    """The precision the run trained in: what its last epoch report says, and how chosen."""
    used = epochs[-1].get("precision") if epochs else None
    if used is None or used == configured:
        return configured
    return f"{used} ({configured})"


def write_results_table(evaluation: dict, checkpoint: str | Path, out: str | Path,
                        command: str | None = None) -> Path:
    """`results_markdown` of an evaluated checkpoint (or a run's newest), with the epoch
    reports up to it (its metrics.jsonl), written atomically to `out`."""
    checkpoint = checkpoint_of(Path(checkpoint))
    return write_text_atomic(Path(out), results_markdown(
        evaluation, checkpoint, load_checkpoint(checkpoint), command=command,
        epochs=read_history(checkpoint)))


def write_ablation_table(sweep_dir: str | Path, out: str | Path, command: str | None = None,
                         ) -> Path:
    """`ablation_markdown` of a finished sweep, written atomically to `out`."""
    return write_text_atomic(Path(out), ablation_markdown(load_sweep(sweep_dir), command))


def component_effects(data: SweepData) -> pd.DataFrame:
    """For lambda and the augmentation: each metric's mean over evaluated completed trials with
    the component and without it, the change, the spread that a difference must exceed, and the
    verdict: "helps" when the change is larger than the spread and in the metric's better
    direction, "hurts" against it, "no measurable difference" within it. The spread is the
    largest of the metric's sd over each side's trials (training seeds) and its mean sd over the
    evaluation seeds; with one trial a side and one evaluation seed there is none, and no
    verdict. Empty when the sweep never ran a component both on and off."""
    t = data.completed()
    t = t[t["trial"].isin(data.evaluations)]
    rows = []
    for key, label in COMPONENTS:
        if key not in t.columns:
            continue
        off = data.switched_off(key).loc[t.index]
        if off.all() or not off.any():
            continue
        for metric, sign in DIRECTIONS.items():
            if metric not in t.columns:
                continue
            with_, without = finite(t.loc[~off, metric]), finite(t.loc[off, metric])
            change = with_.mean() - without.mean()
            spread = pd.Series([with_.std(), without.std(),
                                _evaluation_sd(data, t["trial"], metric)]).max()
            rows.append({"component": label, "metric": metric, "with": with_.mean(),
                         "without": without.mean(), "change": change, "spread": spread,
                         "trials with / without": f"{int((~off).sum())} / {int(off.sum())}",
                         "verdict": effect_verdict(sign * change, spread)})
    return pd.DataFrame(rows)


def _evaluation_sd(data: SweepData, trials: pd.Series, metric: str) -> float:
    """The mean over `trials` of `metric`'s sd over each trial's evaluation seeds (NaN where
    no trial had two seeds or the metric does not change with them)."""
    name = metric.removeprefix(EVAL_PREFIX)
    sds = [data.evaluations[t].metrics.get("summary_sd", {}).get(name) for t in trials]
    return float(np.mean([v for v in sds if isinstance(v, (int, float))])) \
        if any(isinstance(v, (int, float)) for v in sds) else float("nan")


def ablation_markdown(data: SweepData, command: str | None = None) -> str:
    """The ablation's committed table: every trial's settings and metrics, then per component
    whether it helps by more than the spread over seeds (`component_effects`)."""
    t = data.trials
    shown = [c for c in dict.fromkeys(("trial", "status", LAMBDA, AUG, "epoch", "step",
                                       "elapsed_s", *DIRECTIONS)) if c in t.columns]
    precisions = sorted(set(t["precision"].dropna())) if "precision" in t.columns else []
    lines = [f"# Ablation: {data.name}", "",
             f"- written: {time.strftime('%Y-%m-%d %H:%M %Z')}",
             *([f"- command: `{command}`"] if command else []),
             f"- machine: {machine()}",
             f"- precision: {', '.join(precisions) or 'not reported'}", "",
             "| " + " | ".join(_short(c) for c in shown) + " |",
             "|" + "---|" * len(shown)]
    for _, row in t.iterrows():
        lines.append("| " + " | ".join(_number(row[c]) for c in shown) + " |")
    effects = component_effects(data)
    lines += ["", "## Does each component help?", ""]
    if effects.empty:
        lines.append("No component was evaluated both on and off in completed trials.")
    else:
        lines += ["| component | metric | with | without | change | spread | trials | verdict |",
                  "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['component']} | `{r['metric']}` | {_number(r['with'])} | "
                  f"{_number(r['without'])} | {_number(r['change'], signed=True)} | "
                  f"{_number(r['spread'])} | {r['trials with / without']} | {r['verdict']} |"
                  for _, r in effects.iterrows()]
    return "\n".join(lines) + "\n"


def effect_verdict(improvement: float, spread: float) -> str:
    """A change signed so that > 0 is better, in words, against the `spread` it must exceed."""
    if pd.isna(improvement):
        return "not measured"
    if pd.isna(spread):
        return "no spread measured (one trial and one evaluation seed a side)"
    if abs(improvement) <= spread:
        return "no measurable difference"
    return "helps" if improvement > 0 else "hurts"


def _short(column: str) -> str:
    return column.removeprefix(EVAL_PREFIX).removeprefix("train.")


def _number(value, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:+.3f}" if signed else f"{value:.3f}"
    return str(value)


def _seeds(evaluation: dict) -> str:
    seeds = evaluation.get("seeds", [evaluation["seed"]])
    return f"seed {seeds[0]}" if len(seeds) == 1 else \
        f"{len(seeds)} seeds ({', '.join(map(str, seeds))}; value +- sd over them)"


def _spread(evaluation: dict, metric: str, value) -> str:
    """The value, with its sd over the evaluation seeds when there are several."""
    sd = evaluation.get("summary_sd", {}).get(metric)
    return _number(value) + (f" +- {sd:.3f}" if sd is not None else "")


def _verdict(met: bool | None) -> str:
    return "-" if met is None else "yes" if met else "no"
