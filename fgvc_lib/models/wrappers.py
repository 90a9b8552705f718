"""One interface over timm and efficientnet-pytorch networks.

``Classifier.forward_features(x)`` returns the last feature map, ``pool`` the pooled pre-logit vector and
``head`` the logits; ``cam_layer`` is the module whose output is that feature map, so CAM, MC loss and BBN
need no per-architecture special cases.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class Classifier(nn.Module):
    """Wrap a backbone network (``kind`` = 'timm' or 'efficientnet_pytorch') behind one interface."""

    def __init__(self, net: nn.Module, kind: str, name: str, num_classes: int, data_config: dict[str, Any]):
        super().__init__()
        if kind not in ("timm", "efficientnet_pytorch"):
            raise ValueError(f"unknown backbone kind {kind!r}")
        self.net = net
        self.kind = kind
        self.name = name
        self.num_classes = num_classes
        self.data_config = dict(data_config)
        # Identity on the feature map: a stable hook point for Grad-CAM whatever the backbone.
        self.feature_tap = nn.Identity()
        if kind == "efficientnet_pytorch":
            self.num_features = (
                net._fc.in_features if isinstance(net._fc, nn.Linear) else net._bn1.num_features
            )
        else:
            self.num_features = net.num_features

    @property
    def cam_layer(self) -> nn.Module:
        return self.feature_tap

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        fmap = (
            self.net.extract_features(x)
            if self.kind == "efficientnet_pytorch"
            else self.net.forward_features(x)
        )
        return self.feature_tap(fmap)

    def pool(self, fmap: torch.Tensor) -> torch.Tensor:
        if self.kind == "efficientnet_pytorch":
            return self.net._dropout(self.net._avg_pooling(fmap).flatten(1))
        return self.net.forward_head(fmap, pre_logits=True)

    def classifier(self) -> nn.Module:
        return self.net._fc if self.kind == "efficientnet_pytorch" else self.net.get_classifier()

    def head(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier()(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.forward_features(x)))

    def extra_repr(self) -> str:
        return f"name={self.name!r}, kind={self.kind!r}, num_classes={self.num_classes}"
