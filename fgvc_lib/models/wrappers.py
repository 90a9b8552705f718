"""One interface over timm, efficientnet-pytorch and torchvision-style ResNet networks.

``Classifier.forward_features(x)`` returns the last feature map, ``pool`` the pooled pre-logit vector and
``head`` the logits; ``cam_layer`` is the module whose output is that feature map, so CAM, MC loss and BBN
need no per-architecture special cases.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

KINDS = ("timm", "efficientnet_pytorch", "torchvision_resnet")


def torchvision_resnet_features(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Stem and the four stages of a torchvision-style ResNet: the last feature map before pooling."""
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    return net.layer4(net.layer3(net.layer2(net.layer1(x))))


class Classifier(nn.Module):
    """Wrap a backbone network behind one interface.

    ``kind``: 'timm', 'efficientnet_pytorch' or 'torchvision_resnet' (conv1, bn1, relu, maxpool,
    layer1..layer4, avgpool, fc; e.g. the antialiased-cnns ResNets).
    """

    def __init__(
        self,
        net: nn.Module,
        kind: str,
        name: str,
        num_classes: int,
        data_config: dict[str, Any],
        upsample_size: int = 0,
    ):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"unknown backbone kind {kind!r}")
        self.net = net
        self.kind = kind
        self.name = name
        self.num_classes = num_classes
        self.data_config = dict(data_config)
        # Identity on the feature map: a stable hook point for Grad-CAM whatever the backbone.
        self.feature_tap = nn.Identity()
        # The cifar100 report's "upsampling layer" in front of an ImageNet backbone (32 px -> 224 px).
        self.upsample_size = int(upsample_size)
        self.resize = (
            nn.Upsample(size=(upsample_size, upsample_size), mode="bilinear", align_corners=False)
            if upsample_size
            else nn.Identity()
        )
        # timm's Swin (and other NHWC models) return channels-last feature maps.
        self.feature_layout = "NHWC" if getattr(net, "output_fmt", "NCHW") == "NHWC" else "NCHW"
        if kind == "efficientnet_pytorch":
            self.num_features = (
                net._fc.in_features if isinstance(net._fc, nn.Linear) else net._bn1.num_features
            )
        elif kind == "torchvision_resnet":
            self.num_features = int(getattr(net, "num_features", 0)) or net.fc.in_features
        else:
            self.num_features = net.num_features

    @property
    def cam_layer(self) -> nn.Module:
        return self.feature_tap

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map in the backbone's own layout (NCHW, or NHWC for Swin)."""
        x = self.resize(x)
        if self.kind == "efficientnet_pytorch":
            fmap = self.net.extract_features(x)
        elif self.kind == "torchvision_resnet":
            fmap = torchvision_resnet_features(self.net, x)
        else:
            fmap = self.net.forward_features(x)
        return self.feature_tap(fmap)

    def to_nchw(self, fmap: torch.Tensor) -> torch.Tensor:
        """The feature map as (B, C, H, W) whatever the backbone's layout."""
        return fmap.permute(0, 3, 1, 2) if self.feature_layout == "NHWC" else fmap

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and the (B, C, H, W) feature map they were pooled from (for MC loss, CAM)."""
        fmap = self.forward_features(x)
        return self.head(self.pool(fmap)), self.to_nchw(fmap)

    @property
    def cam_reshape_transform(self):
        """grad-cam reshape for ``cam_layer`` activations, or None when they are NCHW already."""
        return self.to_nchw if self.feature_layout == "NHWC" else None

    def pool(self, fmap: torch.Tensor) -> torch.Tensor:
        if self.kind == "efficientnet_pytorch":
            return self.net._dropout(self.net._avg_pooling(fmap).flatten(1))
        if self.kind == "torchvision_resnet":
            return self.net.avgpool(fmap).flatten(1)
        return self.net.forward_head(fmap, pre_logits=True)

    def classifier(self) -> nn.Module:
        if self.kind == "efficientnet_pytorch":
            return self.net._fc
        if self.kind == "torchvision_resnet":
            return self.net.fc
        return self.net.get_classifier()

    def head(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier()(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.forward_features(x)))

    def extra_repr(self) -> str:
        return f"name={self.name!r}, kind={self.kind!r}, num_classes={self.num_classes}"
