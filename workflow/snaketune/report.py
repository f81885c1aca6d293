"""Plots of a study, from its journal: what mattered, how the search went, what each trial learned.

Every plot is written twice: a static PNG (Optuna's matplotlib backend, for the Snakemake report
and the README) and an interactive plotly figure, all of them on one self-contained HTML page
(plotly.js embedded once, so it opens without a network). A plot a study cannot have yet
(importances need two completed trials) is still written, as an image that says why.

`plot_files(tuning)` lists the plots (their paths from snaketune.layout); the `report` rule
declares exactly those as its outputs and hands them back to `write_report`.
"""

from __future__ import annotations

import html
import json
import math
import warnings
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from snaketune import study as studies
from snaketune.layout import StudyLayout, TrialFiles, read_loss_curve, trial_dir
from snaketune.summary import fmt, fmt_seconds, ranked, trial_folder

# (kind, title, needs one figure per objective)
PLOTS = (
    ("optimization_history", "Optimization history", True),
    ("param_importances", "Parameter importances", True),
    ("parallel_coordinate", "Parallel coordinates", True),
    ("slice", "Slice plot", True),
    ("learning_curves", "Learning curves", False),
)
PARETO = ("pareto_front", "Pareto front", False)
DPI = 110


def plot_kinds(metrics: list[str]) -> list[tuple[str, str, bool]]:
    return [*PLOTS, PARETO] if len(metrics) > 1 else list(PLOTS)


def plot_files(metrics: list[str]) -> list[dict]:
    """Every static plot the report writes: [{kind, title, metric, path}], `path` relative to the
    output directory (from the layout).

    One objective: `report/<kind>.png`. Several: one `report/<kind>_<metric>.png` per objective for
    the plots that show one objective at a time.
    """
    layout = StudyLayout(Path())  # paths relative to output_dir
    multi = len(metrics) > 1
    files = []
    for kind, title, per_objective in plot_kinds(metrics):
        for metric in (metrics if per_objective and multi else [None]):
            files.append({"kind": kind, "title": title, "metric": metric,
                          "path": str(layout.plot(kind, metric))})
    return files


# ---------------------------------------------------------------------------------------------
# Learning curves: intermediate values when trials report them, the logged loss otherwise.


def learning_curves(study: optuna.Study, layout: StudyLayout | None = None
                    ) -> tuple[str, dict[int, list[tuple[float, float]]]]:
    """(y label, {trial number: [(step, value), ...]}) for every trial that has a curve.

    The objective's intermediate values when trials reported a curve of them (evaluations during
    training); otherwise, e.g. with one evaluation at the end, the training loss from the logs.
    """
    trials = studies.own_trials(study)
    if any(len(studies.step_reports(t)) > 1 for t in trials):
        return "objective (intermediate values)", {t.number: sorted(studies.step_reports(t).items())
                                                   for t in trials if studies.step_reports(t)}
    curves = {}
    for trial in trials:
        folder = trial_dir(trial, layout)
        rows = read_loss_curve(TrialFiles(folder).loss_curve, key="loss") if folder else []
        if rows:
            curves[trial.number] = [(row["step"], float(row["loss"])) for row in rows]
    return "training loss", curves


def _curve_label(trial: FrozenTrial) -> str:
    """`trial 3 (trial_2/)`: the trial's number beside its slot folder, as every table shows it."""
    folder = trial_folder(trial)
    label = f"trial {trial.number}" + (f" ({folder})" if folder != "-" else "")
    return label if trial.state == TrialState.COMPLETE else f"{label} ({trial.state.name.lower()})"


def _wants_log_scale(values: list[float]) -> bool:
    finite = [v for v in values if math.isfinite(v)]
    return bool(finite) and min(finite) > 0 and max(finite) / min(finite) > 50


# ---------------------------------------------------------------------------------------------
# One plot, with either backend: Optuna's plotly functions or their matplotlib twins

OPTUNA_PLOTS = {"optimization_history": "plot_optimization_history",
                "param_importances": "plot_param_importances",
                "parallel_coordinate": "plot_parallel_coordinate", "slice": "plot_slice"}


def optuna_figure(backend, kind: str, study: optuna.Study, metrics: list[str], metric: str | None):
    """Optuna's plot `kind` from `backend` (optuna.visualization or optuna.visualization.matplotlib)."""
    if kind == "pareto_front":
        if len(metrics) > 3:  # Optuna draws 2 or 3 objectives: the first two here
            return backend.plot_pareto_front(study, targets=lambda t: (t.values[0], t.values[1]),
                                             target_names=metrics[:2])
        return backend.plot_pareto_front(study, target_names=metrics)
    target, target_name = _target(study, metrics, metric)
    return getattr(backend, OPTUNA_PLOTS[kind])(study, target=target, target_name=target_name)


def make_plot(kind: str, study: optuna.Study, metrics: list[str], metric: str | None, backend,
              draw_learning_curves):
    """The figure (or axes), or a string saying why this plot cannot be drawn for this study."""
    reason = not_drawable(kind, study)
    if reason:
        return reason
    with warnings.catch_warnings():
        _quiet()
        try:
            if kind == "learning_curves":
                return draw_learning_curves(study) or "No trial has logged a loss yet."
            return optuna_figure(backend, kind, study, metrics, metric)
        except (ValueError, RuntimeError) as error:  # e.g. importances on degenerate data
            return f"Not drawn: {error}"


# ---------------------------------------------------------------------------------------------
# Static images (matplotlib)


def _quiet():
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    warnings.simplefilter("ignore", UserWarning)


def placeholder_png(path: Path, title: str, reason: str) -> None:
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(8, 3))
    fig.text(0.5, 0.62, title, ha="center", va="center", fontsize=15, weight="bold")
    fig.text(0.5, 0.38, reason, ha="center", va="center", fontsize=11, wrap=True, color="#444")
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def not_drawable(kind: str, study: optuna.Study) -> str | None:
    """Why `kind` cannot be drawn for this study yet, or None."""
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    params = {name for t in completed for name in t.params}
    if kind == "learning_curves":
        return None  # decided once the curves are read
    if not completed:
        return "No trial has completed yet."
    if kind in ("param_importances", "parallel_coordinate", "slice") and not params:
        return "The search space has no parameter."
    if kind == "param_importances":
        varied = {n for n in params if len({repr(t.params.get(n)) for t in completed}) > 1}
        if len(completed) < 2:
            return (f"Importances need at least 2 completed trials; this study has "
                    f"{len(completed)}.")
        if not varied:
            return "Every completed trial has the same parameters: nothing to compare."
    if kind == "pareto_front" and len(study.directions) < 2:
        return "A Pareto front needs several objectives."
    return None


def _target(study: optuna.Study, metrics: list[str], metric: str | None):
    if metric is None or len(study.directions) == 1:
        return None, metrics[0]
    index = metrics.index(metric)
    return (lambda t: t.values[index]), metric


def draw_png(kind: str, study: optuna.Study, metrics: list[str], metric: str | None,
             title: str, path: Path, layout: StudyLayout | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from optuna.visualization import matplotlib as ovm

    heading = f"{title}: {metric}" if metric and len(metrics) > 1 else title
    ax = make_plot(kind, study, metrics, metric, ovm, lambda s: _learning_curves_png(s, layout))
    if isinstance(ax, str):
        plt.close("all")
        placeholder_png(path, heading, ax)
        return
    axes = np.atleast_1d(ax).ravel()
    fig = axes[0].figure
    for a in fig.axes:  # Optuna titles some plots on the left: one title, ours, on top
        for loc in ("left", "center", "right"):
            a.set_title("", loc=loc)
    if kind == "parallel_coordinate":
        # Optuna's Blues fade to white: the worst trials vanish on the grey background.
        for collection in axes[0].collections:
            if collection.get_array() is not None:
                reverse = collection.get_cmap().name.endswith("_r")
                collection.set_cmap("viridis" if reverse else "viridis_r")
    if kind in ("optimization_history", "learning_curves"):
        from matplotlib.ticker import MaxNLocator

        axes[0].xaxis.set_major_locator(MaxNLocator(integer=True))
    if kind == "slice":
        fig.set_size_inches(max(6.5, 4.4 * len(axes) + 1.5), 4.8)
        fig.suptitle(heading, fontsize=13)
    else:
        if kind == "parallel_coordinate":
            fig.set_size_inches(max(8.5, 2.6 * (len(axes[0].get_xticks()) or 3)), 5.2)
        else:
            fig.set_size_inches(8.5, 5.0)
        axes[0].set_title(heading, fontsize=13)
    # bbox_inches="tight" rather than tight_layout: Optuna's colour bars are not layout-managed.
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)


def _learning_curves_png(study: optuna.Study, layout: StudyLayout | None):
    import matplotlib.pyplot as plt

    ylabel, curves = learning_curves(study, layout)
    if not curves:
        return None
    fig, ax = plt.subplots()
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    # A colour per trial (the style's own cycle repeats after 7): tab10/tab20, then a gradient.
    n = len(curves)
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20" if n <= 20 else "viridis")
    for i, (number, points) in enumerate(sorted(curves.items())):
        trial = trials[number]
        style = "-" if trial.state == TrialState.COMPLETE else "--"
        steps, values = zip(*points)
        color = cmap(i) if n <= 20 else cmap(i / max(1, n - 1))
        ax.plot(steps, values, style, color=color, marker="o" if len(points) < 30 else None,
                markersize=3, label=_curve_label(trial))
    if _wants_log_scale([v for points in curves.values() for _, v in points]):
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if n <= 20:
        ax.legend(fontsize=8, ncol=2 if n > 8 else 1, loc="best")
    return ax


# ---------------------------------------------------------------------------------------------
# Interactive figures (plotly) on one self-contained page


def _learning_curves_plotly(study: optuna.Study, layout: StudyLayout | None):
    import plotly.graph_objects as go

    ylabel, curves = learning_curves(study, layout)
    if not curves:
        return None
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    fig = go.Figure()
    for number, points in sorted(curves.items()):
        steps, values = zip(*points)
        fig.add_trace(go.Scatter(x=steps, y=values, mode="lines+markers", name=_curve_label(trials[number])))
    fig.update_layout(xaxis_title="step", yaxis_title=ylabel)
    if _wants_log_scale([v for points in curves.values() for _, v in points]):
        fig.update_yaxes(type="log")
    return fig


def draw_plotly(kind: str, study: optuna.Study, metrics: list[str], metric: str | None, title: str,
                layout: StudyLayout | None = None):
    """A plotly figure, or a reason string when the plot cannot be drawn."""
    from optuna import visualization as ov

    heading = f"{title}: {metric}" if metric and len(metrics) > 1 else title
    fig = make_plot(kind, study, metrics, metric, ov, lambda s: _learning_curves_plotly(s, layout))
    if isinstance(fig, str):
        return fig
    if kind == "parallel_coordinate":
        _recolor_parallel_coordinate(fig)
    fig.update_layout(title=heading, template="plotly_white")
    return fig


def _recolor_parallel_coordinate(fig) -> None:
    """As in the PNG: Optuna's Blues fade to white (the worst trials vanish); Viridis stays visible.

    Optuna draws each trial as a line of its own colour, plus a marker trace for the colour bar:
    each line's colour is moved to the same position on Viridis.
    """
    from plotly.colors import sample_colorscale, unlabel_rgb

    scales = [t.marker.colorscale for t in fig.data if t.mode == "markers" and t.marker.colorscale]
    if not scales:
        return
    positions = [i / 100 for i in range(101)]
    # plotly hands the figure's scale back as tuples; sample_colorscale reads lists.
    blues = [unlabel_rgb(c) for c in sample_colorscale([list(stop) for stop in scales[0]], positions)]
    viridis = sample_colorscale("Viridis", positions)
    for trace in fig.data:
        if trace.mode == "lines" and isinstance(trace.line.color, str) and trace.line.color.startswith("rgb"):
            rgb = unlabel_rgb(trace.line.color)
            nearest = min(range(len(blues)), key=lambda i: sum((a - b) ** 2 for a, b in zip(blues[i], rgb)))
            trace.line.color = viridis[-1 - nearest]  # flipped, as the colour bar: the PNG's colours
            trace.opacity = 0.85
        elif trace.mode == "markers" and trace.marker.colorscale:
            trace.marker.colorscale = "Viridis"
            trace.marker.reversescale = not trace.marker.reversescale


def write_interactive_page(figures: list[tuple[str, object]], path: Path, study_name: str) -> None:
    """One HTML page, plotly.js embedded once: opens without a network."""
    parts, js_included = [], False
    for heading, figure in figures:
        if isinstance(figure, str):
            parts.append(f"<section><h2>{html.escape(heading)}</h2><p class='why'>"
                         f"{html.escape(figure)}</p></section>")
            continue
        parts.append("<section>" + figure.to_html(full_html=False, include_plotlyjs=not js_included)
                     + "</section>")
        js_included = True
    path.write_text(_page(f"Study {study_name}: interactive plots", "\n".join(parts)))


def _page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>"
        "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}"
        "table{border-collapse:collapse;font-size:13px}th,td{padding:4px 8px;border-bottom:1px solid #ddd;"
        "text-align:right;white-space:nowrap}th{background:#f3f3f3}td.text,th.text{text-align:left}"
        "tr.best{background:#e8f5e9;font-weight:600}tr.infeasible{color:#999}.why{color:#666;font-style:italic}"
        "section{margin-bottom:2em}table.examples pre{white-space:pre-wrap;max-width:36em;margin:0}"
        "</style></head><body>"
        f"<h1>{html.escape(title)}</h1>{body}</body></html>"
    )


# ---------------------------------------------------------------------------------------------
# Tables for the report: the trials, the best trial(s)


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return html.escape(fmt(value))


def write_trials_page(table, best_numbers: set[int], path: Path, study_name: str,
                      order: list[int] | None = None) -> None:
    """trials_results.csv as an HTML table, the best trial(s) highlighted: rows in `order` (trial
    numbers, best first; skipped slots last), each trial's number beside its folder."""
    import pandas as pd
    from pandas.api.types import is_numeric_dtype

    table = table.copy()
    if order is not None and "number" in table.columns:
        rank = {number: i for i, number in enumerate(order)}
        table = table.iloc[sorted(range(len(table)), key=lambda i: rank.get(table["number"].iloc[i], len(rank)))]
    if "slot" in table.columns:  # the folder a person opens, rather than Snakemake's slot number
        table["slot"] = [f"trial_{int(slot)}/" if not pd.isna(slot) else "" for slot in table["slot"]]
        table = table.rename(columns={"number": "trial", "slot": "dir"})
    if "duration" in table.columns:  # "0 days 00:01:03.75" -> "1m04s"
        table["duration"] = [fmt_seconds(d.total_seconds()) if not pd.isna(d) else ""
                             for d in pd.to_timedelta(table["duration"], errors="coerce")]
    hidden = {"datetime_start", "datetime_complete", "trial_dir", "total_flos"}
    columns = [c for c in table.columns if c not in hidden  # throughput numbers: the CSV has them
               and not c.endswith(("_per_second", "_num_tokens", "eval_runtime"))]
    align = {c: "" if is_numeric_dtype(table[c]) else "text" for c in columns}
    head = "".join(f"<th class='{align[c]}'>{html.escape(c.removeprefix('params_'))}</th>" for c in columns)
    rows = []
    for record in table.to_dict("records"):
        cls = (" class='best'" if record.get("trial", record.get("number")) in best_numbers
               else " class='infeasible'" if record.get("feasible") is False else "")
        cells = "".join(f"<td class='{align[c]}'>{_cell(record[c])}</td>" for c in columns)
        rows.append(f"<tr{cls}>{cells}</tr>")
    infeasible = int((table["feasible"] == False).sum()) if "feasible" in table.columns else 0  # noqa: E712 (a column)
    body = (f"<p>{len(table)} trial(s), best first; the best highlighted. A trial's number is Optuna's; "
            "its folder, the trial slot that ran it. Parameters appear under their own names."
            + (f" {infeasible} trial(s) broke tuning.constraints (greyed: feasible False, and never the best)."
               if infeasible else "") + "</p>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")
    path.write_text(_page(f"Study {study_name}: trials", body))


EXAMPLES = 3  # best and worst answers shown of the best trial


def examples(trial_dir: str | Path | None, n: int = EXAMPLES) -> tuple[list[dict], list[dict]]:
    """The `n` best and `n` worst scored rows of a trial's logs/generations.jsonl (generation
    metrics), by the first generation objective's score (ties: the earlier row first); ([], [])
    without it.
    A trial with fewer than 2n rows shows each row once."""
    if trial_dir is None:
        return [], []
    try:
        lines = TrialFiles(Path(trial_dir)).generations.read_text().splitlines()
    except OSError:
        return [], []
    rows = [json.loads(line) for line in lines if line.strip()]
    rows.sort(key=lambda r: (-(r.get("score") or 0.0), r["row"]))
    best = rows[:n]
    worst = sorted(rows[len(best):], key=lambda r: (r.get("score") or 0.0, r["row"]))[:n]
    return best, worst


def _examples_html(trial_dir: str | Path | None) -> str:
    best, worst = examples(trial_dir)
    parts = []
    for title, rows in (("Best answers", best), ("Worst answers", worst)):
        if not rows:
            continue
        body = "".join(
            f"<tr><td>{r['row']}</td><td>{_cell(r.get('score'))}</td><td class='text'><pre>"
            f"{html.escape(r['prompt'])}</pre></td><td class='text'><pre>{html.escape(r['reference'])}</pre>"
            f"</td><td class='text'><pre>{html.escape(r['output'])}</pre></td></tr>" for r in rows)
        parts.append(f"<h3>{title} (logs/generations.jsonl)</h3><table class='examples'><thead><tr><th>row</th>"
                     "<th>score</th><th class='text'>prompt</th><th class='text'>reference</th>"
                     f"<th class='text'>output</th></tr></thead><tbody>{body}</tbody></table>")
    return "".join(parts)


def write_best_page(best: dict, path: Path, study_name: str, layout: StudyLayout | None = None) -> None:
    """best_trial.json (or best_trials.json) as a readable page, with the best and worst answers of
    each trial that generated some (`examples`), read from the trial's slot folder in `layout` (the
    folder a record names is where aggregate ran: another machine's copy where a storage plugin
    moves the files), else from the folder the record names."""
    records = best.get("trials", [best])
    sections = []
    for record in records:
        rows = [("objective: " + k, v) for k, v in record["values"].items()]
        rows += [("the base model, untrained: " + k, v)
                 for k, v in (record.get("base_model_values") or best.get("base_model_values", {})).items()]
        rows += [("param: " + k, v) for k, v in record["params"].items()]
        rows += [("metric: " + k, v) for k, v in sorted(record.get("metrics", {}).items())
                 if k not in record["values"]]
        rows += [("checkpoint", record.get("checkpoint")), ("best model", record.get("best_model"))]
        table = "".join(f"<tr><th class='text'>{html.escape(k)}</th><td class='text'>{_cell(v)}</td></tr>"
                        for k, v in rows if v is not None)
        sections.append(f"<section><h2>Trial {record['number']}</h2><table>{table}</table>"
                        f"{_examples_html(_folder(record, layout))}</section>")
    title = f"Study {study_name}: " + ("Pareto-optimal trials" if "trials" in best else "best trial")
    path.write_text(_page(title, "".join(sections)))


def _folder(record: dict, layout: StudyLayout | None) -> str | Path | None:
    if layout is not None and record.get("slot") is not None:
        return layout.trial(record["slot"]).dir
    return record.get("trial_dir")


# ---------------------------------------------------------------------------------------------


def write_report(output_dir: str | Path, study_name: str, metrics: list[str], results_csv: str | Path,
                 best_record: str | Path, plots: list[str | Path], pages: dict[str, str | Path],
                 url: str | None = None) -> None:
    """Write every plot and page of the report: rule report's outputs.

    Reads the journal, `results_csv` (trials_results.csv) and `best_record` (best_trial.json or
    best_trials.json) of study `study_name` in `output_dir`, whose objectives are `metrics`; or the
    study in the database of `url` (tuning.storage).
    `plots` are the paths of `plot_files(metrics)`, in its order; `pages` maps
    `interactive`, `trials` and `best` to the HTML pages' paths.
    """
    import pandas as pd

    study = studies.load_study(output_dir, study_name, url=url)
    layout = StudyLayout(output_dir)
    figures = []
    for entry, path in zip(plot_files(metrics), plots, strict=True):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        draw_png(entry["kind"], study, metrics, entry["metric"], entry["title"], path, layout)
        heading = entry["title"] + (f": {entry['metric']}" if entry["metric"] else "")
        figures.append((heading, draw_plotly(entry["kind"], study, metrics, entry["metric"],
                                             entry["title"], layout)))
    pages = {key: Path(path) for key, path in pages.items()}
    write_interactive_page(figures, pages["interactive"], study.study_name)
    best = json.loads(Path(best_record).read_text())
    numbers = {r["number"] for r in best.get("trials", [best])}
    order = [trial.number for trial in ranked(study, studies.latest_attempts(study))]
    write_trials_page(pd.read_csv(results_csv), numbers, pages["trials"], study.study_name, order)
    write_best_page(best, pages["best"], study.study_name, StudyLayout(output_dir))
