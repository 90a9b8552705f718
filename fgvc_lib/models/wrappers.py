"""One interface over timm, efficientnet-pytorch, torchvision-style ResNet and torchvision networks.

``Classifier.forward_features(x)`` returns the last feature map, ``pool`` the pooled pre-logit vector and
``head`` the logits; ``cam_layer`` is the Grad-CAM target: the module whose output is that feature map
(``feature_tap``), except for Swin V1 (timm and torchvision), where it is ``norm1`` of the last block (see
``swin_cam_layer`` and docs/swin_cam_layer.md). CAM, MC loss and BBN need no per-architecture special cases.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from . import torchvision_models as tv

KINDS = ("timm", "efficientnet_pytorch", "torchvision_resnet", "torchvision")


def torchvision_resnet_features(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Stem and the four stages of a torchvision-style ResNet: the last feature map before pooling."""
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    return net.layer4(net.layer3(net.layer2(net.layer1(x))))


def swin_cam_layer(net: nn.Module) -> nn.Module | None:
    """``norm1`` of the last block of a Swin V1 (timm ``SwinTransformer``, torchvision ``swin_t/s/b``), else None.

    Why not the final normalised map (the one the head pools): on a Swin trained on synthetic birds that map
    gave Grad-CAMs that localise the object and its discriminative part worse than ``norm1`` of the last
    block, the layer pytorch-grad-cam's documentation uses; figures, command and reasoning are in
    docs/swin_cam_layer.md (tools/compare_swin_cam_layers.py reproduces them). Swin V2 blocks are post-norm
    (``norm1`` normalises the attention output, not the block input), so they keep the final map.
    """
    try:
        from timm.models.swin_transformer import SwinTransformer as TimmSwin
    except ImportError:  # pragma: no cover - timm is a dependency
        TimmSwin = ()  # noqa: N806
    if isinstance(net, TimmSwin):
        return net.layers[-1].blocks[-1].norm1
    try:
        from torchvision.models.swin_transformer import SwinTransformer as TvSwin
        from torchvision.models.swin_transformer import SwinTransformerBlock, SwinTransformerBlockV2
    except ImportError:  # pragma: no cover - torchvision is a dependency
        return None
    if isinstance(net, TvSwin):
        block = net.features[-1][-1]
        if isinstance(block, SwinTransformerBlock) and not isinstance(block, SwinTransformerBlockV2):
            return block.norm1
    return None


class Classifier(nn.Module):
    """Wrap a backbone network behind one interface.

    ``kind``: 'timm', 'efficientnet_pytorch', 'torchvision_resnet' (conv1, bn1, relu, maxpool,
    layer1..layer4, avgpool, fc; torchvision's ResNets and the antialiased-cnns ResNets) or 'torchvision'
    (any other supported torchvision family, see ``torchvision_models.FAMILIES``).
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
        # torchvision family: how to reach its feature map, pooling and head ('' for the other kinds).
        self.tv_family = tv.family(net) if kind == "torchvision" else ""
        # timm's Swin (and other NHWC models) and torchvision's Swin return channels-last feature maps.
        nhwc = getattr(net, "output_fmt", "NCHW") == "NHWC" or self.tv_family == "swin"
        self.feature_layout = "NHWC" if nhwc else "NCHW"
        if kind == "efficientnet_pytorch":
            self.num_features = (
                net._fc.in_features if isinstance(net._fc, nn.Linear) else net._bn1.num_features
            )
        elif kind == "torchvision_resnet":
            self.num_features = int(getattr(net, "num_features", 0)) or net.fc.in_features
        elif kind == "torchvision":
            self.num_features = int(getattr(net, "num_features", 0)) or tv.head_layer(
                net, self.tv_family
            ).in_features
        else:
            self.num_features = net.num_features

    @property
    def cam_layer(self) -> nn.Module:
        """Grad-CAM target: ``feature_tap`` (the last feature map), or Swin V1's last ``norm1``."""
        swin = swin_cam_layer(self.net)
        return swin if swin is not None else self.feature_tap

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map in the backbone's own layout (NCHW, or NHWC for Swin)."""
        x = self.resize(x)
        if self.kind == "efficientnet_pytorch":
            fmap = self.net.extract_features(x)
        elif self.kind == "torchvision_resnet":
            fmap = torchvision_resnet_features(self.net, x)
        elif self.kind == "torchvision":
            fmap = tv.features(self.net, self.tv_family, x)
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
        """grad-cam reshape for ``cam_layer`` activations, or None when they are NCHW already (Swin's ``norm1``
        activations are channels-last like its final map)."""
        return self.to_nchw if self.feature_layout == "NHWC" else None

    def pool(self, fmap: torch.Tensor) -> torch.Tensor:
        if self.kind == "efficientnet_pytorch":
            return self.net._dropout(self.net._avg_pooling(fmap).flatten(1))
        if self.kind == "torchvision_resnet":
            return self.net.avgpool(fmap).flatten(1)
        if self.kind == "torchvision":
            return tv.pool(self.net, self.tv_family, fmap)
        return self.net.forward_head(fmap, pre_logits=True)

    def classifier(self) -> nn.Module:
        if self.kind == "efficientnet_pytorch":
            return self.net._fc
        if self.kind == "torchvision_resnet":
            return self.net.fc
        if self.kind == "torchvision":
            return tv.head_layer(self.net, self.tv_family)
        return self.net.get_classifier()

    def head(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier()(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.forward_features(x)))

    def extra_repr(self) -> str:
        return f"name={self.name!r}, kind={self.kind!r}, num_classes={self.num_classes}"
