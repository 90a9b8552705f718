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


def learning_curves(history: Sequence[Mapping[str, float]], title: str = "") -> Figure:
    """Loss and accuracy per epoch, train vs validation."""
    fig = Figure(figsize=(10, 3.6))
    epochs = _column(history, "epoch")
    for ax, metric, label in zip(
        fig.subplots(1, 2), ("loss", "acc"), ("loss", "top-1 accuracy"), strict=False
    ):
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
