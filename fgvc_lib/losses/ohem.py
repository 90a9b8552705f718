"""Online hard example mining (OHEM) for classification, plus the keep-ratio schedules of the bird report.

The report's "ratio" is a *keep* ratio: each batch back-propagates only the ``ratio * B`` samples with the
largest cross entropy. The schedules below are pure functions of the 0-based epoch index, built by name from the
``OHEM_SCHEDULES`` registry; their keywords are the bird parameters, so ``OHEM_SCHEDULES.create_from(
p.ohem_schedule, p)`` needs no branching:

- ``none``: no schedule, i.e. the constant keep ratio ``ohem_ratio`` (0.7) at every epoch (the same as
  ``constant``; ``ohem_ratio=1`` back-propagates every sample);
- ``constant``: ``ohem_ratio`` (0.7) at every epoch;
- ``cyclical``: the report's two linear decays over ``epochs`` (no option);
- ``step``: the report's piecewise-constant ratios, milestones scaled by ``epochs / reference_epochs`` (200).
"""

from __future__ import annotations

import functools
import math
from bisect import bisect_right
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fgvc_lib.losses import register_loss
from fgvc_lib.registry import Registry

__all__ = [
    "OHEMLoss",
    "ohem_keep_count",
    "ohem_select",
    "ohem_ratio_cyclical",
    "ohem_ratio_step",
    "ohem_ratio_constant",
    "OHEM_SCHEDULES",
    "create_ohem_schedule",
    "list_ohem_schedules",
    "scale_milestones",
]

DEFAULT_STEP_MILESTONES: tuple[int, ...] = (40, 60, 90, 130, 170)
DEFAULT_STEP_RATIOS: tuple[float, ...] = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)


def _check_ratio(ratio: float) -> float:
    ratio = float(ratio)
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"OHEM ratio must be in (0, 1], got ratio={ratio!r}")
    return ratio


def ohem_keep_count(ratio: float, batch_size: int) -> int:
    """Samples kept from a batch: ``max(1, floor(ratio * batch_size))`` (a 1e-9 slack absorbs float noise).

    The report's code fell back to the whole batch when ``ratio * B < 1``; we deliberately keep 1 sample.
    """
    _check_ratio(ratio)
    return max(1, math.floor(ratio * batch_size + 1e-9))


def ohem_select(losses: Tensor, ratio: float) -> Tensor:
    """Mean of the ``ohem_keep_count(ratio, len(losses))`` largest per-sample losses (vectorized top-k)."""
    if losses.ndim != 1:
        raise ValueError(f"expected a 1-D tensor of per-sample losses, got shape {tuple(losses.shape)}")
    if losses.numel() == 0:
        _check_ratio(ratio)
        return losses.sum()  # empty batch: zero loss that still carries a graph
    k = ohem_keep_count(ratio, losses.numel())
    return torch.topk(losses, k, sorted=False).values.mean()


@register_loss("ohem")
class OHEMLoss(nn.Module):
    """Mean CE of the hardest ``max(1, floor(ratio * B))`` samples; ``ratio`` is mutable (set each epoch).
    A ratio below 1/B keeps 1 sample (the report's code then used the whole batch; we deliberately do not)."""

    def __init__(self, ratio: float = 1.0, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.ratio = ratio
        self.label_smoothing = float(label_smoothing)

    @property
    def ratio(self) -> float:
        """Current keep ratio in (0, 1]."""
        return self._ratio

    @ratio.setter
    def ratio(self, value: float) -> None:
        self._ratio = _check_ratio(value)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Per-sample CE (with label smoothing), then the mean of the top-k largest."""
        per_sample = F.cross_entropy(logits, target, reduction="none", label_smoothing=self.label_smoothing)
        return ohem_select(per_sample, self._ratio)

    def extra_repr(self) -> str:
        return f"ratio={self._ratio}, label_smoothing={self.label_smoothing}"


def ohem_ratio_cyclical(epoch: int, total_epochs: int) -> float:
    """Two linear decays (1.0 -> 0, then 0.5 -> 0), each held for the first 20% of its half (report's formula:
    ``half = int(total / 2)``, ``hold = int(half * 0.2)``); a 1-epoch run gives 1.0."""
    if total_epochs < 1:
        raise ValueError(f"total_epochs must be >= 1, got {total_epochs}")
    if not 0 <= epoch < total_epochs:
        raise ValueError(f"epoch must be in [0, {total_epochs}), got {epoch}")
    half = int(total_epochs / 2)
    hold = int(half * 0.2)
    if half == 0:  # total_epochs == 1: the report's formula would divide by zero
        return 1.0
    if epoch < half:
        return 1.0 if epoch < hold else (half - epoch) / (half - hold)
    if epoch < half + hold:
        return 0.5
    return 0.5 * (total_epochs - epoch) / (half - hold)


def _check_milestones(milestones: Sequence[int], ratios: Sequence[float]) -> None:
    if len(ratios) != len(milestones) + 1:
        raise ValueError(
            f"need len(ratios) == len(milestones) + 1, "
            f"got {len(ratios)} ratios for {len(milestones)} milestones"
        )
    if any(b <= a for a, b in zip(milestones, milestones[1:], strict=False)):
        raise ValueError(f"milestones must be strictly increasing, got {tuple(milestones)}")


def ohem_ratio_step(
    epoch: int,
    milestones: Sequence[int] = DEFAULT_STEP_MILESTONES,
    ratios: Sequence[float] = DEFAULT_STEP_RATIOS,
) -> float:
    """Piecewise-constant ratio: ``ratios[i]`` for ``milestones[i-1] <= epoch < milestones[i]``."""
    _check_milestones(milestones, ratios)
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    return float(ratios[bisect_right(list(milestones), epoch)])


def ohem_ratio_constant(epoch: int, ratio: float) -> float:
    """The same keep ratio at every epoch."""
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    return _check_ratio(ratio)


def scale_milestones(milestones: Sequence[int], total_epochs: int, reference_epochs: int) -> tuple[int, ...]:
    """Scale by total/reference (round half up); clamp milestone i to [i + 1, total - n + i]
    (upper bound only if total > n) so epoch 0 keeps ratio 1 and every step is reached; kept increasing."""
    n = len(milestones)
    out: list[int] = []
    for i, m in enumerate(milestones):
        v = math.floor(m * total_epochs / reference_epochs + 0.5)
        v = max(v, i + 1)
        if total_epochs > n:
            v = min(v, total_epochs - n + i)
        if out:
            v = max(v, out[-1] + 1)
        out.append(v)
    return tuple(out)


OHEM_SCHEDULES: Registry[Callable[..., Callable[[int], float]]] = Registry("OHEM schedule")
"""``factory(epochs, **options) -> (epoch -> keep ratio)`` by name (see the module docstring)."""
list_ohem_schedules = OHEM_SCHEDULES.names


def _check_epochs(epochs: int) -> int:
    if epochs < 1:
        raise ValueError(f"total_epochs must be >= 1, got {epochs}")
    return epochs


@OHEM_SCHEDULES.register("constant")
def _constant(epochs: int, ohem_ratio: float = 0.7) -> Callable[[int], float]:
    _check_epochs(epochs)
    return functools.partial(ohem_ratio_constant, ratio=_check_ratio(ohem_ratio))


OHEM_SCHEDULES.register("none", _constant)  # no schedule: the constant keep ratio


@OHEM_SCHEDULES.register("cyclical")
def _cyclical(epochs: int) -> Callable[[int], float]:
    return functools.partial(ohem_ratio_cyclical, total_epochs=_check_epochs(epochs))


@OHEM_SCHEDULES.register("step")
def _step(epochs: int, reference_epochs: int = 200) -> Callable[[int], float]:
    _check_epochs(epochs)
    if reference_epochs < 1:
        raise ValueError(f"reference_epochs must be >= 1, got {reference_epochs}")
    milestones = DEFAULT_STEP_MILESTONES
    if epochs != reference_epochs:
        milestones = scale_milestones(milestones, epochs, reference_epochs)
    return functools.partial(ohem_ratio_step, milestones=milestones, ratios=DEFAULT_STEP_RATIOS)


def create_ohem_schedule(
    name: str, total_epochs: int, *, ratio: float = 0.7, reference_epochs: int = 200
) -> Callable[[int], float]:
    """Epoch -> keep ratio for ``none`` and ``constant`` (both: ``ratio`` at every epoch), ``cyclical`` or
    ``step`` (milestones scaled by total_epochs / reference_epochs, see scale_milestones).

    The arguments are offered like parameters (``OHEM_SCHEDULES.create_from``): ``ratio`` only matters to
    ``none`` / ``constant``, ``reference_epochs`` only to ``step``.
    """
    offered = {"epochs": total_epochs, "ohem_ratio": ratio, "reference_epochs": reference_epochs}
    return OHEM_SCHEDULES.create_from(name, offered)
