"""The sweep report's plotly figures, one function per section, each built from `SweepData`.

A function whose data is absent raises `Unavailable` with the reason, which the report shows in
the figure's place. No HTML here (report_html.py) and no file reading (report_data.py).

Plotly reads titles, labels, legend names and hover text as a subset of HTML, so every string
that comes from the sweep folder (trial, parameter, metric, status and domain names, sampled
values) goes through `_text` first: the reader sees the text, markup in it stays inert.
"""

from __future__ import annotations

import html
import math
import warnings

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from umtune.analysis.report_data import OFF, SweepData, Unavailable, finite, study_file
from umtune.layout import HELDOUT_METRIC, SWITCH_SUFFIX

STATUS_COLORS = {"completed": "#1f77b4", "running": "#2ca02c", "stopped early": "#ff7f0e",
                 "diverged": "#d62728", "failed": "#7f7f7f"}
MAX_CATEGORIES = 6  # numeric parameters with at most this many values are shown as categories
MAX_BOX_POINTS = 500  # a box of more trials draws only its outliers: the box says the rest
MIN_OPTUNA_TRIALS = 20  # completed trials for Optuna's importance; rank correlation below
MIN_CORRELATION_TRIALS = 3
PAIR_METRICS = ("timbre_acc", "chroma_to_source", "chroma_to_truth", "spectral_distance",
                "identity_distance", "translation_gain")
TEMPLATE = "plotly_white"


def _text(value) -> str:
    """A string from the sweep folder as plotly text: shown as written, never read as markup."""
    return html.escape(str(value), quote=False)


def _texts(values) -> list[str]:
    return [_text(v) for v in values]


def parallel_coordinates(data: SweepData) -> go.Figure:
    """Every trial with a finite held-out CE as a line through its sampled values and metrics."""
    varied = data.varied()
    if not varied:
        raise Unavailable("no hyperparameter took more than one value in this sweep")
    t = data.trials
    if HELDOUT_METRIC not in t.columns:
        raise Unavailable("the trial table has no heldout_ce")
    rows = t[finite(t[HELDOUT_METRIC]).notna()]
    if len(rows) < 2:
        raise Unavailable(f"{len(rows)} trial(s) with a finite held-out CE; need 2")
    metrics = [m for m in data.metrics() if finite(rows[m]).notna().all()]
    left_out = [m for m in data.metrics() if m not in metrics]
    dims = []
    for key in varied:
        dims.append(_dimension(key, rows[key]))
        switch = f"{key}{SWITCH_SUFFIX}"
        if switch in rows.columns and rows[switch].nunique() > 1:
            dims.append(_dimension(switch, rows[switch]))
    dims += [dict(label=_text(m), values=finite(rows[m])) for m in metrics]
    title = f"Hyperparameters and final metrics of {len(rows)} trials (colour: held-out CE)"
    if left_out:
        title += (f"<br><sup>{len(left_out)} metric(s) left out that not every trial has "
                  f"(e.g. {_text(left_out[0])}): see the effects below</sup>")
    fig = go.Figure(go.Parcoords(
        dimensions=dims,
        line=dict(color=finite(rows[HELDOUT_METRIC]), colorscale="Viridis", reversescale=True,
                  showscale=True, colorbar=dict(title=HELDOUT_METRIC))))
    return fig.update_layout(title=title, template=TEMPLATE, height=480,
                             margin=dict(l=80, r=80, t=130, b=40))


def effects(data: SweepData) -> list[tuple[str, go.Figure]]:
    """One figure per varied parameter (lambda, augmentation and dilations first): each metric
    against its values, a box per value when it takes few, a scatter otherwise."""
    varied = data.varied()
    metrics = data.metrics()
    if not varied:
        raise Unavailable("no hyperparameter took more than one value in this sweep")
    if not metrics:
        raise Unavailable("no metric took more than one value among the trials")
    return [(key, _effect(data, key, metrics)) for key in varied]


def _effect(data: SweepData, key: str, metrics: list[str]) -> go.Figure:
    t = data.trials
    values = data.effective(key)
    cols = min(3, len(metrics))
    nrows = math.ceil(len(metrics) / cols)
    fig = make_subplots(rows=nrows, cols=cols, subplot_titles=_texts(metrics),
                        horizontal_spacing=0.08, vertical_spacing=_spacing(nrows))
    categories = _categories(values)
    shown = ("completed", "stopped early", "running")
    for i, metric in enumerate(metrics):
        r, c = i // cols + 1, i % cols + 1
        y = finite(t[metric])
        for status in shown:
            rows = (t["status"] == status) & y.notna()
            if categories is not None:
                rows &= values.notna()
            else:
                rows &= values.notna() & values.map(lambda v: v != OFF)
            if not rows.any():
                continue
            common = dict(name=status, legendgroup=status, showlegend=i == 0,
                          marker=dict(color=STATUS_COLORS[status]),
                          text=_texts(t.loc[rows, "trial"]))
            if categories is not None:
                fig.add_trace(go.Box(x=values[rows].map(_label).map(_text), y=y[rows],
                                     boxpoints="all" if rows.sum() <= MAX_BOX_POINTS
                                     else "outliers",
                                     jitter=0.3, pointpos=0, hovertemplate="%{text}: %{y:.4g}",
                                     **common), row=r, col=c)
            else:
                fig.add_trace(go.Scatter(x=values[rows].astype(float), y=y[rows], mode="markers",
                                         hovertemplate="%{text}: %{x:.3g}, %{y:.4g}", **common),
                              row=r, col=c)
        if categories is None and (off := (values == OFF) & y.notna()).any():
            fig.add_trace(_off_lines(values, y[off], t.loc[off, "trial"], f"{key}{SWITCH_SUFFIX}",
                                     showlegend=i == 0), row=r, col=c)
        if categories is not None:
            fig.update_xaxes(categoryorder="array", categoryarray=_texts(categories),
                             type="category", row=r, col=c)
        elif _log_scale(values):
            fig.update_xaxes(type="log", row=r, col=c)
    title = f"Effect of {_text(key)} on each metric"
    if categories is None and (values == OFF).any():
        title += f" (dotted lines: trials with {_text(key)}{SWITCH_SUFFIX} false)"
    fig.update_layout(title=title, template=TEMPLATE, boxmode="group", height=260 * nrows + 80,
                      margin=dict(t=90, b=40))
    return fig


def _off_lines(values: pd.Series, y: pd.Series, trials: pd.Series, switch: str, *,
               showlegend: bool) -> go.Scatter:
    """The trials with `switch` false, which have no place on the numeric x axis: one dotted
    line across the axis per trial, all in one trace (a shape each would cost quadratic time)."""
    numbers = finite(values[values.map(lambda v: v != OFF)])
    ends = [numbers.min(), numbers.max(), None]
    return go.Scatter(x=ends * len(y), y=np.repeat(y.to_numpy(), 3), mode="lines",
                      line=dict(dash="dot", color="#2ca02c", width=1), opacity=0.6,
                      name=f"{_text(switch)} false", legendgroup=OFF, showlegend=showlegend,
                      text=np.repeat(_texts(trials), 3),
                      hovertemplate=f"{OFF}: %{{text}}: %{{y:.4g}}<extra></extra>")


def _spacing(rows: int) -> float:
    """Vertical room between subplot rows (a fraction of the figure), for their titles."""
    return 0.0 if rows < 2 else min(0.35 / rows + 0.04, 0.9 / (rows - 1))


def _categories(values: pd.Series) -> list[str] | None:
    """The x categories in order (off first, numbers ascending), or None for a numeric axis."""
    present = values.dropna()
    numbers = [v for v in present if v != OFF and _numeric(v)]
    others = [v for v in present if v != OFF and not _numeric(v)]
    distinct = sorted(set(numbers))
    if not others and len(distinct) > MAX_CATEGORIES:
        return None
    order = ([OFF] if (present == OFF).any() else []) + [_label(v) for v in distinct]
    return order + sorted({_label(v) for v in others})


def _numeric(v) -> bool:
    return isinstance(v, (int, float, np.number)) and not isinstance(v, (bool, np.bool_))


def _label(v) -> str:
    return f"{v:g}" if _numeric(v) else str(v)


def _log_scale(values: pd.Series) -> bool:
    numbers = finite(values[values.map(lambda v: v != OFF)]).dropna()
    return bool(len(numbers) and numbers.min() > 0 and numbers.max() / numbers.min() > 100)


def _dimension(key: str, column: pd.Series) -> dict:
    if pd.api.types.is_bool_dtype(column) or not pd.api.types.is_numeric_dtype(column):
        labels = sorted({_label(v) for v in column.dropna()})
        codes = column.map(lambda v: labels.index(_label(v)) if pd.notna(v) else None)
        return dict(label=_text(key), values=codes, tickvals=list(range(len(labels))),
                    ticktext=_texts(labels))
    values = finite(column)
    if _log_scale(column):
        return dict(label=f"log10 {_text(key)}", values=np.log10(values))
    return dict(label=_text(key), values=values)


def learning_curves(data: SweepData) -> go.Figure:
    """Held-out CE against epoch for every trial, one trace per status (a trace per trial would
    make a legend of thousands); an x where the scheduler stopped a trial."""
    statuses = dict(zip(data.trials["trial"], data.trials["status"], strict=True))
    lines: dict[str, dict[str, list]] = {}
    last_epoch = 0
    for trial, curve in data.curves.items():
        ce = finite(curve[HELDOUT_METRIC])
        points = curve[ce.notna()]
        if points.empty:
            continue
        status = statuses.get(trial, "failed")
        line = lines.setdefault(status, {k: [] for k in ("x", "y", "text", "symbol", "size")})
        stopped = status in ("stopped early", "diverged")
        n = len(points)
        line["x"] += [*points["epoch"], None]  # None: the line breaks between trials
        line["y"] += [*ce[ce.notna()], None]
        line["text"] += [f"{_text(trial)} ({_text(status)})"] * n + [""]
        line["symbol"] += ["circle"] * (n - 1) + ["x" if stopped else "circle", "circle"]
        line["size"] += [4] * (n - 1) + [10 if stopped else 4, 0]
        last_epoch = max(last_epoch, int(points["epoch"].max()))
    if not lines:
        raise Unavailable("no trial reported a finite held-out CE at any epoch")
    fig = go.Figure()
    for status, line in lines.items():
        color = STATUS_COLORS.get(status, "#7f7f7f")
        count = line["x"].count(None)
        fig.add_trace(go.Scatter(
            x=line["x"], y=line["y"], mode="lines+markers", name=f"{_text(status)} ({count})",
            line=dict(color=color, width=1), opacity=0.7,
            marker=dict(symbol=line["symbol"], size=line["size"]), text=line["text"],
            hovertemplate="%{text}<br>epoch %{x}: %{y:.4g}<extra></extra>"))
    return fig.update_layout(
        title="Held-out CE per epoch (x: the last epoch of a trial stopped early or diverged)",
        xaxis=dict(title="epoch", dtick=1 if last_epoch <= 20 else None),
        yaxis_title=HELDOUT_METRIC, template=TEMPLATE, height=440)


def importance(data: SweepData) -> go.Figure:
    """Which hyperparameters matter: Optuna's importance from the sweep's study when it has
    enough completed trials, else rank correlation of each parameter with each metric."""
    varied = data.varied()
    if not varied:
        raise Unavailable("no hyperparameter took more than one value in this sweep")
    done = data.completed()
    file = study_file(data)
    if file is not None and len(done) >= MIN_OPTUNA_TRIALS:
        return _optuna_importance(data, str(file))
    if len(done) < MIN_CORRELATION_TRIALS:
        raise Unavailable(f"{len(done)} completed trial(s): too few to rank parameters "
                          f"(rank correlation needs {MIN_CORRELATION_TRIALS}, Optuna's importance "
                          f"{MIN_OPTUNA_TRIALS})")
    return _correlation_importance(data, varied, done)


def _optuna_importance(data: SweepData, file: str) -> go.Figure:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = f"sqlite:///{file}"
    names = optuna.study.get_all_study_names(storage)
    study = optuna.load_study(study_name=data.name if data.name in names else names[0],
                              storage=storage)
    n = sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    evaluator = optuna.importance.PedAnovaImportanceEvaluator(target_quantile=max(0.1, 5 / n))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        scores = optuna.importance.get_param_importances(study, evaluator=evaluator)
    target = (" ".join(m for m, _ in data.objectives) if len(study.directions) == 1 else
              "reaching the Pareto front of " + " and ".join(m for m, _ in data.objectives))
    fig = go.Figure(go.Bar(x=list(scores.values())[::-1], y=_texts(scores)[::-1],
                           orientation="h"))
    return fig.update_layout(
        title=f"Parameter importance: Optuna PED-ANOVA for {target} ({n} completed trials)",
        xaxis_title="importance (normalised)", template=TEMPLATE,
        height=140 + 40 * len(scores), margin=dict(l=220))


def _correlation_importance(data: SweepData, varied: list[str], done: pd.DataFrame
                            ) -> go.Figure:
    metrics = data.metrics()
    if not metrics:
        raise Unavailable("no metric took more than one value among the trials")
    scores, measures = pd.DataFrame(index=varied, columns=metrics, dtype=float), set()
    for key in varied:
        for metric in metrics:
            score, measure = _association(data.effective(key)[done.index], finite(done[metric]))
            measures.add(measure)
            scores.loc[key, metric] = score
    scores = scores.dropna(axis=1, how="all")
    if scores.empty:
        raise Unavailable(f"no metric varied among {MIN_CORRELATION_TRIALS} or more of the "
                          f"{len(done)} completed trials")
    z = [[None if math.isnan(v) else v for v in row] for row in scores.to_numpy()]
    fig = go.Figure(go.Heatmap(z=z, x=_texts(scores.columns), y=_texts(varied), zmin=0, zmax=1,
                               colorscale="Blues", texttemplate="%{z:.2f}",
                               colorbar=dict(title="0 to 1"),
                               hovertemplate="%{y} and %{x}: %{z:.3f}<extra></extra>"))
    return fig.update_layout(
        title=f"Parameter importance: {' / '.join(sorted(measures))} with each metric over "
              f"{len(done)} completed trials<br><sup>too few trials for Optuna's importance "
              f"(needs {MIN_OPTUNA_TRIALS}); blank: fewer than {MIN_CORRELATION_TRIALS} trials "
              "have the metric, or it did not vary among them</sup>",
        template=TEMPLATE, height=220 + 40 * len(varied), margin=dict(l=220, t=100, b=140),
        xaxis=dict(type="category", tickangle=30), yaxis=dict(type="category",
                                                              autorange="reversed"))


def _association(values: pd.Series, y: pd.Series) -> tuple[float, str]:
    """|Spearman rho| for ordered values (off below every number); the correlation ratio eta
    for unordered categories. NaN (a blank cell) with fewer than MIN_CORRELATION_TRIALS trials
    having the metric, or when the parameter or the metric takes one value among them."""
    ok = values.notna() & y.notna()
    values, y = values[ok], y[ok]
    ordered = all(v == OFF or _numeric(v) for v in values)
    measure = "|Spearman ρ|" if ordered else "correlation ratio η"
    if len(y) < MIN_CORRELATION_TRIALS or y.nunique() < 2 or values.map(_label).nunique() < 2:
        return math.nan, measure
    if ordered:
        ranks = values.map(lambda v: -math.inf if v == OFF else float(v)).astype(float)
        return abs(float(ranks.rank().corr(y.rank()))), measure
    groups = y.groupby(values.map(_label))
    between = (groups.size() * (groups.mean() - y.mean()) ** 2).sum()
    return math.sqrt(between / ((y - y.mean()) ** 2).sum()), measure


def translation_heatmaps(data: SweepData, trial: str) -> go.Figure:
    """Source x target grids of the pairwise translation metrics of one evaluated trial."""
    evaluation = data.evaluations.get(trial)
    if evaluation is None:
        raise Unavailable(f"{trial} has no evaluation yet (<run_path>/evaluation/metrics.json)")
    pairs = pd.DataFrame(evaluation.metrics.get("pairs") or [])
    if pairs.empty:
        raise Unavailable(f"the evaluation of {trial} lists no source/target pairs")
    names = [m for m in PAIR_METRICS if m in pairs.columns and finite(pairs[m]).notna().any()]
    names += [c for c in pairs.columns if c not in (*PAIR_METRICS, "source", "target")
              and finite(pairs[c]).notna().any()]
    if not names:
        raise Unavailable(f"every pairwise metric of {trial} is null")
    domains = list(evaluation.metrics.get("domains") or [])
    sources = [d for d in domains if d in set(pairs["source"])] or sorted(set(pairs["source"]))
    targets = [d for d in domains if d in set(pairs["target"])] or sorted(set(pairs["target"]))
    cols = min(3, len(names))
    nrows = math.ceil(len(names) / cols)
    fig = make_subplots(rows=nrows, cols=cols, subplot_titles=_texts(names),
                        horizontal_spacing=0.1, vertical_spacing=_spacing(nrows))
    for i, name in enumerate(names):
        grid = (pairs.assign(value=finite(pairs[name]))
                .pivot_table(index="source", columns="target", values="value", dropna=False)
                .reindex(index=sources, columns=targets))
        z = [[None if math.isnan(v) else v for v in row] for row in grid.to_numpy(float)]
        fig.add_trace(go.Heatmap(z=z, x=_texts(targets), y=_texts(sources), colorscale="Viridis",
                                 showscale=False, texttemplate="%{z:.3g}",
                                 hovertemplate="%{y} → %{x}: %{z:.4g}<extra>" + _text(name) +
                                 "</extra>"), row=i // cols + 1, col=i % cols + 1)
    fig.update_xaxes(title_text="target", type="category")
    fig.update_yaxes(title_text="source", type="category")
    return fig.update_layout(title=f"Translation metrics of {_text(trial)} per source → target",
                             template=TEMPLATE, height=280 * nrows + 100, margin=dict(t=100))


def pareto(data: SweepData) -> go.Figure:
    """The trade-off between the sweep's first two objectives and its non-dominated trials."""
    objectives = data.objectives
    if len(objectives) < 2:
        names = ", ".join(m for m, _ in objectives) or "unknown"
        raise Unavailable(f"single-objective sweep ({names}): there is no Pareto front")
    (quality, q_mode), (cost, c_mode) = objectives[:2]
    t = data.trials
    if not {quality, cost} <= set(t.columns):
        raise Unavailable(f"the trial table lacks {quality} or {cost}")
    x, y = finite(t[cost]), finite(t[quality])
    ok = x.notna() & y.notna()
    if not ok.any():
        raise Unavailable(f"no trial has finite {quality} and {cost}")
    front = ok & (t["pareto"].astype(bool) if "pareto" in t.columns else False)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=x[ok & ~front], y=y[ok & ~front], mode="markers",
                             name="dominated", marker=dict(color="#aaaaaa", size=8),
                             text=_texts(t.loc[ok & ~front, "trial"]),
                             hovertemplate="%{text}: %{x:.4g}, %{y:.4g}<extra></extra>"))
    order = x[front].sort_values().index
    fig.add_trace(go.Scatter(x=x[order], y=y[order], mode="lines+markers", name="Pareto front",
                             line=dict(shape="hv", color="#d62728"),
                             marker=dict(color="#d62728", size=10),
                             text=_texts(t.loc[order, "trial"]),
                             hovertemplate="%{text}: %{x:.4g}, %{y:.4g}<extra></extra>"))
    return fig.update_layout(
        title=f"Pareto front: {quality} ({q_mode}) against {cost} ({c_mode}), "
              f"{int(front.sum())} of {int(ok.sum())} trials non-dominated",
        xaxis_title=cost, yaxis_title=quality, template=TEMPLATE, height=440)


def spectrogram(samples: np.ndarray, sample_rate: int) -> go.Figure:
    """A small log-mel spectrogram (torchaudio) of one clip."""
    import torch
    import torchaudio

    audio = torch.as_tensor(np.asarray(samples, dtype=np.float32))
    hop = max(64, math.ceil(len(audio) / 160))
    mel = torchaudio.transforms.MelSpectrogram(sample_rate, n_fft=max(512, min(2048, 4 * hop)),
                                               hop_length=hop, n_mels=64)(audio)
    db = torchaudio.transforms.AmplitudeToDB(top_db=80.0)(mel).numpy().round(1)
    times = (np.arange(db.shape[1]) * hop / sample_rate).round(3)
    fig = go.Figure(go.Heatmap(z=db, x=times, colorscale="Magma", showscale=False,
                               hovertemplate="%{x:.2f} s, mel %{y}: %{z} dB<extra></extra>"))
    return fig.update_layout(height=150, margin=dict(l=30, r=5, t=5, b=25), template=TEMPLATE,
                             xaxis=dict(title=None, ticksuffix=" s"), yaxis=dict(title=None))

