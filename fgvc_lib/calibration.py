"""Calibration: expected calibration error (ECE) and reliability diagrams.

Binning follows the official ``ECELoss`` of torrvision/focal_calibration: edges ``linspace(0, 1, n_bins + 1)``,
a sample with confidence c (max softmax) falls in the bin with ``lower < c <= upper``, and
ECE = sum over non-empty bins of |mean confidence - accuracy| * n_bin / N. Computed in float64 on the CPU.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

__all__ = ["expected_calibration_error", "reliability_bins", "reliability_diagram"]


def _as_tensor(x: Any) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    return torch.as_tensor(np.asarray(x))


def _confidence_and_correct(
    logits_or_probs: Any, targets: Any, from_logits: bool
) -> tuple[np.ndarray, np.ndarray]:
    scores = _as_tensor(logits_or_probs).to(torch.float64)
    labels = _as_tensor(targets).long()
    if scores.ndim != 2:
        raise ValueError(f"expected logits_or_probs of shape (N, K), got {tuple(scores.shape)}")
    if labels.shape != scores.shape[:1]:
        raise ValueError(f"targets shape {tuple(labels.shape)} does not match scores {tuple(scores.shape)}")
    probs = torch.softmax(scores, dim=1) if from_logits else scores
    conf, pred = probs.max(dim=1)
    return conf.numpy(), (pred == labels).numpy().astype(np.float64)


def reliability_bins(
    logits_or_probs: Any, targets: Any, n_bins: int = 15, from_logits: bool = True
) -> dict[str, np.ndarray]:
    """Per-bin statistics: ``edges`` (n_bins + 1), ``confidence`` and ``accuracy`` (mean per bin, 0 for an
    empty bin) and ``counts`` (n_bins, int). Bins are (lower, upper]; a confidence of exactly 0 (impossible for
    a softmax) is put in the first bin."""
    if int(n_bins) < 1:
        raise ValueError(f"n_bins must be >= 1, got n_bins={n_bins!r}")
    n_bins = int(n_bins)
    conf, correct = _confidence_and_correct(logits_or_probs, targets, from_logits)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # searchsorted(side="left") - 1 gives i with edges[i] < c <= edges[i + 1]
    index = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    counts = np.bincount(index, minlength=n_bins)
    safe = np.maximum(counts, 1)
    return {
        "edges": edges,
        "confidence": np.bincount(index, weights=conf, minlength=n_bins) / safe,
        "accuracy": np.bincount(index, weights=correct, minlength=n_bins) / safe,
        "counts": counts,
    }


def _ece_from_bins(bins: dict[str, np.ndarray]) -> float:
    total = int(bins["counts"].sum())
    if total == 0:
        return 0.0
    gaps = np.abs(bins["confidence"] - bins["accuracy"]) * bins["counts"] / total
    return float(gaps.sum())  # empty bins contribute 0


def expected_calibration_error(
    logits_or_probs: Any, targets: Any, n_bins: int = 15, from_logits: bool = True
) -> float:
    """ECE with ``n_bins`` equal-width (lower, upper] bins on the max-softmax confidence (official ECELoss).

    ``from_logits=False`` takes probabilities (rows summing to 1) as they are. An empty input gives 0.
    """
    return _ece_from_bins(reliability_bins(logits_or_probs, targets, n_bins, from_logits))


def reliability_diagram(
    logits: Any, targets: Any, n_bins: int = 15, title: str = "", from_logits: bool = True
) -> Figure:
    """Accuracy per confidence bin (one bar per bin), the diagonal of perfect calibration and the gap to the
    mean confidence (hatched, non-empty bins only); each non-empty bin is labelled with its number of samples
    (``n=...`` above the bar: a bin of 3 images says little), the ECE and the sample count are in the title.
    Built without pyplot."""
    bins = reliability_bins(logits, targets, n_bins, from_logits)
    ece = _ece_from_bins(bins)
    edges, counts = bins["edges"], bins["counts"]
    width = np.diff(edges)
    centers = edges[:-1] + width / 2
    filled = counts > 0

    fig = Figure(figsize=(4.2, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    ax.bar(
        centers, bins["accuracy"], width=width, color="tab:blue", edgecolor="black", lw=0.6, label="accuracy"
    )
    ax.bar(
        centers[filled],
        (bins["confidence"] - bins["accuracy"])[filled],
        bottom=bins["accuracy"][filled],
        width=width[filled],
        color="tab:red",
        alpha=0.3,
        hatch="//",
        edgecolor="tab:red",
        lw=0.6,
        label="gap",
    )
    ax.plot([0, 1], [0, 1], "--", color="gray", lw=1, label="perfect calibration")
    for center, count in zip(centers[filled], counts[filled], strict=True):
        ax.text(
            center,
            0.01,
            f"n={int(count)}",
            ha="center",
            va="bottom",
            rotation=90,
            fontsize=6,
            bbox={"boxstyle": "square,pad=0.1", "facecolor": "white", "alpha": 0.7, "lw": 0},
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.legend(loc="upper left", fontsize=8)
    ece_text = f"ECE = {ece:.4f}, {int(counts.sum())} samples"
    ax.set_title(f"{title} ({ece_text})" if title else ece_text)
    fig.tight_layout()
    return fig
