"""Multi-label losses on logits with independent sigmoid outputs (the multi-label report's section 3).

Each of the K outputs is its own binary problem. ``BCEMultiLabel`` ('bce') is binary cross entropy with
logits averaged over the batch *and* the labels (optional per-label ``pos_weight``); ``MSEMultiLabel``
('mse') is the report's "MSE on probabilities": ``mean((sigmoid(z) - y) ** 2)``. Targets are (B, K) 0/1
(bool, integer or float). Both expose fastai-style ``activation`` (logits -> probabilities) and ``decode``
(logits -> 0/1 predictions: a label is predicted when its probability is strictly above the threshold, as
in ``fgvc_lib.multilabel_metrics`` and fastai).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fgvc_lib.losses import register_loss

__all__ = ["BCEMultiLabel", "MSEMultiLabel", "MultiLabelLoss", "REDUCTIONS"]

REDUCTIONS: tuple[str, ...] = ("mean", "sum", "none")


class MultiLabelLoss(nn.Module):
    """Shared pieces: shape checks, sigmoid ``activation``, thresholded ``decode`` and the reduction."""

    def __init__(self, reduction: str = "mean"):
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got reduction={reduction!r}")
        self.reduction = reduction

    @staticmethod
    def _check(logits: Tensor, target: Tensor) -> Tensor:
        """The targets as floats of the logits' dtype after checking both are (B, K)."""
        if logits.ndim != 2:
            raise ValueError(f"expected logits of shape (B, K), got {tuple(logits.shape)}")
        if target.shape != logits.shape:
            raise ValueError(
                f"target shape {tuple(target.shape)} does not match logits {tuple(logits.shape)}"
            )
        return target.to(dtype=logits.dtype)

    def _reduce(self, losses: Tensor) -> Tensor:
        if self.reduction == "mean":
            return losses.mean()
        if self.reduction == "sum":
            return losses.sum()
        return losses

    def activation(self, logits: Tensor) -> Tensor:
        """Per-label probabilities ``sigmoid(logits)``."""
        return torch.sigmoid(logits)

    def decode(self, logits: Tensor, threshold: float | Sequence[float] | Tensor = 0.5) -> Tensor:
        """0/1 predictions (logits' dtype): ``sigmoid(logits) > threshold`` (a scalar or one per label)."""
        thr = torch.as_tensor(threshold, dtype=logits.dtype, device=logits.device)
        if thr.ndim > 1 or (thr.ndim == 1 and thr.shape[0] != logits.shape[-1]):
            raise ValueError(
                f"threshold: expected a scalar or one value per label ({logits.shape[-1]}), "
                f"got shape {tuple(thr.shape)}"
            )
        return (self.activation(logits) > thr).to(logits.dtype)


@register_loss("bce")
class BCEMultiLabel(MultiLabelLoss):
    """Binary cross entropy with logits, mean over batch and labels; ``pos_weight`` (K,) up-weights positives.

    Per element: ``-(w * y * log sigmoid(z) + (1 - y) * log(1 - sigmoid(z)))`` with ``w = pos_weight[k]``
    (1 without it), computed stably by ``F.binary_cross_entropy_with_logits``.
    """

    def __init__(self, pos_weight: Sequence[float] | Tensor | None = None, reduction: str = "mean"):
        super().__init__(reduction)
        weight = None
        if pos_weight is not None:
            weight = torch.as_tensor(pos_weight, dtype=torch.float32).detach().clone()
            if weight.ndim != 1 or weight.numel() == 0:
                raise ValueError(
                    f"pos_weight: expected one value per label (K,), got shape {tuple(weight.shape)}"
                )
            if not bool(torch.isfinite(weight).all() and (weight > 0).all()):
                raise ValueError(f"pos_weight: expected finite values > 0, got {weight.tolist()}")
        self.register_buffer("pos_weight", weight)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        target = self._check(logits, target)
        weight = None
        if self.pos_weight is not None:
            if self.pos_weight.shape[0] != logits.shape[1]:
                raise ValueError(
                    f"pos_weight has {self.pos_weight.shape[0]} values but the logits have {logits.shape[1]} labels"
                )
            weight = self.pos_weight.to(dtype=logits.dtype)
        losses = F.binary_cross_entropy_with_logits(logits, target, pos_weight=weight, reduction="none")
        return self._reduce(losses)

    def extra_repr(self) -> str:
        return (
            f"reduction={self.reduction!r}, pos_weight={'none' if self.pos_weight is None else 'per-label'}"
        )


@register_loss("mse")
class MSEMultiLabel(MultiLabelLoss):
    """Mean squared error between ``sigmoid(logits)`` and the 0/1 targets (the report's MSE variant).

    Its gradient ``2 (p - y) p (1 - p)`` vanishes for confidently wrong outputs, which is why the report found
    it learning more slowly than BCE.
    """

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        target = self._check(logits, target)
        return self._reduce((self.activation(logits) - target) ** 2)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"
