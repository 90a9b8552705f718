"""The Trainer's metrics as objects, accumulated on the device (one host sync per epoch, all-reduced under DDP).

``SingleLabelScores``: top-1 (training) / top-1 and top-5 (evaluation) accuracy; when a step scores its logits
against several weighted label sets (BBN: ``alpha`` x the uniform sampler's labels + ``1 - alpha`` x the
reversed sampler's, as the official combiner) the accuracy is the weighted sum, and ``parts`` holds each
label set's own accuracy. ``MultiLabelScores``: exact match ('top1') and micro-F1 at threshold 0.5.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .metrics import topk_correct

Targets = list[tuple[float, torch.Tensor]]


class Scores:
    """Interface: ``reset(device)``, ``update(logits, targets)``, ``sums()`` (1-D tensor), ``result(sums, n)``,
    ``eval_loss``, and the history columns (``row``). ``selection``: the column suffix that picks best.pt."""

    selection = "acc"

    def __init__(self, *, evaluation: bool = False):
        self.evaluation = evaluation
        self._sums: torch.Tensor | None = None
        self.device = torch.device("cpu")

    def reset(self, device: torch.device) -> None:
        self.device, self._sums = device, None

    def sums(self) -> torch.Tensor:
        return self._sums if self._sums is not None else torch.zeros(0, device=self.device, dtype=torch.float64)

    def _add(self, values: torch.Tensor) -> None:
        values = values.to(torch.float64)
        self._sums = values if self._sums is None else self._sums + values

    def update(self, logits: torch.Tensor, targets: Targets) -> None:
        raise NotImplementedError

    def result(self, sums: torch.Tensor, n: int) -> dict[str, float]:
        raise NotImplementedError

    def eval_loss(self, logits: torch.Tensor, targets: torch.Tensor, loss_fn: Callable) -> float:
        raise NotImplementedError

    def row(self, prefix: str, result: dict[str, float]) -> dict[str, float]:
        raise NotImplementedError


class SingleLabelScores(Scores):
    selection = "acc"

    def update(self, logits: torch.Tensor, targets: Targets) -> None:
        ks = (1, 5) if self.evaluation else (1, 1)
        weighted = torch.zeros(2, device=logits.device, dtype=torch.float64)
        parts = []
        for weight, labels in targets:
            counts = topk_correct(logits, labels, ks)  # on the device: no host sync
            weighted += weight * counts.to(torch.float64)
            parts.append(counts[0])
        self._add(torch.cat([weighted, torch.stack(parts).to(torch.float64)]))

    def result(self, sums: torch.Tensor, n: int) -> dict[str, float]:
        values = [float(v) / n for v in sums.tolist()]
        out = {"top1": values[0]}
        if self.evaluation:
            out["top5"] = values[1]
        if len(values) > 3:  # several label sets: each one's own accuracy
            out["parts"] = values[2:]
        return out

    def eval_loss(self, logits: torch.Tensor, targets: torch.Tensor, loss_fn: Callable) -> float:
        return float(F.cross_entropy(logits, targets))

    def row(self, prefix: str, result: dict[str, float]) -> dict[str, float]:
        row = {f"{prefix}_acc": result["top1"]}
        if "top5" in result:
            row[f"{prefix}_top5"] = result["top5"]
        return row


class MultiLabelScores(Scores):
    selection = "f1"

    def update(self, logits: torch.Tensor, targets: Targets) -> None:
        ((_, labels),) = targets
        pred, truth = logits > 0, labels > 0.5
        self._add(torch.stack([(pred == truth).all(1).sum(), (pred & truth).sum(), (pred & ~truth).sum(),
                               (~pred & truth).sum()]))

    def result(self, sums: torch.Tensor, n: int) -> dict[str, float]:
        exact, tp, fp, fn = (float(v) for v in sums.tolist())
        return {"top1": exact / n, "f1": 2 * tp / max(2 * tp + fp + fn, 1.0)}

    def eval_loss(self, logits: torch.Tensor, targets: torch.Tensor, loss_fn: Callable) -> float:
        with torch.no_grad():
            return float(loss_fn(logits, targets.float()))

    def row(self, prefix: str, result: dict[str, float]) -> dict[str, float]:
        return {f"{prefix}_acc": result["top1"], f"{prefix}_f1": result["f1"]}


SCORES = {"single": SingleLabelScores, "multilabel": MultiLabelScores}
