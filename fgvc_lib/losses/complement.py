"""Complement entropy of Complement Objective Training (Chen et al., ICLR 2019), as the official code
(henry8527/COT, ``code/COT.py``; spec §4) computes it.

With p = softmax(z) and g the ground-truth class, the wrong classes are renormalised to
P_j = p_j / (1 - p_g + 1e-7) (j != g) and

    loss = (1 / (B * K)) * sum_i sum_{j != g_i} P_ij * log(P_ij + 1e-10)

which is <= 0: the *negative* complement entropy, so minimising it flattens the wrong-class distribution.
The official code divides by K (its module constant ``classes``), not K - 1 as a per-wrong-class mean would.
COT alternates this loss with cross entropy on the same batch (a second forward and a second optimizer).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fgvc_lib.losses import register_loss

__all__ = ["ComplementEntropy", "complement_entropy"]

NORM_EPS = 1e-7
"""Added to 1 - p_g before dividing (official value)."""
LOG_EPS = 1e-10
"""Added to P_j inside the log (official value)."""


def complement_entropy(logits: Tensor, target: Tensor, num_classes: int | None = None) -> Tensor:
    """Official COT complement entropy of (B, K) logits against (B,) class indices (a scalar <= 0).

    Normalised by B * K (K = ``num_classes``, default the logits' width), as the official code; not K - 1.
    """
    if logits.ndim != 2:
        raise ValueError(f"expected logits of shape (B, K), got {tuple(logits.shape)}")
    if target.shape != logits.shape[:1]:
        raise ValueError(f"target shape {tuple(target.shape)} does not match logits {tuple(logits.shape)}")
    k = logits.shape[1] if num_classes is None else int(num_classes)
    if k != logits.shape[1]:
        raise ValueError(f"num_classes={k} but the logits have {logits.shape[1]} columns")
    probs = F.softmax(logits, dim=1)
    index = target.long().unsqueeze(1)
    p_g = probs.gather(1, index)  # (B, 1)
    complement = probs / (1.0 - p_g + NORM_EPS)
    terms = complement * torch.log(complement + LOG_EPS)
    terms = terms.scatter(1, index, torch.zeros_like(p_g))  # "zero-hot": drop the ground-truth column
    return terms.sum() / (logits.shape[0] * k)


@register_loss("complement")
class ComplementEntropy(nn.Module):
    """COT complement entropy (official code): mean over B * K of P_j log P_j on the wrong classes, <= 0.

    Minimising it flattens the non-target distribution. The code divides by K (``num_classes``, taken from
    the logits when None), not K - 1; a given ``num_classes`` must match the logits' width.
    """

    def __init__(self, num_classes: int | None = None) -> None:
        super().__init__()
        if num_classes is not None and int(num_classes) < 2:
            raise ValueError(f"num_classes must be >= 2, got num_classes={num_classes!r}")
        self.num_classes = None if num_classes is None else int(num_classes)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Complement entropy of (B, K) logits against (B,) class indices."""
        return complement_entropy(logits, target, self.num_classes)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}"
