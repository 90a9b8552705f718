"""Classification metrics: top-k accuracy and on-device accumulators (host sync only in ``compute()``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["topk_correct", "topk_accuracy", "accuracy", "RunningAverage", "MetricAccumulator"]


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


class RunningAverage:
    """Weighted mean of scalars; tensors are summed on their device; host sync only in compute()."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        self._sum: Tensor | float = 0.0
        self.count = 0

    def update(self, value: Tensor | float, n: int = 1) -> None:
        """Add ``value`` (e.g. a batch-mean loss) with weight ``n`` (e.g. the batch size)."""
        if isinstance(value, Tensor):
            value = value.detach()
        self._sum = self._sum + value * n
        self.count += n

    def compute(self) -> float:
        """The weighted mean (one host sync)."""
        if self.count == 0:
            raise ValueError("RunningAverage.compute() called before any update()")
        return float(self._sum) / self.count


class MetricAccumulator:
    """Sums loss * batch and top-k correct counts on the device over an epoch; ``compute()`` syncs once."""

    def __init__(self, ks: Sequence[int] = (1, 5)) -> None:
        self.ks = tuple(ks)
        self.reset()

    def reset(self) -> None:
        """Start a new epoch."""
        self._loss_sum: Tensor | float = 0.0
        self._loss_count = 0
        self._correct: Tensor | None = None
        self.count = 0

    def update(self, logits: Tensor, targets: Tensor, loss: Tensor | float | None = None) -> None:
        """Add one batch; ``loss`` is the batch-mean loss (weighted by the batch size)."""
        batch = len(targets)
        correct = topk_correct(logits, targets, self.ks)
        self._correct = correct if self._correct is None else self._correct + correct
        self.count += batch
        if loss is not None:
            if isinstance(loss, Tensor):
                loss = loss.detach()
            self._loss_sum = self._loss_sum + loss * batch
            self._loss_count += batch

    def compute(self) -> dict[str, float]:
        """``{'loss': mean loss (if any was given), 'top{k}': accuracy in [0, 1], ..., 'count': samples}``."""
        if self.count == 0:
            raise ValueError("MetricAccumulator.compute() called before any update()")
        out: dict[str, float] = {}
        if self._loss_count:
            out["loss"] = float(self._loss_sum) / self._loss_count
        assert self._correct is not None
        for k, c in zip(self.ks, self._correct.tolist(), strict=True):
            out[f"top{k}"] = c / self.count
        out["count"] = float(self.count)
        return out
