"""Classification metrics: top-k accuracy and long-tailed evaluation (per-class accuracy, head / medium / tail groups)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "topk_correct",
    "topk_accuracy",
    "accuracy",
    "per_class_accuracy",
    "shot_groups",
    "group_accuracy",
]


def _hard_targets(targets: Tensor) -> Tensor:
    """Class indices from index targets (B,) or one-hot / soft targets (B, C) via argmax."""
    return targets.argmax(dim=1) if targets.ndim == 2 else targets


def topk_correct(logits: Tensor, targets: Tensor, ks: Sequence[int] = (1, 5)) -> Tensor:
    """Number of samples whose target is among the top-k logits, for each k (a tensor on the logits' device).

    A k larger than the number of classes is clamped to it.
    """
    if logits.ndim != 2:
        raise ValueError(f"expected logits of shape (B, C), got {tuple(logits.shape)}")
    targets = _hard_targets(targets)
    if targets.shape != logits.shape[:1]:
        raise ValueError(f"targets shape {tuple(targets.shape)} does not match logits {tuple(logits.shape)}")
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be positive integers, got {tuple(ks)}")
    num_classes = logits.shape[1]
    maxk = min(max(ks), num_classes)
    pred = logits.detach().topk(maxk, dim=1).indices  # (B, maxk), best first
    hits = pred.eq(targets.to(pred.device).unsqueeze(1)).cumsum(dim=1).clamp_(max=1)  # hit within first j+1
    per_k = [hits[:, min(k, num_classes) - 1].sum() for k in ks]
    return torch.stack(per_k)


def topk_accuracy(logits: Tensor, targets: Tensor, ks: Sequence[int] = (1, 5)) -> dict[int, float]:
    """Fraction (0..1) of samples whose target is in the top-k logits, as ``{k: acc}``; k is clamped to C."""
    if len(targets) == 0:
        raise ValueError("topk_accuracy of an empty batch is undefined")
    counts = topk_correct(logits, targets, ks).tolist()
    return {k: c / len(targets) for k, c in zip(ks, counts, strict=True)}


def accuracy(logits: Tensor, targets: Tensor) -> float:
    """Top-1 accuracy as a fraction in [0, 1]."""
    return topk_accuracy(logits, targets, ks=(1,))[1]


ArrayLike = Tensor | np.ndarray | Sequence[int]


def _to_numpy(values: ArrayLike) -> np.ndarray:
    if isinstance(values, Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def per_class_accuracy(logits_or_preds: ArrayLike, targets: ArrayLike, num_classes: int) -> np.ndarray:
    """Top-1 accuracy of each class, (num_classes,) float64; NaN for classes without samples.

    ``logits_or_preds``: (N, C) scores (argmax is taken) or (N,) predicted indices; ``targets``: (N,) indices or
    (N, C) one-hot.
    """
    scores = _to_numpy(logits_or_preds)
    preds = scores.argmax(axis=1) if scores.ndim == 2 else scores
    y = _to_numpy(targets)
    if y.ndim == 2:  # one-hot / soft targets, as topk_correct accepts
        y = y.argmax(axis=1)
    if preds.ndim != 1 or y.ndim != 1 or len(preds) != len(y):
        raise ValueError(f"predictions {scores.shape} and targets {y.shape} do not match")
    y = y.astype(np.int64)
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"targets must be in [0, {num_classes}), got {y.min()}..{y.max()}")
    total = np.bincount(y, minlength=num_classes).astype(np.float64)
    correct = np.bincount(y, weights=(preds == y).astype(np.float64), minlength=num_classes)
    out = np.full(num_classes, np.nan)
    np.divide(correct, total, out=out, where=total > 0)
    return out


def shot_groups(train_counts: ArrayLike, many: int = 100, few: int = 20) -> dict[str, np.ndarray]:
    """Class indices by training images n: 'head' n > many, 'medium' few <= n <= many, 'tail' n < few.

    Defaults are the iNaturalist / OLTR convention (> 100, 20-100, < 20).
    """
    if few > many:
        raise ValueError(f"few ({few}) must be <= many ({many})")
    n = _to_numpy(train_counts)
    if n.ndim != 1:
        raise ValueError(f"train_counts must be 1-D, got shape {n.shape}")
    return {
        "head": np.flatnonzero(n > many),
        "medium": np.flatnonzero((n >= few) & (n <= many)),
        "tail": np.flatnonzero(n < few),
    }


def group_accuracy(per_class_acc: ArrayLike, groups: dict[str, np.ndarray]) -> dict[str, float]:
    """Mean per-class accuracy of each group as ``{'<group>_acc': value}`` ('head_acc', 'medium_acc', ...).

    Classes whose accuracy is NaN (no evaluation samples) are left out; an empty group gives NaN.
    """
    acc = _to_numpy(per_class_acc).astype(np.float64)
    out: dict[str, float] = {}
    for name, members in groups.items():
        values = acc[np.asarray(members, dtype=np.int64)]
        values = values[~np.isnan(values)]
        out[f"{name}_acc"] = float(values.mean()) if values.size else float("nan")
    return out
