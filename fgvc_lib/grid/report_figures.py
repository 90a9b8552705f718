"""The figures of ``fgvc report`` (:mod:`fgvc_lib.grid.report`), each a ``Figure`` built without pyplot.

- ``compare_<axis>.png`` (a grid): the metric per epoch, one line per run coloured by the axis' value, and
  beside it the run's value of the metric (its best epoch's, or the ``metrics.json`` number) per axis value
  as seaborn bars, one dot per run;
- ``runs_<notebook>.png`` (a folder of runs): the metric per epoch, one line per run, and one bar per run;
- ``published.png``: the reproduced figure next to the published one, per run and metric.

A dashed line marks the baseline where the metric has one: chance accuracy (``chance_acc`` of
``metrics.json``, 1 / classes; top-5: 5 / classes; an error: 1 - chance) or, for multi-label accuracy, the
all-negative baseline (``baseline_all_negative_acc``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .plan import _short_value

Line = tuple[str, str, str, tuple[list[float], list[float]]]  # label, colour, style, (epochs, values)
STYLES = ("-", "--", ":", "-.")


def history_columns(folder: Path) -> list[str]:
    """The metric columns of a run's ``history.csv`` (its header; ``epoch`` left out)."""
    try:
        with open(folder / "history.csv", encoding="utf-8") as handle:
            header = handle.readline()
    except (OSError, UnicodeDecodeError):
        return []
    return [c.strip() for c in header.strip().split(",") if c.strip() and c.strip() != "epoch"]


def run_history(folder: Path, metric: str) -> tuple[list[float], list[float]] | None:
    """(epochs, values) of ``metric`` in the run's ``history.csv``; None when it has none."""
    import pandas as pd

    path = folder / "history.csv"
    if not path.is_file():
        return None
    try:
        hist = pd.read_csv(path)
    except (OSError, ValueError):
        return None
    if metric not in hist.columns or hist.empty:
        return None
    epochs = hist["epoch"] if "epoch" in hist.columns else pd.Series(range(1, len(hist) + 1))
    return [float(e) for e in epochs], [float(v) for v in hist[metric]]


def _curves(folder: Path, entries: list[tuple[str, dict[str, Any]]], metric: str) -> list[tuple[str, dict, Any]]:
    out = []
    for name, metrics in entries:
        curve = run_history(folder / name, metric)
        if curve is not None:
            out.append((name, metrics.get("params") or {}, curve))
    return out


def baselines(entries: list[tuple[str, dict[str, Any]]], metric: str) -> list[tuple[float, str]]:
    """The baseline lines of ``metric`` (module docstring): ``(value, label)``, one per distinct value."""
    name = metric.lower()
    if "loss" in name or "f1" in name or ("acc" not in name and "error" not in name and "top5" not in name):
        return []
    found: dict[float, str] = {}
    for _, m in entries:
        chance = m.get("chance_acc")
        if isinstance(chance, (int, float)) and not isinstance(chance, bool) and 0 < chance <= 1:
            if "top5" in name:
                value, label = min(1.0, 5 * chance), "chance (5 / classes)"
            elif "error" in name:
                value, label = 1.0 - chance, "chance error (1 - 1 / classes)"
            else:
                value, label = float(chance), "chance (1 / classes)"
        elif isinstance(m.get("baseline_all_negative_acc"), (int, float)) and "acc" in name and "top" not in name:
            value, label = float(m["baseline_all_negative_acc"]), "all-negative baseline"
        else:
            continue
        found.setdefault(round(value, 6), f"{label}: {value:.3g}")
    return sorted(found.items())


def _draw_baselines(ax: Any, lines: list[tuple[float, str]], *, vertical: bool = False) -> None:
    for value, label in lines:
        draw = ax.axvline if vertical else ax.axhline
        draw(value, color="0.25", linestyle="--", linewidth=1.2, label=label, zorder=1)


def _bars(ax: Any, groups: Sequence[str], values: Sequence[float], *, colors: dict[str, str], label: str,
          horizontal: bool, lines: list[tuple[float, str]], legend: bool = True) -> None:
    """seaborn bars of ``values`` per group (the mean when a group has several runs, each run a dot)."""
    import pandas as pd
    import seaborn as sns

    data = pd.DataFrame({"group": list(groups), "value": list(values)})
    order = list(dict.fromkeys(groups))
    xy = {"y": "group", "x": "value"} if horizontal else {"x": "group", "y": "value"}
    sns.barplot(data=data, **xy, hue="group", order=order, hue_order=order, palette=colors, errorbar=None,
                legend=False, alpha=0.8, ax=ax)
    if data.groupby("group").size().max() > 1:
        sns.stripplot(data=data, **xy, order=order, color="black", size=4, jitter=False, ax=ax)
    _draw_baselines(ax, lines, vertical=horizontal)
    (ax.set_xlabel if horizontal else ax.set_ylabel)(label)
    (ax.set_ylabel if horizontal else ax.set_xlabel)("")
    if lines and legend:
        ax.legend(fontsize="x-small", loc="best")
    ax.grid(alpha=0.3, axis="x" if horizontal else "y")


def _draw_curves(ax: Any, lines: list[Line], metric: str, baseline: list[tuple[float, str]]) -> None:
    from matplotlib.ticker import MaxNLocator

    for label, color, style, (epochs, ys) in lines:
        ax.plot(epochs, ys, label=label, color=color, linestyle=style, marker="o", markersize=3)
    _draw_baselines(ax, baseline)
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    last = max(max(epochs) for *_, (epochs, _) in lines)
    if last <= 20:
        ax.set_xticks(range(1, int(last) + 1))
        ax.set_xlim(0.5, last + 0.5)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)


def _figure(lines: list[Line], metric: str, title: str, bars: dict[str, Any] | None,
            baseline: list[tuple[float, str]]) -> Any:
    """Curves (with their legend beside them) and / or a bar panel."""
    from matplotlib.figure import Figure

    if not lines:
        fig = Figure(figsize=(7, max(3.5, 0.3 * len(bars["groups"]) + 1.5) if bars["horizontal"] else 4.5))
        _bars(fig.add_subplot(), **bars, lines=baseline)
        fig.suptitle(title)
        return fig
    fig = Figure(figsize=(16 if bars else 11, 4.8))
    if bars:
        ax, lax, bx = fig.subplots(1, 3, gridspec_kw={"width_ratios": [2.4, 0.9, 1.4]})
        _bars(bx, **bars, lines=baseline, legend=False)  # the curves' legend names the baseline
    else:
        ax, lax = fig.subplots(1, 2, gridspec_kw={"width_ratios": [2.4, 1.0]})
    _draw_curves(ax, lines, metric, baseline)
    handles, labels = ax.get_legend_handles_labels()
    lax.axis("off")
    lax.legend(handles, labels, fontsize="x-small", loc="upper left", borderaxespad=0)
    fig.suptitle(title)
    return fig


def compare_figure(
    grid_dir: Path, entries: list[tuple[str, dict[str, Any]]], axis: str, varying: list[str], metric: str,
    values: dict[str, float] | None = None, value_label: str = "",
) -> Any:
    """``metric`` per epoch, one line per run coloured by ``axis``' value, and ``values`` (run id -> the run's
    figure) as bars per axis value, with the baseline; None when there is neither a curve nor a value."""
    curves = _curves(grid_dir, entries, metric)
    colors: dict[str, str] = {}
    for _, metrics in entries:
        value = _short_value((metrics.get("params") or {}).get(axis))
        colors.setdefault(value, f"C{len(colors) % 10}")
    others = [k for k in varying if k != axis]
    combos: list[str] = []
    lines = []
    for _, params, curve in curves:
        value = _short_value(params.get(axis))
        rest = ", ".join(f"{k}={_short_value(params.get(k))}" for k in others)
        combos += [rest] if rest not in combos else []
        label = f"{axis}={value}" + (f" ({rest})" if rest else "")
        lines.append((label, colors[value], STYLES[combos.index(rest) % len(STYLES)], curve))
    shown = [(name, m) for name, m in entries if (values or {}).get(name) is not None]
    bars = None
    if shown:
        groups = [_short_value((m.get("params") or {}).get(axis)) for _, m in shown]
        bars = {"groups": groups, "values": [values[name] for name, _ in shown], "colors": colors,
                "label": value_label or metric, "horizontal": False}
    if not lines and bars is None:
        return None
    return _figure(lines, metric, f"{metric} by {axis}", bars, baselines(entries, metric))


def runs_figure(folder: Path, entries: list[tuple[str, dict[str, Any]]], metric: str, notebook: str,
                values: dict[str, float] | None = None, value_label: str = "") -> Any:
    """``metric`` per epoch of the runs of one notebook, one line per run, and one bar per run (``values``)
    with the baseline; None when no run has either."""
    colors = {name: f"C{i % 10}" for i, (name, _) in enumerate(entries)}
    curves = _curves(folder, entries, metric)
    lines = [(name, colors[name], STYLES[i // 10 % 4], curve) for i, (name, _, curve) in enumerate(curves)]
    shown = [name for name, _ in entries if (values or {}).get(name) is not None]
    bars = ({"groups": shown, "values": [values[n] for n in shown], "colors": colors,
             "label": value_label or metric, "horizontal": True} if shown else None)
    if not lines and bars is None:
        return None
    return _figure(lines, metric, f"{notebook}: {metric}, one line and one bar per run", bars,
                   baselines(entries, metric))


def published_figure(rows: list[tuple[str, str, float | None, float]],
                     entries: list[tuple[str, dict[str, Any]]]) -> Any:
    """``(run id, metric, reproduced, published)`` rows -> one panel per metric, a pair of bars per run."""
    import pandas as pd
    import seaborn as sns
    from matplotlib.figure import Figure

    metrics = list(dict.fromkeys(metric for _, metric, _, _ in rows))
    runs = list(dict.fromkeys(run for run, *_ in rows))
    fig = Figure(figsize=(8 * len(metrics), max(3.0, 0.45 * len(runs) + 1.5)), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics, strict=True):
        data = pd.DataFrame(
            [(run, "published", pub) for run, m, _, pub in rows if m == metric]
            + [(run, "reproduced", rep) for run, m, rep, _ in rows if m == metric and rep is not None],
            columns=["run", "figure", "value"])
        sns.barplot(data=data, y="run", x="value", hue="figure", hue_order=["reproduced", "published"],
                    palette={"reproduced": "C0", "published": "0.6"}, errorbar=None, ax=ax)
        _draw_baselines(ax, baselines(entries, metric), vertical=True)
        ax.set_xlabel(metric)
        ax.set_ylabel("")
        ax.grid(alpha=0.3, axis="x")
        ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.suptitle("reproduced next to published")
    return fig
