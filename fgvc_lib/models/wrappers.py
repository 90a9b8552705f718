"""One interface over timm, efficientnet-pytorch, torchvision-style ResNet and torchvision networks.

``Classifier.forward_features(x)`` returns the last feature map, ``pool`` the pooled pre-logit vector and
``head`` the logits; ``cam_layer`` is the default Grad-CAM target, named by the dotted path ``cam_layer_name``:
the last stage whose output stride is at most ``CAM_MAX_STRIDE`` (16) for CNNs (``default_cam_layer_name``:
timm's ``feature_info``, else the measured strides of the backbone's stages), because the last feature map
(stride 32: 3x3 at 96 px) is too coarse to localise (docs/cam_layers.md); for Swin (timm and torchvision,
channels-last) the documented choice stays: ``norm1`` of the last block for V1, the final map for V2 (stride
32, see ``swin_cam_layer`` and docs/swin_cam_layer.md). CAM, MC loss and BBN need no per-architecture special
cases.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from . import torchvision_models as tv

KINDS = ("timm", "efficientnet_pytorch", "torchvision_resnet", "torchvision")
CAM_MAX_STRIDE = 16
"""Output stride the default CAM layer may have at most (the last map of CNNs is at 32)."""
STRIDE_PROBE_SIZE = 224
"""Input side at which stage strides are measured (when timm's ``feature_info`` is not available)."""


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


def _stage_candidates(model: Classifier) -> list[str]:
    """Dotted paths (inside ``model``) of the backbone's stages in execution order, for the stride probe."""
    net = model.net

    def children(prefix: str, module: nn.Module) -> list[str]:
        return [f"{prefix}.{name}" for name, _ in module.named_children()]

    if model.kind == "efficientnet_pytorch":
        return children("net._blocks", net._blocks)
    if model.kind == "torchvision_resnet":
        return [f"net.{n}" for n in ("layer1", "layer2", "layer3", "layer4") if hasattr(net, n)]
    if model.kind == "torchvision":
        fam = model.tv_family
        if fam == "regnet":
            return ["net.stem", *children("net.trunk_output", net.trunk_output)]
        if fam == "mnasnet":
            return children("net.layers", net.layers)
        if fam == "shufflenet":
            return ["net.conv1", "net.maxpool", "net.stage2", "net.stage3", "net.stage4", "net.conv5"]
        if fam in ("densenet", "features"):
            return children("net.features", net.features)
    return []


def measure_strides(model: nn.Module, paths: list[str], size: int = STRIDE_PROBE_SIZE) -> dict[str, int]:
    """Output stride (a power of two, relative to the network's input) of each module in ``paths`` that runs
    in ``model.forward_features`` and returns a (B, C, H, W) tensor; one forward pass without gradients."""
    upsample = int(getattr(model, "upsample_size", 0) or 0)
    net_input = upsample or size
    strides: dict[str, int] = {}
    handles = []
    for path in paths:
        def hook(_m, _i, out, path=path):
            if isinstance(out, torch.Tensor) and out.dim() == 4 and out.shape[-2] > 0:
                strides[path] = 2 ** round(math.log2(net_input / out.shape[-2]))
        handles.append(model.get_submodule(path).register_forward_hook(hook))
    was_training = model.training
    try:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        model.eval()
        with torch.no_grad():
            model.forward_features(torch.zeros(1, 3, net_input, net_input, device=device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return strides


def module_path(root: nn.Module, target: nn.Module) -> str:
    """Dotted path of ``target`` inside ``root`` (ValueError when it is not a submodule)."""
    for name, module in root.named_modules():
        if module is target:
            return name
    raise ValueError(f"{type(target).__name__} is not a submodule of {type(root).__name__}")


def default_cam_layer_name(model: Classifier) -> str:
    """The family's CAM layer (see docs/cam_layers.md), as a dotted path inside ``model``.

    * Swin (channels-last): ``swin_cam_layer`` (V1: last block's ``norm1``) or the final map (V2), stride 32;
    * timm CNNs with ``feature_info`` (EfficientNet, MnasNet, MobileNet, ResNet, ResNet-blur, Wide ResNet,
      Inception v3, ...): the last listed stage with reduction <= 16 (``net.blocks.4``, ``net.layer3``,
      ``net.Mixed_6e``); the final map when the whole network stays at stride <= 16;
    * efficientnet-pytorch, torchvision ResNets (and antialiased-cnns) and the other torchvision families:
      the last stage whose measured output stride is <= 16 (``measure_strides``);
    * anything else (the small CNN, whose final map is at stride 16 already): ``feature_tap``.
    """
    swin = swin_cam_layer(model.net)
    if swin is not None:
        return module_path(model, swin)
    if model.feature_layout == "NHWC":
        return "feature_tap"
    info = getattr(model.net, "feature_info", None)
    if model.kind == "timm" and info:
        entries = [(d["module"], int(d["reduction"])) for d in info if isinstance(d, dict) and "module" in d]
        fine = [name for name, red in entries if red <= CAM_MAX_STRIDE]
        if entries and fine:
            if entries[-1][1] <= CAM_MAX_STRIDE:  # the whole network stays fine: its final map
                return "feature_tap"
            if isinstance(model.net.get_submodule(fine[-1]), nn.Module):
                return f"net.{fine[-1]}"
    candidates = _stage_candidates(model)
    if candidates:
        strides = measure_strides(model, candidates)
        fine = [p for p in candidates if p in strides and strides[p] <= CAM_MAX_STRIDE]
        if fine and any(strides[p] > CAM_MAX_STRIDE for p in strides):
            return fine[-1]
    return "feature_tap"


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
        self._cam_layer_name = ""  # found on first use (it may run one probe forward pass)
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
    def cam_layer_name(self) -> str:
        """Dotted path (inside this model) of the default Grad-CAM target (``default_cam_layer_name``)."""
        if not self._cam_layer_name:
            self._cam_layer_name = default_cam_layer_name(self)
        return self._cam_layer_name

    @property
    def cam_layer(self) -> nn.Module:
        """Default Grad-CAM target: the last stage at stride <= 16 for CNNs, Swin V1's last ``norm1``."""
        return self.get_submodule(self.cam_layer_name)

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
