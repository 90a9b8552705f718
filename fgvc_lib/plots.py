"""Figures every notebook shows: learning curves, schedules, image and CAM grids.

Each function returns a ``matplotlib.figure.Figure`` built without pyplot (no global state, nothing leaks in
long grids); ``save_figure`` writes it as PNG. In Jupyter a returned figure displays itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


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
) -> Figure:
    """Per-epoch curves, train vs validation: one panel per ``(history suffix, axis label)`` in ``metrics``
    (multi-label runs add ``("f1", "micro-F1")`` and label ``acc`` as exact match)."""
    fig = Figure(figsize=(5 * len(metrics), 3.6))
    epochs = _column(history, "epoch")
    axes = np.atleast_1d(fig.subplots(1, len(metrics)))
    for ax, (metric, label) in zip(axes, metrics, strict=True):
        for split, style in (("train", "-o"), ("val", "-s")):
            values = _column(history, f"{split}_{metric}")
            if not np.all(np.isnan(values)):
                ax.plot(epochs, values, style, ms=3, label=split)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def schedule_plot(
    values: Sequence[float] | Callable[[int], float],
    epochs: int | None = None,
    *,
    ylabel: str,
    title: str = "",
    observed: Sequence[float] | None = None,
    log: bool = False,
    first_epoch: int = 1,
) -> Figure:
    """A per-epoch schedule (LR, OHEM ratio, BBN alpha): a list of values or a function of the epoch index.

    ``observed`` (e.g. from the history) is drawn on top as markers.
    """
    if callable(values):
        if epochs is None:
            raise ValueError("epochs: needed when values is a function")
        values = [values(i) for i in range(epochs)]
    x = np.arange(first_epoch, first_epoch + len(values))
    fig = Figure(figsize=(5.5, 3.2))
    ax = fig.subplots()
    ax.step(x, values, where="post", label="schedule")
    if observed is not None:
        ax.plot(np.arange(first_epoch, first_epoch + len(observed)), observed, "o", ms=3, label="used")
        ax.legend()
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
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
    """A grid of RGB images (H, W, 3 float in [0, 1] or uint8) with optional titles, colours and points."""
    n = len(images)
    cols = max(1, min(cols, n))
    rows = max(1, math.ceil(n / cols))
    fig = Figure(figsize=(2.2 * cols, 2.75 * rows))
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
