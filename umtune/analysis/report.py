"""`umtune report`: one self-contained HTML page about a finished sweep, readable offline.

Sections: the trials (a sortable table; the best 1,000 of a bigger sweep), whether each
component of the method (lambda, augmentation) helps, hyperparameters against metrics (parallel
coordinates), the effect of the confusion weight lambda, the augmentation range and the dilation
schedules on each metric, learning curves, parameter importance, the best trial's source x
target translation metrics, the Pareto front of multi-objective sweeps, and an audio gallery: a
held-out clip, its true renderings in the other domains and the translations of the best trial
and of an ablation trial (no confusion loss, or no augmentation: the paper's ablations), each
playable with its spectrogram. A section whose data is absent (no evaluation yet, a single
objective, nothing varied) says so and why instead.

The best trial is the completed trial with the highest `eval/translation_gain` once any trial
is evaluated, else the lowest held-out CE (`SweepData.best_trial`). Evaluations are read from
each trial's `<run_path>/evaluation/metrics.json` (written by `analysis/evaluate.py`).
"""

from __future__ import annotations

import io
from html import escape
from pathlib import Path, PurePosixPath

import numpy as np
import soundfile as sf

from umtune.analysis import report_figures as figures
from umtune.analysis.report_data import (
    OutsideSweep,
    SweepData,
    Unavailable,
    finite,
    load_sweep,
)
from umtune.analysis.report_html import (
    Figures,
    audio_player,
    cell,
    note,
    page,
    sortable_table,
    summary_list,
)
from umtune.analysis.results import component_effects
from umtune.layout import BEST_EVAL_METRIC, HELDOUT_METRIC, SWITCH_SUFFIX, TRIALS_FILE
from umtune.storage import refuse_output_in, write_text_atomic

HIDDEN_COLUMNS = ("path", "run_path", "training_iteration", "time_since_restore",
                  "iterations_since_restore", "start_epoch", "threads", "world_size",
                  "trial_workers", "gpu")
GALLERY_CLIPS = 3
MAX_TABLE_ROWS = 1000  # a bigger sweep's table shows its best trials; trials.csv has them all


def build_report(sweep_dir: str | Path, out: str | Path, *, clips: int = GALLERY_CLIPS) -> Path:
    """Write the report of the sweep in `sweep_dir` to `out` (replaced atomically; not into
    the sweep folder it reads)."""
    refuse_output_in(out, {"the sweep folder": sweep_dir})
    return write_text_atomic(Path(out), render(load_sweep(sweep_dir), clips=clips))


def render(data: SweepData, *, clips: int = GALLERY_CLIPS) -> str:
    """The report of a loaded sweep as one HTML document."""
    fig = Figures()
    try:
        best, rule = data.best_trial()
    except Unavailable as e:
        best, rule = None, str(e)
    ablation = data.ablation_trial(exclude=best) if best else None
    builders = [
        ("Trials", "trials", lambda: _table(data, best, ablation)),
        ("Does each component help?", "components", lambda: _components(data)),
        ("Hyperparameters and metrics", "parallel",
         lambda: fig(figures.parallel_coordinates(data))),
        ("Effect of lambda, augmentation and dilations", "effects",
         lambda: "\n".join(fig(f) for _, f in figures.effects(data))),
        ("Learning curves", "curves", lambda: fig(figures.learning_curves(data))),
        ("Parameter importance", "importance", lambda: fig(figures.importance(data))),
        ("Translation metrics of the best trial", "heatmaps",
         lambda: fig(figures.translation_heatmaps(data, _need(best, rule)))),
        ("Pareto front", "pareto", lambda: fig(figures.pareto(data))),
        ("Audio gallery", "audio",
         lambda: _gallery(data, _need(best, rule), ablation, clips, fig)),
    ]
    sections = []
    for title, anchor, build in builders:
        try:
            body = build()
        except Unavailable as e:
            body = note(str(e))
        except (KeyError, TypeError, ValueError) as e:  # a file of the sweep holds odd values
            body = note(f"this section could not be drawn from the sweep's files "
                        f"({type(e).__name__}: {e})")
        sections.append((title, anchor, body))
    return page(f"umtune sweep {data.name}", _summary(data, best, rule, ablation), sections)


def _need(best: str | None, why: str) -> str:
    if best is None:
        raise Unavailable(f"no best trial: {why}")
    return best


def _summary(data: SweepData, best: str | None, rule: str,
             ablation: tuple[str, str] | None) -> str:
    o = data.options
    space = o.get("space", "unknown")
    counts = data.trials["status"].value_counts()
    items = [("sweep", data.location),
             ("space", space if isinstance(space, str) else "a YAML space"),
             ("search / scheduler", f"{o.get('search', '?')} / {o.get('scheduler', '?')}"),
             ("objectives", ", ".join(f"{m} ({d})" for m, d in data.objectives)),
             ("trials", f"{len(data.trials)}: " + ", ".join(f"{n} {s}"
                                                           for s, n in counts.items())),
             ("varied", ", ".join(data.varied()) or "nothing"),
             ("best trial", f"{best} ({rule})" if best else f"none: {rule}"),
             ("ablation trial", f"{ablation[0]}: {ablation[1]}" if ablation else
              "none evaluated (lambda = 0 or no augmentation)"),
             ("evaluated trials", ", ".join(data.evaluations) or "none yet")]
    items += [("note", n) for n in data.notes]
    return summary_list(items)


def _table(data: SweepData, best: str | None, ablation: tuple[str, str] | None) -> str:
    t = data.trials
    first = ["trial", "status", *data.params, "epoch", HELDOUT_METRIC, "heldout_confusion_acc"]
    last = ["pareto", "reason"]
    shown = [c for c in first if c in t.columns]
    shown += [c for c in t.columns if c not in shown + last + list(HIDDEN_COLUMNS)]
    shown += [c for c in last if c in t.columns]
    shown_rows = _leading(data, best, ablation)
    classes = {i: "best" for i in t.index[t["trial"] == best]}
    if ablation:
        classes.update({i: "ablation" for i in t.index[t["trial"] == ablation[0]]})
    legend = ("<p>Click a column's header to sort by it (again to reverse). "
              '<span style="background:#e6f4ea">green</span>: the best trial'
              + ('; <span style="background:#fdf1e6">orange</span>: the ablation trial'
                 if ablation else "") + "."
              + (" Switch columns (<code>…" + SWITCH_SUFFIX + "</code>) say whether the field "
                 "took its sampled value." if any(k.endswith(SWITCH_SUFFIX) for k in data.params)
                 else "") + "</p>")
    if len(shown_rows) < len(t):
        legend += (f"<p>{len(shown_rows):,} of {len(t):,} trials shown: the best and the "
                   "ablation trial, then completed trials before the others, each group by "
                   f"{escape(BEST_EVAL_METRIC)} (highest first) and held-out CE (lowest first). "
                   f"Every trial is in the sweep folder's {TRIALS_FILE} and trials.csv.</p>")
    return legend + sortable_table(t.loc[shown_rows, shown], classes)


def _leading(data: SweepData, best: str | None, ablation: tuple[str, str] | None) -> list:
    """The index of the table's rows: all of them in the table's order, or for a big sweep the
    MAX_TABLE_ROWS most worth reading, in that order."""
    t = data.trials
    if len(t) <= MAX_TABLE_ROWS:
        return list(t.index)
    rank = t.assign(_named=~t["trial"].isin([best, ablation[0] if ablation else best]),
                    _open=t["status"] != "completed",
                    _gain=-finite(t[BEST_EVAL_METRIC]) if BEST_EVAL_METRIC in t else 0.0,
                    _ce=finite(t[HELDOUT_METRIC]) if HELDOUT_METRIC in t else 0.0)
    return list(rank.sort_values(["_named", "_open", "_gain", "_ce"], kind="stable",
                                 na_position="last").index[:MAX_TABLE_ROWS])


def _components(data: SweepData) -> str:
    effects = component_effects(data)
    if effects.empty:
        raise Unavailable("no component (lambda, augmentation) was evaluated both on and off in "
                          "completed trials")
    return ("<p>Mean of each metric over evaluated completed trials with the component and "
            "without it; <i>helps</i>: the change is larger than the spread over seeds (the "
            "sd over each side's trials, or over the evaluation seeds, whichever is larger) and "
            "in the metric's better direction (the latent accuracy: lower, towards chance); "
            "<i>no measurable difference</i>: within that spread.</p>"
            + sortable_table(effects.round(4), {}))


def _gallery(data: SweepData, best: str, ablation: tuple[str, str] | None, clips: int,
             fig: Figures) -> str:
    evaluation = data.evaluations.get(best)
    if evaluation is None:
        raise Unavailable(f"the best trial {best} has no evaluation yet "
                          "(<run_path>/evaluation/metrics.json)")
    entries = evaluation.audio()
    if not entries:
        raise Unavailable(f"the evaluation of {best} has no audio")
    other = data.evaluations[ablation[0]].audio() if ablation else []
    parts = [] if ablation else [note("no evaluated ablation trial (lambda = 0 or no "
                                      "augmentation) in this sweep")]
    heads = ["", "ground truth", f"best: {best}",
             f"ablation: {ablation[0]} ({ablation[1]})" if ablation else "ablation"]
    clip_ids = list(dict.fromkeys(e["clip"] for e in entries))
    for clip in clip_ids[:clips]:
        mine = [e for e in entries if e["clip"] == clip]
        source = next((e for e in mine if e["kind"] == "source"), None)
        domain = source["source"] if source else mine[0].get("source")
        parts.append(f"<h3>Clip {escape(str(clip))} ({escape(str(domain))})</h3>")
        cells = [cell(h, head=True) for h in heads]
        cells += [cell("source", head=True),
                  _player(data, fig, best, source, f"{domain} source") if source else
                  cell("no source audio"), cell(""), cell("")]
        targets = list(dict.fromkeys(e["target"] for e in mine if e["kind"] != "source"))
        for target in targets:
            truth = _find(mine, clip, "truth", target)
            mine_tr = _find(mine, clip, "translation", target)
            theirs = _find(other, clip, "translation", target)
            cells += [cell(f"→ {target}", head=True),
                      _player(data, fig, best, truth, f"{target}, rendered") if truth
                      else cell("no rendering"),
                      _player(data, fig, best, mine_tr, f"{domain} → {target}") if mine_tr
                      else cell("no translation"),
                      _player(data, fig, ablation[0], theirs, f"{domain} → {target}") if theirs
                      else cell("not in the ablation trial's evaluation" if ablation else "")]
        parts.append(f'<div class="gallery">{"".join(cells)}</div>')
    if len(clip_ids) > clips:
        parts.append(f"<p>{len(clip_ids) - clips} more clip(s) in the evaluation folder of "
                     f"{escape(best)}.</p>")
    return "\n".join(parts)


def _find(entries: list[dict], clip, kind: str, target: str) -> dict | None:
    return next((e for e in entries if e["clip"] == clip and e["kind"] == kind
                 and e.get("target") == target), None)


def _player(data: SweepData, fig: Figures, trial: str, entry: dict, caption: str) -> str:
    """One clip of a trial's evaluation: player and spectrogram, or why it cannot be shown."""
    evaluation = data.evaluations[trial]
    try:
        audio = evaluation.audio_bytes(entry)
    except FileNotFoundError:
        return cell(f"missing: {entry['path']}")
    except OutsideSweep as e:
        return cell(f"not embedded: {e}")
    try:
        samples, rate = sf.read(io.BytesIO(audio), dtype="float32", always_2d=True)
    except sf.LibsndfileError as e:
        return cell(f"unreadable {entry['path']}: {e}")
    spec = fig(figures.spectrogram(np.mean(samples, axis=1), rate), static=True)
    return audio_player(caption, audio, PurePosixPath(entry["path"]).suffix, spec)
