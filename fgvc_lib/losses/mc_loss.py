"""Mutual-channel loss (Chang et al., 2020), as the current official code (dongliangchang/Mutual-Channel-Loss,
HEAD) computes it: ``CE(logits, y) + mu * L_dis + lam * loss_2``, defaults mu = 1.5, lam = 20.

Class k owns a run of consecutive channels of the last conv map F (B, C, H, W). When C = K * xi every class
gets xi channels; otherwise the split is uneven (the official, later deleted, ResNet-50 file): the first
K - (C mod K) classes get floor(C / K) channels, the last C mod K classes one more.

- CCMP (cross-channel max pooling): max over each class's channels -> (B, K, ...).
- L_dis: CWA mask (a fixed number of channels per group zeroed at random, one mask shared by the whole batch,
  a new one every forward, no rescaling, training mode only) -> CCMP -> spatial mean -> (B, K) logits -> CE.
- loss_2 (diversity term): softmax over the H*W positions of every channel (unmasked) -> CCMP -> sum over
  positions (a value S in [1, xi]) -> ``1 - mean_{b,k}(S_bk / xi_k)``.

Uneven split, our choice: each class's S is divided by its own group size before the mean over the K classes,
i.e. loss_2 = sum over the two group sizes of (n_size / K) * (1 - mean(S) / xi_size). The deleted ResNet-50
code added the two group-size terms without weights; the weights make an even split reduce exactly to the
HEAD form ``1 - mean(S) / xi`` and keep loss_2 on the same scale whether or not K divides C.

CWA drop rule (the paper gives none; the code drops 1 of 3 channels for VGG and 4 of 10 / 11 for ResNet-50):
``drop = min(xi - 1, max(1, round(0.4 * xi)))`` per group size (round half up): xi = 3 -> 1, 10 -> 4,
11 -> 4, 2 -> 1, and a single-channel group is never masked.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fgvc_lib.losses import register_loss

__all__ = ["MCLoss", "channel_groups", "ccmp", "cwa_mask", "default_drop_count"]


@functools.lru_cache(maxsize=64)
def _split(num_channels: int, num_classes: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """((n_low, xi_low), (n_high, xi_low + 1)): classes per group size, in class order."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got num_classes={num_classes}")
    if num_channels < num_classes:
        raise ValueError(
            f"need at least one channel per class: num_channels={num_channels} < num_classes={num_classes}"
        )
    xi, n_high = divmod(num_channels, num_classes)
    return (num_classes - n_high, xi), (n_high, xi + 1)


def channel_groups(num_channels: int, num_classes: int) -> list[int]:
    """Channels owned by each class, in class order (consecutive runs; the larger groups come last)."""
    (n_low, xi_low), (n_high, xi_high) = _split(int(num_channels), int(num_classes))
    return [xi_low] * n_low + [xi_high] * n_high


def ccmp(x: Tensor, num_classes: int) -> Tensor:
    """Cross-channel max pooling: (B, C, *rest) -> (B, K, *rest), the max over each class's channels."""
    if x.ndim < 2:
        raise ValueError(f"expected a tensor of shape (B, C, ...), got {tuple(x.shape)}")
    batch, channels, rest = x.shape[0], x.shape[1], x.shape[2:]
    (n_low, xi_low), (n_high, xi_high) = _split(channels, num_classes)
    cut = n_low * xi_low
    parts = [x[:, :cut].reshape(batch, n_low, xi_low, *rest).max(dim=2).values]
    if n_high:
        parts.append(x[:, cut:].reshape(batch, n_high, xi_high, *rest).max(dim=2).values)
    return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]


def default_drop_count(group_size: int) -> int:
    """Channels the CWA mask zeroes in a group: min(xi - 1, max(1, round(0.4 * xi))), round half up."""
    return min(group_size - 1, max(1, (4 * group_size + 5) // 10))


def cwa_mask(
    num_channels: int,
    num_classes: int,
    drop_per_group: int | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """0/1 channel mask (C,): in every class group ``drop_per_group`` channels (default
    :func:`default_drop_count` of the group size) are zeroed at random; no rescaling."""
    rand_device = generator.device if generator is not None else device
    blocks = []
    for n_groups, xi in _split(int(num_channels), int(num_classes)):  # two group sizes, not classes
        if n_groups == 0:
            continue
        drop = default_drop_count(xi) if drop_per_group is None else int(drop_per_group)
        if not 0 <= drop < xi:
            raise ValueError(
                f"drop_per_group must be in [0, {xi}) for groups of {xi} channels, got drop_per_group={drop}"
            )
        keep = torch.ones(n_groups, xi, device=rand_device)
        if drop:
            scores = torch.rand(n_groups, xi, generator=generator, device=rand_device)
            keep.scatter_(1, scores.topk(drop, dim=1).indices, 0.0)
        blocks.append(keep.flatten())
    return torch.cat(blocks).to(device=device, dtype=dtype)


class MCLoss(nn.Module):
    """Mutual-channel loss: ``CE(logits, y) + mu * L_dis + lam * loss_2`` (official HEAD form and defaults).

    ``forward(logits, features, target)``: logits (B, K) of the normal head, features the last conv map
    (B, C, H, W) with C >= K. Masking happens only in training mode; in eval mode the terms are computed on
    the unmasked features. ``mask_generator`` makes the CWA masks reproducible (tests).
    """

    def __init__(
        self,
        num_classes: int,
        mu: float = 1.5,
        lam: float = 20.0,
        drop_per_group: int | None = None,
        mask_generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got num_classes={num_classes!r}")
        if drop_per_group is not None and int(drop_per_group) < 0:
            raise ValueError(f"drop_per_group must be >= 0 or None, got drop_per_group={drop_per_group!r}")
        self.num_classes = int(num_classes)
        self.mu = float(mu)
        self.lam = float(lam)
        self.drop_per_group = None if drop_per_group is None else int(drop_per_group)
        self.mask_generator = mask_generator

    def _check_features(self, features: Tensor) -> None:
        if features.ndim != 4:
            raise ValueError(f"features must be a (B, C, H, W) map, got shape {tuple(features.shape)}")
        if features.shape[1] < self.num_classes:
            raise ValueError(
                f"features has {features.shape[1]} channels, fewer than num_classes={self.num_classes}"
            )

    def group_sizes(self, num_channels: int) -> list[int]:
        """Channels per class for a feature map with ``num_channels`` channels."""
        return channel_groups(num_channels, self.num_classes)

    def terms(self, features: Tensor, target: Tensor) -> dict[str, Tensor]:
        """``dis`` (L_dis), ``div`` (loss_2), ``logits`` (B, K) of L_dis and the channel ``mask`` (C,) used."""
        self._check_features(features)
        batch, channels = features.shape[:2]
        if self.training:
            mask = cwa_mask(
                channels,
                self.num_classes,
                self.drop_per_group,
                self.mask_generator,
                device=features.device,
                dtype=features.dtype,
            )
            masked = features * mask.view(1, channels, 1, 1)
        else:
            mask = torch.ones(channels, device=features.device, dtype=features.dtype)
            masked = features
        dis_logits = ccmp(masked, self.num_classes).flatten(2).mean(dim=2)
        dis = F.cross_entropy(dis_logits, target.long())

        spatial = F.softmax(features.flatten(2), dim=2)  # (B, C, H*W), per channel
        peak_sum = ccmp(spatial, self.num_classes).sum(dim=2)  # (B, K), each in [1, xi_k]
        sizes = torch.tensor(self.group_sizes(channels), device=features.device, dtype=peak_sum.dtype)
        div = 1.0 - (peak_sum / sizes).mean()
        return {"dis": dis, "div": div, "logits": dis_logits, "mask": mask}

    def forward(self, logits: Tensor, features: Tensor, target: Tensor) -> Tensor:
        """CE of the head logits + mu * L_dis + lam * loss_2."""
        parts = self.terms(features, target)
        return F.cross_entropy(logits, target.long()) + self.mu * parts["dis"] + self.lam * parts["div"]

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, mu={self.mu}, lam={self.lam}, "
            f"drop_per_group={self.drop_per_group}"
        )


@register_loss("mc")
def _mc_loss(
    num_classes: int,
    mc_mu: float = 1.5,
    mc_lambda: float = 20.0,
    drop_per_group: int | None = None,
    mask_generator: torch.Generator | None = None,
) -> MCLoss:
    """'mc': :class:`MCLoss` with its weights named as the experiment parameters (mu = mc_mu, lam = mc_lambda)."""
    return MCLoss(
        num_classes, mu=mc_mu, lam=mc_lambda, drop_per_group=drop_per_group, mask_generator=mask_generator
    )
