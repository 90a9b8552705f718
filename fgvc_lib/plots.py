"""Figures every notebook shows: learning curves, schedules, image and CAM grids.

Each function returns a ``matplotlib.figure.Figure`` built without pyplot (no global state, nothing leaks in
long grids); ``save_figure`` writes it as PNG. In Jupyter a returned figure displays itself.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullLocator


def save_figure(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    tmp.replace(path)
    return path


def _column(history: Sequence[Mapping[str, float]], key: str) -> np.ndarray:
    return np.array([row.get(key, np.nan) for row in history], dtype=float)


def learning_curves(
    history: Sequence[Mapping[str, float]],
    title: str = "",
    metrics: Sequence[tuple[str, str]] = (("loss", "loss"), ("acc", "top-1 accuracy")),
    val_label: str = "val",
) -> Figure:
    """Per-epoch curves, train vs validation: one panel per ``(history suffix, axis label)`` in ``metrics``
    (multi-label runs add ``("f1", "micro-F1")`` and label ``acc`` as exact match). ``val_label`` names the
    split the history's ``val_*`` columns hold in the legend (cifar100: ``"test"``)."""
    fig = Figure(figsize=(5 * len(metrics), 3.6))
    epochs = _column(history, "epoch")
    axes = np.atleast_1d(fig.subplots(1, len(metrics)))
    for ax, (metric, label) in zip(axes, metrics, strict=True):
        for split, style, label in (("train", "-o", "train"), ("val", "-s", val_label)):
            values = _column(history, f"{split}_{metric}")
            if not np.all(np.isnan(values)):
                ax.plot(epochs, values, style, ms=3, label=label)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _log_ticks(values: np.ndarray, max_ticks: int = 6) -> list[float]:
    """At most ``max_ticks`` major ticks for a log axis over ``values``: the powers of ten inside the range
    when there are at least two, else geometrically spaced values rounded to two significant digits."""
    finite = values[np.isfinite(values) & (values > 0)]
    if finite.size == 0:
        return []
    lo, hi = float(finite.min()), float(finite.max())
    decades = [10.0**e for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)]
    inside = [d for d in decades if lo * (1 - 1e-9) <= d <= hi * (1 + 1e-9)]
    if len(inside) >= 2:
        step = max(1, math.ceil(len(inside) / max_ticks))
        return inside[::step]
    if hi <= lo * (1 + 1e-9):
        return [float(f"{lo:.2g}")]
    ticks = np.geomspace(lo, hi, num=min(max_ticks, 4))
    return sorted({float(f"{t:.2g}") for t in ticks})


def _tick_label(value: float, _pos: Any = None) -> str:
    return f"{value:.2g}" if 1e-3 <= abs(value) < 1e3 else f"{value:.1e}".replace("e-0", "e-").replace("e+0", "e")


def lr_reductions(values: Sequence[float], rel_tol: float = 1e-6) -> list[int]:
    """0-based indices i where ``values[i] < values[i - 1]`` (a step down, e.g. ReduceLROnPlateau firing
    between epochs i and i + 1 in 1-based epochs)."""
    v = np.asarray(values, dtype=float)
    return [i for i in range(1, len(v)) if v[i] < v[i - 1] * (1 - rel_tol)]


def schedule_plot(
    values: Sequence[float] | Callable[[int], float],
    epochs: int | None = None,
    *,
    ylabel: str,
    title: str = "",
    observed: Sequence[float] | None = None,
    log: bool = False,
    first_epoch: int = 1,
    reductions: bool | None = None,
) -> Figure:
    """A per-epoch schedule (LR, OHEM ratio, BBN alpha): a list of values or a function of the epoch index.

    ``observed`` (e.g. from the history) is drawn on top as markers. A log axis gets at most six labelled ticks
    (no overlapping minor labels). ``reductions`` marks each step down of the values (dotted line, "x factor")
    and says in the title when it happened or that it never did; ``None``: on when the title names a plateau
    schedule (``LR (plateau)``, the LR actually used, ReduceLROnPlateau).
    """
    if callable(values):
        if epochs is None:
            raise ValueError("epochs: needed when values is a function")
        values = [values(i) for i in range(epochs)]
    values = [float(v) for v in values]
    x = np.arange(first_epoch, first_epoch + len(values))
    fig = Figure(figsize=(5.5, 3.2))
    ax = fig.subplots()
    ax.step(x, values, where="post", label="schedule")
    if observed is not None:
        ax.plot(np.arange(first_epoch, first_epoch + len(observed)), observed, "o", ms=3, label="used")
        ax.legend()
    if log:
        ax.set_yscale("log")
        shown = np.asarray(list(values) + list(observed or []), dtype=float)
        ticks = _log_ticks(shown)
        if ticks:
            ax.yaxis.set_major_locator(FixedLocator(ticks))
            ax.yaxis.set_major_formatter(FuncFormatter(_tick_label))
            ax.yaxis.set_minor_locator(NullLocator())
            lo, hi = min(ticks + [min(v for v in shown if v > 0)]), max(ticks + [max(shown)])
            ax.set_ylim(lo / 1.3, hi * 1.3)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if reductions is None:
        reductions = "plateau" in title.lower()
    if reductions:
        steps = lr_reductions(values)
        for i in steps:
            ax.axvline(x[i], ls=":", color="tab:red", lw=1)
            ax.annotate(
                f"x{values[i] / values[i - 1]:.2g}",
                (x[i], values[i]),
                xytext=(3, 3),
                textcoords="offset points",
                fontsize=7,
                color="tab:red",
            )
        after = ", ".join(str(int(x[i]) - 1) for i in steps)
        note = f"reduced after epoch {after}" if steps else f"never reduced in {len(values)} epochs"
        title = f"{title}\n{note}" if title else note
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def image_grid(
    images: Sequence[np.ndarray],
    titles: Sequence[str] | None = None,
    *,
    cols: int = 6,
    title: str = "",
    colors: Sequence[str] | None = None,
    points: Sequence[tuple[float, float] | None] | None = None,
) -> Figure:
    """A grid of RGB images (H, W, 3 float in [0, 1] or uint8) with optional titles, colours and points.

    Long titles are wrapped (:func:`wrap_title`) at spaces and underscores, never cut; rows grow with the
    number of title lines."""
    n = len(images)
    cols = max(1, min(cols, n))
    rows = max(1, math.ceil(n / cols))
    if titles is not None:
        titles = [wrap_title(t) for t in titles]
    lines = max((t.count("\n") + 1 for t in titles), default=1) if titles is not None else 0
    fig = Figure(figsize=(2.2 * cols, (2.45 + 0.15 * lines) * rows))
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for i, ax in enumerate(axes):
        ax.axis("off")
        if i >= n:
            continue
        ax.imshow(images[i])
        if titles is not None:
            ax.set_title(titles[i], fontsize=7, color=(colors[i] if colors else "black"))
        if points is not None and points[i] is not None:
            ax.plot(*points[i], marker="+", color="white", ms=10, mew=2)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def wrap_title(text: str, width: int = 32) -> str:
    """``text`` with each line wrapped to about ``width`` characters, breaking after spaces, underscores or
    hyphens (class names such as ``Crimson_Triangle_Dotted``); a single word longer than ``width`` stays whole."""
    out = []
    for line in str(text).split("\n"):
        pieces = re.findall(r"[^ _-]*[ _-]|[^ _-]+$", line) or [line]
        current = ""
        for piece in pieces:
            if current and len(current) + len(piece.rstrip(" ")) > width:
                out.append(current.rstrip(" "))
                current = piece
            else:
                current += piece
        out.append(current.rstrip(" "))
    return "\n".join(out)


def class_histogram(counts: Sequence[int] | np.ndarray, *, title: str = "", log: bool = True) -> Figure:
    """Images per class sorted in descending order, one bar per class (log-scale y by default).

    The long-tail profile of a data set (as the iNaturalist train distribution figure); the head/tail
    ratio is given in the axis title. ``counts`` is a 1-D sequence of non-negative numbers.
    """
    values = np.asarray(counts, dtype=float)
    if values.ndim != 1 or values.size == 0 or not np.all(np.isfinite(values)) or np.any(values < 0):
        raise ValueError(f"counts: expected a non-empty 1-D sequence of non-negative numbers, got {counts!r}")
    ordered = np.sort(values)[::-1]
    fig = Figure(figsize=(6.5, 3.4))
    ax = fig.subplots()
    ax.bar(np.arange(len(ordered)), ordered, width=1.0, align="edge", linewidth=0)
    if log:
        ax.set_yscale("log")
    ax.set_xlim(0, len(ordered))
    ax.set_xlabel("class (sorted by number of images)")
    ax.set_ylabel("images per class")
    ax.grid(alpha=0.3, axis="y")
    ratio = f"{ordered[0] / ordered[-1]:.3g}" if ordered[-1] > 0 else "inf"
    summary = f"{len(ordered)} classes, {int(values.sum())} images, max/min = {ratio}"
    ax.set_title(f"{title}\n{summary}" if title else summary, fontsize=9)
    fig.tight_layout()
    return fig


def per_class_accuracy(
    per_class: Sequence[float],
    train_counts: Sequence[int],
    *,
    many: float | None = None,
    few: float | None = None,
    title: str = "",
) -> Figure:
    """Per-class accuracy against the number of training images (log x), with head/tail thresholds."""
    acc = np.asarray(per_class, dtype=float)
    counts = np.asarray(train_counts, dtype=float)
    if acc.shape != counts.shape:
        raise ValueError(f"per_class and train_counts differ in length: {acc.shape} vs {counts.shape}")
    fig = Figure(figsize=(6.5, 3.6))
    ax = fig.subplots()
    ok = ~np.isnan(acc)
    ax.scatter(np.maximum(counts[ok], 1), acc[ok], s=14, alpha=0.8)
    for value, label in ((many, "head >"), (few, "tail <")):
        if value:
            ax.axvline(value, ls="--", color="grey", lw=1)
            ax.text(
                value, 1.02, f"{label} {value:g}", fontsize=7, ha="center", transform=ax.get_xaxis_transform()
            )
    ax.set_xscale("log")
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("training images of the class")
    ax.set_ylabel("validation accuracy")
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title, pad=14)
    fig.tight_layout()
    return fig
