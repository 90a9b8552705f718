"""Multi-label evaluation: micro / macro F1, exact match, the all-negative baseline and threshold search.

Inputs are (N, K) arrays (NumPy or torch): ``probs`` are per-label probabilities (sigmoid outputs),
``targets`` 0/1 indicators. A label is predicted when ``probs > threshold`` (strictly, as the Trainer's
``logits > 0`` and fastai's ``accuracy_multi``); a threshold is a scalar, a vector of K per-label values or
an (N, K) array (one row per image: the held-out scoring below). Everything is computed from true-positive /
false-positive / false-negative counts with array operations (no loop over samples).

Undefined F1 (``2 tp + fp + fn == 0``: nothing to find and nothing predicted) is ``zero_division``,
0 by default, as scikit-learn's ``f1_score(..., zero_division=0)``: in a macro average a label absent from
both truth and predictions then pulls the mean down (pass ``zero_division=1.0`` to count it as perfect).

Threshold search (the report's section 6: a global 0.375 beat 0.5, per-label thresholds did not beat the
global one) maximises micro-F1 over a grid. Searching on the data you report on is optimistic:
:func:`held_out_thresholds` splits the validation images into two halves, searches on one half and scores on
the other, both ways round, so every image is scored with thresholds that never saw it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "DEFAULT_GRID",
    "micro_f1",
    "macro_f1",
    "per_label_f1",
    "exact_match",
    "all_negative_baseline",
    "search_threshold_global",
    "search_thresholds_per_label",
    "multilabel_report",
    "split_halves",
    "held_out_thresholds",
    "held_out_report",
]

DEFAULT_GRID = np.linspace(0.05, 0.95, 19)
"""Thresholds 0.05, 0.10, ..., 0.95."""


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor on any device
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _check(probs: Any, targets: Any) -> tuple[np.ndarray, np.ndarray]:
    """(N, K) float probabilities and bool targets, validated."""
    p, t = _to_numpy(probs), _to_numpy(targets)
    if p.ndim != 2:
        raise ValueError(f"probs: expected shape (N, K), got {p.shape}")
    if t.shape != p.shape:
        raise ValueError(f"targets shape {t.shape} does not match probs {p.shape}")
    if p.shape[0] == 0:
        raise ValueError("multi-label metrics of an empty set are undefined")
    p = p.astype(np.float64, copy=False)
    if not np.isfinite(p).all():
        raise ValueError("probs: expected finite values")
    if not np.isin(t, (0, 1)).all():
        raise ValueError("targets: expected 0/1 indicators")
    return p, t.astype(bool)


def _thresholds(threshold: Any, shape: tuple[int, int]) -> np.ndarray:
    """A scalar, (K,) or (N, K) threshold as an array broadcasting over (N, K)."""
    thr = _to_numpy(threshold).astype(np.float64)
    if thr.ndim > 2 or (thr.ndim == 1 and thr.shape[0] != shape[1]) or (thr.ndim == 2 and thr.shape != shape):
        raise ValueError(
            f"threshold: expected a scalar, one value per label ({shape[1]}) or an array of shape {shape}, "
            f"got shape {thr.shape}"
        )
    return thr


def _predict(probs: Any, targets: Any, threshold: Any) -> tuple[np.ndarray, np.ndarray]:
    p, t = _check(probs, targets)
    return p > _thresholds(threshold, p.shape), t


def _counts(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-label tp, fp, fn (K,) of bool (N, K) predictions against the truth."""
    tp = (pred & truth).sum(axis=0)
    fp = (pred & ~truth).sum(axis=0)
    fn = (~pred & truth).sum(axis=0)
    return tp, fp, fn


def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, zero_division: float) -> np.ndarray:
    """Elementwise ``2 tp / (2 tp + fp + fn)``, ``zero_division`` where the denominator is 0."""
    tp, fp, fn = (np.asarray(a, dtype=np.float64) for a in (tp, fp, fn))
    denom = 2 * tp + fp + fn
    return np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1.0), float(zero_division))


def micro_f1(probs: Any, targets: Any, threshold: Any = 0.5, zero_division: float = 0.0) -> float:
    """F1 of the counts pooled over all labels and images (the report's headline metric)."""
    tp, fp, fn = _counts(*_predict(probs, targets, threshold))
    return float(_f1(tp.sum(), fp.sum(), fn.sum(), zero_division))


def per_label_f1(probs: Any, targets: Any, threshold: Any = 0.5, zero_division: float = 0.0) -> np.ndarray:
    """F1 of each label (K,)."""
    return _f1(*_counts(*_predict(probs, targets, threshold)), zero_division)


def macro_f1(probs: Any, targets: Any, threshold: Any = 0.5, zero_division: float = 0.0) -> float:
    """Unweighted mean over labels of the per-label F1 (rare labels weigh as much as common ones)."""
    return float(per_label_f1(probs, targets, threshold, zero_division).mean())


def exact_match(probs: Any, targets: Any, threshold: Any = 0.5) -> float:
    """Share of images whose whole predicted label set equals the truth (the report's "accuracy")."""
    pred, truth = _predict(probs, targets, threshold)
    return float((pred == truth).all(axis=1).mean())


def all_negative_baseline(targets: Any) -> float:
    """Exact-match accuracy of predicting no label at all: the share of images without any label."""
    t = _to_numpy(targets)
    if t.ndim != 2 or t.shape[0] == 0:
        raise ValueError(f"targets: expected a non-empty (N, K) array, got shape {t.shape}")
    return float((t.sum(axis=1) == 0).mean())


def _grid(grid: Any) -> np.ndarray:
    g = _to_numpy(grid).astype(np.float64).ravel()
    if g.size == 0 or not np.isfinite(g).all():
        raise ValueError("grid: expected a non-empty sequence of finite thresholds")
    return g


def _grid_counts(p: np.ndarray, t: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """tp and fp (G, K) of ``p > grid[g]`` for every grid value at once, in O(N K + G K) memory.

    For a sorted grid, ``p > grid[j]`` holds exactly for ``j < searchsorted(grid, p, 'left')``; counting the
    images of each label per that index and summing from the top gives every threshold's counts.
    """
    order = np.argsort(grid, kind="stable")
    sorted_grid = grid[order]
    g, k = grid.size, p.shape[1]
    level = np.searchsorted(sorted_grid, p, side="left")  # (N, K) in 0..G
    cell = np.arange(k) * (g + 1) + level  # one histogram bin per (label, level)
    pos = np.bincount(cell[t], minlength=k * (g + 1)).reshape(k, g + 1)
    neg = np.bincount(cell[~t], minlength=k * (g + 1)).reshape(k, g + 1)
    # predicted at sorted threshold j <=> level > j: counts of levels j+1..G
    tp_sorted = np.cumsum(pos[:, ::-1], axis=1)[:, ::-1][:, 1:].T  # (G, K)
    fp_sorted = np.cumsum(neg[:, ::-1], axis=1)[:, ::-1][:, 1:].T
    tp, fp = np.empty_like(tp_sorted), np.empty_like(fp_sorted)
    tp[order], fp[order] = tp_sorted, fp_sorted
    return tp, fp


def _best_global(tp: np.ndarray, fp: np.ndarray, npos: np.ndarray) -> tuple[int, float]:
    """Index of the best grid threshold (first on ties) and its micro-F1, from (G, K) counts."""
    tp_all, fp_all = tp.sum(axis=1), fp.sum(axis=1)
    scores = _f1(tp_all, fp_all, npos.sum() - tp_all, 0.0)
    best = int(np.argmax(scores))
    return best, float(scores[best])


def search_threshold_global(probs: Any, targets: Any, grid: Any = DEFAULT_GRID) -> tuple[float, float]:
    """(threshold, micro-F1): the grid value with the best micro-F1 (the first in grid order on ties)."""
    p, t = _check(probs, targets)
    g = _grid(grid)
    best, score = _best_global(*_grid_counts(p, t, g), t.sum(axis=0))
    return float(g[best]), score


def search_thresholds_per_label(
    probs: Any, targets: Any, grid: Any = DEFAULT_GRID, max_sweeps: int = 5
) -> tuple[np.ndarray, float]:
    """(per-label thresholds (K,), micro-F1 with them) by coordinate ascent from the best global threshold.

    Each step re-picks one label's threshold from the grid to maximise the pooled micro-F1 with the other
    labels fixed (all grid values scored at once) and accepts it only if F1 strictly improves, so the result
    is never below the global search; sweeps over the labels stop when none changes or after ``max_sweeps``.
    """
    if max_sweeps < 1:
        raise ValueError(f"max_sweeps: expected >= 1, got {max_sweeps}")
    p, t = _check(probs, targets)
    g = _grid(grid)
    tp_grid, fp_grid = _grid_counts(p, t, g)  # (G, K)
    npos = t.sum(axis=0)
    start, best = _best_global(tp_grid, fp_grid, npos)
    choice = np.full(p.shape[1], start)
    tp_all, fp_all = int(tp_grid[start].sum()), int(fp_grid[start].sum())
    fn_all = int(npos.sum()) - tp_all
    for _ in range(max_sweeps):
        changed = False
        for k in range(p.shape[1]):
            old_tp, old_fp = tp_grid[choice[k], k], fp_grid[choice[k], k]
            tp_k = tp_all - old_tp + tp_grid[:, k]  # pooled counts for every candidate threshold of label k
            fp_k = fp_all - old_fp + fp_grid[:, k]
            fn_k = fn_all + old_tp - tp_grid[:, k]
            scores = _f1(tp_k, fp_k, fn_k, 0.0)
            j = int(np.argmax(scores))
            if scores[j] > best + 1e-12:
                best, choice[k], changed = float(scores[j]), j, True
                tp_all, fp_all, fn_all = int(tp_k[j]), int(fp_k[j]), int(fn_k[j])
        if not changed:
            break
    return g[choice].astype(np.float64), best


def multilabel_report(
    probs: Any, targets: Any, thresholds: Mapping[str, Any] | None = None, grid: Any = DEFAULT_GRID
) -> pd.DataFrame:
    """micro_f1, macro_f1 and exact_match for each named threshold (scalar or per-label vector).

    ``thresholds=None`` evaluates ``{'0.5': 0.5, 'global': <searched>, 'per-label': <searched>}`` with the
    searches run on these same ``probs`` / ``targets`` over ``grid``.
    """
    if thresholds is None:
        thresholds = {
            "0.5": 0.5,
            "global": search_threshold_global(probs, targets, grid)[0],
            "per-label": search_thresholds_per_label(probs, targets, grid)[0],
        }
    rows = {
        name: {
            "micro_f1": micro_f1(probs, targets, thr),
            "macro_f1": macro_f1(probs, targets, thr),
            "exact_match": exact_match(probs, targets, thr),
        }
        for name, thr in thresholds.items()
    }
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=["micro_f1", "macro_f1", "exact_match"])
    frame.index.name = "threshold"
    return frame


def split_halves(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint sorted index arrays covering ``range(n)`` (sizes differ by at most one), from a seeded
    permutation. ``n`` must be at least 2."""
    if n < 2:
        raise ValueError(f"split_halves: need at least 2 images, got {n}")
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[: n // 2]), np.sort(order[n // 2 :])


def _check_halves(halves: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    a, b = (np.asarray(h, dtype=np.int64).ravel() for h in halves)
    if a.size == 0 or b.size == 0:
        raise ValueError("halves: both halves need at least one image")
    both = np.concatenate([a, b])
    if np.unique(both).size != both.size or both.min() < 0 or both.max() >= n or both.size != n:
        raise ValueError(f"halves: expected two disjoint index sets covering all {n} images")
    return a, b


def held_out_thresholds(
    probs: Any,
    targets: Any,
    halves: tuple[Any, Any] | None = None,
    *,
    seed: int = 0,
    grid: Any = DEFAULT_GRID,
) -> dict[str, Any]:
    """Thresholds searched on one half of the images and scored on the other, both ways round.

    ``halves``: two disjoint index arrays covering all N images (e.g. an iterative-stratified 50/50 split);
    default :func:`split_halves` ``(N, seed)``. For each kind (``"global"``, ``"per_label"``) returns:

    - ``thresholds``: (N, K) array, each image's row the thresholds searched on the *other* half;
    - ``micro_f1`` / ``macro_f1`` / ``exact_match``: held-out figures over all N images with those rows (each
      image scored by thresholds that never saw it: an honest estimate of searching on a validation split);
    - ``micro_f1_tuned_half``: the mean over the two halves of the micro-F1 on the half the search ran on (the
      optimistic figure that tuning and scoring on the same images gives);
    - ``directions``: per direction ``{"tuned_on": "a"|"b", "threshold": scalar or (K,), "tuned": F1 on the
      tuning half, "held_out": F1 on the other half}``.
    """
    p, t = _check(probs, targets)
    n, k = p.shape
    a, b = _check_halves(halves, n) if halves is not None else split_halves(n, seed)
    out: dict[str, Any] = {"halves": (a, b)}
    searches = {
        "global": lambda pp, tt: search_threshold_global(pp, tt, grid),
        "per_label": lambda pp, tt: search_thresholds_per_label(pp, tt, grid),
    }
    for kind, search in searches.items():
        rows = np.empty((n, k), dtype=np.float64)
        directions = []
        for name, tune, score in (("a", a, b), ("b", b, a)):
            thr, tuned = search(p[tune], t[tune])
            rows[score] = thr
            directions.append(
                {"tuned_on": name, "threshold": thr, "tuned": float(tuned),
                 "held_out": micro_f1(p[score], t[score], thr)}
            )
        out[kind] = {
            "thresholds": rows,
            "micro_f1": micro_f1(p, t, rows),
            "macro_f1": macro_f1(p, t, rows),
            "exact_match": exact_match(p, t, rows),
            "micro_f1_tuned_half": float(np.mean([d["tuned"] for d in directions])),
            "directions": directions,
        }
    return out


def held_out_report(probs: Any, targets: Any, held_out: Mapping[str, Any]) -> pd.DataFrame:
    """The threshold table of :func:`held_out_thresholds`: rows ``0.5``, ``global``, ``per label``; columns
    micro_f1, macro_f1, exact_match (held out, all images) and micro_f1_tuned_half (the same search scored on
    the half it was tuned on; for 0.5 nothing is tuned, so it equals micro_f1)."""
    rows = {
        "0.5": {
            "micro_f1": micro_f1(probs, targets, 0.5),
            "macro_f1": macro_f1(probs, targets, 0.5),
            "exact_match": exact_match(probs, targets, 0.5),
            "micro_f1_tuned_half": micro_f1(probs, targets, 0.5),
        }
    }
    for kind, name in (("global", "global"), ("per_label", "per label")):
        r = held_out[kind]
        rows[name] = {key: r[key] for key in ("micro_f1", "macro_f1", "exact_match", "micro_f1_tuned_half")}
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "threshold"
    return frame
