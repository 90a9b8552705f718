"""Multi-class focal loss and its sample-dependent variant FLSD (Mukhoti et al., 2020, "Calibrating deep
neural networks using focal loss").

FL(z, y) = -(1 - p_t)^gamma * log p_t with p_t = softmax(z)[y], computed from ``log_softmax`` (gamma = 0 is
exactly cross entropy). The official code (torrvision/focal_calibration) *sums* the loss over the batch; we
*average* by default (``reduction='mean'``), so the effective step size differs from the paper's runs by a
factor B. ``reduction='sum'`` reproduces the official scale, ``'none'`` returns per-sample losses.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fgvc_lib.losses import register_loss

__all__ = ["FocalLoss", "AdaptiveFocalLoss", "focal_loss", "FLSD_THRESHOLDS", "REDUCTIONS"]

REDUCTIONS: tuple[str, ...] = ("mean", "sum", "none")
FLSD_THRESHOLDS: dict[float, float] = {0.2: 5.0, 0.5: 3.0}
"""Official FLSD table: p_t < 0.2 -> gamma 5, 0.2 <= p_t < 0.5 -> gamma 3 (p_t >= 0.5 -> ``gamma``)."""


def _check_gamma(gamma: float, name: str = "gamma") -> float:
    gamma = float(gamma)
    if not (math.isfinite(gamma) and gamma >= 0.0):
        raise ValueError(f"{name} must be a finite number >= 0, got {name}={gamma!r}")
    return gamma


def _check_reduction(reduction: str) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got reduction={reduction!r}")
    return reduction


def _reduce(losses: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return losses.mean()
    if reduction == "sum":
        return losses.sum()
    return losses


def _log_probs(logits: Tensor, target: Tensor) -> Tensor:
    """Numerically stable log-softmax (B, K) after checking the shapes."""
    if logits.ndim != 2:
        raise ValueError(f"expected logits of shape (B, K), got {tuple(logits.shape)}")
    if target.shape != logits.shape[:1]:
        raise ValueError(f"target shape {tuple(target.shape)} does not match logits {tuple(logits.shape)}")
    return F.log_softmax(logits, dim=1)


def _target_log_prob(logits: Tensor, target: Tensor) -> Tensor:
    """log p_t per sample, (B,)."""
    return _log_probs(logits, target).gather(1, target.long().unsqueeze(1)).squeeze(1)


def focal_loss(logits: Tensor, target: Tensor, gamma: float | Tensor, reduction: str = "mean") -> Tensor:
    """-(1 - p_t)^gamma * log p_t; ``gamma`` a float or a per-sample (B,) tensor (no gradient through it).

    1 - p_t is computed as -expm1(log p_t) (accurate when p_t is close to 1) and clamped to the smallest
    positive float, so a gamma below 1 cannot turn p_t == 1 into a NaN gradient. A float gamma of 0 skips the
    modulating factor: the result is exactly cross entropy.
    """
    _check_reduction(reduction)
    if not isinstance(gamma, Tensor) and float(gamma) == 0.0:  # the same ops as F.cross_entropy
        return F.nll_loss(_log_probs(logits, target), target.long(), reduction=reduction)
    log_pt = _target_log_prob(logits, target)
    one_minus_pt = (-torch.expm1(log_pt)).clamp_min(torch.finfo(log_pt.dtype).tiny)
    if isinstance(gamma, Tensor):
        gamma = gamma.detach().to(dtype=log_pt.dtype, device=log_pt.device)
    return _reduce(-one_minus_pt.pow(gamma) * log_pt, reduction)


@register_loss("focal")
class FocalLoss(nn.Module):
    """Multi-class focal loss -(1 - p_t)^gamma log p_t (no alpha); gamma = 0 equals cross entropy exactly.

    The official code sums over the batch; we average (``reduction='mean'``, default); ``'sum'`` and
    ``'none'`` are supported.
    """

    def __init__(self, gamma: float = 2.0, reduction: str = "mean") -> None:
        super().__init__()
        self.gamma = _check_gamma(gamma)
        self.reduction = _check_reduction(reduction)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Focal loss of (B, K) logits against (B,) class indices."""
        return focal_loss(logits, target, self.gamma, self.reduction)

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, reduction={self.reduction!r}"


class AdaptiveFocalLoss(nn.Module):
    """FLSD: focal loss whose gamma is picked per sample from the current p_t (no gradient through gamma).

    ``thresholds`` maps an upper p_t bound to a gamma: with the official table {0.2: 5, 0.5: 3} a sample
    gets 5 if p_t < 0.2, 3 if 0.2 <= p_t < 0.5, and ``gamma`` if p_t >= 0.5 (the largest bound). FLSD-53 is
    ``gamma=3`` (always 5 or 3), FLSD-52 ``gamma=2``. The official code sums over the batch; we average
    (``reduction='mean'``, default); ``'sum'`` and ``'none'`` are supported.
    """

    def __init__(
        self,
        gamma: float = 3.0,
        thresholds: Mapping[float, float] | None = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.gamma = _check_gamma(gamma)
        self.reduction = _check_reduction(reduction)
        table = dict(FLSD_THRESHOLDS if thresholds is None else thresholds)
        bounds = sorted(float(b) for b in table)
        if any(not 0.0 < b <= 1.0 for b in bounds):
            raise ValueError(f"thresholds keys must be p_t bounds in (0, 1], got thresholds={table!r}")
        self.thresholds: dict[float, float] = {b: _check_gamma(table[b], "thresholds") for b in bounds}
        self._bounds = bounds
        self._gammas = [self.thresholds[b] for b in bounds] + [self.gamma]

    @torch.no_grad()
    def sample_gammas(self, logits: Tensor, target: Tensor) -> Tensor:
        """The gamma each sample gets, (B,), from its current p_t."""
        pt = _target_log_prob(logits, target).exp().to(torch.float64)
        bounds = torch.tensor(self._bounds, dtype=torch.float64, device=pt.device)
        gammas = torch.tensor(self._gammas, dtype=torch.float64, device=pt.device)
        # bucketize(right=True): p_t < b_0 -> 0, b_0 <= p_t < b_1 -> 1, ..., p_t >= b_last -> len(bounds)
        return gammas[torch.bucketize(pt, bounds, right=True)]

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """FLSD loss of (B, K) logits against (B,) class indices."""
        return focal_loss(logits, target, self.sample_gammas(logits, target), self.reduction)

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, thresholds={self.thresholds}, reduction={self.reduction!r}"


@register_loss("flsd53")
def _flsd53(thresholds: Mapping[float, float] | None = None, reduction: str = "mean") -> AdaptiveFocalLoss:
    """FLSD-53: gamma 5 for p_t < 0.2, else 3."""
    return AdaptiveFocalLoss(gamma=3.0, thresholds=thresholds, reduction=reduction)


@register_loss("flsd52")
def _flsd52(thresholds: Mapping[float, float] | None = None, reduction: str = "mean") -> AdaptiveFocalLoss:
    """FLSD-52: gamma 5 for p_t < 0.2, 3 for p_t < 0.5, else 2."""
    return AdaptiveFocalLoss(gamma=2.0, thresholds=thresholds, reduction=reduction)
