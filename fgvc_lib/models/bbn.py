"""BBN, the bilateral-branch network (Zhou et al. 2020), on a timm or torchvision-style ResNet backbone.

As the official code: one trunk shared by both branches, the last residual block duplicated into a
conventional branch (``cb_block``, uniformly sampled batch) and a re-balancing branch (``rb_block``, reversed
batch), global average pooling per branch, and ONE linear classifier over the concatenated 2D features.
Training mixes ``2 * cat(alpha f_c, (1 - alpha) f_r)``; inference uses ``cat(f_c, f_r)`` (alpha = 0.5).
Adaptation for ImageNet-style backbones: the last block of the last stage (``layer4[-1]``) is deep-copied
into both branches, so with pretrained weights both start from the same (pretrained) block.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .factory import create_model
from .wrappers import Classifier

ALPHA_SCHEDULES = ("cumulative", "0", "1")


def cumulative_alpha(epoch: int, max_epoch: int) -> float:
    """Cumulative-learning alpha of the official code for a 1-indexed ``epoch``: ``1 - ((epoch - 1) / div)^2``.

    ``div`` is ``max_epoch``, except 100 and 200 for the 90 / 180 epoch iNaturalist schedules. Alpha is 1 in
    the first epoch and does not reach 0 within ``max_epoch`` epochs.
    """
    if max_epoch < 1:
        raise ValueError(f"max_epoch: expected >= 1, got {max_epoch}")
    div = 100 * (max_epoch // 100 + 1) if max_epoch in (90, 180) else max_epoch
    return _parabolic(epoch, div)


def _parabolic(epoch: int, div: int) -> float:
    if epoch < 1:
        raise ValueError(f"epoch: expected a 1-indexed epoch >= 1, got {epoch}")
    return max(0.0, 1.0 - ((epoch - 1) / div) ** 2)


def alpha_schedule(name: str, max_epoch: int, t_max: int | None = None) -> Callable[[int], float]:
    """Alpha as a function of the 1-indexed epoch: 'cumulative' (official), or a fixed value ('0', '1', '0.5').

    ``t_max`` replaces the cumulative schedule's divisor (``(epoch - 1) / t_max``); alpha stays at 0 after it.
    """
    if max_epoch < 1:
        raise ValueError(f"max_epoch: expected >= 1, got {max_epoch}")
    if name == "cumulative":
        if t_max is None:
            return lambda epoch: cumulative_alpha(epoch, max_epoch)
        if t_max < 1:
            raise ValueError(f"t_max: expected >= 1, got {t_max}")
        return lambda epoch: _parabolic(epoch, t_max)
    try:
        value = float(name)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 1.0:  # also rejects nan
        raise ValueError(f"BBN alpha schedule: expected 'cumulative' or a number in [0, 1], got {name!r}")
    return lambda epoch: value


def bbn_mixed_loss(
    logits: torch.Tensor, y_c: torch.Tensor, y_r: torch.Tensor, alpha: float, loss_fn: Callable = F.cross_entropy
) -> torch.Tensor:
    """``alpha * L(logits, y_c) + (1 - alpha) * L(logits, y_r)`` (L: cross-entropy by default, batch means),
    one shared logit tensor: the official combiner's loss."""
    return alpha * loss_fn(logits, y_c) + (1 - alpha) * loss_fn(logits, y_r)


def _take_last_block(backbone: Classifier) -> nn.Module:
    """Remove the last block of the last stage from the backbone (which becomes the shared trunk) and return
    it: ``layer4[-1]`` for ResNets; for timm EfficientNets the last block of ``blocks[-1]`` together with the
    ``conv_head`` / ``bn2`` that follow it (they would otherwise sit after the branch split)."""
    net = backbone.net
    stage = getattr(net, "layer4", None)
    if backbone.kind in ("timm", "torchvision_resnet") and isinstance(stage, nn.Sequential) and stage:
        last = stage[-1]
        net.layer4 = nn.Sequential(*list(stage)[:-1])
        return last
    blocks = getattr(net, "blocks", None)
    if (
        backbone.kind == "timm"
        and isinstance(blocks, nn.Sequential)
        and blocks
        and isinstance(blocks[-1], nn.Sequential)
        and blocks[-1]
        and hasattr(net, "conv_head")
        and hasattr(net, "bn2")
    ):
        last_stage = blocks[-1]
        tail = nn.Sequential(last_stage[-1], net.conv_head, net.bn2)
        blocks[-1] = nn.Sequential(*list(last_stage)[:-1])
        net.conv_head, net.bn2 = nn.Identity(), nn.Identity()
        return tail
    raise ValueError(
        f"BBN needs a backbone whose last stage is a sequence of blocks (ResNet `layer4`, timm EfficientNet "
        f"`blocks`); model '{backbone.name}' ({backbone.kind}, {type(net).__name__}) has none"
    )


class BBN(nn.Module):
    """Bilateral-branch network over a features-only backbone ``Classifier`` (``num_classes=0``).

    The backbone's ``layer4[-1]`` is removed from the shared trunk and deep-copied into ``cb_block`` and
    ``rb_block``; ``fc = nn.Linear(2 * D, num_classes)`` is the only classifier.
    """

    def __init__(self, backbone: Classifier, num_classes: int):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes: expected >= 1, got {num_classes}")
        last = _take_last_block(backbone)  # the shared trunk ends before the last block
        self.trunk = backbone
        self.cb_block = copy.deepcopy(last)
        self.rb_block = copy.deepcopy(last)
        self.num_features = backbone.num_features  # D, per branch
        self.fc = nn.Linear(2 * self.num_features, num_classes)  # PyTorch default init, as the official code
        self.num_classes = num_classes
        self.name = f"bbn_{backbone.name}"
        self.data_config = dict(backbone.data_config)
        self.feature_layout = "NCHW"
        self.feature_tap = nn.Identity()  # the conventional branch's last feature map (stride 32)

    @property
    def cam_layer_name(self) -> str:
        """The shared trunk's CAM layer (stride <= 16, e.g. ``trunk.net.layer3``; docs/cam_layers.md): both
        branches read it, so its Grad-CAM explains the combined logits. ``feature_tap`` is the conventional
        branch's stride-32 map (pass ``cam_layer: feature_tap`` for the former behaviour)."""
        return f"trunk.{self.trunk.cam_layer_name}"

    @property
    def cam_layer(self) -> nn.Module:
        return self.get_submodule(self.cam_layer_name)

    @property
    def cam_reshape_transform(self) -> None:
        return None

    def classifier(self) -> nn.Module:
        return self.fc

    def _block(self, which: str) -> nn.Module:
        if which == "c":
            return self.cb_block
        if which == "r":
            return self.rb_block
        raise ValueError(f"BBN branch: expected 'c' (conventional) or 'r' (re-balancing), got {which!r}")

    def shared_features(self, x: torch.Tensor) -> torch.Tensor:
        """The shared trunk's feature map (input of both branch blocks)."""
        return self.trunk.forward_features(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The conventional branch's last feature map (B, D, H, W), through ``cam_layer``."""
        return self.feature_tap(self.cb_block(self.shared_features(x)))

    def branch_features(self, x: torch.Tensor, which: str) -> torch.Tensor:
        """Pooled (B, D) features of one branch: shared trunk, that branch's block, global average pooling."""
        if which == "c":
            return _gap(self.forward_features(x))
        return _gap(self._block(which)(self.shared_features(x)))

    def mix(self, f_c: torch.Tensor, f_r: torch.Tensor, alpha: float) -> torch.Tensor:
        """Training logits: ``fc(2 * cat(alpha * f_c, (1 - alpha) * f_r))`` (the official factor 2 included)."""
        return self.fc(2 * torch.cat((alpha * f_c, (1 - alpha) * f_r), dim=1))

    def head(self, features: torch.Tensor) -> torch.Tensor:
        """Logits of concatenated (B, 2D) branch features."""
        return self.fc(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Inference logits: both branches on the same input, ``fc(cat(f_c, f_r))`` (= ``mix`` at 0.5)."""
        shared = self.shared_features(x)
        f_c = _gap(self.feature_tap(self.cb_block(shared)))
        f_r = _gap(self.rb_block(shared))
        return self.fc(torch.cat((f_c, f_r), dim=1))

    def extra_repr(self) -> str:
        return f"name={self.name!r}, num_classes={self.num_classes}, num_features={self.num_features}"


def _gap(fmap: torch.Tensor) -> torch.Tensor:
    return F.adaptive_avg_pool2d(fmap, 1).flatten(1)


def create_bbn(
    backbone: str,
    num_classes: int,
    *,
    pretrained: bool = False,
    weights: str = "",
    download: bool = False,
    **kwargs: Any,
) -> BBN:
    """A BBN over the factory's features-only ``backbone`` (timm ResNets, ``antialiased_resnet50``).

    ``pretrained`` / ``weights`` / ``download`` load the backbone as ``create_model`` does (both branch blocks
    then start from the pretrained last block); other keyword arguments (e.g. ``upsample_size``) go to it too.
    """
    return BBN(
        create_model(backbone, 0, pretrained=pretrained, weights=weights, download=download, **kwargs),
        num_classes,
    )


__all__ = ["BBN", "alpha_schedule", "bbn_mixed_loss", "create_bbn", "cumulative_alpha"]
